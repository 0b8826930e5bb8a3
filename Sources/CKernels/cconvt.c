#include "cconvt.h"

#include "simd.h"

// ConvTranspose2d 2x2 stride 2, float32 forward (cconvt.h). Arrays, per image:
//   x       [inputs][H][W]
//   packed  [ceil(outputs / 4)][2 kernel rows][inputs][4 outputs x 2 kernel columns]
//   y       [outputs][2H][2W], rows `out_width` apart (inside a padded plane), planes `out_plane`
//   tile    [inputs][3 vectors][16]: one tile's inputs (AVX2: [inputs][4 vectors][8])

// AVX-512's outputs per register block: 4 outputs x 2 kernel columns x 3 vectors = 24 sums, the
// three input vectors and a broadcast weight fill 28 of the 32 vector registers.
enum { OB = 4, TV = 3, LANES = 16 };

size_t cconvt2x2_packed_count(int inputs, int outputs) {
    return (size_t)((outputs + OB - 1) / OB) * 2 * (size_t)inputs * 2 * OB;
}

void cconvt2x2_pack(float *packed, const float *w, int inputs, int outputs) {
    for (int b = 0; b * OB < outputs; b++)
        for (int a = 0; a < 2; a++)
            for (int q = 0; q < inputs; q++)
                for (int j = 0; j < 2 * OB; j++) {
                    int p = b * OB + j / 2, kx = j % 2;
                    packed[(((size_t)b * 2 + a) * inputs + q) * 2 * OB + j] =
                        p < outputs ? w[(((size_t)q * outputs + p) * 2 + a) * 2 + kx] : 0.f;
                }
}

size_t cconvt2x2_tile_count(int inputs) { return (size_t)TV * LANES * (size_t)inputs; }

#if HAVE_AVX512

AVX512 void cconvt2x2_forward(float *y, size_t out_width, size_t out_plane, const float *x, const float *packed,
                              const float *bias, int inputs, int outputs, int height, int width, int row0, int row1,
                              float *tile) {
    size_t plane = (size_t)height * width, ow = out_width;
    int per_row = (width + LANES - 1) / LANES;
    long first = (long)row0 * per_row, end = (long)row1 * per_row;
    for (long i = first; i < end; i += TV) {
        // Each vector lies within one input row; a tile's vectors are consecutive and may span rows.
        ptrdiff_t in[TV], out[TV];
        __mmask16 load[TV], store_low[TV], store_high[TV];
        for (int s = 0; s < TV; s++) {
            long k = i + s;
            int iy = (int)(k / per_row), x0 = (int)(k % per_row) * LANES, n = k < end ? width - x0 : 0;
            in[s] = k < end ? (ptrdiff_t)iy * width + x0 : 0;
            out[s] = k < end ? (ptrdiff_t)2 * iy * ow + 2 * x0 : 0;
            load[s] = low_lanes(n);
            store_low[s] = low_lanes(2 * n);
            store_high[s] = low_lanes(2 * n - LANES);
        }
        // The tile's inputs, channel after channel: read once per block of outputs and kernel row
        // from here, not from planes a power of two apart (which share a few L1 sets).
        for (int q = 0; q < inputs; q++)
            for (int s = 0; s < TV; s++)
                _mm512_storeu_ps(tile + (q * TV + s) * LANES, _mm512_maskz_loadu_ps(load[s], x + q * plane + in[s]));
        for (int b = 0; b * OB < outputs; b++) {
            int count = outputs - b * OB < OB ? outputs - b * OB : OB;
            for (int a = 0; a < 2; a++) {
                const float *wp = packed + ((size_t)b * 2 + a) * inputs * 2 * OB;
                __m512 acc[OB][2][TV];
                for (int o = 0; o < OB; o++)
                    for (int kx = 0; kx < 2; kx++)
                        for (int s = 0; s < TV; s++) acc[o][kx][s] = _mm512_setzero_ps();
                for (int q = 0; q < inputs; q++) {
                    __m512 xv[TV];
                    for (int s = 0; s < TV; s++) xv[s] = _mm512_loadu_ps(tile + (q * TV + s) * LANES);
                    for (int j = 0; j < 2 * OB; j++) {
                        __m512 w = _mm512_set1_ps(wp[(size_t)q * 2 * OB + j]);
                        for (int s = 0; s < TV; s++)
                            acc[j / 2][j % 2][s] = _mm512_fmadd_ps(w, xv[s], acc[j / 2][j % 2][s]);
                    }
                }
                for (int o = 0; o < count; o++) {
                    float *yo = y + (size_t)(b * OB + o) * out_plane + (size_t)a * ow;
                    for (int s = 0; s < TV; s++) {
                        // Output columns 2j and 2j + 1 are kernel columns 0 and 1 of input column j.
                        __m512 lo, hi;
                        interleave(acc[o][0][s], acc[o][1][s], &lo, &hi);
                        if (bias) {
                            __m512 bv = _mm512_set1_ps(bias[b * OB + o]);
                            lo = _mm512_add_ps(lo, bv);
                            hi = _mm512_add_ps(hi, bv);
                        }
                        _mm512_mask_storeu_ps(yo + out[s], store_low[s], lo);
                        _mm512_mask_storeu_ps(yo + out[s] + LANES, store_high[s], hi);
                    }
                }
            }
        }
    }
}

#endif

#if HAVE_AVX512

// The same forward for CPUs with AVX2 and FMA but no AVX-512: eight lanes, sixteen registers.
// A register block is one output's two kernel columns over four vectors, 8 sums beside the four
// input vectors and a broadcast weight (on one thread at 128x128: 68-89 GFLOP/s, against 41-68
// for 2 outputs x 2 vectors and 51-77 for 4 x 1; 2 x 3 spilled). Each sum takes the same terms
// in the same order as the AVX-512 kernel's, one FMA at a time, so both give the same bits.
enum { L8 = 8, TV8 = 4, OR = 1 };
_Static_assert(TV8 * L8 <= TV * LANES, "cconvt2x2_tile_count covers the AVX2 tile");

AVX2 void cconvt2x2_forward_avx2(float *y, size_t out_width, size_t out_plane, const float *x, const float *packed,
                                 const float *bias, int inputs, int outputs, int height, int width, int row0,
                                 int row1, float *tile) {
    size_t plane = (size_t)height * width, ow = out_width;
    int per_row = (width + L8 - 1) / L8;
    long first = (long)row0 * per_row, end = (long)row1 * per_row;
    for (long i = first; i < end; i += TV8) {
        // As in the AVX-512 kernel: each vector within one input row, the tile's inputs copied.
        ptrdiff_t in[TV8], out[TV8];
        int n[TV8];
        for (int s = 0; s < TV8; s++) {
            long k = i + s;
            int iy = (int)(k / per_row), x0 = (int)(k % per_row) * L8;
            n[s] = k < end ? (width - x0 < L8 ? width - x0 : L8) : 0;
            in[s] = k < end ? (ptrdiff_t)iy * width + x0 : 0;
            out[s] = k < end ? (ptrdiff_t)2 * iy * ow + 2 * x0 : 0;
        }
        for (int q = 0; q < inputs; q++)
            for (int s = 0; s < TV8; s++)
                _mm256_storeu_ps(tile + (q * TV8 + s) * L8, load_first8(x + q * plane + in[s], n[s]));
        for (int b = 0; b * OB < outputs; b++)
            for (int a = 0; a < 2; a++)
                for (int h = 0; h * OR < OB && b * OB + h * OR < outputs; h++) {
                    const float *wp = packed + ((size_t)b * 2 + a) * inputs * 2 * OB + h * 2 * OR;
                    __m256 acc[OR][2][TV8];
                    for (int o = 0; o < OR; o++)
                        for (int kx = 0; kx < 2; kx++)
                            for (int s = 0; s < TV8; s++) acc[o][kx][s] = _mm256_setzero_ps();
                    for (int q = 0; q < inputs; q++) {
                        __m256 xv[TV8];
                        for (int s = 0; s < TV8; s++) xv[s] = _mm256_loadu_ps(tile + (q * TV8 + s) * L8);
                        for (int j = 0; j < 2 * OR; j++) {
                            __m256 w = _mm256_broadcast_ss(wp + (size_t)q * 2 * OB + j);
                            for (int s = 0; s < TV8; s++)
                                acc[j / 2][j % 2][s] = _mm256_fmadd_ps(w, xv[s], acc[j / 2][j % 2][s]);
                        }
                    }
                    int p0 = b * OB + h * OR, count = outputs - p0 < OR ? outputs - p0 : OR;
                    for (int o = 0; o < count; o++) {
                        float *yo = y + (size_t)(p0 + o) * out_plane + (size_t)a * ow;
                        for (int s = 0; s < TV8 && n[s] > 0; s++) {
                            // Output columns 2j and 2j + 1 are kernel columns 0 and 1 of input column j.
                            __m256 lo, hi;
                            interleave8(acc[o][0][s], acc[o][1][s], &lo, &hi);
                            if (bias) {
                                __m256 bv = _mm256_set1_ps(bias[p0 + o]);
                                lo = _mm256_add_ps(lo, bv);
                                hi = _mm256_add_ps(hi, bv);
                            }
                            store_first8(yo + out[s], lo, 2 * n[s]);
                            if (n[s] > L8 / 2) store_first8(yo + out[s] + L8, hi, 2 * n[s] - L8);
                        }
                    }
                }
    }
}

#endif
