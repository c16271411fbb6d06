/* cg_xent.c: kernel instances of the templates/xent.cuh family (see codegen.c for the
 * contract): crossentropy_fwd, crossentropy_bwd (FUSE_NONE) and both in one pass (FUSE_XENT: run
 * in the forward section, the gradient overwriting the logits when the plan says so). One block
 * per row; the gradient scale is the run state's dloss. */
#include "fp8c.h"

#include <string.h>

static int row_threads(int V) { return V >= 16384 ? 1024 : V >= 2048 ? 512 : 256; }

/* losses (fwd: losses|logits,targets), dlogits (bwd: dlogits|logits,targets) or both; N, V. */
static void gen(const Graph *g, const GStep *fwd, const GStep *bwd, CgKernel *k) {
    const GStep *s = fwd ? fwd : bwd;
    int N = (int)s->ints[0], V = (int)s->ints[1], threads = row_threads(V);
    int losses = fwd ? fwd->args[0] : -1, dlogits = bwd ? bwd->args[0] : -1, logits = s->args[1], targets = s->args[2];
    const char *lo = cg_bind(k, g, "losses", losses, 1);
    const char *dl = cg_bind(k, g, "dlogits", dlogits, 1);
    const char *lg = cg_bind(k, g, "logits", logits, 0);
    const char *tg = cg_bind(k, g, "targets", targets, 0);
    snprintf(k->family, sizeof k->family, "xent");
    snprintf(k->name, sizeof k->name, "%s", fwd && bwd ? "crossentropy_fwd_bwd" : fwd ? "crossentropy_fwd" : "crossentropy_bwd");
    cg_name_dtypes(k);
    size_t l = strlen(k->name);
    snprintf(k->name + l, sizeof k->name - l, "_N%d_V%d%s", N, V, dl == lg ? "_inplace" : "");
    buf_printf(&k->constants, "{\"N\": %d, \"V\": %d, \"THREADS\": %d}", N, V, threads);
    char call[512];
    snprintf(call, sizeof call, "crossentropy<%s, %s, %d, %d, %d, %s, %s>(%s, %s, %s, %s, %s)", cg_arg_type(g, dlogits >= 0 ? dlogits : logits),
             cg_arg_type(g, logits), N, V, threads, fwd ? "true" : "false", bwd ? "true" : "false", lo, dl, lg, tg, bwd ? "rs->dloss" : "0.0f");
    cg_entry(k, "", N, 1, threads, call);
    if (bwd && g->t[dlogits].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
}

int cg_gen_xent(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && (s->op == OP_XENT_FWD || s->op == OP_XENT_BWD)) {
        gen(g, s->op == OP_XENT_FWD ? s : NULL, s->op == OP_XENT_BWD ? s : NULL, k);
        return 0;
    }
    if (grp->kind == FUSE_XENT && grp->nsteps == 2 && s->op == OP_XENT_FWD) {
        const GStep *b = &g->s[grp->step_ids[1]];
        if (b->op != OP_XENT_BWD || b->args[1] != s->args[1] || b->args[2] != s->args[2] || b->ints[0] != s->ints[0] ||
            b->ints[1] != s->ints[1]) {
            snprintf(err, errlen, "the fused cross-entropy needs the backward of the same logits and targets");
            return -1;
        }
        gen(g, s, b, k);
        return 0;
    }
    snprintf(err, errlen, "the xent family does not run %s (fusion %d, %d steps)", fp8c_op_info[s->op].name, grp->kind, grp->nsteps);
    return -1;
}
