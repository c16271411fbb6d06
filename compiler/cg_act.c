/* cg_act.c: kernel instances of the templates/act.cuh family (see codegen.c for the contract):
 * gelu/swiglu/gate forward and backward (FUSE_NONE), and a forward + row-wise FP8 copy of its
 * output (FUSE_ACT_QUANT; the output viewed as the quantize step's R x C).
 *
 * The fused quantize step must read the activation's output, untransposed, with 1 x T tiles
 * (current scaling) or one given per-tensor scale (delayed scaling); anything else is refused and
 * the two steps then run as separate kernels. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256   /* elementwise blocks */
#define QWARPS 8      /* fused blocks: one warp per piece of a row */

static int max_int(int a, int b) { return a > b ? a : b; }

/* ACT_* of act.cuh, or -1 for an op this family does not run forward. */
static int act_kind(OpKind op) { return op == OP_GELU_FWD ? 0 : op == OP_SWIGLU_FWD ? 1 : op == OP_GATE_FWD ? 2 : -1; }
static const char *const act_names[] = {"ACT_GELU", "ACT_SWIGLU", "ACT_GATE"};
static const char *const x_roles[] = {"inp", "gate", "a"}, *const y_roles[] = {"", "up", "g"};

/* gelu_fwd (out|inp), swiglu_fwd (out|gate,up), gate_fwd (out|a,g); n. */
static int gen_fwd(const Graph *g, const GStep *s, CgKernel *k) {
    int act = act_kind(s->op), out = s->args[0], x = s->args[1], y = act ? s->args[2] : -1;
    int64_t n = s->ints[0];
    int epl = cg_pick_epl(max_int(max_int(cg_dt_bytes(g, out), cg_dt_bytes(g, x)), cg_dt_bytes(g, y)), n);
    const char *o = cg_bind(k, g, "out", out, 1);
    const char *xa = cg_bind(k, g, x_roles[act], x, 0);
    const char *ya = cg_bind(k, g, y_roles[act], y, 0);
    snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_n%lld", (long long)n);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    char call[512];
    snprintf(call, sizeof call, "act_fwd<%s, %s, %s, %s, %lldLL, %d>(%s, %s, %s)", act_names[act], cg_arg_type(g, out), cg_arg_type(g, x),
             cg_arg_type(g, y >= 0 ? y : x), (long long)n, epl, o, xa, ya);
    cg_entry(k, "", cg_grid_for(n / epl, THREADS), 1, THREADS, call);
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* The forward and the quantize step (codes,scale_inv,?amax|inp,?scale; R,C,tile_r,tile_c,format,
 * mx,transpose) of its output. */
static int gen_fwd_quant(const Graph *g, const GStep *s, const GStep *q, CgKernel *k, char *err, size_t errlen) {
    int act = act_kind(s->op), out = s->args[0], x = s->args[1], y = act ? s->args[2] : -1;
    const int64_t *v = q->ints;
    int R = (int)v[0], C = (int)v[1], fmt = (int)v[4], qmode, tc = 0;
    if (q->op != OP_QUANTIZE || q->args[3] != out || v[0] * v[1] != s->ints[0] || v[6] || v[5] || (fmt != 0 && fmt != 1)) {
        snprintf(err, errlen, "the fused quantization must be a row-wise e4m3/e5m2 copy of the activation's output");
        return -1;
    }
    if (v[2] == 1 && q->args[4] < 0) {
        qmode = 1;
        tc = v[3] > 0 ? (int)v[3] : C;
    } else if (v[2] <= 0 && v[3] <= 0 && q->args[4] >= 0) {
        qmode = 2;
    } else {
        snprintf(err, errlen, "%s",
                 v[2] <= 0 && v[3] <= 0 ? "per-tensor current scaling needs the whole tensor's amax before the first code: not fused"
                                        : "the fused kernel does 1 x T tiles (scales from tile amaxes) or one given per-tensor scale");
        return -1;
    }
    if (C % 32 || (qmode == 1 && (C % tc || tc % 32))) {
        snprintf(err, errlen, "R x C = %d x %d, tile 1 x %d: the fused kernel needs C and the tile width multiples of 32, the tile dividing C",
                 R, C, tc);
        return -1;
    }
    int epl = cg_pick_epl(max_int(max_int(cg_dt_bytes(g, out), cg_dt_bytes(g, x)), cg_dt_bytes(g, y)), C / 32);
    while (epl > 1 && qmode == 1 && tc % (32 * epl)) epl /= 2;
    int piece = qmode == 1 ? tc : 32 * epl;
    const char *fname = fmt ? "e5m2" : "e4m3";
    const char *o = cg_bind(k, g, "out", out, 1);
    cg_bind(k, g, "codes", q->args[0], 1);
    cg_bind(k, g, "scale_inv", q->args[1], 1);
    const char *am = cg_bind(k, g, "amax", q->args[2], 1);
    const char *xa = cg_bind(k, g, x_roles[act], x, 0);
    const char *ya = cg_bind(k, g, y_roles[act], y, 0);
    const char *sc = cg_bind(k, g, "scale", qmode == 2 ? q->args[4] : -1, 0);
    if (qmode == 1) snprintf(k->name, sizeof k->name, "%s_quant_%s_t%d", fp8c_op_info[s->op].name, fname, tc);
    else snprintf(k->name, sizeof k->name, "%s_quant_%s_tensor", fp8c_op_info[s->op].name, fname);
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_R%d_C%d", R, C);
    buf_printf(&k->constants, "{\"R\": %d, \"C\": %d, \"EPL\": %d, \"WARPS\": %d, \"format\": \"%s\", \"scaling\": \"%s\", \"tile\": [1, %d]}",
               R, C, epl, QWARPS, fname, qmode == 1 ? "current" : "given per-tensor", tc);
    if (qmode == 2 && q->args[2] >= 0) cg_entry(k, "_zero_amax", 1, 1, 32, "rowq_zero_amax(amax)");
    char call[768];
    snprintf(call, sizeof call, "act_fwd_quant<%s, %s, %s, %s, %d, %d, %d, %d, %s, %s, %d>(%s, codes, scale_inv, %s, %s, %s, %s)",
             act_names[act], cg_arg_type(g, out), cg_arg_type(g, x), cg_arg_type(g, y >= 0 ? y : x), R, C, epl, QWARPS, qmode == 1 ? "QMODE_TILE" : "QMODE_TENSOR",
             fmt ? "FMT_E5M2" : "FMT_E4M3", tc, o, am, xa, ya, sc);
    cg_entry(k, "", cg_grid_for((int64_t)R * (C / piece), QWARPS), 1, 32 * QWARPS, call);
    k->audit[k->naudit++] = fmt ? "cvt.rn.satfinite.e5m2x2.f32" : "cvt.rn.satfinite.e4m3x2.f32";
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* gelu_bwd (dinp|dout,inp), swiglu_bwd (dgate,dup|dout,gate,up), gate_bwd (da,dg|dout,a,g); n. */
static int gen_bwd(const Graph *g, const GStep *s, CgKernel *k) {
    static const char *const roles[3][5] = {{"dinp", "dout", "inp"}, {"dgate", "dup", "dout", "gate", "up"}, {"da", "dg", "dout", "a", "g"}};
    int kind = s->op == OP_GELU_BWD ? 0 : s->op == OP_SWIGLU_BWD ? 1 : 2, nargs = kind ? 5 : 3, nout = kind ? 2 : 1, widest = 0;
    int64_t n = s->ints[0];
    for (int i = 0; i < nargs; i++) widest = max_int(widest, cg_dt_bytes(g, s->args[i]));
    int epl = cg_pick_epl(widest, n);
    const char *a[5];
    for (int i = 0; i < nargs; i++) a[i] = cg_bind(k, g, roles[kind][i], s->args[i], i < nout);
    snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_n%lld", (long long)n);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    char call[512];
    if (!kind)
        snprintf(call, sizeof call, "gelu_bwd<%s, %s, %s, %lldLL, %d>(%s, %s, %s)", cg_arg_type(g, s->args[0]), cg_arg_type(g, s->args[1]), cg_arg_type(g, s->args[2]),
                 (long long)n, epl, a[0], a[1], a[2]);
    else
        snprintf(call, sizeof call, "%s<%s, %s, %s, %s, %s, %lldLL, %d>(%s, %s, %s, %s, %s)", kind == 1 ? "swiglu_bwd" : "gate_bwd",
                 cg_arg_type(g, s->args[0]), cg_arg_type(g, s->args[1]), cg_arg_type(g, s->args[2]), cg_arg_type(g, s->args[3]), cg_arg_type(g, s->args[4]), (long long)n, epl, a[0],
                 a[1], a[2], a[3], a[4]);
    cg_entry(k, "", cg_grid_for(n / epl, THREADS), 1, THREADS, call);
    if (g->t[s->args[0]].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

int cg_gen_act(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    int fwd = act_kind(s->op) >= 0, bwd = s->op == OP_GELU_BWD || s->op == OP_SWIGLU_BWD || s->op == OP_GATE_BWD;
    snprintf(k->family, sizeof k->family, "act");
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && fwd) return gen_fwd(g, s, k);
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && bwd) return gen_bwd(g, s, k);
    if (grp->kind == FUSE_ACT_QUANT && grp->nsteps == 2 && fwd) return gen_fwd_quant(g, s, &g->s[grp->step_ids[1]], k, err, errlen);
    snprintf(err, errlen, "the act family does not run %s (fusion %d, %d steps)", fp8c_op_info[s->op].name, grp->kind, grp->nsteps);
    return -1;
}
