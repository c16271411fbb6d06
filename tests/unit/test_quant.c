/* test_quant.c: pins the scaling layer of runtime/quant.c.
 *
 * Every scaling kind has a case whose expected scales, codes and layouts are
 * worked out by hand in the comments and written out as literals; the code
 * under test never produces its own expectation. E4M3 codes are written
 * S.EEEE.MMM (bias 7), E5M2 codes S.EEEEE.MM (bias 15). Two property cases
 * follow: the dequantization error bound derived from the format, over many
 * tilings of random data, and fake quantization equal, bit for bit, to
 * dequantize(quantize(x)).
 */
#include "check.h"
#include "fp8.h"
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* First index where codes differ from the expected bytes, or -1. */
static int codes_mismatch(const uint8_t *got, const uint8_t *want, int n)
{
    for (int k = 0; k < n; k++)
        if (got[k] != want[k])
            return k;
    return -1;
}

static int floats_mismatch(const float *got, const float *want, int n)
{
    for (int k = 0; k < n; k++)
        if (!same_bits(got[k], want[k]))
            return k;
    return -1;
}

/* ---- 1. formats ------------------------------------------------------------------- */

static void case_format_max(void)
{
    CHECK(q_format_max(Q_E4M3) == 448.0f);
    CHECK(q_format_max(Q_E5M2) == 57344.0f);
    CHECK(q_format_max(Q_E2M1) == 6.0f);
}

/* ---- 2. per-tensor current scaling ------------------------------------------------ */

static void case_per_tensor_current_e4m3(void)
{
    /* amax = 3, s = 448 / 3 = 149.33333 (float 149.33332824...).
     *    3.0  * s = 448 (the float product rounds to 448)  -> 0.1111.110 = 0x7E
     *   -1.0  * s = -149.33: [128,256) step 16, 144 is nearer than 160
     *               -144 = -1.001b * 2^7                   -> 1.1110.001 = 0xF1
     *    0.25 * s = 37.33: [32,64) step 4, 36 nearer than 40
     *               36 = 1.001b * 2^5                      -> 0.1100.001 = 0x61
     *    2.0  * s = 298.67: [256,512) step 32, 288 (off 10.67) not 320
     *               288 = 1.001b * 2^8                     -> 0.1111.001 = 0x79
     *   -0.1  * s = -14.93: [8,16) step 1 -> -15 = -1.111b * 2^3 -> 1.1010.111 = 0xD7
     * scale_inv = 3 / 448 = 0.0066964286 (1/s in float: within an ulp). */
    const float x[5] = {3.0f, -1.0f, 0.25f, 2.0f, -0.1f};
    const uint8_t want[5] = {0x7E, 0xF1, 0x61, 0x79, 0xD7};
    uint8_t q[5];
    float sinv = -1.0f;
    float amax = q_quantize(q, &sinv, NULL, x, 1, 5, 0, 0, Q_E4M3, 0, 0.0f);
    CHECK(amax == 3.0f);
    int k = codes_mismatch(q, want, 5);
    CHECKF(k < 0, "code %d is 0x%02X, want 0x%02X", k, k < 0 ? 0 : q[k], k < 0 ? 0 : want[k]);
    CHECKF(fabsf(sinv - 0.0066964286f) <= 1e-9f, "scale_inv %.9g", sinv);

    /* Dequantized: -144 * 3/448 = -0.96428571, -15 * 3/448 = -0.10044643. */
    float y[5];
    q_dequantize(y, q, &sinv, NULL, 1, 5, 0, 0, Q_E4M3, 0);
    CHECKF(fabsf(y[1] + 0.96428571f) <= 1e-6f, "y[1] = %.9g", y[1]);
    CHECKF(fabsf(y[4] + 0.10044643f) <= 1e-7f, "y[4] = %.9g", y[4]);
}

static void case_per_tensor_current_e5m2(void)
{
    /* amax = 3.5, s = 57344 / 3.5 = 16384 = 2^14 exactly.
     *    3.5 * s = 57344, the E5M2 max                 -> 0.11110.11 = 0x7B
     *    1.0 * s = 2^14: exponent field 14 + 15 = 29     -> 0.11101.00 = 0x74
     *   -0.3 * s = -4915.2: [4096,8192) step 1024, 5120 nearer than 4096
     *              -5120 = -1.01b * 2^12, field 27        -> 1.11011.01 = 0xED
     * scale_inv = 2^-14 exactly. */
    const float x[3] = {3.5f, 1.0f, -0.3f};
    const uint8_t want[3] = {0x7B, 0x74, 0xED};
    uint8_t q[3];
    float sinv = -1.0f;
    float amax = q_quantize(q, &sinv, NULL, x, 1, 3, 0, 0, Q_E5M2, 0, 0.0f);
    CHECK(amax == 3.5f);
    CHECK(codes_mismatch(q, want, 3) < 0);
    CHECK(sinv == 0x1p-14f);
}

/* ---- 3. given (delayed / static) scale, saturating -------------------------------- */

static void case_given_scale_saturates(void)
{
    /* s = 100 for every element, no amax of its own.
     *    5    * 100 = 500   > 464 (448 + half an ulp): saturates -> 0x7E
     *   -4    * 100 = -400: the exact midpoint of 384 (1.100b * 2^8) and 416 (1.101b * 2^8);
     *                 ties go to the even mantissa, 384           -> 1.1111.100 = 0xFC
     *    0.01 * 100 = 1 (0.01f * 100 rounds to 1.0f); 1 = 2^0, field 7 -> 0x38
     *    1e6  * 100 = 1e8: saturates                              -> 0x7E
     *   -1e30 * 100: saturates to -448                            -> 0xFE
     * scale_inv = 1/100 = 0.01f; the returned amax is still the tensor's, 1e30. */
    const float x[5] = {5.0f, -4.0f, 0.01f, 1e6f, -1e30f};
    const uint8_t want[5] = {0x7E, 0xFC, 0x38, 0x7E, 0xFE};
    uint8_t q[5];
    float sinv = -1.0f;
    float amax = q_quantize(q, &sinv, NULL, x, 1, 5, 0, 0, Q_E4M3, 0, 100.0f);
    CHECK(amax == 1e30f);
    CHECK(codes_mismatch(q, want, 5) < 0);
    CHECK(sinv == 0.01f);

    /* A given scale with tiles: every tile gets the same scale_inv (1/2). */
    float m[16];
    for (int k = 0; k < 16; k++)
        m[k] = (float)k;
    uint8_t q2[16];
    float s2[4] = {-1, -1, -1, -1};
    q_quantize(q2, s2, NULL, m, 2, 8, 1, 4, Q_E4M3, 0, 2.0f);
    const float want_s2[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    CHECK(floats_mismatch(s2, want_s2, 4) < 0);
    CHECK(q2[15] == 0x5F); /* 15 * 2 = 30 = 1.111b * 2^4 -> 0.1011.111 */
}

/* ---- 4. 1 x 4 tiles, VEC layout --------------------------------------------------- */

static void case_vec_1x4(void)
{
    /* 2 x 8 matrix, four 1x4 tiles, each with a power-of-two scale:
     *   row 0, cols 0-3: amax 7    -> s = 64    row 0, cols 4-7: amax 1.75 -> s = 256
     *   row 1, cols 0-3: amax 448  -> s = 1     row 1, cols 4-7: amax 14   -> s = 32
     * VEC layout scale_inv[i + b*R], R = 2: [r0b0, r1b0, r0b1, r1b1]
     *   = {1/64, 1, 1/256, 1/32}.
     * Codes (scaled value -> code):
     *   r0b0:  448 -> 7E;  -224 = -1.110b*2^7 -> F6;  6.4 -> 6.5 = 1.101b*2^2 -> 4D;  64 = 2^6 -> 68
     *   r0b1:  448 -> 7E;  128 = 2^7 -> 70;  -16 = -2^4 -> D8;  0 -> 00
     *   r1b0:  448 -> 7E;  -300 -> -288 (nearer than -320) = -1.001b*2^8 -> F9;  2 -> 40;
     *          0.001: subnormal, 0.001 / 2^-9 = 0.512 rounds to 1 -> 01
     *   r1b1:  448 -> 7E;  -448 -> FE;  32 = 2^5 -> 60;  96 = 1.1b*2^6 -> 6C */
    const float x[16] = {7.0f,   -3.5f,  0.1f, 1.0f,   1.75f, 0.5f,   -0.0625f, 0.0f,
                         448.0f, -300.0f, 2.0f, 0.001f, 14.0f, -14.0f, 1.0f,     3.0f};
    const uint8_t want[16] = {0x7E, 0xF6, 0x4D, 0x68, 0x7E, 0x70, 0xD8, 0x00,
                              0x7E, 0xF9, 0x40, 0x01, 0x7E, 0xFE, 0x60, 0x6C};
    const float want_sinv[4] = {0.015625f, 1.0f, 0.00390625f, 0.03125f};
    uint8_t q[16];
    float sinv[4];
    CHECK(q_scale_count(2, 8, 1, 4) == 4);
    float amax = q_quantize(q, sinv, NULL, x, 2, 8, 1, 4, Q_E4M3, 0, 0.0f);
    CHECK(amax == 448.0f);
    int k = codes_mismatch(q, want, 16);
    CHECKF(k < 0, "code %d is 0x%02X, want 0x%02X", k, k < 0 ? 0 : q[k], k < 0 ? 0 : want[k]);
    k = floats_mismatch(sinv, want_sinv, 4);
    CHECKF(k < 0, "scale_inv[%d] = %g", k, k < 0 ? 0.0 : (double)sinv[k]);

    /* Dequantized: exact except 0.1 -> 6.5/64 = 0.1015625, -300 -> -288, 0.001 -> 2^-9. */
    float y[16];
    float want_y[16];
    memcpy(want_y, x, sizeof want_y);
    want_y[2] = 0.1015625f;
    want_y[9] = -288.0f;
    want_y[11] = 0.001953125f;
    q_dequantize(y, q, sinv, NULL, 2, 8, 1, 4, Q_E4M3, 0);
    k = floats_mismatch(y, want_y, 16);
    CHECKF(k < 0, "y[%d] = %g", k, k < 0 ? 0.0 : (double)y[k]);
}

/* ---- 5. 4 x 4 blocks on 5 x 9, BLK layout with L4 padding ------------------------- */

static void case_blk_4x4_ragged(void)
{
    /* 5 x 9 matrix of 0.5 with a peak per block; row 4, cols 4-7 are all zero.
     * Blocks (block row, block col) and their extents: rows 0-3 | 4, cols 0-3 | 4-7 | 8.
     *   (0,0): peak x[1][2] = 7     -> s = 64:   0.5 -> 32 = 2^5  -> 60;  7 -> 7E
     *   (0,1): peak x[3][5] = -28   -> s = 16:   0.5 -> 8 = 2^3   -> 50; -28 -> FE
     *   (0,2): peak x[2][8] = 3.5   -> s = 128:  0.5 -> 64        -> 68; 3.5 -> 7E
     *   (1,0): peak x[4][1] = -0.875-> s = 512:  0.5 -> 256 = 2^8 -> 78; -0.875 -> FE
     *   (1,1): all zero             -> s = 1 (safe scale), codes 00
     *   (1,2): x[4][8] = 448        -> s = 1:    7E
     * L = ceil(9/4) = 3, L4 = 4, two block rows: scale_inv[b + bi*4], 8 entries,
     * index 3 and 7 are padding and must be 0. */
    float x[5 * 9];
    for (int k = 0; k < 45; k++)
        x[k] = 0.5f;
    for (int j = 4; j < 8; j++)
        x[4 * 9 + j] = 0.0f;
    x[1 * 9 + 2] = 7.0f;
    x[3 * 9 + 5] = -28.0f;
    x[2 * 9 + 8] = 3.5f;
    x[4 * 9 + 1] = -0.875f;
    x[4 * 9 + 8] = 448.0f;
    const uint8_t want[45] = {
        0x60, 0x60, 0x60, 0x60, 0x50, 0x50, 0x50, 0x50, 0x68, /* row 0 */
        0x60, 0x60, 0x7E, 0x60, 0x50, 0x50, 0x50, 0x50, 0x68, /* row 1 */
        0x60, 0x60, 0x60, 0x60, 0x50, 0x50, 0x50, 0x50, 0x7E, /* row 2 */
        0x60, 0x60, 0x60, 0x60, 0x50, 0xFE, 0x50, 0x50, 0x68, /* row 3 */
        0x78, 0xFE, 0x78, 0x78, 0x00, 0x00, 0x00, 0x00, 0x7E, /* row 4 */
    };
    const float want_sinv[8] = {0.015625f, 0.0625f, 0.0078125f, 0.0f, 0.001953125f, 1.0f, 1.0f, 0.0f};
    uint8_t q[45];
    float sinv[8];
    for (int k = 0; k < 8; k++)
        sinv[k] = -1.0f; /* the padding must be overwritten */
    CHECK(q_scale_count(5, 9, 4, 4) == 8);
    float amax = q_quantize(q, sinv, NULL, x, 5, 9, 4, 4, Q_E4M3, 0, 0.0f);
    CHECK(amax == 448.0f);
    int k = codes_mismatch(q, want, 45);
    CHECKF(k < 0, "code (%d,%d) is 0x%02X, want 0x%02X", k / 9, k % 9, k < 0 ? 0 : q[k], k < 0 ? 0 : want[k]);
    k = floats_mismatch(sinv, want_sinv, 8);
    CHECKF(k < 0, "scale_inv[%d] = %g", k, k < 0 ? 0.0 : (double)sinv[k]);

    /* Every scaled value was exact, so dequantization gives x back bit for bit. */
    float y[45];
    q_dequantize(y, q, sinv, NULL, 5, 9, 4, 4, Q_E4M3, 0);
    CHECK(floats_mismatch(y, x, 45) < 0);

    /* One 128 x 128 block covering everything: L = 1, L4 = 4, entries 1-3 are padding.
     * amax 448 -> s = 1. */
    float s1[4] = {-1, -1, -1, -1};
    const float want_s1[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    CHECK(q_scale_count(5, 9, 128, 128) == 4);
    q_quantize(q, s1, NULL, x, 5, 9, 128, 128, Q_E4M3, 0, 0.0f);
    CHECK(floats_mismatch(s1, want_s1, 4) < 0);
}

/* ---- 6. other tile shapes: row-major [ceil(R/tr)][ceil(C/tc)] --------------------- */

static void case_rowmajor_2x4(void)
{
    /* 5 x 9 with 2 x 4 tiles: 3 x 3 tiles, tile t = (i/2)*3 + j/4 filled with the
     * constant 0.875 * 2^t, so s = 448 / (0.875 * 2^t) = 2^(9-t) and scale_inv[t] =
     * 2^(t-9) in row-major order; every code is 448 -> 0x7E. */
    const float value[9] = {0.875f, 1.75f, 3.5f, 7.0f, 14.0f, 28.0f, 56.0f, 112.0f, 224.0f};
    const float want_sinv[9] = {1.0f / 512, 1.0f / 256, 1.0f / 128, 1.0f / 64, 1.0f / 32,
                                1.0f / 16,  1.0f / 8,   1.0f / 4,   1.0f / 2};
    float x[45];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 9; j++)
            x[i * 9 + j] = value[(i / 2) * 3 + j / 4];
    uint8_t q[45];
    float sinv[9];
    CHECK(q_scale_count(5, 9, 2, 4) == 9);
    q_quantize(q, sinv, NULL, x, 5, 9, 2, 4, Q_E4M3, 0, 0.0f);
    int k = floats_mismatch(sinv, want_sinv, 9);
    CHECKF(k < 0, "scale_inv[%d] = %g", k, k < 0 ? 0.0 : (double)sinv[k]);
    for (k = 0; k < 45; k++)
        CHECKF(q[k] == 0x7E, "code %d is 0x%02X", k, q[k]);
    float y[45];
    q_dequantize(y, q, sinv, NULL, 5, 9, 2, 4, Q_E4M3, 0);
    CHECK(floats_mismatch(y, x, 45) < 0);
}

/* ---- 7. the transposed (column-wise) copy ----------------------------------------- */

static void case_transposed_copy(void)
{
    /* x is 4 x 2; its transpose is 2 x 4, so 1 x 4 tiles of the transpose are x's
     * columns (tiles along the original row index, as wgrad contracts M).
     *   column 0 {7, 0.1, -1, 2}: amax 7, s = 64:
     *       7 -> 448 -> 7;  0.1 -> 6.4 -> 6.5 -> 6.5/64 = 0.1015625;  -1 -> -1;  2 -> 2
     *   column 1 {0.3, 0.03, 0, -0.875}: amax 0.875, s = 512:
     *       0.3 -> 153.6 -> 160 ([128,256) step 16) -> 160/512 = 0.3125
     *       0.03 -> 15.36 -> 15 ([8,16) step 1)     -> 15/512 = 0.029296875
     *       0 -> 0;  -0.875 -> -448 -> -0.875 */
    const float x[8] = {7.0f, 0.3f, 0.1f, 0.03f, -1.0f, 0.0f, 2.0f, -0.875f};
    const float want[8] = {7.0f, 0.1015625f, -1.0f, 2.0f, 0.3125f, 0.029296875f, 0.0f, -0.875f};
    float out[8];
    float amax = q_fake_quant(out, x, 4, 2, 1, 4, Q_E4M3, 0, 0.0f, 1);
    CHECK(amax == 7.0f);
    int k = floats_mismatch(out, want, 8);
    CHECKF(k < 0, "out[%d] = %.9g, want %.9g", k, k < 0 ? 0.0 : (double)out[k], k < 0 ? 0.0 : (double)want[k]);
}

/* The column-wise copy derived from the row-wise one (ZeRO-1 sends only that one): equal, code
 * for code and scale for scale, to quantizing the transposed matrix, for square blocks (ragged
 * edges included) and whole-tensor scales; other tilings are refused. */
static void case_transpose_copy_equals_quantized_transpose(void)
{
    enum { R = 37, C = 23 };
    float x[R * C], xt[C * R];
    uint32_t st = 12345;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            st = st * 1664525u + 1013904223u;
            float v = ((float)(st >> 8) / 16777216.0f - 0.5f) * (float)(1 + (i * 7 + j) % 13);
            x[i * C + j] = v, xt[j * R + i] = v;
        }
    const int tiles[][2] = {{0, 0}, {4, 4}, {8, 8}, {128, 128}};
    for (size_t t = 0; t < sizeof tiles / sizeof *tiles; t++) {
        int tr = tiles[t][0], tc = tiles[t][1];
        size_t ns = q_scale_count(R, C, tr, tc), nst = q_scale_count(C, R, tr, tc);
        uint8_t q[R * C], qt[C * R], want[C * R];
        float *s = calloc(ns, sizeof *s), *sd = calloc(nst, sizeof *sd), *sw = calloc(nst, sizeof *sw);
        q_quantize(q, s, NULL, x, R, C, tr, tc, Q_E4M3, 0, 0.0f);
        q_quantize(want, sw, NULL, xt, C, R, tr, tc, Q_E4M3, 0, 0.0f);
        CHECKF(q_transpose_copy(qt, sd, q, s, R, C, tr, tc) == 0, "tile %dx%d refused", tr, tc);
        CHECKF(!memcmp(qt, want, sizeof want), "tile %dx%d: codes differ", tr, tc);
        CHECKF(!memcmp(sd, sw, nst * sizeof *sd), "tile %dx%d: scales differ", tr, tc);
        free(s), free(sd), free(sw);
    }
    uint8_t q[R * C], qt[C * R];
    float s[R * C];
    CHECK(q_transpose_copy(qt, s, q, s, R, C, 1, 4) == -1); /* 1 x T: the transposed tiles hold other elements */
    CHECK(q_transpose_copy(qt, s, q, s, R, C, 2, 4) == -1);
}

/* ---- 8. MX: 1 x 32 blocks with E8M0 scales ---------------------------------------- */

static void case_mx_e4m3(void)
{
    /* 2 x 40, 1 x 32 tiles: blocks cols 0-31 and 32-39 (ragged). X = 2^(floor(log2 amax) - 8).
     *   r0b0: {3, 1, -0.01, 0...}: floor(log2 3) = 1, X = 2^-7, E8M0 127 - 7 = 120
     *         3 * 128 = 384 = 1.1b*2^8 -> 7C;  1 * 128 = 2^7 -> 70;
     *         -0.01 * 128 = -1.28 -> -1.25 = -1.010b*2^0 (step 0.125) -> BA
     *   r0b1: {500, 0.5, 0...}: floor(log2 500) = 8, X = 1, E8M0 127
     *         500 > 448: clamped by the element encoder -> 7E;  0.5 = 2^-1 -> 30
     *   r1b0: all zero: safe scale X = 1, E8M0 127, codes 00
     *   r1b1: {-0.0001, 0..., 0.2}: floor(log2 0.2) = -3, X = 2^-11, E8M0 116
     *         0.2 * 2048 = 409.6 -> 416 = 1.101b*2^8 -> 7D
     *         -0.0001 * 2048 = -0.2048: [0.125,0.25) step 2^-6, 13.1 steps -> -13 * 2^-6
     *                          = -1.101b*2^-3, field 4 -> A5
     * E8M0 codes row-major [2][2] = {120, 127, 127, 116}; the float copy in VEC
     * order [r0b0, r1b0, r0b1, r1b1] = {2^-7, 1, 1, 2^-11}. */
    float x[80] = {0};
    x[0] = 3.0f;
    x[1] = 1.0f;
    x[2] = -0.01f;
    x[32] = 500.0f;
    x[33] = 0.5f;
    x[40 + 32] = -0.0001f;
    x[40 + 39] = 0.2f;
    uint8_t want[80] = {0};
    want[0] = 0x7C;
    want[1] = 0x70;
    want[2] = 0xBA;
    want[32] = 0x7E;
    want[33] = 0x30;
    want[40 + 32] = 0xA5;
    want[40 + 39] = 0x7D;
    const uint8_t want_e8[4] = {120, 127, 127, 116};
    const float want_sinv[4] = {0.0078125f, 1.0f, 1.0f, 0x1p-11f};

    uint8_t q[80];
    uint8_t e8[4];
    float sinv[4];
    CHECK(q_mx_scale_count(2, 40, 1, 32) == 4);
    float amax = q_quantize(q, sinv, e8, x, 2, 40, 1, 32, Q_E4M3, 1, 0.0f);
    CHECK(amax == 500.0f);
    int k = codes_mismatch(q, want, 80);
    CHECKF(k < 0, "code (%d,%d) is 0x%02X, want 0x%02X", k / 40, k % 40, k < 0 ? 0 : q[k], k < 0 ? 0 : want[k]);
    CHECK(codes_mismatch(e8, want_e8, 4) < 0);
    CHECK(floats_mismatch(sinv, want_sinv, 4) < 0);

    /* scale_inv may be NULL in MX mode; dequantize then reads the E8M0 codes.
     *   (0,0) 384 * 2^-7 = 3;  (0,32) 448 (the clamp);  (1,39) 416 * 2^-11 = 0.203125;
     *   (1,32) -13 * 2^-6 * 2^-11 = -13 * 2^-17. */
    uint8_t q2[80];
    uint8_t e82[4];
    q_quantize(q2, NULL, e82, x, 2, 40, 1, 32, Q_E4M3, 1, 0.0f);
    CHECK(codes_mismatch(q2, q, 80) < 0 && codes_mismatch(e82, want_e8, 4) < 0);
    float y[80];
    q_dequantize(y, q2, NULL, e82, 2, 40, 1, 32, Q_E4M3, 1);
    CHECK(y[0] == 3.0f);
    CHECK(y[32] == 448.0f);
    CHECK(y[40 + 39] == 0.203125f);
    CHECK(y[40 + 32] == -13.0f * 0x1p-17f);
    CHECK(y[40] == 0.0f);
}

/* The E8M0 scale of a 1 x 32 block for every float exponent of its amax (subnormals, the
 * smallest normals where amax 2^-emax is subnormal, up to the largest), three mantissas each,
 * E4M3 and E5M2: the code is fp8c_f32_to_e8m0_floor(amax 2^-emax) (fp8.h's floor rule) and the
 * float copy its value, whichever way quant.c computes them. */
static void case_mx_scale_every_exponent(void)
{
    static const uint32_t mans[3] = {0x000001u, 0x400000u, 0x7FFFFFu};
    for (int f = 0; f < 2; f++) {
        QFormat fmt = f ? Q_E5M2 : Q_E4M3;
        int emax = f ? FP8C_E5M2_EMAX : FP8C_E4M3_EMAX;
        for (uint32_t e = 0; e < 255; e++)
            for (int mi = 0; mi < 3; mi++) {
                uint32_t bits = e << 23 | mans[mi];
                float amax, x[32] = {0};
                memcpy(&amax, &bits, sizeof amax);
                x[7] = -amax;
                uint8_t q[32], e8;
                float sinv;
                q_quantize(q, &sinv, &e8, x, 1, 32, 1, 32, fmt, 1, 0.0f);
                uint8_t want = fp8c_f32_to_e8m0_floor(ldexpf(amax, -emax));
                CHECKF(e8 == want, "fmt %d amax bits 0x%08X: E8M0 %u, want %u", f, bits, e8, want);
                CHECKF(same_bits(sinv, fp8c_e8m0_to_f32(want)), "fmt %d amax bits 0x%08X: scale %g", f, bits,
                       (double)sinv);
            }
    }
}

static void case_mx_e2m1(void)
{
    /* E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (codes 0-7, sign 0x8); emax 2.
     *   row 0 {3, 1, -0.7, 0.1}: floor(log2 3) = 1, X = 2^(1-2) = 0.5, E8M0 126
     *         3/X = 6 -> 7;  1/X = 2 -> 4;  -0.7/X = -1.4 -> -1.5 -> B;  0.1/X = 0.2 -> 0 -> 0
     *   row 1 {5, -5.5}: floor(log2 5.5) = 2, X = 1, E8M0 127
     *         5: midpoint of 4 (code 6, mantissa 0) and 6 (code 7), even -> 6;  -5.5 -> -6 -> F */
    float x[64] = {0};
    x[0] = 3.0f;
    x[1] = 1.0f;
    x[2] = -0.7f;
    x[3] = 0.1f;
    x[32] = 5.0f;
    x[33] = -5.5f;
    uint8_t q[64];
    uint8_t e8[2];
    q_quantize(q, NULL, e8, x, 2, 32, 1, 32, Q_E2M1, 1, 0.0f);
    CHECK(e8[0] == 126 && e8[1] == 127);
    CHECK(q[0] == 0x7 && q[1] == 0x4 && q[2] == 0xB && q[3] == 0x0);
    CHECK(q[32] == 0x6 && q[33] == 0xF);
    float y[64];
    q_dequantize(y, q, NULL, e8, 2, 32, 1, 32, Q_E2M1, 1);
    CHECK(y[0] == 3.0f && y[1] == 1.0f && y[2] == -0.75f && y[3] == 0.0f);
    CHECK(y[32] == 4.0f && y[33] == -6.0f);
}

/* ---- 9. margin and power-of-two rounding ------------------------------------------ */

static void case_margin_pow2(void)
{
    int bad = 7; /* must stay untouched on good amaxes */
    /* 448 / 3 = 149.33333; margin 1 halves it, margin -1 doubles it (exact). */
    CHECK(q_compute_scale(3.0f, 448.0f, 0, 0, 1.0f, &bad) == 149.33333f);
    CHECK(q_compute_scale(3.0f, 448.0f, 1, 0, 1.0f, &bad) == 74.666664f);
    CHECK(q_compute_scale(3.0f, 448.0f, -1, 0, 1.0f, &bad) == 298.66666f);
    /* pow2 rounds down: 149.33 -> 128; with margin 2, 37.33 -> 32; 448/448 = 1 stays;
     * 448/5 = 89.6 -> 64; 448/0.875 = 512 stays; E5M2 57344/3 = 19114.7 -> 16384. */
    CHECK(q_compute_scale(3.0f, 448.0f, 0, 1, 1.0f, &bad) == 128.0f);
    CHECK(q_compute_scale(3.0f, 448.0f, 2, 1, 1.0f, &bad) == 32.0f);
    CHECK(q_compute_scale(448.0f, 448.0f, 0, 1, 1.0f, &bad) == 1.0f);
    CHECK(q_compute_scale(5.0f, 448.0f, 0, 1, 1.0f, &bad) == 64.0f);
    CHECK(q_compute_scale(0.875f, 448.0f, 0, 1, 1.0f, &bad) == 512.0f);
    CHECK(q_compute_scale(3.0f, 57344.0f, 0, 1, 1.0f, &bad) == 16384.0f);
    /* A subnormal amax: 448 / 2^-149 overflows float -> FLT_MAX; pow2 -> 2^127. */
    CHECK(q_compute_scale(0x1p-149f, 448.0f, 0, 0, 1.0f, &bad) == FLT_MAX);
    CHECK(q_compute_scale(0x1p-149f, 448.0f, 0, 1, 1.0f, &bad) == 0x1p127f);
    CHECK(bad == 7);
}

/* ---- 10. amax zero, NaN, Inf ------------------------------------------------------ */

static void case_amax_zero_nan(void)
{
    const float z[2] = {0.0f, -0.0f};
    const float v[3] = {1.0f, -5.0f, 2.0f};
    const float n[3] = {1.0f, NAN, INFINITY};
    const float i[2] = {1.0f, -INFINITY};
    CHECK(q_amax(z, 2) == 0.0f);
    CHECK(q_amax(v, 3) == 5.0f);
    CHECK(isnan(q_amax(n, 3))); /* NaN wins over Inf */
    CHECK(isinf(q_amax(i, 2)));
    CHECK(q_amax(v, 0) == 0.0f);
    /* long runs (the vector chains, several chunks, threads): the largest magnitude planted at
     * each of a sweep of positions, lanes and chains included, then a NaN and an Inf */
    enum { N = 70001 };
    float *big = malloc(N * sizeof *big);
    for (int k = 0; k < N; k++)
        big[k] = (float)((k * 37) % 1000) * ((k & 1) ? -1e-3f : 1e-3f);
    for (int pos = 0; pos < N; pos += 997) {
        float keep = big[pos];
        big[pos] = (pos & 2) ? -7.25f : 7.25f;
        CHECKF(q_amax(big, N) == 7.25f, "max planted at %d: got %g", pos, (double)q_amax(big, N));
        big[pos] = keep;
    }
    big[N - 1] = INFINITY;
    CHECK(isinf(q_amax(big, N)));
    big[12345] = NAN;
    CHECK(isnan(q_amax(big, N)));
    free(big);

    int bad = 0;
    CHECK(q_compute_scale(0.0f, 448.0f, 0, 0, 1.0f, &bad) == 1.0f && bad == 1);
    bad = 0;
    CHECK(q_compute_scale(NAN, 448.0f, 0, 0, 2.5f, &bad) == 2.5f && bad == 1);
    bad = 0;
    CHECK(q_compute_scale(INFINITY, 448.0f, 0, 1, 3.0f, &bad) == 3.0f && bad == 1);

    /* All-zero tiles: scale_inv 1, codes 0. */
    float zero[8] = {0};
    uint8_t q[8];
    memset(q, 0xAA, sizeof q);
    float sinv[2] = {-1, -1};
    CHECK(q_quantize(q, sinv, NULL, zero, 2, 4, 1, 4, Q_E4M3, 0, 0.0f) == 0.0f);
    CHECK(sinv[0] == 1.0f && sinv[1] == 1.0f);
    for (int k = 0; k < 8; k++)
        CHECK(q[k] == 0x00);

    /* A non-finite amax keeps the safe scale 1 for the tile; elements still encode:
     * 1 -> 0x38, NaN -> 0x7F, Inf -> 448 (0x7E), -2 -> 1.1000.000 = 0xC0. */
    const float bad_x[4] = {1.0f, NAN, INFINITY, -2.0f};
    const uint8_t want[4] = {0x38, 0x7F, 0x7E, 0xC0};
    float s = -1.0f;
    CHECK(isnan(q_quantize(q, &s, NULL, bad_x, 1, 4, 0, 0, Q_E4M3, 0, 0.0f)));
    CHECK(s == 1.0f);
    CHECK(codes_mismatch(q, want, 4) < 0);

    /* The same per tile: 1 x 4 tiles, tile 0 holds a NaN, tile 1 an Inf, tile 2 is finite.
     *   tile 0 {2, NaN, 1, 0.5}: safe scale 1 -> 0x40, 0x7F, 0x38, 0x30 (2^1, NaN, 2^0, 2^-1)
     *   tile 1 {-Inf, 1, 0, 0}:   safe scale 1 -> 0xFE, 0x38, 0x00, 0x00
     *   tile 2 {7, 0, 0, 0}:      s = 64       -> 0x7E, 0x00, 0x00, 0x00 */
    const float tiled[12] = {2.0f, NAN, 1.0f, 0.5f, -INFINITY, 1.0f, 0.0f, 0.0f, 7.0f, 0.0f, 0.0f, 0.0f};
    const uint8_t want_tiled[12] = {0x40, 0x7F, 0x38, 0x30, 0xFE, 0x38, 0x00, 0x00, 0x7E, 0x00, 0x00, 0x00};
    const float want_tiled_sinv[3] = {1.0f, 1.0f, 0.015625f};
    uint8_t q12[12];
    float s3[3];
    CHECK(isnan(q_quantize(q12, s3, NULL, tiled, 1, 12, 1, 4, Q_E4M3, 0, 0.0f)));
    CHECK(codes_mismatch(q12, want_tiled, 12) < 0);
    CHECK(floats_mismatch(s3, want_tiled_sinv, 3) < 0);

    /* Empty tensor: amax 0, the per-tensor scale_inv is the safe 1. */
    s = -1.0f;
    CHECK(q_quantize(q, &s, NULL, bad_x, 0, 4, 0, 0, Q_E4M3, 0, 0.0f) == 0.0f && s == 1.0f);
}

/* ---- 11. delayed scaling ---------------------------------------------------------- */

/* amax per step, shared by the two algorithm cases. */
static const float delayed_amax[11] = {4.0f, 16.0f, 2.0f, 7.0f, 1.0f, 0.0f, NAN, 0.5f, 2.0f, 3.5f, 1.75f};

static void run_delayed(int algo, const float *want_scale, int64_t want_bad)
{
    float hist[3];
    QDelayed d;
    q_delayed_init(&d, hist, 3, algo, 0, 2);
    CHECK(d.scale == 1.0f && d.scale_inv == 1.0f && d.bad_steps == 0);
    for (int step = 0; step < 11; step++) {
        q_delayed_update(&d, delayed_amax[step], step);
        CHECKF(d.scale == want_scale[step], "step %d: scale %g, want %g", step, (double)d.scale,
               (double)want_scale[step]);
        CHECKF(d.scale_inv == 1.0f / want_scale[step], "step %d: scale_inv %g", step, (double)d.scale_inv);
    }
    CHECKF(d.bad_steps == want_bad, "bad_steps %lld", (long long)d.bad_steps);
}

static void case_delayed_max(void)
{
    /* len 3, interval 2: recompute on even steps from the max of the last 3 amaxes.
     *   step 0: [4]          -> 448/4  = 112
     *   step 1: (no recompute)        112
     *   step 2: [4,16,2]     -> 448/16 = 28
     *   step 3:                        28
     *   step 4: [2,7,1]      -> 448/7  = 64
     *   step 5: (amax 0 recorded)      64
     *   step 6: [1,0,NaN]    -> NaN: keep 64, bad 1
     *   step 7:                        64
     *   step 8: [NaN,0.5,2]  -> NaN: keep 64, bad 2
     *   step 9:                        64
     *   step 10: [2,3.5,1.75]-> 448/3.5 = 128 */
    const float want[11] = {112, 112, 28, 28, 64, 64, 64, 64, 64, 64, 128};
    run_delayed(0, want, 2);
}

static void case_delayed_most_recent(void)
{
    /* Same amaxes, the latest one on even steps:
     *   step 0: 4 -> 112;  step 2: 2 -> 224;  step 4: 1 -> 448;  step 5's 0 is never
     *   used (odd step);  step 6: NaN -> keep 448, bad 1;  step 8: 2 -> 224;
     *   step 10: 1.75 -> 256. */
    const float want[11] = {112, 112, 224, 224, 448, 448, 448, 448, 224, 224, 256};
    run_delayed(1, want, 1);
}

static void case_delayed_margin_fmt(void)
{
    /* E5M2 with margin 1, interval 1: step 0 amax 4 -> 57344 / 4 / 2 = 7168. */
    float hist[4];
    QDelayed d;
    q_delayed_init(&d, hist, 4, 0, 1, 1);
    q_delayed_update_fmt(&d, 4.0f, 0, Q_E5M2);
    CHECK(d.scale == 7168.0f);

    /* A zero first amax keeps the safe scale 1 and counts; then 8 -> 448 / 8 = 56. */
    float h2[2];
    QDelayed e;
    q_delayed_init(&e, h2, 2, 0, 0, 1);
    q_delayed_update(&e, 0.0f, 0);
    CHECK(e.scale == 1.0f && e.bad_steps == 1);
    q_delayed_update(&e, 8.0f, 1);
    CHECK(e.scale == 56.0f && e.scale_inv == 1.0f / 56.0f && e.bad_steps == 1);
}

/* ---- 12. the dequantization error bound ------------------------------------------- */

/* What the bound needs to know of a format: m mantissa bits, emax = floor(log2 fmax). */
struct fmt_info {
    QFormat f;
    float fmax;
    int m;
    int emax;
};

static const struct fmt_info fmts[3] = {
    {Q_E4M3, 448.0f, 3, 8},
    {Q_E5M2, 57344.0f, 2, 15},
    {Q_E2M1, 6.0f, 1, 2},
};

static uint64_t lcg_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [-1, 1), 24 bits. */
static float lcg_unit(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int32_t)(lcg_state >> 40) - (1 << 23)) * 0x1p-23f;
}

/* Values over ~20 binades, one in 17 exactly zero, so that tiles see saturation
 * candidates, normals, subnormals after scaling, and zeros. */
static void fill_random(float *x, int n)
{
    for (int k = 0; k < n; k++) {
        float u = lcg_unit();
        int e = (int)((lcg_unit() + 1.0f) * 10.0f) - 14; /* -14 .. 6 */
        x[k] = (k % 17 == 5) ? 0.0f : ldexpf(u, e);
    }
}

/* Check |fake_quant(x) - x| element by element against the bound of its tile,
 * tiles laid over the (transposed if asked) matrix, tile amax computed here.
 *
 * Derivation, current scaling (s = fmax / a, a the tile amax): |x*s| <= fmax,
 * so x*s never saturates beyond rounding; round-to-nearest moves it by at most
 * half the spacing of the binade it lies in, and the largest binade [2^emax,
 * fmax] has spacing 2^(emax - m). In code space the error is <= 2^(emax-m-1),
 * which is <= fmax * 2^-(m+1) because 2^emax <= fmax; divided by s:
 *     |err| <= a/fmax * 2^(emax-m-1)   (<= a * 2^-(m+1): a/16 E4M3, a/8 E5M2, a/4 E2M1)
 * Subnormal results have the smallest spacing, so they are covered too. The
 * float products x*s and q*(1/s) and the rounding of s and 1/s add relative
 * errors of a few 2^-24; a * 2^-20 covers them.
 * For an element whose scaled value is normal the relative form also holds:
 *     |err| <= |x| * 2^-(m+1) (+ the same float slack).
 *
 * MX (X = 2^(floor(log2 a) - emax), power of two, so every product is exact):
 * a/X lies in [2^emax, 2^(emax+1)), which may exceed fmax; the error in code
 * space is the larger of the rounding error 2^(emax-m-1) and the clamp error
 * 2^(emax+1) - fmax (E4M3: max(16, 64) = 64, E5M2: max(4096, 8192) = 8192,
 * E2M1: max(1, 2) = 2); times X, with no slack. */
static void check_bound(const float *x, int R, int C, int tr, int tc, const struct fmt_info *fi, int e8m0,
                        int transpose, const char *what)
{
    int VR = transpose ? C : R, VC = transpose ? R : C; /* the quantized matrix */
    int er = tr > 0 ? tr : VR, ec = tc > 0 ? tc : VC;
    float *out = malloc(sizeof(float) * (size_t)R * (size_t)C); /* (VR, VC) */
    if (!out) {
        CHECKF(0, "out of memory");
        return;
    }
    q_fake_quant(out, x, R, C, tr, tc, fi->f, e8m0, 0.0f, transpose);
    for (int bi = 0; bi * er < VR; bi++) {
        for (int bj = 0; bj * ec < VC; bj++) {
            int i1 = bi * er + er < VR ? bi * er + er : VR;
            int j1 = bj * ec + ec < VC ? bj * ec + ec : VC;
            double a = 0.0;
            for (int i = bi * er; i < i1; i++)
                for (int j = bj * ec; j < j1; j++)
                    a = fmax(a, fabs(transpose ? x[j * C + i] : x[i * C + j]));
            double tol;
            double s = 0.0;
            if (e8m0) {
                int e;
                frexp(a, &e); /* a = f * 2^e, f in [0.5, 1): floor(log2 a) = e - 1 */
                double X = ldexp(1.0, e - 1 - fi->emax);
                double half = ldexp(1.0, fi->emax - fi->m - 1);
                double clamp = ldexp(1.0, fi->emax + 1) - fi->fmax;
                tol = (half > clamp ? half : clamp) * X;
            } else {
                tol = a / fi->fmax * ldexp(1.0, fi->emax - fi->m - 1) + a * 0x1p-20;
                s = a > 0.0 ? fi->fmax / a : 1.0;
            }
            for (int i = bi * er; i < i1; i++) {
                for (int j = bj * ec; j < j1; j++) {
                    double xv = transpose ? x[j * C + i] : x[i * C + j];
                    double err = fabs((double)out[i * VC + j] - xv);
                    CHECKF(err <= tol, "%s: (%d,%d) x=%.9g out=%.9g err %.3g > %.3g", what, i, j, xv,
                           (double)out[i * VC + j], err, tol);
                    /* relative form, current scaling, scaled value in the normal range */
                    double min_normal = ldexp(1.0, fi->f == Q_E4M3 ? -6 : fi->f == Q_E5M2 ? -14 : 0);
                    if (!e8m0 && fabs(xv) * s >= min_normal)
                        CHECKF(err <= fabs(xv) * ldexp(1.0, -fi->m - 1) + a * 0x1p-20,
                               "%s: (%d,%d) relative err %.3g of %.9g", what, i, j, err, xv);
                }
            }
        }
    }
    free(out);
}

static void case_error_bound(void)
{
    enum { R = 37, C = 53 };
    static float x[R * C];
    fill_random(x, R * C);
    const int tiles[5][2] = {{0, 0}, {1, 8}, {4, 4}, {3, 5}, {1, 32}};
    char what[96];
    for (int f = 0; f < 3; f++) {
        for (int t = 0; t < 5; t++) {
            for (int tp = 0; tp < 2; tp++) {
                snprintf(what, sizeof what, "fmt %d tile %dx%d%s", f, tiles[t][0], tiles[t][1],
                         tp ? " transposed" : "");
                check_bound(x, R, C, tiles[t][0], tiles[t][1], &fmts[f], 0, tp, what);
            }
        }
        snprintf(what, sizeof what, "fmt %d MX 1x32", f);
        check_bound(x, R, C, 1, 32, &fmts[f], 1, 0, what);
        snprintf(what, sizeof what, "fmt %d MX 1x32 transposed", f);
        check_bound(x, R, C, 1, 32, &fmts[f], 1, 1, what);
    }
}

/* ---- 13. fake quantization == dequantize(quantize(x)) ----------------------------- */

static void case_fake_quant_matches(void)
{
    enum { R = 19, C = 45 };
    static float x[R * C], xt[C * R], fake[R * C], deq[R * C];
    static uint8_t q[R * C], e8[R * C];
    static float sinv[R * C + 64];
    fill_random(x, R * C);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            xt[j * R + i] = x[i * C + j];
    const int tiles[6][2] = {{0, 0}, {1, 8}, {4, 4}, {3, 5}, {0, 16}, {1, 32}};
    for (int f = 0; f < 3; f++) {
        for (int t = 0; t < 6; t++) {
            for (int mx = 0; mx < 2; mx++) {
                for (int tp = 0; tp < 2; tp++) {
                    int tr = tiles[t][0], tc = tiles[t][1];
                    const float *src = tp ? xt : x;
                    int r = tp ? C : R, c = tp ? R : C;
                    float given = (t == 0 && !mx) ? 3.0f : 0.0f; /* also a static scale */
                    float a1 = q_quantize(q, sinv, e8, src, r, c, tr, tc, fmts[f].f, mx, given);
                    q_dequantize(deq, q, sinv, e8, r, c, tr, tc, fmts[f].f, mx);
                    float a2 = q_fake_quant(fake, x, R, C, tr, tc, fmts[f].f, mx, given, tp);
                    int k = floats_mismatch(fake, deq, R * C);
                    CHECKF(k < 0 && a1 == a2, "fmt %d tile %dx%d mx %d transpose %d: element %d", f, tr, tc, mx,
                           tp, k);
                }
            }
        }
    }
}

/* ---- 14. scale counts ------------------------------------------------------------- */

static void case_scale_counts(void)
{
    CHECK(q_scale_count(2, 8, 0, 0) == 1);
    CHECK(q_scale_count(2, 8, 1, 4) == 4);            /* VEC: R * L = 2 * 2 */
    CHECK(q_scale_count(5, 9, 4, 4) == 8);            /* BLK: L4 * ceil(R/T) = 4 * 2 */
    CHECK(q_scale_count(4, 4, 4, 4) == 4);            /* L = 1 still pads to 4 */
    CHECK(q_scale_count(256, 640, 128, 128) == 16);   /* L = 5 -> L4 = 8, 2 block rows */
    CHECK(q_scale_count(5, 9, 2, 4) == 9);            /* row-major 3 x 3 */
    CHECK(q_scale_count(5, 9, 0, 4) == 3);            /* tr 0 = all rows: 1 x 3 */
    CHECK(q_scale_count(3, 100, 1, 32) == 12);        /* VEC: 3 * 4 */
    CHECK(q_mx_scale_count(3, 100, 1, 32) == 12);
}

/* The row encoder of q_quantize (eight lanes at a time, quant.c's ENCODE8) is the exported
 * conversion bit for bit: every 4093rd float bit pattern (about a million, each landing in some
 * lane position; NaNs, infinities, subnormals, ties and overflows included) quantized as one row
 * with the given scale 1 (x * 1 is x), E4M3 and E5M2, against fp8c_f32_to_e4m3/e5m2(x, saturate),
 * whose every input test_fp8 checks; then every pattern whose low 16 bits are one of 0, 1,
 * 0x7FFF, 0x8000, 0x8001, 0xFFFF (all high halves: every exact tie and its neighbours in every
 * binade, which a plain stride misses). The row length is not a multiple of 8: the tail too. */
static void case_row_encoder_sweep(void)
{
    enum { NSTRIDE = (int)(4294967296.0 / 4093) + 1, NS = NSTRIDE + 6 * 65536 };
    static const uint32_t low[6] = {0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF};
    float *x = malloc((size_t)NS * sizeof *x);
    uint32_t *pat = malloc((size_t)NS * sizeof *pat);
    uint8_t *codes = malloc(NS);
    float sinv = 0;
    for (int64_t k = 0; k < NS; k++) {
        pat[k] = k < NSTRIDE ? (uint32_t)(k * 4093) : (uint32_t)((k - NSTRIDE) / 6) << 16 | low[(k - NSTRIDE) % 6];
        memcpy(&x[k], &pat[k], sizeof pat[k]);
    }
    for (int f = 0; f < 2; f++) {
        QFormat fmt = f ? Q_E5M2 : Q_E4M3;
        q_quantize(codes, &sinv, NULL, x, 1, NS, 0, 0, fmt, 0, 1.0f);
        int64_t bad = 0, first = -1;
        for (int64_t k = 0; k < NS; k++) {
            uint8_t want = f ? fp8c_f32_to_e5m2(x[k], 1) : fp8c_f32_to_e4m3(x[k], 1);
            if (codes[k] != want && bad++ == 0)
                first = k;
        }
        CHECKF(bad == 0, "%s: %lld of %d codes differ, first at bits 0x%08x", f ? "e5m2" : "e4m3", (long long)bad, NS,
               first >= 0 ? (unsigned)pat[first] : 0u);
    }
    free(x), free(pat), free(codes);
}

/* The reference's tile amax: max |t[j]| over n elements, or 0 where no scale can come from it
 * (any NaN, an infinity, or all zero): the cases that keep the safe scale 1. */
static float usable_amax(const float *t, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) {
        if (isnan(t[j]) || isinf(t[j]))
            return 0.0f;
        amax = fabsf(t[j]) > amax ? fabsf(t[j]) : amax;
    }
    return amax;
}

/* MX rows (1 x 32 tiles across whole rows: the AVX-512 path where the CPU has it, the generic
 * one in test_quant_v3) against a scalar reference written here from the OCP rule: a tile's amax;
 * no usable amax (0, Inf, NaN) keeps the scale 1 (E8M0 127); else E8M0 = floor(log2(amax
 * 2^-emax)) and each code is the exported saturating encoder of x / 2^(E8M0 - 127). Two kinds of
 * rows: raw float bit patterns (a 4093 stride over all 2^32, so NaN, Inf, subnormals and both
 * signs land in every lane), and tiles whose elements span 40 binades below a random top
 * exponent (codes over the whole E4M3 / E5M2 range, subnormals and rounding ties included). The
 * same rows then in 1 x 128 tiles with float scales. */
static void case_row_tiles_sweep(void)
{
    enum { C = 256, R = 4096, N = R * C };
    float *x = malloc((size_t)N * sizeof *x);
    uint8_t *codes = malloc(N), *e8 = malloc(N / 32);
    uint32_t st = 12345;
    for (int64_t k = 0; k < N; k++) {
        uint32_t bits;
        if (k < N / 2) {
            bits = (uint32_t)(k * 4093u * 257u);
        } else {
            int64_t tile = k / 32;
            int top = 20 + (int)((uint32_t)(tile * 2654435761u) >> 24) % 200; /* top biased exponent */
            st = st * 1664525u + 1013904223u;
            int e = top - (int)(st >> 27) - (int)((st >> 22) & 7); /* up to 38 binades below */
            bits = (st & 0x80000000u) | (uint32_t)(e > 0 ? e : 0) << 23 | ((st >> 1) & 0x7FFFFFu);
        }
        memcpy(&x[k], &bits, sizeof bits);
    }
    for (int f = 0; f < 2; f++) {
        QFormat fmt = f ? Q_E5M2 : Q_E4M3;
        int emax = f ? FP8C_E5M2_EMAX : FP8C_E4M3_EMAX;
        q_quantize(codes, NULL, e8, x, R, C, 1, 32, fmt, 1, 0.0f);
        int64_t bad = 0, first = -1, bad_scale = 0;
        for (int64_t tile = 0; tile < N / 32; tile++) {
            const float *t = x + tile * 32;
            float amax = usable_amax(t, 32);
            uint8_t want_e8 = 127;
            if (amax > 0.0f)
                want_e8 = fp8c_f32_to_e8m0_floor(ldexpf(amax, -emax));
            bad_scale += e8[tile] != want_e8;
            float s = 1.0f / fp8c_e8m0_to_f32(want_e8);
            for (int j = 0; j < 32; j++) {
                uint8_t want = f ? fp8c_f32_to_e5m2(t[j] * s, 1) : fp8c_f32_to_e4m3(t[j] * s, 1);
                if (codes[tile * 32 + j] != want && bad++ == 0)
                    first = tile * 32 + j;
            }
        }
        CHECKF(bad_scale == 0, "%s: %lld E8M0 scales differ", f ? "e5m2" : "e4m3", (long long)bad_scale);
        CHECKF(bad == 0, "%s: %lld of %d codes differ, first at element %lld", f ? "e5m2" : "e4m3", (long long)bad, N,
               (long long)first);
    }
    /* the same rows in 1 x 128 tiles with float scales (DeepSeek-V3's activations): s = fmax /
     * amax (FLT_MAX where that overflows), 1 where amax is 0, Inf or NaN; scale_inv = 1 / s */
    float *sinv = malloc((size_t)(N / 128) * sizeof *sinv);
    for (int f = 0; f < 2; f++) {
        QFormat fmt = f ? Q_E5M2 : Q_E4M3;
        float fmax = f ? 57344.0f : 448.0f;
        q_quantize(codes, sinv, NULL, x, R, C, 1, 128, fmt, 0, 0.0f);
        int64_t bad = 0, first = -1, bad_scale = 0;
        for (int r = 0; r < R; r++)
            for (int b = 0; b < C / 128; b++) {
                const float *t = x + (int64_t)r * C + b * 128;
                float amax = usable_amax(t, 128);
                float sc = 1.0f;
                if (amax > 0.0f) {
                    sc = fmax / amax;
                    sc = isinf(sc) ? FLT_MAX : sc;
                }
                bad_scale += !same_bits(sinv[r + (int64_t)b * R], 1.0f / sc); /* the 1 x T layout: column b, row r */
                for (int j = 0; j < 128; j++) {
                    uint8_t want = f ? fp8c_f32_to_e5m2(t[j] * sc, 1) : fp8c_f32_to_e4m3(t[j] * sc, 1);
                    int64_t at = (int64_t)r * C + b * 128 + j;
                    if (codes[at] != want && bad++ == 0)
                        first = at;
                }
            }
        CHECKF(bad_scale == 0, "%s 1x128: %lld scales differ", f ? "e5m2" : "e4m3", (long long)bad_scale);
        CHECKF(bad == 0, "%s 1x128: %lld of %d codes differ, first at element %lld", f ? "e5m2" : "e4m3",
               (long long)bad, N, (long long)first);
    }
    free(x), free(codes), free(e8), free(sinv);
}

/* --exhaustive (.ci/run): the row encoder against fp8c_f32_to_e4m3/e5m2 on every one of the 2^32
 * float bit patterns, in rows of 2^20 (about 50 s on one core). */
static void case_row_encoder_exhaustive(void)
{
    enum { N = 1 << 20 };
    float *x = malloc((size_t)N * sizeof *x);
    uint8_t *codes = malloc(N);
    float sinv = 0;
    for (int f = 0; f < 2; f++) {
        QFormat fmt = f ? Q_E5M2 : Q_E4M3;
        int64_t bad = 0;
        uint32_t first = 0;
        for (uint64_t base = 0; base < (1ull << 32); base += N) {
            for (uint32_t k = 0; k < N; k++) {
                uint32_t p = (uint32_t)(base + k);
                memcpy(&x[k], &p, sizeof p);
            }
            q_quantize(codes, &sinv, NULL, x, 1, N, 0, 0, fmt, 0, 1.0f);
            for (uint32_t k = 0; k < N; k++) {
                uint8_t want = f ? fp8c_f32_to_e5m2(x[k], 1) : fp8c_f32_to_e4m3(x[k], 1);
                if (codes[k] != want && bad++ == 0)
                    first = (uint32_t)(base + k);
            }
        }
        CHECKF(bad == 0, "%s: %lld of 2^32 codes differ, first at bits 0x%08x", f ? "e5m2" : "e4m3", (long long)bad, (unsigned)first);
    }
    free(x), free(codes);
}

/* q_dequantize (q_decode_rect, what the quantized GEMM's packing decodes with): every code of
 * E4M3, E5M2 and E2M1 in every position of an 8-element group whose other elements hold 1.0's
 * code, and a tail past the last whole group, under scale inverses that keep, scale up and scale into the subnormal range, against
 * fp8c_*_to_f32(code) * sinv bit for bit (NaN bits included). */
static void case_decode_every_code_every_lane(void)
{
    enum { N = 256 * 8 * 8 + 5 };
    static const float sinvs[] = {1.0f, 0.5f, 3.7e-5f, 1e30f, 1e-30f, 0x1p-120f};
    uint8_t *codes = malloc(N);
    float *out = malloc((size_t)N * sizeof *out);
    for (int f = 0; f < 3; f++) {
        QFormat fmt = f == 0 ? Q_E4M3 : f == 1 ? Q_E5M2 : Q_E2M1;
        uint8_t one = f == 0 ? 0x38 : f == 1 ? 0x3C : 0x02, ncodes = f == 2 ? 16 : 0;
        for (int k = 0; k < N; k++) {
            int g = k / 8, lane = k % 8, code = (g / 8) & 0xFF; /* group g: code in lane g % 8 */
            codes[k] = lane == g % 8 ? (uint8_t)(ncodes ? code % ncodes : code) : one;
        }
        for (size_t si = 0; si < sizeof sinvs / sizeof *sinvs; si++) {
            float sinv = sinvs[si];
            q_dequantize(out, codes, &sinv, NULL, 1, N, 0, 0, fmt, 0);
            int bad = -1;
            for (int k = 0; k < N && bad < 0; k++) {
                float want = (f == 0 ? fp8c_e4m3_to_f32(codes[k]) : f == 1 ? fp8c_e5m2_to_f32(codes[k])
                                                                           : fp8c_e2m1_to_f32(codes[k])) * sinv;
                if (!same_bits(out[k], want))
                    bad = k;
            }
            CHECKF(bad < 0, "format %d, sinv %g: element %d (code 0x%02x) decodes to %g", f, (double)sinv, bad,
                   bad >= 0 ? codes[bad] : 0, bad >= 0 ? (double)out[bad] : 0.0);
        }
    }
    free(codes), free(out);
}

/* q_quantize_transposed against q_quantize of an explicit transpose, bit for bit (codes, float
 * and E8M0 scales, the returned amax): column counts around multiples of 8 and 16 (the fast
 * paths' lanes; 16 columns and whole tiles take the AVX-512 path where the CPU has it), row counts around the tile length, 1 x T tiles (the fast path) and BLK, per-tensor and
 * MX tilings (the strided path), current and given scales, E4M3, E5M2 and E2M1, on data with a
 * zero column, a NaN, an infinity and values past the formats' range. */
static void case_quantize_transposed(void)
{
    static const int shapes[][2] = {{1, 1}, {7, 9}, {128, 16}, {130, 24}, {257, 19}, {64, 8}, {300, 41}, {256, 48}};
    static const int tiles[][3] = {{1, 128, 0}, {1, 32, 0}, {1, 5, 0}, {4, 4, 0}, {8, 8, 0}, {16, 16, 0}, {128, 128, 0},
                                   {0, 0, 0}, {1, 32, 1}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int R = shapes[si][0], C = shapes[si][1];
        float *x = malloc((size_t)R * C * sizeof *x), *xt = malloc((size_t)R * C * sizeof *xt);
        uint32_t st = 12345u + (uint32_t)si;
        for (int k = 0; k < R * C; k++) {
            st = st * 1664525u + 1013904223u;
            x[k] = ((float)(st >> 8) / 16777216.0f - 0.5f) * (k % 11 == 0 ? 3e5f : 4.0f);
        }
        for (int i = 0; i < R; i++)
            x[i * C + (C > 3 ? 3 : 0)] = 0.0f; /* a zero column */
        if (R * C > 40)
            x[37] = NAN, x[R * C - 2] = -INFINITY;
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++)
                xt[(size_t)j * R + i] = x[(size_t)i * C + j];
        for (size_t ti = 0; ti < sizeof tiles / sizeof *tiles; ti++) {
            int tr = tiles[ti][0], tc = tiles[ti][1], mx = tiles[ti][2];
            size_t ns = q_scale_count(C, R, tr, tc), ne = q_mx_scale_count(C, R, tr, tc);
            for (int f = 0; f < 3; f++) {
                QFormat fmt = f == 0 ? Q_E4M3 : f == 1 ? Q_E5M2 : Q_E2M1;
                for (int g = 0; g < 2; g++) {
                    float given = g ? 3.5f : 0.0f;
                    uint8_t *c1 = malloc((size_t)R * C), *c2 = malloc((size_t)R * C);
                    float *s1 = calloc(ns, sizeof *s1), *s2 = calloc(ns, sizeof *s2);
                    uint8_t *e1 = calloc(ne, 1), *e2 = calloc(ne, 1);
                    float a1 = q_quantize(c1, s1, mx ? e1 : NULL, xt, C, R, tr, tc, fmt, mx, given);
                    float a2 = q_quantize_transposed(c2, s2, mx ? e2 : NULL, x, R, C, tr, tc, fmt, mx, given);
                    int bad = codes_mismatch(c2, c1, R * C);
                    CHECKF(bad < 0, "%dx%d tile %dx%d mx %d fmt %d given %g: code %d differs", R, C, tr, tc, mx, f,
                           (double)given, bad);
                    CHECKF(floats_mismatch(s2, s1, (int)ns) < 0 && memcmp(e1, e2, ne) == 0,
                           "%dx%d tile %dx%d mx %d fmt %d given %g: scales differ", R, C, tr, tc, mx, f, (double)given);
                    CHECKF(same_bits(a1, a2) || (isnan(a1) && isnan(a2)), "%dx%d tile %dx%d: amax %g vs %g", R, C, tr,
                           tc, (double)a2, (double)a1);
                    free(c1), free(c2), free(s1), free(s2), free(e1), free(e2);
                }
            }
        }
        free(x), free(xt);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--exhaustive")) {
        RUN_CASE(case_row_encoder_exhaustive);
        CHECK_EXIT();
    }
    RUN_CASE(case_format_max);
    RUN_CASE(case_per_tensor_current_e4m3);
    RUN_CASE(case_per_tensor_current_e5m2);
    RUN_CASE(case_given_scale_saturates);
    RUN_CASE(case_vec_1x4);
    RUN_CASE(case_blk_4x4_ragged);
    RUN_CASE(case_rowmajor_2x4);
    RUN_CASE(case_transposed_copy);
    RUN_CASE(case_transpose_copy_equals_quantized_transpose);
    RUN_CASE(case_mx_e4m3);
    RUN_CASE(case_mx_e2m1);
    RUN_CASE(case_mx_scale_every_exponent);
    RUN_CASE(case_margin_pow2);
    RUN_CASE(case_amax_zero_nan);
    RUN_CASE(case_delayed_max);
    RUN_CASE(case_delayed_most_recent);
    RUN_CASE(case_delayed_margin_fmt);
    RUN_CASE(case_error_bound);
    RUN_CASE(case_fake_quant_matches);
    RUN_CASE(case_scale_counts);
    RUN_CASE(case_row_encoder_sweep);
    RUN_CASE(case_row_tiles_sweep);
    RUN_CASE(case_decode_every_code_every_lane);
    RUN_CASE(case_quantize_transposed);
    CHECK_EXIT();
}
