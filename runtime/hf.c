/* hf.c: Hugging Face checkpoints in and out. fp8c export writes a model directory
 * (config.json + model.safetensors) with the names of LlamaForCausalLM, GPT2LMHeadModel or
 * DeepseekV3ForCausalLM / DeepseekV2ForCausalLM, or the DeepSeek-V3 FP8 layout (E4M3 weights + FP32 weight_scale_inv per
 * 128x128 block for the plan's FP8 modules); hf_load_weights reads such a directory (BF16, F16,
 * F32, and FP8 with weight_scale_inv dequantized) into a plan's parameters.
 *
 * Conventions, exactly (docs/model.md):
 *   - RoPE: fp8c rotates pairs (2i, 2i+1) of each head; HF Llama rotates halves (i, i + hd/2),
 *     both with frequency theta^(-2i/hd). So q_proj and k_proj rows (and biases) are permuted:
 *     HF row h*hd + i is fp8c row h*hd + 2i, HF row h*hd + hd/2 + i is fp8c row h*hd + 2i + 1.
 *     Attention scores are dot products within a head, unchanged by the common permutation.
 *   - GPT-2: Conv1D stores weights [in, out] (y = x W + b), fp8c [out, in] (y = x W^T + b): every
 *     block weight is transposed; c_attn is q, k and v side by side along its output columns.
 *   - DeepSeek (MLA + MoE, transformers' deepseek_v3 / deepseek_v2 names): copied as they are.
 *     The rope rows of q_b_proj / q_proj and kv_a_proj_with_mqa are stored in interleaved-pair
 *     order (DeepSeek's view_as_complex), which is fp8c's MLA pairing (2i, 2i+1).
 *   - Tied embeddings: lm_head.weight is not written (both architectures tie by default in their
 *     configs when tie_word_embeddings is true).
 *
 * Owns: the name and layout mapping. Must not: write partial output (export writes a temporary
 * directory and renames it), or load a model whose shapes do not match the plan. */
#include "runtime.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fp8.h"
#include "hf.h"
#include "ref.h"
#include "safetensors.h"

/* ---- the plan's model section ---- */

static int64_t geti(const YamlNode *m, const char *k) {
    const YamlNode *n = yml_get(m, k);
    return n && n->kind == YN_SCALAR ? strtoll(n->str, NULL, 10) : 0;
}

static double getf(const YamlNode *m, const char *k) {
    const YamlNode *n = yml_get(m, k);
    return n && n->kind == YN_SCALAR ? strtod(n->str, NULL) : 0;
}

static int gets_is(const YamlNode *m, const char *k, const char *v) {
    const YamlNode *n = yml_get(m, k);
    return n && n->kind == YN_SCALAR && !strcmp(n->str, v);
}

/* A YAML tree (read from JSON) back to compact JSON: scalars that were quoted stay strings. */
static void to_json(Buf *b, const YamlNode *n) {
    if (n->kind == YN_SCALAR) {
        if (!n->quoted) {
            buf_puts(b, n->str);
            return;
        }
        buf_puts(b, "\"");
        for (const char *c = n->str; *c; c++) {
            if (*c == '"' || *c == '\\') buf_printf(b, "\\%c", *c);
            else if ((unsigned char)*c < 0x20) buf_printf(b, "\\u%04x", (unsigned char)*c);
            else buf_printf(b, "%c", *c);
        }
        buf_puts(b, "\"");
        return;
    }
    buf_puts(b, n->kind == YN_MAP ? "{" : "[");
    for (int i = 0; i < n->n; i++) {
        if (i) buf_puts(b, ", ");
        if (n->kind == YN_MAP) {
            to_json(b, n->items[2 * i]);
            buf_puts(b, ": ");
            to_json(b, n->items[2 * i + 1]);
        } else {
            to_json(b, n->items[i]);
        }
    }
    buf_puts(b, n->kind == YN_MAP ? "}" : "]");
}

int hf_model_of_plan(const char *plan_dir, HfModel *m, char *err, size_t errlen) {
    Arena a = {0};
    Diag d;
    FILE *devnull = fopen("/dev/null", "w");
    diag_init(&d, devnull ? devnull : stderr);
    char path[1100];
    snprintf(path, sizeof path, "%s/plan.json", plan_dir);
    const YamlNode *root = yml_load_file(&a, &d, path), *mm = root ? yml_get(root, "model") : NULL;
    int rc = -1;
    memset(m, 0, sizeof *m);
    if (!mm) {
        snprintf(err, errlen, "%s: no model section", path);
        goto out;
    }
    const YamlNode *name = yml_get(mm, "name");
    snprintf(m->name, sizeof m->name, "%s", name && name->kind == YN_SCALAR ? name->str : "model");
    m->vocab = geti(mm, "vocab_size"), m->d = geti(mm, "d_model"), m->L = geti(mm, "n_layers");
    m->H = geti(mm, "n_heads"), m->KV = geti(mm, "n_kv_heads"), m->hd = geti(mm, "head_dim");
    m->ff = geti(mm, "d_ff"), m->max_seq = geti(mm, "max_seq_len");
    m->eps = getf(mm, "norm_eps"), m->theta = getf(mm, "rope_theta");
    m->gelu = gets_is(mm, "activation", "gelu"), m->layernorm = gets_is(mm, "norm", "layernorm");
    m->learned = gets_is(mm, "positions", "learned"), m->bias = gets_is(mm, "bias", "true");
    m->tied = gets_is(mm, "tie_embeddings", "true"), m->gate = gets_is(mm, "attention_gate", "true");
    m->mla = gets_is(mm, "attention", "mla"), m->moe = gets_is(mm, "ffn", "moe");
    m->q_lora = geti(mm, "q_lora_rank"), m->kv_lora = geti(mm, "kv_lora_rank");
    m->dn = geti(mm, "qk_nope_head_dim"), m->dr = geti(mm, "qk_rope_head_dim"), m->dv = geti(mm, "v_head_dim");
    m->E = geti(mm, "n_routed_experts"), m->shared = geti(mm, "n_shared_experts"), m->topk = geti(mm, "top_k");
    m->eff = geti(mm, "expert_d_ff"), m->first_dense = geti(mm, "first_dense_layers");
    m->softmax = gets_is(mm, "scoring", "softmax"), m->norm_topk = gets_is(mm, "norm_topk_prob", "true");
    m->route_scale = getf(mm, "routed_scaling_factor"), m->bias_speed = getf(mm, "bias_update_speed");
    m->aux_coef = getf(mm, "aux_loss_coef");
    const YamlNode *train = yml_get(root, "train");
    Buf tb = {0};
    if (train) to_json(&tb, train);
    snprintf(m->train_json, sizeof m->train_json, "%s", tb.data ? tb.data : "{}");
    buf_free(&tb);
    rc = 0;
out:
    if (devnull) fclose(devnull);
    arena_free(&a);
    return rc;
}

/* ---- the name map ---- */

typedef enum { X_COPY, X_ROPE, X_T } Xform;
typedef struct {
    char fp8c[96];  /* fp8c tensor */
    char hf[128];   /* HF tensor */
    Xform x;
    int64_t col0;   /* GPT-2 c_attn: the first HF column (weight) or element (bias) this part fills */
    int64_t hf_rows, hf_cols; /* the whole HF tensor ([n] for vectors: hf_cols 0) */
    int64_t rows, cols;       /* the fp8c tensor (vectors: cols 1) */
    int optional;             /* import: absent in the HF files leaves fp8c's value (expert bias) */
} HfMap;

/* One entry; the fp8c tensor has the HF tensor's shape unless set otherwise after. */
static HfMap *add(HfMap *v, int *n, const char *fp8c, const char *hf, Xform x, int64_t col0, int64_t r, int64_t c) {
    HfMap *e = &v[(*n)++];
    snprintf(e->fp8c, sizeof e->fp8c, "%s", fp8c);
    snprintf(e->hf, sizeof e->hf, "%s", hf);
    e->x = x, e->col0 = col0, e->hf_rows = r, e->hf_cols = c;
    e->rows = r, e->cols = c ? c : 1;
    e->optional = 0;
    return e;
}

/* Which HF architecture holds this model exactly; NULL with a reason otherwise. */
const char *hf_arch(const HfModel *m, char *why, size_t n) {
    if (m->mla || m->moe) {
        if (m->mla && m->moe && !m->gelu && !m->layernorm && !m->learned && !m->bias && !m->gate) return "deepseek_v3";
        snprintf(why, n, "Hugging Face DeepSeek is attention: mla with ffn: moe, swiglu, rmsnorm, rope, no biases");
        return NULL;
    }
    if (m->gate) return snprintf(why, n, "attention_gate has no Hugging Face Llama or GPT-2 equivalent"), NULL;
    if (!m->gelu && !m->layernorm && !m->learned) return "llama";
    if (m->gelu && m->layernorm && m->learned && m->bias && m->KV == m->H && m->H * m->hd == m->d) return "gpt2";
    snprintf(why, n, "activation %s, norm %s, positions %s, bias %s: Hugging Face Llama is swiglu + rmsnorm + rope; GPT-2 is gelu + "
             "layernorm + learned + bias with n_heads x head_dim = d_model",
             m->gelu ? "gelu" : "swiglu", m->layernorm ? "layernorm" : "rmsnorm", m->learned ? "learned" : "rope", m->bias ? "true" : "false");
    return NULL;
}

/* DeepSeek-V2/V3 names (transformers' modeling_deepseek_v3.py). Every layout is fp8c's own:
 * kv_a_proj_with_mqa rows are [latent (kv_lora_rank) | k_pe (qk_rope_head_dim)], q_proj / q_b_proj
 * rows per head [nope | rope], kv_b_proj rows per head [k_nope | v], and the rope rows are stored in
 * interleaved-pair order, which is fp8c's MLA pairing (2i, 2i+1): all copied as they are. */
/* blocks.{l}.FP <- model.layers.{l}.HF */
static void pair(HfMap *v, int *n, int64_t l, const char *fp, const char *hf, int64_t r, int64_t c) {
    char f[96], h[128];
    snprintf(f, sizeof f, "blocks.%" PRId64 ".%s", l, fp);
    snprintf(h, sizeof h, "model.layers.%" PRId64 ".%s", l, hf);
    add(v, n, f, h, X_COPY, 0, r, c);
}

static int deepseek_map(const HfModel *m, HfMap *v, int n) {
    int64_t D = m->d, H = m->H, qk = m->dn + m->dr;
    add(v, &n, "embed.weight", "model.embed_tokens.weight", X_COPY, 0, m->vocab, D);
    for (int64_t l = 0; l < m->L; l++) {
        pair(v, &n, l, "attn_norm.weight", "input_layernorm.weight", D, 0);
        pair(v, &n, l, "ffn_norm.weight", "post_attention_layernorm.weight", D, 0);
        if (m->q_lora) {
            pair(v, &n, l, "attn.q_a_proj.weight", "self_attn.q_a_proj.weight", m->q_lora, D);
            pair(v, &n, l, "attn.q_a_norm.weight", "self_attn.q_a_layernorm.weight", m->q_lora, 0);
            pair(v, &n, l, "attn.q_b_proj.weight", "self_attn.q_b_proj.weight", H * qk, m->q_lora);
        } else {
            pair(v, &n, l, "attn.q_proj.weight", "self_attn.q_proj.weight", H * qk, D);
        }
        pair(v, &n, l, "attn.kv_a_proj.weight", "self_attn.kv_a_proj_with_mqa.weight", m->kv_lora + m->dr, D);
        pair(v, &n, l, "attn.kv_a_norm.weight", "self_attn.kv_a_layernorm.weight", m->kv_lora, 0);
        pair(v, &n, l, "attn.kv_b_proj.weight", "self_attn.kv_b_proj.weight", H * (m->dn + m->dv), m->kv_lora);
        pair(v, &n, l, "attn.o_proj.weight", "self_attn.o_proj.weight", D, H * m->dv);
        static const char *const mlp[] = {"gate", "up", "down"};
        char fp[96], hf[128];
        if (l < m->first_dense) {
            for (int p = 0; p < 3; p++) {
                snprintf(fp, sizeof fp, "ffn.%s_proj.weight", mlp[p]);
                snprintf(hf, sizeof hf, "mlp.%s_proj.weight", mlp[p]);
                pair(v, &n, l, fp, hf, p == 2 ? D : m->ff, p == 2 ? m->ff : D);
            }
            continue;
        }
        pair(v, &n, l, "ffn.router.weight", "mlp.gate.weight", m->E, D);
        pair(v, &n, l, "ffn.router.expert_bias", "mlp.gate.e_score_correction_bias", m->E, 0);
        v[n - 1].optional = 1; /* transformers' buffer; greedy (V2) checkpoints have none */
        for (int64_t e = 0; e < m->E; e++)
            for (int p = 0; p < 3; p++) {
                snprintf(fp, sizeof fp, "ffn.experts.%" PRId64 ".%s_proj.weight", e, mlp[p]);
                snprintf(hf, sizeof hf, "mlp.experts.%" PRId64 ".%s_proj.weight", e, mlp[p]);
                pair(v, &n, l, fp, hf, p == 2 ? D : m->eff, p == 2 ? m->eff : D);
            }
        int64_t sff = m->shared * m->eff;
        for (int p = 0; sff && p < 3; p++) {
            snprintf(fp, sizeof fp, "ffn.shared.%s_proj.weight", mlp[p]);
            snprintf(hf, sizeof hf, "mlp.shared_experts.%s_proj.weight", mlp[p]);
            pair(v, &n, l, fp, hf, p == 2 ? D : sff, p == 2 ? sff : D);
        }
    }
    add(v, &n, "final_norm.weight", "model.norm.weight", X_COPY, 0, D, 0);
    return n;
}

static int build_map(const HfModel *m, const char *arch, HfMap **out) {
    int cap = 32 + (int)((40 + 3 * m->E) * m->L), n = 0;
    HfMap *v = xmalloc((size_t)cap * sizeof *v);
    char f[96], h[128];
    int64_t D = m->d, q = m->H * m->hd, kv = m->KV * m->hd;
    if (!strcmp(arch, "deepseek_v3")) {
        n = deepseek_map(m, v, n);
    } else if (!strcmp(arch, "llama")) {
        add(v, &n, "embed.weight", "model.embed_tokens.weight", X_COPY, 0, m->vocab, D);
        for (int64_t l = 0; l < m->L; l++) {
            static const char *const proj[] = {"q", "k", "v", "o"};
            snprintf(f, sizeof f, "blocks.%" PRId64 ".attn_norm.weight", l);
            snprintf(h, sizeof h, "model.layers.%" PRId64 ".input_layernorm.weight", l);
            add(v, &n, f, h, X_COPY, 0, D, 0);
            snprintf(f, sizeof f, "blocks.%" PRId64 ".ffn_norm.weight", l);
            snprintf(h, sizeof h, "model.layers.%" PRId64 ".post_attention_layernorm.weight", l);
            add(v, &n, f, h, X_COPY, 0, D, 0);
            for (int p = 0; p < 4; p++) {
                int64_t rows = p == 0 ? q : p == 3 ? D : kv, cols = p == 3 ? q : D;
                Xform x = p < 2 ? X_ROPE : X_COPY;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".attn.%s_proj.weight", l, proj[p]);
                snprintf(h, sizeof h, "model.layers.%" PRId64 ".self_attn.%s_proj.weight", l, proj[p]);
                add(v, &n, f, h, x, 0, rows, cols);
                if (!m->bias) continue;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".attn.%s_proj.bias", l, proj[p]);
                snprintf(h, sizeof h, "model.layers.%" PRId64 ".self_attn.%s_proj.bias", l, proj[p]);
                add(v, &n, f, h, x, 0, rows, 0);
            }
            static const char *const ffn[] = {"gate", "up", "down"};
            for (int p = 0; p < 3; p++) {
                int64_t rows = p == 2 ? D : m->ff, cols = p == 2 ? m->ff : D;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".ffn.%s_proj.weight", l, ffn[p]);
                snprintf(h, sizeof h, "model.layers.%" PRId64 ".mlp.%s_proj.weight", l, ffn[p]);
                add(v, &n, f, h, X_COPY, 0, rows, cols);
                if (!m->bias) continue;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".ffn.%s_proj.bias", l, ffn[p]);
                snprintf(h, sizeof h, "model.layers.%" PRId64 ".mlp.%s_proj.bias", l, ffn[p]);
                add(v, &n, f, h, X_COPY, 0, rows, 0);
            }
        }
        add(v, &n, "final_norm.weight", "model.norm.weight", X_COPY, 0, D, 0);
    } else {
        add(v, &n, "embed.weight", "transformer.wte.weight", X_COPY, 0, m->vocab, D);
        add(v, &n, "pos_embed.weight", "transformer.wpe.weight", X_COPY, 0, m->max_seq, D);
        for (int64_t l = 0; l < m->L; l++) {
            static const char *const norms[][2] = {{"attn_norm", "ln_1"}, {"ffn_norm", "ln_2"}};
            for (int k = 0; k < 2; k++)
                for (int b = 0; b < 2; b++) {
                    snprintf(f, sizeof f, "blocks.%" PRId64 ".%s.%s", l, norms[k][0], b ? "bias" : "weight");
                    snprintf(h, sizeof h, "transformer.h.%" PRId64 ".%s.%s", l, norms[k][1], b ? "bias" : "weight");
                    add(v, &n, f, h, X_COPY, 0, D, 0);
                }
            static const char *const qkv[] = {"q", "k", "v"};
            for (int p = 0; p < 3; p++) {
                snprintf(f, sizeof f, "blocks.%" PRId64 ".attn.%s_proj.weight", l, qkv[p]);
                snprintf(h, sizeof h, "transformer.h.%" PRId64 ".attn.c_attn.weight", l);
                HfMap *e = add(v, &n, f, h, X_T, p * D, D, 3 * D);
                e->rows = D, e->cols = D;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".attn.%s_proj.bias", l, qkv[p]);
                snprintf(h, sizeof h, "transformer.h.%" PRId64 ".attn.c_attn.bias", l);
                e = add(v, &n, f, h, X_COPY, p * D, 3 * D, 0);
                e->rows = D;
            }
            static const char *const lin[][2] = {{"attn.o_proj", "attn.c_proj"}, {"ffn.up_proj", "mlp.c_fc"}, {"ffn.down_proj", "mlp.c_proj"}};
            for (int p = 0; p < 3; p++) {
                int64_t out = p == 1 ? m->ff : D, in = p == 2 ? m->ff : D;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".%s.weight", l, lin[p][0]);
                snprintf(h, sizeof h, "transformer.h.%" PRId64 ".%s.weight", l, lin[p][1]);
                HfMap *e = add(v, &n, f, h, X_T, 0, in, out);
                e->rows = out, e->cols = in;
                snprintf(f, sizeof f, "blocks.%" PRId64 ".%s.bias", l, lin[p][0]);
                snprintf(h, sizeof h, "transformer.h.%" PRId64 ".%s.bias", l, lin[p][1]);
                add(v, &n, f, h, X_COPY, 0, out, 0);
            }
        }
        add(v, &n, "final_norm.weight", "transformer.ln_f.weight", X_COPY, 0, D, 0);
        add(v, &n, "final_norm.bias", "transformer.ln_f.bias", X_COPY, 0, D, 0);
    }
    if (!m->tied) add(v, &n, "lm_head.weight", "lm_head.weight", X_COPY, 0, m->vocab, D);
    FP8C_ASSERT(n <= cap);
    *out = v;
    return n;
}

static void fp8c_dims(const HfMap *e, const HfModel *m, int64_t *rows, int64_t *cols) {
    (void)m;
    *rows = e->rows, *cols = e->cols;
}

/* Move one fp8c tensor x (rows x cols) into its place in the HF tensor h (to_hf), or back. */
static void move(const HfMap *e, const HfModel *m, float *x, float *h, int to_hf) {
    int64_t rows, cols;
    fp8c_dims(e, m, &rows, &cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t hi;
            if (e->x == X_T) {
                hi = c * e->hf_cols + e->col0 + r; /* h[c][col0 + r] = x[r][c] */
            } else if (e->x == X_ROPE) {
                int64_t hd = m->hd, head = r / hd, i = r % hd; /* fp8c row head*hd + i */
                int64_t hr = head * hd + (i % 2 ? hd / 2 + i / 2 : i / 2);
                hi = hr * cols + c;
            } else {
                hi = e->col0 + r * cols + c;
            }
            if (to_hf) h[hi] = x[r * cols + c];
            else x[r * cols + c] = h[hi];
        }
}

/* ---- export ---- */

typedef struct {
    char name[128];
    int64_t rows, cols;    /* cols 0: a vector */
    float *x;
} HfTensor;

static HfTensor *find_or_add(HfTensor *t, int *n, const HfMap *e) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(t[i].name, e->hf)) return &t[i];
    HfTensor *x = &t[(*n)++];
    snprintf(x->name, sizeof x->name, "%s", e->hf);
    x->rows = e->hf_rows, x->cols = e->hf_cols;
    x->x = calloc((size_t)(e->hf_rows * (e->hf_cols ? e->hf_cols : 1)), sizeof(float));
    if (!x->x) {
        fprintf(stderr, "fp8c: error: out of memory\n");
        exit(EXIT_RUNTIME);
    }
    return x;
}

/* A checkpoint tensor as floats (BF16, F16 or F32); NULL if absent or of another dtype. */
static float *ckpt_floats(const StFile *f, const char *name, int64_t n) {
    const StTensor *t = st_find(f, name);
    if (!t) return NULL;
    size_t es = st_dtype_size(t->dtype);
    if ((int64_t)(t->nbytes / (es ? es : 1)) != n) return NULL;
    float *x = xmalloc((size_t)n * sizeof *x);
    const unsigned char *b = t->data;
    for (int64_t k = 0; k < n; k++) {
        if (!strcmp(t->dtype, "F32")) memcpy(&x[k], b + 4 * k, 4);
        else if (!strcmp(t->dtype, "BF16")) x[k] = fp8c_bf16_to_f32((uint16_t)(b[2 * k] | b[2 * k + 1] << 8));
        else if (!strcmp(t->dtype, "F16")) x[k] = fp8c_f16_to_f32((uint16_t)(b[2 * k] | b[2 * k + 1] << 8));
        else {
            free(x);
            return NULL;
        }
    }
    return x;
}

/* Is the plan module of this weight FP8 (its plan.json module's compute)? */
static int module_is_fp8(const YamlNode *mods, const char *weight) {
    char path[96];
    snprintf(path, sizeof path, "%s", weight);
    char *dot = strrchr(path, '.');
    if (dot) *dot = 0;
    for (int i = 0; mods && i < mods->n; i++) {
        const YamlNode *m = mods->items[i], *p = yml_get(m, "path"), *c = yml_get(m, "compute");
        if (p && c && !strcmp(p->str, path)) return !strcmp(c->str, "fp8");
    }
    return 0;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f)) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    return 0;
}

/* A DeepSeek model Hugging Face computes exactly: transformers' deepseek_v3 (sigmoid scores, the
 * expert bias, normalization then routed_scaling_factor) or deepseek_v2 (softmax, no bias, no
 * normalization); the import refuses the rest (docs/model.md), so export does too. */
static int deepseek_exportable(const HfModel *m, char *err, size_t n) {
    if (m->eps != 1e-6) return snprintf(err, n, "norm_eps %g: DeepSeek's latent norms use 1e-6", m->eps), -1;
    if (m->softmax && m->norm_topk)
        return snprintf(err, n, "softmax scoring with norm_topk_prob has no Hugging Face DeepSeek equivalent (deepseek_v2 does not normalize)"), -1;
    if (m->softmax && m->bias_speed > 0)
        return snprintf(err, n, "softmax scoring with an expert bias (bias_update_speed > 0) has no Hugging Face DeepSeek equivalent"), -1;
    return 0;
}

/* config.json of a DeepSeek model: the fields hfconfig.c reads back to the same model. Re-import
 * sets bias_update_speed from topk_method (noaux_tc: DeepSeek-V3's 0.001). */
static void deepseek_config(Buf *b, const HfModel *m) {
    int v3 = !m->softmax;
    char ql[32];
    if (m->q_lora) snprintf(ql, sizeof ql, "%" PRId64, m->q_lora);
    else snprintf(ql, sizeof ql, "null");
    buf_printf(b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"vocab_size\": %" PRId64 ",\n  \"hidden_size\": %" PRId64 ",\n"
                  "  \"intermediate_size\": %" PRId64 ",\n  \"moe_intermediate_size\": %" PRId64 ",\n  \"num_hidden_layers\": %" PRId64 ",\n"
                  "  \"num_attention_heads\": %" PRId64 ",\n  \"num_key_value_heads\": %" PRId64 ",\n  \"n_routed_experts\": %" PRId64 ",\n"
                  "  \"n_shared_experts\": %" PRId64 ",\n  \"num_experts_per_tok\": %" PRId64 ",\n  \"first_k_dense_replace\": %" PRId64 ",\n"
                  "  \"moe_layer_freq\": 1,\n  \"q_lora_rank\": %s,\n  \"kv_lora_rank\": %" PRId64 ",\n  \"qk_nope_head_dim\": %" PRId64 ",\n"
                  "  \"qk_rope_head_dim\": %" PRId64 ",\n  \"v_head_dim\": %" PRId64 ",\n  \"hidden_act\": \"silu\",\n"
                  "  \"max_position_embeddings\": %" PRId64 ",\n  \"rms_norm_eps\": %.9g,\n  \"rope_theta\": %.9g,\n  \"rope_scaling\": null,\n"
                  "  \"rope_interleave\": true,\n  \"attention_bias\": false,\n  \"tie_word_embeddings\": %s,\n  \"n_group\": 1,\n  \"topk_group\": 1,\n"
                  "  \"topk_method\": \"%s\",\n  \"scoring_func\": \"%s\",\n  \"norm_topk_prob\": %s,\n  \"routed_scaling_factor\": %.9g,\n"
                  "  \"aux_loss_alpha\": %.9g,\n  \"seq_aux\": true,\n  \"num_nextn_predict_layers\": 0,\n",
               v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM", v3 ? "deepseek_v3" : "deepseek_v2", m->vocab, m->d, m->ff, m->eff, m->L, m->H,
               m->H, m->E, m->shared, m->topk, m->first_dense, ql, m->kv_lora, m->dn, m->dr, m->dv, m->max_seq, m->eps, m->theta,
               m->tied ? "true" : "false", v3 ? "noaux_tc" : "greedy", v3 ? "sigmoid" : "softmax", m->norm_topk ? "true" : "false",
               m->route_scale, m->aux_coef);
}

/* DeepSeek's router weight and expert bias stay F32 when fp8c keeps them so (the router is never
 * low-bit; DeepSeek's own checkpoint stores e_score_correction_bias in F32): a BF16 export would
 * move routing decisions. */
static int router_f32(const StFile *f, const HfMap *map, int nmap, const char *hf) {
    size_t n = strlen(hf);
    int router = (n > 16 && !strcmp(hf + n - 16, ".mlp.gate.weight")) || (n > 23 && !strcmp(hf + n - 23, "e_score_correction_bias"));
    for (int k = 0; router && k < nmap; k++)
        if (!strcmp(map[k].hf, hf)) {
            const StTensor *t = st_find(f, map[k].fp8c);
            return t && !strcmp(t->dtype, "F32");
        }
    return 0;
}

int hf_export(const HfExport *o) {
    char err[1024] = "", why[512];
    HfModel m;
    Arena arena = {0};
    Diag d;
    diag_init(&d, stderr);
    Plan p;
    if (plan_load(&arena, &d, o->plan_dir, &p)) {
        arena_free(&arena);
        return EXIT_BAD_INPUT;
    }
    int rc = EXIT_BAD_INPUT;
    StFile *f = NULL;
    HfMap *map = NULL;
    HfTensor *ht = NULL;
    int nh = 0, nmap = 0;
    char tmpdir[2100] = "";
    if (hf_model_of_plan(o->plan_dir, &m, err, sizeof err)) goto fail;
    const char *arch = hf_arch(&m, why, sizeof why);
    if (!arch) {
        snprintf(err, sizeof err, "model %s has no Hugging Face architecture: %s", m.name, why);
        goto fail;
    }
    int fp8 = !strcmp(o->format, "fp8");
    if (fp8 && !strcmp(arch, "gpt2")) {
        snprintf(err, sizeof err, "--format fp8 writes the DeepSeek-V3 layout of Llama- or DeepSeek-named weights; this model is %s (use --format hf)", arch);
        goto fail;
    }
    if (!strcmp(arch, "deepseek_v3") && deepseek_exportable(&m, err, sizeof err)) goto fail;
    if (!(f = st_read(o->ckpt, err, sizeof err))) goto fail;
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, p.hash);
    const char *fmt = st_meta(f, "format"), *hash = st_meta(f, "plan_hash");
    if (!fmt || strcmp(fmt, "fp8c-checkpoint") || !hash || strcmp(hash, want)) {
        snprintf(err, sizeof err, "%s is %s (plan %s/plan.json has hash %s)", o->ckpt,
                 !fmt || strcmp(fmt, "fp8c-checkpoint") ? "not an fp8c checkpoint" : "a checkpoint of another plan", o->plan_dir, want);
        goto fail;
    }
    /* the dtype: --dtype, else the parameters' own (bf16 unless they are fp32) */
    const char *dtype = o->dtype;
    if (!dtype) {
        const StTensor *e = st_find(f, "embed.weight");
        dtype = e && !strcmp(e->dtype, "F32") ? "fp32" : "bf16";
    }
    int f32 = !strcmp(dtype, "fp32");
    nmap = build_map(&m, arch, &map);
    ht = xmalloc((size_t)nmap * sizeof *ht);
    for (int i = 0; i < nmap; i++) {
        int64_t rows, cols;
        fp8c_dims(&map[i], &m, &rows, &cols);
        char master[128];
        snprintf(master, sizeof master, "master.%s", map[i].fp8c);
        /* FP32 export: the master weights where the plan keeps them; BF16: the parameters */
        float *x = f32 ? ckpt_floats(f, master, rows * cols) : NULL;
        if (!x) x = ckpt_floats(f, map[i].fp8c, rows * cols);
        if (!x) {
            snprintf(err, sizeof err, "%s: tensor '%s' is missing or not %lld x %lld BF16/F16/F32", o->ckpt, map[i].fp8c, (long long)rows,
                     (long long)cols);
            goto fail;
        }
        move(&map[i], &m, x, find_or_add(ht, &nh, &map[i])->x, 1);
        free(x);
    }
    /* the tensors, FP8 with block scales where the plan's module is FP8 (--format fp8) */
    Arena ta = {0};
    const YamlNode *mods = NULL;
    if (fp8) {
        char pj[1100];
        snprintf(pj, sizeof pj, "%s/plan.json", o->plan_dir);
        const YamlNode *root = yml_load_file(&ta, &d, pj);
        mods = root ? yml_get(root, "modules") : NULL;
    }
    StTensor *st = xmalloc((size_t)(2 * nh) * sizeof *st);
    void **bufs = xmalloc((size_t)(2 * nh) * sizeof *bufs);
    int ns = 0, nfp8 = 0;
    for (int i = 0; i < nh; i++) {
        HfTensor *t = &ht[i];
        int64_t n = t->rows * (t->cols ? t->cols : 1);
        int ndim = t->cols ? 2 : 1;
        int is8 = 0;
        for (int k = 0; fp8 && k < nmap && !is8; k++)
            if (!strcmp(map[k].hf, t->name) && t->cols && strcmp(map[k].fp8c, "lm_head.weight")) is8 = module_is_fp8(mods, map[k].fp8c);
        if (is8) { /* E4M3 with one FP32 scale_inv per 128x128 block: w ~= decode(q) * scale_inv */
            int64_t R = t->rows, C = t->cols, br = (R + 127) / 128, bc = (C + 127) / 128;
            uint8_t *q = xmalloc((size_t)n);
            float *s = xmalloc((size_t)(br * bc) * sizeof *s);
            for (int64_t bi = 0; bi < br; bi++)
                for (int64_t bj = 0; bj < bc; bj++) {
                    float amax = 0;
                    for (int64_t r = bi * 128; r < R && r < bi * 128 + 128; r++)
                        for (int64_t c = bj * 128; c < C && c < bj * 128 + 128; c++) amax = fmaxf(amax, fabsf(t->x[r * C + c]));
                    float si = amax > 0 ? amax / 448.0f : 1.0f;
                    s[bi * bc + bj] = si;
                    for (int64_t r = bi * 128; r < R && r < bi * 128 + 128; r++)
                        for (int64_t c = bj * 128; c < C && c < bj * 128 + 128; c++) q[r * C + c] = fp8c_f32_to_e4m3(t->x[r * C + c] / si, 1);
                }
            bufs[ns] = q;
            st[ns] = (StTensor){t->name, "F8_E4M3", 2, {R, C, 0, 0}, q, (size_t)n};
            ns++;
            char *sname = arena_printf(&ta, "%s_scale_inv", t->name);
            bufs[ns] = s;
            st[ns] = (StTensor){sname, "F32", 2, {br, bc, 0, 0}, s, (size_t)(br * bc) * 4};
            ns++;
            nfp8++;
            continue;
        }
        if ((f32 && !fp8) || router_f32(f, map, nmap, t->name)) {
            bufs[ns] = NULL;
            st[ns] = (StTensor){t->name, "F32", ndim, {t->rows, t->cols, 0, 0}, t->x, (size_t)n * 4};
        } else {
            uint16_t *h = xmalloc((size_t)n * 2);
            for (int64_t k = 0; k < n; k++) h[k] = fp8c_f32_to_bf16(t->x[k]);
            bufs[ns] = h;
            st[ns] = (StTensor){t->name, "BF16", ndim, {t->rows, t->cols, 0, 0}, h, (size_t)n * 2};
        }
        ns++;
    }
    /* config.json */
    Buf cfg = {0};
    const char *tdt = fp8 || !f32 ? "bfloat16" : "float32";
    if (!strcmp(arch, "llama")) {
        buf_printf(&cfg, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n  \"vocab_size\": %" PRId64 ",\n"
                         "  \"hidden_size\": %" PRId64 ",\n  \"intermediate_size\": %" PRId64 ",\n  \"num_hidden_layers\": %" PRId64 ",\n"
                         "  \"num_attention_heads\": %" PRId64 ",\n  \"num_key_value_heads\": %" PRId64 ",\n  \"head_dim\": %" PRId64 ",\n"
                         "  \"hidden_act\": \"silu\",\n  \"max_position_embeddings\": %" PRId64 ",\n  \"rms_norm_eps\": %.9g,\n"
                         "  \"rope_theta\": %.9g,\n  \"rope_scaling\": null,\n  \"attention_bias\": %s,\n  \"mlp_bias\": %s,\n"
                         "  \"tie_word_embeddings\": %s,\n",
                   m.vocab, m.d, m.ff, m.L, m.H, m.KV, m.hd, m.max_seq, m.eps, m.theta, m.bias ? "true" : "false", m.bias ? "true" : "false",
                   m.tied ? "true" : "false");
        if (fp8)
            buf_printf(&cfg, "  \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"activation_scheme\": \"dynamic\", "
                             "\"weight_block_size\": [128, 128]},\n");
    } else if (!strcmp(arch, "deepseek_v3")) {
        deepseek_config(&cfg, &m);
        if (fp8)
            buf_printf(&cfg, "  \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"activation_scheme\": \"dynamic\", "
                             "\"weight_block_size\": [128, 128]},\n");
    } else {
        buf_printf(&cfg, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n  \"vocab_size\": %" PRId64 ",\n"
                         "  \"n_embd\": %" PRId64 ",\n  \"n_layer\": %" PRId64 ",\n  \"n_head\": %" PRId64 ",\n  \"n_inner\": %" PRId64 ",\n"
                         "  \"n_positions\": %" PRId64 ",\n  \"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": %.9g,\n"
                         "  \"scale_attn_weights\": true,\n  \"tie_word_embeddings\": %s,\n",
                   m.vocab, m.d, m.L, m.H, m.ff, m.max_seq, m.eps, m.tied ? "true" : "false");
    }
    buf_printf(&cfg, "  \"torch_dtype\": \"%s\",\n  \"fp8c_name\": \"%s\",\n  \"fp8c_train\": %s\n}\n", tdt, m.name, m.train_json);
    /* write into DIR.tmp.XXXXXX, then rename over DIR (which must not exist or be empty) */
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp.XXXXXX", o->out);
    char path[2200];
    int wrc = -1;
    StMeta meta[] = {{"format", "pt"}};
    if (!mkdtemp(tmpdir)) {
        snprintf(err, sizeof err, "cannot create %s: %s", tmpdir, strerror(errno));
        tmpdir[0] = 0;
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
        wrc = st_write(path, st, ns, meta, 1, err, sizeof err);
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        if (!wrc) wrc = write_text(path, cfg.data, err, sizeof err);
        chmod(tmpdir, 0755);
        rmdir(o->out); /* an empty DIR is replaced; a non-empty one makes rename fail */
        if (!wrc && rename(tmpdir, o->out)) {
            snprintf(err, sizeof err, "cannot rename %s to %s: %s (is %s a non-empty directory?)", tmpdir, o->out, strerror(errno), o->out);
            wrc = -1;
        }
        if (!wrc) tmpdir[0] = 0;
    }
    for (int i = 0; i < ns; i++) free(bufs[i]);
    free(bufs);
    free(st);
    buf_free(&cfg);
    arena_free(&ta);
    if (wrc) {
        rc = EXIT_RUNTIME;
        goto fail;
    }
    fprintf(stderr, "fp8c: exported %s (%s, %s) -> %s: config.json, model.safetensors (%d tensors)\n", o->ckpt, arch,
            fp8 ? "fp8 128x128 blocks + bf16" : f32 ? "fp32" : "bf16", o->out, ns);
    if (fp8) fprintf(stderr, "fp8c: %d weights in E4M3 with weight_scale_inv\n", nfp8);
    rc = EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "fp8c: error: %s\n", err);
done:
    if (tmpdir[0]) {
        snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
        unlink(path);
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        unlink(path);
        rmdir(tmpdir);
    }
    for (int i = 0; i < nh; i++) free(ht[i].x);
    free(ht);
    free(map);
    st_free(f);
    arena_free(&arena);
    return rc;
}

/* ---- import ---- */

/* The shard files of an HF directory: model.safetensors, or the index's files. */
typedef struct {
    StFile *f[64];
    int n;
} Shards;

static int open_shards(const char *dir, Shards *s, char *err, size_t errlen) {
    char path[2200];
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!access(path, F_OK)) {
        if (!(s->f[0] = st_read(path, err, errlen))) return -1;
        s->n = 1;
        return 0;
    }
    /* sharded: every model-*.safetensors in the directory (the index names the same files) */
    for (int k = 1; k <= 64; k++) {
        int found = 0;
        for (int of = k; of <= 64 && !found; of++) {
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, k, of);
            if (access(path, F_OK)) continue;
            found = 1;
            if (!(s->f[s->n] = st_read(path, err, errlen))) return -1;
            s->n++;
        }
        if (!found) break;
    }
    if (!s->n) {
        snprintf(err, errlen, "%s: no model.safetensors (or model-0000N-of-0000M.safetensors shards)", dir);
        return -1;
    }
    return 0;
}

static const StTensor *shard_find(const Shards *s, const char *name) {
    for (int i = 0; i < s->n; i++) {
        const StTensor *t = st_find(s->f[i], name);
        if (t) return t;
    }
    return NULL;
}

/* An HF tensor as floats, FP8 dequantized with its weight_scale_inv blocks; NULL + err. */
static float *hf_floats(const Shards *s, const char *dir, const char *name, int64_t rows, int64_t cols, char *err, size_t errlen) {
    const StTensor *t = shard_find(s, name);
    int64_t n = rows * (cols ? cols : 1);
    if (!t) {
        snprintf(err, errlen, "%s: tensor '%s' is missing", dir, name);
        return NULL;
    }
    int shape_ok = cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols : t->ndim == 1 && t->shape[0] == rows;
    if (!shape_ok) {
        snprintf(err, errlen, "%s: tensor '%s' has another shape than the model's [%lld%s%lld]", dir, name, (long long)rows, cols ? ", " : "",
                 (long long)(cols ? cols : 0));
        if (!cols) snprintf(err, errlen, "%s: tensor '%s' has another shape than the model's [%lld]", dir, name, (long long)rows);
        return NULL;
    }
    const unsigned char *b = t->data;
    float *x = xmalloc((size_t)n * sizeof *x);
    int e4 = !strcmp(t->dtype, "F8_E4M3"), e5 = !strcmp(t->dtype, "F8_E5M2");
    if (e4 || e5) {
        char sname[200];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        const StTensor *sc = shard_find(s, sname);
        int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
        if (!cols || !sc || strcmp(sc->dtype, "F32") || sc->ndim != 2 || sc->shape[0] != br || sc->shape[1] != bc) {
            snprintf(err, errlen, "%s: FP8 tensor '%s' needs '%s' of F32 [%lld, %lld] (128x128 blocks)", dir, name, sname, (long long)br,
                     (long long)bc);
            free(x);
            return NULL;
        }
        const float *si = sc->data; /* aligned only by luck: memcpy each */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float sv;
                memcpy(&sv, (const unsigned char *)si + 4 * ((r / 128) * bc + c / 128), 4);
                uint8_t v = b[r * cols + c];
                x[r * cols + c] = (e4 ? fp8c_e4m3_to_f32(v) : fp8c_e5m2_to_f32(v)) * sv;
            }
        return x;
    }
    for (int64_t k = 0; k < n; k++) {
        if (!strcmp(t->dtype, "F32")) memcpy(&x[k], b + 4 * k, 4);
        else if (!strcmp(t->dtype, "BF16")) x[k] = fp8c_bf16_to_f32((uint16_t)(b[2 * k] | b[2 * k + 1] << 8));
        else if (!strcmp(t->dtype, "F16")) x[k] = fp8c_f16_to_f32((uint16_t)(b[2 * k] | b[2 * k + 1] << 8));
        else {
            snprintf(err, errlen, "%s: tensor '%s' is %s; fp8c imports BF16, F16, F32 and FP8 with weight_scale_inv", dir, name, t->dtype);
            free(x);
            return NULL;
        }
    }
    return x;
}

int hf_load_weights(CpuBackend *b, const char *dir, char *err, size_t errlen) {
    const Plan *p = b->p;
    HfModel m;
    char why[512];
    if (hf_model_of_plan(p->dir, &m, err, errlen)) return -1;
    const char *arch = hf_arch(&m, why, sizeof why);
    if (!arch) {
        snprintf(err, errlen, "the plan's model has no Hugging Face architecture: %s", why);
        return -1;
    }
    Shards s;
    if (open_shards(dir, &s, err, errlen)) {
        for (int i = 0; i < s.n; i++) st_free(s.f[i]);
        return -1;
    }
    /* GPT-2 hub checkpoints name tensors without the "transformer." prefix: accept both */
    int bare = !strcmp(arch, "gpt2") && !shard_find(&s, "transformer.wte.weight") && shard_find(&s, "wte.weight");
    HfMap *map;
    int nmap = build_map(&m, arch, &map), rc = -1;
    float **vals = calloc((size_t)nmap, sizeof *vals);
    /* read and check everything first: a bad directory is refused, never half-loaded */
    for (int i = 0; i < nmap; i++) {
        const char *hn = map[i].hf + (bare && !strncmp(map[i].hf, "transformer.", 12) ? 12 : 0);
        if (map[i].optional && !shard_find(&s, hn)) continue;
        float *h = hf_floats(&s, dir, hn, map[i].hf_rows, map[i].hf_cols, err, errlen);
        if (!h) goto out;
        int64_t rows, cols;
        fp8c_dims(&map[i], &m, &rows, &cols);
        int ti = plan_find(p, map[i].fp8c);
        if (ti < 0 || p->t[ti].n != rows * cols) {
            snprintf(err, errlen, "the plan has no tensor '%s' of %lld elements for %s", map[i].fp8c, (long long)(rows * cols), hn);
            free(h);
            goto out;
        }
        vals[i] = xmalloc((size_t)(rows * cols) * sizeof(float));
        move(&map[i], &m, vals[i], h, 0);
        free(h);
    }
    cpu_params_changed(b);
    for (int i = 0; i < nmap; i++) {
        if (!vals[i]) continue; /* an optional tensor the files do not have */
        int ti = plan_find(p, map[i].fp8c);
        const RtTensor *t = &p->t[ti];
        float *x = cpu_ptr(b, ti);
        memcpy(x, vals[i], (size_t)t->n * sizeof(float));
        char mname[128];
        snprintf(mname, sizeof mname, "master.%s", t->name);
        int mi = plan_find(p, mname);
        if (mi >= 0) memcpy(cpu_ptr(b, mi), vals[i], (size_t)t->n * sizeof(float));
        if (t->dtype == TD_BF16 || t->dtype == TD_F16) ref_round(x, t->n, t->dtype == TD_BF16 ? REF_BF16 : REF_FP16);
    }
    rc = 0;
out:
    for (int i = 0; i < nmap; i++) free(vals[i]);
    free(vals);
    free(map);
    for (int i = 0; i < s.n; i++) st_free(s.f[i]);
    return rc;
}
