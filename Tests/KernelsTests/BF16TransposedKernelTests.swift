import CKernels
import Kernels
import XCTest

/// The bf16 transposed convolution (cconvt_bf16.c through convTranspose2dForwardBF16 /
/// convTranspose2dBackwardBF16) against a float64 reference of the same rounding: x, weights and
/// dy rounded to bf16, products exact, summed in float64; each element within float32's error for
/// its number of terms, gamma(n) * sum |terms| (as BF16KernelTests). Shapes reach the kernels'
/// edges: odd widths (a last pixel pair of one pixel), 1 x 1 planes, rows of one and several
/// vectors with a partial last one, channel counts that fill neither a pair nor a block of four,
/// eight or sixteen, a backward in several bands of rows; one thread and three. The portable
/// kernels and the AVX512_BF16 ones give the same bits; padded planes hold the unpadded result;
/// and the input and weight gradients are the adjoints of the forward (the exact form of a
/// finite-difference check for a linear map).
final class BF16TransposedKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 29)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    override func tearDown() { bf16Kernels = cbf16_kernels(); setComputeThreads(1) }

    func bf(_ x: Float) -> Double { Double(cbf16_float(cbf16_round(x))) }

    struct Case {
        var s: ConvTranspose2dShape, n: Int, h: Int, w: Int
        var x: [Float], weight: [Float], bias: [Float], dy: [Float], dwStart: [Float], dbStart: [Float]
    }

    func makeCase(_ c: Int, _ o: Int, _ n: Int, _ h: Int, _ w: Int) -> Case {
        let s = ConvTranspose2dShape(inC: c, outC: o)
        return Case(s: s, n: n, h: h, w: w, x: random(n * c * h * w), weight: random(s.weightCount, scale: 0.3),
                    bias: random(o), dy: random(n * o * 4 * h * w), dwStart: random(s.weightCount), dbStart: random(o))
    }

    struct Result: Equatable { var y: [Float], dx: [Float], dw: [Float], db: [Float] }

    func run(_ k: Case) -> Result {
        let ws = Workspace(), s = k.s
        var r = Result(y: [Float](repeating: .nan, count: k.dy.count), dx: [Float](repeating: .nan, count: k.x.count),
                       dw: k.dwStart, db: k.dbStart)
        convTranspose2dForwardBF16(&r.y, k.x, weight: k.weight, bias: k.bias, batch: k.n, height: k.h, width: k.w, s,
                                   workspace: ws)
        convTranspose2dBackwardBF16(dx: &r.dx, dweight: &r.dw, dbias: &r.db, dy: k.dy, x: k.x, weight: k.weight,
                                    batch: k.n, height: k.h, width: k.w, s, workspace: ws)
        return r
    }

    /// |ours - reference| <= gamma(terms) * magnitude for every element.
    func assertWithin(_ ours: [Float], _ ref: [Double], _ mag: [Double], terms: Int, _ name: String) {
        XCTAssertEqual(ours.count, ref.count, name)
        let u = 0x1p-24, gamma = Double(terms) * u / (1 - Double(terms) * u)
        var failures = 0, worst = 0.0
        for i in 0..<min(ours.count, ref.count) {
            let err = abs(Double(ours[i]) - ref[i]), bound = gamma * mag[i]
            if !(err <= bound) { failures += 1 }
            if mag[i] > 0 { worst = max(worst, err / bound) }
        }
        XCTAssertEqual(failures, 0,
                       "\(name): \(failures) elements outside gamma(\(terms)) * sum |terms| (worst \(worst))")
    }

    func check(_ k: Case) -> [Result] {
        let s = k.s, C = s.inC, O = s.outC, plane = k.h * k.w, ow = 2 * k.w, outPlane = 4 * plane
        let xb = k.x.map(bf), wb = k.weight.map(bf), dyb = k.dy.map(bf)
        var y = [Double](repeating: 0, count: k.dy.count), yMag = y
        var dx = [Double](repeating: 0, count: k.x.count), dxMag = dx
        var dw = k.dwStart.map(Double.init), dwMag = dw.map(abs)
        var db = k.dbStart.map(Double.init), dbMag = db.map(abs)
        for n in 0..<k.n {
            for p in 0..<O {
                for r in 0..<(2 * k.h) {
                    for c in 0..<ow {
                        let yi = (n * O + p) * outPlane + r * ow + c
                        y[yi] = Double(k.bias[p]); yMag[yi] = abs(Double(k.bias[p]))
                        db[p] += Double(k.dy[yi]); dbMag[p] += abs(Double(k.dy[yi]))
                        for q in 0..<C {
                            let xi = (n * C + q) * plane + r / 2 * k.w + c / 2
                            let wi = ((q * O + p) * 2 + r % 2) * 2 + c % 2
                            y[yi] += xb[xi] * wb[wi]; yMag[yi] += abs(xb[xi] * wb[wi])
                            dx[xi] += dyb[yi] * wb[wi]; dxMag[xi] += abs(dyb[yi] * wb[wi])
                            dw[wi] += dyb[yi] * xb[xi]; dwMag[wi] += abs(dyb[yi] * xb[xi])
                        }
                    }
                }
            }
        }
        var results: [Result] = []
        for kernels in availableBF16Kernels {
            bf16Kernels = kernels
            for threads in [1, 3] {
                setComputeThreads(threads)
                let r = run(k)
                let name = "\(C)->\(O) \(k.n)x\(k.h)x\(k.w), \(String(cString: kernels.pointee.name)), "
                    + "\(threads) threads"
                assertWithin(r.y, y, yMag, terms: C + 1, "y " + name)
                assertWithin(r.dx, dx, dxMag, terms: 4 * O, "dx " + name)
                assertWithin(r.dw, dw, dwMag, terms: k.n * plane + 1, "dw " + name)
                assertWithin(r.db, db, dbMag, terms: k.n * outPlane + 1, "db " + name)
                results.append(r)
            }
        }
        return results
    }

    // (in, out, batch, height, width); the last one's backward goes by bands of 32 rows and 13.
    let shapes = [(8, 4, 2, 5, 7), (1, 1, 1, 1, 1), (3, 5, 1, 1, 17), (17, 12, 3, 6, 33), (16, 8, 2, 20, 64),
                  (33, 16, 2, 3, 2), (64, 32, 1, 4, 4), (32, 16, 2, 9, 50), (16, 16, 1, 45, 201)]

    func testAgainstFloat64Reference() throws {
        for (c, o, n, h, w) in shapes { _ = check(makeCase(c, o, n, h, w)) }
    }

    /// Portable C and every other set this CPU runs (AVX512_BF16, AVX2): the same rounding, the
    /// same pairs summed in the same order, so the same bits; and the same bits on one thread and
    /// three (per image the same work).
    func testKernelSetsEqualPortable() throws {
        guard availableBF16Kernels.count > 1 else { throw XCTSkip("this CPU has no AVX2") }
        for (c, o, n, h, w) in shapes {
            // Each set's runs in turn, portable's last.
            let results = check(makeCase(c, o, n, h, w)), runs = results.count / availableBF16Kernels.count
            let portable = results.count - runs
            for i in 0..<portable {
                let b = results[portable + i % runs]
                XCTAssertEqual(results[i].y, b.y, "y \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
                XCTAssertEqual(results[i].dx, b.dx, "dx \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
                XCTAssertEqual(results[i].dw, b.dw, "dw \(c)->\(o) \(n)x\(h)x\(w) run \(i)")
            }
            XCTAssertEqual(results[0].y, results[1].y, "y on 1 and 3 threads")
            XCTAssertEqual(results[0].dx, results[1].dx, "dx on 1 and 3 threads")
        }
    }

    /// As BF16KernelTests' test of the same name: products in float32's denormal range, where a
    /// contracted pair step would round differently; the AVX2 set gives portable's bits.
    func testAVX2EqualsPortableOnDenormalProducts() throws {
        guard let avx2 = cbf16_avx2() else { throw XCTSkip("this CPU has no AVX2") }
        let tiny = Float(sign: .plus, exponent: -66, significand: 1)
        for (c, o, n, h, w) in [(16, 8, 2, 5, 7), (33, 16, 2, 3, 50)] {
            var k = makeCase(c, o, n, h, w)
            for i in k.x.indices { k.x[i] *= tiny }
            for i in k.weight.indices { k.weight[i] *= tiny }
            for i in k.dy.indices { k.dy[i] *= tiny }
            for i in k.dwStart.indices { k.dwStart[i] *= tiny * tiny }
            var results: [Result] = []
            for kernels in [avx2, cbf16_portable()!] {
                bf16Kernels = kernels
                results.append(run(k))
            }
            XCTAssertTrue(results[1].dx.contains { $0 != 0 && abs($0) < Float.leastNormalMagnitude }, "denormal sums")
            XCTAssertEqual(results[0].y.map(\.bitPattern), results[1].y.map(\.bitPattern), "y \(c)->\(o)")
            XCTAssertEqual(results[0].dx.map(\.bitPattern), results[1].dx.map(\.bitPattern), "dx \(c)->\(o)")
            XCTAssertEqual(results[0].dw.map(\.bitPattern), results[1].dw.map(\.bitPattern), "dw \(c)->\(o)")
        }
    }

    /// Written into padded planes (an up block's F.pad), the forward leaves zeros in the padding
    /// and the unpadded result, bit for bit, in the rest.
    func testIntoPaddedPlanes() throws {
        for (c, o, n, h, w, top, left) in [(16, 8, 2, 5, 7, 1, 1), (3, 5, 1, 4, 17, 0, 1), (8, 8, 1, 3, 3, 1, 0)] {
            let k = makeCase(c, o, n, h, w), s = k.s
            var y = [Float](repeating: .nan, count: k.dy.count)
            convTranspose2dForwardBF16(&y, k.x, weight: k.weight, bias: k.bias, batch: n, height: h, width: w, s,
                                       workspace: Workspace())
            let ph = 2 * h + top, pw = 2 * w + left
            var padded = [Float](repeating: .nan, count: n * o * ph * pw)
            convTranspose2dForwardBF16(&padded, k.x, weight: k.weight, bias: k.bias, batch: n, height: h, width: w, s,
                                       top: top, left: left, workspace: Workspace())
            for plane in 0..<(n * o) {
                for r in 0..<ph {
                    for c in 0..<pw {
                        let v = padded[(plane * ph + r) * pw + c]
                        let expected = r < top || c < left ? 0 : y[(plane * 2 * h + r - top) * 2 * w + c - left]
                        XCTAssertEqual(v, expected, "plane \(plane) row \(r) column \(c), pad \(top), \(left)")
                    }
                }
            }
        }
    }

    /// The map is linear in x and in the weights: with operands that bf16 holds exactly,
    /// <dy, T(x; w)> = <dx, x> = <dw, w> (bias 0, gradients from zero), up to float32 sums.
    func testGradientsAreTheForwardsAdjoints() throws {
        for (c, o, n, h, w) in [(8, 4, 2, 5, 7), (17, 12, 1, 6, 33), (1, 3, 2, 3, 3)] {
            var k = makeCase(c, o, n, h, w)
            let exact = { (v: [Float]) in v.map { cbf16_float(cbf16_round($0)) } }
            k.x = exact(k.x); k.weight = exact(k.weight); k.dy = exact(k.dy)
            k.bias = [Float](repeating: 0, count: o)
            k.dwStart = [Float](repeating: 0, count: k.weight.count); k.dbStart = [Float](repeating: 0, count: o)
            let r = run(k)
            var forward = 0.0, terms = 0.0
            for (i, d) in k.dy.enumerated() { forward += Double(d) * Double(r.y[i]) }
            // Every term of the triple sum over (image, output, pixel, input) as |dy w x|.
            let plane = h * w
            for i in 0..<k.dy.count {
                let image = i / (o * 4 * plane), p = i / (4 * plane) % o
                let row = i % (4 * plane) / (2 * w), col = i % (2 * w)
                for q in 0..<c {
                    let xi = (image * c + q) * plane + row / 2 * w + col / 2
                    let wi = ((q * o + p) * 2 + row % 2) * 2 + col % 2
                    terms += abs(Double(k.dy[i]) * Double(k.weight[wi]) * Double(k.x[xi]))
                }
            }
            let input = zip(r.dx, k.x).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let weight = zip(r.dw, k.weight).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            // The three differ by float32 sums of at most a few hundred terms: gamma(400) < 1e-4.
            XCTAssertEqual(input, forward, accuracy: 1e-4 * terms, "<dx, x> \(c)->\(o) \(n)x\(h)x\(w)")
            XCTAssertEqual(weight, forward, accuracy: 1e-4 * terms, "<dw, w> \(c)->\(o) \(n)x\(h)x\(w)")
            // A wrong adjoint (a transposed tap, a swapped channel) misses by about sqrt(terms).
            XCTAssertLessThan(1e-4 * terms, terms.squareRoot())
        }
    }
}
