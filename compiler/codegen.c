/* codegen.c: from the lowered program to kernel instances.
 *
 * Three steps, each over the whole program: fuse (group steps that one kernel can do in one pass,
 * the groups of DESIGN.md section 2's "fuse" arrow), instantiate (ask the template family's
 * generator in cg_<family>.c for each group's instance: literal constants, entry points, launch
 * shape), and deduplicate (identical generated text is one kernel, whatever module uses it).
 * emit.c writes the result: kernels/NAME.cu and the plan's "kernels" and per-step "gpu" fields.
 *
 * Must not: run or compile kernels (the runtime does), or change the program's meaning: a fused
 * group computes exactly what its steps compute one after another on the CPU backend.
 */
#include "fp8c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cg_ctype(TensorDtype t) {
    switch (t) {
    case TD_F32: return "float";
    case TD_BF16: return "bf16";
    case TD_F16: return "f16";
    case TD_U8: return "u8";
    case TD_I32: return "int";
    }
    return "u8";
}

void cg_add_param(CgKernel *k, const Graph *g, const char *role, int tensor, int is_output) {
    if (tensor < 0) return;
    FP8C_ASSERT(k->nparams < CG_MAX_PARAMS);
    int i = k->nparams++;
    snprintf(k->params[i], sizeof k->params[i], "%s", role);
    snprintf(k->ptypes[i], sizeof k->ptypes[i], "%s", cg_ctype(g->t[tensor].dtype));
    k->param_tensor[i] = tensor;
    k->param_out[i] = is_output;
}

void cg_add_class_param(CgKernel *k, const char *role, TensorClass c, int is_output) {
    FP8C_ASSERT(k->nparams < CG_MAX_PARAMS);
    int i = k->nparams++;
    snprintf(k->params[i], sizeof k->params[i], "%s", role);
    snprintf(k->ptypes[i], sizeof k->ptypes[i], "u8");
    k->param_tensor[i] = -1 - (int)c;
    k->param_out[i] = is_output;
}

void cg_add_entry(CgKernel *k, const char *symbol, int gx, int gy, int gz, int bx, int by, int bz, int smem) {
    FP8C_ASSERT(k->nentries < CG_MAX_ENTRIES);
    CgEntry *e = &k->entries[k->nentries++];
    snprintf(e->symbol, sizeof e->symbol, "%s", symbol);
    e->grid[0] = gx, e->grid[1] = gy, e->grid[2] = gz;
    e->block[0] = bx, e->block[1] = by, e->block[2] = bz;
    e->smem = smem;
}

void cg_signature(Buf *b, const CgKernel *k) {
    for (int i = 0; i < k->nparams; i++)
        buf_printf(b, "%s%s *__restrict__ %s, ", k->param_out[i] ? "" : "const ", k->ptypes[i], k->params[i]);
    buf_puts(b, "void *ws, const Fp8cRunState *rs");
}

void cg_call_args(Buf *b, const CgKernel *k) {
    for (int i = 0; i < k->nparams; i++) buf_printf(b, "%s, ", k->params[i]);
    buf_puts(b, "ws, rs");
}

const char *cg_float(char *buf, size_t n, double v) {
    float f = (float)v;
    if (isinf(f)) snprintf(buf, n, "%s", f > 0 ? "3.402823466e38f" : "-3.402823466e38f");
    else snprintf(buf, n, "%.9gf", (double)f);
    if (!strpbrk(buf, ".eEn")) { /* "1f" is not a literal: make it "1.0f" */
        size_t l = strlen(buf);
        if (l + 2 < n) memmove(buf + l + 1, buf + l - 1, 2), buf[l - 1] = '.', buf[l] = '0';
    }
    return buf;
}

int cg_dt_bytes(const Graph *g, int t) { return t < 0 ? 0 : fp8c_tensor_dtype_bytes[g->t[t].dtype]; }

/* Callers type an absent optional pointer (nullptr) like a present sibling (bias like weight, up
 * like gate) so that the template's access-size checks hold. */
const char *cg_arg_type(const Graph *g, int t) { return t < 0 ? "float" : cg_ctype(g->t[t].dtype); }

int cg_pick_epl(int widest, int64_t mult) {
    for (int e = 8; e > 1; e /= 2)
        if (e * widest <= 16 && mult % e == 0) return e;
    return 1;
}

/* In place (t already bound): one pointer, since the signature marks every pointer __restrict__. */
const char *cg_bind(CgKernel *k, const Graph *g, const char *role, int t, int is_output) {
    if (t < 0) return "nullptr";
    for (int i = 0; i < k->nparams; i++)
        if (k->param_tensor[i] == t) return k->params[i];
    cg_add_param(k, g, role, t, is_output);
    return k->params[k->nparams - 1];
}

void cg_name_dtypes(CgKernel *k) {
    size_t n = strlen(k->name);
    for (int i = 0; i < k->nparams && n < sizeof k->name; i++) {
        const char *t = !strcmp(k->ptypes[i], "float") ? "f32" : !strcmp(k->ptypes[i], "int") ? "i32" : k->ptypes[i];
        n += (size_t)snprintf(k->name + n, sizeof k->name - n, "_%s", t);
    }
}

void cg_entry(CgKernel *k, const char *suffix, int gx, int gy, int threads, const char *call) {
    char sym[sizeof k->entries[0].symbol];
    snprintf(sym, sizeof sym, "%.140s%s", k->name, suffix);
    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d) %s(", threads, sym);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    %s;\n}\n", call);
    cg_add_entry(k, sym, gx, gy, 1, threads, 1, 1, 0);
}

int cg_grid_for(int64_t work, int per_block) {
    int64_t b = (work + per_block - 1) / per_block;
    return b < 1 ? 1 : b > CG_GRID_CAP ? CG_GRID_CAP : (int)b;
}

const char *const fuse_names[FUSE_COUNT] = {"none", "cast_transpose_amax", "norm_quantize", "act_quantize", "adamw_quantize",
                                            "scale_update_all", "crossentropy_fwd_bwd", "rope_attention"};

/* AdamW's betas and eps are plan constants that steps do not carry (cg_adamw.c reads them). */
extern double cg_adamw_beta1, cg_adamw_beta2, cg_adamw_eps;

/* ---- instantiation ---------------------------------------------------------------------------- */

static CgGenFn generator_of(const GStep *s) {
    switch (s->op) {
    case OP_EMBED_FWD:
    case OP_EMBED_BWD: return cg_gen_embed;
    case OP_RMSNORM_FWD:
    case OP_RMSNORM_BWD:
    case OP_LAYERNORM_FWD:
    case OP_LAYERNORM_BWD: return cg_gen_norm;
    case OP_GATE_FWD:
    case OP_GATE_BWD:
    case OP_SWIGLU_FWD:
    case OP_SWIGLU_BWD:
    case OP_GELU_FWD:
    case OP_GELU_BWD: return cg_gen_act;
    case OP_ADD_FWD:
    case OP_ACCUMULATE:
    case OP_BIAS_BWD:
    case OP_ROPE_FWD:
    case OP_ROPE_BWD: return cg_gen_elementwise;
    case OP_MATMUL_BWD_WEIGHT: return s->args[1] >= 0 ? cg_gen_elementwise : NULL; /* its dbias */
    case OP_XENT_FWD:
    case OP_XENT_BWD: return cg_gen_xent;
    case OP_QUANTIZE: return cg_gen_quantize;
    case OP_ADAMW: return cg_gen_adamw;
    case OP_SCALE_UPDATE: return cg_gen_scale_update;
    case OP_ATTENTION_FWD:
    case OP_ATTENTION_BWD: return cg_gen_attention;
    case OP_QGEMM: return cg_gen_gemm;
    case OP_MLA_SPLIT_FWD:
    case OP_MLA_SPLIT_BWD:
    case OP_MLA_ROPE_FWD:
    case OP_MLA_ROPE_BWD:
    case OP_MLA_ATTENTION_FWD:
    case OP_MLA_ATTENTION_BWD: return cg_gen_mla;
    case OP_MOE_ROUTE_FWD:
    case OP_MOE_ROUTE_BWD:
    case OP_MOE_PERMUTE_FWD:
    case OP_MOE_PERMUTE_BWD:
    case OP_MOE_COMBINE_FWD:
    case OP_MOE_COMBINE_BWD:
    case OP_MOE_BIAS_UPDATE: return cg_gen_moe;
    default: return NULL; /* matmul_* run on cuBLASLt, zero is a memset */
    }
}

static CgGenFn group_generator(const Graph *g, const CgGroup *grp) {
    switch (grp->kind) {
    case FUSE_CAST_TRANSPOSE: return cg_gen_quantize;
    case FUSE_NORM_QUANT: return cg_gen_norm;
    case FUSE_ACT_QUANT: return cg_gen_act;
    case FUSE_ADAMW_QUANT: return cg_gen_adamw;
    case FUSE_SCALE_UPDATE: return cg_gen_scale_update;
    case FUSE_XENT: return cg_gen_xent;
    case FUSE_ROPE_ATTENTION: return cg_gen_attention;
    default: return generator_of(&g->s[grp->step_ids[0]]);
    }
}

static void kernel_free(CgKernel *k) {
    buf_free(&k->body);
    buf_free(&k->constants);
}

/* Add k (taking ownership) unless an identical instance exists; returns its index. */
static int intern_kernel(CgPlan *cp, CgKernel *k) {
    for (int i = 0; i < cp->nk; i++) {
        CgKernel *o = &cp->kernels[i];
        if (strcmp(o->family, k->family) || o->body.len != k->body.len || memcmp(o->body.data, k->body.data, k->body.len)) continue;
        kernel_free(k);
        return i;
    }
    /* same name, different text (a generator's name missed a constant): keep both, apart */
    for (int i = 0, n = 2; i < cp->nk; i++)
        if (!strcmp(cp->kernels[i].name, k->name)) {
            char nm[sizeof k->name];
            snprintf(nm, sizeof nm, "%.150s_v%d", k->name, n++);
            memcpy(k->name, nm, sizeof nm);
            i = -1;
        }
    if (cp->nk == cp->capk) {
        cp->capk = cp->capk ? 2 * cp->capk : 64;
        cp->kernels = xrealloc(cp->kernels, (size_t)cp->capk * sizeof *cp->kernels);
    }
    cp->kernels[cp->nk] = *k;
    return cp->nk++;
}

static int add_launch(CgPlan *cp, const SUnit *u, CgKernel *k) {
    CgLaunch L = {.kind = u->kind, .nsteps = u->nsteps, .steps = u->steps};
    for (int i = 0; i < k->nparams; i++) L.bind[i] = k->param_tensor[i];
    L.kernel = intern_kernel(cp, k);
    if (cp->nl == cp->capl) {
        cp->capl = cp->capl ? 2 * cp->capl : 256;
        cp->launches = xrealloc(cp->launches, (size_t)cp->capl * sizeof *cp->launches);
    }
    cp->launches[cp->nl] = L;
    return cp->nl++;
}

/* plan.json must stay strict JSON: drop C float suffixes ("1.0f") a generator may have put in its
 * constants, outside strings. */
static void json_constants(Buf *c) {
    int in_str = 0;
    size_t w = 0;
    for (size_t r = 0; r < c->len; r++) {
        char ch = c->data[r];
        if (ch == '"' && (r == 0 || c->data[r - 1] != '\\')) in_str = !in_str;
        if (!in_str && (ch == 'f' || ch == 'F') && r > 0 && ((c->data[r - 1] >= '0' && c->data[r - 1] <= '9') || c->data[r - 1] == '.'))
            continue;
        c->data[w++] = ch;
    }
    c->len = w;
    if (c->data) c->data[w] = 0;
}

static int instantiate(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    memset(k, 0, sizeof *k);
    CgGenFn fn = group_generator(g, grp);
    if (!fn) {
        snprintf(err, errlen, "no template family runs %s", fp8c_op_info[g->s[grp->step_ids[0]].op].name);
        return -1;
    }
    if (fn(g, grp, k, err, errlen)) {
        kernel_free(k);
        return -1;
    }
    FP8C_ASSERT(k->nentries > 0 && k->name[0] && k->family[0]);
    json_constants(&k->constants);
    return 0;
}

static const char *step_module(const Resolution *r, const GStep *s) {
    return s->module >= 0 ? r->model->mods[s->module].path : "(program)";
}

int cg_check_group(const Graph *g, const CgGroup *grp, char *err, size_t errlen) {
    CgKernel k;
    if (instantiate(g, grp, &k, err, errlen)) return -1;
    kernel_free(&k);
    return 0;
}

int cg_codegen(Arena *a, Diag *d, const Resolution *r, const Graph *g, const char *gemm, CgPlan *cp) {
    memset(cp, 0, sizeof *cp);
    cp->gemm = gemm ? gemm : "cublaslt";
    cg_adamw_beta1 = r->model->train.opt.beta1;
    cg_adamw_beta2 = r->model->train.opt.beta2;
    cg_adamw_eps = r->model->train.opt.eps;
    cp->unit_launch = arena_alloc(a, (size_t)(g->nu ? g->nu : 1) * sizeof(int));
    char err[512];
    int nerr = 0;
    struct {
        OpKind op;
        int n, step;
        char msg[256];
    } errs[64];
    CgKernel k;
    for (int u = 0; u < g->nu; u++) {
        const SUnit *su = &g->u[u];
        cp->unit_launch[u] = -1;
        CgGroup grp = {.kind = su->kind, .nsteps = su->nsteps, .step_ids = su->steps};
        const GStep *s = &g->s[su->steps[0]];
        if (su->kind != FUSE_NONE) {
            /* the schedule placed only groups their generator accepted; the memory plan cannot
             * change that answer */
            if (instantiate(g, &grp, &k, err, sizeof err)) {
                diag_error(d, (Mark){0}, NULL, "internal: %s fusion at %s accepted before memory planning, refused after: %s",
                           fuse_names[su->kind], step_module(r, s), err);
                return -1;
            }
            cp->unit_launch[u] = add_launch(cp, su, &k);
            continue;
        }
        if (!generator_of(s)) continue;
        if (instantiate(g, &grp, &k, err, sizeof err)) {
            if (s->op == OP_QGEMM && strcmp(cp->gemm, "generated")) continue; /* cuBLASLt runs it; no fallback kernel */
            cp->nmissing++; /* the plan is still written: the CPU runs it, the GPU backend refuses it and says why */
            if (r->target == TGT_CPU) continue; /* a CPU plan may hold what no GPU template runs */
            /* one message per distinct reason, with how many steps share it */
            int seen = 0;
            for (int e = 0; e < nerr; e++)
                if (errs[e].op == s->op && !strcmp(errs[e].msg, err)) errs[e].n++, seen = 1;
            if (!seen && nerr < 64) {
                errs[nerr].op = s->op, errs[nerr].n = 1, errs[nerr].step = su->steps[0];
                snprintf(errs[nerr++].msg, sizeof errs[0].msg, "%s", err);
            }
            continue;
        }
        cp->unit_launch[u] = add_launch(cp, su, &k);
    }
    for (int e = 0; e < nerr; e++)
        diag_warning_plain(d, "%s: target %s: no CUDA kernel for %s, the GPU backend will refuse this plan: %s%s", step_module(r, &g->s[errs[e].step]),
                   target_names[r->target], fp8c_op_info[errs[e].op].name, errs[e].msg,
                   errs[e].n > 1 ? arena_printf(a, " (and %d more %s steps)", errs[e].n - 1, fp8c_op_info[errs[e].op].name) : "");
    /* modules per kernel, for the header comments */
    cp->mods_of = arena_alloc(a, (size_t)(cp->nk ? cp->nk : 1) * sizeof(int *));
    cp->nmods_of = arena_alloc(a, (size_t)(cp->nk ? cp->nk : 1) * sizeof(int));
    memset(cp->nmods_of, 0, (size_t)(cp->nk ? cp->nk : 1) * sizeof(int));
    int *count = calloc((size_t)(cp->nk ? cp->nk : 1), sizeof(int));
    for (int l = 0; l < cp->nl; l++) count[cp->launches[l].kernel] += cp->launches[l].nsteps;
    for (int kk = 0; kk < cp->nk; kk++) cp->mods_of[kk] = arena_alloc(a, (size_t)(count[kk] ? count[kk] : 1) * sizeof(int));
    free(count);
    for (int l = 0; l < cp->nl; l++) {
        const CgLaunch *L = &cp->launches[l];
        for (int i = 0; i < L->nsteps; i++) {
            int m = g->s[L->steps[i]].module, kk = L->kernel, dup = 0;
            for (int j = 0; j < cp->nmods_of[kk]; j++) dup |= cp->mods_of[kk][j] == m;
            if (!dup) cp->mods_of[kk][cp->nmods_of[kk]++] = m;
        }
    }
    return 0;
}

void cg_free(CgPlan *cp) {
    for (int i = 0; i < cp->nk; i++) kernel_free(&cp->kernels[i]);
    free(cp->kernels);
    free(cp->launches);
    memset(cp, 0, sizeof *cp);
}

/* ---- the emitted source ------------------------------------------------------------------------ */

/* The policy entries that decided the formats, scaling and tiles of the modules a kernel serves. */
static void policy_lines(Buf *b, const Diag *d, const Resolution *r, const CgPlan *cp, int kernel) {
    static const int qf[] = {QF_FORMAT, QF_SCALING, QF_TILE};
    char seen[24][160];
    int ns = 0;
    for (int i = 0; i < cp->nmods_of[kernel]; i++) {
        int m = cp->mods_of[kernel][i];
        if (m < 0 || !r->mods[m].low_bit) continue;
        for (int op = 0; op < OP_COUNT; op++)
            for (int q = 0; q < 3; q++) {
                const FieldRes *fr = &r->mods[m].f[F_Q(op, qf[q])];
                if (fr->win < 0) continue;
                char loc[160], fname[48], val[64], line[160];
                res_contrib_loc(d, r, &fr->c[fr->win], 0, loc, sizeof loc);
                snprintf(line, sizeof line, "%s: %s = %s", loc, field_name(F_Q(op, qf[q]), fname, sizeof fname),
                         res_format_value(F_Q(op, qf[q]), &fr->c[fr->win].v, val, sizeof val));
                int dup = 0;
                for (int k = 0; k < ns; k++) dup |= !strcmp(seen[k], line);
                if (dup || ns == 24) continue;
                snprintf(seen[ns++], sizeof seen[0], "%s", line);
            }
    }
    if (!ns) return;
    buf_puts(b, "// Policy entries that chose its formats, scaling and tiles:\n");
    for (int k = 0; k < ns; k++) buf_printf(b, "//   %s\n", seen[k]);
}

void cg_kernel_source(Buf *b, const Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp, int kernel) {
    const CgKernel *k = &cp->kernels[kernel];
    buf_printf(b, "// %s.cu: generated by fp8c %s from templates/%s.cuh; edits are overwritten by `fp8c compile`.\n//\n", k->name,
               FP8C_VERSION, k->family);
    buf_printf(b, "// Model %s, policy %s (%s), target %s.\n", r->model->name, r->pol->name, r->pol->file, target_names[r->target]);
    /* which ops it runs, and for which modules */
    int first_launch = -1, nuses = 0;
    for (int l = 0; l < cp->nl; l++)
        if (cp->launches[l].kernel == kernel) {
            if (first_launch < 0) first_launch = l;
            nuses++;
        }
    const CgLaunch *L = &cp->launches[first_launch];
    buf_printf(b, "// Runs: ");
    for (int i = 0; i < L->nsteps && i < 6; i++) buf_printf(b, "%s%s", i ? " + " : "", fp8c_op_info[g->s[L->steps[i]].op].name);
    if (L->nsteps > 6) buf_printf(b, " + ... (%d steps)", L->nsteps);
    if (L->kind != FUSE_NONE) buf_printf(b, "  [fusion: %s]", fuse_names[L->kind]);
    buf_printf(b, "\n// Launched %d time%s per training step, for the modules:\n//  ", nuses, nuses == 1 ? "" : "s");
    int col = 3;
    for (int i = 0; i < cp->nmods_of[kernel]; i++) {
        int m = cp->mods_of[kernel][i];
        const char *p = m >= 0 ? r->model->mods[m].path : "(program)";
        if (col + (int)strlen(p) > 98) buf_puts(b, "\n//  "), col = 3;
        buf_printf(b, " %s", p);
        col += 1 + (int)strlen(p);
    }
    buf_puts(b, "\n");
    policy_lines(b, d, r, cp, kernel);
    buf_printf(b, "// Constants: %s\n", k->constants.len ? k->constants.data : "{}");
    buf_puts(b, "// Tensors (first use):");
    for (int i = 0; i < k->nparams; i++) {
        int t = L->bind[i];
        if (t >= 0 && g->t[t].ndim > 1)
            buf_printf(b, "\n//   %-12s %s %s [%lld, %lld]", k->params[i], g->t[t].name, fp8c_tensor_dtype_names[g->t[t].dtype],
                       (long long)g->t[t].shape[0], (long long)g->t[t].shape[1]);
        else if (t >= 0)
            buf_printf(b, "\n//   %-12s %s %s [%lld]", k->params[i], g->t[t].name, fp8c_tensor_dtype_names[g->t[t].dtype],
                       (long long)g->t[t].shape[0]);
        else buf_printf(b, "\n//   %-12s the %s allocation", k->params[i], fp8c_tensor_class_names[-1 - t]);
    }
    buf_puts(b, "\n// Launch:");
    for (int e = 0; e < k->nentries; e++)
        buf_printf(b, " %s<<<(%d,%d,%d), (%d,%d,%d), %d>>>%s", k->entries[e].symbol, k->entries[e].grid[0], k->entries[e].grid[1],
                   k->entries[e].grid[2], k->entries[e].block[0], k->entries[e].block[1], k->entries[e].block[2], k->entries[e].smem,
                   e + 1 < k->nentries ? ";" : "");
    if (k->scratch_bytes) buf_printf(b, "\n// Scratch: %lld bytes", (long long)k->scratch_bytes);
    buf_puts(b, "\n\n// ==== templates/common.cuh ====\n");
    buf_puts(b, cg_template_text("common"));
    buf_printf(b, "\n// ==== templates/%s.cuh ====\n", k->family);
    const char *t = cg_template_text(k->family);
    buf_puts(b, t ? t : "#error \"unknown template family\"\n");
    buf_printf(b, "\n// ==== %s: entry points ====\n", k->name);
    buf_puts(b, k->body.data ? k->body.data : "");
}
