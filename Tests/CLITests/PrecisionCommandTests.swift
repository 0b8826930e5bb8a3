import Foundation
import Formats
import TestSupport
import XCTest

/// `--precision bf16` end to end: bench reports it, train writes an ordinary float32 checkpoint
/// that eval reads in either precision, anything but fp32 or bf16 is refused, and under mpirun
/// N ranks take one rank's bf16 step (the float32 rule) and repeat it byte for byte.
final class PrecisionCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    /// One SGD step at lr 10 from the PyTorch-made checkpoint (as DistributedTests); the run dir.
    func sgdStep(ranks: Int, precision: String) throws -> String {
        let run = try scratchDirectory("sgd") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--optimizer", "sgd",
                                 "--lr", "10", "--no-shuffle", "--max-steps", "1", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1", "--precision", precision], ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        return run
    }

    func testBF16StepOnTwoRanksEqualsOneRankAndRepeats() throws {
        let initial = try SafeTensors(path: start)
        let one = try sgdStep(ranks: 1, precision: "bf16")
        let two = try sgdStep(ranks: 2, precision: "bf16"), again = try sgdStep(ranks: 2, precision: "bf16")
        let file = "/checkpoints/last.safetensors"
        try assertSameUpdate(from: initial, expected: try SafeTensors(path: one + file),
                             actual: try SafeTensors(path: two + file), lr: 10)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: two + file)),
                       try Data(contentsOf: URL(fileURLWithPath: again + file)), "two bf16 runs on 2 ranks")
        // How far the bf16 update is from the float32 one, per tensor (printed for the record).
        let fp32 = try SafeTensors(path: try sgdStep(ranks: 1, precision: "fp32") + file)
        let bf16 = try SafeTensors(path: one + file)
        var worst = 0.0
        for name in initial.names where !name.hasPrefix("optimizer.") && !name.hasSuffix("num_batches_tracked")
            && !isBiasBeforeBatchNorm(name) {
            let s = try initial.floats(name)
            let e = zip(try fp32.floats(name), s).map { Double($0) - Double($1) }
            let a = zip(try bf16.floats(name), s).map { Double($0) - Double($1) }
            let d = zip(a, e).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot() / max(norm(e), 1e-30)
            print("bf16 vs fp32 update \(name) \(d)")
            worst = max(worst, d)
        }
        print("bf16 vs fp32 update, worst tensor: \(worst)")
    }

    func json(_ r: CommandResult) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").last, r.stdout)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
    }

    func testBenchReportsPrecision() throws {
        let args = ["bench", "--size", "32", "--batch-size", "2", "--steps", "1", "--threads", "1", "--sgemm-size", "64",
                    "--json"]
        let fp32 = try json(try runUnetDist(args)), bf16 = try json(try runUnetDist(args + ["--precision", "bf16"]))
        XCTAssertEqual(fp32["precision"] as? String, "fp32")
        XCTAssertEqual(bf16["precision"] as? String, "bf16")
        XCTAssertNotNil(bf16["bf16_kernels"] as? String)
        XCTAssertGreaterThan(bf16["images_per_s"] as? Double ?? 0, 0)
        XCTAssertNotNil(bf16["bf16_peak_gflops"] as? Double)
        XCTAssertNotNil(bf16["conv_share_of_bf16_peak"] as? Double)
        // The text report: the peak where the instruction exists, no figure where it does not.
        let text = try runUnetDist(Array(args.dropLast()) + ["--precision", "bf16"])
        XCTAssertEqual(text.status, 0, text.stderr)
        let peak = try XCTUnwrap(text.stdout.split(separator: "\n").first { $0.hasPrefix("bf16 GFLOP/s") }, text.stdout)
        let measured = (bf16["bf16_peak_gflops"] as? Double ?? 0) > 0
        XCTAssertTrue(peak.contains(measured ? "vdpbf16ps peak" : "none measured"), String(peak))
    }

    /// bf16 training keeps the BatchNorm inputs (the convolutions' outputs) in bf16, one float32
    /// convolution output shared among the layers: a step takes less memory than in fp32, though
    /// its paired planes add some.
    func testBF16StepTakesLessMemory() throws {
        let args = ["bench", "--size", "128", "--batch-size", "16", "--steps", "1", "--threads", "1", "--sgemm-size",
                    "0", "--json"]
        let fp32 = try json(try runUnetDist(args)), bf16 = try json(try runUnetDist(args + ["--precision", "bf16"]))
        let fp32MB = try XCTUnwrap(fp32["peak_rss_mb"] as? Double), bf16MB = try XCTUnwrap(bf16["peak_rss_mb"] as? Double)
        XCTAssertLessThan(bf16MB, 0.95 * fp32MB, "peak RSS: bf16 \(bf16MB) MB, fp32 \(fp32MB) MB")
    }

    func testTrainInBF16EvaluatesInBothPrecisions() throws {
        let run = try scratchDirectory("bf16") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2",
                                 "--threads", "1", "--epochs", "1", "--precision", "bf16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("bf16 convolutions"), r.stdout)
        let checkpoint = run + "/checkpoints/last.safetensors"
        var losses: [Double] = []
        for precision in ["fp32", "bf16"] {
            let e = try json(try runUnetDist(["eval", "--checkpoint", checkpoint, "--data", data, "--json",
                                              "--precision", precision]))
            losses.append(try XCTUnwrap(e["loss"] as? Double))
        }
        // Evaluated in bf16 the loss moves by bf16's rounding, not more.
        XCTAssertEqual(losses[1], losses[0], accuracy: 0.02 * losses[0])
    }

    func testUnknownPrecisionIsRefused() throws {
        let r = try runUnetDist(["bench", "--size", "32", "--batch-size", "2", "--steps", "1", "--precision", "fp16"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("precision"), r.stderr)
    }
}
