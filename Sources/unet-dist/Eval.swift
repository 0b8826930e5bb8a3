import ArgumentParser
import Foundation
import Formats
import Model

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on a data directory (eval mode): the seed's loss and IoU, and per class Dice, IoU, HD95 and average surface distance.")

    @Option(help: "A checkpoint (ours, or a PyTorch state_dict saved as safetensors).") var checkpoint: String
    @Option(help: "Seed-layout data directory.") var data: String
    @Option(help: "Which pairs: all, test or train (the manifest's split where it has one, else the last --test-count pairs are the test set, as in the seed).")
    var split = EvalSplit.all
    @Option(help: "The test set's size where the data set has no split of its own.") var testCount = 100
    @Option(help: "Write every image's figures to this CSV, worst (lowest mean Dice) first.") var perImage: String?
    @Option(help: "Images per forward pass.") var batchSize = 16
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    enum EvalSplit: String, ExpressibleByArgument, CaseIterable { case all, test, train }

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard testCount >= 0 else { throw ValidationError("--test-count must not be negative") }
    }

    static let classNames = ["white_matter", "gray_matter"]

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            var setupError: Error?
            var model: SegmentationModel?, dataset: SeedDataset?, size = (h: 0, w: 0)
            var indices: [Int] = [], manifest: Manifest?, splitSource = ""
            do {
                let st = try SafeTensors(path: checkpoint)
                let m = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
                precision.apply(to: m)
                try m.load(st, path: checkpoint)
                let d = try SeedDataset(directory: data)
                manifest = try Manifest(directory: data)
                (indices, splitSource) = try select(d, manifest: manifest)
                guard !indices.isEmpty else { throw FormatError(data, "the \(split.rawValue) split holds no pairs") }
                let first = try Sample(d.pairs[indices[0]], classes: m.config.classes)
                model = m; dataset = d; size = (first.height, first.width)
            } catch let e { setupError = e }
            if let message = comm.agree(on: setupError) { throw RunError(message) }
            let d = dataset!, m = model!
            // Millimetres only where every scored image has its pixel size in the manifest.
            let pixelMM = indices.map { manifest?.rows[name(d.pairs[$0])]?.pixelMM }
            let inMM = pixelMM.allSatisfy { $0 != nil }
            var spacing: [Int: (rows: Double, columns: Double)] = [:]
            if inMM { for (i, s) in zip(indices, pixelMM) { spacing[i] = s! } }
            let (s, images) = try evaluateImages(m, data: d, indices: indices, batchSize: batchSize, size: size,
                                                 batch: Batch(classes: m.config.classes), comm: comm) { spacing[$0] ?? (1, 1) }
            let unit = inMM ? "mm" : "px"
            var writeError: Error?
            if comm.isRoot, let perImage {
                do { try writeFileAtomically(Data(perImageCSV(images, data: d, unit: unit).utf8), to: perImage) }
                catch { writeError = error }
            }
            if let message = comm.agree(on: writeError) { throw RunError(message) }
            let classes = m.config.classes - 1
            func mean(_ values: (ImageScores) -> Double) -> (Double, Int) {
                let defined = images.map(values).filter { !$0.isNaN }
                return (defined.reduce(0, +) / Double(max(defined.count, 1)), defined.count)
            }
            let gm = classes > 1 ? s.iou(1) : s.iou(0)
            if json {
                var perClass: [String] = []
                for c in 0..<classes {
                    let (dice, _) = mean { $0.dice[c] }, (iou, _) = mean { $0.iou[c] }
                    let (hd95, nh) = mean { $0.hd95[c] }, (asd, _) = mean { $0.asd[c] }
                    perClass.append(String(format: "\"%@\": {\"dice\": %.10g, \"iou\": %.10g, \"hd95\": %.10g, \"asd\": %.10g, \"surface_images\": %d}",
                                           Self.name(c), dice, iou, hd95, asd, nh))
                }
                say(comm, String(format: "{\"loss\": %.10g, \"iou\": %.10g, \"iou_wm\": %.10g, \"iou_gm\": %.10g, \"dice\": %.10g, \"images\": %d, ",
                                 s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images))
                    + "\"split\": \"\(split.rawValue)\", \"unit\": \"\(unit)\", \"per_class\": {" + perClass.joined(separator: ", ") + "}}")
            } else {
                say(comm, String(format: "loss %.5f iou %.5f iou_wm %.5f iou_gm %.5f dice %.5f (%d images, %@)",
                                 s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images), splitSource))
                for c in 0..<classes {
                    let (dice, _) = mean { $0.dice[c] }, (iou, _) = mean { $0.iou[c] }
                    let (hd95, nh) = mean { $0.hd95[c] }, (asd, _) = mean { $0.asd[c] }
                    say(comm, String(format: "%@: Dice %.4f IoU %.4f HD95 %.2f %@ ASD %.2f %@", Self.name(c).replacingOccurrences(of: "_", with: " "),
                                     dice, iou, hd95, unit, asd, unit)
                        + (nh < images.count ? " (surface distances over the \(nh) images where both masks hold the class)" : ""))
                }
            }
        }
    }

    static func name(_ c: Int) -> String { c < classNames.count ? classNames[c] : "class_\(c)" }

    func name(_ pair: SeedDataset.Pair) -> String { URL(fileURLWithPath: pair.image).lastPathComponent }

    /// The pairs to score and a description of where the split came from.
    func select(_ d: SeedDataset, manifest: Manifest?) throws -> ([Int], String) {
        let all = Array(0..<d.count)
        switch split {
        case .all: return (all, "all pairs")
        case .test, .train:
            let test: Set<Int>
            let source: String
            if let manifest, manifest.hasSplit {
                test = Set(all.filter { manifest.rows[name(d.pairs[$0])]?.split == "test" })
                source = "the manifest's split"
            } else {
                guard testCount <= d.count else { throw FormatError(data, "--test-count \(testCount) is more than its \(d.count) pairs") }
                test = Set(all.suffix(testCount))
                source = "the last \(testCount) pairs"
            }
            return (all.filter { test.contains($0) == (split == .test) }, "\(split.rawValue) split: \(source)")
        }
    }

    /// One row per image, the lowest mean Dice first (ties in file order).
    func perImageCSV(_ images: [ImageScores], data d: SeedDataset, unit: String) -> String {
        var header = ["file", "mean_dice"]
        let short = ["wm", "gm"]
        for what in ["dice", "iou", "hd95_\(unit)", "asd_\(unit)"] {
            header += (0..<(images.first?.dice.count ?? 0)).map { "\(what)_\($0 < short.count ? short[$0] : Self.name($0))" }
        }
        let sorted = images.enumerated().sorted { ($0.element.meanDice, $0.offset) < ($1.element.meanDice, $1.offset) }.map(\.element)
        let rows = sorted.map { s in
            ([name(d.pairs[s.index]), String(format: "%.6f", s.meanDice)]
             + (s.dice + s.iou + s.hd95 + s.asd).map { $0.isNaN ? "" : String(format: "%.6f", $0) }).joined(separator: ",")
        }
        return ([header.joined(separator: ",")] + rows).joined(separator: "\n") + "\n"
    }
}
