import Foundation
import Formats
import TestSupport
import XCTest

/// N ranks train exactly like one (design section 3), through `mpirun` on the built binary.
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

    func testOneSGDStepOnTwoThreeAndFourRanksEqualsOneRank() throws {
        let initial = try SafeTensors(path: start)
        for batchSize in [4, 2] {  // 2: fewer samples than ranks, some ranks hold none
            let (one, loss1) = try sgdStep(ranks: 1, batchSize: batchSize)
            let expected = try checkpoint(one)
            for n in [2, 3, 4] {
                let (run, loss) = try sgdStep(ranks: n, batchSize: batchSize)
                XCTAssertEqual(loss, loss1, accuracy: 1e-5 * loss1, "loss, \(n) ranks, batch \(batchSize)")
                try assertSameUpdate(from: initial, expected: expected, actual: try checkpoint(run), lr: 10)
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

    func testResumeOnAnotherNumberOfRanks() throws {
        let run = try runDir()
        var r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "2", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1", "--max-steps", "3"], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "2", "--batch-size", "4",
                             "--test-count", "2", "--threads", "1", "--resume", run + "/checkpoints/last.safetensors"],
                            ranks: 3)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try checkpoint(run).metadata["step"], "4")
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
