import Foundation

/// A study as `prepare --cohort` reads it (docs/cohorts.md): a CSV with a row per subject, its
/// T1 and tissue, either probability maps (columns `gm` and `wm`) or a label map (`labels`), and
/// optionally its side of a subject-wise split (`split`: train or test). Other columns (age, site)
/// are left alone. Relative paths are taken from the CSV's folder, so a study folder can move.
public struct Cohort {
    public enum Tissue: Equatable {
        case maps(gm: String, wm: String)
        case labels(String)
    }

    public struct Subject: Equatable {
        public var id: String
        public var t1: String
        public var tissue: Tissue
        public var split: String?
        /// The CSV line it came from (for messages).
        public var line: Int
    }

    public let path: String
    public let subjects: [Subject]
    /// Whether the CSV has a `split` column.
    public let hasSplit: Bool
    /// Whether tissue comes as label maps (then `prepare` needs --wm-labels and --gm-labels).
    public var usesLabels: Bool { if case .labels = subjects.first?.tissue { return true } else { return false } }

    public init(path: String) throws {
        guard let text = String(data: try readFile(path), encoding: .utf8) else {
            throw FormatError(path, "is not UTF-8 text")
        }
        try self.init(text: text, path: path,
                      folder: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    public init(text: String, path: String, folder: String) throws {
        self.path = path
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated()
            .map { (number: $0.offset + 1, fields: Manifest.fields(String($0.element))) }
            .filter { !($0.fields.count == 1 && $0.fields[0].trimmingCharacters(in: .whitespaces).isEmpty) }
        guard let header = lines.first?.fields.map({ $0.trimmingCharacters(in: .whitespaces) }) else {
            throw FormatError(path, "is empty (a header and a row per subject expected)")
        }
        func column(_ name: String) -> Int? { header.firstIndex(of: name) }
        let hasMaps = column("gm") != nil || column("wm") != nil
        guard let subject = column("subject"), let t1 = column("t1"),
              hasMaps ? column("gm") != nil && column("wm") != nil && column("labels") == nil
                      : column("labels") != nil else {
            throw FormatError(path, "needs the columns subject,t1,gm,wm or subject,t1,labels (its header: "
                              + header.joined(separator: ",") + ")")
        }
        if let repeated = header.first(where: { name in header.filter { $0 == name }.count > 1 }) {
            throw FormatError(path, "has the column \(repeated) twice")
        }
        let split = column("split")
        var seen: [String: Int] = [:]
        var subjects: [Subject] = []
        for (number, fields) in lines.dropFirst() {
            guard fields.count == header.count else {
                throw FormatError(path, "line \(number) has \(fields.count) fields, the header \(header.count)")
            }
            func field(_ c: Int, _ name: String) throws -> String {
                let v = fields[c].trimmingCharacters(in: .whitespaces)
                guard !v.isEmpty else { throw FormatError(path, "line \(number): empty \(name)") }
                return v
            }
            func file(_ c: Int, _ name: String) throws -> String {
                let v = try field(c, name)
                return v.hasPrefix("/") || folder.isEmpty ? v : folder + "/" + v
            }
            let id = try field(subject, "subject")
            if let first = seen[id] {
                throw FormatError(path, "line \(number): subject \(id) is already on line \(first)")
            }
            seen[id] = number
            let tissue: Tissue = hasMaps ? .maps(gm: try file(column("gm")!, "gm"), wm: try file(column("wm")!, "wm"))
                                         : .labels(try file(column("labels")!, "labels"))
            var side: String?
            if let split {
                side = try field(split, "split")
                guard side == "train" || side == "test" else {
                    throw FormatError(path, "line \(number): split must be train or test, not \(side!)")
                }
            }
            subjects.append(Subject(id: id, t1: try file(t1, "t1"), tissue: tissue, split: side, line: number))
        }
        guard !subjects.isEmpty else { throw FormatError(path, "lists no subject") }
        self.subjects = subjects
        hasSplit = split != nil
    }

    /// Every file the subjects name, with the line naming it: checked before any is read, so that a
    /// typo in row 900 stops the run before hours of slicing.
    public func checkFilesExist() throws {
        for s in subjects {
            var files = [s.t1]
            switch s.tissue {
            case let .maps(gm, wm): files += [gm, wm]
            case let .labels(labels): files.append(labels)
            }
            for f in files where !FileManager.default.isReadableFile(atPath: f) {
                let reason = FileManager.default.fileExists(atPath: f) ? "cannot be read" : "no such file"
                throw FormatError(path, "line \(s.line) (subject \(s.id)): \(f): \(reason)")
            }
        }
    }
}
