#include "cconvt_bf16.h"

#include "bf16.h"
#include "cconv.h"

// ConvTranspose2d 2x2 stride 2 in bf16 (cconvt_bf16.h). Arrays, per image:
//   x   [inputs][H][W] float32, paired in the forward as it is read (word = (x[2k], x[2k + 1])
//       at one pixel); as a pixel-pair copy [rows][ceil(W / 2)][padded_channels] words (weight
//       gradient)
//   y   [outputs][2H][2W] float32 (rows `out_width` apart inside a padded plane)
//   dy  [outputs][2H][2W] float32; as words [outputs][2H][W] (input gradient), as the copy
//       [outputs * 4][images][rows][ceil(W / 2)] words (weight gradient)
//   w   [inputs][outputs][2][2] float32; packed as cbf16t_pack says
//   g   [outputs * 4][padded_channels] float32 sums: o = p * 4 + a * 2 + b, channel q
// The portable functions come first; they are the reference the AVX512_BF16 ones are tested
// against, summing the same pairs in the same order.

// Forward: 4 outputs x 2 kernel columns x 3 vectors = 24 sums (as cconvt.c). Input gradient:
// 8 input channels x 3 vectors = 24 sums.
enum { FB = 4, DB = 8, TV = 3, LANES = 16 };

size_t cbf16t_packed_count(int inputs, int outputs) {
    size_t forward = (size_t)((outputs + FB - 1) / FB) * 2 * (size_t)((inputs + 1) / 2) * 2 * FB;
    size_t backward = (size_t)((inputs + DB - 1) / DB) * (size_t)outputs * 2 * DB;
    return forward > backward ? forward : backward;
}

void cbf16t_pack(uint32_t *packed, const float *w, int inputs, int outputs, int input_grad) {
#define W(q, p, a, b) w[(((size_t)(q) * outputs + (p)) * 2 + (a)) * 2 + (b)]
    if (!input_grad) {
        int pairs = (inputs + 1) / 2;
        for (int b = 0; b * FB < outputs; b++)
            for (int a = 0; a < 2; a++)
                for (int k = 0; k < pairs; k++)
                    for (int j = 0; j < 2 * FB; j++) {
                        int p = b * FB + j / 2, kx = j % 2;
                        float v[2] = {0, 0};
                        for (int h = 0; h < 2; h++)
                            if (p < outputs && 2 * k + h < inputs) v[h] = W(2 * k + h, p, a, kx);
                        packed[(((size_t)b * 2 + a) * pairs + k) * 2 * FB + j] = pair(v[0], v[1]);
                    }
        return;
    }
    for (int b = 0; b * DB < inputs; b++)
        for (int p = 0; p < outputs; p++)
            for (int a = 0; a < 2; a++)
                for (int j = 0; j < DB; j++) {
                    int q = b * DB + j;
                    packed[(((size_t)b * outputs + p) * 2 + a) * DB + j] =
                        q < inputs ? pair(W(q, p, a, 0), W(q, p, a, 1)) : 0;
                }
#undef W
}

size_t cbf16t_tile_count(int inputs) { return (size_t)TV * LANES * (size_t)((inputs + 1) / 2); }

size_t cbf16t_dy_count(int outputs, int images, int rows, int width) {
    return (size_t)outputs * 4 * (size_t)images * (size_t)rows * (size_t)((width + 1) / 2);
}

// MARK: portable

/// Runs of up to TV x LANES pixels of an input row: their words paired once into `tile`
/// ([pair][pixel]), then each (output, kernel row, kernel column) sum takes the input pairs in
/// order, a whole run per pair (`dot_pair_row`), and adds the bias last.
static INLINE void forward_runs(float *y, uint16_t *yb, size_t ow, size_t out_plane, const float *x,
                                const uint32_t *packed, const float *bias, int inputs, int outputs, int height,
                                int width, int row0, int row1, uint32_t *tile) {
    enum { RUN = TV * LANES };
    size_t plane = (size_t)height * width;
    int pairs = (inputs + 1) / 2;
    for (int i = row0; i < row1; i++)
        for (int j0 = 0; j0 < width; j0 += RUN) {
            int m = width - j0 < RUN ? width - j0 : RUN;
            const float *xr = x + (size_t)i * width + j0;
            for (int k = 0; k < pairs; k++)
                for (int j = 0; j < m; j++)
                    tile[k * RUN + j] = pair(xr[2 * k * plane + j], 2 * k + 1 < inputs ? xr[(2 * k + 1) * plane + j]
                                                                                      : 0.f);
            for (int p = 0; p < outputs; p++)
                for (int a = 0; a < 2; a++)
                    for (int kx = 0; kx < 2; kx++) {
                        const uint32_t *wp = packed + ((size_t)(p / FB) * 2 + a) * pairs * 2 * FB + p % FB * 2 + kx;
                        float s[RUN];
                        for (int j = 0; j < m; j++) s[j] = 0;
                        for (int k = 0; k < pairs; k++) dot_pair_row(s, tile + k * RUN, wp[k * 2 * FB], m);
                        size_t at = p * out_plane + (size_t)(2 * i + a) * ow + 2 * (size_t)j0 + kx;
                        for (int j = 0; j < m; j++) {
                            float v = bias ? s[j] + bias[p] : s[j];
                            if (yb) yb[at + 2 * j] = bf16_round(v);
                            else y[at + 2 * j] = v;
                        }
                    }
        }
}

static void forward_portable(float *y, uint16_t *yb, size_t ow, size_t out_plane, const float *x,
                             const uint32_t *packed, const float *bias, int inputs, int outputs, int height, int width,
                             int row0, int row1, uint32_t *tile) {
    forward_runs(y, yb, ow, out_plane, x, packed, bias, inputs, outputs, height, width, row0, row1, tile);
}

static INLINE void round_pairs_body(uint32_t *d, const float *dy, size_t count) {
    for (size_t i = 0; 2 * i < count; i++) d[i] = pair(dy[2 * i], dy[2 * i + 1]);
}

/// Input rows of dx: each row's sums take every (output, kernel row) word in order, a whole row
/// per word (`dot_pair_row`).
static INLINE void input_grad_rows(float *dx, const uint32_t *d, const uint32_t *packed, int inputs, int outputs,
                                   int height, int width, int row0, int row1) {
    size_t plane = (size_t)height * width, words = 2 * plane;
    for (int q = 0; q < inputs; q++) {
        const uint32_t *wq = packed + (size_t)(q / DB) * outputs * 2 * DB + q % DB;
        for (int i = row0; i < row1; i++) {
            float *s = dx + q * plane + (size_t)i * width;
            for (int j = 0; j < width; j++) s[j] = 0;
            for (int p = 0; p < outputs; p++)
                for (int a = 0; a < 2; a++)
                    dot_pair_row(s, d + p * words + (size_t)(2 * i + a) * width, wq[((size_t)p * 2 + a) * DB], width);
        }
    }
}

static void round_pairs_portable(uint32_t *d, const float *dy, size_t count) { round_pairs_body(d, dy, count); }

static void input_grad_portable(float *dx, const uint32_t *d, const uint32_t *packed, int inputs, int outputs,
                                int height, int width, int row0, int row1) {
    input_grad_rows(dx, d, packed, inputs, outputs, height, width, row0, row1);
}

static INLINE void unfold_dy_rows(uint32_t *t, const float *dy, size_t dy_image, int images, int outputs,
                                  int height, int width, int row0, int rows) {
    size_t ow = 2 * (size_t)width, out_plane = 2 * (size_t)height * ow;
    int pairs = (width + 1) / 2;
    size_t block = (size_t)images * rows * pairs;
    for (int p = 0; p < outputs; p++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                uint32_t *to = t + ((size_t)p * 4 + a * 2 + b) * block;
                for (int n = 0; n < images; n++)
                    for (int r = 0; r < rows; r++) {
                        const float *src = dy + n * dy_image + p * out_plane + (size_t)(2 * (row0 + r) + a) * ow;
                        for (int m = 0; m < pairs; m++) {
                            size_t c = 4 * (size_t)m + b;
                            to[((size_t)n * rows + r) * pairs + m] = pair(src[c], c + 2 < ow ? src[c + 2] : 0.f);
                        }
                    }
            }
}

static void unfold_dy_portable(uint32_t *t, const float *dy, size_t dy_image, int images, int outputs, int height,
                               int width, int row0, int rows) {
    unfold_dy_rows(t, dy, dy_image, images, outputs, height, width, row0, rows);
}

/// Rows of g: each (output, tap) row of padded_channels sums takes the pixel pairs in order, a
/// whole row per pair (`dot_pair_row`).
static INLINE void weight_grad_rows(float *g, const uint32_t *dy, const uint32_t *x, int outputs, int padded_channels,
                                    long pairs_total) {
    int cp = padded_channels;
    for (int o = 0; o < 4 * outputs; o++) {
        const uint32_t *d = dy + (size_t)o * pairs_total;
        for (long k = 0; k < pairs_total; k++) dot_pair_row(g + (size_t)o * cp, x + (size_t)k * cp, d[k], cp);
    }
}

static void weight_grad_portable(float *g, const uint32_t *dy, const uint32_t *x, int outputs, int padded_channels,
                                 long pairs_total) {
    weight_grad_rows(g, dy, x, outputs, padded_channels, pairs_total);
}

static const cbf16t_kernel_set portable = {"portable", forward_portable, round_pairs_portable, input_grad_portable,
                                           unfold_dy_portable, weight_grad_portable};

const cbf16t_kernel_set *cbf16t_portable(void) { return &portable; }

// MARK: AVX2

#if HAVE_AVX512
// The portable loops compiled for AVX2 and FMA, as cconv_bf16.c's AVX2 set: the same bits.
AVX2 static void forward_avx2(float *y, uint16_t *yb, size_t ow, size_t out_plane, const float *x,
                              const uint32_t *packed, const float *bias, int inputs, int outputs, int height, int width,
                              int row0, int row1, uint32_t *tile) {
    forward_runs(y, yb, ow, out_plane, x, packed, bias, inputs, outputs, height, width, row0, row1, tile);
}

AVX2 static void round_pairs_avx2(uint32_t *d, const float *dy, size_t count) { round_pairs_body(d, dy, count); }

AVX2 static void input_grad_avx2(float *dx, const uint32_t *d, const uint32_t *packed, int inputs, int outputs,
                                 int height, int width, int row0, int row1) {
    input_grad_rows(dx, d, packed, inputs, outputs, height, width, row0, row1);
}

AVX2 static void unfold_dy_avx2(uint32_t *t, const float *dy, size_t dy_image, int images, int outputs, int height,
                                int width, int row0, int rows) {
    unfold_dy_rows(t, dy, dy_image, images, outputs, height, width, row0, rows);
}

AVX2 static void weight_grad_avx2(float *g, const uint32_t *dy, const uint32_t *x, int outputs, int padded_channels,
                                  long pairs_total) {
    weight_grad_rows(g, dy, x, outputs, padded_channels, pairs_total);
}

static const cbf16t_kernel_set avx2 = {"AVX2", forward_avx2, round_pairs_avx2, input_grad_avx2, unfold_dy_avx2,
                                       weight_grad_avx2};

const cbf16t_kernel_set *cbf16t_avx2(void) { return cconv_avx2_available() ? &avx2 : NULL; }
#else
const cbf16t_kernel_set *cbf16t_avx2(void) { return NULL; }
#endif

// MARK: AVX512_BF16

#if HAVE_AVX512

/// One tile's vectors (up to TV, each within one input row), starting at vector `i` of
/// [first, end): their offsets in an input plane and their lanes.
typedef struct {
    ptrdiff_t in[TV];
    int row[TV], column[TV];
    __mmask16 lanes[TV];
} Vectors;

static INLINE void vectors(Vectors *v, long i, long end, int width) {
    int per_row = (width + LANES - 1) / LANES;
    for (int s = 0; s < TV; s++) {
        long k = i + s;
        v->row[s] = k < end ? (int)(k / per_row) : 0;
        v->column[s] = k < end ? (int)(k % per_row) * LANES : 0;
        v->in[s] = (ptrdiff_t)v->row[s] * width + v->column[s];
        v->lanes[s] = k < end ? low_lanes(width - v->column[s]) : 0;
    }
}

AVXBF16 static void forward_avx(float *y, uint16_t *yb, size_t ow, size_t out_plane, const float *x,
                                const uint32_t *packed, const float *bias, int inputs, int outputs, int height,
                                int width, int row0, int row1, uint32_t *tile) {
    size_t plane = (size_t)height * width;
    int pairs = (inputs + 1) / 2, per_row = (width + LANES - 1) / LANES;
    long end = (long)row1 * per_row;
    for (long i = (long)row0 * per_row; i < end; i += TV) {
        Vectors v;
        vectors(&v, i, end, width);
        // The tile's input words, pair after pair, rounded once for every block of outputs and
        // kernel row: lane i of channels 2k and 2k + 1 to lanes 2i, 2i + 1, then to bf16.
        for (int k = 0; k < pairs; k++)
            for (int s = 0; s < TV; s++) {
                const float *lo = x + (size_t)2 * k * plane + v.in[s];
                __m512 a = _mm512_maskz_loadu_ps(v.lanes[s], lo);
                __m512 b = 2 * k + 1 < inputs ? _mm512_maskz_loadu_ps(v.lanes[s], lo + plane) : _mm512_setzero_ps();
                __m512 even, odd;
                interleave(a, b, &even, &odd);
                _mm512_storeu_si512(tile + (k * TV + s) * LANES, to_pairs(even, odd));
            }
        for (int b = 0; b * FB < outputs; b++) {
            int count = outputs - b * FB < FB ? outputs - b * FB : FB;
            for (int a = 0; a < 2; a++) {
                const uint32_t *wp = packed + ((size_t)b * 2 + a) * pairs * 2 * FB;
                __m512 acc[FB][2][TV];
                for (int o = 0; o < FB; o++)
                    for (int kx = 0; kx < 2; kx++)
                        for (int s = 0; s < TV; s++) acc[o][kx][s] = _mm512_setzero_ps();
                for (int k = 0; k < pairs; k++) {
                    __m512i xv[TV];
                    for (int s = 0; s < TV; s++) xv[s] = _mm512_loadu_si512(tile + (k * TV + s) * LANES);
                    for (int j = 0; j < 2 * FB; j++) {
                        __m512i w = _mm512_set1_epi32((int)wp[(size_t)k * 2 * FB + j]);
                        for (int s = 0; s < TV; s++) acc[j / 2][j % 2][s] = dot(acc[j / 2][j % 2][s], xv[s], w);
                    }
                }
                for (int o = 0; o < count; o++) {
                    size_t yo = (size_t)(b * FB + o) * out_plane + (size_t)a * ow;
                    for (int s = 0; s < TV; s++) {
                        // Output columns 2j and 2j + 1 are kernel columns 0 and 1 of input column j.
                        __m512 lo, hi;
                        interleave(acc[o][0][s], acc[o][1][s], &lo, &hi);
                        if (bias) {
                            __m512 bv = _mm512_set1_ps(bias[b * FB + o]);
                            lo = _mm512_add_ps(lo, bv);
                            hi = _mm512_add_ps(hi, bv);
                        }
                        int n = v.lanes[s] ? width - v.column[s] : 0;
                        size_t at = yo + (size_t)2 * v.row[s] * ow + 2 * v.column[s];
                        if (yb) {
                            // lo and hi are 32 consecutive outputs: their bf16 in order, one store.
                            __mmask32 m = 2 * n >= 2 * LANES ? ~(__mmask32)0 : ((__mmask32)1 << 2 * n) - 1;
                            _mm512_mask_storeu_epi16(yb + at, m, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                            _mm_prefetch((const char *)(yb + at + 2 * TV * LANES), _MM_HINT_T0);
                            continue;
                        }
                        _mm512_mask_storeu_ps(y + at, low_lanes(2 * n), lo);
                        _mm512_mask_storeu_ps(y + at + LANES, low_lanes(2 * n - LANES), hi);
                        // The next tile's output lines: a miss there stalls the stores.
                        _mm_prefetch((const char *)(y + at + 2 * TV * LANES), _MM_HINT_T0);
                        _mm_prefetch((const char *)(y + at + 2 * TV * LANES + LANES), _MM_HINT_T0);
                    }
                }
            }
        }
    }
}

AVXBF16 static void round_pairs_avx(uint32_t *d, const float *dy, size_t count) {
    for (size_t i = 0; i < count; i += 2 * LANES) {
        int n = count - i < 2 * LANES ? (int)(count - i) : 2 * LANES;
        __m512 lo = _mm512_maskz_loadu_ps(low_lanes(n), dy + i);
        __m512 hi = _mm512_maskz_loadu_ps(low_lanes(n - LANES), dy + i + LANES);
        _mm512_mask_storeu_epi32(d + i / 2, low_lanes(n / 2), to_pairs(lo, hi));
    }
}

AVXBF16 static void input_grad_avx(float *dx, const uint32_t *d, const uint32_t *packed, int inputs, int outputs,
                                   int height, int width, int row0, int row1) {
    size_t plane = (size_t)height * width, words = 2 * plane;
    int per_row = (width + LANES - 1) / LANES;
    long end = (long)row1 * per_row;
    for (long i = (long)row0 * per_row; i < end; i += TV) {
        Vectors v;
        vectors(&v, i, end, width);
        // Where the vectors' dy words start: row 2i of dy's word planes (W words a row).
        ptrdiff_t at[TV];
        for (int s = 0; s < TV; s++) at[s] = (ptrdiff_t)2 * v.row[s] * width + v.column[s];
        for (int b = 0; b * DB < inputs; b++) {
            int count = inputs - b * DB < DB ? inputs - b * DB : DB;
            const uint32_t *wb = packed + (size_t)b * outputs * 2 * DB;
            __m512 acc[DB][TV];
            for (int o = 0; o < DB; o++)
                for (int s = 0; s < TV; s++) acc[o][s] = _mm512_setzero_ps();
            for (int p = 0; p < outputs; p++)
                for (int a = 0; a < 2; a++) {
                    __m512i dv[TV];
                    for (int s = 0; s < TV; s++)
                        dv[s] = _mm512_maskz_loadu_epi32(v.lanes[s], d + p * words + at[s] + (size_t)a * width);
                    const uint32_t *wp = wb + ((size_t)p * 2 + a) * DB;
                    for (int o = 0; o < DB; o++) {
                        __m512i w = _mm512_set1_epi32((int)wp[o]);
                        for (int s = 0; s < TV; s++) acc[o][s] = dot(acc[o][s], dv[s], w);
                    }
                }
            for (int o = 0; o < count; o++)
                for (int s = 0; s < TV; s++) {
                    float *at = dx + (size_t)(b * DB + o) * plane + v.in[s];
                    _mm512_mask_storeu_ps(at, v.lanes[s], acc[o][s]);
                    _mm_prefetch((const char *)(at + TV * LANES), _MM_HINT_T0);
                }
        }
    }
}

AVXBF16 static void unfold_dy_avx(uint32_t *t, const float *dy, size_t dy_image, int images, int outputs, int height,
                                  int width, int row0, int rows) {
    size_t ow = 2 * (size_t)width, out_plane = 2 * (size_t)height * ow;
    int pairs = (width + 1) / 2;
    size_t block = (size_t)images * rows * pairs;
    // Lane k of the result: element 2k (b = 0) or 2k + 1 (b = 1) of 32 floats.
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (int p = 0; p < outputs; p++)
        for (int a = 0; a < 2; a++)
            for (int n = 0; n < images; n++)
                for (int r = 0; r < rows; r++) {
                    const float *src = dy + n * dy_image + p * out_plane + (size_t)(2 * (row0 + r) + a) * ow;
                    size_t offset = ((size_t)n * rows + r) * pairs;
                    uint32_t *to0 = t + ((size_t)p * 4 + a * 2) * block + offset, *to1 = to0 + block;
                    // Sixteen pairs m (64 floats) at a time: word m of b is (src[4m + b], src[4m + 2 + b]).
                    for (int m0 = 0; m0 < pairs; m0 += LANES) {
                        int c = 4 * m0, left = (int)ow - c;
                        __m512 v[4];
                        for (int s = 0; s < 4; s++)
                            v[s] = _mm512_maskz_loadu_ps(low_lanes(left - s * LANES), src + c + s * LANES);
                        __mmask16 store = low_lanes(pairs - m0);
                        __m512 e0 = _mm512_permutex2var_ps(v[0], even, v[1]);
                        __m512 e1 = _mm512_permutex2var_ps(v[2], even, v[3]);
                        __m512 o0 = _mm512_permutex2var_ps(v[0], odd, v[1]);
                        __m512 o1 = _mm512_permutex2var_ps(v[2], odd, v[3]);
                        _mm512_mask_storeu_epi32(to0 + m0, store, to_pairs(e0, e1));
                        _mm512_mask_storeu_epi32(to1 + m0, store, to_pairs(o0, o1));
                    }
                }
}

/// g[o][c] += over k of the pair step on dy[o][k] (broadcast) and x[k][c] for np outputs and nc
/// vectors of 16 channels: np x nc sums in registers, as cconv_bf16.c's weight_grad_tile.
AVXBF16 static INLINE void weight_grad_tile(float *g, int cp, const uint32_t *dy, const uint32_t *x, long total,
                                            const int np, const int nc) {
    __m512 acc[16][4];
    for (int o = 0; o < np; o++)
        for (int j = 0; j < nc; j++) acc[o][j] = _mm512_loadu_ps(g + (size_t)o * cp + j * LANES);
    for (long k = 0; k < total; k++) {
        __m512i xv[4];
        for (int j = 0; j < nc; j++) xv[j] = _mm512_loadu_si512(x + (size_t)k * cp + j * LANES);
        for (int o = 0; o < np; o++) {
            __m512i d = _mm512_set1_epi32((int)dy[(size_t)o * total + k]);
            for (int j = 0; j < nc; j++) acc[o][j] = dot(acc[o][j], d, xv[j]);
        }
    }
    for (int o = 0; o < np; o++)
        for (int j = 0; j < nc; j++) _mm512_storeu_ps(g + (size_t)o * cp + j * LANES, acc[o][j]);
}

#define TILE(NP, NC) \
    case NP: weight_grad_tile(g, cp, dy, x, total, NP, NC); break;
#define TILES6(NC) TILE(1, NC) TILE(2, NC) TILE(3, NC) TILE(4, NC) TILE(5, NC) TILE(6, NC)
#define TILES12(NC) TILES6(NC) TILE(7, NC) TILE(8, NC) TILE(9, NC) TILE(10, NC) TILE(11, NC) TILE(12, NC)

AVXBF16 static void weight_grad_avx(float *g0, const uint32_t *dy0, const uint32_t *x0, int outputs,
                                    int padded_channels, long total) {
    int cp = padded_channels, rows = 4 * outputs;
    for (int c0 = 0; c0 < cp;) {
        int vectors = (cp - c0) / LANES, nc = vectors >= 4 ? 4 : vectors >= 2 ? 2 : 1;
        int most = nc == 4 ? 6 : nc == 2 ? 12 : 16, tiles = (rows + most - 1) / most;
        int each = (rows + tiles - 1) / tiles;
        for (int o0 = 0; o0 < rows; o0 += each) {
            int np = rows - o0 < each ? rows - o0 : each;
            float *g = g0 + (size_t)o0 * cp + c0;
            const uint32_t *dy = dy0 + (size_t)o0 * total, *x = x0 + c0;
            if (nc == 4) {
                switch (np) { TILES6(4) }
            } else if (nc == 2) {
                switch (np) { TILES12(2) }
            } else {
                switch (np) { TILES12(1) TILE(13, 1) TILE(14, 1) TILE(15, 1) TILE(16, 1) }
            }
        }
        c0 += nc * LANES;
    }
}

static const cbf16t_kernel_set avx512bf16 = {"AVX512_BF16", forward_avx, round_pairs_avx, input_grad_avx,
                                             unfold_dy_avx, weight_grad_avx};

const cbf16t_kernel_set *cbf16t_avx512(void) { return cbf16_available() ? &avx512bf16 : NULL; }

#else
const cbf16t_kernel_set *cbf16t_avx512(void) { return NULL; }
#endif
