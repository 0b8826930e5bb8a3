import Foundation
import Formats
import Glibc
import TestSupport
import XCTest

/// SIGTERM, SIGKILL and a full disk against 2-rank runs on the fixture set (10 pairs of 48x48):
/// every fault ends the job within 30 s, leaves a checkpoint that loads, and a resume ends in
/// the bytes of an uninterrupted run.
final class StopAndResumeTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path
    /// Batch 1: 8 steps per epoch, so that a stop lands inside an epoch.
    var common: [String] { ["train", "--data", data, "--batch-size", "1", "--test-count", "2", "--threads", "1", "--epochs", "3"] }

    /// The uninterrupted 2-rank run's final checkpoint and history, made once for the class.
    static var straight: (checkpoint: Data, history: [[Double]])?

    func straightRun() throws -> (checkpoint: Data, history: [[Double]]) {
        if let s = Self.straight { return s }
        let run = try runDir()
        let r = try runUnetDist(common + ["--run-dir", run], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = (try Data(contentsOf: URL(fileURLWithPath: run + "/checkpoints/last.safetensors")), try history(run))
        Self.straight = s
        return s
    }

    func runDir() throws -> String {
        let run = try scratchDirectory("stop") + "/run"
        // Made beforehand so that it can be watched from the start.
        try FileManager.default.createDirectory(atPath: run + "/checkpoints", withIntermediateDirectories: true)
        return run
    }

    func history(_ run: String) throws -> [[Double]] {
        try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { $0.split(separator: ",").map { Double($0)! } }
    }

    /// Starts a job without waiting; output goes to files in the run's parent directory.
    func start(_ executable: String, _ args: [String], environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let dir = try scratchDirectory("out")
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
        p.standardInput = FileHandle.nullDevice
        errFiles[ObjectIdentifier(p)] = dir + "/err"
        try p.run()
        return p
    }
    var errFiles: [ObjectIdentifier: String] = [:]
    func stderr(_ p: Process) -> String { (try? String(contentsOfFile: errFiles[ObjectIdentifier(p)]!, encoding: .utf8)) ?? "" }

    func mpirun(_ ranks: Int, _ args: [String], mca: [String] = []) throws -> Process {
        try start("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"] + mca
                  + ["-n", "\(ranks)", unetDistBinary] + args)
    }

    /// Waits for the job's end; a job alive after `seconds` fails the test and is killed.
    func waitForEnd(_ p: Process, within seconds: Double = 30, _ what: String) {
        let t0 = Date()
        while p.isRunning && Date().timeIntervalSince(t0) < seconds { usleep(20_000) }
        XCTAssertFalse(p.isRunning, "\(what): the job still runs \(seconds) s later")
        if p.isRunning { p.interrupt(); kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    /// SIGKILL to one rank of `job`. A rank whose pid was not found fails the test (nothing is
    /// signalled; never pid 0, the test's own group) and ends the job before the test stops.
    func killRank(_ rank: Int, of pids: [Int: pid_t], job: Process) throws {
        do { try sendSignal(SIGKILL, to: pids[rank], "rank \(rank)") } catch {
            if job.isRunning { job.interrupt() }
            waitForEnd(job, "the job, after no pid was found for rank \(rank)")
            throw error
        }
    }

    /// The unet-dist rank processes of the run, by rank.
    func ranks(of run: String) throws -> [Int: pid_t] {
        let out = try shell("for p in $(pgrep -f -- '--run-dir \(run)( |$)'); do r=$(tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null "
                            + "| sed -n 's/^OMPI_COMM_WORLD_RANK=//p'); [ -n \"$r\" ] && grep -qa unet-dist /proc/$p/cmdline && echo $r $p; done").stdout
        var result: [Int: pid_t] = [:]
        for line in out.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count == 2, let r = Int(f[0]), let p = pid_t(f[1]) { result[r] = p }
        }
        return result
    }

    /// Loads in the model (`unet-dist info`), not only as a file; returns its metadata.
    func assertLoads(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: String] {
        let r = try runUnetDist(["info", path])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return try SafeTensors(path: path).metadata
    }

    func temporaryFiles(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.contains(".tmp-") }
    }

    func waitForFirstCheckpoint(_ events: FileEvents) -> Bool {
        events.next(timeout: 60) { name, mask in name == "last.safetensors" && mask & UInt32(IN_MOVED_TO) != 0 } != nil
    }

    // MARK: SIGTERM

    func testSIGTERMToTheLocalLauncherStopsAllRanksMidEpochAndTheResumeEndsInTheSameBytes() throws {
        let straight = try straightRun()
        let run = try runDir()
        let events = try FileEvents([run + "/checkpoints", data + "/MRIs"], mask: UInt32(IN_MOVED_TO | IN_OPEN))
        let job = try start("/bin/bash", [repo + "/launch/local.sh", "-n", "2"] + common + ["--run-dir", run],
                            environment: ["UNET_DIST_BIN": unetDistBinary, "UNET_DIST_SIGKILL_TIMEOUT": "1"])
        XCTAssertTrue(waitForFirstCheckpoint(events))
        // Epoch 2's first read: the signal comes while its steps run.
        XCTAssertNotNil(events.next(timeout: 30) { name, mask in mask & UInt32(IN_OPEN) != 0 && name.hasPrefix("slice_00") })
        kill(job.processIdentifier, SIGTERM)
        waitForEnd(job, "SIGTERM")
        XCTAssertEqual(job.terminationStatus, 75, stderr(job))
        XCTAssertNotNil(stderr(job).range(of: #"unet-dist: stopped on SIGUSR1 at epoch 2, step [1-7]/8; wrote \#(run)/checkpoints/last.safetensors"#,
                                          options: .regularExpression), stderr(job))
        let checkpoint = run + "/checkpoints/last.safetensors"
        let meta = try assertLoads(checkpoint)
        let step = Int(meta["step"]!)!
        XCTAssertTrue(step > 8 && step < 16, "stopped inside epoch 2: step \(step)")
        XCTAssertNotNil(meta["epoch_sums"])
        XCTAssertEqual(temporaryFiles(run + "/checkpoints"), [])

        // Resumed on 3 ranks (a copy): the epochs after the resume agree within 1e-3 relative.
        let other = try scratchDirectory("stop3") + "/run"
        try FileManager.default.copyItem(atPath: run, toPath: other)
        let r3 = try runUnetDist(common + ["--run-dir", other, "--resume", other + "/checkpoints/last.safetensors"], ranks: 3)
        XCTAssertEqual(r3.status, 0, r3.stderr)
        let h3 = try history(other)
        XCTAssertEqual(h3.map { Int($0[0]) }, [1, 2, 3])
        for (a, b) in zip(straight.history, h3).dropFirst() {
            for column in [1, 3] { XCTAssertEqual(b[column], a[column], accuracy: 1e-3 * abs(a[column]), "epoch \(a[0]) column \(column)") }
        }

        // Resumed on 2 ranks: the final checkpoint is byte for byte the straight run's.
        let r = try runUnetDist(common + ["--run-dir", run, "--resume", checkpoint], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), straight.checkpoint)
        XCTAssertEqual(try history(run).map { $0[1] }, straight.history.map { $0[1] }, "per-epoch training loss")
    }

    func testSIGTERMToMpirunStopsTheRanksBeforeItsKill() throws {
        let run = try runDir()
        let events = try FileEvents([run + "/checkpoints"], mask: UInt32(IN_MOVED_TO))
        // mpirun sends SIGTERM to the ranks after the timeout and SIGKILL after as many seconds
        // again, and ends with its own status: not 75, but the checkpoint is the stop's.
        let args = common.dropLast(2) + ["--epochs", "100", "--run-dir", run]
        let job = try mpirun(2, Array(args), mca: ["--mca", "odls_base_sigkill_timeout", "2"])
        XCTAssertTrue(waitForFirstCheckpoint(events))
        kill(job.processIdentifier, SIGTERM)
        waitForEnd(job, "SIGTERM to mpirun")
        XCTAssertNotEqual(job.terminationStatus, 0)
        let checkpoint = run + "/checkpoints/last.safetensors"
        // Inside an epoch or at its end, wherever the forwarded signal lands.
        XCTAssertNotNil(stderr(job).range(of: "unet-dist: stopped on SIGTERM "), stderr(job))
        let step = Int(try assertLoads(checkpoint)["step"]!)!
        let r = try runUnetDist(Array(args) + ["--resume", checkpoint, "--max-steps", "\(step + 1)"], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testSIGTERMToASingleProcessExits75() throws {
        let run = try runDir()
        let events = try FileEvents([run + "/checkpoints"], mask: UInt32(IN_MOVED_TO))
        let job = try start(unetDistBinary, common + ["--run-dir", run, "--epochs", "50"])
        XCTAssertTrue(waitForFirstCheckpoint(events))
        kill(job.processIdentifier, SIGINT)
        waitForEnd(job, "SIGINT")
        XCTAssertEqual(job.terminationStatus, 75, stderr(job))
        XCTAssertTrue(stderr(job).hasPrefix("unet-dist: stopped on SIGINT "), stderr(job))
        _ = try assertLoads(run + "/checkpoints/last.safetensors")
    }

    // MARK: SIGKILL

    func testSIGKILLAfterACheckpointEveryCheckpointResumesToTheSameBytes() throws {
        let straight = try straightRun()
        let run = try runDir()
        let events = try FileEvents([run + "/checkpoints"], mask: UInt32(IN_MOVED_TO))
        let job = try mpirun(2, common + ["--run-dir", run, "--checkpoint-every", "3"])
        XCTAssertTrue(waitForFirstCheckpoint(events))  // step 3's
        let pids = try ranks(of: run)
        XCTAssertEqual(pids.count, 2)
        try killRank(1, of: pids, job: job)
        waitForEnd(job, "SIGKILL of rank 1")
        XCTAssertNotEqual(job.terminationStatus, 0)
        let checkpoint = run + "/checkpoints/last.safetensors"
        let step = Int(try assertLoads(checkpoint)["step"]!)!
        XCTAssertLessThan(step, 24)
        let r = try runUnetDist(common + ["--run-dir", run, "--resume", checkpoint], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), straight.checkpoint)
    }

    enum Phase { case training, evaluation, checkpointWrite }

    /// 6 training pairs (3 steps of 2) and 4 test pairs; after epoch 1's checkpoint, kills
    /// `victim` the moment `phase` begins in epoch 2.
    func killDuring(_ phase: Phase, victim: Int) throws {
        let run = try runDir()
        let events = try FileEvents([run + "/checkpoints", data + "/MRIs"], mask: UInt32(IN_MOVED_TO | IN_OPEN | IN_CREATE))
        let args = ["train", "--data", data, "--run-dir", run, "--batch-size", "2", "--test-count", "4", "--threads", "1", "--epochs", "100"]
        let job = try mpirun(2, args)
        XCTAssertTrue(waitForFirstCheckpoint(events))
        let pids = try ranks(of: run)
        XCTAssertEqual(pids.count, 2)
        let trigger: (String, UInt32) -> Bool
        switch phase {
        case .training: trigger = { n, m in m & UInt32(IN_OPEN) != 0 && ["slice_000", "slice_001", "slice_002", "slice_003", "slice_004", "slice_005"].contains { n.hasPrefix($0) } }
        case .evaluation: trigger = { n, m in m & UInt32(IN_OPEN) != 0 && ["slice_006", "slice_007", "slice_008", "slice_009"].contains { n.hasPrefix($0) } }
        case .checkpointWrite: trigger = { n, m in m & UInt32(IN_CREATE) != 0 && n.hasPrefix(".last.safetensors.tmp-") }
        }
        XCTAssertNotNil(events.next(timeout: 30, where: trigger))
        try killRank(victim, of: pids, job: job)
        waitForEnd(job, "SIGKILL of rank \(victim) during \(phase)")
        XCTAssertNotEqual(job.terminationStatus, 0)
        let checkpoint = run + "/checkpoints/last.safetensors"
        let step = Int(try assertLoads(checkpoint)["step"]!)!
        XCTAssertTrue(step == 3 || step == 6, "\(phase): step \(step)")
        if phase == .checkpointWrite && victim == 0 {
            // Killed mid-write: the temporary file is left, the checkpoint beside it is epoch 1's.
            XCTAssertEqual(temporaryFiles(run + "/checkpoints").count, 1)
            XCTAssertEqual(step, 3)
        }
        let r = try runUnetDist(args + ["--resume", checkpoint, "--max-steps", "\(step + 1)"], ranks: 2)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try SafeTensors(path: checkpoint).metadata["step"], "\(step + 1)")
        XCTAssertEqual(temporaryFiles(run + "/checkpoints"), [], "a resume removes what a killed writer left")
    }

    func testSIGKILLOfRank0OrRank1DuringTraining() throws {
        try killDuring(.training, victim: 0)
        try killDuring(.training, victim: 1)
    }

    func testSIGKILLOfRank0OrRank1DuringEvaluation() throws {
        try killDuring(.evaluation, victim: 0)
        try killDuring(.evaluation, victim: 1)
    }

    func testSIGKILLOfRank0OrRank1DuringCheckpointWriting() throws {
        try killDuring(.checkpointWrite, victim: 0)
        try killDuring(.checkpointWrite, victim: 1)
    }

    // MARK: Full disk

    func testAFullDiskStopsTheRunWithOneLineAndKeepsTheCheckpoint() throws {
        let mount = try scratchDirectory("tmpfs")
        // Room for one checkpoint (5.8 MB) but not for best beside it.
        let m = try shell("mount -t tmpfs -o size=8m unet-dist-test \(mount)")
        if m.status != 0 { throw XCTSkip("cannot mount a tmpfs here: \(m.stderr)") }
        defer { _ = try? shell("umount \(mount)") }
        let run = mount + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2",
                                 "--threads", "1", "--epochs", "2", "--quiet"], ranks: 2)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { !$0.hasPrefix("-") && !$0.isEmpty }.first.map(String.init),
                       "error: \(run)/checkpoints/best.safetensors: cannot write: No space left on device", r.stderr)
        _ = try assertLoads(run + "/checkpoints/last.safetensors")
        XCTAssertEqual(temporaryFiles(run + "/checkpoints"), [])
    }

    func testAFileSizeLimitGivesAnErrorNamingTheFileAndKeepsThePreviousCheckpoint() throws {
        let run = try runDir()
        let args = ["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2", "--threads", "1", "--quiet"]
        XCTAssertEqual(try runUnetDist(args + ["--epochs", "1"]).status, 0)
        let checkpoint = run + "/checkpoints/last.safetensors"
        let before = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        // One process: Open MPI's own shared-memory files fail under a file size limit.
        let quoted = (args + ["--epochs", "2", "--resume", checkpoint]).map { "'\($0)'" }.joined(separator: " ")
        let r = try shell("ulimit -f 4096; exec '\(unetDistBinary)' \(quoted)")
        XCTAssertEqual(r.status, 1, "an error, not death by SIGXFSZ: \(r.stderr)")
        XCTAssertEqual(r.stderr, "error: \(checkpoint): cannot write: File too large\n")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), before)
        XCTAssertEqual(temporaryFiles(run + "/checkpoints"), [])
    }
}
