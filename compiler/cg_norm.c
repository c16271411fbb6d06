/* cg_norm.c: kernel instances of the templates/norm.cuh family (see codegen.c for the contract):
 * rmsnorm/layernorm forward (FUSE_NONE), forward + row-wise FP8 copy of its output
 * (FUSE_NORM_QUANT), and backward (FUSE_NONE; three launches sharing ws scratch).
 *
 * The fused quantize step must read the norm's output, untransposed, with 1 x T tiles (current
 * scaling) or one given per-tensor scale (delayed scaling); anything else (per-tensor current
 * scaling needs the tensor's amax before the first code, MX needs E8M0 scales) is refused, and
 * the two steps then run as separate kernels. */
#include "fp8c.h"

#include <string.h>

#define FWD_ROW_FLOATS 8192 /* row-buffer floats per forward block (32 KB): WARPS = this / C, at most 8 */
#define BWD_WARPS 8         /* rows per block of norm_bwd_rows */
#define WSUM_ROWS 64        /* rows per partial sum of dw / db */

static int max_int(int a, int b) { return a > b ? a : b; }

/* The quantize step's mode in a FUSE_NORM_QUANT group: 1 (QMODE_TILE, *tc its width), 2
 * (QMODE_TENSOR with the given scale), or -1 with the reason in err. */
static int fused_qmode(const GStep *q, int out, int N, int C, int *tc, char *err, size_t errlen) {
    const int64_t *v = q->ints; /* R, C, tile_r, tile_c, format, mx, transpose */
    if (q->op != OP_QUANTIZE || q->args[3] != out || v[0] != N || v[1] != C || v[6] || v[5] || (v[4] != 0 && v[4] != 1)) {
        snprintf(err, errlen, "the fused quantization must be a row-wise e4m3/e5m2 copy of the norm's %d x %d output", N, C);
        return -1;
    }
    if (v[2] == 1 && q->args[4] >= 0) {
        snprintf(err, errlen, "1 x T tiles with a given scale: the fused kernel derives tile scales from tile amaxes only");
        return -1;
    }
    if (v[2] == 1) {
        *tc = v[3] > 0 ? (int)v[3] : C;
        if (C % *tc || *tc % 32) {
            snprintf(err, errlen, "tile 1 x %d: the fused kernel needs a tile width that divides C = %d and is a multiple of 32", *tc, C);
            return -1;
        }
        return 1;
    }
    if (v[2] <= 0 && v[3] <= 0 && q->args[4] >= 0) {
        *tc = 0;
        return 2;
    }
    if (v[2] <= 0 && v[3] <= 0)
        snprintf(err, errlen, "per-tensor current scaling needs the whole tensor's amax before the first code: not fused");
    else
        snprintf(err, errlen, "tile %lld x %lld: the fused kernel does 1 x T tiles or one given per-tensor scale", (long long)v[2],
                 (long long)v[3]);
    return -1;
}

/* rmsnorm_fwd (out,rstd|inp,w) or layernorm_fwd (out,mean,rstd|inp,w,?b); N, C; eps. With q: the
 * quantize step (codes,scale_inv,?amax|inp,?scale) of its output. */
static int gen_fwd(const Graph *g, const GStep *s, const GStep *q, CgKernel *k, char *err, size_t errlen) {
    int ln = s->op == OP_LAYERNORM_FWD;
    int out = s->args[0], mean = ln ? s->args[1] : -1, rstd = s->args[ln ? 2 : 1];
    int inp = s->args[ln ? 3 : 2], w = s->args[ln ? 4 : 3], b = ln ? s->args[5] : -1;
    int N = (int)s->ints[0], C = (int)s->ints[1];
    int qmode = 0, tc = 0, fmt = 0, codes = -1, sinv = -1, amax = -1, scale = -1;
    if (q) {
        qmode = fused_qmode(q, out, N, C, &tc, err, errlen);
        if (qmode < 0) return -1;
        fmt = (int)q->ints[4];
        codes = q->args[0], sinv = q->args[1], amax = q->args[2], scale = qmode == 2 ? q->args[4] : -1;
    }
    if (C % 32 || C > FWD_ROW_FLOATS) {
        snprintf(err, errlen, "C = %d: the norm template needs a multiple of 32, at most %d (a row is staged in shared memory)", C,
                 FWD_ROW_FLOATS);
        return -1;
    }
    int widest = max_int(max_int(cg_dt_bytes(g, out), cg_dt_bytes(g, inp)), max_int(cg_dt_bytes(g, w), cg_dt_bytes(g, b)));
    int epl = cg_pick_epl(widest, C / 32);
    while (epl > 1 && qmode == 1 && tc % (32 * epl)) epl /= 2;
    int warps = FWD_ROW_FLOATS / C > 8 ? 8 : FWD_ROW_FLOATS / C;
    snprintf(k->family, sizeof k->family, "norm");
    cg_add_param(k, g, "out", out, 1);
    cg_add_param(k, g, "mean", mean, 1);
    cg_add_param(k, g, "rstd", rstd, 1);
    cg_add_param(k, g, "codes", codes, 1);
    cg_add_param(k, g, "scale_inv", sinv, 1);
    cg_add_param(k, g, "amax", amax, 1);
    cg_add_param(k, g, "inp", inp, 0);
    cg_add_param(k, g, "w", w, 0);
    cg_add_param(k, g, "b", b, 0);
    cg_add_param(k, g, "scale", scale, 0);
    char eps[48], tag[48];
    cg_float(eps, sizeof eps, s->floats[0]);
    snprintf(tag, sizeof tag, "%g", s->floats[0]);
    for (char *c = tag; *c; c++) *c = *c == '-' ? 'm' : *c == '.' || *c == '+' ? 'p' : *c;
    const char *fname = fmt ? "e5m2" : "e4m3";
    if (qmode == 1) snprintf(k->name, sizeof k->name, "%s_quant_%s_t%d", fp8c_op_info[s->op].name, fname, tc);
    else if (qmode == 2) snprintf(k->name, sizeof k->name, "%s_quant_%s_tensor", fp8c_op_info[s->op].name, fname);
    else snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    cg_name_dtypes(k);
    size_t n = strlen(k->name);
    snprintf(k->name + n, sizeof k->name - n, "_N%d_C%d_eps%s", N, C, tag);
    buf_printf(&k->constants, "{\"N\": %d, \"C\": %d, \"eps\": %g, \"EPL\": %d, \"WARPS\": %d", N, C, s->floats[0], epl, warps);
    if (qmode)
        buf_printf(&k->constants, ", \"format\": \"%s\", \"scaling\": \"%s\", \"tile\": [1, %d]", fname,
                   qmode == 1 ? "current" : "given per-tensor", tc);
    buf_puts(&k->constants, "}");
    if (qmode == 2 && amax >= 0) cg_entry(k, "_zero_amax", 1, 1, 32, "rowq_zero_amax(amax)");
    char call[1024];
    snprintf(call, sizeof call,
             "norm_fwd<%s, %s, %s, %s, %s, %d, %d, %d, %d, %s, %s, %d>(out, %s, rstd, %s, %s, %s, inp, w, %s, %s, %s)", cg_arg_type(g, out),
             cg_arg_type(g, inp), cg_arg_type(g, w), cg_arg_type(g, b >= 0 ? b : w), ln ? "true" : "false", N, C, epl, warps,
             qmode == 1 ? "QMODE_TILE" : qmode == 2 ? "QMODE_TENSOR" : "QMODE_NONE", fmt ? "FMT_E5M2" : "FMT_E4M3", tc,
             ln ? "mean" : "nullptr", qmode ? "codes" : "nullptr", qmode ? "scale_inv" : "nullptr", amax >= 0 ? "amax" : "nullptr",
             b >= 0 ? "b" : "nullptr", qmode == 2 ? "scale" : "nullptr", eps);
    cg_entry(k, "", (N + warps - 1) / warps, 1, 32 * warps, call);
    if (qmode) k->audit[k->naudit++] = fmt ? "cvt.rn.satfinite.e5m2x2.f32" : "cvt.rn.satfinite.e4m3x2.f32";
    if (g->t[out].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

/* rmsnorm_bwd (+dinp,+dw|dout,inp,w,rstd) or layernorm_bwd (+dinp,+dw,+?db|dout,inp,w,mean,rstd). */
static int gen_bwd(const Graph *g, const GStep *s, CgKernel *k, char *err, size_t errlen) {
    int ln = s->op == OP_LAYERNORM_BWD;
    int dinp = s->args[0], dw = s->args[1], db = ln ? s->args[2] : -1;
    int dout = s->args[ln ? 3 : 2], inp = s->args[ln ? 4 : 3], w = s->args[ln ? 5 : 4];
    int mean = ln ? s->args[6] : -1, rstd = s->args[ln ? 7 : 5];
    int N = (int)s->ints[0], C = (int)s->ints[1];
    if (C % 32) {
        snprintf(err, errlen, "C = %d: the norm template needs a multiple of 32", C);
        return -1;
    }
    int widest = max_int(max_int(cg_dt_bytes(g, dinp), cg_dt_bytes(g, dout)), max_int(cg_dt_bytes(g, inp), cg_dt_bytes(g, w)));
    int epl = cg_pick_epl(widest, C / 32), groups = (N + WSUM_ROWS - 1) / WSUM_ROWS;
    snprintf(k->family, sizeof k->family, "norm");
    cg_add_param(k, g, "dinp", dinp, 1);
    cg_add_param(k, g, "dw", dw, 1);
    cg_add_param(k, g, "db", db, 1);
    cg_add_param(k, g, "dout", dout, 0);
    cg_add_param(k, g, "inp", inp, 0);
    cg_add_param(k, g, "w", w, 0);
    cg_add_param(k, g, "mean", mean, 0);
    cg_add_param(k, g, "rstd", rstd, 0);
    snprintf(k->name, sizeof k->name, "%s", fp8c_op_info[s->op].name);
    cg_name_dtypes(k);
    size_t n = strlen(k->name);
    snprintf(k->name + n, sizeof k->name - n, "_N%d_C%d", N, C);
    buf_printf(&k->constants, "{\"N\": %d, \"C\": %d, \"EPL\": %d, \"WARPS\": %d, \"ROWS\": %d}", N, C, epl, BWD_WARPS, WSUM_ROWS);
    k->scratch_bytes = (int64_t)(ln ? 2 : 1) * groups * C * 4; /* dw's partials, then db's (unused without a bias) */
    char call[1024];
    snprintf(call, sizeof call, "norm_bwd_rows<%s, %s, %s, %s, %s, %d, %d, %d, %d>(dinp, dout, inp, w, %s, rstd)", cg_arg_type(g, dinp),
             cg_arg_type(g, dout), cg_arg_type(g, inp), cg_arg_type(g, w), ln ? "true" : "false", N, C, epl, BWD_WARPS, ln ? "mean" : "nullptr");
    cg_entry(k, "_rows", (N + BWD_WARPS - 1) / BWD_WARPS, 1, 32 * BWD_WARPS, call);
    snprintf(call, sizeof call, "norm_bwd_wsum<%s, %s, %s, %d, %d, %d, %d>((float *)ws, dout, inp, %s, rstd)", cg_arg_type(g, dout), cg_arg_type(g, inp),
             ln ? "true" : "false", N, C, epl, WSUM_ROWS, ln ? "mean" : "nullptr");
    cg_entry(k, "_wsum", C / (32 * epl), groups, 256, call);
    snprintf(call, sizeof call, "colsum_finish<%d, %d, %d>(dw, (%s *)%s, (const float *)ws)", N, WSUM_ROWS, C, cg_arg_type(g, db >= 0 ? db : dw),
             db >= 0 ? "db" : "nullptr");
    cg_entry(k, "_finish", (C + 31) / 32, 1, 256, call);
    if (g->t[dinp].dtype == TD_BF16) k->audit[k->naudit++] = "cvt.rn.bf16.f32";
    return 0;
}

int cg_gen_norm(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    const GStep *s = &g->s[grp->step_ids[0]];
    int fwd = s->op == OP_RMSNORM_FWD || s->op == OP_LAYERNORM_FWD;
    int bwd = s->op == OP_RMSNORM_BWD || s->op == OP_LAYERNORM_BWD;
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && fwd) return gen_fwd(g, s, NULL, k, err, errlen);
    if (grp->kind == FUSE_NONE && grp->nsteps == 1 && bwd) return gen_bwd(g, s, k, err, errlen);
    if (grp->kind == FUSE_NORM_QUANT && grp->nsteps == 2 && fwd) return gen_fwd(g, s, &g->s[grp->step_ids[1]], k, err, errlen);
    snprintf(err, errlen, "the norm family does not run %s (fusion %d, %d steps)", fp8c_op_info[s->op].name, grp->kind, grp->nsteps);
    return -1;
}
