#include "cpool.h"

#include <string.h>

#include "simd.h"

#if HAVE_AVX512

enum { LANES = 16 };

/// Swift's max(x, y): y where y >= x, else x (so x where either is NaN).
AVX512 static INLINE __m512 swift_max(__m512 x, __m512 y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, x, _CMP_GE_OQ), x, y);
}

/// Columns 2i and 2i + 1 of 2n floats at p (n <= 16), as lane i of `even` and `odd`.
AVX512 static INLINE void split_columns(const float *p, int n, __m512 *even, __m512 *odd) {
    const __m512i e = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i o = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512 lo = _mm512_maskz_loadu_ps(low_lanes(2 * n), p), hi = _mm512_maskz_loadu_ps(low_lanes(2 * n - LANES),
                                                                                       p + LANES);
    *even = _mm512_permutex2var_ps(lo, e, hi);
    *odd = _mm512_permutex2var_ps(lo, o, hi);
}

/// The inverse: lane i of `even` and `odd` to columns 2i and 2i + 1 of 2n floats at p, added
/// to what p holds with `accumulate`.
AVX512 static INLINE void join_columns(float *p, int n, __m512 even, __m512 odd, int accumulate) {
    __mmask16 mlo = low_lanes(2 * n), mhi = low_lanes(2 * n - LANES);
    __m512 lo, hi;
    interleave(even, odd, &lo, &hi);
    if (accumulate) {
        lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(mlo, p));
        hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mhi, p + LANES));
    }
    _mm512_mask_storeu_ps(p, mlo, lo);
    _mm512_mask_storeu_ps(p + LANES, mhi, hi);
}

// x: [height, width], one plane, row-major; y: [height / 2, width / 2].
AVX512 void cpool2_forward(float *y, const float *x, int height, int width) {
    int oh = height / 2, ow = width / 2;
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = x + (size_t)2 * oy * width, *r1 = r0 + width;
        for (int ox = 0; ox < ow; ox += LANES) {
            int n = ow - ox < LANES ? ow - ox : LANES;
            __m512 a, b, c, d;
            split_columns(r0 + 2 * ox, n, &a, &b);
            split_columns(r1 + 2 * ox, n, &c, &d);
            _mm512_mask_storeu_ps(y + (size_t)oy * ow + ox, low_lanes(n), swift_max(swift_max(a, b), swift_max(c, d)));
        }
    }
}

// x, dx: [height, width], one plane, row-major; dy: [height / 2, width / 2].
AVX512 void cpool2_backward(float *dx, const float *dy, const float *x, int height, int width, int accumulate) {
    int oh = height / 2, ow = width / 2;
    const __m512 zero = _mm512_setzero_ps();
    for (int oy = 0; oy < oh; oy++) {
        size_t r0 = (size_t)2 * oy * width, r1 = r0 + width;
        for (int ox = 0; ox < ow; ox += LANES) {
            int n = ow - ox < LANES ? ow - ox : LANES;
            __m512 a, b, c, d;
            split_columns(x + r0 + 2 * ox, n, &a, &b);
            split_columns(x + r1 + 2 * ox, n, &c, &d);
            // The first maximum in scan order: a later pixel wins only when strictly greater.
            __mmask16 tb = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ);
            __m512 m = _mm512_mask_blend_ps(tb, a, b);
            __mmask16 tc = _mm512_cmp_ps_mask(c, m, _CMP_GT_OQ);
            m = _mm512_mask_blend_ps(tc, m, c);
            __mmask16 td = _mm512_cmp_ps_mask(d, m, _CMP_GT_OQ);
            __mmask16 wd = td, wc = tc & ~td, wb = tb & ~tc & ~td, wa = ~(tb | tc | td);
            __m512 g = _mm512_maskz_loadu_ps(low_lanes(n), dy + (size_t)oy * ow + ox);
            join_columns(dx + r0 + 2 * ox, n, _mm512_mask_blend_ps(wa, zero, g), _mm512_mask_blend_ps(wb, zero, g),
                         accumulate);
            join_columns(dx + r1 + 2 * ox, n, _mm512_mask_blend_ps(wc, zero, g), _mm512_mask_blend_ps(wd, zero, g),
                         accumulate);
        }
        if (!accumulate && width % 2 == 1) dx[r0 + width - 1] = dx[r1 + width - 1] = 0;
    }
    if (!accumulate && height % 2 == 1) memset(dx + (size_t)(height - 1) * width, 0, sizeof(float) * width);
}

#endif

#if HAVE_AVX512

// The same with AVX2 (for CPUs without AVX-512): 16 input columns of two rows at a time, the
// same comparisons, so the same bits.
enum { L8 = 8 };

AVX2 static INLINE __m256 swift_max8(__m256 x, __m256 y) {
    return _mm256_blendv_ps(x, y, _mm256_cmp_ps(y, x, _CMP_GE_OQ));
}

/// Columns 2i and 2i + 1 of 2n floats at p (n <= 8), as lane i of `even` and `odd`.
AVX2 static INLINE void split_columns8(const float *p, int n, __m256 *even, __m256 *odd) {
    __m256 lo = load_first8(p, 2 * n), hi = n > L8 / 2 ? load_first8(p + L8, 2 * n - L8) : _mm256_setzero_ps();
    // Within each 128-bit half: lo's even (odd) columns, then hi's; then the halves' middle
    // 64-bit quarters swapped.
    __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

/// The inverse: lane i of `even` and `odd` to columns 2i and 2i + 1 of 2n floats at p, added
/// to what p holds with `accumulate`.
AVX2 static INLINE void join_columns8(float *p, int n, __m256 even, __m256 odd, int accumulate) {
    __m256 lo, hi;
    interleave8(even, odd, &lo, &hi);
    if (accumulate) lo = _mm256_add_ps(lo, load_first8(p, 2 * n));
    store_first8(p, lo, 2 * n);
    if (n <= L8 / 2) return;
    if (accumulate) hi = _mm256_add_ps(hi, load_first8(p + L8, 2 * n - L8));
    store_first8(p + L8, hi, 2 * n - L8);
}

AVX2 void cpool2_forward_avx2(float *y, const float *x, int height, int width) {
    int oh = height / 2, ow = width / 2;
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = x + (size_t)2 * oy * width, *r1 = r0 + width;
        for (int ox = 0; ox < ow; ox += L8) {
            int n = ow - ox < L8 ? ow - ox : L8;
            __m256 a, b, c, d;
            split_columns8(r0 + 2 * ox, n, &a, &b);
            split_columns8(r1 + 2 * ox, n, &c, &d);
            store_first8(y + (size_t)oy * ow + ox, swift_max8(swift_max8(a, b), swift_max8(c, d)), n);
        }
    }
}

AVX2 void cpool2_backward_avx2(float *dx, const float *dy, const float *x, int height, int width, int accumulate) {
    int oh = height / 2, ow = width / 2;
    for (int oy = 0; oy < oh; oy++) {
        size_t r0 = (size_t)2 * oy * width, r1 = r0 + width;
        for (int ox = 0; ox < ow; ox += L8) {
            int n = ow - ox < L8 ? ow - ox : L8;
            __m256 a, b, c, d;
            split_columns8(x + r0 + 2 * ox, n, &a, &b);
            split_columns8(x + r1 + 2 * ox, n, &c, &d);
            // The first maximum in scan order: a later pixel wins only when strictly greater.
            __m256 tb = _mm256_cmp_ps(b, a, _CMP_GT_OQ);
            __m256 m = _mm256_blendv_ps(a, b, tb);
            __m256 tc = _mm256_cmp_ps(c, m, _CMP_GT_OQ);
            m = _mm256_blendv_ps(m, c, tc);
            __m256 td = _mm256_cmp_ps(d, m, _CMP_GT_OQ);
            // Which pixel wins, as all-ones lanes: d where td, else c where tc, else b where tb, else a.
            __m256 wc = _mm256_andnot_ps(td, tc), wb = _mm256_andnot_ps(_mm256_or_ps(tc, td), tb);
            __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
            __m256 wa = _mm256_andnot_ps(_mm256_or_ps(tb, _mm256_or_ps(tc, td)), all);
            __m256 g = load_first8(dy + (size_t)oy * ow + ox, n);
            join_columns8(dx + r0 + 2 * ox, n, _mm256_and_ps(wa, g), _mm256_and_ps(wb, g), accumulate);
            join_columns8(dx + r1 + 2 * ox, n, _mm256_and_ps(wc, g), _mm256_and_ps(td, g), accumulate);
        }
        if (!accumulate && width % 2 == 1) dx[r0 + width - 1] = dx[r1 + width - 1] = 0;
    }
    if (!accumulate && height % 2 == 1) memset(dx + (size_t)(height - 1) * width, 0, sizeof(float) * width);
}

#endif
