import Foundation

/// Surface distances between a predicted and a true mask of one class in one slice, as papers
/// report them (MONAI's compute_hausdorff_distance with percentile 95, and its symmetric
/// compute_average_surface_distance):
///
///   edges(m)  = pixels of m with a 4-neighbour outside m (or outside the image)
///   d(a -> b) = for each edge pixel of a, the distance to the nearest edge pixel of b
///   HD95      = max(95th percentile of d(pred -> truth), of d(truth -> pred)), numpy's linear
///               interpolation between ranks
///   ASD       = the mean of both directions' distances together
///
/// In millimetres with the pixel size, in pixels without. Both masks empty: 0 (they agree); one
/// empty: undefined (NaN), left out of the means.
public struct SurfaceDistance: Equatable {
    public var hd95: Double
    public var asd: Double

    /// `pred` and `truth` are height x width masks (true: the class); `spacing` the distance
    /// between rows and between columns.
    public init(pred: [Bool], truth: [Bool], height: Int, width: Int,
                spacing: (rows: Double, columns: Double) = (1, 1)) {
        let ep = Self.edges(pred, height: height, width: width), et = Self.edges(truth, height: height, width: width)
        if ep.isEmpty && et.isEmpty { self.init(hd95: 0, asd: 0); return }
        if ep.isEmpty || et.isEmpty { self.init(hd95: .nan, asd: .nan); return }
        // Edge to edge directly: a few hundred to a few thousand edge pixels per slice.
        let forward = Self.nearest(from: ep, to: et, spacing: spacing)
        let backward = Self.nearest(from: et, to: ep, spacing: spacing)
        let hd95 = max(Self.percentile95(forward), Self.percentile95(backward))
        let asd = (forward.reduce(0, +) + backward.reduce(0, +)) / Double(forward.count + backward.count)
        self.init(hd95: hd95, asd: asd)
    }

    public init(hd95: Double, asd: Double) { self.hd95 = hd95; self.asd = asd }

    /// (row, column) of every edge pixel, in raster order.
    static func edges(_ m: [Bool], height: Int, width: Int) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        for r in 0..<height {
            for c in 0..<width where m[r * width + c] {
                let inside = r > 0 && r + 1 < height && c > 0 && c + 1 < width
                    && m[(r - 1) * width + c] && m[(r + 1) * width + c] && m[r * width + c - 1] && m[r * width + c + 1]
                if !inside { out.append((r, c)) }
            }
        }
        return out
    }

    static func nearest(from a: [(Int, Int)], to b: [(Int, Int)],
                        spacing: (rows: Double, columns: Double)) -> [Double] {
        a.map { p in
            var best = Double.infinity
            for q in b {
                let dy = Double(p.0 - q.0) * spacing.rows, dx = Double(p.1 - q.1) * spacing.columns
                best = min(best, dy * dy + dx * dx)
            }
            return best.squareRoot()
        }
    }

    /// numpy.percentile(d, 95) with its default linear interpolation.
    static func percentile95(_ d: [Double]) -> Double {
        let s = d.sorted()
        let rank = 0.95 * Double(s.count - 1), lo = Int(rank.rounded(.down)), hi = min(lo + 1, s.count - 1)
        return s[lo] + (s[hi] - s[lo]) * (rank - Double(lo))
    }
}

/// Keeps the largest 6-connected component of `label` in a volume (x fastest, `dims` nx, ny, nz);
/// its other voxels become `background`.
public func keepLargestComponent(_ labels: inout [UInt8], label: UInt8, background: UInt8, dims: [Int]) {
    let (nx, ny, nz) = (dims[0], dims[1], dims[2])
    var component = [Int32](repeating: -1, count: labels.count)
    var sizes: [Int] = [], stack: [Int] = []
    for start in labels.indices where labels[start] == label && component[start] < 0 {
        let id = Int32(sizes.count)
        var size = 0
        component[start] = id
        stack.append(start)
        while let v = stack.popLast() {
            size += 1
            let x = v % nx, y = (v / nx) % ny, z = v / (nx * ny)
            for (dx, dy, dz) in [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] {
                let (a, b, c) = (x + dx, y + dy, z + dz)
                guard a >= 0, a < nx, b >= 0, b < ny, c >= 0, c < nz else { continue }
                let u = a + nx * (b + ny * c)
                if labels[u] == label && component[u] < 0 { component[u] = id; stack.append(u) }
            }
        }
        sizes.append(size)
    }
    guard let largest = sizes.indices.max(by: { sizes[$0] < sizes[$1] }) else { return }
    for i in labels.indices where labels[i] == label && component[i] != Int32(largest) { labels[i] = background }
}
