// One thread's GFLOP/s of the direct 3x3 kernels, float32 (cconv.c) against bf16 (cconv_bf16.c),
// beside vdpbf16ps's peak, on one layer shape; the two precisions alternate, medians reported.
//
//   clang -O3 -I Sources/CKernels/include -I Sources/CKernels -o /tmp/conv_rates tools/machine/conv_rates.c \
//      Sources/CKernels/cconv.c Sources/CKernels/cconv_bf16.c Sources/CKernels/cconv_bf16_weight_grad.c -lm
//   /tmp/conv_rates [channels] [size] [rounds]       (default 64 128 7)
//
// clang is the Swift toolchain's, which builds the package's C kernels; gcc 12's code for the
// forwards ran at a third to a half of its speed here.
//
// Forward: one image, all rows, C -> C channels. Weight gradient: the unfolded copies of one
// band of 16 rows (as the training step cuts them), copy and sums timed together, 8 times per
// round. The peak is measured in every round too. Times are the thread's CPU time: on a shared
// machine, the time other processes hold the core does not count (their cache traffic does).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cconv.h"
#include "cconv_bf16.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int C = argc > 1 ? atoi(argv[1]) : 64, S = argc > 2 ? atoi(argv[2]) : 128, rounds = argc > 3 ? atoi(argv[3]) : 7;
    if (!cconv_available() || !cbf16_available()) {
        fprintf(stderr, "needs AVX-512F and AVX512_BF16\n");
        return 1;
    }
    const cbf16_kernel_set *k = cbf16_avx512();
    size_t plane = (size_t)S * S;
    float *x = malloc(sizeof(float) * C * plane), *y = malloc(sizeof(float) * C * plane);
    float *w = malloc(sizeof(float) * C * C * 9);
    for (size_t i = 0; i < C * plane; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < C * C * 9; i++) w[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    float *packed = malloc(sizeof(float) * cconv3x3_packed_count(C, C));
    uint32_t *packed16 = malloc(4 * cbf16_packed_count(C, C)), *planes = malloc(4 * ((C + 1) / 2) * plane);
    cconv3x3_pack(packed, w, C, C, 0);
    cbf16_pack(packed16, w, C, C, 0);
    k->pair_planes(planes, plane, x, NULL, plane, C, plane);
    // Weight gradient of one band of 16 rows.
    int rows = 16, cp = (C + 15) / 16 * 16, pw = S + 2, pairs = (S + 1) / 2;
    float *t32 = calloc(cconv3x3_rows_count(1, cp, S, 0, rows), 4), *d32 = calloc(cconv3x3_rows_count(1, cp, S, 0, rows), 4);
    float *g = calloc((size_t)9 * C * cp, 4);
    uint32_t *even = calloc(cbf16_rows_count(1, rows + 2, pairs + 1, cp), 4);
    uint32_t *odd = calloc(cbf16_rows_count(1, rows + 2, pairs, cp), 4), *dyt = calloc(cbf16_rows_count(1, rows, pairs, C), 4);
    (void)pw;
    enum { BANDS = 8 };
    double flops_fwd = 2.0 * C * C * 9 * plane, flops_wg = BANDS * 2.0 * C * C * 9 * rows * S;
    double *f32 = malloc(sizeof(double) * rounds), *f16 = malloc(sizeof(double) * rounds);
    double *g32 = malloc(sizeof(double) * rounds), *g16 = malloc(sizeof(double) * rounds);
    double *peaks = malloc(sizeof(double) * rounds);
    for (int r = 0; r < rounds; r++) {
        peaks[r] = cbf16_peak_flops(1 << 20) / 1e9;
        double t0 = now();
        cconv3x3_forward(y, x, packed, (size_t)C * 72, NULL, C, C, S, S, 0, S, 0);
        double t1 = now();
        k->forward(y, plane, 0, planes, plane, 0, packed16, (size_t)((C + 1) / 2) * 72, NULL, C, C, S, S, 0, S, 0);
        double t2 = now();
        for (int b = 0; b < BANDS; b++) {
            cconv3x3_unfold_rows(t32, x, 0, 1, C, 0, cp, S, S, 1, 1 + rows, NULL, NULL);
            cconv3x3_unfold_rows(d32, y, 0, 1, C, 0, cp, S, S, 1, 1 + rows, NULL, NULL);
            cconv3x3_weight_grad_rows(g, d32, cp, t32, 1, cp, C, S, 1, 1 + rows);
        }
        double t3 = now();
        for (int b = 0; b < BANDS; b++) {
            k->unfold(even, x, NULL, 0, 1, C, 0, cp, S, S, 0, rows + 2, -1, pairs + 1, NULL, NULL);
            k->unfold(odd, x, NULL, 0, 1, C, 0, cp, S, S, 0, rows + 2, 0, pairs, NULL, NULL);
            k->unfold(dyt, y, NULL, 0, 1, C, 0, C, S, S, 1, rows, 0, pairs, NULL, NULL);
            k->weight_grad(g, dyt, C, even, odd, 1, cp, C, S, rows);
        }
        double t4 = now();
        f32[r] = flops_fwd / (t1 - t0) / 1e9;
        f16[r] = flops_fwd / (t2 - t1) / 1e9;
        g32[r] = flops_wg / (t3 - t2) / 1e9;
        g16[r] = flops_wg / (t4 - t3) / 1e9;
    }
    qsort(f32, rounds, sizeof(double), cmp);
    qsort(f16, rounds, sizeof(double), cmp);
    qsort(g32, rounds, sizeof(double), cmp);
    qsort(g16, rounds, sizeof(double), cmp);
    qsort(peaks, rounds, sizeof(double), cmp);
    double peak = peaks[rounds / 2];
    printf("%d -> %d channels, %dx%d, one thread, medians of %d rounds (GFLOP/s)\n", C, C, S, S, rounds);
    printf("vdpbf16ps peak        %6.1f (median; %.1f to %.1f)\n", peak, peaks[0], peaks[rounds - 1]);
    printf("forward      float32  %6.1f   bf16 %6.1f (%.0f%% of peak, %.2fx float32)\n", f32[rounds / 2], f16[rounds / 2],
           100 * f16[rounds / 2] / peak, f16[rounds / 2] / f32[rounds / 2]);
    printf("weight grad  float32  %6.1f   bf16 %6.1f (%.0f%% of peak, %.2fx float32)\n", g32[rounds / 2], g16[rounds / 2],
           100 * g16[rounds / 2] / peak, g16[rounds / 2] / g32[rounds / 2]);
    return 0;
}
