#include "cconv_bf16.h"

#include <string.h>
#include <time.h>

#include "bf16.h"
#include "cconv.h"
#include "tiles.h"

// The bf16 3x3 convolution's forward (also the input gradient's: dy with the adjoint kernel), the
// weight packing, the rounding and the kernel tables; the weight gradient is in
// cconv_bf16_weight_grad.c. Arrays, per image (layouts and order of sums in cconv_bf16.h):
//   x       [ceil(C / 2)][rows][W] words: paired planes of the input channels, the rows a band reads
//   packed  [ceil(O / 8)][ceil(C / 2)][9 taps][8 outputs] words (cbf16_pack)
//   y       [O][H][W] float32, rows [row0, row1)
// The portable functions come first; they are the reference the AVX512_BF16 ones are tested against.

uint16_t cbf16_round(float x) { return bf16_round(x); }

float cbf16_float(uint16_t b) { return bf16_float(b); }

size_t cbf16_packed_count(int outputs, int inputs) {
    return (size_t)((outputs + OB - 1) / OB) * (size_t)((inputs + 1) / 2) * TAPS * OB;
}

void cbf16_pack(uint32_t *packed, const float *w, int O, int C, int adjoint) {
    int P = adjoint ? C : O, Q = adjoint ? O : C, pairs = (Q + 1) / 2;
    for (int b = 0; b * OB < P; b++)
        for (int k = 0; k < pairs; k++)
            for (int t = 0; t < TAPS; t++)
                for (int j = 0; j < OB; j++) {
                    int p = b * OB + j;
                    float v[2] = {0, 0};
                    for (int h = 0; h < 2; h++) {
                        int q = 2 * k + h;
                        if (p >= P || q >= Q) continue;
                        // As cconv3x3_pack: the adjoint's output p is the layer's input channel,
                        // its input q the layer's output channel, and its taps run backwards.
                        v[h] = adjoint ? w[((size_t)q * C + p) * TAPS + (TAPS - 1 - t)]
                                       : w[((size_t)p * C + q) * TAPS + t];
                    }
                    packed[(((size_t)b * pairs + k) * TAPS + t) * OB + j] = pair(v[0], v[1]);
                }
}

size_t cbf16_rows_count(int images, int rows, int pairs, int padded_channels) {
    return (size_t)images * (size_t)rows * (size_t)pairs * (size_t)padded_channels;
}

// MARK: portable

static INLINE void pair_planes_rows(uint32_t *p, size_t p_plane, const float *x, const uint16_t *xb, size_t x_plane,
                                    int channels, size_t count) {
    if (xb) {
        for (int k = 0; 2 * k < channels; k++) {
            const uint16_t *lo = xb + (size_t)2 * k * x_plane, *hi = 2 * k + 1 < channels ? lo + x_plane : NULL;
            for (size_t i = 0; i < count; i++) p[(size_t)k * p_plane + i] = lo[i] | (uint32_t)(hi ? hi[i] : 0) << 16;
        }
        return;
    }
    for (int k = 0; 2 * k < channels; k++) {
        const float *lo = x + (size_t)2 * k * x_plane, *hi = 2 * k + 1 < channels ? lo + x_plane : NULL;
        for (size_t i = 0; i < count; i++) p[(size_t)k * p_plane + i] = pair(lo[i], hi ? hi[i] : 0.f);
    }
}

/// Output row by output row: each row's sums start at the bias (or what y holds) and take every
/// input pair's nine taps in order, a whole row per tap (`dot_pair_row`).
static INLINE void forward_rows(float *y, size_t y_plane, int y_row, const uint32_t *x, size_t x_plane, int x_row,
                                const uint32_t *packed, size_t block_stride, const float *bias, int inputs,
                                int outputs, int height, int width, int row0, int row1, int accumulate) {
    int pairs = (inputs + 1) / 2;
    for (int p = 0; p < outputs; p++) {
        const uint32_t *wp = packed + (size_t)(p / OB) * block_stride + p % OB;
        for (int oy = row0; oy < row1; oy++) {
            float *out = y + p * y_plane + (size_t)(oy - y_row) * width;
            if (!accumulate)
                for (int ox = 0; ox < width; ox++) out[ox] = bias ? bias[p] : 0.f;
            for (int k = 0; k < pairs; k++)
                for (int t = 0; t < TAPS; t++) {
                    // Padding taps add zero products: skipping them leaves the sums as they are.
                    int iy = oy + t / 3 - 1, dx = t % 3 - 1;
                    if (iy < 0 || iy >= height) continue;
                    int first = dx < 0 ? 1 : 0, end = dx > 0 ? width - 1 : width;
                    const uint32_t *in = x + k * x_plane + (size_t)(iy - x_row) * width + (first + dx);
                    dot_pair_row(out + first, in, wp[((size_t)k * TAPS + t) * OB], end - first);
                }
        }
    }
}

static void pair_planes_portable(uint32_t *p, size_t p_plane, const float *x, const uint16_t *xb, size_t x_plane,
                                 int channels, size_t count) {
    pair_planes_rows(p, p_plane, x, xb, x_plane, channels, count);
}

static void forward_portable(float *y, size_t y_plane, int y_row, const uint32_t *x, size_t x_plane, int x_row,
                             const uint32_t *packed, size_t block_stride, const float *bias, int inputs, int outputs,
                             int height, int width, int row0, int row1, int accumulate) {
    forward_rows(y, y_plane, y_row, x, x_plane, x_row, packed, block_stride, bias, inputs, outputs, height, width,
                 row0, row1, accumulate);
}

static const cbf16_kernel_set portable = {"portable", pair_planes_portable, forward_portable, cbf16_unfold_portable,
                                          cbf16_weight_grad_portable};

const cbf16_kernel_set *cbf16_portable(void) { return &portable; }

// MARK: AVX2

#if HAVE_AVX512
// The portable loops compiled for AVX2 and FMA: eight lanes a vector where the portable build has
// four. The same source, so the same sums in the same order (dot_pair_row keeps its products and
// sums apart, so FMA changes nothing).
AVX2 static void pair_planes_avx2(uint32_t *p, size_t p_plane, const float *x, const uint16_t *xb, size_t x_plane,
                                  int channels, size_t count) {
    pair_planes_rows(p, p_plane, x, xb, x_plane, channels, count);
}

AVX2 static void forward_avx2(float *y, size_t y_plane, int y_row, const uint32_t *x, size_t x_plane, int x_row,
                              const uint32_t *packed, size_t block_stride, const float *bias, int inputs, int outputs,
                              int height, int width, int row0, int row1, int accumulate) {
    forward_rows(y, y_plane, y_row, x, x_plane, x_row, packed, block_stride, bias, inputs, outputs, height, width,
                 row0, row1, accumulate);
}

static const cbf16_kernel_set avx2 = {"AVX2", pair_planes_avx2, forward_avx2, cbf16_unfold_avx2,
                                      cbf16_weight_grad_avx2};

const cbf16_kernel_set *cbf16_avx2(void) { return cconv_avx2_available() ? &avx2 : NULL; }
#else
const cbf16_kernel_set *cbf16_avx2(void) { return NULL; }
#endif

// MARK: AVX512_BF16

#if HAVE_AVX512
int cbf16_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

AVXBF16 static void pair_planes_avx(uint32_t *p, size_t p_plane, const float *x, const uint16_t *xb,
                                    size_t x_plane, int channels, size_t count) {
    if (xb) {
        for (int k = 0; 2 * k < channels; k++) {
            const uint16_t *lo = xb + (size_t)2 * k * x_plane, *hi = lo + x_plane;
            int has_high = 2 * k + 1 < channels;
            uint32_t *pk = p + (size_t)k * p_plane;
            for (size_t i = 0; i < count; i += LANES) {
                int n = (int)(count - i < LANES ? count - i : LANES);
                // Sixteen halves of each plane, zero-extended to words; the odd channel's shifted up.
                __m512i a = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(
                    _mm512_maskz_loadu_epi16((__mmask32)low_lanes(n), lo + i)));
                __m512i b = has_high ? _mm512_cvtepu16_epi32(_mm512_castsi512_si256(
                                           _mm512_maskz_loadu_epi16((__mmask32)low_lanes(n), hi + i)))
                                     : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(pk + i, low_lanes(n), _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
            }
        }
        return;
    }
    for (int k = 0; 2 * k < channels; k++) {
        const float *lo = x + (size_t)2 * k * x_plane, *hi = lo + x_plane;
        int has_high = 2 * k + 1 < channels;
        uint32_t *pk = p + (size_t)k * p_plane;
        for (size_t i = 0; i < count; i += LANES) {
            __mmask16 m = low_lanes((int)(count - i < LANES ? count - i : LANES));
            __m512 a = _mm512_maskz_loadu_ps(m, lo + i);
            __m512 b = has_high ? _mm512_maskz_loadu_ps(m, hi + i) : _mm512_setzero_ps();
            // Lane i of a and b to lanes 2i, 2i + 1: each 32-bit word of the result one pixel's pair.
            __m512 even, odd;
            interleave(a, b, &even, &odd);
            __m512i w = to_pairs(even, odd);
            _mm512_mask_storeu_epi32(pk + i, m, w);
        }
    }
}

/// Vectors per tile of a block of at most FEW_OUTPUTS outputs (a layer with a few classes):
/// FEW_OUTPUTS x FEW_VECTORS sums in registers instead of OB x TV of which most would sum nothing.
enum { FEW_OUTPUTS = 4, FEW_VECTORS = 6 };

/// Up to ob <= OB outputs of tv vectors (at most TV, or FEW_VECTORS for ob <= FEW_OUTPUTS), as
/// cconv.c's forward_tile with a pair of input channels per step: every input pair and tap, sums
/// kept in registers.
AVXBF16 static INLINE void forward_tile(float *y, size_t y_plane, const uint32_t *x, size_t x_plane,
                                        const uint32_t *wb, const float *bias, int outputs, int pairs,
                                        const ptrdiff_t d[TAPS], const Vec *v, int accumulate, const int clean,
                                        const int tv, const int ob) {
    __m512 acc[OB][FEW_VECTORS];
    for (int o = 0; o < ob; o++)
        for (int s = 0; s < tv; s++)
            acc[o][s] = o < outputs && accumulate ? _mm512_maskz_loadu_ps(v[s].store, y + o * y_plane + v[s].offset)
                                                  : _mm512_set1_ps(o < outputs && bias ? bias[o] : 0.f);
    __mmask16 left[FEW_VECTORS], right[FEW_VECTORS];
    for (int s = 0; s < tv; s++) left[s] = v[s].tap[3], right[s] = v[s].tap[5];
    for (int k = 0; k < pairs; k++) {
        const uint32_t *xk = x + k * x_plane, *wk = wb + (size_t)k * TAPS * OB;
        for (int s = 0; s < tv; s++)
            for (int ky = 0; ky < 3; ky++)
                _mm_prefetch((const char *)(xk + x_plane + v[s].offset + d[ky * 3 + 1]), _MM_HINT_T0);
        if (clean) {
#pragma clang loop unroll(full)
            for (int t = 0; t < TAPS; t++) {
                __m512i xv[FEW_VECTORS];
                for (int s = 0; s < tv; s++) {
                    const uint32_t *at = xk + v[s].offset + d[t];
                    if (t % 3 == 1) xv[s] = _mm512_loadu_si512(at);
                    else xv[s] = _mm512_maskz_loadu_epi32(t % 3 == 0 ? left[s] : right[s], at);
                }
                for (int o = 0; o < ob; o++) {
                    __m512i w = _mm512_set1_epi32((int)wk[t * OB + o]);
                    for (int s = 0; s < tv; s++) acc[o][s] = dot(acc[o][s], xv[s], w);
                }
            }
        } else {
#pragma clang loop unroll(disable)
            for (int t = 0; t < TAPS; t++) {
                __m512i xv[FEW_VECTORS];
                for (int s = 0; s < tv; s++) xv[s] = _mm512_maskz_loadu_epi32(v[s].tap[t], xk + v[s].offset + d[t]);
                for (int o = 0; o < ob; o++) {
                    __m512i w = _mm512_set1_epi32((int)wk[t * OB + o]);
                    for (int s = 0; s < tv; s++) acc[o][s] = dot(acc[o][s], xv[s], w);
                }
            }
        }
    }
    for (int o = 0; o < outputs; o++)
        for (int s = 0; s < tv; s++) {
            float *at = y + o * y_plane + v[s].offset;
            _mm512_mask_storeu_ps(at, v[s].store, acc[o][s]);
            // The next tile's output line: a miss there stalls the stores.
            _mm_prefetch((const char *)(at + tv * LANES), _MM_HINT_T0);
        }
}

/// Where a plane's vectors lie: rows' pieces, or (`narrow`) runs of sixteen pixels across rows
/// (as in cconv3x3_forward), from vector `first` to `end` of the band's rows row0 ..< row1.
typedef struct {
    int narrow, per_row, height, width;
    long first, end, pixels0, pixels1;
} Band;

static INLINE Band band_of(int height, int width, int row0, int row1) {
    Band g;
    g.narrow = width < LANES || (width % LANES != 0 && width < 4 * LANES);
    g.per_row = (width + LANES - 1) / LANES;
    g.height = height;
    g.width = width;
    g.pixels0 = (long)row0 * width;
    g.pixels1 = (long)row1 * width;
    g.first = g.narrow ? 0 : (long)row0 * g.per_row;
    g.end = g.narrow ? (g.pixels1 - g.pixels0 + LANES - 1) / LANES : (long)row1 * g.per_row;
    return g;
}

/// The `count` vectors of a tile from vector i of the band, `nothing` past its end; whether none
/// touches the padding.
AVXBF16 static INLINE int describe_tile(Vec *v, int count, long i, const Band *g) {
    int clean = !g->narrow;
    for (int s = 0; s < count; s++) {
        long k = i + s;
        int oy = (int)(k / g->per_row), ox = (int)(k % g->per_row) * LANES;
        if (k >= g->end) nothing(&v[s]);
        else if (g->narrow)
            describe_pixels(&v[s], g->pixels0 + k * LANES, (int)(g->pixels1 - g->pixels0 - k * LANES), g->height,
                            g->width);
        else describe(&v[s], oy, ox, g->height, g->width);
        clean &= k < g->end && oy > 0 && oy + 1 < g->height && ox + LANES <= g->width;
    }
    return clean;
}

/// Blocks of OB outputs (the last may have fewer), TV vectors a tile.
AVXBF16 static void forward_blocks(float *y, size_t y_plane, const uint32_t *x, size_t x_plane,
                                   const uint32_t *packed, size_t block_stride, const float *bias, int pairs,
                                   int outputs, const ptrdiff_t d[TAPS], const Band *g, int accumulate) {
    for (int b = 0; b * OB < outputs; b++) {
        int n = outputs - b * OB < OB ? outputs - b * OB : OB;
        float *yb = y + (size_t)b * OB * y_plane;
        const uint32_t *wb = packed + (size_t)b * block_stride;
        const float *bb = bias ? bias + b * OB : 0;
        for (long i = g->first; i < g->end; i += TV) {
            Vec v[TV];
            int clean = describe_tile(v, TV, i, g);
            if (clean) forward_tile(yb, y_plane, x, x_plane, wb, bb, n, pairs, d, v, accumulate, 1, TV, OB);
            else if (g->end - i >= TV)
                forward_tile(yb, y_plane, x, x_plane, wb, bb, n, pairs, d, v, accumulate, 0, TV, OB);
            else if (g->end - i == 2)
                forward_tile(yb, y_plane, x, x_plane, wb, bb, n, pairs, d, v, accumulate, 0, 2, OB);
            else forward_tile(yb, y_plane, x, x_plane, wb, bb, n, pairs, d, v, accumulate, 0, 1, OB);
        }
    }
}

/// One block of n <= FEW_OUTPUTS outputs, FEW_VECTORS vectors a tile (the last tile's vectors
/// past the end read and store nothing).
AVXBF16 static void forward_few(float *y, size_t y_plane, const uint32_t *x, size_t x_plane, const uint32_t *wb,
                                const float *bias, int pairs, int n, const ptrdiff_t d[TAPS], const Band *g,
                                int accumulate) {
    for (long i = g->first; i < g->end; i += FEW_VECTORS) {
        Vec v[FEW_VECTORS];
        int clean = describe_tile(v, FEW_VECTORS, i, g);
#define FEW(N) \
    case N: \
        if (clean) forward_tile(y, y_plane, x, x_plane, wb, bias, n, pairs, d, v, accumulate, 1, FEW_VECTORS, N); \
        else forward_tile(y, y_plane, x, x_plane, wb, bias, n, pairs, d, v, accumulate, 0, FEW_VECTORS, N); \
        break;
        switch (n) { FEW(1) FEW(2) FEW(3) FEW(4) }
#undef FEW
    }
}

AVXBF16 static void forward_avx(float *y, size_t y_plane, int y_row, const uint32_t *x, size_t x_plane, int x_row,
                                const uint32_t *packed, size_t block_stride, const float *bias, int inputs,
                                int outputs, int height, int width, int row0, int row1, int accumulate) {
    int pairs = (inputs + 1) / 2;
    // Pixel offsets stay the image's: x and y from its row 0 (a padding tap's address may lie
    // outside the band, as outside the image; its lanes are never loaded).
    x -= (ptrdiff_t)x_row * width;
    y -= (ptrdiff_t)y_row * width;
    Band g = band_of(height, width, row0, row1);
    ptrdiff_t d[TAPS];
    taps(d, width);
    // A last block of a few outputs (a layer with a few classes) goes by tiles of its own, after
    // the others' loop: inside it, they slowed that loop's tiles down (docs/kernel-notes.md).
    int few = outputs % OB != 0 && outputs % OB <= FEW_OUTPUTS ? outputs % OB : 0, full = outputs - few;
    if (full) forward_blocks(y, y_plane, x, x_plane, packed, block_stride, bias, pairs, full, d, &g, accumulate);
    if (few)
        forward_few(y + (size_t)full * y_plane, y_plane, x, x_plane, packed + (size_t)(full / OB) * block_stride,
                    bias ? bias + full : 0, pairs, few, d, &g, accumulate);
}

static const cbf16_kernel_set avx512bf16 = {"AVX512_BF16", pair_planes_avx, forward_avx, cbf16_unfold_avx,
                                            cbf16_weight_grad_avx};

const cbf16_kernel_set *cbf16_avx512(void) { return cbf16_available() ? &avx512bf16 : NULL; }

AVXBF16 static double peak_avx(long iterations) {
    // 24 independent sums: more than the instruction's latency times its throughput.
    enum { N = 24 };
    __m512 acc[N];
    for (int i = 0; i < N; i++) acc[i] = _mm512_setzero_ps();
    __m512i a = _mm512_set1_epi32(0x3F803F80), b = _mm512_set1_epi32(0x3C003C00);  // 1.0 and 2^-7 pairs
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long it = 0; it < iterations; it++) {
        for (int i = 0; i < N; i++) acc[i] = dot(acc[i], a, b);
        __asm__ volatile("" : "+v"(a));  // keeps the loop from being folded
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    __m512 s = acc[0];
    for (int i = 1; i < N; i++) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return 64.0 * N * (double)iterations / seconds;
}

double cbf16_peak_flops(long iterations) { return cbf16_available() ? peak_avx(iterations) : 0; }

#else
int cbf16_available(void) { return 0; }
const cbf16_kernel_set *cbf16_avx512(void) { return NULL; }
double cbf16_peak_flops(long iterations) {
    (void)iterations;
    return 0;
}
#endif

const cbf16_kernel_set *cbf16_kernels(void) {
    // An AMX-BF16 set (Sapphire Rapids and later) would be chosen here first.
    const cbf16_kernel_set *fast = cbf16_avx512();
    if (!fast) fast = cbf16_avx2();
    return fast ? fast : &portable;
}
