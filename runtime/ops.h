/* ops.h: the closed op set of fp8c's training program, defined once.
 *
 * One X-macro row per op: its enum name, its plan name, its tensor arguments (in the order the
 * CPU reference function and the CUDA template take them: outputs first, then inputs), its
 * integer attributes and its float attributes. Lowering (compiler/lower.c) emits steps with
 * these names, the plan writer prints them, the plan reader (runtime/plan.c) maps the names
 * back, and each backend dispatches on the enum: nothing can drift apart.
 *
 * Argument lists are comma-separated names; '?' marks an optional argument (may be absent).
 * Outputs are the arguments before the '|'. An output's leading mark says whether the op reads
 * it before writing it (what a test harness must upload instead of poisoning, and what the
 * memory planner must keep live from an earlier writer):
 *   (none)  overwritten: every element written, none read first;
 *   '+'     accumulated into (+=);
 *   '&'     updated in place (read, then written: optimizer state, amax histories, scales);
 *   '~'     read first only when the op's int attribute `accumulate` is nonzero (qgemm's out).
 * compiler/opnames.c reads these marks (op_arg_reads, op_arg_writes); nothing else parses them.
 */
#ifndef FP8C_OPS_H
#define FP8C_OPS_H

#define FP8C_OPS(X)                                                                                          \
    /* name              plan name            tensor args                                      ints                          floats */ \
    X(EMBED_FWD,         "embed_fwd",         "out|tokens,wte,?wpe",                           "B,T,C",                      "")           \
    X(EMBED_BWD,         "embed_bwd",         "+dwte,+?dwpe|dout,tokens",                      "B,T,C",                      "")           \
    X(RMSNORM_FWD,       "rmsnorm_fwd",       "out,rstd|inp,w",                                "N,C",                        "eps")        \
    X(RMSNORM_BWD,       "rmsnorm_bwd",       "+dinp,+dw|dout,inp,w,rstd",                     "N,C",                        "")           \
    X(LAYERNORM_FWD,     "layernorm_fwd",     "out,mean,rstd|inp,w,?b",                        "N,C",                        "eps")        \
    X(LAYERNORM_BWD,     "layernorm_bwd",     "+dinp,+dw,+?db|dout,inp,w,mean,rstd",           "N,C",                        "")           \
    X(MATMUL_FWD,        "matmul_fwd",        "out|inp,w,?bias",                               "M,K,N",                      "")           \
    X(MATMUL_BWD_DATA,   "matmul_bwd_data",   "+dinp|dout,w",                                  "M,K,N",                      "")           \
    X(MATMUL_BWD_WEIGHT, "matmul_bwd_weight", "+dw,+?dbias|dout,inp",                          "M,K,N",                      "")           \
    X(QUANTIZE,          "quantize",          "codes,scale_inv,?amax|inp,?scale",              "R,C,tile_r,tile_c,format,mx,transpose", "") \
    X(QGEMM,             "qgemm",             "~out|a,a_scale_inv,b,b_scale_inv,?bias",         "P,Q,R,accumulate,a_tile_r,a_tile_c,a_format,b_tile_r,b_tile_c,b_format,mx", "") \
    X(BIAS_BWD,          "bias_bwd",          "+dbias|dout",                                   "M,N",                        "")           \
    X(ROPE_FWD,          "rope_fwd",          "out|inp",                                       "B,T,H,hd",                   "theta")      \
    X(ROPE_BWD,          "rope_bwd",          "dinp|dout",                                     "B,T,H,hd",                   "theta")      \
    X(ATTENTION_FWD,     "attention_fwd",     "out,lse|q,k,v",                                 "B,T,H,KV,hd",                "")           \
    X(ATTENTION_BWD,     "attention_bwd",     "dq,dk,dv|dout,q,k,v,out,lse",                   "B,T,H,KV,hd",                "")           \
    X(GATE_FWD,          "gate_fwd",          "out|a,g",                                       "n",                          "")           \
    X(GATE_BWD,          "gate_bwd",          "da,dg|dout,a,g",                                "n",                          "")           \
    X(SWIGLU_FWD,        "swiglu_fwd",        "out|gate,up",                                   "n",                          "")           \
    X(SWIGLU_BWD,        "swiglu_bwd",        "dgate,dup|dout,gate,up",                        "n",                          "")           \
    X(GELU_FWD,          "gelu_fwd",          "out|inp",                                       "n",                          "")           \
    X(GELU_BWD,          "gelu_bwd",          "dinp|dout,inp",                                 "n",                          "")           \
    X(ADD_FWD,           "add_fwd",           "out|a,b",                                       "n",                          "")           \
    X(ACCUMULATE,        "accumulate",        "+dst|src",                                      "n",                          "")           \
    X(ZERO,              "zero",              "dst|",                                          "",                           "")           \
    X(XENT_FWD,          "crossentropy_fwd",  "losses|logits,targets",                         "N,V",                        "")           \
    X(XENT_BWD,          "crossentropy_bwd",  "dlogits|logits,targets",                        "N,V",                        "")           \
    X(ADAMW,             "adamw",             "&param,&?master,&m,&v|grad",                        "n,param_dtype,state_dtype",  "weight_decay") \
    X(SCALE_UPDATE,      "scale_update",      "&history,&scale|amax",                            "len,algo,margin,interval,format", "") \
    /* multi-head latent attention (runtime/cpu/ref_mla.c) */                                                 \
    X(MLA_SPLIT_FWD,     "mla_split_fwd",     "ckv,kpe|kva",                                   "N,L,R",                      "")           \
    X(MLA_SPLIT_BWD,     "mla_split_bwd",     "dkva|dckv,dkpe",                                "N,L,R",                      "")           \
    X(MLA_ROPE_FWD,      "mla_rope_fwd",      "qh,kh,vh|q,kvb,kpe",                            "B,T,H,dn,R,dv",              "theta")      \
    X(MLA_ROPE_BWD,      "mla_rope_bwd",      "dq,dkvb,dkpe|dqh,dkh,dvh",                      "B,T,H,dn,R,dv",              "theta")      \
    X(MLA_ATTENTION_FWD, "mla_attention_fwd", "out,lse|q,k,v",                                 "B,T,H,dqk,dv",               "")           \
    X(MLA_ATTENTION_BWD, "mla_attention_bwd", "dq,dk,dv|dout,q,k,v,out,lse",                   "B,T,H,dqk,dv",               "")           \
    /* fine-grained mixture of experts (runtime/cpu/ref_moe.c) */                                             \
    X(MOE_ROUTE_FWD,     "moe_route_fwd",     "scores,sel,weights,pos,load|logits,?bias",      "N,E,K,scoring,norm",         "scale")      \
    X(MOE_ROUTE_BWD,     "moe_route_bwd",     "dlogits|dweights,scores,sel",                   "N,E,K,scoring,norm,T",       "scale,aux")  \
    X(MOE_PERMUTE_FWD,   "moe_permute_fwd",   "out|x,sel,pos",                                 "N,C,K,expert",               "")           \
    X(MOE_PERMUTE_BWD,   "moe_permute_bwd",   "+dx|dout,sel,pos",                              "N,C,K,expert",               "")           \
    X(MOE_COMBINE_FWD,   "moe_combine_fwd",   "+out|y,weights,sel,pos",                        "N,C,K,expert",               "")           \
    X(MOE_COMBINE_BWD,   "moe_combine_bwd",   "dy,+dweights|dout,y,weights,sel,pos",           "N,C,K,expert",               "")           \
    X(MOE_BIAS_UPDATE,   "moe_bias_update",   "&bias|load",                                    "E",                          "speed")

typedef enum {
#define X(e, name, args, ints, floats) OP_##e,
    FP8C_OPS(X)
#undef X
        OP_COUNT_
} OpKind;

typedef struct {
    const char *name, *args, *ints, *floats;
} OpInfo;

static const OpInfo fp8c_op_info[OP_COUNT_] = {
#define X(e, name, args, ints, floats) {name, args, ints, floats},
    FP8C_OPS(X)
#undef X
};

#define OP_MAX_ARGS 10
#define OP_MAX_INTS 12
#define OP_MAX_FLOATS 2

/* Storage dtypes of plan tensors. */
typedef enum { TD_F32, TD_BF16, TD_F16, TD_U8, TD_I32 } TensorDtype;
static const char *const fp8c_tensor_dtype_names[] = {"f32", "bf16", "f16", "u8", "i32"};
static const int fp8c_tensor_dtype_bytes[] = {4, 2, 2, 1, 4};

/* Tensor classes: one allocation each at run time, carved by the plan's offsets. */
/* TC_ACT is the one class shared by liveness (compiler/memplan.c); TC_WCOPY holds the weights' FP8
 * copies that an adamw_quantize unit writes in the optimizer for the next step's forward and
 * backward: they persist across steps, so they cannot share the activation arena. */
typedef enum { TC_PARAM, TC_GRAD, TC_MASTER, TC_OPT, TC_ACT, TC_SCALE, TC_INPUT, TC_WCOPY, TC_COUNT } TensorClass;
static const char *const fp8c_tensor_class_names[] = {"parameters", "gradients", "master_weights", "optimizer_state",
                                                      "activations", "scales", "inputs", "weight_copies"};

/* Program sections the training loop runs in order (eval runs forward only). */
typedef enum { SEC_FORWARD, SEC_BACKWARD, SEC_OPTIMIZER, SEC_SCALE_UPDATE, SEC_COUNT } Section;
static const char *const fp8c_section_names[] = {"forward", "backward", "optimizer", "scale_update"};

#endif
