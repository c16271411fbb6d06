/* cg_scale_update.c: kernel instances of the templates/scale_update.cuh family (see codegen.c
 * for the contract): every scale_update step of the program in one launch (FUSE_SCALE_UPDATE),
 * or one step alone (FUSE_NONE, when the fused group was refused).
 *
 * The kernel takes one pointer, the base of the scales allocation, and the body carries a literal
 * table of byte offsets and attributes, one entry per step; the table makes the instance
 * plan-specific, so its name holds the entry count and a hash of the table. Must not: accept a
 * tensor outside the scales class, or steps that touch each other's tensors (one launch runs
 * them all at once, while the CPU backend runs them one after another).
 */
#include "fp8c.h"

#include <string.h>

/* FNV-1a over the table text: the kernel name's fingerprint. */
static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int check_step(const Graph *g, const GStep *s, char *err, size_t errlen) {
    if (s->op != OP_SCALE_UPDATE) {
        snprintf(err, errlen, "the scale_update family runs scale_update steps, not %s", fp8c_op_info[s->op].name);
        return -1;
    }
    static const char *const role[3] = {"history", "scale", "amax"};
    for (int a = 0; a < 3; a++) {
        int t = s->args[a];
        if (t < 0 || g->t[t].cls != TC_SCALE || g->t[t].dtype != TD_F32) {
            snprintf(err, errlen, "scale_update: %s must be an f32 tensor of the scales class%s%s", role[a], t >= 0 ? ", not " : "",
                     t >= 0 ? g->t[t].name : "");
            return -1;
        }
    }
    int64_t len = s->ints[0], algo = s->ints[1], margin = s->ints[2], interval = s->ints[3], format = s->ints[4];
    if (len < 1 || len > (1 << 30) || interval < 1 || interval > (1 << 30) || (algo != 0 && algo != 1) || margin < -1000 ||
        margin > 1000 || format < 0 || format > 2) {
        snprintf(err, errlen, "scale_update: bad attributes (len %lld, algo %lld, margin %lld, interval %lld, format %lld)",
                 (long long)len, (long long)algo, (long long)margin, (long long)interval, (long long)format);
        return -1;
    }
    if (g->t[s->args[0]].bytes < len * 4) {
        snprintf(err, errlen, "scale_update: history %s holds fewer than len = %lld floats", g->t[s->args[0]].name, (long long)len);
        return -1;
    }
    return 0;
}

/* Steps of one launch must be independent: no tensor written by one is read or written by another. */
static int check_independent(const Graph *g, const CgGroup *grp, char *err, size_t errlen) {
    for (int i = 0; i < grp->nsteps; i++) {
        const GStep *a = &g->s[grp->step_ids[i]];
        for (int j = 0; j < grp->nsteps; j++) {
            if (i == j) continue;
            const GStep *b = &g->s[grp->step_ids[j]];
            for (int x = 0; x < 2; x++) /* a's history and scale */
                for (int y = 0; y < 3; y++)
                    if (a->args[x] == b->args[y]) {
                        snprintf(err, errlen, "scale_update: tensor %s is shared by two steps; they cannot run in one launch",
                                 g->t[a->args[x]].name);
                        return -1;
                    }
        }
    }
    return 0;
}

int cg_gen_scale_update(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    if ((grp->kind != FUSE_SCALE_UPDATE && grp->kind != FUSE_NONE) || grp->nsteps < 1 || (grp->kind == FUSE_NONE && grp->nsteps != 1)) {
        snprintf(err, errlen, "the scale_update family does not run %s groups of %d steps", fuse_names[grp->kind], grp->nsteps);
        return -1;
    }
    for (int i = 0; i < grp->nsteps; i++)
        if (check_step(g, &g->s[grp->step_ids[i]], err, errlen)) return -1;
    if (check_independent(g, grp, err, errlen)) return -1;
    int n = grp->nsteps;
    Buf table = {0};
    buf_printf(&table, "__device__ const ScaleUpdateEntry scale_update_table[%d] = {\n", n);
    buf_puts(&table, "    // history, scale, amax (byte offsets), len, algo, margin, interval, format\n");
    for (int i = 0; i < n; i++) {
        const GStep *s = &g->s[grp->step_ids[i]];
        buf_printf(&table, "    {%lld, %lld, %lld, %d, %d, %d, %d, %d}, // %s\n", (long long)g->t[s->args[0]].offset,
                   (long long)g->t[s->args[1]].offset, (long long)g->t[s->args[2]].offset, (int)s->ints[0], (int)s->ints[1],
                   (int)s->ints[2], (int)s->ints[3], (int)s->ints[4], g->t[s->args[1]].name);
    }
    buf_puts(&table, "};\n");
    snprintf(k->family, sizeof k->family, "scale_update");
    snprintf(k->name, sizeof k->name, "scale_update_n%d_%08x", n, fnv1a(table.data, table.len));
    cg_add_class_param(k, "scales", TC_SCALE, 1);
    buf_puts(&k->body, table.data);
    buf_free(&table);
    buf_printf(&k->body, "\nextern \"C\" __global__ void __launch_bounds__(256) %s(", k->name);
    cg_signature(&k->body, k);
    buf_printf(&k->body, ") {\n    (void)ws;\n    scale_update_all<%d, 256>(scales, scale_update_table, rs);\n}\n", n);
    cg_add_entry(k, k->name, (n + 7) / 8, 1, 1, 256, 1, 1, 0);
    buf_printf(&k->constants, "{\"entries\": %d, \"table\": \"%08x\"}", n, fnv1a(k->body.data, k->body.len));
    k->audit[k->naudit++] = "div.rn.f32";
    return 0;
}
