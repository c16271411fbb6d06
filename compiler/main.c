/* main.c: the fp8c command line. The pipeline is flat and visible here: load the model,
 * load the policy, resolve, then emit (compile) or print provenance (explain). This is the
 * only place that chooses an exit code: 0 success, 2 bad input, 1 internal or runtime failure. */
#include "fp8c.h"
#include "runtime.h"
#include "io.h"
#include "dist.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: fp8c <command> [options]\n"
    "\n"
    "commands:\n"
    "  compile MODEL POLICY -o DIR   resolve the policy for the model and write DIR/plan.json and\n"
    "                                DIR/report.md (atomically: DIR is untouched on any error)\n"
    "  explain MODEL POLICY [PATH...] print each field of each module (or of PATH, which may be a\n"
    "                                pattern such as 'blocks.0.**'), its value and the chain of\n"
    "                                layers that set it, with file:line:col\n"
    "  train MODEL POLICY [-o DIR]    compile (for --target cpu unless given) and train\n"
    "  run DIR                       train with the plan in DIR\n"
    "  build DIR [--arch A]          compile every kernel of DIR with NVRTC into DIR/cubin/ (A: the\n"
    "                                plan's target unless given, e.g. sm_90a or sm_89)\n"
    "  inspect DIR [KERNEL]          the plan's kernels (uses, registers, smem, spills, audit), or one\n"
    "                                kernel's source, PTX, ptxas report and instruction audit\n"
    "  recipes                       list the built-in recipes\n"
    "  version                       print the version\n"
    "\n"
    "options (compile, explain):\n"
    "  -o, --output DIR              output directory (compile)\n"
    "  --target T                    sm_89 | sm_90a | sm_100a | cpu (default sm_90a)\n"
    "  --strict                      patterns that match no module are errors, not warnings\n"
    "  --gemm cublaslt|generated     how the GPU runs FP8 GEMMs (default cublaslt; the generated\n"
    "                                mma.sync kernel is always emitted for comparison and fallback)\n"
    "  --ranks N                     (compile) report.md adds what each of N data-parallel ranks holds,\n"
    "                                replicated and with --zero 1 (N must divide train.grad_accum)\n"
    "  --no-fuse                     (compile, train) no fused kernels: the plan runs the lowered\n"
    "                                program one step per launch, for debugging a fusion\n"
    "  --split auto|N                (compile, train) run each micro-batch as N chunks (gradient\n"
    "                                accumulation: the same tokens and gradient); auto, the default:\n"
    "                                on --target cpu, chunks of at most 2048 tokens where that changes\n"
    "                                nothing the policy computes (no per-tensor activation scaling),\n"
    "                                else 1; --split 1 keeps one pass\n"
    "\n"
    "\n"
    "options (train, run):\n"
    "  --steps N                     total optimizer steps (also when resuming; default: the model's)\n"
    "  --data FILE                   text read as bytes (vocab 256) or an llm.c uint16 token shard;\n"
    "                                default: a deterministic synthetic corpus\n"
    "  --device cpu|cuda|auto        default auto: the CPU here (the CUDA backend is not implemented yet)\n"
    "  --log FILE                    one JSON object per step: step, loss, lr, ..., val_loss on eval steps\n"
    "  --checkpoint-dir DIR          write DIR/step_<N>.safetensors every --checkpoint-every N steps and at the end\n"
    "  --resume FILE                 continue exactly from a checkpoint of the same plan\n"
    "  --progress-every N, --eval-batches N\n"
    "  --check                       (run) validate the plan and exit without training\n"
    "  --zero 0|1                    under mpirun: 1 shards FP32 master weights and Adam moments over the\n"
    "                                ranks (ZeRO-1); default 0 (replicated)\n"
    "\n"
    "environment: FP8C_CACHE_DIR (kernel cache, default ~/.cache/fp8c), FP8C_DEBUG=1|2|3 (JIT timings,\n"
    "  + NVRTC logs and failing sources, + PTX), FP8C_PROFILE=1 (CPU time per op kind)\n";

typedef struct {
    const char *cmd;
    const char *pos[64];
    int npos;
    const char *out;
    Target target;
    int target_given;
    int strict;
    int no_fuse;          /* --no-fuse: the unfused schedule */
    const char *gemm;     /* --gemm cublaslt|generated */
    const char *arch;     /* build --arch */
    int64_t ranks;        /* compile --ranks N: report.md's per-rank memory table */
    int64_t split;        /* --split: SPLIT_AUTO or a chunk count */
    TrainOpts train;
} Args;

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "fp8c: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run 'fp8c help' for usage)\n");
    return EXIT_BAD_INPUT;
}

static int parse_target(const char *s, Target *t) {
    for (int i = 0; i < TGT_COUNT; i++)
        if (!strcmp(s, target_names[i])) return *t = (Target)i, 0;
    const char *close = closest_word(s, target_names, TGT_COUNT);
    fprintf(stderr, "fp8c: error: unknown target '%s'%s%s%s (one of: sm_89, sm_90a, sm_100a, cpu)\n", s,
            close ? "; did you mean '" : "", close ? close : "", close ? "'?" : "");
    return -1;
}

/* Counts on the command line: whole numbers in [lo, 2^40] (the plan's own limit on steps);
 * overflow, signs, spaces and trailing junk are refused, never clamped (util.c). */
static int parse_count(const char *flag, const char *v, int64_t lo, int64_t *out) {
    const int64_t hi = (int64_t)1 << 40;
    if (str_to_i64(v, lo, hi, out)) {
        fprintf(stderr, "fp8c: error: %s needs a whole number from %lld to %lld, got '%s'\n", flag, (long long)lo, (long long)hi, v);
        return -1;
    }
    return 0;
}

static const char *const value_flags[] = {"--output", "--target", "--steps", "--data", "--device", "--log",
                                          "--checkpoint-dir", "--checkpoint-every", "--resume", "--progress-every",
                                          "--eval-batches", "--debug-inject-nan", "--gemm", "--arch", "--init-from", "--zero",
                                          "--ranks", "--split"};
static const char *const plain_flags[] = {"--strict", "--help", "--check", "--no-fuse"};
#define NVF ((int)(sizeof value_flags / sizeof value_flags[0]))

static int set_flag(Args *a, const char *flag, const char *val) {
    TrainOpts *t = &a->train;
    if (!strcmp(flag, "--output")) a->out = val;
    else if (!strcmp(flag, "--target")) { a->target_given = 1; return parse_target(val, &a->target); }
    else if (!strcmp(flag, "--steps")) return parse_count(flag, val, 1, &t->steps);
    else if (!strcmp(flag, "--data")) t->data = val;
    else if (!strcmp(flag, "--arch")) a->arch = val;
    else if (!strcmp(flag, "--gemm")) {
        if (strcmp(val, "cublaslt") && strcmp(val, "generated")) {
            fprintf(stderr, "fp8c: error: --gemm takes cublaslt or generated, not '%s'\n", val);
            return -1;
        }
        a->gemm = val;
    }
    else if (!strcmp(flag, "--log")) t->log = val;
    else if (!strcmp(flag, "--checkpoint-dir")) t->ckpt_dir = val;
    else if (!strcmp(flag, "--checkpoint-every")) return parse_count(flag, val, 1, &t->ckpt_every);
    else if (!strcmp(flag, "--resume")) t->resume = val;
    else if (!strcmp(flag, "--init-from")) t->init_from = val;
    else if (!strcmp(flag, "--progress-every")) return parse_count(flag, val, 1, &t->progress_every);
    else if (!strcmp(flag, "--eval-batches")) return parse_count(flag, val, 1, &t->eval_batches);
    else if (!strcmp(flag, "--debug-inject-nan")) return parse_count(flag, val, 1, &t->inject_nan_step);
    else if (!strcmp(flag, "--ranks")) return parse_count(flag, val, 1, &a->ranks);
    else if (!strcmp(flag, "--split")) {
        if (!strcmp(val, "auto")) a->split = SPLIT_AUTO;
        else if (str_to_i64(val, 1, 1 << 16, &a->split)) {
            fprintf(stderr, "fp8c: error: --split takes auto or a chunk count from 1 to 65536, not '%s'\n", val);
            return -1;
        }
    }
    else if (!strcmp(flag, "--zero")) {
        if (strcmp(val, "0") && strcmp(val, "1")) {
            fprintf(stderr, "fp8c: error: --zero takes 0 (replicated optimizer state) or 1 (sharded over MPI ranks), not '%s'\n", val);
            return -1;
        }
        t->zero = val[0] == '1';
    }
    else if (!strcmp(flag, "--device")) {
        static const char *const devs[] = {"auto", "cpu", "cuda"};
        for (int i = 0; i < 3; i++)
            if (!strcmp(val, devs[i])) return t->device = (DeviceKind)i, 0;
        fprintf(stderr, "fp8c: error: --device takes cpu, cuda or auto, not '%s'\n", val);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->cmd = argv[1];
    a->target = TGT_SM90A;
    a->split = SPLIT_AUTO;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-o")) s = "--output";
        if (!strcmp(s, "--strict")) {
            a->strict = 1;
            continue;
        }
        if (!strcmp(s, "--check")) {
            a->train.check = 1;
            continue;
        }
        if (!strcmp(s, "--no-fuse")) {
            a->no_fuse = 1;
            continue;
        }
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            fputs(usage, stdout);
            exit(EXIT_OK);
        }
        if (s[0] != '-' || !s[1]) {
            if (a->npos == 64) return bad_usage("too many arguments (%s)", s);
            a->pos[a->npos++] = s;
            continue;
        }
        char flag[64];
        snprintf(flag, sizeof flag, "%s", s);
        char *eq = strchr(flag, '=');
        const char *val = NULL;
        if (eq) {
            *eq = 0;
            val = s + (eq - flag) + 1;
        }
        int known = 0;
        for (int k = 0; k < NVF; k++) known |= !strcmp(flag, value_flags[k]);
        if (!known) {
            const char *all[32];
            int n = 0;
            for (int k = 0; k < NVF; k++) all[n++] = value_flags[k];
            for (int k = 0; k < 3; k++) all[n++] = plain_flags[k];
            const char *close = closest_word(flag, all, n);
            if (close) {
                fprintf(stderr, "fp8c: error: unknown option '%s'; did you mean '%s'?\n", s, close);
                return EXIT_BAD_INPUT;
            }
            return bad_usage("unknown option '%s'", s);
        }
        if (!val) {
            if (i + 1 >= argc) return bad_usage("%s needs a value", flag);
            val = argv[++i];
        }
        if (set_flag(a, flag, val)) return EXIT_BAD_INPUT;
    }
    return 0;
}

typedef struct {
    Arena arena;
    Diag diag;
    Model model;
    Policy policy;
    Resolution res;
} Compilation;

/* The front half of the pipeline, shared by compile and explain. */
static int front_end(Compilation *c, const Args *a) {
    diag_init(&c->diag, stderr);
    c->diag.strict = a->strict;
    YamlNode *mroot = yml_load_file(&c->arena, &c->diag, a->pos[0]);
    if (mroot && hf_is_config(mroot)) mroot = hf_config_model(&c->arena, &c->diag, mroot); /* a Hugging Face config.json */
    if (!mroot || model_load(&c->arena, &c->diag, mroot, &c->model)) return -1;
    YamlNode *proot = yml_load_file(&c->arena, &c->diag, a->pos[1]);
    if (!proot || pol_load(&c->arena, &c->diag, proot, a->pos[1], &c->policy)) return -1;
    return res_resolve(&c->arena, &c->diag, &c->model, &c->policy, a->target, &c->res);
}

static int finish(Compilation *c, int rc) {
    if (c->diag.errors)
        fprintf(stderr, "fp8c: %d error%s%s\n", c->diag.errors, c->diag.errors > 1 ? "s" : "",
                c->diag.warnings ? ", with warnings" : "");
    arena_free(&c->arena);
    return rc;
}

/* Run the micro-batch as the chunks res_split picks: the model's train section then describes one
 * chunk (micro_batch) and the chunks of a step (grad_accum), which is what the lowering, the plan
 * and the runtime read; report.md gets res_split's sentence. */
static int apply_split(Compilation *c, const Args *a) {
    int64_t s;
    char why[512];
    if (res_split(&c->res, a->split, &s, why, sizeof why)) {
        fprintf(stderr, "fp8c: error: %s\n", why);
        return -1;
    }
    TrainCfg *t = &c->model.train;
    t->micro_batch /= s;
    t->grad_accum *= s;
    t->split = s;
    t->split_why = arena_printf(&c->arena, "%s", why);
    return 0;
}

/* lower -> fuse/schedule -> memory (verified) -> codegen -> emit into dir. EXIT_OK,
 * EXIT_BAD_INPUT (a kernel the target cannot have) or EXIT_RUNTIME (the directory could not be
 * written, or a verifier found a compiler bug). */
static int lower_and_emit(Compilation *c, const Args *a, const char *dir, int *nkernels) {
    Graph g;
    CgPlan cp = {0};
    low_lower(&c->arena, &c->diag, &c->res, &g);
    sch_build(&c->arena, &g, !a->no_fuse);
    g.ranks = (int)a->ranks;
    mem_plan(&g);
    int rc = EXIT_OK;
    char err[1024];
    int64_t n = 0;
    if (sch_verify(&g, err, sizeof err) || mem_verify(&g, err, sizeof err, &n)) {
        fprintf(stderr, "fp8c: internal error: the plan's schedule or memory failed verification (%lld problems): %s\n", (long long)n, err);
        rc = EXIT_RUNTIME;
    } else if (cg_codegen(&c->arena, &c->diag, &c->res, &g, a->gemm, &cp)) rc = EXIT_BAD_INPUT;
    else if ((rc = emit_output_dir(&c->diag, &c->res, &g, &cp, dir))) rc = rc == -2 ? EXIT_BAD_INPUT : EXIT_RUNTIME;
    *nkernels = cp.nk;
    cg_free(&cp);
    free(g.t);
    free(g.s);
    return rc;
}

static int cmd_compile(const Args *a) {
    if (a->npos != 2) return bad_usage("%s", "compile needs MODEL and POLICY: fp8c compile MODEL POLICY -o DIR");
    if (!a->out) return bad_usage("%s", "compile needs an output directory: -o DIR");
    if (a->ranks > 4096) return bad_usage("%s", "--ranks: at most 4096");
    Compilation c = {0};
    if (front_end(&c, a)) return finish(&c, EXIT_BAD_INPUT);
    if (a->ranks > 1 && c.model.train.grad_accum % a->ranks) {
        fprintf(stderr, "fp8c: error: --ranks %lld: the global batch (train.grad_accum = %lld micro-batches) does not divide over "
                "%lld ranks\n", (long long)a->ranks, (long long)c.model.train.grad_accum, (long long)a->ranks);
        return finish(&c, EXIT_BAD_INPUT);
    }
    if (apply_split(&c, a)) return finish(&c, EXIT_BAD_INPUT);
    int nk = 0;
    int rc = lower_and_emit(&c, a, a->out, &nk);
    if (rc) return finish(&c, rc);
    char chunks[96] = "";
    if (c.model.train.split > 1)
        snprintf(chunks, sizeof chunks, ", micro-batch in %lld chunks of %lld", (long long)c.model.train.split,
                 (long long)c.model.train.micro_batch);
    fprintf(stderr, "fp8c: %s x %s (%s) -> %s: %d modules, %d low-bit, plan.json, report.md, %d kernels%s%s\n", c.model.name,
            c.policy.name, target_names[a->target], a->out, c.res.nmods, c.res.n_low_bit, nk, chunks,
            c.diag.warnings ? " (with warnings)" : "");
    return finish(&c, EXIT_OK);
}

static int cmd_explain(const Args *a) {
    if (a->npos < 2) return bad_usage("%s", "explain needs MODEL and POLICY: fp8c explain MODEL POLICY [PATH...]");
    Compilation c = {0};
    if (front_end(&c, a)) return finish(&c, EXIT_BAD_INPUT);
    int rc = explain_print(stdout, &c.diag, &c.res, a->pos + 2, a->npos - 2);
    return finish(&c, rc ? EXIT_BAD_INPUT : EXIT_OK);
}

/* Compile into DIR (or a temporary directory), then train with the plan written there. */
static int cmd_train(Args *a) {
    if (a->npos != 2) return bad_usage("%s", "train needs MODEL and POLICY: fp8c train MODEL POLICY [options]");
    if (!a->target_given) a->target = TGT_CPU; /* the CPU backend emulates every format */
    Compilation c = {0};
    if (front_end(&c, a) || apply_split(&c, a)) return finish(&c, EXIT_BAD_INPUT);
    char tmp[64];
    const char *dir = dist_env_rank() ? NULL : a->out; /* under mpirun, rank 0 alone writes -o DIR */
    if (!dir) {
        /* /tmp/fp8c-plan-PID.XXXXXX; plan directories (and their emit temporaries) of killed runs go */
        io_sweep_stale("/tmp", "fp8c-plan-");
        io_sweep_stale("/tmp", "fp8c-plan-*.*.tmp.");
        io_tmp_name(tmp, sizeof tmp, "/tmp/fp8c-plan-");
        if (!mkdtemp(tmp)) {
            fprintf(stderr, "fp8c: error: cannot create a temporary plan directory\n");
            return finish(&c, EXIT_RUNTIME);
        }
        rmdir(tmp);
        dir = tmp;
    }
    int nk = 0;
    int rc = lower_and_emit(&c, a, dir, &nk);
    finish(&c, EXIT_OK);
    if (rc) return rc;
    rc = rt_train(&a->train, dir);
    if (dir != a->out) {
        char path[256];
        snprintf(path, sizeof path, "%s/plan.json", dir);
        remove(path);
        snprintf(path, sizeof path, "%s/report.md", dir);
        remove(path);
        fs_remove_tree(dir);
    }
    return rc;
}

static int cmd_recipes(void) {
    for (int i = 0; i < recipe_count; i++) {
        const Recipe *r = recipe_find(recipe_names[i]);
        printf("%-12s %s\n", r->name, r->source);
    }
    return EXIT_OK;
}

/* OpenMP threads that spin at barriers collapse when another process shares the cores (a
 * barrier can wait out a whole scheduler slice): measured on a busy 2-core machine, the tiny
 * model's step took 2.4 s with libgomp's default spinning (300,000 spins) and 0.47 s with
 * passive waiting. Passive waiting in turn costs a futex wake-up per parallel region on an
 * idle machine (tiny bf16: 128 ms against 106 spinning). A short spin, GOMP_SPINCOUNT=1000,
 * then sleep, keeps most of both (2026-12-06, 2-core Xeon: 113 ms idle; 185 ms against 174
 * passive with one busy loop beside it; 182-292 against 332-341 passive with two).
 * libgomp reads its environment once, when it is loaded, before main runs, so a setenv here
 * takes effect only through a re-execution. A policy or spin count the user set is kept. */
static void prefer_short_spin_omp(char **argv) {
#ifdef __linux__
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("GOMP_SPINCOUNT", "1000", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then run as we are */
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_BAD_INPUT;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("fp8c %s (plan format %d)\n", FP8C_VERSION, FP8C_PLAN_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "train") || !strcmp(cmd, "run") || !strcmp(cmd, "eval") || !strcmp(cmd, "sample")) prefer_short_spin_omp(argv);
    static const char *const ckpt_cmds[] = {"analyze", "export", "eval", "sample"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(cmd, ckpt_cmds[i])) return ckpt_cli_main(argc, argv);
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (!strcmp(cmd, "compile")) return cmd_compile(&a);
    if (!strcmp(cmd, "explain")) return cmd_explain(&a);
    if (!strcmp(cmd, "recipes")) return cmd_recipes();
    if (!strcmp(cmd, "train")) return cmd_train(&a);
    if (!strcmp(cmd, "build")) {
        if (a.npos != 1) return bad_usage("%s", "build needs the plan directory: fp8c build DIR [--arch sm_90a]");
        return rt_build(a.pos[0], a.arch);
    }
    if (!strcmp(cmd, "inspect")) {
        if (a.npos < 1 || a.npos > 2) return bad_usage("%s", "inspect needs the plan directory: fp8c inspect DIR [KERNEL] [--arch A]");
        return rt_inspect(a.pos[0], a.npos == 2 ? a.pos[1] : NULL, a.arch);
    }
    if (!strcmp(cmd, "run")) {
        if (a.npos != 1) return bad_usage("%s", "run needs the plan directory: fp8c run DIR");
        return rt_train(&a.train, a.pos[0]);
    }
    static const char *const cmds[] = {"compile", "explain", "recipes", "version", "help", "run", "train", "build", "inspect",
                                       "analyze", "export", "eval", "sample"};
    const char *close = closest_word(cmd, cmds, 13);
    if (close) {
        fprintf(stderr, "fp8c: error: unknown command '%s'; did you mean '%s'?\n", cmd, close);
        return EXIT_BAD_INPUT;
    }
    return bad_usage("unknown command '%s'", cmd);
}
