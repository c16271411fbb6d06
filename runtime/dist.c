/* dist.c: data parallelism over MPI (dist.h says what and why). Owns the launch check, the
 * deterministic collectives, delayed-scaling amax reduction, ZeRO-1 ownership and gathers, the
 * collective watchdog and the fault-injection aid. Must not: print anything but errors (which
 * the caller prints), or run a reduction whose result depends on message timing.
 *
 * Why not MPI_Allreduce for gradients: the standard lets an implementation pick its algorithm
 * by message size and process placement, and Open MPI's tuned component does, so the sum's
 * association (and therefore its FP32 rounding) is not specified. Here each rank receives
 * everyone's copy of one contiguous part with MPI_Alltoallv, adds them in rank order (0, 1, ...,
 * N-1), and MPI_Allgatherv returns the parts: the same bytes on every rank and in every run with
 * N ranks, for the traffic of a ring all-reduce (2 (N-1)/N of the buffer per rank). */
#include "dist.h"
#include "quant.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fp8.h"
#include "ccl.h"
#include "ref.h"
#include "zero.h"

#define CHUNK_FLOATS ((int64_t)1 << 24) /* gradients reduce in windows of 64 MB: bounded scratch */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    char *end;
    if (!v || !*v) return dflt;
    long x = strtol(v, &end, 10);
    return *end || x < 0 || x > INT_MAX ? -1 : (int)x;
}

int dist_env_rank(void) {
    int r = env_int("OMPI_COMM_WORLD_RANK", 0);
    return r < 0 ? 0 : r;
}

/* ---- the watchdog ---- */

static void *watchdog_main(void *arg) {
    Dist *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        double since = d->op_since;
        if (since > 0 && mono_s() - since > d->timeout_s) {
            /* The main thread is blocked inside MPI: neither MPI_Abort (not thread-safe at
             * MPI_THREAD_SINGLE) nor exit (atexit handlers could block) is safe; mpirun sees the
             * status and ends the other ranks. */
            char msg[512];
            int n = snprintf(msg, sizeof msg,
                             "fp8c: error: rank %d of %d: %s has waited %.0f s for the other ranks (FP8C_DIST_TIMEOUT=%g): "
                             "a rank died or hangs; giving up\n",
                             d->rank, d->size, d->op_name ? d->op_name : "a collective", mono_s() - since, d->timeout_s);
            if (write(2, msg, (size_t)n) < 0) n = 0;
            _exit(EXIT_RUNTIME);
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void op_begin(Dist *d, const char *name) {
    d->op_name = name;
    d->op_since = mono_s();
}

static void op_end(Dist *d) { d->op_since = 0; }

/* An MPI return code as a message. */
static int mpi_fail(Dist *d, int rc, const char *what, char *err, size_t errlen) {
    char s[MPI_MAX_ERROR_STRING + 1] = "";
    int n = 0;
    if (d->mpi.Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    snprintf(err, errlen, "rank %d of %d: %s failed: %s", d->rank, d->size, what, s);
    return -1;
}

#define MPI_CALL(d, what, call)                                          \
    do {                                                                 \
        op_begin(d, what);                                               \
        int rc_ = (call);                                                \
        op_end(d);                                                       \
        if (rc_ != MPI_SUCCESS) return mpi_fail(d, rc_, what, err, errlen); \
    } while (0)

/* ---- start and end ---- */

static int open_mpi(Dist *d, int want, char *err, size_t errlen) {
    d->lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL); /* GLOBAL: Open MPI's plugins resolve against it */
    if (!d->lib) {
        snprintf(err, errlen, "launched by mpirun with %d ranks, but Open MPI's libmpi.so.40 cannot be opened (%s): "
                 "install libopenmpi3 / openmpi-bin, or run without mpirun", want, dlerror());
        return -1;
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {
#define SYM_(field, name) {#name, (void **)&d->mpi.field},
        MPI_ENTRY_POINTS(SYM_)
#undef SYM_
#define HANDLE_(field, macro, sym) {#sym, &d->field},
        MPI_ABI_HANDLES(HANDLE_)
#undef HANDLE_
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *f = dlsym(d->lib, syms[i].name);
        if (!f) {
            snprintf(err, errlen, "libmpi.so.40 lacks %s: fp8c needs Open MPI 3.0 or newer", syms[i].name);
            return -1;
        }
        memcpy(syms[i].slot, &f, sizeof f); /* POSIX: a dlsym result converts to a function pointer */
    }
    return 0;
}

static int parse_fault(Dist *d, char *err, size_t errlen) {
    const char *v = getenv("FP8C_DIST_FAULT");
    if (!v || !*v) return 0;
    char kind[16];
    long long step;
    int rank, n = 0;
    if (sscanf(v, "%15[a-z]:%d:%lld%n", kind, &rank, &step, &n) != 3 || v[n] ||
        (strcmp(kind, "die") && strcmp(kind, "hang") && strcmp(kind, "flip")) || rank < 0 || step < 1) {
        snprintf(err, errlen, "FP8C_DIST_FAULT='%s': want die:RANK:STEP, hang:RANK:STEP or flip:RANK:STEP (a testing aid)", v);
        return -1;
    }
    d->fault_kind = kind[0] == 'd' ? 1 : kind[0] == 'h' ? 2 : 3;
    d->fault_rank = rank;
    d->fault_step = step;
    return 0;
}

static int collect_amax(Dist *d) {
    const Plan *p = d->p;
    d->amax = calloc((size_t)p->nsteps[SEC_SCALE_UPDATE] + 1, sizeof *d->amax);
    d->amax_run = calloc((size_t)p->nsteps[SEC_SCALE_UPDATE] + 1, sizeof *d->amax_run);
    if (!d->amax || !d->amax_run) return -1;
    for (int i = 0; i < p->nsteps[SEC_SCALE_UPDATE]; i++) {
        const RtStep *s = &p->steps[SEC_SCALE_UPDATE][i];
        if (s->op == OP_SCALE_UPDATE && s->args[2] >= 0) d->amax[d->namax++] = s->args[2];
    }
    return 0;
}

/* ZeRO-1 ownership: whole optimizer units (zero.h), weighed by the elements they update. */
static int64_t unit_cost(const Plan *p, const RtUnit *u) {
    int64_t n = 0;
    for (int i = u->first; i < u->first + u->n; i++)
        if (p->steps[SEC_OPTIMIZER][i].op == OP_ADAMW) n += p->steps[SEC_OPTIMIZER][i].ints[0];
    return n;
}

static int64_t plan_bytes(const RtTensor *t) { return t->n * fp8c_tensor_dtype_bytes[t->dtype]; }

/* Where a unit quantizes one weight into a row-wise and a column-wise FP8 copy with tilings whose
 * transpose is exact (q_transpose_copy: square blocks or one scale for the tensor; same format,
 * same given scale, no MX), only the row-wise copy is sent and every other rank transposes it:
 * half the bytes of sending both (MS-AMP and torchao all-gather one FP8 copy). */
static int derive_col_copies(Dist *d, char *err, size_t errlen) {
    const Plan *p = d->p;
    int nu = p->nunits[SEC_OPTIMIZER];
    for (int u = 0; u < nu; u++) {
        const RtUnit *unit = &p->units[SEC_OPTIMIZER][u];
        for (int i = unit->first; i < unit->first + unit->n; i++) {
            const RtStep *r = &p->steps[SEC_OPTIMIZER][i];
            if (r->op != OP_QUANTIZE || r->ints[6] || r->ints[5]) continue;
            for (int j = unit->first; j < unit->first + unit->n; j++) {
                const RtStep *c = &p->steps[SEC_OPTIMIZER][j];
                if (c->op != OP_QUANTIZE || !c->ints[6] || c->ints[5] || c->args[3] != r->args[3] || c->args[4] != r->args[4]) continue;
                if (c->ints[0] != r->ints[0] || c->ints[1] != r->ints[1] || c->ints[2] != r->ints[2] || c->ints[3] != r->ints[3] ||
                    c->ints[4] != r->ints[4])
                    continue;
                int R = (int)r->ints[0], C = (int)r->ints[1], tr = (int)r->ints[2], tc = (int)r->ints[3];
                int square = (tr <= 0 && tc <= 0) || (tr > 1 && tr == tc);
                int ct = c->args[0], st = c->args[1];
                if (!square || ct < 0 || st < 0 || r->args[0] < 0 || r->args[1] < 0 || d->send[ct] != 1 || d->send[st] != 1 ||
                    d->send[r->args[0]] != 1 || d->send[r->args[1]] != 1)
                    continue;
                struct DistDerived *grown = realloc(d->derived, (size_t)(d->nderived + 1) * sizeof *grown);
                if (!grown) return snprintf(err, errlen, "out of memory planning ZeRO-1"), -1;
                d->derived = grown;
                d->derived[d->nderived++] = (struct DistDerived){u, r->args[0], r->args[1], ct, st, R, C, tr, tc};
                d->send[ct] = d->send[st] = 0; /* derived on arrival, not sent */
                d->gather_bytes -= plan_bytes(&p->t[ct]) + plan_bytes(&p->t[st]);
                break;
            }
        }
    }
    return 0;
}

/* After a gather: the column-wise copies of the units other ranks own, from their row-wise ones. */
static void derive_received(Dist *d, CpuBackend *b) {
    for (int k = 0; k < d->nderived; k++) {
        const struct DistDerived *x = &d->derived[k];
        if (d->owner[x->unit] == d->rank) continue;
        q_transpose_copy(cpu_ptr(b, x->codes_t), cpu_ptr(b, x->scale_inv_t), cpu_ptr(b, x->codes), cpu_ptr(b, x->scale_inv), x->R, x->C,
                         x->tr, x->tc);
    }
}

static int plan_zero(Dist *d, char *err, size_t errlen) {
    const Plan *p = d->p;
    int nu = p->nunits[SEC_OPTIMIZER];
    d->owner = calloc((size_t)nu + 1, sizeof *d->owner);
    d->send = calloc((size_t)p->nt + 1, sizeof *d->send);
    int64_t *load = calloc((size_t)d->size, sizeof *load), *cost = calloc((size_t)nu + 1, sizeof *cost);
    char *read_outside = calloc((size_t)p->nt + 1, 1);
    if (!d->owner || !d->send || !load || !cost || !read_outside) {
        free(load), free(cost), free(read_outside);
        snprintf(err, errlen, "out of memory planning ZeRO-1");
        return -1;
    }
    for (int u = 0; u < nu; u++) cost[u] = unit_cost(p, &p->units[SEC_OPTIMIZER][u]);
    if (zero_assign(cost, nu, d->size, d->owner, load)) {
        free(load), free(cost), free(read_outside);
        snprintf(err, errlen, "out of memory planning ZeRO-1");
        return -1;
    }
    /* what the other sections read outside refresh units (those run only after a load, when every
     * rank holds the full state) */
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        if (sec == SEC_OPTIMIZER) continue;
        for (int u = 0; u < p->nunits[sec]; u++) {
            const RtUnit *unit = &p->units[sec][u];
            if (unit->refresh) continue;
            for (int i = unit->first; i < unit->first + unit->n; i++) {
                const RtStep *s = &p->steps[sec][i];
                for (int k = 0; k < op_arg_count(s->op); k++)
                    if (s->args[k] >= 0 && op_arg_reads(s->op, k, s->ints)) read_outside[s->args[k]] = 1;
            }
        }
    }
    for (int u = 0; u < nu; u++) {
        const RtUnit *unit = &p->units[SEC_OPTIMIZER][u];
        for (int i = unit->first; i < unit->first + unit->n; i++) {
            const RtStep *s = &p->steps[SEC_OPTIMIZER][i];
            for (int k = 0; k < op_arg_count(s->op); k++) {
                int t = s->args[k];
                if (t < 0 || !op_arg_writes(s->op, k)) continue;
                TensorClass c = p->t[t].cls;
                int every_step = c != TC_MASTER && c != TC_OPT && (c != TC_PARAM || read_outside[t]);
                d->has_copies |= c == TC_WCOPY;
                d->send[t] = every_step ? 1 : 2;
                if (c == TC_PARAM) d->gather_bytes_bf16 += plan_bytes(&p->t[t]);
                if (every_step) d->gather_bytes += plan_bytes(&p->t[t]);
                if ((c == TC_MASTER || c == TC_OPT) && d->owner[u] == d->rank) d->shard_bytes += plan_bytes(&p->t[t]);
            }
        }
    }
    free(load), free(cost), free(read_outside);
    return derive_col_copies(d, err, errlen);
}

int dist_init(Dist *d, const Plan *p, int zero, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    d->p = p;
    d->size = 1;
    d->zero = zero;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    int want = env_int("OMPI_COMM_WORLD_SIZE", 0);
    int pmi = env_int("PMI_SIZE", 0);
    if (want < 0) {
        snprintf(err, errlen, "OMPI_COMM_WORLD_SIZE='%s' is not a rank count", getenv("OMPI_COMM_WORLD_SIZE"));
        return EXIT_BAD_INPUT;
    }
    if (!want && pmi > 1) {
        snprintf(err, errlen, "launched with %d ranks by a launcher other than Open MPI's mpirun (PMI_SIZE is set): "
                 "fp8c speaks Open MPI's ABI (runtime/mpi_abi.h); use Open MPI's mpirun", pmi);
        return EXIT_BAD_INPUT;
    }
    if (parse_fault(d, err, errlen)) return EXIT_BAD_INPUT;
    int t = env_int("FP8C_DIST_TIMEOUT", 600);
    if (t < 1) {
        snprintf(err, errlen, "FP8C_DIST_TIMEOUT='%s': want a whole number of seconds >= 1", getenv("FP8C_DIST_TIMEOUT"));
        return EXIT_BAD_INPUT;
    }
    d->timeout_s = t;
    d->verify = env_int("FP8C_DIST_VERIFY", 0) > 0;
    if (want >= 1) {
        if (open_mpi(d, want, err, errlen)) return EXIT_RUNTIME;
        if (d->mpi.Init(NULL, NULL) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Init failed (launched with %d ranks)", want);
            return EXIT_RUNTIME;
        }
        d->mpi_up = 1;
        d->mpi.Comm_set_errhandler(d->comm_world, d->errors_return); /* errors come back as codes: we report them */
        d->mpi.Comm_rank(d->comm_world, &d->rank);
        d->mpi.Comm_size(d->comm_world, &d->size);
        if (pthread_create(&d->watchdog, NULL, watchdog_main, d)) {
            snprintf(err, errlen, "cannot start the collective watchdog thread");
            return EXIT_RUNTIME;
        }
        d->watchdog_up = 1;
        /* every rank must have compiled the same plan */
        uint64_t *h = calloc((size_t)d->size, sizeof *h);
        if (!h) return snprintf(err, errlen, "out of memory"), EXIT_RUNTIME;
        op_begin(d, "the plan-hash check");
        int rc = d->mpi.Allgather(&p->hash, 8, d->t_byte, h, 8, d->t_byte, d->comm_world);
        op_end(d);
        int bad = -1;
        for (int r = 0; r < d->size && rc == MPI_SUCCESS; r++)
            if (h[r] != h[0] && bad < 0) bad = r;
        free(h);
        if (rc != MPI_SUCCESS) return mpi_fail(d, rc, "the plan-hash check", err, errlen), EXIT_RUNTIME;
        if (bad >= 0) {
            snprintf(err, errlen, "rank %d runs a different plan than rank 0 (plan hashes differ): every rank needs the same "
                     "model, policy and options", bad);
            return EXIT_BAD_INPUT;
        }
    }
    if (zero && d->size < 2) {
        snprintf(err, errlen, "--zero 1 shards optimizer state across ranks and this run has one: launch with mpirun -np N (N >= 2), "
                 "or leave --zero out");
        return EXIT_BAD_INPUT;
    }
    if (p->train.grad_accum % d->size) {
        snprintf(err, errlen, "the global batch (train.grad_accum = %lld micro-batches of %lld x %lld tokens) does not divide "
                 "over %d ranks: set grad_accum to a multiple of %d, or launch a rank count that divides %lld",
                 (long long)p->train.grad_accum, (long long)p->train.micro_batch, (long long)p->train.seq_len, d->size, d->size,
                 (long long)p->train.grad_accum);
        return EXIT_BAD_INPUT;
    }
    int ng = 0, nbf = 0;
    for (int i = 0; i < p->nt; i++)
        if (p->t[i].cls == TC_GRAD) ng++, nbf += p->t[i].dtype == TD_BF16;
    if (nbf && nbf != ng) {
        snprintf(err, errlen, "the plan mixes BF16 and FP32 gradients; dist.c reduces one grad_accum precision");
        return EXIT_BAD_INPUT;
    }
    d->grad_bf16 = nbf > 0;
    int64_t B = p->train.micro_batch, T = p->train.seq_len;
    d->skip_tokens = malloc((size_t)(2 * B * T) * sizeof *d->skip_tokens);
    if (!d->skip_tokens || collect_amax(d)) return snprintf(err, errlen, "out of memory"), EXIT_RUNTIME;
    if (zero && plan_zero(d, err, errlen)) return EXIT_RUNTIME;
    return EXIT_OK;
}

void dist_end(Dist *d, int ok) {
    if (!d->p) return; /* dist_init never ran */
    ccl_free(d->ccl, !ok); /* before the CUDA context goes (train.c frees the backend after this) */
    d->ccl = NULL;
    if (d->watchdog_up) {
        if (ok && d->mpi_up) { /* leave together: a rank that finalizes early could strand a reduction */
            op_begin(d, "the final barrier");
            d->mpi.Barrier(d->comm_world);
            op_end(d);
        }
        pthread_mutex_lock(&d->mu);
        d->stop = 1;
        pthread_cond_signal(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->watchdog, NULL);
    }
    /* After a failure on this rank, no MPI_Finalize (it would wait for the others): the process
     * exits non-zero and mpirun ends the job, which reads better than MPI_Abort's report. */
    if (d->mpi_up && ok) d->mpi.Finalize();
    /* libmpi stays loaded: Open MPI does not support dlclose after MPI_Finalize */
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->amax), free(d->amax_run), free(d->scratch), free(d->skip_tokens), free(d->owner), free(d->send), free(d->pack), free(d->derived);
    d->derived = NULL, d->nderived = 0;
    d->amax = NULL, d->amax_run = NULL, d->scratch = NULL, d->skip_tokens = NULL, d->owner = NULL, d->send = NULL, d->pack = NULL;
}

const char *dist_describe(Dist *d) {
    if (d->size == 1) return "";
    int v = d->ccl_version; /* NCCL >= 2.9: major * 10000 + minor * 100 + patch */
    if (d->ccl)
        snprintf(d->desc, sizeof d->desc, " x %d ranks (%s gradient all-reduce on the device over NCCL %d.%d.%d; "
                 "losses, amaxes and expert loads over MPI; replicated optimizer state)", d->size, d->grad_bf16 ? "BF16" : "FP32",
                 v / 10000, v / 100 % 100, v % 100);
    else if (d->grads_mpi)
        snprintf(d->desc, sizeof d->desc, " x %d ranks (MPI, %s gradient all-reduce staged through the host (FP8C_DIST_GRADS=mpi), "
                 "replicated optimizer state)", d->size, d->grad_bf16 ? "BF16" : "FP32");
    else if (!d->zero)
        snprintf(d->desc, sizeof d->desc, " x %d ranks (MPI, %s gradient all-reduce, replicated optimizer state)", d->size,
                 d->grad_bf16 ? "BF16" : "FP32");
    else
        snprintf(d->desc, sizeof d->desc, " x %d ranks (MPI, %s gradient all-reduce, ZeRO-1: %.2f MB of master + moments here, "
                 "%.2f MB all-gathered per step%s, %.2f MB in parameter dtypes)", d->size, d->grad_bf16 ? "BF16" : "FP32",
                 (double)d->shard_bytes / 1e6, (double)d->gather_bytes / 1e6, d->has_copies ? " as FP8 weight copies + scales" : "",
                 (double)d->gather_bytes_bf16 / 1e6);
    return d->desc;
}

/* ---- the batch ---- */

int dist_mine(const Dist *d, int64_t micro) {
    int64_t per = d->p->train.grad_accum / d->size;
    return micro / per == d->rank;
}

void dist_skip_batch(Dist *d, DataStream *s, int B, int T) {
    data_next_batch(s, B, T, d->skip_tokens, d->skip_tokens + (size_t)B * T);
}

/* ---- delayed scaling amax ---- */

static float fmax_nan(float a, float b) { return !(b <= a) ? b : a; } /* a NaN wins: q_compute_scale keeps the scale */

int dist_micro_done(Dist *d, CpuBackend *b, CudaBackend *cu, char *err, size_t errlen) {
    if (!d->namax || (d->size == 1 && d->p->train.grad_accum == 1)) return 0;
    for (int k = 0; k < d->namax; k++) {
        if (cu && cu_download_tensor(cu, b, d->amax[k], err, errlen)) return -1;
        float a = *(const float *)cpu_ptr(b, d->amax[k]);
        d->amax_run[k] = d->folded ? fmax_nan(d->amax_run[k], a) : a;
    }
    d->folded++;
    return 0;
}

/* The step's amax: the max over this rank's micro-batches, then over ranks in rank order. */
static int reduce_amax(Dist *d, CpuBackend *b, CudaBackend *cu, char *err, size_t errlen) {
    if (!d->namax || !d->folded) return 0;
    d->folded = 0;
    if (d->size > 1) {
        float *all = malloc((size_t)d->namax * (size_t)d->size * sizeof *all);
        if (!all) return snprintf(err, errlen, "out of memory"), -1;
        op_begin(d, "the amax all-gather");
        int rc = d->mpi.Allgather(d->amax_run, d->namax, d->t_float, all, d->namax, d->t_float, d->comm_world);
        op_end(d);
        if (rc != MPI_SUCCESS) {
            free(all);
            return mpi_fail(d, rc, "the amax all-gather", err, errlen);
        }
        for (int k = 0; k < d->namax; k++) {
            float m = all[k];
            for (int r = 1; r < d->size; r++) m = fmax_nan(m, all[(size_t)r * d->namax + k]);
            d->amax_run[k] = m;
        }
        free(all);
    }
    for (int k = 0; k < d->namax; k++) {
        *(float *)cpu_ptr(b, d->amax[k]) = d->amax_run[k];
        if (cu && cu_upload_tensor(cu, b, d->amax[k], err, errlen)) return -1;
    }
    return 0;
}

/* ---- gradients ---- */

/* x (n floats, the same layout on every rank) becomes the rank-order sum over ranks, rounded to
 * BF16 after every addition when the policy accumulates gradients in BF16 (what a BF16 buffer
 * receiving each rank's contribution in turn would hold). */
static int allreduce_sum(Dist *d, float *x, int64_t n, char *err, size_t errlen) {
    int N = d->size;
    int cnt[64], dsp[64], rcnt[64], rdsp[64];
    if (N > 64) return snprintf(err, errlen, "more than 64 ranks: raise the limit in dist.c"), -1;
    if (!d->scratch && !(d->scratch = malloc((size_t)(CHUNK_FLOATS + 64) * sizeof(float)))) return snprintf(err, errlen, "out of memory"), -1;
    for (int64_t off = 0; off < n; off += CHUNK_FLOATS) {
        int64_t w = n - off < CHUNK_FLOATS ? n - off : CHUNK_FLOATS;
        for (int r = 0; r < N; r++) {
            int64_t lo = w * r / N, hi = w * (r + 1) / N;
            cnt[r] = (int)(hi - lo);
            dsp[r] = (int)lo;
        }
        int mine = cnt[d->rank];
        for (int r = 0; r < N; r++) rcnt[r] = mine, rdsp[r] = r * mine;
        float *part = x + off;
        MPI_CALL(d, "the gradient reduce-scatter (all-to-all)",
                 d->mpi.Alltoallv(part, cnt, dsp, d->t_float, d->scratch, rcnt, rdsp, d->t_float, d->comm_world));
        float *out = part + dsp[d->rank];
        for (int64_t i = 0; i < mine; i++) {
            float acc = d->scratch[i];
            for (int r = 1; r < N; r++) {
                acc += d->scratch[(size_t)r * mine + i];
                if (d->grad_bf16) acc = fp8c_bf16_to_f32(fp8c_f32_to_bf16(acc));
            }
            out[i] = acc;
        }
        MPI_CALL(d, "the gradient all-gather", d->mpi.Allgatherv(MPI_IN_PLACE, 0, d->t_float, part, cnt, dsp, d->t_float, d->comm_world));
    }
    return 0;
}

/* The CUDA backend: the gradient class buffer (every gradient, in the plan's dtype, and the
 * zeroed gaps between them) summed over ranks on the device by NCCL, on the backend's stream
 * behind the backward's kernels, then downloaded into the mirror for the norm. The all-reduce is
 * a plain stream operation between two cu_run calls, outside the sections' CUDA graphs: the
 * backward's graph stays the same on one rank and N, and the download that follows is the
 * synchronization that waits for it (so the watchdog times it as a collective). */
static int reduce_grads_nccl(Dist *d, CpuBackend *b, CudaBackend *cu, char *err, size_t errlen) {
    size_t n = (size_t)d->p->class_bytes[TC_GRAD] / (d->grad_bf16 ? 2 : 4);
    if (ccl_allreduce_sum(d->ccl, cu_class_ptr(cu, TC_GRAD), n, d->grad_bf16, cu_stream(cu), err, errlen)) return -1;
    op_begin(d, "the NCCL gradient all-reduce");
    int rc = cu_download(cu, b, TC_GRAD, err, errlen);
    op_end(d);
    return rc;
}

/* Scalars: gathered, then combined in rank order. */
static int gather_doubles(Dist *d, const double *mine, int n, double *all, char *err, size_t errlen) {
    MPI_CALL(d, "a scalar all-gather", d->mpi.Allgather(mine, n, d->t_double, all, n, d->t_double, d->comm_world));
    return 0;
}

static void fault(Dist *d, int64_t step) {
    if (!d->fault_kind || d->fault_kind == 3 || d->fault_rank != d->rank || d->fault_step != step) return;
    fprintf(stderr, "fp8c: rank %d: FP8C_DIST_FAULT: %s at step %lld\n", d->rank, d->fault_kind == 1 ? "dying" : "hanging", (long long)step);
    fflush(stderr);
    if (d->fault_kind == 1) _exit(3);
    for (;;) pause();
}

/* MoE: each layer's tokens per expert, summed over ranks (rank order; the counts are whole numbers
 * far below 2^24, so the float sums are exact), so that every rank's expert-bias update reads the
 * same global load and the biases stay identical (DeepSeek-V3 balances on the whole batch's load) */
static int reduce_expert_load(Dist *d, CpuBackend *b, CudaBackend *cu, char *err, size_t errlen) {
    const Plan *p = d->p;
    int64_t n = 0;
    for (int i = 0; i < p->n_expert_load; i++) n += p->t[p->expert_load[i]].n;
    if (!n) return 0;
    if (n > INT_MAX / d->size) return snprintf(err, errlen, "the expert-load all-gather is too large for MPI's int count"), -1;
    float *mine = malloc((size_t)n * sizeof *mine), *all = malloc((size_t)n * (size_t)d->size * sizeof *all);
    if (!mine || !all) return free(mine), free(all), snprintf(err, errlen, "out of memory"), -1;
    int64_t o = 0;
    for (int i = 0; i < p->n_expert_load; i++) {
        int t = p->expert_load[i];
        if (cu && cu_download_tensor(cu, b, t, err, errlen)) return free(mine), free(all), -1;
        memcpy(mine + o, cpu_ptr(b, t), (size_t)p->t[t].n * sizeof *mine);
        o += p->t[t].n;
    }
    op_begin(d, "the expert-load all-gather");
    int rc = d->mpi.Allgather(mine, (int)n, d->t_float, all, (int)n, d->t_float, d->comm_world);
    op_end(d);
    if (rc != MPI_SUCCESS) {
        free(mine), free(all);
        return mpi_fail(d, rc, "the expert-load all-gather", err, errlen);
    }
    o = 0;
    for (int i = 0; i < p->n_expert_load; i++) {
        int t = p->expert_load[i];
        float *load = cpu_ptr(b, t);
        for (int64_t k = 0; k < p->t[t].n; k++) {
            float sum = 0;
            for (int r = 0; r < d->size; r++) sum += all[(size_t)r * (size_t)n + (size_t)(o + k)];
            load[k] = sum;
        }
        o += p->t[t].n;
        if (cu && cu_upload_tensor(cu, b, t, err, errlen)) return free(mine), free(all), -1;
    }
    free(mine), free(all);
    return 0;
}

int dist_reduce(Dist *d, CpuBackend *b, CudaBackend *cu, int64_t step, double *loss, int *finite, char *err, size_t errlen) {
    if (reduce_amax(d, b, cu, err, errlen)) return -1;
    if (d->size == 1) return 0;
    fault(d, step);
    const Plan *p = d->p;
    if (reduce_expert_load(d, b, cu, err, errlen)) return -1;
    /* a rank's gradients may be non-finite where the sum is not (inf - inf is NaN, but a huge
     * positive and negative contribution could cancel): agree on the flag explicitly */
    int ok = 1;
    for (int i = 0; i < p->nt; i++)
        if (p->t[i].cls == TC_GRAD) ok &= ref_all_finite(cpu_ptr(b, i), p->t[i].n);
    if (cu && d->ccl) {
        if (reduce_grads_nccl(d, b, cu, err, errlen)) return -1;
    } else {
        int64_t n = p->class_bytes[TC_GRAD] * b->factor[TC_GRAD] / (int64_t)sizeof(float);
        if (allreduce_sum(d, (float *)b->base[TC_GRAD], n, err, errlen)) return -1;
        if (cu && cu_upload(cu, b, TC_GRAD, err, errlen)) return -1;
    }
    double mine[2] = {*loss, ok}, *all = malloc((size_t)d->size * 2 * sizeof *all);
    if (!all) return snprintf(err, errlen, "out of memory"), -1;
    if (gather_doubles(d, mine, 2, all, err, errlen)) return free(all), -1;
    double sum = 0;
    int all_ok = 1;
    for (int r = 0; r < d->size; r++) {
        sum += all[2 * r];
        all_ok &= all[2 * r + 1] != 0;
    }
    free(all);
    *loss = sum;
    *finite = all_ok;
    return 0;
}

/* ---- ZeRO-1 ---- */

/* Every rank receives, from each unit's owner, the tensors marked `level` or lower in d->send. */
static int gather_units(Dist *d, CpuBackend *b, int level, const char *what, char *err, size_t errlen) {
    const Plan *p = d->p;
    int N = d->size, nu = p->nunits[SEC_OPTIMIZER];
    int cnt[64], dsp[64];
    int64_t bytes[64] = {0};
    if (N > 64) return snprintf(err, errlen, "more than 64 ranks: raise the limit in dist.c"), -1;
    /* one pass to size, one to pack; a tensor written by two ops of a unit is sent once */
    char *seen = calloc((size_t)p->nt + 1, 1);
    if (!seen) return snprintf(err, errlen, "out of memory"), -1;
    for (int u = 0; u < nu; u++) {
        const RtUnit *unit = &p->units[SEC_OPTIMIZER][u];
        for (int i = unit->first; i < unit->first + unit->n; i++) {
            const RtStep *s = &p->steps[SEC_OPTIMIZER][i];
            for (int k = 0; k < op_arg_count(s->op); k++) {
                int t = s->args[k];
                if (t < 0 || !d->send[t] || d->send[t] > level || seen[t]) continue;
                seen[t] = 1;
                bytes[d->owner[u]] += (int64_t)cpu_tensor_bytes(b, t);
            }
        }
    }
    int64_t total = 0;
    for (int r = 0; r < N; r++) {
        if (bytes[r] > INT_MAX || total > INT_MAX) {
            free(seen);
            return snprintf(err, errlen, "ZeRO-1 gather of %lld bytes from one rank exceeds MPI's int count", (long long)bytes[r]), -1;
        }
        cnt[r] = (int)bytes[r];
        dsp[r] = (int)total;
        total += bytes[r];
    }
    free(d->pack);
    if (!(d->pack = malloc((size_t)total + 1))) return free(seen), snprintf(err, errlen, "out of memory"), -1;
    /* pack: rank r's region holds its units' tensors in unit order */
    int64_t at[64];
    for (int r = 0; r < N; r++) at[r] = dsp[r];
    for (int pass = 0; pass < 2; pass++) {
        memset(seen, 0, (size_t)p->nt + 1);
        for (int r = 0; r < N; r++) at[r] = dsp[r];
        for (int u = 0; u < nu; u++) {
            const RtUnit *unit = &p->units[SEC_OPTIMIZER][u];
            int r = d->owner[u];
            for (int i = unit->first; i < unit->first + unit->n; i++) {
                const RtStep *s = &p->steps[SEC_OPTIMIZER][i];
                for (int k = 0; k < op_arg_count(s->op); k++) {
                    int t = s->args[k];
                    if (t < 0 || !d->send[t] || d->send[t] > level || seen[t]) continue;
                    seen[t] = 1;
                    size_t nb = cpu_tensor_bytes(b, t);
                    if (pass == 0 && r == d->rank) memcpy(d->pack + at[r], cpu_ptr(b, t), nb);
                    if (pass == 1 && r != d->rank) memcpy(cpu_ptr(b, t), d->pack + at[r], nb);
                    at[r] += (int64_t)nb;
                }
            }
        }
        if (pass == 0) {
            op_begin(d, what);
            int rc = d->mpi.Allgatherv(MPI_IN_PLACE, 0, d->t_byte, d->pack, cnt, dsp, d->t_byte, d->comm_world);
            op_end(d);
            if (rc != MPI_SUCCESS) {
                free(seen);
                return mpi_fail(d, rc, what, err, errlen);
            }
        }
    }
    free(seen);
    return 0;
}

int dist_optimizer(Dist *d, CpuBackend *b, const RunState *st, char *err, size_t errlen) {
    const Plan *p = d->p;
    int writes_copies = 0;
    for (int u = 0; u < p->nunits[SEC_OPTIMIZER]; u++) {
        const RtUnit *unit = &p->units[SEC_OPTIMIZER][u];
        writes_copies |= unit->fusion == FUSE_ADAMW_QUANT;
        if (d->owner[u] != d->rank || (unit->refresh && b->copies_fresh)) continue;
        cpu_run_unit(b, SEC_OPTIMIZER, u, st);
    }
    if (gather_units(d, b, 1, "the ZeRO-1 parameter all-gather", err, errlen)) return -1;
    derive_received(d, b);
    if (writes_copies) b->copies_fresh = 1; /* every copy came from its owner's adamw_quantize unit */
    return 0;
}

int dist_gather_state(Dist *d, CpuBackend *b, char *err, size_t errlen) {
    if (!d->zero) return 0;
    if (gather_units(d, b, 2, "the ZeRO-1 state gather for a checkpoint", err, errlen)) return -1;
    derive_received(d, b);
    return 0;
}

/* ---- verification ---- */

static uint64_t fnv(uint64_t h, const unsigned char *x, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ x[i]) * 1099511628211ull;
    return h;
}

int dist_verify(Dist *d, CpuBackend *b, int64_t step, char *err, size_t errlen) {
    if (!d->verify || d->size == 1) return 0;
    const Plan *p = d->p;
    if (d->fault_kind == 3 && d->fault_rank == d->rank && d->fault_step == step) /* flip one parameter's lowest bit */
        for (int i = 0; i < p->nt; i++)
            if (p->t[i].cls == TC_PARAM && !(d->zero && d->send[i] == 2)) {
                ((unsigned char *)cpu_ptr(b, i))[0] ^= 1;
                break;
            }
    /* what every rank must hold identically; under ZeRO-1 master weights and moments are shards */
    static const TensorClass cls[] = {TC_PARAM, TC_SCALE, TC_WCOPY, TC_MASTER, TC_OPT};
    int ncls = d->zero ? 3 : 5;
    uint64_t h[5], *all = malloc((size_t)d->size * sizeof h);
    if (!all) return snprintf(err, errlen, "out of memory"), -1;
    for (int c = 0; c < ncls; c++) {
        h[c] = 1469598103934665603ull;
        for (int i = 0; i < p->nt; i++)
            if (p->t[i].cls == cls[c] && !(d->zero && d->send[i] == 2)) /* ZeRO-1: a parameter no other rank reads is its owner's */
                h[c] = fnv(h[c], cpu_ptr(b, i), cpu_tensor_bytes(b, i));
    }
    op_begin(d, "the FP8C_DIST_VERIFY state-hash all-gather");
    int rc = d->mpi.Allgather(h, ncls * 8, d->t_byte, all, ncls * 8, d->t_byte, d->comm_world);
    op_end(d);
    if (rc != MPI_SUCCESS) return free(all), mpi_fail(d, rc, "the FP8C_DIST_VERIFY all-gather", err, errlen);
    for (int r = 1; r < d->size; r++)
        for (int c = 0; c < ncls; c++)
            if (all[(size_t)r * ncls + c] != all[c]) {
                snprintf(err, errlen, "FP8C_DIST_VERIFY: after step %lld, rank %d's %s differ from rank 0's", (long long)step, r,
                         fp8c_tensor_class_names[cls[c]]);
                free(all);
                return -1;
            }
    if (!d->rank)
        fprintf(stderr, "fp8c: FP8C_DIST_VERIFY: after step %lld all %d ranks hold identical parameters, scales, weight copies%s "
                "(state hash %016llx)\n", (long long)step, d->size, d->zero ? "" : ", master weights, optimizer state",
                (unsigned long long)all[0]);
    free(all);
    return 0;
}

/* ---- NCCL bootstrap ---- */

int dist_allgather_bytes(Dist *d, const void *mine, int n, void *all, char *err, size_t errlen) {
    if (d->size == 1) return memcpy(all, mine, (size_t)n), 0;
    MPI_CALL(d, "a byte all-gather", d->mpi.Allgather(mine, n, d->t_byte, all, n, d->t_byte, d->comm_world));
    return 0;
}

int dist_ccl_id(Dist *d, unsigned char id[128], char *err, size_t errlen) {
    int ok = d->rank != 0 || !ccl_unique_id(id, 128, err, errlen);
    if (d->size == 1) return ok ? 0 : -1;
    /* rank 0's failure travels with the id, so every rank returns the same answer */
    unsigned char msg[129];
    msg[0] = (unsigned char)ok;
    memcpy(msg + 1, id, 128);
    MPI_CALL(d, "the NCCL unique-id broadcast", d->mpi.Bcast(msg, 129, d->t_byte, 0, d->comm_world));
    memcpy(id, msg + 1, 128);
    if (!msg[0] && d->rank) snprintf(err, errlen, "rank 0 could not create the NCCL unique id");
    return msg[0] ? 0 : -1;
}

Ccl *dist_ccl_init(Dist *d, char *err, size_t errlen) {
    unsigned char id[128] = {0};
    if (dist_ccl_id(d, id, err, errlen)) return NULL;
    return ccl_init(d->rank, d->size, id, err, errlen);
}

int dist_cuda(Dist *d, CudaBackend *cu, char *err, size_t errlen) {
    (void)cu; /* the context it made current is what NCCL joins */
    if (d->size == 1) return EXIT_OK;
    const char *how = getenv("FP8C_DIST_GRADS");
    if (how && *how && strcmp(how, "nccl") && strcmp(how, "mpi")) {
        snprintf(err, errlen, "FP8C_DIST_GRADS='%s': want nccl (the default: NCCL on the device) or mpi (staged through the host)", how);
        return EXIT_BAD_INPUT;
    }
    if (how && !strcmp(how, "mpi")) {
        d->grads_mpi = 1;
        return EXIT_OK;
    }
    const Plan *p = d->p;
    for (int i = 0; i < p->nt; i++)
        if (p->t[i].cls == TC_GRAD && p->t[i].dtype != TD_F32 && p->t[i].dtype != TD_BF16) {
            snprintf(err, errlen, "gradient %s is %s: the NCCL all-reduce sums FP32 or BF16 gradients (FP8C_DIST_GRADS=mpi stages "
                     "any through the host)", p->t[i].name, fp8c_tensor_dtype_names[p->t[i].dtype]);
            return EXIT_RUNTIME;
        }
    /* every rank learns whether every rank opened NCCL, so that none waits for a rank that gave up */
    char why[512] = "";
    unsigned char mine = !ccl_open(&d->ccl_version, why, sizeof why), all[64];
    if (d->size > 64) return snprintf(err, errlen, "more than 64 ranks: raise the limit in dist.c"), EXIT_RUNTIME;
    if (dist_allgather_bytes(d, &mine, 1, all, err, errlen)) return EXIT_RUNTIME;
    if (!mine) {
        snprintf(err, errlen, "rank %d of %d: the CUDA backend all-reduces gradients with NCCL, and %s; set FP8C_DIST_GRADS=mpi "
                 "to stage them through the host and MPI instead", d->rank, d->size, why);
        return EXIT_RUNTIME;
    }
    for (int r = 0; r < d->size; r++)
        if (!all[r]) return snprintf(err, errlen, "rank %d of %d: rank %d could not open NCCL (its error says why)", d->rank, d->size, r), EXIT_RUNTIME;
    d->ccl = dist_ccl_init(d, err, errlen);
    return d->ccl ? EXIT_OK : EXIT_RUNTIME;
}
