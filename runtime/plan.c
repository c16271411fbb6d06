/* plan.c: DIR/plan.json -> Plan. The plan is strict JSON, read with the same libyaml-based
 * loader as the YAML inputs (JSON is YAML), so every problem has a file:line:col. Nothing in
 * a plan is trusted: sizes and offsets are recomputed, and every step's tensors are checked
 * against the shapes its op needs before anything runs. */
#include "runtime.h"

#include "quant.h"

#include <stdlib.h>
#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

typedef struct {
    Diag *d;
    Plan *p;
    Arena *a;
    int *hash_slots; /* open addressing over tensor names */
    int nslots;
} R;

static uint64_t hstr(const char *s) { return fnv1a(s, strlen(s)); }

int plan_find(const Plan *p, const char *name) {
    for (int i = 0; i < p->nt; i++)
        if (!strcmp(p->t[i].name, name)) return i;
    return -1;
}

static int lookup(const R *r, const char *name) {
    uint64_t h = hstr(name);
    for (int k = 0; k < r->nslots; k++) {
        int slot = r->hash_slots[(h + (uint64_t)k) % (uint64_t)r->nslots];
        if (slot < 0) return -1;
        if (!strcmp(r->p->t[slot].name, name)) return slot;
    }
    return -1;
}

static void insert(R *r, int id) {
    uint64_t h = hstr(r->p->t[id].name);
    for (int k = 0;; k++) {
        int *slot = &r->hash_slots[(h + (uint64_t)k) % (uint64_t)r->nslots];
        if (*slot < 0) {
            *slot = id;
            return;
        }
    }
}

static const YamlNode *need(R *r, const YamlNode *map, const char *key, YamlKind kind) {
    const YamlNode *n = yml_get(map, key);
    if (!n) {
        diag_error(r->d, map->mark, NULL, "plan: missing '%s'", key);
        return NULL;
    }
    char what[64];
    snprintf(what, sizeof what, "plan '%s'", key);
    return yml_expect(r->d, n, kind, what) ? NULL : n;
}

static int get_int(R *r, const YamlNode *map, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const YamlNode *n = need(r, map, key, YN_SCALAR);
    return n ? yml_int(r->d, n, lo, hi, out) : -1;
}

static int get_float(R *r, const YamlNode *map, const char *key, double lo, double hi, double *out) {
    const YamlNode *n = need(r, map, key, YN_SCALAR);
    return n ? yml_float(r->d, n, lo, hi, out) : -1;
}

static int get_enum(R *r, const YamlNode *map, const char *key, const char *const *names, int nn, int *out) {
    const YamlNode *n = need(r, map, key, YN_SCALAR);
    return n ? yml_enum(r->d, n, names, nn, out) : -1;
}

static int read_train(R *r, const YamlNode *root) {
    const YamlNode *t = need(r, root, "train", YN_MAP);
    if (!t) return -1;
    TrainCfg *c = &r->p->train;
    int bad = 0;
    bad |= get_int(r, t, "micro_batch", 1, 1 << 16, &c->micro_batch);
    bad |= get_int(r, t, "seq_len", 1, 1 << 20, &c->seq_len);
    bad |= get_int(r, t, "grad_accum", 1, 1 << 16, &c->grad_accum);
    c->split = 1; /* plans from before --split ran the micro-batch in one pass */
    if (yml_get(t, "split")) {
        const YamlNode *n = need(r, t, "split", YN_SCALAR);
        if (!n || yml_int(r->d, n, 1, 1 << 16, &c->split)) bad = 1;
        else if (!bad && c->grad_accum % c->split) {
            diag_error(r->d, n->mark, NULL, "plan: split %lld does not divide grad_accum %lld (grad_accum counts the chunks)",
                       (long long)c->split, (long long)c->grad_accum);
            bad = 1;
        }
    }
    bad |= get_int(r, t, "steps", 1, (int64_t)1 << 40, &c->steps);
    bad |= get_int(r, t, "eval_every", 0, (int64_t)1 << 40, &c->eval_every);
    bad |= get_int(r, t, "seed", 0, INT64_MAX, &c->seed);
    bad |= get_float(r, t, "grad_clip", 0, 1e9, &c->grad_clip);
    const YamlNode *o = need(r, t, "optimizer", YN_MAP), *s = need(r, t, "schedule", YN_MAP);
    if (!o || !s) return -1;
    bad |= get_float(r, o, "lr", 0, 10, &c->opt.lr);
    bad |= get_float(r, o, "eps", 0, 1, &c->opt.eps);
    bad |= get_float(r, o, "weight_decay", 0, 10, &c->opt.weight_decay);
    const YamlNode *b = need(r, o, "betas", YN_SEQ);
    if (!b) return -1;
    if (b->n != 2) {
        diag_error(r->d, b->mark, "write [beta1, beta2]", "plan: 'betas' has 2 values, not %d", b->n);
        return -1;
    }
    bad |= yml_float(r->d, b->items[0], 0, 1, &c->opt.beta1) | yml_float(r->d, b->items[1], 0, 1, &c->opt.beta2);
    bad |= get_int(r, s, "warmup", 0, (int64_t)1 << 40, &c->warmup);
    int decay;
    bad |= get_enum(r, s, "decay", model_decay_names, 3, &decay);
    c->decay = (DecayKind)decay;
    bad |= get_float(r, s, "min_lr_ratio", 0, 1, &c->min_lr_ratio);
    return bad ? -1 : 0;
}

static int read_model(R *r, const YamlNode *root) {
    const YamlNode *m = need(r, root, "model", YN_MAP);
    if (!m) return -1;
    Plan *p = r->p;
    int bad = 0;
    const YamlNode *name = need(r, m, "name", YN_SCALAR);
    if (!name) return -1;
    p->model_name = name->str;
    bad |= get_int(r, m, "vocab_size", 2, 1 << 24, &p->vocab);
    bad |= get_int(r, m, "n_layers", 1, 1024, &p->n_layers);
    bad |= get_int(r, m, "d_model", 1, 1 << 16, &p->d_model);
    bad |= get_int(r, m, "n_heads", 1, 1024, &p->n_heads);
    bad |= get_int(r, m, "head_dim", 1, 4096, &p->head_dim);
    bad |= get_int(r, m, "total_params", 0, INT64_MAX, &p->total_params);
    const YamlNode *pol = need(r, root, "policy", YN_MAP);
    if (!pol) return -1;
    const YamlNode *pn = need(r, pol, "name", YN_SCALAR);
    if (!pn) return -1;
    p->policy_name = pn->str;
    const YamlNode *tp = need(r, root, "training_precision", YN_MAP);
    if (!tp) return -1;
    bad |= get_enum(r, tp, "loss_scaling.mode", loss_scaling_names, 3, &p->ls_mode);
    p->ls_scale = p->ls_init = 1;
    p->ls_growth = 2;
    p->ls_backoff = 0.5;
    p->ls_interval = 2000;
    if (p->ls_mode == LS_STATIC) bad |= get_float(r, tp, "loss_scaling.scale", 1e-30, 1e30, &p->ls_scale);
    if (p->ls_mode == LS_DYNAMIC) {
        bad |= get_float(r, tp, "loss_scaling.init", 1e-30, 1e30, &p->ls_init);
        bad |= get_float(r, tp, "loss_scaling.growth_factor", 1, 1e6, &p->ls_growth);
        bad |= get_float(r, tp, "loss_scaling.backoff_factor", 1e-6, 1, &p->ls_backoff);
        bad |= get_int(r, tp, "loss_scaling.growth_interval", 1, INT32_MAX, &p->ls_interval);
    }
    return bad ? -1 : 0;
}

/* The initialisers train.c knows: "normal:STD" (STD >= 0), "const:VALUE", "ones", "zeros"; only
 * on tensors the CPU backend holds as floats. */
static int check_init(R *r, const YamlNode *n, const RtTensor *t) {
    const char *s = t->init, *why = NULL;
    double v;
    if (t->dtype != TD_F32 && t->dtype != TD_BF16 && t->dtype != TD_F16)
        why = "only f32, bf16 and f16 tensors are initialised";
    else if (!strncmp(s, "normal:", 7))
        why = str_to_f64(s + 7, 0, 1e6, &v) ? "'normal:' takes a standard deviation in [0, 1e6]" : NULL;
    else if (!strncmp(s, "const:", 6))
        why = str_to_f64(s + 6, -3.4e38, 3.4e38, &v) ? "'const:' takes a finite float" : NULL;
    else if (strcmp(s, "ones") && strcmp(s, "zeros"))
        why = "an init is normal:STD, const:VALUE, ones or zeros";
    if (why) diag_error(r->d, n->mark, NULL, "plan: tensor '%s' has init '%s': %s", t->name, s, why);
    return why ? -1 : 0;
}

static int read_tensors(R *r, const YamlNode *root) {
    const YamlNode *ts = need(r, root, "tensors", YN_SEQ);
    if (!ts) return -1;
    Plan *p = r->p;
    int64_t packed[TC_COUNT] = {0};
    p->nt = ts->n;
    p->t = arena_alloc(r->a, (size_t)(ts->n ? ts->n : 1) * sizeof *p->t);
    r->nslots = 2 * ts->n + 1;
    r->hash_slots = xmalloc((size_t)r->nslots * sizeof *r->hash_slots);
    for (int i = 0; i < r->nslots; i++) r->hash_slots[i] = -1;
    for (int i = 0; i < ts->n; i++) {
        const YamlNode *n = ts->items[i];
        if (yml_expect(r->d, n, YN_MAP, "a plan tensor")) return -1;
        RtTensor *t = &p->t[i];
        const YamlNode *name = need(r, n, "name", YN_SCALAR), *shape = need(r, n, "shape", YN_SEQ);
        if (!name || !shape) return -1;
        t->name = name->str;
        if (lookup(r, t->name) >= 0) {
            diag_error(r->d, name->mark, NULL, "plan: duplicate tensor '%s'", t->name);
            return -1;
        }
        int dt, cls;
        int64_t bytes;
        if (get_enum(r, n, "dtype", fp8c_tensor_dtype_names, 5, &dt) || get_enum(r, n, "class", fp8c_tensor_class_names, TC_COUNT, &cls) ||
            get_int(r, n, "offset", 0, (int64_t)1 << 46, &t->offset) || get_int(r, n, "bytes", 1, (int64_t)1 << 46, &bytes))
            return -1;
        t->dtype = (TensorDtype)dt;
        t->cls = (TensorClass)cls;
        if (shape->n < 1 || shape->n > 2) {
            diag_error(r->d, shape->mark, NULL, "plan: tensor shapes have 1 or 2 dimensions");
            return -1;
        }
        t->ndim = shape->n;
        t->n = 1;
        for (int k = 0; k < shape->n; k++) {
            if (yml_int(r->d, shape->items[k], 1, (int64_t)1 << 40, &t->shape[k])) return -1;
            t->n *= t->shape[k];
            if (t->n > ((int64_t)1 << 40)) {
                diag_error(r->d, shape->mark, NULL, "plan: tensor '%s' is too large", t->name);
                return -1;
            }
        }
        if (bytes != t->n * fp8c_tensor_dtype_bytes[t->dtype]) {
            diag_error(r->d, n->mark, NULL, "plan: tensor '%s' has %lld bytes, but its shape and dtype need %lld", t->name,
                       (long long)bytes, (long long)(t->n * fp8c_tensor_dtype_bytes[t->dtype]));
            return -1;
        }
        if (t->offset % PLAN_ALIGN) {
            diag_error(r->d, yml_get(n, "offset")->mark, "the compiler places tensors at multiples of 256",
                       "plan: tensor '%s' has offset %lld, not a multiple of %d bytes", t->name, (long long)t->offset, PLAN_ALIGN);
            return -1;
        }
        const YamlNode *init = yml_get(n, "init"), *wd = yml_get(n, "weight_decay");
        if (init && (yml_str(r->d, init, &t->init) || check_init(r, init, t))) return -1;
        if (wd && yml_bool(r->d, wd, &t->weight_decay)) return -1;
        int64_t end = t->offset + bytes;
        if (end > p->class_bytes[t->cls]) p->class_bytes[t->cls] = end;
        insert(r, i);
        packed[t->cls] += (t->n * fp8c_tensor_dtype_bytes[t->dtype] + 255) / 256 * 256; /* memplan.c's ALIGN */
    }
    /* A class never needs more bytes than its tensors laid end to end (the compiler's placement,
     * memplan.c, puts each tensor at the end of one already placed): an offset beyond that is a
     * damaged plan, refused here rather than as an allocation of terabytes later. */
    for (int i = 0; i < ts->n; i++) {
        const RtTensor *t = &p->t[i];
        if (t->offset + t->n * fp8c_tensor_dtype_bytes[t->dtype] > packed[t->cls]) {
            diag_error(r->d, yml_get(ts->items[i], "offset")->mark, "recompile it with fp8c compile",
                       "plan: tensor '%s' ends at byte %lld of the %s, beyond the %lld bytes all its tensors need", t->name,
                       (long long)(t->offset + t->n * fp8c_tensor_dtype_bytes[t->dtype]), fp8c_tensor_class_names[t->cls],
                       (long long)packed[t->cls]);
            return -1;
        }
    }
    return 0;
}

/* Elements each tensor argument of a step must have, from the step's ints; -1: not checked here. */
static int64_t need_elems(const RtStep *s, int arg, const Plan *p) {
    const int64_t *v = s->ints;
    switch (s->op) {
    case OP_EMBED_FWD: return (int64_t[]){v[0] * v[1] * v[2], v[0] * v[1], -1, -1}[arg];
    case OP_EMBED_BWD: return (int64_t[]){-1, -1, v[0] * v[1] * v[2], v[0] * v[1]}[arg];
    case OP_RMSNORM_FWD: return (int64_t[]){v[0] * v[1], v[0], v[0] * v[1], v[1]}[arg];
    case OP_RMSNORM_BWD: return (int64_t[]){v[0] * v[1], v[1], v[0] * v[1], v[0] * v[1], v[1], v[0]}[arg];
    case OP_LAYERNORM_FWD: return (int64_t[]){v[0] * v[1], v[0], v[0], v[0] * v[1], v[1], v[1]}[arg];
    case OP_LAYERNORM_BWD: return (int64_t[]){v[0] * v[1], v[1], v[1], v[0] * v[1], v[0] * v[1], v[1], v[0], v[0]}[arg];
    case OP_MATMUL_FWD: return (int64_t[]){v[0] * v[2], v[0] * v[1], v[2] * v[1], v[2]}[arg];
    case OP_MATMUL_BWD_DATA: return (int64_t[]){v[0] * v[1], v[0] * v[2], v[2] * v[1]}[arg];
    case OP_MATMUL_BWD_WEIGHT: return (int64_t[]){v[2] * v[1], v[2], v[0] * v[2], v[0] * v[1]}[arg];
    case OP_QUANTIZE: return (int64_t[]){v[0] * v[1], -1, 1, v[0] * v[1], 1}[arg];
    case OP_QGEMM: return (int64_t[]){v[0] * v[1], v[0] * v[2], -1, v[1] * v[2], -1, v[1]}[arg];
    case OP_BIAS_BWD: return (int64_t[]){v[1], v[0] * v[1]}[arg];
    case OP_ROPE_FWD:
    case OP_ROPE_BWD: return v[0] * v[1] * v[2] * v[3];
    case OP_ATTENTION_FWD: {
        int64_t q = v[0] * v[1] * v[2] * v[4], kv = v[0] * v[1] * v[3] * v[4];
        return (int64_t[]){q, v[0] * v[1] * v[2], q, kv, kv}[arg];
    }
    case OP_ATTENTION_BWD: {
        int64_t q = v[0] * v[1] * v[2] * v[4], kv = v[0] * v[1] * v[3] * v[4];
        return (int64_t[]){q, kv, kv, q, q, kv, kv, q, v[0] * v[1] * v[2]}[arg];
    }
    case OP_GATE_FWD: case OP_GATE_BWD: case OP_SWIGLU_FWD: case OP_SWIGLU_BWD: case OP_GELU_FWD:
    case OP_GELU_BWD: case OP_ADD_FWD: case OP_ACCUMULATE: return v[0];
    case OP_XENT_FWD: return (int64_t[]){v[0], v[0] * v[1], v[0]}[arg];
    case OP_XENT_BWD: return (int64_t[]){v[0] * v[1], v[0] * v[1], v[0]}[arg];
    case OP_ADAMW: return v[0];
    case OP_SCALE_UPDATE: return (int64_t[]){v[0], 1, 1}[arg];
    case OP_ZERO: return -1;
    case OP_MLA_SPLIT_FWD: return (int64_t[]){v[0] * v[1], v[0] * v[2], v[0] * (v[1] + v[2])}[arg];
    case OP_MLA_SPLIT_BWD: return (int64_t[]){v[0] * (v[1] + v[2]), v[0] * v[1], v[0] * v[2]}[arg];
    case OP_MLA_ROPE_FWD: case OP_MLA_ROPE_BWD: {
        int64_t bt = v[0] * v[1], qk = bt * v[2] * (v[3] + v[4]);
        int64_t fwd[] = {qk, qk, bt * v[2] * v[5], qk, bt * v[2] * (v[3] + v[5]), bt * v[4]};
        int64_t bwd[] = {qk, bt * v[2] * (v[3] + v[5]), bt * v[4], qk, qk, bt * v[2] * v[5]};
        return s->op == OP_MLA_ROPE_FWD ? fwd[arg] : bwd[arg];
    }
    case OP_MLA_ATTENTION_FWD: {
        int64_t bt = v[0] * v[1], qk = bt * v[2] * v[3], vv = bt * v[2] * v[4];
        return (int64_t[]){vv, bt * v[2], qk, qk, vv}[arg];
    }
    case OP_MLA_ATTENTION_BWD: {
        int64_t bt = v[0] * v[1], qk = bt * v[2] * v[3], vv = bt * v[2] * v[4];
        return (int64_t[]){qk, qk, vv, vv, qk, qk, vv, vv, bt * v[2]}[arg];
    }
    case OP_MOE_ROUTE_FWD: return (int64_t[]){v[0] * v[1], v[0] * v[2], v[0] * v[2], v[0] * v[2], v[1], v[0] * v[1], v[1]}[arg];
    case OP_MOE_ROUTE_BWD: return (int64_t[]){v[0] * v[1], v[0] * v[2], v[0] * v[1], v[0] * v[2]}[arg];
    case OP_MOE_PERMUTE_FWD: case OP_MOE_PERMUTE_BWD: return (int64_t[]){v[0] * v[1], v[0] * v[1], v[0] * v[2], v[0] * v[2]}[arg];
    case OP_MOE_COMBINE_FWD: return (int64_t[]){v[0] * v[1], v[0] * v[1], v[0] * v[2], v[0] * v[2], v[0] * v[2]}[arg];
    case OP_MOE_COMBINE_BWD: return (int64_t[]){v[0] * v[1], v[0] * v[2], v[0] * v[1], v[0] * v[1], v[0] * v[2], v[0] * v[2], v[0] * v[2]}[arg];
    case OP_MOE_BIAS_UPDATE: return v[0];
    case OP_COUNT_: break;
    }
    (void)p;
    return -1;
}

/* Scale entries of an R x C operand: the quantizer's own count (quant.c), so the reader and the
 * kernel that writes them cannot disagree. Dimensions are bounded before they get here. */
static int64_t scale_entries(int64_t R, int64_t C, int64_t tr, int64_t tc, int mx) {
    if (R > INT32_MAX || C > INT32_MAX || tr > INT32_MAX || tc > INT32_MAX) return -1;
    return mx ? (int64_t)q_mx_scale_count((int)R, (int)C, (int)tr, (int)tc) : (int64_t)q_scale_count((int)R, (int)C, (int)tr, (int)tc);
}

/* MoE expert ids and buffer rows (int32): sel and pos of every MoE op. */
static int op_arg_is_index(OpKind op, int k) {
    switch (op) {
    case OP_MOE_ROUTE_FWD: return k == 1 || k == 3;
    case OP_MOE_ROUTE_BWD: return k == 3;
    case OP_MOE_PERMUTE_FWD: case OP_MOE_PERMUTE_BWD: return k == 2 || k == 3;
    case OP_MOE_COMBINE_FWD: return k == 3 || k == 4;
    case OP_MOE_COMBINE_BWD: return k == 5 || k == 6;
    default: return 0;
    }
}

/* Extra, op-specific checks: token-typed arguments, quantized operands and their scales. */
static const char *check_step(const Plan *p, const RtStep *s) {
    const int64_t *v = s->ints;
    for (int k = 0; k < op_int_count(s->op); k++)
        if (v[k] < 0 || v[k] > ((int64_t)1 << 40)) return "an int attribute is out of range";
    int na = op_arg_count(s->op);
    for (int k = 0; k < na; k++) {
        int t = s->args[k];
        if (t < 0) continue;
        const RtTensor *rt = &p->t[t];
        int is_tok = (s->op == OP_EMBED_FWD && k == 1) || (s->op == OP_EMBED_BWD && k == 3) ||
                     ((s->op == OP_XENT_FWD || s->op == OP_XENT_BWD) && k == 2) || op_arg_is_index(s->op, k);
        int is_code = (s->op == OP_QUANTIZE && k == 0) || (s->op == OP_QGEMM && (k == 1 || k == 3)) ||
                      (s->op == OP_QUANTIZE && k == 1 && v[5]) || (s->op == OP_QGEMM && (k == 2 || k == 4) && v[10]);
        if (is_tok != (rt->dtype == TD_I32)) return is_tok ? "token arguments must be i32" : "an i32 tensor is used as values";
        if (is_code != (rt->dtype == TD_U8)) return is_code ? "quantized arguments must be u8" : "a u8 tensor is used as values";
        int64_t want = need_elems(s, k, p);
        if (want >= 0 && rt->n != want) return "a tensor's size does not match the step's dimensions";
    }
    if (s->op == OP_EMBED_FWD || s->op == OP_EMBED_BWD) {
        const RtTensor *wte = &p->t[s->args[s->op == OP_EMBED_FWD ? 2 : 0]];
        int wpe_arg = s->op == OP_EMBED_FWD ? 3 : 1;
        if (wte->ndim != 2 || wte->shape[1] != v[2] || wte->shape[0] != p->vocab) return "embedding table shape";
        if (s->args[wpe_arg] >= 0 && (p->t[s->args[wpe_arg]].shape[1] != v[2] || p->t[s->args[wpe_arg]].shape[0] < v[1]))
            return "position table shape";
    }
    if ((s->op == OP_XENT_FWD || s->op == OP_XENT_BWD) && v[1] != p->vocab) return "vocabulary size";
    if (s->op == OP_ATTENTION_FWD || s->op == OP_ATTENTION_BWD) {
        if (!v[3] || v[2] % v[3]) return "n_heads must be a multiple of n_kv_heads";
    }
    if ((s->op == OP_ROPE_FWD || s->op == OP_ROPE_BWD) && v[3] % 2) return "RoPE needs an even head_dim";
    if ((s->op == OP_MLA_ROPE_FWD || s->op == OP_MLA_ROPE_BWD) && (v[4] % 2 || v[4] > 4096)) return "MLA RoPE needs an even rope width of at most 4096";
    if ((s->op == OP_MOE_ROUTE_FWD || s->op == OP_MOE_ROUTE_BWD) && (v[1] > 4096 || v[2] > v[1] || v[3] > 1 || v[4] > 1))
        return "bad MoE routing attributes";
    if (s->op == OP_MOE_ROUTE_BWD && (v[5] < 1 || v[0] % v[5])) return "MoE routing: tokens are not whole sequences";
    if ((s->op >= OP_MOE_PERMUTE_FWD && s->op <= OP_MOE_COMBINE_BWD) && v[3] >= ((int64_t)1 << 31)) return "bad expert index";
    if (s->op == OP_QUANTIZE) {
        int64_t R = v[6] ? v[1] : v[0], C = v[6] ? v[0] : v[1], tr = v[2], tc = v[3];
        if ((tr == 0) != (tc == 0) || v[4] > 2 || v[5] > 1 || v[6] > 1) return "bad quantization attributes";
        if (p->t[s->args[1]].n != scale_entries(R, C, tr, tc, (int)v[5])) return "scale_inv size does not match the tiles";
    }
    if (s->op == OP_QGEMM) {
        if (v[3] > 1 || v[6] > 2 || v[9] > 2 || v[10] > 1 || (v[4] == 0) != (v[5] == 0) || (v[7] == 0) != (v[8] == 0))
            return "bad qgemm attributes";
        for (int side = 0; side < 2; side++) {
            int64_t R = side ? v[1] : v[0], C = v[2], tr = v[4 + 3 * side], tc = v[5 + 3 * side];
            if (p->t[s->args[2 + 2 * side]].n != scale_entries(R, C, tr, tc, (int)v[10])) return "scale_inv size does not match the tiles";
        }
    }
    if (s->op == OP_ADAMW) {
        for (int k = 0; k < 5; k++)
            if (s->args[k] >= 0 && p->t[s->args[k]].n != v[0]) return "AdamW tensors differ in size";
        if (v[1] > 2 || v[2] > 1) return "bad AdamW dtypes";
    }
    if (s->op == OP_SCALE_UPDATE && (v[0] < 1 || v[1] > 1 || v[3] < 1 || v[4] > 2 || v[2] > 64)) return "bad scale_update attributes";
    return NULL;
}

int plan_relative_path(const char *f) {
    if (!*f || *f == '/' || strlen(f) > 512) return 0;
    for (const char *c = f; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("_-./", *c)))
            return 0;
    for (const char *c = f; c;) { /* no empty, "." or ".." component, no hidden file */
        if (!*c || *c == '/' || *c == '.') return 0;
        c = strchr(c, '/');
        if (c) c++;
    }
    return 1;
}

static int kernel_index(const Plan *p, const char *name) {
    for (int i = 0; i < p->nkernels; i++)
        if (!strcmp(p->kernels[i].name, name)) return i;
    return -1;
}

/* The "gpu" object of a unit: what the CUDA backend does for it. first is the unit's first op. */
static int read_gpu(R *r, const YamlNode *n, const RtStep *first, GpuStep *g) {
    memset(g, 0, sizeof *g);
    g->kernel = -1;
    if (!n) {
        if (first->op != OP_MATMUL_FWD && first->op != OP_MATMUL_BWD_DATA && first->op != OP_MATMUL_BWD_WEIGHT) r->p->nmissing++;
        return 0;
    }
    if (yml_expect(r->d, n, YN_MAP, "a unit's gpu object")) return -1;
    static const char *const keys[] = {"memset", "gemm", "kernel", "params"};
    if (yml_check_keys(r->d, n, "a unit's gpu object", keys, 4)) return -1;
    const YamlNode *v;
    if ((v = yml_get(n, "memset"))) {
        if (first->op != OP_ZERO) {
            diag_error(r->d, v->mark, NULL, "plan: only a zero step runs as a memset, not '%s'", fp8c_op_info[first->op].name);
            return -1;
        }
        g->action = GPU_MEMSET;
    }
    if ((v = yml_get(n, "gemm"))) {
        if (yml_expect(r->d, v, YN_SCALAR, "gpu.gemm")) return -1;
        if (!strcmp(v->str, "cublaslt")) g->gemm = 1;
        else if (!strcmp(v->str, "generated")) g->gemm = 2;
        else {
            diag_error(r->d, v->mark, NULL, "plan: gpu.gemm is 'cublaslt' or 'generated', not '%s'", v->str);
            return -1;
        }
    }
    if ((v = yml_get(n, "kernel"))) {
        if (yml_expect(r->d, v, YN_SCALAR, "gpu.kernel")) return -1;
        g->kernel = kernel_index(r->p, v->str);
        if (g->kernel < 0) {
            diag_error(r->d, v->mark, NULL, "plan: unknown kernel '%s'", v->str);
            return -1;
        }
        if (g->action == GPU_NONE) g->action = GPU_KERNEL;
        const YamlNode *ps = need(r, n, "params", YN_SEQ);
        if (!ps) return -1;
        if (ps->n != r->p->kernels[g->kernel].nparams || ps->n > RT_MAX_KPARAMS) {
            diag_error(r->d, ps->mark, NULL, "plan: kernel '%s' takes %d params, the step gives %d", v->str,
                       r->p->kernels[g->kernel].nparams, ps->n);
            return -1;
        }
        g->nparams = ps->n;
        for (int i = 0; i < ps->n; i++) {
            const char *tn;
            if (yml_str(r->d, ps->items[i], &tn)) return -1;
            int id = -1, found = 0;
            if (tn[0] == '@') {
                for (int c = 0; c < TC_COUNT; c++)
                    if (!strcmp(tn + 1, fp8c_tensor_class_names[c])) id = -1 - c, found = 1;
            } else {
                id = lookup(r, tn);
                found = id >= 0;
            }
            if (!found) {
                diag_error(r->d, ps->items[i]->mark, NULL, "plan: unknown tensor '%s'", tn);
                return -1;
            }
            g->params[i] = id;
        }
    }
    if (g->action == GPU_NONE && !g->gemm) r->p->nmissing++;
    return 0;
}

/* The plan's "kernels": name, source file, entry points with launch shapes, params, audit. */
static int read_kernels(R *r, const YamlNode *root) {
    const YamlNode *ks = yml_get(root, "kernels"), *gm = yml_get(root, "gemm");
    static const char *const gemms[] = {"cublaslt", "generated"};
    int which;
    if (gm && yml_enum(r->d, gm, gemms, 2, &which)) return -1;
    r->p->gemm = gm ? gemms[which] : "cublaslt";
    const YamlNode *tg = yml_get(root, "target");
    if (tg && yml_enum(r->d, tg, target_names, TGT_COUNT, &which)) return -1;
    r->p->target = tg ? target_names[which] : "cpu";
    if (!ks) return 0;
    if (yml_expect(r->d, ks, YN_SEQ, "plan 'kernels'")) return -1;
    r->p->nkernels = ks->n;
    r->p->kernels = arena_alloc(r->a, (size_t)(ks->n ? ks->n : 1) * sizeof(RtKernel));
    for (int i = 0; i < ks->n; i++) {
        const YamlNode *k = ks->items[i];
        RtKernel *K = &r->p->kernels[i];
        if (yml_expect(r->d, k, YN_MAP, "a kernel")) return -1;
        K->mark = k->mark;
        const YamlNode *nm = need(r, k, "name", YN_SCALAR), *fl = need(r, k, "file", YN_SCALAR), *tp = need(r, k, "template", YN_SCALAR),
                       *en = need(r, k, "entries", YN_SEQ), *ps = need(r, k, "params", YN_SEQ), *au = need(r, k, "audit", YN_SEQ);
        if (!nm || !fl || !tp || !en || !ps || !au) return -1;
        K->name = nm->str, K->file = fl->str, K->tmpl = tp->str;
        if (!plan_relative_path(K->file)) {
            diag_error(r->d, fl->mark, "kernel sources live under the plan directory, e.g. kernels/NAME.cu",
                       "plan: kernel file '%s' is not a plain relative path inside the plan directory", K->file);
            return -1;
        }
        for (const char *c = K->name; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) {
                diag_error(r->d, nm->mark, NULL, "plan: kernel name '%s' is not an identifier", K->name);
                return -1;
            }
        if (en->n < 1 || en->n > 4) {
            diag_error(r->d, en->mark, NULL, "plan: a kernel has 1 to 4 entries, not %d", en->n);
            return -1;
        }
        K->ne = en->n;
        for (int e = 0; e < en->n; e++) {
            const YamlNode *E = en->items[e];
            if (yml_expect(r->d, E, YN_MAP, "a kernel entry")) return -1;
            const YamlNode *sy = need(r, E, "symbol", YN_SCALAR), *gr = need(r, E, "grid", YN_SEQ), *bl = need(r, E, "block", YN_SEQ);
            int64_t smem;
            if (!sy || !gr || !bl || get_int(r, E, "smem", 0, 227 * 1024, &smem)) return -1;
            snprintf(K->e[e].symbol, sizeof K->e[e].symbol, "%s", sy->str);
            K->e[e].smem = (int)smem;
            if (gr->n != 3 || bl->n != 3) {
                diag_error(r->d, gr->mark, NULL, "plan: grid and block have 3 extents");
                return -1;
            }
            int64_t threads = 1;
            for (int d3 = 0; d3 < 3; d3++) {
                int64_t gv, bv;
                if (yml_int(r->d, gr->items[d3], 1, d3 == 0 ? 2147483647LL : 65535, &gv) || yml_int(r->d, bl->items[d3], 1, 1024, &bv)) return -1;
                K->e[e].grid[d3] = (int)gv, K->e[e].block[d3] = (int)bv;
                threads *= bv;
            }
            if (threads > 1024) {
                diag_error(r->d, bl->mark, NULL, "plan: a block of %lld threads (at most 1024)", (long long)threads);
                return -1;
            }
        }
        if (get_int(r, k, "scratch", 0, (int64_t)1 << 40, &K->scratch)) return -1;
        K->nparams = ps->n;
        if (ps->n > RT_MAX_KPARAMS) {
            diag_error(r->d, ps->mark, NULL, "plan: a kernel has at most %d params", RT_MAX_KPARAMS);
            return -1;
        }
        K->naudit = au->n < 4 ? au->n : 4;
        for (int a = 0; a < K->naudit; a++)
            if (yml_str(r->d, au->items[a], &K->audit[a])) return -1;
    }
    return 0;
}

static int read_step(R *r, const YamlNode *n, RtStep *s) {
    if (yml_expect(r->d, n, YN_MAP, "a plan step")) return -1;
    s->mark = n->mark;
    const YamlNode *opn = need(r, n, "op", YN_SCALAR), *args = need(r, n, "args", YN_MAP), *ints = need(r, n, "ints", YN_MAP),
                   *floats = need(r, n, "floats", YN_MAP);
    if (!opn || !args || !ints || !floats) return -1;
    const char *names[OP_COUNT_];
    for (int i = 0; i < OP_COUNT_; i++) names[i] = fp8c_op_info[i].name;
    int op;
    if (yml_enum(r->d, opn, names, OP_COUNT_, &op)) return -1;
    s->op = (OpKind)op;
    for (int k = 0; k < OP_MAX_ARGS; k++) s->args[k] = -1;
    char nm[64];
    const char *list = fp8c_op_info[op].args;
    int na = op_arg_count(s->op);
    const char *argnames[OP_MAX_ARGS];
    char store[OP_MAX_ARGS][64];
    for (int k = 0; k < na; k++) argnames[k] = op_arg_name(s->op, k, store[k], sizeof store[k]);
    if (yml_check_keys(r->d, args, "the step's args", argnames, na)) return -1;
    for (int k = 0; k < na; k++) {
        /* optional arguments are marked '?' in the op table */
        char mark[72];
        snprintf(mark, sizeof mark, "?%s", argnames[k]);
        int optional = strstr(list, mark) != NULL;
        const YamlNode *v = yml_get(args, argnames[k]);
        if (!v) {
            if (optional) continue;
            diag_error(r->d, args->mark, NULL, "plan: step '%s' lacks argument '%s'", fp8c_op_info[op].name, argnames[k]);
            return -1;
        }
        const char *tn;
        if (yml_str(r->d, v, &tn)) return -1;
        s->args[k] = lookup(r, tn);
        if (s->args[k] < 0) {
            diag_error(r->d, v->mark, NULL, "plan: unknown tensor '%s'", tn);
            return -1;
        }
    }
    int ni = op_int_count(s->op), nf = op_float_count(s->op);
    for (int k = 0; k < ni; k++)
        if (get_int(r, ints, op_int_name(s->op, k, nm, sizeof nm), 0, (int64_t)1 << 40, &s->ints[k])) return -1;
    for (int k = 0; k < nf; k++)
        if (get_float(r, floats, op_float_name(s->op, k, nm, sizeof nm), -1e30, 1e30, &s->floats[k])) return -1;
    const char *why = check_step(r->p, s);
    if (why) {
        diag_error(r->d, n->mark, NULL, "plan: invalid '%s' step: %s", fp8c_op_info[op].name, why);
        return -1;
    }
    return 0;
}

/* A unit is a step object (with "gpu" and an optional "refresh"), or a fused group:
 * {"fusion": KIND, "ops": [step, ...], "gpu": {...}}. */
static int read_unit(R *r, const YamlNode *n, Section sec, RtUnit *u, int *nops) {
    Plan *p = r->p;
    if (yml_expect(r->d, n, YN_MAP, "a program unit")) return -1;
    memset(u, 0, sizeof *u);
    u->mark = n->mark;
    u->first = p->nsteps[sec];
    const YamlNode *ops = yml_get(n, "ops"), *fu = yml_get(n, "fusion"), *rf = yml_get(n, "refresh");
    if (ops) {
        static const char *const keys[] = {"fusion", "ops", "gpu"};
        if (yml_check_keys(r->d, n, "a fused unit", keys, 3) || yml_expect(r->d, ops, YN_SEQ, "a fused unit's ops")) return -1;
        int kind = -1;
        if (!fu || yml_enum(r->d, fu, fuse_names, FUSE_COUNT, &kind)) {
            if (!fu) diag_error(r->d, n->mark, NULL, "plan: a fused unit names its \"fusion\"");
            return -1;
        }
        if (kind == FUSE_NONE || ops->n < 1) {
            diag_error(r->d, ops->mark, NULL, "plan: a fused unit has a fusion kind and at least one op");
            return -1;
        }
        u->fusion = (FuseKind)kind;
        u->n = ops->n;
    } else {
        u->n = 1;
        if (rf && (rf->kind != YN_SCALAR || strcmp(rf->str, "true"))) {
            diag_error(r->d, rf->mark, NULL, "plan: \"refresh\" is true or absent");
            return -1;
        }
        u->refresh = rf != NULL;
    }
    if (p->nsteps[sec] + u->n > *nops) {
        *nops = 2 * (p->nsteps[sec] + u->n);
        RtStep *grown = arena_alloc(r->a, (size_t)*nops * sizeof(RtStep));
        memcpy(grown, p->steps[sec], (size_t)p->nsteps[sec] * sizeof(RtStep));
        p->steps[sec] = grown;
    }
    for (int i = 0; i < u->n; i++) {
        RtStep *s = &p->steps[sec][p->nsteps[sec]];
        memset(s, 0, sizeof *s);
        if (read_step(r, ops ? ops->items[i] : n, s)) return -1;
        p->nsteps[sec]++;
    }
    if (u->refresh && p->steps[sec][u->first].op != OP_QUANTIZE) {
        diag_error(r->d, rf->mark, NULL, "plan: only a weight-copy quantize is a refresh unit");
        return -1;
    }
    return read_gpu(r, yml_get(n, "gpu"), &p->steps[sec][u->first], &u->gpu);
}

static int read_section(R *r, Section sec, const YamlNode *list) {
    Plan *p = r->p;
    int nops = list->n + 16;
    p->nunits[sec] = list->n;
    p->units[sec] = arena_alloc(r->a, (size_t)(list->n ? list->n : 1) * sizeof(RtUnit));
    p->steps[sec] = arena_alloc(r->a, (size_t)nops * sizeof(RtStep));
    p->nsteps[sec] = 0;
    for (int i = 0; i < list->n; i++)
        if (read_unit(r, list->items[i], sec, &p->units[sec][i], &nops)) return -1;
    return 0;
}

/* The compiler's memory verifier (compiler/memplan.c) over the plan as read: a hand-edited or
 * damaged plan whose program would make two live tensors share bytes is refused, not run. */
static void verify_memory(R *r, const YamlNode *prog) {
    const Plan *p = r->p;
    Graph g;
    memset(&g, 0, sizeof g);
    g.nt = p->nt;
    g.t = calloc((size_t)(p->nt ? p->nt : 1), sizeof *g.t);
    int ns = 0, nu = 0;
    for (int sec = 0; sec < SEC_COUNT; sec++) ns += p->nsteps[sec], nu += p->nunits[sec];
    g.s = calloc((size_t)(ns ? ns : 1), sizeof *g.s);
    g.u = calloc((size_t)(nu ? nu : 1), sizeof *g.u);
    int *ids = malloc((size_t)(ns ? ns : 1) * sizeof(int));
    for (int i = 0; i < p->nt; i++) {
        const RtTensor *t = &p->t[i];
        g.t[i] = (GTensor){.name = t->name, .dtype = t->dtype, .cls = t->cls, .offset = t->offset,
                           .bytes = t->n * fp8c_tensor_dtype_bytes[t->dtype]};
    }
    memcpy(g.class_bytes, p->class_bytes, sizeof g.class_bytes);
    g.losses = p->losses, g.tokens = p->tokens, g.targets = p->targets;
    for (int sec = 0, base = 0; sec < SEC_COUNT; base += p->nsteps[sec], sec++) {
        for (int i = 0; i < p->nsteps[sec]; i++) {
            GStep *gs = &g.s[base + i];
            const RtStep *st = &p->steps[sec][i];
            gs->op = st->op, gs->sec = (Section)sec, gs->module = -1;
            memcpy(gs->args, st->args, sizeof gs->args);
            memcpy(gs->ints, st->ints, sizeof gs->ints);
            ids[base + i] = base + i;
        }
        g.ns += p->nsteps[sec];
        for (int u = 0; u < p->nunits[sec]; u++) {
            const RtUnit *ru = &p->units[sec][u];
            g.u[g.nu++] = (SUnit){.kind = ru->fusion, .steps = ids + base + ru->first, .nsteps = ru->n, .sec = (Section)sec};
        }
    }
    char err[1024];
    if (mem_verify(&g, err, sizeof err, NULL)) diag_error(r->d, prog->mark, "recompile it with fp8c compile", "plan: memory: %s", err);
    free(ids);
    free(g.u);
    free(g.s);
    free(g.t);
}

static int read_plan(Arena *a, Diag *d, const YamlNode *root, const char *text, size_t len, const char *dir, Plan *p);

int plan_load(Arena *a, Diag *d, const char *dir, Plan *p) {
    memset(p, 0, sizeof *p);
    char path[1100];
    snprintf(path, sizeof path, "%s/plan.json", dir);
    YamlNode *root = yml_load_file_max(a, d, path, PLAN_MAX_BYTES);
    if (!root) return -1;
    const SrcFile *f = &d->files[d->nfiles - 1];
    return read_plan(a, d, root, f->text, f->len, dir, p);
}

int plan_parse(Arena *a, Diag *d, const char *name, const char *text, size_t len, Plan *p) {
    memset(p, 0, sizeof *p);
    int file = diag_add_file(d, name, text, len);
    YamlNode *root = yml_parse(a, d, file, text, len);
    return root ? read_plan(a, d, root, text, len, ".", p) : -1;
}

static int read_plan(Arena *a, Diag *d, const YamlNode *root, const char *text, size_t len, const char *dir, Plan *p) {
    snprintf(p->dir, sizeof p->dir, "%s", dir);
    int errors0 = d->errors;
    p->hash = fnv1a(text, len);
    R r = {d, p, a, NULL, 0};
    int rc = -1;
    int64_t version;
    if (yml_expect(d, root, YN_MAP, "plan.json")) goto out;
    if (get_int(&r, root, "version", 0, 1000, &version)) goto out;
    if (version != FP8C_PLAN_VERSION) {
        diag_error(d, yml_get(root, "version")->mark, "recompile it with this fp8c", "plan format version %lld; this fp8c reads version %d",
                   (long long)version, FP8C_PLAN_VERSION);
        goto out;
    }
    if (!yml_get(root, "program")) {
        diag_error(d, root->mark, "recompile the plan with fp8c compile", "plan has no training program");
        goto out;
    }
    if (read_model(&r, root) || read_train(&r, root) || read_tensors(&r, root) || read_kernels(&r, root)) goto out;
    const YamlNode *io = need(&r, root, "program_inputs", YN_MAP), *prog = need(&r, root, "program", YN_MAP);
    if (!io || !prog) goto out;
    const char *keys[3] = {"tokens", "targets", "losses"};
    int *ids[3] = {&p->tokens, &p->targets, &p->losses};
    for (int k = 0; k < 3; k++) {
        const YamlNode *v = need(&r, io, keys[k], YN_SCALAR);
        if (!v) goto out;
        *ids[k] = lookup(&r, v->str);
        if (*ids[k] < 0) {
            diag_error(d, v->mark, NULL, "plan: unknown tensor '%s'", v->str);
            goto out;
        }
    }
    const YamlNode *el = yml_get(io, "expert_load");
    if (el) {
        if (yml_expect(d, el, YN_SEQ, "program_inputs.expert_load")) goto out;
        p->expert_load = arena_alloc(a, (size_t)(el->n ? el->n : 1) * sizeof *p->expert_load);
        for (int k = 0; k < el->n; k++) {
            int id = el->items[k]->kind == YN_SCALAR ? lookup(&r, el->items[k]->str) : -1;
            if (id < 0 || p->t[id].dtype != TD_F32 || p->t[id].cls != TC_SCALE) {
                diag_error(d, el->items[k]->mark, NULL, "plan: expert_load names no f32 scale-class tensor");
                goto out;
            }
            p->expert_load[p->n_expert_load++] = id;
        }
    }
    int64_t M = p->train.micro_batch * p->train.seq_len;
    if (p->t[p->tokens].n != M || p->t[p->targets].n != M || p->t[p->tokens].dtype != TD_I32 ||
        p->t[p->targets].dtype != TD_I32 || p->t[p->losses].n != M || p->t[p->losses].dtype != TD_F32) {
        diag_error(d, io->mark, NULL, "plan: program inputs do not match micro_batch x seq_len = %lld", (long long)M);
        goto out;
    }
    for (int sec = 0; sec < SEC_COUNT; sec++) {
        const YamlNode *list = need(&r, prog, fp8c_section_names[sec], YN_SEQ);
        if (!list) goto out;
        if (read_section(&r, (Section)sec, list)) goto out;
    }
    if (d->errors == errors0) verify_memory(&r, prog);
    rc = d->errors > errors0 ? -1 : 0;
out:
    free(r.hash_slots);
    return d->errors > errors0 ? -1 : rc;
}
