/* cuda_abi.h: the part of the CUDA driver API that cuda.c calls, copied from the CUDA 13.0 cuda.h
 * so that fp8c builds on machines without a toolkit; cuda.c resolves each entry point through
 * cuGetProcAddress (shared/notes/cuda-apis.md 3.1). Included by cuda.c and by
 * tests/unit/check_cuda_headers.c only.
 *
 * Two modes. Normally the driver's types are declared here (the #else block below, from
 * CU_ABI_TYPES) with the same size and representation as cuda.h's. Under
 * -DFP8C_CHECK_CUDA_HEADERS, where cuda.h exists, cuda.h's own types and constants are used
 * instead, so the same Drv table is spelled in the real types and the checker can compare every
 * field with cudaTypedefs.h's PFN_<name>_v<version>, every copied constant with cuda.h's, and
 * every private type's size with the real one. `ninja test` builds cuda.c in that mode too.
 *
 * The three lists are X-macros (like the op table) so that the declarations here, the loader in
 * cuda.c and the checker read one list and cannot drift apart. Must not: declare anything cuda.c
 * does not use.
 */
#ifndef FP8C_CUDA_ABI_H
#define FP8C_CUDA_ABI_H

#include <stddef.h>
#include <stdint.h>

/* The CUDA ABI every entry point is requested at (cuGetProcAddress's cudaVersion): 12.0. */
#define DRV_ABI_VERSION 12000

/* Private types: name, how fp8c represents it (cuda.h line of the real one). */
#define CU_ABI_TYPES(X)                                                                           \
    X(CUresult, int)                           /* enum cudaError_enum, cuda.h:3179 */             \
    X(CUdevice, int)                           /* CUdevice_v1, cuda.h:280 */                      \
    X(CUdeviceptr, unsigned long long)         /* CUdeviceptr_v2, cuda.h:274 */                   \
    X(CUcontext, void *)                       /* struct CUctx_st *, cuda.h:282 */                \
    X(CUmodule, void *)                        /* struct CUmod_st *, cuda.h:283 */                \
    X(CUfunction, void *)                      /* struct CUfunc_st *, cuda.h:284 */               \
    X(CUstream, void *)                        /* struct CUstream_st *, cuda.h:292 */             \
    X(CUgraph, void *)                         /* struct CUgraph_st *, cuda.h:300 */              \
    X(CUgraphExec, void *)                     /* struct CUgraphExec_st *, cuda.h:302 */          \
    X(CUdevice_attribute, int)                 /* enum, cuda.h:878 */                             \
    X(CUfunction_attribute, int)               /* enum, cuda.h:1075 */                            \
    X(CUstreamCaptureMode, int)                /* enum, cuda.h:2395 */                            \
    X(CUdriverProcAddressQueryResult, int)     /* enum, cuda.h:2420 */                            \
    X(cuuint64_t, uint64_t)                    /* cuda.h:63 */

/* Constants: name (cuda.h's), value. */
#define CU_ABI_CONSTANTS(X)                                                                       \
    X(CUDA_SUCCESS, 0)                                                                            \
    X(CUDA_ERROR_STUB_LIBRARY, 34)                                                                \
    X(CUDA_ERROR_NO_DEVICE, 100)                                                                  \
    X(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 75)                                           \
    X(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 76)                                           \
    X(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 8)                                         \
    X(CU_STREAM_NON_BLOCKING, 1)                                                                  \
    X(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, 1)                                                     \
    X(CU_GET_PROC_ADDRESS_DEFAULT, 0)                                                             \
    X(CU_GET_PROC_ADDRESS_SUCCESS, 0)

/* Entry points: Drv field, cuGetProcAddress name, the ABI version a request at DRV_ABI_VERSION
 * returns (cudaTypedefs.h's PFN_<name>_v<version>: the newest version not above 12.0). */
#define DRV_ENTRY_POINTS(X)                                                                       \
    X(Init, cuInit, 2000)                                                                         \
    X(DeviceGetCount, cuDeviceGetCount, 2000)                                                     \
    X(DeviceGet, cuDeviceGet, 2000)                                                               \
    X(DeviceGetName, cuDeviceGetName, 2000)                                                       \
    X(DeviceGetAttribute, cuDeviceGetAttribute, 2000)                                             \
    X(DevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, 7000)                                     \
    X(DevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease, 11000)                                  \
    X(CtxSetCurrent, cuCtxSetCurrent, 4000)                                                       \
    X(DriverGetVersion, cuDriverGetVersion, 2020)                                                 \
    X(MemAlloc, cuMemAlloc, 3020)                                                                 \
    X(MemFree, cuMemFree, 3020)                                                                   \
    X(MemcpyHtoDAsync, cuMemcpyHtoDAsync, 3020)                                                   \
    X(MemcpyDtoHAsync, cuMemcpyDtoHAsync, 3020)                                                   \
    X(MemsetD8Async, cuMemsetD8Async, 3020)                                                       \
    X(StreamCreate, cuStreamCreate, 2000)                                                         \
    X(StreamDestroy, cuStreamDestroy, 4000)                                                       \
    X(StreamSynchronize, cuStreamSynchronize, 2000)                                               \
    X(ModuleLoadData, cuModuleLoadData, 2000)                                                     \
    X(ModuleUnload, cuModuleUnload, 2000)                                                         \
    X(ModuleGetFunction, cuModuleGetFunction, 2000)                                               \
    X(FuncSetAttribute, cuFuncSetAttribute, 9000)                                                 \
    X(LaunchKernel, cuLaunchKernel, 4000)                                                         \
    X(StreamBeginCapture, cuStreamBeginCapture, 10010)                                            \
    X(StreamEndCapture, cuStreamEndCapture, 10000)                                                \
    X(GraphInstantiate, cuGraphInstantiateWithFlags, 11040)                                       \
    X(GraphLaunch, cuGraphLaunch, 10000)                                                          \
    X(GraphDestroy, cuGraphDestroy, 10000)                                                        \
    X(GraphExecDestroy, cuGraphExecDestroy, 10000)                                                \
    X(GetErrorName, cuGetErrorName, 6000)

#if defined(FP8C_CHECK_CUDA_HEADERS) && __has_include(<cuda.h>)
#include <cuda.h>
#define FP8C_CUDA_ABI_REAL 1 /* the checker reports when this is missing */
#else
#define CU_ABI_TYPEDEF_(name, rep) typedef rep name;
CU_ABI_TYPES(CU_ABI_TYPEDEF_)
#undef CU_ABI_TYPEDEF_
#define CU_ABI_ENUM_(name, value) name = value,
enum { CU_ABI_CONSTANTS(CU_ABI_ENUM_) };
#undef CU_ABI_ENUM_
#endif

/* cuGetProcAddress_v2 (PFN_cuGetProcAddress_v12000), found with dlsym. */
typedef CUresult (*DrvGetProc)(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
                               CUdriverProcAddressQueryResult *status);

/* One field per DRV_ENTRY_POINTS row, in cuda.h's parameter types. */
typedef struct {
    CUresult (*Init)(unsigned int flags);
    CUresult (*DeviceGetCount)(int *count);
    CUresult (*DeviceGet)(CUdevice *dev, int ordinal);
    CUresult (*DeviceGetName)(char *name, int len, CUdevice dev);
    CUresult (*DeviceGetAttribute)(int *value, CUdevice_attribute attrib, CUdevice dev);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice dev);
    CUresult (*CtxSetCurrent)(CUcontext ctx);
    CUresult (*DriverGetVersion)(int *version);
    CUresult (*MemAlloc)(CUdeviceptr *dptr, size_t bytes);
    CUresult (*MemFree)(CUdeviceptr dptr);
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream);
    CUresult (*MemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes, CUstream stream);
    CUresult (*MemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream);
    CUresult (*StreamCreate)(CUstream *stream, unsigned int flags);
    CUresult (*StreamDestroy)(CUstream stream);
    CUresult (*StreamSynchronize)(CUstream stream);
    CUresult (*ModuleLoadData)(CUmodule *mod, const void *image);
    CUresult (*ModuleUnload)(CUmodule mod);
    CUresult (*ModuleGetFunction)(CUfunction *fn, CUmodule mod, const char *name);
    CUresult (*FuncSetAttribute)(CUfunction fn, CUfunction_attribute attrib, int value);
    CUresult (*LaunchKernel)(CUfunction fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                             unsigned int bz, unsigned int smem, CUstream stream, void **params, void **extra);
    CUresult (*StreamBeginCapture)(CUstream stream, CUstreamCaptureMode mode);
    CUresult (*StreamEndCapture)(CUstream stream, CUgraph *graph);
    CUresult (*GraphInstantiate)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
    CUresult (*GraphLaunch)(CUgraphExec exec, CUstream stream);
    CUresult (*GraphDestroy)(CUgraph graph);
    CUresult (*GraphExecDestroy)(CUgraphExec exec);
    CUresult (*GetErrorName)(CUresult r, const char **name);
} Drv;

#endif
