/* jit.c: NVRTC through dlopen, parallel compilation and the disk cache (see jit.h). */
#include "jit.h"
#include "io.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fp8c.h"
#include "nvrtc_abi.h"

#define JIT_CACHE_FORMAT 2 /* 2: each entry has a .sum (sizes and checksums) written last */

static void *open_first(const char *const *names, int n, char *why, size_t whylen) {
    for (int i = 0; i < n; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* stays mapped: leak reports can name it */
        if (h) return h;
        if (i == 0) snprintf(why, whylen, "%s", dlerror());
    }
    return NULL;
}

JitLib *jit_open(char *err, size_t errlen) {
    char why[512] = "", p1[600], p2[600];
    const char *home = getenv("CUDA_HOME");
    snprintf(p1, sizeof p1, "%s/lib64/libnvrtc.so.13", home ? home : "/usr/local/cuda");
    snprintf(p2, sizeof p2, "%s/lib64/libnvrtc.so", home ? home : "/usr/local/cuda");
    /* NVRTC loads its builtins by bare name (notes 2.1): preload them from the same place */
    char b1[600];
    snprintf(b1, sizeof b1, "%s/lib64/libnvrtc-builtins.so.13.0", home ? home : "/usr/local/cuda");
    const char *names[] = {"libnvrtc.so.13", "libnvrtc.so", p1, p2};
    void *h = open_first(names, 4, why, sizeof why);
    if (!h) {
        snprintf(err, errlen, "NVRTC is not available (%s): install the CUDA toolkit's NVRTC (libnvrtc.so.13) or set CUDA_HOME", why);
        return NULL;
    }
    if (access(b1, R_OK) == 0) dlopen(b1, RTLD_NOW | RTLD_GLOBAL);
    JitLib *j = calloc(1, sizeof *j);
    if (!j) {
        dlclose(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->h = h;
    /* one block per NVRTC_ENTRY_POINTS row (nvrtc_abi.h) */
#define SYM(field, name)                                                                        \
    {                                                                                           \
        *(void **)&j->field = dlsym(h, #name);                                                  \
        if (!j->field) {                                                                        \
            snprintf(err, errlen, "libnvrtc has no %s: an NVRTC older than CUDA 11.1?", #name); \
            jit_close(j);                                                                       \
            return NULL;                                                                        \
        }                                                                                       \
    }
    NVRTC_ENTRY_POINTS(SYM)
#undef SYM
    j->Version(&j->major, &j->minor);
    return j;
}

void jit_close(JitLib *j) {
    if (!j) return;
    if (j->h) dlclose(j->h);
    free(j);
}

void jit_version(const JitLib *j, int *major, int *minor) {
    *major = j->major;
    *minor = j->minor;
}

void jit_job_free(JitJob *job) {
    free(job->ptx);
    free(job->cubin);
    free(job->log);
    job->ptx = job->cubin = job->log = NULL;
}

const char *jit_cache_dir(char *buf, size_t n) {
    const char *env = getenv("FP8C_CACHE_DIR");
    if (env && *env) snprintf(buf, n, "%s", env);
    else if (getenv("HOME")) snprintf(buf, n, "%s/.cache/fp8c", getenv("HOME"));
    else return NULL;
    for (char *p = buf + 1; *p; p++) /* mkdir -p */
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST) return NULL;
    static const char *const kinds[] = {"*-*.cubin.tmp.", "*-*.ptx.tmp.", "*-*.log.tmp.", "*-*.sum.tmp."};
    for (int i = 0; i < 4; i++) io_sweep_stale(buf, kinds[i]); /* entries a killed build was writing */
    return buf;
}

/* ---- the cache key: two independent 64-bit FNV-1a streams (128 bits) ------------------------ */

typedef struct {
    uint64_t a, b;
} Key;

static void key_add(Key *k, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        k->a = (k->a ^ s[i]) * 0x100000001b3ULL;
        k->b = (k->b ^ s[i]) * 0x100000001b3ULL ^ (k->b >> 29);
    }
    k->a = (k->a ^ 0xff) * 0x100000001b3ULL; /* field separator */
    k->b = (k->b ^ 0xff) * 0x100000001b3ULL;
}

/* ---- options ---------------------------------------------------------------------------------- */

static int make_options(const char *arch, const char **opts, char *archopt, size_t n) {
    snprintf(archopt, n, "--gpu-architecture=%s", arch);
    int k = 0;
    opts[k++] = archopt;
    opts[k++] = "--std=c++17";
    opts[k++] = "-lineinfo";
    if (!strncmp(arch, "sm_", 3)) opts[k++] = "--ptxas-options=-v"; /* registers, smem, spills into the log */
    return k;
}

/* ---- ptxas report ----------------------------------------------------------------------------- */

void jit_parse_ptxas(JitJob *job, const char *log) {
    job->regs = job->spill_stores = job->spill_loads = job->smem_static = job->stack = 0;
    for (const char *p = log; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
        const char *u;
        int v, s, l;
        if ((u = strstr(line, "Used ")) && sscanf(u, "Used %d registers", &v) == 1) {
            if (v > job->regs) job->regs = v;
            const char *sm = strstr(u, "bytes smem");
            if (sm) {
                const char *q = sm;
                while (q > u && q[-1] == ' ') q--;
                while (q > u && q[-1] >= '0' && q[-1] <= '9') q--;
                int smem = atoi(q);
                if (smem > job->smem_static) job->smem_static = smem;
            }
        }
        if ((u = strstr(line, "bytes stack frame"))) { /* "ptxas info    : 8 bytes stack frame, 0 bytes spill ..." */
            const char *q = u;
            while (q > line && q[-1] == ' ') q--;
            while (q > line && q[-1] >= '0' && q[-1] <= '9') q--;
            if (sscanf(q, "%d bytes stack frame, %d bytes spill stores, %d bytes spill loads", &v, &s, &l) == 3) {
                if (v > job->stack) job->stack = v;
                if (s > job->spill_stores) job->spill_stores = s;
                if (l > job->spill_loads) job->spill_loads = l;
            }
        }
        p = e ? e + 1 : NULL;
    }
}

/* ---- one compilation -------------------------------------------------------------------------- */

char *jit_read_file(const char *path, size_t *len) {
    char *data, err[8];
    return io_read_all(path, (size_t)1 << 30, &data, len, err, sizeof err) ? NULL : data;
}

int jit_write_atomic(const char *path, const void *data, size_t n) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.XXXXXX", path, (long)getpid()); /* io.h: a killed writer's leftover is swept */
    int fd = mkstemp(tmp);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    ok &= fclose(f) == 0;
    if (!ok && saved) errno = saved;
    if (ok) chmod(tmp, 0644);
    if (!ok || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        errno = e; /* the caller names the reason */
        return -1;
    }
    return 0;
}

/* "NAME.cu(123): error: ..." -> the message and the source line it points at. */
static void first_error(JitJob *job, const char *log) {
    const char *e = strstr(log, ": error");
    if (!e) {
        snprintf(job->err, sizeof job->err, "%.1500s", log);
        return;
    }
    const char *ls = e;
    while (ls > log && ls[-1] != '\n') ls--;
    const char *le = strchr(e, '\n');
    int len = le ? (int)(le - ls) : (int)strlen(ls);
    int line = 0;
    const char *paren = memchr(ls, '(', (size_t)(e - ls));
    if (paren) line = atoi(paren + 1);
    char src[300] = "";
    if (line > 0) {
        const char *p = job->src;
        for (int i = 1; i < line && p; i++) {
            p = strchr(p, '\n');
            if (p) p++;
        }
        if (p) {
            const char *q = strchr(p, '\n');
            snprintf(src, sizeof src, "\n  %d | %.*s", line, (int)(q ? q - p : (long)strlen(p)) > 280 ? 280 : (int)(q ? q - p : (long)strlen(p)), p);
        }
    }
    snprintf(job->err, sizeof job->err, "%.*s%s", len > 1500 ? 1500 : len, ls, src);
}

static uint64_t fnv64(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}

/* A cache entry's .sum: the size and FNV-1a checksum of its cubin, PTX and log. */
static void entry_sum(char *out, size_t n, const void *cubin, size_t ncubin, const char *ptx, size_t nptx, const char *log, size_t nlog) {
    snprintf(out, n, "fp8c-cache %d\ncubin %zu %016llx\nptx %zu %016llx\nlog %zu %016llx\n", JIT_CACHE_FORMAT, cubin ? ncubin : 0,
             (unsigned long long)(cubin ? fnv64(cubin, ncubin) : 0), ptx ? nptx : 0, (unsigned long long)(ptx ? fnv64(ptx, nptx) : 0),
             log ? nlog : 0, (unsigned long long)(log ? fnv64(log, nlog) : 0));
}

static void compile_one(JitLib *j, JitJob *job, const char *arch, const char *cache_dir, int debug) {
    const char *opts[8];
    char archopt[64];
    int nopt = make_options(arch, opts, archopt, sizeof archopt);
    Key k = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    int fmt = JIT_CACHE_FORMAT;
    key_add(&k, &fmt, sizeof fmt);
    key_add(&k, FP8C_VERSION, strlen(FP8C_VERSION));
    key_add(&k, &j->major, sizeof j->major);
    key_add(&k, &j->minor, sizeof j->minor);
    key_add(&k, arch, strlen(arch));
    for (int i = 0; i < nopt; i++) key_add(&k, opts[i], strlen(opts[i]));
    key_add(&k, job->src, strlen(job->src));
    char base[4200] = "";
    if (cache_dir) {
        snprintf(base, sizeof base, "%s/%016llx%016llx-%s", cache_dir, (unsigned long long)k.a, (unsigned long long)k.b, arch);
        char p[4300];
        size_t nptx = 0, nlog = 0;
        snprintf(p, sizeof p, "%s.ptx", base);
        job->ptx = jit_read_file(p, &nptx);
        snprintf(p, sizeof p, "%s.log", base);
        job->log = jit_read_file(p, &nlog);
        if (!strncmp(arch, "sm_", 3)) {
            snprintf(p, sizeof p, "%s.cubin", base);
            job->cubin = jit_read_file(p, &job->cubin_len);
        }
        char want[256], *have;
        entry_sum(want, sizeof want, job->cubin, job->cubin_len, job->ptx, nptx, job->log, nlog);
        snprintf(p, sizeof p, "%s.sum", base);
        have = jit_read_file(p, NULL);
        /* served only when every file is there and matches the sizes and checksums written with
         * it: a truncated or damaged entry (a full disk, a crash, an edit) is compiled again */
        int whole = job->ptx && job->log && (job->cubin || strncmp(arch, "sm_", 3)) && have && !strcmp(have, want);
        free(have);
        if (whole) {
            job->ok = job->cached = 1;
            jit_parse_ptxas(job, job->log);
            return;
        }
        jit_job_free(job);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nvrtcProgram prog;
    char fname[200];
    snprintf(fname, sizeof fname, "%s.cu", job->name);
    int rc = j->CreateProgram(&prog, job->src, fname, 0, NULL, NULL);
    if (rc) {
        snprintf(job->err, sizeof job->err, "nvrtcCreateProgram: %s", j->GetErrorString(rc));
        return;
    }
    rc = j->CompileProgram(prog, nopt, opts);
    size_t ls = 0;
    j->GetProgramLogSize(prog, &ls);
    job->log = calloc(ls + 1, 1);
    if (ls) j->GetProgramLog(prog, job->log);
    if (rc) {
        first_error(job, job->log);
        if (debug >= 2) fprintf(stderr, "fp8c: NVRTC log of %s:\n%s\n", fname, job->log);
        j->DestroyProgram(&prog);
        return;
    }
    size_t n = 0;
    j->GetPTXSize(prog, &n);
    job->ptx = calloc(n + 1, 1);
    j->GetPTX(prog, job->ptx);
    if (!strncmp(arch, "sm_", 3)) {
        j->GetCUBINSize(prog, &job->cubin_len);
        job->cubin = malloc(job->cubin_len ? job->cubin_len : 1);
        j->GetCUBIN(prog, job->cubin);
    }
    j->DestroyProgram(&prog);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    job->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    job->ok = 1;
    jit_parse_ptxas(job, job->log);
    if (cache_dir) { /* best effort: a read-only cache only costs time */
        char p[4300];
        if (job->cubin) {
            snprintf(p, sizeof p, "%s.cubin", base);
            jit_write_atomic(p, job->cubin, job->cubin_len);
        }
        snprintf(p, sizeof p, "%s.ptx", base);
        jit_write_atomic(p, job->ptx, strlen(job->ptx));
        snprintf(p, sizeof p, "%s.log", base);
        jit_write_atomic(p, job->log, strlen(job->log));
        char sum[256];
        entry_sum(sum, sizeof sum, job->cubin, job->cubin_len, job->ptx, strlen(job->ptx), job->log, strlen(job->log));
        snprintf(p, sizeof p, "%s.sum", base); /* last: its presence and content mark a complete entry */
        jit_write_atomic(p, sum, strlen(sum));
    }
}

typedef struct {
    JitLib *j;
    JitJob *jobs;
    int n, next, debug;
    const char *arch, *cache;
    pthread_mutex_t mu;
} Pool;

static void *worker(void *arg) {
    Pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n) return NULL;
        compile_one(p->j, &p->jobs[i], p->arch, p->cache, p->debug);
        if (p->debug >= 1) {
            JitJob *job = &p->jobs[i];
            fprintf(stderr, "fp8c: jit %-48s %s %7.1f ms  %3d regs  %5d B smem  %d B spills%s\n", job->name, p->arch,
                    job->seconds * 1e3, job->regs, job->smem_static, job->spill_stores, job->cached ? "  (cached)" : "");
            if (p->debug >= 3 && job->ptx) fprintf(stderr, "%s\n", job->ptx);
        }
    }
}

int jit_compile_all(JitLib *j, JitJob *jobs, int n, const char *arch, const char *cache_dir, int threads, int debug) {
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > n) threads = n;
    if (threads > 64) threads = 64;
    Pool p = {.j = j, .jobs = jobs, .n = n, .debug = debug, .arch = arch, .cache = cache_dir};
    pthread_mutex_init(&p.mu, NULL);
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < threads; i++)
        if (!pthread_create(&th[started], NULL, worker, &p)) started++;
    worker(&p);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    int failed = 0;
    for (int i = 0; i < n; i++) failed += !jobs[i].ok;
    return failed;
}
