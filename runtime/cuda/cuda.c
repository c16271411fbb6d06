/* cuda.c: the CUDA backend. The driver is opened with dlopen and every entry point is resolved
 * through cuGetProcAddress with an explicit ABI version (shared/notes/cuda-apis.md 3.1), so the
 * same fp8c binary runs on machines without a GPU and says so.
 *
 * Memory: one allocation per tensor class, carved by the plan's offsets (16-bit tensors are
 * real bf16/f16 here, unlike the CPU backend's float mirror), plus the kernels' scratch, the
 * cuBLASLt workspace and the device copy of the run state. Execution: the plan's launch schedule,
 * unit by unit, on one stream: each unit's "gpu" action (a kernel launch, a cuBLASLt GEMM or a
 * memset); the CPU backend runs the same units over the same offsets (compiler/schedule.c). Every
 * copy and memset goes on that stream too, synchronized where the host needs the data. After two
 * eager runs of a section with the same state, the section is captured as a CUDA graph and
 * replayed; values that change between steps live in device memory (run state, scales), so the
 * graph stays valid.
 *
 * The training loop (train.c) keeps the CPU backend's host memory as the mirror it reads and
 * writes (data in, losses and gradients out, checkpoints): cu_upload / cu_download convert
 * between the mirror's floats and the plan's dtypes. Must not: know what a transformer is.
 */
#include "cuda_backend.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cuda_abi.h"
#include "fp8.h"
#include "jit.h"
#include "lt.h"

struct CudaBackend {
    void *lib;
    Drv d;
    CUdevice dev;
    CUcontext ctx;
    CUstream stream;
    int sm;                      /* 89, 90, ... */
    char arch[16], name[256];
    const Plan *p;
    CUdeviceptr base[TC_COUNT];
    CUdeviceptr scratch, lt_ws, rs;
    size_t scratch_bytes, lt_ws_bytes;
    CUmodule *mods;
    CUfunction (*fn)[4];
    LtLib *lt;
    void *lt_handle;
    LtCall **lt_calls[SEC_COUNT]; /* per step, NULL when not a cuBLASLt GEMM */
    int weights_fresh;           /* FP8 weight copies were written by the fused AdamW */
    int eager_runs[SEC_COUNT][2];
    CUgraphExec graph[SEC_COUNT][2];
    int no_graphs;
    char err[1024];
};

static const char *cu_err(CudaBackend *b, CUresult r) {
    const char *s = NULL;
    if (b && b->d.GetErrorName) b->d.GetErrorName(r, &s);
    return s ? s : "CUDA_ERROR_UNKNOWN";
}

#define CK(call)                                                                                  \
    do {                                                                                          \
        CUresult rc_ = (call);                                                                    \
        if (rc_) {                                                                                \
            snprintf(err, errlen, "%s failed: %s (%d)", #call, cu_err(b, rc_), rc_);              \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)

/* Resolve every entry point at the ABI of CUDA 12.0 (cuGetProcAddress semantics, notes 3.1). */
static int load_driver(CudaBackend *b, char *err, size_t errlen) {
    b->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL); /* never libcuda.so: the toolkit stub */
    if (!b->lib) {
        snprintf(err, errlen, "no CUDA driver on this machine (libcuda.so.1: %s)", dlerror());
        return -1;
    }
    DrvGetProc gp;
    void *f = dlsym(b->lib, "cuGetProcAddress_v2");
    memcpy(&gp, &f, sizeof gp); /* POSIX: a dlsym result converts to a function pointer */
    if (!gp) {
        snprintf(err, errlen, "the CUDA driver is older than 12.0 (no cuGetProcAddress_v2): fp8c needs an R525+ driver");
        return -1;
    }
    struct {
        const char *name;
        void **slot;
    } syms[] = {
#define S(field, name, ver) {#name, (void **)&b->d.field},
        DRV_ENTRY_POINTS(S)
#undef S
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SUCCESS;
        /* ask at 12.0 so that renamed entry points (_v2) come back with their current ABI, the
         * version DRV_ENTRY_POINTS names (checked against cudaTypedefs.h) */
        CUresult r = gp(syms[i].name, syms[i].slot, DRV_ABI_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, &status);
        if (r != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || !*syms[i].slot) {
            snprintf(err, errlen, "the CUDA driver lacks %s (cuGetProcAddress status %d, result %d)", syms[i].name, (int)status, (int)r);
            return -1;
        }
    }
    return 0;
}

static int open_device(CudaBackend *b, char *err, size_t errlen) {
    if (load_driver(b, err, errlen)) return -1;
    CUresult r = b->d.Init(0);
    if (r) {
        snprintf(err, errlen, "cuInit failed: %s (%d)%s", cu_err(b, r), r,
                 r == CUDA_ERROR_NO_DEVICE      ? ": the driver sees no CUDA GPU"
                 : r == CUDA_ERROR_STUB_LIBRARY ? ": that is the toolkit's stub library, not a driver"
                                                : "");
        return -1;
    }
    int n = 0;
    CK(b->d.DeviceGetCount(&n));
    if (n < 1) {
        snprintf(err, errlen, "the CUDA driver sees no GPU");
        return -1;
    }
    CK(b->d.DeviceGet(&b->dev, 0));
    CK(b->d.DeviceGetName(b->name, sizeof b->name, b->dev));
    int maj = 0, min = 0;
    CK(b->d.DeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, b->dev));
    CK(b->d.DeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, b->dev));
    b->sm = maj * 10 + min;
    if (b->sm < 89) {
        snprintf(err, errlen, "%s is compute capability %d.%d; fp8c's kernels need FP8 (sm_89 or later)", b->name, maj, min);
        return -1;
    }
    /* wgmma and the block-scaled cuBLASLt modes need the arch-specific target on Hopper */
    snprintf(b->arch, sizeof b->arch, b->sm == 90 ? "sm_90a" : b->sm >= 100 && b->sm < 110 ? "sm_%da" : "sm_%d", b->sm);
    return 0;
}

int cu_probe(char *why, size_t n) {
    CudaBackend b;
    memset(&b, 0, sizeof b);
    int ok = open_device(&b, why, n) == 0;
    if (ok) snprintf(why, n, "%s (%s)", b.name, b.arch);
    if (b.lib) dlclose(b.lib);
    return ok;
}

/* ---- set-up ------------------------------------------------------------------------------------ */

/* Prebuilt DIR/cubin/NAME.ARCH.cubin where `fp8c build` made them, NVRTC (through the cache)
 * for the rest; then every entry point is looked up before any capture (lazy loading, notes 3.3). */
static int load_kernels(CudaBackend *b, char *err, size_t errlen) {
    const Plan *p = b->p;
    int nk = p->nkernels;
    int rc = -1;
    b->mods = calloc((size_t)(nk ? nk : 1), sizeof *b->mods);
    b->fn = calloc((size_t)(nk ? nk : 1), sizeof *b->fn);
    JitJob *jobs = calloc((size_t)(nk ? nk : 1), sizeof *jobs);
    int *need = calloc((size_t)(nk ? nk : 1), sizeof *need), nneed = 0;
    if (!b->mods || !b->fn || !jobs || !need) {
        snprintf(err, errlen, "out of host memory loading %d kernels", nk);
        goto done;
    }
    for (int i = 0; i < nk; i++) {
        char path[2300];
        snprintf(path, sizeof path, "%s/cubin/%s.%s.cubin", p->dir, p->kernels[i].name, b->arch);
        jobs[i].name = p->kernels[i].name;
        jobs[i].cubin = jit_read_file(path, &jobs[i].cubin_len);
        if (jobs[i].cubin) continue;
        snprintf(path, sizeof path, "%s/%s", p->dir, p->kernels[i].file);
        jobs[i].src = jit_read_file(path, NULL);
        if (!jobs[i].src) {
            snprintf(err, errlen, "cannot read %s (the plan's kernel source)", path);
            goto done;
        }
        need[nneed++] = i;
    }
    if (nneed) {
        char jerr[512], cbuf[2048];
        JitLib *j = jit_open(jerr, sizeof jerr);
        if (!j) {
            snprintf(err, errlen, "%d kernels are not prebuilt for %s and %s (run `fp8c build %s --arch %s` where NVRTC exists)", nneed,
                     b->arch, jerr, p->dir, b->arch);
            goto done;
        }
        JitJob *sub = calloc((size_t)nneed, sizeof *sub);
        if (!sub) {
            jit_close(j);
            snprintf(err, errlen, "out of host memory compiling %d kernels", nneed);
            goto done;
        }
        for (int k = 0; k < nneed; k++) sub[k] = jobs[need[k]];
        fprintf(stderr, "fp8c: compiling %d kernels for %s with NVRTC...\n", nneed, b->arch);
        int failed = jit_compile_all(j, sub, nneed, b->arch, jit_cache_dir(cbuf, sizeof cbuf), 0, rt_debug_level());
        for (int k = 0; k < nneed; k++) jobs[need[k]] = sub[k];
        free(sub);
        jit_close(j);
        if (failed) {
            for (int i = 0; i < nk; i++)
                if (jobs[i].src && !jobs[i].ok) {
                    snprintf(err, errlen, "NVRTC failed on %s/%s:\n%s", p->dir, p->kernels[i].file, jobs[i].err);
                    break;
                }
            goto done;
        }
    }
    for (int i = 0; i < nk; i++) {
        CUresult r = b->d.ModuleLoadData(&b->mods[i], jobs[i].cubin);
        if (r) {
            snprintf(err, errlen, "cuModuleLoadData(%s, %s) failed: %s (%d)", p->kernels[i].name, b->arch, cu_err(b, r), r);
            goto done;
        }
        for (int e = 0; e < p->kernels[i].ne; e++) {
            r = b->d.ModuleGetFunction(&b->fn[i][e], b->mods[i], p->kernels[i].e[e].symbol);
            if (r) {
                snprintf(err, errlen, "kernel %s has no entry %s: %s", p->kernels[i].name, p->kernels[i].e[e].symbol, cu_err(b, r));
                goto done;
            }
            /* above 48 KiB of dynamic shared memory a launch needs the opt-in, else it fails later */
            if (p->kernels[i].e[e].smem > 48 * 1024) {
                r = b->d.FuncSetAttribute(b->fn[i][e], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, p->kernels[i].e[e].smem);
                if (r) {
                    snprintf(err, errlen, "kernel %s entry %s: cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, %d) failed on %s: %s (%d)",
                             p->kernels[i].name, p->kernels[i].e[e].symbol, p->kernels[i].e[e].smem, b->arch, cu_err(b, r), r);
                    goto done;
                }
            }
        }
        if ((size_t)p->kernels[i].scratch > b->scratch_bytes) b->scratch_bytes = (size_t)p->kernels[i].scratch;
    }
    rc = 0;
done: /* the modules loaded so far stay in b->mods for cu_free */
    for (int i = 0; jobs && i < nk; i++) {
        jit_job_free(&jobs[i]);
        free((char *)jobs[i].src);
    }
    free(jobs);
    free(need);
    return rc;
}

static CUdeviceptr tensor_ptr(const CudaBackend *b, int id) {
    if (id < 0) return b->base[-1 - id];
    return b->base[b->p->t[id].cls] + (CUdeviceptr)b->p->t[id].offset;
}

static const void *ptr_or_null(const CudaBackend *b, int id) { return id >= 0 ? (const void *)(uintptr_t)tensor_ptr(b, id) : NULL; }

/* Descriptors and an algorithm for one step, retrying without the fused bias epilogue when no
 * algorithm takes it (block-scaled FP8, notes 1.9). */
static int build_call(CudaBackend *b, const RtStep *st, LtCall *c, char *lerr, size_t n) {
    LtGemm g;
    if (lt_describe(b->p, st, b->sm, &g, lerr, n)) return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        memset(c, 0, sizeof *c);
        if (lt_build(b->lt, &g, c, ptr_or_null(b, g.bias), ptr_or_null(b, g.a_scale), ptr_or_null(b, g.b_scale), lerr, n) == 0 &&
            lt_heuristic(b->lt, b->lt_handle, c, lerr, n) == 0)
            break;
        lt_call_free(b->lt, c);
        if (g.epilogue != LT_EPI_BIAS || attempt) return -1;
        lt_unfuse_bias(&g);
    }
    if (c->g.post_bias >= 0) {
        lt_call_free(b->lt, c);
        snprintf(lerr, n, "no cuBLASLt algorithm fuses this bias and fp8c has no separate bias-add kernel yet");
        return -1;
    }
    return 0;
}

/* cuBLASLt for the GEMM units; an FP8 GEMM it refuses runs on the plan's generated kernel if
 * there is one, and the refusal is reported. */
static int setup_gemms(CudaBackend *b, char *err, size_t errlen) {
    const Plan *p = b->p;
    char lerr[512];
    int any = 0;
    for (int s = 0; s < SEC_COUNT; s++)
        for (int i = 0; i < p->nunits[s]; i++) any |= p->units[s][i].gpu.gemm == 1;
    if (!any) return 0;
    if (lt_open(&b->lt, lerr, sizeof lerr) || lt_create_handle(b->lt, &b->lt_handle, lerr, sizeof lerr)) {
        snprintf(err, errlen, "cuBLASLt: %s", lerr);
        return -1;
    }
    b->lt_ws_bytes = b->sm >= 90 ? (32u << 20) : (4u << 20);
    CK(b->d.MemAlloc(&b->lt_ws, b->lt_ws_bytes));
    for (int s = 0; s < SEC_COUNT; s++) {
        b->lt_calls[s] = calloc((size_t)(p->nunits[s] ? p->nunits[s] : 1), sizeof(LtCall *));
        if (!b->lt_calls[s]) {
            snprintf(err, errlen, "out of host memory for the GEMM descriptors");
            return -1;
        }
        for (int i = 0; i < p->nunits[s]; i++) {
            RtUnit *u = &p->units[s][i];
            const RtStep *st = &p->steps[s][u->first];
            if (u->gpu.gemm != 1) continue;
            LtCall *c = calloc(1, sizeof *c);
            if (!c || build_call(b, st, c, lerr, sizeof lerr)) {
                free(c);
                if (st->op == OP_QGEMM && u->gpu.kernel >= 0) {
                    fprintf(stderr, "fp8c: note: %s unit %d runs on the generated FP8 GEMM: %s\n", fp8c_section_names[s], i, lerr);
                    u->gpu.gemm = 2;
                    continue;
                }
                snprintf(err, errlen, "%s unit %d (%s): %s", fp8c_section_names[s], i, fp8c_op_info[st->op].name, lerr);
                return -1;
            }
            b->lt_calls[s][i] = c;
        }
    }
    return 0;
}

CudaBackend *cu_init(const Plan *p, char *err, size_t errlen) {
    CudaBackend *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    b->p = p;
    b->no_graphs = getenv("FP8C_NO_GRAPHS") != NULL;
    if (open_device(b, err, errlen)) goto fail;
    if (p->nmissing) {
        snprintf(err, errlen, "%s has %d steps without a GPU kernel (compiled with --target cpu?): recompile with --target %s", p->dir,
                 p->nmissing, b->arch);
        goto fail;
    }
    CUresult r;
#define CKF(call)                                                                                  \
    do {                                                                                           \
        if ((r = (call))) {                                                                        \
            snprintf(err, errlen, "%s failed: %s (%d)", #call, cu_err(b, r), r);                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
    CKF(b->d.DevicePrimaryCtxRetain(&b->ctx, b->dev));
    CKF(b->d.CtxSetCurrent(b->ctx));
    CKF(b->d.StreamCreate(&b->stream, CU_STREAM_NON_BLOCKING));
    for (int c = 0; c < TC_COUNT; c++) {
        size_t bytes = (size_t)p->class_bytes[c] + 256;
        r = b->d.MemAlloc(&b->base[c], bytes);
        if (r) {
            snprintf(err, errlen, "cannot allocate %.2f GB for %s on %s: %s", (double)bytes / 1e9, fp8c_tensor_class_names[c], b->name,
                     cu_err(b, r));
            goto fail;
        }
    }
    CKF(b->d.MemAlloc(&b->rs, 256));
    if (load_kernels(b, err, errlen)) goto fail;
    if (b->scratch_bytes) CKF(b->d.MemAlloc(&b->scratch, b->scratch_bytes));
    if (setup_gemms(b, err, errlen)) goto fail;
#undef CKF
    fprintf(stderr, "fp8c: device: %s (%s), %d kernels, gemm %s\n", b->name, b->arch, p->nkernels, p->gemm);
    return b;
fail:
    cu_free(b);
    return NULL;
}

/* Teardown in the reverse order of creation (cu_init, then the graphs cu_run captures), all of
 * it while the primary context is retained and current: cublasLtDestroy, the module unloads and
 * the frees need it. Results are not checked: nothing can be done about a failure here. */
void cu_free(CudaBackend *b) {
    if (!b) return;
    if (b->ctx) {
        b->d.CtxSetCurrent(b->ctx);
        if (b->stream) b->d.StreamSynchronize(b->stream); /* nothing in flight reads what is freed below */
        for (int s = 0; s < SEC_COUNT; s++)
            for (int f = 0; f < 2; f++)
                if (b->graph[s][f]) b->d.GraphExecDestroy(b->graph[s][f]);
        for (int s = 0; s < SEC_COUNT; s++) {
            if (b->lt_calls[s])
                for (int i = 0; i < b->p->nunits[s]; i++)
                    if (b->lt_calls[s][i]) {
                        lt_call_free(b->lt, b->lt_calls[s][i]);
                        free(b->lt_calls[s][i]);
                    }
            free(b->lt_calls[s]);
        }
        if (b->lt_ws) b->d.MemFree(b->lt_ws);
        if (b->lt_handle) lt_destroy_handle(b->lt, b->lt_handle);
        lt_close(b->lt);
        if (b->scratch) b->d.MemFree(b->scratch);
        for (int i = b->p->nkernels - 1; b->mods && i >= 0; i--)
            if (b->mods[i]) b->d.ModuleUnload(b->mods[i]);
        if (b->rs) b->d.MemFree(b->rs);
        for (int c = TC_COUNT - 1; c >= 0; c--)
            if (b->base[c]) b->d.MemFree(b->base[c]);
        if (b->stream) b->d.StreamDestroy(b->stream);
        b->d.DevicePrimaryCtxRelease(b->dev);
    }
    free(b->mods);
    free(b->fn);
    if (b->lib) dlclose(b->lib);
    free(b);
}

const char *cu_device_name(const CudaBackend *b) { return b->name; }
void *cu_class_ptr(const CudaBackend *b, TensorClass c) { return (void *)(uintptr_t)b->base[c]; }
void *cu_stream(const CudaBackend *b) { return b->stream; }

/* ---- host mirror <-> device ---------------------------------------------------------------------- */

/* One tensor between the CPU backend's float mirror and the device's plan dtype. The copy goes on
 * the backend's stream, so it is ordered after the kernels that wrote the tensor (a copy on the
 * legacy stream would not be: the stream is CU_STREAM_NON_BLOCKING), and the stream is drained
 * before the host memory is read, reused or freed. */
static int xfer(CudaBackend *b, const CpuBackend *h, int id, int to_device, char *err, size_t errlen) {
    const RtTensor *t = &b->p->t[id];
    CUdeviceptr d = tensor_ptr(b, id);
    void *host = cpu_ptr(h, id);
    if (t->dtype != TD_BF16 && t->dtype != TD_F16) {
        size_t bytes = (size_t)t->n * (size_t)fp8c_tensor_dtype_bytes[t->dtype];
        if (to_device) CK(b->d.MemcpyHtoDAsync(d, host, bytes, b->stream));
        else CK(b->d.MemcpyDtoHAsync(host, d, bytes, b->stream));
        CK(b->d.StreamSynchronize(b->stream));
        return 0;
    }
    uint16_t *tmp = malloc((size_t)t->n * 2); /* (n) bf16/f16 staging */
    if (!tmp) {
        snprintf(err, errlen, "out of host memory staging %s", t->name);
        return -1;
    }
    float *f = host;
    const char *call = to_device ? "cuMemcpyHtoDAsync" : "cuMemcpyDtoHAsync";
    CUresult r;
    if (to_device) {
        for (int64_t i = 0; i < t->n; i++) tmp[i] = t->dtype == TD_BF16 ? fp8c_f32_to_bf16(f[i]) : fp8c_f32_to_f16(f[i]);
        r = b->d.MemcpyHtoDAsync(d, tmp, (size_t)t->n * 2, b->stream);
    } else {
        r = b->d.MemcpyDtoHAsync(tmp, d, (size_t)t->n * 2, b->stream);
    }
    if (!r) {
        call = "cuStreamSynchronize";
        r = b->d.StreamSynchronize(b->stream); /* tmp is read or freed next */
    }
    if (r) {
        snprintf(err, errlen, "%s(%s) failed: %s (%d)", call, t->name, cu_err(b, r), (int)r);
        free(tmp);
        return -1;
    }
    if (!to_device)
        for (int64_t i = 0; i < t->n; i++) f[i] = t->dtype == TD_BF16 ? fp8c_bf16_to_f32(tmp[i]) : fp8c_f16_to_f32(tmp[i]);
    free(tmp);
    return 0;
}

int cu_upload(CudaBackend *b, const CpuBackend *h, TensorClass c, char *err, size_t errlen) {
    if (c == TC_PARAM) b->weights_fresh = 0; /* new weights (even partly): their FP8 copies must be recomputed */
    for (int i = 0; i < b->p->nt; i++)
        if (b->p->t[i].cls == c && xfer(b, h, i, 1, err, errlen)) return -1;
    return 0;
}

int cu_download(CudaBackend *b, CpuBackend *h, TensorClass c, char *err, size_t errlen) {
    for (int i = 0; i < b->p->nt; i++)
        if (b->p->t[i].cls == c && xfer(b, h, i, 0, err, errlen)) return -1;
    return 0;
}

int cu_upload_tensor(CudaBackend *b, const CpuBackend *h, int id, char *err, size_t errlen) { return xfer(b, h, id, 1, err, errlen); }
int cu_download_tensor(CudaBackend *b, CpuBackend *h, int id, char *err, size_t errlen) { return xfer(b, h, id, 0, err, errlen); }

/* On the stream, so ordered with the kernels and copies around it; no host memory is involved,
 * so nothing waits here (a failure of the memset itself shows at the next synchronization). */
int cu_zero_class(CudaBackend *b, TensorClass c, char *err, size_t errlen) {
    CK(b->d.MemsetD8Async(b->base[c], 0, (size_t)b->p->class_bytes[c], b->stream));
    return 0;
}

/* ---- execution ------------------------------------------------------------------------------------ */

static int launch(CudaBackend *b, const GpuStep *g, char *err, size_t errlen) {
    const RtKernel *K = &b->p->kernels[g->kernel];
    CUdeviceptr ptrs[RT_MAX_KPARAMS + 2];
    void *args[RT_MAX_KPARAMS + 2];
    int n = 0;
    for (int i = 0; i < g->nparams; i++) {
        ptrs[n] = tensor_ptr(b, g->params[i]);
        args[n] = &ptrs[n];
        n++;
    }
    ptrs[n] = K->scratch ? b->scratch : 0;
    args[n] = &ptrs[n];
    n++;
    ptrs[n] = b->rs;
    args[n] = &ptrs[n];
    for (int e = 0; e < K->ne; e++) {
        const RtKEntry *E = &K->e[e];
        CUresult r = b->d.LaunchKernel(b->fn[g->kernel][e], (unsigned)E->grid[0], (unsigned)E->grid[1], (unsigned)E->grid[2],
                                       (unsigned)E->block[0], (unsigned)E->block[1], (unsigned)E->block[2], (unsigned)E->smem,
                                       b->stream, args, NULL);
        if (r) {
            snprintf(err, errlen, "launching %s (%s) failed: %s (%d)", E->symbol, K->name, cu_err(b, r), r);
            return -1;
        }
    }
    return 0;
}

/* One unit of the schedule on the backend's stream: its memset, cuBLASLt GEMM (plus the dbias
 * kernel of matmul_bwd_weight), or kernel launch. */
static int enqueue_unit(CudaBackend *b, Section sec, int i, char *err, size_t errlen) {
    const Plan *p = b->p;
    const RtUnit *u = &p->units[sec][i];
    const RtStep *s = &p->steps[sec][u->first];
    const GpuStep *g = &u->gpu;
    if (g->action == GPU_MEMSET) {
        const RtTensor *t = &p->t[s->args[0]];
        CUresult r = b->d.MemsetD8Async(tensor_ptr(b, s->args[0]), 0, (size_t)t->n * (size_t)fp8c_tensor_dtype_bytes[t->dtype], b->stream);
        if (r) {
            snprintf(err, errlen, "cuMemsetD8Async(%s) failed: %s", t->name, cu_err(b, r));
            return -1;
        }
        return 0;
    }
    if (g->gemm == 1) {
        LtCall *c = b->lt_calls[sec][i];
        const LtGemm *lg = &c->g;
        if (lt_run(b->lt, b->lt_handle, c, ptr_or_null(b, lg->a), ptr_or_null(b, lg->b), ptr_or_null(b, lg->c), (void *)ptr_or_null(b, lg->d),
                   ptr_or_null(b, lg->bias), ptr_or_null(b, lg->a_scale), ptr_or_null(b, lg->b_scale), (void *)(uintptr_t)b->lt_ws,
                   b->lt_ws_bytes, b->stream, err, errlen))
            return -1;
        /* matmul_bwd_weight's dbias is a generated column-sum kernel after the GEMM */
        if (g->kernel >= 0 && s->op == OP_MATMUL_BWD_WEIGHT) return launch(b, g, err, errlen);
        return 0;
    }
    if (g->kernel >= 0) return launch(b, g, err, errlen);
    return 0;
}

static int enqueue(CudaBackend *b, Section sec, char *err, size_t errlen) {
    for (int i = 0; i < b->p->nunits[sec]; i++) {
        if (b->p->units[sec][i].refresh && b->weights_fresh) continue;
        if (enqueue_unit(b, sec, i, err, errlen)) return -1;
    }
    return 0;
}

/* The device copy of the run state: Fp8cRunState in templates/common.cuh, field for field. */
typedef struct {
    float dloss, lr, grad_scale, pad0;
    int opt_step, amax_step, pad1, pad2;
} DevRunState;

static DevRunState dev_run_state(const RunState *st) {
    return (DevRunState){st->dloss, st->lr, st->grad_scale, 0, (int)st->opt_step, (int)st->amax_step, 0, 0};
}

int cu_run_unit(CudaBackend *b, Section sec, int i, const RunState *st, char *err, size_t errlen) {
    DevRunState rs = dev_run_state(st);
    CK(b->d.MemcpyHtoDAsync(b->rs, &rs, sizeof rs, b->stream));
    int rc = enqueue_unit(b, sec, i, err, errlen);
    CUresult r = b->d.StreamSynchronize(b->stream); /* also before rs leaves scope on failure */
    if (rc) return -1;
    if (r) {
        snprintf(err, errlen, "%s unit %d failed on the device: %s (%d)", fp8c_section_names[sec], i, cu_err(b, r), r);
        return -1;
    }
    return 0;
}

int cu_poison_tensor(CudaBackend *b, int id, char *err, size_t errlen) {
    const RtTensor *t = &b->p->t[id];
    CK(b->d.MemsetD8Async(tensor_ptr(b, id), 0xFF, (size_t)t->n * (size_t)fp8c_tensor_dtype_bytes[t->dtype], b->stream));
    CK(b->d.StreamSynchronize(b->stream));
    return 0;
}

int cu_run(CudaBackend *b, Section sec, const RunState *st, char *err, size_t errlen) {
    DevRunState rs = dev_run_state(st);
    CK(b->d.MemcpyHtoDAsync(b->rs, &rs, sizeof rs, b->stream));
    int fresh = b->weights_fresh, rc = 0;
    CUresult r = 0;
    if (b->graph[sec][fresh]) {
        r = b->d.GraphLaunch(b->graph[sec][fresh], b->stream);
        if (r) snprintf(err, errlen, "launching the %s graph failed: %s (%d)", fp8c_section_names[sec], cu_err(b, r), r), rc = -1;
    } else if (!b->no_graphs && ++b->eager_runs[sec][fresh] > 2) {
        /* the section's work is the same every step from here on: capture it once */
        CUgraph g = NULL;
        r = b->d.StreamBeginCapture(b->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        if (r) {
            snprintf(err, errlen, "cuStreamBeginCapture failed: %s (%d)", cu_err(b, r), r);
            rc = -1;
        } else {
            rc = enqueue(b, sec, err, errlen);
            r = b->d.StreamEndCapture(b->stream, &g); /* always end the capture, and free what it made */
            if (!rc && r) {
                snprintf(err, errlen, "capturing the %s section as a CUDA graph failed: %s (set FP8C_NO_GRAPHS=1 to run eagerly)",
                         fp8c_section_names[sec], cu_err(b, r));
                rc = -1;
            }
            if (!rc && (r = b->d.GraphInstantiate(&b->graph[sec][fresh], g, 0)))
                snprintf(err, errlen, "cuGraphInstantiate failed: %s (%d)", cu_err(b, r), r), rc = -1;
            if (g) b->d.GraphDestroy(g);
            if (!rc && (r = b->d.GraphLaunch(b->graph[sec][fresh], b->stream)))
                snprintf(err, errlen, "launching the %s graph failed: %s (%d)", fp8c_section_names[sec], cu_err(b, r), r), rc = -1;
        }
    } else {
        rc = enqueue(b, sec, err, errlen);
    }
    r = b->d.StreamSynchronize(b->stream); /* the host reads results next; rs must outlive its copy */
    if (rc) return -1;
    if (r) {
        snprintf(err, errlen, "the %s section failed on the device: %s (%d)", fp8c_section_names[sec], cu_err(b, r), r);
        return -1;
    }
    for (int i = 0; i < b->p->nunits[sec]; i++)
        if (b->p->units[sec][i].fusion == FUSE_ADAMW_QUANT) b->weights_fresh = 1;
    return 0;
}
