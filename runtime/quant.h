/* quant.h: scaling and quantization for the CPU reference backend.
 *
 * Owns the numerics contract of DESIGN.md section 6 above the single-value
 * conversions of fp8.h: how a scale is chosen (current, delayed, static, MX),
 * how a tensor is cut into scaling tiles, and where each tile's scale inverse
 * is stored. The layouts are the GPU path's (shared/notes/cuda-apis.md 1.7),
 * so a scale array filled here can be compared with, or uploaded for, cuBLASLt.
 * Depends on fp8.h and libc only; keeps no state (QDelayed is the caller's).
 *
 * Conventions:
 *   - q = encode(x * s) with saturation (satfinite), x ~= decode(q) * s_inv.
 *   - Codes are one byte per element; E2M1 codes sit in the low nibble (packing
 *     two per byte is the GPU upload's business, not this layer's).
 *   - Tiles are tr x tc; an extent <= 0 means "the whole dimension", so
 *     tr = tc = 0 is one per-tensor scale. Edge tiles are ragged (smaller).
 *   - A tile whose amax is 0 or non-finite gets the safe scale 1 (scale_inv 1,
 *     E8M0 code 127); its elements are still encoded (Inf saturates, NaN gives
 *     the format's NaN code) and the returned whole-tensor amax reports the
 *     problem to the caller, which counts it.
 *
 * Scale-inverse layouts (float scale_inv), R x C matrix, L = ceil(C / tc):
 *   per tensor (tr <= 0 and tc <= 0): scale_inv[0]
 *   VEC, 1 x T tiles (tr == 1):       scale_inv[i + b*R], row index fastest
 *                                     (R x L floats, cuBLASLt VEC128 "M-major")
 *   BLK, T x T blocks (tr == tc > 1): scale_inv[b + (i/T)*L4], L4 = L rounded up
 *                                     to a multiple of 4, padding entries 0,
 *                                     ceil(R/T) rows (cuBLASLt BLK128x128)
 *   other shapes (tr > 1 and tr != tc, or tr <= 0 < tc):
 *                                     row-major [ceil(R/tr)][L], scale_inv[(i/tr)*L + b]
 * E8M0 scales (MX) are always row-major [ceil(R/tr)][L]: [R][ceil(C/32)] for
 * the usual 1 x 32 tiles.
 */
#ifndef FP8C_RUNTIME_QUANT_H
#define FP8C_RUNTIME_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { Q_E4M3 = 0, Q_E5M2 = 1, Q_E2M1 = 2 } QFormat;

/* Largest finite magnitude: 448, 57344, 6. An out-of-range value is treated
 * as E4M3 (a caller bug, but never an out-of-bounds read). */
float q_format_max(QFormat f);

/* max |x| over n elements; NaN if any element is NaN (NaN wins over Inf), +Inf
 * if any is infinite. n <= 0 gives 0. */
float q_amax(const float *x, int64_t n);

/* scale = fmax / amax * 2^-margin (margin may be negative), optionally rounded
 * DOWN to a power of two (pow2 != 0). amax == 0 or non-finite: returns
 * prev_scale (the "safe scale": 1.0 on the first step) and sets *bad = 1;
 * otherwise *bad is untouched. A finite amax so small that fmax / amax
 * overflows gives FLT_MAX (2^127 with pow2), as TransformerEngine does. */
float q_compute_scale(float amax, float fmax, int margin, int pow2, float prev_scale, int *bad);

/* Quantize x (R x C, row-major) into codes (R x C) with tr x tc tiles.
 * Each tile's scale is fmax / amax(tile) (current scaling) unless
 * given_scale > 0 (finite), in which case every tile uses it (per-tensor
 * delayed or static scaling). scale_inv (q_scale_count floats, layouts above)
 * gets 1/s per tile and may be NULL. Returns the amax of the whole tensor.
 *
 * e8m0 != 0 (MX): the tile's scale inverse is X = 2^(floor(log2 amax) -
 * emax_elem) (OCP MX v1.0; 2^-127..2^127), stored as E8M0 codes in
 * scale_inv_e8m0 (q_mx_scale_count bytes, row-major, may be NULL); if scale_inv
 * is not NULL it also receives X as floats in the float layout. Elements are
 * encode(x / X), saturating: a block's largest element can exceed fmax and is
 * clamped, as the OCP rule intends. given_scale is ignored with e8m0 (MX is
 * always current scaling per block). */
float q_quantize(uint8_t *codes, float *scale_inv, uint8_t *scale_inv_e8m0, const float *x, int R, int C, int tr,
                 int tc, QFormat fmt, int e8m0, float given_scale);

/* q_quantize of the transpose of x (R x C, row-major) without the transposed copy: codes are
 * C x R and the tiles lie over the transpose (1 x T tiles run down x's columns: the column-wise
 * copy a weight-gradient GEMM reads). Bit for bit q_quantize(transpose(x)); returns its amax. */
float q_quantize_transposed(uint8_t *codes, float *scale_inv, uint8_t *scale_inv_e8m0, const float *x, int R, int C,
                            int tr, int tc, QFormat fmt, int e8m0, float given_scale);

/* Inverse: out (R x C) = decode(codes) * scale_inv of its tile, same layouts.
 * With e8m0 the scale comes from scale_inv_e8m0 when it is not NULL, else from
 * the float scale_inv. */
void q_dequantize(float *out, const uint8_t *codes, const float *scale_inv, const uint8_t *scale_inv_e8m0, int R,
                  int C, int tr, int tc, QFormat fmt, int e8m0);

/* A quantized matrix decoded on demand, a rectangle at a time: what the CPU's quantized GEMM
 * packs from instead of a dequantized copy. Element (i,j) is lut[codes[i*C + j]] times the
 * scale inverse at (i/tr)*s_row + (j/tc)*s_col of scale_inv (or of the E8M0 codes), which
 * covers every layout above; the values are q_dequantize's, bit for bit. */
typedef struct {
    const uint8_t *codes;      /* (R, C) row-major */
    const float *scale_inv;    /* NULL when the scales are read from scale_e8m0 */
    const uint8_t *scale_e8m0;
    int R, C, tr, tc;
    int fmt;                   /* the QFormat */
    int64_t s_row, s_col;
    float lut[256];            /* decode() of every code */
} QDecoder;

/* Same arguments as q_dequantize. */
void q_decoder_init(QDecoder *d, const uint8_t *codes, const float *scale_inv, const uint8_t *scale_inv_e8m0, int R,
                    int C, int tr, int tc, QFormat fmt, int e8m0);

/* out (nr, nc) with row stride ldo = rows [r0, r0+nr), columns [c0, c0+nc) of the decoded
 * matrix; the rectangle must lie inside it. */
void q_decode_rect(const QDecoder *d, float *out, int64_t ldo, int r0, int nr, int c0, int nc);

/* out = dequantize(quantize(x)) in one call, bit-identical to the two calls,
 * without scratch memory. With transpose != 0 the tensor is first transposed:
 * x is R x C, out is C x R and the tiles are laid over the transposed matrix,
 * so 1 x T tiles run along x's rows index (the column-wise copy the wgrad GEMM
 * reads). Returns the amax of x. */
float q_fake_quant(float *out, const float *x, int R, int C, int tr, int tc, QFormat fmt, int e8m0, float given_scale,
                   int transpose);

/* The column-wise copy (what quantize with transpose writes: C x R codes, tiles over the
 * transposed matrix) from the row-wise one (R x C), without the source values. Exact where the
 * transposed tiles hold the same elements as the row-wise ones, so that their amax, scale and
 * every code agree: square tr x tr blocks (BLK) and whole-tensor scaling; -1 for any other
 * tiling (1 x T, rows, MX). Scale entries the layout pads are not written. */
int q_transpose_copy(uint8_t *codes_t, float *scale_inv_t, const uint8_t *codes, const float *scale_inv, int R, int C,
                     int tr, int tc);

/* Number of float scale_inv entries for the layouts above (BLK padding
 * included). */
size_t q_scale_count(int R, int C, int tr, int tc);

/* Number of E8M0 scale bytes: ceil(R/tr) * ceil(C/tc). */
size_t q_mx_scale_count(int R, int C, int tr, int tc);

/* Delayed scaling state of one tensor (TransformerEngine DelayedScaling). */
typedef struct {
    int len;          /* amax history length */
    int algo;         /* 0: max over the history, 1: most recent amax */
    int margin;       /* scale = fmax / amax * 2^-margin */
    int interval;     /* recompute the scale on steps with step % interval == 0 */
    int pos;          /* next history slot to write (a ring) */
    int filled;       /* history entries written so far, up to len */
    float *history;   /* (len) the caller's storage */
    float scale;      /* the scale to quantize the next step with */
    float scale_inv;  /* 1 / scale */
    int64_t bad_steps; /* recompute steps whose amax was 0 or non-finite */
} QDelayed;

/* history_storage holds len floats (zeroed here). scale = scale_inv = 1.
 * len < 1 is taken as 1, interval < 1 as 1. */
void q_delayed_init(QDelayed *d, float *history_storage, int len, int algo, int margin, int interval);

/* Record this step's amax (raw, even if 0 or non-finite); on steps where
 * step % interval == 0 recompute scale from the history window: algo max =
 * the max over the entries written so far (NaN-propagating like q_amax, so a
 * NaN keeps the scale frozen until it leaves the window), most_recent = the
 * amax just recorded. An amax of 0 or non-finite keeps the previous scale and
 * counts one bad step. The scale is for E4M3 (fmax 448): QDelayed has no
 * format field, so tensors in another format use q_delayed_update_fmt. */
void q_delayed_update(QDelayed *d, float amax, int64_t step);

/* q_delayed_update with fmax = q_format_max(fmt) (E5M2 gradients, ...). */
void q_delayed_update_fmt(QDelayed *d, float amax, int64_t step, QFormat fmt);

#endif
