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
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE inline __attribute__((always_inline))

#if HAVE_AVX512
/// A mask of the first n of sixteen lanes (none for n <= 0, all for n >= 16).
static INLINE __mmask16 low_lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/// Lane i of `even` and `odd` to lanes 2i and 2i + 1 of 32: the first sixteen in *lo, the rest
/// in *hi.
AVX512 static INLINE void interleave(__m512 even, __m512 odd, __m512 *lo, __m512 *hi) {
    // Indices 16 and up pick `odd`.
    *lo = _mm512_permutex2var_ps(even, _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0), odd);
    *hi = _mm512_permutex2var_ps(even, _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8),
                                 odd);
}

/// The low and high eight lanes of v as doubles.
AVX512 static INLINE __m512d low_half(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
AVX512 static INLINE __m512d high_half(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/// `interleave` on eight lanes: lane i of `even` and `odd` to lanes 2i and 2i + 1 of 16.
AVX2 static INLINE void interleave8(__m256 even, __m256 odd, __m256 *lo, __m256 *hi) {
    __m256 pairs_lo = _mm256_unpacklo_ps(even, odd), pairs_hi = _mm256_unpackhi_ps(even, odd);
    *lo = _mm256_permute2f128_ps(pairs_lo, pairs_hi, 0x20);
    *hi = _mm256_permute2f128_ps(pairs_lo, pairs_hi, 0x31);
}

/// The first n (0 to 8) floats at p in the lanes, zeros past them: no load past the row (AVX2's
/// masked loads need not suppress faults for the lanes they skip).
AVX2 static INLINE __m256 load_first8(const float *p, int n) {
    if (n >= 8) return _mm256_loadu_ps(p);
    float lanes[8] = {0};
    for (int j = 0; j < n; j++) lanes[j] = p[j];
    return _mm256_loadu_ps(lanes);
}

/// The first n (0 to 8) lanes of v to p: no store past the row (and no masked store, slow on
/// Zen 2 and 3).
AVX2 static INLINE void store_first8(float *p, __m256 v, int n) {
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    for (int j = 0; j < n; j++) p[j] = lanes[j];
}
#endif

#endif
