import Distributed
import Foundation
import Formats
import Kernels
import Report

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
    /// The training loss: the seed's BCE on one-hot targets, softmax cross-entropy, soft Dice over
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

/// Where an epoch stands, for a progress display on rank 0.
public struct StepProgress {
    public var epoch: Int, epochs: Int
    public var step: Int, steps: Int
    /// Running means over the epoch so far.
    public var loss: Double, iou: Double
    public var elapsed: Double
}

/// A batch being read in the background; `wait` returns its error, if any (and may be called
/// again).
final class PendingLoad {
    let done = DispatchSemaphore(value: 0)
    var error: Error?
    private var finished = false

    @discardableResult
    func wait() -> Error? {
        if !finished { done.wait(); finished = true }
        return error
    }
}

/// One epoch's figures, as printed and written to history.csv.
public struct EpochRecord {
    public var epoch: Int
    public var loss: Double, iou: Double
    public var testLoss: Double, testIoU: Double, testIoUWM: Double, testIoUGM: Double, dice: Double
    public var seconds: Double, imagesPerSecond: Double
    /// The learning rate of the epoch's last step.
    public var lr: Double

    static let header = "epoch,loss,iou,test_loss,test_iou,test_iou_wm,test_iou_gm,dice,seconds,images_per_s,lr"
    var csv: String {
        let fields = [String(epoch)] + [loss, iou, testLoss, testIoU, testIoUWM, testIoUGM, dice].map { String(format: "%.6f", $0) }
            + [String(format: "%.2f", seconds), String(format: "%.2f", imagesPerSecond), String(format: "%.6g", lr)]
        return fields.joined(separator: ",")
    }
}

/// The global batch of step `step` within an epoch, in sample indices: the same on every rank
/// and for every number of ranks (docs/design.md, section 2).
public func globalBatch(order: [Int], step: Int, batchSize: Int) -> ArraySlice<Int> {
    order[step * batchSize ..< min((step + 1) * batchSize, order.count)]
}

/// This rank's contiguous share of a global batch: sizes differ by at most one, the larger shares
/// on the lower ranks; with fewer samples than ranks the highest ranks get none.
public func share<C: Collection>(_ batch: C, rank: Int, size: Int) -> C.SubSequence {
    let n = batch.count, base = n / size, extra = n % size
    let start = rank * base + min(rank, extra), count = base + (rank < extra ? 1 : 0)
    let lo = batch.index(batch.startIndex, offsetBy: start)
    return batch[lo ..< batch.index(lo, offsetBy: count)]
}

/// The epoch's sample order: a permutation from (seed, epoch), identical on every rank.
public func epochOrder(count: Int, seed: UInt64, epoch: Int, shuffle: Bool) -> [Int] {
    var order = Array(0..<count)
    guard shuffle else { return order }
    var rng = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch))
    for i in stride(from: count - 1, to: 0, by: -1) {
        order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
    }
    return order
}

/// The seed's fit(), data-parallel: every rank trains on its share of each global batch, rank 0
/// reports and writes the run directory.
public final class Trainer {
    public let config: TrainConfig
    public let comm: Communicator
    public let model: SegmentationModel
    /// The parameters `freezeEncoder` holds still.
    var frozenDuringWarmup: Range<Int>
    let data: SeedDataset
    let trainIndices: [Int], testIndices: [Int]
    public var trainCount: Int { trainIndices.count }
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
        LearningRates(lr: config.lr, scale: config.lrScale, globalBatch: config.batchSize, warmupEpochs: config.warmupEpochs,
                      epochs: config.epochs, stepsPerEpoch: stepsPerEpoch, schedule: config.schedule)
    }
    var stepSums: ScoreSums
    var info = CheckpointInfo()
    var bestTestIoU = -Double.infinity
    /// The epoch of `bestTestIoU`, and rank 0's line when --patience ends the run.
    var bestEpoch = 0
    var earlyStop: String?
    let log: (String) -> Void
    public private(set) var history: [EpochRecord] = []
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
        var setupError: Error?
        var data: SeedDataset?
        do {
            let d = try SeedDataset(directory: config.data)
            guard config.testCount >= 0, config.testCount < d.count else {
                throw FormatError(config.data, "--test-count \(config.testCount) leaves no training data (\(d.count) pairs)")
            }
            let trainCount = d.count - config.testCount
            guard trainCount >= config.batchSize else {
                throw FormatError(config.data, "\(trainCount) training pairs, fewer than one global batch of \(config.batchSize) (--batch-size)")
            }
            guard trainCount >= comm.size else {
                throw FormatError(config.data, "\(trainCount) training pairs, fewer than the \(comm.size) ranks")
            }
            if comm.isRoot { try Self.checkRunDirectory(config) }
            data = d
        } catch let e { setupError = e }
        if let message = comm.agree(on: setupError) { throw RunError(message) }
        // Every pair read and checked once, the work shared by the ranks, so that a bad file
        // stops the run before anything is written rather than in the middle of it.
        var size = (h: 0, w: 0)
        do { size = try Self.validate(data!, classes: config.model.classes, rank: comm.rank, ranks: comm.size) }
        catch let e { setupError = e }
        if let message = comm.agree(on: setupError) { throw RunError(message) }
        self.data = data!
        self.size = size
        let trainCount = self.data.count - config.testCount
        trainIndices = Array(0..<trainCount)
        testIndices = Array(trainCount..<self.data.count)
        batch = Batch(classes: config.model.classes)
        spare = Batch(classes: config.model.classes)
        optimizerSettings = config.optimizerSettings
        stepSums = ScoreSums(classes: config.model.classes)
        // One more slot: the ranks' stop votes ride on the step's allreduce (see computeStep).
        stepSums.values.append(0)
        model = makeModel(config.model, seed: config.seed)
        // The stem conv that --pretrained cannot fill (torchvision's takes 3 channels) trains from the start.
        frozenDuringWarmup = config.pretrained != nil && config.model.inChannels != 3
            ? model.encoderParameters.dropFirst() : model.encoderParameters
        model.context.statistics = comm.size > 1 && config.bn == .sync ? SyncStatistics(comm) : nil
        model.useGradientBuckets(megabytes: config.bucketMb, comm: comm)
        info.model = config.model.kind.rawValue
        info.seed = config.seed
        info.config = config.checkpointJSON
        info.stepsPerEpoch = stepsPerEpoch
        if let path = config.pretrained, config.resume == nil, config.initFrom == nil {
            try loadPretrained(path)
        }
        info.optimizer = config.optimizer
        if let path = config.resume ?? config.initFrom {
            let loaded = try loadCheckpoint(path, withOptimizer: config.resume != nil)
            if let resume = config.resume {
                // The same on every rank (the file was broadcast), so every rank refuses alike.
                let plan: ResumePlan
                do { plan = try ResumePlan(loaded, stepsPerEpoch: stepsPerEpoch, config: config, checkpoint: resume) }
                catch { throw RunError("\(error)") }
                resumeNotes = plan.notes
                info.epoch = plan.completedEpochs; info.stepInEpoch = plan.stepInEpoch; info.step = loaded.step
                info.metrics = loaded.metrics; info.epochSums = loaded.epochSums
                // Earlier epochs' rows stay in the history (rank 0 writes it).
                if comm.isRoot, let text = try? String(contentsOfFile: config.runDir + "/history.csv", encoding: .utf8) {
                    history = text.split(separator: "\n").dropFirst().compactMap(EpochRecord.init(csv:))
                        .filter { $0.epoch <= loaded.epoch }
                }
                bestTestIoU = Self.metric("best_test_iou", in: loaded.metrics) ?? bestTestIoU
                bestEpoch = Self.metric("best_epoch", in: loaded.metrics).map { Int($0) } ?? Self.bestEpoch(in: history) ?? plan.completedEpochs
            }
        }
        broadcastState()
        var writeError: Error?
        if comm.isRoot {
            do {
                try Self.createRunDirectory(config, worldSize: comm.size)
                try RunDirectory(path: config.runDir).startEvents(completedEpochs: info.epoch)
            } catch let e { writeError = e }
        }
        if let message = comm.agree(on: writeError) { throw RunError(message) }
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

    /// Refuses a run directory that holds a checkpoint (unless resuming or overwriting) or that
    /// cannot be written; writes nothing.
    static func checkRunDirectory(_ c: TrainConfig) throws {
        let fm = FileManager.default
        let last = c.runDir + "/checkpoints/last.safetensors"
        if fm.fileExists(atPath: last) && c.resume == nil && !c.overwrite {
            throw FormatError(c.runDir, "already holds a checkpoint; pass --resume \(last) to continue or --overwrite to start over")
        }
        // The nearest existing ancestor must be writable.
        var dir = URL(fileURLWithPath: c.runDir).standardizedFileURL
        while !fm.fileExists(atPath: dir.path) && dir.path != "/" { dir.deleteLastPathComponent() }
        guard fm.isWritableFile(atPath: dir.path) else { throw FormatError(c.runDir, "cannot be written (\(dir.path) is not writable)") }
    }

    /// Creates the run directory and writes config.json; with --overwrite, first removes what an
    /// earlier run wrote there, so that no file of it is taken for this run's.
    static func createRunDirectory(_ c: TrainConfig, worldSize: Int) throws {
        let fm = FileManager.default
        if c.overwrite { try RunDirectory(path: c.runDir).removeOutputs() }
        do {
            try fm.createDirectory(atPath: c.runDir + "/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw FormatError(c.runDir, "cannot create the run directory: \(error.localizedDescription)")
        }
        var settings = (try? JSONSerialization.jsonObject(with: Data(c.json.utf8)) as? [String: Any]) ?? [:]
        settings["version"] = unetDistVersion
        settings["world_size"] = worldSize
        settings["threads_per_rank"] = c.threads
        let json = try JSONSerialization.data(withJSONObject: settings, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try writeFileAtomically(json + Data("\n".utf8), to: c.runDir + "/config.json")
        for dir in [c.runDir, c.runDir + "/checkpoints"] { removeAbandonedTemporaryFiles(in: dir) }
    }

    /// Read with Double(String), which is exact: Foundation's JSON reader can be off by an ulp,
    /// and a resumed run must compare and save the very value it stopped with.
    static func metric(_ key: String, in json: String) -> Double? {
        guard let r = json.range(of: "\"\(key)\":") else { return nil }
        return Double(json[r.upperBound...].prefix { $0 != "," && $0 != "}" })
    }

    /// Rank 0 reads the file and sends its bytes: no shared file system is assumed.
    func loadCheckpoint(_ path: String, withOptimizer: Bool) throws -> CheckpointInfo {
        var bytes = Data(), readError: Error?
        if comm.isRoot { do { bytes = try readFile(path) } catch let e { readError = e } }
        if let message = comm.agree(on: readError) { throw RunError(message) }
        bytes = comm.broadcast(bytes, root: 0)
        var result: CheckpointInfo?, loadError: Error?
        do {
            let st = try SafeTensors(data: bytes, path: path)
            result = try model.load(st, path: path, optimizer: withOptimizer ? config.optimizer : nil)
        } catch let e { loadError = e }
        if let message = comm.agree(on: loadError) { throw RunError(message) }
        return result!
    }

    /// ImageNet weights for the encoder, read like a checkpoint (rank 0 reads, every rank loads).
    func loadPretrained(_ path: String) throws {
        var bytes = Data(), readError: Error?
        if comm.isRoot { do { bytes = try readFile(path) } catch let e { readError = e } }
        if let message = comm.agree(on: readError) { throw RunError(message) }
        bytes = comm.broadcast(bytes, root: 0)
        var loadError: Error?
        do {
            guard let resnet = model as? UNetResNet else {
                throw FormatError(path, "--pretrained holds ResNet-18 weights, for --model unet-resnet only")
            }
            try resnet.loadPretrained(try SafeTensors(data: bytes, path: path), path: path)
        } catch let e { loadError = e }
        if let message = comm.agree(on: loadError) { throw RunError(message) }
    }

    /// Every rank starts from rank 0's parameters and buffers.
    func broadcastState() {
        let s = model.store
        comm.broadcast(s.params, count: s.parameterCount)
        comm.broadcast(s.bufferData, count: s.bufferCount)
    }

    public var stepsPerEpoch: Int { (trainIndices.count + config.batchSize - 1) / config.batchSize }

    public func run() throws {
        let classes = config.model.classes
        if comm.isRoot && !config.quiet { resumeNotes.forEach(log) }
        let startEpoch = info.epoch + 1
        epochs: for epoch in startEpoch...max(startEpoch, config.epochs) where epoch <= config.epochs {
            let started = Date()
            let rates = learningRates
            var lastRate = rates.rate(step: info.step)
            model.store.frozen = epoch <= config.freezeEncoder ? frozenDuringWarmup : 0..<0
            let order = epochOrder(count: trainIndices.count, seed: config.seed, epoch: epoch, shuffle: config.shuffle)
            var images = 0
            var stopped = false
            let firstStep = info.stepInEpoch
            // A resumed epoch continues the sums saved with its position.
            var sums = firstStep > 0 ? EpochSums(encoded: info.epochSums) ?? EpochSums() : EpochSums()
            // A signal that came before the first step, or while the previous epoch was
            // evaluated and saved: one collective per epoch, on every rank.
            if comm.any(stopSignal() != 0) { try stop(epoch: epoch, sums: sums) }
            // The next batch is read on a background thread while this one computes.
            var pending: PendingLoad? = prefetch(microBatch(order: order, step: firstStep, part: 0), epoch: epoch)
            defer { pending?.wait() }
            for step in firstStep..<stepsPerEpoch {
                Watchdog.at(epoch: epoch, step: step + 1, of: stepsPerEpoch)
                let global = globalBatch(order: order, step: step, batchSize: config.batchSize)
                let last = step + 1 == stepsPerEpoch || config.maxSteps.map { info.step + 1 >= $0 } == true
                optimizerSettings.lr = rates.rate(step: info.step)
                lastRate = optimizerSettings.lr
                // Each micro-batch is read while the one before it computes.
                let parts = microBatchCount(global.count)
                stepSums.reset()
                for part in 0..<parts {
                    let loadError = pending!.wait()
                    swap(&batch, &spare)
                    if let message = comm.agree(on: loadError) { throw RunError(message) }
                    pending = part + 1 < parts ? prefetch(microBatch(order: order, step: step, part: part + 1), epoch: epoch)
                        : last ? nil : prefetch(microBatch(order: order, step: step + 1, part: 0), epoch: epoch)
                    model.store.buckets?.armed = part + 1 == parts
                    accumulateGradients(globalCount: global.count, microCount: share(global, rank: part, size: parts).count,
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
                    throw RunError(String(format: "the loss became %@ at epoch %d, step %d; stopping (the last good checkpoint, if any, is kept: %@)",
                                          scores.loss.isNaN ? "NaN" : "infinite", epoch, step + 1, config.runDir + "/checkpoints/last.safetensors"))
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
            let record = EpochRecord(epoch: epoch, loss: sums.loss / Double(max(sums.steps, 1)), iou: sums.iou / Double(max(sums.steps, 1)),
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

    /// How many micro-batches a global batch of `count` samples is split into: `--accumulate`,
    /// or fewer where a last partial batch has fewer samples.
    func microBatchCount(_ count: Int) -> Int { min(config.accumulate, count) }

    /// Part `part` of step `step`'s global batch: the global batch split into contiguous
    /// micro-batches as the ranks split a batch, so that one rank accumulating K parts computes
    /// what K ranks with per-rank BatchNorm statistics compute.
    func microBatch(order: [Int], step: Int, part: Int) -> ArraySlice<Int> {
        let global = globalBatch(order: order, step: step, batchSize: config.batchSize)
        return share(global, rank: part, size: microBatchCount(global.count))
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
                stepSums.add(logits: logits.data, labels: labels.baseAddress!, batch: logits.shape.n, spatial: plane, lossSum: 0)
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
        stepSums.values.withUnsafeMutableBufferPointer { comm.allreduceSum($0.baseAddress!, count: $0.count, what: "step scores") }
        stopAgreed = stepSums.values[vote] > 0
        return stepSums
    }

    /// Loads this rank's share of `global` (sample positions in the training set) into `target`
    /// (the current batch by default), augmented for `epoch` when asked.
    public func loadBatch(_ global: ArraySlice<Int>, epoch: Int = 1, into target: Batch? = nil) throws {
        let mine = share(global, rank: comm.rank, size: comm.size).map { trainIndices[$0] }
        let seed = config.seed
        try (target ?? batch).load(mine, from: data, height: size.h, width: size.w,
                                   augment: config.augment ? { Augmentation(seed: seed, epoch: epoch, sample: $0) } : nil)
    }

    /// Starts reading this rank's share of `global` (a global batch or a micro-batch of it) into
    /// the spare batch on the loader thread.
    func prefetch(_ global: ArraySlice<Int>, epoch: Int) -> PendingLoad {
        let pending = PendingLoad(), target = spare
        loader.async { [self] in
            do { try loadBatch(global, epoch: epoch, into: target) } catch { pending.error = error }
            pending.done.signal()
        }
        return pending
    }

    /// Rank 0 prints, appends to history.csv, and writes last (and best) checkpoints; all ranks
    /// then agree on whether that worked.
    func finishEpoch(_ r: EpochRecord) throws {
        // The sample picture needs a forward pass; eval mode makes no collective call, so rank 0
        // does it alone.
        Watchdog.phase("saving")
        let samples = comm.isRoot ? try? samplePanel() : nil
        var writeError: Error?
        if comm.isRoot {
            if !config.quiet {
                log(String(format: "Epoch %d/%d loss %.5f iou %.5f test_loss %.5f test_iou %.5f (%.1f s, %.1f img/s)",
                           r.epoch, config.epochs, r.loss, r.iou, r.testLoss, r.testIoU, r.seconds, r.imagesPerSecond))
            }
            do {
                let run = RunDirectory(path: config.runDir)
                // A part of an epoch (--max-steps) is no candidate: its resumed run would not see it.
                let improved = info.stepInEpoch == 0 && r.testIoU > bestTestIoU
                if improved { bestTestIoU = r.testIoU; bestEpoch = r.epoch }
                earlyStop = patienceNote(epoch: r.epoch)
                try run.writeHistory(history, note: earlyStop)
                let png = try samples.map { try run.writeSamples($0, epoch: r.epoch) }
                try run.writeReport(config: config, worldSize: comm.size, history: history, samples: png, notes: earlyStop.map { [$0] } ?? [])
                try run.appendEvents(r, samples: samples, png: png)
                info.metrics = String(format: "{\"best_epoch\":%d,\"best_test_iou\":%.17g,\"dice\":%.17g,\"loss\":%.17g,\"test_iou\":%.17g,"
                                      + "\"test_iou_gm\":%.17g,\"test_iou_wm\":%.17g,\"test_loss\":%.17g}",
                                      bestEpoch, bestTestIoU, r.dice, r.loss, r.testIoU, r.testIoUGM, r.testIoUWM, r.testLoss)
                let bytes = model.checkpoint(info)
                try writeFileAtomically(bytes, to: config.runDir + "/checkpoints/last.safetensors")
                if improved { try writeFileAtomically(bytes, to: config.runDir + "/checkpoints/best.safetensors") }
            } catch let e { writeError = e }
        }
        if let message = comm.agree(on: writeError) { throw RunError(message) }
    }

    /// With --patience N, rank 0's line that ends the run after a whole epoch when the best test
    /// IoU is N or more epochs old and epochs remain. Rank 0 decides and the others follow (see
    /// run): it alone holds a resumed run's history.
    func patienceNote(epoch: Int) -> String? {
        guard let patience = config.patience, info.stepInEpoch == 0, epoch < config.epochs, epoch - bestEpoch >= patience
        else { return nil }
        let waited = epoch - bestEpoch
        return String(format: "stopping early: test IoU has not improved for %d epoch%@ (best %.4f at epoch %d)",
                      waited, waited == 1 ? "" : "s", bestTestIoU, bestEpoch)
    }

    /// The first epoch with the history's highest test IoU (for checkpoints that predate `best_epoch`).
    static func bestEpoch(in history: [EpochRecord]) -> Int? {
        history.max { $0.testIoU < $1.testIoU }?.epoch
    }

    /// `last.safetensors` at a step boundary inside an epoch: a resume continues from the next step.
    func saveMidEpochCheckpoint() throws {
        var writeError: Error?
        if comm.isRoot {
            do { try writeFileAtomically(model.checkpoint(info), to: config.runDir + "/checkpoints/last.safetensors") }
            catch let e { writeError = e }
        }
        if let message = comm.agree(on: writeError) { throw RunError(message) }
    }

    /// Saves the position (and the epoch's sums so far) and ends the run on every rank.
    func stop(epoch: Int, sums: EpochSums) throws -> Never {
        info.epochSums = info.stepInEpoch == 0 ? "" : sums.encoded
        try saveMidEpochCheckpoint()
        throw Interrupted(signal: stopSignal(), epoch: epoch, step: info.step, stepInEpoch: info.stepInEpoch,
                          stepsPerEpoch: stepsPerEpoch,
                          checkpoint: config.runDir + "/checkpoints/last.safetensors")
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
        var rows: [[RGBImage]] = []
        for n in 0..<picks.count {
            let image = grayscale(UnsafeBufferPointer(start: sampleBatch.images.data + n * plane, count: plane),
                                  width: size.w, height: size.h)
            let truth = sampleBatch.labels.withUnsafeBufferPointer {
                colorize(UnsafeBufferPointer(rebasing: $0[(n * plane)..<((n + 1) * plane)]), width: size.w, height: size.h)
            }
            let prediction = predicted.withUnsafeBufferPointer {
                colorize(UnsafeBufferPointer(rebasing: $0[(n * plane)..<((n + 1) * plane)]), width: size.w, height: size.h)
            }
            rows.append([image, truth, prediction])
        }
        return panelGrid(rows, captions: ["image", "truth", "prediction"])
    }
}

extension SegmentationModel {
    /// One optimizer step on this rank's share (`images`, one-hot `targets`) of a global batch of
    /// `globalCount` samples: training-mode forward, BCEWithLogits, backward, gradient sum over
    /// the ranks, update. `score` sees the logits before the loss gradient replaces them in place
    /// (nothing reads a layer's output in its backward, so the logits need no second tensor).
    /// Returns this rank's loss sum. Allocates nothing after the first call with the largest shapes.
    public func trainStep(images: Tensor, targets: Tensor, globalCount: Int, comm: Communicator,
                          optimizer: OptimizerSettings, score: (Tensor) -> Void = { _ in }) -> Double {
        let lossSum = accumulateGradients(images: images, targets: targets, globalCount: globalCount, comm: comm,
                                          zeroFirst: true, score: score)
        applyGradients(comm: comm, optimizer: optimizer)
        return lossSum
    }

    /// Training-mode forward, loss and backward of this rank's share of a (micro-)batch of
    /// `microCount` samples (default: the whole step's `globalCount`), its parameter gradients
    /// added to those already there (zeroed first when `zeroFirst`). `labels` (class indices)
    /// are needed by the cross-entropy losses. Returns this rank's share of the step's loss times
    /// the step's element count: summed over the ranks (and micro-batches), divided by
    /// globalCount x classes x pixels, it is the step's loss.
    public func accumulateGradients(images: Tensor, targets: Tensor, labels: UnsafePointer<UInt8>? = nil, globalCount: Int,
                                    microCount: Int? = nil, loss: LossKind = .bce, comm: Communicator, zeroFirst: Bool,
                                    score: (Tensor) -> Void = { _ in }) -> Double {
        training = true
        let logits = forward(images)
        score(logits)
        let share = context.timed(.lossAndUpdate) {
            lossAndGradient(loss, logits: logits, targets: targets, labels: labels, globalCount: globalCount,
                            microCount: microCount ?? globalCount, comm: comm, scratch: context.lossGradient,
                            sums: &context.diceSums, collective: context.collective)
        }
        if zeroFirst { store.zeroGradients() }
        backward(logits)
        return share
    }

    /// The gradients summed over the ranks, then one optimizer update.
    public func applyGradients(comm: Communicator, optimizer: OptimizerSettings) {
        context.timed(.lossAndUpdate, backward: true) {
            context.collective { sumGradients(comm) }
            store.applyOptimizer(optimizer)
        }
    }
}
