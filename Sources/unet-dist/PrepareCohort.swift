import Distributed
import Foundation
import Formats
import Kernels
import Model

/// `prepare --cohort`: every subject cut as the one-volume `prepare` cuts its T1, the subjects
/// shared among the ranks (subject s on rank s mod N, a round of one subject per rank at a time),
/// all of them writing into one staging folder that rank 0 commits (docs/cohorts.md).
extension Prepare {
    /// The stem of every cohort file name: one stem, so that file-name order is the index order
    /// and the test subjects' slices, written last, are the last files.
    static let cohortStem = "slice"

    /// What a rank learned about one of its subjects: its slices, staged under provisional names.
    struct CutSubject {
        var subject: Int
        var places: [[String]]
    }

    func runCohort() -> Never {
        // No --threads or --stall-timeout of its own: prepare computes little, and a rank waits for
        // the others at most one subject's read.
        runDistributed(threads: try! ComputeOptions.parse([])) { comm, _ in try prepareCohort(comm) }
    }

    func prepareCohort(_ comm: Communicator) throws {
        let (c, test, rootWriter) = try comm.everyRankDoes { () throws -> (Cohort, Set<Int>, SeedLayoutWriter?) in
            let c = try Cohort(path: cohort!)
            let test = try testSubjects(of: c)
            guard comm.isRoot else { return (c, test, nil) }
            try c.checkFilesExist()
            return (c, test, try SeedLayoutWriter(directory: out, overwrite: overwrite))
        }
        var writer = rootWriter
        var token = writer?.token ?? 0
        withUnsafeMutableBytes(of: &token) { comm.broadcast($0.baseAddress!, count: 4, root: 0, what: "staging token") }
        try comm.everyRankDoes {
            if !comm.isRoot {
                writer = try SeedLayoutWriter(directory: out, overwrite: true, token: token, owner: false)
            }
        }
        if comm.isRoot {
            say("\(cohort!): \(c.subjects.count) subjects on \(comm.size) rank(s)"
                + (c.hasSplit || testSubjectsFlag ? ", \(test.count) held out as the test set" : ""))
        }
        // Each round: one subject per rank, then one agreement, so that a bad file stops every rank.
        var mine: [CutSubject] = []
        var classCounts = [Double](repeating: 0, count: 3)
        for round in 0 ..< (c.subjects.count + comm.size - 1) / comm.size {
            let s = round * comm.size + comm.rank
            if let cut = try comm.everyRankDoes({ () throws -> CutSubject? in
                s < c.subjects.count ? try cutSubject(s, of: c, writer: writer!, classCounts: &classCounts) : nil
            }) { mine.append(cut) }
        }
        var counts = [Double](repeating: 0, count: c.subjects.count)
        for m in mine { counts[m.subject] = Double(m.places.count) }
        counts.withUnsafeMutableBufferPointer {
            comm.allreduceSum($0.baseAddress!, count: $0.count, what: "slices per subject")
        }
        classCounts.withUnsafeMutableBufferPointer {
            comm.allreduceSum($0.baseAddress!, count: 3, what: "class counts")
        }
        let positions = filePositions(counts.map { Int($0) }, test: test)
        let total = counts.reduce(0, +)
        let split = c.hasSplit || testSubjectsFlag
        var rows: [(Int, String)] = []
        try comm.everyRankDoes {
            for m in mine {
                let id = c.subjects[m.subject].id
                for (k, place) in m.places.enumerated() {
                    let position = positions[m.subject].position(k)
                    let name = try writer!.rename(stem: "s\(m.subject)", index: "\(m.subject)-\(k)",
                                                  toStem: Self.cohortStem,
                                                  toIndex: SeedLayoutWriter.indexText(position, count: Int(total)))
                    let side = split ? [test.contains(m.subject) ? "test" : "train"] : []
                    let fields = [name, csvField(id)] + side + [csvField(c.subjects[m.subject].t1)] + place
                    rows.append((position, fields.joined(separator: ",")))
                }
            }
        }
        // The manifest's rows from every rank to rank 0, one rank at a time.
        var all: [(Int, String)] = []
        for r in 0 ..< comm.size {
            let text = comm.broadcast(Data(rows.map { "\($0.0)\t\($0.1)" }.joined(separator: "\n").utf8), root: r,
                                    what: "manifest rows")
            all += String(decoding: text, as: UTF8.self).split(separator: "\n").map { line in
                let parts = line.split(separator: "\t", maxSplits: 1)
                return (Int(parts[0])!, String(parts[1]))
            }
        }
        try comm.rootDoes {
            let header = "file,subject" + (split ? ",split" : "") + ",source,axis,slice_index,pixel_mm_x,pixel_mm_y"
            let body = all.sorted { $0.0 < $1.0 }.map(\.1)
            try writer!.commit(manifest: ([header] + body).joined(separator: "\n") + "\n")
        }
        guard comm.isRoot else { return }
        say("wrote \(Int(total)) pairs of \(size)x\(size) from \(c.subjects.count) subjects to \(out)")
        say(Self.fractions(classCounts))
        if split {
            let testSlices = test.map { Int(counts[$0]) }.reduce(0, +)
            let ids = test.sorted().map { c.subjects[$0].id }
            say("test set: \(test.count) subject(s) (\(ids.joined(separator: ", "))), \(testSlices) slices, "
                + "the last \(testSlices) files; train set: \(c.subjects.count - test.count) subject(s), "
                + "\(Int(total) - testSlices) slices")
        } else {
            say("no subject-wise split (see --test-subjects): train's --test-count will take the last files, "
                + "which mixes subjects")
        }
    }

    var testSubjectsFlag: Bool { testSubjects != nil }

    /// The test subjects: the CSV's split column, or --test-subjects drawn by --seed, or none.
    func testSubjects(of c: Cohort) throws -> Set<Int> {
        if c.usesLabels != (wmLabels != nil) {
            throw FormatError(c.path, c.usesLabels
                              ? "gives label maps: pass --wm-labels and --gm-labels"
                              : "gives probability maps (gm, wm): --wm-labels and --gm-labels do not apply")
        }
        if c.hasSplit {
            guard testSubjects == nil else {
                throw FormatError(c.path, "has a split column: --test-subjects would override it; "
                                  + "give one or the other")
            }
            let test = Set(c.subjects.indices.filter { c.subjects[$0].split == "test" })
            guard !test.isEmpty, test.count < c.subjects.count else {
                throw FormatError(c.path, "its split column must name at least one train and one test subject")
            }
            return test
        }
        guard let k = testSubjects else { return [] }
        guard k < c.subjects.count else {
            throw FormatError(c.path, "--test-subjects \(k) leaves no training subject (\(c.subjects.count) subjects)")
        }
        var rng = SplitMix64(seed: seed)
        let order = shuffledPositions(c.subjects.count, using: &rng)
        return Set(c.subjects.indices.filter { order[$0] >= c.subjects.count - k })
    }

    /// Where subject s's k-th slice goes: train subjects' slices shuffled over the first files,
    /// test subjects' over the last ones (both by --seed).
    struct Positions {
        var first: Int
        var order: [Int]
        func position(_ k: Int) -> Int { order[first + k] }
    }

    func filePositions(_ counts: [Int], test: Set<Int>) -> [Positions] {
        var rng = SplitMix64(seed: seed &+ 1)
        let train = counts.indices.filter { !test.contains($0) }, held = counts.indices.filter { test.contains($0) }
        let trainTotal = train.map { counts[$0] }.reduce(0, +), testTotal = held.map { counts[$0] }.reduce(0, +)
        let order = shuffledPositions(trainTotal, using: &rng)
            + shuffledPositions(testTotal, using: &rng).map { $0 + trainTotal }
        var result = [Positions](repeating: Positions(first: 0, order: []), count: counts.count)
        var next = 0
        for s in train + held {
            result[s] = Positions(first: next, order: order)
            next += counts[s]
        }
        return result
    }

    /// Reads, cuts and stages one subject's slices under provisional names ("s<subject>_<subject>-<k>").
    func cutSubject(_ s: Int, of c: Cohort, writer: SeedLayoutWriter,
                    classCounts: inout [Double]) throws -> CutSubject {
        let subject = c.subjects[s]
        let (slicer, kept) = try cut(t1: subject.t1, tissue: subject.tissue) { say("\(subject.id): \($0)") }
        var places: [[String]] = []
        for (k, cut) in kept.enumerated() {
            let slice = slicer.slice(cut.axis, index: cut.index, size: size)
            try writer.write(stem: "s\(s)", index: "\(s)-\(k)", image: slice.image, labels: slice.labels)
            for l in slice.labels { classCounts[Int(l)] += 1 }
            places.append(Self.placeFields(slice))
        }
        return CutSubject(subject: s, places: places)
    }
}
