import CBLAS
import Foundation

/// C = alpha * op(A) * op(B) + beta * C, row-major, with leading dimensions of the stored matrices.
@inline(__always)
func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Threads used by OpenBLAS for every GEMM that follows.
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

/// The best of `repeats` timings of an n x n x n sgemm on `threads` OpenBLAS threads, in GFLOP/s.
/// Leaves OpenBLAS on `threads` threads.
public func measureSGEMM(size n: Int = 2048, repeats: Int = 3, threads: Int = 1) -> Double {
    setBLASThreads(threads)
    let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    var rng = SplitMix64(seed: 1)
    for i in 0..<(n * n) { a[i] = rng.uniform(-1, 1); b[i] = rng.uniform(-1, 1); c[i] = 0 }
    var best = Double.infinity
    for r in 0...repeats {
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        sgemm(transA: false, transB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0, c: c, ldc: n)
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let dt = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9
        if r > 0 { best = min(best, dt) }  // the first call warms up caches and OpenBLAS's buffers
    }
    return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
}
