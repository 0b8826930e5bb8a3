#ifndef UNET_DIST_TILES_H
#define UNET_DIST_TILES_H

// What the float32 (cconv.c) and bf16 (cconv_bf16.c) direct convolutions share: the shape of a
// register tile, the masks of one vector of output pixels, and the pixel-major copies' helpers.

#include "simd.h"

// Outputs per register block and vectors per tile: 8 x 3 accumulators, the three input
// vectors and a broadcast weight fill 28 of the 32 vector registers.
enum { OB = 8, TV = 3, TAPS = 9, LANES = 16 };

// How far ahead of its loads, in elements of a row, a pixel-major copy (the weight gradients'
// unfolds) prefetches: it reads each channel's row a cache line or two at a time, across more
// channels at once than the hardware's stream prefetchers follow (such copies of rows not in the
// cache took about half the time with it).
enum { UNFOLD_AHEAD = 4 * LANES };

/// The offsets of the nine taps in a plane `width` pixels wide.
static inline __attribute__((always_inline)) void taps(ptrdiff_t d[TAPS], int width) {
    for (int t = 0; t < TAPS; t++) d[t] = (ptrdiff_t)(t / 3 - 1) * width + (t % 3 - 1);
}

#if HAVE_AVX512
/// One vector of output pixels: where it lies in the plane, which lanes it stores, and for each
/// tap which lanes read inside the image (the others read zero: the padding).
typedef struct {
    ptrdiff_t offset;
    __mmask16 store, tap[TAPS];
} Vec;

/// The vector starting at column `ox` of output row `oy`.
static INLINE void describe(Vec *v, int oy, int ox, int height, int width) {
    int n = width - ox;
    __mmask16 tail = low_lanes(n);
    // Tap column kx reads x + kx - 1: lane 0 of the first vector is left of the image for kx = 0,
    // and the last in-image lane is right of it for kx = 2.
    __mmask16 column[3] = {ox == 0 ? (__mmask16)(tail & 0xFFFE) : tail, tail, low_lanes(n - 1)};
    v->offset = (ptrdiff_t)oy * width + ox;
    v->store = tail;
    for (int ky = 0; ky < 3; ky++) {
        int iy = oy + ky - 1, inside = iy >= 0 && iy < height;
        for (int kx = 0; kx < 3; kx++) v->tap[ky * 3 + kx] = inside ? column[kx] : 0;
    }
}

/// For narrow planes: the sixteen pixels from `first` in the plane, across rows, the last
/// `count` < 16 of them where the band ends. Each lane's taps are masked by its own row and
/// column, so a 4 x 4 or 8 x 8 plane fills whole vectors instead of one vector per row.
static INLINE void describe_pixels(Vec *v, long first, int count, int height, int width) {
    v->offset = first;
    v->store = low_lanes(count);
    for (int t = 0; t < TAPS; t++) v->tap[t] = 0;
    for (int j = 0; j < count && j < LANES; j++) {
        int oy = (int)((first + j) / width), ox = (int)((first + j) % width);
        for (int t = 0; t < TAPS; t++) {
            int iy = oy + t / 3 - 1, ix = ox + t % 3 - 1;
            if (iy >= 0 && iy < height && ix >= 0 && ix < width) v->tap[t] |= (__mmask16)(1u << j);
        }
    }
}

static INLINE void nothing(Vec *v) {
    v->offset = 0;
    v->store = 0;
    for (int t = 0; t < TAPS; t++) v->tap[t] = 0;
}

/// r[i] lane j becomes r[j] lane i.
AVX512 static INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/// relu(v * scale + shift) in the lanes of `inside`, zero elsewhere: BatchNorm's output with its
/// fused ReLU as cbn_output computes it (a product, then a sum; NaN passes), the padding kept zero.
AVX512 static INLINE __m512 bn_relu(__m512 v, float scale, float shift, __mmask16 inside) {
#pragma STDC FP_CONTRACT OFF
    __m512 y = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(scale)), _mm512_set1_ps(shift));
    return _mm512_maskz_mov_ps(inside & _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NLE_UQ), y);
}

#endif

#endif
