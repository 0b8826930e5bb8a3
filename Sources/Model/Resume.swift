import Foundation
import Formats

/// Where a resumed run starts, decided from the checkpoint's position and today's flags and data,
/// or refused with the reason: a resume either trains or says why it cannot.
struct ResumePlan: Equatable {
    /// Completed epochs, and the steps already taken in the next one.
    var completedEpochs: Int
    var stepInEpoch: Int
    /// Lines for the user: where the run continues, what differs from the checkpoint.
    var notes: [String]

    init(_ saved: CheckpointInfo, stepsPerEpoch: Int, config c: TrainConfig, checkpoint path: String) throws {
        completedEpochs = saved.epoch
        // A checkpoint from before positions were recorded: its steps per epoch were today's, or
        // its position does not fit in an epoch and nothing can be said about it.
        let savedSteps = saved.stepsPerEpoch ?? stepsPerEpoch
        stepInEpoch = saved.stepsPerEpoch != nil ? saved.stepInEpoch : saved.step - saved.epoch * stepsPerEpoch
        guard saved.stepsPerEpoch != nil || (0..<stepsPerEpoch).contains(stepInEpoch) else {
            throw FormatError(path, "its position (step \(saved.step), \(saved.epoch) epochs) does not fit "
                              + "\(stepsPerEpoch) steps per epoch")
        }
        let next = completedEpochs + 1
        if stepInEpoch == 0 {
            guard completedEpochs < c.epochs else {
                throw FormatError(path, completedEpochs == c.epochs
                    ? "the run is finished (\(completedEpochs) of \(c.epochs) epochs); pass --epochs above "
                        + "\(completedEpochs) to train further"
                    : "holds \(completedEpochs) completed epochs, more than --epochs \(c.epochs)")
            }
        } else {
            guard savedSteps == stepsPerEpoch else {
                throw FormatError(path,
                                  "stopped at epoch \(next), step \(stepInEpoch)/\(savedSteps), but this data set and "
                                  + "--batch-size give \(stepsPerEpoch) steps per epoch: an epoch can only be "
                                  + "continued with the data and batch size it started with (or resume from a "
                                  + "checkpoint written at an epoch's end)")
            }
            guard next <= c.epochs else {
                throw FormatError(path, "stopped inside epoch \(next), after --epochs \(c.epochs) ends the run; "
                                  + "pass --epochs \(next) or more")
            }
        }
        if let maxSteps = c.maxSteps, saved.step >= maxSteps {
            throw FormatError(path,
                              "has taken \(saved.step) steps already, --max-steps \(maxSteps) leaves none to take")
        }
        notes = ["resuming \(c.runDir) at epoch \(next), step \(stepInEpoch)/\(stepsPerEpoch) (from \(path))"]
        let differences = Self.differences(saved: saved.config, now: c.checkpointJSON)
        if !differences.isEmpty {
            notes.append("flags that differ from the checkpoint's: " + differences.joined(separator: ", "))
        }
        if stepInEpoch == 0 && savedSteps != stepsPerEpoch {
            notes.append("the data or --batch-size differ from the checkpoint's (\(stepsPerEpoch) steps per epoch, "
                         + "was \(savedSteps)): continuing at the epoch boundary")
        }
    }

    /// The training flags whose values differ, as `--flag now (was before)`. The flags that only
    /// matter at a run's start (--init, --pretrained) are left out.
    static func differences(saved: String, now: String) -> [String] {
        func object(_ json: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]) ?? [:]
        }
        let before = object(saved), after = object(now)
        guard !before.isEmpty else { return [] }
        return Set(before.keys).union(after.keys).subtracting(["initFrom", "pretrained"]).sorted().compactMap { key in
            let a = before[key].map(describe) ?? "unset", b = after[key].map(describe) ?? "unset"
            return a == b ? nil : "\(flagName(key)) \(b) (was \(a))"
        }
    }

    /// `batchSize` -> `--batch-size`.
    static func flagName(_ key: String) -> String {
        "--" + key.reduce(into: "") { out, ch in
            if ch.isUppercase { out += "-" + ch.lowercased() } else { out.append(ch) }
        }
    }

    /// Strings as they are, other values as JSON (true/false, objects with sorted keys).
    private static func describe(_ value: Any) -> String {
        if let text = value as? String { return text }
        guard let data = try? JSONSerialization.data(withJSONObject: value,
                                                     options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])
        else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }
}
