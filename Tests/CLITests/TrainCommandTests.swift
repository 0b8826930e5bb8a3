import Foundation
import Formats
import TestSupport
import XCTest

/// `unet-dist train`, `eval` and `overfit` end to end on the small seed-layout fixture set
/// (10 pairs of 48x48: 8 train, 2 test).
final class TrainCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"

    func runDir() throws -> String {
        let d = try scratchDirectory("train")
        return d + "/run"
    }

    func train(_ run: String, _ extra: [String] = [], ranks: Int? = nil) throws -> CommandResult {
        try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2",
                         "--threads", "1"] + extra, ranks: ranks)
    }

    func testTrainWritesHistoryCheckpointsAndConfig() throws {
        let run = try runDir()
        let r = try train(run, ["--epochs", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("Epoch ") }
        XCTAssertEqual(lines.count, 2)
        XCTAssertNotNil(lines[1].range(of: #"^Epoch 2/2 loss [0-9.]+ iou [0-9.]+ test_loss [0-9.]+ test_iou [0-9.]+ \([0-9.]+ s, [0-9.]+ img/s\)$"#,
                                       options: .regularExpression), String(lines[1]))
        let csv = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 3)
        let header = csv[0].split(separator: ",").map(String.init)
        for column in ["epoch", "loss", "iou", "test_loss", "test_iou", "seconds", "images_per_s"] {
            XCTAssertTrue(header.contains(column), column)
        }
        let ckpt = try SafeTensors(path: run + "/checkpoints/last.safetensors")
        XCTAssertEqual(ckpt.metadata["model"], "unet")
        XCTAssertEqual(ckpt.metadata["epoch"], "2")
        XCTAssertEqual(ckpt.metadata["step"], "4")
        XCTAssertEqual(ckpt.metadata["seed"], "0")
        let config = try JSONSerialization.jsonObject(with: Data(ckpt.metadata["config"]!.utf8)) as! [String: Any]
        for key in ["data", "epochs", "batchSize", "lr", "optimizer", "momentum", "weightDecay", "testCount",
                    "seed", "shuffle", "threads"] {
            XCTAssertNotNil(config[key], key)
        }
        // What only drives or reports the run stays out of the checkpoint, in config.json only.
        let full = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/config.json"))) as! [String: Any]
        for key in ["runDir", "overwrite", "quiet"] {
            XCTAssertNil(config[key], key)
            XCTAssertNotNil(full[key], key)
        }
        XCTAssertTrue(ckpt.has("optimizer.exp_avg.conv1.0.0.weight"))
        XCTAssertTrue(ckpt.has("optimizer.exp_avg_sq.out.bias"))
        XCTAssertEqual(try ckpt.int64s("optimizer.step"), [4])
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/checkpoints/best.safetensors"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/config.json"))

        // The checkpoint evaluates like the run's last test figures.
        let e = try runUnetDist(["eval", "--checkpoint", run + "/checkpoints/last.safetensors", "--data", data, "--json"])
        XCTAssertEqual(e.status, 0, e.stderr)
    }

    func testEqualTrainingGivesEqualBytesAlsoUnderMpirunWithOneRank() throws {
        let a = try runDir(), b = try runDir()
        XCTAssertEqual(try train(a, ["--epochs", "1"]).status, 0)
        let r = try train(b, ["--epochs", "1"], ranks: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
        let ta = try SafeTensors(path: a + "/checkpoints/last.safetensors")
        let tb = try SafeTensors(path: b + "/checkpoints/last.safetensors")
        for name in ta.names { XCTAssertEqual(ta.entries[name]!.bytes, tb.entries[name]!.bytes, name) }
        let c = try runDir()
        XCTAssertEqual(try train(c, ["--epochs", "1"]).status, 0)
        // Same flags in another run directory: the whole file is byte-identical.
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a + "/checkpoints/last.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: c + "/checkpoints/last.safetensors")))
    }

    func testResumeContinuesExactlyWhereTheRunStopped() throws {
        let straight = try runDir(), split = try runDir()
        XCTAssertEqual(try train(straight, ["--epochs", "3"]).status, 0)
        XCTAssertEqual(try train(split, ["--epochs", "3", "--max-steps", "3"]).status, 0)  // stops mid-epoch 2
        let r = try train(split, ["--epochs", "3", "--resume", split + "/checkpoints/last.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try SafeTensors(path: straight + "/checkpoints/last.safetensors")
        let b = try SafeTensors(path: split + "/checkpoints/last.safetensors")
        XCTAssertEqual(a.names, b.names)
        for name in a.names { XCTAssertEqual(a.entries[name]!.bytes, b.entries[name]!.bytes, name) }
        XCTAssertEqual(b.metadata["step"], "6")
    }

    func testCheckpointEveryStepsResumesMidEpochExactly() throws {
        let straight = try runDir(), interrupted = try runDir()
        XCTAssertEqual(try train(straight, ["--epochs", "2"]).status, 0)
        // A run that dies after step 3 (of 2 x 2): its step-3 checkpoint is the mid-epoch one.
        XCTAssertEqual(try train(interrupted, ["--epochs", "2", "--checkpoint-every", "1", "--max-steps", "3"]).status, 0)
        XCTAssertEqual(try SafeTensors(path: interrupted + "/checkpoints/last.safetensors").metadata["step"], "3")
        let r = try train(interrupted, ["--epochs", "2", "--resume", interrupted + "/checkpoints/last.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try SafeTensors(path: straight + "/checkpoints/last.safetensors")
        let b = try SafeTensors(path: interrupted + "/checkpoints/last.safetensors")
        for name in a.names { XCTAssertEqual(a.entries[name]!.bytes, b.entries[name]!.bytes, name) }
    }

    func testNonFiniteLossStopsTheRunNamingEpochAndStep() throws {
        let run = try runDir()
        let r = try train(run, ["--epochs", "3", "--lr", "1e30", "--optimizer", "sgd"])
        XCTAssertEqual(r.status, 1)
        XCTAssertNotNil(r.stderr.range(of: #"^error: the loss became (NaN|infinite) at epoch \d+, step \d+; stopping"#,
                                       options: .regularExpression), r.stderr)
    }

    func testExistingRunIsNeverOverwrittenWithoutBeingAsked() throws {
        let run = try runDir()
        XCTAssertEqual(try train(run, ["--epochs", "1"]).status, 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/last.safetensors"))
        let r = try train(run, ["--epochs", "1", "--seed", "5"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "error: \(run): already holds a checkpoint; pass --resume \(run)/checkpoints/last.safetensors to continue or --overwrite to start over\n")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/last.safetensors")), before)
        XCTAssertEqual(try train(run, ["--epochs", "1", "--seed", "5", "--overwrite"]).status, 0)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/last.safetensors")), before)
    }

    func testBadInputGivesOneLineAndNonZeroExit() throws {
        let run = try runDir()
        let cases: [([String], String)] = [
            (["train", "--data", "/nonexistent", "--run-dir", run], "error: /nonexistent: no such data directory\n"),
            (["train", "--data", data, "--run-dir", run, "--test-count", "10"],
             "error: \(data): --test-count 10 leaves no training data (10 pairs)\n"),
            (["eval", "--checkpoint", data + "/MRIs/slice_000.npy", "--data", data],
             "error: \(data)/MRIs/slice_000.npy: truncated or not a safetensors file (header of "),
        ]
        for (args, message) in cases {
            let r = try runUnetDist(args)
            XCTAssertEqual(r.status, 1, args.joined(separator: " "))
            XCTAssertTrue(r.stderr.hasPrefix(message), r.stderr)
            XCTAssertEqual(r.stderr.filter { $0 == "\n" }.count, 1, "one line: \(r.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "nothing written for bad input")
    }

    func testOverfitDrivesOneSliceAboveIoU09() throws {
        let r = try runUnetDist(["overfit", "--data", data, "--steps", "60", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let last = r.stdout.split(separator: "\n").last!
        let iou = Double(last.split(separator: " ").last!)!
        XCTAssertGreaterThan(iou, 0.9, String(last))
    }
}
