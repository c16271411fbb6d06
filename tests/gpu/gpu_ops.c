/* gpu_ops.c: every launch of a plan's schedule against the CPU reference (DESIGN.md section 10).
 *
 * The device under test sits behind one small interface (upload, download, poison, run one
 * unit), with two implementations:
 *   cuda      the CUDA backend (runtime/cuda/cuda.c) on a real GPU;
 *   stand-in  an exact device: a second CPU backend whose memory starts as 0xFF bytes. It must
 *             PASS every launch of every plan; anything else is a bug in this harness (an input
 *             not uploaded, an output poisoned although the op reads it), never in a kernel.
 *             With --fault it perturbs every output it writes, and every launch must FAIL: the
 *             comparison can fail.
 *   host      the host tier (tests/host): the plan's emitted kernels compiled as C++ for the CPU
 *             with the CUDA shim, launched with the plan's grids, on memory laid out as the CUDA
 *             backend lays it out (16-bit tensors as real bf16/f16). Each launch runs twice from
 *             the same memory, blocks and threads in ascending then descending order, and both
 *             runs must leave every byte identical (a missing barrier or a race shows). cuBLASLt
 *             units are not run there (SKIP lines: the host tier has no cuBLASLt).
 *
 * Per unit of the schedule, in order: the reference's state before the unit is the input. A
 * tensor the unit reads before it writes it (an input, or an output marked '+', '&' or '~' in
 * runtime/ops.h: accumulators, optimizer state, amax histories, qgemm with accumulate=1) is
 * uploaded; a tensor the unit writes first is poisoned on the device (0xFF bytes: NaN, or code
 * 0xFF), so an element a kernel forgets to write fails. Then both run the unit and every tensor
 * the unit writes is compared.
 *
 * Tolerances come from the roundings (why each is what it is):
 *   u8 codes, i32, and the f32 scales, amax values and histories written by quantize and
 *     scale_update: exact (specified bit for bit; the CPU emulates them exactly);
 *   GEMM outputs (qgemm, matmul_*): 2^-6 relative + 2^-8 x max|ref|: FP8 products are exact in
 *     FP32, the accumulation order and the tensor cores' internal alignment are not (notes 5.3);
 *   other bf16 / f16 outputs: k ulps relative (bf16 2^-7, f16 2^-10) + 1e-6, where k is the
 *     number of ops of the unit that write the tensor, each rounding once to the stored type
 *     after FP32 math in a different order. Two roundings happen in: attention backward fused
 *     with rope_bwd (dq and dk are rounded by attention_bwd, rotated, rounded again), and
 *     crossentropy forward + backward in place (the logits' buffer);
 *   other f32 outputs: 1e-4 relative + 1e-5 x max|ref| (reductions of up to 10^4 terms).
 *   bias gradients (column sums of dout) also get 1e-5 x max over columns of sum |dout| as an
 *   absolute floor: an FP32 sum's rounding error scales with its terms, and a zero gradient (a
 *   key projection's bias) is rounding noise on both sides; a missing or doubled row of 10^4
 *   still fails it.
 *
 * Prints one FAIL line per failing launch and one summary line: "PASS gpu_ops DIR (DEVICE): N
 * launches" or "FAIL gpu_ops ...". --results FILE writes one PASS/FAIL line per launch there.
 * Usage: gpu_ops [--device cuda|stand-in|host] [--fault] [--results FILE] [--host-src DIR] [--host-cache DIR]
 *               PLAN_DIR [seed]
 * With --device cuda (the default) and no GPU it prints SKIP and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "data.h"
#include "fp8.h"
#include "host_kernels.h"
#include "runtime.h"

/* ---- the device interface ---------------------------------------------------------------------- */

typedef struct Device Device;
struct Device {
    const char *name;
    int (*upload)(Device *d, const CpuBackend *from, int id, char *err, size_t n);
    int (*download)(Device *d, CpuBackend *to, int id, char *err, size_t n);
    int (*poison)(Device *d, int id, char *err, size_t n);
    int (*run_unit)(Device *d, Section sec, int u, const RunState *st, char *err, size_t n);
    void (*close)(Device *d);
    CudaBackend *cu;
    CpuBackend cpu;
    int fault;
    struct HostDev *host;
    int unchecked; /* after UNIT_PARTIAL: the tensor the device did not compute */
};
#define UNIT_SKIPPED 1 /* run_unit: the device does not run this unit (not a failure) */
#define UNIT_PARTIAL 2 /* run_unit: it ran the unit's kernel but not its GEMM; Device.unchecked is not compared */

static int cu_up(Device *d, const CpuBackend *h, int id, char *err, size_t n) { return cu_upload_tensor(d->cu, h, id, err, n); }
static int cu_down(Device *d, CpuBackend *h, int id, char *err, size_t n) { return cu_download_tensor(d->cu, h, id, err, n); }
static int cu_pois(Device *d, int id, char *err, size_t n) { return cu_poison_tensor(d->cu, id, err, n); }
static int cu_unit(Device *d, Section sec, int u, const RunState *st, char *err, size_t n) { return cu_run_unit(d->cu, sec, u, st, err, n); }
static void cu_close(Device *d) { cu_free(d->cu); }

static int si_up(Device *d, const CpuBackend *h, int id, char *err, size_t n) {
    (void)err, (void)n;
    memcpy(cpu_ptr(&d->cpu, id), cpu_ptr(h, id), cpu_tensor_bytes(&d->cpu, id));
    return 0;
}
static int si_down(Device *d, CpuBackend *h, int id, char *err, size_t n) {
    (void)err, (void)n;
    memcpy(cpu_ptr(h, id), cpu_ptr(&d->cpu, id), cpu_tensor_bytes(&d->cpu, id));
    return 0;
}
static int si_pois(Device *d, int id, char *err, size_t n) {
    (void)err, (void)n;
    memset(cpu_ptr(&d->cpu, id), 0xFF, cpu_tensor_bytes(&d->cpu, id));
    return 0;
}
/* --fault: every output the unit writes comes back perturbed (a float made 1% larger plus 1, a
 * code's low bit flipped) */
static void perturb(Device *d, Section sec, int u) {
    const Plan *p = d->cpu.p;
    const RtUnit *un = &p->units[sec][u];
    for (int i = un->first; i < un->first + un->n; i++) {
        const RtStep *s = &p->steps[sec][i];
        for (int k = 0; k < op_out_count(s->op); k++) {
            int id = s->args[k];
            if (id < 0) continue;
            if (p->t[id].dtype == TD_U8) ((unsigned char *)cpu_ptr(&d->cpu, id))[0] ^= 1;
            else if (p->t[id].dtype == TD_I32) ((int *)cpu_ptr(&d->cpu, id))[0] ^= 1;
            else ((float *)cpu_ptr(&d->cpu, id))[0] = ((float *)cpu_ptr(&d->cpu, id))[0] * 1.01f + 1.0f;
        }
    }
}
static int si_unit(Device *d, Section sec, int u, const RunState *st, char *err, size_t n) {
    (void)err, (void)n;
    cpu_run_unit(&d->cpu, sec, u, st);
    if (d->fault) perturb(d, sec, u);
    return 0;
}
static void si_close(Device *d) { cpu_free(&d->cpu); }

static int open_stand_in(Device *d, const Plan *p, char *err, size_t n) {
    if (cpu_init(&d->cpu, p, err, n)) return -1;
    for (int c = 0; c < TC_COUNT; c++) /* every byte poisoned: an input the harness forgets shows */
        memset(d->cpu.base[c], 0xFF, (size_t)p->class_bytes[c] * (size_t)d->cpu.factor[c]);
    d->name = d->fault ? "stand-in with --fault" : "stand-in", d->upload = si_up, d->download = si_down, d->poison = si_pois;
    d->run_unit = si_unit, d->close = si_close;
    return 0;
}

static int open_cuda(Device *d, const Plan *p, char *err, size_t n) {
    if (!(d->cu = cu_init(p, err, n))) return -1;
    d->name = "cuda", d->upload = cu_up, d->download = cu_down, d->poison = cu_pois, d->run_unit = cu_unit, d->close = cu_close;
    return 0;
}


/* ---- the host tier: emitted kernels on the CPU (tests/host) -------------------------------------- */

typedef struct HostDev {
    HostKernels *k;
    const Plan *p;
    unsigned char *base[TC_COUNT], *scratch, *rs; /* as runtime/cuda/cuda.c allocates them */
    unsigned char *snap, *first;                 /* every byte a launch can touch, before and after run 1 */
    size_t bytes[TC_COUNT + 2], total;
} HostDev;

static unsigned char *hd_ptr(const HostDev *h, int id) {
    if (id < 0) return h->base[-1 - id];
    return h->base[h->p->t[id].cls] + h->p->t[id].offset;
}
static size_t hd_bytes(const HostDev *h, int id) { return (size_t)h->p->t[id].n * (size_t)fp8c_tensor_dtype_bytes[h->p->t[id].dtype]; }

static int hd_up(Device *d, const CpuBackend *from, int id, char *err, size_t n) {
    (void)err, (void)n;
    const RtTensor *t = &d->host->p->t[id];
    unsigned char *dst = hd_ptr(d->host, id);
    const float *f = cpu_ptr(from, id);
    if (t->dtype == TD_BF16 || t->dtype == TD_F16)
        for (int64_t i = 0; i < t->n; i++) {
            uint16_t v = t->dtype == TD_BF16 ? fp8c_f32_to_bf16(f[i]) : fp8c_f32_to_f16(f[i]);
            memcpy(dst + 2 * i, &v, 2);
        }
    else memcpy(dst, f, hd_bytes(d->host, id));
    return 0;
}
static int hd_down(Device *d, CpuBackend *to, int id, char *err, size_t n) {
    (void)err, (void)n;
    const RtTensor *t = &d->host->p->t[id];
    const unsigned char *src = hd_ptr(d->host, id);
    float *f = cpu_ptr(to, id);
    if (t->dtype == TD_BF16 || t->dtype == TD_F16)
        for (int64_t i = 0; i < t->n; i++) {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            f[i] = t->dtype == TD_BF16 ? fp8c_bf16_to_f32(v) : fp8c_f16_to_f32(v);
        }
    else memcpy(f, src, hd_bytes(d->host, id));
    return 0;
}
static int hd_pois(Device *d, int id, char *err, size_t n) {
    (void)err, (void)n;
    memset(hd_ptr(d->host, id), 0xFF, hd_bytes(d->host, id));
    return 0;
}

/* all device memory, in one order, to or from one buffer */
static void hd_copy(HostDev *h, unsigned char *buf, int save) {
    unsigned char *regions[TC_COUNT + 2];
    for (int c = 0; c < TC_COUNT; c++) regions[c] = h->base[c];
    regions[TC_COUNT] = h->scratch, regions[TC_COUNT + 1] = h->rs;
    size_t o = 0;
    for (int r = 0; r < TC_COUNT + 2; r++) {
        if (save) memcpy(buf + o, regions[r], h->bytes[r]);
        else memcpy(regions[r], buf + o, h->bytes[r]);
        o += h->bytes[r];
    }
}

/* the tensor (or scratch) holding byte o of hd_copy's buffer */
static void hd_where(const HostDev *h, size_t o, char *out, size_t n) {
    int r = 0;
    while (r < TC_COUNT + 2 && o >= h->bytes[r]) o -= h->bytes[r++];
    if (r >= TC_COUNT) {
        snprintf(out, n, "%s byte %zu", r == TC_COUNT ? "the kernels' scratch" : "the run state", o);
        return;
    }
    size_t k = 0; /* every tensor there: the memory plan reuses memory between lifetimes */
    out[0] = 0;
    for (int i = 0; i < h->p->nt && k + 1 < n; i++)
        if ((int)h->p->t[i].cls == r && o >= (size_t)h->p->t[i].offset && o < (size_t)h->p->t[i].offset + hd_bytes(h, i))
            k += (size_t)snprintf(out + k, n - k, "%s%s byte %zu", k ? " or " : "", h->p->t[i].name, o - (size_t)h->p->t[i].offset);
    if (!k) snprintf(out, n, "%s byte %zu (no tensor)", fp8c_tensor_class_names[r], o);
}

static int hd_launch(HostDev *h, const GpuStep *g, int order, char *err, size_t n) {
    const RtKernel *K = &h->p->kernels[g->kernel];
    void *ptrs[RT_MAX_KPARAMS + 2], *args[RT_MAX_KPARAMS + 2];
    int np = 0;
    for (int i = 0; i < g->nparams; i++, np++) ptrs[np] = hd_ptr(h, g->params[i]), args[np] = &ptrs[np];
    ptrs[np] = K->scratch ? h->scratch : NULL, args[np] = &ptrs[np], np++;
    ptrs[np] = h->rs, args[np] = &ptrs[np];
    for (int e = 0; e < K->ne; e++) {
        char why[600];
        if (hk_launch(h->k, g->kernel, e, args, order, why, sizeof why)) {
            snprintf(err, n, "%s (%s) failed on the host tier (%s order): %s", K->e[e].symbol, K->name, order ? "descending" : "ascending", why);
            return -1;
        }
    }
    return 0;
}

static int hd_unit(Device *d, Section sec, int u, const RunState *st, char *err, size_t n) {
    HostDev *h = d->host;
    const RtUnit *un = &h->p->units[sec][u];
    const RtStep *s = &h->p->steps[sec][un->first];
    const GpuStep *g = &un->gpu;
    /* Fp8cRunState (templates/common.cuh), as cuda.c's dev_run_state writes it */
    float rsf[4] = {st->dloss, st->lr, st->grad_scale, 0};
    int rsi[4] = {(int)st->opt_step, (int)st->amax_step, 0, 0};
    memcpy(h->rs, rsf, 16), memcpy(h->rs + 16, rsi, 16);
    if (g->action == GPU_MEMSET) {
        memset(hd_ptr(h, s->args[0]), 0, hd_bytes(h, s->args[0]));
        return 0;
    }
    int partial = 0;
    if (g->gemm == 1) {
        snprintf(err, n, "a cuBLASLt GEMM: the host tier runs the emitted kernels only (compile with --gemm generated for FP8 GEMMs)");
        if (g->kernel < 0 || s->op != OP_MATMUL_BWD_WEIGHT) return UNIT_SKIPPED;
        d->unchecked = s->args[0], partial = 1; /* its dbias kernel runs; dw is cuBLASLt's */
    }
    if (g->kernel < 0) {
        snprintf(err, n, "no CUDA kernel for this step in the plan (fp8c compile said so)");
        return UNIT_SKIPPED;
    }
    /* twice from the same memory, in opposite thread orders: the results must be identical */
    hd_copy(h, h->snap, 1);
    if (hd_launch(h, g, 0, err, n)) return -1;
    hd_copy(h, h->first, 1);
    hd_copy(h, h->snap, 0);
    if (hd_launch(h, g, 1, err, n)) return -1;
    hd_copy(h, h->snap, 1);
    for (size_t i = 0; i < h->total; i++)
        if (h->snap[i] != h->first[i]) {
            char where[300];
            hd_where(h, i, where, sizeof where);
            snprintf(err, n, "results depend on the thread order (a missing barrier or a race): %s is 0x%02x in ascending order, 0x%02x in descending",
                     where, h->first[i], h->snap[i]);
            return -1;
        }
    return partial ? UNIT_PARTIAL : 0;
}

static void hd_close(Device *d) {
    HostDev *h = d->host;
    if (!h) return;
    hk_close(h->k);
    for (int c = 0; c < TC_COUNT; c++) free(h->base[c]);
    free(h->scratch), free(h->rs), free(h->snap), free(h->first);
    free(h);
}

static int open_host(Device *d, const Plan *p, const char *src, const char *cache, char *err, size_t n) {
    HostDev *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, n, "out of host memory");
        return -1;
    }
    d->host = h, h->p = p;
    d->name = "host tier", d->upload = hd_up, d->download = hd_down, d->poison = hd_pois, d->run_unit = hd_unit, d->close = hd_close;
    int64_t scratch = 0;
    for (int i = 0; i < p->nkernels; i++)
        if (p->kernels[i].scratch > scratch) scratch = p->kernels[i].scratch;
    for (int c = 0; c < TC_COUNT; c++) h->bytes[c] = (size_t)p->class_bytes[c] + 256;
    h->bytes[TC_COUNT] = (size_t)scratch + 256, h->bytes[TC_COUNT + 1] = 256;
    for (int r = 0; r < TC_COUNT + 2; r++) h->total += h->bytes[r];
    for (int c = 0; c < TC_COUNT; c++) h->base[c] = aligned_alloc(256, h->bytes[c]);
    h->scratch = aligned_alloc(256, h->bytes[TC_COUNT]), h->rs = aligned_alloc(256, 256);
    h->snap = malloc(h->total), h->first = malloc(h->total);
    for (int c = 0; c < TC_COUNT; c++)
        if (!h->base[c]) h->snap = NULL;
    if (!h->scratch || !h->rs || !h->snap || !h->first) {
        snprintf(err, n, "out of host memory for %zu bytes of device memory", h->total);
        return -1;
    }
    for (int c = 0; c < TC_COUNT; c++) memset(h->base[c], 0xFF, h->bytes[c]); /* as the stand-in: every byte poisoned */
    memset(h->scratch, 0xFF, h->bytes[TC_COUNT]);
    const char *jobs = getenv("FP8C_HOST_JOBS");
    if (!(h->k = hk_open(p, src, cache, jobs ? atoi(jobs) : 2, err, n))) return -1;
    return 0;
}

/* ---- what a unit reads first, writes, and how exactly ------------------------------------------ */

enum { T_NONE, T_UPLOAD, T_POISON };

typedef struct {
    int id;
    int first;      /* T_UPLOAD: read before written in the unit; T_POISON: written first */
    int writes;     /* ops of the unit that write it (roundings) */
    int exact, gemm;
    double mag;     /* bias gradients: max over columns of the summed terms' magnitudes (sum |dout|) */
} Touch;

static int find_touch(Touch *t, int n, int id) {
    for (int i = 0; i < n; i++)
        if (t[i].id == id) return i;
    return -1;
}

static int unit_touches(const Plan *p, Section sec, const RtUnit *u, Touch **out) {
    int cap = 16, n = 0;
    Touch *t = malloc((size_t)cap * sizeof *t);
    for (int i = u->first; i < u->first + u->n; i++) {
        const RtStep *s = &p->steps[sec][i];
        int na = op_arg_count(s->op);
        for (int pass = 0; pass < 2; pass++) /* an op reads its operands before it writes */
            for (int k = 0; k < na && k < OP_MAX_ARGS; k++) {
                int id = s->args[k];
                if (id < 0 || (pass == 0 ? !op_arg_reads(s->op, k, s->ints) : !op_arg_writes(s->op, k))) continue;
                int j = find_touch(t, n, id);
                if (j < 0) {
                    if (n == cap) t = realloc(t, (size_t)(cap *= 2) * sizeof *t);
                    t[n] = (Touch){id, pass == 0 ? T_UPLOAD : T_POISON, 0, 0, 0, 0};
                    j = n++;
                }
                if (pass == 1) {
                    t[j].writes++;
                    t[j].exact |= s->op == OP_QUANTIZE || s->op == OP_SCALE_UPDATE;
                    t[j].gemm |= s->op == OP_QGEMM || s->op == OP_MATMUL_FWD || s->op == OP_MATMUL_BWD_DATA || s->op == OP_MATMUL_BWD_WEIGHT;
                }
            }
    }
    *out = t;
    return n;
}

/* A bias gradient is a column sum of dout, and its rounding error scales with the terms summed,
 * not with the result: where the true gradient is zero (a key projection's bias: softmax ignores
 * a shift shared by every key), the result is pure rounding noise that neither side computes
 * "right". Record sum |dout| per column (max over columns) as the tensor's magnitude. */
static void bias_magnitudes(const Plan *p, Section sec, const RtUnit *u, CpuBackend *ref, Touch *t, int n) {
    for (int i = u->first; i < u->first + u->n; i++) {
        const RtStep *s = &p->steps[sec][i];
        int db = -1, dout = -1;
        int64_t M = 0, N = 0;
        if (s->op == OP_MATMUL_BWD_WEIGHT) db = s->args[1], dout = s->args[2], M = s->ints[0], N = s->ints[2];
        else if (s->op == OP_BIAS_BWD) db = s->args[0], dout = s->args[1], M = s->ints[0], N = s->ints[1];
        int j = db >= 0 && dout >= 0 ? find_touch(t, n, db) : -1;
        if (j < 0 || p->t[dout].dtype == TD_U8 || p->t[dout].dtype == TD_I32) continue;
        const float *g = cpu_ptr(ref, dout);
        for (int64_t c = 0; c < N; c++) {
            double sum = 0;
            for (int64_t r = 0; r < M; r++) sum += fabs(g[r * N + c]);
            if (sum > t[j].mag) t[j].mag = sum;
        }
    }
}

/* 0 if the device's copy matches the reference; the worst element in why otherwise. */
static int compare(const Plan *p, const Touch *tc, const float *ref, const float *got, char *why, size_t n) {
    const RtTensor *t = &p->t[tc->id];
    if (t->dtype == TD_U8 || t->dtype == TD_I32) {
        const unsigned char *a = (const unsigned char *)ref, *b = (const unsigned char *)got;
        size_t bytes = (size_t)t->n * (size_t)fp8c_tensor_dtype_bytes[t->dtype]; /* u8, i32: as stored */
        for (size_t i = 0; i < bytes; i++)
            if (a[i] != b[i]) {
                snprintf(why, n, "%s: byte %zu is 0x%02x, the reference has 0x%02x (exact)", t->name, i, b[i], a[i]);
                return -1;
            }
        return 0;
    }
    double amax = 0;
    for (int64_t i = 0; i < t->n; i++)
        if (fabs(ref[i]) > amax && isfinite(ref[i])) amax = fabs(ref[i]);
    double rel, abs_tol;
    if (tc->exact) rel = 0, abs_tol = 0;
    else if (tc->gemm) rel = 1.0 / 64, abs_tol = amax / 256;
    else if (t->dtype == TD_BF16) rel = tc->writes / 128.0, abs_tol = 1e-6;
    else if (t->dtype == TD_F16) rel = tc->writes / 1024.0, abs_tol = 1e-6;
    else rel = 1e-4, abs_tol = 1e-5 * amax;
    if (!tc->exact && 1e-5 * tc->mag > abs_tol) abs_tol = 1e-5 * tc->mag; /* a sum's error scales with its terms */
    for (int64_t i = 0; i < t->n; i++) {
        double r = ref[i], g = got[i];
        if (isnan(r) && isnan(g)) continue;
        if (!(fabs(g - r) <= abs_tol + rel * fabs(r))) {
            snprintf(why, n, "%s[%lld] = %.9g, the reference has %.9g (tolerance %.3g + %.3g relative, %d rounding%s)", t->name,
                     (long long)i, g, r, abs_tol, rel, tc->writes, tc->writes == 1 ? "" : "s");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *device = "cuda", *dir = NULL, *results = NULL, *host_src = ".", *host_cache = getenv("FP8C_HOST_CACHE");
    uint64_t seed = 0;
    int have_seed = 0, fault = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) results = argv[++i];
        else if (!strcmp(argv[i], "--fault")) fault = 1;
        else if (!strcmp(argv[i], "--host-src") && i + 1 < argc) host_src = argv[++i];
        else if (!strcmp(argv[i], "--host-cache") && i + 1 < argc) host_cache = argv[++i];
        else if (!dir) dir = argv[i];
        else seed = strtoull(argv[i], NULL, 10), have_seed = 1;
    }
    if (!dir || (strcmp(device, "cuda") && strcmp(device, "stand-in") && strcmp(device, "host"))) {
        fprintf(stderr, "usage: gpu_ops [--device cuda|stand-in|host] [--fault] [--results FILE] [--host-src DIR] [--host-cache DIR] PLAN_DIR [seed]\n");
        return 2;
    }
    char why[1024], err[2048];
    int cuda = !strcmp(device, "cuda");
    if (cuda && !cu_probe(why, sizeof why)) {
        printf("SKIP gpu_ops: %s\n", why);
        return 0;
    }
    Arena a = {0};
    Diag d;
    diag_init(&d, stderr);
    Plan p;
    if (plan_load(&a, &d, dir, &p)) return 2;
    if (have_seed) p.train.seed = seed;
    CpuBackend ref, got;
    if (cpu_init(&ref, &p, err, sizeof err) || cpu_init(&got, &p, err, sizeof err) || rt_init_params(&ref, err, sizeof err)) {
        fprintf(stderr, "gpu_ops: %s\n", err);
        return 1;
    }
    Device dev = {.fault = fault};
    int orc = cuda                        ? open_cuda(&dev, &p, err, sizeof err)
              : !strcmp(device, "host") ? open_host(&dev, &p, host_src, host_cache ? host_cache : "build/host-kernels", err, sizeof err)
                                        : open_stand_in(&dev, &p, err, sizeof err);
    if (orc) {
        printf("FAIL gpu_ops %s: %s\n", dir, err);
        if (dev.close) dev.close(&dev);
        return 1;
    }
    FILE *res = results ? fopen(results, "w") : NULL;
    if (results && !res) {
        fprintf(stderr, "gpu_ops: cannot write %s\n", results);
        return 1;
    }
    Dataset ds;
    DataStream tr, va;
    data_synthetic(&ds, 1 << 20, (int)p.vocab, p.train.seed);
    data_split(&ds, (int)p.train.seq_len, &tr, &va);
    data_next_batch(&tr, (int)p.train.micro_batch, (int)p.train.seq_len, cpu_ptr(&ref, p.tokens), cpu_ptr(&ref, p.targets));
    RunState st = {.dloss = 1.0f / (float)(p.train.micro_batch * p.train.seq_len), .lr = 1e-3f, .grad_scale = 1.0f, .opt_step = 1};
    int pass = 0, fail = 0, skip = 0;
    for (int sec = 0; sec < SEC_COUNT; sec++)
        for (int u = 0; u < p.nunits[sec]; u++) {
            const RtUnit *un = &p.units[sec][u];
            Touch *tc;
            int nt = unit_touches(&p, (Section)sec, un, &tc), rc = 0;
            for (int k = 0; k < nt && !rc; k++)
                rc = tc[k].first == T_UPLOAD ? dev.upload(&dev, &ref, tc[k].id, err, sizeof err) : dev.poison(&dev, tc[k].id, err, sizeof err);
            if (!rc) rc = dev.run_unit(&dev, (Section)sec, u, &st, err, sizeof err);
            cpu_run_unit(&ref, (Section)sec, u, &st);
            bias_magnitudes(&p, (Section)sec, un, &ref, tc, nt);
            char name[256];
            const RtStep *s0 = &p.steps[sec][un->first];
            snprintf(name, sizeof name, "%s:%d %s%s%s", fp8c_section_names[sec], u, un->fusion ? fuse_names[un->fusion] : fp8c_op_info[s0->op].name,
                     un->fusion ? " (fused)" : "", un->gpu.gemm == 1 ? " [cublaslt]" : un->gpu.gemm == 2 ? " [generated gemm]" : "");
            if (rc == UNIT_SKIPPED) {
                printf("SKIP %s: %s\n", name, err), skip++;
                if (res) fprintf(res, "SKIP %s: %s\n", name, err);
                free(tc);
                continue;
            }
            int unchecked = -1;
            if (rc == UNIT_PARTIAL) {
                unchecked = dev.unchecked, rc = 0;
                snprintf(name + strlen(name), sizeof name - strlen(name), " (its dbias kernel only: %s is not computed here)", p.t[unchecked].name);
            }
            int bad = rc != 0;
            if (rc) snprintf(why, sizeof why, "%s", err);
            for (int k = 0; k < nt && !bad; k++) {
                if (!tc[k].writes || tc[k].id == unchecked) continue;
                if (dev.download(&dev, &got, tc[k].id, err, sizeof err)) snprintf(why, sizeof why, "%s", err), bad = 1;
                else bad = compare(&p, &tc[k], cpu_ptr(&ref, tc[k].id), cpu_ptr(&got, tc[k].id), why, sizeof why) != 0;
            }
            free(tc);
            if (bad) printf("FAIL %s: %s\n", name, why), fail++;
            else pass++;
            if (res && bad) fprintf(res, "FAIL %s: %s\n", name, why);
            else if (res) fprintf(res, "PASS %s\n", name);
        }
    printf("%s gpu_ops %s (%s): %d of %d launches match the CPU reference", fail ? "FAIL" : "PASS", dir, dev.name, pass, pass + fail);
    if (skip) printf(", %d not run there (SKIP)", skip);
    printf("\n");
    if (res) fclose(res);
    dev.close(&dev);
    cpu_free(&ref);
    cpu_free(&got);
    data_free(&ds);
    arena_free(&a);
    return fail ? 1 : 0;
}
