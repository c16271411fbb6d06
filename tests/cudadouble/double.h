/* double.h: what the test doubles (tests/cudadouble) share. Tests only: never linked into fp8c.
 *
 * The cuBLASLt double does its GEMMs, and the NCCL double its collectives, as work on the driver
 * double's streams, so that a GEMM or an all-reduce is deferred, ordered and captured exactly like
 * a kernel launch. They find these entry points with dlsym in the already loaded libcuda.so.1; a
 * real driver does not have them, and the other doubles then refuse to start. Must not: declare
 * anything fp8c uses.
 */
#ifndef FP8C_CUDA_DOUBLE_H
#define FP8C_CUDA_DOUBLE_H

#include <stddef.h>

/* Host work on a stream: run(arg, err, errlen) returns 0, or -1 with the reason in err (the
 * stream's synchronization then fails with CUDA_ERROR_LAUNCH_FAILED, and the driver double names
 * the work by `name`, a string that must outlive it). arg is copied (arg_bytes), so the caller's
 * copy may go at once; a captured op keeps its copy for every replay.
 * check(addr, bytes) tells whether [addr, addr + bytes) lies inside one live allocation. */
typedef int (*DoubleHostFn)(const void *arg, char *err, size_t errlen);
typedef int (*DoubleEnqueueFn)(void *stream, const char *name, DoubleHostFn run, const void *arg, size_t arg_bytes);
typedef int (*DoubleCheckFn)(const void *addr, size_t bytes);

#define DOUBLE_ENQUEUE_SYMBOL "fp8c_double_enqueue_host"
#define DOUBLE_CHECK_SYMBOL "fp8c_double_check_range"

#endif
