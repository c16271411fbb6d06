// elementwise.cuh: residual add, gradient accumulation, bias gradients (bias_bwd and the dbias of
// matmul_bwd_weight; cuBLASLt does that step's dw) and rotary position embedding (ref_add_fwd,
// ref_accumulate, ref_rope_* in runtime/cpu/ref.c; bias_bwd in runtime/cpu/exec.c).
//
// add_fwd, accumulate: grid-stride loops, 256 threads, EPL consecutive elements per thread and
// access; bit-identical to the CPU (one float add, then the output's rounding).
// bias_bwd: colsum_partial + colsum_finish of common.cuh (two launches, ws scratch):
// deterministic; against the CPU's row-by-row sum |error| <= ~M * 2^-24 * sum_m |dout[m,n]|
// (in practice ~sqrt(M) * 2^-24 times that).
// rope: one block per (b,t) row; the block first computes the row's cos/sin pairs as ref.c does,
// in double (pow, cos, sin, then rounded to float), so they equal the CPU's floats unless CUDA's
// double functions (within 2 ulp) and glibc's land on opposite sides of a float rounding
// boundary: about one in 10^7 values, 1 float ulp. The rotation is ref.c's float expression.
//
// Must not: assume out and inp are distinct in add_fwd (out may alias a or b) or rope (dinp is
// dout in the plan): every element is read before the same thread writes it.

// out = a + b, grid-stride over N / EPL vectors.
template <typename TO, typename TA, typename TB, i64 N, int EPL>
__device__ __forceinline__ void add_fwd(TO *out,      // (N) may alias a or b
                                        const TA *a,  // (N)
                                        const TB *b) { // (N)
    static_assert(N % EPL == 0, "add_fwd: EPL must divide N");
    static_assert(EPL * sizeof(TO) <= 16 && EPL * sizeof(TA) <= 16 && EPL * sizeof(TB) <= 16, "add_fwd: at most 16 bytes per access");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float av[EPL], bv[EPL];
        pack_ld(av, a + i);
        pack_ld(bv, b + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) av[e] = __fadd_rn(av[e], bv[e]);
        pack_st(out + i, av);
    }
}

// dst += src, grid-stride over N / EPL vectors.
template <typename TD, typename TS, i64 N, int EPL>
__device__ __forceinline__ void accumulate(TD *dst,        // (N)
                                           const TS *src) { // (N)
    static_assert(N % EPL == 0, "accumulate: EPL must divide N");
    static_assert(EPL * sizeof(TD) <= 16 && EPL * sizeof(TS) <= 16, "accumulate: at most 16 bytes per access");
    for (i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * EPL; i < N; i += (i64)gridDim.x * blockDim.x * EPL) {
        float dv[EPL], sv[EPL];
        pack_ld(dv, dst + i);
        pack_ld(sv, src + i);
#pragma unroll
        for (int e = 0; e < EPL; e++) dv[e] = __fadd_rn(dv[e], sv[e]);
        pack_st(dst + i, dv);
    }
}

// ---- bias gradient -----------------------------------------------------------------------------

template <typename TG, int N, int EPL> struct BiasTerm {
    const TG *dout; // (M,N)
    __device__ __forceinline__ void operator()(float (&acc)[1][EPL], int m, int c0) const {
        float v[EPL];
        pack_ld(v, dout + (i64)m * N + c0);
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[0][e] += v[e];
    }
};

// Partial column sums of dout per group of ROWS rows into ws: grid (ceil(N / (32*EPL)),
// ceil(M / ROWS)), 256 threads; then colsum_finish<M, ROWS, N>(dbias, NULL, ws) adds them to dbias.
template <typename TG, int M, int N, int EPL, int ROWS>
__device__ __forceinline__ void bias_bwd_partial(float *ws,        // (ceil(M/ROWS), N)
                                                 const TG *dout) { // (M,N)
    BiasTerm<TG, N, EPL> term = {dout};
    colsum_partial<1, EPL, ROWS, M, N>(ws, term);
}

// ---- rotary position embedding -----------------------------------------------------------------

// out = R inp (SIGN +1) or R^T inp (SIGN -1) on (B,T,H,HD) laid out as (B*T, H*HD): the pair
// (2i, 2i+1) of every head at position t turns by SIGN * t * theta^(-2i/HD). Grid B*T, THREADS
// threads; out may equal inp.
template <typename TO, typename TI, int B, int T, int H, int HD, int SIGN, int THREADS>
__device__ __forceinline__ void rope(TO *out,       // (B,T,H*HD)
                                     const TI *inp, // (B,T,H*HD)
                                     float theta) {
    static_assert(HD % 2 == 0, "rope: the head dimension must be even");
    constexpr int HALF = HD / 2;
    __shared__ float cs[HALF], sn[HALF];
    int bt = blockIdx.x, t = bt % T;
    for (int i = threadIdx.x; i < HALF; i += THREADS) {
        // ref.c: double ang = sign * t * pow((double)theta, -2.0 * i / hd)
        double ang = (double)SIGN * t * pow((double)theta, -2.0 * i / HD);
        cs[i] = (float)cos(ang);
        sn[i] = (float)sin(ang);
    }
    __syncthreads();
    i64 base = (i64)bt * H * HD;
    for (int p = threadIdx.x; p < H * HALF; p += THREADS) {
        int h = p / HALF, i = p % HALF;
        i64 o = base + h * HD + 2 * i;
        float x[2], y[2];
        pack_ld(x, inp + o);
        y[0] = __fsub_rn(__fmul_rn(x[0], cs[i]), __fmul_rn(x[1], sn[i])); // x0 cs - x1 sn
        y[1] = __fadd_rn(__fmul_rn(x[0], sn[i]), __fmul_rn(x[1], cs[i])); // x0 sn + x1 cs
        pack_st(out + o, y);
    }
}
