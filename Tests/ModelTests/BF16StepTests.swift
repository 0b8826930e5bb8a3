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
                if roundWeights && roundsWeights(e.shape) { f = f.map { cbf16_float(cbf16_round($0)) } }
                initial.set(key, floats: f, shape: e.shape)
            }
        }
        try model.load(initial, path: fx.path)
        let xs = try fx.shape("x")
        let x = Tensor(Shape(xs[0], xs[1], xs[2], xs[3]))
        _ = x.buffer.update(fromContentsOf: try fx.floats("x"))
        return run(model, precision, x, try fx.floats("target"))
    }

    /// Whether a parameter of this shape is the weight of a 3x3 convolution with 8 or more inputs,
    /// one that bf16 runs with its weights rounded.
    func roundsWeights(_ shape: [Int]) -> Bool { shape.count == 4 && shape[2] == 3 && shape[1] >= 8 }

    /// One training step of `model` from its current state; its logits and gradients.
    func run(_ model: SegmentationModel, _ precision: Precision, _ x: Tensor,
             _ target: [Float]) -> (logits: [Float], grads: [String: [Float]]) {
        model.context.precision = precision
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

    /// Widths where some convolutions of a bf16 step run in float32 (fewer than eight input
    /// channels, or a concatenation not split on eight: at 12 the last up block's first
    /// convolution, at 4 most of the full-resolution ones), whose BatchNorms round and keep what
    /// those convolutions write and whose readers compute it again in place: the bf16 gradients
    /// stay within 2x of what rounding the weights alone moves them from the float32 step's (a
    /// tensor read while another is written over it moves them by 10x and more).
    func testSmallWidthsAgainstFloat32() throws {
        for width in [4, 12] {
            var rng = SplitMix64(seed: 5)
            let x = Tensor(Shape(2, 1, 37, 37))
            for i in 0..<x.count { x.data[i] = rng.normal() }
            var target = [Float](repeating: 0, count: 2 * 3 * 37 * 37)
            for n in 0..<2 {
                for p in 0..<(37 * 37) { target[(n * 3 + Int(rng.next() % 3)) * 37 * 37 + p] = 1 }
            }
            let make = { UNet(ModelConfig(width: width), seed: 3) }
            let fp32 = run(make(), .fp32, x, target), bf16 = run(make(), .bf16, x, target)
            let rounded = make()
            for v in rounded.store.parameters where roundsWeights(v.shape) {
                let p = rounded.store.param(v)
                for i in 0..<v.count { p[i] = cbf16_float(cbf16_round(p[i])) }
            }
            let weightsOnly = run(rounded, .fp32, x, target)
            var d = (bf16: 0.0, weightsOnly: 0.0)
            for (name, g) in fp32.grads where !isBiasBeforeBatchNorm(name) {
                let ref = g.map(Double.init)
                d.bf16 += pow(distance(bf16.grads[name]!, ref), 2)
                d.weightsOnly += pow(distance(weightsOnly.grads[name]!, ref), 2)
            }
            print("width \(width): bf16 \(d.bf16.squareRoot()), weights rounded \(d.weightsOnly.squareRoot())")
            XCTAssertGreaterThan(d.weightsOnly, 0, "width \(width)")
            XCTAssertLessThan(d.bf16.squareRoot(), 2 * d.weightsOnly.squareRoot(), "width \(width)")
        }
    }

    /// The portable bf16 kernels give the same step, bit for bit, as every other set this CPU
    /// runs (AVX512_BF16, AVX2).
    func testPortableStepEqualsOtherSets() throws {
        guard availableBF16Kernels.count > 1 else { throw XCTSkip("this CPU has no AVX2") }
        let fx = try Fixture("unet_step.safetensors")
        bf16Kernels = cbf16_portable()
        let slow = try step(.bf16, fixture: fx)
        for kernels in availableBF16Kernels.dropLast() {
            bf16Kernels = kernels
            let fast = try step(.bf16, fixture: fx), name = String(cString: kernels.pointee.name)
            XCTAssertEqual(fast.logits, slow.logits, name)
            for (tensor, g) in fast.grads { XCTAssertEqual(g, slow.grads[tensor], tensor + ", " + name) }
        }
    }
}
