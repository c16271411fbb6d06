/* fp8.h: bit-exact conversions between float and the narrow formats fp8c
 * trains with: FP8 E4M3 and E5M2, BF16, IEEE half (F16), and the two OCP MX
 * formats E8M0 (block scales) and E2M1 (FP4 elements).
 *
 * This is the numerics contract of DESIGN.md section 6 in code. The CPU
 * reference backend, the quantizer and the tests all encode through these
 * functions, so that a CPU result can be compared bit for bit with what CUDA
 * produces. It depends on libc only (no other fp8c header) and keeps no state.
 *
 * Semantics shared by every encoder (they mirror CUDA's cuda_fp8.h and
 * cuda_bf16.h host code, see shared/notes/cuda-apis.md section 4):
 *   - round to nearest, ties to even, also into the subnormal range; values at
 *     or below half the smallest subnormal become zero with the input's sign;
 *   - everything is integer arithmetic on the float's bits, so the result does
 *     not depend on the FPU rounding mode or on flush-to-zero settings.
 *
 * Codes are returned in the low bits of the integer (FP8: 8 bits, E2M1: the
 * low 4 bits, sign in bit 3). Decoders ignore bits above the format's width.
 */
#ifndef FP8C_RUNTIME_FP8_H
#define FP8C_RUNTIME_FP8_H

#include <stdint.h>

/* Largest finite magnitudes: the clamp value of saturating encoders, and the
 * "fmax" of the scaling rule s = fmax / amax. */
#define FP8C_E4M3_MAX 448.0f
#define FP8C_E5M2_MAX 57344.0f
#define FP8C_E2M1_MAX 6.0f
#define FP8C_F16_MAX 65504.0f
#define FP8C_BF16_MAX 3.38953139e38f /* (2 - 2^-7) * 2^127 */

/* Exponent of the largest binade (floor(log2(max))): the OCP MX "emax_elem"
 * subtracted from floor(log2(amax)) when an E8M0 block scale is chosen. */
#define FP8C_E4M3_EMAX 8
#define FP8C_E5M2_EMAX 15
#define FP8C_E2M1_EMAX 2

/* Canonical NaN codes the encoders produce for any NaN input, whatever its
 * sign or payload (CUDA canonicalises NaN before converting). */
#define FP8C_E4M3_NAN 0x7Fu
#define FP8C_E5M2_NAN 0x7Fu
#define FP8C_BF16_NAN 0x7FFFu
#define FP8C_F16_NAN 0x7FFFu
#define FP8C_E8M0_NAN 0xFFu

/* FP8 E4M3 ("e4m3fn": bias 7, no infinity, NaN = S.1111.111).
 * saturate != 0 (CUDA __NV_SATFINITE): |x| > 464 and +-Inf give +-448 (0x7E).
 * saturate == 0 (CUDA __NV_NOSAT): they give the NaN pattern with the input's
 * sign, 0x7F | sign, as CUDA's emulation does. NaN input -> 0x7F. */
uint8_t fp8c_f32_to_e4m3(float x, int saturate);
float fp8c_e4m3_to_f32(uint8_t v);

/* FP8 E5M2 (bias 15, IEEE-style infinities 0x7C/0xFC, NaN 0x7D-0x7F|sign).
 * |x| >= 61440 and +-Inf overflow: saturate -> +-57344 (0x7B), otherwise
 * +-Inf (0x7C | sign). NaN input -> 0x7F. */
uint8_t fp8c_f32_to_e5m2(float x, int saturate);
float fp8c_e5m2_to_f32(uint8_t v);

/* BF16: the top half of a float, rounded to nearest even; finite overflow
 * becomes +-Inf; NaN -> 0x7FFF (CUDA host __float2bfloat16_rn). Decoding is
 * exact. */
uint16_t fp8c_f32_to_bf16(float x);
float fp8c_bf16_to_f32(uint16_t v);

/* IEEE binary16: RNE, |x| >= 65520 and +-Inf give +-Inf (0x7C00 | sign),
 * NaN -> 0x7FFF (the same canonical NaN as BF16). Decoding is exact. */
uint16_t fp8c_f32_to_f16(float x);
float fp8c_f16_to_f32(uint16_t v);

/* E8M0, the OCP MX block-scale format: an unsigned biased exponent, value
 * 2^(v - 127) for v in 0..254, 0xFF = NaN; there is no zero and no infinity.
 * The input's sign is ignored (a scale is a magnitude). All three encoders:
 *   NaN -> 0xFF; +-Inf -> 0xFE (saturate to 2^127);
 *   |x| = 0 and anything whose rounded exponent is below -127 -> 0x00
 *   (clamp to the smallest scale 2^-127; a zero amax is the quantizer's case
 *   to handle, not the encoder's);
 *   a rounded exponent above 127 -> 0xFE.
 * _floor rounds the exponent down, 2^floor(log2|x|): the OCP MX v1.0 rule
 * X = 2^(floor(log2(amax)) - emax_elem) is fp8c_f32_to_e8m0_floor(amax /
 * 2^emax_elem), exactly, because emax_elem is an integer. Elements may then
 * exceed the element format's max and are clamped by the element encoder.
 * _ceil rounds it up, 2^ceil(log2|x|): pass amax / fmax to get a scale under
 * which no element saturates (the power-of-two recipe of DeepSeek-V3 style
 * "UE8M0" scaling). fp8c_f32_to_e8m0 is _floor, the OCP behaviour. */
uint8_t fp8c_f32_to_e8m0(float x);
uint8_t fp8c_f32_to_e8m0_floor(float x);
uint8_t fp8c_f32_to_e8m0_ceil(float x);
float fp8c_e8m0_to_f32(uint8_t v);

/* E2M1, the OCP FP4 element format: sign, 2 exponent bits (bias 1), 1
 * mantissa bit; magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; no Inf, no NaN.
 * RNE as everywhere else. Because the format can represent neither infinity
 * nor NaN, the encoder always saturates and `saturate` is accepted only for
 * symmetry with the FP8 encoders: |x| > 6 (ties at 7 included) and +-Inf give
 * +-6 (0x7 | sign); NaN gives +6 (0x7), the positive largest value, the same
 * canonical-positive choice as the FP8 NaN. The code is in the low 4 bits. */
uint8_t fp8c_f32_to_e2m1(float x, int saturate);
float fp8c_e2m1_to_f32(uint8_t v);

#endif
