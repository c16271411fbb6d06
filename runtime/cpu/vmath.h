/* vmath.h: 8-lane float math shared by the CPU reference (ref.c, ref_attn.c, quant.c), in GCC/Clang
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
 * vdecode8 decodes eight FP8 codes (the GEMM's packing, q_dequantize); e8m0_value is an MX scale
 * code's value; transpose16x16_bytes moves FP8 codes between row- and column-major (SSE2).
 *
 * Must not: depend on the lane an element is in (every lane computes the same function of its
 * input), so results do not change with the vector width, the chunking or the thread count.
 */
#ifndef FP8C_RUNTIME_CPU_VMATH_H
#define FP8C_RUNTIME_CPU_VMATH_H

#include "fp8.h"

#include <stdint.h>
#include <string.h>

/* The helpers below are always inlined, so the vector-return ABI GCC warns about never applies. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* A hot function compiled twice, for x86-64-v3 (AVX2 + FMA) and baseline x86-64, the clone
 * picked at load time: the build needs no -march flag. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT_CLONES
#endif

/* HOT_CLONES plus an x86-64-v4 (AVX-512) clone, for integer-heavy code with no floating-point
 * contraction to change (quant.c's FP8 encoders): the same 8-lane source, whose selects and
 * compares the AVX-512VL forms (vpternlogd, mask registers) do in fewer instructions (the
 * encoder 25-35% faster on the EPYC of issue 15). Building with FP8C_NO_V4_CLONES leaves the v4
 * clone out, so that build/tests/test_quant_v3 checks the AVX2 clone on an AVX-512 machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FP8C_NO_V4_CLONES)
#define HOT_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT_CLONES_V4 HOT_CLONES
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
 * halves (vunpck*ps, vshufps, vperm2f128 on AVX2). The loops are unrolled: left as loops, GCC
 * keeps r, t and u in memory. */
static inline __attribute__((always_inline)) void vtranspose8(vf8 r[8])
{
    vf8 t[8], u[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], (vi8){0, 8, 1, 9, 4, 12, 5, 13});
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (vi8){2, 10, 3, 11, 6, 14, 7, 15});
    }
#pragma GCC unroll 8
    for (int h = 0; h < 8; h += 4)
#pragma GCC unroll 8
        for (int p = 0; p < 2; p++) {
            u[h + 2 * p] = __builtin_shuffle(t[h + p], t[h + 2 + p], (vi8){0, 1, 8, 9, 4, 5, 12, 13});
            u[h + 2 * p + 1] = __builtin_shuffle(t[h + p], t[h + 2 + p], (vi8){2, 3, 10, 11, 6, 7, 14, 15});
        }
#pragma GCC unroll 8
    for (int c = 0; c < 4; c++) {
        r[c] = __builtin_shuffle(u[c], u[4 + c], (vi8){0, 1, 2, 3, 8, 9, 10, 11});
        r[c + 4] = __builtin_shuffle(u[c], u[4 + c], (vi8){4, 5, 6, 7, 12, 13, 14, 15});
    }
}

/* Eight FP8 codes of E4M3 (e4 set) or E5M2 decoded and multiplied by sinv, into *out: by
 * arithmetic, or through lut (the format's 256 decoded values) when one of them is a NaN or
 * infinity code. A code's magnitude bits shifted to the top of a float's mantissa (exponent field
 * over the float's low exponent bits) read as the float code x 2^-(127 - bias): a normal float
 * for a normal code, a subnormal float (the same mantissa, exactly) for a subnormal one. The
 * multiplication by 2^(127 - bias) (2^120 E4M3, 2^112 E5M2) is then exact either way, one
 * operation instead of a normal and a subnormal path and a select. So each lane is the code's
 * exact value, and the product by sinv is the table's (lut[code] x sinv), bit for bit. */
static inline __attribute__((always_inline)) void vdecode8(vf8 *out, const uint8_t *codes, float sinv, int e4,
                                                          const float *lut)
{
    typedef uint8_t u8x32 __attribute__((vector_size(32)));
    typedef uint32_t u32x8 __attribute__((vector_size(32)));
    typedef uint64_t u64x4 __attribute__((vector_size(32)));
    uint64_t x;
    memcpy(&x, codes, sizeof x);
    /* a byte's low seven bits plus 1 (E4M3) or 4 (E5M2) reach 0x80 exactly for the NaN and
     * infinity codes (0x7F; 0x7C..0x7F), and no byte carries into the next */
    if ((((x & 0x7F7F7F7F7F7F7F7Full) + (e4 ? 0x0101010101010101ull : 0x0404040404040404ull)) &
         0x8080808080808080ull) != 0) {
        float t[8];
        for (int l = 0; l < 8; l++)
            t[l] = lut[codes[l]] * sinv;
        *out = vld8(t);
        return;
    }
    u8x32 b = (u8x32)(u64x4){x, 0, 0, 0}; /* from the register (vmovq), not through memory */
    u32x8 c = (u32x8)__builtin_shuffle(b, (u8x32){0}, (u8x32){0, 32, 32, 32, 1, 32, 32, 32, 2, 32, 32, 32, 3, 32, 32, 32,
                                                             4, 32, 32, 32, 5, 32, 32, 32, 6, 32, 32, 32, 7, 32, 32, 32});
    vf8 mag = (vf8)((c & 0x7Fu) << (e4 ? 20 : 21)) * (e4 ? 0x1p120f : 0x1p112f);
    *out = (vf8)((u32x8)mag | ((c & 0x80u) << 24)) * sinv;
}

/* fp8c_e8m0_to_f32 inline for the decoders' per-tile scale loads: a normal power of two (codes
 * 1 .. 254) is the code in a float's exponent field; 0 (2^-127, a float subnormal) and 255 (NaN)
 * go to the exported function. */
static inline __attribute__((always_inline)) float e8m0_value(uint8_t e)
{
    if (e == 0 || e == 0xFF)
        return fp8c_e8m0_to_f32(e);
    uint32_t b = (uint32_t)e << 23;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
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

#if defined(__x86_64__)
#include <emmintrin.h>
/* A 16 x 16 byte matrix transposed in place, a[k] its row k on entry and its column k on exit:
 * four rounds of SSE2 unpacks (bytes, pairs, quads, halves), 64 operations. Shared by the FP8
 * paths that move codes between row- and column-major (quant.c's transposed encoder, the GEMM's
 * FP8 packing). */
static inline __attribute__((always_inline)) void transpose16x16_bytes(__m128i a[16])
{
    __m128i b[16], c[16];
    for (int i = 0; i < 8; i++) { /* rows 2i, 2i + 1 interleaved: columns 0-7, then 8-15 */
        b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[i + 8] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int h = 0; h < 16; h += 8) /* rows 4j .. 4j + 3 in 4-byte units: columns h .. h + 3, h + 4 .. */
        for (int j = 0; j < 4; j++) {
            c[h + j] = _mm_unpacklo_epi16(b[h + 2 * j], b[h + 2 * j + 1]);
            c[h + 4 + j] = _mm_unpackhi_epi16(b[h + 2 * j], b[h + 2 * j + 1]);
        }
    for (int g = 0; g < 16; g += 4) { /* columns g .. g + 3: rows 0-7 and 8-15 in 8-byte units, then whole */
        __m128i lo0 = _mm_unpacklo_epi32(c[g], c[g + 1]), hi0 = _mm_unpackhi_epi32(c[g], c[g + 1]);
        __m128i lo1 = _mm_unpacklo_epi32(c[g + 2], c[g + 3]), hi1 = _mm_unpackhi_epi32(c[g + 2], c[g + 3]);
        a[g] = _mm_unpacklo_epi64(lo0, lo1);
        a[g + 1] = _mm_unpackhi_epi64(lo0, lo1);
        a[g + 2] = _mm_unpacklo_epi64(hi0, hi1);
        a[g + 3] = _mm_unpackhi_epi64(hi0, hi1);
    }
}
#endif

#endif
