import Foundation
import Distributed
import Formats
import Kernels

/// Scores a model in eval mode on the given pairs, sharded over the ranks; every rank returns the
/// combined sums. Makes exactly one collective call, so ranks with no pairs still join it.
public func evaluate(_ model: SegmentationModel, data: SeedDataset, indices: [Int], batchSize: Int,
                     size: (h: Int, w: Int),
                     batch: Batch, comm: Communicator) throws -> ScoreSums {
    try evaluate(model, data: data, indices: indices, batchSize: batchSize, size: size, batch: batch, comm: comm,
                 perImage: nil).sums
}

/// Code that imports Model alone names the agreed failure as before.
public typealias RunError = Distributed.RunError

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

/// One image's figures per scored class (all but the background), from the predicted masks
/// (argmax, as `predict` writes them): Dice, IoU, HD95 and average surface distance.
public struct ImageScores {
    public var index: Int
    public var dice: [Double], iou: [Double], hd95: [Double], asd: [Double]

    /// The mean Dice over the scored classes: what "worst first" sorts by.
    public var meanDice: Double { dice.reduce(0, +) / Double(max(dice.count, 1)) }

    /// %.17g round-trips every Double: rows sent between ranks arrive exact.
    var encoded: String {
        ([String(index)] + (dice + iou + hd95 + asd).map { String(format: "%.17g", $0) }).joined(separator: " ")
    }

    init(index: Int, dice: [Double], iou: [Double], hd95: [Double], asd: [Double]) {
        self.index = index; self.dice = dice; self.iou = iou; self.hd95 = hd95; self.asd = asd
    }

    init?(encoded line: Substring, classes: Int) {
        let f = line.split(separator: " ")
        guard f.count == 1 + 4 * classes, let index = Int(f[0]) else { return nil }
        let v = f.dropFirst().map { Double($0) ?? .nan }
        self.init(index: index, dice: Array(v[0..<classes]), iou: Array(v[classes..<2 * classes]),
                  hd95: Array(v[2 * classes..<3 * classes]), asd: Array(v[3 * classes..<4 * classes]))
    }
}

/// `evaluate`'s sums and, for every image, its `ImageScores`, the pixel spacing of image i given
/// by `spacing(i)`. The ranks score their shards; every rank returns every image's figures in
/// index order, so that any number of ranks gives one rank's figures exactly.
public func evaluateImages(_ model: SegmentationModel, data: SeedDataset, indices: [Int], batchSize: Int,
                           size: (h: Int, w: Int), batch: Batch, comm: Communicator,
                           spacing: @escaping (Int) -> (rows: Double, columns: Double))
    throws -> (ScoreSums, [ImageScores]) {
    let r = try evaluate(model, data: data, indices: indices, batchSize: batchSize, size: size, batch: batch,
                         comm: comm,
                         perImage: spacing)
    return (r.sums, r.images)
}

/// The sums and, with `perImage` (the spacing of image i), every image's figures: the sums in one
/// allreduce, the figures gathered from every rank in one broadcast each.
func evaluate(_ model: SegmentationModel, data: SeedDataset, indices: [Int], batchSize: Int, size: (h: Int, w: Int),
              batch: Batch, comm: Communicator,
              perImage spacing: ((Int) -> (rows: Double, columns: Double))?)
    throws -> (sums: ScoreSums, images: [ImageScores]) {
    let wasTraining = model.training
    model.training = false
    defer { model.training = wasTraining }
    let classes = model.config.classes, plane = size.h * size.w
    var sums = ScoreSums(classes: classes)
    var mine: [ImageScores] = []
    Watchdog.phase("evaluation")
    let lo = comm.rank * indices.count / comm.size, hi = (comm.rank + 1) * indices.count / comm.size
    try comm.everyRankDoes {
        var start = lo
        while start < hi {
            let chunk = indices[start ..< min(start + batchSize, hi)]
            try batch.load(chunk, from: data, height: size.h, width: size.w)
            let logits = model.forward(batch.images)
            let lossSum = bceWithLogits(dlogits: nil, logits: logits.data, targets: batch.targets.data,
                                        count: logits.count, gradScale: 0)
            batch.labels.withUnsafeBufferPointer {
                sums.add(logits: logits.data, labels: $0.baseAddress!, batch: chunk.count, spatial: plane,
                         lossSum: lossSum)
            }
            let predicted = spacing == nil ? [] : classMasks(logits.data, count: chunk.count, classes: classes,
                                                             spatial: plane)
            for (slot, index) in chunk.enumerated() where spacing != nil {
                var s = ImageScores(index: index, dice: [], iou: [], hd95: [], asd: [])
                for c in 0..<(classes - 1) {
                    let p = (0..<plane).map { predicted[slot * plane + $0] == c }
                    let t = (0..<plane).map { Int(batch.labels[slot * plane + $0]) == c }
                    var inter = 0, np = 0, nt = 0
                    for i in 0..<plane { if p[i] { np += 1 }; if t[i] { nt += 1 }; if p[i] && t[i] { inter += 1 } }
                    // Both empty: they agree perfectly.
                    s.dice.append(np + nt == 0 ? 1 : 2 * Double(inter) / Double(np + nt))
                    s.iou.append(np + nt == 0 ? 1 : Double(inter) / Double(np + nt - inter))
                    let d = SurfaceDistance(pred: p, truth: t, height: size.h, width: size.w, spacing: spacing!(index))
                    s.hd95.append(d.hd95); s.asd.append(d.asd)
                }
                mine.append(s)
            }
            start += chunk.count
            Watchdog.progress()
        }
    }
    sums.values.withUnsafeMutableBufferPointer {
        comm.allreduceSum($0.baseAddress!, count: $0.count, what: "test scores")
    }
    // The shards are contiguous and in rank order: concatenated, in index order.
    var all: [ImageScores] = []
    for r in 0..<comm.size where spacing != nil {
        let text = comm.broadcast(Data(mine.map(\.encoded).joined(separator: "\n").utf8), root: r)
        all += String(decoding: text, as: UTF8.self).split(separator: "\n")
            .compactMap { ImageScores(encoded: $0, classes: classes - 1) }
    }
    return (sums, all)
}
