/* runtime.h: the training runtime, a section per file. It reads a plan (plan.c), runs its
 * program on a backend (cpu/exec.c), and drives training: data, steps, evaluation, logging,
 * checkpoints (train.c). It knows the op set (ops.h), never what a transformer is. */
#ifndef FP8C_RUNTIME_H
#define FP8C_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "fp8c.h"
#include "ops.h"

/* ---------------------------------------------------------------- plan.c */

typedef struct {
    const char *name;
    TensorDtype dtype;
    TensorClass cls;
    int ndim;
    int64_t shape[2];
    int64_t n;           /* elements */
    int64_t offset;      /* bytes into the class allocation, for the plan's dtype */
    const char *init;
    int weight_decay;
} RtTensor;

typedef struct {
    OpKind op;
    int args[OP_MAX_ARGS];
    int64_t ints[OP_MAX_INTS];
    double floats[OP_MAX_FLOATS];
    Mark mark;           /* where in plan.json, for runtime errors */
} RtStep;

typedef struct {
    char dir[1024];
    uint64_t hash;       /* FNV-1a of plan.json: checkpoints record it */
    const char *model_name, *policy_name;
    int64_t vocab, n_layers, d_model, n_heads, head_dim, total_params;
    TrainCfg train;
    int ls_mode;
    double ls_scale, ls_init, ls_growth, ls_backoff;
    int64_t ls_interval;
    RtTensor *t;
    int nt;
    RtStep *steps[SEC_COUNT];
    int nsteps[SEC_COUNT];
    int64_t class_bytes[TC_COUNT]; /* recomputed from the tensors, never trusted */
    int tokens, targets, losses;
} Plan;

/* Read and validate DIR/plan.json: every op, argument, shape and offset is checked so that a
 * malformed plan is refused with file:line:col instead of running out of bounds. */
int plan_load(Arena *a, Diag *d, const char *dir, Plan *p);
int plan_find(const Plan *p, const char *name);

/* ---------------------------------------------------------------- cpu/exec.c */

typedef struct {
    float dloss;         /* gradient of each token's loss: loss_scale / (tokens x grad_accum) */
    float lr, grad_scale;
    int64_t opt_step;    /* 1-based AdamW step */
    int64_t amax_step;   /* 0-based index of this applied step, for amax history rings */
} RunState;

typedef struct {
    const Plan *p;
    unsigned char *base[TC_COUNT];
    int factor[TC_COUNT]; /* CPU bytes per plan byte: float storage for 16-bit tensors */
    float *ws;            /* dequantization / transpose scratch */
    size_t ws_floats;
    int profile;          /* FP8C_PROFILE=1: time every op kind */
    double op_seconds[OP_COUNT_];
    int64_t op_calls[OP_COUNT_];
} CpuBackend;

int cpu_init(CpuBackend *b, const Plan *p, char *err, size_t errlen);
void cpu_free(CpuBackend *b);
void *cpu_ptr(const CpuBackend *b, int tensor);
void cpu_run(CpuBackend *b, Section sec, const RunState *st);
void cpu_print_profile(const CpuBackend *b, FILE *out);

/* ---------------------------------------------------------------- train.c */

typedef enum { DEV_AUTO, DEV_CPU, DEV_CUDA } DeviceKind;

typedef struct {
    int64_t steps;           /* total steps; 0: the plan's */
    const char *data;        /* NULL: synthetic corpus */
    const char *log;         /* JSON lines */
    const char *ckpt_dir;
    int64_t ckpt_every;
    const char *resume;
    DeviceKind device;
    int64_t inject_nan_step; /* testing aid: poison a gradient on this step (1-based), 0: off */
    int64_t progress_every;  /* 0: automatic */
    int64_t eval_batches;    /* 0: automatic */
    int check;               /* only validate the plan and report what a run needs */
} TrainOpts;

/* Initialise parameters (and master copies, scaling state) from the plan's init specs and seed. */
int rt_init_params(CpuBackend *b, char *err, size_t errlen);

/* Returns 0, or EXIT_BAD_INPUT / EXIT_RUNTIME with the message already printed. */
int rt_train(const TrainOpts *o, const char *plan_dir);

#endif
