/* replay.c: runs the fuzz target over files given on the command line, without libFuzzer, so
 * the test suite (and its sanitizer build) checks every corpus input on every machine. Prints
 * one PASS line per file; a crash is a failed test run. */
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
        static unsigned char buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        printf("PASS fuzz_replay %s\n", argv[i]);
        fflush(stdout);
    }
    return failed;
}
