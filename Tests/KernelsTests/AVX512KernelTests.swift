import Kernels
import XCTest

/// The AVX-512 kernels (CKernels) against the portable paths, which the fixture and
/// finite-difference tests check against PyTorch. Direct 3x3 convolutions against im2col +
/// OpenBLAS: every output, input gradient, weight and bias gradient, over shapes that reach the
/// kernels' edges (rows narrower than, equal to and wider than a vector, a last vector with one
/// lane, output blocks of eight with a remainder, channel counts padded to sixteen, one input
/// channel), bands of rows, groups of images and threads. ConvTranspose2d's narrow GEMMs, and
/// BatchNorm's passes over planes longer than a vector.
final class AVX512KernelTests: XCTestCase {
    var rng = SplitMix64(seed: 11)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    /// Why a test of these kernels is skipped: the CPU runs only the portable paths (checked
    /// before skipping). launch/test.sh accepts this skip only where /proc/cpuinfo lacks avx512f.
    let noAVX512 = "AVX-512 kernels: this CPU has no AVX-512"

    override func tearDown() { avx512Kernels = avx512Available; setComputeThreads(1) }

    func assertClose(_ a: [Float], _ b: [Float], _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, name, file: file, line: line)
        let norm = (b.reduce(0.0) { $0 + Double($1 * $1) }).squareRoot()
        let diff = (zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }).squareRoot()
        XCTAssertLessThanOrEqual(diff, 1e-5 * norm + 1e-7, name, file: file, line: line)
    }

    struct Result { var y: [Float], dx: [Float], dw: [Float], db: [Float] }

    /// Forward and backward of one convolution; `split` > 0 feeds it torch.cat([a, b], 1) with
    /// `split` channels in a, read and written where a and b lie.
    func run(_ s: Conv2dShape, n: Int, h: Int, w: Int, x: [Float], weight: [Float], bias: [Float], dy: [Float],
             split: Int = 0) -> Result {
        let plane = h * w, ws = Workspace()
        var r = Result(y: [Float](repeating: .nan, count: n * s.outC * plane), dx: [Float](repeating: .nan, count: x.count),
                       dw: [Float](repeating: 0.5, count: weight.count), db: [Float](repeating: 0.5, count: s.outC))
        if split == 0 {
            conv2dForward(&r.y, x, weight: weight, bias: bias, batch: n, height: h, width: w, s, workspace: ws)
            conv2dBackward(dx: &r.dx, dweight: &r.dw, dbias: &r.db, dy: dy, x: x, weight: weight, batch: n, height: h,
                           width: w, s, workspace: ws)
            return r
        }
        // x holds a's images, then b's.
        let ca = split, cb = s.inC - split
        let a = Array(x[0..<(n * ca * plane)]), b = Array(x[(n * ca * plane)...])
        conv2dForwardConcat(&r.y, a, channelsA: ca, b, weight: weight, bias: bias, batch: n, height: h, width: w, s,
                            workspace: ws)
        var da = [Float](repeating: .nan, count: a.count), dbb = [Float](repeating: .nan, count: b.count)
        conv2dBackwardConcat(da: &da, db: &dbb, dweight: &r.dw, dbias: &r.db, dy: dy, a, channelsA: ca, b,
                             weight: weight, batch: n, height: h, width: w, s, workspace: ws)
        r.dx = da + dbb
        return r
    }

    func compare(_ s: Conv2dShape, n: Int, h: Int, w: Int, split: Int = 0, settings: [(threads: Int, pixels: Int)],
                 file: StaticString = #filePath, line: UInt = #line) {
        let x = random(n * s.inC * h * w), weight = random(s.weightCount, scale: 0.3), bias = random(s.outC)
        let dy = random(n * s.outC * h * w)
        avx512Kernels = false
        setComputeThreads(1)
        let reference = run(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, split: split)
        avx512Kernels = true
        for (threads, pixels) in settings {
            setComputeThreads(threads)
            let r = run(s.tuned(KernelTuning(directPixels: pixels)), n: n, h: h, w: w, x: x, weight: weight,
                        bias: bias, dy: dy, split: split)
            let name = "\(s.inC)->\(s.outC) \(n)x\(h)x\(w) split \(split), \(threads) threads, \(pixels) pixels"
            assertClose(r.y, reference.y, "y " + name, file: file, line: line)
            assertClose(r.dx, reference.dx, "dx " + name, file: file, line: line)
            assertClose(r.dw, reference.dw, "dw " + name, file: file, line: line)
            assertClose(r.db, reference.db, "db " + name, file: file, line: line)
        }
    }

    /// Whole images on one thread, bands of a few rows over threads, and groups of images.
    let settings = [(threads: 1, pixels: 1 << 20), (threads: 3, pixels: 40), (threads: 2, pixels: 700)]

    func testShapesAgainstGEMM() throws {
        guard avx512Available else {
            // Without AVX-512 every convolution takes the GEMM path.
            avx512Kernels = true
            XCTAssertFalse(Conv2dShape(inC: 16, outC: 16, kernel: 3, padding: 1).runsDirect())
            throw XCTSkip(noAVX512)
        }
        // (in, out, batch, height, width)
        let shapes = [(1, 16, 2, 9, 8), (3, 5, 2, 7, 9), (8, 8, 3, 5, 5), (16, 3, 2, 6, 33), (18, 17, 2, 6, 33),
                      (20, 9, 1, 1, 17), (4, 24, 2, 2, 1), (33, 16, 2, 4, 16), (16, 40, 1, 17, 31), (70, 12, 2, 3, 5),
                      // Rows of four vectors and of one, with rows away from the first and last.
                      (16, 16, 1, 11, 64), (8, 9, 2, 9, 16)]
        for (c, o, n, h, w) in shapes {
            compare(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: n, h: h, w: w, settings: settings)
        }
    }

    func testConcatenatedInputsAgainstGEMM() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        // Splits on eight channels run the input gradient directly; 5 of 13 falls back for dx
        // only, as up blocks of odd widths do.
        for (c, split, o) in [(16, 8, 8), (32, 16, 16), (24, 8, 7), (13, 5, 6)] {
            compare(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: 3, h: 7, w: 19, split: split,
                    settings: settings)
        }
    }

    /// The same inputs give the same bits on every run: nothing depends on scheduling.
    func testRepeatable() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        avx512Kernels = true
        setComputeThreads(2)
        let s = Conv2dShape(inC: 24, outC: 16, kernel: 3, padding: 1).tuned(KernelTuning(directPixels: 100))
        let x = random(4 * 24 * 11 * 13), weight = random(s.weightCount), bias = random(16), dy = random(4 * 16 * 11 * 13)
        let first = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
        for _ in 0..<3 {
            let again = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
            XCTAssertEqual(again.y, first.y); XCTAssertEqual(again.dx, first.dx)
            XCTAssertEqual(again.dw, first.dw); XCTAssertEqual(again.db, first.db)
        }
    }

    /// The sums a direct forward takes of its output (BatchNorm's statistics) are those of the y
    /// it writes, per channel over every image and row; the same bits on any number of threads,
    /// on bands of rows and on groups of small images, with one input or a concatenation.
    func testForwardStatistics() throws {
        guard avx512Available else {
            avx512Kernels = true
            XCTAssertEqual(Conv2dShape(inC: 8, outC: 8, kernel: 3, padding: 1).statisticsParts(batch: 2, height: 4, width: 4), 0)
            throw XCTSkip(noAVX512)
        }
        avx512Kernels = true
        // (in, out, batch, height, width, split, pixels per item)
        for (c, o, n, h, w, split, pixels) in [(5, 11, 3, 9, 21, 0, 60), (16, 9, 5, 6, 7, 8, 100), (3, 16, 2, 17, 16, 0, 4096)] {
            let s = Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1).tuned(KernelTuning(directPixels: pixels))
            let plane = h * w
            let x = random(n * c * plane), weight = random(s.weightCount), bias = random(o)
            var first: [Double]? = nil
            for threads in [1, 2, 3] {
                setComputeThreads(threads)
                let parts = s.statisticsParts(batch: n, height: h, width: w)
                XCTAssertGreaterThanOrEqual(parts, n)
                var y = [Float](repeating: .nan, count: n * o * plane), sums = [Double](repeating: .nan, count: parts * 2 * o)
                let ws = Workspace()
                if split == 0 {
                    conv2dForward(&y, x, weight: weight, bias: bias, batch: n, height: h, width: w, s, workspace: ws,
                                  statistics: &sums)
                } else {
                    let a = Array(x[0..<(n * split * plane)]), b = Array(x[(n * split * plane)...])
                    conv2dForwardConcat(&y, a, channelsA: split, b, weight: weight, bias: bias, batch: n, height: h,
                                        width: w, s, workspace: ws, statistics: &sums)
                }
                for ch in 0..<o {
                    var s1 = 0.0, s2 = 0.0, e1 = 0.0, e2 = 0.0
                    for p in 0..<parts { s1 += sums[2 * (p * o + ch)]; s2 += sums[2 * (p * o + ch) + 1] }
                    for i in 0..<n { for j in 0..<plane { let v = Double(y[(i * o + ch) * plane + j]); e1 += v; e2 += v * v } }
                    XCTAssertEqual(s1, e1, accuracy: 1e-9 * max(1, e2), "sum, channel \(ch), \(threads) threads")
                    XCTAssertEqual(s2, e2, accuracy: 1e-9 * max(1, e2), "sum of squares, channel \(ch), \(threads) threads")
                }
                if let first { XCTAssertEqual(sums, first, "\(threads) threads") } else { first = sums }
            }
        }
    }

    func testConvTransposeAgainstOpenBLAS() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        // 6 -> 5: 20 GEMM rows in the backward (blocks of eight and a remainder), the forward's
        // blocks of four outputs with a remainder, rows of 9 (one short vector, tiles spanning
        // rows); 49 wide (the seed's 394 UNet: three vectors and one lane); exactly one vector;
        // a single pixel; 1 row of 17.
        for (inC, outC, n, h, w) in [(6, 5, 3, 7, 9), (32, 16, 2, 5, 49), (16, 8, 2, 16, 16), (3, 6, 2, 1, 1),
                                     (8, 4, 3, 1, 17)] {
            compareConvTranspose(ConvTranspose2dShape(inC: inC, outC: outC), Shape(n, inC, h, w))
        }
    }

    /// The up-sampling written into padded planes gives, bit for bit, the up-sampling padded
    /// afterwards (`padTopLeftForward`), zeros included.
    func testConvTransposeIntoPaddedPlanes() throws {
        guard avx512Available else { XCTAssertFalse(ConvTranspose2dShape(inC: 8, outC: 4).runsDirect); throw XCTSkip(noAVX512) }
        for (inC, outC, n, h, w, top, left) in [(8, 4, 2, 3, 5, 1, 1), (16, 8, 2, 9, 17, 0, 0), (6, 5, 1, 4, 4, 2, 0),
                                                (6, 5, 2, 2, 20, 0, 3)] {
            let s = ConvTranspose2dShape(inC: inC, outC: outC), ys = s.outputShape(Shape(n, inC, h, w))
            let x = random(n * inC * h * w), w8 = random(s.weightCount, scale: 0.3), b = random(outC)
            let paddedCount = n * outC * (ys.h + top) * (ys.w + left)
            var y = [Float](repeating: .nan, count: ys.count), expected = [Float](repeating: .nan, count: paddedCount)
            var padded = [Float](repeating: .nan, count: paddedCount)
            for threads in [1, 2] {
                setComputeThreads(threads)
                convTranspose2dForward(&y, x, weight: w8, bias: b, batch: n, height: h, width: w, s, workspace: Workspace())
                padTopLeftForward(&expected, y, planes: n * outC, height: ys.h, width: ys.w, top: top, left: left)
                convTranspose2dForwardPadded(&padded, x, weight: w8, bias: b, batch: n, height: h, width: w, s, top: top,
                                             left: left, workspace: Workspace())
                XCTAssertEqual(padded.map(\.bitPattern), expected.map(\.bitPattern), "\(inC)->\(outC) \(h)x\(w) +\(top),+\(left)")
            }
        }
    }

    func compareConvTranspose(_ s: ConvTranspose2dShape, _ xs: Shape, file: StaticString = #filePath, line: UInt = #line) {
        let ys = s.outputShape(xs)
        let x = random(xs.count), w = random(s.weightCount, scale: 0.3), b = random(s.outC), dy = random(ys.count)
        var results: [[Float]] = []
        for avx in [false, true] {
            avx512Kernels = avx
            XCTAssertEqual(s.runsDirect, avx, file: file, line: line)
            for threads in [1, 2] {
                setComputeThreads(threads)
                let ws = Workspace()
                var y = [Float](repeating: .nan, count: ys.count), dx = [Float](repeating: .nan, count: x.count)
                var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: s.outC)
                convTranspose2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws)
                convTranspose2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, batch: xs.n,
                                        height: xs.h, width: xs.w, s, workspace: ws)
                results.append(y + dx + dw + db)
            }
        }
        for r in results.dropFirst() { assertClose(r, results[0], "convT \(s) \(xs)", file: file, line: line) }
    }

    /// A convolution whose input is a BatchNorm's output with its ReLU, computed inside the weight
    /// gradient's row copies from the BatchNorm's input (`AffineReLU`), gives what it gives on
    /// that output stored: bit for bit, with negative inputs, a NaN, rows with a tail and bands.
    func testBackwardOfAnAffineReLUInput() throws {
        guard avx512Available else { XCTAssertFalse(Conv2dShape(inC: 16, outC: 8, kernel: 3, padding: 1).unfoldsInputInBackward); throw XCTSkip(noAVX512) }
        for (inC, outC, n, h, w) in [(16, 8, 2, 9, 21), (24, 16, 3, 6, 16), (8, 3, 1, 5, 40)] {
            let s = Conv2dShape(inC: inC, outC: outC, kernel: 3, padding: 1), plane = h * w
            XCTAssertTrue(s.unfoldsInputInBackward)
            var x = random(n * inC * plane)
            x[x.count / 3] = .nan
            let scale = random(inC).map { $0 + 0.2 }, shift = random(inC, scale: 0.5)
            let stored = x.indices.map { i -> Float in
                let c = i / plane % inC
                let v = x[i] * scale[c] + shift[c]
                return v <= 0 ? 0 : v
            }
            let weight = random(s.weightCount, scale: 0.3), dy = random(n * outC * plane)
            for (threads, pixels) in settings {
                setComputeThreads(threads)
                let tuned = s.tuned(KernelTuning(directPixels: pixels))
                var results: [[Float]] = []
                for affine in [false, true] {
                    let ws = Workspace()
                    var dx = [Float](repeating: .nan, count: x.count), dw = [Float](repeating: 0.5, count: weight.count)
                    var db = [Float](repeating: 0.5, count: outC)
                    scale.withUnsafeBufferPointer { sc in
                        shift.withUnsafeBufferPointer { sh in
                            let f = affine ? AffineReLU(scale: sc.baseAddress!, shift: sh.baseAddress!) : nil
                            conv2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: affine ? x : stored, weight: weight,
                                           batch: n, height: h, width: w, tuned, workspace: ws, inputAffineReLU: f)
                        }
                    }
                    results.append(dx + dw + db)
                }
                XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern),
                               "\(inC)->\(outC) \(n)x\(h)x\(w), \(threads) threads, \(pixels) pixels")
            }
        }
    }

    /// MaxPool2d(2) forward and backward (assigned and accumulated) against the portable loops,
    /// bit for bit: odd heights and widths (dropped row and column), rows shorter than, equal to
    /// and longer than a vector's 32 input columns, ties (the first in scan order wins), NaN,
    /// and signed zeros.
    func testMaxPoolAgainstPortable() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        for (h, w) in [(1, 1), (2, 2), (3, 5), (4, 31), (5, 32), (2, 33), (6, 64), (3, 67)] {
            let planes = 3, count = planes * h * w, oh = h / 2, ow = w / 2
            // Few distinct values, so that windows tie; a NaN and signed zeros among them.
            var x = (0..<count).map { _ in Float(Int(rng.next() % 4)) - 1.5 }
            for i in stride(from: 0, to: count, by: 7) { x[i] = i % 2 == 0 ? 0 : -0.0 }
            if count > 10 { x[count / 2] = .nan }
            let dy = random(planes * oh * ow), start = random(count)
            var outputs: [[Float]] = []
            for avx in [false, true] {
                avx512Kernels = avx
                var y = [Float](repeating: 7, count: planes * oh * ow)
                maxPool2Forward(&y, x, planes: planes, height: h, width: w)
                var assigned = [Float](repeating: 7, count: count), added = start
                maxPool2Backward(dx: &assigned, dy: dy, x: x, planes: planes, height: h, width: w)
                maxPool2Backward(dx: &added, dy: dy, x: x, planes: planes, height: h, width: w, accumulate: true)
                outputs.append(y + assigned + added)
            }
            XCTAssertEqual(outputs[0].map(\.bitPattern), outputs[1].map(\.bitPattern), "\(h)x\(w)")
        }
    }

    /// BatchNorm's sums, output and input gradient on both paths: equal up to the order of the
    /// Double additions, and the fused ReLU's mask recomputed from x (`reluBias`) gives exactly
    /// what masking dy by the kept output gives.
    func testBatchNormAgainstPortable() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        // Planes of 37: two vectors of 16 and a tail of 5.
        let s = BatchNormShape(batch: 2, channels: 3, spatial: 37), n = 2 * 3 * 37
        let x = random(n).map { $0 * 2 + 0.5 }, w = random(3).map { $0 * 0.5 + 1 }, bias = random(3), dy = random(n)
        var outputs: [[Float]] = []
        for avx in [false, true] {
            avx512Kernels = avx
            for relu in [false, true] {
                var y = [Float](repeating: 0, count: n), rm = [Float](repeating: 0, count: 3), rv = rm
                var mean = rm, invstd = rm, scratch = [Double](repeating: 0, count: 7)
                batchNormTrainForward(&y, x, weight: w, bias: bias, runningMean: &rm, runningVar: &rv, saveMean: &mean,
                                      saveInvstd: &invstd, s, scratch: &scratch, relu: relu)
                var again = [Float](repeating: 0, count: n)
                batchNormTrainOutput(&again, x, weight: w, bias: bias, saveMean: mean, saveInvstd: invstd, s, relu: relu)
                XCTAssertEqual(again, y, "recomputed output, relu \(relu), avx512 \(avx)")
                // The ReLU's backward done by hand from the kept output, then BatchNorm's alone.
                let dyAfterReLU = relu ? zip(y, dy).map { $0 <= 0 ? 0 : $1 } : dy
                var dxKept = [Float](repeating: 0, count: n), dw = [Float](repeating: 0, count: 3), db = dw
                batchNormTrainBackward(dx: &dxKept, dweight: &dw, dbias: &db, dy: dyAfterReLU, x: x, weight: w,
                                       saveMean: mean, saveInvstd: invstd, s, count: 74, scratch: &scratch)
                outputs.append(y + dxKept + dw + db + mean + invstd + rm + rv)
                if relu {
                    var dxMasked = [Float](repeating: 0, count: n), dw2 = [Float](repeating: 0, count: 3), db2 = dw2
                    batchNormTrainBackward(dx: &dxMasked, dweight: &dw2, dbias: &db2, dy: dy, x: x, weight: w,
                                           saveMean: mean, saveInvstd: invstd, s, count: 74, scratch: &scratch,
                                           reluBias: bias)
                    XCTAssertEqual(dxMasked, dxKept, "mask from x, avx512 \(avx)")
                    XCTAssertEqual(dw2, dw); XCTAssertEqual(db2, db)
                    XCTAssertTrue(y.contains(0) && y.contains { $0 > 0 }, "the ReLU cuts some values, not all")
                }
            }
        }
        assertClose(outputs[2], outputs[0], "without ReLU")
        assertClose(outputs[3], outputs[1], "with ReLU")
        // A NaN passes the fused ReLU on both paths (as PyTorch's), in a vector and in the tail:
        // a diverging run must see it in its loss.
        for avx in [false, true] {
            avx512Kernels = avx
            var poisoned = x
            poisoned[3] = .nan; poisoned[36] = .nan
            var y = [Float](repeating: 0, count: n)
            batchNormTrainOutput(&y, poisoned, weight: w, bias: bias, saveMean: [0, 0, 0], saveInvstd: [1, 1, 1], s,
                                 relu: true)
            XCTAssertTrue(y[3].isNaN && y[36].isNaN, "avx512 \(avx)")
        }
    }

    /// BCEWithLogits with libmvec's vector expf and log1pf against the scalar ones, over logits
    /// from -90 to 90 (where exp(-|x|) underflows) and a length that leaves a tail.
    func testBCEWithLogitsAgainstScalar() throws {
        guard avx512Available else { XCTAssertFalse(avx512Kernels); throw XCTSkip(noAVX512) }
        let n = 1000
        let logits = (0..<n).map { i -> Float in i % 10 == 0 ? Float(i % 200) - 100 : 4 * rng.normal() }
        let targets = (0..<n).map { Float($0 % 3 == 0 ? 1 : 0) }
        var sums: [Double] = [], grads: [[Float]] = []
        for avx in [false, true] {
            avx512Kernels = avx
            var d = [Float](repeating: .nan, count: n)
            sums.append(bceWithLogits(dlogits: &d, logits: logits, targets: targets, count: n, gradScale: 0.5))
            grads.append(d)
        }
        XCTAssertEqual(sums[1], sums[0], accuracy: 1e-6 * abs(sums[0]))
        for i in 0..<n {
            XCTAssertEqual(grads[1][i], grads[0][i], accuracy: 2e-7, "logit \(logits[i])")
        }
    }
}
