#!/bin/sh
# Step time of data-parallel training on this machine: one process against 2 MPI ranks (and 2
# ranks with --zero 1), the same plan and global batch (examples/tiny with grad_accum 2: 2 x 16 x
# 128 = 4096 tokens per step), interleaved ROUNDS times so that load from other processes hits
# every configuration alike; prints a markdown table of medians and ratios.
#   sh bench/dist/run.sh [ROUNDS] [STEPS]      from the repository root, after `ninja`
# Cores: "1 proc x 2 threads" and "2 ranks x 1 thread" use the same two cores; "1 proc x 1
# thread" is the per-core baseline. On a 2-core machine the two ranks share the cores with
# mpirun's progress threads and each other's memory bandwidth: read the ratios, not the
# absolute numbers (bench/RESULTS.md records the machine and whether it was shared).
set -u
fp8c=build/fp8c
rounds=${1:-3}
steps=${2:-8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
policy=${BENCH_POLICY:-bf16}
sed -e 's/grad_accum: 1/grad_accum: 2/' examples/tiny/model.yaml >"$out/model.yaml"
$fp8c compile "$out/model.yaml" policies/$policy.yaml --target cpu -o "$out/plan" 2>/dev/null || { echo "compile failed"; exit 1; }
mpi="mpirun --allow-run-as-root --oversubscribe"

ms() { # log -> median ms per step over steps 2..N (global tokens / step time, from rank 0's log)
    python3 - "$1" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
print("%.0f" % statistics.median([1000.0 * 4096 / r["tokens_per_s"] for r in rows]))
PY
}

run() { # name, command...
    name=$1
    shift
    "$@" --steps "$steps" --eval-batches 1 --progress-every 1000 --log "$out/log.jsonl" >/dev/null 2>"$out/err" ||
        { echo "$name failed:"; tail -5 "$out/err"; exit 1; }
    echo "$name $(ms "$out/log.jsonl")" >>"$out/times"
}

for r in $(seq "$rounds"); do
    OMP_NUM_THREADS=1 run p1t1 $fp8c run "$out/plan"
    OMP_NUM_THREADS=2 run p1t2 $fp8c run "$out/plan"
    OMP_NUM_THREADS=1 run r2 $mpi -np 2 $fp8c run "$out/plan"
    OMP_NUM_THREADS=1 run r2z $mpi -np 2 $fp8c run "$out/plan" --zero 1
done
python3 - "$out/times" "$rounds" "$steps" "$policy" <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split()
    t[k].append(float(v))
med = {k: statistics.median(v) for k, v in t.items()}
print("tiny (grad_accum 2, 4096 tokens/step), %s, %s rounds x %s steps, median ms per step (min-max over rounds)\n" % (sys.argv[4], sys.argv[2], sys.argv[3]))
print("| configuration | ms/step | vs 1 proc x 2 threads |")
print("|---|---|---|")
names = {"p1t1": "1 process x 1 thread", "p1t2": "1 process x 2 threads", "r2": "2 MPI ranks x 1 thread",
         "r2z": "2 MPI ranks x 1 thread, --zero 1"}
for k in ("p1t1", "p1t2", "r2", "r2z"):
    print("| %s | %.0f (%.0f-%.0f) | %.2f |" % (names[k], med[k], min(t[k]), max(t[k]), med[k] / med["p1t2"]))
PY
