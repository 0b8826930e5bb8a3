import Foundation
import Kernels
import XCTest

/// The kernels that split work over compute threads (and bands of rows) give the one-thread,
/// one-band results (which the fixture and finite-difference tests check) up to rounding.
final class ThreadedKernelTests: XCTestCase {
    var rng = SplitMix64(seed: 7)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    func assertClose(_ a: [Float], _ b: [Float], _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, name, file: file, line: line)
        let norm = (b.reduce(0.0) { $0 + Double($1 * $1) }).squareRoot()
        let diff = (zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }).squareRoot()
        XCTAssertLessThanOrEqual(diff, 1e-5 * norm + 1e-7, name, file: file, line: line)
    }

    /// (threads, band floats) settings to compare, the first being the reference.
    let settings = [(1, 1 << 18), (2, 1 << 18), (1, 64), (3, 64), (2, 200)]

    override func tearDown() { setComputeThreads(1) }

    /// torch.cat([a, b], 1) of NCHW tensors with `sa` and `sb` floats per image.
    func interleave(_ a: [Float], _ sa: Int, _ b: [Float], _ sb: Int, images: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<images {
            out.append(contentsOf: a[(i * sa)..<((i + 1) * sa)])
            out.append(contentsOf: b[(i * sb)..<((i + 1) * sb)])
        }
        return out
    }

    /// An up block's convolution over torch.cat([a, b], 1) read where a and b lie equals the
    /// convolution of the materialized concatenation, in grouped, banded and threaded settings.
    func testConvolutionOfAConcatenationNeverStored() {
        let shape = Conv2dShape(inC: 5, outC: 4, kernel: 3, padding: 1)
        let ca = 2, cb = 3, n = 3, h = 9, w = 7, plane = h * w
        let a = random(n * ca * plane), b = random(n * cb * plane)
        let joined = interleave(a, ca * plane, b, cb * plane, images: n)
        let weight = random(shape.weightCount, scale: 0.3), bias = random(4), dy = random(n * 4 * plane)
        for (threads, band, columns) in [(1, 1 << 18, 512), (2, 40, 1), (3, 1 << 18, 1), (1, 60, 8)] {
            setComputeThreads(threads)
            let conv = shape.tuned(KernelTuning(bandFloats: band, minBandColumns: columns))
            let ws = Workspace()
            var y = [Float](repeating: 0, count: dy.count), ySplit = y
            conv2dForward(&y, joined, weight: weight, bias: bias, batch: n, height: h, width: w, conv, workspace: ws)
            conv2dForwardConcat(&ySplit, a, channelsA: ca, b, weight: weight, bias: bias, batch: n, height: h, width: w,
                                conv, workspace: ws)
            var dx = [Float](repeating: 0, count: joined.count), dw = [Float](repeating: 0, count: weight.count)
            var db = [Float](repeating: 0, count: 4)
            conv2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: joined, weight: weight, batch: n, height: h,
                           width: w, conv, workspace: ws)
            var da = [Float](repeating: 9, count: a.count), dbb = [Float](repeating: 9, count: b.count)
            var dw2 = [Float](repeating: 0, count: weight.count), db2 = [Float](repeating: 0, count: 4)
            conv2dBackwardConcat(da: &da, db: &dbb, dweight: &dw2, dbias: &db2, dy: dy, a, channelsA: ca, b,
                                 weight: weight, batch: n, height: h, width: w, conv, workspace: ws)
            let dxSplit = interleave(da, ca * plane, dbb, cb * plane, images: n)
            let setting = "\(threads) threads, band \(band), \(columns) columns"
            assertClose(ySplit, y, "y, " + setting)
            assertClose(dxSplit, dx, "dx, " + setting)
            assertClose(dw2, dw, "dw, " + setting)
            assertClose(db2, db, "db, " + setting)
        }
    }

    /// The ResNet's convolutions that are not banded (stride 2, 7x7, 1x1), whole images over the
    /// threads, and a banded one with wide, narrow and cache-sized bands.
    func testStridedPointwiseAndWideBandConvolutions() {
        let shapes = [Conv2dShape(inC: 3, outC: 4, kernel: 7, stride: 2, padding: 3),
                      Conv2dShape(inC: 4, outC: 6, kernel: 3, stride: 2, padding: 1),
                      Conv2dShape(inC: 4, outC: 6, kernel: 1, stride: 2),
                      Conv2dShape(inC: 6, outC: 3, kernel: 1),
                      Conv2dShape(inC: 6, outC: 5, kernel: 3, padding: 1)]
        for shape in shapes {
            let conv = shape
            let xs = Shape(5, conv.inC, 13, 9), ys = conv.outputShape(xs)
            let x = random(xs.count), w = random(conv.weightCount, scale: 0.3), b = random(conv.outC), dy = random(ys.count)
            var reference: [[Float]] = []
            for (threads, columns) in [(1, 512), (2, 512), (3, 1), (2, 40), (1, 100_000)] {
                setComputeThreads(threads)
                let conv = shape.tuned(KernelTuning(minBandColumns: columns))
                let ws = Workspace()
                var y = [Float](repeating: 0, count: ys.count)
                conv2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, conv, workspace: ws)
                var dx = [Float](repeating: 0, count: xs.count), dw = [Float](repeating: 0.5, count: w.count)
                var db = [Float](repeating: 0.25, count: conv.outC)
                conv2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, batch: xs.n, height: xs.h,
                               width: xs.w, conv, workspace: ws)
                let results = [y, dx, dw, db]
                if reference.isEmpty { reference = results; continue }
                for (i, (a, r)) in zip(results, reference).enumerated() {
                    assertClose(a, r, "\(conv): result \(i) with \(threads) threads, \(columns) columns")
                }
            }
        }
    }

    func testConvAndConvTransposeAndBatchNorm() {
        let shape = Conv2dShape(inC: 3, outC: 5, kernel: 3, padding: 1)
        let xs = Shape(3, 3, 11, 7), ys = shape.outputShape(xs)
        let x = random(xs.count), w = random(shape.weightCount, scale: 0.3), b = random(5), dy = random(ys.count)
        let up = ConvTranspose2dShape(inC: 5, outC: 2)
        let us = up.outputShape(ys)
        let wu = random(up.weightCount, scale: 0.3), bu = random(2), dyu = random(us.count)
        let bn = BatchNormShape(ys)
        let gamma = random(5), beta = random(5)
        var reference: [[Float]] = []
        for (threads, band) in settings {
            setComputeThreads(threads)
            let conv = shape.tuned(KernelTuning(bandFloats: band))
            let ws = Workspace()
            var y = [Float](repeating: 0, count: ys.count)
            conv2dForward(&y, x, weight: w, bias: b, batch: xs.n, height: xs.h, width: xs.w, conv, workspace: ws)
            var dx = [Float](repeating: 0, count: xs.count), dw = [Float](repeating: 0.5, count: w.count)
            var db = [Float](repeating: 0.25, count: 5)
            conv2dBackward(dx: &dx, dweight: &dw, dbias: &db, dy: dy, x: x, weight: w, batch: xs.n, height: xs.h,
                           width: xs.w, conv, workspace: ws)
            var u = [Float](repeating: 0, count: us.count)
            convTranspose2dForward(&u, y, weight: wu, bias: bu, batch: ys.n, height: ys.h, width: ys.w, up, workspace: ws)
            var du = [Float](repeating: 0, count: ys.count), dwu = [Float](repeating: 0.5, count: wu.count)
            var dbu = [Float](repeating: 0, count: 2)
            convTranspose2dBackward(dx: &du, dweight: &dwu, dbias: &dbu, dy: dyu, x: y, weight: wu, batch: ys.n,
                                    height: ys.h, width: ys.w, up, workspace: ws)
            var z = [Float](repeating: 0, count: ys.count), rm = [Float](repeating: 0, count: 5)
            var rv = [Float](repeating: 1, count: 5), mean = rm, invstd = rm
            var scratch = [Double](repeating: 0, count: 16)
            batchNormTrainForward(&z, y, weight: gamma, bias: beta, runningMean: &rm, runningVar: &rv, saveMean: &mean,
                                  saveInvstd: &invstd, bn, scratch: &scratch, relu: true)
            var dz = [Float](repeating: 0, count: ys.count), dg = [Float](repeating: 0, count: 5), dbeta = dg
            batchNormTrainBackward(dx: &dz, dweight: &dg, dbias: &dbeta, dy: dy, x: y, weight: gamma, saveMean: mean,
                                   saveInvstd: invstd, bn, count: Double(ys.n * ys.spatial), scratch: &scratch,
                                   reluBias: beta)
            // Pooling (odd sizes), pad and crop, the loss.
            let ph = 11, pw = 7, planes = xs.n * xs.c
            var pooled = [Float](repeating: 0, count: planes * (ph / 2) * (pw / 2))
            maxPool2Forward(&pooled, x, planes: planes, height: ph, width: pw)
            var dpool = [Float](repeating: 9, count: xs.count)
            maxPool2Backward(dx: &dpool, dy: pooled, x: x, planes: planes, height: ph, width: pw)
            var padded = [Float](repeating: 9, count: planes * (ph + 1) * (pw + 1))
            padTopLeftForward(&padded, x, planes: planes, height: ph, width: pw, top: 1, left: 1)
            var dpad = [Float](repeating: 9, count: xs.count)
            padTopLeftBackward(dx: &dpad, dy: padded, planes: planes, height: ph, width: pw, top: 1, left: 1)
            var cropped = [Float](repeating: 9, count: planes * (ph - 1) * (pw - 1))
            padTopLeftForward(&cropped, x, planes: planes, height: ph, width: pw, top: -1, left: -1)
            var dcrop = [Float](repeating: 9, count: xs.count)
            padTopLeftBackward(dx: &dcrop, dy: cropped, planes: planes, height: ph, width: pw, top: -1, left: -1)
            let targets = x.map { $0 > 0 ? Float(1) : 0 }
            var dlogits = [Float](repeating: 0, count: ys.count)
            let loss = bceWithLogits(dlogits: &dlogits, logits: y, targets: Array(targets.prefix(ys.count)) + [Float](repeating: 0, count: max(0, ys.count - targets.count)),
                                     count: ys.count, gradScale: 0.5)
            let results = [y, dx, dw, db, u, du, dwu, dbu, z, rm, rv, dz, dg, dbeta,
                           pooled, dpool, padded, dpad, cropped, dcrop, dlogits, [Float(loss)]]
            if reference.isEmpty { reference = results; continue }
            for (i, (a, r)) in zip(results, reference).enumerated() {
                assertClose(a, r, "result \(i) with \(threads) threads, band \(band)")
            }
        }
    }

    /// The worker pool runs every chunk once: for each thread count in turn, for a loop started
    /// inside another (which runs on its caller), and for loops started from two threads at once.
    func testWorkerPoolRunsEveryChunkOnce() {
        for threads in [2, 3, 1, 4, 2] {
            setComputeThreads(threads)
            var hits = [Int](repeating: 0, count: 1000)
            hits.withUnsafeMutableBufferPointer { h in parallelFor(1000) { h[$0] += 1 } }
            XCTAssertEqual(hits, [Int](repeating: 1, count: 1000), "\(threads) threads")
            var nested = [Int](repeating: 0, count: 64)
            nested.withUnsafeMutableBufferPointer { h in
                parallelFor(8) { i in parallelFor(8) { j in h[i * 8 + j] += 1 } }
            }
            XCTAssertEqual(nested, [Int](repeating: 1, count: 64), "nested, \(threads) threads")
            var a = [Int](repeating: 0, count: 300), b = a
            a.withUnsafeMutableBufferPointer { pa in
                b.withUnsafeMutableBufferPointer { pb in
                    let both = [pa, pb]
                    DispatchQueue.concurrentPerform(iterations: 2) { k in
                        for _ in 0..<20 { parallelFor(300) { both[k][$0] += 1 } }
                    }
                }
            }
            XCTAssertEqual(a, [Int](repeating: 20, count: 300)); XCTAssertEqual(b, a)
        }
    }

    /// `parallelItems` runs every item once, and a thread that is done takes the items a slow
    /// one has not reached: here the caller's thread takes 10 ms an item, the workers none.
    func testParallelItemsTakesFromASlowThread() {
        for threads in [2, 3] {
            setComputeThreads(threads)
            let count = 30
            var ranBy = [Int](repeating: -1, count: count), runs = [Int](repeating: 0, count: count)
            ranBy.withUnsafeMutableBufferPointer { by in
                runs.withUnsafeMutableBufferPointer { r in
                    parallelItems(count) { thread, i in
                        if thread == 0 { usleep(10_000) }
                        by[i] = thread; r[i] += 1
                    }
                }
            }
            XCTAssertEqual(runs, [Int](repeating: 1, count: count), "\(threads) threads")
            XCTAssert(ranBy.allSatisfy { (0..<threads).contains($0) })
            let share0 = count / threads
            XCTAssertGreaterThan(ranBy[..<share0].filter { $0 != 0 }.count, 0,
                                 "\(threads) threads: none of the slow thread's items was taken: \(ranBy)")
        }
    }
}
