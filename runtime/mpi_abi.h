/* mpi_abi.h: the part of Open MPI's ABI that dist.c calls, copied from Debian's Open MPI 4.1
 * mpi.h (libopenmpi-dev, /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h) so that fp8c builds
 * and runs single-process on machines without MPI; dist.c opens libmpi.so.40 with dlopen only
 * when a launcher (mpirun) started the process. Included by dist.c and by
 * tests/unit/check_mpi_headers.c only.
 *
 * Why Open MPI's ABI and not "MPI's": the MPI standard fixes an API, not an ABI. Open MPI's
 * handles are pointers to predefined global objects (MPI_COMM_WORLD is &ompi_mpi_comm_world),
 * MPICH's are integers; a dlopen'ed MPI must commit to one. Debian's openmpi-bin is the MPI CI
 * installs, so fp8c speaks Open MPI's (libmpi.so.40: Open MPI 3.0 to 5.x) and refuses to start a
 * multi-rank run under another launcher (dist.c says so).
 *
 * Two modes, like cuda_abi.h. Normally the handle types are declared here with mpi.h's own struct
 * tags (so a field spelled here has exactly the type of mpi.h's function). Under
 * -DFP8C_CHECK_MPI_HEADERS, where mpi.h exists, mpi.h itself is included, and the checker
 * compares every table field with the real function's type, every constant with mpi.h's, and
 * every predefined handle's symbol with the one mpi.h's macro takes the address of.
 *
 * Must not: declare anything dist.c does not use.
 */
#ifndef FP8C_MPI_ABI_H
#define FP8C_MPI_ABI_H

/* Private types: name, how fp8c spells it (mpi.h line of the real one). */
#define MPI_ABI_TYPES(X)                                                                          \
    X(MPI_Comm, struct ompi_communicator_t *)     /* mpi.h:419 */                                \
    X(MPI_Datatype, struct ompi_datatype_t *)     /* mpi.h:420 */                                \
    X(MPI_Errhandler, struct ompi_errhandler_t *) /* mpi.h:421 */                                \
    X(MPI_Op, struct ompi_op_t *)                 /* mpi.h:425 */

/* Integer constants: name, value. */
#define MPI_ABI_CONSTANTS(X)                                                                      \
    X(MPI_SUCCESS, 0)                                                                             \
    X(MPI_MAX_ERROR_STRING, 256)

/* Predefined handles: dist.c field, mpi.h macro, the global object its value is the address of
 * (resolved with dlsym). */
#define MPI_ABI_HANDLES(X)                                                                        \
    X(comm_world, MPI_COMM_WORLD, ompi_mpi_comm_world)                                            \
    X(t_float, MPI_FLOAT, ompi_mpi_float)                                                         \
    X(t_double, MPI_DOUBLE, ompi_mpi_double)                                                      \
    X(t_byte, MPI_BYTE, ompi_mpi_byte)                                                            \
    X(t_int, MPI_INT, ompi_mpi_int)                                                               \
    X(errors_return, MPI_ERRORS_RETURN, ompi_mpi_errors_return)

/* Entry points: MpiLib field, symbol. */
#define MPI_ENTRY_POINTS(X)                                                                       \
    X(Init, MPI_Init)                                                                             \
    X(Finalize, MPI_Finalize)                                                                     \
    X(Comm_rank, MPI_Comm_rank)                                                                   \
    X(Comm_size, MPI_Comm_size)                                                                   \
    X(Comm_set_errhandler, MPI_Comm_set_errhandler)                                               \
    X(Error_string, MPI_Error_string)                                                             \
    X(Abort, MPI_Abort)                                                                           \
    X(Barrier, MPI_Barrier)                                                                       \
    X(Bcast, MPI_Bcast)                                                                           \
    X(Allgather, MPI_Allgather)                                                                   \
    X(Allgatherv, MPI_Allgatherv)                                                                 \
    X(Alltoallv, MPI_Alltoallv)

#if defined(FP8C_CHECK_MPI_HEADERS) && __has_include(<mpi.h>)
#include <mpi.h>
#define FP8C_MPI_ABI_REAL 1 /* the checker reports when this is missing */
#else
#define MPI_ABI_TYPEDEF_(name, rep) typedef rep name;
MPI_ABI_TYPES(MPI_ABI_TYPEDEF_)
#undef MPI_ABI_TYPEDEF_
#define MPI_ABI_ENUM_(name, value) name = value,
enum { MPI_ABI_CONSTANTS(MPI_ABI_ENUM_) };
#undef MPI_ABI_ENUM_
#define MPI_IN_PLACE ((void *)1) /* mpi.h:518 */
#endif

/* One field per MPI_ENTRY_POINTS row, in mpi.h's parameter types. */
typedef struct {
    int (*Init)(int *argc, char ***argv);
    int (*Finalize)(void);
    int (*Comm_rank)(MPI_Comm comm, int *rank);
    int (*Comm_size)(MPI_Comm comm, int *size);
    int (*Comm_set_errhandler)(MPI_Comm comm, MPI_Errhandler errhandler);
    int (*Error_string)(int errorcode, char *string, int *resultlen);
    int (*Abort)(MPI_Comm comm, int errorcode);
    int (*Barrier)(MPI_Comm comm);
    int (*Bcast)(void *buffer, int count, MPI_Datatype datatype, int root, MPI_Comm comm);
    int (*Allgather)(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount,
                     MPI_Datatype recvtype, MPI_Comm comm);
    int (*Allgatherv)(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, const int recvcounts[],
                      const int displs[], MPI_Datatype recvtype, MPI_Comm comm);
    int (*Alltoallv)(const void *sendbuf, const int sendcounts[], const int sdispls[], MPI_Datatype sendtype, void *recvbuf,
                     const int recvcounts[], const int rdispls[], MPI_Datatype recvtype, MPI_Comm comm);
} MpiLib;

#endif
