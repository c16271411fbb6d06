/* fp8.c: the encoders and decoders declared in fp8.h.
 *
 * Owns the rounding of a float to every narrow format fp8c uses. One routine,
 * round_magnitude, rounds to any small binary format with subnormals (E4M3,
 * E5M2, F16, E2M1); each format then only says how it overflows and what its
 * NaN is. BF16 and E8M0 share the float's exponent range, so they are plain
 * operations on the float's bits.
 *
 * Must not: depend on the FPU rounding mode, flush-to-zero, or any other fp8c
 * header; keep state. Every encoder is integer-only, so the exhaustive test in
 * tests/unit/test_fp8.c pins its behaviour for all 2^32 inputs.
 */
#include "fp8.h"
#include "fp8_encode.h"

#include <string.h>

#define F32_SIGN 0x80000000u
#define F32_ABS 0x7FFFFFFFu
#define F32_INF 0x7F800000u
#define F32_MAN_BITS 23
#define F32_MAN_MASK 0x7FFFFFu
#define F32_BIAS 127

/* A small binary format, as far as encoding needs to know it. */
struct minifloat {
    int man_bits;     /* explicit mantissa bits */
    int bias;         /* exponent bias; the smallest normal exponent is 1 - bias */
    uint32_t max_mag; /* code of the largest finite magnitude */
    uint32_t sign;    /* the sign bit of a code */
    uint32_t ovf_mag; /* magnitude code of a non-saturated overflow (Inf or NaN) */
    uint32_t nan;     /* code for any NaN input */
};

static const struct minifloat fmt_e4m3 = {3, 7, 0x7E, 0x80, 0x7F, FP8C_E4M3_NAN};
static const struct minifloat fmt_e5m2 = {2, 15, 0x7B, 0x80, 0x7C, FP8C_E5M2_NAN};
static const struct minifloat fmt_f16 = {10, 15, 0x7BFF, 0x8000, 0x7C00, FP8C_F16_NAN};
/* E2M1 has no Inf or NaN: overflow can only saturate (ovf_mag = max_mag) and
 * NaN takes the positive largest code. */
static const struct minifloat fmt_e2m1 = {1, 1, 0x7, 0x8, 0x7, 0x7};

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The rounding itself lives in fp8_encode.h, shared with the quantizer. */
static uint32_t encode(float x, const struct minifloat *f, int saturate)
{
    return fp8c_encode_bits(x, f->man_bits, f->bias, f->max_mag, f->sign, f->ovf_mag, f->nan, saturate);
}

/* Float value of a finite code's magnitude fields. Every format here has a
 * smaller exponent range than float, so its subnormals are float normals and
 * the result is exact. */
static float decode_finite(uint32_t sign, uint32_t exp_field, uint32_t man, int man_bits, int bias)
{
    uint32_t fsign = sign ? F32_SIGN : 0;
    if (exp_field == 0) {
        if (man == 0)
            return f32_from_bits(fsign); /* signed zero */
        /* man * 2^(1 - bias - man_bits): normalise so the top set bit of man
         * becomes the implicit bit. */
        int top = man_bits - 1;
        while (!(man & (1u << top)))
            top--;
        int e = 1 - bias - man_bits + top;
        uint32_t frac = (man & ~(1u << top)) << (F32_MAN_BITS - top);
        return f32_from_bits(fsign | (uint32_t)(e + F32_BIAS) << F32_MAN_BITS | frac);
    }
    int e = (int)exp_field - bias;
    uint32_t frac = man << (F32_MAN_BITS - man_bits);
    return f32_from_bits(fsign | (uint32_t)(e + F32_BIAS) << F32_MAN_BITS | frac);
}

/* A quiet float NaN with the code's sign and, where the format has one, its
 * payload in the top mantissa bits. */
static float decode_nan(uint32_t sign, uint32_t man, int man_bits)
{
    uint32_t fsign = sign ? F32_SIGN : 0;
    uint32_t payload = man << (F32_MAN_BITS - man_bits);
    return f32_from_bits(fsign | F32_INF | 0x400000u | payload);
}

uint8_t fp8c_f32_to_e4m3(float x, int saturate)
{
    return (uint8_t)encode(x, &fmt_e4m3, saturate);
}

float fp8c_e4m3_to_f32(uint8_t v)
{
    uint32_t sign = v & 0x80u, exp_field = (v >> 3) & 0xFu, man = v & 0x7u;
    if (exp_field == 0xF && man == 0x7)
        return decode_nan(sign, man, 3); /* the only NaN; exponent 15 is otherwise normal */
    return decode_finite(sign, exp_field, man, 3, 7);
}

uint8_t fp8c_f32_to_e5m2(float x, int saturate)
{
    return (uint8_t)encode(x, &fmt_e5m2, saturate);
}

float fp8c_e5m2_to_f32(uint8_t v)
{
    uint32_t sign = v & 0x80u, exp_field = (v >> 2) & 0x1Fu, man = v & 0x3u;
    if (exp_field == 0x1F) {
        if (man == 0)
            return f32_from_bits((sign ? F32_SIGN : 0) | F32_INF);
        return decode_nan(sign, man, 2);
    }
    return decode_finite(sign, exp_field, man, 2, 15);
}

uint16_t fp8c_f32_to_f16(float x)
{
    /* F16 has infinities: overflow never saturates. */
    return (uint16_t)encode(x, &fmt_f16, 0);
}

float fp8c_f16_to_f32(uint16_t v)
{
    uint32_t sign = v & 0x8000u, exp_field = (v >> 10) & 0x1Fu, man = v & 0x3FFu;
    if (exp_field == 0x1F) {
        if (man == 0)
            return f32_from_bits((sign ? F32_SIGN : 0) | F32_INF);
        return decode_nan(sign, man, 10);
    }
    return decode_finite(sign, exp_field, man, 10, 15);
}

uint16_t fp8c_f32_to_bf16(float x)
{
    uint32_t bits = f32_bits(x);
    if ((bits & F32_ABS) > F32_INF)
        return FP8C_BF16_NAN;
    /* Adding 0x7FFF carries into bit 16 exactly when the low half is above
     * one half; the extra +1 when bit 16 is already set turns the exact half
     * into a carry too, which is ties-to-even. A carry out of the top
     * mantissa bit lands in the exponent, and from the largest finite value
     * it gives Inf, as RNE overflow should. Inf itself has a zero low half
     * and passes through unchanged. */
    uint32_t lsb = (bits >> 16) & 1u;
    return (uint16_t)((bits + 0x7FFFu + lsb) >> 16);
}

float fp8c_bf16_to_f32(uint16_t v)
{
    return f32_from_bits((uint32_t)v << 16);
}

/* E8M0's exponent range is float's (bias 127), so for a float normal the
 * biased exponent field already is the floor(log2) code. */
uint8_t fp8c_f32_to_e8m0_floor(float x)
{
    uint32_t abits = f32_bits(x) & F32_ABS;
    if (abits > F32_INF)
        return FP8C_E8M0_NAN;
    if (abits == F32_INF)
        return 0xFE;
    /* Float subnormals are all below 2^-126: floor(log2) is -127 for those
     * from 2^-127 up and lower for the rest, which clamps to 0x00 too. */
    return (uint8_t)(abits >> F32_MAN_BITS);
}

uint8_t fp8c_f32_to_e8m0_ceil(float x)
{
    uint32_t abits = f32_bits(x) & F32_ABS;
    if (abits > F32_INF)
        return FP8C_E8M0_NAN;
    if (abits == F32_INF)
        return 0xFE;
    uint32_t exp_field = abits >> F32_MAN_BITS;
    uint32_t man = abits & F32_MAN_MASK;
    if (exp_field == 0)
        /* subnormal: 2^-127 is the float 0x00400000; anything above it (and
         * below 2^-126) rounds up to 2^-126, anything at or below (zero
         * included) clamps to 2^-127. */
        return man > 0x400000u ? 1 : 0;
    if (man != 0)
        exp_field++; /* not a power of two: up one binade */
    return (uint8_t)(exp_field > 0xFE ? 0xFE : exp_field);
}

uint8_t fp8c_f32_to_e8m0(float x)
{
    return fp8c_f32_to_e8m0_floor(x);
}

float fp8c_e8m0_to_f32(uint8_t v)
{
    if (v == 0xFF)
        return f32_from_bits(F32_INF | 0x400000u);
    if (v == 0)
        return f32_from_bits(0x400000u); /* 2^-127 is a float subnormal */
    return f32_from_bits((uint32_t)v << F32_MAN_BITS);
}

uint8_t fp8c_f32_to_e2m1(float x, int saturate)
{
    (void)saturate; /* E2M1 always saturates: it has no Inf or NaN to overflow into */
    return (uint8_t)encode(x, &fmt_e2m1, 1);
}

float fp8c_e2m1_to_f32(uint8_t v)
{
    uint32_t sign = v & 0x8u, exp_field = (v >> 1) & 0x3u, man = v & 0x1u;
    return decode_finite(sign, exp_field, man, 1, 1);
}
