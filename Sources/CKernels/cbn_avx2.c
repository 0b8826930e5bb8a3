#include "cbn_avx2.h"

// BatchNorm's loops (cbn.c) for CPUs with AVX2 but no AVX-512. Each loop is its AVX-512 twin's on
// eight lanes: a vector of sixteen floats there is two of eight here, a vector of eight doubles
// two of four, and the lanes are added up in the order _mm512_reduce_add_pd adds them (halves,
// then quarters, then the last two). The same sums in the same order: the same bits.

// x * scale + shift must round as the Swift forward computes it: a product, then a sum.
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)
/// Eight doubles held as two vectors, as one AVX-512 vector of doubles.
typedef struct {
    __m256d lo, hi;
} D8;

AVX2 static INLINE D8 d8_zero(void) { return (D8){_mm256_setzero_pd(), _mm256_setzero_pd()}; }

AVX2 static INLINE D8 d8_add(D8 a, D8 b) { return (D8){_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }

AVX2 static INLINE D8 d8_mul(D8 a, D8 b) { return (D8){_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; }

/// Eight floats as doubles.
AVX2 static INLINE D8 d8_of(__m256 v) {
    return (D8){_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
}

/// The sum of the eight lanes in _mm512_reduce_add_pd's order.
AVX2 static INLINE double d8_reduce(D8 a) {
    __m256d u = _mm256_add_pd(a.lo, a.hi);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(u), _mm256_extractf128_pd(u, 1));
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

/// Eight floats from x, or the bf16 whose upper halves xb holds, expanded exactly.
AVX2 static INLINE __m256 x_at8(const float *x, const uint16_t *xb, long i) {
    if (!xb) return _mm256_loadu_ps(x + i);
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(xb + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/// dy's lanes, zero where the fused ReLU's output x * scale + shift is not positive (NaN passes).
AVX2 static INLINE __m256 masked_gradient8(const float *dy, __m256 xv, int masked, float scale, float shift, long i) {
    __m256 g = _mm256_loadu_ps(dy + i);
    if (!masked) return g;
    __m256 y = _mm256_add_ps(_mm256_mul_ps(xv, _mm256_set1_ps(scale)), _mm256_set1_ps(shift));
    return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NLE_UQ), g);
}

AVX2 long cbn_sums_avx2(const float *x, long n, double out[2]) {
    D8 a1 = d8_zero(), b1 = a1, a2 = a1, b2 = a1;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        D8 lo = d8_of(_mm256_loadu_ps(x + i)), hi = d8_of(_mm256_loadu_ps(x + i + 8));
        a1 = d8_add(a1, lo);
        b1 = d8_add(b1, hi);
        a2 = d8_add(a2, d8_mul(lo, lo));
        b2 = d8_add(b2, d8_mul(hi, hi));
    }
    out[0] = d8_reduce(d8_add(a1, b1));
    out[1] = d8_reduce(d8_add(a2, b2));
    return i;
}

AVX2 static INLINE long gradient_sums8(const float *dy, const float *x, const uint16_t *xb, int masked, float scale,
                                       float shift, long n, float mean, float invstd, double out[2]) {
    D8 a1 = d8_zero(), b1 = a1, a2 = a1, b2 = a1;
    const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(invstd);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = x_at8(x, xb, i), x1 = x_at8(x, xb, i + 8);
        __m256 g0 = masked_gradient8(dy, x0, masked, scale, shift, i);
        __m256 g1 = masked_gradient8(dy, x1, masked, scale, shift, i + 8);
        __m256 h0 = _mm256_mul_ps(_mm256_sub_ps(x0, vm), vs), h1 = _mm256_mul_ps(_mm256_sub_ps(x1, vm), vs);
        D8 glo = d8_of(g0), ghi = d8_of(g1);
        a1 = d8_add(a1, glo);
        b1 = d8_add(b1, ghi);
        a2 = d8_add(a2, d8_mul(glo, d8_of(h0)));
        b2 = d8_add(b2, d8_mul(ghi, d8_of(h1)));
    }
    out[0] = d8_reduce(d8_add(a1, b1));
    out[1] = d8_reduce(d8_add(a2, b2));
    return i;
}

AVX2 long cbn_gradient_sums_avx2(const float *dy, const float *x, const uint16_t *xb, int masked, float scale,
                                 float shift, long n, float mean, float invstd, double out[2]) {
    if (xb) return gradient_sums8(dy, NULL, xb, masked, scale, shift, n, mean, invstd, out);
    return gradient_sums8(dy, x, NULL, masked, scale, shift, n, mean, invstd, out);
}

AVX2 long cbn_output_avx2(float *y, const float *x, long n, float scale, float shift, int relu) {
    const __m256 vscale = _mm256_set1_ps(scale), vshift = _mm256_set1_ps(shift), zero = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vscale), vshift);
        _mm256_storeu_ps(y + i, relu ? _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_NLE_UQ), v) : v);
    }
    return i;
}

AVX2 static INLINE long input_gradient8(float *dx, const float *dy, const float *x, const uint16_t *xb, int masked,
                                        float scale, float shift, long n, float mean, float invstd, float k,
                                        float mean_dy, float mean_dy_xhat) {
    const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(invstd), vk = _mm256_set1_ps(k);
    const __m256 vmd = _mm256_set1_ps(mean_dy), vmdx = _mm256_set1_ps(mean_dy_xhat);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = x_at8(x, xb, i), g = masked_gradient8(dy, xv, masked, scale, shift, i);
        __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(xv, vm), vs);
        __m256 centred = _mm256_sub_ps(_mm256_sub_ps(g, vmd), _mm256_mul_ps(xhat, vmdx));
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(vk, centred));
    }
    return i;
}

AVX2 long cbn_input_gradient_avx2(float *dx, const float *dy, const float *x, const uint16_t *xb, int masked,
                                  float scale, float shift, long n, float mean, float invstd, float k, float mean_dy,
                                  float mean_dy_xhat) {
    if (xb) return input_gradient8(dx, dy, NULL, xb, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
    return input_gradient8(dx, dy, x, NULL, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
}

AVX2 static INLINE long sum8(const float *x, const uint16_t *xb, long n, double *s) {
    D8 lo = d8_zero(), hi = lo;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = d8_add(lo, d8_of(x_at8(x, xb, i)));
        hi = d8_add(hi, d8_of(x_at8(x, xb, i + 8)));
    }
    *s = d8_reduce(d8_add(lo, hi));
    return i;
}

AVX2 long cbn_sum_avx2(const float *x, const uint16_t *xb, long n, double *s) {
    return xb ? sum8(NULL, xb, n, s) : sum8(x, NULL, n, s);
}
#endif
