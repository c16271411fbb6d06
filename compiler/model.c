/* model.c: model.yaml -> Model: validated hyper-parameters, training shape and the module
 * tree with the stable paths of DESIGN.md section 4 and every module's parameter shapes.
 * It knows the decoder-only transformer family and nothing about precision. */
#include "fp8c.h"

#include <string.h>

const char *const model_activation_names[] = {"swiglu", "gelu"};
const char *const model_norm_names[] = {"rmsnorm", "layernorm"};
const char *const model_positions_names[] = {"rope", "learned"};
const char *const model_decay_names[] = {"cosine", "linear", "constant"};
const char *const model_attention_names[] = {"mha", "mla"};
const char *const model_ffn_names[] = {"dense", "moe"};
const char *const model_scoring_names[] = {"softmax", "sigmoid"};

static const char *const top_keys[] = {"model", "train"};
static const char *const model_keys[] = {
    "name",      "vocab_size", "d_model",     "n_layers",       "n_heads",       "n_kv_heads",
    "head_dim",  "d_ff",       "activation",  "norm",           "norm_eps",      "positions",
    "rope_theta", "max_seq_len", "bias",      "tie_embeddings", "attention_gate",
    /* attention: mla */
    "attention", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    /* ffn: moe */
    "ffn", "n_routed_experts", "n_shared_experts", "top_k", "expert_d_ff", "first_dense_layers", "scoring",
    "norm_topk_prob", "routed_scaling_factor", "bias_update_speed", "aux_loss_coef"};
static const char *const mla_keys[] = {"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"};
static const char *const moe_keys[] = {"n_routed_experts", "n_shared_experts", "top_k", "expert_d_ff", "first_dense_layers",
                                       "scoring", "norm_topk_prob", "routed_scaling_factor", "bias_update_speed",
                                       "aux_loss_coef"};
static const char *const train_keys[] = {"micro_batch", "seq_len",   "grad_accum", "steps",
                                         "optimizer",   "schedule",  "grad_clip",  "eval_every",
                                         "seed"};
static const char *const opt_keys[] = {"type", "lr", "betas", "eps", "weight_decay"};
static const char *const sched_keys[] = {"warmup", "decay", "min_lr_ratio"};
static const char *const opt_types[] = {"adamw"};

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Read an optional integer key; keeps *out (the default) when absent. */
static int opt_int(Diag *d, const YamlNode *map, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const YamlNode *n = yml_get(map, key);
    return n ? yml_int(d, n, lo, hi, out) : 0;
}

static int opt_float(Diag *d, const YamlNode *map, const char *key, double lo, double hi, double *out) {
    const YamlNode *n = yml_get(map, key);
    return n ? yml_float(d, n, lo, hi, out) : 0;
}

static int opt_bool(Diag *d, const YamlNode *map, const char *key, int *out) {
    const YamlNode *n = yml_get(map, key);
    return n ? yml_bool(d, n, out) : 0;
}

static int opt_enum(Diag *d, const YamlNode *map, const char *key, const char *const *names, int nn,
                    int *out) {
    const YamlNode *n = yml_get(map, key);
    return n ? yml_enum(d, n, names, nn, out) : 0;
}

static int need(Diag *d, const YamlNode *map, const char *key, const char *where) {
    if (yml_get(map, key)) return 0;
    diag_error(d, map->mark, NULL, "%s: missing required key '%s'", where, key);
    return -1;
}

static int load_optimizer(Diag *d, const YamlNode *n, OptimizerCfg *o) {
    if (yml_expect(d, n, YN_MAP, "train.optimizer")) return -1;
    int bad = yml_check_keys(d, n, "train.optimizer", opt_keys, N(opt_keys));
    int type = 0;
    bad |= opt_enum(d, n, "type", opt_types, N(opt_types), &type);
    bad |= opt_float(d, n, "lr", 0, 10, &o->lr);
    bad |= opt_float(d, n, "eps", 0, 1, &o->eps);
    bad |= opt_float(d, n, "weight_decay", 0, 10, &o->weight_decay);
    const YamlNode *b = yml_get(n, "betas");
    if (b) {
        if (yml_expect(d, b, YN_SEQ, "train.optimizer.betas")) return -1;
        if (b->n != 2) {
            diag_error(d, b->mark, "write [beta1, beta2], e.g. [0.9, 0.95]", "betas needs 2 values, got %d", b->n);
            return -1;
        }
        bad |= yml_float(d, b->items[0], 0, 0.999999, &o->beta1);
        bad |= yml_float(d, b->items[1], 0, 0.999999, &o->beta2);
    }
    return bad ? -1 : 0;
}

static int load_train(Diag *d, const YamlNode *n, Model *m) {
    TrainCfg *t = &m->train;
    if (!n) return 0;
    if (yml_expect(d, n, YN_MAP, "train")) return -1;
    m->train_mark = n->mark;
    int bad = yml_check_keys(d, n, "train", train_keys, N(train_keys));
    bad |= opt_int(d, n, "micro_batch", 1, 1 << 16, &t->micro_batch);
    bad |= opt_int(d, n, "seq_len", 1, 1 << 20, &t->seq_len);
    bad |= opt_int(d, n, "grad_accum", 1, 1 << 16, &t->grad_accum);
    bad |= opt_int(d, n, "steps", 1, (int64_t)1 << 40, &t->steps);
    bad |= opt_int(d, n, "eval_every", 0, (int64_t)1 << 40, &t->eval_every);
    bad |= opt_int(d, n, "seed", 0, INT64_MAX, &t->seed);
    bad |= opt_float(d, n, "grad_clip", 0, 1e9, &t->grad_clip);
    const YamlNode *o = yml_get(n, "optimizer");
    if (o) bad |= load_optimizer(d, o, &t->opt);
    const YamlNode *s = yml_get(n, "schedule");
    if (s) {
        if (yml_expect(d, s, YN_MAP, "train.schedule")) return -1;
        bad |= yml_check_keys(d, s, "train.schedule", sched_keys, N(sched_keys));
        bad |= opt_int(d, s, "warmup", 0, (int64_t)1 << 40, &t->warmup);
        int decay = (int)t->decay;
        bad |= opt_enum(d, s, "decay", model_decay_names, N(model_decay_names), &decay);
        t->decay = (DecayKind)decay;
        bad |= opt_float(d, s, "min_lr_ratio", 0, 1, &t->min_lr_ratio);
    }
    return bad ? -1 : 0;
}

static void set_defaults(Model *m) {
    m->name = "model";
    m->activation = ACT_SWIGLU;
    m->norm = NORM_RMSNORM;
    m->positions = POS_ROPE;
    m->norm_eps = 1e-5;
    m->rope_theta = 10000.0;
    m->max_seq_len = 2048;
    m->tie_embeddings = 1;
    m->attention = ATTN_MHA;
    m->ffn = FFN_DENSE;
    m->n_shared_experts = 0;
    m->first_dense_layers = 0;
    m->scoring = SCORE_SOFTMAX;
    m->norm_topk_prob = 0;
    m->routed_scaling_factor = 1.0;
    m->bias_update_speed = 0.001; /* DeepSeek-V3 report section 4.2: gamma = 0.001 */
    m->aux_loss_coef = 0.0;
    TrainCfg *t = &m->train;
    t->micro_batch = 8;
    t->seq_len = 256;
    t->grad_accum = 1;
    t->split = 1;
    t->steps = 1000;
    t->warmup = 0;
    t->eval_every = 100;
    t->seed = 1337;
    t->opt = (OptimizerCfg){3e-4, 0.9, 0.95, 1e-8, 0.1};
    t->decay = DECAY_COSINE;
    t->min_lr_ratio = 0.1;
    t->grad_clip = 1.0;
}

/* ---- module tree ---- */

typedef struct {
    Arena *a;
    Model *m;
    int cap;
} Expander;

static Module *add(Expander *e, ModKind kind, int block, const char *path) {
    FP8C_ASSERT(e->m->nmods < e->cap);
    Module *mod = &e->m->mods[e->m->nmods++];
    memset(mod, 0, sizeof *mod);
    mod->kind = kind;
    mod->block = block;
    mod->path = path;
    mod->expert = -1;
    return mod;
}

static void add_param(Module *mod, const char *name, int64_t r, int64_t c) {
    FP8C_ASSERT(mod->nparams < 2);
    mod->params[mod->nparams++] = (ParamTensor){name, {r, c}};
    mod->param_count += r * (c ? c : 1);
}

static void add_linear(Expander *e, int block, const char *path, int64_t n_out, int64_t k_in) {
    Module *mod = add(e, MK_LINEAR, block, path);
    mod->n_out = n_out;
    mod->k_in = k_in;
    add_param(mod, "weight", n_out, k_in);
    if (e->m->bias) add_param(mod, "bias", n_out, 0);
}

static void add_norm(Expander *e, int block, const char *path, int64_t width) {
    Module *mod = add(e, MK_NORM, block, path);
    mod->n_out = mod->k_in = width;
    add_param(mod, "weight", width, 0);
    if (e->m->norm == NORM_LAYERNORM && e->m->bias) add_param(mod, "bias", width, 0);
}

static void add_mlp(Expander *e, int block, const char *prefix, int64_t d_ff, int expert) {
    Arena *a = e->a;
    int64_t d = e->m->d_model;
    int first = e->m->nmods;
    if (e->m->activation == ACT_SWIGLU) add_linear(e, block, arena_printf(a, "%s.gate_proj", prefix), d_ff, d);
    add_linear(e, block, arena_printf(a, "%s.up_proj", prefix), d_ff, d);
    add_linear(e, block, arena_printf(a, "%s.down_proj", prefix), d, d_ff);
    for (int k = first; k < e->m->nmods; k++) e->m->mods[k].expert = expert;
}

/* MLA (DeepSeek-V2 section 2.1): queries through an optional low-rank bottleneck (q_a_proj,
 * q_a_norm, q_b_proj) or a plain q_proj; keys and values through the latent kv_a_proj, whose
 * output is [kv_lora_rank latent | qk_rope_head_dim shared rope key], kv_a_norm on the latent,
 * and kv_b_proj up to per-head [k_nope | v]. */
static void add_mla(Expander *e, int i) {
    const Model *m = e->m;
    int64_t d = m->d_model, H = m->n_heads, qk = m->qk_nope_head_dim + m->qk_rope_head_dim;
#define P(s) arena_printf(e->a, "blocks.%d." s, i)
    if (m->q_lora_rank) {
        add_linear(e, i, P("attn.q_a_proj"), m->q_lora_rank, d);
        add_norm(e, i, P("attn.q_a_norm"), m->q_lora_rank);
        add_linear(e, i, P("attn.q_b_proj"), H * qk, m->q_lora_rank);
    } else {
        add_linear(e, i, P("attn.q_proj"), H * qk, d);
    }
    add_linear(e, i, P("attn.kv_a_proj"), m->kv_lora_rank + m->qk_rope_head_dim, d);
    add_norm(e, i, P("attn.kv_a_norm"), m->kv_lora_rank);
    add_linear(e, i, P("attn.kv_b_proj"), H * (m->qk_nope_head_dim + m->v_head_dim), m->kv_lora_rank);
    add(e, MK_ATTENTION, i, P("attn.core"));
    add_linear(e, i, P("attn.o_proj"), d, H * m->v_head_dim);
#undef P
}

static void add_moe(Expander *e, int i) {
    const Model *m = e->m;
    Module *router = add(e, MK_ROUTER, i, arena_printf(e->a, "blocks.%d.ffn.router", i));
    router->n_out = m->n_routed_experts;
    router->k_in = m->d_model;
    add_param(router, "weight", m->n_routed_experts, m->d_model);
    for (int x = 0; x < (int)m->n_routed_experts; x++)
        add_mlp(e, i, arena_printf(e->a, "blocks.%d.ffn.experts.%d", i, x), m->expert_d_ff, x);
    /* the shared experts are one MLP of n_shared_experts x expert_d_ff (DeepSeekMoE) */
    if (m->n_shared_experts) add_mlp(e, i, arena_printf(e->a, "blocks.%d.ffn.shared", i), m->n_shared_experts * m->expert_d_ff, -1);
}

int model_layer_is_moe(const Model *m, int layer) { return m->ffn == FFN_MOE && layer >= m->first_dense_layers; }

static void expand(Arena *a, Model *m) {
    Expander e = {a, m, 8 + (int)m->n_layers * (16 + 3 * (int)m->n_routed_experts)};
    m->mods = arena_alloc(a, (size_t)e.cap * sizeof *m->mods);
    int64_t d = m->d_model, q_dim = m->n_heads * m->head_dim, kv_dim = m->n_kv_heads * m->head_dim;
    Module *emb = add(&e, MK_EMBEDDING, -1, "embed");
    add_param(emb, "weight", m->vocab_size, d);
    if (m->positions == POS_LEARNED) add_param(add(&e, MK_POS_EMBEDDING, -1, "pos_embed"), "weight", m->max_seq_len, d);
    for (int i = 0; i < (int)m->n_layers; i++) {
#define P(s) arena_printf(a, "blocks.%d." s, i)
        add_norm(&e, i, P("attn_norm"), d);
        if (m->attention == ATTN_MLA) {
            add_mla(&e, i);
        } else {
            add_linear(&e, i, P("attn.q_proj"), q_dim, d);
            add_linear(&e, i, P("attn.k_proj"), kv_dim, d);
            add_linear(&e, i, P("attn.v_proj"), kv_dim, d);
            if (m->attention_gate) add_linear(&e, i, P("attn.gate_proj"), q_dim, d);
            add(&e, MK_ATTENTION, i, P("attn.core"));
            add_linear(&e, i, P("attn.o_proj"), d, q_dim);
        }
        add_norm(&e, i, P("ffn_norm"), d);
        if (model_layer_is_moe(m, i))
            add_moe(&e, i);
        else
            add_mlp(&e, i, P("ffn"), m->d_ff, -1);
#undef P
    }
    add_norm(&e, -1, "final_norm", d);
    Module *head = add(&e, MK_LINEAR, -1, "lm_head");
    head->n_out = m->vocab_size;
    head->k_in = d;
    head->tied = m->tie_embeddings;
    if (!head->tied) add_param(head, "weight", m->vocab_size, d);
    add(&e, MK_LOSS, -1, "loss");
    m->total_params = 0;
    int64_t routed = 0;
    for (int i = 0; i < m->nmods; i++) {
        m->total_params += m->mods[i].param_count;
        if (m->mods[i].expert >= 0) routed += m->mods[i].param_count;
    }
    /* every routed expert has the same shape, so top_k of n_routed_experts of them are active */
    m->active_params = m->total_params - (m->ffn == FFN_MOE ? routed / m->n_routed_experts * (m->n_routed_experts - m->top_k) : 0);
}

double model_flops_per_token(const Model *m) {
    double f = 0;
    for (int i = 0; i < m->nmods; i++) {
        const Module *mod = &m->mods[i];
        if (mod->kind != MK_LINEAR && mod->kind != MK_ROUTER) continue;
        double w = 2.0 * (double)mod->n_out * (double)mod->k_in;
        if (mod->expert >= 0) w *= (double)m->top_k / (double)m->n_routed_experts;
        f += w;
    }
    double qk = m->attention == ATTN_MLA ? (double)(m->qk_nope_head_dim + m->qk_rope_head_dim) : (double)m->head_dim;
    double v = m->attention == ATTN_MLA ? (double)m->v_head_dim : (double)m->head_dim;
    /* scores and PV: 2 (qk + v) flops per head per key, T/2 keys per query on average (causal) */
    f += (double)m->n_layers * (double)m->n_heads * 2.0 * (qk + v) * (double)m->train.seq_len / 2.0;
    return f;
}

/* The key node of `key` in map (for errors that point at the key, not its value). */
static const YamlNode *key_node(const YamlNode *map, const char *key) {
    for (int j = 0; map && j < map->n; j++)
        if (!strcmp(map->items[2 * j]->str, key)) return map->items[2 * j];
    return map;
}

/* Keys that only mean something under one setting of a switch are errors elsewhere, at the key. */
static int keys_only_with(Diag *d, const YamlNode *n, const char *const *keys, int nkeys, const char *setting) {
    int bad = 0;
    for (int i = 0; i < nkeys; i++) {
        if (!yml_get(n, keys[i])) continue;
        diag_error(d, key_node(n, keys[i])->mark, NULL, "model.%s applies only with %s", keys[i], setting);
        bad = 1;
    }
    return bad;
}

static int load_mla(Diag *d, const YamlNode *n, Model *m) {
    int kind = ATTN_MHA;
    if (opt_enum(d, n, "attention", model_attention_names, 2, &kind)) return -1;
    m->attention = (AttnKind)kind;
    m->attention_mark = yml_get(n, "attention") ? yml_get(n, "attention")->mark : n->mark;
    if (m->attention != ATTN_MLA) return keys_only_with(d, n, mla_keys, N(mla_keys), "attention: mla") ? -1 : 0;
    int bad = 0;
    static const char *const required[] = {"kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"};
    for (int i = 0; i < N(required); i++) {
        if (yml_get(n, required[i])) continue;
        diag_error(d, m->attention_mark, "MLA needs kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim (q_lora_rank: 0 for a plain q_proj)",
                   "attention: mla needs model.%s", required[i]);
        bad = 1;
    }
    if (bad) return -1;
    bad |= opt_int(d, n, "q_lora_rank", 0, 1 << 16, &m->q_lora_rank);
    bad |= opt_int(d, n, "kv_lora_rank", 1, 1 << 16, &m->kv_lora_rank);
    bad |= opt_int(d, n, "qk_nope_head_dim", 1, 4096, &m->qk_nope_head_dim);
    bad |= opt_int(d, n, "qk_rope_head_dim", 1, 4096, &m->qk_rope_head_dim);
    bad |= opt_int(d, n, "v_head_dim", 1, 4096, &m->v_head_dim);
    if (bad) return -1;
    static const char *const mha_only[] = {"n_kv_heads", "head_dim", "attention_gate"};
    for (int i = 0; i < N(mha_only); i++)
        if (yml_get(n, mha_only[i])) {
            diag_error(d, key_node(n, mha_only[i])->mark, "MLA's head widths are qk_nope_head_dim + qk_rope_head_dim (queries, keys) and v_head_dim (values); every head has its own key and value",
                       "model.%s does not apply with attention: mla", mha_only[i]);
            bad = 1;
        }
    if (m->positions != POS_ROPE) {
        diag_error(d, yml_get(n, "positions") ? yml_get(n, "positions")->mark : m->attention_mark,
                   "MLA applies decoupled RoPE to its qk_rope_head_dim part: positions: rope",
                   "attention: mla needs positions: rope");
        bad = 1;
    }
    if (m->qk_rope_head_dim % 2) {
        diag_error(d, yml_get(n, "qk_rope_head_dim")->mark, "RoPE rotates pairs of dimensions",
                   "qk_rope_head_dim %lld must be even", (long long)m->qk_rope_head_dim);
        bad = 1;
    }
    m->n_kv_heads = m->n_heads;
    m->head_dim = m->qk_nope_head_dim + m->qk_rope_head_dim;
    return bad ? -1 : 0;
}

static int load_moe(Diag *d, const YamlNode *n, Model *m) {
    int kind = FFN_DENSE;
    if (opt_enum(d, n, "ffn", model_ffn_names, 2, &kind)) return -1;
    m->ffn = (FfnKind)kind;
    m->ffn_mark = yml_get(n, "ffn") ? yml_get(n, "ffn")->mark : n->mark;
    if (m->ffn != FFN_MOE) return keys_only_with(d, n, moe_keys, N(moe_keys), "ffn: moe") ? -1 : 0;
    int bad = 0;
    static const char *const required[] = {"n_routed_experts", "top_k", "expert_d_ff"};
    for (int i = 0; i < N(required); i++) {
        if (yml_get(n, required[i])) continue;
        diag_error(d, m->ffn_mark, "a MoE FFN needs n_routed_experts, top_k and expert_d_ff", "ffn: moe needs model.%s", required[i]);
        bad = 1;
    }
    if (bad) return -1;
    int scoring = m->scoring;
    bad |= opt_int(d, n, "n_routed_experts", 1, 4096, &m->n_routed_experts);
    bad |= opt_int(d, n, "n_shared_experts", 0, 64, &m->n_shared_experts);
    bad |= opt_int(d, n, "top_k", 1, 4096, &m->top_k);
    bad |= opt_int(d, n, "expert_d_ff", 1, 1 << 20, &m->expert_d_ff);
    bad |= opt_int(d, n, "first_dense_layers", 0, 1024, &m->first_dense_layers);
    bad |= opt_enum(d, n, "scoring", model_scoring_names, 2, &scoring);
    bad |= opt_bool(d, n, "norm_topk_prob", &m->norm_topk_prob);
    bad |= opt_float(d, n, "routed_scaling_factor", 1e-6, 1e6, &m->routed_scaling_factor);
    bad |= opt_float(d, n, "bias_update_speed", 0, 1, &m->bias_update_speed);
    bad |= opt_float(d, n, "aux_loss_coef", 0, 1, &m->aux_loss_coef);
    m->scoring = (RouterScoring)scoring;
    if (bad) return -1;
    if (m->top_k > m->n_routed_experts) {
        diag_error(d, yml_get(n, "top_k")->mark, "each token picks top_k distinct routed experts",
                   "top_k (%lld) exceeds n_routed_experts (%lld)", (long long)m->top_k, (long long)m->n_routed_experts);
        bad = 1;
    }
    if (m->first_dense_layers > m->n_layers) {
        diag_error(d, yml_get(n, "first_dense_layers")->mark, NULL, "first_dense_layers (%lld) exceeds n_layers (%lld)",
                   (long long)m->first_dense_layers, (long long)m->n_layers);
        bad = 1;
    }
    if (m->activation != ACT_SWIGLU) {
        diag_error(d, yml_get(n, "activation") ? yml_get(n, "activation")->mark : m->ffn_mark,
                   "DeepSeekMoE experts are SwiGLU MLPs (gate, up, down)", "ffn: moe needs activation: swiglu");
        bad = 1;
    }
    return bad ? -1 : 0;
}

static int load_model_section(Diag *d, const YamlNode *n, Model *m) {
    if (yml_expect(d, n, YN_MAP, "model")) return -1;
    int bad = yml_check_keys(d, n, "model", model_keys, N(model_keys));
    static const char *const required[] = {"vocab_size", "d_model", "n_layers", "n_heads"};
    for (int i = 0; i < N(required); i++) bad |= need(d, n, required[i], "model");
    if (bad) return -1;
    const YamlNode *name = yml_get(n, "name");
    if (name) bad |= yml_str(d, name, &m->name);
    bad |= opt_int(d, n, "vocab_size", 2, 1 << 24, &m->vocab_size);
    bad |= opt_int(d, n, "d_model", 1, 1 << 16, &m->d_model);
    bad |= opt_int(d, n, "n_layers", 1, 1024, &m->n_layers);
    bad |= opt_int(d, n, "n_heads", 1, 1024, &m->n_heads);
    m->n_kv_heads = -1;
    m->head_dim = -1;
    bad |= opt_int(d, n, "n_kv_heads", 1, 1024, &m->n_kv_heads);
    bad |= opt_int(d, n, "head_dim", 1, 4096, &m->head_dim);
    bad |= opt_int(d, n, "d_ff", 1, 1 << 20, &m->d_ff);
    bad |= opt_int(d, n, "max_seq_len", 1, 1 << 20, &m->max_seq_len);
    int act = m->activation, norm = m->norm, pos = m->positions;
    bad |= opt_enum(d, n, "activation", model_activation_names, 2, &act);
    bad |= opt_enum(d, n, "norm", model_norm_names, 2, &norm);
    bad |= opt_enum(d, n, "positions", model_positions_names, 2, &pos);
    m->activation = (Activation)act;
    m->norm = (NormKind)norm;
    m->positions = (Positions)pos;
    bad |= opt_float(d, n, "norm_eps", 1e-30, 1, &m->norm_eps);
    bad |= opt_float(d, n, "rope_theta", 1, 1e12, &m->rope_theta);
    bad |= opt_bool(d, n, "bias", &m->bias);
    bad |= opt_bool(d, n, "tie_embeddings", &m->tie_embeddings);
    bad |= opt_bool(d, n, "attention_gate", &m->attention_gate);
    if (bad) return -1;
    bad |= load_mla(d, n, m);
    bad |= load_moe(d, n, m);
    if (bad) return -1;
    if (!yml_get(n, "d_ff") && !(m->ffn == FFN_MOE && m->first_dense_layers == 0)) {
        diag_error(d, n->mark, m->ffn == FFN_MOE ? "the first_dense_layers dense layers have an FFN of d_ff" : NULL,
                   "model: missing required key 'd_ff'");
        return -1;
    }
    if (m->attention == ATTN_MLA) return 0; /* head_dim and n_kv_heads do not apply (load_mla checked) */

    if (m->n_kv_heads < 0) m->n_kv_heads = m->n_heads;
    if (m->n_heads % m->n_kv_heads) {
        diag_error(d, yml_get(n, "n_kv_heads")->mark, "grouped-query attention shares each KV head among n_heads / n_kv_heads query heads",
                   "n_heads (%lld) is not a multiple of n_kv_heads (%lld)", (long long)m->n_heads,
                   (long long)m->n_kv_heads);
        bad = 1;
    }
    if (m->head_dim < 0) {
        if (m->d_model % m->n_heads) {
            diag_error(d, yml_get(n, "n_heads")->mark, "set head_dim explicitly, or pick n_heads dividing d_model",
                       "d_model (%lld) is not divisible by n_heads (%lld)", (long long)m->d_model,
                       (long long)m->n_heads);
            bad = 1;
        } else {
            m->head_dim = m->d_model / m->n_heads;
        }
    }
    if (!bad && m->positions == POS_ROPE && m->head_dim % 2) {
        const YamlNode *at = yml_get(n, "head_dim") ? yml_get(n, "head_dim") : yml_get(n, "n_heads");
        diag_error(d, at->mark, "RoPE rotates pairs of dimensions", "head_dim %lld must be even with positions: rope",
                   (long long)m->head_dim);
        bad = 1;
    }
    return bad ? -1 : 0;
}

int model_load(Arena *a, Diag *d, const YamlNode *root, Model *m) {
    memset(m, 0, sizeof *m);
    set_defaults(m);
    m->train_mark = root->mark;
    if (yml_expect(d, root, YN_MAP, "a model file")) return -1;
    int bad = yml_check_keys(d, root, "the model file", top_keys, N(top_keys));
    const YamlNode *mn = yml_get(root, "model");
    if (!mn) {
        diag_error(d, root->mark, "a model file has a 'model:' section (and optionally 'train:')",
                   "missing required key 'model'");
        return -1;
    }
    if (load_model_section(d, mn, m)) bad = 1;
    if (load_train(d, yml_get(root, "train"), m)) bad = 1;
    if (bad) return -1;
    const YamlNode *tn = yml_get(root, "train");
    if (!yml_get(tn, "seq_len") && m->train.seq_len > m->max_seq_len) m->train.seq_len = m->max_seq_len;
    if (m->train.micro_batch * m->train.seq_len > INT32_MAX) {
        diag_error(d, m->train_mark, NULL, "train.micro_batch x train.seq_len = %lld tokens per micro-batch; the limit is %d",
                   (long long)(m->train.micro_batch * m->train.seq_len), INT32_MAX);
        return -1;
    }
    if (m->train.seq_len > m->max_seq_len) {
        diag_error(d, yml_get(tn, "seq_len")->mark, NULL, "train.seq_len %lld exceeds model.max_seq_len %lld",
                   (long long)m->train.seq_len, (long long)m->max_seq_len);
        return -1;
    }
    if (m->train.warmup > m->train.steps) {
        const YamlNode *s = yml_get(tn, "schedule");
        diag_error(d, yml_get(s, "warmup") ? yml_get(s, "warmup")->mark : m->train_mark, NULL,
                   "schedule.warmup (%lld) is longer than train.steps (%lld)", (long long)m->train.warmup,
                   (long long)m->train.steps);
        return -1;
    }
    expand(a, m);
    return 0;
}

const char *model_kind_name(const Model *m, ModKind k) {
    switch (k) {
    case MK_EMBEDDING: return "embedding";
    case MK_POS_EMBEDDING: return "pos_embedding";
    case MK_NORM: return model_norm_names[m->norm];
    case MK_LINEAR: return "linear";
    case MK_ATTENTION: return "attention";
    case MK_ROUTER: return "router";
    case MK_LOSS: return "loss";
    }
    return "?";
}

int model_find(const Model *m, const char *path) {
    for (int i = 0; i < m->nmods; i++)
        if (!strcmp(m->mods[i].path, path)) return i;
    return -1;
}

int64_t model_tokens_per_step(const Model *m) { return m->train.micro_batch * m->train.seq_len; }
