#ifndef UNET_DIST_CBN_AVX2_H
#define UNET_DIST_CBN_AVX2_H

// cbn.c's loops on AVX2 (cbn_avx2.c), for cbn.c to call where the caller asks for them. Each does
// the whole vectors (sixteen elements for the sums, eight for the element-wise loops), returns how
// many elements it did, and leaves the rest to the portable loop, as the AVX-512 loops do. The
// sums return the vectors' part of the sum in *s or out[].

#include <stdint.h>

#include "simd.h"

#if defined(__x86_64__)
AVX2 long cbn_sums_avx2(const float *x, long n, double out[2]);
AVX2 long cbn_gradient_sums_avx2(const float *dy, const float *x, const uint16_t *xb, int masked, float scale,
                                 float shift, long n, float mean, float invstd, double out[2]);
AVX2 long cbn_output_avx2(float *y, const float *x, long n, float scale, float shift, int relu);
AVX2 long cbn_input_gradient_avx2(float *dx, const float *dy, const float *x, const uint16_t *xb, int masked,
                                  float scale, float shift, long n, float mean, float invstd, float k, float mean_dy,
                                  float mean_dy_xhat);
AVX2 long cbn_sum_avx2(const float *x, const uint16_t *xb, long n, double *s);
#endif

#endif
