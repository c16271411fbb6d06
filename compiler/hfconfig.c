/* hfconfig.c: a Hugging Face config.json as a model file. The config is JSON, which the YAML
 * loader reads with marks; this file maps its fields onto a model-file tree (the shape
 * model.yaml has) whose value nodes are the config's own nodes, so every error model_load
 * reports points at config.json:line:col. The mapping is documented in docs/model.md.
 *
 * Owns: which architectures and fields fp8c can take from Hugging Face (llama, gpt2), and the
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
    } else if (!strcmp(type, "deepseek_v3")) {
        diag_error(d, mt->mark, "fp8c analyze reads DeepSeek-V3 checkpoints; training one needs MLA and MoE in fp8c's model",
                   "model_type \"deepseek_v3\" is not supported yet");
        return NULL;
    } else {
        diag_error(d, mt->mark, "fp8c imports Hugging Face configs of model_type llama and gpt2",
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
