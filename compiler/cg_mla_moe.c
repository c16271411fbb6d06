/* cg_mla_moe.c: kernel instances of the templates/mla.cuh and templates/moe.cuh families (see
 * codegen.c for the contract): mla_split_*, mla_rope_*, mla_attention_* and moe_route_*,
 * moe_permute_*, moe_combine_*, moe_bias_update. All FUSE_NONE. The per-expert GEMMs are ordinary
 * qgemm / matmul steps over each expert's capacity buffer (cuBLASLt, one call per expert, or the
 * generated GEMM with --gemm generated): no grouped GEMM yet. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256
#define ROPE_THREADS 128

static void set_name(CgKernel *k, const char *op, const char *suffix) {
    snprintf(k->name, sizeof k->name, "%s", op);
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "%s", suffix);
}

#define T_(i) cg_arg_type(g, s->args[i])

static int gen_split(const Graph *g, const GStep *s, CgKernel *k) {
    int fwd = s->op == OP_MLA_SPLIT_FWD;
    int64_t N = s->ints[0];
    int L = (int)s->ints[1], R = (int)s->ints[2];
    const char *a0 = cg_bind(k, g, fwd ? "ckv" : "dkva", s->args[0], 1);
    const char *a1 = cg_bind(k, g, fwd ? "kpe" : "dckv", s->args[1], fwd);
    const char *a2 = cg_bind(k, g, fwd ? "kva" : "dkpe", s->args[2], 0);
    char suffix[64], call[512];
    snprintf(suffix, sizeof suffix, "_N%lld_L%d_R%d", (long long)N, L, R);
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"N\": %lld, \"L\": %d, \"R\": %d}", (long long)N, L, R);
    if (fwd)
        snprintf(call, sizeof call, "mla_split_fwd<%s, %s, %s, %lldLL, %d, %d>(%s, %s, %s)", T_(0), T_(1), T_(2), (long long)N, L, R, a0, a1, a2);
    else
        snprintf(call, sizeof call, "mla_split_bwd<%s, %s, %s, %lldLL, %d, %d>(%s, %s, %s)", T_(0), T_(1), T_(2), (long long)N, L, R, a0, a1, a2);
    cg_entry(k, "", cg_grid_for(N * (L + R), THREADS), 1, THREADS, call);
    return 0;
}

static int gen_rope(const Graph *g, const GStep *s, CgKernel *k, char *err, size_t errlen) {
    int fwd = s->op == OP_MLA_ROPE_FWD;
    int B = (int)s->ints[0], T = (int)s->ints[1], H = (int)s->ints[2], dn = (int)s->ints[3], R = (int)s->ints[4], dv = (int)s->ints[5];
    if (R % 2) {
        snprintf(err, errlen, "rope width %d: RoPE rotates pairs, it must be even", R);
        return -1;
    }
    static const char *const roles[2][6] = {{"dq", "dkvb", "dkpe", "dqh", "dkh", "dvh"}, {"qh", "kh", "vh", "q", "kvb", "kpe"}};
    const char *a[6];
    for (int i = 0; i < 6; i++) a[i] = cg_bind(k, g, roles[fwd][i], s->args[i], i < 3);
    char theta[48], tag[48], suffix[128], call[768];
    cg_float(theta, sizeof theta, s->floats[0]);
    snprintf(tag, sizeof tag, "%g", s->floats[0]);
    for (char *c = tag; *c; c++) *c = *c == '-' ? 'm' : *c == '.' || *c == '+' ? 'p' : *c;
    snprintf(suffix, sizeof suffix, "_B%d_T%d_H%d_dn%d_R%d_dv%d_theta%s", B, T, H, dn, R, dv, tag);
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"H\": %d, \"dn\": %d, \"R\": %d, \"dv\": %d, \"theta\": %g}", B, T, H, dn, R, dv,
               s->floats[0]);
    snprintf(call, sizeof call, "mla_rope_%s<%s, %s, %s, %s, %s, %s, %d, %d, %d, %d, %d, %d, %d>(%s, %s, %s, %s, %s, %s, %s)", fwd ? "fwd" : "bwd",
             T_(0), T_(1), T_(2), T_(3), T_(4), T_(5), B, T, H, dn, R, dv, ROPE_THREADS, a[0], a[1], a[2], a[3], a[4], a[5], theta);
    cg_entry(k, "", B * T, 1, ROPE_THREADS, call);
    return 0;
}

static int gen_attention(const Graph *g, const GStep *s, CgKernel *k) {
    int fwd = s->op == OP_MLA_ATTENTION_FWD;
    int B = (int)s->ints[0], T = (int)s->ints[1], H = (int)s->ints[2], dqk = (int)s->ints[3], dv = (int)s->ints[4];
    char suffix[96], call[768];
    snprintf(suffix, sizeof suffix, "_B%d_T%d_H%d_dqk%d_dv%d", B, T, H, dqk, dv);
    if (fwd) {
        const char *o = cg_bind(k, g, "out", s->args[0], 1), *l = cg_bind(k, g, "lse", s->args[1], 1);
        const char *q = cg_bind(k, g, "q", s->args[2], 0), *kk = cg_bind(k, g, "k", s->args[3], 0), *v = cg_bind(k, g, "v", s->args[4], 0);
        set_name(k, "mla_attention_fwd", suffix);
        buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"H\": %d, \"DQK\": %d, \"DV\": %d}", B, T, H, dqk, dv);
        snprintf(call, sizeof call, "mla_attention_fwd<%s, %s, %s, %s, %d, %d, %d, %d, %d>(%s, %s, %s, %s, %s)", T_(0), T_(2), T_(3), T_(4), B, T, H,
                 dqk, dv, o, l, q, kk, v);
        cg_entry(k, "", cg_grid_for((int64_t)B * H * T, 128), 1, 128, call);
        return 0;
    }
    static const char *const roles[9] = {"dq", "dk", "dv", "dout", "q", "k", "v", "out", "lse"};
    const char *a[9];
    for (int i = 0; i < 9; i++) a[i] = cg_bind(k, g, roles[i], s->args[i], i < 3);
    int64_t nq = (int64_t)B * T * H * dqk, nv = (int64_t)B * T * H * dv;
    set_name(k, "mla_attention_bwd", suffix);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"H\": %d, \"DQK\": %d, \"DV\": %d}", B, T, H, dqk, dv);
    k->scratch_bytes = (2 * nq + nv) * 4;
    snprintf(call, sizeof call, "mla_attention_bwd<%s, %s, %s, %s, %s, %d, %d, %d, %d, %d>((float *)ws, %s, %s, %s, %s, %s, %s)", T_(3), T_(4), T_(5),
             T_(6), T_(7), B, T, H, dqk, dv, a[3], a[4], a[5], a[6], a[7], a[8]);
    cg_entry(k, "", cg_grid_for((int64_t)B * H, 64), 1, 64, call);
    snprintf(call, sizeof call, "mla_attention_bwd_finish<%s, %s, %s, %lldLL, %lldLL>(%s, %s, %s, (const float *)ws)", T_(0), T_(1), T_(2),
             (long long)nq, (long long)nv, a[0], a[1], a[2]);
    cg_entry(k, "_finish", cg_grid_for(2 * nq + nv, THREADS), 1, THREADS, call);
    return 0;
}

static int gen_route(const Graph *g, const GStep *s, CgKernel *k) {
    int N = (int)s->ints[0], E = (int)s->ints[1], K = (int)s->ints[2], sig = (int)s->ints[3], norm = (int)s->ints[4];
    char scale[48], suffix[96], call[768];
    cg_float(scale, sizeof scale, s->floats[0]);
    if (s->op == OP_MOE_ROUTE_FWD) {
        static const char *const roles[7] = {"scores", "sel", "weights", "pos", "load", "logits", "bias"};
        const char *a[7];
        for (int i = 0; i < 7; i++) a[i] = cg_bind(k, g, roles[i], s->args[i], i < 5);
        snprintf(suffix, sizeof suffix, "_N%d_E%d_K%d_%s%s%s", N, E, K, sig ? "sigmoid" : "softmax", norm ? "_norm" : "", s->args[6] >= 0 ? "_bias" : "");
        set_name(k, "moe_route_fwd", suffix);
        buf_printf(&k->constants, "{\"N\": %d, \"E\": %d, \"K\": %d, \"SIGMOID\": %d, \"NORM\": %d, \"scale\": %.9g}", N, E, K, sig, norm, s->floats[0]);
        snprintf(call, sizeof call, "moe_route_select<%s, %d, %d, %d, %d, %d>(%s, %s, %s, %s, %s, %s)", T_(5), N, E, K, sig, norm, a[0], a[1], a[2],
                 a[5], s->args[6] >= 0 ? a[6] : "(const float *)nullptr", scale);
        cg_entry(k, "_select", cg_grid_for(N, 128), 1, 128, call);
        snprintf(call, sizeof call, "moe_route_rows<%d, %d, %d>(%s, %s, %s)", N, E, K, a[3], a[4], a[1]);
        cg_entry(k, "_rows", cg_grid_for(E, 32), 1, 32, call);
        return 0;
    }
    int T = (int)s->ints[5];
    static const char *const roles[4] = {"dlogits", "dweights", "scores", "sel"};
    const char *a[4];
    for (int i = 0; i < 4; i++) a[i] = cg_bind(k, g, roles[i], s->args[i], i == 0);
    int aux = s->floats[1] > 0;
    char auxs[48];
    cg_float(auxs, sizeof auxs, s->floats[1]);
    snprintf(suffix, sizeof suffix, "_N%d_E%d_K%d_T%d_%s%s%s", N, E, K, T, sig ? "sigmoid" : "softmax", norm ? "_norm" : "", aux ? "_aux" : "");
    set_name(k, "moe_route_bwd", suffix);
    buf_printf(&k->constants, "{\"N\": %d, \"E\": %d, \"K\": %d, \"T\": %d, \"SIGMOID\": %d, \"NORM\": %d, \"scale\": %.9g, \"aux\": %.9g}", N, E, K,
               T, sig, norm, s->floats[0], s->floats[1]);
    if (aux) {
        k->scratch_bytes = (int64_t)(N / T) * E * 4;
        snprintf(call, sizeof call, "moe_route_aux<%d, %d, %d, %d>((float *)ws, %s, %s)", N, E, K, T, a[3], auxs);
        cg_entry(k, "_aux", cg_grid_for((int64_t)(N / T) * E, 128), 1, 128, call);
    }
    snprintf(call, sizeof call, "moe_route_bwd<%d, %d, %d, %d, %d, %d>(%s, %s, %s, %s, %s, %s)", N, E, K, sig, norm, T, a[0], a[1], a[2], a[3],
             aux ? "(const float *)ws" : "(const float *)nullptr", scale);
    cg_entry(k, "", cg_grid_for(N, 128), 1, 128, call);
    return 0;
}

/* permute / combine: N, C, K, expert. */
static int gen_move(const Graph *g, const GStep *s, CgKernel *k) {
    int N = (int)s->ints[0], C = (int)s->ints[1], K = (int)s->ints[2], x = (int)s->ints[3];
    char suffix[96], call[768];
    snprintf(suffix, sizeof suffix, "_N%d_C%d_K%d_e%d", N, C, K, x);
    buf_printf(&k->constants, "{\"N\": %d, \"C\": %d, \"K\": %d, \"EXPERT\": %d}", N, C, K, x);
    int grid = cg_grid_for((int64_t)N * K, THREADS);
    switch (s->op) {
    case OP_MOE_PERMUTE_FWD:
    case OP_MOE_PERMUTE_BWD: {
        int fwd = s->op == OP_MOE_PERMUTE_FWD;
        const char *o = cg_bind(k, g, fwd ? "out" : "dx", s->args[0], 1), *i = cg_bind(k, g, fwd ? "x" : "dout", s->args[1], 0);
        const char *sel = cg_bind(k, g, "sel", s->args[2], 0), *pos = cg_bind(k, g, "pos", s->args[3], 0);
        set_name(k, fp8c_op_info[s->op].name, suffix);
        if (fwd) {
            snprintf(call, sizeof call, "moe_zero<%s, %lldLL>(%s)", T_(0), (long long)N * C, o);
            cg_entry(k, "_zero", cg_grid_for((int64_t)N * C, THREADS), 1, THREADS, call);
        }
        snprintf(call, sizeof call, "moe_permute_%s<%s, %s, %d, %d, %d, %d>(%s, %s, %s, %s)", fwd ? "fwd" : "bwd", T_(0), T_(1), N, C, K, x, o, i, sel, pos);
        cg_entry(k, "", grid, 1, THREADS, call);
        return 0;
    }
    case OP_MOE_COMBINE_FWD: {
        static const char *const roles[5] = {"out", "y", "weights", "sel", "pos"};
        const char *a[5];
        for (int i = 0; i < 5; i++) a[i] = cg_bind(k, g, roles[i], s->args[i], i == 0);
        set_name(k, fp8c_op_info[s->op].name, suffix);
        snprintf(call, sizeof call, "moe_combine_fwd<%s, %s, %d, %d, %d, %d>(%s, %s, %s, %s, %s)", T_(0), T_(1), N, C, K, x, a[0], a[1], a[2], a[3], a[4]);
        cg_entry(k, "", grid, 1, THREADS, call);
        return 0;
    }
    default: {
        static const char *const roles[7] = {"dy", "dweights", "dout", "y", "weights", "sel", "pos"};
        const char *a[7];
        for (int i = 0; i < 7; i++) a[i] = cg_bind(k, g, roles[i], s->args[i], i < 2);
        set_name(k, fp8c_op_info[s->op].name, suffix);
        snprintf(call, sizeof call, "moe_zero<%s, %lldLL>(%s)", T_(0), (long long)N * C, a[0]);
        cg_entry(k, "_zero", cg_grid_for((int64_t)N * C, THREADS), 1, THREADS, call);
        snprintf(call, sizeof call, "moe_combine_bwd<%s, %s, %s, %d, %d, %d, %d>(%s, %s, %s, %s, %s, %s, %s)", T_(0), T_(2), T_(3), N, C, K, x, a[0], a[1],
                 a[2], a[3], a[4], a[5], a[6]);
        cg_entry(k, "", grid, 1, THREADS, call);
        return 0;
    }
    }
}

static int gen_bias_update(const Graph *g, const GStep *s, CgKernel *k) {
    int E = (int)s->ints[0];
    const char *b = cg_bind(k, g, "bias", s->args[0], 1), *l = cg_bind(k, g, "load", s->args[1], 0);
    char speed[48], suffix[48], call[256];
    cg_float(speed, sizeof speed, s->floats[0]);
    snprintf(suffix, sizeof suffix, "_E%d", E);
    set_name(k, "moe_bias_update", suffix);
    buf_printf(&k->constants, "{\"E\": %d, \"speed\": %.9g}", E, s->floats[0]);
    snprintf(call, sizeof call, "moe_bias_update<%d>(%s, %s, %s)", E, b, l, speed);
    cg_entry(k, "", 1, 1, 32, call);
    return 0;
}

int cg_gen_mla(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    if (grp->kind != FUSE_NONE || grp->nsteps != 1) {
        snprintf(err, errlen, "the mla family runs single steps, not fusion %d", grp->kind);
        return -1;
    }
    snprintf(k->family, sizeof k->family, "mla");
    switch (s->op) {
    case OP_MLA_SPLIT_FWD:
    case OP_MLA_SPLIT_BWD: return gen_split(g, s, k);
    case OP_MLA_ROPE_FWD:
    case OP_MLA_ROPE_BWD: return gen_rope(g, s, k, err, errlen);
    case OP_MLA_ATTENTION_FWD:
    case OP_MLA_ATTENTION_BWD: return gen_attention(g, s, k);
    default: break;
    }
    snprintf(err, errlen, "the mla family does not run %s", fp8c_op_info[s->op].name);
    return -1;
}

int cg_gen_moe(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    if (grp->kind != FUSE_NONE || grp->nsteps != 1) {
        snprintf(err, errlen, "the moe family runs single steps, not fusion %d", grp->kind);
        return -1;
    }
    snprintf(k->family, sizeof k->family, "moe");
    switch (s->op) {
    case OP_MOE_ROUTE_FWD:
    case OP_MOE_ROUTE_BWD: return gen_route(g, s, k);
    case OP_MOE_PERMUTE_FWD:
    case OP_MOE_PERMUTE_BWD:
    case OP_MOE_COMBINE_FWD:
    case OP_MOE_COMBINE_BWD: return gen_move(g, s, k);
    case OP_MOE_BIAS_UPDATE: return gen_bias_update(g, s, k);
    default: break;
    }
    snprintf(err, errlen, "the moe family does not run %s", fp8c_op_info[s->op].name);
    return -1;
}
