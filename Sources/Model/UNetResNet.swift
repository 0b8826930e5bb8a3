import Kernels

/// torchvision's initialization of a ResNet convolution: kaiming_normal_(mode "fan_out",
/// nonlinearity "relu"), a normal of standard deviation sqrt(2 / (outC * k * k)).
func initKaimingFanOut(_ conv: Conv2d, _ store: ParameterStore, _ rng: inout SplitMix64) {
    let s = conv.shape
    let std = (2 / Float(s.outC * s.kernel * s.kernel)).squareRoot()
    let p = store.param(conv.weight)
    for i in 0..<conv.weight.count { p[i] = std * rng.normal() }
}

/// torchvision's BasicBlock: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the input
/// (through a 1x1 stride-s conv and a BN where the shape changes), then ReLU.
final class BasicBlock {
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    let downsample: (conv: Conv2d, bn: BatchNorm2d)?
    /// This block's input gradient: one of the two tensors that consecutive blocks alternate
    /// between, since each is read only by the block before it.
    let inputGrad: Tensor
    private unowned var input: Tensor!
    private unowned var output: Tensor!

    init(_ name: String, _ ci: Int, _ co: Int, stride: Int, inputGrad: Tensor, store: ParameterStore) {
        conv1 = Conv2d(name + ".conv1", Conv2dShape(inC: ci, outC: co, kernel: 3, stride: stride, padding: 1),
                       bias: false, store: store)
        bn1 = BatchNorm2d(name + ".bn1", co, store: store)
        conv2 = Conv2d(name + ".conv2", Conv2dShape(inC: co, outC: co, kernel: 3, padding: 1), bias: false,
                       store: store)
        bn2 = BatchNorm2d(name + ".bn2", co, store: store)
        if stride != 1 || ci != co {
            downsample = (Conv2d(name + ".downsample.0", Conv2dShape(inC: ci, outC: co, kernel: 1, stride: stride),
                                 bias: false, store: store),
                          BatchNorm2d(name + ".downsample.1", co, store: store))
        } else {
            downsample = nil
        }
        self.inputGrad = inputGrad
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        initKaimingFanOut(conv1, store, &rng); bn1.initialize(store)
        initKaimingFanOut(conv2, store, &rng); bn2.initialize(store)
        if let downsample { initKaimingFanOut(downsample.conv, store, &rng); downsample.bn.initialize(store) }
    }

    func forward(_ x: Tensor, _ ctx: LayerContext) -> Tensor {
        input = x
        let h = bn1.forward(conv1.forward(x, ctx), ctx, relu: true)
        // The sum is formed in bn2's output, which bn2's backward (without a fused ReLU) never reads.
        let y = bn2.forward(conv2.forward(h, ctx), ctx)
        let identity = downsample.map { $0.bn.forward($0.conv.forward(x, ctx), ctx) } ?? x
        ctx.profile?.count(.other, floats: 3 * y.count)
        ctx.timed(.other) {
            let out = y.data, id = identity.data
            parallelChunks(y.count) { _, range in for i in range { out[i] = max(out[i] + id[i], 0) } }
        }
        output = y
        return y
    }

    /// Consumes `dy` (the ReLU's mask is applied to it in place); returns `inputGrad`.
    func backward(_ dy: Tensor, _ ctx: LayerContext, needInputGrad: Bool = true) -> Tensor {
        ctx.profile?.count(.other, floats: 3 * dy.count)
        ctx.timed(.other, backward: true) {
            let g = dy.data, y = output.data
            parallelChunks(dy.count) { _, range in for i in range where y[i] <= 0 { g[i] = 0 } }
        }
        let g = bn2.backward(dy, ctx)
        let main = conv1.backward(bn1.backward(conv2.backward(g, ctx), ctx), ctx)
        inputGrad.reshape(input.shape)
        ctx.profile?.count(.other, floats: 2 * main.count)
        ctx.timed(.other, backward: true) { inputGrad.data.update(from: main.data, count: main.count) }
        if let downsample {
            add(into: inputGrad, downsample.conv.backward(downsample.bn.backward(dy, ctx), ctx))
        } else {
            add(into: inputGrad, dy)
        }
        return inputGrad
    }
}

/// The seed's out_conv: ConvTranspose2d(2, stride 2), padded or cropped at the top/left to the
/// input image's size, conv3x3_bn, then a 1x1 convolution to the classes. No skip is concatenated.
final class OutStage {
    let upsample: ConvTranspose2d
    let conv: ConvBNReLU
    let final: Conv2d
    let padded = Tensor()
    private var top = 0, left = 0
    private var upShape = Shape(0, 0, 0, 0)

    init(_ name: String, _ ci: Int, _ co: Int, classes: Int, store: ParameterStore) {
        upsample = ConvTranspose2d(name + ".upsample", ConvTranspose2dShape(inC: ci, outC: co), store: store)
        conv = ConvBNReLU(name + ".conv", ci, co, store: store)
        final = Conv2d(name + ".final", Conv2dShape(inC: co, outC: classes, kernel: 1), store: store)
    }

    func initialize(_ store: ParameterStore, _ rng: inout SplitMix64) {
        upsample.initialize(store, &rng); conv.initialize(store, &rng); final.initialize(store, &rng)
    }

    func forward(_ x: Tensor, height: Int, width: Int, _ ctx: LayerContext) -> Tensor {
        let up = upsample.forward(x, ctx)
        upShape = up.shape
        top = height - up.shape.h; left = width - up.shape.w
        padded.reshape(Shape(up.shape.n, up.shape.c, height, width))
        ctx.profile?.count(.other, floats: up.count + padded.count)
        ctx.timed(.other) {
            padTopLeftForward(padded.data, up.data, planes: up.shape.n * up.shape.c, height: up.shape.h,
                              width: up.shape.w, top: top, left: left)
        }
        return final.forward(conv.forward(padded, ctx), ctx)
    }

    func backward(_ dy: Tensor, _ ctx: LayerContext) -> Tensor {
        let d = conv.backward(final.backward(dy, ctx), ctx)
        let up = upShape
        // The BN gradient is free here: its reader, the conv's backward, has run.
        let paddedGrad = ctx.bnGrad
        paddedGrad.reshape(up)
        ctx.profile?.count(.other, floats: 2 * paddedGrad.count)
        ctx.timed(.other, backward: true) {
            padTopLeftBackward(dx: paddedGrad.data, dy: d.data, planes: up.n * up.c, height: up.h, width: up.w,
                               top: top, left: left)
        }
        return upsample.backward(paddedGrad, ctx)
    }
}

/// The seed's UNetResnet (docs/design.md, section 1): torchvision's ResNet-18 as the encoder (its stem
/// conv replaced for other than 3 input channels; the seed's forward skips the max-pool, and the
/// classifier `fc` is carried, unused, so that state_dicts move both ways), three up blocks
/// joined to layer3, layer2 and layer1, and the output stage.
public final class UNetResNet: SegmentationModel {
    public let config: ModelConfig
    public let store = ParameterStore()
    public let context: LayerContext
    let stem: Conv2d, stemBN: BatchNorm2d
    /// layer1 to layer4, two blocks each.
    let layers: [[BasicBlock]]
    let fcWeight: TensorView, fcBias: TensorView
    let decoders: [UpBlock]
    let out: OutStage
    public let encoderParameters: Range<Int>
    /// The two input-gradient tensors the residual blocks alternate between.
    private let blockGrads = [Tensor(), Tensor()]

    public static let imageNetClasses = 1000

    public init(_ config: ModelConfig = ModelConfig(.unetResnet), seed: UInt64 = 0) {
        precondition(config.kind == .unetResnet)
        self.config = config
        let w = config.widths, store = self.store
        context = LayerContext(store: store)
        stem = Conv2d("encoder.conv1",
                      Conv2dShape(inC: config.inChannels, outC: w[0], kernel: 7, stride: 2, padding: 3),
                      bias: false, store: store)
        stemBN = BatchNorm2d("encoder.bn1", w[0], store: store)
        var blocks: [[BasicBlock]] = [], k = 0
        let blockGrads = self.blockGrads
        for level in 0..<4 {
            let ci = level == 0 ? w[0] : w[level - 1]
            blocks.append((0..<2).map { b in
                k += 1
                return BasicBlock("encoder.layer\(level + 1).\(b)", b == 0 ? ci : w[level], w[level],
                                  stride: level > 0 && b == 0 ? 2 : 1, inputGrad: blockGrads[k % 2], store: store)
            })
        }
        layers = blocks
        fcWeight = store.addBuffer("encoder.fc.weight", [Self.imageNetClasses, w[3]])
        fcBias = store.addBuffer("encoder.fc.bias", [Self.imageNetClasses])
        encoderParameters = 0..<store.parameters.count
        decoders = (1...3).map { i in UpBlock("deconv\(i)", w[4 - i], w[3 - i], store: store) }
        out = OutStage("out", w[0], w[0], classes: config.classes, store: store)
        // BN outputs read only by the next convolution are recomputed in the backward, not kept.
        for block in layers.joined() { block.bn1.shareOutput(context, reader: block.conv2) }
        for d in decoders { d.convs.first.bn.shareOutput(context, reader: d.convs.second.conv) }
        out.conv.bn.shareOutput(context, reader: out.final)
        // An up-sampled tensor is copied into the concatenation (or the padded output) at once.
        for d in decoders { d.upsample.output = context.sharedActivation }
        out.upsample.output = context.sharedActivation
        store.seal()
        context.bnScratch = [Double](repeating: 0, count: 2 * w[3] + 1)
        initialize(seed: seed)
    }

    /// torchvision's resnet18 initialization for the encoder (a replaced stem conv gets
    /// PyTorch's Conv2d default, as the seed's does), PyTorch's defaults for the rest.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        if config.inChannels == 3 { initKaimingFanOut(stem, store, &rng) } else { stem.initialize(store, &rng) }
        stemBN.initialize(store)
        for block in layers.joined() { block.initialize(store, &rng) }
        // nn.Linear's default: weight and bias uniform in +-1/sqrt(in_features).
        let fanIn = config.widths[3]
        initUniform(store.buffer(fcWeight), count: fcWeight.count, fanIn: fanIn, rng: &rng)
        initUniform(store.buffer(fcBias), count: fcBias.count, fanIn: fanIn, rng: &rng)
        for d in decoders { d.initialize(store, &rng) }
        out.initialize(store, &rng)
        store.resetOptimizer()
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.c == config.inChannels, "input has \(x.shape.c) channels, the model \(config.inChannels)")
        var h = stemBN.forward(stem.forward(x, context), context, relu: true)
        var skips: [Tensor] = []
        for blocks in layers {
            for block in blocks { h = block.forward(h, context) }
            skips.append(h)
        }
        h = decoders[0].forward(h, skip: skips[2], context)
        h = decoders[1].forward(h, skip: skips[1], context)
        h = decoders[2].forward(h, skip: skips[0], context)
        return out.forward(h, height: x.shape.h, width: x.shape.w, context)
    }

    /// After each block, the gradients from its first parameter on are final (GradientBuckets).
    public func backward(_ dlogits: Tensor) {
        var d = out.backward(dlogits, context)
        gradientsFinal(from: out.upsample.weight.offset)
        // deconv3 first: skipGrads[level] is then the gradient of layer(level + 1)'s output.
        var skipGrads: [Tensor] = []
        for decoder in decoders.reversed() {
            let (dx, dskip) = decoder.backward(d, context)
            d = dx; skipGrads.append(dskip)
            gradientsFinal(from: decoder.upsample.weight.offset)
        }
        // A block uses its dy to the end, while its convolutions write the shared conv gradient
        // that deconv1's dx lives in: layer4.1 (block 8, writing blockGrads[0]) gets a copy.
        let top = blockGrads[1]
        top.reshape(d.shape)
        context.profile?.count(.other, floats: 2 * d.count)
        context.timed(.other, backward: true) { top.data.update(from: d.data, count: d.count) }
        d = top
        // Each of layer1..layer3's outputs also fed an up block: its gradient is the sum of both.
        for level in stride(from: 3, through: 0, by: -1) {
            if level < 3 {
                context.profile?.count(.other, floats: 3 * d.count)
                context.timed(.other, backward: true) { add(into: d, skipGrads[level]) }
            }
            for block in layers[level].reversed() {
                d = block.backward(d, context)
                gradientsFinal(from: block.conv1.weight.offset)
            }
        }
        stem.backward(stemBN.backward(d, context), context, needInputGrad: false)
    }
}
