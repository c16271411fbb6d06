/* infer.c: running a trained model without training it. fp8c eval reports the loss and
 * perplexity of a checkpoint on a data file; fp8c sample generates from it (bytes as text for a
 * byte model, token ids otherwise). Both run the plan's own forward program on the CPU backend,
 * so what they measure is exactly what training computed, FP8 emulation included.
 *
 * A checkpoint is an fp8c checkpoint file (its plan found next to it, where fp8c train keeps a
 * copy, or through --plan) or a Hugging Face model directory loaded through hf.c into a plan
 * compiled from its config.json (--plan). Must not: change the checkpoint or the plan. */
#include "runtime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "hf.h"
#include "rng.h"

/* ---- the plan next to the checkpoints ---- */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap) buf = xrealloc(buf, (cap = cap ? 2 * cap : 65536));
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int rt_keep_plan(const char *plan_dir, const char *ckpt_dir, char *err, size_t errlen) {
    char src[1100], dst[1100], tmp[1200];
    snprintf(src, sizeof src, "%s/plan.json", plan_dir);
    snprintf(dst, sizeof dst, "%s/plan.json", ckpt_dir);
    size_t n, m;
    char *a = read_file(src, &n), *b = read_file(dst, &m);
    int same = a && b && n == m && !memcmp(a, b, n), rc = 0;
    free(b);
    if (!a) {
        snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno));
        return -1;
    }
    if (!same) { /* atomically: a reader never sees half a plan */
        snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", dst);
        int fd = mkstemp(tmp);
        FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        int ok = f && fwrite(a, 1, n, f) == n;
        if (f && fclose(f)) ok = 0;
        if (!f && fd >= 0) close(fd);
        if (ok) chmod(tmp, 0644);
        if (!ok || rename(tmp, dst)) {
            snprintf(err, errlen, "cannot write %s next to the checkpoints: %s", dst, strerror(errno));
            if (fd >= 0) unlink(tmp);
            rc = -1;
        }
    }
    free(a);
    return rc;
}

/* ---- a loaded model ---- */

typedef struct {
    Arena arena;
    Plan p;
    CpuBackend b;
    int logits;   /* lm_head.out: (B*T, V) */
    float *saved; /* (B*T, V) the logits as the forward made them, before the loss unit */
} Loaded;

/* The forward section unit by unit, saving the logits before the unit that computes the loss:
 * the plan may fuse the loss with its gradient, which overwrites the logits in place. */
static void forward(Loaded *L) {
    const Plan *p = &L->p;
    RunState st = {0};
    int saved = 0;
    for (int u = 0; u < p->nunits[SEC_FORWARD]; u++) {
        const RtUnit *un = &p->units[SEC_FORWARD][u];
        for (int k = 0; k < un->n && !saved; k++)
            if (p->steps[SEC_FORWARD][un->first + k].op == OP_XENT_FWD) {
                memcpy(L->saved, cpu_ptr(&L->b, L->logits), (size_t)p->t[L->logits].n * sizeof(float));
                saved = 1;
            }
        cpu_run_unit(&L->b, SEC_FORWARD, u, &st);
    }
    if (!saved) memcpy(L->saved, cpu_ptr(&L->b, L->logits), (size_t)p->t[L->logits].n * sizeof(float));
}

static int is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

/* Plan + backend + the checkpoint's weights. Returns 0 or an exit code (message printed). */
static int load(const InferOpts *o, Loaded *L) {
    char err[1024], dir[1100];
    memset(L, 0, sizeof *L);
    int hf = is_dir(o->ckpt);
    if (!hf && access(o->ckpt, R_OK)) {
        fprintf(stderr, "fp8c: error: cannot read checkpoint %s: %s\n", o->ckpt, strerror(errno));
        return EXIT_RUNTIME;
    }
    if (o->plan_dir) {
        snprintf(dir, sizeof dir, "%s", o->plan_dir);
    } else if (hf) {
        fprintf(stderr, "fp8c: error: %s is a Hugging Face directory: compile its config.json first (fp8c compile %s/config.json "
                        "POLICY --target cpu -o PLAN) and pass --plan PLAN\n", o->ckpt, o->ckpt);
        return EXIT_BAD_INPUT;
    } else {
        const char *slash = strrchr(o->ckpt, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - o->ckpt) : 1, slash ? o->ckpt : ".");
        char pj[1200];
        snprintf(pj, sizeof pj, "%s/plan.json", dir);
        if (access(pj, R_OK)) {
            fprintf(stderr, "fp8c: error: no plan.json next to %s (fp8c train keeps one in --checkpoint-dir); pass --plan DIR, the -o DIR "
                            "of the compile or train that wrote the checkpoint\n", o->ckpt);
            return EXIT_BAD_INPUT;
        }
    }
    Diag d;
    diag_init(&d, stderr);
    if (plan_load(&L->arena, &d, dir, &L->p)) return EXIT_BAD_INPUT;
    if (cpu_init(&L->b, &L->p, err, sizeof err) || rt_init_params(&L->b, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        return EXIT_RUNTIME;
    }
    int64_t step = 0;
    if (hf ? hf_load_weights(&L->b, o->ckpt, err, sizeof err) : rt_load_checkpoint(&L->b, o->ckpt, &step, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    L->logits = plan_find(&L->p, "lm_head.out");
    if (L->logits < 0 || L->p.t[L->logits].n != L->p.train.micro_batch * L->p.train.seq_len * L->p.vocab) {
        fprintf(stderr, "fp8c: error: %s/plan.json has no lm_head.out logits of (micro_batch x seq_len, vocab)\n", dir);
        return EXIT_BAD_INPUT;
    }
    L->saved = xmalloc((size_t)L->p.t[L->logits].n * sizeof(float));
    return 0;
}

static void unload(Loaded *L) {
    free(L->saved);
    cpu_free(&L->b);
    arena_free(&L->arena);
}

/* ---- eval ---- */

/* A (rows, cols) float32 array as a .npy file (format 1.0: magic, header dict, data). */
static int write_npy(const char *path, const float *x, int64_t rows, int64_t cols, char *err, size_t errlen) {
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }", (long long)rows, (long long)cols);
    while ((10 + n + 1) % 64) hdr[n++] = ' ';
    hdr[n++] = '\n';
    FILE *f = fopen(path, "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    int ok = f && fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n &&
             fwrite(x, sizeof *x, (size_t)(rows * cols), f) == (size_t)(rows * cols);
    if (f && fclose(f)) ok = 0;
    if (!ok) snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return ok ? 0 : -1;
}

int rt_eval(const InferOpts *o) {
    Loaded L;
    Dataset ds = {0};
    char err[1024];
    int rc = load(o, &L);
    if (rc) goto out;
    const Plan *p = &L.p;
    int64_t B = p->train.micro_batch, T = p->train.seq_len;
    if (data_load(&ds, o->data, (int)p->vocab, err, sizeof err)) {
        fprintf(stderr, "fp8c: error: %s\n", err);
        rc = EXIT_BAD_INPUT;
        goto out;
    }
    if (ds.n < T + 1) {
        fprintf(stderr, "fp8c: error: %s has %lld tokens; the model's sequences of %lld need at least %lld\n", ds.source, (long long)ds.n,
                (long long)T, (long long)(T + 1));
        rc = EXIT_BAD_INPUT;
        goto out;
    }
    /* every whole window [s*T, s*T + T + 1) once; rows past the last window get target -1
     * (no loss) and are not counted */
    int64_t nseq = (ds.n - 1) / T;
    int32_t *tok = cpu_ptr(&L.b, p->tokens), *tgt = cpu_ptr(&L.b, p->targets);
    const float *loss = cpu_ptr(&L.b, p->losses);
    double sum = 0;
    int64_t count = 0;
    for (int64_t s0 = 0; s0 < nseq; s0 += B) {
        for (int64_t b = 0; b < B; b++) {
            int64_t s = s0 + b;
            for (int64_t t = 0; t < T; t++) {
                tok[b * T + t] = s < nseq ? ds.tokens[s * T + t] : 0;
                tgt[b * T + t] = s < nseq ? ds.tokens[s * T + t + 1] : -1;
            }
        }
        forward(&L);
        if (s0 == 0 && o->logits && write_npy(o->logits, L.saved, T, p->vocab, err, sizeof err)) {
            fprintf(stderr, "fp8c: error: %s\n", err);
            rc = EXIT_RUNTIME;
            goto out;
        }
        for (int64_t b = 0; b < B && s0 + b < nseq; b++)
            for (int64_t t = 0; t < T; t++) sum += loss[b * T + t], count++;
    }
    double mean = sum / (double)count;
    printf("eval %s on %s: %lld tokens in %lld sequences of %lld | loss %.6f | perplexity %.4f\n", o->ckpt, ds.source, (long long)count,
           (long long)nseq, (long long)T, mean, exp(mean));
    rc = isfinite(mean) ? EXIT_OK : EXIT_RUNTIME;
    if (rc) fprintf(stderr, "fp8c: error: the loss is not finite\n");
out:
    data_free(&ds);
    unload(&L);
    return rc;
}

/* ---- sample ---- */

/* The next token from logits (V): argmax at temperature 0, else a draw from softmax(x / temp)
 * over the top_k largest (all when top_k is 0). */
static int32_t pick(const float *x, int V, double temp, int64_t top_k, uint64_t *rng, float *w) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (x[v] > x[best]) best = v;
    if (temp == 0) return best;
    float cut = -INFINITY;
    if (top_k > 0 && top_k < V) { /* the k-th largest value: selection by repeated maxima */
        memcpy(w, x, (size_t)V * sizeof *w);
        for (int64_t k = 0; k < top_k; k++) {
            int m = 0;
            for (int v = 1; v < V; v++)
                if (w[v] > w[m]) m = v;
            cut = w[m];
            w[m] = -INFINITY;
        }
    }
    double total = 0;
    for (int v = 0; v < V; v++) total += w[v] = x[v] >= cut ? (float)exp((x[v] - x[best]) / temp) : 0.0f;
    double u = rng_uniform(rng) * total, acc = 0;
    for (int v = 0; v < V; v++)
        if ((acc += w[v]) > u && w[v] > 0) return v;
    return best;
}

int rt_sample(const InferOpts *o) {
    Loaded L;
    int rc = load(o, &L);
    int32_t *ctx = NULL;
    float *w = NULL;
    if (rc) goto out;
    const Plan *p = &L.p;
    int64_t T = p->train.seq_len, V = p->vocab, n = 0, cap = o->tokens + 1;
    int bytes = V == 256;
    const char *pr = o->prompt ? o->prompt : "";
    cap += (int64_t)strlen(pr);
    ctx = xmalloc((size_t)cap * sizeof *ctx);
    if (bytes) {
        for (const char *c = pr; *c; c++) ctx[n++] = (unsigned char)*c;
    } else { /* token ids separated by spaces or commas */
        const char *c = pr;
        while (*c) {
            while (*c == ' ' || *c == ',') c++;
            if (!*c) break;
            char *end;
            errno = 0;
            long long id = strtoll(c, &end, 10);
            if (end == c || errno || id < 0 || id >= V) {
                fprintf(stderr, "fp8c: error: --prompt: '%s' is not a token id below the vocab size %lld (a model with vocab_size %lld "
                                "takes ids, e.g. --prompt '50256 464')\n", c, (long long)V, (long long)V);
                rc = EXIT_BAD_INPUT;
                goto out;
            }
            ctx[n++] = (int32_t)id;
            c = end;
        }
    }
    int64_t prompt_n = n;
    if (!n) ctx[n++] = bytes ? '\n' : 0; /* something to condition on */
    if (bytes) fwrite(pr, 1, strlen(pr), stdout);
    else
        for (int64_t i = 0; i < prompt_n; i++) printf("%s%d", i ? " " : "", ctx[i]);
    w = xmalloc((size_t)V * sizeof *w);
    uint64_t rng = (uint64_t)o->seed * 0x9E3779B97F4A7C15ull + 1;
    int32_t *tok = cpu_ptr(&L.b, p->tokens), *tgt = cpu_ptr(&L.b, p->targets);
    const float *logits = L.saved;
    int64_t M = p->train.micro_batch * T;
    for (int64_t g = 0; g < o->tokens; g++) {
        /* the last T tokens in row 0 (causal attention: later positions do not matter) */
        int64_t len = n < T ? n : T, start = n - len;
        for (int64_t i = 0; i < M; i++) tok[i] = 0, tgt[i] = -1;
        for (int64_t i = 0; i < len; i++) tok[i] = ctx[start + i];
        forward(&L);
        int32_t next = pick(logits + (len - 1) * V, (int)V, o->temperature, o->top_k, &rng, w);
        ctx[n++] = next;
        if (bytes) putchar(next);
        else printf("%s%d", n > 1 || prompt_n ? " " : "", next);
        fflush(stdout);
    }
    printf("\n");
    rc = EXIT_OK;
out:
    free(ctx);
    free(w);
    unload(&L);
    return rc;
}
