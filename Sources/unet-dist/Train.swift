import ArgumentParser
import CStop
import Distributed
import Foundation
import Kernels
import Model

extension LRScale: ExpressibleByArgument {}
extension LRSchedule: ExpressibleByArgument {}
extension LossKind: ExpressibleByArgument {}
extension OptimizerKind: ExpressibleByArgument {}
extension BatchNormMode: ExpressibleByArgument {}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the UNet on a seed-layout data directory.",
        discussion: "Data-parallel over the MPI ranks (docs/design.md, section 2): every rank trains on its share of "
            + "each global batch; rank 0 writes the run directory.")

    @OptionGroup var dataOptions: DataOptions
    @Option(help: "Run directory: config.json, history.csv, checkpoints/.") var runDir: String
    @Option(help: "Epochs.") var epochs = 30
    @Option(help: "Global batch size, split among the ranks (default 16).") var batchSize: Int?
    @Option(help: "Batch per rank instead: the global batch is this times the number of ranks.")
    var batchPerRank: Int?
    @Option(help: "Learning rate (for a global batch of 16 where --lr-scale scales it).") var lr = 3e-4
    @Option(help: "Scale --lr by the global batch over 16: none, linear or sqrt.") var lrScale = LRScale.none
    @Option(help: "Epochs of linear warm-up, per step, from lr/W to lr (fractions allowed).") var warmupEpochs = 0.0
    @Option(help: "After the warm-up: constant, cosine (to 0) or poly (power 0.9, to 0).")
    var schedule = LRSchedule.constant
    @Option(help: "Micro-batches per optimizer step: the global batch split K ways, gradients summed.")
    var accumulate = 1
    @Option(help: "Training loss: bce, ce, dice, bce+dice or ce+dice (Dice over the global batch).")
    var loss = LossKind.bce
    @Option(help: "adam, adamw or sgd.") var optimizer = OptimizerKind.adam
    @Option(help: "SGD momentum.") var momentum = 0.0
    @Option(help: "Weight decay (L2 for adam and sgd, decoupled for adamw).") var weightDecay = 0.0
    @Option(help: "The last N pairs in file-name order are the test set (unless the manifest has a split).")
    var testCount = 100
    @Option(help: "Seed for initialization and shuffling.") var seed: UInt64 = 0
    @Flag(help: "Take training pairs in file-name order.") var noShuffle = false
    @Option(name: .customLong("init"), help: "Start from a checkpoint's weights and BN buffers.") var initFrom: String?
    @Option(help: "Continue a run from its checkpoint (weights, optimizer state, position).") var resume: String?
    @Option(help: "Stop after this many optimizer steps (evaluating and checkpointing as at an epoch's end).")
    var maxSteps: Int?
    @Option(help: "Also checkpoint every N optimizer steps; a resume continues from that step.")
    var checkpointEvery: Int?
    @Flag(help: "Start over in a run directory that already holds a checkpoint.") var overwrite = false
    @Flag(help: "Print nothing but errors.") var quiet = false
    @Flag(help: "Augment training samples: flips, quarter turns, intensity jitter (from seed, epoch and sample).")
    var augment = false
    @OptionGroup var progressOptions: ProgressOptions
    @Option(help: "BatchNorm statistics: sync (over the global batch, the default) or local (each rank's share).")
    var bn = BatchNormMode.sync
    @Option(help: ArgumentHelp(
        "unet-resnet: torchvision resnet18 ImageNet weights (safetensors) for the encoder.",
        discussion: "Converted by tools/convert_resnet18.py. A stem for other than 3 input channels stays freshly "
            + "initialized."))
    var pretrained: String?
    @Option(help: "Train only the decoder for the first N epochs: the encoder's parameters (but a fresh stem) stay.")
    var freezeEncoder = 0
    @Option(help: "Stop when the test IoU has not improved for N epochs (after writing that epoch's files).")
    var patience: Int?
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var buckets: BucketOptions

    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let batchPerRank, batchPerRank < 1 { throw ValidationError("--batch-per-rank must be at least 1") }
        if batchSize != nil && batchPerRank != nil {
            throw ValidationError("--batch-size and --batch-per-rank exclude each other")
        }
        guard warmupEpochs >= 0, warmupEpochs.isFinite else {
            throw ValidationError("--warmup-epochs must be 0 or more")
        }
        guard accumulate >= 1 else { throw ValidationError("--accumulate must be at least 1") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard testCount >= 0 else { throw ValidationError("--test-count must not be negative") }
        if let checkpointEvery, checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        if initFrom != nil && resume != nil { throw ValidationError("--init and --resume exclude each other") }
        if overwrite && resume != nil {
            throw ValidationError("--resume continues a run in place, --overwrite removes it: pass one of them")
        }
        if let patience, patience < 1 { throw ValidationError("--patience must be at least 1") }
        if patience != nil && testCount == 0 {
            throw ValidationError("--patience watches the test IoU: it needs --test-count above 0")
        }
        guard freezeEncoder >= 0 else { throw ValidationError("--freeze-encoder must not be negative") }
        if pretrained != nil && modelOptions.model != .unetResnet {
            throw ValidationError("--pretrained loads a ResNet-18 encoder: use it with --model unet-resnet")
        }
    }

    /// The run's configuration, as config.json and every checkpoint record it.
    func config(ranks: Int, threads: Int) -> TrainConfig {
        var c = TrainConfig()
        c.data = dataOptions.data
        c.runDir = runDir
        c.epochs = epochs
        c.batchSize = batchPerRank.map { $0 * ranks } ?? batchSize ?? 16
        c.batchPerRank = batchPerRank
        c.lr = lr
        c.lrScale = lrScale
        c.warmupEpochs = warmupEpochs
        c.schedule = schedule
        c.accumulate = accumulate
        c.loss = loss
        c.optimizer = optimizer
        c.momentum = momentum
        c.weightDecay = weightDecay
        c.testCount = testCount
        c.seed = seed
        c.shuffle = !noShuffle
        c.threads = threads
        c.initFrom = initFrom
        c.resume = resume
        c.maxSteps = maxSteps
        c.checkpointEvery = checkpointEvery
        c.overwrite = overwrite
        c.quiet = quiet
        c.augment = augment
        c.bn = bn
        c.model = modelOptions.config
        c.pretrained = pretrained
        c.freezeEncoder = freezeEncoder
        c.patience = patience
        c.precision = precision.precision
        c.bucketMb = buckets.bucketMb
        return c
    }

    func run() throws {
        // Before MPI_Init, so that no signal finds the default action (death) once the run
        // has started.
        cstop_install_handlers()
        runDistributed(threads: compute) { comm, threads in
            let c = config(ranks: comm.size, threads: threads)
            let bar = progressOptions.drawsBar(comm, quiet: quiet)
            let trainer = try Trainer(c, comm: comm) { line in
                if bar { ProgressBar.clear() }
                say(comm, line)
            }
            if bar { trainer.onStep = ProgressBar.draw }
            if let line = precision.apply(to: trainer.model), !quiet { say(comm, "unet-dist train: " + line) }
            trainer.stopSignal = { cstop_signal() }
            if !quiet { say(comm, Self.summary(c, trainer, ranks: comm.size, threads: threads)) }
            try trainer.run()
        }
    }

    /// The line rank 0 prints before the first epoch.
    static func summary(_ c: TrainConfig, _ trainer: Trainer, ranks: Int, threads: Int) -> String {
        "unet-dist train: \(c.model.kind.rawValue), \(trainer.trainCount) train / \(trainer.testCount) test pairs, "
            + "\(ranks) rank(s) x \(threads) thread(s) (\(kernelsDescription), OpenBLAS \(blasCoreName)), "
            + "batch \(c.batchSize)" + (c.accumulate > 1 ? " in \(c.accumulate) micro-batches" : "")
            + ", \(trainer.stepsPerEpoch) steps/epoch, " + trainer.learningRates.summary
    }
}
