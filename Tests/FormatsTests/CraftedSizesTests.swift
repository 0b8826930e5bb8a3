import Foundation
import Formats
import TestSupport
import XCTest

/// Headers that state sizes meant to fool a reader: each is refused with one line naming the file,
/// before anything of the stated size is allocated or read.
final class CraftedSizesTests: XCTestCase {
    func expectRefused(_ read: () throws -> Void, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try read(), file: file, line: line) { e in
            XCTAssertEqual("\(e)", message, file: file, line: line)
            XCTAssertTrue(e is FormatError, "\(type(of: e))", file: file, line: line)
        }
    }

    func testCheckedProduct() {
        XCTAssertEqual(checkedProduct([]), 1)
        XCTAssertEqual(checkedProduct([394, 394]), 155_236)
        XCTAssertEqual(checkedProduct([3_074_457_345_618_258_603, 6]), nil)
        XCTAssertEqual(checkedProduct([4_294_967_296, 4_294_967_296]), nil)
        XCTAssertEqual(checkedProduct([3, -2]), nil)
        XCTAssertEqual(checkedProduct([0, 7]), 0)
        // An empty dimension does not hide others whose product overflows (their strides would).
        XCTAssertEqual(checkedProduct([0, 4_294_967_296, 4_294_967_296]), nil)
        XCTAssertEqual(checkedByteCount([1 << 61], elementSize: 4), nil)
        XCTAssertEqual(checkedByteCount([1 << 60], elementSize: 4), 1 << 62)
    }

    func testNpyShapeWhoseProductWrapsAround() {
        expectRefused({ _ = try NpyArray(data: CraftedFile.wrappingNpy, path: "w.npy") },
                      "w.npy: .npy shape [3074457345618258603, 6] has a dimension of 3074457345618258603, above the largest image side 65536")
    }

    func testNpyShapeOfTwoHugeSides() {
        expectRefused({ _ = try NpyArray(data: CraftedFile.hugeNpy, path: "h.npy") },
                      "h.npy: .npy shape [4294967296, 4294967296] has a dimension of 4294967296, above the largest image side 65536")
    }

    func testNpySidesWithinBoundsWhoseProductOverflows() {
        // Each side allowed, together 2^64 elements.
        expectRefused({ _ = try NpyArray(data: CraftedFile.npy(shape: "(65536, 65536, 65536, 65536)"), path: "p.npy") },
                      "p.npy: .npy shape [65536, 65536, 65536, 65536] <f4 is too large (its size overflows 64 bits)")
        // Bytes: 2^62 elements of 8 bytes.
        expectRefused({ _ = try NpyArray(data: CraftedFile.npy(shape: "(65536, 65536, 65536, 16384)", descr: "<f8"), path: "p.npy") },
                      "p.npy: .npy shape [65536, 65536, 65536, 16384] <f8 is too large (its size overflows 64 bits)")
        // No elements at all, but strides past 2^64 (Fortran order computes them).
        expectRefused({ _ = try NpyArray(data: CraftedFile.npy(shape: "(65536, 65536, 65536, 65536, 0)"), path: "p.npy") },
                      "p.npy: .npy shape [65536, 65536, 65536, 65536, 0] <f4 is too large (its size overflows 64 bits)")
    }

    func testNpyShapeLargerThanTheFile() {
        expectRefused({ _ = try NpyArray(data: CraftedFile.npy(shape: "(65536, 65536)"), path: "t.npy") },
                      "t.npy: truncated .npy data: [65536, 65536] <f4 needs 17179869184 bytes, file has 64")
    }

    func testNpyEmptyArrayOfAllowedSidesReads() throws {
        let a = try NpyArray(data: CraftedFile.npy(shape: "(65536, 0)", payload: 0), path: "e.npy")
        XCTAssertEqual(a.shape, [65536, 0])
        XCTAssertEqual(a.count, 0)
        XCTAssertEqual(a.floats(), [])
    }

    func testSafetensorsShapeWhoseProductOverflows() {
        expectRefused({ _ = try SafeTensors(data: CraftedFile.overflowingSafetensors, path: "o.safetensors") },
                      "o.safetensors: tensor conv1.0.0.weight: shape [4294967296, 4294967296, 16] is too large (its size overflows 64 bits)")
    }

    func testSafetensorsShapeWhoseProductWrapsToItsByteCount() {
        // (2^62 + 1) x 4 float32 wraps around to 16 bytes, which the file holds.
        let file = CraftedFile.safetensors(header: #"{"w":{"dtype":"F32","shape":[4611686018427387905,4],"data_offsets":[0,16]}}"#, data: 16)
        expectRefused({ _ = try SafeTensors(data: file, path: "o.safetensors") },
                      "o.safetensors: tensor w: shape [4611686018427387905, 4] is too large (its size overflows 64 bits)")
    }

    func testSafetensorsBadOffsetsAndNegativeShapes() {
        let cases = [
            (#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#, "tensor w has a bad shape [-4] or data_offsets [0, 16]"),
            (#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#, "tensor w has a bad shape [4] or data_offsets [16, 0]"),
            (#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}}"#, "tensor w has a bad shape [4] or data_offsets [-16, 0]"),
            (#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,9223372036854775807]}}"#,
             "tensor w: shape [4] does not match its 9223372036854775807 bytes"),
        ]
        for (header, message) in cases {
            expectRefused({ _ = try SafeTensors(data: CraftedFile.safetensors(header: header, data: 16), path: "b.safetensors") },
                          "b.safetensors: " + message)
        }
    }

    func testNIfTIWhoseDimsMultiplyPastTheFile() throws {
        let message = "truncated NIfTI data: 32767x32767x32767 int16 from byte 352 needs 70362301923678 bytes, file has 1376"
        expectRefused({ _ = try NIfTIVolume(data: CraftedFile.hugeNIfTI, path: "v.nii") }, "v.nii: " + message)
        let gz = try gzipCompress(CraftedFile.hugeNIfTI)
        expectRefused({ _ = try NIfTIVolume(data: gz, path: "v.nii.gz") }, "v.nii.gz: " + message)
    }

    func testSamplesSmallerThanTheModelsTakeAreRefused() throws {
        let dir = try makeTemporaryDirectory("crafted")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for sub in ["MRIs", "Segmentations"] { try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true) }
        let image = dir + "/MRIs/x_000.npy", mask = dir + "/Segmentations/segm_000.npy"
        for (h, w, ok) in [(4, 48, false), (48, 7, false), (0, 48, false), (8, 8, true)] {
            try NpyArray(float32: [Float](repeating: 0.5, count: h * w), shape: [h, w]).encoded().write(to: URL(fileURLWithPath: image))
            try NpyArray(uint8: [UInt8](repeating: 2, count: h * w), shape: [h, w]).encoded().write(to: URL(fileURLWithPath: mask))
            let pair = try SeedDataset(directory: dir).pairs[0]
            if ok {
                XCTAssertEqual(try Sample(pair, classes: 3).labels.count, h * w)
            } else {
                expectRefused({ _ = try Sample(pair, classes: 3) },
                              "\(pair.image): image is \(h)x\(w), smaller than the 8x8 the models take")
            }
        }
    }

    /// What a file that was read holds agrees with its shape, element for element.
    func testReadShapesAgreeWithTheValues() throws {
        let a = try NpyArray(data: CraftedFile.npy(shape: "(2, 8)", payload: 64), path: "a.npy")
        XCTAssertEqual(a.count, 16)
        XCTAssertEqual(a.floats().count, 16)
        let st = try SafeTensors(data: CraftedFile.safetensors(header: #"{"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}"#, data: 12),
                                 path: "s.safetensors")
        XCTAssertEqual(try st.entry("w").count, 6)
        XCTAssertEqual(try st.floats("w").count, 6)
    }
}
