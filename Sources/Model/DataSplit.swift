import Foundation
import Formats

/// Which pairs train and which test. Where the data set's manifest.csv has a `split` column
/// (`prepare --cohort` with --test-subjects or a split of its own, docs/cohorts.md), that split:
/// a subject is then on one side only. Otherwise the seed's: the last `testCount` pairs in
/// file-name order.
public struct DataSplit {
    public let train: [Int], test: [Int]
    /// A line for the user where the manifest decided (nil for the seed's split).
    public let note: String?

    public init(_ data: SeedDataset, testCount: Int) throws {
        try self.init(data, manifest: try Manifest(directory: data.directory), testCount: testCount)
    }

    /// The same with the data set's manifest already read (nil where it has none).
    public init(_ data: SeedDataset, manifest: Manifest?, testCount: Int) throws {
        let path = data.directory + "/manifest.csv"
        guard let manifest, manifest.hasSplit else {
            guard testCount >= 0, testCount < data.count else {
                throw FormatError(data.directory,
                                  "--test-count \(testCount) leaves no training data (\(data.count) pairs)")
            }
            train = Array(0 ..< data.count - testCount)
            test = Array(data.count - testCount ..< data.count)
            note = nil
            return
        }
        var train: [Int] = [], test: [Int] = []
        var subjects: [String: Set<String>] = ["train": [], "test": []]
        for (i, pair) in data.pairs.enumerated() {
            let name = URL(fileURLWithPath: pair.image).lastPathComponent
            guard let row = manifest.rows[name], let side = row.split else {
                throw FormatError(path, "has a split but no row for MRIs/\(name)")
            }
            if side == "test" { test.append(i) } else { train.append(i) }
            if let subject = row.subject { subjects[side]!.insert(subject) }
        }
        guard !train.isEmpty, !test.isEmpty else {
            throw FormatError(path, "its split leaves \(train.isEmpty ? "no training" : "no test") pair")
        }
        if let both = subjects["train"]!.intersection(subjects["test"]!).min() {
            throw FormatError(path, "subject \(both) is on both sides of its split")
        }
        self.train = train
        self.test = test
        func from(_ side: String) -> String {
            manifest.hasSubject ? " from \(subjects[side]!.count) subject(s)" : ""
        }
        note = "test set: the manifest's split, \(test.count) slices\(from("test")) held out "
            + "(\(train.count) train slices\(from("train"))); --test-count does not apply"
    }
}

extension Trainer {
    /// The pairs scored after each epoch.
    public var testCount: Int { testIndices.count }
}
