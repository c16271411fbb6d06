#!/bin/sh
# CPU benchmarks, side by side in one run (bench/RESULTS.md has the figures and the machine).
#   sh bench/cpu/run.sh [quick|full]     from the repository root, after `ninja`
#   BENCH_ONLY=kernels|peer|fp8|scale|tokens|profile|llmc|val sh bench/cpu/run.sh     one section
# 1. kernels: this CPU's measured FP32 FMA peak and the GEMM, attention and quantize kernels
#    alone at the benchmark models' shapes (bench/cpu/kernels.c), in GFLOP/s and % of peak;
# 2. peer: fp8c's full training step against a JAX/XLA implementation of the same step
#    (bench/cpu/peer_jax.py; JAX from PyPI, installed into bench/.venv on first use), tiny
#    16 x 128 under fp32, bf16 and deepseek_v3 and gpt2-124m 4 x 64 under fp32 (`full` adds
#    gpt2-124m 4 x 1024, minutes per step); the two run interleaved in one process, round by
#    round, and the table gives the per-round ratio;
# 2b. fp8: what an FP8 step costs against a BF16 one in fp8c: tiny 16 x 128 under bf16 and every
#    shipped FP8 policy, alternating run by run (8 rounds, 4 in quick), every step after the first pooled;
# 3. scale: fp8c's tiny step at 16 x T for T = 128..1024 against the FLOP count's prediction
#    (T values alternating over rounds, steps pooled); 3b. tokens: the same against B at T = 128
#    (B = 64 also in one pass, --split 1);
# 4. profile: FP8C_PROFILE=1 per-op-kind times of tiny under the three policies;
# 5. if /tmp/llmc/train_gpt2 exists (llm.c's CPU trainer, built outside this repository, see
#    bench/RESULTS.md), its step time next to fp8c's fp32 policy on the same GPT-2 124M shape;
# 6. validation loss after 300 steps on tinyshakespeare (../shared/data), bf16 vs FP8 policies.
# Prints markdown tables. Timings on a shared 2-core machine are noisy: compare ratios.
set -u
fp8c=${FP8C:-build/fp8c} # FP8C=path times another binary (a snapshot, a baseline build)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mode=${1:-}
quick=""
[ "$mode" = quick ] && quick=1
data=../shared/data/tinyshakespeare.txt
venv=bench/.venv
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

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

# A copy of model file $1 with seq_len and max_seq_len set to $2 and micro_batch to $3: its path.
with_shape() {
    f="$out/shape-$3x$2.yaml"
    sed -e "s/^\(  *seq_len:\).*/\1 $2/" -e "s/^\(  *max_seq_len:\).*/\1 $2/" \
        -e "s/^\(  *micro_batch:\).*/\1 $3/" "$1" >"$f"
    echo "$f"
}

only=${BENCH_ONLY:-}   # kernels | peer | fp8 | scale | tokens | profile | llmc | val: run one section
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

if want kernels; then
    echo "## Kernels alone (bench/cpu/kernels.c, OMP_NUM_THREADS=$OMP_NUM_THREADS)"
    echo
    if cc -std=gnu11 -O2 -fno-math-errno -fopenmp -Iruntime -Iruntime/cpu -Icompiler bench/cpu/kernels.c runtime/cpu/ref*.c \
        runtime/quant.c runtime/fp8.c -lm -o "$out/kernels" 2>"$out/err"; then
        "$out/kernels"
    else
        echo "kernels: build failed"
        cat "$out/err"
    fi
    echo
fi

if want peer; then
    if ! "$venv/bin/python" -c "import jax" 2>/dev/null; then
        echo "(installing jax[cpu] into $venv)" >&2
        python3 -m venv "$venv" && "$venv/bin/pip" install -q "jax[cpu]" >&2
    fi
    echo "## Full training step: fp8c against JAX/XLA (bench/cpu/peer_jax.py), interleaved rounds"
    echo
    "$venv/bin/python" -c "import jax; print('JAX', jax.__version__, 'on', jax.devices()[0].platform, end='; ')"
    echo "OMP_NUM_THREADS=$OMP_NUM_THREADS for fp8c, XLA's own thread pool (one thread per core)."
    echo
    echo "| model, B x T | policy | fp8c ms/step (per round) | XLA ms/step (per round) | fp8c / XLA speed (per round) | median |"
    echo "|---|---|---|---|---|---|"
    rounds=3
    [ -n "$quick" ] && rounds=2
    specs="examples/tiny/model.yaml:fp32:6:$rounds:tiny, 16 x 128
examples/tiny/model.yaml:bf16:6:$rounds:tiny, 16 x 128
examples/tiny/model.yaml:deepseek_v3:6:$rounds:tiny, 16 x 128
bench/cpu/gpt2-124m-t64.yaml:fp32:3:$rounds:gpt2-124m, 4 x 64"
    [ "$mode" = full ] && specs="$specs
examples/gpt2-124m/model.yaml:fp32:2:1:gpt2-124m, 4 x 1024"
    echo "$specs" >"$out/specs"
    while IFS=: read -r model pol steps r label; do
        if "$venv/bin/python" bench/cpu/peer_jax.py "$model" "$pol" --fp8c "$fp8c" --steps "$steps" --rounds "$r" \
            >"$out/peer.json" 2>"$out/err" </dev/null; then
            python3 - "$out/peer.json" "$label" "$pol" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
f, p = r["fp8c_ms"], r["peer_ms"]
ratio = [b / a for a, b in zip(f, p)]
j = lambda v, fmt: ", ".join(fmt % x for x in v)
print("| %s | %s | %s | %s | %s | **%.2fx** |" % (sys.argv[2], sys.argv[3], j(f, "%.0f"), j(p, "%.0f"),
      j(ratio, "%.2fx"), statistics.median(ratio)))
PY
        else
            echo "| $label | $pol | failed: $(tail -1 "$out/err") | | | |"
        fi
    done <"$out/specs"
    echo
fi

if want fp8; then
    rounds=8
    [ -n "$quick" ] && rounds=4
    fp8pols="deepseek_v3 te_current te_delayed mxfp8 fp8_trainer"
    echo "## FP8 against BF16 in fp8c (tiny 16 x 128; bf16 and every shipped FP8 policy alternating, $rounds rounds of 16 steps)"
    echo
    for r in $(seq "$rounds"); do
        for pol in bf16 $fp8pols; do
            $fp8c train examples/tiny/model.yaml "policies/$pol.yaml" --steps 16 --eval-batches 1 \
                --log "$out/fp8-$pol-$r.jsonl" --progress-every 1000 >/dev/null 2>"$out/err" || echo "$pol: failed"
        done
    done
    python3 - "$out" "$rounds" $fp8pols <<'PY'
import json, sys, statistics
d, R, pols = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med, pooled = {}, {}
for pol in ["bf16"] + pols:
    med[pol], pooled[pol] = [], []
    for r in range(1, R + 1):
        v = [1000.0 * 2048 / json.loads(l)["tokens_per_s"] for l in open("%s/fp8-%s-%d.jsonl" % (d, pol, r))][1:]
        med[pol].append(statistics.median(v))
        pooled[pol] += v
print("| policy | ms/step, pooled median (fastest) | / bf16, pooled median | / bf16, fastest steps | / bf16 per round (median of steps 2-16) |")
print("|---|---|---|---|---|")
b, bf = statistics.median(pooled["bf16"]), min(pooled["bf16"])
for pol in ["bf16"] + pols:
    m, f = statistics.median(pooled[pol]), min(pooled[pol])
    rr = [x / y for x, y in zip(med[pol], med["bf16"])]
    print("| %s | %.1f (%.1f) | %s | %.2fx | %s |" % (pol, m, f, "**%.2fx**" % (m / b) if pol != "bf16" else "1", f / bf,
          ", ".join("%.2f" % x for x in rr)))
PY
    echo
fi

if want scale; then
    rounds=3
    [ -n "$quick" ] && rounds=2
    Ts="128 256 512 1024"
    [ -n "$quick" ] && Ts="128 256 512"
    echo "## fp8c step time against sequence length (tiny, fp32, 16 x T; $rounds rounds, T = $Ts in each)"
    echo
    echo "FLOPs: linears 6 x params x tokens; causal attention 3.5 x 2 x 2 x B x H x T(T+1)/2 x hd per layer"
    echo "(forward 2 products, backward 5). 'predicted' scales the T = 128 time by the FLOP ratio. The"
    echo "T values alternate within each round and every step after a run's first is pooled, so a slow"
    echo "minute on a shared machine lands on all of them; the fastest step is the least disturbed."
    echo
    for r in $(seq "$rounds"); do
        for T in $Ts; do
            f=$(with_shape examples/tiny/model.yaml "$T" 16)
            $fp8c train "$f" policies/fp32.yaml --steps 4 --eval-batches 1 --log "$out/scale-$T-$r.jsonl" \
                --progress-every 1000 >/dev/null 2>"$out/err" || echo "T = $T: failed"
        done
    done
    python3 - "$out" "$rounds" $Ts <<'PY'
import json, sys, statistics
d, R, Ts = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3:]]
B, L, C, H, hd, F, V = 16, 4, 128, 4, 32, 384, 256
def flops(T):
    P = L * (4 * C * C + 3 * C * F) + V * C
    return 6.0 * P * B * T + L * 3.5 * 2 * 2 * B * H * T * (T + 1) / 2 * hd
ms = {}
for T in Ts:
    ms[T] = []
    for r in range(1, R + 1):
        ms[T] += [1000.0 * B * T / json.loads(l)["tokens_per_s"] for l in open("%s/scale-%d-%d.jsonl" % (d, T, r))][1:]
print("| T | tokens | ms/step fastest | ms/step median | predicted (fastest) | fastest / predicted | median / predicted | GFLOP/s (fastest) |")
print("|---|---|---|---|---|---|---|---|")
b_min, b_med = min(ms[Ts[0]]), statistics.median(ms[Ts[0]])
for T in Ts:
    lo, med = min(ms[T]), statistics.median(ms[T])
    k = flops(T) / flops(Ts[0])
    print("| %d | %d | %.0f | %.0f | %.0f | %.2f | %.2f | %.1f |" % (T, B * T, lo, med, b_min * k, lo / (b_min * k),
          med / (b_med * k), flops(T) / (lo / 1000) / 1e9))
PY
    echo
fi

if want tokens; then
    rounds=3
    [ -n "$quick" ] && rounds=2
    echo "## fp8c step time against tokens at fixed T (tiny, fp32, B x 128; $rounds rounds, B = 8 16 32 64 128 in each)"
    echo
    echo "'linear' scales the B = 16 time by B / 16. Every run trains about the same tokens (2 + 384 / B"
    echo "steps: a 2-vCPU VM slows under sustained load, so a run of more work would read slower), the B"
    echo "values alternate within each round, in reverse order every other round, and every step after a"
    echo "run's first is pooled. fp8c runs a micro-batch of more than 2048 tokens as chunks of 2048 on the"
    echo "CPU (--split auto: B = 32, 64 and 128 in 2, 4 and 8 chunks); the 'one pass' row is B = 64 with"
    echo "--split 1, in the same rounds."
    echo
    for r in $(seq "$rounds"); do
        order="8 16 32 64 128 64one"
        [ $((r % 2)) = 0 ] && order="64one 128 64 32 16 8"
        for B in $order; do
            b=${B%one} split=""
            [ "$B" != "$b" ] && split="--split 1"
            f=$(with_shape examples/tiny/model.yaml 128 "$b")
            # shellcheck disable=SC2086 # $split is empty or two words
            $fp8c train "$f" policies/fp32.yaml --steps $((2 + 384 / b)) --eval-batches 1 --log "$out/tok-$B-$r.jsonl" $split \
                --progress-every 1000 >/dev/null 2>"$out/err" || echo "B = $B: failed"
        done
    done
    python3 - "$out" "$rounds" <<'PY'
import json, sys, statistics
d, R = sys.argv[1], int(sys.argv[2])
ms = {}
rows = ("8", "16", "32", "64", "128", "64one")
for B in rows:
    ms[B] = []
    for r in range(1, R + 1):
        b = int(B.replace("one", ""))
        ms[B] += [1000.0 * b * 128 / json.loads(l)["tokens_per_s"] for l in open("%s/tok-%s-%d.jsonl" % (d, B, r))][1:]
print("| B | tokens | ms/step fastest | ms/step median | fastest / linear | median / linear |")
print("|---|---|---|---|---|---|")
for B in rows:
    b = int(B.replace("one", ""))
    print("| %s | %d | %.0f | %.0f | %.2f | %.2f |" % (B.replace("one", ", one pass"), b * 128, min(ms[B]), statistics.median(ms[B]),
          min(ms[B]) / (min(ms["16"]) * b / 16), statistics.median(ms[B]) / (statistics.median(ms["16"]) * b / 16)))
PY
    echo
fi

if want profile; then
    echo "## Per-op-kind profile (FP8C_PROFILE=1, tiny 16 x 128, 6 steps; op kinds at 2% or more)"
    echo
    for pol in fp32 bf16 deepseek_v3; do
        echo "### $pol"
        echo
        echo '```'
        FP8C_PROFILE=1 $fp8c train examples/tiny/model.yaml policies/$pol.yaml --steps 6 --eval-batches 1 \
            --progress-every 1000 2>&1 >/dev/null | awk '/profile/ {on=1; print; next} on && $4+0 >= 2.0 {print}'
        echo '```'
        echo
    done
fi

if [ -x /tmp/llmc/train_gpt2 ] && want llmc; then
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

if [ -f "$data" ] && want val; then
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
