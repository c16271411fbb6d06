/* cg_embed.c: kernel instances of the templates/embed.cuh family (see codegen.c for the
 * contract): embed_fwd (one grid-stride launch) and embed_bwd (three launches sharing ws: index
 * the token positions, then add each token's dout rows in token order). FUSE_NONE only. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256
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

/* out|tokens,wte,?wpe; B, T, C. */
static int gen_fwd(const Graph *g, const GStep *s, CgKernel *k) {
    int out = s->args[0], tokens = s->args[1], wte = s->args[2], wpe = s->args[3];
    int B = (int)s->ints[0], T = (int)s->ints[1], C = (int)s->ints[2], vocab = (int)g->t[wte].shape[0];
    int epl = pick_epl(max_int(max_int(dt_bytes(g, out), dt_bytes(g, wte)), dt_bytes(g, wpe)), C);
    const char *o = bind(k, g, "out", out, 1);
    const char *tk = bind(k, g, "tokens", tokens, 0);
    const char *e = bind(k, g, "wte", wte, 0);
    const char *p = bind(k, g, "wpe", wpe, 0);
    snprintf(k->name, sizeof k->name, "embed_fwd");
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_B%d_T%d_C%d_V%d", B, T, C, vocab);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"C\": %d, \"vocab\": %d, \"EPL\": %d}", B, T, C, vocab, epl);
    char call[512];
    snprintf(call, sizeof call, "embed_fwd<%s, %s, %s, %d, %d, %d, %d, %d>(%s, %s, %s, %s)", ty(g, out), ty(g, wte),
             ty(g, wpe >= 0 ? wpe : wte), B, T, C, vocab, epl, o, tk, e, p);
    entry(k, "", grid_for((int64_t)B * T * (C / epl), THREADS), 1, THREADS, call);
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* +dwte,+?dwpe|dout,tokens; B, T, C. */
static int gen_bwd(const Graph *g, const GStep *s, CgKernel *k) {
    int dwte = s->args[0], dwpe = s->args[1], dout = s->args[2], tokens = s->args[3];
    int B = (int)s->ints[0], T = (int)s->ints[1], C = (int)s->ints[2], vocab = (int)g->t[dwte].shape[0];
    int rows_threads = C <= 2048 ? 256 : C <= 4096 ? 512 : 1024; /* at most 8 columns per thread up to C = 8192 */
    const char *dw = bind(k, g, "dwte", dwte, 1);
    const char *dp = bind(k, g, "dwpe", dwpe, 1);
    const char *d = bind(k, g, "dout", dout, 0);
    const char *tk = bind(k, g, "tokens", tokens, 0);
    snprintf(k->name, sizeof k->name, "embed_bwd");
    name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_B%d_T%d_C%d_V%d", B, T, C, vocab);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"C\": %d, \"vocab\": %d, \"THREADS\": %d}", B, T, C, vocab, rows_threads);
    k->scratch_bytes = 2LL * vocab * 4; /* head[vocab], count[vocab] */
    char call[512];
    snprintf(call, sizeof call, "embed_bwd_init<%d>((int *)ws)", vocab);
    entry(k, "_init", grid_for(vocab, THREADS), 1, THREADS, call);
    snprintf(call, sizeof call, "embed_bwd_index<%d, %d>((int *)ws, %s)", B * T, vocab, tk);
    entry(k, "_index", grid_for((int64_t)B * T, THREADS), 1, THREADS, call);
    snprintf(call, sizeof call, "embed_bwd_rows<%s, %s, %s, %d, %d, %d, %d, %d>(%s, %s, %s, %s, (const int *)ws)", ty(g, dwte),
             ty(g, dwpe >= 0 ? dwpe : dwte), ty(g, dout), B, T, C, vocab, rows_threads, dw, dp, d, tk);
    entry(k, "_rows", B * T + (dwpe >= 0 ? T : 0), 1, rows_threads, call);
    return 0;
}

int cg_gen_embed(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    snprintf(k->family, sizeof k->family, "embed");
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && s->op == OP_EMBED_FWD) return gen_fwd(g, s, k);
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && s->op == OP_EMBED_BWD) return gen_bwd(g, s, k);
    snprintf(err, errlen, "the embed family does not run %s (fusion %d, %d steps)", fp8c_op_info[s->op].name, grp->kind, grp->nsteps);
    return -1;
}
