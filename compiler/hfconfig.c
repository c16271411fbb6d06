/* hfconfig.c: a Hugging Face config.json as a model file. The config is JSON, which the YAML
 * loader reads with marks; this file maps its fields onto a model-file tree (the shape
 * model.yaml has) whose value nodes are the config's own nodes, so every error model_load
 * reports points at config.json:line:col. The mapping is documented in docs/model.md.
 *
 * Owns: which architectures and fields fp8c can take from Hugging Face (llama, gpt2, deepseek_v2/v3), and the
 * refusals of configurations whose math fp8c does not compute (rope_scaling, erf GELU, ...).
 * Must not: guess. A field fp8c cannot honour is an error, never silently dropped. */
#include "fp8c.h"

#include <string.h>

int hf_is_config(const YamlNode *root) { return root && root->kind == YN_MAP && yml_get(root, "model_type"); }

static int is_null(const YamlNode *n) {
    return !n || (n->kind == YN_SCALAR && !n->quoted && (!strcmp(n->str, "null") || !strcmp(n->str, "~") || !*n->str));
}

/* A scalar made here (a value fp8c derives), marked at the config node it comes from. */
static YamlNode *scalar(Arena *a, const char *text, Mark m) {
    YamlNode *n = arena_alloc(a, sizeof *n);
    n->kind = YN_SCALAR;
    n->str = arena_strdup(a, text);
    n->mark = m;
    return n;
}

typedef struct {
    Arena *a;
    YamlNode *map;
    int cap;
} MapBuilder;

static void put(MapBuilder *b, const char *key, YamlNode *v, Mark m) {
    if (!v) return;
    if (b->map->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        YamlNode **items = arena_alloc(b->a, (size_t)cap * 2 * sizeof *items);
        if (b->map->n) memcpy(items, b->map->items, (size_t)b->map->n * 2 * sizeof *items);
        b->map->items = items, b->cap = cap;
    }
    b->map->items[2 * b->map->n] = scalar(b->a, key, m);
    b->map->items[2 * b->map->n + 1] = v;
    b->map->n++;
}

static MapBuilder new_map(Arena *a, Mark m) {
    MapBuilder b = {a, arena_alloc(a, sizeof(YamlNode)), 0};
    b.map->kind = YN_MAP;
    b.map->mark = m;
    return b;
}

/* The config's value for key, or NULL when absent or null. */
static YamlNode *field(const YamlNode *root, const char *key) {
    YamlNode *n = yml_get(root, key);
    return is_null(n) ? NULL : n;
}

static int need(Diag *d, const YamlNode *root, const char *key, const char *arch) {
    if (field(root, key)) return 0;
    diag_error(d, root->mark, NULL, "a %s config.json needs \"%s\"", arch, key);
    return -1;
}

/* A string field that must be one of the values fp8c computes. */
static int must_be(Diag *d, const YamlNode *root, const char *key, const char *const *ok, int nok, const char *why) {
    const YamlNode *n = field(root, key);
    const char *s;
    if (!n) return 0;
    if (yml_str(d, n, &s)) return -1;
    for (int i = 0; i < nok; i++)
        if (!strcmp(s, ok[i])) return 0;
    diag_error(d, n->mark, why, "\"%s\": \"%s\" is not supported", key, s);
    return -1;
}

static int must_be_bool(Diag *d, const YamlNode *root, const char *key, int want, const char *why) {
    const YamlNode *n = field(root, key);
    int v;
    if (!n) return 0;
    if (yml_bool(d, n, &v)) return -1;
    if (v == want) return 0;
    diag_error(d, n->mark, why, "\"%s\": %s is not supported", key, v ? "true" : "false");
    return -1;
}

static int llama(Diag *d, const YamlNode *root, MapBuilder *m) {
    static const char *const req[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"};
    int bad = 0;
    for (int i = 0; i < 5; i++) bad |= need(d, root, req[i], "llama");
    static const char *const silu[] = {"silu"};
    bad |= must_be(d, root, "hidden_act", silu, 1, "fp8c's SwiGLU FFN is silu(gate) * up");
    const YamlNode *rs = field(root, "rope_scaling");
    if (rs) {
        diag_error(d, rs->mark, "fp8c computes plain RoPE (theta^(-2i/head_dim)); remove rope_scaling or set it to null",
                   "\"rope_scaling\" is not supported");
        bad = 1;
    }
    const YamlNode *ab = field(root, "attention_bias"), *mb = field(root, "mlp_bias");
    int av = 0, mv = 0;
    if (ab && yml_bool(d, ab, &av)) bad = 1;
    if (mb && yml_bool(d, mb, &mv)) bad = 1;
    if (!bad && av != mv) {
        diag_error(d, (ab ? ab : mb)->mark, "fp8c's 'bias' puts a bias on every linear: set both the same",
                   "attention_bias (%s) and mlp_bias (%s) differ", av ? "true" : "false", mv ? "true" : "false");
        bad = 1;
    }
    if (bad) return -1;
    Mark at = yml_get(root, "model_type")->mark;
    put(m, "vocab_size", field(root, "vocab_size"), at);
    put(m, "d_model", field(root, "hidden_size"), at);
    put(m, "n_layers", field(root, "num_hidden_layers"), at);
    put(m, "n_heads", field(root, "num_attention_heads"), at);
    put(m, "n_kv_heads", field(root, "num_key_value_heads"), at);
    put(m, "head_dim", field(root, "head_dim"), at);
    put(m, "d_ff", field(root, "intermediate_size"), at);
    put(m, "activation", scalar(m->a, "swiglu", at), at);
    put(m, "norm", scalar(m->a, "rmsnorm", at), at);
    put(m, "norm_eps", field(root, "rms_norm_eps"), at);
    put(m, "positions", scalar(m->a, "rope", at), at);
    put(m, "rope_theta", field(root, "rope_theta"), at);
    put(m, "max_seq_len", field(root, "max_position_embeddings"), at);
    put(m, "bias", (YamlNode *)(ab ? ab : mb), at);
    /* transformers' LlamaConfig default: tie_word_embeddings false */
    put(m, "tie_embeddings", field(root, "tie_word_embeddings") ? field(root, "tie_word_embeddings") : scalar(m->a, "false", at), at);
    return 0;
}

static int gpt2(Diag *d, const YamlNode *root, MapBuilder *m) {
    static const char *const req[] = {"vocab_size", "n_embd", "n_layer", "n_head"};
    int bad = 0;
    for (int i = 0; i < 4; i++) bad |= need(d, root, req[i], "gpt2");
    static const char *const tanh_gelu[] = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"};
    bad |= must_be(d, root, "activation_function", tanh_gelu, 3,
                   "fp8c's GELU is the tanh approximation (gelu_new); the erf GELU would give other logits");
    bad |= must_be_bool(d, root, "scale_attn_weights", 1, "fp8c scales attention scores by 1/sqrt(head_dim)");
    bad |= must_be_bool(d, root, "scale_attn_by_inverse_layer_idx", 0, "fp8c scales attention scores by 1/sqrt(head_dim) only");
    if (bad) return -1;
    Mark at = yml_get(root, "model_type")->mark;
    YamlNode *ff = field(root, "n_inner");
    if (!ff) { /* GPT-2: n_inner null means 4 * n_embd */
        int64_t e;
        if (yml_int(d, field(root, "n_embd"), 1, 1 << 16, &e)) return -1;
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)(4 * e));
        ff = scalar(m->a, buf, field(root, "n_embd")->mark);
    }
    put(m, "vocab_size", field(root, "vocab_size"), at);
    put(m, "d_model", field(root, "n_embd"), at);
    put(m, "n_layers", field(root, "n_layer"), at);
    put(m, "n_heads", field(root, "n_head"), at);
    put(m, "d_ff", ff, at);
    put(m, "activation", scalar(m->a, "gelu", at), at);
    put(m, "norm", scalar(m->a, "layernorm", at), at);
    put(m, "norm_eps", field(root, "layer_norm_epsilon"), at);
    put(m, "positions", scalar(m->a, "learned", at), at);
    put(m, "max_seq_len", field(root, "n_positions"), at);
    put(m, "bias", scalar(m->a, "true", at), at);
    put(m, "tie_embeddings", field(root, "tie_word_embeddings"), at);
    return 0;
}

/* ---- DeepSeek-V2 / V3 (MLA + DeepSeekMoE) ----
 * Checked against transformers' modeling_deepseek_v3.py / modeling_deepseek_v2.py and DeepSeek-V3's
 * inference/model.py (docs/model.md lists the mapping and each refusal with its reason). */

static int refuse(Diag *d, const YamlNode *n, const char *why, const char *fmt, const char *key) {
    diag_error(d, n->mark, why, fmt, key);
    return -1;
}

/* An integer field (absent or null: dflt, which < 0 means "required"). */
static int int_field(Diag *d, const YamlNode *root, const char *key, int64_t dflt, int64_t *out) {
    const YamlNode *n = field(root, key);
    if (!n) {
        *out = dflt;
        return 0;
    }
    return yml_int(d, n, 0, INT64_C(1) << 40, out);
}

/* A string field with a default when absent. */
static int str_field(Diag *d, const YamlNode *root, const char *key, const char *dflt, const char **out) {
    const YamlNode *n = field(root, key);
    *out = dflt;
    return n ? yml_str(d, n, out) : 0;
}

static int deepseek(Diag *d, const YamlNode *root, MapBuilder *m, int v3) {
    const char *arch = v3 ? "deepseek_v3" : "deepseek_v2";
    /* shapes have no default fp8c would trust: transformers' defaults are the 671B / 236B model's */
    static const char *const req[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                      "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "first_k_dense_replace",
                                      "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"};
    int bad = 0;
    for (size_t i = 0; i < sizeof req / sizeof *req; i++) bad |= need(d, root, req[i], arch);
    /* q_lora_rank and n_shared_experts: null is meaningful (no q-LoRA, no shared experts), absent
     * would be transformers' 671B default: the key must be there */
    static const char *const present[] = {"q_lora_rank", "n_shared_experts"};
    for (int i = 0; i < 2; i++)
        if (!yml_get(root, present[i])) {
            diag_error(d, root->mark, "null means none; transformers' default is the full-size model's", "a %s config.json needs \"%s\"",
                       arch, present[i]);
            bad = 1;
        }
    if (bad) return -1;
    static const char *const silu[] = {"silu"};
    bad |= must_be(d, root, "hidden_act", silu, 1, "fp8c's SwiGLU FFN is silu(gate) * up");
    bad |= must_be_bool(d, root, "attention_bias", 0, "fp8c's MLA projections have no biases");
    bad |= must_be_bool(d, root, "mlp_bias", 0, "fp8c's MoE and dense FFN projections have no biases");
    /* rope_interleave false: transformers rotates halves of stored weights; fp8c pairs (2i, 2i+1) */
    bad |= must_be_bool(d, root, "rope_interleave", 1, "fp8c rotates interleaved pairs (2i, 2i+1), the order DeepSeek's weights are stored in");
    const YamlNode *rs = field(root, "rope_scaling");
    if (rs) bad |= refuse(d, rs, "fp8c computes plain RoPE (theta^(-2i/qk_rope_head_dim)) with softmax scale 1/sqrt(qk head width), not YaRN "
                          "(frequency interpolation and mscale); set rope_scaling to null", "\"%s\" is not supported", "rope_scaling");
    int64_t kvh, heads, mtp, freq, ngroup, tgroup, rope, hd;
    const YamlNode *hn = field(root, "num_key_value_heads");
    bad |= int_field(d, root, "num_attention_heads", 0, &heads);
    bad |= int_field(d, root, "num_key_value_heads", heads, &kvh);
    if (!bad && kvh != heads)
        bad |= refuse(d, hn, "MLA's keys and values come per head from kv_b_proj; transformers repeats KV heads only when this differs",
                      "\"%s\" must equal num_attention_heads", "num_key_value_heads");
    bad |= int_field(d, root, "num_nextn_predict_layers", 0, &mtp);
    if (!bad && mtp > 0)
        bad |= refuse(d, field(root, "num_nextn_predict_layers"),
                      "fp8c has no multi-token-prediction module (transformers drops those layers); set it to 0", "\"%s\" > 0 (MTP) is not supported",
                      "num_nextn_predict_layers");
    /* transformers takes the RoPE frequencies over config.head_dim, which its DeepSeek configs
     * set to qk_rope_head_dim */
    bad |= int_field(d, root, "qk_rope_head_dim", 0, &rope);
    bad |= int_field(d, root, "head_dim", rope, &hd);
    if (!bad && hd != rope)
        bad |= refuse(d, field(root, "head_dim"), "fp8c turns the rope part at theta^(-2i/qk_rope_head_dim); remove head_dim or set it to qk_rope_head_dim",
                      "\"%s\" must equal qk_rope_head_dim", "head_dim");
    bad |= int_field(d, root, "moe_layer_freq", 1, &freq);
    if (!bad && freq != 1)
        bad |= refuse(d, field(root, "moe_layer_freq"), "fp8c puts a MoE FFN in every block from first_k_dense_replace on",
                      "\"%s\" other than 1 is not supported", "moe_layer_freq");
    /* transformers' DeepseekV3Config defaults n_group 8, topk_group 4; V2's leave groups off */
    const char *method;
    bad |= str_field(d, root, "topk_method", v3 ? "noaux_tc" : "greedy", &method);
    bad |= int_field(d, root, "n_group", v3 ? 8 : 1, &ngroup);
    bad |= int_field(d, root, "topk_group", v3 ? 4 : ngroup, &tgroup);
    if (bad) return -1;
    const YamlNode *gn = field(root, "topk_group") ? field(root, "topk_group") : field(root, "n_group");
    int grouped = v3 || !strcmp(method, "group_limited_greedy");
    if (grouped && ngroup > 1 && tgroup < ngroup && !gn) {
        diag_error(d, yml_get(root, "model_type")->mark, "set n_group and topk_group to 1: fp8c routes each token to its top_k experts among all",
                   "without n_group and topk_group, transformers' deepseek_v3 routes group-limited (8 groups, top 4): not supported");
        return -1;
    }
    if (grouped && ngroup > 1 && tgroup < ngroup)
        return refuse(d, gn,
                      "fp8c routes each token to its top_k experts among all; group-limited routing (topk_group of n_group groups) "
                      "is not computed: set n_group and topk_group to 1 (or topk_group = n_group)",
                      "group-limited routing (\"%s\" < n_group) is not supported", "topk_group");
    const YamlNode *mn = field(root, "topk_method") ? field(root, "topk_method") : yml_get(root, "model_type");
    const char *speed;
    if (v3 && !strcmp(method, "noaux_tc")) speed = "0.001"; /* DeepSeek-V3 report: bias update speed gamma = 0.001 */
    else if (!v3 && (!strcmp(method, "greedy") || !strcmp(method, "group_limited_greedy"))) speed = "0";
    else
        return refuse(d, mn, v3 ? "transformers' deepseek_v3 routes with noaux_tc (the expert bias)" : "deepseek_v2 routes with greedy",
                      "\"%s\" is not supported here", "topk_method");
    const char *scoring;
    bad |= str_field(d, root, "scoring_func", v3 ? "sigmoid" : "softmax", &scoring);
    if (!bad && strcmp(scoring, v3 ? "sigmoid" : "softmax"))
        return refuse(d, field(root, "scoring_func"),
                      v3 ? "transformers' DeepseekV3TopkRouter always takes sigmoid scores" : "transformers' DeepseekV2Moe always takes softmax scores",
                      "\"%s\" differs from what this model_type computes", "scoring_func");
    /* norm_topk_prob: DeepSeek's V2 remote code normalizes (and then does not scale), transformers'
     * DeepseekV2Moe never normalizes: the two disagree, so fp8c takes V2 only without it */
    const YamlNode *nn = field(root, "norm_topk_prob");
    int norm = v3;
    if (nn && yml_bool(d, nn, &norm)) return -1;
    if (!v3 && norm)
        return refuse(d, nn, "DeepSeek's V2 code normalizes and skips routed_scaling_factor, transformers' never normalizes; fp8c will not pick one",
                      "\"%s\": true is not supported for deepseek_v2", "norm_topk_prob");
    double eps = 1e-6;
    const YamlNode *en = field(root, "rms_norm_eps");
    if (en && yml_float(d, en, 0, 1, &eps)) return -1;
    if (eps != 1e-6)
        return refuse(d, en, "DeepSeek's q_a_layernorm and kv_a_layernorm use eps 1e-6 whatever rms_norm_eps says; fp8c has one norm_eps",
                      "\"%s\" other than 1e-6 is not supported", "rms_norm_eps");
    /* aux_loss_alpha is DeepSeek's sequence-wise balance loss (seq_aux true), fp8c's aux_loss_coef */
    const YamlNode *an = field(root, "aux_loss_alpha"), *sn = field(root, "seq_aux");
    int seq = 1;
    if (sn && yml_bool(d, sn, &seq)) return -1;
    double alpha = 0;
    if (an && yml_float(d, an, 0, 1, &alpha)) return -1;
    if (alpha > 0 && !seq)
        return refuse(d, sn, "fp8c's aux_loss_coef is the sequence-wise balance loss", "\"%s\": false (batch-wise aux loss) is not supported",
                      "seq_aux");
    Mark at = yml_get(root, "model_type")->mark;
    Arena *a = m->a;
    put(m, "vocab_size", field(root, "vocab_size"), at);
    put(m, "d_model", field(root, "hidden_size"), at);
    put(m, "n_layers", field(root, "num_hidden_layers"), at);
    put(m, "n_heads", field(root, "num_attention_heads"), at);
    put(m, "d_ff", field(root, "intermediate_size"), at);
    put(m, "activation", scalar(a, "swiglu", at), at);
    put(m, "norm", scalar(a, "rmsnorm", at), at);
    put(m, "norm_eps", en ? (YamlNode *)en : scalar(a, "1e-6", at), at);
    put(m, "positions", scalar(a, "rope", at), at);
    put(m, "rope_theta", field(root, "rope_theta"), at);
    put(m, "max_seq_len", field(root, "max_position_embeddings") ? field(root, "max_position_embeddings") : scalar(a, v3 ? "4096" : "2048", at), at);
    put(m, "bias", scalar(a, "false", at), at);
    put(m, "tie_embeddings", field(root, "tie_word_embeddings") ? field(root, "tie_word_embeddings") : scalar(a, "false", at), at);
    put(m, "attention", scalar(a, "mla", at), at);
    put(m, "q_lora_rank", field(root, "q_lora_rank") ? field(root, "q_lora_rank") : scalar(a, "0", yml_get(root, "q_lora_rank")->mark), at);
    put(m, "kv_lora_rank", field(root, "kv_lora_rank"), at);
    put(m, "qk_nope_head_dim", field(root, "qk_nope_head_dim"), at);
    put(m, "qk_rope_head_dim", field(root, "qk_rope_head_dim"), at);
    put(m, "v_head_dim", field(root, "v_head_dim"), at);
    put(m, "ffn", scalar(a, "moe", at), at);
    put(m, "n_routed_experts", field(root, "n_routed_experts"), at);
    put(m, "n_shared_experts", field(root, "n_shared_experts") ? field(root, "n_shared_experts") : scalar(a, "0", yml_get(root, "n_shared_experts")->mark), at);
    put(m, "top_k", field(root, "num_experts_per_tok"), at);
    put(m, "expert_d_ff", field(root, "moe_intermediate_size"), at);
    put(m, "first_dense_layers", field(root, "first_k_dense_replace"), at);
    put(m, "scoring", scalar(a, scoring, field(root, "scoring_func") ? field(root, "scoring_func")->mark : at), at);
    put(m, "norm_topk_prob", scalar(a, norm ? "true" : "false", nn ? nn->mark : at), at);
    put(m, "routed_scaling_factor", field(root, "routed_scaling_factor") ? field(root, "routed_scaling_factor") : scalar(a, v3 ? "2.5" : "1.0", at), at);
    put(m, "bias_update_speed", scalar(a, speed, mn->mark), at);
    put(m, "aux_loss_coef", an ? (YamlNode *)an : scalar(a, "0", at), at);
    return 0;
}

YamlNode *hf_config_model(Arena *a, Diag *d, const YamlNode *root) {
    const YamlNode *mt = yml_get(root, "model_type");
    const char *type;
    if (yml_str(d, mt, &type)) return NULL;
    MapBuilder top = new_map(a, root->mark), model = new_map(a, root->mark);
    const YamlNode *name = field(root, "fp8c_name");
    put(&model, "name", name ? (YamlNode *)name : scalar(a, type, mt->mark), mt->mark);
    int rc;
    if (!strcmp(type, "llama")) {
        rc = llama(d, root, &model);
    } else if (!strcmp(type, "gpt2")) {
        rc = gpt2(d, root, &model);
    } else if (!strcmp(type, "deepseek_v3") || !strcmp(type, "deepseek_v2")) {
        rc = deepseek(d, root, &model, !strcmp(type, "deepseek_v3"));
    } else {
        diag_error(d, mt->mark, "fp8c imports Hugging Face configs of model_type llama, gpt2, deepseek_v2 and deepseek_v3",
                   "model_type \"%s\" is not supported", type);
        return NULL;
    }
    if (rc) return NULL;
    put(&top, "model", model.map, root->mark);
    /* fp8c export keeps the training shape here, so a round trip trains and evaluates alike */
    const YamlNode *train = field(root, "fp8c_train");
    if (train) put(&top, "train", (YamlNode *)train, root->mark);
    return top.map;
}
