import CKernels
import Foundation

/// BCEWithLogits summed over `count` elements; returns the sum (in Double) and, when asked, writes
/// d(sum * gradScale)/dlogits. The mean loss is the sum / count with gradScale = 1 / count.
///
/// Uses max(x, 0) - x t + log1p(exp(-|x|)), which neither overflows nor loses small values.
public func bceWithLogits(dlogits: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>,
                          targets: UnsafePointer<Float>, count: Int, gradScale: Float) -> Double {
    // Contiguous chunks over the compute threads, their sums added in chunk order.
    withUnsafeTemporaryAllocation(of: Double.self, capacity: 64) { partial in
        let chunks = min(computeThreads, 64, max(count, 1))
        for c in 0..<chunks { partial[c] = 0 }
        parallelFor(chunks) { c in
            let start = c * count / chunks, end = (c + 1) * count / chunks
            partial[c] = closs_bce_with_logits(dlogits.map { $0 + start }, logits + start, targets + start, end - start,
                                               gradScale, vectorKernels.rawValue)
        }
        var sum = 0.0
        for c in 0..<chunks { sum += partial[c] }
        return sum
    }
}

@inline(__always)
public func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + exp(-x)) : { let e = exp(x); return e / (1 + e) }()
}

/// Softmax cross-entropy over the channel axis of NCHW logits with class-index targets.
/// Returns the summed loss over all pixels; writes d(sum * gradScale)/dlogits when asked.
public func softmaxCrossEntropy(dlogits: UnsafeMutablePointer<Float>?, logits: UnsafePointer<Float>,
                                classes: UnsafePointer<UInt8>, batch: Int, channels: Int, spatial: Int,
                                gradScale: Float) -> Double {
    var sum = 0.0
    for n in 0..<batch {
        let base = logits + n * channels * spatial
        for i in 0..<spatial {
            var m = -Float.infinity
            for c in 0..<channels { m = max(m, base[c * spatial + i]) }
            var z: Float = 0
            for c in 0..<channels { z += exp(base[c * spatial + i] - m) }
            let target = Int(classes[n * spatial + i])
            let logZ = m + log(z)
            sum += Double(logZ - base[target * spatial + i])
            if let dlogits {
                let d = dlogits + n * channels * spatial
                for c in 0..<channels {
                    let p = exp(base[c * spatial + i] - logZ)
                    d[c * spatial + i] = (p - (c == target ? 1 : 0)) * gradScale
                }
            }
        }
    }
    return sum
}

/// Soft Dice over a whole (global) batch, as MONAI's DiceLoss with batch=True and smoothing 1e-5
/// in numerator and denominator: 1 - mean over classes c of (2 I_c + s) / (P_c + T_c + s), where
/// I_c = sum p t, P_c = sum p, T_c = sum t over every pixel of every image, p the predicted
/// probability (softmax over the classes, or each class's own sigmoid) and t the one-hot target.
/// The sums are split from the loss so that the ranks can add theirs (one allreduce) in between.
public enum DiceLoss {
    public static let smooth = 1e-5

    /// Adds this rank's sums into `sums`: [I_0..I_{C-1}, P_0.., T_0..] (3 x classes Doubles).
    /// `logits` and `targets` are N x classes x spatial.
    public static func addSums(_ sums: UnsafeMutablePointer<Double>, logits: UnsafePointer<Float>,
                               targets: UnsafePointer<Float>, batch: Int, classes: Int, spatial: Int, softmax: Bool) {
        withProbabilities(logits: logits, batch: batch, classes: classes, spatial: spatial,
                          softmax: softmax) { n, i, p in
            for c in 0..<classes {
                let t = Double(targets[(n * classes + c) * spatial + i]), q = Double(p[c])
                sums[c] += q * t; sums[classes + c] += q; sums[2 * classes + c] += t
            }
        }
    }

    /// The loss from the global sums.
    public static func loss(_ sums: UnsafePointer<Double>, classes: Int) -> Double {
        var mean = 0.0
        for c in 0..<classes { mean += (2 * sums[c] + smooth) / (sums[classes + c] + sums[2 * classes + c] + smooth) }
        return 1 - mean / Double(classes)
    }

    /// Adds weight x d(loss)/d(logits) of this rank's share into `dlogits`, from the global sums.
    /// dL/dp_c = -(2 t (P_c + T_c + s) - (2 I_c + s)) / (C (P_c + T_c + s)^2), then through the
    /// sigmoid (p (1 - p)) or the softmax (p_k (g_k - sum_c p_c g_c)).
    public static func addGradient(_ dlogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                                   targets: UnsafePointer<Float>, sums: UnsafePointer<Double>, batch: Int, classes: Int,
                                   spatial: Int, softmax: Bool, weight: Double) {
        withUnsafeTemporaryAllocation(of: Double.self, capacity: classes) { g in
            withProbabilities(logits: logits, batch: batch, classes: classes, spatial: spatial,
                              softmax: softmax) { n, i, p in
                var pg = 0.0
                for c in 0..<classes {
                    let i_c = sums[c], d = sums[classes + c] + sums[2 * classes + c] + smooth
                    let t = Double(targets[(n * classes + c) * spatial + i])
                    g[c] = -(2 * t * d - (2 * i_c + smooth)) / (Double(classes) * d * d)
                    pg += Double(p[c]) * g[c]
                }
                for c in 0..<classes {
                    let q = Double(p[c])
                    let dz = softmax ? q * (g[c] - pg) : g[c] * q * (1 - q)
                    dlogits[(n * classes + c) * spatial + i] += Float(weight * dz)
                }
            }
        }
    }

    /// Calls `body(image, pixel, probabilities)` for every pixel, in a fixed order.
    private static func withProbabilities(logits: UnsafePointer<Float>, batch: Int, classes: Int, spatial: Int,
                                          softmax: Bool,
                                          _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: classes) { p in
            let p = p.baseAddress!
            for n in 0..<batch {
                let z = logits + n * classes * spatial
                for i in 0..<spatial {
                    if softmax {
                        var m = -Float.infinity
                        for c in 0..<classes { m = max(m, z[c * spatial + i]) }
                        var total: Float = 0
                        for c in 0..<classes { p[c] = exp(z[c * spatial + i] - m); total += p[c] }
                        for c in 0..<classes { p[c] /= total }
                    } else {
                        for c in 0..<classes { p[c] = sigmoid(z[c * spatial + i]) }
                    }
                    body(n, i, p)
                }
            }
        }
    }
}
