/* ref_attn.c: causal grouped-query attention of ref.h, tiled flash-style.
 *
 * Owns ref_attention_fwd/bwd and their general form with separate query-key and value head
 * dims (ref_attention_fwd_dims/bwd_dims: DeepSeek MLA has qk 192, v 128). Nothing T x T is
 * ever stored: queries are taken in blocks of BQ rows and keys in blocks of BK, and
 *   forward  per (b, h, query block): for each key block up to the diagonal, scores S = scale
 *            Q K^T (BQ x BK), an online softmax per row (running max m and sum l; the output
 *            row is rescaled by exp(m_old - m_new) once per block, not once per key), O += P V;
 *            then O /= l and lse = m + log(l);
 *   backward per (b, kv head), so that it owns dk and dv of that head and dq of its query
 *            heads and nothing is shared between threads: for each query head of the group,
 *            query block and key block up to the diagonal, P = exp(S - lse) recomputed from
 *            the saved lse, dP = dO V^T, dS = P (dP - D) scale with D = dO . O per row, then
 *            dq += dS K, dk += dS^T Q, dv += P^T dO.
 * Summation order (fixed, independent of the thread count): every score and dP element is a
 * sequential sum over the head dim d = 0..hd-1; l, O and dq sum over keys in ascending order
 * (O and l in per-block partial steps with the block's rescale); dk and dv sum over the
 * group's query heads in ascending order and, within a head, over query rows in ascending
 * order. The math is the one the CUDA templates implement; element values differ from a
 * one-key-at-a-time loop only by float rounding (the online rescale happens per block).
 *
 * Vectorized with GCC/Clang generic vectors. Scores are computed key-major, S^T = K Q^T, against
 * a (hd, BQ) panel of the query block (Q, and dO for dP^T in backward) transposed once per query
 * block, so K and V are read in place and a block's max, exponentials, sums, dS and causal mask
 * run across the BQ queries in vector lanes, each lane its own sequential scan over the keys.
 * The row updates (O and dq by rows, dk and dv by keys) keep the destinations in registers across
 * the keys or rows they sum, two rows at a time in 8-float vectors (x86-64-v3, AVX2 + FMA, and
 * the baseline, cloned as in ref_gemm.c) or four at a time in 16-float ones (x86-64-v4,
 * AVX-512, where ref_gemm_isa says the CPU has it: 32 vector registers); the two forms give the
 * same bits (lanes are independent and both contract to FMA; test_ops attention_isa_identical).
 * The exponentials of the scores are vmath.h's vexp8 (a vectorized Cephes expf, within 1 ulp of
 * the exact value); the once-per-block rescale factor and the log use libm.
 *
 * Must not: keep state between calls, print, exit or allocate (the per-block scratch is on
 * each thread's stack: O(BQ BK + BK hd) floats).
 */
#include "ref.h"
#include "vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#define OMP_PARALLEL_FOR_DYNAMIC _Pragma("omp parallel for schedule(dynamic, 1)")
#else
#define OMP_PARALLEL_FOR_DYNAMIC
#endif

#define BQ 32 /* query rows per block: a row of key-major scores is 4 vectors of 8 */
#define BK 32 /* keys per block */
/* The panels below are BQ wide and also serve key blocks; a query block's diagonal key block
 * starts at the same position (t0 = j0), so every query row sees at least one of its keys. */
_Static_assert(BQ == BK, "query and key blocks must match");

static int min_int(int a, int b) { return a < b ? a : b; }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif

/* Copy n rows (row i at src + i*stride, hd floats) into the (hd, BK) panel dst, columns n..BK
 * zero. */
static inline __attribute__((always_inline)) void transpose_block(float *dst, const float *src, int64_t stride, int n,
                                                                int hd)
{
    if (n == BK && hd % 8 == 0) { /* whole blocks: 8 x 8 at a time in registers */
        for (int d = 0; d < hd; d += 8)
            for (int j = 0; j < BK; j += 8) {
                vf8 r[8];
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    r[k] = vld8(src + (int64_t)(j + k) * stride + d);
                vtranspose8(r); /* r[k]: element d + k of rows j .. j + 7 */
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    vst8(dst + (int64_t)(d + k) * BK + j, r[k]);
            }
        return;
    }
    for (int d = 0; d < hd; d++) {
        float *row = dst + (int64_t)d * BK;
        for (int j = 0; j < n; j++)
            row[j] = src[(int64_t)j * stride + d];
        for (int j = n; j < BK; j++)
            row[j] = 0.0f;
    }
}

/* s (n, BK) = scale * a (n rows of hd, row stride as) . panel (hd, BK); two rows at a time
 * (8 independent accumulators). */
static inline __attribute__((always_inline)) void rows_times_panel(float *s, const float *a, int64_t as, int n,
                                                                 const float *panel, int hd, float scale)
{
    int i = 0;
    for (; i + 2 <= n; i += 2) {
        const float *x = a + (int64_t)i * as, *y = x + as;
        vf8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        for (int d = 0; d < hd; d++) {
            const float *p = panel + (int64_t)d * BK;
            vf8 p0 = vld8(p), p1 = vld8(p + 8), p2 = vld8(p + 16), p3 = vld8(p + 24);
            float xd = x[d], yd = y[d];
            a0 += xd * p0, a1 += xd * p1, a2 += xd * p2, a3 += xd * p3;
            b0 += yd * p0, b1 += yd * p1, b2 += yd * p2, b3 += yd * p3;
        }
        float *r = s + (int64_t)i * BK;
        vst8(r, a0 * scale), vst8(r + 8, a1 * scale), vst8(r + 16, a2 * scale), vst8(r + 24, a3 * scale);
        r += BK;
        vst8(r, b0 * scale), vst8(r + 8, b1 * scale), vst8(r + 16, b2 * scale), vst8(r + 24, b3 * scale);
    }
    for (; i < n; i++) {
        const float *x = a + (int64_t)i * as;
        vf8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int d = 0; d < hd; d++) {
            const float *p = panel + (int64_t)d * BK;
            float xd = x[d];
            a0 += xd * vld8(p), a1 += xd * vld8(p + 8), a2 += xd * vld8(p + 16), a3 += xd * vld8(p + 24);
        }
        float *r = s + (int64_t)i * BK;
        vst8(r, a0 * scale), vst8(r + 8, a1 * scale), vst8(r + 16, a2 * scale), vst8(r + 24, a3 * scale);
    }
}

/* y[0..hd) += sum_{j<n} w[j*ws] x_j[0..hd), x_j = x + j*xs, summed in ascending j for every
 * element; 32 floats of y stay in registers over the n terms. */
static inline __attribute__((always_inline)) void accumulate_rows(float *y, const float *w, int64_t ws, const float *x,
                                                                int64_t xs, int n, int hd)
{
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        vf8 y0 = vld8(y + d), y1 = vld8(y + d + 8), y2 = vld8(y + d + 16), y3 = vld8(y + d + 24);
        for (int j = 0; j < n; j++) {
            const float *xj = x + (int64_t)j * xs + d;
            float wj = w[(int64_t)j * ws];
            y0 += wj * vld8(xj), y1 += wj * vld8(xj + 8), y2 += wj * vld8(xj + 16), y3 += wj * vld8(xj + 24);
        }
        vst8(y + d, y0), vst8(y + d + 8, y1), vst8(y + d + 16, y2), vst8(y + d + 24, y3);
    }
    for (; d + 8 <= hd; d += 8) {
        vf8 y0 = vld8(y + d);
        for (int j = 0; j < n; j++)
            y0 += w[(int64_t)j * ws] * vld8(x + (int64_t)j * xs + d);
        vst8(y + d, y0);
    }
    for (; d < hd; d++) {
        float acc = y[d];
        for (int j = 0; j < n; j++)
            acc += w[(int64_t)j * ws] * x[(int64_t)j * xs + d];
        y[d] = acc;
    }
}

/* accumulate_rows for two destinations at once over the same x rows: ya += sum_{j<na} wa[j*ws] x_j
 * and yb += sum_{j<nb} wb[j*ws] x_j, each still summed in ascending j (the same values as two
 * accumulate_rows calls), with eight accumulators in registers instead of four and each x load
 * shared: one row alone keeps only four FMA chains in flight. */
static inline __attribute__((always_inline)) void accumulate_rows2(float *ya, const float *wa, int na, float *yb,
                                                                 const float *wb, int nb, int64_t ws, const float *x,
                                                                 int64_t xs, int hd)
{
    int n = na < nb ? na : nb;
    if (hd % 32 == 0 && n > 0) {
        for (int d = 0; d < hd; d += 32) {
            vf8 a0 = vld8(ya + d), a1 = vld8(ya + d + 8), a2 = vld8(ya + d + 16), a3 = vld8(ya + d + 24);
            vf8 b0 = vld8(yb + d), b1 = vld8(yb + d + 8), b2 = vld8(yb + d + 16), b3 = vld8(yb + d + 24);
            for (int j = 0; j < n; j++) {
                const float *xj = x + (int64_t)j * xs + d;
                vf8 x0 = vld8(xj), x1 = vld8(xj + 8), x2 = vld8(xj + 16), x3 = vld8(xj + 24);
                float wj = wa[(int64_t)j * ws], vj = wb[(int64_t)j * ws];
                a0 += wj * x0, a1 += wj * x1, a2 += wj * x2, a3 += wj * x3;
                b0 += vj * x0, b1 += vj * x1, b2 += vj * x2, b3 += vj * x3;
            }
            vst8(ya + d, a0), vst8(ya + d + 8, a1), vst8(ya + d + 16, a2), vst8(ya + d + 24, a3);
            vst8(yb + d, b0), vst8(yb + d + 8, b1), vst8(yb + d + 16, b2), vst8(yb + d + 24, b3);
        }
    } else {
        n = 0;
    }
    /* the rest of each sum, continued in ascending j */
    if (na > n)
        accumulate_rows(ya, wa + (int64_t)n * ws, ws, x + (int64_t)n * xs, xs, na - n, hd);
    if (nb > n)
        accumulate_rows(yb, wb + (int64_t)n * ws, ws, x + (int64_t)n * xs, xs, nb - n, hd);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* The AVX-512 forms (x86-64-v4, run where ref_gemm_isa says the CPU has it): 16-float vectors
 * and, with 32 vector registers, four rows at a time. Each element is the same sequential sum
 * as in the 8-wide forms above (lanes are independent, FMA in both), so the two give the same
 * bits (test_ops attention_isa_identical). */
#define HAVE_ATTN_V4 1
typedef float vf16 __attribute__((vector_size(64)));
typedef float vf16u __attribute__((vector_size(64), aligned(4)));
#define vld16(p) (*(const vf16u *)(p))
#define vst16(p, x) (*(vf16u *)(p) = (x))

/* rows_times_panel, four rows at a time: 8 accumulators of 16 floats, each panel row loaded once
 * for the four. */
static inline __attribute__((always_inline)) void rows_times_panel16(float *s, const float *a, int64_t as, int n,
                                                                    const float *panel, int hd, float scale)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float *x0 = a + (int64_t)i * as, *x1 = x0 + as, *x2 = x1 + as, *x3 = x2 + as;
        vf16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, e0 = {0}, e1 = {0};
        for (int d = 0; d < hd; d++) {
            const float *p = panel + (int64_t)d * BK;
            vf16 p0 = vld16(p), p1 = vld16(p + 16);
            a0 += x0[d] * p0, a1 += x0[d] * p1, b0 += x1[d] * p0, b1 += x1[d] * p1;
            c0 += x2[d] * p0, c1 += x2[d] * p1, e0 += x3[d] * p0, e1 += x3[d] * p1;
        }
        float *r = s + (int64_t)i * BK;
        vst16(r, a0 * scale), vst16(r + 16, a1 * scale), vst16(r + BK, b0 * scale), vst16(r + BK + 16, b1 * scale);
        r += 2 * BK;
        vst16(r, c0 * scale), vst16(r + 16, c1 * scale), vst16(r + BK, e0 * scale), vst16(r + BK + 16, e1 * scale);
    }
    if (i < n)
        rows_times_panel(s + (int64_t)i * BK, a + (int64_t)i * as, as, n - i, panel, hd, scale);
}

/* Four destinations over the same x rows: y_r += sum_{j<n[r]} w[r*wr + j*ws] x_j (y_r = y + r*ys),
 * r = 0..3, each summed in ascending j as accumulate_rows does; 64 floats of each row (16
 * accumulators) in registers, each x load shared by the four. hd a multiple of 32. */
static inline __attribute__((always_inline)) void accumulate4_16(float *y, int64_t ys, const float *w, int64_t wr,
                                                                int64_t ws, const int n[4], const float *x, int64_t xs,
                                                                int hd)
{
    int nmin = min_int(min_int(n[0], n[1]), min_int(n[2], n[3]));
    float *y0 = y, *y1 = y + ys, *y2 = y1 + ys, *y3 = y2 + ys;
    const float *w0 = w, *w1 = w + wr, *w2 = w1 + wr, *w3 = w2 + wr;
    int d = 0;
    for (; nmin > 0 && d + 64 <= hd; d += 64) {
        vf16 a0 = vld16(y0 + d), a1 = vld16(y0 + d + 16), a2 = vld16(y0 + d + 32), a3 = vld16(y0 + d + 48);
        vf16 b0 = vld16(y1 + d), b1 = vld16(y1 + d + 16), b2 = vld16(y1 + d + 32), b3 = vld16(y1 + d + 48);
        vf16 c0 = vld16(y2 + d), c1 = vld16(y2 + d + 16), c2 = vld16(y2 + d + 32), c3 = vld16(y2 + d + 48);
        vf16 e0 = vld16(y3 + d), e1 = vld16(y3 + d + 16), e2 = vld16(y3 + d + 32), e3 = vld16(y3 + d + 48);
        for (int j = 0; j < nmin; j++) {
            const float *xj = x + (int64_t)j * xs + d;
            vf16 x0 = vld16(xj), x1 = vld16(xj + 16), x2 = vld16(xj + 32), x3 = vld16(xj + 48);
            int64_t o = (int64_t)j * ws;
            float u = w0[o], v = w1[o], t = w2[o], z = w3[o];
            a0 += u * x0, a1 += u * x1, a2 += u * x2, a3 += u * x3;
            b0 += v * x0, b1 += v * x1, b2 += v * x2, b3 += v * x3;
            c0 += t * x0, c1 += t * x1, c2 += t * x2, c3 += t * x3;
            e0 += z * x0, e1 += z * x1, e2 += z * x2, e3 += z * x3;
        }
        vst16(y0 + d, a0), vst16(y0 + d + 16, a1), vst16(y0 + d + 32, a2), vst16(y0 + d + 48, a3);
        vst16(y1 + d, b0), vst16(y1 + d + 16, b1), vst16(y1 + d + 32, b2), vst16(y1 + d + 48, b3);
        vst16(y2 + d, c0), vst16(y2 + d + 16, c1), vst16(y2 + d + 32, c2), vst16(y2 + d + 48, c3);
        vst16(y3 + d, e0), vst16(y3 + d + 16, e1), vst16(y3 + d + 32, e2), vst16(y3 + d + 48, e3);
    }
    if (nmin > 0 && d < hd) { /* the last 32 */
        vf16 a0 = vld16(y0 + d), a1 = vld16(y0 + d + 16), b0 = vld16(y1 + d), b1 = vld16(y1 + d + 16);
        vf16 c0 = vld16(y2 + d), c1 = vld16(y2 + d + 16), e0 = vld16(y3 + d), e1 = vld16(y3 + d + 16);
        for (int j = 0; j < nmin; j++) {
            const float *xj = x + (int64_t)j * xs + d;
            vf16 x0 = vld16(xj), x1 = vld16(xj + 16);
            int64_t o = (int64_t)j * ws;
            float u = w0[o], v = w1[o], t = w2[o], z = w3[o];
            a0 += u * x0, a1 += u * x1, b0 += v * x0, b1 += v * x1;
            c0 += t * x0, c1 += t * x1, e0 += z * x0, e1 += z * x1;
        }
        vst16(y0 + d, a0), vst16(y0 + d + 16, a1), vst16(y1 + d, b0), vst16(y1 + d + 16, b1);
        vst16(y2 + d, c0), vst16(y2 + d + 16, c1), vst16(y3 + d, e0), vst16(y3 + d + 16, e1);
    }
    /* the rest of each sum, continued in ascending j */
    for (int r = 0; r < 4; r++)
        if (n[r] > nmin)
            accumulate_rows(y + r * ys, w + r * wr + (int64_t)nmin * ws, ws, x + (int64_t)nmin * xs, xs, n[r] - nmin,
                            hd);
}
#endif

/* Up to four destinations (cnt) over the same x rows: y + r*ys += sum_{j<n[r]} w[r*wr + j*ws] x_j,
 * each summed in ascending j: four at once in the AVX-512 form (wide), else in pairs. */
static inline __attribute__((always_inline)) void update_rows(int wide, float *y, int64_t ys, const float *w,
                                                             int64_t wr, int64_t ws, const int n[4], int cnt,
                                                             const float *x, int64_t xs, int hd)
{
#ifdef HAVE_ATTN_V4
    if (wide && cnt == 4 && hd % 32 == 0) {
        accumulate4_16(y, ys, w, wr, ws, n, x, xs, hd);
        return;
    }
#else
    (void)wide;
#endif
    for (int r = 0; r < cnt; r += 2) {
        if (r + 1 < cnt && n[r + 1] > 0)
            accumulate_rows2(y + r * ys, w + r * wr, n[r], y + (r + 1) * ys, w + (r + 1) * wr, n[r + 1], ws, x, xs, hd);
        else if (n[r] > 0)
            accumulate_rows(y + r * ys, w + r * wr, ws, x, xs, n[r], hd);
    }
}

/* rows_times_panel, in the AVX-512 form when wide */
static inline __attribute__((always_inline)) void scores(int wide, float *s, const float *a, int64_t as, int n,
                                                        const float *panel, int hd, float scale)
{
#ifdef HAVE_ATTN_V4
    if (wide) {
        rows_times_panel16(s, a, as, n, panel, hd, scale);
        return;
    }
#else
    (void)wide;
#endif
    rows_times_panel(s, a, as, n, panel, hd, scale);
}

/* x[0..n) *= f, 8 at a time where it can (the same products as one at a time) */
static inline __attribute__((always_inline)) void scale_row(float *x, int n, float f)
{
    int d = 0;
    for (; d + 8 <= n; d += 8)
        vst8(x + d, vld8(x + d) * f);
    for (; d < n; d++)
        x[d] *= f;
}

/* For four rows of a block from row i (r of them exist, r may be under 4), the keys each sees,
 * n[k] = min(nk, off + k + 1) or 0 (off = t0 + i - j0), and the count all four see (0 when
 * r < 4): the extent of the interleaved loops over them. */
static inline int rows4_keys(int n[4], int r, int nk, int off)
{
    int nmin = BK;
    for (int k = 0; k < 4; k++) {
        n[k] = k < r ? min_int(nk, off + k + 1) : 0;
        n[k] = n[k] > 0 ? n[k] : 0;
        nmin = min_int(nmin, n[k]);
    }
    return r < 4 ? 0 : nmin;
}

/* Lane-wise over a block's BQ query lanes (vectors of 8): the causal mask and the max. */

/* In a block of scores held key-major (st: nk rows of BQ lanes, key j0 + j in row j, query
 * t0 + i in lane i), the entries of keys after their query, j > off + i with off = t0 - j0 (the
 * diagonal block only), set to val. */
static inline __attribute__((always_inline)) void mask_future(float *st, int nk, int off, float val)
{
    const vi8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const vi8 fill = (vi8)((vf8){0} + val);
    for (int j = off + 1; j < nk; j++) {
        int lim = j - off; /* lanes below it are masked */
        float *row = st + (int64_t)j * BQ;
        for (int c = 0; c < BQ && c < lim; c += 8) {
            vi8 m = lane + c < lim; /* all-ones where masked */
            vst8(row + c, (vf8)(((vi8)vld8(row + c) & ~m) | (fill & m)));
        }
    }
}

/* Each lane's max over the block's nk >= 1 key rows, rows in ascending order with the scalar
 * compare's semantics (a lane keeps its max unless the new value compares greater). */
static inline __attribute__((always_inline)) void lane_max(float *mx, const float *st, int nk)
{
    for (int c = 0; c < BQ; c += 8) {
        vf8 m = vld8(st + c);
        for (int j = 1; j < nk; j++) {
            vf8 x = vld8(st + (int64_t)j * BQ + c);
            vi8 gt = x > m;
            m = (vf8)(((vi8)x & gt) | ((vi8)m & ~gt));
        }
        vst8(mx + c, m);
    }
}

/* D[i] = g_i . o_i for the n rows (row i at g + i*ld, o + i*ld, hd floats), each a sequential
 * FMA chain over d: eight rows at a time, one per lane, through 8 x 8 register transposes. */
static inline __attribute__((always_inline)) void row_dots(float *D, const float *g, const float *o, int64_t ld, int n,
                                                         int hd)
{
    int i = 0;
    if (hd % 8 == 0)
        for (; i + 8 <= n; i += 8) {
            vf8 acc = {0};
            for (int d = 0; d < hd; d += 8) {
                vf8 gt[8], ot[8];
#pragma GCC unroll 8
                for (int r = 0; r < 8; r++)
                    gt[r] = vld8(g + (int64_t)(i + r) * ld + d), ot[r] = vld8(o + (int64_t)(i + r) * ld + d);
                vtranspose8(gt);
                vtranspose8(ot);
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    acc += gt[k] * ot[k];
            }
            vst8(D + i, acc);
        }
    for (; i < n; i++) {
        const float *gi = g + (int64_t)i * ld, *oi = o + (int64_t)i * ld;
        float acc = 0.0f;
        for (int d = 0; d < hd; d++)
            acc += gi[d] * oi[d];
        D[i] = acc;
    }
}

/* One (b, h, query block): rows t0..t0+nq of head h; wide picks the AVX-512 forms. Scores are
 * computed key-major, S^T = K Q^T against the query block's transposed panel (made once per
 * task), so a block's max, exponentials and sums run across the BQ queries in vector lanes,
 * each lane still its own sequential scan over the keys. */
static inline __attribute__((always_inline)) void fwd_block_body(float *out, float *lse, const float *q,
                                                                const float *k, const float *v, int b, int h, int t0,
                                                                int T, int H, int KV, int hdk, int hdv, float scale,
                                                                int wide)
{
    int hk = h / (H / KV), nq = min_int(BQ, T - t0);
    int64_t qs = (int64_t)H * hdk, ks = (int64_t)KV * hdk, vs = (int64_t)KV * hdv, os = (int64_t)H * hdv;
    const float *qb = q + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk; // (nq) rows of hdk
    float *ob = out + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;      // (nq) rows of hdv
    const float *kh = k + (int64_t)b * T * ks + (int64_t)hk * hdk;        // (T) rows of hdk
    const float *vh = v + (int64_t)b * T * vs + (int64_t)hk * hdv;        // (T) rows of hdv
    float qt[hdk * BQ];                                                    // (hdk, BQ) panel
    float st[BK * BQ];                                                     // (nk, BQ) scores, then p
    float m[BQ], l[BQ], bmx[BQ], sum[BQ];
    for (int i = 0; i < BQ; i++) {
        m[i] = i < nq ? -INFINITY : 0.0f; /* lanes past nq: finite junk, never read */
        l[i] = 0.0f;
        if (i < nq)
            memset(ob + i * os, 0, (size_t)hdv * sizeof *ob);
    }
    transpose_block(qt, qb, qs, nq, hdk);
    int tlast = t0 + nq - 1;
    for (int j0 = 0; j0 <= tlast; j0 += BK) {
        int nk = min_int(BK, tlast + 1 - j0), off = t0 - j0;
        scores(wide, st, kh + (int64_t)j0 * ks, ks, nk, qt, hdk, scale);
        mask_future(st, nk, off, -INFINITY);
        lane_max(bmx, st, nk);
        for (int i = 0; i < nq; i++)
            if (bmx[i] > m[i]) {
                float corr = expf(m[i] - bmx[i]); /* 0 on the first block */
                l[i] *= corr;
                scale_row(ob + i * os, hdv, corr);
                m[i] = bmx[i];
            }
        /* P = exp(S - m), and l += each lane's sum over the keys in ascending order (the masked
         * entries, set back to 0, add nothing) */
        memset(sum, 0, sizeof sum);
        for (int j = 0; j < nk; j++) {
            float *row = st + (int64_t)j * BQ;
            for (int c = 0; c < BQ; c += 8)
                vst8(row + c, vexp8(vld8(row + c) - vld8(m + c)));
        }
        mask_future(st, nk, off, 0.0f);
        for (int j = 0; j < nk; j++)
            for (int c = 0; c < BQ; c += 8)
                vst8(sum + c, vld8(sum + c) + vld8(st + (int64_t)j * BQ + c));
        for (int i = 0; i < nq; i++)
            l[i] += sum[i];
        /* O += P V, four rows at a time (row i sees n_i keys of the block) */
        for (int i = 0; i < nq; i += 4) {
            int r = min_int(4, nq - i), n[4];
            rows4_keys(n, r, nk, off + i);
            update_rows(wide, ob + i * os, os, st + i, 1, BQ, n, r, vh + (int64_t)j0 * vs, vs, hdv);
        }
    }
    for (int i = 0; i < nq; i++) {
        scale_row(ob + i * os, hdv, 1.0f / l[i]);
        lse[((int64_t)b * H + h) * T + t0 + i] = m[i] + logf(l[i]);
    }
}

/* One (b, kv head): dk, dv of that head and dq of its query heads; wide picks the AVX-512 forms.
 * As in the forward, P and dP are computed key-major against transposed panels of the query
 * block's Q and dO (made once per query block), so that exp, dS and the masks run in lanes. */
static inline __attribute__((always_inline)) void bwd_task_body(float *dq, float *dk, float *dv, const float *dout,
                                                               const float *q, const float *k, const float *v,
                                                               const float *out, const float *lse, int b, int hk,
                                                               int T, int H, int KV, int hdk, int hdv, float scale,
                                                               int wide)
{
    int group = H / KV;
    int64_t qs = (int64_t)H * hdk, ks = (int64_t)KV * hdk, vs = (int64_t)KV * hdv, os = (int64_t)H * hdv;
    const float *kh = k + (int64_t)b * T * ks + (int64_t)hk * hdk; // (T) rows of hdk
    const float *vh = v + (int64_t)b * T * vs + (int64_t)hk * hdv; // (T) rows of hdv
    float *dkh = dk + (int64_t)b * T * ks + (int64_t)hk * hdk;     // (T) rows of hdk
    float *dvh = dv + (int64_t)b * T * vs + (int64_t)hk * hdv;     // (T) rows of hdv
    float qt[hdk * BQ], gt[hdv * BQ];                               // (hd, BQ) panels of Q, dO
    float pt[BK * BQ], dst[BK * BQ];                                // (nk, BQ): P^T, dP^T then dS^T
    float D[BQ], L[BQ];
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        for (int t0 = 0; t0 < T; t0 += BQ) {
            int nq = min_int(BQ, T - t0);
            const float *qb = q + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk;     // (nq) rows
            const float *gb = dout + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;  // (nq) rows
            const float *ob = out + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;   // (nq) rows
            float *dqb = dq + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk;         // (nq) rows
            for (int i = 0; i < BQ; i++) {
                D[i] = L[i] = 0.0f; /* lanes past nq: never read */
                if (i < nq)
                    L[i] = lse[((int64_t)b * H + h) * T + t0 + i];
            }
            row_dots(D, gb, ob, os, nq, hdv);
            transpose_block(qt, qb, qs, nq, hdk);
            transpose_block(gt, gb, os, nq, hdv);
            int tlast = t0 + nq - 1;
            for (int j0 = 0; j0 <= tlast; j0 += BK) {
                int nk = min_int(BK, tlast + 1 - j0), off = t0 - j0;
                scores(wide, pt, kh + (int64_t)j0 * ks, ks, nk, qt, hdk, scale);
                scores(wide, dst, vh + (int64_t)j0 * vs, vs, nk, gt, hdv, 1.0f);
                for (int j = 0; j < nk; j++) /* P = exp(S - lse); dS = P (dP - D) scale, same roundings */
                    for (int c = 0; c < BQ; c += 8) {
                        float *pj = pt + (int64_t)j * BQ + c, *dj = dst + (int64_t)j * BQ + c;
                        vf8 pv = vexp8(vld8(pj) - vld8(L + c));
                        vst8(pj, pv);
                        vst8(dj, pv * (vld8(dj) - vld8(D + c)) * scale);
                    }
                mask_future(pt, nk, off, 0.0f); /* no contribution after the query */
                mask_future(dst, nk, off, 0.0f);
                /* dq += dS K, four rows at a time */
                for (int i = 0; i < nq; i += 4) {
                    int r = min_int(4, nq - i), n[4];
                    rows4_keys(n, r, nk, off + i);
                    update_rows(wide, dqb + i * qs, qs, dst + i, 1, BQ, n, r, kh + (int64_t)j0 * ks, ks, hdk);
                }
                /* dv += P^T dO and dk += dS^T Q, four keys at a time, over the query rows from the
                 * first that sees the group's first key (the rows before it hold exact zeros for
                 * all four; later zeros in the diagonal block are summed, which adds nothing) */
                for (int j = 0; j < nk; j += 4) {
                    int r = min_int(4, nk - j), i0 = j > off ? j - off : 0;
                    int n[4] = {nq - i0, nq - i0, nq - i0, nq - i0};
                    update_rows(wide, dvh + (int64_t)(j0 + j) * vs, vs, pt + (int64_t)j * BQ + i0, BQ, 1, n, r,
                                gb + i0 * os, os, hdv);
                    update_rows(wide, dkh + (int64_t)(j0 + j) * ks, ks, dst + (int64_t)j * BQ + i0, BQ, 1, n, r,
                                qb + i0 * qs, qs, hdk);
                }
            }
        }
    }
}

HOT_CLONES static void fwd_block(float *out, float *lse, const float *q, const float *k, const float *v, int b, int h,
                                 int t0, int T, int H, int KV, int hdk, int hdv, float scale)
{
    fwd_block_body(out, lse, q, k, v, b, h, t0, T, H, KV, hdk, hdv, scale, 0);
}

HOT_CLONES static void bwd_task(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *out, const float *lse, int b, int hk, int T, int H,
                                int KV, int hdk, int hdv, float scale)
{
    bwd_task_body(dq, dk, dv, dout, q, k, v, out, lse, b, hk, T, H, KV, hdk, hdv, scale, 0);
}

#ifdef HAVE_ATTN_V4
__attribute__((target("arch=x86-64-v4"))) static void fwd_block_v4(float *out, float *lse, const float *q,
                                                                  const float *k, const float *v, int b, int h,
                                                                  int t0, int T, int H, int KV, int hdk, int hdv,
                                                                  float scale)
{
    fwd_block_body(out, lse, q, k, v, b, h, t0, T, H, KV, hdk, hdv, scale, 1);
}

__attribute__((target("arch=x86-64-v4"))) static void bwd_task_v4(float *dq, float *dk, float *dv,
                                                                 const float *dout, const float *q, const float *k,
                                                                 const float *v, const float *out, const float *lse,
                                                                 int b, int hk, int T, int H, int KV, int hdk, int hdv,
                                                                 float scale)
{
    bwd_task_body(dq, dk, dv, dout, q, k, v, out, lse, b, hk, T, H, KV, hdk, hdv, scale, 1);
}
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void ref_attention_fwd_dims(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                            int H, int KV, int hdk, int hdv, float scale)
{
    int nqb = (T + BQ - 1) / BQ, wide = ref_gemm_isa(-1);
    int64_t tasks = (int64_t)B * H * nqb;
    /* the last query blocks see the most keys: hand them out first */
    OMP_PARALLEL_FOR_DYNAMIC
    for (int64_t task = 0; task < tasks; task++) {
        int qblk = nqb - 1 - (int)(task % nqb), bh = (int)(task / nqb);
#ifdef HAVE_ATTN_V4
        if (wide) {
            fwd_block_v4(out, lse, q, k, v, bh / H, bh % H, qblk * BQ, T, H, KV, hdk, hdv, scale);
            continue;
        }
#endif
        fwd_block(out, lse, q, k, v, bh / H, bh % H, qblk * BQ, T, H, KV, hdk, hdv, scale);
    }
    (void)wide;
}

void ref_attention_bwd_dims(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, int B, int T, int H, int KV, int hdk,
                            int hdv, float scale)
{
    memset(dq, 0, (size_t)B * T * H * hdk * sizeof *dq);
    memset(dk, 0, (size_t)B * T * KV * hdk * sizeof *dk);
    memset(dv, 0, (size_t)B * T * KV * hdv * sizeof *dv);
    int wide = ref_gemm_isa(-1);
    OMP_PARALLEL_FOR_DYNAMIC
    for (int task = 0; task < B * KV; task++) {
#ifdef HAVE_ATTN_V4
        if (wide) {
            bwd_task_v4(dq, dk, dv, dout, q, k, v, out, lse, task / KV, task % KV, T, H, KV, hdk, hdv, scale);
            continue;
        }
#endif
        bwd_task(dq, dk, dv, dout, q, k, v, out, lse, task / KV, task % KV, T, H, KV, hdk, hdv, scale);
    }
    (void)wide;
}

void ref_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int H,
                       int KV, int hd)
{
    ref_attention_fwd_dims(out, lse, q, k, v, B, T, H, KV, hd, hd, 1.0f / sqrtf((float)hd));
}

void ref_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                       const float *v, const float *out, const float *lse, int B, int T, int H, int KV, int hd)
{
    ref_attention_bwd_dims(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, KV, hd, hd, 1.0f / sqrtf((float)hd));
}
