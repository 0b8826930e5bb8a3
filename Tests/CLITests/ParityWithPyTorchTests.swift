import Foundation
import Formats
import TestSupport
import XCTest

/// The acceptance checks against PyTorch, run through the built binary on a PyTorch-made checkpoint
/// (tools/make_fixtures.py): eval metrics and one large SGD step.
final class ParityWithPyTorchTests: XCTestCase {
    let data = fixturesDirectory + "/seeddata"
    let torchCheckpoint = fixturesDirectory + "/torch_trained.safetensors"

    func testEvalMatchesPyTorch() throws {
        try assertEvalMatchesPyTorch(torchCheckpoint, expected: "torch_trained_eval.json")
    }

    func testEvalOfAPyTorchUNetResnetMatchesPyTorch() throws {
        // The model is found from the tensor names alone: a plain PyTorch state_dict has no metadata.
        try assertEvalMatchesPyTorch(fixturesDirectory + "/resnet_trained.safetensors", expected: "resnet_trained_eval.json")
    }

    /// The rule: eval loss within 1e-4 relative of PyTorch's float64, IoU and Dice within 1e-3.
    func assertEvalMatchesPyTorch(_ checkpoint: String, expected: String, file: StaticString = #filePath,
                                  line: UInt = #line) throws {
        let r = try runUnetDist(["eval", "--checkpoint", checkpoint, "--data", data, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let ours = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let torch = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/" + expected))) as! [String: Any]
        XCTAssertEqual(Set(ours.keys), ["loss", "iou", "iou_wm", "iou_gm", "dice", "images", "split", "unit", "per_class"],
                       file: file, line: line)
        let loss = ours["loss"] as! Double, torchLoss = torch["loss64"] as! Double
        XCTAssertEqual(loss, torchLoss, accuracy: 1e-4 * torchLoss, file: file, line: line)
        for key in ["iou", "iou_wm", "iou_gm", "dice"] {
            XCTAssertEqual(ours[key] as! Double, torch[key] as! Double, accuracy: 1e-3, key, file: file, line: line)
        }
        XCTAssertEqual(ours["images"] as? Int, 10, file: file, line: line)
    }

    func testOneLargeSGDStepMatchesPyTorch() throws {
        let run = try makeTemporaryDirectory("sgd")
        defer { try? FileManager.default.removeItem(atPath: run) }
        let lr: Float = 10
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--init", torchCheckpoint, "--optimizer", "sgd",
                                 "--lr", "\(lr)", "--no-shuffle", "--max-steps", "1", "--batch-size", "4", "--test-count", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let before = try SafeTensors(path: torchCheckpoint)
        let after = try SafeTensors(path: run + "/checkpoints/last.safetensors")
        let fx = try Fixture("torch_sgd_step.safetensors")
        XCTAssertEqual(after.metadata["step"], "1")
        var compared = 0
        for name in before.names {
            if name.hasSuffix("num_batches_tracked") {
                XCTAssertEqual(try after.int64s(name), try fx.int64s("after64." + name), name)
                continue
            }
            let update = zip(try after.floats(name), try before.floats(name)).map { $0 - $1 }
            let reference = try fx.doubles("update64." + name)
            if isBiasBeforeBatchNorm(name) {
                // Exactly zero gradient: the bias before a BatchNorm.
                XCTAssertLessThanOrEqual(update.map { abs($0) }.max()!, 1e-4 * lr, name)
            } else {
                XCTAssertLessThanOrEqual(distance(update, reference), 1e-2 * norm(reference), name)
            }
            compared += 1
        }
        XCTAssertEqual(compared, 106 - 14)
    }
}
