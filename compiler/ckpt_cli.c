/* ckpt_cli.c: the command line of the checkpoint commands: analyze (analyze.c), export, eval and
 * sample (runtime/hf.c, runtime/infer.c). They have their own flags, so main.c only dispatches
 * to here. Like main.c, this chooses exit codes: 0 ok, 2 bad input or arguments, 1 I/O. */
#include "fp8c.h"
#include "hf.h"
#include "runtime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *pos[64];
    int npos;
    int json;
    const char *policy, *out, *format, *dtype, *data, *plan, *prompt, *logits;
    int64_t tokens, top_k, seed;
    double temperature;
} CkArgs;

static int bad(const char *fmt, const char *arg) {
    fprintf(stderr, "fp8c: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run 'fp8c help' for usage)\n");
    return EXIT_BAD_INPUT;
}

/* the CLI's one strict parser (str_to_i64): overflow, signs, spaces and trailing text are refused */
static int whole(const char *flag, const char *v, int64_t lo, int64_t *out) {
    if (str_to_i64(v, lo, (int64_t)1 << 40, out)) {
        fprintf(stderr, "fp8c: error: %s needs a whole number from %lld to 2^40, got '%s'\n", flag, (long long)lo, v);
        return -1;
    }
    return 0;
}

/* flags[] are the value flags this command takes; plain flags: --json (analyze). */
static int parse(int argc, char **argv, const char *const *flags, int nflags, int json_ok, CkArgs *a) {
    memset(a, 0, sizeof *a);
    a->tokens = 256;
    a->temperature = 1.0;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-o")) s = "--output";
        if (s[0] != '-' || !s[1]) {
            if (a->npos == 64) return bad("too many arguments (%s)", s);
            a->pos[a->npos++] = s;
            continue;
        }
        if (json_ok && !strcmp(s, "--json")) {
            a->json = 1;
            continue;
        }
        char flag[64];
        snprintf(flag, sizeof flag, "%s", s);
        char *eq = strchr(flag, '=');
        const char *val = NULL;
        if (eq) *eq = 0, val = s + (eq - flag) + 1;
        int known = 0;
        for (int k = 0; k < nflags; k++) known |= !strcmp(flag, flags[k]);
        if (!known) {
            const char *close = closest_word(flag, flags, nflags);
            if (close) {
                fprintf(stderr, "fp8c: error: unknown option '%s' for %s; did you mean '%s'?\n", s, argv[1], close);
                return EXIT_BAD_INPUT;
            }
            fprintf(stderr, "fp8c: error: unknown option '%s' for %s\n(run 'fp8c help' for usage)\n", s, argv[1]);
            return EXIT_BAD_INPUT;
        }
        if (!val) {
            if (i + 1 >= argc) return bad("%s needs a value", flag);
            val = argv[++i];
        }
        if (!strcmp(flag, "--policy")) a->policy = val;
        else if (!strcmp(flag, "--output")) a->out = val;
        else if (!strcmp(flag, "--format")) a->format = val;
        else if (!strcmp(flag, "--dtype")) a->dtype = val;
        else if (!strcmp(flag, "--data")) a->data = val;
        else if (!strcmp(flag, "--plan")) a->plan = val;
        else if (!strcmp(flag, "--logits")) a->logits = val;
        else if (!strcmp(flag, "--prompt")) a->prompt = val;
        else if (!strcmp(flag, "--tokens") && whole(flag, val, 1, &a->tokens)) return EXIT_BAD_INPUT;
        else if (!strcmp(flag, "--top-k") && whole(flag, val, 0, &a->top_k)) return EXIT_BAD_INPUT;
        else if (!strcmp(flag, "--seed") && whole(flag, val, 0, &a->seed)) return EXIT_BAD_INPUT;
        else if (!strcmp(flag, "--temperature")) {
            if (str_to_f64(val, 0, 1e30, &a->temperature)) {
                fprintf(stderr, "fp8c: error: --temperature needs a number >= 0, got '%s'\n", val);
                return EXIT_BAD_INPUT;
            }
        }
    }
    return 0;
}

static int cmd_analyze(int argc, char **argv) {
    static const char *const flags[] = {"--policy"};
    CkArgs a;
    int rc = parse(argc, argv, flags, 1, 1, &a);
    if (rc) return rc;
    if (!a.npos) return bad("%s", "analyze needs safetensors files or directories: fp8c analyze FILE|DIR... [--json] [--policy OUT.yaml]");
    return analyze_main(a.pos, a.npos, a.json, a.policy);
}

static int cmd_export(int argc, char **argv) {
    static const char *const flags[] = {"--output", "--format", "--dtype", "--plan"};
    CkArgs a;
    int rc = parse(argc, argv, flags, 4, 0, &a);
    if (rc) return rc;
    if (a.npos != 1 || !a.out) return bad("%s", "export needs a checkpoint and -o DIR: fp8c export CKPT -o DIR [--format hf|fp8] [--dtype bf16|fp32]");
    const char *format = a.format ? a.format : "hf";
    if (strcmp(format, "hf") && strcmp(format, "fp8")) return bad("--format takes hf or fp8, not '%s'", format);
    if (a.dtype && strcmp(a.dtype, "bf16") && strcmp(a.dtype, "fp32")) return bad("--dtype takes bf16 or fp32, not '%s'", a.dtype);
    if (a.dtype && !strcmp(format, "fp8")) return bad("%s", "--format fp8 stores FP8 weights and BF16 elsewhere; --dtype applies to --format hf");
    char dir[1100];
    if (!a.plan) { /* fp8c train keeps plan.json next to its checkpoints */
        const char *slash = strrchr(a.pos[0], '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - a.pos[0]) : 1, slash ? a.pos[0] : ".");
    }
    HfExport o = {a.pos[0], a.plan ? a.plan : dir, a.out, format, a.dtype};
    return hf_export(&o);
}

static int cmd_infer(int argc, char **argv, int eval) {
    static const char *const eflags[] = {"--data", "--plan", "--logits"};
    static const char *const sflags[] = {"--plan", "--prompt", "--tokens", "--temperature", "--top-k", "--seed"};
    CkArgs a;
    int rc = eval ? parse(argc, argv, eflags, 3, 0, &a) : parse(argc, argv, sflags, 6, 0, &a);
    if (rc) return rc;
    if (a.npos != 1) return bad("%s", eval ? "eval needs one checkpoint: fp8c eval CKPT --data FILE [--plan DIR]"
                                           : "sample needs one checkpoint: fp8c sample CKPT [--prompt TEXT] [--tokens N] ...");
    if (eval && !a.data) return bad("%s", "eval needs --data FILE");
    InferOpts o = {a.pos[0], a.plan, a.data, a.prompt, a.logits, a.tokens, a.top_k, a.seed, a.temperature};
    return eval ? rt_eval(&o) : rt_sample(&o);
}

int ckpt_cli_main(int argc, char **argv) {
    const char *cmd = argv[1];
    if (!strcmp(cmd, "analyze")) return cmd_analyze(argc, argv);
    if (!strcmp(cmd, "export")) return cmd_export(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_infer(argc, argv, 1);
    if (!strcmp(cmd, "sample")) return cmd_infer(argc, argv, 0);
    return bad("unknown command '%s'", cmd);
}
