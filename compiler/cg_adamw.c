/* cg_adamw.c: kernel instances of the templates/adamw.cuh family (see codegen.c for the contract). */
#include "fp8c.h"

int cg_gen_adamw(const Graph *g, const CgGroup *grp, CgKernel *k, char *err, size_t errlen) {
    (void)g, (void)grp, (void)k;
    snprintf(err, errlen, "the adamw template family is not written yet");
    return -1;
}

double cg_adamw_beta1 = 0.9, cg_adamw_beta2 = 0.95, cg_adamw_eps = 1e-8;
