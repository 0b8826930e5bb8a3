import Foundation

/// DIR/manifest.csv as `prepare` writes it: per image file, where it came from and its pixel
/// size (`pixel_mm_x` between columns, `pixel_mm_y` between rows), and, from a cohort
/// (docs/cohorts.md), its `subject` and, where the data set was split by subject, its `split`
/// (train or test).
public struct Manifest {
    public struct Row {
        public var pixelMM: (rows: Double, columns: Double)?
        public var subject: String?
        public var split: String?
    }

    /// By image file name (MRIs/<name>).
    public let rows: [String: Row]
    public let hasSplit: Bool
    public let hasSubject: Bool

    /// The data set's manifest, or nil where it has none.
    public init?(directory: String) throws {
        let path = directory + "/manifest.csv"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let text = String(data: try readFile(path), encoding: .utf8) else {
            throw FormatError(path, "is not UTF-8 text")
        }
        let lines = text.split(whereSeparator: \.isNewline).map { Self.fields(String($0)) }
        guard let header = lines.first, let file = header.firstIndex(of: "file") else {
            throw FormatError(path, "has no header with a file column")
        }
        let x = header.firstIndex(of: "pixel_mm_x"), y = header.firstIndex(of: "pixel_mm_y")
        let split = header.firstIndex(of: "split"), subject = header.firstIndex(of: "subject")
        var rows: [String: Row] = [:]
        for (n, f) in lines.dropFirst().enumerated() {
            guard f.count == header.count else {
                throw FormatError(path, "line \(n + 2) has \(f.count) fields, the header \(header.count)")
            }
            var row = Row()
            if let x, let y {
                guard let mx = Double(f[x]), let my = Double(f[y]), mx > 0, my > 0, mx.isFinite, my.isFinite else {
                    throw FormatError(path, "line \(n + 2): bad pixel size \(f[x]) x \(f[y])")
                }
                row.pixelMM = (my, mx)
            }
            if let split {
                guard ["train", "test"].contains(f[split]) else {
                    throw FormatError(path, "line \(n + 2): split must be train or test, not \(f[split])")
                }
                row.split = f[split]
            }
            if let subject { row.subject = f[subject] }
            rows[f[file]] = row
        }
        self.rows = rows
        hasSplit = split != nil
        hasSubject = subject != nil
    }

    /// One CSV line's fields; a quoted field may hold commas and doubled quotes.
    static func fields(_ line: String) -> [String] {
        var out: [String] = [], field = "", quoted = false
        var chars = line.makeIterator()
        while let ch = chars.next() {
            if quoted {
                guard ch == "\"" else { field.append(ch); continue }
                guard let next = chars.next() else { quoted = false; continue }
                if next == "\"" {
                    field.append("\"")
                } else {
                    quoted = false
                    if next == "," { out.append(field); field = "" } else { field.append(next) }
                }
            } else if ch == "\"" {
                quoted = true
            } else if ch == "," {
                out.append(field); field = ""
            } else {
                field.append(ch)
            }
        }
        out.append(field)
        return out
    }
}
