/* memplan.c: byte offsets of every tensor in its class's single allocation, and the verifier
 * that proves them. Activations (forward values kept for backward, backward gradients, quantized
 * copies) share memory by liveness over the launch schedule (schedule.c), the order both
 * backends run: a unit is one point in time (a fused kernel may read any input after writing any
 * output), so every tensor a unit touches is live at its position, and two activations may
 * overlap only if no unit lies in the live range of both. Every other class is packed in plan
 * order: parameters, gradients, optimizer state, scales and the weights' FP8 copies that persist
 * across steps (TC_WCOPY) never share bytes. */
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 256 /* every tensor starts 256-byte aligned: enough for cuBLASLt and vector loads */

static int64_t align_up(int64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static const Graph *sort_graph;
static int by_size_desc(const void *a, const void *b) {
    const GTensor *x = &sort_graph->t[*(const int *)a], *y = &sort_graph->t[*(const int *)b];
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}

static int by_start(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* first/last unit touching each tensor, over the whole schedule (forward, backward, optimizer,
 * scale updates, in the order a training step runs them). The losses are read by the host after
 * the forward section: they stay live to its end. */
static void liveness(const Graph *g, int *first, int *last) {
    for (int i = 0; i < g->nt; i++) first[i] = last[i] = -1;
    int end_fwd = -1;
    for (int u = 0; u < g->nu; u++) {
        const SUnit *su = &g->u[u];
        if (su->sec == SEC_FORWARD) end_fwd = u;
        for (int m = 0; m < su->nsteps; m++) {
            const GStep *s = &g->s[su->steps[m]];
            for (int a = 0; a < OP_MAX_ARGS; a++) {
                int t = s->args[a];
                if (t < 0) continue;
                if (first[t] < 0) first[t] = u;
                last[t] = u;
            }
        }
    }
    if (g->losses >= 0 && g->losses < g->nt && first[g->losses] >= 0 && last[g->losses] < end_fwd) last[g->losses] = end_fwd;
}

/* Linear scan over the schedule, for graphs too large for the greedy placement below (which
 * compares every activation with every placed one that shares a unit: quadratic, about 40
 * minutes for a DeepSeek-V3-sized plan of a few hundred thousand activations). At each unit, the
 * activations it starts are placed (largest first) at the lowest free offset that fits, then the
 * ones it ends are freed. Free space is a list of (offset, length) blocks in address order,
 * coalesced on free. The result is a valid plan by the same rule (mem_verify checks both); it
 * packs somewhat less tightly than the greedy, so small graphs keep the greedy. */
typedef struct {
    int64_t off, len;
} Block;

static const Graph *scan_graph;
static int by_first_then_size(const void *a, const void *b) {
    const GTensor *x = &scan_graph->t[*(const int *)a], *y = &scan_graph->t[*(const int *)b];
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return *(const int *)a - *(const int *)b;
}
static int by_last(const void *a, const void *b) {
    const GTensor *x = &scan_graph->t[*(const int *)a], *y = &scan_graph->t[*(const int *)b];
    if (x->last != y->last) return x->last < y->last ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

static int64_t place_by_scan(Graph *g, int *order, int n) {
    int *ends = xmalloc((size_t)(n ? n : 1) * sizeof *ends);
    memcpy(ends, order, (size_t)n * sizeof *ends);
    scan_graph = g;
    qsort(order, (size_t)n, sizeof *order, by_first_then_size);
    qsort(ends, (size_t)n, sizeof *ends, by_last);
    Block *free_ = xmalloc(sizeof *free_);
    int nf = 0, cap = 1;
    int64_t top = 0;
    for (int a = 0, e = 0; a < n || e < n;) {
        /* the next unit with an event: its starts are placed before its ends are freed */
        int u = a < n && g->t[order[a]].first <= g->t[ends[e]].last ? g->t[order[a]].first : g->t[ends[e]].last;
        for (; a < n && g->t[order[a]].first == u; a++) {
            GTensor *t = &g->t[order[a]];
            int64_t size = align_up(t->bytes);
            int k = 0;
            while (k < nf && free_[k].len < size) k++;
            if (k < nf) { /* first fit */
                t->offset = free_[k].off;
                free_[k].off += size, free_[k].len -= size;
                if (!free_[k].len) memmove(free_ + k, free_ + k + 1, (size_t)(--nf - k) * sizeof *free_);
            } else if (nf && free_[nf - 1].off + free_[nf - 1].len == top) { /* grow the last free block */
                t->offset = free_[--nf].off;
                top = t->offset + size;
            } else {
                t->offset = top;
                top += size;
            }
        }
        for (; e < n && g->t[ends[e]].last == u; e++) {
            const GTensor *t = &g->t[ends[e]];
            int64_t lo = t->offset, len = align_up(t->bytes);
            int lo_k = 0, hi_k = nf; /* the first block above lo */
            while (lo_k < hi_k) {
                int mid = (lo_k + hi_k) / 2;
                if (free_[mid].off < lo) lo_k = mid + 1;
                else hi_k = mid;
            }
            int k = lo_k;
            int left = k > 0 && free_[k - 1].off + free_[k - 1].len == lo, right = k < nf && lo + len == free_[k].off;
            if (left && right) {
                free_[k - 1].len += len + free_[k].len;
                memmove(free_ + k, free_ + k + 1, (size_t)(--nf - k) * sizeof *free_);
            } else if (left) {
                free_[k - 1].len += len;
            } else if (right) {
                free_[k].off = lo, free_[k].len += len;
            } else {
                if (nf == cap) free_ = xrealloc(free_, (size_t)(cap *= 2) * sizeof *free_);
                memmove(free_ + k + 1, free_ + k, (size_t)(nf - k) * sizeof *free_);
                free_[k].off = lo, free_[k].len = len;
                nf++;
            }
        }
    }
    free(free_);
    free(ends);
    return top;
}

void mem_plan(Graph *g) { mem_plan_with(g, MEM_PLAN_AUTO); }

void mem_plan_with(Graph *g, MemPlanMethod method) {
    int *first = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int)), *last = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof(int));
    liveness(g, first, last);
    for (int i = 0; i < g->nt; i++) g->t[i].first = first[i], g->t[i].last = last[i];
    free(first);
    free(last);
    memset(g->class_bytes, 0, sizeof g->class_bytes);
    int *order = xmalloc((size_t)(g->nt ? g->nt : 1) * sizeof *order), n = 0;
    for (int i = 0; i < g->nt; i++) {
        GTensor *t = &g->t[i];
        if (t->cls != TC_ACT) {
            t->offset = g->class_bytes[t->cls];
            g->class_bytes[t->cls] += align_up(t->bytes);
        } else if (t->first >= 0) {
            order[n++] = i;
        } else {
            t->offset = 0; /* never touched by a training step */
        }
    }
    if (method == MEM_PLAN_SCAN || (method == MEM_PLAN_AUTO && n > MEM_PLAN_GREEDY_MAX)) {
        g->class_bytes[TC_ACT] = place_by_scan(g, order, n);
        free(order);
        return;
    }
    /* Greedy: largest first, lowest offset that overlaps no already placed live-overlapping tensor. */
    sort_graph = g;
    qsort(order, (size_t)n, sizeof *order, by_size_desc);
    int *placed = xmalloc((size_t)(n ? n : 1) * sizeof *placed), np = 0;
    int64_t (*busy)[2] = xmalloc((size_t)(n ? n : 1) * sizeof *busy);
    int64_t peak = 0;
    for (int k = 0; k < n; k++) {
        GTensor *t = &g->t[order[k]];
        int64_t size = align_up(t->bytes);
        int nb = 0;
        for (int j = 0; j < np; j++) {
            const GTensor *u = &g->t[placed[j]];
            if (t->first <= u->last && u->first <= t->last) {
                busy[nb][0] = u->offset;
                busy[nb][1] = u->offset + align_up(u->bytes);
                nb++;
            }
        }
        qsort(busy, (size_t)nb, sizeof *busy, by_start);
        int64_t off = 0; /* first gap big enough among the busy intervals, in address order */
        for (int j = 0; j < nb; j++) {
            if (busy[j][0] >= off + size) break;
            if (busy[j][1] > off) off = busy[j][1];
        }
        t->offset = off;
        placed[np++] = order[k];
        if (off + size > peak) peak = off + size;
    }
    free(busy);
    g->class_bytes[TC_ACT] = peak;
    free(order);
    free(placed);
}

/* ---- the verifier ---------------------------------------------------------------------------- */

typedef struct {
    int id;
    int64_t lo, hi; /* bytes [lo, hi) in its class */
} Span;

static int by_class_offset(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return x->id - y->id;
}

int mem_verify(const Graph *g, char *err, size_t errlen, int64_t *count) {
    int nt = g->nt ? g->nt : 1;
    int *first = xmalloc((size_t)nt * sizeof(int)), *last = xmalloc((size_t)nt * sizeof(int));
    liveness(g, first, last);
    int64_t bad = 0;
    err[0] = 0;
    /* an activation's first access in the step must write it: nothing survives in the arena */
    char *written = calloc((size_t)nt, 1);
    for (int u = 0; u < g->nu; u++)
        for (int m = 0; m < g->u[u].nsteps; m++) {
            const GStep *s = &g->s[g->u[u].steps[m]];
            int na = op_arg_count(s->op);
            for (int k = 0; k < na && k < OP_MAX_ARGS; k++) {
                int t = s->args[k];
                if (t < 0 || g->t[t].cls != TC_ACT) continue;
                if (op_arg_reads(s->op, k, s->ints) && !written[t]) {
                    if (!bad++) snprintf(err, errlen, "activation %s is read (unit %d, %s) before any unit of the step writes it", g->t[t].name, u,
                                         fp8c_op_info[s->op].name);
                }
            }
            for (int k = 0; k < na && k < OP_MAX_ARGS; k++)
                if (s->args[k] >= 0 && op_arg_writes(s->op, k)) written[s->args[k]] = 1;
        }
    free(written);
    for (int c = 0; c < TC_COUNT; c++) {
        Span *sp = xmalloc((size_t)nt * sizeof *sp);
        int n = 0;
        for (int i = 0; i < g->nt; i++) {
            const GTensor *t = &g->t[i];
            if (t->cls != (TensorClass)c || t->bytes == 0 || (c == TC_ACT && first[i] < 0)) continue;
            if (t->offset < 0 || t->offset + t->bytes > g->class_bytes[c]) {
                if (!bad++) snprintf(err, errlen, "%s [%lld, %lld) lies outside its class (%s, %lld bytes)", t->name, (long long)t->offset,
                                     (long long)(t->offset + t->bytes), fp8c_tensor_class_names[c], (long long)g->class_bytes[c]);
                continue;
            }
            sp[n++] = (Span){i, t->offset, t->offset + t->bytes};
        }
        qsort(sp, (size_t)n, sizeof *sp, by_class_offset);
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n && sp[j].lo < sp[i].hi; j++) {
                int a = sp[i].id, b = sp[j].id;
                if (c == TC_ACT && (last[a] < first[b] || last[b] < first[a])) continue; /* never live together */
                if (bad++) continue;
                char live[96] = "";
                if (c == TC_ACT) snprintf(live, sizeof live, " while both are live (units %d-%d and %d-%d)", first[a], last[a], first[b], last[b]);
                snprintf(err, errlen, "%s [%lld, %lld) and %s [%lld, %lld) share bytes of %s%s", g->t[a].name, (long long)sp[i].lo,
                         (long long)sp[i].hi, g->t[b].name, (long long)sp[j].lo, (long long)sp[j].hi, fp8c_tensor_class_names[c], live);
            }
        free(sp);
    }
    free(first);
    free(last);
    if (count) *count = bad;
    return bad ? -1 : 0;
}
