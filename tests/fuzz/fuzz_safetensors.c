/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (runtime/safetensors.c). Each
 * input is a whole file; st_parse must refuse it with a message or return a file whose every
 * tensor lies inside the bytes it was given, with a size that matches its dtype and shape.
 * Build and run: tests/fuzz/run.sh safetensors [SECONDS]. Replayed by tests/fuzz/replay.c. */
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char err[512];
    StFile *f = st_parse(data, size, "fuzz.safetensors", err, sizeof err);
    if (!f) {
        if (!err[0]) abort(); /* a refusal always says why */
        return 0;
    }
    volatile unsigned sum = 0;
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *t = st_at(f, i);
        size_t n = st_dtype_size(t->dtype);
        for (int k = 0; k < t->ndim; k++) n *= (size_t)t->shape[k];
        if (!n && t->nbytes) abort();
        if (n != t->nbytes || st_find(f, t->name) != t) abort();
        const unsigned char *b = t->data;
        for (size_t k = 0; k < t->nbytes; k++) sum += b[k]; /* ASan: inside the buffer */
    }
    for (int i = 0; i < st_meta_count(f); i++)
        if (st_meta(f, st_meta_at(f, i)->key) == NULL) abort();
    st_free(f);
    return 0;
}
