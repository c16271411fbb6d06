/* lt_double.c: a test-double cuBLASLt, built as build/tests/libcublasLt.so.13 (tests only; see
 * tests/cudadouble/README.md). It implements the entry points lt.c resolves (lt_abi.h
 * LT_ENTRY_POINTS) for the matmuls fp8c describes: FP32 compute and scale, A/B/C/D in FP32, BF16,
 * FP16 or FP8 (E4M3/E5M2), FP8 scale modes SCALAR_32F, VEC128_32F and BLK128x128_32F, the DEFAULT
 * and BIAS epilogues, beta, AMAX_D and D's scale. cublasLtMatmul queues the product as host work
 * on the driver double's stream (double.h), so it is deferred, ordered and captured like a launch.
 *
 * It refuses what NVIDIA's documentation says cuBLASLt refuses on compute capability 9.0; each
 * rule below cites its source (the cuBLAS documentation section, as summarised with links in
 * shared/notes/cuda-apis.md section 1). Arithmetic: exact products summed in float per 128-long
 * K block (8 partial sums), blocks summed in double, one rounding to D's type at the end; it is
 * not a tensor core's accumulation order (README.md: what it cannot catch).
 * Must not: run without the driver double (cublasLtCreate fails as with no GPU), or be linked
 * into fp8c.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "double.h"
#include "fp8.h"

#define EXPORT __attribute__((visibility("default")))

/* cublasStatus_t (cublas_api.h) */
enum { S_OK = 0, S_NOT_INITIALIZED = 1, S_ALLOC_FAILED = 3, S_INVALID_VALUE = 7, S_EXECUTION_FAILED = 13, S_NOT_SUPPORTED = 15 };
/* cudaDataType_t (library_types.h) */
enum { T_F32 = 0, T_F16 = 2, T_BF16 = 14, T_E4M3 = 28, T_E5M2 = 29 };
enum { COMPUTE_32F = 68, OP_N = 0, OP_T = 1 };
enum { SC_SCALAR = 0, SC_VEC128 = 4, SC_BLK128 = 5 };
enum { EPI_DEFAULT = 1, EPI_BIAS = 4 };

typedef struct {
    int32_t compute, scale_type, transa, transb, bias_type, a_mode, b_mode, c_mode, d_mode;
    uint32_t epilogue;
    int8_t fast_accum;
    const void *bias, *a_scale, *b_scale, *c_scale, *d_scale, *amax_d;
} Desc;

typedef struct {
    uint32_t type;
    int32_t order;
    uint64_t rows, cols;
    int64_t ld;
} Layout;

typedef struct {
    uint64_t ws;
    uint32_t align[4];
} Pref;

/* What cublasLtMatmul queues: everything the product needs, by value. */
typedef struct {
    Desc d;
    Layout A, B, C, D;
    float alpha, beta;
    const void *a, *b, *c;
    void *dst;
} Job;

static DoubleEnqueueFn enqueue;
static DoubleCheckFn check_range;

/* ---- handle ------------------------------------------------------------------------------------------ */

EXPORT int cublasLtCreate(void **handle) {
    if (!handle) return S_INVALID_VALUE;
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    void *e = drv ? dlsym(drv, DOUBLE_ENQUEUE_SYMBOL) : NULL, *c = drv ? dlsym(drv, DOUBLE_CHECK_SYMBOL) : NULL;
    if (drv) dlclose(drv);
    if (!e || !c) {
        fprintf(stderr, "fp8c-test-double: libcublasLt double: the libcuda double is not loaded: refusing as with no GPU\n");
        return S_NOT_INITIALIZED;
    }
    memcpy(&enqueue, &e, sizeof e);
    memcpy(&check_range, &c, sizeof c);
    fprintf(stderr, "fp8c-test-double: libcublasLt double (no GPU): host GEMMs on the libcuda double's streams, sm_90 rules\n");
    *handle = malloc(1);
    return *handle ? S_OK : S_ALLOC_FAILED;
}

EXPORT int cublasLtDestroy(void *handle) {
    free(handle);
    return S_OK;
}

EXPORT size_t cublasLtGetVersion(void) { return 130100; } /* the cuBLAS 13.1 API it models */

/* ---- descriptors: every attribute has one size; another is INVALID_VALUE (cublasLt.h tables) ----- */

EXPORT int cublasLtMatmulDescCreate(void **desc, int compute, int scale_type) {
    if (!desc) return S_INVALID_VALUE;
    Desc *d = calloc(1, sizeof *d);
    if (!d) return S_ALLOC_FAILED;
    d->compute = compute, d->scale_type = scale_type, d->epilogue = EPI_DEFAULT, d->bias_type = -1;
    *desc = d;
    return S_OK;
}

EXPORT int cublasLtMatmulDescDestroy(void *desc) {
    free(desc);
    return S_OK;
}

/* attribute -> field and size */
static void *desc_field(Desc *d, int attr, size_t *size) {
    switch (attr) {
    case 0: *size = 4; return &d->compute;
    case 1: *size = 4; return &d->scale_type;
    case 3: *size = 4; return &d->transa;
    case 4: *size = 4; return &d->transb;
    case 7: *size = 4; return &d->epilogue;
    case 8: *size = sizeof(void *); return &d->bias;
    case 17: *size = sizeof(void *); return &d->a_scale;
    case 18: *size = sizeof(void *); return &d->b_scale;
    case 19: *size = sizeof(void *); return &d->c_scale;
    case 20: *size = sizeof(void *); return &d->d_scale;
    case 21: *size = sizeof(void *); return &d->amax_d;
    case 25: *size = 1; return &d->fast_accum;
    case 26: *size = 4; return &d->bias_type;
    case 31: *size = 4; return &d->a_mode;
    case 32: *size = 4; return &d->b_mode;
    case 33: *size = 4; return &d->c_mode;
    case 34: *size = 4; return &d->d_mode;
    }
    return NULL;
}

/* An attribute's Set and Get once its field is found (f: NULL when the double does not model it;
 * missing: the status a Set returns then): the size must be the attribute's own. */
static int set_attr(void *f, int missing, size_t want, const void *buf, size_t size) {
    if (!f) return missing;
    if (!buf || size != want) return S_INVALID_VALUE;
    memcpy(f, buf, size);
    return S_OK;
}

static int get_attr(const void *f, size_t want, void *buf, size_t size, size_t *written) {
    if (!f) return S_INVALID_VALUE;
    if (written) *written = want;
    if (!buf || size != want) return S_INVALID_VALUE;
    memcpy(buf, f, size);
    return S_OK;
}

EXPORT int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t size) {
    size_t want = 0;
    void *f = desc ? desc_field(desc, attr, &want) : NULL;
    return set_attr(f, desc ? S_NOT_SUPPORTED : S_INVALID_VALUE, want, buf, size); /* NOT_SUPPORTED: not modelled */
}

EXPORT int cublasLtMatmulDescGetAttribute(void *desc, int attr, void *buf, size_t size, size_t *written) {
    size_t want = 0;
    void *f = desc ? desc_field(desc, attr, &want) : NULL;
    return get_attr(f, want, buf, size, written);
}

EXPORT int cublasLtMatrixLayoutCreate(void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (!layout) return S_INVALID_VALUE;
    Layout *l = calloc(1, sizeof *l);
    if (!l) return S_ALLOC_FAILED;
    *l = (Layout){(uint32_t)type, 0, rows, cols, ld};
    *layout = l;
    return S_OK;
}

EXPORT int cublasLtMatrixLayoutDestroy(void *layout) {
    free(layout);
    return S_OK;
}

static void *layout_field(Layout *l, int attr, size_t *size) {
    switch (attr) {
    case 0: *size = 4; return &l->type;
    case 1: *size = 4; return &l->order;
    case 2: *size = 8; return &l->rows;
    case 3: *size = 8; return &l->cols;
    case 4: *size = 8; return &l->ld;
    }
    return NULL;
}

EXPORT int cublasLtMatrixLayoutSetAttribute(void *layout, int attr, const void *buf, size_t size) {
    size_t want = 0;
    void *f = layout ? layout_field(layout, attr, &want) : NULL;
    return set_attr(f, S_NOT_SUPPORTED, want, buf, size);
}

EXPORT int cublasLtMatrixLayoutGetAttribute(void *layout, int attr, void *buf, size_t size, size_t *written) {
    size_t want = 0;
    void *f = layout ? layout_field(layout, attr, &want) : NULL;
    return get_attr(f, want, buf, size, written);
}

EXPORT int cublasLtMatmulPreferenceCreate(void **pref) {
    if (!pref) return S_INVALID_VALUE;
    Pref *p = calloc(1, sizeof *p);
    if (!p) return S_ALLOC_FAILED;
    for (int i = 0; i < 4; i++) p->align[i] = 256; /* MIN_ALIGNMENT_*_BYTES default 256 (cublasLt.h:2099-2133) */
    *pref = p;
    return S_OK;
}

EXPORT int cublasLtMatmulPreferenceDestroy(void *pref) {
    free(pref);
    return S_OK;
}

static void *pref_field(Pref *p, int attr, size_t *size) {
    if (attr == 1) {
        *size = 8;
        return &p->ws;
    }
    if (attr >= 5 && attr <= 8) {
        *size = 4;
        return &p->align[attr - 5];
    }
    return NULL;
}

EXPORT int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t size) {
    size_t want = 0;
    void *f = pref ? pref_field(pref, attr, &want) : NULL;
    return set_attr(f, S_NOT_SUPPORTED, want, buf, size);
}

EXPORT int cublasLtMatmulPreferenceGetAttribute(void *pref, int attr, void *buf, size_t size, size_t *written) {
    size_t want = 0;
    void *f = pref ? pref_field(pref, attr, &want) : NULL;
    return get_attr(f, want, buf, size, written);
}

/* ---- the rules ----------------------------------------------------------------------------------- */

static int is_fp8(uint32_t t) { return t == T_E4M3 || t == T_E5M2; }
static int type_bytes(uint32_t t) { return t == T_F32 ? 4 : t == T_F16 || t == T_BF16 ? 2 : 1; }
static int known_type(uint32_t t) { return t == T_F32 || t == T_F16 || t == T_BF16 || is_fp8(t); }

static int refuse(int status, const char *rule) {
    if (getenv("FP8C_CUDA_DOUBLE_VERBOSE")) fprintf(stderr, "fp8c-test-double: libcublasLt double refuses: %s\n", rule);
    return status;
}

/* The problem (m, n, k) from the layouts, with A and B as op() sees them. */
static int dims(const Desc *d, const Layout *A, const Layout *B, const Layout *D, uint64_t *m, uint64_t *n, uint64_t *k) {
    uint64_t am = d->transa == OP_N ? A->rows : A->cols, ak = d->transa == OP_N ? A->cols : A->rows;
    uint64_t bk = d->transb == OP_N ? B->rows : B->cols, bn = d->transb == OP_N ? B->cols : B->rows;
    if (am != D->rows || bn != D->cols || ak != bk) return -1;
    *m = am, *n = bn, *k = ak;
    return 0;
}

/* Every rule the double checks before it offers an algorithm; 0 or a cublasStatus_t. */
static int check(const Desc *d, const Layout *A, const Layout *B, const Layout *C, const Layout *D, const Pref *p) {
    uint64_t m, n, k;
    if (!known_type(A->type) || !known_type(B->type) || !known_type(C->type) || !known_type(D->type))
        return refuse(S_NOT_SUPPORTED, "a data type the double does not model");
    if (A->order || B->order || C->order || D->order) return refuse(S_NOT_SUPPORTED, "only CUBLASLT_ORDER_COL is modelled");
    if ((d->transa != OP_N && d->transa != OP_T) || (d->transb != OP_N && d->transb != OP_T)) return refuse(S_INVALID_VALUE, "transa/transb");
    if (dims(d, A, B, D, &m, &n, &k)) return refuse(S_INVALID_VALUE, "op(A) m x k, op(B) k x n and D m x n disagree");
    if (!m || !n || !k) return refuse(S_INVALID_VALUE, "an empty dimension");
    if (C->rows != D->rows || C->cols != D->cols) return refuse(S_INVALID_VALUE, "C and D shapes differ");
    if ((int64_t)A->rows > A->ld || (int64_t)B->rows > B->ld || (int64_t)C->rows > C->ld || (int64_t)D->rows > D->ld)
        return refuse(S_INVALID_VALUE, "a leading dimension below the rows (column-major: ld >= rows)");
    /* compute CUBLAS_COMPUTE_32F with scale CUDA_R_32F is the only combination fp8c uses; the
     * cublasLtMatmul datatype table allows it for these A/B/C/D types */
    if (d->compute != COMPUTE_32F || d->scale_type != T_F32) return refuse(S_NOT_SUPPORTED, "compute type 32F and scale type R_32F only (docs cublasLtMatmul type table; notes 1.3)");
    if (d->epilogue != EPI_DEFAULT && d->epilogue != EPI_BIAS) return refuse(S_NOT_SUPPORTED, "epilogues other than DEFAULT and BIAS are not modelled");
    int fp8 = is_fp8(A->type) || is_fp8(B->type);
    if (!fp8) {
        /* non-FP8: A and B the same type; BF16 or FP16 with C/D of that type or FP32, FP32 with FP32
         * (cublasLtMatmul datatype table, CUBLAS_COMPUTE_32F rows) */
        if (A->type != B->type || C->type != D->type) return refuse(S_NOT_SUPPORTED, "A/B or C/D types differ (docs cublasLtMatmul type table)");
        if (A->type == T_F32 ? D->type != T_F32 : (D->type != A->type && D->type != T_F32))
            return refuse(S_NOT_SUPPORTED, "C/D type not allowed for these A/B (docs cublasLtMatmul type table)");
        if (d->a_scale || d->b_scale || d->d_scale || d->amax_d || d->a_mode || d->b_mode)
            return refuse(S_NOT_SUPPORTED, "a scale pointer or mode for a non-FP8 tensor (cuBLAS 13.0 release notes; notes 1.4)");
    } else {
        /* FP8 on 8.9/9.0: TN only (docs cublasLtMatmul, "To use tensor- or block-scaled FP8 kernels"; notes 1.2) */
        if (d->transa != OP_T || d->transb != OP_N) return refuse(S_NOT_SUPPORTED, "FP8 needs A transposed and B not (TN) on sm_90 (docs cublasLtMatmul; notes 1.2)");
        if (!is_fp8(A->type) || !is_fp8(B->type)) return refuse(S_NOT_SUPPORTED, "FP8 A with a non-FP8 B (docs FP8 type table; notes 1.3)");
        if (A->type == T_E5M2 && B->type == T_E5M2) return refuse(S_NOT_SUPPORTED, "E5M2 x E5M2 is not in the FP8 type table (notes 1.3)");
        if (is_fp8(C->type)) return refuse(S_NOT_SUPPORTED, "C is never FP8 (docs FP8 type table; notes 1.3)");
        if (is_fp8(D->type) && D->type == T_E5M2 && A->type == T_E4M3 && B->type == T_E4M3)
            return refuse(S_NOT_SUPPORTED, "E4M3 x E4M3 cannot write E5M2 (docs FP8 type table; notes 1.3)");
        if (is_fp8(D->type) ? C->type == T_F32 : C->type != D->type)
            return refuse(S_NOT_SUPPORTED, "C/D combination not in the FP8 type table (notes 1.3)");
        int block = d->a_mode != SC_SCALAR || d->b_mode != SC_SCALAR;
        if ((d->a_mode != SC_SCALAR && d->a_mode != SC_VEC128 && d->a_mode != SC_BLK128) ||
            (d->b_mode != SC_SCALAR && d->b_mode != SC_VEC128 && d->b_mode != SC_BLK128))
            return refuse(S_NOT_SUPPORTED, "a scale mode other than SCALAR_32F, VEC128_32F, BLK128x128_32F (the others are not modelled; MX modes are sm_100: notes 1.6)");
        if (block && (d->a_mode == SC_SCALAR || d->b_mode == SC_SCALAR))
            return refuse(S_NOT_SUPPORTED, "the 128-modes apply to both A and B (docs 3.1.4.5 table; notes 1.6)");
        if (d->a_mode == SC_BLK128 && d->b_mode == SC_BLK128) return refuse(S_NOT_SUPPORTED, "BLK128x128 x BLK128x128 is not supported (docs 3.1.4.5 table; notes 1.6)");
        if (block && is_fp8(D->type)) return refuse(S_NOT_SUPPORTED, "FP8 D with VEC128/BLK128x128 (FP8 type table footnote; notes 1.3)");
        if (block && (m % 4 || n % 4)) return refuse(S_INVALID_VALUE, "the 128-modes need M and N multiples of 4 (docs 3.1.4.5.1; notes 1.7)");
        if (block && (!d->a_scale || !d->b_scale)) return refuse(S_INVALID_VALUE, "a block scale mode without its scale pointer (notes 1.12)");
        if (block && d->epilogue != EPI_DEFAULT && d->epilogue != EPI_BIAS) return refuse(S_NOT_SUPPORTED, "limited fused epilogues with the 128-modes (notes 1.9)");
        if (d->amax_d && !is_fp8(D->type)) return refuse(S_NOT_SUPPORTED, "AMAX_D needs an FP8 D (cuBLAS 12.4 Update 1 release notes; notes 1.4)");
        if (d->d_scale && !is_fp8(D->type)) return refuse(S_NOT_SUPPORTED, "D_SCALE_POINTER for a non-FP8 D (cuBLAS 13.0 release notes; notes 1.4)");
        /* "Tensor Core Usage" conditions are mandatory for FP8 (docs 2.1.11; notes 1.8) */
        if (k % 16) return refuse(S_INVALID_VALUE, "FP8 needs K a multiple of 16 (docs 2.1.11; notes 1.8)");
        if ((A->ld * type_bytes(A->type)) % 16 || (B->ld * type_bytes(B->type)) % 16 || (C->ld * type_bytes(C->type)) % 16 ||
            (D->ld * type_bytes(D->type)) % 16)
            return refuse(S_INVALID_VALUE, "FP8 needs every leading dimension a multiple of 16 bytes (docs 2.1.11; notes 1.8)");
        if ((m * (uint64_t)type_bytes(D->type)) % 16) return refuse(S_INVALID_VALUE, "FP8 needs m * sizeof(D) a multiple of 16 (docs 2.1.11; notes 1.8)");
        for (int i = 0; i < 4; i++)
            if (p->align[i] < 16) return refuse(S_NOT_SUPPORTED, "FP8 needs 16-byte aligned A, B, C, D (docs 2.1.11; notes 1.8)");
    }
    if (d->epilogue == EPI_BIAS) {
        /* bias: BF16 for BF16/FP32 output with FP8 inputs, the D type otherwise (FP8 type table;
         * notes 1.9); the pointer must be set before the heuristic (cublasLt.h:1334-1336) */
        if (!d->bias) return refuse(S_INVALID_VALUE, "the BIAS epilogue without a bias pointer");
        int want = fp8 ? (D->type == T_F16 || C->type == T_F16 ? T_F16 : T_BF16) : (int)D->type;
        int bt = d->bias_type < 0 ? want : d->bias_type;
        if (bt != want && !(bt == T_F32 && D->type == T_F32)) return refuse(S_NOT_SUPPORTED, "bias data type not allowed for this D (notes 1.3, 1.9)");
    }
    return S_OK;
}

/* ---- heuristic and matmul ----------------------------------------------------------------------- */

#define ALGO_TAG 0x66703863646f75ULL /* "fp8cdou": an algorithm this double made */

EXPORT int cublasLtMatmulAlgoGetHeuristic(void *handle, void *op, void *Ad, void *Bd, void *Cd, void *Dd, void *pref, int requested,
                                          void *results, int *returned) {
    if (!handle || !op || !Ad || !Bd || !Cd || !Dd || !pref || requested < 1 || !results || !returned) return S_INVALID_VALUE;
    *returned = 0;
    int st = check(op, Ad, Bd, Cd, Dd, pref);
    if (st) return st;
    uint64_t r[12];
    memset(r, 0, sizeof r);
    r[0] = ALGO_TAG;
    for (int i = 0; i < 4; i++) r[1 + i] = ((Pref *)pref)->align[i]; /* the alignment it was chosen for */
    /* cublasLtMatmulHeuristicResult_t: algo (64 bytes), workspaceSize, state, wavesCount */
    unsigned char *res = results;
    memset(res, 0, 96);
    memcpy(res, r, 64);
    size_t ws = 0;
    memcpy(res + 64, &ws, sizeof ws);
    float waves = 1.0f;
    memcpy(res + 76, &waves, sizeof waves);
    *returned = 1;
    return S_OK;
}

static float load(uint32_t t, const void *base, uint64_t i) {
    switch (t) {
    case T_F32: return ((const float *)base)[i];
    case T_F16: return fp8c_f16_to_f32(((const uint16_t *)base)[i]);
    case T_BF16: return fp8c_bf16_to_f32(((const uint16_t *)base)[i]);
    case T_E4M3: return fp8c_e4m3_to_f32(((const uint8_t *)base)[i]);
    default: return fp8c_e5m2_to_f32(((const uint8_t *)base)[i]);
    }
}

static void store(uint32_t t, void *base, uint64_t i, float v) {
    switch (t) {
    case T_F32: ((float *)base)[i] = v; break;
    case T_F16: ((uint16_t *)base)[i] = fp8c_f32_to_f16(v); break;
    case T_BF16: ((uint16_t *)base)[i] = fp8c_f32_to_bf16(v); break;
    case T_E4M3: ((uint8_t *)base)[i] = fp8c_f32_to_e4m3(v, 1); break;
    default: ((uint8_t *)base)[i] = fp8c_f32_to_e5m2(v, 1); break;
    }
}

/* Bytes a column-major rows x cols matrix with leading dimension ld spans. */
static size_t span(const Layout *l) { return ((size_t)(l->cols - 1) * (size_t)l->ld + l->rows) * (size_t)type_bytes(l->type); }

/* The scale of op(A) row i (or op(B) column j) for K block b, per the layouts of docs 3.1.4.5.1 (notes 1.7). */
static float block_scale(const float *s, int mode, uint64_t i, uint64_t b, uint64_t rows, uint64_t L) {
    if (mode == SC_SCALAR) return s ? s[0] : 1.0f;
    if (mode == SC_VEC128) return s[i + b * rows];
    uint64_t L4 = (L + 3) / 4 * 4;
    return s[b + (i / 128) * L4];
}

static int run_job(const void *arg, char *err, size_t errlen) {
    const Job *j = arg;
    const Desc *d = &j->d;
    uint64_t m = 0, n = 0, k = 0;
    dims(d, &j->A, &j->B, &j->D, &m, &n, &k);
    uint64_t L = (k + 127) / 128;
    size_t sa = d->a_mode == SC_VEC128 ? m * L * 4 : d->a_mode == SC_BLK128 ? (L + 3) / 4 * 4 * ((m + 127) / 128) * 4 : 4;
    size_t sb = d->b_mode == SC_VEC128 ? n * L * 4 : d->b_mode == SC_BLK128 ? (L + 3) / 4 * 4 * ((n + 127) / 128) * 4 : 4;
    if (!check_range(j->a, span(&j->A)) || !check_range(j->b, span(&j->B)) || !check_range(j->c, span(&j->C)) || !check_range(j->dst, span(&j->D)) ||
        (d->a_scale && !check_range(d->a_scale, sa)) || (d->b_scale && !check_range(d->b_scale, sb)) ||
        (d->epilogue == EPI_BIAS && !check_range(d->bias, m * (size_t)type_bytes((uint32_t)(d->bias_type < 0 ? (int)j->D.type : d->bias_type)))) ||
        (d->amax_d && !check_range(d->amax_d, 4)) || (d->d_scale && !check_range(d->d_scale, 4))) {
        snprintf(err, errlen, "an operand lies outside device memory (illegal address)");
        return -1;
    }
    /* op(A) as m rows of k, op(B) as n rows of k, in float: the inner loop runs over contiguous K */
    float *a = malloc(m * k * sizeof *a), *b = malloc(n * k * sizeof *b), *out = malloc(m * n * sizeof *out);
    if (!a || !b || !out) {
        free(a), free(b), free(out);
        snprintf(err, errlen, "out of host memory");
        return -1;
    }
    for (uint64_t i = 0; i < m; i++)
        for (uint64_t kk = 0; kk < k; kk++) a[i * k + kk] = load(j->A.type, j->a, d->transa == OP_N ? i + kk * (uint64_t)j->A.ld : kk + i * (uint64_t)j->A.ld);
    for (uint64_t jj = 0; jj < n; jj++)
        for (uint64_t kk = 0; kk < k; kk++) b[jj * k + kk] = load(j->B.type, j->b, d->transb == OP_N ? kk + jj * (uint64_t)j->B.ld : jj + kk * (uint64_t)j->B.ld);
    int fp8 = is_fp8(j->A.type);
    const float *as = fp8 ? d->a_scale : NULL, *bs = fp8 ? d->b_scale : NULL;
    int bt = d->bias_type < 0 ? (int)j->D.type : d->bias_type;
    if (fp8 && d->epilogue == EPI_BIAS && d->bias_type < 0) bt = j->D.type == T_F16 ? T_F16 : T_BF16;
    float amax = 0;
    for (uint64_t jj = 0; jj < n; jj++)
        for (uint64_t i = 0; i < m; i++) {
            double acc = 0;
            for (uint64_t blk = 0; blk < L; blk++) {
                float part[8] = {0};
                uint64_t k0 = blk * 128, k1 = k0 + 128 < k ? k0 + 128 : k;
                const float *pa = a + i * k, *pb = b + jj * k;
                uint64_t kk = k0;
                for (; kk + 8 <= k1; kk += 8)
                    for (int l = 0; l < 8; l++) part[l] += pa[kk + l] * pb[kk + l];
                for (; kk < k1; kk++) part[0] += pa[kk] * pb[kk];
                double p = 0;
                for (int l = 0; l < 8; l++) p += part[l];
                if (fp8 && d->a_mode != SC_SCALAR) p *= (double)block_scale(as, d->a_mode, i, blk, m, L) * block_scale(bs, d->b_mode, jj, blk, n, L);
                acc += p;
            }
            if (fp8 && d->a_mode == SC_SCALAR) acc *= (double)(as ? as[0] : 1.0f) * (bs ? bs[0] : 1.0f);
            double v = (double)j->alpha * acc;
            if (j->beta != 0) v += (double)j->beta * load(j->C.type, j->c, i + jj * (uint64_t)j->C.ld);
            if (d->epilogue == EPI_BIAS) v += load((uint32_t)bt, d->bias, i);
            float f = (float)v;
            if (fabsf(f) > amax || f != f) amax = f != f ? f : fabsf(f);
            out[i + jj * m] = f;
        }
    float ds = d->d_scale ? *(const float *)d->d_scale : 1.0f;
    for (uint64_t jj = 0; jj < n; jj++)
        for (uint64_t i = 0; i < m; i++) store(j->D.type, j->dst, i + jj * (uint64_t)j->D.ld, out[i + jj * m] * ds);
    if (d->amax_d) *(float *)d->amax_d = amax;
    free(a), free(b), free(out);
    return 0;
}

EXPORT int cublasLtMatmul(void *handle, void *op, const void *alpha, const void *A, void *Ad, const void *B, void *Bd, const void *beta,
                          const void *C, void *Cd, void *D, void *Dd, const void *algo, void *ws, size_t ws_bytes, void *stream) {
    if (!handle) return S_NOT_INITIALIZED;
    if (!op || !alpha || !beta || !A || !B || !D || !Ad || !Bd || !Cd || !Dd) return S_INVALID_VALUE;
    if (!C) return refuse(S_INVALID_VALUE, "C is NULL (use D with beta 0)");
    /* in place (C == D) only with the same descriptor (cuBLAS 13.0 Update 2 release notes; notes 1.13) */
    if (C == D && Cd != Dd) return refuse(S_INVALID_VALUE, "C == D with different C and D descriptors (notes 1.13)");
    if ((uintptr_t)ws % 256) return refuse(S_INVALID_VALUE, "the workspace must be 256-byte aligned (docs cublasLtMatmul; notes 1.11)");
    uint64_t r[8];
    Pref p = {ws_bytes, {256, 256, 256, 256}};
    if (algo) {
        memcpy(r, algo, sizeof r);
        if (r[0] != ALGO_TAG) return refuse(S_INVALID_VALUE, "an algorithm this double did not return");
        for (int i = 0; i < 4; i++) p.align[i] = (uint32_t)r[1 + i];
    }
    const void *ptr[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)ptr[i] % p.align[i]) return refuse(S_INVALID_VALUE, "a pointer less aligned than the algorithm was chosen for (cublasLt.h:2099-2133; notes 1.8)");
    int st = check(op, Ad, Bd, Cd, Dd, &p);
    if (st) return st;
    const Desc *d = op;
    if (is_fp8(((Layout *)Ad)->type) && ((d->a_scale && (uintptr_t)d->a_scale % 16) || (d->b_scale && (uintptr_t)d->b_scale % 16)))
        return refuse(S_INVALID_VALUE, "FP8 scale arrays start 16-byte aligned (docs 3.1.4.5.1; notes 1.4, 1.7)");
    Job j = {*d, *(Layout *)Ad, *(Layout *)Bd, *(Layout *)Cd, *(Layout *)Dd, *(const float *)alpha, *(const float *)beta, A, B, C, D};
    return enqueue(stream, "cublasLtMatmul", run_job, &j, sizeof j) ? S_EXECUTION_FAILED : S_OK;
}
