import Foundation
import Formats
import TestSupport
import XCTest

/// N ranks train exactly like one (docs/design.md, section 2), through `mpirun` on the built binary.
final class DistributedTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    func runDir() throws -> String {
        let d = try scratchDirectory("dist")
        return d + "/run"
    }

    /// One SGD step at lr 10 from the PyTorch-made checkpoint; returns (run dir, printed loss).
    func sgdStep(ranks: Int, batchSize: Int, extra: [String] = []) throws -> (String, Double) {
        let run = try runDir()
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--optimizer", "sgd",
                                 "--lr", "10", "--no-shuffle", "--max-steps", "1", "--batch-size", "\(batchSize)",
                                 "--test-count", "2", "--threads", "1"] + extra, ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        let csv = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        return (run, Double(csv[1].split(separator: ",")[1])!)
    }

    func checkpoint(_ run: String) throws -> SafeTensors { try SafeTensors(path: run + "/checkpoints/last.safetensors") }

    /// Every tensor, BatchNorm buffers included, within the project's 10x-float32 rule per tensor
    /// (`assertSameChangeWithinFloat32`); batch 4 is the step PyTorch recorded.
    func testOneSGDStepOnTwoThreeAndFourRanksEqualsOneRank() throws {
        let initial = try SafeTensors(path: start), errors = try torchFloat32RelativeErrors()
        for batchSize in [4, 2] {  // 2: fewer samples than ranks, some ranks hold none
            let (one, loss1) = try sgdStep(ranks: 1, batchSize: batchSize)
            let expected = try checkpoint(one)
            for n in [2, 3, 4] {
                let (run, loss) = try sgdStep(ranks: n, batchSize: batchSize)
                XCTAssertEqual(loss, loss1, accuracy: 1e-5 * loss1, "loss, \(n) ranks, batch \(batchSize)")
                try assertSameChangeWithinFloat32(from: initial, expected: expected, actual: try checkpoint(run),
                                                  relativeErrors: errors, lr: 10, what: "\(n) ranks, batch \(batchSize)")
            }
        }
    }

    /// history.csv's rows as named columns.
    func historyRows(_ run: String) throws -> [[String: Double]] {
        let lines = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        let header = lines[0].split(separator: ",").map(String.init)
        return lines.dropFirst().map { row in
            Dictionary(uniqueKeysWithValues: zip(header, row.split(separator: ",").map { Double($0)! }))
        }
    }

    /// The test figures (test_loss, test_iou, test_iou_wm, test_iou_gm, dice) of two runs that
    /// trained alike agree within float32's error: 1e-5 of the value (ten times the ~1e-6 by which
    /// float32 rounding moves the logits when the ranks split the batches differently) plus 1e-6,
    /// one unit of history.csv's last printed digit. Measured: every printed digit equal on 1, 2,
    /// 3 and 4 ranks. One rank's sums left out moves test_loss by about 20%.
    func assertSameTestFigures(_ actual: [[String: Double]], _ expected: [[String: Double]], _ what: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        for (epoch, (a, e)) in zip(actual, expected).enumerated() {
            for key in ["test_loss", "test_iou", "test_iou_wm", "test_iou_gm", "dice"] {
                XCTAssertEqual(a[key]!, e[key]!, accuracy: 1e-5 * abs(e[key]!) + 1e-6, "\(what), epoch \(epoch + 1): \(key)",
                               file: file, line: line)
            }
        }
    }

    func testTestLossAndIoUAreTheSameOnOneTwoThreeAndFourRanks() throws {
        // From the trained checkpoint, so that the figures are far from chance. The 2 test pairs
        // are sharded: one per rank on 2 ranks; on 3 and 4, rank 0 holds none. Batches of 3 over
        // 8 pairs leave ranks without training samples in some steps on 3 and 4 ranks.
        func run(_ ranks: Int) throws -> [[String: Double]] {
            let dir = try runDir()
            let r = try runUnetDist(["train", "--data", data, "--run-dir", dir, "--init", start, "--optimizer", "sgd",
                                     "--lr", "0.05", "--epochs", "1", "--batch-size", "3", "--test-count", "2",
                                     "--threads", "1"], ranks: ranks)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try historyRows(dir)
        }
        let one = try run(1)
        XCTAssertEqual(one.count, 1)
        XCTAssertGreaterThan(one[0]["test_iou"]!, 0.8, "a trained model, not chance")
        for n in [2, 3, 4] { assertSameTestFigures(try run(n), one, "\(n) ranks") }
    }

    /// `unet-dist eval` shards the pairs over the ranks: on 1, 2 and 3 ranks every figure is
    /// within the project's rule of PyTorch's float64 figure (ten times PyTorch float32's own
    /// distance, plus 1e-6 of the value), and the same images are counted.
    func testEvalFiguresAreTheSameOnOneTwoAndThreeRanks() throws {
        let torch = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixturesDirectory
            + "/torch_trained_eval.json"))) as! [String: Any]
        for n in [1, 2, 3] {
            let r = try runUnetDist(["eval", "--checkpoint", start, "--data", data, "--json"], ranks: n)
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = r.stdout.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "rank 0 alone prints:\n\(r.stdout)")
            let ours = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
            XCTAssertEqual(ours["images"] as? Int, 10, "\(n) ranks")
            for key in ["loss", "iou", "iou_wm", "iou_gm", "dice"] {
                let f32 = torch[key] as! Double, f64 = torch[key + "64"] as! Double, value = ours[key] as! Double
                XCTAssertLessThanOrEqual(abs(value - f64), 10 * abs(f32 - f64) + 1e-6 * abs(f64),
                                         "\(n) ranks: \(key) \(value), torch f32 \(f32), f64 \(f64)")
            }
        }
    }

    func testLocalBatchNormDiffersFromOneRank() throws {
        // The contrast that shows the synchronization matters: per-rank statistics change the step.
        let initial = try SafeTensors(path: start)
        let (one, _) = try sgdStep(ranks: 1, batchSize: 4)
        let (local, _) = try sgdStep(ranks: 2, batchSize: 4, extra: ["--bn", "local"])
        let name = "conv4.2.0.weight"
        let s = try initial.floats(name)
        let e = zip(try checkpoint(one).floats(name), s).map { Double($0 - $1) }
        let l = zip(try checkpoint(local).floats(name), s).map { Double($0 - $1) }
        XCTAssertGreaterThan(zip(e, l).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot(), 5e-2 * norm(e))
    }

    func testAugmentedTrainingIsTheSameOnOneAndTwoRanks() throws {
        var losses: [[Double]] = []
        for n in [1, 2] {
            let run = try runDir()
            let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "2", "--batch-size", "4",
                                     "--test-count", "2", "--threads", "1", "--augment"], ranks: n)
            XCTAssertEqual(r.status, 0, r.stderr)
            losses.append(try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").dropFirst()
                .map { Double($0.split(separator: ",")[1])! })
        }
        for (a, b) in zip(losses[0], losses[1]) { XCTAssertEqual(b, a, accuracy: 1e-3 * a) }
    }

    func adamRun(ranks: Int) throws -> (String, [Double]) {
        let run = try runDir()
        // 8 training pairs in batches of 3: the last batch of each epoch has 2, so on 3 and 4
        // ranks some ranks hold nothing in it and still join every collective.
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "3", "--batch-size", "3",
                                 "--test-count", "2", "--threads", "1", "--lr", "1e-3"], ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        if ranks > 1 {
            XCTAssertEqual(r.stdout.components(separatedBy: "Epoch 3/3").count, 2, "only rank 0 prints:\n\(r.stdout)")
        }
        let rows = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        return (run, rows.map { Double($0.split(separator: ",")[1])! })
    }

    func testAdamEpochsAgreeForEveryNumberOfRanksAndRepeatExactly() throws {
        let (_, one) = try adamRun(ranks: 1)
        XCTAssertEqual(one.count, 3)
        for n in [2, 3, 4] {
            let (_, losses) = try adamRun(ranks: n)
            for (a, b) in zip(one, losses) { XCTAssertEqual(b, a, accuracy: 1e-3 * a, "\(n) ranks: \(losses) vs \(one)") }
        }
        let (a, _) = try adamRun(ranks: 3), (b, _) = try adamRun(ranks: 3)
        let ta = try checkpoint(a), tb = try checkpoint(b)
        for name in ta.names { XCTAssertEqual(ta.entries[name]!.bytes, tb.entries[name]!.bytes, "\(name): same N twice") }
    }

    /// A run stopped after 3 of 4 steps on 2 ranks and resumed on 3 (SGD with momentum: the
    /// optimizer's state crosses the resume) ends as the straight 2-rank run: the same losses and
    /// test figures, and every tensor within the 10x-float32 rule.
    func testResumeOnAnotherNumberOfRanks() throws {
        let args = ["train", "--data", data, "--epochs", "2", "--batch-size", "4", "--test-count", "2", "--threads", "1",
                    "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05"]
        let straight = try runDir(), run = try runDir()
        var r = try runUnetDist(args + ["--run-dir", straight, "--init", start], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try runUnetDist(args + ["--run-dir", run, "--init", start, "--max-steps", "3"], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try checkpoint(run).metadata["step"], "3")
        r = try runUnetDist(args + ["--run-dir", run, "--resume", run + "/checkpoints/last.safetensors"], ranks: 3)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try checkpoint(run).metadata["step"], "4")
        let expected = try historyRows(straight), resumed = try historyRows(run)
        XCTAssertEqual(resumed.count, 2)
        for (a, e) in zip(resumed, expected) {
            for key in ["loss", "iou"] { XCTAssertEqual(a[key]!, e[key]!, accuracy: 1e-5 * abs(e[key]!) + 1e-6, key) }
        }
        assertSameTestFigures(resumed, expected, "resumed on 3 ranks")
        try assertSameChangeWithinFloat32(from: try SafeTensors(path: start), expected: try checkpoint(straight),
                                          actual: try checkpoint(run), relativeErrors: try torchFloat32RelativeErrors(),
                                          lr: 0.05, what: "resumed on 3 ranks")
    }

    func testAFailureOnAnotherRankIsReportedOnceNamingTheRank() throws {
        // Rank 1's half of the data check (pairs 5-9 of 10) holds a corrupt image; every rank stops together.
        let dir = try scratchDirectory("badrank")
        try FileManager.default.copyItem(atPath: data, toPath: dir + "/data")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/data/MRIs/slice_007.npy"))
        let r = try runUnetDist(["train", "--data", dir + "/data", "--run-dir", dir + "/run", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1", "--no-shuffle"], ranks: 2, timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("error: rank 1: \(dir)/data/MRIs/slice_007.npy: not a .npy file (bad magic)"), r.stderr)
        XCTAssertEqual(r.stderr.components(separatedBy: "error:").count, 2, "one report:\n\(r.stderr)")
    }
}
