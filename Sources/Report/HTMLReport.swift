import Foundation

/// One self-contained page (pictures inlined as data: URLs, no scripts, no network) for a run.
public struct HTMLReport {
    public var title: String
    public var configuration: [(String, String)] = []
    /// Each table: a heading, its column names and rows.
    public var tables: [(heading: String, columns: [String], rows: [[String]])] = []
    /// Each picture: a heading and PNG bytes.
    public var pictures: [(heading: String, png: Data)] = []
    /// Lines shown under the title (how the run ended, when that is news).
    public var notes: [String] = []

    public init(title: String) { self.title = title }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    public func render() -> String {
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(Self.escape(title))</title>
        <style>
        body { font-family: sans-serif; margin: 2em; color: #222; }
        table { border-collapse: collapse; margin-bottom: 1.5em; }
        td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
        th { background: #f0f0f0; } td.k { text-align: left; font-family: monospace; }
        img { max-width: 100%; border: 1px solid #ddd; }
        </style></head><body>
        <h1>\(Self.escape(title))</h1>

        """
        for note in notes { h += "<p class=\"note\">\(Self.escape(note))</p>\n" }
        for (heading, png) in pictures {
            h += "<h2>\(Self.escape(heading))</h2>\n<img alt=\"\(Self.escape(heading))\" "
                + "src=\"data:image/png;base64,\(png.base64EncodedString())\">\n"
        }
        for t in tables {
            h += "<h2>\(Self.escape(t.heading))</h2>\n<table><tr>"
                + t.columns.map { "<th>\(Self.escape($0))</th>" }.joined() + "</tr>\n"
            for row in t.rows { h += "<tr>" + row.map { "<td>\(Self.escape($0))</td>" }.joined() + "</tr>\n" }
            h += "</table>\n"
        }
        if !configuration.isEmpty {
            h += "<h2>Configuration</h2>\n<table>\n"
            for (k, v) in configuration {
                h += "<tr><td class=\"k\">\(Self.escape(k))</td><td class=\"k\">\(Self.escape(v))</td></tr>\n"
            }
            h += "</table>\n"
        }
        return h + "</body></html>\n"
    }
}
