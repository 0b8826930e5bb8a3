#include "cconv_bf16.h"

#include "bf16.h"
#include "tiles.h"

// The bf16 3x3 convolution's weight gradient (cconv_bf16.h) and the pixel-pair copies it reads.
// Arrays, per band of output rows:
//   x's copies  t[image][row][pair][padded_channels] words: the even copy (rows + 2 rows, ceil(W / 2)
//               + 1 pairs from column -1) and the odd copy (rows + 2 rows, ceil(W / 2) pairs from 0)
//   dy's copy   [image][row][pair][padded_outputs] words
//   g           [9 taps][outputs][padded_channels] float32 sums
// Portable functions first (the reference of the AVX512_BF16 ones: same pairs, same order).

/// relu(v * scale + shift) as cbn_output and bn_relu compute it: a product, then a sum.
static INLINE float affine_relu(float v, float scale, float shift) {
#pragma STDC FP_CONTRACT OFF
    float y = v * scale;
    y = y + shift;
    return y > 0 || y != y ? y : 0.f;
}

static INLINE void unfold_rows(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images,
                               int channels, int first, int padded_channels, int height, int width, int row0, int rows,
                               int col0, int pairs, const float *scale, const float *shift) {
    size_t plane = (size_t)height * width;
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            int iy = row0 + r;
            for (int j = 0; j < pairs; j++)
                for (int c = 0; c < channels; c++) {
                    float v[2] = {0, 0};
                    for (int h = 0; h < 2; h++) {
                        int ix = col0 + 2 * j + h;
                        if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                        size_t i = n * x_image + c * plane + (size_t)iy * width + ix;
                        v[h] = xb ? bf16_float(xb[i]) : x[i];
                        if (scale) v[h] = affine_relu(v[h], scale[c], shift[c]);
                    }
                    t[(((size_t)n * rows + r) * pairs + j) * padded_channels + first + c] = pair(v[0], v[1]);
                }
        }
}

/// Where tap t's x words start in the even or odd copy (see cbf16_unfold_fn), and that copy's
/// words per row: column taps 0 and 2 read the even copy (2 one pair further), tap 1 the odd one.
static const uint32_t *tap_copy(int t, const uint32_t *even, const uint32_t *odd, int pairs, int cp, int *row_words) {
    int kx = t % 3, ky = t / 3;
    *row_words = (kx == 1 ? pairs : pairs + 1) * cp;
    return (kx == 1 ? odd : even) + (size_t)ky * *row_words + (kx == 2 ? cp : 0);
}

/// Channel rows of g: each (tap, output) row of padded_channels sums takes the band's pixel pairs
/// in order, a whole row per pair (`dot_pair_row`).
static INLINE void weight_grad_rows(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                    const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                    int rows) {
    int cp = padded_channels, op = padded_outputs, pairs = (width + 1) / 2;
    for (int t = 0; t < TAPS; t++) {
        int row_words;
        const uint32_t *xt = tap_copy(t, even, odd, pairs, cp, &row_words);
        for (int o = 0; o < outputs; o++) {
            float *go = g + ((size_t)t * outputs + o) * cp;
            for (int n = 0; n < images; n++)
                for (int r = 0; r < rows; r++) {
                    const uint32_t *dyr = dy + ((size_t)n * rows + r) * pairs * op;
                    const uint32_t *xr = xt + ((size_t)n * (rows + 2) + r) * row_words;
                    for (int j = 0; j < pairs; j++) dot_pair_row(go, xr + (size_t)j * cp, dyr[(size_t)j * op + o], cp);
                }
        }
    }
}

void cbf16_unfold_portable(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                           int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                           int pairs, const float *scale, const float *shift) {
    unfold_rows(t, x, xb, x_image, images, channels, first, padded_channels, height, width, row0, rows, col0, pairs,
                scale, shift);
}

void cbf16_weight_grad_portable(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                int rows) {
    weight_grad_rows(g, dy, padded_outputs, even, odd, images, padded_channels, outputs, width, rows);
}

#if HAVE_AVX512
// The portable loops compiled for AVX2 (cconv_bf16.c's AVX2 set).
AVX2 void cbf16_unfold_avx2(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                            int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                            int pairs, const float *scale, const float *shift) {
    unfold_rows(t, x, xb, x_image, images, channels, first, padded_channels, height, width, row0, rows, col0, pairs,
                scale, shift);
}

AVX2 void cbf16_weight_grad_avx2(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                 const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                 int rows) {
    weight_grad_rows(g, dy, padded_outputs, even, odd, images, padded_channels, outputs, width, rows);
}
#endif

// MARK: AVX512_BF16

#if HAVE_AVX512
/// Lanes i of sixteen whose column c + i lies in [0, width).
static INLINE __mmask16 columns_inside(int c, int width) {
    return (__mmask16)(low_lanes(width - c) & ~low_lanes(-c));
}

/// Sixteen of x's floats from `i` where `inside` (else 0): read as floats, or as the bf16 upper
/// halves xb holds, expanded exactly.
AVXBF16 static INLINE __m512 load_x(const float *x, const uint16_t *xb, ptrdiff_t i, __mmask16 inside) {
    if (!xb) return _mm512_maskz_loadu_ps(inside, x + i);
    return bf16_expand16(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16((__mmask32)inside, xb + i)));
}

/// The cache lines of x (or xb) from element i that load_x at i will read.
static INLINE void prefetch_x(const float *x, const uint16_t *xb, ptrdiff_t i) {
    if (xb) {
        _mm_prefetch((const char *)(xb + i), _MM_HINT_T0);
        return;
    }
    _mm_prefetch((const char *)(x + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(x + i + LANES), _MM_HINT_T0);
}

AVXBF16 void cbf16_unfold_avx(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images, int channels,
                              int first, int padded_channels, int height, int width, int row0, int rows, int col0,
                              int pairs, const float *scale, const float *shift) {
    size_t plane = (size_t)height * width;
    int cp = padded_channels;
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            int iy = row0 + r, row_inside = iy >= 0 && iy < height;
            uint32_t *trow = t + ((size_t)n * rows + r) * pairs * cp + first;
            // Sixteen pairs (32 columns) at a time: per channel two vectors of floats become one
            // vector of pair words, and a transpose turns sixteen channels' vectors into
            // sixteen pairs' vectors of channels.
            for (int j0 = 0; j0 < pairs; j0 += LANES) {
                int c = col0 + 2 * j0, np = pairs - j0 < LANES ? pairs - j0 : LANES;
                __mmask16 m0 = row_inside ? columns_inside(c, width) : 0;
                __mmask16 m1 = row_inside ? columns_inside(c + LANES, width) : 0;
                ptrdiff_t src = (ptrdiff_t)(n * x_image) + (ptrdiff_t)iy * width + c;
                for (int c0 = 0; c0 < channels; c0 += LANES) {
                    int nc = channels - c0 < LANES ? channels - c0 : LANES;
                    __m512 v[16];
                    for (int i = 0; i < 16; i++) {
                        if (i >= nc) {
                            v[i] = _mm512_setzero_ps();
                            continue;
                        }
                        ptrdiff_t s = src + (ptrdiff_t)((size_t)(c0 + i) * plane);
                        prefetch_x(x, xb, s + UNFOLD_AHEAD);
                        __m512 a = load_x(x, xb, s, m0), b = load_x(x, xb, s + LANES, m1);
                        if (scale) {
                            a = bn_relu(a, scale[c0 + i], shift[c0 + i], m0);
                            b = bn_relu(b, scale[c0 + i], shift[c0 + i], m1);
                        }
                        v[i] = _mm512_castsi512_ps(to_pairs(a, b));
                    }
                    transpose16(v);
                    __mmask16 lanes = low_lanes(nc);
                    for (int j = 0; j < np; j++) _mm512_mask_storeu_ps(trow + (size_t)(j0 + j) * cp + c0, lanes, v[j]);
                }
            }
        }
}

/// g[o, c] += sum over pixel pairs of dy[pair, o] x[pair shifted by one tap, c] for np outputs
/// and nc vectors of 16 input channels, as cconv.c's weight_grad_tile with two pixels per word;
/// with ky = 3, for the three row taps of one column tap at once (g for taps ky = 0, 1, 2 lie
/// g_tap apart, x's rows for them one copy row apart), so that each dy word broadcast feeds
/// three sums: each sum adds the same products in the same order either way.
AVXBF16 static INLINE void weight_grad_tile(float *g, size_t g_row, size_t g_tap, const uint32_t *dy, int op,
                                            const uint32_t *xt, int cp, int row_words, int images, int rows,
                                            int pairs, const int np, const int nc, const int ky) {
    __m512 acc[3][12][4];
    for (int t = 0; t < ky; t++)
        for (int o = 0; o < np; o++)
            for (int j = 0; j < nc; j++) acc[t][o][j] = _mm512_loadu_ps(g + t * g_tap + o * g_row + j * LANES);
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            const uint32_t *dyr = dy + ((size_t)n * rows + r) * pairs * op;
            const uint32_t *xr = xt + ((size_t)n * (rows + 2) + r) * row_words;
            for (int k = 0; k < pairs; k++) {
                __m512i xv[3][4];
                for (int t = 0; t < ky; t++)
                    for (int j = 0; j < nc; j++)
                        xv[t][j] = _mm512_loadu_si512(xr + (size_t)t * row_words + (size_t)k * cp + j * LANES);
                for (int o = 0; o < np; o++) {
                    __m512i d = _mm512_set1_epi32((int)dyr[(size_t)k * op + o]);
                    for (int t = 0; t < ky; t++)
                        for (int j = 0; j < nc; j++) acc[t][o][j] = dot(acc[t][o][j], d, xv[t][j]);
                }
            }
        }
    for (int t = 0; t < ky; t++)
        for (int o = 0; o < np; o++)
            for (int j = 0; j < nc; j++) _mm512_storeu_ps(g + t * g_tap + o * g_row + j * LANES, acc[t][o][j]);
}

#define TILE(NP, NC, KY) \
    case NP: weight_grad_tile(g, g_row, g_tap, dy, op, xt, cp, row_words, images, rows, pairs, NP, NC, KY); break;
#define TILES6(NC, KY) TILE(1, NC, KY) TILE(2, NC, KY) TILE(3, NC, KY) TILE(4, NC, KY) TILE(5, NC, KY) TILE(6, NC, KY)
#define TILES12(NC) TILES6(NC, 1) TILE(7, NC, 1) TILE(8, NC, 1) TILE(9, NC, 1) TILE(10, NC, 1) TILE(11, NC, 1) \
    TILE(12, NC, 1)

/// The tiles in use, about 16-24 sums in registers: 6 outputs x 4 vectors or 12 x 2 for one tap
/// (the float32 kernel's), 8 x 1 for three row taps.
AVXBF16 static void weight_grad_tiles(float *g, size_t g_row, size_t g_tap, const uint32_t *dy, int op,
                                      const uint32_t *xt, int cp, int row_words, int images, int rows, int pairs,
                                      int np, int nc) {
    if (nc == 4) {
        switch (np) { TILES6(4, 1) }
    } else if (nc == 2) {
        switch (np) { TILES12(2) }
    } else {
        switch (np) { TILES6(1, 3) TILE(7, 1, 3) TILE(8, 1, 3) }
    }
}

AVXBF16 void cbf16_weight_grad_avx(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                    const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                    int rows) {
    int cp = padded_channels, op = padded_outputs, pairs = (width + 1) / 2;
    // Vectors of channels in fours, then twos, per tap; an odd last one with the three row taps of
    // a column tap together.
    int paired = cp / LANES % 2 ? cp - LANES : cp;
    for (int t = 0; t < TAPS; t++) {
        int row_words;
        const uint32_t *xt = tap_copy(t, even, odd, pairs, cp, &row_words);
        for (int c0 = 0; c0 < cp;) {
            int nc = c0 == paired ? 1 : (paired - c0) / LANES >= 4 ? 4 : 2;
            // Taps ky = 1, 2 of the single vector were summed with ky = 0.
            if (nc == 1 && t >= 3) break;
            int most = nc == 4 ? 6 : nc == 2 ? 12 : 8;
            int tiles = (outputs + most - 1) / most, each = (outputs + tiles - 1) / tiles;
            for (int o0 = 0; o0 < outputs; o0 += each) {
                int np = outputs - o0 < each ? outputs - o0 : each;
                weight_grad_tiles(g + ((size_t)t * outputs + o0) * cp + c0, cp, (size_t)3 * outputs * cp, dy + o0, op,
                                  xt + c0, cp, row_words, images, rows, pairs, np, nc);
            }
            c0 += nc * LANES;
        }
    }
}

#endif

// MARK: the odd copy from the even one

#if HAVE_AVX512
AVX512 static void odd_pairs_avx512(uint32_t *odd, const uint32_t *even, size_t rows, int pairs, int cp) {
    size_t words = (size_t)pairs * cp;
    for (size_t r = 0; r < rows; r++) {
        const uint32_t *e = even + r * (words + cp);
        uint32_t *o = odd + r * words;
        for (size_t i = 0; i < words; i += LANES) {
            __m512i here = _mm512_loadu_si512(e + i), next = _mm512_loadu_si512(e + i + cp);
            _mm512_storeu_si512(o + i, _mm512_or_si512(_mm512_srli_epi32(here, 16), _mm512_slli_epi32(next, 16)));
        }
    }
}
#endif

// Odd word j holds columns 2j and 2j + 1: the high half of even word j (columns 2j - 1, 2j)
// and the low half of even word j + 1 (columns 2j + 1, 2j + 2), the same bf16 bits.
void cbf16_odd_pairs(uint32_t *odd, const uint32_t *even, size_t rows, int pairs, int padded_channels, int avx512) {
#if HAVE_AVX512
    if (avx512) return odd_pairs_avx512(odd, even, rows, pairs, padded_channels);
#endif
    size_t cp = (size_t)padded_channels, words = (size_t)pairs * cp;
    for (size_t r = 0; r < rows; r++) {
        const uint32_t *e = even + r * (words + cp);
        uint32_t *o = odd + r * words;
        for (size_t i = 0; i < words; i++) o[i] = e[i] >> 16 | e[i + cp] << 16;
    }
}
