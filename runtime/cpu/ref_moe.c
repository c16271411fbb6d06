/* ref_moe.c: CPU reference of the fine-grained mixture of experts (ref_mla.h): router scoring
 * and top-k with a deterministic tie-break, the expert-bias update, the permutation of tokens
 * into per-expert capacity buffers and the weighted combine, with their backwards. The expert
 * MLPs themselves are ordinary (quantized) linears over those buffers. */
#include "ref_mla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define OMP_PARALLEL_FOR
#endif

static void score_row(float *s, const float *x, int E, int scoring) {
    if (scoring == REF_SCORE_SIGMOID) {
        for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-x[e]));
        return;
    }
    float m = -INFINITY, sum = 0.0f;
    for (int e = 0; e < E; e++) m = x[e] > m ? x[e] : m;
    for (int e = 0; e < E; e++) sum += s[e] = expf(x[e] - m);
    for (int e = 0; e < E; e++) s[e] /= sum;
}

void ref_moe_route_fwd(float *scores, int32_t *sel, float *weights, int32_t *pos, float *load, const float *logits,
                       const float *bias, int N, int E, int K, int scoring, int norm, float scale) {
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++) {
        float *s = scores + (int64_t)n * E;
        score_row(s, logits + (int64_t)n * E, E, scoring);
        int32_t *sl = sel + (int64_t)n * K;
        for (int k = 0; k < K; k++) { /* K passes of selection: a strict > keeps the lower index on ties */
            int best = -1;
            float bv = 0;
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
        for (int k = 0; k < K; k++) weights[(int64_t)n * K + k] = (norm ? s[sl[k]] / sum : s[sl[k]]) * scale;
    }
    /* buffer rows: tokens in order, one pass (sequential, so deterministic) */
    int32_t *next = calloc((size_t)E, sizeof *next);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) pos[(int64_t)n * K + k] = next[sel[(int64_t)n * K + k]]++;
    for (int e = 0; e < E; e++) load[e] = (float)next[e];
    free(next);
}

/* d/ds of the selected scores from dweights (normalization), then through the scoring. */
void ref_moe_route_bwd(float *dlogits, const float *dweights, const float *scores, const int32_t *sel, int N, int E, int K,
                       int scoring, int norm, float scale, int T, float aux) {
    int S = T > 0 ? N / T : 0; /* sequences */
    float *fcoef = NULL;       /* per sequence and expert: aux * f_e / (T * S), the gradient of P_e's terms */
    if (aux > 0 && S > 0) {
        fcoef = calloc((size_t)S * (size_t)E, sizeof *fcoef);
        for (int q = 0; q < S; q++) {
            float *f = fcoef + (int64_t)q * E;
            for (int t = 0; t < T; t++)
                for (int k = 0; k < K; k++) f[sel[((int64_t)q * T + t) * K + k]] += 1.0f;
            for (int e = 0; e < E; e++) f[e] = aux * (f[e] * (float)E / ((float)K * (float)T)) / ((float)T * (float)S);
        }
    }
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++) {
        const float *s = scores + (int64_t)n * E;
        const float *dw = dweights + (int64_t)n * K;
        const int32_t *sl = sel + (int64_t)n * K;
        float *g = dlogits + (int64_t)n * E;
        float ds[4096]; /* model.c bounds E */
        memset(ds, 0, (size_t)E * sizeof(float));
        float sum = 0.0f, dot = 0.0f;
        for (int k = 0; k < K; k++) sum += s[sl[k]], dot += dw[k] * s[sl[k]];
        for (int k = 0; k < K; k++) ds[sl[k]] += norm ? scale * (dw[k] / sum - dot / (sum * sum)) : scale * dw[k];
        if (fcoef) { /* P_e = mean_t s_e / sum_e' s_e' (sigmoid); softmax scores already sum to 1 */
            const float *f = fcoef + (int64_t)(n / T) * E;
            if (scoring == REF_SCORE_SIGMOID) {
                float tot = 0.0f, fs = 0.0f;
                for (int e = 0; e < E; e++) tot += s[e];
                for (int e = 0; e < E; e++) fs += f[e] * s[e];
                for (int e = 0; e < E; e++) ds[e] += (f[e] - fs / tot) / tot;
            } else {
                for (int e = 0; e < E; e++) ds[e] += f[e];
            }
        }
        if (scoring == REF_SCORE_SIGMOID) {
            for (int e = 0; e < E; e++) g[e] = ds[e] * s[e] * (1.0f - s[e]);
        } else {
            float sd = 0.0f;
            for (int e = 0; e < E; e++) sd += s[e] * ds[e];
            for (int e = 0; e < E; e++) g[e] = s[e] * (ds[e] - sd);
        }
    }
    free(fcoef);
}

double ref_moe_aux_loss(const float *scores, const int32_t *sel, int N, int E, int K, int T, float aux) {
    int S = N / T;
    double total = 0;
    for (int q = 0; q < S; q++) {
        for (int e = 0; e < E; e++) {
            double f = 0, P = 0;
            for (int t = 0; t < T; t++) {
                int64_t n = (int64_t)q * T + t;
                for (int k = 0; k < K; k++) f += sel[n * K + k] == e;
                double tot = 0;
                for (int j = 0; j < E; j++) tot += scores[n * E + j];
                P += scores[n * E + e] / tot;
            }
            total += (f * E / ((double)K * T)) * (P / T);
        }
    }
    return aux * total / S;
}

void ref_moe_permute_fwd(float *out, const float *x, const int32_t *sel, const int32_t *pos, int N, int C, int K, int expert) {
    memset(out, 0, (size_t)N * (size_t)C * sizeof(float));
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            if (sel[(int64_t)n * K + k] == expert)
                memcpy(out + (int64_t)pos[(int64_t)n * K + k] * C, x + (int64_t)n * C, (size_t)C * sizeof(float));
}

void ref_moe_permute_bwd(float *dx, const float *dout, const int32_t *sel, const int32_t *pos, int N, int C, int K, int expert) {
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            if (sel[(int64_t)n * K + k] == expert) {
                const float *g = dout + (int64_t)pos[(int64_t)n * K + k] * C;
                for (int c = 0; c < C; c++) dx[(int64_t)n * C + c] += g[c];
            }
}

void ref_moe_combine_fwd(float *out, const float *y, const float *weights, const int32_t *sel, const int32_t *pos, int N, int C,
                         int K, int expert) {
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            if (sel[(int64_t)n * K + k] == expert) {
                const float *yr = y + (int64_t)pos[(int64_t)n * K + k] * C;
                float w = weights[(int64_t)n * K + k];
                for (int c = 0; c < C; c++) out[(int64_t)n * C + c] += w * yr[c];
            }
}

void ref_moe_combine_bwd(float *dy, float *dweights, const float *dout, const float *y, const float *weights, const int32_t *sel,
                         const int32_t *pos, int N, int C, int K, int expert) {
    memset(dy, 0, (size_t)N * (size_t)C * sizeof(float));
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            if (sel[(int64_t)n * K + k] == expert) {
                int64_t r = pos[(int64_t)n * K + k];
                const float *g = dout + (int64_t)n * C, *yr = y + r * C;
                float w = weights[(int64_t)n * K + k], d = 0.0f;
                for (int c = 0; c < C; c++) {
                    dy[r * C + c] = w * g[c];
                    d += g[c] * yr[c];
                }
                dweights[(int64_t)n * K + k] += d;
            }
}

void ref_moe_bias_update(float *bias, const float *load, int E, float speed) {
    double mean = 0;
    for (int e = 0; e < E; e++) mean += load[e];
    mean /= E;
    for (int e = 0; e < E; e++) bias[e] += load[e] > mean ? -speed : load[e] < mean ? speed : 0.0f;
}
