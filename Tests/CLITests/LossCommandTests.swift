import Foundation
import Formats
import TestSupport
import XCTest

/// `--loss`: one SGD step at lr 10 from the PyTorch-made checkpoint on N ranks changes every
/// tensor as on one rank (the Dice sums are added over the ranks), also where a rank holds no
/// sample of the batch.
final class LossCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    func sgdStep(ranks: Int, _ flags: [String]) throws -> (SafeTensors, Double) {
        let run = try scratchDirectory("loss") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--optimizer", "sgd", "--lr", "10",
                                 "--no-shuffle", "--max-steps", "1", "--test-count", "2", "--threads", "1", "--quiet"] + flags,
                                ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        let csv = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        return (try SafeTensors(path: run + "/checkpoints/last.safetensors"), Double(csv[1].split(separator: ",")[1])!)
    }

    func testDiceLossesOnSeveralRanksEqualOneRank() throws {
        let initial = try SafeTensors(path: start)
        for (loss, batch, ranks) in [("bce+dice", 4, 3), ("ce+dice", 2, 3), ("dice", 4, 2)] {
            let flags = ["--loss", loss, "--batch-size", "\(batch)"]
            let (one, loss1) = try sgdStep(ranks: 1, flags)
            let (many, lossN) = try sgdStep(ranks: ranks, flags)
            XCTAssertEqual(lossN, loss1, accuracy: 1e-5 * loss1, "\(loss): the step's loss on \(ranks) ranks")
            try assertSameChangeWithinFloat32(from: initial, expected: one, actual: many, relativeErrors: try torchFloat32RelativeErrors(),
                                              lr: 10, what: "--loss \(loss) on \(ranks) ranks")
        }
        // The contrast: the Dice term moves the weights (bce+dice against bce alone).
        let (bce, _) = try sgdStep(ranks: 1, ["--batch-size", "4"])
        let (both, _) = try sgdStep(ranks: 1, ["--batch-size", "4", "--loss", "bce+dice"])
        let name = "out.weight"
        let s = try initial.floats(name)
        let a = zip(try bce.floats(name), s).map { Double($0 - $1) }, b = zip(try both.floats(name), s).map { Double($0 - $1) }
        XCTAssertGreaterThan(zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot(), 5e-2 * norm(a))
    }
}
