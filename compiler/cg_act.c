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
#define GRID_CAP 2048 /* grid-stride loops: enough blocks to fill any current GPU several times */

static int dt_bytes(const Graph *g, int t) { return t < 0 ? 0 : fp8c_tensor_dtype_bytes[g->t[t].dtype]; }
/* Element type of a template argument. Callers type an absent optional pointer (nullptr) like a
 * present sibling (bias like weight, up like gate) so that the template's access-size checks hold. */
static const char *ty(const Graph *g, int t) { return t < 0 ? "float" : cg_ctype(g->t[t].dtype); }
static int max_int(int a, int b) { return a > b ? a : b; }

/* Largest EPL in {8, 4, 2, 1} that moves at most 16 bytes of the widest type and divides mult. */
static int pick_epl(int widest, int64_t mult) {
    for (int e = 8; e > 1; e /= 2)
        if (e * widest <= 16 && mult % e == 0) return e;
    return 1;
}

/* Binds tensor t to a pointer param named role and returns the name the template call uses:
 * "nullptr" when absent, the earlier param's name when t is already bound (in place: one
 * pointer, since the signature marks every pointer __restrict__). */
static const char *bind(CgKernel *k, const Graph *g, const char *role, int t, int is_output) {
    if (t < 0) return "nullptr";
    for (int i = 0; i < k->nparams; i++)
        if (k->param_tensor[i] == t) return k->params[i];
    cg_add_param(k, g, role, t, is_output);
    return k->params[k->nparams - 1];
}

/* "_bf16_f32_..." : the dtype of every param, so the name tells instances apart. */
static void name_dtypes(CgKernel *k) {
    size_t n = strlen(k->name);
    for (int i = 0; i < k->nparams && n < sizeof k->name; i++) {
        const char *t = !strcmp(k->ptypes[i], "float") ? "f32" : !strcmp(k->ptypes[i], "int") ? "i32" : k->ptypes[i];
        n += (size_t)snprintf(k->name + n, sizeof k->name - n, "_%s", t);
    }
}

/* One extern "C" entry: its text (signature + one template call) and its launch. */
static void entry(CgKernel *k, const char *suffix, int gx, int gy, int threads, const char *call) {
    char sym[sizeof k->entries[0].symbol];
    snprintf(sym, sizeof sym, "%.140s%s", k->name, suffix);
    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d) %s(", threads, sym);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    %s;\n}\n", call);
    cg_add_entry(k, sym, gx, gy, 1, threads, 1, 1, 0);
}

static int grid_for(int64_t work, int per_block) {
    int64_t b = (work + per_block - 1) / per_block;
    return b < 1 ? 1 : b > GRID_CAP ? GRID_CAP : (int)b;
}

/* ACT_* of act.cuh, or -1 for an op this family does not run forward. */
static int act_kind(OpKind op) { return op == OP_GELU_FWD ? 0 : op == OP_SWIGLU_FWD ? 1 : op == OP_GATE_FWD ? 2 : -1; }
static const char *const act_names[] = {"ACT_GELU", "ACT_SWIGLU", "ACT_GATE"};
static const char *const x_roles[] = {"inp", "gate", "a"}, *const y_roles[] = {"", "up", "g"};

/* gelu_fwd (out|inp), swiglu_fwd (out|gate,up), gate_fwd (out|a,g); n. */
static int gen_fwd(const Graph *g, const GStep *s, CgKernel *k) {
    int act = act_kind(s->op), out = s->args[0], x = s->args[1], y = act ? s->args[2] : -1;
    int64_t n = s->ints[0];
    int epl = pick_epl(max_int(max_int(dt_bytes(g, out), dt_bytes(g, x)), dt_bytes(g, y)), n);
    const char *o = bind(k, g, "out", out, 1);
    const char *xa = bind(k, g, x_roles[act], x, 0);
    const char *ya = bind(k, g, y_roles[act], y, 0);
    snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_n%lld", (long long)n);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    char call[512];
    snprintf(call, sizeof call, "act_fwd<%s, %s, %s, %s, %lldLL, %d>(%s, %s, %s)", act_names[act], ty(g, out), ty(g, x),
             ty(g, y >= 0 ? y : x), (long long)n, epl, o, xa, ya);
    entry(k, "", grid_for(n / epl, THREADS), 1, THREADS, call);
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
    int epl = pick_epl(max_int(max_int(dt_bytes(g, out), dt_bytes(g, x)), dt_bytes(g, y)), C / 32);
    while (epl > 1 && qmode == 1 && tc % (32 * epl)) epl /= 2;
    int piece = qmode == 1 ? tc : 32 * epl;
    const char *fname = fmt ? "e5m2" : "e4m3";
    const char *o = bind(k, g, "out", out, 1);
    bind(k, g, "codes", q->args[0], 1);
    bind(k, g, "scale_inv", q->args[1], 1);
    const char *am = bind(k, g, "amax", q->args[2], 1);
    const char *xa = bind(k, g, x_roles[act], x, 0);
    const char *ya = bind(k, g, y_roles[act], y, 0);
    const char *sc = bind(k, g, "scale", qmode == 2 ? q->args[4] : -1, 0);
    if (qmode == 1) snprintf(k->name, sizeof k->name, "%s_quant_%s_t%d", fp8c_op_info[s->op].name, fname, tc);
    else snprintf(k->name, sizeof k->name, "%s_quant_%s_tensor", fp8c_op_info[s->op].name, fname);
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_R%d_C%d", R, C);
    buf_printf(&k->constants, "{\"R\": %d, \"C\": %d, \"EPL\": %d, \"WARPS\": %d, \"format\": \"%s\", \"scaling\": \"%s\", \"tile\": [1, %d]}",
               R, C, epl, QWARPS, fname, qmode == 1 ? "current" : "given per-tensor", tc);
    if (qmode == 2 && q->args[2] >= 0) entry(k, "_zero_amax", 1, 1, 32, "rowq_zero_amax(amax)");
    char call[768];
    snprintf(call, sizeof call, "act_fwd_quant<%s, %s, %s, %s, %d, %d, %d, %d, %s, %s, %d>(%s, codes, scale_inv, %s, %s, %s, %s)",
             act_names[act], ty(g, out), ty(g, x), ty(g, y >= 0 ? y : x), R, C, epl, QWARPS, qmode == 1 ? "QMODE_TILE" : "QMODE_TENSOR",
             fmt ? "FMT_E5M2" : "FMT_E4M3", tc, o, am, xa, ya, sc);
    entry(k, "", grid_for((int64_t)R * (C / piece), QWARPS), 1, 32 * QWARPS, call);
    k->audit[k->naudit++] = fmt ? "cvt.rn.satfinite.e5m2x2.f32" : "cvt.rn.satfinite.e4m3x2.f32";
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* gelu_bwd (dinp|dout,inp), swiglu_bwd (dgate,dup|dout,gate,up), gate_bwd (da,dg|dout,a,g); n. */
static int gen_bwd(const Graph *g, const GStep *s, CgKernel *k) {
    static const char *const roles[3][5] = {{"dinp", "dout", "inp"}, {"dgate", "dup", "dout", "gate", "up"}, {"da", "dg", "dout", "a", "g"}};
    int kind = s->op == OP_GELU_BWD ? 0 : s->op == OP_SWIGLU_BWD ? 1 : 2, nargs = kind ? 5 : 3, nout = kind ? 2 : 1, widest = 0;
    int64_t n = s->ints[0];
    for (int i = 0; i < nargs; i++) widest = max_int(widest, dt_bytes(g, s->args[i]));
    int epl = pick_epl(widest, n);
    const char *a[5];
    for (int i = 0; i < nargs; i++) a[i] = bind(k, g, roles[kind][i], s->args[i], i < nout);
    snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_n%lld", (long long)n);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    char call[512];
    if (!kind)
        snprintf(call, sizeof call, "gelu_bwd<%s, %s, %s, %lldLL, %d>(%s, %s, %s)", ty(g, s->args[0]), ty(g, s->args[1]), ty(g, s->args[2]),
                 (long long)n, epl, a[0], a[1], a[2]);
    else
        snprintf(call, sizeof call, "%s<%s, %s, %s, %s, %s, %lldLL, %d>(%s, %s, %s, %s, %s)", kind == 1 ? "swiglu_bwd" : "gate_bwd",
                 ty(g, s->args[0]), ty(g, s->args[1]), ty(g, s->args[2]), ty(g, s->args[3]), ty(g, s->args[4]), (long long)n, epl, a[0],
                 a[1], a[2], a[3], a[4]);
    entry(k, "", grid_for(n / epl, THREADS), 1, THREADS, call);
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
