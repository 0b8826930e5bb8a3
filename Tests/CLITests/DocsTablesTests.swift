import Foundation
import TestSupport
import XCTest

/// The tables in README.md and docs/ are written by tools/docs_tables.py from the measurements in
/// docs/data/ (and docs/scaling-data/): a figure edited by hand, or data changed without the
/// tables, fails here.
final class DocsTablesTests: ScratchTestCase {
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path

    func check(_ root: String) throws -> CommandResult {
        try runCommand("/usr/bin/env", ["python3", root + "/tools/docs_tables.py", "--check"], timeout: 120)
    }

    func testTheTablesAreWhatTheDataGives() throws {
        let r = try check(repo)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    /// A copy of what the script reads, so that the checks below can spoil it.
    func copyOfTheDocs() throws -> String {
        let root = try scratchDirectory("docs")
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/tools/scaling", withIntermediateDirectories: true)
        for path in ["README.md", "docs", "tools/docs_tables.py", "tools/scaling/model.py"] {
            try fm.copyItem(atPath: repo + "/" + path, toPath: root + "/" + path)
        }
        return root
    }

    func testATableEditedByHandFailsTheCheckUntilRewritten() throws {
        let root = try copyOfTheDocs()
        let readme = root + "/README.md"
        let text = try String(contentsOfFile: readme, encoding: .utf8)
        let start = try XCTUnwrap(text.range(of: "<!-- table:headline -->\n"))
        let row = try XCTUnwrap(text.range(of: "| UNet training step", range: start.upperBound..<text.endIndex))
        // One figure of the headline table, changed.
        let figure = try XCTUnwrap(text.range(of: #"[0-9]+\.[0-9]+x"#, options: .regularExpression,
                                              range: row.upperBound..<text.endIndex))
        try text.replacingCharacters(in: figure, with: "9.99x")
            .write(toFile: readme, atomically: true, encoding: .utf8)

        let stale = try check(root)
        XCTAssertEqual(stale.status, 1, stale.stdout + stale.stderr)
        XCTAssertTrue(stale.stderr.contains("README.md: table headline differs"), stale.stderr)
        XCTAssertTrue(stale.stderr.contains("-| UNet training step"), stale.stderr)

        let rewrite = try runCommand("/usr/bin/env", ["python3", root + "/tools/docs_tables.py"], timeout: 120)
        XCTAssertEqual(rewrite.status, 0, rewrite.stderr)
        XCTAssertEqual(try String(contentsOfFile: readme, encoding: .utf8), text)
        XCTAssertEqual(try check(root).status, 0)
    }

    func testChangedDataFailsTheCheckOfEveryTableDrawnFromIt() throws {
        let root = try copyOfTheDocs()
        let path = root + "/docs/data/vs_pytorch_unet.json"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: bytes) as? [String: Any])
        var results = try XCTUnwrap(json["results"] as? [[String: Any]])
        results[0]["ours_images_per_s"] = 30.0
        json["results"] = results
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))

        let r = try check(root)
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        XCTAssertTrue(r.stderr.contains("README.md: table headline differs"), r.stderr)
        XCTAssertTrue(r.stderr.contains("docs/performance.md: table vs-pytorch-unet differs"), r.stderr)
        XCTAssertTrue(r.stderr.contains("+| 128 | 1 | 1 | 13.01 | 30.00 | **2.31x**"), r.stderr)
    }

    func testAMarkerNamingNoTableIsAnError() throws {
        let root = try copyOfTheDocs()
        let doc = root + "/docs/usage.md"
        let text = try String(contentsOfFile: doc, encoding: .utf8)
        try (text + "\n<!-- table:no-such-table -->\n<!-- /table -->\n")
            .write(toFile: doc, atomically: true, encoding: .utf8)
        let r = try check(root)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("docs/usage.md: no table is called 'no-such-table'"), r.stderr)
    }

    /// A speed figure is nothing without the machine and the command that gave it.
    func testEveryMeasurementNamesItsCommandAndEverySpeedFigureItsCPU() throws {
        let dir = repo + "/docs/data"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".json") }.sorted()
        XCTAssertGreaterThan(files.count, 5)
        for name in files {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: bytes) as? [String: Any], name)
            let commands = (json["commands"] as? [String]) ?? (json["command"] as? String).map { [$0] } ?? []
            XCTAssertFalse(commands.isEmpty, "\(name): no command")
            XCTAssertNotNil(json["what"] as? String, "\(name): no description")
            if name.hasPrefix("icbm_") { continue }  // accuracy, not speed
            let cpu = try XCTUnwrap(json["cpu"] as? [String: Any], "\(name): no CPU")
            XCTAssertFalse((cpu["model"] as? String ?? "").isEmpty, name)
            XCTAssertGreaterThan(cpu["vcpus"] as? Int ?? 0, 0, name)
            XCTAssertFalse((cpu["flags"] as? [String] ?? []).isEmpty, name)
            XCTAssertNotNil(cpu["flags_complete"] as? Bool, name)
        }
    }
}
