import ArgumentParser
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
    @OptionGroup var precision: PrecisionOptions

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            guard comm.size == 1 else { throw RunError("predict runs on one process") }
            let st = try SafeTensors(path: checkpoint)
            let model = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
            precision.apply(to: model)
            try model.load(st, path: checkpoint)
            let predictor = Predictor(model)
            guard let sliceAxis = SliceAxis(rawValue: axis) else { throw FormatError(axis, "--axis must be axial, coronal or sagittal") }
            let files = try expandInputs(input)
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            var rows = ["file,slice,wm_pixels,gm_pixels,background_pixels,wm_mm2,gm_mm2"]
            for file in files where isVolume(file) {
                rows += try predictVolume(file, axis: sliceAxis, predictor)
            }
            for file in files where !isVolume(file) {
                let array = try NpyArray(path: file)
                let dims = array.shape.filter { $0 != 1 }
                guard dims.count == 2, array.isFloatingPoint || array.type == .int(bytes: 1, signed: false) else {
                    throw FormatError(file, "expected an H x W image, found shape \(array.shape)")
                }
                let (h, w) = (dims[0], dims[1])
                let image = array.floats()
                guard image.allSatisfy(\.isFinite) else { throw FormatError(file, "image has non-finite values") }
                let (logits, mask) = image.withUnsafeBufferPointer { predictor.predict($0, count: 1, height: h, width: w) }
                let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
                try writeFileAtomically(NpyArray(uint8: mask, shape: [h, w]).encoded(), to: "\(out)/\(stem)_mask.npy")
                if saveLogits {
                    let z = Array(UnsafeBufferPointer(start: logits.data, count: logits.count))
                    try writeFileAtomically(NpyArray(float32: z, shape: [model.config.classes, h, w]).encoded(),
                                            to: "\(out)/\(stem)_logits.npy")
                }
                let picture = image.withUnsafeBufferPointer { grayscale($0, width: w, height: h) }
                let overlaid = mask.withUnsafeBufferPointer { overlay(picture, $0) }
                try writeFileAtomically(panelGrid([[picture, overlaid]], captions: ["image", "prediction"]).pngData(),
                                        to: "\(out)/\(stem)_overlay.png")
                var counts = [Int](repeating: 0, count: model.config.classes)
                for m in mask { counts[Int(m)] += 1 }
                // A bare .npy slice carries no voxel size: areas are left empty.
                rows.append("\(URL(fileURLWithPath: file).lastPathComponent),,\(counts[0]),\(counts[1]),\(counts[2]),,")
            }
            try writeFileAtomically(Data((rows.joined(separator: "\n") + "\n").utf8), to: out + "/volumes.csv")
            say(comm, "predict: \(files.count) input(s) -> \(out) (masks, overlays, volumes.csv)")
        }
    }

    func isVolume(_ path: String) -> Bool { path.hasSuffix(".nii") || path.hasSuffix(".nii.gz") }

    /// Segments a volume slice by slice; writes `<stem>_mask.nii.gz` (uint8 labels, the input's
    /// dimensions and affine) and `<stem>_overlay.png` (nine evenly spaced slices); returns the
    /// volumes.csv rows: one per slice with areas in mm^2, and a total row with volumes in mm^3.
    func predictVolume(_ file: String, axis: SliceAxis, _ predictor: Predictor) throws -> [String] {
        let volume = try NIfTIVolume(path: file)
        let peak = volume.values.max() ?? 0
        guard peak.isFinite else { throw FormatError(file, "volume has non-finite values") }
        // Intensities scaled to [0, 1] by the volume's maximum, as `prepare` scales training slices.
        let scaled = peak > 0 ? volume.values.map { $0 / peak } : volume.values
        let g = SliceGeometry(axis: axis, dims: volume.dims, affine: volume.affine)
        var labels = [Float](repeating: 2, count: volume.count)
        let name = URL(fileURLWithPath: file).lastPathComponent
        let stem = name.hasSuffix(".nii.gz") ? String(name.dropLast(7)) : String(name.dropLast(4))
        let pixelArea = g.rowSpacing * g.columnSpacing, voxelVolume = volume.spacing.reduce(1, *)
        var rows: [String] = [], totals = [0, 0, 0]
        var pictures: [[RGBImage]] = []
        let shown = Set((0..<9).map { g.count > 1 ? $0 * (g.count - 1) / 8 : 0 })
        for index in 0..<g.count {
            let slice = g.extract(scaled, index: index)
            let mask = segment(slice, predictor)
            g.insert(Image2D(height: slice.height, width: slice.width, pixels: mask.map(Float.init)), into: &labels, index: index)
            var counts = [0, 0, 0]
            for m in mask { counts[min(Int(m), 2)] += 1 }
            for c in 0..<3 { totals[c] += counts[c] }
            rows.append(String(format: "%@,%d,%d,%d,%d,%.2f,%.2f", name, index, counts[0], counts[1], counts[2],
                               Double(counts[0]) * pixelArea, Double(counts[1]) * pixelArea))
            if shown.contains(index) {
                let picture = slice.pixels.withUnsafeBufferPointer { grayscale($0, width: slice.width, height: slice.height) }
                pictures.append([picture, mask.withUnsafeBufferPointer { overlay(picture, $0) }])
            }
        }
        rows.append(String(format: "%@,total,%d,%d,%d,%.1f mm3,%.1f mm3", name, totals[0], totals[1], totals[2],
                           Double(totals[0]) * voxelVolume, Double(totals[1]) * voxelVolume))
        try NIfTIVolume(dims: volume.dims, values: labels, affine: volume.affine).writeGzip(to: "\(out)/\(stem)_mask.nii.gz", as: .uint8)
        try writeFileAtomically(panelGrid(pictures, captions: ["image", "prediction"]).pngData(), to: "\(out)/\(stem)_overlay.png")
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
