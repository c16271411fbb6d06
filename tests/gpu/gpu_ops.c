/* gpu_ops.c: every GPU launch of a plan against the CPU reference (DESIGN.md section 10, tier 5).
 *
 * Inputs are realistic and fresh: parameters from the plan's random init (seed from argv), a
 * random token batch, and each step's inputs taken from the CPU reference's own run of the
 * program up to that step, uploaded right before the GPU runs that one step (or fused group).
 * Every pure output is poisoned on the device first (0xFF bytes: NaN, or code 0xFF), so an
 * element a kernel forgets to write fails. Tolerances, per output dtype (why: FP32 math in a
 * different order, then one rounding to the stored type):
 *   u8 codes and their float scales: exact (quantizers are specified bit for bit);
 *   bf16: |gpu - cpu| <= 2^-7 |cpu| + 1e-6 (two bf16 ulps: summation order can flip one rounding);
 *   f16: 2^-9 relative; f32: 1e-4 relative + 1e-5 x max|cpu| (reductions of up to 10^4 terms).
 * GEMM outputs (cuBLASLt or generated) get 2^-6 relative + 2^-8 x max|cpu|: FP8 products are
 * exact in FP32, the accumulation order and the tensor cores' internal alignment are not (notes 5.3).
 * Prints one PASS/FAIL line per launch. Needs a GPU: without one it prints SKIP and exits 0.
 * Usage: gpu_ops PLAN_DIR [seed] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "data.h"
#include "runtime.h"

static int is_out(OpKind op, int k) {
    const char *a = fp8c_op_info[op].args;
    int idx = 0;
    for (const char *c = a; *c && *c != '|'; c++)
        if (*c == ',') idx++;
    return k <= idx;
}
static int is_accum(OpKind op, int k) {
    const char *a = fp8c_op_info[op].args;
    int idx = 0;
    const char *start = a;
    for (const char *c = a; *c; c++) {
        if (idx == k) {
            start = c;
            break;
        }
        if (*c == ',' || *c == '|') idx++;
    }
    return *start == '+';
}

static double tol_rel(const RtTensor *t, int gemm) {
    if (gemm) return 1.0 / 64;
    return t->dtype == TD_BF16 ? 1.0 / 128 : t->dtype == TD_F16 ? 1.0 / 512 : 1e-4;
}

/* 0 if the GPU's copy of tensor id matches the reference; prints the worst element otherwise. */
static int compare(const Plan *p, int id, const float *ref, const float *gpu, int gemm, char *why, size_t n) {
    const RtTensor *t = &p->t[id];
    if (t->dtype == TD_U8 || t->dtype == TD_I32) {
        const unsigned char *a = (const unsigned char *)ref, *b = (const unsigned char *)gpu;
        size_t bytes = (size_t)t->n * (size_t)fp8c_tensor_dtype_bytes[t->dtype];
        for (size_t i = 0; i < bytes; i++)
            if (a[i] != b[i]) {
                snprintf(why, n, "%s: byte %zu is 0x%02x, the reference has 0x%02x (codes must be exact)", t->name, i, b[i], a[i]);
                return -1;
            }
        return 0;
    }
    double amax = 0;
    for (int64_t i = 0; i < t->n; i++)
        if (fabs(ref[i]) > amax && isfinite(ref[i])) amax = fabs(ref[i]);
    int exact = strstr(t->name, "scale_inv") != NULL || strstr(t->name, "amax") != NULL;
    double rel = exact ? 0 : tol_rel(t, gemm), abs_tol = exact ? 0 : (gemm ? amax / 256 : t->dtype == TD_F32 ? 1e-5 * amax : 1e-6);
    for (int64_t i = 0; i < t->n; i++) {
        double r = ref[i], g = gpu[i];
        if (isnan(r) && isnan(g)) continue;
        if (!(fabs(g - r) <= abs_tol + rel * fabs(r))) {
            snprintf(why, n, "%s[%lld] = %.9g, the reference has %.9g (tolerance %.3g + %.3g relative)", t->name, (long long)i, g, r,
                     abs_tol, rel);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gpu_ops PLAN_DIR [seed]\n");
        return 2;
    }
    char why[1024];
    if (!cu_probe(why, sizeof why)) {
        printf("SKIP gpu_ops: %s\n", why);
        return 0;
    }
    Arena a = {0};
    Diag d;
    diag_init(&d, stderr);
    Plan p;
    if (plan_load(&a, &d, argv[1], &p)) return 2;
    if (argc > 2) p.train.seed = strtoull(argv[2], NULL, 10);
    CpuBackend ref, got;
    char err[2048];
    if (cpu_init(&ref, &p, err, sizeof err) || cpu_init(&got, &p, err, sizeof err) || rt_init_params(&ref, err, sizeof err)) {
        fprintf(stderr, "gpu_ops: %s\n", err);
        return 1;
    }
    CudaBackend *cu = cu_init(&p, err, sizeof err);
    if (!cu) {
        printf("FAIL gpu_ops init: %s\n", err);
        return 1;
    }
    Dataset ds;
    DataStream tr, va;
    data_synthetic(&ds, 1 << 20, (int)p.vocab, p.train.seed);
    data_split(&ds, (int)p.train.seq_len, &tr, &va);
    data_next_batch(&tr, (int)p.train.micro_batch, (int)p.train.seq_len, cpu_ptr(&ref, p.tokens), cpu_ptr(&ref, p.targets));
    RunState st = {.dloss = 1.0f / (float)(p.train.micro_batch * p.train.seq_len), .lr = 1e-3f, .grad_scale = 1.0f, .opt_step = 1};
    int pass = 0, fail = 0;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        for (int i = 0; i < p.nsteps[sec]; i++) {
            const RtStep *s = &p.steps[sec][i];
            if (s->gpu.action == GPU_FUSED) continue; /* its launch ran it with the group */
            int gs[8], gi[8], ng = 0;
            if (s->gpu.ncovers)
                for (int c = 0; c < s->gpu.ncovers; c++) gs[ng] = s->gpu.cover_sec[c], gi[ng++] = s->gpu.cover_idx[c];
            else gs[0] = sec, gi[0] = i, ng = 1;
            /* inputs (and accumulators) from the reference, pure outputs poisoned */
            int rc = 0;
            for (int k = 0; k < ng && !rc; k++) {
                const RtStep *m = &p.steps[gs[k]][gi[k]];
                for (int q = 0; q < OP_MAX_ARGS && !rc; q++) {
                    if (m->args[q] < 0) continue;
                    rc = (is_out(m->op, q) && !is_accum(m->op, q)) ? cu_poison_tensor(cu, m->args[q], err, sizeof err)
                                                                   : cu_upload_tensor(cu, &ref, m->args[q], err, sizeof err);
                }
            }
            /* in-place steps (rope_bwd, crossentropy_bwd) read what they write: upload those */
            for (int k = 0; k < ng && !rc; k++) {
                const RtStep *m = &p.steps[gs[k]][gi[k]];
                for (int q = 0; q < OP_MAX_ARGS && !rc; q++)
                    for (int q2 = 0; q2 < OP_MAX_ARGS && !rc; q2++)
                        if (m->args[q] >= 0 && m->args[q] == m->args[q2] && q != q2 && !is_out(m->op, q2))
                            rc = cu_upload_tensor(cu, &ref, m->args[q], err, sizeof err);
            }
            if (!rc) rc = cu_run_step(cu, (Section)sec, i, &st, err, sizeof err);
            for (int k = 0; k < ng; k++) cpu_run_step(&ref, (Section)gs[k], gi[k], &st);
            char name[256];
            snprintf(name, sizeof name, "%s:%d %s%s", fp8c_section_names[sec], i, fp8c_op_info[s->op].name, ng > 1 ? " (fused)" : "");
            if (rc) {
                printf("FAIL %s: %s\n", name, err);
                fail++;
                continue;
            }
            int bad = 0;
            for (int k = 0; k < ng && !bad; k++) {
                const RtStep *m = &p.steps[gs[k]][gi[k]];
                int gemm = m->op == OP_QGEMM || m->op == OP_MATMUL_FWD || m->op == OP_MATMUL_BWD_DATA || m->op == OP_MATMUL_BWD_WEIGHT;
                for (int q = 0; q < OP_MAX_ARGS && !bad; q++) {
                    if (m->args[q] < 0 || !is_out(m->op, q)) continue;
                    if (cu_download_tensor(cu, &got, m->args[q], err, sizeof err)) {
                        snprintf(why, sizeof why, "%s", err);
                        bad = 1;
                    } else if (compare(&p, m->args[q], cpu_ptr(&ref, m->args[q]), cpu_ptr(&got, m->args[q]), gemm, why, sizeof why)) {
                        bad = 1;
                    }
                }
            }
            if (bad) printf("FAIL %s: %s\n", name, why), fail++;
            else printf("PASS %s\n", name), pass++;
        }
    fprintf(stderr, "gpu_ops %s: %d launches pass, %d fail\n", argv[1], pass, fail);
    cu_free(cu);
    cpu_free(&ref);
    cpu_free(&got);
    data_free(&ds);
    arena_free(&a);
    return fail ? 1 : 0;
}
