#!/bin/sh
# Coverage-guided fuzzing of the YAML front end with libFuzzer (clang).
#   tests/fuzz/run.sh [SECONDS]     default 120; run from the repository root
# Installs clang and its fuzzer runtime from Debian when missing. Starts from the shipped
# policies, the examples and the bad-input corpus; new interesting inputs go to
# build/fuzz/corpus; crashers are written to build/fuzz/ (crash-*): copy a fixed one into
# tests/fuzz/corpus/ so that `ninja test` replays it forever.
set -eu
secs=${1:-120}
if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    echo "fuzz: installing clang and libclang-rt-dev" >&2
    apt-get install -y clang libclang-rt-dev >/dev/null 2>&1 || apt-get install -y clang libclang-rt-14-dev
fi
mkdir -p build/fuzz/corpus build/fuzz/seeds
cp policies/*.yaml build/fuzz/seeds/
for e in examples/*/model.yaml; do cp "$e" "build/fuzz/seeds/$(basename "$(dirname "$e")").yaml"; done
for f in tests/bad/*/*.yaml tests/fuzz/corpus/*; do
    [ -f "$f" ] && cp "$f" "build/fuzz/seeds/$(echo "$f" | tr / _)"
done
ninja build/gen/templates.c >/dev/null || exit 1 # the embedded templates (codegen checks fusions)
clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Icompiler tests/fuzz/fuzz_front.c compiler/util.c compiler/diag.c compiler/yaml.c compiler/model.c \
    compiler/recipes.c compiler/policy.c compiler/resolve.c compiler/emit.c compiler/explain.c \
    compiler/lower.c compiler/memplan.c compiler/schedule.c compiler/opnames.c compiler/codegen.c compiler/cg_*.c build/gen/templates.c \
    runtime/quant.c runtime/fp8.c -Iruntime -Iruntime/cpu \
    -Wl,-Bstatic -lyaml -Wl,-Bdynamic -lm -o build/fuzz/fuzz_front
echo "fuzz: running for ${secs}s" >&2
cd build/fuzz
./fuzz_front -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 corpus seeds
