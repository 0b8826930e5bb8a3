import Distributed
import Kernels

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
    public func accumulateGradients(images: Tensor, targets: Tensor, labels: UnsafePointer<UInt8>? = nil,
                                    globalCount: Int, microCount: Int? = nil, loss: LossKind = .bce,
                                    comm: Communicator, zeroFirst: Bool,
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
