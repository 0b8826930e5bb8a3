import ArgumentParser
import Foundation
import Formats
import Kernels

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut 2-D training slices in the seed's layout from a T1 volume and its tissue maps (NIfTI-1).",
        discussion: """
            Tissue comes either from probability maps (--gm and --wm, e.g. FSL FAST or SPM) or from a \
            label map (--labels with --wm-labels and --gm-labels, e.g. FreeSurfer aseg: 2,41 and 3,42). \
            Masks: 0 white matter, 1 gray matter, 2 background. Writes DIR/MRIs/<t1 name>_<ix>.npy, \
            DIR/Segmentations/segm_<ix>.npy and DIR/manifest.csv; the index follows a fixed shuffle so \
            that the last files (the seed's test set) mix the axes.
            """)

    @Option(help: "T1-weighted volume (.nii or .nii.gz).") var t1: String
    @Option(help: "Gray-matter probability map.") var gm: String?
    @Option(help: "White-matter probability map.") var wm: String?
    @Option(help: "Label map (instead of --gm and --wm).") var labels: String?
    @Option(help: "White-matter label values of --labels, comma-separated.") var wmLabels: String?
    @Option(help: "Gray-matter label values of --labels, comma-separated.") var gmLabels: String?
    @Option(help: "Output directory (seed layout).") var out: String
    @Option(help: "Side of the square output slices in pixels.") var size = 394
    @Option(help: "Slicing directions, comma-separated: axial, coronal, sagittal.") var axes = "axial,coronal,sagittal"
    @Option(help: "Skip slices whose brain (gray + white matter) covers less than this share of the pixels.")
    var minBrain = 0.02
    @Flag(help: "Replace a data set already in --out.") var overwrite = false

    func validate() throws {
        let maps = gm != nil || wm != nil, labelMap = labels != nil || wmLabels != nil || gmLabels != nil
        guard maps != labelMap else { throw ValidationError("give either --gm and --wm, or --labels with --wm-labels and --gm-labels") }
        if maps && (gm == nil || wm == nil) { throw ValidationError("--gm and --wm go together") }
        if labelMap && (labels == nil || wmLabels == nil || gmLabels == nil) {
            throw ValidationError("--labels needs --wm-labels and --gm-labels")
        }
        for (flag, text) in [("--wm-labels", wmLabels), ("--gm-labels", gmLabels)] {
            if let text, Self.integers(text) == nil { throw ValidationError("\(flag) must be comma-separated integers, not '\(text)'") }
        }
        if let w = wmLabels.flatMap(Self.integers), let g = gmLabels.flatMap(Self.integers), let both = Set(w).intersection(g).min() {
            throw ValidationError("label \(both) cannot be both white and gray matter")
        }
        guard (2...8192).contains(size) else { throw ValidationError("--size must be between 2 and 8192") }
        guard SliceAxis.list(axes) != nil else { throw ValidationError("--axes must list axial, coronal and/or sagittal, each once") }
        guard minBrain >= 0, minBrain <= 1 else { throw ValidationError("--min-brain must be between 0 and 1") }
    }

    static func integers(_ text: String) -> [Int]? {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        return parts.isEmpty || parts.contains(nil) ? nil : parts.map { $0! }
    }

    func run() throws {
        runLocally {
            let volume = try NIfTIVolume(path: t1)
            say("\(t1): \(describe(volume))")
            let slicer = try VolumeSlicer(t1: volume, tissue: try readTissue(like: volume), path: t1)
            let kept = slicer.keptSlices(axes: SliceAxis.list(axes)!, minBrain: minBrain)
            guard !kept.isEmpty else { throw FormatError(t1, "no slice has at least \(minBrain) brain (see --min-brain)") }
            let perAxis = SliceAxis.list(axes)!.map { a in "\(a.rawValue) \(kept.filter { $0.axis == a }.count)/\(slicer.geometry(a).count)" }
            say("kept \(kept.count) slices (\(perAxis.joined(separator: ", ")))")
            try write(kept, from: slicer)
        }
    }

    /// The tissue maps, checked to cover the T1's voxel grid.
    private func readTissue(like t1Volume: NIfTIVolume) throws -> TissueMaps {
        func read(_ path: String) throws -> NIfTIVolume {
            let v = try NIfTIVolume(path: path)
            guard v.dims == t1Volume.dims else {
                throw FormatError(path, "\(v.dims.map(String.init).joined(separator: "x")) voxels, but the T1 (\(t1)) has "
                                  + t1Volume.dims.map(String.init).joined(separator: "x"))
            }
            say("\(path): \(describe(v))")
            return v
        }
        if let labels {
            return TissueMaps(labels: try read(labels), wmLabels: Self.integers(wmLabels!)!, gmLabels: Self.integers(gmLabels!)!)
        }
        return TissueMaps(wm: try read(wm!), gm: try read(gm!))
    }

    /// Cuts, shuffles the file indices (SplitMix64, seed 0) and writes the pairs and the manifest.
    private func write(_ kept: [(axis: SliceAxis, index: Int)], from slicer: VolumeSlicer) throws {
        let writer = try SeedLayoutWriter(directory: out, overwrite: overwrite)
        var rng = SplitMix64(seed: 0)
        let position = shuffledPositions(kept.count, using: &rng)
        let stem = niftiStem(t1)
        var rows = [String](repeating: "", count: kept.count)
        var classCounts = [0, 0, 0]
        for (k, s) in kept.enumerated() {
            let slice = slicer.slice(s.axis, index: s.index, size: size)
            let name = try writer.write(stem: stem, index: SeedLayoutWriter.indexText(position[k], count: kept.count),
                                        image: slice.image, labels: slice.labels)
            for l in slice.labels { classCounts[Int(l)] += 1 }
            rows[position[k]] = [name, csvField(t1), s.axis.rawValue, String(s.index),
                                 String(format: "%.6g", slice.pixelMM.x), String(format: "%.6g", slice.pixelMM.y)].joined(separator: ",")
        }
        try writer.commit(manifest: (["file,source,axis,slice_index,pixel_mm_x,pixel_mm_y"] + rows).joined(separator: "\n") + "\n")
        let total = Double(classCounts.reduce(0, +))
        say("wrote \(kept.count) pairs of \(size)x\(size) to \(out)")
        say(String(format: "class fractions: white %.4f, gray %.4f, background %.4f",
                   Double(classCounts[0]) / total, Double(classCounts[1]) / total, Double(classCounts[2]) / total))
        let testAxes = kept.indices.filter { position[$0] >= kept.count - 100 }.map { kept[$0].axis }
        say("test set (last \(min(100, kept.count)) files): "
            + SliceAxis.list(axes)!.map { a in "\(a.rawValue) \(testAxes.filter { $0 == a }.count)" }.joined(separator: ", "))
    }

    private func describe(_ v: NIfTIVolume) -> String {
        let finite = v.values.filter(\.isFinite)
        return "\(v.dims.map(String.init).joined(separator: "x")) \(v.datatype), "
            + String(format: "%.3gx%.3gx%.3g mm, values %g..%g", v.spacing[0], v.spacing[1], v.spacing[2],
                     finite.min() ?? 0, finite.max() ?? 0)
    }
}

/// A NIfTI file's name without directory and .nii/.nii.gz: "T1.nii.gz" -> "T1".
func niftiStem(_ path: String) -> String {
    var name = URL(fileURLWithPath: path).lastPathComponent
    for ext in [".gz", ".nii"] where name.hasSuffix(ext) { name.removeLast(ext.count) }
    return name.isEmpty ? "slice" : name
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
