// moe.cuh: the fine-grained mixture of experts (ref_moe_* in runtime/cpu/ref_moe.c): router
// scoring and top-k, the expert-bias update, the permutation of tokens into an expert's
// capacity buffer and the weighted combine, with their backwards.
//
// moe_route_fwd: one thread per token (scores, K selection passes with ties to the lower index,
// weights), then one thread per expert that walks the tokens in order (buffer rows, load), so
// the rows are the CPU's. moe_route_bwd: one thread per (sequence, expert) for the balance
// loss's coefficients (ws), then one thread per token. permute / combine: one thread per
// (token, pick); a token picks an expert at most once, so no two threads write one row.
// moe_bias_update: one thread. All in the CPU's operation order: results equal the reference up
// to the device's expf (and, for the router backward, its summation order, which is the CPU's).
//
// Must not: be used for more than 4096 experts (the reference's bound; local arrays of E).

template <typename TL, int N, int E, int K, int SIGMOID, int NORM>
__device__ __forceinline__ void moe_route_select(float *scores, int *sel, float *weights, const TL *logits, const float *bias,
                                                 float scale) {
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
        float *s = scores + (i64)n * E;
        if (SIGMOID) {
            for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-ld(logits[(i64)n * E + e])));
        } else {
            float m = -__int_as_float(0x7f800000), sum = 0.0f;
            for (int e = 0; e < E; e++) m = ld(logits[(i64)n * E + e]) > m ? ld(logits[(i64)n * E + e]) : m;
            for (int e = 0; e < E; e++) sum += s[e] = expf(ld(logits[(i64)n * E + e]) - m);
            for (int e = 0; e < E; e++) s[e] /= sum;
        }
        int *sl = sel + (i64)n * K;
        for (int k = 0; k < K; k++) {
            int best = -1;
            float bv = 0.0f;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= sl[j] == e;
                float v = s[e] + (bias ? bias[e] : 0.0f);
                if (!taken && (best < 0 || v > bv)) best = e, bv = v;
            }
            sl[k] = best;
        }
        float sum = 0.0f;
        for (int k = 0; k < K; k++) sum += s[sl[k]];
        for (int k = 0; k < K; k++) weights[(i64)n * K + k] = (NORM ? s[sl[k]] / sum : s[sl[k]]) * scale;
    }
}

template <int N, int E, int K>
__device__ __forceinline__ void moe_route_rows(int *pos, float *load, const int *sel) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
        int next = 0;
        for (i64 i = 0; i < (i64)N * K; i++)
            if (sel[i] == e) pos[i] = next++;
        load[e] = (float)next;
    }
}

// ws[q*E + e] = aux * f_e / (T S) for sequence q (ref_moe_route_bwd's fcoef, the same float ops).
template <int N, int E, int K, int T>
__device__ __forceinline__ void moe_route_aux(float *ws, const int *sel, float aux) {
    constexpr int S = N / T;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < S * E; i += gridDim.x * blockDim.x) {
        int q = i / E, e = i % E;
        float f = 0.0f;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < K; k++) f += sel[((i64)q * T + t) * K + k] == e ? 1.0f : 0.0f;
        ws[i] = aux * (f * (float)E / ((float)K * (float)T)) / ((float)T * (float)S);
    }
}

template <int N, int E, int K, int SIGMOID, int NORM, int T>
__device__ __forceinline__ void moe_route_bwd(float *dlogits, const float *dweights, const float *scores, const int *sel,
                                              const float *fcoef, float scale) {
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
        const float *s = scores + (i64)n * E, *dw = dweights + (i64)n * K;
        const int *sl = sel + (i64)n * K;
        float ds[E];
        for (int e = 0; e < E; e++) ds[e] = 0.0f;
        float sum = 0.0f, dot = 0.0f;
        for (int k = 0; k < K; k++) sum += s[sl[k]], dot += dw[k] * s[sl[k]];
        for (int k = 0; k < K; k++) ds[sl[k]] += NORM ? scale * (dw[k] / sum - dot / (sum * sum)) : scale * dw[k];
        if (fcoef) {
            const float *f = fcoef + (i64)(n / T) * E;
            if (SIGMOID) {
                float tot = 0.0f, fs = 0.0f;
                for (int e = 0; e < E; e++) tot += s[e];
                for (int e = 0; e < E; e++) fs += f[e] * s[e];
                for (int e = 0; e < E; e++) ds[e] += (f[e] - fs / tot) / tot;
            } else {
                for (int e = 0; e < E; e++) ds[e] += f[e];
            }
        }
        float *g = dlogits + (i64)n * E;
        if (SIGMOID) {
            for (int e = 0; e < E; e++) g[e] = ds[e] * s[e] * (1.0f - s[e]);
        } else {
            float sd = 0.0f;
            for (int e = 0; e < E; e++) sd += s[e] * ds[e];
            for (int e = 0; e < E; e++) g[e] = s[e] * (ds[e] - sd);
        }
    }
}

template <typename T_, i64 NC>
__device__ __forceinline__ void moe_zero(T_ *p) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < NC; i += (i64)gridDim.x * blockDim.x) st(p + i, 0.0f);
}

// out[pos[n,k]] = x[n] where sel[n,k] == EXPERT (after moe_zero(out)).
template <typename TO, typename TX, int N, int C, int K, int EXPERT>
__device__ __forceinline__ void moe_permute_fwd(TO *out, const TX *x, const int *sel, const int *pos) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)N * K; i += (i64)gridDim.x * blockDim.x)
        if (sel[i] == EXPERT)
            for (int c = 0; c < C; c++) st(out + (i64)pos[i] * C + c, ld(x[(i / K) * C + c]));
}

// dx[n] += dout[pos[n,k]] where sel[n,k] == EXPERT.
template <typename TD, typename TG, int N, int C, int K, int EXPERT>
__device__ __forceinline__ void moe_permute_bwd(TD *dx, const TG *dout, const int *sel, const int *pos) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)N * K; i += (i64)gridDim.x * blockDim.x)
        if (sel[i] == EXPERT)
            for (int c = 0; c < C; c++) {
                TD *d = dx + (i / K) * C + c;
                st(d, ld(*d) + ld(dout[(i64)pos[i] * C + c]));
            }
}

// out[n] += weights[n,k] * y[pos[n,k]] where sel[n,k] == EXPERT.
template <typename TO, typename TY, int N, int C, int K, int EXPERT>
__device__ __forceinline__ void moe_combine_fwd(TO *out, const TY *y, const float *weights, const int *sel, const int *pos) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)N * K; i += (i64)gridDim.x * blockDim.x)
        if (sel[i] == EXPERT)
            for (int c = 0; c < C; c++) {
                TO *o = out + (i / K) * C + c;
                st(o, ld(*o) + weights[i] * ld(y[(i64)pos[i] * C + c]));
            }
}

// dy[pos[n,k]] = weights[n,k] * dout[n] (after moe_zero(dy)); dweights[n,k] += dout[n] . y[pos[n,k]].
template <typename TDY, typename TG, typename TY, int N, int C, int K, int EXPERT>
__device__ __forceinline__ void moe_combine_bwd(TDY *dy, float *dweights, const TG *dout, const TY *y, const float *weights,
                                                const int *sel, const int *pos) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)N * K; i += (i64)gridDim.x * blockDim.x)
        if (sel[i] == EXPERT) {
            i64 r = pos[i];
            float d = 0.0f;
            for (int c = 0; c < C; c++) {
                float g = ld(dout[(i / K) * C + c]);
                st(dy + r * C + c, weights[i] * g);
                d += g * ld(y[r * C + c]);
            }
            dweights[i] += d;
        }
}

// bias[e] += speed * sign(mean load - load[e]); one thread (E is small), the CPU's double mean.
template <int E>
__device__ __forceinline__ void moe_bias_update(float *bias, const float *load, float speed) {
    if (blockIdx.x || threadIdx.x) return;
    double mean = 0;
    for (int e = 0; e < E; e++) mean += load[e];
    mean /= E;
    for (int e = 0; e < E; e++) bias[e] += load[e] > mean ? -speed : load[e] < mean ? speed : 0.0f;
}
