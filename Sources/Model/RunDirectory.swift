import Foundation
import Formats
import Report

/// What rank 0 writes into the run directory after each epoch, every file atomically:
/// history.csv, history.jsonl, history.png, samples/epoch-NNN.png and report.html.
struct RunDirectory {
    let path: String

    /// Every file a run writes here, by name (see the writers below, `create(for:)`
    /// and Trainer.finishEpoch), and the pictures by pattern.
    static let files = ["config.json", "history.csv", "history.jsonl", "history.png", "report.html",
                        "checkpoints/last.safetensors", "checkpoints/best.safetensors", eventFile]
    static let samplePicture = #"^epoch-[0-9]+\.png$"#
    static let folders = ["checkpoints", "samples"]

    /// Removes what a run wrote (and temporary files a killed writer left), then the folders that
    /// this leaves empty; anything else stays.
    func removeOutputs() throws {
        let fm = FileManager.default
        func names(_ dir: String, matching pattern: String) -> [String] {
            ((try? fm.contentsOfDirectory(atPath: dir)) ?? [])
                .filter { $0.range(of: pattern, options: .regularExpression) != nil }.map { dir + "/" + $0 }
        }
        var doomed = Self.files.map { path + "/" + $0 } + names(path + "/samples", matching: Self.samplePicture)
        for dir in [path] + Self.folders.map({ path + "/" + $0 }) {
            doomed += names(dir, matching: #"^\..*\.tmp-[0-9]+$"#)
        }
        for file in doomed where fm.fileExists(atPath: file) {
            do { try fm.removeItem(atPath: file) } catch {
                throw FormatError(file, "cannot remove it for --overwrite: \(error.localizedDescription)")
            }
        }
        for dir in Self.folders.map({ path + "/" + $0 }) {
            if let rest = try? fm.contentsOfDirectory(atPath: dir), rest.isEmpty { try? fm.removeItem(atPath: dir) }
        }
    }

    /// `note` (why the run ends here, when it ends early) goes into the last line of history.jsonl.
    func writeHistory(_ history: [EpochRecord], note: String? = nil) throws {
        let csv = ([EpochRecord.header] + history.map(\.csv)).joined(separator: "\n") + "\n"
        try writeFileAtomically(Data(csv.utf8), to: path + "/history.csv")
        var lines = history.map(\.json)
        if let note, let last = lines.popLast() { lines.append(String(last.dropLast()) + ", \"note\": \"\(note)\"}") }
        let jsonl = lines.joined(separator: "\n") + "\n"
        try writeFileAtomically(Data(jsonl.utf8), to: path + "/history.jsonl")
        try writeFileAtomically(Self.plot(history).pngData(), to: path + "/history.png")
    }

    /// Train and test loss and IoU against epoch, one line each, on a grid.
    static func plot(_ history: [EpochRecord]) -> RGBImage {
        let columns: [(String, KeyPath<EpochRecord, Double>)] = [("loss", \.loss), ("iou", \.iou),
                                                                 ("test_loss", \.testLoss),
                                                                 ("test_iou", \.testIoU)]
        let series = columns.enumerated().map { i, c in
            LinePlot.Series(name: c.0, color: LinePlot.palette[i],
                            points: history.map { (Double($0.epoch), $0[keyPath: c.1]) })
        }
        return LinePlot(series: series, xLabel: "epoch").render()
    }

    func writeSamples(_ panel: RGBImage, epoch: Int) throws -> Data {
        try FileManager.default.createDirectory(atPath: path + "/samples", withIntermediateDirectories: true)
        let png = panel.pngData()
        try writeFileAtomically(png, to: path + String(format: "/samples/epoch-%03d.png", epoch))
        return png
    }

    func writeReport(config: TrainConfig, worldSize: Int, history: [EpochRecord], samples: Data?,
                     notes: [String] = []) throws {
        var r = HTMLReport(title: "unet-dist run: " + URL(fileURLWithPath: path).lastPathComponent)
        r.notes = notes
        if let data = try? JSONSerialization.jsonObject(with: Data(config.json.utf8)) as? [String: Any] {
            r.configuration = data.keys.sorted().map { ($0, "\(data[$0]!)") } + [("world_size", "\(worldSize)")]
        }
        r.pictures.append(("Loss and IoU", Self.plot(history).pngData()))
        if let samples { r.pictures.append(("Test slices: image | truth | prediction (last epoch)", samples)) }
        if let last = history.last, let best = history.max(by: { $0.testIoU < $1.testIoU }) {
            let f = { (v: Double) in String(format: "%.4f", v) }
            r.tables.append((heading: "Per-class test scores",
                             columns: ["", "epoch", "white matter IoU", "gray matter IoU", "mean IoU", "Dice",
                                       "test loss"],
                             rows: [["last", "\(last.epoch)", f(last.testIoUWM), f(last.testIoUGM), f(last.testIoU),
                                     f(last.dice), f(last.testLoss)],
                                    ["best", "\(best.epoch)", f(best.testIoUWM), f(best.testIoUGM), f(best.testIoU),
                                     f(best.dice), f(best.testLoss)]]))
        }
        r.tables.append((heading: "History", columns: EpochRecord.header.split(separator: ",").map(String.init),
                         rows: history.map { $0.csv.split(separator: ",").map(String.init) }))
        try writeFileAtomically(Data(r.render().utf8), to: path + "/report.html")
    }
}

extension RunDirectory {
    /// Refuses a run directory that holds a checkpoint (unless resuming or overwriting) or that
    /// cannot be written; writes nothing.
    static func check(for c: TrainConfig) throws {
        let fm = FileManager.default
        let last = c.runDir + "/checkpoints/last.safetensors"
        if fm.fileExists(atPath: last) && c.resume == nil && !c.overwrite {
            throw FormatError(c.runDir, "already holds a checkpoint; pass --resume \(last) to continue or --overwrite "
                              + "to start over")
        }
        // The nearest existing ancestor must be writable.
        var dir = URL(fileURLWithPath: c.runDir).standardizedFileURL
        while !fm.fileExists(atPath: dir.path) && dir.path != "/" { dir.deleteLastPathComponent() }
        guard fm.isWritableFile(atPath: dir.path) else {
            throw FormatError(c.runDir, "cannot be written (\(dir.path) is not writable)")
        }
    }

    /// Creates the run directory and writes config.json; with --overwrite, first removes what an
    /// earlier run wrote there, so that no file of it is taken for this run's.
    static func create(for c: TrainConfig, worldSize: Int) throws {
        let fm = FileManager.default
        if c.overwrite { try Self(path: c.runDir).removeOutputs() }
        do {
            try fm.createDirectory(atPath: c.runDir + "/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw FormatError(c.runDir, "cannot create the run directory: \(error.localizedDescription)")
        }
        var settings = (try? JSONSerialization.jsonObject(with: Data(c.json.utf8)) as? [String: Any]) ?? [:]
        settings["version"] = unetDistVersion
        settings["world_size"] = worldSize
        settings["threads_per_rank"] = c.threads
        let json = try JSONSerialization.data(withJSONObject: settings,
                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try writeFileAtomically(json + Data("\n".utf8), to: c.runDir + "/config.json")
        for dir in [c.runDir, c.runDir + "/checkpoints"] { removeAbandonedTemporaryFiles(in: dir) }
    }
}
