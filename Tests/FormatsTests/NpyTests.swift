import Foundation
import Formats
import XCTest

final class NpyTests: XCTestCase {
    /// A .npy file built byte by byte, as NumPy lays it out.
    func npy(version: UInt8, descr: String, shape: String, fortran: Bool = false, payload: [UInt8]) -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }"
        let lengthBytes = version == 1 ? 2 : 4
        while (10 + lengthBytes - 2 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0])
        let n = header.utf8.count
        for i in 0..<lengthBytes { d.append(UInt8((n >> (8 * i)) & 0xFF)) }
        d.append(contentsOf: Array(header.utf8))
        d.append(contentsOf: payload)
        return d
    }

    func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    func testVersionsOneTwoThreeReadFloat32() throws {
        let values: [Float] = [0, 0.5, -1.25, 3, 4, 5]
        for v: UInt8 in [1, 2, 3] {
            let a = try NpyArray(data: npy(version: v, descr: "<f4", shape: "(2, 3)", payload: bytes(values)), path: "x.npy")
            XCTAssertEqual(a.shape, [2, 3])
            XCTAssertEqual(a.floats(), values, "version \(v)")
        }
    }

    func testOtherDtypesAreConverted() throws {
        let d: [Double] = [1.5, -2, 3.25, 4]
        XCTAssertEqual(try NpyArray(data: npy(version: 1, descr: "<f8", shape: "(2, 2)", payload: bytes(d)), path: "").floats(),
                       [1.5, -2, 3.25, 4])
        let i16: [Int16] = [-3, 7, 300, 0]
        XCTAssertEqual(try NpyArray(data: npy(version: 1, descr: "<i2", shape: "(4,)", payload: bytes(i16)), path: "").floats(),
                       [-3, 7, 300, 0])
        let half: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x0000]  // 1, -2, 0.5, 0
        XCTAssertEqual(try NpyArray(data: npy(version: 1, descr: "<f2", shape: "(4,)", payload: bytes(half)), path: "").floats(),
                       [1, -2, 0.5, 0])
        let big: [UInt8] = [0x3F, 0x80, 0, 0, 0x40, 0, 0, 0]  // big-endian 1.0, 2.0
        XCTAssertEqual(try NpyArray(data: npy(version: 1, descr: ">f4", shape: "(2,)", payload: big), path: "").floats(), [1, 2])
    }

    func testFortranOrderIsTransposedToC() throws {
        // Column-major [[1, 2, 3], [4, 5, 6]] is stored 1 4 2 5 3 6.
        let stored: [Float] = [1, 4, 2, 5, 3, 6]
        let a = try NpyArray(data: npy(version: 1, descr: "<f4", shape: "(2, 3)", fortran: true, payload: bytes(stored)), path: "")
        XCTAssertEqual(a.floats(), [1, 2, 3, 4, 5, 6])
    }

    func testMasksAreClassLabels() throws {
        let a = try NpyArray(data: npy(version: 1, descr: "|u1", shape: "(4,)", payload: [0, 1, 2, 1]), path: "m.npy")
        XCTAssertEqual(try a.labels(classes: 3, path: "m.npy"), [0, 1, 2, 1])
        let bad = try NpyArray(data: npy(version: 1, descr: "|u1", shape: "(4,)", payload: [0, 1, 7, 1]), path: "m.npy")
        XCTAssertThrowsError(try bad.labels(classes: 3, path: "m.npy")) { e in
            XCTAssertEqual("\(e)", "m.npy: mask value 7.0 at element 2 is not a class in 0..2")
        }
    }

    func testBadFilesGiveOneLineNamingTheFile() {
        let cases: [(Data, String)] = [
            (Data([1, 2, 3]), "bad.npy: not a .npy file (bad magic)"),
            (npy(version: 1, descr: "<f4", shape: "(4, 4)", payload: [0, 0, 0, 0]),
             "bad.npy: truncated .npy data: [4, 4] <f4 needs 64 bytes, file has 4"),
            (npy(version: 1, descr: "<U8", shape: "(1,)", payload: Array(repeating: 0, count: 32)),
             "bad.npy: unsupported .npy dtype <U8 (numeric arrays only)"),
            (npy(version: 9, descr: "<f4", shape: "(1,)", payload: [0, 0, 0, 0]), "bad.npy: unsupported .npy version 9"),
        ]
        for (data, message) in cases {
            XCTAssertThrowsError(try NpyArray(data: data, path: "bad.npy")) { XCTAssertEqual("\($0)", message) }
        }
    }

    func testWriteThenReadRoundTrips() throws {
        let a = NpyArray(float32: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        let b = try NpyArray(data: a.encoded(), path: "")
        XCTAssertEqual(b.shape, [2, 3]); XCTAssertEqual(b.floats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual((a.encoded().count - 24) % 64, 0, "header padded to a multiple of 64")
    }

    func testReadsFilesWrittenByNumPy() throws {
        // The fixtures' .npy files were written by numpy.save.
        let img = try NpyArray(path: TestData.seeddata + "/MRIs/slice_000.npy")
        XCTAssertEqual(img.shape, [48, 48]); XCTAssertEqual(img.type, .float32)
        let mask = try NpyArray(path: TestData.seeddata + "/Segmentations/segm_000.npy")
        XCTAssertEqual(mask.type, .int(bytes: 1, signed: false))
        XCTAssertEqual(Set(try mask.labels(classes: 3, path: "")), [0, 1, 2])
    }
}

enum TestData {
    static let seeddata = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/seeddata").path
}
