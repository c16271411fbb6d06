// adamw.cuh: the AdamW step of runtime/cpu/ref.c ref_adamw, bit for bit, and its fusion with the
// weight's FP8 copies (FUSE_ADAMW_QUANT: DeepSeek-V3's T x T weight blocks, current scaling).
//
// Arithmetic, in ref_adamw's order, every operation separately rounded (the __f*_rn intrinsics:
// no FMA contraction, IEEE division and square root whatever the compile flags):
//   g = grad * grad_scale;  m' = b1 m + (1 - b1) g;  v' = b2 v + ((1 - b2) g) g
//   p = master (or param);  p -= lr * ((m' / bc1) / (sqrt(v' / bc2) + eps) + wd p)
//   m, v stored in the state dtype; master = p; param = p rounded to its dtype.
// The bias corrections bc = (float)(1 - pow((double)beta, t)) are computed in double as ref.c
// does, once per block. Betas, eps and weight decay are plan constants (literals); lr,
// grad_scale and t come from Fp8cRunState.
//
// Launches: adamw: grid ceil(n / 1024), 256 threads, 4 strided elements per thread.
//   adamw_quant: one block of 4T threads per T x T block of the R x C weight (T = 32, 64, 128),
//   each thread 8 rows x T/32 columns (lane + 32 e); updates the block, then quantizes the
//   rounded new weights with the block's amax (quant.c tile_scale, current scaling) into the
//   row-wise copy (BLK layout, scale_inv[cb + rb*L4]) and the column-wise copy (the transpose:
//   its scale sits at the transposed block position, scale_inv[rb + cb*L4']).
// Must not: reorder or fuse the arithmetic, read ws (there is none), or quantize with a scale
// that needs more than the block's own elements (per-tensor scaling is not fusable in one pass).

// The step's scalars, the same for every element.
struct AdamwStep {
    float b1, b2, omb1, omb2, eps, wd, lr, gs, bc1, bc2;
};

// Every thread of the block must call this (it synchronizes): thread 0 computes the bias
// corrections in double, as ref_adamw's (float)(1.0 - pow(beta, t)).
__device__ __forceinline__ AdamwStep adamw_step(float beta1, float beta2, float eps, float wd, const Fp8cRunState *rs) {
    __shared__ float bc[2];
    if (threadIdx.x == 0) {
        double t = (double)rs->opt_step;
        bc[0] = (float)(1.0 - pow((double)beta1, t));
        bc[1] = (float)(1.0 - pow((double)beta2, t));
    }
    __syncthreads();
    AdamwStep s;
    s.b1 = beta1, s.b2 = beta2, s.eps = eps, s.wd = wd;
    s.omb1 = __fsub_rn(1.0f, beta1), s.omb2 = __fsub_rn(1.0f, beta2);
    s.lr = rs->lr, s.gs = rs->grad_scale;
    s.bc1 = bc[0], s.bc2 = bc[1];
    return s;
}

// Update element i; returns the new parameter as stored (rounded to PT).
template <typename PT, typename ST, typename GT, bool MASTER>
__device__ __forceinline__ float adamw_update(PT *param, float *master, ST *m, ST *v, const GT *grad, i64 i, const AdamwStep &c) {
    float g = __fmul_rn(ld(grad[i]), c.gs);
    float mi = __fadd_rn(__fmul_rn(c.b1, ld(m[i])), __fmul_rn(c.omb1, g));
    float vi = __fadd_rn(__fmul_rn(c.b2, ld(v[i])), __fmul_rn(__fmul_rn(c.omb2, g), g));
    float p = MASTER ? master[i] : ld(param[i]);
    float u = __fadd_rn(__fdiv_rn(__fdiv_rn(mi, c.bc1), __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, c.bc2)), c.eps)), __fmul_rn(c.wd, p));
    p = __fsub_rn(p, __fmul_rn(c.lr, u));
    st(&m[i], mi);
    st(&v[i], vi);
    if (MASTER) master[i] = p;
    st(&param[i], p);
    return round_to<PT>(p);
}

// param, m, v, grad: (N); master: (N) or absent (MASTER false, pass a null pointer).
template <typename PT, typename ST, typename GT, bool MASTER, i64 N, int THREADS>
__device__ __forceinline__ void adamw(PT *param, float *master, ST *m, ST *v, const GT *grad, float beta1, float beta2, float eps,
                                      float wd, const Fp8cRunState *rs) {
    static_assert(THREADS % 32 == 0 && THREADS <= 1024, "adamw: THREADS must be a multiple of 32, at most 1024");
    static_assert(N > 0, "adamw: empty tensor");
    AdamwStep c = adamw_step(beta1, beta2, eps, wd, rs);
    i64 base = (i64)blockIdx.x * THREADS * 4 + threadIdx.x;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        i64 i = base + (i64)k * THREADS;
        if (i < N) adamw_update<PT, ST, GT, MASTER>(param, master, m, v, grad, i, c);
    }
}

// The scale of one T x T block: quant.c tile_scale with current scaling (safe scale 1 for an
// amax of 0, Inf or NaN).
template <int FMT> __device__ __forceinline__ float adamw_block_scale(float amax) { return compute_scale(amax, FmtMax<FMT>::v, 0, 1.0f); }

// param, master, m, v, grad: (R, C) row-major; codes_r: (R, C); codes_c: (C, R);
// sinv_r: (ceil(R/T), L4 = ceil(C/T) rounded up to 4); sinv_c: (ceil(C/T), ceil(R/T) rounded up to 4).
// ROW / COL: which copies exist (absent ones get null pointers). Grid: ceil(R/T) * ceil(C/T)
// blocks, row-major over the blocks; 4T threads.
template <typename PT, typename ST, typename GT, bool MASTER, int R, int C, int T, bool ROW, int FMT_R, bool COL, int FMT_C>
__device__ __forceinline__ void adamw_quant(PT *param, float *master, ST *m, ST *v, u8 *codes_r, float *sinv_r, u8 *codes_c,
                                            float *sinv_c, const GT *grad, float beta1, float beta2, float eps, float wd,
                                            const Fp8cRunState *rs) {
    constexpr int V = T / 32, THREADS = 4 * T, RPT = 8, P = T + 8;
    static_assert(T == 32 || T == 64 || T == 128, "adamw_quant: T is 32, 64 or 128");
    static_assert(ROW || COL, "adamw_quant: no quantized copy");
    static_assert(R > 0 && C > 0, "adamw_quant: empty weight");
    constexpr int NRB = (R + T - 1) / T, NCB = (C + T - 1) / T;
    constexpr int LDR = (NCB + 3) / 4 * 4, LDC = (NRB + 3) / 4 * 4; // BLK rows of the two scale arrays
    __shared__ float bred[32];
    __shared__ __align__(8) u8 tc[COL ? T * P : 8];
    AdamwStep c = adamw_step(beta1, beta2, eps, wd, rs);
    const int tid = threadIdx.x, ty = tid >> 5, lane = tid & 31, rl0 = ty * RPT;
    const int rb = blockIdx.x / NCB, cb = blockIdx.x % NCB, r0 = rb * T, c0 = cb * T;

    float p[RPT][V]; // the new weights as stored, 0 outside the tensor
    float a = 0.0f;
#pragma unroll
    for (int k = 0; k < RPT; k++)
#pragma unroll
        for (int e = 0; e < V; e++) {
            int gr = r0 + rl0 + k, gc = c0 + lane + 32 * e;
            p[k][e] = gr < R && gc < C ? adamw_update<PT, ST, GT, MASTER>(param, master, m, v, grad, (i64)gr * C + gc, c) : 0.0f;
            a = amax_combine(a, fabsf(p[k][e]));
        }
    float amax = block_amax<THREADS>(a, bred);

    if constexpr (ROW) {
        float s = adamw_block_scale<FMT_R>(amax);
        if (tid == 0) {
            sinv_r[cb + rb * LDR] = __fdiv_rn(1.0f, s);
            if (cb == NCB - 1)
                for (int j = NCB; j < LDR; j++) sinv_r[j + rb * LDR] = 0.0f;
        }
#pragma unroll
        for (int k = 0; k < RPT; k++)
#pragma unroll
            for (int e = 0; e < V; e++) {
                int gr = r0 + rl0 + k, gc = c0 + lane + 32 * e;
                if (gr < R && gc < C) codes_r[(i64)gr * C + gc] = fp8_encode<FMT_R>(__fmul_rn(p[k][e], s));
            }
    }
    if constexpr (COL) {
        float s = adamw_block_scale<FMT_C>(amax);
        if (tid == 0) {
            sinv_c[rb + cb * LDC] = __fdiv_rn(1.0f, s);
            if (rb == NRB - 1)
                for (int j = NRB; j < LDC; j++) sinv_c[j + cb * LDC] = 0.0f;
        }
        // tc[col][row]: this thread's 8 rows of a column are 8 adjacent bytes
#pragma unroll
        for (int e = 0; e < V; e++) {
            u32 lo = 0, hi = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                lo |= (u32)fp8_encode<FMT_C>(__fmul_rn(p[k][e], s)) << (8 * k);
                hi |= (u32)fp8_encode<FMT_C>(__fmul_rn(p[k + 4][e], s)) << (8 * k);
            }
            *reinterpret_cast<uint2 *>(tc + (lane + 32 * e) * P + rl0) = make_uint2(lo, hi);
        }
        __syncthreads();
        for (int w = tid; w < T * T / 4; w += THREADS) { // output row c0 + cl (an input column), 4 bytes each
            int cl = w / (T / 4), j = (w % (T / 4)) * 4;
            int gc = c0 + cl, gr = r0 + j;
            if (gc >= C || gr >= R) continue;
            u8 *q = codes_c + (i64)gc * R + gr;
            const u8 *src = tc + cl * P + j;
            if (R % 4 == 0) {
                *reinterpret_cast<u32 *>(q) = *reinterpret_cast<const u32 *>(src);
            } else {
                for (int b = 0; b < 4; b++)
                    if (gr + b < R) q[b] = src[b];
            }
        }
    }
}
