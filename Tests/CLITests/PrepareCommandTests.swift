import Foundation
import Formats
import TestSupport
import XCTest

/// A 20 x 24 x 16 head: a sphere of white matter (radius 4 voxels) inside a shell of gray matter
/// (radius 7), background elsewhere. T1 values are distinct per voxel so that any mix-up of axes,
/// flips or padding shows.
struct SphereHead {
    static let dims = [20, 24, 16]
    static let center = (x: 9.5, y: 11.5, z: 7.5)
    /// 1.5 x 1.5 x 2 mm voxels.
    static let affine: [[Double]] = [[1.5, 0, 0, -15], [0, 1.5, 0, -18], [0, 0, 2, -16], [0, 0, 0, 1]]

    /// 0 white matter, 1 gray matter, 2 background.
    static func tissue(_ x: Int, _ y: Int, _ z: Int) -> Int {
        let dx = Double(x) - center.x, dy = Double(y) - center.y, dz = Double(z) - center.z
        let r = (dx * dx + dy * dy + dz * dz).squareRoot()
        return r < 4 ? 0 : r < 7 ? 1 : 2
    }
    static func t1(_ x: Int, _ y: Int, _ z: Int) -> Float {
        Float([5000, 2500, 0][tissue(x, y, z)] + 100 + x + 20 * y + 480 * z)
    }
    static let t1Max: Float = (0..<16).flatMap { z in (0..<24).flatMap { y in (0..<20).map { x in t1(x, y, z) } } }.max()!

    static func volume(_ value: (Int, Int, Int) -> Float) -> [Float] {
        (0..<dims[2]).flatMap { z in (0..<dims[1]).flatMap { y in (0..<dims[0]).map { x in value(x, y, z) } } }
    }

    /// T1 (float32), gm and wm probability maps (uint8 0/255) and a label map (FreeSurfer-like:
    /// 2/41 white, 3/42 gray by hemisphere) in `dir`.
    static func write(to dir: String) throws {
        try NIfTIVolume(dims: dims, values: volume(t1), affine: affine).writeGzip(to: dir + "/T1.nii.gz")
        try NIfTIVolume(dims: dims, values: volume { tissue($0, $1, $2) == 1 ? 255 : 0 }, affine: affine)
            .writeGzip(to: dir + "/gm.nii.gz", as: .uint8)
        try NIfTIVolume(dims: dims, values: volume { tissue($0, $1, $2) == 0 ? 255 : 0 }, affine: affine)
            .writeGzip(to: dir + "/wm.nii.gz", as: .uint8)
        try NIfTIVolume(dims: dims, values: volume { x, y, z in
            let left = x < 10
            return [left ? 2 : 41, left ? 3 : 42, 0][tissue(x, y, z)]
        }, affine: affine).writeGzip(to: dir + "/aseg.nii.gz", as: .uint8)
    }

    /// Kept slice indices per axis by a direct count: brain (gm + wm) on at least 2% of the slice.
    static func keptSlices() -> [String: [Int]] {
        func fraction(_ n: Int, _ pixels: [(Int, Int, Int)]) -> Bool {
            Double(pixels.filter { tissue($0.0, $0.1, $0.2) < 2 }.count) / Double(pixels.count) >= 0.02
        }
        let xs = 0..<dims[0], ys = 0..<dims[1], zs = 0..<dims[2]
        return [
            "sagittal": xs.filter { x in fraction(x, ys.flatMap { y in zs.map { (x, y, $0) } }) },
            "coronal": ys.filter { y in fraction(y, xs.flatMap { x in zs.map { (x, y, $0) } }) },
            "axial": zs.filter { z in fraction(z, xs.flatMap { x in ys.map { (x, $0, z) } }) },
        ]
    }
}

struct ManifestRow: Equatable {
    var file: String, source: String, axis: String, slice: Int, mmX: Double, mmY: Double
    var index: String { String(file.dropLast(4).split(separator: "_").last!) }
}

final class PrepareCommandTests: ScratchTestCase {
    func tempDir() throws -> String { try scratchDirectory("prepare") }

    /// The sphere head written to a fresh directory.
    func head() throws -> String {
        let d = try tempDir()
        try SphereHead.write(to: d)
        return d
    }

    func prepare(_ dir: String, out: String, _ extra: [String]) throws -> CommandResult {
        try runUnetDist(["prepare", "--t1", dir + "/T1.nii.gz", "--out", out] + extra)
    }

    func maps(_ dir: String) -> [String] { ["--gm", dir + "/gm.nii.gz", "--wm", dir + "/wm.nii.gz"] }

    func manifest(_ out: String) throws -> [ManifestRow] {
        let lines = try String(contentsOfFile: out + "/manifest.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "file,source,axis,slice_index,pixel_mm_x,pixel_mm_y")
        return lines.dropFirst().map { line in
            let f = line.split(separator: ",").map(String.init)
            return ManifestRow(file: f[0], source: f[1], axis: f[2], slice: Int(f[3])!, mmX: Double(f[4])!, mmY: Double(f[5])!)
        }
    }

    func pair(_ out: String, _ row: ManifestRow) throws -> (image: NpyArray, mask: NpyArray) {
        (try NpyArray(path: "\(out)/MRIs/\(row.file)"), try NpyArray(path: "\(out)/Segmentations/segm_\(row.index).npy"))
    }

    func testKeptSlicesPerAxisSizesLabelFractionsAndManifest() throws {
        let dir = try head(), out = dir + "/out"
        let r = try prepare(dir, out: out, maps(dir) + ["--size", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let expected = SphereHead.keptSlices()
        let rows = try manifest(out)
        XCTAssertEqual(rows.count, expected.values.map(\.count).reduce(0, +))
        for (axis, slices) in expected {
            XCTAssertEqual(rows.filter { $0.axis == axis }.map(\.slice).sorted(), slices, axis)
        }
        XCTAssertTrue(r.stdout.contains("kept \(rows.count) slices (axial 14/16, coronal 14/24, sagittal 14/20)"), r.stdout)
        // File names: the T1's stem and a shuffled 4-digit index covering 0..<n once.
        XCTAssertEqual(rows.map(\.index), (0..<rows.count).map { String(format: "%04d", $0) })
        XCTAssertTrue(rows.allSatisfy { $0.file.hasPrefix("T1_") && $0.source == dir + "/T1.nii.gz" })
        XCTAssertNotEqual(rows.map(\.axis), rows.map(\.axis).sorted(), "the index order should mix the axes")
        XCTAssertEqual(try SeedDataset(directory: out).count, rows.count)

        // Pixel sizes after padding to the longer side and resizing to 32.
        let mm: [String: (Double, Double)] = ["axial": (1.5 * 24 / 32, 1.5 * 24 / 32), "coronal": (1.5 * 20 / 32, 2.0 * 20 / 32),
                                              "sagittal": (1.5 * 24 / 32, 2.0 * 24 / 32)]
        var counts = [0.0, 0.0, 0.0], expectedCounts = [0.0, 0.0, 0.0]
        for row in rows {
            XCTAssertEqual(row.mmX, mm[row.axis]!.0, accuracy: 1e-5, row.axis)
            XCTAssertEqual(row.mmY, mm[row.axis]!.1, accuracy: 1e-5, row.axis)
            let (image, mask) = try pair(out, row)
            XCTAssertEqual(image.shape, [32, 32]); XCTAssertEqual(image.type, .float32)
            XCTAssertEqual(mask.shape, [32, 32]); XCTAssertEqual(mask.type, .int(bytes: 1, signed: false))
            XCTAssertTrue(image.floats().allSatisfy { $0 >= 0 && $0 <= 1 })
            for l in try mask.labels(classes: 3, path: row.file) { counts[Int(l)] += 1 }
            // The same slice's classes at its own resolution, as a share of the padded square.
            let side = Double(row.axis == "coronal" ? 20 : 24)
            for c in 0..<2 { expectedCounts[c] += Double(classCount(row, c)) / (side * side) * 1024 }
        }
        expectedCounts[2] = Double(rows.count * 1024) - expectedCounts[0] - expectedCounts[1]
        for c in 0..<3 {
            XCTAssertEqual(counts[c] / Double(rows.count * 1024), expectedCounts[c] / Double(rows.count * 1024), accuracy: 0.01, "class \(c)")
        }
    }

    /// Voxels of class `c` in the slice a manifest row names.
    func classCount(_ row: ManifestRow, _ c: Int) -> Int {
        let d = SphereHead.dims
        var n = 0
        for x in 0..<d[0] { for y in 0..<d[1] { for z in 0..<d[2] {
            let on = row.axis == "axial" ? z == row.slice : row.axis == "coronal" ? y == row.slice : x == row.slice
            if on && SphereHead.tissue(x, y, z) == c { n += 1 }
        } } }
        return n
    }

    /// At --size 24, axial (24 x 20) and sagittal (16 x 24) slices are only padded, not resampled:
    /// every pixel must be the voxel a direct reading gives, in display orientation.
    func testSlicesHoldTheVoxelsADirectReadingGives() throws {
        let dir = try head(), out = dir + "/out"
        let r = try prepare(dir, out: out, maps(dir) + ["--size", "24", "--axes", "axial,sagittal"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try manifest(out)
        XCTAssertEqual(Set(rows.map(\.axis)), ["axial", "sagittal"])
        for row in rows {
            let (image, mask) = try pair(out, row)
            var pixels = [Float](repeating: 0, count: 24 * 24), labels = [UInt8](repeating: 2, count: 24 * 24)
            for r in 0..<24 {
                for c in 0..<24 {
                    // Axial: rows from anterior (y = 23) down, columns x from 0, 2 pixels of padding
                    // either side. Sagittal: rows from superior (z = 15) down with 4 rows of padding
                    // above and below, columns y from 0.
                    let voxel: (Int, Int, Int)? = row.axis == "axial"
                        ? (c >= 2 && c < 22 ? (c - 2, 23 - r, row.slice) : nil)
                        : (r >= 4 && r < 20 ? (row.slice, c, 15 - (r - 4)) : nil)
                    guard let (x, y, z) = voxel else { continue }
                    pixels[r * 24 + c] = SphereHead.t1(x, y, z) / SphereHead.t1Max
                    labels[r * 24 + c] = UInt8(SphereHead.tissue(x, y, z))
                }
            }
            XCTAssertEqual(image.floats(), pixels, "\(row.file): \(row.axis) \(row.slice)")
            XCTAssertEqual(try mask.labels(classes: 3, path: row.file), labels, "\(row.file): \(row.axis) \(row.slice)")
        }
    }

    func testLabelMapGivesTheSameSlicesAsProbabilityMaps() throws {
        let dir = try head()
        XCTAssertEqual(try prepare(dir, out: dir + "/a", maps(dir) + ["--size", "32"]).status, 0)
        let r = try prepare(dir, out: dir + "/b", ["--labels", dir + "/aseg.nii.gz", "--wm-labels", "2,41", "--gm-labels", "3,42",
                                                   "--size", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try manifest(dir + "/a"), try manifest(dir + "/b"))
        for sub in ["MRIs", "Segmentations"] {
            let names = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/a/\(sub)").sorted()
            XCTAssertEqual(names, try FileManager.default.contentsOfDirectory(atPath: "\(dir)/b/\(sub)").sorted())
            for n in names {
                XCTAssertEqual(FileManager.default.contents(atPath: "\(dir)/a/\(sub)/\(n)"),
                               FileManager.default.contents(atPath: "\(dir)/b/\(sub)/\(n)"), n)
            }
        }
    }

    /// The same head stored with voxel axes permuted (i along z, j along -x, k along y) gives the
    /// same slices: the axes come from the affine, not the voxel order.
    func testAxesFollowTheAffineNotTheVoxelOrder() throws {
        let dir = try head(), other = try tempDir()
        let d = SphereHead.dims
        let dims = [d[2], d[0], d[1]]
        let affine: [[Double]] = [[0, -1.5, 0, -15 + 1.5 * 19], [0, 0, 1.5, -18], [2, 0, 0, -16], [0, 0, 0, 1]]
        func permuted(_ f: @escaping (Int, Int, Int) -> Float) -> [Float] {
            (0..<dims[2]).flatMap { k in (0..<dims[1]).flatMap { j in (0..<dims[0]).map { i in f(19 - j, k, i) } } }
        }
        try NIfTIVolume(dims: dims, values: permuted(SphereHead.t1), affine: affine).writeGzip(to: other + "/T1.nii.gz")
        try NIfTIVolume(dims: dims, values: permuted { SphereHead.tissue($0, $1, $2) == 1 ? 1 : 0 }, affine: affine)
            .writeGzip(to: other + "/gm.nii.gz")
        try NIfTIVolume(dims: dims, values: permuted { SphereHead.tissue($0, $1, $2) == 0 ? 1 : 0 }, affine: affine)
            .writeGzip(to: other + "/wm.nii.gz")
        XCTAssertEqual(try prepare(dir, out: dir + "/a", maps(dir) + ["--size", "32"]).status, 0)
        let r = try prepare(other, out: other + "/b", maps(other) + ["--size", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try manifest(dir + "/a"), b = try manifest(other + "/b")
        XCTAssertEqual(a.count, b.count)
        for row in a {
            let slice = row.axis == "sagittal" ? 19 - row.slice : row.slice
            guard let twin = b.first(where: { $0.axis == row.axis && $0.slice == slice }) else {
                XCTFail("no \(row.axis) slice \(slice) from the permuted volume"); continue
            }
            XCTAssertEqual(twin.mmX, row.mmX, accuracy: 1e-9); XCTAssertEqual(twin.mmY, row.mmY, accuracy: 1e-9)
            let (ia, ma) = try pair(dir + "/a", row), (ib, mb) = try pair(other + "/b", twin)
            XCTAssertEqual(ia.floats(), ib.floats(), "\(row.axis) \(row.slice)")
            XCTAssertEqual(try ma.labels(classes: 3, path: ""), try mb.labels(classes: 3, path: ""), "\(row.axis) \(row.slice)")
        }
    }

    func testAnExistingDataSetIsReplacedOnlyWithOverwrite() throws {
        let dir = try head(), out = dir + "/out"
        XCTAssertEqual(try prepare(dir, out: out, maps(dir) + ["--size", "16"]).status, 0)
        let again = try prepare(dir, out: out, maps(dir) + ["--size", "16", "--axes", "axial"])
        XCTAssertEqual(again.status, 1)
        XCTAssertEqual(again.stderr, "error: \(out): already holds a data set (MRIs/); pass --overwrite to replace it\n")
        XCTAssertEqual(try manifest(out).count, 42)
        let r = try prepare(dir, out: out, maps(dir) + ["--size", "16", "--axes", "axial", "--overwrite"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // Nothing of the old set stays behind, and no staging folder either.
        XCTAssertEqual(try manifest(out).count, 14)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out + "/MRIs").count, 14)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out).sorted(), ["MRIs", "Segmentations", "manifest.csv"])
    }

    func testBadNIfTIFilesGiveOneLineErrorsNamingTheFile() throws {
        let dir = try head()
        let unpack = try shell("cd \(dir) && gzip -dc gm.nii.gz > gm.nii")
        XCTAssertEqual(unpack.status, 0, unpack.stderr)
        let nii = FileManager.default.contents(atPath: dir + "/gm.nii")!
        func bad(_ name: String, _ data: Data) -> String {
            _ = FileManager.default.createFile(atPath: "\(dir)/\(name)", contents: data)
            return "\(dir)/\(name)"
        }
        var magic = nii; magic.replaceSubrange(344..<348, with: Array("nx1\0".utf8))
        var complex = nii; complex.replaceSubrange(70..<72, with: [32, 0])
        let small = try tempDir()
        try NIfTIVolume(dims: [4, 4, 4], values: [Float](repeating: 1, count: 64)).writeGzip(to: small + "/small.nii.gz")
        let cases: [(String, String)] = [
            (bad("truncated.nii", nii.dropLast(1000)),
             "truncated NIfTI data: 20x24x16 uint8 from byte 352 needs 8032 bytes, file has 7032"),
            (bad("truncated.nii.gz", FileManager.default.contents(atPath: dir + "/gm.nii.gz")!.dropLast(20)), "truncated gzip stream"),
            (bad("magic.nii", magic), "bad NIfTI-1 magic 6e 78 31 00 (expected \"n+1\")"),
            (bad("complex.nii", complex), "unsupported NIfTI datatype 32 (complex64)"),
            (bad("text.nii", Data("not an image\n".utf8)), "not a NIfTI-1 file (sizeof_hdr is 544501614, expected 348)"),
            (small + "/small.nii.gz", "4x4x4 voxels, but the T1 (\(dir)/T1.nii.gz) has 20x24x16"),
        ]
        for (path, message) in cases {
            let out = dir + "/out"
            let r = try prepare(dir, out: out, ["--gm", path, "--wm", dir + "/wm.nii.gz", "--size", "16"])
            XCTAssertEqual(r.status, 1, path)
            XCTAssertEqual(r.stderr, "error: \(path): \(message)\n")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing written for \(path)")
        }
        let t1 = try runUnetDist(["prepare", "--t1", dir + "/magic.nii", "--out", dir + "/out"] + maps(dir))
        XCTAssertEqual(t1.status, 1)
        XCTAssertEqual(t1.stderr, "error: \(dir)/magic.nii: bad NIfTI-1 magic 6e 78 31 00 (expected \"n+1\")\n")
    }

    func testArgumentsAreChecked() throws {
        let dir = try head()
        for (extra, message) in [(["--gm", dir + "/gm.nii.gz"], "--gm and --wm go together"),
                                 ([String](), "give either --gm and --wm, or --labels"),
                                 (["--labels", dir + "/aseg.nii.gz", "--wm-labels", "2,x", "--gm-labels", "3"], "--wm-labels must be comma-separated integers"),
                                 (maps(dir) + ["--axes", "axial,top"], "--axes must list axial, coronal and/or sagittal")] {
            let r = try prepare(dir, out: dir + "/out", extra)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(message), r.stderr)
        }
    }
}

final class SynthCommandTests: ScratchTestCase {
    func tempDir() throws -> String { try scratchDirectory("synth") }

    func testPhantomsAreDeterministicAndBrainLike() throws {
        let d = try tempDir()
        for (name, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
            let r = try runUnetDist(["synth", "--out", "\(d)/\(name)", "--count", "6", "--size", "48", "--seed", seed])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let a = try seedLayoutFiles(d + "/a")
        XCTAssertEqual(a.keys.sorted(), (0..<6).map { String(format: "MRIs/synth_%04d.npy", $0) }
                       + (0..<6).map { String(format: "Segmentations/segm_%04d.npy", $0) })
        XCTAssertEqual(a, try seedLayoutFiles(d + "/b"), "same seed, same bytes")
        XCTAssertNotEqual(a["MRIs/synth_0000.npy"], try seedLayoutFiles(d + "/c")["MRIs/synth_0000.npy"], "another seed, other phantoms")
        let data = try SeedDataset(directory: d + "/a")
        for pair in data.pairs {
            let s = try Sample(pair, classes: 3)
            XCTAssertEqual([s.height, s.width], [48, 48])
            XCTAssertTrue(s.image.allSatisfy { $0 >= 0 && $0 <= 1 })
            var sums = [0.0, 0.0, 0.0], counts = [0.0, 0.0, 0.0]
            for (v, l) in zip(s.image, s.labels) { sums[Int(l)] += Double(v); counts[Int(l)] += 1 }
            XCTAssertTrue(counts.allSatisfy { $0 > 50 }, "every class present in \(pair.image): \(counts)")
            XCTAssertGreaterThan(sums[0] / counts[0], sums[1] / counts[1] + 0.1, "white matter brighter than gray in \(pair.image)")
            XCTAssertGreaterThan(sums[1] / counts[1], sums[2] / counts[2], "gray matter brighter than background in \(pair.image)")
        }
    }

    func testPhantomsTrain() throws {
        let d = try tempDir()
        XCTAssertEqual(try runUnetDist(["synth", "--out", d + "/data", "--count", "24", "--size", "32"]).status, 0)
        let r = try runUnetDist(["train", "--data", d + "/data", "--run-dir", d + "/run", "--epochs", "1", "--batch-size", "4",
                                 "--test-count", "4", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Epoch 1/1 loss"), r.stdout)
    }
}

/// launch/fetch-icbm.sh with the wheel already in its cache (a stand-in built here) and without
/// any way to reach PyPI.
final class FetchScriptTests: ScratchTestCase {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("launch/fetch-icbm.sh").path

    func testACachedWheelIsUnpackedAndPrepared() throws {
        let d = try scratchDirectory("fetch")
        try SphereHead.write(to: d)
        let zip = """
            import sys, zipfile
            with zipfile.ZipFile(sys.argv[1], "w") as z:
                for kind, name in [("t1", "T1"), ("gm", "gm"), ("wm", "wm")]:
                    z.write(f"{sys.argv[2]}/{name}.nii.gz", f"nilearn/datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz")
            """
        try zip.write(toFile: d + "/zip.py", atomically: true, encoding: .utf8)
        let made = try shell("mkdir -p \(d)/cache && python3 \(d)/zip.py \(d)/cache/nilearn-0.0.0-py3-none-any.whl \(d)")
        XCTAssertEqual(made.status, 0, made.stderr)
        let r = try shell("\(script) \(d)/out 32", environment: ["UNET_DIST": unetDistBinary, "WHEEL_CACHE": d + "/cache", "PYTHON": "false"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("kept 42 slices"), r.stdout)
        XCTAssertEqual(try SeedDataset(directory: d + "/out").count, 42)
    }

    func testWithoutPyPIItSaysSoAndWritesPhantoms() throws {
        let d = try scratchDirectory("fetch")
        let r = try shell("\(script) \(d)/out 16", environment: ["UNET_DIST": unetDistBinary, "WHEEL_CACHE": d + "/cache", "PYTHON": "false"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("PyPI unreachable: using synthetic phantoms instead"), r.stdout)
        XCTAssertEqual(try SeedDataset(directory: d + "/out").count, 400)
    }
}
