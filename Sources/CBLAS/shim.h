#ifndef UNET_DIST_CBLAS_SHIM_H
#define UNET_DIST_CBLAS_SHIM_H
#include <cblas.h>

// The CPU features that decide which OpenBLAS kernels can run.
static inline int cblas_cpu_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static inline int cblas_cpu_has_avx512_skylakex(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif
