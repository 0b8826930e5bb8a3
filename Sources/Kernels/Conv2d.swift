import CKernels

/// Conv2d over a batch, as im2col + one GEMM per image (darknet's scheme); 3x3 stride-1 "same"
/// convolutions take CKernels' direct AVX-512 or AVX2 kernels instead where the CPU has them
/// (DirectConv.swift).
///
/// Weights are PyTorch's [outC, inC, k, k], read as an outC x (inC*k*k) matrix whose rows
/// line up with im2col's rows.
public struct Conv2dShape: Equatable {
    public var inC: Int, outC: Int, kernel: Int, stride: Int, padding: Int
    /// How a banded convolution of this shape cuts its work.
    public var tuning = KernelTuning()
    public init(inC: Int, outC: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.inC = inC; self.outC = outC; self.kernel = kernel; self.stride = stride; self.padding = padding
    }
    public var weightCount: Int { outC * inC * kernel * kernel }

    public func window(height: Int, width: Int) -> Window {
        Window(channels: inC, height: height, width: width, kernel: kernel, stride: stride, padding: padding)
    }
    public func outputShape(_ x: Shape) -> Shape {
        let g = window(height: x.h, width: x.w)
        return Shape(x.n, outC, g.outHeight, g.outWidth)
    }
    /// A 1x1 stride-1 convolution needs no unfolding: the image is its own column matrix.
    var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }
    public func workspaceCount(height: Int, width: Int) -> Int {
        if isBanded { return bandedWorkspaceCount(height: height, width: width) }
        return computeThreads * generalPerThread(height: height, width: width)
    }

    /// Per thread, for the kernels that are not banded: one image's columns (none for 1x1
    /// stride 1, whose image is its own column matrix) and a private dweight + dbias.
    func generalPerThread(height: Int, width: Int) -> Int {
        let g = window(height: height, width: width)
        return (isPointwise ? 0 : g.rows * g.columns) + weightCount + outC
    }

    /// Stride 1 with "same" padding (3x3 padding 1, ...): computed in bands of output rows whose
    /// column matrix stays in cache, bands spread over the compute threads, and the input
    /// gradient as a convolution of dy with the flipped kernel (no col2im).
    var isBanded: Bool { stride == 1 && kernel > 1 && 2 * padding == kernel - 1 }

    /// Output rows per band: a band's column matrix holds about `tuning.bandFloats` floats.
    func bandRows(height: Int, width: Int) -> Int {
        let k = max(inC, outC) * kernel * kernel
        let inCache = tuning.bandFloats / max(k * width, 1), wideEnough = (tuning.minBandColumns + width - 1) / width
        return max(1, min(height, max(inCache, wideEnough)))
    }

    /// Images per band when a whole image is smaller than a band: several images' columns side
    /// by side make one wider GEMM (the weights are packed once for all of them).
    func bandImages(height: Int, width: Int) -> Int {
        let k = max(inC, outC) * kernel * kernel
        guard bandRows(height: height, width: width) == height else { return 1 }
        let plane = height * width
        return max(1, tuning.bandFloats / max(k * plane, 1), (tuning.minBandColumns + plane - 1) / plane)
    }

    /// Per thread: one band's columns, a band of outputs for grouped images, a private
    /// dweight + dbias; then the flipped kernel.
    func bandedPerThread(height: Int, width: Int) -> Int {
        let c = max(inC, outC), k = c * kernel * kernel
        let columns = bandRows(height: height, width: width) * width * bandImages(height: height, width: width)
        return k * columns + c * columns + weightCount + outC
    }

    func bandedWorkspaceCount(height: Int, width: Int) -> Int {
        computeThreads * bandedPerThread(height: height, width: width) + weightCount
    }
}

/// y = conv(x, weight) + bias. With `statistics` (where `statisticsParts` is not 0), also the
/// per-channel sums of y and y^2 in parts (see `statisticsParts`).
public func conv2dForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                          statistics: UnsafeMutablePointer<Double>? = nil) {
    if s.isBanded {
        return conv2dForwardBanded(y, ChannelBlocks(x), weight: weight, bias: bias, batch: batch, height: height,
                                   width: width, s, workspace: workspace, statistics: statistics)
    }
    precondition(statistics == nil, "only direct convolutions sum their output")
    // Strided, 1x1 and other kernels: whole images, spread over the compute threads.
    let g = s.window(height: height, width: width)
    let inCount = s.inC * height * width, outPlane = g.columns
    let ws = workspace.floats(s.workspaceCount(height: height, width: width))
    let perThread = s.generalPerThread(height: height, width: width)
    parallelChunks(batch) { t, images in for n in images {
        let col = ws + t * perThread
        let xn = x + n * inCount, yn = y + n * s.outC * outPlane
        let b: UnsafePointer<Float>
        if s.isPointwise { b = xn } else { im2col(col, xn, g); b = UnsafePointer(col) }
        sgemm(transA: false, transB: false, m: s.outC, n: outPlane, k: g.rows,
              a: weight, lda: g.rows, b: b, ldb: outPlane, beta: 0, c: yn, ldc: outPlane)
        if let bias { addChannelBias(yn, bias, channels: s.outC, count: outPlane, stride: outPlane) }
    } }
}

/// A convolution's input given as relu(x[c] * scale[c] + shift[c]) of the stored x: the output
/// of a BatchNorm with a fused ReLU, which then need not be stored again for the backward.
/// `scale` and `shift` as that BatchNorm's output pass computes them (`batchNormTrainOutput`).
public struct AffineReLU {
    public var scale: UnsafePointer<Float>, shift: UnsafePointer<Float>
    public init(scale: UnsafePointer<Float>, shift: UnsafePointer<Float>) { self.scale = scale; self.shift = shift }
}

/// Accumulates dweight and dbias (+=) and assigns dx when given. With `inputAffineReLU` (where
/// `s.unfoldsInputInBackward`), the layer's input is that function of `x`.
public func conv2dBackward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                           dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                           x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                           inputAffineReLU: AffineReLU? = nil) {
    if s.isBanded {
        return conv2dBackwardBanded(dx: dx, dweight: dweight, dbias: dbias, dy: dy, x: x, weight: weight, batch: batch,
                                    height: height, width: width, s, workspace: workspace,
                                    inputAffineReLU: inputAffineReLU)
    }
    precondition(inputAffineReLU == nil, "an affine ReLU input needs the direct kernels")
    let g = s.window(height: height, width: width)
    let inCount = s.inC * height * width, outPlane = g.columns
    let ws = workspace.floats(s.workspaceCount(height: height, width: width))
    let perThread = s.generalPerThread(height: height, width: width), colCount = perThread - s.weightCount - s.outC
    let grads = WeightGradients(dweight: dweight, dbias: dbias, weightCount: s.weightCount, biasCount: s.outC,
                                partials: ws + colCount, slot: perThread, threads: min(computeThreads, batch))
    parallelChunks(batch) { t, images in for n in images {
        let col = ws + t * perThread
        let dw = grads.weight(t), db = grads.bias(t)
        let xn = x + n * inCount, dyn = dy + n * s.outC * outPlane
        let colIn: UnsafePointer<Float>
        if s.isPointwise { colIn = xn } else { im2col(col, xn, g); colIn = UnsafePointer(col) }
        sgemm(transA: false, transB: true, m: s.outC, n: g.rows, k: outPlane,
              a: dyn, lda: outPlane, b: colIn, ldb: outPlane, beta: 1, c: dw, ldc: g.rows)
        if let db { addRowSums(db, dyn, rows: s.outC, columns: outPlane) }
        guard let dx else { continue }
        let dxn = dx + n * inCount
        if s.isPointwise {
            sgemm(transA: true, transB: false, m: g.rows, n: outPlane, k: s.outC,
                  a: weight, lda: g.rows, b: dyn, ldb: outPlane, beta: 0, c: dxn, ldc: outPlane)
        } else {
            sgemm(transA: true, transB: false, m: g.rows, n: outPlane, k: s.outC,
                  a: weight, lda: g.rows, b: dyn, ldb: outPlane, beta: 0, c: col, ldc: outPlane)
            dxn.update(repeating: 0, count: inCount)
            col2imAdd(dxn, col, g)
        }
    } }
    grads.finish()
}

/// conv(torch.cat([a, b], 1)) for a "same"-padded stride-1 kernel, reading the two tensors where
/// they lie: an up block's convolution without its concatenation in memory.
public func conv2dForwardConcat(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, channelsA: Int,
                                _ b: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                                statistics: UnsafeMutablePointer<Double>? = nil) {
    precondition(s.isBanded && channelsA < s.inC)
    conv2dForwardBanded(y, ChannelBlocks(a, b, channelsA: channelsA), weight: weight, bias: bias, batch: batch,
                        height: height, width: width, s, workspace: workspace, statistics: statistics)
}

/// The backward of `conv2dForwardConcat`: dweight and dbias accumulated, the input gradient
/// assigned to `da` (a's channels) and `db` (b's).
public func conv2dBackwardConcat(da: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>,
                                 dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                                 dy: UnsafePointer<Float>, _ a: UnsafePointer<Float>, channelsA: Int,
                                 _ b: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                 batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace) {
    precondition(s.isBanded && channelsA < s.inC)
    conv2dBackwardBanded(dx: ChannelBlocks(da, db, channelsA: channelsA), dweight: dweight, dbias: dbias, dy: dy,
                         x: ChannelBlocks(a, b, channelsA: channelsA), weight: weight, batch: batch, height: height,
                         width: width, s, workspace: workspace)
}

/// Adds bias[c] to `count` values of each channel c, whose rows start `stride` apart.
@inline(__always)
func addChannelBias(_ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, channels: Int, count: Int,
                    stride: Int) {
    for c in 0..<channels {
        let row = y + c * stride, v = bias[c]
        for i in 0..<count { row[i] += v }
    }
}

/// sums[r] += sum of row r (rows `stride` apart) of m, or of the floats whose upper halves
/// `halves` holds, accumulated in Double so long rows keep their precision.
func addRowSums(_ sums: UnsafeMutablePointer<Float>, _ m: UnsafePointer<Float>?, halves: UnsafePointer<UInt16>? = nil,
                rows: Int, columns: Int, stride: Int? = nil) {
    for r in 0..<rows {
        let o = r * (stride ?? columns)
        sums[r] += Float(cbn_sum(m.map { $0 + o }, halves.map { $0 + o }, columns, vectorKernels.rawValue))
    }
}

/// Weight and bias gradients of a layer whose images (or bands) are spread over threads: with
/// more than one thread each sums into a private partial, kept in its workspace slot after its
/// columns, and `finish` adds the partials to the layer's gradients in thread order, so the
/// result does not depend on scheduling. With one thread the layer's gradients are used directly.
struct WeightGradients {
    let dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?
    let partials: UnsafeMutablePointer<Float>, slot: Int, threads: Int, weightCount: Int, biasCount: Int

    /// `partials` is thread 0's partial; thread t's lies `slot` floats further.
    init(dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?, weightCount: Int, biasCount: Int,
         partials: UnsafeMutablePointer<Float>, slot: Int, threads: Int) {
        self.dweight = dweight; self.dbias = dbias; self.weightCount = weightCount; self.biasCount = biasCount
        self.partials = partials; self.slot = slot; self.threads = threads
        if threads > 1 {
            for t in 0..<threads { (partials + t * slot).update(repeating: 0, count: weightCount + biasCount) }
        }
    }

    func weight(_ t: Int) -> UnsafeMutablePointer<Float> { threads > 1 ? partials + t * slot : dweight }
    func bias(_ t: Int) -> UnsafeMutablePointer<Float>? {
        guard dbias != nil else { return nil }
        return threads > 1 ? partials + t * slot + weightCount : dbias
    }

    func finish() {
        guard threads > 1 else { return }
        for t in 0..<threads {
            let dw = partials + t * slot
            for i in 0..<weightCount { dweight[i] += dw[i] }
            if let dbias { for o in 0..<biasCount { dbias[o] += dw[weightCount + o] } }
        }
    }
}
