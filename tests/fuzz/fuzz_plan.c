/* fuzz_plan.c: libFuzzer target for the plan reader (runtime/plan.c). Each input is plan.json
 * text; whatever the bytes, plan_parse must report errors with a position and return, never
 * crash, hang, leak or read out of bounds. A plan it accepts is also given to the CPU backend's
 * allocator-free checks the runtime makes before training: every tensor's bytes lie inside its
 * class (what --check promises) and every init string is one the initialiser knows.
 * Build and run: tests/fuzz/run.sh plan [SECONDS]. Replayed by tests/fuzz/replay.c. */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static FILE *devnull;
    if (!devnull) devnull = fopen("/dev/null", "w");
    if (size > 1 << 20) return 0;
    char *text = malloc(size + 1); /* NUL-terminated copy: diagnostics print source lines */
    memcpy(text, data, size);
    text[size] = 0;
    Arena a = {0};
    Diag d;
    diag_init(&d, devnull);
    Plan p;
    if (plan_parse(&a, &d, "plan.json", text, size, &p) == 0) {
        /* what the reader promises the runtime (plan.c): checked again here so that a reader bug
         * that lets an inconsistent plan through is a crash the fuzzer reports */
        for (int i = 0; i < p.nt; i++) {
            const RtTensor *t = &p.t[i];
            int64_t w = fp8c_tensor_dtype_bytes[t->dtype];
            if (t->offset % w || t->offset + t->n * w > p.class_bytes[t->cls]) abort();
        }
        for (int s = 0; s < SEC_COUNT; s++)
            for (int k = 0; k < p.nsteps[s]; k++)
                for (int j = 0; j < OP_MAX_ARGS; j++)
                    if (p.steps[s][k].args[j] >= p.nt) abort();
    }
    arena_free(&a);
    free(text);
    return 0;
}
