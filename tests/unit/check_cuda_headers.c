/* check_cuda_headers.c: everything runtime/cuda/ copies from the CUDA 13 headers, asserted against
 * those headers. fp8c builds without them (cuda_abi.h, lt_abi.h, nvrtc_abi.h and lt.h declare
 * what the backend uses), so nothing else would notice a wrong copy until a GPU run misbehaved.
 *
 * Built with -DFP8C_CHECK_CUDA_HEADERS -isystem <cuda include dir> (build.ninja's cudainc), so
 * the three ABI headers take the real types and the checks below are _Static_asserts: a wrong
 * constant, struct layout or entry-point type fails `ninja test` at build time, naming the item.
 * For each library:
 *   - every private type (X_ABI_TYPES): the same size and alignment as the real type;
 *   - every copied constant: the real enum's value;
 *   - every table entry point: its field, spelled in the real types, has exactly the type of the
 *     real function (the driver: of cudaTypedefs.h's PFN_<name>_v<version>, the ABI that
 *     cuGetProcAddress returns at the version cuda.c requests), and every table field is listed;
 *   - the structs copied field for field (cublasLtMatmulHeuristicResult_t, cublasLtMatmulAlgo_t).
 * The same build compiles cuda.c, lt.c and jit.c in that mode, so every call passes the real
 * types too. At run time the program only reports what was checked: one PASS line, or one FAIL
 * line if the headers were not found (then nothing was checked).
 */
#include <stddef.h>
#include <stdio.h>

#include "cuda_abi.h"
#include "lt.h"
#include "lt_abi.h"
#include "nvrtc_abi.h"

#if defined(FP8C_CUDA_ABI_REAL) && defined(FP8C_LT_ABI_REAL) && defined(FP8C_NVRTC_ABI_REAL) && __has_include(<cudaTypedefs.h>)
#include <cudaTypedefs.h>

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
/* A private type: same size and alignment as the header's (enums are ints, handles pointers). */
#define CHECK_REP(name, rep) \
    _Static_assert(sizeof(name) == sizeof(rep) && _Alignof(name) == _Alignof(rep), #name " is not represented as " #rep);
/* A copied constant: the header's value. Compared as long long: the enums differ in type. */
#define CHECK_CONST(name, value) _Static_assert((long long)(name) == (long long)(value), #name " is not " #value " in the header");
#define COUNT(...) +1

/* ---- the driver (cuda.h, cudaTypedefs.h) ---- */

CU_ABI_TYPES(CHECK_REP)
CU_ABI_CONSTANTS(CHECK_CONST)
#define CHECK_DRV(field, name, ver)                                                                   \
    _Static_assert(SAME_TYPE(__typeof__(((Drv *)0)->field), PFN_##name##_v##ver),                   \
                   "Drv." #field " is not PFN_" #name "_v" #ver);                                    \
    _Static_assert(ver <= DRV_ABI_VERSION, #name ": version " #ver " is newer than the ABI requested");
DRV_ENTRY_POINTS(CHECK_DRV)
enum { DRV_N = 0 DRV_ENTRY_POINTS(COUNT) };
_Static_assert(sizeof(Drv) == DRV_N * sizeof(void (*)(void)), "a Drv field is missing from DRV_ENTRY_POINTS");
_Static_assert(SAME_TYPE(DrvGetProc, PFN_cuGetProcAddress_v12000), "DrvGetProc is not PFN_cuGetProcAddress_v12000");
_Static_assert(DRV_ABI_VERSION <= CUDA_VERSION, "these headers are older than the ABI cuda.c requests");

/* ---- cuBLASLt (cublasLt.h, cublas_api.h, library_types.h) ---- */

LT_ABI_TYPES(CHECK_REP)
LT_STATUSES(CHECK_CONST)
#define CHECK_LT(field, name)                                                                       \
    _Static_assert(SAME_TYPE(__typeof__(((struct LtLib *)0)->field), __typeof__(&name)), "LtLib." #field " is not " #name);
LT_ENTRY_POINTS(CHECK_LT)
enum { LT_N = 0 LT_ENTRY_POINTS(COUNT) };
_Static_assert(sizeof(struct LtLib) == offsetof(struct LtLib, create) + LT_N * sizeof(void (*)(void)),
               "an LtLib entry point is missing from LT_ENTRY_POINTS");

/* lt.h's public values */
CHECK_CONST(LT_R_32F, CUDA_R_32F)
CHECK_CONST(LT_R_16F, CUDA_R_16F)
CHECK_CONST(LT_R_16BF, CUDA_R_16BF)
CHECK_CONST(LT_R_8F_E4M3, CUDA_R_8F_E4M3)
CHECK_CONST(LT_R_8F_E5M2, CUDA_R_8F_E5M2)
CHECK_CONST(LT_OP_N, CUBLAS_OP_N)
CHECK_CONST(LT_OP_T, CUBLAS_OP_T)
CHECK_CONST(LT_COMPUTE_32F, CUBLAS_COMPUTE_32F)
CHECK_CONST(LT_SCALE_SCALAR_32F, CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F)
CHECK_CONST(LT_SCALE_VEC128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F)
CHECK_CONST(LT_SCALE_BLK128x128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F)
CHECK_CONST(LT_EPI_DEFAULT, CUBLASLT_EPILOGUE_DEFAULT)
CHECK_CONST(LT_EPI_BIAS, CUBLASLT_EPILOGUE_BIAS)
_Static_assert(sizeof(((LtCall *)0)->algo) == sizeof(cublasLtMatmulAlgo_t), "LtCall.algo is not a cublasLtMatmulAlgo_t");

/* lt_abi.h's attribute values */
CHECK_CONST(DESC_COMPUTE_TYPE, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE)
CHECK_CONST(DESC_SCALE_TYPE, CUBLASLT_MATMUL_DESC_SCALE_TYPE)
CHECK_CONST(DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSA)
CHECK_CONST(DESC_TRANSB, CUBLASLT_MATMUL_DESC_TRANSB)
CHECK_CONST(DESC_EPILOGUE, CUBLASLT_MATMUL_DESC_EPILOGUE)
CHECK_CONST(DESC_BIAS_POINTER, CUBLASLT_MATMUL_DESC_BIAS_POINTER)
CHECK_CONST(DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER)
CHECK_CONST(DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER)
CHECK_CONST(DESC_FAST_ACCUM, CUBLASLT_MATMUL_DESC_FAST_ACCUM)
CHECK_CONST(DESC_BIAS_DATA_TYPE, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE)
CHECK_CONST(DESC_A_SCALE_MODE, CUBLASLT_MATMUL_DESC_A_SCALE_MODE)
CHECK_CONST(DESC_B_SCALE_MODE, CUBLASLT_MATMUL_DESC_B_SCALE_MODE)
CHECK_CONST(LAYOUT_TYPE, CUBLASLT_MATRIX_LAYOUT_TYPE)
CHECK_CONST(LAYOUT_ROWS, CUBLASLT_MATRIX_LAYOUT_ROWS)
CHECK_CONST(LAYOUT_COLS, CUBLASLT_MATRIX_LAYOUT_COLS)
CHECK_CONST(LAYOUT_LD, CUBLASLT_MATRIX_LAYOUT_LD)
CHECK_CONST(PREF_MAX_WORKSPACE_BYTES, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
CHECK_CONST(PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES)
CHECK_CONST(PREF_MIN_ALIGNMENT_A_BYTES + 1, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES)
CHECK_CONST(PREF_MIN_ALIGNMENT_A_BYTES + 2, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES)
CHECK_CONST(PREF_MIN_ALIGNMENT_A_BYTES + 3, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)

/* the structs copied field for field */
#define CHECK_FIELD(ours, theirs, field)                                                            \
    _Static_assert(offsetof(ours, field) == offsetof(theirs, field) &&                              \
                       sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->field),                  \
                   #ours "." #field " is not where " #theirs " has it");
CHECK_FIELD(LtAlgo, cublasLtMatmulAlgo_t, data)
CHECK_FIELD(LtHeurResult, cublasLtMatmulHeuristicResult_t, algo)
CHECK_FIELD(LtHeurResult, cublasLtMatmulHeuristicResult_t, workspaceSize)
CHECK_FIELD(LtHeurResult, cublasLtMatmulHeuristicResult_t, state)
CHECK_FIELD(LtHeurResult, cublasLtMatmulHeuristicResult_t, wavesCount)
CHECK_FIELD(LtHeurResult, cublasLtMatmulHeuristicResult_t, reserved)

/* ---- NVRTC (nvrtc.h) ---- */

NVRTC_ABI_TYPES(CHECK_REP)
NVRTC_ABI_CONSTANTS(CHECK_CONST)
#define CHECK_NVRTC(field, name)                                                                    \
    _Static_assert(SAME_TYPE(__typeof__(((struct JitLib *)0)->field), __typeof__(&name)), "JitLib." #field " is not " #name);
NVRTC_ENTRY_POINTS(CHECK_NVRTC)
enum { NVRTC_N = 0 NVRTC_ENTRY_POINTS(COUNT) };
_Static_assert(sizeof(struct JitLib) == offsetof(struct JitLib, Version) + NVRTC_N * sizeof(void (*)(void)),
               "a JitLib entry point is missing from NVRTC_ENTRY_POINTS");

#define N_OF(list) (0 list(COUNT))
int main(void) {
    printf("PASS cuda_header_checks (CUDA_VERSION %d: %d driver, %d cuBLASLt and %d NVRTC entry points; %d+%d+%d copied constants "
           "and %d+%d+%d private types; lt.h, lt_abi.h and the heuristic-result layout)\n",
           CUDA_VERSION, DRV_N, LT_N, NVRTC_N, N_OF(CU_ABI_CONSTANTS), N_OF(LT_STATUSES), N_OF(NVRTC_ABI_CONSTANTS),
           N_OF(CU_ABI_TYPES), N_OF(LT_ABI_TYPES), N_OF(NVRTC_ABI_TYPES));
    return 0;
}

#else
/* Without the headers nothing above was compiled: say so, and fail, rather than pass. */
int main(void) {
    printf("FAIL cuda_header_checks: the CUDA 13 headers (cuda.h, cudaTypedefs.h, cublasLt.h, nvrtc.h) were not found in the "
           "include path (build.ninja's cudainc, /usr/local/cuda/include by default%s), so nothing runtime/cuda/ copies from "
           "them was checked\n",
#ifdef FP8C_CHECK_CUDA_HEADERS
           ""
#else
           "; and this file was built without -DFP8C_CHECK_CUDA_HEADERS"
#endif
    );
    return 1;
}
#endif
