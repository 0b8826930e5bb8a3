import Foundation
import Formats
import TestSupport
import XCTest

/// Checkpoints that cannot be used are refused before any work, on every rank, and the run
/// directory stays as it was.
final class CheckpointErrorTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let good = fixturesDirectory + "/torch_trained.safetensors"

    func expectRefused(_ checkpoint: String, _ message: String, flag: String = "--init",
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let run = try scratchDirectory("ckpt") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, flag, checkpoint, "--batch-size", "4",
                                 "--test-count", "2", "--threads", "1"], ranks: 2, timeout: 120)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }, ["error: \(checkpoint): \(message)"],
                       file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run), "run directory written", file: file, line: line)
    }

    func testTruncatedCheckpoint() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let path = try scratchDirectory("ckpt") + "/cut.safetensors"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
        let header = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        try expectRefused(path, "truncated: its tensors need \(bytes.count - 8 - header) bytes of data, "
                          + "the file has \(bytes.count / 2 - 8 - header)")
    }

    func testCheckpointOfAnotherModel() throws {
        var st = try SafeTensors(path: good)
        st.metadata = ["model": "unet-resnet", "epoch": "1", "step": "1"]
        let path = try scratchDirectory("ckpt") + "/other.safetensors"
        try st.encoded().write(to: URL(fileURLWithPath: path))
        try expectRefused(path, "is a unet-resnet checkpoint, not unet")
    }

    func testCheckpointWithAnotherNumberOfClasses() throws {
        var st = try SafeTensors(path: good)
        st.set("out.weight", floats: [Float](repeating: 0.1, count: 4 * 16 * 9), shape: [4, 16, 3, 3])
        st.set("out.bias", floats: [0, 0, 0, 0], shape: [4])
        let path = try scratchDirectory("ckpt") + "/four.safetensors"
        try st.encoded().write(to: URL(fileURLWithPath: path))
        try expectRefused(path, "tensor out.weight has shape [4, 16, 3, 3], the model needs [3, 16, 3, 3]")
    }

    func testCheckpointMissingATensor() throws {
        let st = try SafeTensors(path: good)
        var partial = SafeTensors()
        for name in st.names where name != "conv3.1.1.running_var" {
            let e = try st.entry(name)
            if e.dtype == "I64" { partial.set(name, int64s: try st.int64s(name), shape: e.shape) }
            else { partial.set(name, floats: try st.floats(name), shape: e.shape) }
        }
        let path = try scratchDirectory("ckpt") + "/partial.safetensors"
        try partial.encoded().write(to: URL(fileURLWithPath: path))
        try expectRefused(path, "has no tensor conv3.1.1.running_var", flag: "--resume")
    }
}
