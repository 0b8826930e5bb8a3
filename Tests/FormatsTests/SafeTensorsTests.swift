import Foundation
import Formats
import TestSupport
import XCTest

final class SafeTensorsTests: XCTestCase {
    func testRoundTripIsByteIdentical() throws {
        var st = SafeTensors()
        st.set("b.weight", floats: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        st.set("a.num_batches_tracked", int64s: [7], shape: [])
        st.metadata = ["epoch": "3", "config": "{\"lr\": 0.1, \"name\": \"x\\\"y\"}"]
        let bytes = st.encoded()
        let back = try SafeTensors(data: bytes, path: "t.safetensors")
        XCTAssertEqual(try back.floats("b.weight"), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try back.entry("b.weight").shape, [2, 3])
        XCTAssertEqual(try back.int64s("a.num_batches_tracked"), [7])
        XCTAssertEqual(back.metadata, st.metadata)
        XCTAssertEqual(back.encoded(), bytes)
        // Header length is a multiple of 8, as the reference implementation writes it.
        XCTAssertEqual(bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) } % 8, 0)
    }

    func testReadsAFileWrittenByPyTorch() throws {
        let st = try SafeTensors(path: fixturesDirectory + "/torch_trained.safetensors")
        XCTAssertEqual(try st.entry("conv1.0.0.weight").shape, [16, 1, 3, 3])
        XCTAssertEqual(try st.entry("deconv1.upsample.weight").shape, [128, 64, 2, 2])
        XCTAssertEqual(try st.int64s("conv1.0.1.num_batches_tracked").count, 1)
    }

    func testCorruptFilesAreRefusedWithTheirName() throws {
        var st = SafeTensors()
        st.set("w", floats: [1, 2, 3, 4], shape: [4])
        let good = st.encoded()
        let cases: [(Data, String)] = [
            (Data([1, 2]), "c.safetensors: not a safetensors file (shorter than its 8-byte header length)"),
            (good.prefix(good.count - 3), "c.safetensors: truncated: its tensors need 16 bytes of data, the file has 13"),
            (Data([200, 0, 0, 0, 0, 0, 0, 0]) + good.dropFirst(8),
             "c.safetensors: truncated or not a safetensors file (header of 200 bytes, file of \(good.count))"),
        ]
        for (data, message) in cases {
            XCTAssertThrowsError(try SafeTensors(data: data, path: "c.safetensors")) { XCTAssertEqual("\($0)", message) }
        }
    }

    func testAtomicWriteReplacesWholeFile() throws {
        let dir = try makeTemporaryDirectory("atomic")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/f.bin"
        try writeFileAtomically(Data([1, 2, 3]), to: path)
        try writeFileAtomically(Data([4, 5]), to: path)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), Data([4, 5]))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["f.bin"], "no temporary file left")
        XCTAssertThrowsError(try writeFileAtomically(Data([1]), to: dir + "/missing/f.bin"))
    }
}
