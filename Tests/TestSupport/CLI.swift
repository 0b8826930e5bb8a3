import Foundation

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
/// machine needs (never part of what a user runs). Output goes through files, so a chatty
/// child never blocks on a full pipe.
public func runUnetDist(_ args: [String], ranks: Int? = nil, timeout: TimeInterval = 300) throws -> CommandResult {
    let p = Process()
    if let ranks {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "\(ranks)",
                       unetDistBinary] + args
    } else {
        p.executableURL = URL(fileURLWithPath: unetDistBinary)
        p.arguments = args
    }
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("unet-dist-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); p.waitUntilExit(); throw CLIError.timedOut(args) }
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

public enum CLIError: Error { case timedOut([String]) }

/// A fresh temporary directory, removed by the caller.
public func makeTemporaryDirectory(_ tag: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("unet-dist-\(tag)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.path
}
