/* cg_embed.c: kernel instances of the templates/embed.cuh family (see codegen.c for the
 * contract): embed_fwd (one grid-stride launch) and embed_bwd (three launches sharing ws: index
 * the token positions, then add each token's dout rows in token order). FUSE_NONE only. */
#include "fp8c.h"

#include <string.h>

#define THREADS 256

static int max_int(int a, int b) { return a > b ? a : b; }

/* out|tokens,wte,?wpe; B, T, C. */
static int gen_fwd(const Graph *g, const GStep *s, CgKernel *k) {
    int out = s->args[0], tokens = s->args[1], wte = s->args[2], wpe = s->args[3];
    int B = (int)s->ints[0], T = (int)s->ints[1], C = (int)s->ints[2], vocab = (int)g->t[wte].shape[0];
    int epl = cg_pick_epl(max_int(max_int(cg_dt_bytes(g, out), cg_dt_bytes(g, wte)), cg_dt_bytes(g, wpe)), C);
    const char *o = cg_bind(k, g, "out", out, 1);
    const char *tk = cg_bind(k, g, "tokens", tokens, 0);
    const char *e = cg_bind(k, g, "wte", wte, 0);
    const char *p = cg_bind(k, g, "wpe", wpe, 0);
    snprintf(k->name, sizeof k->name, "embed_fwd");
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_B%d_T%d_C%d_V%d", B, T, C, vocab);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"C\": %d, \"vocab\": %d, \"EPL\": %d}", B, T, C, vocab, epl);
    char call[512];
    snprintf(call, sizeof call, "embed_fwd<%s, %s, %s, %d, %d, %d, %d, %d>(%s, %s, %s, %s)", cg_arg_type(g, out), cg_arg_type(g, wte),
             cg_arg_type(g, wpe >= 0 ? wpe : wte), B, T, C, vocab, epl, o, tk, e, p);
    cg_entry(k, "", cg_grid_for((int64_t)B * T * (C / epl), THREADS), 1, THREADS, call);
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* +dwte,+?dwpe|dout,tokens; B, T, C. */
static int gen_bwd(const Graph *g, const GStep *s, CgKernel *k) {
    int dwte = s->args[0], dwpe = s->args[1], dout = s->args[2], tokens = s->args[3];
    int B = (int)s->ints[0], T = (int)s->ints[1], C = (int)s->ints[2], vocab = (int)g->t[dwte].shape[0];
    int rows_threads = C <= 2048 ? 256 : C <= 4096 ? 512 : 1024; /* at most 8 columns per thread up to C = 8192 */
    const char *dw = cg_bind(k, g, "dwte", dwte, 1);
    const char *dp = cg_bind(k, g, "dwpe", dwpe, 1);
    const char *d = cg_bind(k, g, "dout", dout, 0);
    const char *tk = cg_bind(k, g, "tokens", tokens, 0);
    snprintf(k->name, sizeof k->name, "embed_bwd");
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_B%d_T%d_C%d_V%d", B, T, C, vocab);
    buf_printf(&k->constants, "{\"B\": %d, \"T\": %d, \"C\": %d, \"vocab\": %d, \"THREADS\": %d}", B, T, C, vocab, rows_threads);
    k->scratch_bytes = 2LL * vocab * 4; /* head[vocab], count[vocab] */
    char call[512];
    snprintf(call, sizeof call, "embed_bwd_init<%d>((int *)ws)", vocab);
    cg_entry(k, "_init", cg_grid_for(vocab, THREADS), 1, THREADS, call);
    snprintf(call, sizeof call, "embed_bwd_index<%d, %d>((int *)ws, %s)", B * T, vocab, tk);
    cg_entry(k, "_index", cg_grid_for((int64_t)B * T, THREADS), 1, THREADS, call);
    snprintf(call, sizeof call, "embed_bwd_rows<%s, %s, %s, %d, %d, %d, %d, %d>(%s, %s, %s, %s, (const int *)ws)", cg_arg_type(g, dwte),
             cg_arg_type(g, dwpe >= 0 ? dwpe : dwte), cg_arg_type(g, dout), B, T, C, vocab, rows_threads, dw, dp, d, tk);
    cg_entry(k, "_rows", B * T + (dwpe >= 0 ? T : 0), 1, rows_threads, call);
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
