/* replay.c: runs the fuzz target over files given on the command line, without libFuzzer, so
 * the test suite (and its sanitizer build) checks every corpus input on every machine. Prints
 * one PASS line per file; a crash is a failed test run. Linked once per target (fuzz_replay,
 * fuzz_replay_plan, fuzz_replay_safetensors). */
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int main(int argc, char **argv) {
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            printf("FAIL fuzz_replay %s: cannot open\n", argv[i]);
            failed = 1;
            continue;
        }
        size_t cap = 1 << 16, n = 0, got;
        unsigned char *buf = malloc(cap);
        while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0)
            if ((n += got) == cap) buf = realloc(buf, cap *= 2);
        fclose(f);
        if (!buf) {
            printf("FAIL fuzz_replay %s: out of memory\n", argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        printf("PASS fuzz_replay %s\n", argv[i]);
        fflush(stdout);
    }
    return failed;
}
