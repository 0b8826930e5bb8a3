import Foundation
import Formats
import TestSupport
import XCTest

/// `--accumulate`, `--batch-per-rank` and the learning-rate schedule end to end: one SGD step at
/// lr 10 from the PyTorch-made checkpoint taken two ways, and a resume in the middle of a warm-up.
final class BatchAndScheduleTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    func sgdStep(ranks: Int, _ flags: [String]) throws -> SafeTensors {
        let run = try scratchDirectory("step") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--optimizer", "sgd", "--lr", "10",
                                 "--no-shuffle", "--max-steps", "1", "--test-count", "2", "--threads", "1", "--quiet"] + flags,
                                ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try SafeTensors(path: run + "/checkpoints/last.safetensors")
    }

    /// The parameters only: BatchNorm's running statistics are updated once per forward pass, so
    /// K micro-batches on one rank update them K times where K ranks update theirs once.
    func parameters(_ st: SafeTensors) throws -> SafeTensors {
        var out = SafeTensors()
        for name in st.names where !name.hasPrefix("optimizer.") && !name.contains("running_") && !name.hasSuffix("num_batches_tracked") {
            out.set(name, floats: try st.floats(name), shape: st.entries[name]!.shape)
        }
        return out
    }

    func testAccumulatingTwoMicroBatchesOnOneRankEqualsTwoRanksWithLocalBatchNorm() throws {
        let initial = try parameters(try SafeTensors(path: start))
        let accumulated = try sgdStep(ranks: 1, ["--batch-size", "8", "--accumulate", "2"])
        let twoRanks = try sgdStep(ranks: 2, ["--batch-size", "8", "--bn", "local"])
        try assertSameChangeWithinFloat32(from: initial, expected: try parameters(twoRanks), actual: try parameters(accumulated),
                                          relativeErrors: try torchFloat32RelativeErrors(), lr: 10, what: "--accumulate 2",
                                          buffers: false)
        // The contrast: one batch of 8 with statistics over all 8 moves the weights otherwise.
        let whole = try parameters(try sgdStep(ranks: 1, ["--batch-size", "8"]))
        let name = "conv4.2.0.weight"
        let s = try initial.floats(name)
        let a = zip(try whole.floats(name), s).map { Double($0 - $1) }, b = zip(try parameters(twoRanks).floats(name), s).map { Double($0 - $1) }
        XCTAssertGreaterThan(zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot(), 5e-2 * norm(b))
    }

    func testBatchPerRankOnTwoRanksEqualsItsGlobalBatchOnOne() throws {
        let initial = try SafeTensors(path: start)
        let one = try sgdStep(ranks: 1, ["--batch-size", "8"])
        let two = try sgdStep(ranks: 2, ["--batch-per-rank", "4"])
        XCTAssertEqual(two.metadata["steps_per_epoch"], "1")
        try assertSameChangeWithinFloat32(from: initial, expected: one, actual: two, relativeErrors: try torchFloat32RelativeErrors(),
                                          lr: 10, what: "--batch-per-rank 4 on 2 ranks")
    }

    func testAResumeInsideTheWarmupEndsLikeAStraightRunAndHistoryHasTheRates() throws {
        let flags = ["--batch-size", "2", "--test-count", "2", "--threads", "1", "--epochs", "3", "--warmup-epochs", "1.5",
                     "--schedule", "cosine", "--lr", "1e-3", "--quiet"]
        let straight = try scratchDirectory() + "/run", split = try scratchDirectory() + "/run"
        XCTAssertEqual(try runUnetDist(["train", "--data", data, "--run-dir", straight] + flags).status, 0)
        // 4 steps per epoch, a warm-up of 6: stopped after 5.
        XCTAssertEqual(try runUnetDist(["train", "--data", data, "--run-dir", split, "--max-steps", "5"] + flags).status, 0)
        let r = try runUnetDist(["train", "--data", data, "--run-dir", split, "--resume", split + "/checkpoints/last.safetensors"] + flags)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: straight + "/checkpoints/last.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: split + "/checkpoints/last.safetensors")))
        let rows = try String(contentsOfFile: straight + "/history.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(rows[0].split(separator: ",").last, "lr")
        // The rate of each epoch's last step: step 3 in the warm-up (4/6 of the peak), steps 7 and
        // 11 the cosine's steps 1 and 5 of 6.
        let expected = [1e-3 * 4 / 6, 1e-3 * (1 + cos(Double.pi * 1 / 6)) / 2, 1e-3 * (1 + cos(Double.pi * 5 / 6)) / 2]
        for (row, e) in zip(rows.dropFirst(), expected) {
            XCTAssertEqual(Double(row.split(separator: ",").last!)!, e, accuracy: 1e-6 * e, String(row))
        }
    }
}
