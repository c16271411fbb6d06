/* fuzz_front.c: libFuzzer target for the whole front end. Each input is used twice: as a policy
 * file against a fixed small model, and as a model file against a fixed policy. Whatever the
 * bytes, fp8c must report errors and return, never crash, hang or leak; a valid pair goes on
 * through plan.json, report.md and explain (to memory and /dev/null, never to disk).
 * Build and run: tests/fuzz/run.sh [SECONDS]. Replayed over the corpus by tests/fuzz/replay.c. */
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

static const char model_text[] =
    "model: {name: f, vocab_size: 256, d_model: 128, n_layers: 2, n_heads: 4, n_kv_heads: 2, d_ff: 256,\n"
    "        activation: swiglu, attention_gate: true, tie_embeddings: true}\n"
    "train: {micro_batch: 2, seq_len: 64}\n";
static const char policy_text[] = "recipe: deepseek_v3\nrules:\n  - {match: \"blocks.0.**\", compute: bf16}\n";

static void one(const char *mtext, size_t mlen, const char *ptext, size_t plen, FILE *devnull) {
    for (int t = 0; t < TGT_COUNT; t++) {
        Arena a = {0};
        Diag d;
        diag_init(&d, devnull);
        d.strict = t & 1;
        Model m;
        Policy p;
        Resolution r;
        int mf = diag_add_file(&d, "model.yaml", mtext, mlen);
        YamlNode *mroot = yml_parse(&a, &d, mf, mtext, mlen);
        int pf = diag_add_file(&d, "policy.yaml", ptext, plen);
        YamlNode *proot = yml_parse(&a, &d, pf, ptext, plen);
        if (mroot && proot && !model_load(&a, &d, mroot, &m) && m.total_params < ((int64_t)1 << 40) &&
            m.nmods < 4000 && !pol_load(&a, &d, proot, "policy.yaml", &p) && !res_resolve(&a, &d, &m, &p, (Target)t, &r)) {
            Buf b = {0};
            Graph g;
            low_lower(&a, &d, &r, &g);
            sch_build(&a, &g, 1);
            mem_plan(&g);
            emit_plan_json(&b, &d, &r, &g, NULL);
            free(g.t);
            free(g.s);
            emit_report_md(&b, &d, &r);
            buf_free(&b);
            explain_print(devnull, &d, &r, NULL, 0);
        }
        arena_free(&a);
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static FILE *devnull;
    if (!devnull) devnull = fopen("/dev/null", "w");
    if (size > 1 << 16) return 0;
    char *text = malloc(size + 1); /* NUL-terminated copy: diagnostics print source lines */
    memcpy(text, data, size);
    text[size] = 0;
    one(model_text, sizeof model_text - 1, text, size, devnull);
    one(text, size, policy_text, sizeof policy_text - 1, devnull);
    free(text);
    return 0;
}
