import CKernels
import Kernels
import XCTest

/// A tensor kept as bf16 halves (`HalfTensor`) stands for the float32 tensor whose only readers
/// round it to bf16: the transposed convolution writing halves writes the rounded values of its
/// float32 output, and a bf16 convolution reading a concatenation's second part as halves gives
/// the bits it gives reading the floats, forward and backward, on every kernel set, in bands of
/// rows over threads and in whole images.
final class BF16HalvesTests: XCTestCase {
    var rng = SplitMix64(seed: 31)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    override func tearDown() { bf16Kernels = cbf16_kernels(); setComputeThreads(1) }

    func testTransposedConvolutionWritesItsRoundedOutput() {
        for (c, o, n, h, w, top, left) in [(16, 8, 2, 5, 7, 1, 1), (3, 5, 1, 4, 17, 0, 1), (32, 16, 2, 9, 25, 0, 0)] {
            let s = ConvTranspose2dShape(inC: c, outC: o)
            let x = random(n * c * h * w), weight = random(s.weightCount, scale: 0.3), bias = random(o)
            let count = n * o * (2 * h + top) * (2 * w + left)
            for kernels in availableBF16Kernels {
                bf16Kernels = kernels
                for threads in [1, 3] {
                    setComputeThreads(threads)
                    var y = [Float](repeating: .nan, count: count)
                    var halves = [UInt16](repeating: 0xFFFF, count: count)
                    convTranspose2dForwardBF16(&y, x, weight: weight, bias: bias, batch: n, height: h, width: w, s,
                                               top: top, left: left, workspace: Workspace())
                    convTranspose2dForwardBF16(nil, yBF16: &halves, x, weight: weight, bias: bias, batch: n, height: h,
                                               width: w, s, top: top, left: left, workspace: Workspace())
                    XCTAssertEqual(halves, y.map { cbf16_round($0) },
                                   "\(c)->\(o) \(n)x\(h)x\(w) pad \(top), \(left), \(threads) threads")
                }
            }
        }
    }

    /// A convolution feeding a BatchNorm in bf16 training writes its output only as halves: the
    /// rounded values of its float32 output, with the same sums, and the BatchNorm gives from them
    /// what it gives rounding the floats itself.
    func testConvolutionWritesItsRoundedOutputAndItsSums() {
        for (ca, cb, o, n, h, w) in [(16, 0, 16, 2, 9, 21), (8, 24, 9, 3, 4, 4), (16, 8, 7, 1, 30, 40)] {
            let s = Conv2dShape(inC: ca + cb, outC: o, kernel: 3, padding: 1), plane = h * w
            let a = random(n * ca * plane), b = cb > 0 ? random(n * cb * plane) : nil
            let weight = random(s.weightCount, scale: 0.3), bias = random(o)
            let gamma = random(o), beta = random(o), bn = BatchNormShape(batch: n, channels: o, spatial: plane)
            for kernels in availableBF16Kernels {
                bf16Kernels = kernels
                for (threads, pixels) in [(1, 1 << 20), (3, 40), (2, 700)] {
                    setComputeThreads(threads)
                    let tuned = s.tuned(KernelTuning(directPixels: pixels))
                    let parts = tuned.bf16StatisticsParts(batch: n, height: h, width: w)
                    var y = [Float](repeating: .nan, count: n * o * plane)
                    var halves = [UInt16](repeating: 0xFFFF, count: y.count)
                    var sums = [Double](repeating: .nan, count: parts * 2 * o), halvesSums = sums
                    conv2dForwardBF16(&y, a, channelsA: cb > 0 ? ca : nil, b, weight: weight, bias: bias, batch: n,
                                      height: h, width: w, tuned, workspace: Workspace(), statistics: &sums)
                    conv2dForwardBF16(nil, yBF16: &halves, a, channelsA: cb > 0 ? ca : nil, b, weight: weight,
                                      bias: bias, batch: n, height: h, width: w, tuned, workspace: Workspace(),
                                      statistics: &halvesSums)
                    let label = "\(ca)+\(cb)->\(o) \(n)x\(h)x\(w), \(threads) threads, \(pixels) pixels, "
                        + String(cString: kernels.pointee.name)
                    XCTAssertFalse(y.contains { $0.isNaN } || sums.contains { $0.isNaN }, label)
                    XCTAssertEqual(halves, y.map { cbf16_round($0) }, label)
                    XCTAssertEqual(halvesSums, sums, label)
                    // BatchNorm: rounding the floats itself, or reading the halves.
                    func batchNorm(_ x: [Float]?, _ kept: inout [UInt16]) -> [Float] {
                        var out = [Float](repeating: .nan, count: y.count), mean = [Float](repeating: 0, count: o)
                        var invstd = mean, runningMean = mean, runningVar = mean
                        var scratch = [Double](repeating: 0, count: 2 * o + 1)
                        batchNormTrainForward(&out, x, weight: gamma, bias: beta, runningMean: &runningMean,
                                              runningVar: &runningVar, saveMean: &mean, saveInvstd: &invstd, bn,
                                              scratch: &scratch, relu: true, partialSums: sums, parts: parts,
                                              keeping: &kept)
                        return out + mean + invstd + runningMean + runningVar
                    }
                    var kept = [UInt16](repeating: 0xFFFF, count: y.count)
                    let fromFloats = batchNorm(y, &kept)
                    XCTAssertEqual(kept, halves, label)
                    XCTAssertEqual(batchNorm(nil, &halves), fromFloats, label)
                }
            }
        }
    }

    /// BatchNorm's output written as its bf16 reader's paired planes: each word is the two
    /// channels' outputs (as `batchNormTrainOutput` computes them from the kept halves) rounded
    /// to bf16, from the halves or from x rounded on the way, on both paths, with and without the
    /// ReLU, an odd channel count's last high half zero; and the convolution reading those words
    /// gives the bits it gives reading the floats.
    func testBatchNormWritesItsReadersPairedPlanes() {
        for (c, o, n, h, w) in [(16, 16, 2, 9, 21), (9, 5, 3, 4, 4), (11, 16, 1, 30, 40)] {
            let plane = h * w, pairs = (c + 1) / 2, shape = BatchNormShape(batch: n, channels: c, spatial: plane)
            var x = random(n * c * plane, scale: 2)
            x[0] = Float(bitPattern: 0x3F80_8000); x[1] = Float(bitPattern: 0x8000_1234); x[2] = -0.0
            let halves = x.map { cbf16_round($0) }
            let weight = random(c), bias = random(c), mean = random(c, scale: 0.1)
            let invstd = random(c).map { abs($0) + 0.5 }
            let s = Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1)
            let convWeight = random(s.weightCount, scale: 0.3), convBias = random(o)
            for relu in [false, true] {
                var y = [Float](repeating: .nan, count: x.count), kept = halves
                batchNormTrainOutput(&y, nil, weight: weight, bias: bias, saveMean: mean, saveInvstd: invstd, shape,
                                     relu: relu, keeping: &kept)
                var want = [UInt32](repeating: 0, count: n * pairs * plane)
                for i in 0..<n {
                    for k in 0..<pairs {
                        for p in 0..<plane {
                            let low = UInt32(cbf16_round(y[(i * c + 2 * k) * plane + p]))
                            let high = 2 * k + 1 < c ? UInt32(cbf16_round(y[(i * c + 2 * k + 1) * plane + p])) : 0
                            want[(i * pairs + k) * plane + p] = low | high << 16
                        }
                    }
                }
                var words = [UInt32](repeating: 0xDEAD_BEEF, count: want.count), fromHalves = halves
                batchNormTrainOutputPairs(&words, nil, keeping: &fromHalves, weight: weight, bias: bias,
                                          saveMean: mean, saveInvstd: invstd, shape, relu: relu)
                XCTAssertEqual(words, want, "\(c) channels, relu \(relu)")
                // From x itself: rounded into the kept halves on the way.
                var fromX = [UInt32](repeating: 0xDEAD_BEEF, count: want.count)
                var rounded = [UInt16](repeating: 0, count: x.count)
                batchNormTrainOutputPairs(&fromX, x, keeping: &rounded, weight: weight, bias: bias, saveMean: mean,
                                          saveInvstd: invstd, shape, relu: relu)
                XCTAssertEqual(fromX, want, "\(c) channels from x, relu \(relu)")
                XCTAssertEqual(rounded, halves, "\(c) channels from x, relu \(relu)")
                // The kernel itself on both paths, one channel pair's plane (tails of every size).
                for path: Int32 in bf16Available ? [0, 1] : [0] {
                    for count in [plane, 17, 15] where count <= plane {
                        var got = [UInt32](repeating: 0, count: count)
                        let s0 = weight[0] * invstd[0], s1 = weight[1] * invstd[1]
                        cbn_output_pairs(&got, halves, Array(halves[plane...]), count, s0, bias[0] - mean[0] * s0, s1,
                                         bias[1] - mean[1] * s1, relu ? 1 : 0, path)
                        XCTAssertEqual(got, Array(want[0..<count]), "\(c) channels, relu \(relu), path \(path)")
                    }
                }
                for kernels in availableBF16Kernels {
                    bf16Kernels = kernels
                    for (threads, pixels) in [(1, 1 << 20), (3, 40)] {
                        setComputeThreads(threads)
                        let tuned = s.tuned(KernelTuning(directPixels: pixels))
                        var fromFloats = [Float](repeating: .nan, count: n * o * plane), fromPairs = fromFloats
                        conv2dForwardBF16(&fromFloats, y, weight: convWeight, bias: convBias, batch: n, height: h,
                                          width: w, tuned, workspace: Workspace())
                        let unread = [Float](repeating: .nan, count: 1)
                        conv2dForwardBF16(&fromPairs, unread, aPairs: words, weight: convWeight, bias: convBias,
                                          batch: n, height: h, width: w, tuned, workspace: Workspace())
                        XCTAssertFalse(fromFloats.contains { $0.isNaN })
                        XCTAssertEqual(fromPairs.map(\.bitPattern), fromFloats.map(\.bitPattern),
                                       "\(c)->\(o), relu \(relu), \(threads) threads, \(pixels) pixels, "
                                       + String(cString: kernels.pointee.name))
                    }
                }
            }
        }
    }

    struct Result: Equatable { var y: [Float], da: [Float], db: [Float], dw: [Float], dbias: [Float] }

    func testConvolutionReadsHalvesAsItReadsFloats() {
        for (ca, cb, o, n, h, w) in [(16, 16, 16, 2, 9, 21), (8, 24, 9, 3, 4, 4), (16, 8, 7, 1, 30, 40)] {
            let s = Conv2dShape(inC: ca + cb, outC: o, kernel: 3, padding: 1), plane = h * w
            let a = random(n * ca * plane), b = random(n * cb * plane), dy = random(n * o * plane)
            let weight = random(s.weightCount, scale: 0.3), bias = random(o), halves = b.map { cbf16_round($0) }
            for kernels in availableBF16Kernels {
                bf16Kernels = kernels
                for (threads, pixels) in [(1, 1 << 20), (3, 40), (2, 700)] {
                    setComputeThreads(threads)
                    let tuned = s.tuned(KernelTuning(directPixels: pixels))
                    func run(_ asHalves: Bool) -> Result {
                        var r = Result(y: [Float](repeating: .nan, count: n * o * plane),
                                       da: [Float](repeating: .nan, count: a.count),
                                       db: [Float](repeating: .nan, count: b.count),
                                       dw: [Float](repeating: 0, count: s.weightCount),
                                       dbias: [Float](repeating: 0, count: o))
                        let ws = Workspace()
                        if asHalves {
                            conv2dForwardBF16(&r.y, a, channelsA: ca, bBF16: halves, weight: weight, bias: bias,
                                              batch: n, height: h, width: w, tuned, workspace: ws)
                            conv2dBackwardBF16(dxA: &r.da, dxB: &r.db, dweight: &r.dw, dbias: &r.dbias, dy: dy, a,
                                               channelsA: ca, bBF16: halves, weight: weight, batch: n, height: h,
                                               width: w, tuned, workspace: ws)
                        } else {
                            conv2dForwardBF16(&r.y, a, channelsA: ca, b, weight: weight, bias: bias, batch: n,
                                              height: h, width: w, tuned, workspace: ws)
                            conv2dBackwardBF16(dxA: &r.da, dxB: &r.db, dweight: &r.dw, dbias: &r.dbias, dy: dy, a,
                                               channelsA: ca, b, weight: weight, batch: n, height: h, width: w, tuned,
                                               workspace: ws)
                        }
                        return r
                    }
                    let floats = run(false), fromHalves = run(true)
                    XCTAssertFalse(floats.y.contains { $0.isNaN } || floats.db.contains { $0.isNaN })
                    XCTAssertEqual(fromHalves, floats, "\(ca)+\(cb)->\(o) \(n)x\(h)x\(w), \(threads) threads, "
                                   + "\(pixels) pixels, \(String(cString: kernels.pointee.name))")
                }
            }
        }
    }

    /// A bf16 convolution's backward reading dy as the bf16 halves BatchNorm's backward writes:
    /// the input, weight and bias gradients equal, bit for bit, those from the halves' values as
    /// floats, for one input and for a concatenation, on every kernel set, in bands over threads;
    /// the float dy is not read.
    func testConvolutionReadsItsGradientAsHalves() {
        for (ca, cb, o, n, h, w) in [(16, 0, 16, 2, 9, 21), (8, 24, 9, 3, 4, 4), (16, 8, 7, 1, 30, 40)] {
            let s = Conv2dShape(inC: ca + cb, outC: o, kernel: 3, padding: 1), plane = h * w
            let a = random(n * ca * plane), b = random(n * cb * plane), weight = random(s.weightCount, scale: 0.3)
            let dyHalves = random(n * o * plane).map { cbf16_round($0) }, dy = dyHalves.map { cbf16_float($0) }
            for kernels in availableBF16Kernels {
                bf16Kernels = kernels
                for (threads, pixels) in [(1, 1 << 20), (3, 40), (2, 700)] {
                    setComputeThreads(threads)
                    let tuned = s.tuned(KernelTuning(directPixels: pixels))
                    func run(_ dy: UnsafePointer<Float>?, _ dyBF16: UnsafePointer<UInt16>?) -> [[Float]] {
                        var da = [Float](repeating: .nan, count: a.count), db = [Float](repeating: .nan, count: b.count)
                        var dw = [Float](repeating: 0, count: s.weightCount), dbias = [Float](repeating: 0, count: o)
                        if cb == 0 {
                            conv2dBackwardBF16(dxA: &da, dweight: &dw, dbias: &dbias, dy: dy, dyBF16: dyBF16, a,
                                               weight: weight, batch: n, height: h, width: w, tuned,
                                               workspace: Workspace())
                        } else {
                            conv2dBackwardBF16(dxA: &da, dxB: &db, dweight: &dw, dbias: &dbias, dy: dy,
                                               dyBF16: dyBF16, a, channelsA: ca, b, weight: weight, batch: n,
                                               height: h, width: w, tuned, workspace: Workspace())
                        }
                        return [da, db, dw, dbias]
                    }
                    let floats = run(dy, nil), fromHalves = dyHalves.withUnsafeBufferPointer { run(nil, $0.baseAddress) }
                    let what = "\(ca)+\(cb)->\(o) \(n)x\(h)x\(w), \(threads) threads, \(pixels) pixels, "
                        + String(cString: kernels.pointee.name)
                    XCTAssertFalse(floats[0].contains { $0.isNaN } || floats[3].contains { $0 == 0 }, what)
                    for (got, want) in zip(fromHalves, floats) {
                        XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), what)
                    }
                }
            }
        }
    }
}
