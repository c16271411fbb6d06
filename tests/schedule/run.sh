#!/bin/sh
# The launch schedule, end to end on the CPU (issue 9). For every example's architecture (shrunk:
# 2 layers, d_model 128, 2 x 64 tokens; norm, activation, positions, biases, GQA and tied
# embeddings kept) x every shipped policy:
#   fused_vs_unfused_*  3 training steps from the fused schedule (what the GPU launches) and from
#                       the unfused program (--no-fuse) give bit-identical losses, gradient norms,
#                       validation loss and checkpoint tensors; the fused plan really fuses;
#   standin_*           tests/gpu's harness against the exact stand-in device passes every launch
#                       of the fused plan (a harness bug cannot pass for a kernel bug).
# And: the harness fails every launch when the stand-in perturbs its outputs (the comparison can
# fail), and a plan whose program overlaps two live tensors is refused by the compiler's verifier
# (tests/unit/test_schedule does that in-process).
# usage: tests/schedule/run.sh FP8C GPU_OPS   (from the repository root)
fp8c=$1
gpu_ops=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { echo "PASS $1"; }
ko() {
    echo "FAIL $1: $2"
    [ -f "$tmp/err" ] && sed 's/^/    | /' "$tmp/err" | tail -6
}

# shrink an example, keeping what makes its architecture distinct
shrink() { # example-dir out.yaml
    python3 tests/schedule/shrink.py "$1/model.yaml" "$2"
}

compare_runs() { # a-dir b-dir
    python3 - "$1" "$2" <<'PY'
import json, struct, sys, os
def rows(d):
    return [json.loads(l) for l in open(os.path.join(d, "log.jsonl"))]
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    meta.pop("plan_hash", None)
    data = b[8 + n:]
    return meta, {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items()}
a, b = sys.argv[1], sys.argv[2]
ra, rb = rows(a), rows(b)
keys = ("loss", "grad_norm", "val_loss", "skipped")
assert len(ra) == len(rb) == 3, "3 steps each"
for x, y in zip(ra, rb):
    for k in keys:
        assert x.get(k) == y.get(k), "step %d %s: fused %r, unfused %r" % (x["step"], k, x.get(k), y.get(k))
ma, ta = tensors(os.path.join(a, "ck", "step_3.safetensors"))
mb, tb = tensors(os.path.join(b, "ck", "step_3.safetensors"))
assert ma == mb, "checkpoint metadata differs"
assert sorted(ta) == sorted(tb), "checkpoint tensor names differ"
diff = [k for k in ta if ta[k] != tb[k]]
assert not diff, "%d checkpoint tensors differ, first %s" % (len(diff), diff[0])
fused = json.load(open(os.path.join(a, "plan", "plan.json")))["fusions"]
unfused = json.load(open(os.path.join(b, "plan", "plan.json")))["fusions"]
assert sum(v for k, v in fused.items() if k != "refused") > 0, "the fused plan fuses nothing"
assert sum(v for k, v in unfused.items() if k != "refused") == 0, "--no-fuse still fuses"
PY
}

examples=$(ls -d examples/*/)
# under the sanitizers (FP8C_E2E_FAST=1) two architectures: RMSNorm/SwiGLU/RoPE and LayerNorm/GELU/learned/bias
[ -n "${FP8C_E2E_FAST:-}" ] && examples="examples/tiny/ examples/gpt2-124m/"
for ex in $examples; do
    name=$(basename "$ex")
    shrink "$ex" "$tmp/$name.yaml"
    golden=tests/golden/models/$name.txt
    only=$(sed -n 's/^only //p' "$golden" 2>/dev/null)
    # MoE examples run a budget subset: per-tensor delayed, blockwise with partial tiles, the seed's
    # exact override (each MoE step runs every expert over a full-capacity buffer on the CPU)
    grep -q '^ *ffn: *moe' "$ex/model.yaml" && [ -z "$only" ] && only="bf16 te_delayed deepseek_v3 deepseek_v3_q_a_norm_fp16"
    for pol in policies/*.yaml; do
        p=$(basename "$pol" .yaml)
        case=${name}_x_$p
        if [ -n "$only" ] && ! echo " $only " | grep -q " $p "; then continue; fi
        grep -q "^refuse $p " "$golden" 2>/dev/null && continue # the policy names paths this example lacks
        for mode in fused unfused; do
            d="$tmp/$case-$mode"
            flag=""
            [ $mode = unfused ] && flag=--no-fuse
            mkdir -p "$d"
            "$fp8c" train "$tmp/$name.yaml" "$pol" $flag -o "$d/plan" --steps 3 --checkpoint-dir "$d/ck" \
                --log "$d/log.jsonl" >"$tmp/out" 2>"$tmp/err" || { echo "train $mode failed" >>"$tmp/err"; break; }
        done
        if [ -f "$tmp/$case-unfused/log.jsonl" ] && compare_runs "$tmp/$case-fused" "$tmp/$case-unfused" 2>"$tmp/err"; then
            ok "fused_vs_unfused_$case"
        else
            ko "fused_vs_unfused_$case" "fused and unfused runs differ or failed"
        fi
        if "$gpu_ops" --device stand-in "$tmp/$case-fused/plan" >"$tmp/ops" 2>"$tmp/err" && grep -q '^PASS gpu_ops' "$tmp/ops"; then
            ok "standin_$case"
        else
            cp "$tmp/ops" "$tmp/err"
            ko "standin_$case" "the harness failed against the exact stand-in device"
        fi
        rm -rf "$tmp/$case-unfused"
        [ "$case" = tiny_x_deepseek_v3 ] || rm -rf "$tmp/$case-fused"
    done
done

# the harness's comparison can fail: a stand-in that perturbs every output fails every launch
d="$tmp/tiny_x_deepseek_v3-fused/plan"
"$gpu_ops" --device stand-in --fault "$d" >"$tmp/ops" 2>"$tmp/err"
total=$(python3 -c "import json; p=json.load(open('$d/plan.json')); print(sum(len(v) for v in p['program'].values()))")
nfail=$(grep -c '^FAIL ' "$tmp/ops")
# every launch fails, plus the summary line
if [ "$nfail" -eq $((total + 1)) ]; then ok standin_fault_fails_every_launch; else ko standin_fault_fails_every_launch "$nfail FAIL lines for $total launches"; fi
