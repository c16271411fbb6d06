/* cg_gemm.c: kernel instances of the templates/gemm.cuh family (see codegen.c for the contract).
 *
 * One qgemm step (out|a,a_scale_inv,b,b_scale_inv,?bias) becomes one mma.sync FP8 GEMM with its
 * shapes, formats, scale tiles, output and bias types as literal constants. Refuses what the
 * template cannot do, with the reason: MX (E8M0) scales, E2M1, dimensions that are not multiples of
 * 16, and scale tiles along the contraction that are not multiples of 128 (the promotion block).
 * Must not: pick a tile that the template's static_asserts would refuse (checked here first, so a
 * plan never carries a kernel that fails to compile).
 */
#include "fp8c.h"

#include <string.h>

#define GEMM_BK 128 /* contraction depth of one stage = the promotion interval (templates/gemm.cuh) */
#define GEMM_BN 64
#define GEMM_WARP_TILE 32 /* every warp owns 32 x 32 outputs: 32 + 32 accumulators, no spills */

static const char *const fmt_names[] = {"e4m3", "e5m2"};

/* The exact instruction each format pair compiles to: `fp8c inspect` checks the PTX holds it. */
static const char *const mma_audit[2][2] = {
    {"mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32"},
    {"mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e4m3.f32", "mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32"},
};

static int is_value_dtype(TensorDtype t) { return t == TD_F32 || t == TD_BF16 || t == TD_F16; }

/* A scale tile along the contraction R must give one scale per 128-deep K block. */
static int k_tile_ok(int64_t tc, int64_t R) { return tc <= 0 || tc >= R || tc % GEMM_BK == 0; }

int cg_gen_gemm(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    if (grp->kind != FUSE_NONE || grp->nsteps != 1 || g->s[grp->step_ids[0]].op != OP_QGEMM) {
        snprintf(err, errlen, "the gemm family runs single qgemm steps only");
        return -1;
    }
    const GStep *s = &g->s[grp->step_ids[0]];
    const int64_t *v = s->ints;
    int64_t P = v[0], Q = v[1], R = v[2];
    int acc = v[3] != 0, af = (int)v[6], bf = (int)v[9], mx = v[10] != 0;
    int64_t atr = v[4] > 0 ? v[4] : 0, atc = v[5] > 0 ? v[5] : 0, btr = v[7] > 0 ? v[7] : 0, btc = v[8] > 0 ? v[8] : 0;
    int out = s->args[0], bias = s->args[5];
    if (mx) {
        snprintf(err, errlen, "MX (E8M0 1x32) scales need the block-scaled MMA of sm_100a; the generated mma.sync GEMM "
                              "takes FP32 scale inverses only");
        return -1;
    }
    if (af < 0 || af > 1 || bf < 0 || bf > 1) {
        snprintf(err, errlen, "the generated GEMM multiplies E4M3 and E5M2 codes; E2M1 (FP4) needs sm_100a");
        return -1;
    }
    if (P % 16 || Q % 16 || R % 16 || P <= 0 || Q <= 0 || R <= 0) {
        snprintf(err, errlen, "the generated GEMM needs P, Q and R to be positive multiples of 16, not %lld x %lld x %lld",
                 (long long)P, (long long)Q, (long long)R);
        return -1;
    }
    if (!k_tile_ok(atc, R) || !k_tile_ok(btc, R)) {
        int bad_a = !k_tile_ok(atc, R);
        snprintf(err, errlen, "the generated GEMM applies scales once per 128-deep K block: %s's tile along R = %lld is %lld wide, "
                 "not a multiple of 128 (use a [1, 128] or [128, 128] tile, or cuBLASLt)", bad_a ? "a" : "b", (long long)R,
                 (long long)(bad_a ? atc : btc));
        return -1;
    }
    if (!is_value_dtype(g->t[out].dtype) || (bias >= 0 && !is_value_dtype(g->t[bias].dtype)) || g->t[s->args[1]].dtype != TD_U8 ||
        g->t[s->args[3]].dtype != TD_U8 || g->t[s->args[2]].dtype != TD_F32 || g->t[s->args[4]].dtype != TD_F32) {
        snprintf(err, errlen, "the generated GEMM takes u8 codes, f32 scale inverses and an f32/bf16/f16 output and bias");
        return -1;
    }
    /* 128 x 64 block tiles (4 x 2 warps) when they give at least one block per SM of an H100,
     * 64 x 64 (2 x 2 warps) for the small GEMMs that would leave most SMs idle otherwise. */
    int64_t nbn = (Q + GEMM_BN - 1) / GEMM_BN;
    int bm = ((P + 127) / 128) * nbn >= 132 ? 128 : 64;
    int64_t nbm = (P + bm - 1) / bm;
    if (nbm > 65535) {
        snprintf(err, errlen, "P = %lld needs more than 65535 row blocks of %d", (long long)P, bm);
        return -1;
    }
    int smem = 2 * (bm + GEMM_BN) * GEMM_BK;
    int wm = bm / GEMM_WARP_TILE, wn = GEMM_BN / GEMM_WARP_TILE, threads = wm * wn * 32;
    const char *tout = cg_ctype(g->t[out].dtype), *tb = bias >= 0 ? cg_ctype(g->t[bias].dtype) : "float";

    snprintf(k->family, sizeof k->family, "gemm");
    snprintf(k->name, sizeof k->name, "qgemm_%s_%s_%s_P%lld_Q%lld_R%lld_%s_a%lldx%lld_b%lldx%lld%s%s", fmt_names[af], fmt_names[bf],
             fp8c_tensor_dtype_names[g->t[out].dtype], (long long)P, (long long)Q, (long long)R, acc ? "acc" : "set", (long long)atr,
             (long long)atc, (long long)btr, (long long)btc, bias >= 0 ? "_bias_" : "",
             bias >= 0 ? fp8c_tensor_dtype_names[g->t[bias].dtype] : "");
    cg_add_param(k, g, "out", out, 1);
    cg_add_param(k, g, "a", s->args[1], 0);
    cg_add_param(k, g, "a_scale_inv", s->args[2], 0);
    cg_add_param(k, g, "b", s->args[3], 0);
    cg_add_param(k, g, "b_scale_inv", s->args[4], 0);
    cg_add_param(k, g, "bias", bias, 0);

    buf_printf(&k->body, "extern \"C\" __global__ void __launch_bounds__(%d, GEMM_MIN_BLOCKS) %s(", threads, k->name);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    qgemm<%s, %s, FMT_%s, FMT_%s, %lld, %lld, %lld, %d, %d, %lld, %lld, %lld, %lld, %d, %d, %d, %d>(out, a, a_scale_inv, b, "
               "b_scale_inv, %s);\n}\n",
               tout, tb, af ? "E5M2" : "E4M3", bf ? "E5M2" : "E4M3", (long long)P, (long long)Q, (long long)R, acc, bias >= 0, (long long)atr,
               (long long)atc, (long long)btr, (long long)btc, bm, GEMM_BN, wm, wn, bias >= 0 ? "bias" : "(const float *)nullptr");

    int kscaled = (atc > 0 && atc < R) || (btc > 0 && btc < R);
    buf_printf(&k->constants,
               "{\"P\": %lld, \"Q\": %lld, \"R\": %lld, \"accumulate\": %d, \"a_format\": \"%s\", \"a_tile\": [%lld, %lld], "
               "\"b_format\": \"%s\", \"b_tile\": [%lld, %lld], \"out\": \"%s\", \"bias\": %s, \"BM\": %d, \"BN\": %d, \"BK\": %d, "
               "\"stages\": 2, \"promotion\": \"%s\"}",
               (long long)P, (long long)Q, (long long)R, acc, fmt_names[af], (long long)atr, (long long)atc, fmt_names[bf], (long long)btr,
               (long long)btc, fp8c_tensor_dtype_names[g->t[out].dtype], bias >= 0 ? "true" : "false", bm, GEMM_BN, GEMM_BK,
               kscaled ? "every 128 of K, scaled by the block's sa*sb" : "every 128 of K, scales applied at the end");
    cg_add_entry(k, k->name, (int)nbn, (int)nbm, 1, threads, 1, 1, smem);
    k->audit[k->naudit++] = mma_audit[af][bf];
    k->audit[k->naudit++] = "cp.async.cg.shared.global";
    k->scratch_bytes = 0;
    return 0;
}
