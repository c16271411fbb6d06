/* test_dist_ccl.c: the NCCL bootstrap over MPI (dist_ccl_id, dist_ccl_init), run by
 * tests/dist/run.sh under `mpirun -np 2`. Rank 0 creates NCCL's unique id (no GPU needed) and MPI
 * broadcasts it: every rank must hold the same 128 bytes, and not all zeros. ncclCommInitRank then
 * needs a GPU: on a machine without one it must fail with NCCL's message, never crash or hang;
 * with one it must succeed. Only rank 0 prints. */
#include <stdio.h>
#include <string.h>

#include "dist.h"

int main(void) {
    Plan p;
    memset(&p, 0, sizeof p);
    p.train.grad_accum = 2; /* what dist_init checks against the rank count */
    p.train.micro_batch = 1;
    p.train.seq_len = 1;
    Dist d;
    char err[1024] = "";
    if (dist_init(&d, &p, 0, err, sizeof err)) {
        printf("FAIL dist_init: %s\n", err);
        return 1;
    }
    int fails = 0;
    unsigned char id[128] = {0}, all[128 * 8];
    if (d.size < 2 || d.size > 8) {
        printf("FAIL nccl_id_broadcast: run under mpirun -np 2..8 (got %d ranks)\n", d.size);
        dist_end(&d, 1);
        return 1;
    }
    if (dist_ccl_id(&d, id, err, sizeof err) || dist_allgather_bytes(&d, id, 128, all, err, sizeof err)) {
        if (!d.rank) printf("FAIL nccl_id_broadcast: %s\n", err);
        fails++;
    } else {
        int same = 1, nonzero = 0;
        for (int r = 1; r < d.size; r++) same &= !memcmp(all, all + 128 * r, 128);
        for (int i = 0; i < 128; i++) nonzero |= id[i];
        if (!d.rank) {
            if (same && nonzero) printf("PASS nccl_id_broadcast (%d ranks hold rank 0's NCCL unique id)\n", d.size);
            else printf("FAIL nccl_id_broadcast: %s\n", same ? "the id is all zeros" : "ranks hold different ids");
        }
        fails += !(same && nonzero);
    }
    char why[512];
    int gpu = cu_probe(why, sizeof why);
    if (!gpu) { /* the communicator cannot form without a GPU: it must say so, on every rank */
        Ccl *c = ccl_init(d.rank, d.size, id, err, sizeof err);
        int ok = !c && strstr(err, "ncclCommInitRank failed");
        if (c) ccl_free(c, 1);
        if (!d.rank) {
            if (ok) printf("PASS nccl_init_without_gpu_fails_cleanly (no GPU: %s; NCCL said: %s)\n", why, err);
            else printf("FAIL nccl_init_without_gpu_fails_cleanly: %s\n", c ? "succeeded without a GPU" : err);
        }
        fails += !ok;
    } else {
        Ccl *c = dist_ccl_init(&d, err, sizeof err);
        if (!d.rank) {
            if (c) printf("PASS nccl_communicator (%d ranks)\n", d.size);
            else printf("FAIL nccl_communicator: %s\n", err);
        }
        fails += !c;
        ccl_free(c, 0);
    }
    dist_end(&d, 1);
    return fails ? 1 : 0;
}
