// common.cuh: what every generated kernel shares. Storage types, loads and stores with
// round-to-nearest-even, FP8 encode/decode through the hardware cvt instructions, the scale rule
// of DESIGN.md section 6, and warp/block reductions.
//
// Codegen pastes this file, then one template family, then the extern "C" entry points into each
// emitted kernels/*.cu, so an emitted file is self-contained: NVRTC gets no include paths and no
// CUDA headers (shared/notes/cuda-apis.md 2.4), and a reviewer reads everything in one place.
// Must not: depend on any header, use fast-math style approximations (the CPU reference is the
// oracle: `x * s` then a satfinite cvt must give the same byte as runtime/fp8.c).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#if defined(FP8C_HOST)
// tests/host: the host tier compiles this file as C++ for the CPU (tests only; see PTX helpers)
#elif !defined(__CUDA_ARCH__)
#error "fp8c kernels are device code: compile them with NVRTC for sm_89 or later"
#elif __CUDA_ARCH__ < 890
#error "fp8c kernels need FP8 conversions: sm_89 or later"
#endif

// 16-bit storage types. Plain structs, not cuda_bf16.h: the bytes are what the CPU backend holds.
struct bf16 { u16 x; };
struct f16 { u16 x; };

// What the training loop changes between steps lives in device memory, so a captured CUDA graph
// replays with new values (runtime/cuda/cuda.c writes it before every launch of the step).
struct Fp8cRunState {
    float dloss;      // gradient of each token's loss: loss_scale / (tokens x grad_accum)
    float lr;         // learning rate of this step
    float grad_scale; // multiplier AdamW applies to gradients (unscale x clip)
    float pad0;
    int opt_step;     // 1-based AdamW step
    int amax_step;    // 0-based applied step, the amax-history ring position
    int pad1, pad2;
};

// FP8 formats, as ops.h numbers them (QFormat in runtime/quant.h).
#define FMT_E4M3 0
#define FMT_E5M2 1
#define FMT_E2M1 2

template <int FMT> struct FmtMax;
template <> struct FmtMax<FMT_E4M3> { static constexpr float v = 448.0f; };
template <> struct FmtMax<FMT_E5M2> { static constexpr float v = 57344.0f; };
template <> struct FmtMax<FMT_E2M1> { static constexpr float v = 6.0f; };

// ---- PTX helpers -------------------------------------------------------------------------------
// Every inline PTX instruction of the templates, by name, here and nowhere else. The host tier
// (tests/host, tests only) compiles the kernels with FP8C_HOST defined and gets a host twin of
// each from tests/host/cuda_host_ptx.h; NVRTC never sees that branch.
#ifdef FP8C_HOST
#include "cuda_host_ptx.h"
#else

// Conversions, round-to-nearest-even. The pair forms put `hi` in bits 16-31, `lo` in bits 0-15.
__device__ __forceinline__ float f16_bits_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f32_to_bf16_bits(float v) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
__device__ __forceinline__ u16 f32_to_f16_bits(float v) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
// Two floats to two FP8 codes, round-to-nearest-even with saturation (cvt.rn.satfinite).
template <int FMT> __device__ __forceinline__ u16 fp8x2_encode_sat(float hi, float lo) {
    u16 r;
    if (FMT == FMT_E4M3)
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
}
// Two FP8 codes to two halves (exact).
template <int FMT> __device__ __forceinline__ u32 fp8x2_to_f16x2(u16 in) {
    u32 h2;
    if (FMT == FMT_E4M3)
        asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(in));
    else
        asm("cvt.rn.f16x2.e5m2x2 %0, %1;" : "=r"(h2) : "h"(in));
    return h2;
}

// The 32-bit shared-window address of a generic pointer into shared memory.
__device__ __forceinline__ u32 smem_addr(const void *p) {
    u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
// 16 bytes global -> shared, asynchronously (complete after cp_async_wait of its group).
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
// The same; ok == false writes 16 zero bytes and reads nothing (src-size 0).
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// ldmatrix .x4: four 8x8 matrices of 16-byte rows; lane l gives the address of row l%8 of matrix
// l/8 and receives, of each matrix, the 4 bytes 4*(l%4)..+3 of row l/4 (as b16 pairs: row l/4,
// columns 2*(l%4), +1). .trans gives each matrix transposed (rows 2*(l%4), +1 of column l/4).
__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// d += a (16x32, row) x b (32x8, col), FP8 operands (E4M3/E5M2 in any pairing), FP32 accumulators.
template <int AF, int BF> __device__ __forceinline__ void mma_m16n8k32_fp8(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    static_assert((AF == FMT_E4M3 || AF == FMT_E5M2) && (BF == FMT_E4M3 || BF == FMT_E5M2),
                  "mma.sync m16n8k32 multiplies E4M3 and E5M2 only (E2M1 needs sm_100a)");
#define FP8C_MMA_FP8(AT, BT)                                                                                     \
    asm("mma.sync.aligned.m16n8k32.row.col.f32." AT "." BT ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "        \
        "{%0,%1,%2,%3};"                                                                                         \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                         \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
    if constexpr (AF == FMT_E4M3 && BF == FMT_E4M3) FP8C_MMA_FP8("e4m3", "e4m3");
    else if constexpr (AF == FMT_E4M3 && BF == FMT_E5M2) FP8C_MMA_FP8("e4m3", "e5m2");
    else if constexpr (AF == FMT_E5M2 && BF == FMT_E4M3) FP8C_MMA_FP8("e5m2", "e4m3");
    else FP8C_MMA_FP8("e5m2", "e5m2");
#undef FP8C_MMA_FP8
}
// d += a (16x16, row) x b (16x8, col), bf16 or f16 operands, FP32 accumulators.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The launch's dynamic shared memory must cover `need` bytes: trap otherwise, so that a
// launch-shape mismatch with the generator is loud instead of a silent overrun.
__device__ __forceinline__ void check_dynamic_smem(u32 need) {
    u32 have;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(have));
    if (have < need) __trap();
}

// The block's dynamic shared memory as an array NAME of T, aligned to ALIGN bytes.
#define DYNAMIC_SMEM(T, NAME, ALIGN) extern __shared__ __align__(ALIGN) T NAME[]

#endif // FP8C_HOST

// ---- loads and stores ------------------------------------------------------------------------

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(bf16 v) { return __uint_as_float(((u32)v.x) << 16); }
__device__ __forceinline__ float ld(f16 v) { return f16_bits_to_f32(v.x); }

__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16 *p, float v) { p->x = f32_to_bf16_bits(v); }
__device__ __forceinline__ void st(f16 *p, float v) { p->x = f32_to_f16_bits(v); }

// Round a float through a storage type (what st then ld would give).
template <typename T> __device__ __forceinline__ float round_to(float v) {
    T t;
    st(&t, v);
    return ld(t);
}

// ---- FP8 -------------------------------------------------------------------------------------

// Round-to-nearest-even with saturation to the largest finite value (DESIGN.md section 6).
// The cvt instructions convert pairs; the second lane is 0 and dropped.
template <int FMT> __device__ __forceinline__ u8 fp8_encode(float x) {
    static_assert(FMT == FMT_E4M3 || FMT == FMT_E5M2, "fp8_encode: E2M1 needs sm_100a, not supported by these templates");
    return (u8)(fp8x2_encode_sat<FMT>(0.0f, x) & 0xff);
}

// Exact: every FP8 value is a half, every half a float.
template <int FMT> __device__ __forceinline__ float fp8_decode(u8 c) {
    static_assert(FMT == FMT_E4M3 || FMT == FMT_E5M2, "fp8_decode: E2M1 needs sm_100a, not supported by these templates");
    return f16_bits_to_f32((u16)(fp8x2_to_f16x2<FMT>(c) & 0xffff));
}

// runtime/quant.c q_compute_scale without pow2: fmax / amax * 2^-margin; an amax of 0 or not
// finite keeps prev (and the caller counts it); an overflowing scale becomes FLT_MAX.
__device__ __forceinline__ float compute_scale(float amax, float fmax, int margin, float prev) {
    if (!(amax > 0.0f) || isinf(amax)) return prev;
    float s = ldexpf(fmax / amax, -margin);
    if (isinf(s)) s = 3.402823466e38f;
    return s;
}

// max |x| that propagates NaN (NaN wins over Inf), as q_amax does.
__device__ __forceinline__ float amax_combine(float a, float b) {
    if (isnan(a) || isnan(b)) return __int_as_float(0x7fffffff);
    return fmaxf(a, b);
}

// ---- reductions ------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_amax(float v) {
    for (int o = 16; o > 0; o >>= 1) v = amax_combine(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of THREADS threads (a multiple of 32); every thread gets the result.
// smem: THREADS / 32 floats, reused after a __syncthreads.
template <int THREADS> __device__ __forceinline__ float block_sum(float v, float *smem) {
    static_assert(THREADS % 32 == 0 && THREADS <= 1024, "block_sum: THREADS must be a multiple of 32, at most 1024");
    v = warp_sum(v);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) smem[w] = v;
    __syncthreads();
    float r = 0.0f;
    for (int i = 0; i < THREADS / 32; i++) r += smem[i]; // fixed order: deterministic
    return r;
}
template <int THREADS> __device__ __forceinline__ float block_amax(float v, float *smem) {
    static_assert(THREADS % 32 == 0 && THREADS <= 1024, "block_amax: THREADS must be a multiple of 32, at most 1024");
    v = warp_amax(v);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) smem[w] = v;
    __syncthreads();
    float r = 0.0f;
    for (int i = 0; i < THREADS / 32; i++) r = amax_combine(r, smem[i]);
    return r;
}

// Grid-wide amax of non-negative floats through the float bit pattern (monotonic for x >= 0);
// a NaN (0x7fffffff is above every finite and Inf pattern) wins, as amax_combine wants.
__device__ __forceinline__ void atomic_amax(float *dst, float v) {
    atomicMax((unsigned int *)dst, __float_as_uint(fabsf(v)) > 0x7f800000u ? 0x7fffffffu : __float_as_uint(v));
}

// ---- vector loads and stores -------------------------------------------------------------------

// V consecutive elements of T moved as one aligned access (V * sizeof(T) a power of two, at most
// 16 bytes). Plan tensors start 256-byte aligned, so an element offset that is a multiple of V is.
template <typename T, int V> struct alignas(sizeof(T) * V) Pack { T e[V]; };

template <int V, typename T> __device__ __forceinline__ void pack_ld(float (&f)[V], const T *p) {
    Pack<T, V> r = *reinterpret_cast<const Pack<T, V> *>(p);
#pragma unroll
    for (int e = 0; e < V; e++) f[e] = ld(r.e[e]);
}
template <int V, typename T> __device__ __forceinline__ void pack_st(T *p, const float (&f)[V]) {
    Pack<T, V> r;
#pragma unroll
    for (int e = 0; e < V; e++) st(&r.e[e], f[e]);
    *reinterpret_cast<Pack<T, V> *>(p) = r;
}

// ---- quantized copy of a row-wise output (FUSE_NORM_QUANT, FUSE_ACT_QUANT) -----------------------
// The fused kernel quantizes the values it stores, rounded to the output's dtype, exactly as
// runtime/quant.c quantizes the stored tensor: q = encode(x * s), scale_inv = 1 / s.
#define QMODE_NONE 0   // no quantized copy
#define QMODE_TILE 1   // current scaling per 1 x TC tile; scale_inv in quant.h's VEC layout [i + b*R]
#define QMODE_TENSOR 2 // one given scale (delayed scaling); scale_inv[0] = 1 / scale, amax of the tensor

// Codes and scale of one piece of a row held by a warp: each lane holds KT runs of EPL values
// (run kk at codes + kk * 32 * EPL, the lane's offset already in `codes`). QMODE_TILE: the piece
// is one tile; its scale comes from the warp's amax (NaN wins; 0 or non-finite gives the safe
// scale 1, as q_compute_scale) and lane 0 writes its inverse to *sinv. QMODE_TENSOR: the given
// scale; lane_amax collects max |x| for the tensor's amax. Every lane of the warp must call this.
template <int QMODE, int FMT, int KT, int EPL>
__device__ __forceinline__ void rowq_store(u8 *codes, float *sinv, const float (&y)[KT][EPL], float given, float &lane_amax) {
    float m = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KT; kk++)
#pragma unroll
        for (int e = 0; e < EPL; e++) m = amax_combine(m, fabsf(y[kk][e]));
    float s = given;
    if (QMODE == QMODE_TILE) {
        s = compute_scale(warp_amax(m), FmtMax<FMT>::v, 0, 1.0f);
        if ((threadIdx.x & 31) == 0) *sinv = __fdiv_rn(1.0f, s);
    } else {
        lane_amax = amax_combine(lane_amax, m);
    }
#pragma unroll
    for (int kk = 0; kk < KT; kk++) {
        Pack<u8, EPL> q;
#pragma unroll
        for (int e = 0; e < EPL; e++) q.e[e] = fp8_encode<FMT>(__fmul_rn(y[kk][e], s));
        *reinterpret_cast<Pack<u8, EPL> *>(codes + kk * 32 * EPL) = q;
    }
}

// QMODE_TENSOR epilogue, called by every thread of every block: scale_inv[0] and the grid-wide
// amax (atomic max into *amax, which an earlier launch zeroed with rowq_zero_amax).
template <int THREADS>
__device__ __forceinline__ void rowq_tensor_finish(float *scale_inv, float *amax, float given, float lane_amax) {
    __shared__ float red[THREADS / 32];
    if (blockIdx.x == 0 && threadIdx.x == 0) scale_inv[0] = __fdiv_rn(1.0f, given);
    float m = block_amax<THREADS>(lane_amax, red);
    if (threadIdx.x == 0 && amax) atomic_amax(amax, m);
}
__device__ __forceinline__ void rowq_zero_amax(float *amax) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && amax) *amax = 0.0f;
}

// ---- deterministic column sums (bias and norm-weight gradients) --------------------------------
// dst_a[c] += sum over rows n < N of term_a(n, c), a < NACC, in two launches with the same
// arguments. colsum_partial (grid (ceil(C / (32*EPL)), ceil(N / ROWS)), 256 threads) sums each
// group g of ROWS rows into ws[(a*G + g)*C + c]; colsum_finish (grid ceil(C / 32), 256 threads)
// adds the G partials of a column in a fixed order, then adds that to dst. Deterministic, but the
// order is not the CPU's row-by-row `dst += term`: see the callers for the tolerance.
// term(acc, n, c0) adds row n's terms of columns c0 .. c0+EPL-1 to acc[a][0..EPL).
template <int N, int ROWS> struct ColsumGroups { static constexpr int v = (N + ROWS - 1) / ROWS; };

template <int NACC, int EPL, int ROWS, int N, int C, class Term>
__device__ __forceinline__ void colsum_partial(float *ws, const Term &term) {
    static_assert(C % EPL == 0, "colsum: a vector of EPL columns must not straddle the row end");
    constexpr int G = ColsumGroups<N, ROWS>::v;
    __shared__ float part[NACC][8][32 * EPL];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int c0 = (blockIdx.x * 32 + lane) * EPL, g = blockIdx.y;
    float acc[NACC][EPL];
#pragma unroll
    for (int a = 0; a < NACC; a++)
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[a][e] = 0.0f;
    int n1 = (g + 1) * ROWS < N ? (g + 1) * ROWS : N;
    if (c0 < C)
        for (int n = g * ROWS + warp; n < n1; n += 8) term(acc, n, c0);
#pragma unroll
    for (int a = 0; a < NACC; a++)
#pragma unroll
        for (int e = 0; e < EPL; e++) part[a][warp][lane * EPL + e] = acc[a][e];
    __syncthreads();
    int c = blockIdx.x * 32 * EPL + threadIdx.x;
    if (threadIdx.x < 32 * EPL && c < C)
#pragma unroll
        for (int a = 0; a < NACC; a++) {
            float s = 0.0f;
            for (int w = 0; w < 8; w++) s += part[a][w][threadIdx.x];
            ws[((i64)a * G + g) * C + c] = s;
        }
}

template <int N, int ROWS, int C, typename TD0, typename TD1>
__device__ __forceinline__ void colsum_finish(TD0 *dst0, TD1 *dst1, const float *ws) {
    constexpr int G = ColsumGroups<N, ROWS>::v;
    __shared__ float part[8][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c = blockIdx.x * 32 + lane;
    for (int a = 0; a < (dst1 ? 2 : 1); a++) {
        const float *p = ws + (i64)a * G * C;
        float s = 0.0f;
        if (c < C)
            for (int g = warp; g < G; g += 8) s += p[(i64)g * C + c];
        part[warp][lane] = s;
        __syncthreads();
        if (warp == 0 && c < C) {
            float t = 0.0f;
            for (int w = 0; w < 8; w++) t += part[w][lane];
            if (a == 0) st(&dst0[c], ld(dst0[c]) + t);
            else st(&dst1[c], ld(dst1[c]) + t);
        }
        __syncthreads();
    }
}
