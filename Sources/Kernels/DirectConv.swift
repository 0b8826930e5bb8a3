import CKernels
import Foundation

// 3x3 stride-1 "same" convolutions on CKernels' direct AVX-512 or AVX2 kernels (see cconv.h),
// which give the same bits: the same contract as conv2dForward / conv2dBackward's banded path,
// which they replace where `runsDirect` holds.

extension Conv2dShape {
    /// 3x3 "same" convolutions run directly; an input gradient split into two tensors needs the
    /// split on a block of eight channels (the kernels write eight outputs at a time). The AVX2
    /// kernels have only the weight gradient of eight or more input channels (`cconv3x3_unfold_rows`).
    public func runsDirect(split: Int? = nil) -> Bool {
        let kernels = vectorKernels == .avx512 || (vectorKernels == .avx2 && inC >= 8)
        return kernels && kernel == 3 && stride == 1 && padding == 1 && (split ?? 0) % 8 == 0
    }

    /// Whether the backward reads the input only through `cconv3x3_unfold_rows` (a direct
    /// convolution with eight or more input channels), which can compute a BatchNorm's output
    /// from that BatchNorm's input on the way (`AffineReLU`).
    public var unfoldsInputInBackward: Bool { runsDirect() && inC >= 8 }

    /// How many parts a forward's `statistics` come in: one per image and band of rows, fixed by
    /// the image size alone (not by the threads), so that the sums are the same on any number of
    /// threads. 0 where the forward gives none (not a direct convolution).
    public func statisticsParts(batch: Int, height: Int, width: Int) -> Int {
        guard runsDirect() else { return 0 }
        return batch * DirectPlan(batch: batch, height: height, width: width, pixels: tuning.directPixels).bands
    }

    var packedCount: Int { cconv3x3_packed_count(Int32(outC), Int32(inC)) }
    var adjointPackedCount: Int { cconv3x3_packed_count(Int32(inC), Int32(outC)) }
}

/// How a direct convolution's batch is cut into work items for the threads: large planes into
/// bands of rows, small images into groups, so that each item has a few thousand pixels and a
/// weight-gradient sum spans them all before it is added up across lanes.
struct DirectPlan {
    let batch: Int, height: Int, width: Int, bandRows: Int, group: Int

    init(batch: Int, height: Int, width: Int, pixels: Int) {
        self.batch = batch; self.height = height; self.width = width
        let plane = height * width
        if plane >= pixels {
            bandRows = max(1, pixels / width); group = 1
        } else {
            bandRows = height
            group = max(1, min(pixels / max(plane, 1), (batch + computeThreads - 1) / computeThreads))
        }
    }

    var bands: Int { (height + bandRows - 1) / bandRows }
    var items: Int { group > 1 ? (batch + group - 1) / group : batch * bands }

    func item(_ i: Int) -> (images: Range<Int>, rows: Range<Int>) {
        if group > 1 { return ((i * group)..<min(batch, (i + 1) * group), 0..<height) }
        let n = i / bands, b = i % bands
        return (n..<(n + 1), (b * bandRows)..<min(height, (b + 1) * bandRows))
    }

    /// Every item, in contiguous shares of the items, one per thread and the same each time:
    /// each thread's sums (the weight gradients') add the same items in the same order.
    func forEach(_ body: (_ thread: Int, _ images: Range<Int>, _ rows: Range<Int>) -> Void) {
        parallelChunks(items) { t, range in
            for i in range {
                let (images, rows) = item(i)
                body(t, images, rows)
            }
        }
    }

    /// Every band of every image (a group's images one by one), over the threads as
    /// `parallelItems` shares them: for the forwards, whose items write only their own outputs.
    func forEachBand(_ body: (_ thread: Int, _ image: Int, _ rows: Range<Int>) -> Void) {
        parallelItems(batch * bands) { t, i in
            let b = i % bands
            body(t, i / bands, (b * bandRows)..<min(height, (b + 1) * bandRows))
        }
    }

    /// The threads `forEachBand` runs on.
    var bandThreads: Int { min(computeThreads, batch * bands) }
}

/// A tensor's channel blocks as (tensor, its channels, the first channel it holds), without
/// allocating: one block, or two for a concatenation.
struct Parts<P> {
    let first: (P, Int, Int), second: (P, Int, Int)?

    init(_ x: ChannelBlocks<P>, channels: Int) {
        if let b = x.b {
            first = (x.a, x.channelsA, 0); second = (b, channels - x.channelsA, x.channelsA)
        } else {
            first = (x.a, channels, 0); second = nil
        }
    }

    @inline(__always) func forEach(_ body: (_ tensor: P, _ channels: Int, _ first: Int, _ index: Int) -> Void) {
        body(first.0, first.1, first.2, 0)
        if let second { body(second.0, second.1, second.2, 1) }
    }
}

extension Conv2dShape {
    /// How many rows of a band the AVX2 kernels' padded copy of `channels` planes holds at a time
    /// (`tuning.paddedFloats` and `paddedMinRows`). Every output is the same sum whatever the part.
    func paddedRows(channels: Int, width: Int, bandRows: Int) -> Int {
        min(bandRows, max(tuning.paddedMinRows, tuning.paddedFloats / (channels * (width + 2)) - 2))
    }
}

/// y = conv(x, weight) + bias, x one tensor or a concatenation read where it lies. With
/// `statistics`, each band's per-channel sum of y and of y^2 (in Double, as `cbn_sums` takes
/// them) right after the band is written, while it is still in cache: BatchNorm's statistics
/// without a pass of their own over y. Laid out [image][band][channel][sum, sum of squares].
func conv2dForwardDirect(_ y: UnsafeMutablePointer<Float>, _ x: ChannelBlocks<UnsafePointer<Float>>,
                         weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                         batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                         statistics: UnsafeMutablePointer<Double>? = nil) {
#if arch(x86_64)
    let plan = DirectPlan(batch: batch, height: height, width: width, pixels: s.tuning.directPixels)
    let avx2 = vectorKernels == .avx2
    // AVX2: each thread's padded copy of the rows a part of its band reads, both tensors' channels.
    let partRows = s.paddedRows(channels: s.inC, width: width, bandRows: min(height, plan.bandRows))
    let padCount = avx2 ? cconv3x3_padded_count(Int32(s.inC), Int32(width), 0, Int32(partRows)) : 0
    let packed = workspace.floats(s.packedCount + plan.bandThreads * padCount)
    cconv3x3_pack(packed, weight, Int32(s.outC), Int32(s.inC), 0)
    let block = Int(CCONV3X3_BLOCK_FLOATS)
    let plane = height * width, blockStride = s.inC * block
    let inputs = Parts(x, channels: s.inC)
    let h = Int32(height), w = Int32(width)
    plan.forEachBand { t, n, rows in
        let r0 = Int32(rows.lowerBound), r1 = Int32(rows.upperBound)
        if avx2 {
            let padded = packed + s.packedCount + t * padCount
            for a in stride(from: rows.lowerBound, to: rows.upperBound, by: partRows) {
                let b = min(a + partRows, rows.upperBound), paddedPlane = (b - a + 2) * (width + 2)
                inputs.forEach { tensor, channels, first, _ in
                    cconv3x3_pad_rows(padded + first * paddedPlane, tensor + n * channels * plane, plane,
                                      Int32(channels), h, w, Int32(a), Int32(b))
                }
                cconv3x3_forward_padded_avx2(y + n * s.outC * plane, padded, packed, blockStride, bias, Int32(s.inC),
                                             Int32(s.outC), h, w, Int32(a), Int32(b))
            }
        } else {
            inputs.forEach { tensor, channels, first, i in
                cconv3x3_forward(y + n * s.outC * plane, tensor + n * channels * plane, packed + first * block,
                                 blockStride, i == 0 ? bias : nil, Int32(channels), Int32(s.outC), h, w, r0, r1,
                                 i == 0 ? 0 : 1)
            }
        }
        guard let statistics else { return }
        let part = statistics + (n * plan.bands + rows.lowerBound / plan.bandRows) * 2 * s.outC
        for o in 0..<s.outC {
            cbn_sums(y + (n * s.outC + o) * plane + rows.lowerBound * width, rows.count * width, part + 2 * o,
                     vectorKernels.rawValue)
        }
    }
#else
    fatalError("the direct kernels are x86-64 code; vectorKernels is .portable elsewhere")
#endif
}

/// Accumulates dweight and dbias (+=) and assigns dx (split over a concatenation's tensors).
/// With `inputAffineReLU` the input is that function of x.
func conv2dBackwardDirect(dx: ChannelBlocks<UnsafeMutablePointer<Float>>?, dweight: UnsafeMutablePointer<Float>,
                          dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                          x: ChannelBlocks<UnsafePointer<Float>>, weight: UnsafePointer<Float>,
                          batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                          inputAffineReLU f: AffineReLU? = nil) {
#if arch(x86_64)
    let plane = height * width
    // The weight gradient as a GEMM over pixels on pixel-major copies of x and dy, sixteen input
    // channels per vector; a layer with a few input channels (the first) sums with pixels in
    // the lanes instead, where the padding to sixteen would multiply its work.
    let unfolded = s.unfoldsInputInBackward
    precondition(f == nil || (unfolded && x.b == nil), "an affine ReLU input needs the unfolded weight gradient")
    let cp = (s.inC + 15) / 16 * 16, op = (s.outC + 15) / 16 * 16
    // A thread's copies of x's and dy's rows stay within about 1 MiB, in its L2 through the nine
    // taps' passes: past that the weight gradient runs at about half speed (docs/kernel-notes.md).
    // The AVX2 kernels keep the same items (the same sums, the same bits) and walk a few rows at
    // a time instead, for CPUs with half that L2.
    let pixels = s.tuning.directPixels
    let plan = DirectPlan(batch: batch, height: height, width: width,
                          pixels: unfolded ? min(pixels, max(256, (1 << 18) / (cp + op))) : pixels)
    let threads = min(computeThreads, plan.items)
    func rowsCount(_ images: Int, _ channels: Int, _ rows: Int) -> Int {
        cconv3x3_rows_count(Int32(images), Int32(channels), Int32(width), 0, Int32(rows))
    }
    let gCount = unfolded ? 9 * s.outC * cp : s.weightCount
    let xCount = unfolded ? rowsCount(plan.group, cp, plan.bandRows) : 0
    let dyCount = unfolded ? rowsCount(plan.group, op, plan.bandRows) : 0
    // AVX2: the input gradient's padded copy of the rows of dy a part of a band reads.
    let avx2 = vectorKernels == .avx2
    let partRows = s.paddedRows(channels: s.outC, width: width, bandRows: min(height, plan.bandRows))
    let padCount = avx2 && dx != nil ? cconv3x3_padded_count(Int32(s.outC), Int32(width), 0, Int32(partRows)) : 0
    let slot = gCount + s.outC + xCount + dyCount + padCount
    let ws = workspace.floats(s.adjointPackedCount + threads * slot)
    let adjoint = ws, slots = ws + s.adjointPackedCount
    if dx != nil { cconv3x3_pack(adjoint, weight, Int32(s.outC), Int32(s.inC), 1) }
    for t in 0..<threads {
        let base = slots + t * slot
        base.update(repeating: 0, count: gCount + s.outC)
        // Padding channels of the copies are never written: zero once.
        if cp > s.inC { (base + gCount + s.outC).update(repeating: 0, count: xCount) }
        if op > s.outC { (base + gCount + s.outC + xCount).update(repeating: 0, count: dyCount) }
    }
    let adjointStride = s.outC * Int(CCONV3X3_BLOCK_FLOATS)
    let inputs = Parts(x, channels: s.inC)
    let outputs = dx.map { Parts($0, channels: s.inC) }
    let unfoldRows = avx2 ? cconv3x3_unfold_rows_avx2 : cconv3x3_unfold_rows
    let weightGradRows = avx2 ? cconv3x3_weight_grad_rows_avx2 : cconv3x3_weight_grad_rows
    plan.forEach { t, images, rows in
        let g = slots + t * slot, db = g + gCount, xt = db + s.outC, dyt = xt + xCount, padded = dyt + dyCount
        let n0 = images.lowerBound, count = Int32(images.count)
        let r0 = Int32(rows.lowerBound), r1 = Int32(rows.upperBound), h = Int32(height), w = Int32(width)
        if unfolded {
            inputs.forEach { tensor, channels, first, _ in
                unfoldRows(xt, tensor + n0 * channels * plane, channels * plane, count, Int32(channels), Int32(first),
                           Int32(cp), h, w, r0, r1, f?.scale, f?.shift)
            }
            unfoldRows(dyt, dy + n0 * s.outC * plane, s.outC * plane, count, Int32(s.outC), 0, Int32(op), h, w, r0,
                       r1, nil, nil)
            weightGradRows(g, dyt, Int32(op), xt, count, Int32(cp), Int32(s.outC), w, r0, r1)
        } else {
            inputs.forEach { tensor, channels, first, _ in
                cconv3x3_weight_grad(g + first * 9, s.inC * 9, dy + n0 * s.outC * plane, tensor + n0 * channels * plane,
                                     Int32(channels), Int32(s.outC), h, w, r0, r1, count, s.outC * plane,
                                     channels * plane)
            }
        }
        for n in images {
            let dyn = dy + n * s.outC * plane
            if dbias != nil {
                addRowSums(db, dyn + rows.lowerBound * width, rows: s.outC, columns: rows.count * width, stride: plane)
            }
            // The input gradient is the convolution of dy with the flipped, transposed kernel.
            guard let outputs else { continue }
            if avx2 {
                for a in stride(from: rows.lowerBound, to: rows.upperBound, by: partRows) {
                    let b = min(a + partRows, rows.upperBound)
                    cconv3x3_pad_rows(padded, dyn, plane, Int32(s.outC), h, w, Int32(a), Int32(b))
                    outputs.forEach { tensor, channels, first, _ in
                        cconv3x3_forward_padded_avx2(tensor + n * channels * plane, padded,
                                                     adjoint + first / 8 * adjointStride, adjointStride, nil,
                                                     Int32(s.outC), Int32(channels), h, w, Int32(a), Int32(b))
                    }
                }
                continue
            }
            outputs.forEach { tensor, channels, first, _ in
                cconv3x3_forward(tensor + n * channels * plane, dyn, adjoint + first / 8 * adjointStride,
                                 adjointStride, nil, Int32(s.outC), Int32(channels), h, w, r0, r1, 0)
            }
        }
    }
    // Partial sums added in thread order: the result does not depend on scheduling.
    for t in 0..<threads {
        let g = slots + t * slot
        if unfolded {
            cconv3x3_weight_grad_add(dweight, s.inC * 9, g, Int32(s.inC), Int32(cp), Int32(s.outC))
        } else {
            for i in 0..<s.weightCount { dweight[i] += g[i] }
        }
        if let dbias { for o in 0..<s.outC { dbias[o] += g[gCount + o] } }
    }
#else
    fatalError("the direct kernels are x86-64 code; vectorKernels is .portable elsewhere")
#endif
}

/// C = A B on the narrow AVX-512 GEMM, A packed by `cgemm_pack` (ConvTranspose2d's products).
@inline(__always)
func narrowGEMM(_ c: UnsafeMutablePointer<Float>, ldc: Int, packed: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                ldb: Int, m: Int, n: Int, k: Int) {
#if arch(x86_64)
    cgemm_narrow(c, ldc, packed, b, ldb, Int32(m), Int32(n), Int32(k))
#else
    fatalError("the narrow GEMM is x86-64 code; avx512Kernels is false elsewhere")
#endif
}
