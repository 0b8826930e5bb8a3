import Foundation
import Formats

/// The exit status of a run stopped by SIGTERM, SIGINT or SIGUSR1 after writing its checkpoint:
/// EX_TEMPFAIL from sysexits.h, "try again later". A launcher requeues on it with `--resume`.
public let stoppedExitStatus: Int32 = 75

/// The run stopped on a signal, at a step boundary every rank agreed on, after rank 0 wrote
/// `checkpoint`; `--resume checkpoint` continues exactly there.
public struct Interrupted: Error, CustomStringConvertible {
    /// The signal this rank received; 0 when only another rank got one.
    public let signal: Int32
    /// The epoch it stopped in, the optimizer steps taken in all, and those taken in that epoch
    /// (0: before it started).
    public let epoch: Int, step: Int, stepInEpoch: Int, stepsPerEpoch: Int
    public let checkpoint: String

    public var description: String {
        let name = signal == 0 ? "a stop signal on another rank" : (signalNames[signal] ?? "signal \(signal)")
        let position = stepInEpoch == 0 ? "after epoch \(epoch - 1)"
            : "at epoch \(epoch), step \(stepInEpoch)/\(stepsPerEpoch)"
        return "stopped on \(name) \(position); wrote \(checkpoint); continue with --resume \(checkpoint)"
    }
}

private let signalNames: [Int32: String] = [SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGUSR1: "SIGUSR1"]

/// The running sums of an epoch cut short, kept in a mid-epoch checkpoint so that the resumed
/// epoch reports (and saves in its metrics) the same loss and IoU as an uninterrupted one.
struct EpochSums: Equatable {
    var loss = 0.0, iou = 0.0
    var steps = 0

    /// %.17g round-trips every Double, so the resumed sums continue bit for bit.
    var encoded: String {
        String(format: "{\"iou_sum\":%.17g,\"loss_sum\":%.17g,\"steps\":%d}", iou, loss, steps)
    }

    init() {}

    /// Parsed field by field with Double(String), which is exact; Foundation's JSON reader can
    /// be off by an ulp, and the sums must continue bit for bit.
    init?(encoded text: String) {
        var fields: [String: Substring] = [:]
        for pair in text.dropFirst().dropLast().split(separator: ",") {
            let kv = pair.split(separator: ":", maxSplits: 1)
            guard kv.count == 2 else { return nil }
            fields[String(kv[0].filter { $0 != "\"" })] = kv[1]
        }
        guard let loss = fields["loss_sum"].flatMap({ Double($0) }),
              let iou = fields["iou_sum"].flatMap({ Double($0) }),
              let steps = fields["steps"].flatMap({ Int($0) })
        else { return nil }
        self.loss = loss; self.iou = iou; self.steps = steps
    }
}

extension TrainConfig {
    /// Flags that change how a run is driven or reported but never the trained values: left out
    /// of the checkpoint's `config`, so that a run stopped and resumed (with `--resume`, maybe
    /// `--max-steps` or `--checkpoint-every`, in another run directory) ends in the same bytes
    /// as a straight one; `--patience` only decides where a run ends, as `--max-steps` does.
    /// `--threads` stays: the per-thread partial sums change the bits. `--bucket-mb` does not
    /// (the gradient sums give the same bytes in buckets, docs/scaling.md). config.json keeps every flag.
    static let notInCheckpoint: Set<String> = ["runDir", "resume", "overwrite", "quiet", "maxSteps", "checkpointEvery",
                                               "patience", "bucketMb"]

    /// The settings that determine training, as sorted-key JSON.
    public var checkpointJSON: String {
        var object = (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]) ?? [:]
        for key in Self.notInCheckpoint { object.removeValue(forKey: key) }
        guard let data = try? JSONSerialization.data(withJSONObject: object,
                                                     options: [.sortedKeys, .withoutEscapingSlashes])
        else { return json }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Removes temporary files that an earlier process, killed while writing, left in `dir`
/// (writeFileAtomically's `.NAME.tmp-PID`): the completed files beside them are intact.
func removeAbandonedTemporaryFiles(in dir: String) {
    let fm = FileManager.default
    guard let names = try? fm.contentsOfDirectory(atPath: dir) else { return }
    for name in names where name.hasPrefix(".") && name.range(of: #"\.tmp-[0-9]+$"#,
                                                              options: .regularExpression) != nil {
        try? fm.removeItem(atPath: dir + "/" + name)
    }
}

/// The stop protocol: a signal is only recorded (CStop); the ranks vote at step boundaries on
/// the step's allreduce (`Trainer.finishStep`) and at each epoch's start (`comm.any`), and the
/// step they agree on ends with a checkpoint that `--resume` continues from.
extension Trainer {
    /// `last.safetensors` at a step boundary inside an epoch: a resume continues from the next step.
    func saveMidEpochCheckpoint() throws {
        try comm.rootDoes {
            try writeFileAtomically(model.checkpoint(info), to: config.runDir + "/checkpoints/last.safetensors")
        }
    }

    /// Saves the position (and the epoch's sums so far) and ends the run on every rank.
    func stop(epoch: Int, sums: EpochSums) throws -> Never {
        info.epochSums = info.stepInEpoch == 0 ? "" : sums.encoded
        try saveMidEpochCheckpoint()
        throw Interrupted(signal: stopSignal(), epoch: epoch, step: info.step, stepInEpoch: info.stepInEpoch,
                          stepsPerEpoch: stepsPerEpoch,
                          checkpoint: config.runDir + "/checkpoints/last.safetensors")
    }
}
