/* test_nccl_double.c: the NCCL double on its own (tests/cudadouble/README.md, "The NCCL double").
 * It loads the driver double and the NCCL double by path, as fp8c's dlopen would find them, and
 * checks each rule the README states: arithmetic (FP32 and BF16 sums in rank order, the all-gather
 * in rank order), deferral to the stream's synchronization, capture and replay, and the refusals.
 *   test_nccl_double DIR                    one rank (nranks 1), plus the no-MPI refusal
 *   mpirun -np 2 test_nccl_double DIR       two ranks over MPI (tests/dist/run.sh runs this)
 * Under mpirun every rank checks every case and the verdicts are all-gathered: rank 0 prints one
 * PASS or FAIL line per case, FAIL if any rank failed.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"

/* nccl.h values (the double has its own copy; these are the test's) */
enum { SUCCESS = 0, SYSTEM_ERROR = 2, INVALID_ARGUMENT = 4, INVALID_USAGE = 5 };
enum { UINT8 = 1, FLOAT32 = 7, FLOAT64 = 8, BFLOAT16 = 9 };
enum { SUM = 0, MAX = 2 };

typedef unsigned long long Dptr;
typedef struct {
    char internal[128];
} Id;

static int (*Init)(unsigned);
static int (*Retain)(void **, int);
static int (*SetCurrent)(void *);
static int (*MemAlloc)(Dptr *, size_t);
static int (*HtoD)(Dptr, const void *, size_t, void *);
static int (*DtoH)(void *, Dptr, size_t, void *);
static int (*StreamCreate)(void **, unsigned);
static int (*StreamSync)(void *);
static int (*BeginCapture)(void *, int);
static int (*EndCapture)(void *, void **);
static int (*Instantiate)(void **, void *, unsigned long long);
static int (*GraphLaunch)(void *, void *);

static int (*GetVersion)(int *);
static int (*GetUniqueId)(Id *);
static int (*CommInitRank)(void **, int, Id, int);
static int (*CommDestroy)(void *);
static int (*AllReduce)(const void *, void *, size_t, int, int, void *, void *);
static int (*AllGather)(const void *, void *, size_t, int, void *, void *);
static int (*Send)(const void *, size_t, int, int, void *, void *);

/* MPI, under mpirun (Open MPI's handles are the addresses of these objects: runtime/mpi_abi.h) */
static int (*MpiInit)(int *, char ***);
static int (*MpiFinalize)(void);
static int (*MpiRank)(void *, int *);
static int (*MpiSize)(void *, int *);
static int (*MpiBcast)(void *, int, void *, int, void *);
static int (*MpiAllgather)(const void *, int, void *, void *, int, void *, void *);
static void *world, *mbyte;
static int rank, nranks = 1, npass, nfail;

static void check(int ok, const char *name, const char *why) {
    int all[64] = {0};
    if (nranks > 1) {
        MpiAllgather(&ok, 4, mbyte, all, 4, mbyte, world);
        for (int r = 0; r < nranks; r++) ok &= all[r];
    }
    if (rank) return;
    if (ok) printf("PASS %s (%d rank%s)\n", name, nranks, nranks > 1 ? "s" : ""), npass++;
    else printf("FAIL %s (%d ranks): %s\n", name, nranks, why), nfail++;
}

static int load(void *lib, void *slot, const char *name) {
    void *f = dlsym(lib, name);
    if (!f) printf("FAIL nccl_double_load: no %s\n", name);
    memcpy(slot, &f, sizeof f);
    return f ? 0 : -1;
}

static void *proc(int (*gp)(const char *, void **, int, unsigned long long, int *), const char *name) {
    void *f = NULL;
    int st;
    gp(name, &f, 12000, 0, &st);
    return f;
}

#define PROC(var, name) memcpy(&var, &(void *){proc(gp, name)}, sizeof(void *))

static int start_mpi(void) {
    if (!getenv("OMPI_COMM_WORLD_SIZE")) return 0;
    void *m = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!m) return printf("FAIL nccl_double_mpi: libmpi.so.40: %s\n", dlerror()), -1;
    if (load(m, &MpiInit, "MPI_Init") || load(m, &MpiFinalize, "MPI_Finalize") || load(m, &MpiRank, "MPI_Comm_rank") ||
        load(m, &MpiSize, "MPI_Comm_size") || load(m, &MpiBcast, "MPI_Bcast") || load(m, &MpiAllgather, "MPI_Allgather"))
        return -1;
    world = dlsym(m, "ompi_mpi_comm_world"), mbyte = dlsym(m, "ompi_mpi_byte");
    if (!world || !mbyte || MpiInit(NULL, NULL)) return printf("FAIL nccl_double_mpi: MPI_Init\n"), -1;
    MpiRank(world, &rank);
    MpiSize(world, &nranks);
    if (nranks > 64) return printf("FAIL nccl_double_mpi: at most 64 ranks\n"), -1;
    return 0;
}

/* rank r's element i: full mantissas, magnitudes 1, 16, 256 by rank, so that from 3 ranks on the
 * FP32 sum depends on the order of the additions (the test counts the elements where it does) */
static float val(int r, int i) { return (float)((r * 7919 + i * 104729) % 10007) / 997.0f * (float)(1 << (r % 3 * 4)) - 5.0f; }

static void *stream;

static Dptr dev(const void *h, size_t n) {
    Dptr d;
    MemAlloc(&d, n);
    if (h) HtoD(d, h, n, stream);
    return d;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_nccl_double DIR   (DIR holds libcuda.so.1 and libnccl.so.2)\n");
        return 2;
    }
    if (start_mpi()) return 1;
    char path[1200];
    snprintf(path, sizeof path, "%s/libcuda.so.1", argv[1]);
    void *cu = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    snprintf(path, sizeof path, "%s/libnccl.so.2", argv[1]);
    void *nc = cu ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!cu || !nc) return printf("FAIL nccl_double_load: %s\n", dlerror()), 1;
    int (*gp)(const char *, void **, int, unsigned long long, int *);
    if (load(cu, &gp, "cuGetProcAddress_v2") || load(nc, &GetVersion, "ncclGetVersion") || load(nc, &GetUniqueId, "ncclGetUniqueId") ||
        load(nc, &CommInitRank, "ncclCommInitRank") || load(nc, &CommDestroy, "ncclCommDestroy") ||
        load(nc, &AllReduce, "ncclAllReduce") || load(nc, &AllGather, "ncclAllGather") || load(nc, &Send, "ncclSend"))
        return 1;
    PROC(Init, "cuInit");
    PROC(Retain, "cuDevicePrimaryCtxRetain");
    PROC(SetCurrent, "cuCtxSetCurrent");
    PROC(MemAlloc, "cuMemAlloc");
    PROC(HtoD, "cuMemcpyHtoDAsync");
    PROC(DtoH, "cuMemcpyDtoHAsync");
    PROC(StreamCreate, "cuStreamCreate");
    PROC(StreamSync, "cuStreamSynchronize");
    PROC(BeginCapture, "cuStreamBeginCapture");
    PROC(EndCapture, "cuStreamEndCapture");
    PROC(Instantiate, "cuGraphInstantiateWithFlags");
    PROC(GraphLaunch, "cuGraphLaunch");
    void *ctx;
    Id id;
    int v = 0;
    check(!GetVersion(&v) && v >= 20700, "nccl_01_version", "ncclGetVersion failed or older than 2.7");
    void *comm = NULL;
    Init(0);
    Retain(&ctx, 0);
    SetCurrent(ctx);
    StreamCreate(&stream, 1);

    /* 2. initialization: rank 0's id, broadcast; bad arguments refused */
    GetUniqueId(&id);
    if (nranks > 1) MpiBcast(&id, sizeof id, mbyte, 0, world);
    Id zero;
    memset(&zero, 0, sizeof zero);
    int bad = CommInitRank(NULL, nranks, id, rank) == INVALID_ARGUMENT && CommInitRank(&comm, nranks, id, nranks) == INVALID_ARGUMENT &&
              CommInitRank(&comm, nranks, zero, rank) == INVALID_ARGUMENT;
    int r = CommInitRank(&comm, nranks, id, rank);
    check(bad && !r && comm, "nccl_02_init", "refusals (NULL comm, rank >= nranks, an id not from ncclGetUniqueId) or the join failed");
    if (r) return printf("%d passed, %d failed\n", npass, nfail), 1;

    /* 3. FP32 all-reduce, out of place: deferred until the stream's synchronization, then the rank-order sum */
    enum { n = 1000 };
    static float x[n], got[n], want[n];
    for (int i = 0; i < n; i++) x[i] = val(rank, i), got[i] = -1;
    Dptr dx = dev(x, sizeof x), dy = dev(got, sizeof got);
    StreamSync(stream);
    r = AllReduce((void *)(uintptr_t)dx, (void *)(uintptr_t)dy, n, FLOAT32, SUM, comm, stream);
    int deferred = ((float *)(uintptr_t)dy)[0] == -1.0f; /* the double's device memory is host memory */
    DtoH(got, dy, sizeof got, stream);
    int sync = StreamSync(stream);
    int order = 0; /* elements whose reverse-order sum differs: the check below can see the order */
    for (int i = 0; i < n; i++) {
        float rev = val(nranks - 1, i);
        for (int k = nranks - 2; k >= 0; k--) rev += val(k, i);
        want[i] = val(0, i);
        for (int k = 1; k < nranks; k++) want[i] += val(k, i);
        order += rev != want[i];
    }
    check(!r && deferred, "nccl_03_deferred_to_sync", "the all-reduce ran before the stream was synchronized");
    check(!sync && !memcmp(got, want, sizeof got) && (nranks < 3 || order > 0), "nccl_04_allreduce_f32",
          "the FP32 sum is not the rank-order sum");

    /* 5. BF16 all-reduce, in place: rounded to BF16 after every addition */
    static uint16_t xb[n], gb[n];
    int rounds = 0;
    for (int i = 0; i < n; i++) xb[i] = fp8c_f32_to_bf16(val(rank, i) * 3.0f + 0.00390625f * (float)i);
    Dptr db = dev(xb, sizeof xb);
    r = AllReduce((void *)(uintptr_t)db, (void *)(uintptr_t)db, n, BFLOAT16, SUM, comm, stream);
    DtoH(gb, db, sizeof gb, stream);
    sync = StreamSync(stream);
    int ok = !r && !sync;
    for (int i = 0; i < n; i++) {
        float acc = fp8c_bf16_to_f32(fp8c_f32_to_bf16(val(0, i) * 3.0f + 0.00390625f * (float)i)), exact = acc;
        for (int k = 1; k < nranks; k++) {
            float t = fp8c_bf16_to_f32(fp8c_f32_to_bf16(val(k, i) * 3.0f + 0.00390625f * (float)i));
            exact += t;
            acc = fp8c_bf16_to_f32(fp8c_f32_to_bf16(acc + t));
        }
        ok &= gb[i] == fp8c_f32_to_bf16(acc);
        rounds += acc != exact;
    }
    check(ok && (nranks == 1 || rounds > 0), "nccl_05_allreduce_bf16",
          "the BF16 sum is not the rank-order sum rounded per addition (from 3 ranks on, rounding once at the end differs)");

    /* 6. all-gather, out of place and in place: rank r's bytes at r * count */
    enum { m = 300 };
    static unsigned char mine[m], all[64 * m];
    for (int i = 0; i < m; i++) mine[i] = (unsigned char)(rank * 31 + i);
    Dptr ds = dev(mine, m), dg = dev(NULL, (size_t)nranks * m), dgi = dev(NULL, (size_t)nranks * m);
    HtoD(dgi + (Dptr)rank * m, mine, m, stream);
    r = AllGather((void *)(uintptr_t)ds, (void *)(uintptr_t)dg, m, UINT8, comm, stream);
    int r2 = AllGather((void *)(uintptr_t)(dgi + (Dptr)rank * m), (void *)(uintptr_t)dgi, m, UINT8, comm, stream);
    DtoH(all, dg, (size_t)nranks * m, stream);
    sync = StreamSync(stream);
    ok = !r && !r2 && !sync;
    for (int k = 0; k < nranks; k++)
        for (int i = 0; i < m; i++) ok &= all[k * m + i] == (unsigned char)(k * 31 + i);
    DtoH(all, dgi, (size_t)nranks * m, stream);
    StreamSync(stream);
    for (int k = 0; k < nranks; k++)
        for (int i = 0; i < m; i++) ok &= all[k * m + i] == (unsigned char)(k * 31 + i);
    check(ok, "nccl_06_allgather", "the gathered bytes are not every rank's in rank order");

    /* 7. captured into a graph and replayed: each launch reduces what the buffer holds then */
    void *g = NULL, *exec = NULL;
    static float h1[n], h2[n], y[n];
    int cap = BeginCapture(stream, 1) || AllReduce((void *)(uintptr_t)dx, (void *)(uintptr_t)dy, n, FLOAT32, SUM, comm, stream) ||
              EndCapture(stream, &g) || Instantiate(&exec, g, 0);
    for (int i = 0; i < n; i++) y[i] = 2.0f * x[i];
    if (!cap) {
        GraphLaunch(exec, stream);
        DtoH(h1, dy, sizeof h1, stream);
        HtoD(dx, y, sizeof y, stream);
        GraphLaunch(exec, stream);
        DtoH(h2, dy, sizeof h2, stream);
        cap = StreamSync(stream);
    }
    ok = !cap && !memcmp(h1, want, sizeof h1);
    for (int i = 0; i < n; i++) ok &= h2[i] == 2.0f * want[i]; /* doubling is exact, so the doubled sum is the sum doubled */
    check(ok, "nccl_07_capture_replay", "a captured all-reduce did not run at each replay on the buffer's contents then");

    /* 8. refusals, with NCCL's statuses; nothing is queued */
    void *p = (void *)(uintptr_t)dx;
    ok = AllReduce(p, p, n, FLOAT32, SUM, NULL, stream) == INVALID_ARGUMENT && /* no communicator */
         AllReduce(p, p, n, 99, SUM, comm, stream) == INVALID_ARGUMENT &&        /* not a type */
         AllReduce(p, p, n, FLOAT32, 42, comm, stream) == INVALID_ARGUMENT &&    /* not an op */
         AllReduce(p, p, n, FLOAT64, SUM, comm, stream) == INVALID_USAGE &&      /* a type the double does not sum */
         AllReduce(p, p, n, FLOAT32, MAX, comm, stream) == INVALID_USAGE &&      /* an op it does not implement */
         AllReduce(x, x, n, FLOAT32, SUM, comm, stream) == INVALID_ARGUMENT &&   /* host memory */
         AllReduce(p, p, 2 * n, FLOAT32, SUM, comm, stream) == INVALID_ARGUMENT && /* past the allocation */
         AllReduce(p, (char *)p + 4, n - 1, FLOAT32, SUM, comm, stream) == INVALID_USAGE && /* overlap, not in place */
         AllGather(p, p, n, FLOAT32, comm, stream) == (nranks > 1 ? INVALID_ARGUMENT : SUCCESS) && /* recv too small for N > 1 */
         Send(p, 1, FLOAT32, 0, comm, stream) == INVALID_USAGE &&
         AllReduce(p, p, 0, FLOAT32, SUM, comm, stream) == SUCCESS; /* zero elements: a no-op */
    check(ok && !StreamSync(stream), "nccl_08_refusals", "an argument NCCL refuses (or the double does not implement) was accepted");

    /* 9. a destroyed communicator: refused at the call, and a graph that still holds it fails when it runs */
    r = CommDestroy(comm);
    ok = !r && AllReduce(p, p, n, FLOAT32, SUM, comm, stream) == INVALID_ARGUMENT && CommDestroy(comm) == INVALID_ARGUMENT;
    check(ok && !GraphLaunch(exec, stream) && StreamSync(stream) != 0, "nccl_09_destroyed",
          "a destroyed communicator was usable, or its captured collective ran");

    /* 10. one process, more ranks than MPI has: refused, never a hang */
    if (nranks == 1) {
        GetUniqueId(&id);
        check(CommInitRank(&comm, 2, id, 0) == SYSTEM_ERROR, "nccl_10_no_mpi_no_peers",
              "a 2-rank communicator in a process without MPI did not fail with ncclSystemError");
    }
    if (!rank) printf("%d passed, %d failed\n", npass, nfail);
    if (nranks > 1) MpiFinalize();
    return nfail != 0;
}
