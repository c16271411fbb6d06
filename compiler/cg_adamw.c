/* cg_adamw.c: kernel instances of the templates/adamw.cuh family (see codegen.c for the
 * contract): one adamw step (FUSE_NONE), or an adamw step with the quantize steps of its weight
 * (FUSE_ADAMW_QUANT: T x T blocks, current scaling, both orientations, in the same pass).
 *
 * AdamW's betas and eps are plan constants the steps do not carry: codegen.c sets the three
 * globals below from the model's training config before it asks for instances, and they become
 * float literals (ref_adamw takes them as floats). Must not: accept storage combinations that
 * ref_adamw does not define (FP16 moments, a non-FP32 master), or fuse a quantize whose scale
 * needs more than one weight block (per-tensor or delayed scaling, amax outputs).
 */
#include "fp8c.h"

#include <string.h>

double cg_adamw_beta1 = 0.9, cg_adamw_beta2 = 0.95, cg_adamw_eps = 1e-8;

/* ref.h's storage codes (REF_FP32, REF_BF16, REF_FP16) as plan dtypes. */
static TensorDtype ref_dtype(int64_t d) { return d == 1 ? TD_BF16 : d == 2 ? TD_F16 : TD_F32; }
static int is_float_dtype(TensorDtype t) { return t == TD_F32 || t == TD_BF16 || t == TD_F16; }

typedef struct {
    int param, master, m, v, grad;
    int64_t n;
    TensorDtype pt, st, gt;
    double wd;
} AdamwSpec;

static int spec_of(const Graph *g, const GStep *s, AdamwSpec *a, char *err, size_t errlen) {
    if (s->op != OP_ADAMW) {
        snprintf(err, errlen, "the adamw family runs adamw steps, not %s", fp8c_op_info[s->op].name);
        return -1;
    }
    a->param = s->args[0], a->master = s->args[1], a->m = s->args[2], a->v = s->args[3], a->grad = s->args[4];
    a->n = s->ints[0];
    a->wd = s->floats[0];
    if (a->param < 0 || a->m < 0 || a->v < 0 || a->grad < 0 || a->n <= 0) {
        snprintf(err, errlen, "adamw: param, m, v, grad and a positive n are required");
        return -1;
    }
    a->pt = g->t[a->param].dtype, a->st = g->t[a->m].dtype, a->gt = g->t[a->grad].dtype;
    if (s->ints[1] < 0 || s->ints[1] > 2 || a->pt != ref_dtype(s->ints[1])) {
        snprintf(err, errlen, "adamw: param_dtype %lld does not match the parameter's dtype %s", (long long)s->ints[1],
                 fp8c_tensor_dtype_names[a->pt]);
        return -1;
    }
    if ((s->ints[2] != 0 && s->ints[2] != 1) || a->st != ref_dtype(s->ints[2]) || g->t[a->v].dtype != a->st) {
        snprintf(err, errlen, "adamw: moments must be f32 or bf16 and match state_dtype %lld (m %s, v %s)", (long long)s->ints[2],
                 fp8c_tensor_dtype_names[a->st], fp8c_tensor_dtype_names[g->t[a->v].dtype]);
        return -1;
    }
    if (a->master >= 0 && g->t[a->master].dtype != TD_F32) {
        snprintf(err, errlen, "adamw: master weights must be f32 (ref_adamw keeps them unrounded), not %s",
                 fp8c_tensor_dtype_names[g->t[a->master].dtype]);
        return -1;
    }
    if (!is_float_dtype(a->gt)) {
        snprintf(err, errlen, "adamw: gradient dtype %s is not a float type", fp8c_tensor_dtype_names[a->gt]);
        return -1;
    }
    int ids[5] = {a->param, a->master, a->m, a->v, a->grad};
    for (int i = 0; i < 5; i++)
        if (ids[i] >= 0 && g->t[ids[i]].bytes < a->n * fp8c_tensor_dtype_bytes[g->t[ids[i]].dtype]) {
            snprintf(err, errlen, "adamw: tensor %s holds fewer than n = %lld elements", g->t[ids[i]].name, (long long)a->n);
            return -1;
        }
    if ((a->n + 1023) / 1024 > 0x7fffffff) {
        snprintf(err, errlen, "adamw: n = %lld is too large for one launch", (long long)a->n);
        return -1;
    }
    return 0;
}

/* "wd0p1" style: the weight decay in a kernel name. */
static void wd_tag(char *out, size_t n, double wd) {
    char b[32];
    snprintf(b, sizeof b, "%g", (double)(float)wd);
    size_t o = (size_t)snprintf(out, n, "wd");
    for (const char *c = b; *c && o + 2 < n; c++) out[o++] = *c == '.' ? 'p' : *c == '-' ? 'm' : *c == '+' ? 'x' : *c;
    out[o] = 0;
}

/* beta1, beta2, eps, weight_decay as the float literals ref_adamw sees. */
static void hyper_args(Buf *b, double wd) {
    char f[4][48];
    buf_printf(b, "%s, %s, %s, %s", cg_float(f[0], sizeof f[0], cg_adamw_beta1), cg_float(f[1], sizeof f[1], cg_adamw_beta2),
               cg_float(f[2], sizeof f[2], cg_adamw_eps), cg_float(f[3], sizeof f[3], wd));
}

static void hyper_json(Buf *b, const AdamwSpec *a) {
    buf_printf(b, "\"param\": \"%s\", \"state\": \"%s\", \"grad\": \"%s\", \"master\": %d, \"beta1\": %.9g, \"beta2\": %.9g, "
               "\"eps\": %.9g, \"weight_decay\": %.9g", fp8c_tensor_dtype_names[a->pt], fp8c_tensor_dtype_names[a->st],
               fp8c_tensor_dtype_names[a->gt], a->master >= 0, (double)(float)cg_adamw_beta1, (double)(float)cg_adamw_beta2,
               (double)(float)cg_adamw_eps, (double)(float)a->wd);
}

static void adamw_params(CgKernel *k, const Graph *g, const AdamwSpec *a) {
    cg_add_param(k, g, "param", a->param, 1);
    cg_add_param(k, g, "master", a->master, 1);
    cg_add_param(k, g, "m", a->m, 1);
    cg_add_param(k, g, "v", a->v, 1);
}

static void add_audit(CgKernel *k, const char *s) {
    for (int i = 0; i < k->naudit; i++)
        if (!strcmp(k->audit[i], s)) return;
    if (k->naudit < CG_MAX_AUDIT) k->audit[k->naudit++] = s;
}

static int gen_plain(const Graph *g, CgKernel *k, const AdamwSpec *a) {
    char wd[40];
    wd_tag(wd, sizeof wd, a->wd);
    snprintf(k->family, sizeof k->family, "adamw");
    snprintf(k->name, sizeof k->name, "adamw_%s_%s_%s%s_n%lld_%s", cg_ctype(a->pt), cg_ctype(a->st), cg_ctype(a->gt),
             a->master >= 0 ? "_master" : "", (long long)a->n, wd);
    adamw_params(k, g, a);
    cg_add_param(k, g, "grad", a->grad, 0);
    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(256) %s(", k->name);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    (void)ws;\n    adamw<%s, %s, %s, %s, %lldLL, 256>(param, %s, m, v, grad, ", cg_ctype(a->pt), cg_ctype(a->st),
               cg_ctype(a->gt), a->master >= 0 ? "true" : "false", (long long)a->n, a->master >= 0 ? "master" : "(float *)0");
    hyper_args(&k->body, a->wd);
    buf_puts(&k->body, ", rs);\n}\n");
    cg_add_entry(k, k->name, (int)((a->n + 1023) / 1024), 1, 1, 256, 1, 1, 0);
    buf_printf(&k->constants, "{\"n\": %lld, ", (long long)a->n);
    hyper_json(&k->constants, a);
    buf_puts(&k->constants, "}");
    add_audit(k, "sqrt.rn.f32");
    add_audit(k, "div.rn.f32");
    return 0;
}

/* FUSE_ADAMW_QUANT: steps[0] the adamw, steps[1..] quantizes of its parameter. */
static int gen_fused(const Graph *g, const CgGroup *grp, CgKernel *k, const AdamwSpec *a, char *err, size_t errlen) {
    const GStep *row = NULL, *col = NULL;
    int T = 0, R = 0, C = 0;
    for (int i = 1; i < grp->nsteps; i++) {
        const GStep *q = &g->s[grp->step_ids[i]];
        if (q->op != OP_QUANTIZE || q->args[3] != a->param) {
            snprintf(err, errlen, "adamw_quantize: step %d is not a quantize of the updated parameter", i);
            return -1;
        }
        int64_t qr = q->ints[0], qc = q->ints[1], tr = q->ints[2], tcl = q->ints[3];
        if (q->args[4] >= 0 || q->args[2] >= 0) {
            snprintf(err, errlen, "adamw_quantize: a weight copy with a given (delayed) scale or an amax output needs the whole "
                     "tensor's amax; only T x T block scaling is fused");
            return -1;
        }
        if (tr <= 0 && tcl <= 0) {
            snprintf(err, errlen, "adamw_quantize: per-tensor current scaling needs the whole weight's amax before any code is "
                     "written, which one pass over the blocks cannot have; quantized separately");
            return -1;
        }
        if (tr != tcl || (tr != 32 && tr != 64 && tr != 128) || q->ints[5] || (q->ints[4] != 0 && q->ints[4] != 1) ||
            (q->ints[6] != 0 && q->ints[6] != 1)) {
            snprintf(err, errlen, "adamw_quantize: fuses E4M3/E5M2 T x T block scaling with T = 32, 64 or 128 only (got %lld x %lld%s)",
                     (long long)tr, (long long)tcl, q->ints[5] ? ", MX" : "");
            return -1;
        }
        if (qr * qc != a->n || qr > (1 << 30) || qc > (1 << 30) || (T && (T != tr || R != qr || C != qc))) {
            snprintf(err, errlen, "adamw_quantize: quantize shapes/tiles disagree with each other or with n = %lld", (long long)a->n);
            return -1;
        }
        if (g->t[q->args[0]].dtype != TD_U8 || g->t[q->args[1]].dtype != TD_F32) {
            snprintf(err, errlen, "adamw_quantize: codes must be u8 and scale_inv f32");
            return -1;
        }
        T = (int)tr, R = (int)qr, C = (int)qc;
        if (q->ints[6] ? col != NULL : row != NULL) {
            snprintf(err, errlen, "adamw_quantize: two quantize steps of the same orientation");
            return -1;
        }
        if (q->ints[6]) col = q;
        else row = q;
    }
    if (!row && !col) {
        snprintf(err, errlen, "adamw_quantize: no quantize step");
        return -1;
    }
    int fr = row ? (int)row->ints[4] : 0, fc = col ? (int)col->ints[4] : 0;
    char wd[40];
    wd_tag(wd, sizeof wd, a->wd);
    snprintf(k->family, sizeof k->family, "adamw");
    snprintf(k->name, sizeof k->name, "adamw_quant_%s_%s_%s%s_R%d_C%d_t%d%s%s%s%s_%s", cg_ctype(a->pt), cg_ctype(a->st), cg_ctype(a->gt),
             a->master >= 0 ? "_master" : "", R, C, T, row ? "_r" : "", row ? (fr ? "e5m2" : "e4m3") : "", col ? "_c" : "",
             col ? (fc ? "e5m2" : "e4m3") : "", wd);
    adamw_params(k, g, a);
    if (row) cg_add_param(k, g, "codes_r", row->args[0], 1), cg_add_param(k, g, "scale_inv_r", row->args[1], 1);
    if (col) cg_add_param(k, g, "codes_c", col->args[0], 1), cg_add_param(k, g, "scale_inv_c", col->args[1], 1);
    cg_add_param(k, g, "grad", a->grad, 0);
    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d, 1) %s(", 4 * T, k->name);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    (void)ws;\n    adamw_quant<%s, %s, %s, %s, %d, %d, %d, %s, %s, %s, %s>(\n        param, %s, m, v, %s, %s, grad, ",
               cg_ctype(a->pt), cg_ctype(a->st), cg_ctype(a->gt), a->master >= 0 ? "true" : "false", R, C, T, row ? "true" : "false",
               fr ? "FMT_E5M2" : "FMT_E4M3", col ? "true" : "false", fc ? "FMT_E5M2" : "FMT_E4M3", a->master >= 0 ? "master" : "(float *)0",
               row ? "codes_r, scale_inv_r" : "(u8 *)0, (float *)0", col ? "codes_c, scale_inv_c" : "(u8 *)0, (float *)0");
    hyper_args(&k->body, a->wd);
    buf_puts(&k->body, ", rs);\n}\n");
    cg_add_entry(k, k->name, ((R + T - 1) / T) * ((C + T - 1) / T), 1, 1, 4 * T, 1, 1, 0);
    buf_printf(&k->constants, "{\"R\": %d, \"C\": %d, \"T\": %d, \"row\": %s, \"col\": %s, ", R, C, T,
               row ? (fr ? "\"e5m2\"" : "\"e4m3\"") : "null", col ? (fc ? "\"e5m2\"" : "\"e4m3\"") : "null");
    hyper_json(&k->constants, a);
    buf_puts(&k->constants, "}");
    add_audit(k, "sqrt.rn.f32");
    add_audit(k, "div.rn.f32");
    if ((row && fr == 0) || (col && fc == 0)) add_audit(k, "cvt.rn.satfinite.e4m3x2.f32");
    if ((row && fr == 1) || (col && fc == 1)) add_audit(k, "cvt.rn.satfinite.e5m2x2.f32");
    return 0;
}

int cg_gen_adamw(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    AdamwSpec a;
    if ((grp->kind != FUSE_NONE && grp->kind != FUSE_ADAMW_QUANT) || grp->nsteps < 1 ||
        (grp->kind == FUSE_NONE && grp->nsteps != 1) || grp->nsteps > 3) {
        snprintf(err, errlen, "the adamw family does not run %s groups of %d steps", fuse_names[grp->kind], grp->nsteps);
        return -1;
    }
    if (spec_of(g, &g->s[grp->step_ids[0]], &a, err, errlen)) return -1;
    if (grp->kind == FUSE_ADAMW_QUANT) return gen_fused(g, grp, k, &a, err, errlen);
    return gen_plain(g, k, &a);
}
