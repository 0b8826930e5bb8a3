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
    /// Input gradients of every Conv2d and ConvTranspose2d and of every BatchNorm2d, shared: each
    /// is read only by the backward of the layer before it, which writes the other one
    /// (conv -> BN -> conv ...). An up block's padded-gradient step borrows the BN one.
    let convGrad = Tensor(), bnGrad = Tensor()
    /// The outputs of the BatchNorm layers that do not keep theirs: each is read right away by
    /// the next convolution, whose backward computes it again from the BN's input (inside the
    /// weight gradient's copy of the rows, or `BatchNorm2d.rematerialize`).
    let sharedActivation = Tensor()
    /// Every up block's padded up-sampling, the second input of its first convolution: rebuilt
    /// (up-sampled and padded again) before that convolution's backward.
    let sharedUpsampled = Tensor()
    /// Double scratch for BN's per-channel sums: 2 x (the widest BN layer's channels) + 1,
    /// sized by the model when it is built so that the training step never allocates it.
    var bnScratch: [Double] = []
    /// The Dice term's gradient, kept while the other loss term is written over the logits, and
    /// the Dice sums (3 x classes) that the ranks add.
    let lossGradient = Tensor()
    var diceSums: [Double] = []
    init(store: ParameterStore) { self.store = store }
    deinit { convStatistics.deallocate() }

    /// The per-channel sums a direct convolution took of its output as it wrote it (a Conv2d
    /// with `feedsBatchNorm`, in training), for the BatchNorm that reads that output next.
    private var convStatistics = UnsafeMutablePointer<Double>.allocate(capacity: 1), statisticsCapacity = 1
    private var statisticsOf: ObjectIdentifier?, statisticsParts = 0

    /// Room for `parts` parts of sums of `channels` channels, to describe `output`; grows once.
    func statisticsBuffer(for output: Tensor, parts: Int, channels: Int) -> UnsafeMutablePointer<Double> {
        if parts * 2 * channels > statisticsCapacity {
            convStatistics.deallocate()
            statisticsCapacity = parts * 2 * channels
            convStatistics = .allocate(capacity: statisticsCapacity)
        }
        statisticsOf = ObjectIdentifier(output); statisticsParts = parts
        return convStatistics
    }

    /// The sums of `x` if the last convolution took them, once.
    func takeStatistics(of x: Tensor) -> (sums: UnsafePointer<Double>, parts: Int)? {
        defer { statisticsOf = nil }
        return statisticsOf == ObjectIdentifier(x) ? (UnsafePointer(convStatistics), statisticsParts) : nil
    }
}

/// PyTorch's default init for Conv2d and ConvTranspose2d: weights and biases uniform in
/// +-1/sqrt(fan_in), where fan_in is size(1) * kernel area of the weight tensor.
func initUniform(_ p: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, rng: inout SplitMix64) {
    let bound = 1 / Float(fanIn).squareRoot()
    for i in 0..<count { p[i] = rng.uniform(-bound, bound) }
}

final class Conv2d {
    let shape: Conv2dShape
    let weight: TensorView
    let bias: TensorView?
    let output = Tensor()
    fileprivate unowned var input: Tensor!
    /// The second half of a concatenated input (`forward(_:concatenatedWith:)`).
    fileprivate unowned var secondInput: Tensor?
    /// The BatchNorm whose output, not kept (`BatchNorm2d.shareOutput`), is this layer's input:
    /// the backward computes that output again from the BatchNorm's input, inside the weight
    /// gradient's copy of the rows where the kernels allow, else into the shared tensor first.
    fileprivate unowned var inputBN: BatchNorm2d?
    /// A BatchNorm reads the output next: a direct forward in training sums it as it goes.
    var feedsBatchNorm = false

    /// Where the forward of an output of `shape` writes BatchNorm's sums, if it takes them.
    private func statistics(_ ctx: LayerContext, _ shape: Shape, split: Int? = nil) -> UnsafeMutablePointer<Double>? {
        guard ctx.training && feedsBatchNorm else { return nil }
        let parts = runsBF16(ctx, split: split) ? self.shape.bf16StatisticsParts(batch: shape.n, height: shape.h, width: shape.w)
            : self.shape.statisticsParts(batch: shape.n, height: shape.h, width: shape.w)
        return parts > 0 ? ctx.statisticsBuffer(for: output, parts: parts, channels: self.shape.outC) : nil
    }

    init(_ name: String, _ shape: Conv2dShape, bias: Bool = true, store: ParameterStore) {
        self.shape = shape
        weight = store.addParameter(name + ".weight", [shape.outC, shape.inC, shape.kernel, shape.kernel])
        self.bias = bias ? store.addParameter(name + ".bias", [shape.outC]) : nil
    }

    /// Whether this layer runs in bf16 (`LayerContext.precision`); `split`: a concatenation's first part.
    func runsBF16(_ ctx: LayerContext, split: Int? = nil) -> Bool {
        ctx.precision == .bf16 && shape.runsBF16(split: split)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        let fanIn = shape.inC * shape.kernel * shape.kernel
        initUniform(store.param(weight), count: weight.count, fanIn: fanIn, rng: &rng)
        if let bias { initUniform(store.param(bias), count: bias.count, fanIn: fanIn, rng: &rng) }
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x
        output.reshape(shape.outputShape(x.shape))
        if let p = ctx.profile { p.convFlops += Double(2 * shape.weightCount * output.shape.count / shape.outC) }
        let sums = statistics(ctx, output.shape)
        let bf16 = runsBF16(ctx)
        ctx.timed(.conv) {
            if bf16 {
                conv2dForwardBF16(output.data, x.data, weight: ctx.store.param(weight),
                                  bias: bias.map { ctx.store.param($0) }, batch: x.shape.n, height: x.shape.h,
                                  width: x.shape.w, shape, workspace: ctx.workspace, statistics: sums)
                return
            }
            conv2dForward(output.data, x.data, weight: ctx.store.param(weight), bias: bias.map { ctx.store.param($0) },
                          batch: x.shape.n, height: x.shape.h, width: x.shape.w, shape, workspace: ctx.workspace,
                          statistics: sums)
        }
        return output
    }

    /// Accumulates parameter gradients; returns dx unless the input needs none.
    @discardableResult
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true) -> Tensor {
        let inputGrad = ctx.convGrad
        if needInputGrad { inputGrad.reshape(input.shape) }
        if let p = ctx.profile {
            p.convFlops += Double((needInputGrad ? 4 : 2) * shape.weightCount * dy.shape.count / shape.outC)
        }
        var x = input!, affine: AffineReLU? = nil
        let bf16 = runsBF16(ctx)
        if let bn = inputBN {
            // The bf16 weight gradient always reads its input through its own copies.
            if shape.unfoldsInputInBackward || bf16 {
                affine = bn.outputAffineReLU(ctx)
                x = bn.recomputedFrom
            } else {
                bn.rematerialize(ctx)
            }
        }
        ctx.timed(.conv, backward: true) {
            if bf16 {
                conv2dBackwardBF16(dxA: needInputGrad ? inputGrad.data : nil, dweight: ctx.store.grad(weight),
                                   dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, x.data,
                                   weight: ctx.store.param(weight), batch: x.shape.n, height: x.shape.h,
                                   width: x.shape.w, shape, workspace: ctx.workspace, inputAffineReLU: affine)
                return
            }
            conv2dBackward(dx: needInputGrad ? inputGrad.data : nil, dweight: ctx.store.grad(weight),
                           dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, x: x.data,
                           weight: ctx.store.param(weight), batch: x.shape.n, height: x.shape.h,
                           width: x.shape.w, shape, workspace: ctx.workspace, inputAffineReLU: affine)
        }
        return inputGrad
    }
}

extension Conv2d {
    /// conv(torch.cat([a, b], 1)) without the concatenation in memory (3x3 "same" kernels).
    func forward(_ a: Tensor, concatenatedWith b: Tensor, _ ctx: LayerContext) -> Tensor {
        precondition(a.shape.n == b.shape.n && a.shape.h == b.shape.h && a.shape.w == b.shape.w)
        precondition(a.shape.c + b.shape.c == shape.inC)
        input = a; secondInput = b
        output.reshape(Shape(a.shape.n, shape.outC, a.shape.h, a.shape.w))
        if let p = ctx.profile { p.convFlops += Double(2 * shape.weightCount * output.shape.count / shape.outC) }
        let sums = statistics(ctx, output.shape, split: a.shape.c)
        let bf16 = runsBF16(ctx, split: a.shape.c)
        ctx.timed(.conv) {
            if bf16 {
                conv2dForwardBF16(output.data, a.data, channelsA: a.shape.c, b.data, weight: ctx.store.param(weight),
                                  bias: bias.map { ctx.store.param($0) }, batch: a.shape.n, height: a.shape.h,
                                  width: a.shape.w, shape, workspace: ctx.workspace, statistics: sums)
                return
            }
            conv2dForwardConcat(output.data, a.data, channelsA: a.shape.c, b.data, weight: ctx.store.param(weight),
                                bias: bias.map { ctx.store.param($0) }, batch: a.shape.n, height: a.shape.h,
                                width: a.shape.w, shape, workspace: ctx.workspace, statistics: sums)
        }
        return output
    }

    /// The backward of `forward(_:concatenatedWith:)`: parameter gradients accumulated, the
    /// input gradient written to `da` and `db`, reshaped to the two inputs.
    func backward(_ dy: Tensor, _ ctx: LayerContext, into da: Tensor, _ db: Tensor) {
        let a = input!, b = secondInput!
        da.reshape(a.shape); db.reshape(b.shape)
        if let p = ctx.profile { p.convFlops += Double(4 * shape.weightCount * dy.shape.count / shape.outC) }
        let bf16 = runsBF16(ctx, split: a.shape.c)
        ctx.timed(.conv, backward: true) {
            if bf16 {
                conv2dBackwardBF16(dxA: da.data, dxB: db.data, dweight: ctx.store.grad(weight),
                                   dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, a.data, channelsA: a.shape.c,
                                   b.data, weight: ctx.store.param(weight), batch: a.shape.n, height: a.shape.h,
                                   width: a.shape.w, shape, workspace: ctx.workspace)
                return
            }
            conv2dBackwardConcat(da: da.data, db: db.data, dweight: ctx.store.grad(weight),
                                 dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, a.data, channelsA: a.shape.c,
                                 b.data, weight: ctx.store.param(weight), batch: a.shape.n, height: a.shape.h,
                                 width: a.shape.w, shape, workspace: ctx.workspace)
        }
    }
}

final class ConvTranspose2d {
    let shape: ConvTranspose2dShape
    let weight: TensorView
    let bias: TensorView
    /// Own, or the context's shared tensor where the only reader copies it away at once.
    var output = Tensor()
    private unowned var input: Tensor!

    init(_ name: String, _ shape: ConvTranspose2dShape, store: ParameterStore) {
        self.shape = shape
        weight = store.addParameter(name + ".weight", [shape.inC, shape.outC, shape.kernel, shape.kernel])
        bias = store.addParameter(name + ".bias", [shape.outC])
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        let fanIn = shape.outC * shape.kernel * shape.kernel
        initUniform(store.param(weight), count: weight.count, fanIn: fanIn, rng: &rng)
        initUniform(store.param(bias), count: bias.count, fanIn: fanIn, rng: &rng)
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        output.reshape(shape.outputShape(x.shape))
        forward(x, ctx, into: output)
        return output
    }

    /// The forward written into `y`, after `top` rows and `left` columns of zeros where given
    /// (`convTranspose2dForwardPadded`, the direct kernel only, or the bf16 one).
    func forward(_ x: Tensor, _ ctx: LayerContext, into y: Tensor, top: Int = 0, left: Int = 0) {
        input = x
        if let p = ctx.profile { p.convFlops += Double(2 * shape.weightCount * x.shape.count / shape.inC) }
        let w = ctx.store.param(weight), b = ctx.store.param(bias)
        ctx.timed(.convTranspose) {
            if ctx.precision == .bf16 && shape.runsBF16 {
                convTranspose2dForwardBF16(y.data, x.data, weight: w, bias: b, batch: x.shape.n, height: x.shape.h,
                                           width: x.shape.w, shape, top: top, left: left, workspace: ctx.workspace)
            } else if top == 0 && left == 0 {
                convTranspose2dForward(y.data, x.data, weight: w, bias: b, batch: x.shape.n, height: x.shape.h,
                                       width: x.shape.w, shape, workspace: ctx.workspace)
            } else {
                convTranspose2dForwardPadded(y.data, x.data, weight: w, bias: b, batch: x.shape.n, height: x.shape.h,
                                             width: x.shape.w, shape, top: top, left: left, workspace: ctx.workspace)
            }
        }
    }

    /// Returns dx in the context's conv gradient, as Conv2d does: it feeds a BatchNorm's backward.
    func backward(_ dy: Tensor, _ ctx: LayerContext) -> Tensor {
        let inputGrad = ctx.convGrad
        inputGrad.reshape(input.shape)
        if let p = ctx.profile { p.convFlops += Double(4 * shape.weightCount * input.shape.count / shape.inC) }
        ctx.timed(.convTranspose, backward: true) {
            if ctx.precision == .bf16 && shape.runsBF16 {
                convTranspose2dBackwardBF16(dx: inputGrad.data, dweight: ctx.store.grad(weight),
                                            dbias: ctx.store.grad(bias), dy: dy.data, x: input.data,
                                            weight: ctx.store.param(weight),
                                            batch: input.shape.n, height: input.shape.h, width: input.shape.w, shape,
                                            workspace: ctx.workspace)
                return
            }
            convTranspose2dBackward(dx: inputGrad.data, dweight: ctx.store.grad(weight), dbias: ctx.store.grad(bias),
                                    dy: dy.data, x: input.data, weight: ctx.store.param(weight), batch: input.shape.n,
                                    height: input.shape.h, width: input.shape.w, shape, workspace: ctx.workspace)
        }
        return inputGrad
    }
}

final class BatchNorm2d {
    let channels: Int
    let weight: TensorView, bias: TensorView
    let runningMean: TensorView, runningVar: TensorView
    let counter: Int
    private(set) var output = Tensor()
    /// False once the output lives in the context's shared tensor (`shareOutput`).
    private(set) var keepsOutput = true
    private var saveMean: [Float], saveInvstd: [Float]
    private unowned var input: Tensor!

    init(_ name: String, _ channels: Int, store: ParameterStore) {
        self.channels = channels
        weight = store.addParameter(name + ".weight", [channels])
        bias = store.addParameter(name + ".bias", [channels])
        runningMean = store.addBuffer(name + ".running_mean", [channels])
        runningVar = store.addBuffer(name + ".running_var", [channels])
        counter = store.addCounter(name + ".num_batches_tracked")
        saveMean = [Float](repeating: 0, count: channels)
        saveInvstd = [Float](repeating: 0, count: channels)
        outScale = .allocate(capacity: channels); outShift = .allocate(capacity: channels)
    }

    func initialize(_ store: ParameterStore) {
        store.param(weight).update(repeating: 1, count: channels)
        store.param(bias).update(repeating: 0, count: channels)
        store.buffer(runningMean).update(repeating: 0, count: channels)
        store.buffer(runningVar).update(repeating: 1, count: channels)
        store.counters[counter] = 0
    }

    /// Writes the output into the context's shared tensor instead of a tensor of its own: for a
    /// BN whose only reader is the convolution `reader`, whose backward then computes the output
    /// again (`outputAffineReLU` or `rematerialize`). Saves one activation of this size per layer.
    func shareOutput(_ ctx: LayerContext, reader: Conv2d) {
        output = ctx.sharedActivation
        keepsOutput = false
        reader.inputBN = self
    }

    /// The input of the last training forward: what the output is computed again from.
    var recomputedFrom: Tensor { input }

    /// The last training forward's output as a function of its input: relu(x * scale + shift)
    /// per channel, with scale and shift as `batchNormTrainOutput` computes them.
    func outputAffineReLU(_ ctx: LayerContext) -> AffineReLU {
        precondition(fusedReLU, "the output of a BatchNorm without its ReLU is not recomputed")
        let w = ctx.store.param(weight), b = ctx.store.param(bias)
        for c in 0..<channels {
            let scale = w[c] * saveInvstd[c]
            outScale[c] = scale; outShift[c] = b[c] - saveMean[c] * scale
        }
        return AffineReLU(scale: outScale, shift: outShift)
    }
    private let outScale: UnsafeMutablePointer<Float>, outShift: UnsafeMutablePointer<Float>
    deinit { outScale.deallocate(); outShift.deallocate() }

    /// Recomputes the last training forward's output (bit for bit) where it is not kept.
    func rematerialize(_ ctx: LayerContext) {
        guard !keepsOutput else { return }
        let s = ctx.store
        output.reshape(input.shape)
        ctx.timed(.batchNorm, backward: true) {
            saveMean.withUnsafeBufferPointer { mean in
                saveInvstd.withUnsafeBufferPointer { invstd in
                    batchNormTrainOutput(output.data, input.data, weight: s.param(weight), bias: s.param(bias),
                                         saveMean: mean.baseAddress!, saveInvstd: invstd.baseAddress!,
                                         BatchNormShape(input.shape), relu: fusedReLU)
                }
            }
        }
    }

    /// With `relu`, the output is max(BN(x), 0) (a ReLU in place, fused), and `backward` takes
    /// the gradient after that ReLU.
    func forward(_ x: Tensor, _ ctx: LayerContext, relu: Bool = false) -> Tensor {
        ctx.timed(.batchNorm) { forwardBody(x, ctx, relu: relu) }
    }

    /// Whether the last forward applied the ReLU.
    private var fusedReLU = false

    private func forwardBody(_ x: Tensor, _ ctx: LayerContext, relu: Bool) -> Tensor {
        input = x
        fusedReLU = relu
        output.reshape(x.shape)
        let s = ctx.store
        if ctx.training {
            let sums = ctx.takeStatistics(of: x)
            ctx.bnScratch.withUnsafeMutableBufferPointer { scratch in
                saveMean.withUnsafeMutableBufferPointer { mean in
                    saveInvstd.withUnsafeMutableBufferPointer { invstd in
                        batchNormTrainForward(output.data, x.data, weight: s.param(weight), bias: s.param(bias),
                                              runningMean: s.buffer(runningMean), runningVar: s.buffer(runningVar),
                                              saveMean: mean.baseAddress!, saveInvstd: invstd.baseAddress!,
                                              BatchNormShape(x.shape), scratch: scratch.baseAddress!,
                                              reducer: ctx.statistics, relu: relu, partialSums: sums?.sums,
                                              parts: sums?.parts ?? 0)
                        globalCount = scratch[2 * channels]
                    }
                }
            }
            if globalCount > 0 { s.counters[counter] += 1 }
        } else {
            batchNormEvalForward(output.data, x.data, weight: s.param(weight), bias: s.param(bias),
                                 runningMean: s.buffer(runningMean), runningVar: s.buffer(runningVar), BatchNormShape(x.shape))
            if relu { reluForward(output.data, count: output.count) }
        }
        return output
    }

    /// Elements per channel over every replica, from the last training forward.
    private var globalCount = 0.0

    func backward(_ dy: Tensor, _ ctx: LayerContext) -> Tensor {
        ctx.timed(.batchNorm, backward: true) { backwardBody(dy, ctx) }
    }

    private func backwardBody(_ dy: Tensor, _ ctx: LayerContext) -> Tensor {
        let inputGrad = ctx.bnGrad
        inputGrad.reshape(input.shape)
        let s = ctx.store
        ctx.bnScratch.withUnsafeMutableBufferPointer { scratch in
            batchNormTrainBackward(dx: inputGrad.data, dweight: s.grad(weight), dbias: s.grad(bias), dy: dy.data,
                                   x: input.data, weight: s.param(weight), saveMean: saveMean, saveInvstd: saveInvstd,
                                   BatchNormShape(input.shape), count: globalCount, scratch: scratch.baseAddress!,
                                   reducer: ctx.statistics,
                                   reluBias: fusedReLU ? UnsafePointer(s.param(bias)) : nil)
        }
        return inputGrad
    }
}

/// The seed's conv3x3_bn: Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU (in place).
final class ConvBNReLU {
    let conv: Conv2d
    let bn: BatchNorm2d

    init(_ name: String, _ ci: Int, _ co: Int, store: ParameterStore) {
        conv = Conv2d(name + ".0", Conv2dShape(inC: ci, outC: co, kernel: 3, padding: 1), store: store)
        bn = BatchNorm2d(name + ".1", co, store: store)
        conv.feedsBatchNorm = true
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        conv.initialize(store, &rng); bn.initialize(store)
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        // The ReLU runs inside the BatchNorm's output loop (and its backward inside BN's backward).
        bn.forward(conv.forward(x, ctx), ctx, relu: true)
    }

    @discardableResult
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true) -> Tensor {
        conv.backward(bn.backward(dy, ctx), ctx, needInputGrad: needInputGrad)
    }
}

/// Two conv3x3_bn in a row, optionally after a MaxPool2d(2): the seed's first block and encoder_conv.
final class ConvBlock {
    let pooled: Bool
    let first: ConvBNReLU, second: ConvBNReLU
    /// The pooled input lives in the context's shared tensor: read at once by the first conv,
    /// pooled again before that conv's backward.
    private unowned var pool: Tensor!
    private unowned var input: Tensor!

    /// `names` are the state_dict prefixes of the two conv3x3_bn.
    init(_ names: (String, String), _ ci: Int, _ co: Int, pooled: Bool, store: ParameterStore) {
        self.pooled = pooled
        first = ConvBNReLU(names.0, ci, co, store: store)
        second = ConvBNReLU(names.1, co, co, store: store)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        first.initialize(store, &rng); second.initialize(store, &rng)
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x
        if pooled {
            pool = ctx.sharedActivation
            poolInput(ctx)
        }
        return second.forward(first.forward(pooled ? pool : x, ctx), ctx)
    }

    private func poolInput(_ ctx: LayerContext) {
        let x = input!
        pool.reshape(Shape(x.shape.n, x.shape.c, x.shape.h / 2, x.shape.w / 2))
        ctx.timed(.pool) {
            maxPool2Forward(pool.data, x.data, planes: x.shape.n * x.shape.c, height: x.shape.h, width: x.shape.w)
        }
    }

    /// Returns dx; a pooled block adds its dx into `skipGrad` (the gradient its input already
    /// has from an up block) and returns that.
    @discardableResult
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true, addingTo skipGrad: Tensor? = nil) -> Tensor {
        let g = second.bn.backward(dy, ctx)
        let g1 = first.bn.backward(second.conv.backward(g, ctx), ctx)
        if pooled { poolInput(ctx) }
        let d = first.conv.backward(g1, ctx, needInputGrad: needInputGrad || pooled)
        guard pooled, needInputGrad, let skipGrad else { return d }
        precondition(skipGrad.shape == input.shape)
        ctx.timed(.pool, backward: true) {
            maxPool2Backward(dx: skipGrad.data, dy: d.data, x: input.data, planes: input.shape.n * input.shape.c,
                             height: input.shape.h, width: input.shape.w, accumulate: true)
        }
        return skipGrad
    }
}

/// The seed's deconv: ConvTranspose2d(2, stride 2) on x, padded or cropped at the top/left to
/// the skip's size, concatenated after the skip, then two conv3x3_bn. The first convolution
/// reads the skip and the padded up-sampling where they lie: the concatenation is never stored.
final class UpBlock {
    let upsample: ConvTranspose2d
    let convs: ConvBlock
    let skipGrad = Tensor()
    private var top = 0, left = 0
    private var upShape = Shape(0, 0, 0, 0)
    private unowned var input: Tensor!
    private unowned var skip: Tensor!

    init(_ name: String, _ ci: Int, _ co: Int, store: ParameterStore) {
        upsample = ConvTranspose2d(name + ".upsample", ConvTranspose2dShape(inC: ci, outC: co), store: store)
        convs = ConvBlock((name + ".conv1", name + ".conv2"), ci, co, pooled: false, store: store)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        upsample.initialize(store, &rng); convs.initialize(store, &rng)
    }

    func forward(_ x: Tensor, skip: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x; self.skip = skip
        let first = convs.first
        let h = first.bn.forward(first.conv.forward(skip, concatenatedWith: upsampleAndPad(ctx), ctx), ctx, relu: true)
        return convs.second.forward(h, ctx)
    }

    /// The input up-sampled and padded or cropped to the skip's size, into the shared up-sampled
    /// tensor, which it returns: written there at once where the direct kernel pads (no crop),
    /// else up-sampled into the shared activation and copied.
    private func upsampleAndPad(_ ctx: LayerContext) -> Tensor {
        upShape = upsample.shape.outputShape(input.shape)
        // The seed pads width by the height difference and height by the width difference
        // (F.pad's order); the two are equal whenever the seed's own concatenation works.
        top = skip.shape.h - upShape.h; left = skip.shape.w - upShape.w
        let padded = ctx.sharedUpsampled
        padded.reshape(Shape(upShape.n, upShape.c, skip.shape.h, skip.shape.w))
        if upsample.shape.runsDirect && top >= 0 && left >= 0 {
            upsample.forward(input, ctx, into: padded, top: top, left: left)
            return padded
        }
        let up = upsample.forward(input, ctx)
        ctx.timed(.other) {
            padTopLeftForward(padded.data, up.data, planes: up.shape.n * up.shape.c, height: up.shape.h,
                              width: up.shape.w, top: top, left: left)
        }
        return padded
    }

    /// Returns (dx, dskip).
    func backward(_ dy: Tensor, _ ctx: LayerContext) -> (Tensor, Tensor) {
        let first = convs.first, second = convs.second
        let g = second.bn.backward(dy, ctx)
        let g1 = first.bn.backward(second.conv.backward(g, ctx), ctx)
        // The first conv's second input, as the forward made it; the shared activation then
        // holds nothing needed (the up-sampling is padded away) and takes that input's gradient.
        _ = upsampleAndPad(ctx)
        let upGrad = ctx.sharedActivation
        first.conv.backward(g1, ctx, into: skipGrad, upGrad)
        let paddedGrad = ctx.bnGrad
        paddedGrad.reshape(upShape)
        ctx.timed(.other, backward: true) {
            padTopLeftBackward(dx: paddedGrad.data, dy: upGrad.data, planes: upShape.n * upShape.c, height: upShape.h,
                               width: upShape.w, top: top, left: left)
        }
        return (upsample.backward(paddedGrad, ctx), skipGrad)
    }
}
