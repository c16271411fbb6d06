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
 * Vectorized with GCC/Clang generic vectors (8 floats): K and V blocks are transposed into
 * (hd, BK) panels (8 x 8 in registers) so a row of scores is BK/8 vector FMAs per d, and the
 * row updates (O and dq two rows at a time, dk and dv two keys at a time) keep 2 x 32 floats of
 * the destinations in registers across the keys or rows they sum. A block's row maxima and row
 * sums run four rows interleaved; each is still a sequential scan of its own row.
 * The hot functions are cloned for x86-64-v3 (AVX2 + FMA) and the baseline, as in ref_gemm.c.
 * The exponentials of the scores are exp_row's (a vectorized Cephes expf, within 1 ulp of the
 * exact value); the once-per-block rescale factor and the log use libm.
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

#define BQ 32 /* query rows per block */
#define BK 32 /* keys per block: a score row is 4 vectors */

static int min_int(int a, int b) { return a < b ? a : b; }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif

/* s[j] = exp(s[j] - sub) for the whole BK-wide row, 8 lanes at a time (vmath.h's vexp8; the
 * attention tests of test_ops hold its results to the same tolerances as libm's expf). */
static inline void exp_row(float *s, float sub)
{
    for (int c = 0; c < BK; c += 8)
        vst8(s + c, vexp8(vld8(s + c) - sub));
}

/* Copy n rows (row i at src + i*stride, hd floats) into the (hd, BK) panel dst, columns n..BK
 * zero. */
static inline void transpose_block(float *dst, const float *src, int64_t stride, int n, int hd)
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
static inline void rows_times_panel(float *s, const float *a, int64_t as, int n, const float *panel, int hd,
                                    float scale)
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
static inline void accumulate_rows(float *y, const float *w, int64_t ws, const float *x, int64_t xs, int n, int hd)
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
static inline void accumulate_rows2(float *ya, const float *wa, int na, float *yb, const float *wb, int nb, int64_t ws,
                                    const float *x, int64_t xs, int hd)
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

/* One (b, h, query block): rows t0..t0+nq of head h. */
HOT_CLONES static void fwd_block(float *out, float *lse, const float *q, const float *k, const float *v, int b, int h,
                                 int t0, int T, int H, int KV, int hdk, int hdv, float scale)
{
    int hk = h / (H / KV), nq = min_int(BQ, T - t0);
    int64_t qs = (int64_t)H * hdk, ks = (int64_t)KV * hdk, vs = (int64_t)KV * hdv, os = (int64_t)H * hdv;
    const float *qb = q + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk; // (nq) rows of hdk
    float *ob = out + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;      // (nq) rows of hdv
    const float *kh = k + (int64_t)b * T * ks + (int64_t)hk * hdk;        // (T) rows of hdk
    const float *vh = v + (int64_t)b * T * vs + (int64_t)hk * hdv;        // (T) rows of hdv
    float kt[hdk * BK];                                                    // (hdk, BK) panel
    float s[BQ * BK];                                                      // (nq, BK) scores, then p
    float m[BQ], l[BQ];
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(ob + i * os, 0, (size_t)hdv * sizeof *ob);
    }
    int tlast = t0 + nq - 1;
    for (int j0 = 0; j0 <= tlast; j0 += BK) {
        int nk = min_int(BK, tlast + 1 - j0);
        transpose_block(kt, kh + (int64_t)j0 * ks, ks, nk, hdk);
        rows_times_panel(s, qb, qs, nq, kt, hdk, scale);
        /* each row's max over the keys it sees, four rows interleaved (each still a sequential
         * scan from key 0, four chains side by side) */
        float bmx[BQ];
        for (int i = 0; i < nq; i += 4) {
            int n[4], nmin = rows4_keys(n, nq - i, nk, t0 + i - j0);
            const float *s0 = s + i * BK;
            float mx[4] = {s0[0], s0[BK], s0[2 * BK], s0[3 * BK]};
            for (int j = 1; j < nmin; j++) {
                mx[0] = s0[j] > mx[0] ? s0[j] : mx[0];
                mx[1] = s0[BK + j] > mx[1] ? s0[BK + j] : mx[1];
                mx[2] = s0[2 * BK + j] > mx[2] ? s0[2 * BK + j] : mx[2];
                mx[3] = s0[3 * BK + j] > mx[3] ? s0[3 * BK + j] : mx[3];
            }
            for (int k = 0; k < 4 && k < nq - i; k++) {
                for (int j = nmin > 1 ? nmin : 1; j < n[k]; j++)
                    mx[k] = s0[k * BK + j] > mx[k] ? s0[k * BK + j] : mx[k];
                bmx[i + k] = mx[k];
            }
        }
        for (int i = 0; i < nq; i++) {
            int n = min_int(nk, t0 + i - j0 + 1); /* keys j0..t0+i of this block */
            if (n <= 0)
                continue;
            float *si = s + i * BK;
            float bm = bmx[i];
            float *oi = ob + i * os;
            if (bm > m[i]) {
                float corr = expf(m[i] - bm); /* 0 on the first block */
                l[i] *= corr;
                for (int d = 0; d < hdv; d++)
                    oi[d] *= corr;
                m[i] = bm;
            }
            exp_row(si, m[i]);
        }
        /* l += the row sums of P, four rows interleaved: each sum is still sequential in
         * ascending keys, but four chains of dependent adds run side by side */
        for (int i = 0; i < nq; i += 4) {
            int r = min_int(4, nq - i), n[4], nmin = rows4_keys(n, r, nk, t0 + i - j0);
            float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            const float *s0 = s + i * BK;
            for (int j = 0; j < nmin; j++) {
                sum[0] += s0[j];
                sum[1] += s0[BK + j];
                sum[2] += s0[2 * BK + j];
                sum[3] += s0[3 * BK + j];
            }
            for (int k = 0; k < r; k++) {
                for (int j = nmin; j < n[k]; j++)
                    sum[k] += s0[k * BK + j];
                if (n[k] > 0)
                    l[i + k] += sum[k];
            }
        }
        /* O += P V, two rows at a time (row i sees n_i keys of the block, 0 above the diagonal) */
        for (int i = 0; i < nq; i += 2) {
            int na = min_int(nk, t0 + i - j0 + 1), nb = i + 1 < nq ? min_int(nk, t0 + i + 1 - j0 + 1) : 0;
            na = na > 0 ? na : 0, nb = nb > 0 ? nb : 0;
            const float *vb = vh + (int64_t)j0 * vs;
            if (nb > 0)
                accumulate_rows2(ob + i * os, s + i * BK, na, ob + (i + 1) * os, s + (i + 1) * BK, nb, 1, vb, vs, hdv);
            else if (na > 0)
                accumulate_rows(ob + i * os, s + i * BK, 1, vb, vs, na, hdv);
        }
    }
    for (int i = 0; i < nq; i++) {
        float *oi = ob + i * os, inv = 1.0f / l[i];
        for (int d = 0; d < hdv; d++)
            oi[d] *= inv;
        lse[((int64_t)b * H + h) * T + t0 + i] = m[i] + logf(l[i]);
    }
}

/* One (b, kv head): dk, dv of that head and dq of its query heads. */
HOT_CLONES static void bwd_task(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                const float *v, const float *out, const float *lse, int b, int hk, int T, int H,
                                int KV, int hdk, int hdv, float scale)
{
    int group = H / KV;
    int64_t qs = (int64_t)H * hdk, ks = (int64_t)KV * hdk, vs = (int64_t)KV * hdv, os = (int64_t)H * hdv;
    const float *kh = k + (int64_t)b * T * ks + (int64_t)hk * hdk; // (T) rows of hdk
    const float *vh = v + (int64_t)b * T * vs + (int64_t)hk * hdv; // (T) rows of hdv
    float *dkh = dk + (int64_t)b * T * ks + (int64_t)hk * hdk;     // (T) rows of hdk
    float *dvh = dv + (int64_t)b * T * vs + (int64_t)hk * hdv;     // (T) rows of hdv
    float kt[hdk * BK], vt[hdv * BK];                               // (hd, BK) panels
    float p[BQ * BK], ds[BQ * BK];                                  // (nq, BK)
    float D[BQ], L[BQ];
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        for (int t0 = 0; t0 < T; t0 += BQ) {
            int nq = min_int(BQ, T - t0);
            const float *qb = q + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk;     // (nq) rows
            const float *gb = dout + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;  // (nq) rows
            const float *ob = out + ((int64_t)b * T + t0) * os + (int64_t)h * hdv;   // (nq) rows
            float *dqb = dq + ((int64_t)b * T + t0) * qs + (int64_t)h * hdk;         // (nq) rows
            for (int i = 0; i < nq; i++) {
                const float *gi = gb + i * os, *oi = ob + i * os;
                float acc = 0.0f;
                for (int d = 0; d < hdv; d++)
                    acc += gi[d] * oi[d];
                D[i] = acc;
                L[i] = lse[((int64_t)b * H + h) * T + t0 + i];
            }
            int tlast = t0 + nq - 1;
            for (int j0 = 0; j0 <= tlast; j0 += BK) {
                int nk = min_int(BK, tlast + 1 - j0);
                transpose_block(kt, kh + (int64_t)j0 * ks, ks, nk, hdk);
                transpose_block(vt, vh + (int64_t)j0 * vs, vs, nk, hdv);
                rows_times_panel(p, qb, qs, nq, kt, hdk, scale);
                rows_times_panel(ds, gb, os, nq, vt, hdv, 1.0f);
                for (int i = 0; i < nq; i++) {
                    int n = min_int(nk, t0 + i - j0 + 1);
                    float *pi = p + i * BK, *dsi = ds + i * BK;
                    exp_row(pi, L[i]);
                    int j = 0;
                    for (; j < n; j++)
                        dsi[j] = pi[j] * (dsi[j] - D[i]) * scale;
                    for (; j < BK; j++) /* above the diagonal: no contribution */
                        pi[j] = dsi[j] = 0.0f;
                }
                /* dq += dS K, two rows at a time */
                const float *kb = kh + (int64_t)j0 * ks;
                for (int i = 0; i < nq; i += 2) {
                    int na = min_int(nk, t0 + i - j0 + 1), nb = i + 1 < nq ? min_int(nk, t0 + i + 1 - j0 + 1) : 0;
                    na = na > 0 ? na : 0, nb = nb > 0 ? nb : 0;
                    if (nb > 0)
                        accumulate_rows2(dqb + i * qs, ds + i * BK, na, dqb + (i + 1) * qs, ds + (i + 1) * BK, nb, 1, kb,
                                         ks, hdk);
                    else if (na > 0)
                        accumulate_rows(dqb + i * qs, ds + i * BK, 1, kb, ks, na, hdk);
                }
                /* dv += P^T dO and dk += dS^T Q, two keys at a time; rows below the first query
                 * that sees key j contribute zeros: summing them keeps the loops simple and adds
                 * exact zeros */
                int j = 0;
                for (; j + 2 <= nk; j += 2) {
                    accumulate_rows2(dvh + (int64_t)(j0 + j) * vs, p + j, nq, dvh + (int64_t)(j0 + j + 1) * vs, p + j + 1,
                                     nq, BK, gb, os, hdv);
                    accumulate_rows2(dkh + (int64_t)(j0 + j) * ks, ds + j, nq, dkh + (int64_t)(j0 + j + 1) * ks,
                                     ds + j + 1, nq, BK, qb, qs, hdk);
                }
                for (; j < nk; j++) {
                    accumulate_rows(dvh + (int64_t)(j0 + j) * vs, p + j, BK, gb, os, nq, hdv);
                    accumulate_rows(dkh + (int64_t)(j0 + j) * ks, ds + j, BK, qb, qs, nq, hdk);
                }
            }
        }
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void ref_attention_fwd_dims(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                            int H, int KV, int hdk, int hdv, float scale)
{
    int nqb = (T + BQ - 1) / BQ;
    int64_t tasks = (int64_t)B * H * nqb;
    /* the last query blocks see the most keys: hand them out first */
    OMP_PARALLEL_FOR_DYNAMIC
    for (int64_t task = 0; task < tasks; task++) {
        int qblk = nqb - 1 - (int)(task % nqb), bh = (int)(task / nqb);
        fwd_block(out, lse, q, k, v, bh / H, bh % H, qblk * BQ, T, H, KV, hdk, hdv, scale);
    }
}

void ref_attention_bwd_dims(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *out, const float *lse, int B, int T, int H, int KV, int hdk,
                            int hdv, float scale)
{
    memset(dq, 0, (size_t)B * T * H * hdk * sizeof *dq);
    memset(dk, 0, (size_t)B * T * KV * hdk * sizeof *dk);
    memset(dv, 0, (size_t)B * T * KV * hdv * sizeof *dv);
    OMP_PARALLEL_FOR_DYNAMIC
    for (int task = 0; task < B * KV; task++)
        bwd_task(dq, dk, dv, dout, q, k, v, out, lse, task / KV, task % KV, T, H, KV, hdk, hdv, scale);
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
