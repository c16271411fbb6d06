/* test_jit.c: the NVRTC front of runtime/cuda/jit.c, without a GPU.
 *   1. ptxas -v lines: registers, shared memory, stack and spills are read from real-format lines
 *      (the form ptxas prints, "ptxas info    : N bytes stack frame, ..."), maximum over entries.
 *   2. A compile error names the kernel file, the line, and quotes the generated source line.
 *   3. The cache: a second compile of the same source is served from the cache with the same PTX
 *      and cubin; a changed source or arch is a different entry; no temporary files are left;
 *      a damaged entry (truncated cubin or PTX) is compiled again, never served.
 * Cases 2 and 3 print SKIP when NVRTC cannot be loaded. */
#include <sys/stat.h>

#include "check.h"
#include "jit.h"

/* libnvrtc keeps a 72 KB allocation for the process lifetime (not ours): LeakSanitizer reads
 * this when the sanitizer build runs the NVRTC cases. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libnvrtc\n"; }

static void case_parse_ptxas(void) {
    JitJob j = {0};
    const char *log = "ptxas info    : 0 bytes gmem\n"
                      "ptxas info    : Compiling entry function 'k_a' for 'sm_90a'\n"
                      "ptxas info    : Function properties for k_a\n"
                      "ptxas info    : 24 bytes stack frame, 72 bytes spill stores, 68 bytes spill loads\n"
                      "ptxas info    : Used 128 registers, used 1 barriers, 24 bytes cumulative stack size, 1024 bytes smem\n"
                      "ptxas info    : Compiling entry function 'k_b' for 'sm_90a'\n"
                      "ptxas info    : Function properties for k_b\n"
                      "    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
                      "ptxas info    : Used 40 registers, used 0 barriers, 4096 bytes smem\n";
    jit_parse_ptxas(&j, log);
    CHECKF(j.regs == 128, "regs %d", j.regs);
    CHECKF(j.spill_stores == 72 && j.spill_loads == 68, "spills %d/%d", j.spill_stores, j.spill_loads);
    CHECKF(j.stack == 24, "stack %d", j.stack);
    CHECKF(j.smem_static == 4096, "smem %d", j.smem_static);
    JitJob z = {0};
    jit_parse_ptxas(&z, "");
    CHECK(z.regs == 0 && z.spill_stores == 0);
}

static const char *src_ok = "extern \"C\" __global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\n";
static const char *src_bad = "extern \"C\" __global__ void k(float *x) {\n    x[0] = undefined_name;\n}\n";

static void case_compile_error(JitLib *lib) {
    JitJob j = {.name = "bad_kernel", .src = src_bad};
    int failed = jit_compile_all(lib, &j, 1, "sm_89", NULL, 1, 0);
    CHECK(failed == 1 && !j.ok);
    CHECKF(strstr(j.err, "bad_kernel.cu(2)") != NULL, "no file(line) in: %s", j.err);
    CHECKF(strstr(j.err, "x[0] = undefined_name;") != NULL, "no source line in: %s", j.err);
    jit_job_free(&j);
}

static int count_files(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
    if (d) closedir(d);
    return n;
}

static void case_cache(JitLib *lib) {
    char dir[512];
    if (check_tmpdir_make(dir, sizeof dir, "fp8c-jit")) return;
    JitJob a = {.name = "k", .src = src_ok}, b = {.name = "k", .src = src_ok};
    CHECK(jit_compile_all(lib, &a, 1, "sm_90a", dir, 1, 0) == 0 && a.ok && !a.cached);
    CHECK(jit_compile_all(lib, &b, 1, "sm_90a", dir, 1, 0) == 0 && b.ok && b.cached);
    CHECK(a.ptx && b.ptx && strcmp(a.ptx, b.ptx) == 0 && strstr(a.ptx, ".target sm_90a"));
    CHECK(a.cubin_len > 0 && a.cubin_len == b.cubin_len && memcmp(a.cubin, b.cubin, a.cubin_len) == 0);
    JitJob c = {.name = "k", .src = src_ok};
    CHECK(jit_compile_all(lib, &c, 1, "sm_89", dir, 1, 0) == 0 && c.ok && !c.cached); /* another arch: another entry */
    CHECKF(count_files(dir, ".cubin") == 2, "%d cubins", count_files(dir, ".cubin"));
    CHECKF(count_files(dir, ".tmp.") == 0, "temporary files left");
    jit_job_free(&a);
    jit_job_free(&b);
    jit_job_free(&c);
    check_tmpdir_remove(dir);
}

/* A truncated cubin (16 bytes, as a full disk or a crash can leave) or an edited PTX in the
 * cache is never served: the entry's sizes and checksums (.sum) no longer match, so it is
 * compiled again and the cache repaired. */
static void truncate_first(const char *dir, const char *ext, size_t keep) {
    DIR *d = opendir(dir);
    char p[1024];
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ext) && !strstr(e->d_name, ".tmp.")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (truncate(p, (off_t)keep)) perror(p);
            break;
        }
    if (d) closedir(d);
}

static void case_cache_damaged(JitLib *lib) {
    char dir[512];
    if (check_tmpdir_make(dir, sizeof dir, "fp8c-jit")) return;
    JitJob a = {.name = "k", .src = src_ok}, b = {.name = "k", .src = src_ok}, c = {.name = "k", .src = src_ok};
    CHECK(jit_compile_all(lib, &a, 1, "sm_90a", dir, 1, 0) == 0 && a.ok && !a.cached);
    truncate_first(dir, ".cubin", 16);
    CHECK(jit_compile_all(lib, &b, 1, "sm_90a", dir, 1, 0) == 0 && b.ok && !b.cached);
    CHECK(b.cubin_len == a.cubin_len && memcmp(a.cubin, b.cubin, a.cubin_len) == 0);
    truncate_first(dir, ".ptx", 10);
    JitJob d = {.name = "k", .src = src_ok};
    CHECK(jit_compile_all(lib, &d, 1, "sm_90a", dir, 1, 0) == 0 && d.ok && !d.cached && d.ptx && strlen(d.ptx) > 10);
    CHECK(jit_compile_all(lib, &c, 1, "sm_90a", dir, 1, 0) == 0 && c.ok && c.cached); /* repaired */
    jit_job_free(&a), jit_job_free(&b), jit_job_free(&c), jit_job_free(&d);
    check_tmpdir_remove(dir);
}

static JitLib *lib;
static void case_cache_damaged_nvrtc(void) { case_cache_damaged(lib); }
static void case_compile_error_nvrtc(void) { case_compile_error(lib); }
static void case_cache_nvrtc(void) { case_cache(lib); }

int main(void) {
    RUN_CASE(case_parse_ptxas);
    char err[512];
    lib = jit_open(err, sizeof err);
    if (!lib) {
        printf("SKIP test_jit NVRTC cases: %s\n", err);
        CHECK_EXIT();
    }
    RUN_CASE(case_compile_error_nvrtc);
    RUN_CASE(case_cache_nvrtc);
    RUN_CASE(case_cache_damaged_nvrtc);
    jit_close(lib);
    CHECK_EXIT();
}
