/* lt.h: one GEMM step of a plan as one cuBLASLt matmul (shared/notes/cuda-apis.md section 1).
 *
 * Two halves:
 *   - lt_describe / lt_check (pure C, no CUDA): map a MATMUL_FWD, MATMUL_BWD_DATA,
 *     MATMUL_BWD_WEIGHT or QGEMM step onto the column-major cuBLASLt problem and record it as
 *     plain data (LtGemm), or refuse it with a message that says why. A refusal is the runtime's
 *     "fall back to the generated GEMM" decision at plan load, so the message is shown to users.
 *   - LtLib / LtCall (dlopen'ed libcublasLt): build the descriptors from an LtGemm, choose an
 *     algorithm once, run it. libcublasLt loads and builds descriptors without a GPU or a driver
 *     (notes 2.1); only lt_create_handle, lt_heuristic and lt_run need one.
 * Every cuBLASLt status becomes a message naming the call, the attribute and the status name.
 *
 * Pointers: the CUDA backend binds plan tensor t to class_base[t.cls] + t.offset, with class
 * bases at least 256-byte aligned (cudaMalloc); LtGemm's align_* fields are derived from the
 * plan's offsets on that assumption and lt_run checks them on the real pointers.
 *
 * Must not: include CUDA headers (the enum values below are copied from the CUDA 13.0 headers,
 * each with its line; tests/unit/check_cuda_headers.c asserts them against those headers in
 * `ninja test`, and lt_abi.h holds the rest of what lt.c copies), touch device memory, keep
 * global state, print, or exit.
 */
#ifndef FP8C_RUNTIME_CUDA_LT_H
#define FP8C_RUNTIME_CUDA_LT_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* cudaDataType_t (library_types.h:59-89). */
enum { LT_R_32F = 0, LT_R_16F = 2, LT_R_16BF = 14, LT_R_8F_E4M3 = 28, LT_R_8F_E5M2 = 29 };
/* cublasOperation_t (cublas_api.h:109-110); cublasComputeType_t (cublas_api.h:208). */
enum { LT_OP_N = 0, LT_OP_T = 1, LT_COMPUTE_32F = 68 };
/* cublasLtMatmulMatrixScale_t (cublasLt.h:923-939); LT_SCALE_NONE: operand is not FP8. */
enum { LT_SCALE_NONE = -1, LT_SCALE_SCALAR_32F = 0, LT_SCALE_VEC128_32F = 4, LT_SCALE_BLK128x128_32F = 5 };
/* cublasLtEpilogue_t (cublasLt.h:1936, 1953). */
enum { LT_EPI_DEFAULT = 1, LT_EPI_BIAS = 4 };

/* One cuBLASLt matmul, column-major: D(m,n) = alpha op(A)(m,k) op(B)(k,n) + beta C (+ bias(m)).
 * A row-major plan tensor X(r,c) is the column-major matrix X^T (c x r, ld = c); see lt.c for
 * each op's derivation. FP8 (QGEMM): cuBLAS A is the plan's b operand (weights), cuBLAS B the
 * plan's a operand (activations or gradients), so "A scales" are b_scale_inv. */
typedef struct {
    OpKind op;
    int sm;                       /* compute capability x 10 this was described for */
    int fp8;                      /* FP8 operands: the scale fields below are in use */
    int64_t m, n, k;
    int transa, transb;           /* LT_OP_N / LT_OP_T */
    int64_t rows_a, cols_a;       /* A as stored: transa == N ? m x k : k x m */
    int64_t rows_b, cols_b;       /* B as stored: transb == N ? k x n : n x k */
    int64_t lda, ldb, ldc, ldd;
    int type_a, type_b, type_c, type_d; /* LT_R_* */
    int compute, scale_type;      /* LT_COMPUTE_32F, LT_R_32F always */
    float alpha, beta;            /* beta = 1 for accumulating steps (C == D) */
    int a, b, c, d;               /* plan tensor ids bound to A, B, C, D; C is always D */
    int bias;                     /* tensor id fused by the BIAS epilogue, or -1 */
    int a_scale, b_scale;         /* tensor ids of the cuBLAS A / B scale arrays (FP8), or -1 */
    int a_scale_mode, b_scale_mode; /* LT_SCALE_* */
    int64_t a_scale_count, b_scale_count; /* floats cuBLASLt reads for that mode (notes 1.7) */
    int epilogue;                 /* LT_EPI_DEFAULT or LT_EPI_BIAS */
    int bias_type;                /* LT_R_* of the bias, -1 without */
    int post_bias;                /* bias(N) the caller adds to every row of D afterwards, or -1 */
    int post_dbias;               /* dbias += column sums of dout: the caller's kernel, or -1 */
    uint32_t align_a, align_b, align_c, align_d; /* bytes each pointer is aligned to (<= 256) */
    uint64_t ws_bytes;            /* workspace to offer: 32 MiB on sm_90+, 4 MiB before (1.11) */
} LtGemm;

/* Describe step s of plan p for a GPU of compute capability sm (89, 90, 100, ...). 0 and *g
 * filled, or -1 with err = "cuBLASLt cannot run <op> '<out>' on sm_<sm>: <why>" (g is then
 * partly filled and must not be used). Calls lt_check. */
int lt_describe(const Plan *p, const RtStep *s, int sm, LtGemm *g, char *err, size_t errlen);

/* Every cuBLASLt GEMM unit of plan p (gpu.gemm == 1) described for sm, before a GPU is
 * needed: what `fp8c run DIR --check` reports. Returns how many cuBLASLt would refuse that have
 * no generated kernel to run instead; err names the first ("<section> unit <i>: <why>"). An FP8
 * GEMM with a generated kernel is not counted: the backend runs that kernel (cuda.c). */
int lt_check_plan(const Plan *p, int sm, char *err, size_t errlen);

/* The cuBLASLt rules on a described problem (TN and types for FP8, scale modes per
 * architecture, dimension and leading-dimension multiples, pointer alignment). 0 or -1 with
 * the reason in err. */
int lt_check(const LtGemm *g, int sm, char *err, size_t errlen);

/* Drop the BIAS epilogue: the caller adds the bias itself (post_bias). For a heuristic that
 * finds no kernel with the epilogue (block-scaled FP8 has "limited support for fused
 * epilogues", notes 1.9): rebuild with the result. */
void lt_unfuse_bias(LtGemm *g);

/* Names for messages and dumps; never NULL. */
const char *lt_type_name(int type);        /* "bf16", "e4m3", ... */
const char *lt_scale_mode_name(int mode);  /* "VEC128_32F", ... */
const char *lt_status_name(int status);    /* "CUBLAS_STATUS_NOT_SUPPORTED", ... */

/* One line: "m=.. n=.. k=.. A=e4m3/T/lda=.. [BLK128x128_32F] B=... C=D=bf16/ldd=.. beta=.. epi=..". */
void lt_format(const LtGemm *g, char *buf, size_t n);

/* ---- the library ------------------------------------------------------------------------ */

typedef struct LtLib LtLib;

/* dlopen libcublasLt.so.13 (then libcublasLt.so, then /usr/local/cuda/lib64/libcublasLt.so.13)
 * and resolve its entry points. 0, or -1 with every loader message in err. */
int lt_open(LtLib **out, char *err, size_t errlen);
void lt_close(LtLib *lib);              /* NULL is fine */
int lt_version(const LtLib *lib);       /* cublasLtGetVersion(): 130100 for cuBLAS 13.1.0 */

/* cublasLtCreate; fails with CUBLAS_STATUS_NOT_INITIALIZED without a usable driver (1.12). */
int lt_create_handle(LtLib *lib, void **handle, char *err, size_t errlen);
void lt_destroy_handle(LtLib *lib, void *handle);

/* cuBLASLt objects of one GEMM step. Zero-initialise before lt_build; lt_call_free releases. */
typedef struct {
    LtGemm g;
    void *op;                     /* cublasLtMatmulDesc_t */
    void *Ad, *Bd, *Dd;           /* cublasLtMatrixLayout_t; C uses Dd (C == D needs Cdesc == Ddesc, 1.13) */
    void *pref;                   /* cublasLtMatmulPreference_t */
    const void *bias, *a_scale, *b_scale; /* device pointers currently set on op */
    uint64_t algo[8];             /* cublasLtMatmulAlgo_t (cublasLt.h:113-115) */
    int have_algo;
    size_t algo_ws;               /* workspace bytes the chosen algorithm needs */
    int nattr;                    /* attributes set successfully (descriptor, layouts, preference) */
} LtCall;

/* Create the descriptors for g and set every attribute: TRANSA/B, FAST_ACCUM = 0, scale modes
 * and scale pointers (FP8), EPILOGUE, BIAS_POINTER and BIAS_DATA_TYPE, layouts, workspace and
 * alignment preferences. bias, a_scale, b_scale are device pointers (they are not dereferenced
 * here, but an FP8 GEMM needs both scales and a BIAS epilogue its bias). 0 or -1. */
int lt_build(LtLib *lib, const LtGemm *g, LtCall *c, const void *bias, const void *a_scale, const void *b_scale,
             char *err, size_t errlen);

/* cublasLtMatmulAlgoGetHeuristic once: keep the best algorithm whose workspace fits
 * g.ws_bytes. Call before any stream capture (1.12). 0 or -1 ("no kernel" is an error). */
int lt_heuristic(LtLib *lib, void *handle, LtCall *c, char *err, size_t errlen);

/* Enqueue D = alpha op(A) op(B) + beta C on stream (a CUstream). C may be NULL (then D).
 * Bias and scale pointers that differ from the ones set are set again. Pointers are checked
 * against g's alignments, the workspace against 256 bytes and the algorithm's size. */
int lt_run(LtLib *lib, void *handle, LtCall *c, const void *A, const void *B, const void *C, void *D, const void *bias,
           const void *a_scale, const void *b_scale, void *workspace, size_t ws_bytes, void *stream, char *err,
           size_t errlen);

void lt_call_free(LtLib *lib, LtCall *c); /* idempotent */

/* What the cuBLASLt objects of c hold, read back with the Get*Attribute calls (tests, dumps). */
typedef struct {
    int32_t compute, scale_type, transa, transb, a_scale_mode, b_scale_mode, bias_type;
    uint32_t epilogue;
    int8_t fast_accum;
    const void *bias, *a_scale, *b_scale;
    uint32_t type[3];             /* A, B, D layouts */
    uint64_t rows[3], cols[3];
    int64_t ld[3];
    uint64_t ws_bytes;
    uint32_t align[4];            /* A, B, C, D */
} LtReadback;

int lt_readback(LtLib *lib, const LtCall *c, LtReadback *rb, char *err, size_t errlen);

#endif
