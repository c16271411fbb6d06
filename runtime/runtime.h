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

/* How the CUDA backend runs a unit (the plan's per-unit "gpu" object). */
#define RT_MAX_KPARAMS 16
typedef enum { GPU_NONE, GPU_KERNEL, GPU_MEMSET } GpuAction;
typedef struct {
    GpuAction action;
    int kernel;                  /* index into Plan.kernels (GPU_KERNEL, or the dbias/fallback kernel) */
    int params[RT_MAX_KPARAMS];  /* tensor ids; -1 - c: base of class c */
    int nparams;
    int gemm;                    /* 0: not a GEMM, 1: cuBLASLt, 2: the generated kernel */
} GpuStep;

typedef struct {
    char symbol[160];
    int grid[3], block[3], smem;
} RtKEntry;

typedef struct {
    const char *name, *file, *tmpl;
    RtKEntry e[4];
    int ne;
    int64_t scratch;
    int nparams;
    const char *audit[4];
    int naudit;
    Mark mark;
} RtKernel;

typedef struct {
    OpKind op;
    int args[OP_MAX_ARGS];
    int64_t ints[OP_MAX_INTS];
    double floats[OP_MAX_FLOATS];
    Mark mark;           /* where in plan.json, for runtime errors */
} RtStep;

/* One unit of the launch schedule: one launch (kernel, GEMM or memset) on the GPU, its ops in
 * order on the CPU. Both backends run a section's units in order (compiler/schedule.c). */
typedef struct {
    int first, n;        /* its ops: Plan.steps[sec][first .. first + n) */
    FuseKind fusion;     /* FUSE_NONE: a single op */
    int refresh;         /* run only while the weights' FP8 copies are stale (see SUnit) */
    GpuStep gpu;
    Mark mark;
} RtUnit;

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
    RtStep *steps[SEC_COUNT];   /* every unit's ops, in schedule order */
    int nsteps[SEC_COUNT];
    RtUnit *units[SEC_COUNT];   /* the launch schedule */
    int nunits[SEC_COUNT];
    int64_t class_bytes[TC_COUNT]; /* recomputed from the tensors, never trusted */
    int tokens, targets, losses;
    int *expert_load, n_expert_load; /* MoE: each layer's tokens per expert (f32), for the balance report */
    RtKernel *kernels;   /* the plan's "kernels" (empty for plans without generated code) */
    int nkernels;
    const char *gemm;    /* "cublaslt" or "generated" */
    const char *target;  /* what it was compiled for: "sm_90a", "sm_89", "cpu", ... */
    int nmissing;        /* steps that need a kernel and have none (a --target cpu plan) */
} Plan;

/* Read and validate DIR/plan.json: every op, argument, shape and offset is checked so that a
 * malformed plan is refused with file:line:col instead of running out of bounds. */
int plan_load(Arena *a, Diag *d, const char *dir, Plan *p);
/* The same checks on plan text in memory (registered with d as name; text must outlive p). */
int plan_parse(Arena *a, Diag *d, const char *name, const char *text, size_t len, Plan *p);
int plan_find(const Plan *p, const char *name);
/* A kernel file name a plan may give: relative, [A-Za-z0-9_.-/], no empty, hidden, "." or ".."
 * component (so it cannot leave the plan directory). 1 if so. */
int plan_relative_path(const char *f);
#define PLAN_ALIGN 16 /* every tensor offset is a multiple (the compiler writes multiples of 256) */

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
    int copies_fresh;     /* the weights' FP8 copies match the parameters: refresh units are skipped */
    int profile;          /* FP8C_PROFILE=1: time every op kind */
    double op_seconds[OP_COUNT_];
    int64_t op_calls[OP_COUNT_];
} CpuBackend;

int cpu_init(CpuBackend *b, const Plan *p, char *err, size_t errlen);
void cpu_free(CpuBackend *b);
void *cpu_ptr(const CpuBackend *b, int tensor);
size_t cpu_tensor_bytes(const CpuBackend *b, int tensor); /* its bytes here (16-bit values held as floats) */
/* Run a section's units in order (refresh units only while the copies are stale). */
void cpu_run(CpuBackend *b, Section sec, const RunState *st);
/* One unit, refresh or not (tests/gpu's stand-in device and harness). */
void cpu_run_unit(CpuBackend *b, Section sec, int u, const RunState *st);
/* The parameters were written from outside the program (init, checkpoint, upload): the weights'
 * FP8 copies are stale until the refresh units or an adamw_quantize unit rewrite them. */
void cpu_params_changed(CpuBackend *b);
void cpu_print_profile(const CpuBackend *b, FILE *out);

/* ---------------------------------------------------------------- cuda/kbuild.c */

/* fp8c build DIR [--arch A]: every kernel through NVRTC into DIR/cubin/NAME.ARCH.cubin. */
int rt_build(const char *dir, const char *arch);
/* fp8c inspect DIR [KERNEL]: the kernel table, or one kernel's source, PTX, resources, audit. */
int rt_inspect(const char *dir, const char *kernel, const char *arch);
/* FP8C_DEBUG: 1 timings, 2 + failing sources and NVRTC logs, 3 + PTX. */
int rt_debug_level(void);

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
    const char *init_from;   /* a Hugging Face model directory whose weights replace the initial draw */
    int zero;                /* --zero 1: shard master weights and moments over MPI ranks (dist.c) */
} TrainOpts;

/* Initialise parameters (and master copies, scaling state) from the plan's init specs and seed. */
int rt_init_params(CpuBackend *b, char *err, size_t errlen);

/* Load a checkpoint of this plan (every checkpointed class; the plan hash must match): eval and
 * sample start from it. Its step into *step. 0, or -1 with a message. */
int rt_load_checkpoint(CpuBackend *b, const char *path, int64_t *step, char *err, size_t errlen);

/* Returns 0, or EXIT_BAD_INPUT / EXIT_RUNTIME with the message already printed. */
int rt_train(const TrainOpts *o, const char *plan_dir);

#endif
