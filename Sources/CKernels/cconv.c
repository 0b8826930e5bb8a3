#include "cconv.h"

#include "simd.h"
#include "tiles.h"

// Only the AVX512 functions are built for AVX-512; the Swift side calls them after cconv_available().

_Static_assert(CCONV3X3_BLOCK_FLOATS == TAPS * OB, "a packed block is TAPS x OB floats per input channel");

int cconv_available(void) {
#if HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

int cconv_avx2_available(void) {
#if HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
#else
    return 0;
#endif
}

// Shapes: w is [O, C, 3, 3] (PyTorch). packed is [ceil(P / OB), Q, TAPS, OB] with P, Q = O, C
// (or C, O for the adjoint), zero past output P; TAPS * OB = CCONV3X3_BLOCK_FLOATS.
size_t cconv3x3_packed_count(int outputs, int inputs) {
    return (size_t)((outputs + OB - 1) / OB) * (size_t)inputs * TAPS * OB;
}

void cconv3x3_pack(float *packed, const float *w, int O, int C, int adjoint) {
    int P = adjoint ? C : O, Q = adjoint ? O : C;
    for (int b = 0; b * OB < P; b++)
        for (int q = 0; q < Q; q++)
            for (int t = 0; t < TAPS; t++)
                for (int j = 0; j < OB; j++) {
                    int p = b * OB + j;
                    float v = 0;
                    // The adjoint's output p is the layer's input channel, its input q the layer's
                    // output channel, and its taps run backwards.
                    if (p < P)
                        v = adjoint ? w[((size_t)q * C + p) * TAPS + (TAPS - 1 - t)]
                                    : w[((size_t)p * C + q) * TAPS + t];
                    packed[(((size_t)b * Q + q) * TAPS + t) * OB + j] = v;
                }
}

// The kernels themselves: x86-64 only (the Swift side calls them where cconv_available()).
#if HAVE_AVX512

/// Up to eight outputs of tv <= TV vectors: every input channel and tap, sums kept in registers.
/// `clean` (a constant where it is inlined): every vector is sixteen pixels whose three input
/// rows are inside the image. Then only the left taps (of a row's first vector) and the right
/// taps (of its last) need masks, six that stay in mask registers through the channel loop; the
/// general case reloads 27 masks per channel, a noticeable part of this kernel's time
/// (docs/kernel-notes.md).
AVX512 static INLINE void forward_tile(float *y, const float *x, const float *wb, const float *bias, int outputs,
                                       int inputs, size_t plane, const ptrdiff_t d[TAPS], const Vec v[TV],
                                       int accumulate, const int clean, const int tv) {
    __m512 acc[OB][TV];
    for (int o = 0; o < OB; o++)
        for (int s = 0; s < tv; s++)
            acc[o][s] = o < outputs && accumulate ? _mm512_maskz_loadu_ps(v[s].store, y + o * plane + v[s].offset)
                                                  : _mm512_set1_ps(o < outputs && bias ? bias[o] : 0.f);
    __mmask16 left[TV], right[TV];
    for (int s = 0; s < tv; s++) left[s] = v[s].tap[3], right[s] = v[s].tap[5];
    for (int q = 0; q < inputs; q++) {
        const float *xq = x + q * plane, *wq = wb + (size_t)q * TAPS * OB;
        // The next channel's rows, while this one's taps run.
        for (int s = 0; s < tv; s++)
            for (int ky = 0; ky < 3; ky++)
                _mm_prefetch((const char *)(xq + plane + v[s].offset + d[ky * 3 + 1]), _MM_HINT_T0);
        if (clean) {
#pragma clang loop unroll(full)
            for (int t = 0; t < TAPS; t++) {
                __m512 xv[TV];
                for (int s = 0; s < tv; s++) {
                    const float *at = xq + v[s].offset + d[t];
                    if (t % 3 == 1) xv[s] = _mm512_loadu_ps(at);
                    else xv[s] = _mm512_maskz_loadu_ps(t % 3 == 0 ? left[s] : right[s], at);
                }
                for (int o = 0; o < OB; o++) {
                    __m512 w = _mm512_set1_ps(wq[t * OB + o]);
                    for (int s = 0; s < tv; s++) acc[o][s] = _mm512_fmadd_ps(w, xv[s], acc[o][s]);
                }
            }
        } else {
#pragma clang loop unroll(disable)
            for (int t = 0; t < TAPS; t++) {
                __m512 xv[TV];
                for (int s = 0; s < tv; s++) xv[s] = _mm512_maskz_loadu_ps(v[s].tap[t], xq + v[s].offset + d[t]);
                for (int o = 0; o < OB; o++) {
                    __m512 w = _mm512_set1_ps(wq[t * OB + o]);
                    for (int s = 0; s < tv; s++) acc[o][s] = _mm512_fmadd_ps(w, xv[s], acc[o][s]);
                }
            }
        }
    }
    for (int o = 0; o < outputs; o++)
        for (int s = 0; s < tv; s++) _mm512_mask_storeu_ps(y + o * plane + v[s].offset, v[s].store, acc[o][s]);
}

// x: [inputs, height, width] and y: [outputs, height, width], one image, planes contiguous;
// packed: blocks of [inputs, TAPS, OB] floats, block_stride apart; bias: [outputs] or NULL.
// Writes (or adds to) y's rows [row0, row1).
AVX512 void cconv3x3_forward(float *y, const float *x, const float *packed, size_t block_stride, const float *bias,
                             int inputs, int outputs, int height, int width, int row0, int row1, int accumulate) {
    size_t plane = (size_t)height * width;
    // Vectors are rows' pieces, or runs of sixteen pixels across rows where rows would leave much
    // of a vector empty: planes narrower than a vector, and rows of up to four vectors whose last
    // is partial; wider rows gain nothing from it (docs/kernel-notes.md).
    int narrow = width < LANES || (width % LANES != 0 && width < 4 * LANES);
    int per_row = (width + LANES - 1) / LANES;
    long pixels0 = (long)row0 * width, pixels1 = (long)row1 * width;
    long first = narrow ? 0 : (long)row0 * per_row;
    long end = narrow ? (pixels1 - pixels0 + LANES - 1) / LANES : (long)row1 * per_row;
    ptrdiff_t d[TAPS];
    taps(d, width);
    for (int b = 0; b * OB < outputs; b++) {
        int n = outputs - b * OB < OB ? outputs - b * OB : OB;
        // A tile's vectors are consecutive in the plane and may span rows.
        for (long i = first; i < end; i += TV) {
            Vec v[TV];
            int clean = !narrow;
            for (int s = 0; s < TV; s++) {
                long k = i + s;
                int oy = (int)(k / per_row), ox = (int)(k % per_row) * LANES;
                if (k >= end) nothing(&v[s]);
                else if (narrow) describe_pixels(&v[s], pixels0 + k * LANES, (int)(pixels1 - pixels0 - k * LANES),
                                                 height, width);
                else describe(&v[s], oy, ox, height, width);
                clean &= k < end && oy > 0 && oy + 1 < height && ox + LANES <= width;
            }
            float *yb = y + (size_t)b * OB * plane;
            const float *wb = packed + (size_t)b * block_stride, *bb = bias ? bias + b * OB : 0;
            // A band's last tile may have fewer vectors (a 16 x 16 plane has 16).
            if (clean) forward_tile(yb, x, wb, bb, n, inputs, plane, d, v, accumulate, 1, TV);
            else if (end - i >= TV) forward_tile(yb, x, wb, bb, n, inputs, plane, d, v, accumulate, 0, TV);
            else if (end - i == 2) forward_tile(yb, x, wb, bb, n, inputs, plane, d, v, accumulate, 0, 2);
            else forward_tile(yb, x, wb, bb, n, inputs, plane, d, v, accumulate, 0, 1);
        }
    }
}

/// Masks of one column vector for tap columns kx = 0, 1, 2, and for its stores.
typedef struct {
    __mmask16 column[3], store;
} Columns;

static INLINE Columns columns_at(int ox, int width) {
    Vec v;
    describe(&v, 1, ox, 3, width);  // the middle row of three: every row inside
    Columns c = {{v.tap[3], v.tap[4], v.tap[5]}, v.store};
    return c;
}

/// One vector's contribution to dw[p, tap] for np (<= 2) outputs: 2 x 9 sums in registers.
/// `rows` masks the three input rows (0xFFFF inside the image, 0 in the padding).
AVX512 static INLINE void weight_grad_vector(__m512 acc[2][TAPS], const float *dy, const float *x, const int np,
                                             size_t plane, const ptrdiff_t d[TAPS], ptrdiff_t offset, Columns c,
                                             const int edge, const __mmask16 rows[3]) {
    __m512 g[2];
    for (int p = 0; p < np; p++) g[p] = _mm512_maskz_loadu_ps(c.store, dy + p * plane + offset);
    for (int t = 0; t < TAPS; t++) {
        __mmask16 m = edge ? (__mmask16)(rows[t / 3] & c.column[t % 3]) : c.column[t % 3];
        __m512 xv = _mm512_maskz_loadu_ps(m, x + offset + d[t]);
        for (int p = 0; p < np; p++) acc[p][t] = _mm512_fmadd_ps(g[p], xv, acc[p][t]);
    }
}

/// dw[p, tap] for np (<= 2) outputs p of one input channel, summed across lanes once at the end.
AVX512 static INLINE void weight_grad_block(float *dw, size_t ldw, const float *dy, const float *xq, const int np,
                                            size_t plane, const ptrdiff_t d[TAPS], int height, int width,
                                            int row0, int row1, int images, size_t dy_image, size_t x_image,
                                            const Columns *columns) {
    __m512 acc[2][TAPS];
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < TAPS; t++) acc[p][t] = _mm512_setzero_ps();
    int per_row = (width + LANES - 1) / LANES;
    for (int n = 0; n < images; n++) {
        const float *dyn = dy + n * dy_image, *xn = xq + n * x_image;
        for (int oy = row0; oy < row1; oy++) {
            ptrdiff_t row = (ptrdiff_t)oy * width;
            if (oy > 0 && oy + 1 < height) {
                for (int i = 0; i < per_row; i++)
                    weight_grad_vector(acc, dyn, xn, np, plane, d, row + i * LANES, columns[i], 0, 0);
            } else {
                __mmask16 rows[3] = {oy > 0 ? 0xFFFF : 0, 0xFFFF, oy + 1 < height ? 0xFFFF : 0};
                for (int i = 0; i < per_row; i++)
                    weight_grad_vector(acc, dyn, xn, np, plane, d, row + i * LANES, columns[i], 1, rows);
            }
        }
    }
    for (int p = 0; p < np; p++)
        for (int t = 0; t < TAPS; t++) dw[p * ldw + t] += _mm512_reduce_add_ps(acc[p][t]);
}

// dy: images x [outputs, height, width], dy_image floats apart; x: images x [inputs, height,
// width], x_image apart; dw: outputs rows ldw apart, each [inputs, TAPS], added to.
AVX512 void cconv3x3_weight_grad(float *dw, size_t ldw, const float *dy, const float *x, int inputs, int outputs,
                                 int height, int width, int row0, int row1, int images, size_t dy_image,
                                 size_t x_image) {
    size_t plane = (size_t)height * width;
    ptrdiff_t d[TAPS];
    taps(d, width);
    int per_row = (width + LANES - 1) / LANES;
    Columns columns[per_row];
    for (int i = 0; i < per_row; i++) columns[i] = columns_at(i * LANES, width);
    for (int q = 0; q < inputs; q++) {
        const float *xq = x + q * plane;
        int p = 0;
        for (; p + 2 <= outputs; p += 2)
            weight_grad_block(dw + p * ldw + q * TAPS, ldw, dy + p * plane, xq, 2, plane, d, height, width, row0, row1,
                              images, dy_image, x_image, columns);
        if (p < outputs)
            weight_grad_block(dw + p * ldw + q * TAPS, ldw, dy + p * plane, xq, 1, plane, d, height, width, row0, row1,
                              images, dy_image, x_image, columns);
    }
}

// t: [images, row1 - row0 + 2, width + 2, padded_channels], pixel-major with a border of one
// pixel (zero outside the image); x: images x [channels, height, width], x_image floats apart.
size_t cconv3x3_rows_count(int images, int padded_channels, int width, int row0, int row1) {
    return (size_t)images * (size_t)(row1 - row0 + 2) * (size_t)(width + 2) * (size_t)padded_channels;
}

AVX512 void cconv3x3_unfold_rows(float *t, const float *x, size_t x_image, int images, int channels, int first,
                                 int padded_channels, int height, int width, int row0, int row1, const float *scale,
                                 const float *shift) {
    size_t plane = (size_t)height * width;
    int rows = row1 - row0 + 2, pw = width + 2, cp = padded_channels;
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            int iy = row0 - 1 + r;
            float *trow = t + (size_t)(n * rows + r) * pw * cp + first;
            // Padded column px holds image column px - 1.
            for (int px = 0; px < pw; px += LANES) {
                int ix = px - 1, pixels = pw - px < LANES ? pw - px : LANES;
                __mmask16 inside = iy >= 0 && iy < height ? low_lanes(width - ix) : 0;
                if (px == 0) inside &= 0xFFFE;
                const float *src = x + n * x_image + (ptrdiff_t)iy * width + ix;
                for (int c0 = 0; c0 < channels; c0 += LANES) {
                    int nc = channels - c0 < LANES ? channels - c0 : LANES;
                    __m512 v[16];
                    for (int i = 0; i < nc; i++)
                        _mm_prefetch((const char *)(src + (c0 + i) * plane + UNFOLD_AHEAD), _MM_HINT_T0);
                    for (int i = 0; i < 16; i++)
                        v[i] = i < nc ? _mm512_maskz_loadu_ps(inside, src + (c0 + i) * plane) : _mm512_setzero_ps();
                    if (scale)
                        for (int i = 0; i < nc; i++) v[i] = bn_relu(v[i], scale[c0 + i], shift[c0 + i], inside);
                    transpose16(v);
                    __mmask16 lanes = low_lanes(nc);
                    for (int j = 0; j < pixels; j++) _mm512_mask_storeu_ps(trow + (size_t)(px + j) * cp + c0, lanes,
                                                                           v[j]);
                }
            }
        }
}

/// g[o, c] += sum over pixels of dy[pixel, o] t[pixel shifted by one tap, c] for np outputs and
/// nc vectors of 16 input channels: a GEMM tile whose K runs over the pixels. Both operands are
/// pixel-major, so the np broadcasts of a pixel come from one cache line (NCHW planes a power of
/// two apart would map np streams onto one L1 set).
AVX512 static INLINE void weight_grad_tile(float *g, size_t g_row, const float *dy, int op, const float *t, int cp,
                                           int pw, int images, size_t image, int width, int rows, const int np,
                                           const int nc) {
    __m512 acc[16][4];
    for (int o = 0; o < np; o++)
        for (int j = 0; j < nc; j++) acc[o][j] = _mm512_loadu_ps(g + o * g_row + j * LANES);
    for (int n = 0; n < images; n++)
        for (int r = 0; r < rows; r++) {
            // Output row r of the band is padded row r + 1 of dy's copy; the tap's offset is in t.
            const float *dyr = dy + n * image * op + ((size_t)(r + 1) * pw + 1) * op;
            const float *tr = t + n * image * cp + (size_t)r * pw * cp;
            for (int ox = 0; ox < width; ox++) {
                __m512 xv[4];
                for (int j = 0; j < nc; j++) xv[j] = _mm512_loadu_ps(tr + (size_t)ox * cp + j * LANES);
                for (int o = 0; o < np; o++) {
                    __m512 d = _mm512_set1_ps(dyr[(size_t)ox * op + o]);
                    for (int j = 0; j < nc; j++) acc[o][j] = _mm512_fmadd_ps(d, xv[j], acc[o][j]);
                }
            }
        }
    for (int o = 0; o < np; o++)
        for (int j = 0; j < nc; j++) _mm512_storeu_ps(g + o * g_row + j * LANES, acc[o][j]);
}

#define TILE(NP, NC) \
    case NP: weight_grad_tile(g, g_row, dy, op, t, cp, pw, images, image, width, rows, NP, NC); break;
#define TILES6(NC) TILE(1, NC) TILE(2, NC) TILE(3, NC) TILE(4, NC) TILE(5, NC) TILE(6, NC)
#define TILES12(NC) TILES6(NC) TILE(7, NC) TILE(8, NC) TILE(9, NC) TILE(10, NC) TILE(11, NC) TILE(12, NC)

AVX512 static void weight_grad_tiles(float *g, size_t g_row, const float *dy, int op, const float *t, int cp, int pw,
                                     int images, size_t image, int width, int rows, int np, int nc) {
    if (nc == 4) {
        switch (np) { TILES6(4) }
    } else if (nc == 2) {
        switch (np) { TILES12(2) }
    } else {
        switch (np) { TILES12(1) TILE(13, 1) TILE(14, 1) TILE(15, 1) TILE(16, 1) }
    }
}

// dy: [images, rows + 2, width + 2, padded_outputs] and t: [images, rows + 2, width + 2,
// padded_channels], as cconv3x3_unfold_rows writes them; g: [TAPS, outputs, padded_channels],
// added to.
AVX512 void cconv3x3_weight_grad_rows(float *g, const float *dy, int padded_outputs, const float *t, int images,
                                      int padded_channels, int outputs, int width, int row0, int row1) {
    int cp = padded_channels, op = padded_outputs, pw = width + 2, rows = row1 - row0;
    size_t image = (size_t)(rows + 2) * pw;
    for (int tap = 0; tap < TAPS; tap++) {
        const float *tt = t + ((size_t)(tap / 3) * pw + tap % 3) * cp;
        for (int c0 = 0; c0 < cp;) {
            int vectors = (cp - c0) / LANES, nc = vectors >= 4 ? 4 : vectors >= 2 ? 2 : 1;
            // About 16-24 sums in registers: more outputs where fewer channel vectors.
            int most = nc == 4 ? 6 : nc == 2 ? 12 : 16, tiles = (outputs + most - 1) / most;
            int each = (outputs + tiles - 1) / tiles;  // even tiles: 16 outputs as 8 + 8, not 12 + 4
            for (int o0 = 0; o0 < outputs; o0 += each) {
                int np = outputs - o0 < each ? outputs - o0 : each;
                weight_grad_tiles(g + ((size_t)tap * outputs + o0) * cp + c0, cp, dy + o0, op, tt + c0, cp, pw, images,
                                  image, width, rows, np, nc);
            }
            c0 += nc * LANES;
        }
    }
}

#endif

// g: [TAPS, outputs, padded_channels]; dw: outputs rows ldw apart, each [inputs, TAPS], added to.
void cconv3x3_weight_grad_add(float *dw, size_t ldw, const float *g, int inputs, int padded_channels, int outputs) {
    for (int o = 0; o < outputs; o++)
        for (int c = 0; c < inputs; c++)
            for (int tap = 0; tap < TAPS; tap++)
                dw[o * ldw + c * TAPS + tap] += g[((size_t)tap * outputs + o) * padded_channels + c];
}
