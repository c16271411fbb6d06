/* lt.c: plan GEMM steps -> cuBLASLt matmuls (see lt.h). The first half is pure C and decides
 * whether cuBLASLt can run a step and with which parameters; the second half talks to
 * libcublasLt through dlopen, so fp8c builds and its tests run on machines without CUDA.
 *
 * Row-major plan tensors, column-major cuBLASLt. A row-major X(r,c) with row stride c is, byte
 * for byte, the column-major matrix X^T of c rows and r columns with ld = c. Every step below
 * is rewritten as a product of such transposes, so that D^T's buffer is the plan's output:
 *
 *   MATMUL_FWD        out(M,N) = inp(M,K) w(N,K)^T + bias(N)
 *                     out^T(N,M) = w(N,K) inp^T(K,M); w's buffer is w^T (K x N, ld K), so
 *                     A := w, op T, lda = K;  B := inp, buffer inp^T (K x M, ld K), op N, ldb = K;
 *                     m = N, n = M, k = K, D := out (N x M, ldd = N). The bias has m = N
 *                     entries, one per row of D, i.e. per output feature: the BIAS epilogue.
 *   MATMUL_BWD_DATA   dinp(M,K) += dout(M,N) w(N,K)
 *                     dinp^T(K,M) = w^T(K,N) dout^T(N,M); A := w, buffer w^T (K x N, ld K),
 *                     op N, lda = K;  B := dout, buffer dout^T (N x M, ld N), op N, ldb = N;
 *                     m = K, n = M, k = N, C = D := dinp (K x M, ldd = K), beta = 1.
 *   MATMUL_BWD_WEIGHT dw(N,K) += dout^T(N,M) inp(M,K)
 *                     dw^T(K,N) = inp^T(K,M) dout(M,N); A := inp, buffer inp^T (K x M, ld K),
 *                     op N, lda = K;  B := dout, buffer dout^T (N x M, ld N), op T (giving
 *                     dout, M x N), ldb = N; m = K, n = N, k = M, C = D := dw (K x N, ldd = K),
 *                     beta = 1. dbias is left to the runtime's kernel (post_dbias).
 *   QGEMM             out(P,Q) (+)= deq(a)(P,R) deq(b)(Q,R)^T: the MATMUL_FWD pattern with
 *                     inp := a, w := b. A := b codes (R x Q, ld R), op T; B := a codes
 *                     (R x P, ld R), op N; m = Q, n = P, k = R, ldd = Q. This is the TN layout
 *                     FP8 kernels need (both operands K-contiguous, notes 1.2); the other two
 *                     layouts above are for 16/32-bit operands, which have no TN rule.
 *
 * QGEMM scales (quant.h layouts vs notes 1.7, with cuBLAS A = plan b (rows Q = m) and cuBLAS
 * B = plan a (rows P = n), L = ceil(R/128), L4 = L rounded up to 4):
 *   per tensor (tiles 0x0)  scale_inv[0]                     -> SCALAR_32F, 1 float
 *   1x128                   scale_inv[i + blk*rows]          -> VEC128_32F: sA(i,b) = sA[i + b*m],
 *                                                               sB(j,b) = sB[j + b*n]; rows*L floats
 *   128x128                 scale_inv[blk + (i/128)*L4]      -> BLK128x128_32F: sA(i,b) =
 *                                                               sA[b + (i/128)*L4]; L4*ceil(rows/128)
 * scale_inv is a dequantization factor (x ~= code * scale_inv), which is what cuBLASLt's A/B
 * scale pointers multiply by (notes 1.4).
 */
#include "lt.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_abi.h"

#define MIB (1024ull * 1024ull)

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && n) vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Alignment a plan offset guarantees when the class base is 256-byte aligned. */
static uint32_t align_of(int64_t offset) {
    if (offset <= 0) return 256;
    int64_t low = offset & -offset;
    return low >= 256 ? 256 : (uint32_t)low;
}

static int type_of_dtype(TensorDtype t) {
    switch (t) {
    case TD_F32: return LT_R_32F;
    case TD_BF16: return LT_R_16BF;
    case TD_F16: return LT_R_16F;
    default: return -1;
    }
}

static int is_fp8(int type) { return type == LT_R_8F_E4M3 || type == LT_R_8F_E5M2; }
static int is_block(int mode) { return mode == LT_SCALE_VEC128_32F || mode == LT_SCALE_BLK128x128_32F; }

const char *lt_type_name(int type) {
    switch (type) {
    case LT_R_32F: return "f32";
    case LT_R_16F: return "f16";
    case LT_R_16BF: return "bf16";
    case LT_R_8F_E4M3: return "e4m3";
    case LT_R_8F_E5M2: return "e5m2";
    default: return "?";
    }
}

const char *lt_scale_mode_name(int mode) {
    switch (mode) {
    case LT_SCALE_NONE: return "none";
    case LT_SCALE_SCALAR_32F: return "SCALAR_32F";
    case LT_SCALE_VEC128_32F: return "VEC128_32F";
    case LT_SCALE_BLK128x128_32F: return "BLK128x128_32F";
    default: return "?";
    }
}

/* cublasStatus_t, cublas_api.h:90-99 (LT_STATUSES in lt_abi.h). */
const char *lt_status_name(int status) {
    switch (status) {
#define NAME(name, value) case value: return #name;
        LT_STATUSES(NAME)
#undef NAME
    default: return "unknown cuBLAS status";
    }
}

void lt_format(const LtGemm *g, char *buf, size_t n) {
    char sa[40] = "", sb[40] = "", epi[40] = "DEFAULT";
    if (g->fp8) {
        snprintf(sa, sizeof sa, " [%s]", lt_scale_mode_name(g->a_scale_mode));
        snprintf(sb, sizeof sb, " [%s]", lt_scale_mode_name(g->b_scale_mode));
    }
    if (g->epilogue == LT_EPI_BIAS) snprintf(epi, sizeof epi, "BIAS(%s)", lt_type_name(g->bias_type));
    snprintf(buf, n, "m=%lld n=%lld k=%lld A=%s/%c/lda=%lld%s B=%s/%c/ldb=%lld%s C=D=%s/ldd=%lld alpha=%g beta=%g epilogue=%s",
             (long long)g->m, (long long)g->n, (long long)g->k, lt_type_name(g->type_a), g->transa == LT_OP_T ? 'T' : 'N',
             (long long)g->lda, sa, lt_type_name(g->type_b), g->transb == LT_OP_T ? 'T' : 'N', (long long)g->ldb, sb,
             lt_type_name(g->type_d), (long long)g->ldd, (double)g->alpha, (double)g->beta, epi);
}

/* ---- describe ----------------------------------------------------------------------------- */

/* The step's first n tensor arguments exist and have want[k] elements (want < 0: unchecked);
 * arguments in the `optional` bit mask may be absent. */
static int check_args(const Plan *p, const RtStep *s, const int64_t *want, int n, unsigned optional, char *why, size_t wn) {
    for (int k = 0; k < n; k++) {
        int id = s->args[k];
        if (id < 0 && (optional >> k & 1u)) continue;
        if (id < 0 || id >= p->nt) return fail(why, wn, "argument %d names no tensor", k);
        const RtTensor *t = &p->t[id];
        if (want[k] >= 0 && t->n != want[k])
            return fail(why, wn, "tensor '%s' has %lld elements, the step's dimensions need %lld", t->name, (long long)t->n,
                        (long long)want[k]);
    }
    return 0;
}

static void layout_dims(LtGemm *g) {
    g->rows_a = g->transa == LT_OP_N ? g->m : g->k;
    g->cols_a = g->transa == LT_OP_N ? g->k : g->m;
    g->rows_b = g->transb == LT_OP_N ? g->k : g->n;
    g->cols_b = g->transb == LT_OP_N ? g->n : g->k;
}

static void bind_aligns(const Plan *p, LtGemm *g) {
    g->align_a = align_of(p->t[g->a].offset);
    g->align_b = align_of(p->t[g->b].offset);
    g->align_c = align_of(p->t[g->c].offset);
    g->align_d = align_of(p->t[g->d].offset);
}

/* Fuse bias tensor id into the epilogue if cuBLASLt takes its dtype, else leave it to the caller. */
static void attach_bias(const Plan *p, LtGemm *g, int id, int want_type) {
    if (id < 0) return;
    if (type_of_dtype(p->t[id].dtype) == want_type) {
        g->bias = id;
        g->epilogue = LT_EPI_BIAS;
        g->bias_type = want_type;
    } else {
        g->post_bias = id;
    }
}

static int describe_matmul(const Plan *p, const RtStep *s, LtGemm *g, char *why, size_t wn) {
    const int64_t M = s->ints[0], K = s->ints[1], N = s->ints[2];
    int bias = -1;
    switch (s->op) {
    case OP_MATMUL_FWD: { /* out | inp, w, ?bias */
        const int64_t want[4] = {M * N, M * K, N * K, N};
        if (check_args(p, s, want, 4, 1u << 3, why, wn)) return -1;
        g->m = N, g->n = M, g->k = K;
        g->transa = LT_OP_T, g->transb = LT_OP_N;
        g->lda = K, g->ldb = K, g->ldc = g->ldd = N;
        g->a = s->args[2], g->b = s->args[1], g->d = s->args[0];
        g->beta = 0;
        bias = s->args[3];
        break;
    }
    case OP_MATMUL_BWD_DATA: { /* +dinp | dout, w */
        const int64_t want[3] = {M * K, M * N, N * K};
        if (check_args(p, s, want, 3, 0, why, wn)) return -1;
        g->m = K, g->n = M, g->k = N;
        g->transa = LT_OP_N, g->transb = LT_OP_N;
        g->lda = K, g->ldb = N, g->ldc = g->ldd = K;
        g->a = s->args[2], g->b = s->args[1], g->d = s->args[0];
        g->beta = 1;
        break;
    }
    default: { /* OP_MATMUL_BWD_WEIGHT: +dw, +?dbias | dout, inp */
        const int64_t want[4] = {N * K, N, M * N, M * K};
        if (check_args(p, s, want, 4, 1u << 1, why, wn)) return -1;
        g->m = K, g->n = N, g->k = M;
        g->transa = LT_OP_N, g->transb = LT_OP_T;
        g->lda = K, g->ldb = N, g->ldc = g->ldd = K;
        g->a = s->args[3], g->b = s->args[2], g->d = s->args[0];
        g->beta = 1;
        g->post_dbias = s->args[1];
        break;
    }
    }
    g->c = g->d;
    layout_dims(g);
    const int *ids[3] = {&g->a, &g->b, &g->d};
    int *types[3] = {&g->type_a, &g->type_b, &g->type_d};
    for (int i = 0; i < 3; i++) {
        const RtTensor *t = &p->t[*ids[i]];
        *types[i] = type_of_dtype(t->dtype);
        if (*types[i] < 0)
            return fail(why, wn, "tensor '%s' is %s; a float GEMM reads f32, bf16 or f16", t->name,
                        fp8c_tensor_dtype_names[t->dtype]);
    }
    g->type_c = g->type_d;
    /* Outside FP8 the bias has D's type (cublasLt.h:1537-1547). */
    attach_bias(p, g, bias, g->type_d);
    bind_aligns(p, g);
    return 0;
}

/* Scale mode of a plan operand quantized with tr x tc tiles over its (rows, K) matrix. */
static int scale_mode(int64_t tr, int64_t tc, const char *which, int *mode, char *why, size_t wn) {
    if (tr <= 0 && tc <= 0) *mode = LT_SCALE_SCALAR_32F;
    else if (tr == 1 && tc == 128) *mode = LT_SCALE_VEC128_32F;
    else if (tr == 128 && tc == 128) *mode = LT_SCALE_BLK128x128_32F;
    else if (tc != 128)
        return fail(why, wn, "%s has %lldx%lld scaling tiles; cuBLASLt's block modes need exactly 128 along K "
                    "(1x128 VEC128_32F, 128x128 BLK128x128_32F) and otherwise one per-tensor scale",
                    which, (long long)tr, (long long)tc);
    else
        return fail(why, wn, "%s has %lldx128 scaling tiles; cuBLASLt has 1x128 (VEC128_32F) and 128x128 "
                    "(BLK128x128_32F) only", which, (long long)tr);
    return 0;
}

/* Floats cuBLASLt reads for an operand of `rows` rows (m or n) and K columns (notes 1.7). */
static int64_t scale_count(int mode, int64_t rows, int64_t K) {
    int64_t L = cdiv(K, 128), L4 = cdiv(L, 4) * 4;
    if (mode == LT_SCALE_VEC128_32F) return rows * L;
    if (mode == LT_SCALE_BLK128x128_32F) return L4 * cdiv(rows, 128);
    return 1;
}

static int check_scale(const Plan *p, int id, int mode, int64_t want, const char *which, const char *dims, char *why,
                       size_t wn) {
    const RtTensor *t = &p->t[id];
    if (t->dtype != TD_F32)
        return fail(why, wn, "%s '%s' is %s; cuBLASLt scale arrays are f32", which, t->name,
                    fp8c_tensor_dtype_names[t->dtype]);
    if (t->n != want)
        return fail(why, wn, "%s '%s' holds %lld floats, but cuBLASLt %s reads %s = %lld (notes 1.7)", which, t->name,
                    (long long)t->n, lt_scale_mode_name(mode), dims, (long long)want);
    if (align_of(t->offset) < 16)
        return fail(why, wn, "%s '%s' is at offset %lld: cuBLASLt scale arrays start 16-byte aligned (notes 1.4, 1.7)",
                    which, t->name, (long long)t->offset);
    return 0;
}

static int describe_qgemm(const Plan *p, const RtStep *s, int sm, LtGemm *g, char *why, size_t wn) {
    const int64_t *v = s->ints;
    const int64_t P = v[0], Q = v[1], R = v[2];
    /* out | a, a_scale_inv, b, b_scale_inv, ?bias; the scales are sized against cuBLASLt below */
    const int64_t want[6] = {P * Q, P * R, -1, Q * R, -1, Q};
    if (check_args(p, s, want, 6, 1u << 5, why, wn)) return -1;
    if (v[10]) {
        if (sm < 100)
            return fail(why, wn, "MX block scaling (E8M0 scales, cuBLASLt VEC32_UE8M0) needs sm_100 or later");
        return fail(why, wn, "MX scales are stored row-major [rows][K/32] here; cuBLASLt VEC32_UE8M0 reads the tiled "
                    "128x4 layout (cuBLAS docs 3.1.4.4.2), which nothing produces yet");
    }
    const int64_t fmt[2] = {v[6], v[9]}; /* plan a, plan b */
    for (int i = 0; i < 2; i++)
        if (fmt[i] != 0 && fmt[i] != 1)
            return fail(why, wn, "operand %s is %s; cuBLASLt FP8 takes e4m3 and e5m2", i ? "b" : "a",
                        fmt[i] == 2 ? "e2m1 (FP4)" : "of an unknown format");
    g->fp8 = 1;
    g->m = Q, g->n = P, g->k = R;
    g->transa = LT_OP_T, g->transb = LT_OP_N;
    g->lda = R, g->ldb = R, g->ldc = g->ldd = Q;
    g->a = s->args[3], g->b = s->args[1], g->c = g->d = s->args[0];
    g->a_scale = s->args[4], g->b_scale = s->args[2];
    g->type_a = fmt[1] ? LT_R_8F_E5M2 : LT_R_8F_E4M3;
    g->type_b = fmt[0] ? LT_R_8F_E5M2 : LT_R_8F_E4M3;
    const RtTensor *out = &p->t[g->d];
    g->type_d = g->type_c = type_of_dtype(out->dtype);
    if (g->type_d < 0)
        return fail(why, wn, "output '%s' is %s; cuBLASLt FP8 writes bf16, f16 or f32", out->name,
                    fp8c_tensor_dtype_names[out->dtype]);
    g->beta = v[3] ? 1 : 0;
    layout_dims(g);
    if (scale_mode(v[7], v[8], "operand b (cuBLAS A)", &g->a_scale_mode, why, wn) ||
        scale_mode(v[4], v[5], "operand a (cuBLAS B)", &g->b_scale_mode, why, wn))
        return -1;
    g->a_scale_count = scale_count(g->a_scale_mode, g->m, g->k);
    g->b_scale_count = scale_count(g->b_scale_mode, g->n, g->k);
    static const char *const dims[6] = {"1", "Q x ceil(R/128)", "L4 x ceil(Q/128)", "1", "P x ceil(R/128)", "L4 x ceil(P/128)"};
    int ia = g->a_scale_mode == LT_SCALE_SCALAR_32F ? 0 : g->a_scale_mode == LT_SCALE_VEC128_32F ? 1 : 2;
    int ib = g->b_scale_mode == LT_SCALE_SCALAR_32F ? 0 : g->b_scale_mode == LT_SCALE_VEC128_32F ? 1 : 2;
    if (check_scale(p, g->a_scale, g->a_scale_mode, g->a_scale_count, "b_scale_inv", dims[ia], why, wn) ||
        check_scale(p, g->b_scale, g->b_scale_mode, g->b_scale_count, "a_scale_inv", dims[3 + ib], why, wn))
        return -1;
    /* FP8 bias types (notes 1.3): bf16 for bf16 and f32 outputs, f16 for f16 outputs. */
    attach_bias(p, g, s->args[5], g->type_d == LT_R_16F ? LT_R_16F : LT_R_16BF);
    bind_aligns(p, g);
    return 0;
}

int lt_describe(const Plan *p, const RtStep *s, int sm, LtGemm *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->op = s->op;
    g->sm = sm;
    g->a = g->b = g->c = g->d = g->bias = g->a_scale = g->b_scale = g->post_bias = g->post_dbias = -1;
    g->a_scale_mode = g->b_scale_mode = LT_SCALE_NONE;
    g->bias_type = -1;
    g->epilogue = LT_EPI_DEFAULT;
    g->compute = LT_COMPUTE_32F;
    g->scale_type = LT_R_32F;
    g->alpha = 1;
    g->ws_bytes = (sm >= 90 ? 32 : 4) * MIB;
    char why[512];
    int rc;
    switch (s->op) {
    case OP_MATMUL_FWD:
    case OP_MATMUL_BWD_DATA:
    case OP_MATMUL_BWD_WEIGHT: rc = describe_matmul(p, s, g, why, sizeof why); break;
    case OP_QGEMM: rc = describe_qgemm(p, s, sm, g, why, sizeof why); break;
    default: rc = fail(why, sizeof why, "not a GEMM step"); break;
    }
    if (rc == 0) rc = lt_check(g, sm, why, sizeof why);
    if (rc == 0) return 0;
    const char *opname = (unsigned)s->op < OP_COUNT_ ? fp8c_op_info[s->op].name : "?";
    int out = s->args[0];
    return fail(err, errlen, "cuBLASLt cannot run %s '%s' on sm_%d: %s", opname,
                out >= 0 && out < p->nt ? p->t[out].name : "?", sm, why);
}

int lt_check_plan(const Plan *p, int sm, char *err, size_t errlen) {
    int refused = 0;
    char why[512];
    for (int sec = 0; sec < SEC_COUNT; sec++)
        for (int i = 0; i < p->nunits[sec]; i++) {
            const RtUnit *u = &p->units[sec][i];
            LtGemm g;
            if (u->gpu.gemm != 1 || lt_describe(p, &p->steps[sec][u->first], sm, &g, why, sizeof why) == 0) continue;
            if (p->steps[sec][u->first].op == OP_QGEMM && u->gpu.kernel >= 0) continue;
            if (!refused++) fail(err, errlen, "%s unit %d: %s", fp8c_section_names[sec], i, why);
        }
    return refused;
}

int lt_check(const LtGemm *g, int sm, char *err, size_t errlen) {
    if (g->m < 1 || g->n < 1 || g->k < 1) return fail(err, errlen, "empty GEMM (m=%lld n=%lld k=%lld)", (long long)g->m,
                                                      (long long)g->n, (long long)g->k);
    if (g->m > INT32_MAX || g->n > INT32_MAX || g->k > INT32_MAX || g->lda > INT32_MAX || g->ldb > INT32_MAX)
        return fail(err, errlen, "a dimension exceeds what cuBLASLt supports (int32)");
    if (g->type_c != g->type_d) return fail(err, errlen, "C and D differ in type (%s, %s)", lt_type_name(g->type_c),
                                            lt_type_name(g->type_d));
    if (!g->fp8) {
        if (is_fp8(g->type_a) || is_fp8(g->type_b)) return fail(err, errlen, "FP8 operands in a GEMM described as non-FP8");
        if (g->type_a != g->type_b)
            return fail(err, errlen, "the operands differ in dtype (%s x %s); cuBLASLt takes one input type",
                        lt_type_name(g->type_a), lt_type_name(g->type_b));
        int ok = (g->type_a == LT_R_32F && g->type_d == LT_R_32F) ||
                 (g->type_a == LT_R_16BF && (g->type_d == LT_R_16BF || g->type_d == LT_R_32F)) ||
                 (g->type_a == LT_R_16F && (g->type_d == LT_R_16F || g->type_d == LT_R_32F));
        if (!ok)
            return fail(err, errlen, "cuBLASLt has no COMPUTE_32F GEMM from %s inputs to a %s output",
                        lt_type_name(g->type_a), lt_type_name(g->type_d));
        return 0;
    }
    if (sm < 89) return fail(err, errlen, "FP8 GEMMs need sm_89 (Ada) or later");
    if (!is_fp8(g->type_a) || !is_fp8(g->type_b)) return fail(err, errlen, "an FP8 GEMM needs e4m3/e5m2 operands");
    if (g->transa != LT_OP_T || g->transb != LT_OP_N)
        return fail(err, errlen, "cuBLASLt FP8 kernels need the TN layout (A transposed, B not: both operands "
                    "K-contiguous, notes 1.2); this is %c%c", g->transa == LT_OP_T ? 'T' : 'N', g->transb == LT_OP_T ? 'T' : 'N');
    if (g->type_a == LT_R_8F_E5M2 && g->type_b == LT_R_8F_E5M2)
        return fail(err, errlen, "e5m2 x e5m2 is not in cuBLASLt's FP8 type table (e4m3 x e4m3, e4m3 x e5m2 and "
                    "e5m2 x e4m3 are, notes 1.3)");
    if (is_fp8(g->type_d) || is_fp8(g->type_c))
        return fail(err, errlen, "FP8 outputs are not used: D is bf16, f16 or f32 (the block modes forbid an FP8 D, notes 1.3)");
    if (g->type_d != LT_R_16BF && g->type_d != LT_R_16F && g->type_d != LT_R_32F)
        return fail(err, errlen, "cuBLASLt FP8 writes bf16, f16 or f32, not %s", lt_type_name(g->type_d));
    int ba = is_block(g->a_scale_mode), bb = is_block(g->b_scale_mode);
    if (ba != bb)
        return fail(err, errlen, "one operand has block scales (%s) and the other %s; cuBLASLt pairs VEC128 x VEC128, "
                    "VEC128 x BLK128x128 and BLK128x128 x VEC128 only (notes 1.6)",
                    lt_scale_mode_name(ba ? g->a_scale_mode : g->b_scale_mode),
                    lt_scale_mode_name(ba ? g->b_scale_mode : g->a_scale_mode));
    if (ba && g->a_scale_mode == LT_SCALE_BLK128x128_32F && g->b_scale_mode == LT_SCALE_BLK128x128_32F)
        return fail(err, errlen, "128x128 block scales on both operands (BLK128x128_32F x BLK128x128_32F) are not "
                    "supported by cuBLASLt (notes 1.6)");
    if (ba && sm != 90)
        return fail(err, errlen, "1x128 and 128x128 block scales (VEC128_32F, BLK128x128_32F) are Hopper-only (sm_90); "
                    "this GPU has per-tensor scaling only%s", sm < 90 ? "" : " in cuBLASLt (MX modes are separate)");
    if (ba && (g->m % 4 || g->n % 4))
        return fail(err, errlen, "block scales need m and n multiples of 4 (m=%lld n=%lld, notes 1.7)", (long long)g->m,
                    (long long)g->n);
    if (g->k % 16)
        return fail(err, errlen, "k = %lld (the contraction) is not a multiple of 16 (FP8 tensor-core rule, notes 1.8)",
                    (long long)g->k);
    if (g->lda % 16 || g->ldb % 16)
        return fail(err, errlen, "lda = %lld / ldb = %lld must be multiples of 16 for FP8 operands (notes 1.8)",
                    (long long)g->lda, (long long)g->ldb);
    int64_t per16 = g->type_d == LT_R_32F ? 4 : 8; /* elements of D in 16 bytes */
    if (g->m % per16 || g->ldd % per16)
        return fail(err, errlen, "m = %lld (D's rows: output features) is not a multiple of %lld, so D's %s columns are "
                    "not 16-byte aligned (notes 1.8)", (long long)g->m, (long long)per16, lt_type_name(g->type_d));
    if (per16 == 8 && g->n % 8)
        return fail(err, errlen, "n = %lld is not a multiple of 8, which FP8 GEMMs with 16-bit outputs need in practice "
                    "(CUDALibrarySamples#172, notes 1.8)", (long long)g->n);
    if (g->align_a < 16 || g->align_b < 16 || g->align_c < 16 || g->align_d < 16)
        return fail(err, errlen, "FP8 GEMM operands must start 16-byte aligned (A %u, B %u, C %u, D %u bytes)", g->align_a,
                    g->align_b, g->align_c, g->align_d);
    return 0;
}

void lt_unfuse_bias(LtGemm *g) {
    if (g->epilogue != LT_EPI_BIAS) return;
    g->post_bias = g->bias;
    g->bias = -1;
    g->bias_type = -1;
    g->epilogue = LT_EPI_DEFAULT;
}

/* ---- the library ---------------------------------------------------------------------------- */

static const char *desc_attr_name(int attr) {
    switch (attr) {
    case DESC_COMPUTE_TYPE: return "COMPUTE_TYPE";
    case DESC_SCALE_TYPE: return "SCALE_TYPE";
    case DESC_TRANSA: return "TRANSA";
    case DESC_TRANSB: return "TRANSB";
    case DESC_EPILOGUE: return "EPILOGUE";
    case DESC_BIAS_POINTER: return "BIAS_POINTER";
    case DESC_A_SCALE_POINTER: return "A_SCALE_POINTER";
    case DESC_B_SCALE_POINTER: return "B_SCALE_POINTER";
    case DESC_FAST_ACCUM: return "FAST_ACCUM";
    case DESC_BIAS_DATA_TYPE: return "BIAS_DATA_TYPE";
    case DESC_A_SCALE_MODE: return "A_SCALE_MODE";
    case DESC_B_SCALE_MODE: return "B_SCALE_MODE";
    default: return "?";
    }
}

static const char *layout_attr_name(int attr) {
    switch (attr) {
    case LAYOUT_TYPE: return "TYPE";
    case LAYOUT_ROWS: return "ROWS";
    case LAYOUT_COLS: return "COLS";
    case LAYOUT_LD: return "LD";
    default: return "?";
    }
}

static const char *pref_attr_name(int attr) {
    static const char *const names[] = {"MIN_ALIGNMENT_A_BYTES", "MIN_ALIGNMENT_B_BYTES", "MIN_ALIGNMENT_C_BYTES",
                                        "MIN_ALIGNMENT_D_BYTES"};
    if (attr == PREF_MAX_WORKSPACE_BYTES) return "MAX_WORKSPACE_BYTES";
    if (attr >= PREF_MIN_ALIGNMENT_A_BYTES && attr < PREF_MIN_ALIGNMENT_A_BYTES + 4) return names[attr - PREF_MIN_ALIGNMENT_A_BYTES];
    return "?";
}

/* "<call>(<what>): CUBLAS_STATUS_X (n)". */
static int status_fail(char *err, size_t n, const char *call, const char *what, int st) {
    const char *hint = st == CUBLAS_STATUS_NOT_INITIALIZED ? ": no usable CUDA driver or GPU" : "";
    if (what && *what) return fail(err, n, "%s(%s): %s (%d)%s", call, what, lt_status_name(st), st, hint);
    return fail(err, n, "%s: %s (%d)%s", call, lt_status_name(st), st, hint);
}

int lt_open(LtLib **out, char *err, size_t errlen) {
    *out = NULL;
    /* The soname first; the unversioned name (a -dev install, possibly cuBLAS 12.x); the
     * toolkit's default place when the loader does not search it. */
    static const char *const names[] = {"libcublasLt.so.13", "libcublasLt.so", "/usr/local/cuda/lib64/libcublasLt.so.13"};
    char why[1024] = "";
    size_t used = 0;
    void *dl = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !dl; i++) {
        dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!dl && used < sizeof why) {
            const char *e = dlerror();
            int k = snprintf(why + used, sizeof why - used, "%s%s", used ? "; " : "", e ? e : names[i]);
            if (k > 0) used += (size_t)k;
        }
    }
    if (!dl) return fail(err, errlen, "cannot load cuBLASLt: %s", why);
    LtLib *lib = calloc(1, sizeof *lib);
    if (!lib) {
        dlclose(dl);
        return fail(err, errlen, "out of memory");
    }
    lib->dl = dl;
    struct {
        const char *name;
        void **slot;
    } syms[] = {
#define SYM(field, symbol) {#symbol, (void **)&lib->field},
        LT_ENTRY_POINTS(SYM)
#undef SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        /* POSIX guarantees a data pointer from dlsym converts to a function pointer. */
        void *f = dlsym(dl, syms[i].name);
        if (!f) {
            lt_close(lib);
            return fail(err, errlen, "cuBLASLt has no symbol %s (cuBLAS 12.9 or later is needed)", syms[i].name);
        }
        memcpy(syms[i].slot, &f, sizeof f);
    }
    lib->version = (int)lib->get_version();
    *out = lib;
    return 0;
}

void lt_close(LtLib *lib) {
    if (!lib) return;
    if (lib->dl) dlclose(lib->dl);
    free(lib);
}

int lt_version(const LtLib *lib) { return lib ? lib->version : 0; }

int lt_create_handle(LtLib *lib, void **handle, char *err, size_t errlen) {
    cublasLtHandle_t h = NULL;
    *handle = NULL;
    int st = lib->create(&h);
    if (st) return status_fail(err, errlen, "cublasLtCreate", NULL, st);
    *handle = h;
    return 0;
}

void lt_destroy_handle(LtLib *lib, void *handle) {
    if (lib && handle) lib->destroy(handle);
}

void lt_call_free(LtLib *lib, LtCall *c) {
    if (!lib || !c) return;
    if (c->pref) lib->pref_destroy(c->pref);
    if (c->Dd) lib->layout_destroy(c->Dd);
    if (c->Bd) lib->layout_destroy(c->Bd);
    if (c->Ad) lib->layout_destroy(c->Ad);
    if (c->op) lib->desc_destroy(c->op);
    c->pref = c->Ad = c->Bd = c->Dd = c->op = NULL;
    c->have_algo = 0;
}

static int set_desc(LtLib *lib, LtCall *c, int attr, const void *buf, size_t size, char *err, size_t errlen) {
    int st = lib->desc_set(c->op, attr, buf, size);
    if (st) return status_fail(err, errlen, "cublasLtMatmulDescSetAttribute", desc_attr_name(attr), st);
    c->nattr++;
    return 0;
}

static int set_pref(LtLib *lib, LtCall *c, int attr, const void *buf, size_t size, char *err, size_t errlen) {
    int st = lib->pref_set(c->pref, attr, buf, size);
    if (st) return status_fail(err, errlen, "cublasLtMatmulPreferenceSetAttribute", pref_attr_name(attr), st);
    c->nattr++;
    return 0;
}

/* Set a device-pointer attribute: the value is the pointer, so pass the pointer's address. */
static int set_ptr(LtLib *lib, LtCall *c, int attr, const void *ptr, char *err, size_t errlen) {
    return set_desc(lib, c, attr, &ptr, sizeof ptr, err, errlen);
}

static int make_layout(LtLib *lib, void **out, const char *which, int type, int64_t rows, int64_t cols, int64_t ld,
                       char *err, size_t errlen) {
    cublasLtMatrixLayout_t layout = NULL;
    *out = NULL;
    int st = lib->layout_create(&layout, type, (uint64_t)rows, (uint64_t)cols, ld);
    if (st) return status_fail(err, errlen, "cublasLtMatrixLayoutCreate", which, st);
    *out = layout;
    return 0;
}

static int build(LtLib *lib, const LtGemm *g, LtCall *c, char *err, size_t errlen) {
    cublasLtMatmulDesc_t op = NULL;
    int st = lib->desc_create(&op, g->compute, g->scale_type);
    if (st) return status_fail(err, errlen, "cublasLtMatmulDescCreate", NULL, st);
    c->op = op;
    int32_t ta = g->transa, tb = g->transb;
    if (set_desc(lib, c, DESC_TRANSA, &ta, sizeof ta, err, errlen) || set_desc(lib, c, DESC_TRANSB, &tb, sizeof tb, err, errlen))
        return -1;
    if (g->fp8) {
        int8_t fast = 0; /* keep cuBLASLt's periodic promotion of partial sums (notes 1.5) */
        int32_t ma = g->a_scale_mode, mb = g->b_scale_mode;
        if (set_desc(lib, c, DESC_FAST_ACCUM, &fast, sizeof fast, err, errlen) ||
            set_desc(lib, c, DESC_A_SCALE_MODE, &ma, sizeof ma, err, errlen) ||
            set_desc(lib, c, DESC_B_SCALE_MODE, &mb, sizeof mb, err, errlen) ||
            set_ptr(lib, c, DESC_A_SCALE_POINTER, c->a_scale, err, errlen) ||
            set_ptr(lib, c, DESC_B_SCALE_POINTER, c->b_scale, err, errlen))
            return -1;
    }
    uint32_t epi = (uint32_t)g->epilogue;
    if (set_desc(lib, c, DESC_EPILOGUE, &epi, sizeof epi, err, errlen)) return -1;
    if (g->epilogue == LT_EPI_BIAS) {
        int32_t bt = g->bias_type;
        if (set_ptr(lib, c, DESC_BIAS_POINTER, c->bias, err, errlen) ||
            set_desc(lib, c, DESC_BIAS_DATA_TYPE, &bt, sizeof bt, err, errlen))
            return -1;
    }
    /* C shares D's layout object: C == D (accumulation) needs Cdesc == Ddesc (notes 1.13). */
    if (make_layout(lib, &c->Ad, "A", g->type_a, g->rows_a, g->cols_a, g->lda, err, errlen) ||
        make_layout(lib, &c->Bd, "B", g->type_b, g->rows_b, g->cols_b, g->ldb, err, errlen) ||
        make_layout(lib, &c->Dd, "D", g->type_d, g->m, g->n, g->ldd, err, errlen))
        return -1;
    cublasLtMatmulPreference_t pref = NULL;
    st = lib->pref_create(&pref);
    if (st) return status_fail(err, errlen, "cublasLtMatmulPreferenceCreate", NULL, st);
    c->pref = pref;
    uint64_t ws = g->ws_bytes;
    if (set_pref(lib, c, PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws, err, errlen)) return -1;
    const uint32_t al[4] = {g->align_a, g->align_b, g->align_c, g->align_d};
    for (int i = 0; i < 4; i++)
        if (set_pref(lib, c, PREF_MIN_ALIGNMENT_A_BYTES + i, &al[i], sizeof al[i], err, errlen)) return -1;
    return 0;
}

int lt_build(LtLib *lib, const LtGemm *g, LtCall *c, const void *bias, const void *a_scale, const void *b_scale,
             char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->g = *g;
    c->bias = bias, c->a_scale = a_scale, c->b_scale = b_scale;
    if (g->fp8 && (!a_scale || !b_scale))
        return fail(err, errlen, "an FP8 GEMM needs both scale pointers (a block mode without one is INVALID_VALUE, notes 1.12)");
    if (g->epilogue == LT_EPI_BIAS && !bias) return fail(err, errlen, "the BIAS epilogue needs a bias pointer");
    if (g->fp8 && (is_block(g->a_scale_mode) || is_block(g->b_scale_mode)) && lib->version < 120900)
        return fail(err, errlen, "block-scaled FP8 needs cuBLAS 12.9 or later; this cuBLASLt is %d", lib->version);
    if (build(lib, g, c, err, errlen)) {
        lt_call_free(lib, c);
        return -1;
    }
    return 0;
}

int lt_heuristic(LtLib *lib, void *handle, LtCall *c, char *err, size_t errlen) {
    cublasLtMatmulHeuristicResult_t res[8];
    int got = 0;
    memset(res, 0, sizeof res);
    int st = lib->heuristic(handle, c->op, c->Ad, c->Bd, c->Dd, c->Dd, c->pref, 8, res, &got);
    char what[400];
    lt_format(&c->g, what, sizeof what);
    if (st) return status_fail(err, errlen, "cublasLtMatmulAlgoGetHeuristic", what, st);
    for (int i = 0; i < got; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > c->g.ws_bytes) continue;
        memcpy(c->algo, &res[i].algo, sizeof c->algo); /* same 64 bytes (check_cuda_headers.c) */
        c->algo_ws = res[i].workspaceSize;
        c->have_algo = 1;
        return 0;
    }
    return fail(err, errlen, "cublasLtMatmulAlgoGetHeuristic(%s): no algorithm (%d candidates, none usable within %llu "
                "workspace bytes)", what, got, (unsigned long long)c->g.ws_bytes);
}

static int check_align(const char *which, const void *p, uint32_t align, char *err, size_t errlen) {
    if (p && align && (uintptr_t)p % align)
        return fail(err, errlen, "%s pointer %p is not %u-byte aligned as the plan's offsets promised", which, p, align);
    return 0;
}

/* Alignment of a pointer, capped at 256 bytes. */
static uintptr_t ptr_align(const void *p) {
    uintptr_t v = (uintptr_t)p, low = v & (~v + 1);
    return !v || low >= 256 ? 256 : low;
}

/* Re-point a descriptor attribute when the caller passes another pointer. The heuristic chose
 * its kernel for the old pointer's alignment (cublasLt.h:1334-1336), so a less aligned one
 * needs a new lt_build and lt_heuristic. */
static int repoint(LtLib *lib, LtCall *c, int attr, const void **cur, const void *want, char *err, size_t errlen) {
    if (*cur == want) return 0;
    if (ptr_align(want) < ptr_align(*cur))
        return fail(err, errlen, "%s %p is less aligned than the %p the algorithm was chosen for: build the call again",
                    desc_attr_name(attr), want, *cur);
    if (set_ptr(lib, c, attr, want, err, errlen)) return -1;
    *cur = want;
    return 0;
}

int lt_run(LtLib *lib, void *handle, LtCall *c, const void *A, const void *B, const void *C, void *D, const void *bias,
           const void *a_scale, const void *b_scale, void *workspace, size_t ws_bytes, void *stream, char *err,
           size_t errlen) {
    const LtGemm *g = &c->g;
    if (!c->op) return fail(err, errlen, "lt_run before lt_build");
    if (!c->have_algo) return fail(err, errlen, "lt_run before lt_heuristic");
    if (!C) C = D;
    if (!A || !B || !D) return fail(err, errlen, "lt_run needs A, B and D");
    if (check_align("A", A, g->align_a, err, errlen) || check_align("B", B, g->align_b, err, errlen) ||
        check_align("C", C, g->align_c, err, errlen) || check_align("D", D, g->align_d, err, errlen))
        return -1;
    if (ws_bytes < c->algo_ws)
        return fail(err, errlen, "workspace of %zu bytes; the algorithm needs %zu", ws_bytes, c->algo_ws);
    if (c->algo_ws && !workspace) return fail(err, errlen, "the algorithm needs %zu bytes of workspace; none given", c->algo_ws);
    if ((uintptr_t)workspace % 256) return fail(err, errlen, "workspace must be 256-byte aligned (notes 1.11)");
    if (g->fp8) {
        if (!a_scale || !b_scale) return fail(err, errlen, "an FP8 GEMM needs both scale pointers");
        if (check_align("A scale", a_scale, 16, err, errlen) || check_align("B scale", b_scale, 16, err, errlen) ||
            repoint(lib, c, DESC_A_SCALE_POINTER, &c->a_scale, a_scale, err, errlen) ||
            repoint(lib, c, DESC_B_SCALE_POINTER, &c->b_scale, b_scale, err, errlen))
            return -1;
    }
    if (g->epilogue == LT_EPI_BIAS) {
        if (!bias) return fail(err, errlen, "the BIAS epilogue needs a bias pointer");
        if (repoint(lib, c, DESC_BIAS_POINTER, &c->bias, bias, err, errlen)) return -1;
    }
    /* c->algo holds the cublasLtMatmulAlgo_t the heuristic chose, word for word */
    int st = lib->matmul(handle, c->op, &g->alpha, A, c->Ad, B, c->Bd, &g->beta, C, c->Dd, D, c->Dd, (const void *)c->algo,
                         workspace, ws_bytes, stream);
    if (st) {
        char what[400];
        lt_format(g, what, sizeof what);
        return status_fail(err, errlen, "cublasLtMatmul", what, st);
    }
    return 0;
}

static int get_desc(LtLib *lib, const LtCall *c, int attr, void *buf, size_t size, char *err, size_t errlen) {
    size_t written = 0;
    int st = lib->desc_get(c->op, attr, buf, size, &written);
    if (st) return status_fail(err, errlen, "cublasLtMatmulDescGetAttribute", desc_attr_name(attr), st);
    return 0;
}

static int get_layout(LtLib *lib, void *layout, int attr, void *buf, size_t size, char *err, size_t errlen) {
    size_t written = 0;
    int st = lib->layout_get(layout, attr, buf, size, &written);
    if (st) return status_fail(err, errlen, "cublasLtMatrixLayoutGetAttribute", layout_attr_name(attr), st);
    return 0;
}

static int get_pref(LtLib *lib, const LtCall *c, int attr, void *buf, size_t size, char *err, size_t errlen) {
    size_t written = 0;
    int st = lib->pref_get(c->pref, attr, buf, size, &written);
    if (st) return status_fail(err, errlen, "cublasLtMatmulPreferenceGetAttribute", pref_attr_name(attr), st);
    return 0;
}

int lt_readback(LtLib *lib, const LtCall *c, LtReadback *rb, char *err, size_t errlen) {
    memset(rb, 0, sizeof *rb);
    if (!c->op) return fail(err, errlen, "lt_readback before lt_build");
    if (get_desc(lib, c, DESC_COMPUTE_TYPE, &rb->compute, sizeof rb->compute, err, errlen) ||
        get_desc(lib, c, DESC_SCALE_TYPE, &rb->scale_type, sizeof rb->scale_type, err, errlen) ||
        get_desc(lib, c, DESC_TRANSA, &rb->transa, sizeof rb->transa, err, errlen) ||
        get_desc(lib, c, DESC_TRANSB, &rb->transb, sizeof rb->transb, err, errlen) ||
        get_desc(lib, c, DESC_EPILOGUE, &rb->epilogue, sizeof rb->epilogue, err, errlen) ||
        get_desc(lib, c, DESC_BIAS_DATA_TYPE, &rb->bias_type, sizeof rb->bias_type, err, errlen) ||
        get_desc(lib, c, DESC_BIAS_POINTER, &rb->bias, sizeof rb->bias, err, errlen) ||
        get_desc(lib, c, DESC_A_SCALE_MODE, &rb->a_scale_mode, sizeof rb->a_scale_mode, err, errlen) ||
        get_desc(lib, c, DESC_B_SCALE_MODE, &rb->b_scale_mode, sizeof rb->b_scale_mode, err, errlen) ||
        get_desc(lib, c, DESC_A_SCALE_POINTER, &rb->a_scale, sizeof rb->a_scale, err, errlen) ||
        get_desc(lib, c, DESC_B_SCALE_POINTER, &rb->b_scale, sizeof rb->b_scale, err, errlen) ||
        get_desc(lib, c, DESC_FAST_ACCUM, &rb->fast_accum, sizeof rb->fast_accum, err, errlen))
        return -1;
    void *layouts[3] = {c->Ad, c->Bd, c->Dd};
    for (int i = 0; i < 3; i++)
        if (get_layout(lib, layouts[i], LAYOUT_TYPE, &rb->type[i], sizeof rb->type[i], err, errlen) ||
            get_layout(lib, layouts[i], LAYOUT_ROWS, &rb->rows[i], sizeof rb->rows[i], err, errlen) ||
            get_layout(lib, layouts[i], LAYOUT_COLS, &rb->cols[i], sizeof rb->cols[i], err, errlen) ||
            get_layout(lib, layouts[i], LAYOUT_LD, &rb->ld[i], sizeof rb->ld[i], err, errlen))
            return -1;
    if (get_pref(lib, c, PREF_MAX_WORKSPACE_BYTES, &rb->ws_bytes, sizeof rb->ws_bytes, err, errlen)) return -1;
    for (int i = 0; i < 4; i++)
        if (get_pref(lib, c, PREF_MIN_ALIGNMENT_A_BYTES + i, &rb->align[i], sizeof rb->align[i], err, errlen)) return -1;
    return 0;
}
