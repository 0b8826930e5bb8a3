import CKernels
import Foundation

/// Adds up per-channel statistics across the replicas of a data-parallel run.
/// On one process there is nothing to add, and a nil reducer is used.
public protocol StatisticsReducer: AnyObject {
    func sumAcrossReplicas(_ values: UnsafeMutablePointer<Double>, count: Int)
}

public struct BatchNormShape {
    public var batch: Int, channels: Int, spatial: Int
    public init(batch: Int, channels: Int, spatial: Int) {
        self.batch = batch; self.channels = channels; self.spatial = spatial
    }
    public init(_ s: Shape) { self.init(batch: s.n, channels: s.c, spatial: s.spatial) }
}

/// Training-mode BatchNorm2d: normalizes with the batch's biased variance, moves the running
/// statistics by `momentum` with the unbiased variance (PyTorch's convention).
///
/// Per-channel sums are taken in Double: a Float32 sum of squares over ~155k pixels per channel
/// loses most of its digits. `scratch` holds 2 * channels + 1 Doubles: sum x, sum x^2, count,
/// the numbers a reducer adds across replicas. `saveMean`/`saveInvstd` feed the backward pass.
/// With `partialSums` (`parts` of them, from `conv2dForward`'s `statistics`), x is not read for
/// the sums; then x may also be nil where `keeping` already holds it rounded to bf16 (a bf16
/// convolution's `yBF16`), and the output is computed from those halves.
public func batchNormTrainForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>?,
                                  weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                  runningMean: UnsafeMutablePointer<Float>, runningVar: UnsafeMutablePointer<Float>,
                                  saveMean: UnsafeMutablePointer<Float>, saveInvstd: UnsafeMutablePointer<Float>,
                                  _ s: BatchNormShape, momentum: Float = 0.1, eps: Float = 1e-5,
                                  scratch: UnsafeMutablePointer<Double>, reducer: StatisticsReducer? = nil,
                                  relu: Bool = false, partialSums: UnsafePointer<Double>? = nil, parts: Int = 0,
                                  keeping xb: UnsafeMutablePointer<UInt16>? = nil,
                                  pairs: UnsafeMutablePointer<UInt32>? = nil) {
    precondition(pairs == nil || xb != nil, "the paired output is made from the kept halves")
    let C = s.channels, plane = s.spatial
    parallelFor(C) { c in
        var s1 = 0.0, s2 = 0.0
        if let partialSums {
            // [part][channel][sum, sum of squares], as the convolution that wrote x summed it.
            for p in 0..<parts {
                s1 += partialSums[2 * (p * C + c)]; s2 += partialSums[2 * (p * C + c) + 1]
            }
        } else {
            for n in 0..<s.batch {
                let (a, b) = sumAndSquares(x! + (n * C + c) * plane, plane)
                s1 += a; s2 += b
            }
        }
        scratch[c] = s1; scratch[C + c] = s2
    }
    scratch[2 * C] = Double(s.batch * plane)
    reducer?.sumAcrossReplicas(scratch, count: 2 * C + 1)
    let count = scratch[2 * C]
    // A replica with no samples of its own under per-replica statistics has nothing to normalize.
    guard count > 0 else { return }
    for c in 0..<C {
        let mean = scratch[c] / count
        let variance = max(scratch[C + c] / count - mean * mean, 0)
        let invstd = 1 / (variance + Double(eps)).squareRoot()
        saveMean[c] = Float(mean); saveInvstd[c] = Float(invstd)
        runningMean[c] = (1 - momentum) * runningMean[c] + momentum * Float(mean)
        runningVar[c] = (1 - momentum) * runningVar[c] + momentum * Float(variance * count / max(count - 1, 1))
    }
    if let pairs, let xb {
        batchNormTrainOutputPairs(pairs, x, keeping: xb, weight: weight, bias: bias, saveMean: saveMean,
                                  saveInvstd: saveInvstd, s, relu: relu)
        return
    }
    batchNormTrainOutput(y, x, weight: weight, bias: bias, saveMean: saveMean, saveInvstd: saveInvstd, s, relu: relu,
                         keeping: xb)
}

/// The flag of the C kernels that round to bf16: their AVX512_BF16 loops where the CPU has them.
var bf16Flag: Int32 { avx512Kernels && bf16Available ? 1 : 0 }

/// `batchNormTrainOutput` with `keeping`, written as the paired planes a bf16 convolution makes
/// of the output ([image][channel pair][plane] words: `cbn_output_pairs`), not as floats: the
/// same bits that convolution reads, at a quarter of the bytes. Where x is given, its two
/// channels are rounded into xb first, just before their halves are read.
public func batchNormTrainOutputPairs(_ p: UnsafeMutablePointer<UInt32>, _ x: UnsafePointer<Float>?,
                                      keeping xb: UnsafeMutablePointer<UInt16>, weight: UnsafePointer<Float>,
                                      bias: UnsafePointer<Float>, saveMean: UnsafePointer<Float>,
                                      saveInvstd: UnsafePointer<Float>, _ s: BatchNormShape, relu: Bool) {
    let C = s.channels, plane = s.spatial, pairs = (C + 1) / 2
    parallelFor(pairs) { k in
        let c = 2 * k, high = c + 1 < C
        let scale0 = weight[c] * saveInvstd[c], shift0 = bias[c] - saveMean[c] * scale0
        let scale1 = high ? weight[c + 1] * saveInvstd[c + 1] : 0
        let shift1 = high ? bias[c + 1] - saveMean[c + 1] * scale1 : 0
        for n in 0..<s.batch {
            let lo = xb + (n * C + c) * plane
            if let x { cbn_round_bf16(lo, x + (n * C + c) * plane, (high ? 2 : 1) * plane, bf16Flag) }
            cbn_output_pairs(p + (n * pairs + k) * plane, lo, high ? lo + plane : nil, plane, scale0, shift0, scale1,
                             shift1, relu ? 1 : 0, bf16Flag)
        }
    }
}

/// The training-mode output from the saved batch statistics: what the forward writes, and what a
/// layer that does not keep its output recomputes, bit for bit, when its consumer's backward
/// needs it again. With `keeping`, x is rounded to bf16 there first, or, where x is nil, was.
public func batchNormTrainOutput(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>?,
                                 weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 saveMean: UnsafePointer<Float>, saveInvstd: UnsafePointer<Float>,
                                 _ s: BatchNormShape, relu: Bool, keeping xb: UnsafeMutablePointer<UInt16>? = nil) {
    let C = s.channels, plane = s.spatial
    parallelFor(C) { c in
        let scale = weight[c] * saveInvstd[c], shift = bias[c] - saveMean[c] * scale
        for n in 0..<s.batch {
            let o = (n * C + c) * plane
            if let xb {
                cbn_output_keeping_bf16(y + o, x.map { $0 + o }, xb + o, plane, scale, shift, relu ? 1 : 0, bf16Flag)
            } else {
                cbn_output(y + o, x! + o, plane, scale, shift, relu ? 1 : 0, vectorKernels.rawValue)
            }
        }
    }
}

/// Backward of the training-mode forward. Accumulates this replica's dweight/dbias (+=), assigns dx.
/// `scratch` holds 2 * channels Doubles: sum dy and sum dy * xhat, added across replicas for dx.
/// With `reluBias` (the forward's bias, when it ran with `relu: true`), `dy` is the gradient after
/// the ReLU, and is taken as zero wherever that output is not positive: its sign recomputed from
/// `x` exactly as the forward computed the output, so the output itself need not be kept or read.
/// With `keptBF16` (the upper halves the forward kept with `keeping`), x is read from them, at
/// half the bytes, as the floats they are exactly; `x` is then not read and may be nil. With
/// `dxBF16`, dx is written only there, rounded to bf16 (`cbf16_round`), and `dx` may be nil.
public func batchNormTrainBackward(dx: UnsafeMutablePointer<Float>?, dxBF16: UnsafeMutablePointer<UInt16>? = nil,
                                   dweight: UnsafeMutablePointer<Float>,
                                   dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                   x: UnsafePointer<Float>?, keptBF16 xb: UnsafePointer<UInt16>? = nil,
                                   weight: UnsafePointer<Float>,
                                   saveMean: UnsafePointer<Float>, saveInvstd: UnsafePointer<Float>,
                                   _ s: BatchNormShape, count: Double,
                                   scratch: UnsafeMutablePointer<Double>, reducer: StatisticsReducer? = nil,
                                   reluBias: UnsafePointer<Float>? = nil) {
    precondition(x != nil || xb != nil, "the backward reads x or its bf16 copy")
    precondition(dx != nil || dxBF16 != nil, "the backward writes dx or its bf16 halves")
    let C = s.channels, plane = s.spatial
    // The AVX-512 loop that rounds dx needs AVX512_BF16 as well.
    let vectors = dxBF16 != nil && avx512Kernels && !bf16Available ? 0 : vectorKernels.rawValue
    /// Channel c's fused ReLU, as the forward's output pass computed it.
    func mask(_ c: Int) -> ReLUMask? {
        reluBias.map { b in
            let scale = weight[c] * saveInvstd[c]
            return ReLUMask(scale: scale, shift: b[c] - saveMean[c] * scale)
        }
    }
    parallelFor(C) { c in
        var sdy = 0.0, sdyx = 0.0
        let mean = saveMean[c], invstd = saveInvstd[c], mask = mask(c)
        for n in 0..<s.batch {
            let o = (n * C + c) * plane
            let (a, b) = gradientSums(dy + o, x.map { $0 + o }, xb.map { $0 + o }, plane, mean: mean, invstd: invstd,
                                      mask: mask)
            sdy += a; sdyx += b
        }
        scratch[c] = sdy; scratch[C + c] = sdyx
        dbias[c] += Float(sdy); dweight[c] += Float(sdyx)
    }
    reducer?.sumAcrossReplicas(scratch, count: 2 * C)
    parallelFor(C) { c in
        let mean = saveMean[c], invstd = saveInvstd[c]
        let k = weight[c] * invstd
        let meanDy = Float(scratch[c] / count), meanDyX = Float(scratch[C + c] / count), mask = mask(c)
        for n in 0..<s.batch {
            let o = (n * C + c) * plane
            cbn_input_gradient(dx.map { $0 + o }, dxBF16.map { $0 + o }, dy + o, x.map { $0 + o }, xb.map { $0 + o },
                               mask == nil ? 0 : 1, mask?.scale ?? 0, mask?.shift ?? 0, plane, mean, invstd, k,
                               meanDy, meanDyX, vectors)
        }
    }
}

/// (sum x, sum x^2) of n Floats, in Double.
@inline(__always)
func sumAndSquares(_ p: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
    var out = (0.0, 0.0)
    withUnsafeMutableBytes(of: &out) {
        cbn_sums(p, n, $0.baseAddress!.assumingMemoryBound(to: Double.self), vectorKernels.rawValue)
    }
    return out
}

/// A fused ReLU's mask recomputed from the BatchNorm's input: the output x * scale + shift > 0.
struct ReLUMask {
    var scale: Float, shift: Float
}

/// (sum g, sum g * xhat) in Double, with g = dy masked by `mask` when given; x read from `xb`
/// when given.
@inline(__always)
func gradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>?, _ xb: UnsafePointer<UInt16>?, _ n: Int,
                  mean: Float, invstd: Float, mask: ReLUMask? = nil) -> (Double, Double) {
    var out = (0.0, 0.0)
    withUnsafeMutableBytes(of: &out) {
        cbn_gradient_sums(dy, x, xb, mask == nil ? 0 : 1, mask?.scale ?? 0, mask?.shift ?? 0, n, mean, invstd,
                          $0.baseAddress!.assumingMemoryBound(to: Double.self), vectorKernels.rawValue)
    }
    return out
}

/// Eval-mode BatchNorm2d: the running statistics, nothing updated.
public func batchNormEvalForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                 weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 runningMean: UnsafePointer<Float>, runningVar: UnsafePointer<Float>,
                                 _ s: BatchNormShape, eps: Float = 1e-5) {
    let C = s.channels, plane = s.spatial
    for c in 0..<C {
        let scale = weight[c] / (runningVar[c] + eps).squareRoot()
        let shift = bias[c] - runningMean[c] * scale
        for n in 0..<s.batch {
            let p = x + (n * C + c) * plane, q = y + (n * C + c) * plane
            for i in 0..<plane { q[i] = p[i] * scale + shift }
        }
    }
}

/// Backward of the eval-mode forward (fine-tuning with frozen statistics).
public func batchNormEvalBackward(dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                                  dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                  x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                  runningMean: UnsafePointer<Float>, runningVar: UnsafePointer<Float>,
                                  _ s: BatchNormShape, eps: Float = 1e-5) {
    let C = s.channels, plane = s.spatial
    for c in 0..<C {
        let invstd = 1 / (runningVar[c] + eps).squareRoot(), mean = runningMean[c], k = weight[c] * invstd
        var sdy = 0.0, sdyx = 0.0
        for n in 0..<s.batch {
            let p = x + (n * C + c) * plane, g = dy + (n * C + c) * plane, q = dx + (n * C + c) * plane
            for i in 0..<plane {
                sdy += Double(g[i]); sdyx += Double(g[i] * (p[i] - mean) * invstd)
                q[i] = g[i] * k
            }
        }
        dbias[c] += Float(sdy); dweight[c] += Float(sdyx)
    }
}

/// x = the floats whose upper halves `xb` holds: a BatchNorm input kept in bf16, for a reader that
/// needs it as floats (the backward reads `xb` itself, `keptBF16`).
public func expandBF16(_ xb: UnsafePointer<UInt16>, into x: UnsafeMutablePointer<Float>, count: Int) {
    parallelChunks(count) { _, range in
        cbn_expand_bf16(x + range.lowerBound, xb + range.lowerBound, range.count, avx512Kernels ? 1 : 0)
    }
}
