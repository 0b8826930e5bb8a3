import Foundation
import Kernels

/// conv3x3_bn (docs/design.md, section 1): Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU (in place).
final class ConvBNReLU {
    let conv: Conv2d
    let bn: BatchNorm2d

    init(_ name: String, _ ci: Int, _ co: Int, store: ParameterStore) {
        conv = Conv2d(name + ".0", Conv2dShape(inC: ci, outC: co, kernel: 3, padding: 1), store: store)
        bn = BatchNorm2d(name + ".1", co, store: store)
        conv.outputBN = bn
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

/// Two conv3x3_bn in a row, optionally after a MaxPool2d(2): the first block and encoder_conv
/// (docs/design.md, section 1).
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
        ctx.profile?.count(.pool, floats: x.count + pool.count)
        ctx.timed(.pool) {
            maxPool2Forward(pool.data, x.data, planes: x.shape.n * x.shape.c, height: x.shape.h, width: x.shape.w)
        }
    }

    /// Returns dx; a pooled block adds its dx into `skipGrad` (the gradient its input already
    /// has from an up block) and returns that.
    @discardableResult
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true,
                  addingTo skipGrad: Tensor? = nil) -> Tensor {
        let g = second.bn.backward(dy, ctx)
        let g1 = first.bn.backward(second.conv.backward(g, ctx), ctx)
        if pooled { poolInput(ctx) }
        let d = first.conv.backward(g1, ctx, needInputGrad: needInputGrad || pooled)
        guard pooled, needInputGrad, let skipGrad else { return d }
        precondition(skipGrad.shape == input.shape)
        // dy and x read, dx added to: read and written.
        ctx.profile?.count(.pool, floats: d.count + 3 * input.count)
        ctx.timed(.pool, backward: true) {
            maxPool2Backward(dx: skipGrad.data, dy: d.data, x: input.data, planes: input.shape.n * input.shape.c,
                             height: input.shape.h, width: input.shape.w, accumulate: true)
        }
        return skipGrad
    }
}

/// deconv (docs/design.md, section 1): ConvTranspose2d(2, stride 2) on x, padded or cropped at the top/left to
/// the skip's size, concatenated after the skip, then two conv3x3_bn. The first convolution
/// reads the skip and the padded up-sampling where they lie: the concatenation is never stored.
final class UpBlock {
    let upsample: ConvTranspose2d
    let convs: ConvBlock
    /// The skip's gradient, written by the first convolution's backward and read until the
    /// encoder's. Its storage holds, before that, what nothing reads after this block's first
    /// BatchNorm's backward: that BatchNorm's input (the first convolution's output where it
    /// keeps its own, in float32 training) or both BatchNorms' bf16 copies of theirs (bf16
    /// training), one after the other.
    let skipGrad = Tensor()
    /// In bf16 training, the padded up-sampling as bf16 halves, kept from the forward for the
    /// first convolution's backward where `keepsUpsampling`.
    private let keptUpsampling = HalfTensor()
    /// Whether the bf16 up-sampling is kept rather than computed again before the backward:
    /// where that would cost 64 or more multiply-adds (input channels) per bf16 half kept. The
    /// UNet's full-resolution block (32 input channels, 79 MB of halves at 394) computes it
    /// again; keeping the two others costs 59 MB there.
    private var keepsUpsampling: Bool { upsample.shape.inC >= 64 }
    private var top = 0, left = 0
    private var upShape = Shape(0, 0, 0, 0)
    private unowned var input: Tensor!
    private unowned var skip: Tensor!

    init(_ name: String, _ ci: Int, _ co: Int, store: ParameterStore) {
        upsample = ConvTranspose2d(name + ".upsample", ConvTranspose2dShape(inC: ci, outC: co), store: store)
        convs = ConvBlock((name + ".conv1", name + ".conv2"), ci, co, pooled: false, store: store)
        convs.first.conv.placeOwnOutput(in: skipGrad.storage)
        convs.first.bn.keptInput.place(in: skipGrad.storage)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        upsample.initialize(store, &rng); convs.initialize(store, &rng)
    }

    func forward(_ x: Tensor, skip: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x; self.skip = skip
        let first = convs.first
        let y = upsamplesToBF16(ctx)
            ? first.conv.forward(skip, concatenatedWithBF16: upsampleAndPadBF16(ctx), ctx)
            : first.conv.forward(skip, concatenatedWith: upsampleAndPad(ctx), ctx)
        // The second convolution's output has the first's shape.
        convs.second.bn.keptInput.place(in: skipGrad.storage, at: y.count * MemoryLayout<UInt16>.stride)
        return convs.second.forward(first.bn.forward(y, ctx, relu: true), ctx)
    }

    /// Whether the up-sampling reaches the first convolution as bf16 halves: where that
    /// convolution runs in bf16, it rounds the up-sampling to those values itself, and the bf16
    /// up-sampling writes them padded (the skip is never smaller).
    private func upsamplesToBF16(_ ctx: LayerContext) -> Bool {
        let up = upsample.shape.outputShape(input.shape)
        return ctx.precision == .bf16 && upsample.shape.runsBF16 && convs.first.conv.runsBF16(ctx, split: skip.shape.c)
            && skip.shape.h >= up.h && skip.shape.w >= up.w
    }

    /// The up-sampling's shape and its padding (negative: cropping) to the skip's size; returns
    /// the padded shape.
    private func placeUpsampling() -> Shape {
        upShape = upsample.shape.outputShape(input.shape)
        // The seed pads width by the height difference and height by the width difference
        // (F.pad's order); the two are equal whenever the specified concatenation works.
        top = skip.shape.h - upShape.h; left = skip.shape.w - upShape.w
        return Shape(upShape.n, upShape.c, skip.shape.h, skip.shape.w)
    }

    /// `upsampleAndPad` as bf16 halves, which it returns: kept until the backward where
    /// `keepsUpsampling` in training, else in the shared tensor of halves.
    private func upsampleAndPadBF16(_ ctx: LayerContext) -> HalfTensor {
        let padded = ctx.training && keepsUpsampling ? keptUpsampling : ctx.sharedUpsampledBF16
        padded.reshape(placeUpsampling())
        upsample.forward(input, ctx, intoBF16: padded, top: top, left: left)
        return padded
    }

    /// The input up-sampled and padded or cropped to the skip's size, into the shared up-sampled
    /// tensor, which it returns: written there at once where nothing is padded or the direct
    /// kernel pads (no crop), else up-sampled into the shared activation and copied.
    private func upsampleAndPad(_ ctx: LayerContext) -> Tensor {
        let padded = ctx.sharedUpsampled
        padded.reshape(placeUpsampling())
        if (top == 0 && left == 0) || (upsample.shape.runsDirect && top >= 0 && left >= 0) {
            upsample.forward(input, ctx, into: padded, top: top, left: left)
            return padded
        }
        let up = upsample.forward(input, ctx)
        ctx.profile?.count(.other, floats: up.count + padded.count)
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
        // The first conv's second input as the forward made it, kept or made again; the shared
        // activation then holds nothing needed (the up-sampling is padded away) and takes that
        // input's gradient.
        if !upsamplesToBF16(ctx) {
            _ = upsampleAndPad(ctx)
        } else if !keepsUpsampling {
            _ = upsampleAndPadBF16(ctx)
        }
        let upGrad = ctx.sharedActivation
        first.conv.backward(g1, ctx, into: skipGrad, upGrad)
        // Nothing padded or cropped: the up-sampling's gradient is that input's, as it lies.
        if top == 0 && left == 0 { return (upsample.backward(upGrad, ctx), skipGrad) }
        let paddedGrad = ctx.bnGrad
        paddedGrad.reshape(upShape)
        ctx.profile?.count(.other, floats: 2 * paddedGrad.count)
        ctx.timed(.other, backward: true) {
            padTopLeftBackward(dx: paddedGrad.data, dy: upGrad.data, planes: upShape.n * upShape.c, height: upShape.h,
                               width: upShape.w, top: top, left: left)
        }
        return (upsample.backward(paddedGrad, ctx), skipGrad)
    }
}
