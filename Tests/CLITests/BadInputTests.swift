import Foundation
import Formats
import TestSupport
import XCTest

/// Every bad data input the readers refuse, under `mpirun -n 2`: one line naming the file and the
/// problem, exit status 1 on every rank, no hang, and nothing written to the run directory.
final class BadInputTests: ScratchTestCase {
    let good = fixturesDirectory + "/seeddata"

    /// A copy of the fixture data set to spoil.
    func dataCopy() throws -> String {
        let d = try scratchDirectory("bad")
        try FileManager.default.copyItem(atPath: good, toPath: d + "/data")
        return d + "/data"
    }

    func expectFailure(_ data: String, _ message: String, extra: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        let run = URL(fileURLWithPath: data).deletingLastPathComponent().path + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2",
                                 "--threads", "1", "--epochs", "1"] + extra, ranks: 2, timeout: 120)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(errors.count, 1, "one report:\n\(r.stderr)", file: file, line: line)
        XCTAssertTrue(errors.first.map { $0.hasSuffix(message) && $0.contains(": ") } ?? false,
                      "expected …\(message), got \(errors)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "the run directory was written", file: file, line: line)
    }

    func write(_ array: NpyArray, _ path: String) throws { try array.encoded().write(to: URL(fileURLWithPath: path)) }

    func testImageWithoutMask() throws {
        let d = try dataCopy()
        try FileManager.default.removeItem(atPath: d + "/Segmentations/segm_004.npy")
        try expectFailure(d, "MRIs/slice_004.npy: has no mask (expected \(d)/Segmentations/segm_004.npy)")
    }

    func testMaskValueOutsideTheClasses() throws {
        let d = try dataCopy()
        var m = try NpyArray(path: d + "/Segmentations/segm_007.npy").labels(classes: 3, path: "")
        m[100] = 5
        try write(NpyArray(uint8: m, shape: [48, 48]), d + "/Segmentations/segm_007.npy")
        try expectFailure(d, "Segmentations/segm_007.npy: mask value 5.0 at element 100 is not a class in 0..2")
    }

    func testImageMaskShapeMismatch() throws {
        let d = try dataCopy()
        try write(NpyArray(uint8: [UInt8](repeating: 0, count: 40 * 48), shape: [40, 48]), d + "/Segmentations/segm_002.npy")
        try expectFailure(d, "Segmentations/segm_002.npy: mask shape [40, 48] does not match image shape [48, 48]")
    }

    func testSamplesOfDifferentSizes() throws {
        let d = try dataCopy()
        try write(NpyArray(float32: [Float](repeating: 0.5, count: 40 * 40), shape: [40, 40]), d + "/MRIs/slice_009.npy")
        try write(NpyArray(uint8: [UInt8](repeating: 2, count: 40 * 40), shape: [40, 40]), d + "/Segmentations/segm_009.npy")
        try expectFailure(d, "MRIs/slice_009.npy: image is 40x40, but \(d)/MRIs/slice_000.npy is 48x48: all samples must have one size")
    }

    func testUnusableDtype() throws {
        let d = try dataCopy()
        var header = "{'descr': '<c8', 'fortran_order': False, 'shape': (48, 48), }"
        while (header.count + 11) % 64 != 0 { header += " " }
        header += "\n"
        var bytes = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.count & 0xFF), UInt8(header.count >> 8)])
        bytes.append(Data(header.utf8)); bytes.append(Data(count: 48 * 48 * 8))
        try bytes.write(to: URL(fileURLWithPath: d + "/MRIs/slice_005.npy"))
        try expectFailure(d, "MRIs/slice_005.npy: unsupported .npy dtype <c8 (numeric arrays only)")
    }

    func testNaNInAnImage() throws {
        let d = try dataCopy()
        var img = try NpyArray(path: d + "/MRIs/slice_006.npy").floats()
        img[77] = .nan
        try write(NpyArray(float32: img, shape: [48, 48]), d + "/MRIs/slice_006.npy")
        try expectFailure(d, "MRIs/slice_006.npy: image has a non-finite value (nan) at element 77")
    }

    func testTruncatedNpy() throws {
        let d = try dataCopy()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: d + "/MRIs/slice_003.npy"))
        try bytes.prefix(1000).write(to: URL(fileURLWithPath: d + "/MRIs/slice_003.npy"))
        try expectFailure(d, "MRIs/slice_003.npy: truncated .npy data: [48, 48] <f4 needs 9216 bytes, file has 872")
    }

    func testEmptyDirectory() throws {
        let d = try dataCopy()
        for sub in ["MRIs", "Segmentations"] {
            for f in try FileManager.default.contentsOfDirectory(atPath: d + "/" + sub) {
                try FileManager.default.removeItem(atPath: d + "/" + sub + "/" + f)
            }
        }
        try expectFailure(d, "\(d)/MRIs: holds no .npy images")
    }

    func testFewerTrainingPairsThanOneGlobalBatch() throws {
        try expectFailure(try dataCopy(), "8 training pairs, fewer than one global batch of 16 (--batch-size)",
                          extra: ["--batch-size", "16"])
    }

    func testFewerTrainingPairsThanRanks() throws {
        try expectFailure(try dataCopy(), "1 training pairs, fewer than the 2 ranks", extra: ["--test-count", "9", "--batch-size", "1"])
    }

    func testTestCountLeavingNoTrainingData() throws {
        try expectFailure(try dataCopy(), "--test-count 10 leaves no training data (10 pairs)", extra: ["--test-count", "10"])
    }
}
