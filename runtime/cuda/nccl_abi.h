/* nccl_abi.h: the part of NCCL that nccl.c calls, copied from the CUDA 13 toolkit's nccl.h
 * (NCCL 2.28, /usr/local/cuda/include/nccl.h) so that fp8c builds without it; nccl.c opens
 * libnccl.so.2 with dlopen, like the driver, NVRTC and cuBLASLt. Included by nccl.c and by
 * tests/unit/check_comm_headers.c only.
 *
 * Two modes, like cuda_abi.h: normally the types are declared here with nccl.h's
 * representation; under -DFP8C_CHECK_CUDA_HEADERS, where nccl.h exists, nccl.h itself is used
 * and the checker compares every table field with the real function's type, every constant
 * with nccl.h's, and every private type's size with the real one. Must not: declare anything
 * nccl.c does not use.
 */
#ifndef FP8C_NCCL_ABI_H
#define FP8C_NCCL_ABI_H

#include <stddef.h>

/* Private types: name, how fp8c represents it (nccl.h line of the real one). */
#define NCCL_ABI_TYPES(X)                                                                         \
    X(ncclResult_t, int)                 /* enum, nccl.h:42 */                                   \
    X(ncclDataType_t, int)               /* enum, nccl.h:297 */                                  \
    X(ncclRedOp_t, int)                  /* enum, nccl.h:282 */                                  \
    X(ncclComm_t, struct ncclComm *)     /* nccl.h:34 */                                         \
    X(cudaStream_t, struct CUstream_st *) /* driver_types.h: the driver's CUstream */

/* Constants: name, value. */
#define NCCL_ABI_CONSTANTS(X)                                                                     \
    X(ncclSuccess, 0)                                                                             \
    X(ncclUint8, 1)                                                                               \
    X(ncclFloat32, 7)                                                                             \
    X(ncclBfloat16, 9)                                                                            \
    X(ncclSum, 0)                                                                                 \
    X(ncclMax, 2)                                                                                 \
    X(NCCL_UNIQUE_ID_BYTES, 128)

/* Entry points: NcclLib field, symbol. */
#define NCCL_ENTRY_POINTS(X)                                                                      \
    X(GetVersion, ncclGetVersion)                                                                 \
    X(GetUniqueId, ncclGetUniqueId)                                                               \
    X(CommInitRank, ncclCommInitRank)                                                             \
    X(CommDestroy, ncclCommDestroy)                                                               \
    X(CommAbort, ncclCommAbort)                                                                   \
    X(GetErrorString, ncclGetErrorString)                                                         \
    X(GroupStart, ncclGroupStart)                                                                 \
    X(GroupEnd, ncclGroupEnd)                                                                     \
    X(Send, ncclSend)                                                                             \
    X(Recv, ncclRecv)                                                                             \
    X(AllReduce, ncclAllReduce)                                                                   \
    X(AllGather, ncclAllGather)

#if defined(FP8C_CHECK_CUDA_HEADERS) && __has_include(<nccl.h>)
#include <nccl.h>
#define FP8C_NCCL_ABI_REAL 1
#else
#define NCCL_ABI_TYPEDEF_(name, rep) typedef rep name;
NCCL_ABI_TYPES(NCCL_ABI_TYPEDEF_)
#undef NCCL_ABI_TYPEDEF_
#define NCCL_ABI_ENUM_(name, value) name = value,
enum { NCCL_ABI_CONSTANTS(NCCL_ABI_ENUM_) };
#undef NCCL_ABI_ENUM_
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId; /* nccl.h:39: passed by value to ncclCommInitRank */
#endif

/* One field per NCCL_ENTRY_POINTS row, in nccl.h's parameter types. */
typedef struct {
    ncclResult_t (*GetVersion)(int *version);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *id);
    ncclResult_t (*CommInitRank)(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
    ncclResult_t (*CommDestroy)(ncclComm_t comm);
    ncclResult_t (*CommAbort)(ncclComm_t comm);
    const char *(*GetErrorString)(ncclResult_t result);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
    ncclResult_t (*Send)(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*Recv)(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*AllReduce)(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                              ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*AllGather)(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype, ncclComm_t comm,
                              cudaStream_t stream);
} NcclLib;

#endif
