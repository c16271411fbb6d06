// xent.cuh: softmax cross-entropy over the vocabulary (ref_crossentropy_fwd and
// ref_crossentropy_bwd in runtime/cpu/ref.c), and both in one pass (FUSE_XENT: the loss and the
// logits' gradient written in place over the logits, in the forward section).
//
// One block of THREADS threads per row (grid N). Like ref.c: the row max, then the sum of
// exp(x - max) (two passes over the row), loss = max + log(sum) - x[target], gradient
// (exp(x - max) / sum - onehot) * dloss. Differences from the CPU: the sum is a block reduction
// (fixed order, deterministic; relative difference ~ a few 2^-24), and CUDA's expf/logf are
// within 2 ulp where glibc's are within 1, so a loss differs by a few float ulps of max(|loss|,
// |max|) and a gradient element by a few ulps of itself (then rounded to the gradient's dtype).
// A target outside [0, V) is ignored: loss 0, gradient 0 (ref.c ignores target < 0 and assumes
// the rest lie in [0, V)).
//
// Must not: write a row element before the row's statistics are complete (dlogits may be logits).

#define XENT_NEG_INF (-__int_as_float(0x7f800000)) // -inf (NVRTC has no INFINITY macro)

template <int THREADS> __device__ __forceinline__ float xent_block_max(float v, float *smem) {
    static_assert(THREADS % 32 == 0 && THREADS <= 1024, "xent: THREADS must be a multiple of 32, at most 1024");
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) smem[w] = v;
    __syncthreads();
    float r = XENT_NEG_INF;
    for (int i = 0; i < THREADS / 32; i++) r = fmaxf(r, smem[i]);
    return r;
}

// LOSS: write losses; GRAD: write dlogits (which may be logits: the fused case).
template <typename TD, typename TL, int N, int V, int THREADS, bool LOSS, bool GRAD>
__device__ __forceinline__ void crossentropy(float *losses,      // (N) or NULL
                                             TD *dlogits,        // (N,V) or NULL; may equal logits
                                             const TL *logits,   // (N,V)
                                             const int *targets, // (N)
                                             float dloss) {
    __shared__ float red[THREADS / 32];
    int n = blockIdx.x, tgt = targets[n];
    const TL *x = logits + (i64)n * V; // (V)
    if (tgt < 0 || tgt >= V) { // block-uniform
        if (LOSS && threadIdx.x == 0) losses[n] = 0.0f;
        if (GRAD)
            for (int i = threadIdx.x; i < V; i += THREADS) st(&dlogits[(i64)n * V + i], 0.0f);
        return;
    }
    float xt = ld(x[tgt]); // read before any thread may overwrite it
    float m = XENT_NEG_INF;
    for (int i = threadIdx.x; i < V; i += THREADS) m = fmaxf(m, ld(x[i])); // ref.c's max also skips NaN
    m = xent_block_max<THREADS>(m, red);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += THREADS) s += expf(__fsub_rn(ld(x[i]), m));
    s = block_sum<THREADS>(s, red);
    if (LOSS && threadIdx.x == 0) losses[n] = __fsub_rn(__fadd_rn(m, logf(s)), xt); // m + logf(s) - x[tgt]
    if (GRAD) { // block_sum's barriers put every thread's statistics reads before any write below
        TD *dx = dlogits + (i64)n * V; // (V)
        for (int i = threadIdx.x; i < V; i += THREADS) {
            float p = __fdiv_rn(expf(__fsub_rn(ld(x[i]), m)), s);
            st(&dx[i], __fmul_rn(__fsub_rn(p, i == tgt ? 1.0f : 0.0f), dloss));
        }
    }
}
