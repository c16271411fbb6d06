/* resolve.c: Model + Policy -> Resolution: every module's precision, field by field, with the
 * chain of layers that set it (DESIGN.md section 5). Layers, lowest first: recipe < the file's
 * defaults < low_bit < rules < overrides. A higher layer wins; two entries of one layer that
 * disagree are an error naming both; exact paths must exist; the target must be able to run
 * what was chosen. Problems that repeat over many modules are reported once, with a count. */
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

const char *const layer_names[L_COUNT] = {"recipe", "defaults", "low_bit", "rule", "override"};
const char *const target_names[TGT_COUNT] = {"sm_89", "sm_90a", "sm_100a", "cpu"};

#define BIT(f) (UINT64_C(1) << (f))

/* ---- glob matching ---- */

/* `*` inside one segment: any run of characters. Greedy with one backtrack point: linear. */
static int seg_match(const char *p, size_t pn, const char *s, size_t sn) {
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (pi < pn && p[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return 0;
        }
    }
    while (pi < pn && p[pi] == '*') pi++;
    return pi == pn;
}

#define MAX_SEGS 64
static int split(const char *s, const char **seg, size_t *len) {
    int n = 0;
    for (;;) {
        const char *dot = strchr(s, '.');
        if (n == MAX_SEGS) return -1;
        seg[n] = s;
        len[n] = dot ? (size_t)(dot - s) : strlen(s);
        n++;
        if (!dot) return n;
        s = dot + 1;
    }
}

int res_glob_match(const char *pattern, const char *path) {
    const char *ps[MAX_SEGS], *ss[MAX_SEGS];
    size_t pl[MAX_SEGS], sl[MAX_SEGS];
    int np = split(pattern, ps, pl), ns = split(path, ss, sl);
    if (np < 0 || ns < 0) return 0;
    /* ok[i][j]: pattern segments i.. match path segments j.. */
    unsigned char ok[MAX_SEGS + 1][MAX_SEGS + 1];
    memset(ok, 0, sizeof ok);
    ok[np][ns] = 1;
    for (int i = np - 1; i >= 0; i--) {
        int dstar = pl[i] == 2 && ps[i][0] == '*' && ps[i][1] == '*';
        for (int j = ns; j >= 0; j--) {
            if (dstar)
                ok[i][j] = ok[i + 1][j] || (j < ns && ok[i][j + 1]);
            else
                ok[i][j] = j < ns && ok[i + 1][j + 1] && seg_match(ps[i], pl[i], ss[j], sl[j]);
        }
    }
    return ok[0][0];
}

/* ---- aggregated problems: one message per cause, however many modules it hits ---- */

typedef struct {
    char key[300];
    Mark mark;
    int is_warning;
    char msg[600];
    char hint[300];
    Mark note_mark;
    char note[300];
    char origin[64]; /* "from recipe X" when the recipe decided it */
    const char *first;
    int count;
} Problem;

typedef struct {
    Problem *p;
    int n, cap;
} Problems;

static Problem *problem(Problems *ps, const char *key, const char *path) {
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].key, key)) {
            ps->p[i].count++;
            return NULL;
        }
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 16;
        ps->p = xrealloc(ps->p, (size_t)ps->cap * sizeof *ps->p);
    }
    Problem *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->note_mark = NO_MARK;
    p->first = path;
    p->count = 1;
    return p;
}

static void flush_problems(Diag *d, Problems *ps) {
    for (int i = 0; i < ps->n; i++) {
        Problem *p = &ps->p[i];
        char msg[800], where[160] = "";
        if (p->count > 1)
            snprintf(where, sizeof where, "%s and %d more module%s", p->first, p->count - 1, p->count > 2 ? "s" : "");
        else if (p->first)
            snprintf(where, sizeof where, "%s", p->first);
        if (p->origin[0] || where[0])
            snprintf(msg, sizeof msg, "%s (%s%s%s)", p->msg, p->origin, p->origin[0] && where[0] ? "; " : "", where);
        else
            snprintf(msg, sizeof msg, "%s", p->msg);
        if (p->is_warning)
            diag_warn(d, p->mark, 0, p->hint[0] ? p->hint : NULL, "%s", msg);
        else
            diag_error(d, p->mark, p->hint[0] ? p->hint : NULL, "%s", msg);
        if (p->note[0]) diag_note(d, p->note_mark, "%s", p->note);
    }
    free(ps->p);
    ps->p = NULL;
    ps->n = ps->cap = 0;
}

/* ---- contributions ---- */

static int val_eq(Val a, Val b) { return a.i == b.i && a.j == b.j && a.d == b.d; }

static void contribute(FieldRes *fr, Layer layer, Val v, Mark m, int sel) {
    if (fr->n == RES_MAX_CONTRIB) return; /* only more same-valued rules: explain shows the first ones */
    fr->c[fr->n++] = (Contrib){layer, v, m, sel};
}

static int has_params_field(const Module *mod) { return mod->kind != MK_ATTENTION && mod->kind != MK_LOSS; }

typedef struct {
    Arena *a;
    Diag *d;
    const Model *m;
    const Policy *p;
    Resolution *r;
    Problems probs;
} Ctx;

static int recipe_low_bit(const Recipe *rc, const Module *mod) {
    if (mod->kind != MK_LINEAR || !rc->low_bit) return 0;
    for (int i = 0; rc->low_bit[i]; i++)
        if (res_glob_match(rc->low_bit[i], mod->path)) return 1;
    return 0;
}

static void apply_recipe(Ctx *c, ModRes *mr) {
    const Recipe *rc = c->p->recipe;
    const Module *mod = mr->mod;
    if (has_params_field(mod)) contribute(&mr->f[F_PARAMS], L_RECIPE, (Val){rc->params, 0, 0}, NO_MARK, -1);
    Dtype comp = recipe_low_bit(rc, mod) ? DT_FP8 : mod->kind == MK_LOSS ? (Dtype)rc->globals.v[G_LOSS].i : rc->compute;
    if (mod->kind == MK_ROUTER && rc->router != DT_NONE) comp = rc->router;
    contribute(&mr->f[F_COMPUTE], L_RECIPE, (Val){comp, 0, 0}, NO_MARK, -1);
    if (mod->kind != MK_LINEAR) return;
    for (int f = F_Q0; f < NFIELDS; f++) contribute(&mr->f[f], L_RECIPE, rc->quant.v[f], NO_MARK, -1);
}

static void apply_defaults(Ctx *c, ModRes *mr) {
    const FieldSet *fs = &c->p->defaults;
    const Module *mod = mr->mod;
    if ((fs->set & BIT(F_PARAMS)) && has_params_field(mod))
        contribute(&mr->f[F_PARAMS], L_DEFAULTS, fs->v[F_PARAMS], fs->m[F_PARAMS], -1);
    if (mod->kind == MK_LOSS) {
        const GlobalSet *g = &c->p->globals;
        if (g->set & (UINT32_C(1) << G_LOSS))
            contribute(&mr->f[F_COMPUTE], L_DEFAULTS, g->v[G_LOSS], g->m[G_LOSS], -1);
        return;
    }
    /* The default compute dtype is for modules that are not low-bit: it does not demote the
     * recipe's FP8 linears (that is what rules and overrides are for). */
    int recipe_lb = mr->f[F_COMPUTE].c[0].v.i == DT_FP8;
    int pinned_router = mod->kind == MK_ROUTER && c->p->recipe->router != DT_NONE; /* a rule may still change it */
    if ((fs->set & BIT(F_COMPUTE)) && !recipe_lb && !pinned_router)
        contribute(&mr->f[F_COMPUTE], L_DEFAULTS, fs->v[F_COMPUTE], fs->m[F_COMPUTE], -1);
}

/* Apply a rule's or override's fields. A glob quietly skips fields its module lacks (a
 * `blocks.0.**` rule with `x:` does not mean the norms); an exact path naming such a module
 * is told why. */
static void apply_fields(Ctx *c, ModRes *mr, const FieldSet *fs, Layer layer, int sel_idx, const Selector *sel) {
    const Module *mod = mr->mod;
    for (int f = 0; f < NFIELDS; f++) {
        if (!(fs->set & BIT(f))) continue;
        int applicable = f == F_PARAMS ? has_params_field(mod) : f == F_COMPUTE ? 1 : mod->kind == MK_LINEAR;
        if (f == F_COMPUTE && (fs->v[f].i == DT_FP8 || fs->v[f].i == DT_FP4) && mod->kind != MK_LINEAR)
            applicable = 0;
        if (!applicable) {
            if (!sel->is_glob) {
                char key[300], fname[32];
                snprintf(key, sizeof key, "na:%d:%d:%d", layer, sel_idx, f);
                Problem *p = problem(&c->probs, key, NULL);
                if (p) {
                    p->mark = fs->m[f];
                    snprintf(p->msg, sizeof p->msg, "%s: a %s module has no '%s' to set%s", mod->path,
                             model_kind_name(c->m, mod->kind), field_name(f, fname, sizeof fname),
                             f == F_COMPUTE ? " in low precision: only linear modules run low-bit" : "");
                }
            }
            continue;
        }
        FieldRes *fr = &mr->f[f];
        if (layer == L_RULE) {
            for (int k = 0; k < fr->n; k++) {
                const Contrib *o = &fr->c[k];
                if (o->layer != L_RULE || val_eq(o->v, fs->v[f])) continue;
                char key[300], fname[32], a[64], b[64], locb[512];
                snprintf(key, sizeof key, "conflict:%d:%d:%d", o->sel, sel_idx, f);
                Problem *p = problem(&c->probs, key, mod->path);
                if (!p) break;
                field_name(f, fname, sizeof fname);
                res_format_value(f, &o->v, a, sizeof a);
                res_format_value(f, &fs->v[f], b, sizeof b);
                p->mark = fs->m[f];
                snprintf(p->msg, sizeof p->msg, "rules '%s' and '%s' give %s different values (%s here, %s at %s)",
                         c->p->rules[o->sel].pattern, sel->pattern, fname, b, a, diag_loc(c->d, o->mark, 1, locb, sizeof locb));
                snprintf(p->hint, sizeof p->hint, "rules of one layer never override each other: narrow a pattern, or use an exact override");
                p->note_mark = o->mark;
                snprintf(p->note, sizeof p->note, "the other rule sets %s = %s here", fname, a);
                break;
            }
        }
        contribute(fr, layer, fs->v[f], fs->m[f], sel_idx);
    }
}

/* Up to three existing paths closest to `want`, as a hint. */
static void closest_paths(const Model *m, const char *want, char *hint, size_t n) {
    int best[3] = {-1, -1, -1}, bd[3] = {1 << 30, 1 << 30, 1 << 30};
    for (int i = 0; i < m->nmods; i++) {
        int dist = edit_distance(want, m->mods[i].path);
        for (int k = 0; k < 3; k++)
            if (dist < bd[k]) {
                for (int j = 2; j > k; j--) bd[j] = bd[j - 1], best[j] = best[j - 1];
                bd[k] = dist;
                best[k] = i;
                break;
            }
    }
    size_t o = (size_t)snprintf(hint, n, "closest paths:");
    for (int k = 0; k < 3 && best[k] >= 0 && o < n; k++)
        o += (size_t)snprintf(hint + o, n - o, "%s '%s'", k ? "," : "", m->mods[best[k]].path);
}

static void report_unmatched(Ctx *c, const Selector *s, const char *what) {
    char hint[600];
    closest_paths(c->m, s->pattern, hint, sizeof hint);
    if (s->is_glob)
        diag_warn(c->d, s->mark, 1, hint, "%s pattern '%s' matches no module of model '%s'", what, s->pattern, c->m->name);
    else
        diag_error(c->d, s->mark, hint, "%s path '%s' matches no module of model '%s'", what, s->pattern, c->m->name);
}

static int apply_low_bit(Ctx *c, ModRes *mr, Selector *sels) {
    const Policy *p = c->p;
    const Module *mod = mr->mod;
    int hit = -1;
    for (int i = 0; i < p->n_low_bit_mods; i++) {
        if (!res_glob_match(sels[i].pattern, mod->path)) continue;
        if (mod->kind != MK_LINEAR) {
            if (!sels[i].is_glob) {
                diag_error(c->d, sels[i].mark, "only linear modules (q/k/v/o, gate/up/down, lm_head) run low-bit",
                           "'%s' is a %s module and cannot run low-bit", mod->path, model_kind_name(c->m, mod->kind));
                sels[i].nmatched++;
            }
            continue;
        }
        sels[i].nmatched++;
        if (hit < 0) hit = i;
    }
    if (hit < 0) return -1;
    contribute(&mr->f[F_COMPUTE], L_LOW_BIT, (Val){DT_FP8, 0, 0}, sels[hit].mark, -1);
    for (int f = F_Q0; f < NFIELDS; f++)
        if (p->low_bit_fs.set & BIT(f)) contribute(&mr->f[f], L_LOW_BIT, p->low_bit_fs.v[f], p->low_bit_fs.m[f], -1);
    return hit;
}

static int is_low_bit_dtype(int64_t t) { return t == DT_FP8 || t == DT_FP4; }

/* The seed's fail-fast rule ("DeepSeek Precision Configuration", section 7): a module that is
 * selected for low-bit compute by name and given an explicit non-low-bit compute dtype by name
 * is an error naming both lines: precedence between two explicit choices is never guessed.
 * Explicit means an exact path: a low_bit.modules entry without '*', a rule without '*', an
 * override. One override that sets a non-low-bit compute and also x/w/dy quantization is the
 * same conflict within one entry. Globs and the recipe stay ordinary layers: an exact override
 * of compute takes a module that a pattern made low-bit out of low-bit compute. */
static void check_explicit_conflict(Ctx *c, const ModRes *mr, const Selector *lb_hit) {
    const FieldRes *fr = &mr->f[F_COMPUTE];
    char la[512], lb[512], key[300];
    for (int k = 0; k < fr->n; k++) {
        const Contrib *o = &fr->c[k];
        int exact = o->layer == L_OVERRIDE || (o->layer == L_RULE && !c->p->rules[o->sel].is_glob);
        if (!exact || is_low_bit_dtype(o->v.i)) continue;
        const Selector *sel = o->layer == L_OVERRIDE ? &c->p->overrides[o->sel] : &c->p->rules[o->sel];
        if (lb_hit && !lb_hit->is_glob) {
            snprintf(key, sizeof key, "explicit:%d:%d", o->layer, o->sel);
            Problem *p = problem(&c->probs, key, NULL); /* the message names the module */
            if (!p) continue;
            p->mark = o->mark;
            snprintf(p->msg, sizeof p->msg, "'%s' is given compute %s here and is selected for low-bit compute by name at %s",
                     mr->mod->path, dtype_names[o->v.i], diag_loc(c->d, lb_hit->mark, 1, la, sizeof la));
            snprintf(p->hint, sizeof p->hint, "remove it from low_bit.modules, or drop the compute override: two explicit choices are never ranked");
            p->note_mark = lb_hit->mark;
            snprintf(p->note, sizeof p->note, "low_bit.modules selects '%s' here", mr->mod->path);
        }
        for (int f = F_Q0; o->layer == L_OVERRIDE && f < NFIELDS; f++) {
            if (!(sel->fs.set & BIT(f))) continue;
            char fname[32];
            snprintf(key, sizeof key, "explicitq:%d", o->sel);
            Problem *p = problem(&c->probs, key, NULL);
            if (!p) break;
            p->mark = o->mark;
            snprintf(p->msg, sizeof p->msg, "override '%s' sets compute %s and also low-bit quantization (%s at %s)", mr->mod->path,
                     dtype_names[o->v.i], field_name(f, fname, sizeof fname), diag_loc(c->d, sel->fs.m[f], 1, lb, sizeof lb));
            snprintf(p->hint, sizeof p->hint, "a module is either low-bit (compute: fp8 with x/w/dy) or not: drop one of the two");
            p->note_mark = sel->fs.m[f];
            snprintf(p->note, sizeof p->note, "the low-bit quantization is set here");
            break;
        }
    }
}

/* ---- derived state and checks ---- */

const Val *res_value(const ModRes *mr, int f) {
    const FieldRes *fr = &mr->f[f];
    return fr->win >= 0 ? &fr->c[fr->win].v : NULL;
}

/* The deciding contribution is the highest layer's; among agreeing rules, the first. */
static void pick_winner(FieldRes *fr) {
    if (!fr->n) {
        fr->win = -1;
        return;
    }
    int w = fr->n - 1;
    while (w > 0 && fr->c[w - 1].layer == fr->c[w].layer) w--;
    fr->win = w;
}

static Mark win_mark(const Ctx *c, const ModRes *mr, int f) {
    const FieldRes *fr = &mr->f[f];
    if (fr->win < 0) return NO_MARK;
    const Contrib *w = &fr->c[fr->win];
    return w->layer == L_RECIPE ? c->p->recipe_mark : w->mark;
}

static const char *origin(const Ctx *c, const ModRes *mr, int f, char *buf, size_t n) {
    const FieldRes *fr = &mr->f[f];
    if (fr->win >= 0 && fr->c[fr->win].layer == L_RECIPE)
        snprintf(buf, n, "from recipe %s", c->p->recipe->name);
    else
        buf[0] = 0;
    return buf;
}

static void qproblem(Ctx *c, const ModRes *mr, int f, const char *key_tail, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void qproblem(Ctx *c, const ModRes *mr, int f, const char *key_tail, const char *hint, const char *fmt, ...) {
    char key[300], loc[512];
    Mark m = win_mark(c, mr, f);
    diag_loc(c->d, m, 1, loc, sizeof loc);
    snprintf(key, sizeof key, "q:%d:%s:%s", f, loc[0] ? loc : c->p->recipe->name, key_tail);
    Problem *p = problem(&c->probs, key, mr->mod->path);
    if (!p) return;
    p->mark = m;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    origin(c, mr, f, p->origin, sizeof p->origin);
    if (hint) snprintf(p->hint, sizeof p->hint, "%s", hint);
}

/* A partial last tile (partial: ceil) on a GPU target. The CPU emulation, the quantize kernels
 * (quantize_tiles: ragged tiles) and the generated GEMM (scale index = element / tile) compute it
 * exactly; the generated GEMM needs every dimension to be a multiple of 16. cuBLASLt's VEC128 /
 * BLK128x128 modes document ceil(dim / 128) scale layouts, but whether they accept a dimension that
 * is not a multiple of 128 was not confirmed on hardware: docs/policy.md says so. */
static void partial_tile_target(Ctx *c, const ModRes *mr, Operand op, const char *dname, int64_t dim, int64_t tile) {
    if (c->r->target == TGT_CPU || dim % 16 == 0) return;
    char tail[64];
    snprintf(tail, sizeof tail, "p16:%lld", (long long)dim);
    qproblem(c, mr, F_Q(op, QF_PARTIAL), tail, "pad the dimension to a multiple of 16, or use --target cpu",
             "%s: a partial tile of %lld over %s = %lld needs the dimension to be a multiple of 16 on %s (FP8 tensor-core GEMMs)",
             operand_names[op], (long long)tile, dname, (long long)dim, target_names[c->r->target]);
}

/* Each operand is quantized along the dimension its GEMM contracts, in both orientations
 * (fprop and the backward GEMMs): the tile and its transpose must both divide the operand. */
static void check_tiles(Ctx *c, const ModRes *mr) {
    const Module *mod = mr->mod;
    int64_t M = model_tokens_per_step(c->m), N_ = mod->n_out, K = mod->k_in;
    static const char *const rname[OP_COUNT] = {"M (tokens per micro-batch)", "N (output features)", "M (tokens per micro-batch)"};
    static const char *const cname[OP_COUNT] = {"K (input features)", "K (input features)", "N (output features)"};
    int64_t R[OP_COUNT] = {M, N_, M}, C[OP_COUNT] = {K, K, N_};
    for (int op = 0; op < OP_COUNT; op++) {
        const Val *t = res_value(mr, F_Q(op, QF_TILE));
        if (!t->i) continue;
        struct { int64_t tile, dim; const char *name; const char *how; } need[4] = {
            {t->i, R[op], rname[op], "rows"}, {t->j, C[op], cname[op], "columns"},
            {t->j, R[op], rname[op], "the transposed copy's rows"}, {t->i, C[op], cname[op], "the transposed copy's columns"}};
        int refuse = res_value(mr, F_Q(op, QF_PARTIAL))->i == PT_REFUSE;
        for (int k = 0; k < 4; k++) {
            if (need[k].dim % need[k].tile == 0) continue;
            if (!refuse) {
                partial_tile_target(c, mr, (Operand)op, need[k].name, need[k].dim, need[k].tile);
                continue;
            }
            char tail[64];
            snprintf(tail, sizeof tail, "%lld:%lld", (long long)need[k].tile, (long long)need[k].dim);
            qproblem(c, mr, F_Q(op, QF_PARTIAL), tail, "set partial: ceil to give the last tile its own scale (DeepSeek's ceil'd scale grid), or pick a tile that divides it",
                     "%s tile [%lld, %lld]: %s of %lld does not divide %s = %lld", operand_names[op], (long long)t->i,
                     (long long)t->j, need[k].how, (long long)need[k].tile, need[k].name, (long long)need[k].dim);
            break;
        }
    }
}

static void check_target(Ctx *c, const ModRes *mr) {
    Target t = c->r->target;
    if (t == TGT_CPU) return;
    static const Operand gemm[3][2] = {{OP_X, OP_W}, {OP_DY, OP_W}, {OP_DY, OP_X}};
    static const char *const gname[3] = {"fprop (x * w)", "dgrad (dy * w)", "wgrad (dy * x)"};
    for (int g = 0; g < 3; g++) {
        if (t == TGT_SM100A) break;
        if (res_value(mr, F_Q(gemm[g][0], QF_FORMAT))->i == DT_E5M2 && res_value(mr, F_Q(gemm[g][1], QF_FORMAT))->i == DT_E5M2)
            qproblem(c, mr, F_Q(gemm[g][0], QF_FORMAT), gname[g], "make one operand e4m3 (TransformerEngine's HYBRID: e4m3 forward, e5m2 gradients)",
                     "%s multiplies e5m2 by e5m2, which %s tensor cores cannot do", gname[g], target_names[t]);
    }
    for (int op = 0; op < OP_COUNT; op++) {
        Dtype fmt = (Dtype)res_value(mr, F_Q(op, QF_FORMAT))->i;
        Dtype sf = (Dtype)res_value(mr, F_Q(op, QF_SCALE_FORMAT))->i;
        const Val *tile = res_value(mr, F_Q(op, QF_TILE));
        if (fmt == DT_E2M1 && t != TGT_SM100A)
            qproblem(c, mr, F_Q(op, QF_FORMAT), "fp4", "use --target sm_100a, or --target cpu to emulate",
                     "%s: FP4 (e2m1) GEMMs need sm_100a; %s has no FP4 tensor cores", operand_names[op], target_names[t]);
        if (sf == DT_E8M0 && t != TGT_SM100A)
            qproblem(c, mr, F_Q(op, QF_SCALE_FORMAT), "mx", "use --target sm_100a, or --target cpu to emulate",
                     "%s: MXFP8 (E8M0 block scales) needs sm_100a; %s has no block-scaled MMA", operand_names[op], target_names[t]);
        else if (sf == DT_E8M0 && !(tile->i == 1 && tile->j == 32))
            qproblem(c, mr, F_Q(op, QF_TILE), "mxtile", "MX blocks are 32 elements along the contraction dimension: tile: [1, 32]",
                     "%s: E8M0 scales on %s need tile [1, 32]", operand_names[op], target_names[t]);
        else if (sf == DT_FP32 && tile->i && t == TGT_SM89)
            qproblem(c, mr, F_Q(op, QF_TILE), "block", "use per-tensor scaling (tile: tensor) on sm_89, or --target sm_90a",
                     "%s tile [%lld, %lld]: blockwise-scaled GEMMs need sm_90a or newer", operand_names[op],
                     (long long)tile->i, (long long)tile->j);
    }
}

/* Fields that no longer apply are switched off so plans and explain do not show them. */
static void finish_module(Ctx *c, ModRes *mr) {
    for (int f = 0; f < NFIELDS; f++) pick_winner(&mr->f[f]);
    const Module *mod = mr->mod;
    mr->params = has_params_field(mod) ? (Dtype)res_value(mr, F_PARAMS)->i : DT_NONE;
    Dtype comp = (Dtype)res_value(mr, F_COMPUTE)->i;
    mr->low_bit = comp == DT_FP8 || comp == DT_FP4;
    mr->compute = comp;
    if (!mr->low_bit) {
        for (int f = F_Q0; f < NFIELDS; f++) mr->f[f].win = -1;
    } else {
        int fp4 = res_value(mr, F_Q(OP_X, QF_FORMAT))->i == DT_E2M1 || res_value(mr, F_Q(OP_W, QF_FORMAT))->i == DT_E2M1;
        const Contrib *w = &mr->f[F_COMPUTE].c[mr->f[F_COMPUTE].win];
        if (w->layer >= L_RULE && comp == (fp4 ? DT_FP8 : DT_FP4))
            qproblem(c, mr, F_COMPUTE, "fp4mismatch", NULL, "compute is %s but the operand formats are %s",
                     dtype_names[comp], fp4 ? "e2m1 (fp4)" : "8-bit (fp8)");
        mr->compute = fp4 ? DT_FP4 : DT_FP8;
        for (int op = 0; op < OP_COUNT; op++) {
            ScalingKind sk = (ScalingKind)res_value(mr, F_Q(op, QF_SCALING))->i;
            if (sk != SC_DELAYED)
                for (int qf = QF_HISTORY; qf <= QF_INTERVAL; qf++) mr->f[F_Q(op, qf)].win = -1;
            if (sk != SC_STATIC) mr->f[F_Q(op, QF_SCALE)].win = -1;
            if (!res_value(mr, F_Q(op, QF_TILE))->i) mr->f[F_Q(op, QF_PARTIAL)].win = -1; /* one scale: nothing is partial */
        }
        check_tiles(c, mr);
        check_target(c, mr);
    }
    if ((mr->params == DT_E4M3 || mr->params == DT_E5M2) && !mr->low_bit) {
        qproblem(c, mr, F_PARAMS, "fp8param", "store it in bf16, or make the module low-bit",
                 "parameters stored in %s need a low-bit module to read them", dtype_names[mr->params]);
    }
}

static void resolve_globals(Ctx *c) {
    const GlobalSet *rg = &c->p->recipe->globals, *fg = &c->p->globals;
    for (int g = 0; g < G_COUNT; g++) {
        GlobalRes *gr = &c->r->g[g];
        gr->c[gr->n++] = (Contrib){L_RECIPE, rg->v[g], NO_MARK, -1};
        if (fg->set & (UINT32_C(1) << g)) gr->c[gr->n++] = (Contrib){L_DEFAULTS, fg->v[g], fg->m[g], -1};
    }
}

const Val *res_global(const Resolution *r, GlobalField g) { return &r->g[g].c[r->g[g].n - 1].v; }

/* Why running the micro-batch as chunks of m tokens would change what the policy computes (NULL
 * if it would not). A chunk is gradient accumulation: the same tokens, the same per-token loss
 * weight, the gradients summed in FP32 in another order. What would differ is any statistic
 * taken over the whole micro-batch: the per-tensor amax that current scaling takes of an
 * activation or gradient, a tile across a chunk's edge, BF16 gradients rounded once per chunk, and
 * MoE's per-batch routing loads (not yet shown chunk-invariant, so not split). Static scales,
 * weights' scales and delayed scaling (its scale comes from the history, and the step's amax is
 * the max over the passes, as under grad_accum) are the same either way. */
static const char *split_blocker(const Resolution *r, int64_t m, char *buf, size_t n) {
    if (res_global(r, G_GRAD_ACCUM)->i == DT_BF16) return "gradients accumulate in BF16 (grad_accum: bf16), so each chunk would round them";
    if (r->model->ffn == FFN_MOE) return "the model has MoE layers, whose per-batch routing statistics are not split";
    for (int i = 0; i < r->nmods; i++) {
        const ModRes *mr = &r->mods[i];
        if (!mr->low_bit) continue;
        for (int op = 0; op < OP_COUNT; op++) {
            const Val *sc = res_value(mr, F_Q(op, QF_SCALING)), *tile = res_value(mr, F_Q(op, QF_TILE));
            if (!sc || sc->i == SC_STATIC || op == OP_W) continue; /* a weight is the same tensor in every chunk */
            int per_tensor = !tile || (tile->i == 0 && tile->j == 0);
            if (sc->i == SC_DELAYED && per_tensor) continue; /* scales from the history; the step's amax is the max over passes */
            if (per_tensor) {
                snprintf(buf, n, "%s scales its %s per tensor, and a chunk's amax is not the micro-batch's", mr->mod->path,
                         operand_names[op]);
                return buf;
            }
            if ((tile->i && m % tile->i) || (tile->j && m % tile->j)) {
                snprintf(buf, n, "%s's %s tiles (%lld x %lld) do not divide a chunk of %lld tokens", mr->mod->path, operand_names[op],
                         (long long)tile->i, (long long)tile->j, (long long)m);
                return buf;
            }
        }
    }
    return NULL;
}

int res_split(const Resolution *r, int64_t want, int64_t *split, char *why, size_t n) {
    const TrainCfg *t = &r->model->train;
    int64_t B = t->micro_batch, T = t->seq_len;
    char buf[256];
    *split = 1;
    if (want != SPLIT_AUTO) {
        if (want < 1 || B % want) {
            snprintf(why, n, "--split %lld does not divide train.micro_batch (%lld)", (long long)want, (long long)B);
            return -1;
        }
        if (t->grad_accum * want > (1 << 16)) {
            snprintf(why, n, "--split %lld: train.grad_accum (%lld) x %lld chunks would pass 65536 micro-batches per step",
                     (long long)want, (long long)t->grad_accum, (long long)want);
            return -1;
        }
        const char *no = want > 1 ? split_blocker(r, B / want * T, buf, sizeof buf) : NULL;
        if (no) {
            snprintf(why, n, "--split %lld would change what the policy computes: %s (set train.micro_batch and train.grad_accum "
                     "to accept that)", (long long)want, no);
            return -1;
        }
        *split = want;
        snprintf(why, n, want > 1 ? "asked for (--split %lld)" : "not split (--split %lld)", (long long)want);
        return 0;
    }
    if (r->target != TGT_CPU) {
        snprintf(why, n, "not split: a GPU target runs the micro-batch in one pass");
        return 0;
    }
    int64_t s = 1;
    while (s < B && (B % s || B / s * T > SPLIT_CHUNK_TOKENS)) s++;
    if (s == 1) {
        snprintf(why, n, "not split: %lld tokens fit one chunk (at most %d)", (long long)(B * T), SPLIT_CHUNK_TOKENS);
        return 0;
    }
    if (B / s * T > SPLIT_CHUNK_TOKENS) {
        snprintf(why, n, "not split: one sequence is already more than a chunk's %d tokens", SPLIT_CHUNK_TOKENS);
        return 0;
    }
    if (t->grad_accum * s > (1 << 16)) {
        snprintf(why, n, "not split: train.grad_accum x %lld chunks would pass 65536 micro-batches", (long long)s);
        return 0;
    }
    const char *no = split_blocker(r, B / s * T, buf, sizeof buf);
    if (no) {
        snprintf(why, n, "not split: %s", no);
        return 0;
    }
    *split = s;
    snprintf(why, n, "--split auto on the CPU: chunks of at most %d tokens keep a chunk's activations near the caches (--split 1 "
             "keeps one pass)", SPLIT_CHUNK_TOKENS);
    return 0;
}

static void check_globals(Ctx *c) {
    const Resolution *r = c->r;
    int fp8_params = 0;
    for (int i = 0; i < r->nmods; i++)
        if (r->mods[i].params == DT_E4M3 || r->mods[i].params == DT_E5M2) fp8_params = 1;
    if (fp8_params && res_global(r, G_MASTER_WEIGHTS)->i != DT_FP32) {
        const GlobalRes *g = &r->g[G_MASTER_WEIGHTS];
        diag_error(c->d, g->c[g->n - 1].layer == L_RECIPE ? c->p->recipe_mark : g->c[g->n - 1].mark,
                   "set master_weights: fp32", "FP8 parameter storage needs FP32 master weights: an optimizer step cannot be applied to 8-bit values");
    }
    /* A tied lm_head reads embed's weight: one tensor, one storage dtype. */
    int e = model_find(c->m, "embed"), h = model_find(c->m, "lm_head");
    const ModRes *em = &r->mods[e], *hm = &r->mods[h];
    if (hm->mod->tied && em->params != hm->params) {
        /* Point at whichever choice came from the higher layer; name the other one. */
        const Contrib *ce = &em->f[F_PARAMS].c[em->f[F_PARAMS].win], *ch = &hm->f[F_PARAMS].c[hm->f[F_PARAMS].win];
        int head_first = ch->layer >= ce->layer;
        const ModRes *a = head_first ? hm : em, *b = head_first ? em : hm;
        char lb[512];
        Mark ma = win_mark(c, a, F_PARAMS), mb = win_mark(c, b, F_PARAMS);
        diag_loc(c->d, mb, 1, lb, sizeof lb);
        diag_error(c->d, ma, "give embed and lm_head the same params dtype, or set tie_embeddings: false",
                   "tied embeddings share one weight, but %s stores it as %s and %s as %s%s%s", a->mod->path,
                   dtype_names[a->params], b->mod->path, dtype_names[b->params], lb[0] ? " at " : "", lb);
    }
}

int res_resolve(Arena *a, Diag *d, const Model *m, const Policy *p, Target t, Resolution *r) {
    memset(r, 0, sizeof *r);
    r->model = m;
    r->pol = p;
    r->target = t;
    r->nmods = m->nmods;
    r->mods = arena_alloc(a, (size_t)m->nmods * sizeof *r->mods);
    Ctx c = {a, d, m, p, r, {0}};
    int errors0 = d->errors;
    resolve_globals(&c);
    /* Selector match counts live in copies so the Policy stays read-only. */
    Selector *lb = arena_alloc(a, (size_t)(p->n_low_bit_mods + 1) * sizeof *lb);
    Selector *rules = arena_alloc(a, (size_t)(p->nrules + 1) * sizeof *rules);
    if (p->n_low_bit_mods) memcpy(lb, p->low_bit_mods, (size_t)p->n_low_bit_mods * sizeof *lb);
    if (p->nrules) memcpy(rules, p->rules, (size_t)p->nrules * sizeof *rules);
    int *ovr_of = arena_alloc(a, (size_t)m->nmods * sizeof *ovr_of);
    for (int i = 0; i < m->nmods; i++) ovr_of[i] = -1;
    for (int k = 0; k < p->noverrides; k++) {
        int i = model_find(m, p->overrides[k].pattern);
        if (i < 0)
            report_unmatched(&c, &p->overrides[k], "override");
        else
            ovr_of[i] = k;
    }
    for (int i = 0; i < m->nmods; i++) {
        ModRes *mr = &r->mods[i];
        mr->mod = &m->mods[i];
        apply_recipe(&c, mr);
        apply_defaults(&c, mr);
        int hit = p->has_low_bit ? apply_low_bit(&c, mr, lb) : -1;
        for (int k = 0; k < p->nrules; k++)
            if (res_glob_match(rules[k].pattern, mr->mod->path)) {
                rules[k].nmatched++;
                apply_fields(&c, mr, &rules[k].fs, L_RULE, k, &rules[k]);
            }
        if (ovr_of[i] >= 0) apply_fields(&c, mr, &p->overrides[ovr_of[i]].fs, L_OVERRIDE, ovr_of[i], &p->overrides[ovr_of[i]]);
        check_explicit_conflict(&c, mr, hit >= 0 && !p->low_bit_mods_from_recipe ? &lb[hit] : NULL);
    }
    if (!p->low_bit_mods_from_recipe)
        for (int k = 0; k < p->n_low_bit_mods; k++)
            if (!lb[k].nmatched) report_unmatched(&c, &lb[k], "low_bit");
    for (int k = 0; k < p->nrules; k++)
        if (!rules[k].nmatched) report_unmatched(&c, &rules[k], "rule");
    flush_problems(d, &c.probs); /* conflicts first: they make the winners meaningless */
    if (d->errors > errors0) return -1;
    for (int i = 0; i < m->nmods; i++) {
        finish_module(&c, &r->mods[i]);
        r->n_low_bit += r->mods[i].low_bit;
    }
    flush_problems(d, &c.probs);
    check_globals(&c);
    return d->errors > errors0 ? -1 : 0;
}

/* ---- formatting ---- */

const char *res_format_value(int f, const Val *v, char *buf, size_t n) {
    if (f == F_PARAMS || f == F_COMPUTE) {
        snprintf(buf, n, "%s", dtype_names[v->i]);
        return buf;
    }
    switch ((QField)((f - F_Q0) % QF_COUNT)) {
    case QF_FORMAT:
    case QF_SCALE_FORMAT: snprintf(buf, n, "%s", dtype_names[v->i]); break;
    case QF_SCALING: snprintf(buf, n, "%s", scaling_names[v->i]); break;
    case QF_ALGO: snprintf(buf, n, "%s", algo_names[v->i]); break;
    case QF_PARTIAL: snprintf(buf, n, "%s", partial_names[v->i]); break;
    case QF_TILE:
        if (!v->i) snprintf(buf, n, "tensor");
        else snprintf(buf, n, "[%lld, %lld]", (long long)v->i, (long long)v->j);
        break;
    case QF_SCALE: snprintf(buf, n, "%.9g", v->d); break;
    default: snprintf(buf, n, "%lld", (long long)v->i); break;
    }
    return buf;
}

const char *res_format_global(GlobalField g, const Val *v, char *buf, size_t n) {
    switch (g) {
    case G_MASTER_WEIGHTS:
    case G_OPTIMIZER_STATE:
    case G_GRAD_ACCUM:
    case G_LOSS: snprintf(buf, n, "%s", dtype_names[v->i]); break;
    case G_LS_MODE: snprintf(buf, n, "%s", loss_scaling_names[v->i]); break;
    case G_LS_INTERVAL: snprintf(buf, n, "%lld", (long long)v->i); break;
    default: snprintf(buf, n, "%.9g", v->d); break;
    }
    return buf;
}

const char *res_contrib_loc(const Diag *d, const Resolution *r, const Contrib *c, int with_col, char *buf, size_t n) {
    if (c->layer == L_RECIPE)
        snprintf(buf, n, "recipe:%s", r->pol->recipe->name);
    else
        diag_loc(d, c->mark, with_col, buf, n);
    return buf;
}
