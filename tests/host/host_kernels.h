/* host_kernels.h: the host tier's kernels (tests only). Every kernel a plan lists (plan.json
 * "kernels", whatever template made it) is compiled from the plan's kernels/NAME.cu as C++ for
 * the host with tests/host/cuda_host.h, g++ -O1, into one shared object per kernel, cached by the
 * hash of its code and of the shim (a kernel that several plans share compiles once), and its
 * entries are launched through host_rt.cpp. Must not: be linked into fp8c. */
#ifndef FP8C_HOST_KERNELS_H
#define FP8C_HOST_KERNELS_H

#include <stddef.h>

#include "runtime.h"

typedef struct HostKernels HostKernels;

/* src: the repository root (tests/host and runtime/ under it); cache: where the shared objects go
 * (created). Compiles what the cache lacks, jobs at a time, then loads every entry. */
HostKernels *hk_open(const Plan *p, const char *src, const char *cache, int jobs, char *err, size_t n);
/* One entry of one kernel over its grid; args as cuLaunchKernel takes them. order 0: blocks and
 * threads ascending, 1: descending. */
int hk_launch(HostKernels *h, int kernel, int entry, void **args, int order, char *err, size_t n);
/* The same with the launch's own shape (the test-double driver's cuLaunchKernel: tests/cudadouble). */
int hk_launch_shape(HostKernels *h, int kernel, int entry, const unsigned grid[3], const unsigned block[3], unsigned smem, void **args,
                    int order, char *err, size_t n);
void hk_close(HostKernels *h);

#endif
