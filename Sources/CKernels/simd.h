#ifndef UNET_DIST_SIMD_H
#define UNET_DIST_SIMD_H

// What this target's AVX-512 code needs: the intrinsics, on x86-64 only, and a per-function
// target, so that everything else stays generic x86-64 and runs on any CPU.
#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX512 1
#else
#define HAVE_AVX512 0
#endif

#define AVX512 __attribute__((target("avx512f")))
#define INLINE inline __attribute__((always_inline))

#if HAVE_AVX512
/// The low and high eight lanes of v as doubles.
AVX512 static INLINE __m512d low_half(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
AVX512 static INLINE __m512d high_half(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#endif

#endif
