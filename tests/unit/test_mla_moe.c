/* test_mla_moe.c: the CPU reference ops of MLA and MoE (runtime/cpu/ref_mla.c, ref_moe.c).
 * Backwards are checked against central finite differences of the forward, evaluated in double
 * from float forwards at h = 1e-2 (float rounding of the outputs, ~1e-7 relative, over 2h gives
 * ~1e-5; the O(h^2) truncation of these smooth functions is ~1e-4 relative), hence 2e-3 absolute +
 * 1e-2 relative; pure data movement is checked as an exact adjoint pair (<f(x), y> = <x, f^T(y)>)
 * and against independent implementations where one exists (ref.c's RoPE and GQA attention). */
#include "check.h"
#include "ref.h"
#include "ref_mla.h"

#include <math.h>

static uint64_t rs = 12345;
static float urand(void) { /* uniform in [-1, 1) */
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *rnd(int64_t n) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = urand();
    return x;
}
static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
#define FD_OK(fd, g) (fabs((fd) - (g)) <= 2e-3 + 1e-2 * fabs(fd))

static void mla_split_adjoint(void) {
    int N = 5, L = 7, R = 4;
    float *kva = rnd(N * (L + R)), *ckv = rnd(N * L), *kpe = rnd(N * R), *yc = rnd(N * L), *yp = rnd(N * R), *back = rnd(N * (L + R));
    ref_mla_split_fwd(ckv, kpe, kva, N, L, R);
    ref_mla_split_bwd(back, yc, yp, N, L, R);
    double a = dot(ckv, yc, N * L) + dot(kpe, yp, N * R), b = dot(kva, back, N * (L + R));
    CHECKF(fabs(a - b) <= 1e-9 * (1 + fabs(a)), "<split(x), y> = %.12g but <x, split^T(y)> = %.12g", a, b);
    CHECK(ckv[L + 2] == kva[(L + R) + 2] && kpe[R + 1] == kva[(L + R) + L + 1]);
    free(kva), free(ckv), free(kpe), free(yc), free(yp), free(back);
}

/* Decoupled RoPE: the nope parts are copied, the rope parts turned exactly as ref_rope_fwd turns a
 * head of width R, one rope key per token shared by every head; the backward is its adjoint. */
static void mla_rope_parts_and_adjoint(void) {
    int B = 2, T = 5, H = 3, dn = 4, R = 6, dv = 5, dqk = dn + R, BT = B * T;
    float theta = 10000.0f;
    float *q = rnd(BT * H * dqk), *kvb = rnd(BT * H * (dn + dv)), *kpe = rnd(BT * R);
    float *qh = rnd(BT * H * dqk), *kh = rnd(BT * H * dqk), *vh = rnd(BT * H * dv);
    ref_mla_rope_fwd(qh, kh, vh, q, kvb, kpe, B, T, H, dn, R, dv, theta);
    float *kr = rnd(BT * R), *qpe = rnd(BT * H * R), *qr = rnd(BT * H * R);
    ref_rope_fwd(kr, kpe, B, T, 1, R, theta);
    for (int bt = 0; bt < BT; bt++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < R; i++) qpe[(bt * H + h) * R + i] = q[(bt * H + h) * dqk + dn + i];
    ref_rope_fwd(qr, qpe, B, T, H, R, theta);
    double worst = 0;
    for (int bt = 0; bt < BT; bt++)
        for (int h = 0; h < H; h++) {
            int64_t r = (int64_t)bt * H + h;
            for (int i = 0; i < dn; i++) {
                CHECK(qh[r * dqk + i] == q[r * dqk + i]);
                CHECK(kh[r * dqk + i] == kvb[r * (dn + dv) + i]);
            }
            for (int i = 0; i < R; i++) {
                worst = fmax(worst, fabs(qh[r * dqk + dn + i] - qr[r * R + i]));
                worst = fmax(worst, fabs(kh[r * dqk + dn + i] - kr[bt * R + i]));
            }
            for (int i = 0; i < dv; i++) CHECK(vh[r * dv + i] == kvb[r * (dn + dv) + dn + i]);
        }
    CHECKF(worst <= 1e-6, "rope parts differ from ref_rope_fwd by %g", worst);
    float *gq = rnd(BT * H * dqk), *gk = rnd(BT * H * dqk), *gv = rnd(BT * H * dv);
    float *dq = rnd(BT * H * dqk), *dkvb = rnd(BT * H * (dn + dv)), *dkpe = rnd(BT * R);
    ref_mla_rope_bwd(dq, dkvb, dkpe, gq, gk, gv, B, T, H, dn, R, dv, theta);
    double a = dot(qh, gq, BT * H * dqk) + dot(kh, gk, BT * H * dqk) + dot(vh, gv, BT * H * dv);
    double b = dot(q, dq, BT * H * dqk) + dot(kvb, dkvb, BT * H * (dn + dv)) + dot(kpe, dkpe, BT * R);
    CHECKF(fabs(a - b) <= 1e-5 * (1 + fabs(a)), "<rope(x), y> = %.9g but <x, rope^T(y)> = %.9g", a, b);
    free(q), free(kvb), free(kpe), free(qh), free(kh), free(vh), free(kr), free(qpe), free(qr);
    free(gq), free(gk), free(gv), free(dq), free(dkvb), free(dkpe);
}

/* With dqk == dv the MLA attention is ref.c's GQA attention with KV == H (an independent oracle). */
static void mla_attention_matches_mha(void) {
    int B = 2, T = 6, H = 3, d = 8, n = B * T * H * d;
    float *q = rnd(n), *k = rnd(n), *v = rnd(n), *o1 = rnd(n), *o2 = rnd(n), *l1 = rnd(B * H * T), *l2 = rnd(B * H * T);
    ref_mla_attention_fwd(o1, l1, q, k, v, B, T, H, d, d);
    ref_attention_fwd(o2, l2, q, k, v, B, T, H, H, d);
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(o1[i] - o2[i]));
    for (int i = 0; i < B * H * T; i++) worst = fmax(worst, fabs(l1[i] - l2[i]));
    CHECKF(worst <= 1e-5, "MLA attention differs from GQA attention by %g", worst);
    free(q), free(k), free(v), free(o1), free(o2), free(l1), free(l2);
}

/* qk head dim 12 != v head dim 5: d(sum out * g)/d(q, k, v) against finite differences. */
static void mla_attention_grad(void) {
    int B = 2, T = 5, H = 2, dqk = 12, dv = 5, nq = B * T * H * dqk, nv = B * T * H * dv;
    float *q = rnd(nq), *k = rnd(nq), *v = rnd(nv), *out = rnd(nv), *lse = rnd(B * H * T), *g = rnd(nv);
    float *dq = rnd(nq), *dk = rnd(nq), *dvv = rnd(nv);
    ref_mla_attention_fwd(out, lse, q, k, v, B, T, H, dqk, dv);
    ref_mla_attention_bwd(dq, dk, dvv, g, q, k, v, out, lse, B, T, H, dqk, dv);
    float *ins[3] = {q, k, v}, *grads[3] = {dq, dk, dvv};
    int sizes[3] = {nq, nq, nv};
    float *o2 = rnd(nv), *l2 = rnd(B * H * T);
    for (int which = 0; which < 3; which++)
        for (int s = 0; s < 12; s++) {
            int e = (int)((urand() + 1) * 0.5 * sizes[which]) % sizes[which];
            float keep = ins[which][e], h = 1e-2f;
            ins[which][e] = keep + h;
            ref_mla_attention_fwd(o2, l2, q, k, v, B, T, H, dqk, dv);
            double lp = dot(o2, g, nv);
            ins[which][e] = keep - h;
            ref_mla_attention_fwd(o2, l2, q, k, v, B, T, H, dqk, dv);
            double lm = dot(o2, g, nv);
            ins[which][e] = keep;
            double fd = (lp - lm) / (2 * h);
            CHECKF(FD_OK(fd, grads[which][e]), "%s[%d]: backward %.6g, finite difference %.6g", which == 0 ? "dq" : which == 1 ? "dk" : "dv",
                   e, grads[which][e], fd);
        }
    free(q), free(k), free(v), free(out), free(lse), free(g), free(dq), free(dk), free(dvv), free(o2), free(l2);
}

/* Top-k: distinct experts, descending by score + bias, ties to the lower index; weights normalized
 * and scaled; rows in token order; load counts. */
static void moe_route_topk(void) {
    enum { N = 3, E = 5, K = 3 };
    float logits[N * E] = {0, 1, 1, 0, 1, /* three-way tie: experts 1, 2, 4 */
                           2, 0, 3, 3, -1, /* tie between 2 and 3 */
                           0, 0, 0, 0, 0};
    float bias[E] = {0, 0, 0, 0, 0.5f}; /* the bias lifts expert 4 for selection only */
    float scores[N * E], w[N * K], load[E];
    int32_t sel[N * K], pos[N * K];
    ref_moe_route_fwd(scores, sel, w, pos, load, logits, NULL, N, E, K, REF_SCORE_SIGMOID, 1, 2.5f);
    int want0[K] = {1, 2, 4}, want1[K] = {2, 3, 0}, want2[K] = {0, 1, 2};
    for (int k = 0; k < K; k++) {
        CHECKF(sel[k] == want0[k], "token 0: pick %d is expert %d, expected %d", k, sel[k], want0[k]);
        CHECKF(sel[K + k] == want1[k], "token 1: pick %d is expert %d, expected %d", k, sel[K + k], want1[k]);
        CHECKF(sel[2 * K + k] == want2[k], "token 2: pick %d is expert %d, expected %d", k, sel[2 * K + k], want2[k]);
    }
    for (int n = 0; n < N; n++) CHECK(fabs(w[n * K] + w[n * K + 1] + w[n * K + 2] - 2.5) < 1e-5);
    CHECK(load[0] == 2 && load[1] == 2 && load[2] == 3 && load[3] == 1 && load[4] == 1);
    CHECK(pos[0] == 0 && pos[2 * K + 2] == 2 && pos[1 * K + 2] == 0 && pos[2 * K] == 1);
    ref_moe_route_fwd(scores, sel, w, pos, load, logits, bias, N, E, K, REF_SCORE_SIGMOID, 0, 1.0f);
    CHECKF(sel[0] == 4 && sel[1] == 1 && sel[2] == 2, "with the bias token 0 picks %d %d %d, expected 4 1 2", sel[0], sel[1], sel[2]);
    CHECKF(fabs(w[0] - scores[4]) < 1e-7, "weights use the unbiased score");
    CHECK(sel[2 * K] == 4);
}

/* d(sum weights * g + aux loss)/d(logits) with the selection held fixed (logits spread so that
 * a step of h moves no choice). */
static void moe_route_grad_case(int scoring, int norm, float aux) {
    enum { T = 4, S = 2, N = T * S, E = 6, K = 2 };
    float logits[N * E], scores[N * E], w[N * K], load[E], dl[N * E], g[N * K];
    int32_t sel[N * K], pos[N * K], sel2[N * K];
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) logits[n * E + e] = 0.4f * (float)((e * 7 + n * 3) % E) + 0.05f * urand();
    for (int i = 0; i < N * K; i++) g[i] = urand();
    ref_moe_route_fwd(scores, sel, w, pos, load, logits, NULL, N, E, K, scoring, norm, 1.7f);
    ref_moe_route_bwd(dl, g, scores, sel, N, E, K, scoring, norm, 1.7f, T, aux);
    for (int i = 0; i < N * E; i++) {
        float keep = logits[i], h = 1e-2f;
        double L[2];
        for (int side = 0; side < 2; side++) {
            logits[i] = keep + (side ? -h : h);
            ref_moe_route_fwd(scores, sel2, w, pos, load, logits, NULL, N, E, K, scoring, norm, 1.7f);
            CHECKF(!memcmp(sel, sel2, sizeof sel), "a step of h moved a choice (the test's logits are too close)");
            L[side] = dot(w, g, N * K) + ref_moe_aux_loss(scores, sel, N, E, K, T, aux);
        }
        logits[i] = keep;
        double fd = (L[0] - L[1]) / (2 * h);
        CHECKF(FD_OK(fd, dl[i]), "scoring %d norm %d aux %g: dlogits[%d]: backward %.6g, finite difference %.6g", scoring, norm, aux, i,
               dl[i], fd);
    }
}

static void moe_route_grad(void) {
    for (int scoring = 0; scoring < 2; scoring++)
        for (int norm = 0; norm < 2; norm++) moe_route_grad_case(scoring, norm, 0.0f);
    moe_route_grad_case(REF_SCORE_SIGMOID, 1, 0.3f); /* DeepSeek-V3's sequence-wise balance loss */
    moe_route_grad_case(REF_SCORE_SOFTMAX, 0, 0.3f);
}

/* permute / combine: each backward is the adjoint of its forward in the differentiated input;
 * combine's weight gradient is checked against finite differences. */
static void moe_permute_combine(void) {
    enum { N = 7, C = 5, E = 3, K = 2 };
    float logits[N * E], scores[N * E], w[N * K], load[E];
    int32_t sel[N * K], pos[N * K];
    for (int i = 0; i < N * E; i++) logits[i] = urand();
    ref_moe_route_fwd(scores, sel, w, pos, load, logits, NULL, N, E, K, REF_SCORE_SOFTMAX, 0, 1.0f);
    for (int e = 0; e < E; e++) {
        float *x = rnd(N * C), *xp = rnd(N * C), *y = rnd(N * C), *dx = calloc(N * C, sizeof(float));
        ref_moe_permute_fwd(xp, x, sel, pos, N, C, K, e);
        ref_moe_permute_bwd(dx, y, sel, pos, N, C, K, e);
        double a = dot(xp, y, N * C), b = dot(x, dx, N * C);
        CHECKF(fabs(a - b) <= 1e-9 * (1 + fabs(a)), "expert %d: permute adjoint %.12g vs %.12g", e, a, b);
        for (int r = (int)load[e]; r < N; r++)
            for (int c = 0; c < C; c++) CHECKF(xp[r * C + c] == 0.0f, "expert %d: row %d past its load is not zero", e, r);
        float *out = calloc(N * C, sizeof(float)), *g = rnd(N * C), *dy = rnd(N * C), dw[N * K];
        memset(dw, 0, sizeof dw);
        ref_moe_combine_fwd(out, y, w, sel, pos, N, C, K, e);
        ref_moe_combine_bwd(dy, dw, g, y, w, sel, pos, N, C, K, e);
        a = dot(out, g, N * C), b = dot(y, dy, N * C);
        CHECKF(fabs(a - b) <= 1e-6 * (1 + fabs(a)), "expert %d: combine adjoint %.9g vs %.9g", e, a, b);
        for (int i = 0; i < N * K; i++) {
            float keep = w[i], h = 1e-2f;
            double L[2];
            for (int side = 0; side < 2; side++) {
                w[i] = keep + (side ? -h : h);
                memset(out, 0, N * C * sizeof(float));
                ref_moe_combine_fwd(out, y, w, sel, pos, N, C, K, e);
                L[side] = dot(out, g, N * C);
            }
            w[i] = keep;
            double fd = (L[0] - L[1]) / (2 * h);
            CHECKF(FD_OK(fd, dw[i]), "expert %d: dweights[%d]: backward %.6g, finite difference %.6g", e, i, dw[i], fd);
        }
        free(x), free(xp), free(y), free(dx), free(out), free(g), free(dy);
    }
}

/* DeepSeek-V3's rule: an overloaded expert's bias goes down by the update speed, an underloaded
 * one's up, one exactly at the mean stays. */
static void moe_bias_update_rule(void) {
    float bias[4] = {0.5f, 0, 0, -0.25f}, load[4] = {10, 2, 4, 0}; /* mean 4 */
    ref_moe_bias_update(bias, load, 4, 0.001f);
    CHECK(bias[0] == 0.5f - 0.001f && bias[1] == 0.001f && bias[2] == 0.0f && bias[3] == -0.25f + 0.001f);
}

int main(void) {
    RUN_CASE(mla_split_adjoint);
    RUN_CASE(mla_rope_parts_and_adjoint);
    RUN_CASE(mla_attention_matches_mha);
    RUN_CASE(mla_attention_grad);
    RUN_CASE(moe_route_topk);
    RUN_CASE(moe_route_grad);
    RUN_CASE(moe_permute_combine);
    RUN_CASE(moe_bias_update_rule);
    CHECK_EXIT();
}
