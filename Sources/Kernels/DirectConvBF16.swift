import CKernels
import Foundation

// 3x3 stride-1 "same" convolutions with bf16 inputs and weights and float32 sums (cconv_bf16.h):
// the contract of conv2dForward / conv2dBackward's direct path, for mixed-precision training.
// Weights, gradients and activations stay float32 in memory; the kernels round their operands to
// bf16 on the way in (weights when packed, activations into paired planes or pixel-pair copies).

/// The arithmetic of the convolutions: float32 throughout, or bf16 operands with float32 sums.
public enum Precision: String, CaseIterable, Sendable {
    case fp32, bf16
}

/// The bf16 kernels that run: AVX512_BF16 where the CPU has it, else the portable C compiled for
/// AVX2, else portable C (the same rounding and the same order of sums). Tests switch between them.
nonisolated(unsafe) public var bf16Kernels: UnsafePointer<cbf16_kernel_set> = cbf16_kernels()

/// Every bf16 kernel set this CPU runs, the fastest first and portable C last.
public let availableBF16Kernels: [UnsafePointer<cbf16_kernel_set>] = [cbf16_avx512(), cbf16_avx2()].compactMap { $0 }
    + [cbf16_portable()]

/// Whether the CPU has AVX512_BF16.
public let bf16Available = cbf16_available() != 0

/// "AVX512_BF16", "AVX2" or "portable", for the lines `train` and `bench` print.
public var bf16KernelsDescription: String { String(cString: bf16Kernels.pointee.name) }

/// One thread's vdpbf16ps peak in GFLOP/s (0 without AVX512_BF16), over about a tenth of a second.
public func measureBF16Peak() -> Double { cbf16_peak_flops(1 << 21) / 1e9 }

extension Conv2dShape {
    /// Which convolutions take bf16 operands under `Precision.bf16`: 3x3 "same" ones with eight or
    /// more input channels (the weight gradient's copies hold sixteen channels per vector, and a
    /// first layer of one channel costs little in float32); a concatenation split on a block of
    /// eight channels (whole channel pairs, and the input gradient's blocks of eight outputs).
    public func runsBF16(split: Int? = nil) -> Bool {
        kernel == 3 && stride == 1 && padding == 1 && inC >= 8 && (split ?? 0) % 8 == 0
    }

    /// As `statisticsParts`, for a convolution that runs in bf16.
    public func bf16StatisticsParts(batch: Int, height: Int, width: Int) -> Int {
        batch * DirectPlan(batch: batch, height: height, width: width, pixels: tuning.directPixels).bands
    }
}

@inline(__always) func words(_ p: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<UInt32> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: UInt32.self)
}

/// The rows a band of output rows reads through the 3x3 taps: one more on each side, within the image.
@inline(__always) func readRows(_ rows: Range<Int>, height: Int) -> Range<Int> {
    max(0, rows.lowerBound - 1)..<min(height, rows.upperBound + 1)
}

/// Words of one thread's paired planes for the bands of `plan` (at most a whole image).
func bandPlanesCount(_ plan: DirectPlan, pairs: Int) -> Int {
    pairs * min(plan.height, plan.bandRows + 2) * plan.width
}

/// y = conv(x, weight) + bias in bf16, x = a or torch.cat([a, b], 1) (`channelsA` in a); b may
/// be given as `bBF16`, its values' bf16 upper halves. With `statistics`, BatchNorm's per-band
/// sums of y, as `conv2dForward` takes them. Each thread pairs the rows its band reads into its
/// own planes, so the paired copy stays in cache and its memory is a band's, not the batch's.
/// With `yBF16` (and no `y`), y is written only as its values rounded to bf16 (their upper
/// halves, `cbf16_round`): each band is summed (with `statistics`, from the float32 values, as
/// with `y`) and rounded from a float32 copy of the thread's own. With `aPairs` (one tensor
/// only), a is given as its paired planes, [image][channel pair][plane] words (a BatchNorm's
/// output written so, `batchNormTrainOutputPairs`), read where they lie; `a` is then not read.
public func conv2dForwardBF16(_ y: UnsafeMutablePointer<Float>?, yBF16: UnsafeMutablePointer<UInt16>? = nil,
                              _ a: UnsafePointer<Float>, channelsA: Int? = nil, aPairs: UnsafePointer<UInt32>? = nil,
                              _ b: UnsafePointer<Float>? = nil, bBF16: UnsafePointer<UInt16>? = nil,
                              weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, batch: Int, height: Int,
                              width: Int, _ s: Conv2dShape, workspace: Workspace,
                              statistics: UnsafeMutablePointer<Double>? = nil) {
    let concatenated = b != nil || bBF16 != nil
    precondition(s.runsBF16(split: concatenated ? channelsA : nil) && (b == nil || bBF16 == nil))
    precondition((y == nil) != (yBF16 == nil))
    precondition(aPairs == nil || !concatenated, "paired planes are one tensor")
    let k = bf16Kernels.pointee
    let plane = height * width, pairs = (s.inC + 1) / 2, blockStride = pairs * 72
    let ca = concatenated ? channelsA! : s.inC, cb = s.inC - ca
    let plan = DirectPlan(batch: batch, height: height, width: width, pixels: s.tuning.directPixels)
    let packedCount = cbf16_packed_count(Int32(s.outC), Int32(s.inC)), bandCount = bandPlanesCount(plan, pairs: pairs)
    // A thread's float32 band of every output channel, where only halves are written.
    let bandOutput = yBF16 == nil ? 0 : min(plan.height, plan.bandRows) * width
    let threadCount = bandCount + s.outC * bandOutput
    let ws = workspace.floats(packedCount + plan.bandThreads * threadCount)
    let packed = words(ws)
    cbf16_pack(packed, weight, Int32(s.outC), Int32(s.inC), 0)
    plan.forEachBand { t, n, rows in
        let planes = words(ws + packedCount + t * threadCount), bandY = ws + packedCount + t * threadCount + bandCount
        let read = readRows(rows, height: height), bandPlane = read.count * width
        // The image's paired planes where given (read from its row 0), else the band's made
        // here: both tensors' channels as one image of paired planes (a's count is even:
        // pairs line up).
        let (x, xPlane, xRow) = aPairs.map { ($0 + n * pairs * plane, plane, 0) }
            ?? (UnsafePointer(planes), bandPlane, read.lowerBound)
        let at = read.lowerBound * width
        if aPairs == nil {
            k.pair_planes!(planes, bandPlane, a + n * ca * plane + at, nil, plane, Int32(ca), bandPlane)
        }
        if concatenated {
            k.pair_planes!(planes + ca / 2 * bandPlane, bandPlane, b.map { $0 + n * cb * plane + at },
                           bBF16.map { $0 + n * cb * plane + at }, plane, Int32(cb), bandPlane)
        }
        // The image's planes, or the thread's band: planes of `outPlane` floats from row `outRow`.
        let (out, outPlane, outRow) = y.map { ($0 + n * s.outC * plane, plane, 0) }
            ?? (bandY, bandOutput, rows.lowerBound)
        k.forward!(out, outPlane, Int32(outRow), x, xPlane, Int32(xRow), packed, blockStride,
                   bias, Int32(s.inC), Int32(s.outC), Int32(height), Int32(width), Int32(rows.lowerBound),
                   Int32(rows.upperBound), 0)
        let part = statistics.map { $0 + (n * plan.bands + rows.lowerBound / plan.bandRows) * 2 * s.outC }
        for o in 0..<s.outC {
            let values = out + o * outPlane + (rows.lowerBound - outRow) * width, count = rows.count * width
            if let part { cbn_sums(values, count, part + 2 * o, vectorKernels.rawValue) }
            if let yBF16 {
                cbn_round_bf16(yBF16 + (n * s.outC + o) * plane + rows.lowerBound * width, values, count,
                               bf16Flag)
            }
        }
    }
}

/// The backward of `conv2dForwardBF16`: dweight and dbias accumulated (+=), dx assigned (to `dxA`
/// and, for a concatenation, `dxB`) when given; dy is rounded to bf16 as the inputs are. With
/// `inputAffineReLU` the layer's input is that function of a (one tensor only). With `aBF16`, a's
/// values are the floats whose upper halves it holds (a BatchNorm input kept in bf16, one tensor
/// only), read where they lie; `a` is then not read. A concatenation's b may be given as
/// `bBF16`, its values' upper halves, as `conv2dForwardBF16` takes it. dy may be given as
/// `dyBF16`, its values' upper halves (a BatchNorm's gradient written so): the same result as
/// from those values as floats, bias gradient included, at half the bytes read.
public func conv2dBackwardBF16(dxA: UnsafeMutablePointer<Float>?, dxB: UnsafeMutablePointer<Float>? = nil,
                               dweight: UnsafeMutablePointer<Float>, dbias: UnsafeMutablePointer<Float>?,
                               dy: UnsafePointer<Float>?, dyBF16: UnsafePointer<UInt16>? = nil,
                               _ a: UnsafePointer<Float>, channelsA: Int? = nil,
                               _ b: UnsafePointer<Float>? = nil, aBF16: UnsafePointer<UInt16>? = nil,
                               bBF16: UnsafePointer<UInt16>? = nil, weight: UnsafePointer<Float>, batch: Int,
                               height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace,
                               inputAffineReLU f: AffineReLU? = nil) {
    let concatenated = b != nil || bBF16 != nil
    precondition(s.runsBF16(split: concatenated ? channelsA : nil) && (b == nil || bBF16 == nil))
    precondition(f == nil || !concatenated, "an affine ReLU input is one tensor")
    precondition((dy == nil) != (dyBF16 == nil), "dy as floats or as bf16 halves")
    precondition(aBF16 == nil || !concatenated, "a bf16 input is one tensor")
    let k = bf16Kernels.pointee
    // Each part of the input as its floats or as its bf16 halves.
    typealias Source = (floats: UnsafePointer<Float>?, halves: UnsafePointer<UInt16>?)
    let first: Source = aBF16 == nil ? (a, nil) : (nil, aBF16), second: Source = (b, bBF16)
    let x = concatenated ? ChannelBlocks(first, second, channelsA: channelsA!) : ChannelBlocks(first)
    let dx: ChannelBlocks<UnsafeMutablePointer<Float>>? = dxA.map {
        dxB == nil ? ChannelBlocks($0) : ChannelBlocks($0, dxB!, channelsA: channelsA!)
    }
    let plane = height * width, pairs = (width + 1) / 2
    let cp = (s.inC + 15) / 16 * 16, op = s.outC
    // Each work item's copies within about 1 MiB, as the float32 kernel's (same bytes per pixel).
    let plan = DirectPlan(batch: batch, height: height, width: width,
                          pixels: min(s.tuning.directPixels, max(256, (1 << 18) / (cp + (s.outC + 15) / 16 * 16))))
    let threads = min(computeThreads, plan.items)
    let group = plan.group, band = plan.bandRows
    let gCount = 9 * s.outC * cp
    let evenCount = cbf16_rows_count(Int32(group), Int32(band + 2), Int32(pairs + 1), Int32(cp))
    let oddCount = cbf16_rows_count(Int32(group), Int32(band + 2), Int32(pairs), Int32(cp))
    let dyCount = cbf16_rows_count(Int32(group), Int32(band), Int32(pairs), Int32(op))
    let weightCount = gCount + s.outC + evenCount + oddCount + dyCount
    // The input gradient is the convolution of dy (rounded to bf16, paired per band as the
    // forward pairs x) with the adjoint kernel.
    let dyPairs = (s.outC + 1) / 2, adjointStride = dyPairs * 72
    let adjointCount = cbf16_packed_count(Int32(s.inC), Int32(s.outC))
    let planesCount = dx == nil ? 0 : bandPlanesCount(plan, pairs: dyPairs)
    let slot = weightCount + planesCount
    let ws = workspace.floats(adjointCount + threads * slot)
    let adjoint = words(ws), slots = ws + adjointCount
    if dx != nil { cbf16_pack(adjoint, weight, Int32(s.outC), Int32(s.inC), 1) }
    for t in 0..<threads {
        let base = slots + t * slot
        base.update(repeating: 0, count: gCount + s.outC)
        // Padding channels of the even copy are never written: zero once (the odd copy is made
        // whole from it).
        if cp > s.inC { (base + gCount + s.outC).update(repeating: 0, count: evenCount) }
    }
    let inputs = Parts(x, channels: s.inC)
    let outputs = dx.map { Parts($0, channels: s.inC) }
    plan.forEach { t, images, rows in
        let g = slots + t * slot, db = g + gCount
        let even = words(db + s.outC), odd = even + evenCount, dyt = odd + oddCount, dyPlanes = dyt + dyCount
        let n0 = images.lowerBound, count = Int32(images.count)
        let r0 = Int32(rows.lowerBound), r1 = Int32(rows.upperBound)
        let h = Int32(height), w = Int32(width), n = Int32(rows.count), pw = Int32(pairs)
        inputs.forEach { part, channels, first, _ in
            let o = n0 * channels * plane, xn = part.floats.map { $0 + o }, xb = part.halves.map { $0 + o }
            k.unfold!(even, xn, xb, channels * plane, count, Int32(channels), Int32(first), Int32(cp), h, w, r0 - 1,
                     n + 2, -1, pw + 1, f?.scale, f?.shift)
        }
        // The odd copy holds the even copy's halves shifted by one column: moved, not copied again.
        cbf16_odd_pairs(odd, even, images.count * (rows.count + 2), pw, Int32(cp), avx512Kernels ? 1 : 0)
        let dyImages = n0 * s.outC * plane
        k.unfold!(dyt, dy.map { $0 + dyImages }, dyBF16.map { $0 + dyImages }, s.outC * plane, count, Int32(s.outC), 0,
                  Int32(op), h, w, r0, n, 0, pw, nil, nil)
        k.weight_grad!(g, dyt, Int32(op), even, odd, count, Int32(cp), Int32(s.outC), w, n)
        let read = readRows(rows, height: height), bandPlane = read.count * width
        for i in images {
            let bandStart = i * s.outC * plane + rows.lowerBound * width
            if dbias != nil {
                addRowSums(db, dy.map { $0 + bandStart }, halves: dyBF16.map { $0 + bandStart }, rows: s.outC,
                           columns: rows.count * width, stride: plane)
            }
            guard let outputs else { continue }
            let readStart = i * s.outC * plane + read.lowerBound * width
            k.pair_planes!(dyPlanes, bandPlane, dy.map { $0 + readStart }, dyBF16.map { $0 + readStart }, plane,
                           Int32(s.outC), bandPlane)
            outputs.forEach { tensor, channels, first, _ in
                k.forward!(tensor + i * channels * plane, plane, 0, dyPlanes, bandPlane, Int32(read.lowerBound),
                           adjoint + first / 8 * adjointStride, adjointStride, nil, Int32(s.outC), Int32(channels), h,
                           w, r0, r1, 0)
            }
        }
    }
    // Partial sums added in thread order: the result does not depend on scheduling.
    for t in 0..<threads {
        let g = slots + t * slot
        cconv3x3_weight_grad_add(dweight, s.inC * 9, g, Int32(s.inC), Int32(cp), Int32(s.outC))
        if let dbias { for o in 0..<s.outC { dbias[o] += g[gCount + o] } }
    }
}
