import Kernels
import XCTest

/// Every backward against central finite differences of its forward: for L = sum(y * r) with a
/// fixed random r, dL/dv at sampled coordinates of every input and parameter.
final class FiniteDifferenceTests: XCTestCase {
    var rng = SplitMix64(seed: 42)

    func random(_ n: Int, scale: Float = 1, offset: Float = 0) -> [Float] {
        (0..<n).map { _ in offset + scale * rng.normal() }
    }

    /// Compares `analytic` (dL/dv) with (L(v + h) - L(v - h)) / 2h at `samples` coordinates.
    func check(_ name: String, _ v: inout [Float], analytic: [Float], h: Float = 1e-2, samples: Int = 12,
               tolerance: Double = 2e-2, loss: ([Float]) -> Double, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(v.count, analytic.count, name, file: file, line: line)
        let rms = (analytic.reduce(0.0) { $0 + Double($1 * $1) } / Double(max(analytic.count, 1))).squareRoot()
        for k in 0..<min(samples, v.count) {
            let i = k == 0 ? 0 : Int(rng.next() % UInt64(v.count))
            let saved = v[i]
            v[i] = saved + h; let up = loss(v)
            v[i] = saved - h; let down = loss(v)
            v[i] = saved
            let numeric = (up - down) / (2 * Double(h))
            XCTAssertEqual(numeric, Double(analytic[i]), accuracy: tolerance * max(rms, abs(numeric)),
                           "\(name)[\(i)]", file: file, line: line)
        }
    }

    func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    func testConv2d() {
        // (kernel, stride, padding, input channels): 3x3 with few and with many input channels
        // takes both weight-gradient kernels of the direct path.
        for (k, s, p, c) in [(3, 1, 1, 3), (3, 1, 1, 10), (3, 2, 1, 3), (1, 1, 0, 3), (7, 2, 3, 3)] {
            for kernels in availableVectorKernels {
                vectorKernels = kernels
                checkConv2d(kernel: k, stride: s, padding: p, inC: c, "conv\(k) \(c) in, \(kernels)")
            }
        }
        vectorKernels = defaultVectorKernels
    }

    func checkConv2d(kernel k: Int, stride s: Int, padding p: Int, inC: Int, _ name: String) {
        let shape = Conv2dShape(inC: inC, outC: 4, kernel: k, stride: s, padding: p)
        let xs = Shape(2, inC, 9, 8), ys = shape.outputShape(xs)
        var x = random(xs.count), w = random(shape.weightCount, scale: 0.3), b = random(4)
        let r = random(ys.count), ws = Workspace()
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: ys.count)
            conv2dForward(&y, x, weight: w, bias: b, batch: 2, height: 9, width: 8, shape, workspace: ws)
            return dot(y, r)
        }
        var dx = x, dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: 4)
        conv2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: r, x: x, weight: w, batch: 2, height: 9, width: 8,
                       shape, workspace: ws)
        let (w0, b0, x0) = (w, b, x)
        check(name + " dx", &x, analytic: dx) { forward($0, w0, b0) }
        check(name + " dw", &w, analytic: dw) { forward(x0, $0, b0) }
        check(name + " db", &b, analytic: db) { forward(x0, w0, $0) }
    }

    func testConvTranspose2d() {
        let shape = ConvTranspose2dShape(inC: 4, outC: 3)
        let xs = Shape(2, 4, 5, 6), ys = shape.outputShape(xs)
        var x = random(xs.count), w = random(shape.weightCount, scale: 0.3), b = random(3)
        let r = random(ys.count), ws = Workspace()
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: ys.count)
            convTranspose2dForward(&y, x, weight: w, bias: b, batch: 2, height: 5, width: 6, shape, workspace: ws)
            return dot(y, r)
        }
        var dx = x, dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: 3)
        convTranspose2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: r, x: x, weight: w, batch: 2, height: 5, width: 6,
                                shape, workspace: ws)
        let (w0, b0, x0) = (w, b, x)
        check("convT dx", &x, analytic: dx) { forward($0, w0, b0) }
        check("convT dw", &w, analytic: dw) { forward(x0, $0, b0) }
        check("convT db", &b, analytic: db) { forward(x0, w0, $0) }
    }

    func testBatchNormTraining() {
        let s = BatchNormShape(batch: 3, channels: 4, spatial: 10)
        var x = random(120, scale: 2, offset: 3), w = random(4, scale: 0.5, offset: 1), b = random(4)
        let r = random(120)
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: 120), rm = [Float](repeating: 0, count: 4), rv = rm, m = rm, inv = rm
            var scratch = [Double](repeating: 0, count: 9)
            batchNormTrainForward(&y, x, weight: w, bias: b, runningMean: &rm, runningVar: &rv, saveMean: &m,
                                  saveInvstd: &inv, s, scratch: &scratch)
            return dot(y, r)
        }
        var y = [Float](repeating: 0, count: 120), rm = [Float](repeating: 0, count: 4), rv = rm, m = rm, inv = rm
        var scratch = [Double](repeating: 0, count: 9)
        batchNormTrainForward(&y, x, weight: w, bias: b, runningMean: &rm, runningVar: &rv, saveMean: &m,
                              saveInvstd: &inv, s, scratch: &scratch)
        var dx = x, dw = [Float](repeating: 0, count: 4), db = dw
        batchNormTrainBackward(dx: &dx, dweight: &dw, dbias: &db, dy: r, x: x, weight: w, saveMean: m, saveInvstd: inv,
                               s, count: 30, scratch: &scratch)
        let (w0, b0, x0) = (w, b, x)
        check("bn dx", &x, analytic: dx, h: 1e-2, tolerance: 3e-2) { forward($0, w0, b0) }
        check("bn dw", &w, analytic: dw) { forward(x0, $0, b0) }
        check("bn db", &b, analytic: db) { forward(x0, w0, $0) }
    }

    func testBatchNormEval() {
        let s = BatchNormShape(batch: 2, channels: 3, spatial: 6)
        var x = random(36), w = random(3, offset: 1), b = random(3)
        let rm = random(3), rv = random(3).map { 0.5 + abs($0) }, r = random(36)
        func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: 36)
            batchNormEvalForward(&y, x, weight: w, bias: b, runningMean: rm, runningVar: rv, s)
            return dot(y, r)
        }
        var dx = x, dw = [Float](repeating: 0, count: 3), db = dw
        batchNormEvalBackward(dx: &dx, dweight: &dw, dbias: &db, dy: r, x: x, weight: w, runningMean: rm, runningVar: rv, s)
        let (w0, b0, x0) = (w, b, x)
        check("bn eval dx", &x, analytic: dx) { forward($0, w0, b0) }
        check("bn eval dw", &w, analytic: dw) { forward(x0, $0, b0) }
        check("bn eval db", &b, analytic: db) { forward(x0, w0, $0) }
    }

    func testReLUAndMaxPool() {
        // Values on a grid 0.1 apart, shuffled: no ties and no zero within the step h.
        var x = (0..<126).map { Float($0 - 63) * 0.1 + 0.05 }
        x.shuffle(using: &rng)
        let r = random(126)
        var dx = [Float](repeating: 0, count: 126), y = x
        reluForward(&y, count: 126)
        reluBackward(dx: &dx, dy: r, y: y, count: 126)
        check("relu dx", &x, analytic: dx, h: 1e-2, samples: 30) { v in
            var y = v; reluForward(&y, count: 126); return self.dot(y, r)
        }
        // MaxPool2d(2) over two 7x9 planes (odd: the last row and column are dropped) -> 3x4.
        let planes = 2, (hh, ww) = (7, 9)
        var pooledIn = Array(x[0..<(planes * hh * ww)])
        var dp = pooledIn
        let rpool = random(planes * 12)
        maxPool2Backward(dx: &dp, dy: rpool, x: pooledIn, planes: planes, height: hh, width: ww)
        check("maxpool dx", &pooledIn, analytic: dp, h: 1e-2, samples: 30) { v in
            var y = [Float](repeating: 0, count: planes * 12)
            maxPool2Forward(&y, v, planes: planes, height: hh, width: ww)
            return self.dot(y, rpool)
        }
    }

    func testPadCropAndConcat() {
        for d in [2, -1] {
            var x = random(2 * 3 * 4 * 5)
            let r = random(2 * 3 * (4 + d) * (5 + d))
            var dx = x
            padTopLeftBackward(dx: &dx, dy: r, planes: 6, height: 4, width: 5, top: d, left: d)
            check("pad \(d)", &x, analytic: dx) { v in
                var y = [Float](repeating: 0, count: r.count)
                padTopLeftForward(&y, v, planes: 6, height: 4, width: 5, top: d, left: d)
                return self.dot(y, r)
            }
        }
        var a = random(2 * 3 * 6), b = random(2 * 2 * 6)
        let r = random(2 * 5 * 6)
        var da = a, db = b
        concatChannelsBackward(da: &da, channelsA: 3, db: &db, channelsB: 2, dy: r, batch: 2, spatial: 6)
        let (a0, b0) = (a, b)
        func forward(_ a: [Float], _ b: [Float]) -> Double {
            var y = [Float](repeating: 0, count: 60)
            concatChannelsForward(&y, a, channelsA: 3, b, channelsB: 2, batch: 2, spatial: 6)
            return dot(y, r)
        }
        check("cat da", &a, analytic: da) { forward($0, b0) }
        check("cat db", &b, analytic: db) { forward(a0, $0) }
    }

    func testLosses() {
        var z = random(60, scale: 3)
        let t = (0..<60).map { _ in Float(rng.next() % 2) }
        var dz = z
        _ = bceWithLogits(dlogits: &dz, logits: z, targets: t, count: 60, gradScale: 1)
        check("bce", &z, analytic: dz, h: 1e-2) { bceWithLogits(dlogits: nil, logits: $0, targets: t, count: 60, gradScale: 0) }
        var logits = random(2 * 3 * 5, scale: 2)
        let classes = (0..<10).map { _ in UInt8(rng.next() % 3) }
        var dl = logits
        _ = softmaxCrossEntropy(dlogits: &dl, logits: logits, classes: classes, batch: 2, channels: 3, spatial: 5, gradScale: 1)
        check("ce", &logits, analytic: dl, h: 1e-2) {
            softmaxCrossEntropy(dlogits: nil, logits: $0, classes: classes, batch: 2, channels: 3, spatial: 5, gradScale: 0)
        }
    }

    func testDiceLossOnSoftmaxAndSigmoid() {
        let classes = 3, spatial = 6, batch = 2
        let labels = (0..<(batch * spatial)).map { _ in Int(rng.next() % 3) }
        var t = [Float](repeating: 0, count: batch * classes * spatial)
        for n in 0..<batch { for i in 0..<spatial { t[(n * classes + labels[n * spatial + i]) * spatial + i] = 1 } }
        for softmax in [true, false] {
            var z = random(batch * classes * spatial, scale: 2)
            func sums(_ z: [Float]) -> [Double] {
                var s = [Double](repeating: 0, count: 3 * classes)
                DiceLoss.addSums(&s, logits: z, targets: t, batch: batch, classes: classes, spatial: spatial, softmax: softmax)
                return s
            }
            var dz = [Float](repeating: 0, count: z.count)
            DiceLoss.addGradient(&dz, logits: z, targets: t, sums: sums(z), batch: batch, classes: classes, spatial: spatial,
                                 softmax: softmax, weight: 1)
            check("dice softmax \(softmax)", &z, analytic: dz, h: 1e-2, samples: 20) { DiceLoss.loss(sums($0), classes: classes) }
        }
    }
}
