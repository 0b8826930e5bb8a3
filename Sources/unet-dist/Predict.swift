import ArgumentParser
import Distributed
import Foundation
import Formats
import Model
import Report

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment slices (.npy) or NIfTI volumes with a checkpoint.",
        discussion: "Writes masks, overlay pictures and white/gray matter amounts (volumes.csv).")

    @Option(help: "A checkpoint (ours or a PyTorch state_dict as safetensors).") var checkpoint: String
    @Option(parsing: .upToNextOption,
            help: "Input .npy slices (H x W), directories of them, or volumes (.nii, .nii.gz, .mgz, .mgh).")
    var input: [String]
    @Option(help: ArgumentHelp(
        "For volumes: segment slice by slice along these axes (comma-separated: axial, coronal, sagittal).",
        discussion: "The class probabilities of the passes are averaged."))
    var axes = "axial"
    @Option(help: "The same as --axes with one axis.") var axis: String?
    @Flag(help: "For volumes: also segment each slice flipped up-down and left-right, averaging the probabilities.")
    var tta = false
    @Flag(help: "For volumes: keep only each tissue's largest 3-D connected component (6-connected).")
    var largestComponent = false
    @Option(help: ArgumentHelp(
        "For one volume: a label map of the true tissues (with --wm-labels and --gm-labels).",
        discussion: "Dice and volume errors are reported against it."))
    var truth: String?
    @Option(help: "White-matter values of --truth, comma-separated (default 1, the masks' own code).")
    var wmLabels = "1"
    @Option(help: "Gray-matter values of --truth, comma-separated (default 2).") var gmLabels = "2"
    @Option(help: "For one volume: the true white-matter probability map (with --truth-gm), labelled as `prepare`.")
    var truthWm: String?
    @Option(help: "The true gray-matter probability map (with --truth-wm).") var truthGm: String?
    @Option(help: ArgumentHelp(
        "For volumes: pad each slice to a square and resize it to this size for the model.",
        discussion: "The size it was trained at; the prediction is mapped back. Default: the slice as it is."))
    var size: Int?
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Also write each slice's logits (classes x H x W float32 .npy).") var saveLogits = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        guard SliceAxis.list(axis ?? axes) != nil else {
            throw ValidationError("--axes must list axial, coronal or sagittal, comma-separated")
        }
        if (truthWm == nil) != (truthGm == nil) { throw ValidationError("--truth-wm and --truth-gm go together") }
        if truth != nil && truthWm != nil {
            throw ValidationError("--truth and --truth-wm/--truth-gm exclude each other")
        }
        for (flag, text) in [("--wm-labels", wmLabels), ("--gm-labels", gmLabels)]
        where text.split(separator: ",").isEmpty || integers(text).count != text.split(separator: ",").count {
            throw ValidationError("\(flag) must be comma-separated integers")
        }
        if let size, !(minImageSide...4096).contains(size) {
            throw ValidationError("--size must be \(minImageSide) to 4096")
        }
    }

    /// One input and where its outputs go: `OUT/<name>_mask...`, `name` being its path relative
    /// to the folder that holds all the inputs, without the extension.
    struct Job {
        var path: String
        var name: String
        var isVolume: Bool
    }

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            // Every rank builds the model and the same list of inputs.
            let (predictor, jobs) = try comm.everyRankDoes { () throws -> (Predictor, [Job]) in
                let st = try SafeTensors(path: checkpoint)
                let model = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
                precision.apply(to: model)
                try model.load(st, path: checkpoint)
                let jobs = try Self.jobs(try expandInputs(input))
                if truth != nil || truthWm != nil, jobs.count != 1 || !jobs[0].isVolume {
                    throw FormatError(truth ?? truthWm!, "a truth is for one input volume, not \(jobs.count) input(s)")
                }
                return (Predictor(model), jobs)
            }
            // The ranks share the inputs; each reads and checks all of its own before any rank
            // writes anything, so that one bad input among many leaves no output behind.
            let mine = Array(share(jobs.indices, rank: comm.rank, size: comm.size))
            try comm.everyRankDoes {
                for i in mine {
                    if jobs[i].isVolume { _ = try loadVolume(jobs[i].path) } else { _ = try loadSlice(jobs[i].path) }
                    Watchdog.progress()
                }
            }
            try comm.rootDoes { try makeOutputFolders(jobs) }
            Watchdog.phase("prediction")
            let rows = try comm.everyRankDoes { () throws -> [String] in
                var rows: [String] = []
                for i in mine {
                    rows += try jobs[i].isVolume ? predictVolume(jobs[i], axes: SliceAxis.list(axis ?? axes)!,
                                                                 predictor)
                                                 : predictSlice(jobs[i], predictor)
                }
                return rows
            }
            // The shares are contiguous and in rank order: their rows, concatenated, are in input order.
            var all = [Self.volumesHeader]
            for r in 0..<comm.size {
                let text = String(decoding: comm.broadcast(Data(rows.joined(separator: "\n").utf8), root: r),
                                  as: UTF8.self)
                if !text.isEmpty { all += text.split(separator: "\n").map(String.init) }
            }
            try comm.rootDoes {
                try writeFileAtomically(Data((all.joined(separator: "\n") + "\n").utf8), to: out + "/volumes.csv")
            }
            say(comm, "predict: \(jobs.count) input(s) -> \(out) (masks, overlays, volumes.csv)")
        }
    }

    /// One type per column: a slice's row leaves the volume columns empty, a volume's total row
    /// (`slice` empty) the area columns.
    static let volumesHeader = "file,slice,wm_pixels,gm_pixels,background_pixels,wm_mm2,gm_mm2,wm_mm3,gm_mm3"

    /// The NIfTI masks' codes: 0 background (what viewers leave clear), 1 white matter, 2 gray
    /// matter. The model's classes (docs/design.md, section 3): 0 white matter, 1 gray matter, the last background.
    static func niftiCode(_ label: UInt8, classes: Int) -> Float {
        Int(label) == classes - 1 ? 0 : Float(label) + 1
    }

    /// The label tables beside the masks: ITK-SNAP's label description file and FSLeyes' lookup
    /// table, in the overlay pictures' colours.
    static func labelTables() -> (itksnap: String, fsleyes: String) {
        let names = ["white matter", "gray matter"]
        var snap = "# ITK-SNAP Label Description File (unet-dist predict)\n# IDX -R- -G- -B- -A- VIS MSH LABEL\n"
        snap += "0 0 0 0 0 0 0 \"background\"\n"
        var lut = ""
        for (i, name) in names.enumerated() {
            let (r, g, b) = classColors[i]
            snap += "\(i + 1) \(r) \(g) \(b) 1 1 1 \"\(name)\"\n"
            lut += String(format: "%d %.4f %.4f %.4f %@\n", i + 1, Double(r) / 255, Double(g) / 255, Double(b) / 255,
                          name)
        }
        return (snap, lut)
    }

    func makeOutputFolders(_ jobs: [Job]) throws {
        let folders = Set([out] + jobs.map {
            URL(fileURLWithPath: out + "/" + $0.name).deletingLastPathComponent().path
        })
        for folder in folders.sorted() {
            do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            catch { throw FormatError(folder, "cannot create the output folder: \(error.localizedDescription)") }
        }
        if jobs.contains(where: \.isVolume) {
            let tables = Self.labelTables()
            try writeFileAtomically(Data(tables.itksnap.utf8), to: out + "/labels.itksnap.txt")
            try writeFileAtomically(Data(tables.fsleyes.utf8), to: out + "/labels.lut")
        }
    }

    /// Output names: each input's path relative to the folder that holds them all, so that
    /// `a/s.npy` and `b/s.npy` write `a/s_mask.npy` and `b/s_mask.npy`.
    static func jobs(_ files: [String]) throws -> [Job] {
        let absolute = files.map {
            URL(fileURLWithPath: $0).standardizedFileURL.resolvingSymlinksInPath().pathComponents
        }
        var common = Array(absolute[0].dropLast())
        for parts in absolute.dropFirst() {
            let folder = Array(parts.dropLast())
            var n = 0
            while n < min(common.count, folder.count) && common[n] == folder[n] { n += 1 }
            common = Array(common.prefix(n))
        }
        var seen: [String: (file: String, parts: [String])] = [:]
        return try zip(files, absolute).map { file, parts in
            let relative = parts.dropFirst(common.count).joined(separator: "/")
            let volume = isVolume(file)
            let suffix = relative.hasSuffix(".nii.gz") ? 7 : volume || relative.hasSuffix(".npy") ? 4 : 0
            let name = String(relative.dropLast(suffix))
            if let other = seen[name] {
                throw FormatError(file, other.parts == parts ? "is given twice"
                                  : "would write the same outputs (\(name)_...) as \(other.file)")
            }
            seen[name] = (file, parts)
            return Job(path: file, name: name, isVolume: volume)
        }
    }

    static func isVolume(_ path: String) -> Bool {
        path.hasSuffix(".nii") || path.hasSuffix(".nii.gz") || isMGHPath(path)
    }

    /// An H x W image, float or uint8, every value finite.
    func loadSlice(_ file: String) throws -> (image: [Float], height: Int, width: Int) {
        let array = try NpyArray(path: file)
        let dims = array.shape.filter { $0 != 1 }
        guard dims.count == 2, array.isFloatingPoint || array.type == .int(bytes: 1, signed: false) else {
            throw FormatError(file,
                              "expected an H x W image (float or uint8), found shape \(array.shape) \(array.type)")
        }
        guard dims.allSatisfy({ $0 >= minImageSide }) else {
            throw FormatError(file, "image is \(dims[0])x\(dims[1]), smaller than the "
                              + "\(minImageSide)x\(minImageSide) the models take")
        }
        let image = array.floats()
        if let bad = image.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(file, "image has a non-finite value (\(image[bad])) at element \(bad)")
        }
        return (image, dims[0], dims[1])
    }

    func loadVolume(_ file: String) throws -> NIfTIVolume {
        let volume = try readVolume(path: file)
        // The model sees each slice (or its square at --size): both sides at least minImageSide.
        if size == nil {
            for axis in SliceAxis.list(axis ?? axes)! {
                let g = SliceGeometry(axis: axis, dims: volume.dims, affine: volume.affine)
                guard g.height >= minImageSide && g.width >= minImageSide else {
                    throw FormatError(file, "its \(axis.rawValue) slices are \(g.height)x\(g.width), smaller than the "
                                      + "\(minImageSide)x\(minImageSide) the models take (--size resizes them)")
                }
            }
        }
        if let bad = volume.values.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(file, "volume has a non-finite value (\(volume.values[bad])) at voxel \(bad)")
        }
        return volume
    }

    /// Segments one .npy slice: `<name>_mask.npy` (the class codes of the training masks),
    /// the overlay, and the logits when asked.
    func predictSlice(_ job: Job, _ predictor: Predictor) throws -> [String] {
        let (image, h, w) = try loadSlice(job.path)
        let classes = predictor.model.config.classes
        let (logits, mask) = image.withUnsafeBufferPointer { predictor.predict($0, count: 1, height: h, width: w) }
        let base = out + "/" + job.name
        try writeFileAtomically(NpyArray(uint8: mask, shape: [h, w]).encoded(), to: base + "_mask.npy")
        if saveLogits {
            let z = Array(UnsafeBufferPointer(start: logits.data, count: logits.count))
            try writeFileAtomically(NpyArray(float32: z, shape: [classes, h, w]).encoded(), to: base + "_logits.npy")
        }
        let picture = image.withUnsafeBufferPointer { grayscale($0, width: w, height: h) }
        let overlaid = mask.withUnsafeBufferPointer { overlay(picture, $0) }
        try writeFileAtomically(panelGrid([[picture, overlaid]], captions: ["image", "prediction"]).pngData(),
                                to: base + "_overlay.png")
        Watchdog.progress()
        var counts = [Int](repeating: 0, count: max(classes, 3))
        for m in mask { counts[Int(m)] += 1 }
        // A bare .npy slice carries no pixel size: the areas stay empty.
        return ["\(job.name).npy,,\(counts[0]),\(counts[1]),\(counts[2]),,,,"]
    }

    /// Files as given; directories contribute their .npy files in name order.
    func expandInputs(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p,
                                                 isDirectory: &isDir) else { throw FormatError(p, "no such file") }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: p)) ?? []
                files += names.filter { $0.hasSuffix(".npy") }.sorted().map { "\(p)/\($0)" }
            } else {
                files.append(p)
            }
        }
        guard !files.isEmpty else { throw FormatError(paths.joined(separator: " "), "no .npy slices to segment") }
        return files
    }
}
