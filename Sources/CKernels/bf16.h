#ifndef UNET_DIST_BF16_H
#define UNET_DIST_BF16_H

// The bf16 words and the pair step that the bf16 convolutions (cconv_bf16.c) and transposed
// convolutions (cconvt_bf16.c) share: the portable step (a row of them) and its AVX512_BF16
// instruction.

#include <string.h>

#include "cconv_bf16.h"
#include "simd.h"

/// `cbf16_round`, inline: the loops that round whole tensors call it per element.
static inline uint16_t bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t exponent = u & 0x7F800000u;
    // As VCVTNE2PS2BF16: a denormal becomes a zero of its sign, a NaN stays a (quiet) NaN.
    if (exponent == 0) return (uint16_t)((u >> 16) & 0x8000);
    if (exponent == 0x7F800000u && (u & 0x007FFFFFu)) return (uint16_t)((u >> 16) | 0x0040);
    // Round to nearest, ties to the even bf16 (whose lowest kept bit is bit 16).
    u += 0x7FFFu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/// `cbf16_float`, inline: exact, the bf16's bits as a float's upper half.
static inline float bf16_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/// (low, high) rounded to bf16, in one word: low in bits 0-15, high in bits 16-31.
static inline uint32_t pair(float low, float high) {
    return (uint32_t)bf16_round(low) | (uint32_t)bf16_round(high) << 16;
}

// The pair step must round its product and its sum apart: -ffast-math or -ffp-contract=fast
// would fuse them (clang then ignores the pragma below), and products in float32's denormal
// range would round differently on the AVX2 set than on the portable one.
#if defined(__FAST_MATH__)
#error "the bf16 kernels need their products and sums rounded apart: build without -ffast-math"
#endif

/// One vdpbf16ps lane on n sums at once: s[i] gets a[i]'s high half times w's, then its low half
/// times w's (each product of two bf16 exact in float32 unless it falls below float32's normal
/// range). The portable kernels are written as such loops over pixels or channels, which the
/// compiler vectorizes; each sum still adds the same products in the same order.
static INLINE void dot_pair_row(float *restrict s, const uint32_t *restrict a, uint32_t w, int n) {
    // A product, then a sum, each rounded: an FMA would round a denormal product differently.
#pragma STDC FP_CONTRACT OFF
    float wh = bf16_float((uint16_t)(w >> 16)), wl = bf16_float((uint16_t)w);
    for (int i = 0; i < n; i++) {
        float high = bf16_float((uint16_t)(a[i] >> 16)) * wh, low = bf16_float((uint16_t)a[i]) * wl;
        float sum = s[i] + high;
        s[i] = sum + low;
    }
}

#if HAVE_AVX512
#define AVXBF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

/// Sixteen bf16 (upper halves) as the floats they are, exactly: `bf16_float` on every lane.
AVX512 static INLINE __m512 bf16_expand16(__m256i b) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}

/// Sixteen lanes, each the sum s + (high product) + (low product) of its pair of bf16 pairs.
AVXBF16 static INLINE __m512 dot(__m512 s, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(s, (__m512bh)a, (__m512bh)b);
}

/// Words of 32 floats' bf16: word j = (v[2j], v[2j + 1]) where `low` holds v[0..15], `high` v[16..31].
AVXBF16 static INLINE __m512i to_pairs(__m512 low, __m512 high) {
    // The second operand fills the low sixteen bf16.
    return (__m512i)_mm512_cvtne2ps_pbh(high, low);
}
#endif

// The 3x3 weight gradient's kernels (cconv_bf16_weight_grad.c), for cconv_bf16.c's tables; the
// arguments as cbf16_unfold_fn and cbf16_weight_grad_fn.
void cbf16_unfold_portable(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                           int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                           int pairs, const float *scale, const float *shift);
void cbf16_weight_grad_portable(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                int rows);
#if HAVE_AVX512
AVX2 void cbf16_unfold_avx2(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                            int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                            int pairs, const float *scale, const float *shift);
AVX2 void cbf16_weight_grad_avx2(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                 const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                 int rows);
AVXBF16 void cbf16_unfold_avx(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                              int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                              int pairs, const float *scale, const float *shift);
AVXBF16 void cbf16_weight_grad_avx(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                   const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                   int rows);
#endif

#endif
