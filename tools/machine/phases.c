// How steady one vCPU is: alternates two loops of the same number of FMAs for SECONDS and
// prints each one's spread of times. `registers` keeps its operands in registers; `l1` loads
// them from L1, 11 loads per 24 FMAs, as the direct convolution's inner loop does. On the VM
// these notes were measured on, `registers` stayed within 10-20% (p90/p10) while `l1` (and the real
// convolution kernels) moved between two speeds 1.3-1.5x apart, for seconds at a time, on each
// vCPU independently: a rank in a slow phase holds up the ranks it synchronizes with.
//
//   cc -O3 -march=native -o phases phases.c && ./phases 30
#include <stdio.h>
#include <stdlib.h>

#include "fma_loops.h"

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
    init_operands();
    enum { capacity = 100000 };
    static double a[capacity], b[capacity];
    int n = 0;
    long iterations = 400000;   // about 4 ms per loop at 2 FMAs per cycle
    for (double end = now() + seconds; now() < end && n < capacity; n++) {
        double t0 = now();
        register_fmas(iterations);
        double t1 = now();
        l1_fmas(iterations);
        a[n] = t1 - t0; b[n] = now() - t1;
    }
    printf("%d pairs of %ld x 24 FMAs\n", n, iterations);
    report("registers", a, n);
    report("l1", b, n);
    return 0;
}
