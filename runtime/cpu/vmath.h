/* vmath.h: 8-lane float math shared by the CPU reference (ref.c, ref_attn.c), in GCC/Clang
 * generic vectors, which each HOT_CLONES function lowers to AVX2 or to SSE2 pairs.
 *
 * vexp8 is the exponential behind attention's softmax, cross-entropy and the GELU: libm's expf
 * is scalar, and per element it cost more than the arithmetic around it. Cody-Waite reduction
 * x = n ln2 + r with n = round(x log2 e), the degree-6 Cephes polynomial for e^r on
 * |r| <= ln2/2, and 2^n put into the exponent field: at most 0.98 ulp from the exact e^x over
 * [-87, 0.5] sampled every 1e-5 (measured for issue 15; libm's expf is within 0.5 ulp). x is
 * clamped to [-87.3, 88.3] so that 2^n stays a normal float: below that, e^x < 2^-126 comes back
 * as a tiny normal instead of a denormal or 0, above it as FLT_MAX's neighbourhood, not inf.
 *
 * Must not: depend on the lane an element is in (every lane computes the same function of its
 * input), so results do not change with the vector width, the chunking or the thread count.
 */
#ifndef FP8C_RUNTIME_CPU_VMATH_H
#define FP8C_RUNTIME_CPU_VMATH_H

#include <stdint.h>

/* The helpers below are always inlined, so the vector-return ABI GCC warns about never applies. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* A hot function compiled twice, for x86-64-v3 (AVX2 + FMA) and baseline x86-64, the clone
 * picked at load time: the build needs no -march flag. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT_CLONES
#endif

typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

/* Unaligned 8-float loads and stores (macros: a function returning a vector would change the
 * ABI of the baseline clone). */
typedef float vf8u __attribute__((vector_size(32), aligned(4)));
#define vld8(p) (*(const vf8u *)(p))
#define vst8(p, x) (*(vf8u *)(p) = (x))

/* An 8 x 8 block transposed in registers: r[i] holds row i on entry, column i on return. Three
 * shuffle stages: 32-bit interleave of row pairs, 64-bit interleave of those, then the 128-bit
 * halves (vunpck*ps, vshufps, vperm2f128 on AVX2). */
static inline __attribute__((always_inline)) void vtranspose8(vf8 r[8])
{
    vf8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], (vi8){0, 8, 1, 9, 4, 12, 5, 13});
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (vi8){2, 10, 3, 11, 6, 14, 7, 15});
    }
    for (int h = 0; h < 8; h += 4)
        for (int p = 0; p < 2; p++) {
            u[h + 2 * p] = __builtin_shuffle(t[h + p], t[h + 2 + p], (vi8){0, 1, 8, 9, 4, 5, 12, 13});
            u[h + 2 * p + 1] = __builtin_shuffle(t[h + p], t[h + 2 + p], (vi8){2, 3, 10, 11, 6, 7, 14, 15});
        }
    for (int c = 0; c < 4; c++) {
        r[c] = __builtin_shuffle(u[c], u[4 + c], (vi8){0, 1, 2, 3, 8, 9, 10, 11});
        r[c + 4] = __builtin_shuffle(u[c], u[4 + c], (vi8){4, 5, 6, 7, 12, 13, 14, 15});
    }
}

static inline __attribute__((always_inline)) vf8 vexp8(vf8 x)
{
    vi8 lo = x < -87.33654f, hi = x > 88.3762589f; /* all-ones lanes where true */
    x = (vf8)(((vi8)x & ~lo) | ((vi8)((vf8){0} - 87.33654f) & lo));
    x = (vf8)(((vi8)x & ~hi) | ((vi8)((vf8){0} + 88.3762589f) & hi));
    vf8 t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    vf8 n = t - 12582912.0f;
    vf8 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf8 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf8 y = p * (r * r) + r + 1.0f;
    vi8 e = __builtin_convertvector(n, vi8) << 23;
    return (vf8)((vi8)y + e);
}

#endif
