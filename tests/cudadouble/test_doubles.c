/* test_doubles.c: the test-double driver and cuBLASLt on their own (tests/cudadouble). They are
 * loaded by path, as fp8c would load them, and driven through cuGetProcAddress_v2 and the
 * cublasLt* symbols; each numbered case checks one behaviour the README promises: deferred
 * streams, capture and replay, the driver's refusals, the cuBLASLt rules with their statuses, and
 * the GEMM arithmetic (FP32, BF16 with bias and beta, FP8 SCALAR / VEC128 / BLK128x128 with the
 * layouts of the cuBLAS docs section 3.1.4.5.1) against plain loops written here.
 *   test_doubles DIR   (DIR holds libcuda.so.1 and libcublasLt.so.13)
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp8.h"

typedef int (*GetProc)(const char *, void **, int, unsigned long long, int *);
static GetProc gp;
static int npass, nfail;

static void check(int ok, const char *name, const char *why) {
    if (ok) printf("PASS %s\n", name), npass++;
    else printf("FAIL %s: %s\n", name, why), nfail++;
}

static void *proc(const char *name) {
    void *f = NULL;
    int st = -1;
    gp(name, &f, 12000, 0, &st);
    return f;
}

/* driver entry points (cuda_abi.h's types: CUresult int, CUdeviceptr unsigned long long) */
typedef unsigned long long Dptr;
static int (*Init)(unsigned);
static int (*Retain)(void **, int);
static int (*SetCurrent)(void *);
static int (*MemAlloc)(Dptr *, size_t);
static int (*MemFree)(Dptr);
static int (*HtoD)(Dptr, const void *, size_t, void *);
static int (*DtoH)(void *, Dptr, size_t, void *);
static int (*Memset)(Dptr, unsigned char, size_t, void *);
static int (*StreamCreate)(void **, unsigned);
static int (*StreamSync)(void *);
static int (*BeginCapture)(void *, int);
static int (*EndCapture)(void *, void **);
static int (*Instantiate)(void **, void *, unsigned long long);
static int (*GraphLaunch)(void *, void *);
static int (*GraphDestroy)(void *);
static int (*LoadData)(void **, const void *);

/* cuBLASLt */
static int (*LtCreate)(void **);
static int (*DescCreate)(void **, int, int);
static int (*DescSet)(void *, int, const void *, size_t);
static int (*LayoutCreate)(void **, int, uint64_t, uint64_t, int64_t);
static int (*PrefCreate)(void **);
static int (*PrefSet)(void *, int, const void *, size_t);
static int (*Heuristic)(void *, void *, void *, void *, void *, void *, void *, int, void *, int *);
static int (*Matmul)(void *, void *, const void *, const void *, void *, const void *, void *, const void *, const void *, void *, void *, void *,
                     const void *, void *, size_t, void *);

#define LOAD(lib, var, name)                                                                        \
    do {                                                                                           \
        void *f_ = dlsym(lib, name);                                                               \
        if (!f_) {                                                                                 \
            printf("FAIL doubles_load: %s has no %s\n", #lib, name);                               \
            return 1;                                                                              \
        }                                                                                          \
        memcpy(&var, &f_, sizeof f_);                                                              \
    } while (0)
#define PROC(var, name) memcpy(&var, &(void *){proc(name)}, sizeof(void *))

enum { T_F32 = 0, T_BF16 = 14, T_E4M3 = 28, T_E5M2 = 29 };

/* One GEMM through the double, synchronously: D (m x n, ld m) = alpha op(A) op(B) + beta C (+ bias).
 * Returns the first non-zero status (heuristic or matmul), 0 when it ran. */
typedef struct {
    int ta, tb, type_a, type_b, type_d, m, n, k, lda, ldb;
    int amode, bmode, epi, bias_type;
    float alpha, beta;
} G;

static void *handle, *stream;

static int gemm(const G *g, Dptr A, Dptr B, Dptr D, Dptr as, Dptr bs, Dptr bias) {
    void *op, *Ad, *Bd, *Dd, *pref;
    DescCreate(&op, 68, 0);
    DescSet(op, 3, &g->ta, 4);
    DescSet(op, 4, &g->tb, 4);
    if (g->type_a == T_E4M3 || g->type_a == T_E5M2) {
        const void *pa = (void *)(uintptr_t)as, *pb = (void *)(uintptr_t)bs;
        DescSet(op, 31, &g->amode, 4);
        DescSet(op, 32, &g->bmode, 4);
        DescSet(op, 17, &pa, sizeof pa);
        DescSet(op, 18, &pb, sizeof pb);
    }
    uint32_t epi = g->epi ? (uint32_t)g->epi : 1;
    DescSet(op, 7, &epi, 4);
    if (epi == 4) {
        const void *pb = (void *)(uintptr_t)bias;
        DescSet(op, 8, &pb, sizeof pb);
        DescSet(op, 26, &g->bias_type, 4);
    }
    LayoutCreate(&Ad, g->type_a, g->ta ? (uint64_t)g->k : (uint64_t)g->m, g->ta ? (uint64_t)g->m : (uint64_t)g->k, g->lda);
    LayoutCreate(&Bd, g->type_b, g->tb ? (uint64_t)g->n : (uint64_t)g->k, g->tb ? (uint64_t)g->k : (uint64_t)g->n, g->ldb);
    LayoutCreate(&Dd, g->type_d, (uint64_t)g->m, (uint64_t)g->n, g->m);
    PrefCreate(&pref);
    unsigned char res[96 * 4];
    int got = 0;
    int st = Heuristic(handle, op, Ad, Bd, Dd, Dd, pref, 4, res, &got);
    if (st) return st;
    st = Matmul(handle, op, &g->alpha, (void *)(uintptr_t)A, Ad, (void *)(uintptr_t)B, Bd, &g->beta, (void *)(uintptr_t)D, Dd,
                (void *)(uintptr_t)D, Dd, res, NULL, 0, stream);
    if (st) return st;
    return StreamSync(stream) ? -1 : 0;
}

static Dptr upload(const void *p, size_t n) {
    Dptr d;
    MemAlloc(&d, n);
    HtoD(d, p, n, stream);
    StreamSync(stream);
    return d;
}

static float e4m3(float x) { return fp8c_e4m3_to_f32(fp8c_f32_to_e4m3(x, 1)); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_doubles DIR\n");
        return 2;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/libcuda.so.1", argv[1]);
    void *cu = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    snprintf(path, sizeof path, "%s/libcublasLt.so.13", argv[1]);
    void *lt = cu ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!cu || !lt) {
        printf("FAIL doubles_load: %s\n", dlerror());
        return 1;
    }
    LOAD(cu, gp, "cuGetProcAddress_v2");
    PROC(Init, "cuInit");
    PROC(Retain, "cuDevicePrimaryCtxRetain");
    PROC(SetCurrent, "cuCtxSetCurrent");
    PROC(MemAlloc, "cuMemAlloc");
    PROC(MemFree, "cuMemFree");
    PROC(HtoD, "cuMemcpyHtoDAsync");
    PROC(DtoH, "cuMemcpyDtoHAsync");
    PROC(Memset, "cuMemsetD8Async");
    PROC(StreamCreate, "cuStreamCreate");
    PROC(StreamSync, "cuStreamSynchronize");
    PROC(BeginCapture, "cuStreamBeginCapture");
    PROC(EndCapture, "cuStreamEndCapture");
    PROC(Instantiate, "cuGraphInstantiateWithFlags");
    PROC(GraphLaunch, "cuGraphLaunch");
    PROC(GraphDestroy, "cuGraphDestroy");
    PROC(LoadData, "cuModuleLoadData");
    void *nope = (void *)1;
    int st = 0;
    int r = gp("cuNoSuchEntry", &nope, 12000, 0, &st);
    check(r == 500 && !nope && st == 1, "double_01_unknown_entry_point", "cuGetProcAddress_v2 of an unknown name is not CUDA_ERROR_NOT_FOUND");
    Dptr x;
    check(MemAlloc(&x, 64) == 3, "double_02_before_cuInit", "cuMemAlloc before cuInit is not CUDA_ERROR_NOT_INITIALIZED");
    Init(0);
    check(MemAlloc(&x, 64) == 201, "double_03_no_context", "cuMemAlloc without a current context is not CUDA_ERROR_INVALID_CONTEXT");
    void *ctx;
    Retain(&ctx, 0);
    SetCurrent(ctx);
    StreamCreate(&stream, 1);

    /* deferred streams: nothing happens before the synchronization */
    float host[4] = {1, 2, 3, 4}, back[4] = {0};
    MemAlloc(&x, sizeof host);
    HtoD(x, host, sizeof host, stream);
    DtoH(back, x, sizeof back, stream);
    int early = back[3] == 0;
    StreamSync(stream);
    check(early && back[3] == 4, "double_04_deferred_until_sync", "a copy completed before cuStreamSynchronize, or not after it");
    float fresh[4];
    Dptr y;
    MemAlloc(&y, sizeof fresh);
    DtoH(fresh, y, sizeof fresh, stream);
    StreamSync(stream);
    check(isnan(fresh[0]), "double_05_alloc_poisoned", "fresh device memory is not 0xFF bytes");
    check(HtoD(x, host, sizeof host + 4, stream) == 1, "double_06_copy_out_of_bounds", "a copy past the allocation is not INVALID_VALUE");

    /* capture: recorded, not run; sync during capture invalidates; replay runs the recorded work */
    check(BeginCapture(stream, 1) == 0, "double_07_begin_capture", "cuStreamBeginCapture failed");
    Memset(x, 0, sizeof host, stream);
    DtoH(back, x, sizeof back, stream);
    int synced = StreamSync(stream);
    void *graph = (void *)1;
    int ended = EndCapture(stream, &graph);
    check(synced == 900 && ended == 901 && !graph, "double_08_sync_invalidates_capture",
          "synchronizing a capturing stream is not STREAM_CAPTURE_UNSUPPORTED then INVALIDATED");
    HtoD(x, host, sizeof host, stream);
    StreamSync(stream);
    BeginCapture(stream, 1);
    Memset(x, 0, sizeof host, stream);
    DtoH(back, x, sizeof back, stream);
    EndCapture(stream, &graph);
    StreamSync(stream);
    int untouched = back[3] == 4;
    void *exec;
    Instantiate(&exec, graph, 0);
    GraphDestroy(graph);
    GraphLaunch(exec, stream);
    StreamSync(stream);
    check(untouched && back[3] == 0, "double_09_capture_and_replay", "captured work ran at capture, or did not run at cuGraphLaunch");
    BeginCapture(stream, 1);
    Dptr z;
    int alloc = MemAlloc(&z, 64);
    ended = EndCapture(stream, &graph);
    check(alloc == 900 && ended == 901, "double_12_alloc_during_capture",
          "cuMemAlloc during a thread-local capture is not STREAM_CAPTURE_UNSUPPORTED with the capture invalidated");
    check(LoadData(&(void *){0}, "not an image") == 200, "double_10_bad_image", "a non-image is not CUDA_ERROR_INVALID_IMAGE");

    /* cuBLASLt */
    LOAD(lt, LtCreate, "cublasLtCreate");
    LOAD(lt, DescCreate, "cublasLtMatmulDescCreate");
    LOAD(lt, DescSet, "cublasLtMatmulDescSetAttribute");
    LOAD(lt, LayoutCreate, "cublasLtMatrixLayoutCreate");
    LOAD(lt, PrefCreate, "cublasLtMatmulPreferenceCreate");
    LOAD(lt, PrefSet, "cublasLtMatmulPreferenceSetAttribute");
    LOAD(lt, Heuristic, "cublasLtMatmulAlgoGetHeuristic");
    LOAD(lt, Matmul, "cublasLtMatmul");
    check(LtCreate(&handle) == 0, "lt_01_create", "cublasLtCreate failed with the driver double loaded");
    void *op;
    DescCreate(&op, 68, 0);
    int8_t fa = 0;
    check(DescSet(op, 25, &fa, 4) == 7, "lt_02_attribute_size", "FAST_ACCUM with 4 bytes (it is int8_t) is not INVALID_VALUE");

    enum { M = 32, N = 16, K = 256 };
    static float a[M * K], b[N * K], d[M * N];
    static uint8_t a8[M * K], b8[N * K];
    for (int i = 0; i < M * K; i++) a[i] = e4m3((float)((i * 7) % 13 - 6) / 4), a8[i] = fp8c_f32_to_e4m3(a[i], 1);
    for (int i = 0; i < N * K; i++) b[i] = e4m3((float)((i * 5) % 11 - 5) / 8), b8[i] = fp8c_f32_to_e4m3(b[i], 1);
    /* FP32 NN: A m x k (ld m), B k x n (ld k) */
    Dptr dA = upload(a, sizeof a), dB = upload(b, sizeof b), dD = upload(d, sizeof d);
    G g = {0, 0, T_F32, T_F32, T_F32, M, N, K, M, K, 0, 0, 1, -1, 1.0f, 0.0f};
    st = gemm(&g, dA, dB, dD, 0, 0, 0);
    DtoH(d, dD, sizeof d, stream);
    StreamSync(stream);
    double worst = 0;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[i + k * M] * b[k + j * K];
            worst = fmax(worst, fabs(s - d[i + j * M]));
        }
    check(!st && worst < 1e-4, "lt_03_fp32_nn", "FP32 NN product differs from the plain loop");

    /* FP8 TN, A stored k x m (ld k), B k x n (ld k): the rules */
    Dptr dA8 = upload(a8, sizeof a8), dB8 = upload(b8, sizeof b8);
    float sc[4] = {0.5f, 0, 0, 0}, sc2[4] = {4.0f, 0, 0, 0};
    Dptr dsa = upload(sc, sizeof sc), dsb = upload(sc2, sizeof sc2);
    G f = {1, 0, T_E4M3, T_E4M3, T_F32, M, N, K, K, K, 0, 0, 1, -1, 1.0f, 0.0f};
    G bad = f;
    bad.ta = 0, bad.lda = M;
    check(gemm(&bad, dA8, dB8, dD, dsa, dsb, 0) == 15, "lt_04_fp8_needs_tn", "FP8 NN is not NOT_SUPPORTED (docs cublasLtMatmul: TN on sm_90)");
    bad = f;
    bad.type_b = T_E5M2, bad.type_a = T_E5M2;
    check(gemm(&bad, dA8, dB8, dD, dsa, dsb, 0) == 15, "lt_05_e5m2_x_e5m2", "E5M2 x E5M2 is not NOT_SUPPORTED (FP8 type table)");
    bad = f;
    bad.k = 248, bad.lda = bad.ldb = 256;
    check(gemm(&bad, dA8, dB8, dD, dsa, dsb, 0) == 7, "lt_06_fp8_k_multiple_of_16", "FP8 with K = 248 is not INVALID_VALUE (docs 2.1.11)");
    bad = f;
    bad.amode = bad.bmode = 5;
    check(gemm(&bad, dA8, dB8, dD, dsa, dsb, 0) == 15, "lt_07_blk_x_blk", "BLK128x128 x BLK128x128 is not NOT_SUPPORTED (docs 3.1.4.5)");
    bad = f;
    bad.amode = 4, bad.bmode = 4, bad.type_d = T_E4M3;
    check(gemm(&bad, dA8, dB8, dD, dsa, dsb, 0) == 15, "lt_08_fp8_d_with_vec128", "an FP8 D with VEC128 is not NOT_SUPPORTED (type table footnote)");

    /* FP8 SCALAR: D = sA sB A^T B */
    st = gemm(&f, dA8, dB8, dD, dsa, dsb, 0);
    DtoH(d, dD, sizeof d, stream);
    StreamSync(stream);
    worst = 0;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[k + i * K] * b[k + j * K];
            worst = fmax(worst, fabs(2.0 * s - d[i + j * M]));
        }
    check(!st && worst < 1e-3, "lt_09_fp8_scalar", "FP8 SCALAR_32F differs from sA*sB*A^T B");

    /* FP8 VEC128 (A) x BLK128x128 (B): sA(i,b) = sa[i + b*M], sB(j,b) = sb[b + (j/128)*L4] (docs 3.1.4.5.1) */
    enum { L = K / 128, L4 = 4 };
    static float sa[M * L], sb[L4 * 1];
    for (int i = 0; i < M * L; i++) sa[i] = (float)(1 + i % 5) / 4;
    for (int i = 0; i < L4; i++) sb[i] = i < L ? (float)(2 + i) : 1e30f; /* padding entries unused */
    Dptr dva = upload(sa, sizeof sa), dvb = upload(sb, sizeof sb);
    G v = f;
    v.amode = 4, v.bmode = 5;
    st = gemm(&v, dA8, dB8, dD, dva, dvb, 0);
    DtoH(d, dD, sizeof d, stream);
    StreamSync(stream);
    worst = 0;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            double s = 0;
            for (int blk = 0; blk < L; blk++) {
                double p = 0;
                for (int k = blk * 128; k < blk * 128 + 128; k++) p += (double)a[k + i * K] * b[k + j * K];
                s += p * sa[i + blk * M] * sb[blk];
            }
            worst = fmax(worst, fabs(s - d[i + j * M]) / fmax(1.0, fabs(s)));
        }
    check(!st && worst < 1e-5, "lt_10_fp8_vec128_x_blk128", "VEC128 x BLK128x128 differs from the docs' formula");

    /* BF16 TN with BIAS and beta into BF16 D: D = A^T B + beta C + bias */
    static uint16_t ab[M * K], bb[N * K], db[M * N], biasb[M];
    for (int i = 0; i < M * K; i++) ab[i] = fp8c_f32_to_bf16(a[i]);
    for (int i = 0; i < N * K; i++) bb[i] = fp8c_f32_to_bf16(b[i]);
    for (int i = 0; i < M * N; i++) db[i] = fp8c_f32_to_bf16((float)(i % 3));
    for (int i = 0; i < M; i++) biasb[i] = fp8c_f32_to_bf16((float)i / 8);
    Dptr dAb = upload(ab, sizeof ab), dBb = upload(bb, sizeof bb), dDb = upload(db, sizeof db), dbias = upload(biasb, sizeof biasb);
    G h = {1, 0, T_BF16, T_BF16, T_BF16, M, N, K, K, K, 0, 0, 4, T_BF16, 1.0f, 0.5f};
    st = gemm(&h, dAb, dBb, dDb, 0, 0, dbias);
    static uint16_t out[M * N];
    DtoH(out, dDb, sizeof out, stream);
    StreamSync(stream);
    worst = 0;
    for (int j = 0; j < N; j++)
        for (int i = 0; i < M; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[k + i * K] * b[k + j * K];
            s += 0.5 * (double)((i + j * M) % 3) + (double)i / 8;
            worst = fmax(worst, fabs(s - fp8c_bf16_to_f32(out[i + j * M])) / fmax(1.0, fabs(s)));
        }
    check(!st && worst < 1.0 / 128, "lt_11_bf16_bias_beta", "BF16 with bias and beta differs by more than a bf16 rounding");
    check(MemFree(x) == 0 && MemFree(x) == 1, "double_11_double_free", "freeing twice is not INVALID_VALUE");
    printf("%d passed, %d failed\n", npass, nfail);
    return nfail != 0;
}
