#!/bin/sh
# The host tier (tests/host): every kernel of every example x shipped policy, executed on the CPU.
# Each example is shrunk (tests/schedule/shrink.py: 2 layers, d_model 128, 2 x 64 tokens; the
# templates are never changed to shrink), compiled for sm_90a (mxfp8: sm_100a) with
# --gemm generated, so that FP8 GEMMs run on the generated mma.sync kernel, and every launch of
# the plan runs through tests/gpu's harness on `--device host`: the emitted kernels/*.cu compiled
# with g++ -O1 against the CUDA shim, each launch twice (ascending and descending thread order,
# identical bytes required), every output against the CPU reference with gpu_ops's tolerances.
# Units the host tier cannot run are SKIP lines in gpu_ops's output, counted here, not passed:
# cuBLASLt GEMMs (the non-FP8 matmuls) and steps the plan has no CUDA kernel for (mxfp8's
# block-scaled GEMM).
#   sh tests/host/run.sh FP8C GPU_OPS [--quick]
# --quick (what `ninja test` runs): tiny x {te_delayed, deepseek_v3, bf16} and gpt2-124m x
# te_current (LayerNorm, GELU, biases, learned positions). Without it, the whole matrix (.ci/run).
# The shared objects are cached in $FP8C_HOST_CACHE (default build/host-kernels).
fp8c=$1
gpu_ops=$2
quick=0
[ "${3:-}" = --quick ] && quick=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export FP8C_HOST_CACHE="${FP8C_HOST_CACHE:-build/host-kernels}"

run_case() { # example policy
    ex=$1
    pol=$2
    case=${ex}_x_$pol
    arch=sm_90a
    [ "$pol" = mxfp8 ] && arch=sm_100a
    python3 tests/schedule/shrink.py "examples/$ex/model.yaml" "$tmp/$ex.yaml"
    d="$tmp/$case"
    if ! "$fp8c" compile "$tmp/$ex.yaml" "policies/$pol.yaml" --target $arch --gemm generated -o "$d" >"$tmp/err" 2>&1; then
        echo "FAIL host_$case: fp8c compile failed: $(grep error "$tmp/err" | head -1)"
        return
    fi
    start=$(date +%s)
    "$gpu_ops" --device host "$d" >"$tmp/ops" 2>"$tmp/err"
    secs=$(($(date +%s) - start))
    last=$(grep '^\(PASS\|FAIL\) gpu_ops' "$tmp/ops" | tail -1)
    nskip=$(grep -c '^SKIP ' "$tmp/ops")
    kinds=$(grep '^SKIP ' "$tmp/ops" | sed 's/^SKIP [a-z]*:[0-9]* //; s/:.*//' | sort | uniq -c | awk '{printf "%s%s x%s", s, $2" "$3, $1; s=", "}')
    case $last in
    PASS*) echo "PASS host_$case: ${last#*: } (${secs}s)${kinds:+; skipped: $kinds}" ;;
    *)
        echo "FAIL host_$case: ${last:-gpu_ops died}"
        grep '^FAIL ' "$tmp/ops" | grep -v '^FAIL gpu_ops' | head -5 | sed 's/^/    | /'
        tail -3 "$tmp/err" | sed 's/^/    | /'
        ;;
    esac
    rm -rf "$d"
}

if [ $quick = 1 ]; then
    run_case tiny te_delayed
    run_case tiny deepseek_v3
    run_case tiny bf16
    run_case gpt2-124m te_current
else
    # every distinct shrunk architecture (examples that shrink to the same model run once), every
    # shipped policy the example takes: as tests/schedule, the golden files' `only` and `refuse`
    # lines, and the MoE budget subset (each MoE step runs every expert over a full buffer)
    seen=""
    for m in examples/*/model.yaml; do
        ex=$(basename "$(dirname "$m")")
        python3 tests/schedule/shrink.py "$m" "$tmp/arch.yaml"
        sum=$(grep -v '^ *#' "$tmp/arch.yaml" | sed 's/ *#.*//; /^ *name:/d' | md5sum | cut -c1-12)
        if echo "$seen" | grep -q "$sum"; then
            echo "host tier: $ex shrinks to the same model as $(echo "$seen" | tr ' ' '\n' | grep "$sum" | cut -d= -f1); not run twice"
            continue
        fi
        seen="$seen $ex=$sum"
        golden=tests/golden/models/$ex.txt
        only=$(sed -n 's/^only //p' "$golden" 2>/dev/null)
        grep -q '^ *ffn: *moe' "$m" && [ -z "$only" ] && only="bf16 te_delayed deepseek_v3 deepseek_v3_q_a_norm_fp16"
        for pol in policies/*.yaml; do
            p=$(basename "$pol" .yaml)
            if [ -n "$only" ] && ! echo " $only " | grep -q " $p "; then continue; fi
            grep -q "^refuse $p " "$golden" 2>/dev/null && continue # the policy names paths this example lacks
            run_case "$ex" "$p"
        done
    done
fi
