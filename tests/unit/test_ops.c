/* test_ops.c: pins the CPU reference operators of runtime/cpu/ref.h.
 *
 * Every op with a backward is checked twice against an independent
 * double-precision forward written here as plain loops (no code shared with
 * ref.c):
 *   - forward: the float op against the double forward on the same inputs;
 *   - backward: the float analytic gradient of L = sum(out * R), R a fixed
 *     random tensor passed as dout, against central finite differences of the
 *     double forward, every input element perturbed by +-h.
 * In double, central differences with h = 1e-5 on O(1) inputs are good to
 * about 1e-9 relative (h^2 truncation, 1e-16/h cancellation), so the error
 * measured is the float op's own. Errors are "relative to the tensor's scale",
 * max|got - want| / max|want|, so that a gradient element that happens to be
 * near zero does not need an absolute tolerance of its own. Float rounding is
 * 2^-24 = 6e-8 per operation; sums of n terms drift like sqrt(n) to n ulps, so
 * the tolerances below (1e-7 to 1e-4) sit 1-2 orders of magnitude above what
 * n ulps gives and each says why it is that loose. They are far tighter than
 * the 1e-3..1e-2 usual in gradient checks because the differences run in
 * double on the very floats the op sees: nothing but float rounding is left
 * (observed 2e-8 to 7e-7).
 *
 * Backwards that accumulate ("+=" in ref.h) start from a random gradient
 * buffer, which is subtracted before comparing; backwards that overwrite start
 * from garbage (1e30) that must disappear.
 *
 * GEMMs also get exact-shape checks against a naive double loop on odd shapes
 * and on a shape that crosses every blocking boundary of ref_gemm.c, and, with
 * OpenMP, a check that the thread count does not change a single bit.
 * Takes no arguments; runs in well under a second.
 */
#include "check.h"
#include "fp8.h"
#include "ref.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x853c49e6748fea9bull;

/* Uniform in [-1, 1), a 64-bit LCG: deterministic across platforms. */
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1p-52 - 1.0;
}

static float *falloc(int64_t n) { return calloc((size_t)n, sizeof(float)); }
static double *dalloc(int64_t n) { return calloc((size_t)n, sizeof(double)); }

/* Random values times scale into f, and the same floats into d (if not NULL). */
static void fill(float *f, double *d, int64_t n, double scale)
{
    for (int64_t i = 0; i < n; i++) {
        f[i] = (float)(urand() * scale);
        if (d)
            d[i] = f[i];
    }
}

static void fill_const(float *f, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        f[i] = v;
}

static float *fcopy(const float *src, int64_t n)
{
    float *f = falloc(n);
    memcpy(f, src, (size_t)n * sizeof *f);
    return f;
}

/* max|got - pre - want| / max|want|, pre (what an accumulating op started
 * from) may be NULL. */
static double rel_err(const float *got, const float *pre, const double *want, int64_t n)
{
    double diff = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double g = (double)got[i] - (pre ? (double)pre[i] : 0.0);
        diff = fmax(diff, fabs(g - want[i]));
        scale = fmax(scale, fabs(want[i]));
    }
    if (isnan(diff))
        return INFINITY;
    return scale > 0.0 ? diff / scale : diff;
}

static void check_close(const char *what, const float *got, const float *pre, const double *want,
                        int64_t n, double tol)
{
    double e = rel_err(got, pre, want, n);
    CHECKF(e <= tol, "%s: relative error %.3g > %.3g", what, e, tol);
}

/* ---- finite differences ----------------------------------------------------------------------
 * A double forward reads the op's inputs and writes out; the dimensions it
 * needs come from its fd_op. */

#define MAX_INPUTS 3

struct fd_op {
    void (*fwd)(const struct fd_op *op, double *out, double *const *in);
    int64_t in_len[MAX_INPUTS]; /* elements of each input */
    int64_t out_len;
    int B, T, C, H, KV, hd; /* the dims an op uses; others 0 */
    int M, K, N, V;
    double eps, theta;
    const int32_t *ids; /* tokens or targets */
    double *aux;        /* if set, the forward also writes its saved state (lse, rstd) here */
};

/* dL/d in[which] for L = sum(out * R), central differences in double. */
static double *fd_grad(const struct fd_op *op, double *const *in, const double *R, int which)
{
    const double h = 1e-5;
    double *out = dalloc(op->out_len), *grad = dalloc(op->in_len[which]);
    for (int64_t i = 0; i < op->in_len[which]; i++) {
        double x0 = in[which][i], lp = 0.0, lm = 0.0;
        in[which][i] = x0 + h;
        op->fwd(op, out, in);
        for (int64_t j = 0; j < op->out_len; j++)
            lp += out[j] * R[j];
        in[which][i] = x0 - h;
        op->fwd(op, out, in);
        for (int64_t j = 0; j < op->out_len; j++)
            lm += out[j] * R[j];
        in[which][i] = x0;
        grad[i] = (lp - lm) / (2.0 * h);
    }
    free(out);
    return grad;
}

/* The analytic gradient got (minus pre, for accumulating ops) against
 * central differences for input `which`. */
static void check_grad(const char *what, const struct fd_op *op, double *const *in,
                       const double *R, int which, const float *got, const float *pre, double tol)
{
    double *num = fd_grad(op, in, R, which);
    check_close(what, got, pre, num, op->in_len[which], tol);
    free(num);
}

/* ---- double-precision forwards (independent of ref.c) ----------------------------------- */

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

/* out (M,N) = in0 (M,K) in1^T (N,K) + in2 (N) */
static void matmul_d(const struct fd_op *op, double *out, double *const *in)
{
    for (int m = 0; m < op->M; m++)
        for (int n = 0; n < op->N; n++) {
            double s = in[2] ? in[2][n] : 0.0;
            for (int k = 0; k < op->K; k++)
                s += in[0][m * op->K + k] * in[1][n * op->K + k];
            out[m * op->N + n] = s;
        }
}

/* out (B,T,C) = wte in0 [ids] + wpe in1 [t] */
static void embed_d(const struct fd_op *op, double *out, double *const *in)
{
    int C = op->C;
    for (int bt = 0; bt < op->B * op->T; bt++)
        for (int c = 0; c < C; c++)
            out[bt * C + c] = in[0][op->ids[bt] * C + c] + in[1][(bt % op->T) * C + c];
}

/* out (N,C) = x / rms(x) * w; aux (N) = rstd */
static void rmsnorm_d(const struct fd_op *op, double *out, double *const *in)
{
    int C = op->C;
    for (int n = 0; n < op->N; n++) {
        const double *x = in[0] + n * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++)
            ss += x[c] * x[c];
        double r = 1.0 / sqrt(ss / C + op->eps);
        for (int c = 0; c < C; c++)
            out[n * C + c] = x[c] * r * in[1][c];
        if (op->aux)
            op->aux[n] = r;
    }
}

/* out (N,C) = (x - mean) / sqrt(var + eps) * w + b */
static void layernorm_d(const struct fd_op *op, double *out, double *const *in)
{
    int C = op->C;
    for (int n = 0; n < op->N; n++) {
        const double *x = in[0] + n * C;
        double mu = 0.0, var = 0.0;
        for (int c = 0; c < C; c++)
            mu += x[c] / C;
        for (int c = 0; c < C; c++)
            var += (x[c] - mu) * (x[c] - mu) / C;
        for (int c = 0; c < C; c++)
            out[n * C + c] = (x[c] - mu) / sqrt(var + op->eps) * in[1][c] + in[2][c];
    }
}

/* RoPE written from the definition: head h, pair i of (b,t) rotated by t theta^(-2i/hd). */
static void rope_d(const struct fd_op *op, double *out, double *const *in)
{
    int H = op->H, hd = op->hd;
    for (int b = 0; b < op->B; b++)
        for (int t = 0; t < op->T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < hd / 2; i++) {
                    int64_t o = ((int64_t)(b * op->T + t) * H + h) * hd + 2 * i;
                    double ang = t / pow(op->theta, 2.0 * i / hd);
                    double x0 = in[0][o], x1 = in[0][o + 1];
                    out[o] = x0 * cos(ang) - x1 * sin(ang);
                    out[o + 1] = x0 * sin(ang) + x1 * cos(ang);
                }
}

/* Causal GQA, softmax over materialised scores; aux (B,H,T) = lse. */
static void attention_d(const struct fd_op *op, double *out, double *const *in)
{
    int T = op->T, H = op->H, KV = op->KV, hd = op->hd;
    double sc[64]; /* T <= 64 in these tests */
    for (int b = 0; b < op->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int hk = h / (H / KV);
                const double *q = in[0] + ((b * T + t) * H + h) * hd;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    const double *k = in[1] + ((b * T + j) * KV + hk) * hd;
                    sc[j] = 0.0;
                    for (int d = 0; d < hd; d++)
                        sc[j] += q[d] * k[d] / sqrt(hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(sc[j] - mx);
                for (int d = 0; d < hd; d++) {
                    double o = 0.0;
                    for (int j = 0; j <= t; j++)
                        o += exp(sc[j] - mx) / sum * in[2][((b * T + j) * KV + hk) * hd + d];
                    out[((b * T + t) * H + h) * hd + d] = o;
                }
                if (op->aux)
                    op->aux[(b * H + h) * T + t] = mx + log(sum);
            }
}

static void gate_d(const struct fd_op *op, double *out, double *const *in)
{
    for (int64_t i = 0; i < op->out_len; i++)
        out[i] = in[0][i] * sigmoid_d(in[1][i]);
}

static void swiglu_d(const struct fd_op *op, double *out, double *const *in)
{
    for (int64_t i = 0; i < op->out_len; i++)
        out[i] = in[0][i] * sigmoid_d(in[0][i]) * in[1][i];
}

static void gelu_d(const struct fd_op *op, double *out, double *const *in)
{
    for (int64_t i = 0; i < op->out_len; i++) {
        double x = in[0][i];
        out[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
}

/* losses (N) = -log softmax(logits)[target], 0 where target < 0 */
static void crossentropy_d(const struct fd_op *op, double *out, double *const *in)
{
    for (int n = 0; n < op->N; n++) {
        const double *x = in[0] + n * op->V;
        double mx = -INFINITY, sum = 0.0;
        for (int i = 0; i < op->V; i++)
            mx = fmax(mx, x[i]);
        for (int i = 0; i < op->V; i++)
            sum += exp(x[i] - mx);
        out[n] = op->ids[n] < 0 ? 0.0 : mx + log(sum) - x[op->ids[n]];
    }
}

/* ---- GEMMs ---------------------------------------------------------------------------------- */

/* Float accumulation of up to 2053 O(1) products: errors grow like sqrt(K)
 * ulps, observed 1e-7 to 9e-7 of the output scale; 1e-5 leaves 10x room yet
 * catches any dropped or doubled term (>= 1e-3 of the scale). */
#define TOL_GEMM 1e-5

/* All three GEMMs on one shape against double loops, bias and += included. */
static void gemm_shape(int M, int K, int N)
{
    float *x = falloc((int64_t)M * K), *w = falloc((int64_t)N * K), *b = falloc(N);
    float *dy = falloc((int64_t)M * N), *y = falloc((int64_t)M * N);
    float *dx = falloc((int64_t)M * K), *dw = falloc((int64_t)N * K), *db = falloc(N);
    fill(x, NULL, (int64_t)M * K, 1.0);
    fill(w, NULL, (int64_t)N * K, 1.0);
    fill(b, NULL, N, 1.0);
    fill(dy, NULL, (int64_t)M * N, 1.0);
    fill(dx, NULL, (int64_t)M * K, 1.0);
    fill(dw, NULL, (int64_t)N * K, 1.0);
    fill(db, NULL, N, 1.0);
    float *dx0 = fcopy(dx, (int64_t)M * K), *dw0 = fcopy(dw, (int64_t)N * K), *db0 = fcopy(db, N);
    fill_const(y, (int64_t)M * N, 1e30f); /* fwd overwrites */

    ref_matmul_fwd(y, x, w, b, M, K, N);
    ref_matmul_bwd_data(dx, dy, w, M, K, N);
    ref_matmul_bwd_weight(dw, db, dy, x, M, K, N);

    double *want = dalloc((int64_t)M * N + (int64_t)M * K + (int64_t)N * K + N);
    double *wy = want, *wdx = wy + (int64_t)M * N, *wdw = wdx + (int64_t)M * K;
    double *wdb = wdw + (int64_t)N * K;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = b[n];
            for (int k = 0; k < K; k++)
                s += (double)x[(int64_t)m * K + k] * w[(int64_t)n * K + k];
            wy[(int64_t)m * N + n] = s;
        }
    /* dgrad and wgrad as sums of rank-1 terms, so the loops run along rows */
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double g = dy[(int64_t)m * N + n];
            for (int k = 0; k < K; k++) {
                wdx[(int64_t)m * K + k] += g * w[(int64_t)n * K + k];
                wdw[(int64_t)n * K + k] += g * x[(int64_t)m * K + k];
            }
            wdb[n] += g;
        }
    check_close("fwd", y, NULL, wy, (int64_t)M * N, TOL_GEMM);
    check_close("bwd_data (+=)", dx, dx0, wdx, (int64_t)M * K, TOL_GEMM);
    check_close("bwd_weight dw (+=)", dw, dw0, wdw, (int64_t)N * K, TOL_GEMM);
    check_close("bwd_weight dbias (+=)", db, db0, wdb, N, TOL_GEMM);

    /* without bias the forward overwrites, it does not add to the 1e30 */
    fill_const(y, (int64_t)M * N, 1e30f);
    ref_matmul_fwd(y, x, w, NULL, M, K, N);
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++)
            wy[(int64_t)m * N + n] -= b[n];
    check_close("fwd, no bias", y, NULL, wy, (int64_t)M * N, TOL_GEMM);

    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
    free(dx0), free(dw0), free(db0), free(want);
}

/* 01: an odd shape: every micro-tile is partial (MR 6, NR 16). */
static void gemm_odd_shape(void) { gemm_shape(37, 19, 23); }

/* 02: crosses the KC (256) slice, MT (96) and NT (256) tile boundaries. */
static void gemm_blocked_edges(void) { gemm_shape(131, 300, 270); }

/* 03: crosses the 2048 block boundaries (MB, KB; NB in dgrad, where n = K). */
static void gemm_big_blocks(void) { gemm_shape(2051, 2053, 5); }

/* 04: degenerate sizes: one row, one column, K = 1. */
static void gemm_tiny(void)
{
    gemm_shape(1, 5, 3);
    gemm_shape(4, 1, 1);
}

/* The transpose (the quantize op's column-wise copy): every element moved exactly, over the
 * 8 x 8 register blocks, their ragged edges and the 32 x 32 cache blocks; one shape above the
 * parallel threshold. */
static void transpose_shapes(void)
{
    static const int shapes[][2] = {{1, 1}, {1, 9}, {9, 1}, {7, 9}, {8, 8}, {16, 24}, {37, 45}, {64, 128}, {130, 33}, {300, 520}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int R = shapes[k][0], C = shapes[k][1];
        float *in = falloc((int64_t)R * C), *out = falloc((int64_t)R * C);
        for (int64_t i = 0; i < (int64_t)R * C; i++) in[i] = (float)i + 0.5f;
        for (int64_t i = 0; i < (int64_t)R * C; i++) out[i] = -1.0f;
        ref_transpose(out, in, R, C);
        int bad = 0;
        for (int i = 0; i < R && !bad; i++)
            for (int j = 0; j < C; j++)
                if (out[(int64_t)j * R + i] != in[(int64_t)i * C + j]) {
                    CHECKF(0, "%d x %d: out[%d][%d] = %g, want %g", R, C, j, i, out[(int64_t)j * R + i], in[(int64_t)i * C + j]);
                    bad = 1;
                    break;
                }
        free(in), free(out);
    }
}

/* ref_qmatmul_add, out += the FP8 product rounded before the add: against the product computed on
 * its own (ref_qmatmul_fwd) then added, bit for bit, with one contraction slice (in place) and
 * with three (through scratch), at a width that takes the fused-decode tile (96) and one that
 * does not (70). */
static void qgemm_add(void)
{
    static const int shapes[][3] = {{300, 130, 96}, {77, 600, 96}, {50, 200, 70}, {40, 520, 70}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        float *x = falloc((int64_t)M * K), *w = falloc((int64_t)N * K), *out = falloc((int64_t)M * N);
        float *want = falloc((int64_t)M * N), *prod = falloc((int64_t)M * N), *scratch = falloc((int64_t)M * N);
        fill(x, NULL, (int64_t)M * K, 3.0), fill(w, NULL, (int64_t)N * K, 0.05), fill(out, NULL, (int64_t)M * N, 1.0);
        uint8_t *xc = malloc((size_t)M * K), *wc = malloc((size_t)N * K);
        float *xs = falloc((int64_t)q_scale_count(M, K, 1, 128)), *ws = falloc((int64_t)q_scale_count(N, K, 1, 128));
        q_quantize(xc, xs, NULL, x, M, K, 1, 128, Q_E4M3, 0, 0.0f);
        q_quantize(wc, ws, NULL, w, N, K, 1, 128, Q_E4M3, 0, 0.0f);
        QDecoder da, db;
        q_decoder_init(&da, xc, xs, NULL, M, K, 1, 128, Q_E4M3, 0);
        q_decoder_init(&db, wc, ws, NULL, N, K, 1, 128, Q_E4M3, 0);
        ref_qmatmul_fwd(prod, &da, &db, NULL, M, K, N);
        for (int64_t i = 0; i < (int64_t)M * N; i++)
            want[i] = out[i] + prod[i];
        ref_qmatmul_add(out, scratch, &da, &db, M, K, N);
        CHECKF(memcmp(out, want, sizeof(float) * (size_t)M * N) == 0, "%d x %d x %d: differs from product then add", M,
               K, N);
        free(x), free(w), free(out), free(want), free(prod), free(scratch), free(xc), free(wc), free(xs), free(ws);
    }
}

/* The AVX-512 GEMM tile against the AVX2 one, bit for bit: the three GEMMs over shapes with
 * ragged 12-row and 32-column edges, several KC slices and the 2048-column block edge, with bias
 * and accumulation; and the direct tile (unpacked A, B packed or in place: up to 512 columns in
 * whole 32s) with 12-, 4- and 1-row edges, a contraction past one 2048 block, 64 to 512 columns. On a CPU without AVX-512 only the AVX2 tile exists and the case says so. */
static void gemm_isa_identical(void)
{
    static const int shapes[][3] = {{37, 300, 70}, {256, 768, 100}, {2048, 128, 384}, {13, 5, 33},
                                    {24, 600, 2080}, {12, 257, 32}, {2085, 64, 96}, {45, 520, 512}};
    int has_v4 = ref_gemm_isa(1);
    if (!has_v4)
        printf("gemm_isa_identical: no AVX-512 on this CPU, only the AVX2 tile ran\n");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        float *x = falloc((int64_t)M * K), *w = falloc((int64_t)N * K), *bias = falloc(N), *g = falloc((int64_t)M * N);
        fill(x, NULL, (int64_t)M * K, 1.0), fill(w, NULL, (int64_t)N * K, 1.0), fill(bias, NULL, N, 1.0);
        fill(g, NULL, (int64_t)M * N, 1.0);
        float *out[2], *dx[2], *dw[2], *db[2];
        for (int isa = 0; isa < 2; isa++) {
            ref_gemm_isa(isa ? has_v4 : 0);
            out[isa] = falloc((int64_t)M * N), dx[isa] = falloc((int64_t)M * K);
            dw[isa] = falloc((int64_t)N * K), db[isa] = falloc(N);
            fill_const(dx[isa], (int64_t)M * K, 0.25f); /* bwd_data and bwd_weight accumulate */
            fill_const(dw[isa], (int64_t)N * K, -0.5f);
            ref_matmul_fwd(out[isa], x, w, bias, M, K, N);
            ref_matmul_bwd_data(dx[isa], g, w, M, K, N);
            ref_matmul_bwd_weight(dw[isa], db[isa], g, x, M, K, N);
        }
        CHECKF(memcmp(out[0], out[1], sizeof(float) * M * N) == 0, "%dx%dx%d: fwd differs", M, K, N);
        CHECKF(memcmp(dx[0], dx[1], sizeof(float) * M * K) == 0, "%dx%dx%d: bwd_data differs", M, K, N);
        CHECKF(memcmp(dw[0], dw[1], sizeof(float) * N * K) == 0, "%dx%dx%d: bwd_weight differs", M, K, N);
        for (int isa = 0; isa < 2; isa++)
            free(out[isa]), free(dx[isa]), free(dw[isa]), free(db[isa]);
        free(x), free(w), free(bias), free(g);
    }
    ref_gemm_isa(has_v4);
}

/* The FP8 GEMM that decodes its operands while packing them (the CPU's qgemm) against the
 * two-step path it replaced, q_dequantize of both operands then ref_matmul_fwd: bit for bit,
 * with and without bias, over ragged panels, KC slices, the 2048-row block edge, and the
 * tilings the policies use (1 x 128 by 128 x 128, per tensor, MX 1 x 32 with E8M0 scales). */
/* NaN codes (E4M3 0x7F and 0xFF; E5M2 0x7D..0x7F, 0xFD..0xFF) and E5M2's infinities (0x7C, 0xFC)
 * written at a few places of a code array of n, spread out so that (in the shapes below) each
 * lands in its own row: a NaN beside an infinity in one row would hide a wrong infinity. */
static void plant_special(uint8_t *codes, int64_t n, QFormat f)
{
    static const uint8_t e4[] = {0x7F, 0xFF}, e5[] = {0x7C, 0xFC, 0x7D, 0xFE, 0x7F};
    const uint8_t *sp = f == Q_E4M3 ? e4 : e5;
    int ns = f == Q_E4M3 ? 2 : 5;
    for (int k = 0; k < ns; k++) {
        int64_t at = (k + 1) * n / (ns + 1);
        codes[at] = sp[k];
    }
}

static void qgemm_fused_decode(void)
{
    static const int shapes[][3] = {{37, 19, 23}, {131, 300, 270}, {6, 256, 16}, {2051, 130, 17}, {1, 5, 3}};
    static const struct { int atr, atc, btr, btc, e8m0; QFormat fa, fb; } tilings[] = {
        {1, 128, 128, 128, 0, Q_E4M3, Q_E4M3}, {0, 0, 0, 0, 0, Q_E5M2, Q_E4M3}, {1, 32, 1, 32, 1, Q_E4M3, Q_E5M2}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ti = 0; ti < sizeof tilings / sizeof tilings[0]; ti++) {
            int M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
            int e8 = tilings[ti].e8m0;
            int atr = tilings[ti].atr, atc = tilings[ti].atc, btr = tilings[ti].btr, btc = tilings[ti].btc;
            float *x = falloc((int64_t)M * K), *w = falloc((int64_t)N * K), *bias = falloc(N);
            fill(x, NULL, (int64_t)M * K, 3.0);
            fill(w, NULL, (int64_t)N * K, 0.05);
            fill(bias, NULL, N, 1.0);
            uint8_t *xc = malloc((size_t)M * K), *wc = malloc((size_t)N * K);
            float *xs = falloc((int64_t)q_scale_count(M, K, atr, atc)), *ws = falloc((int64_t)q_scale_count(N, K, btr, btc));
            uint8_t *xe = malloc(q_mx_scale_count(M, K, atr, atc)), *we = malloc(q_mx_scale_count(N, K, btr, btc));
            q_quantize(xc, xs, e8 ? xe : NULL, x, M, K, atr, atc, tilings[ti].fa, e8, 0.0f);
            q_quantize(wc, ws, e8 ? we : NULL, w, N, K, btr, btc, tilings[ti].fb, e8, 0.0f);
            /* a few NaN and infinity codes (quantization saturates, so it never writes them): the
             * packing decodes them through the table, the rest of their run by arithmetic */
            plant_special(xc, (int64_t)M * K, tilings[ti].fa);
            plant_special(wc, (int64_t)N * K, tilings[ti].fb);
            float *xd = falloc((int64_t)M * K), *wd = falloc((int64_t)N * K);
            q_dequantize(xd, xc, xs, xe, M, K, atr, atc, tilings[ti].fa, e8);
            q_dequantize(wd, wc, ws, we, N, K, btr, btc, tilings[ti].fb, e8);
            QDecoder da, db;
            q_decoder_init(&da, xc, xs, xe, M, K, atr, atc, tilings[ti].fa, e8);
            q_decoder_init(&db, wc, ws, we, N, K, btr, btc, tilings[ti].fb, e8);
            float *want = falloc((int64_t)M * N), *got = falloc((int64_t)M * N);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                fill_const(got, (int64_t)M * N, 1e30f);
                ref_matmul_fwd(want, xd, wd, with_bias ? bias : NULL, M, K, N);
                ref_qmatmul_fwd(got, &da, &db, with_bias ? bias : NULL, M, K, N);
                int64_t bad = -1, nz = 0;
                for (int64_t i = 0; i < (int64_t)M * N; i++) {
                    if (bad < 0 && memcmp(&want[i], &got[i], sizeof got[i]) != 0) bad = i;
                    nz += want[i] != 0.0f;
                }
                CHECKF(bad < 0, "%d x %d x %d, tiling %zu, bias %d: element %lld is %.9g, two-step path %.9g", M, K, N, ti,
                       with_bias, (long long)bad, bad < 0 ? 0.0 : got[bad], bad < 0 ? 0.0 : want[bad]);
                CHECKF(nz > 0, "%d x %d x %d: an all-zero product cannot tell the paths apart", M, K, N);
            }
            free(x), free(w), free(bias), free(xc), free(wc), free(xs), free(ws), free(xe), free(we);
            free(xd), free(wd), free(want), free(got);
        }
}

/* 05: the number of threads does not change a bit of any GEMM output (each
 * element belongs to one tile with a fixed K order). */
static void gemm_thread_invariance(void)
{
#ifdef _OPENMP
    int M = 200, K = 270, N = 300;
    float *x = falloc((int64_t)M * K), *w = falloc((int64_t)N * K), *dy = falloc((int64_t)M * N);
    float *y1 = falloc((int64_t)M * N), *y2 = falloc((int64_t)M * N);
    float *dw1 = falloc((int64_t)N * K), *dw2 = falloc((int64_t)N * K);
    fill(x, NULL, (int64_t)M * K, 1.0);
    fill(w, NULL, (int64_t)N * K, 1.0);
    fill(dy, NULL, (int64_t)M * N, 1.0);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    ref_matmul_fwd(y1, x, w, NULL, M, K, N);
    ref_matmul_bwd_weight(dw1, NULL, dy, x, M, K, N);
    omp_set_num_threads(3);
    ref_matmul_fwd(y2, x, w, NULL, M, K, N);
    ref_matmul_bwd_weight(dw2, NULL, dy, x, M, K, N);
    omp_set_num_threads(saved);
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t)M * N) == 0);
    CHECK(memcmp(dw1, dw2, sizeof(float) * (size_t)N * K) == 0);
    free(x), free(w), free(dy), free(y1), free(y2), free(dw1), free(dw2);
#endif
}

/* 06: matmul gradients by finite differences (the GEMM checks above test the
 * same sums directly; this ties fwd and bwd conventions together). */
static void matmul_grad(void)
{
    int M = 7, K = 5, N = 6;
    struct fd_op op = {.fwd = matmul_d, .in_len = {M * K, N * K, N}, .out_len = M * N,
                       .M = M, .K = K, .N = N};
    float *x = falloc(M * K), *w = falloc(N * K), *b = falloc(N), *R = falloc(M * N);
    double *xd = dalloc(M * K), *wd = dalloc(N * K), *bd = dalloc(N), *Rd = dalloc(M * N);
    fill(x, xd, M * K, 1.0);
    fill(w, wd, N * K, 1.0);
    fill(b, bd, N, 1.0);
    fill(R, Rd, M * N, 1.0);
    double *in[3] = {xd, wd, bd};
    float *dx = falloc(M * K), *dw = falloc(N * K), *db = falloc(N);
    ref_matmul_bwd_data(dx, R, w, M, K, N);
    ref_matmul_bwd_weight(dw, db, R, x, M, K, N);
    /* K, N, M <= 7 terms: a few ulps */
    check_grad("dinp", &op, in, Rd, 0, dx, NULL, 1e-5);
    check_grad("dw", &op, in, Rd, 1, dw, NULL, 1e-5);
    check_grad("dbias", &op, in, Rd, 2, db, NULL, 1e-5);
    free(x), free(w), free(b), free(R), free(xd), free(wd), free(bd), free(Rd);
    free(dx), free(dw), free(db);
}

/* ---- embeddings and norms -------------------------------------------------------------------- */

/* 07: embedding with learned positions; tokens repeat, so dwte rows collect
 * several contributions. */
static void embed(void)
{
    enum { B = 2, T = 5, C = 8, VOCAB = 7 };
    const int32_t tokens[B * T] = {3, 1, 3, 0, 6, 3, 3, 2, 1, 0};
    struct fd_op op = {.fwd = embed_d, .in_len = {VOCAB * C, T * C}, .out_len = B * T * C,
                       .B = B, .T = T, .C = C, .ids = tokens};
    float *wte = falloc(VOCAB * C), *wpe = falloc(T * C), *R = falloc(B * T * C);
    double *wted = dalloc(VOCAB * C), *wped = dalloc(T * C), *Rd = dalloc(B * T * C);
    fill(wte, wted, VOCAB * C, 1.0);
    fill(wpe, wped, T * C, 1.0);
    fill(R, Rd, B * T * C, 1.0);
    double *in[2] = {wted, wped};
    float *out = falloc(B * T * C);
    double *outd = dalloc(B * T * C);
    ref_embed_fwd(out, tokens, wte, wpe, B, T, C);
    embed_d(&op, outd, in);
    /* one float add: half an ulp */
    check_close("fwd", out, NULL, outd, B * T * C, 1e-7);
    float *dwte = falloc(VOCAB * C), *dwpe = falloc(T * C);
    fill(dwte, NULL, VOCAB * C, 1.0);
    fill(dwpe, NULL, T * C, 1.0);
    float *dwte0 = fcopy(dwte, VOCAB * C), *dwpe0 = fcopy(dwpe, T * C);
    ref_embed_bwd(dwte, dwpe, R, tokens, B, T, C);
    /* sums of <= 5 terms on top of a prefilled buffer: a few ulps */
    check_grad("dwte (+=)", &op, in, Rd, 0, dwte, dwte0, 1e-6);
    check_grad("dwpe (+=)", &op, in, Rd, 1, dwpe, dwpe0, 1e-6);
    /* no learned positions: out is the row of wte itself */
    ref_embed_fwd(out, tokens, wte, NULL, B, T, C);
    CHECK(memcmp(out + 2 * C, wte + 3 * C, C * sizeof(float)) == 0);
    free(wte), free(wpe), free(R), free(wted), free(wped), free(Rd), free(out), free(outd);
    free(dwte), free(dwpe), free(dwte0), free(dwpe0);
}

/* 08: RMSNorm forward, saved rstd and gradients. */
static void rmsnorm(void)
{
    enum { N = 5, C = 16 };
    double rstd_want[N];
    struct fd_op op = {.fwd = rmsnorm_d, .in_len = {N * C, C}, .out_len = N * C, .N = N, .C = C,
                       .eps = 1e-5};
    float *x = falloc(N * C), *w = falloc(C), *R = falloc(N * C), *out = falloc(N * C);
    double *xd = dalloc(N * C), *wd = dalloc(C), *Rd = dalloc(N * C), *outd = dalloc(N * C);
    float rstd[N];
    fill(x, xd, N * C, 2.0);
    fill(w, wd, C, 1.5);
    fill(R, Rd, N * C, 1.0);
    double *in[2] = {xd, wd};
    ref_rmsnorm_fwd(out, rstd, x, w, N, C, 1e-5f);
    op.aux = rstd_want;
    rmsnorm_d(&op, outd, in);
    op.aux = NULL;
    /* a 16-term float sum of squares, a sqrt and two products: ~10 ulps */
    check_close("fwd", out, NULL, outd, N * C, 1e-6);
    check_close("rstd", rstd, NULL, rstd_want, N, 1e-6);
    float *dx = falloc(N * C), *dw = falloc(C);
    fill(dx, NULL, N * C, 1.0);
    fill(dw, NULL, C, 1.0);
    float *dx0 = fcopy(dx, N * C), *dw0 = fcopy(dw, C);
    ref_rmsnorm_bwd(dx, dw, R, x, w, rstd, N, C);
    /* dx subtracts two O(1) terms (direct and through rstd): cancellation
     * costs up to ~C ulps of the larger one; 1e-5 is 100x that */
    check_grad("dinp (+=)", &op, in, Rd, 0, dx, dx0, 1e-5);
    check_grad("dw (+=)", &op, in, Rd, 1, dw, dw0, 1e-5);
    free(x), free(w), free(R), free(out), free(xd), free(wd), free(Rd), free(outd);
    free(dx), free(dw), free(dx0), free(dw0);
}

/* 09: LayerNorm with bias, forward, saved mean/rstd and gradients. */
static void layernorm(void)
{
    enum { N = 5, C = 16 };
    struct fd_op op = {.fwd = layernorm_d, .in_len = {N * C, C, C}, .out_len = N * C, .N = N,
                       .C = C, .eps = 1e-5};
    float *x = falloc(N * C), *w = falloc(C), *b = falloc(C), *R = falloc(N * C);
    double *xd = dalloc(N * C), *wd = dalloc(C), *bd = dalloc(C), *Rd = dalloc(N * C);
    float *out = falloc(N * C), mean[N], rstd[N];
    double *outd = dalloc(N * C);
    fill(x, xd, N * C, 2.0);
    fill(w, wd, C, 1.5);
    fill(b, bd, C, 1.0);
    fill(R, Rd, N * C, 1.0);
    double *in[3] = {xd, wd, bd};
    ref_layernorm_fwd(out, mean, rstd, x, w, b, N, C, 1e-5f);
    layernorm_d(&op, outd, in);
    /* two-pass mean/variance over 16 floats: ~10 ulps */
    check_close("fwd", out, NULL, outd, N * C, 1e-6);
    float *dx = falloc(N * C), *dw = falloc(C), *db = falloc(C);
    fill(dx, NULL, N * C, 1.0);
    fill(dw, NULL, C, 1.0);
    fill(db, NULL, C, 1.0);
    float *dx0 = fcopy(dx, N * C), *dw0 = fcopy(dw, C), *db0 = fcopy(db, C);
    ref_layernorm_bwd(dx, dw, db, R, x, w, mean, rstd, N, C);
    /* as RMSNorm: dx is a difference of three O(1) terms */
    check_grad("dinp (+=)", &op, in, Rd, 0, dx, dx0, 1e-5);
    check_grad("dw (+=)", &op, in, Rd, 1, dw, dw0, 1e-5);
    check_grad("db (+=)", &op, in, Rd, 2, db, db0, 1e-5);
    free(x), free(w), free(b), free(R), free(xd), free(wd), free(bd), free(Rd), free(out);
    free(outd), free(dx), free(dw), free(db), free(dx0), free(dw0), free(db0);
}

/* The norms take eight rows at once through register transposes (each row's sums in its own
 * lane) and the rest one row at a time: a row must come out the same bits either way. Nine rows
 * of 256, row 8 (the single-row path) a copy of row 3 (lane 3 of the eight-row path): outputs,
 * statistics and the input gradient (added to equal starting values) compared bit for bit. */
static void norm_rows_identical(void)
{
    enum { N = 9, C = 256 };
    float *x = falloc(N * C), *g = falloc(N * C), *w = falloc(C), *b = falloc(C), *out = falloc(N * C);
    float *dx = falloc(N * C), *dw = falloc(C), *db = falloc(C), mean[N], rstd[N];
    fill(x, NULL, N * C, 2.0), fill(g, NULL, N * C, 1.0), fill(w, NULL, C, 1.0), fill(b, NULL, C, 1.0);
    for (int i = 0; i < N * C; i++) /* magnitudes 1 to 1e3: a sum's rounding depends on its order */
        x[i] *= powf(10.0f, (float)(i % 4));
    memcpy(x + 8 * C, x + 3 * C, C * sizeof *x);
    memcpy(g + 8 * C, g + 3 * C, C * sizeof *g);
    for (int ln = 0; ln < 2; ln++) {
        fill_const(dx, N * C, 0.5f);
        if (ln) {
            ref_layernorm_fwd(out, mean, rstd, x, w, b, N, C, 1e-5f);
            ref_layernorm_bwd(dx, dw, db, g, x, w, mean, rstd, N, C);
            CHECKF(memcmp(&mean[3], &mean[8], sizeof *mean) == 0, "layernorm mean %g vs %g", mean[3], mean[8]);
        } else {
            ref_rmsnorm_fwd(out, rstd, x, w, N, C, 1e-5f);
            ref_rmsnorm_bwd(dx, dw, g, x, w, rstd, N, C);
        }
        const char *name = ln ? "layernorm" : "rmsnorm";
        CHECKF(memcmp(&rstd[3], &rstd[8], sizeof *rstd) == 0, "%s rstd %.9g vs %.9g", name, rstd[3], rstd[8]);
        CHECKF(memcmp(out + 3 * C, out + 8 * C, C * sizeof *out) == 0, "%s: output rows differ", name);
        CHECKF(memcmp(dx + 3 * C, dx + 8 * C, C * sizeof *dx) == 0, "%s: dx rows differ", name);
    }
    free(x), free(g), free(w), free(b), free(out), free(dx), free(dw), free(db);
}

/* ---- RoPE and attention -------------------------------------------------------------------- */

/* 10: RoPE forward, in place, and backward R^T (also in place). */
static void rope(void)
{
    enum { B = 2, T = 5, H = 3, HD = 8, n = B * T * H * HD };
    struct fd_op op = {.fwd = rope_d, .in_len = {n}, .out_len = n, .B = B, .T = T, .H = H,
                       .hd = HD, .theta = 10000.0};
    float *x = falloc(n), *R = falloc(n), *out = falloc(n), *dx = falloc(n);
    double *xd = dalloc(n), *Rd = dalloc(n), *outd = dalloc(n);
    fill(x, xd, n, 1.0);
    fill(R, Rd, n, 1.0);
    double *in[1] = {xd};
    ref_rope_fwd(out, x, B, T, H, HD, 10000.0f);
    rope_d(&op, outd, in);
    /* cos/sin rounded to float, then 2 products and a sum: a few ulps */
    check_close("fwd", out, NULL, outd, n, 1e-6);
    float *inplace = fcopy(x, n);
    ref_rope_fwd(inplace, inplace, B, T, H, HD, 10000.0f);
    CHECK(memcmp(inplace, out, n * sizeof(float)) == 0);
    fill_const(dx, n, 1e30f);
    ref_rope_bwd(dx, R, B, T, H, HD, 10000.0f);
    check_grad("dinp", &op, in, Rd, 0, dx, NULL, 1e-6);
    memcpy(inplace, R, n * sizeof(float));
    ref_rope_bwd(inplace, inplace, B, T, H, HD, 10000.0f);
    CHECK(memcmp(inplace, dx, n * sizeof(float)) == 0);
    free(x), free(R), free(out), free(dx), free(xd), free(Rd), free(outd), free(inplace);
}

/* 11: causal grouped-query attention, H = 4 query heads on KV = 2 kv heads,
 * T = 7: forward, lse, and dq, dk, dv. */
static void attention_gqa(void)
{
    enum { B = 2, T = 7, H = 4, KV = 2, HD = 8 };
    enum { nq = B * T * H * HD, nk = B * T * KV * HD };
    double lse_want[B * H * T];
    struct fd_op op = {.fwd = attention_d, .in_len = {nq, nk, nk}, .out_len = nq, .B = B, .T = T,
                       .H = H, .KV = KV, .hd = HD};
    float *q = falloc(nq), *k = falloc(nk), *v = falloc(nk), *R = falloc(nq), *out = falloc(nq);
    double *qd = dalloc(nq), *kd = dalloc(nk), *vd = dalloc(nk), *Rd = dalloc(nq);
    double *outd = dalloc(nq);
    float lse[B * H * T];
    /* scale 2 gives scores of a few units: peaked, not one-hot, softmaxes */
    fill(q, qd, nq, 2.0);
    fill(k, kd, nk, 2.0);
    fill(v, vd, nk, 1.0);
    fill(R, Rd, nq, 1.0);
    double *in[3] = {qd, kd, vd};
    ref_attention_fwd(out, lse, q, k, v, B, T, H, KV, HD);
    op.aux = lse_want;
    attention_d(&op, outd, in);
    op.aux = NULL;
    /* float dot products of 8 terms, expf, a 7-term weighted sum: ~10 ulps */
    check_close("fwd", out, NULL, outd, nq, 1e-5);
    check_close("lse", lse, NULL, lse_want, B * H * T, 1e-6);
    float *dq = falloc(nq), *dk = falloc(nk), *dv = falloc(nk);
    fill_const(dq, nq, 1e30f);
    fill_const(dk, nk, 1e30f);
    fill_const(dv, nk, 1e30f);
    ref_attention_bwd(dq, dk, dv, R, q, k, v, out, lse, B, T, H, KV, HD);
    /* ds = p (dp - D) subtracts O(1) numbers to get small ones, and dk sums
     * over 7 queries x 2 heads of the group: 1e-4 is ~100x the observed error */
    check_grad("dq", &op, in, Rd, 0, dq, NULL, 1e-4);
    check_grad("dk", &op, in, Rd, 1, dk, NULL, 1e-4);
    check_grad("dv", &op, in, Rd, 2, dv, NULL, 1e-4);
    free(q), free(k), free(v), free(R), free(out), free(qd), free(kd), free(vd), free(Rd);
    free(outd), free(dq), free(dk), free(dv);
}

/* 11b: the tiled attention at a shape that crosses its blocks (T = 77: key and query blocks
 * of 32 with a partial last one), grouped heads (H = 4 on KV = 2), and separate query-key and
 * value head dims (hdk = 40, hdv = 12: neither a multiple of the 32-float row chunk, as MLA's
 * 192/128 split needs), against a double-precision direct softmax (forward, lse) and the direct
 * gradient formulas (dv = P^T g, dp = g V^T, ds = P (dp - rowsum(P dp)), dq = scale ds K,
 * dk = scale ds^T Q) on the same floats; and bit-identical results for 1 and 3 threads. */
static void attention_tiled_dims_at(int HK, int HV, double qamp)
{
    enum { B = 2, T = 77, H = 4, KV = 2 };
    int nq = B * T * H * HK, nk = B * T * KV * HK, nv = B * T * KV * HV, no = B * T * H * HV;
    double scale = 1.0 / sqrt(HK);
    float *q = falloc(nq), *k = falloc(nk), *v = falloc(nv), *g = falloc(no), *out = falloc(no);
    float *lse = falloc(B * H * T), *dq = falloc(nq), *dk = falloc(nk), *dv = falloc(nv);
    double *outd = dalloc(no), *lsed = dalloc(B * H * T), *dqd = dalloc(nq), *dkd = dalloc(nk);
    double *dvd = dalloc(nv), *p = dalloc(T), *dp = dalloc(T);
    fill(q, NULL, nq, qamp);
    fill(k, NULL, nk, 2.0);
    fill(v, NULL, nv, 1.0);
    fill(g, NULL, no, 1.0);
    ref_attention_fwd_dims(out, lse, q, k, v, B, T, H, KV, HK, HV, (float)scale);
    fill_const(dq, nq, 1e30f);
    fill_const(dk, nk, 1e30f);
    fill_const(dv, nv, 1e30f);
    ref_attention_bwd_dims(dq, dk, dv, g, q, k, v, out, lse, B, T, H, KV, HK, HV, (float)scale);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                int hk = h / (H / KV);
                const float *qt = q + ((b * T + t) * H + h) * HK, *gt = g + ((b * T + t) * H + h) * HV;
                double mx = -INFINITY, sum = 0.0, dsum = 0.0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + ((b * T + j) * KV + hk) * HK;
                    double s = 0.0;
                    for (int d = 0; d < HK; d++)
                        s += (double)qt[d] * kj[d];
                    p[j] = s * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(p[j] - mx);
                lsed[(b * H + h) * T + t] = mx + log(sum);
                for (int j = 0; j <= t; j++) {
                    const float *vj = v + ((b * T + j) * KV + hk) * HV;
                    p[j] = exp(p[j] - mx) / sum;
                    dp[j] = 0.0;
                    for (int d = 0; d < HV; d++) {
                        outd[((b * T + t) * H + h) * HV + d] += p[j] * vj[d];
                        dp[j] += (double)gt[d] * vj[d];
                    }
                    dsum += p[j] * dp[j];
                }
                for (int j = 0; j <= t; j++) {
                    double ds = p[j] * (dp[j] - dsum) * scale;
                    const float *kj = k + ((b * T + j) * KV + hk) * HK;
                    for (int d = 0; d < HK; d++) {
                        dqd[((b * T + t) * H + h) * HK + d] += ds * kj[d];
                        dkd[((b * T + j) * KV + hk) * HK + d] += ds * qt[d];
                    }
                    for (int d = 0; d < HV; d++)
                        dvd[((b * T + j) * KV + hk) * HV + d] += p[j] * gt[d];
                }
            }
    /* float scores of 40 terms, expf, sums of up to 77 terms: ~1e-6; the backward subtracts
     * O(1) numbers to get small ones (ds), and dk/dv sum 2 heads x 77 queries: 1e-4, as in 11 */
    check_close("fwd", out, NULL, outd, no, 1e-5);
    check_close("lse", lse, NULL, lsed, B * H * T, 1e-6);
    check_close("dq", dq, NULL, dqd, nq, 1e-4);
    check_close("dk", dk, NULL, dkd, nk, 1e-4);
    check_close("dv", dv, NULL, dvd, nv, 1e-4);
#ifdef _OPENMP
    float *out3 = falloc(no), *lse3 = falloc(B * H * T), *dq3 = falloc(nq), *dk3 = falloc(nk), *dv3 = falloc(nv);
    float *out1 = falloc(no), *lse1 = falloc(B * H * T), *dq1 = falloc(nq), *dk1 = falloc(nk), *dv1 = falloc(nv);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    ref_attention_fwd_dims(out1, lse1, q, k, v, B, T, H, KV, HK, HV, (float)scale);
    ref_attention_bwd_dims(dq1, dk1, dv1, g, q, k, v, out1, lse1, B, T, H, KV, HK, HV, (float)scale);
    omp_set_num_threads(3);
    ref_attention_fwd_dims(out3, lse3, q, k, v, B, T, H, KV, HK, HV, (float)scale);
    ref_attention_bwd_dims(dq3, dk3, dv3, g, q, k, v, out3, lse3, B, T, H, KV, HK, HV, (float)scale);
    omp_set_num_threads(saved);
    CHECK(memcmp(out1, out3, sizeof(float) * no) == 0 && memcmp(lse1, lse3, sizeof(float) * B * H * T) == 0);
    CHECK(memcmp(dq1, dq3, sizeof(float) * nq) == 0 && memcmp(dk1, dk3, sizeof(float) * nk) == 0 &&
          memcmp(dv1, dv3, sizeof(float) * nv) == 0);
    free(out3), free(lse3), free(dq3), free(dk3), free(dv3), free(out1), free(lse1), free(dq1), free(dk1);
    free(dv1);
#endif
    free(q), free(k), free(v), free(g), free(out), free(lse), free(dq), free(dk), free(dv), free(outd);
    free(lsed), free(dqd), free(dkd), free(dvd), free(p), free(dp);
}

/* ... at the dims above, and at 64 / 32, whole 32-float row chunks: the updates of two rows (O,
 * dq) or two keys (dk, dv) at once (accumulate_rows2) */
static void attention_tiled_dims(void)
{
    attention_tiled_dims_at(40, 12, 2.0);
    attention_tiled_dims_at(64, 32, 2.0);
}

/* The AVX-512 attention (16-float vectors, four rows or keys at a time) against the AVX2 one,
 * bit for bit, forward and backward: whole 32-float row chunks at 32, 64 and 96 dims and MLA's
 * 192 / 128 split, the paired fallback at 40 / 12, grouped heads, and T = 77 and 130 (partial
 * last blocks, rows of the diagonal block that see one key). On a CPU without AVX-512 only the
 * AVX2 form exists and the case says so. */
static void attention_isa_identical(void)
{
    static const int shapes[][5] = {/* T, H, KV, hdk, hdv */
                                    {77, 4, 2, 32, 32}, {130, 2, 2, 64, 64}, {77, 3, 1, 96, 96},
                                    {40, 2, 1, 192, 128}, {77, 4, 2, 40, 12}, {33, 2, 2, 64, 32}};
    enum { B = 2 };
    int has_v4 = ref_gemm_isa(1);
    if (!has_v4)
        printf("attention_isa_identical: no AVX-512 on this CPU, only the AVX2 form ran\n");
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int T = shapes[si][0], H = shapes[si][1], KV = shapes[si][2], hk = shapes[si][3], hv = shapes[si][4];
        int nq = B * T * H * hk, nk = B * T * KV * hk, nv = B * T * KV * hv, no = B * T * H * hv;
        float scale = 1.0f / sqrtf((float)hk);
        float *q = falloc(nq), *k = falloc(nk), *v = falloc(nv), *g = falloc(no);
        fill(q, NULL, nq, 2.0), fill(k, NULL, nk, 2.0), fill(v, NULL, nv, 1.0), fill(g, NULL, no, 1.0);
        float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
        for (int isa = 0; isa < 2; isa++) {
            ref_gemm_isa(isa ? has_v4 : 0);
            out[isa] = falloc(no), lse[isa] = falloc(B * H * T);
            dq[isa] = falloc(nq), dk[isa] = falloc(nk), dv[isa] = falloc(nv);
            ref_attention_fwd_dims(out[isa], lse[isa], q, k, v, B, T, H, KV, hk, hv, scale);
            ref_attention_bwd_dims(dq[isa], dk[isa], dv[isa], g, q, k, v, out[isa], lse[isa], B, T, H, KV, hk, hv,
                                   scale);
        }
        CHECKF(memcmp(out[0], out[1], sizeof(float) * no) == 0, "T=%d %d/%d: fwd differs", T, hk, hv);
        CHECKF(memcmp(lse[0], lse[1], sizeof(float) * B * H * T) == 0, "T=%d %d/%d: lse differs", T, hk, hv);
        CHECKF(memcmp(dq[0], dq[1], sizeof(float) * nq) == 0, "T=%d %d/%d: dq differs", T, hk, hv);
        CHECKF(memcmp(dk[0], dk[1], sizeof(float) * nk) == 0, "T=%d %d/%d: dk differs", T, hk, hv);
        CHECKF(memcmp(dv[0], dv[1], sizeof(float) * nv) == 0, "T=%d %d/%d: dv differs", T, hk, hv);
        for (int isa = 0; isa < 2; isa++)
            free(out[isa]), free(lse[isa]), free(dq[isa]), free(dk[isa]), free(dv[isa]);
        free(q), free(k), free(v), free(g);
    }
    ref_gemm_isa(has_v4);
}

/* ---- elementwise -------------------------------------------------------------------------- */

/* Two-input elementwise op: forward and both gradients (overwritten). */
static void check_binary(const struct fd_op *op, double scale_a, double scale_b,
                         void (*fwd)(float *, const float *, const float *, int64_t),
                         void (*bwd)(float *, float *, const float *, const float *,
                                     const float *, int64_t),
                         double tol_fwd, double tol_bwd)
{
    int64_t n = op->out_len;
    float *a = falloc(n), *g = falloc(n), *R = falloc(n), *out = falloc(n);
    float *da = falloc(n), *dg = falloc(n);
    double *ad = dalloc(n), *gd = dalloc(n), *Rd = dalloc(n), *outd = dalloc(n);
    fill(a, ad, n, scale_a);
    fill(g, gd, n, scale_b);
    fill(R, Rd, n, 1.0);
    double *in[2] = {ad, gd};
    fwd(out, a, g, n);
    op->fwd(op, outd, in);
    check_close("fwd", out, NULL, outd, n, tol_fwd);
    fill_const(da, n, 1e30f);
    fill_const(dg, n, 1e30f);
    bwd(da, dg, R, a, g, n);
    check_grad("d first input", op, in, Rd, 0, da, NULL, tol_bwd);
    check_grad("d second input", op, in, Rd, 1, dg, NULL, tol_bwd);
    free(a), free(g), free(R), free(out), free(da), free(dg), free(ad), free(gd), free(Rd);
    free(outd);
}

/* 12: out = a * sigmoid(g); g spans +-6 so the sigmoid saturates at the
 * ends. A handful of float ops and an expf per element: ~2 ulps forward
 * (1e-6), the gradient chains two more factors (1e-5; observed 1.5e-7). */
static void gate(void)
{
    struct fd_op op = {.fwd = gate_d, .in_len = {64, 64}, .out_len = 64};
    check_binary(&op, 2.0, 6.0, ref_gate_fwd, ref_gate_bwd, 1e-6, 1e-5);
}

/* 13: out = silu(gate) * up, gate spanning +-6. As gate. */
static void swiglu(void)
{
    struct fd_op op = {.fwd = swiglu_d, .in_len = {64, 64}, .out_len = 64};
    check_binary(&op, 6.0, 2.0, ref_swiglu_fwd, ref_swiglu_bwd, 1e-6, 1e-5);
}

/* 14: GELU (tanh approximation) over +-5, forward and gradient. tanhf and the
 * cubic: a few ulps forward (1e-6); the derivative has 1 - tanh^2, which
 * cancels where tanh saturates (1e-5; observed 1.6e-7). */
static void gelu(void)
{
    enum { n = 64 };
    struct fd_op op = {.fwd = gelu_d, .in_len = {n}, .out_len = n};
    float *x = falloc(n), *R = falloc(n), *out = falloc(n), *dx = falloc(n);
    double *xd = dalloc(n), *Rd = dalloc(n), *outd = dalloc(n);
    fill(x, xd, n, 5.0);
    fill(R, Rd, n, 1.0);
    double *in[1] = {xd};
    ref_gelu_fwd(out, x, n);
    gelu_d(&op, outd, in);
    check_close("fwd", out, NULL, outd, n, 1e-6);
    fill_const(dx, n, 1e30f);
    ref_gelu_bwd(dx, R, x, n);
    check_grad("dinp", &op, in, Rd, 0, dx, NULL, 1e-5);
    free(x), free(R), free(out), free(dx), free(xd), free(Rd), free(outd);
}

/* 14b: GELU over an array of three chunks plus a ragged tail (ref.c splits elementwise work
 * into 16384-element chunks and pads each chunk's end), on x up to +-100, where e^(-2u)
 * overflows and is clamped: forward and derivative against the double formulas (relative
 * 1e-6 / 1e-5 of max(|want|, 1e-30 / 1e-3), times 1 + |u|: see below), and every element's
 * bits equal to the same element computed alone, so a result cannot depend on its lane, chunk
 * or thread. */
static void gelu_wide(void)
{
    enum { n = 3 * 16384 + 13 };
    float *x = falloc(n), *d = falloc(n), *out = falloc(n), *dx = falloc(n);
    for (int i = 0; i < n; i++) {
        x[i] = -12.0f + 24.0f * (float)i / (float)n;
        d[i] = 1.0f - 0.5f * (float)(i % 7) / 7.0f;
    }
    x[5] = -100.0f, x[6] = 100.0f, x[7] = -30.0f, x[8] = 30.0f, x[9] = 0.0f, x[n - 1] = -0.5f;
    ref_gelu_fwd(out, x, n);
    ref_gelu_bwd(dx, d, x, n);
    double ef = 0, eb = 0;
    for (int i = 0; i < n; i++) {
        double xv = x[i], k = sqrt(2.0 / M_PI), u = k * (xv + 0.044715 * xv * xv * xv);
        /* 0.5 (1 + tanh u) as 1 / (1 + e^(-2u)): in double, 1 + tanh u cancels to 0 below x ~ -7 */
        double sg = 1.0 / (1.0 + exp(-2.0 * u)), f = xv * sg;
        double g = (sg + 2.0 * xv * sg * (1.0 - sg) * k * (1.0 + 3 * 0.044715 * xv * xv)) * d[i];
        /* u is rounded to float (error ~ |u| ulps) before e^(-2u): the result's relative
         * error scales with |u| where s is tiny, for any float evaluation */
        double c = 1.0 + fabs(u);
        double rf = fabs(out[i] - f) / fmax(fabs(f), 1e-30) / c;
        double rb = fabs(dx[i] - g) / fmax(fabs(g), 1e-3) / c; /* g crosses 0 near x = -0.75 */
        ef = rf > ef ? rf : ef;
        eb = rb > eb ? rb : eb;
    }
    CHECKF(ef <= 1e-6, "gelu fwd: relative error %.3g", ef);
    CHECKF(eb <= 1e-5, "gelu bwd: relative error %.3g", eb);
    for (int i = 0; i < n; i += 997) {
        float o1, g1;
        ref_gelu_fwd(&o1, x + i, 1);
        ref_gelu_bwd(&g1, d + i, x + i, 1);
        CHECKF(memcmp(&o1, out + i, 4) == 0 && memcmp(&g1, dx + i, 4) == 0,
               "gelu element %d differs alone", i);
    }
    free(x), free(d), free(out), free(dx);
}

/* 14b: SwiGLU over +-12 and a few extremes, several 16384-element chunks and a ragged end (the
 * 8-lane path with vexp8), against double; each element alone gives the same bits (no lane or
 * chunk dependence). */
static void swiglu_wide(void)
{
    enum { n = 3 * 16384 + 13 };
    float *g = falloc(n), *u = falloc(n), *d = falloc(n), *out = falloc(n), *dg = falloc(n), *du = falloc(n);
    for (int i = 0; i < n; i++) {
        g[i] = -12.0f + 24.0f * (float)i / (float)n;
        u[i] = 0.5f + (float)(i % 5) / 5.0f;
        d[i] = 1.0f - 0.5f * (float)(i % 7) / 7.0f;
    }
    g[5] = -100.0f, g[6] = 100.0f, g[7] = -30.0f, g[8] = 30.0f, g[9] = 0.0f, g[n - 1] = -0.5f;
    ref_swiglu_fwd(out, g, u, n);
    ref_swiglu_bwd(dg, du, d, g, u, n);
    double ef = 0, eg = 0, eu = 0;
    for (int i = 0; i < n; i++) {
        double x = g[i], s = 1.0 / (1.0 + exp(-x)), f = x * s * u[i];
        double wu = d[i] * x * s, wg = d[i] * u[i] * (s + x * s * (1.0 - s));
        double c = 1.0 + fabs(x); /* e^-x of a float x: relative error grows with |x| */
        double rf = fabs(out[i] - f) / fmax(fabs(f), 1e-30) / c;
        double ru = fabs(du[i] - wu) / fmax(fabs(wu), 1e-30) / c;
        double rg = fabs(dg[i] - wg) / fmax(fabs(wg), 1e-3) / c; /* silu' crosses 0 near x = -1.28 */
        ef = rf > ef ? rf : ef, eu = ru > eu ? ru : eu, eg = rg > eg ? rg : eg;
    }
    CHECKF(ef <= 1e-6 && eu <= 1e-6, "swiglu fwd / dup: relative error %.3g / %.3g", ef, eu);
    CHECKF(eg <= 1e-5, "swiglu dgate: relative error %.3g", eg);
    for (int i = 0; i < n; i += 997) {
        float o1, g1, u1;
        ref_swiglu_fwd(&o1, g + i, u + i, 1);
        ref_swiglu_bwd(&g1, &u1, d + i, g + i, u + i, 1);
        CHECKF(memcmp(&o1, out + i, 4) == 0 && memcmp(&g1, dg + i, 4) == 0 && memcmp(&u1, du + i, 4) == 0,
               "swiglu element %d differs alone", i);
    }
    free(g), free(u), free(d), free(out), free(dg), free(du);
}

/* 15: residual add (out aliasing an input) and gradient accumulation. */
static void add_accumulate(void)
{
    float a[4] = {1.0f, -2.0f, 0.5f, 3.0f}, b[4] = {0.25f, 2.0f, -1.5f, 1e-8f};
    float out[4];
    ref_add_fwd(out, a, b, 4);
    CHECK(out[0] == 1.25f && out[1] == 0.0f && out[2] == -1.0f && out[3] == 3.0f);
    ref_add_fwd(a, a, b, 4); /* in place */
    CHECK(memcmp(a, out, sizeof out) == 0);
    ref_accumulate(b, out, 4);
    CHECK(b[0] == 1.5f && b[1] == 2.0f && b[2] == -2.5f && b[3] == 3.0f);
}

/* ---- loss ------------------------------------------------------------------------------------ */

/* 16: fused softmax cross-entropy with one ignored target: losses, and the
 * gradient of L = dloss * sum(losses) (the backward's scalar dloss), in place. */
static void crossentropy(void)
{
    enum { N = 6, V = 11 };
    const int32_t targets[N] = {3, 0, -1, 10, 7, 3};
    const float dloss = 0.37f;
    struct fd_op op = {.fwd = crossentropy_d, .in_len = {N * V}, .out_len = N, .N = N, .V = V,
                       .ids = targets};
    float *x = falloc(N * V), losses[N];
    double *xd = dalloc(N * V), lossd[N], Rd[N];
    fill(x, xd, N * V, 3.0);
    for (int n = 0; n < N; n++)
        Rd[n] = dloss;
    double *in[1] = {xd};
    fill_const(losses, N, 1e30f);
    ref_crossentropy_fwd(losses, x, targets, N, V);
    crossentropy_d(&op, lossd, in);
    /* an 11-term expf sum and a logf: a few ulps of the loss */
    check_close("losses", losses, NULL, lossd, N, 1e-6);
    CHECK(losses[2] == 0.0f);
    float *dx = fcopy(x, N * V);
    ref_crossentropy_bwd(dx, dx, targets, dloss, N, V); /* dlogits aliasing logits */
    /* softmax - onehot: the target element cancels p - 1 (observed 6e-8) */
    check_grad("dlogits", &op, in, Rd, 0, dx, NULL, 1e-5);
    for (int i = 0; i < V; i++)
        CHECKF(dx[2 * V + i] == 0.0f, "ignored row: dlogits[2][%d] = %g", i, dx[2 * V + i]);
    /* not in place gives the same bits */
    float *dx2 = falloc(N * V);
    ref_crossentropy_bwd(dx2, x, targets, dloss, N, V);
    CHECK(memcmp(dx, dx2, sizeof(float) * N * V) == 0);
    free(x), free(xd), free(dx), free(dx2);
}

/* ---- rounding and optimizer ---------------------------------------------------------------- */

/* 17: ref_round to BF16 and FP16 on values worked out by hand (RNE). */
static void round_storage(void)
{
    /* BF16 keeps 8 significant bits. 1 + 2^-8 is halfway between 1 and
     * 1 + 2^-7: ties to even, 1. 1 + 3*2^-8 is halfway between 1 + 2^-7 and
     * 1 + 2^-6: ties to even, 1 + 2^-6. 0.1 = 204.8 * 2^-11 -> 205 * 2^-11.
     * pi = 201.06 * 2^-6 -> 201 * 2^-6 = 3.140625. */
    float x[6] = {1.0f, 1.00390625f, 1.01171875f, 0.1f, -3.14159265f, 0.0f};
    const float bf[6] = {1.0f, 1.0f, 1.015625f, 0.10009765625f, -3.140625f, 0.0f};
    ref_round(x, 6, REF_BF16);
    for (int i = 0; i < 6; i++)
        CHECKF(x[i] == bf[i], "bf16 [%d]: %.9g, want %.9g", i, x[i], bf[i]);
    /* FP16 keeps 11: 1 + 2^-11 ties to 1; 0.1 = 1638.4 * 2^-14 -> 1638 * 2^-14;
     * 3*2^-26 is 0.75 of the smallest subnormal 2^-24: rounds up to it;
     * 65504 is the largest finite, 1e5 overflows to Inf. */
    float y[5] = {1.00048828125f, 0.1f, 4.470348358154297e-08f, 65504.0f, 1e5f};
    const float f16[5] = {1.0f, 0.0999755859375f, 5.960464477539063e-08f, 65504.0f, INFINITY};
    ref_round(y, 5, REF_FP16);
    for (int i = 0; i < 5; i++)
        CHECKF(y[i] == f16[i], "fp16 [%d]: %.9g, want %.9g", i, y[i], f16[i]);
    float z[2] = {0.1f, 1.00390625f};
    ref_round(z, 2, REF_FP32);
    CHECK(z[0] == 0.1f && z[1] == 1.00390625f);
    /* ref_round's inlined BF16 rounding is the exported conversion pair bit for bit (NaNs
     * included) over every 4093rd float bit pattern and the ties around 1 */
    enum { NS = (int)(4294967296.0 / 4093) + 1 };
    float *sw = falloc(NS + 2);
    uint32_t *want = calloc(NS + 2, sizeof *want);
    for (int64_t k = 0; k < NS + 2; k++) {
        uint32_t u = k < NS ? (uint32_t)(k * 4093) : 0x3F808000u + (uint32_t)(k - NS) * 0x10000u;
        memcpy(&sw[k], &u, sizeof u);
        float r = fp8c_bf16_to_f32(fp8c_f32_to_bf16(sw[k]));
        memcpy(&want[k], &r, sizeof r);
    }
    ref_round(sw, NS + 2, REF_BF16);
    int64_t bad = 0;
    for (int64_t k = 0; k < NS + 2; k++) {
        uint32_t got;
        memcpy(&got, &sw[k], sizeof got);
        bad += got != want[k];
    }
    CHECKF(bad == 0, "bf16 sweep: %lld of %d patterns differ from fp8c_f32_to_bf16", (long long)bad, NS + 2);
    free(sw), free(want);
}

/* 18: one AdamW step worked out by hand, lr 0.1, betas (0.9, 0.999), eps 1e-8,
 * weight decay 0.1.
 * Step 1 (bias corrections 0.1 and 0.001), FP32 master, BF16 param and moments:
 *   [0] master 1, grad 0.5 x grad_scale 2 = 1: m = 0.1, v = 0.001, mhat = vhat = 1,
 *       master = 1 - 0.1 (1/(1+1e-8) + 0.1 * 1) = 0.89;
 *       param = bf16(0.89) = 228 * 2^-8 = 0.890625;
 *       m = bf16(0.1) = 0.10009765625, v = bf16(0.001) = 131 * 2^-17 = 0.00099945068359375.
 *   [1] master -2, grad -0.25 x 2 = -0.5: m = -0.05, v = 0.00025, mhat = -0.5, vhat = 0.25,
 *       master = -2 - 0.1 (-0.5/0.5 + 0.1 * -2) = -1.88; param = bf16 = -241 * 2^-7 = -1.8828125.
 * Step 2, no master, FP32 everywhere: param 0.5, m 0.1, v 0.01, grad 0:
 *   m = 0.09, v = 0.00999, corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999,
 *   mhat = 0.4736842, vhat = 4.9974987, sqrt = 2.2355086,
 *   param = 0.5 - 0.1 (0.2118910 + 0.1 * 0.5) = 0.4738109. */
static void adamw_hand(void)
{
    float param[2] = {1.0f, -2.0f}, master[2] = {1.0f, -2.0f}, m[2] = {0}, v[2] = {0};
    const float grad[2] = {0.5f, -0.25f};
    ref_adamw(param, master, m, v, grad, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f, 1, 2.0f, REF_BF16,
              REF_BF16);
    /* float arithmetic: a few ulps of 1 */
    CHECKF(fabsf(master[0] - 0.89f) < 1e-6f, "master[0] = %.9g", master[0]);
    CHECKF(fabsf(master[1] + 1.88f) < 1e-6f, "master[1] = %.9g", master[1]);
    CHECKF(param[0] == 0.890625f && param[1] == -1.8828125f, "param = %.9g %.9g", param[0],
           param[1]);
    CHECKF(m[0] == 0.10009765625f && v[0] == 0.00099945068359375f, "m %.9g v %.9g", m[0], v[0]);
    CHECKF(m[1] == -0.050048828125f, "m[1] = %.9g", m[1]); /* bf16(-0.05) = -205 * 2^-12 */

    float p2 = 0.5f, m2 = 0.1f, v2 = 0.01f;
    const float g2 = 0.0f;
    ref_adamw(&p2, NULL, &m2, &v2, &g2, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f, 2, 1.0f, REF_FP32,
              REF_FP32);
    CHECKF(fabsf(m2 - 0.09f) < 1e-8f && fabsf(v2 - 0.00999f) < 2e-9f, "m %.9g v %.9g", m2, v2);
    /* the 1/0.001999 correction magnifies v's rounding: ~10 ulps */
    CHECKF(fabsf(p2 - 0.4738109f) < 2e-6f, "param = %.9g, want 0.4738109", p2);
}

/* 19: global-norm helpers: sum of squares in double, finiteness. */
static void sumsq_finite(void)
{
    enum { n = 1000 };
    float *x = falloc(n);
    for (int i = 0; i < n; i++)
        x[i] = (float)(i + 1);
    /* sum of k^2 for k = 1..1000 = 1000 1001 2001 / 6, exact in double */
    CHECK(ref_sumsq(x, n) == 333833500.0);
    CHECK(ref_sumsq(x, 0) == 0.0);
    CHECK(ref_all_finite(x, n) == 1);
    x[517] = INFINITY;
    CHECK(ref_all_finite(x, n) == 0);
    x[517] = NAN;
    CHECK(ref_all_finite(x, n) == 0);
    CHECK(ref_all_finite(x, 517) == 1);
    free(x);
    /* several chunks with ragged ends: a NaN or Inf anywhere is found (vector part, the tail of
     * the last chunk), the sum of squares is within 1e-15 of a long-double sum and the same
     * bits on 1 and 2 threads */
    enum { big = 3 * 16384 + 37 };
    float *y = falloc(big);
    long double want = 0;
    for (int i = 0; i < big; i++) {
        y[i] = (float)((i % 97) - 48) * 0.013f;
        want += (long double)y[i] * y[i];
    }
    double got = ref_sumsq(y, big);
    CHECKF(fabs(got - (double)want) <= 1e-15 * (double)want, "sumsq %.17g vs %.17Lg", got, want);
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    double one = ref_sumsq(y, big);
    omp_set_num_threads(nt);
    CHECK(memcmp(&one, &got, sizeof one) == 0);
#endif
    CHECK(ref_all_finite(y, big) == 1);
    const int where[] = {0, 7, 8, 16383, 16384, 2 * 16384 + 9, big - 37, big - 1};
    for (size_t k = 0; k < sizeof where / sizeof *where; k++) {
        float keep = y[where[k]];
        y[where[k]] = k % 2 ? NAN : -INFINITY;
        CHECKF(ref_all_finite(y, big) == 0, "non-finite at %d not found", where[k]);
        y[where[k]] = keep;
    }
    free(y);
}

int main(void)
{
    RUN_CASE(gemm_odd_shape);
    RUN_CASE(gemm_blocked_edges);
    RUN_CASE(gemm_big_blocks);
    RUN_CASE(gemm_tiny);
    RUN_CASE(gemm_thread_invariance);
    RUN_CASE(transpose_shapes);
    RUN_CASE(qgemm_fused_decode);
    RUN_CASE(qgemm_add);
    RUN_CASE(gemm_isa_identical);
    RUN_CASE(matmul_grad);
    RUN_CASE(embed);
    RUN_CASE(rmsnorm);
    RUN_CASE(layernorm);
    RUN_CASE(norm_rows_identical);
    RUN_CASE(rope);
    RUN_CASE(attention_gqa);
    RUN_CASE(attention_tiled_dims);
    RUN_CASE(attention_isa_identical);
    RUN_CASE(gate);
    RUN_CASE(swiglu);
    RUN_CASE(swiglu_wide);
    RUN_CASE(gelu);
    RUN_CASE(gelu_wide);
    RUN_CASE(add_accumulate);
    RUN_CASE(crossentropy);
    RUN_CASE(round_storage);
    RUN_CASE(adamw_hand);
    RUN_CASE(sumsq_finite);
    CHECK_EXIT();
}
