/* hf.h: Hugging Face checkpoints in and out (hf.c), and the checkpoint commands that run a
 * model (infer.c: eval, sample). */
#ifndef FP8C_RUNTIME_HF_H
#define FP8C_RUNTIME_HF_H

#include "runtime.h"

/* The plan.json "model" section, as export and import need it. */
typedef struct {
    char name[128];
    int64_t vocab, d, L, H, KV, hd, ff, max_seq;
    double eps, theta;
    int gelu, layernorm, learned, bias, tied, gate;
    /* attention: mla / ffn: moe (DeepSeek-V2/V3) */
    int mla, moe, softmax, norm_topk;
    int64_t q_lora, kv_lora, dn, dr, dv;  /* ranks; per-head qk_nope, qk_rope, v widths */
    int64_t E, shared, topk, eff, first_dense;
    double route_scale, bias_speed, aux_coef;
    char train_json[2048]; /* the plan's "train" object, kept in config.json as fp8c_train */
} HfModel;

int hf_model_of_plan(const char *plan_dir, HfModel *m, char *err, size_t errlen);
/* "llama", "gpt2" or "deepseek_v3" when the model is exactly that architecture; NULL and why otherwise. */
const char *hf_arch(const HfModel *m, char *why, size_t n);

typedef struct {
    const char *ckpt, *plan_dir, *out;
    const char *format; /* "hf" | "fp8" */
    const char *dtype;  /* "bf16" | "fp32" | NULL: the parameters' own */
} HfExport;

/* fp8c export; returns an exit code, messages printed. */
int hf_export(const HfExport *o);

/* Load an HF model directory (model.safetensors or model-0000N-of-0000M shards) into the plan's
 * parameters and master weights; all or nothing. 0, or -1 with a message. */
int hf_load_weights(CpuBackend *b, const char *dir, char *err, size_t errlen);

/* ---- infer.c ---- */

typedef struct {
    const char *ckpt;     /* an fp8c checkpoint file or a Hugging Face directory */
    const char *plan_dir; /* NULL: the checkpoint's directory */
    const char *data, *prompt;
    const char *logits;   /* eval: write the first sequence's logits (seq_len, vocab) here as .npy float32 */
    int64_t tokens, top_k, seed;
    double temperature;
} InferOpts;

int rt_eval(const InferOpts *o);
int rt_sample(const InferOpts *o);
/* Copy PLAN_DIR/plan.json next to the checkpoints (CKPT_DIR/plan.json), so that eval, sample
 * and export find the plan a checkpoint belongs to. 0 or -1 with a message. */
int rt_keep_plan(const char *plan_dir, const char *ckpt_dir, char *err, size_t errlen);

#endif
