#!/bin/sh
# tests/gpu: the GPU tier, one command on a machine with an NVIDIA GPU (sm_89 or later):
#   sh tests/gpu/run.sh
# 1. every launch of tiny x {bf16, te_delayed, te_current, deepseek_v3 (sm_90 only)} against
#    the CPU reference (build/tests/gpu_ops: fresh random inputs, poisoned outputs, tolerances
#    documented there), for --gemm cublaslt and --gemm generated;
# 2. one full training step on the GPU and on the CPU: the step-1 loss must agree to 1e-3
#    relative and the gradient norm to 2e-2;
# 3. 50 steps of tiny on each: the loss curves must track (every step within 3% relative, the
#    last 10 steps' mean within 1.5%).
# Prints PASS/FAIL lines and "N passed, N failed". Without a GPU it says so and exits 1.
set -u
ninja >/dev/null || exit 1
FP8C=build/fp8c
probe=$(build/tests/gpu_ops /nonexistent 2>&1 | head -1)
case $probe in SKIP*) echo "tests/gpu: no usable GPU here: $probe"; echo "0 passed, 1 failed"; exit 1 ;; esac
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
arch=sm_${cc:-90}
[ "$arch" = sm_90 ] && arch=sm_90a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
count() { p=$(grep -c '^PASS' "$1"); f=$(grep -c '^FAIL' "$1"); pass=$((pass + p)); fail=$((fail + f)); }
policies="bf16 te_delayed te_current"
[ "$arch" = sm_90a ] && policies="$policies deepseek_v3"
for pol in $policies; do
    for gemm in cublaslt generated; do
        d="$tmp/$pol-$gemm"
        if ! $FP8C compile examples/tiny/model.yaml "policies/$pol.yaml" --target "$arch" --gemm $gemm -o "$d" 2>"$tmp/err"; then
            echo "FAIL compile $pol $gemm: $(head -3 "$tmp/err")"; fail=$((fail + 1)); continue
        fi
        $FP8C build "$d" --arch "$arch" >/dev/null 2>&1 || { echo "FAIL build $pol $gemm"; fail=$((fail + 1)); continue; }
        build/tests/gpu_ops "$d" "$(date +%s)" >"$tmp/ops" 2>&1
        sed "s/^\(PASS\|FAIL\) /\1 $pol\/$gemm /" "$tmp/ops" | grep '^\(PASS\|FAIL\)' | grep FAIL | head -20
        count "$tmp/ops"
        echo "ops $pol/$gemm: $(grep -c '^PASS' "$tmp/ops") pass, $(grep -c '^FAIL' "$tmp/ops") fail"
    done
done
for pol in bf16 te_delayed; do
    d="$tmp/train-$pol"
    $FP8C compile examples/tiny/model.yaml "policies/$pol.yaml" --target "$arch" -o "$d" 2>/dev/null
    $FP8C run "$d" --device cuda --steps 50 --log "$tmp/gpu.jsonl" --progress-every 10 >/dev/null 2>"$tmp/gerr" || { echo "FAIL train50 $pol on the GPU: $(tail -2 "$tmp/gerr")"; fail=$((fail + 1)); continue; }
    $FP8C run "$d" --device cpu --steps 50 --log "$tmp/cpu.jsonl" --progress-every 10 >/dev/null 2>&1
    python3 - "$tmp/gpu.jsonl" "$tmp/cpu.jsonl" "$pol" <<'PY'
import json, sys
g = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
pol = sys.argv[3]
ok1 = abs(g[0]["loss"] - c[0]["loss"]) <= 1e-3 * abs(c[0]["loss"]) and abs(g[0]["grad_norm"] - c[0]["grad_norm"]) <= 2e-2 * c[0]["grad_norm"]
print(("PASS" if ok1 else "FAIL") + " step1 %s: loss gpu %.6f cpu %.6f, grad norm gpu %.5g cpu %.5g" % (pol, g[0]["loss"], c[0]["loss"], g[0]["grad_norm"], c[0]["grad_norm"]))
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(g, c))
tail = abs(sum(a["loss"] for a in g[-10:]) - sum(b["loss"] for b in c[-10:])) / abs(sum(b["loss"] for b in c[-10:]))
ok = len(g) == len(c) == 50 and worst <= 0.03 and tail <= 0.015
print(("PASS" if ok else "FAIL") + " train50 %s: worst step %.2f%%, last-10 mean %.2f%% apart (gpu %.4f, cpu %.4f)" % (pol, 100 * worst, 100 * tail, g[-1]["loss"], c[-1]["loss"]))
PY
done >"$tmp/train"
cat "$tmp/train"
count "$tmp/train"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
