/* exec.c: the CPU backend. One allocation per tensor class, carved by the plan's offsets, and
 * a loop that dispatches each step of a section to its reference op (ref.c, quant.c).
 *
 * Values are held as float32 whatever the plan's dtype; after every step, outputs whose dtype
 * is bf16 or fp16 are rounded to that format (round-to-nearest-even), so the CPU computes on
 * exactly the values a 16-bit GPU tensor would hold. FP8 operands are real codes and scales
 * (quant.c) that a qgemm decodes and multiplies with FP32 accumulation. Because a float takes
 * two plan bytes' room for a 16-bit tensor, a class with 16-bit tensors is laid out at twice
 * the plan's offsets: uniform scaling keeps the plan's liveness-based overlaps valid. */
#include "runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include "fp8.h"
#include "quant.h"
#include "ref.h"
#include "ref_mla.h"

static int is_value(TensorDtype t) { return t == TD_F32 || t == TD_BF16 || t == TD_F16; }

/* A class's zeroed memory. Large classes are 2 MiB aligned, asked for transparent huge pages
 * and zeroed by every thread at once: calloc's lazily mapped zero pages made AdamW's first step
 * take a copy-on-write fault and a TLB shootdown on the other core per 4 KiB page of the
 * moments (about 2 s of gpt2-124m's first step), and 4 KiB pages cost TLB misses in the GEMM's
 * strided packing reads. */
static void *class_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < 2 * huge)
        return calloc(bytes ? bytes : 1, 1);
    size_t len = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, len))
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE); /* advice only: without THP the pages stay 4 KiB */
#endif
    ref_zero_bytes(p, len);
    return p;
}

int cpu_init(CpuBackend *b, const Plan *p, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    b->p = p;
    for (int c = 0; c < TC_COUNT; c++) b->factor[c] = 1;
    for (int i = 0; i < p->nt; i++)
        if (p->t[i].dtype == TD_BF16 || p->t[i].dtype == TD_F16) b->factor[p->t[i].cls] = 2;
    /* Refuse up front what cannot fit: with overcommit, calloc would succeed and the kernel
     * would kill the process mid-step instead. */
    double need_bytes = 0;
    for (int c = 0; c < TC_COUNT; c++) need_bytes += (double)p->class_bytes[c] * b->factor[c];
    double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (phys > 0 && need_bytes > 0.9 * phys) {
        snprintf(err, errlen, "this plan needs %.1f GB on the CPU backend (%.1f GB of activations at micro_batch %lld x seq_len %lld) "
                 "and this machine has %.1f GB: lower train.micro_batch or train.seq_len",
                 need_bytes / 1e9, (double)p->class_bytes[TC_ACT] * b->factor[TC_ACT] / 1e9, (long long)p->train.micro_batch,
                 (long long)p->train.seq_len, phys / 1e9);
        return -1;
    }
    for (int c = 0; c < TC_COUNT; c++) {
        size_t bytes = (size_t)p->class_bytes[c] * (size_t)b->factor[c];
        b->base[c] = class_alloc(bytes);
        if (!b->base[c]) {
            snprintf(err, errlen, "cannot allocate %.2f GB for %s", (double)bytes / 1e9, fp8c_tensor_class_names[c]);
            cpu_free(b);
            return -1;
        }
    }
    /* scratch: the largest accumulating qgemm's product */
    size_t need = 0;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        for (int i = 0; i < p->nsteps[sec]; i++) {
            const RtStep *s = &p->steps[sec][i];
            size_t n = 0;
            if (s->op == OP_QGEMM && s->ints[3]) n = (size_t)(s->ints[0] * s->ints[1]);
            if (n > need) need = n;
        }
    b->ws_floats = need;
    b->ws = malloc((need ? need : 1) * sizeof(float));
    if (!b->ws) {
        snprintf(err, errlen, "cannot allocate %.2f GB of workspace", (double)need * 4 / 1e9);
        cpu_free(b);
        return -1;
    }
    return 0;
}

void cpu_free(CpuBackend *b) {
    for (int c = 0; c < TC_COUNT; c++) free(b->base[c]);
    free(b->ws);
    memset(b, 0, sizeof *b);
}

void *cpu_ptr(const CpuBackend *b, int tensor) {
    if (tensor < 0) return NULL;
    const RtTensor *t = &b->p->t[tensor];
    return b->base[t->cls] + (size_t)t->offset * (size_t)b->factor[t->cls];
}

size_t cpu_tensor_bytes(const CpuBackend *b, int tensor) {
    const RtTensor *t = &b->p->t[tensor];
    return (size_t)t->n * (is_value(t->dtype) ? sizeof(float) : (size_t)fp8c_tensor_dtype_bytes[t->dtype]);
}

#define F(k) ((float *)cpu_ptr(b, s->args[k]))
#define I(k) ((const int32_t *)cpu_ptr(b, s->args[k]))
#define U(k) ((uint8_t *)cpu_ptr(b, s->args[k]))

/* The column-wise copy (v[6]) quantizes the transpose in place of a transposed FP32 copy
 * (q_quantize_transposed: 1 x T tiles read eight columns at a time). */
static void run_quantize(CpuBackend *b, const RtStep *s) {
    const int64_t *v = s->ints;
    float given = s->args[4] >= 0 ? F(4)[0] : 0.0f;
    float amax = (v[6] ? q_quantize_transposed : q_quantize)(U(0), v[5] ? NULL : F(1), v[5] ? U(1) : NULL, F(3),
                                                             (int)v[0], (int)v[1], (int)v[2], (int)v[3],
                                                             (QFormat)v[4], (int)v[5], given);
    if (s->args[2] >= 0) F(2)[0] = amax;
}

static void run_qgemm(CpuBackend *b, const RtStep *s) {
    const int64_t *v = s->ints;
    int64_t P = v[0], Q = v[1], R = v[2];
    int mx = (int)v[10];
    /* both operands decoded while the GEMM packs them (no dequantized copies) */
    QDecoder A, B;
    q_decoder_init(&A, U(1), mx ? NULL : F(2), mx ? U(2) : NULL, (int)P, (int)R, (int)v[4], (int)v[5], (QFormat)v[6], mx);
    q_decoder_init(&B, U(3), mx ? NULL : F(4), mx ? U(4) : NULL, (int)Q, (int)R, (int)v[7], (int)v[8], (QFormat)v[9], mx);
    if (v[3]) { /* the product added to the output, rounded before the add (scratch: b->ws) */
        ref_qmatmul_add(F(0), b->ws, &A, &B, (int)P, (int)R, (int)Q);
        if (s->args[5] >= 0) { /* a bias with accumulation is never emitted; keep it exact anyway */
            float *o = F(0);
            const float *bias = F(5);
            for (int64_t i = 0; i < P; i++)
                for (int64_t j = 0; j < Q; j++) o[i * Q + j] += bias[j];
        }
    } else {
        ref_qmatmul_fwd(F(0), &A, &B, s->args[5] >= 0 ? F(5) : NULL, (int)P, (int)R, (int)Q);
    }
}

static void run_scale_update(CpuBackend *b, const RtStep *s, const RunState *st) {
    const int64_t *v = s->ints;
    float *hist = F(0), *scale = F(1), amax = F(2)[0];
    int64_t len = v[0];
    hist[st->amax_step % len] = amax;
    if (st->amax_step % v[3]) return;
    float sel = 0;
    if (v[1] == 1) {
        sel = amax; /* most_recent */
    } else {
        for (int64_t i = 0; i < len; i++) /* max over the window (unfilled entries are 0) */
            if (!(hist[i] <= sel)) sel = hist[i];
    }
    int bad = 0;
    scale[0] = q_compute_scale(sel, q_format_max((QFormat)v[4]), (int)v[2], 0, scale[0], &bad);
}

static void step_one(CpuBackend *b, const RtStep *s, const RunState *st) {
    const int64_t *v = s->ints;
    const Plan *p = b->p;
    switch (s->op) {
    case OP_EMBED_FWD: ref_embed_fwd(F(0), I(1), F(2), F(3), (int)v[0], (int)v[1], (int)v[2]); break;
    case OP_EMBED_BWD: ref_embed_bwd(F(0), F(1), F(2), I(3), (int)v[0], (int)v[1], (int)v[2]); break;
    case OP_RMSNORM_FWD: ref_rmsnorm_fwd(F(0), F(1), F(2), F(3), (int)v[0], (int)v[1], (float)s->floats[0]); break;
    case OP_RMSNORM_BWD: ref_rmsnorm_bwd(F(0), F(1), F(2), F(3), F(4), F(5), (int)v[0], (int)v[1]); break;
    case OP_LAYERNORM_FWD: ref_layernorm_fwd(F(0), F(1), F(2), F(3), F(4), F(5), (int)v[0], (int)v[1], (float)s->floats[0]); break;
    case OP_LAYERNORM_BWD: ref_layernorm_bwd(F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), (int)v[0], (int)v[1]); break;
    case OP_MATMUL_FWD: ref_matmul_fwd(F(0), F(1), F(2), F(3), (int)v[0], (int)v[1], (int)v[2]); break;
    case OP_MATMUL_BWD_DATA: ref_matmul_bwd_data(F(0), F(1), F(2), (int)v[0], (int)v[1], (int)v[2]); break;
    case OP_MATMUL_BWD_WEIGHT: ref_matmul_bwd_weight(F(0), F(1), F(2), F(3), (int)v[0], (int)v[1], (int)v[2]); break;
    case OP_QUANTIZE: run_quantize(b, s); break;
    case OP_QGEMM: run_qgemm(b, s); break;
    case OP_BIAS_BWD: {
        float *db = F(0);
        const float *dout = F(1);
        for (int64_t i = 0; i < v[0]; i++)
            for (int64_t j = 0; j < v[1]; j++) db[j] += dout[i * v[1] + j];
        break;
    }
    case OP_ROPE_FWD: ref_rope_fwd(F(0), F(1), (int)v[0], (int)v[1], (int)v[2], (int)v[3], (float)s->floats[0]); break;
    case OP_ROPE_BWD: ref_rope_bwd(F(0), F(1), (int)v[0], (int)v[1], (int)v[2], (int)v[3], (float)s->floats[0]); break;
    case OP_ATTENTION_FWD: ref_attention_fwd(F(0), F(1), F(2), F(3), F(4), (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4]); break;
    case OP_ATTENTION_BWD:
        ref_attention_bwd(F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), F(8), (int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4]);
        break;
    case OP_GATE_FWD: ref_gate_fwd(F(0), F(1), F(2), v[0]); break;
    case OP_GATE_BWD: ref_gate_bwd(F(0), F(1), F(2), F(3), F(4), v[0]); break;
    case OP_SWIGLU_FWD: ref_swiglu_fwd(F(0), F(1), F(2), v[0]); break;
    case OP_SWIGLU_BWD: ref_swiglu_bwd(F(0), F(1), F(2), F(3), F(4), v[0]); break;
    case OP_GELU_FWD: ref_gelu_fwd(F(0), F(1), v[0]); break;
    case OP_GELU_BWD: ref_gelu_bwd(F(0), F(1), F(2), v[0]); break;
    case OP_ADD_FWD: ref_add_fwd(F(0), F(1), F(2), v[0]); break;
    case OP_ACCUMULATE: ref_accumulate(F(0), F(1), v[0]); break;
    case OP_ZERO: memset(cpu_ptr(b, s->args[0]), 0, cpu_tensor_bytes(b, s->args[0])); break;
    case OP_XENT_FWD: ref_crossentropy_fwd(F(0), F(1), I(2), (int)v[0], (int)v[1]); break;
    case OP_XENT_BWD: ref_crossentropy_bwd(F(0), F(1), I(2), st->dloss, (int)v[0], (int)v[1]); break;
    case OP_ADAMW: {
        const TrainCfg *t = &p->train;
        ref_adamw(F(0), F(1), F(2), F(3), F(4), v[0], st->lr, (float)t->opt.beta1, (float)t->opt.beta2, (float)t->opt.eps,
                  (float)s->floats[0], (int)st->opt_step, st->grad_scale, (int)v[1], (int)v[2]);
        return; /* rounds its own outputs */
    }
    case OP_SCALE_UPDATE: run_scale_update(b, s, st); return;
#define N_(k) (int)v[k]
#define IW(k) ((int32_t *)cpu_ptr(b, s->args[k]))
    case OP_MLA_SPLIT_FWD: ref_mla_split_fwd(F(0), F(1), F(2), N_(0), N_(1), N_(2)); break;
    case OP_MLA_SPLIT_BWD: ref_mla_split_bwd(F(0), F(1), F(2), N_(0), N_(1), N_(2)); break;
    case OP_MLA_ROPE_FWD:
        ref_mla_rope_fwd(F(0), F(1), F(2), F(3), F(4), F(5), N_(0), N_(1), N_(2), N_(3), N_(4), N_(5), (float)s->floats[0]);
        break;
    case OP_MLA_ROPE_BWD:
        ref_mla_rope_bwd(F(0), F(1), F(2), F(3), F(4), F(5), N_(0), N_(1), N_(2), N_(3), N_(4), N_(5), (float)s->floats[0]);
        break;
    case OP_MLA_ATTENTION_FWD: ref_mla_attention_fwd(F(0), F(1), F(2), F(3), F(4), N_(0), N_(1), N_(2), N_(3), N_(4)); break;
    case OP_MLA_ATTENTION_BWD:
        ref_mla_attention_bwd(F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), F(8), N_(0), N_(1), N_(2), N_(3), N_(4));
        break;
    case OP_MOE_ROUTE_FWD:
        ref_moe_route_fwd(F(0), IW(1), F(2), IW(3), F(4), F(5), F(6), N_(0), N_(1), N_(2), N_(3), N_(4), (float)s->floats[0]);
        break;
    case OP_MOE_ROUTE_BWD:
        ref_moe_route_bwd(F(0), F(1), F(2), I(3), N_(0), N_(1), N_(2), N_(3), N_(4), (float)s->floats[0], N_(5), (float)s->floats[1]);
        break;
    case OP_MOE_PERMUTE_FWD: ref_moe_permute_fwd(F(0), F(1), I(2), I(3), N_(0), N_(1), N_(2), N_(3)); break;
    case OP_MOE_PERMUTE_BWD: ref_moe_permute_bwd(F(0), F(1), I(2), I(3), N_(0), N_(1), N_(2), N_(3)); break;
    case OP_MOE_COMBINE_FWD: ref_moe_combine_fwd(F(0), F(1), F(2), I(3), I(4), N_(0), N_(1), N_(2), N_(3)); break;
    case OP_MOE_COMBINE_BWD: ref_moe_combine_bwd(F(0), F(1), F(2), F(3), F(4), I(5), I(6), N_(0), N_(1), N_(2), N_(3)); break;
    case OP_MOE_BIAS_UPDATE: ref_moe_bias_update(F(0), F(1), N_(0), (float)s->floats[0]); return;
#undef N_
#undef IW
    case OP_COUNT_: FP8C_ASSERT(0);
    }
    /* Round every 16-bit output to its format: the CPU holds exactly what a GPU tensor would. */
    const char *args = fp8c_op_info[s->op].args;
    int nout = 1;
    for (const char *c = args; *c && *c != '|'; c++) nout += *c == ',';
    for (int k = 0; k < nout; k++) {
        if (s->args[k] < 0) continue;
        const RtTensor *t = &p->t[s->args[k]];
        if (t->dtype == TD_BF16 || t->dtype == TD_F16) ref_round(F(k), t->n, t->dtype == TD_BF16 ? REF_BF16 : REF_FP16);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_unit(CpuBackend *b, Section sec, const RtUnit *u, const RunState *st) {
    for (int i = u->first; i < u->first + u->n; i++) {
        const RtStep *s = &b->p->steps[sec][i];
        double t0 = b->profile ? now_s() : 0;
        step_one(b, s, st);
        if (b->profile) {
            b->op_seconds[s->op] += now_s() - t0;
            b->op_calls[s->op]++;
        }
    }
}

/* The launch schedule, unit by unit, exactly as the CUDA backend launches it: a refresh unit
 * runs only while the weights' FP8 copies are stale, and an adamw_quantize unit leaves them
 * fresh, so the CPU also proves that the copies the optimizer writes are the ones the next
 * forward and backward read. */
void cpu_run(CpuBackend *b, Section sec, const RunState *st) {
    const Plan *p = b->p;
    int wrote_copies = 0;
    for (int u = 0; u < p->nunits[sec]; u++) {
        const RtUnit *unit = &p->units[sec][u];
        if (unit->refresh && b->copies_fresh) continue;
        run_unit(b, sec, unit, st);
        wrote_copies |= unit->fusion == FUSE_ADAMW_QUANT;
    }
    if (wrote_copies) b->copies_fresh = 1;
}

void cpu_run_unit(CpuBackend *b, Section sec, int u, const RunState *st) { run_unit(b, sec, &b->p->units[sec][u], st); }

void cpu_params_changed(CpuBackend *b) { b->copies_fresh = 0; }

void cpu_print_profile(const CpuBackend *b, FILE *out) {
    double total = 0;
    for (int k = 0; k < OP_COUNT_; k++) total += b->op_seconds[k];
    fprintf(out, "fp8c: profile (FP8C_PROFILE=1), time per op kind over the run:\n");
    for (int k = 0; k < OP_COUNT_; k++)
        if (b->op_calls[k])
            fprintf(out, "  %-18s %8.3f s %5.1f%%  %8lld calls\n", fp8c_op_info[k].name, b->op_seconds[k],
                    total > 0 ? 100 * b->op_seconds[k] / total : 0, (long long)b->op_calls[k]);
}
