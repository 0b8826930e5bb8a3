import CKernels
import Kernels
import XCTest

/// The AVX2 and AVX-512 kernels (CKernels) against the portable paths, which the fixture and
/// finite-difference tests check against PyTorch, and against each other (the same bits) where
/// the CPU runs both. Direct 3x3 convolutions against im2col + OpenBLAS: every output, input
/// gradient, weight and bias gradient, over shapes that reach the kernels' edges (rows narrower
/// than, equal to and wider than a vector, a last vector with one lane, output blocks of eight
/// with a remainder, channel counts padded to sixteen, one input channel), bands of rows, groups
/// of images and threads. ConvTranspose2d's narrow GEMMs, and BatchNorm's passes over planes
/// longer than a vector.
final class VectorKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 11)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    /// Why a test of the AVX-512 kernels is skipped: the CPU has no AVX-512 (checked before
    /// skipping). launch/test.sh accepts this skip only where /proc/cpuinfo lacks avx512f.
    let noAVX512 = "AVX-512 kernels: this CPU has no AVX-512"
    /// Why a test of the direct convolutions is skipped: the CPU has neither AVX2 nor AVX-512.
    let noVectors = "vector kernels: this CPU has neither AVX2 nor AVX-512"

    /// The direct kernels this CPU runs.
    let directKernels = availableVectorKernels.filter { $0 != .portable }

    override func tearDown() { vectorKernels = defaultVectorKernels; setComputeThreads(1) }

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
        let ca = split
        let a = Array(x[0..<(n * ca * plane)]), b = Array(x[(n * ca * plane)...])
        conv2dForwardConcat(&r.y, a, channelsA: ca, b, weight: weight, bias: bias, batch: n, height: h, width: w, s,
                            workspace: ws)
        var da = [Float](repeating: .nan, count: a.count), dbb = [Float](repeating: .nan, count: b.count)
        conv2dBackwardConcat(da: &da, db: &dbb, dweight: &r.dw, dbias: &r.db, dy: dy, a, channelsA: ca, b,
                             weight: weight, batch: n, height: h, width: w, s, workspace: ws)
        r.dx = da + dbb
        return r
    }

    func compare(_ s: Conv2dShape, n: Int, h: Int, w: Int, split: Int = 0,
                 settings: [(threads: Int, pixels: Int, padded: Int)],
                 file: StaticString = #filePath, line: UInt = #line) {
        let x = random(n * s.inC * h * w), weight = random(s.weightCount, scale: 0.3), bias = random(s.outC)
        let dy = random(n * s.outC * h * w)
        vectorKernels = .portable
        setComputeThreads(1)
        let reference = run(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, split: split)
        var firstResults: [VectorKernels: Result] = [:]
        for (threads, pixels, padded) in settings {
            setComputeThreads(threads)
            var results: [Result] = []
            for kernels in directKernels {
                vectorKernels = kernels
                let tuning = KernelTuning(directPixels: pixels, paddedFloats: padded, paddedMinRows: 1)
                let r = run(s.tuned(tuning), n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, split: split)
                let name = "\(s.inC)->\(s.outC) \(n)x\(h)x\(w) split \(split), \(threads) threads, \(pixels) pixels, "
                    + "\(padded) padded floats, \(kernels)"
                assertClose(r.y, reference.y, "y " + name, file: file, line: line)
                assertClose(r.dx, reference.dx, "dx " + name, file: file, line: line)
                assertClose(r.dw, reference.dw, "dw " + name, file: file, line: line)
                assertClose(r.db, reference.db, "db " + name, file: file, line: line)
                // A direct output's sum does not depend on bands, threads or the padded copy's
                // parts: y and dx keep their bits in every setting (the weight gradient's partial
                // sums group by the items).
                if let first = firstResults[kernels] {
                    if s.runsDirect() {
                        XCTAssertEqual(r.y.map(\.bitPattern), first.y.map(\.bitPattern), "y bits " + name, file: file,
                                       line: line)
                    }
                    if s.runsDirect(split: split == 0 ? nil : split) {
                        XCTAssertEqual(r.dx.map(\.bitPattern), first.dx.map(\.bitPattern), "dx bits " + name,
                                       file: file, line: line)
                    }
                } else {
                    firstResults[kernels] = r
                }
                results.append(r)
            }
            // AVX2 and AVX-512: the same sums in the same order, where both run directly (the AVX2
            // kernels take eight or more input channels).
            if let a = results.first, let b = results.last, results.count == 2, s.inC >= 8 {
                for (u, v, what) in [(a.y, b.y, "y"), (a.dx, b.dx, "dx"), (a.dw, b.dw, "dw"), (a.db, b.db, "db")] {
                    XCTAssertEqual(u.map(\.bitPattern), v.map(\.bitPattern), "AVX2 = AVX-512: \(what)", file: file,
                                   line: line)
                }
            }
        }
    }

    /// Whole images on one thread, bands of a few rows over threads, and groups of images; the
    /// last copies the AVX2 kernels' padded rows one or a few at a time (`paddedFloats`).
    let settings = [(threads: 1, pixels: 1 << 20, padded: 1 << 16), (threads: 3, pixels: 40, padded: 1 << 16),
                    (threads: 2, pixels: 700, padded: 1 << 16), (threads: 2, pixels: 1 << 20, padded: 600)]

    func testShapesAgainstGEMM() throws {
        guard !directKernels.isEmpty else {
            // Without vector kernels every convolution takes the GEMM path.
            XCTAssertFalse(Conv2dShape(inC: 16, outC: 16, kernel: 3, padding: 1).runsDirect())
            throw XCTSkip(noVectors)
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
        guard !directKernels.isEmpty else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noVectors) }
        // Splits on eight channels run the input gradient directly; 5 of 13 falls back for dx
        // only, as up blocks of odd widths do.
        for (c, split, o) in [(16, 8, 8), (32, 16, 16), (24, 8, 7), (13, 5, 6)] {
            compare(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: 3, h: 7, w: 19, split: split,
                    settings: settings)
        }
    }

    /// The same inputs give the same bits on every run: nothing depends on scheduling.
    func testRepeatable() throws {
        guard !directKernels.isEmpty else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noVectors) }
        setComputeThreads(2)
        let s = Conv2dShape(inC: 24, outC: 16, kernel: 3, padding: 1).tuned(KernelTuning(directPixels: 100))
        let x = random(4 * 24 * 11 * 13), weight = random(s.weightCount), bias = random(16), dy = random(4 * 16 * 11 * 13)
        for kernels in directKernels {
            vectorKernels = kernels
            let first = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
            for _ in 0..<3 {
                let again = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
                XCTAssertEqual(again.y, first.y); XCTAssertEqual(again.dx, first.dx)
                XCTAssertEqual(again.dw, first.dw); XCTAssertEqual(again.db, first.db)
            }
        }
    }

    /// The sums a direct forward takes of its output (BatchNorm's statistics) are those of the y
    /// it writes, per channel over every image and row; the same bits on any number of threads,
    /// on bands of rows and on groups of small images, with one input or a concatenation.
    func testForwardStatistics() throws {
        guard !directKernels.isEmpty else {
            XCTAssertEqual(Conv2dShape(inC: 8, outC: 8, kernel: 3, padding: 1).statisticsParts(batch: 2, height: 4, width: 4), 0)
            throw XCTSkip(noVectors)
        }
        // (in, out, batch, height, width, split, pixels per item); the AVX2 kernels take eight or
        // more input channels.
        let cases = [(5, 11, 3, 9, 21, 0, 60), (16, 9, 5, 6, 7, 8, 100), (3, 16, 2, 17, 16, 0, 4096),
                     (12, 11, 3, 9, 21, 0, 60), (8, 16, 2, 17, 16, 0, 4096)]
        for kernels in directKernels {
            vectorKernels = kernels
            for (c, o, n, h, w, split, pixels) in cases where kernels == .avx512 || c >= 8 {
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
    }

    func testConvTransposeAgainstOpenBLAS() throws {
        guard !directKernels.isEmpty else {
            XCTAssertFalse(ConvTranspose2dShape(inC: 8, outC: 4).runsDirect)
            throw XCTSkip(noVectors)
        }
        // 6 -> 5: 20 GEMM rows in the backward (blocks of eight and a remainder), the forward's
        // blocks of four outputs with a remainder (of one and of three), rows of 9 (one short
        // vector, tiles spanning rows); 49 wide (the seed's 394 UNet: three or six vectors and one
        // lane); exactly one vector; a single pixel; 1 row of 17; 3 rows of 8 (three whole
        // vectors, a part of AVX2's tile of four); 33 outputs (eight blocks of four and one).
        for (inC, outC, n, h, w) in [(6, 5, 3, 7, 9), (32, 16, 2, 5, 49), (16, 8, 2, 16, 16), (3, 6, 2, 1, 1),
                                     (8, 4, 3, 1, 17), (5, 7, 2, 3, 8), (6, 33, 2, 2, 19)] {
            compareConvTranspose(ConvTranspose2dShape(inC: inC, outC: outC), Shape(n, inC, h, w))
        }
    }

    /// ConvTranspose2d's direct forwards against the order cconvt.h gives, written out: each
    /// y[p, 2i + a, 2j + b] sums w[q, p, a, b] x[q, i, j] over q in order, one FMA at a time from
    /// zero, then adds bias[p]. Bit for bit on every kernel set the CPU runs, so that AVX2 and
    /// AVX-512 give the same bits on a CPU that has only one of them. Widths of a short vector,
    /// several vectors with one lane over, tiles spanning rows, blocks of outputs with a remainder.
    func testConvTransposeForwardInItsOrder() throws {
        guard !directKernels.isEmpty else {
            XCTAssertFalse(ConvTranspose2dShape(inC: 8, outC: 4).runsDirect)
            throw XCTSkip(noVectors)
        }
        for (inC, outC, n, h, w) in [(6, 5, 2, 7, 9), (32, 16, 1, 5, 49), (3, 6, 2, 3, 8), (17, 9, 1, 2, 33)] {
            let s = ConvTranspose2dShape(inC: inC, outC: outC), ys = s.outputShape(Shape(n, inC, h, w))
            let x = random(n * inC * h * w), weight = random(s.weightCount, scale: 0.3), bias = random(outC)
            var expected = [Float](repeating: .nan, count: ys.count)
            for image in 0..<n {
                for p in 0..<outC {
                    for i in 0..<h {
                        for j in 0..<w {
                            for tap in 0..<4 {
                                let a = tap / 2, b = tap % 2
                                var sum: Float = 0
                                for q in 0..<inC {
                                    sum = sum.addingProduct(weight[(q * outC + p) * 4 + tap],
                                                            x[((image * inC + q) * h + i) * w + j])
                                }
                                expected[((image * outC + p) * ys.h + 2 * i + a) * ys.w + 2 * j + b] = sum + bias[p]
                            }
                        }
                    }
                }
            }
            for kernels in directKernels {
                vectorKernels = kernels
                for threads in [1, 2] {
                    setComputeThreads(threads)
                    var y = [Float](repeating: .nan, count: ys.count)
                    convTranspose2dForward(&y, x, weight: weight, bias: bias, batch: n, height: h, width: w, s,
                                           workspace: Workspace())
                    XCTAssertEqual(y.map(\.bitPattern), expected.map(\.bitPattern),
                                   "\(inC)->\(outC) \(h)x\(w), \(kernels), \(threads) threads")
                }
            }
        }
    }

    /// The up-sampling written into padded planes gives, bit for bit, the up-sampling padded
    /// afterwards (`padTopLeftForward`), zeros included.
    func testConvTransposeIntoPaddedPlanes() throws {
        guard !directKernels.isEmpty else {
            XCTAssertFalse(ConvTranspose2dShape(inC: 8, outC: 4).runsDirect)
            throw XCTSkip(noVectors)
        }
        for kernels in directKernels {
            vectorKernels = kernels
            for (inC, outC, n, h, w, top, left) in [(8, 4, 2, 3, 5, 1, 1), (16, 8, 2, 9, 17, 0, 0), (6, 5, 1, 4, 4, 2, 0),
                                                    (6, 5, 2, 2, 20, 0, 3)] {
                let s = ConvTranspose2dShape(inC: inC, outC: outC), ys = s.outputShape(Shape(n, inC, h, w))
                let x = random(n * inC * h * w), w8 = random(s.weightCount, scale: 0.3), b = random(outC)
                let paddedCount = n * outC * (ys.h + top) * (ys.w + left)
                var y = [Float](repeating: .nan, count: ys.count), expected = [Float](repeating: .nan, count: paddedCount)
                var padded = [Float](repeating: .nan, count: paddedCount)
                for threads in [1, 2] {
                    setComputeThreads(threads)
                    convTranspose2dForward(&y, x, weight: w8, bias: b, batch: n, height: h, width: w, s,
                                           workspace: Workspace())
                    padTopLeftForward(&expected, y, planes: n * outC, height: ys.h, width: ys.w, top: top, left: left)
                    convTranspose2dForwardPadded(&padded, x, weight: w8, bias: b, batch: n, height: h, width: w, s,
                                                 top: top, left: left, workspace: Workspace())
                    XCTAssertEqual(padded.map(\.bitPattern), expected.map(\.bitPattern),
                                   "\(inC)->\(outC) \(h)x\(w) +\(top),+\(left), \(kernels)")
                }
            }
        }
    }

    /// Every kernel set this CPU runs against the portable path (im2col + OpenBLAS), within
    /// float32's rounding; the direct forwards of AVX2 and AVX-512 give the same bits.
    func compareConvTranspose(_ s: ConvTranspose2dShape, _ xs: Shape, file: StaticString = #filePath, line: UInt = #line) {
        let ys = s.outputShape(xs)
        let x = random(xs.count), w = random(s.weightCount, scale: 0.3), b = random(s.outC), dy = random(ys.count)
        var results: [[Float]] = [], directForwards: [[Float]] = []
        for kernels in availableVectorKernels {
            vectorKernels = kernels
            XCTAssertEqual(s.runsDirect, kernels != .portable, file: file, line: line)
            for threads in [1, 2] {
                setComputeThreads(threads)
                let ws = Workspace()
                var y = [Float](repeating: .nan, count: ys.count), dx = [Float](repeating: .nan, count: x.count)
                var dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: s.outC)
                convTranspose2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, s, workspace: ws)
                convTranspose2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, batch: xs.n,
                                        height: xs.h, width: xs.w, s, workspace: ws)
                results.append(y + dx + dw + db)
                if kernels != .portable { directForwards.append(y) }
            }
        }
        for r in results.dropFirst() { assertClose(r, results[0], "convT \(s) \(xs)", file: file, line: line) }
        for y in directForwards.dropFirst() {
            XCTAssertEqual(y.map(\.bitPattern), directForwards[0].map(\.bitPattern), "convT \(s) \(xs)", file: file,
                           line: line)
        }
    }

    /// A convolution whose input is a BatchNorm's output with its ReLU, computed inside the weight
    /// gradient's row copies from the BatchNorm's input (`AffineReLU`), gives what it gives on
    /// that output stored: bit for bit, with negative inputs, a NaN, rows with a tail and bands.
    func testBackwardOfAnAffineReLUInput() throws {
        guard !directKernels.isEmpty else { XCTAssertFalse(Conv2dShape(inC: 16, outC: 8, kernel: 3, padding: 1).unfoldsInputInBackward); throw XCTSkip(noVectors) }
        for kernels in directKernels {
            vectorKernels = kernels
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
                for (threads, pixels, padded) in settings {
                    setComputeThreads(threads)
                    let tuned = s.tuned(KernelTuning(directPixels: pixels, paddedFloats: padded, paddedMinRows: 1))
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
                                   "\(inC)->\(outC) \(n)x\(h)x\(w), \(threads) threads, \(pixels) pixels, \(kernels)")
                }
            }
        }
    }

    /// MaxPool2d(2) forward and backward (assigned and accumulated), AVX2 and AVX-512, against the
    /// portable loops, bit for bit: odd heights and widths (dropped row and column), rows shorter
    /// than, equal to and longer than a vector's 32 (AVX2: 16) input columns, ties (the first in
    /// scan order wins), NaN, and signed zeros (in x, and -0.0 in the dx the backward adds to).
    func testMaxPoolAgainstPortable() throws {
        guard !directKernels.isEmpty else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noVectors) }
        for (h, w) in [(1, 1), (2, 2), (3, 5), (3, 9), (2, 16), (2, 18), (4, 31), (5, 32), (2, 33), (6, 64),
                        (3, 67)] {
            let planes = 3, count = planes * h * w, oh = h / 2, ow = w / 2
            // Few distinct values, so that windows tie; a NaN and signed zeros among them.
            var x = (0..<count).map { _ in Float(Int(rng.next() % 4)) - 1.5 }
            for i in stride(from: 0, to: count, by: 7) { x[i] = i % 2 == 0 ? 0 : -0.0 }
            if count > 10 { x[count / 2] = .nan }
            let dy = random(planes * oh * ow)
            var start = random(count)
            for i in stride(from: 1, to: count, by: 5) { start[i] = -0.0 }
            var outputs: [[Float]] = []
            for kernels in availableVectorKernels {
                vectorKernels = kernels
                var y = [Float](repeating: 7, count: planes * oh * ow)
                maxPool2Forward(&y, x, planes: planes, height: h, width: w)
                var assigned = [Float](repeating: 7, count: count), added = start
                maxPool2Backward(dx: &assigned, dy: dy, x: x, planes: planes, height: h, width: w)
                maxPool2Backward(dx: &added, dy: dy, x: x, planes: planes, height: h, width: w, accumulate: true)
                outputs.append(y + assigned + added)
            }
            for (kernels, output) in zip(availableVectorKernels, outputs).dropFirst() {
                XCTAssertEqual(output.map(\.bitPattern), outputs[0].map(\.bitPattern), "\(h)x\(w), \(kernels)")
            }
        }
    }

    /// BatchNorm's sums, output and input gradient on every path the CPU has: the vector ones
    /// equal the portable one up to the order of the Double additions, AVX2 and AVX-512 equal bit
    /// for bit, and the fused ReLU's mask recomputed from x (`reluBias`) gives exactly what
    /// masking dy by the kept output gives.
    func testBatchNormAgainstPortable() throws {
        guard availableVectorKernels.count > 1 else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noAVX512) }
        // Planes of 37: two vectors of 16 and a tail of 5 (four of 8 and a tail of 5 for AVX2).
        let s = BatchNormShape(batch: 2, channels: 3, spatial: 37), n = 2 * 3 * 37
        let x = random(n).map { $0 * 2 + 0.5 }, w = random(3).map { $0 * 0.5 + 1 }, bias = random(3), dy = random(n)
        var outputs: [VectorKernels: [[Float]]] = [:]
        for kernels in availableVectorKernels {
            vectorKernels = kernels
            for relu in [false, true] {
                var y = [Float](repeating: 0, count: n), rm = [Float](repeating: 0, count: 3), rv = rm
                var mean = rm, invstd = rm, scratch = [Double](repeating: 0, count: 7)
                batchNormTrainForward(&y, x, weight: w, bias: bias, runningMean: &rm, runningVar: &rv, saveMean: &mean,
                                      saveInvstd: &invstd, s, scratch: &scratch, relu: relu)
                var again = [Float](repeating: 0, count: n)
                batchNormTrainOutput(&again, x, weight: w, bias: bias, saveMean: mean, saveInvstd: invstd, s, relu: relu)
                XCTAssertEqual(again, y, "recomputed output, relu \(relu), \(kernels)")
                // The ReLU's backward done by hand from the kept output, then BatchNorm's alone.
                let dyAfterReLU = relu ? zip(y, dy).map { $0 <= 0 ? 0 : $1 } : dy
                var dxKept = [Float](repeating: 0, count: n), dw = [Float](repeating: 0, count: 3), db = dw
                batchNormTrainBackward(dx: &dxKept, dweight: &dw, dbias: &db, dy: dyAfterReLU, x: x, weight: w,
                                       saveMean: mean, saveInvstd: invstd, s, count: 74, scratch: &scratch)
                outputs[kernels, default: []].append(y + dxKept + dw + db + mean + invstd + rm + rv)
                if relu {
                    var dxMasked = [Float](repeating: 0, count: n), dw2 = [Float](repeating: 0, count: 3), db2 = dw2
                    batchNormTrainBackward(dx: &dxMasked, dweight: &dw2, dbias: &db2, dy: dy, x: x, weight: w,
                                           saveMean: mean, saveInvstd: invstd, s, count: 74, scratch: &scratch,
                                           reluBias: bias)
                    XCTAssertEqual(dxMasked, dxKept, "mask from x, \(kernels)")
                    XCTAssertEqual(dw2, dw); XCTAssertEqual(db2, db)
                    XCTAssertTrue(y.contains(0) && y.contains { $0 > 0 }, "the ReLU cuts some values, not all")
                }
            }
        }
        let portable = outputs[.portable]!
        for kernels in availableVectorKernels.dropFirst() {
            assertClose(outputs[kernels]![0], portable[0], "without ReLU, \(kernels)")
            assertClose(outputs[kernels]![1], portable[1], "with ReLU, \(kernels)")
        }
        if let avx2 = outputs[.avx2], let avx512 = outputs[.avx512] {
            XCTAssertEqual(avx2.flatMap { $0.map(\.bitPattern) }, avx512.flatMap { $0.map(\.bitPattern) }, "AVX2 = AVX-512")
        }
        // A NaN passes the fused ReLU on every path (as PyTorch's), in a vector and in the tail:
        // a diverging run must see it in its loss.
        for kernels in availableVectorKernels {
            vectorKernels = kernels
            var poisoned = x
            poisoned[3] = .nan; poisoned[36] = .nan
            var y = [Float](repeating: 0, count: n)
            batchNormTrainOutput(&y, poisoned, weight: w, bias: bias, saveMean: [0, 0, 0], saveInvstd: [1, 1, 1], s,
                                 relu: true)
            XCTAssertTrue(y[3].isNaN && y[36].isNaN, "\(kernels)")
        }
    }

    /// BatchNorm's Double sums on the vector paths add their terms in one documented order
    /// (cbn.h): lanes i mod 16 of the first eight and of the second eight of every sixteen, the
    /// two vectors added, their eight lanes added as halves, quarters and the last two, then the
    /// tail one by one. Checked bit for bit against that order written out here, on every vector
    /// path the CPU has (an AVX2 CPU checks its loops against the AVX-512 loops' order).
    func testBatchNormSumsInTheirOrder() throws {
        guard availableVectorKernels.count > 1 else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noAVX512) }
        /// The order of `sums_avx512`: `term(i)` for i < n.
        func ordered(_ n: Int, _ term: (Int) -> Double) -> Double {
            var a = [Double](repeating: 0, count: 8), b = a
            var i = 0
            while i + 16 <= n {
                for j in 0..<8 { a[j] += term(i + j); b[j] += term(i + 8 + j) }
                i += 16
            }
            let v = (0..<8).map { a[$0] + b[$0] }
            let halves = (0..<4).map { v[$0] + v[$0 + 4] }, quarters = (0..<2).map { halves[$0] + halves[$0 + 2] }
            var s = quarters[0] + quarters[1]
            while i < n { s += term(i); i += 1 }
            return s
        }
        for n in [5, 16, 37, 100, 1000] {
            // Values over many magnitudes, so that another order rounds differently.
            let x = (0..<n).map { _ in rng.normal() * Float(pow(10, Double(rng.next() % 7) - 3)) }
            let dy = random(n)
            let mean: Float = 0.25, invstd: Float = 1.5
            let expected = [ordered(n) { Double(x[$0]) }, ordered(n) { Double(x[$0]) * Double(x[$0]) },
                            ordered(n) { Double(dy[$0]) },
                            ordered(n) { Double(dy[$0]) * Double((x[$0] - mean) * invstd) }]
            for kernels in availableVectorKernels.dropFirst() {
                var sums = [0.0, 0.0], grads = [0.0, 0.0]
                cbn_sums(x, n, &sums, kernels.rawValue)
                cbn_gradient_sums(dy, x, nil, 0, 0, 0, n, mean, invstd, &grads, kernels.rawValue)
                let got = sums + grads
                XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "n \(n), \(kernels)")
                XCTAssertEqual(cbn_sum(x, nil, n, kernels.rawValue).bitPattern, expected[0].bitPattern, "n \(n)")
            }
        }
    }

    /// BCEWithLogits with libmvec's vector expf and log1pf against the scalar ones, over logits
    /// from -90 to 90 (where exp(-|x|) underflows) and a length that leaves a tail.
    func testBCEWithLogitsAgainstScalar() throws {
        guard !directKernels.isEmpty else { XCTAssertEqual(vectorKernels, .portable); throw XCTSkip(noVectors) }
        let n = 1003
        let logits = (0..<n).map { i -> Float in i % 10 == 0 ? Float(i % 200) - 100 : 4 * rng.normal() }
        let targets = (0..<n).map { Float($0 % 3 == 0 ? 1 : 0) }
        var sums: [Double] = [], grads: [[Float]] = []
        for kernels in availableVectorKernels {
            vectorKernels = kernels
            var d = [Float](repeating: .nan, count: n)
            sums.append(bceWithLogits(dlogits: &d, logits: logits, targets: targets, count: n, gradScale: 0.5))
            grads.append(d)
        }
        for (k, kernels) in availableVectorKernels.enumerated().dropFirst() {
            XCTAssertEqual(sums[k], sums[0], accuracy: 1e-6 * abs(sums[0]), "\(kernels)")
            for i in 0..<n {
                XCTAssertEqual(grads[k][i], grads[0][i], accuracy: 2e-7, "logit \(logits[i]), \(kernels)")
            }
        }
    }
}
