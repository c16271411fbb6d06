/* policy.c: policy.yaml -> Policy: the file's layers (defaults, low_bit, rules, overrides) with
 * the source mark of every value. It checks each entry on its own (keys, enums, ranges); what
 * entries mean together for a given model is resolve.c's job. */
#include "fp8c.h"

#include <string.h>

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *const dtype_names[DT_COUNT] = {"none", "fp32", "bf16", "fp16", "fp8",
                                           "fp4",  "e4m3", "e5m2", "e2m1", "e8m0"};
const char *const scaling_names[] = {"delayed", "current", "static"};
const char *const algo_names[] = {"max", "most_recent"};
const char *const partial_names[] = {"ceil", "refuse"};
const char *const loss_scaling_names[] = {"none", "static", "dynamic"};
const char *const operand_names[OP_COUNT] = {"x", "w", "dy"};
const char *const qfield_names[QF_COUNT] = {"format", "scaling", "tile",   "scale_format", "history",
                                            "algo",   "margin",  "interval", "scale", "partial"};
const char *const global_names[G_COUNT] = {
    "master_weights",         "optimizer_state",             "grad_accum",
    "loss",                   "loss_scaling.mode",           "loss_scaling.scale",
    "loss_scaling.init",      "loss_scaling.growth_factor",  "loss_scaling.backoff_factor",
    "loss_scaling.growth_interval"};

int dtype_bits(Dtype t) {
    static const int bits[DT_COUNT] = {0, 32, 16, 16, 8, 4, 8, 8, 4, 8};
    return bits[t];
}

const char *field_name(int f, char *buf, size_t n) {
    if (f == F_PARAMS || f == F_COMPUTE) {
        snprintf(buf, n, "%s", f == F_PARAMS ? "params" : "compute");
        return buf;
    }
    int op = (f - F_Q0) / QF_COUNT, qf = (f - F_Q0) % QF_COUNT;
    snprintf(buf, n, "%s.%s", operand_names[op], qfield_names[qf]);
    return buf;
}

static const char *const top_keys[] = {"name",       "description",   "recipe",     "params",
                                       "compute",    "master_weights", "optimizer_state", "grad_accum",
                                       "loss",       "loss_scaling",  "low_bit",    "rules",
                                       "overrides"};

/* The names each field accepts, as sparse tables indexed by Dtype (NULL: not accepted). */
static const char *const param_dtypes[DT_COUNT] = {[DT_FP32] = "fp32", [DT_BF16] = "bf16", [DT_FP16] = "fp16",
                                                   [DT_E4M3] = "e4m3", [DT_E5M2] = "e5m2"};
static const char *const hi_dtypes[DT_COUNT] = {[DT_FP32] = "fp32", [DT_BF16] = "bf16", [DT_FP16] = "fp16"};
static const char *const compute_dtypes[DT_COUNT] = {[DT_FP32] = "fp32", [DT_BF16] = "bf16", [DT_FP16] = "fp16",
                                                     [DT_FP8] = "fp8",   [DT_FP4] = "fp4"};
static const char *const elem_formats[DT_COUNT] = {[DT_E4M3] = "e4m3", [DT_E5M2] = "e5m2", [DT_E2M1] = "e2m1"};
static const char *const scale_formats[DT_COUNT] = {[DT_FP32] = "fp32", [DT_E8M0] = "e8m0"};
static const char *const master_dtypes[DT_COUNT] = {[DT_NONE] = "none", [DT_FP32] = "fp32"};
static const char *const state_dtypes[DT_COUNT] = {[DT_FP32] = "fp32", [DT_BF16] = "bf16"};

static void put(FieldSet *fs, int f, Val v, Mark m) {
    fs->set |= UINT64_C(1) << f;
    fs->v[f] = v;
    fs->m[f] = m;
}

static void gput(GlobalSet *g, GlobalField f, Val v, Mark m) {
    g->set |= UINT32_C(1) << f;
    g->v[f] = v;
    g->m[f] = m;
}

static int read_tile(Diag *d, const YamlNode *n, Val *v) {
    if (n->kind == YN_SCALAR && !strcmp(n->str, "tensor")) {
        *v = (Val){0, 0, 0};
        return 0;
    }
    if (n->kind != YN_SEQ || n->n != 2) {
        diag_error(d, n->mark, "write 'tensor' (one scale per tensor) or [rows, cols], e.g. [1, 128]",
                   "a tile is 'tensor' or [rows, cols]");
        return -1;
    }
    int64_t r, c;
    if (yml_int(d, n->items[0], 1, 1 << 16, &r) || yml_int(d, n->items[1], 1, 1 << 16, &c)) return -1;
    *v = (Val){r, c, 0};
    return 0;
}

/* One operand's quantization map: x: {format: e4m3, scaling: current, tile: [1, 128]}. */
static int read_quant(Diag *d, const YamlNode *n, Operand op, const char *where, FieldSet *fs) {
    char what[128];
    snprintf(what, sizeof what, "%s.%s", where, operand_names[op]);
    if (yml_expect(d, n, YN_MAP, what)) return -1;
    int bad = yml_check_keys(d, n, what, qfield_names, QF_COUNT);
    for (int i = 0; i < n->n; i++) {
        const YamlNode *k = n->items[2 * i], *v = n->items[2 * i + 1];
        int qf = -1, e;
        for (int j = 0; j < QF_COUNT; j++)
            if (!strcmp(k->str, qfield_names[j])) qf = j;
        if (qf < 0) continue;
        Val val = {0, 0, 0};
        int rc = 0;
        switch ((QField)qf) {
        case QF_FORMAT: rc = yml_enum(d, v, elem_formats, DT_COUNT, &e); val.i = e; break;
        case QF_SCALING: rc = yml_enum(d, v, scaling_names, 3, &e); val.i = e; break;
        case QF_TILE: rc = read_tile(d, v, &val); break;
        case QF_SCALE_FORMAT: rc = yml_enum(d, v, scale_formats, DT_COUNT, &e); val.i = e; break;
        case QF_HISTORY: rc = yml_int(d, v, 1, 1 << 16, &val.i); break;
        case QF_ALGO: rc = yml_enum(d, v, algo_names, 2, &e); val.i = e; break;
        case QF_MARGIN: rc = yml_int(d, v, 0, 64, &val.i); break;
        case QF_INTERVAL: rc = yml_int(d, v, 1, 1 << 20, &val.i); break;
        case QF_SCALE: rc = yml_float(d, v, 1e-30, 1e30, &val.d); break;
        case QF_PARTIAL: rc = yml_enum(d, v, partial_names, 2, &e); val.i = e; break;
        case QF_COUNT: break;
        }
        if (rc)
            bad = 1;
        else
            put(fs, F_Q(op, qf), val, v->mark);
    }
    return bad ? -1 : 0;
}

/* The per-module fields a rule or override may set. `key_ok` tells which other keys
 * (like `match`) the caller handles. */
static int read_fields(Diag *d, const YamlNode *n, const char *where, const char *extra_key, FieldSet *fs) {
    static const char *const keys[] = {"params", "compute", "x", "w", "dy", "match"};
    int nkeys = extra_key ? 6 : 5;
    int bad = yml_check_keys(d, n, where, keys, nkeys);
    int e;
    const YamlNode *v;
    if ((v = yml_get(n, "params"))) {
        if (yml_enum(d, v, param_dtypes, DT_COUNT, &e)) bad = 1;
        else put(fs, F_PARAMS, (Val){e, 0, 0}, v->mark);
    }
    if ((v = yml_get(n, "compute"))) {
        if (yml_enum(d, v, compute_dtypes, DT_COUNT, &e)) bad = 1;
        else put(fs, F_COMPUTE, (Val){e, 0, 0}, v->mark);
    }
    for (int op = 0; op < OP_COUNT; op++)
        if ((v = yml_get(n, operand_names[op])) && read_quant(d, v, (Operand)op, where, fs)) bad = 1;
    return bad ? -1 : 0;
}

static int read_loss_scaling(Diag *d, const YamlNode *n, GlobalSet *g) {
    if (yml_expect(d, n, YN_MAP, "loss_scaling")) return -1;
    const YamlNode *mode = yml_get(n, "mode");
    if (!mode) {
        diag_error(d, n->mark, "e.g. {mode: dynamic, init: 65536}", "loss_scaling needs 'mode' (none, static or dynamic)");
        return -1;
    }
    int m;
    if (yml_enum(d, mode, loss_scaling_names, 3, &m)) return -1;
    gput(g, G_LS_MODE, (Val){m, 0, 0}, mode->mark);
    static const char *const none_keys[] = {"mode"};
    static const char *const static_keys[] = {"mode", "scale"};
    static const char *const dyn_keys[] = {"mode", "init", "growth_factor", "backoff_factor", "growth_interval"};
    const char *const *keys = m == LS_NONE ? none_keys : m == LS_STATIC ? static_keys : dyn_keys;
    int nkeys = m == LS_NONE ? 1 : m == LS_STATIC ? 2 : 5;
    char what[64];
    snprintf(what, sizeof what, "loss_scaling (mode %s)", loss_scaling_names[m]);
    int bad = yml_check_keys(d, n, what, keys, nkeys);
    const YamlNode *v;
    Val val = {0, 0, 0};
    if ((v = yml_get(n, "scale")) && !yml_float(d, v, 1e-30, 1e30, &val.d)) gput(g, G_LS_SCALE, val, v->mark);
    if ((v = yml_get(n, "init")) && !yml_float(d, v, 1e-30, 1e30, &val.d)) gput(g, G_LS_INIT, val, v->mark);
    if ((v = yml_get(n, "growth_factor")) && !yml_float(d, v, 1.0000001, 1e6, &val.d)) gput(g, G_LS_GROWTH, val, v->mark);
    if ((v = yml_get(n, "backoff_factor")) && !yml_float(d, v, 1e-6, 0.9999999, &val.d)) gput(g, G_LS_BACKOFF, val, v->mark);
    val.d = 0;
    if ((v = yml_get(n, "growth_interval")) && !yml_int(d, v, 1, INT32_MAX, &val.i)) gput(g, G_LS_INTERVAL, val, v->mark);
    return bad || d->errors ? -1 : 0;
}

static int read_low_bit(Arena *a, Diag *d, const YamlNode *n, Policy *p) {
    static const char *const keys[] = {"modules", "x", "w", "dy"};
    if (yml_expect(d, n, YN_MAP, "low_bit")) return -1;
    p->has_low_bit = 1;
    p->low_bit_mark = n->mark;
    int bad = yml_check_keys(d, n, "low_bit", keys, N(keys));
    const YamlNode *mods = yml_get(n, "modules");
    if (mods) {
        if (mods->kind == YN_SCALAR) {
            diag_error(d, mods->mark, "write a list: modules: [\"blocks.*.ffn.**.*_proj\"]", "low_bit.modules must be a list of paths or patterns");
            return -1;
        }
        if (yml_expect(d, mods, YN_SEQ, "low_bit.modules")) return -1;
        p->low_bit_mods = arena_alloc(a, (size_t)(mods->n ? mods->n : 1) * sizeof *p->low_bit_mods);
        for (int i = 0; i < mods->n; i++) {
            const char *s;
            if (yml_str(d, mods->items[i], &s)) { bad = 1; continue; }
            Selector *sel = &p->low_bit_mods[p->n_low_bit_mods++];
            sel->pattern = s;
            sel->mark = mods->items[i]->mark;
            sel->is_glob = strchr(s, '*') != NULL;
        }
    } else if (!p->recipe->low_bit) {
        diag_error(d, n->mark, "add modules: [\"blocks.*.attn.*_proj\", \"blocks.*.ffn.**.*_proj\"]",
                   "low_bit has no 'modules' and recipe '%s' has no low-bit modules to default to", p->recipe->name);
        bad = 1;
    } else {
        p->low_bit_mods_from_recipe = 1;
        int cnt = 0;
        while (p->recipe->low_bit[cnt]) cnt++;
        p->low_bit_mods = arena_alloc(a, (size_t)cnt * sizeof *p->low_bit_mods);
        for (int i = 0; i < cnt; i++)
            p->low_bit_mods[p->n_low_bit_mods++] = (Selector){.pattern = p->recipe->low_bit[i], .mark = n->mark, .is_glob = 1};
    }
    for (int op = 0; op < OP_COUNT; op++) {
        const YamlNode *q = yml_get(n, operand_names[op]);
        if (q && read_quant(d, q, (Operand)op, "low_bit", &p->low_bit_fs)) bad = 1;
    }
    return bad ? -1 : 0;
}

static int read_rules(Arena *a, Diag *d, const YamlNode *n, Policy *p) {
    if (yml_expect(d, n, YN_SEQ, "rules")) return -1;
    p->rules = arena_alloc(a, (size_t)(n->n ? n->n : 1) * sizeof *p->rules);
    int bad = 0;
    for (int i = 0; i < n->n; i++) {
        const YamlNode *r = n->items[i];
        if (yml_expect(d, r, YN_MAP, "a rule")) { bad = 1; continue; }
        const YamlNode *m = yml_get(r, "match");
        if (!m) {
            diag_error(d, r->mark, "e.g. - match: \"blocks.0.**\"", "a rule needs 'match': the path or pattern it applies to");
            bad = 1;
            continue;
        }
        Selector *sel = &p->rules[p->nrules];
        if (yml_str(d, m, &sel->pattern)) { bad = 1; continue; }
        sel->mark = m->mark;
        sel->is_glob = strchr(sel->pattern, '*') != NULL;
        if (read_fields(d, r, "a rule", "match", &sel->fs)) { bad = 1; continue; }
        if (!sel->fs.set)
            diag_warn(d, m->mark, 0, NULL, "rule for '%s' sets nothing", sel->pattern);
        p->nrules++;
    }
    return bad ? -1 : 0;
}

static int read_overrides(Arena *a, Diag *d, const YamlNode *n, Policy *p) {
    if (yml_expect(d, n, YN_MAP, "overrides")) return -1;
    p->overrides = arena_alloc(a, (size_t)(n->n ? n->n : 1) * sizeof *p->overrides);
    int bad = 0;
    for (int i = 0; i < n->n; i++) {
        const YamlNode *k = n->items[2 * i], *v = n->items[2 * i + 1];
        if (strchr(k->str, '*')) {
            diag_error(d, k->mark, "move it to 'rules' as - match: \"...\"", "overrides take exact module paths, not patterns ('%s')", k->str);
            bad = 1;
            continue;
        }
        char what[256];
        snprintf(what, sizeof what, "override '%.200s'", k->str);
        if (yml_expect(d, v, YN_MAP, what)) { bad = 1; continue; }
        Selector *sel = &p->overrides[p->noverrides];
        sel->pattern = k->str;
        sel->mark = k->mark;
        if (read_fields(d, v, what, NULL, &sel->fs)) { bad = 1; continue; }
        p->noverrides++;
    }
    return bad ? -1 : 0;
}

static int read_enum_global(Diag *d, const YamlNode *root, const char *key, const char *const *names,
                            GlobalSet *g, GlobalField f) {
    const YamlNode *v = yml_get(root, key);
    int e;
    if (!v) return 0;
    if (yml_enum(d, v, names, DT_COUNT, &e)) return -1;
    gput(g, f, (Val){e, 0, 0}, v->mark);
    return 0;
}

int pol_load(Arena *a, Diag *d, const YamlNode *root, const char *file, Policy *p) {
    memset(p, 0, sizeof *p);
    p->file = file;
    p->name = "policy";
    p->recipe_mark = NO_MARK;
    if (yml_expect(d, root, YN_MAP, "a policy file")) return -1;
    int bad = yml_check_keys(d, root, "the policy", top_keys, N(top_keys));
    const YamlNode *v;
    if ((v = yml_get(root, "name")) && yml_str(d, v, &p->name)) bad = 1;
    p->recipe = recipe_find("bf16");
    if ((v = yml_get(root, "recipe"))) {
        int e;
        if (yml_enum(d, v, recipe_names, recipe_count, &e)) return -1;
        p->recipe = recipe_find(recipe_names[e]);
        p->recipe_mark = v->mark;
    }
    int e;
    if ((v = yml_get(root, "params"))) {
        if (yml_enum(d, v, param_dtypes, DT_COUNT, &e)) bad = 1;
        else put(&p->defaults, F_PARAMS, (Val){e, 0, 0}, v->mark);
    }
    if ((v = yml_get(root, "compute"))) {
        if (v->kind == YN_SCALAR && (!strcmp(v->str, "fp8") || !strcmp(v->str, "fp4"))) {
            diag_error(d, v->mark, "list the modules under low_bit.modules, or use a rule with compute: fp8",
                       "the default compute dtype is for modules that are not low-bit (fp32, bf16 or fp16)");
            bad = 1;
        } else if (yml_enum(d, v, hi_dtypes, DT_COUNT, &e)) {
            bad = 1;
        } else {
            put(&p->defaults, F_COMPUTE, (Val){e, 0, 0}, v->mark);
        }
    }
    bad |= read_enum_global(d, root, "master_weights", master_dtypes, &p->globals, G_MASTER_WEIGHTS);
    bad |= read_enum_global(d, root, "optimizer_state", state_dtypes, &p->globals, G_OPTIMIZER_STATE);
    bad |= read_enum_global(d, root, "grad_accum", state_dtypes, &p->globals, G_GRAD_ACCUM);
    bad |= read_enum_global(d, root, "loss", state_dtypes, &p->globals, G_LOSS);
    if ((v = yml_get(root, "loss_scaling")) && read_loss_scaling(d, v, &p->globals)) bad = 1;
    if ((v = yml_get(root, "low_bit")) && read_low_bit(a, d, v, p)) bad = 1;
    if ((v = yml_get(root, "rules")) && read_rules(a, d, v, p)) bad = 1;
    if ((v = yml_get(root, "overrides")) && read_overrides(a, d, v, p)) bad = 1;
    return bad || d->errors ? -1 : 0;
}
