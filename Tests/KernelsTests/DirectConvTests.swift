import Kernels
import XCTest

/// The direct 3x3 kernels (CConv, AVX-512) against im2col + OpenBLAS, which the fixture and
/// finite-difference tests check against PyTorch: every output, input gradient, weight and bias
/// gradient, over shapes that reach the kernels' edges (rows narrower than, equal to and wider
/// than a vector, a last vector with one lane, output blocks of eight with a remainder, channel
/// counts padded to sixteen, one input channel), bands of rows, groups of images and threads.
final class DirectConvTests: XCTestCase {
    var rng = SplitMix64(seed: 11)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * rng.normal() } }

    override func tearDown() { directConvolution = directConvolutionAvailable; directPixels = 4096; setComputeThreads(1) }

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
        directConvolution = false
        setComputeThreads(1)
        let reference = run(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, split: split)
        directConvolution = true
        for (threads, pixels) in settings {
            setComputeThreads(threads); directPixels = pixels
            let r = run(s, n: n, h: h, w: w, x: x, weight: weight, bias: bias, dy: dy, split: split)
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
        guard directConvolutionAvailable else {
            // Without AVX-512 every convolution takes the GEMM path.
            directConvolution = true
            XCTAssertFalse(Conv2dShape(inC: 16, outC: 16, kernel: 3, padding: 1).runsDirect())
            return
        }
        // (in, out, batch, height, width)
        let shapes = [(1, 16, 2, 9, 8), (3, 5, 2, 7, 9), (8, 8, 3, 5, 5), (16, 3, 2, 6, 33), (18, 17, 2, 6, 33),
                      (20, 9, 1, 1, 17), (4, 24, 2, 2, 1), (33, 16, 2, 4, 16), (16, 40, 1, 17, 31), (70, 12, 2, 3, 5)]
        for (c, o, n, h, w) in shapes {
            compare(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: n, h: h, w: w, settings: settings)
        }
    }

    func testConcatenatedInputsAgainstGEMM() throws {
        guard directConvolutionAvailable else { return XCTAssertFalse(directConvolution) }
        // Splits on eight channels run the input gradient directly; 5 of 13 falls back for dx
        // only, as up blocks of odd widths do.
        for (c, split, o) in [(16, 8, 8), (32, 16, 16), (24, 8, 7), (13, 5, 6)] {
            compare(Conv2dShape(inC: c, outC: o, kernel: 3, padding: 1), n: 3, h: 7, w: 19, split: split,
                    settings: settings)
        }
    }

    /// The same inputs give the same bits on every run: nothing depends on scheduling.
    func testRepeatable() throws {
        guard directConvolutionAvailable else { return XCTAssertFalse(directConvolution) }
        directConvolution = true
        setComputeThreads(2); directPixels = 100
        let s = Conv2dShape(inC: 24, outC: 16, kernel: 3, padding: 1)
        let x = random(4 * 24 * 11 * 13), weight = random(s.weightCount), bias = random(16), dy = random(4 * 16 * 11 * 13)
        let first = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
        for _ in 0..<3 {
            let again = run(s, n: 4, h: 11, w: 13, x: x, weight: weight, bias: bias, dy: dy)
            XCTAssertEqual(again.y, first.y); XCTAssertEqual(again.dx, first.dx)
            XCTAssertEqual(again.dw, first.dw); XCTAssertEqual(again.db, first.db)
        }
    }
}
