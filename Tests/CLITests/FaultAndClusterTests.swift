import Foundation
import Formats
import TestSupport
import XCTest

/// Multi-node over TCP between network namespaces, and a rank killed mid-run.
final class FaultAndClusterTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path

    func runDir() throws -> String {
        let d = try scratchDirectory("fault")
        return d + "/run"
    }

    func testTwoNamespaceHostsOverTCPTrainLikeLocalRanks() throws {
        let probe = try shell("ip netns add udprobe$$ && ip netns del udprobe$$")
        if probe.status != 0 {
            throw XCTSkip("network namespaces cannot be created here (needs root and iproute2): \(probe.stderr)")
        }
        let args = ["train", "--data", data, "--epochs", "2", "--batch-size", "3", "--test-count", "2", "--threads", "1"]
        let local = try runDir(), cluster = try runDir()
        let l = try runUnetDist(args + ["--run-dir", local], ranks: 4)
        XCTAssertEqual(l.status, 0, l.stderr)
        let quoted = (args + ["--run-dir", cluster]).map { "'\($0)'" }.joined(separator: " ")
        let c = try shell("\(repo)/launch/netns-cluster.sh -n 4 \(quoted)", environment: ["UNET_DIST_BIN": unetDistBinary])
        XCTAssertEqual(c.status, 0, c.stderr)
        let a = try SafeTensors(path: local + "/checkpoints/last.safetensors")
        let b = try SafeTensors(path: cluster + "/checkpoints/last.safetensors")
        for name in a.names { XCTAssertEqual(a.entries[name]!.bytes, b.entries[name]!.bytes, name) }
        let history = { (run: String) in try String(contentsOfFile: run + "/history.csv", encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: ",").prefix(8).joined(separator: ",") } }
        XCTAssertEqual(try history(local), try history(cluster))
    }

    func testKilledRankEndsTheJobAndTheLastCheckpointResumes() throws {
        let run = try runDir()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "2", unetDistBinary,
                       "train", "--data", data, "--run-dir", run, "--epochs", "1000", "--batch-size", "4",
                       "--test-count", "2", "--threads", "1"]
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        let checkpoint = run + "/checkpoints/last.safetensors"
        var waited = 0.0
        while !FileManager.default.fileExists(atPath: checkpoint) && waited < 60 { usleep(100_000); waited += 0.1 }
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint))
        usleep(300_000)
        // Rank 1: the unet-dist process whose environment says so.
        let rank1 = try shell("for p in $(pgrep -f -- '--run-dir \(run)'); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && echo $p; done")
            .stdout.split(separator: "\n").first.map(String.init)
        XCTAssertNotNil(rank1)
        let killed = Date()
        do { try sendSignal(SIGKILL, to: rank1.flatMap { pid_t($0) }, "rank 1") } catch {
            p.terminate(); p.waitUntilExit()
            throw error
        }
        while p.isRunning && Date().timeIntervalSince(killed) < 30 { usleep(50_000) }
        XCTAssertFalse(p.isRunning, "the job still runs 30 s after a rank was killed")
        if p.isRunning { p.terminate(); _ = try shell("pkill -9 -f -- '--run-dir \(run)'") }
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)

        // The last checkpoint is whole, and a run on another number of ranks resumes from it.
        let st = try SafeTensors(path: checkpoint)
        let step = Int(st.metadata["step"]!)!
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--epochs", "1000", "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1", "--resume", checkpoint, "--max-steps", "\(step + 2)"],
                                ranks: 3)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try SafeTensors(path: checkpoint).metadata["step"], "\(step + 2)")
    }
}

/// One SGD step on 8 ranks spread over the two namespace hosts changes every tensor as one rank.
final class EightRanksOverTwoHostsTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/torch_trained.safetensors"
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path

    func testOneStepOnEightRanksAcrossTwoHostsEqualsOneRank() throws {
        let probe = try shell("ip netns add udprobe$$ && ip netns del udprobe$$")
        if probe.status != 0 {
            throw XCTSkip("network namespaces cannot be created here (needs root and iproute2): \(probe.stderr)")
        }
        let args = ["train", "--data", data, "--init", start, "--optimizer", "sgd", "--lr", "10", "--no-shuffle", "--max-steps", "1",
                    "--batch-size", "8", "--test-count", "2", "--threads", "1", "--quiet"]
        let one = try scratchDirectory("one") + "/run", eight = try scratchDirectory("eight") + "/run"
        let r = try runUnetDist(args + ["--run-dir", one])
        XCTAssertEqual(r.status, 0, r.stderr)
        let quoted = (args + ["--run-dir", eight]).map { "'\($0)'" }.joined(separator: " ")
        let c = try shell("\(repo)/launch/netns-cluster.sh -n 8 \(quoted)", environment: ["UNET_DIST_BIN": unetDistBinary], timeout: 300)
        XCTAssertEqual(c.status, 0, c.stderr)
        try assertSameChangeWithinFloat32(from: try SafeTensors(path: start), expected: try SafeTensors(path: one + "/checkpoints/last.safetensors"),
                                          actual: try SafeTensors(path: eight + "/checkpoints/last.safetensors"),
                                          relativeErrors: try torchFloat32RelativeErrors(), lr: 10, what: "8 ranks on 2 hosts")
    }
}
