/* recipes.c: the built-in recipes, the lowest layer of every policy (DESIGN.md section 5).
 * Pure data: each recipe is complete (every run-level field, every quantization subfield) so
 * that a policy built on it never has a field that nothing decided. Where a recipe has no
 * low-bit modules (fp32, bf16), its quantization subfields are the TransformerEngine current
 * scaling defaults: they apply only if a policy file makes modules low-bit without saying how. */
#include "fp8c.h"

#include <string.h>

#define Q_ALL (((UINT64_C(1) << NFIELDS) - 1) & ~(UINT64_C(1) << F_PARAMS) & ~(UINT64_C(1) << F_COMPUTE))
#define G_ALL ((UINT32_C(1) << G_COUNT) - 1)

/* One operand's complete quantization spec. Delayed-scaling subfields are given even for
 * current scaling so that a rule switching to `scaling: delayed` inherits sane values. */
#define QSPEC(op, fmt, sc, r, c, sf, hist, algo)                                                  \
    [F_Q(op, QF_FORMAT)] = {fmt, 0, 0}, [F_Q(op, QF_SCALING)] = {sc, 0, 0},                       \
    [F_Q(op, QF_TILE)] = {r, c, 0}, [F_Q(op, QF_SCALE_FORMAT)] = {sf, 0, 0},                      \
    [F_Q(op, QF_HISTORY)] = {hist, 0, 0}, [F_Q(op, QF_ALGO)] = {algo, 0, 0},                      \
    [F_Q(op, QF_MARGIN)] = {0, 0, 0}, [F_Q(op, QF_INTERVAL)] = {1, 0, 0},                         \
    [F_Q(op, QF_SCALE)] = {0, 0, 1.0}, [F_Q(op, QF_PARTIAL)] = {PT_CEIL, 0, 0}

/* Per-tensor HYBRID (E4M3 forward, E5M2 gradients), TransformerEngine's default formats. */
#define TE_HYBRID(sc, algo)                                                                       \
    QSPEC(OP_X, DT_E4M3, sc, 0, 0, DT_FP32, 1024, algo), QSPEC(OP_W, DT_E4M3, sc, 0, 0, DT_FP32, 1024, algo), \
        QSPEC(OP_DY, DT_E5M2, sc, 0, 0, DT_FP32, 1024, algo)

#define GLOBALS(master)                                                                           \
    {.set = G_ALL,                                                                                \
     .v = {[G_MASTER_WEIGHTS] = {master, 0, 0}, [G_OPTIMIZER_STATE] = {DT_FP32, 0, 0},           \
           [G_GRAD_ACCUM] = {DT_FP32, 0, 0}, [G_LOSS] = {DT_FP32, 0, 0},                          \
           [G_LS_MODE] = {LS_NONE, 0, 0}, [G_LS_SCALE] = {0, 0, 1.0},                             \
           [G_LS_INIT] = {0, 0, 65536.0}, [G_LS_GROWTH] = {0, 0, 2.0},                            \
           [G_LS_BACKOFF] = {0, 0, 0.5}, [G_LS_INTERVAL] = {2000, 0, 0}}}

/* Every projection of attention (MHA's q/k/v/o, MLA's q_a/q_b/kv_a/kv_b/o) and of the FFN (dense,
 * routed experts `ffn.experts.{e}.*_proj`, shared experts `ffn.shared.*_proj`). Not the MoE
 * router, norms, embeddings or lm_head. */
static const char *const block_linears[] = {"blocks.*.attn.*_proj", "blocks.*.ffn.**.*_proj", NULL};

static const Recipe recipes[] = {
    {.name = "fp32",
     .source = "plain FP32 training: the numerical baseline",
     .globals = GLOBALS(DT_NONE),
     .params = DT_FP32,
     .compute = DT_FP32,
     .low_bit = NULL,
     .quant = {.set = Q_ALL, .v = {TE_HYBRID(SC_CURRENT, ALGO_MAX)}}},
    {.name = "bf16",
     .source = "BF16 mixed precision: BF16 parameters and compute, FP32 master weights, moments and loss",
     .globals = GLOBALS(DT_FP32),
     .params = DT_BF16,
     .compute = DT_BF16,
     .low_bit = NULL,
     .quant = {.set = Q_ALL, .v = {TE_HYBRID(SC_CURRENT, ALGO_MAX)}}},
    {.name = "te_delayed",
     .source = "TransformerEngine DelayedScaling defaults: Format.HYBRID, amax_history_len 1024, "
               "amax_compute_algo max, margin 0, interval 1",
     .globals = GLOBALS(DT_FP32),
     .params = DT_BF16,
     .compute = DT_BF16,
     .low_bit = block_linears,
     .quant = {.set = Q_ALL, .v = {TE_HYBRID(SC_DELAYED, ALGO_MAX)}}},
    {.name = "te_current",
     .source = "TransformerEngine Float8CurrentScaling: Format.HYBRID, per-tensor scale from the "
               "tensor's own amax",
     .globals = GLOBALS(DT_FP32),
     .params = DT_BF16,
     .compute = DT_BF16,
     .low_bit = block_linears,
     .quant = {.set = Q_ALL, .v = {TE_HYBRID(SC_CURRENT, ALGO_MAX)}}},
    {.name = "deepseek_v3",
     .source = "DeepSeek-V3 technical report (arXiv 2412.19437) section 3.3: E4M3 everywhere, "
               "1x128 activation/gradient tiles, 128x128 weight blocks, FP32 scales; embedding, "
               "norms and output head in BF16, MoE router in FP32; FP32 master weights, moments and loss",
     .globals = GLOBALS(DT_FP32),
     .params = DT_BF16,
     .compute = DT_BF16,
     .low_bit = block_linears,
     .router = DT_FP32, /* as DeepSeek's reference, Megatron (moe_router_dtype) and torchtitan do */
     .quant = {.set = Q_ALL,
               .v = {QSPEC(OP_X, DT_E4M3, SC_CURRENT, 1, 128, DT_FP32, 1024, ALGO_MAX),
                     QSPEC(OP_W, DT_E4M3, SC_CURRENT, 128, 128, DT_FP32, 1024, ALGO_MAX),
                     QSPEC(OP_DY, DT_E4M3, SC_CURRENT, 1, 128, DT_FP32, 1024, ALGO_MAX)}}},
    {.name = "mxfp8",
     .source = "OCP Microscaling (MX) v1.0 MXFP8: E4M3 elements in blocks of 32 along the "
               "contraction dimension, one E8M0 scale per block",
     .globals = GLOBALS(DT_FP32),
     .params = DT_BF16,
     .compute = DT_BF16,
     .low_bit = block_linears,
     .quant = {.set = Q_ALL,
               .v = {QSPEC(OP_X, DT_E4M3, SC_CURRENT, 1, 32, DT_E8M0, 1024, ALGO_MAX),
                     QSPEC(OP_W, DT_E4M3, SC_CURRENT, 1, 32, DT_E8M0, 1024, ALGO_MAX),
                     QSPEC(OP_DY, DT_E4M3, SC_CURRENT, 1, 32, DT_E8M0, 1024, ALGO_MAX)}}},
};

const int recipe_count = (int)(sizeof recipes / sizeof recipes[0]);
const char *const recipe_names[] = {"fp32", "bf16", "te_delayed", "te_current", "deepseek_v3", "mxfp8"};

const Recipe *recipe_find(const char *name) {
    for (int i = 0; i < recipe_count; i++)
        if (!strcmp(recipes[i].name, name)) return &recipes[i];
    return NULL;
}
