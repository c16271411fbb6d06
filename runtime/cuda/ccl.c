/* ccl.c: NCCL through dlopen (ccl.h says what and what has not run yet). Must not: link NCCL, or
 * call it before ccl_open succeeded. */
#include "ccl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_abi.h"

struct Ccl {
    ncclComm_t comm;
    int rank, size;
};

static NcclLib lib;
static int loaded;

int ccl_open(int *version, char *err, size_t errlen) {
    if (!loaded) {
        void *dl = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!dl) {
            snprintf(err, errlen, "NCCL is not installed (libnccl.so.2: %s)", dlerror());
            return -1;
        }
        struct {
            const char *name;
            void **slot;
        } syms[] = {
#define SYM_(field, name) {#name, (void **)&lib.field},
            NCCL_ENTRY_POINTS(SYM_)
#undef SYM_
        };
        for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
            void *f = dlsym(dl, syms[i].name);
            if (!f) {
                snprintf(err, errlen, "libnccl.so.2 lacks %s: fp8c needs NCCL 2.7 or newer", syms[i].name);
                return -1;
            }
            memcpy(syms[i].slot, &f, sizeof f); /* POSIX: a dlsym result converts to a function pointer */
        }
        loaded = 1;
    }
    int v = 0;
    if (lib.GetVersion(&v) != ncclSuccess) {
        snprintf(err, errlen, "ncclGetVersion failed");
        return -1;
    }
    if (version) *version = v;
    return 0;
}

static int fail(ncclResult_t r, const char *what, char *err, size_t errlen) {
    snprintf(err, errlen, "%s failed: %s (ncclResult_t %d)", what, lib.GetErrorString(r), (int)r);
    return -1;
}

int ccl_unique_id(void *id, size_t n, char *err, size_t errlen) {
    if (!loaded && ccl_open(NULL, err, errlen)) return -1;
    if (n != sizeof(ncclUniqueId)) return snprintf(err, errlen, "a unique id is %zu bytes, not %zu", sizeof(ncclUniqueId), n), -1;
    ncclUniqueId u;
    ncclResult_t r = lib.GetUniqueId(&u);
    if (r != ncclSuccess) return fail(r, "ncclGetUniqueId", err, errlen);
    memcpy(id, &u, n);
    return 0;
}

Ccl *ccl_init(int rank, int size, const void *id, char *err, size_t errlen) {
    if (!loaded && ccl_open(NULL, err, errlen)) return NULL;
    setenv("NCCL_ALGO", "Ring", 0); /* see ccl.h: a fixed algorithm and protocol, a fixed order */
    setenv("NCCL_PROTO", "Simple", 0);
    Ccl *c = calloc(1, sizeof *c);
    if (!c) return snprintf(err, errlen, "out of memory"), NULL;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclResult_t r = lib.CommInitRank(&c->comm, size, u, rank);
    if (r != ncclSuccess) {
        fail(r, "ncclCommInitRank", err, errlen);
        free(c);
        return NULL;
    }
    c->rank = rank;
    c->size = size;
    return c;
}

int ccl_allreduce_sum(Ccl *c, void *dbuf, size_t n, int bf16, void *stream, char *err, size_t errlen) {
    ncclResult_t r = lib.AllReduce(dbuf, dbuf, n, bf16 ? ncclBfloat16 : ncclFloat32, ncclSum, c->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail(r, "ncclAllReduce (gradients)", err, errlen);
}

int ccl_allgather(Ccl *c, const void *dsend, void *drecv, size_t bytes, void *stream, char *err, size_t errlen) {
    ncclResult_t r = lib.AllGather(dsend, drecv, bytes, ncclUint8, c->comm, (cudaStream_t)stream);
    return r == ncclSuccess ? 0 : fail(r, "ncclAllGather (ZeRO-1 parameters)", err, errlen);
}

void ccl_free(Ccl *c, int abort) {
    if (!c) return;
    if (abort) lib.CommAbort(c->comm);
    else lib.CommDestroy(c->comm);
    free(c);
}
