/* zero.h: ZeRO-1 ownership, shared by the runtime (dist.c, which shards optimizer state by it)
 * and the compiler's report (emit.c, which prints what each rank holds for `--ranks N`), so the
 * table and the run cannot disagree.
 *
 * The unit of ownership is one optimizer unit of the launch schedule (a tensor's AdamW update,
 * fused with the quantization of its FP8 copies where the policy keeps them): a shard never
 * splits a tensor, so the FP8 copies' per-tensor and per-block scales are computed by one rank.
 * Units go largest first to the least-loaded rank (ties: lower unit index, lower rank): the
 * classic LPT greedy, within 4/3 of the best balance, deterministic on every rank. */
#ifndef FP8C_ZERO_H
#define FP8C_ZERO_H

#include <stdint.h>
#include <stdlib.h>

/* owner[u] in [0, ranks) for cost[0..n); load (ranks entries) receives each rank's total.
 * Returns -1 if scratch cannot be allocated. */
static inline int zero_assign(const int64_t *cost, int n, int ranks, int *owner, int64_t *load) {
    int *order = malloc(((size_t)n + 1) * sizeof *order);
    if (!order) return -1;
    for (int r = 0; r < ranks; r++) load[r] = 0;
    for (int u = 0; u < n; u++) order[u] = u;
    for (int i = 1; i < n; i++) /* insertion sort: stable, by cost descending */
        for (int j = i; j > 0 && cost[order[j]] > cost[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int r = 1; r < ranks; r++)
            if (load[r] < load[best]) best = r;
        owner[order[i]] = best;
        load[best] += cost[order[i]];
    }
    free(order);
    return 0;
}

#endif
