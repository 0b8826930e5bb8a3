import CKernels
import Formats
import Kernels
import Model
import TestSupport
import XCTest

/// One whole training step with bf16 convolutions against PyTorch's float64 step: the seed's
/// UNet (2x1x37x37, the fixture of UNetStepTests) and the ResNet-18 UNet at width 8. These steps
/// are ill-conditioned (BatchNorms over 2 x 2 and 4 x 4 planes of two images): rounding only the
/// weights that bf16 rounds, everything else float32, already moves the gradients by 5-9% of
/// their norm (single tensors up to a quarter). A bf16 step rounds activations and dy too: all
/// its gradients together must stay within 1.5x that weight-only deviation (they measure 1.11x
/// and 1.28x), each tensor within 3x (most measure 1.0-1.5x, the transposed convolutions'
/// biases, sums of dy over every pixel, up to 2.75x; plus 1% of the norm for tensors that both
/// get almost exactly), and the logits must carry bf16's rounding, not float32's (the path ran).
final class BF16StepTests: XCTestCase {
    override func tearDown() { bf16Kernels = cbf16_kernels() }

    func step(_ precision: Precision, fixture fx: Fixture, roundWeights: Bool = false,
              model make: () -> SegmentationModel = { UNet() }) throws -> (logits: [Float], grads: [String: [Float]]) {
        let model = make()
        var initial = SafeTensors()
        for name in fx.file.names where name.hasPrefix("init.") {
            let key = String(name.dropFirst(5)), e = try fx.file.entry(name)
            if e.dtype == "I64" { initial.set(key, int64s: try fx.int64s(name), shape: e.shape) }
            else {
                var f = try fx.floats(name)
                // The weights of the 3x3 convolutions with 8 or more inputs (as bf16 runs them).
                if roundWeights && e.shape.count == 4 && e.shape[2] == 3 && e.shape[1] >= 8 { f = f.map { cbf16_float(cbf16_round($0)) } }
                initial.set(key, floats: f, shape: e.shape)
            }
        }
        try model.load(initial, path: fx.path)
        model.context.precision = precision
        let xs = try fx.shape("x")
        let x = Tensor(Shape(xs[0], xs[1], xs[2], xs[3]))
        _ = x.buffer.update(fromContentsOf: try fx.floats("x"))
        let target = try fx.floats("target")
        model.training = true
        let logits = model.forward(x)
        let dlogits = Tensor(logits.shape)
        _ = bceWithLogits(dlogits: dlogits.data, logits: logits.data, targets: target, count: logits.count,
                          gradScale: 1 / Float(logits.count))
        model.store.zeroGradients()
        model.backward(dlogits)
        var grads: [String: [Float]] = [:]
        for v in model.store.parameters { grads[v.name] = Array(UnsafeBufferPointer(start: model.store.grad(v), count: v.count)) }
        return (logits.toArray(), grads)
    }

    func assertStepAgainstFloat64(_ fixture: String, model make: @escaping () -> SegmentationModel,
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let fx = try Fixture(fixture)
        let fp32 = try step(.fp32, fixture: fx, model: make), bf16 = try step(.bf16, fixture: fx, model: make)
        let rounded = try step(.fp32, fixture: fx, roundWeights: true, model: make)
        let logits64 = try fx.doubles("logits64")
        let bfLogits = distance(bf16.logits, logits64) / norm(logits64)
        let fpLogits = distance(fp32.logits, logits64) / norm(logits64)
        XCTAssertLessThan(bfLogits, 0.03, "logits", file: file, line: line)
        XCTAssertGreaterThan(bfLogits, 100 * fpLogits, "bf16 logits should carry bf16's rounding, not float32's",
                             file: file, line: line)
        var all = (bf16: 0.0, weightsOnly: 0.0, norm: 0.0)
        for (name, g) in bf16.grads where !isBiasBeforeBatchNorm(name) {
            let ref = try fx.doubles("grad64." + name), n = max(norm(ref), 1e-30)
            let d = distance(g, ref), weightsOnly = distance(rounded.grads[name]!, ref)
            all.bf16 += d * d; all.weightsOnly += weightsOnly * weightsOnly; all.norm += n * n
            XCTAssertLessThan(d / n, 3 * weightsOnly / n + 0.01, "\(name): bf16 \(d / n), weights rounded \(weightsOnly / n)",
                              file: file, line: line)
        }
        XCTAssertLessThan(all.bf16.squareRoot(), 1.5 * all.weightsOnly.squareRoot(),
                          "all gradients: bf16 \((all.bf16 / all.norm).squareRoot()), weights rounded \((all.weightsOnly / all.norm).squareRoot())",
                          file: file, line: line)
        print("\(fixture): all gradients: bf16 \((all.bf16 / all.norm).squareRoot()), weights rounded \((all.weightsOnly / all.norm).squareRoot()); logits \(bfLogits)")
    }

    func testStepAgainstFloat64() throws {
        try assertStepAgainstFloat64("unet_step.safetensors") { UNet() }
    }

    /// The ResNet-18 UNet at width 8 (its fixture: 37 x 37, every level crops).
    func testResNetStepAgainstFloat64() throws {
        try assertStepAgainstFloat64("resnet_step.safetensors") { UNetResNet(ModelConfig(.unetResnet, width: 8)) }
    }

    /// The portable bf16 kernels give the same step, bit for bit, as AVX512_BF16.
    func testPortableStepEqualsAVX512BF16() throws {
        guard bf16Available else { throw XCTSkip("this CPU has no AVX512_BF16") }
        let fx = try Fixture("unet_step.safetensors")
        let fast = try step(.bf16, fixture: fx)
        bf16Kernels = cbf16_portable()
        let slow = try step(.bf16, fixture: fx)
        XCTAssertEqual(fast.logits, slow.logits)
        for (name, g) in fast.grads { XCTAssertEqual(g, slow.grads[name], name) }
    }
}
