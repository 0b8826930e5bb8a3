import Kernels

/// The seed's UNet (docs/design.md, section 1): conv1, three pooled encoder blocks, three up blocks, and a
/// 3x3 output convolution. Base width, input channels and classes are configurable.
public final class UNet: SegmentationModel {
    public let config: ModelConfig
    public let store = ParameterStore()
    public let context: LayerContext
    let conv1: ConvBlock
    let encoders: [ConvBlock]
    let decoders: [UpBlock]
    let out: Conv2d

    public init(_ config: ModelConfig = ModelConfig(), seed: UInt64 = 0) {
        precondition(config.kind == .unet)
        self.config = config
        let c = config.widths
        let store = self.store
        context = LayerContext(store: store)
        conv1 = ConvBlock(("conv1.0", "conv1.1"), config.inChannels, c[0], pooled: false, store: store)
        encoders = (1...3).map { i in
            ConvBlock(("conv\(i + 1).1", "conv\(i + 1).2"), c[i - 1], c[i], pooled: true, store: store)
        }
        encoderParameters = 0..<store.parameters.count
        decoders = (1...3).map { i in UpBlock("deconv\(i)", c[4 - i], c[3 - i], store: store) }
        out = Conv2d("out", Conv2dShape(inC: c[0], outC: config.classes, kernel: 3, padding: 1), store: store)
        // The first conv3x3_bn of every block is read only by the second; the last up block's
        // output only by `out`. Their outputs are recomputed in the backward instead of kept.
        for block in [conv1] + encoders + decoders.map(\.convs) {
            block.first.bn.shareOutput(context, reader: block.second.conv)
        }
        decoders[2].convs.second.bn.shareOutput(context, reader: out)
        // An up-sampled tensor is copied into the concatenation at once.
        for d in decoders { d.upsample.output = context.sharedActivation }
        store.seal()
        context.bnScratch = [Double](repeating: 0, count: 2 * (c.max() ?? 0) + 1)
        initialize(seed: seed)
    }

    /// PyTorch's default initialization, in module order, from our own seeded generator.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        conv1.initialize(store, &rng)
        for e in encoders { e.initialize(store, &rng) }
        for d in decoders { d.initialize(store, &rng) }
        out.initialize(store, &rng)
        store.resetOptimizer()
    }

    /// conv1 to conv4.
    public let encoderParameters: Range<Int>

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.c == config.inChannels, "input has \(x.shape.c) channels, the model \(config.inChannels)")
        let x1 = conv1.forward(x, context)
        let x2 = encoders[0].forward(x1, context)
        let x3 = encoders[1].forward(x2, context)
        var h = encoders[2].forward(x3, context)
        h = decoders[0].forward(h, skip: x3, context)
        h = decoders[1].forward(h, skip: x2, context)
        h = decoders[2].forward(h, skip: x1, context)
        return out.forward(h, context)
    }

    /// After each block, the gradients from its first parameter on are final (GradientBuckets).
    public func backward(_ dlogits: Tensor) {
        let dout = out.backward(dlogits, context)
        gradientsFinal(from: out.weight.offset)
        let (d3, skip1) = decoders[2].backward(dout, context)
        gradientsFinal(from: decoders[2].upsample.weight.offset)
        let (d2, skip2) = decoders[1].backward(d3, context)
        gradientsFinal(from: decoders[1].upsample.weight.offset)
        let (d1, skip3) = decoders[0].backward(d2, context)
        gradientsFinal(from: decoders[0].upsample.weight.offset)
        // Each encoder level's output also fed an up block: its gradient is the sum of both
        // paths, the pooling's added into the up block's.
        let g3 = encoders[2].backward(d1, context, addingTo: skip3)
        gradientsFinal(from: encoders[2].first.conv.weight.offset)
        let g2 = encoders[1].backward(g3, context, addingTo: skip2)
        gradientsFinal(from: encoders[1].first.conv.weight.offset)
        let g1 = encoders[0].backward(g2, context, addingTo: skip1)
        gradientsFinal(from: encoders[0].first.conv.weight.offset)
        conv1.backward(g1, context, needInputGrad: false)
    }
}

/// a += b, elementwise over the compute threads.
func add(into a: Tensor, _ b: Tensor) {
    precondition(a.shape == b.shape)
    let x = a.data, y = b.data
    parallelChunks(a.count) { _, range in for i in range { x[i] += y[i] } }
}
