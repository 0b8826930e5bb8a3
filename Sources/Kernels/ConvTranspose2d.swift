import CKernels

/// ConvTranspose2d without padding: each input pixel paints a k x k patch at stride s.
///
/// Weights are PyTorch's [inC, outC, k, k], an inC x (outC*k*k) matrix. The forward pass is
/// the adjoint of a convolution over the output: GEMM into columns, then col2im; the backward
/// pass is im2col of dy and two GEMMs.
public struct ConvTranspose2dShape: Equatable {
    public var inC: Int, outC: Int, kernel: Int, stride: Int
    public init(inC: Int, outC: Int, kernel: Int = 2, stride: Int = 2) {
        self.inC = inC; self.outC = outC; self.kernel = kernel; self.stride = stride
    }
    public var weightCount: Int { inC * outC * kernel * kernel }
    public func outputShape(_ x: Shape) -> Shape {
        Shape(x.n, outC, (x.h - 1) * stride + kernel, (x.w - 1) * stride + kernel)
    }
    /// The window that slides over the output and lands on input pixels.
    func window(height: Int, width: Int) -> Window {
        Window(channels: outC, height: (height - 1) * stride + kernel, width: (width - 1) * stride + kernel,
               kernel: kernel, stride: stride, padding: 0)
    }
    /// Per compute thread: one image's columns and a private dweight + dbias; then the weights
    /// packed for `cgemm_narrow`.
    public func workspaceCount(height: Int, width: Int) -> Int {
        computeThreads * (outC * kernel * kernel * height * width + weightCount + outC) + packedCount
    }
    /// The up blocks' 2x2 stride-2 forward runs on its own AVX-512 or AVX2 kernel
    /// (`cconvt2x2_forward`, `cconvt2x2_forward_avx2`).
    public var runsDirect: Bool { vectorKernels != .portable && kernel == 2 && stride == 2 }
    var directPackedCount: Int { cconvt2x2_packed_count(Int32(inC), Int32(outC)) }
    var packedCount: Int {
        let rows = outC * kernel * kernel
        return max(cgemm_packed_count(Int32(rows), Int32(inC)), cgemm_packed_count(Int32(inC), Int32(rows)))
    }
}

public func convTranspose2dForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                   weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                   batch: Int, height: Int, width: Int, _ s: ConvTranspose2dShape,
                                   workspace: Workspace) {
    if s.runsDirect {
        return convTranspose2dForwardPadded(y, x, weight: weight, bias: bias, batch: batch, height: height,
                                            width: width, s, top: 0, left: 0, workspace: workspace)
    }
    let g = s.window(height: height, width: width)
    let plane = height * width, outPlane = g.height * g.width
    let ws = workspace.floats(s.workspaceCount(height: height, width: width))
    let perThread = g.rows * plane + s.weightCount + s.outC
    // Shapes other than 2x2 at stride 2, or the portable kernels: one output row per (channel,
    // tap), a GEMM with tens of rows, which the narrow GEMM runs where the CPU has AVX-512.
    let packed = ws + computeThreads * perThread
    if avx512Kernels { cgemm_pack(packed, weight, g.rows, Int32(g.rows), Int32(s.inC), 1) }
    parallelChunks(batch) { t, images in for n in images {
        let col = ws + t * perThread
        let xn = x + n * s.inC * plane, yn = y + n * s.outC * outPlane
        if avx512Kernels {
            narrowGEMM(col, ldc: plane, packed: packed, xn, ldb: plane, m: g.rows, n: plane, k: s.inC)
        } else {
            sgemm(transA: true, transB: false, m: g.rows, n: plane, k: s.inC,
                  a: weight, lda: g.rows, b: xn, ldb: plane, beta: 0, c: col, ldc: plane)
        }
        if g.tiles {
            col2imTiles(yn, col, g)
        } else {
            yn.update(repeating: 0, count: s.outC * outPlane)
            col2imAdd(yn, col, g)
        }
        if let bias { addChannelBias(yn, bias, channels: s.outC, count: outPlane, stride: outPlane) }
    } }
}

/// The forward written into planes padded with `top` rows and `left` columns of zeros at the
/// top/left (the seed's F.pad before an up block's concatenation), without a copy: planes of
/// (2 height + top) x (2 width + left). For the direct kernel only (`s.runsDirect`).
public func convTranspose2dForwardPadded(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                         weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                         batch: Int, height: Int, width: Int, _ s: ConvTranspose2dShape,
                                         top: Int, left: Int, workspace: Workspace) {
    precondition(s.runsDirect && top >= 0 && left >= 0)
    let tileCount = cconvt2x2_tile_count(Int32(s.inC))
    let ws = workspace.floats(s.directPackedCount + computeThreads * tileCount)
    let packed = ws + computeThreads * tileCount
    cconvt2x2_pack(packed, weight, Int32(s.inC), Int32(s.outC))
    let outWidth = 2 * width + left, outPlane = (2 * height + top) * outWidth
    parallelItems(batch) { t, n in
        let yn = y + n * s.outC * outPlane
        zeroPadding(yn, planes: s.outC, rows: 2 * height + top, width: outWidth, top: top, left: left)
        let forward = avx512Kernels ? cconvt2x2_forward : cconvt2x2_forward_avx2
        forward(yn + top * outWidth + left, outWidth, outPlane, x + n * s.inC * height * width, packed, bias,
                Int32(s.inC), Int32(s.outC), Int32(height), Int32(width), 0, Int32(height), ws + t * tileCount)
    }
}

/// Zeros in the first `top` rows and `left` columns of `planes` planes of rows x width elements.
func zeroPadding<T: Numeric>(_ y: UnsafeMutablePointer<T>, planes: Int, rows: Int, width: Int, top: Int, left: Int) {
    guard top > 0 || left > 0 else { return }
    for p in 0..<planes {
        let plane = y + p * rows * width
        plane.update(repeating: 0, count: top * width)
        if left > 0 { for r in top..<rows { (plane + r * width).update(repeating: 0, count: left) } }
    }
}

public func convTranspose2dBackward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                    dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                                    x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                    batch: Int, height: Int, width: Int, _ s: ConvTranspose2dShape,
                                    workspace: Workspace) {
    let g = s.window(height: height, width: width)
    let plane = height * width, outPlane = g.height * g.width
    let ws = workspace.floats(s.workspaceCount(height: height, width: width))
    let colCount = g.rows * plane, perThread = colCount + s.weightCount + s.outC
    let grads = WeightGradients(dweight: dweight, dbias: dbias, weightCount: s.weightCount, biasCount: s.outC,
                                partials: ws + colCount, slot: perThread, threads: min(computeThreads, batch))
    let packed = ws + computeThreads * perThread
    if avx512Kernels && dx != nil { cgemm_pack(packed, weight, g.rows, Int32(s.inC), Int32(g.rows), 0) }
    parallelChunks(batch) { t, images in for n in images {
        let col = ws + t * perThread
        let dw = grads.weight(t), db = grads.bias(t)
        let xn = x + n * s.inC * plane, dyn = dy + n * s.outC * outPlane
        im2col(col, dyn, g)
        sgemm(transA: false, transB: true, m: s.inC, n: g.rows, k: plane,
              a: xn, lda: plane, b: col, ldb: plane, beta: 1, c: dw, ldc: g.rows)
        if let db { addRowSums(db, dyn, rows: s.outC, columns: outPlane) }
        if let dx, avx512Kernels {
            narrowGEMM(dx + n * s.inC * plane, ldc: plane, packed: packed, col, ldb: plane, m: s.inC, n: plane,
                       k: g.rows)
        } else if let dx {
            sgemm(transA: false, transB: false, m: s.inC, n: plane, k: g.rows,
                  a: weight, lda: g.rows, b: col, ldb: plane, beta: 0, c: dx + n * s.inC * plane, ldc: plane)
        }
    } }
    grads.finish()
}
