import Foundation
import TestSupport
import XCTest

/// `unet-dist bench` end to end: the JSON object, on one process and as global
/// figures under mpirun. Tiny images and two steps: the timings themselves are not asserted.
final class BenchCommandTests: XCTestCase {
    func bench(batch: Int, ranks: Int? = nil, size: Int = 32) throws -> [String: Any] {
        let r = try runUnetDist(["bench", "--size", "\(size)", "--batch-size", "\(batch)", "--steps", "2",
                                 "--threads", "1", "--sgemm-size", "64", "--json"], ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").last, r.stdout)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
    }

    func number(_ object: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        try XCTUnwrap(object[key] as? Double, "\(key) in \(object)", file: file, line: line)
    }

    func times(_ object: [String: Any], _ pass: String) throws -> [String: Double] {
        try XCTUnwrap(object[pass] as? [String: Double], "\(pass) in \(object)")
    }

    func testJSONOnOneProcess() throws {
        let two = try bench(batch: 2), four = try bench(batch: 4)
        for key in ["images_per_s", "step_ms", "gflops", "conv_gflops", "sgemm_gflops", "peak_rss_mb"] {
            XCTAssertGreaterThan(try number(two, key), 0, key)
        }
        XCTAssertEqual((two["step_ms_all"] as? [Double])?.count, 2)
        // The FLOP count follows the batch, not the clock.
        XCTAssertEqual(try number(four, "conv_gflop_per_step"), 2 * (try number(two, "conv_gflop_per_step")),
                       accuracy: 1e-9)
        let kinds = ["conv", "conv_transpose", "batch_norm", "relu", "pool", "other", "loss_and_update", "collectives"]
        for pass in ["forward_ms", "backward_ms"] {
            let t = try times(two, pass)
            XCTAssertEqual(Set(t.keys), Set(kinds), pass)
            XCTAssertGreaterThan(t["conv"] ?? 0, 0, pass)
            // One process has no one to wait for: its gradient sum is a no-op (well under a
            // millisecond even if the machine preempts it; any layer's work would be more).
            XCTAssertLessThan(t["collectives"] ?? 1, 1, pass)
        }
        XCTAssertLessThan(try number(two, "collectives_ms_max"), 1)
        XCTAssertEqual((two["collectives_ms_by_rank"] as? [[Double]])?.map(\.count), [2])
        XCTAssertGreaterThan(try number(two, "cpu_ms_per_step"), 0)
        // The allreduces a step makes with more than one rank, counted on one: each BatchNorm's
        // sums forward (2C+1: sum, sum of squares, count) and backward (2C), then the gradients.
        let doubles = try XCTUnwrap(two["allreduce_double_counts"] as? [Int], "\(two)")
        XCTAssertEqual(doubles.count, 28)   // the seed's UNet: 14 BatchNorms
        XCTAssertEqual(doubles.filter { $0 % 2 == 1 }.count, 14)
        XCTAssertEqual(Set(doubles.filter { $0 % 2 == 1 }.map { ($0 - 1) / 2 }), Set(doubles.filter { $0 % 2 == 0 }.map { $0 / 2 }))
        XCTAssertEqual(four["allreduce_double_counts"] as? [Int], doubles)
        let floats = try XCTUnwrap(two["allreduce_float_counts"] as? [Int], "\(two)")
        XCTAssertEqual(floats.count, 1)
        XCTAssertGreaterThan(floats[0], 400_000)
    }

    /// The memory-bound layers' traffic, and each kind's share of its own peak.
    func testTrafficAndPeakShares() throws {
        let two = try bench(batch: 2), four = try bench(batch: 4)
        let bytes = try XCTUnwrap(two["bytes_per_step_by_kind"] as? [String: Double], "\(two)")
        let bytes4 = try XCTUnwrap(four["bytes_per_step_by_kind"] as? [String: Double], "\(four)")
        for (kind, b) in bytes { XCTAssertEqual(bytes4[kind] ?? -1, 2 * b, accuracy: 1e-6, kind) }
        // The three pools of the seed's UNet at 32x32 take 16x32x32, 32x16x16 and 64x8x8 inputs (28672
        // floats per image): x and y (1.25 x) forward and again before the backward (the pooled
        // tensor is not kept), then dy, x and the skip gradient added to (3.25 x).
        XCTAssertEqual(bytes["pool"] ?? 0, 2 * 4 * (2 * 1.25 + 3.25) * 28672, accuracy: 1e-6)
        // 14 BatchNorms over 118784 floats per image: forward 2 or 3 passes, backward 5, and
        // where a BatchNorm's output is computed again for its reader, 2 more.
        let bnFloats = 2 * 118784.0 * 4
        XCTAssertGreaterThanOrEqual(bytes["batch_norm"] ?? 0, 7 * bnFloats)
        XCTAssertLessThanOrEqual(bytes["batch_norm"] ?? 0, 10 * bnFloats)
        // At 32 every up-sampling has its skip's size: nothing is padded, and no copy is made.
        XCTAssertEqual(bytes["other"], 0)
        XCTAssertEqual(bytes["conv"], 0)
        XCTAssertGreaterThan(try number(two, "triad_gbps"), 0)
        XCTAssertGreaterThan(try number(two, "conv_peak_gflops"), 0)
        let shares = try XCTUnwrap(two["share_of_peak"] as? [String: Double], "\(two)")
        let rates = try XCTUnwrap(two["rate_by_kind"] as? [String: Double], "\(two)")
        for kind in ["conv", "conv_transpose", "batch_norm", "pool"] {
            XCTAssertGreaterThan(shares[kind] ?? 0, 0, kind)
            XCTAssertEqual((rates[kind] ?? 0) / (shares[kind] ?? 1),
                           try number(two, kind.hasPrefix("conv") ? "conv_peak_gflops" : "triad_gbps"),
                           accuracy: 1e-6 * (rates[kind] ?? 0) / (shares[kind] ?? 1), kind)
        }
        // Neither a loss nor a ReLU of its own counts bytes: no share is made up for them.
        XCTAssertNil(shares["relu"]); XCTAssertNil(shares["loss_and_update"]); XCTAssertNil(shares["other"])
        // At 36 the deepest up-sampling (64 x 8 x 8 per image) is padded to its skip's 9 x 9: its
        // gradient is cut back (read and written once), and unless the transposed convolution
        // writes it padded itself, the forward pads it, and again before the backward (64 x 8 x 8
        // read, 64 x 9 x 9 written, twice).
        let padded = try XCTUnwrap(try bench(batch: 2, size: 36)["bytes_per_step_by_kind"] as? [String: Double])
        XCTAssertGreaterThanOrEqual(padded["other"] ?? 0, 2 * 4 * 2 * 4096)
        XCTAssertLessThanOrEqual(padded["other"] ?? 0, 2 * 4 * (2 * 4096 + 2 * (4096 + 5184)))
    }

    func testGlobalFiguresUnderMPI() throws {
        let one = try bench(batch: 4), two = try bench(batch: 4, ranks: 2)
        XCTAssertEqual(two["ranks"] as? Int, 2)
        // Two ranks share the global batch of 4: the step's FLOPs are the same as on one process.
        XCTAssertEqual(try number(two, "conv_gflop_per_step"), try number(one, "conv_gflop_per_step"), accuracy: 1e-9)
        XCTAssertGreaterThanOrEqual(try number(two, "peak_rss_mb_total"), try number(two, "peak_rss_mb"))
        // BatchNorm's reductions (forward) and the gradient sum (backward) are timed as collectives,
        // apart from the layers that call them.
        let forward = try times(two, "forward_ms"), backward = try times(two, "backward_ms")
        XCTAssertGreaterThan(forward["collectives"] ?? 0, 0)
        XCTAssertGreaterThan(backward["collectives"] ?? 0, 0)
        XCTAssertGreaterThanOrEqual(try number(two, "collectives_ms_max"),
                                    (forward["collectives"] ?? 0) + (backward["collectives"] ?? 0) - 1e-6)
        // Per step and rank: rank 0's row adds up to its per-kind collectives (timed apart, by
        // the layers), and each of its entries is a part of that step's time.
        let byRank = try XCTUnwrap(two["collectives_ms_by_rank"] as? [[Double]], "\(two)")
        XCTAssertEqual(byRank.map(\.count), [2, 2])
        XCTAssertEqual(byRank[0].reduce(0, +) / 2, (forward["collectives"] ?? 0) + (backward["collectives"] ?? 0),
                       accuracy: 1e-6)
        XCTAssertEqual(two["allreduce_double_counts"] as? [Int], one["allreduce_double_counts"] as? [Int])
        XCTAssertEqual(two["allreduce_float_counts"] as? [Int], one["allreduce_float_counts"] as? [Int])
        let stepTimes = try XCTUnwrap(two["step_ms_all"] as? [Double])
        for (wait, step) in zip(byRank[0], stepTimes) {
            XCTAssertGreaterThan(wait, 0)
            XCTAssertLessThan(wait, step)
        }
    }
}
