/* cg_attention.c: kernel instances of the templates/attention.cuh family (see codegen.c for the contract).
 *
 * Four shapes of group:
 *   FUSE_NONE attention_fwd                 (out,lse|q,k,v): one entry
 *   FUSE_NONE attention_bwd                 (dq,dk,dv|dout,q,k,v,out,lse): prep, dk/dv, dq entries
 *   FUSE_ROPE_ATTENTION rope_fwd x2 + fwd   (q_rope,k_rope,out,lse|q,k,v): rope entry, then the fwd
 *   FUSE_ROPE_ATTENTION bwd + rope_bwd x2   (the bwd's params): the table in prep, dq/dk rotated back
 * The tensor-core kernels are chosen when q, k, v (and dout) are bf16, hd % 16 == 0 and
 * T % 64 == 0; every other combination (FP32 policies, odd T) gets the CUDA-core kernels. Launch
 * shapes and shared memory mirror the constants in templates/attention.cuh (AttnDkdvMma, AttnDqMma,
 * AttnSimt, AttnWs): the template traps if an entry gets less shared memory than it carves.
 * Must not: accept a group whose steps do not chain as the fused kernel assumes (the rope steps must
 * write exactly the tensors the attention reads, or rotate exactly the gradients it writes, with the
 * same shapes and one theta), since the kernel would then compute something else than the steps.
 */
#include "fp8c.h"

#include <string.h>

#define ATT_THREADS_AUX 256 /* rope_qk and bwd_prep blocks */

typedef struct {
    int64_t B, T, H, KV, hd;
    int mma;      /* tensor-core kernels */
    int rope;     /* fused RoPE */
    float theta;
} AttShape;

static int is_value_dtype(TensorDtype t) { return t == TD_F32 || t == TD_BF16 || t == TD_F16; }

/* simt tile (queries = keys per tile) for a head dim: AttnSimt<HD>::BQ */
static int simt_bq(int64_t hd) { return hd <= 64 ? 32 : 16; }

/* One dtype tag when the value tensors agree, else one letter per param (f/b/h). */
static void dtype_tag(char *buf, size_t n, const Graph *g, const CgKernel *k) {
    TensorDtype first = TD_U8;
    int same = 1, any = 0;
    for (int i = 0; i < k->nparams; i++) {
        TensorDtype t = g->t[k->param_tensor[i]].dtype;
        if (!strcmp(k->params[i], "lse")) continue;
        if (!any) first = t, any = 1;
        else if (t != first) same = 0;
    }
    if (same) {
        snprintf(buf, n, "%s", fp8c_tensor_dtype_names[first]);
        return;
    }
    size_t l = 0;
    l += (size_t)snprintf(buf, n, "dt");
    for (int i = 0; i < k->nparams && l + 2 < n; i++) {
        TensorDtype t = g->t[k->param_tensor[i]].dtype;
        buf[l++] = t == TD_F32 ? 'f' : t == TD_BF16 ? 'b' : 'h';
        buf[l] = 0;
    }
}

/* "10000", "500000", "1e06" style, identifier characters only. */
static void theta_tag(char *buf, size_t n, float theta) {
    char t[32];
    snprintf(t, sizeof t, "%.9g", (double)theta);
    size_t l = 0;
    for (const char *c = t; *c && l + 1 < n; c++) {
        if (*c == '.') buf[l++] = 'p';
        else if (*c == '-') buf[l++] = 'm';
        else if (*c != '+') buf[l++] = *c;
    }
    buf[l] = 0;
}

static int check_dims(const AttShape *a, char *err, size_t errlen) {
    if (a->B <= 0 || a->T <= 0 || a->H <= 0 || a->KV <= 0 || a->H % a->KV) {
        snprintf(err, errlen, "attention needs KV (%lld) to divide H (%lld)", (long long)a->KV, (long long)a->H);
        return -1;
    }
    if (a->hd % 8 || a->hd < 8 || a->hd > 128) {
        snprintf(err, errlen, "the attention kernels take head dims that are multiples of 8 up to 128, not %lld", (long long)a->hd);
        return -1;
    }
    if (a->B > 65535 || a->H > 65535 || a->T / 16 > 2147483647LL / 8) {
        snprintf(err, errlen, "attention shape B=%lld H=%lld T=%lld exceeds the launch grid", (long long)a->B, (long long)a->H, (long long)a->T);
        return -1;
    }
    return 0;
}

/* A rope step that matches the attention: same B, T, hd, and `heads` heads. */
static int rope_matches(const GStep *r, const AttShape *a, int64_t heads) {
    return r->ints[0] == a->B && r->ints[1] == a->T && r->ints[2] == heads && r->ints[3] == a->hd;
}

static void shape_of(AttShape *a, const GStep *s) {
    memset(a, 0, sizeof *a);
    a->B = s->ints[0], a->T = s->ints[1], a->H = s->ints[2], a->KV = s->ints[3], a->hd = s->ints[4];
}

static void common_constants(CgKernel *k, const AttShape *a, const char *dir) {
    char th[32];
    buf_printf(&k->constants, "{\"B\": %lld, \"T\": %lld, \"H\": %lld, \"KV\": %lld, \"hd\": %lld, \"causal\": true, \"direction\": \"%s\", "
               "\"path\": \"%s\"",
               (long long)a->B, (long long)a->T, (long long)a->H, (long long)a->KV, (long long)a->hd, dir,
               a->mma ? "mma.sync bf16, P and dS as bf16 hi+lo" : "cuda cores, fp32");
    if (a->rope) buf_printf(&k->constants, ", \"rope_theta\": %s", (snprintf(th, sizeof th, "%.9g", (double)a->theta), th));
    buf_puts(&k->constants, "}");
}

/* min_blocks 2 on the tensor-core entries: a hint that keeps ptxas from trading registers for
 * spills (it did, 4 bytes, at the default); 2 x 128 threads x <= 255 registers fits an SM. */
static void entry_open(CgKernel *k, const char *symbol, int threads, int min_blocks) {
    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d, %d) %s(", threads, min_blocks, symbol);
    cg_signature(&k->body, k);
    buf_puts(&k->body, ") {\n    ");
}

static void finish(CgKernel *k, const AttShape *a) {
    if (a->mma) k->audit[k->naudit++] = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
    if (a->mma) k->audit[k->naudit++] = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16";
}

/* ---- forward ---------------------------------------------------------------------------------- */

static int gen_fwd(const Graph *g, const GStep *att, const GStep *rq, const GStep *rk, CgKernel *k, char *err, size_t errlen) {
    AttShape a;
    shape_of(&a, att);
    if (check_dims(&a, err, errlen)) return -1;
    int out = att->args[0], lse = att->args[1], q = att->args[2], kk = att->args[3], v = att->args[4];
    a.rope = rq != NULL;
    if (a.rope) {
        if (!rope_matches(rq, &a, a.H) || !rope_matches(rk, &a, a.KV) || rq->floats[0] != rk->floats[0]) {
            snprintf(err, errlen, "the rope steps do not match the attention's shapes or share one theta");
            return -1;
        }
        a.theta = (float)rq->floats[0];
    }
    int qin = a.rope ? rq->args[1] : q, kin = a.rope ? rk->args[1] : kk; /* what the kernel reads from memory */
    int vals[] = {out, q, kk, v, qin, kin};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        if (!is_value_dtype(g->t[vals[i]].dtype)) {
            snprintf(err, errlen, "attention tensors must be f32, bf16 or f16 (%s is %s)", g->t[vals[i]].name,
                     fp8c_tensor_dtype_names[g->t[vals[i]].dtype]);
            return -1;
        }
    if (g->t[lse].dtype != TD_F32) {
        snprintf(err, errlen, "attention's lse must be f32");
        return -1;
    }
    a.mma = g->t[q].dtype == TD_BF16 && g->t[kk].dtype == TD_BF16 && g->t[v].dtype == TD_BF16 && a.hd % 16 == 0 && a.T % 64 == 0;

    snprintf(k->family, sizeof k->family, "attention");
    if (a.rope) {
        cg_add_param(k, g, "q_rope", q, 1);
        cg_add_param(k, g, "k_rope", kk, 1);
    }
    cg_add_param(k, g, "out", out, 1);
    cg_add_param(k, g, "lse", lse, 1);
    cg_add_param(k, g, "q", qin, 0);
    cg_add_param(k, g, "k", kin, 0);
    cg_add_param(k, g, "v", v, 0);
    char dt[32], th[32] = "";
    dtype_tag(dt, sizeof dt, g, k);
    if (a.rope) theta_tag(th, sizeof th, a.theta);
    snprintf(k->name, sizeof k->name, "%sattention_fwd_%s_B%lld_T%lld_H%lld_KV%lld_hd%lld%s%s", a.rope ? "rope_" : "", dt, (long long)a.B,
             (long long)a.T, (long long)a.H, (long long)a.KV, (long long)a.hd, a.rope ? "_theta" : "", th);
    const char *qr = a.rope ? "q_rope" : "q", *kr = a.rope ? "k_rope" : "k";
    char sym[160], f[32];
    if (a.rope) {
        snprintf(sym, sizeof sym, "%.150s_rope", k->name);
        entry_open(k, sym, ATT_THREADS_AUX, 1);
        buf_printf(&k->body, "attn_rope_qk<%s, %s, %s, %s, %lld, %lld, %lld, %lld, %lld>(q_rope, k_rope, q, k, %s);\n}\n",
                   cg_ctype(g->t[q].dtype), cg_ctype(g->t[kk].dtype), cg_ctype(g->t[qin].dtype), cg_ctype(g->t[kin].dtype), (long long)a.B,
                   (long long)a.T, (long long)a.H, (long long)a.KV, (long long)a.hd, cg_float(f, sizeof f, a.theta));
        int64_t n = a.B * a.T * a.hd / 2;
        cg_add_entry(k, sym, (int)((n + ATT_THREADS_AUX - 1) / ATT_THREADS_AUX), 1, 1, ATT_THREADS_AUX, 1, 1, 0);
    }
    snprintf(sym, sizeof sym, "%.150s_fwd", k->name);
    if (a.mma) {
        entry_open(k, sym, 128, 2);
        buf_printf(&k->body, "attn_fwd_mma<%s, %lld, %lld, %lld, %lld, %lld, 1>(out, lse, %s, %s, v);\n}\n", cg_ctype(g->t[out].dtype),
                   (long long)a.B, (long long)a.T, (long long)a.H, (long long)a.KV, (long long)a.hd, qr, kr);
        cg_add_entry(k, sym, (int)(a.T / 64), (int)a.H, (int)a.B, 128, 1, 1, (int)(2 * 64 * (a.hd + 8) * 2));
    } else {
        int bq = simt_bq(a.hd);
        entry_open(k, sym, 4 * bq, 1);
        buf_printf(&k->body, "attn_fwd_simt<%s, %s, %s, %s, %lld, %lld, %lld, %lld, %lld>(out, lse, %s, %s, v);\n}\n",
                   cg_ctype(g->t[out].dtype), cg_ctype(g->t[q].dtype), cg_ctype(g->t[kk].dtype), cg_ctype(g->t[v].dtype), (long long)a.B,
                   (long long)a.T, (long long)a.H, (long long)a.KV, (long long)a.hd, qr, kr);
        int smem = (3 * bq * (int)(a.hd + 1) + bq * (bq + 1)) * 4;
        cg_add_entry(k, sym, (int)((a.T + bq - 1) / bq), (int)a.H, (int)a.B, 4 * bq, 1, 1, smem);
    }
    common_constants(k, &a, "forward");
    finish(k, &a);
    return 0;
}

/* ---- backward --------------------------------------------------------------------------------- */

static int gen_bwd(const Graph *g, const GStep *att, const GStep *rq, const GStep *rk, CgKernel *k, char *err, size_t errlen) {
    AttShape a;
    shape_of(&a, att);
    if (check_dims(&a, err, errlen)) return -1;
    a.rope = rq != NULL;
    if (a.rope) {
        if (!rope_matches(rq, &a, a.H) || !rope_matches(rk, &a, a.KV) || rq->floats[0] != rk->floats[0]) {
            snprintf(err, errlen, "the rope_bwd steps do not match the attention's shapes or share one theta");
            return -1;
        }
        a.theta = (float)rq->floats[0];
    }
    static const char *const roles[] = {"dq", "dk", "dv", "dout", "q", "k", "v", "out", "lse"};
    for (int i = 0; i < 9; i++) {
        int t = att->args[i];
        if (t < 0 || (i == 8 ? g->t[t].dtype != TD_F32 : !is_value_dtype(g->t[t].dtype))) {
            snprintf(err, errlen, "attention_bwd's %s must be %s", roles[i], i == 8 ? "f32" : "f32, bf16 or f16");
            return -1;
        }
    }
    const char *ty[9];
    for (int i = 0; i < 9; i++) ty[i] = cg_ctype(g->t[att->args[i]].dtype);
    a.mma = !strcmp(ty[3], "bf16") && !strcmp(ty[4], "bf16") && !strcmp(ty[5], "bf16") && !strcmp(ty[6], "bf16") && a.hd % 16 == 0 &&
            a.T % 64 == 0;

    snprintf(k->family, sizeof k->family, "attention");
    for (int i = 0; i < 9; i++) cg_add_param(k, g, roles[i], att->args[i], i < 3);
    char dt[32], th[32] = "";
    dtype_tag(dt, sizeof dt, g, k);
    if (a.rope) theta_tag(th, sizeof th, a.theta);
    snprintf(k->name, sizeof k->name, "%sattention_bwd_%s_B%lld_T%lld_H%lld_KV%lld_hd%lld%s%s", a.rope ? "rope_" : "", dt, (long long)a.B,
             (long long)a.T, (long long)a.H, (long long)a.KV, (long long)a.hd, a.rope ? "_theta" : "", th);
    long long B = a.B, T = a.T, H = a.H, KV = a.KV, hd = a.hd;
    char sym[160], f[32];

    /* prep: D (and the inverse-rotation table) */
    snprintf(sym, sizeof sym, "%.150s_prep", k->name);
    entry_open(k, sym, ATT_THREADS_AUX, 1);
    buf_printf(&k->body, "attn_bwd_prep<%s, %s, %lld, %lld, %lld, %lld, %d>((float *)ws, dout, out, %s);\n}\n", ty[3], ty[7], B, T, H, hd,
               a.rope, cg_float(f, sizeof f, a.rope ? a.theta : 0.0f));
    int64_t nrb = (B * T * H + ATT_THREADS_AUX - 1) / ATT_THREADS_AUX, ntab = a.rope ? (T * (hd / 2) + ATT_THREADS_AUX - 1) / ATT_THREADS_AUX : 0;
    if (nrb + ntab > 2147483647LL) {
        snprintf(err, errlen, "attention_bwd: B*T*H = %lld rows exceed the launch grid", B * T * H);
        return -1;
    }
    cg_add_entry(k, sym, (int)(nrb + ntab), 1, 1, ATT_THREADS_AUX, 1, 1, 0);
    int64_t tab = (B * H * T + 63) / 64 * 64; /* AttnWs::TAB */
    k->scratch_bytes = 4 * (a.rope ? tab + T * hd : B * H * T);

    snprintf(sym, sizeof sym, "%.150s_dkdv", k->name);
    if (a.mma) {
        int warps = hd <= 64 ? 4 : 2, bn = 16 * warps, bq = hd <= 64 ? 64 : 32; /* AttnDkdvMma */
        int smem = (2 * bn + 2 * bq) * (int)(hd + 8) * 2 + 2 * bq * 4;
        entry_open(k, sym, 32 * warps, 2);
        buf_printf(&k->body, "attn_bwd_dkdv_mma<%s, %s, %lld, %lld, %lld, %lld, %lld, 1, %d>(dk, dv, dout, q, k, v, lse, (const float *)ws);\n}\n",
                   ty[1], ty[2], B, T, H, KV, hd, a.rope);
        cg_add_entry(k, sym, (int)(T / bn), (int)KV, (int)B, 32 * warps, 1, 1, smem);
    } else {
        int bq = simt_bq(hd), ldf = (int)hd + 1, ldp = bq + 1;
        entry_open(k, sym, 4 * bq, 1);
        buf_printf(&k->body,
                   "attn_bwd_dkdv_simt<%s, %s, %s, %s, %s, %s, %lld, %lld, %lld, %lld, %lld, %d>(dk, dv, dout, q, k, v, lse, (const float *)ws);\n}\n",
                   ty[1], ty[2], ty[3], ty[4], ty[5], ty[6], B, T, H, KV, hd, a.rope);
        cg_add_entry(k, sym, (int)((T + bq - 1) / bq), (int)KV, (int)B, 4 * bq, 1, 1, (4 * bq * ldf + 2 * bq * ldp + 2 * bq) * 4);
    }

    snprintf(sym, sizeof sym, "%.150s_dq", k->name);
    if (a.mma) {
        int smem = 2 * 64 * (int)(hd + 8) * 2; /* AttnDqMma */
        entry_open(k, sym, 128, 2);
        buf_printf(&k->body, "attn_bwd_dq_mma<%s, %lld, %lld, %lld, %lld, %lld, 1, %d>(dq, dout, q, k, v, lse, (const float *)ws);\n}\n", ty[0],
                   B, T, H, KV, hd, a.rope);
        cg_add_entry(k, sym, (int)(T / 64), (int)H, (int)B, 128, 1, 1, smem);
    } else {
        int bq = simt_bq(hd), ldf = (int)hd + 1, ldp = bq + 1;
        entry_open(k, sym, 4 * bq, 1);
        buf_printf(&k->body, "attn_bwd_dq_simt<%s, %s, %s, %s, %s, %lld, %lld, %lld, %lld, %lld, %d>(dq, dout, q, k, v, lse, (const float *)ws);\n}\n",
                   ty[0], ty[3], ty[4], ty[5], ty[6], B, T, H, KV, hd, a.rope);
        cg_add_entry(k, sym, (int)((T + bq - 1) / bq), (int)H, (int)B, 4 * bq, 1, 1, (4 * bq * ldf + bq * ldp) * 4);
    }
    common_constants(k, &a, "backward");
    finish(k, &a);
    return 0;
}

int cg_gen_attention(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s0 = &g->s[grp->step_ids[0]];
    if (grp->kind == FUSE_NONE && grp->nsteps == 1) {
        if (s0->op == OP_ATTENTION_FWD) return gen_fwd(g, s0, NULL, NULL, k, err, errlen);
        if (s0->op == OP_ATTENTION_BWD) return gen_bwd(g, s0, NULL, NULL, k, err, errlen);
    }
    if (grp->kind == FUSE_ROPE_ATTENTION && grp->nsteps == 3) {
        const GStep *s1 = &g->s[grp->step_ids[1]], *s2 = &g->s[grp->step_ids[2]];
        if (s2->op == OP_ATTENTION_FWD && s0->op == OP_ROPE_FWD && s1->op == OP_ROPE_FWD) {
            /* q_rope and k_rope are the attention's q and k; which rope step is which */
            const GStep *rq = s0->args[0] == s2->args[2] ? s0 : s1->args[0] == s2->args[2] ? s1 : NULL;
            const GStep *rk = s0->args[0] == s2->args[3] ? s0 : s1->args[0] == s2->args[3] ? s1 : NULL;
            if (!rq || !rk || rq == rk) {
                snprintf(err, errlen, "the rope_fwd steps do not produce the attention's q and k");
                return -1;
            }
            return gen_fwd(g, s2, rq, rk, k, err, errlen);
        }
        if (s0->op == OP_ATTENTION_BWD && s1->op == OP_ROPE_BWD && s2->op == OP_ROPE_BWD) {
            /* in place on the attention's dq and dk */
            const GStep *rq = s1->args[0] == s0->args[0] ? s1 : s2->args[0] == s0->args[0] ? s2 : NULL;
            const GStep *rk = s1->args[0] == s0->args[1] ? s1 : s2->args[0] == s0->args[1] ? s2 : NULL;
            if (!rq || !rk || rq == rk || rq->args[1] != rq->args[0] || rk->args[1] != rk->args[0]) {
                snprintf(err, errlen, "the rope_bwd steps do not rotate the attention's dq and dk in place");
                return -1;
            }
            return gen_bwd(g, s0, rq, rk, k, err, errlen);
        }
    }
    snprintf(err, errlen, "the attention family runs attention_fwd/bwd, alone or with their rope steps (FUSE_ROPE_ATTENTION)");
    return -1;
}
