/* cg_elementwise.c: kernel instances of the templates/elementwise.cuh family (see codegen.c for
 * the contract): add_fwd, accumulate, bias_bwd, the dbias of matmul_bwd_weight (cuBLASLt does
 * its dw; codegen calls this only when the step has a dbias), rope_fwd and rope_bwd (in place
 * when dinp is dout). All FUSE_NONE. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256   /* elementwise and column-sum blocks */
#define BIAS_ROWS 64  /* rows per partial column sum */

static int max_int(int a, int b) { return a > b ? a : b; }

/* name + dtypes + suffix */
static void set_name(CgKernel *k, const char *op, const char *suffix) {
    snprintf(k->name, sizeof k->name, "%s", op);
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "%s", suffix);
}

/* add_fwd (out|a,b) and accumulate (+dst|src); n: one float add per element. */
static int gen_add(const Graph *g, const GStep *s, CgKernel *k) {
    int add = s->op == OP_ADD_FWD, nargs = add ? 3 : 2, widest = 0;
    int64_t n = s->ints[0];
    for (int i = 0; i < nargs; i++) widest = max_int(widest, cg_dt_bytes(g, s->args[i]));
    int epl = cg_pick_epl(widest, n);
    static const char *const roles[2][3] = {{"dst", "src"}, {"out", "a", "b"}};
    const char *a[3];
    for (int i = 0; i < nargs; i++) a[i] = cg_bind(k, g, roles[add][i], s->args[i], i == 0);
    char suffix[48], call[512];
    snprintf(suffix, sizeof suffix, "_n%lld", (long long)n);
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    if (add)
        snprintf(call, sizeof call, "add_fwd<%s, %s, %s, %lldLL, %d>(%s, %s, %s)", cg_arg_type(g, s->args[0]), cg_arg_type(g, s->args[1]), cg_arg_type(g, s->args[2]),
                 (long long)n, epl, a[0], a[1], a[2]);
    else
        snprintf(call, sizeof call, "accumulate<%s, %s, %lldLL, %d>(%s, %s)", cg_arg_type(g, s->args[0]), cg_arg_type(g, s->args[1]), (long long)n, epl, a[0],
                 a[1]);
    cg_entry(k, "", cg_grid_for(n / epl, THREADS), 1, THREADS, call);
    if (g->t[s->args[0]].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* dbias[n] += sum_m dout[m,n]: bias_bwd (+dbias|dout; M, N) or matmul_bwd_weight's dbias
 * (+dw,+?dbias|dout,inp; M, K, N). */
static int gen_bias(const Graph *g, const GStep *s, CgKernel *k, char *err, size_t errlen) {
    int mbw = s->op == OP_MATMUL_BWD_WEIGHT;
    int dbias = s->args[mbw ? 1 : 0], dout = s->args[mbw ? 2 : 1];
    int M = (int)s->ints[0], N = (int)s->ints[mbw ? 2 : 1];
    if (dbias < 0) {
        snprintf(err, errlen, "matmul_bwd_weight without a bias leaves nothing to a generated kernel (cuBLASLt does dw)");
        return -1;
    }
    int epl = cg_pick_epl(cg_dt_bytes(g, dout), N), groups = (M + BIAS_ROWS - 1) / BIAS_ROWS;
    const char *db = cg_bind(k, g, "dbias", dbias, 1);
    const char *d = cg_bind(k, g, "dout", dout, 0);
    char suffix[48], call[512];
    snprintf(suffix, sizeof suffix, "_M%d_N%d", M, N);
    set_name(k, "bias_bwd", suffix);
    buf_printf(&k->constants, "{\"M\": %d, \"N\": %d, \"EPL\": %d, \"ROWS\": %d}", M, N, epl, BIAS_ROWS);
    k->scratch_bytes = (int64_t)groups * N * 4;
    snprintf(call, sizeof call, "bias_bwd_partial<%s, %d, %d, %d, %d>((float *)ws, %s)", cg_arg_type(g, dout), M, N, epl, BIAS_ROWS, d);
    cg_entry(k, "_partial", (N + 32 * epl - 1) / (32 * epl), groups, THREADS, call);
    snprintf(call, sizeof call, "colsum_finish<%d, %d, %d>(%s, (float *)nullptr, (const float *)ws)", M, BIAS_ROWS, N, db);
    cg_entry(k, "_finish", (N + 31) / 32, 1, THREADS, call);
    return 0;
}

/* rope_fwd (out|inp) and rope_bwd (dinp|dout, in place in the plan); B, T, H, hd; theta. */
static int gen_rope(const Graph *g, const GStep *s, CgKernel *k, char *err, size_t errlen) {
    int fwd = s->op == OP_ROPE_FWD;
    int B = (int)s->ints[0], T = (int)s->ints[1], H = (int)s->ints[2], hd = (int)s->ints[3];
    if (hd % 2) {
        snprintf(err, errlen, "head dimension %d: RoPE rotates pairs, it must be even", hd);
        return -1;
    }
    int pairs = H * hd / 2, threads = pairs >= THREADS ? THREADS : (pairs + 31) / 32 * 32;
    const char *o = cg_bind(k, g, fwd ? "out" : "dinp", s->args[0], 1);
    const char *i = cg_bind(k, g, fwd ? "inp" : "dout", s->args[1], 0);
    char theta[48], tag[48], suffix[96], call[512];
    cg_float(theta, sizeof theta, s->floats[0]);
    snprintf(tag, sizeof tag, "%g", s->floats[0]);
    for (char *c = tag; *c; c++) *c = *c == '-' ? 'm' : *c == '.' || *c == '+' ? 'p' : *c;
    snprintf(suffix, sizeof suffix, "_B%d_T%d_H%d_hd%d_theta%s%s", B, T, H, hd, tag, o == i ? "_inplace" : "");
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"H\": %d, \"hd\": %d, \"theta\": %g}", B, T, H, hd, s->floats[0]);
    snprintf(call, sizeof call, "rope<%s, %s, %d, %d, %d, %d, %d, %d>(%s, %s, %s)", cg_arg_type(g, s->args[0]), cg_arg_type(g, s->args[1]), B, T, H, hd,
             fwd ? 1 : -1, threads, o, i, theta);
    cg_entry(k, "", B * T, 1, threads, call);
    if (g->t[s->args[0]].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

int cg_gen_elementwise(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    if (grp->kind != FUSE_NONE || grp->nsteps != 1) {
        snprintf(err, errlen, "the elementwise family runs single steps, not fusion %d", grp->kind);
        return -1;
    }
    snprintf(k->family, sizeof k->family, "elementwise");
    switch (s->op) {
    case OP_ADD_FWD:
    case OP_ACCUMULATE: return gen_add(g, s, k);
    case OP_BIAS_BWD:
    case OP_MATMUL_BWD_WEIGHT: return gen_bias(g, s, k, err, errlen);
    case OP_ROPE_FWD:
    case OP_ROPE_BWD: return gen_rope(g, s, k, err, errlen);
    default: break;
    }
    snprintf(err, errlen, "the elementwise family does not run %s", fp8c_op_info[s->op].name);
    return -1;
}
