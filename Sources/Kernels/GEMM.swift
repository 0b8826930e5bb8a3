import CBLAS

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
