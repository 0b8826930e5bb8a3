import Foundation
import Formats
import TestSupport
import XCTest

/// `--resume` either trains or says why it cannot (never exit 0 without a step), and
/// `--overwrite` leaves nothing of the run it replaces. The fixture set: 8 train pairs in batches
/// of 4 (2 steps per epoch), 2 test pairs.
final class ResumeAndOverwriteTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"

    func train(_ run: String, _ extra: [String], data: String? = nil, batch: Int = 4) throws -> CommandResult {
        try runUnetDist(["train", "--data", data ?? self.data, "--run-dir", run, "--batch-size", "\(batch)", "--test-count", "2",
                         "--threads", "1"] + extra)
    }

    func last(_ run: String) -> String { run + "/checkpoints/last.safetensors" }

    func assertSameTensors(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try SafeTensors(path: a), y = try SafeTensors(path: b)
        XCTAssertEqual(x.names, y.names, file: file, line: line)
        for name in x.names { XCTAssertEqual(x.entries[name]!.bytes, y.entries[name]!.bytes, name, file: file, line: line) }
    }

    func testResumeAfterTwoOfThreeEpochsEqualsAStraightRun() throws {
        let straight = try scratchDirectory() + "/run", split = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(straight, ["--epochs", "3"]).status, 0)
        XCTAssertEqual(try train(split, ["--epochs", "3", "--max-steps", "4"]).status, 0)  // two whole epochs
        let r = try train(split, ["--epochs", "3", "--resume", last(split)])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("resuming \(split) at epoch 3, step 0/2"), r.stdout)
        XCTAssertFalse(r.stdout.contains("flags that differ"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Epoch 3/3"), r.stdout)
        let a = try Data(contentsOf: URL(fileURLWithPath: last(straight))), b = try Data(contentsOf: URL(fileURLWithPath: last(split)))
        XCTAssertEqual(a, b, "the whole file, metadata included")

        // A run of 2 epochs given a third: the same tensors, the changed flag named.
        let two = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(two, ["--epochs", "2"]).status, 0)
        let more = try train(two, ["--epochs", "3", "--resume", last(two)])
        XCTAssertEqual(more.status, 0, more.stderr)
        XCTAssertTrue(more.stdout.contains("flags that differ from the checkpoint's: --epochs 3 (was 2)"), more.stdout)
        try assertSameTensors(last(straight), last(two))
        XCTAssertEqual(try SafeTensors(path: last(two)).metadata["epoch"], "3")
    }

    func testAResumeThatCannotContinueSaysWhyAndExitsOne() throws {
        let run = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(run, ["--epochs", "2"]).status, 0)
        let finished = try Data(contentsOf: URL(fileURLWithPath: last(run)))
        let cases: [([String], Int, String)] = [
            (["--epochs", "2"], 4, "the run is finished (2 of 2 epochs); pass --epochs above 2 to train further"),
            (["--epochs", "1"], 4, "holds 2 completed epochs, more than --epochs 1"),
            (["--epochs", "5", "--max-steps", "4"], 4, "has taken 4 steps already, --max-steps 4 leaves none to take"),
        ]
        for (flags, batch, message) in cases {
            let r = try train(run, flags + ["--resume", last(run)], batch: batch)
            XCTAssertEqual(r.status, 1, "\(flags): \(r.stdout)")
            XCTAssertEqual(r.stderr, "error: \(last(run)): \(message)\n", "\(flags)")
            XCTAssertFalse(r.stdout.contains("Epoch"), r.stdout)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: last(run))), finished, "a refused resume writes nothing")

        // Stopped inside epoch 2 (step 3 of 2 x 2): another batch size cannot continue that epoch.
        let mid = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(mid, ["--epochs", "2", "--max-steps", "3"]).status, 0)
        let r = try train(mid, ["--epochs", "2", "--resume", last(mid)], batch: 2)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: \(last(mid)): stopped at epoch 2, step 1/2, but this data set and --batch-size "
                                         + "give 4 steps per epoch"), r.stderr)
        let early = try train(mid, ["--epochs", "1", "--resume", last(mid)])
        XCTAssertEqual(early.status, 1)
        XCTAssertEqual(early.stderr, "error: \(last(mid)): stopped inside epoch 2, after --epochs 1 ends the run; pass --epochs 2 or more\n")
    }

    func testAnotherDataSetContinuesAtAnEpochBoundaryAndSaysSo() throws {
        let run = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(run, ["--epochs", "1"]).status, 0)
        // Six of the ten pairs: 4 train, 2 test, one step per epoch instead of two.
        let smaller = try scratchDirectory() + "/data"
        for folder in ["MRIs", "Segmentations"] {
            try FileManager.default.createDirectory(atPath: smaller + "/" + folder, withIntermediateDirectories: true)
        }
        for i in 4..<10 {
            try FileManager.default.copyItem(atPath: String(format: "%@/MRIs/slice_%03d.npy", data, i),
                                             toPath: String(format: "%@/MRIs/slice_%03d.npy", smaller, i))
            try FileManager.default.copyItem(atPath: String(format: "%@/Segmentations/segm_%03d.npy", data, i),
                                             toPath: String(format: "%@/Segmentations/segm_%03d.npy", smaller, i))
        }
        let r = try train(run, ["--epochs", "2", "--resume", last(run)], data: smaller)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("resuming \(run) at epoch 2, step 0/1"), r.stdout)
        XCTAssertTrue(r.stdout.contains("--data \(smaller) (was \(data))"), r.stdout)
        XCTAssertTrue(r.stdout.contains("the data or --batch-size differ from the checkpoint's (1 steps per epoch, was 2): "
                                        + "continuing at the epoch boundary"), r.stdout)
        let meta = try SafeTensors(path: last(run)).metadata
        XCTAssertEqual(meta["epoch"], "2"); XCTAssertEqual(meta["step"], "3")
    }

    func testOverwriteRemovesEverythingTheOldRunWroteAndNothingElse() throws {
        let run = try scratchDirectory() + "/run"
        XCTAssertEqual(try train(run, ["--epochs", "3"]).status, 0)
        let fm = FileManager.default
        XCTAssertTrue(fm.fileExists(atPath: run + "/samples/epoch-003.png"))
        try Data("mine".utf8).write(to: URL(fileURLWithPath: run + "/notes.txt"))
        try Data("mine".utf8).write(to: URL(fileURLWithPath: run + "/samples/legend.txt"))
        try Data("half".utf8).write(to: URL(fileURLWithPath: run + "/checkpoints/.last.safetensors.tmp-99999"))

        // Without --overwrite nothing is touched.
        let listing = try fm.subpathsOfDirectory(atPath: run).sorted()
        let before = try Data(contentsOf: URL(fileURLWithPath: last(run)))
        XCTAssertEqual(try train(run, ["--epochs", "1", "--seed", "3"]).status, 1)
        XCTAssertEqual(try fm.subpathsOfDirectory(atPath: run).sorted(), listing)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: last(run))), before)

        // One step with another seed: no epoch-2/3 pictures, no best checkpoint, a one-row history.
        let r = try train(run, ["--epochs", "1", "--seed", "3", "--max-steps", "1", "--overwrite"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try fm.subpathsOfDirectory(atPath: run).sorted(),
                       ["checkpoints", "checkpoints/last.safetensors", "config.json", "events.out.tfevents.unet-dist",
                        "history.csv", "history.jsonl",
                        "history.png", "notes.txt", "report.html", "samples", "samples/epoch-001.png", "samples/legend.txt"])
        XCTAssertEqual(try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").count, 2)
        XCTAssertEqual(try SafeTensors(path: last(run)).metadata["seed"], "3")

        let both = try train(run, ["--epochs", "2", "--resume", last(run), "--overwrite"])
        XCTAssertEqual(both.status, 64, both.stderr)
        XCTAssertTrue(both.stderr.contains("--resume continues a run in place, --overwrite removes it"), both.stderr)
    }
}
