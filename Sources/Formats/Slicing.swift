import Foundation

/// A 2-D float image, row-major (the seed's H x W).
public struct Image2D: Equatable {
    public var height: Int, width: Int
    public var pixels: [Float]
    public init(height: Int, width: Int, pixels: [Float]) {
        precondition(pixels.count == height * width)
        self.height = height; self.width = width; self.pixels = pixels
    }
    public subscript(r: Int, c: Int) -> Float { pixels[r * width + c] }
}

/// The three slicing directions, named by the scanner axis they cut across.
///
/// Slices come out in one display orientation whatever the file's voxel order, so volumes stored
/// differently give alike images: rows run from the high end of their scanner axis (anterior for
/// axial, superior for coronal and sagittal) down, columns from the low end up (patient left to
/// right in RAS scanner coordinates for axial and coronal, posterior to anterior for sagittal).
public enum SliceAxis: String, CaseIterable {
    case axial, coronal, sagittal

    /// The scanner axis (0 x, 1 y, 2 z) the slices are perpendicular to.
    public var scannerAxis: Int { self == .sagittal ? 0 : self == .coronal ? 1 : 2 }
    var rowScannerAxis: Int { self == .axial ? 1 : 2 }
    var columnScannerAxis: Int { self == .sagittal ? 1 : 0 }

    /// "axial,coronal" to [.axial, .coronal]; nil on an unknown name or a repeat.
    public static func list(_ text: String) -> [SliceAxis]? {
        let axes = text.split(separator: ",").map { SliceAxis(rawValue: $0.trimmingCharacters(in: .whitespaces)) }
        guard !axes.isEmpty, axes.allSatisfy({ $0 != nil }), Set(axes.map { $0! }).count == axes.count else {
            return nil
        }
        return axes.map { $0! }
    }
}

/// Which voxel axis runs closest to each scanner axis, and in which direction.
public struct VoxelOrientation: Equatable {
    /// voxelAxis[w]: the voxel axis nearest to scanner axis w (x, y, z).
    public let voxelAxis: [Int]
    /// True where that voxel axis runs against the scanner axis.
    public let reversed: [Bool]

    /// The assignment of voxel axes to scanner axes (a permutation, so an oblique volume still gets
    /// three distinct axes) with the largest summed |cosine| between each pair.
    public init(affine: [[Double]]) {
        let cosine = (0..<3).map { w in
            (0..<3).map { v -> Double in
                let n = (0..<3).map { affine[$0][v] * affine[$0][v] }.reduce(0, +).squareRoot()
                return n > 0 ? affine[w][v] / n : 0
            }
        }
        let permutations = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
        let best = permutations.max { a, b in
            (0..<3).map { abs(cosine[$0][a[$0]]) }.reduce(0, +) < (0..<3).map { abs(cosine[$0][b[$0]]) }.reduce(0, +)
        }!
        voxelAxis = best
        reversed = (0..<3).map { cosine[$0][best[$0]] < 0 }
    }
}

/// Where the pixels of the slices along one axis come from in the volume.
public struct SliceGeometry {
    public let axis: SliceAxis
    /// The voxel axis slices are taken along, and how many there are.
    public let voxelAxis: Int, count: Int
    /// The slice image's size before padding and resizing.
    public let height: Int, width: Int
    /// Millimetres between neighbouring rows and columns.
    public let rowSpacing: Double, columnSpacing: Double
    private let rowAxis: Int, columnAxis: Int, flipRows: Bool, flipColumns: Bool
    private let strides: [Int]

    public init(axis: SliceAxis, dims: [Int], affine: [[Double]]) {
        let o = VoxelOrientation(affine: affine)
        let spacing = (0..<3).map { v in (0..<3).map { affine[$0][v] * affine[$0][v] }.reduce(0, +).squareRoot() }
        self.axis = axis
        voxelAxis = o.voxelAxis[axis.scannerAxis]
        count = dims[voxelAxis]
        rowAxis = o.voxelAxis[axis.rowScannerAxis]
        columnAxis = o.voxelAxis[axis.columnScannerAxis]
        // Rows run down their scanner axis (from high to low), columns up theirs.
        flipRows = !o.reversed[axis.rowScannerAxis]
        flipColumns = o.reversed[axis.columnScannerAxis]
        height = dims[rowAxis]; width = dims[columnAxis]
        rowSpacing = spacing[rowAxis]; columnSpacing = spacing[columnAxis]
        strides = [1, dims[0], dims[0] * dims[1]]
    }

    /// Slice `index` of a volume with this geometry's dims (x fastest).
    public func extract(_ values: [Float], index: Int) -> Image2D {
        precondition(index >= 0 && index < count)
        var pixels = [Float](repeating: 0, count: height * width)
        let base = index * strides[voxelAxis]
        values.withUnsafeBufferPointer { v in
            for r in 0..<height {
                let rowBase = base + (flipRows ? height - 1 - r : r) * strides[rowAxis]
                for c in 0..<width {
                    pixels[r * width + c] = v[rowBase + (flipColumns ? width - 1 - c : c) * strides[columnAxis]]
                }
            }
        }
        return Image2D(height: height, width: width, pixels: pixels)
    }

    /// Writes a slice back where `extract` took it from: the inverse mapping.
    public func insert(_ image: Image2D, into values: inout [Float], index: Int) {
        precondition(index >= 0 && index < count && image.height == height && image.width == width)
        let base = index * strides[voxelAxis]
        values.withUnsafeMutableBufferPointer { v in
            for r in 0..<height {
                let rowBase = base + (flipRows ? height - 1 - r : r) * strides[rowAxis]
                for c in 0..<width {
                    v[rowBase + (flipColumns ? width - 1 - c : c) * strides[columnAxis]] = image.pixels[r * width + c]
                }
            }
        }
    }
}

/// Zero-pads to a square, centered; an odd remainder goes to the bottom or right.
public func padToSquare(_ image: Image2D) -> Image2D {
    let n = max(image.height, image.width)
    let top = (n - image.height) / 2, left = (n - image.width) / 2
    var pixels = [Float](repeating: 0, count: n * n)
    for r in 0..<image.height {
        for c in 0..<image.width { pixels[(top + r) * n + left + c] = image.pixels[r * image.width + c] }
    }
    return Image2D(height: n, width: n, pixels: pixels)
}

/// Bilinear resampling to size x size with half-pixel centers, as PyTorch's
/// F.interpolate(mode="bilinear", align_corners=False) without antialiasing.
public func resizeBilinear(_ image: Image2D, size: Int) -> Image2D {
    resizeBilinear(image, height: size, width: size)
}

/// The same to any height x width.
public func resizeBilinear(_ image: Image2D, height: Int, width: Int) -> Image2D {
    resample(image, rows: bilinearTaps(from: image.height, to: height),
             columns: bilinearTaps(from: image.width, to: width))
}

/// For each output index: the two source indices and their weights.
private func bilinearTaps(from n: Int, to size: Int) -> [Taps] {
    let scale = Double(n) / Double(size)
    return (0..<size).map { d in
        // PyTorch clamps source positions left of the first center to it.
        let src = max((Double(d) + 0.5) * scale - 0.5, 0)
        let i0 = min(Int(src), n - 1), i1 = min(i0 + 1, n - 1)
        let w1 = Float(src - Double(i0))
        return Taps(index: [i0, i1], weight: [1 - w1, w1])
    }
}

/// Bicubic resampling to height x width with half-pixel centers, as PyTorch's
/// F.interpolate(mode="bicubic", align_corners=False): Keys' kernel with a = -0.75, source
/// positions left unclamped and taps past the border clamped to it. Sharper than bilinear: where
/// class scores are brought back to a finer grid it keeps thin structures that bilinear smooths
/// away (docs/segmentation.md).
public func resizeBicubic(_ image: Image2D, height: Int, width: Int) -> Image2D {
    resample(image, rows: bicubicTaps(from: image.height, to: height),
             columns: bicubicTaps(from: image.width, to: width))
}

/// For each output index: the four source indices around it and their weights.
private func bicubicTaps(from n: Int, to size: Int) -> [Taps] {
    let scale = Float(n) / Float(size)
    return (0..<size).map { d in
        let src = (Float(d) + 0.5) * scale - 0.5
        let floor = src.rounded(.down), t = src - floor
        let first = Int(floor) - 1
        return Taps(index: (0..<4).map { min(max(first + $0, 0), n - 1) },
                    weight: [keysCubic(t + 1), keysCubic(t), keysCubic(1 - t), keysCubic((1 - t) + 1)])
    }
}

/// Keys' cubic convolution kernel with a = -0.75 (PyTorch's), at distance x from a tap.
private func keysCubic(_ x: Float) -> Float {
    let a: Float = -0.75, x = abs(x)
    if x <= 1 {
        let p = (a + 2) * x - (a + 3)
        return p * x * x + 1
    }
    guard x < 2 else { return 0 }
    let p = a * x - 5 * a, q = p * x + 8 * a
    return q * x - 4 * a
}

/// One output index's source indices and weights.
private struct Taps {
    var index: [Int], weight: [Float]

    /// sum weight[k] * value(index[k]), added in tap order.
    @inline(__always) func apply(_ value: (Int) -> Float) -> Float {
        var v = weight[0] * value(index[0])
        for k in 1..<index.count { v += weight[k] * value(index[k]) }
        return v
    }
}

/// Separable resampling: rows first, then columns.
private func resample(_ image: Image2D, rows: [Taps], columns: [Taps]) -> Image2D {
    let w = image.width, height = rows.count, width = columns.count
    var tall = [Float](repeating: 0, count: height * w)
    for (r, t) in rows.enumerated() {
        for c in 0..<w { tall[r * w + c] = t.apply { image.pixels[$0 * w + c] } }
    }
    var out = [Float](repeating: 0, count: height * width)
    for r in 0..<height {
        for (c, t) in columns.enumerated() { out[r * width + c] = t.apply { tall[r * w + $0] } }
    }
    return Image2D(height: height, width: width, pixels: out)
}

/// White- and gray-matter maps over a volume, as probabilities in [0, 1].
public struct TissueMaps {
    public var wm: [Float], gm: [Float]

    /// From probability maps; maps stored as 0..255 (or any scale above 1) are divided by their max.
    public init(wm: NIfTIVolume, gm: NIfTIVolume) {
        self.wm = Self.probabilities(wm.values)
        self.gm = Self.probabilities(gm.values)
    }

    /// From a label map (FreeSurfer aseg, FSL FAST pveseg, ...): 1 where the label is listed, else 0.
    public init(labels: NIfTIVolume, wmLabels: [Int], gmLabels: [Int]) {
        let w = Set(wmLabels.map(Float.init)), g = Set(gmLabels.map(Float.init))
        wm = labels.values.map { w.contains($0) ? 1 : 0 }
        gm = labels.values.map { g.contains($0) ? 1 : 0 }
    }

    private static func probabilities(_ v: [Float]) -> [Float] {
        let finite = v.map { $0.isFinite ? $0 : 0 }
        let top = finite.max() ?? 0
        return top > 1 ? finite.map { $0 / top } : finite
    }

    /// The share of the slice's pixels that are brain: gm + wm above one half.
    public func brainFraction(_ geometry: SliceGeometry, index: Int) -> Double {
        let w = geometry.extract(wm, index: index), g = geometry.extract(gm, index: index)
        let brain = zip(w.pixels, g.pixels).reduce(0) { $0 + ($1.0 + $1.1 > 0.5 ? 1 : 0) }
        return Double(brain) / Double(max(w.pixels.count, 1))
    }
}

/// Per pixel: 0 white matter, 1 gray matter, 2 background, by argmax(wm, gm, 1 - wm - gm), ties
/// to the lower label.
public func tissueLabels(wm: [Float], gm: [Float]) -> [UInt8] {
    zip(wm, gm).map { w, g in
        let background = 1 - w - g
        if w >= g && w >= background { return 0 }
        return g >= background ? 1 : 2
    }
}

/// One slice cut from a volume, ready for the seed layout.
public struct PreparedSlice {
    public var axis: SliceAxis
    public var index: Int
    public var image: Image2D
    public var labels: [UInt8]
    /// Millimetres per output pixel across (x, columns) and down (y, rows).
    public var pixelMM: (x: Double, y: Double)
}

/// T1 slices and their masks from a registered set of volumes.
public struct VolumeSlicer {
    public let t1: [Float]
    public let tissue: TissueMaps
    public let dims: [Int]
    public let affine: [[Double]]

    /// T1 divided by its maximum (non-finite voxels, which some pipelines leave outside the
    /// brain, count as 0).
    public init(t1 volume: NIfTIVolume, tissue: TissueMaps, path: String) throws {
        let finite = volume.values.map { $0.isFinite ? $0 : 0 }
        guard let top = finite.max(), top > 0 else { throw FormatError(path, "T1 volume has no positive value") }
        t1 = finite.map { $0 / top }
        self.tissue = tissue
        dims = volume.dims
        affine = volume.affine
    }

    public func geometry(_ axis: SliceAxis) -> SliceGeometry { SliceGeometry(axis: axis, dims: dims, affine: affine) }

    /// (axis, slice index) of every slice with at least `minBrain` brain, axis by axis in the order given.
    public func keptSlices(axes: [SliceAxis], minBrain: Double) -> [(axis: SliceAxis, index: Int)] {
        axes.flatMap { axis -> [(axis: SliceAxis, index: Int)] in
            let g = geometry(axis)
            return (0..<g.count).filter { tissue.brainFraction(g, index: $0) >= minBrain }.map { (axis, $0) }
        }
    }

    /// Slice `index` along `axis`: padded square, resized to size x size, T1 clipped to [0, 1],
    /// labelled after resizing the tissue maps.
    public func slice(_ axis: SliceAxis, index: Int, size: Int) -> PreparedSlice {
        let g = geometry(axis)
        func cut(_ v: [Float]) -> Image2D { resizeBilinear(padToSquare(g.extract(v, index: index)), size: size) }
        var image = cut(t1)
        image.pixels = image.pixels.map { min(max($0, 0), 1) }
        let labels = tissueLabels(wm: cut(tissue.wm).pixels, gm: cut(tissue.gm).pixels)
        let side = Double(max(g.height, g.width)) / Double(size)
        return PreparedSlice(axis: axis, index: index, image: image, labels: labels,
                             pixelMM: (g.columnSpacing * side, g.rowSpacing * side))
    }
}

/// A deterministic shuffle (Fisher-Yates from `rng`, with no dependence on the standard library's
/// own algorithm, which may change between Swift releases): element k is the new position of item k.
public func shuffledPositions<G: RandomNumberGenerator>(_ count: Int, using rng: inout G) -> [Int] {
    var p = Array(0..<count)
    for i in stride(from: count - 1, to: 0, by: -1) {
        p.swapAt(i, Int(rng.next() % UInt64(i + 1)))
    }
    return p
}
