// How steady one vCPU is: alternates two loops of the same number of FMAs for SECONDS and
// prints each one's spread of times. `registers` keeps its operands in registers; `l1` loads
// them from L1, 11 loads per 24 FMAs, as the direct convolution's inner loop does. On the VM
// these notes were measured on, `registers` stayed within a few percent while `l1` (and the real
// convolution kernels) moved between two speeds 1.3-1.5x apart, for seconds at a time, on each
// vCPU independently: a rank in a slow phase holds up the ranks it synchronizes with.
//
//   cc -O3 -march=native -o phases phases.c && ./phases 30
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float operands[4096] __attribute__((aligned(64)));
static volatile float sink;

static void keep(const v16 *acc, int n) {
    float s = 0;
    for (int k = 0; k < n; k++) for (int l = 0; l < 16; l++) s += acc[k][l];
    sink = s;
}

// 24 FMAs per iteration on 24 independent sums, nothing loaded.
static void registers(long iterations) {
    v16 acc[24], x = (v16){0} + operands[1], y = (v16){0} + operands[2];
    for (int k = 0; k < 24; k++) acc[k] = *(const v16u *)(operands + 16 * k);
    for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 24
        for (int k = 0; k < 24; k++) acc[k] = acc[k] * x + y;
    }
    keep(acc, 24);
}

// The same 24 FMAs with 3 vectors and 8 broadcasts loaded from L1 (as tools/machine/sync_step.c).
static void l1(long iterations) {
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

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *t, int n) {
    qsort(t, n, sizeof *t, ascending);
    printf("%-10s ms: p10 %6.2f  median %6.2f  p90 %6.2f  max %6.2f   p90/p10 %.3f\n", name,
           1e3 * t[n / 10], 1e3 * t[n / 2], 1e3 * t[9 * n / 10], 1e3 * t[n - 1], t[9 * n / 10] / t[n / 10]);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    for (int i = 0; i < 4096; i++) operands[i] = 1e-3f * (i % 7);
    enum { capacity = 100000 };
    static double a[capacity], b[capacity];
    int n = 0;
    long iterations = 400000;   // about 4 ms per loop at 2 FMAs per cycle
    for (double end = now() + seconds; now() < end && n < capacity; n++) {
        double t0 = now();
        registers(iterations);
        double t1 = now();
        l1(iterations);
        a[n] = t1 - t0; b[n] = now() - t1;
    }
    printf("%d pairs of %ld x 24 FMAs\n", n, iterations);
    report("registers", a, n);
    report("l1", b, n);
    return 0;
}
