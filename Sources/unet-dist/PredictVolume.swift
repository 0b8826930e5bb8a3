import Distributed
import Foundation
import Formats
import Model
import Report

/// Volumes and the model passes behind every prediction.
extension Predict {
    /// Segments a volume slice by slice along each of `--axes`, averaging the class probabilities
    /// of every pass (and of the flipped passes with `--tta`); keeps each tissue's largest
    /// connected component with `--largest-component`. Writes `<name>_mask.nii.gz` (uint8,
    /// `niftiCode`s, the input's dimensions and affine) and `<name>_overlay.png` (nine evenly
    /// spaced slices along the first axis); returns the volumes.csv rows: one per slice of the
    /// first axis with areas in mm^2, and a total row with volumes in mm^3.
    func predictVolume(_ job: Job, axes: [SliceAxis], _ predictor: Predictor) throws -> [String] {
        let volume = try loadVolume(job.path)
        let peak = volume.values.max() ?? 0
        // Intensities scaled to [0, 1] by the volume's maximum, as `prepare` scales training slices.
        let scaled = peak > 0 ? volume.values.map { $0 / peak } : volume.values
        let classes = predictor.model.config.classes
        var probabilities = [[Float]](repeating: [Float](repeating: 0, count: volume.count), count: classes)
        for axis in axes {
            let g = SliceGeometry(axis: axis, dims: volume.dims, affine: volume.affine)
            for index in 0..<g.count {
                let slice = g.extract(scaled, index: index), plane = slice.height * slice.width
                let p = classProbabilities(slice, predictor)
                for c in 0..<classes {
                    var sum = g.extract(probabilities[c], index: index)
                    for i in 0..<plane { sum.pixels[i] += p[c * plane + i] }
                    g.insert(sum, into: &probabilities[c], index: index)
                }
                Watchdog.progress()
            }
        }
        // The model's class codes per voxel: the class of the largest summed probability (the first on ties).
        var seed = [UInt8](repeating: 0, count: volume.count)
        for i in 0..<volume.count {
            var best = 0
            for c in 1..<classes where probabilities[c][i] > probabilities[best][i] { best = c }
            seed[i] = UInt8(best)
        }
        if largestComponent {
            for tissue in 0..<(classes - 1) {
                keepLargestComponent(&seed, label: UInt8(tissue), background: UInt8(classes - 1), dims: volume.dims)
            }
        }
        if let truth = try truthLabels(like: volume) { report(seed, truth: truth, volume: volume, name: job.name) }

        let g = SliceGeometry(axis: axes[0], dims: volume.dims, affine: volume.affine)
        let suffix = job.path.hasSuffix(".nii.gz") ? ".nii.gz" : "." + URL(fileURLWithPath: job.path).pathExtension
        let name = job.name + suffix
        let pixelArea = g.rowSpacing * g.columnSpacing, voxelVolume = volume.spacing.reduce(1, *)
        let codes = seed.map { Float($0) }
        var rows: [String] = [], totals = [0, 0, 0]
        var pictures: [[RGBImage]] = []
        let shown = Set((0..<9).map { g.count > 1 ? $0 * (g.count - 1) / 8 : 0 })
        for index in 0..<g.count {
            let mask = g.extract(codes, index: index).pixels.map { UInt8($0) }
            var counts = [0, 0, 0]
            for m in mask { counts[min(Int(m), 2)] += 1 }
            for c in 0..<3 { totals[c] += counts[c] }
            rows.append(String(format: "%@,%d,%d,%d,%d,%.2f,%.2f,,", name, index, counts[0], counts[1], counts[2],
                               Double(counts[0]) * pixelArea, Double(counts[1]) * pixelArea))
            if shown.contains(index) {
                let slice = g.extract(scaled, index: index)
                let picture = slice.pixels.withUnsafeBufferPointer {
                    grayscale($0, width: slice.width, height: slice.height)
                }
                pictures.append([picture, mask.withUnsafeBufferPointer { overlay(picture, $0) }])
            }
        }
        rows.append(String(format: "%@,,%d,%d,%d,,,%.1f,%.1f", name, totals[0], totals[1], totals[2],
                           Double(totals[0]) * voxelVolume, Double(totals[1]) * voxelVolume))
        let base = out + "/" + job.name
        let labels = seed.map { Self.niftiCode($0, classes: classes) }
        try NIfTIVolume(dims: volume.dims, values: labels, affine: volume.affine).writeGzip(to: base + "_mask.nii.gz",
                                                                                            as: .uint8)
        try writeFileAtomically(panelGrid(pictures, captions: ["image", "prediction"]).pngData(),
                                to: base + "_overlay.png")
        return rows
    }

    /// The true tissue of every voxel (the model's class codes), from `--truth` label maps or
    /// `--truth-wm`/`--truth-gm` probability maps, as `prepare` labels its slices; nil without.
    func truthLabels(like volume: NIfTIVolume) throws -> [UInt8]? {
        func read(_ path: String) throws -> NIfTIVolume {
            let v = try readVolume(path: path)
            guard v.dims == volume.dims else {
                throw FormatError(path, "\(v.dims.map(String.init).joined(separator: "x")) voxels, the input has "
                                  + volume.dims.map(String.init).joined(separator: "x"))
            }
            return v
        }
        let maps: TissueMaps
        if let truth {
            maps = TissueMaps(labels: try read(truth), wmLabels: integers(wmLabels), gmLabels: integers(gmLabels))
        } else if let truthWm, let truthGm {
            maps = TissueMaps(wm: try read(truthWm), gm: try read(truthGm))
        } else {
            return nil
        }
        return tissueLabels(wm: maps.wm, gm: maps.gm)
    }

    /// Dice and the volume error per tissue against the truth, printed and written to
    /// `<name>_truth.csv`.
    func report(_ predicted: [UInt8], truth: [UInt8], volume: NIfTIVolume, name: String) {
        let voxel = volume.spacing.reduce(1, *)
        var lines = ["tissue,dice,predicted_mm3,true_mm3,volume_error_percent"]
        for (tissue, label) in [("white matter", UInt8(0)), ("gray matter", UInt8(1))] {
            var inter = 0, p = 0, t = 0
            for i in 0..<predicted.count {
                let a = predicted[i] == label, b = truth[i] == label
                if a { p += 1 }; if b { t += 1 }; if a && b { inter += 1 }
            }
            let dice = p + t == 0 ? 1 : 2 * Double(inter) / Double(p + t)
            let error = t == 0 ? Double.nan : 100 * Double(p - t) / Double(t)
            lines.append(String(format: "%@,%.6f,%.1f,%.1f,%.2f", tissue, dice, Double(p) * voxel, Double(t) * voxel,
                                error))
            print(String(format: "%@: %@ Dice %.4f, volume %.0f mm3 against %.0f mm3 (%+.1f%%)", name, tissue, dice,
                         Double(p) * voxel, Double(t) * voxel, error))
        }
        fflush(stdout)
        try? writeFileAtomically(Data((lines.joined(separator: "\n") + "\n").utf8), to: out + "/" + name + "_truth.csv")
    }

    func integers(_ text: String) -> [Int] {
        text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Softmax probabilities (classes x H x W) for one slice, at its own size or through a square
    /// of `--size`, averaged with the up-down and left-right flipped passes under `--tta`.
    func classProbabilities(_ slice: Image2D, _ predictor: Predictor) -> [Float] {
        let classes = predictor.model.config.classes, (h, w) = (slice.height, slice.width), plane = h * w
        var sum = [Float](repeating: 0, count: classes * plane)
        let flips: [(rows: Bool, columns: Bool)] = tta ? [(false, false), (true, false),
                                                          (false, true)] : [(false, false)]
        for flip in flips {
            let z = logits(flipped(slice, flip), predictor)
            // Each class's map back to the slice's orientation.
            let maps = (0..<classes).map { c in
                flipped(Image2D(height: h, width: w, pixels: Array(z[c * plane ..< (c + 1) * plane])), flip).pixels
            }
            for i in 0..<plane {
                var m = -Float.infinity
                for c in 0..<classes { m = max(m, maps[c][i]) }
                var total: Float = 0
                for c in 0..<classes { total += exp(maps[c][i] - m) }
                for c in 0..<classes { sum[c * plane + i] += exp(maps[c][i] - m) / total / Float(flips.count) }
            }
        }
        return sum
    }

    /// The image mirrored top to bottom and/or left to right (its own inverse).
    func flipped(_ image: Image2D, _ flip: (rows: Bool, columns: Bool)) -> Image2D {
        guard flip.rows || flip.columns else { return image }
        var pixels = image.pixels
        for r in 0..<image.height {
            for c in 0..<image.width {
                let sr = flip.rows ? image.height - 1 - r : r, sc = flip.columns ? image.width - 1 - c : c
                pixels[r * image.width + c] = image.pixels[sr * image.width + sc]
            }
        }
        return Image2D(height: image.height, width: image.width, pixels: pixels)
    }

    /// The logits (classes x H x W) for one slice, at its own size or through a square of
    /// `--size` (padded, resized, and each class's logits resized back bicubically and cropped).
    func logits(_ slice: Image2D, _ predictor: Predictor) -> [Float] {
        let classes = predictor.model.config.classes
        guard let size else {
            let z = slice.pixels.withUnsafeBufferPointer {
                predictor.predict($0, count: 1, height: slice.height, width: slice.width).logits
            }
            return Array(UnsafeBufferPointer(start: z.data, count: z.count))
        }
        let square = padToSquare(slice), n = square.height
        let small = resizeBilinear(square, size: size)
        let z = small.pixels.withUnsafeBufferPointer {
            predictor.predict($0, count: 1, height: size, width: size).logits
        }
        // The input is resized as `prepare` resizes training slices (bilinear); the scores come back
        // bicubically, which keeps the thin gyri and sulci that bilinear smooths into the
        // neighbouring tissue (docs/segmentation.md).
        let maps = (0..<classes).map { c in
            let scores = Array(UnsafeBufferPointer(start: z.data + c * size * size, count: size * size))
            return resizeBicubic(Image2D(height: size, width: size, pixels: scores), height: n, width: n)
        }
        // The slice's window of the square, class after class.
        let top = (n - slice.height) / 2, left = (n - slice.width) / 2
        var window = [Float](repeating: 0, count: classes * slice.height * slice.width)
        for c in 0..<classes {
            for r in 0..<slice.height {
                for col in 0..<slice.width {
                    window[(c * slice.height + r) * slice.width + col] = maps[c].pixels[(top + r) * n + left + col]
                }
            }
        }
        return window
    }
}
