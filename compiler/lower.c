/* lower.c: Resolution + Model -> Graph: the training program as ordered steps of the closed op
 * set (runtime/ops.h) over named tensors. Forward, FP32 cross-entropy, backward in reverse,
 * AdamW per parameter, delayed-scaling updates. A low-bit linear becomes explicit quantize
 * steps (row-wise copies for fprop and dgrad, column-wise, i.e. transposed, copies for wgrad)
 * and qgemm steps that name the copies they read. The runtime never sees modules, only this. */
#include "fp8c.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    Arena *a;
    const Resolution *r;
    const Model *m;
    Graph *g;
    Section sec;
    int module;
    TensorDtype act;       /* dtype of activations of the current module */
    TensorDtype grad_dt;   /* parameter gradients */
    int64_t M;             /* tokens per micro-batch */
    int dres;              /* gradient of the residual stream, updated in place */
} L;

static TensorDtype td_of(Dtype t) {
    switch (t) {
    case DT_FP32: return TD_F32;
    case DT_FP16: return TD_F16;
    default: return TD_BF16;
    }
}

static int tensor(L *l, const char *name, TensorDtype dt, TensorClass cls, int ndim, int64_t d0, int64_t d1) {
    Graph *g = l->g;
    if (g->nt == g->capt) {
        g->capt = g->capt ? 2 * g->capt : 256;
        g->t = xrealloc(g->t, (size_t)g->capt * sizeof *g->t);
    }
    GTensor *t = &g->t[g->nt];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->cls = cls;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t n = d0 * (ndim > 1 ? d1 : 1);
    t->bytes = n * fp8c_tensor_dtype_bytes[dt];
    t->first = t->last = -1;
    return g->nt++;
}

static int act(L *l, const char *name, TensorDtype dt, int64_t rows, int64_t cols) {
    return tensor(l, name, dt, TC_ACT, 2, rows, cols);
}

static GStep *step(L *l, OpKind op) {
    Graph *g = l->g;
    if (g->ns == g->caps) {
        g->caps = g->caps ? 2 * g->caps : 512;
        g->s = xrealloc(g->s, (size_t)g->caps * sizeof *g->s);
    }
    GStep *s = &g->s[g->ns++];
    memset(s, 0, sizeof *s);
    s->op = op;
    s->sec = l->sec;
    s->module = l->module;
    for (int i = 0; i < OP_MAX_ARGS; i++) s->args[i] = -1;
    return s;
}

/* ---- parameters ---- */

typedef struct {
    int w, b;       /* parameter tensors (b = -1 when absent) */
    int gw, gb;     /* their gradients */
} PTen;

static const ModRes *res_of(L *l, const char *path) { return &l->r->mods[model_find(l->m, path)]; }

static void optimizer_for(L *l, int p, int gp, const ModRes *mr) {
    const Resolution *r = l->r;
    const GTensor tv = l->g->t[p]; /* a copy: creating tensors below may move the array */
    const GTensor *t = &tv;
    int master = -1;
    if (res_global(r, G_MASTER_WEIGHTS)->i == DT_FP32 && t->dtype != TD_F32)
        master = tensor(l, arena_printf(l->a, "master.%s", t->name), TD_F32, TC_MASTER, t->ndim, t->shape[0], t->shape[1]);
    TensorDtype sd = res_global(r, G_OPTIMIZER_STATE)->i == DT_BF16 ? TD_BF16 : TD_F32;
    int mm = tensor(l, arena_printf(l->a, "adam_m.%s", t->name), sd, TC_OPT, t->ndim, t->shape[0], t->shape[1]);
    int vv = tensor(l, arena_printf(l->a, "adam_v.%s", t->name), sd, TC_OPT, t->ndim, t->shape[0], t->shape[1]);
    Section save = l->sec;
    int savem = l->module;
    l->sec = SEC_OPTIMIZER;
    l->module = (int)(mr->mod - l->m->mods);
    GStep *s = step(l, OP_ADAMW);
    s->args[0] = p;
    s->args[1] = master;
    s->args[2] = mm;
    s->args[3] = vv;
    s->args[4] = gp;
    s->ints[0] = t->bytes / fp8c_tensor_dtype_bytes[t->dtype];
    s->ints[1] = t->dtype == TD_BF16 ? 1 : t->dtype == TD_F16 ? 2 : 0;
    s->ints[2] = sd == TD_BF16 ? 1 : 0;
    s->floats[0] = l->g->t[p].weight_decay ? l->m->train.opt.weight_decay : 0.0;
    l->sec = save;
    l->module = savem;
}

static int param(L *l, const ModRes *mr, const char *pname, int64_t d0, int64_t d1, const char *init, int decay, int *grad) {
    TensorDtype dt = td_of(mr->params);
    int p = tensor(l, arena_printf(l->a, "%s.%s", mr->mod->path, pname), dt, TC_PARAM, d1 ? 2 : 1, d0, d1);
    l->g->t[p].init = init;
    l->g->t[p].weight_decay = decay;
    *grad = tensor(l, arena_printf(l->a, "grad.%s.%s", mr->mod->path, pname), l->grad_dt, TC_GRAD, d1 ? 2 : 1, d0, d1);
    optimizer_for(l, p, *grad, mr);
    return p;
}

/* ---- low-bit quantization ---- */

typedef struct {
    int scale, amax, history; /* delayed scaling state (-1 for current scaling) */
} QState;


/* Entries of a scale-inverse tensor for an R x C operand: the quantizer's own count
 * (runtime/quant.c), so the plan and the code that fills the tensor agree by construction.
 * Dimensions are below 2^31 (model.c bounds tokens per micro-batch). */
static int64_t scale_count(int64_t R, int64_t C, int64_t tr, int64_t tc, int mx) {
    return mx ? (int64_t)q_mx_scale_count((int)R, (int)C, (int)tr, (int)tc) : (int64_t)q_scale_count((int)R, (int)C, (int)tr, (int)tc);
}

static QState qstate(L *l, const ModRes *mr, Operand op) {
    QState q = {-1, -1, -1};
    if (res_value(mr, F_Q(op, QF_SCALING))->i != SC_DELAYED && res_value(mr, F_Q(op, QF_SCALING))->i != SC_STATIC)
        return q;
    const char *base = arena_printf(l->a, "%s.%s", mr->mod->path, operand_names[op]);
    q.scale = tensor(l, arena_printf(l->a, "%s.scale", base), TD_F32, TC_SCALE, 1, 1, 0);
    if (res_value(mr, F_Q(op, QF_SCALING))->i == SC_STATIC) {
        char init[64];
        snprintf(init, sizeof init, "const:%.9g", res_value(mr, F_Q(op, QF_SCALE))->d);
        l->g->t[q.scale].init = arena_strdup(l->a, init);
        return q;
    }
    l->g->t[q.scale].init = "ones";
    q.amax = tensor(l, arena_printf(l->a, "%s.amax", base), TD_F32, TC_SCALE, 1, 1, 0);
    l->g->t[q.amax].init = "zeros";
    int64_t len = res_value(mr, F_Q(op, QF_HISTORY))->i;
    q.history = tensor(l, arena_printf(l->a, "%s.amax_history", base), TD_F32, TC_SCALE, 1, len, 0);
    l->g->t[q.history].init = "zeros";
    Section save = l->sec;
    l->sec = SEC_SCALE_UPDATE;
    GStep *s = step(l, OP_SCALE_UPDATE);
    s->args[0] = q.history;
    s->args[1] = q.scale;
    s->args[2] = q.amax;
    s->ints[0] = len;
    s->ints[1] = res_value(mr, F_Q(op, QF_ALGO))->i;
    s->ints[2] = res_value(mr, F_Q(op, QF_MARGIN))->i;
    s->ints[3] = res_value(mr, F_Q(op, QF_INTERVAL))->i;
    s->ints[4] = res_value(mr, F_Q(op, QF_FORMAT))->i == DT_E5M2 ? 1 : res_value(mr, F_Q(op, QF_FORMAT))->i == DT_E2M1 ? 2 : 0;
    l->sec = save;
    return q;
}

typedef struct {
    int codes, scale_inv;
    int64_t tr, tc;
    int fmt, mx;
} QCopy;

static int qformat(const ModRes *mr, Operand op) {
    Dtype f = (Dtype)res_value(mr, F_Q(op, QF_FORMAT))->i;
    return f == DT_E5M2 ? 1 : f == DT_E2M1 ? 2 : 0;
}

/* Quantize inp (R x C) for operand op of module mr; transpose: the column-wise copy (C x R). */
/* How far back quantize() looks for an identical copy: the projections that share an input
 * (q/k/v, MLA's q_a/kv_a, SwiGLU's gate/up) quantize it within a few steps of each other, and a
 * bounded scan keeps lowering linear in the model's size. */
#define SAME_COPY_SCAN 32

/* An earlier quantize of the section that produced exactly the copy asked for: same input, not
 * written since, same extents, tiles, format and scale kind, and current scaling on both sides
 * (no given scale, no amax output: delayed scaling keeps each module's own history and scale).
 * Returns its step, or NULL. */
static const GStep *same_copy(L *l, int inp, int64_t R, int64_t C, int transpose, const QCopy *q, const QState *qs) {
    if (qs && (qs->scale >= 0 || (!transpose && qs->amax >= 0))) return NULL;
    const Graph *g = l->g;
    for (int i = g->ns - 1; i >= 0 && i >= g->ns - SAME_COPY_SCAN; i--) {
        const GStep *s = &g->s[i];
        if (s->sec != l->sec) continue; /* e.g. a parameter's AdamW, emitted with it: runs later */
        if (s->op == OP_QUANTIZE && s->args[3] == inp && s->args[2] < 0 && s->args[4] < 0 && s->ints[0] == R &&
            s->ints[1] == C && s->ints[2] == q->tr && s->ints[3] == q->tc && s->ints[4] == q->fmt && s->ints[5] == q->mx &&
            s->ints[6] == transpose)
            return s;
        for (int k = 0; k < OP_MAX_ARGS; k++)
            if (s->args[k] == inp && op_arg_writes(s->op, k)) return NULL; /* the input changed since */
    }
    return NULL;
}

/* The FP8 copy of inp (R x C, or its transpose) under mr's settings for operand op: a new
 * quantize step, or the copy an identical earlier quantize made (same_copy), so that modules
 * reading one input share one copy. */
static QCopy quantize(L *l, const ModRes *mr, Operand op, int inp, int64_t R, int64_t C, int transpose, const QState *qs,
                      const char *src) {
    const Val *tile = res_value(mr, F_Q(op, QF_TILE));
    QCopy q = {-1, -1, tile->i, tile->j, qformat(mr, op), res_value(mr, F_Q(op, QF_SCALE_FORMAT))->i == DT_E8M0};
    const GStep *same = same_copy(l, inp, R, C, transpose, &q, qs);
    if (same) {
        q.codes = same->args[0];
        q.scale_inv = same->args[1];
        return q;
    }
    int64_t rows = transpose ? C : R, cols = transpose ? R : C;
    const char *base = arena_printf(l->a, "%s.%s.%s", mr->mod->path, operand_names[op], transpose ? "col" : "row");
    q.codes = act(l, arena_printf(l->a, "%s.codes", base), TD_U8, rows, cols);
    char tdesc[32];
    if (!q.tr)
        snprintf(tdesc, sizeof tdesc, "per-tensor");
    else
        snprintf(tdesc, sizeof tdesc, "[%lld, %lld] tiles", (long long)q.tr, (long long)q.tc);
    l->g->t[q.codes].desc = arena_printf(l->a, "%s %s copy of %s, %s, %s scales", transpose ? "column-wise (transposed)" : "row-wise",
                                         dtype_names[res_value(mr, F_Q(op, QF_FORMAT))->i], src, tdesc, q.mx ? "e8m0" : "fp32");
    q.scale_inv = act(l, arena_printf(l->a, "%s.scale_inv", base), q.mx ? TD_U8 : TD_F32, scale_count(rows, cols, q.tr, q.tc, q.mx), 1);
    GStep *s = step(l, OP_QUANTIZE);
    s->args[0] = q.codes;
    s->args[1] = q.scale_inv;
    s->args[2] = transpose || !qs ? -1 : qs->amax;
    s->args[3] = inp;
    s->args[4] = qs ? qs->scale : -1;
    s->ints[0] = R;
    s->ints[1] = C;
    s->ints[2] = q.tr;
    s->ints[3] = q.tc;
    s->ints[4] = q.fmt;
    s->ints[5] = q.mx;
    s->ints[6] = transpose;
    return q;
}

static void qgemm(L *l, int out, QCopy a, QCopy b, int bias, int64_t P, int64_t Q, int64_t R, int accumulate) {
    GStep *s = step(l, OP_QGEMM);
    s->args[0] = out;
    s->args[1] = a.codes;
    s->args[2] = a.scale_inv;
    s->args[3] = b.codes;
    s->args[4] = b.scale_inv;
    s->args[5] = bias;
    int64_t v[] = {P, Q, R, accumulate, a.tr, a.tc, a.fmt, b.tr, b.tc, b.fmt, a.mx};
    memcpy(s->ints, v, sizeof v);
    int64_t ws = (P * R + Q * R) * 4 + P * Q * 4;
    if (ws > l->g->workspace_bytes) l->g->workspace_bytes = ws;
}

/* ---- linear layers ---- */

typedef struct {
    const ModRes *mr;
    PTen p;
    int inp, out;
    QState qx, qw, qdy;
    QCopy x_col;
} Linear;

static void zero(L *l, int t) { step(l, OP_ZERO)->args[0] = t; }

/* ---- float GEMMs cuBLASLt can run ---- */

/* A float (not FP8) GEMM reads two operands of one dtype and writes that dtype or f32: that is
 * all cuBLASLt's COMPUTE_32F offers (runtime/cuda/lt.c, lt_check). A policy can ask for more:
 * an FP32 module reads a BF16 neighbour's output, or its input gradient flows back into a BF16
 * tensor (fp8_trainer's lm_head into d.final_norm.out, an FP32 router into the BF16 residual
 * gradient). float_gemm emits such a GEMM in a form both backends run as written: an operand of
 * another dtype is first widened into an f32 copy (exact), and an output the operands' dtype
 * cannot write is computed into an f32 scratch and then added (rounded once) into the real one.
 * The CPU runs these same steps, so it stays the oracle of what the GPU computes. */
static int widened(L *l, int t, const char *role) {
    const GTensor *src = &l->g->t[t];
    int w = act(l, arena_printf(l->a, "%s.%s.f32", l->m->mods[l->module].path, role), TD_F32, src->shape[0],
                src->ndim > 1 ? src->shape[1] : 1);
    zero(l, w);
    GStep *s = step(l, OP_ACCUMULATE);
    s->args[0] = w, s->args[1] = t;
    s->ints[0] = src->shape[0] * (src->ndim > 1 ? src->shape[1] : 1);
    return w;
}

/* op: MATMUL_FWD (out | inp, w, ?bias), MATMUL_BWD_DATA (+dinp | dout, w) or MATMUL_BWD_WEIGHT
 * (+dw, +?dbias | dout, inp); a[] in the op's argument order. */
static void float_gemm(L *l, OpKind op, const int a[4], int64_t M, int64_t K, int64_t N) {
    static const char *const roles[3][4] = {{"out", "inp", "w", ""}, {"dinp", "dout", "w", ""}, {"dw", "", "dout", "inp"}};
    int r = op == OP_MATMUL_FWD ? 0 : op == OP_MATMUL_BWD_DATA ? 1 : 2;
    int x = r == 2 ? 2 : 1, y = x + 1; /* the operands' argument positions */
    int args[4] = {a[0], a[1], a[2], a[3]};
    const GTensor *t = l->g->t;
    if (t[args[x]].dtype != t[args[y]].dtype) {
        if (t[args[x]].dtype != TD_F32) args[x] = widened(l, args[x], roles[r][x]);
        if (t[args[y]].dtype != TD_F32) args[y] = widened(l, args[y], roles[r][y]);
    }
    TensorDtype in = l->g->t[args[x]].dtype, outdt = l->g->t[a[0]].dtype;
    int scratch = -1;
    if (outdt != in && outdt != TD_F32) {
        const GTensor *o = &l->g->t[a[0]];
        scratch = act(l, arena_printf(l->a, "%s.%s.f32", l->m->mods[l->module].path, roles[r][0]), TD_F32, o->shape[0],
                      o->ndim > 1 ? o->shape[1] : 1);
        if (op != OP_MATMUL_FWD) zero(l, scratch); /* the GEMM accumulates into it */
        args[0] = scratch;
    }
    GStep *s = step(l, op);
    memcpy(s->args, args, sizeof args);
    s->ints[0] = M, s->ints[1] = K, s->ints[2] = N;
    if (scratch < 0) return;
    if (op == OP_MATMUL_FWD) zero(l, a[0]); /* an overwrite: out = 0 + scratch, rounded once */
    s = step(l, OP_ACCUMULATE);
    s->args[0] = a[0], s->args[1] = scratch;
    s->ints[0] = l->g->t[a[0]].shape[0] * (l->g->t[a[0]].ndim > 1 ? l->g->t[a[0]].shape[1] : 1);
}

static Linear linear_fwd(L *l, const char *path, int inp, int wtensor, int gwtensor) {
    Linear lin = {0};
    lin.mr = res_of(l, path);
    const Module *mod = lin.mr->mod;
    l->module = (int)(mod - l->m->mods);
    lin.inp = inp;
    lin.p.b = lin.p.gb = -1;
    if (wtensor >= 0) {
        lin.p.w = wtensor, lin.p.gw = gwtensor; /* tied lm_head: embed's weight */
    } else {
        int init_resid = strstr(path, "o_proj") || strstr(path, "down_proj");
        double std = init_resid ? 0.02 / sqrt(2.0 * (double)l->m->n_layers) : 0.02;
        lin.p.w = param(l, lin.mr, "weight", mod->n_out, mod->k_in, arena_printf(l->a, "normal:%.6g", std), 1, &lin.p.gw);
        if (l->m->bias) lin.p.b = param(l, lin.mr, "bias", mod->n_out, 0, "zeros", 0, &lin.p.gb);
    }
    TensorDtype out_dt = lin.mr->low_bit ? l->act : td_of(lin.mr->compute);
    lin.out = act(l, arena_printf(l->a, "%s.out", path), out_dt, l->M, mod->n_out);
    if (!lin.mr->low_bit) {
        float_gemm(l, OP_MATMUL_FWD, (const int[4]){lin.out, inp, lin.p.w, lin.p.b}, l->M, mod->k_in, mod->n_out);
        return lin;
    }
    lin.qx = qstate(l, lin.mr, OP_X);
    lin.qw = qstate(l, lin.mr, OP_W);
    lin.qdy = qstate(l, lin.mr, OP_DY);
    const char *xs = l->g->t[inp].name, *ws = l->g->t[lin.p.w].name;
    QCopy x_row = quantize(l, lin.mr, OP_X, inp, l->M, mod->k_in, 0, &lin.qx, xs);
    lin.x_col = quantize(l, lin.mr, OP_X, inp, l->M, mod->k_in, 1, &lin.qx, xs);
    QCopy w_row = quantize(l, lin.mr, OP_W, lin.p.w, mod->n_out, mod->k_in, 0, &lin.qw, ws);
    qgemm(l, lin.out, x_row, w_row, lin.p.b, l->M, mod->n_out, mod->k_in, 0);
    return lin;
}

/* dout -> accumulate into dinp (zeroed by the caller when this is its first writer), dW, db. */
static void linear_bwd(L *l, const Linear *lin, int dout, int dinp) {
    const Module *mod = lin->mr->mod;
    l->module = (int)(mod - l->m->mods);
    if (!lin->mr->low_bit) {
        float_gemm(l, OP_MATMUL_BWD_DATA, (const int[4]){dinp, dout, lin->p.w, -1}, l->M, mod->k_in, mod->n_out);
        float_gemm(l, OP_MATMUL_BWD_WEIGHT, (const int[4]){lin->p.gw, lin->p.gb, dout, lin->inp}, l->M, mod->k_in, mod->n_out);
        return;
    }
    const char *ds = l->g->t[dout].name, *ws = l->g->t[lin->p.w].name;
    QCopy dy_row = quantize(l, lin->mr, OP_DY, dout, l->M, mod->n_out, 0, &lin->qdy, ds);
    QCopy w_col = quantize(l, lin->mr, OP_W, lin->p.w, mod->n_out, mod->k_in, 1, &lin->qw, ws);
    qgemm(l, dinp, dy_row, w_col, -1, l->M, mod->k_in, mod->n_out, 1); /* dgrad contracts N */
    QCopy dy_col = quantize(l, lin->mr, OP_DY, dout, l->M, mod->n_out, 1, &lin->qdy, ds);
    qgemm(l, lin->p.gw, dy_col, lin->x_col, -1, mod->n_out, mod->k_in, l->M, 1); /* wgrad contracts M */
    if (lin->p.gb >= 0) {
        GStep *s = step(l, OP_BIAS_BWD);
        s->args[0] = lin->p.gb, s->args[1] = dout;
        s->ints[0] = l->M, s->ints[1] = mod->n_out;
    }
}

/* ---- norms ---- */

typedef struct {
    const ModRes *mr;
    PTen p;
    int inp, out, mean, rstd;
    int64_t C; /* width: d_model, or MLA's q_lora_rank / kv_lora_rank */
} Norm;

static Norm norm_fwd(L *l, const char *path, int inp) {
    Norm n = {0};
    n.mr = res_of(l, path);
    l->module = (int)(n.mr->mod - l->m->mods);
    n.inp = inp;
    int64_t C = n.C = n.mr->mod->n_out;
    n.p.w = param(l, n.mr, "weight", C, 0, "ones", 0, &n.p.gw);
    n.p.b = n.p.gb = -1;
    if (n.mr->mod->nparams > 1) n.p.b = param(l, n.mr, "bias", C, 0, "zeros", 0, &n.p.gb);
    n.out = act(l, arena_printf(l->a, "%s.out", path), td_of(n.mr->compute), l->M, C);
    n.rstd = act(l, arena_printf(l->a, "%s.rstd", path), TD_F32, l->M, 1);
    n.mean = -1;
    GStep *s;
    if (l->m->norm == NORM_RMSNORM) {
        s = step(l, OP_RMSNORM_FWD);
        s->args[0] = n.out, s->args[1] = n.rstd, s->args[2] = inp, s->args[3] = n.p.w;
    } else {
        n.mean = act(l, arena_printf(l->a, "%s.mean", path), TD_F32, l->M, 1);
        s = step(l, OP_LAYERNORM_FWD);
        s->args[0] = n.out, s->args[1] = n.mean, s->args[2] = n.rstd, s->args[3] = inp, s->args[4] = n.p.w, s->args[5] = n.p.b;
    }
    s->ints[0] = l->M, s->ints[1] = C;
    s->floats[0] = l->m->norm_eps;
    return n;
}

static void norm_bwd(L *l, const Norm *n, int dout, int dinp) {
    l->module = (int)(n->mr->mod - l->m->mods);
    GStep *s;
    if (l->m->norm == NORM_RMSNORM) {
        s = step(l, OP_RMSNORM_BWD);
        int a[] = {dinp, n->p.gw, dout, n->inp, n->p.w, n->rstd};
        memcpy(s->args, a, sizeof a);
    } else {
        s = step(l, OP_LAYERNORM_BWD);
        int a[] = {dinp, n->p.gw, n->p.gb, dout, n->inp, n->p.w, n->mean, n->rstd};
        memcpy(s->args, a, sizeof a);
    }
    s->ints[0] = l->M, s->ints[1] = n->C;
}

/* ---- one block ---- */

/* A SwiGLU MLP (dense FFN, one routed expert, the shared experts) over M rows of its input. */
typedef struct {
    Linear gate, up, down;
    int inp, act_out;
    int64_t d_ff;
} Mlp;

/* MLA's tensors of one block (attention: mla). */
typedef struct {
    Linear q, q_a, q_b, kv_a, kv_b;
    Norm q_a_norm, kv_a_norm;
    int ckv, kpe, qh, kh, vh;
} Mla;

/* MoE's tensors of one block: router logits, routing, per-expert buffers. */
typedef struct {
    const ModRes *router;
    PTen rw;                      /* router weight */
    int logits, scores, sel, weights, pos, load, bias, combined;
    int *xp;                      /* per expert: its capacity buffer of tokens */
    Mlp *experts, shared;
} Moe;

typedef struct {
    Norm attn_norm, ffn_norm;
    Linear q, k, v, gate, o, fgate, up, down;
    int q_r, k_r, att, lse, att_g, resid1, resid2, act_out;
    Mla mla;
    Moe moe;
    int is_moe;
} Block;

static int elementwise(L *l, OpKind op, int out, int a, int b, int64_t n) {
    GStep *s = step(l, op);
    s->args[0] = out, s->args[1] = a, s->args[2] = b;
    s->ints[0] = n;
    return out;
}

/* ---- SwiGLU MLPs: routed experts and the shared experts ---- */

static Mlp mlp_fwd(L *l, const char *prefix, int inp, int64_t d_ff) {
    Mlp f = {0};
    f.inp = inp;
    f.d_ff = d_ff;
    f.up = linear_fwd(l, arena_printf(l->a, "%s.up_proj", prefix), inp, -1, -1);
    f.gate = linear_fwd(l, arena_printf(l->a, "%s.gate_proj", prefix), inp, -1, -1);
    f.act_out = elementwise(l, OP_SWIGLU_FWD, act(l, arena_printf(l->a, "%s.act", prefix), l->act, l->M, d_ff), f.gate.out,
                            f.up.out, l->M * d_ff);
    f.down = linear_fwd(l, arena_printf(l->a, "%s.down_proj", prefix), f.act_out, -1, -1);
    return f;
}

/* dout -> accumulate into dinp (zeroed by the caller), and the MLP's weight gradients. */
static void mlp_bwd(L *l, const Mlp *f, const char *prefix, int dout, int dinp) {
    int64_t M = l->M;
    int dact = act(l, arena_printf(l->a, "d.%s.act", prefix), l->act, M, f->d_ff);
    zero(l, dact);
    linear_bwd(l, &f->down, dout, dact);
    int dgt = act(l, arena_printf(l->a, "d.%s.gate_proj.out", prefix), l->act, M, f->d_ff);
    int dup = act(l, arena_printf(l->a, "d.%s.up_proj.out", prefix), l->act, M, f->d_ff);
    GStep *s = step(l, OP_SWIGLU_BWD);
    int a[] = {dgt, dup, dact, f->gate.out, f->up.out};
    memcpy(s->args, a, sizeof a);
    s->ints[0] = M * f->d_ff;
    linear_bwd(l, &f->gate, dgt, dinp);
    linear_bwd(l, &f->up, dup, dinp);
}

/* ---- multi-head latent attention (attention: mla) ---- */

static void set_module(L *l, const char *path) { l->module = model_find(l->m, path); }

static void mla_fwd(L *l, int i, int h, Block *bk) {
    const Model *m = l->m;
    Mla *a = &bk->mla;
    int64_t M = l->M, H = m->n_heads, dn = m->qk_nope_head_dim, R = m->qk_rope_head_dim, dv = m->v_head_dim;
    int64_t Lr = m->kv_lora_rank, dqk = dn + R;
#define P(s) arena_printf(l->a, "blocks.%d." s, i)
    int q;
    if (m->q_lora_rank) {
        a->q_a = linear_fwd(l, P("attn.q_a_proj"), h, -1, -1);
        a->q_a_norm = norm_fwd(l, P("attn.q_a_norm"), a->q_a.out);
        a->q_b = linear_fwd(l, P("attn.q_b_proj"), a->q_a_norm.out, -1, -1);
        q = a->q_b.out;
    } else {
        a->q = linear_fwd(l, P("attn.q_proj"), h, -1, -1);
        q = a->q.out;
    }
    a->kv_a = linear_fwd(l, P("attn.kv_a_proj"), h, -1, -1);
    const char *core = P("attn.core");
    TensorDtype cdt = td_of(res_of(l, core)->compute), kdt = l->g->t[a->kv_a.out].dtype;
    set_module(l, core);
    a->ckv = act(l, P("attn.kv_a_proj.latent"), kdt, M, Lr);
    a->kpe = act(l, P("attn.kv_a_proj.k_pe"), kdt, M, R);
    GStep *s = step(l, OP_MLA_SPLIT_FWD);
    s->args[0] = a->ckv, s->args[1] = a->kpe, s->args[2] = a->kv_a.out;
    s->ints[0] = M, s->ints[1] = Lr, s->ints[2] = R;
    a->kv_a_norm = norm_fwd(l, P("attn.kv_a_norm"), a->ckv);
    a->kv_b = linear_fwd(l, P("attn.kv_b_proj"), a->kv_a_norm.out, -1, -1);
    set_module(l, core);
    a->qh = act(l, P("attn.q_heads"), cdt, M, H * dqk);
    a->kh = act(l, P("attn.k_heads"), cdt, M, H * dqk);
    a->vh = act(l, P("attn.v_heads"), cdt, M, H * dv);
    s = step(l, OP_MLA_ROPE_FWD);
    int ra[] = {a->qh, a->kh, a->vh, q, a->kv_b.out, a->kpe};
    memcpy(s->args, ra, sizeof ra);
    int64_t rd[] = {m->train.micro_batch, m->train.seq_len, H, dn, R, dv};
    memcpy(s->ints, rd, sizeof rd);
    s->floats[0] = m->rope_theta;
    bk->att = act(l, P("attn.core.out"), cdt, M, H * dv);
    bk->lse = act(l, P("attn.core.lse"), TD_F32, M, H);
    s = step(l, OP_MLA_ATTENTION_FWD);
    int aa[] = {bk->att, bk->lse, a->qh, a->kh, a->vh};
    memcpy(s->args, aa, sizeof aa);
    int64_t ad[] = {m->train.micro_batch, m->train.seq_len, H, dqk, dv};
    memcpy(s->ints, ad, sizeof ad);
    bk->att_g = bk->att;
    bk->o = linear_fwd(l, P("attn.o_proj"), bk->att, -1, -1);
#undef P
}

static void mla_bwd(L *l, int i, const Block *bk) {
    const Model *m = l->m;
    const Mla *a = &bk->mla;
    int64_t M = l->M, H = m->n_heads, dn = m->qk_nope_head_dim, R = m->qk_rope_head_dim, dv = m->v_head_dim;
    int64_t Lr = m->kv_lora_rank, dqk = dn + R;
#define P(s) arena_printf(l->a, "d.blocks.%d." s, i)
    int datt = act(l, P("attn.o_proj.in"), l->act, M, H * dv);
    zero(l, datt);
    linear_bwd(l, &bk->o, l->dres, datt);
    int dh = act(l, P("attn_norm.out"), l->act, M, m->d_model);
    zero(l, dh);
    const char *core = arena_printf(l->a, "blocks.%d.attn.core", i);
    set_module(l, core);
    int dqh = act(l, P("attn.q_heads"), l->act, M, H * dqk), dkh = act(l, P("attn.k_heads"), l->act, M, H * dqk);
    int dvh = act(l, P("attn.v_heads"), l->act, M, H * dv);
    GStep *s = step(l, OP_MLA_ATTENTION_BWD);
    int aa[] = {dqh, dkh, dvh, datt, a->qh, a->kh, a->vh, bk->att, bk->lse};
    memcpy(s->args, aa, sizeof aa);
    int64_t ad[] = {m->train.micro_batch, m->train.seq_len, H, dqk, dv};
    memcpy(s->ints, ad, sizeof ad);
    int dq = act(l, P("attn.q"), l->act, M, H * dqk), dkvb = act(l, P("attn.kv_b_proj.out"), l->act, M, H * (dn + dv));
    int dkpe = act(l, P("attn.kv_a_proj.k_pe"), l->act, M, R);
    s = step(l, OP_MLA_ROPE_BWD);
    int ra[] = {dq, dkvb, dkpe, dqh, dkh, dvh};
    memcpy(s->args, ra, sizeof ra);
    int64_t rd[] = {m->train.micro_batch, m->train.seq_len, H, dn, R, dv};
    memcpy(s->ints, rd, sizeof rd);
    s->floats[0] = m->rope_theta;
    int dckvn = act(l, P("attn.kv_a_norm.out"), l->act, M, Lr);
    zero(l, dckvn);
    linear_bwd(l, &a->kv_b, dkvb, dckvn);
    int dckv = act(l, P("attn.kv_a_proj.latent"), l->act, M, Lr);
    zero(l, dckv);
    norm_bwd(l, &a->kv_a_norm, dckvn, dckv);
    set_module(l, core);
    int dkva = act(l, P("attn.kv_a_proj.out"), l->act, M, Lr + R);
    s = step(l, OP_MLA_SPLIT_BWD);
    s->args[0] = dkva, s->args[1] = dckv, s->args[2] = dkpe;
    s->ints[0] = M, s->ints[1] = Lr, s->ints[2] = R;
    linear_bwd(l, &a->kv_a, dkva, dh);
    if (m->q_lora_rank) {
        int dqn = act(l, P("attn.q_a_norm.out"), l->act, M, m->q_lora_rank);
        zero(l, dqn);
        linear_bwd(l, &a->q_b, dq, dqn);
        int dqa = act(l, P("attn.q_a_proj.out"), l->act, M, m->q_lora_rank);
        zero(l, dqa);
        norm_bwd(l, &a->q_a_norm, dqn, dqa);
        linear_bwd(l, &a->q_a, dqa, dh);
    } else {
        linear_bwd(l, &a->q, dq, dh);
    }
    norm_bwd(l, &bk->attn_norm, dh, l->dres);
#undef P
}

/* ---- fine-grained mixture of experts (ffn: moe) ---- */

/* Router GEMM (in the router's compute dtype: FP32 under deepseek_v3), scoring and top-k, then
 * per routed expert: permute its tokens into its capacity buffer, its MLP, weighted combine into
 * an FP32 sum; the shared experts see every token. Returns the FFN's output (M x d_model). */
static int moe_fwd(L *l, int i, int h2, Block *bk) {
    const Model *m = l->m;
    Moe *e = &bk->moe;
    int64_t M = l->M, E = m->n_routed_experts, K = m->top_k, D = m->d_model;
#define P(s) arena_printf(l->a, "blocks.%d." s, i)
    e->router = res_of(l, P("ffn.router"));
    l->module = (int)(e->router->mod - m->mods);
    e->rw.w = param(l, e->router, "weight", E, D, "normal:0.02", 1, &e->rw.gw);
    e->logits = act(l, P("ffn.router.logits"), td_of(e->router->compute), M, E);
    float_gemm(l, OP_MATMUL_FWD, (const int[4]){e->logits, h2, e->rw.w, -1}, M, D, E);
    GStep *s;
    e->scores = act(l, P("ffn.router.scores"), TD_F32, M, E);
    e->sel = act(l, P("ffn.router.experts"), TD_I32, M, K);
    e->weights = act(l, P("ffn.router.weights"), TD_F32, M, K);
    e->pos = act(l, P("ffn.router.rows"), TD_I32, M, K);
    e->load = tensor(l, P("ffn.router.load"), TD_F32, TC_SCALE, 1, E, 0);
    l->g->t[e->load].init = "zeros";
    Graph *g = l->g;
    int *grown = arena_alloc(l->a, (size_t)(g->n_expert_load + 1) * sizeof *grown); /* arena: freed with the compilation */
    if (g->n_expert_load) memcpy(grown, g->expert_load, (size_t)g->n_expert_load * sizeof *grown);
    grown[g->n_expert_load++] = e->load;
    g->expert_load = grown;
    e->bias = -1;
    if (m->bias_update_speed > 0) {
        e->bias = tensor(l, P("ffn.router.expert_bias"), TD_F32, TC_SCALE, 1, E, 0);
        l->g->t[e->bias].init = "zeros";
    }
    s = step(l, OP_MOE_ROUTE_FWD);
    int ra[] = {e->scores, e->sel, e->weights, e->pos, e->load, e->logits, e->bias};
    memcpy(s->args, ra, sizeof ra);
    int64_t rd[] = {M, E, K, m->scoring == SCORE_SIGMOID, m->norm_topk_prob};
    memcpy(s->ints, rd, sizeof rd);
    s->floats[0] = m->routed_scaling_factor;
    if (e->bias >= 0) { /* DeepSeek-V3's aux-loss-free balancing, outside the gradient */
        Section save = l->sec;
        l->sec = SEC_OPTIMIZER;
        s = step(l, OP_MOE_BIAS_UPDATE);
        s->args[0] = e->bias, s->args[1] = e->load;
        s->ints[0] = E;
        s->floats[0] = m->bias_update_speed;
        l->sec = save;
    }
    e->combined = act(l, P("ffn.moe.out"), TD_F32, M, D);
    zero(l, e->combined);
    e->xp = arena_alloc(l->a, (size_t)E * sizeof *e->xp);
    e->experts = arena_alloc(l->a, (size_t)E * sizeof *e->experts);
    for (int x = 0; x < (int)E; x++) {
        const char *pre = arena_printf(l->a, "blocks.%d.ffn.experts.%d", i, x);
        l->module = (int)(e->router->mod - m->mods);
        e->xp[x] = act(l, arena_printf(l->a, "%s.in", pre), l->g->t[h2].dtype, M, D);
        s = step(l, OP_MOE_PERMUTE_FWD);
        s->args[0] = e->xp[x], s->args[1] = h2, s->args[2] = e->sel, s->args[3] = e->pos;
        s->ints[0] = M, s->ints[1] = D, s->ints[2] = K, s->ints[3] = x;
        e->experts[x] = mlp_fwd(l, pre, e->xp[x], m->expert_d_ff);
        l->module = (int)(e->router->mod - m->mods);
        s = step(l, OP_MOE_COMBINE_FWD);
        int ca[] = {e->combined, e->experts[x].down.out, e->weights, e->sel, e->pos};
        memcpy(s->args, ca, sizeof ca);
        s->ints[0] = M, s->ints[1] = D, s->ints[2] = K, s->ints[3] = x;
    }
    if (m->n_shared_experts) {
        e->shared = mlp_fwd(l, P("ffn.shared"), h2, m->n_shared_experts * m->expert_d_ff);
        s = step(l, OP_ACCUMULATE);
        s->args[0] = e->combined, s->args[1] = e->shared.down.out;
        s->ints[0] = M * D;
    }
    return e->combined;
#undef P
}

/* The FFN output's gradient is the residual gradient l->dres; accumulates into dh2. */
static void moe_bwd(L *l, int i, const Block *bk, int dh2) {
    const Model *m = l->m;
    const Moe *e = &bk->moe;
    int64_t M = l->M, E = m->n_routed_experts, K = m->top_k, D = m->d_model;
    if (m->n_shared_experts) mlp_bwd(l, &e->shared, arena_printf(l->a, "blocks.%d.ffn.shared", i), l->dres, dh2);
    int router = (int)(e->router->mod - m->mods);
    l->module = router;
    int dweights = act(l, arena_printf(l->a, "d.blocks.%d.ffn.router.weights", i), TD_F32, M, K);
    zero(l, dweights);
    for (int x = (int)E - 1; x >= 0; x--) {
        const char *pre = arena_printf(l->a, "blocks.%d.ffn.experts.%d", i, x);
        l->module = router;
        int dy = act(l, arena_printf(l->a, "d.%s.down_proj.out", pre), l->act, M, D);
        GStep *s = step(l, OP_MOE_COMBINE_BWD);
        int ca[] = {dy, dweights, l->dres, e->experts[x].down.out, e->weights, e->sel, e->pos};
        memcpy(s->args, ca, sizeof ca);
        s->ints[0] = M, s->ints[1] = D, s->ints[2] = K, s->ints[3] = x;
        int dxp = act(l, arena_printf(l->a, "d.%s.in", pre), l->act, M, D);
        zero(l, dxp);
        mlp_bwd(l, &e->experts[x], pre, dy, dxp);
        l->module = router;
        s = step(l, OP_MOE_PERMUTE_BWD);
        s->args[0] = dh2, s->args[1] = dxp, s->args[2] = e->sel, s->args[3] = e->pos;
        s->ints[0] = M, s->ints[1] = D, s->ints[2] = K, s->ints[3] = x;
    }
    l->module = router;
    int dlogits = act(l, arena_printf(l->a, "d.blocks.%d.ffn.router.logits", i), TD_F32, M, E);
    GStep *s = step(l, OP_MOE_ROUTE_BWD);
    s->args[0] = dlogits, s->args[1] = dweights, s->args[2] = e->scores, s->args[3] = e->sel;
    int64_t rd[] = {M, E, K, m->scoring == SCORE_SIGMOID, m->norm_topk_prob, m->train.seq_len};
    memcpy(s->ints, rd, sizeof rd);
    s->floats[0] = m->routed_scaling_factor;
    s->floats[1] = m->aux_loss_coef;
    float_gemm(l, OP_MATMUL_BWD_DATA, (const int[4]){dh2, dlogits, e->rw.w, -1}, M, D, E);
    float_gemm(l, OP_MATMUL_BWD_WEIGHT, (const int[4]){e->rw.gw, -1, dlogits, bk->ffn_norm.out}, M, D, E);
}

static void block_fwd(L *l, int i, int x, Block *bk) {
    const Model *m = l->m;
    int64_t M = l->M, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
#define P(s) arena_printf(l->a, "blocks.%d." s, i)
    bk->attn_norm = norm_fwd(l, P("attn_norm"), x);
    int h = bk->attn_norm.out;
    GStep *s;
    if (m->attention == ATTN_MLA) {
        mla_fwd(l, i, h, bk);
        goto ffn;
    }
    bk->q = linear_fwd(l, P("attn.q_proj"), h, -1, -1);
    bk->k = linear_fwd(l, P("attn.k_proj"), h, -1, -1);
    bk->v = linear_fwd(l, P("attn.v_proj"), h, -1, -1);
    const ModRes *core = res_of(l, P("attn.core"));
    l->module = (int)(core->mod - m->mods);
    TensorDtype cdt = td_of(core->compute);
    bk->q_r = bk->q.out;
    bk->k_r = bk->k.out;
    if (m->positions == POS_ROPE) {
        int pair[2][2] = {{bk->q.out, 0}, {bk->k.out, 0}};
        int64_t heads[2] = {m->n_heads, m->n_kv_heads};
        for (int j = 0; j < 2; j++) {
            pair[j][1] = act(l, arena_printf(l->a, "blocks.%d.attn.%s_rope", i, j ? "k" : "q"), cdt, M, j ? kvd : qd);
            GStep *s = step(l, OP_ROPE_FWD);
            s->args[0] = pair[j][1], s->args[1] = pair[j][0];
            s->ints[0] = m->train.micro_batch, s->ints[1] = m->train.seq_len, s->ints[2] = heads[j], s->ints[3] = m->head_dim;
            s->floats[0] = m->rope_theta;
        }
        bk->q_r = pair[0][1];
        bk->k_r = pair[1][1];
    }
    bk->att = act(l, P("attn.core.out"), cdt, M, qd);
    bk->lse = act(l, P("attn.core.lse"), TD_F32, M, m->n_heads);
    s = step(l, OP_ATTENTION_FWD);
    s->args[0] = bk->att, s->args[1] = bk->lse, s->args[2] = bk->q_r, s->args[3] = bk->k_r, s->args[4] = bk->v.out;
    int64_t dims[] = {m->train.micro_batch, m->train.seq_len, m->n_heads, m->n_kv_heads, m->head_dim};
    memcpy(s->ints, dims, sizeof dims);
    bk->att_g = bk->att;
    if (m->attention_gate) {
        bk->gate = linear_fwd(l, P("attn.gate_proj"), h, -1, -1);
        l->module = (int)(core->mod - m->mods);
        bk->att_g = elementwise(l, OP_GATE_FWD, act(l, P("attn.gated"), cdt, M, qd), bk->att, bk->gate.out, M * qd);
    }
    bk->o = linear_fwd(l, P("attn.o_proj"), bk->att_g, -1, -1);
ffn:
    bk->resid1 = elementwise(l, OP_ADD_FWD, act(l, P("resid_attn"), l->act, M, m->d_model), x, bk->o.out, M * m->d_model);
    bk->ffn_norm = norm_fwd(l, P("ffn_norm"), bk->resid1);
    int h2 = bk->ffn_norm.out;
    bk->is_moe = model_layer_is_moe(m, i);
    if (bk->is_moe) {
        int y = moe_fwd(l, i, h2, bk);
        bk->resid2 = elementwise(l, OP_ADD_FWD, act(l, P("resid_ffn"), l->act, M, m->d_model), bk->resid1, y, M * m->d_model);
        return;
    }
    bk->up = linear_fwd(l, P("ffn.up_proj"), h2, -1, -1);
    TensorDtype fdt = l->act;
    if (m->activation == ACT_SWIGLU) {
        bk->fgate = linear_fwd(l, P("ffn.gate_proj"), h2, -1, -1);
        bk->act_out = elementwise(l, OP_SWIGLU_FWD, act(l, P("ffn.act"), fdt, M, m->d_ff), bk->fgate.out, bk->up.out, M * m->d_ff);
    } else {
        bk->act_out = act(l, P("ffn.act"), fdt, M, m->d_ff);
        s = step(l, OP_GELU_FWD);
        s->args[0] = bk->act_out, s->args[1] = bk->up.out;
        s->ints[0] = M * m->d_ff;
    }
    bk->down = linear_fwd(l, P("ffn.down_proj"), bk->act_out, -1, -1);
    bk->resid2 = elementwise(l, OP_ADD_FWD, act(l, P("resid_ffn"), l->act, M, m->d_model), bk->resid1, bk->down.out, M * m->d_model);
#undef P
}

static void block_bwd(L *l, int i, const Block *bk) {
    const Model *m = l->m;
    int64_t M = l->M, qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
#define P(s) arena_printf(l->a, "d.blocks.%d." s, i)
    if (bk->is_moe) {
        int dh2m = act(l, P("ffn_norm.out"), l->act, M, m->d_model);
        zero(l, dh2m);
        moe_bwd(l, i, bk, dh2m);
        norm_bwd(l, &bk->ffn_norm, dh2m, l->dres);
        goto attention;
    }
    /* FFN: the residual gradient is the down projection's output gradient */
    int dact = act(l, P("ffn.act"), l->act, M, m->d_ff);
    zero(l, dact);
    linear_bwd(l, &bk->down, l->dres, dact);
    int dh2 = act(l, P("ffn_norm.out"), l->act, M, m->d_model);
    zero(l, dh2);
    int dup = act(l, P("ffn.up_proj.out"), l->act, M, m->d_ff);
    if (m->activation == ACT_SWIGLU) {
        int dgt = act(l, P("ffn.gate_proj.out"), l->act, M, m->d_ff);
        GStep *s = step(l, OP_SWIGLU_BWD);
        int a[] = {dgt, dup, dact, bk->fgate.out, bk->up.out};
        memcpy(s->args, a, sizeof a);
        s->ints[0] = M * m->d_ff;
        linear_bwd(l, &bk->fgate, dgt, dh2);
    } else {
        GStep *s = step(l, OP_GELU_BWD);
        s->args[0] = dup, s->args[1] = dact, s->args[2] = bk->up.out;
        s->ints[0] = M * m->d_ff;
    }
    linear_bwd(l, &bk->up, dup, dh2);
    norm_bwd(l, &bk->ffn_norm, dh2, l->dres);
attention:
    if (m->attention == ATTN_MLA) {
        mla_bwd(l, i, bk);
        return;
    }
    int datt_g = act(l, P("attn.o_proj.in"), l->act, M, qd);
    zero(l, datt_g);
    linear_bwd(l, &bk->o, l->dres, datt_g);
    int dh = act(l, P("attn_norm.out"), l->act, M, m->d_model);
    zero(l, dh);
    int datt = datt_g;
    const ModRes *core = res_of(l, arena_printf(l->a, "blocks.%d.attn.core", i));
    if (m->attention_gate) {
        l->module = (int)(core->mod - m->mods);
        datt = act(l, P("attn.core.out"), l->act, M, qd);
        int dg = act(l, P("attn.gate_proj.out"), l->act, M, qd);
        GStep *s = step(l, OP_GATE_BWD);
        int a[] = {datt, dg, datt_g, bk->att, bk->gate.out};
        memcpy(s->args, a, sizeof a);
        s->ints[0] = M * qd;
        linear_bwd(l, &bk->gate, dg, dh);
    }
    l->module = (int)(core->mod - m->mods);
    int dq = act(l, P("attn.q"), l->act, M, qd), dk = act(l, P("attn.k"), l->act, M, kvd), dv = act(l, P("attn.v"), l->act, M, kvd);
    GStep *s = step(l, OP_ATTENTION_BWD);
    int a[] = {dq, dk, dv, datt, bk->q_r, bk->k_r, bk->v.out, bk->att, bk->lse};
    memcpy(s->args, a, sizeof a);
    int64_t dims[] = {m->train.micro_batch, m->train.seq_len, m->n_heads, m->n_kv_heads, m->head_dim};
    memcpy(s->ints, dims, sizeof dims);
    if (m->positions == POS_ROPE) {
        int t2[2] = {dq, dk};
        int64_t heads[2] = {m->n_heads, m->n_kv_heads};
        for (int j = 0; j < 2; j++) { /* in place: dinp may alias dout */
            s = step(l, OP_ROPE_BWD);
            s->args[0] = t2[j], s->args[1] = t2[j];
            s->ints[0] = m->train.micro_batch, s->ints[1] = m->train.seq_len, s->ints[2] = heads[j], s->ints[3] = m->head_dim;
            s->floats[0] = m->rope_theta;
        }
    }
    linear_bwd(l, &bk->q, dq, dh);
    linear_bwd(l, &bk->k, dk, dh);
    linear_bwd(l, &bk->v, dv, dh);
    norm_bwd(l, &bk->attn_norm, dh, l->dres);
#undef P
}

int low_lower(Arena *a, Diag *d, const Resolution *r, Graph *g) {
    (void)d;
    memset(g, 0, sizeof *g);
    const Model *m = r->model;
    const Policy *p = r->pol;
    L l = {a, r, m, g, SEC_FORWARD, -1, TD_BF16, TD_F32, model_tokens_per_step(m), -1};
    Dtype def = p->defaults.set & (UINT64_C(1) << F_COMPUTE) ? (Dtype)p->defaults.v[F_COMPUTE].i : p->recipe->compute;
    l.act = td_of(def);
    l.grad_dt = res_global(r, G_GRAD_ACCUM)->i == DT_BF16 ? TD_BF16 : TD_F32;
    int64_t M = l.M, C = m->d_model, V = m->vocab_size;
    g->tokens = tensor(&l, "tokens", TD_I32, TC_INPUT, 1, M, 0);
    g->targets = tensor(&l, "targets", TD_I32, TC_INPUT, 1, M, 0);

    /* forward */
    const ModRes *emb = res_of(&l, "embed");
    l.module = (int)(emb->mod - m->mods);
    int gwte, gwpe = -1, wpe = -1;
    int wte = param(&l, emb, "weight", V, C, "normal:0.02", 1, &gwte);
    if (m->positions == POS_LEARNED) wpe = param(&l, res_of(&l, "pos_embed"), "weight", m->max_seq_len, C, "normal:0.02", 1, &gwpe);
    int x = act(&l, "embed.out", td_of(emb->compute), M, C);
    GStep *s = step(&l, OP_EMBED_FWD);
    s->args[0] = x, s->args[1] = g->tokens, s->args[2] = wte, s->args[3] = wpe;
    s->ints[0] = m->train.micro_batch, s->ints[1] = m->train.seq_len, s->ints[2] = C;
    Block *blocks = arena_alloc(a, (size_t)m->n_layers * sizeof *blocks);
    for (int i = 0; i < (int)m->n_layers; i++) {
        block_fwd(&l, i, x, &blocks[i]);
        x = blocks[i].resid2;
    }
    Norm fn = norm_fwd(&l, "final_norm", x);
    const ModRes *head = res_of(&l, "lm_head");
    Linear lm = linear_fwd(&l, "lm_head", fn.out, head->mod->tied ? wte : -1, head->mod->tied ? gwte : -1);
    const ModRes *loss = res_of(&l, "loss");
    l.module = (int)(loss->mod - m->mods);
    g->losses = act(&l, "loss.losses", TD_F32, M, 1);
    s = step(&l, OP_XENT_FWD);
    s->args[0] = g->losses, s->args[1] = lm.out, s->args[2] = g->targets;
    s->ints[0] = M, s->ints[1] = V;

    /* backward: the logits' gradient overwrites the logits (crossentropy_bwd allows it) */
    l.sec = SEC_BACKWARD;
    s = step(&l, OP_XENT_BWD);
    s->args[0] = lm.out, s->args[1] = lm.out, s->args[2] = g->targets;
    s->ints[0] = M, s->ints[1] = V;
    l.dres = act(&l, "d.residual", l.act, M, C);
    zero(&l, l.dres);
    int dfn = act(&l, "d.final_norm.out", l.act, M, C);
    zero(&l, dfn);
    linear_bwd(&l, &lm, lm.out, dfn);
    norm_bwd(&l, &fn, dfn, l.dres);
    for (int i = (int)m->n_layers - 1; i >= 0; i--) block_bwd(&l, i, &blocks[i]);
    l.module = (int)(emb->mod - m->mods);
    s = step(&l, OP_EMBED_BWD);
    s->args[0] = gwte, s->args[1] = gwpe, s->args[2] = l.dres, s->args[3] = g->tokens;
    s->ints[0] = m->train.micro_batch, s->ints[1] = m->train.seq_len, s->ints[2] = C;

    /* Steps were appended as sections interleaved (optimizer and scale updates are emitted
     * when their tensors are created); order them stably by section. */
    GStep *sorted = xmalloc((size_t)g->ns * sizeof *sorted);
    int k = 0;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        for (int i = 0; i < g->ns; i++)
            if (g->s[i].sec == (Section)sec) sorted[k++] = g->s[i];
    memcpy(g->s, sorted, (size_t)g->ns * sizeof *sorted);
    free(sorted);
    return 0;
}
