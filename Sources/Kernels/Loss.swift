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
                                               gradScale, avx512Kernels ? 1 : 0)
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
