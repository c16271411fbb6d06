#!/bin/sh
# The test suite: runs every test program against one build directory and ends with the line
# "N passed, N failed". Each program prints one "PASS name" or "FAIL name: why" line per case;
# a program that dies without saying FAIL is counted as one failure.
#   sh tests/run.sh build        (what `ninja test` runs)
#   sh tests/run.sh build/asan   (what `ninja test-asan` runs: ASan + UBSan builds)
B=${1:-build}
log=$(mktemp)
trap 'rm -rf "$log"' EXIT
pass=0
fail=0

run() { # name, command...
    name=$1
    shift
    t0=$(date +%s)
    "$@" >"$log" 2>"$log.err"
    rc=$?
    echo "# $name: $(($(date +%s) - t0)) s" >&2 # each tier's wall time, on stderr
    cat "$log"
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exit status $rc"
        sed 's/^/    | /' "$log.err" | tail -20
        f=1
    fi
    pass=$((pass + p))
    fail=$((fail + f))
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1
stride=1
case $B in *asan*) stride=65521; export FP8C_E2E_FAST=1 ;; esac

run test_front "$B/tests/test_front"
run test_fp8 "$B/tests/test_fp8" --stride $stride
run test_quant "$B/tests/test_quant"
[ -x "$B/tests/test_quant_v3" ] && run test_quant_v3 "$B/tests/test_quant_v3"
run test_lt "$B/tests/test_lt"
run cuda_header_checks "$B/tests/check_cuda_headers"
run comm_header_checks "$B/tests/check_comm_headers"
run test_jit "$B/tests/test_jit"
run test_safetensors "$B/tests/test_safetensors"
run test_data "$B/tests/test_data"
run test_ops "$B/tests/test_ops"
run test_model_grad "$B/tests/test_model_grad"
run test_mla_moe "$B/tests/test_mla_moe"
run test_schedule "$B/tests/test_schedule"
run golden python3 tests/golden/check.py "$B/fp8c"
run bad_inputs sh tests/bad/run.sh "$B/fp8c"
run e2e sh tests/e2e/run.sh "$B/fp8c"
run ckpt sh tests/ckpt/run.sh "$B/fp8c"
run schedule sh tests/schedule/run.sh "$B/fp8c" "$B/tests/gpu_ops"
run dist sh tests/dist/run.sh "$B/fp8c"
run test_host_shim "$B/tests/test_host_shim"
# the host tier: emitted kernels executed on the CPU (tests/host); the whole matrix is .ci/run's
case $B in *asan*) ;; *) run host_tier sh tests/host/run.sh "$B/fp8c" "$B/tests/gpu_ops" --quick ;; esac
case $B in *asan*) ;; *) run nvrtc sh tests/nvrtc/run.sh "$B/fp8c" ;; esac
# the GPU tier's script itself, against the exact stand-in device (no GPU needed)
case $B in *asan*) ;; *) FP8C_GPU_NO_BUILD=1 run gpu_script_standin sh tests/gpu/run.sh --stand-in ;; esac
# the CUDA backend on the test-double driver and cuBLASLt (tests/cudadouble): the doubles on
# their own, then the GPU tier's three parts against them, every policy of the tier
case $B in *asan*) ;; *) run test_doubles "$B/tests/test_doubles" "$B/tests" ;; esac
case $B in *asan*) ;; *) FP8C_GPU_NO_BUILD=1 run gpu_double sh tests/gpu/run.sh --double ;; esac
# shellcheck disable=SC2046
run fuzz_replay "$B/tests/fuzz_replay" $(ls policies/*.yaml examples/*/model.yaml tests/bad/*/*.yaml tests/fuzz/corpus/* 2>/dev/null)
run test_io "$B/tests/test_io"
# shellcheck disable=SC2046
run fuzz_replay_plan "$B/tests/fuzz_replay_plan" $(ls tests/fuzz/corpus-plan/* 2>/dev/null)
# shellcheck disable=SC2046
run fuzz_replay_safetensors "$B/tests/fuzz_replay_safetensors" $(ls tests/fuzz/corpus-safetensors/* 2>/dev/null)
run hardening sh tests/hardening/run.sh "$B/fp8c"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
