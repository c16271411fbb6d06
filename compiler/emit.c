/* emit.c: Resolution -> out/plan.json and out/report.md, written atomically: everything is
 * built in a sibling temporary directory and swapped in with one rename, so a failed compile
 * never leaves a half-written or missing output directory behind. */
#include "fp8c.h"
#include "io.h"
#include "zero.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- JSON helpers ---- */

static void json_str(Buf *b, const char *s) {
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_printf(b, "%c", *p);
    }
    buf_puts(b, "\"");
}

static void json_key(Buf *b, int *first, const char *k) {
    buf_puts(b, *first ? "" : ", ");
    *first = 0;
    json_str(b, k);
    buf_puts(b, ": ");
}

static void json_tile(Buf *b, const Val *v) {
    if (!v->i)
        buf_puts(b, "\"tensor\"");
    else
        buf_printf(b, "[%lld, %lld]", (long long)v->i, (long long)v->j);
}

/* ---- memory ---- */

static double scale_bytes_of(const ModRes *mr) {
    const Module *mod = mr->mod;
    double bytes = 0;
    const Val *t = res_value(mr, F_Q(OP_W, QF_TILE));
    double per = res_value(mr, F_Q(OP_W, QF_SCALE_FORMAT))->i == DT_E8M0 ? 1 : 4;
    if (!t->i)
        bytes += per; /* one scale for the weight's quantized copy */
    else
        bytes += per * (double)((mod->n_out + t->i - 1) / t->i) * (double)((mod->k_in + t->j - 1) / t->j);
    for (int op = 0; op < OP_COUNT; op++)
        if (res_value(mr, F_Q(op, QF_SCALING))->i == SC_DELAYED)
            bytes += 4.0 * (double)res_value(mr, F_Q(op, QF_HISTORY))->i + 8; /* amax history + scale, scale_inv */
    return bytes;
}

void emit_memory_summary(const Resolution *r, MemorySummary *ms) {
    memset(ms, 0, sizeof *ms);
    int64_t total = r->model->total_params;
    int master = res_global(r, G_MASTER_WEIGHTS)->i == DT_FP32;
    double opt_bytes = dtype_bits((Dtype)res_global(r, G_OPTIMIZER_STATE)->i) / 8.0;
    for (int i = 0; i < r->nmods; i++) {
        const ModRes *mr = &r->mods[i];
        int64_t n = mr->mod->param_count;
        if (mr->params != DT_NONE) {
            ms->count[mr->params] += n;
            ms->param_bytes += (double)n * dtype_bits(mr->params) / 8.0;
            if (master && mr->params != DT_FP32) ms->master_bytes += 4.0 * (double)n;
        }
        if (mr->low_bit) ms->scale_bytes += scale_bytes_of(mr);
    }
    ms->optimizer_bytes = 2.0 * opt_bytes * (double)total;
    ms->total_bytes = ms->param_bytes + ms->scale_bytes + ms->master_bytes + ms->optimizer_bytes;
    ms->bf16_total_bytes = (2.0 + 4.0 + 8.0) * (double)total;
}

/* ---- plan.json ---- */

static void emit_quant(Buf *b, const ModRes *mr, Operand op) {
    char s[64];
    int first = 1;
    buf_puts(b, "{");
    json_key(b, &first, "format");
    json_str(b, dtype_names[res_value(mr, F_Q(op, QF_FORMAT))->i]);
    json_key(b, &first, "scaling");
    json_str(b, scaling_names[res_value(mr, F_Q(op, QF_SCALING))->i]);
    json_key(b, &first, "tile");
    json_tile(b, res_value(mr, F_Q(op, QF_TILE)));
    json_key(b, &first, "scale_format");
    json_str(b, dtype_names[res_value(mr, F_Q(op, QF_SCALE_FORMAT))->i]);
    const Val *v;
    if ((v = res_value(mr, F_Q(op, QF_HISTORY)))) {
        json_key(b, &first, "history");
        buf_printf(b, "%lld", (long long)v->i);
        json_key(b, &first, "algo");
        json_str(b, algo_names[res_value(mr, F_Q(op, QF_ALGO))->i]);
        json_key(b, &first, "margin");
        buf_printf(b, "%lld", (long long)res_value(mr, F_Q(op, QF_MARGIN))->i);
        json_key(b, &first, "interval");
        buf_printf(b, "%lld", (long long)res_value(mr, F_Q(op, QF_INTERVAL))->i);
    }
    if ((v = res_value(mr, F_Q(op, QF_SCALE)))) {
        json_key(b, &first, "scale");
        buf_puts(b, res_format_value(F_Q(op, QF_SCALE), v, s, sizeof s));
    }
    if ((v = res_value(mr, F_Q(op, QF_PARTIAL)))) {
        json_key(b, &first, "partial");
        json_str(b, partial_names[v->i]);
    }
    buf_puts(b, "}");
}

static void emit_module(Buf *b, const Diag *d, const Resolution *r, const ModRes *mr) {
    const Module *mod = mr->mod;
    char loc[512], fname[32];
    int first = 1;
    buf_puts(b, "    {");
    json_key(b, &first, "path");
    json_str(b, mod->path);
    json_key(b, &first, "kind");
    json_str(b, model_kind_name(r->model, mod->kind));
    json_key(b, &first, "params");
    json_str(b, dtype_names[mr->params]);
    json_key(b, &first, "compute");
    json_str(b, dtype_names[mr->compute]);
    json_key(b, &first, "param_count");
    buf_printf(b, "%lld", (long long)mod->param_count);
    json_key(b, &first, "param_shapes");
    buf_puts(b, "{");
    for (int k = 0; k < mod->nparams; k++) {
        const ParamTensor *pt = &mod->params[k];
        buf_printf(b, "%s\"%s\": [%lld", k ? ", " : "", pt->name, (long long)pt->shape[0]);
        if (pt->shape[1]) buf_printf(b, ", %lld", (long long)pt->shape[1]);
        buf_puts(b, "]");
    }
    buf_puts(b, "}");
    if (mod->tied) {
        json_key(b, &first, "tied_to");
        json_str(b, "embed.weight");
    }
    if (mod->kind == MK_LINEAR) {
        json_key(b, &first, "gemm");
        buf_printf(b, "{\"m\": %lld, \"n\": %lld, \"k\": %lld}", (long long)model_tokens_per_step(r->model),
                   (long long)mod->n_out, (long long)mod->k_in);
    }
    json_key(b, &first, "decided_by");
    buf_puts(b, "{");
    int dfirst = 1;
    for (int f = 0; f < NFIELDS; f++) {
        const FieldRes *fr = &mr->f[f];
        if (fr->win < 0) continue;
        json_key(b, &dfirst, field_name(f, fname, sizeof fname));
        json_str(b, res_contrib_loc(d, r, &fr->c[fr->win], 0, loc, sizeof loc));
    }
    buf_puts(b, "}");
    if (mr->low_bit) {
        json_key(b, &first, "quant");
        buf_puts(b, "{");
        for (int op = 0; op < OP_COUNT; op++) {
            buf_printf(b, "%s\"%s\": ", op ? ", " : "", operand_names[op]);
            emit_quant(b, mr, (Operand)op);
        }
        buf_puts(b, "}");
    }
    buf_puts(b, "}");
}

/* The unit's GPU execution: a kernel launch (with its bindings), a cuBLASLt GEMM (with the
 * generated kernel as fallback, when there is one), a memset, or nothing (a step no template runs:
 * a --target cpu plan). */
static void emit_unit_gpu(Buf *b, const Graph *g, const CgPlan *cp, int u) {
    const GStep *s = &g->s[g->u[u].steps[0]];
    buf_puts(b, "\"gpu\": {");
    if (g->u[u].kind == FUSE_NONE && s->op == OP_ZERO) {
        buf_puts(b, "\"memset\": true}");
        return;
    }
    int L = cp->unit_launch[u], first = 1;
    if (g->u[u].kind == FUSE_NONE && (s->op == OP_MATMUL_FWD || s->op == OP_MATMUL_BWD_DATA || s->op == OP_MATMUL_BWD_WEIGHT)) {
        buf_puts(b, "\"gemm\": \"cublaslt\"");
        first = 0;
    } else if (g->u[u].kind == FUSE_NONE && s->op == OP_QGEMM) {
        buf_printf(b, "\"gemm\": \"%s\"", L >= 0 ? cp->gemm : "cublaslt");
        first = 0;
    }
    if (L >= 0) {
        const CgLaunch *l = &cp->launches[L];
        const CgKernel *k = &cp->kernels[l->kernel];
        buf_printf(b, "%s\"kernel\": ", first ? "" : ", ");
        json_str(b, k->name);
        buf_puts(b, ", \"params\": [");
        for (int i = 0; i < k->nparams; i++) {
            if (i) buf_puts(b, ", ");
            if (l->bind[i] >= 0) json_str(b, g->t[l->bind[i]].name);
            else buf_printf(b, "\"@%s\"", fp8c_tensor_class_names[-1 - l->bind[i]]);
        }
        buf_puts(b, "]");
    }
    buf_puts(b, "}");
}

static void emit_kernels(Buf *b, const CgPlan *cp) {
    buf_printf(b, "  \"gemm\": \"%s\",\n  \"kernels\": [", cp->gemm);
    for (int i = 0; i < cp->nk; i++) {
        const CgKernel *k = &cp->kernels[i];
        buf_puts(b, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
        json_str(b, k->name);
        buf_printf(b, ", \"file\": \"kernels/%s.cu\", \"template\": \"%s\", \"entries\": [", k->name, k->family);
        for (int e = 0; e < k->nentries; e++) {
            const CgEntry *en = &k->entries[e];
            buf_printf(b, "%s{\"symbol\": \"%s\", \"grid\": [%d, %d, %d], \"block\": [%d, %d, %d], \"smem\": %d}", e ? ", " : "",
                       en->symbol, en->grid[0], en->grid[1], en->grid[2], en->block[0], en->block[1], en->block[2], en->smem);
        }
        buf_printf(b, "], \"scratch\": %lld, \"params\": [", (long long)k->scratch_bytes);
        for (int p = 0; p < k->nparams; p++) buf_printf(b, "%s\"%s\"", p ? ", " : "", k->params[p]);
        buf_puts(b, "], \"audit\": [");
        for (int a = 0; a < k->naudit; a++) {
            if (a) buf_puts(b, ", ");
            json_str(b, k->audit[a]);
        }
        buf_printf(b, "], \"constants\": %s}", k->constants.len ? k->constants.data : "{}");
    }
    buf_puts(b, "\n  ],\n");
}

/* "op", "module", "args", "ints", "floats" of one step (no braces). */
static void emit_step_fields(Buf *b, const Graph *g, const Resolution *r, const GStep *s) {
    char name[64];
    buf_printf(b, "\"op\": \"%s\"", fp8c_op_info[s->op].name);
    if (s->module >= 0) {
        buf_puts(b, ", \"module\": ");
        json_str(b, r->model->mods[s->module].path);
    }
    buf_puts(b, ", \"args\": {");
    int na = op_arg_count(s->op), af = 1;
    for (int k = 0; k < na; k++) {
        if (s->args[k] < 0) continue;
        buf_printf(b, "%s\"%s\": ", af ? "" : ", ", op_arg_name(s->op, k, name, sizeof name));
        json_str(b, g->t[s->args[k]].name);
        af = 0;
    }
    buf_puts(b, "}, \"ints\": {");
    for (int k = 0; k < op_int_count(s->op); k++)
        buf_printf(b, "%s\"%s\": %lld", k ? ", " : "", op_int_name(s->op, k, name, sizeof name), (long long)s->ints[k]);
    buf_puts(b, "}, \"floats\": {");
    for (int k = 0; k < op_float_count(s->op); k++)
        buf_printf(b, "%s\"%s\": %.9g", k ? ", " : "", op_float_name(s->op, k, name, sizeof name), s->floats[k]);
    buf_puts(b, "}");
}

static void emit_graph(Buf *b, const Graph *g, const Resolution *r, const CgPlan *cp) {
    buf_printf(b, "  \"program_inputs\": {\"tokens\": \"%s\", \"targets\": \"%s\", \"losses\": \"%s\"",
               g->t[g->tokens].name, g->t[g->targets].name, g->t[g->losses].name);
    if (g->n_expert_load) { /* MoE: tokens per expert of each MoE layer, read for the load-balance report */
        buf_puts(b, ", \"expert_load\": [");
        for (int i = 0; i < g->n_expert_load; i++) {
            buf_puts(b, i ? ", " : "");
            json_str(b, g->t[g->expert_load[i]].name);
        }
        buf_puts(b, "]");
    }
    buf_puts(b, "},\n");
    buf_puts(b, "  \"tensors\": [\n");
    for (int i = 0; i < g->nt; i++) {
        const GTensor *t = &g->t[i];
        buf_puts(b, "    {\"name\": ");
        json_str(b, t->name);
        buf_printf(b, ", \"dtype\": \"%s\", \"class\": \"%s\", \"shape\": [%lld", fp8c_tensor_dtype_names[t->dtype],
                   fp8c_tensor_class_names[t->cls], (long long)t->shape[0]);
        if (t->ndim > 1) buf_printf(b, ", %lld", (long long)t->shape[1]);
        buf_printf(b, "], \"offset\": %lld, \"bytes\": %lld", (long long)t->offset, (long long)t->bytes);
        if (t->init) {
            buf_puts(b, ", \"init\": ");
            json_str(b, t->init);
        }
        if (t->cls == TC_PARAM) buf_printf(b, ", \"weight_decay\": %s", t->weight_decay ? "true" : "false");
        if (t->desc) {
            buf_puts(b, ", \"desc\": ");
            json_str(b, t->desc);
        }
        buf_puts(b, i + 1 < g->nt ? "},\n" : "}\n");
    }
    buf_puts(b, "  ],\n");
    buf_puts(b, "  \"fusions\": {");
    for (int k = 1; k < FUSE_COUNT; k++) buf_printf(b, "%s\"%s\": %d", k > 1 ? ", " : "", fuse_names[k], g->nfused[k]);
    buf_printf(b, ", \"refused\": %d},\n", g->nrejected);
    if (cp) emit_kernels(b, cp);
    /* The launch schedule, section by section: a unit is one step, or a fused group with its
     * member steps in the order the CPU computes them. */
    buf_puts(b, "  \"program\": {\n");
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        buf_printf(b, "    \"%s\": [", fp8c_section_names[sec]);
        int first = 1;
        for (int u = 0; u < g->nu; u++) {
            const SUnit *su = &g->u[u];
            if (su->sec != (Section)sec) continue;
            buf_printf(b, "%s\n      {", first ? "" : ",");
            first = 0;
            if (su->kind == FUSE_NONE) {
                emit_step_fields(b, g, r, &g->s[su->steps[0]]);
                if (su->refresh) buf_puts(b, ", \"refresh\": true");
            } else {
                buf_printf(b, "\"fusion\": \"%s\", \"ops\": [", fuse_names[su->kind]);
                for (int m = 0; m < su->nsteps; m++) {
                    buf_puts(b, m ? ",\n        {" : "\n        {");
                    emit_step_fields(b, g, r, &g->s[su->steps[m]]);
                    buf_puts(b, "}");
                }
                buf_puts(b, "]");
            }
            if (cp) {
                buf_puts(b, ", ");
                emit_unit_gpu(b, g, cp, u);
            }
            buf_puts(b, "}");
        }
        buf_printf(b, "\n    ]%s\n", sec + 1 < SEC_COUNT ? "," : "");
    }
    buf_puts(b, "  },\n");
}

void emit_plan_json(Buf *b, const Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp) {
    const Model *m = r->model;
    const Policy *p = r->pol;
    const TrainCfg *t = &m->train;
    char loc[512], s[64];
    buf_printf(b, "{\n  \"version\": %d,\n  \"fp8c_version\": \"%s\",\n  \"target\": \"%s\",\n", FP8C_PLAN_VERSION,
               FP8C_VERSION, target_names[r->target]);
    buf_puts(b, "  \"model\": {\"name\": ");
    json_str(b, m->name);
    buf_printf(b, ", \"vocab_size\": %lld, \"d_model\": %lld, \"n_layers\": %lld, \"n_heads\": %lld, "
                  "\"n_kv_heads\": %lld, \"head_dim\": %lld, \"d_ff\": %lld, \"activation\": \"%s\", "
                  "\"norm\": \"%s\", \"norm_eps\": %.9g, \"positions\": \"%s\", \"rope_theta\": %.9g, "
                  "\"max_seq_len\": %lld, \"bias\": %s, \"tie_embeddings\": %s, \"attention_gate\": %s, "
                  "\"total_params\": %lld, \"active_params\": %lld, \"flops_per_token\": %.6g",
               (long long)m->vocab_size, (long long)m->d_model, (long long)m->n_layers, (long long)m->n_heads,
               (long long)m->n_kv_heads, (long long)m->head_dim, (long long)m->d_ff,
               model_activation_names[m->activation], model_norm_names[m->norm], m->norm_eps,
               model_positions_names[m->positions], m->rope_theta, (long long)m->max_seq_len,
               m->bias ? "true" : "false", m->tie_embeddings ? "true" : "false", m->attention_gate ? "true" : "false",
               (long long)m->total_params, (long long)m->active_params, model_flops_per_token(m));
    buf_printf(b, ", \"attention\": \"%s\"", model_attention_names[m->attention]);
    if (m->attention == ATTN_MLA)
        buf_printf(b, ", \"q_lora_rank\": %lld, \"kv_lora_rank\": %lld, \"qk_nope_head_dim\": %lld, \"qk_rope_head_dim\": %lld, "
                      "\"v_head_dim\": %lld",
                   (long long)m->q_lora_rank, (long long)m->kv_lora_rank, (long long)m->qk_nope_head_dim,
                   (long long)m->qk_rope_head_dim, (long long)m->v_head_dim);
    buf_printf(b, ", \"ffn\": \"%s\"", model_ffn_names[m->ffn]);
    if (m->ffn == FFN_MOE)
        buf_printf(b, ", \"n_routed_experts\": %lld, \"n_shared_experts\": %lld, \"top_k\": %lld, \"expert_d_ff\": %lld, "
                      "\"first_dense_layers\": %lld, \"scoring\": \"%s\", \"norm_topk_prob\": %s, \"routed_scaling_factor\": %.9g, "
                      "\"bias_update_speed\": %.9g, \"aux_loss_coef\": %.9g",
                   (long long)m->n_routed_experts, (long long)m->n_shared_experts, (long long)m->top_k, (long long)m->expert_d_ff,
                   (long long)m->first_dense_layers, model_scoring_names[m->scoring], m->norm_topk_prob ? "true" : "false",
                   m->routed_scaling_factor, m->bias_update_speed, m->aux_loss_coef);
    buf_puts(b, "},\n");
    buf_printf(b, "  \"train\": {\"micro_batch\": %lld, \"seq_len\": %lld, \"grad_accum\": %lld, ", (long long)t->micro_batch,
               (long long)t->seq_len, (long long)t->grad_accum);
    if (t->split > 1) buf_printf(b, "\"split\": %lld, ", (long long)t->split); /* absent: one pass (plans keep their hash) */
    buf_printf(b, "\"steps\": %lld, "
                  "\"optimizer\": {\"type\": \"adamw\", \"lr\": %.9g, \"betas\": [%.9g, %.9g], \"eps\": %.9g, "
                  "\"weight_decay\": %.9g}, \"schedule\": {\"warmup\": %lld, \"decay\": \"%s\", \"min_lr_ratio\": %.9g}, "
                  "\"grad_clip\": %.9g, \"eval_every\": %lld, \"seed\": %lld},\n",
               (long long)t->steps, t->opt.lr,
               t->opt.beta1, t->opt.beta2, t->opt.eps, t->opt.weight_decay, (long long)t->warmup,
               model_decay_names[t->decay], t->min_lr_ratio, t->grad_clip, (long long)t->eval_every, (long long)t->seed);
    buf_puts(b, "  \"policy\": {\"name\": ");
    json_str(b, p->name);
    buf_puts(b, ", \"file\": ");
    json_str(b, p->file);
    buf_puts(b, ", \"recipe\": ");
    json_str(b, p->recipe->name);
    buf_puts(b, "},\n  \"training_precision\": {");
    int first = 1;
    LossScalingMode lsm = (LossScalingMode)res_global(r, G_LS_MODE)->i;
    for (int g = 0; g < G_COUNT; g++) {
        if (g >= G_LS_SCALE && (lsm == LS_NONE || (lsm == LS_STATIC) != (g == G_LS_SCALE))) continue;
        json_key(b, &first, global_names[g]);
        const Val *v = res_global(r, (GlobalField)g);
        if (g <= G_LS_MODE)
            json_str(b, res_format_global((GlobalField)g, v, s, sizeof s));
        else
            buf_puts(b, res_format_global((GlobalField)g, v, s, sizeof s));
    }
    json_key(b, &first, "decided_by");
    buf_puts(b, "{");
    int dfirst = 1;
    for (int g = 0; g < G_COUNT; g++) {
        const GlobalRes *gr = &r->g[g];
        if (g >= G_LS_SCALE && (lsm == LS_NONE || (lsm == LS_STATIC) != (g == G_LS_SCALE))) continue;
        json_key(b, &dfirst, global_names[g]);
        json_str(b, res_contrib_loc(d, r, &gr->c[gr->n - 1], 0, loc, sizeof loc));
    }
    buf_puts(b, "}},\n");
    MemorySummary ms;
    emit_memory_summary(r, &ms);
    buf_printf(b, "  \"summary\": {\"modules\": %d, \"low_bit_modules\": %d, \"total_params\": %lld},\n", r->nmods,
               r->n_low_bit, (long long)m->total_params);
    buf_puts(b, "  \"memory\": {\"params_by_dtype\": {");
    int pfirst = 1;
    for (int dt = 0; dt < DT_COUNT; dt++)
        if (ms.count[dt]) {
            json_key(b, &pfirst, dtype_names[dt]);
            buf_printf(b, "%lld", (long long)ms.count[dt]);
        }
    buf_printf(b, "}, \"param_bytes\": %.0f, \"scale_bytes\": %.0f, \"master_weight_bytes\": %.0f, "
                  "\"optimizer_state_bytes\": %.0f, \"total_bytes\": %.0f, \"all_bf16_total_bytes\": %.0f},\n",
               ms.param_bytes, ms.scale_bytes, ms.master_bytes, ms.optimizer_bytes, ms.total_bytes, ms.bf16_total_bytes);
    if (g) {
        buf_puts(b, "  \"memory_plan\": {");
        for (int c = 0; c < TC_COUNT; c++)
            buf_printf(b, "\"%s\": %lld, ", c == TC_ACT ? "activations_peak" : fp8c_tensor_class_names[c], (long long)g->class_bytes[c]);
        buf_printf(b, "\"workspace\": %lld},\n", (long long)g->workspace_bytes);
        emit_graph(b, g, r, cp);
    }
    buf_puts(b, "  \"modules\": [\n");
    for (int i = 0; i < r->nmods; i++) {
        emit_module(b, d, r, &r->mods[i]);
        buf_puts(b, i + 1 < r->nmods ? ",\n" : "\n");
    }
    buf_puts(b, "  ]\n}\n");
}

/* ---- report.md ---- */

static void upper(char *out, size_t n, const char *s) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    out[i] = 0;
}

static const char *fmt_name(Dtype t, char *out, size_t n) {
    char u[16];
    upper(u, sizeof u, dtype_names[t]);
    if (t == DT_E4M3 || t == DT_E5M2)
        snprintf(out, n, "FP8_%s", u);
    else if (t == DT_E2M1)
        snprintf(out, n, "FP4_E2M1");
    else
        snprintf(out, n, "%s", u);
    return out;
}

static void quant_cell(const ModRes *mr, Operand op, char *out, size_t n) {
    char f[32], tile[32];
    const Val *t = res_value(mr, F_Q(op, QF_TILE));
    if (!t->i)
        snprintf(tile, sizeof tile, "per-tensor");
    else
        snprintf(tile, sizeof tile, "%lldx%lld", (long long)t->i, (long long)t->j);
    ScalingKind sk = (ScalingKind)res_value(mr, F_Q(op, QF_SCALING))->i;
    char how[48] = "";
    if (sk == SC_DELAYED)
        snprintf(how, sizeof how, " (history %lld, %s)", (long long)res_value(mr, F_Q(op, QF_HISTORY))->i,
                 algo_names[res_value(mr, F_Q(op, QF_ALGO))->i]);
    snprintf(out, n, "%s %s %s%s%s", fmt_name((Dtype)res_value(mr, F_Q(op, QF_FORMAT))->i, f, sizeof f), tile,
             scaling_names[sk], how, res_value(mr, F_Q(op, QF_SCALE_FORMAT))->i == DT_E8M0 ? " E8M0" : "");
}

enum { COL_W, COL_FWD, COL_BWD, COL_COMPUTE, NCOL };

static void cells(const ModRes *mr, char out[NCOL][96]) {
    char a[32], q[96];
    if (mr->low_bit) {
        quant_cell(mr, OP_W, q, sizeof q);
        snprintf(out[COL_W], 96, "%s -> %s", fmt_name(mr->params, a, sizeof a), q);
        quant_cell(mr, OP_X, out[COL_FWD], 96);
        quant_cell(mr, OP_DY, out[COL_BWD], 96);
        snprintf(out[COL_COMPUTE], 96, "%s tensor core", mr->compute == DT_FP4 ? "FP4" : "FP8");
        return;
    }
    const char *c = fmt_name(mr->compute, a, sizeof a);
    snprintf(out[COL_W], 96, "%s", mr->params == DT_NONE ? "N/A" : fmt_name(mr->params, q, sizeof q));
    snprintf(out[COL_FWD], 96, "%s%s", c, mr->mod->kind == MK_ATTENTION ? ", FP32 softmax" : "");
    snprintf(out[COL_BWD], 96, "%s", c);
    snprintf(out[COL_COMPUTE], 96, "%s", c);
}

typedef struct {
    const char *name;
    const char *globs[4];
} Component;

static const Component components[] = {
    {"Embeddings", {"embed", "pos_embed", NULL}},
    {"Q/K/V/O Linear", {"blocks.*.attn.q_proj", "blocks.*.attn.k_proj", "blocks.*.attn.v_proj", "blocks.*.attn.o_proj"}},
    {"Attention gate", {"blocks.*.attn.gate_proj", NULL}},
    {"Attention scores", {"blocks.*.attn.core", NULL}},
    {"MLA latent projections", {"blocks.*.attn.q_a_proj", "blocks.*.attn.q_b_proj", "blocks.*.attn.kv_a_proj", "blocks.*.attn.kv_b_proj"}},
    {"MLA latent norms", {"blocks.*.attn.q_a_norm", "blocks.*.attn.kv_a_norm", NULL}},
    {"FFN Linear", {"blocks.*.ffn.*_proj", NULL}},
    {"MoE router", {"blocks.*.ffn.router", NULL}},
    {"MoE routed experts", {"blocks.*.ffn.experts.*.*_proj", NULL}},
    {"MoE shared experts", {"blocks.*.ffn.shared.*_proj", NULL}},
    {"Norms", {"blocks.*.*_norm", "final_norm", NULL}},
    {"LM Head", {"lm_head", NULL}},
    {"Loss", {"loss", NULL}},
};

/* A table cell for a group: the common value, or each distinct value with its count. */
static void group_cell(Buf *b, const Resolution *r, const Component *c, int col) {
    enum { MAXV = 8 };
    char vals[MAXV][96];
    int counts[MAXV], nv = 0, other = 0;
    for (int i = 0; i < r->nmods; i++) {
        int in = 0;
        for (int g = 0; g < 4 && c->globs[g]; g++) in |= res_glob_match(c->globs[g], r->mods[i].mod->path);
        if (!in) continue;
        char cs[NCOL][96];
        cells(&r->mods[i], cs);
        int k = 0;
        while (k < nv && strcmp(vals[k], cs[col])) k++;
        if (k == nv) {
            if (nv == MAXV) { other++; continue; }
            snprintf(vals[nv], 96, "%s", cs[col]);
            counts[nv++] = 0;
        }
        counts[k]++;
    }
    for (int k = 0; k < nv; k++) {
        if (nv > 1)
            buf_printf(b, "%s%s x%d", k ? "; " : "", vals[k], counts[k]);
        else
            buf_puts(b, vals[k]);
    }
    if (other) buf_printf(b, "; %d more", other);
}

static int component_size(const Resolution *r, const Component *c) {
    int n = 0;
    for (int i = 0; i < r->nmods; i++) {
        int in = 0;
        for (int g = 0; g < 4 && c->globs[g]; g++) in |= res_glob_match(c->globs[g], r->mods[i].mod->path);
        n += in;
    }
    return n;
}

/* The routed and shared experts' share of the weights and their scales (MoE models). */
static void report_expert_memory(Buf *b, const Resolution *r) {
    if (r->model->ffn != FFN_MOE) return;
    static const char *const what[2] = {"routed experts", "shared experts"};
    static const char *const glob[2] = {"blocks.*.ffn.experts.*.*_proj", "blocks.*.ffn.shared.*_proj"};
    char n1[32], n2[32], n3[32];
    for (int k = 0; k < 2; k++) {
        int64_t n = 0;
        double bytes = 0, scales = 0;
        for (int i = 0; i < r->nmods; i++) {
            const ModRes *mr = &r->mods[i];
            if (!res_glob_match(glob[k], mr->mod->path)) continue;
            n += mr->mod->param_count;
            bytes += (double)mr->mod->param_count * dtype_bits(mr->params) / 8.0;
            if (mr->low_bit) scales += scale_bytes_of(mr);
        }
        if (n)
            buf_printf(b, "| of which %s | %s | %s (weight scales %s) |\n", what[k], fmt_count(n1, n), fmt_bytes(n2, bytes),
                       fmt_bytes(n3, scales));
    }
}

static void pct_row(Buf *b, const char *name, double base, double now) {
    char x[32], y[32], z[32];
    if (base > 0)
        buf_printf(b, "| %s | %s | %s | %.1f%% |\n", name, fmt_bytes(x, base), fmt_bytes(y, now), 100.0 * (base - now) / base);
    else
        buf_printf(b, "| %s | %s | %s | %s%s |\n", name, fmt_bytes(x, base), fmt_bytes(y, now), now > 0 ? "-" : "", fmt_bytes(z, now));
}

/* Architecture summary: attention and FFN kind, total vs active parameters, FLOPs per token. */
static void report_model_shape(Buf *b, const Resolution *r) {
    const Model *m = r->model;
    char n1[32], n2[32], n3[32];
    buf_puts(b, "## Model\n\n| | |\n|---|---|\n");
    if (m->attention == ATTN_MLA)
        buf_printf(b, "| Attention | MLA: %lld heads, q_lora_rank %lld%s, kv_lora_rank %lld, qk %lld + %lld (rope, one shared key per token), v %lld |\n",
                   (long long)m->n_heads, (long long)m->q_lora_rank, m->q_lora_rank ? "" : " (plain q_proj)", (long long)m->kv_lora_rank,
                   (long long)m->qk_nope_head_dim, (long long)m->qk_rope_head_dim, (long long)m->v_head_dim);
    else
        buf_printf(b, "| Attention | %lld query heads, %lld KV heads of %lld |\n", (long long)m->n_heads, (long long)m->n_kv_heads,
                   (long long)m->head_dim);
    if (m->ffn == FFN_MOE)
        buf_printf(b, "| FFN | MoE in layers %lld..%lld: %lld routed experts (top-%lld, %s scoring%s, scale %g) + %lld shared, expert d_ff %lld; "
                      "%lld dense layer%s of d_ff %lld |\n",
                   (long long)m->first_dense_layers, (long long)m->n_layers - 1, (long long)m->n_routed_experts, (long long)m->top_k,
                   model_scoring_names[m->scoring], m->norm_topk_prob ? ", normalized" : "", m->routed_scaling_factor,
                   (long long)m->n_shared_experts, (long long)m->expert_d_ff, (long long)m->first_dense_layers,
                   m->first_dense_layers == 1 ? "" : "s", (long long)m->d_ff);
    else
        buf_printf(b, "| FFN | dense, d_ff %lld (%s) |\n", (long long)m->d_ff, model_activation_names[m->activation]);
    int64_t embed = m->vocab_size * m->d_model;
    buf_printf(b, "| Parameters, total | %s |\n", fmt_count(n1, m->total_params));
    if (m->tie_embeddings) /* the tied table is also lm_head's weight: active either way */
        buf_printf(b, "| Parameters, active per token | %s |\n", fmt_count(n2, m->active_params));
    else
        buf_printf(b, "| Parameters, active per token | %s (%s without the input embedding table, a lookup) |\n",
                   fmt_count(n2, m->active_params), fmt_count(n3, m->active_params - embed));
    buf_printf(b, "| Forward FLOPs per token | %.4g GFLOP (matmuls at seq_len %lld; training ~3x) |\n", model_flops_per_token(m) / 1e9,
               (long long)m->train.seq_len);
    const TrainCfg *t = &m->train;
    int64_t split = t->split > 1 ? t->split : 1;
    buf_printf(b, "| Micro-batch | %lld x %lld tokens", (long long)(t->micro_batch * split), (long long)t->seq_len);
    if (split > 1) buf_printf(b, ", run as %lld chunks of %lld sequences", (long long)split, (long long)t->micro_batch);
    buf_printf(b, "%s%s |\n\n", t->split_why ? ": " : "", t->split_why ? t->split_why : "");
}

void emit_report_md(Buf *b, const Diag *d, const Resolution *r) {
    (void)d;
    const Model *m = r->model;
    const Policy *p = r->pol;
    char n1[32], n2[32], a[32], s[64];
    buf_printf(b, "# fp8c precision report: %s under policy %s\n\n", m->name, p->name);
    buf_printf(b, "Policy file `%s`, built on recipe `%s` (%s). Target `%s`.\n\n", p->file, p->recipe->name,
               p->recipe->source, target_names[r->target]);
    int n_fp4 = 0;
    for (int i = 0; i < r->nmods; i++) n_fp4 += r->mods[i].compute == DT_FP4;
    buf_printf(b, "**%d of %d modules run low-bit** (FP8: %d, FP4: %d). Parameters: %s.\n\n", r->n_low_bit, r->nmods,
               r->n_low_bit - n_fp4, n_fp4, fmt_count(n1, m->total_params));
    report_model_shape(b, r);
    buf_puts(b, "## Precision distribution\n\n");
    buf_puts(b, "| Component | Weights | Activations (Fwd) | Gradients (Bwd) | Compute | Modules |\n");
    buf_puts(b, "|-----------|---------|-------------------|-----------------|---------|---------|\n");
    for (size_t c = 0; c < sizeof components / sizeof components[0]; c++) {
        int n = component_size(r, &components[c]);
        if (!n) continue;
        buf_printf(b, "| **%s** | ", components[c].name);
        for (int col = 0; col < NCOL; col++) {
            group_cell(b, r, &components[c], col);
            buf_puts(b, " | ");
        }
        buf_printf(b, "%d |\n", n);
    }
    int master = res_global(r, G_MASTER_WEIGHTS)->i == DT_FP32;
    buf_printf(b, "| **Optimizer** | %s | N/A | N/A | FP32 AdamW, moments %s | - |\n\n",
               master ? "FP32 master weights" : "parameters updated in place",
               fmt_name((Dtype)res_global(r, G_OPTIMIZER_STATE)->i, a, sizeof a));
    LossScalingMode lsm = (LossScalingMode)res_global(r, G_LS_MODE)->i;
    buf_printf(b, "Loss in %s; gradient accumulation in %s; loss scaling: %s", fmt_name((Dtype)res_global(r, G_LOSS)->i, n1, sizeof n1),
               fmt_name((Dtype)res_global(r, G_GRAD_ACCUM)->i, n2, sizeof n2), loss_scaling_names[lsm]);
    if (lsm == LS_STATIC) buf_printf(b, " (scale %s)", res_format_global(G_LS_SCALE, res_global(r, G_LS_SCALE), s, sizeof s));
    if (lsm == LS_DYNAMIC)
        buf_printf(b, " (init %g, growth x%g every %lld steps, backoff x%g)", res_global(r, G_LS_INIT)->d,
                   res_global(r, G_LS_GROWTH)->d, (long long)res_global(r, G_LS_INTERVAL)->i, res_global(r, G_LS_BACKOFF)->d);
    buf_puts(b, ".\n\n## Memory layout\n\n| Storage dtype | Parameters | Bytes |\n|---|---|---|\n");
    MemorySummary ms;
    emit_memory_summary(r, &ms);
    for (int dt = 0; dt < DT_COUNT; dt++)
        if (ms.count[dt])
            buf_printf(b, "| %s | %s | %s |\n", fmt_name((Dtype)dt, a, sizeof a), fmt_count(n1, ms.count[dt]),
                       fmt_bytes(n2, (double)ms.count[dt] * dtype_bits((Dtype)dt) / 8.0));
    report_expert_memory(b, r);
    int64_t total = m->total_params;
    buf_puts(b, "\n| Component | All-BF16 (FP32 master + moments) | This policy | Savings |\n|---|---|---|---|\n");
    pct_row(b, "Model weights", 2.0 * (double)total, ms.param_bytes);
    pct_row(b, "Scale factors and scaling state", 0, ms.scale_bytes);
    pct_row(b, "Master weights", 4.0 * (double)total, ms.master_bytes);
    pct_row(b, "Optimizer states", 8.0 * (double)total, ms.optimizer_bytes);
    pct_row(b, "**Total**", ms.bf16_total_bytes, ms.total_bytes);
    buf_puts(b, "\nScale factors count the weights' quantization scales and, for delayed scaling, the amax "
                "histories; activation and gradient scales are transient and belong to the activation "
                "memory plan. Byte units are decimal (1 MB = 10^6 bytes).\n");
}

/* What a training step allocates, per class, from the memory plan (the table above counts the
 * model's state by formula; this one is what the runtime allocates). */
static void report_memory_plan(Buf *b, const Graph *g) {
    static const char *const why[TC_COUNT] = {
        "parameters in their storage dtype", "parameter gradients", "FP32 master weights", "AdamW moments",
        "one arena shared by liveness over the launch schedule (peak)", "FP8 scales, amax values and histories",
        "token ids and targets of one micro-batch",
        "the weights' FP8 copies written by the fused AdamW for the next step (persist across steps)"};
    int64_t total = 0;
    buf_puts(b, "\n## Memory plan (per device, one micro-batch)\n\n| Class | Bytes | What |\n|---|---|---|\n");
    char n1[32];
    for (int c = 0; c < TC_COUNT; c++) {
        if (!g->class_bytes[c]) continue;
        buf_printf(b, "| %s | %s | %s |\n", fp8c_tensor_class_names[c], fmt_bytes(n1, (double)g->class_bytes[c]), why[c]);
        total += g->class_bytes[c];
    }
    buf_printf(b, "| **Total** | %s | plus kernel scratch and the cuBLASLt workspace on a GPU |\n", fmt_bytes(n1, (double)total));
    buf_printf(b, "\nThe launch schedule has %d units (%d steps before fusion); both backends run it.\n", g->nu, g->ns);
}

/* `fp8c compile --ranks N`: what each of N data-parallel ranks holds, replicated and under
 * ZeRO-1 (runtime/dist.c shards optimizer state by zero.h's ownership: this is its table). */
static void report_ranks(Buf *b, const Graph *g) {
    int N = g->ranks, nu = 0;
    for (int u = 0; u < g->nu; u++) nu += g->u[u].sec == SEC_OPTIMIZER;
    int64_t *cost = calloc((size_t)nu + 1, sizeof *cost), *state = calloc((size_t)nu + 1, sizeof *state);
    int64_t *load = calloc((size_t)N, sizeof *load), *held = calloc((size_t)N, sizeof *held);
    int *owner = calloc((size_t)nu + 1, sizeof *owner);
    if (!cost || !state || !load || !held || !owner) goto out;
    int k = 0;
    for (int u = 0; u < g->nu; u++) {
        const SUnit *su = &g->u[u];
        if (su->sec != SEC_OPTIMIZER) continue;
        for (int i = 0; i < su->nsteps; i++) {
            const GStep *s = &g->s[su->steps[i]];
            if (s->op == OP_ADAMW) cost[k] += s->ints[0];
            for (int a = 0; a < op_arg_count(s->op); a++) {
                int t = s->args[a];
                if (t >= 0 && op_arg_writes(s->op, a) && (g->t[t].cls == TC_MASTER || g->t[t].cls == TC_OPT)) state[k] += g->t[t].bytes;
            }
        }
        k++;
    }
    if (zero_assign(cost, nu, N, owner, load)) goto out;
    for (int u = 0; u < nu; u++) held[owner[u]] += state[u];
    int64_t hi = 0, lo = INT64_MAX;
    for (int r = 0; r < N; r++) hi = held[r] > hi ? held[r] : hi, lo = held[r] < lo ? held[r] : lo;
    char n1[32], n2[32], n3[32], n4[32];
    int64_t rep_total = 0, zero_total = 0;
    buf_printf(b, "\n## Data parallel over %d ranks (per rank; `fp8c compile --ranks %d`)\n\n"
                  "| Class | Replicated | ZeRO-1 (`--zero 1`, largest shard) |\n|---|---|---|\n", N, N);
    for (int c = 0; c < TC_COUNT; c++) {
        int sharded = c == TC_MASTER || c == TC_OPT;
        int64_t z = g->class_bytes[c];
        if (sharded) { /* the largest rank's part of master + moments, split between the two by their plan ratio */
            int64_t both = g->class_bytes[TC_MASTER] + g->class_bytes[TC_OPT];
            z = both ? (int64_t)((double)hi * (double)g->class_bytes[c] / (double)both + 0.5) : 0;
        }
        if (!g->class_bytes[c]) continue;
        rep_total += g->class_bytes[c];
        zero_total += z;
        buf_printf(b, "| %s | %s | %s |\n", fp8c_tensor_class_names[c], fmt_bytes(n1, (double)g->class_bytes[c]), fmt_bytes(n2, (double)z));
    }
    buf_printf(b, "| **Total** | %s | %s |\n", fmt_bytes(n1, (double)rep_total), fmt_bytes(n2, (double)zero_total));
    buf_printf(b, "\nZeRO-1 shards master weights and moments by optimizer unit (a whole tensor, with its FP8 copies' quantization), "
                  "largest first to the least-loaded rank: the shards hold %s to %s of master + moments (%.1f%% of the replicated "
                  "%s). Gradients stay whole on every rank (ZeRO-1, not 2): each step reduces %s per rank with a rank-order "
                  "reduce-scatter and all-gather (2 (N-1)/N of the gradients each way). A global batch is train.grad_accum "
                  "micro-batches split over the ranks, so N must divide grad_accum.\n",
               fmt_bytes(n1, (double)lo), fmt_bytes(n2, (double)hi),
               100.0 * (double)hi / (double)(g->class_bytes[TC_MASTER] + g->class_bytes[TC_OPT] + !(g->class_bytes[TC_MASTER] + g->class_bytes[TC_OPT])),
               fmt_bytes(n3, (double)(g->class_bytes[TC_MASTER] + g->class_bytes[TC_OPT])), fmt_bytes(n4, (double)g->class_bytes[TC_GRAD]));
out:
    free(cost), free(state), free(load), free(held), free(owner);
}

/* ---- atomic directory output ---- */

static int write_file(Diag *d, const char *dir, const char *name, const Buf *b) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        diag_plain(d, "cannot create '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            diag_plain(d, "cannot write '%s': %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) || close(fd)) {
        diag_plain(d, "cannot flush '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int is_fp8c_output(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/plan.json", dir);
    return access(path, F_OK) == 0;
}

int emit_output_dir(Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp, const char *dir_in) {
    char dir[4000];
    snprintf(dir, sizeof dir, "%s", dir_in);
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = 0;
    struct stat st;
    int exists = lstat(dir, &st) == 0;
    if (exists && S_ISLNK(st.st_mode)) {
        diag_plain(d, "'%s' is a symbolic link; refusing to replace it (give the directory it points to)", dir);
        return -2;
    }
    if (exists && (!S_ISDIR(st.st_mode) || !is_fp8c_output(dir))) {
        diag_plain(d, "'%s' exists and is not an fp8c output directory (no plan.json); refusing to replace it", dir);
        return -2;
    }
    /* leftovers of a compile killed before its rename: DIR.tmp.PID.XXXXXX of a dead PID */
    char parent[4000], base[4000];
    const char *slash = strrchr(dir, '/');
    snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash == dir ? 1 : slash - dir) : 1, slash ? dir : ".");
    snprintf(base, sizeof base, "%s.tmp.", slash ? slash + 1 : dir);
    if (!strchr(base, '*')) io_sweep_stale(parent, base);
    Buf plan = {0}, report = {0};
    emit_plan_json(&plan, d, r, g, cp);
    emit_report_md(&report, d, r);
    if (g) report_memory_plan(&report, g);
    if (g && g->ranks > 1) report_ranks(&report, g);
    char tmp[4096], prefix[4050];
    snprintf(prefix, sizeof prefix, "%s.tmp.", dir);
    io_tmp_name(tmp, sizeof tmp, prefix);
    if (!mkdtemp(tmp)) {
        diag_plain(d, "cannot create a temporary directory next to '%s': %s", dir, strerror(errno));
        buf_free(&plan);
        buf_free(&report);
        return -1;
    }
    chmod(tmp, 0755);
    int rc = write_file(d, tmp, "plan.json", &plan) || write_file(d, tmp, "report.md", &report) ? -1 : 0;
    if (rc == 0 && cp && cp->nk) {
        char kdir[4200];
        snprintf(kdir, sizeof kdir, "%s/kernels", tmp);
        if (mkdir(kdir, 0755)) {
            diag_plain(d, "cannot create '%s': %s", kdir, strerror(errno));
            rc = -1;
        }
        for (int k = 0; rc == 0 && k < cp->nk; k++) {
            Buf src = {0};
            char name[256];
            cg_kernel_source(&src, d, r, g, cp, k);
            snprintf(name, sizeof name, "%s.cu", cp->kernels[k].name);
            rc = write_file(d, kdir, name, &src) ? -1 : 0;
            buf_free(&src);
        }
    }
    buf_free(&plan);
    buf_free(&report);
    if (rc == 0) {
        if (!exists) {
            if (rename(tmp, dir)) {
                diag_plain(d, "cannot rename '%s' to '%s': %s", tmp, dir, strerror(errno));
                rc = -1;
            }
        } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            /* tmp now holds the previous output; fall through to remove it */
        } else {
            diag_plain(d, "cannot replace '%s': %s", dir, strerror(errno));
            rc = -1;
        }
    }
    remove_tree(tmp);
    return rc;
}
