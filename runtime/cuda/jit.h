/* jit.h: NVRTC, opened with dlopen, and the content-addressed kernel cache.
 *
 * One binary serves machines with and without a CUDA toolkit: libnvrtc is looked up at run time
 * (the loader's path, then $CUDA_HOME/lib64, /usr/local/cuda/lib64). Compiling needs no GPU and no
 * driver (shared/notes/cuda-apis.md 2.1). Results are cached under $FP8C_CACHE_DIR (default
 * ~/.cache/fp8c) by a key over the source, the options, the arch, the NVRTC version and the fp8c
 * version; entries are written to a temporary file and renamed, so concurrent processes never see
 * a partial entry. Must not: touch the driver (cuda.c does) or exit.
 */
#ifndef FP8C_JIT_H
#define FP8C_JIT_H

#include <stddef.h>

typedef struct JitLib JitLib;

/* NULL with a message in err when NVRTC cannot be loaded. */
JitLib *jit_open(char *err, size_t errlen);
void jit_close(JitLib *j);
void jit_version(const JitLib *j, int *major, int *minor);

typedef struct {
    const char *name;        /* kernel name: NAME.cu in messages */
    const char *src;         /* the whole source */
    /* results */
    int ok;
    int cached;              /* served from the disk cache */
    double seconds;          /* NVRTC time (0 when cached) */
    char *ptx;               /* NUL-terminated, malloc'd */
    char *cubin;             /* malloc'd, cubin_len bytes (NULL for compute_XX archs) */
    size_t cubin_len;
    char *log;               /* NVRTC log incl. ptxas -v lines, malloc'd, may be "" */
    int regs, spill_stores, spill_loads, smem_static, stack; /* first entry's ptxas report; max over entries */
    char err[2048];          /* on failure: NVRTC's first error with the source line */
} JitJob;

/* Compile n jobs for arch ("sm_90a", "sm_89", ...) on up to `threads` threads (0: all cores),
 * through the cache unless cache_dir is NULL. Returns the number of failed jobs. debug >= 1
 * prints per-kernel timings, >= 2 the source of failures, >= 3 the PTX (FP8C_DEBUG). */
int jit_compile_all(JitLib *j, JitJob *jobs, int n, const char *arch, const char *cache_dir, int threads, int debug);
void jit_job_free(JitJob *job);

/* $FP8C_CACHE_DIR, else $HOME/.cache/fp8c (created, with parents); NULL if neither works. */
const char *jit_cache_dir(char *buf, size_t n);

/* The whole file, NUL-terminated, malloc'd (len may be NULL); NULL if it cannot be read. */
char *jit_read_file(const char *path, size_t *len);
/* Write through a temporary file in the same directory and rename: readers see all or nothing. */
int jit_write_atomic(const char *path, const void *data, size_t n);

/* Parse ptxas -v lines of an NVRTC log into job's resource fields (exposed for tests). */
void jit_parse_ptxas(JitJob *job, const char *log);

#endif
