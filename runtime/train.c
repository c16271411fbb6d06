/* train.c: the training loop around a plan and a backend: data, learning-rate schedule,
 * gradient clipping, dynamic loss scaling with overflow skip, evaluation, progress and JSON
 * logs, and safetensors checkpoints that resume bit-exactly. The model is whatever the plan's
 * program computes; this file only feeds tokens in and reads losses out. */
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cuda_backend.h"
#include "data.h"
#include "dist.h"
#include "fp8.h"
#include "io.h"
#include "hf.h"
#include "lt.h"
#include "ref.h"
#include "rng.h"
#include "safetensors.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double lr_at(const TrainCfg *t, int64_t step, int64_t total) {
    double lr = t->opt.lr;
    if (step < t->warmup) return lr * (double)(step + 1) / (double)t->warmup;
    if (t->decay == DECAY_CONSTANT || total <= t->warmup) return lr;
    double frac = (double)(step - t->warmup) / (double)(total - t->warmup);
    if (frac > 1) frac = 1;
    double min = lr * t->min_lr_ratio;
    if (t->decay == DECAY_LINEAR) return lr - (lr - min) * frac;
    return min + 0.5 * (lr - min) * (1.0 + cos(3.14159265358979323846 * frac));
}

/* ---- parameter initialisation: each tensor from its own stream, seeded by (seed, name) ---- */

static uint64_t name_seed(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

int rt_init_params(CpuBackend *b, char *err, size_t errlen) {
    cpu_params_changed(b);
    const Plan *p = b->p;
    for (int i = 0; i < p->nt; i++) {
        const RtTensor *t = &p->t[i];
        if (!t->init) continue;
        float *x = cpu_ptr(b, i);
        uint64_t st = name_seed((uint64_t)p->train.seed, t->name);
        double stdv;
        float cval;
        if (!strncmp(t->init, "normal:", 7) && !str_to_f64(t->init + 7, 0, 1e6, &stdv)) {
            for (int64_t k = 0; k < t->n; k++) x[k] = (float)stdv * rng_normal(&st);
        } else if (!strcmp(t->init, "ones")) {
            for (int64_t k = 0; k < t->n; k++) x[k] = 1.0f;
        } else if (!strcmp(t->init, "zeros")) {
            memset(x, 0, (size_t)t->n * sizeof(float));
        } else if (!strncmp(t->init, "const:", 6) && !str_to_f64(t->init + 6, -3.4e38, 3.4e38, &stdv)) {
            cval = (float)stdv;
            for (int64_t k = 0; k < t->n; k++) x[k] = cval;
        } else {
            snprintf(err, errlen, "plan: tensor '%s' has an unknown init '%s'", t->name, t->init);
            return -1;
        }
        if (t->cls != TC_PARAM) continue;
        /* the master copy keeps the FP32 draw; the parameter is its rounding to storage */
        char mname[512];
        snprintf(mname, sizeof mname, "master.%s", t->name);
        int m = plan_find(p, mname);
        if (m >= 0) memcpy(cpu_ptr(b, m), x, (size_t)t->n * sizeof(float));
        if (t->dtype != TD_F32) ref_round(x, t->n, t->dtype == TD_BF16 ? REF_BF16 : REF_FP16);
    }
    return 0;
}

/* ---- checkpoints ---- */

typedef struct {
    int64_t step, applied, skipped, growth_count;
    double loss_scale;
    int64_t data_pos;
} TrainState;

static int ckpt_class(TensorClass c) { return c == TC_PARAM || c == TC_MASTER || c == TC_OPT || c == TC_SCALE; }

static const char *st_dtype_of(TensorDtype t) { return t == TD_BF16 ? "BF16" : t == TD_F16 ? "F16" : "F32"; }

static int save_checkpoint(const CpuBackend *b, const TrainState *s, const char *path, char *err, size_t errlen) {
    const Plan *p = b->p;
    StTensor *ts = xmalloc((size_t)p->nt * sizeof *ts);
    void **bufs = xmalloc((size_t)p->nt * sizeof *bufs);
    int n = 0;
    for (int i = 0; i < p->nt; i++) {
        const RtTensor *t = &p->t[i];
        if (!ckpt_class(t->cls)) continue;
        const float *x = cpu_ptr(b, i);
        void *data = (void *)x;
        size_t nbytes = (size_t)t->n * 4;
        bufs[n] = NULL;
        if (t->dtype != TD_F32) { /* 16-bit storage: the bits a GPU tensor holds */
            uint16_t *h = xmalloc((size_t)t->n * 2);
            for (int64_t k = 0; k < t->n; k++) h[k] = t->dtype == TD_BF16 ? fp8c_f32_to_bf16(x[k]) : fp8c_f32_to_f16(x[k]);
            data = h;
            bufs[n] = h;
            nbytes = (size_t)t->n * 2;
        }
        ts[n] = (StTensor){t->name, st_dtype_of(t->dtype), t->ndim, {t->shape[0], t->ndim > 1 ? t->shape[1] : 0, 0, 0}, data, nbytes};
        n++;
    }
    char hash[32], step[32], applied[32], skipped[32], growth[32], scale[48], pos[32], seed[32];
    snprintf(seed, sizeof seed, "%lld", (long long)p->train.seed);
    snprintf(hash, sizeof hash, "%016" PRIx64, p->hash);
    snprintf(step, sizeof step, "%" PRId64, s->step);
    snprintf(applied, sizeof applied, "%" PRId64, s->applied);
    snprintf(skipped, sizeof skipped, "%" PRId64, s->skipped);
    snprintf(growth, sizeof growth, "%" PRId64, s->growth_count);
    snprintf(scale, sizeof scale, "%.17g", s->loss_scale);
    snprintf(pos, sizeof pos, "%" PRId64, s->data_pos);
    StMeta meta[] = {{"format", "fp8c-checkpoint"}, {"fp8c_version", FP8C_VERSION}, {"plan_hash", hash},
                     {"model", p->model_name},     {"policy", p->policy_name},     {"step", step},
                     {"applied_steps", applied},   {"skipped_steps", skipped},     {"loss_scale", scale},
                     {"growth_count", growth},     {"data_pos", pos},
                     /* the runtime draws random numbers only to initialise: the seed is its RNG state */
                     {"rng_seed", seed}};
    int rc = st_write(path, ts, n, meta, (int)(sizeof meta / sizeof meta[0]), err, errlen);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    return rc;
}

static int meta_i64(const StFile *f, const char *key, int64_t *out, char *err, size_t errlen, const char *path) {
    const char *v = st_meta(f, key);
    if (v && !str_to_i64(v, 0, (int64_t)1 << 62, out)) return 0;
    snprintf(err, errlen, "%s: checkpoint metadata '%s' is missing or not a count", path, key);
    return -1;
}

/* Validate everything first, then copy: a bad checkpoint is refused, never half-loaded. */
static int load_checkpoint(CpuBackend *b, TrainState *s, const char *path, char *err, size_t errlen) {
    const Plan *p = b->p;
    cpu_params_changed(b);
    StFile *f = st_read(path, err, errlen);
    if (!f) return -1;
    int rc = -1;
    const char *fmt = st_meta(f, "format"), *hash = st_meta(f, "plan_hash"), *scale = st_meta(f, "loss_scale");
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, p->hash);
    if (!fmt || strcmp(fmt, "fp8c-checkpoint")) {
        snprintf(err, errlen, "%s: not an fp8c checkpoint (no format: fp8c-checkpoint in its metadata)", path);
        goto out;
    }
    if (!hash || strcmp(hash, want)) {
        snprintf(err, errlen, "%s was written for another plan (plan hash %s, model %s, policy %s); this plan (%s x %s) has hash %s",
                 path, hash ? hash : "?", st_meta(f, "model") ? st_meta(f, "model") : "?",
                 st_meta(f, "policy") ? st_meta(f, "policy") : "?", p->model_name, p->policy_name, want);
        goto out;
    }
    TrainState ns;
    if (meta_i64(f, "step", &ns.step, err, errlen, path) || meta_i64(f, "applied_steps", &ns.applied, err, errlen, path) ||
        meta_i64(f, "skipped_steps", &ns.skipped, err, errlen, path) || meta_i64(f, "growth_count", &ns.growth_count, err, errlen, path) ||
        meta_i64(f, "data_pos", &ns.data_pos, err, errlen, path))
        goto out;
    if (str_to_f64(scale, 1e-38, 3.4e38, &ns.loss_scale)) {
        snprintf(err, errlen, "%s: checkpoint metadata 'loss_scale' is missing or invalid", path);
        goto out;
    }
    if (ns.step != ns.applied + ns.skipped || ns.growth_count > ns.applied) {
        snprintf(err, errlen, "%s: checkpoint metadata is inconsistent: step %lld is not applied_steps %lld + skipped_steps %lld, "
                 "or growth_count %lld exceeds the applied steps", path, (long long)ns.step, (long long)ns.applied,
                 (long long)ns.skipped, (long long)ns.growth_count);
        goto out;
    }
    /* exactly the plan's checkpointed tensors: an extra one (an unknown name, a gradient, a
     * padding of empty tensors) means the file is not what this plan wrote */
    int nwant = 0;
    for (int i = 0; i < p->nt; i++) nwant += ckpt_class(p->t[i].cls);
    if (st_count(f) != nwant) {
        const char *extra = NULL;
        for (int i = 0; !extra && i < st_count(f) && st_count(f) > nwant; i++) {
            int id = plan_find(p, st_at(f, i)->name);
            if (id < 0 || !ckpt_class(p->t[id].cls)) extra = st_at(f, i)->name;
        }
        snprintf(err, errlen, "%s: checkpoint has %d tensors, this plan checkpoints %d%s%s%s", path, st_count(f), nwant,
                 extra ? " (it has '" : "", extra ? extra : "", extra ? "', which this plan does not checkpoint)" : "");
        goto out;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < p->nt; i++) {
            const RtTensor *t = &p->t[i];
            if (!ckpt_class(t->cls)) continue;
            const StTensor *c = st_find(f, t->name);
            int shape_ok = c && c->ndim == t->ndim && c->shape[0] == t->shape[0] && (t->ndim < 2 || c->shape[1] == t->shape[1]);
            if (!c || strcmp(c->dtype, st_dtype_of(t->dtype)) || !shape_ok) {
                snprintf(err, errlen, "%s: tensor '%s' is %s (want %s %s)", path, t->name, c ? "of another dtype or shape" : "missing",
                         st_dtype_of(t->dtype), t->ndim > 1 ? "matrix" : "vector");
                goto out;
            }
            if (pass == 0) continue;
            float *x = cpu_ptr(b, i);
            if (t->dtype == TD_F32) {
                memcpy(x, c->data, (size_t)t->n * 4);
            } else {
                const unsigned char *h = c->data;
                for (int64_t k = 0; k < t->n; k++) {
                    uint16_t bits = (uint16_t)(h[2 * k] | (h[2 * k + 1] << 8));
                    x[k] = t->dtype == TD_BF16 ? fp8c_bf16_to_f32(bits) : fp8c_f16_to_f32(bits);
                }
            }
        }
    }
    *s = ns;
    rc = 0;
out:
    st_free(f);
    return rc;
}

/* A resumed state must fit the run, and a checkpoint named step_N.safetensors must say step N:
 * the run writes step_M for M > step, so a file whose name and content disagree could be
 * overwritten by the run resuming from it. */
static int resume_name_check(const char *path, const TrainState *s, int64_t total, char *err, size_t errlen) {
    if (s->step > total) {
        snprintf(err, errlen, "%s: checkpoint is at step %lld, beyond this run's %lld steps (raise --steps)", path, (long long)s->step,
                 (long long)total);
        return -1;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char digits[32];
    int64_t named;
    size_t n = strlen(base), pre = strlen("step_"), suf = strlen(".safetensors");
    if (n > pre + suf && n - pre - suf < sizeof digits && !strncmp(base, "step_", pre) && !strcmp(base + n - suf, ".safetensors")) {
        snprintf(digits, sizeof digits, "%.*s", (int)(n - pre - suf), base + pre);
        if (!str_to_i64(digits, 0, INT64_MAX, &named) && named != s->step) {
            snprintf(err, errlen, "%s: its name says step %lld, its metadata says step %lld; refusing a checkpoint that lies about its step",
                     path, (long long)named, (long long)s->step);
            return -1;
        }
    }
    return 0;
}

int rt_load_checkpoint(CpuBackend *b, const char *path, int64_t *step, char *err, size_t errlen) {
    TrainState s;
    if (load_checkpoint(b, &s, path, err, errlen)) return -1;
    *step = s.step;
    return 0;
}

/* ---- device choice ---- */

/* 1: the GPU, 0: the CPU, -1: --device cuda without a usable GPU (message printed). */
static int pick_device(DeviceKind want, int quiet) {
    if (want == DEV_CPU) return 0;
    char why[512];
    int gpu = cu_probe(why, sizeof why);
    if (want == DEV_CUDA && !gpu) {
        fprintf(stderr, "fp8c: error: --device cuda: %s\n", why);
        return -1;
    }
    if (want == DEV_AUTO && !quiet) fprintf(stderr, "fp8c: device: %s (%s)\n", gpu ? "cuda" : "cpu", why);
    return gpu;
}

/* ---- the loop ---- */

typedef struct {
    CpuBackend *b;       /* the CPU backend, or the GPU's host mirror */
    CudaBackend *cu;     /* NULL: run on the CPU */
    const Plan *p;
    DataStream train, val;
    FILE *log;
    char err[1024];
} Run;

static void feed(Run *r, DataStream *s) {
    const Plan *p = r->p;
    data_next_batch(s, (int)p->train.micro_batch, (int)p->train.seq_len, cpu_ptr(r->b, p->tokens), cpu_ptr(r->b, p->targets));
}

/* One section on the chosen device; on the GPU the inputs go up first and what the loop reads
 * (losses after the forward, gradients after the backward) comes back into the mirror. */
static int dev_run(Run *r, Section sec, const RunState *st) {
    if (!r->cu) {
        cpu_run(r->b, sec, st);
        return 0;
    }
    const Plan *p = r->p;
    if (sec == SEC_FORWARD && (cu_upload_tensor(r->cu, r->b, p->tokens, r->err, sizeof r->err) ||
                               cu_upload_tensor(r->cu, r->b, p->targets, r->err, sizeof r->err)))
        return -1;
    if (cu_run(r->cu, sec, st, r->err, sizeof r->err)) return -1;
    if (sec == SEC_FORWARD) return cu_download_tensor(r->cu, r->b, p->losses, r->err, sizeof r->err);
    if (sec == SEC_BACKWARD) return cu_download(r->cu, r->b, TC_GRAD, r->err, sizeof r->err);
    return 0;
}

/* The training state classes, between the mirror and the GPU (start, resume, checkpoints). */
static int dev_sync(Run *r, int to_device) {
    static const TensorClass cls[] = {TC_PARAM, TC_MASTER, TC_OPT, TC_SCALE};
    if (!r->cu) return 0;
    for (int i = 0; i < 4; i++)
        if (to_device ? cu_upload(r->cu, r->b, cls[i], r->err, sizeof r->err) : cu_download(r->cu, r->b, cls[i], r->err, sizeof r->err))
            return -1;
    return 0;
}

static double mean_loss(const Run *r) {
    const float *l = cpu_ptr(r->b, r->p->losses);
    double sum = 0;
    int64_t n = r->p->t[r->p->losses].n;
    for (int64_t i = 0; i < n; i++) sum += l[i];
    return sum / (double)n;
}

static double evaluate(Run *r, int64_t batches) {
    DataStream v = r->val;
    v.pos = 0;
    RunState st = {0};
    double sum = 0;
    for (int64_t i = 0; i < batches; i++) {
        feed(r, &v);
        if (dev_run(r, SEC_FORWARD, &st)) return NAN;
        sum += mean_loss(r);
    }
    return sum / (double)batches;
}

/* MoE load balance of the last training micro-batch: the largest max / mean of tokens per expert
 * over the MoE layers (1 is perfect balance). Routing never drops a token (every expert's buffer
 * holds every token), so there is no dropped count to report. 0 when the plan has no MoE layer. */
static double expert_imbalance(Run *r) {
    const Plan *p = r->p;
    double worst = 0;
    for (int i = 0; i < p->n_expert_load; i++) {
        int t = p->expert_load[i];
        if (r->cu && cu_download_tensor(r->cu, r->b, t, r->err, sizeof r->err)) return NAN;
        const float *load = cpu_ptr(r->b, t);
        double sum = 0, mx = 0;
        for (int64_t e = 0; e < p->t[t].n; e++) sum += load[e], mx = load[e] > mx ? load[e] : mx;
        if (sum > 0 && mx / (sum / (double)p->t[t].n) > worst) worst = mx / (sum / (double)p->t[t].n);
    }
    return worst;
}

/* MoE: the expert-bias update balances on the whole step's load. The forward writes each layer's
 * tokens per expert for its micro-batch; these sum the step's micro-batches (whole numbers, exact
 * in float) and put the sums back before the optimizer section reads them (and before the ranks'
 * loads are summed under mpirun), so any micro-batch split and rank count sees the same load. */
static int64_t expert_load_size(const Plan *p) {
    int64_t n = 0;
    for (int i = 0; i < p->n_expert_load; i++) n += p->t[p->expert_load[i]].n;
    return n;
}

static int expert_load_fold(Run *r, float *sum, int put) {
    const Plan *p = r->p;
    int64_t o = 0;
    for (int i = 0; i < p->n_expert_load; i++) {
        int t = p->expert_load[i];
        float *load = cpu_ptr(r->b, t);
        if (!put && r->cu && cu_download_tensor(r->cu, r->b, t, r->err, sizeof r->err)) return -1;
        for (int64_t e = 0; e < p->t[t].n; e++) {
            if (put) load[e] = sum[o + e];
            else sum[o + e] += load[e];
        }
        if (put && r->cu && cu_upload_tensor(r->cu, r->b, t, r->err, sizeof r->err)) return -1;
        o += p->t[t].n;
    }
    return 0;
}

static void fmt_eta(char *out, size_t n, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    if (s >= 3600.0 * 1e6) { /* beyond int hours: no overflowing conversion */
        snprintf(out, n, ">1e6h");
        return;
    }
    if (s >= 3600)
        snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

int rt_train(const TrainOpts *o, const char *plan_dir) {
    Arena arena = {0};
    Diag d;
    diag_init(&d, stderr);
    Plan p;
    char err[1024] = "";
    int rc = EXIT_RUNTIME;
    CpuBackend b = {0};
    Dataset ds = {0};
    Run run = {0};
    Dist dist = {0};
    float *load_sum = NULL; /* MoE: the step's tokens per expert, summed over micro-batches */
    if (plan_load(&arena, &d, plan_dir, &p)) {
        arena_free(&arena);
        return EXIT_BAD_INPUT;
    }
    if (o->check) {
        double total = 0;
        for (int c = 0; c < TC_COUNT; c++) total += (double)p.class_bytes[c];
        printf("%s: plan for %s x %s is valid: %d tensors, %d/%d/%d/%d launch units (forward/backward/optimizer/scale_update), "
               "%.1f MB in the plan's dtypes\n", plan_dir, p.model_name, p.policy_name, p.nt, p.nunits[SEC_FORWARD],
               p.nunits[SEC_BACKWARD], p.nunits[SEC_OPTIMIZER], p.nunits[SEC_SCALE_UPDATE], total / 1e6);
        /* the GEMMs the CUDA backend hands to cuBLASLt, checked against its rules for the plan's
         * target now instead of at the first GPU run */
        int sm = 0;
        if (p.target && sscanf(p.target, "sm_%d", &sm) == 1 && sm >= 10) {
            int refused = lt_check_plan(&p, sm, err, sizeof err);
            if (refused) {
                /* a warning: the CPU backend runs it (the GEMMs' numerics are the plan's either way) */
                fprintf(stderr, "fp8c: warning: %s: the CUDA backend cannot run this plan on %s (the CPU backend can): %d GEMM%s "
                        "that cuBLASLt refuses and no generated kernel runs; the first: %s\n",
                        plan_dir, p.target, refused, refused > 1 ? "s" : "", err);
            } else
                    printf("%s: every GEMM is one cuBLASLt runs on %s (or has a generated kernel)\n", plan_dir, p.target);
        }
        rc = EXIT_OK;
        goto done;
    }
    if ((rc = dist_init(&dist, &p, o->zero, err, sizeof err))) {
        if (!dist.rank || rc == EXIT_RUNTIME) fprintf(stderr, "fp8c: error: %s\n", err); /* bad input: the same on every rank */
        goto done;
    }
    rc = EXIT_RUNTIME;
    int gpu = pick_device(o->device, dist.rank);
    if (gpu < 0) goto done;
    int64_t total = o->steps ? o->steps : p.train.steps;
    if (cpu_init(&b, &p, err, sizeof err) || rt_init_params(&b, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        goto done;
    }
    int64_t prof = 0;
    b.profile = getenv("FP8C_PROFILE") && !str_to_i64(getenv("FP8C_PROFILE"), 0, 9, &prof) && prof > 0;
    if (o->init_from && !o->resume && hf_load_weights(&b, o->init_from, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: --init-from: %s\n", err);
        rc = EXIT_BAD_INPUT;
        goto done;
    }
    int64_t T = p.train.seq_len, B = p.train.micro_batch;
    if (o->data) {
        if (data_load(&ds, o->data, (int)p.vocab, err, sizeof err)) {
            fprintf(stderr, "fp8c: error: %s\n", err);
            rc = EXIT_BAD_INPUT;
            goto done;
        }
    } else {
        int64_t n = 10 * B * p.train.split * (T + 1) * 16; /* the configured micro-batch's, split or not */
        if (n < (int64_t)1 << 20) n = (int64_t)1 << 20;
        data_synthetic(&ds, n, (int)p.vocab, (uint64_t)p.train.seed);
    }
    if (ds.n < 20 * (T + 1)) {
        fprintf(stderr, "fp8c: error: %s has %lld tokens; a %lld-token sequence needs at least %lld for training and a 10%% validation split\n",
                ds.source, (long long)ds.n, (long long)T, (long long)(20 * (T + 1)));
        rc = EXIT_BAD_INPUT;
        goto done;
    }
    run = (Run){.b = &b, .p = &p};
    if (gpu && !(run.cu = cu_init(&p, err, sizeof err))) {
        fprintf(stderr, "fp8c: error: --device %s: %s\n", o->device == DEV_CUDA ? "cuda" : "auto", err);
        goto done;
    }
    if (run.cu && dist.zero) {
        fprintf(stderr, "fp8c: error: --zero 1 runs on the CPU backend only for now (the CUDA backend's sharded optimizer is not implemented)\n");
        rc = EXIT_BAD_INPUT;
        goto done;
    }
    if (run.cu && (rc = dist_cuda(&dist, run.cu, err, sizeof err))) { /* N ranks: NCCL for the gradients */
        if (!dist.rank || rc == EXIT_RUNTIME) fprintf(stderr, "fp8c: error: %s\n", err);
        goto done;
    }
    rc = EXIT_RUNTIME;
    data_split(&ds, (int)T, &run.train, &run.val);
    TrainState s = {0, 0, 0, 0, p.ls_mode == LS_DYNAMIC ? p.ls_init : p.ls_mode == LS_STATIC ? p.ls_scale : 1.0, 0};
    if (o->resume) {
        if (load_checkpoint(&b, &s, o->resume, err, sizeof err)) {
            fprintf(stderr, "fp8c: error: %s\n", err);
            rc = EXIT_BAD_INPUT;
            goto done;
        }
        run.train.pos = s.data_pos;
        if (s.data_pos < 0 || s.data_pos >= run.train.n) {
            fprintf(stderr, "fp8c: error: %s: data position %lld is outside this data set (%lld training tokens)\n", o->resume,
                    (long long)s.data_pos, (long long)run.train.n);
            rc = EXIT_BAD_INPUT;
            goto done;
        }
        if (resume_name_check(o->resume, &s, total, err, sizeof err)) {
            fprintf(stderr, "fp8c: error: %s\n", err);
            rc = EXIT_BAD_INPUT;
            goto done;
        }
        if (!dist.rank) fprintf(stderr, "fp8c: resumed from %s at step %lld\n", o->resume, (long long)s.step);
    }
    if (dev_sync(&run, 1)) {
        fprintf(stderr, "fp8c: error: %s\n", run.err);
        goto done;
    }
    int why = IO_FAIL;
    if (o->log && !dist.rank && !(run.log = io_open_write(o->log, s.step != 0, &why, err, sizeof err))) {
        fprintf(stderr, "fp8c: error: --log: %s\n", err);
        rc = why == IO_BAD ? EXIT_BAD_INPUT : EXIT_RUNTIME;
        goto done;
    }
    struct stat cst;
    if (o->ckpt_dir && ((mkdir(o->ckpt_dir, 0755) && errno != EEXIST) || stat(o->ckpt_dir, &cst) || !S_ISDIR(cst.st_mode))) {
        fprintf(stderr, "fp8c: error: --checkpoint-dir '%s' is not a directory that can be created or written\n", o->ckpt_dir);
        rc = EXIT_BAD_INPUT;
        goto done;
    }
    int swept = o->ckpt_dir ? io_sweep_stale(o->ckpt_dir, "step_*.safetensors.tmp.") : 0;
    if (swept) fprintf(stderr, "fp8c: removed %d partial checkpoint%s left in %s by a killed run\n", swept, swept > 1 ? "s" : "", o->ckpt_dir);
    if (o->ckpt_dir && rt_keep_plan(plan_dir, o->ckpt_dir, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        goto done;
    }
    /* --eval-batches counts configured micro-batches: a split plan evaluates the same tokens */
    int64_t val_batches = (o->eval_batches ? o->eval_batches : 8) * p.train.split;
    int64_t val_avail = (run.val.n - 1) / (B * T);
    if (val_batches > val_avail) val_batches = val_avail > 0 ? val_avail : 1;
    int64_t every = o->progress_every ? o->progress_every : (total <= 50 ? 1 : 10);
    char chunks[96] = "";
    if (p.train.split > 1)
        snprintf(chunks, sizeof chunks, " (micro-batches of %lld x %lld in %lld chunks)", (long long)(B * p.train.split), (long long)T,
                 (long long)p.train.split);
    if (!dist.rank)
        fprintf(stderr, "fp8c: training %s x %s on %s%s: %lld params, %lld tokens/step%s, steps %lld..%lld, data %s (%lld tokens)\n",
                p.model_name, p.policy_name, run.cu ? cu_device_name(run.cu) : "cpu", dist_describe(&dist), (long long)p.total_params,
                (long long)(B * T * p.train.grad_accum), chunks, (long long)s.step + 1, (long long)total, ds.source, (long long)ds.n);
    double t0 = now_s();
    int64_t first = s.step;
    float *grads = (float *)b.base[TC_GRAD];
    int64_t ngrad = 0;
    for (int i = 0; i < p.nt; i++)
        if (p.t[i].cls == TC_GRAD) ngrad += p.t[i].n;
    size_t grad_bytes = (size_t)p.class_bytes[TC_GRAD] * (size_t)b.factor[TC_GRAD];
    if (p.n_expert_load) load_sum = xmalloc((size_t)expert_load_size(&p) * sizeof *load_sum);
    while (s.step < total) {
        double ts = now_s();
        RunState st = {0};
        st.lr = (float)lr_at(&p.train, s.step, total);
        st.dloss = (float)(s.loss_scale / (double)(B * T * p.train.grad_accum));
        ref_zero_bytes(grads, grad_bytes);
        if (run.cu && cu_zero_class(run.cu, TC_GRAD, run.err, sizeof run.err)) goto gpu_fail;
        double loss = 0;
        if (load_sum) memset(load_sum, 0, (size_t)expert_load_size(&p) * sizeof *load_sum);
        for (int64_t micro = 0; micro < p.train.grad_accum; micro++) {
            if (!dist_mine(&dist, micro)) { /* another rank's slice of the global batch */
                dist_skip_batch(&dist, &run.train, (int)B, (int)T);
                continue;
            }
            feed(&run, &run.train);
            if (dev_run(&run, SEC_FORWARD, &st)) goto gpu_fail;
            if (load_sum && expert_load_fold(&run, load_sum, 0)) goto gpu_fail;
            loss += mean_loss(&run) / (double)p.train.grad_accum;
            if (dev_run(&run, SEC_BACKWARD, &st) || dist_micro_done(&dist, &b, run.cu, run.err, sizeof run.err)) goto gpu_fail;
        }
        if (load_sum && expert_load_fold(&run, load_sum, 1)) goto gpu_fail;
        if (o->inject_nan_step == s.step + 1 && dist.rank == dist.size - 1) {
            for (int i = 0; i < p.nt; i++)
                if (p.t[i].cls == TC_GRAD) {
                    ((float *)cpu_ptr(&b, i))[0] = NAN;
                    if (run.cu && cu_upload_tensor(run.cu, &b, i, run.err, sizeof run.err)) goto gpu_fail; /* NCCL sums the device's */
                    break;
                }
        }
        /* over ranks: gradients summed, the loss averaged, amaxes maxed, finiteness agreed */
        int all_finite = 1;
        if (dist_reduce(&dist, &b, run.cu, s.step + 1, &loss, &all_finite, run.err, sizeof run.err)) goto gpu_fail;
        /* gradient norm over every parameter gradient, unscaled, and finiteness from the same
         * pass: a float's square cannot overflow a double (and no tensor has 2^900 elements), so
         * a tensor's sum of squares is finite exactly when all of its elements are (an Inf
         * squares to Inf, a NaN stays NaN) */
        double sumsq = 0;
        int finite = 1;
        for (int i = 0; i < p.nt; i++)
            if (p.t[i].cls == TC_GRAD) {
                double si = ref_sumsq(cpu_ptr(&b, i), p.t[i].n);
                finite &= isfinite(si) != 0;
                sumsq += si;
            }
        (void)ngrad;
        double norm = sqrt(sumsq) / s.loss_scale;
        int skipped = !finite || !all_finite;
        if (skipped) {
            s.skipped++;
            if (p.ls_mode == LS_DYNAMIC) {
                s.loss_scale *= p.ls_backoff;
                s.growth_count = 0;
            }
        } else {
            double clip = p.train.grad_clip > 0 && norm > p.train.grad_clip ? p.train.grad_clip / norm : 1.0;
            st.grad_scale = (float)(clip / s.loss_scale);
            st.opt_step = s.applied + 1;
            st.amax_step = s.applied;
            if ((dist.zero ? dist_optimizer(&dist, &b, &st, run.err, sizeof run.err) : dev_run(&run, SEC_OPTIMIZER, &st)) ||
                dev_run(&run, SEC_SCALE_UPDATE, &st))
                goto gpu_fail;
            s.applied++;
            if (p.ls_mode == LS_DYNAMIC && ++s.growth_count >= p.ls_interval) {
                s.loss_scale *= p.ls_growth;
                s.growth_count = 0;
            }
        }
        s.step++;
        s.data_pos = run.train.pos;
        if (!run.cu && dist_verify(&dist, &b, s.step, run.err, sizeof run.err)) goto gpu_fail;
        double dt = now_s() - ts, elapsed = now_s() - t0;
        double tps = (double)(B * T * p.train.grad_accum) / dt;
        int do_eval = (p.train.eval_every && s.step % p.train.eval_every == 0) || s.step == total;
        double imbalance = p.n_expert_load ? expert_imbalance(&run) : 0; /* before eval's forwards overwrite it */
        double vloss = do_eval && !dist.rank ? evaluate(&run, val_batches) : 0; /* rank 0 evaluates and prints */
        if (!dist.rank && (s.step % every == 0 || do_eval || s.step == first + 1)) {
            char eta[32];
            fmt_eta(eta, sizeof eta, elapsed / (double)(s.step - first) * (double)(total - s.step));
            printf("step %5lld/%lld | loss %.4f%s | lr %.3e | norm %.3f | %.0f tok/s | loss scale %g | ETA %s", (long long)s.step,
                   (long long)total, loss, skipped ? " (skipped: non-finite gradients)" : "", st.lr, norm, tps, s.loss_scale, eta);
            if (p.n_expert_load) printf(" | experts max/mean %.2f", imbalance);
            if (do_eval) printf(" | val %.4f", vloss);
            printf("\n");
            fflush(stdout);
        }
        if (run.log) {
            fprintf(run.log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6g, \"loss_scale\": %.9g, \"tokens_per_s\": %.1f, \"skipped\": %s",
                    (long long)s.step, loss, st.lr, isfinite(norm) ? norm : -1.0, s.loss_scale, tps, skipped ? "true" : "false");
            if (p.n_expert_load) fprintf(run.log, ", \"expert_load_max_over_mean\": %.4f, \"dropped_tokens\": 0", imbalance);
            if (do_eval) fprintf(run.log, ", \"val_loss\": %.6f", vloss);
            fprintf(run.log, "}\n");
            if (io_check(run.log, o->log, err, sizeof err)) {
                fprintf(stderr, "fp8c: error: --log: %s\n", err);
                goto done;
            }
        }
        int ckpt = o->ckpt_dir && ((o->ckpt_every && s.step % o->ckpt_every == 0) || s.step == total);
        if (ckpt) {
            char path[2048];
            snprintf(path, sizeof path, "%s/step_%lld.safetensors", o->ckpt_dir, (long long)s.step);
            if (dev_sync(&run, 0) || dist_gather_state(&dist, &b, run.err, sizeof run.err)) goto gpu_fail;
            if (!dist.rank && save_checkpoint(&b, &s, path, err, sizeof err)) {
                fprintf(stderr, "fp8c: error: checkpoint: %s\n", err);
                goto done;
            }
        }
    }
    FILE *log = run.log;
    run.log = NULL;
    if (io_close(log, o->log, err, sizeof err) || io_check(stdout, "standard output", err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        goto done;
    }
    if (b.profile) cpu_print_profile(&b, stderr);
    if (!dist.rank) fprintf(stderr, "fp8c: done: %lld steps (%lld skipped) in %.1f s\n", (long long)(s.step - first), (long long)s.skipped, now_s() - t0);
    rc = EXIT_OK;
    goto done;
gpu_fail:
    fprintf(stderr, "fp8c: error: %s\n", run.err);
    rc = EXIT_RUNTIME;
done:
    free(load_sum);
    dist_end(&dist, rc == EXIT_OK);
    cu_free(run.cu);
    if (run.log) fclose(run.log);
    data_free(&ds);
    cpu_free(&b);
    arena_free(&arena);
    return rc;
}
