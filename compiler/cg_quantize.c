/* cg_quantize.c: kernel instances of the templates/quantize.cuh family (see codegen.c for the contract). */
#include "fp8c.h"

int cg_gen_quantize(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    (void)g, (void)grp, (void)k;
    snprintf(err, errlen, "the quantize template family is not written yet");
    return -1;
}
