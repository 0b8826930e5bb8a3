import Foundation
import Formats
import Kernels
import TestSupport
import XCTest

/// Thousands of randomly truncated and corrupted files through the readers: each is read or
/// refused with a FormatError naming it, never a crash or a runaway allocation.
final class RobustnessTests: XCTestCase {
    func mutations(of original: Data, count: Int, seed: UInt64, check: (Data) -> Void) {
        var rng = SplitMix64(seed: seed)
        for _ in 0..<count {
            var d = original
            switch rng.next() % 3 {
            case 0: d = d.prefix(Int(rng.next() % UInt64(d.count + 1)))
            case 1:
                for _ in 0..<(1 + rng.next() % 8) { d[Int(rng.next() % UInt64(d.count))] = UInt8(rng.next() & 0xFF) }
            default:
                // Corrupt the header region, where sizes and types live.
                for _ in 0..<(1 + rng.next() % 4) { d[Int(rng.next() % UInt64(min(d.count, 400)))] = UInt8(rng.next() & 0xFF) }
            }
            check(d)
        }
    }

    func expectReadOrFormatError(_ read: () throws -> Void) {
        do { try read() } catch let e as FormatError { XCTAssertEqual(e.path, "f") } catch { XCTFail("unexpected \(error)") }
    }

    func testCorruptNpyFiles() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/seeddata/MRIs/slice_000.npy"))
        mutations(of: original, count: 3000, seed: 1) { d in
            expectReadOrFormatError { _ = try NpyArray(data: d, path: "f").floats() }
        }
    }

    func testCorruptNIfTIFiles() throws {
        let dir = try makeTemporaryDirectory("robust")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let values = (0..<(12 * 10 * 8)).map { Float($0 % 17) }
        try NIfTIVolume(dims: [12, 10, 8], values: values).writeGzip(to: dir + "/v.nii.gz")
        let gz = try Data(contentsOf: URL(fileURLWithPath: dir + "/v.nii.gz"))
        let raw = try NIfTIVolume(path: dir + "/v.nii.gz")
        XCTAssertEqual(raw.values, values)
        mutations(of: gz, count: 1500, seed: 2) { d in expectReadOrFormatError { _ = try NIfTIVolume(data: d, path: "f") } }
        // And the uncompressed form: gunzip through the system tool.
        XCTAssertEqual(try shell("gzip -dc '\(dir)/v.nii.gz' > '\(dir)/v.nii'").status, 0)
        let nii = try Data(contentsOf: URL(fileURLWithPath: dir + "/v.nii"))
        mutations(of: nii, count: 1500, seed: 3) { d in expectReadOrFormatError { _ = try NIfTIVolume(data: d, path: "f") } }
    }

    func testCorruptSafetensorsFiles() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/kernels.safetensors"))
        mutations(of: original, count: 1000, seed: 4) { d in expectReadOrFormatError { _ = try SafeTensors(data: d, path: "f") } }
    }
}
