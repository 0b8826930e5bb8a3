import ArgumentParser
import Foundation
import Formats
import Kernels

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut 2-D training slices in the seed's layout from T1 volumes and their tissue maps.",
        discussion: """
            One subject (--t1) or a study (--cohort FILE.csv, see docs/cohorts.md). Volumes: NIfTI-1 \
            (.nii, .nii.gz) or FreeSurfer MGH (.mgz, .mgh). Tissue comes either from probability maps \
            (--gm and --wm, e.g. FSL FAST or SPM) or from a label map (--labels with --wm-labels and \
            --gm-labels, e.g. FreeSurfer aseg: 2,41 and 3,42). Masks: 0 white matter, 1 gray matter, \
            2 background. Writes DIR/MRIs/<name>_<ix>.npy, DIR/Segmentations/segm_<ix>.npy and \
            DIR/manifest.csv; the index follows a fixed shuffle so that the last files (the seed's test \
            set) mix the axes.

            A cohort CSV has a row per subject: subject,t1,gm,wm or subject,t1,labels (with \
            --wm-labels and --gm-labels), and optionally split (train or test); relative paths are \
            taken from the CSV's folder. With --test-subjects K (drawn by --seed) or a split column, \
            the test subjects' slices are the last files and manifest.csv says each file's subject \
            and split, which train and eval use, so that no subject is on both sides. Under \
            mpirun -n N the subjects are shared among the ranks.
            """)

    @Option(help: "T1-weighted volume (.nii, .nii.gz, .mgz or .mgh).") var t1: String?
    @Option(help: "A study: CSV with a row per subject (instead of --t1).") var cohort: String?
    @Option(help: "Gray-matter probability map.") var gm: String?
    @Option(help: "White-matter probability map.") var wm: String?
    @Option(help: "Label map (instead of --gm and --wm).") var labels: String?
    @Option(help: "White-matter label values of the label maps, comma-separated.") var wmLabels: String?
    @Option(help: "Gray-matter label values of the label maps, comma-separated.") var gmLabels: String?
    @Option(help: "With --cohort: hold out this many subjects, drawn by --seed, as the test set.")
    var testSubjects: Int?
    @Option(help: "With --cohort: seed of the --test-subjects draw and of the file order.") var seed: UInt64 = 0
    @Option(help: "Output directory (seed layout).") var out: String
    @Option(help: "Side of the square output slices in pixels.") var size = 394
    @Option(help: "Slicing directions, comma-separated: axial, coronal, sagittal.")
    var axes = "axial,coronal,sagittal"
    @Option(help: "Skip slices whose brain (gray + white matter) covers less than this share of the pixels.")
    var minBrain = 0.02
    @Flag(help: "Replace a data set already in --out.") var overwrite = false

    func validate() throws {
        guard (t1 == nil) != (cohort == nil) else { throw ValidationError("give either --t1 or --cohort") }
        if cohort != nil {
            if gm != nil || wm != nil || labels != nil {
                throw ValidationError("with --cohort the tissue maps come from its CSV, not --gm, --wm or --labels")
            }
            if (wmLabels == nil) != (gmLabels == nil) {
                throw ValidationError("--wm-labels and --gm-labels go together")
            }
            if let testSubjects, testSubjects < 1 { throw ValidationError("--test-subjects must be at least 1") }
        } else {
            if testSubjects != nil { throw ValidationError("--test-subjects needs --cohort") }
            let maps = gm != nil || wm != nil, labelMap = labels != nil || wmLabels != nil || gmLabels != nil
            guard maps != labelMap else {
                throw ValidationError("give either --gm and --wm, or --labels with --wm-labels and --gm-labels")
            }
            if maps && (gm == nil || wm == nil) { throw ValidationError("--gm and --wm go together") }
            if labelMap && (labels == nil || wmLabels == nil || gmLabels == nil) {
                throw ValidationError("--labels needs --wm-labels and --gm-labels")
            }
        }
        for (flag, text) in [("--wm-labels", wmLabels), ("--gm-labels", gmLabels)] {
            if let text, Self.integers(text) == nil {
                throw ValidationError("\(flag) must be comma-separated integers, not '\(text)'")
            }
        }
        if let w = wmLabels.flatMap(Self.integers), let g = gmLabels.flatMap(Self.integers),
           let both = Set(w).intersection(g).min() {
            throw ValidationError("label \(both) cannot be both white and gray matter")
        }
        guard (2...8192).contains(size) else { throw ValidationError("--size must be between 2 and 8192") }
        guard SliceAxis.list(axes) != nil else {
            throw ValidationError("--axes must list axial, coronal and/or sagittal, each once")
        }
        guard minBrain >= 0, minBrain <= 1 else { throw ValidationError("--min-brain must be between 0 and 1") }
    }

    static func integers(_ text: String) -> [Int]? {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        return parts.isEmpty || parts.contains(nil) ? nil : parts.map { $0! }
    }

    func run() throws {
        if cohort != nil { runCohort() }
        runLocally {
            let tissue: Cohort.Tissue = labels.map { .labels($0) } ?? .maps(gm: gm!, wm: wm!)
            let (slicer, kept) = try cut(t1: t1!, tissue: tissue, say: say)
            try write(kept, from: slicer)
        }
    }

    /// One subject read and checked, and the slices to keep: the same for --t1 and every row of
    /// --cohort. `report` gets the progress lines.
    func cut(t1 path: String, tissue: Cohort.Tissue, say report: (String) -> Void) throws
        -> (VolumeSlicer, [(axis: SliceAxis, index: Int)]) {
        let volume = try readVolume(path: path)
        report("\(path): \(describe(volume))")
        func read(_ map: String) throws -> NIfTIVolume {
            let v = try readVolume(path: map)
            guard v.dims == volume.dims else {
                throw FormatError(map, "\(v.dims.map(String.init).joined(separator: "x")) voxels, but the T1 (\(path)) "
                                  + "has " + volume.dims.map(String.init).joined(separator: "x"))
            }
            report("\(map): \(describe(v))")
            return v
        }
        let maps: TissueMaps
        switch tissue {
        case let .labels(file):
            maps = TissueMaps(labels: try read(file), wmLabels: Self.integers(wmLabels!)!,
                              gmLabels: Self.integers(gmLabels!)!)
        case let .maps(gmFile, wmFile):
            maps = TissueMaps(wm: try read(wmFile), gm: try read(gmFile))
        }
        let slicer = try VolumeSlicer(t1: volume, tissue: maps, path: path)
        let list = SliceAxis.list(axes)!
        let kept = slicer.keptSlices(axes: list, minBrain: minBrain)
        guard !kept.isEmpty else {
            throw FormatError(path, "no slice has at least \(minBrain) brain (see --min-brain)")
        }
        let perAxis = list.map { a in
            "\(a.rawValue) \(kept.filter { $0.axis == a }.count)/\(slicer.geometry(a).count)"
        }
        report("kept \(kept.count) slices (\(perAxis.joined(separator: ", ")))")
        return (slicer, kept)
    }

    /// Cuts, shuffles the file indices (SplitMix64, seed 0) and writes the pairs and the manifest.
    private func write(_ kept: [(axis: SliceAxis, index: Int)], from slicer: VolumeSlicer) throws {
        let writer = try SeedLayoutWriter(directory: out, overwrite: overwrite)
        var rng = SplitMix64(seed: 0)
        let position = shuffledPositions(kept.count, using: &rng)
        let stem = volumeStem(t1!)
        var rows = [String](repeating: "", count: kept.count)
        var classCounts = [0, 0, 0]
        for (k, s) in kept.enumerated() {
            let slice = slicer.slice(s.axis, index: s.index, size: size)
            let name = try writer.write(stem: stem, index: SeedLayoutWriter.indexText(position[k], count: kept.count),
                                        image: slice.image, labels: slice.labels)
            for l in slice.labels { classCounts[Int(l)] += 1 }
            rows[position[k]] = ([name, csvField(t1!)] + Self.placeFields(slice)).joined(separator: ",")
        }
        let header = "file,source,axis,slice_index,pixel_mm_x,pixel_mm_y"
        try writer.commit(manifest: ([header] + rows).joined(separator: "\n") + "\n")
        say("wrote \(kept.count) pairs of \(size)x\(size) to \(out)")
        say(Self.fractions(classCounts.map(Double.init)))
        let testAxes = kept.indices.filter { position[$0] >= kept.count - 100 }.map { kept[$0].axis }
        say("test set (last \(min(100, kept.count)) files): "
            + SliceAxis.list(axes)!.map { a in "\(a.rawValue) \(testAxes.filter { $0 == a }.count)" }
            .joined(separator: ", "))
    }

    /// A slice's manifest fields after the file and its source: axis, slice_index, pixel_mm_x, pixel_mm_y.
    static func placeFields(_ slice: PreparedSlice) -> [String] {
        [slice.axis.rawValue, String(slice.index),
         String(format: "%.6g", slice.pixelMM.x), String(format: "%.6g", slice.pixelMM.y)]
    }

    static func fractions(_ counts: [Double]) -> String {
        let total = max(counts.reduce(0, +), 1)
        return String(format: "class fractions: white %.4f, gray %.4f, background %.4f",
                      counts[0] / total, counts[1] / total, counts[2] / total)
    }

    private func describe(_ v: NIfTIVolume) -> String {
        let finite = v.values.filter(\.isFinite)
        return "\(v.dims.map(String.init).joined(separator: "x")) \(v.datatype), "
            + String(format: "%.3gx%.3gx%.3g mm, values %g..%g", v.spacing[0], v.spacing[1], v.spacing[2],
                     finite.min() ?? 0, finite.max() ?? 0)
    }
}

/// A CSV field, quoted where it holds a comma, quote or line break.
func csvField(_ s: String) -> String {
    s.contains(where: { ",\"\n\r".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}

/// Runs a single-process subcommand (no MPI): an error becomes one line on stderr and exit status 1.
func runLocally(_ body: () throws -> Void) -> Never {
    do {
        try body()
        fflush(stdout)
        exit(0)
    } catch {
        fflush(stdout)
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        exit(1)
    }
}

/// Prints a progress line at once (so it shows in pipes).
func say(_ line: String) {
    print(line)
    fflush(stdout)
}
