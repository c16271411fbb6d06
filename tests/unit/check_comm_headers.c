/* check_comm_headers.c: what runtime/mpi_abi.h copies from Open MPI's mpi.h and what
 * runtime/cuda/nccl_abi.h copies from nccl.h, asserted against those headers (the way
 * check_cuda_headers.c checks the CUDA libraries). fp8c builds without either header, so nothing
 * else would notice a wrong copy until a multi-rank run misbehaved.
 *
 * Built with -DFP8C_CHECK_MPI_HEADERS -DFP8C_CHECK_CUDA_HEADERS and both include directories
 * (build.ninja's mpiinc and cudainc), so the ABI headers take the real types and:
 *   - every private type has the real type's size and alignment (handles: the same struct tag);
 *   - every copied constant is the header's value;
 *   - every table field, spelled in the real types, has exactly the type of the real function;
 *   - (at run time) every predefined MPI handle's macro takes the address of the global object
 *     whose name dist.c passes to dlsym, and that object exists in libmpi.so.40; libnccl.so.2
 *     loads through ccl.c's table and reports the version nccl.h was written for or newer.
 * One PASS or FAIL line per library. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ccl.h"
#include "mpi_abi.h"
#include "nccl_abi.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
#define CHECK_REP(name, rep) \
    _Static_assert(sizeof(name) == sizeof(rep) && _Alignof(name) == _Alignof(rep), #name " is not represented as " #rep);
#define CHECK_CONST(name, value) _Static_assert((long long)(name) == (long long)(value), #name " is not " #value " in the header");
#define COUNT(...) +1
#define STR_(x) #x
#define XSTR(x) STR_(x)

/* ---- Open MPI ---- */
#ifdef FP8C_MPI_ABI_REAL
MPI_ABI_TYPES(CHECK_REP)
#define CHECK_MPI_TAG(name, rep) _Static_assert(SAME_TYPE(name, rep), #name " is not " #rep " in mpi.h");
MPI_ABI_TYPES(CHECK_MPI_TAG)
MPI_ABI_CONSTANTS(CHECK_CONST)
#define CHECK_MPI_FN(field, name) _Static_assert(SAME_TYPE(__typeof__(((MpiLib *)0)->field), __typeof__(&name)), "MpiLib." #field " is not " #name);
MPI_ENTRY_POINTS(CHECK_MPI_FN)
enum { MPI_N = 0 MPI_ENTRY_POINTS(COUNT) };
_Static_assert(sizeof(MpiLib) == MPI_N * sizeof(void (*)(void)), "an MpiLib field is missing from MPI_ENTRY_POINTS");

static int check_mpi(void) {
    struct {
        const char *macro, *expansion, *sym;
    } h[] = {
#define H_(field, macro, sym) {#macro, XSTR(macro), #sym},
        MPI_ABI_HANDLES(H_)
#undef H_
    };
    if ((void *)MPI_IN_PLACE != (void *)1) return printf("FAIL mpi_header_checks: MPI_IN_PLACE is not (void *)1\n"), 1;
    void *dl = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!dl) return printf("FAIL mpi_header_checks: libmpi.so.40 does not load (%s)\n", dlerror()), 1;
    int n = (int)(sizeof h / sizeof h[0]);
    for (int i = 0; i < n; i++) {
        /* "((MPI_Comm) ((void *) &(ompi_mpi_comm_world)))": the macro is the address of sym */
        char want[128];
        snprintf(want, sizeof want, "&(%s)", h[i].sym);
        if (!strstr(h[i].expansion, want))
            return printf("FAIL mpi_header_checks: %s expands to '%s', not the address of %s\n", h[i].macro, h[i].expansion, h[i].sym), 1;
        if (!dlsym(dl, h[i].sym)) return printf("FAIL mpi_header_checks: libmpi.so.40 has no %s (for %s)\n", h[i].sym, h[i].macro), 1;
    }
    printf("PASS mpi_header_checks (Open MPI %d.%d.%d: %d entry points, %d predefined handles by symbol, %d constants, %d handle types)\n",
           OMPI_MAJOR_VERSION, OMPI_MINOR_VERSION, OMPI_RELEASE_VERSION, MPI_N, n, 0 MPI_ABI_CONSTANTS(COUNT), 0 MPI_ABI_TYPES(COUNT));
    return 0;
}
#else
static int check_mpi(void) {
    printf("FAIL mpi_header_checks: Open MPI's mpi.h was not found in the include path (build.ninja's mpiinc; install "
           "libopenmpi-dev), so nothing runtime/mpi_abi.h copies from it was checked\n");
    return 1;
}
#endif

/* ---- NCCL ---- */
#ifdef FP8C_NCCL_ABI_REAL
NCCL_ABI_TYPES(CHECK_REP)
NCCL_ABI_CONSTANTS(CHECK_CONST)
_Static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId");
#define CHECK_NCCL_FN(field, name) _Static_assert(SAME_TYPE(__typeof__(((NcclLib *)0)->field), __typeof__(&name)), "NcclLib." #field " is not " #name);
NCCL_ENTRY_POINTS(CHECK_NCCL_FN)
enum { NCCL_N = 0 NCCL_ENTRY_POINTS(COUNT) };
_Static_assert(sizeof(NcclLib) == NCCL_N * sizeof(void (*)(void)), "an NcclLib field is missing from NCCL_ENTRY_POINTS");

static int check_nccl(void) {
    char err[512];
    int v = 0;
    if (ccl_open(&v, err, sizeof err)) return printf("FAIL nccl_header_checks: %s\n", err), 1;
    if (v < NCCL_VERSION_CODE)
        return printf("FAIL nccl_header_checks: libnccl.so.2 is version %d, older than nccl.h's %d\n", v, NCCL_VERSION_CODE), 1;
    printf("PASS nccl_header_checks (nccl.h %d, libnccl.so.2 %d through ccl.c's table: %d entry points, %d constants, %d types)\n",
           NCCL_VERSION_CODE, v, NCCL_N, 0 NCCL_ABI_CONSTANTS(COUNT), 0 NCCL_ABI_TYPES(COUNT));
    return 0;
}
#else
static int check_nccl(void) {
    printf("FAIL nccl_header_checks: nccl.h (and cuda_runtime.h) were not found in the include path (build.ninja's cudainc), "
           "so nothing runtime/cuda/nccl_abi.h copies from it was checked\n");
    return 1;
}
#endif

int main(void) {
    int bad = check_mpi();
    bad |= check_nccl();
    return bad;
}
