import Foundation
import Kernels

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
    /// The last training forward's input shape (the input may live in a shared tensor).
    private var inputShape = Shape(0, 0, 0, 0)
    /// In bf16 training, an input in the context's shared convolution output is rounded to bf16
    /// (as an autocast convolution's output is): the output is computed from the rounded values,
    /// kept here at half the size (a bf16 convolution writes them here itself, and its float32
    /// output is never stored). The backward reads them here, as does a bf16 reader's weight
    /// gradient (`keptBF16Input`); only a float32 reader that recomputes the output needs them as
    /// floats (`recomputedFrom`). The owner may place the halves in a storage it shares
    /// (`keptInput.place(in:at:)`).
    private var keepsBF16Input = false
    let keptInput = HalfTensor()
    /// Whether the last training forward read its input as the halves a bf16 convolution wrote
    /// there. That convolution's backward, which rounds its dy to bf16 anyway, is then what reads
    /// this layer's input gradient: the backward writes it only as bf16 halves, at half the
    /// bytes, into the context's `bnGradBF16` (`gradientHalves`).
    private var inputFromHalves = false
    /// Where the last backward wrote the input gradient only as bf16 halves: that tensor (the
    /// tensor it returned then holds only the shape); nil where it wrote floats.
    private(set) var gradientHalves: HalfTensor?
    /// The convolution that reads the shared output (`shareOutput`).
    private weak var reader: Conv2d?
    /// Where the last forward wrote its output only as the paired planes its bf16 reader makes
    /// of it: in bf16 training, from the kept halves (`batchNormTrainOutputPairs`), into the
    /// context's `sharedActivationPairs` (the tensor it returned then holds only the shape); nil
    /// where it wrote floats.
    private(set) var outputPairs: HalfTensor?

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
        self.reader = reader
    }

    /// The last training forward's input as its kept bf16 upper halves, and its shape; nil where
    /// it was not kept in bf16.
    func keptBF16Input() -> (UnsafePointer<UInt16>, Shape)? {
        keepsBF16Input ? (UnsafePointer(keptInput.data), inputShape) : nil
    }

    /// The last training forward's input as floats, what the output is computed again from: the
    /// tensor itself, or its bf16 copy expanded into the shared activation, where this layer's
    /// output, not kept, would lie (its reader computes that output again from what this returns,
    /// in place or on the fly, and nothing else is there while it does).
    func recomputedFrom(_ ctx: LayerContext) -> Tensor {
        guard keepsBF16Input else { return input }
        let x = ctx.sharedActivation
        x.reshape(inputShape)
        ctx.profile?.count(.batchNorm, floats: 3 * x.count / 2)
        ctx.timed(.batchNorm, backward: true) { expandBF16(keptInput.data, into: x.data, count: x.count) }
        return x
    }

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

    /// Recomputes the last training forward's output (bit for bit) where it is not kept: in place
    /// where its input, kept in bf16, is expanded into the output's tensor.
    func rematerialize(_ ctx: LayerContext) {
        guard !keepsOutput else { return }
        let s = ctx.store, x = recomputedFrom(ctx)
        output.reshape(inputShape)
        ctx.profile?.count(.batchNorm, floats: 2 * x.count)
        ctx.timed(.batchNorm, backward: true) {
            saveMean.withUnsafeBufferPointer { mean in
                saveInvstd.withUnsafeBufferPointer { invstd in
                    batchNormTrainOutput(output.data, x.data, weight: s.param(weight), bias: s.param(bias),
                                         saveMean: mean.baseAddress!, saveInvstd: invstd.baseAddress!,
                                         BatchNormShape(inputShape), relu: fusedReLU)
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
        inputShape = x.shape
        fusedReLU = relu
        output.reshape(x.shape)
        let s = ctx.store
        keepsBF16Input = ctx.training && ctx.precision == .bf16 && x === ctx.sharedConvOutput
        let pairs = keepsBF16Input && reader?.runsBF16(ctx) == true ? ctx.sharedActivationPairs : nil
        outputPairs = pairs
        // Two channels' halves per word: an odd count's last pair has a zero high half.
        pairs?.reshape(Shape(x.shape.n, (channels + 1) / 2 * 2, x.shape.h, x.shape.w))
        if ctx.training {
            let sums = ctx.takeStatistics(of: x)
            // A bf16 convolution wrote x only as the halves kept here: read at half the bytes.
            let fromHalves = keepsBF16Input && sums?.halvesOnly == true
            inputFromHalves = fromHalves
            // The output's bytes: floats, or bf16 halves paired.
            let written = pairs == nil ? x.count : x.count / 2
            if fromHalves {
                ctx.profile?.count(.batchNorm, floats: x.count / 2 + written)
            } else {
                // x read once more for the sums unless its convolution took them; its rounded
                // copy, half the size, written beside the output (and read again for pairs).
                if keepsBF16Input { keptInput.reshape(x.shape) }
                let halves = keepsBF16Input ? (pairs == nil ? x.count / 2 : x.count) : 0
                ctx.profile?.count(.batchNorm, floats: (sums == nil ? 2 : 1) * x.count + written + halves)
            }
            ctx.bnScratch.withUnsafeMutableBufferPointer { scratch in
                saveMean.withUnsafeMutableBufferPointer { mean in
                    saveInvstd.withUnsafeMutableBufferPointer { invstd in
                        batchNormTrainForward(output.data, fromHalves ? nil : x.data, weight: s.param(weight),
                                              bias: s.param(bias),
                                              runningMean: s.buffer(runningMean), runningVar: s.buffer(runningVar),
                                              saveMean: mean.baseAddress!, saveInvstd: invstd.baseAddress!,
                                              BatchNormShape(x.shape), scratch: scratch.baseAddress!,
                                              reducer: ctx.statistics, relu: relu, partialSums: sums?.sums,
                                              parts: sums?.parts ?? 0, keeping: keepsBF16Input ? keptInput.data : nil,
                                              pairs: pairs?.words)
                        globalCount = scratch[2 * channels]
                    }
                }
            }
            if globalCount > 0 { s.counters[counter] += 1 }
        } else {
            batchNormEvalForward(output.data, x.data, weight: s.param(weight), bias: s.param(bias),
                                 runningMean: s.buffer(runningMean), runningVar: s.buffer(runningVar),
                                 BatchNormShape(x.shape))
            if relu { reluForward(output.data, count: output.count) }
            ctx.profile?.count(.batchNorm, floats: (relu ? 4 : 2) * x.count)
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
        inputGrad.reshape(inputShape)
        gradientHalves = inputFromHalves ? ctx.bnGradBF16 : nil
        gradientHalves?.reshape(inputShape)
        // dy and x for the sums, then again with dx written; x kept in bf16 and dx written as
        // bf16 are half a float each.
        let halves = (keepsBF16Input ? 2 : 0) + (gradientHalves != nil ? 1 : 0)
        ctx.profile?.count(.batchNorm, floats: (10 - halves) * inputShape.count / 2)
        let s = ctx.store
        ctx.bnScratch.withUnsafeMutableBufferPointer { scratch in
            batchNormTrainBackward(dx: gradientHalves == nil ? inputGrad.data : nil, dxBF16: gradientHalves?.data,
                                   dweight: s.grad(weight), dbias: s.grad(bias), dy: dy.data,
                                   x: keepsBF16Input ? nil : UnsafePointer(input.data),
                                   keptBF16: keepsBF16Input ? UnsafePointer(keptInput.data) : nil,
                                   weight: s.param(weight), saveMean: saveMean, saveInvstd: saveInvstd,
                                   BatchNormShape(inputShape), count: globalCount, scratch: scratch.baseAddress!,
                                   reducer: ctx.statistics,
                                   reluBias: fusedReLU ? UnsafePointer(s.param(bias)) : nil)
        }
        return inputGrad
    }
}
