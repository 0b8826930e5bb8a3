import Distributed
import Foundation
import Formats
import Kernels
import Report

/// Where an epoch stands, for a progress display on rank 0.
public struct StepProgress {
    public var epoch: Int, epochs: Int
    public var step: Int, steps: Int
    /// Running means over the epoch so far.
    public var loss: Double, iou: Double
    public var elapsed: Double
}

/// Training data-parallel (docs/design.md, section 2): every rank trains on its share of each
/// global batch, rank 0 reports and writes the run directory.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let model: SegmentationModel
    /// The parameters `freezeEncoder` holds still.
    var frozenDuringWarmup: Range<Int>
    let data: SeedDataset
    let trainIndices: [Int], testIndices: [Int]
    public var trainCount: Int { trainIndices.count }
    /// The global batches of every epoch, and their shares.
    public let sampler: Sampler
    let size: (h: Int, w: Int)
    /// The batch being computed on, and the one the loader fills meanwhile.
    var batch: Batch
    var spare: Batch
    let loader = DispatchQueue(label: "unet-dist.loader")
    /// The few test slices drawn after each epoch, in buffers of their own.
    lazy var sampleBatch = Batch(classes: config.model.classes)
    var optimizerSettings: OptimizerSettings
    /// The rate of every step (`--lr`, `--lr-scale`, `--warmup-epochs`, `--schedule`).
    public var learningRates: LearningRates {
        LearningRates(lr: config.lr, scale: config.lrScale, globalBatch: config.batchSize,
                      warmupEpochs: config.warmupEpochs,
                      epochs: config.epochs, stepsPerEpoch: stepsPerEpoch, schedule: config.schedule)
    }
    var stepSums: ScoreSums
    var info = CheckpointInfo()
    var bestTestIoU = -Double.infinity
    /// The epoch of `bestTestIoU`, and rank 0's line when --patience ends the run.
    var bestEpoch = 0
    var earlyStop: String?
    let log: (String) -> Void
    public internal(set) var history: [EpochRecord] = []
    /// Called on rank 0 after every step.
    public var onStep: ((StepProgress) -> Void)?
    /// The stop signal this rank received, or 0; polled at step boundaries (the CLI passes the
    /// signal handlers' record).
    public var stopSignal: () -> Int32 = { 0 }
    /// Whether any rank asked to stop, as agreed in the last step's allreduce.
    var stopAgreed = false
    /// What a resume tells the user before training (rank 0 prints it when the run starts).
    var resumeNotes: [String] = []

    public init(_ config: TrainConfig, comm: Communicator, log: @escaping (String) -> Void) throws {
        self.config = config
        self.comm = comm
        self.log = log
        // What the flags and the directory listing alone refuse, before any file is read.
        let (data, split) = try comm.everyRankDoes { () throws -> (SeedDataset, DataSplit) in
            let d = try SeedDataset(directory: config.data)
            let split = try DataSplit(d, testCount: config.testCount)
            let trainCount = split.train.count
            guard trainCount >= config.batchSize else {
                throw FormatError(config.data, "\(trainCount) training pairs, fewer than one global batch of "
                                  + "\(config.batchSize) (--batch-size)")
            }
            guard trainCount >= comm.size else {
                throw FormatError(config.data, "\(trainCount) training pairs, fewer than the \(comm.size) ranks")
            }
            if comm.isRoot { try RunDirectory.check(for: config) }
            return (d, split)
        }
        // Every pair read and checked once, the work shared by the ranks, so that a bad file
        // stops the run before anything is written rather than in the middle of it.
        size = try comm.everyRankDoes {
            try Self.validate(data, classes: config.model.classes, rank: comm.rank, ranks: comm.size)
        }
        self.data = data
        (trainIndices, testIndices) = (split.train, split.test)
        if comm.isRoot && !config.quiet, let note = split.note { log(note) }
        sampler = Sampler(count: trainIndices.count, batchSize: config.batchSize, seed: config.seed,
                          shuffle: config.shuffle, accumulate: config.accumulate)
        batch = Batch(classes: config.model.classes)
        spare = Batch(classes: config.model.classes)
        optimizerSettings = config.optimizerSettings
        stepSums = ScoreSums(classes: config.model.classes)
        // One more slot: the ranks' stop votes ride on the step's allreduce (see computeStep).
        stepSums.values.append(0)
        model = makeModel(config.model, seed: config.seed)
        // The stem conv that --pretrained cannot fill (torchvision's takes 3 channels) trains from
        // the start.
        frozenDuringWarmup = config.pretrained != nil && config.model.inChannels != 3
            ? model.encoderParameters.dropFirst() : model.encoderParameters
        model.context.statistics = comm.size > 1 && config.bn == .sync ? SyncStatistics(comm) : nil
        model.useGradientBuckets(megabytes: config.bucketMb, comm: comm)
        info.model = config.model.kind.rawValue
        info.seed = config.seed
        info.config = config.checkpointJSON
        info.stepsPerEpoch = stepsPerEpoch
        try loadStartingPoint()
        broadcastState()
        let completed = info.epoch
        try comm.rootDoes {
            try RunDirectory.create(for: config, worldSize: comm.size)
            try RunDirectory(path: config.runDir).startEvents(completedEpochs: completed)
        }
    }

    /// Reads every pair of this rank's share of the data set; all must have the first image's
    /// size. Returns that size.
    static func validate(_ d: SeedDataset, classes: Int, rank: Int, ranks: Int) throws -> (h: Int, w: Int) {
        let first = try Sample(d.pairs[0], classes: classes)
        for i in share(0..<d.count, rank: rank, size: ranks) {
            let s = try Sample(d.pairs[i], classes: classes)
            Watchdog.progress()
            guard s.height == first.height, s.width == first.width else {
                throw FormatError(d.pairs[i].image, "image is \(s.height)x\(s.width), but \(d.pairs[0].image) is "
                                  + "\(first.height)x\(first.width): all samples must have one size")
            }
        }
        return (first.height, first.width)
    }

    public var stepsPerEpoch: Int { sampler.stepsPerEpoch }

    public func run() throws {
        let classes = config.model.classes
        if comm.isRoot && !config.quiet { resumeNotes.forEach(log) }
        let startEpoch = info.epoch + 1
        epochs: for epoch in startEpoch...max(startEpoch, config.epochs) where epoch <= config.epochs {
            let started = Date()
            let rates = learningRates
            var lastRate = rates.rate(step: info.step)
            model.store.frozen = epoch <= config.freezeEncoder ? frozenDuringWarmup : 0..<0
            let order = sampler.order(epoch: epoch)
            var images = 0
            var stopped = false
            let firstStep = info.stepInEpoch
            // A resumed epoch continues the sums saved with its position.
            var sums = firstStep > 0 ? EpochSums(encoded: info.epochSums) ?? EpochSums() : EpochSums()
            // A signal that came before the first step, or while the previous epoch was
            // evaluated and saved: one collective per epoch, on every rank.
            if comm.any(stopSignal() != 0) { try stop(epoch: epoch, sums: sums) }
            // The next batch is read on a background thread while this one computes.
            var pending: PendingLoad? = prefetch(sampler.microBatch(order, step: firstStep, part: 0), epoch: epoch)
            defer { pending?.wait() }
            for step in firstStep..<stepsPerEpoch {
                Watchdog.at(epoch: epoch, step: step + 1, of: stepsPerEpoch)
                let global = sampler.globalBatch(order, step: step)
                let last = step + 1 == stepsPerEpoch || config.maxSteps.map { info.step + 1 >= $0 } == true
                optimizerSettings.lr = rates.rate(step: info.step)
                lastRate = optimizerSettings.lr
                // Each micro-batch is read while the one before it computes.
                let parts = sampler.microBatchCount(global.count)
                stepSums.reset()
                for part in 0..<parts {
                    let loadError = pending!.wait()
                    swap(&batch, &spare)
                    try comm.everyRankDoes { if let loadError { throw loadError } }
                    pending = part + 1 < parts ? prefetch(sampler.microBatch(order, step: step, part: part + 1),
                                                          epoch: epoch)
                        : last ? nil : prefetch(sampler.microBatch(order, step: step + 1, part: 0), epoch: epoch)
                    model.store.buckets?.armed = part + 1 == parts
                    accumulateGradients(globalCount: global.count,
                                        microCount: share(global, rank: part, size: parts).count,
                                        first: part == 0)
                }
                let scores = finishStep()
                sums.loss += scores.loss; sums.iou += scores.iou
                sums.steps += 1; images += global.count
                if comm.isRoot, let onStep {
                    onStep(StepProgress(epoch: epoch, epochs: config.epochs, step: step + 1, steps: stepsPerEpoch,
                                        loss: sums.loss / Double(sums.steps), iou: sums.iou / Double(sums.steps),
                                        elapsed: Date().timeIntervalSince(started)))
                }
                info.step += 1
                info.stepInEpoch = step + 1
                // Every rank holds the same combined loss, so all stop together.
                guard scores.loss.isFinite else {
                    throw RunError(String(format: "the loss became %@ at epoch %d, step %d; stopping (the last good "
                                          + "checkpoint, if any, is kept: %@)",
                                          scores.loss.isNaN ? "NaN" : "infinite", epoch, step + 1,
                                          config.runDir + "/checkpoints/last.safetensors"))
                }
                if let maxSteps = config.maxSteps, info.step >= maxSteps { stopped = true; break }
                // After an epoch's last step the epoch is evaluated and saved first; the check at
                // the next epoch's start then stops.
                if stopAgreed && step + 1 < stepsPerEpoch { try stop(epoch: epoch, sums: sums) }
                if let every = config.checkpointEvery, info.step % every == 0, step + 1 < stepsPerEpoch {
                    info.epochSums = sums.encoded
                    try saveMidEpochCheckpoint()
                }
            }
            let trainSeconds = Date().timeIntervalSince(started)
            // With per-rank statistics the replicas' running statistics differ: evaluate and save
            // rank 0's everywhere, as DDP broadcasts its buffers.
            if config.bn == .local { comm.broadcast(model.store.bufferData, count: model.store.bufferCount) }
            let test = try evaluate(model, data: data, indices: testIndices, batchSize: config.batchSize, size: size,
                                    batch: batch, comm: comm)
            if info.stepInEpoch == stepsPerEpoch { info.epoch = epoch; info.stepInEpoch = 0 }
            info.epochSums = info.stepInEpoch == 0 ? "" : sums.encoded
            let record = EpochRecord(epoch: epoch, loss: sums.loss / Double(max(sums.steps, 1)),
                                     iou: sums.iou / Double(max(sums.steps, 1)),
                                     testLoss: test.loss, testIoU: test.iou, testIoUWM: test.iou(0),
                                     testIoUGM: classes > 2 ? test.iou(1) : test.iou(0), dice: test.dice,
                                     seconds: Date().timeIntervalSince(started),
                                     imagesPerSecond: Double(images) / max(trainSeconds, 1e-9), lr: lastRate)
            history.append(record)
            try finishEpoch(record)
            if stopped { break epochs }
            if comm.any(earlyStop != nil) {
                if comm.isRoot && !config.quiet { log(earlyStop!) }
                break epochs
            }
        }
    }

    /// One optimizer step on the loaded batch, this rank's share of a global batch of
    /// `globalCount` samples: forward, loss, backward, gradient sum over the ranks, update.
    /// Returns the step's scores combined over the ranks. Allocates nothing after the first call.
    public func computeStep(globalCount: Int) -> ScoreSums {
        stepSums.reset()
        accumulateGradients(globalCount: globalCount, first: true)
        return finishStep()
    }

    /// Forward, loss and backward of this rank's share of the loaded micro-batch, its parameter
    /// gradients added to the step's (zeroed first when `first`). The loss is normalized by the
    /// whole step's element count (`globalCount` samples), so the sum over micro-batches and
    /// ranks is the gradient of the global batch's mean loss.
    func accumulateGradients(globalCount: Int, microCount: Int? = nil, first: Bool) {
        let plane = size.h * size.w
        let lossSum = batch.labels.withUnsafeBufferPointer { labels in
            model.accumulateGradients(images: batch.images, targets: batch.targets, labels: labels.baseAddress,
                                      globalCount: globalCount, microCount: microCount, loss: config.loss, comm: comm,
                                      zeroFirst: first) { logits in
                stepSums.add(logits: logits.data, labels: labels.baseAddress!, batch: logits.shape.n, spatial: plane,
                             lossSum: 0)
            }
        }
        stepSums.values[0] += lossSum
    }

    /// The gradient sum over the ranks and the update; the step's scores (and the ranks' stop
    /// votes) summed in one more allreduce.
    func finishStep() -> ScoreSums {
        model.applyGradients(comm: comm, optimizer: optimizerSettings)
        let vote = stepSums.values.count - 1
        stepSums.values[vote] = stopSignal() != 0 ? 1 : 0
        stepSums.values.withUnsafeMutableBufferPointer {
            comm.allreduceSum($0.baseAddress!, count: $0.count, what: "step scores")
        }
        stopAgreed = stepSums.values[vote] > 0
        return stepSums
    }

    /// Rank 0 prints, appends to history.csv, and writes last (and best) checkpoints; all ranks
    /// then agree on whether that worked.
    func finishEpoch(_ r: EpochRecord) throws {
        // The sample picture needs a forward pass; eval mode makes no collective call, so rank 0
        // does it alone.
        Watchdog.phase("saving")
        let samples = comm.isRoot ? try? samplePanel() : nil
        try comm.rootDoes {
            if !config.quiet {
                log(String(format: "Epoch %d/%d loss %.5f iou %.5f test_loss %.5f test_iou %.5f (%.1f s, %.1f img/s)",
                           r.epoch, config.epochs, r.loss, r.iou, r.testLoss, r.testIoU, r.seconds, r.imagesPerSecond))
            }
            let run = RunDirectory(path: config.runDir)
            // A part of an epoch (--max-steps) is no candidate: its resumed run would not see it.
            let improved = info.stepInEpoch == 0 && r.testIoU > bestTestIoU
            if improved { bestTestIoU = r.testIoU; bestEpoch = r.epoch }
            earlyStop = patienceNote(epoch: r.epoch)
            try run.writeHistory(history, note: earlyStop)
            let png = try samples.map { try run.writeSamples($0, epoch: r.epoch) }
            try run.writeReport(config: config, worldSize: comm.size, history: history, samples: png,
                                notes: earlyStop.map { [$0] } ?? [])
            try run.appendEvents(r, samples: samples, png: png)
            info.metrics = String(
                format: "{\"best_epoch\":%d,\"best_test_iou\":%.17g,\"dice\":%.17g,\"loss\":%.17g,"
                    + "\"test_iou\":%.17g,\"test_iou_gm\":%.17g,\"test_iou_wm\":%.17g,\"test_loss\":%.17g}",
                bestEpoch, bestTestIoU, r.dice, r.loss, r.testIoU, r.testIoUGM, r.testIoUWM, r.testLoss)
            let bytes = model.checkpoint(info)
            try writeFileAtomically(bytes, to: config.runDir + "/checkpoints/last.safetensors")
            if improved { try writeFileAtomically(bytes, to: config.runDir + "/checkpoints/best.safetensors") }
        }
    }

    /// With --patience N, rank 0's line that ends the run after a whole epoch when the best test
    /// IoU is N or more epochs old and epochs remain. Rank 0 decides and the others follow (see
    /// run): it alone holds a resumed run's history.
    func patienceNote(epoch: Int) -> String? {
        guard let patience = config.patience, info.stepInEpoch == 0, epoch < config.epochs,
              epoch - bestEpoch >= patience
        else { return nil }
        let waited = epoch - bestEpoch
        return String(format: "stopping early: test IoU has not improved for %d epoch%@ (best %.4f at epoch %d)",
                      waited, waited == 1 ? "" : "s", bestTestIoU, bestEpoch)
    }

    /// image | truth | prediction for the first few test slices (fixed across epochs).
    func samplePanel() throws -> RGBImage? {
        let picks = Array(testIndices.prefix(3))
        guard !picks.isEmpty else { return nil }
        let wasTraining = model.training
        model.training = false
        defer { model.training = wasTraining }
        try sampleBatch.load(picks, from: data, height: size.h, width: size.w)
        let logits = model.forward(sampleBatch.images)
        let plane = size.h * size.w, classes = config.model.classes
        let predicted = classMasks(logits.data, count: picks.count, classes: classes, spatial: plane)
        let images = UnsafeBufferPointer(start: sampleBatch.images.data, count: picks.count * plane)
        return sampleBatch.labels.withUnsafeBufferPointer { truth in
            predicted.withUnsafeBufferPointer {
                slicePanel(images: images, truth: truth, predicted: $0, count: picks.count, width: size.w,
                           height: size.h)
            }
        }
    }
}
