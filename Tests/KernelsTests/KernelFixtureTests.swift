import Kernels
import TestSupport
import XCTest

/// Every kernel against PyTorch (tools/make_fixtures.py, kernels.safetensors): outputs, input
/// gradients and parameter gradients, within ten times PyTorch float32's own error.
final class KernelFixtureTests: XCTestCase {
    var fx: Fixture!
    override func setUpWithError() throws { fx = try Fixture("kernels.safetensors") }

    func shape(_ name: String) throws -> Shape {
        let s = try fx.shape(name)
        return Shape(s[0], s[1], s[2], s[3])
    }

    func check(_ ours: [Float], _ case_: String, _ t: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try fx.assertMatchesTorch(ours, "\(case_).\(t)64", float32: "\(case_).\(t)", file: file, line: line)
    }

    override func tearDown() { vectorKernels = defaultVectorKernels }

    /// The portable paths (im2col + OpenBLAS, Swift and plain C loops), then the AVX2 and the
    /// AVX-512 kernels where the CPU has them (for the layers they take; the others run the
    /// portable path again).
    func onEveryPath(_ body: () throws -> Void) throws {
        for kernels in availableVectorKernels {
            vectorKernels = kernels
            try body()
        }
    }

    func runConv(_ c: String, stride: Int, padding: Int, bias: Bool) throws {
        try onEveryPath { try runConvOnce(c, stride: stride, padding: padding, bias: bias) }
    }

    func runConvOnce(_ c: String, stride: Int, padding: Int, bias: Bool) throws {
        let x = try fx.floats("\(c).x"), w = try fx.floats("\(c).w"), dy = try fx.floats("\(c).dy")
        let b = bias ? try fx.floats("\(c).b") : nil
        let xs = try shape("\(c).x"), ws = try fx.shape("\(c).w")
        let s = Conv2dShape(inC: ws[1], outC: ws[0], kernel: ws[2], stride: stride, padding: padding)
        let ys = s.outputShape(xs)
        XCTAssertEqual(ys, try shape("\(c).y"))
        var y = [Float](repeating: 0, count: ys.count), dx = [Float](repeating: 7, count: x.count)
        var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: ws[0])
        let ws_ = Workspace()
        conv2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws_)
        db.withUnsafeMutableBufferPointer { dbp in
            conv2dBackward(dx: &dx, dweight: &dw, dbias: bias ? dbp.baseAddress : nil, dy: dy, x: x, weight: w,
                           batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws_)
        }
        try check(y, c, "y"); try check(dx, c, "dx"); try check(dw, c, "dw")
        if bias { try check(db, c, "db") }
    }

    func testConv3x3() throws { try runConv("conv3x3", stride: 1, padding: 1, bias: true) }
    func testConv3x3Wide() throws { try runConv("conv3x3_wide", stride: 1, padding: 1, bias: true) }
    func testConvStride2() throws { try runConv("conv_s2", stride: 2, padding: 1, bias: true) }
    func testConv1x1() throws { try runConv("conv1x1", stride: 1, padding: 0, bias: true) }
    func testConv7x7Stride2NoBias() throws { try runConv("conv7s2", stride: 2, padding: 3, bias: false) }

    func testConvTranspose() throws { try onEveryPath(convTransposeOnce) }

    func convTransposeOnce() throws {
        let x = try fx.floats("convt.x"), w = try fx.floats("convt.w"), b = try fx.floats("convt.b")
        let dy = try fx.floats("convt.dy"), xs = try shape("convt.x"), ws = try fx.shape("convt.w")
        let s = ConvTranspose2dShape(inC: ws[0], outC: ws[1], kernel: 2, stride: 2)
        let ys = s.outputShape(xs)
        XCTAssertEqual(ys, try shape("convt.y"))
        var y = [Float](repeating: 0, count: ys.count), dx = [Float](repeating: 0, count: x.count)
        var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: b.count)
        let ws_ = Workspace()
        convTranspose2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws_)
        convTranspose2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w,
                                batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws_)
        for (v, t) in [(y, "y"), (dx, "dx"), (dw, "dw"), (db, "db")] { try check(v, "convt", t) }
    }

    func testBatchNormTraining() throws { try onEveryPath(batchNormTrainingOnce) }

    func batchNormTrainingOnce() throws {
        let c = "bn_train"
        let x = try fx.floats("\(c).x"), dy = try fx.floats("\(c).dy"), xs = try shape("\(c).x")
        let w = try fx.floats("\(c).weight"), b = try fx.floats("\(c).bias")
        var rm = try fx.floats("\(c).running_mean_in"), rv = try fx.floats("\(c).running_var_in")
        var y = [Float](repeating: 0, count: x.count), dx = y
        var mean = [Float](repeating: 0, count: xs.c), invstd = mean, dw = mean, db = mean
        var scratch = [Double](repeating: 0, count: 2 * xs.c + 1)
        batchNormTrainForward(&y, x, weight: w, bias: b, runningMean: &rm, runningVar: &rv, saveMean: &mean,
                              saveInvstd: &invstd, BatchNormShape(xs), scratch: &scratch)
        let count = scratch[2 * xs.c]
        XCTAssertEqual(count, Double(xs.n * xs.spatial))
        batchNormTrainBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, saveMean: mean,
                               saveInvstd: invstd, BatchNormShape(xs), count: count, scratch: &scratch)
        for (v, t) in [(y, "y"), (dx, "dx"), (dw, "dweight"), (db, "dbias"), (rm, "running_mean"), (rv, "running_var")] {
            try check(v, c, t)
        }
    }

    func testBatchNormEval() throws {
        let c = "bn_eval"
        let x = try fx.floats("\(c).x"), dy = try fx.floats("\(c).dy"), xs = try shape("\(c).x")
        let w = try fx.floats("\(c).weight"), b = try fx.floats("\(c).bias")
        let rm = try fx.floats("\(c).running_mean"), rv = try fx.floats("\(c).running_var")
        var y = [Float](repeating: 0, count: x.count), dx = y
        var dw = [Float](repeating: 0, count: xs.c), db = dw
        batchNormEvalForward(&y, x, weight: w, bias: b, runningMean: rm, runningVar: rv, BatchNormShape(xs))
        batchNormEvalBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, runningMean: rm,
                              runningVar: rv, BatchNormShape(xs))
        for (v, t) in [(y, "y"), (dx, "dx"), (dw, "dweight"), (db, "dbias")] { try check(v, c, t) }
    }

    func testReLU() throws {
        var y = try fx.floats("relu.x")
        reluForward(&y, count: y.count)
        var dx = [Float](repeating: 0, count: y.count)
        reluBackward(dx: &dx, dy: try fx.floats("relu.dy"), y: y, count: y.count)
        try check(y, "relu", "y"); try check(dx, "relu", "dx")
    }

    func testMaxPoolOddSizes() throws {
        let x = try fx.floats("maxpool.x"), xs = try shape("maxpool.x")
        var y = [Float](repeating: 0, count: xs.n * xs.c * (xs.h / 2) * (xs.w / 2)), dx = x
        maxPool2Forward(&y, x, planes: xs.n * xs.c, height: xs.h, width: xs.w)
        maxPool2Backward(dx: &dx, dy: try fx.floats("maxpool.dy"), x: x, planes: xs.n * xs.c, height: xs.h, width: xs.w)
        try check(y, "maxpool", "y"); try check(dx, "maxpool", "dx")
    }

    func testPadAndCropTopLeft() throws {
        for (c, d) in [("pad_pos", 1), ("pad_neg", -1)] {
            let x = try fx.floats("\(c).x"), xs = try shape("\(c).x")
            var y = [Float](repeating: 0, count: xs.n * xs.c * (xs.h + d) * (xs.w + d)), dx = x
            padTopLeftForward(&y, x, planes: xs.n * xs.c, height: xs.h, width: xs.w, top: d, left: d)
            padTopLeftBackward(dx: &dx, dy: try fx.floats("\(c).dy"), planes: xs.n * xs.c, height: xs.h, width: xs.w,
                               top: d, left: d)
            try check(y, c, "y"); try check(dx, c, "dx")
        }
    }

    func testConcatChannels() throws {
        let a = try fx.floats("cat.a"), b = try fx.floats("cat.b"), s = try shape("cat.a"), cb = try shape("cat.b").c
        var y = [Float](repeating: 0, count: a.count + b.count), da = a, db = b
        concatChannelsForward(&y, a, channelsA: s.c, b, channelsB: cb, batch: s.n, spatial: s.spatial)
        concatChannelsBackward(da: &da, channelsA: s.c, db: &db, channelsB: cb, dy: try fx.floats("cat.dy"),
                               batch: s.n, spatial: s.spatial)
        try check(y, "cat", "y"); try check(da, "cat", "da"); try check(db, "cat", "dbb")
    }

    func testBCEWithLogits() throws { try onEveryPath(bceOnce) }

    func bceOnce() throws {
        let logits = try fx.floats("bce.logits"), t = try fx.floats("bce.target")
        var d = [Float](repeating: 0, count: logits.count)
        let sum = bceWithLogits(dlogits: &d, logits: logits, targets: t, count: logits.count, gradScale: 1 / Float(logits.count))
        try check([Float(sum / Double(logits.count))], "bce", "loss"); try check(d, "bce", "dlogits")
    }

    func testSoftmaxCrossEntropy() throws {
        let logits = try fx.floats("ce.logits"), s = try shape("ce.logits")
        let classes = try fx.floats("ce.target").map { UInt8($0) }
        let pixels = s.n * s.spatial
        var d = [Float](repeating: 0, count: logits.count)
        let sum = softmaxCrossEntropy(dlogits: &d, logits: logits, classes: classes, batch: s.n, channels: s.c,
                                      spatial: s.spatial, gradScale: 1 / Float(pixels))
        try check([Float(sum / Double(pixels))], "ce", "loss"); try check(d, "ce", "dlogits")
    }

    func runOptimizer(_ c: String, _ settings: OptimizerSettings, state: [(String, Bool)]) throws {
        var p = try fx.floats("\(c).p0")
        var first = [Float](repeating: 0, count: p.count), second = first
        for step in 1...3 {
            optimizerStep(settings, params: &p, grads: try fx.floats("\(c).g\(step)"), first: &first, second: &second,
                          count: p.count, step: step)
            try check(p, c, "p\(step)")
        }
        for (name, isFirst) in state { try check(isFirst ? first : second, c, name) }
    }

    func testAdam() throws {
        try runOptimizer("adam", OptimizerSettings(kind: .adam, lr: 1e-2), state: [("m3", true), ("v3", false)])
    }

    func testAdamW() throws {
        try runOptimizer("adamw", OptimizerSettings(kind: .adamw, lr: 1e-2, weightDecay: 0.1),
                         state: [("m3", true), ("v3", false)])
    }

    func testSGDMomentum() throws {
        try runOptimizer("sgd", OptimizerSettings(kind: .sgd, lr: 0.1, momentum: 0.9, weightDecay: 0.01),
                         state: [("buf3", true)])
    }
}
