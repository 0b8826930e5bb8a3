import Foundation

/// Adds up per-channel statistics across the replicas of a data-parallel run.
/// On one process there is nothing to add, and a nil reducer is used.
public protocol StatisticsReducer: AnyObject {
    func sumAcrossReplicas(_ values: UnsafeMutablePointer<Double>, count: Int)
}

public struct BatchNormShape {
    public var batch: Int, channels: Int, spatial: Int
    public init(batch: Int, channels: Int, spatial: Int) { self.batch = batch; self.channels = channels; self.spatial = spatial }
    public init(_ s: Shape) { self.init(batch: s.n, channels: s.c, spatial: s.spatial) }
}

/// Training-mode BatchNorm2d: normalizes with the batch's biased variance, moves the running
/// statistics by `momentum` with the unbiased variance (PyTorch's convention).
///
/// Per-channel sums are taken in Double: a Float32 sum of squares over ~155k pixels per channel
/// loses most of its digits. `scratch` holds 2 * channels + 1 Doubles: sum x, sum x^2, count,
/// the numbers a reducer adds across replicas. `saveMean`/`saveInvstd` feed the backward pass.
public func batchNormTrainForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                  weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                  runningMean: UnsafeMutablePointer<Float>, runningVar: UnsafeMutablePointer<Float>,
                                  saveMean: UnsafeMutablePointer<Float>, saveInvstd: UnsafeMutablePointer<Float>,
                                  _ s: BatchNormShape, momentum: Float = 0.1, eps: Float = 1e-5,
                                  scratch: UnsafeMutablePointer<Double>, reducer: StatisticsReducer? = nil,
                                  relu: Bool = false) {
    let C = s.channels, plane = s.spatial
    parallelFor(C) { c in
        var s1 = 0.0, s2 = 0.0
        for n in 0..<s.batch {
            let (a, b) = sumAndSquares(x + (n * C + c) * plane, plane)
            s1 += a; s2 += b
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
    batchNormTrainOutput(y, x, weight: weight, bias: bias, saveMean: saveMean, saveInvstd: saveInvstd, s, relu: relu)
}

/// The training-mode output from the saved batch statistics: what the forward writes, and what a
/// layer that does not keep its output recomputes, bit for bit, when its consumer's backward
/// needs it again.
public func batchNormTrainOutput(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                 weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 saveMean: UnsafePointer<Float>, saveInvstd: UnsafePointer<Float>,
                                 _ s: BatchNormShape, relu: Bool) {
    let C = s.channels, plane = s.spatial
    parallelFor(C) { c in
        let scale = weight[c] * saveInvstd[c], shift = bias[c] - saveMean[c] * scale
        for n in 0..<s.batch {
            let p = x + (n * C + c) * plane, q = y + (n * C + c) * plane
            if relu {
                for i in 0..<plane { q[i] = max(p[i] * scale + shift, 0) }
            } else {
                for i in 0..<plane { q[i] = p[i] * scale + shift }
            }
        }
    }
}

/// Backward of the training-mode forward. Accumulates this replica's dweight/dbias (+=), assigns dx.
/// `scratch` holds 2 * channels Doubles: sum dy and sum dy * xhat, added across replicas for dx.
/// With `reluOutput` (the forward's output when it ran with `relu: true`), `dy` is the gradient
/// after the ReLU, and is taken as zero wherever that output is not positive. With
/// `reluBias` (the forward's bias) instead, that output's sign is recomputed from `x`, for a
/// layer that did not keep its output.
public func batchNormTrainBackward(dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                                   dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                   x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                   saveMean: UnsafePointer<Float>, saveInvstd: UnsafePointer<Float>,
                                   _ s: BatchNormShape, count: Double,
                                   scratch: UnsafeMutablePointer<Double>, reducer: StatisticsReducer? = nil,
                                   reluOutput: UnsafePointer<Float>? = nil, reluBias: UnsafePointer<Float>? = nil) {
    let C = s.channels, plane = s.spatial
    parallelFor(C) { c in
        var sdy = 0.0, sdyx = 0.0
        let mean = saveMean[c], invstd = saveInvstd[c]
        let mask = reluBias.map { b -> ReLUMask in
            let scale = weight[c] * invstd
            return ReLUMask(scale: scale, shift: b[c] - mean * scale)
        }
        for n in 0..<s.batch {
            let o = (n * C + c) * plane
            let (a, b) = gradientSums(dy + o, x + o, reluOutput.map { $0 + o }, plane, mean: mean, invstd: invstd,
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
        let meanDy = Float(scratch[c] / count), meanDyX = Float(scratch[C + c] / count)
        for n in 0..<s.batch {
            let o = (n * C + c) * plane
            let p = x + o, g = dy + o, q = dx + o
            if let b = reluBias {
                let scale = weight[c] * invstd, shift = b[c] - mean * scale
                let vm = SIMD8<Float>(repeating: mean), vs = SIMD8<Float>(repeating: invstd)
                let vk = SIMD8<Float>(repeating: k), vdy = SIMD8<Float>(repeating: meanDy)
                let vdyx = SIMD8<Float>(repeating: meanDyX)
                let vscale = SIMD8<Float>(repeating: scale), vshift = SIMD8<Float>(repeating: shift)
                let rp = UnsafeRawPointer(p), rg = UnsafeRawPointer(g), rq = UnsafeMutableRawPointer(q)
                var i = 0
                while i + 8 <= plane {
                    var gv = rg.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    let xv = rp.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    gv.replace(with: SIMD8<Float>(), where: xv * vscale + vshift .<= 0)
                    let xhat = (xv - vm) * vs
                    rq.storeBytes(of: vk * (gv - vdy - xhat * vdyx), toByteOffset: 4 * i, as: SIMD8<Float>.self)
                    i += 8
                }
                while i < plane {
                    let xhat = (p[i] - mean) * invstd
                    q[i] = k * ((p[i] * scale + shift > 0 ? g[i] : 0) - meanDy - xhat * meanDyX)
                    i += 1
                }
            } else if let r = reluOutput.map({ $0 + o }) {
                // Eight lanes at a time: a branch per element on the ReLU mask mispredicts.
                let vm = SIMD8<Float>(repeating: mean), vs = SIMD8<Float>(repeating: invstd)
                let vk = SIMD8<Float>(repeating: k), vdy = SIMD8<Float>(repeating: meanDy)
                let vdyx = SIMD8<Float>(repeating: meanDyX)
                let rp = UnsafeRawPointer(p), rg = UnsafeRawPointer(g), rr = UnsafeRawPointer(r)
                let rq = UnsafeMutableRawPointer(q)
                var i = 0
                while i + 8 <= plane {
                    var gv = rg.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    let y = rr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    gv.replace(with: SIMD8<Float>(), where: y .<= 0)
                    let xhat = (rp.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - vm) * vs
                    rq.storeBytes(of: vk * (gv - vdy - xhat * vdyx), toByteOffset: 4 * i, as: SIMD8<Float>.self)
                    i += 8
                }
                while i < plane {
                    let xhat = (p[i] - mean) * invstd
                    q[i] = k * ((r[i] > 0 ? g[i] : 0) - meanDy - xhat * meanDyX)
                    i += 1
                }
            } else {
                for i in 0..<plane {
                    let xhat = (p[i] - mean) * invstd
                    q[i] = k * (g[i] - meanDy - xhat * meanDyX)
                }
            }
        }
    }
}

/// (sum x, sum x^2) of n Floats, in Double, eight lanes at a time.
@inline(__always)
func sumAndSquares(_ p: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
    var a1 = SIMD8<Double>(), a2 = SIMD8<Double>()
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 8 <= n {
        let v = SIMD8<Double>(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
        a1 += v
        a2 += v * v
        i += 8
    }
    var s1 = a1.sum(), s2 = a2.sum()
    while i < n { let v = Double(p[i]); s1 += v; s2 += v * v; i += 1 }
    return (s1, s2)
}

/// A fused ReLU's mask recomputed from the BatchNorm's input: the output x * scale + shift > 0.
struct ReLUMask {
    var scale: Float, shift: Float
}

/// (sum g, sum g * xhat) in Double, with g = dy masked by relu > 0 (or by `mask`) when given.
@inline(__always)
func gradientSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ relu: UnsafePointer<Float>?, _ n: Int,
                  mean: Float, invstd: Float, mask: ReLUMask? = nil) -> (Double, Double) {
    var a1 = SIMD8<Double>(), a2 = SIMD8<Double>()
    var i = 0
    let rdy = UnsafeRawPointer(dy), rx = UnsafeRawPointer(x)
    let m = SIMD8<Float>(repeating: mean), k = SIMD8<Float>(repeating: invstd)
    if let mask {
        let vscale = SIMD8<Float>(repeating: mask.scale), vshift = SIMD8<Float>(repeating: mask.shift)
        while i + 8 <= n {
            var g = rdy.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            let xv = rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            g.replace(with: SIMD8<Float>(), where: xv * vscale + vshift .<= 0)
            let xhat = (xv - m) * k
            let gd = SIMD8<Double>(g)
            a1 += gd
            a2 += gd * SIMD8<Double>(xhat)
            i += 8
        }
    } else if let relu {
        let rr = UnsafeRawPointer(relu)
        while i + 8 <= n {
            var g = rdy.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            let y = rr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            g.replace(with: SIMD8<Float>(), where: y .<= 0)
            let xhat = (rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - m) * k
            let gd = SIMD8<Double>(g)
            a1 += gd
            a2 += gd * SIMD8<Double>(xhat)
            i += 8
        }
    } else {
        while i + 8 <= n {
            let g = rdy.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            let xhat = (rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - m) * k
            let gd = SIMD8<Double>(g)
            a1 += gd
            a2 += gd * SIMD8<Double>(xhat)
            i += 8
        }
    }
    var s1 = a1.sum(), s2 = a2.sum()
    while i < n {
        let g = mask.map { x[i] * $0.scale + $0.shift > 0 ? dy[i] : 0 } ?? relu.map { $0[i] > 0 ? dy[i] : 0 } ?? dy[i]
        s1 += Double(g); s2 += Double(g) * Double((x[i] - mean) * invstd)
        i += 1
    }
    return (s1, s2)
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
