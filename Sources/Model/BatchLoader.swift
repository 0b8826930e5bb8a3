import Foundation

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

extension Trainer {
    /// Loads this rank's share of `global` (sample positions in the training set) into `target`
    /// (the current batch by default), augmented for `epoch` when asked.
    public func loadBatch(_ global: ArraySlice<Int>, epoch: Int = 1, into target: Batch? = nil) throws {
        let mine = share(global, rank: comm.rank, size: comm.size).map { trainIndices[$0] }
        let seed = config.seed
        let augment: ((Int) -> Augmentation)?
        augment = config.augment ? { Augmentation(seed: seed, epoch: epoch, sample: $0) } : nil
        try (target ?? batch).load(mine, from: data, height: size.h, width: size.w, augment: augment)
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
}
