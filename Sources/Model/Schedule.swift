import Foundation

/// How `--lr` grows with the global batch: it is the rate for a batch of 16 (docs/design.md, section 1).
public enum LRScale: String, Codable, CaseIterable {
    case none, linear, sqrt
}

/// What follows the warm-up: the same rate, a cosine to zero (PyTorch's CosineAnnealingLR with
/// eta_min 0), or a polynomial decay to zero with power 0.9 (PolynomialLR, as nnU-Net trains).
public enum LRSchedule: String, Codable, CaseIterable {
    case constant, cosine, poly
}

/// The learning rate of every optimizer step, a pure function of the step's number: a resumed
/// run recomputes exactly the rates a straight run uses.
public struct LearningRates: Equatable {
    /// `--lr` scaled for the global batch.
    public let peak: Double
    public let warmupSteps: Int
    public let totalSteps: Int
    public let schedule: LRSchedule

    public init(lr: Double, scale: LRScale, globalBatch: Int, warmupEpochs: Double, epochs: Int, stepsPerEpoch: Int,
                schedule: LRSchedule) {
        let ratio = Double(globalBatch) / 16
        switch scale {
        case .none: peak = lr
        case .linear: peak = lr * ratio
        case .sqrt: peak = lr * ratio.squareRoot()
        }
        totalSteps = epochs * stepsPerEpoch
        warmupSteps = min(totalSteps, Int((warmupEpochs * Double(stepsPerEpoch)).rounded()))
        self.schedule = schedule
    }

    /// "lr 0.0003", with the warm-up and schedule where there are any.
    public var summary: String {
        var text = String(format: "lr %g", peak)
        if warmupSteps > 0 { text += ", warm-up \(warmupSteps) steps" }
        if schedule != .constant { text += ", \(schedule.rawValue) to 0 over \(totalSteps - warmupSteps) steps" }
        return text
    }

    /// The rate of step `t` (0 for a run's first step): during the warm-up peak * (t + 1) / W
    /// (LambdaLR with that lambda), then the schedule over the remaining steps, counted from 0.
    public func rate(step t: Int) -> Double {
        if t < warmupSteps { return peak * Double(t + 1) / Double(warmupSteps) }
        let u = Double(t - warmupSteps), span = Double(totalSteps - warmupSteps)
        guard span > 0 else { return peak }
        switch schedule {
        case .constant: return peak
        case .cosine: return peak * (1 + cos(Double.pi * min(u, span) / span)) / 2
        case .poly: return peak * pow(max(0, 1 - u / span), 0.9)
        }
    }
}
