// act.cuh: the activation functions (ref_gate_*, ref_swiglu_*, ref_gelu_* in runtime/cpu/ref.c),
// forward and backward, and the forward fused with the row-wise FP8 quantization of its output
// (FUSE_ACT_QUANT).
//
// Unfused: grid-stride loops, 256 threads, EPL consecutive elements per thread and access.
// Fused: the output viewed as R x C; one warp per piece of a row (a 1 x TC quantization tile, or
// 32*EPL elements under per-tensor scaling), grid-stride over the pieces.
// Arithmetic: ref.c's expressions operation by operation, with the _rn intrinsics wherever a
// product meets a sum so that nothing is contracted into an FMA (the CPU build has none). The
// transcendental functions are CUDA's expf and tanhf (at most 2 ulp from the correctly rounded
// value; glibc's are within 1 ulp), so a float result may differ from the CPU's in the last bits
// and, rarely, a bf16 output by 1 ulp (when the float lies next to a bf16 rounding boundary).
//
// Must not: use the fast-math intrinsics (__expf, tanh.approx): they are far less accurate.

#define ACT_GELU 0   // out = gelu(x) (tanh approximation, GPT-2); y unused
#define ACT_SWIGLU 1 // out = silu(x) * y (x: gate, y: up)
#define ACT_GATE 2   // out = x * sigmoid(y) (x: a, y: g)

#define GELU_K 0.7978845608028654f // sqrt(2/pi), ref.c's constant
#define GELU_C 0.044715f

__device__ __forceinline__ float act_sigmoid(float x) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x))); }

// tanh(K (x + C x^3)), the argument as ref.c computes it: K * (x + C * x * x * x).
__device__ __forceinline__ float gelu_tanh(float x) {
    return tanhf(__fmul_rn(GELU_K, __fadd_rn(x, __fmul_rn(__fmul_rn(__fmul_rn(GELU_C, x), x), x))));
}

template <int ACT> __device__ __forceinline__ float act_fwd_one(float x, float y) {
    if (ACT == ACT_GELU) return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, gelu_tanh(x))); // 0.5 * x * (1 + tanh u)
    if (ACT == ACT_SWIGLU) return __fmul_rn(__fmul_rn(x, act_sigmoid(x)), y);                 // gate * sigmoid(gate) * up
    return __fmul_rn(x, act_sigmoid(y));                                                       // a * sigmoid(g)
}

// ---- forward ---------------------------------------------------------------------------------

// out = act(x, y), grid-stride over N / EPL vectors.
template <int ACT, typename TO, typename TX, typename TY, i64 N, int EPL>
__device__ __forceinline__ void act_fwd(TO *out,      // (N)
                                        const TX *x,  // (N) inp, gate or a
                                        const TY *y) { // (N) up or g; NULL for gelu
    static_assert(N % EPL == 0, "act_fwd: EPL must divide N");
    static_assert(EPL * sizeof(TO) <= 16 && EPL * sizeof(TX) <= 16 && EPL * sizeof(TY) <= 16, "act_fwd: at most 16 bytes per access");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float xv[EPL], yv[EPL], o[EPL];
        pack_ld(xv, x + i);
        if (ACT != ACT_GELU) pack_ld(yv, y + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) o[e] = act_fwd_one<ACT>(xv[e], ACT != ACT_GELU ? yv[e] : 0.0f);
        pack_st(out + i, o);
    }
}

// act_fwd plus the quantized copy of out viewed as R x C (QMODE_TILE: 1 x TC tiles, VEC layout;
// QMODE_TENSOR: the given *scale, amax zeroed by a launch of rowq_zero_amax before this one).
// One warp per piece, WARPS warps per block, grid-stride over the R * C / PIECE pieces.
template <int ACT, typename TO, typename TX, typename TY, int R, int C, int EPL, int WARPS, int QMODE, int FMT, int TC>
__device__ __forceinline__ void act_fwd_quant(TO *out,            // (R,C)
                                              u8 *codes,          // (R,C)
                                              float *scale_inv,   // (C/TC, R) QMODE_TILE, (1) QMODE_TENSOR
                                              float *amax,        // (1) QMODE_TENSOR, or NULL
                                              const TX *x,        // (R,C)
                                              const TY *y,        // (R,C) or NULL for gelu
                                              const float *scale) { // (1) QMODE_TENSOR
    static_assert(QMODE == QMODE_TILE || QMODE == QMODE_TENSOR, "act_fwd_quant: a quantized copy is what it is for");
    static_assert(EPL * sizeof(TO) <= 16 && EPL * sizeof(TX) <= 16 && EPL * sizeof(TY) <= 16, "act_fwd_quant: at most 16 bytes per access");
    static_assert(C % (32 * EPL) == 0, "act_fwd_quant: C must be a multiple of 32 * EPL");
    static_assert(QMODE != QMODE_TILE || (TC % (32 * EPL) == 0 && C % TC == 0),
                  "act_fwd_quant: a quantization tile must be whole chunks and divide C");
    constexpr int CH = 32 * EPL;
    constexpr int PIECE = QMODE == QMODE_TILE ? TC : CH;
    constexpr int KT = PIECE / CH, PER_ROW = C / PIECE;
    constexpr i64 PIECES = (i64)R * PER_ROW;
    int lane = threadIdx.x & 31;
    float lane_amax = 0.0f, given = QMODE == QMODE_TENSOR ? *scale : 1.0f;
    for (i64 p = (i64)blockIdx.x * WARPS + (threadIdx.x >> 5); p < PIECES; p += (i64)gridDim.x * WARPS) {
        int row = (int)(p / PER_ROW), t = (int)(p % PER_ROW);
        float o[KT][EPL];
#pragma unroll
        for (int kk = 0; kk < KT; kk++) {
            i64 i = (i64)row * C + t * PIECE + kk * CH + lane * EPL;
            float xv[EPL], yv[EPL];
            pack_ld(xv, x + i);
            if (ACT != ACT_GELU) pack_ld(yv, y + i);
#pragma unroll
            for (int e = 0; e < EPL; e++) o[kk][e] = round_to<TO>(act_fwd_one<ACT>(xv[e], ACT != ACT_GELU ? yv[e] : 0.0f));
            pack_st(out + i, o[kk]);
        }
        rowq_store<QMODE, FMT, KT, EPL>(codes + (i64)row * C + t * PIECE + lane * EPL, scale_inv + row + (i64)t * R, o, given,
                                        lane_amax);
    }
    if (QMODE == QMODE_TENSOR) rowq_tensor_finish<32 * WARPS>(scale_inv, amax, given, lane_amax);
}

// ---- backward (overwrite their outputs) ---------------------------------------------------------

// dinp = gelu'(x) dout: local = 0.5 (1 + th) + 0.5 x (1 - th^2) K (1 + 3 C x^2).
template <typename TD, typename TG, typename TX, i64 N, int EPL>
__device__ __forceinline__ void gelu_bwd(TD *dinp,       // (N)
                                         const TG *dout, // (N)
                                         const TX *inp) { // (N)
    static_assert(N % EPL == 0, "gelu_bwd: EPL must divide N");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float g[EPL], xv[EPL], o[EPL];
        pack_ld(g, dout + i);
        pack_ld(xv, inp + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float x = xv[e], th = gelu_tanh(x);
            float a = __fmul_rn(0.5f, __fadd_rn(1.0f, th));
            float b = __fmul_rn(__fmul_rn(__fmul_rn(0.5f, x), __fsub_rn(1.0f, __fmul_rn(th, th))), GELU_K);
            float c = __fadd_rn(1.0f, __fmul_rn(__fmul_rn(3.0f * GELU_C, x), x)); // 3.0f * GELU_C folds as in ref.c
            o[e] = __fmul_rn(__fadd_rn(a, __fmul_rn(b, c)), g[e]);
        }
        pack_st(dinp + i, o);
    }
}

// dup = dout x s, dgate = dout u (s + x s (1 - s)), s = sigmoid(x).
template <typename TDG, typename TDU, typename TG, typename TX, typename TU, i64 N, int EPL>
__device__ __forceinline__ void swiglu_bwd(TDG *dgate,     // (N)
                                           TDU *dup,       // (N)
                                           const TG *dout, // (N)
                                           const TX *gate, // (N)
                                           const TU *up) { // (N)
    static_assert(N % EPL == 0, "swiglu_bwd: EPL must divide N");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float d[EPL], xv[EPL], u[EPL], dg[EPL], du[EPL];
        pack_ld(d, dout + i);
        pack_ld(xv, gate + i);
        pack_ld(u, up + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float x = xv[e], s = act_sigmoid(x);
            du[e] = __fmul_rn(__fmul_rn(d[e], x), s);
            dg[e] = __fmul_rn(__fmul_rn(d[e], u[e]), __fadd_rn(s, __fmul_rn(__fmul_rn(x, s), __fsub_rn(1.0f, s))));
        }
        pack_st(dgate + i, dg);
        pack_st(dup + i, du);
    }
}

// da = dout s, dg = dout a s (1 - s), s = sigmoid(g).
template <typename TDA, typename TDG, typename TG, typename TA, typename TGG, i64 N, int EPL>
__device__ __forceinline__ void gate_bwd(TDA *da,         // (N)
                                         TDG *dg,         // (N)
                                         const TG *dout,  // (N)
                                         const TA *a,     // (N)
                                         const TGG *g) {  // (N)
    static_assert(N % EPL == 0, "gate_bwd: EPL must divide N");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float d[EPL], av[EPL], gv[EPL], oa[EPL], og[EPL];
        pack_ld(d, dout + i);
        pack_ld(av, a + i);
        pack_ld(gv, g + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float s = act_sigmoid(gv[e]);
            oa[e] = __fmul_rn(d[e], s);
            og[e] = __fmul_rn(__fmul_rn(__fmul_rn(d[e], av[e]), s), __fsub_rn(1.0f, s));
        }
        pack_st(da + i, oa);
        pack_st(dg + i, og);
    }
}
