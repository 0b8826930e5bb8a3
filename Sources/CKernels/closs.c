#include "closs.h"

#include "simd.h"
#include <math.h>

#pragma STDC FP_CONTRACT OFF


// glibc's libmvec: expf and log1pf on sixteen lanes (the vector function ABI's AVX-512 names).
#if HAVE_AVX512
AVX512 __m512 _ZGVeN16v_expf(__m512 x);
AVX512 __m512 _ZGVeN16v_log1pf(__m512 x);
#endif

static inline float bce_term(float x, float t, float e) { return (x > 0 ? x : 0) - x * t + log1pf(e); }
static inline float bce_gradient(float x, float t, float e, float scale) {
    return ((x >= 0 ? 1 / (1 + e) : e / (1 + e)) - t) * scale;
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
    for (; i < n; i++) {
        float x = logits[i], t = targets[i], e = expf(-fabsf(x));
        sum += bce_term(x, t, e);
        if (dlogits) dlogits[i] = bce_gradient(x, t, e, scale);
    }
    return sum;
}
#endif

// logits, targets, dlogits: [n] floats in one layout (N x C x H x W, flattened); dlogits may
// be NULL (no gradient).
double closs_bce_with_logits(float *dlogits, const float *logits, const float *targets, long n, float grad_scale,
                             int avx512) {
#if HAVE_AVX512
    if (avx512) return bce_avx512(dlogits, logits, targets, n, grad_scale);
#endif
    double sum = 0;
    for (long i = 0; i < n; i++) {
        float x = logits[i], t = targets[i], e = expf(-fabsf(x));
        sum += bce_term(x, t, e);
        if (dlogits) dlogits[i] = bce_gradient(x, t, e, grad_scale);
    }
    return sum;
}
