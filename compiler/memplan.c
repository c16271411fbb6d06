/* memplan.c: byte offsets of every tensor in its class's single allocation. Activations
 * (forward values kept for backward, backward gradients, quantized copies) share memory by
 * liveness over the forward + backward program: two tensors may overlap only if no step lies
 * between the first and last use of both. Every other class is packed in plan order. */
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

void mem_plan(Graph *g) {
    for (int i = 0; i < g->nt; i++) g->t[i].first = g->t[i].last = -1;
    /* liveness over forward + backward (a training step without the optimizer) */
    for (int si = 0; si < g->ns; si++) {
        const GStep *s = &g->s[si];
        if (s->sec != SEC_FORWARD && s->sec != SEC_BACKWARD) continue;
        for (int a = 0; a < OP_MAX_ARGS; a++) {
            int t = s->args[a];
            if (t < 0) continue;
            if (g->t[t].first < 0) g->t[t].first = si;
            g->t[t].last = si;
        }
    }
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
