import CKernels
import Formats
import Kernels
import Model
import TestSupport
import XCTest

/// One whole training step of the seed's UNet (2x1x37x37, the PyTorch fixture of UNetStepTests)
/// with bf16 convolutions, against PyTorch's float64 step. This step is ill-conditioned (its
/// BatchNorms normalize 2 x 2 and 4 x 4 planes of two images): rounding only the 3x3 convolutions'
/// weights to bf16, with everything else float32, already moves the gradients by up to a quarter
/// of their norm. A bf16 step rounds activations and dy too; it must stay within twice that weight-only
/// deviation per tensor (it measures 1.0-1.5x; plus 1% of the norm for the tensors that both get
/// almost exactly), and its logits must carry bf16's rounding, not float32's (the path ran).
final class BF16StepTests: XCTestCase {
    override func tearDown() { bf16Kernels = cbf16_kernels() }

    func step(_ precision: Precision, fixture fx: Fixture, roundWeights: Bool = false) throws -> (logits: [Float], grads: [String: [Float]]) {
        let model = UNet()
        var initial = SafeTensors()
        for name in fx.file.names where name.hasPrefix("init.") {
            let key = String(name.dropFirst(5)), e = try fx.file.entry(name)
            if e.dtype == "I64" { initial.set(key, int64s: try fx.int64s(name), shape: e.shape) }
            else {
                var f = try fx.floats(name)
                // The 3x3 convolutions' weights: conv3x3_bn's Conv2d is its `.0`.
                if roundWeights && key.hasSuffix(".0.weight") { f = f.map { cbf16_float(cbf16_round($0)) } }
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

    func testStepAgainstFloat64() throws {
        let fx = try Fixture("unet_step.safetensors")
        let fp32 = try step(.fp32, fixture: fx), bf16 = try step(.bf16, fixture: fx)
        let rounded = try step(.fp32, fixture: fx, roundWeights: true)
        let logits64 = try fx.doubles("logits64")
        let bfLogits = distance(bf16.logits, logits64) / norm(logits64)
        let fpLogits = distance(fp32.logits, logits64) / norm(logits64)
        XCTAssertLessThan(bfLogits, 0.03, "logits")
        XCTAssertGreaterThan(bfLogits, 100 * fpLogits, "bf16 logits should carry bf16's rounding, not float32's")
        for (name, g) in bf16.grads where !isBiasBeforeBatchNorm(name) {
            let ref = try fx.doubles("grad64." + name), n = max(norm(ref), 1e-30)
            let d = distance(g, ref) / n, weightsOnly = distance(rounded.grads[name]!, ref) / n
            XCTAssertLessThan(d, 2 * weightsOnly + 0.01, "\(name): bf16 \(d), weights rounded \(weightsOnly)")
        }
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
