import Foundation
import Kernels

/// Every flag of `unet-dist train`; stored as JSON in config.json and in each checkpoint.
public struct TrainConfig: Codable, Equatable {
    public var data = ""
    public var runDir = ""
    public var epochs = 30
    public var batchSize = 16
    public var lr = 3e-4
    public var optimizer = OptimizerKind.adam
    public var momentum = 0.0
    public var weightDecay = 0.0
    public var testCount = 100
    public var seed: UInt64 = 0
    public var shuffle = true
    public var threads = 0
    public var initFrom: String?
    public var resume: String?
    public var maxSteps: Int?
    public var overwrite = false
    /// BatchNorm statistics over the whole global batch (sync) or each rank's share (local,
    /// what PyTorch DDP does on CPU).
    public var bn = BatchNormMode.sync
    /// Rank 0 prints nothing but errors.
    public var quiet = false
    /// Also write `last.safetensors` every this many optimizer steps (besides each epoch's end).
    public var checkpointEvery: Int?
    /// Random flips, quarter turns and intensity jitter, drawn from (seed, epoch, sample).
    public var augment = false
    public var model = ModelConfig()
    /// torchvision resnet18 weights (safetensors) for the encoder of unet-resnet.
    public var pretrained: String?
    /// Epochs, from the first, in which the encoder's parameters are not updated.
    public var freezeEncoder = 0
    /// The per-rank batch that made `batchSize` (batchPerRank x ranks), when given that way.
    public var batchPerRank: Int?
    /// How `lr` grows with the global batch, the warm-up (linear, per step) and what follows it.
    public var lrScale = LRScale.none
    public var warmupEpochs = 0.0
    public var schedule = LRSchedule.constant
    /// Micro-batches per optimizer step: the global batch split this many ways, their
    /// gradients summed before one update.
    public var accumulate = 1
    /// The training loss: BCE on one-hot targets (docs/design.md, section 1), softmax cross-entropy, soft Dice over
    /// the global batch, or a sum of two.
    public var loss = LossKind.bce
    /// Stop when the test IoU has not improved for this many epochs.
    public var patience: Int?
    /// The convolutions' arithmetic (`--precision`): bf16 changes the trained values.
    public var precision = Precision.fp32
    /// The gradient sum in buckets of this many MiB started during the backward (0: one after it).
    public var bucketMb = GradientBuckets.defaultMegabytes
    public init() {}

    public var optimizerSettings: OptimizerSettings {
        OptimizerSettings(kind: optimizer, lr: lr, momentum: momentum, weightDecay: weightDecay)
    }

    public var json: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try! e.encode(self), as: UTF8.self)
    }
}

extension Precision: Codable {}

public enum BatchNormMode: String, Codable, CaseIterable {
    case sync, local
}

public let unetDistVersion = "0.1.0"

