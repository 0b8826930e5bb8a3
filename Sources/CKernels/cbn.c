#include "cbn.h"

#include "bf16.h"
#include "cbn_avx2.h"
#include "simd.h"

// x * scale + shift must round as the Swift forward computes it: a product, then a sum.
#pragma STDC FP_CONTRACT OFF


#if HAVE_AVX512
AVX512 static void sums_avx512(const float *x, long n, double out[2]) {
    __m512d a1 = _mm512_setzero_pd(), b1 = a1, a2 = a1, b2 = a1;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(x + i)), hi = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
        a1 = _mm512_add_pd(a1, lo);
        b1 = _mm512_add_pd(b1, hi);
        a2 = _mm512_add_pd(a2, _mm512_mul_pd(lo, lo));
        b2 = _mm512_add_pd(b2, _mm512_mul_pd(hi, hi));
    }
    double s1 = _mm512_reduce_add_pd(_mm512_add_pd(a1, b1)), s2 = _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));
    for (; i < n; i++) {
        double v = x[i];
        s1 += v;
        s2 += v * v;
    }
    out[0] = s1;
    out[1] = s2;
}
#endif

// x: [n] contiguous floats of one channel; out: {sum x, sum x^2}.
void cbn_sums(const float *x, long n, double out[2], int vectors) {
#if HAVE_AVX512
    if (vectors == CBN_AVX512) return sums_avx512(x, n, out);
    if (vectors == CBN_AVX2) {
        for (long i = cbn_sums_avx2(x, n, out); i < n; i++) {
            double v = x[i];
            out[0] += v;
            out[1] += v * v;
        }
        return;
    }
#endif
    // Eight partial sums, so that the compiler keeps them in vector registers.
    double a1[8] = {0}, a2[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double v = x[i + j];
            a1[j] += v;
            a2[j] += v * v;
        }
    double s1 = 0, s2 = 0;
    for (int j = 0; j < 8; j++) {
        s1 += a1[j];
        s2 += a2[j];
    }
    for (; i < n; i++) {
        double v = x[i];
        s1 += v;
        s2 += v * v;
    }
    out[0] = s1;
    out[1] = s2;
}

// The backward's loops read x as floats, or with xb as the bf16 whose upper halves xb holds
// (a BatchNorm input kept in bf16): expanded exactly as it is loaded, so both give the same
// terms without an expanded copy in memory. Each loop is compiled twice, once with x and once
// with xb (the other NULL), so that the choice is not made per element.

/// x[i] as a float.
static INLINE float x_at(const float *x, const uint16_t *xb, long i) { return xb ? bf16_float(xb[i]) : x[i]; }

/// One element's masked gradient, as the vector loops compute it; xi: x[i].
static INLINE float masked_gradient(const float *dy, float xi, int masked, float scale, float shift, long i) {
    if (masked) return xi * scale + shift <= 0 ? 0 : dy[i];
    return dy[i];
}

#if HAVE_AVX512
/// Sixteen lanes of `x_at`.
AVX512 static INLINE __m512 x_at16(const float *x, const uint16_t *xb, long i) {
    if (!xb) return _mm512_loadu_ps(x + i);
    return bf16_expand16(_mm256_loadu_si256((const __m256i *)(xb + i)));
}

/// Sixteen lanes of `masked_gradient`; x's lanes are given.
AVX512 static INLINE __m512 masked_gradient16(const float *dy, __m512 xv, int masked, __m512 vscale, __m512 vshift,
                                              long i) {
    __m512 g = _mm512_loadu_ps(dy + i), zero = _mm512_setzero_ps();
    if (!masked) return g;
    __m512 y = _mm512_add_ps(_mm512_mul_ps(xv, vscale), vshift);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_NLE_UQ), g);
}

AVX512 static INLINE void gradient_sums16(const float *dy, const float *x, const uint16_t *xb, int masked,
                                          float scale, float shift, long n, float mean, float invstd, double out[2]) {
    __m512d a1 = _mm512_setzero_pd(), b1 = a1, a2 = a1, b2 = a1;
    const __m512 vm = _mm512_set1_ps(mean), vs = _mm512_set1_ps(invstd);
    const __m512 vscale = _mm512_set1_ps(scale), vshift = _mm512_set1_ps(shift);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xv = x_at16(x, xb, i), g = masked_gradient16(dy, xv, masked, vscale, vshift, i);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(xv, vm), vs);
        __m512d glo = low_half(g), ghi = high_half(g), xlo = low_half(xhat), xhi = high_half(xhat);
        a1 = _mm512_add_pd(a1, glo);
        b1 = _mm512_add_pd(b1, ghi);
        a2 = _mm512_add_pd(a2, _mm512_mul_pd(glo, xlo));
        b2 = _mm512_add_pd(b2, _mm512_mul_pd(ghi, xhi));
    }
    double s1 = _mm512_reduce_add_pd(_mm512_add_pd(a1, b1)), s2 = _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));
    for (; i < n; i++) {
        float xi = x_at(x, xb, i);
        double g = masked_gradient(dy, xi, masked, scale, shift, i);
        s1 += g;
        s2 += g * (double)((xi - mean) * invstd);
    }
    out[0] = s1;
    out[1] = s2;
}

AVX512 static void gradient_sums_avx512(const float *dy, const float *x, const uint16_t *xb, int masked,
                                        float scale, float shift, long n, float mean, float invstd, double out[2]) {
    if (xb) gradient_sums16(dy, NULL, xb, masked, scale, shift, n, mean, invstd, out);
    else gradient_sums16(dy, x, NULL, masked, scale, shift, n, mean, invstd, out);
}
#endif

static INLINE void gradient_sums_portable(const float *dy, const float *x, const uint16_t *xb, int masked,
                                          float scale, float shift, long n, float mean, float invstd, double out[2]) {
    double a1[8] = {0}, a2[8] = {0};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float xi = x_at(x, xb, i + j);
            double g = masked_gradient(dy, xi, masked, scale, shift, i + j);
            a1[j] += g;
            a2[j] += g * (double)((xi - mean) * invstd);
        }
    double s1 = 0, s2 = 0;
    for (int j = 0; j < 8; j++) {
        s1 += a1[j];
        s2 += a2[j];
    }
    for (; i < n; i++) {
        float xi = x_at(x, xb, i);
        double g = masked_gradient(dy, xi, masked, scale, shift, i);
        s1 += g;
        s2 += g * (double)((xi - mean) * invstd);
    }
    out[0] = s1;
    out[1] = s2;
}

// dy, x (or xb): [n] contiguous elements of one channel; scale, shift, mean, invstd: that
// channel's; out: {sum g, sum g * xhat}.
void cbn_gradient_sums(const float *dy, const float *x, const uint16_t *xb, int masked, float scale, float shift,
                       long n, float mean, float invstd, double out[2], int vectors) {
#if HAVE_AVX512
    if (vectors == CBN_AVX512) return gradient_sums_avx512(dy, x, xb, masked, scale, shift, n, mean, invstd, out);
    if (vectors == CBN_AVX2) {
        // The tail as gradient_sums16's.
        for (long i = cbn_gradient_sums_avx2(dy, x, xb, masked, scale, shift, n, mean, invstd, out); i < n; i++) {
            float xi = x_at(x, xb, i);
            double g = masked_gradient(dy, xi, masked, scale, shift, i);
            out[0] += g;
            out[1] += g * (double)((xi - mean) * invstd);
        }
        return;
    }
#endif
    if (xb) gradient_sums_portable(dy, NULL, xb, masked, scale, shift, n, mean, invstd, out);
    else gradient_sums_portable(dy, x, NULL, masked, scale, shift, n, mean, invstd, out);
}

#if HAVE_AVX512
AVX512 static void output_avx512(float *y, const float *x, long n, float scale, float shift, int relu) {
    const __m512 vscale = _mm512_set1_ps(scale), vshift = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vscale), vshift);
        // Zero where v <= 0; a NaN passes, as PyTorch's ReLU passes it.
        _mm512_storeu_ps(y + i, relu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_NLE_UQ), v) : v);
    }
    for (; i < n; i++) {
        float v = x[i] * scale + shift;
        y[i] = relu && v <= 0 ? 0 : v;
    }
}
#endif

#if HAVE_AVX512
/// The whole vectors of `cbn_output_keeping_bf16`; returns how many elements it did.
/// VCVTNEPS2BF16 rounds as cbf16_round does.
AVXBF16 static long output_keeping_bf16_avx(float *y, const float *x, uint16_t *xb, long n, float scale, float shift,
                                            int relu) {
    const __m512 vscale = _mm512_set1_ps(scale), vshift = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i b;
        if (x) {
            b = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
            _mm256_storeu_si256((__m256i *)(xb + i), b);
        } else {
            b = _mm256_loadu_si256((const __m256i *)(xb + i));
        }
        __m512 r = bf16_expand16(b);
        __m512 v = _mm512_add_ps(_mm512_mul_ps(r, vscale), vshift);
        if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_NLE_UQ), v);
        _mm512_storeu_ps(y + i, v);
    }
    return i;
}

AVX512 static long expand_bf16_avx512(float *x, const uint16_t *xb, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(x + i, bf16_expand16(_mm256_loadu_si256((const __m256i *)(xb + i))));
    }
    return i;
}
#endif

// y, x: [n] contiguous floats of one channel (y may be x); scale, shift: that channel's.
void cbn_output(float *y, const float *x, long n, float scale, float shift, int relu, int vectors) {
    long i = 0;
#if HAVE_AVX512
    if (vectors == CBN_AVX512) return output_avx512(y, x, n, scale, shift, relu);
    if (vectors == CBN_AVX2) i = cbn_output_avx2(y, x, n, scale, shift, relu);
#endif
    for (; i < n; i++) {
        float v = x[i] * scale + shift;
        y[i] = relu && v <= 0 ? 0 : v;
    }
}

#if HAVE_AVX512
/// Sixteen lanes of dx (`cbn_input_gradient`) from i on (inlined: the broadcasts leave the loops).
AVX512 static INLINE __m512 input_gradient_at16(const float *dy, const float *x, const uint16_t *xb, int masked,
                                                float scale, float shift, float mean, float invstd, float k,
                                                float mean_dy, float mean_dy_xhat, long i) {
    __m512 xv = x_at16(x, xb, i);
    __m512 g = masked_gradient16(dy, xv, masked, _mm512_set1_ps(scale), _mm512_set1_ps(shift), i);
    __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(xv, _mm512_set1_ps(mean)), _mm512_set1_ps(invstd));
    __m512 centred = _mm512_sub_ps(_mm512_sub_ps(g, _mm512_set1_ps(mean_dy)),
                                   _mm512_mul_ps(xhat, _mm512_set1_ps(mean_dy_xhat)));
    return _mm512_mul_ps(_mm512_set1_ps(k), centred);
}

/// The whole vectors of `cbn_input_gradient` with dx as floats; returns how many elements it did.
AVX512 static INLINE long input_gradient16(float *dx, const float *dy, const float *x, const uint16_t *xb, int masked,
                                           float scale, float shift, long n, float mean, float invstd, float k,
                                           float mean_dy, float mean_dy_xhat) {
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dx + i, input_gradient_at16(dy, x, xb, masked, scale, shift, mean, invstd, k, mean_dy,
                                                     mean_dy_xhat, i));
    return i;
}

/// As `input_gradient16`, dx written as its rounded halves (VCVTNEPS2BF16 rounds as cbf16_round does).
AVXBF16 static INLINE long input_gradient_halves16(uint16_t *dxb, const float *dy, const float *x, const uint16_t *xb,
                                                   int masked, float scale, float shift, long n, float mean,
                                                   float invstd, float k, float mean_dy, float mean_dy_xhat) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = input_gradient_at16(dy, x, xb, masked, scale, shift, mean, invstd, k, mean_dy, mean_dy_xhat, i);
        _mm256_storeu_si256((__m256i *)(dxb + i), (__m256i)_mm512_cvtneps_pbh(v));
    }
    return i;
}

AVX512 static long input_gradient_avx512(float *dx, const float *dy, const float *x, const uint16_t *xb, int masked,
                                         float scale, float shift, long n, float mean, float invstd, float k,
                                         float mean_dy, float mean_dy_xhat) {
    if (xb) return input_gradient16(dx, dy, NULL, xb, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
    return input_gradient16(dx, dy, x, NULL, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
}

AVXBF16 static long input_gradient_halves_avx(uint16_t *dxb, const float *dy, const float *x, const uint16_t *xb,
                                              int masked, float scale, float shift, long n, float mean, float invstd,
                                              float k, float mean_dy, float mean_dy_xhat) {
    if (xb) return input_gradient_halves16(dxb, dy, NULL, xb, masked, scale, shift, n, mean, invstd, k, mean_dy,
                                           mean_dy_xhat);
    return input_gradient_halves16(dxb, dy, x, NULL, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
}
#endif

static INLINE void input_gradient_portable(float *dx, uint16_t *dxb, const float *dy, const float *x,
                                           const uint16_t *xb, int masked, float scale, float shift, long i, long n,
                                           float mean, float invstd, float k, float mean_dy, float mean_dy_xhat) {
    for (; i < n; i++) {
        float xi = x_at(x, xb, i);
        float g = masked_gradient(dy, xi, masked, scale, shift, i), xhat = (xi - mean) * invstd;
        float v = k * ((g - mean_dy) - xhat * mean_dy_xhat);
        if (dxb) dxb[i] = bf16_round(v);
        else dx[i] = v;
    }
}

// dx (or dxb), dy, x (or xb): [n] contiguous elements of one channel; the other arguments: that
// channel's statistics and gradient sums.
void cbn_input_gradient(float *dx, uint16_t *dxb, const float *dy, const float *x, const uint16_t *xb, int masked,
                        float scale, float shift, long n, float mean, float invstd, float k, float mean_dy,
                        float mean_dy_xhat, int vectors) {
    long i = 0;
#if HAVE_AVX512
    if (vectors == CBN_AVX512 && dxb)
        i = input_gradient_halves_avx(dxb, dy, x, xb, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
    else if (vectors == CBN_AVX512)
        i = input_gradient_avx512(dx, dy, x, xb, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
    else if (vectors == CBN_AVX2 && !dxb)
        i = cbn_input_gradient_avx2(dx, dy, x, xb, masked, scale, shift, n, mean, invstd, k, mean_dy, mean_dy_xhat);
#endif
    if (xb) input_gradient_portable(dx, dxb, dy, NULL, xb, masked, scale, shift, i, n, mean, invstd, k, mean_dy,
                                    mean_dy_xhat);
    else input_gradient_portable(dx, dxb, dy, x, NULL, masked, scale, shift, i, n, mean, invstd, k, mean_dy,
                                 mean_dy_xhat);
}

#if HAVE_AVX512
AVX512 static INLINE double sum16(const float *x, const uint16_t *xb, long n) {
    __m512d lo = _mm512_setzero_pd(), hi = lo;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = x_at16(x, xb, i);
        lo = _mm512_add_pd(lo, low_half(v));
        hi = _mm512_add_pd(hi, high_half(v));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
    for (; i < n; i++) s += x_at(x, xb, i);
    return s;
}

AVX512 static double sum_avx512(const float *x, const uint16_t *xb, long n) {
    return xb ? sum16(NULL, xb, n) : sum16(x, NULL, n);
}
#endif

static INLINE double sum_portable(const float *x, const uint16_t *xb, long n) {
    double a[8] = {0}, s = 0;
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x_at(x, xb, i + j);
    for (int j = 0; j < 8; j++) s += a[j];
    for (; i < n; i++) s += x_at(x, xb, i);
    return s;
}

// x (or xb): [n] contiguous elements of one channel (a row of dy, for the bias gradient).
double cbn_sum(const float *x, const uint16_t *xb, long n, int vectors) {
#if HAVE_AVX512
    if (vectors == CBN_AVX512) return sum_avx512(x, xb, n);
    if (vectors == CBN_AVX2) {
        double s;
        for (long i = cbn_sum_avx2(x, xb, n, &s); i < n; i++) s += x_at(x, xb, i);
        return s;
    }
#endif
    return xb ? sum_portable(NULL, xb, n) : sum_portable(x, NULL, n);
}

// y = x rounded to bf16 (xb: its upper halves), then * scale + shift, and max(y, 0) with relu.
/// One output of `cbn_output_keeping_bf16` from its kept half.
static float output_from_half(uint16_t xb, float scale, float shift, int relu) {
    float v = bf16_float(xb) * scale + shift;
    return relu && v <= 0 ? 0 : v;
}

void cbn_output_keeping_bf16(float *y, const float *x, uint16_t *xb, long n, float scale, float shift, int relu,
                             int avx512bf16) {
    long i = 0;
#if HAVE_AVX512
    if (avx512bf16) i = output_keeping_bf16_avx(y, x, xb, n, scale, shift, relu);
#endif
    for (; i < n; i++) {
        if (x) xb[i] = bf16_round(x[i]);
        y[i] = output_from_half(xb[i], scale, shift, relu);
    }
}

#if HAVE_AVX512
/// Sixteen outputs of output_keeping_bf16_avx from kept halves, rounded to bf16 and widened to
/// the low halves of sixteen words.
AVXBF16 static INLINE __m512i output_half_words(const uint16_t *xb, __m512 scale, __m512 shift, int relu) {
    __m512 v = _mm512_add_ps(_mm512_mul_ps(bf16_expand16(_mm256_loadu_si256((const __m256i *)xb)), scale), shift);
    if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v));
}

AVXBF16 static long output_pairs_avx(uint32_t *p, const uint16_t *lo, const uint16_t *hi, long n, float scale_lo,
                                     float shift_lo, float scale_hi, float shift_hi, int relu) {
    const __m512 s0 = _mm512_set1_ps(scale_lo), t0 = _mm512_set1_ps(shift_lo);
    const __m512 s1 = _mm512_set1_ps(scale_hi), t1 = _mm512_set1_ps(shift_hi);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = output_half_words(lo + i, s0, t0, relu);
        if (hi) w = _mm512_or_si512(w, _mm512_slli_epi32(output_half_words(hi + i, s1, t1, relu), 16));
        _mm512_storeu_si512(p + i, w);
    }
    return i;
}
#endif

void cbn_output_pairs(uint32_t *p, const uint16_t *lo, const uint16_t *hi, long n, float scale_lo, float shift_lo,
                      float scale_hi, float shift_hi, int relu, int avx512bf16) {
    long i = 0;
#if HAVE_AVX512
    if (avx512bf16) i = output_pairs_avx(p, lo, hi, n, scale_lo, shift_lo, scale_hi, shift_hi, relu);
#endif
    for (; i < n; i++) {
        uint32_t a = bf16_round(output_from_half(lo[i], scale_lo, shift_lo, relu));
        uint32_t b = hi ? bf16_round(output_from_half(hi[i], scale_hi, shift_hi, relu)) : 0;
        p[i] = a | b << 16;
    }
}

#if HAVE_AVX512
AVXBF16 static long round_bf16_avx(uint16_t *xb, const float *x, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(xb + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    return i;
}
#endif

void cbn_round_bf16(uint16_t *xb, const float *x, long n, int avx512bf16) {
    long i = 0;
#if HAVE_AVX512
    if (avx512bf16) i = round_bf16_avx(xb, x, n);
#endif
    for (; i < n; i++) xb[i] = bf16_round(x[i]);
}

// x = the floats whose upper halves xb holds.
void cbn_expand_bf16(float *x, const uint16_t *xb, long n, int avx512) {
    long i = 0;
#if HAVE_AVX512
    if (avx512) i = expand_bf16_avx512(x, xb, n);
#endif
    for (; i < n; i++) x[i] = bf16_float(xb[i]);
}
