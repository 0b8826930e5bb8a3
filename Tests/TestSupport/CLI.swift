import Foundation
import XCTest

/// The built `unet-dist`, beside the test bundle in the build directory.
public let unetDistBinary: String = {
    if let path = ProcessInfo.processInfo.environment["UNET_DIST_BIN"] { return path }
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [dir, dir.deletingLastPathComponent()] {
        let p = candidate.appendingPathComponent("unet-dist").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return dir.appendingPathComponent("unet-dist").path
}()

public struct CommandResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `unet-dist args`, or under `mpirun -n ranks` with the flags a root-run, two-core test
/// machine needs (never part of what a user runs).
public func runUnetDist(_ args: [String], ranks: Int? = nil, timeout: TimeInterval = 300) throws -> CommandResult {
    if let ranks {
        // In sanitizer builds, LeakSanitizer would report Open MPI's own allocations left at exit
        // (libmpi, hwloc, MCA components) and fail every MPI run: leaks are checked in the
        // single-process runs only. Other builds ignore the variable.
        return try runCommand("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                               "-x", "ASAN_OPTIONS=detect_leaks=0", "-n", "\(ranks)", unetDistBinary] + args,
                              timeout: timeout)
    }
    return try runCommand(unetDistBinary, args, timeout: timeout)
}

/// Runs a program to completion (or kills it at `timeout` and throws). Output goes through
/// files, so a chatty child never blocks on a full pipe.
public func runCommand(_ executable: String, _ args: [String], environment: [String: String] = [:],
                       timeout: TimeInterval = 300) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let dir = try makeTemporaryDirectory("out")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let out = URL(fileURLWithPath: dir + "/out"), err = URL(fileURLWithPath: dir + "/err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); p.waitUntilExit(); throw CLIError.timedOut([executable] + args) }
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// Runs a bash command line.
public func shell(_ command: String, environment: [String: String] = [:], timeout: TimeInterval = 300) throws -> CommandResult {
    try runCommand("/bin/bash", ["-c", command], environment: environment, timeout: timeout)
}

public enum CLIError: Error { case timedOut([String]) }

/// A fresh temporary directory, removed by the caller.
public func makeTemporaryDirectory(_ tag: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("unet-dist-\(tag)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.path
}

/// A test case whose temporary directories are removed after each test.
open class ScratchTestCase: XCTestCase {
    private var scratch: [String] = []

    /// A fresh directory, removed when the test ends.
    public func scratchDirectory(_ tag: String = "test") throws -> String {
        let d = try makeTemporaryDirectory(tag)
        scratch.append(d)
        return d
    }

    open override func tearDown() {
        for d in scratch { try? FileManager.default.removeItem(atPath: d) }
        scratch = []
        super.tearDown()
    }
}

public struct NoSuchProcess: Error, CustomStringConvertible {
    public let description: String
}

/// kill(2) of one process that a test looked up. A lookup that found nothing (nil), or a pid that
/// kill(2) would take for a group (0: the test's own process group; -1: every process it may
/// signal; below -1: another group), fails the test and throws, signalling nothing.
public func sendSignal(_ signal: Int32, to pid: pid_t?, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
    guard let pid, pid > 0 else {
        let message = "\(what): no process to signal (pid \(pid.map(String.init) ?? "not found"))"
        XCTFail(message, file: file, line: line)
        throw NoSuchProcess(description: message)
    }
    XCTAssertEqual(kill(pid, signal), 0, "\(what): kill(\(pid), \(signal)): errno \(errno)", file: file, line: line)
}
