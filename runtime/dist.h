/* dist.h: data parallelism for the training loop (train.c calls these hooks; dist.c owns them).
 *
 * N ranks launched by `mpirun -np N fp8c train|run ...` run the same plan. The plan's
 * grad_accum is the number of micro-batches in one *global* batch: rank r runs micro-batches
 * [r*G/N, (r+1)*G/N) of every step (G = grad_accum), so the global batch, the learning-rate
 * schedule, the data position and therefore the checkpoints do not depend on N, and a run on N
 * ranks computes what one process computes with the same plan, up to FP32 summation order.
 *
 * Collectives go through MPI (Open MPI, opened with dlopen, only when a launcher started the
 * process: a build and a run without MPI are single-process and never touch libmpi), except the
 * CUDA backend's gradient all-reduce, which NCCL does on the device (dist_cuda). Every
 * reduction whose result enters the numerics is deterministic for a given N: gradients are
 * reduce-scattered with an all-to-all and summed in rank order, then all-gathered; scalars are
 * all-gathered and combined in rank order. A watchdog turns a collective that waits longer than
 * FP8C_DIST_TIMEOUT seconds (a dead or hung rank) into a clear error and exit status 1.
 *
 * Must not: print progress (train.c decides what rank 0 prints), or know what a tensor means
 * beyond its class and the ops that read and write it.
 */
#ifndef FP8C_DIST_H
#define FP8C_DIST_H

#include <pthread.h>
#include <stdint.h>

#include "ccl.h"
#include "cuda_backend.h"
#include "data.h"
#include "mpi_abi.h"
#include "runtime.h"

typedef struct {
    int rank, size;          /* 0 and 1 for a single process */
    int zero;                /* ZeRO stage: 0 replicated optimizer state, 1 sharded */
    const Plan *p;
    /* MPI, when launched by mpirun */
    void *lib;
    MpiLib mpi;
#define DIST_HANDLE_FIELD_(field, macro, sym) void *field;
    MPI_ABI_HANDLES(DIST_HANDLE_FIELD_)
#undef DIST_HANDLE_FIELD_
    int mpi_up;              /* MPI_Init succeeded: MPI_Finalize at the end */
    /* the watchdog: a collective that has not returned after timeout_s seconds ends the process */
    pthread_t watchdog;
    int watchdog_up;
    double timeout_s;
    _Atomic double op_since;   /* monotonic start of the collective in flight, 0: none */
    const char *_Atomic op_name;
    volatile int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* testing aid (FP8C_DIST_FAULT=die|hang:RANK:STEP) */
    int fault_kind, fault_rank; /* 1 die, 2 hang, 3 flip a parameter bit (for FP8C_DIST_VERIFY) */
    int verify;              /* FP8C_DIST_VERIFY=1: after every step, all-gather and compare state hashes */
    int64_t fault_step;
    /* delayed scaling: the amax tensors scale_update reads, maxed over micro-batches and ranks */
    int *amax;
    int namax;
    float *amax_run;
    int folded;              /* micro-batches folded into amax_run this step */
    /* gradients: the class buffer, reduced in the policy's grad_accum precision */
    int grad_bf16;
    float *scratch;          /* all-to-all receive buffer */
    int32_t *skip_tokens;    /* the micro-batches another rank runs are read into these */
    /* ZeRO-1: the owner of each optimizer unit, and what each unit's owner sends afterwards */
    int *owner;              /* (nunits[SEC_OPTIMIZER]) */
    int *send;               /* per tensor: 1 sent after every step, 2 only to gather the full state */
    int64_t gather_bytes;    /* plan bytes sent per step (FP8 copies + scales where the policy keeps them) */
    int64_t gather_bytes_bf16; /* the same parameters sent in their storage dtype */
    int has_copies;          /* some unit writes FP8 weight copies (TC_WCOPY) */
    /* column-wise weight copies every rank derives from the gathered row-wise ones (transposed
     * codes and scales, exact for square blocks and whole-tensor scales) instead of receiving */
    struct DistDerived {
        int unit, codes, scale_inv, codes_t, scale_inv_t, R, C, tr, tc;
    } *derived;
    int nderived;
    int64_t shard_bytes;     /* this rank's master + moment bytes (plan dtypes) */
    unsigned char *pack;
    /* the CUDA backend's gradients (dist_cuda) */
    Ccl *ccl;                /* NCCL: the gradient all-reduce on the device; NULL: none or staged */
    int ccl_version;         /* ncclGetVersion's, e.g. 22809 */
    int grads_mpi;           /* FP8C_DIST_GRADS=mpi: staged through the host and MPI */
    char desc[256];
} Dist;

/* The rank a launcher gave this process (OMPI_COMM_WORLD_RANK), 0 without one: lets `fp8c train`
 * keep rank 0 the only writer of -o DIR before MPI starts. */
int dist_env_rank(void);

/* Start: MPI_Init when launched by mpirun, then check what every rank must agree on (the plan,
 * N dividing grad_accum, --zero 1 only with N > 1) and lay out ZeRO-1 ownership. Returns
 * EXIT_OK, or EXIT_BAD_INPUT / EXIT_RUNTIME with the message in err (the same on every rank). */
int dist_init(Dist *d, const Plan *p, int zero, char *err, size_t errlen);
/* ok: MPI_Finalize after a barrier (no rank leaves while another still reduces). Not ok: no
 * MPI call; the process exits non-zero and mpirun ends the other ranks. Then free. */
void dist_end(Dist *d, int ok);

/* "" for one process, else " x N ranks (...)" for the start line. */
const char *dist_describe(Dist *d);

/* Global micro-batch `micro` of this step is this rank's. */
int dist_mine(const Dist *d, int64_t micro);
/* Advance the stream past a micro-batch another rank runs (every rank keeps the global position). */
void dist_skip_batch(Dist *d, DataStream *s, int B, int T);
/* After one of this rank's micro-batches: fold the delayed-scaling amaxes into the step's max
 * (a step's amax is the max over the whole global batch, as TransformerEngine's reduce_amax). */
int dist_micro_done(Dist *d, CpuBackend *b, CudaBackend *cu, char *err, size_t errlen);
/* After the backward of every local micro-batch: sum gradients and losses over ranks, max the
 * amaxes, and agree on whether every gradient is finite. `step` (1-based) drives the fault aid. */
int dist_reduce(Dist *d, CpuBackend *b, CudaBackend *cu, int64_t step, double *loss, int *finite, char *err, size_t errlen);
/* ZeRO-1: run this rank's optimizer units, then all-gather what the other ranks read. */
int dist_optimizer(Dist *d, CpuBackend *b, const RunState *st, char *err, size_t errlen);
/* ZeRO-1: before a checkpoint, every rank gets the full state (masters, moments, parameters). */
int dist_gather_state(Dist *d, CpuBackend *b, char *err, size_t errlen);
/* FP8C_DIST_VERIFY=1: after each step, check that every rank holds the same parameters, scales
 * and weight copies (and, replicated, master weights and moments); an error names the first
 * class that differs. A testing aid: it hashes the whole state. */
int dist_verify(Dist *d, CpuBackend *b, int64_t step, char *err, size_t errlen);

/* The CUDA backend on N > 1 ranks, after cu_init: open NCCL (every rank agrees that it opened)
 * and form the communicator (dist_ccl_init), so that dist_reduce all-reduces the gradient class
 * buffer on the device, on the backend's stream. NCCL that cannot open is an error that names
 * the way out: FP8C_DIST_GRADS=mpi stages gradients through the host and MPI instead (the CPU
 * path's deterministic all-reduce, then an upload), and dist_describe says which one runs.
 * Returns EXIT_OK, EXIT_BAD_INPUT (a bad FP8C_DIST_GRADS) or EXIT_RUNTIME, the message in err. */
int dist_cuda(Dist *d, CudaBackend *cu, char *err, size_t errlen);

/* The CUDA backend's NCCL communicator, bootstrapped as llm.c does: rank 0 creates the unique id
 * (ncclGetUniqueId needs no GPU), MPI broadcasts it, every rank joins. dist_ccl_id is the first
 * half (tests/unit/test_dist_ccl.c runs it under mpirun); dist_cuda calls dist_ccl_init. */
int dist_ccl_id(Dist *d, unsigned char id[128], char *err, size_t errlen);
Ccl *dist_ccl_init(Dist *d, char *err, size_t errlen);
/* Every rank's n bytes, in rank order (tests). */
int dist_allgather_bytes(Dist *d, const void *mine, int n, void *all, char *err, size_t errlen);

#endif
