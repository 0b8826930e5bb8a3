import CKernels

// The up-sampling ConvTranspose2d (2x2, stride 2) with bf16 inputs, weights and dy and float32
// sums (cconvt_bf16.h), as PyTorch's autocast runs conv_transpose2d: the contract of
// convTranspose2dForward / convTranspose2dBackward. Weights, gradients and inputs stay float32 in
// memory; the kernels round their operands on the way in, as the bf16 convolutions do. The
// output is float32, or bf16 halves for a reader that rounds it anyway.

extension ConvTranspose2dShape {
    /// Which transposed convolutions take bf16 operands under `Precision.bf16`: the 2x2 stride-2
    /// up-sampling (every one the models have).
    public var runsBF16: Bool { kernel == 2 && stride == 2 }
}

/// The transposed-convolution kernels that go with `bf16Kernels` (portable with portable, AVX2
/// with AVX2), so that tests switch both at once.
var bf16TransposedKernels: UnsafePointer<cbf16t_kernel_set> {
    if bf16Kernels == cbf16_avx512(), let set = cbf16t_avx512() { return set }
    if bf16Kernels == cbf16_avx2(), let set = cbf16t_avx2() { return set }
    return cbf16t_portable()
}

/// y = convTranspose(x, weight) + bias in bf16, into planes padded with `top` rows and `left`
/// columns of zeros at the top/left (0: planes of 2 height x 2 width), as
/// `convTranspose2dForwardPadded`. With `yBF16` (and no `y`), y is rounded to bf16 and written as
/// its upper halves: for a reader that rounds its input to bf16 anyway (a bf16 convolution), the
/// same values in half the memory.
public func convTranspose2dForwardBF16(_ y: UnsafeMutablePointer<Float>?,
                                       yBF16 yb: UnsafeMutablePointer<UInt16>? = nil, _ x: UnsafePointer<Float>,
                                       weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, batch: Int,
                                       height: Int, width: Int, _ s: ConvTranspose2dShape, top: Int = 0, left: Int = 0,
                                       workspace: Workspace) {
    precondition(s.runsBF16 && top >= 0 && left >= 0 && (y == nil) != (yb == nil))
    let k = bf16TransposedKernels.pointee
    let plane = height * width
    let packedCount = cbf16t_packed_count(Int32(s.inC), Int32(s.outC)), tileCount = cbf16t_tile_count(Int32(s.inC))
    let ws = workspace.floats(packedCount + computeThreads * tileCount)
    let packed = words(ws), tiles = packed + packedCount
    cbf16t_pack(packed, weight, Int32(s.inC), Int32(s.outC), 0)
    let outWidth = 2 * width + left, outPlane = (2 * height + top) * outWidth
    parallelItems(batch) { t, n in
        let first = n * s.outC * outPlane, at = top * outWidth + left, xn = x + n * s.inC * plane
        let rows = 2 * height + top
        if let y { zeroPadding(y + first, planes: s.outC, rows: rows, width: outWidth, top: top, left: left) }
        if let yb { zeroPadding(yb + first, planes: s.outC, rows: rows, width: outWidth, top: top, left: left) }
        k.forward!(y.map { $0 + first + at }, yb.map { $0 + first + at }, outWidth, outPlane, xn, packed, bias,
                   Int32(s.inC), Int32(s.outC), Int32(height), Int32(width), 0, Int32(height), tiles + t * tileCount)
    }
}

/// The backward of `convTranspose2dForwardBF16` (unpadded planes): dweight and dbias accumulated
/// (+=), dx assigned when given; dy is rounded to bf16 for both gradients, the bias gradient sums
/// float32 dy (per band of rows, as the bf16 convolutions' does). Each image goes by bands of
/// rows, every use of a band of dy (its copy for the weight gradient, its sums, its rounding for
/// dx) while it is in cache.
public func convTranspose2dBackwardBF16(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                        dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                                        x: UnsafePointer<Float>, weight: UnsafePointer<Float>, batch: Int, height: Int,
                                        width: Int, _ s: ConvTranspose2dShape, workspace: Workspace) {
    precondition(s.runsBF16)
    let k = bf16TransposedKernels.pointee, unfold = bf16Kernels.pointee.unfold!
    let plane = height * width, outPlane = 4 * plane, outWidth = 2 * width, pairs = (width + 1) / 2
    let cp = (s.inC + 15) / 16 * 16, threads = min(computeThreads, batch)
    // Rows per copy: the two copies of a band within about 1 MiB.
    let band = max(1, min(height, (1 << 18) / (pairs * (cp + 4 * s.outC))))
    let xCount = cbf16_rows_count(1, Int32(band), Int32(pairs), Int32(cp))
    let dyCount = cbf16t_dy_count(Int32(s.outC), 1, Int32(band), Int32(width))
    let gCount = 4 * s.outC * cp, dyWords = dx == nil ? 0 : s.outC * outPlane / 2
    let slot = gCount + s.outC + xCount + dyCount + dyWords
    let packedCount = dx == nil ? 0 : cbf16t_packed_count(Int32(s.inC), Int32(s.outC))
    let ws = workspace.floats(packedCount + threads * slot)
    let packed = words(ws), slots = ws + packedCount
    if dx != nil { cbf16t_pack(packed, weight, Int32(s.inC), Int32(s.outC), 1) }
    for t in 0..<threads {
        // The sums start at zero; the x copy's padding channels are never written.
        (slots + t * slot).update(repeating: 0, count: gCount + s.outC + (cp > s.inC ? xCount : 0))
    }
    let h = Int32(height), w = Int32(width)
    parallelChunks(batch) { t, images in
        let g = slots + t * slot, db = g + gCount
        let xCopy = words(db + s.outC), dyCopy = xCopy + xCount, dyRounded = dyCopy + dyCount
        for n in images {
            let xn = x + n * s.inC * plane, dyn = dy + n * s.outC * outPlane
            for r0 in stride(from: 0, to: height, by: band) {
                let rows = min(band, height - r0), r = Int32(r0), count = Int32(rows)
                unfold(xCopy, xn, nil, s.inC * plane, 1, Int32(s.inC), 0, Int32(cp), h, w, r, count, 0,
                       Int32(pairs), nil, nil)
                k.unfold_dy!(dyCopy, dyn, s.outC * outPlane, 1, Int32(s.outC), h, w, r, count)
                k.weight_grad!(g, dyCopy, xCopy, Int32(s.outC), Int32(cp), rows * pairs)
                // The band's output rows 2 r0 ..< 2 (r0 + rows) of every plane.
                let first = 2 * r0 * outWidth, floats = 2 * rows * outWidth
                if dbias != nil { addRowSums(db, dyn + first, rows: s.outC, columns: floats, stride: outPlane) }
                guard let dx else { continue }
                for p in 0..<s.outC {
                    k.round_pairs!(dyRounded + (p * outPlane + first) / 2, dyn + p * outPlane + first, floats)
                }
                k.input_grad!(dx + n * s.inC * plane, dyRounded, packed, Int32(s.inC), Int32(s.outC), h, w, r,
                              r + count)
            }
        }
    }
    // Partial sums added in thread order: the result does not depend on scheduling.
    for t in 0..<threads {
        let g = slots + t * slot
        for q in 0..<s.inC {
            for o in 0..<(4 * s.outC) { dweight[q * 4 * s.outC + o] += g[o * cp + q] }
        }
        if let dbias { for p in 0..<s.outC { dbias[p] += g[gCount + p] } }
    }
}
