#include "cconv.h"

#include "simd.h"
#include "tiles.h"

// The narrow GEMM of cconv.h: ConvTranspose2d's per-pixel products, with the direct
// convolutions' register tile (tiles.h).

// a: [m, k], rows lda apart ([k, m] when transposed); packed: [ceil(m / OB), k, OB], zero past
// row m.
size_t cgemm_packed_count(int m, int k) { return (size_t)((m + OB - 1) / OB) * (size_t)k * OB; }

void cgemm_pack(float *packed, const float *a, size_t lda, int m, int k, int transposed) {
    for (int b = 0; b * OB < m; b++)
        for (int kk = 0; kk < k; kk++)
            for (int j = 0; j < OB; j++) {
                int row = b * OB + j;
                float v = 0;
                if (row < m) v = transposed ? a[(size_t)kk * lda + row] : a[(size_t)row * lda + kk];
                packed[((size_t)b * k + kk) * OB + j] = v;
            }
}

#if HAVE_AVX512
// packed: A (m x k) from cgemm_pack; b: [k, n], rows ldb apart; c: [m, n], rows ldc apart,
// assigned.
AVX512 void cgemm_narrow(float *c, size_t ldc, const float *packed, const float *b, size_t ldb, int m, int n, int k) {
    // Columns outside, row blocks inside: a tile of B (k x 48) stays in L1 for every block of A.
    for (int j = 0; j < n; j += TV * LANES) {
        __mmask16 lanes[TV];
        for (int s = 0; s < TV; s++) lanes[s] = low_lanes(n - j - s * LANES);
        for (int blk = 0; blk * OB < m; blk++) {
            int rows = m - blk * OB < OB ? m - blk * OB : OB;
            const float *pa = packed + (size_t)blk * k * OB;
            __m512 acc[OB][TV];
            for (int o = 0; o < OB; o++)
                for (int s = 0; s < TV; s++) acc[o][s] = _mm512_setzero_ps();
            for (int kk = 0; kk < k; kk++) {
                const float *bk = b + (size_t)kk * ldb + j;
                __m512 bv[TV];
                for (int s = 0; s < TV; s++) bv[s] = _mm512_maskz_loadu_ps(lanes[s], bk + s * LANES);
                for (int o = 0; o < OB; o++) {
                    __m512 w = _mm512_set1_ps(pa[kk * OB + o]);
                    for (int s = 0; s < TV; s++) acc[o][s] = _mm512_fmadd_ps(w, bv[s], acc[o][s]);
                }
            }
            for (int o = 0; o < rows; o++)
                for (int s = 0; s < TV; s++)
                    _mm512_mask_storeu_ps(c + (size_t)(blk * OB + o) * ldc + j + s * LANES, lanes[s], acc[o][s]);
        }
    }
}
#endif
