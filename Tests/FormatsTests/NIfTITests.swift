import Foundation
import Formats
import TestSupport
import XCTest

/// A NIfTI-1 file laid out byte by byte from the standard's field offsets, independent of the
/// reader and writer under test.
struct NIfTIBuilder {
    var dim: [Int16] = [3, 3, 4, 2, 1, 1, 1, 1]
    var datatype: Int16 = 16
    var bitpix: Int16 = 32
    var pixdim: [Float] = [1, 1, 1, 1, 0, 0, 0, 0]
    var voxOffset: Float = 352
    var slope: Float = 0, inter: Float = 0
    var qformCode: Int16 = 0, sformCode: Int16 = 0
    var quatern: [Float] = [0, 0, 0], qoffset: [Float] = [0, 0, 0]
    var srow: [[Float]] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    var magic = "n+1\0"
    var sizeofHdr: Int32 = 348
    var bigEndian = false

    func header() -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 352)
        func put(_ bytes: [UInt8], _ at: Int) { h.replaceSubrange(at ..< at + bytes.count, with: bytes) }
        put(encode(sizeofHdr), 0)
        for (n, d) in dim.enumerated() { put(encode(d), 40 + 2 * n) }
        put(encode(datatype), 70); put(encode(bitpix), 72)
        for (n, p) in pixdim.enumerated() { put(encode(p), 76 + 4 * n) }
        put(encode(voxOffset), 108); put(encode(slope), 112); put(encode(inter), 116)
        put(encode(qformCode), 252); put(encode(sformCode), 254)
        for (n, q) in (quatern + qoffset).enumerated() { put(encode(q), 256 + 4 * n) }
        for (r, row) in srow.enumerated() { for (c, v) in row.enumerated() { put(encode(v), 280 + 16 * r + 4 * c) } }
        put(Array(magic.utf8), 344)
        return h
    }

    func file(_ payload: [UInt8]) -> Data { Data(header() + payload) }

    func encode<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian) { Array($0) } }
    func encode(_ v: Float) -> [UInt8] { encode(v.bitPattern) }
    func encode(_ v: Double) -> [UInt8] { encode(v.bitPattern) }
    func payload<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] { values.flatMap { encode($0) } }
    func payload(_ values: [Float]) -> [UInt8] { values.flatMap { encode($0) } }
    func payload(_ values: [Double]) -> [UInt8] { values.flatMap { encode($0) } }
}

final class NIfTITests: XCTestCase {
    var dirs: [String] = []
    override func tearDown() { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
    func tempDir() throws -> String { let d = try makeTemporaryDirectory("nifti"); dirs.append(d); return d }

    /// The voxel value at (i, j, k) of a 3 x 4 x 2 test volume: all distinct, so any mix-up of
    /// axes or order shows.
    func f(_ i: Int, _ j: Int, _ k: Int) -> Int { i + 3 * j + 12 * k }
    /// The test volume in file order: x fastest, then y, then z.
    var fileOrder: [Int] { (0..<2).flatMap { k in (0..<4).flatMap { j in (0..<3).map { i in f(i, j, k) } } } }

    func assertVoxels(_ v: NIfTIVolume, _ expected: (Int, Int, Int) -> Double, accuracy: Float = 0,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(v.dims, [3, 4, 2], file: file, line: line)
        for k in 0..<2 { for j in 0..<4 { for i in 0..<3 {
            XCTAssertEqual(v[i, j, k], Float(expected(i, j, k)), accuracy: accuracy, "voxel (\(i), \(j), \(k))", file: file, line: line)
        } } }
    }

    func testEachDatatypeReadsTheStoredVoxelsXFastest() throws {
        var b = NIfTIBuilder()
        let cases: [(Int16, Int16, [UInt8], (Int, Int, Int) -> Double)] = [
            (2, 8, b.payload(fileOrder.map { UInt8($0 * 10) }), { Double(self.f($0, $1, $2) * 10) }),
            (256, 8, b.payload(fileOrder.map { Int8($0 - 12) }), { Double(self.f($0, $1, $2) - 12) }),
            (4, 16, b.payload(fileOrder.map { Int16($0 * -1000) }), { Double(self.f($0, $1, $2) * -1000) }),
            (512, 16, b.payload(fileOrder.map { UInt16($0 * 2000) }), { Double(self.f($0, $1, $2) * 2000) }),
            (8, 32, b.payload(fileOrder.map { Int32($0 * 100_000 - 7) }), { Double(self.f($0, $1, $2) * 100_000 - 7) }),
            (16, 32, b.payload(fileOrder.map { Float($0) * 0.25 - 1 }), { Double(self.f($0, $1, $2)) * 0.25 - 1 }),
            (64, 64, b.payload(fileOrder.map { Double($0) * 1e-3 }), { Double(self.f($0, $1, $2)) * 1e-3 }),
        ]
        for (type, bits, payload, expected) in cases {
            b.datatype = type; b.bitpix = bits
            let v = try NIfTIVolume(data: b.file(payload), path: "t.nii")
            XCTAssertEqual(v.datatype.rawValue, Int(type))
            assertVoxels(v, expected, accuracy: 1e-6)
        }
        // A 4-D header with one time point is a 3-D volume; a 2-D file gets a trailing 1.
        b = NIfTIBuilder(dim: [4, 3, 4, 2, 1, 1, 1, 1], datatype: 2, bitpix: 8)
        assertVoxels(try NIfTIVolume(data: b.file(b.payload(fileOrder.map(UInt8.init))), path: "t.nii")) { Double(self.f($0, $1, $2)) }
        b = NIfTIBuilder(dim: [2, 3, 4, 0, 0, 0, 0, 0], datatype: 2, bitpix: 8)
        XCTAssertEqual(try NIfTIVolume(data: b.file(b.payload((0..<12).map(UInt8.init))), path: "t.nii").dims, [3, 4, 1])
    }

    func testScaleSlopeAndInterceptApplyWhereTheSlopeIsNonzeroAndFinite() throws {
        var b = NIfTIBuilder(datatype: 4, bitpix: 16, slope: 0.5, inter: -10)
        let payload = b.payload(fileOrder.map(Int16.init))
        assertVoxels(try NIfTIVolume(data: b.file(payload), path: "t.nii")) { Double(self.f($0, $1, $2)) * 0.5 - 10 }
        for slope in [Float(0), .nan, .infinity] {
            b.slope = slope
            assertVoxels(try NIfTIVolume(data: b.file(payload), path: "t.nii")) { Double(self.f($0, $1, $2)) }
        }
    }

    func testBigEndianFiles() throws {
        var b = NIfTIBuilder(datatype: 4, bitpix: 16, slope: 2, inter: 1, bigEndian: true)
        b.qformCode = 1; b.quatern = [0, 0, 1]; b.qoffset = [5, 6, 7]; b.pixdim = [1, 2, 3, 4, 0, 0, 0, 0]
        let v = try NIfTIVolume(data: b.file(b.payload(fileOrder.map { Int16($0 * 300) })), path: "be.nii")
        assertVoxels(v) { Double(self.f($0, $1, $2) * 600 + 1) }
        // 180 degrees about z: x and y change sign.
        XCTAssertEqual(v.affine, [[-2, 0, 0, 5], [0, -3, 0, 6], [0, 0, 4, 7], [0, 0, 0, 1]])
        b.datatype = 64; b.bitpix = 64; b.slope = 0
        assertVoxels(try NIfTIVolume(data: b.file(b.payload(fileOrder.map { Double($0) / 8 })), path: "be.nii")) {
            Double(self.f($0, $1, $2)) / 8
        }
    }

    func testGzipFilesFromTheSystemGzipIncludingSeveralMembers() throws {
        let dir = try tempDir()
        let b = NIfTIBuilder(datatype: 16, bitpix: 32)
        let nii = b.file(b.payload(fileOrder.map { Float($0) + 0.5 }))
        try nii.write(to: URL(fileURLWithPath: dir + "/a.nii"))
        // Two gzip members, as `cat part1.gz part2.gz` makes: one stream to a reader.
        try nii.prefix(200).write(to: URL(fileURLWithPath: dir + "/p1"))
        try nii.dropFirst(200).write(to: URL(fileURLWithPath: dir + "/p2"))
        let r = try shell("cd \(dir) && gzip -c a.nii > a.nii.gz && gzip -c p1 > two.nii.gz && gzip -c p2 >> two.nii.gz")
        XCTAssertEqual(r.status, 0, r.stderr)
        for name in ["a.nii", "a.nii.gz", "two.nii.gz"] {
            assertVoxels(try NIfTIVolume(path: dir + "/" + name)) { Double(self.f($0, $1, $2)) + 0.5 }
        }
    }

    func testSformIsPreferredThenQformThenPixdim() throws {
        var b = NIfTIBuilder(datatype: 2, bitpix: 8, pixdim: [-1, 2, 3, 4, 0, 0, 0, 0])
        b.sformCode = 2; b.srow = [[2, 0, 0.1, -90], [0, 3, 0, -126], [0, 0, 4, -72]]
        b.qformCode = 1; b.quatern = [0, 0, 0.5]
        let payload = b.payload(fileOrder.map(UInt8.init))
        XCTAssertEqual(try NIfTIVolume(data: b.file(payload), path: "t.nii").affine,
                       [[2, 0, Double(Float(0.1)), -90], [0, 3, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
        XCTAssertEqual(try NIfTIVolume(data: b.file(payload), path: "t.nii").pixdim, [2, 3, 4])

        // qform: 90 degrees about z is the unit quaternion (cos 45°, 0, 0, sin 45°); qfac -1 flips z.
        b.sformCode = 0
        b.quatern = [0, 0, Float(0.5.squareRoot())]; b.qoffset = [10, -20, 30]
        let q = try NIfTIVolume(data: b.file(payload), path: "t.nii").affine
        let expected: [[Double]] = [[0, -3, 0, 10], [2, 0, 0, -20], [0, 0, -4, 30], [0, 0, 0, 1]]
        for r in 0..<4 { for c in 0..<4 { XCTAssertEqual(q[r][c], expected[r][c], accuracy: 1e-6, "qform [\(r)][\(c)]") } }

        b.qformCode = 0
        XCTAssertEqual(try NIfTIVolume(data: b.file(payload), path: "t.nii").affine,
                       [[2, 0, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0], [0, 0, 0, 1]])
    }

    func testWriterRoundTripsAndTheSystemGzipReadsItsFiles() throws {
        let dir = try tempDir()
        let affine: [[Double]] = [[0, 0, -1.5, 40], [2, 0, 0, -30], [0, 1, 0, 12], [0, 0, 0, 1]]
        let values = fileOrder.map { Float($0) * 7.25 }
        let volume = NIfTIVolume(dims: [3, 4, 2], values: values, affine: affine)
        try volume.writeGzip(to: dir + "/f.nii.gz")
        try volume.writeGzip(to: dir + "/u.nii.gz", as: .uint8)
        let f = try NIfTIVolume(path: dir + "/f.nii.gz"), u = try NIfTIVolume(path: dir + "/u.nii.gz")
        XCTAssertEqual(f.values, values)
        XCTAssertEqual(f.datatype, .float32)
        XCTAssertEqual(f.affine, affine)
        XCTAssertEqual(f.pixdim, [2, 1, 1.5])
        XCTAssertEqual(u.datatype, .uint8)
        XCTAssertEqual(u.values, values.map { min(255, $0.rounded()) })
        XCTAssertEqual(u.affine, affine)
        let r = try shell("cd \(dir) && gzip -dc f.nii.gz > f.nii")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try NIfTIVolume(path: dir + "/f.nii").values, values)
    }

    func testBadFilesGiveOneLineErrorsNamingTheFile() throws {
        let good = NIfTIBuilder(datatype: 2, bitpix: 8)
        let payload = good.payload(fileOrder.map(UInt8.init))
        func variant(_ change: (inout NIfTIBuilder) -> Void) -> Data { var b = good; change(&b); return b.file(payload) }
        let complete = good.file(payload)
        var corruptGzip = try gzipCompress(complete)
        corruptGzip[corruptGzip.count - 8] ^= 0xFF  // the CRC-32 of the trailer
        // The same after bytes the reader does not need: the whole stream is still checked.
        var corruptTail = try gzipCompress(complete + Data(repeating: 7, count: 100))
        corruptTail[corruptTail.count - 8] ^= 0xFF
        let cases: [(Data, String)] = [
            (Data(), "not a NIfTI file (0 bytes)"),
            (Data("hello, world".utf8), "not a NIfTI-1 file (sizeof_hdr is 1819043176, expected 348)"),
            (complete.prefix(200), "truncated NIfTI-1 header (200 of 348 bytes)"),
            (variant { $0.magic = "xyz\0" }, "bad NIfTI-1 magic 78 79 7a 00 (expected \"n+1\")"),
            (variant { $0.magic = "ni1\0" }, "a NIfTI-1 .hdr/.img pair: only single-file .nii/.nii.gz is supported"),
            (variant { $0.sizeofHdr = 540 }, "a NIfTI-2 file: only NIfTI-1 is supported"),
            (variant { $0.datatype = 32 }, "unsupported NIfTI datatype 32 (complex64)"),
            (variant { $0.datatype = 3 }, "unsupported NIfTI datatype 3"),
            (variant { $0.dim = [4, 3, 4, 2, 5, 1, 1, 1] }, "has 4 dimensions 3x4x2x5: only 3-D volumes are supported"),
            (variant { $0.dim = [0, 3, 4, 2, 1, 1, 1, 1] }, "bad NIfTI dim[0] = 0 (1 to 7 expected)"),
            (variant { $0.dim = [3, 3, -4, 2, 1, 1, 1, 1] }, "bad NIfTI dim[2] = -4"),
            (variant { $0.voxOffset = .nan }, "bad NIfTI vox_offset nan"),
            (variant { $0.voxOffset = 100 }, "bad NIfTI vox_offset 100.0 (inside the header)"),
            (complete.dropLast(5), "truncated NIfTI data: 3x4x2 uint8 from byte 352 needs 376 bytes, file has 371"),
            // A header claiming 32767³ float64 voxels over 24 bytes of data: an error, not 281 TB.
            (variant { $0.dim = [3, 32767, 32767, 32767, 1, 1, 1, 1]; $0.datatype = 64 },
             "truncated NIfTI data: 32767x32767x32767 float64 from byte 352 needs 281449207693656 bytes, file has 376"),
            (try gzipCompress(variant { $0.dim = [3, 32767, 32767, 32767, 1, 1, 1, 1]; $0.datatype = 64 }),
             "truncated NIfTI data: 32767x32767x32767 float64 from byte 352 needs 281449207693656 bytes, file has 376"),
            (try gzipCompress(complete).dropLast(12), "truncated gzip stream"),
            (corruptGzip, "corrupt gzip data (incorrect data check)"),
            (corruptTail, "corrupt gzip data (incorrect data check)"),
        ]
        for (data, message) in cases {
            XCTAssertThrowsError(try NIfTIVolume(data: data, path: "dir/bad.nii")) { e in
                XCTAssertTrue("\(e)".hasPrefix("dir/bad.nii: " + message), "\(e) (expected \(message))")
                XCTAssertFalse("\(e)".contains("\n"))
            }
        }
        XCTAssertThrowsError(try NIfTIVolume(path: "/nonexistent/x.nii.gz")) { XCTAssertEqual("\($0)", "/nonexistent/x.nii.gz: no such file") }
    }
}

/// Slicing helpers: orientation, padding, resampling and labels.
final class SlicingTests: XCTestCase {
    func testBilinearResizeMatchesPyTorchAlignCornersFalse() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=4, mode="bilinear")
        let up = resizeBilinear(Image2D(height: 2, width: 2, pixels: [1, 2, 3, 4]), size: 4)
        XCTAssertEqual(up.pixels, [1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4])
        // Halving averages 2 x 2 blocks; the same size is the identity.
        let four = Image2D(height: 4, width: 4, pixels: (0..<16).map(Float.init))
        XCTAssertEqual(resizeBilinear(four, size: 2).pixels, [2.5, 4.5, 10.5, 12.5])
        XCTAssertEqual(resizeBilinear(four, size: 4), four)
        // 3 -> 2: source centers at 0.25 and 1.75.
        let row = resizeBilinear(Image2D(height: 3, width: 3, pixels: [0, 4, 8, 0, 4, 8, 0, 4, 8]), size: 2)
        XCTAssertEqual(row.pixels, [1, 7, 1, 7])
    }

    /// Against PyTorch's F.interpolate(mode="bicubic", align_corners=False)
    /// (Tests/Fixtures/bicubic_resize.json, made by tools/make_resize_fixtures.py).
    func testBicubicResizeMatchesPyTorch() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/bicubic_resize.json"))
        let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let cases = try XCTUnwrap(root["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 6)
        for (k, c) in cases.enumerated() {
            let image = Image2D(height: c["height"] as! Int, width: c["width"] as! Int,
                                pixels: (c["pixels"] as! [Double]).map(Float.init))
            let expected = (c["out"] as! [Double]).map(Float.init)
            let out = resizeBicubic(image, height: c["out_height"] as! Int, width: c["out_width"] as! Int)
            XCTAssertEqual(out.pixels.count, expected.count, "case \(k)")
            let worst = zip(out.pixels, expected).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 1e-5, "case \(k)")
        }
        // The same size is the identity, and a constant stays constant (the weights sum to 1).
        let ramp = Image2D(height: 3, width: 5, pixels: (0..<15).map { Float($0 * $0) })
        XCTAssertEqual(resizeBicubic(ramp, height: 3, width: 5), ramp)
        let flat = resizeBicubic(Image2D(height: 4, width: 4, pixels: [Float](repeating: 2, count: 16)), height: 7, width: 9)
        XCTAssertLessThan(flat.pixels.map { abs($0 - 2) }.max()!, 1e-5)
        XCTAssertEqual(flat.pixels.count, 63)
    }

    func testPadToSquarePutsTheOddPixelAtTheBottomAndRight() {
        let tall = padToSquare(Image2D(height: 3, width: 2, pixels: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(tall.pixels, [1, 2, 0, 3, 4, 0, 5, 6, 0])
        let wide = padToSquare(Image2D(height: 1, width: 4, pixels: [1, 2, 3, 4]))
        XCTAssertEqual(wide.pixels, [0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0])
        let even = padToSquare(Image2D(height: 2, width: 4, pixels: [1, 2, 3, 4, 5, 6, 7, 8]))
        XCTAssertEqual(even.pixels, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0])
    }

    func testVoxelAxesFollowTheAffine() {
        let plain = VoxelOrientation(affine: NIfTIVolume.identity)
        XCTAssertEqual(plain.voxelAxis, [0, 1, 2])
        XCTAssertEqual(plain.reversed, [false, false, false])
        // Voxel i runs along -z, j along x, k along y, slightly oblique.
        let o = VoxelOrientation(affine: [[0.1, 2, 0, 0], [0, 0.2, 1, 0], [-3, 0, 0.3, 0]])
        XCTAssertEqual(o.voxelAxis, [1, 2, 0])
        XCTAssertEqual(o.reversed, [false, false, true])
    }

    func testSlicesComeOutInDisplayOrientation() {
        // value = x + 10 y + 100 z over a 2 x 3 x 4 grid with the identity affine.
        let dims = [2, 3, 4]
        var values: [Float] = []
        for z in 0..<4 { for y in 0..<3 { for x in 0..<2 { values.append(Float(x + 10 * y + 100 * z)) } } }
        func slice(_ axis: SliceAxis, _ index: Int) -> Image2D {
            SliceGeometry(axis: axis, dims: dims, affine: NIfTIVolume.identity).extract(values, index: index)
        }
        // Axial z = 1: rows from anterior (high y) down, columns from low x.
        XCTAssertEqual(slice(.axial, 1), Image2D(height: 3, width: 2, pixels: [120, 121, 110, 111, 100, 101]))
        // Coronal y = 2: rows from superior (high z) down, columns x.
        XCTAssertEqual(slice(.coronal, 2), Image2D(height: 4, width: 2, pixels: [320, 321, 220, 221, 120, 121, 20, 21]))
        // Sagittal x = 1: rows z from the top, columns y from posterior.
        XCTAssertEqual(slice(.sagittal, 1), Image2D(height: 4, width: 3, pixels: [301, 311, 321, 201, 211, 221, 101, 111, 121, 1, 11, 21]))
    }

    func testLabelsAreTheArgmaxWithTiesToTheLowerClass() {
        XCTAssertEqual(tissueLabels(wm: [0.6, 0.2, 0.1, 0.375, 0.25, 0.25], gm: [0.25, 0.5, 0.1, 0.375, 0.375, 0.5]),
                       [0, 1, 2, 0, 1, 1])
    }

    func testShuffleIsAFixedPermutation() {
        var a = SeededGenerator(seed: 0), b = SeededGenerator(seed: 0)
        let p = shuffledPositions(50, using: &a)
        XCTAssertEqual(p, shuffledPositions(50, using: &b))
        XCTAssertEqual(p.sorted(), Array(0..<50))
        XCTAssertNotEqual(p, Array(0..<50))
    }
}

/// SplitMix64 (Kernels' generator, which this test target does not link).
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
