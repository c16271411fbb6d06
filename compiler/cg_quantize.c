/* cg_quantize.c: kernel instances of the templates/quantize.cuh family (see codegen.c for the
 * contract): one quantize step (FUSE_NONE) or a row-wise + column-wise pair of one input
 * (FUSE_CAST_TRANSPOSE).
 *
 * Each copy is checked and normalised here exactly as runtime/quant.c make_tiling sees it, then
 * placed in quantize_region when its tiles line up with a B x B register region (B = 128, 64 or
 * 32, the first that fits every copy) and in quantize_tiles (one block per tile) otherwise; the
 * conditions mirror the template's static_asserts. Must not: accept what the template cannot
 * compute bit-exactly (E2M1, mismatched dtypes), or emit a fused pair the region kernel cannot
 * hold (codegen then runs the two steps apart).
 */
#include "fp8c.h"

#include <string.h>

/* One quantize step, normalised (quant.c make_tiling on the view). */
typedef struct {
    int step;                  /* index into Graph.s */
    int R, C;                  /* input extents */
    int tr, tc;                /* tiles as written in the body (<= 0 folded to 0: whole dimension) */
    int fmt, mx, transpose;
    int RV, CV, TR, TC;        /* the view (C x R when transposed) and its effective tile */
    int nbr, nbc, single;      /* tile grid; single: one tile, scaled by the global amax */
    int codes, sinv, amax, inp, scale; /* tensor ids, -1 absent */
} QSpec;

static const char *fmt_name(int fmt) { return fmt == 1 ? "e5m2" : "e4m3"; }
static const char *fmt_macro(int fmt) { return fmt == 1 ? "FMT_E5M2" : "FMT_E4M3"; }
static int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }
static int is_float_dtype(TensorDtype t) { return t == TD_F32 || t == TD_BF16 || t == TD_F16; }

static int spec_of(const Graph *g, int step, QSpec *q, char *err, size_t errlen) {
    const GStep *s = &g->s[step];
    memset(q, 0, sizeof *q);
    if (s->op != OP_QUANTIZE) {
        snprintf(err, errlen, "the quantize family runs quantize steps, not %s", fp8c_op_info[s->op].name);
        return -1;
    }
    q->step = step;
    q->codes = s->args[0], q->sinv = s->args[1], q->amax = s->args[2], q->inp = s->args[3], q->scale = s->args[4];
    int64_t R = s->ints[0], C = s->ints[1], tr = s->ints[2], tc = s->ints[3];
    q->fmt = (int)s->ints[4], q->mx = (int)s->ints[5], q->transpose = (int)s->ints[6];
    if (R <= 0 || C <= 0 || R > (1 << 30) || C > (1 << 30) || R * C > ((int64_t)1 << 40)) {
        snprintf(err, errlen, "quantize of a %lld x %lld tensor: extents must be positive and fit in int", (long long)R, (long long)C);
        return -1;
    }
    if (q->fmt == 2) {
        snprintf(err, errlen, "E2M1 (FP4) quantization needs sm_100a; the quantize templates target sm_89/sm_90a");
        return -1;
    }
    if (q->fmt != 0 && q->fmt != 1) {
        snprintf(err, errlen, "unknown quantize format %d", q->fmt);
        return -1;
    }
    if ((q->mx != 0 && q->mx != 1) || (q->transpose != 0 && q->transpose != 1)) {
        snprintf(err, errlen, "quantize: mx and transpose must be 0 or 1");
        return -1;
    }
    if (q->codes < 0 || q->sinv < 0 || q->inp < 0) {
        snprintf(err, errlen, "quantize: codes, scale_inv and inp are required");
        return -1;
    }
    if (!is_float_dtype(g->t[q->inp].dtype) || g->t[q->codes].dtype != TD_U8 ||
        g->t[q->sinv].dtype != (q->mx ? TD_U8 : TD_F32) || (q->amax >= 0 && g->t[q->amax].dtype != TD_F32) ||
        (q->scale >= 0 && g->t[q->scale].dtype != TD_F32)) {
        snprintf(err, errlen, "quantize: unexpected dtypes (inp %s, codes %s, scale_inv %s; want a float input, u8 codes, %s scales)",
                 fp8c_tensor_dtype_names[g->t[q->inp].dtype], fp8c_tensor_dtype_names[g->t[q->codes].dtype],
                 fp8c_tensor_dtype_names[g->t[q->sinv].dtype], q->mx ? "u8 (E8M0)" : "f32");
        return -1;
    }
    q->R = (int)R, q->C = (int)C;
    q->tr = tr > 0 ? (int)(tr < (1 << 30) ? tr : (1 << 30)) : 0;
    q->tc = tc > 0 ? (int)(tc < (1 << 30) ? tc : (1 << 30)) : 0;
    q->RV = q->transpose ? q->C : q->R, q->CV = q->transpose ? q->R : q->C;
    q->TR = q->tr > 0 ? q->tr : q->RV, q->TC = q->tc > 0 ? q->tc : q->CV;
    q->nbr = ceil_div(q->RV, q->TR), q->nbc = ceil_div(q->CV, q->TC);
    q->single = q->nbr == 1 && q->nbc == 1;
    if ((int64_t)q->nbr * q->nbc > 0x7fffffff || (int64_t)ceil_div(R, 32) * ceil_div(C, 32) > 0x7fffffff) {
        snprintf(err, errlen, "quantize: %lld x %lld with %d x %d tiles needs more blocks than one launch has", (long long)R,
                 (long long)C, q->TR, q->TC);
        return -1;
    }
    /* the buffers must hold what quant.c writes */
    int64_t nscale = q->nbr * (int64_t)q->nbc;
    if (!q->mx && q->tr <= 0 && q->tc <= 0) nscale = 1;
    else if (!q->mx && q->tr > 1 && q->tr == q->tc) nscale = q->nbr * (int64_t)((q->nbc + 3) / 4 * 4);
    int64_t sbytes = nscale * (q->mx ? 1 : 4);
    if (g->t[q->codes].bytes < R * C || g->t[q->sinv].bytes < sbytes) {
        snprintf(err, errlen, "quantize: codes (%lld bytes) or scale_inv (%lld bytes) smaller than the %lld x %lld tiling needs",
                 (long long)g->t[q->codes].bytes, (long long)g->t[q->sinv].bytes, (long long)R, (long long)C);
        return -1;
    }
    return 0;
}

/* Does the copy fit quantize_region with a B x B region (templates/quantize.cuh QGroup)? */
static int region_fits(const QSpec *q, int B) {
    if (q->single) return 1;
    int XA = q->transpose ? q->TC : q->TR, XB = q->transpose ? q->TR : q->TC;
    if (XA >= q->R ? q->R > B : B % XA) return 0;
    if (XB >= q->C ? q->C > B : B % XB) return 0;
    int GA = XA >= q->R ? B : XA, GB = XB >= q->C ? B : XB;
    return GA == 1 ? GB % (B / 32) == 0 : GA % 8 == 0;
}

/* The QCopy<...> type text of a copy, or a placeholder for an absent one. */
static void qcopy_type(Buf *b, const QSpec *q, int R, int C, int transpose) {
    if (!q) {
        buf_printf(b, "QCopy<%d, %d, 0, 0, FMT_E4M3, 0>", transpose ? C : R, transpose ? R : C);
        return;
    }
    buf_printf(b, "QCopy<%d, %d, %d, %d, %s, %d>", q->RV, q->CV, q->tr, q->tc, fmt_macro(q->fmt), q->mx);
}

/* "r1x128e4m3" style fragment of a kernel name. */
static void copy_tag(char *out, size_t n, const QSpec *q) {
    snprintf(out, n, "%s%dx%d%s%s%s%s", q->transpose ? "c" : "r", q->tr, q->tc, fmt_name(q->fmt), q->mx ? "mx" : "",
             q->scale >= 0 ? "s" : "", q->amax >= 0 ? "a" : "");
}

static void copy_json(Buf *b, const char *key, const QSpec *q) {
    buf_printf(b, "\"%s\": {\"tile\": [%d, %d], \"format\": \"%s\", \"mx\": %d, \"given_scale\": %d, \"amax\": %d}", key, q->tr,
               q->tc, fmt_name(q->fmt), q->mx, q->scale >= 0, q->amax >= 0);
}

static void add_audit(CgKernel *k, const QSpec *q) {
    const char *a = q->fmt == 1 ? "cvt.rn.satfinite.e5m2x2.f32" : "cvt.rn.satfinite.e4m3x2.f32";
    for (int i = 0; i < k->naudit; i++)
        if (!strcmp(k->audit[i], a)) return;
    if (k->naudit < CG_MAX_AUDIT) k->audit[k->naudit++] = a;
}

/* Params in op-table order: outputs of the row copy, of the column copy, then the input and the
 * given scales. Role suffixes only when both copies are present. */
static void add_params(CgKernel *k, const Graph *g, const QSpec *row, const QSpec *col) {
    const char *sr = row && col ? "_r" : "", *sc = row && col ? "_c" : "";
    char nm[32];
    const QSpec *cp[2] = {row, col};
    const char *sfx[2] = {sr, sc};
    for (int i = 0; i < 2; i++) {
        if (!cp[i]) continue;
        snprintf(nm, sizeof nm, "codes%s", sfx[i]), cg_add_param(k, g, nm, cp[i]->codes, 1);
        snprintf(nm, sizeof nm, "scale_inv%s", sfx[i]), cg_add_param(k, g, nm, cp[i]->sinv, 1);
        snprintf(nm, sizeof nm, "amax%s", sfx[i]), cg_add_param(k, g, nm, cp[i]->amax, 1);
    }
    cg_add_param(k, g, "inp", (row ? row : col)->inp, 0);
    for (int i = 0; i < 2; i++) {
        if (!cp[i]) continue;
        snprintf(nm, sizeof nm, "scale%s", sfx[i]), cg_add_param(k, g, nm, cp[i]->scale, 0);
    }
}

/* The arguments of one copy in quantize_region's order: codes, scale_inv, amax. */
static void copy_args(Buf *b, const QSpec *q, const char *sfx) {
    if (!q) {
        buf_puts(b, "(u8 *)0, (float *)0, (float *)0, ");
        return;
    }
    buf_printf(b, "codes%s, scale_inv%s, %s%s, ", sfx, sfx, q->amax >= 0 ? "amax" : "(float *)0", q->amax >= 0 ? sfx : "");
}

static void scale_arg(Buf *b, const QSpec *q, const char *sfx) {
    if (q && q->scale >= 0) buf_printf(b, ", scale%s", sfx);
    else buf_puts(b, ", (const float *)0");
}

static int gen_region(const Graph *g, CgKernel *k, const QSpec *row, const QSpec *col, int B) {
    const QSpec *any = row ? row : col;
    int R = any->R, C = any->C, threads = 4 * B;
    int nblk = ceil_div(R, B) * ceil_div(C, B);
    int has_amax = (row && row->amax >= 0) || (col && col->amax >= 0);
    int single = (row && row->single) || (col && col->single);
    int finish = nblk > 1 && (single || has_amax);
    const char *tin = cg_ctype(g->t[any->inp].dtype);
    char tr[48], tcl[48];
    if (row) copy_tag(tr, sizeof tr, row);
    if (col) copy_tag(tcl, sizeof tcl, col);
    snprintf(k->family, sizeof k->family, "quantize");
    if (row && col) snprintf(k->name, sizeof k->name, "cast_transpose_%s_R%d_C%d_%s_%s_b%d", tin, R, C, tr, tcl, B);
    else snprintf(k->name, sizeof k->name, "quantize_%s_R%d_C%d_%s_b%d", tin, R, C, row ? tr : tcl, B);
    add_params(k, g, row, col);
    const char *sr = row && col ? "_r" : "", *sc = row && col ? "_c" : "";
    for (int ph = 0; ph < 1 + finish; ph++) {
        char sym[160];
        snprintf(sym, sizeof sym, "%s_%s", k->name, ph ? "finish" : "main");
        buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d, 1) %s(", threads, sym);
        cg_signature(&k->body, k);
        buf_printf(&k->body, ") {\n    quantize_region<%s, %d, %d, %d, ", tin, R, C, B);
        qcopy_type(&k->body, row, R, C, 0);
        buf_puts(&k->body, ", ");
        qcopy_type(&k->body, col, R, C, 1);
        buf_printf(&k->body, ", %s, %s, %s, %d>(\n        ", row ? "true" : "false", col ? "true" : "false",
                   has_amax ? "true" : "false", ph);
        copy_args(&k->body, row, sr);
        copy_args(&k->body, col, sc);
        buf_puts(&k->body, "inp");
        scale_arg(&k->body, row, sr);
        scale_arg(&k->body, col, sc);
        buf_puts(&k->body, ", ws);\n    (void)rs;\n}\n");
        cg_add_entry(k, sym, ph && !single ? 1 : nblk, 1, 1, threads, 1, 1, 0);
    }
    k->scratch_bytes = finish ? (int64_t)nblk * 4 : 0;
    buf_printf(&k->constants, "{\"R\": %d, \"C\": %d, \"input\": \"%s\", \"kernel\": \"quantize_region\", \"B\": %d", R, C, tin, B);
    if (row) buf_puts(&k->constants, ", "), copy_json(&k->constants, "row", row), add_audit(k, row);
    if (col) buf_puts(&k->constants, ", "), copy_json(&k->constants, "col", col), add_audit(k, col);
    buf_puts(&k->constants, "}");
    return 0;
}

/* The one-block-per-tile fallback for a single copy. */
static int gen_tiles(const Graph *g, CgKernel *k, const QSpec *q) {
    const char *tin = cg_ctype(g->t[q->inp].dtype);
    int ntiles = q->nbr * q->nbc, has_amax = q->amax >= 0;
    char tag[48];
    copy_tag(tag, sizeof tag, q);
    snprintf(k->family, sizeof k->family, "quantize");
    snprintf(k->name, sizeof k->name, "quantize_%s_R%d_C%d_%s_tiles", tin, q->R, q->C, tag);
    add_params(k, g, q->transpose ? NULL : q, q->transpose ? q : NULL);
    for (int ph = 0; ph < 1 + has_amax; ph++) {
        char sym[160];
        snprintf(sym, sizeof sym, "%s_%s", k->name, ph ? "finish" : "main");
        buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(256) %s(", sym);
        cg_signature(&k->body, k);
        buf_printf(&k->body, ") {\n    quantize_tiles<%s, %d, %d, ", tin, q->R, q->C);
        qcopy_type(&k->body, q, q->R, q->C, q->transpose);
        buf_printf(&k->body, ", %s, %s, %d, 256>(codes, scale_inv, %s, inp, %s, ws);\n    (void)rs;\n}\n",
                   q->transpose ? "true" : "false", has_amax ? "true" : "false", ph, has_amax ? "amax" : "(float *)0",
                   q->scale >= 0 ? "scale" : "(const float *)0");
        cg_add_entry(k, sym, ph ? 1 : ntiles, 1, 1, 256, 1, 1, 0);
    }
    k->scratch_bytes = has_amax ? (int64_t)ntiles * 4 : 0;
    buf_printf(&k->constants, "{\"R\": %d, \"C\": %d, \"input\": \"%s\", \"kernel\": \"quantize_tiles\", ", q->R, q->C, tin);
    copy_json(&k->constants, q->transpose ? "col" : "row", q);
    buf_puts(&k->constants, "}");
    add_audit(k, q);
    return 0;
}

/* Blocks that keep a large GPU busy: two waves of a 132-SM H100. */
#define ENOUGH_BLOCKS 264

/* The region size for the copies (one may be NULL): the largest B whose grid still fills the
 * GPU, else the smallest that fits (small tensors get more, smaller blocks); 0 if none fits. */
static int region_size(const QSpec *a, const QSpec *b) {
    static const int sizes[] = {128, 64, 32};
    const QSpec *any = a ? a : b;
    int best = 0;
    /* a single-tile copy of a tensor that fits one 128 region needs no finish pass there */
    if (((a && a->single) || (b && b->single)) && any->R <= 128 && any->C <= 128 && (!a || region_fits(a, 128)) &&
        (!b || region_fits(b, 128)))
        return 128;
    for (int i = 0; i < 3; i++) {
        int B = sizes[i];
        if ((a && !region_fits(a, B)) || (b && !region_fits(b, B))) continue;
        if ((int64_t)ceil_div(any->R, B) * ceil_div(any->C, B) >= ENOUGH_BLOCKS) return B;
        best = B;
    }
    return best;
}

int cg_gen_quantize(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    QSpec a, b;
    if (grp->kind == FUSE_NONE) {
        if (grp->nsteps != 1) {
            snprintf(err, errlen, "quantize: one step expected, got %d", grp->nsteps);
            return -1;
        }
        if (spec_of(g, grp->step_ids[0], &a, err, errlen)) return -1;
        int B = region_size(&a, NULL);
        if (B) return gen_region(g, k, a.transpose ? NULL : &a, a.transpose ? &a : NULL, B);
        return gen_tiles(g, k, &a);
    }
    if (grp->kind != FUSE_CAST_TRANSPOSE || grp->nsteps != 2) {
        snprintf(err, errlen, "the quantize family does not run %s groups", fuse_names[grp->kind]);
        return -1;
    }
    if (spec_of(g, grp->step_ids[0], &a, err, errlen) || spec_of(g, grp->step_ids[1], &b, err, errlen)) return -1;
    if (a.transpose || !b.transpose || a.inp != b.inp || a.R != b.R || a.C != b.C) {
        snprintf(err, errlen, "cast_transpose: want a row-wise and a column-wise quantize of the same R x C input");
        return -1;
    }
    int B = region_size(&a, &b);
    if (!B) {
        char ta[48], tb[48];
        copy_tag(ta, sizeof ta, &a), copy_tag(tb, sizeof tb, &b);
        snprintf(err, errlen, "cast_transpose: tiles %s / %s of a %d x %d input do not line up with a 128, 64 or 32 square region "
                 "(1 x T rows, a x b tiles with a a multiple of 8, or per-tensor); quantized separately", ta, tb, a.R, a.C);
        return -1;
    }
    return gen_region(g, k, &a, &b, B);
}
