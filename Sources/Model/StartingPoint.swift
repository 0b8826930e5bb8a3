import Distributed
import Foundation
import Formats

/// Where a run starts: the fresh weights of `makeModel`, ImageNet weights in the encoder
/// (--pretrained), a checkpoint's weights and buffers (--init), or a stopped run's whole state
/// (--resume). Every file takes one path: rank 0 reads it, every rank loads it.
extension Trainer {
    func loadStartingPoint() throws {
        if let path = config.pretrained, config.resume == nil, config.initFrom == nil {
            try loadPretrained(path)
        }
        info.optimizer = config.optimizer
        guard let path = config.resume ?? config.initFrom else { return }
        let loaded = try loadCheckpoint(path, withOptimizer: config.resume != nil)
        if let resume = config.resume { try continueRun(loaded, checkpoint: resume) }
    }

    /// Takes over a resumed run's position, metrics and (on rank 0) history.
    func continueRun(_ loaded: CheckpointInfo, checkpoint: String) throws {
        // The same on every rank (the file was broadcast), so every rank refuses alike.
        let plan: ResumePlan
        do { plan = try ResumePlan(loaded, stepsPerEpoch: stepsPerEpoch, config: config, checkpoint: checkpoint) }
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
        bestEpoch = Self.metric("best_epoch", in: loaded.metrics).map { Int($0) } ?? Self.bestEpoch(in: history)
            ?? plan.completedEpochs
    }

    /// Read with Double(String), which is exact: Foundation's JSON reader can be off by an ulp,
    /// and a resumed run must compare and save the very value it stopped with.
    static func metric(_ key: String, in json: String) -> Double? {
        guard let r = json.range(of: "\"\(key)\":") else { return nil }
        return Double(json[r.upperBound...].prefix { $0 != "," && $0 != "}" })
    }

    /// Rank 0 reads the file and sends its bytes (no shared file system is assumed); every rank
    /// parses them and hands them to `load`, and all agree on the outcome.
    func loadBroadcast<T>(_ path: String, _ load: (SafeTensors) throws -> T) throws -> T {
        let bytes = comm.broadcast(try comm.rootDoes { try readFile(path) } ?? Data(), root: 0)
        return try comm.everyRankDoes { try load(try SafeTensors(data: bytes, path: path)) }
    }

    /// A checkpoint's weights and buffers (and, for a resume, the optimizer's state).
    func loadCheckpoint(_ path: String, withOptimizer: Bool) throws -> CheckpointInfo {
        try loadBroadcast(path) { try model.load($0, path: path, optimizer: withOptimizer ? config.optimizer : nil) }
    }

    /// ImageNet weights for the encoder, read like a checkpoint.
    func loadPretrained(_ path: String) throws {
        try loadBroadcast(path) { st in
            guard let resnet = model as? UNetResNet else {
                throw FormatError(path, "--pretrained holds ResNet-18 weights, for --model unet-resnet only")
            }
            try resnet.loadPretrained(st, path: path)
        }
    }

    /// The first epoch with the history's highest test IoU (for checkpoints that predate `best_epoch`).
    static func bestEpoch(in history: [EpochRecord]) -> Int? {
        history.max { $0.testIoU < $1.testIoU }?.epoch
    }

    /// Every rank starts from rank 0's parameters and buffers.
    func broadcastState() {
        let s = model.store
        comm.broadcast(s.params, count: s.parameterCount)
        comm.broadcast(s.bufferData, count: s.bufferCount)
    }
}
