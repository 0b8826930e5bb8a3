import Foundation
import Formats
import TestSupport
import XCTest

/// Files whose headers state sizes meant to fool a reader (shape products that overflow 64 bits or
/// wrap around to a small number, dims that multiply far past the file) given to train, eval and
/// predict, on one process and under `mpirun -n 2`: one line naming the file, exit 1, within
/// 5 s, no crash and nothing written.
final class CraftedInputTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let checkpoint = fixturesDirectory + "/torch_trained.safetensors"
    /// Refusing a file takes a start, a read and a stop: well under a second each, but mpirun
    /// on a busy two-core machine takes seconds to start.
    let bound: TimeInterval = 5

    /// A UNet of width 4096 by its first and last tensors (36 KiB and 48 KiB), which would
    /// allocate over 100 GB before reading the tensors that are not there.
    let wideCheckpoint = CraftedFile.safetensors(header:
        #"{"conv1.0.0.weight":{"dtype":"F32","shape":[4096,1,3,3],"data_offsets":[0,147456]},"#
        + #""out.weight":{"dtype":"F32","shape":[3,4096,1,1],"data_offsets":[147456,196608]}}"#, data: 196_608)

    func write(_ bytes: Data, _ name: String) throws -> String {
        let path = try scratchDirectory("crafted") + "/" + name
        try bytes.write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A copy of the fixture data set with `bytes` as `file` (slice_004 is a training pair,
    /// read before the first step).
    func dataWith(_ bytes: Data, as file: String) throws -> (data: String, file: String) {
        let d = try scratchDirectory("crafted") + "/data"
        try FileManager.default.copyItem(atPath: data, toPath: d)
        try bytes.write(to: URL(fileURLWithPath: d + "/" + file))
        return (d, d + "/" + file)
    }

    /// `unet-dist args` on one process, then under `mpirun -n 2` when `ranks` says so.
    func expectRefused(_ args: [String], naming path: String, ranks: [Int?], leavesEmpty output: String? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        for n in ranks {
            let how = "\(args[0]) on \(n ?? 1) process(es)"
            let r = try runUnetDist(args, ranks: n, timeout: bound)
            XCTAssertEqual(r.status, 1, "\(how): \(r.stderr)", file: file, line: line)
            let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
            XCTAssertEqual(errors.count, 1, "\(how), one line:\n\(r.stderr)", file: file, line: line)
            XCTAssertTrue(errors.first?.hasPrefix("error: \(path): ") ?? false, "\(how): \(errors) should name \(path)",
                          file: file, line: line)
            XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("crashed") || r.stderr.contains("Signal"),
                           "\(how): \(r.stderr)", file: file, line: line)
            if let output {
                let written = (try? FileManager.default.contentsOfDirectory(atPath: output)) ?? []
                XCTAssertEqual(written, [], "\(how) wrote into \(output)", file: file, line: line)
            }
        }
    }

    func train(_ data: String, _ extra: [String] = []) throws -> (args: [String], run: String) {
        let run = try scratchDirectory("crafted") + "/run"
        return (["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2", "--threads", "1",
                 "--epochs", "1"] + extra, run)
    }

    func testTrainRefusesCraftedImagesAndMasks() throws {
        for (bytes, file) in [(CraftedFile.wrappingNpy, "MRIs/slice_004.npy"), (CraftedFile.hugeNpy, "MRIs/slice_004.npy"),
                              (CraftedFile.wrappingNpy, "Segmentations/segm_004.npy")] {
            let d = try dataWith(bytes, as: file)
            let (args, run) = try train(d.data)
            try expectRefused(args, naming: d.file, ranks: [nil, 2])
            XCTAssertFalse(FileManager.default.fileExists(atPath: run), "run directory written")
        }
    }

    func testTrainRefusesACraftedCheckpoint() throws {
        let ckpt = try write(CraftedFile.overflowingSafetensors, "overflow.safetensors")
        let (args, run) = try train(data, ["--init", ckpt])
        try expectRefused(args, naming: ckpt, ranks: [nil, 2])
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "run directory written")
    }

    func testEvalRefusesCraftedImages() throws {
        for bytes in [CraftedFile.wrappingNpy, CraftedFile.hugeNpy] {
            let d = try dataWith(bytes, as: "MRIs/slice_004.npy")
            try expectRefused(["eval", "--checkpoint", checkpoint, "--data", d.data, "--threads", "1"], naming: d.file, ranks: [nil, 2])
        }
    }

    func testEvalRefusesCraftedCheckpoints() throws {
        for (bytes, name) in [(CraftedFile.overflowingSafetensors, "overflow.safetensors"), (wideCheckpoint, "wide.safetensors")] {
            let ckpt = try write(bytes, name)
            try expectRefused(["eval", "--checkpoint", ckpt, "--data", data, "--threads", "1"], naming: ckpt, ranks: [nil, 2])
        }
    }

    /// A 4 x 48 slice: the UNet's three poolings would leave no rows (a division by zero).
    func testTrainAndEvalRefuseImagesSmallerThanTheModelsTake() throws {
        let image = NpyArray(float32: [Float](repeating: 0.5, count: 4 * 48), shape: [4, 48]).encoded()
        let d = try dataWith(image, as: "MRIs/slice_000.npy")
        try NpyArray(uint8: [UInt8](repeating: 2, count: 4 * 48), shape: [4, 48]).encoded()
            .write(to: URL(fileURLWithPath: d.data + "/Segmentations/segm_000.npy"))
        let (args, run) = try train(d.data)
        try expectRefused(args, naming: d.file, ranks: [nil, 2])
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "run directory written")
        try expectRefused(["eval", "--checkpoint", checkpoint, "--data", d.data, "--threads", "1"], naming: d.file, ranks: [nil, 2])
    }

    func craftedPredictInputs() throws -> [String] {
        [try write(CraftedFile.wrappingNpy, "wrap.npy"), try write(CraftedFile.hugeNpy, "huge.npy"),
         try write(CraftedFile.hugeNIfTI, "huge.nii"), try write(try gzipCompress(CraftedFile.hugeNIfTI), "huge.nii.gz")]
    }

    func predictRefusesCraftedInputs(ranks: Int?) throws {
        for input in try craftedPredictInputs() {
            let out = try scratchDirectory("crafted") + "/out"
            try expectRefused(["predict", "--checkpoint", checkpoint, "--input", input, "--out", out, "--threads", "1"],
                              naming: input, ranks: [ranks], leavesEmpty: out)
        }
    }

    func predictRefusesCraftedCheckpoints(ranks: Int?) throws {
        let input = data + "/MRIs/slice_000.npy"
        for (bytes, name) in [(CraftedFile.overflowingSafetensors, "overflow.safetensors"), (wideCheckpoint, "wide.safetensors")] {
            let ckpt = try write(bytes, name), out = try scratchDirectory("crafted") + "/out"
            try expectRefused(["predict", "--checkpoint", ckpt, "--input", input, "--out", out, "--threads", "1"],
                              naming: ckpt, ranks: [ranks], leavesEmpty: out)
        }
    }

    func testPredictRefusesCraftedInputs() throws { try predictRefusesCraftedInputs(ranks: nil) }
    func testPredictRefusesCraftedCheckpoints() throws { try predictRefusesCraftedCheckpoints(ranks: nil) }
    func testPredictRefusesCraftedInputsOnTwoRanks() throws { try predictRefusesCraftedInputs(ranks: 2) }
    func testPredictRefusesCraftedCheckpointsOnTwoRanks() throws { try predictRefusesCraftedCheckpoints(ranks: 2) }
}
