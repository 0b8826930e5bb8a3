#include "closs.h"

#include "simd.h"
#include <math.h>

#pragma STDC FP_CONTRACT OFF


// glibc's libmvec: expf and log1pf on sixteen and eight lanes (the vector function ABI's AVX-512
// and AVX2 names).
#if HAVE_AVX512
AVX512 __m512 _ZGVeN16v_expf(__m512 x);
AVX512 __m512 _ZGVeN16v_log1pf(__m512 x);
AVX2 __m256 _ZGVdN8v_expf(__m256 x);
AVX2 __m256 _ZGVdN8v_log1pf(__m256 x);
#endif

static inline float bce_term(float x, float t, float e) { return (x > 0 ? x : 0) - x * t + log1pf(e); }
static inline float bce_gradient(float x, float t, float e, float scale) {
    return ((x >= 0 ? 1 / (1 + e) : e / (1 + e)) - t) * scale;
}

/// Elements [i, n) with the scalar expf and log1pf, their terms added to `sum`: the portable
/// path, and the vector paths' last elements.
static double bce_scalar(double sum, float *dlogits, const float *logits, const float *targets, long i, long n,
                         float scale) {
    for (; i < n; i++) {
        float x = logits[i], t = targets[i], e = expf(-fabsf(x));
        sum += bce_term(x, t, e);
        if (dlogits) dlogits[i] = bce_gradient(x, t, e, scale);
    }
    return sum;
}

#if HAVE_AVX512
AVX512 static double bce_avx512(float *dlogits, const float *logits, const float *targets, long n, float scale) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1), vscale = _mm512_set1_ps(scale);
    __m512d lo = _mm512_setzero_pd(), hi = lo;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(logits + i), t = _mm512_loadu_ps(targets + i);
        __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(zero, _mm512_abs_ps(x)));
        __m512 term = _mm512_add_ps(_mm512_sub_ps(_mm512_max_ps(x, zero), _mm512_mul_ps(x, t)), _ZGVeN16v_log1pf(e));
        lo = _mm512_add_pd(lo, low_half(term));
        hi = _mm512_add_pd(hi, high_half(term));
        if (dlogits) {
            __m512 d = _mm512_add_ps(one, e);
            __m512 s = _mm512_mask_div_ps(_mm512_div_ps(e, d), _mm512_cmp_ps_mask(x, zero, _CMP_GE_OQ), one, d);
            _mm512_storeu_ps(dlogits + i, _mm512_mul_ps(_mm512_sub_ps(s, t), vscale));
        }
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
    return bce_scalar(sum, dlogits, logits, targets, i, n, scale);
}

AVX2 static double bce_avx2(float *dlogits, const float *logits, const float *targets, long n, float scale) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1), vscale = _mm256_set1_ps(scale);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(logits + i), t = _mm256_loadu_ps(targets + i);
        __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(zero, _mm256_and_ps(x, magnitude)));
        __m256 term = _mm256_add_ps(_mm256_sub_ps(_mm256_max_ps(x, zero), _mm256_mul_ps(x, t)), _ZGVdN8v_log1pf(e));
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(term)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(term, 1)));
        if (dlogits) {
            __m256 d = _mm256_add_ps(one, e);
            __m256 s = _mm256_blendv_ps(_mm256_div_ps(e, d), _mm256_div_ps(one, d), _mm256_cmp_ps(x, zero, _CMP_GE_OQ));
            _mm256_storeu_ps(dlogits + i, _mm256_mul_ps(_mm256_sub_ps(s, t), vscale));
        }
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(lo, hi));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    return bce_scalar(sum, dlogits, logits, targets, i, n, scale);
}
#endif

// logits, targets, dlogits: [n] floats in one layout (N x C x H x W, flattened); dlogits may
// be NULL (no gradient).
double closs_bce_with_logits(float *dlogits, const float *logits, const float *targets, long n, float grad_scale,
                             int vectors) {
#if HAVE_AVX512
    if (vectors == 1) return bce_avx512(dlogits, logits, targets, n, grad_scale);
    if (vectors == 2) return bce_avx2(dlogits, logits, targets, n, grad_scale);
#endif
    return bce_scalar(0, dlogits, logits, targets, 0, n, grad_scale);
}
