#!/bin/sh
# Coverage-guided fuzzing with libFuzzer (clang) of the three readers of untrusted input:
#   tests/fuzz/run.sh [TARGET] [SECONDS]     run from the repository root
#     TARGET front (default): the YAML front end (model and policy files), fuzz_front.c
#            plan:           the plan reader (plan.json), fuzz_plan.c
#            safetensors:    the checkpoint reader, fuzz_safetensors.c
#     SECONDS default 120 (a lone number is the front end's time, as before)
#   FUZZ_TIMEOUT=S: seconds before one input counts as a hang (default 10; raise it on a loaded machine)
# Installs clang and its fuzzer runtime from Debian when missing. Starts from the shipped inputs
# and tests/fuzz/corpus/ (YAML), tests/fuzz/corpus-plan/ or tests/fuzz/corpus-safetensors/;
# new interesting inputs go to build/fuzz/TARGET/corpus; crashers are written to
# build/fuzz/TARGET/ (crash-*): copy a fixed one into the target's corpus directory so that
# `ninja test` replays it forever.
set -eu
target=front
case ${1:-} in front | plan | safetensors) target=$1; shift ;; esac
secs=${1:-120}
if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    echo "fuzz: installing clang and libclang-rt-dev" >&2
    apt-get install -y clang libclang-rt-dev >/dev/null 2>&1 || apt-get install -y clang libclang-rt-14-dev
fi
W=build/fuzz/$target
mkdir -p "$W/corpus" "$W/seeds"
flags="-std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Icompiler -Iruntime -Iruntime/cpu"
front_srcs="compiler/util.c compiler/diag.c compiler/yaml.c compiler/model.c compiler/recipes.c compiler/policy.c
    compiler/resolve.c compiler/emit.c compiler/explain.c compiler/lower.c compiler/memplan.c compiler/schedule.c
    compiler/opnames.c compiler/codegen.c compiler/cg_*.c build/gen/templates.c runtime/quant.c runtime/fp8.c runtime/io.c"
case $target in
front)
    cp policies/*.yaml "$W/seeds/"
    for e in examples/*/model.yaml; do cp "$e" "$W/seeds/$(basename "$(dirname "$e")").yaml"; done
    for f in tests/bad/*/*.yaml tests/fuzz/corpus/*; do
        [ -f "$f" ] && cp "$f" "$W/seeds/$(echo "$f" | tr / _)"
    done
    ninja build/gen/templates.c >/dev/null || exit 1 # the embedded templates (codegen checks fusions)
    # shellcheck disable=SC2086
    clang $flags tests/fuzz/fuzz_front.c $front_srcs -Wl,-Bstatic -lyaml -Wl,-Bdynamic -lm -o "$W/fuzz"
    maxlen=4096
    ;;
plan)
    cp tests/fuzz/corpus-plan/* "$W/seeds/"
    # shellcheck disable=SC2086
    ninja build/gen/templates.c >/dev/null || exit 1
    # shellcheck disable=SC2086
    clang $flags tests/fuzz/fuzz_plan.c runtime/plan.c $front_srcs -Wl,-Bstatic -lyaml -Wl,-Bdynamic -lm -o "$W/fuzz"
    maxlen=160000
    ;;
safetensors)
    cp tests/fuzz/corpus-safetensors/* "$W/seeds/"
    # shellcheck disable=SC2086
    clang $flags tests/fuzz/fuzz_safetensors.c runtime/safetensors.c runtime/io.c -o "$W/fuzz"
    maxlen=8192
    ;;
esac
echo "fuzz: $target for ${secs}s" >&2
cd "$W"
./fuzz -max_total_time="$secs" -max_len=$maxlen -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -print_final_stats=1 corpus seeds
