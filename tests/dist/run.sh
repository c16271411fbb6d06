#!/bin/sh
# Data-parallel training under mpirun on the CPU (runtime/dist.c): N ranks match one process with
# the same global batch, every rank holds the same state, ZeRO-1 equals replicated optimizer
# state, checkpoints resume across rank counts, bad launches are refused, and a rank that dies or
# hangs ends the job with an error instead of a hang. Section 6d runs the CUDA backend's multi-rank
# path (gradients all-reduced by NCCL on the device) against the test doubles in build/tests
# (tests/cudadouble: driver, cuBLASLt and NCCL; no GPU, no real NCCL).
# usage: tests/dist/run.sh FP8C   (from the repository root); one PASS/FAIL line per case
#
# The model (tests/dist/model.yaml) has grad_accum 4: a global batch of 4 micro-batches, which
# 1, 2 and 4 ranks split 4/2/1 per rank. Tolerances (see match() below):
#   - step 1's loss is the same to the log's 6 decimals on any rank count: the weights and the 16
#     sequences are the same, only the order the 4 micro-batch means are added in (in double) differs;
#   - later steps: |loss difference| <= 2e-3. With 2 ranks the gradient sum is (m0+m1)+(m2+m3)
#     instead of one process's ((m0+m1)+m2)+m3: FP32 reassociation, a few ulps per element. Adam
#     normalizes the update, and a master weight that sits within those ulps of a BF16 rounding
#     midpoint rounds to the neighbouring BF16 value (2^-8 relative), so parameters drift apart one
#     BF16 step at a time; measured on 6 steps: at most 2.7e-4 (bf16, te_delayed, deepseek_v3).
#   - 4 ranks (one micro-batch each): the same tolerance. (Their sum m0+m1+m2+m3 is one
#     process's order for gradients written once per micro-batch, but ops that accumulate row by
#     row, such as a norm's weight gradient, add in another order: not bit-identical.)
fp8c=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=tests/dist/model.yaml
export OMP_NUM_THREADS=1

ok() { echo "PASS $1"; }
ko() {
    echo "FAIL $1: $2"
    [ -f "$tmp/err" ] && sed 's/^/    | /' "$tmp/err" | grep -v '^    | *$' | tail -8
}

if ! command -v mpirun >/dev/null 2>&1; then
    ko dist_mpirun "mpirun not found: install openmpi-bin and libopenmpi-dev (.ci/run does)"
    exit 0
fi
# root in a container needs both flags; a rank per core is not needed for correctness
# Under the asan tier, ranks run without LeakSanitizer: Open MPI keeps allocations until exit
# and unloads its plugins first, so their reports cannot even be attributed (or suppressed) by
# module; address and UB checking stay on. Single-process runs keep leak checking.
mpi() { # NP, command...
    np=$1
    shift
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 300 mpirun --allow-run-as-root --oversubscribe -np "$np" "$@"
}

# loss rows of two JSON-lines logs: step 1 to 1e-6, all steps within TOL (0: exactly)
match() { # log_a, log_b, tol
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
tol = float(sys.argv[3])
assert len(a) == len(b) and len(a) > 0, "%d vs %d rows" % (len(a), len(b))
assert abs(a[0]["loss"] - b[0]["loss"]) <= 1e-6, "step 1: %.6f vs %.6f" % (a[0]["loss"], b[0]["loss"])
for x, y in zip(a, b):
    d = abs(x["loss"] - y["loss"])
    assert d <= tol, "step %d: loss %.6f vs %.6f (|d| %.2e > %.0e)" % (x["step"], x["loss"], y["loss"], d, tol)
    if tol == 0:
        assert x["grad_norm"] == y["grad_norm"] and x["skipped"] == y["skipped"], "step %d: norm or skip differs" % x["step"]
PY
}

# 1. N ranks vs one process, same plan, same global batch; every rank's state identical each step
for pol in bf16 te_delayed deepseek_v3; do
    "$fp8c" train $model policies/$pol.yaml --log "$tmp/$pol.1.jsonl" --checkpoint-dir "$tmp/$pol.1" >"$tmp/out" 2>"$tmp/err"
    FP8C_DIST_VERIFY=1 mpi 2 "$fp8c" train $model policies/$pol.yaml --log "$tmp/$pol.2.jsonl" \
        --checkpoint-dir "$tmp/$pol.2" >"$tmp/out2" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] && match "$tmp/$pol.1.jsonl" "$tmp/$pol.2.jsonl" 2e-3 2>>"$tmp/err"; then
        ok "np2_matches_single_$pol"
    else ko "np2_matches_single_$pol" "exit $rc, or losses outside the tolerance"; fi
    n=$(grep -c 'all 2 ranks hold identical parameters, scales, weight copies, master weights, optimizer state' "$tmp/err")
    if [ "$n" -eq 6 ]; then ok "np2_ranks_identical_$pol"; else ko "np2_ranks_identical_$pol" "$n of 6 steps verified"; fi
done
# only rank 0 prints progress and writes the log
n=$(grep -c '^step ' "$tmp/out2")
if [ "$n" -eq 6 ] && [ "$(wc -l <"$tmp/deepseek_v3.2.jsonl")" -eq 6 ]; then ok np2_rank0_prints; else
    ko np2_rank0_prints "$n progress lines for 6 steps"; fi
mpi 4 "$fp8c" train $model policies/bf16.yaml --log "$tmp/bf16.4.jsonl" >"$tmp/out" 2>"$tmp/err"
if match "$tmp/bf16.1.jsonl" "$tmp/bf16.4.jsonl" 2e-3 2>>"$tmp/err"; then ok np4_matches_single_bf16; else
    ko np4_matches_single_bf16 "losses outside the tolerance"; fi

# 2. reproducible: the same 2-rank run twice gives the same checkpoint, byte for byte
mpi 2 "$fp8c" train $model policies/bf16.yaml --checkpoint-dir "$tmp/bf16.2b" >"$tmp/out" 2>"$tmp/err"
if cmp -s "$tmp/bf16.2/step_6.safetensors" "$tmp/bf16.2b/step_6.safetensors"; then ok np2_reproducible; else
    ko np2_reproducible "two identical 2-rank runs wrote different checkpoints"; fi

# 3. ZeRO-1 (sharded master weights and moments, FP8 copies gathered where the policy keeps them)
#    computes exactly what replicated optimizer state does
for pol in bf16 te_delayed deepseek_v3; do
    FP8C_DIST_VERIFY=1 mpi 2 "$fp8c" train $model policies/$pol.yaml --zero 1 --log "$tmp/$pol.z.jsonl" \
        --checkpoint-dir "$tmp/$pol.z" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    n=$(grep -c 'all 2 ranks hold identical parameters, scales, weight copies (state' "$tmp/err")
    if [ $rc -eq 0 ] && [ "$n" -eq 6 ] && match "$tmp/$pol.2.jsonl" "$tmp/$pol.z.jsonl" 0 2>>"$tmp/err" &&
        cmp -s "$tmp/$pol.2/step_6.safetensors" "$tmp/$pol.z/step_6.safetensors"; then
        ok "zero1_equals_replicated_$pol"
    else ko "zero1_equals_replicated_$pol" "exit $rc, $n/6 steps verified, or logs/checkpoints differ"; fi
done
if grep -q 'FP8 weight copies' "$tmp/out" "$tmp/err"; then ok zero1_gathers_fp8_copies; else
    ko zero1_gathers_fp8_copies "deepseek_v3 (FP8 weight copies) did not say it all-gathers them"; fi

# 4. checkpoints across rank counts (written by rank 0 after gathering the shards; read by all)
mpi 2 "$fp8c" train $model policies/deepseek_v3.yaml --zero 1 --checkpoint-dir "$tmp/r2" --checkpoint-every 3 \
    --log "$tmp/r2.jsonl" >"$tmp/out" 2>"$tmp/err"
mpi 2 "$fp8c" train $model policies/deepseek_v3.yaml --zero 1 --resume "$tmp/r2/step_3.safetensors" \
    --checkpoint-dir "$tmp/r22" >"$tmp/out" 2>>"$tmp/err"
if cmp -s "$tmp/r2/step_6.safetensors" "$tmp/r22/step_6.safetensors"; then ok resume_2_to_2_bit_identical; else
    ko resume_2_to_2_bit_identical "step_6 differs from the uninterrupted 2-rank run"; fi
"$fp8c" train $model policies/deepseek_v3.yaml --resume "$tmp/r2/step_3.safetensors" --log "$tmp/r21.jsonl" >"$tmp/out" 2>"$tmp/err"
# step 4 is the first step from the loaded state: its loss is that of the same weights and data
if tail -n 3 "$tmp/r2.jsonl" >"$tmp/r2tail.jsonl" && match "$tmp/r2tail.jsonl" "$tmp/r21.jsonl" 2e-3 2>>"$tmp/err"; then
    ok resume_2_to_1
else ko resume_2_to_1 "the 1-process continuation of a 2-rank ZeRO-1 checkpoint diverged"; fi
mpi 2 "$fp8c" train $model policies/deepseek_v3.yaml --zero 1 --resume "$tmp/deepseek_v3.1/step_6.safetensors" --steps 8 \
    --log "$tmp/r12z.jsonl" --checkpoint-dir "$tmp/r12z" >"$tmp/out" 2>"$tmp/err"
mpi 2 "$fp8c" train $model policies/deepseek_v3.yaml --resume "$tmp/deepseek_v3.1/step_6.safetensors" --steps 8 \
    --log "$tmp/r12.jsonl" --checkpoint-dir "$tmp/r12" >"$tmp/out" 2>>"$tmp/err"
"$fp8c" train $model policies/deepseek_v3.yaml --resume "$tmp/deepseek_v3.1/step_6.safetensors" --steps 8 \
    --log "$tmp/r11.jsonl" >"$tmp/out" 2>>"$tmp/err"
if [ -f "$tmp/r12z/step_8.safetensors" ] && cmp -s "$tmp/r12z/step_8.safetensors" "$tmp/r12/step_8.safetensors" &&
    match "$tmp/r11.jsonl" "$tmp/r12z.jsonl" 2e-3 2>>"$tmp/err"; then
    ok resume_1_to_2_sharded_on_load
else ko resume_1_to_2_sharded_on_load "a 1-process checkpoint resumed on 2 ranks (ZeRO-1) differs"; fi

# 5. an overflow on one rank skips the step on every rank (the poison goes into the last rank's gradients)
FP8C_DIST_VERIFY=1 mpi 2 "$fp8c" train $model policies/bf16.yaml --steps 3 --debug-inject-nan 2 --log "$tmp/nan.jsonl" \
    >"$tmp/out" 2>"$tmp/err"
if python3 -c "
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert [x['skipped'] for x in r] == [False, True, False]" "$tmp/nan.jsonl" 2>>"$tmp/err" &&
    [ "$(grep -c 'all 2 ranks hold identical' "$tmp/err")" -eq 3 ]; then
    ok overflow_on_one_rank_skips_everywhere
else ko overflow_on_one_rank_skips_everywhere "step 2 not skipped on every rank"; fi

# 6. bad launches: exit 2 and a message
mpi 3 "$fp8c" train $model policies/bf16.yaml >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -eq 2 ] && grep -q 'does not divide over 3 ranks' "$tmp/out" "$tmp/err"; then ok bad_np_not_dividing; else
    ko bad_np_not_dividing "exit $rc"; fi
"$fp8c" train $model policies/bf16.yaml --zero 1 >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -eq 2 ] && grep -q 'this run has one' "$tmp/err"; then ok bad_zero_one_rank; else ko bad_zero_one_rank "exit $rc"; fi
FP8C_DIST_FAULT=explode "$fp8c" train $model policies/bf16.yaml >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -eq 2 ] && grep -q 'FP8C_DIST_FAULT' "$tmp/err"; then ok bad_fault_spec; else ko bad_fault_spec "exit $rc"; fi

# MoE under mpirun: every rank's expert-bias update reads the load summed over ranks, so the
# biases (TC_SCALE, hashed by FP8C_DIST_VERIFY after every step) and the weights stay identical,
# replicated and under ZeRO-1
sed -e 's/^  grad_accum: 1$/  grad_accum: 2/' -e 's/^  n_routed_experts: 4$/  n_routed_experts: 16/' examples/deepseek-tiny/model.yaml >"$tmp/moe.yaml"
for z in 0 1; do
    FP8C_DIST_VERIFY=1 mpi 2 "$fp8c" train "$tmp/moe.yaml" policies/deepseek_v3.yaml --steps 3 --zero $z --log "$tmp/moe$z.jsonl" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] && [ "$(grep -c '"step"' "$tmp/moe$z.jsonl")" -ge 3 ]; then ok "moe_ranks_identical_zero$z"; else
        ko "moe_ranks_identical_zero$z" "exit $rc: $(grep -m1 error "$tmp/err")"; fi
done
# and match one process on the same global batch: the bias update reads the whole step's load
# (every micro-batch, every rank), so after step 1 (same weights, same tokens) the expert biases
# are bit-identical, and the losses differ only by the gradient sum's association (as in 1.)
"$fp8c" train "$tmp/moe.yaml" policies/deepseek_v3.yaml --steps 3 --log "$tmp/moe1p.jsonl" --checkpoint-dir "$tmp/moe1p" \
    --checkpoint-every 1 >"$tmp/out" 2>"$tmp/err"
mpi 2 "$fp8c" train "$tmp/moe.yaml" policies/deepseek_v3.yaml --steps 1 --checkpoint-dir "$tmp/moe2p" >"$tmp/out" 2>"$tmp/err"
biases() { # the expert_bias tensors' bytes of a checkpoint, as hex
    python3 - "$1" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
for k in sorted(x for x in h if "expert_bias" in x):
    a, b = h[k]["data_offsets"]; f.seek(base + a); print(k, f.read(b - a).hex())
PY
}
b1=$(biases "$tmp/moe1p/step_1.safetensors" 2>&1) b2=$(biases "$tmp/moe2p/step_1.safetensors" 2>&1)
if [ -n "$b1" ] && [ "$b1" = "$b2" ] && echo "$b1" | grep -q expert_bias && match "$tmp/moe1p.jsonl" "$tmp/moe0.jsonl" 2e-3 >"$tmp/m" 2>&1; then
    ok moe_ranks_match_one_process
else ko moe_ranks_match_one_process "expert biases after step 1 differ from one process's, or losses: $(tail -1 "$tmp/m")"; fi

# 6b. fp8c compile --ranks N: report.md's per-rank table; a count that does not divide the batch is refused
if "$fp8c" compile $model policies/deepseek_v3.yaml --target cpu --ranks 2 -o "$tmp/rk" 2>"$tmp/err" &&
    grep -q '^## Data parallel over 2 ranks' "$tmp/rk/report.md" &&
    grep -q 'the shards hold .* of master + moments (50.0% of the replicated' "$tmp/rk/report.md"; then
    ok compile_ranks_table
else ko compile_ranks_table "no per-rank table for --ranks 2"; fi
"$fp8c" compile $model policies/deepseek_v3.yaml --target cpu --ranks 3 -o "$tmp/rk3" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -eq 2 ] && [ ! -e "$tmp/rk3" ] && grep -q 'does not divide over 3 ranks' "$tmp/err"; then ok compile_ranks_not_dividing; else
    ko compile_ranks_not_dividing "exit $rc"; fi

# 6c. the NCCL bootstrap: rank 0's unique id, broadcast over MPI (tests/unit/test_dist_ccl.c)
mpi 2 "$(dirname "$fp8c")/tests/test_dist_ccl" >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out"
if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$tmp/out"; then ko nccl_bootstrap "exit $rc"; fi

# 6d. the CUDA backend on 2 ranks, against the test doubles (tests/cudadouble: libcuda.so.1,
#     libcublasLt.so.13, libnccl.so.2 in build/tests; no GPU, and no real NCCL). The gradients are
#     all-reduced on the "device" by ncclAllReduce on the backend's stream; the NCCL double runs it
#     at the stream's synchronization over MPI, summing in rank order, as dist.c's MPI path does.
dbl=$PWD/build/tests
if [ -f "$dbl/libnccl.so.2" ] && [ -f "$dbl/libcuda.so.1" ] && [ -f "$dbl/libcublasLt.so.13" ] && [ -x "$dbl/test_nccl_double" ]; then
    # the NCCL double on its own: 1 rank (no MPI), 2 ranks, and 3 (where the order of the sum shows)
    for np in 1 2 3; do
        if [ $np = 1 ]; then "$dbl/test_nccl_double" "$dbl" >"$tmp/out" 2>"$tmp/err"; else
            mpi $np "$dbl/test_nccl_double" "$dbl" >"$tmp/out" 2>"$tmp/err"; fi
        rc=$?
        sed -n 's/^\(PASS\|FAIL\) /&/p' "$tmp/out"
        if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$tmp/out"; then ko "nccl_double_np$np" "exit $rc"; fi
    done
    # grad_accum bf16 (ncclBfloat16, a rounding after every addition) and deepseek_v3 (FP8, FP32 grads)
    { cat policies/bf16.yaml; echo "grad_accum: bf16"; } | sed 's/^name: bf16$/name: bf16_grads/' >"$tmp/bf16g.yaml"
    cu() { # PLAN, NP, LOG, extra args...: fp8c run on the doubles
        plan=$1 np=$2 log=$3
        shift 3
        if [ "$np" = 1 ]; then
            LD_LIBRARY_PATH="$dbl" FP8C_CUDA_DOUBLE_PLAN=$plan "$fp8c" run "$plan" --device cuda --steps 3 --log "$log" "$@"
        else
            LD_LIBRARY_PATH="$dbl" FP8C_CUDA_DOUBLE_PLAN=$plan mpi "$np" "$fp8c" run "$plan" --device cuda --steps 3 --log "$log" "$@"
        fi
    }
    for pol in "$tmp/bf16g.yaml" policies/deepseek_v3.yaml; do
        name=$(basename "$pol" .yaml)
        d="$tmp/cuda-$name"
        "$fp8c" compile $model "$pol" --target sm_90a -o "$d" >/dev/null 2>"$tmp/err" &&
            LD_LIBRARY_PATH="$dbl" "$fp8c" build "$d" --arch sm_90a >/dev/null 2>>"$tmp/err" || { ko "cuda_nccl_$name" "compile/build failed"; continue; }
        cu "$d" 2 "$tmp/$name.nccl.jsonl" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        # used, on both ranks: the start line says so, and each rank's communicator ran 3 all-reduces
        n=$(grep -c 'libnccl double: rank [01] of 2 destroyed: 3 all-reduces' "$tmp/err")
        if [ $rc -eq 0 ] && [ "$n" -eq 2 ] && grep -q 'gradient all-reduce on the device over NCCL' "$tmp/err"; then ok "cuda_nccl_used_$name"; else
            ko "cuda_nccl_used_$name" "exit $rc, $n of 2 ranks' NCCL communicators ran 3 all-reduces"; fi
    done
    # NCCL on the device computes, bit for bit, what the host staging through MPI does (the same
    # rank-order sum, BF16-rounded per addition): every loss, norm and skip identical
    if FP8C_DIST_GRADS=mpi cu "$tmp/cuda-bf16g" 2 "$tmp/bf16g.mpi.jsonl" >"$tmp/out" 2>"$tmp/err" &&
        grep -q 'staged through the host (FP8C_DIST_GRADS=mpi)' "$tmp/err" && ! grep -q 'libnccl double (no GPU)' "$tmp/err" &&
        match "$tmp/bf16g.nccl.jsonl" "$tmp/bf16g.mpi.jsonl" 0 2>>"$tmp/err"; then
        ok cuda_nccl_equals_mpi_staging_bf16_grads
    else ko cuda_nccl_equals_mpi_staging_bf16_grads "NCCL and FP8C_DIST_GRADS=mpi differ"; fi
    # against one process on the doubles, same plan and global batch: the tolerance of 1. above
    # (FP32 gradients summed (m0+m1)+(m2+m3) instead of ((m0+m1)+m2)+m3; 3 steps of 6)
    cu "$tmp/cuda-deepseek_v3" 1 "$tmp/deepseek_v3.cuda1.jsonl" >"$tmp/out" 2>"$tmp/err"
    if match "$tmp/deepseek_v3.cuda1.jsonl" "$tmp/deepseek_v3.nccl.jsonl" 2e-3 2>>"$tmp/err"; then ok cuda_nccl_np2_matches_single_deepseek_v3; else
        ko cuda_nccl_np2_matches_single_deepseek_v3 "losses outside the tolerance"; fi
    # an overflow on one rank skips the step on every rank (the NaN goes into rank 1's device gradients)
    cu "$tmp/cuda-bf16g" 2 "$tmp/nan.cuda.jsonl" --debug-inject-nan 2 >"$tmp/out" 2>"$tmp/err"
    if python3 -c "
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert [x['skipped'] for x in r] == [False, True, False]" "$tmp/nan.cuda.jsonl" 2>>"$tmp/err"; then
        ok cuda_nccl_overflow_skips_everywhere
    else ko cuda_nccl_overflow_skips_everywhere "step 2 not skipped"; fi
    # no usable NCCL: an error on every rank that names FP8C_DIST_GRADS=mpi, not a silent fallback
    # (a libnccl.so.2 without NCCL's symbols: the cuBLASLt double under that name); a bad value: exit 2
    mkdir -p "$tmp/nonccl"
    ln -sf "$dbl/libcuda.so.1" "$dbl/libcublasLt.so.13" "$tmp/nonccl/" && ln -sf "$dbl/libcublasLt.so.13" "$tmp/nonccl/libnccl.so.2"
    LD_LIBRARY_PATH="$tmp/nonccl" FP8C_CUDA_DOUBLE_PLAN="$tmp/cuda-bf16g" mpi 2 "$fp8c" run "$tmp/cuda-bf16g" --device cuda --steps 1 \
        >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 1 ] && grep -q 'lacks ncclGetVersion.*set FP8C_DIST_GRADS=mpi' "$tmp/err" && ! grep -q '^step ' "$tmp/out"; then ok cuda_no_nccl_is_an_error; else
        ko cuda_no_nccl_is_an_error "exit $rc"; fi
    FP8C_DIST_GRADS=gloo cu "$tmp/cuda-bf16g" 2 "$tmp/x.jsonl" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 2 ] && grep -q "FP8C_DIST_GRADS='gloo'" "$tmp/err"; then ok cuda_bad_grads_transport; else ko cuda_bad_grads_transport "exit $rc"; fi
else
    ko cuda_nccl "the test doubles are not built in build/tests (ninja builds them)"
fi

# 7. the state check can fail: one flipped parameter bit on rank 1 is caught
FP8C_DIST_VERIFY=1 FP8C_DIST_FAULT=flip:1:2 mpi 2 "$fp8c" train $model policies/bf16.yaml >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "after step 2, rank 1's parameters differ" "$tmp/err"; then ok verify_catches_divergence; else
    ko verify_catches_divergence "exit $rc"; fi

# 8. faults: a rank that dies, or hangs, ends the job within bounded time with a clear error,
#    and the last good checkpoint stays (rank 0 writes temp + rename; plan.json is kept beside the checkpoints)
start=$(date +%s)
FP8C_DIST_FAULT=die:1:3 mpi 2 "$fp8c" train $model policies/bf16.yaml --checkpoint-dir "$tmp/die" --checkpoint-every 1 \
    >"$tmp/out" 2>"$tmp/err"
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $took -lt 60 ] && [ -f "$tmp/die/step_2.safetensors" ] && [ ! -f "$tmp/die/step_3.safetensors" ] &&
    [ -z "$(ls "$tmp/die" | grep -v '^step_[12]\.safetensors$' | grep -v '^plan\.json$')" ] &&
    "$fp8c" train $model policies/bf16.yaml --steps 3 --resume "$tmp/die/step_2.safetensors" >"$tmp/out" 2>>"$tmp/err"; then
    ok rank_dies_job_ends
else ko rank_dies_job_ends "exit $rc after ${took}s, or the step_2 checkpoint is missing or unreadable"; fi
start=$(date +%s)
FP8C_DIST_TIMEOUT=5 FP8C_DIST_FAULT=hang:1:3 mpi 2 "$fp8c" train $model policies/bf16.yaml >"$tmp/out" 2>"$tmp/err"
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $took -lt 60 ] && grep -q 'a rank died or hangs' "$tmp/err"; then ok rank_hangs_watchdog; else
    ko rank_hangs_watchdog "exit $rc after ${took}s"; fi
exit 0
