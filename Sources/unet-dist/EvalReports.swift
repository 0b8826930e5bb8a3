import Distributed
import Foundation
import Formats
import Model

/// What `eval` prints and writes: the summary (text or JSON) and the per-image and per-subject tables.
extension Eval {
    func report(_ s: ScoreSums, _ images: [ImageScores], unit: String, splitSource: String, classes: Int,
                comm: Communicator) {
        func mean(_ values: (ImageScores) -> Double) -> (Double, Int) {
            let defined = images.map(values).filter { !$0.isNaN }
            return (defined.reduce(0, +) / Double(max(defined.count, 1)), defined.count)
        }
        let gm = classes > 1 ? s.iou(1) : s.iou(0)
        var lines: [String] = []
        for c in 0..<classes {
            let (dice, _) = mean { $0.dice[c] }, (iou, _) = mean { $0.iou[c] }
            let (hd95, nh) = mean { $0.hd95[c] }, (asd, _) = mean { $0.asd[c] }
            if json {
                lines.append(String(format: "\"%@\": {\"dice\": %.10g, \"iou\": %.10g, \"hd95\": %.10g, "
                                    + "\"asd\": %.10g, \"surface_images\": %d}",
                                    Self.name(c), dice, iou, hd95, asd, nh))
            } else {
                let what = Self.name(c).replacingOccurrences(of: "_", with: " ")
                lines.append(String(format: "%@: Dice %.4f IoU %.4f HD95 %.2f %@ ASD %.2f %@", what, dice, iou,
                                    hd95, unit, asd, unit)
                    + (nh < images.count
                       ? " (surface distances over the \(nh) images where both masks hold the class)" : ""))
            }
        }
        if json {
            say(comm, String(format: "{\"loss\": %.10g, \"iou\": %.10g, \"iou_wm\": %.10g, \"iou_gm\": %.10g, "
                             + "\"dice\": %.10g, \"images\": %d, ", s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images))
                + "\"split\": \"\(split.rawValue)\", \"unit\": \"\(unit)\", \"per_class\": {"
                + lines.joined(separator: ", ") + "}}")
        } else {
            say(comm, String(format: "loss %.5f iou %.5f iou_wm %.5f iou_gm %.5f dice %.5f (%d images, %@)",
                             s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images), splitSource))
            lines.forEach { say(comm, $0) }
        }
    }

    /// The metric columns after the leading ones: dice, iou, hd95 and asd for each class.
    func metricHeader(classes: Int, unit: String) -> [String] {
        let short = ["wm", "gm"]
        return ["dice", "iou", "hd95_\(unit)", "asd_\(unit)"].flatMap { what in
            (0..<classes).map { "\(what)_\($0 < short.count ? short[$0] : Self.name($0))" }
        }
    }

    static func field(_ v: Double) -> String { v.isNaN ? "" : String(format: "%.6f", v) }

    /// One row per image, the lowest mean Dice first (ties in file order).
    func perImageCSV(_ images: [ImageScores], data d: SeedDataset, unit: String) -> String {
        let header = ["file", "mean_dice"] + metricHeader(classes: images.first?.dice.count ?? 0, unit: unit)
        let sorted = images.enumerated().sorted { ($0.element.meanDice, $0.offset) < ($1.element.meanDice, $1.offset) }
        let rows = sorted.map(\.element).map { s in
            ([name(d.pairs[s.index]), String(format: "%.6f", s.meanDice)]
             + (s.dice + s.iou + s.hd95 + s.asd).map(Self.field)).joined(separator: ",")
        }
        return ([header.joined(separator: ",")] + rows).joined(separator: "\n") + "\n"
    }

    /// One row per subject: its split where the manifest has one, how many images were scored, and
    /// each figure's mean over its images (where defined: a surface distance needs the class in both
    /// masks); the lowest mean Dice first (ties by subject).
    func perSubjectCSV(_ images: [ImageScores], data d: SeedDataset, manifest: Manifest,
                       unit: String) -> (csv: String, subjects: Int) {
        let classes = images.first?.dice.count ?? 0
        var groups: [String: [ImageScores]] = [:]
        for s in images { groups[manifest.rows[name(d.pairs[s.index])]?.subject ?? "", default: []].append(s) }
        func mean(_ list: [ImageScores], _ value: (ImageScores) -> Double) -> Double {
            let defined = list.map(value).filter { !$0.isNaN }
            return defined.isEmpty ? .nan : defined.reduce(0, +) / Double(defined.count)
        }
        let rows = groups.map { subject, list -> (Double, String, String) in
            let figures: [(ImageScores) -> [Double]] = [{ $0.dice }, { $0.iou }, { $0.hd95 }, { $0.asd }]
            let means = figures.flatMap { f in (0..<classes).map { c in mean(list) { f($0)[c] } } }
            let meanDice = mean(list) { $0.meanDice }
            let side = manifest.hasSplit ? [manifest.rows[name(d.pairs[list[0].index])]?.split ?? ""] : []
            return (meanDice, subject, ([csvField(subject)] + side + [String(list.count), Self.field(meanDice)]
                                        + means.map(Self.field)).joined(separator: ","))
        }.sorted { ($0.0.isNaN ? -1 : $0.0, $0.1) < ($1.0.isNaN ? -1 : $1.0, $1.1) }
        let header = ["subject"] + (manifest.hasSplit ? ["split"] : []) + ["images", "mean_dice"]
            + metricHeader(classes: classes, unit: unit)
        return (([header.joined(separator: ",")] + rows.map(\.2)).joined(separator: "\n") + "\n", groups.count)
    }
}
