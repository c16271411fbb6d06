/* io.h: the one way fp8c opens files. Every input fp8c reads whole (model and policy YAML,
 * plan.json, checkpoints, data, kernel sources, cache entries) goes through io_read_all, which
 * opens without blocking (a FIFO or a device named as an input never hangs the process) and
 * refuses anything but a regular file; every output stream that is not written atomically by
 * its owner goes through io_open_write and io_close, which check each step of the write.
 *
 * Owns: file types, blocking, whole-file reads, checked closes and the stale-temporary sweep.
 * Must not: know about models, plans or exit codes; print. Messages go into the caller's err
 * buffer, prefixed with the path. */
#ifndef FP8C_RUNTIME_IO_H
#define FP8C_RUNTIME_IO_H

#include <stddef.h>
#include <stdio.h>

/* Results of the readers: IO_OK, IO_BAD (the path names something that is not an input file:
 * a FIFO, a directory, a device, or more than max bytes; the caller's argument is wrong) or
 * IO_FAIL (it could not be opened or read). */
enum { IO_OK = 0, IO_FAIL = -1, IO_BAD = -2 };

/* Open path read-only without blocking, then check that it is a regular file. Returns an fd in
 * blocking mode, or IO_FAIL/IO_BAD with a message. */
int io_open_regular(const char *path, char *err, size_t errlen);

/* The whole of path (at most max bytes) into a malloc'ed buffer with a NUL after the last byte,
 * its length in *len (len may be NULL). Returns IO_OK, IO_FAIL or IO_BAD. */
int io_read_all(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen);

/* Open path for writing (truncated, or appended to when append) without blocking in open: a
 * FIFO nobody reads is refused (IO_BAD), a directory too. NULL with a message on failure;
 * *why gets IO_FAIL or IO_BAD when why is not NULL. */
FILE *io_open_write(const char *path, int append, int *why, char *err, size_t errlen);

/* Flush, fsync (where the file supports it) and close f; any failure (ENOSPC, EIO, a write
 * that failed earlier) is reported as "PATH: cannot write: REASON". f may be NULL (returns 0). */
int io_close(FILE *f, const char *path, char *err, size_t errlen);

/* Did a write to f fail so far (ferror, or a flush that fails)? 0, or -1 with a message. */
int io_check(FILE *f, const char *path, char *err, size_t errlen);

/* Temporary names that carry their writer's process id: "<prefix><pid>.<random>", so that a
 * later run can tell a leftover of a killed process from a live one's file. io_tmp_name writes
 * the mkstemp/mkdtemp template "<prefix><pid>.XXXXXX" into out. */
void io_tmp_name(char *out, size_t n, const char *prefix);

/* In directory dir, remove the entries named "<base><pid>.<6 chars>" whose pid is not a live
 * process (directories are removed with their contents). In base, '*' stands for one or more of
 * [A-Za-z0-9_]. Only names of exactly that shape are
 * touched. Returns how many were removed; best effort. */
int io_sweep_stale(const char *dir, const char *base);

#endif
