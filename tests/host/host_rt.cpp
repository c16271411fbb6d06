// host_rt.cpp: the host tier's runtime (tests only): runs one launch of a kernel compiled with
// cuda_host.h, block after block, the block's threads as cooperative fibers (ucontext) of the
// calling OS thread. What cuda_host.h promises is implemented here:
//   __syncthreads    waits for every thread of the block that has not exited;
//   warp collectives wait for every lane of the mask; a lane of the mask that has exited is an
//                    error (undefined on the hardware), a lane the block does not have is not
//                    waited for; the last lane to arrive computes all lanes' results;
//   deadlock         (every live thread waits and nothing can proceed) fails the launch;
//   __trap           fails the launch with the thread that trapped.
// Fragment layouts of ldmatrix and mma.sync follow the PTX ISA's tables ("Matrix Fragments for
// mma.m16n8k32" with .e4m3/.e5m2, "... mma.m16n8k16 with floating point type", "Warp-level matrix
// load instruction: ldmatrix"); tests/host/test_host_shim.cpp checks them against plain products.
// Single-threaded by design: one launch at a time per process.
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define UNPOISON_STACK(p, n) __asan_unpoison_memory_region((p), (n)) // a reused stack's old frames
#else
#define UNPOISON_STACK(p, n) ((void)0)
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
#define FMT_E4M3 0
#define FMT_E5M2 1
#include "cuda_host.h"
#include "cuda_host_ptx.h"

fp8c_uint3 threadIdx, blockIdx, blockDim, gridDim;

// ---- fiber switch ----------------------------------------------------------------------------------
// x86-64: save the callee-saved registers on the current stack, swap stack pointers, restore
// (glibc's swapcontext also saves the signal mask: a system call per switch, most of the tier's
// run time). Elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void fp8c_host_switch(void **save_sp, void *to_sp);
asm(".text\n"
    ".globl fp8c_host_switch\n"
    ".hidden fp8c_host_switch\n"
    ".type fp8c_host_switch,@function\n"
    "fp8c_host_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size fp8c_host_switch, .-fp8c_host_switch\n");
#define FAST_SWITCH 1
#endif

namespace {

enum { F_READY, F_BARRIER, F_WARP, F_DONE };

struct CpCopy {
    void *dst;
    u8 data[16];
};

struct Fiber {
#ifdef FAST_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    int state;
    fp8c_uint3 tid;
    unsigned slot_gen; // the warp generation this lane's pending collective belongs to
    std::vector<CpCopy> cp_open;                // issued, not committed
    std::vector<std::vector<CpCopy>> cp_groups; // committed, oldest first
};

struct Warp {
    unsigned arrived, mask, gen;
    Fp8cWarpSlot slot[2][32];
    Fp8cWarpFn fn;
    int arg;
};

const size_t kStack = 256 << 10;

struct Sched {
    std::vector<Fiber> f;
    std::vector<Warp> w;
    std::vector<char *> stacks;
#ifdef FAST_SWITCH
    void *main_sp;
#else
    ucontext_t main_ctx;
#endif
    int nthreads, live, at_barrier, cur;
    Fp8cHostThunk thunk;
    void **args;
    std::vector<u8> dyn;
    unsigned dyn_size;
    char err[512];
    int failed;
} S;

void fail(const char *msg) {
    if (!S.failed) {
        snprintf(S.err, sizeof S.err, "block (%u,%u,%u) thread (%u,%u,%u): %s", blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
                 threadIdx.z, msg);
        S.failed = 1;
    }
}

#ifdef FAST_SWITCH
void yield() { fp8c_host_switch(&S.f[S.cur].sp, S.main_sp); }
void resume(int i) { fp8c_host_switch(&S.main_sp, S.f[i].sp); }
#else
void yield() { swapcontext(&S.f[S.cur].ctx, &S.main_ctx); }
void resume(int i) { swapcontext(&S.main_ctx, &S.f[i].ctx); }
#endif

void cp_flush_group(Fiber &t, size_t g) {
    for (CpCopy &c : t.cp_groups[g]) memcpy(c.dst, c.data, 16);
}

void fiber_main() {
    S.thunk(S.args);
    Fiber &t = S.f[S.cur];
    if (!t.cp_open.empty() || !t.cp_groups.empty()) fail("cp.async copies never waited for (cp.async.wait_group missing)");
    t.state = F_DONE;
    S.live--;
    // a thread's exit can complete a barrier the others wait at (exited threads count as arrived)
    if (S.at_barrier && S.at_barrier == S.live) {
        for (Fiber &o : S.f)
            if (o.state == F_BARRIER) o.state = F_READY;
        S.at_barrier = 0;
    }
    // (uc_link returns to the scheduler)
}

#ifdef FAST_SWITCH
[[noreturn]] void fiber_trampoline() {
    fiber_main();
    void *dead;
    fp8c_host_switch(&dead, S.main_sp); // never resumed
    __builtin_unreachable();
}
#endif

void release_warp(Warp &w, int wi, unsigned need) {
    Fp8cWarpSlot *sl = w.slot[w.gen & 1];
    w.fn(sl, need, w.arg);
    for (int l = 0; l < 32; l++)
        if (need >> l & 1) S.f[wi * 32 + l].state = F_READY;
    w.arrived &= ~need;
    w.gen++;
}

// The lanes the block has (a partial last warp has fewer than 32).
unsigned present_lanes(int wi) {
    int n = S.nthreads - wi * 32;
    return n >= 32 ? 0xffffffffu : (1u << n) - 1u;
}

int run_block(int order) {
    int n = S.nthreads;
    S.live = n, S.at_barrier = 0;
    for (int i = 0; i < n; i++) {
        Fiber &t = S.f[i];
        t.state = F_READY;
        t.tid = {(unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y, (unsigned)i / (blockDim.x * blockDim.y)};
        t.cp_open.clear(), t.cp_groups.clear();
#ifdef FAST_SWITCH
        // what fp8c_host_switch pops: six registers, then the return address fiber_trampoline,
        // then a slot that leaves the stack 16-byte aligned as at a call
        UNPOISON_STACK(S.stacks[i], kStack);
        void **top = (void **)(S.stacks[i] + kStack);
        top[-1] = nullptr;
        top[-2] = (void *)&fiber_trampoline;
        for (int r = 3; r <= 8; r++) top[-r] = nullptr;
        t.sp = &top[-8];
#else
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = S.stacks[i];
        t.ctx.uc_stack.ss_size = kStack;
        t.ctx.uc_link = &S.main_ctx;
        makecontext(&t.ctx, fiber_main, 0);
#endif
    }
    for (Warp &w : S.w) w.arrived = 0, w.gen = 0;
    while (S.live > 0) {
        int ran = 0;
        for (int k = 0; k < n; k++) {
            int i = order ? n - 1 - k : k;
            if (S.f[i].state != F_READY) continue;
            S.cur = i;
            threadIdx = S.f[i].tid;
            resume(i);
            ran = 1;
            if (S.failed) return -1;
        }
        if (!ran && S.live > 0) {
            char msg[256];
            int b = 0, w = 0;
            for (Fiber &t : S.f) b += t.state == F_BARRIER, w += t.state == F_WARP;
            snprintf(msg, sizeof msg, "deadlock: %d threads wait at __syncthreads, %d at a warp collective, none can go on", b, w);
            threadIdx = {0, 0, 0};
            fail(msg);
            return -1;
        }
    }
    return 0;
}

} // namespace

// ---- what the kernel calls -----------------------------------------------------------------------

void __syncthreads() {
    Fiber &t = S.f[S.cur];
    if (++S.at_barrier == S.live) {
        for (Fiber &o : S.f)
            if (o.state == F_BARRIER) o.state = F_READY;
        S.at_barrier = 0;
        return;
    }
    t.state = F_BARRIER;
    yield();
    threadIdx = t.tid;
}

void __trap() {
    fail("__trap()");
    Fiber &t = S.f[S.cur];
    t.state = F_DONE;
    S.live--;
#ifdef FAST_SWITCH
    yield(); // never resumed: the launch fails
#else
    setcontext(&S.main_ctx); // never returns; the launch fails
#endif
}

void *fp8c_host_dynamic_smem() { return S.dyn.data(); }
unsigned fp8c_host_dynamic_smem_size() { return S.dyn_size; }
unsigned fp8c_lane() { return (unsigned)S.cur & 31u; }

Fp8cWarpSlot fp8c_warp_collective(unsigned mask, const Fp8cWarpSlot &mine, Fp8cWarpFn fn, int arg) {
    int me = S.cur, wi = me / 32, lane = me & 31;
    Warp &w = S.w[wi];
    Fiber &t = S.f[me];
    unsigned need = mask & present_lanes(wi);
    if (!(need >> lane & 1)) {
        fail("a warp collective whose mask leaves out the calling lane");
        __trap();
    }
    for (int l = 0; l < 32; l++)
        if ((need >> l & 1) && S.f[wi * 32 + l].state == F_DONE) {
            fail("a warp collective whose mask names a lane that has exited (undefined on the GPU)");
            __trap();
        }
    if (w.arrived == 0) w.mask = need, w.fn = fn, w.arg = arg;
    else if (w.mask != need || w.fn != fn) {
        fail("lanes of one warp meet in different warp collectives (diverged)");
        __trap();
    }
    t.slot_gen = w.gen;
    w.slot[w.gen & 1][lane] = mine;
    w.arrived |= 1u << lane;
    if ((w.arrived & need) == need) {
        release_warp(w, wi, need);
    } else {
        t.state = F_WARP;
        yield();
        threadIdx = t.tid;
    }
    return w.slot[t.slot_gen & 1][lane];
}

void fp8c_warp_shfl_idx(Fp8cWarpSlot *l, unsigned mask, int width) {
    for (int i = 0; i < 32; i++)
        if (mask >> i & 1) {
            int src = (i & ~(width - 1)) + ((int)l[i].in[1] & (width - 1));
            l[i].out[0] = (mask >> src & 1) ? l[src].in[0] : l[i].in[0];
        }
}
void fp8c_warp_shfl_xor(Fp8cWarpSlot *l, unsigned mask, int width) {
    for (int i = 0; i < 32; i++)
        if (mask >> i & 1) {
            int src = i ^ (int)l[i].in[1];
            l[i].out[0] = src < ((i & ~(width - 1)) + width) && (mask >> src & 1) ? l[src].in[0] : l[i].in[0];
        }
}
void fp8c_warp_shfl_down(Fp8cWarpSlot *l, unsigned mask, int width) {
    for (int i = 0; i < 32; i++)
        if (mask >> i & 1) {
            int src = i + (int)l[i].in[1];
            l[i].out[0] = src < ((i & ~(width - 1)) + width) && (mask >> src & 1) ? l[src].in[0] : l[i].in[0];
        }
}
void fp8c_warp_shfl_up(Fp8cWarpSlot *l, unsigned mask, int width) {
    for (int i = 0; i < 32; i++)
        if (mask >> i & 1) {
            int src = i - (int)l[i].in[1];
            l[i].out[0] = src >= (i & ~(width - 1)) && (mask >> src & 1) ? l[src].in[0] : l[i].in[0];
        }
}
void fp8c_warp_ballot(Fp8cWarpSlot *l, unsigned mask, int) {
    unsigned b = 0;
    for (int i = 0; i < 32; i++)
        if ((mask >> i & 1) && l[i].in[0]) b |= 1u << i;
    for (int i = 0; i < 32; i++) l[i].out[0] = b;
}

// ---- cp.async -------------------------------------------------------------------------------------

void fp8c_host_cp_async(void *dst, const void *src, bool ok) {
    if ((uintptr_t)dst % 16 || (ok && (uintptr_t)src % 16)) {
        fail("cp.async of 16 bytes with an address that is not 16-byte aligned");
        __trap();
    }
    CpCopy c;
    c.dst = dst;
    if (ok) memcpy(c.data, src, 16);
    else memset(c.data, 0, 16);
    S.f[S.cur].cp_open.push_back(c);
}
void fp8c_host_cp_commit() {
    Fiber &t = S.f[S.cur];
    t.cp_groups.push_back(std::move(t.cp_open));
    t.cp_open.clear();
}
void fp8c_host_cp_wait(int n) {
    Fiber &t = S.f[S.cur];
    size_t keep = (size_t)n;
    if (t.cp_groups.size() <= keep) return;
    size_t done = t.cp_groups.size() - keep;
    for (size_t g = 0; g < done; g++) cp_flush_group(t, g);
    t.cp_groups.erase(t.cp_groups.begin(), t.cp_groups.begin() + (long)done);
}

// ---- ldmatrix -------------------------------------------------------------------------------------
// PTX ISA, ldmatrix: for .x4, threads 8i..8i+7 give the addresses of rows 0-7 of matrix i; each
// thread receives, of matrix i, in register i, the b16 elements (row lane/4, columns 2*(lane%4)
// and +1); with .trans the matrix is transposed first, i.e. elements (rows 2*(lane%4), +1; column
// lane/4), lower index in the low half.

static void ldsm_fn(Fp8cWarpSlot *l, unsigned mask, int trans) {
    if (mask != 0xffffffffu) return; // refused below before it gets here
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 4; i++) {
            if (!trans) {
                const u8 *row = (const u8 *)l[i * 8 + lane / 4].p;
                memcpy(&l[lane].out[i], row + 4 * (lane % 4), 4);
            } else {
                u16 lo, hi;
                memcpy(&lo, (const u8 *)l[i * 8 + 2 * (lane % 4)].p + 2 * (lane / 4), 2);
                memcpy(&hi, (const u8 *)l[i * 8 + 2 * (lane % 4) + 1].p + 2 * (lane / 4), 2);
                l[lane].out[i] = (u32)lo | (u32)hi << 16;
            }
        }
}

void fp8c_host_ldsm_x4(u32 (&r)[4], const void *p, bool trans) {
    if (S.nthreads < (S.cur / 32 + 1) * 32) {
        fail("ldmatrix in a partial warp (.aligned needs all 32 lanes)");
        __trap();
    }
    if ((uintptr_t)p % 16) {
        fail("ldmatrix row address not 16-byte aligned");
        __trap();
    }
    Fp8cWarpSlot s = {};
    s.p = p;
    Fp8cWarpSlot o = fp8c_warp_collective(0xffffffffu, s, ldsm_fn, trans);
    memcpy(r, o.out, sizeof r);
}

// ---- mma.sync -------------------------------------------------------------------------------------
// groupID g = lane / 4, threadID_in_group t = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k32"):
//   A (16x32, 8-bit): a_i, i = 0..15 in registers i/4, byte i%4:
//       row = g for i < 4 or 8 <= i < 12, g + 8 otherwise; col = 4t + (i & 3) (+16 for i >= 8)
//   B (32x8): b_i, i = 0..7: row = 4t + (i & 3) (+16 for i >= 4); col = g
// ("... mma.m16n8k16 with floating point type", 16-bit elements, 2 per register):
//   A (16x16): a_i, i = 0..7: row = g for i < 2 or 4 <= i < 6, g + 8 otherwise; col = 2t + (i & 1) (+8 for i >= 4)
//   B (16x8): b_i, i = 0..3: row = 2t + (i & 1) (+8 for i >= 2); col = g
//   C, D (16x8 f32), both shapes: c_i, i = 0..3: row = g (+8 for i >= 2); col = 2t + (i & 1)
// The inverse maps below find the lane and the position of A[r][k] and B[k][n].
// Products are exact in double; each output is c + the sum of its K products in double, rounded
// once to float (the hardware's internal order and alignment differ: see templates/README.md).

static float fp8_val(int fmt, u8 c) { return fmt == FMT_E5M2 ? fp8c_e5m2_to_f32(c) : fp8c_e4m3_to_f32(c); }

static void mma_fn(Fp8cWarpSlot *l, unsigned, int kind) {
    static double A[16][32], B[32][8];
    int K = kind < 4 ? 32 : 16;
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < K; k++) {
            if (kind < 4) {
                int lane = (r % 8) * 4 + (k % 16) / 4, reg = (r >= 8) + 2 * (k >= 16), byte = k % 4;
                A[r][k] = fp8_val(kind >> 1, (u8)(l[lane].in[reg] >> (8 * byte)));
            } else {
                int lane = (r % 8) * 4 + (k % 8) / 2, reg = (r >= 8) + 2 * (k >= 8), half = k % 2;
                u16 h = (u16)(l[lane].in[reg] >> (16 * half));
                A[r][k] = kind == 4 ? fp8c_bf16_to_f32(h) : fp8c_f16_to_f32(h);
            }
        }
    for (int k = 0; k < K; k++)
        for (int n = 0; n < 8; n++) {
            if (kind < 4) {
                int lane = n * 4 + (k % 16) / 4, reg = 4 + (k >= 16), byte = k % 4;
                B[k][n] = fp8_val(kind & 1, (u8)(l[lane].in[reg] >> (8 * byte)));
            } else {
                int lane = n * 4 + (k % 8) / 2, reg = 4 + (k >= 8), half = k % 2;
                u16 h = (u16)(l[lane].in[reg] >> (16 * half));
                B[k][n] = kind == 4 ? fp8c_bf16_to_f32(h) : fp8c_f16_to_f32(h);
            }
        }
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 4; i++) {
            int r = lane / 4 + 8 * (i >= 2), n = 2 * (lane % 4) + (i & 1);
            float c;
            memcpy(&c, &l[lane].in[6 + i], 4);
            double s = c;
            for (int k = 0; k < K; k++) s += A[r][k] * B[k][n];
            float d = (float)s;
            memcpy(&l[lane].out[i], &d, 4);
        }
}

void fp8c_host_mma(int kind, float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    if (S.nthreads < (S.cur / 32 + 1) * 32) {
        fail("mma.sync in a partial warp (.aligned needs all 32 lanes)");
        __trap();
    }
    Fp8cWarpSlot s = {};
    memcpy(s.in, a, 16);
    s.in[4] = b0, s.in[5] = b1;
    memcpy(&s.in[6], d, 16);
    Fp8cWarpSlot o = fp8c_warp_collective(0xffffffffu, s, mma_fn, kind);
    memcpy(d, o.out, 16);
}

// ---- the launch -----------------------------------------------------------------------------------

extern "C" int fp8c_host_launch(const Fp8cHostLaunch *L, Fp8cHostThunk thunk, char *shared_lo, char *shared_hi) {
    int n = (int)(L->block[0] * L->block[1] * L->block[2]);
    if (n < 1 || n > 1024 || !L->grid[0] || !L->grid[1] || !L->grid[2]) {
        snprintf(L->err, L->errlen, "launch shape grid (%u,%u,%u) block (%u,%u,%u) is invalid", L->grid[0], L->grid[1], L->grid[2], L->block[0],
                 L->block[1], L->block[2]);
        return -1;
    }
    S.nthreads = n, S.thunk = thunk, S.args = L->args, S.failed = 0, S.err[0] = 0;
    S.f.resize((size_t)n);
    S.w.assign((size_t)(n + 31) / 32, Warp());
    while (S.stacks.size() < (size_t)n) {
        void *m = mmap(NULL, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            snprintf(L->err, L->errlen, "out of memory for %d thread stacks", n);
            return -1;
        }
        mprotect(m, 4096, PROT_NONE); // a guard page below the stack: an overflow faults
        S.stacks.push_back((char *)m + 4096);
    }
    S.dyn.assign(L->smem ? L->smem : 1, 0xFF);
    S.dyn_size = L->smem;
    blockDim = {L->block[0], L->block[1], L->block[2]};
    gridDim = {L->grid[0], L->grid[1], L->grid[2]};
    unsigned nb = L->grid[0] * L->grid[1] * L->grid[2];
    for (unsigned k = 0; k < nb; k++) {
        unsigned b = L->order ? nb - 1 - k : k;
        blockIdx = {b % L->grid[0], b / L->grid[0] % L->grid[1], b / (L->grid[0] * L->grid[1])};
        memset(S.dyn.data(), 0xFF, S.dyn.size()); // shared memory starts undefined: poisoned
        if (shared_lo && shared_hi > shared_lo) memset(shared_lo, 0xFF, (size_t)(shared_hi - shared_lo));
        if (run_block(L->order)) {
            snprintf(L->err, L->errlen, "%s", S.err);
            return -1;
        }
    }
    return 0;
}
