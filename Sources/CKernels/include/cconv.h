#ifndef UNET_DIST_CCONV_H
#define UNET_DIST_CCONV_H

#include <stddef.h>

/// Direct 3x3, stride 1, padding 1 convolutions over float32 NCHW planes, with AVX-512.
///
/// Where the output has 16 or 32 channels (the UNet's full-resolution layers), im2col + GEMM
/// leaves OpenBLAS with 16- or 32-row matrices whose packing costs as much as the arithmetic.
/// These kernels read the input where it lies: each output vector (16 pixels of one row) keeps
/// eight channels' sums in registers while the input channels and the nine taps stream past.

/// 1 where the CPU runs AVX-512F (the kernels below may be called), else 0.
int cconv_available(void);

/// 1 where the CPU runs AVX2 and FMA (the `_avx2` kernels below and BatchNorm's AVX2 loops,
/// cbn.h, may be called), else 0.
int cconv_avx2_available(void);

/// Floats per input channel in one block of packed weights: nine taps times eight outputs.
enum { CCONV3X3_BLOCK_FLOATS = 9 * 8 };

/// Floats `cconv3x3_pack` writes for a convolution with `outputs` and `inputs` channels.
size_t cconv3x3_packed_count(int outputs, int inputs);

/// Weights in the order the kernels read them: blocks of eight outputs, then input channel, tap,
/// and output within the block (zero past the last output). `w` is PyTorch's [O, C, 3, 3].
/// `adjoint` = 0 packs the convolution itself (outputs O, inputs C); 1 packs its adjoint, the
/// input gradient as a convolution of dy (outputs C, inputs O, kernel flipped).
void cconv3x3_pack(float *packed, const float *w, int O, int C, int adjoint);

#if defined(__x86_64__)
/// One image, output rows [row0, row1): y[p] = sum over q < inputs of conv(x[q], w[p, q]) for
/// p < outputs, plus bias[p] (NULL: none), or added to what y holds when `accumulate` is 1.
/// Planes are height x width floats, one after another. The weights are `packed` as above;
/// its blocks of eight outputs lie `block_stride` floats apart (a sub-range of the input
/// channels is a pointer into the first block with the full stride).
void cconv3x3_forward(float *y, const float *x, const float *packed, size_t block_stride, const float *bias,
                      int inputs, int outputs, int height, int width, int row0, int row1, int accumulate);

/// dw[p, q, tap] += sum over `images` images and output rows [row0, row1) of dy[p] times x[q]
/// shifted by the tap; dw's rows (one per p) lie `ldw` floats apart. Images lie `dy_image` and
/// `x_image` floats apart. Pixels in the lanes: for layers with a few input channels (the
/// first), where padding channels to sixteen would multiply the work.
void cconv3x3_weight_grad(float *dw, size_t ldw, const float *dy, const float *x, int inputs, int outputs,
                          int height, int width, int row0, int row1, int images, size_t dy_image, size_t x_image);

/// The weight gradient for wider inputs, as a GEMM over pixels with sixteen input channels per
/// vector: `cconv3x3_unfold_rows` copies the input rows a band reads (row0 - 1 to row1, zero
/// outside the image) pixel-major into `t`, channels `first` to `first + channels` of
/// `padded_channels` (a multiple of 16; the caller zeroes the padding channels), images one
/// after another. dy's band is copied the same way (its border rows and columns unused).
/// `cconv3x3_weight_grad_rows` adds the band's sums into g[tap, o, c] (of `padded_channels`
/// columns), and `cconv3x3_weight_grad_add` adds g into dw[o, c, tap]. With `scale` (else NULL),
/// the copy holds relu(x[c] * scale[c] + shift[c]) instead of x: the output of a BatchNorm with
/// a fused ReLU that was not kept, computed as BatchNorm computes it, from that BatchNorm's input.
size_t cconv3x3_rows_count(int images, int padded_channels, int width, int row0, int row1);
void cconv3x3_unfold_rows(float *t, const float *x, size_t x_image, int images, int channels, int first,
                          int padded_channels, int height, int width, int row0, int row1, const float *scale,
                          const float *shift);
void cconv3x3_weight_grad_rows(float *g, const float *dy, int padded_outputs, const float *t, int images,
                               int padded_channels, int outputs, int width, int row0, int row1);
/// The same kernels for CPUs with AVX2 and FMA but no AVX-512, with the same results bit for bit
/// (each sum over the same terms in the same order). The forward reads a zero-padded copy of
/// the input rows a band reads: `cconv3x3_pad_rows` copies rows row0 - 1 to row1 of `channels`
/// planes (x_plane floats apart) into p as [channels][row1 - row0 + 2][width + 2] floats, zero
/// outside the image, in `cconv3x3_padded_count` floats; `cconv3x3_forward_padded_avx2` then
/// assigns y's rows [row0, row1) as `cconv3x3_forward` does (bias added; no `accumulate`: the
/// copy holds every input channel), reading x from p. The weight
/// gradient's two take the arguments of `cconv3x3_unfold_rows` and `cconv3x3_weight_grad_rows`.
size_t cconv3x3_padded_count(int channels, int width, int row0, int row1);
void cconv3x3_pad_rows(float *p, const float *x, size_t x_plane, int channels, int height, int width, int row0,
                       int row1);
void cconv3x3_forward_padded_avx2(float *y, const float *p, const float *packed, size_t block_stride,
                                  const float *bias, int inputs, int outputs, int height, int width, int row0,
                                  int row1);
void cconv3x3_unfold_rows_avx2(float *t, const float *x, size_t x_image, int images, int channels, int first,
                               int padded_channels, int height, int width, int row0, int row1, const float *scale,
                               const float *shift);
void cconv3x3_weight_grad_rows_avx2(float *g, const float *dy, int padded_outputs, const float *t, int images,
                                    int padded_channels, int outputs, int width, int row0, int row1);
#endif
void cconv3x3_weight_grad_add(float *dw, size_t ldw, const float *g, int inputs, int padded_channels, int outputs);

/// C = A B for A with few rows (tens to hundreds) and B with many columns, where OpenBLAS spends
/// as long packing as multiplying: ConvTranspose2d's per-pixel products. A (m x k, or k x m
/// with `transposed`, rows `lda` apart) is packed once by `cgemm_pack` into blocks of eight
/// rows; B is k x n with rows `ldb` apart; C's rows lie `ldc` apart and are assigned.
size_t cgemm_packed_count(int m, int k);
void cgemm_pack(float *packed, const float *a, size_t lda, int m, int k, int transposed);
#if defined(__x86_64__)
void cgemm_narrow(float *c, size_t ldc, const float *packed, const float *b, size_t ldb, int m, int n, int k);
#endif

#endif
