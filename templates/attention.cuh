// attention.cuh: causal grouped-query attention, forward and backward, flash style (the T x T
// scores never exist in memory), with the RoPE steps around it fused in (FUSE_ROPE_ATTENTION).
//
// Semantics are runtime/cpu/ref.c's ref_attention_fwd / ref_attention_bwd / ref_rope_*:
//   q, out, dq, dout (B,T,H*HD); k, v, dk, dv (B,T,KV*HD); lse (B,H,T); query head h reads kv head
//   h / (H/KV); s = (q . k) * (1/sqrtf(HD)); keys j <= t; out = softmax(s) v; lse = m + log(l);
//   backward overwrites dq, dk, dv: p = exp(s - lse), D = dout . out, ds = p (dout . v - D) * scale.
// FP32 softmax and accumulation whatever the storage types; outputs are rounded once, when stored.
//
// Two implementations of the same three kernels (forward; backward dk/dv; backward dq):
//   - *_mma: q, k, v (and dout) in bf16, HD % 16 == 0, T % 64 == 0. Tensor cores (mma.sync
//     m16n8k16 bf16, FP32 accumulators, ldmatrix from shared tiles padded by 16 bytes a row, so
//     conflict-free). cp.async streams the next K/V tile while the current one is multiplied
//     (forward and dq). The probabilities P and dS enter the second GEMMs as bf16 hi + lo pairs
//     (SPLIT = 1: two mma, about 16 bits of P kept), so that the result stays close to FP32
//     reassociation of the CPU's sums instead of carrying bf16's 2^-9 per probability.
//   - *_simt: any storage types and any T (the FP32 policies). CUDA cores, FP32 shared tiles, 4
//     threads a row. Every sum runs in ref.c's order without FMA contraction (dot products, the
//     forward's per-key online softmax, D, the dq/dk/dv accumulations), so the results are
//     ref.c's bit for bit except where CUDA's expf/logf (2 ulp) differ from glibc's.
// The backward is deterministic (no atomics): one kernel owns a key tile and sums dk, dv over
// every query of its kv head's group; a second owns a query tile and sums dq over the keys,
// recomputing P and dS (two extra small GEMMs instead of an atomic dq accumulation).
//
// Launch shapes (cg_attention.c computes the same numbers; kernels trap on too little smem):
//   rope_qk   grid ceil(B*T*HD/2 / 256), block 256            (forward with RoPE: q_rope, k_rope)
//   fwd       grid (T/64, H, B), block 128 (mma); (ceil(T/BQ), H, B), block 4*BQ (simt)
//   bwd_prep  grid ceil(B*T*H / 256) (+ ceil(T*HD/2 / 256) with RoPE), block 256: D and the table
//   bwd_dkdv  grid (T/BN, KV, B), block 32*WARPS (mma, AttnDkdvMma); (ceil(T/BQ), KV, B) (simt)
//   bwd_dq    grid (T/64, H, B), block 128 (mma); (ceil(T/BQ), H, B), block 4*BQ (simt)
// Scratch (ws, backward only): D (B,H,T) floats, then from float AttnWs::TAB the inverse-rotation
// table (T, HD/2) of (cos, sin) with RoPE. Written by bwd_prep before the kernels that read it.
//
// Numerics against the CPU (runtime/cpu, the oracle):
//   - mma path: scores are FP32 sums in another order; P, dS as hi+lo bf16 (relative error
//     <= 2^-16); expf/logf within 2 ulp. out, dq, dk, dv in bf16 land on the CPU's value or the
//     next bf16 (a fraction of a percent of elements; 2 ulp after RoPE's second rounding); lse
//     within 1e-6 absolute. f32 outputs: within 1e-5 of the tensor's largest magnitude.
//   - simt path: bit-exact but for expf/logf's last-ulp differences.
//   - RoPE parts are bit-exact: the angle in double exactly as ref.c computes it (CUDA's double
//     pow/cos/sin are within 1-2 ulp of double, so the float cos/sin match but for rare ties),
//     the rotation unfused, and the CPU's rounding points: q_rope/k_rope rounded to their type;
//     dq/dk rounded to their type after attention_bwd, rotated back, rounded again.
//
// Must not: write any (b,t,h) row twice (every output element has exactly one owner thread), use
// atomics, or read rows past T (edges of the simt path are zero-filled).

// -inf without math.h (NVRTC has no headers).
__device__ __forceinline__ float attn_neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ int attn_min(int a, int b) { return a < b ? a : b; }

// Two adjacent outputs (an even column and the next).
__device__ __forceinline__ void attn_st2(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }
__device__ __forceinline__ void attn_st2(bf16 *p, float a, float b) { *(u32 *)p = pack_bf16x2(a, b); }
__device__ __forceinline__ void attn_st2(f16 *p, float a, float b) { st(p, a), st(p + 1, b); }

__device__ __forceinline__ float attn_bf16_lo(u32 x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float attn_bf16_hi(u32 x) { return __uint_as_float(x & 0xffff0000u); }

// The A fragment (16 rows x 16 columns) of a probability tile held as two C fragments (columns
// 0-7 in c0, 8-15 in c1), split into bf16 hi and lo parts: x = hi + lo + O(2^-16 x).
__device__ __forceinline__ void attn_split_a(u32 (&hi)[4], u32 (&lo)[4], const float (&c0)[4], const float (&c1)[4]) {
    hi[0] = pack_bf16x2(c0[0], c0[1]), hi[1] = pack_bf16x2(c0[2], c0[3]);
    hi[2] = pack_bf16x2(c1[0], c1[1]), hi[3] = pack_bf16x2(c1[2], c1[3]);
    lo[0] = pack_bf16x2(c0[0] - attn_bf16_lo(hi[0]), c0[1] - attn_bf16_hi(hi[0]));
    lo[1] = pack_bf16x2(c0[2] - attn_bf16_lo(hi[1]), c0[3] - attn_bf16_hi(hi[1]));
    lo[2] = pack_bf16x2(c1[0] - attn_bf16_lo(hi[2]), c1[1] - attn_bf16_hi(hi[2]));
    lo[3] = pack_bf16x2(c1[2] - attn_bf16_lo(hi[3]), c1[3] - attn_bf16_hi(hi[3]));
}

// Element offset (in a tile with row stride LD) of the row this lane feeds to ldmatrix.x4 for:
//   attn_lds_a:  an A fragment, rows r0..r0+15 x cols c0..c0+15 of a row-major tile; also the B
//                fragments of n-tiles c0 and c0+8 read transposed from [k][n] storage (k = rows r0..)
//   attn_lds_bn: the B fragments of n-tiles n0 and n0+8 (k = cols c0..c0+15) from [n][k] storage
// Registers come back as (a0a1, a2a3, a4a5, a6a7), or (b0b1, b2b3) of n-tile 0 then of n-tile 1.
__device__ __forceinline__ int attn_lds_a(int r0, int c0, int lane, int LD) {
    return (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + c0 + (lane >> 4) * 8;
}
__device__ __forceinline__ int attn_lds_bn(int n0, int c0, int lane, int LD) {
    return (n0 + (lane & 7) + (lane >> 4) * 8) * LD + c0 + ((lane >> 3) & 1) * 8;
}

// ROWS x HD bf16 rows (global row stride `stride` elements) into a tile with row stride LD.
template <int ROWS, int HD, int LD, int THREADS> __device__ __forceinline__ void attn_load_rows(bf16 *s, const bf16 *g, i64 stride) {
    constexpr int CPR = HD / 8; // 16-byte chunks per row
#pragma unroll
    for (int c = threadIdx.x; c < ROWS * CPR; c += THREADS) {
        int r = c / CPR, ch = c % CPR;
        cp_async16(s + r * LD + ch * 8, g + (i64)r * stride + ch * 8);
    }
}

// Scratch layout of the backward (floats).
template <int B, int T, int H> struct AttnWs {
    static constexpr i64 D = 0;                                     // (B,H,T) rowsum(dout * out)
    static constexpr i64 TAB = ((i64)B * H * T + 63) / 64 * 64;     // (T, HD/2) float2 (cos, sin)
};

// ---- RoPE ---------------------------------------------------------------------------------------

// cos and sin of sign * t * theta^(-2i/hd), as runtime/cpu/ref.c rope_rotate computes them.
__device__ __forceinline__ void attn_rope_cs(int t, int i, int hd, float theta, double sign, float &cs, float &sn) {
    double ang = sign * t * pow((double)theta, -2.0 * i / hd);
    cs = (float)cos(ang), sn = (float)sin(ang);
}

// (x0, x1) <- (x0 cs - x1 sn, x0 sn + x1 cs), each product rounded (the CPU does not contract).
__device__ __forceinline__ void attn_rotate(float &x0, float &x1, float cs, float sn) {
    float a = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
    float b = __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, cs));
    x0 = a, x1 = b;
}

// q_rope (B,T,H*HD), k_rope (B,T,KV*HD) = rope_fwd of q (B,T,H*HD), k (B,T,KV*HD), rounded to their
// types. One thread per (b, t, pair i): the angle once, then every head, as rope_rotate loops.
template <typename TQR, typename TKR, typename TQ, typename TK, int B, int T, int H, int KV, int HD>
__device__ __forceinline__ void attn_rope_qk(TQR *q_rope, TKR *k_rope, const TQ *q, const TK *k, float theta) {
    static_assert(HD % 2 == 0, "attention: RoPE rotates pairs: HD must be even");
    constexpr int HALF = HD / 2;
    i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (i64)B * T * HALF) return;
    int i = (int)(idx % HALF);
    i64 bt = idx / HALF;
    float cs, sn;
    attn_rope_cs((int)(bt % T), i, HD, theta, 1.0, cs, sn);
    for (int h = 0; h < H; h++) {
        i64 o = (bt * H + h) * HD + 2 * i;
        float x0 = ld(q[o]), x1 = ld(q[o + 1]);
        attn_rotate(x0, x1, cs, sn);
        st(&q_rope[o], x0), st(&q_rope[o + 1], x1);
    }
    for (int h = 0; h < KV; h++) {
        i64 o = (bt * KV + h) * HD + 2 * i;
        float x0 = ld(k[o]), x1 = ld(k[o + 1]);
        attn_rotate(x0, x1, cs, sn);
        st(&k_rope[o], x0), st(&k_rope[o + 1], x1);
    }
}

// A gradient pair (columns 2i, 2i+1 of position t) to storage. With ROPE: rounded to the tensor's
// type (the CPU rounds attention_bwd's outputs), rotated back by rope_bwd, rounded again.
template <int ROPE, int HD, typename TD>
__device__ __forceinline__ void attn_store_grad(TD *p, float x0, float x1, int t, int i, const float *ws_tab) {
    if constexpr (ROPE) {
        x0 = round_to<TD>(x0), x1 = round_to<TD>(x1);
        float2 c = ((const float2 *)ws_tab)[(i64)t * (HD / 2) + i];
        attn_rotate(x0, x1, c.x, c.y);
    }
    attn_st2(p, x0, x1);
}

// ws: D (B,H,T) = rowsum(dout * out) over HD, one thread a row in ref.c's order (a sequential
// unfused sum: bit-identical to the CPU's D); with ROPE also the (cos, sin) table of the inverse
// rotation at ws + AttnWs::TAB. Blocks of 256: the rows first, then the table.
// dout, out (B,T,H*HD)
template <typename TDO, typename TO, int B, int T, int H, int HD, int ROPE>
__device__ __forceinline__ void attn_bwd_prep(float *ws, const TDO *dout, const TO *out, float theta) {
    constexpr i64 NROWS = (i64)B * T * H;
    constexpr i64 NRB = (NROWS + 255) / 256;
    if ((i64)blockIdx.x < NRB) {
        i64 r = (i64)blockIdx.x * 256 + threadIdx.x; // row of (B,T,H)
        if (r >= NROWS) return;
        const TDO *gr = dout + r * HD;
        const TO *orow = out + r * HD;
        float s = 0.0f;
        for (int d = 0; d < HD; d++) s = __fadd_rn(s, __fmul_rn(ld(gr[d]), ld(orow[d])));
        i64 bt = r / H;
        int h = (int)(r % H), b = (int)(bt / T), t = (int)(bt % T);
        ws[AttnWs<B, T, H>::D + ((i64)b * H + h) * T + t] = s;
    } else if constexpr (ROPE) {
        i64 idx = ((i64)blockIdx.x - NRB) * 256 + threadIdx.x;
        if (idx >= (i64)T * (HD / 2)) return;
        float cs, sn;
        attn_rope_cs((int)(idx / (HD / 2)), (int)(idx % (HD / 2)), HD, theta, -1.0, cs, sn);
        ((float2 *)(ws + AttnWs<B, T, H>::TAB))[idx] = make_float2(cs, sn);
    }
}

// ---- tensor-core path (bf16 inputs) -------------------------------------------------------------

template <int T, int H, int KV, int HD> __device__ __forceinline__ void attn_mma_checks() {
    static_assert(H % KV == 0, "attention: KV must divide H");
    static_assert(HD % 16 == 0 && HD >= 16 && HD <= 128, "attention (mma): HD must be a multiple of 16, at most 128");
    static_assert(T % 64 == 0, "attention (mma): T must be a multiple of 64 (the simt path takes any T)");
}

// out (B,T,H*HD), lse (B,H,T); q (B,T,H*HD), k, v (B,T,KV*HD) bf16.
// Block: 4 warps, 64 queries (16 a warp) of head h; loops over 64-key tiles up to the diagonal.
// Shared: K and V tiles, 64 x (HD+8) bf16 each (Q passes through the K tile first).
template <typename TO, int B, int T, int H, int KV, int HD, int SPLIT>
__device__ __forceinline__ void attn_fwd_mma(TO *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v) {
    attn_mma_checks<T, H, KV, HD>();
    constexpr int BM = 64, BN = 64, THREADS = 128, LD = HD + 8, NQT = T / BM;
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(2 * BN * LD * 2);
    bf16 *Ks = (bf16 *)attn_smem, *Vs = Ks + BN * LD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int qt = NQT - 1 - (int)blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / KV);
    const int q0 = qt * BM;
    const float scale = 1.0f / sqrtf((float)HD);

    attn_load_rows<BM, HD, LD, THREADS>(Ks, q + ((i64)(b * T + q0) * H + h) * HD, (i64)H * HD);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    u32 qf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) ldsm_x4(qf[kk], Ks + attn_lds_a(warp * 16, kk * 16, lane, LD));
    __syncthreads(); // every warp holds its Q before the K tile overwrites it

    // K and V of tile 0; afterwards the next K streams in during P V and the next V during
    // Q K^T and the softmax (commit order K0, V0, K1, V1, ...: wait_group 1 = "K is in")
    const bf16 *kg = k + ((i64)b * T * KV + hk) * HD, *vg = v + ((i64)b * T * KV + hk) * HD; // row 0 of (b, hk)
    attn_load_rows<BN, HD, LD, THREADS>(Ks, kg, (i64)KV * HD);
    cp_async_commit();
    attn_load_rows<BN, HD, LD, THREADS>(Vs, vg, (i64)KV * HD);
    cp_async_commit();

    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float mrow[2] = {attn_neg_inf(), attn_neg_inf()}, lrow[2] = {0.0f, 0.0f}; // rows g and g+8

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * BN;
        cp_async_wait<1>(); // K of this tile is in; its V may still be streaming
        __syncthreads();

        float s[BN / 8][4];
#pragma unroll
        for (int i = 0; i < BN / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                u32 r[4];
                ldsm_x4(r, Ks + attn_lds_bn(np * 16, kk * 16, lane, LD));
                mma_m16n8k16_bf16(s[2 * np], qf[kk], r[0], r[1]);
                mma_m16n8k16_bf16(s[2 * np + 1], qf[kk], r[2], r[3]);
            }
        // scale, causal mask (keys after the query: only on the diagonal tile)
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = q0 + warp * 16 + g + (e >> 1) * 8, col = k0 + nt * 8 + 2 * tq + (e & 1);
                s[nt][e] = col > row ? attn_neg_inf() : s[nt][e] * scale;
            }
        // online softmax; every row has key k0 <= row unmasked, so the new max is finite
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float mx = attn_neg_inf();
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * hh], s[nt][2 * hh + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mnew = fmaxf(mrow[hh], mx);
            float corr = expf(mrow[hh] - mnew); // 0 on the first tile
            mrow[hh] = mnew;
            lrow[hh] *= corr;
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) o[dn][2 * hh] *= corr, o[dn][2 * hh + 1] *= corr;
        }
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = expf(s[nt][e] - mrow[e >> 1]);
                s[nt][e] = p;
                lrow[e >> 1] += p;
            }
        cp_async_wait<0>(); // V of this tile
        __syncthreads();   // ... visible, and every warp is done with K
        if (kt < qt) attn_load_rows<BN, HD, LD, THREADS>(Ks, kg + (i64)(k0 + BN) * KV * HD, (i64)KV * HD);
        cp_async_commit(); // (an empty group on the last tile keeps the count)
        // O += P V
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) {
            u32 ph[4], pl[4];
            attn_split_a(ph, pl, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                u32 r[4];
                ldsm_x4_trans(r, Vs + attn_lds_a(kc * 16, dp * 16, lane, LD));
                mma_m16n8k16_bf16(o[2 * dp], ph, r[0], r[1]);
                mma_m16n8k16_bf16(o[2 * dp + 1], ph, r[2], r[3]);
                if constexpr (SPLIT) {
                    mma_m16n8k16_bf16(o[2 * dp], pl, r[0], r[1]);
                    mma_m16n8k16_bf16(o[2 * dp + 1], pl, r[2], r[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with V
        if (kt < qt) attn_load_rows<BN, HD, LD, THREADS>(Vs, vg + (i64)(k0 + BN) * KV * HD, (i64)KV * HD);
        cp_async_commit();
    }
    cp_async_wait<0>(); // the two empty groups

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float l = lrow[hh];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int row = q0 + warp * 16 + g + 8 * hh;
        TO *orow = out + ((i64)(b * T + row) * H + h) * HD;
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) attn_st2(orow + dn * 8 + 2 * tq, o[dn][2 * hh] / l, o[dn][2 * hh + 1] / l);
        if (tq == 0) lse[((i64)b * H + h) * T + row] = mrow[hh] + logf(l);
    }
}

template <int HD> struct AttnDkdvMma {
    static constexpr int WARPS = HD <= 64 ? 4 : 2, BN = 16 * WARPS, BQ = HD <= 64 ? 64 : 32, THREADS = 32 * WARPS, LD = HD + 8;
    static constexpr int SMEM = (2 * BN + 2 * BQ) * LD * 2 + 2 * BQ * 4;
};

// dk, dv (B,T,KV*HD); dout, q (B,T,H*HD) bf16; k, v (B,T,KV*HD) bf16; lse (B,H,T); ws: D (+ table).
// Block: WARPS warps, BN keys (16 a warp) of kv head hk; loops over the group's query heads and
// the query tiles at or after the keys. Computes S^T = K Q^T and dP^T = V dO^T (keys as rows), so
// that P^T and dS^T are A fragments for dV += P^T dO and dK += dS^T Q.
template <typename TDK, typename TDV, int B, int T, int H, int KV, int HD, int SPLIT, int ROPE>
__device__ __forceinline__ void attn_bwd_dkdv_mma(TDK *dk, TDV *dv, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                                                  const float *lse, const float *ws) {
    attn_mma_checks<T, H, KV, HD>();
    using C = AttnDkdvMma<HD>;
    constexpr int BN = C::BN, BQ = C::BQ, THREADS = C::THREADS, LD = C::LD, G = H / KV;
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(C::SMEM);
    bf16 *Ks = (bf16 *)attn_smem, *Vs = Ks + BN * LD, *Qs = Vs + BN * LD, *dOs = Qs + BQ * LD;
    float *lse_s = (float *)(dOs + BQ * LD), *D_s = lse_s + BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, k0 = kt * BN;
    const float scale = 1.0f / sqrtf((float)HD);
    const float *Dws = ws + AttnWs<B, T, H>::D;

    attn_load_rows<BN, HD, LD, THREADS>(Ks, k + ((i64)(b * T + k0) * KV + hk) * HD, (i64)KV * HD);
    attn_load_rows<BN, HD, LD, THREADS>(Vs, v + ((i64)(b * T + k0) * KV + hk) * HD, (i64)KV * HD);
    cp_async_commit(); // waited for with the first query tile

    float dka[HD / 8][4], dva[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.0f;

    for (int hq = 0; hq < G; hq++) {
        const int h = hk * G + hq;
        for (int qt = k0 / BQ; qt < T / BQ; qt++) {
            const int q0 = qt * BQ;
            attn_load_rows<BQ, HD, LD, THREADS>(Qs, q + ((i64)(b * T + q0) * H + h) * HD, (i64)H * HD);
            attn_load_rows<BQ, HD, LD, THREADS>(dOs, dout + ((i64)(b * T + q0) * H + h) * HD, (i64)H * HD);
            cp_async_commit();
            for (int i = threadIdx.x; i < BQ; i += THREADS) {
                lse_s[i] = lse[((i64)b * H + h) * T + q0 + i];
                D_s[i] = Dws[((i64)b * H + h) * T + q0 + i];
            }
            cp_async_wait<0>();
            __syncthreads();

            float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
            for (int i = 0; i < BQ / 8; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                u32 ka[4], va[4];
                ldsm_x4(ka, Ks + attn_lds_a(warp * 16, kk * 16, lane, LD));
                ldsm_x4(va, Vs + attn_lds_a(warp * 16, kk * 16, lane, LD));
#pragma unroll
                for (int np = 0; np < BQ / 16; np++) {
                    u32 r[4];
                    ldsm_x4(r, Qs + attn_lds_bn(np * 16, kk * 16, lane, LD));
                    mma_m16n8k16_bf16(st[2 * np], ka, r[0], r[1]);
                    mma_m16n8k16_bf16(st[2 * np + 1], ka, r[2], r[3]);
                    ldsm_x4(r, dOs + attn_lds_bn(np * 16, kk * 16, lane, LD));
                    mma_m16n8k16_bf16(dpt[2 * np], va, r[0], r[1]);
                    mma_m16n8k16_bf16(dpt[2 * np + 1], va, r[2], r[3]);
                }
            }
            // P^T and dS^T (row: key j, column: query t; keys after the query get 0)
#pragma unroll
            for (int nt = 0; nt < BQ / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int j = k0 + warp * 16 + g + (e >> 1) * 8, c = nt * 8 + 2 * tq + (e & 1);
                    float p = j > q0 + c ? 0.0f : expf(__fsub_rn(__fmul_rn(st[nt][e], scale), lse_s[c]));
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - D_s[c]) * scale;
                }
            // dV += P^T dO, dK += dS^T Q (dO and Q read transposed: [query][d] is [k][n])
#pragma unroll
            for (int kc = 0; kc < BQ / 16; kc++) {
                u32 ph[4], pl[4], sh[4], sl[4];
                attn_split_a(ph, pl, st[2 * kc], st[2 * kc + 1]);
                attn_split_a(sh, sl, dpt[2 * kc], dpt[2 * kc + 1]);
#pragma unroll
                for (int dp = 0; dp < HD / 16; dp++) {
                    u32 r[4];
                    ldsm_x4_trans(r, dOs + attn_lds_a(kc * 16, dp * 16, lane, LD));
                    mma_m16n8k16_bf16(dva[2 * dp], ph, r[0], r[1]);
                    mma_m16n8k16_bf16(dva[2 * dp + 1], ph, r[2], r[3]);
                    if constexpr (SPLIT) {
                        mma_m16n8k16_bf16(dva[2 * dp], pl, r[0], r[1]);
                        mma_m16n8k16_bf16(dva[2 * dp + 1], pl, r[2], r[3]);
                    }
                    ldsm_x4_trans(r, Qs + attn_lds_a(kc * 16, dp * 16, lane, LD));
                    mma_m16n8k16_bf16(dka[2 * dp], sh, r[0], r[1]);
                    mma_m16n8k16_bf16(dka[2 * dp + 1], sh, r[2], r[3]);
                    if constexpr (SPLIT) {
                        mma_m16n8k16_bf16(dka[2 * dp], sl, r[0], r[1]);
                        mma_m16n8k16_bf16(dka[2 * dp + 1], sl, r[2], r[3]);
                    }
                }
            }
            __syncthreads(); // Q, dO, lse, D are refilled next
        }
    }

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int j = k0 + warp * 16 + g + 8 * hh;
        const i64 off = ((i64)(b * T + j) * KV + hk) * HD;
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            const int col = dn * 8 + 2 * tq;
            attn_st2(dv + off + col, dva[dn][2 * hh], dva[dn][2 * hh + 1]);
            attn_store_grad<ROPE, HD>(dk + off + col, dka[dn][2 * hh], dka[dn][2 * hh + 1], j, col / 2, ws + AttnWs<B, T, H>::TAB);
        }
    }
}

template <int HD> struct AttnDqMma {
    static constexpr int BM = 64, BN = HD <= 64 ? 64 : 32, THREADS = 128, LD = HD + 8;
    static constexpr int SMEM = 2 * BM * LD * 2; // K and V tiles; Q and dO pass through them (BM >= BN)
};

// dq (B,T,H*HD); dout, q (B,T,H*HD) bf16; k, v (B,T,KV*HD) bf16; lse (B,H,T); ws: D (+ table).
// Block: 4 warps, 64 queries (16 a warp) of head h; loops over BN-key tiles up to the diagonal,
// recomputing P and dS, and sums dQ += dS K.
template <typename TDQ, int B, int T, int H, int KV, int HD, int SPLIT, int ROPE>
__device__ __forceinline__ void attn_bwd_dq_mma(TDQ *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                                                const float *ws) {
    attn_mma_checks<T, H, KV, HD>();
    using C = AttnDqMma<HD>;
    constexpr int BM = C::BM, BN = C::BN, THREADS = C::THREADS, LD = C::LD, NQT = T / BM;
    static_assert(BM >= BN, "attention: Q and dO pass through the K and V tiles");
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(C::SMEM);
    bf16 *Ks = (bf16 *)attn_smem, *Vs = Ks + BM * LD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int qt = NQT - 1 - (int)blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / KV);
    const int q0 = qt * BM;
    const float scale = 1.0f / sqrtf((float)HD);

    attn_load_rows<BM, HD, LD, THREADS>(Ks, q + ((i64)(b * T + q0) * H + h) * HD, (i64)H * HD);
    attn_load_rows<BM, HD, LD, THREADS>(Vs, dout + ((i64)(b * T + q0) * H + h) * HD, (i64)H * HD);
    cp_async_commit();
    float lse_r[2], D_r[2];
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        i64 ri = ((i64)b * H + h) * T + q0 + warp * 16 + g + 8 * hh;
        lse_r[hh] = lse[ri];
        D_r[hh] = ws[AttnWs<B, T, H>::D + ri];
    }
    cp_async_wait<0>();
    __syncthreads();
    u32 qf[HD / 16][4], df[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        ldsm_x4(qf[kk], Ks + attn_lds_a(warp * 16, kk * 16, lane, LD));
        ldsm_x4(df[kk], Vs + attn_lds_a(warp * 16, kk * 16, lane, LD));
    }
    __syncthreads();

    float dqa[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;

    // K and V of tile 0; afterwards the next V streams in during dS and dQ += dS K, the next K
    // from then until the next tile starts
    const int nkt = (q0 + BM - 1) / BN + 1; // key tiles holding keys <= the block's last query
    const bf16 *kg = k + ((i64)b * T * KV + hk) * HD, *vg = v + ((i64)b * T * KV + hk) * HD; // row 0 of (b, hk)
    attn_load_rows<BN, HD, LD, THREADS>(Ks, kg, (i64)KV * HD);
    attn_load_rows<BN, HD, LD, THREADS>(Vs, vg, (i64)KV * HD);
    cp_async_commit();
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * BN;
        cp_async_wait<0>();
        __syncthreads();

        float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
        for (int i = 0; i < BN / 8; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                u32 r[4];
                ldsm_x4(r, Ks + attn_lds_bn(np * 16, kk * 16, lane, LD));
                mma_m16n8k16_bf16(s[2 * np], qf[kk], r[0], r[1]);
                mma_m16n8k16_bf16(s[2 * np + 1], qf[kk], r[2], r[3]);
                ldsm_x4(r, Vs + attn_lds_bn(np * 16, kk * 16, lane, LD));
                mma_m16n8k16_bf16(dp[2 * np], df[kk], r[0], r[1]);
                mma_m16n8k16_bf16(dp[2 * np + 1], df[kk], r[2], r[3]);
            }
        __syncthreads(); // every warp is done with V
        if (kt + 1 < nkt) attn_load_rows<BN, HD, LD, THREADS>(Vs, vg + (i64)(k0 + BN) * KV * HD, (i64)KV * HD);
        cp_async_commit();
        // dS (row: query t, column: key j; keys after the query get 0)
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = q0 + warp * 16 + g + (e >> 1) * 8, j = k0 + nt * 8 + 2 * tq + (e & 1);
                float p = j > t ? 0.0f : expf(__fsub_rn(__fmul_rn(s[nt][e], scale), lse_r[e >> 1]));
                s[nt][e] = p * (dp[nt][e] - D_r[e >> 1]) * scale;
            }
        // dQ += dS K (K read transposed: [key][d] is [k][n])
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) {
            u32 sh[4], sl[4];
            attn_split_a(sh, sl, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
            for (int dn = 0; dn < HD / 16; dn++) {
                u32 r[4];
                ldsm_x4_trans(r, Ks + attn_lds_a(kc * 16, dn * 16, lane, LD));
                mma_m16n8k16_bf16(dqa[2 * dn], sh, r[0], r[1]);
                mma_m16n8k16_bf16(dqa[2 * dn + 1], sh, r[2], r[3]);
                if constexpr (SPLIT) {
                    mma_m16n8k16_bf16(dqa[2 * dn], sl, r[0], r[1]);
                    mma_m16n8k16_bf16(dqa[2 * dn + 1], sl, r[2], r[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with K
        if (kt + 1 < nkt) attn_load_rows<BN, HD, LD, THREADS>(Ks, kg + (i64)(k0 + BN) * KV * HD, (i64)KV * HD);
        cp_async_commit();
    }
    cp_async_wait<0>(); // the empty groups of the last tile

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int t = q0 + warp * 16 + g + 8 * hh;
        TDQ *row = dq + ((i64)(b * T + t) * H + h) * HD;
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            const int col = dn * 8 + 2 * tq;
            attn_store_grad<ROPE, HD>(row + col, dqa[dn][2 * hh], dqa[dn][2 * hh + 1], t, col / 2, ws + AttnWs<B, T, H>::TAB);
        }
    }
}

// ---- CUDA-core path (any storage types, any T) ---------------------------------------------------

// Tiles of BQ queries x BQ keys; thread 4r + c owns row r and the columns c, c+4, ... of its
// scores, and the output pairs (8e + 2c, +1). FP32 shared tiles with odd row strides (no conflicts).
template <int HD> struct AttnSimt {
    static constexpr int BQ = HD <= 64 ? 32 : 16, THREADS = 4 * BQ, LDF = HD + 1, LDP = BQ + 1;
    static constexpr int FWD_SMEM = (3 * BQ * LDF + BQ * LDP) * 4;   // Q, K, V, scores
    static constexpr int DKDV_SMEM = (4 * BQ * LDF + 2 * BQ * LDP + 2 * BQ) * 4;
    static constexpr int DQ_SMEM = (4 * BQ * LDF + BQ * LDP) * 4;
};

template <int T, int H, int KV, int HD> __device__ __forceinline__ void attn_simt_checks() {
    static_assert(H % KV == 0, "attention: KV must divide H");
    static_assert(HD % 8 == 0 && HD >= 8 && HD <= 128, "attention (simt): HD must be a multiple of 8, at most 128");
}

// rows [row0, row0 + ROWS) of a (.., stride) tensor into FP32 shared rows of LDF; rows >= T read as 0.
template <int ROWS, int HD, int T, int THREADS, typename TS>
__device__ __forceinline__ void attn_load_f(float *s, const TS *g, int row0, i64 stride) {
    constexpr int LDF = HD + 1;
    for (int i = threadIdx.x; i < ROWS * HD; i += THREADS) {
        int r = i / HD, d = i % HD;
        s[r * LDF + d] = row0 + r < T ? ld(g[(i64)r * stride + d]) : 0.0f;
    }
}

// ref.c dotf: a sequential FP32 sum of rounded products (no FMA), bit for bit.
template <int HD> __device__ __forceinline__ float attn_dot(const float *a, const float *b) {
    float s = 0.0f;
#pragma unroll 8
    for (int d = 0; d < HD; d++) s = __fadd_rn(s, __fmul_rn(a[d], b[d]));
    return s;
}

// out (B,T,H*HD), lse (B,H,T); q (B,T,H*HD), k, v (B,T,KV*HD), any storage types.
// Block: BQ queries of head h. Per key tile the four threads of a row compute its scores together;
// then each walks the row's keys in order with ref.c's online softmax (rescale when the max grows)
// over its own output columns, so m, l and out follow the CPU's operations one for one.
template <typename TO, typename TQ, typename TK, typename TV, int B, int T, int H, int KV, int HD>
__device__ __forceinline__ void attn_fwd_simt(TO *out, float *lse, const TQ *q, const TK *k, const TV *v) {
    attn_simt_checks<T, H, KV, HD>();
    using C = AttnSimt<HD>;
    constexpr int BQ = C::BQ, THREADS = C::THREADS, LDF = C::LDF, LDP = C::LDP, NQT = (T + BQ - 1) / BQ;
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(C::FWD_SMEM);
    float *Qs = (float *)attn_smem, *Ks = Qs + BQ * LDF, *Vs = Ks + BQ * LDF, *Ss = Vs + BQ * LDF;
    const int r = threadIdx.x >> 2, c4 = threadIdx.x & 3;
    const int qt = NQT - 1 - (int)blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / KV);
    const int q0 = qt * BQ, t = q0 + r;
    const float scale = 1.0f / sqrtf((float)HD);

    attn_load_f<BQ, HD, T, THREADS>(Qs, q + ((i64)(b * T + q0) * H + h) * HD, q0, (i64)H * HD);
    float o[HD / 8][2];
#pragma unroll
    for (int e = 0; e < HD / 8; e++) o[e][0] = o[e][1] = 0.0f;
    float m = attn_neg_inf(), l = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * BQ;
        __syncthreads(); // the previous tile's readers are done
        attn_load_f<BQ, HD, T, THREADS>(Ks, k + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
        attn_load_f<BQ, HD, T, THREADS>(Vs, v + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
        __syncthreads();
#pragma unroll
        for (int jj = 0; jj < BQ / 4; jj++) {
            int c = c4 + 4 * jj;
            Ss[r * LDP + c] = __fmul_rn(attn_dot<HD>(Qs + r * LDF, Ks + c * LDF), scale);
        }
        __syncwarp(); // the row's four threads share its scores
        const int cend = attn_min(BQ, attn_min(t - k0 + 1, T - k0)); // keys j <= t, j < T
        for (int c = 0; c < cend; c++) {
            float s = Ss[r * LDP + c];
            const float *vr = Vs + c * LDF + 2 * c4;
            if (s > m) {
                float corr = expf(m - s); // 0 on the first key
                l *= corr;
#pragma unroll
                for (int e = 0; e < HD / 8; e++) o[e][0] = __fmul_rn(o[e][0], corr), o[e][1] = __fmul_rn(o[e][1], corr);
                m = s;
            }
            float p = expf(s - m);
            l += p;
#pragma unroll
            for (int e = 0; e < HD / 8; e++)
                o[e][0] = __fadd_rn(o[e][0], __fmul_rn(p, vr[8 * e])), o[e][1] = __fadd_rn(o[e][1], __fmul_rn(p, vr[8 * e + 1]));
        }
    }
    if (t < T) {
        TO *orow = out + ((i64)(b * T + t) * H + h) * HD + 2 * c4;
#pragma unroll
        for (int e = 0; e < HD / 8; e++) attn_st2(orow + 8 * e, o[e][0] / l, o[e][1] / l);
        if (c4 == 0) lse[((i64)b * H + h) * T + t] = m + logf(l);
    }
}

// dk, dv (B,T,KV*HD); dout, q (B,T,H*HD); k, v (B,T,KV*HD); lse (B,H,T); ws: D (+ table).
// Block: BQ keys of kv head hk (thread 4c + c4: key c); loops over the group's heads and the query
// tiles at or after the keys.
template <typename TDK, typename TDV, typename TDO, typename TQ, typename TK, typename TV, int B, int T, int H, int KV, int HD, int ROPE>
__device__ __forceinline__ void attn_bwd_dkdv_simt(TDK *dk, TDV *dv, const TDO *dout, const TQ *q, const TK *k, const TV *v,
                                                   const float *lse, const float *ws) {
    attn_simt_checks<T, H, KV, HD>();
    using C = AttnSimt<HD>;
    constexpr int BQ = C::BQ, THREADS = C::THREADS, LDF = C::LDF, LDP = C::LDP, NQT = (T + BQ - 1) / BQ, G = H / KV;
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(C::DKDV_SMEM);
    float *Ks = (float *)attn_smem, *Vs = Ks + BQ * LDF, *Qs = Vs + BQ * LDF, *dOs = Qs + BQ * LDF;
    float *Ps = dOs + BQ * LDF, *dSs = Ps + BQ * LDP, *lse_s = dSs + BQ * LDP, *D_s = lse_s + BQ;
    const int c = threadIdx.x >> 2, c4 = threadIdx.x & 3;
    const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, k0 = kt * BQ, j = k0 + c;
    const float scale = 1.0f / sqrtf((float)HD);
    const float *Dws = ws + AttnWs<B, T, H>::D;

    attn_load_f<BQ, HD, T, THREADS>(Ks, k + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
    attn_load_f<BQ, HD, T, THREADS>(Vs, v + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
    float dkr[HD / 8][2], dvr[HD / 8][2];
#pragma unroll
    for (int e = 0; e < HD / 8; e++) dkr[e][0] = dkr[e][1] = dvr[e][0] = dvr[e][1] = 0.0f;

    for (int hq = 0; hq < G; hq++) {
        const int h = hk * G + hq;
        for (int qt = kt; qt < NQT; qt++) {
            const int q0 = qt * BQ;
            __syncthreads(); // the previous tile's readers are done
            attn_load_f<BQ, HD, T, THREADS>(Qs, q + ((i64)(b * T + q0) * H + h) * HD, q0, (i64)H * HD);
            attn_load_f<BQ, HD, T, THREADS>(dOs, dout + ((i64)(b * T + q0) * H + h) * HD, q0, (i64)H * HD);
            for (int i = threadIdx.x; i < BQ; i += THREADS) {
                bool in = q0 + i < T;
                lse_s[i] = in ? lse[((i64)b * H + h) * T + q0 + i] : 0.0f;
                D_s[i] = in ? Dws[((i64)b * H + h) * T + q0 + i] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int jj = 0; jj < BQ / 4; jj++) {
                int rr = c4 + 4 * jj, t = q0 + rr;
                float p = 0.0f, ds = 0.0f;
                if (j <= t && t < T) {
                    float s = __fmul_rn(attn_dot<HD>(Qs + rr * LDF, Ks + c * LDF), scale);
                    p = expf(__fsub_rn(s, lse_s[rr]));
                    ds = p * (attn_dot<HD>(dOs + rr * LDF, Vs + c * LDF) - D_s[rr]) * scale;
                }
                Ps[c * LDP + rr] = p;
                dSs[c * LDP + rr] = ds;
            }
            __syncwarp(); // the key's four threads share its Ps and dSs row
            for (int rr = 0; rr < BQ; rr++) {
                float p = Ps[c * LDP + rr], ds = dSs[c * LDP + rr];
                const float *gr = dOs + rr * LDF + 2 * c4, *qr = Qs + rr * LDF + 2 * c4;
#pragma unroll
                for (int e = 0; e < HD / 8; e++) {
                    dvr[e][0] = __fadd_rn(dvr[e][0], __fmul_rn(p, gr[8 * e])), dvr[e][1] = __fadd_rn(dvr[e][1], __fmul_rn(p, gr[8 * e + 1]));
                    dkr[e][0] = __fadd_rn(dkr[e][0], __fmul_rn(ds, qr[8 * e])), dkr[e][1] = __fadd_rn(dkr[e][1], __fmul_rn(ds, qr[8 * e + 1]));
                }
            }
        }
    }
    if (j < T) {
        const i64 off = ((i64)(b * T + j) * KV + hk) * HD;
#pragma unroll
        for (int e = 0; e < HD / 8; e++) {
            const int col = 8 * e + 2 * c4;
            attn_st2(dv + off + col, dvr[e][0], dvr[e][1]);
            attn_store_grad<ROPE, HD>(dk + off + col, dkr[e][0], dkr[e][1], j, col / 2, ws + AttnWs<B, T, H>::TAB);
        }
    }
}

// dq (B,T,H*HD); dout, q (B,T,H*HD); k, v (B,T,KV*HD); lse (B,H,T); ws: D (+ table).
// Block: BQ queries of head h (thread 4r + c4: query r); loops over the key tiles to the diagonal.
template <typename TDQ, typename TDO, typename TQ, typename TK, typename TV, int B, int T, int H, int KV, int HD, int ROPE>
__device__ __forceinline__ void attn_bwd_dq_simt(TDQ *dq, const TDO *dout, const TQ *q, const TK *k, const TV *v, const float *lse,
                                                 const float *ws) {
    attn_simt_checks<T, H, KV, HD>();
    using C = AttnSimt<HD>;
    constexpr int BQ = C::BQ, THREADS = C::THREADS, LDF = C::LDF, LDP = C::LDP, NQT = (T + BQ - 1) / BQ;
    DYNAMIC_SMEM(u8, attn_smem, 16);
    check_dynamic_smem(C::DQ_SMEM);
    float *Qs = (float *)attn_smem, *dOs = Qs + BQ * LDF, *Ks = dOs + BQ * LDF, *Vs = Ks + BQ * LDF, *dSs = Vs + BQ * LDF;
    const int r = threadIdx.x >> 2, c4 = threadIdx.x & 3;
    const int qt = NQT - 1 - (int)blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (H / KV);
    const int q0 = qt * BQ, t = q0 + r;
    const float scale = 1.0f / sqrtf((float)HD);

    attn_load_f<BQ, HD, T, THREADS>(Qs, q + ((i64)(b * T + q0) * H + h) * HD, q0, (i64)H * HD);
    attn_load_f<BQ, HD, T, THREADS>(dOs, dout + ((i64)(b * T + q0) * H + h) * HD, q0, (i64)H * HD);
    const i64 ri = ((i64)b * H + h) * T + t;
    const float lse_r = t < T ? lse[ri] : 0.0f, D_r = t < T ? ws[AttnWs<B, T, H>::D + ri] : 0.0f;
    float dqr[HD / 8][2];
#pragma unroll
    for (int e = 0; e < HD / 8; e++) dqr[e][0] = dqr[e][1] = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * BQ;
        __syncthreads();
        attn_load_f<BQ, HD, T, THREADS>(Ks, k + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
        attn_load_f<BQ, HD, T, THREADS>(Vs, v + ((i64)(b * T + k0) * KV + hk) * HD, k0, (i64)KV * HD);
        __syncthreads();
#pragma unroll
        for (int jj = 0; jj < BQ / 4; jj++) {
            int c = c4 + 4 * jj, j = k0 + c;
            float ds = 0.0f;
            if (j <= t && t < T) {
                float s = __fmul_rn(attn_dot<HD>(Qs + r * LDF, Ks + c * LDF), scale);
                float p = expf(__fsub_rn(s, lse_r));
                ds = p * (attn_dot<HD>(dOs + r * LDF, Vs + c * LDF) - D_r) * scale;
            }
            dSs[r * LDP + c] = ds;
        }
        __syncwarp(); // the row's four threads share its dSs row
        for (int c = 0; c < BQ; c++) {
            float ds = dSs[r * LDP + c];
            const float *kr = Ks + c * LDF + 2 * c4;
#pragma unroll
            for (int e = 0; e < HD / 8; e++)
                dqr[e][0] = __fadd_rn(dqr[e][0], __fmul_rn(ds, kr[8 * e])), dqr[e][1] = __fadd_rn(dqr[e][1], __fmul_rn(ds, kr[8 * e + 1]));
        }
    }
    if (t < T) {
        TDQ *row = dq + ((i64)(b * T + t) * H + h) * HD;
#pragma unroll
        for (int e = 0; e < HD / 8; e++) {
            const int col = 8 * e + 2 * c4;
            attn_store_grad<ROPE, HD>(row + col, dqr[e][0], dqr[e][1], t, col / 2, ws + AttnWs<B, T, H>::TAB);
        }
    }
}
