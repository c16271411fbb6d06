/* cg_elementwise.c: kernel instances of the templates/elementwise.cuh family (see codegen.c for
 * the contract): add_fwd, accumulate, bias_bwd, the dbias of matmul_bwd_weight (cuBLASLt does
 * its dw; codegen calls this only when the step has a dbias), rope_fwd and rope_bwd (in place
 * when dinp is dout). All FUSE_NONE. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256   /* elementwise and column-sum blocks */
#define GRID_CAP 2048 /* grid-stride loops: enough blocks to fill any current GPU several times */
#define BIAS_ROWS 64  /* rows per partial column sum */

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

/* name + dtypes + suffix */
static void set_name(CgKernel *k, const char *op, const char *suffix) {
    snprintf(k->name, sizeof k->name, "%s", op);
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "%s", suffix);
}

/* add_fwd (out|a,b) and accumulate (+dst|src); n: one float add per element. */
static int gen_add(const Graph *g, const GStep *s, CgKernel *k) {
    int add = s->op == OP_ADD_FWD, nargs = add ? 3 : 2, widest = 0;
    int64_t n = s->ints[0];
    for (int i = 0; i < nargs; i++) widest = max_int(widest, dt_bytes(g, s->args[i]));
    int epl = pick_epl(widest, n);
    static const char *const roles[2][3] = {{"dst", "src"}, {"out", "a", "b"}};
    const char *a[3];
    for (int i = 0; i < nargs; i++) a[i] = bind(k, g, roles[add][i], s->args[i], i == 0);
    char suffix[48], call[512];
    snprintf(suffix, sizeof suffix, "_n%lld", (long long)n);
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"n\": %lld, \"EPL\": %d}", (long long)n, epl);
    if (add)
        snprintf(call, sizeof call, "add_fwd<%s, %s, %s, %lldLL, %d>(%s, %s, %s)", ty(g, s->args[0]), ty(g, s->args[1]), ty(g, s->args[2]),
                 (long long)n, epl, a[0], a[1], a[2]);
    else
        snprintf(call, sizeof call, "accumulate<%s, %s, %lldLL, %d>(%s, %s)", ty(g, s->args[0]), ty(g, s->args[1]), (long long)n, epl, a[0],
                 a[1]);
    entry(k, "", grid_for(n / epl, THREADS), 1, THREADS, call);
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
    int epl = pick_epl(dt_bytes(g, dout), N), groups = (M + BIAS_ROWS - 1) / BIAS_ROWS;
    const char *db = bind(k, g, "dbias", dbias, 1);
    const char *d = bind(k, g, "dout", dout, 0);
    char suffix[48], call[512];
    snprintf(suffix, sizeof suffix, "_M%d_N%d", M, N);
    set_name(k, "bias_bwd", suffix);
    buf_printf(&k->constants, "{\"M\": %d, \"N\": %d, \"EPL\": %d, \"ROWS\": %d}", M, N, epl, BIAS_ROWS);
    k->scratch_bytes = (int64_t)groups * N * 4;
    snprintf(call, sizeof call, "bias_bwd_partial<%s, %d, %d, %d, %d>((float *)ws, %s)", ty(g, dout), M, N, epl, BIAS_ROWS, d);
    entry(k, "_partial", (N + 32 * epl - 1) / (32 * epl), groups, THREADS, call);
    snprintf(call, sizeof call, "colsum_finish<%d, %d, %d>(%s, (float *)nullptr, (const float *)ws)", M, BIAS_ROWS, N, db);
    entry(k, "_finish", (N + 31) / 32, 1, THREADS, call);
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
    const char *o = bind(k, g, fwd ? "out" : "dinp", s->args[0], 1);
    const char *i = bind(k, g, fwd ? "inp" : "dout", s->args[1], 0);
    char theta[48], tag[48], suffix[96], call[512];
    cg_float(theta, sizeof theta, s->floats[0]);
    snprintf(tag, sizeof tag, "%g", s->floats[0]);
    for (char *c = tag; *c; c++) *c = *c == '-' ? 'm' : *c == '.' || *c == '+' ? 'p' : *c;
    snprintf(suffix, sizeof suffix, "_B%d_T%d_H%d_hd%d_theta%s%s", B, T, H, hd, tag, o == i ? "_inplace" : "");
    set_name(k, fp8c_op_info[s->op].name, suffix);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"H\": %d, \"hd\": %d, \"theta\": %g}", B, T, H, hd, s->floats[0]);
    snprintf(call, sizeof call, "rope<%s, %s, %d, %d, %d, %d, %d, %d>(%s, %s, %s)", ty(g, s->args[0]), ty(g, s->args[1]), B, T, H, hd,
             fwd ? 1 : -1, threads, o, i, theta);
    entry(k, "", B * T, 1, threads, call);
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
