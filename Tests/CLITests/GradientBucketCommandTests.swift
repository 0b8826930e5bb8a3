import Foundation
import Formats
import TestSupport
import XCTest

/// `--bucket-mb`: the gradient sum in buckets started during the backward gives the same bytes
/// as one allreduce after it (docs/scaling.md, Overlap).
final class GradientBucketCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    /// The run's last checkpoint after `args` on `ranks` ranks.
    func train(ranks: Int, _ args: [String]) throws -> SafeTensors {
        let run = try scratchDirectory("buckets") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--no-shuffle",
                                 "--test-count", "2", "--threads", "1", "--quiet"] + args, ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try SafeTensors(path: run + "/checkpoints/last.safetensors")
    }

    func assertSameBytes(_ a: SafeTensors, _ b: SafeTensors, _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.names, b.names, what, file: file, line: line)
        XCTAssertGreaterThan(a.names.count, 100, what, file: file, line: line)
        for name in a.names where a.entries[name]!.bytes != b.entries[name]!.bytes {
            XCTFail("\(what): \(name) differs", file: file, line: line)
        }
    }

    /// One SGD step at lr 10 (every gradient shows in the weights) on 2 and 3 ranks, buckets of
    /// 0.05 MiB (38 for the UNet) against one allreduce: the same bytes, optimizer state
    /// included. On 2 ranks each element is one addition, and a + b = b + a whatever the
    /// algorithm; on 3 ranks MPI promises nothing, but Open MPI 4.1's blocking allreduce and its
    /// non-blocking one (libnbc) add the three ranks' values in the same order at these sizes.
    /// An Open MPI that does not would fail here: the ranks would still agree with each other,
    /// bucketed runs within float32 of unbucketed ones (DistributedTests' rule).
    func testBucketedStepIsByteIdenticalOnTwoAndThreeRanks() throws {
        for ranks in [2, 3] {
            let step = ["--optimizer", "sgd", "--lr", "10", "--max-steps", "1", "--batch-size", "4"]
            let one = try train(ranks: ranks, step + ["--bucket-mb", "0"])
            let bucketed = try train(ranks: ranks, step + ["--bucket-mb", "0.05"])
            assertSameBytes(one, bucketed, "\(ranks) ranks")
        }
    }

    /// Two Adam steps of 2 micro-batches each on 2 ranks: only the last micro-batch's backward
    /// starts the buckets (a sum of a partial gradient would change the bytes), and the buckets
    /// start again in the next step.
    func testMicroBatchesWithBucketsAreByteIdentical() throws {
        let steps = ["--max-steps", "2", "--batch-size", "8", "--accumulate", "2", "--lr", "1e-3"]
        let one = try train(ranks: 2, steps + ["--bucket-mb", "0"])
        let bucketed = try train(ranks: 2, steps + ["--bucket-mb", "0.05"])
        assertSameBytes(one, bucketed, "accumulate 2")
    }

    func testANegativeBucketSizeIsRefused() throws {
        let r = try runUnetDist(["bench", "--size", "16", "--batch-size", "1", "--steps", "1", "--bucket-mb=-1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--bucket-mb must be 0 (one allreduce) or positive"), r.stderr)
    }
}
