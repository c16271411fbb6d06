// cuda_host.h: the host tier's CUDA shim (tests only). An emitted kernels/*.cu compiles as C++
// for the host after this header (with FP8C_HOST defined, common.cuh takes the PTX helpers' host
// twins from cuda_host_ptx.h), and host_rt.cpp runs its launches:
//   - a block's threads are cooperative fibers of one OS thread; a fiber runs until it reaches a
//     barrier or a warp-collective operation, so the order in which threads run between those
//     points is whatever the launch's thread order says (ascending or descending), and a missing
//     barrier changes the result from one order to the other;
//   - warp collectives (__shfl*_sync, __ballot_sync, votes, __syncwarp, ldmatrix, mma.sync) wait
//     for every lane of the mask, then the last lane to arrive computes every lane's result at
//     once: lockstep semantics, as the hardware's warp-synchronous instructions have;
//   - __shared__ variables live in a section of the kernel's shared object that is filled with
//     0xFF before every block, as is the dynamic shared memory, so a read before a write shows;
//   - cp.async copies are held back until the issuing thread's cp.async.wait_group covers them.
// Must not: be used by fp8c itself (the GPU path is NVRTC's), or hide a race by running threads
// in a convenient order.
#ifndef FP8C_CUDA_HOST_H
#define FP8C_CUDA_HOST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <utility>

// ---- the language -------------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static storage that host_rt.cpp poisons before every block (see fp8c_shared_lo below).
#define __shared__ static __attribute__((section("fp8c_shared")))

struct fp8c_uint3 { unsigned x, y, z; };
extern fp8c_uint3 threadIdx, blockIdx, blockDim, gridDim;
static constexpr int warpSize = 32;

struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// ---- arithmetic intrinsics: IEEE float ops, round-to-nearest-even (compiled without contraction) --

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __expf(float a) { return expf(a); }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

// ---- the runtime (host_rt.cpp) ------------------------------------------------------------------

extern "C" {
// One launch of one entry: grid and block as the plan lists them, `args` as cuLaunchKernel takes
// them (one pointer per kernel parameter). order 0 runs blocks and threads in ascending order,
// order 1 in descending order. Returns 0, or -1 with the reason in err.
typedef struct {
    unsigned grid[3], block[3], smem;
    void **args;
    int order;
    char *err;
    size_t errlen;
} Fp8cHostLaunch;
typedef void (*Fp8cHostThunk)(void **args);
int fp8c_host_launch(const Fp8cHostLaunch *L, Fp8cHostThunk thunk, char *shared_lo, char *shared_hi);
}

void __syncthreads();
void __trap();
void *fp8c_host_dynamic_smem();
unsigned fp8c_host_dynamic_smem_size();

// A warp-collective operation: every lane of `mask` deposits `in`; when the last one arrives, it
// runs `fn` over the whole warp (in[32] -> out[32]) and every lane gets its own out.
struct Fp8cWarpSlot {
    unsigned in[10];
    const void *p;
    unsigned out[4];
};
typedef void (*Fp8cWarpFn)(Fp8cWarpSlot *lanes, unsigned mask, int arg);
Fp8cWarpSlot fp8c_warp_collective(unsigned mask, const Fp8cWarpSlot &mine, Fp8cWarpFn fn, int arg);
unsigned fp8c_lane();

void fp8c_warp_shfl_idx(Fp8cWarpSlot *l, unsigned mask, int width);
void fp8c_warp_shfl_xor(Fp8cWarpSlot *l, unsigned mask, int width);
void fp8c_warp_shfl_down(Fp8cWarpSlot *l, unsigned mask, int width);
void fp8c_warp_shfl_up(Fp8cWarpSlot *l, unsigned mask, int width);
void fp8c_warp_ballot(Fp8cWarpSlot *l, unsigned mask, int arg);

template <typename T> inline T fp8c_shfl(Fp8cWarpFn fn, unsigned mask, T v, int lane_arg, int width) {
    static_assert(sizeof(T) == 4, "host shim: 32-bit shuffles only");
    Fp8cWarpSlot s = {};
    memcpy(&s.in[0], &v, 4);
    s.in[1] = (unsigned)lane_arg;
    Fp8cWarpSlot r = fp8c_warp_collective(mask, s, fn, width);
    T out;
    memcpy(&out, &r.out[0], 4);
    return out;
}
template <typename T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return fp8c_shfl(fp8c_warp_shfl_idx, m, v, src, w); }
template <typename T> inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) { return fp8c_shfl(fp8c_warp_shfl_xor, m, v, x, w); }
template <typename T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return fp8c_shfl(fp8c_warp_shfl_down, m, v, (int)d, w); }
template <typename T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return fp8c_shfl(fp8c_warp_shfl_up, m, v, (int)d, w); }
inline unsigned __ballot_sync(unsigned m, int pred) {
    Fp8cWarpSlot s = {};
    s.in[0] = pred != 0;
    return fp8c_warp_collective(m, s, fp8c_warp_ballot, 0).out[0];
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, !pred) == 0; }
inline void __syncwarp(unsigned m = 0xffffffffu) { __ballot_sync(m, 0); }

// ---- atomics: a fiber never switches inside one, so plain read-modify-write is atomic ----------

template <typename T> inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

// ---- entry points -------------------------------------------------------------------------------
// FP8C_HOST_ENTRY(sym) after the kernel's source defines `int fp8c_host_launch_<sym>(L)`, which
// runs the entry over the launch's grid with the parameters unpacked from L->args.

template <class F> struct Fp8cThunk;
template <class... A> struct Fp8cThunk<void (*)(A...)> {
    template <void (*F)(A...), size_t... I> static void call(void **args, std::index_sequence<I...>) { F(*(A *)args[I]...); }
    template <void (*F)(A...)> static void run(void **args) { call<F>(args, std::index_sequence_for<A...>{}); }
};

// The bounds of the kernel's __shared__ variables, from the linker script host_kernels.c links
// each kernel with: g++ keeps a template's static locals in their own .bss._ZZ* sections (and
// ignores a section attribute there), and that script gathers them between these two symbols.
extern "C" char fp8c_shared_lo[] __attribute__((visibility("hidden")));
extern "C" char fp8c_shared_hi[] __attribute__((visibility("hidden")));

#define FP8C_HOST_ENTRY(sym)                                                                                         \
    extern "C" int fp8c_host_launch_##sym(const Fp8cHostLaunch *L) {                                                \
        return fp8c_host_launch(L, &Fp8cThunk<decltype(&sym)>::template run<&sym>, fp8c_shared_lo, fp8c_shared_hi); \
    }

#endif
