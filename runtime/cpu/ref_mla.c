/* ref_mla.c: CPU reference of multi-head latent attention (ref_mla.h): the latent split, the
 * decoupled RoPE that assembles per-head queries, keys and values, and causal attention whose
 * query/key head width differs from the value head width. Kept apart from ref.c's attention
 * (GQA, one head width) so that each can change on its own. */
#include "ref_mla.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#define OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define OMP_PARALLEL_FOR
#endif

void ref_mla_split_fwd(float *ckv, float *kpe, const float *kva, int N, int L, int R) {
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++) {
        memcpy(ckv + (int64_t)n * L, kva + (int64_t)n * (L + R), (size_t)L * sizeof(float));
        memcpy(kpe + (int64_t)n * R, kva + (int64_t)n * (L + R) + L, (size_t)R * sizeof(float));
    }
}

void ref_mla_split_bwd(float *dkva, const float *dckv, const float *dkpe, int N, int L, int R) {
    OMP_PARALLEL_FOR
    for (int n = 0; n < N; n++) {
        memcpy(dkva + (int64_t)n * (L + R), dckv + (int64_t)n * L, (size_t)L * sizeof(float));
        memcpy(dkva + (int64_t)n * (L + R) + L, dkpe + (int64_t)n * R, (size_t)R * sizeof(float));
    }
}

/* Turn the R-wide vector x at position t by sign * t * theta^(-2i/R) (ref.c's rope_rotate for one
 * head; the angle in double). out may equal x. */
static void rotate(float *out, const float *x, int t, int R, float theta, double sign) {
    for (int i = 0; i < R / 2; i++) {
        double ang = sign * t * pow((double)theta, -2.0 * i / R);
        float cs = (float)cos(ang), sn = (float)sin(ang);
        float x0 = x[2 * i], x1 = x[2 * i + 1];
        out[2 * i] = x0 * cs - x1 * sn;
        out[2 * i + 1] = x0 * sn + x1 * cs;
    }
}

void ref_mla_rope_fwd(float *qh, float *kh, float *vh, const float *q, const float *kvb, const float *kpe, int B, int T, int H,
                      int dn, int R, int dv, float theta) {
    int dqk = dn + R;
    OMP_PARALLEL_FOR
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        float kr[4096]; /* the token's turned rope key, shared by every head (model.c bounds R) */
        rotate(kr, kpe + (int64_t)bt * R, t, R, theta, 1.0);
        for (int h = 0; h < H; h++) {
            const float *qs = q + ((int64_t)bt * H + h) * dqk;             // (dqk)
            const float *kv = kvb + ((int64_t)bt * H + h) * (dn + dv);     // (dn+dv)
            float *qo = qh + ((int64_t)bt * H + h) * dqk, *ko = kh + ((int64_t)bt * H + h) * dqk;
            memcpy(qo, qs, (size_t)dn * sizeof(float));
            rotate(qo + dn, qs + dn, t, R, theta, 1.0);
            memcpy(ko, kv, (size_t)dn * sizeof(float));
            memcpy(ko + dn, kr, (size_t)R * sizeof(float));
            memcpy(vh + ((int64_t)bt * H + h) * dv, kv + dn, (size_t)dv * sizeof(float));
        }
    }
}

void ref_mla_rope_bwd(float *dq, float *dkvb, float *dkpe, const float *dqh, const float *dkh, const float *dvh, int B, int T, int H,
                      int dn, int R, int dv, float theta) {
    int dqk = dn + R;
    OMP_PARALLEL_FOR
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        float acc[4096];
        memset(acc, 0, (size_t)R * sizeof(float));
        for (int h = 0; h < H; h++) {
            const float *gq = dqh + ((int64_t)bt * H + h) * dqk, *gk = dkh + ((int64_t)bt * H + h) * dqk;
            float *oq = dq + ((int64_t)bt * H + h) * dqk, *okv = dkvb + ((int64_t)bt * H + h) * (dn + dv);
            memmove(oq, gq, (size_t)dn * sizeof(float));
            rotate(oq + dn, gq + dn, t, R, theta, -1.0);
            memcpy(okv, gk, (size_t)dn * sizeof(float));
            memcpy(okv + dn, dvh + ((int64_t)bt * H + h) * dv, (size_t)dv * sizeof(float));
            for (int i = 0; i < R; i++) acc[i] += gk[dn + i]; /* heads in order: deterministic */
        }
        rotate(dkpe + (int64_t)bt * R, acc, t, R, theta, -1.0);
    }
}

static float dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* One (b, h, t) row with an online softmax, as ref_attention_fwd. */
void ref_mla_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int H, int dqk,
                           int dv) {
    float scale = 1.0f / sqrtf((float)dqk);
    int64_t rows = (int64_t)B * H * T;
    OMP_PARALLEL_FOR
    for (int64_t row = 0; row < rows; row++) {
        int b = (int)(row / ((int64_t)H * T)), h = (int)(row / T % H), t = (int)(row % T);
        const float *qt = q + ((int64_t)(b * T + t) * H + h) * dqk; // (dqk)
        float *o = out + ((int64_t)(b * T + t) * H + h) * dv;       // (dv)
        float m = -INFINITY, l = 0.0f;
        memset(o, 0, (size_t)dv * sizeof *o);
        for (int j = 0; j <= t; j++) {
            const float *kj = k + ((int64_t)(b * T + j) * H + h) * dqk;
            const float *vj = v + ((int64_t)(b * T + j) * H + h) * dv;
            float s = dotf(qt, kj, dqk) * scale;
            if (s > m) {
                float corr = expf(m - s);
                l *= corr;
                for (int d = 0; d < dv; d++) o[d] *= corr;
                m = s;
            }
            float p = expf(s - m);
            l += p;
            for (int d = 0; d < dv; d++) o[d] += p * vj[d];
        }
        for (int d = 0; d < dv; d++) o[d] /= l;
        lse[((int64_t)b * H + h) * T + t] = m + logf(l);
    }
}

/* p_tj = exp(s_tj - lse_t); D_t = dout_t . out_t; dv_j += p_tj dout_t; ds_tj = p_tj (dout_t . v_j
 * - D_t); dq_t += scale ds_tj k_j; dk_j += scale ds_tj q_t. One task per (b, h): it owns that
 * head's dq, dk and dv. */
void ref_mla_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                           const float *out, const float *lse, int B, int T, int H, int dqk, int dvd) {
    float scale = 1.0f / sqrtf((float)dqk);
    OMP_PARALLEL_FOR
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            int64_t r = (int64_t)(b * T + t) * H + h;
            memset(dq + r * dqk, 0, (size_t)dqk * sizeof(float));
            memset(dk + r * dqk, 0, (size_t)dqk * sizeof(float));
            memset(dv + r * dvd, 0, (size_t)dvd * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            int64_t rt = (int64_t)(b * T + t) * H + h;
            const float *qt = q + rt * dqk, *gt = dout + rt * dvd;
            float D = dotf(gt, out + rt * dvd, dvd), L = lse[((int64_t)b * H + h) * T + t];
            float *dqt = dq + rt * dqk;
            for (int j = 0; j <= t; j++) {
                int64_t rj = (int64_t)(b * T + j) * H + h;
                const float *kj = k + rj * dqk, *vj = v + rj * dvd;
                float p = expf(dotf(qt, kj, dqk) * scale - L);
                float *dvj = dv + rj * dvd, *dkj = dk + rj * dqk;
                for (int d = 0; d < dvd; d++) dvj[d] += p * gt[d];
                float ds = p * (dotf(gt, vj, dvd) - D) * scale;
                for (int d = 0; d < dqk; d++) {
                    dqt[d] += ds * kj[d];
                    dkj[d] += ds * qt[d];
                }
            }
        }
    }
}
