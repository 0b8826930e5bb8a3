#include "cconv.h"

#include <string.h>

#include "simd.h"
#include "tiles.h"

// cconv.c's direct 3x3 kernels for CPUs with AVX2 and FMA but no AVX-512 (AMD Zen 2 and 3,
// Intel before Skylake-SP): eight lanes and sixteen registers. Each sum runs over the same terms
// in the same order as in the AVX-512 kernels (an output lane's over input channels and taps,
// a weight gradient's over the pixels), one FMA at a time, so both give the same bits; only
// the tiles differ. The forward reads a zero-padded copy of the rows a band reads instead of
// masking its loads: with 16 registers, the masks of the AVX-512 kernel's taps would not fit
// beside the sums, and AVX2's masked loads need not suppress faults for the lanes they skip.

#if HAVE_AVX512
enum { L8 = 8 };

// Outputs x vectors per forward tile: up to 6 x 2 sums beside two input vectors and a broadcast
// weight, 15 of the 16 registers (4 x 3 sums, which would fill all 16, made the compiler spill
// them: about half the speed, docs/kernel-notes.md). A tile's outputs may span two packed
// blocks of eight (OB): each output reads its weights through its own pointer.
enum { OT = 6, TV8 = 2 };

/// The first n of eight lanes.
static INLINE unsigned low8(int n) { return n >= L8 ? 0xFFu : n <= 0 ? 0u : (1u << n) - 1; }

/// Lanes of an 8-bit mask as a vector mask (all ones where the bit is set), for maskload/store.
AVX2 static INLINE __m256i lanes8(unsigned bits) {
    __m256i b = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), b), b);
}

size_t cconv3x3_padded_count(int channels, int width, int row0, int row1) {
    // Eight floats past the last row: a last partial vector's loads run past it.
    return (size_t)channels * (size_t)(row1 - row0 + 2) * (size_t)(width + 2) + L8;
}

void cconv3x3_pad_rows(float *p, const float *x, size_t x_plane, int channels, int height, int width, int row0,
                       int row1) {
    int rows = row1 - row0 + 2, pw = width + 2;
    for (int c = 0; c < channels; c++)
        for (int r = 0; r < rows; r++) {
            int iy = row0 - 1 + r;
            float *pr = p + ((size_t)c * rows + r) * pw;
            if (iy < 0 || iy >= height) {
                memset(pr, 0, sizeof(float) * (size_t)pw);
                continue;
            }
            pr[0] = 0;
            memcpy(pr + 1, x + (size_t)c * x_plane + (size_t)iy * width, sizeof(float) * (size_t)width);
            pr[pw - 1] = 0;
        }
}

/// Whether both vectors' every lane is stored.
AVX2 static INLINE int store_all(const __m256i store[TV8]) {
    return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_and_si256(store[0], store[1]))) == 0xFF;
}

/// np <= OT outputs of tv <= TV8 vectors: every input channel and tap, sums in registers. w[o]:
/// output o's first weight (input channel 0, tap 0) in the packed blocks; xo: each vector's first
/// tap's offset in a padded plane; yo: its offset in y's planes.
AVX2 static INLINE void forward_tile8(float *y, size_t y_plane, const float *p, size_t p_plane,
                                      const float *const w[OT], const float *bias, int inputs,
                                      const ptrdiff_t d[TAPS], const ptrdiff_t xo[TV8], const ptrdiff_t yo[TV8],
                                      const __m256i store[TV8], const int full, const int np, const int tv) {
    __m256 acc[OT][TV8];
    for (int o = 0; o < np; o++)
        for (int s = 0; s < tv; s++) acc[o][s] = _mm256_set1_ps(bias ? bias[o] : 0.f);
    for (int q = 0; q < inputs; q++) {
        const float *pq = p + q * p_plane;
        size_t wq = (size_t)q * TAPS * OB;
#pragma clang loop unroll(full)
        for (int t = 0; t < TAPS; t++) {
            __m256 xv[TV8];
            for (int s = 0; s < tv; s++) xv[s] = _mm256_loadu_ps(pq + xo[s] + d[t]);
            for (int o = 0; o < np; o++) {
                __m256 wv = _mm256_broadcast_ss(w[o] + wq + t * OB);
                for (int s = 0; s < tv; s++) acc[o][s] = _mm256_fmadd_ps(wv, xv[s], acc[o][s]);
            }
        }
    }
    // `full` (a constant where it is inlined): every vector's eight lanes are stored.
    for (int o = 0; o < np; o++)
        for (int s = 0; s < tv; s++) {
            if (full) _mm256_storeu_ps(y + o * y_plane + yo[s], acc[o][s]);
            else _mm256_maskstore_ps(y + o * y_plane + yo[s], store[s], acc[o][s]);
        }
}

#define FORWARD_TILE(NP)                                                                                       \
    case NP:                                                                                                   \
        if (full) forward_tile8(y, y_plane, p, p_plane, w, bias, inputs, d, xo, yo, store, 1, NP, TV8);        \
        else if (tv == TV8) forward_tile8(y, y_plane, p, p_plane, w, bias, inputs, d, xo, yo, store, 0, NP, TV8);\
        else forward_tile8(y, y_plane, p, p_plane, w, bias, inputs, d, xo, yo, store, 0, NP, 1);               \
        break;

AVX2 static void forward_tiles8(float *y, size_t y_plane, const float *p, size_t p_plane, const float *const w[OT],
                                const float *bias, int inputs, const ptrdiff_t d[TAPS], const ptrdiff_t xo[TV8],
                                const ptrdiff_t yo[TV8], const __m256i store[TV8], int full, int np, int tv) {
    switch (np) { FORWARD_TILE(1) FORWARD_TILE(2) FORWARD_TILE(3) FORWARD_TILE(4) FORWARD_TILE(5) FORWARD_TILE(6) }
}

AVX2 void cconv3x3_forward_padded_avx2(float *y, const float *p, const float *packed, size_t block_stride,
                                       const float *bias, int inputs, int outputs, int height, int width, int row0,
                                       int row1) {
    size_t y_plane = (size_t)height * width;
    int pw = width + 2, per_row = (width + L8 - 1) / L8;
    size_t p_plane = (size_t)(row1 - row0 + 2) * pw;
    ptrdiff_t d[TAPS];
    for (int t = 0; t < TAPS; t++) d[t] = (ptrdiff_t)(t / 3) * pw + t % 3;
    long end = (long)(row1 - row0) * per_row;
    // Tiles of at most six outputs, as even as they come: 16 as 5 + 5 + 6, not 6 + 6 + 4
    // (docs/kernel-notes.md).
    int tiles = (outputs + OT - 1) / OT;
    for (int b = 0; b < tiles; b++) {
        int o0 = (int)((long)b * outputs / tiles), np = (int)((long)(b + 1) * outputs / tiles) - o0;
        const float *w[OT];
        for (int o = 0; o < np; o++) w[o] = packed + (size_t)((o0 + o) / OB) * block_stride + (o0 + o) % OB;
        const float *bb = bias ? bias + o0 : 0;
        float *yb = y + (size_t)o0 * y_plane;
        // A tile's vectors are consecutive in the band and may span rows.
        for (long i = 0; i < end; i += TV8) {
            ptrdiff_t xo[TV8], yo[TV8];
            __m256i store[TV8];
            for (int s = 0; s < TV8; s++) {
                long k = i + s < end ? i + s : i;
                int r = (int)(k / per_row), ox = (int)(k % per_row) * L8;
                xo[s] = (ptrdiff_t)r * pw + ox;
                yo[s] = (ptrdiff_t)(row0 + r) * width + ox;
                store[s] = lanes8(i + s < end ? low8(width - ox) : 0);
            }
            forward_tiles8(yb, y_plane, p, p_plane, w, bb, inputs, d, xo, yo, store,
                           end - i >= TV8 && store_all(store), np, end - i >= TV8 ? TV8 : 1);
        }
    }
}

/// r[i] lane j becomes r[j] lane i.
AVX2 static INLINE void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/// tiles.h's bn_relu on eight lanes: relu(v * scale + shift) where `inside`, else zero.
AVX2 static INLINE __m256 bn_relu8(__m256 v, float scale, float shift, __m256 inside) {
#pragma STDC FP_CONTRACT OFF
    __m256 y = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(scale)), _mm256_set1_ps(shift));
    return _mm256_and_ps(_mm256_and_ps(inside, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NLE_UQ)), y);
}

AVX2 void cconv3x3_unfold_rows_avx2(float *t, const float *x, size_t x_image, int images, int channels, int first,
                                    int padded_channels, int height, int width, int row0, int row1,
                                    const float *scale, const float *shift) {
    size_t plane = (size_t)height * width;
    int rows = row1 - row0 + 2, pw = width + 2, cp = padded_channels;
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            int iy = row0 - 1 + r;
            float *trow = t + (size_t)(n * rows + r) * pw * cp + first;
            for (int px = 0; px < pw; px += L8) {
                int ix = px - 1, pixels = pw - px < L8 ? pw - px : L8;
                unsigned bits = iy >= 0 && iy < height ? low8(width - ix) : 0;
                if (px == 0) bits &= 0xFEu;
                __m256i inside = lanes8(bits);
                const float *src = x + n * x_image + (ptrdiff_t)iy * width + ix;
                for (int c0 = 0; c0 < channels; c0 += L8) {
                    int nc = channels - c0 < L8 ? channels - c0 : L8;
                    __m256 v[8];
                    for (int i = 0; i < nc; i++)
                        _mm_prefetch((const char *)(src + (c0 + i) * plane + UNFOLD_AHEAD), _MM_HINT_T0);
                    // A row outside the image is not read (as in the forward's taps). Masked
                    // loads and stores only where a vector is partial: on AMD's Zen 2 and 3 a
                    // masked store costs several plain ones (docs/kernel-notes.md).
                    for (int i = 0; i < 8; i++)
                        v[i] = i >= nc || !bits ? _mm256_setzero_ps()
                               : bits == 0xFFu  ? _mm256_loadu_ps(src + (c0 + i) * plane)
                                                : _mm256_maskload_ps(src + (c0 + i) * plane, inside);
                    if (scale)
                        for (int i = 0; i < nc; i++)
                            v[i] = bn_relu8(v[i], scale[c0 + i], shift[c0 + i], _mm256_castsi256_ps(inside));
                    transpose8(v);
                    __m256i lanes = lanes8(low8(nc));
                    for (int j = 0; j < pixels; j++) {
                        float *at = trow + (size_t)(px + j) * cp + c0;
                        if (nc == L8) _mm256_storeu_ps(at, v[j]);
                        else _mm256_maskstore_ps(at, lanes, v[j]);
                    }
                }
            }
        }
}

/// cconv.c's weight_grad_tile for np outputs and 16 channels (two vectors of eight), over `rows`
/// rows of one image: the same sums in the same order.
AVX2 static INLINE void weight_grad_tile8(float *g, size_t g_row, const float *dy, int op, const float *t, int cp,
                                          int pw, int width, int rows, const int np) {
    __m256 acc[6][2];
    for (int o = 0; o < np; o++)
        for (int j = 0; j < 2; j++) acc[o][j] = _mm256_loadu_ps(g + o * g_row + j * L8);
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + ((size_t)(r + 1) * pw + 1) * op, *tr = t + (size_t)r * pw * cp;
        for (int ox = 0; ox < width; ox++) {
            __m256 xv[2];
            for (int j = 0; j < 2; j++) xv[j] = _mm256_loadu_ps(tr + (size_t)ox * cp + j * L8);
            for (int o = 0; o < np; o++) {
                __m256 d = _mm256_broadcast_ss(dyr + (size_t)ox * op + o);
                for (int j = 0; j < 2; j++) acc[o][j] = _mm256_fmadd_ps(d, xv[j], acc[o][j]);
            }
        }
    }
    for (int o = 0; o < np; o++)
        for (int j = 0; j < 2; j++) _mm256_storeu_ps(g + o * g_row + j * L8, acc[o][j]);
}

#define TILE8(NP) \
    case NP: weight_grad_tile8(g, g_row, dy, op, t, cp, pw, width, rows, NP); break;

AVX2 static void weight_grad_tiles8(float *g, size_t g_row, const float *dy, int op, const float *t, int cp, int pw,
                                    int width, int rows, int np) {
    switch (np) { TILE8(1) TILE8(2) TILE8(3) TILE8(4) TILE8(5) TILE8(6) }
}

AVX2 void cconv3x3_weight_grad_rows_avx2(float *g, const float *dy, int padded_outputs, const float *t, int images,
                                         int padded_channels, int outputs, int width, int row0, int row1) {
    int cp = padded_channels, op = padded_outputs, pw = width + 2, rows = row1 - row0;
    size_t image = (size_t)(rows + 2) * pw;
    // A few rows at a time, every tap and tile over them, while their copies (about 128 KiB) stay
    // in L2: the taps' nine passes over a whole band's copies ran from L3 on CPUs with 512 KiB
    // of L2. Each sum still adds its pixels in the same order.
    int block = 32768 / (pw * (cp + op));
    if (block < 1) block = 1;
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r += block) {
            int nr = rows - r < block ? rows - r : block;
            size_t at = n * image + (size_t)r * pw;
            for (int tap = 0; tap < TAPS; tap++) {
                const float *tt = t + (at + (size_t)(tap / 3) * pw + tap % 3) * cp;
                // Tiles of up to 6 outputs x 16 channels (cp is a multiple of 16): 12 sums, two
                // channel vectors and a broadcast within the 16 registers.
                int tiles = (outputs + 5) / 6, each = (outputs + tiles - 1) / tiles;
                for (int c0 = 0; c0 < cp; c0 += 2 * L8)
                    for (int o0 = 0; o0 < outputs; o0 += each) {
                        int np = outputs - o0 < each ? outputs - o0 : each;
                        weight_grad_tiles8(g + ((size_t)tap * outputs + o0) * cp + c0, cp, dy + at * op + o0, op,
                                           tt + c0, cp, pw, width, nr, np);
                    }
            }
        }
}
#endif
