import Distributed
import Formats
import Kernels

/// Scores a model in eval mode on the given pairs, sharded over the ranks; every rank returns the
/// combined sums. Makes exactly one collective call, so ranks with no pairs still join it.
public func evaluate(_ model: SegmentationModel, data: SeedDataset, indices: [Int], batchSize: Int, size: (h: Int, w: Int),
                     batch: Batch, comm: Communicator) throws -> ScoreSums {
    let wasTraining = model.training
    model.training = false
    defer { model.training = wasTraining }
    var sums = ScoreSums(classes: model.config.classes)
    let lo = comm.rank * indices.count / comm.size, hi = (comm.rank + 1) * indices.count / comm.size
    var error: Error?
    Watchdog.phase("evaluation")
    do {
        var start = lo
        while start < hi {
            let chunk = indices[start ..< min(start + batchSize, hi)]
            try batch.load(chunk, from: data, height: size.h, width: size.w)
            let logits = model.forward(batch.images)
            let lossSum = bceWithLogits(dlogits: nil, logits: logits.data, targets: batch.targets.data,
                                        count: logits.count, gradScale: 0)
            batch.labels.withUnsafeBufferPointer {
                sums.add(logits: logits.data, labels: $0.baseAddress!, batch: chunk.count, spatial: size.h * size.w,
                         lossSum: lossSum)
            }
            start += chunk.count
            Watchdog.progress()
        }
    } catch let e { error = e }
    if let message = comm.agree(on: error) { throw RunError(message) }
    sums.values.withUnsafeMutableBufferPointer { comm.allreduceSum($0.baseAddress!, count: $0.count, what: "test scores") }
    return sums
}

/// A failure that every rank agreed on; its message is ready for the user.
public struct RunError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Adapts a communicator to BatchNorm's statistics reducer (synchronized BatchNorm).
public final class SyncStatistics: StatisticsReducer {
    let comm: Communicator
    /// Times each reduction as `collectives` (`unet-dist bench`); nil in training.
    public var profile: LayerProfile?
    public init(_ comm: Communicator) { self.comm = comm }
    public func sumAcrossReplicas(_ values: UnsafeMutablePointer<Double>, count: Int) {
        guard let profile else { return comm.allreduceSum(values, count: count, what: "BatchNorm statistics") }
        profile.timeCollective { comm.allreduceSum(values, count: count, what: "BatchNorm statistics") }
    }
}
