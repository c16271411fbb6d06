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
#define FP8C_PLAN_VERSION 2 /* 2: the program is the launch schedule (units, fused groups with ops) */

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
/* Remove a directory tree, best effort (temporary outputs). */
void fs_remove_tree(const char *dir);
/* The one strict number parser for text fp8c is given outside YAML (command-line values,
 * environment variables, checkpoint metadata, plan init strings): the whole string is one
 * decimal number (no sign for "+", no spaces, nothing after it), it does not overflow, and it
 * lies in [lo, hi] (str_to_f64: finite too). 0, or -1 leaving *out unchanged. */
int str_to_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int str_to_f64(const char *s, double lo, double hi, double *out);

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
/* A warning about no file position. */
void diag_warning_plain(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
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
/* plan.json grows with the model (about 90 kB per FP8 layer of a 124M model); a 671B-class
 * plan is tens of MB. The limit only stops a wrong path from being read into memory. */
#define PLAN_MAX_BYTES ((size_t)1 << 30)
#define YAML_MAX_DEPTH 32

/* Parse one YAML document into a tree in the arena. Rejects duplicate keys, non-scalar keys,
 * aliases to unfinished anchors, more than one document, tags, and depth > YAML_MAX_DEPTH.
 * Returns the root or NULL after reporting an error on d. */
YamlNode *yml_parse(Arena *a, Diag *d, int file, const char *text, size_t len);
/* Read a file (a regular file of at most YAML_MAX_BYTES, opened without blocking) and parse
 * it; the file is registered with d. */
YamlNode *yml_load_file(Arena *a, Diag *d, const char *path);
/* The same with another size limit (plan.json: PLAN_MAX_BYTES). */
YamlNode *yml_load_file_max(Arena *a, Diag *d, const char *path, size_t max);
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
typedef enum { ATTN_MHA, ATTN_MLA } AttnKind;       /* multi-head (GQA) or multi-head latent */
typedef enum { FFN_DENSE, FFN_MOE } FfnKind;
typedef enum { SCORE_SOFTMAX, SCORE_SIGMOID } RouterScoring;

typedef enum {
    MK_EMBEDDING,
    MK_POS_EMBEDDING,
    MK_NORM,
    MK_LINEAR,
    MK_ATTENTION,
    MK_ROUTER,     /* MoE router: GEMM to expert logits, scoring, top-k; never low-bit */
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
    int64_t n_out, k_in;   /* linear: Y (M x n_out) = X (M x k_in) W^T, W: n_out x k_in; router:
                              n_out experts; norm: n_out = k_in = its width */
    int tied;              /* lm_head shares embed's weight */
    int expert;            /* routed expert index (blocks.{i}.ffn.experts.{e}.*), -1 otherwise */
} Module;

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} OptimizerCfg;

typedef enum { DECAY_COSINE, DECAY_LINEAR, DECAY_CONSTANT } DecayKind;

typedef struct {
    int64_t micro_batch, seq_len, grad_accum, steps, warmup, eval_every, seed;
    /* chunks each configured micro-batch runs as (res_split): micro_batch and grad_accum above are
     * the chunk's and the chunks', so the step's tokens and gradient are the configured ones */
    int64_t split;
    const char *split_why; /* res_split's sentence (compiler only; NULL in a runtime plan) */
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
    /* attention: mla (multi-head latent attention, DeepSeek-V2/V3) */
    AttnKind attention;
    int64_t q_lora_rank;      /* 0: no query compression (a plain q_proj) */
    int64_t kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    /* ffn: moe (fine-grained mixture of experts with shared experts, DeepSeekMoE) */
    FfnKind ffn;
    int64_t n_routed_experts, n_shared_experts, top_k, expert_d_ff, first_dense_layers;
    RouterScoring scoring;
    int norm_topk_prob;
    double routed_scaling_factor;
    double bias_update_speed; /* aux-loss-free balancing: expert-bias step per update (0: off) */
    double aux_loss_coef;     /* sequence-level auxiliary balance loss (0: off) */
    Mark attention_mark, ffn_mark;
    TrainCfg train;
    Mark train_mark;
    Module *mods;
    int nmods;
    int64_t total_params;
    int64_t active_params;    /* per token: routed experts count top_k / n_routed_experts */
} Model;

extern const char *const model_activation_names[];
extern const char *const model_norm_names[];
extern const char *const model_positions_names[];
extern const char *const model_decay_names[];
extern const char *const model_attention_names[];
extern const char *const model_ffn_names[];
extern const char *const model_scoring_names[];

/* Load, validate and expand a model.yaml. Returns 0 or -1 (errors are on d). */
int model_load(Arena *a, Diag *d, const YamlNode *root, Model *m);
const char *model_kind_name(const Model *m, ModKind k);
int model_find(const Model *m, const char *path); /* index or -1 */
int64_t model_tokens_per_step(const Model *m);    /* micro_batch * seq_len: the GEMM M */
int model_layer_is_moe(const Model *m, int layer); /* ffn: moe and layer >= first_dense_layers */
/* Forward matmul FLOPs per token (2 per multiply-add): active linears, the router, and causal
 * attention scores and PV at the training sequence length (on average T/2 keys per query). */
double model_flops_per_token(const Model *m);

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
/* Partial tiles (a tile that does not divide the dimension it tiles): PT_CEIL, the last tile is
 * smaller and has its own scale (DeepSeek's ceil'd scale grid: a [576, 7168] weight in 128 x 128
 * blocks has [5, 56] scales); PT_REFUSE, compilation fails naming the module, dimension and tile. */
typedef enum { PT_CEIL, PT_REFUSE } PartialTiles;
extern const char *const partial_names[];

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
    QF_PARTIAL, /* a tile that does not divide its dimension: PT_CEIL or PT_REFUSE */
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
    Dtype router;               /* MoE routers' compute (the policy's defaults do not change it);
                                   DT_NONE: the recipe's compute */
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
/* How many chunks the micro-batch runs as. want: SPLIT_AUTO (target cpu: chunks of at most
 * SPLIT_CHUNK_TOKENS tokens where that changes nothing the policy computes; other targets: 1), or
 * an explicit count, which must divide micro_batch and keep the policy's arithmetic. Writes the
 * count to *split and a sentence saying why to why. Returns 0, or -1 (an explicit count refused;
 * why says why). */
#define SPLIT_AUTO (-1)
#define SPLIT_CHUNK_TOKENS 2048
int res_split(const Resolution *r, int64_t want, int64_t *split, char *why, size_t n);
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
    int first, last;      /* first and last schedule unit that touches it (memplan.c) */
} GTensor;

typedef struct {
    OpKind op;
    Section sec;
    int module;                     /* index into the model's modules, -1 for none */
    int args[OP_MAX_ARGS];          /* tensor ids in the op's argument order, -1: absent */
    int64_t ints[OP_MAX_INTS];
    double floats[OP_MAX_FLOATS];
} GStep;

typedef enum {
    FUSE_NONE,            /* one step */
    FUSE_CAST_TRANSPOSE,  /* (a) quantize row + quantize col of one input (+ amax) */
    FUSE_NORM_QUANT,      /* (b) rmsnorm/layernorm fwd + row quantize of its output */
    FUSE_ACT_QUANT,       /* (c) swiglu/gelu/gate fwd + row quantize of its output */
    FUSE_ADAMW_QUANT,     /* (d) adamw + param cast + weight quantize, both orientations */
    FUSE_SCALE_UPDATE,    /* (e) every scale_update step in one launch */
    FUSE_XENT,            /* (f) crossentropy fwd + bwd */
    FUSE_ROPE_ATTENTION,  /* rope_fwd(q), rope_fwd(k), attention_fwd / attention_bwd + rope_bwd x2 */
    FUSE_COUNT
} FuseKind;

/* One unit of the launch schedule (schedule.c): one kernel launch, GEMM or memset on the GPU; its
 * member steps, in this order, on the CPU. Both backends run the units in schedule order. */
typedef struct {
    FuseKind kind;        /* FUSE_NONE: a single step */
    int *steps, nsteps;   /* members, in the order they are computed (indices into Graph.s) */
    Section sec;          /* the section it runs in */
    int refresh;          /* a weight-copy quantize that an adamw_quantize unit also writes: both
                             backends run it only while the copies are stale (after init, resume) */
} SUnit;

typedef struct {
    GTensor *t;
    int nt, capt;
    GStep *s;
    int ns, caps;
    SUnit *u;                       /* the launch schedule, sections in order (schedule.c) */
    int nu;
    int nfused[FUSE_COUNT];         /* units per fusion kind */
    int nrejected;                  /* proposed fusions refused by a generator or the schedule */
    int64_t class_bytes[TC_COUNT];
    int64_t workspace_bytes;        /* CPU dequantization scratch of the largest low-bit GEMM */
    int tokens, targets, losses;    /* tensor ids the training loop feeds and reads */
    int ranks;                      /* fp8c compile --ranks N (> 1): report.md's per-rank table */
    int *expert_load, n_expert_load; /* MoE layers' tokens per expert (the progress line's balance) */
} Graph;

/* Lower a resolved model to the training program: forward, loss, backward, optimizer and
 * delayed-scaling updates, with every low-bit GEMM reading explicit quantized copies. */
int low_lower(Arena *a, Diag *d, const Resolution *r, Graph *g);
/* Liveness over the launch schedule (g->u): offsets for activations, packed offsets for every
 * other class. Needs sch_build first. */
void mem_plan(Graph *g);
/* the placement: AUTO is the greedy (tightest) up to MEM_PLAN_GREEDY_MAX activations, the linear
 * scan above (the greedy is quadratic in activations); tests pick one */
typedef enum { MEM_PLAN_AUTO, MEM_PLAN_GREEDY, MEM_PLAN_SCAN } MemPlanMethod;
#define MEM_PLAN_GREEDY_MAX 100000
void mem_plan_with(Graph *g, MemPlanMethod method);
/* The verifier after memory planning, computed afresh from the schedule: no two tensors that are
 * live at the same unit share a byte (activations), no two tensors of any other class overlap,
 * and no activation is read before a unit of the step writes it. 0, or -1 with the first
 * violation in err (and the number found in *count when count is not NULL). */
int mem_verify(const Graph *g, char *err, size_t errlen, int64_t *count);

/* ---------------------------------------------------------------- schedule.c */

/* Fusion, then the launch schedule: group steps that one kernel computes in one pass (each group
 * checked by its template family's generator), place each group at a point of the program where
 * moving its members breaks no dependency, and order everything into g->u. fuse = 0 gives the
 * unfused program, one unit per step in program order. Weight copies that an adamw_quantize unit
 * writes move to TC_WCOPY. Returns 0 (a fusion it cannot place is run unfused and counted). */
int sch_build(Arena *a, Graph *g, int fuse);
/* Every dependency of the program order (write before read, read before overwrite, write order)
 * holds in the schedule's order. 0, or -1 with the first violation in err. */
int sch_verify(const Graph *g, char *err, size_t errlen);
int op_arg_count(OpKind op);
const char *op_arg_name(OpKind op, int i, char *buf, size_t n); /* without its marks */
int op_out_count(OpKind op);                  /* arguments before the '|' */
int op_arg_writes(OpKind op, int i);          /* argument i is an output */
/* Argument i is read by the step: an input, or an output read before it is written ('+', '&', and
 * '~' when ints (the step's int attributes; NULL: assume so) has accumulate != 0). */
int op_arg_reads(OpKind op, int i, const int64_t *ints);
int op_int_count(OpKind op);
const char *op_int_name(OpKind op, int i, char *buf, size_t n);
int op_float_count(OpKind op);
const char *op_float_name(OpKind op, int i, char *buf, size_t n);


/* ---------------------------------------------------------------- codegen.c, cg_*.c */

/* A kernel instance: one template family instantiated with literal constants. codegen.c groups
 * program steps (fusion), asks the family's generator (cg_<family>.c) for the instance of each
 * group, deduplicates instances by their generated text, and emits DIR/kernels/NAME.cu as
 * header comment + templates/common.cuh + templates/FAMILY.cuh + `body`.
 *
 * Kernel ABI (every entry of every instance): the tensor pointers named by `params`, in that
 * order, then `void *ws` (scratch of `scratch_bytes`, NULL when 0), then
 * `const Fp8cRunState *rs`. Shapes, tiles, formats and dtypes are literal constants inside. */
#define CG_MAX_ENTRIES 4
#define CG_MAX_PARAMS 16
#define CG_MAX_AUDIT 4

typedef struct {
    char symbol[160];     /* extern "C" name in body */
    int grid[3], block[3];
    int smem;             /* dynamic shared memory bytes */
} CgEntry;

/* The steps one kernel instance covers, in program order (indices into Graph.s). */
typedef struct {
    FuseKind kind;
    int nsteps;
    int *step_ids;
} CgGroup;

typedef struct {
    char family[32];        /* templates/FAMILY.cuh */
    char name[160];         /* unique per generated text, e.g. "rmsnorm_fwd_bf16_N2048_C128" */
    Buf body;               /* CUDA text of the extern "C" entries, using the family's templates */
    Buf constants;          /* JSON object text: {"N": 2048, "C": 128, ...} */
    CgEntry entries[CG_MAX_ENTRIES];
    int nentries;
    int64_t scratch_bytes;
    char params[CG_MAX_PARAMS][32]; /* role names of the pointer params, in signature order */
    char ptypes[CG_MAX_PARAMS][16];  /* their element types: "bf16", "float", "u8", "int", ... */
    int param_tensor[CG_MAX_PARAMS]; /* tensor id each binds to; -1 - c: base of TensorClass c */
    int param_out[CG_MAX_PARAMS];    /* written by the kernel (non-const in the signature) */
    int nparams;
    const char *audit[CG_MAX_AUDIT]; /* PTX substrings the instance must contain (inspect checks) */
    int naudit;
} CgKernel;

/* A generator fills k for group grp, or returns -1 with a message in err (a combination its
 * template cannot do). Generators live in cg_<family>.c. */
typedef int (*CgGenFn)(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);

/* 0 if the group's family generator accepts it (schedule.c asks before placing a fusion); -1 and
 * the reason otherwise. */
int cg_check_group(const Graph *g, const CgGroup *grp, char *err, size_t errlen);

/* Helpers for generators (codegen.c). */
const char *cg_ctype(TensorDtype t);            /* "float", "bf16", "f16", "u8", "int" */
/* Appends a pointer param bound to tensor (skipped when tensor < 0), typed by its dtype. */
void cg_add_param(CgKernel *k, const Graph *g, const char *role, int tensor, int is_output);
/* Appends a pointer param bound to the base of a whole tensor class (element type u8): for
 * kernels that reach many tensors through literal byte offsets (FUSE_SCALE_UPDATE). */
void cg_add_class_param(CgKernel *k, const char *role, TensorClass c, int is_output);
void cg_add_entry(CgKernel *k, const char *symbol, int gx, int gy, int gz, int bx, int by, int bz, int smem);
/* "bf16 *out, float *rstd, const bf16 *inp, ..., void *ws, const Fp8cRunState *rs" */
void cg_signature(Buf *b, const CgKernel *k);
/* "out, rstd, inp, ..., ws, rs": the same names, for forwarding to a template function. */
void cg_call_args(Buf *b, const CgKernel *k);
/* A float literal that round-trips exactly ("1e-05f" style, always with a suffix f). */
const char *cg_float(char *buf, size_t n, double v);

/* Shared by the row-wise and elementwise generators. */
#define CG_GRID_CAP 2048 /* grid-stride loops: enough blocks to fill any current GPU several times */
int cg_dt_bytes(const Graph *g, int t);          /* element bytes of tensor t, 0 when absent */
const char *cg_arg_type(const Graph *g, int t);  /* its element type; "float" when absent */
/* Largest elements-per-load in {8, 4, 2, 1} that moves at most 16 bytes of the widest type and
 * divides mult. */
int cg_pick_epl(int widest, int64_t mult);
/* Bind tensor t to a param named role; returns the name a template call uses ("nullptr" when
 * absent, the earlier param's name when t is already bound). */
const char *cg_bind(CgKernel *k, const Graph *g, const char *role, int t, int is_output);
/* Append "_bf16_f32_...", the dtype of every param, so the name tells instances apart. */
void cg_name_dtypes(CgKernel *k);
/* One extern "C" entry: signature + one template call, launched (gx, gy) x threads, no smem. */
void cg_entry(CgKernel *k, const char *suffix, int gx, int gy, int threads, const char *call);
int cg_grid_for(int64_t work, int per_block);    /* ceil(work / per_block) in [1, CG_GRID_CAP] */

/* Generators, one per template family (cg_<family>.c). Each handles the FuseKinds its comment
 * names and fails with a message for anything else. */
int cg_gen_embed(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);      /* embed_fwd, embed_bwd */
int cg_gen_norm(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);       /* rms/layernorm fwd/bwd, FUSE_NORM_QUANT */
int cg_gen_act(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);        /* gate/swiglu/gelu fwd/bwd, FUSE_ACT_QUANT */
int cg_gen_elementwise(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);/* add_fwd, accumulate, bias_bwd, matmul_bwd_weight's dbias, rope fwd/bwd */
int cg_gen_xent(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);       /* crossentropy fwd/bwd, FUSE_XENT */
int cg_gen_quantize(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);   /* quantize, FUSE_CAST_TRANSPOSE */
int cg_gen_adamw(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);      /* adamw, FUSE_ADAMW_QUANT */
int cg_gen_scale_update(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);/* FUSE_SCALE_UPDATE */
int cg_gen_attention(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);  /* attention fwd/bwd, FUSE_ROPE_ATTENTION */
int cg_gen_gemm(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);       /* qgemm (generated FP8 GEMM) */
int cg_gen_mla(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);        /* mla_split/rope/attention fwd/bwd */
int cg_gen_moe(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen);        /* moe_route/permute/combine fwd/bwd, bias update */

/* One launch of a kernel instance: the kernel of one schedule unit, with its tensor bindings. */
typedef struct {
    FuseKind kind;
    int *steps, nsteps;   /* the unit's members (indices into Graph.s) */
    int kernel;           /* index into CgPlan.kernels */
    int bind[CG_MAX_PARAMS]; /* per param: tensor id, or -1 - c for the base of class c */
} CgLaunch;

typedef struct {
    CgKernel *kernels;
    int nk, capk;
    CgLaunch *launches;
    int nl, capl;
    int *unit_launch;     /* per schedule unit: its launch, -1: none (a cuBLASLt GEMM or a memset) */
    int **mods_of;        /* per kernel: module ids using it (deduplicated) */
    int *nmods_of;
    const char *gemm;     /* "cublaslt" or "generated": how the GPU runs qgemm steps */
    int nmissing;         /* --target cpu: steps no template runs (the GPU backend refuses the plan) */
} CgPlan;

extern const char *const fuse_names[FUSE_COUNT];
/* A kernel instance per schedule unit (g->u, after memory planning: constants include offsets),
 * deduplicated. A step no template can run is a warning with the module's name (the GPU backend
 * refuses such a plan). adamw betas/eps come from the model's training config. */
int cg_codegen(Arena *a, Diag *d, const Resolution *r, const Graph *g, const char *gemm, CgPlan *cp);
/* The text of kernels/NAME.cu: header comment, common.cuh, the family template, the body. */
void cg_kernel_source(Buf *b, const Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp, int kernel);
void cg_free(CgPlan *cp);
/* Template sources embedded at build time (build/gen/templates.c from templates/). */
const char *cg_template_text(const char *family); /* NULL if unknown */

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

void emit_plan_json(Buf *b, const Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp); /* cp may be NULL */
void emit_report_md(Buf *b, const Diag *d, const Resolution *r);
/* Write plan.json and report.md to dir atomically (temp dir + rename). 0 or -1. */
/* Write DIR atomically (also kernels/). 0; -2 when DIR is something fp8c refuses to replace
 * (a file, a symbolic link, a directory without plan.json: a bad argument); -1 on I/O failure. */
int emit_output_dir(Diag *d, const Resolution *r, const Graph *g, const CgPlan *cp, const char *dir);

/* ---------------------------------------------------------------- explain.c */

/* Print provenance chains for every module (paths == NULL) or the given paths. */
int explain_print(FILE *out, Diag *d, const Resolution *r, const char *const *paths, int npaths);

/* ---------------------------------------------------------------- analyze.c */

/* fp8c analyze: the tables of a safetensors checkpoint (files, or directories with or without a
 * model.safetensors.index.json) from headers only; json: one JSON object instead; policy_out:
 * also write the policy that reproduces its precision layout. Returns an exit code. */
int analyze_main(const char *const *paths, int npaths, int json, const char *policy_out);

/* ---------------------------------------------------------------- hfconfig.c */

/* A Hugging Face config.json (a map with "model_type") read as a model file: returns the
 * model-file tree model_load takes, with every value's mark in config.json; NULL after an
 * error on d. Llama and GPT-2 are mapped (docs/model.md); others are refused by name. */
int hf_is_config(const YamlNode *root);
YamlNode *hf_config_model(Arena *a, Diag *d, const YamlNode *root);

/* ---------------------------------------------------------------- ckpt_cli.c */

/* fp8c analyze | export | eval | sample: their own flags; returns the exit code. */
int ckpt_cli_main(int argc, char **argv);

#endif
