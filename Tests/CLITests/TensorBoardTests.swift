import Formats
import Foundation
import TensorBoard
import TestSupport
import XCTest

/// The run's TensorBoard event file as TensorBoard's own reader sees it (Tests/scripts/tb_read.py,
/// EventAccumulator), against history.csv; its framing; and `--patience`.
final class TensorBoardTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let scripts = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().appendingPathComponent("scripts").path
    static let eventFile = "events.out.tfevents.unet-dist"

    /// Each scalar tag and the history.csv column it must carry.
    let columns = ["train/loss": "loss", "train/iou": "iou", "train/lr": "lr", "train/images_per_s": "images_per_s",
                   "test/loss": "test_loss", "test/iou": "test_iou", "test/iou_wm": "test_iou_wm",
                   "test/iou_gm": "test_iou_gm", "test/dice": "dice"]

    func train(_ run: String, _ extra: [String]) throws -> CommandResult {
        try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2",
                         "--threads", "1"] + extra)
    }

    /// history.csv as column name -> values in epoch order.
    func history(_ run: String) throws -> [String: [Double]] {
        let lines = try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n")
        let header = lines[0].split(separator: ",").map(String.init)
        var result: [String: [Double]] = [:]
        for line in lines.dropFirst() {
            for (name, field) in zip(header, line.split(separator: ",")) { result[name, default: []].append(Double(field)!) }
        }
        return result
    }

    struct Read { var scalars: [String: [[Double]]]; var images: [String: [[Any]]] }

    func readEvents(_ run: String) throws -> Read {
        let r = try runCommand("/usr/bin/env", ["python3", scripts + "/tb_read.py", run])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout + r.stderr)
        return Read(scalars: (o["scalars"] as? [String: [[Double]]]) ?? [:], images: (o["images"] as? [String: [[Any]]]) ?? [:])
    }

    /// Every scalar tag once per epoch of history.csv, with its value; the sample picture once per
    /// epoch as a PNG of the samples' size.
    func assertEventsMatchHistory(_ run: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let h = try history(run), read = try readEvents(run)
        let epochs = h["epoch"]!
        XCTAssertEqual(Set(read.scalars.keys), Set(columns.keys), file: file, line: line)
        for (tag, column) in columns {
            let events = read.scalars[tag] ?? []
            XCTAssertEqual(events.map { $0[0] }, epochs, tag, file: file, line: line)
            for (event, expected) in zip(events, h[column]!) {
                // float32 in the event; history.csv rounds to 6 decimals (images/s to 2, lr to 6 digits).
                let tolerance = column == "images_per_s" ? 0.006 : max(1e-5 * abs(expected), column == "lr" ? 0 : 2e-6)
                XCTAssertEqual(event[1], expected, accuracy: tolerance, "\(tag) at epoch \(event[0])", file: file, line: line)
            }
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: run + "/samples/epoch-001.png"))
        let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(Array(read.images.keys), ["samples/image_truth_prediction"], file: file, line: line)
        let images = read.images["samples/image_truth_prediction"] ?? []
        XCTAssertEqual(images.map { $0[0] as? Double }, epochs, file: file, line: line)
        for image in images {
            XCTAssertEqual(image[1] as? Int, width, file: file, line: line)
            XCTAssertEqual(image[2] as? Int, height, file: file, line: line)
            XCTAssertEqual(image[3] as? Bool, true, "not a PNG", file: file, line: line)
        }
    }

    func testReaderListsTheRunsScalarsAndImages() throws {
        let run = try scratchDirectory("tb") + "/run"
        let r = try train(run, ["--epochs", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertEventsMatchHistory(run)
        XCTAssertEqual(try history(run)["epoch"], [1, 2, 3])

        // --overwrite starts the events over with the new run.
        XCTAssertEqual(try train(run, ["--epochs", "1", "--overwrite"]).status, 0)
        try assertEventsMatchHistory(run)
        XCTAssertEqual(try history(run)["epoch"], [1])
    }

    /// A run stopped inside epoch 2 wrote that part-epoch's events; a crash then tore a record.
    /// The resumed run shows every epoch once, with the figures of the epochs as finally trained.
    func testResumedRunShowsEachEpochOnce() throws {
        let run = try scratchDirectory("tb") + "/run"
        XCTAssertEqual(try train(run, ["--epochs", "3", "--max-steps", "3"]).status, 0)  // 2 steps per epoch
        XCTAssertEqual(try readEvents(run).scalars["test/iou"]?.map { $0[0] }, [1, 2])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: run + "/" + Self.eventFile))
        handle.seekToEndOfFile()
        handle.write(Data(TFRecord.frame(Array(repeating: 7, count: 40)).prefix(30)))
        handle.closeFile()

        let r = try train(run, ["--epochs", "3", "--resume", run + "/checkpoints/last.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try history(run)["epoch"], [1, 2, 3])
        try assertEventsMatchHistory(run)
    }

    func testCRC32CAndRecordFraming() {
        // Known CRC-32C values (RFC 3720 appendix B.4, and the classic check string).
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum(Array(0..<32)), 0x46DD_794E)
        // The mask of the empty string's CRC (0) is the mask's offset alone.
        XCTAssertEqual(CRC32C.masked([UInt8]()), 0xA282_EAD8)

        let a = TFRecord.frame([1, 2, 3]), b = TFRecord.frame([])
        XCTAssertEqual(a.count, 12 + 3 + 4)
        XCTAssertEqual(Array(a[0..<8]), [3, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(TFRecord.records(a + b).map { Array($0.data) }, [[1, 2, 3], []])
        // A torn or damaged tail ends the records where the last whole one ends.
        XCTAssertEqual(TFRecord.records(a + b.dropLast()).map(\.end), [a.count])
        var flipped = a + b
        flipped[13] ^= 1
        XCTAssertEqual(TFRecord.records(flipped).count, 0)
    }

    /// The best epoch and its exact test IoU, as best.safetensors recorded them when it was written.
    func best(_ run: String) throws -> (epoch: Int, iou: Double) {
        let meta = try SafeTensors(path: run + "/checkpoints/best.safetensors").metadata
        let metrics = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(meta["metrics"]!.utf8)) as? [String: Any])
        return (Int(meta["epoch"]!)!, try XCTUnwrap(metrics["best_test_iou"] as? Double))
    }

    func testPatienceStopsTheRunAndSaysSo() throws {
        let run = try scratchDirectory("tb") + "/run"
        // A rate too small to move the weights: only BatchNorm's running statistics change, and the
        // test IoU soon stops improving.
        let flags = ["--optimizer", "sgd", "--lr", "1e-9"]
        let r = try train(run, ["--epochs", "8", "--patience", "1"] + flags)
        XCTAssertEqual(r.status, 0, r.stderr)
        let first = try best(run)
        let stopped = try history(run)["epoch"]!.count
        XCTAssertLessThan(stopped, 8, "the run did not stop early")
        XCTAssertEqual(stopped, first.epoch + 1, "the run stopped \(stopped - first.epoch) epochs after its best")
        let line = String(format: "stopping early: test IoU has not improved for 1 epoch (best %.4f at epoch %d)", first.iou, first.epoch)
        XCTAssertTrue(r.stdout.contains(line), r.stdout)
        XCTAssertFalse(r.stdout.contains("Epoch \(stopped + 1)/"), r.stdout)
        XCTAssertTrue(try String(contentsOfFile: run + "/report.html", encoding: .utf8).contains(line))
        let jsonl = try String(contentsOfFile: run + "/history.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertTrue(jsonl.last!.hasSuffix(", \"note\": \"\(line)\"}"), String(jsonl.last!))
        XCTAssertEqual(jsonl.filter { $0.contains("note") }.count, 1)
        let meta = try SafeTensors(path: run + "/checkpoints/last.safetensors").metadata
        XCTAssertTrue(meta["metrics"]!.hasPrefix("{\"best_epoch\":\(first.epoch),"), meta["metrics"]!)
        try assertEventsMatchHistory(run)

        // Resumed with a patience of 3, the count goes on from the best epoch before the stop: it
        // stops 3 epochs after the best, which is 2 resumed epochs when the IoU did not improve.
        let resumed = try train(run, ["--epochs", "12", "--patience", "3", "--resume", run + "/checkpoints/last.safetensors"] + flags)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let again = try best(run)
        let last = try history(run)["epoch"]!.count
        XCTAssertEqual(last, again.epoch + 3, "stopped at \(last), best \(again.epoch)")
        if again.epoch == first.epoch { XCTAssertEqual(last, stopped + 2) }
        XCTAssertTrue(resumed.stdout.contains(String(format: "stopping early: test IoU has not improved for 3 epochs (best %.4f at epoch %d)",
                                                     again.iou, again.epoch)), resumed.stdout)
        try assertEventsMatchHistory(run)
    }

    /// Rank 0 decides and every rank stops with it: a rank that went on would wait forever in the
    /// next epoch's collectives.
    func testPatienceStopsEveryRankTogether() throws {
        let run = try scratchDirectory("tb") + "/run"
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--batch-size", "4", "--test-count", "2", "--threads", "1",
                                 "--epochs", "8", "--patience", "1", "--optimizer", "sgd", "--lr", "1e-9"], ranks: 2, timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let first = try best(run)
        XCTAssertEqual(try history(run)["epoch"]!.count, first.epoch + 1)
        XCTAssertEqual(r.stdout.components(separatedBy: "stopping early: test IoU has not improved for 1 epoch").count, 2, r.stdout)
    }

    func testPatienceNeedsAPositiveCountAndATestSet() throws {
        let run = try scratchDirectory("tb") + "/run"
        let zero = try train(run, ["--patience", "0"])
        XCTAssertEqual(zero.status, 64)
        XCTAssertTrue(zero.stderr.contains("--patience must be at least 1"), zero.stderr)
        let noTest = try runUnetDist(["train", "--data", data, "--run-dir", run, "--test-count", "0", "--patience", "2"])
        XCTAssertEqual(noTest.status, 64)
        XCTAssertTrue(noTest.stderr.contains("--patience watches the test IoU"), noTest.stderr)
    }
}
