import Foundation
import Formats
import TestSupport
import XCTest

/// `synth --volumes`, `prepare --cohort` on several ranks with a subject-wise split, `train` on that
/// split and `eval --per-subject`.
final class CohortCommandTests: ScratchTestCase {
    /// A manifest as rows of named fields.
    func manifest(_ dir: String) throws -> (header: [String], rows: [[String: String]]) {
        let lines = try String(contentsOfFile: dir + "/manifest.csv", encoding: .utf8).split(separator: "\n")
        let header = lines[0].split(separator: ",").map(String.init)
        return (header, lines.dropFirst().map { line in
            Dictionary(uniqueKeysWithValues: zip(header, line.split(separator: ",").map(String.init)))
        })
    }

    func phantoms(_ count: Int) throws -> String {
        let dir = try scratchDirectory("cohort")
        let r = try runUnetDist(["synth", "--volumes", "\(count)", "--size", "32", "--seed", "5", "--out", dir + "/ph"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return dir
    }

    func testPhantomCohortSplitBySubjectOnTwoRanksTrainsAndScoresPerSubject() throws {
        let dir = try phantoms(3)
        let csv = try String(contentsOfFile: dir + "/ph/cohort.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").first, "subject,t1,gm,wm")
        XCTAssertEqual(csv.split(separator: "\n").count, 4)
        let t1 = try NIfTIVolume(path: dir + "/ph/synth-01_T1.nii.gz")
        XCTAssertEqual(t1.dims, [32, 32, 32])

        let prepare = ["prepare", "--cohort", dir + "/ph/cohort.csv", "--test-subjects", "1", "--size", "32",
                       "--axes", "axial"]
        let two = try runUnetDist(prepare + ["--out", dir + "/data"], ranks: 2)
        XCTAssertEqual(two.status, 0, two.stderr)
        let (header, rows) = try manifest(dir + "/data")
        XCTAssertEqual(header, ["file", "subject", "split", "source", "axis", "slice_index", "pixel_mm_x",
                                "pixel_mm_y"])
        let testSubjects = Set(rows.filter { $0["split"] == "test" }.map { $0["subject"]! })
        let trainSubjects = Set(rows.filter { $0["split"] == "train" }.map { $0["subject"]! })
        XCTAssertEqual(testSubjects.count, 1)
        XCTAssertEqual(trainSubjects.count, 2)
        XCTAssertTrue(testSubjects.isDisjoint(with: trainSubjects))
        // File-name order is the data set's order: every test file after every train file.
        let byName = rows.sorted { $0["file"]! < $1["file"]! }
        let firstTest = try XCTUnwrap(byName.firstIndex { $0["split"] == "test" })
        XCTAssertTrue(byName[firstTest...].allSatisfy { $0["split"] == "test" })
        let testCount = byName.count - firstTest
        let onDisk = try seedLayoutFiles(dir + "/data")
        XCTAssertEqual(onDisk.count, 2 * rows.count)
        XCTAssertTrue(rows.allSatisfy { onDisk["MRIs/" + $0["file"]!] != nil })
        XCTAssertTrue(two.stdout.contains("test set: 1 subject(s) (\(testSubjects.first!)), \(testCount) slices"),
                      two.stdout)

        // One rank cuts the same bytes: the ranks only share the work.
        let one = try runUnetDist(prepare + ["--out", dir + "/one"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(try seedLayoutFiles(dir + "/one"), onDisk)
        XCTAssertEqual(try String(contentsOfFile: dir + "/one/manifest.csv", encoding: .utf8),
                       try String(contentsOfFile: dir + "/data/manifest.csv", encoding: .utf8))

        let run = dir + "/run"
        let train = try runUnetDist(["train", "--data", dir + "/data", "--run-dir", run, "--epochs", "1",
                                     "--batch-size", "8", "--width", "4", "--threads", "1"], ranks: 2)
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertTrue(train.stdout.contains("test set: the manifest's split, \(testCount) slices from 1 subject(s) "
                                            + "held out (\(rows.count - testCount) train slices from 2 subject(s))"),
                      train.stdout)
        XCTAssertTrue(train.stdout.contains("\(rows.count - testCount) train / \(testCount) test pairs"), train.stdout)

        let table = dir + "/subjects.csv"
        let eval = try runUnetDist(["eval", "--checkpoint", run + "/checkpoints/last.safetensors", "--data",
                                    dir + "/data", "--split", "test", "--per-subject", table, "--threads", "1"],
                                   ranks: 2)
        XCTAssertEqual(eval.status, 0, eval.stderr)
        XCTAssertTrue(eval.stdout.contains("(\(testCount) images, test split: the manifest's split)"), eval.stdout)
        let lines = try String(contentsOfFile: table, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "subject,split,images,mean_dice,dice_wm,dice_gm,iou_wm,iou_gm,hd95_mm_wm,"
                       + "hd95_mm_gm,asd_mm_wm,asd_mm_gm")
        XCTAssertEqual(lines.count, 2)
        XCTAssertTrue(lines[1].hasPrefix("\(testSubjects.first!),test,\(testCount),"), String(lines[1]))
        let all = try runUnetDist(["eval", "--checkpoint", run + "/checkpoints/last.safetensors", "--data",
                                   dir + "/data", "--per-subject", table, "--threads", "1"])
        XCTAssertEqual(all.status, 0, all.stderr)
        let subjects = try String(contentsOfFile: table, encoding: .utf8).split(separator: "\n").dropFirst()
            .map { String($0.split(separator: ",")[0]) }
        XCTAssertEqual(Set(subjects), testSubjects.union(trainSubjects))
    }

    func testCohortMistakesStopEveryRankWithOneLineAndWriteNothing() throws {
        let dir = try phantoms(2)
        let ph = dir + "/ph"
        func write(_ name: String, _ text: String) throws -> String {
            try text.write(toFile: "\(ph)/\(name)", atomically: true, encoding: .utf8)
            return "\(ph)/\(name)"
        }
        let good = "synth-01,synth-01_T1.nii.gz,synth-01_gm.nii.gz,synth-01_wm.nii.gz"
        let missing = try write("missing.csv", "subject,t1,gm,wm\n\(good)\nsynth-02,nope.nii.gz,a.nii,b.nii\n")
        let twice = try write("twice.csv", "subject,t1,gm,wm\n\(good)\n\(good)\n")
        let split = try write("split.csv", "subject,t1,gm,wm,split\n\(good),test\n")
        let columns = try write("columns.csv", "subject,t1,gm\n")
        let bigger = try write("bigger.csv", "subject,t1,gm,wm\n\(good)\n"
                               + "synth-02,synth-02_T1.nii.gz,synth-02_gm.nii.gz,synth-02_wm.nii.gz\n")
        try NIfTIVolume(dims: [16, 16, 16], values: [Float](repeating: 1, count: 4096))
            .writeGzip(to: ph + "/synth-02_T1.nii.gz")
        let cases: [(String, [String], String)] = [
            (missing, [], "\(missing): line 3 (subject synth-02): \(ph)/nope.nii.gz: no such file"),
            (twice, [], "\(twice): line 3: subject synth-01 is already on line 2"),
            (split, [], "\(split): its split column must name at least one train and one test subject"),
            (ph + "/cohort.csv", ["--test-subjects", "2"],
             "\(ph)/cohort.csv: --test-subjects 2 leaves no training subject (2 subjects)"),
            (ph + "/cohort.csv", ["--wm-labels", "2", "--gm-labels", "3"],
             "\(ph)/cohort.csv: gives probability maps (gm, wm): --wm-labels and --gm-labels do not apply"),
            (columns, [], "\(columns): needs the columns subject,t1,gm,wm or subject,t1,labels (its header: "
             + "subject,t1,gm)"),
            (bigger, [], "rank 1: \(ph)/synth-02_wm.nii.gz: 32x32x32 voxels, but the T1 (\(ph)/synth-02_T1.nii.gz) "
             + "has 16x16x16"),
        ]
        for (csv, extra, message) in cases {
            let out = dir + "/out"
            let r = try runUnetDist(["prepare", "--cohort", csv, "--size", "16", "--axes", "axial", "--out", out]
                                    + extra, ranks: 2)
            XCTAssertEqual(r.status, 1, csv)
            // mpirun adds lines of its own about the ranks' exit status.
            XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }, ["error: \(message)"])
            let left = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
            XCTAssertEqual(left, [], "nothing written for \(csv)")
        }
    }

    /// FreeSurfer-style input: T1.mgz and aseg.mgz with labels, beside the same head as NIfTI, in one
    /// cohort split by its own column: both subjects give the same slices.
    func testFreeSurferVolumesWithLabelsCutAsTheirNIfTITwins() throws {
        let dir = try scratchDirectory("cohort")
        try SphereHead.write(to: dir)
        let dims = SphereHead.dims
        // SphereHead.affine: 1.5 x 1.5 x 2 mm, voxel (10, 12, 8), the centre, at the origin.
        func mgz(_ name: String, _ values: [Float], type: Int32) throws {
            let data = mghFile(dims: dims, values: values, type: type, delta: [1.5, 1.5, 2], centre: [0, 0, 0])
            try gzipCompress(data).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
        }
        try mgz("T1.mgz", SphereHead.volume(SphereHead.t1), type: 3)
        try mgz("aseg.mgz", SphereHead.volume { x, y, z in
            Float([x < 10 ? 2 : 41, x < 10 ? 3 : 42, 0][SphereHead.tissue(x, y, z)])
        }, type: 0)
        try "subject,t1,labels,split\nnifti,T1.nii.gz,aseg.nii.gz,train\nfreesurfer,T1.mgz,aseg.mgz,test\n"
            .write(toFile: dir + "/study.csv", atomically: true, encoding: .utf8)
        let r = try runUnetDist(["prepare", "--cohort", dir + "/study.csv", "--wm-labels", "2,41",
                                 "--gm-labels", "3,42", "--size", "24", "--out", dir + "/data"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (_, rows) = try manifest(dir + "/data")
        let kept = SphereHead.keptSlices().values.map(\.count).reduce(0, +)
        XCTAssertEqual(rows.count, 2 * kept)
        var slices: [String: [String: Data]] = [:]
        for row in rows {
            let index = row["file"]!.dropLast(4).split(separator: "_").last!
            let pair = try XCTUnwrap(FileManager.default.contents(atPath: "\(dir)/data/MRIs/\(row["file"]!)"))
                + (try XCTUnwrap(FileManager.default.contents(atPath: "\(dir)/data/Segmentations/segm_\(index).npy")))
            slices[row["subject"]!, default: [:]]["\(row["axis"]!) \(row["slice_index"]!)"] = pair
            XCTAssertEqual(row["split"], row["subject"] == "nifti" ? "train" : "test")
        }
        XCTAssertEqual(slices["nifti"]?.count, kept)
        XCTAssertEqual(slices["freesurfer"], slices["nifti"])
    }
}
