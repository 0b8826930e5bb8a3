import CKernels

/// Every (image, band of output rows) pair of a banded convolution, over the compute threads.
@inline(__always)
func forEachBand(batch: Int, height: Int, rows: Int,
                 _ body: (_ thread: Int, _ image: Int, _ rows: Range<Int>) -> Void) {
    let bands = (height + rows - 1) / rows
    parallelChunks(batch * bands) { thread, items in
        for item in items {
            let n = item / bands, b = item % bands
            body(thread, n, (b * rows)..<min(height, (b + 1) * rows))
        }
    }
}

/// A banded convolution's input (or input gradient): one NCHW tensor, or two whose channels
/// follow each other, `a`'s first: torch.cat([a, b], 1) read (or written) where it lies, never
/// materialized.
struct ChannelBlocks<Pointer> {
    var a: Pointer, b: Pointer?, channelsA: Int

    init(_ a: Pointer) { self.a = a; b = nil; channelsA = 0 }
    init(_ a: Pointer, _ b: Pointer, channelsA: Int) { self.a = a; self.b = b; self.channelsA = channelsA }
}

extension ChannelBlocks where Pointer == UnsafePointer<Float> {
    /// im2col of image n's output rows `rows` (see `im2col`), from one tensor or both.
    func unfold(_ col: UnsafeMutablePointer<Float>, image n: Int, _ g: Window, rows: Range<Int>, ld: Int? = nil) {
        let plane = g.height * g.width
        guard let b else { return im2col(col, a + n * g.channels * plane, g, rows: rows, ld: ld) }
        let cb = g.channels - channelsA, ld = ld ?? rows.count * g.outWidth
        var ga = g, gb = g
        ga.channels = channelsA; gb.channels = cb
        im2col(col, a + n * channelsA * plane, ga, rows: rows, ld: ld)
        im2col(col + ga.rows * ld, b + n * cb * plane, gb, rows: rows, ld: ld)
    }
}

extension ChannelBlocks where Pointer == UnsafeMutablePointer<Float> {
    /// Channel c of image n, of a tensor of `channels` channels.
    func plane(image n: Int, channel c: Int, channels: Int, plane: Int) -> UnsafeMutablePointer<Float> {
        guard let b else { return a + (n * channels + c) * plane }
        return c < channelsA ? a + (n * channelsA + c) * plane
            : b + (n * (channels - channelsA) + c - channelsA) * plane
    }
}

func conv2dForwardBanded(_ y: UnsafeMutablePointer<Float>, _ x: ChannelBlocks<UnsafePointer<Float>>,
                         weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                         batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                         statistics: UnsafeMutablePointer<Double>? = nil) {
    if s.runsDirect() {
        return conv2dForwardDirect(y, x, weight: weight, bias: bias, batch: batch, height: height, width: width, s,
                                   workspace: workspace, statistics: statistics)
    }
    precondition(statistics == nil, "only direct convolutions sum their output")
    let g = s.window(height: height, width: width)
    let plane = height * width, rows = s.bandRows(height: height, width: width)
    let ws = workspace.floats(s.bandedWorkspaceCount(height: height, width: width))
    let perThread = s.bandedPerThread(height: height, width: width)
    let group = s.bandImages(height: height, width: width)
    if group > 1 {
        let tmpOffset = max(s.inC, s.outC) * s.kernel * s.kernel * group * plane
        parallelChunks((batch + group - 1) / group) { t, groups in for gi in groups {
            let n0 = gi * group, count = min(group, batch - n0), columns = count * plane
            let col = ws + t * perThread, tmp = col + tmpOffset
            for i in 0..<count { x.unfold(col + i * plane, image: n0 + i, g, rows: 0..<height, ld: columns) }
            sgemm(transA: false, transB: false, m: s.outC, n: columns, k: g.rows,
                  a: weight, lda: g.rows, b: col, ldb: columns, beta: 0, c: tmp, ldc: columns)
            for i in 0..<count {
                for o in 0..<s.outC {
                    let src = tmp + o * columns + i * plane, dst = y + ((n0 + i) * s.outC + o) * plane
                    if let bias {
                        let v = bias[o]
                        for j in 0..<plane { dst[j] = src[j] + v }
                    } else {
                        dst.update(from: src, count: plane)
                    }
                }
            }
        } }
        return
    }
    forEachBand(batch: batch, height: height, rows: rows) { t, n, band in
        let col = ws + t * perThread, columns = band.count * width
        x.unfold(col, image: n, g, rows: band)
        let yb = y + n * s.outC * plane + band.lowerBound * width
        sgemm(transA: false, transB: false, m: s.outC, n: columns, k: g.rows,
              a: weight, lda: g.rows, b: col, ldb: columns, beta: 0, c: yb, ldc: plane)
        if let bias { addChannelBias(yb, bias, channels: s.outC, count: columns, stride: plane) }
    }
}

func conv2dBackwardBanded(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                          dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                          x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                          inputAffineReLU: AffineReLU? = nil) {
    conv2dBackwardBanded(dx: dx.map { ChannelBlocks($0) }, dweight: dweight, dbias: dbias, dy: dy, x: ChannelBlocks(x),
                         weight: weight, batch: batch, height: height, width: width, s, workspace: workspace,
                         inputAffineReLU: inputAffineReLU)
}

func conv2dBackwardBanded(dx: ChannelBlocks<UnsafeMutablePointer<Float>>?, dweight: UnsafeMutablePointer<Float>,
                          dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                          x: ChannelBlocks<UnsafePointer<Float>>, weight: UnsafePointer<Float>,
                          batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                          inputAffineReLU: AffineReLU? = nil) {
    if s.runsDirect(split: dx?.b == nil ? nil : dx?.channelsA) {
        return conv2dBackwardDirect(dx: dx, dweight: dweight, dbias: dbias, dy: dy, x: x, weight: weight, batch: batch,
                                    height: height, width: width, s, workspace: workspace,
                                    inputAffineReLU: inputAffineReLU)
    }
    precondition(inputAffineReLU == nil, "an affine ReLU input needs the direct kernels")
    let b = BandedBackward(dx: dx, dweight: dweight, dbias: dbias, dy: dy, x: x, batch: batch, height: height,
                           width: width, s, workspace: workspace)
    if dx != nil { b.flipKernel(weight) }
    if b.group > 1 {
        parallelChunks(b.items) { t, groups in
            for gi in groups { b.imageGroup(gi, thread: t) }
        }
    } else {
        forEachBand(batch: batch, height: height, rows: b.rows) { t, n, band in b.band(band, image: n, thread: t) }
    }
    b.grads.finish()
}

/// The banded backward pass's buffers and its two kinds of work item: a group of whole images
/// side by side (small planes) or one band of an image's output rows.
private struct BandedBackward {
    let dx: ChannelBlocks<UnsafeMutablePointer<Float>>?, dy: UnsafePointer<Float>
    let x: ChannelBlocks<UnsafePointer<Float>>
    let s: Conv2dShape, batch: Int, height: Int, width: Int
    /// The im2col windows of x and of dy as the input of the adjoint convolution (outC channels,
    /// padding k - 1 - p, which is p).
    let g: Window, gt: Window
    let plane: Int, rows: Int, group: Int, perThread: Int, tmpOffset: Int, items: Int
    let ws: UnsafeMutablePointer<Float>, flipped: UnsafeMutablePointer<Float>
    let grads: WeightGradients

    init(dx: ChannelBlocks<UnsafeMutablePointer<Float>>?, dweight: UnsafeMutablePointer<Float>,
         dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>, x: ChannelBlocks<UnsafePointer<Float>>,
         batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace) {
        self.dx = dx; self.dy = dy; self.x = x; self.s = s
        self.batch = batch; self.height = height; self.width = width
        let k = s.kernel, kk = k * k
        g = s.window(height: height, width: width)
        gt = Window(channels: s.outC, height: height, width: width, kernel: k, stride: 1, padding: k - 1 - s.padding)
        plane = height * width
        rows = s.bandRows(height: height, width: width)
        ws = workspace.floats(s.bandedWorkspaceCount(height: height, width: width))
        group = s.bandImages(height: height, width: width)
        perThread = s.bandedPerThread(height: height, width: width)
        let colCount = perThread - s.weightCount - s.outC
        tmpOffset = max(s.inC, s.outC) * kk * rows * width * group
        items = group > 1 ? (batch + group - 1) / group : batch * ((height + rows - 1) / rows)
        grads = WeightGradients(dweight: dweight, dbias: dbias, weightCount: s.weightCount, biasCount: s.outC,
                                partials: ws + colCount, slot: perThread, threads: min(computeThreads, items))
        flipped = ws + computeThreads * perThread
    }

    /// flipped[c, o, ky, kx] = weight[o, c, k-1-ky, k-1-kx]: an inC x (outC k k) matrix.
    func flipKernel(_ weight: UnsafePointer<Float>) {
        let kk = s.kernel * s.kernel
        for o in 0..<s.outC {
            for c in 0..<s.inC {
                let src = weight + (o * s.inC + c) * kk, dst = flipped + (c * s.outC + o) * kk
                for i in 0..<kk { dst[i] = src[kk - 1 - i] }
            }
        }
    }

    /// Images `group * gi ..< group * (gi + 1)` side by side: one GEMM for the weight gradient,
    /// one for the input gradient.
    func imageGroup(_ gi: Int, thread t: Int) {
        let n0 = gi * group, count = min(group, batch - n0), columns = count * plane
        let col = ws + t * perThread, tmp = col + tmpOffset
        let dw = grads.weight(t), db = grads.bias(t)
        for i in 0..<count {
            x.unfold(col + i * plane, image: n0 + i, g, rows: 0..<height, ld: columns)
            for o in 0..<s.outC {
                (tmp + o * columns + i * plane).update(from: dy + ((n0 + i) * s.outC + o) * plane, count: plane)
            }
        }
        sgemm(transA: false, transB: true, m: s.outC, n: g.rows, k: columns,
              a: tmp, lda: columns, b: col, ldb: columns, beta: 1, c: dw, ldc: g.rows)
        if let db { addRowSums(db, tmp, rows: s.outC, columns: columns) }
        guard let dx else { return }
        for i in 0..<count {
            im2col(col + i * plane, dy + (n0 + i) * s.outC * plane, gt, rows: 0..<height, ld: columns)
        }
        sgemm(transA: false, transB: false, m: s.inC, n: columns, k: gt.rows,
              a: flipped, lda: gt.rows, b: col, ldb: columns, beta: 0, c: tmp, ldc: columns)
        for i in 0..<count {
            for c in 0..<s.inC {
                dx.plane(image: n0 + i, channel: c, channels: s.inC, plane: plane)
                    .update(from: tmp + c * columns + i * plane, count: plane)
            }
        }
    }

    /// Output rows `band` of image n.
    func band(_ band: Range<Int>, image n: Int, thread t: Int) {
        let col = ws + t * perThread, columns = band.count * width
        let dw = grads.weight(t), db = grads.bias(t)
        let dyb = dy + n * s.outC * plane + band.lowerBound * width
        x.unfold(col, image: n, g, rows: band)
        sgemm(transA: false, transB: true, m: s.outC, n: g.rows, k: columns,
              a: dyb, lda: plane, b: col, ldb: columns, beta: 1, c: dw, ldc: g.rows)
        if let db { addRowSums(db, dyb, rows: s.outC, columns: columns, stride: plane) }
        guard let dx else { return }
        im2col(col, dy + n * s.outC * plane, gt, rows: band)
        // One GEMM per block of input channels, each into its own tensor.
        let split = dx.b == nil ? s.inC : dx.channelsA
        inputGradient(dx, image: n, band: band, channels: 0..<split, col: col)
        if split < s.inC { inputGradient(dx, image: n, band: band, channels: split..<s.inC, col: col) }
    }

    func inputGradient(_ dx: ChannelBlocks<UnsafeMutablePointer<Float>>, image n: Int, band: Range<Int>,
                       channels: Range<Int>, col: UnsafeMutablePointer<Float>) {
        let first = channels.lowerBound, columns = band.count * width
        sgemm(transA: false, transB: false, m: channels.count, n: columns, k: gt.rows,
              a: flipped + first * gt.rows, lda: gt.rows, b: col, ldb: columns, beta: 0,
              c: dx.plane(image: n, channel: first, channels: s.inC, plane: plane) + band.lowerBound * width,
              ldc: plane)
    }
}
