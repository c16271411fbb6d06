/* schedule.c: fusion and the launch schedule (DESIGN.md section 2: lower -> fuse -> schedule ->
 * memory -> codegen). The schedule is the one program both backends run: the GPU launches one
 * kernel (or GEMM, or memset) per unit, the CPU runs each unit's member steps in order, over the
 * same memory plan, so the CPU oracle checks what the GPU executes.
 *
 * Three steps:
 *   propose: groups of steps one kernel can compute in one pass, each checked at once by its
 *            template family's generator (cg_check_group); a refused group stays unfused.
 *   place:   each group runs at one point of the program: the earliest of its members'
 *            positions such that moving the others there crosses no step they conflict with
 *            (one writes what the other reads or writes). A group with no such point stays
 *            unfused. adamw_quantize is the exception: it runs at the adamw and writes the weight
 *            copies for the next step; the standalone quantizes stay, marked `refresh`, and run
 *            only while those copies are stale, which is why the copies move to TC_WCOPY (they
 *            persist across steps and cannot share the activation arena).
 *   verify:  sch_verify checks every dependency of the program order in the final order;
 *            should a placement still break one (groups interact), the group is dropped and the
 *            schedule rebuilt.
 *
 * Must not: change what any step computes, or plan memory (memplan.c runs over g->u after this).
 */
#include "fp8c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- accesses ----------------------------------------------------------------------------------- */

/* Does step s read (want_write 0) or write (1) tensor t? */
static int touches(const GStep *s, int t, int want_write) {
    int na = op_arg_count(s->op);
    for (int k = 0; k < na && k < OP_MAX_ARGS; k++) {
        if (s->args[k] != t) continue;
        if (want_write ? op_arg_writes(s->op, k) : op_arg_reads(s->op, k, s->ints)) return 1;
    }
    return 0;
}

/* Two steps conflict when one writes a tensor the other reads or writes. */
static int conflict(const GStep *a, const GStep *b) {
    int na = op_arg_count(a->op);
    for (int k = 0; k < na && k < OP_MAX_ARGS; k++) {
        int t = a->args[k];
        if (t < 0) continue;
        if (op_arg_writes(a->op, k) && (touches(b, t, 0) || touches(b, t, 1))) return 1;
        if (op_arg_reads(a->op, k, a->ints) && touches(b, t, 1)) return 1;
    }
    return 0;
}

/* ---- proposals ---------------------------------------------------------------------------------- */

typedef struct {
    const Graph *g;
    Arena *a;
    char *taken;    /* per step: in an accepted group */
    int *qhead;     /* per tensor: the first step quantizing it (-1: none) */
    int *qnext;     /* per step: the next step quantizing the same tensor, in program order */
    int *run_end;   /* per step: the first later step of another section (ns: none) */
    CgGroup *groups;
    int ng, capg;
    int nrejected;
} Fuser;

/* Keep the group if its generator accepts it; its steps are then taken. */
static void propose(Fuser *f, FuseKind kind, const int *ids, int n) {
    CgGroup grp = {.kind = kind, .nsteps = n, .step_ids = arena_alloc(f->a, (size_t)n * sizeof(int))};
    memcpy(grp.step_ids, ids, (size_t)n * sizeof(int));
    char err[512];
    if (cg_check_group(f->g, &grp, err, sizeof err)) {
        f->nrejected++;
        if (getenv("FP8C_DEBUG")) fprintf(stderr, "fp8c: schedule: %s fusion at step %d not used: %s\n", fuse_names[kind], ids[0], err);
        return;
    }
    if (f->ng == f->capg) {
        f->capg = f->capg ? 2 * f->capg : 64;
        f->groups = xrealloc(f->groups, (size_t)f->capg * sizeof *f->groups);
    }
    f->groups[f->ng++] = grp;
    for (int i = 0; i < n; i++) f->taken[ids[i]] = 1;
}

/* Does any step strictly between i and j (program order) write tensor t? */
static int written_between(const Graph *g, int i, int j, int t) {
    for (int s = i + 1; s < j; s++)
        if (touches(&g->s[s], t, 1)) return 1;
    return 0;
}

/* The quantize steps of each tensor as chains in program order, and each step's section run:
 * the proposals look a tensor's quantizes up here instead of scanning the program (which was
 * quadratic in steps: a DeepSeek-V3-sized program has millions). */
static void index_quantizes(Fuser *f) {
    const Graph *g = f->g;
    f->qhead = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof *f->qhead);
    f->qnext = xmalloc((size_t)(g->ns ? g->ns : 1) * sizeof *f->qnext);
    f->run_end = xmalloc((size_t)(g->ns ? g->ns : 1) * sizeof *f->run_end);
    for (int t = 0; t < g->nt; t++) f->qhead[t] = -1;
    for (int j = g->ns - 1; j >= 0; j--) {
        const GStep *q = &g->s[j];
        f->run_end[j] = j + 1 < g->ns && g->s[j + 1].sec == q->sec ? f->run_end[j + 1] : j + 1;
        f->qnext[j] = -1;
        if (q->op != OP_QUANTIZE || q->args[3] < 0) continue;
        f->qnext[j] = f->qhead[q->args[3]];
        f->qhead[q->args[3]] = j;
    }
}

/* The step after i (same section) that quantizes tensor t row-wise, not yet taken; -1 if none. */
static int next_row_quant(Fuser *f, int i, int t) {
    const Graph *g = f->g;
    for (int j = f->qhead[t]; j >= 0 && j < f->run_end[i]; j = f->qnext[j]) {
        if (j <= i) continue;
        const GStep *q = &g->s[j];
        if (q->ints[6] == 0 && !f->taken[j]) return written_between(g, i, j, t) ? -1 : j;
    }
    return -1;
}

static void propose_all(Fuser *f) {
    const Graph *g = f->g;
    int ids[64];
    /* (e) every delayed-scaling update in one launch */
    int n = 0;
    for (int i = 0; i < g->ns; i++)
        if (g->s[i].op == OP_SCALE_UPDATE) n++;
    if (n) {
        int *all = arena_alloc(f->a, (size_t)n * sizeof(int));
        n = 0;
        for (int i = 0; i < g->ns; i++)
            if (g->s[i].op == OP_SCALE_UPDATE) all[n++] = i;
        propose(f, FUSE_SCALE_UPDATE, all, n);
    }
    for (int i = 0; i < g->ns; i++) {
        const GStep *s = &g->s[i];
        if (f->taken[i]) continue;
        switch (s->op) {
        case OP_XENT_FWD: /* (f) the loss and its gradient in one pass over the logits */
            for (int j = i + 1; j < g->ns; j++)
                if (g->s[j].op == OP_XENT_BWD && g->s[j].args[1] == s->args[1] && g->s[j].args[2] == s->args[2] && !f->taken[j]) {
                    ids[0] = i, ids[1] = j;
                    propose(f, FUSE_XENT, ids, 2);
                    break;
                }
            break;
        case OP_ATTENTION_FWD: { /* RoPE applied while loading q and k */
            int rq = -1, rk = -1;
            for (int j = 0; j < i; j++) {
                const GStep *r = &g->s[j];
                if (r->op != OP_ROPE_FWD || f->taken[j] || r->sec != s->sec) continue;
                if (r->args[0] == s->args[2]) rq = j;
                if (r->args[0] == s->args[3]) rk = j;
            }
            if (rq >= 0 && rk >= 0) {
                ids[0] = rq < rk ? rq : rk, ids[1] = rq < rk ? rk : rq, ids[2] = i;
                propose(f, FUSE_ROPE_ATTENTION, ids, 3);
            }
            break;
        }
        case OP_ATTENTION_BWD: { /* the inverse rotation of dq and dk before they are stored */
            int rq = -1, rk = -1;
            for (int j = i + 1; j < g->ns && g->s[j].sec == s->sec && j < i + 4; j++) {
                const GStep *r = &g->s[j];
                if (r->op != OP_ROPE_BWD || f->taken[j] || r->args[0] != r->args[1]) continue;
                if (r->args[0] == s->args[0]) rq = j;
                if (r->args[0] == s->args[1]) rk = j;
            }
            if (rq >= 0 && rk >= 0) {
                ids[0] = i, ids[1] = rq < rk ? rq : rk, ids[2] = rq < rk ? rk : rq;
                propose(f, FUSE_ROPE_ATTENTION, ids, 3);
            }
            break;
        }
        case OP_RMSNORM_FWD:
        case OP_LAYERNORM_FWD:
        case OP_SWIGLU_FWD:
        case OP_GELU_FWD:
        case OP_GATE_FWD: { /* (b), (c): the output written as FP8 with its tile scales too */
            int j = next_row_quant(f, i, s->args[0]);
            if (j >= 0) {
                ids[0] = i, ids[1] = j;
                propose(f, s->op == OP_RMSNORM_FWD || s->op == OP_LAYERNORM_FWD ? FUSE_NORM_QUANT : FUSE_ACT_QUANT, ids, 2);
            }
            break;
        }
        default: break;
        }
    }
    /* (d) AdamW writes the weight's FP8 copies (both orientations) for the next step. The copies'
     * quantize steps stay in the program as refresh units, so they join no other group. */
    for (int i = 0; i < g->ns; i++) {
        const GStep *s = &g->s[i];
        if (s->op != OP_ADAMW || f->taken[i]) continue;
        int k = 0;
        ids[k++] = i;
        for (int j = s->args[0] >= 0 ? f->qhead[s->args[0]] : -1; j >= 0 && k < 3; j = f->qnext[j])
            if (!f->taken[j]) ids[k++] = j;
        if (k > 1) propose(f, FUSE_ADAMW_QUANT, ids, k);
    }
    /* (a) one read of a tensor writes its row-wise and column-wise copies */
    for (int i = 0; i < g->ns; i++) {
        const GStep *s = &g->s[i];
        if (s->op != OP_QUANTIZE || f->taken[i]) continue;
        for (int j = f->qnext[i]; j >= 0 && j < f->run_end[i]; j = f->qnext[j]) {
            const GStep *q = &g->s[j];
            if (f->taken[j] || q->ints[6] == s->ints[6]) continue;
            if (written_between(g, i, j, s->args[3])) break;
            ids[0] = i, ids[1] = j;
            if (s->ints[6]) ids[0] = j, ids[1] = i; /* the generator takes the row copy first */
            propose(f, FUSE_CAST_TRANSPOSE, ids, 2);
            break;
        }
    }
}

/* ---- placement ---------------------------------------------------------------------------------- */

static int in_group(const CgGroup *grp, int s) {
    for (int i = 0; i < grp->nsteps; i++)
        if (grp->step_ids[i] == s) return 1;
    return 0;
}

/* Can every member of grp move to position p (program order) without crossing a step it
 * conflicts with? A member may not move to a later section (an eval runs the forward alone). */
static int placeable(const Graph *g, const CgGroup *grp, int p) {
    for (int i = 0; i < grp->nsteps; i++) {
        int m = grp->step_ids[i];
        if (g->s[m].sec < g->s[p].sec) return 0;
        int lo = m < p ? m : p, hi = m < p ? p : m;
        for (int s = lo + 1; s < hi; s++)
            if (!in_group(grp, s) && conflict(&g->s[m], &g->s[s])) return 0;
    }
    return 1;
}

/* The group's position: the earliest member position where it can run; -1 if none. */
static int place(const Graph *g, const CgGroup *grp) {
    if (grp->kind == FUSE_ADAMW_QUANT) return grp->step_ids[0];
    int best = -1;
    for (int i = 0; i < grp->nsteps; i++) {
        int p = grp->step_ids[i];
        if ((best < 0 || p < best) && placeable(g, grp, p)) best = p;
    }
    return best;
}

/* ---- building the schedule ---------------------------------------------------------------------- */

typedef struct {
    int pos;        /* program position it runs at */
    int group;      /* index into the fuser's groups, -1: a single step */
    int step;       /* the single step */
} Slot;

static int by_pos(const void *a, const void *b) {
    const Slot *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos); /* positions are distinct: a group sits on one of its members */
}

/* Units from the groups still enabled; steps in no enabled group run alone. */
static void build_units(Arena *a, Graph *g, const Fuser *f, const char *enabled, const int *gpos) {
    int *owner = xmalloc((size_t)(g->ns ? g->ns : 1) * sizeof(int));
    char *refresh = calloc((size_t)(g->ns ? g->ns : 1), 1);
    for (int i = 0; i < g->ns; i++) owner[i] = -1;
    for (int k = 0; k < f->ng; k++) {
        if (!enabled[k]) continue;
        const CgGroup *grp = &f->groups[k];
        if (grp->kind == FUSE_ADAMW_QUANT) {
            for (int i = 1; i < grp->nsteps; i++) refresh[grp->step_ids[i]] = 1;
            owner[grp->step_ids[0]] = k;
        } else {
            for (int i = 0; i < grp->nsteps; i++) owner[grp->step_ids[i]] = k;
        }
    }
    Slot *slots = xmalloc((size_t)(g->ns ? g->ns : 1) * sizeof *slots);
    int n = 0;
    for (int i = 0; i < g->ns; i++) {
        if (owner[i] < 0) slots[n++] = (Slot){i, -1, i};
        else if (gpos[owner[i]] == i) slots[n++] = (Slot){i, owner[i], -1};
    }
    qsort(slots, (size_t)n, sizeof *slots, by_pos);
    g->u = arena_alloc(a, (size_t)(n ? n : 1) * sizeof *g->u);
    g->nu = n;
    memset(g->nfused, 0, sizeof g->nfused);
    for (int k = 0; k < n; k++) {
        SUnit *u = &g->u[k];
        memset(u, 0, sizeof *u);
        u->sec = g->s[slots[k].pos].sec;
        if (slots[k].group < 0) {
            u->kind = FUSE_NONE;
            u->nsteps = 1;
            u->steps = arena_alloc(a, sizeof(int));
            u->steps[0] = slots[k].step;
            u->refresh = refresh[slots[k].step];
        } else {
            const CgGroup *grp = &f->groups[slots[k].group];
            u->kind = grp->kind;
            u->nsteps = grp->nsteps;
            u->steps = grp->step_ids;
            g->nfused[grp->kind]++;
        }
    }
    free(slots);
    free(owner);
    free(refresh);
}

/* ---- the dependency verifier -------------------------------------------------------------------- */

/* As sch_verify; bad[0], bad[1]: the two units of the first broken dependency (-1: none). */
static int verify(const Graph *g, char *err, size_t errlen, int *bad) {
    bad[0] = bad[1] = -1;
    /* unit of each step (its primary unit: the adamw_quantize copies' own refresh units count) */
    int *unit = xmalloc((size_t)(g->ns ? g->ns : 1) * sizeof(int));
    for (int i = 0; i < g->ns; i++) unit[i] = -1;
    int rc = 0;
    for (int u = 0; u < g->nu; u++)
        for (int i = 0; i < g->u[u].nsteps; i++) {
            int s = g->u[u].steps[i];
            if (g->u[u].kind == FUSE_ADAMW_QUANT && i > 0) continue;
            if (unit[s] >= 0) {
                snprintf(err, errlen, "step %d is in unit %d and unit %d", s, unit[s], u);
                bad[0] = unit[s], bad[1] = u, rc = -1;
            }
            unit[s] = u;
        }
    for (int i = 0; i < g->ns && !rc; i++)
        if (unit[i] < 0) snprintf(err, errlen, "step %d (%s) is in no unit", i, fp8c_op_info[g->s[i].op].name), rc = -1;
    /* per tensor, in program order: the last writer's unit and the latest unit of any access */
    int *last_w = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int)), *last_any = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int));
    int *last_w_step = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int)), *last_any_step = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int));
    for (int t = 0; t < g->nt; t++) last_w[t] = last_any[t] = -1;
    for (int s = 0; s < g->ns && !rc; s++) {
        const GStep *st = &g->s[s];
        int u = unit[s], na = op_arg_count(st->op);
        for (int k = 0; k < na && k < OP_MAX_ARGS && !rc; k++) {
            int t = st->args[k];
            if (t < 0) continue;
            int w = op_arg_writes(st->op, k), r = op_arg_reads(st->op, k, st->ints);
            if (r && last_w[t] > u) {
                snprintf(err, errlen, "unit %d reads %s before unit %d writes it (program order: step %d after step %d)", u, g->t[t].name,
                         last_w[t], s, last_w_step[t]);
                bad[0] = u, bad[1] = last_w[t], rc = -1;
            } else if (w && last_any[t] > u) {
                snprintf(err, errlen, "unit %d overwrites %s before unit %d is done with it (program order: step %d after step %d)", u,
                         g->t[t].name, last_any[t], s, last_any_step[t]);
                bad[0] = u, bad[1] = last_any[t], rc = -1;
            }
        }
        for (int k = 0; k < na && k < OP_MAX_ARGS; k++) {
            int t = st->args[k];
            if (t < 0) continue;
            if (op_arg_writes(st->op, k) && u > last_w[t]) last_w[t] = u, last_w_step[t] = s;
            if (u > last_any[t]) last_any[t] = u, last_any_step[t] = s;
        }
    }
    free(last_w);
    free(last_any);
    free(last_w_step);
    free(last_any_step);
    free(unit);
    return rc;
}

int sch_verify(const Graph *g, char *err, size_t errlen) {
    int bad[2];
    return verify(g, err, errlen, bad);
}

int sch_build(Arena *a, Graph *g, int fuse) {
    Fuser f = {.g = g, .a = a, .taken = calloc((size_t)(g->ns ? g->ns : 1), 1)};
    if (fuse) {
        index_quantizes(&f);
        propose_all(&f);
        free(f.qhead), free(f.qnext), free(f.run_end);
    }
    char *enabled = xmalloc((size_t)(f.ng ? f.ng : 1));
    int *gpos = xmalloc((size_t)(f.ng ? f.ng : 1) * sizeof(int));
    for (int k = 0; k < f.ng; k++) {
        gpos[k] = place(g, &f.groups[k]);
        enabled[k] = gpos[k] >= 0;
        if (!enabled[k]) f.nrejected++;
    }
    char err[512];
    int bad[2];
    for (;;) {
        build_units(a, g, &f, enabled, gpos);
        if (!verify(g, err, sizeof err, bad)) break;
        /* groups interact in a way the per-group check missed: drop the fused one of the two
         * units the broken dependency names and try again (terminates: groups only go) */
        int dropped = 0;
        for (int i = 0; i < 2 && !dropped; i++) {
            if (bad[i] < 0 || g->u[bad[i]].kind == FUSE_NONE) continue;
            for (int k = 0; k < f.ng; k++)
                if (enabled[k] && f.groups[k].step_ids == g->u[bad[i]].steps) enabled[k] = 0, dropped = 1, f.nrejected++;
        }
        FP8C_ASSERT(dropped); /* the unfused program is always a valid schedule */
    }
    g->nrejected = f.nrejected;
    /* adamw_quantize's copies persist from the optimizer to the next step: their own class */
    for (int u = 0; u < g->nu; u++) {
        const SUnit *su = &g->u[u];
        if (su->kind != FUSE_ADAMW_QUANT) continue;
        for (int i = 1; i < su->nsteps; i++) {
            const GStep *q = &g->s[su->steps[i]];
            for (int k = 0; k < op_out_count(q->op); k++)
                if (q->args[k] >= 0) g->t[q->args[k]].cls = TC_WCOPY;
        }
    }
    free(enabled);
    free(gpos);
    free(f.groups);
    free(f.taken);
    return 0;
}

