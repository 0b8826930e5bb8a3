import Foundation
import Formats
import Kernels
import Model
import TestSupport
import XCTest

/// The seed's UNetResnet against PyTorch: one training step at width 8 on odd sizes (37: every
/// level crops), the full-width state_dict against torchvision's names and shapes, --pretrained
/// loading, and frozen parameters in the optimizer.
final class UNetResNetTests: XCTestCase {
    let small = ModelConfig(.unetResnet, width: 8)

    func testTrainingStepMatchesPyTorch() throws {
        try assertTrainingStepMatchesPyTorch(UNetResNet(small), fixture: "resnet_step.safetensors")
    }

    func testFullWidthStateDictIsTheSeedsWithTorchvisionsResNet18() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/resnet18_names.json"))
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[Any]])
        let model = UNetResNet()
        let st = model.stateDict()
        XCTAssertEqual(st.names.count, expected.count)
        for entry in expected {
            let name = try XCTUnwrap(entry[0] as? String), shape = try XCTUnwrap(entry[1] as? [Int])
            XCTAssertEqual(st.entries[name]?.shape, shape, name)
        }
        // The parameters PyTorch trains: all but encoder.fc, which the seed's forward never reaches.
        XCTAssertEqual(model.store.parameterCount, 14_750_635 - 513_000)
    }

    func testOutputHasTheInputsSizeAtTheSeedsResolution() {
        let model = UNetResNet(small)
        model.training = false
        // 394 -> 197 -> 99 -> 50 -> 25, back up with crops at 100 -> 99 and 198 -> 197.
        XCTAssertEqual(model.forward(Tensor(Shape(1, 1, 394, 394))).shape, Shape(1, 3, 394, 394))
    }

    func testPretrainedWeightsFillTheEncoderButAOneChannelStem() throws {
        let path = fixturesDirectory + "/resnet18_w8_imagenet_like.safetensors"
        let file = try SafeTensors(path: path)
        let model = UNetResNet(small, seed: 5)
        let stemBefore = try model.stateDict().floats("encoder.conv1.weight")
        let decoderBefore = try model.stateDict().floats("deconv1.upsample.weight")
        XCTAssertFalse(try model.loadPretrained(file, path: path), "a 1-channel stem cannot take ImageNet's 3-channel one")
        let st = model.stateDict()
        XCTAssertEqual(try st.floats("encoder.conv1.weight"), stemBefore)
        XCTAssertEqual(try st.floats("deconv1.upsample.weight"), decoderBefore)
        for name in file.names where name != "conv1.weight" {
            if file.entries[name]!.dtype == "I64" {
                XCTAssertEqual(try st.int64s("encoder." + name), try file.int64s(name), name)
            } else {
                XCTAssertEqual(try st.floats("encoder." + name), try file.floats(name), name)
            }
        }
        let rgb = UNetResNet(ModelConfig(.unetResnet, inChannels: 3, width: 8))
        XCTAssertTrue(try rgb.loadPretrained(file, path: path))
        XCTAssertEqual(try rgb.stateDict().floats("encoder.conv1.weight"), try file.floats("conv1.weight"))

        let wide = UNetResNet(ModelConfig(.unetResnet, width: 16))
        XCTAssertThrowsError(try wide.loadPretrained(file, path: path)) { error in
            XCTAssertEqual("\(error)", "\(path): tensor conv1.weight has shape [8, 3, 7, 7], the encoder of width 16 needs [16, 1, 7, 7]")
        }
        XCTAssertThrowsError(try model.loadPretrained(try SafeTensors(path: fixturesDirectory + "/resnet_trained.safetensors"),
                                                      path: "x.safetensors")) { error in
            XCTAssertTrue("\(error)".hasPrefix("x.safetensors: has no tensor conv1.weight"), "\(error)")
        }
    }

    func testFrozenParametersTakeNoStepAndKeepTheirOwnAdamCount() throws {
        let model = UNetResNet(small)
        let s = model.store
        let settings = OptimizerSettings(kind: .adamw, lr: 1e-2, weightDecay: 0.1)
        for i in 0..<s.parameterCount { s.grads[i] = Float(i % 7) - 3 }
        s.frozen = model.encoderParameters.dropFirst()
        let before = Array(UnsafeBufferPointer(start: s.params, count: s.parameterCount))
        s.applyOptimizer(settings)
        s.applyOptimizer(settings)
        let stem = s.parameters[0], first = s.parameters[1], decoder = s.parameters[model.encoderParameters.upperBound]
        for v in [first, s.parameters[model.encoderParameters.upperBound - 1]] {
            XCTAssertEqual(Array(UnsafeBufferPointer(start: s.param(v), count: v.count)),
                           Array(before[v.offset..<(v.offset + v.count)]), "\(v.name) is frozen")
        }
        for v in [stem, decoder] {
            XCTAssertNotEqual(Array(UnsafeBufferPointer(start: s.param(v), count: v.count)),
                              Array(before[v.offset..<(v.offset + v.count)]), "\(v.name) trains")
        }
        s.frozen = 0..<0
        s.applyOptimizer(settings)
        XCTAssertEqual(s.steps[0], 3)
        XCTAssertEqual(s.steps[1], 1)
        XCTAssertEqual(s.steps.last, 3)

        // The per-tensor counts survive a checkpoint.
        var info = CheckpointInfo()
        info.model = "unet-resnet"; info.optimizer = .adamw
        let reloaded = UNetResNet(small)
        try reloaded.load(try SafeTensors(data: model.checkpoint(info), path: "ckpt"), path: "ckpt", optimizer: .adamw)
        XCTAssertEqual(reloaded.store.steps, s.steps)
    }

    func testModelIsInferredFromAPlainStateDict() throws {
        let path = fixturesDirectory + "/resnet_trained.safetensors"
        let config = try ModelConfig(inferredFrom: try SafeTensors(path: path), path: path)
        XCTAssertEqual(config, ModelConfig(.unetResnet, inChannels: 1, classes: 3, width: 8))
        let unet = fixturesDirectory + "/torch_trained.safetensors"
        XCTAssertEqual(try ModelConfig(inferredFrom: try SafeTensors(path: unet), path: unet), ModelConfig(.unet))
        // A UNet checkpoint refuses to load into a ResNet UNet, naming the file.
        XCTAssertThrowsError(try UNetResNet(small).load(try SafeTensors(path: unet), path: unet)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(unet): "), "\(error)")
        }
    }
}
