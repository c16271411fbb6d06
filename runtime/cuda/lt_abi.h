/* lt_abi.h: the part of cuBLASLt's C API that lt.c calls through dlopen, copied from the CUDA 13.0
 * headers (cublasLt.h, cublas_api.h, library_types.h) so that fp8c builds without them. Included
 * by lt.c and tests/unit/check_cuda_headers.c only; lt.h keeps the public LT_* values.
 *
 * As in cuda_abi.h: normally the types are the private ones below (LT_ABI_TYPES); under
 * -DFP8C_CHECK_CUDA_HEADERS, where cublasLt.h exists, its own types are used, so the LtLib table
 * is spelled in the real types and the checker compares every field with the real prototype,
 * every copied value and struct layout with the header's, and every private type's size with the
 * real one. `ninja test` builds lt.c in that mode too.
 */
#ifndef FP8C_LT_ABI_H
#define FP8C_LT_ABI_H

#include <stddef.h>
#include <stdint.h>

/* cublasLtMatmulAlgo_t (cublasLt.h:113-115): 8 opaque words. */
typedef struct {
    uint64_t data[8];
} LtAlgo;

/* cublasLtMatmulHeuristicResult_t (cublasLt.h:2221-2247), field for field: 96 bytes on LP64. */
typedef struct {
    LtAlgo algo;
    size_t workspaceSize;
    int state; /* cublasStatus_t */
    float wavesCount;
    int reserved[4];
} LtHeurResult;
_Static_assert(sizeof(LtHeurResult) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes on LP64");

/* Private types: name, how fp8c represents it (header line of the real one). */
#define LT_ABI_TYPES(X)                                                                            \
    X(cublasStatus_t, int)                        /* enum, cublas_api.h:100 */                     \
    X(cublasComputeType_t, int)                   /* enum, cublas_api.h:219 */                     \
    X(cudaDataType_t, int)                        /* enum cudaDataType_t, library_types.h:166 */   \
    X(cublasLtMatmulDescAttributes_t, int)        /* enum, cublasLt.h:1596 */                      \
    X(cublasLtMatrixLayoutAttribute_t, int)       /* enum, cublasLt.h:1185 */                      \
    X(cublasLtMatmulPreferenceAttributes_t, int)  /* enum, cublasLt.h:2151 */                      \
    X(cublasLtHandle_t, void *)                   /* struct cublasLtContext *, cublasLt.h:67 */    \
    X(cublasLtMatmulDesc_t, void *)               /* cublasLtMatmulDescOpaque_t *, :128 */         \
    X(cublasLtMatrixLayout_t, void *)             /* cublasLtMatrixLayoutOpaque_t *, :106 */       \
    X(cublasLtMatmulPreference_t, void *)         /* cublasLtMatmulPreferenceOpaque_t *, :145 */   \
    X(cudaStream_t, void *)                       /* struct CUstream_st *, driver_types.h:2998 */  \
    X(cublasLtMatmulAlgo_t, LtAlgo)                                                                \
    X(cublasLtMatmulHeuristicResult_t, LtHeurResult)

/* cublasStatus_t (cublas_api.h:90-99): name, value. lt_status_name prints these names. */
#define LT_STATUSES(X)                                                                             \
    X(CUBLAS_STATUS_SUCCESS, 0)                                                                    \
    X(CUBLAS_STATUS_NOT_INITIALIZED, 1)                                                            \
    X(CUBLAS_STATUS_ALLOC_FAILED, 3)                                                               \
    X(CUBLAS_STATUS_INVALID_VALUE, 7)                                                              \
    X(CUBLAS_STATUS_ARCH_MISMATCH, 8)                                                              \
    X(CUBLAS_STATUS_MAPPING_ERROR, 11)                                                             \
    X(CUBLAS_STATUS_EXECUTION_FAILED, 13)                                                          \
    X(CUBLAS_STATUS_INTERNAL_ERROR, 14)                                                            \
    X(CUBLAS_STATUS_NOT_SUPPORTED, 15)                                                             \
    X(CUBLAS_STATUS_LICENSE_ERROR, 16)

/* Entry points: LtLib field, exported symbol (dlsym). */
#define LT_ENTRY_POINTS(X)                                                                         \
    X(create, cublasLtCreate)                                                                      \
    X(destroy, cublasLtDestroy)                                                                    \
    X(get_version, cublasLtGetVersion)                                                             \
    X(desc_create, cublasLtMatmulDescCreate)                                                       \
    X(desc_destroy, cublasLtMatmulDescDestroy)                                                     \
    X(desc_set, cublasLtMatmulDescSetAttribute)                                                    \
    X(desc_get, cublasLtMatmulDescGetAttribute)                                                    \
    X(layout_create, cublasLtMatrixLayoutCreate)                                                   \
    X(layout_destroy, cublasLtMatrixLayoutDestroy)                                                 \
    X(layout_set, cublasLtMatrixLayoutSetAttribute)                                                \
    X(layout_get, cublasLtMatrixLayoutGetAttribute)                                                \
    X(pref_create, cublasLtMatmulPreferenceCreate)                                                 \
    X(pref_destroy, cublasLtMatmulPreferenceDestroy)                                               \
    X(pref_set, cublasLtMatmulPreferenceSetAttribute)                                              \
    X(pref_get, cublasLtMatmulPreferenceGetAttribute)                                              \
    X(heuristic, cublasLtMatmulAlgoGetHeuristic)                                                   \
    X(matmul, cublasLtMatmul)

#if defined(FP8C_CHECK_CUDA_HEADERS) && __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define FP8C_LT_ABI_REAL 1 /* the checker reports when this is missing */
#else
#define LT_ABI_TYPEDEF_(name, rep) typedef rep name;
LT_ABI_TYPES(LT_ABI_TYPEDEF_)
#undef LT_ABI_TYPEDEF_
#define LT_ABI_ENUM_(name, value) name = value,
enum { LT_STATUSES(LT_ABI_ENUM_) };
#undef LT_ABI_ENUM_
#endif

/* Attribute values (cublasLt.h line numbers): matmul descriptor :1274-1567, layout :1113-1147,
 * preference :2088-2133. Value types are in each table's comment; a wrong size is INVALID_VALUE. */
enum {
    DESC_COMPUTE_TYPE = 0,   /* int32_t */
    DESC_SCALE_TYPE = 1,     /* int32_t */
    DESC_TRANSA = 3,         /* int32_t */
    DESC_TRANSB = 4,         /* int32_t */
    DESC_EPILOGUE = 7,       /* uint32_t */
    DESC_BIAS_POINTER = 8,   /* const void * */
    DESC_A_SCALE_POINTER = 17, /* const void * */
    DESC_B_SCALE_POINTER = 18, /* const void * */
    DESC_FAST_ACCUM = 25,    /* int8_t */
    DESC_BIAS_DATA_TYPE = 26, /* int32_t */
    DESC_A_SCALE_MODE = 31,  /* int32_t */
    DESC_B_SCALE_MODE = 32,  /* int32_t */
    LAYOUT_TYPE = 0,         /* uint32_t */
    LAYOUT_ROWS = 2,         /* uint64_t */
    LAYOUT_COLS = 3,         /* uint64_t */
    LAYOUT_LD = 4,           /* int64_t */
    PREF_MAX_WORKSPACE_BYTES = 1, /* uint64_t */
    PREF_MIN_ALIGNMENT_A_BYTES = 5, /* uint32_t, then B, C, D at 6, 7, 8 */
};

/* The loaded library: one field per LT_ENTRY_POINTS row, in cublasLt.h's parameter types. */
struct LtLib {
    void *dl;
    int version;
    cublasStatus_t (*create)(cublasLtHandle_t *handle);
    cublasStatus_t (*destroy)(cublasLtHandle_t handle);
    size_t (*get_version)(void);
    cublasStatus_t (*desc_create)(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale_type);
    cublasStatus_t (*desc_destroy)(cublasLtMatmulDesc_t desc);
    cublasStatus_t (*desc_set)(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t size);
    cublasStatus_t (*desc_get)(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, void *buf, size_t size,
                               size_t *written);
    cublasStatus_t (*layout_create)(cublasLtMatrixLayout_t *layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld);
    cublasStatus_t (*layout_destroy)(cublasLtMatrixLayout_t layout);
    cublasStatus_t (*layout_set)(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr, const void *buf, size_t size);
    cublasStatus_t (*layout_get)(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr, void *buf, size_t size,
                                 size_t *written);
    cublasStatus_t (*pref_create)(cublasLtMatmulPreference_t *pref);
    cublasStatus_t (*pref_destroy)(cublasLtMatmulPreference_t pref);
    cublasStatus_t (*pref_set)(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                               size_t size);
    cublasStatus_t (*pref_get)(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, void *buf, size_t size,
                               size_t *written);
    cublasStatus_t (*heuristic)(cublasLtHandle_t handle, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t Ad, cublasLtMatrixLayout_t Bd,
                                cublasLtMatrixLayout_t Cd, cublasLtMatrixLayout_t Dd, cublasLtMatmulPreference_t pref, int requested,
                                cublasLtMatmulHeuristicResult_t *results, int *returned);
    cublasStatus_t (*matmul)(cublasLtHandle_t handle, cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t Ad,
                             const void *B, cublasLtMatrixLayout_t Bd, const void *beta, const void *C, cublasLtMatrixLayout_t Cd,
                             void *D, cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                             cudaStream_t stream);
};

#endif
