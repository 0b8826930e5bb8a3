import Distributed
import Kernels
import Model
import TestSupport
import XCTest

/// Each `--loss` and its gradient against a PyTorch reference of its definition
/// (Tests/Fixtures/losses.safetensors, made by tools/make_loss_fixtures.py), by the project's
/// 10x-float32 rule.
final class LossTests: XCTestCase {
    func testEveryLossAndItsGradientMatchPyTorch() throws {
        let fx = try Fixture("losses.safetensors")
        let shape = try fx.shape("logits")
        let (n, classes, plane) = (shape[0], shape[1], shape[2] * shape[3])
        let labels = try fx.int64s("labels").map { UInt8($0) }
        let targets = Tensor(Shape(n, classes, shape[2], shape[3]))
        targets.zero()
        for b in 0..<n { for i in 0..<plane { targets.data[(b * classes + Int(labels[b * plane + i])) * plane + i] = 1 } }
        for kind in LossKind.allCases {
            let logits = Tensor(Shape(n, classes, shape[2], shape[3]))
            logits.data.update(from: try fx.floats("logits"), count: logits.count)
            var sums: [Double] = []
            let share = labels.withUnsafeBufferPointer {
                lossAndGradient(kind, logits: logits, targets: targets, labels: $0.baseAddress, globalCount: n, microCount: n,
                                comm: SingleProcess(), scratch: Tensor(), sums: &sums)
            }
            let name = kind.rawValue
            try fx.assertMatchesTorch([Float(share / Double(n * classes * plane))], "\(name).loss64", float32: "\(name).loss")
            try fx.assertMatchesTorch(Array(UnsafeBufferPointer(start: logits.data, count: logits.count)), "\(name).dlogits64",
                                      float32: "\(name).dlogits")
        }
    }
}
