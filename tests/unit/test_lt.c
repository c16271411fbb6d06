/* test_lt.c: pins runtime/cuda/lt.c, the plan-step -> cuBLASLt mapping, on a machine without
 * a GPU.
 *
 *   1. lt_describe on small plans built here in memory, one per step kind and dtype. Every
 *      expected m/n/k, op, leading dimension, type, scale mode and binding is derived by hand
 *      in a comment and written as a literal, or for cuBLAS's enums as the CUDA headers' own
 *      name (CUDA_R_16BF, CUBLASLT_EPILOGUE_BIAS: this file is compiled against cublasLt.h, so
 *      a wrong copy in lt.h fails here); the code under test never makes its own expectation.
 *      Without cublasLt.h those names fall back to lt.h's copies and case_header_names fails.
 *   2. The mapping in numbers: the float GEMMs run through a column-major emulation of
 *      cublasLtMatmul's definition (written here from the cuBLAS docs, not lt.c) on the
 *      LtGemm's bindings and leading dimensions, against runtime/cpu's reference GEMMs.
 *   3. Refusals: every rule that sends a GEMM to the generated fallback, with the message
 *      that says why.
 *   4. The scale-layout contract: operands quantized by runtime/quant.c with 1x128 and 128x128
 *      tiles (K/128 not a multiple of 4, ragged edges), read back with cuBLASLt's documented
 *      index formulas (notes 1.7) in the block-scaled math D = sum_b sA sB P_b, must give the
 *      reference product of the dequantized operands; reading the 128x128 scales without the
 *      L4 padding, or the 1x128 scales row-major, must NOT (so this case can fail).
 *   5. The library: if libcublasLt can be dlopened (no driver needed), lt_build creates real
 *      descriptors for each case and every attribute read back equals what was described;
 *      cublasLtCreate and the heuristic fail cleanly with a status message. Without the
 *      library this part prints one "SKIP" line.
 *
 * Tolerances are derived from float rounding (u = 2^-24): an n-term float sum is within
 * n*u*sum|terms| of the exact one, and the emulations run in double.
 */
#include "check.h"
#include "cuda/lt.h"
#include "fp8.h"
#include "quant.h"
#include "ref.h"
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define HAVE_CUBLASLT_H 1
#else
/* lt.h's own copies: they make the cases below compile, and prove nothing about the copies */
#define CUDA_R_32F LT_R_32F
#define CUDA_R_16F LT_R_16F
#define CUDA_R_16BF LT_R_16BF
#define CUDA_R_8F_E4M3 LT_R_8F_E4M3
#define CUDA_R_8F_E5M2 LT_R_8F_E5M2
#define CUBLAS_OP_N LT_OP_N
#define CUBLAS_OP_T LT_OP_T
#define CUBLAS_COMPUTE_32F LT_COMPUTE_32F
#define CUBLASLT_EPILOGUE_DEFAULT LT_EPI_DEFAULT
#define CUBLASLT_EPILOGUE_BIAS LT_EPI_BIAS
#define CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F LT_SCALE_SCALAR_32F
#define CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F LT_SCALE_VEC128_32F
#define CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F LT_SCALE_BLK128x128_32F
#define CUBLAS_STATUS_NOT_INITIALIZED 1
#define CUBLAS_STATUS_INVALID_VALUE 7
#define CUBLAS_STATUS_NOT_SUPPORTED 15
#endif

#define U (1.0 / 16777216.0) /* 2^-24: float's unit roundoff */
#define MIB (1024ull * 1024ull)

/* ---- a plan in memory --------------------------------------------------------------------- */

#define MAXT 16
static Plan plan;
static RtTensor tensors[MAXT];
static int64_t next_offset;

static void plan_reset(void) {
    memset(&plan, 0, sizeof plan);
    memset(tensors, 0, sizeof tensors);
    plan.t = tensors;
    next_offset = 0;
}

/* A 1-D tensor of n elements in the activations class; offset < 0: the next 256-byte slot. */
static int add_tensor_at(const char *name, TensorDtype dt, int64_t n, int64_t offset) {
    int id = plan.nt++;
    RtTensor *t = &tensors[id];
    t->name = name;
    t->dtype = dt;
    t->cls = TC_ACT;
    t->ndim = 1;
    t->shape[0] = n;
    t->n = n;
    t->offset = offset >= 0 ? offset : next_offset;
    int64_t end = t->offset + n * fp8c_tensor_dtype_bytes[dt];
    next_offset = (end + 255) / 256 * 256;
    return id;
}

static int add_tensor(const char *name, TensorDtype dt, int64_t n) { return add_tensor_at(name, dt, n, -1); }

static RtStep make_step(OpKind op) {
    RtStep s;
    memset(&s, 0, sizeof s);
    s.op = op;
    for (int k = 0; k < OP_MAX_ARGS; k++) s.args[k] = -1;
    return s;
}

/* matmul_fwd out | inp, w, ?bias with M, K, N. */
static RtStep fwd_step(int64_t M, int64_t K, int64_t N, TensorDtype in_dt, TensorDtype w_dt, TensorDtype out_dt, int bias,
                       TensorDtype bias_dt) {
    RtStep s = make_step(OP_MATMUL_FWD);
    s.args[0] = add_tensor("out", out_dt, M * N);
    s.args[1] = add_tensor("inp", in_dt, M * K);
    s.args[2] = add_tensor("w", w_dt, N * K);
    if (bias) s.args[3] = add_tensor("bias", bias_dt, N);
    s.ints[0] = M, s.ints[1] = K, s.ints[2] = N;
    return s;
}

/* A QGEMM and its tensors, scale arrays sized the way the plan sizes them (quant.c). */
typedef struct {
    int64_t P, Q, R;
    int acc;
    int atr, atc, afmt, btr, btc, bfmt, mx;
    TensorDtype out_dt;
    int bias;
    TensorDtype bias_dt;
} QSpec;

static QSpec base_spec(void) {
    /* The DeepSeek-style forward: activations 1x128 (VEC), weights 128x128 (BLK), bf16 out. */
    QSpec q = {.P = 64, .Q = 256, .R = 640, .acc = 0, .atr = 1, .atc = 128, .afmt = 0, .btr = 128, .btc = 128,
               .bfmt = 0, .mx = 0, .out_dt = TD_BF16, .bias = 0, .bias_dt = TD_BF16};
    return q;
}

static int64_t plan_scales(int64_t R, int64_t C, int tr, int tc, int mx) {
    return mx ? (int64_t)q_mx_scale_count((int)R, (int)C, tr, tc) : (int64_t)q_scale_count((int)R, (int)C, tr, tc);
}

static RtStep qgemm_step(const QSpec *q) {
    RtStep s = make_step(OP_QGEMM);
    TensorDtype sdt = q->mx ? TD_U8 : TD_F32;
    s.args[0] = add_tensor("out", q->out_dt, q->P * q->Q);
    s.args[1] = add_tensor("a", TD_U8, q->P * q->R);
    s.args[2] = add_tensor("a_scale_inv", sdt, plan_scales(q->P, q->R, q->atr, q->atc, q->mx));
    s.args[3] = add_tensor("b", TD_U8, q->Q * q->R);
    s.args[4] = add_tensor("b_scale_inv", sdt, plan_scales(q->Q, q->R, q->btr, q->btc, q->mx));
    if (q->bias) s.args[5] = add_tensor("bias", q->bias_dt, q->Q);
    int64_t v[11] = {q->P, q->Q, q->R, q->acc, q->atr, q->atc, q->afmt, q->btr, q->btc, q->bfmt, q->mx};
    memcpy(s.ints, v, sizeof v);
    return s;
}

/* ---- 1. lt_describe, by hand -------------------------------------------------------------- */

static void case_fwd_f32_bias(void) {
    /* out(64,48) = inp(64,96) w(48,96)^T + bias(48), M=64 K=96 N=48, all f32, sm_90.
     * Column-major: out^T(48x64) = w(48x96) . inp^T(96x64); w's buffer is 96x48 (ld 96) -> op T;
     * inp's buffer is 96x64 (ld 96) -> op N. m = N = 48, n = M = 64, k = 96; D 48x64, ld 48.
     * A stored k x m = 96 x 48, B stored k x n = 96 x 64. Bias f32 = D's type: fused. */
    plan_reset();
    RtStep s = fwd_step(64, 96, 48, TD_F32, TD_F32, TD_F32, 1, TD_F32);
    LtGemm g;
    char err[512] = "";
    int rc = lt_describe(&plan, &s, 90, &g, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK(g.m == 48 && g.n == 64 && g.k == 96);
    CHECK(g.transa == CUBLAS_OP_T && g.transb == CUBLAS_OP_N);
    CHECK(g.rows_a == 96 && g.cols_a == 48 && g.rows_b == 96 && g.cols_b == 64);
    CHECK(g.lda == 96 && g.ldb == 96 && g.ldc == 48 && g.ldd == 48);
    CHECK(g.type_a == CUDA_R_32F && g.type_b == CUDA_R_32F && g.type_c == CUDA_R_32F && g.type_d == CUDA_R_32F);
    CHECK(g.compute == CUBLAS_COMPUTE_32F && g.scale_type == CUDA_R_32F);
    CHECK(g.alpha == 1.0f && g.beta == 0.0f);
    CHECK(g.a == s.args[2] && g.b == s.args[1] && g.c == s.args[0] && g.d == s.args[0]);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_BIAS && g.bias == s.args[3] && g.bias_type == CUDA_R_32F);
    CHECK(g.post_bias == -1 && g.post_dbias == -1);
    CHECK(!g.fp8 && g.a_scale == -1 && g.b_scale == -1 && g.a_scale_mode == -1 && g.b_scale_mode == -1);
    CHECK(g.ws_bytes == 32 * MIB);
    CHECK(g.align_a == 256 && g.align_b == 256 && g.align_c == 256 && g.align_d == 256);
}

static void case_fwd_bf16_bias_left_over(void) {
    /* bf16 operands and output, an f32 bias: outside FP8 the bias must have D's type, so it is
     * not fused but left to the caller (post_bias). sm_89: 4 MiB workspace. Same shape
     * algebra as above with M=32 K=64 N=16: m=16 n=32 k=64, lda=ldb=64, ldd=16. */
    plan_reset();
    RtStep s = fwd_step(32, 64, 16, TD_BF16, TD_BF16, TD_BF16, 1, TD_F32);
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 89, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.m == 16 && g.n == 32 && g.k == 64 && g.lda == 64 && g.ldb == 64 && g.ldd == 16);
    CHECK(g.type_a == CUDA_R_16BF && g.type_b == CUDA_R_16BF && g.type_d == CUDA_R_16BF);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_DEFAULT && g.bias == -1 && g.bias_type == -1 && g.post_bias == s.args[3]);
    CHECK(g.ws_bytes == 4 * MIB);
}

static void case_fwd_f16_bias(void) {
    /* f16 everywhere: CUDA_R_16F = 2, bias fused with type f16. */
    plan_reset();
    RtStep s = fwd_step(16, 32, 8, TD_F16, TD_F16, TD_F16, 1, TD_F16);
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 80, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.type_a == CUDA_R_16F && g.type_b == CUDA_R_16F && g.type_d == CUDA_R_16F && g.epilogue == CUBLASLT_EPILOGUE_BIAS &&
          g.bias_type == CUDA_R_16F);
}

static void case_bwd_data_bf16(void) {
    /* dinp(64,96) += dout(64,48) w(48,96): M=64 K=96 N=48, bf16 dout and w, f32 dinp.
     * dinp^T(96x64) = w^T(96x48) dout^T(48x64): w's buffer IS w^T (96x48, ld 96) -> op N;
     * dout's buffer IS dout^T (48x64, ld 48) -> op N. m = K = 96, n = M = 64, k = N = 48,
     * D 96x64 ld 96; A stored m x k = 96x48, B stored k x n = 48x64; beta = 1 (+=). */
    plan_reset();
    RtStep s = make_step(OP_MATMUL_BWD_DATA);
    s.args[0] = add_tensor("dinp", TD_F32, 64 * 96);
    s.args[1] = add_tensor("dout", TD_BF16, 64 * 48);
    s.args[2] = add_tensor("w", TD_BF16, 48 * 96);
    s.ints[0] = 64, s.ints[1] = 96, s.ints[2] = 48;
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.m == 96 && g.n == 64 && g.k == 48);
    CHECK(g.transa == CUBLAS_OP_N && g.transb == CUBLAS_OP_N);
    CHECK(g.rows_a == 96 && g.cols_a == 48 && g.rows_b == 48 && g.cols_b == 64);
    CHECK(g.lda == 96 && g.ldb == 48 && g.ldc == 96 && g.ldd == 96);
    CHECK(g.type_a == CUDA_R_16BF && g.type_b == CUDA_R_16BF && g.type_c == CUDA_R_32F && g.type_d == CUDA_R_32F);
    CHECK(g.a == s.args[2] && g.b == s.args[1] && g.c == s.args[0] && g.d == s.args[0]);
    CHECK(g.alpha == 1.0f && g.beta == 1.0f && g.epilogue == CUBLASLT_EPILOGUE_DEFAULT);
}

static void case_bwd_weight_bf16(void) {
    /* dw(48,96) += dout^T(48,64) inp(64,96), dbias(48) present: M=64 K=96 N=48.
     * dw^T(96x48) = inp^T(96x64) dout(64x48): inp's buffer IS inp^T (96x64, ld 96) -> op N;
     * dout's buffer is dout^T (48x64, ld 48), we need dout -> op T. m = K = 96, n = N = 48,
     * k = M = 64, D 96x48 ld 96; A stored m x k = 96x64, B stored n x k = 48x64; beta = 1.
     * dbias is the runtime's kernel: post_dbias. */
    plan_reset();
    RtStep s = make_step(OP_MATMUL_BWD_WEIGHT);
    s.args[0] = add_tensor("dw", TD_F32, 48 * 96);
    s.args[1] = add_tensor("dbias", TD_F32, 48);
    s.args[2] = add_tensor("dout", TD_BF16, 64 * 48);
    s.args[3] = add_tensor("inp", TD_BF16, 64 * 96);
    s.ints[0] = 64, s.ints[1] = 96, s.ints[2] = 48;
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.m == 96 && g.n == 48 && g.k == 64);
    CHECK(g.transa == CUBLAS_OP_N && g.transb == CUBLAS_OP_T);
    CHECK(g.rows_a == 96 && g.cols_a == 64 && g.rows_b == 48 && g.cols_b == 64);
    CHECK(g.lda == 96 && g.ldb == 48 && g.ldc == 96 && g.ldd == 96);
    CHECK(g.a == s.args[3] && g.b == s.args[2] && g.d == s.args[0] && g.c == s.args[0]);
    CHECK(g.beta == 1.0f && g.epilogue == CUBLASLT_EPILOGUE_DEFAULT && g.bias == -1 && g.post_dbias == s.args[1] && g.post_bias == -1);
}

static void case_qgemm_fwd_vec_blk(void) {
    /* out(64,256) = deq(a)(64,640) deq(b)(256,640)^T + bias: P=64 Q=256 R=640, sm_90.
     * a: 1x128 tiles, e5m2; b: 128x128 tiles, e4m3 (formats differ to catch a swap).
     * cuBLAS A := b (TN: A op T), B := a: m = Q = 256, n = P = 64, k = R = 640,
     * lda = ldb = 640, ldd = 256; A stored k x m = 640x256, B stored k x n = 640x64.
     * type_a = e4m3 (28, from b), type_b = e5m2 (29, from a), C = D = bf16 (14).
     * L = ceil(640/128) = 5, L4 = 8. A scales (b's): BLK128x128, L4 * ceil(256/128) = 16
     * floats; B scales (a's): VEC128, n * L = 64 * 5 = 320 floats. Bias bf16: fused. */
    plan_reset();
    QSpec q = base_spec();
    q.afmt = 1;
    q.bias = 1;
    RtStep s = qgemm_step(&q);
    CHECK(tensors[s.args[2]].n == 320 && tensors[s.args[4]].n == 16); /* the plan's sizes agree */
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.fp8 && g.m == 256 && g.n == 64 && g.k == 640);
    CHECK(g.transa == CUBLAS_OP_T && g.transb == CUBLAS_OP_N);
    CHECK(g.rows_a == 640 && g.cols_a == 256 && g.rows_b == 640 && g.cols_b == 64);
    CHECK(g.lda == 640 && g.ldb == 640 && g.ldc == 256 && g.ldd == 256);
    CHECK(g.type_a == CUDA_R_8F_E4M3 && g.type_b == CUDA_R_8F_E5M2 && g.type_c == CUDA_R_16BF && g.type_d == CUDA_R_16BF);
    CHECK(g.a == s.args[3] && g.b == s.args[1] && g.c == s.args[0] && g.d == s.args[0]);
    CHECK(g.a_scale == s.args[4] && g.b_scale == s.args[2]);
    CHECK(g.a_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F && g.b_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F);
    CHECK(g.a_scale_count == 16 && g.b_scale_count == 320);
    CHECK(g.alpha == 1.0f && g.beta == 0.0f);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_BIAS && g.bias == s.args[5] && g.bias_type == CUDA_R_16BF && g.post_bias == -1);
    CHECK(g.compute == CUBLAS_COMPUTE_32F && g.scale_type == CUDA_R_32F && g.ws_bytes == 32 * MIB);
}

static void case_qgemm_dgrad_per_tensor(void) {
    /* The dgrad of a per-tensor recipe on Ada: dinp(32,64) += deq(dy)(32,48) deq(w_col)(64,48)^T,
     * P=32 Q=64 R=48, accumulate, f32 out, sm_89. m = 64, n = 32, k = 48, beta = 1 with C = D;
     * SCALAR_32F (0) on both sides, one float each; 4 MiB workspace. */
    plan_reset();
    QSpec q = base_spec();
    q.P = 32, q.Q = 64, q.R = 48, q.acc = 1;
    q.atr = q.atc = q.btr = q.btc = 0;
    q.afmt = 1, q.bfmt = 0;
    q.out_dt = TD_F32;
    RtStep s = qgemm_step(&q);
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 89, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.m == 64 && g.n == 32 && g.k == 48 && g.ldd == 64);
    CHECK(g.beta == 1.0f && g.c == g.d && g.d == s.args[0]);
    CHECK(g.a_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F && g.b_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F && g.a_scale_count == 1 && g.b_scale_count == 1);
    CHECK(g.type_a == CUDA_R_8F_E4M3 && g.type_b == CUDA_R_8F_E5M2 && g.type_d == CUDA_R_32F);
    CHECK(g.ws_bytes == 4 * MIB && g.epilogue == CUBLASLT_EPILOGUE_DEFAULT);
}

static void case_qgemm_f32_out_bias(void) {
    /* FP8 with an f32 output takes a bf16 bias (notes 1.3); an f32 bias is left over. */
    plan_reset();
    QSpec q = base_spec();
    q.out_dt = TD_F32, q.bias = 1, q.bias_dt = TD_BF16;
    RtStep s = qgemm_step(&q);
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_BIAS && g.bias_type == CUDA_R_16BF && g.type_d == CUDA_R_32F);
    plan_reset();
    q.bias_dt = TD_F32;
    s = qgemm_step(&q);
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_DEFAULT && g.bias == -1 && g.post_bias == s.args[5]);
    /* lt_unfuse_bias: what a caller does when the heuristic finds no kernel with the epilogue */
    plan_reset();
    q.bias_dt = TD_BF16;
    s = qgemm_step(&q);
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    lt_unfuse_bias(&g);
    CHECK(g.epilogue == CUBLASLT_EPILOGUE_DEFAULT && g.bias == -1 && g.bias_type == -1 && g.post_bias == s.args[5]);
}

/* ---- 2. the mapping in numbers ------------------------------------------------------------ */

/* cublasLtMatmul on column-major float data, from its definition:
 *   D(i,j) = alpha * sum_l op(A)(i,l) op(B)(l,j) + beta * C(i,j) + bias(i),
 *   op(A)(i,l) = transa == N ? A[i + l*lda] : A[l + i*lda], likewise B; C is D (in place). */
static void emulate_float(const LtGemm *g, const float *A, const float *B, const float *bias, float *D) {
    for (int64_t j = 0; j < g->n; j++)
        for (int64_t i = 0; i < g->m; i++) {
            double acc = 0;
            for (int64_t l = 0; l < g->k; l++) {
                double a = g->transa == LT_OP_N ? A[i + l * g->lda] : A[l + i * g->lda];
                double b = g->transb == LT_OP_N ? B[l + j * g->ldb] : B[j + l * g->ldb];
                acc += a * b;
            }
            double c = g->beta != 0 ? (double)g->beta * D[i + j * g->ldd] : 0;
            D[i + j * g->ldd] = (float)(g->alpha * acc + c + (bias ? bias[i] : 0));
        }
}

/* Same sum of |terms|, for the tolerance. */
static double abs_terms(const LtGemm *g, const float *A, const float *B, const float *bias, const float *D0, int64_t i,
                        int64_t j) {
    double s = 0;
    for (int64_t l = 0; l < g->k; l++) {
        double a = g->transa == LT_OP_N ? A[i + l * g->lda] : A[l + i * g->lda];
        double b = g->transb == LT_OP_N ? B[l + j * g->ldb] : B[j + l * g->ldb];
        s += fabs(a * b);
    }
    return s + fabs(D0[i + j * g->ldd]) + (bias ? fabs(bias[i]) : 0);
}

static float *rand_floats(uint64_t *st, int64_t n) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = rng_normal(st);
    return x;
}

/* Run step s (f32 tensors) both ways: ref.h on row-major buffers, the emulation on lt's
 * bindings; the outputs must agree to (k + 2) u sum|terms|. */
static void check_mapping(const RtStep *s, const char *what) {
    LtGemm g;
    char err[512] = "";
    if (lt_describe(&plan, s, 90, &g, err, sizeof err)) {
        CHECKF(0, "%s: %s", what, err);
        return;
    }
    uint64_t st = 42;
    float *buf[MAXT] = {0};
    for (int t = 0; t < plan.nt; t++) buf[t] = rand_floats(&st, tensors[t].n);
    int out = s->args[0];
    int64_t n_out = tensors[out].n;
    float *want = malloc((size_t)n_out * sizeof *want), *got = malloc((size_t)n_out * sizeof *got);
    memcpy(want, buf[out], (size_t)n_out * sizeof *want);
    memcpy(got, buf[out], (size_t)n_out * sizeof *got);
    const int64_t M = s->ints[0], K = s->ints[1], N = s->ints[2];
    if (s->op == OP_MATMUL_FWD)
        ref_matmul_fwd(want, buf[s->args[1]], buf[s->args[2]], s->args[3] >= 0 ? buf[s->args[3]] : NULL, (int)M, (int)K, (int)N);
    else if (s->op == OP_MATMUL_BWD_DATA)
        ref_matmul_bwd_data(want, buf[s->args[1]], buf[s->args[2]], (int)M, (int)K, (int)N);
    else
        ref_matmul_bwd_weight(want, NULL, buf[s->args[2]], buf[s->args[3]], (int)M, (int)K, (int)N);
    const float *bias = g.bias >= 0 ? buf[g.bias] : NULL;
    emulate_float(&g, buf[g.a], buf[g.b], bias, got);
    double worst = 0;
    for (int64_t j = 0; j < g.n; j++)
        for (int64_t i = 0; i < g.m; i++) {
            double tol = (double)(g.k + 2) * U * abs_terms(&g, buf[g.a], buf[g.b], bias, buf[out], i, j);
            double e = fabs((double)got[i + j * g.ldd] - (double)want[i + j * g.ldd]);
            if (e / tol > worst) worst = e / tol;
        }
    CHECKF(worst <= 1.0, "%s: the emulated cuBLASLt call is off by %.3g x tolerance", what, worst);
    for (int t = 0; t < plan.nt; t++) free(buf[t]);
    free(want);
    free(got);
}

static void case_mapping_numeric(void) {
    /* Odd, distinct M, K, N so that a swapped dimension or leading dimension shows. */
    const int64_t M = 13, K = 21, N = 7;
    plan_reset();
    RtStep s = fwd_step(M, K, N, TD_F32, TD_F32, TD_F32, 1, TD_F32);
    check_mapping(&s, "matmul_fwd");
    plan_reset();
    s = make_step(OP_MATMUL_BWD_DATA);
    s.args[0] = add_tensor("dinp", TD_F32, M * K);
    s.args[1] = add_tensor("dout", TD_F32, M * N);
    s.args[2] = add_tensor("w", TD_F32, N * K);
    s.ints[0] = M, s.ints[1] = K, s.ints[2] = N;
    check_mapping(&s, "matmul_bwd_data");
    plan_reset();
    s = make_step(OP_MATMUL_BWD_WEIGHT);
    s.args[0] = add_tensor("dw", TD_F32, N * K);
    s.args[2] = add_tensor("dout", TD_F32, M * N);
    s.args[3] = add_tensor("inp", TD_F32, M * K);
    s.ints[0] = M, s.ints[1] = K, s.ints[2] = N;
    check_mapping(&s, "matmul_bwd_weight");
}

/* ---- 3. refusals ---------------------------------------------------------------------------- */

static void expect_refusal(const QSpec *q, int sm, const char *want, const char *what) {
    plan_reset();
    RtStep s = qgemm_step(q);
    LtGemm g;
    char err[512] = "";
    int rc = lt_describe(&plan, &s, sm, &g, err, sizeof err);
    CHECKF(rc == -1, "%s: accepted, expected a refusal containing '%s'", what, want);
    CHECKF(strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", what, err, want);
    char head[64];
    snprintf(head, sizeof head, "cuBLASLt cannot run qgemm 'out' on sm_%d: ", sm);
    CHECKF(strncmp(err, head, strlen(head)) == 0, "%s: message '%s' does not start with '%s'", what, err, head);
}

static void case_qgemm_refusals(void) {
    QSpec q = base_spec();
    q.afmt = q.bfmt = 1;
    expect_refusal(&q, 90, "e5m2 x e5m2", "e5m2 x e5m2");
    q = base_spec();
    q.atr = 128;
    expect_refusal(&q, 90, "both operands", "BLK x BLK");
    q = base_spec();
    expect_refusal(&q, 89, "Hopper-only (sm_90)", "block scales on Ada");
    expect_refusal(&q, 100, "Hopper-only (sm_90)", "block scales on Blackwell");
    q.atr = q.atc = q.btr = q.btc = 0;
    expect_refusal(&q, 86, "sm_89", "FP8 on Ampere");
    q = base_spec();
    q.mx = 1, q.atr = q.btr = 1, q.atc = q.btc = 32;
    expect_refusal(&q, 90, "sm_100", "MX on Hopper");
    expect_refusal(&q, 100, "128x4", "MX layout");
    q = base_spec();
    q.afmt = 2;
    expect_refusal(&q, 90, "e2m1", "FP4 operand");
    q = base_spec();
    q.atc = 32;
    expect_refusal(&q, 90, "exactly 128 along K", "1x32 tiles");
    q = base_spec();
    q.btr = 64;
    expect_refusal(&q, 90, "1x128 (VEC128_32F) and 128x128", "64x128 tiles");
    q = base_spec();
    q.atr = q.atc = 0;
    expect_refusal(&q, 90, "pairs VEC128 x VEC128", "per-tensor x block");
    q = base_spec();
    q.atr = q.atc = q.btr = q.btc = 0;
    q.R = 200;
    expect_refusal(&q, 90, "k = 200", "K % 16");
    q.R = 640, q.Q = 100;
    expect_refusal(&q, 90, "m = 100", "m % 8 with a bf16 output");
    q.Q = 256, q.P = 100;
    expect_refusal(&q, 90, "n = 100", "n % 8 with a bf16 output");
    q.P = 64, q.Q = 98, q.out_dt = TD_F32;
    expect_refusal(&q, 90, "not a multiple of 4", "m % 4 with an f32 output");
    q = base_spec();
    q.Q = 250, q.out_dt = TD_F32;
    expect_refusal(&q, 90, "multiples of 4", "block modes with m % 4 != 0");
}

static void case_plan_level_refusals(void) {
    char err[512] = "";
    LtGemm g;
    /* A scale array one float short of what BLK128x128 reads: the size contract. */
    plan_reset();
    QSpec q = base_spec();
    RtStep s = qgemm_step(&q);
    tensors[s.args[4]].n -= 1;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1);
    CHECKF(strstr(err, "b_scale_inv 'b_scale_inv' holds 15 floats") && strstr(err, "reads L4 x ceil(Q/128) = 16"), "%s", err);
    /* The same array without the L4 padding, L x ceil(Q/128) = 5 x 2 = 10 floats. */
    tensors[s.args[4]].n = 10;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1 && strstr(err, "holds 10 floats"));
    /* Scales that are not f32. */
    plan_reset();
    s = qgemm_step(&q);
    tensors[s.args[2]].dtype = TD_BF16;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1 && strstr(err, "scale arrays are f32"));
    /* A scale array at an offset only 8-byte aligned. */
    plan_reset();
    s = qgemm_step(&q);
    tensors[s.args[2]].offset += 8;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1);
    CHECKF(strstr(err, "start 16-byte aligned"), "%s", err);
    /* Codes 8-byte aligned. */
    plan_reset();
    s = qgemm_step(&q);
    tensors[s.args[1]].offset += 8;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1);
    CHECKF(strstr(err, "16-byte aligned (A 256, B 8"), "%s", err);
    /* Float GEMMs: mixed operand dtypes, an f16 x f16 -> bf16 product, a size mismatch. */
    plan_reset();
    s = fwd_step(16, 32, 8, TD_BF16, TD_F32, TD_F32, 0, TD_F32);
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1);
    CHECKF(strstr(err, "cuBLASLt cannot run matmul_fwd 'out' on sm_90: the operands differ in dtype (f32 x bf16)"), "%s", err);
    plan_reset();
    s = fwd_step(16, 32, 8, TD_F16, TD_F16, TD_BF16, 0, TD_F32);
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1 && strstr(err, "from f16 inputs to a bf16 output"));
    plan_reset();
    s = fwd_step(16, 32, 8, TD_F32, TD_F32, TD_F32, 0, TD_F32);
    tensors[s.args[2]].n = 5;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1);
    CHECKF(strstr(err, "tensor 'w' has 5 elements, the step's dimensions need 256"), "%s", err);
    /* Not a GEMM. */
    plan_reset();
    s = make_step(OP_GELU_FWD);
    s.args[0] = add_tensor("out", TD_F32, 4);
    s.args[1] = add_tensor("inp", TD_F32, 4);
    s.ints[0] = 4;
    CHECK(lt_describe(&plan, &s, 90, &g, err, sizeof err) == -1 && strstr(err, "gelu_fwd 'out' on sm_90: not a GEMM step"));
}

static void case_check_rules_direct(void) {
    /* Rules lt_describe never trips for a plan (it always builds TN with a 16/32-bit D), on a
     * hand-made LtGemm: an FP8 problem in NN layout, and an FP8 D. */
    plan_reset();
    QSpec q = base_spec();
    RtStep s = qgemm_step(&q);
    LtGemm g;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    LtGemm h = g;
    h.transa = LT_OP_N;
    CHECK(lt_check(&h, 90, err, sizeof err) == -1 && strstr(err, "TN layout") && strstr(err, "this is NN"));
    h = g;
    h.type_c = h.type_d = LT_R_8F_E4M3;
    CHECK(lt_check(&h, 90, err, sizeof err) == -1 && strstr(err, "FP8 outputs are not used"));
    h = g;
    h.type_a = LT_R_16BF;
    CHECK(lt_check(&h, 90, err, sizeof err) == -1 && strstr(err, "e4m3/e5m2 operands"));
    CHECK(lt_check(&g, 90, err, sizeof err) == 0);
}

static void case_names(void) {
    CHECK(!strcmp(lt_status_name(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED"));
    CHECK(!strcmp(lt_status_name(CUBLAS_STATUS_NOT_INITIALIZED), "CUBLAS_STATUS_NOT_INITIALIZED"));
    CHECK(!strcmp(lt_status_name(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE"));
    CHECK(!strcmp(lt_status_name(99), "unknown cuBLAS status"));
    CHECK(!strcmp(lt_type_name(LT_R_16BF), "bf16") && !strcmp(lt_type_name(LT_R_8F_E5M2), "e5m2"));
    CHECK(!strcmp(lt_scale_mode_name(LT_SCALE_BLK128x128_32F), "BLK128x128_32F"));
    plan_reset();
    QSpec q = base_spec();
    RtStep s = qgemm_step(&q);
    LtGemm g;
    char err[512] = "", line[512];
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    lt_format(&g, line, sizeof line);
    CHECKF(!strcmp(line, "m=256 n=64 k=640 A=e4m3/T/lda=640 [BLK128x128_32F] B=e4m3/N/ldb=640 [VEC128_32F] "
                         "C=D=bf16/ldd=256 alpha=1 beta=0 epilogue=DEFAULT"),
           "%s", line);
}

/* Every cublasStatus_t of the header prints as its own name. */
static void case_header_names(void) {
#ifdef HAVE_CUBLASLT_H
#define ST(s) {s, #s}
    static const struct {
        int status;
        const char *name;
    } want[] = {ST(CUBLAS_STATUS_SUCCESS),          ST(CUBLAS_STATUS_NOT_INITIALIZED), ST(CUBLAS_STATUS_ALLOC_FAILED),
                ST(CUBLAS_STATUS_INVALID_VALUE),    ST(CUBLAS_STATUS_ARCH_MISMATCH),   ST(CUBLAS_STATUS_MAPPING_ERROR),
                ST(CUBLAS_STATUS_EXECUTION_FAILED), ST(CUBLAS_STATUS_INTERNAL_ERROR),  ST(CUBLAS_STATUS_NOT_SUPPORTED),
                ST(CUBLAS_STATUS_LICENSE_ERROR)};
#undef ST
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECKF(!strcmp(lt_status_name(want[i].status), want[i].name), "status %d prints as %s, cublas_api.h calls it %s",
               want[i].status, lt_status_name(want[i].status), want[i].name);
#else
    CHECKF(0, "cublasLt.h was not found (build.ninja's cudainc): the cuBLAS values in this test are lt.h's own copies");
#endif
}

/* ---- 4. the scale-layout contract ------------------------------------------------------------ */

/* How the emulation reads a scale array: as documented (notes 1.7), or in a plausible wrong way. */
typedef enum { READ_DOC, READ_BLK_UNPADDED, READ_VEC_ROWMAJOR } ScaleReading;

static double read_scale(int mode, const float *s, int64_t i, int64_t b, int64_t rows, int64_t K, ScaleReading how) {
    int64_t L = (K + 127) / 128, L4 = (L + 3) / 4 * 4;
    if (mode == LT_SCALE_SCALAR_32F) return s[0];
    if (mode == LT_SCALE_VEC128_32F) return how == READ_VEC_ROWMAJOR ? s[i * L + b] : s[i + b * rows];
    return s[b + (i / 128) * (how == READ_BLK_UNPADDED ? L : L4)];
}

static double decode(int type, uint8_t c) {
    return type == LT_R_8F_E5M2 ? fp8c_e5m2_to_f32(c) : fp8c_e4m3_to_f32(c);
}

/* cuBLASLt's block-scaled FP8 math (docs 3.1.4.5, notes 1.7), in double, TN layout:
 *   D(i,j) = alpha * sum_b sA(i,b) sB(j,b) P(i,j,b) + beta C(i,j),
 *   P(i,j,b) = sum over l in block b of A[l + i*lda] B[l + j*ldb] (codes decoded, unscaled).
 * Per-tensor scales are the same formula with sA(i,b) = sA[0]. */
static void emulate_fp8(const LtGemm *g, const uint8_t *A, const float *sA, const uint8_t *B, const float *sB, float *D,
                        ScaleReading how) {
    int64_t L = (g->k + 127) / 128;
    for (int64_t j = 0; j < g->n; j++)
        for (int64_t i = 0; i < g->m; i++) {
            double acc = 0;
            for (int64_t b = 0; b < L; b++) {
                double part = 0;
                for (int64_t l = 128 * b; l < g->k && l < 128 * (b + 1); l++)
                    part += decode(g->type_a, A[l + i * g->lda]) * decode(g->type_b, B[l + j * g->ldb]);
                acc += read_scale(g->a_scale_mode, sA, i, b, g->m, g->k, how) *
                       read_scale(g->b_scale_mode, sB, j, b, g->n, g->k, how) * part;
            }
            double c = g->beta != 0 ? (double)g->beta * D[i + j * g->ldd] : 0;
            D[i + j * g->ldd] = (float)(g->alpha * acc + c);
        }
}

/* Rows whose magnitude changes by powers of two from (row, 128-column block) to the next, so
 * that every tile gets its own scale and a scale read from the wrong tile shows. */
static float *tiled_matrix(uint64_t *st, int64_t rows, int64_t cols) {
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t b = 0; b * 128 < cols; b++) {
            float mag = ldexpf(1.0f, (int)rng_below(st, 13) - 6);
            for (int64_t k = 128 * b; k < cols && k < 128 * (b + 1); k++) x[i * cols + k] = mag * rng_normal(st);
        }
    return x;
}

typedef struct {
    double worst;       /* max |emulated - reference| / tolerance, documented reading */
    double wrong_worst; /* the same with the wrong reading, if one was asked for */
} Contract;

/* Quantize a (P x R) and b (Q x R) with the spec's tiles, describe the qgemm, run the
 * emulation on the codes and scale arrays and compare with ref_matmul_fwd on the dequantized
 * operands. Tolerance per element: (R + 3) u sum_k |deq a| |deq b| (the reference's R-term
 * float sum, plus one rounding in each dequantized factor and the final store). */
static Contract scale_contract(const QSpec *q, uint64_t seed, ScaleReading wrong) {
    Contract res = {1e30, 0};
    plan_reset();
    RtStep s = qgemm_step(q);
    LtGemm g;
    char err[512] = "";
    if (lt_describe(&plan, &s, 90, &g, err, sizeof err)) {
        CHECKF(0, "%s", err);
        return res;
    }
    const int64_t P = q->P, Q = q->Q, R = q->R;
    uint64_t st = seed;
    float *xa = tiled_matrix(&st, P, R), *xb = tiled_matrix(&st, Q, R);
    uint8_t *ca = malloc((size_t)(P * R)), *cb = malloc((size_t)(Q * R));
    int64_t na = tensors[s.args[2]].n, nb = tensors[s.args[4]].n;
    float *sa = malloc((size_t)na * sizeof *sa), *sb = malloc((size_t)nb * sizeof *sb);
    q_quantize(ca, sa, NULL, xa, (int)P, (int)R, q->atr, q->atc, (QFormat)q->afmt, 0, 0.0f);
    q_quantize(cb, sb, NULL, xb, (int)Q, (int)R, q->btr, q->btc, (QFormat)q->bfmt, 0, 0.0f);
    float *da = malloc((size_t)(P * R) * sizeof *da), *db = malloc((size_t)(Q * R) * sizeof *db);
    q_dequantize(da, ca, sa, NULL, (int)P, (int)R, q->atr, q->atc, (QFormat)q->afmt, 0);
    q_dequantize(db, cb, sb, NULL, (int)Q, (int)R, q->btr, q->btc, (QFormat)q->bfmt, 0);
    float *want = malloc((size_t)(P * Q) * sizeof *want), *got = calloc((size_t)(P * Q), sizeof *got);
    ref_matmul_fwd(want, da, db, NULL, (int)P, (int)R, (int)Q); /* out(P,Q), row-major */
    /* lt's bindings: A := b's codes and scales, B := a's. D (m=Q x n=P, ld Q) is out. */
    const uint8_t *A = g.a == s.args[3] ? cb : ca, *B = g.b == s.args[1] ? ca : cb;
    const float *sA = g.a_scale == s.args[4] ? sb : sa, *sB = g.b_scale == s.args[2] ? sa : sb;
    CHECK(g.a == s.args[3] && g.b == s.args[1] && g.a_scale == s.args[4] && g.b_scale == s.args[2]);
    CHECK(g.a_scale_count == nb && g.b_scale_count == na);
    res.worst = 0;
    for (int pass = 0; pass < (wrong == READ_DOC ? 1 : 2); pass++) {
        emulate_fp8(&g, A, sA, B, sB, got, pass ? wrong : READ_DOC);
        double worst = 0;
        for (int64_t p = 0; p < P; p++)
            for (int64_t r = 0; r < Q; r++) {
                double sum = 0;
                for (int64_t k = 0; k < R; k++) sum += fabs((double)da[p * R + k] * (double)db[r * R + k]);
                double tol = (double)(R + 3) * U * sum + 1e-30;
                double e = fabs((double)got[r + p * Q] - (double)want[p * Q + r]); /* D(i=r, j=p) */
                if (!(e / tol <= worst)) worst = e / tol;
            }
        if (pass) res.wrong_worst = worst;
        else res.worst = worst;
    }
    free(xa), free(xb), free(ca), free(cb), free(sa), free(sb), free(da), free(db), free(want), free(got);
    return res;
}

static void case_scale_contract_vec_blk(void) {
    /* a 1x128 (VEC), b 128x128 (BLK). P=136, Q=200 (two row blocks of b, the second ragged:
     * 72 rows), R=688: L = 6 blocks (the last 48 wide), L4 = 8, so L % 4 != 0 and the BLK
     * row stride is 8, not 6. Reading b's scales with stride L must fail. */
    QSpec q = base_spec();
    q.P = 136, q.Q = 200, q.R = 688, q.out_dt = TD_F32;
    Contract c = scale_contract(&q, 1, READ_BLK_UNPADDED);
    CHECKF(c.worst <= 1.0, "documented reading off by %.3g x tolerance", c.worst);
    CHECKF(c.wrong_worst > 1000.0, "the unpadded (L instead of L4) reading is only %.3g x tolerance off", c.wrong_worst);
}

static void case_scale_contract_blk_vec(void) {
    /* a 128x128 (BLK, cuBLAS B: rows P=200 in two blocks), b 1x128 (VEC, cuBLAS A), e5m2 a. */
    QSpec q = base_spec();
    q.P = 200, q.Q = 136, q.R = 688, q.out_dt = TD_F32;
    q.atr = 128, q.btr = 1, q.afmt = 1;
    Contract c = scale_contract(&q, 2, READ_BLK_UNPADDED);
    CHECKF(c.worst <= 1.0, "documented reading off by %.3g x tolerance", c.worst);
    CHECKF(c.wrong_worst > 1000.0, "the unpadded reading is only %.3g x tolerance off", c.wrong_worst);
}

static void case_scale_contract_vec_vec(void) {
    /* Both 1x128, R = 272 (L = 3, the last block 16 wide), e5m2 x e4m3. The VEC arrays are
     * rows-fastest ("M-major"); reading them row-major ([i][L], the way activation scales are
     * often produced) must fail. */
    QSpec q = base_spec();
    q.P = 72, q.Q = 48, q.R = 272, q.btr = 1, q.afmt = 1;
    Contract c = scale_contract(&q, 3, READ_VEC_ROWMAJOR);
    CHECKF(c.worst <= 1.0, "documented reading off by %.3g x tolerance", c.worst);
    CHECKF(c.wrong_worst > 1000.0, "the row-major reading is only %.3g x tolerance off", c.wrong_worst);
}

static void case_scale_contract_per_tensor(void) {
    QSpec q = base_spec();
    q.P = 40, q.Q = 24, q.R = 96, q.atr = q.atc = q.btr = q.btc = 0, q.out_dt = TD_F32;
    Contract c = scale_contract(&q, 4, READ_DOC);
    CHECKF(c.worst <= 1.0, "per-tensor reading off by %.3g x tolerance", c.worst);
}

/* ---- 5. the library --------------------------------------------------------------------------- */

/* LeakSanitizer hook (read only by ASan builds): cublasLtCreate of cuBLAS 13.1.0 leaks 192 bytes
 * when it fails for want of a driver, inside the library; not ours to fix. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcublasLt.so\n"; }

static LtLib *lib;

/* Fake device addresses: never dereferenced by descriptor calls. */
#define FAKE(k) ((void *)(uintptr_t)(0x7f0000000000ull + 0x100000ull * (k)))

/* Describe, build with fake pointers, read every attribute back and compare with the LtGemm
 * and with the hand-derived numbers passed in. */
static void build_and_read(const RtStep *s, int sm, const char *what, int nattr_want) {
    LtGemm g;
    char err[512] = "";
    if (lt_describe(&plan, s, sm, &g, err, sizeof err)) {
        CHECKF(0, "%s: %s", what, err);
        return;
    }
    LtCall c;
    const void *bias = g.bias >= 0 ? FAKE(1) : NULL, *as = g.fp8 ? FAKE(2) : NULL, *bs = g.fp8 ? FAKE(3) : NULL;
    if (lt_build(lib, &g, &c, bias, as, bs, err, sizeof err)) {
        CHECKF(0, "%s: lt_build: %s", what, err);
        return;
    }
    CHECKF(c.nattr == nattr_want, "%s: %d attributes set, expected %d", what, c.nattr, nattr_want);
    LtReadback rb;
    if (lt_readback(lib, &c, &rb, err, sizeof err)) {
        CHECKF(0, "%s: lt_readback: %s", what, err);
        lt_call_free(lib, &c);
        return;
    }
    CHECKF(rb.compute == CUBLAS_COMPUTE_32F && rb.scale_type == CUDA_R_32F, "%s: compute %d scale type %d", what, rb.compute, rb.scale_type);
    CHECKF(rb.transa == g.transa && rb.transb == g.transb, "%s: trans %d%d", what, rb.transa, rb.transb);
    CHECKF((int)rb.epilogue == g.epilogue, "%s: epilogue %u", what, rb.epilogue);
    CHECKF(rb.bias == bias, "%s: bias pointer", what);
    if (g.epilogue == LT_EPI_BIAS) CHECKF(rb.bias_type == g.bias_type, "%s: bias type %d", what, rb.bias_type);
    if (g.fp8) {
        CHECKF(rb.a_scale_mode == g.a_scale_mode && rb.b_scale_mode == g.b_scale_mode, "%s: scale modes %d %d", what,
               rb.a_scale_mode, rb.b_scale_mode);
        CHECKF(rb.a_scale == as && rb.b_scale == bs, "%s: scale pointers %p %p", what, rb.a_scale, rb.b_scale);
        CHECKF(rb.fast_accum == 0, "%s: fast accum %d", what, rb.fast_accum);
    } else {
        CHECKF(rb.a_scale == NULL && rb.b_scale == NULL && rb.a_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F && rb.b_scale_mode == CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F,
               "%s: scale attributes set on a float GEMM", what);
    }
    const int types[3] = {g.type_a, g.type_b, g.type_d};
    const int64_t rows[3] = {g.rows_a, g.rows_b, g.m}, cols[3] = {g.cols_a, g.cols_b, g.n}, ld[3] = {g.lda, g.ldb, g.ldd};
    for (int i = 0; i < 3; i++)
        CHECKF((int)rb.type[i] == types[i] && (int64_t)rb.rows[i] == rows[i] && (int64_t)rb.cols[i] == cols[i] &&
                   rb.ld[i] == ld[i],
               "%s: layout %c is %s %llux%llu ld %lld", what, "ABD"[i], lt_type_name((int)rb.type[i]),
               (unsigned long long)rb.rows[i], (unsigned long long)rb.cols[i], (long long)rb.ld[i]);
    CHECKF(rb.ws_bytes == g.ws_bytes, "%s: workspace %llu", what, (unsigned long long)rb.ws_bytes);
    CHECKF(rb.align[0] == g.align_a && rb.align[1] == g.align_b && rb.align[2] == g.align_c && rb.align[3] == g.align_d,
           "%s: alignments %u %u %u %u", what, rb.align[0], rb.align[1], rb.align[2], rb.align[3]);
    lt_call_free(lib, &c);
    lt_call_free(lib, &c); /* idempotent */
}

static void case_lib_version(void) {
    /* Block-scaled FP8 needs cuBLAS 12.9 (120900) or later; CUDA 13.0 U2 ships 13.1.0 (130100). */
    CHECKF(lt_version(lib) >= 120900, "cuBLASLt version %d", lt_version(lib));
}

static void case_lib_handle(void) {
    void *h = NULL;
    char err[512] = "";
    if (lt_create_handle(lib, &h, err, sizeof err) == 0) {
        lt_destroy_handle(lib, h); /* a machine with a GPU and a driver */
        return;
    }
    CHECK(h == NULL);
    CHECKF(!strncmp(err, "cublasLtCreate: CUBLAS_STATUS_", 30), "%s", err);
}

static void case_lib_build_float(void) {
    /* Attributes: TRANSA, TRANSB, EPILOGUE (+ BIAS_POINTER, BIAS_DATA_TYPE with a fused bias),
     * then MAX_WORKSPACE_BYTES and four MIN_ALIGNMENTs on the preference. */
    plan_reset();
    RtStep s = fwd_step(64, 96, 48, TD_F32, TD_F32, TD_F32, 1, TD_F32);
    build_and_read(&s, 90, "matmul_fwd f32 + bias", 3 + 2 + 5);
    plan_reset();
    s = make_step(OP_MATMUL_BWD_DATA);
    s.args[0] = add_tensor("dinp", TD_F32, 64 * 96);
    s.args[1] = add_tensor("dout", TD_BF16, 64 * 48);
    s.args[2] = add_tensor("w", TD_BF16, 48 * 96);
    s.ints[0] = 64, s.ints[1] = 96, s.ints[2] = 48;
    build_and_read(&s, 90, "matmul_bwd_data bf16", 3 + 5);
    plan_reset();
    s = make_step(OP_MATMUL_BWD_WEIGHT);
    s.args[0] = add_tensor("dw", TD_BF16, 48 * 96);
    s.args[2] = add_tensor("dout", TD_BF16, 64 * 48);
    s.args[3] = add_tensor("inp", TD_BF16, 64 * 96);
    s.ints[0] = 64, s.ints[1] = 96, s.ints[2] = 48;
    build_and_read(&s, 89, "matmul_bwd_weight bf16", 3 + 5);
}

static void case_lib_build_fp8(void) {
    /* FP8 adds FAST_ACCUM, A/B_SCALE_MODE and A/B_SCALE_POINTER: 2 + 5 + 1 (+2 bias) + 5. */
    plan_reset();
    QSpec q = base_spec();
    q.bias = 1, q.afmt = 1;
    RtStep s = qgemm_step(&q);
    build_and_read(&s, 90, "qgemm VEC x BLK + bias", 2 + 5 + 1 + 2 + 5);
    plan_reset();
    q = base_spec();
    q.atr = 128, q.btr = 1;
    s = qgemm_step(&q);
    build_and_read(&s, 90, "qgemm BLK x VEC", 2 + 5 + 1 + 5);
    plan_reset();
    q = base_spec();
    q.btr = 1;
    s = qgemm_step(&q);
    build_and_read(&s, 90, "qgemm VEC x VEC", 2 + 5 + 1 + 5);
    plan_reset();
    q = base_spec();
    q.atr = q.atc = q.btr = q.btc = 0, q.acc = 1, q.out_dt = TD_F32;
    s = qgemm_step(&q);
    build_and_read(&s, 89, "qgemm per-tensor, accumulating", 2 + 5 + 1 + 5);
}

static void case_lib_errors(void) {
    plan_reset();
    QSpec q = base_spec();
    RtStep s = qgemm_step(&q);
    LtGemm g;
    LtCall c;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECK(lt_build(lib, &g, &c, NULL, FAKE(2), NULL, err, sizeof err) == -1 && strstr(err, "both scale pointers"));
    CHECK(c.op == NULL);
    CHECKF(lt_build(lib, &g, &c, NULL, FAKE(2), FAKE(3), err, sizeof err) == 0, "%s", err);
    CHECK(lt_run(lib, NULL, &c, FAKE(4), FAKE(5), NULL, FAKE(6), NULL, FAKE(2), FAKE(3), FAKE(7), 32 * MIB, NULL, err,
                 sizeof err) == -1 &&
          strstr(err, "before lt_heuristic"));
    /* No handle (no driver here): the heuristic's own status comes back, named. */
    CHECK(lt_heuristic(lib, NULL, &c, err, sizeof err) == -1);
    CHECKF(!strncmp(err, "cublasLtMatmulAlgoGetHeuristic(m=256 n=64 k=640 ", 48) && strstr(err, "): CUBLAS_STATUS_"), "%s", err);
    CHECK(!c.have_algo);
    lt_call_free(lib, &c);
}

static void case_lib_run_checks(void) {
    /* lt_run's own checks come before cublasLtMatmul; with no GPU the call itself can only fail,
     * but it must fail with its status named. An algorithm is faked (zeros, 1 KiB workspace). */
    plan_reset();
    QSpec q = base_spec();
    q.bias = 1;
    RtStep s = qgemm_step(&q);
    LtGemm g;
    LtCall c;
    char err[512] = "";
    CHECKF(lt_describe(&plan, &s, 90, &g, err, sizeof err) == 0, "%s", err);
    CHECKF(lt_build(lib, &g, &c, FAKE(1), FAKE(2), FAKE(3), err, sizeof err) == 0, "%s", err);
    c.have_algo = 1;
    c.algo_ws = 1024;
    void *A = FAKE(4), *B = FAKE(5), *D = FAKE(6), *ws = FAKE(7);
    CHECK(lt_run(lib, NULL, &c, (char *)A + 8, B, NULL, D, FAKE(1), FAKE(2), FAKE(3), ws, 4096, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "A pointer") && strstr(err, "not 256-byte aligned"), "%s", err);
    CHECK(lt_run(lib, NULL, &c, A, B, NULL, D, FAKE(1), FAKE(2), FAKE(3), NULL, 4096, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "needs 1024 bytes of workspace; none given"), "%s", err);
    CHECK(lt_run(lib, NULL, &c, A, B, NULL, D, FAKE(1), FAKE(2), FAKE(3), ws, 512, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "workspace of 512 bytes; the algorithm needs 1024"), "%s", err);
    CHECK(lt_run(lib, NULL, &c, A, B, NULL, D, FAKE(1), FAKE(2), FAKE(3), (char *)ws + 16, 4096, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "256-byte aligned"), "%s", err);
    CHECK(lt_run(lib, NULL, &c, A, B, NULL, D, (char *)FAKE(1) + 2, FAKE(2), FAKE(3), ws, 4096, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "BIAS_POINTER") && strstr(err, "less aligned"), "%s", err);
    CHECK(lt_run(lib, NULL, &c, A, B, NULL, D, FAKE(1), FAKE(2), (char *)FAKE(3) + 4, ws, 4096, NULL, err, sizeof err) == -1);
    CHECKF(strstr(err, "B scale pointer") && strstr(err, "16-byte"), "%s", err);
    /* New scale and bias pointers (as aligned) are set on the descriptor; then cublasLtMatmul
     * itself refuses the missing handle. */
    int rc = lt_run(lib, NULL, &c, A, B, NULL, D, FAKE(8), FAKE(9), FAKE(10), ws, 4096, NULL, err, sizeof err);
    CHECK(rc == -1);
    CHECKF(!strncmp(err, "cublasLtMatmul(m=256 n=64 k=640 ", 32) && strstr(err, "): CUBLAS_STATUS_"), "%s", err);
    LtReadback rb;
    CHECKF(lt_readback(lib, &c, &rb, err, sizeof err) == 0, "%s", err);
    CHECK(rb.bias == FAKE(8) && rb.a_scale == FAKE(9) && rb.b_scale == FAKE(10));
    CHECK(c.bias == FAKE(8) && c.a_scale == FAKE(9) && c.b_scale == FAKE(10));
    lt_call_free(lib, &c);
}

int main(void) {
    RUN_CASE(case_fwd_f32_bias);
    RUN_CASE(case_fwd_bf16_bias_left_over);
    RUN_CASE(case_fwd_f16_bias);
    RUN_CASE(case_bwd_data_bf16);
    RUN_CASE(case_bwd_weight_bf16);
    RUN_CASE(case_qgemm_fwd_vec_blk);
    RUN_CASE(case_qgemm_dgrad_per_tensor);
    RUN_CASE(case_qgemm_f32_out_bias);
    RUN_CASE(case_mapping_numeric);
    RUN_CASE(case_qgemm_refusals);
    RUN_CASE(case_plan_level_refusals);
    RUN_CASE(case_check_rules_direct);
    RUN_CASE(case_names);
    RUN_CASE(case_header_names);
    RUN_CASE(case_scale_contract_vec_blk);
    RUN_CASE(case_scale_contract_blk_vec);
    RUN_CASE(case_scale_contract_vec_vec);
    RUN_CASE(case_scale_contract_per_tensor);
    char err[1024] = "";
    if (lt_open(&lib, err, sizeof err)) {
        printf("SKIP test_lt library cases: %s\n", err);
    } else {
        RUN_CASE(case_lib_version);
        RUN_CASE(case_lib_handle);
        RUN_CASE(case_lib_build_float);
        RUN_CASE(case_lib_build_fp8);
        RUN_CASE(case_lib_errors);
        RUN_CASE(case_lib_run_checks);
        lt_close(lib);
    }
    CHECK_EXIT();
}
