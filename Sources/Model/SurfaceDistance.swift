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
    public init(pred: [Bool], truth: [Bool], height: Int, width: Int, spacing: (rows: Double, columns: Double) = (1, 1)) {
        let ep = Self.edges(pred, height: height, width: width), et = Self.edges(truth, height: height, width: width)
        if ep.isEmpty && et.isEmpty { self.init(hd95: 0, asd: 0); return }
        if ep.isEmpty || et.isEmpty { self.init(hd95: .nan, asd: .nan); return }
        // Edge to edge directly: a few hundred to a few thousand edge pixels per slice.
        let forward = Self.nearest(from: ep, to: et, spacing: spacing), backward = Self.nearest(from: et, to: ep, spacing: spacing)
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

    static func nearest(from a: [(Int, Int)], to b: [(Int, Int)], spacing: (rows: Double, columns: Double)) -> [Double] {
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
