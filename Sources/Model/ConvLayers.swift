import Foundation
import Kernels

final class Conv2d {
    let shape: Conv2dShape
    let weight: TensorView
    let bias: TensorView?
    /// The last forward's output: its own tensor, or the context's shared one (`sharesOutput`).
    private(set) unowned var output: Tensor
    private let ownOutput = Tensor()
    fileprivate unowned var input: Tensor!
    /// The second half of a concatenated input (`forward(_:concatenatedWith:)`), as floats or
    /// as bf16 halves.
    fileprivate unowned var secondInput: Tensor?
    fileprivate unowned var secondInputBF16: HalfTensor?
    /// The BatchNorm whose output, not kept (`BatchNorm2d.shareOutput`), is this layer's input:
    /// the backward computes that output again from the BatchNorm's input, inside the weight
    /// gradient's copy of the rows where the kernels allow, else into the shared tensor first.
    unowned var inputBN: BatchNorm2d?
    /// The BatchNorm that reads the output next: a direct forward in training sums the output as
    /// it goes, and a bf16 one writes it only as that BatchNorm's kept bf16 input (`halvesOutput`).
    unowned var outputBN: BatchNorm2d?
    var feedsBatchNorm: Bool { outputBN != nil }

    /// dy as the bf16 halves that BatchNorm's backward wrote instead of floats, where it did
    /// (`BatchNorm2d.gradientHalves`: only after a bf16 forward that wrote halves itself).
    private func gradientHalves(_ dy: Tensor, _ ctx: LayerContext, bf16: Bool) -> HalfTensor? {
        guard let halves = outputBN?.gradientHalves else { return nil }
        precondition(bf16 && dy === ctx.bnGrad && halves.shape == dy.shape, "dy is its BatchNorm's gradient")
        return halves
    }

    /// Where the forward of an output of `shape` writes BatchNorm's sums, if it takes them.
    /// `halvesOnly`: the forward writes the output only as halves (`halvesOutput`).
    private func statistics(_ ctx: LayerContext, _ shape: Shape, split: Int? = nil,
                            halvesOnly: Bool) -> UnsafeMutablePointer<Double>? {
        guard ctx.training && feedsBatchNorm else { return nil }
        // Counted on the shape the kernels run, whose tuning fixes the bands.
        let tuned = self.shape.tuned(ctx.tuning)
        let parts = runsBF16(ctx, split: split)
            ? tuned.bf16StatisticsParts(batch: shape.n, height: shape.h, width: shape.w)
            : tuned.statisticsParts(batch: shape.n, height: shape.h, width: shape.w)
        return parts > 0 ? ctx.statisticsBuffer(for: output, parts: parts, channels: self.shape.outC,
                                                halvesOnly: halvesOnly) : nil
    }

    /// Where a bf16 training forward writes its output: only rounded, into its BatchNorm's kept
    /// input, which is what that BatchNorm reads and keeps (`output` is then not written).
    private func halvesOutput(_ ctx: LayerContext, split: Int? = nil) -> HalfTensor? {
        guard ctx.training, runsBF16(ctx, split: split), let outputBN else { return nil }
        outputBN.keptInput.reshape(output.shape)
        return outputBN.keptInput
    }

    init(_ name: String, _ shape: Conv2dShape, bias: Bool = true, store: ParameterStore) {
        self.shape = shape
        output = ownOutput
        weight = store.addParameter(name + ".weight", [shape.outC, shape.inC, shape.kernel, shape.kernel])
        self.bias = bias ? store.addParameter(name + ".bias", [shape.outC]) : nil
    }

    /// Places the output this layer keeps itself (not the shared one) in `storage`, which others share.
    func placeOwnOutput(in storage: Storage) { ownOutput.place(in: storage) }

    /// Whether this layer runs in bf16 (`LayerContext.precision`); `split`: a concatenation's first part.
    func runsBF16(_ ctx: LayerContext, split: Int? = nil) -> Bool {
        ctx.precision == .bf16 && shape.runsBF16(split: split)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        let fanIn = shape.inC * shape.kernel * shape.kernel
        initUniform(store.param(weight), count: weight.count, fanIn: fanIn, rng: &rng)
        if let bias { initUniform(store.param(bias), count: bias.count, fanIn: fanIn, rng: &rng) }
    }

    /// Whether the output goes to the context's shared convolution output: where its BatchNorm
    /// is its only reader and keeps what its backward needs itself (a bf16 copy in bf16
    /// training, nothing in evaluation).
    private func sharesOutput(_ ctx: LayerContext) -> Bool {
        feedsBatchNorm && (!ctx.training || ctx.precision == .bf16)
    }

    /// Points `output` at the tensor this forward writes.
    private func chooseOutput(_ ctx: LayerContext) {
        guard sharesOutput(ctx) else { output = ownOutput; return }
        output = ctx.sharedConvOutput
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x
        chooseOutput(ctx)
        output.reshape(shape.outputShape(x.shape))
        ctx.profile?.count(.conv, flops: 2 * shape.weightCount * output.shape.count / shape.outC)
        let halves = halvesOutput(ctx), sums = statistics(ctx, output.shape, halvesOnly: halves != nil)
        let bf16 = runsBF16(ctx)
        ctx.timed(.conv) {
            if bf16 {
                // The input as its BatchNorm wrote it: floats, or the paired planes made here of them.
                let pairs = inputBN?.outputPairs.map { UnsafePointer($0.words) }
                conv2dForwardBF16(halves == nil ? output.data : nil, yBF16: halves?.data, x.data, aPairs: pairs,
                                  weight: ctx.store.param(weight), bias: bias.map { ctx.store.param($0) },
                                  batch: x.shape.n, height: x.shape.h,
                                  width: x.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace, statistics: sums)
                return
            }
            conv2dForward(output.data, x.data, weight: ctx.store.param(weight), bias: bias.map { ctx.store.param($0) },
                          batch: x.shape.n, height: x.shape.h, width: x.shape.w, shape.tuned(ctx.tuning),
                          workspace: ctx.workspace, statistics: sums)
        }
        return output
    }

    /// Accumulates parameter gradients; returns dx unless the input needs none.
    @discardableResult
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true) -> Tensor {
        let inputGrad = ctx.convGrad
        ctx.profile?.count(.conv, flops: (needInputGrad ? 4 : 2) * shape.weightCount * dy.shape.count / shape.outC)
        var x = input!, affine: AffineReLU? = nil, xBF16: UnsafePointer<UInt16>? = nil, keptShape: Shape?
        let bf16 = runsBF16(ctx)
        if let bn = inputBN {
            // The bf16 weight gradient always reads its input through its own copies, from the
            // BatchNorm's bf16 halves where it kept them.
            if bf16, let kept = bn.keptBF16Input() {
                affine = bn.outputAffineReLU(ctx)
                (xBF16, keptShape) = kept
            } else if shape.unfoldsInputInBackward || bf16 {
                affine = bn.outputAffineReLU(ctx)
                x = bn.recomputedFrom(ctx)
            } else {
                bn.rematerialize(ctx)
            }
        }
        // The input's shape from what was kept or recomputed: a shared input tensor may have
        // been reshaped by the layers after this one.
        let xShape = keptShape ?? x.shape
        if needInputGrad { inputGrad.reshape(xShape) }
        let dyHalves = gradientHalves(dy, ctx, bf16: bf16)
        ctx.timed(.conv, backward: true) {
            if bf16 {
                conv2dBackwardBF16(dxA: needInputGrad ? inputGrad.data : nil, dweight: ctx.store.grad(weight),
                                   dbias: bias.map { ctx.store.grad($0) }, dy: dyHalves == nil ? dy.data : nil,
                                   dyBF16: dyHalves?.data, x.data, aBF16: xBF16,
                                   weight: ctx.store.param(weight), batch: xShape.n, height: xShape.h,
                                   width: xShape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace,
                                   inputAffineReLU: affine)
                return
            }
            conv2dBackward(dx: needInputGrad ? inputGrad.data : nil, dweight: ctx.store.grad(weight),
                           dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, x: x.data,
                           weight: ctx.store.param(weight), batch: x.shape.n, height: x.shape.h,
                           width: x.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace, inputAffineReLU: affine)
        }
        return inputGrad
    }
}

extension Conv2d {
    /// conv(torch.cat([a, b], 1)) without the concatenation in memory (3x3 "same" kernels).
    func forward(_ a: Tensor, concatenatedWith b: Tensor, _ ctx: LayerContext) -> Tensor {
        forwardConcatenated(a, b, nil, secondShape: b.shape, ctx)
    }

    /// `forward(_:concatenatedWith:)` with b given as bf16 halves (a bf16 layer only: it rounds b
    /// to those values itself).
    func forward(_ a: Tensor, concatenatedWithBF16 b: HalfTensor, _ ctx: LayerContext) -> Tensor {
        precondition(runsBF16(ctx, split: a.shape.c))
        return forwardConcatenated(a, nil, b, secondShape: b.shape, ctx)
    }

    /// The concatenation's second part is `b` or its halves `bBF16`.
    private func forwardConcatenated(_ a: Tensor, _ b: Tensor?, _ bBF16: HalfTensor?, secondShape: Shape,
                                     _ ctx: LayerContext) -> Tensor {
        precondition(a.shape.n == secondShape.n && a.shape.h == secondShape.h && a.shape.w == secondShape.w)
        precondition(a.shape.c + secondShape.c == shape.inC)
        input = a; secondInput = b; secondInputBF16 = bBF16
        chooseOutput(ctx)
        output.reshape(Shape(a.shape.n, shape.outC, a.shape.h, a.shape.w))
        ctx.profile?.count(.conv, flops: 2 * shape.weightCount * output.shape.count / shape.outC)
        let halves = halvesOutput(ctx, split: a.shape.c)
        let sums = statistics(ctx, output.shape, split: a.shape.c, halvesOnly: halves != nil)
        let bf16 = runsBF16(ctx, split: a.shape.c)
        ctx.timed(.conv) {
            if bf16 {
                conv2dForwardBF16(halves == nil ? output.data : nil, yBF16: halves?.data, a.data,
                                  channelsA: a.shape.c, b.map { UnsafePointer($0.data) },
                                  bBF16: bBF16.map { UnsafePointer($0.data) }, weight: ctx.store.param(weight),
                                  bias: bias.map { ctx.store.param($0) }, batch: a.shape.n, height: a.shape.h,
                                  width: a.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace, statistics: sums)
                return
            }
            conv2dForwardConcat(output.data, a.data, channelsA: a.shape.c, b!.data, weight: ctx.store.param(weight),
                                bias: bias.map { ctx.store.param($0) }, batch: a.shape.n, height: a.shape.h,
                                width: a.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace, statistics: sums)
        }
        return output
    }

    /// The backward of `forward(_:concatenatedWith:)` (either form): parameter gradients
    /// accumulated, the input gradient written to `da` and `db`, reshaped to the two inputs.
    func backward(_ dy: Tensor, _ ctx: LayerContext, into da: Tensor, _ db: Tensor) {
        let a = input!, b = secondInput, bBF16 = secondInputBF16
        da.reshape(a.shape); db.reshape(b?.shape ?? bBF16!.shape)
        ctx.profile?.count(.conv, flops: 4 * shape.weightCount * dy.shape.count / shape.outC)
        let bf16 = runsBF16(ctx, split: a.shape.c), dyHalves = gradientHalves(dy, ctx, bf16: bf16)
        ctx.timed(.conv, backward: true) {
            if bf16 {
                conv2dBackwardBF16(dxA: da.data, dxB: db.data, dweight: ctx.store.grad(weight),
                                   dbias: bias.map { ctx.store.grad($0) }, dy: dyHalves == nil ? dy.data : nil,
                                   dyBF16: dyHalves?.data, a.data, channelsA: a.shape.c,
                                   b.map { UnsafePointer($0.data) }, bBF16: bBF16.map { UnsafePointer($0.data) },
                                   weight: ctx.store.param(weight), batch: a.shape.n, height: a.shape.h,
                                   width: a.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace)
                return
            }
            conv2dBackwardConcat(da: da.data, db: db.data, dweight: ctx.store.grad(weight),
                                 dbias: bias.map { ctx.store.grad($0) }, dy: dy.data, a.data, channelsA: a.shape.c,
                                 b!.data, weight: ctx.store.param(weight), batch: a.shape.n, height: a.shape.h,
                                 width: a.shape.w, shape.tuned(ctx.tuning), workspace: ctx.workspace)
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

    /// The bf16 forward written into `y` as bf16 halves, after `top` rows and `left` columns of zeros.
    func forward(_ x: Tensor, _ ctx: LayerContext, intoBF16 y: HalfTensor, top: Int, left: Int) {
        precondition(ctx.precision == .bf16 && shape.runsBF16)
        input = x
        ctx.profile?.count(.convTranspose, flops: 2 * shape.weightCount * x.shape.count / shape.inC)
        ctx.timed(.convTranspose) {
            convTranspose2dForwardBF16(nil, yBF16: y.data, x.data, weight: ctx.store.param(weight),
                                       bias: ctx.store.param(bias), batch: x.shape.n, height: x.shape.h,
                                       width: x.shape.w, shape, top: top, left: left, workspace: ctx.workspace)
        }
    }

    /// The forward written into `y`, after `top` rows and `left` columns of zeros where given
    /// (`convTranspose2dForwardPadded`, the direct kernel only, or the bf16 one).
    func forward(_ x: Tensor, _ ctx: LayerContext, into y: Tensor, top: Int = 0, left: Int = 0) {
        input = x
        ctx.profile?.count(.convTranspose, flops: 2 * shape.weightCount * x.shape.count / shape.inC)
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
        ctx.profile?.count(.convTranspose, flops: 4 * shape.weightCount * input.shape.count / shape.inC)
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
