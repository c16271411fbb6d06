/* main.c: the fp8c command line. The pipeline is flat and visible here: load the model,
 * load the policy, resolve, then emit (compile) or print provenance (explain). This is the
 * only place that chooses an exit code: 0 success, 2 bad input, 1 internal or runtime failure. */
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: fp8c <command> [options]\n"
    "\n"
    "commands:\n"
    "  compile MODEL POLICY -o DIR   resolve the policy for the model and write DIR/plan.json and\n"
    "                                DIR/report.md (atomically: DIR is untouched on any error)\n"
    "  explain MODEL POLICY [PATH...] print each field of each module (or of PATH, which may be a\n"
    "                                pattern such as 'blocks.0.**'), its value and the chain of\n"
    "                                layers that set it, with file:line:col\n"
    "  recipes                       list the built-in recipes\n"
    "  version                       print the version\n"
    "\n"
    "options (compile, explain):\n"
    "  -o, --output DIR              output directory (compile)\n"
    "  --target T                    sm_89 | sm_90a | sm_100a | cpu (default sm_90a)\n"
    "  --strict                      patterns that match no module are errors, not warnings\n"
    "\n"
    "not implemented yet: run, train, build, inspect (the training runtime and the CUDA code\n"
    "generator are the next milestones; these commands exit with status 1 and say so).\n";

typedef struct {
    const char *cmd;
    const char *pos[64];
    int npos;
    const char *out;
    Target target;
    int strict;
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

static int parse_args(int argc, char **argv, Args *a) {
    static const char *const flags[] = {"--output", "--target", "--strict", "--help"};
    memset(a, 0, sizeof *a);
    a->cmd = argv[1];
    a->target = TGT_SM90A;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
        if (!strcmp(s, "-o") || !strcmp(s, "--output") || !strcmp(s, "--target")) {
            if (i + 1 >= argc) return bad_usage("%s needs a value", s);
            val = argv[++i];
        } else if (!strncmp(s, "--output=", 9) || !strncmp(s, "--target=", 9)) {
            val = s + 9;
        }
        if (val) {
            if (s[2] == 't') {
                if (parse_target(val, &a->target)) return EXIT_BAD_INPUT;
            } else {
                a->out = val;
            }
        } else if (!strcmp(s, "--strict")) {
            a->strict = 1;
        } else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            fputs(usage, stdout);
            exit(EXIT_OK);
        } else if (s[0] == '-' && s[1]) {
            char flag[64];
            snprintf(flag, sizeof flag, "%s", s);
            char *eq = strchr(flag, '=');
            if (eq) *eq = 0;
            const char *close = closest_word(flag, flags, 4);
            if (close) {
                fprintf(stderr, "fp8c: error: unknown option '%s'; did you mean '%s'?\n", s, close);
                return EXIT_BAD_INPUT;
            }
            return bad_usage("unknown option '%s'", s);
        } else {
            if (a->npos == 64) return bad_usage("too many arguments (%s)", s);
            a->pos[a->npos++] = s;
        }
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

static int cmd_compile(const Args *a) {
    if (a->npos != 2) return bad_usage("%s", "compile needs MODEL and POLICY: fp8c compile MODEL POLICY -o DIR");
    if (!a->out) return bad_usage("%s", "compile needs an output directory: -o DIR");
    Compilation c = {0};
    if (front_end(&c, a)) return finish(&c, EXIT_BAD_INPUT);
    Graph g;
    low_lower(&c.arena, &c.diag, &c.res, &g);
    int rc = emit_output_dir(&c.diag, &c.res, &g, a->out);
    free(g.t);
    free(g.s);
    if (rc) return finish(&c, EXIT_RUNTIME);
    fprintf(stderr, "fp8c: %s x %s (%s) -> %s: %d modules, %d low-bit, %s%s\n", c.model.name, c.policy.name,
            target_names[a->target], a->out, c.res.nmods, c.res.n_low_bit, "plan.json, report.md",
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

static int cmd_recipes(void) {
    for (int i = 0; i < recipe_count; i++) {
        const Recipe *r = recipe_find(recipe_names[i]);
        printf("%-12s %s\n", r->name, r->source);
    }
    return EXIT_OK;
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
    static const char *const planned[] = {"run", "train", "build", "inspect"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(cmd, planned[i])) {
            fprintf(stderr, "fp8c: '%s' is not implemented yet in fp8c %s: this version compiles and explains "
                            "precision plans only\n", cmd, FP8C_VERSION);
            return EXIT_RUNTIME;
        }
    Args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (!strcmp(cmd, "compile")) return cmd_compile(&a);
    if (!strcmp(cmd, "explain")) return cmd_explain(&a);
    if (!strcmp(cmd, "recipes")) return cmd_recipes();
    static const char *const cmds[] = {"compile", "explain", "recipes", "version", "help", "run", "train", "build", "inspect"};
    const char *close = closest_word(cmd, cmds, 9);
    if (close) {
        fprintf(stderr, "fp8c: error: unknown command '%s'; did you mean '%s'?\n", cmd, close);
        return EXIT_BAD_INPUT;
    }
    return bad_usage("unknown command '%s'", cmd);
}
