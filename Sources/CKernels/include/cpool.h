#ifndef UNET_DIST_CPOOL_H
#define UNET_DIST_CPOOL_H

/// MaxPool2d(2) over one float32 plane with AVX-512 (or AVX2): 32 (16) input columns of two
/// rows at a time, split into even and odd columns in registers. The same results as the
/// portable Swift loops, bit for bit: the forward's max(max(a, b), max(c, d)) with Swift's max
/// (the second argument where they compare equal, the first where either is NaN), and the
/// backward's choice of the window's first maximum in scan order.

#if defined(__x86_64__)
/// y (height / 2 x width / 2) from x (height x width); an odd last row or column is dropped.
void cpool2_forward(float *y, const float *x, int height, int width);

/// Each dy routed to its window's maximum in x, added to dx with `accumulate`, else assigned
/// (every other pixel, a dropped odd row and column included, set to zero).
void cpool2_backward(float *dx, const float *dy, const float *x, int height, int width, int accumulate);

/// The same two with AVX2 (the same bits), for CPUs without AVX-512.
void cpool2_forward_avx2(float *y, const float *x, int height, int width);
void cpool2_backward_avx2(float *dx, const float *dy, const float *x, int height, int width, int accumulate);
#endif

#endif
