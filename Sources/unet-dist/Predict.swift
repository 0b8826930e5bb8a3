import ArgumentParser
import Distributed
import Foundation
import Formats
import Model
import Report

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment slices (.npy) or NIfTI volumes with a checkpoint: masks, overlay pictures and white/gray matter amounts.")

    @Option(help: "A checkpoint (ours or a PyTorch state_dict as safetensors).") var checkpoint: String
    @Option(parsing: .upToNextOption, help: "Input .npy slices (H x W), directories of them, or NIfTI volumes (.nii, .nii.gz).")
    var input: [String]
    @Option(help: "For volumes: segment slice by slice along axial, coronal or sagittal.") var axis = "axial"
    @Option(help: "For volumes: pad each slice to a square and resize it to this size for the model (the size it was trained at), then map the prediction back; default: the slice as it is.")
    var size: Int?
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Also write each slice's logits (classes x H x W float32 .npy).") var saveLogits = false
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard SliceAxis(rawValue: axis) != nil else { throw ValidationError("--axis must be axial, coronal or sagittal") }
        if let size, !(1...4096).contains(size) { throw ValidationError("--size must be 1 to 4096") }
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
            var setupError: Error?
            var predictor: Predictor?, jobs: [Job] = []
            do {
                let st = try SafeTensors(path: checkpoint)
                let model = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
                try model.load(st, path: checkpoint)
                predictor = Predictor(model)
                jobs = try Self.jobs(try expandInputs(input))
            } catch { setupError = error }
            if let message = comm.agree(on: setupError) { throw RunError(message) }
            // The ranks share the inputs; each reads and checks all of its own before any rank
            // writes anything, so that one bad input among many leaves no output behind.
            let mine = Array(share(jobs.indices, rank: comm.rank, size: comm.size))
            var checkError: Error?
            do {
                for i in mine {
                    if jobs[i].isVolume { _ = try loadVolume(jobs[i].path) } else { _ = try loadSlice(jobs[i].path) }
                    Watchdog.progress()
                }
            } catch { checkError = error }
            if let message = comm.agree(on: checkError) { throw RunError(message) }
            var folderError: Error?
            if comm.isRoot {
                do { try makeOutputFolders(jobs) } catch { folderError = error }
            }
            if let message = comm.agree(on: folderError) { throw RunError(message) }
            var rows: [String] = [], workError: Error?
            Watchdog.phase("prediction")
            do {
                for i in mine {
                    rows += try jobs[i].isVolume ? predictVolume(jobs[i], axis: SliceAxis(rawValue: axis)!, predictor!)
                                                 : predictSlice(jobs[i], predictor!)
                }
            } catch { workError = error }
            if let message = comm.agree(on: workError) { throw RunError(message) }
            // The shares are contiguous and in rank order: their rows, concatenated, are in input order.
            var all = [Self.volumesHeader]
            for r in 0..<comm.size {
                let text = String(decoding: comm.broadcast(Data(rows.joined(separator: "\n").utf8), root: r), as: UTF8.self)
                if !text.isEmpty { all += text.split(separator: "\n").map(String.init) }
            }
            var writeError: Error?
            if comm.isRoot {
                do { try writeFileAtomically(Data((all.joined(separator: "\n") + "\n").utf8), to: out + "/volumes.csv") }
                catch { writeError = error }
            }
            if let message = comm.agree(on: writeError) { throw RunError(message) }
            say(comm, "predict: \(jobs.count) input(s) -> \(out) (masks, overlays, volumes.csv)")
        }
    }

    /// One type per column: a slice's row leaves the volume columns empty, a volume's total row
    /// (`slice` empty) the area columns.
    static let volumesHeader = "file,slice,wm_pixels,gm_pixels,background_pixels,wm_mm2,gm_mm2,wm_mm3,gm_mm3"

    /// The NIfTI masks' codes: 0 background (what viewers leave clear), 1 white matter, 2 gray
    /// matter. The model's classes are the seed's: 0 white matter, 1 gray matter, the last background.
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
            lut += String(format: "%d %.4f %.4f %.4f %@\n", i + 1, Double(r) / 255, Double(g) / 255, Double(b) / 255, name)
        }
        return (snap, lut)
    }

    func makeOutputFolders(_ jobs: [Job]) throws {
        let folders = Set([out] + jobs.map { URL(fileURLWithPath: out + "/" + $0.name).deletingLastPathComponent().path })
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
        let absolute = files.map { URL(fileURLWithPath: $0).standardizedFileURL.resolvingSymlinksInPath().pathComponents }
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

    static func isVolume(_ path: String) -> Bool { path.hasSuffix(".nii") || path.hasSuffix(".nii.gz") }

    /// An H x W image, float or uint8, every value finite.
    func loadSlice(_ file: String) throws -> (image: [Float], height: Int, width: Int) {
        let array = try NpyArray(path: file)
        let dims = array.shape.filter { $0 != 1 }
        guard dims.count == 2, array.isFloatingPoint || array.type == .int(bytes: 1, signed: false) else {
            throw FormatError(file, "expected an H x W image (float or uint8), found shape \(array.shape) \(array.type)")
        }
        let image = array.floats()
        if let bad = image.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(file, "image has a non-finite value (\(image[bad])) at element \(bad)")
        }
        return (image, dims[0], dims[1])
    }

    func loadVolume(_ file: String) throws -> NIfTIVolume {
        let volume = try NIfTIVolume(path: file)
        if let bad = volume.values.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(file, "volume has a non-finite value (\(volume.values[bad])) at voxel \(bad)")
        }
        return volume
    }

    /// Segments one .npy slice: `<name>_mask.npy` (the seed's codes, like its training masks),
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
        try writeFileAtomically(panelGrid([[picture, overlaid]], captions: ["image", "prediction"]).pngData(), to: base + "_overlay.png")
        Watchdog.progress()
        var counts = [Int](repeating: 0, count: max(classes, 3))
        for m in mask { counts[Int(m)] += 1 }
        // A bare .npy slice carries no pixel size: the areas stay empty.
        return ["\(job.name).npy,,\(counts[0]),\(counts[1]),\(counts[2]),,,,"]
    }

    /// Segments a volume slice by slice; writes `<name>_mask.nii.gz` (uint8, `niftiCode`s, the
    /// input's dimensions and affine) and `<name>_overlay.png` (nine evenly spaced slices); returns
    /// the volumes.csv rows: one per slice with areas in mm^2, and a total row with volumes in mm^3.
    func predictVolume(_ job: Job, axis: SliceAxis, _ predictor: Predictor) throws -> [String] {
        let volume = try loadVolume(job.path)
        let peak = volume.values.max() ?? 0
        // Intensities scaled to [0, 1] by the volume's maximum, as `prepare` scales training slices.
        let scaled = peak > 0 ? volume.values.map { $0 / peak } : volume.values
        let g = SliceGeometry(axis: axis, dims: volume.dims, affine: volume.affine)
        let classes = predictor.model.config.classes
        var labels = [Float](repeating: 0, count: volume.count)
        let name = job.path.hasSuffix(".nii.gz") ? job.name + ".nii.gz" : job.name + ".nii"
        let pixelArea = g.rowSpacing * g.columnSpacing, voxelVolume = volume.spacing.reduce(1, *)
        var rows: [String] = [], totals = [0, 0, 0]
        var pictures: [[RGBImage]] = []
        let shown = Set((0..<9).map { g.count > 1 ? $0 * (g.count - 1) / 8 : 0 })
        for index in 0..<g.count {
            let slice = g.extract(scaled, index: index)
            let mask = segment(slice, predictor)
            g.insert(Image2D(height: slice.height, width: slice.width, pixels: mask.map { Self.niftiCode($0, classes: classes) }),
                     into: &labels, index: index)
            Watchdog.progress()
            var counts = [0, 0, 0]
            for m in mask { counts[min(Int(m), 2)] += 1 }
            for c in 0..<3 { totals[c] += counts[c] }
            rows.append(String(format: "%@,%d,%d,%d,%d,%.2f,%.2f,,", name, index, counts[0], counts[1], counts[2],
                               Double(counts[0]) * pixelArea, Double(counts[1]) * pixelArea))
            if shown.contains(index) {
                let picture = slice.pixels.withUnsafeBufferPointer { grayscale($0, width: slice.width, height: slice.height) }
                pictures.append([picture, mask.withUnsafeBufferPointer { overlay(picture, $0) }])
            }
        }
        rows.append(String(format: "%@,,%d,%d,%d,,,%.1f,%.1f", name, totals[0], totals[1], totals[2],
                           Double(totals[0]) * voxelVolume, Double(totals[1]) * voxelVolume))
        let base = out + "/" + job.name
        try NIfTIVolume(dims: volume.dims, values: labels, affine: volume.affine).writeGzip(to: base + "_mask.nii.gz", as: .uint8)
        try writeFileAtomically(panelGrid(pictures, captions: ["image", "prediction"]).pngData(), to: base + "_overlay.png")
        return rows
    }

    /// Class labels for one slice, at its own size or through a square of `--size`.
    func segment(_ slice: Image2D, _ predictor: Predictor) -> [UInt8] {
        guard let size else {
            return slice.pixels.withUnsafeBufferPointer { predictor.predict($0, count: 1, height: slice.height, width: slice.width).masks }
        }
        let square = padToSquare(slice), n = square.height
        let small = resizeBilinear(square, size: size)
        let logits = small.pixels.withUnsafeBufferPointer { predictor.predict($0, count: 1, height: size, width: size).logits }
        let classes = predictor.model.config.classes
        // Each class's logits back to the padded square, then cropped to the slice.
        let maps = (0..<classes).map { c in
            resizeBilinear(Image2D(height: size, width: size,
                                   pixels: Array(UnsafeBufferPointer(start: logits.data + c * size * size, count: size * size))),
                           height: n, width: n)
        }
        // The slice's window of the square, class after class, then the per-pixel argmax.
        let top = (n - slice.height) / 2, left = (n - slice.width) / 2
        var window = [Float](repeating: 0, count: classes * slice.height * slice.width)
        for c in 0..<classes {
            for r in 0..<slice.height {
                for col in 0..<slice.width {
                    window[(c * slice.height + r) * slice.width + col] = maps[c].pixels[(top + r) * n + left + col]
                }
            }
        }
        return classMasks(window, count: 1, classes: classes, spatial: slice.height * slice.width)
    }

    /// Files as given; directories contribute their .npy files in name order.
    func expandInputs(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw FormatError(p, "no such file") }
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
