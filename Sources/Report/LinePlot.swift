import Foundation
import Formats

/// A line chart like pandas' `df.plot(grid=True)`: one x axis, lines for several series, ticks
/// at round values, a grid, axis labels and a legend.
public struct LinePlot {
    public struct Series {
        public var name: String
        public var color: (UInt8, UInt8, UInt8)
        public var points: [(x: Double, y: Double)]
        public init(name: String, color: (UInt8, UInt8, UInt8), points: [(x: Double, y: Double)]) {
            self.name = name; self.color = color; self.points = points
        }
    }

    public var series: [Series]
    public var xLabel: String
    public var width = 800, height = 500

    public init(series: [Series], xLabel: String) { self.series = series; self.xLabel = xLabel }

    /// matplotlib's default color cycle.
    public static let palette: [(UInt8, UInt8, UInt8)] = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]

    /// Tick values at 1, 2 or 5 x 10^k covering lo...hi with about `target` ticks.
    static func ticks(_ lo: Double, _ hi: Double, target: Int = 6, integers: Bool = false) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = integers ? max(span / Double(target), 1) : span / Double(target), mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var out: [Double] = []
        var t = (lo / step).rounded(.up) * step
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    static func label(_ v: Double, step: Double) -> String {
        let digits = max(0, -Int(floor(log10(step))))
        return String(format: "%.\(digits)f", v)
    }

    public func render() -> RGBImage {
        var img = RGBImage(width: width, height: height)
        let all = series.flatMap(\.points)
        let left = 70, right = width - 20, top = 20, bottom = height - 50
        let black: (UInt8, UInt8, UInt8) = (0, 0, 0), grid: (UInt8, UInt8, UInt8) = (220, 220, 220)
        var xLo = all.map(\.x).min() ?? 0, xHi = all.map(\.x).max() ?? 1
        var yLo = all.map(\.y).min() ?? 0, yHi = all.map(\.y).max() ?? 1
        if xHi - xLo < 1e-12 { xLo -= 0.5; xHi += 0.5 }
        if yHi - yLo < 1e-12 { yLo -= 0.5; yHi += 0.5 }
        let pad = 0.05 * (yHi - yLo); yLo -= pad; yHi += pad
        func px(_ x: Double) -> Int { left + Int((x - xLo) / (xHi - xLo) * Double(right - left)) }
        func py(_ y: Double) -> Int { bottom - Int((y - yLo) / (yHi - yLo) * Double(bottom - top)) }

        let xt = Self.ticks(xLo, xHi, integers: all.allSatisfy { $0.x == $0.x.rounded() }), yt = Self.ticks(yLo, yHi)
        let xStep = xt.count > 1 ? xt[1] - xt[0] : 1, yStep = yt.count > 1 ? yt[1] - yt[0] : 1
        for t in xt {
            img.line(px(t), top, px(t), bottom, grid)
            img.line(px(t), bottom, px(t), bottom + 5, black)
            let s = Self.label(t, step: xStep)
            img.text(s, x: px(t) - Font.textWidth(s) / 2, y: bottom + 9, color: black)
        }
        for t in yt {
            img.line(left, py(t), right, py(t), grid)
            img.line(left - 5, py(t), left, py(t), black)
            let s = Self.label(t, step: yStep)
            img.text(s, x: left - 9 - Font.textWidth(s), y: py(t) - 3, color: black)
        }
        img.line(left, top, left, bottom, black); img.line(left, bottom, right, bottom, black)
        img.line(right, top, right, bottom, black); img.line(left, top, right, top, black)
        img.text(xLabel, x: (left + right) / 2 - Font.textWidth(xLabel, scale: 2) / 2, y: height - 22, color: black,
                 scale: 2)

        for s in series {
            for (a, b) in zip(s.points, s.points.dropFirst()) {
                img.line(px(a.x), py(a.y), px(b.x), py(b.y), s.color, thickness: 2)
            }
            if s.points.count == 1 {
                img.fillRect(x: px(s.points[0].x) - 2, y: py(s.points[0].y) - 2, w: 5, h: 5, s.color)
            }
        }

        // Legend, top right, on white with a frame.
        let rowH = 18, boxW = 40 + (series.map { Font.textWidth($0.name, scale: 2) }.max() ?? 0)
        let lx = right - boxW - 10, ly = top + 10
        img.fillRect(x: lx, y: ly, w: boxW, h: rowH * series.count + 8, (255, 255, 255))
        img.line(lx, ly, lx + boxW, ly, black); img.line(lx, ly + rowH * series.count + 8, lx + boxW,
                                                         ly + rowH * series.count + 8, black)
        img.line(lx, ly, lx, ly + rowH * series.count + 8, black); img.line(lx + boxW, ly, lx + boxW,
                                                                            ly + rowH * series.count + 8, black)
        for (i, s) in series.enumerated() {
            let y = ly + 6 + i * rowH
            img.line(lx + 6, y + 7, lx + 28, y + 7, s.color, thickness: 3)
            img.text(s.name, x: lx + 34, y: y, color: black, scale: 2)
        }
        return img
    }
}
