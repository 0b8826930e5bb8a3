import ArgumentParser
import Foundation
import Formats
import Model

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on a data directory (eval mode): the seed's loss and IoU, and per class Dice, "
            + "IoU, HD95 and average surface distance.",
        discussion: """
            --split test or train takes the manifest's split where the data set has one (prepare --cohort, \
            docs/cohorts.md), else the last --test-count pairs are the test set, as in the seed. \
            --per-image writes every image's figures, --per-subject every subject's means over its images \
            (the manifest's subject column): both worst (lowest mean Dice) first.
            """)

    @Option(help: "A checkpoint (ours, or a PyTorch state_dict saved as safetensors).") var checkpoint: String
    @Option(help: "Seed-layout data directory.") var data: String
    @Option(help: "Which pairs: all, test or train.") var split = EvalSplit.all
    @Option(help: "The test set's size where the data set has no split of its own.") var testCount = 100
    @Option(help: "Write every image's figures to this CSV.") var perImage: String?
    @Option(help: "Write every subject's mean figures to this CSV (needs the manifest's subject column).")
    var perSubject: String?
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
            let (m, d, manifest, indices, splitSource, size) = try comm.everyRankDoes {
                () throws -> (SegmentationModel, SeedDataset, Manifest?, [Int], String, (h: Int, w: Int)) in
                let st = try SafeTensors(path: checkpoint)
                let m = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
                precision.apply(to: m)
                try m.load(st, path: checkpoint)
                let d = try SeedDataset(directory: data)
                let manifest = try Manifest(directory: data)
                if perSubject != nil && manifest?.hasSubject != true {
                    throw FormatError(data, "--per-subject needs a manifest.csv with a subject column "
                                      + "(prepare --cohort writes one)")
                }
                let (indices, splitSource) = try select(d, manifest: manifest)
                guard !indices.isEmpty else { throw FormatError(data, "the \(split.rawValue) split holds no pairs") }
                let first = try Sample(d.pairs[indices[0]], classes: m.config.classes)
                return (m, d, manifest, indices, splitSource, (first.height, first.width))
            }
            // Millimetres only where every scored image has its pixel size in the manifest.
            let pixelMM = indices.map { manifest?.rows[name(d.pairs[$0])]?.pixelMM }
            let inMM = pixelMM.allSatisfy { $0 != nil }
            var spacing: [Int: (rows: Double, columns: Double)] = [:]
            if inMM { for (i, s) in zip(indices, pixelMM) { spacing[i] = s! } }
            let (s, images) = try evaluateImages(m, data: d, indices: indices, batchSize: batchSize, size: size,
                                                 batch: Batch(classes: m.config.classes), comm: comm) {
                spacing[$0] ?? (1, 1)
            }
            let unit = inMM ? "mm" : "px"
            let subjectsLine = try comm.rootDoes { () throws -> String? in
                if let perImage {
                    try writeFileAtomically(Data(perImageCSV(images, data: d, unit: unit).utf8), to: perImage)
                }
                guard let perSubject, let manifest else { return nil }
                let table = perSubjectCSV(images, data: d, manifest: manifest, unit: unit)
                try writeFileAtomically(Data(table.csv.utf8), to: perSubject)
                return "per subject: \(table.subjects) subject(s) to \(perSubject)"
            } ?? nil
            report(s, images, unit: unit, splitSource: splitSource, classes: m.config.classes - 1, comm: comm)
            if !json, let subjectsLine { say(comm, subjectsLine) }
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
            // The split train uses, so that eval scores exactly the pairs a run was tested on.
            let s = try DataSplit(d, manifest: manifest, testCount: testCount)
            let source = s.note == nil ? "the last \(testCount) pairs" : "the manifest's split"
            return (split == .test ? s.test : s.train, "\(split.rawValue) split: \(source)")
        }
    }
}
