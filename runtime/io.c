/* io.c: non-blocking, type-checked opens; whole-file reads; checked closes; the sweep of stale
 * temporaries (see io.h). */
#include "io.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *type_name(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a named pipe (FIFO)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "something else";
}

int io_open_regular(const char *path, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        set_err(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return errno == EISDIR ? IO_BAD : IO_FAIL;
    }
    struct stat st;
    if (fstat(fd, &st)) {
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return IO_FAIL;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "'%s' is not a regular file but %s; fp8c reads regular files only", path, type_name(st.st_mode));
        close(fd);
        return IO_BAD;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int io_read_all(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen) {
    *data = NULL;
    if (len) *len = 0;
    int fd = io_open_regular(path, err, errlen);
    if (fd < 0) return fd;
    struct stat st;
    if (fstat(fd, &st) || (uint64_t)st.st_size > (uint64_t)max || (uint64_t)st.st_size >= SIZE_MAX) {
        set_err(err, errlen, "%s: %lld bytes, more than the %zu this input may have", path, (long long)st.st_size, max);
        close(fd);
        return IO_BAD;
    }
    size_t cap = (size_t)st.st_size, got = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        set_err(err, errlen, "%s: out of memory reading %zu bytes", path, cap);
        close(fd);
        return IO_FAIL;
    }
    for (;;) { /* read to EOF: the file may have grown since fstat; never past max */
        if (got == cap) {
            if (cap >= max) {
                char probe;
                ssize_t r = read(fd, &probe, 1);
                if (r == 0) break;
                set_err(err, errlen, "%s: grew past the %zu bytes this input may have", path, max);
                free(buf);
                close(fd);
                return IO_BAD;
            }
            size_t ncap = cap < 4096 ? 4096 : cap * 2;
            if (ncap > max) ncap = max;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                set_err(err, errlen, "%s: out of memory reading %zu bytes", path, ncap);
                free(buf);
                close(fd);
                return IO_FAIL;
            }
            buf = nb, cap = ncap;
        }
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            set_err(err, errlen, "%s: read failed after %zu bytes: %s", path, got, strerror(errno));
            free(buf);
            close(fd);
            return IO_FAIL;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *data = buf;
    if (len) *len = got;
    return IO_OK;
}

FILE *io_open_write(const char *path, int append, int *why, char *err, size_t errlen) {
    if (why) *why = IO_FAIL;
    int fd = open(path, O_WRONLY | O_CREAT | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd < 0) {
        if (why && (errno == ENXIO || errno == EISDIR)) *why = IO_BAD; /* ENXIO: a FIFO nobody reads */
        set_err(err, errlen, "%s: cannot open for writing: %s", path, errno == ENXIO ? "a named pipe (FIFO) with no reader" : strerror(errno));
        return NULL;
    }
    struct stat st;
    if (!fstat(fd, &st) && (S_ISDIR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        if (why) *why = IO_BAD;
        set_err(err, errlen, "%s: is %s; fp8c writes regular files (or devices such as /dev/null)", path, type_name(st.st_mode));
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, append ? "a" : "w");
    if (!f) {
        set_err(err, errlen, "%s: cannot open for writing: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

int io_check(FILE *f, const char *path, char *err, size_t errlen) {
    if (!f) return 0;
    errno = 0;
    if (fflush(f) || ferror(f)) {
        set_err(err, errlen, "%s: cannot write: %s", path, errno ? strerror(errno) : "write error");
        return -1;
    }
    return 0;
}

int io_close(FILE *f, const char *path, char *err, size_t errlen) {
    if (!f) return 0;
    int rc = io_check(f, path, err, errlen);
    struct stat st;
    /* fsync regular files only: devices (/dev/null) and pipes refuse it with EINVAL */
    if (!rc && !fstat(fileno(f), &st) && S_ISREG(st.st_mode) && fsync(fileno(f)) && errno != EINVAL) {
        set_err(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        rc = -1;
    }
    errno = 0;
    if (fclose(f) && !rc) {
        set_err(err, errlen, "%s: cannot write: %s", path, errno ? strerror(errno) : "close failed");
        rc = -1;
    }
    return rc;
}

void io_tmp_name(char *out, size_t n, const char *prefix) { snprintf(out, n, "%s%ld.XXXXXX", prefix, (long)getpid()); }

/* name == base (where '*' stands for one or more of [A-Za-z0-9_]) + digits + '.' + 6 chars of
 * mkstemp's alphabet; the pid in *pid. */
static int matches(const char *name, const char *base, long *pid) {
    const char *n = name;
    for (const char *b = base; *b; b++) {
        if (*b == '*') {
            const char *s = n;
            while (isalnum((unsigned char)*n) || *n == '_') n++;
            if (n == s) return 0;
            continue;
        }
        if (*n++ != *b) return 0;
    }
    if (!isdigit((unsigned char)*n)) return 0;
    char *end;
    errno = 0;
    long p = strtol(n, &end, 10);
    if (errno || p <= 0 || *end != '.') return 0;
    for (int i = 1; i <= 6; i++)
        if (!isalnum((unsigned char)end[i])) return 0;
    if (end[7]) return 0;
    *pid = p;
    return 1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

int io_sweep_stale(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long pid;
        if (!matches(e->d_name, base, &pid) || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to signal): leave it */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        else remove(path);
        n++;
    }
    closedir(d);
    return n;
}
