/* host_kernels.c: compile, cache and launch a plan's kernels on the host (see host_kernels.h).
 *
 * The cache key of a kernel is a 64-bit FNV-1a hash of its code (the emitted file from
 * "// ==== templates/common.cuh" on: the review header above it names the model and policy and
 * would make identical kernels of two plans compile twice), its entry symbols, the shim's files
 * and the compiler command. The runtime (host_rt.cpp, runtime/fp8.c) is compiled once per hash of
 * its own sources and linked into every kernel's shared object, so each object is self-contained
 * and loads with RTLD_LOCAL. A compile writes a temporary file and renames it: concurrent runs
 * sharing a cache see whole objects only. */
#define _POSIX_C_SOURCE 200809L
#include "host_kernels.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    unsigned grid[3], block[3], smem;
    void **args;
    int order;
    char *err;
    size_t errlen;
} HostLaunch; /* Fp8cHostLaunch in cuda_host.h, field for field */

typedef int (*HostEntry)(const HostLaunch *);

struct HostKernels {
    const Plan *p;
    void **libs;
    HostEntry (*fn)[4];
};

#define CXXFLAGS "-std=c++17 -O1 -g0 -fPIC -fno-gnu-unique -fno-strict-aliasing -ffp-contract=off -w -DFP8C_HOST"
/* the kernel's __shared__ variables (template static locals: .bss._ZZ*) between two symbols, so
 * that host_rt.cpp can poison them before every block (cuda_host.h) */
#define LDSCRIPT                                                                                   \
    "SECTIONS { fp8c_shared : { PROVIDE_HIDDEN(fp8c_shared_lo = .); *(fp8c_shared) *(.bss._ZZ*) "   \
    "PROVIDE_HIDDEN(fp8c_shared_hi = .); } } INSERT AFTER .bss;\n"

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (!b) return NULL;
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static uint64_t hash_file(uint64_t h, const char *path, int *ok) {
    size_t n;
    char *s = read_all(path, &n);
    if (!s) {
        *ok = 0;
        return h;
    }
    h = fnv(h, s, n);
    free(s);
    return h;
}

/* Run shell commands, at most jobs at once; 0 when all succeed, else the first failure's index + 1. */
static int run_all(char **cmds, int n, int jobs) {
    pid_t *pid = calloc((size_t)n, sizeof *pid);
    int next = 0, running = 0, bad = 0;
    while (next < n || running) {
        while (next < n && running < jobs) {
            pid_t c = fork();
            if (c == 0) {
                execl("/bin/sh", "sh", "-c", cmds[next], (char *)NULL);
                _exit(127);
            }
            if (c < 0) {
                bad = bad ? bad : next + 1;
                next = n;
                break;
            }
            pid[next++] = c, running++;
        }
        if (!running) break;
        int st;
        pid_t c = wait(&st);
        if (c < 0) break;
        running--;
        for (int i = 0; i < n; i++)
            if (pid[i] == c && (!WIFEXITED(st) || WEXITSTATUS(st)) && (!bad || i + 1 < bad)) bad = i + 1;
    }
    free(pid);
    return bad;
}

static int mkdirs(const char *dir) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) return -1;
            *q = '/';
        }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

/* host_rt.o and fp8.o for this shim, built once per hash of their sources */
static int build_runtime(const char *src, const char *cache, char *objs, size_t on, char *err, size_t n) {
    char path[2300];
    int ok = 1;
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *files[] = {"tests/host/host_rt.cpp", "tests/host/cuda_host.h", "tests/host/cuda_host_ptx.h", "runtime/fp8.c", "runtime/fp8.h",
                           "runtime/fp8_encode.h"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", src, files[i]);
        h = hash_file(h, path, &ok);
        if (!ok) {
            snprintf(err, n, "cannot read %s (the host tier's shim; --host-src names the repository root)", path);
            return -1;
        }
    }
    char rt[2300], fp[2300];
    snprintf(rt, sizeof rt, "%s/rt-%016llx.o", cache, (unsigned long long)h);
    snprintf(fp, sizeof fp, "%s/fp8-%016llx.o", cache, (unsigned long long)h);
    snprintf(objs, on, "'%s' '%s'", rt, fp);
    struct stat st;
    if (!stat(rt, &st) && !stat(fp, &st)) return 0;
    char c1[8192], c2[8192];
    snprintf(c1, sizeof c1, "g++ " CXXFLAGS " -I'%s/tests/host' -I'%s/runtime' -c '%s/tests/host/host_rt.cpp' -o '%s.tmp%d' && mv '%s.tmp%d' '%s'", src,
             src, src, rt, (int)getpid(), rt, (int)getpid(), rt);
    snprintf(c2, sizeof c2, "gcc -std=c11 -O1 -fPIC -I'%s/runtime' -c '%s/runtime/fp8.c' -o '%s.tmp%d' && mv '%s.tmp%d' '%s'", src, src, fp,
             (int)getpid(), fp, (int)getpid(), fp);
    char *cmds[] = {c1, c2};
    if (run_all(cmds, 2, 2)) {
        snprintf(err, n, "building the host tier's runtime failed: %s", c1);
        return -1;
    }
    return 0;
}

HostKernels *hk_open(const Plan *p, const char *src, const char *cache, int jobs, char *err, size_t n) {
    HostKernels *h = calloc(1, sizeof *h);
    int nk = p->nkernels;
    char **cmds = calloc((size_t)(nk ? nk : 1), sizeof *cmds);
    char (*so)[2300] = calloc((size_t)(nk ? nk : 1), sizeof *so);
    int *need = calloc((size_t)(nk ? nk : 1), sizeof *need), nneed = 0;
    char objs[4800];
    if (!h || !cmds || !so || !need) {
        snprintf(err, n, "out of host memory");
        goto fail;
    }
    h->p = p;
    h->libs = calloc((size_t)(nk ? nk : 1), sizeof *h->libs);
    h->fn = calloc((size_t)(nk ? nk : 1), sizeof *h->fn);
    if (!h->libs || !h->fn) {
        snprintf(err, n, "out of host memory");
        goto fail;
    }
    if (mkdirs(cache)) {
        snprintf(err, n, "cannot create the host kernel cache %s: %s", cache, strerror(errno));
        goto fail;
    }
    if (build_runtime(src, cache, objs, sizeof objs, err, n)) goto fail;
    char ld[2300];
    snprintf(ld, sizeof ld, "%s/shared-%016llx.ld", cache, (unsigned long long)fnv(0xcbf29ce484222325ULL, LDSCRIPT, strlen(LDSCRIPT)));
    FILE *lf = fopen(ld, "w");
    int wrote = lf && fputs(LDSCRIPT, lf) >= 0;
    if (lf && fclose(lf)) wrote = 0;
    if (!wrote) {
        snprintf(err, n, "cannot write %s", ld);
        goto fail;
    }
    for (int i = 0; i < nk; i++) {
        const RtKernel *K = &p->kernels[i];
        char path[2300];
        snprintf(path, sizeof path, "%s/%s", p->dir, K->file);
        char *code = read_all(path, NULL);
        if (!code) {
            snprintf(err, n, "cannot read %s (the plan's kernel source)", path);
            goto fail;
        }
        const char *body = strstr(code, "// ==== templates/common.cuh");
        if (!body) body = code;
        uint64_t hh = fnv(0xcbf29ce484222325ULL, body, strlen(body));
        for (int e = 0; e < K->ne; e++) hh = fnv(hh, K->e[e].symbol, strlen(K->e[e].symbol));
        hh = fnv(hh, objs, strlen(objs)); /* the runtime's hash: a new shim rebuilds every kernel */
        hh = fnv(hh, CXXFLAGS, strlen(CXXFLAGS));
        hh = fnv(hh, LDSCRIPT, strlen(LDSCRIPT));
        snprintf(so[i], sizeof so[i], "%s/%s-%016llx.so", cache, K->name, (unsigned long long)hh);
        struct stat st;
        if (!stat(so[i], &st)) {
            free(code);
            continue;
        }
        char cpp[2400];
        snprintf(cpp, sizeof cpp, "%s.%d.cpp", so[i], (int)getpid());
        FILE *f = fopen(cpp, "w");
        if (!f) {
            free(code);
            snprintf(err, n, "cannot write %s", cpp);
            goto fail;
        }
        fprintf(f, "// host tier: %s (%s)\n%s\n", K->name, path, body);
        for (int e = 0; e < K->ne; e++) fprintf(f, "FP8C_HOST_ENTRY(%s)\n", K->e[e].symbol);
        fclose(f);
        free(code);
        size_t cl = strlen(cpp) * 3 + strlen(so[i]) * 3 + strlen(src) * 2 + strlen(objs) + strlen(ld) + 512;
        cmds[nneed] = malloc(cl);
        snprintf(cmds[nneed], cl,
                 "g++ " CXXFLAGS " -shared -Wl,-Bsymbolic -Wl,-T,'%s' -I'%s/tests/host' -I'%s/runtime' -include cuda_host.h -o '%s.tmp' '%s' %s "
                 ">'%s.log' 2>&1 && mv '%s.tmp' '%s' && rm -f '%s' '%s.log'",
                 ld, src, src, cpp, cpp, objs, cpp, cpp, so[i], cpp, cpp);
        need[nneed++] = i;
    }
    if (nneed) {
        fprintf(stderr, "gpu_ops: host tier: compiling %d of %d kernels with g++ -O1 (cache %s)...\n", nneed, nk, cache);
        int bad = run_all(cmds, nneed, jobs < 1 ? 1 : jobs);
        if (bad) {
            char log[2500];
            snprintf(log, sizeof log, "%s.%d.cpp.log", so[need[bad - 1]], (int)getpid());
            char *msg = read_all(log, NULL);
            snprintf(err, n, "g++ failed on %s (%s):\n%.1500s", p->kernels[need[bad - 1]].name, log, msg ? msg : "(no log)");
            free(msg);
            goto fail;
        }
    }
    for (int i = 0; i < nk; i++) {
        h->libs[i] = dlopen(so[i], RTLD_NOW | RTLD_LOCAL);
        if (!h->libs[i]) {
            snprintf(err, n, "cannot load %s: %s", so[i], dlerror());
            goto fail;
        }
        for (int e = 0; e < p->kernels[i].ne; e++) {
            char sym[200];
            snprintf(sym, sizeof sym, "fp8c_host_launch_%s", p->kernels[i].e[e].symbol);
            void *f = dlsym(h->libs[i], sym);
            if (!f) {
                snprintf(err, n, "%s has no entry %s", so[i], sym);
                goto fail;
            }
            memcpy(&h->fn[i][e], &f, sizeof f); /* POSIX: a dlsym result converts to a function pointer */
        }
    }
    for (int i = 0; i < nneed; i++) free(cmds[i]);
    free(cmds), free(so), free(need);
    return h;
fail:
    for (int i = 0; cmds && i < nneed; i++) free(cmds[i]);
    free(cmds), free(so), free(need);
    hk_close(h);
    return NULL;
}

int hk_launch(HostKernels *h, int kernel, int entry, void **args, int order, char *err, size_t n) {
    const RtKEntry *E = &h->p->kernels[kernel].e[entry];
    const unsigned grid[3] = {(unsigned)E->grid[0], (unsigned)E->grid[1], (unsigned)E->grid[2]};
    const unsigned block[3] = {(unsigned)E->block[0], (unsigned)E->block[1], (unsigned)E->block[2]};
    return hk_launch_shape(h, kernel, entry, grid, block, (unsigned)E->smem, args, order, err, n);
}

int hk_launch_shape(HostKernels *h, int kernel, int entry, const unsigned grid[3], const unsigned block[3], unsigned smem, void **args,
                    int order, char *err, size_t n) {
    HostLaunch L = {{grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]}, smem, args, order, err, n};
    return h->fn[kernel][entry](&L);
}

void hk_close(HostKernels *h) {
    if (!h) return;
    for (int i = 0; h->libs && i < h->p->nkernels; i++)
        if (h->libs[i]) dlclose(h->libs[i]);
    free(h->libs);
    free(h->fn);
    free(h);
}
