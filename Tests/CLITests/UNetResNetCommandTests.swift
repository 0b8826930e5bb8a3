import Foundation
import Formats
import TestSupport
import XCTest

/// `--model unet-resnet` end to end through mpirun, at width 8 so that it stays fast: the
/// data-parallel equivalence on 1 and 3 ranks (docs/design.md section 2), --pretrained with --freeze-encoder, resume, and eval,
/// predict and info finding the model from the checkpoint alone.
final class UNetResNetCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let start = fixturesDirectory + "/resnet_trained.safetensors"
    let model = ["--model", "unet-resnet", "--width", "8"]

    func runDir() throws -> String { try scratchDirectory("resnet") + "/run" }

    func train(_ run: String, _ extra: [String], ranks: Int) throws -> [Double] {
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--test-count", "2", "--threads", "1"]
                                + model + extra, ranks: ranks)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try String(contentsOfFile: run + "/history.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .map { Double($0.split(separator: ",")[1])! }
    }

    func checkpoint(_ run: String) throws -> SafeTensors { try SafeTensors(path: run + "/checkpoints/last.safetensors") }

    func testOneSGDStepOnThreeRanksEqualsOneRank() throws {
        // Batch 4 on 3 ranks: shares of 2, 1 and 1 images; BN statistics synchronized in the encoder too.
        let args = ["--init", start, "--optimizer", "sgd", "--lr", "1", "--no-shuffle", "--max-steps", "1", "--batch-size", "4"]
        let one = try runDir(), three = try runDir()
        let l1 = try train(one, args, ranks: 1), l3 = try train(three, args, ranks: 3)
        XCTAssertEqual(l3[0], l1[0], accuracy: 1e-5 * l1[0])
        try assertSameUpdate(from: try SafeTensors(path: start), expected: try checkpoint(one), actual: try checkpoint(three), lr: 1)
        XCTAssertEqual(try checkpoint(one).metadata["model"], "unet-resnet")
    }

    func testAdamEpochsAgreeOnOneAndThreeRanks() throws {
        // 8 training pairs in batches of 3: the last batch holds 2, so one of 3 ranks has nothing.
        let args = ["--epochs", "2", "--batch-size", "3", "--lr", "1e-3"]
        let one = try train(try runDir(), args, ranks: 1), three = try train(try runDir(), args, ranks: 3)
        XCTAssertEqual(one.count, 2)
        for (a, b) in zip(one, three) { XCTAssertEqual(b, a, accuracy: 1e-3 * a, "\(three) vs \(one)") }
    }

    func testPretrainedEncoderStaysFrozenForTheFirstEpochThenTrains() throws {
        let pretrained = fixturesDirectory + "/resnet18_w8_imagenet_like.safetensors"
        let imagenet = try SafeTensors(path: pretrained)
        let run = try runDir()
        _ = try train(run, ["--pretrained", pretrained, "--freeze-encoder", "1", "--epochs", "1", "--batch-size", "4"], ranks: 2)
        var st = try checkpoint(run)
        // Frozen: every pretrained weight; trained: the fresh 1-channel stem and the decoder. BN
        // running statistics still follow the data, as in PyTorch's train mode.
        for name in ["layer1.0.conv1.weight", "layer4.1.bn2.weight", "layer2.0.downsample.0.weight", "fc.weight"] {
            XCTAssertEqual(try st.floats("encoder." + name), try imagenet.floats(name), name)
        }
        XCTAssertNotEqual(try st.floats("encoder.layer1.0.bn1.running_mean"), try imagenet.floats("layer1.0.bn1.running_mean"))
        XCTAssertEqual(try st.entry("encoder.conv1.weight").shape, [8, 1, 7, 7])
        XCTAssertEqual(try st.int64s("optimizer.step.encoder.conv1.weight"), [2])
        XCTAssertEqual(try st.int64s("optimizer.step.encoder.layer1.0.conv1.weight"), [0])

        // Epoch 2 resumes with the encoder unfrozen: it moves, its Adam count starting from 1.
        let r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--test-count", "2", "--threads", "1",
                                 "--pretrained", pretrained, "--freeze-encoder", "1", "--epochs", "2", "--batch-size", "4",
                                 "--resume", run + "/checkpoints/last.safetensors"] + model, ranks: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
        st = try checkpoint(run)
        XCTAssertNotEqual(try st.floats("encoder.layer1.0.conv1.weight"), try imagenet.floats("layer1.0.conv1.weight"))
        XCTAssertEqual(try st.floats("encoder.fc.weight"), try imagenet.floats("fc.weight"), "fc is not part of the forward")
        XCTAssertEqual(try st.int64s("optimizer.step.encoder.layer1.0.conv1.weight"), [2])
        XCTAssertEqual(try st.int64s("optimizer.step"), [4])
    }

    func testPretrainedIsRefusedForTheUNetAndForAWrongWidth() throws {
        let pretrained = fixturesDirectory + "/resnet18_w8_imagenet_like.safetensors"
        var r = try runUnetDist(["train", "--data", data, "--run-dir", try runDir(), "--pretrained", pretrained])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("--pretrained loads a ResNet-18 encoder: use it with --model unet-resnet"), r.stderr)
        let run = try runDir()
        r = try runUnetDist(["train", "--data", data, "--run-dir", run, "--test-count", "2", "--batch-size", "4",
                             "--model", "unet-resnet", "--width", "16", "--pretrained", pretrained], ranks: 2)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: \(pretrained): tensor conv1.weight has shape [8, 3, 7, 7], the encoder of width 16 needs [16, 1, 7, 7]\n"),
                      r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run))
    }

    func testEvalPredictAndInfoFindTheModelInTheCheckpoint() throws {
        let run = try runDir()
        _ = try train(run, ["--epochs", "1", "--batch-size", "4"], ranks: 1)
        let ckpt = run + "/checkpoints/last.safetensors"
        let info = try runUnetDist(["info", ckpt, "--json"])
        XCTAssertEqual(info.status, 0, info.stderr)
        let o = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(o["model"] as? String, "unet-resnet")
        XCTAssertEqual(o["width"] as? Int, 8)
        let eval = try runUnetDist(["eval", "--checkpoint", ckpt, "--data", data, "--json"], ranks: 2)
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let out = try scratchDirectory("resnet-predict")
        let predict = try runUnetDist(["predict", "--checkpoint", ckpt, "--input", data + "/MRIs/slice_000.npy", "--out", out])
        XCTAssertEqual(predict.status, 0, predict.stderr)
        XCTAssertEqual(try NpyArray(path: out + "/slice_000_mask.npy").shape, [48, 48])
        // A UNet run cannot resume from it, and says why.
        let wrong = try runUnetDist(["train", "--data", data, "--run-dir", run, "--test-count", "2", "--batch-size", "4",
                                     "--resume", ckpt])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.stderr.hasPrefix("error: \(ckpt): is a unet-resnet checkpoint, not unet\n"), wrong.stderr)
    }
}
