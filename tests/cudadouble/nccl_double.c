/* nccl_double.c: a test-double NCCL, built as build/tests/libnccl.so.2 (tests only; see
 * tests/cudadouble/README.md, "The NCCL double"). fp8c's dlopen("libnccl.so.2") finds it when
 * LD_LIBRARY_PATH names build/tests; it says so on stderr when a communicator forms, and prints
 * each communicator's collective count when it goes, so a test can tell that it was used.
 *
 * What it does, for the entry points ccl.c resolves (runtime/cuda/nccl_abi.h NCCL_ENTRY_POINTS):
 *   - collectives are host work queued on the driver double's stream through double.h's door, so
 *     they run in stream order at the stream's synchronization, and a capture records them into
 *     the graph (replayed at every cuGraphLaunch), as NCCL's kernels are;
 *   - the transport between ranks is MPI itself: the ranks are the processes mpirun started, and
 *     the double reaches the libmpi.so.40 the process has already loaded and initialized (fp8c's
 *     dist.c does) with dlopen(RTLD_NOLOAD); a communicator must span MPI_COMM_WORLD with
 *     NCCL's rank = MPI's rank. One process (nranks 1) needs no MPI;
 *   - the reduction is deterministic: every rank all-gathers every rank's buffer and adds them in
 *     rank order (0, 1, ..., N-1), in float, rounding to BF16 after every addition for ncclBfloat16:
 *     the same sum dist.c's MPI path computes, so the two transports agree bit for bit.
 * It refuses, with NCCL's statuses, what NCCL refuses where fp8c could get it wrong (README.md
 * lists each rule), and what it does not implement (other types and operations, send/receive),
 * rather than computing something else. Must not: pretend to be NCCL on a GPU, or be linked into
 * fp8c.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "double.h"
#include "fp8.h"
#include "mpi_abi.h"

#define EXPORT __attribute__((visibility("default")))

/* nccl.h (NCCL 2.28, /usr/local/cuda/include/nccl.h): ncclResult_t, ncclDataType_t, ncclRedOp_t */
enum {
    N_SUCCESS = 0,
    N_UNHANDLED_CUDA_ERROR = 1,
    N_SYSTEM_ERROR = 2,
    N_INTERNAL_ERROR = 3,
    N_INVALID_ARGUMENT = 4,
    N_INVALID_USAGE = 5,
    N_NUM_RESULTS = 8,
};
enum { T_UINT8 = 1, T_FLOAT32 = 7, T_BFLOAT16 = 9, T_NUM_TYPES = 12 };
enum { OP_SUM = 0, OP_NUM_OPS = 5 };
#define VERSION_CODE 22809 /* the NCCL it stands in for: 2.28.9, CUDA 13.0's */
#define ID_BYTES 128       /* NCCL_UNIQUE_ID_BYTES */

static const size_t type_bytes[T_NUM_TYPES] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1}; /* nccl.h order */
static const char *const magic = "fp8c-nccl-double";

typedef struct {
    char internal[ID_BYTES];
} UniqueId;

/* Every communicator stays in this table until the process ends, so that a collective queued (or
 * captured) on a communicator destroyed before it ran fails with a message, not a stale pointer. */
#define MAX_COMMS 64
typedef struct {
    int live, rank, nranks;
    long allreduces, allgathers;
    double bytes;
} Comm;

static Comm comms[MAX_COMMS];
static int ncomms;

static struct {
    DoubleEnqueueFn enqueue;
    DoubleCheckFn check;
    int announced;
    int group_depth;
    /* MPI, when nranks > 1 */
    int (*Initialized)(int *flag);
    int (*Comm_rank)(MPI_Comm comm, int *rank);
    int (*Comm_size)(MPI_Comm comm, int *size);
    int (*Allgather)(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount, MPI_Datatype recvtype,
                     MPI_Comm comm);
    MPI_Comm world;
    MPI_Datatype byte;
} N;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fp8c-test-double: libnccl double: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- set-up ----------------------------------------------------------------------------------------- */

/* The driver double's door (double.h); a real driver has none: no GPU, no NCCL. */
static int find_driver(void) {
    if (N.enqueue) return 0;
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    void *e = drv ? dlsym(drv, DOUBLE_ENQUEUE_SYMBOL) : NULL, *c = drv ? dlsym(drv, DOUBLE_CHECK_SYMBOL) : NULL;
    if (drv) dlclose(drv);
    if (!e || !c) return -1;
    memcpy(&N.enqueue, &e, sizeof e);
    memcpy(&N.check, &c, sizeof c);
    return 0;
}

/* MPI as the process loaded it (dist.c: RTLD_GLOBAL); initialized, or the double cannot talk. */
static int find_mpi(void) {
    if (N.Allgather) return 0;
    void *mpi = dlopen("libmpi.so.40", RTLD_NOW | RTLD_NOLOAD);
    if (!mpi) return -1;
    void *f[4] = {dlsym(mpi, "MPI_Initialized"), dlsym(mpi, "MPI_Comm_rank"), dlsym(mpi, "MPI_Comm_size"), dlsym(mpi, "MPI_Allgather")};
    void *w = dlsym(mpi, "ompi_mpi_comm_world"), *b = dlsym(mpi, "ompi_mpi_byte"); /* mpi_abi.h: handles are their addresses */
    dlclose(mpi); /* RTLD_NOLOAD took a reference; the process's own keeps it loaded */
    if (!f[0] || !f[1] || !f[2] || !f[3] || !w || !b) return -1;
    memcpy(&N.Initialized, &f[0], sizeof f[0]);
    memcpy(&N.Comm_rank, &f[1], sizeof f[1]);
    memcpy(&N.Comm_size, &f[2], sizeof f[2]);
    memcpy(&N.Allgather, &f[3], sizeof f[3]);
    N.world = w, N.byte = b;
    int up = 0;
    if (N.Initialized(&up) || !up) {
        N.Allgather = NULL;
        return -1;
    }
    return 0;
}

EXPORT int ncclGetVersion(int *version) {
    if (!version) return N_INVALID_ARGUMENT;
    *version = VERSION_CODE;
    return N_SUCCESS;
}

EXPORT const char *ncclGetErrorString(int r) {
    switch (r) {
    case N_SUCCESS: return "no error";
    case N_UNHANDLED_CUDA_ERROR: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case N_SYSTEM_ERROR: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case N_INTERNAL_ERROR: return "internal error - please report this issue to the NCCL developers";
    case N_INVALID_ARGUMENT: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case N_INVALID_USAGE: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case 6: return "remote process exited or there was a network error";
    case 7: return "NCCL operation in progress";
    }
    return "unknown result code";
}

/* The id: the magic, then 16 bytes that differ per call (NCCL's holds the bootstrap address). */
EXPORT int ncclGetUniqueId(UniqueId *id) {
    if (!id) return N_INVALID_ARGUMENT;
    memset(id, 0, sizeof *id);
    memcpy(id->internal, magic, strlen(magic));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static unsigned counter;
    uint64_t tag[2] = {(uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, ((uint64_t)getpid() << 32) | ++counter};
    memcpy(id->internal + 32, tag, sizeof tag);
    return N_SUCCESS;
}

/* What every rank contributes at initialization, so that every rank reaches the same verdict. */
typedef struct {
    char id[ID_BYTES];
    int rank, nranks;
} Join;

EXPORT int ncclCommInitRank(Comm **comm, int nranks, UniqueId id, int rank) {
    if (!comm) return N_INVALID_ARGUMENT;
    *comm = NULL;
    if (nranks < 1 || rank < 0 || rank >= nranks) return say("ncclCommInitRank: rank %d is outside 0..nranks-1 (nranks %d)", rank, nranks), N_INVALID_ARGUMENT;
    if (memcmp(id.internal, magic, strlen(magic))) return say("ncclCommInitRank: the id did not come from ncclGetUniqueId"), N_INVALID_ARGUMENT;
    if (find_driver()) return say("ncclCommInitRank: the libcuda double is not loaded: failing as with no GPU"), N_UNHANDLED_CUDA_ERROR;
    if (ncomms == MAX_COMMS) return say("ncclCommInitRank: more than %d communicators in one process", MAX_COMMS), N_SYSTEM_ERROR;
    if (nranks > 1) {
        if (find_mpi()) {
            say("ncclCommInitRank: %d ranks, and this process has no initialized MPI: the double's transport is MPI "
                "(run under mpirun; fp8c's dist.c initializes it)", nranks);
            return N_SYSTEM_ERROR;
        }
        int wr = -1, ws = -1;
        N.Comm_rank(N.world, &wr);
        N.Comm_size(N.world, &ws);
        Join mine, *all = malloc((size_t)ws * sizeof *all);
        if (!all) return N_SYSTEM_ERROR;
        memcpy(mine.id, id.internal, ID_BYTES);
        mine.rank = rank, mine.nranks = nranks;
        if (N.Allgather(&mine, (int)sizeof mine, N.byte, all, (int)sizeof mine, N.byte, N.world)) return free(all), N_SYSTEM_ERROR;
        int bad = 0;
        for (int r = 0; r < ws; r++)
            bad |= all[r].rank != r || all[r].nranks != ws || memcmp(all[r].id, all[0].id, ID_BYTES);
        free(all);
        if (bad) {
            say("ncclCommInitRank: every MPI rank must join one communicator of all of MPI_COMM_WORLD, with NCCL rank = MPI rank "
                "and the same unique id (the double cannot build sub-communicators)");
            return N_INVALID_USAGE;
        }
    }
    if (!N.announced++)
        fprintf(stderr, "fp8c-test-double: libnccl double (no GPU): %d rank%s, collectives on the libcuda double's streams, "
                "MPI underneath, rank-order sums\n", nranks, nranks > 1 ? "s" : "");
    Comm *c = &comms[ncomms++];
    *c = (Comm){.live = 1, .rank = rank, .nranks = nranks};
    *comm = c;
    return N_SUCCESS;
}

static int comm_ok(const Comm *c) { return c && c >= comms && c < comms + ncomms && c->live; }

static int comm_end(Comm *c, const char *how) {
    if (!comm_ok(c)) return N_INVALID_ARGUMENT;
    fprintf(stderr, "fp8c-test-double: libnccl double: rank %d of %d %s: %ld all-reduces, %ld all-gathers, %.0f bytes\n", c->rank, c->nranks,
            how, c->allreduces, c->allgathers, c->bytes);
    c->live = 0;
    return N_SUCCESS;
}

EXPORT int ncclCommDestroy(Comm *c) { return comm_end(c, "destroyed"); }
EXPORT int ncclCommAbort(Comm *c) { return comm_end(c, "aborted"); }

/* Groups only bracket calls; the double's collectives do not wait on each other. */
EXPORT int ncclGroupStart(void) {
    N.group_depth++;
    return N_SUCCESS;
}

EXPORT int ncclGroupEnd(void) {
    if (N.group_depth < 1) return N_INVALID_USAGE;
    N.group_depth--;
    return N_SUCCESS;
}

/* ccl.c resolves these, fp8c does not call them: refused, not faked. */
EXPORT int ncclSend(const void *buf, size_t count, int type, int peer, Comm *c, void *stream) {
    (void)buf, (void)count, (void)type, (void)peer, (void)c, (void)stream;
    say("ncclSend is not implemented by the double (fp8c does not call it)");
    return N_INVALID_USAGE;
}

EXPORT int ncclRecv(void *buf, size_t count, int type, int peer, Comm *c, void *stream) {
    (void)buf, (void)count, (void)type, (void)peer, (void)c, (void)stream;
    say("ncclRecv is not implemented by the double (fp8c does not call it)");
    return N_INVALID_USAGE;
}

/* ---- the collectives, run at the stream's synchronization ------------------------------------------- */

typedef struct {
    Comm *c;
    int gather;              /* 0 all-reduce (sum), 1 all-gather */
    int type;
    const void *send;
    void *recv;
    size_t count;            /* elements per rank */
} Job;

#define WINDOW_BYTES ((size_t)1 << 24) /* per rank per exchange: bounded scratch, counts within MPI's int */

/* [lo, lo + w) of every rank's send buffer, rank after rank, into all. */
static int exchange(const Job *j, size_t lo, size_t w, char *all, char *err, size_t errlen) {
    size_t es = type_bytes[j->type];
    if (j->c->nranks == 1) {
        memcpy(all, (const char *)j->send + lo * es, w * es);
        return 0;
    }
    int rc = N.Allgather((const char *)j->send + lo * es, (int)(w * es), N.byte, all, (int)(w * es), N.byte, N.world);
    if (rc) snprintf(err, errlen, "the MPI all-gather under the double failed (MPI error %d)", rc);
    return rc ? -1 : 0;
}

static int run_job(const void *arg, char *err, size_t errlen) {
    const Job *j = arg;
    if (!comm_ok(j->c)) return snprintf(err, errlen, "the communicator was destroyed before this collective ran"), -1;
    int n = j->c->nranks;
    size_t es = type_bytes[j->type], step = WINDOW_BYTES / es, w0 = j->count < step ? j->count : step;
    char *all = malloc(w0 * es * (size_t)n);
    if (!all) return snprintf(err, errlen, "out of host memory"), -1;
    for (size_t lo = 0; lo < j->count; lo += step) {
        size_t w = j->count - lo < step ? j->count - lo : step;
        if (exchange(j, lo, w, all, err, errlen)) return free(all), -1;
        if (j->gather) { /* rank r's window goes to recv + r * count */
            for (int r = 0; r < n; r++) memcpy((char *)j->recv + ((size_t)r * j->count + lo) * es, all + (size_t)r * w * es, w * es);
            continue;
        }
        for (size_t i = 0; i < w; i++) {
            if (j->type == T_FLOAT32) {
                const float *x = (const float *)all;
                float acc = x[i];
                for (int r = 1; r < n; r++) acc += x[(size_t)r * w + i];
                ((float *)j->recv)[lo + i] = acc;
            } else {
                const uint16_t *x = (const uint16_t *)all;
                float acc = fp8c_bf16_to_f32(x[i]);
                for (int r = 1; r < n; r++) acc = fp8c_bf16_to_f32(fp8c_f32_to_bf16(acc + fp8c_bf16_to_f32(x[(size_t)r * w + i])));
                ((uint16_t *)j->recv)[lo + i] = fp8c_f32_to_bf16(acc);
            }
        }
    }
    free(all);
    return 0;
}

/* NCCL's argument checks (and the double's own limits), then the job on the stream. */
static int enqueue(const Job *j, void *stream, const char *name) {
    if (!comm_ok(j->c)) return say("%s: not a live communicator", name), N_INVALID_ARGUMENT;
    if (j->type < 0 || j->type >= T_NUM_TYPES) return say("%s: type %d is not an ncclDataType_t", name, j->type), N_INVALID_ARGUMENT;
    if (!j->gather && j->type != T_FLOAT32 && j->type != T_BFLOAT16)
        return say("%s: the double sums ncclFloat32 and ncclBfloat16 only (what fp8c reduces), not type %d", name, j->type), N_INVALID_USAGE;
    if (!j->count) return N_SUCCESS; /* NCCL: a zero-count collective is a no-op */
    size_t es = type_bytes[j->type], nr = (size_t)j->c->nranks, in = j->count * es, out = j->gather ? in * nr : in;
    /* NCCL checks both pointers against the CUDA pointer attributes: device memory */
    if (!j->send || !j->recv || !N.check(j->send, in) || !N.check(j->recv, out))
        return say("%s: a buffer is not device memory of that size (cudaPointerGetAttributes would refuse it)", name), N_INVALID_ARGUMENT;
    /* in place is send == recv (all-reduce) or send == recv + rank * count (all-gather); any other
     * overlap is undefined in NCCL, and refused here */
    const char *s = j->send, *r = j->recv, *inplace = j->gather ? r + (size_t)j->c->rank * in : r;
    if (s != inplace && s < r + out && r < s + in) return say("%s: send and receive buffers overlap without being in place", name), N_INVALID_USAGE;
    if (N.enqueue(stream, name, run_job, j, sizeof *j)) return N_UNHANDLED_CUDA_ERROR;
    if (j->gather) j->c->allgathers++;
    else j->c->allreduces++;
    j->c->bytes += (double)in;
    return N_SUCCESS;
}

EXPORT int ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, Comm *c, void *stream) {
    if (op < 0 || op >= OP_NUM_OPS) return say("ncclAllReduce: op %d is not an ncclRedOp_t", op), N_INVALID_ARGUMENT; /* nor a custom (PreMulSum) op */
    if (op != OP_SUM) return say("ncclAllReduce: the double implements ncclSum only (what fp8c reduces), not op %d", op), N_INVALID_USAGE;
    Job j = {c, 0, type, send, recv, count};
    return enqueue(&j, stream, "ncclAllReduce");
}

EXPORT int ncclAllGather(const void *send, void *recv, size_t count, int type, Comm *c, void *stream) {
    Job j = {c, 1, type, send, recv, count};
    return enqueue(&j, stream, "ncclAllGather");
}
