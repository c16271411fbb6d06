// mla.cuh: multi-head latent attention (ref_mla_* in runtime/cpu/ref_mla.c): the latent split of
// kv_a_proj's output, the decoupled RoPE that assembles per-head queries, keys and values, and
// causal attention whose query/key head width DQK differs from the value head width DV.
//
// mla_split_*: grid-stride copies, bit-identical to the CPU (a copy, then the output's rounding).
// mla_rope_*: one block per (b,t) token; cos/sin as ref_mla.c computes them (in double, rounded
// to float), the rotation is its float expression; mla_rope_bwd sums the heads' rope-key
// gradients in head order, as the CPU does.
// mla_attention_fwd: one thread per (b,h,t) row with an online softmax, the CPU's loop order.
// mla_attention_bwd: one thread per (b,h), the CPU's loops, accumulating in FP32 scratch (ws)
// and rounding once into dq, dk, dv (_finish). Written for exactness against the reference, not
// speed: no tiling, no tensor cores (FlashAttention-style MLA kernels are future work).
//
// Must not: assume any output aliases an input (the plan gives them distinct buffers).

template <typename TC, typename TP, typename TI, i64 N, int L, int R>
__device__ __forceinline__ void mla_split_fwd(TC *ckv,        // (N,L)
                                              TP *kpe,        // (N,R)
                                              const TI *kva) { // (N,L+R)
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N * (L + R); i += (i64)gridDim.x * blockDim.x) {
        i64 n = i / (L + R);
        int c = (int)(i % (L + R));
        float v = ld(kva[i]);
        if (c < L) st(ckv + n * L + c, v);
        else st(kpe + n * R + (c - L), v);
    }
}

template <typename TO, typename TC, typename TP, i64 N, int L, int R>
__device__ __forceinline__ void mla_split_bwd(TO *dkva,        // (N,L+R)
                                              const TC *dckv,  // (N,L)
                                              const TP *dkpe) { // (N,R)
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N * (L + R); i += (i64)gridDim.x * blockDim.x) {
        i64 n = i / (L + R);
        int c = (int)(i % (L + R));
        st(dkva + i, c < L ? ld(dckv[n * L + c]) : ld(dkpe[n * R + (c - L)]));
    }
}

// The token's cos/sin of the R-wide rope part, angle sign * t * theta^(-2i/R).
template <int R, int THREADS>
__device__ __forceinline__ void mla_rope_table(float *cs, float *sn, int t, float theta, double sign) {
    for (int i = threadIdx.x; i < R / 2; i += THREADS) {
        double ang = sign * t * pow((double)theta, -2.0 * i / R);
        cs[i] = (float)cos(ang);
        sn[i] = (float)sin(ang);
    }
}

template <typename TQH, typename TKH, typename TVH, typename TQ, typename TKV, typename TPE, int B, int T, int H, int DN, int R,
          int DV, int THREADS>
__device__ __forceinline__ void mla_rope_fwd(TQH *qh,         // (B,T,H*(DN+R))
                                             TKH *kh,         // (B,T,H*(DN+R))
                                             TVH *vh,         // (B,T,H*DV)
                                             const TQ *q,     // (B,T,H*(DN+R))
                                             const TKV *kvb,  // (B,T,H*(DN+DV))
                                             const TPE *kpe,  // (B,T,R)
                                             float theta) {
    static_assert(R % 2 == 0, "mla_rope: the rope width must be even");
    constexpr int DQK = DN + R;
    __shared__ float cs[R / 2], sn[R / 2], kr[R];
    int bt = blockIdx.x, t = bt % T;
    mla_rope_table<R, THREADS>(cs, sn, t, theta, 1.0);
    __syncthreads();
    for (int i = threadIdx.x; i < R / 2; i += THREADS) { // the one rope key of this token
        float x0 = ld(kpe[(i64)bt * R + 2 * i]), x1 = ld(kpe[(i64)bt * R + 2 * i + 1]);
        kr[2 * i] = x0 * cs[i] - x1 * sn[i];
        kr[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < H * DQK; e += THREADS) {
        int h = e / DQK, c = e % DQK;
        i64 r = (i64)bt * H + h;
        if (c < DN) {
            st(qh + r * DQK + c, ld(q[r * DQK + c]));
            st(kh + r * DQK + c, ld(kvb[r * (DN + DV) + c]));
        } else {
            int p = (c - DN) / 2;
            float x0 = ld(q[r * DQK + DN + 2 * p]), x1 = ld(q[r * DQK + DN + 2 * p + 1]);
            st(qh + r * DQK + c, (c - DN) % 2 ? x0 * sn[p] + x1 * cs[p] : x0 * cs[p] - x1 * sn[p]);
            st(kh + r * DQK + c, kr[c - DN]);
        }
    }
    for (int e = threadIdx.x; e < H * DV; e += THREADS) {
        i64 r = (i64)bt * H + e / DV;
        st(vh + r * DV + e % DV, ld(kvb[r * (DN + DV) + DN + e % DV]));
    }
}

template <typename TQ, typename TKV, typename TPE, typename TQH, typename TKH, typename TVH, int B, int T, int H, int DN, int R,
          int DV, int THREADS>
__device__ __forceinline__ void mla_rope_bwd(TQ *dq,            // (B,T,H*(DN+R))
                                             TKV *dkvb,         // (B,T,H*(DN+DV))
                                             TPE *dkpe,         // (B,T,R)
                                             const TQH *dqh,    // (B,T,H*(DN+R))
                                             const TKH *dkh,    // (B,T,H*(DN+R))
                                             const TVH *dvh,    // (B,T,H*DV)
                                             float theta) {
    constexpr int DQK = DN + R;
    __shared__ float cs[R / 2], sn[R / 2];
    int bt = blockIdx.x, t = bt % T;
    mla_rope_table<R, THREADS>(cs, sn, t, theta, -1.0);
    __syncthreads();
    for (int e = threadIdx.x; e < H * DQK; e += THREADS) {
        int h = e / DQK, c = e % DQK;
        i64 r = (i64)bt * H + h;
        if (c < DN) {
            st(dq + r * DQK + c, ld(dqh[r * DQK + c]));
            st(dkvb + r * (DN + DV) + c, ld(dkh[r * DQK + c]));
        } else {
            int p = (c - DN) / 2;
            float x0 = ld(dqh[r * DQK + DN + 2 * p]), x1 = ld(dqh[r * DQK + DN + 2 * p + 1]);
            st(dq + r * DQK + c, (c - DN) % 2 ? x0 * sn[p] + x1 * cs[p] : x0 * cs[p] - x1 * sn[p]);
        }
    }
    for (int e = threadIdx.x; e < H * DV; e += THREADS) {
        i64 r = (i64)bt * H + e / DV;
        st(dkvb + r * (DN + DV) + DN + e % DV, ld(dvh[r * DV + e % DV]));
    }
    for (int i = threadIdx.x; i < R / 2; i += THREADS) { // the shared key: heads summed in order
        float a0 = 0.0f, a1 = 0.0f;
        for (int h = 0; h < H; h++) {
            a0 += ld(dkh[((i64)bt * H + h) * DQK + DN + 2 * i]);
            a1 += ld(dkh[((i64)bt * H + h) * DQK + DN + 2 * i + 1]);
        }
        st(dkpe + (i64)bt * R + 2 * i, a0 * cs[i] - a1 * sn[i]);
        st(dkpe + (i64)bt * R + 2 * i + 1, a0 * sn[i] + a1 * cs[i]);
    }
}

template <typename TO, typename TQ, typename TK, typename TV, int B, int T, int H, int DQK, int DV>
__device__ __forceinline__ void mla_attention_fwd(TO *out,      // (B,T,H*DV)
                                                  float *lse,   // (B,H,T)
                                                  const TQ *q,  // (B,T,H*DQK)
                                                  const TK *k,  // (B,T,H*DQK)
                                                  const TV *v) { // (B,T,H*DV)
    const float scale = 1.0f / sqrtf((float)DQK);
    for (i64 row = (i64)blockIdx.x * blockDim.x + threadIdx.x; row < (i64)B * H * T; row += (i64)gridDim.x * blockDim.x) {
        int b = (int)(row / ((i64)H * T)), h = (int)(row / T % H), t = (int)(row % T);
        const TQ *qt = q + ((i64)(b * T + t) * H + h) * DQK;
        float o[DV];
        for (int d = 0; d < DV; d++) o[d] = 0.0f;
        float m = -__int_as_float(0x7f800000), l = 0.0f;
        for (int j = 0; j <= t; j++) {
            const TK *kj = k + ((i64)(b * T + j) * H + h) * DQK;
            const TV *vj = v + ((i64)(b * T + j) * H + h) * DV;
            float s = 0.0f;
            for (int d = 0; d < DQK; d++) s += ld(qt[d]) * ld(kj[d]);
            s *= scale;
            if (s > m) {
                float corr = expf(m - s);
                l *= corr;
                for (int d = 0; d < DV; d++) o[d] *= corr;
                m = s;
            }
            float p = expf(s - m);
            l += p;
            for (int d = 0; d < DV; d++) o[d] += p * ld(vj[d]);
        }
        for (int d = 0; d < DV; d++) st(out + ((i64)(b * T + t) * H + h) * DV + d, o[d] / l);
        lse[((i64)b * H + h) * T + t] = m + logf(l);
    }
}

// FP32 gradients into ws: [dq (B*T*H*DQK) | dk (same) | dv (B*T*H*DV)].
template <typename TG, typename TQ, typename TK, typename TV, typename TO, int B, int T, int H, int DQK, int DV>
__device__ __forceinline__ void mla_attention_bwd(float *ws, const TG *dout, const TQ *q, const TK *k, const TV *v, const TO *out,
                                                  const float *lse) {
    const float scale = 1.0f / sqrtf((float)DQK);
    constexpr i64 NQ = (i64)B * T * H * DQK;
    float *dq = ws, *dk = ws + NQ, *dv = ws + 2 * NQ;
    for (int bh = blockIdx.x * blockDim.x + threadIdx.x; bh < B * H; bh += gridDim.x * blockDim.x) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            i64 r = (i64)(b * T + t) * H + h;
            for (int d = 0; d < DQK; d++) dq[r * DQK + d] = dk[r * DQK + d] = 0.0f;
            for (int d = 0; d < DV; d++) dv[r * DV + d] = 0.0f;
        }
        for (int t = 0; t < T; t++) {
            i64 rt = (i64)(b * T + t) * H + h;
            float D = 0.0f;
            for (int d = 0; d < DV; d++) D += ld(dout[rt * DV + d]) * ld(out[rt * DV + d]);
            float Lt = lse[((i64)b * H + h) * T + t];
            for (int j = 0; j <= t; j++) {
                i64 rj = (i64)(b * T + j) * H + h;
                float s = 0.0f;
                for (int d = 0; d < DQK; d++) s += ld(q[rt * DQK + d]) * ld(k[rj * DQK + d]);
                float p = expf(s * scale - Lt), dp = 0.0f;
                for (int d = 0; d < DV; d++) {
                    dv[rj * DV + d] += p * ld(dout[rt * DV + d]);
                    dp += ld(dout[rt * DV + d]) * ld(v[rj * DV + d]);
                }
                float ds = p * (dp - D) * scale;
                for (int d = 0; d < DQK; d++) {
                    dq[rt * DQK + d] += ds * ld(k[rj * DQK + d]);
                    dk[rj * DQK + d] += ds * ld(q[rt * DQK + d]);
                }
            }
        }
    }
}

template <typename TQ, typename TK, typename TV, i64 NQ, i64 NV>
__device__ __forceinline__ void mla_attention_bwd_finish(TQ *dq, TK *dk, TV *dv, const float *ws) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < 2 * NQ + NV; i += (i64)gridDim.x * blockDim.x) {
        if (i < NQ) st(dq + i, ws[i]);
        else if (i < 2 * NQ) st(dk + (i - NQ), ws[i]);
        else st(dv + (i - 2 * NQ), ws[i]);
    }
}
