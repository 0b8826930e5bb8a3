#ifndef UNET_DIST_CCONVT_H
#define UNET_DIST_CCONVT_H

#include <stddef.h>

/// ConvTranspose2d with a 2x2 kernel at stride 2 (the up blocks' up-sampling), forward, with
/// AVX-512 or AVX2: each input pixel paints its own 2x2 patch of the output, so an output row is
/// two 1x1 convolutions of one input row (kernel columns 0 and 1) with their lanes interleaved.
/// The sums stay in registers and each output is stored once: no column matrix, no col2im.

/// Floats `cconvt2x2_pack` writes for `inputs` and `outputs` channels.
size_t cconvt2x2_packed_count(int inputs, int outputs);

/// PyTorch's weight [inputs, outputs, 2, 2] in the kernel's order: blocks of four outputs, then
/// kernel row, input channel, and (output, kernel column) within the block, zero past the last
/// output.
void cconvt2x2_pack(float *packed, const float *w, int inputs, int outputs);

#if defined(__x86_64__)
/// One image, input rows [row0, row1) (output rows 2 row0 to 2 row1): y[p, 2i + a, 2j + b] =
/// sum over q in order of w[q, p, a, b] x[q, i, j], then + bias[p] (NULL: none), assigned.
/// x's planes are height x width; y's rows lie `out_width` floats apart (2 width, or more where
/// y points into a larger, padded plane) and its planes `out_plane`. `tile` is scratch for
/// `cconvt2x2_tile_count(inputs)` floats: a tile's inputs, copied out of planes a power of two
/// apart.
size_t cconvt2x2_tile_count(int inputs);
void cconvt2x2_forward(float *y, size_t out_width, size_t out_plane, const float *x, const float *packed,
                       const float *bias, int inputs, int outputs, int height, int width, int row0, int row1,
                       float *tile);
/// The same with AVX2 and FMA (the same bits), for CPUs without AVX-512.
void cconvt2x2_forward_avx2(float *y, size_t out_width, size_t out_plane, const float *x, const float *packed,
                            const float *bias, int inputs, int outputs, int height, int width, int row0, int row1,
                            float *tile);
#endif

#endif
