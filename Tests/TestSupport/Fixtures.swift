import Foundation
import Formats
import XCTest

/// Tests/Fixtures, made by tools/make_fixtures.py with PyTorch (never run in CI).
public let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// One fixture file. Every computed tensor NAME has its PyTorch float64 twin NAME64 (or, for
/// whole-model sets, prefix64.rest) and either PyTorch's float32 result NAME or a scalar
/// dist.NAME64 holding ||torch float32 - torch float64||.
public struct Fixture {
    public let path: String
    public let file: SafeTensors

    public init(_ name: String) throws {
        path = fixturesDirectory + "/" + name
        file = try SafeTensors(path: path)
    }

    public func floats(_ name: String) throws -> [Float] { try file.floats(name, path: path) }
    public func doubles(_ name: String) throws -> [Double] { try file.doubles(name, path: path) }
    public func int64s(_ name: String) throws -> [Int64] { try file.int64s(name, path: path) }
    public func shape(_ name: String) throws -> [Int] { try file.entry(name, path: path).shape }
    public func has(_ name: String) -> Bool { file.has(name) }

    /// How far PyTorch's own float32 result is from float64 for the reference `ref64`.
    public func float32Distance(reference ref64: String, float32 name: String?) throws -> Double {
        if file.has("dist." + ref64) { return try doubles("dist." + ref64)[0] }
        guard let name else { throw FormatError(path, "no float32 result for \(ref64)") }
        return distance(try floats(name), try doubles(ref64))
    }

    /// The project's tolerance rule: ours may be no further from PyTorch float64 than ten times
    /// PyTorch float32's own distance (plus 1e-6 of the norm, for results float32 gets exactly).
    public func assertMatchesTorch(_ ours: [Float], _ ref64: String, float32 name: String? = nil,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try doubles(ref64)
        XCTAssertEqual(ours.count, reference.count, "\(ref64): element count", file: file, line: line)
        guard ours.count == reference.count else { return }
        let floor = try float32Distance(reference: ref64, float32: name)
        let d = distance(ours, reference), n = norm(reference)
        XCTAssertLessThanOrEqual(d, 10 * floor + 1e-6 * n,
                                 "\(ref64): |ours - f64| = \(d), torch f32 floor \(floor), |f64| = \(n)", file: file, line: line)
    }
}

public func norm(_ a: [Double]) -> Double { a.reduce(0) { $0 + $1 * $1 }.squareRoot() }
public func distance(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { $0 + (Double($1.0) - $1.1) * (Double($1.0) - $1.1) }.squareRoot()
}
public func distance(_ a: [Float], _ b: [Float]) -> Double { distance(a, b.map(Double.init)) }
