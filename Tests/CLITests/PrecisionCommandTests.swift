import Foundation
import TestSupport
import XCTest

/// `--precision bf16` end to end: bench reports it, train writes an ordinary float32 checkpoint
/// that eval reads in either precision, and anything but fp32 or bf16 is refused.
final class PrecisionCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"

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
