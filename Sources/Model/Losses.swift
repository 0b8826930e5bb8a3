import Distributed
import Foundation
import Kernels

/// The training loss (`--loss`). The Dice term is MONAI's DiceLoss over the global batch (its
/// sums added over the ranks); with `bce+dice` on each class's sigmoid, as BCE sees it,
/// otherwise on the softmax over the classes (`ce+dice` is MONAI's DiceCELoss). Terms add with
/// weight 1.
public enum LossKind: String, Codable, CaseIterable {
    case bce, ce, dice
    case bceDice = "bce+dice"
    case ceDice = "ce+dice"

    public enum Pixelwise { case bce, ce }

    public var pixelwise: Pixelwise? {
        switch self {
        case .bce, .bceDice: return .bce
        case .ce, .ceDice: return .ce
        case .dice: return nil
        }
    }

    public var hasDice: Bool { self == .dice || self == .bceDice || self == .ceDice }
    public var diceSoftmax: Bool { self != .bceDice }
}

/// The loss of one rank's share (`logits`, N x classes x H x W) of a micro-batch of `microCount`
/// samples in a step of `globalCount`, and its gradient, written over the logits. Every term is
/// normalized by the whole step (every rank, every micro-batch), so that the gradients' sum over
/// ranks and micro-batches is the gradient of the step's loss. Returns this rank's share of the
/// step's loss times globalCount x classes x pixels (the unit the BCE sum has).
/// `scratch` holds the Dice gradient meanwhile; `sums` the Dice sums, added over the ranks with
/// one allreduce (run through `collective`, which may time it), on every rank alike.
public func lossAndGradient(_ kind: LossKind, logits: Tensor, targets: Tensor, labels: UnsafePointer<UInt8>?,
                            globalCount: Int, microCount: Int, comm: Communicator, scratch: Tensor,
                            sums: inout [Double],
                            collective: (() -> Void) -> Void = { $0() }) -> Double {
    let n = logits.shape.n, classes = logits.shape.c, plane = logits.shape.spatial
    let elements = Double(globalCount * classes * plane)
    var share = 0.0
    if kind.hasDice {
        if sums.count != 3 * classes { sums = [Double](repeating: 0, count: 3 * classes) }
        sums.withUnsafeMutableBufferPointer { sums in
            for i in sums.indices { sums[i] = 0 }
            DiceLoss.addSums(sums.baseAddress!, logits: logits.data, targets: targets.data, batch: n, classes: classes,
                             spatial: plane, softmax: kind.diceSoftmax)
            collective { comm.allreduceSum(sums.baseAddress!, count: sums.count, what: "Dice sums") }
            // A micro-batch's Dice counts for its share of the step; each rank adds 1/size of it.
            let weight = Double(microCount) / Double(globalCount)
            share += weight * DiceLoss.loss(sums.baseAddress!, classes: classes) * elements / Double(comm.size)
            scratch.reshape(logits.shape)
            scratch.zero()
            DiceLoss.addGradient(scratch.data, logits: logits.data, targets: targets.data, sums: sums.baseAddress!,
                                 batch: n, classes: classes, spatial: plane, softmax: kind.diceSoftmax, weight: weight)
        }
    }
    switch kind.pixelwise {
    case .bce:
        share += bceWithLogits(dlogits: logits.data, logits: logits.data, targets: targets.data, count: logits.count,
                               gradScale: Float(1 / elements))
    case .ce:
        // Cross-entropy is a mean over pixels, not over pixels x classes.
        share += Double(classes) * softmaxCrossEntropy(dlogits: logits.data, logits: logits.data, classes: labels!,
                                                       batch: n,
                                                       channels: classes, spatial: plane,
                                                       gradScale: Float(1 / Double(globalCount * plane)))
    case nil:
        logits.zero()
    }
    if kind.hasDice {
        let d = logits.data, g = scratch.data
        for i in 0..<logits.count { d[i] += g[i] }
    }
    return share
}
