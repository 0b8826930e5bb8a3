import Foundation
import Kernels

/// What every layer of a model shares: the parameter store, the scratch workspace, the mode,
/// and, in a data-parallel run, the reducer that synchronizes BatchNorm statistics.
public final class LayerContext {
    public let store: ParameterStore
    public let workspace = Workspace()
    public var training = true
    public var statistics: StatisticsReducer?
    /// Per-layer-kind timing; nil (the default) costs one check per layer.
    public var profile: LayerProfile?
    /// The convolutions' arithmetic: with bf16, the 3x3 convolutions and the transposed ones that
    /// `runsBF16` take bf16 operands and sum in float32; parameters, gradients and activations
    /// stay float32.
    public var precision = Precision.fp32
    /// How the banded convolutions cut their work (`bench` varies it).
    public var tuning = KernelTuning()
    /// Input gradients of every Conv2d and ConvTranspose2d and of every BatchNorm2d, shared: each
    /// is read only by the backward of the layer before it, which writes the other one
    /// (conv -> BN -> conv ...). An up block's padded-gradient step borrows the BN one.
    let convGrad = Tensor(), bnGrad = Tensor()
    /// The BN gradient as bf16 halves, in its storage: what a BatchNorm writes instead where its
    /// input came from a bf16 convolution, whose backward rounds it to bf16 anyway
    /// (`BatchNorm2d.gradientHalves`).
    let bnGradBF16: HalfTensor
    /// The outputs of the BatchNorm layers that do not keep theirs: each is read right away by
    /// the next convolution, whose backward computes it again from the BN's input (inside the
    /// weight gradient's copy of the rows, or `BatchNorm2d.rematerialize`).
    let sharedActivation = Tensor()
    /// Those outputs as the paired bf16 planes their reader makes of them, where that reader runs
    /// in bf16 in training (`BatchNorm2d.outputPairs`), in the same storage.
    let sharedActivationPairs: HalfTensor
    /// The outputs of the convolutions whose BatchNorm keeps what its backward needs itself (a
    /// bf16 copy of its input in bf16 training; nothing in evaluation): each is read at once by
    /// that BatchNorm (in bf16 training a bf16 convolution writes the BatchNorm's copy instead,
    /// and only this tensor's shape is used). Only forwards use it, so it lies in the BN
    /// gradient's storage, which only backwards use.
    let sharedConvOutput: Tensor
    /// Every up block's padded up-sampling, the second input of its first convolution: rebuilt
    /// (up-sampled and padded again) before that convolution's backward. Where that convolution
    /// runs in bf16 it rounds the up-sampling to bf16 anyway, and the up-sampling is written as
    /// bf16 halves instead: into `sharedUpsampledBF16`, or in training into a tensor of the up
    /// block's own where it keeps them for its backward (`UpBlock.keepsUpsampling`). Both shared
    /// tensors lie in the conv gradient's storage: forwards never use that gradient, and in an up
    /// block's backward it is free from the first BatchNorm's backward, which reads it, to the
    /// up-sampling's backward, which writes it (`UpBlock.backward`).
    let sharedUpsampled: Tensor
    let sharedUpsampledBF16: HalfTensor
    /// Double scratch for BN's per-channel sums: 2 x (the widest BN layer's channels) + 1,
    /// sized by the model when it is built so that the training step never allocates it.
    var bnScratch: [Double] = []
    /// The Dice term's gradient, kept while the other loss term is written over the logits, and
    /// the Dice sums (3 x classes) that the ranks add.
    let lossGradient = Tensor()
    var diceSums: [Double] = []
    init(store: ParameterStore) {
        self.store = store
        sharedConvOutput = Tensor(in: bnGrad.storage)
        bnGradBF16 = HalfTensor(in: bnGrad.storage)
        sharedActivationPairs = HalfTensor(in: sharedActivation.storage)
        sharedUpsampled = Tensor(in: convGrad.storage)
        sharedUpsampledBF16 = HalfTensor(in: convGrad.storage)
    }
    deinit { convStatistics.deallocate() }

    /// The per-channel sums a direct convolution took of its output as it wrote it (a Conv2d
    /// with `feedsBatchNorm`, in training), for the BatchNorm that reads that output next.
    private var convStatistics = UnsafeMutablePointer<Double>.allocate(capacity: 1), statisticsCapacity = 1
    private var statisticsOf: ObjectIdentifier?, statisticsParts = 0, statisticsHalvesOnly = false

    /// Room for `parts` parts of sums of `channels` channels, to describe `output`; grows once.
    /// `halvesOnly`: the convolution writes `output` only as its BatchNorm's kept bf16 halves.
    func statisticsBuffer(for output: Tensor, parts: Int, channels: Int,
                          halvesOnly: Bool) -> UnsafeMutablePointer<Double> {
        if parts * 2 * channels > statisticsCapacity {
            convStatistics.deallocate()
            statisticsCapacity = parts * 2 * channels
            convStatistics = .allocate(capacity: statisticsCapacity)
        }
        statisticsOf = ObjectIdentifier(output); statisticsParts = parts; statisticsHalvesOnly = halvesOnly
        return convStatistics
    }

    /// The sums of `x` if the last convolution took them, once, and whether it wrote x only as
    /// its BatchNorm's kept bf16 halves.
    func takeStatistics(of x: Tensor) -> (sums: UnsafePointer<Double>, parts: Int, halvesOnly: Bool)? {
        defer { statisticsOf = nil }
        guard statisticsOf == ObjectIdentifier(x) else { return nil }
        return (UnsafePointer(convStatistics), statisticsParts, statisticsHalvesOnly)
    }
}

/// PyTorch's default init for Conv2d and ConvTranspose2d: weights and biases uniform in
/// +-1/sqrt(fan_in), where fan_in is size(1) * kernel area of the weight tensor.
func initUniform(_ p: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, rng: inout SplitMix64) {
    let bound = 1 / Float(fanIn).squareRoot()
    for i in 0..<count { p[i] = rng.uniform(-bound, bound) }
}
