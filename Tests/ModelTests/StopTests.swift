import Distributed
import Foundation
import Formats
import Model
import TestSupport
import XCTest

/// A stop requested at each kind of point: before the first step, at an epoch's last step (the
/// epoch is evaluated and saved, then the run stops), inside an epoch. Each stopped run resumed
/// ends in the bytes of a straight one. One process; the CLI tests cover the ranks.
final class StopTests: ScratchTestCase {
    func config(_ run: String) -> TrainConfig {
        var c = TrainConfig()
        c.data = fixturesDirectory + "/seeddata"; c.runDir = run; c.batchSize = 2; c.testCount = 2  // 4 steps/epoch
        c.epochs = 2; c.threads = 1
        return c
    }

    func finalBytes(_ run: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/last.safetensors")) }

    /// Stops when the `after`-th step's vote is taken (0: at once); returns the stop and the run.
    func stopped(after: Int) throws -> (Interrupted, String) {
        let run = try scratchDirectory("stop") + "/run"
        let trainer = try Trainer(config(run), comm: SingleProcess()) { _ in }
        var steps = 0
        trainer.onStep = { _ in steps += 1 }
        trainer.stopSignal = { steps + 1 >= after ? SIGTERM : 0 }
        do {
            try trainer.run()
        } catch let stop as Interrupted {
            return (stop, run)
        }
        XCTFail("the run was not stopped")
        throw XCTSkip("no stop")
    }

    func assertResumeEndsLikeAStraightRun(_ run: String) throws {
        let straight = try scratchDirectory("straight") + "/run"
        try Trainer(config(straight), comm: SingleProcess()) { _ in }.run()
        var c = config(run)
        c.resume = run + "/checkpoints/last.safetensors"
        try Trainer(c, comm: SingleProcess()) { _ in }.run()
        XCTAssertEqual(try finalBytes(run), try finalBytes(straight))
        let losses = { (r: String) in try String(contentsOfFile: r + "/history.csv", encoding: .utf8).split(separator: "\n")
            .dropFirst().map { $0.split(separator: ",")[1] } }
        XCTAssertEqual(try losses(run), try losses(straight))
    }

    func testAStopBeforeTheFirstStepSavesTheStartingPoint() throws {
        let (stop, run) = try stopped(after: 0)
        XCTAssertEqual(stop.step, 0)
        XCTAssertEqual(stop.signal, SIGTERM)
        XCTAssertEqual(try SafeTensors(path: stop.checkpoint).metadata["step"], "0")
        try assertResumeEndsLikeAStraightRun(run)
    }

    func testAStopAtAnEpochsLastStepEvaluatesAndSavesTheEpochFirst() throws {
        let (stop, run) = try stopped(after: 4)
        XCTAssertEqual(stop.step, 4)
        XCTAssertTrue(stop.description.contains("after epoch 1;"), stop.description)
        let meta = try SafeTensors(path: stop.checkpoint).metadata
        XCTAssertEqual(meta["epoch"], "1")
        XCTAssertNil(meta["epoch_sums"])
        XCTAssertEqual(try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").count, 2)
        try assertResumeEndsLikeAStraightRun(run)
    }

    func testAStopInsideAnEpochSavesThePositionAndTheEpochsSums() throws {
        let (stop, run) = try stopped(after: 6)
        XCTAssertEqual(stop.step, 6)
        XCTAssertTrue(stop.description.contains("at epoch 2, step 2/4;"), stop.description)
        let meta = try SafeTensors(path: stop.checkpoint).metadata
        XCTAssertEqual(meta["epoch"], "1")
        XCTAssertNotNil(meta["epoch_sums"]?.range(of: "\"steps\":2"))
        try assertResumeEndsLikeAStraightRun(run)
    }
}
