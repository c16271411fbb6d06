/* test_model_grad.c: whole-model gradient checks under the fp32 policy. A model is compiled by
 * the real front end and lowering, its plan written and read back, and the CPU backend's
 * backward program is compared with central finite differences of the forward program's mean
 * loss, parameter by parameter, for a sample of elements of every parameter tensor. */
#include "check.h"
#include "runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rng.h"

typedef struct {
    Arena arena;
    Diag diag;
    Model model;
    Policy policy;
    Resolution res;
    Graph g;
    Plan plan;
    CpuBackend b;
    char dir[64];
    int ok;
} Setup;

static void setup(Setup *s, const char *model_yaml, const char *policy_yaml) {
    memset(s, 0, sizeof *s);
    FILE *log = fopen("/dev/null", "w");
    diag_init(&s->diag, log ? log : stderr);
    int mf = diag_add_file(&s->diag, "model.yaml", model_yaml, strlen(model_yaml));
    YamlNode *mr = yml_parse(&s->arena, &s->diag, mf, model_yaml, strlen(model_yaml));
    int pf = diag_add_file(&s->diag, "policy.yaml", policy_yaml, strlen(policy_yaml));
    YamlNode *pr = yml_parse(&s->arena, &s->diag, pf, policy_yaml, strlen(policy_yaml));
    snprintf(s->dir, sizeof s->dir, "/tmp/fp8c-gradcheck-XXXXXX");
    char err[512];
    if (!mr || !pr || model_load(&s->arena, &s->diag, mr, &s->model) ||
        pol_load(&s->arena, &s->diag, pr, "policy.yaml", &s->policy) ||
        res_resolve(&s->arena, &s->diag, &s->model, &s->policy, TGT_CPU, &s->res) || !mkdtemp(s->dir))
        return;
    rmdir(s->dir);
    low_lower(&s->arena, &s->diag, &s->res, &s->g);
    sch_build(&s->arena, &s->g, 1); /* the fused schedule: what the GPU launches */
    mem_plan(&s->g);
    if (emit_output_dir(&s->diag, &s->res, &s->g, NULL, s->dir) || plan_load(&s->arena, &s->diag, s->dir, &s->plan) ||
        cpu_init(&s->b, &s->plan, err, sizeof err) || rt_init_params(&s->b, err, sizeof err))
        return;
    s->ok = 1;
}

static void teardown(Setup *s) {
    char path[128];
    snprintf(path, sizeof path, "%s/plan.json", s->dir);
    remove(path);
    snprintf(path, sizeof path, "%s/report.md", s->dir);
    remove(path);
    rmdir(s->dir);
    cpu_free(&s->b);
    free(s->g.t);
    free(s->g.s);
    if (s->diag.out != stderr) fclose(s->diag.out);
    arena_free(&s->arena);
}

static double forward_loss(Setup *s) {
    RunState st = {0};
    cpu_run(&s->b, SEC_FORWARD, &st);
    const float *l = cpu_ptr(&s->b, s->plan.losses);
    double sum = 0;
    int64_t n = s->plan.t[s->plan.losses].n;
    for (int64_t i = 0; i < n; i++) sum += l[i];
    return sum / (double)n;
}

/* MoE routing is piecewise constant in the parameters: a finite difference that moves a token's
 * top-k choice measures a jump, not a derivative. The expert ids of every MoE layer after a
 * forward (int32 activations, live until the backward reads them) tell whether it did. */
static uint64_t routing_hash(Setup *s) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < s->plan.nt; i++) {
        const RtTensor *t = &s->plan.t[i];
        if (t->dtype != TD_I32 || t->cls != TC_ACT) continue;
        const int32_t *v = cpu_ptr(&s->b, i);
        for (int64_t k = 0; k < t->n; k++) h = (h ^ (uint64_t)(uint32_t)v[k]) * 1099511628211ull;
    }
    return h;
}

/* Compare d(mean loss)/d(param) for `per_tensor` random elements of every parameter tensor. */
static void gradcheck_gain(const char *model_yaml, int per_tensor, float gain);
static void gradcheck(const char *model_yaml, int per_tensor) { gradcheck_gain(model_yaml, per_tensor, 1.0f); }

/* gain != 1: every weight matrix is multiplied by gain first (a check at another point of
 * parameter space), so that gradients stand well above the finite differences' rounding noise,
 * and each tensor's checked elements must also agree as a vector: |fd - g|_1 <= 3% |fd|_1. */
static void gradcheck_gain(const char *model_yaml, int per_tensor, float gain) {
    Setup s;
    setup(&s, model_yaml, "recipe: fp32\n");
    CHECKF(s.ok, "setup failed");
    if (!s.ok) {
        teardown(&s);
        return;
    }
    const Plan *p = &s.plan;
    int64_t M = p->train.micro_batch * p->train.seq_len;
    int32_t *tok = cpu_ptr(&s.b, p->tokens), *tgt = cpu_ptr(&s.b, p->targets);
    uint64_t rs = 7;
    for (int64_t i = 0; i < M; i++) tok[i] = (int32_t)rng_below(&rs, (uint32_t)p->vocab), tgt[i] = (int32_t)rng_below(&rs, (uint32_t)p->vocab);
    for (int i = 0; gain != 1.0f && i < p->nt; i++) {
        const RtTensor *t = &p->t[i];
        if (t->cls != TC_PARAM || t->ndim != 2) continue;
        float *w = cpu_ptr(&s.b, i);
        for (int64_t k = 0; k < t->n; k++) w[k] *= gain;
    }
    /* analytic: one forward + backward with dloss = 1/M (the mean over tokens) */
    RunState st = {0};
    st.dloss = 1.0f / (float)M;
    memset(s.b.base[TC_GRAD], 0, (size_t)p->class_bytes[TC_GRAD] * (size_t)s.b.factor[TC_GRAD]);
    cpu_run(&s.b, SEC_FORWARD, &st);
    cpu_run(&s.b, SEC_BACKWARD, &st);
    /* the check is not vacuous: a real loss near log(V), and gradients that are not all zero */
    double l0 = forward_loss(&s);
    CHECKF(l0 > 1.0 && l0 < 20.0, "the forward loss is %g, not near log(vocab)", l0);
    uint64_t route0 = routing_hash(&s);
    int checked = 0, tensors = 0, nonzero = 0, rerouted = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < p->nt; i++) {
        const RtTensor *t = &p->t[i];
        if (t->cls != TC_PARAM) continue;
        char gname[512];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        int gi = plan_find(p, gname);
        CHECKF(gi >= 0, "no gradient for %s", t->name);
        if (gi < 0) continue;
        tensors++;
        float *w = cpu_ptr(&s.b, i);
        const float *g = cpu_ptr(&s.b, gi);
        double l1_err = 0, l1_fd = 0;
        for (int k = 0; k < per_tensor; k++) {
            int64_t e = (int64_t)rng_below(&rs, (uint32_t)t->n);
            float keep = w[e];
            /* Central difference with h = 3e-3. The per-token losses are FP32 values near
             * log(V) = 3.7, so each forward carries rounding of about 5e-7, i.e. up to ~1.5e-4
             * after dividing by 2h; the O(h^2) truncation error is ~1e-5 relative at this h
             * (h = 1e-2 already shows 6% on GELU-model biases, h = 1e-3 drowns in rounding).
             * Hence the tolerance 1.5e-4 absolute + 2% relative. */
            float h = 3e-3f;
            w[e] = keep + h;
            double lp = forward_loss(&s);
            uint64_t rp = routing_hash(&s);
            w[e] = keep - h;
            double lm = forward_loss(&s);
            uint64_t rm = routing_hash(&s);
            w[e] = keep;
            if (rp != route0 || rm != route0) { /* a top-k choice moved: no derivative to compare */
                rerouted++;
                continue;
            }
            double fd = (lp - lm) / (2.0 * (double)h);
            double err = fabs(fd - (double)g[e]) / (1e-4 + fabs(fd));
            if (fabs(fd - g[e]) > 1.5e-4 && err > worst) {
                worst = err;
                worst_name = t->name;
            }
            CHECKF(fabs(fd - g[e]) <= 1.5e-4 + 2e-2 * fabs(fd), "%s[%lld]: backward %.7g, finite difference %.7g", t->name,
                   (long long)e, g[e], fd);
            l1_err += fabs(fd - g[e]);
            l1_fd += fabs(fd);
            checked++;
            nonzero += g[e] != 0.0f;
        }
        if (gain != 1.0f)
            CHECKF(l1_err <= 3e-2 * l1_fd + 1e-4 * per_tensor, "%s: |fd - backward|_1 = %.4g against |fd|_1 = %.4g", t->name, l1_err, l1_fd);
    }
    CHECKF(nonzero > checked / 2, "only %d of %d checked gradient elements are nonzero", nonzero, checked);
    CHECKF(rerouted * 5 <= checked, "%d of %d perturbations moved a top-k choice: the check compared too little", rerouted, checked + rerouted);
    fprintf(stderr, "gradcheck: %d elements of %d parameter tensors (%d skipped: routing moved), worst relative error %.3g (%s)\n", checked,
            tensors, rerouted, worst, worst_name);
    teardown(&s);
}

static void gradcheck_llama_style(void) {
    gradcheck("model: {vocab_size: 40, d_model: 16, n_layers: 2, n_heads: 4, n_kv_heads: 2, d_ff: 24, activation: swiglu,\n"
              "        norm: rmsnorm, positions: rope, tie_embeddings: false, attention_gate: true, max_seq_len: 16}\n"
              "train: {micro_batch: 2, seq_len: 8}\n",
              6);
}

static void gradcheck_gpt2_style(void) {
    gradcheck("model: {vocab_size: 40, d_model: 16, n_layers: 2, n_heads: 2, d_ff: 32, activation: gelu, norm: layernorm,\n"
              "        positions: learned, bias: true, tie_embeddings: true, max_seq_len: 16}\n"
              "train: {micro_batch: 2, seq_len: 8}\n",
              6);
}

/* Every MLA and MoE module: q-LoRA (q_a_proj, q_a_norm, q_b_proj), kv_a_proj / kv_a_norm /
 * kv_b_proj, decoupled RoPE with qk head dim 8 + 4 != v head dim 6, a dense first layer, then a
 * router (sigmoid scoring, normalized top-2 of 4, scaled), four routed experts and a shared one.
 * The router's backward is checked through the combine weights. */
static void gradcheck_deepseek_style(void) {
    gradcheck_gain("model: {vocab_size: 40, d_model: 16, n_layers: 2, n_heads: 2, d_ff: 24, tie_embeddings: false, max_seq_len: 16,\n"
              "        attention: mla, q_lora_rank: 12, kv_lora_rank: 10, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 6,\n"
              "        ffn: moe, first_dense_layers: 1, n_routed_experts: 4, n_shared_experts: 1, top_k: 2, expert_d_ff: 8,\n"
              "        scoring: sigmoid, norm_topk_prob: true, routed_scaling_factor: 1.5}\n"
              "train: {micro_batch: 2, seq_len: 8}\n",
              8, 12.0f);
}

/* Softmax scoring without normalization (DeepSeek-V2's router) and no q-LoRA (a plain q_proj). */
static void gradcheck_deepseek_v2_style(void) {
    gradcheck_gain("model: {vocab_size: 40, d_model: 16, n_layers: 1, n_heads: 2, tie_embeddings: true, max_seq_len: 16,\n"
              "        attention: mla, q_lora_rank: 0, kv_lora_rank: 10, qk_nope_head_dim: 6, qk_rope_head_dim: 6, v_head_dim: 8,\n"
              "        ffn: moe, n_routed_experts: 3, n_shared_experts: 2, top_k: 2, expert_d_ff: 8, scoring: softmax}\n"
              "train: {micro_batch: 2, seq_len: 8}\n",
              8, 12.0f);
}

int main(void) {
    RUN_CASE(gradcheck_deepseek_style);
    RUN_CASE(gradcheck_deepseek_v2_style);
    RUN_CASE(gradcheck_llama_style);
    RUN_CASE(gradcheck_gpt2_style);
    CHECK_EXIT();
}
