@testable import Distributed
import Foundation
import Formats
import Glibc
import TestSupport
import XCTest

/// A rank that stops without dying (`kill -STOP`, a lost network link) must end the job like a
/// dead one: the other rank's watchdog (--stall-timeout) names the stall, the job ends with a
/// dead rank's status, and the last checkpoint resumes.
final class StallTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path
    /// 4 steps per epoch, a few seconds in all: long enough to stop a rank mid-run, short
    /// enough for the resume to finish it.
    let epochs = 12
    var common: [String] { ["train", "--data", data, "--batch-size", "2", "--test-count", "2", "--threads", "1",
                            "--epochs", "\(epochs)"] }
    /// What mpirun reports for a rank killed with SIGKILL.
    let deadRankStatus: Int32 = 137

    // MARK: Helpers

    /// Starts `launcher -n 2 train ...`; stderr goes to a file (`errorOutput`).
    func startJob(_ launcher: String, _ args: [String]) throws -> (Process, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [repo + "/launch/" + launcher, "-n", "2"] + args
        p.environment = ProcessInfo.processInfo.environment.merging(["UNET_DIST_BIN": unetDistBinary]) { $1 }
        let err = try scratchDirectory("stall-out") + "/err"
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return (p, err)
    }

    func waitForCheckpoint(_ run: String, seconds: Double = 120) -> Bool {
        let t0 = Date()
        while Date().timeIntervalSince(t0) < seconds {
            if FileManager.default.fileExists(atPath: run + "/checkpoints/last.safetensors") { return true }
            usleep(20_000)
        }
        return false
    }

    /// The pid of the unet-dist process of `rank` in the run, if any.
    func pid(ofRank rank: Int, run: String) throws -> pid_t? {
        let out = try shell("for p in $(pgrep -f -- '--run-dir \(run)( |$)'); do grep -qa unet-dist /proc/$p/cmdline 2>/dev/null && "
                            + "tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=\(rank) && echo $p; done").stdout
        return out.split(separator: "\n").first.flatMap { pid_t($0) }.flatMap { $0 > 0 ? $0 : nil }
    }

    /// Whether `pid` is still a process of this run (and not a reused pid).
    func belongsToRun(_ pid: pid_t, _ run: String) -> Bool {
        guard pid > 0, let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return false }
        return String(decoding: cmdline, as: UTF8.self).contains(run)
    }

    /// Waits up to `seconds` for the job to end; returns the seconds it took, or nil (then the
    /// job and the run's processes are killed).
    func waitForEnd(_ job: Process, run: String, seconds: Double) throws -> Double? {
        let t0 = Date()
        while job.isRunning && Date().timeIntervalSince(t0) < seconds { usleep(20_000) }
        let took = Date().timeIntervalSince(t0)
        guard job.isRunning else { job.waitUntilExit(); return took }
        for p in try shell("pgrep -f -- '--run-dir \(run)( |$)'").stdout.split(separator: "\n").compactMap({ pid_t($0) })
        where belongsToRun(p, run) {
            kill(p, SIGCONT); kill(p, SIGKILL)
        }
        job.terminate()
        job.waitUntilExit()
        return nil
    }

    /// The last checkpoint loads in the model, and a resume on 2 ranks with the same flags
    /// finishes the run.
    func assertResumeFinishes(_ run: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let checkpoint = run + "/checkpoints/last.safetensors"
        let info = try runUnetDist(["info", checkpoint])
        XCTAssertEqual(info.status, 0, "the last checkpoint does not load: \(info.stderr)", file: file, line: line)
        let r = try runUnetDist(common + ["--run-dir", run, "--resume", checkpoint], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let history = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(history.last?.split(separator: ",").first, "\(epochs)", "the resumed run finished", file: file, line: line)
    }

    // MARK: kill -STOP

    func stopRank(_ stopped: Int) throws {
        let run = try scratchDirectory("stall") + "/run"
        let timeout = 5
        let (job, err) = try startJob("local.sh", common + ["--run-dir", run, "--stall-timeout", "\(timeout)"])
        XCTAssertTrue(waitForCheckpoint(run), "no checkpoint: " + ((try? String(contentsOfFile: err, encoding: .utf8)) ?? ""))
        let target = try XCTUnwrap(try pid(ofRank: stopped, run: run), "rank \(stopped) not found")
        // Whatever happens, the stopped process must not outlive the test.
        defer { if belongsToRun(target, run) { kill(target, SIGCONT); kill(target, SIGKILL) } }
        kill(target, SIGSTOP)
        let took = try waitForEnd(job, run: run, seconds: Double(timeout) + 45)
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        XCTAssertNotNil(took, "the job still runs \(timeout + 45) s after rank \(stopped) was stopped: \(stderr)")
        XCTAssertEqual(job.terminationStatus, deadRankStatus, "a dead rank's status, not the requeue status 75: \(stderr)")
        // The line comes from the rank that waited for the stopped one.
        XCTAssertNotNil(stderr.range(of: #"error: rank \#(1 - stopped): no progress for [0-9]+ s at epoch [0-9]+[^\n]*waiting in (allreduce|broadcast)"#,
                                     options: .regularExpression), stderr)
        if let took { print("rank \(stopped) stopped: the job ended after \(String(format: "%.1f", took)) s (--stall-timeout \(timeout))") }
        try assertResumeFinishes(run)
    }

    func testStoppedRank1EndsTheJobAndTheLastCheckpointResumes() throws { try stopRank(1) }

    func testStoppedRank0EndsTheJobAndTheLastCheckpointResumes() throws { try stopRank(0) }

    func testStallTimeoutZeroLetsARankPause() throws {
        let run = try scratchDirectory("stall") + "/run"
        let (job, err) = try startJob("local.sh", common + ["--run-dir", run, "--stall-timeout", "0"])
        XCTAssertTrue(waitForCheckpoint(run))
        let target = try XCTUnwrap(try pid(ofRank: 1, run: run))
        defer { if belongsToRun(target, run) { kill(target, SIGCONT); kill(target, SIGKILL) } }
        kill(target, SIGSTOP)
        sleep(3)
        kill(target, SIGCONT)
        XCTAssertNotNil(try waitForEnd(job, run: run, seconds: 120))
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        XCTAssertEqual(job.terminationStatus, 0, stderr)
        XCTAssertNil(stderr.range(of: "no progress"), stderr)
    }

    // MARK: A lost network link

    func testLostLinkBetweenNamespaceHostsEndsTheJobAndTheLastCheckpointResumes() throws {
        let probe = try shell("ip netns add udprobe$$ && ip netns del udprobe$$")
        if probe.status != 0 {
            throw XCTSkip("network namespaces cannot be created here (needs root and iproute2): \(probe.stderr)")
        }
        let run = try scratchDirectory("stall") + "/run"
        let timeout = 5
        let (job, err) = try startJob("netns-cluster.sh", common + ["--run-dir", run, "--stall-timeout", "\(timeout)"])
        // The launcher names its namespaces and veth pair after its pid.
        let tag = "ud\(job.processIdentifier)"
        defer { _ = try? shell("ip netns del \(tag)a 2>/dev/null; ip netns del \(tag)b 2>/dev/null") }
        XCTAssertTrue(waitForCheckpoint(run))
        let down = try shell("ip -n \(tag)a link set \(tag)v1 down")
        XCTAssertEqual(down.status, 0, down.stderr)
        let took = try waitForEnd(job, run: run, seconds: 60)
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        XCTAssertNotNil(took, "the job still runs 60 s after the link went down: \(stderr)")
        XCTAssertEqual(job.terminationStatus, deadRankStatus, stderr)
        XCTAssertNotNil(stderr.range(of: #"error: rank 0: no progress for [0-9]+ s at epoch [0-9]+[^\n]*waiting in (allreduce|broadcast)"#,
                                     options: .regularExpression), stderr)
        if let took { print("link down: the job ended after \(String(format: "%.1f", took)) s (--stall-timeout \(timeout))") }
        try assertResumeFinishes(run)
    }

    // MARK: --threads

    func testThreadsAboveTheCoresPerRankWarnAndTheRunContinues() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let args = ["eval", "--checkpoint", fixturesDirectory + "/torch_trained.safetensors", "--data", data, "--threads"]
        let over = try runUnetDist(args + ["\(cores + 1)"])
        XCTAssertEqual(over.status, 0, over.stderr)
        XCTAssertTrue(over.stderr.hasPrefix("warning: --threads \(cores + 1) is more than the \(cores) core(s) per rank"), over.stderr)
        XCTAssertEqual(over.stderr.split(separator: "\n").count, 1, over.stderr)
        let fits = try runUnetDist(args + ["\(cores)"])
        XCTAssertEqual(fits.status, 0, fits.stderr)
        XCTAssertEqual(fits.stderr, "")
    }

    // MARK: The line

    func testTheLineNamesTheRankThePositionAndTheWait() {
        Watchdog.at(epoch: 2, step: 3, of: 10)
        Watchdog.entering("allreduce", "BatchNorm statistics")
        XCTAssertEqual(Watchdog.message(rank: 1, seconds: 20.7),
                       "rank 1: no progress for 20 s at epoch 2, step 3/10, waiting in allreduce (BatchNorm statistics): "
                       + "another rank stopped or cannot be reached; ending the job (--stall-timeout)")
        Watchdog.left()
        Watchdog.phase("evaluation")
        XCTAssertEqual(Watchdog.message(rank: 0, seconds: 600),
                       "rank 0: no progress for 600 s at epoch 2 (evaluation), busy outside any collective since "
                       + "allreduce (BatchNorm statistics) completed; ending the job (--stall-timeout)")
    }
}
