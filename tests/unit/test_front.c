/* test_front.c: unit tests of the front end: glob matching, YAML loading, parameter counts,
 * layer resolution and provenance, same-layer conflicts, unmatched paths and target checks.
 * Models and policies are written inline so each case shows exactly what it feeds in. */
#include "check.h"
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

/* ---- a compilation from two YAML strings ---- */

typedef struct {
    Arena arena;
    Diag diag;
    Model model;
    Policy policy;
    Resolution res;
    char *log;    /* everything the diagnostics printed */
    size_t loglen;
    int rc;
} Run;

static const char *tiny_model =
    "model: {name: t, vocab_size: 256, d_model: 128, n_layers: 2, n_heads: 4, d_ff: 384}\n"
    "train: {micro_batch: 4, seq_len: 64}\n";

static void run(Run *r, const char *model_yaml, const char *policy_yaml, Target t, int strict) {
    memset(r, 0, sizeof *r);
    FILE *log = open_memstream(&r->log, &r->loglen);
    diag_init(&r->diag, log);
    r->diag.strict = strict;
    r->rc = -1;
    int mf = diag_add_file(&r->diag, "model.yaml", model_yaml, strlen(model_yaml));
    YamlNode *mroot = yml_parse(&r->arena, &r->diag, mf, model_yaml, strlen(model_yaml));
    if (mroot && !model_load(&r->arena, &r->diag, mroot, &r->model)) {
        if (!policy_yaml) {
            r->rc = 0;
        } else {
            int pf = diag_add_file(&r->diag, "policy.yaml", policy_yaml, strlen(policy_yaml));
            YamlNode *proot = yml_parse(&r->arena, &r->diag, pf, policy_yaml, strlen(policy_yaml));
            if (proot && !pol_load(&r->arena, &r->diag, proot, "policy.yaml", &r->policy))
                r->rc = res_resolve(&r->arena, &r->diag, &r->model, &r->policy, t, &r->res);
        }
    }
    fclose(log);
}

static void done(Run *r) {
    arena_free(&r->arena);
    free(r->log);
}

static const ModRes *mod(const Run *r, const char *path) {
    int i = model_find(&r->model, path);
    return i < 0 ? NULL : &r->res.mods[i];
}

/* A module of the model alone (no policy resolved). */
static const Module *model_mod(const Run *r, const char *path) {
    int i = model_find(&r->model, path);
    return i < 0 ? NULL : &r->model.mods[i];
}

/* The layer that decided field f of module path. */
static int decided_layer(const Run *r, const char *path, int f) {
    const ModRes *m = mod(r, path);
    if (!m || m->f[f].win < 0) return -1;
    return (int)m->f[f].c[m->f[f].win].layer;
}

static int decided_line(const Run *r, const char *path, int f) {
    const ModRes *m = mod(r, path);
    return m->f[f].c[m->f[f].win].mark.line;
}

/* ---- 1. glob matching ---- */

static void glob_star_is_one_segment(void) {
    CHECK(res_glob_match("blocks.*.attn.q_proj", "blocks.0.attn.q_proj"));
    CHECK(res_glob_match("blocks.*.attn.q_proj", "blocks.27.attn.q_proj"));
    CHECK(!res_glob_match("blocks.*.q_proj", "blocks.0.attn.q_proj"));
    CHECK(!res_glob_match("*", "blocks.0"));
    CHECK(res_glob_match("*", "embed"));
}

static void glob_star_inside_segment(void) {
    CHECK(res_glob_match("blocks.*.ffn.*_proj", "blocks.1.ffn.down_proj"));
    CHECK(!res_glob_match("blocks.*.ffn.*_proj", "blocks.1.ffn_norm"));
    CHECK(res_glob_match("*embed", "pos_embed"));
    CHECK(res_glob_match("*embed", "embed"));
    CHECK(!res_glob_match("*embed", "embedding"));
    CHECK(res_glob_match("blocks.1*.attn.core", "blocks.12.attn.core"));
    CHECK(!res_glob_match("blocks.1*.attn.core", "blocks.2.attn.core"));
}

static void glob_double_star_any_depth(void) {
    CHECK(res_glob_match("**", "embed"));
    CHECK(res_glob_match("**", "blocks.0.attn.q_proj"));
    CHECK(res_glob_match("blocks.0.**", "blocks.0.attn.q_proj"));
    CHECK(res_glob_match("blocks.0.**", "blocks.0.attn_norm"));
    CHECK(!res_glob_match("blocks.0.**", "blocks.10.attn_norm"));
    CHECK(res_glob_match("**.q_proj", "blocks.3.attn.q_proj"));
    CHECK(res_glob_match("blocks.**.q_proj", "blocks.3.attn.q_proj"));
    CHECK(res_glob_match("**.**.q_proj", "blocks.3.attn.q_proj"));
    CHECK(!res_glob_match("**.k_proj", "blocks.3.attn.q_proj"));
    /* `**` may match zero segments */
    CHECK(res_glob_match("blocks.**.attn_norm", "blocks.attn_norm"));
}

static void glob_exact_and_pathological(void) {
    CHECK(res_glob_match("lm_head", "lm_head"));
    CHECK(!res_glob_match("lm_head", "lm_head2"));
    CHECK(!res_glob_match("", "embed"));
    /* many stars in one segment must not backtrack exponentially */
    CHECK(!res_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

/* ---- 2. YAML loading ---- */

static void yaml_duplicate_key_names_both(void) {
    Run r;
    run(&r, "model: {vocab_size: 256}\nmodel: {}\n", NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "model.yaml:2:1: error: duplicate key 'model' (first given at model.yaml:1:1)"), "%s", r.log);
    done(&r);
}

static void yaml_alias_to_unfinished_anchor_refused(void) {
    Run r;
    run(&r, "a: &x [1, *x]\n", NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "model.yaml:1:11: error: unknown anchor '*x'"), "%s", r.log);
    done(&r);
}

static void yaml_syntax_error_positioned(void) {
    Run r;
    run(&r, "model:\n  name: [unclosed\n", NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "model.yaml:3:1: error: invalid YAML"), "%s", r.log);
    done(&r);
}

static void yaml_depth_capped(void) {
    char deep[400];
    size_t n = 0;
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    deep[n] = 0;
    Run r;
    run(&r, deep, NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "nesting deeper than 32 levels"), "%s", r.log);
    done(&r);
}

static void yaml_unknown_key_did_you_mean(void) {
    Run r;
    run(&r, "model: {vocab_size: 256, d_modle: 128, n_layers: 2, n_heads: 4, d_ff: 384}\n", NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "model.yaml:1:26: error: unknown key 'd_modle' in model"), "%s", r.log);
    CHECKF(strstr(r.log, "hint: did you mean 'd_model'?"), "%s", r.log);
    done(&r);
}

/* ---- 3. parameter counts (formulas written out by hand, not read from the code) ---- */

static void count_gpt2_124m(void) {
    Run r;
    run(&r,
        "model: {vocab_size: 50257, d_model: 768, n_layers: 12, n_heads: 12, d_ff: 3072, activation: gelu,\n"
        "        norm: layernorm, positions: learned, max_seq_len: 1024, bias: true, tie_embeddings: true}\n",
        NULL, TGT_CPU, 0);
    CHECK(!r.rc);
    int64_t d = 768, f = 3072;
    int64_t block = 2 * (2 * d)                /* two LayerNorms, weight + bias */
                    + 4 * (d * d + d)          /* q, k, v, o with biases */
                    + (f * d + f) + (d * f + d); /* fc, proj */
    int64_t total = 50257 * d + 1024 * d + 12 * block + 2 * d;
    CHECK(total == 124439808); /* the published GPT-2 small count */
    CHECKF(r.model.total_params == total, "%lld", (long long)r.model.total_params);
    CHECK(model_mod(&r, "lm_head")->param_count == 0);
    CHECK(model_mod(&r, "pos_embed") != NULL);
    CHECK(model_mod(&r, "blocks.0.ffn.gate_proj") == NULL);
    done(&r);
}

static void count_llama_1b(void) {
    Run r;
    run(&r,
        "model: {vocab_size: 128256, d_model: 2048, n_layers: 16, n_heads: 32, n_kv_heads: 8, d_ff: 8192}\n",
        NULL, TGT_CPU, 0);
    CHECK(!r.rc);
    int64_t d = 2048, kv = 8 * 64, f = 8192;
    int64_t block = 2 * d + 2 * d * d + 2 * kv * d + 3 * f * d;
    CHECKF(r.model.total_params == 128256 * d + 16 * block + d, "%lld", (long long)r.model.total_params);
    CHECK(r.model.total_params == 1235814400); /* Llama 3.2 1B */
    CHECK(model_mod(&r, "blocks.3.attn.k_proj")->n_out == 512);
    done(&r);
}

static void count_untied_and_gated(void) {
    Run r;
    run(&r, "model: {vocab_size: 100, d_model: 64, n_layers: 1, n_heads: 2, d_ff: 128, tie_embeddings: false,\n"
            "        attention_gate: true}\n", NULL, TGT_CPU, 0);
    CHECK(!r.rc);
    int64_t d = 64;
    int64_t block = 2 * d + 4 * d * d + d * d /* gate */ + 3 * 128 * d;
    CHECKF(r.model.total_params == 100 * d * 2 + block + d, "%lld", (long long)r.model.total_params);
    CHECK(model_mod(&r, "blocks.0.attn.gate_proj") != NULL);
    CHECK(model_mod(&r, "lm_head")->param_count == 100 * d);
    done(&r);
}

static void model_gqa_must_divide(void) {
    Run r;
    run(&r, "model: {vocab_size: 100, d_model: 64, n_layers: 1, n_heads: 4, n_kv_heads: 3, d_ff: 128}\n", NULL, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "model.yaml:1:76: error: n_heads (4) is not a multiple of n_kv_heads (3)"), "%s", r.log);
    done(&r);
}

/* ---- 4. layers and provenance ---- */

static void layer_recipe_only(void) {
    Run r;
    run(&r, tiny_model, "recipe: deepseek_v3\n", TGT_SM90A, 0);
    CHECK(!r.rc);
    const ModRes *q = mod(&r, "blocks.0.attn.q_proj");
    CHECK(q->low_bit && q->compute == DT_FP8);
    CHECK(decided_layer(&r, "blocks.0.attn.q_proj", F_COMPUTE) == L_RECIPE);
    CHECK(res_value(q, F_Q(OP_W, QF_TILE))->i == 128 && res_value(q, F_Q(OP_W, QF_TILE))->j == 128);
    CHECK(res_value(q, F_Q(OP_X, QF_TILE))->i == 1 && res_value(q, F_Q(OP_X, QF_TILE))->j == 128);
    CHECK(res_value(q, F_Q(OP_X, QF_HISTORY)) == NULL); /* current scaling: no history */
    CHECK(!mod(&r, "lm_head")->low_bit && mod(&r, "lm_head")->compute == DT_BF16);
    CHECK(mod(&r, "loss")->compute == DT_FP32);
    CHECK(r.res.n_low_bit == 2 * 7);
    done(&r);
}

static void layer_defaults_do_not_demote_low_bit(void) {
    Run r;
    run(&r, tiny_model, "recipe: te_delayed\ncompute: fp32\nparams: fp16\n", TGT_SM90A, 0);
    CHECK(!r.rc);
    CHECK(mod(&r, "blocks.0.attn.q_proj")->low_bit);
    CHECK(mod(&r, "final_norm")->compute == DT_FP32);
    CHECK(decided_layer(&r, "final_norm", F_COMPUTE) == L_DEFAULTS);
    CHECK(decided_line(&r, "final_norm", F_COMPUTE) == 2);
    CHECK(mod(&r, "blocks.0.attn.q_proj")->params == DT_FP16);
    CHECK(decided_layer(&r, "blocks.0.attn.q_proj", F_PARAMS) == L_DEFAULTS);
    done(&r);
}

static void layer_low_bit_over_recipe(void) {
    Run r;
    run(&r, tiny_model,
        "recipe: bf16\n"
        "low_bit:\n"
        "  modules: [\"blocks.*.ffn.*_proj\"]\n"
        "  dy: {format: e5m2, scaling: delayed, history: 16}\n",
        TGT_SM90A, 0);
    CHECK(!r.rc);
    CHECK(!mod(&r, "blocks.0.attn.q_proj")->low_bit);
    const ModRes *up = mod(&r, "blocks.1.ffn.up_proj");
    CHECK(up->low_bit);
    CHECK(decided_layer(&r, "blocks.1.ffn.up_proj", F_COMPUTE) == L_LOW_BIT);
    CHECK(decided_line(&r, "blocks.1.ffn.up_proj", F_COMPUTE) == 3);
    CHECK(res_value(up, F_Q(OP_DY, QF_HISTORY))->i == 16);
    CHECK(decided_layer(&r, "blocks.1.ffn.up_proj", F_Q(OP_DY, QF_HISTORY)) == L_LOW_BIT);
    CHECK(res_value(up, F_Q(OP_DY, QF_ALGO))->i == ALGO_MAX); /* from the recipe */
    CHECK(decided_layer(&r, "blocks.1.ffn.up_proj", F_Q(OP_DY, QF_ALGO)) == L_RECIPE);
    CHECK(res_value(up, F_Q(OP_X, QF_HISTORY)) == NULL);
    done(&r);
}

static void layer_rule_over_low_bit_override_over_rule(void) {
    Run r;
    run(&r, tiny_model,
        "recipe: deepseek_v3\n"
        "rules:\n"
        "  - match: \"blocks.0.**\"\n"
        "    compute: bf16\n"
        "  - match: \"blocks.1.ffn.*_proj\"\n"
        "    x: {tile: [1, 64]}\n"
        "overrides:\n"
        "  blocks.0.attn.q_proj: {compute: fp8}\n"
        "  blocks.1.ffn.up_proj: {x: {tile: tensor}}\n",
        TGT_SM90A, 0);
    CHECKF(!r.rc, "%s", r.log);
    CHECK(!mod(&r, "blocks.0.attn.k_proj")->low_bit); /* rule took it out */
    CHECK(decided_layer(&r, "blocks.0.attn.k_proj", F_COMPUTE) == L_RULE);
    CHECK(res_value(mod(&r, "blocks.0.attn.k_proj"), F_Q(OP_X, QF_FORMAT)) == NULL);
    CHECK(mod(&r, "blocks.0.attn.q_proj")->low_bit); /* the override put it back */
    CHECK(decided_layer(&r, "blocks.0.attn.q_proj", F_COMPUTE) == L_OVERRIDE);
    CHECK(res_value(mod(&r, "blocks.1.ffn.down_proj"), F_Q(OP_X, QF_TILE))->j == 64);
    CHECK(res_value(mod(&r, "blocks.1.ffn.up_proj"), F_Q(OP_X, QF_TILE))->i == 0);
    CHECK(decided_line(&r, "blocks.1.ffn.up_proj", F_Q(OP_X, QF_TILE)) == 9);
    CHECK(mod(&r, "blocks.0.attn_norm")->compute == DT_BF16);
    CHECK(r.res.n_low_bit == 14 - 6);
    done(&r);
}

static void layer_agreeing_rules_are_fine(void) {
    Run r;
    run(&r, tiny_model,
        "recipe: bf16\n"
        "rules:\n"
        "  - {match: \"**\", compute: fp32}\n"
        "  - {match: \"blocks.*.attn.core\", compute: fp32}\n",
        TGT_CPU, 0);
    CHECKF(!r.rc, "%s", r.log);
    CHECK(decided_line(&r, "blocks.0.attn.core", F_COMPUTE) == 3); /* the first agreeing rule */
    CHECK(mod(&r, "blocks.0.attn.core")->f[F_COMPUTE].n == 3); /* recipe + two rules */
    done(&r);
}

/* ---- 5. conflicts and unmatched paths ---- */

static void conflict_names_both_locations(void) {
    Run r;
    run(&r, tiny_model,
        "recipe: deepseek_v3\n"
        "rules:\n"
        "  - match: \"blocks.*.attn.*\"\n"
        "    compute: bf16\n"
        "  - match: \"blocks.0.**\"\n"
        "    compute: fp32\n",
        TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:6:14: error: rules 'blocks.*.attn.*' and 'blocks.0.**' give compute different "
                         "values (fp32 here, bf16 at policy.yaml:4:14)"), "%s", r.log);
    CHECKF(strstr(r.log, "policy.yaml:4:14: note: the other rule sets compute = bf16 here"), "%s", r.log);
    /* reported once, not once per module */
    CHECK(!strstr(strstr(r.log, "give compute") + 1, "give compute"));
    done(&r);
}

static void exact_unmatched_is_error_with_closest(void) {
    Run r;
    run(&r, tiny_model, "overrides:\n  blocks.0.attn.q_porj: {compute: fp32}\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:2:3: error: override path 'blocks.0.attn.q_porj' matches no module of model 't'"), "%s", r.log);
    CHECKF(strstr(r.log, "closest paths: 'blocks.0.attn.q_proj'"), "%s", r.log);
    done(&r);
}

static void pattern_unmatched_warns_strict_errors(void) {
    const char *pol = "rules:\n  - {match: \"blocks.*.ffn.w1\", compute: fp32}\n";
    Run r;
    run(&r, tiny_model, pol, TGT_SM90A, 0);
    CHECK(!r.rc);
    CHECK(r.diag.warnings == 1);
    CHECKF(strstr(r.log, "policy.yaml:2:13: warning: rule pattern 'blocks.*.ffn.w1' matches no module"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, pol, TGT_SM90A, 1);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:2:13: error: rule pattern 'blocks.*.ffn.w1' matches no module"), "%s", r.log);
    done(&r);
}

static void low_bit_on_a_norm_refused(void) {
    Run r;
    run(&r, tiny_model, "overrides:\n  final_norm: {compute: fp8}\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:2:25: error: final_norm: a rmsnorm module has no 'compute' to set in low precision"), "%s", r.log);
    done(&r);
}

/* ---- 6. target checks ---- */

static const char *e5m2_everywhere =
    "recipe: te_current\n"
    "low_bit:\n"
    "  x: {format: e5m2}\n"
    "  w: {format: e5m2}\n";

static void target_e5m2_pair_refused_on_hopper(void) {
    Run r;
    run(&r, tiny_model, e5m2_everywhere, TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:3:15: error: fprop (x * w) multiplies e5m2 by e5m2, which sm_90a tensor cores cannot do"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, e5m2_everywhere, TGT_SM89, 0);
    CHECK(r.rc);
    done(&r);
    run(&r, tiny_model, e5m2_everywhere, TGT_SM100A, 0);
    CHECKF(!r.rc, "%s", r.log);
    done(&r);
    run(&r, tiny_model, e5m2_everywhere, TGT_CPU, 0);
    CHECK(!r.rc);
    done(&r);
}

static void target_blockwise_needs_sm90a(void) {
    Run r;
    run(&r, tiny_model, "recipe: deepseek_v3\n", TGT_SM89, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "x tile [1, 128]: blockwise-scaled GEMMs need sm_90a or newer (from recipe deepseek_v3; blocks.0.attn.q_proj and 13 more modules)"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, "recipe: deepseek_v3\n", TGT_SM90A, 0);
    CHECK(!r.rc);
    done(&r);
    run(&r, tiny_model, "recipe: te_delayed\n", TGT_SM89, 0); /* per-tensor is fine on Ada */
    CHECK(!r.rc);
    done(&r);
}

static void target_mxfp8_needs_sm100a(void) {
    Run r;
    run(&r, tiny_model, "recipe: mxfp8\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "MXFP8 (E8M0 block scales) needs sm_100a"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, "recipe: mxfp8\n", TGT_SM100A, 0);
    CHECK(!r.rc);
    done(&r);
    run(&r, tiny_model, "recipe: mxfp8\nlow_bit:\n  w: {tile: [32, 32]}\n", TGT_SM100A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:3:13: error: w: E8M0 scales on sm_100a need tile [1, 32]"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, "recipe: mxfp8\nlow_bit:\n  w: {tile: [32, 32]}\n", TGT_CPU, 0);
    CHECK(!r.rc);
    done(&r);
}

static void target_tile_must_divide_everywhere(void) {
    /* d_model 96: 128 divides neither K nor N of the attention projections; partial: refuse
     * (TransformerEngine's blockwise rule) makes that an error on every target */
    const char *m96 = "model: {vocab_size: 256, d_model: 96, n_layers: 1, n_heads: 2, d_ff: 256}\n"
                      "train: {micro_batch: 2, seq_len: 64}\n";
    const char *refuse = "recipe: deepseek_v3\nlow_bit: {x: {partial: refuse}, w: {partial: refuse}, dy: {partial: refuse}}\n";
    for (int t = 0; t < TGT_COUNT; t++) {
        if (t == TGT_SM89) continue; /* refuses blockwise before divisibility matters */
        Run r;
        run(&r, m96, refuse, (Target)t, 0);
        CHECK(r.rc);
        CHECKF(strstr(r.log, "x tile [1, 128]: columns of 128 does not divide K (input features) = 96"), "%s", r.log);
        done(&r);
    }
    /* M = 2 x 50 tokens: the transposed copy of a 1x128 tile needs 128 | M */
    Run r;
    run(&r, "model: {vocab_size: 256, d_model: 128, n_layers: 1, n_heads: 2, d_ff: 256}\ntrain: {micro_batch: 2, seq_len: 50}\n",
        refuse, TGT_CPU, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "x tile [1, 128]: the transposed copy's rows of 128 does not divide M (tokens per micro-batch) = 100"), "%s", r.log);
    done(&r);
}

/* partial: ceil (every recipe's default, DeepSeek's ceil'd scale grid): the same shapes compile,
 * the last tile scaled on its own; a GPU target still needs partial dimensions in multiples of 16. */
static void partial_tiles_ceil_by_default(void) {
    const char *m96 = "model: {vocab_size: 256, d_model: 96, n_layers: 1, n_heads: 2, d_ff: 256}\n"
                      "train: {micro_batch: 2, seq_len: 64}\n";
    Target ok[] = {TGT_SM90A, TGT_CPU};
    for (int i = 0; i < 2; i++) {
        Run r;
        run(&r, m96, "recipe: deepseek_v3\n", ok[i], 0);
        CHECKF(!r.rc, "%s: %s", target_names[ok[i]], r.log);
        done(&r);
    }
    const char *m100 = "model: {vocab_size: 256, d_model: 128, n_layers: 1, n_heads: 2, d_ff: 256}\ntrain: {micro_batch: 2, seq_len: 50}\n";
    Run r;
    run(&r, m100, "recipe: deepseek_v3\n", TGT_CPU, 0);
    CHECKF(!r.rc, "cpu: %s", r.log);
    done(&r);
    run(&r, m100, "recipe: deepseek_v3\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "needs the dimension to be a multiple of 16 on sm_90a"), "%s", r.log);
    done(&r);
}

/* ---- 7. whole-plan checks ---- */

static void tied_params_must_agree(void) {
    Run r;
    run(&r, tiny_model, "overrides:\n  lm_head: {params: fp32}\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:2:21: error: tied embeddings share one weight, but lm_head stores it as fp32 and embed as bf16"), "%s", r.log);
    done(&r);
}

static void fp8_params_need_master_weights(void) {
    Run r;
    run(&r, tiny_model, "recipe: te_current\nmaster_weights: none\nrules:\n  - {match: \"blocks.*.ffn.*_proj\", params: e4m3}\n", TGT_SM90A, 0);
    CHECK(r.rc);
    CHECKF(strstr(r.log, "policy.yaml:2:17: error: FP8 parameter storage needs FP32 master weights"), "%s", r.log);
    done(&r);
    run(&r, tiny_model, "recipe: te_current\nrules:\n  - {match: \"blocks.*.ffn.*_proj\", params: e4m3}\n", TGT_SM90A, 0);
    CHECKF(!r.rc, "%s", r.log);
    MemorySummary ms;
    emit_memory_summary(&r.res, &ms);
    CHECK(ms.count[DT_E4M3] == 2 * 3 * 128 * 384);
    done(&r);
}

static void memory_summary_bf16_matches_formula(void) {
    Run r;
    run(&r, tiny_model, "recipe: bf16\n", TGT_SM90A, 0);
    CHECK(!r.rc);
    MemorySummary ms;
    emit_memory_summary(&r.res, &ms);
    double n = (double)r.model.total_params;
    CHECK(ms.param_bytes == 2 * n && ms.master_bytes == 4 * n && ms.optimizer_bytes == 8 * n);
    CHECK(ms.scale_bytes == 0 && ms.total_bytes == ms.bf16_total_bytes);
    done(&r);
}

int main(void) {
    RUN_CASE(glob_star_is_one_segment);
    RUN_CASE(glob_star_inside_segment);
    RUN_CASE(glob_double_star_any_depth);
    RUN_CASE(glob_exact_and_pathological);
    RUN_CASE(yaml_duplicate_key_names_both);
    RUN_CASE(yaml_alias_to_unfinished_anchor_refused);
    RUN_CASE(yaml_syntax_error_positioned);
    RUN_CASE(yaml_depth_capped);
    RUN_CASE(yaml_unknown_key_did_you_mean);
    RUN_CASE(count_gpt2_124m);
    RUN_CASE(count_llama_1b);
    RUN_CASE(count_untied_and_gated);
    RUN_CASE(model_gqa_must_divide);
    RUN_CASE(layer_recipe_only);
    RUN_CASE(layer_defaults_do_not_demote_low_bit);
    RUN_CASE(layer_low_bit_over_recipe);
    RUN_CASE(layer_rule_over_low_bit_override_over_rule);
    RUN_CASE(layer_agreeing_rules_are_fine);
    RUN_CASE(conflict_names_both_locations);
    RUN_CASE(exact_unmatched_is_error_with_closest);
    RUN_CASE(pattern_unmatched_warns_strict_errors);
    RUN_CASE(low_bit_on_a_norm_refused);
    RUN_CASE(target_e5m2_pair_refused_on_hopper);
    RUN_CASE(target_blockwise_needs_sm90a);
    RUN_CASE(target_mxfp8_needs_sm100a);
    RUN_CASE(target_tile_must_divide_everywhere);
    RUN_CASE(partial_tiles_ceil_by_default);
    RUN_CASE(tied_params_must_agree);
    RUN_CASE(fp8_params_need_master_weights);
    RUN_CASE(memory_summary_bf16_matches_formula);
    CHECK_EXIT();
}
