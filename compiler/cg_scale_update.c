/* cg_scale_update.c: kernel instances of the templates/scale_update.cuh family (see codegen.c for the contract). */
#include "fp8c.h"

int cg_gen_scale_update(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    (void)g, (void)grp, (void)k;
    snprintf(err, errlen, "the scale_update template family is not written yet");
    return -1;
}
