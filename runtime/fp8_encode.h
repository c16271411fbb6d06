/* fp8_encode.h: the float -> narrow-format encoder shared by fp8.c (the exported, exhaustively
 * tested conversions) and quant.c (the quantizer's inner loop, where it must inline). One
 * implementation, so the quantizer is exactly what the 2^32-input test checks.
 * Round to nearest even on the float's bits; no dependence on the FPU rounding mode. */
#ifndef FP8C_RUNTIME_FP8_ENCODE_H
#define FP8C_RUNTIME_FP8_ENCODE_H

#include <stdint.h>
#include <string.h>

/* Round the finite, non-negative float with bits `abits` to a format with `man_bits` mantissa
 * bits and bias `bias`, nearest-even. Returns the magnitude code (exponent field << man_bits |
 * mantissa). The result is not clamped: a value that rounds past the largest finite number comes
 * back as a code above it, which is how the caller detects overflow. */
static inline uint32_t fp8c_round_magnitude(uint32_t abits, int man_bits, int bias)
{
    int fexp = (int)(abits >> 23);
    uint32_t sig = abits & 0x7FFFFFu;
    int e; /* exponent of the binade |x| lies in: |x| = sig * 2^(e - 23) */
    if (fexp == 0) {
        e = 1 - 127; /* float subnormal: no implicit bit */
    } else {
        sig |= 1u << 23;
        e = fexp - 127;
    }

    /* The target's spacing in this binade is 2^(max(e, emin) - man_bits);
     * below emin the spacing stays that of the smallest normal binade, which
     * is what makes the result subnormal. `shift` is how many low bits of sig
     * lie below that spacing. */
    int emin = 1 - bias;
    int shift = 23 - man_bits;
    if (e < emin)
        shift += emin - e;
    /* sig < 2^24, so from shift 25 on sig is below half the smallest step and
     * rounds to zero; stopping here also keeps the shifts below 32 bits. */
    if (shift > 24)
        return 0;

    uint32_t q = sig >> shift;
    uint32_t rem = sig & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    /* Branch-free round half to even (the quantizer calls this per element, and on real data
     * the round-up decision is a coin toss the branch predictor cannot learn). A carry out of
     * the mantissa correctly bumps the exponent below. */
    q += (uint32_t)(rem > half) | ((uint32_t)(rem == half) & q & 1u);

    if (e < emin)
        return q; /* subnormal (or, after a carry, the smallest normal) */
    /* q holds the implicit bit, worth one unit of the exponent field, so the
     * field is written one less: (e + bias) << m | (q - 2^m). */
    return ((uint32_t)(e - emin) << man_bits) + q;
}

/* Encode x: sign, rounded magnitude, overflow to max_mag (saturate) or ovf_mag, any NaN to nan. */
static inline uint32_t fp8c_encode_bits(float x, int man_bits, int bias, uint32_t max_mag, uint32_t sign_bit,
                                        uint32_t ovf_mag, uint32_t nan, int saturate)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint32_t abits = bits & 0x7FFFFFFFu;
    uint32_t sign = (bits & 0x80000000u) ? sign_bit : 0;
    if (abits > 0x7F800000u)
        return nan; /* canonical and unsigned, as CUDA does */
    uint32_t mag = abits == 0x7F800000u ? max_mag + 1 : fp8c_round_magnitude(abits, man_bits, bias);
    if (mag > max_mag)
        mag = saturate ? max_mag : ovf_mag;
    return sign | mag;
}

#endif
