import ArgumentParser
import CStop
import Distributed
import Foundation
import Kernels
import Model

extension LRScale: ExpressibleByArgument {}
extension LRSchedule: ExpressibleByArgument {}
extension LossKind: ExpressibleByArgument {}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train the UNet on a seed-layout data directory (the seed's fit()).")

    @Option(help: "Data directory: MRIs/<name>_<ix>.npy and Segmentations/segm_<ix>.npy.") var data: String
    @Option(help: "Run directory: config.json, history.csv, checkpoints/.") var runDir: String
    @Option(help: "Epochs.") var epochs = 30
    @Option(help: "Global batch size, split among the ranks (default 16, the seed's).") var batchSize: Int?
    @Option(help: "Batch per rank instead: the global batch is this times the number of ranks.") var batchPerRank: Int?
    @Option(help: "Learning rate (for a global batch of 16 where --lr-scale scales it).") var lr = 3e-4
    @Option(help: "Scale --lr by the global batch over 16: none, linear or sqrt.") var lrScale = LRScale.none
    @Option(help: "Epochs of linear warm-up, per step, from lr/W to lr (fractions allowed).") var warmupEpochs = 0.0
    @Option(help: "After the warm-up: constant, cosine (to 0) or poly (power 0.9, to 0).") var schedule = LRSchedule.constant
    @Option(help: "Micro-batches per optimizer step: the global batch split K ways, gradients summed.") var accumulate = 1
    @Option(help: "Training loss: bce (the seed's), ce, dice, bce+dice or ce+dice (Dice over the global batch).") var loss = LossKind.bce
    @Option(help: "adam, adamw or sgd.") var optimizer = "adam"
    @Option(help: "SGD momentum.") var momentum = 0.0
    @Option(help: "Weight decay (L2 for adam and sgd, decoupled for adamw).") var weightDecay = 0.0
    @Option(help: "The last N pairs in file-name order are the test set.") var testCount = 100
    @Option(help: "Seed for initialization and shuffling.") var seed: UInt64 = 0
    @Flag(help: "Take training pairs in file-name order.") var noShuffle = false
    @Option(name: .customLong("init"), help: "Start from a checkpoint's weights and BN buffers.") var initFrom: String?
    @Option(help: "Continue a run from its checkpoint (weights, optimizer state, position).") var resume: String?
    @Option(help: "Stop after this many optimizer steps (evaluating and checkpointing as at an epoch's end).")
    var maxSteps: Int?
    @Option(help: "Also checkpoint every N optimizer steps; a resume continues from that step.") var checkpointEvery: Int?
    @Flag(help: "Start over in a run directory that already holds a checkpoint.") var overwrite = false
    @Flag(help: "Print nothing but errors.") var quiet = false
    @Flag(help: "Augment training samples: flips, quarter turns, intensity jitter (deterministic per seed, epoch and sample).")
    var augment = false
    @Option(help: "Progress display: bar (redrawn in place), lines (one per epoch) or auto: a bar when stdout is a terminal and no MPI launcher is in between (mpirun hands every rank a pseudo-terminal, wherever its own output goes).")
    var progress = "auto"
    @Option(help: "BatchNorm statistics: sync (over the global batch, the default) or local (each rank's share).")
    var bn = "sync"
    @Option(help: "unet-resnet: torchvision resnet18 ImageNet weights as safetensors (tools/convert_resnet18.py), loaded into the encoder; a stem for other than 3 input channels stays freshly initialized, as the seed's.")
    var pretrained: String?
    @Option(help: "Train only the decoder for the first N epochs: the encoder's parameters (but a fresh stem) are not updated.")
    var freezeEncoder = 0
    @Option(help: "Stop when the test IoU has not improved for N epochs (after writing that epoch's files).")
    var patience: Int?
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var buckets: BucketOptions

    func validate() throws {
        guard OptimizerKind(rawValue: optimizer) != nil else { throw ValidationError("--optimizer must be adam, adamw or sgd") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let batchPerRank, batchPerRank < 1 { throw ValidationError("--batch-per-rank must be at least 1") }
        if batchSize != nil && batchPerRank != nil { throw ValidationError("--batch-size and --batch-per-rank exclude each other") }
        guard warmupEpochs >= 0, warmupEpochs.isFinite else { throw ValidationError("--warmup-epochs must be 0 or more") }
        guard accumulate >= 1 else { throw ValidationError("--accumulate must be at least 1") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard testCount >= 0 else { throw ValidationError("--test-count must not be negative") }
        if let checkpointEvery, checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if let maxSteps, maxSteps < 1 { throw ValidationError("--max-steps must be at least 1") }
        guard ["auto", "bar", "lines"].contains(progress) else { throw ValidationError("--progress must be auto, bar or lines") }
        guard BatchNormMode(rawValue: bn) != nil else { throw ValidationError("--bn must be sync or local") }
        if initFrom != nil && resume != nil { throw ValidationError("--init and --resume exclude each other") }
        if overwrite && resume != nil { throw ValidationError("--resume continues a run in place, --overwrite removes it: pass one of them") }
        if let patience, patience < 1 { throw ValidationError("--patience must be at least 1") }
        if patience != nil && testCount == 0 { throw ValidationError("--patience watches the test IoU: it needs --test-count above 0") }
        guard freezeEncoder >= 0 else { throw ValidationError("--freeze-encoder must not be negative") }
        if pretrained != nil && modelOptions.model != ModelKind.unetResnet.rawValue {
            throw ValidationError("--pretrained loads a ResNet-18 encoder: use it with --model unet-resnet")
        }
    }

    func run() throws {
        // Before MPI_Init, so that no signal finds the default action (death) once the run
        // has started.
        cstop_install_handlers()
        runDistributed(threads: compute) { comm, threads in
            var c = TrainConfig()
            c.data = data; c.runDir = runDir; c.epochs = epochs; c.lr = lr
            c.batchSize = batchPerRank.map { $0 * comm.size } ?? batchSize ?? 16
            c.batchPerRank = batchPerRank
            c.lrScale = lrScale; c.warmupEpochs = warmupEpochs; c.schedule = schedule; c.accumulate = accumulate; c.loss = loss
            c.precision = precision.precision
            c.bucketMb = buckets.bucketMb
            c.optimizer = OptimizerKind(rawValue: optimizer)!; c.momentum = momentum; c.weightDecay = weightDecay
            c.testCount = testCount; c.seed = seed; c.shuffle = !noShuffle; c.threads = threads
            c.initFrom = initFrom; c.resume = resume; c.maxSteps = maxSteps; c.overwrite = overwrite
            c.bn = BatchNormMode(rawValue: bn)!
            c.quiet = quiet
            c.augment = augment
            c.checkpointEvery = checkpointEvery
            c.model = modelOptions.config
            c.pretrained = pretrained
            c.freezeEncoder = freezeEncoder
            c.patience = patience
            let bar = !quiet && comm.isRoot
                && (progress == "bar" || (progress == "auto" && ProgressBar.stdoutIsTerminal && !launchedByMPI))
            let trainer = try Trainer(c, comm: comm) { line in
                if bar { ProgressBar.clear() }
                say(comm, line)
            }
            if bar { trainer.onStep = ProgressBar.draw }
            if let line = precision.apply(to: trainer.model), !quiet { say(comm, "unet-dist train: " + line) }
            trainer.stopSignal = { cstop_signal() }
            if !quiet { say(comm, "unet-dist train: \(c.model.kind.rawValue), \(trainer.trainCount) train / \(c.testCount) test pairs, "
                + "\(comm.size) rank(s) x \(threads) thread(s) (\(kernelsDescription), OpenBLAS \(blasCoreName)), batch \(c.batchSize)"
                + (c.accumulate > 1 ? " in \(c.accumulate) micro-batches" : "") + ", \(trainer.stepsPerEpoch) steps/epoch, "
                + trainer.learningRates.summary) }
            try trainer.run()
        }
    }
}
