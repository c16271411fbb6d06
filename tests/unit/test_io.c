/* test_io.c: the shared input/output helpers every reader and writer of fp8c goes through.
 *   1. io_read_all: a FIFO, a directory and a device are refused at once (never a blocking
 *      open: an alarm fails the case instead of hanging the suite), a missing file is an I/O
 *      failure, the size limit holds, a regular file comes back whole with a NUL after it.
 *   2. io_open_write: a FIFO nobody reads is refused without blocking; io_close reports a
 *      full disk (/dev/full) with the path and the reason.
 *   3. str_to_i64 / str_to_f64: overflow, trailing junk, spaces, signs and range are refused.
 *   4. io_sweep_stale: removes only names of its exact shape whose pid is dead.
 *   5. plan_relative_path: kernel files cannot leave the plan directory.
 *   6. plan_parse: a plan's size is not limited by the YAML limit (a plan of more than 4 MiB
 *      loads; that limit once refused plans fp8c itself wrote). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "fp8c.h"
#include "io.h"
#include "runtime.h"

static char tmpdir[512];

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL io: an open blocked (alarm after 5 s)\n";
    ssize_t w = write(1, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

static void read_refuses_non_regular(void) {
    char fifo[600], err[1200], *data;
    size_t len;
    path_in(fifo, sizeof fifo, "fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(5);
    CHECK(io_read_all(fifo, 1 << 20, &data, &len, err, sizeof err) == IO_BAD);
    CHECKF(strstr(err, "FIFO") && strstr(err, fifo), "message: %s", err);
    CHECK(io_open_regular(fifo, err, sizeof err) == IO_BAD);
    CHECK(io_read_all(tmpdir, 1 << 20, &data, &len, err, sizeof err) == IO_BAD);
    CHECKF(strstr(err, "directory"), "message: %s", err);
    CHECK(io_read_all("/dev/null", 1 << 20, &data, &len, err, sizeof err) == IO_BAD);
    CHECK(io_read_all("/dev/zero", 1 << 20, &data, &len, err, sizeof err) == IO_BAD);
    alarm(0);
    char missing[600];
    path_in(missing, sizeof missing, "missing");
    CHECK(io_read_all(missing, 1 << 20, &data, &len, err, sizeof err) == IO_FAIL);
    CHECKF(strstr(err, "No such file"), "message: %s", err);
    unlink(fifo);
}

static void read_whole_and_limit(void) {
    char p[600], err[1200], *data = NULL;
    size_t len = 0;
    path_in(p, sizeof p, "ten");
    FILE *f = fopen(p, "w");
    fputs("0123456789", f);
    fclose(f);
    CHECK(io_read_all(p, 10, &data, &len, err, sizeof err) == IO_OK);
    CHECK(data && len == 10 && !memcmp(data, "0123456789", 11));
    free(data);
    CHECK(io_read_all(p, 9, &data, &len, err, sizeof err) == IO_BAD && !data);
    CHECKF(strstr(err, "more than the 9"), "message: %s", err);
    f = fopen(p, "w");
    fclose(f);
    CHECK(io_read_all(p, 10, &data, NULL, err, sizeof err) == IO_OK && data && data[0] == 0);
    free(data);
    unlink(p);
}

static void write_fifo_and_full_disk(void) {
    char fifo[600], err[1200];
    int why = 0;
    path_in(fifo, sizeof fifo, "wfifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(5);
    CHECK(io_open_write(fifo, 0, &why, err, sizeof err) == NULL && why == IO_BAD);
    alarm(0);
    CHECK(io_open_write(tmpdir, 0, &why, err, sizeof err) == NULL && why == IO_BAD);
    unlink(fifo);
    FILE *f = io_open_write("/dev/full", 0, &why, err, sizeof err);
    CHECK(f != NULL);
    if (f) {
        fputs("a line that cannot be written\n", f);
        CHECK(io_close(f, "/dev/full", err, sizeof err) == -1);
        CHECKF(strstr(err, "/dev/full") && strstr(err, "No space left"), "message: %s", err);
    }
    f = io_open_write("/dev/null", 1, &why, err, sizeof err);
    CHECK(f != NULL);
    if (f) {
        fputs("fine\n", f);
        CHECK(io_close(f, "/dev/null", err, sizeof err) == 0);
    }
}

static void strict_numbers(void) {
    int64_t v = 7;
    CHECK(str_to_i64("12", 1, 100, &v) == 0 && v == 12);
    CHECK(str_to_i64("-3", -5, 5, &v) == 0 && v == -3);
    static const char *const bad[] = {"99999999999999999999", "-99999999999999999999", "9223372036854775808", "12x",
                                      "", " 12", "+12", "1e3", "0x10", "12 ", "-", "101", "0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        CHECKF(str_to_i64(bad[i], 1, 100, &v) == -1 && v == 7, "'%s' accepted", bad[i]);
    }
    double d = 0;
    CHECK(str_to_f64("0.02", 0, 1, &d) == 0 && d == 0.02);
    CHECK(str_to_f64("-1e3", -1e6, 0, &d) == 0 && d == -1000);
    static const char *const badf[] = {"abc", "", " 1", "nan", "inf", "-inf", "1e999", "0.1x", "2"};
    for (size_t i = 0; i < sizeof badf / sizeof badf[0]; i++)
        CHECKF(str_to_f64(badf[i], -1, 1, &d) == -1, "'%s' accepted", badf[i]);
}

static void touch(const char *name) {
    char p[600];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
}

static int exists(const char *name) {
    char p[600];
    path_in(p, sizeof p, name);
    struct stat st;
    return lstat(p, &st) == 0;
}

static void sweep_stale_only(void) {
    pid_t child = fork(); /* a pid that surely belongs to no live process once reaped */
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    char dead[64], live[64], other[64], shape[64], sub[600];
    snprintf(dead, sizeof dead, "step_12.safetensors.tmp.%d.Ab12Cd", (int)child);
    snprintf(live, sizeof live, "step_3.safetensors.tmp.%d.xYz789", (int)getppid());
    snprintf(other, sizeof other, "notes.tmp.%d.Ab12Cd", (int)child);
    snprintf(shape, sizeof shape, "step_12.safetensors.tmp.%d.Ab12Cd.keep", (int)child);
    touch(dead), touch(live), touch(other), touch(shape);
    snprintf(sub, sizeof sub, "%s/out.tmp.%d.QwErTy", tmpdir, (int)child);
    CHECK(mkdir(sub, 0755) == 0);
    char inner[700];
    snprintf(inner, sizeof inner, "%s/plan.json", sub);
    FILE *f = fopen(inner, "w");
    if (f) fclose(f);
    CHECK(io_sweep_stale(tmpdir, "step_*.safetensors.tmp.") == 1);
    CHECK(!exists(dead) && exists(live) && exists(other) && exists(shape));
    CHECK(io_sweep_stale(tmpdir, "out.tmp.") == 1);
    struct stat st;
    CHECK(stat(sub, &st) != 0);
    char tmpl[128];
    io_tmp_name(tmpl, sizeof tmpl, "x.tmp.");
    char want[64];
    snprintf(want, sizeof want, "x.tmp.%d.XXXXXX", (int)getpid());
    CHECKF(!strcmp(tmpl, want), "template %s", tmpl);
    char p[600];
    path_in(p, sizeof p, live), unlink(p);
    path_in(p, sizeof p, other), unlink(p);
    path_in(p, sizeof p, shape), unlink(p);
}

static void kernel_paths(void) {
    CHECK(plan_relative_path("kernels/k_adamw.cu"));
    CHECK(plan_relative_path("a.cu"));
    static const char *const bad[] = {"../../../../etc/passwd", "/etc/passwd", "kernels/../../x.cu", "kernels//x.cu",
                                      "./x.cu", "kernels/.x.cu", "", "kernels/", "a b.cu", "kernels/x.cu\n", "k\\x.cu"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECKF(!plan_relative_path(bad[i]), "'%s' accepted", bad[i]);
}

/* A plan of more than YAML_MAX_BYTES: the shipped one-layer plan with a long padding of
 * spaces (JSON whitespace), written to a file and read with plan_load. */
static void large_plan_loads(void) {
    const char *seed = "tests/fuzz/corpus-plan/bf16-1layer.json";
    char *text;
    size_t len;
    char err[1200];
    if (io_read_all(seed, 1 << 24, &text, &len, err, sizeof err)) {
        CHECKF(0, "%s", err);
        return;
    }
    char dir[600], p[700];
    path_in(dir, sizeof dir, "bigplan");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/plan.json", dir);
    FILE *f = fopen(p, "w");
    size_t brace = 1; /* after the opening '{' */
    fwrite(text, 1, brace, f);
    for (int i = 0; i < (5 << 20) / 64; i++) fputs("                                                               \n", f);
    fwrite(text + brace, 1, len - brace, f);
    fclose(f);
    free(text);
    struct stat st;
    stat(p, &st);
    CHECKF(st.st_size > (off_t)YAML_MAX_BYTES, "plan is only %lld bytes", (long long)st.st_size);
    Arena a = {0};
    Diag d;
    FILE *devnull = fopen("/dev/null", "w");
    diag_init(&d, devnull);
    Plan plan;
    CHECKF(plan_load(&a, &d, dir, &plan) == 0, "a %lld-byte plan was refused", (long long)st.st_size);
    arena_free(&a);
    fclose(devnull);
    unlink(p);
    rmdir(dir);
}

int main(void) {
    signal(SIGALRM, on_alarm);
    if (check_tmpdir_make(tmpdir, sizeof tmpdir, "test_io")) return 1;
    RUN_CASE(read_refuses_non_regular);
    RUN_CASE(read_whole_and_limit);
    RUN_CASE(write_fifo_and_full_disk);
    RUN_CASE(strict_numbers);
    RUN_CASE(sweep_stale_only);
    RUN_CASE(kernel_paths);
    RUN_CASE(large_plan_loads);
    check_tmpdir_remove(tmpdir);
    rmdir(tmpdir);
    CHECK_EXIT();
}
