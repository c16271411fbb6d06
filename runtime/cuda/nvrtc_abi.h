/* nvrtc_abi.h: the part of NVRTC's C API that jit.c calls through dlopen, copied from the CUDA
 * 13.0 nvrtc.h so that fp8c builds without it. Included by jit.c and
 * tests/unit/check_cuda_headers.c only.
 *
 * As in cuda_abi.h: normally the types are the private ones below (NVRTC_ABI_TYPES); under
 * -DFP8C_CHECK_CUDA_HEADERS, where nvrtc.h exists, its own types are used, so the JitLib table is
 * spelled in the real types and the checker compares every field with the real prototype. `ninja
 * test` builds jit.c in that mode too.
 */
#ifndef FP8C_NVRTC_ABI_H
#define FP8C_NVRTC_ABI_H

#include <stddef.h>

/* Private types: name, how fp8c represents it (nvrtc.h line of the real one). */
#define NVRTC_ABI_TYPES(X)                                                                         \
    X(nvrtcResult, int)                        /* enum, nvrtc.h:60 */                              \
    X(nvrtcProgram, struct _nvrtcProgram *)    /* nvrtc.h:153, the same tag */

/* Constants: name, value. jit.c treats any nonzero result as a failure. */
#define NVRTC_ABI_CONSTANTS(X) X(NVRTC_SUCCESS, 0)

/* Entry points: JitLib field, exported symbol (dlsym). */
#define NVRTC_ENTRY_POINTS(X)                                                                      \
    X(Version, nvrtcVersion)                                                                       \
    X(CreateProgram, nvrtcCreateProgram)                                                           \
    X(CompileProgram, nvrtcCompileProgram)                                                         \
    X(GetPTXSize, nvrtcGetPTXSize)                                                                 \
    X(GetPTX, nvrtcGetPTX)                                                                         \
    X(GetCUBINSize, nvrtcGetCUBINSize)                                                             \
    X(GetCUBIN, nvrtcGetCUBIN)                                                                     \
    X(GetProgramLogSize, nvrtcGetProgramLogSize)                                                   \
    X(GetProgramLog, nvrtcGetProgramLog)                                                           \
    X(DestroyProgram, nvrtcDestroyProgram)                                                         \
    X(GetErrorString, nvrtcGetErrorString)

#if defined(FP8C_CHECK_CUDA_HEADERS) && __has_include(<nvrtc.h>)
#include <nvrtc.h>
#define FP8C_NVRTC_ABI_REAL 1 /* the checker reports when this is missing */
#else
#define NVRTC_ABI_TYPEDEF_(name, rep) typedef rep name;
NVRTC_ABI_TYPES(NVRTC_ABI_TYPEDEF_)
#undef NVRTC_ABI_TYPEDEF_
#define NVRTC_ABI_ENUM_(name, value) name = value,
enum { NVRTC_ABI_CONSTANTS(NVRTC_ABI_ENUM_) };
#undef NVRTC_ABI_ENUM_
#endif

/* The loaded library: one field per NVRTC_ENTRY_POINTS row, in nvrtc.h's parameter types. */
struct JitLib {
    void *h;
    int major, minor;
    nvrtcResult (*Version)(int *major, int *minor);
    nvrtcResult (*CreateProgram)(nvrtcProgram *prog, const char *src, const char *name, int nheaders, const char *const *headers,
                                 const char *const *include_names);
    nvrtcResult (*CompileProgram)(nvrtcProgram prog, int nopts, const char *const *opts);
    nvrtcResult (*GetPTXSize)(nvrtcProgram prog, size_t *size);
    nvrtcResult (*GetPTX)(nvrtcProgram prog, char *ptx);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram prog, size_t *size);
    nvrtcResult (*GetCUBIN)(nvrtcProgram prog, char *cubin);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram prog, size_t *size);
    nvrtcResult (*GetProgramLog)(nvrtcProgram prog, char *log);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *prog);
    const char *(*GetErrorString)(nvrtcResult r);
};

#endif
