import Formats
import Kernels
import Model
import TestSupport
import XCTest

/// One whole training step of the seed's UNet on a 2x1x37x37 input (odd sizes: the floor of
/// MaxPool2d and the top/left padding of the up blocks both matter), against PyTorch.
final class UNetStepTests: XCTestCase {
    func testTrainingStepMatchesPyTorch() throws {
        try assertTrainingStepMatchesPyTorch(UNet(), fixture: "unet_step.safetensors")
    }

    func testFullSizeInputGivesFullSizeOutput() {
        let model = UNet()
        model.training = false
        let x = Tensor(Shape(1, 1, 394, 394))
        XCTAssertEqual(model.forward(x).shape, Shape(1, 3, 394, 394))
    }

    func testParameterCountAndNames() {
        let model = UNet()
        XCTAssertEqual(Double(model.store.parameterCount), 0.48e6, accuracy: 0.01e6)
        let names = model.stateDict().names
        for key in ["conv1.0.0.weight", "conv1.0.1.running_mean", "conv1.0.1.num_batches_tracked", "conv2.1.0.weight",
                    "conv4.2.1.running_var", "deconv1.upsample.weight", "deconv3.conv2.1.bias", "out.bias"] {
            XCTAssertTrue(names.contains(key), key)
        }
    }
}

/// Loads the fixture's initial state into `model`, takes one training-mode step on its input
/// and compares logits, loss, every gradient, the BN buffers after the step and eval-mode logits
/// with PyTorch's.
func assertTrainingStepMatchesPyTorch(_ model: SegmentationModel, fixture: String) throws {
    let fx = try Fixture(fixture)
    var initial = SafeTensors()
    for name in fx.file.names where name.hasPrefix("init.") {
        let key = String(name.dropFirst(5)), e = try fx.file.entry(name)
        if e.dtype == "I64" { initial.set(key, int64s: try fx.int64s(name), shape: e.shape) }
        else { initial.set(key, floats: try fx.floats(name), shape: e.shape) }
    }
    try model.load(initial, path: fx.path)
    XCTAssertEqual(Set(model.stateDict().names), Set(initial.names), "state_dict keys")

    let xs = try fx.shape("x")
    let x = Tensor(Shape(xs[0], xs[1], xs[2], xs[3]))
    _ = x.buffer.update(fromContentsOf: try fx.floats("x"))
    let target = try fx.floats("target")

    model.training = true
    let logits = model.forward(x)
    XCTAssertEqual(logits.shape, Shape(xs[0], 3, xs[2], xs[3]))
    try fx.assertMatchesTorch(logits.toArray(), "logits64")
    let dlogits = Tensor(logits.shape)
    let sum = bceWithLogits(dlogits: dlogits.data, logits: logits.data, targets: target, count: logits.count,
                            gradScale: 1 / Float(logits.count))
    let loss = sum / Double(logits.count)
    XCTAssertEqual(loss, try fx.doubles("loss64")[0], accuracy: 1e-6 * loss)
    model.store.zeroGradients()
    model.backward(dlogits)

    for v in model.store.parameters {
        let ours = Array(UnsafeBufferPointer(start: model.store.grad(v), count: v.count))
        if isBiasBeforeBatchNorm(v.name) {
            // Exactly zero in exact arithmetic: what is left is rounding, compared absolutely.
            XCTAssertLessThan(ours.map { abs($0) }.max()!, 1e-6, "grad of \(v.name) should be ~0")
        } else {
            try fx.assertMatchesTorch(ours, "grad64." + v.name)
        }
    }
    let after = model.stateDict()
    for v in model.store.buffers {
        if fx.has("after64." + v.name) {
            try fx.assertMatchesTorch(try after.floats(v.name), "after64." + v.name)
        } else {
            // UNetResnet's encoder.fc: carried for the state_dict, unused by the forward, never moved.
            XCTAssertEqual(try after.floats(v.name), try initial.floats(v.name), v.name)
        }
    }
    for name in model.store.counterNames { XCTAssertEqual(try after.int64s(name), try fx.int64s("after64." + name)) }

    model.training = false
    try fx.assertMatchesTorch(model.forward(x).toArray(), "eval_logits64")
}
