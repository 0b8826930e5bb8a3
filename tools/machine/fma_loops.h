// The loops tools/machine's programs time: the same FMAs with their operands in registers, or
// loaded from L1 as the direct convolution's inner loop loads them (8 output channels x 3
// vectors of pixels: 3 vector loads and 8 broadcasts per 24 FMAs). Plain C vector extensions,
// so any compiler with -O3 -march=native makes them AVX-512 (or AVX2) code.
#include <time.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float operands[4096] __attribute__((aligned(64)));
static volatile float sink;

static inline void init_operands(void) {
    for (int i = 0; i < 4096; i++) operands[i] = 1e-3f * (i % 7);
}

// The sums are stored, so the compiler keeps every FMA.
static inline void keep(const v16 *acc, int n) {
    float s = 0;
    for (int k = 0; k < n; k++) for (int l = 0; l < 16; l++) s += acc[k][l];
    sink = s;
}

// 24 FMAs per iteration on 24 independent sums, nothing loaded.
static inline void register_fmas(long iterations) {
    v16 acc[24], x = (v16){0} + operands[1], y = (v16){0} + operands[2];
    for (int k = 0; k < 24; k++) acc[k] = *(const v16u *)(operands + 16 * k);
    for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 24
        for (int k = 0; k < 24; k++) acc[k] = acc[k] * x + y;
    }
    keep(acc, 24);
}

// The same 24 FMAs per iteration with their operands loaded from L1.
static inline void l1_fmas(long iterations) {
    v16 acc[24] = {0};
    for (long i = 0; i < iterations; i++) {
        const float *p = operands + ((i * 88) & 2047);
        v16 x0 = *(const v16u *)(p + 1000), x1 = *(const v16u *)(p + 1016), x2 = *(const v16u *)(p + 1032);
#pragma GCC unroll 8
        for (int o = 0; o < 8; o++) {
            float s = p[o];
            v16 w = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
            acc[3 * o] += x0 * w; acc[3 * o + 1] += x1 * w; acc[3 * o + 2] += x2 * w;
        }
    }
    keep(acc, 24);
}
