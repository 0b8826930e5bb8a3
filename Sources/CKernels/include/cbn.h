#ifndef UNET_DIST_CBN_H
#define UNET_DIST_CBN_H

#include <stdint.h>

/// BatchNorm's per-channel reductions: float data summed in double (a float sum over ~10^5
/// pixels loses most of its digits). `vectors` picks the loops: CBN_AVX512 or CBN_AVX2 (only
/// where the CPU has it), else (CBN_PORTABLE) portable ones. All add the same terms; the AVX2
/// loops add them in the AVX-512 loops' order (the same bits), the portable ones in another.
enum { CBN_PORTABLE = 0, CBN_AVX512 = 1, CBN_AVX2 = 2 };

/// sum x over n floats (a bias gradient's row), or where xb is not NULL over the floats whose
/// upper halves xb holds (x is not read): the same sum as over them expanded.
double cbn_sum(const float *x, const uint16_t *xb, long n, int vectors);

/// out[0] = sum x, out[1] = sum x^2 over n floats.
void cbn_sums(const float *x, long n, double out[2], int vectors);

/// out[0] = sum g, out[1] = sum g * xhat with xhat = (x - mean) * invstd in float, where
/// g = dy, or with `masked` (a fused ReLU) 0 where its output x * scale + shift, recomputed
/// exactly as the forward made it, is not positive. x: n floats, or where xb is not NULL, the
/// floats whose upper halves xb holds (a BatchNorm input kept in bf16; x is not read): the
/// same terms as x expanded by `cbn_expand_bf16`, at half the bytes.
void cbn_gradient_sums(const float *dy, const float *x, const uint16_t *xb, int masked, float scale, float shift,
                       long n, float mean, float invstd, double out[2], int vectors);

/// y = x * scale + shift (a product, then a sum), and max(y, 0) with `relu`: the normalized
/// output, bit for bit the same on both paths.
void cbn_output(float *y, const float *x, long n, float scale, float shift, int relu, int vectors);

/// dx = k * ((g - mean_dy) - xhat * mean_dy_xhat), g, xhat, x and xb as in `cbn_gradient_sums`.
/// Where dxb is not NULL, dx is written only as its values rounded to bf16 (`cbf16_round`), their
/// upper halves in dxb, and dx is not written: the gradient a bf16 convolution reads, which
/// rounds it so anyway. With dxb, CBN_AVX512 must also mean the CPU has AVX512_BF16 (CBN_AVX2 runs
/// the portable loop there).
void cbn_input_gradient(float *dx, uint16_t *dxb, const float *dy, const float *x, const uint16_t *xb, int masked,
                        float scale, float shift, long n, float mean, float invstd, float k, float mean_dy,
                        float mean_dy_xhat, int vectors);

/// `cbn_output` of x rounded to bf16 (as the convolutions round their operands, and as an
/// autocast convolution's output is), the rounded values' upper halves written to xb: a
/// BatchNorm input kept in bf16 for the backward. Where x is NULL, xb already holds them (a
/// convolution wrote its output so, `cbn_round_bf16`). `avx512bf16`: the CPU has AVX512_BF16.
void cbn_output_keeping_bf16(float *y, const float *x, uint16_t *xb, long n, float scale, float shift, int relu,
                             int avx512bf16);

/// The outputs of two channels computed as `cbn_output_keeping_bf16` computes them from their
/// kept halves lo and hi (hi NULL: a channel count's odd last one, whose high half is zero),
/// rounded to bf16 and paired as words, lo's in the low half: the paired plane a bf16
/// convolution makes of that output (cconv_bf16.h), at a quarter of the bytes, with the same
/// bits. `avx512bf16`: the CPU has AVX512_BF16.
void cbn_output_pairs(uint32_t *p, const uint16_t *lo, const uint16_t *hi, long n, float scale_lo, float shift_lo,
                      float scale_hi, float shift_hi, int relu, int avx512bf16);

/// xb = the upper halves of x rounded to bf16, as `cbn_output_keeping_bf16` rounds it.
void cbn_round_bf16(uint16_t *xb, const float *x, long n, int avx512bf16);

/// x = the floats whose upper halves xb holds (for a reader that needs them as floats).
void cbn_expand_bf16(float *x, const uint16_t *xb, long n, int avx512);

#endif
