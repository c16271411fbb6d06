#!/bin/sh
# CPU benchmarks, side by side in one run (bench/RESULTS.md has the figures and the machine).
#   sh bench/cpu/run.sh [quick]      from the repository root, after `ninja`
#   BENCH_ONLY=step|llmc|val sh bench/cpu/run.sh     one section
# 1. step time of tiny and gpt2-124m under fp32, bf16 and deepseek_v3 (median over steps);
# 2. validation loss after 300 steps on tinyshakespeare (../shared/data), bf16 vs FP8 policies;
# 3. if /tmp/llmc/train_gpt2 exists (llm.c's CPU trainer, built outside this repository, see
#    bench/RESULTS.md), its step time next to fp8c's fp32 policy on the same GPT-2 124M shape.
# Prints markdown tables. Timings on a shared 2-core machine are noisy: compare ratios.
set -u
fp8c=build/fp8c
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
quick=${1:-}
data=../shared/data/tinyshakespeare.txt

step_ms() { # model, policy, steps -> prints median ms per step (from tokens/s of each step)
    $fp8c train "$1" "policies/$2.yaml" --steps "$3" --eval-batches 1 --log "$out/log.jsonl" --progress-every 1000 \
        >/dev/null 2>"$out/err" || { echo "failed"; return; }
    python3 - "$out/log.jsonl" "$1" <<'PY'
import json, sys, statistics, re
rows = [json.loads(l) for l in open(sys.argv[1])]
txt = open(sys.argv[2]).read()
B = int(re.search(r"^\s+micro_batch:\s*(\d+)", txt, re.M).group(1)); T = int(re.search(r"^\s+seq_len:\s*(\d+)", txt, re.M).group(1))
use = rows[1:] if len(rows) > 2 else rows
print("%.0f" % statistics.median([1000.0 * B * T / r["tokens_per_s"] for r in use]))
PY
}

only=${BENCH_ONLY:-}   # step | llmc | val: run one section
if [ -z "$only" ] || [ "$only" = step ]; then
echo "## Step time (ms per optimizer step, median)"
echo
echo "| model | tokens/step | fp32 | bf16 | deepseek_v3 | deepseek_v3 / bf16 |"
echo "|---|---|---|---|---|---|"
for m in tiny gpt2-124m; do
    steps=20
    [ $m = gpt2-124m ] && steps=4
    [ -n "$quick" ] && steps=3
    f=$(step_ms examples/$m/model.yaml fp32 $steps)
    b=$(step_ms examples/$m/model.yaml bf16 $steps)
    d=$(step_ms examples/$m/model.yaml deepseek_v3 $steps)
    tok=$(python3 -c "import re;t=open('examples/$m/model.yaml').read();print(int(re.search(r'^\s+micro_batch:\s*(\d+)',t,re.M).group(1))*int(re.search(r'^\s+seq_len:\s*(\d+)',t,re.M).group(1)))")
    echo "| $m | $tok | $f | $b | $d | $(python3 -c "print('%.2f' % ($d / $b))" 2>/dev/null) |"
done
echo
fi

if [ -x /tmp/llmc/train_gpt2 ] && { [ -z "$only" ] || [ "$only" = llmc ]; }; then
    echo "## GPT-2 124M step time against llm.c's CPU trainer (B=4, T=64)"
    echo
    f=$(step_ms bench/cpu/gpt2-124m-t64.yaml fp32 12)
    l=$(cd /tmp/llmc && OMP_NUM_THREADS=2 timeout 100 ./train_gpt2 2>&1 | sed -n 's/.*(took \([0-9.]*\) ms).*/\1/p' |
        python3 -c "import sys,statistics; v=[float(x) for x in sys.stdin.read().split()][1:]; print('%.0f' % statistics.median(v) if v else 'failed')")
    echo "| program | ms per step | speedup of fp8c |"
    echo "|---|---|---|"
    echo "| llm.c train_gpt2.c (fp32) | $l | |"
    echo "| fp8c, policies/fp32.yaml | $f | $(python3 -c "print('%.2fx' % ($l / $f))" 2>/dev/null) |"
    echo
fi

if [ -f "$data" ] && { [ -z "$only" ] || [ "$only" = val ]; }; then
    steps=300
    [ -n "$quick" ] && steps=60
    echo "## Validation loss after $steps steps, tiny on tinyshakespeare (bytes)"
    echo
    echo "| policy | val loss | vs bf16 | wall time (s) |"
    echo "|---|---|---|---|"
    for pol in bf16 te_delayed deepseek_v3 mxfp8; do
        t0=$(date +%s)
        $fp8c train examples/tiny/model.yaml policies/$pol.yaml --data "$data" --steps $steps --log "$out/$pol.jsonl" \
            --progress-every 1000 >/dev/null 2>"$out/err"
        t1=$(date +%s)
        python3 - "$out/$pol.jsonl" "$out/bf16.jsonl" "$pol" $((t1 - t0)) <<'PY'
import json, sys
v = [json.loads(l) for l in open(sys.argv[1])][-1]["val_loss"]
b = [json.loads(l) for l in open(sys.argv[2])][-1]["val_loss"]
print("| %s | %.4f | %+.2f%% | %s |" % (sys.argv[3], v, 100 * (v - b) / b, sys.argv[4]))
PY
    done
fi
