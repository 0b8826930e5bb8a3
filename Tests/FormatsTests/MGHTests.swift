import Foundation
import Formats
import TestSupport
import XCTest

/// An MGH header laid out byte by byte from the format's field offsets, independent of the reader.
struct MGHBuilder {
    var version: Int32 = 1
    var dims: [Int32] = [3, 4, 2, 1]
    var type: Int32 = 3
    var goodRAS: Int16 = 1
    var delta: [Float] = [1, 1, 1]
    var mdc: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    var centre: [Float] = [0, 0, 0]

    func header() -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 284)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            withUnsafeBytes(of: v.bigEndian) { h.replaceSubrange(at ..< at + $0.count, with: $0) }
        }
        put(version, 0)
        for (n, d) in dims.enumerated() { put(d, 4 + 4 * n) }
        put(type, 20)
        put(goodRAS, 28)
        for (n, v) in (delta + mdc + centre).enumerated() { put(v.bitPattern, 30 + 4 * n) }
        return h
    }

    func file(floats: [Float]) -> Data {
        Data(header() + floats.flatMap { v in withUnsafeBytes(of: v.bitPattern.bigEndian) { Array($0) } })
    }
}

final class MGHTests: XCTestCase {
    let directory = fixturesDirectory + "/mgh"

    /// Every fixture as nibabel reads it (tools/make_mgh_fixtures.py): the same voxels, bit for bit
    /// after conversion to Float, and the same affine.
    func testFixturesMatchNibabel() throws {
        let json = try JSONSerialization.jsonObject(with: try readFile(directory + "/expected.json")) as! [String: Any]
        XCTAssertEqual(Set(json.keys), ["uchar.mgz", "short.mgz", "int.mgz", "float.mgz", "ushort.mgz", "float.mgh",
                                        "test.mgz"])
        var types: Set<MGHVolume.DataType> = []
        for (name, entry) in json {
            let e = entry as! [String: Any]
            let v = try MGHVolume(path: "\(directory)/\(name)")
            types.insert(v.datatype)
            let shape = e["shape"] as! [Int]
            XCTAssertEqual(v.dims + (v.frames > 1 ? [v.frames] : []), shape, name)
            let expected = (e["values"] as! [Double]).map(Float.init)
            XCTAssertEqual(v.values.count, expected.count, name)
            let mismatches = zip(v.values, expected).filter { $0 != $1 }.count
            XCTAssertEqual(mismatches, 0, "\(name): voxels differ from nibabel's")
            let affine = e["affine"] as! [[Double]]
            for r in 0..<4 {
                for c in 0..<4 {
                    XCTAssertEqual(v.affine[r][c], affine[r][c], accuracy: 1e-5 * max(1, abs(affine[r][c])),
                                   "\(name): affine[\(r)][\(c)]")
                }
            }
        }
        XCTAssertEqual(types, Set(MGHVolume.DataType.allCases))
    }

    func testOneFrameVolumesReadByName() throws {
        let v = try readVolume(path: directory + "/short.mgz")
        XCTAssertEqual(v.dims, [5, 7, 3])
        XCTAssertEqual(v.datatype, .int16)
        XCTAssertEqual(v.spacing.map { ($0 * 1000).rounded() / 1000 }, [0.9, 1.2, 2.5])
        XCTAssertEqual(volumeStem("/data/sub-01/mri/T1.mgz"), "T1")
        XCTAssertEqual(volumeStem("aseg.MGH"), "aseg")
        XCTAssertEqual(volumeStem("T1w.nii.gz"), "T1w")
        XCTAssertThrowsError(try readVolume(path: directory + "/test.mgz")) { error in
            XCTAssertEqual("\(error)", "\(directory)/test.mgz: MGH volume has 2 frames: only 3-D volumes (1 frame) "
                           + "are supported")
        }
    }

    /// The default where the header has no orientation (nibabel's: 1 mm voxels about the origin).
    func testNoOrientationMeansConformedDefault() throws {
        var b = MGHBuilder()
        b.goodRAS = 0
        b.delta = [3, 3, 3]
        let v = try MGHVolume(data: b.file(floats: (0..<24).map(Float.init)), path: "v.mgh")
        XCTAssertEqual(v.affine, [[-1, 0, 0, 1.5], [0, 0, -1, 1], [0, 1, 0, -2], [0, 0, 0, 1]])
        XCTAssertEqual(v[1, 2, 1], Float(1 + 3 * 2 + 12 * 1))
    }

    func expectRefused(_ data: Data, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try MGHVolume(data: data, path: "v.mgz"), file: file, line: line) { error in
            XCTAssertEqual("\(error)", "v.mgz: " + message, file: file, line: line)
        }
    }

    func testCraftedHeadersAreRefusedInOneLine() throws {
        let payload = [Float](repeating: 1, count: 24)
        var b = MGHBuilder()
        expectRefused(Data(b.header().prefix(100)), "truncated MGH header (100 of 284 bytes)")
        b.version = 2
        expectRefused(b.file(floats: payload), "not an MGH file (version 2, expected 1)")
        b = MGHBuilder()
        b.dims = [3, 0, 2, 1]
        expectRefused(b.file(floats: payload), "bad MGH height 0 (1 to 65536 expected)")
        b.dims = [3, 4, 2, -1]
        expectRefused(b.file(floats: payload), "bad MGH frames -1 (1 to 65536 expected)")
        b.dims = [3, 4, 70000, 1]
        expectRefused(b.file(floats: payload), "bad MGH depth 70000 (1 to 65536 expected)")
        b = MGHBuilder()
        b.type = 2
        expectRefused(b.file(floats: payload), "unsupported MGH data type 2 (long)")
        b.type = 77
        expectRefused(b.file(floats: payload), "unsupported MGH data type 77")
        b = MGHBuilder()
        b.dims = [65536, 65536, 65536, 65536]
        expectRefused(b.file(floats: payload), "MGH dimensions 65536x65536x65536x65536 are too large "
                      + "(the size overflows 64 bits)")
        b.dims = [65536, 65536, 65536, 1]
        let huge = "truncated MGH data: 65536x65536x65536x1 float needs 1125899906842908 bytes, file has 380"
        expectRefused(b.file(floats: payload), huge)
        expectRefused(try gzipCompress(b.file(floats: payload)), huge)
        b = MGHBuilder()
        b.delta = [1, 0, 1]
        expectRefused(b.file(floats: payload), "bad MGH voxel size 1.0 x 0.0 x 1.0 (positive and finite expected)")
        b = MGHBuilder()
        b.centre = [0, .nan, 0]
        expectRefused(b.file(floats: payload), "MGH orientation (direction cosines or centre) is not finite")
        let good = try gzipCompress(MGHBuilder().file(floats: payload))
        XCTAssertNoThrow(try MGHVolume(data: good, path: "v.mgz"))
        XCTAssertThrowsError(try MGHVolume(data: good.prefix(good.count - 6), path: "v.mgz")) { error in
            XCTAssertTrue("\(error)".hasPrefix("v.mgz: truncated gzip stream") || "\(error)".contains("corrupt gzip"),
                          "\(error)")
        }
    }
}
