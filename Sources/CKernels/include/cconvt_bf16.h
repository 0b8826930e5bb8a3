#ifndef UNET_DIST_CCONVT_BF16_H
#define UNET_DIST_CCONVT_BF16_H

#include <stddef.h>
#include <stdint.h>

/// ConvTranspose2d with a 2x2 kernel at stride 2 (the up-sampling) with bf16 inputs, weights and
/// dy and float32 sums, for mixed-precision training: the counterpart of cconv_bf16.h, in the
/// same words of two bf16 (low half first in the pair) and with the same rounding
/// (`cbf16_round`) and the same pair step (`vdpbf16ps`: the high halves' product, then the low
/// halves', added to the float32 sum).
///
/// Shapes: x is [inputs][H][W] per image, y and dy [outputs][2H][2W], w PyTorch's
/// [inputs][outputs][2][2]; y[p, 2i + a, 2j + b] = bias[p] + sum over q of w[q, p, a, b] x[q, i, j].
/// Each kernel pairs two terms of its sum:
///
/// - Forward: pairs of INPUT CHANNELS, x read as cconv_bf16.h's paired planes (word =
///   (x[2k], x[2k + 1]) at one pixel, rounded as it is read); one weight word per (pair, output,
///   tap).
/// - Input gradient: dx[q, i, j] = sum over p, a of w[q, p, a, 0] dy[p, 2i + a, 2j] +
///   w[q, p, a, 1] dy[p, 2i + a, 2j + 1]: the two kernel COLUMNS b are the pair. Output pixels 2j
///   and 2j + 1 lie side by side, so dy rounded to bf16 in place (NCHW, 2W bf16 a row) already
///   is the word array: word (p, r, j) = (dy[p, r, 2j], dy[p, r, 2j + 1]).
/// - Weight gradient: the sum runs over pixels, so pairs of input PIXELS (columns 2m and
///   2m + 1 of a row). x is cconv_bf16.h's pixel-pair copy ([image][row][pair][channel], from
///   the cbf16 unfold with col0 = 0); dy's words for tap (a, b) are (dy[p, 2i + a, 4m + b],
///   dy[p, 2i + a, 4m + 2 + b]), copied [p][a][b][image][row][pair] (`unfold_dy`).

/// Words `cbf16t_pack` writes for `inputs` and `outputs` channels (either kernel).
size_t cbf16t_packed_count(int inputs, int outputs);

/// The forward's weights (`input_grad` = 0): blocks of four outputs, then kernel row a, input pair
/// k, and (output, kernel column) within the block: word (w[2k, p, a, b], w[2k + 1, p, a, b]).
/// The input gradient's (`input_grad` = 1): blocks of eight input channels q, then output p,
/// kernel row a, and q within the block: word (w[q, p, a, 0], w[q, p, a, 1]). Zero past the last
/// channel.
void cbf16t_pack(uint32_t *packed, const float *w, int inputs, int outputs, int input_grad);

/// One image, input rows [row0, row1): y[p, 2i + a, 2j + b] = (sum over input pairs k in order of
/// the pair step) + bias[p] (NULL: none), assigned. x: float32 [inputs][H][W]; y's rows
/// `out_width` elements apart (2W, or more inside a padded plane), its planes `out_plane`. With
/// `yb` (y then NULL), each sum rounded to bf16 and its upper half written there instead, as
/// `cbf16_round` rounds. `tile`: scratch of `cbf16t_tile_count(inputs)` words.
typedef void (*cbf16t_forward_fn)(float *y, uint16_t *yb, size_t out_width, size_t out_plane, const float *x,
                                  const uint32_t *packed, const float *bias, int inputs, int outputs, int height,
                                  int width, int row0, int row1, uint32_t *tile);
size_t cbf16t_tile_count(int inputs);

/// dy (float32, `count` floats, even) to words: word i = (dy[2i], dy[2i + 1]) rounded.
typedef void (*cbf16t_round_pairs_fn)(uint32_t *d, const float *dy, size_t count);

/// One image: dx[q, i, j] for input rows [row0, row1) = sum over p, then a, of the pair step on
/// dy's words (p, 2i + a, j) and the packed weight word, from zero, assigned. d: dy's words, one
/// image ([outputs][2H][W]).
typedef void (*cbf16t_input_grad_fn)(float *dx, const uint32_t *d, const uint32_t *packed, int inputs, int outputs,
                                     int height, int width, int row0, int row1);

/// Words of dy's copy for `images` images of `rows` rows: 4 outputs x images x rows x ceil(W / 2).
size_t cbf16t_dy_count(int outputs, int images, int rows, int width);

/// dy's copy for input rows [row0, row0 + rows) of `images` images `dy_image` floats apart:
/// t[(p * 4 + a * 2 + b)][image][row][m] = (dy[p, 2i + a, 4m + b], dy[p, 2i + a, 4m + 2 + b]),
/// zero past the row's end (odd W).
typedef void (*cbf16t_unfold_dy_fn)(uint32_t *t, const float *dy, size_t dy_image, int images, int outputs,
                                    int height, int width, int row0, int rows);

/// g[o][c] += sum over the copies' pixel pairs (image, row, pair in order) of the pair step on
/// dy's words (o = p * 4 + a * 2 + b) and x's words (channel c of `padded_channels`, a multiple
/// of 16), for o < 4 outputs; `pairs_total` = images x rows x ceil(W / 2). g's rows are
/// `padded_channels` floats.
typedef void (*cbf16t_weight_grad_fn)(float *g, const uint32_t *dy, const uint32_t *x, int outputs,
                                      int padded_channels, long pairs_total);

typedef struct {
    const char *name;
    cbf16t_forward_fn forward;
    cbf16t_round_pairs_fn round_pairs;
    cbf16t_input_grad_fn input_grad;
    cbf16t_unfold_dy_fn unfold_dy;
    cbf16t_weight_grad_fn weight_grad;
} cbf16t_kernel_set;

/// Portable C, any CPU; the AVX2 set (the portable loops compiled for AVX2 and FMA; NULL without
/// them) and the AVX512_BF16 set (NULL without AVX512_BF16) give the same bits.
const cbf16t_kernel_set *cbf16t_portable(void);
const cbf16t_kernel_set *cbf16t_avx2(void);
const cbf16t_kernel_set *cbf16t_avx512(void);

#endif
