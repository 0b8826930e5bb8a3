import Foundation
import Formats
import TestSupport
import XCTest

/// `predict`: every input checked before any output, outputs that never collide, and the work
/// shared by the ranks under mpirun with the same files as one process.
final class PredictOutputTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let checkpoint = fixturesDirectory + "/torch_trained.safetensors"

    func slice(_ i: Int) -> String { String(format: "%@/MRIs/slice_%03d.npy", data, i) }

    func predict(_ inputs: [String], out: String, ranks: Int? = nil) throws -> CommandResult {
        try runUnetDist(["predict", "--checkpoint", checkpoint, "--input"] + inputs + ["--out", out, "--threads", "1"], ranks: ranks)
    }

    func rows(_ out: String) throws -> [[String]] {
        try String(contentsOfFile: out + "/volumes.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    }

    func testInputsWithTheSameNameKeepTheirFolders() throws {
        let dir = try scratchDirectory()
        for (folder, i) in [("a", 0), ("b", 1)] {
            try FileManager.default.createDirectory(atPath: dir + "/in/" + folder, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: slice(i), toPath: dir + "/in/\(folder)/s.npy")
        }
        let r = try predict([dir + "/in/a/s.npy", dir + "/in/b/s.npy"], out: dir + "/out")
        XCTAssertEqual(r.status, 0, r.stderr)
        let table = try rows(dir + "/out")
        XCTAssertEqual(table.map { $0[0] }, ["a/s.npy", "b/s.npy"])
        for (folder, i) in [("a", 0), ("b", 1)] {
            let mask = try NpyArray(path: dir + "/out/\(folder)/s_mask.npy").labels(classes: 3, path: "")
            let alone = try scratchDirectory() + "/out"
            XCTAssertEqual(try predict([slice(i)], out: alone).status, 0)
            XCTAssertEqual(mask, try NpyArray(path: alone + String(format: "/slice_%03d_mask.npy", i)).labels(classes: 3, path: ""))
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/\(folder)/s_overlay.png"))
        }
        let twice = try predict([slice(0), slice(0)], out: dir + "/twice")
        XCTAssertEqual(twice.status, 1)
        XCTAssertEqual(twice.stderr, "error: \(slice(0)): is given twice\n")
    }

    func testOneBadInputAmongSeveralWritesNothing() throws {
        let dir = try scratchDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/in", withIntermediateDirectories: true)
        for i in 0..<4 { try FileManager.default.copyItem(atPath: slice(i), toPath: dir + "/in/" + String(format: "s%d.npy", i)) }
        // The last input, so that the good ones before it would have been written first.
        try NpyArray(float32: [0, .nan] + [Float](repeating: 0, count: 62), shape: [8, 8]).encoded().write(to: URL(fileURLWithPath: dir + "/in/s9.npy"))
        for ranks in [nil, 2] {
            let out = dir + "/out\(ranks ?? 1)"
            let r = try predict([dir + "/in"], out: out, ranks: ranks)
            XCTAssertEqual(r.status, 1)
            // mpirun adds its own lines about the non-zero exit after ours.
            XCTAssertTrue(r.stderr.hasPrefix("error: \(ranks == nil ? "" : "rank 1: ")\(dir)/in/s9.npy: image has a non-finite value (nan) at element 1\n"), r.stderr)
            XCTAssertEqual(r.stderr.components(separatedBy: "error:").count, 2, "one report:\n\(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(ranks ?? 1) rank(s): no output at all")
        }
    }

    func testTwoRanksWriteWhatOneRankWrites() throws {
        let dir = try scratchDirectory()
        var values: [Float] = []
        for k in 0..<6 { values += try NpyArray(path: slice(k)).floats() }
        try NIfTIVolume(dims: [48, 48, 6], values: values.map { $0 * 500 },
                        affine: [[1, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]).writeGzip(to: dir + "/t1.nii.gz")
        for k in 0..<5 { try FileManager.default.copyItem(atPath: slice(k), toPath: dir + String(format: "/slice_%03d.npy", k)) }
        let inputs = [dir + "/t1.nii.gz"] + (0..<5).map { dir + String(format: "/slice_%03d.npy", $0) }
        var outputs: [[String: Data]] = []
        for ranks in [nil, 2, 3] {
            let out = dir + "/out\(ranks ?? 1)"
            let r = try predict(inputs, out: out, ranks: ranks)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(r.stdout, "predict: 6 input(s) -> \(out) (masks, overlays, volumes.csv)\n", "rank 0 alone reports")
            var files: [String: Data] = [:]
            for name in try FileManager.default.subpathsOfDirectory(atPath: out) where !name.hasSuffix(".png") {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: out + "/" + name, isDirectory: &isDir), !isDir.boolValue {
                    files[name] = try Data(contentsOf: URL(fileURLWithPath: out + "/" + name))
                }
            }
            outputs.append(files)
        }
        XCTAssertEqual(outputs[0].keys.sorted().count, 9, outputs[0].keys.sorted().joined(separator: " "))
        for other in outputs.dropFirst() {
            XCTAssertEqual(other.keys.sorted(), outputs[0].keys.sorted())
            for (name, bytes) in outputs[0] { XCTAssertEqual(other[name], bytes, name) }
        }
        let table = try rows(dir + "/out1")
        XCTAssertEqual(table.map { $0[0] }, Array(repeating: "t1.nii.gz", count: 7) + (0..<5).map { String(format: "slice_%03d.npy", $0) })
    }
}

/// Whole volumes: three axes fused, flips, the largest component, and the truth report.
final class PredictVolumeTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let checkpoint = fixturesDirectory + "/torch_trained.safetensors"

    func testFusedAxesFlipsLargestComponentAndTheTruth() throws {
        let dir = try scratchDirectory()
        var values: [Float] = [], truth: [Float] = []
        for k in 0..<8 {
            values += try NpyArray(path: String(format: "%@/MRIs/slice_%03d.npy", data, k)).floats()
            // The seed's codes to the masks' codes: 0 background, 1 white matter, 2 gray matter.
            truth += try NpyArray(path: String(format: "%@/Segmentations/segm_%03d.npy", data, k)).floats().map { $0 == 2 ? 0 : $0 + 1 }
        }
        try NIfTIVolume(dims: [48, 48, 8], values: values.map { $0 * 500 }).writeGzip(to: dir + "/t1.nii.gz")
        try NIfTIVolume(dims: [48, 48, 8], values: truth).writeGzip(to: dir + "/truth.nii.gz", as: .uint8)
        func predict(_ flags: [String], out: String) throws -> CommandResult {
            try runUnetDist(["predict", "--checkpoint", checkpoint, "--input", dir + "/t1.nii.gz", "--out", dir + "/" + out,
                             "--threads", "1", "--truth", dir + "/truth.nii.gz"] + flags)
        }
        func dice(_ out: String) throws -> [Double] {
            try String(contentsOfFile: dir + "/\(out)/t1_truth.csv", encoding: .utf8).split(separator: "\n").dropFirst()
                .map { Double($0.split(separator: ",")[1])! }
        }
        let axial = try predict([], out: "axial")
        XCTAssertEqual(axial.status, 0, axial.stderr)
        XCTAssertTrue(axial.stdout.contains("t1: white matter Dice "), axial.stdout)
        let fused = try predict(["--axes", "axial,coronal,sagittal", "--tta", "--largest-component"], out: "fused")
        XCTAssertEqual(fused.status, 0, fused.stderr)
        // The axial pass alone is the model's own slices: the truth it was trained on, nearly.
        let a = try dice("axial"), f = try dice("fused")
        XCTAssertEqual(a.count, 2); XCTAssertGreaterThan(a.min()!, 0.5)
        XCTAssertNotEqual(a, f, "the other axes and the flips change the mask")
        let mask = try NIfTIVolume(path: dir + "/fused/t1_mask.nii.gz")
        for label: Float in [1, 2] { XCTAssertEqual(components(mask, label), 1, "label \(label): one component") }

        let two = try runUnetDist(["predict", "--checkpoint", checkpoint, "--input", dir + "/t1.nii.gz", dir + "/truth.nii.gz",
                                   "--out", dir + "/two", "--truth", dir + "/truth.nii.gz"])
        XCTAssertEqual(two.status, 1)
        XCTAssertTrue(two.stderr.hasPrefix("error: \(dir)/truth.nii.gz: a truth is for one input volume, not 2 input(s)"), two.stderr)
    }

    /// A FreeSurfer volume (.mgz) is predicted as the NIfTI holding the same voxels and affine.
    func testMGZVolumeIsPredictedAsItsNIfTITwin() throws {
        let dir = try scratchDirectory()
        var values: [Float] = []
        for k in 0..<8 { values += try NpyArray(path: String(format: "%@/MRIs/slice_%03d.npy", data, k)).floats() }
        let mgh = mghFile(dims: [48, 48, 8], values: values.map { $0 * 500 }, type: 3, delta: [1, 1.2, 2],
                          centre: [3, -4, 5])
        try gzipCompress(mgh).write(to: URL(fileURLWithPath: dir + "/t1.mgz"))
        let volume = try readVolume(path: dir + "/t1.mgz")
        try FileManager.default.createDirectory(atPath: dir + "/twin", withIntermediateDirectories: true)
        try volume.writeGzip(to: dir + "/twin/t1.nii.gz")
        for (input, out) in [("t1.mgz", "mgz"), ("twin/t1.nii.gz", "nifti")] {
            let r = try runUnetDist(["predict", "--checkpoint", checkpoint, "--input", dir + "/" + input,
                                     "--out", dir + "/" + out, "--axes", "axial,coronal", "--threads", "1"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let fromMGZ = try NIfTIVolume(path: dir + "/mgz/t1_mask.nii.gz")
        let fromNIfTI = try NIfTIVolume(path: dir + "/nifti/t1_mask.nii.gz")
        XCTAssertEqual(fromMGZ.dims, [48, 48, 8])
        XCTAssertEqual(fromMGZ.values, fromNIfTI.values)
        XCTAssertEqual(fromMGZ.affine, fromNIfTI.affine)
        XCTAssertEqual(Set(fromMGZ.values).count, 3, "the mask holds the three codes")
    }

    /// 6-connected components of `label`.
    func components(_ v: NIfTIVolume, _ label: Float) -> Int {
        let (nx, ny, nz) = (v.dims[0], v.dims[1], v.dims[2])
        var seen = [Bool](repeating: false, count: v.values.count), count = 0
        for s in v.values.indices where v.values[s] == label && !seen[s] {
            count += 1
            var stack = [s]; seen[s] = true
            while let i = stack.popLast() {
                let x = i % nx, y = (i / nx) % ny, z = i / (nx * ny)
                for (dx, dy, dz) in [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] {
                    let (a, b, c) = (x + dx, y + dy, z + dz)
                    guard a >= 0, a < nx, b >= 0, b < ny, c >= 0, c < nz else { continue }
                    let u = a + nx * (b + ny * c)
                    if v.values[u] == label && !seen[u] { seen[u] = true; stack.append(u) }
                }
            }
        }
        return count
    }
}
