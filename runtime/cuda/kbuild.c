/* kbuild.c: `fp8c build` (compile every kernel of a plan ahead of time into DIR/cubin/) and
 * `fp8c inspect` (list, print and audit a plan's kernels).
 *
 * Both go through jit.c, so they share its cache: an inspect after a build compiles nothing.
 * The audit checks that each kernel's PTX contains the instructions its plan entry promises
 * (e.g. `mma.sync...e4m3` in a low-bit GEMM, `cvt.rn.satfinite.e4m3x2.f32` in a quantizer): a
 * low-bit GEMM that silently runs in 16-bit fails it. SASS is audited too where nvdisasm is
 * installed. Must not: touch the GPU.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "jit.h"
#include "runtime.h"

int rt_debug_level(void) {
    const char *e = getenv("FP8C_DEBUG");
    int64_t v = 0;
    return e && !str_to_i64(e, 0, 9, &v) ? (int)v : 0; /* not a level: off */
}

typedef struct {
    Arena arena;
    Diag diag;
    Plan plan;
    JitLib *jit;
    JitJob *jobs;
    int *uses;
    const char *arch;  /* --arch, else the plan's target when it is a GPU, else sm_90a */
    const char *cache; /* jit_cache_dir, NULL: no cache */
    char cbuf[2048];
} Kset;

static void kset_free(Kset *k) {
    if (k->jobs)
        for (int i = 0; i < k->plan.nkernels; i++) {
            jit_job_free(&k->jobs[i]);
            free((char *)k->jobs[i].src);
        }
    free(k->jobs);
    free(k->uses);
    jit_close(k->jit);
    arena_free(&k->arena);
}

/* Load the plan and the kernel sources, choose the arch, open NVRTC. Returns an exit code (0 ok). */
/* sm_NN[N][a|f] with NN >= 89: the FP8 kernels need Ada or newer. Checked before anything is
 * read or created, so a typo costs no NVRTC runs and leaves no cubin/ behind. */
static int arch_ok(const char *a) {
    int64_t v;
    char digits[8];
    size_t n = strlen(a);
    if (strncmp(a, "sm_", 3) || n < 5 || n > 7) return 0;
    size_t nd = n - 3 - (a[n - 1] == 'a' || a[n - 1] == 'f');
    snprintf(digits, sizeof digits, "%.*s", (int)nd, a + 3);
    return nd >= 2 && !str_to_i64(digits, 89, 999, &v);
}

/* DIR/FILE resolves (symbolic links followed) to a file inside DIR. */
static int inside_dir(const char *dir, const char *path) {
    char rd[PATH_MAX], rp[PATH_MAX];
    if (!realpath(dir, rd) || !realpath(path, rp)) return 1; /* missing: the read reports it */
    size_t n = strlen(rd);
    return !strncmp(rp, rd, n) && (rp[n] == '/' || !strcmp(rd, "/"));
}

static int kset_load(Kset *k, const char *dir, const char *arch) {
    memset(k, 0, sizeof *k);
    diag_init(&k->diag, stderr);
    if (arch && !arch_ok(arch)) {
        fprintf(stderr, "fp8c: error: --arch takes a GPU architecture of sm_89 or newer such as sm_89, sm_90a or sm_100a, not '%s'\n", arch);
        return EXIT_BAD_INPUT;
    }
    if (plan_load(&k->arena, &k->diag, dir, &k->plan)) return EXIT_BAD_INPUT;
    if (k->plan.nkernels == 0) {
        fprintf(stderr, "fp8c: error: %s/plan.json lists no kernels: recompile it with this fp8c (`fp8c compile ... -o %s`)\n", dir, dir);
        return EXIT_BAD_INPUT;
    }
    k->jobs = calloc((size_t)k->plan.nkernels, sizeof *k->jobs);
    k->uses = calloc((size_t)k->plan.nkernels, sizeof *k->uses);
    for (int s = 0; s < SEC_COUNT; s++)
        for (int u = 0; u < k->plan.nunits[s]; u++)
            if (k->plan.units[s][u].gpu.kernel >= 0) k->uses[k->plan.units[s][u].gpu.kernel]++;
    for (int i = 0; i < k->plan.nkernels; i++) {
        char path[2200];
        snprintf(path, sizeof path, "%s/%s", dir, k->plan.kernels[i].file);
        k->jobs[i].name = k->plan.kernels[i].name;
        if (!inside_dir(dir, path)) { /* plan.c refused "..": this is a symbolic link leading out */
            diag_error(&k->diag, k->plan.kernels[i].mark, NULL, "plan: kernel file '%s' leads outside the plan directory",
                       k->plan.kernels[i].file);
            return EXIT_BAD_INPUT;
        }
        char *src, err[1200];
        int rc = io_read_all(path, (size_t)64 << 20, &src, NULL, err, sizeof err);
        if (rc) {
            fprintf(stderr, "fp8c: error: %s\n", err);
            return rc == IO_BAD ? EXIT_BAD_INPUT : EXIT_RUNTIME;
        }
        k->jobs[i].src = src;
    }
    k->arch = arch ? arch : !strncmp(k->plan.target, "sm_", 3) ? k->plan.target : "sm_90a";
    k->cache = jit_cache_dir(k->cbuf, sizeof k->cbuf);
    char err[1024];
    k->jit = jit_open(err, sizeof err);
    if (!k->jit) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Instructions a kernel's PTX must contain; returns the number missing (printed). */
static int audit_ptx(FILE *out, const RtKernel *K, const JitJob *j, int verbose) {
    int bad = 0;
    for (int a = 0; a < K->naudit; a++) {
        int ok = j->ptx && strstr(j->ptx, K->audit[a]) != NULL;
        bad += !ok;
        if (verbose || !ok) fprintf(out, "  %s %s: PTX %s `%s`\n", ok ? "PASS" : "FAIL", K->name, ok ? "contains" : "LACKS", K->audit[a]);
    }
    return bad;
}

/* nvdisasm on the cubin, where installed: FP8 MMA must not have become 16-bit HMMA. */
static void audit_sass(FILE *out, const RtKernel *K, const JitJob *j, const char *arch) {
    int fp8_gemm = 0;
    for (int a = 0; a < K->naudit; a++) fp8_gemm |= strstr(K->audit[a], "mma") && (strstr(K->audit[a], "e4m3") || strstr(K->audit[a], "e5m2"));
    if (!fp8_gemm || !j->cubin) return;
    const char *tool = NULL;
    static const char *const cands[] = {"/usr/local/cuda/bin/nvdisasm", "/usr/bin/nvdisasm"};
    for (int i = 0; i < 2; i++)
        if (access(cands[i], X_OK) == 0) tool = cands[i];
    if (!tool) {
        fprintf(out, "  SKIP %s: SASS audit (nvdisasm is not installed)%s\n", K->name,
                !strcmp(arch, "sm_90a") ? "; note: on sm_90 mma.sync with FP8 is emulated with FP16 tensor cores (notes 5.1), cuBLASLt is the native FP8 path there" : "");
        return;
    }
    char tmp[] = "/tmp/fp8c-sass-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) return;
    if (write(fd, j->cubin, j->cubin_len) != (ssize_t)j->cubin_len) {
        close(fd);
        unlink(tmp);
        return;
    }
    close(fd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", tool, tmp);
    FILE *p = popen(cmd, "r");
    int q = 0, h = 0;
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        q += strstr(line, "QMMA") || strstr(line, "QGMMA");
        h += strstr(line, "HMMA") != NULL;
    }
    if (p) pclose(p);
    unlink(tmp);
    fprintf(out, "  %s %s: SASS has %d FP8 MMA and %d HMMA instructions%s\n", q ? "PASS" : "FAIL", K->name, q, h,
            q ? "" : ": the FP8 GEMM runs on 16-bit tensor cores");
}

int rt_build(const char *dir, const char *arch_in) {
    Kset k;
    int rc = kset_load(&k, dir, arch_in);
    if (rc) {
        kset_free(&k);
        return rc;
    }
    const char *arch = k.arch, *cache = k.cache;
    int maj, min;
    jit_version(k.jit, &maj, &min);
    fprintf(stderr, "fp8c: build %s: %d kernels for %s with NVRTC %d.%d (cache %s)\n", dir, k.plan.nkernels, arch, maj, min,
            cache ? cache : "off");
    jit_compile_all(k.jit, k.jobs, k.plan.nkernels, arch, cache, 0, rt_debug_level());
    char cdir[1200];
    snprintf(cdir, sizeof cdir, "%s/cubin", dir);
    int nbad = 0, cached = 0, compiled = 0, failed = 0, unwritten = 0, swept = 0;
    double secs = 0;
    for (int i = 0; i < k.plan.nkernels; i++) {
        JitJob *j = &k.jobs[i];
        if (!j->ok) {
            fprintf(stderr, "fp8c: error: %s/%s: NVRTC (%s) failed:\n%s\n", dir, k.plan.kernels[i].file, arch, j->err);
            failed++;
            continue;
        }
        cached += j->cached;
        compiled += !j->cached;
        secs += j->seconds;
        if (mkdir(cdir, 0755) && errno != EEXIST) {
            fprintf(stderr, "fp8c: error: cannot create %s: %s\n", cdir, strerror(errno));
            unwritten++;
            continue;
        }
        if (!swept++) io_sweep_stale(cdir, "*.*.cubin.tmp."); /* what a killed build was writing */
        char path[1500];
        snprintf(path, sizeof path, "%s/%s.%s.cubin", cdir, j->name, arch);
        if (jit_write_atomic(path, j->cubin, j->cubin_len)) {
            fprintf(stderr, "fp8c: error: cannot write %s: %s\n", path, strerror(errno));
            unwritten++;
        }
        nbad += audit_ptx(stderr, &k.plan.kernels[i], j, 0);
        if (j->spill_stores) fprintf(stderr, "fp8c: warning: %s spills %d bytes (%d registers)\n", j->name, j->spill_stores, j->regs);
    }
    fprintf(stderr, "fp8c: build: %d compiled (%.1f s of NVRTC), %d from the cache, %d failed, %d not written, %d audit failures -> %s\n",
            compiled, secs, cached, failed, unwritten, nbad, compiled + cached ? cdir : "(nothing written)");
    kset_free(&k);
    return failed || unwritten || nbad ? EXIT_RUNTIME : EXIT_OK;
}

int rt_inspect(const char *dir, const char *kernel, const char *arch_in) {
    Kset k;
    int rc = kset_load(&k, dir, arch_in);
    if (rc) {
        kset_free(&k);
        return rc;
    }
    const char *arch = k.arch, *cache = k.cache;
    int sel = -1;
    if (kernel) {
        for (int i = 0; i < k.plan.nkernels; i++)
            if (!strcmp(k.plan.kernels[i].name, kernel)) sel = i;
        if (sel < 0) {
            const char **names = malloc((size_t)k.plan.nkernels * sizeof *names);
            for (int i = 0; i < k.plan.nkernels; i++) names[i] = k.plan.kernels[i].name;
            const char *close = closest_word(kernel, names, k.plan.nkernels);
            fprintf(stderr, "fp8c: error: %s has no kernel '%s'%s%s%s (`fp8c inspect %s` lists them)\n", dir, kernel,
                    close ? "; did you mean '" : "", close ? close : "", close ? "'?" : "", dir);
            free(names);
            kset_free(&k);
            return EXIT_BAD_INPUT;
        }
    }
    int n = sel >= 0 ? 1 : k.plan.nkernels;
    JitJob *jobs = sel >= 0 ? &k.jobs[sel] : k.jobs;
    jit_compile_all(k.jit, jobs, n, arch, cache, 0, rt_debug_level());
    int bad = 0;
    if (sel < 0) {
        printf("%s: %d kernels (gemm: %s), compiled for %s\n", dir, k.plan.nkernels, k.plan.gemm, arch);
        printf("%-56s %-12s %5s %4s %6s %6s %s\n", "kernel", "template", "uses", "regs", "smem", "spills", "audit");
        for (int i = 0; i < k.plan.nkernels; i++) {
            JitJob *j = &k.jobs[i];
            int miss = 0;
            for (int a = 0; a < k.plan.kernels[i].naudit; a++) miss += !(j->ptx && strstr(j->ptx, k.plan.kernels[i].audit[a]));
            bad += !j->ok || miss;
            printf("%-56s %-12s %5d %4d %6d %6d %s\n", j->name, k.plan.kernels[i].tmpl, k.uses[i], j->regs,
                   j->smem_static + k.plan.kernels[i].e[0].smem, j->spill_stores,
                   !j->ok ? "COMPILE ERROR" : miss ? "FAIL" : k.plan.kernels[i].naudit ? "pass" : "-");
        }
        for (int i = 0; i < k.plan.nkernels; i++)
            if (!k.jobs[i].ok) printf("\n%s: NVRTC failed:\n%s\n", k.jobs[i].name, k.jobs[i].err);
        printf("\n`fp8c inspect %s KERNEL` prints one kernel's source, PTX, resources and audit.\n", dir);
    } else {
        const RtKernel *K = &k.plan.kernels[sel];
        JitJob *j = &k.jobs[sel];
        printf("==== %s: source (%s/%s)\n%s\n", K->name, dir, K->file, j->src);
        if (!j->ok) {
            printf("==== NVRTC (%s) failed\n%s\n", arch, j->err);
            kset_free(&k);
            return EXIT_RUNTIME;
        }
        printf("==== PTX (%s)\n%s\n", arch, j->ptx);
        printf("==== resources (%s, ptxas)\n", arch);
        for (int e = 0; e < K->ne; e++)
            printf("  entry %s: grid (%d,%d,%d) block (%d,%d,%d) dynamic smem %d B\n", K->e[e].symbol, K->e[e].grid[0], K->e[e].grid[1],
                   K->e[e].grid[2], K->e[e].block[0], K->e[e].block[1], K->e[e].block[2], K->e[e].smem);
        printf("  max over entries: %d registers, %d B static smem, %d B stack, %d B spill stores, %d B spill loads\n", j->regs,
               j->smem_static, j->stack, j->spill_stores, j->spill_loads);
        printf("==== ptxas log\n%s\n==== audit\n", j->log ? j->log : "");
        bad += audit_ptx(stdout, K, j, 1);
        if (!K->naudit) printf("  (no instruction promises for this kernel)\n");
        audit_sass(stdout, K, j, arch);
    }
    kset_free(&k);
    return bad ? EXIT_RUNTIME : EXIT_OK;
}
