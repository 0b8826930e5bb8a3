import Kernels

/// Which samples each optimizer step trains on (docs/design.md, section 2): every epoch a
/// permutation of the training set drawn from (seed, epoch), cut into global batches of
/// `batchSize` in that order; a global batch is split among the ranks, and a rank's share into
/// `accumulate` micro-batches, by `share`. Identical on every rank and for every number of ranks.
public struct Sampler {
    /// Training samples, global batch size, shuffling seed, and micro-batches per step.
    public let count: Int, batchSize: Int
    public let seed: UInt64, shuffle: Bool
    public let accumulate: Int

    public init(count: Int, batchSize: Int, seed: UInt64, shuffle: Bool = true, accumulate: Int = 1) {
        self.count = count; self.batchSize = batchSize
        self.seed = seed; self.shuffle = shuffle
        self.accumulate = accumulate
    }

    /// The last global batch of an epoch may be partial.
    public var stepsPerEpoch: Int { (count + batchSize - 1) / batchSize }

    /// The epoch's sample order: a permutation from (seed, epoch), identical on every rank.
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<count)
        guard shuffle else { return order }
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch))
        for i in stride(from: count - 1, to: 0, by: -1) {
            order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return order
    }

    /// The global batch of step `step` within an epoch, in sample indices.
    public func globalBatch(_ order: [Int], step: Int) -> ArraySlice<Int> {
        order[step * batchSize ..< min((step + 1) * batchSize, order.count)]
    }

    /// How many micro-batches a global batch of `count` samples is split into: `accumulate`,
    /// or fewer where a last partial batch has fewer samples.
    public func microBatchCount(_ count: Int) -> Int { min(accumulate, count) }

    /// Part `part` of step `step`'s global batch: the global batch split into contiguous
    /// micro-batches as the ranks split a batch, so that one rank accumulating K parts computes
    /// what K ranks with per-rank BatchNorm statistics compute.
    public func microBatch(_ order: [Int], step: Int, part: Int) -> ArraySlice<Int> {
        let global = globalBatch(order, step: step)
        return share(global, rank: part, size: microBatchCount(global.count))
    }
}

/// This rank's contiguous share of a global batch: sizes differ by at most one, the larger shares
/// on the lower ranks; with fewer samples than ranks the highest ranks get none.
public func share<C: Collection>(_ batch: C, rank: Int, size: Int) -> C.SubSequence {
    let n = batch.count, base = n / size, extra = n % size
    let start = rank * base + min(rank, extra), count = base + (rank < extra ? 1 : 0)
    let lo = batch.index(batch.startIndex, offsetBy: start)
    return batch[lo ..< batch.index(lo, offsetBy: count)]
}
