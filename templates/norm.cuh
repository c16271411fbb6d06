// norm.cuh: RMSNorm and LayerNorm, forward and backward (ref_rmsnorm_* and ref_layernorm_* in
// runtime/cpu/ref.c), and the forward fused with the row-wise FP8 quantization of its output
// (FUSE_NORM_QUANT).
//
// Forward: one warp per row, WARPS rows per block, grid ceil(N / WARPS). A lane moves EPL
// consecutive elements per access; chunk k of a row is columns [k*32*EPL, (k+1)*32*EPL), so a
// warp access is 32*EPL contiguous elements. Bit-identical to the CPU: the row statistics are the
// CPU's left-to-right float sums (the lanes stage the terms in shared memory, WARPS * C floats
// per block, and lane 0 adds them in column order: C dependent adds per row, which costs about
// as much issue time as the row's memory traffic, and buys outputs, FP8 codes and scales equal to
// the CPU's bit for bit), and every later operation is ref.c's expression in ref.c's order, with
// the _rn intrinsics so that no multiply-add is contracted into an FMA (the CPU build has none).
// The fused quantization encodes the values as stored (rounded to the output's dtype), as
// runtime/quant.c would quantize the stored tensor; see rowq_store in common.cuh.
//
// Backward: three launches with the same arguments. norm_bwd_rows adds each row's dinp (one warp
// per row; its two row sums are warp reductions: fixed order, deterministic, not the CPU's
// order, so a dinp element may differ by the float rounding of a C-term sum, ~C * 2^-24
// relative at worst, and a bf16 dinp by 1 ulp where that flips its rounding). norm_bwd_wsum
// (colsum_partial of common.cuh) sums the dw (and db) terms of each group of ROWS rows into ws,
// and colsum_finish adds the groups in a fixed order into dw (and db): deterministic,
// |error| <= ~N * 2^-24 * sum_n |term_n| against the CPU's row-by-row sum (in practice
// ~sqrt(N) * 2^-24 times that).
//
// Must not: write outside the rows it owns (dw and db change only in colsum_finish).

// ---- forward ---------------------------------------------------------------------------------

// The CPU's `for (c = 0; c < C; c++) s += t[c]` over a warp's row buffer (all lanes wrote their
// terms before the call). Lane 0 adds; every lane gets the sum. The buffer may be rewritten after.
template <int C> __device__ __forceinline__ float norm_serial_sum(const float *buf) {
    static_assert(C % 4 == 0, "norm_serial_sum: C must be a multiple of 4");
    __syncwarp();
    float s = 0.0f;
    if ((threadIdx.x & 31) == 0)
        for (int c = 0; c < C; c += 4) {
            float4 q = *reinterpret_cast<const float4 *>(buf + c);
            s = __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(s, q.x), q.y), q.z), q.w);
        }
    s = __shfl_sync(0xffffffffu, s, 0);
    __syncwarp(); // lane 0's reads before any lane's next write
    return s;
}

// QMODE (common.cuh): QMODE_NONE, or the quantized copy of out: QMODE_TILE with 1 x TC tiles
// (VEC layout scale_inv[row + t*N]) or QMODE_TENSOR with the given *scale (amax zeroed by a launch
// of rowq_zero_amax before this one). LN: layernorm (mean, b), else rmsnorm (mean, b unused).
template <typename TO, typename TI, typename TW, typename TB, bool LN, int N, int C, int EPL, int WARPS, int QMODE,
          int FMT, int TC>
__device__ __forceinline__ void norm_fwd(TO *out,            // (N,C)
                                         float *mean,        // (N) layernorm, else NULL
                                         float *rstd,        // (N)
                                         u8 *codes,          // (N,C) or NULL (QMODE_NONE)
                                         float *scale_inv,   // (C/TC, N) QMODE_TILE, (1) QMODE_TENSOR
                                         float *amax,        // (1) QMODE_TENSOR, or NULL
                                         const TI *inp,      // (N,C)
                                         const TW *w,        // (C)
                                         const TB *b,        // (C) layernorm bias, or NULL
                                         const float *scale, // (1) QMODE_TENSOR
                                         float eps) {
    static_assert(WARPS >= 1 && WARPS <= 32, "norm_fwd: WARPS must be 1..32");
    static_assert(WARPS * C * 4 <= 32768, "norm_fwd: the row buffers take WARPS * C floats of shared memory, at most 32 KB");
    static_assert(EPL * sizeof(TI) <= 16 && EPL * sizeof(TO) <= 16 && EPL * sizeof(TW) <= 16 && EPL * sizeof(TB) <= 16,
                  "norm_fwd: one access moves at most 16 bytes");
    static_assert(C % (32 * EPL) == 0, "norm_fwd: C must be a multiple of 32 * EPL");
    static_assert(QMODE != QMODE_TILE || (TC % (32 * EPL) == 0 && C % TC == 0),
                  "norm_fwd: a quantization tile must be whole chunks and divide C");
    constexpr int CH = 32 * EPL;                          // columns per warp access
    constexpr int PIECE = QMODE == QMODE_TILE ? TC : CH; // columns per output step
    constexpr int KT = PIECE / CH;
    alignas(16) __shared__ float rowbuf[WARPS][C];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row = blockIdx.x * WARPS + warp;
    float lane_amax = 0.0f, given = QMODE == QMODE_TENSOR ? *scale : 1.0f;
    if (row < N) {
        const TI *x = inp + (i64)row * C; // (C)
        float *buf = rowbuf[warp];        // (C) this row's terms, for the serial sums
        float mu = 0.0f;
        if (LN) { // mu = sum x / C
#pragma unroll 4
            for (int k = 0; k < C / CH; k++) {
                float v[EPL];
                pack_ld(v, x + k * CH + lane * EPL);
#pragma unroll
                for (int e = 0; e < EPL; e++) buf[k * CH + lane * EPL + e] = v[e];
            }
            mu = __fdiv_rn(norm_serial_sum<C>(buf), (float)C);
        }
#pragma unroll 4
        for (int k = 0; k < C / CH; k++) { // rmsnorm: sum x*x; layernorm: sum (x-mu)*(x-mu)
            float v[EPL];
            pack_ld(v, x + k * CH + lane * EPL);
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                float d = LN ? __fsub_rn(v[e], mu) : v[e];
                buf[k * CH + lane * EPL + e] = __fmul_rn(d, d);
            }
        }
        float ss = norm_serial_sum<C>(buf);
        // 1.0f / sqrtf(ss / C + eps), IEEE-rounded whatever the compile flags
        float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)C), eps)));
        if (lane == 0) {
            rstd[row] = r;
            if (LN) mean[row] = mu;
        }
#pragma unroll 4
        for (int t = 0; t < C / PIECE; t++) {
            float y[KT][EPL];
#pragma unroll
            for (int kk = 0; kk < KT; kk++) {
                int c0 = t * PIECE + kk * CH + lane * EPL;
                float xv[EPL], wv[EPL], bv[EPL];
                pack_ld(xv, x + c0);
                pack_ld(wv, w + c0);
                if (LN && b) {
                    pack_ld(bv, b + c0);
                } else {
#pragma unroll
                    for (int e = 0; e < EPL; e++) bv[e] = 0.0f; // the CPU adds 0.0f too (-0 becomes +0)
                }
#pragma unroll
                for (int e = 0; e < EPL; e++) {
                    float o = LN ? __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xv[e], mu), r), wv[e]), bv[e]) // (x-mu)*r*w + b
                                 : __fmul_rn(__fmul_rn(xv[e], r), wv[e]);                                   // x*r*w
                    y[kk][e] = round_to<TO>(o);
                }
                pack_st(out + (i64)row * C + c0, y[kk]);
            }
            if (QMODE != QMODE_NONE)
                rowq_store<QMODE, FMT, KT, EPL>(codes + (i64)row * C + t * PIECE + lane * EPL, scale_inv + row + (i64)t * N, y,
                                                given, lane_amax);
        }
    }
    if (QMODE == QMODE_TENSOR) rowq_tensor_finish<32 * WARPS>(scale_inv, amax, given, lane_amax);
}

// ---- backward --------------------------------------------------------------------------------

// dinp += the row's input gradient, one warp per row (grid ceil(N / WARPS)).
// rmsnorm: dx = r (w g - x f), f = r^2 mean(w g x); layernorm: xhat = (x - mean) r, dxhat = w g,
// dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), in ref.c's operation order.
template <typename TD, typename TG, typename TI, typename TW, bool LN, int N, int C, int EPL, int WARPS>
__device__ __forceinline__ void norm_bwd_rows(TD *dinp,          // (N,C) +=
                                              const TG *dout,    // (N,C)
                                              const TI *inp,     // (N,C)
                                              const TW *w,       // (C)
                                              const float *mean, // (N) layernorm, else NULL
                                              const float *rstd) { // (N)
    static_assert(EPL * sizeof(TD) <= 16 && EPL * sizeof(TG) <= 16 && EPL * sizeof(TI) <= 16 && EPL * sizeof(TW) <= 16,
                  "norm_bwd_rows: one access moves at most 16 bytes");
    static_assert(C % (32 * EPL) == 0, "norm_bwd_rows: C must be a multiple of 32 * EPL");
    constexpr int CH = 32 * EPL;
    int lane = threadIdx.x & 31, row = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const TG *g = dout + (i64)row * C; // (C)
    const TI *x = inp + (i64)row * C;  // (C)
    TD *dx = dinp + (i64)row * C;      // (C)
    float mu = LN ? mean[row] : 0.0f, r = rstd[row];
    float s0 = 0.0f, s1 = 0.0f; // rmsnorm: sum w g x; layernorm: sum dxhat, sum dxhat xhat
#pragma unroll 4
    for (int k = 0; k < C / CH; k++) {
        int c0 = k * CH + lane * EPL;
        float gv[EPL], xv[EPL], wv[EPL];
        pack_ld(gv, g + c0);
        pack_ld(xv, x + c0);
        pack_ld(wv, w + c0);
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float dxhat = __fmul_rn(wv[e], gv[e]);
            if (LN) {
                s0 += dxhat;
                s1 += dxhat * __fmul_rn(__fsub_rn(xv[e], mu), r);
            } else {
                s0 += dxhat * xv[e];
            }
        }
    }
    s0 = warp_sum(s0);
    if (LN) s1 = warp_sum(s1);
    float f = 0.0f, dmean = 0.0f, dnorm_mean = 0.0f;
    if (LN) {
        dmean = __fdiv_rn(s0, (float)C);
        dnorm_mean = __fdiv_rn(s1, (float)C);
    } else {
        f = __fdiv_rn(__fmul_rn(__fmul_rn(r, r), s0), (float)C); // r * r * dot / C
    }
#pragma unroll 4
    for (int k = 0; k < C / CH; k++) {
        int c0 = k * CH + lane * EPL;
        float gv[EPL], xv[EPL], wv[EPL], d[EPL];
        pack_ld(gv, g + c0);
        pack_ld(xv, x + c0);
        pack_ld(wv, w + c0);
        pack_ld(d, dx + c0);
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float dxhat = __fmul_rn(wv[e], gv[e]), v;
            if (LN) {
                float xhat = __fmul_rn(__fsub_rn(xv[e], mu), r);
                v = __fmul_rn(r, __fsub_rn(__fsub_rn(dxhat, dmean), __fmul_rn(xhat, dnorm_mean)));
            } else {
                v = __fmul_rn(r, __fsub_rn(dxhat, __fmul_rn(xv[e], f)));
            }
            d[e] = __fadd_rn(d[e], v);
        }
        pack_st(dx + c0, d);
    }
}

// The dw (and db) terms of one row for colsum_partial: rmsnorm g x r, layernorm g (x - mean) r
// and g, as ref.c writes them.
template <typename TG, typename TI, bool LN, int C, int EPL> struct NormWTerm {
    const TG *dout;    // (N,C)
    const TI *inp;     // (N,C)
    const float *mean; // (N) layernorm, else NULL
    const float *rstd; // (N)
    __device__ __forceinline__ void operator()(float (&acc)[LN ? 2 : 1][EPL], int n, int c0) const {
        float gv[EPL], xv[EPL];
        pack_ld(gv, dout + (i64)n * C + c0);
        pack_ld(xv, inp + (i64)n * C + c0);
        float r = rstd[n], mu = LN ? mean[n] : 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            if (LN) {
                acc[0][e] += __fmul_rn(__fmul_rn(gv[e], __fsub_rn(xv[e], mu)), r);
                acc[LN ? 1 : 0][e] += gv[e];
            } else {
                acc[0][e] += __fmul_rn(__fmul_rn(gv[e], xv[e]), r);
            }
        }
    }
};

// Partial sums of dw (and db) per group of ROWS rows into ws: grid (ceil(C / (32*EPL)),
// ceil(N / ROWS)), 256 threads. ws holds (LN ? 2 : 1) * ceil(N / ROWS) * C floats.
template <typename TG, typename TI, bool LN, int N, int C, int EPL, int ROWS>
__device__ __forceinline__ void norm_bwd_wsum(float *ws,         // (LN ? 2 : 1, ceil(N/ROWS), C)
                                              const TG *dout,    // (N,C)
                                              const TI *inp,     // (N,C)
                                              const float *mean, // (N) layernorm, else NULL
                                              const float *rstd) { // (N)
    NormWTerm<TG, TI, LN, C, EPL> term = {dout, inp, mean, rstd};
    colsum_partial<LN ? 2 : 1, EPL, ROWS, N, C>(ws, term);
}
