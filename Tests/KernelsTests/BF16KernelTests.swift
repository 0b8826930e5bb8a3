import CKernels
import Kernels
import XCTest

/// The bf16 convolutions (cconv_bf16.c through conv2dForwardBF16 / conv2dBackwardBF16) against
/// a float64 reference of the same rounding: inputs, dy and weights rounded to bf16, products
/// exact, summed in float64. Each element must lie within float32's error for its number of
/// terms: |ours - reference| <= gamma(n) * (sum of |terms|), gamma(n) = n u / (1 - n u) with
/// u = 2^-24, the bound of n float32 additions of exact products. Shapes reach the kernels'
/// edges: odd widths, 1-pixel planes, rows of one and of several vectors with a partial last
/// one, channel counts that fill neither a pair nor a block of eight nor sixteen, bands of rows
/// and groups of images over threads, a concatenated input, and a BatchNorm+ReLU input. The
/// portable kernels and the AVX512_BF16 ones give the same bits.
final class BF16KernelTests: XCTestCase {
    var rng = SplitMix64(seed: 23)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    /// BatchNorm's loops' `vectors` arguments: every path the CPU has (cbn.h).
    let cbnPaths = availableVectorKernels.map(\.rawValue)
    /// As `cbnPaths`, for the loops that write bf16 halves: AVX-512 only with AVX512_BF16.
    let cbnRoundingPaths = availableVectorKernels.filter { $0 != .avx512 || bf16Available }.map(\.rawValue)

    override func tearDown() { bf16Kernels = cbf16_kernels(); setComputeThreads(1) }

    /// x as the kernels see it: rounded to bf16.
    func bf(_ x: Float) -> Double { Double(cbf16_float(cbf16_round(x))) }

    /// Forward, input gradient, weight and bias gradient in float64 with bf16 operands; each with
    /// the sum of its terms' magnitudes. `split` > 0: the input is torch.cat([a, b], 1) (x holds
    /// a's images, then b's); `affine`: the input is relu(x * scale + shift) per channel.
    struct Reference {
        var y: [Double] = [], yMag: [Double] = [], dx: [Double] = [], dxMag: [Double] = []
        var dw: [Double] = [], dwMag: [Double] = [], db: [Double] = []
    }

    func reference(_ s: Conv2dShape, n: Int, h: Int, w: Int, x input: [Float], weight: [Float], bias: [Float],
                   dy: [Float], dwStart: [Float], dbStart: [Float], split: Int,
                   affine: (scale: [Float], shift: [Float])?) -> Reference {
        let plane = h * w, C = s.inC, O = s.outC
        // NCHW of the whole input, whichever tensors hold it.
        var x = [Float](repeating: 0, count: n * C * plane)
        for i in 0..<n {
            for c in 0..<C {
                let src: Int
                if split == 0 { src = (i * C + c) * plane }
                else if c < split { src = (i * split + c) * plane }
                else { src = n * split * plane + (i * (C - split) + c - split) * plane }
                for p in 0..<plane {
                    var v = input[src + p]
                    if let affine {
                        // As BatchNorm's output with its ReLU: a float32 product, then a sum.
                        let scaled = v * affine.scale[c]
                        v = scaled + affine.shift[c]
                        v = v > 0 ? v : 0
                    }
                    x[(i * C + c) * plane + p] = v
                }
            }
        }
        let xb = x.map(bf), wb = weight.map(bf), dyb = dy.map(bf)
        var r = Reference()
        r.y = [Double](repeating: 0, count: n * O * plane); r.yMag = r.y
        r.dx = [Double](repeating: 0, count: n * C * plane); r.dxMag = r.dx
        r.dw = dwStart.map(Double.init); r.dwMag = r.dw.map(abs)
        r.db = dbStart.map(Double.init)
        for i in 0..<n {
            for o in 0..<O {
                for oy in 0..<h {
                    for ox in 0..<w {
                        let yi = (i * O + o) * plane + oy * w + ox
                        var sum = Double(bias[o]), mag = abs(Double(bias[o]))
                        let g = dyb[yi]
                        r.db[o] += Double(dy[yi])
                        for c in 0..<C {
                            for t in 0..<9 {
                                let iy = oy + t / 3 - 1, ix = ox + t % 3 - 1
                                guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
                                let xi = (i * C + c) * plane + iy * w + ix, wi = (o * C + c) * 9 + t
                                sum += xb[xi] * wb[wi]; mag += abs(xb[xi] * wb[wi])
                                r.dx[xi] += g * wb[wi]; r.dxMag[xi] += abs(g * wb[wi])
                                r.dw[wi] += g * xb[xi]; r.dwMag[wi] += abs(g * xb[xi])
                            }
                        }
                        r.y[yi] = sum; r.yMag[yi] = mag
                    }
                }
            }
        }
        guard split > 0 else { return r }
        // dx as the two tensors hold it: a's images, then b's.
        var dx = r.dx, dxMag = r.dxMag
        for i in 0..<n {
            for c in 0..<C {
                let dst = c < split ? (i * split + c) * plane : n * split * plane + (i * (C - split) + c - split) * plane
                for p in 0..<plane {
                    dx[dst + p] = r.dx[(i * C + c) * plane + p]; dxMag[dst + p] = r.dxMag[(i * C + c) * plane + p]
                }
            }
        }
        r.dx = dx; r.dxMag = dxMag
        return r
    }

    struct Result { var y: [Float], dx: [Float], dw: [Float], db: [Float] }

    func run(_ s: Conv2dShape, n: Int, h: Int, w: Int, x: [Float], weight: [Float], bias: [Float], dy: [Float],
             dwStart: [Float], dbStart: [Float], split: Int, affine: (scale: [Float], shift: [Float])?) -> Result {
        let plane = h * w, ws = Workspace()
        var r = Result(y: [Float](repeating: .nan, count: n * s.outC * plane), dx: [Float](repeating: .nan, count: x.count),
                       dw: dwStart, db: dbStart)
        if split == 0 {
            if let affine {
                // The forward's input is the BatchNorm output; the backward recomputes it from x.
                var input = x
                for i in 0..<n {
                    for c in 0..<s.inC {
                        for p in 0..<plane {
                            let k = (i * s.inC + c) * plane + p, scaled = x[k] * affine.scale[c], v = scaled + affine.shift[c]
                            input[k] = v > 0 ? v : 0
                        }
                    }
                }
                conv2dForwardBF16(&r.y, input, weight: weight, bias: bias, batch: n, height: h, width: w, s, workspace: ws)
                affine.scale.withUnsafeBufferPointer { scale in
                    affine.shift.withUnsafeBufferPointer { shift in
                        conv2dBackwardBF16(dxA: &r.dx, dweight: &r.dw, dbias: &r.db, dy: dy, x, weight: weight, batch: n,
                                           height: h, width: w, s, workspace: ws,
                                           inputAffineReLU: AffineReLU(scale: scale.baseAddress!, shift: shift.baseAddress!))
                    }
                }
            } else {
                conv2dForwardBF16(&r.y, x, weight: weight, bias: bias, batch: n, height: h, width: w, s, workspace: ws)
                conv2dBackwardBF16(dxA: &r.dx, dweight: &r.dw, dbias: &r.db, dy: dy, x, weight: weight, batch: n,
                                   height: h, width: w, s, workspace: ws)
            }
            return r
        }
        let a = Array(x[0..<(n * split * plane)]), b = Array(x[(n * split * plane)...])
        conv2dForwardBF16(&r.y, a, channelsA: split, b, weight: weight, bias: bias, batch: n, height: h, width: w, s,
                          workspace: ws)
        var da = [Float](repeating: .nan, count: a.count), dbb = [Float](repeating: .nan, count: b.count)
        conv2dBackwardBF16(dxA: &da, dxB: &dbb, dweight: &r.dw, dbias: &r.db, dy: dy, a, channelsA: split, b,
                           weight: weight, batch: n, height: h, width: w, s, workspace: ws)
        r.dx = da + dbb
        return r
    }

    /// |ours - reference| <= gamma(terms) * magnitude for every element.
    func assertWithin(_ ours: [Float], _ ref: [Double], _ mag: [Double], terms: Int, _ name: String,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ours.count, ref.count, name, file: file, line: line)
        let u = 0x1p-24, gamma = Double(terms) * u / (1 - Double(terms) * u)
        var worst = 0.0, failures = 0
        for i in 0..<min(ours.count, ref.count) {
            let err = abs(Double(ours[i]) - ref[i]), bound = gamma * mag[i]
            if !(err <= bound) { failures += 1 }
            if mag[i] > 0 { worst = max(worst, err / bound) }
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) elements outside gamma(\(terms)) * sum |terms| (worst \(worst))",
                       file: file, line: line)
    }

    /// Every kernel against the reference, on the kernels in use and on the portable ones, with
    /// whole images on one thread, bands of a few rows over threads and groups of small images.
    func check(_ s: Conv2dShape, n: Int, h: Int, w: Int, split: Int = 0, affine: Bool = false,
               file: StaticString = #filePath, line: UInt = #line) -> [Result] {
        let x = random(n * s.inC * h * w), weight = random(s.weightCount, scale: 0.3), bias = random(s.outC)
        let dy = random(n * s.outC * h * w), dwStart = random(s.weightCount), dbStart = random(s.outC)
        let bn = affine ? (scale: random(s.inC), shift: random(s.inC, scale: 0.5)) : nil
        let ref = reference(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, dwStart: dwStart,
                            dbStart: dbStart, split: split, affine: bn)
        var results: [Result] = []
        for kernels in availableBF16Kernels {
            bf16Kernels = kernels
            for (threads, pixels) in [(1, 1 << 20), (3, 40), (2, 700)] {
                setComputeThreads(threads)
                let r = run(s.tuned(KernelTuning(directPixels: pixels)), n: n, h: h, w: w, x: x, weight: weight,
                            bias: bias, dy: dy, dwStart: dwStart, dbStart: dbStart, split: split, affine: bn)
                let name = "\(s.inC)->\(s.outC) \(n)x\(h)x\(w) split \(split) affine \(affine), "
                    + "\(String(cString: kernels.pointee.name)), \(threads) threads, \(pixels) pixels"
                // Terms per element: bias and 9 C products; 9 O products; start and N H W products.
                assertWithin(r.y, ref.y, ref.yMag, terms: 9 * s.inC + 1, "y " + name, file: file, line: line)
                assertWithin(r.dx, ref.dx, ref.dxMag, terms: 9 * s.outC, "dx " + name, file: file, line: line)
                assertWithin(r.dw, ref.dw, ref.dwMag, terms: n * h * w + 1, "dw " + name, file: file, line: line)
                // The bias gradient is float32 dy's sum, as in float32 training.
                let dbMag = (0..<s.outC).map { o in
                    abs(Double(dbStart[o])) + (0..<n).reduce(0.0) { acc, i in
                        acc + (0..<(h * w)).reduce(0.0) { $0 + abs(Double(dy[(i * s.outC + o) * h * w + $1])) }
                    }
                }
                assertWithin(r.db, ref.db, dbMag, terms: n * h * w + 1, "db " + name, file: file, line: line)
                results.append(r)
            }
        }
        return results
    }

    // (in, out, batch, height, width)
    let shapes = [(8, 8, 2, 5, 7), (9, 5, 1, 1, 1), (17, 12, 3, 6, 33), (16, 24, 2, 20, 64), (24, 16, 1, 7, 70),
                  (10, 3, 2, 4, 16), (33, 9, 2, 3, 2), (16, 16, 1, 1, 19)]

    func testAgainstFloat64Reference() throws {
        for (c, o, n, h, w) in shapes {
            _ = check(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: n, h: h, w: w)
        }
    }

    func testConcatenatedInput() throws {
        for (c, split, o) in [(24, 16, 16), (16, 8, 7), (25, 8, 9)] {
            _ = check(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: 3, h: 7, w: 19, split: split)
        }
    }

    func testBatchNormReLUInput() throws {
        _ = check(Conv2dShape(inC: 16, outC: 8, kernel: 3, padding: 1), n: 2, h: 9, w: 21, affine: true)
        _ = check(Conv2dShape(inC: 11, outC: 16, kernel: 3, padding: 1), n: 3, h: 4, w: 4, affine: true)
    }

    /// Portable C and every other set this CPU runs (AVX512_BF16, AVX2): the same rounding, the
    /// same pairs summed in the same order, so the same bits, on any threads and bands.
    func testKernelSetsEqualPortable() throws {
        guard availableBF16Kernels.count > 1 else { throw XCTSkip("this CPU has no AVX2") }
        XCTAssertEqual(String(cString: cbf16_kernels().pointee.name), bf16Available ? "AVX512_BF16" : "AVX2")
        // 70 channels: four vectors of them, then a fifth alone (its three row taps together).
        // 3 and 11 outputs on wide rows: a block of a few outputs by tiles of its own, whole
        // (clean) and at the band's edges.
        let more = [(40, 32, 2, 33, 50), (70, 10, 2, 5, 9), (16, 3, 1, 12, 64), (24, 11, 2, 10, 80)]
        for (c, o, n, h, w) in shapes + more {
            let results = check(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: n, h: h, w: w)
            // Each set's runs in turn, portable's last.
            let runs = results.count / availableBF16Kernels.count, portable = results.count - runs
            for i in 0..<portable {
                let a = results[i], b = results[portable + i % runs]
                XCTAssertEqual(a.y, b.y, "y \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
                XCTAssertEqual(a.dx, b.dx, "dx \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
                XCTAssertEqual(a.dw, b.dw, "dw \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
            }
        }
    }

    /// Products of two bf16 in float32's denormal range are not exact; there an FMA rounds
    /// differently from a product and then a sum. The AVX2 set gives portable's bits on such
    /// values too, so its build has not contracted the pair step. (AVX512_BF16 flushes these
    /// products to zero, as its definition allows: not compared.)
    func testAVX2EqualsPortableOnDenormalProducts() throws {
        guard let avx2 = cbf16_avx2() else { throw XCTSkip("this CPU has no AVX2") }
        let tiny = Float(sign: .plus, exponent: -66, significand: 1)
        for (c, o, n, h, w) in [(16, 8, 2, 5, 9), (17, 12, 1, 6, 33)] {
            let s = Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1)
            let x = random(n * c * h * w, scale: tiny), weight = random(s.weightCount, scale: tiny)
            let bias = random(o, scale: tiny * tiny), dy = random(n * o * h * w, scale: tiny)
            let dwStart = random(s.weightCount, scale: tiny * tiny), dbStart = random(o, scale: tiny * tiny)
            var results: [Result] = []
            for kernels in [avx2, cbf16_portable()!] {
                bf16Kernels = kernels
                results.append(run(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, dwStart: dwStart,
                                   dbStart: dbStart, split: 0, affine: nil))
            }
            XCTAssertTrue(results[1].y.contains { $0 != 0 && abs($0) < Float.leastNormalMagnitude }, "denormal sums")
            XCTAssertEqual(results[0].y.map(\.bitPattern), results[1].y.map(\.bitPattern), "y \(c)->\(o)")
            XCTAssertEqual(results[0].dx.map(\.bitPattern), results[1].dx.map(\.bitPattern), "dx \(c)->\(o)")
            XCTAssertEqual(results[0].dw.map(\.bitPattern), results[1].dw.map(\.bitPattern), "dw \(c)->\(o)")
        }
    }

    /// Round to nearest even, as the instruction: ties, carries into the exponent, overflow to
    /// infinity, denormals to zero, NaN kept (quiet).
    func testRounding() throws {
        func bits(_ u: UInt32) -> Float { Float(bitPattern: u) }
        XCTAssertEqual(cbf16_round(bits(0x3F80_8000)), 0x3F80)  // tie, even below
        XCTAssertEqual(cbf16_round(bits(0x3F81_8000)), 0x3F82)  // tie, even above
        XCTAssertEqual(cbf16_round(bits(0x3F80_8001)), 0x3F81)
        XCTAssertEqual(cbf16_round(bits(0x3F80_7FFF)), 0x3F80)
        XCTAssertEqual(cbf16_round(bits(0x3FFF_FFFF)), 0x4000)  // carry into the exponent
        XCTAssertEqual(cbf16_round(Float.greatestFiniteMagnitude), 0x7F80)
        XCTAssertEqual(cbf16_round(-Float.infinity), 0xFF80)
        XCTAssertEqual(cbf16_round(bits(0x8000_1234)), 0x8000)  // denormal
        XCTAssertEqual(cbf16_round(bits(0x7F80_0001)) & 0x7FC0, 0x7FC0)  // signalling NaN made quiet
        XCTAssertEqual(cbf16_float(0xC040), -3)
        // The instruction itself (and the AVX2 build of the portable loops): random bit patterns
        // (every class of float) through every set.
        guard availableBF16Kernels.count > 1 else { throw XCTSkip("this CPU has no AVX2") }
        var g = SplitMix64(seed: 5)
        let count = 4099
        let x = (0..<(3 * count)).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: g.next())) }
        var slow = [UInt32](repeating: 0, count: 2 * count)
        cbf16_portable().pointee.pair_planes!(&slow, count, x, nil, count, 3, count)
        for kernels in availableBF16Kernels.dropLast() {
            var fast = [UInt32](repeating: 0, count: 2 * count)
            kernels.pointee.pair_planes!(&fast, count, x, nil, count, 3, count)
            XCTAssertEqual(fast, slow, String(cString: kernels.pointee.name))
        }
        XCTAssertEqual(slow[5], UInt32(cbf16_round(x[5])) | UInt32(cbf16_round(x[count + 5])) << 16)
        XCTAssertEqual(slow[count + 7], UInt32(cbf16_round(x[2 * count + 7])))  // the odd channel's partner is zero
    }

    /// BatchNorm's output from its input rounded to bf16, the rounded halves kept
    /// (`cbn_output_keeping_bf16`), and the copy expanded again (`cbn_expand_bf16`): the halves
    /// are `cbf16_round`'s, the output is `cbn_output` of the rounded values bit for bit, on both
    /// paths, with and without the ReLU, and the expansion gives the rounded values back.
    func testBatchNormOutputKeepingBF16() {
        let n = 1037
        var x = random(n, scale: 3)
        x[0] = Float(bitPattern: 0x3F80_8000); x[1] = Float(bitPattern: 0x8000_1234); x[2] = -0.0; x[3] = 1e-39
        x[4] = Float(bitPattern: 0x3F81_8000); x[5] = -Float(bitPattern: 0x3FFF_FFFF)
        let halves = x.map { cbf16_round($0) }, rounded = halves.map { cbf16_float($0) }
        for relu: Int32 in [0, 1] {
            var want = [Float](repeating: 0, count: n)
            cbn_output(&want, rounded, n, 0.75, -0.25, relu, 0)
            for path: Int32 in bf16Available ? [0, 1] : [0] {
                var y = [Float](repeating: 0, count: n), xb = [UInt16](repeating: 0, count: n)
                cbn_output_keeping_bf16(&y, x, &xb, n, 0.75, -0.25, relu, path)
                XCTAssertEqual(xb, halves, "AVX512_BF16 path: \(path)")
                XCTAssertEqual(y.map(\.bitPattern), want.map(\.bitPattern), "AVX512_BF16 path: \(path), relu \(relu)")
            }
        }
        for avx: Int32 in avx512Kernels ? [0, 1] : [0] {
            var back = [Float](repeating: 0, count: n)
            cbn_expand_bf16(&back, halves, n, avx)
            XCTAssertEqual(back.map(\.bitPattern), rounded.map(\.bitPattern), "AVX-512 path: \(avx)")
        }
    }

    /// BatchNorm's backward reading its input from the kept bf16 halves: the gradient sums and the
    /// input gradient equal, bit for bit, the float kernels on the halves expanded, on both paths,
    /// with and without the fused ReLU's mask, at lengths that leave tails of every size.
    func testBatchNormBackwardReadsBF16Halves() {
        for n in [1, 7, 15, 17, 40, 1037] {
            var x = random(n, scale: 3)
            // An output of exactly 0 (masked), a denormal (a zero of its sign in bf16), -0.
            x[0] = 1; if n > 2 { x[1] = Float(bitPattern: 0x8000_1234); x[2] = -0.0 }
            let dy = random(n), halves = x.map { cbf16_round($0) }, expanded = halves.map { cbf16_float($0) }
            for masked: Int32 in [0, 1] {
                for avx: Int32 in cbnPaths {
                    let what = "n \(n), masked \(masked), path \(avx)"
                    var want = [Double](repeating: 0, count: 2), got = want
                    cbn_gradient_sums(dy, expanded, nil, masked, 0.5, -0.5, n, 0.25, 1.5, &want, avx)
                    cbn_gradient_sums(dy, nil, halves, masked, 0.5, -0.5, n, 0.25, 1.5, &got, avx)
                    XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), what)
                    var dxWant = [Float](repeating: 0, count: n), dx = dxWant
                    cbn_input_gradient(&dxWant, nil, dy, expanded, nil, masked, 0.5, -0.5, n, 0.25, 1.5, 0.75, 0.125,
                                       -0.375, avx)
                    cbn_input_gradient(&dx, nil, dy, nil, halves, masked, 0.5, -0.5, n, 0.25, 1.5, 0.75, 0.125, -0.375,
                                       avx)
                    XCTAssertEqual(dx.map(\.bitPattern), dxWant.map(\.bitPattern), what)
                    if masked == 1 { XCTAssertEqual(dx[0], 0.75 * (-0.125 - (1 - 0.25) * 1.5 * -0.375), what) }
                }
            }
        }
    }

    /// BatchNorm's backward writing its input gradient only as bf16 halves (for a bf16
    /// convolution's backward): each is `cbf16_round` of the float it writes otherwise, reading x
    /// or its halves, with and without the mask, on both paths, at lengths that leave tails of
    /// every size, also where the gradients are denormals (zeros of their sign in bf16). A bias
    /// gradient's row sum over such halves equals, bit for bit, the sum over them expanded.
    func testBatchNormBackwardWritesBF16Halves() {
        for n in [1, 7, 15, 17, 40, 1037] {
            let x = random(n, scale: 3), halves = x.map { cbf16_round($0) }, dy = random(n)
            for k: Float in [0.75, 1e-39] {
                for masked: Int32 in [0, 1] {
                    for avx: Int32 in cbnRoundingPaths {
                        for xb in [nil, halves] {
                            let what = "n \(n), k \(k), masked \(masked), path \(avx), x kept: \(xb != nil)"
                            var floats = [Float](repeating: .nan, count: n)
                            var written = [UInt16](repeating: 0xFFFF, count: n)
                            cbn_input_gradient(&floats, nil, dy, x, xb, masked, 0.5, -0.5, n, 0.25, 1.5, k, 0.125,
                                               -0.375, avx)
                            cbn_input_gradient(nil, &written, dy, x, xb, masked, 0.5, -0.5, n, 0.25, 1.5, k, 0.125,
                                               -0.375, avx)
                            XCTAssertEqual(written, floats.map { cbf16_round($0) }, what)
                            if k < 1e-30 { XCTAssertTrue(written.allSatisfy { $0 & 0x7FFF == 0 }, what) }
                        }
                    }
                }
            }
            let dyHalves = dy.map { cbf16_round($0) }, expanded = dyHalves.map { cbf16_float($0) }
            for avx: Int32 in cbnPaths {
                XCTAssertEqual(cbn_sum(nil, dyHalves, n, avx).bitPattern, cbn_sum(expanded, nil, n, avx).bitPattern,
                               "n \(n), AVX-512 path: \(avx)")
            }
        }
    }

    /// The odd pixel-pair copy made from the even one (`cbf16_odd_pairs`) holds the words that
    /// copying it from x gives, on every kernel set and both paths: odd and even widths, one
    /// pixel, rows outside the image, a part of the padded channels, BatchNorm's affine ReLU.
    func testOddCopyFromEvenCopy() {
        for (c, first, h, w) in [(11, 0, 5, 9), (40, 8, 3, 34), (16, 0, 2, 1), (7, 3, 4, 33)] {
            let cp = (first + c + 15) / 16 * 16, pairs = (w + 1) / 2, images = 2, rows = h + 2
            let x = random(images * c * h * w, scale: 2), scale = random(c), shift = random(c, scale: 0.5)
            for kernels in availableBF16Kernels {
                for affine in [false, true] {
                    var even = [UInt32](repeating: 0, count: images * rows * (pairs + 1) * cp)
                    var want = [UInt32](repeating: 0, count: images * rows * pairs * cp)
                    scale.withUnsafeBufferPointer { sc in
                        shift.withUnsafeBufferPointer { sh in
                            let f = affine ? (sc.baseAddress, sh.baseAddress) : (nil, nil)
                            // Rows -1 to h, pairs from column -1 (even) and from column 0 (odd).
                            kernels.pointee.unfold!(&even, x, nil, c * h * w, Int32(images), Int32(c), Int32(first),
                                                    Int32(cp), Int32(h), Int32(w), -1, Int32(rows), -1,
                                                    Int32(pairs + 1), f.0, f.1)
                            kernels.pointee.unfold!(&want, x, nil, c * h * w, Int32(images), Int32(c), Int32(first),
                                                    Int32(cp), Int32(h), Int32(w), -1, Int32(rows), 0, Int32(pairs),
                                                    f.0, f.1)
                        }
                    }
                    XCTAssertTrue(want.contains { $0 != 0 })
                    for avx: Int32 in avx512Kernels ? [0, 1] : [0] {
                        var got = [UInt32](repeating: 0xDEAD_BEEF, count: want.count)
                        cbf16_odd_pairs(&got, even, images * rows, Int32(pairs), Int32(cp), avx)
                        XCTAssertEqual(got, want, "\(c) channels from \(first), \(h)x\(w), affine \(affine), "
                                       + "\(String(cString: kernels.pointee.name)), AVX-512 path: \(avx)")
                    }
                }
            }
        }
    }

    /// The weight gradient reading a BatchNorm's input from its kept bf16 halves: dw, db and dx
    /// equal, bit for bit, the backward on the halves expanded to floats, on every kernel set and
    /// on several threads; the float input it is given instead is NaN, so it is not read.
    func testWeightGradientReadsBF16Halves() {
        for (c, o, n, h, w) in [(16, 8, 2, 9, 21), (11, 16, 3, 4, 4), (40, 32, 2, 33, 50)] {
            let s = Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), plane = h * w
            let halves = random(n * c * plane, scale: 2).map { cbf16_round($0) }
            let expanded = halves.map { cbf16_float($0) }, nan = [Float](repeating: .nan, count: halves.count)
            let weight = random(o * c * 9), dy = random(n * o * plane)
            let scale = random(c), shift = random(c, scale: 0.5)
            for kernels in availableBF16Kernels {
                bf16Kernels = kernels
                for threads in [1, 3] {
                    setComputeThreads(threads)
                    func backward(_ x: [Float], _ xb: [UInt16]?) -> [[Float]] {
                        var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: weight.count)
                        var db = [Float](repeating: 0, count: o)
                        scale.withUnsafeBufferPointer { sc in
                            shift.withUnsafeBufferPointer { sh in
                                let f = AffineReLU(scale: sc.baseAddress!, shift: sh.baseAddress!)
                                if let xb {
                                    conv2dBackwardBF16(dxA: &dx, dweight: &dw, dbias: &db, dy: dy, x, aBF16: xb,
                                                       weight: weight, batch: n, height: h, width: w, s,
                                                       workspace: Workspace(), inputAffineReLU: f)
                                } else {
                                    conv2dBackwardBF16(dxA: &dx, dweight: &dw, dbias: &db, dy: dy, x, weight: weight,
                                                       batch: n, height: h, width: w, s, workspace: Workspace(),
                                                       inputAffineReLU: f)
                                }
                            }
                        }
                        return [dx, dw, db]
                    }
                    let want = backward(expanded, nil), got = backward(nan, halves)
                    let what = "\(c)->\(o) \(n)x\(h)x\(w), \(String(cString: kernels.pointee.name)), \(threads) threads"
                    XCTAssertFalse(want[1].contains { $0.isNaN }, what)
                    for (a, b) in zip(got, want) { XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), what) }
                }
            }
        }
    }

    /// The peak loop runs and gives a positive rate where the instruction exists.
    func testPeak() throws {
        guard bf16Available else { throw XCTSkip("this CPU has no AVX512_BF16") }
        XCTAssertGreaterThan(cbf16_peak_flops(1000), 0)
    }
}
