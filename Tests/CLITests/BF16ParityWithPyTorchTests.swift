import Foundation
import Formats
import TestSupport
import XCTest

/// `--precision bf16` against PyTorch's own mixed precision: one SGD step (lr 10, from the
/// PyTorch-made checkpoint, seeddata pairs 0-3 as one batch, as ParityWithPyTorchTests' float32
/// step) taken in bf16 moves no tensor further from our float32 step than twice the distance
/// between PyTorch's autocast-bf16 step and its float32 step on the same batch
/// (torch_bf16_step.safetensors, tools/make_bf16_fixture.py), per tensor and over all of them.
final class BF16ParityWithPyTorchTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"

    func sgdStep(precision: String) throws -> SafeTensors {
        let run = try scratchDirectory("sgd-" + precision) + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", start, "--optimizer", "sgd",
                                 "--lr", "10", "--no-shuffle", "--max-steps", "1", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1", "--precision", precision])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try SafeTensors(path: run + "/checkpoints/last.safetensors")
    }

    func testBF16StepIsWithinTwiceAutocastsDistanceFromFloat32() throws {
        let initial = try SafeTensors(path: start), fx = try Fixture("torch_bf16_step.safetensors")
        let fp32 = try sgdStep(precision: "fp32"), bf16 = try sgdStep(precision: "bf16")
        var ours2 = 0.0, torch2 = 0.0, compared: Set<String> = []
        for name in initial.names where !name.hasPrefix("optimizer.") && !name.hasSuffix("num_batches_tracked") {
            let s = try initial.floats(name)
            let u32 = zip(try fp32.floats(name), s).map { Double($0) - Double($1) }
            let u16 = zip(try bf16.floats(name), s).map { Double($0) - Double($1) }
            let ours = zip(u16, u32).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let torch = try fx.doubles("dist." + name)[0]
            // Where PyTorch's two steps agree to rounding, ours may still differ by the float32
            // rounding of the new weights (half an ulp, 2^-24 |w|, in each of the two runs).
            let floor = 0x1p-23 * norm(s.map(Double.init))
            print("bf16 - fp32 update \(name): ours \(ours), torch \(torch), ratio \(ours / torch), "
                  + "of the update \(ours / max(norm(u32), 1e-30))")
            XCTAssertLessThanOrEqual(ours, 2 * torch + floor, "\(name): ours \(ours), torch autocast \(torch)")
            ours2 += ours * ours; torch2 += torch * torch
            compared.insert(name)
        }
        print("bf16 - fp32 update, all tensors: ours \(ours2.squareRoot()), torch \(torch2.squareRoot()), "
              + "ratio \((ours2 / torch2).squareRoot())")
        XCTAssertLessThanOrEqual(ours2.squareRoot(), 2 * torch2.squareRoot())
        // Every tensor PyTorch recorded was compared, and nothing else.
        XCTAssertEqual(compared, Set(fx.file.names.filter { $0.hasPrefix("dist.") }.map { String($0.dropFirst(5)) }))
        XCTAssertEqual(compared.count, 106 - 14, "the UNet's parameters and BatchNorm buffers")
    }
}
