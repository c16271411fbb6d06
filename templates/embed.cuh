// embed.cuh: token (and learned position) embeddings, forward and backward (ref_embed_fwd and
// ref_embed_bwd in runtime/cpu/ref.c).
//
// Forward: grid-stride over (B*T) x (C / EPL) vectors, 256 threads; bit-identical to the CPU.
// Backward: dwte[tokens[bt]] += dout[bt] with repeated tokens, made deterministic and equal to
// the CPU's sum (dwte row + dout rows in token order, in float, stored once) by three launches
// with the same arguments and ws = (head[VOCAB], count[VOCAB]) ints:
//   embed_bwd_init  (grid-stride over VOCAB)   head = INT_MAX, count = 0
//   embed_bwd_index (grid-stride over B*T)     head[v] = first position of token v, count[v] =
//                                               its occurrences (integer atomics: exact)
//   embed_bwd_rows  (grid B*T (+ T), THREADS)  block bt, if bt is its token's first position,
//                   walks the later positions in order, adds their dout rows to the dwte row it
//                   holds in registers (prefetching BATCH rows at a time), stores it once; blocks
//                   B*T + t do dwpe[t] += dout[b,t] over b in order.
// The work is proportional to (B*T) x C plus, per distinct token, the span between its first
// and last position / THREADS.
//
// Must not: read tokens outside [0, VOCAB) as rows: such a token adds nothing (the CPU's
// behaviour there is undefined) and gives a zero row in the forward.

template <typename TO, typename TE, typename TP, int B, int T, int C, int VOCAB, int EPL>
__device__ __forceinline__ void embed_fwd(TO *out,           // (B,T,C)
                                          const int *tokens, // (B,T)
                                          const TE *wte,     // (VOCAB,C)
                                          const TP *wpe) {   // (>=T,C) or NULL
    static_assert(C % EPL == 0, "embed_fwd: EPL must divide C");
    static_assert(EPL * sizeof(TO) <= 16 && EPL * sizeof(TE) <= 16 && EPL * sizeof(TP) <= 16, "embed_fwd: at most 16 bytes per access");
    constexpr i64 VECS = (i64)B * T * (C / EPL);
    for (i64 v = (i64)blockIdx.x * blockDim.x + threadIdx.x; v < VECS; v += (i64)gridDim.x * blockDim.x) {
        int bt = (int)(v / (C / EPL)), c0 = (int)(v % (C / EPL)) * EPL;
        int tok = tokens[bt];
        float e[EPL];
        if (tok >= 0 && tok < VOCAB) {
            pack_ld(e, wte + (i64)tok * C + c0);
        } else {
#pragma unroll
            for (int k = 0; k < EPL; k++) e[k] = 0.0f;
        }
        if (wpe) {
            float p[EPL];
            pack_ld(p, wpe + (i64)(bt % T) * C + c0);
#pragma unroll
            for (int k = 0; k < EPL; k++) e[k] = __fadd_rn(e[k], p[k]);
        }
        pack_st(out + (i64)bt * C + c0, e);
    }
}

// ---- backward --------------------------------------------------------------------------------

template <int VOCAB> __device__ __forceinline__ void embed_bwd_init(int *ws) { // (2, VOCAB)
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < VOCAB; v += gridDim.x * blockDim.x) {
        ws[v] = 0x7fffffff;
        ws[VOCAB + v] = 0;
    }
}

template <int N, int VOCAB>
__device__ __forceinline__ void embed_bwd_index(int *ws,             // (2, VOCAB)
                                                const int *tokens) { // (N)
    for (int bt = blockIdx.x * blockDim.x + threadIdx.x; bt < N; bt += gridDim.x * blockDim.x) {
        int tok = tokens[bt];
        if (tok < 0 || tok >= VOCAB) continue;
        atomicMin(&ws[tok], bt);
        atomicAdd(&ws[VOCAB + tok], 1);
    }
}

template <typename TW, typename TP, typename TD, int B, int T, int C, int VOCAB, int THREADS>
__device__ __forceinline__ void embed_bwd_rows(TW *dwte,          // (VOCAB,C) +=
                                               TP *dwpe,          // (>=T,C) += or NULL
                                               const TD *dout,    // (B,T,C)
                                               const int *tokens, // (B,T)
                                               const int *ws) {   // (2, VOCAB) from embed_bwd_index
    static_assert(THREADS % 32 == 0 && THREADS <= 1024, "embed_bwd_rows: THREADS must be a multiple of 32, at most 1024");
    constexpr int N = B * T, CPT = (C + THREADS - 1) / THREADS; // columns per thread: c = threadIdx.x + j*THREADS
    constexpr int BATCH = CPT <= 4 ? 8 : CPT <= 8 ? 4 : 2;       // rows whose loads are in flight together
    constexpr int WARPS = THREADS / 32;
    __shared__ unsigned masks[WARPS];
    __shared__ int list[THREADS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (blockIdx.x >= N) { // dwpe[t] += dout[b,t], b in order (the CPU's bt order for fixed t)
        int t = blockIdx.x - N;
        for (int c = threadIdx.x; c < C; c += THREADS) {
            float acc = ld(dwpe[(i64)t * C + c]);
            for (int b = 0; b < B; b++) acc = __fadd_rn(acc, ld(dout[((i64)b * T + t) * C + c]));
            st(&dwpe[(i64)t * C + c], acc);
        }
        return;
    }
    int bt = blockIdx.x, tok = tokens[bt];
    if (tok < 0 || tok >= VOCAB || ws[tok] != bt) return; // not the first position of its token: the first adds it
    int remaining = ws[VOCAB + tok];                       // positions still to add, bt included
    float acc[CPT];
#pragma unroll
    for (int j = 0; j < CPT; j++) {
        int c = threadIdx.x + j * THREADS;
        acc[j] = c < C ? ld(dwte[(i64)tok * C + c]) : 0.0f;
    }
    for (int pos = bt; remaining > 0 && pos < N; pos += THREADS) { // block-uniform loop
        int p = pos + threadIdx.x;
        bool hit = p < N && tokens[p] == tok;
        unsigned m = __ballot_sync(0xffffffffu, hit);
        if (lane == 0) masks[warp] = m;
        __syncthreads();
        int n = 0, before = 0; // matches in this window; matches before this thread's position
        for (int w = 0; w < WARPS; w++) {
            int c = __popc(masks[w]);
            before += w < warp ? c : 0;
            n += c;
        }
        if (hit) list[before + __popc(m & ((1u << lane) - 1u))] = p;
        __syncthreads();
        for (int q0 = 0; q0 < n; q0 += BATCH) { // the window's rows in position order
            float v[BATCH][CPT];
#pragma unroll
            for (int u = 0; u < BATCH; u++)
#pragma unroll
                for (int j = 0; j < CPT; j++) {
                    int c = threadIdx.x + j * THREADS;
                    v[u][j] = q0 + u < n && c < C ? ld(dout[(i64)list[q0 + u] * C + c]) : 0.0f;
                }
#pragma unroll
            for (int u = 0; u < BATCH; u++)
                if (q0 + u < n)
#pragma unroll
                    for (int j = 0; j < CPT; j++) acc[j] = __fadd_rn(acc[j], v[u][j]);
        }
        remaining -= n;
        __syncthreads(); // masks and list are rewritten by the next window
    }
#pragma unroll
    for (int j = 0; j < CPT; j++) {
        int c = threadIdx.x + j * THREADS;
        if (c < C) st(&dwte[(i64)tok * C + c], acc[j]);
    }
}
