import Foundation
import Formats
import TestSupport
import XCTest

/// What users see: the run directory's files, pictures decoded by an independent decoder
/// (Tests/scripts/png_inspect.py), the report in a real browser, progress on a terminal and on a
/// pipe, and `predict`/`info`.
final class ReportAndPredictTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let scripts = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().appendingPathComponent("scripts").path

    func tempDir() throws -> String {
        let d = try scratchDirectory("report")
        return d
    }

    /// The plot palette (matplotlib's first four) and the class colors.
    let lineColors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    let classColors = ["#fae63c", "#28a08c", "#281446"]

    func inspect(_ png: String, _ args: [String] = []) throws -> [String: Any] {
        let r = try runCommand("/usr/bin/env", ["python3", scripts + "/png_inspect.py", png] + args)
        XCTAssertEqual(r.status, 0, "\(png): \(r.stderr)")
        return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    func trainThreeEpochs() throws -> String {
        let run = try tempDir() + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "3", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return run
    }

    func testThreeEpochRunWritesEveryFile() throws {
        let run = try trainThreeEpochs()
        for f in ["config.json", "history.csv", "history.jsonl", "history.png", "report.html", "samples/epoch-001.png",
                  "samples/epoch-003.png", "checkpoints/last.safetensors", "checkpoints/best.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/" + f), f)
        }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/config.json"))) as! [String: Any]
        XCTAssertEqual(config["world_size"] as? Int, 1)
        XCTAssertEqual(config["threads_per_rank"] as? Int, 1)
        XCTAssertNotNil(config["version"]); XCTAssertEqual(config["epochs"] as? Int, 3)

        let jsonl = try String(contentsOfFile: run + "/history.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(jsonl.count, 3)
        for line in jsonl {
            let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            for key in ["epoch", "loss", "iou", "test_loss", "test_iou", "dice", "seconds", "images_per_s"] {
                XCTAssertNotNil(row[key] as? NSNumber, key)
            }
        }

        let plot = try inspect(run + "/history.png", lineColors)
        XCTAssertEqual(plot["width"] as? Int, 800); XCTAssertEqual(plot["height"] as? Int, 500)
        for c in lineColors { XCTAssertGreaterThan((plot["counts"] as? [String: Int])?[c] ?? 0, 100, "line \(c)") }

        // image | truth | prediction, two test slices of 48x48 enlarged 3x, 6 px gaps, 22 px captions.
        let samples = try inspect(run + "/samples/epoch-003.png", classColors)
        XCTAssertEqual(samples["width"] as? Int, 6 + 3 * (144 + 6))
        XCTAssertEqual(samples["height"] as? Int, 22 + 2 * (144 + 6))
        for c in classColors { XCTAssertGreaterThan((samples["counts"] as? [String: Int])?[c] ?? 0, 0, "class color \(c)") }

        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, 2)
        XCTAssertFalse(html.contains("http://") || html.contains("https://"), "self-contained")
        XCTAssertTrue(html.contains("white matter IoU"))
    }

    func testReportRendersInHeadlessChromium() throws {
        let which = try shell("command -v chromium || command -v chromium-browser")
        guard which.status == 0 else { throw XCTSkip("chromium is not installed (launch/install-deps.sh --test installs it)") }
        let run = try trainThreeEpochs()
        let shot = try tempDir() + "/report.png"
        let r = try runCommand(which.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                               ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,2400",
                                "--screenshot=\(shot)", "file://\(run)/report.html"],
                               environment: ["HOME": try tempDir()], timeout: 120)
        XCTAssertTrue(FileManager.default.fileExists(atPath: shot), r.stderr)
        let counts = try inspect(shot, lineColors + classColors)["counts"] as? [String: Int] ?? [:]
        for c in lineColors { XCTAssertGreaterThan(counts[c] ?? 0, 100, "the curves (\(c)) show in the page") }
        for c in classColors { XCTAssertGreaterThan(counts[c] ?? 0, 100, "the predictions (\(c)) show in the page") }
    }

    func testProgressBarOnATerminalAndPlainLinesOnAPipe() throws {
        let dir = try tempDir()
        let args = ["train", "--data", data, "--epochs", "2", "--batch-size", "4", "--test-count", "2", "--threads", "1"]
        let pipe = try runUnetDist(args + ["--run-dir", dir + "/pipe"])
        XCTAssertEqual(pipe.status, 0, pipe.stderr)
        XCTAssertFalse(pipe.stdout.contains("\r"))
        XCTAssertEqual(pipe.stdout.split(separator: "\n").filter { $0.hasPrefix("Epoch ") }.count, 2)

        // `script` gives the program a pseudo-terminal for its stdout.
        let command = ([unetDistBinary] + args + ["--run-dir", dir + "/tty"]).map { "'\($0)'" }.joined(separator: " ")
        let tty = try runCommand("/usr/bin/script", ["-qfec", command, "/dev/null"])
        XCTAssertEqual(tty.status, 0, tty.stderr)
        XCTAssertNotNil(tty.stdout.range(of: #"\rEpoch 1/2 loss [0-9.]+ iou [0-9.]+ \|#+ *\| 1/2 \[\d\d:\d\d<\d\d:\d\d, [0-9.]+it/s\]"#,
                                         options: .regularExpression), tty.stdout)
        XCTAssertTrue(tty.stdout.contains("Epoch 2/2 loss"))

        let quiet = try runUnetDist(args + ["--run-dir", dir + "/quiet", "--quiet"])
        XCTAssertEqual(quiet.status, 0); XCTAssertEqual(quiet.stdout, "")
    }

    func testPredictWritesMasksOverlaysAndVolumes() throws {
        let out = try tempDir() + "/pred"
        let inputs = (0..<3).map { String(format: "%@/MRIs/slice_%03d.npy", data, $0) }
        let r = try runUnetDist(["predict", "--checkpoint", fixturesDirectory + "/torch_trained.safetensors",
                                 "--input"] + inputs + ["--out", out, "--save-logits", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try String(contentsOfFile: out + "/volumes.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows.count, 4)
        for (k, row) in rows.dropFirst().enumerated() {
            let stem = String(format: "slice_%03d", k)
            let mask = try NpyArray(path: "\(out)/\(stem)_mask.npy").labels(classes: 3, path: "")
            let logits = try NpyArray(path: "\(out)/\(stem)_logits.npy").floats()
            XCTAssertEqual(mask.count, 48 * 48)
            for i in 0..<mask.count {
                let z = (0..<3).map { logits[$0 * 48 * 48 + i] }
                XCTAssertEqual(Int(mask[i]), z.firstIndex(of: z.max()!)!)
            }
            let f = row.split(separator: ",", omittingEmptySubsequences: false)
            XCTAssertEqual(String(f[0]), stem + ".npy")
            XCTAssertEqual(Int(f[2]), mask.filter { $0 == 0 }.count)
            XCTAssertEqual(Int(f[3]), mask.filter { $0 == 1 }.count)
            let picture = try inspect("\(out)/\(stem)_overlay.png")
            XCTAssertEqual(picture["width"] as? Int, 6 + 2 * (144 + 6))
        }
    }

    func testPredictOnAVolumeKeepsShapeAndAffineAndCountsMatchTheMask() throws {
        // The fixture slices stacked into a 48 x 48 x 10 volume with 1.5 x 1.5 x 2 mm voxels, shifted.
        let dir = try tempDir()
        var values: [Float] = []
        for k in 0..<10 { values += try NpyArray(path: String(format: "%@/MRIs/slice_%03d.npy", data, k)).floats() }
        let affine: [[Double]] = [[1.5, 0, 0, -30], [0, 1.5, 0, -40], [0, 0, 2, 10], [0, 0, 0, 1]]
        try NIfTIVolume(dims: [48, 48, 10], values: values.map { $0 * 900 }, affine: affine).writeGzip(to: dir + "/t1.nii.gz")
        let r = try runUnetDist(["predict", "--checkpoint", fixturesDirectory + "/torch_trained.safetensors",
                                 "--input", dir + "/t1.nii.gz", "--out", dir + "/out", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let mask = try NIfTIVolume(path: dir + "/out/t1_mask.nii.gz")
        XCTAssertEqual(mask.dims, [48, 48, 10])
        for (a, b) in zip(mask.affine.joined(), affine.joined()) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        // NIfTI codes: 0 background, 1 white matter, 2 gray matter.
        XCTAssertTrue(mask.values.allSatisfy { [0, 1, 2].contains($0) })
        XCTAssertTrue(mask.values.contains(0) && mask.values.contains(1))
        XCTAssertGreaterThan(mask.values.filter { $0 == 0 }.count, mask.values.count / 2, "the background is the most common label")
        let lut = try String(contentsOfFile: dir + "/out/labels.lut", encoding: .utf8)
        XCTAssertTrue(lut.hasPrefix("1 ") && lut.contains(" white matter\n2 ") && lut.hasSuffix(" gray matter\n"), lut)
        let snap = try String(contentsOfFile: dir + "/out/labels.itksnap.txt", encoding: .utf8)
        XCTAssertTrue(snap.contains("\n0 0 0 0 0 0 0 \"background\"\n1 ") && snap.contains("\"white matter\""), snap)

        let rows = try String(contentsOfFile: dir + "/out/volumes.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.count, 11)
        let geometry = SliceGeometry(axis: .axial, dims: mask.dims, affine: mask.affine)
        for row in rows.prefix(10) {
            let slice = geometry.extract(mask.values, index: Int(row[1])!)
            let wm = slice.pixels.filter { $0 == 1 }.count, gm = slice.pixels.filter { $0 == 2 }.count
            XCTAssertEqual(Int(row[2]), wm); XCTAssertEqual(Int(row[3]), gm)
            XCTAssertEqual(Double(row[5])!, Double(wm) * 2.25, accuracy: 0.01)  // 1.5 x 1.5 mm pixels
        }
        // One type per column: the total row leaves slice and areas empty, the slices the volumes.
        XCTAssertTrue(rows.allSatisfy { $0.count == 9 })
        XCTAssertTrue(rows.prefix(10).allSatisfy { $0[7].isEmpty && $0[8].isEmpty })
        let total = rows[10]
        XCTAssertEqual(total[1], ""); XCTAssertEqual(total[5], ""); XCTAssertEqual(total[6], "")
        XCTAssertEqual(Int(total[2]), mask.values.filter { $0 == 1 }.count)
        XCTAssertEqual(Int(total[3]), mask.values.filter { $0 == 2 }.count)
        XCTAssertEqual(Int(total[4]), mask.values.filter { $0 == 0 }.count)
        XCTAssertEqual(Double(total[7])!, Double(mask.values.filter { $0 == 1 }.count) * 4.5, accuracy: 0.05)
        XCTAssertEqual(Double(total[8])!, Double(mask.values.filter { $0 == 2 }.count) * 4.5, accuracy: 0.05)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/t1_overlay.png"))
    }

    func testInfoDescribesACheckpoint() throws {
        let run = try trainThreeEpochs()
        let r = try runUnetDist(["info", run + "/checkpoints/last.safetensors", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(o["model"] as? String, "unet"); XCTAssertEqual(o["epoch"] as? Int, 3); XCTAssertEqual(o["step"] as? Int, 6)
        XCTAssertEqual(o["parameters"] as? Int, 483_571)
        XCTAssertNotNil((o["metrics"] as? [String: Any])?["test_iou"])
        let bad = try runUnetDist(["info", data + "/MRIs/slice_000.npy"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.hasPrefix("error: \(data)/MRIs/slice_000.npy: "), bad.stderr)
    }
}
