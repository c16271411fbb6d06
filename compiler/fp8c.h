/* fp8c.h: the compiler's one shared header, a section per file.
 *
 * The pipeline (main.c) is flat: load YAML (yaml.c) -> build the model's module tree
 * (model.c) -> read the policy (policy.c, recipes.c) -> resolve every module's precision
 * with provenance (resolve.c) -> write plan.json and report.md atomically (emit.c), or print
 * the provenance chains (explain.c). Passes return 0 or an error code and leave messages on
 * the Diag context; only main() decides to exit.
 */
#ifndef FP8C_H
#define FP8C_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FP8C_VERSION "0.1.0"
#define FP8C_PLAN_VERSION 1

/* Exit codes of the CLI. */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_BAD_INPUT = 2 };

/* Internal invariant: names file and line, then aborts. Never used for bad input. */
#define FP8C_ASSERT(c)                                                                   \
    do {                                                                                 \
        if (!(c)) fp8c_assert_fail(#c, __FILE__, __LINE__);                              \
    } while (0)
_Noreturn void fp8c_assert_fail(const char *cond, const char *file, int line);

/* ---------------------------------------------------------------- util.c */

/* One arena per compilation: every IR node, string and table lives here, freed at once. */
typedef struct ArenaChunk ArenaChunk;
typedef struct {
    ArenaChunk *head;
} Arena;

void *arena_alloc(Arena *a, size_t n); /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);
void *xmalloc(size_t n);            /* exits with code 1 on allocation failure */
void *xrealloc(void *p, size_t n);

/* Growable byte buffer used to build output files in memory before they are written. */
typedef struct {
    char *data;
    size_t len, cap;
} Buf;
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_puts(Buf *b, const char *s);
void buf_free(Buf *b);

int edit_distance(const char *a, const char *b); /* Levenshtein, capped for long strings */
/* The candidate closest to `word` if it is close enough to be a plausible typo, else NULL. */
const char *closest_word(const char *word, const char *const *cands, int n);
const char *fmt_count(char *out, int64_t n); /* 124439808 -> "124,439,808"; out >= 32 bytes */
const char *fmt_bytes(char *out, double bytes); /* "1.23 GB" style; out >= 32 bytes */

/* ---------------------------------------------------------------- diag.c */

/* A source position: file index in the Diag's table, 1-based line and column. file < 0: none. */
typedef struct {
    int file, line, col;
} Mark;
#define NO_MARK ((Mark){-1, 0, 0})

#define DIAG_MAX_FILES 8
typedef struct {
    const char *name;
    const char *text; /* whole file, NUL-terminated; used to print the offending line */
    size_t len;
} SrcFile;

typedef struct {
    SrcFile files[DIAG_MAX_FILES];
    int nfiles;
    int errors, warnings;
    int strict;      /* warnings that --strict promotes become errors */
    int max_errors;  /* stop printing after this many (0: 20) */
    FILE *out;       /* where messages go; main sets stderr, tests a temporary file */
} Diag;

void diag_init(Diag *d, FILE *out);
int diag_add_file(Diag *d, const char *name, const char *text, size_t len);
/* "file:line:col: error: msg", the source line, a caret, and "hint: ..." when hint != NULL. */
void diag_error(Diag *d, Mark m, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A warning, or an error under --strict when strict_promotes is set. */
void diag_warn(Diag *d, Mark m, int strict_promotes, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void diag_note(Diag *d, Mark m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An error about no file position (a bad flag, an I/O failure). */
void diag_plain(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "file:line" (or "file:line:col" when with_col) for plan provenance; "" for NO_MARK. */
const char *diag_loc(const Diag *d, Mark m, int with_col, char *out, size_t n);

/* ---------------------------------------------------------------- yaml.c */

typedef enum { YN_SCALAR, YN_SEQ, YN_MAP } YamlKind;

typedef struct YamlNode YamlNode;
struct YamlNode {
    YamlKind kind;
    Mark mark;       /* where the node starts */
    const char *str; /* scalar text */
    int quoted;      /* scalar was quoted: never a number or bool */
    int n;           /* seq items or map pairs */
    YamlNode **items; /* seq: n items; map: 2n, key then value */
};

#define YAML_MAX_BYTES (4u << 20) /* a model or policy file is tiny; refuse anything huge */
#define YAML_MAX_DEPTH 32

/* Parse one YAML document into a tree in the arena. Rejects duplicate keys, non-scalar keys,
 * aliases to unfinished anchors, more than one document, tags, and depth > YAML_MAX_DEPTH.
 * Returns the root or NULL after reporting an error on d. */
YamlNode *yml_parse(Arena *a, Diag *d, int file, const char *text, size_t len);
/* Read a file and parse it; the file is registered with d. */
YamlNode *yml_load_file(Arena *a, Diag *d, const char *path);
YamlNode *yml_get(const YamlNode *map, const char *key); /* NULL if absent or not a map */
const char *yml_kind_name(const YamlNode *n);

/* Typed scalar readers: on a type error they report on d and return -1; 0 on success. */
int yml_int(Diag *d, const YamlNode *n, int64_t lo, int64_t hi, int64_t *out);
int yml_float(Diag *d, const YamlNode *n, double lo, double hi, double *out);
int yml_bool(Diag *d, const YamlNode *n, int *out);
int yml_str(Diag *d, const YamlNode *n, const char **out);
/* An enum given by its names; an unknown value gets "did you mean" and the list. */
int yml_enum(Diag *d, const YamlNode *n, const char *const *names, int nnames, int *out);
/* Check that every key of map is one of keys[]; unknown keys are errors with a hint. */
int yml_check_keys(Diag *d, const YamlNode *map, const char *what, const char *const *keys,
                   int nkeys);
int yml_expect(Diag *d, const YamlNode *n, YamlKind kind, const char *what);

/* ---------------------------------------------------------------- model.c */

typedef enum { ACT_SWIGLU, ACT_GELU } Activation;
typedef enum { NORM_RMSNORM, NORM_LAYERNORM } NormKind;
typedef enum { POS_ROPE, POS_LEARNED } Positions;

typedef enum {
    MK_EMBEDDING,
    MK_POS_EMBEDDING,
    MK_NORM,
    MK_LINEAR,
    MK_ATTENTION,
    MK_LOSS,
} ModKind;

typedef struct {
    const char *name;  /* "weight", "bias" */
    int64_t shape[2];  /* rank 1 tensors have shape[1] == 0 */
} ParamTensor;

typedef struct {
    const char *path;      /* "blocks.3.ffn.up_proj" */
    ModKind kind;
    int block;             /* block index, -1 outside blocks */
    int nparams;
    ParamTensor params[2];
    int64_t param_count;   /* 0 for lm_head when tied: it reads embed.weight */
    int64_t n_out, k_in;   /* linear: Y (M x n_out) = X (M x k_in) W^T, W: n_out x k_in */
    int tied;              /* lm_head shares embed's weight */
} Module;

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} OptimizerCfg;

typedef enum { DECAY_COSINE, DECAY_LINEAR, DECAY_CONSTANT } DecayKind;

typedef struct {
    int64_t micro_batch, seq_len, grad_accum, steps, warmup, eval_every, seed;
    OptimizerCfg opt;
    DecayKind decay;
    double min_lr_ratio, grad_clip;
} TrainCfg;

typedef struct {
    const char *name;
    int64_t vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff, max_seq_len;
    Activation activation;
    NormKind norm;
    Positions positions;
    double norm_eps, rope_theta;
    int bias, tie_embeddings, attention_gate;
    TrainCfg train;
    Mark train_mark;
    Module *mods;
    int nmods;
    int64_t total_params;
} Model;

extern const char *const model_activation_names[];
extern const char *const model_norm_names[];
extern const char *const model_positions_names[];
extern const char *const model_decay_names[];

/* Load, validate and expand a model.yaml. Returns 0 or -1 (errors are on d). */
int model_load(Arena *a, Diag *d, const YamlNode *root, Model *m);
const char *model_kind_name(const Model *m, ModKind k);
int model_find(const Model *m, const char *path); /* index or -1 */
int64_t model_tokens_per_step(const Model *m);    /* micro_batch * seq_len: the GEMM M */

/* ---------------------------------------------------------------- policy.c / recipes.c */

/* Every dtype or format name fp8c knows; each field accepts a subset. */
typedef enum {
    DT_NONE,
    DT_FP32,
    DT_BF16,
    DT_FP16,
    DT_FP8,  /* compute only: low-bit GEMM with 8-bit operands */
    DT_FP4,  /* compute only: low-bit GEMM with 4-bit operands */
    DT_E4M3,
    DT_E5M2,
    DT_E2M1,
    DT_E8M0,
    DT_COUNT
} Dtype;
extern const char *const dtype_names[DT_COUNT];
int dtype_bits(Dtype t);

typedef enum { SC_DELAYED, SC_CURRENT, SC_STATIC } ScalingKind;
typedef enum { ALGO_MAX, ALGO_MOST_RECENT } AmaxAlgo;
typedef enum { LS_NONE, LS_STATIC, LS_DYNAMIC } LossScalingMode;
extern const char *const scaling_names[];
extern const char *const algo_names[];
extern const char *const loss_scaling_names[];

/* GEMM operands of a low-bit linear, forward orientation: x (M x K), w (N x K), dy (M x N). */
typedef enum { OP_X, OP_W, OP_DY, OP_COUNT } Operand;
extern const char *const operand_names[OP_COUNT];

/* Per-operand quantization subfields. */
typedef enum {
    QF_FORMAT,
    QF_SCALING,
    QF_TILE,
    QF_SCALE_FORMAT,
    QF_HISTORY,
    QF_ALGO,
    QF_MARGIN,
    QF_INTERVAL,
    QF_SCALE, /* the scale of static scaling */
    QF_COUNT
} QField;
extern const char *const qfield_names[QF_COUNT];

/* Per-module fields, in the order plans and explain print them. */
enum { F_PARAMS, F_COMPUTE, F_Q0, NFIELDS = F_Q0 + OP_COUNT * QF_COUNT };
#define F_Q(op, qf) (F_Q0 + (op) * QF_COUNT + (qf))
const char *field_name(int f, char *buf, size_t n); /* "params", "x.format", ... */

/* One field's value. Enums and ints use i; tiles use (i, j) with (0, 0) = per tensor. */
typedef struct {
    int64_t i, j;
    double d;
} Val;

/* A set of per-module field values, each with the mark of the YAML node that gave it. */
typedef struct {
    uint64_t set; /* bit f: field f is given */
    Val v[NFIELDS];
    Mark m[NFIELDS];
} FieldSet;

/* Run-level (not per-module) fields. */
typedef enum {
    G_MASTER_WEIGHTS,
    G_OPTIMIZER_STATE,
    G_GRAD_ACCUM,
    G_LOSS,
    G_LS_MODE,
    G_LS_SCALE,  /* static */
    G_LS_INIT,   /* dynamic */
    G_LS_GROWTH,
    G_LS_BACKOFF,
    G_LS_INTERVAL,
    G_COUNT
} GlobalField;
extern const char *const global_names[G_COUNT];

typedef struct {
    uint32_t set;
    Val v[G_COUNT];
    Mark m[G_COUNT];
} GlobalSet;

typedef struct {
    const char *name;
    const char *source; /* where the recipe's choices come from */
    GlobalSet globals;  /* complete */
    Dtype params, compute;
    const char *const *low_bit; /* NULL-terminated globs of modules that run low-bit */
    FieldSet quant;             /* x/w/dy subfields, complete */
} Recipe;

const Recipe *recipe_find(const char *name);
extern const char *const recipe_names[];
extern const int recipe_count;

/* A rule (glob, or exact path without wildcards) or an exact override and what it sets. */
typedef struct {
    const char *pattern;
    Mark mark;     /* the match: scalar, or the override key */
    int is_glob;
    FieldSet fs;
    int nmatched;
} Selector;

typedef struct {
    const char *file;
    const char *name;
    const Recipe *recipe;
    Mark recipe_mark;
    GlobalSet globals;   /* the file's run-level defaults */
    FieldSet defaults;   /* params, compute */
    int has_low_bit;
    Mark low_bit_mark;
    Selector *low_bit_mods; /* the low_bit.modules patterns (all share lb_fs) */
    int n_low_bit_mods;
    int low_bit_mods_from_recipe;
    FieldSet low_bit_fs;   /* x/w/dy subfields */
    Selector *rules;
    int nrules;
    Selector *overrides;
    int noverrides;
} Policy;

int pol_load(Arena *a, Diag *d, const YamlNode *root, const char *file, Policy *p);

/* ---------------------------------------------------------------- resolve.c */

typedef enum { L_RECIPE, L_DEFAULTS, L_LOW_BIT, L_RULE, L_OVERRIDE, L_COUNT } Layer;
extern const char *const layer_names[L_COUNT];

typedef enum { TGT_SM89, TGT_SM90A, TGT_SM100A, TGT_CPU, TGT_COUNT } Target;
extern const char *const target_names[TGT_COUNT];

/* One layer's contribution to one field of one module. */
typedef struct {
    Layer layer;
    Val v;
    Mark mark;   /* NO_MARK for the recipe layer */
    int sel;     /* rule or override index, -1 otherwise */
} Contrib;

#define RES_MAX_CONTRIB 8
typedef struct {
    Contrib c[RES_MAX_CONTRIB]; /* in layer order, lowest first */
    int n;
    int win; /* index into c of the deciding contribution, -1: field not applicable */
} FieldRes;

typedef struct {
    const Module *mod;
    FieldRes f[NFIELDS];
    Dtype params;  /* DT_NONE for modules without parameters */
    Dtype compute; /* effective: DT_FP8 / DT_FP4 for low-bit modules */
    int low_bit;
} ModRes;

typedef struct {
    Contrib c[2]; /* recipe, then the file's default */
    int n;
} GlobalRes;

typedef struct {
    const Model *model;
    const Policy *pol;
    Target target;
    ModRes *mods; /* one per model module, same order */
    int nmods;
    GlobalRes g[G_COUNT];
    int n_low_bit;
} Resolution;

/* `*` matches within one path segment, `**` (a whole segment) any number of segments. */
int res_glob_match(const char *pattern, const char *path);
int res_resolve(Arena *a, Diag *d, const Model *m, const Policy *p, Target t, Resolution *r);
const Val *res_value(const ModRes *mr, int f); /* NULL if the field is not applicable */
const Val *res_global(const Resolution *r, GlobalField g);
/* Human text of a field value ("e4m3", "[1, 128]", "tensor", "1024"). */
const char *res_format_value(int f, const Val *v, char *buf, size_t n);
const char *res_format_global(GlobalField g, const Val *v, char *buf, size_t n);
/* Where a contribution came from: "policy.yaml:12" or "recipe:deepseek_v3". */
const char *res_contrib_loc(const Diag *d, const Resolution *r, const Contrib *c, int with_col,
                            char *buf, size_t n);

/* ---------------------------------------------------------------- lower.c / memplan.c */

#include "ops.h"

typedef struct {
    const char *name;     /* "blocks.0.attn.q_proj.out", "grad.embed.weight", ... */
    TensorDtype dtype;
    TensorClass cls;
    int ndim;
    int64_t shape[4];
    int64_t bytes;        /* elements x dtype size */
    int64_t offset;       /* bytes into its class's allocation (memplan.c) */
    const char *init;     /* parameters: "normal:STD", "ones", "zeros"; NULL otherwise */
    int weight_decay;     /* parameters: AdamW decays it (matrices, not norms or biases) */
    const char *desc;     /* what a quantized copy is: "row-wise e4m3 [1, 128] of ..." */
    int first, last;      /* activations: first and last step (program order) that touch it */
} GTensor;

typedef struct {
    OpKind op;
    Section sec;
    int module;                     /* index into the model's modules, -1 for none */
    int args[OP_MAX_ARGS];          /* tensor ids in the op's argument order, -1: absent */
    int64_t ints[OP_MAX_INTS];
    double floats[OP_MAX_FLOATS];
} GStep;

typedef struct {
    GTensor *t;
    int nt, capt;
    GStep *s;
    int ns, caps;
    int64_t class_bytes[TC_COUNT];
    int64_t workspace_bytes;        /* CPU dequantization scratch of the largest low-bit GEMM */
    int tokens, targets, losses;    /* tensor ids the training loop feeds and reads */
} Graph;

/* Lower a resolved model to the training program: forward, loss, backward, optimizer and
 * delayed-scaling updates, with every low-bit GEMM reading explicit quantized copies. */
int low_lower(Arena *a, Diag *d, const Resolution *r, Graph *g);
/* Liveness-based offsets for activations, packed offsets for every other class. */
void mem_plan(Graph *g);
int op_arg_count(OpKind op);
const char *op_arg_name(OpKind op, int i, char *buf, size_t n); /* without '+'/'?' marks */
int op_int_count(OpKind op);
const char *op_int_name(OpKind op, int i, char *buf, size_t n);
int op_float_count(OpKind op);
const char *op_float_name(OpKind op, int i, char *buf, size_t n);

/* ---------------------------------------------------------------- emit.c */

/* Memory accounting shared by the report and plan.json. */
typedef struct {
    int64_t count[DT_COUNT];  /* parameters per storage dtype */
    double param_bytes;
    double scale_bytes;       /* weight scale factors + delayed-scaling histories */
    double master_bytes;
    double optimizer_bytes;
    double total_bytes;
    double bf16_total_bytes;  /* the same model, all BF16 with FP32 master + moments */
} MemorySummary;
void emit_memory_summary(const Resolution *r, MemorySummary *ms);

void emit_plan_json(Buf *b, const Diag *d, const Resolution *r, const Graph *g);
void emit_report_md(Buf *b, const Diag *d, const Resolution *r);
/* Write plan.json and report.md to dir atomically (temp dir + rename). 0 or -1. */
int emit_output_dir(Diag *d, const Resolution *r, const Graph *g, const char *dir);

/* ---------------------------------------------------------------- explain.c */

/* Print provenance chains for every module (paths == NULL) or the given paths. */
int explain_print(FILE *out, Diag *d, const Resolution *r, const char *const *paths, int npaths);

#endif
