/* check.h: the tiny test harness every unit test in tests/unit/ uses.
 *
 * A test program is a list of named cases. Each case prints exactly one line,
 * "PASS <name>" or "FAIL <name>: <why>", and tests/run.sh counts those lines to
 * print the suite's closing "N passed, N failed". A program exits non-zero if
 * any of its cases failed, so it is also usable on its own.
 */
#ifndef FP8C_TESTS_CHECK_H
#define FP8C_TESTS_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failed_cases;   /* cases that failed so far in this program */
static int check_case_failed;    /* the current case has failed */
static char check_case_why[512]; /* first failure message of the current case */

/* Record a failure of the current case; only the first message is kept. */
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond) && !check_case_failed) {                                           \
            check_case_failed = 1;                                                     \
            snprintf(check_case_why, sizeof check_case_why, "%s:%d: %s", __FILE__,    \
                     __LINE__, #cond);                                                 \
        }                                                                              \
    } while (0)

#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond) && !check_case_failed) {                                           \
            int n_ = snprintf(check_case_why, sizeof check_case_why, "%s:%d: ",       \
                              __FILE__, __LINE__);                                     \
            snprintf(check_case_why + n_, sizeof check_case_why - (size_t)n_,          \
                     __VA_ARGS__);                                                     \
            check_case_failed = 1;                                                     \
        }                                                                              \
    } while (0)

/* Run one case: a void function of no arguments. */
#define RUN_CASE(fn)                                                                   \
    do {                                                                               \
        check_case_failed = 0;                                                         \
        check_case_why[0] = 0;                                                         \
        fn();                                                                          \
        if (check_case_failed) {                                                       \
            check_failed_cases++;                                                      \
            printf("FAIL %s: %s\n", #fn, check_case_why);                              \
        } else {                                                                       \
            printf("PASS %s\n", #fn);                                                  \
        }                                                                              \
        fflush(stdout);                                                                \
    } while (0)

#define CHECK_EXIT() return check_failed_cases ? 1 : 0

/* A scratch directory for tests that write files: $TMPDIR (or /tmp)/NAME.XXXXXX, written into
 * dir. Prints a FAIL line and returns -1 if it cannot be made. */
static inline int check_tmpdir_make(char *dir, size_t n, const char *name) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, n, "%s/%s.XXXXXX", base && *base ? base : "/tmp", name);
    if (!mkdtemp(dir)) {
        printf("FAIL setup: cannot create a directory under %s\n", base ? base : "/tmp");
        return -1;
    }
    return 0;
}

/* Remove the scratch directory and the plain files the cases left in it. */
static inline void check_tmpdir_remove(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char p[600];
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

#endif
