/* cuda_backend.h: the CUDA backend (cuda.c). Opaque; the training loop drives it through these
 * calls and keeps the CPU backend's memory as its host mirror. */
#ifndef FP8C_CUDA_BACKEND_H
#define FP8C_CUDA_BACKEND_H

#include <stddef.h>

#include "runtime.h"

typedef struct CudaBackend CudaBackend;

/* 1 if a usable GPU (driver, device, sm_89+) is present; why says what was found or missing. */
int cu_probe(char *why, size_t n);
/* Context, stream, allocations, kernels (prebuilt cubins or NVRTC), cuBLASLt. NULL + err. */
CudaBackend *cu_init(const Plan *p, char *err, size_t errlen);
void cu_free(CudaBackend *b);
const char *cu_device_name(const CudaBackend *b);
/* A tensor class's device buffer (class_bytes[c] bytes in the plan's dtypes) and the backend's
 * stream (a CUstream): for collectives enqueued in order with its kernels (dist.c's NCCL
 * all-reduce of TC_GRAD). Between cu_run calls the stream is idle. */
void *cu_class_ptr(const CudaBackend *b, TensorClass c);
void *cu_stream(const CudaBackend *b);
/* Host mirror (floats for 16-bit tensors) <-> device (the plan's dtypes). */
int cu_upload(CudaBackend *b, const CpuBackend *h, TensorClass c, char *err, size_t errlen);
int cu_download(CudaBackend *b, CpuBackend *h, TensorClass c, char *err, size_t errlen);
int cu_upload_tensor(CudaBackend *b, const CpuBackend *h, int id, char *err, size_t errlen);
int cu_download_tensor(CudaBackend *b, CpuBackend *h, int id, char *err, size_t errlen);
int cu_zero_class(CudaBackend *b, TensorClass c, char *err, size_t errlen);
/* Run one section; synchronous (returns when the GPU is done). */
int cu_run(CudaBackend *b, Section sec, const RunState *st, char *err, size_t errlen);

/* One unit of the schedule (its launch, GEMM or memset), refresh or not, synchronous; for tests/gpu. */
int cu_run_unit(CudaBackend *b, Section sec, int i, const RunState *st, char *err, size_t errlen);
/* Fill a tensor with 0xFF bytes (NaN for floats, 0xFF codes) so unwritten elements show. */
int cu_poison_tensor(CudaBackend *b, int id, char *err, size_t errlen);

#endif
