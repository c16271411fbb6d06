/* ccl.h: NCCL for the CUDA backend's collectives (ccl.c). Named ccl, not nccl, so that it never
 * shadows the real nccl.h that the header checker includes.
 *
 * The communicator is bootstrapped the way llm.c does it: rank 0 asks NCCL for a unique id and
 * MPI broadcasts it (dist.c passes its broadcast in), then every rank joins with
 * ncclCommInitRank. Collectives are enqueued on the backend's stream, so they order with the
 * kernels around them and can be captured into its CUDA graph (NCCL supports capture since 2.9).
 *
 * Status: compiled, its ABI checked against nccl.h at build time, and the library's load,
 * version and unique id exercised without a GPU (tests/unit/test_dist_ccl.c, real libnccl.so.2).
 * The training loop uses it: on the CUDA backend with N > 1 ranks, dist.c's dist_cuda forms the
 * communicator and dist_reduce all-reduces the gradient class buffer with ccl_allreduce_sum on
 * the backend's stream (ccl_allgather is not called yet: ZeRO-1 is CPU-only). In CI that runs
 * only against the NCCL test double (tests/cudadouble/nccl_double.c, under mpirun in
 * tests/dist). No real NCCL communicator or collective has run: there is no GPU on the machines
 * this was written on.
 */
#ifndef FP8C_CCL_H
#define FP8C_CCL_H

#include <stddef.h>

typedef struct Ccl Ccl;

/* Load libnccl.so.2 and resolve every entry point; *version is ncclGetVersion's (e.g. 22809). */
int ccl_open(int *version, char *err, size_t errlen);
/* The unique id rank 0 broadcasts (NCCL_UNIQUE_ID_BYTES bytes into id). */
int ccl_unique_id(void *id, size_t n, char *err, size_t errlen);
/* Join the communicator of `size` ranks named by id (the same bytes on every rank). */
Ccl *ccl_init(int rank, int size, const void *id, char *err, size_t errlen);
/* Gradients: the sum over ranks, in place, in FP32 or BF16 (the policy's grad_accum), on
 * `stream` (a CUstream). The ring algorithm is pinned (NCCL_ALGO=Ring, NCCL_PROTO=Simple unless
 * the user set them): NCCL's reduction order depends on the algorithm and protocol it picks
 * per message size, and a fixed one keeps a run reproducible for a given rank count. */
int ccl_allreduce_sum(Ccl *c, void *dbuf, size_t n, int bf16, void *stream, char *err, size_t errlen);
/* ZeRO-1: every rank's `bytes` bytes from send into recv (size x bytes), rank order. */
int ccl_allgather(Ccl *c, const void *dsend, void *drecv, size_t bytes, void *stream, char *err, size_t errlen);
/* Destroy (abort = 1 after a failure: do not wait for the other ranks). */
void ccl_free(Ccl *c, int abort);

#endif
