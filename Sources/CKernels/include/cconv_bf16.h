#ifndef UNET_DIST_CCONV_BF16_H
#define UNET_DIST_CCONV_BF16_H

#include <stddef.h>
#include <stdint.h>

/// Direct 3x3, stride 1, padding 1 convolutions with bf16 inputs and weights and float32 sums,
/// for mixed-precision training (float32 master weights; these kernels see bf16 copies).
///
/// The instruction they are built around, `vdpbf16ps` (AVX512_BF16), multiplies PAIRS of bf16
/// and adds both products into one float32 lane. Every operand here is therefore a 32-bit word
/// holding two bf16 (the low half first in the pair, the high half second), and each kernel pairs
/// two terms of its sum:
///
/// - Forward and input gradient (a convolution of dy with the adjoint kernel): pairs of INPUT
///   CHANNELS. Activations are "paired planes": channel pair k's plane is H x W words whose low
///   halves are channel 2k and high halves channel 2k + 1 (an odd channel count pads the last
///   pair with zero). Sixteen pixels of one pair-plane are one vector, exactly as sixteen floats
///   of one plane are in cconv.c, so the masks and tiles of the float32 kernel carry over; the
///   weight (w[o, 2k, tap], w[o, 2k + 1, tap]) is one broadcast word.
/// - Weight gradient: the sum runs over pixels, so pairs of PIXELS (columns 2j and 2j + 1 of an
///   output row). dy is copied pixel-pair-major (word = dy[o] at both pixels), x channel-minor
///   (word = x[c] at both pixels shifted by the tap). Shifting a pair by the tap's column moves it
///   by one pixel for the middle column, so x is copied twice: pairs starting at even padded
///   columns ("even copy", taps kx = 0 and 2) and at odd ones ("odd copy", kx = 1).
///
/// Rounding: float32 -> bf16 is round to nearest even, as VCVTNE2PS2BF16 does it: denormal
/// inputs become a signed zero, NaN stays a quiet NaN. Products of two bf16 are exact in float32;
/// each vdpbf16ps lane adds the high pair's product, then the low one's, into the float32 sum.
///
/// Three implementations in the same layouts and the same order of sums (float32 adds, no FMA
/// needed: the products are exact): AVX512_BF16; portable C, written as loops over a row of
/// pixels or channels that the compiler vectorizes; and those loops compiled for AVX2 and FMA.
/// `cbf16_kernels()` picks one by CPUID. That table is the seam where an AMX-BF16
/// implementation would go (same layouts; AMX tiles take the pair-interleaved B operand, "VNNI
/// layout", that these paired words already are); none is built here, having no AMX CPU to test
/// it on.

/// 1 where the CPU has AVX512_BF16 (with AVX-512F and BW), else 0.
int cbf16_available(void);

/// float32 -> bf16 bits, round to nearest even (denormals to signed zero, NaN quiet).
uint16_t cbf16_round(float x);
/// bf16 bits -> float32 (exact).
float cbf16_float(uint16_t b);

/// Words `cbf16_pack` writes for a convolution with `outputs` and `inputs` channels.
size_t cbf16_packed_count(int outputs, int inputs);

/// Weights as the forward reads them: blocks of eight outputs, then input pair, tap, and output
/// within the block, one word per (pair, tap, output): (w[p, 2k, tap], w[p, 2k + 1, tap]), zero
/// past the last output or input. `w` is PyTorch's [O, C, 3, 3]; `adjoint` = 1 packs the input
/// gradient's kernel (outputs C, inputs O, taps flipped), as cconv3x3_pack does.
/// A block holds ceil(inputs / 2) * 9 * 8 words (the `block_stride` of the forward).
void cbf16_pack(uint32_t *packed, const float *w, int O, int C, int adjoint);

/// Paired planes from float32 NCHW planes: p[k][pixel] = (x[2k][pixel], x[2k + 1][pixel]) for
/// k < ceil(channels / 2) and the first `count` pixels of each plane, x[channels] read as zero.
/// p's planes lie `p_plane` words apart, x's `x_plane` elements. One image, or a band of its
/// rows. With `xb` (x then NULL), the planes hold bf16 upper halves, paired as they are.
typedef void (*cbf16_pair_planes_fn)(uint32_t *p, size_t p_plane, const float *x, const uint16_t *xb,
                                     size_t x_plane, int channels, size_t count);

/// One image, output rows [row0, row1): y[p] = sum over input channels q of conv(x[q], w[p, q]),
/// plus bias[p] (NULL: none), or added to what y holds when `accumulate` is 1, for p < outputs.
/// x: ceil(inputs / 2) paired planes, `x_plane` words apart, whose first row is the image's row
/// `x_row`: a band of rows [x_row, x_row + x_plane / width) that holds every row the output rows
/// read (row0 - 1 to row1, within the image), or the whole image (x_plane = height x width,
/// x_row = 0). y: float32 planes `y_plane` floats apart whose first row is the image's row
/// `y_row` (the whole image: y_plane = height x width, y_row = 0; a band of output rows:
/// y_row = row0). `packed` from cbf16_pack; its blocks of eight outputs lie `block_stride` words
/// apart (a sub-range of the input pairs is a pointer into the first block with the full
/// stride). Sums per output pixel: bias or y first, then for each input pair, the nine taps in
/// order.
typedef void (*cbf16_forward_fn)(float *y, size_t y_plane, int y_row, const uint32_t *x, size_t x_plane, int x_row,
                                 const uint32_t *packed, size_t block_stride, const float *bias, int inputs,
                                 int outputs, int height, int width, int row0, int row1, int accumulate);

/// Words of one pixel-pair copy: `images` images of `rows` rows of `pairs` words of
/// `padded_channels` channels.
size_t cbf16_rows_count(int images, int rows, int pairs, int padded_channels);

/// Copies rows [row0, row0 + rows) (zero outside the image), pixel pairs starting at column
/// `col0` (word j holds columns col0 + 2j and col0 + 2j + 1; zero outside the image), channels
/// `first` to `first + channels` of `padded_channels` (a multiple of 16), into
/// t[image][row][pair][channel]; images lie `x_image` elements apart. x: floats, or where xb is
/// not NULL, the floats whose upper halves xb holds (a BatchNorm input kept in bf16; x is not
/// read), the same words at half the bytes read. With `scale` (else NULL),
/// the copy holds relu(x[c] * scale[c] + shift[c]) (a BatchNorm's output with its fused ReLU,
/// computed as cconv3x3_unfold_rows does). The weight gradient reads: dy as
/// (row0, rows = band, col0 = 0, pairs = ceil(W / 2)); x's even copy as
/// (row0 - 1, band + 2, col0 = -1, ceil(W / 2) + 1); x's odd copy as (row0 - 1, band + 2, 0,
/// ceil(W / 2)).
typedef void (*cbf16_unfold_fn)(uint32_t *t, const float *x, const uint16_t *xb, size_t x_image, int images,
                                int channels, int first, int padded_channels, int height, int width, int row0,
                                int rows, int col0, int pairs, const float *scale, const float *shift);

/// The odd copy of x made from the even one, as `cbf16_unfold_fn` would copy it: `rows` rows
/// (images x rows of the band) of an even copy with pairs + 1 pairs into an odd copy with
/// `pairs` pairs, `padded_channels` (a multiple of 16) channels each; word j of a row and
/// channel is the high half of even word j and the low half of even word j + 1. Moves bits
/// only: the same words on both paths. `avx512`: the CPU has AVX-512.
void cbf16_odd_pairs(uint32_t *odd, const uint32_t *even, size_t rows, int pairs, int padded_channels, int avx512);

/// g[tap][o][c] += sum over the band's images, rows and pixel pairs of dy[o] x[c] shifted by the
/// tap, for o < outputs and c < padded_channels (g's rows `padded_channels` floats long). dy,
/// even and odd copies as described at cbf16_unfold_fn, for a band of `rows` output rows,
/// `padded_outputs` channels in dy's copy. Sums per g element: what g holds, then pixel pairs
/// in the order image, row, pair. cconv3x3_weight_grad_add adds g into dw.
typedef void (*cbf16_weight_grad_fn)(float *g, const uint32_t *dy, int padded_outputs, const uint32_t *even,
                                     const uint32_t *odd, int images, int padded_channels, int outputs, int width,
                                     int rows);

/// One implementation of each kernel.
typedef struct {
    const char *name;
    cbf16_pair_planes_fn pair_planes;
    cbf16_forward_fn forward;
    cbf16_unfold_fn unfold;
    cbf16_weight_grad_fn weight_grad;
} cbf16_kernel_set;

/// Portable C, any CPU.
const cbf16_kernel_set *cbf16_portable(void);
/// The portable loops compiled for AVX2 and FMA (the same source, the same bits); NULL where the
/// CPU lacks them (or on other than x86-64).
const cbf16_kernel_set *cbf16_avx2(void);
/// AVX512_BF16; NULL where the CPU lacks it (or on other than x86-64).
const cbf16_kernel_set *cbf16_avx512(void);
/// The fastest the CPU runs: AVX512_BF16 where it can, else AVX2, else portable. (AMX-BF16 would
/// go first.)
const cbf16_kernel_set *cbf16_kernels(void);

/// One thread's vdpbf16ps throughput in FLOP/s (per lane two multiply-adds, 4 FLOP: 64 per
/// instruction), over `iterations` rounds of independent accumulators, per second of the thread's
/// CPU time (a shared machine's other processes do not count against it); 0 without AVX512_BF16.
double cbf16_peak_flops(long iterations);

#endif
