/* cuda_double.c: a test-double CUDA driver, built as build/tests/libcuda.so.1 (tests only; see
 * tests/cudadouble/README.md). fp8c's dlopen("libcuda.so.1") finds it when LD_LIBRARY_PATH names
 * build/tests; it says so on stderr at cuInit and names the device "fp8c-test-double", so it
 * cannot be mistaken for a GPU.
 *
 * What it does, for the entry points cuda.c resolves (runtime/cuda/cuda_abi.h DRV_ENTRY_POINTS):
 *   - one device, compute capability 9.0 (fp8c picks sm_90a); memory is host memory, every
 *     allocation filled with 0xFF (a device allocation starts undefined) and bounds-checked on
 *     every copy and memset;
 *   - modules: cuModuleLoadData takes the cubin (or PTX) NVRTC made and reads its entry symbols;
 *     the code that runs is the host tier's build of the same kernel source (tests/host), found
 *     among the .cu files of $FP8C_CUDA_DOUBLE_PLAN/kernels by those symbols;
 *   - streams defer: copies, memsets and launches are recorded and run only when the stream is
 *     synchronized (so host memory handed to an async copy must stay valid, and results are not
 *     there before the synchronization, as on a GPU);
 *   - graphs: a capture records the stream's work instead of queueing it (launch parameters are
 *     copied then, as the driver does), instantiation copies it, cuGraphLaunch queues the copy.
 * It refuses what the driver refuses where fp8c could get it wrong: calls before cuInit or
 * without a current context, launches over the block/grid limits or with more than 48 KiB of
 * dynamic shared memory without the opt-in, copies outside an allocation, synchronizing or
 * allocating in a stream that is being captured (which also invalidates the capture), and so on
 * (README.md lists each rule). After a failed launch every call returns the sticky error.
 * Must not: pretend to be a GPU, or be linked into fp8c.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "double.h"
#include "host_kernels.h"

#define EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

/* CUresult values (cuda.h, enum cudaError_enum) */
enum {
    R_SUCCESS = 0,
    R_INVALID_VALUE = 1,
    R_NOT_INITIALIZED = 3,
    R_INVALID_DEVICE = 101,
    R_NO_BINARY_FOR_GPU = 209,
    R_INVALID_IMAGE = 200,
    R_INVALID_CONTEXT = 201,
    R_INVALID_HANDLE = 400,
    R_ILLEGAL_STATE = 401,
    R_NOT_FOUND = 500,
    R_LAUNCH_OUT_OF_RESOURCES = 701,
    R_LAUNCH_FAILED = 719,
    R_NOT_SUPPORTED = 801,
    R_CAPTURE_UNSUPPORTED = 900,
    R_CAPTURE_INVALIDATED = 901,
    R_UNKNOWN = 999,
};

static const struct {
    int code;
    const char *name;
} err_names[] = {
    {R_SUCCESS, "CUDA_SUCCESS"},
    {R_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
    {R_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
    {R_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
    {R_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
    {R_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE"},
    {R_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
    {R_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"},
    {R_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE"},
    {R_NOT_FOUND, "CUDA_ERROR_NOT_FOUND"},
    {R_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"},
    {R_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED"},
    {R_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
    {R_CAPTURE_UNSUPPORTED, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"},
    {R_CAPTURE_INVALIDATED, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"},
    {R_UNKNOWN, "CUDA_ERROR_UNKNOWN"},
};

#define SM_MAJOR 9
#define SM_MINOR 0
#define MAX_DYN_SMEM_OPTIN (227 * 1024) /* sm_90: 227 KiB per block with the opt-in */
#define DEFAULT_DYN_SMEM (48 * 1024)    /* without it */
#define MAX_PARAMS 24

/* ---- recorded work ------------------------------------------------------------------------------ */

typedef struct DFunc DFunc;

typedef enum { W_H2D, W_D2H, W_MEMSET, W_LAUNCH, W_HOST } WorkKind;

typedef struct {
    WorkKind kind;
    void *dst;
    const void *src;
    size_t n;
    unsigned char value;
    DFunc *fn;                       /* W_LAUNCH */
    unsigned grid[3], block[3], smem;
    uint64_t params[MAX_PARAMS];    /* the parameter values, copied at the launch (all pointers) */
    DoubleHostFn host;              /* W_HOST: the cuBLASLt double's GEMM, the NCCL double's collective */
    const char *name;               /* W_HOST: what to call it in a failure */
    void *arg;                      /* owned copy */
    size_t arg_bytes;
} DWork;

typedef struct {
    DWork *w;
    int n, cap;
} WorkList;

typedef struct {
    WorkList queue;                 /* recorded, not run yet */
    int capturing, invalidated;
    WorkList captured;
} DStream;

struct DFunc {
    int kernel, entry, nparams;
    int max_dyn_smem;               /* cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) */
};

typedef struct {
    int kernel;
    DFunc f[4];
} DModule;

typedef struct {
    char *base;
    size_t bytes;
} DAlloc;

static struct {
    int inited, ctx_retained, ctx_current, sticky;
    int order;                      /* FP8C_CUDA_DOUBLE_ORDER: 1 runs blocks and threads descending */
    DStream *strict_capture;        /* a stream capturing in global or thread-local mode */
    DAlloc *allocs;
    int nallocs, cap_allocs;
    DStream null_stream;
    /* the plan's kernels, found by scanning $FP8C_CUDA_DOUBLE_PLAN/kernels */
    Plan plan;
    int (*nparams)[4];
    HostKernels *hk;
    int hk_failed;
    long launches, syncs;
} D;

static char ctx_token; /* the primary context's handle points here */

static void say(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "fp8c-test-double: libcuda double: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* ---- work lists ----------------------------------------------------------------------------------- */

static int push(WorkList *l, const DWork *w) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        DWork *nw = realloc(l->w, (size_t)cap * sizeof *nw);
        if (!nw) return -1;
        l->w = nw, l->cap = cap;
    }
    DWork c = *w;
    if (w->arg_bytes) {
        c.arg = malloc(w->arg_bytes);
        if (!c.arg) return -1;
        memcpy(c.arg, w->arg, w->arg_bytes);
    }
    l->w[l->n++] = c;
    return 0;
}

static void clear(WorkList *l) {
    for (int i = 0; i < l->n; i++) free(l->w[i].arg);
    l->n = 0;
}

static void release(WorkList *l) {
    clear(l);
    free(l->w);
    l->w = NULL, l->cap = 0;
}

static int append_all(WorkList *dst, const WorkList *src) {
    for (int i = 0; i < src->n; i++)
        if (push(dst, &src->w[i])) return -1;
    return 0;
}

/* ---- memory --------------------------------------------------------------------------------------- */

static const DAlloc *find_alloc(const void *p, size_t n) {
    const char *c = p;
    for (int i = 0; i < D.nallocs; i++)
        if (c >= D.allocs[i].base && c < D.allocs[i].base + D.allocs[i].bytes) return n <= (size_t)(D.allocs[i].base + D.allocs[i].bytes - c) ? &D.allocs[i] : NULL;
    return NULL;
}

EXPORT int fp8c_double_check_range(const void *addr, size_t bytes) { return find_alloc(addr, bytes ? bytes : 1) != NULL; }

/* ---- the kernels: the .cu files under $FP8C_CUDA_DOUBLE_PLAN/kernels, their extern "C" __global__ entries ------------ */

/* The entry's name and its parameter count from `extern "C" __global__ void [__launch_bounds__(..)] NAME(...)`;
 * every parameter must be a pointer (the launch copies 8 bytes per parameter). */
static int parse_entry(const char *s, char *name, size_t nn, int *nparams) {
    s += strlen("extern \"C\" __global__ void");
    while (*s == ' ') s++;
    if (!strncmp(s, "__launch_bounds__", 17)) {
        s = strchr(s, ')');
        if (!s) return -1;
        s++;
        while (*s == ' ') s++;
    }
    size_t k = 0;
    while ((*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')) && k + 1 < nn) name[k++] = *s++;
    name[k] = 0;
    if (!k || *s != '(') return -1;
    int n = 0, depth = 0, stars = 0;
    for (s++; *s && !(depth == 0 && *s == ')'); s++) {
        if (*s == '(') depth++;
        if (*s == ')') depth--;
        if (*s == '*') stars++;
        if (*s == ',' && depth == 0) n++;
    }
    if (!*s) return -1;
    n++;
    if (stars < n || n > MAX_PARAMS) return -1;
    *nparams = n;
    return 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (b && len) *len = (size_t)n;
    return b;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The repository root: $FP8C_CUDA_DOUBLE_SRC, else three levels above this library
 * (ROOT/build/tests/libcuda.so.1). */
static void repo_root(char *buf, size_t n) {
    const char *env = getenv("FP8C_CUDA_DOUBLE_SRC");
    if (env) {
        snprintf(buf, n, "%s", env);
        return;
    }
    Dl_info info;
    snprintf(buf, n, ".");
    if (!dladdr((void *)repo_root, &info) || !info.dli_fname) return;
    char *p = realpath(info.dli_fname, NULL);
    if (!p) return;
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(p, '/');
        if (slash) *slash = 0;
    }
    snprintf(buf, n, "%s", p[0] ? p : "/");
    free(p);
}

static int load_plan_kernels(void) {
    if (D.hk) return 0;
    if (D.hk_failed) return -1;
    D.hk_failed = 1;
    const char *dir = getenv("FP8C_CUDA_DOUBLE_PLAN");
    if (!dir) {
        say("cuModuleLoadData: set FP8C_CUDA_DOUBLE_PLAN to the plan directory: the double runs the host build of its kernels/*.cu%s%s", "",
            "");
        return -1;
    }
    char kdir[1200];
    snprintf(kdir, sizeof kdir, "%s/kernels", dir);
    DIR *dp = opendir(kdir);
    if (!dp) {
        say("cannot open %s%s", kdir, "");
        return -1;
    }
    char **files = NULL;
    int nf = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 3, ".cu")) continue;
        char **nfs = realloc(files, (size_t)(nf + 1) * sizeof *files);
        if (!nfs) break;
        files = nfs;
        files[nf++] = strdup(de->d_name);
    }
    closedir(dp);
    qsort(files, (size_t)nf, sizeof *files, cmp_str);
    snprintf(D.plan.dir, sizeof D.plan.dir, "%s", dir);
    D.plan.kernels = calloc((size_t)(nf ? nf : 1), sizeof(RtKernel));
    D.nparams = calloc((size_t)(nf ? nf : 1), sizeof *D.nparams);
    int bad = !D.plan.kernels || !D.nparams;
    for (int i = 0; i < nf && !bad; i++) {
        char path[2400];
        snprintf(path, sizeof path, "%s/%s", kdir, files[i]);
        char *src = slurp(path, NULL);
        if (!src) {
            say("cannot read %s%s", path, "");
            bad = 1;
            break;
        }
        RtKernel *K = &D.plan.kernels[D.plan.nkernels];
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(strlen(files[i]) - 3), files[i]);
        K->name = strdup(stem);
        char rel[300];
        snprintf(rel, sizeof rel, "kernels/%s", files[i]);
        K->file = strdup(rel);
        for (const char *s = src; (s = strstr(s, "extern \"C\" __global__ void")); s++) {
            if (s != src && s[-1] != '\n') continue; /* a definition starts a line */
            int np;
            if (K->ne == 4 || parse_entry(s, K->e[K->ne].symbol, sizeof K->e[K->ne].symbol, &np)) {
                say("%s: an entry the double cannot launch (more than 4 entries, or a parameter that is not a pointer)%s", path, "");
                bad = 1;
                break;
            }
            D.nparams[D.plan.nkernels][K->ne++] = np;
        }
        free(src);
        if (K->ne) D.plan.nkernels++;
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    if (bad) return -1;
    char root[1024], cache[1200], err[4096];
    repo_root(root, sizeof root);
    const char *hc = getenv("FP8C_HOST_CACHE");
    snprintf(cache, sizeof cache, "%s", hc ? hc : "");
    if (!hc) snprintf(cache, sizeof cache, "%s/build/host-kernels", root);
    D.hk = hk_open(&D.plan, root, cache, 2, err, sizeof err);
    if (!D.hk) {
        say("the host build of %s's kernels failed: %s", dir, err);
        return -1;
    }
    D.hk_failed = 0;
    return 0;
}

/* The entry symbols of a cubin (ELF, EM_CUDA: global functions marked as entries in st_other,
 * STO_CUDA_ENTRY 0x10) or of PTX text (".entry NAME("). Returns the count, -1 if not an image. */
static int image_entries(const void *image, char names[][160], int max, int *sm) {
    const unsigned char *u = image;
    *sm = -1;
    if (!memcmp(u, ELFMAG, SELFMAG)) {
        const Elf64_Ehdr *eh = image;
        if (u[EI_CLASS] != ELFCLASS64 || eh->e_machine != 190 /* EM_CUDA */) return -1;
        *sm = (int)((eh->e_flags >> 8) & 0xff); /* NVRTC 13's cubins: the SM in bits 8-15 */
        const Elf64_Shdr *sh = (const Elf64_Shdr *)(u + eh->e_shoff);
        int n = 0;
        for (int i = 0; i < eh->e_shnum; i++) {
            if (sh[i].sh_type != SHT_SYMTAB) continue;
            const Elf64_Sym *sym = (const Elf64_Sym *)(u + sh[i].sh_offset);
            const char *str = (const char *)(u + sh[sh[i].sh_link].sh_offset);
            for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
                if (ELF64_ST_TYPE(sym[k].st_info) == STT_FUNC && ELF64_ST_BIND(sym[k].st_info) == STB_GLOBAL && (sym[k].st_other & 0x10) && n < max)
                    snprintf(names[n++], 160, "%s", str + sym[k].st_name);
        }
        return n;
    }
    const char *t = image;
    if (!strstr(t, ".version") || !strstr(t, ".target")) return -1;
    int n = 0;
    for (const char *s = t; (s = strstr(s, ".entry ")) && n < max; s++) {
        s += 7;
        size_t k = 0;
        while (s[k] && s[k] != '(' && s[k] != ' ' && s[k] != '\n' && k < 159) k++;
        snprintf(names[n++], 160, "%.*s", (int)k, s);
    }
    return n;
}

/* ---- execution ------------------------------------------------------------------------------------ */

static int run_work(DWork *w, char *err, size_t n) {
    switch (w->kind) {
    case W_H2D:
    case W_D2H:
        memcpy(w->dst, w->src, w->n);
        return 0;
    case W_MEMSET:
        memset(w->dst, w->value, w->n);
        return 0;
    case W_HOST:
        return w->host(w->arg, err, n);
    case W_LAUNCH: {
        void *args[MAX_PARAMS];
        for (int i = 0; i < w->fn->nparams; i++) args[i] = &w->params[i];
        D.launches++;
        return hk_launch_shape(D.hk, w->fn->kernel, w->fn->entry, w->grid, w->block, w->smem, args, D.order, err, n);
    }
    }
    return -1;
}

/* Run what the stream has recorded, in order; a failure makes the context's error sticky. */
static CUresult drain(DStream *s) {
    if (D.sticky) return D.sticky;
    D.syncs++;
    for (int i = 0; i < s->queue.n; i++) {
        char err[2048] = "";
        if (run_work(&s->queue.w[i], err, sizeof err)) {
            DWork *w = &s->queue.w[i];
            char what[300];
            if (w->kind == W_LAUNCH)
                snprintf(what, sizeof what, "%s (%s)", D.plan.kernels[w->fn->kernel].e[w->fn->entry].symbol, D.plan.kernels[w->fn->kernel].name);
            else
                snprintf(what, sizeof what, "%s", w->kind == W_HOST ? w->name : "a copy");
            say("%s failed on the device: %s", what, err);
            D.sticky = R_LAUNCH_FAILED;
            clear(&s->queue);
            return D.sticky;
        }
    }
    clear(&s->queue);
    return R_SUCCESS;
}

/* The stream's work goes to its capture while one is open, else to its queue. */
static CUresult record(DStream *s, const DWork *w) {
    if (s->capturing) {
        if (!s->invalidated && push(&s->captured, w)) return R_UNKNOWN;
        return R_SUCCESS;
    }
    return push(&s->queue, w) ? R_UNKNOWN : R_SUCCESS;
}

#define NEED_CTX()                                                                                 \
    do {                                                                                           \
        if (!D.inited) return R_NOT_INITIALIZED;                                                   \
        if (!D.ctx_current) return R_INVALID_CONTEXT;                                              \
        if (D.sticky) return D.sticky;                                                             \
    } while (0)

static DStream *stream_of(void *h) { return h ? (DStream *)h : &D.null_stream; }

/* ---- the entry points ------------------------------------------------------------------------------ */

static CUresult d_init(unsigned flags) {
    if (flags) return R_INVALID_VALUE; /* "Flags: must be 0" (cuInit) */
    if (!D.inited) {
        const char *o = getenv("FP8C_CUDA_DOUBLE_ORDER");
        D.order = o && o[0] == '1';
        fprintf(stderr,
                "fp8c-test-double: libcuda double (no GPU): host memory, streams deferred to their synchronization, kernels from the host "
                "tier (%s), sm_90a\n",
                getenv("FP8C_CUDA_DOUBLE_PLAN") ? getenv("FP8C_CUDA_DOUBLE_PLAN") : "FP8C_CUDA_DOUBLE_PLAN unset");
    }
    D.inited = 1;
    return R_SUCCESS;
}

static CUresult d_device_get_count(int *n) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (!n) return R_INVALID_VALUE;
    *n = 1;
    return R_SUCCESS;
}

static CUresult d_device_get(int *dev, int ordinal) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (!dev) return R_INVALID_VALUE;
    if (ordinal != 0) return R_INVALID_DEVICE;
    *dev = 0;
    return R_SUCCESS;
}

static CUresult d_device_get_name(char *name, int len, int dev) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (dev != 0) return R_INVALID_DEVICE;
    if (!name || len < 1) return R_INVALID_VALUE;
    snprintf(name, (size_t)len, "fp8c-test-double (no GPU: host execution)");
    return R_SUCCESS;
}

static CUresult d_device_get_attribute(int *v, int attr, int dev) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (dev != 0) return R_INVALID_DEVICE;
    if (!v) return R_INVALID_VALUE;
    switch (attr) {
    case 75: *v = SM_MAJOR; return R_SUCCESS;               /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *v = SM_MINOR; return R_SUCCESS;               /* COMPUTE_CAPABILITY_MINOR */
    case 16: *v = 132; return R_SUCCESS;                    /* MULTIPROCESSOR_COUNT (an H100 SXM's) */
    case 97: *v = MAX_DYN_SMEM_OPTIN; return R_SUCCESS;     /* MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
    case 1: *v = 1024; return R_SUCCESS;                    /* MAX_THREADS_PER_BLOCK */
    case 10: *v = 32; return R_SUCCESS;                     /* WARP_SIZE */
    }
    return R_INVALID_VALUE; /* an attribute the double does not model: refused, not invented */
}

static CUresult d_primary_ctx_retain(void **ctx, int dev) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (dev != 0) return R_INVALID_DEVICE;
    if (!ctx) return R_INVALID_VALUE;
    D.ctx_retained++;
    *ctx = &ctx_token;
    return R_SUCCESS;
}

static CUresult d_primary_ctx_release(int dev) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (dev != 0) return R_INVALID_DEVICE;
    if (D.ctx_retained < 1) return R_INVALID_CONTEXT;
    if (--D.ctx_retained == 0) {
        for (int i = 0; i < D.nallocs; i++) free(D.allocs[i].base); /* the context's memory goes with it */
        D.nallocs = 0;
        D.ctx_current = 0;
        fprintf(stderr, "fp8c-test-double: libcuda double: %ld launches, %ld synchronizations\n", D.launches, D.syncs);
    }
    return R_SUCCESS;
}

static CUresult d_ctx_set_current(void *ctx) {
    if (!D.inited) return R_NOT_INITIALIZED;
    if (ctx && (ctx != &ctx_token || !D.ctx_retained)) return R_INVALID_CONTEXT;
    D.ctx_current = ctx != NULL;
    return R_SUCCESS;
}

static CUresult d_driver_get_version(int *v) {
    if (!v) return R_INVALID_VALUE;
    *v = 13000;
    return R_SUCCESS;
}

/* cuMemAlloc and cuMemFree are "potentially unsafe" during a global or thread-local capture:
 * refused with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, and the capture is invalidated
 * (cudaStreamCaptureMode's documentation); a relaxed capture allows them. */
static int unsafe_during_capture(void) {
    if (!D.strict_capture) return 0;
    D.strict_capture->invalidated = 1;
    return 1;
}

static CUresult d_mem_alloc(CUdeviceptr *p, size_t bytes) {
    NEED_CTX();
    if (!p || !bytes) return R_INVALID_VALUE; /* "If bytesize is 0, cuMemAlloc() returns CUDA_ERROR_INVALID_VALUE" */
    if (unsafe_during_capture()) return R_CAPTURE_UNSUPPORTED;
    if (D.nallocs == D.cap_allocs) {
        int cap = D.cap_allocs ? 2 * D.cap_allocs : 64;
        DAlloc *na = realloc(D.allocs, (size_t)cap * sizeof *na);
        if (!na) return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
        D.allocs = na, D.cap_allocs = cap;
    }
    size_t rounded = (bytes + 255) / 256 * 256;
    char *m = aligned_alloc(256, rounded); /* the driver's allocations are 256-byte aligned */
    if (!m) return 2;
    memset(m, 0xFF, rounded); /* undefined contents: reading before writing shows as NaN */
    D.allocs[D.nallocs++] = (DAlloc){m, bytes};
    *p = (CUdeviceptr)(uintptr_t)m;
    return R_SUCCESS;
}

static CUresult d_mem_free(CUdeviceptr p) {
    NEED_CTX();
    if (unsafe_during_capture()) return R_CAPTURE_UNSUPPORTED;
    for (int i = 0; i < D.nallocs; i++)
        if ((uintptr_t)D.allocs[i].base == p) {
            free(D.allocs[i].base);
            D.allocs[i] = D.allocs[--D.nallocs];
            return R_SUCCESS;
        }
    return R_INVALID_VALUE;
}

static CUresult d_memcpy_htod(CUdeviceptr dst, const void *src, size_t n, void *stream) {
    NEED_CTX();
    if (!n) return R_SUCCESS;
    if (!src || !find_alloc((void *)(uintptr_t)dst, n)) return R_INVALID_VALUE;
    DWork w = {.kind = W_H2D, .dst = (void *)(uintptr_t)dst, .src = src, .n = n};
    return record(stream_of(stream), &w);
}

static CUresult d_memcpy_dtoh(void *dst, CUdeviceptr src, size_t n, void *stream) {
    NEED_CTX();
    if (!n) return R_SUCCESS;
    if (!dst || !find_alloc((void *)(uintptr_t)src, n)) return R_INVALID_VALUE;
    DWork w = {.kind = W_D2H, .dst = dst, .src = (void *)(uintptr_t)src, .n = n};
    return record(stream_of(stream), &w);
}

static CUresult d_memset_d8(CUdeviceptr dst, unsigned char v, size_t n, void *stream) {
    NEED_CTX();
    if (!n) return R_SUCCESS;
    if (!find_alloc((void *)(uintptr_t)dst, n)) return R_INVALID_VALUE;
    DWork w = {.kind = W_MEMSET, .dst = (void *)(uintptr_t)dst, .n = n, .value = v};
    return record(stream_of(stream), &w);
}

static CUresult d_stream_create(void **s, unsigned flags) {
    NEED_CTX();
    if (!s || flags > 1) return R_INVALID_VALUE; /* CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING */
    DStream *st = calloc(1, sizeof *st);
    if (!st) return 2;
    *s = st;
    return R_SUCCESS;
}

static CUresult d_stream_destroy(void *s) {
    NEED_CTX();
    if (!s) return R_INVALID_HANDLE;
    DStream *st = s;
    /* "in case the device is still doing work in the stream when cuStreamDestroy() is called, the
     * function will return immediately and the resources ... released automatically once the
     * device has completed all work": the work still runs */
    CUresult r = drain(st);
    release(&st->queue);
    release(&st->captured);
    free(st);
    return r;
}

static CUresult d_stream_synchronize(void *s) {
    NEED_CTX();
    DStream *st = stream_of(s);
    if (st->capturing) {
        st->invalidated = 1; /* an unsupported call during capture invalidates it */
        return R_CAPTURE_UNSUPPORTED;
    }
    return drain(st);
}

static CUresult d_module_load_data(void **mod, const void *image) {
    NEED_CTX();
    if (!mod || !image) return R_INVALID_VALUE;
    char names[8][160];
    int sm, n = image_entries(image, names, 8, &sm);
    if (n < 0) return R_INVALID_IMAGE;
    if (sm >= 0 && sm != SM_MAJOR * 10 + SM_MINOR) return R_NO_BINARY_FOR_GPU; /* a cubin for another SM */
    if (load_plan_kernels()) return R_NOT_SUPPORTED;
    for (int k = 0; k < D.plan.nkernels; k++) {
        const RtKernel *K = &D.plan.kernels[k];
        int match = K->ne == n;
        for (int e = 0; match && e < K->ne; e++) {
            int found = 0;
            for (int i = 0; i < n; i++) found |= !strcmp(names[i], K->e[e].symbol);
            match = found;
        }
        if (!match) continue;
        DModule *m = calloc(1, sizeof *m);
        if (!m) return 2;
        m->kernel = k;
        for (int e = 0; e < K->ne; e++) m->f[e] = (DFunc){k, e, D.nparams[k][e], DEFAULT_DYN_SMEM};
        *mod = m;
        return R_SUCCESS;
    }
    say("cuModuleLoadData: no kernel under $FP8C_CUDA_DOUBLE_PLAN/kernels has the image's entries (%s, ...)%s", n ? names[0] : "none", "");
    return R_NOT_SUPPORTED;
}

static CUresult d_module_unload(void *mod) {
    NEED_CTX();
    if (!mod) return R_INVALID_HANDLE;
    free(mod);
    return R_SUCCESS;
}

static CUresult d_module_get_function(void **fn, void *mod, const char *name) {
    NEED_CTX();
    if (!fn || !mod || !name) return R_INVALID_VALUE;
    DModule *m = mod;
    const RtKernel *K = &D.plan.kernels[m->kernel];
    for (int e = 0; e < K->ne; e++)
        if (!strcmp(K->e[e].symbol, name)) {
            *fn = &m->f[e];
            return R_SUCCESS;
        }
    return R_NOT_FOUND;
}

static CUresult d_func_set_attribute(void *fn, int attr, int value) {
    NEED_CTX();
    if (!fn) return R_INVALID_HANDLE;
    if (attr != 8) return R_INVALID_VALUE; /* only MAX_DYNAMIC_SHARED_SIZE_BYTES is modelled */
    if (value < 0 || value > MAX_DYN_SMEM_OPTIN) return R_INVALID_VALUE;
    ((DFunc *)fn)->max_dyn_smem = value;
    return R_SUCCESS;
}

static CUresult d_launch_kernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem,
                                void *stream, void **params, void **extra) {
    NEED_CTX();
    if (!fn) return R_INVALID_HANDLE;
    DFunc *f = fn;
    if (extra) return R_INVALID_VALUE; /* the double takes kernelParams only */
    if (!gx || !gy || !gz || !bx || !by || !bz || gx > 2147483647u || gy > 65535 || gz > 65535 || bx > 1024 || by > 1024 || bz > 64)
        return R_INVALID_VALUE;
    if ((unsigned long long)bx * by * bz > 1024) return R_INVALID_VALUE;
    if (smem > (unsigned)f->max_dyn_smem) return R_INVALID_VALUE; /* more than 48 KiB needs the opt-in attribute */
    if (f->nparams && !params) return R_INVALID_VALUE;
    DWork w = {.kind = W_LAUNCH, .fn = f, .grid = {gx, gy, gz}, .block = {bx, by, bz}, .smem = smem};
    for (int i = 0; i < f->nparams; i++) memcpy(&w.params[i], params[i], 8);
    return record(stream_of(stream), &w);
}

static CUresult d_stream_begin_capture(void *s, int mode) {
    NEED_CTX();
    if (!s) return R_CAPTURE_UNSUPPORTED; /* the legacy stream cannot be captured */
    if (mode < 0 || mode > 2) return R_INVALID_VALUE;
    DStream *st = s;
    if (st->capturing) return R_ILLEGAL_STATE;
    st->capturing = 1, st->invalidated = 0;
    if (mode != 2) D.strict_capture = st; /* not CU_STREAM_CAPTURE_MODE_RELAXED */
    clear(&st->captured);
    return R_SUCCESS;
}

typedef struct {
    WorkList w;
} DGraph;

static CUresult d_stream_end_capture(void *s, void **graph) {
    NEED_CTX();
    if (!s || !graph) return R_INVALID_VALUE;
    DStream *st = s;
    if (!st->capturing) return R_ILLEGAL_STATE;
    st->capturing = 0;
    if (D.strict_capture == st) D.strict_capture = NULL;
    *graph = NULL;
    if (st->invalidated) {
        clear(&st->captured);
        return R_CAPTURE_INVALIDATED;
    }
    DGraph *g = calloc(1, sizeof *g);
    if (!g || append_all(&g->w, &st->captured)) {
        free(g);
        return R_UNKNOWN;
    }
    clear(&st->captured);
    *graph = g;
    return R_SUCCESS;
}

static CUresult d_graph_instantiate(void **exec, void *graph, unsigned long long flags) {
    NEED_CTX();
    if (!exec || !graph || flags) return R_INVALID_VALUE;
    DGraph *e = calloc(1, sizeof *e);
    if (!e || append_all(&e->w, &((DGraph *)graph)->w)) {
        free(e);
        return R_UNKNOWN;
    }
    *exec = e;
    return R_SUCCESS;
}

static CUresult d_graph_launch(void *exec, void *stream) {
    NEED_CTX();
    if (!exec) return R_INVALID_HANDLE;
    DStream *st = stream_of(stream);
    if (st->capturing) return R_CAPTURE_UNSUPPORTED;
    return append_all(&st->queue, &((DGraph *)exec)->w) ? R_UNKNOWN : R_SUCCESS;
}

static CUresult d_graph_destroy(void *graph) {
    if (!graph) return R_INVALID_VALUE;
    release(&((DGraph *)graph)->w);
    free(graph);
    return R_SUCCESS;
}

static CUresult d_get_error_name(CUresult r, const char **name) {
    if (!name) return R_INVALID_VALUE;
    for (size_t i = 0; i < sizeof err_names / sizeof err_names[0]; i++)
        if (err_names[i].code == r) {
            *name = err_names[i].name;
            return R_SUCCESS;
        }
    *name = NULL;
    return R_INVALID_VALUE;
}

static CUresult d_ctx_synchronize(void) {
    NEED_CTX();
    return drain(&D.null_stream);
}

/* ---- the cuBLASLt and NCCL doubles' door ------------------------------------------------------------ */

EXPORT int fp8c_double_enqueue_host(void *stream, const char *name, DoubleHostFn run, const void *arg, size_t arg_bytes) {
    if (!D.inited || !D.ctx_current) return R_INVALID_CONTEXT;
    if (D.sticky) return D.sticky;
    DWork w = {.kind = W_HOST, .host = run, .name = name ? name : "host work", .arg = (void *)arg, .arg_bytes = arg_bytes};
    return record(stream_of(stream), &w);
}

/* ---- cuGetProcAddress ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    void *fn;
} procs[] = {
    {"cuInit", (void *)d_init},
    {"cuDeviceGetCount", (void *)d_device_get_count},
    {"cuDeviceGet", (void *)d_device_get},
    {"cuDeviceGetName", (void *)d_device_get_name},
    {"cuDeviceGetAttribute", (void *)d_device_get_attribute},
    {"cuDevicePrimaryCtxRetain", (void *)d_primary_ctx_retain},
    {"cuDevicePrimaryCtxRelease", (void *)d_primary_ctx_release},
    {"cuCtxSetCurrent", (void *)d_ctx_set_current},
    {"cuCtxSynchronize", (void *)d_ctx_synchronize},
    {"cuDriverGetVersion", (void *)d_driver_get_version},
    {"cuMemAlloc", (void *)d_mem_alloc},
    {"cuMemFree", (void *)d_mem_free},
    {"cuMemcpyHtoDAsync", (void *)d_memcpy_htod},
    {"cuMemcpyDtoHAsync", (void *)d_memcpy_dtoh},
    {"cuMemsetD8Async", (void *)d_memset_d8},
    {"cuStreamCreate", (void *)d_stream_create},
    {"cuStreamDestroy", (void *)d_stream_destroy},
    {"cuStreamSynchronize", (void *)d_stream_synchronize},
    {"cuModuleLoadData", (void *)d_module_load_data},
    {"cuModuleUnload", (void *)d_module_unload},
    {"cuModuleGetFunction", (void *)d_module_get_function},
    {"cuFuncSetAttribute", (void *)d_func_set_attribute},
    {"cuLaunchKernel", (void *)d_launch_kernel},
    {"cuStreamBeginCapture", (void *)d_stream_begin_capture},
    {"cuStreamEndCapture", (void *)d_stream_end_capture},
    {"cuGraphInstantiateWithFlags", (void *)d_graph_instantiate},
    {"cuGraphLaunch", (void *)d_graph_launch},
    {"cuGraphDestroy", (void *)d_graph_destroy},
    {"cuGraphExecDestroy", (void *)d_graph_destroy},
    {"cuGetErrorName", (void *)d_get_error_name},
};

/* cuGetProcAddress_v2: a name the double does not implement is CUDA_ERROR_NOT_FOUND with status
 * CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND (1), as for a symbol the driver lacks. The double has one
 * ABI per entry point: the one cuda_abi.h asks for (requests below 12.0 are refused). */
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags, int *status) {
    if (!symbol || !pfn) return R_INVALID_VALUE;
    *pfn = NULL;
    if (status) *status = 1;
    if (version < 12000 || flags > 4) return R_INVALID_VALUE;
    for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++)
        if (!strcmp(procs[i].name, symbol)) {
            *pfn = procs[i].fn;
            if (status) *status = 0;
            return R_SUCCESS;
        }
    return R_NOT_FOUND;
}
