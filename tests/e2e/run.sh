#!/bin/sh
# End-to-end tests of training on the CPU: loss falls under three policies, resume is
# bit-identical, a NaN gradient under dynamic loss scaling skips the step, checkpoints of other
# plans and damaged ones are refused, bad plans and data are refused with clear errors.
# usage: tests/e2e/run.sh FP8C   (from the repository root); one PASS/FAIL line per case
fp8c=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small=tests/e2e/small.yaml

ok() { echo "PASS $1"; }
ko() {
    echo "FAIL $1: $2"
    [ -f "$tmp/err" ] && sed 's/^/    | /' "$tmp/err" | tail -8
}

# 1. the tiny example's loss falls on the synthetic corpus (30 steps each). The sanitizer run
#    (FP8C_E2E_FAST=1) uses the small test model: ASan makes the tiny one take minutes.
falls_model=examples/tiny/model.yaml
[ -n "${FP8C_E2E_FAST:-}" ] && falls_model=$small
for pol in bf16 te_delayed deepseek_v3; do
    if "$fp8c" train $falls_model policies/$pol.yaml --steps 30 --log "$tmp/$pol.jsonl" \
        --progress-every 10 >"$tmp/out" 2>"$tmp/err" &&
        python3 - "$tmp/$pol.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["loss"], rows[-1]["loss"]
assert len(rows) == 30 and "val_loss" in rows[-1], "30 rows with a final val_loss"
assert last < first - 1.5, "loss %.3f -> %.3f did not fall by 1.5 nats" % (first, last)
assert rows[-1]["val_loss"] < first - 1.5
PY
    then ok "loss_falls_tiny_$pol"; else ko "loss_falls_tiny_$pol" "loss did not fall (see $pol log)"; fi
done

# 1b. every shipped policy, and FP4 and non-[1, 32] MX blocks (cpu only), run 3 steps to finite losses
printf 'recipe: te_current\nlow_bit:\n  x: {format: e2m1}\n  w: {format: e2m1}\n' >"$tmp/fp4.yaml"
printf 'recipe: mxfp8\nlow_bit:\n  w: {tile: [32, 32]}\n' >"$tmp/mx32.yaml"
for pol in policies/*.yaml "$tmp/fp4.yaml" "$tmp/mx32.yaml"; do
    name=$(basename "$pol" .yaml)
    model=$small
    [ "$name" = deepseek_v3_q_a_norm_fp16 ] && model=tests/e2e/small_mla.yaml # it names an MLA path
    if "$fp8c" train $model "$pol" --steps 3 --log "$tmp/p.jsonl" >"$tmp/out" 2>"$tmp/err" &&
        python3 -c "
import json, math, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert len(r) == 3 and all(math.isfinite(x['loss']) and not x['skipped'] for x in r)" "$tmp/p.jsonl"; then
        ok "trains_$name"
    else ko "trains_$name" "did not train 3 finite steps"; fi
done

# 1c. MLA + MoE: the loss falls under bf16 and deepseek_v3 (20 steps), the log reports the experts'
#     balance, and the expert bias (state outside the gradient) moves and resumes exactly
mla=tests/e2e/small_mla.yaml
for pol in bf16 deepseek_v3; do
    if "$fp8c" train $mla policies/$pol.yaml --steps 20 --log "$tmp/mla_$pol.jsonl" >"$tmp/out" 2>"$tmp/err" &&
        grep -q "experts max/mean" "$tmp/out" &&
        python3 - "$tmp/mla_$pol.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["loss"], rows[-1]["loss"]
assert len(rows) == 20 and "val_loss" in rows[-1]
assert last < first - 1.0, "loss %.3f -> %.3f did not fall by 1 nat" % (first, last)
assert all(r["expert_load_max_over_mean"] >= 1.0 and r["dropped_tokens"] == 0 for r in rows)
PY
    then ok "loss_falls_mla_moe_$pol"; else ko "loss_falls_mla_moe_$pol" "loss did not fall or no balance report"; fi
done
"$fp8c" train $mla policies/deepseek_v3.yaml --steps 6 --checkpoint-dir "$tmp/ma" --checkpoint-every 3 >"$tmp/out" 2>"$tmp/err" &&
    "$fp8c" train $mla policies/deepseek_v3.yaml --steps 6 --resume "$tmp/ma/step_3.safetensors" --checkpoint-dir "$tmp/mb" \
        >"$tmp/out" 2>>"$tmp/err"
if [ -f "$tmp/ma/step_6.safetensors" ] && cmp -s "$tmp/ma/step_6.safetensors" "$tmp/mb/step_6.safetensors" &&
    python3 - "$tmp/ma/step_6.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
bias = [k for k in h if k.endswith("ffn.router.expert_bias")]
assert bias, "no expert bias in the checkpoint"
v = h[bias[0]]
vals = struct.unpack("<%df" % (v["shape"][0]), b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
assert any(x != 0 for x in vals), "the expert bias never moved"
PY
then ok resume_bit_identical_mla_moe; else ko resume_bit_identical_mla_moe "MLA/MoE checkpoints differ, or the expert bias is missing or never moved"; fi

# 2. resume: 3 steps + resume to 6 == 6 steps straight, byte for byte
"$fp8c" train $small tests/e2e/resume_policy.yaml --steps 6 --checkpoint-dir "$tmp/a" --checkpoint-every 3 \
    >"$tmp/out" 2>"$tmp/err" &&
    "$fp8c" train $small tests/e2e/resume_policy.yaml --steps 6 --resume "$tmp/a/step_3.safetensors" \
        --checkpoint-dir "$tmp/b" >"$tmp/out" 2>>"$tmp/err"
if [ -f "$tmp/a/step_6.safetensors" ] && cmp -s "$tmp/a/step_6.safetensors" "$tmp/b/step_6.safetensors"; then
    ok resume_bit_identical
else
    ko resume_bit_identical "step_6 checkpoints differ or are missing"
fi
# the run without resuming must differ from a different seed's: the comparison can fail
sed 's/seed: 42/seed: 43/' $small >"$tmp/small43.yaml"
"$fp8c" train "$tmp/small43.yaml" tests/e2e/resume_policy.yaml --steps 6 --checkpoint-dir "$tmp/c" >"$tmp/out" 2>"$tmp/err"
if [ -f "$tmp/c/step_6.safetensors" ] && ! cmp -s "$tmp/a/step_6.safetensors" "$tmp/c/step_6.safetensors"; then
    ok resume_comparison_can_fail
else
    ko resume_comparison_can_fail "another seed gave the same bytes"
fi

# 3. a NaN in a gradient under dynamic loss scaling skips the step: parameters unchanged
if "$fp8c" train $small policies/fp8_trainer.yaml --steps 4 --checkpoint-dir "$tmp/n" --checkpoint-every 1 \
    --debug-inject-nan 3 >"$tmp/out" 2>"$tmp/err" &&
    grep -q "skipped: non-finite" "$tmp/out" &&
    python3 - "$tmp/n/step_2.safetensors" "$tmp/n/step_3.safetensors" "$tmp/n/step_4.safetensors" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    data = b[8 + n:]
    meta = h.pop("__metadata__")
    return meta, {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items()}
m2, t2 = load(sys.argv[1]); m3, t3 = load(sys.argv[2]); m4, t4 = load(sys.argv[3])
assert t2 == t3, "the skipped step changed tensors: %s" % [k for k in t2 if t2[k] != t3[k]][:3]
assert float(m3["loss_scale"]) == 0.5 * float(m2["loss_scale"]), "loss scale backed off"
assert m3["skipped_steps"] == "1" and m3["applied_steps"] == m2["applied_steps"]
assert any(t3[k] != t4[k] for k in t3 if k.startswith("blocks")), "training continues after the skip"
PY
then ok nan_gradient_skips_step; else ko nan_gradient_skips_step "parameters changed or no skip"; fi

# 4. checkpoints of another plan, truncated or corrupt ones are refused (exit 2)
"$fp8c" train examples/tiny/model.yaml policies/bf16.yaml --steps 2 --resume "$tmp/a/step_3.safetensors" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 2 ] && grep -q "was written for another plan" "$tmp/err"; then ok refuse_other_plan_checkpoint; else ko refuse_other_plan_checkpoint "not refused"; fi
head -c 5000 "$tmp/a/step_3.safetensors" >"$tmp/trunc.safetensors"
"$fp8c" train $small tests/e2e/resume_policy.yaml --steps 6 --resume "$tmp/trunc.safetensors" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 2 ] && grep -q "truncated" "$tmp/err"; then ok refuse_truncated_checkpoint; else ko refuse_truncated_checkpoint "not refused"; fi
python3 - "$tmp/a/step_3.safetensors" "$tmp/corrupt.safetensors" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b'"shape":[') + 9
b[i] = ord("9")   # one tensor's shape no longer matches its bytes
open(sys.argv[2], "wb").write(b)
PY
"$fp8c" train $small tests/e2e/resume_policy.yaml --steps 6 --resume "$tmp/corrupt.safetensors" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 2 ] && grep -q "error" "$tmp/err" && ! grep -q "resumed" "$tmp/err"; then ok refuse_corrupt_checkpoint; else ko refuse_corrupt_checkpoint "not refused"; fi

# 5. bad plans are refused with file:line:col
"$fp8c" compile $small policies/deepseek_v3.yaml -o "$tmp/plan" --target cpu 2>"$tmp/err"
bad_plan() { # name, python expression editing text s
    rm -rf "$tmp/bad"
    cp -r "$tmp/plan" "$tmp/bad"
    python3 -c "import sys; s=open(sys.argv[1]).read(); $2; open(sys.argv[1],'w').write(s)" "$tmp/bad/plan.json"
    "$fp8c" run "$tmp/bad" --steps 1 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 2 ] && grep -q -E "plan.json:[0-9]+:[0-9]+: error: $3" "$tmp/err"; then ok "bad_plan_$1"; else ko "bad_plan_$1" "exit $rc"; fi
}
bad_plan unknown_op "s=s.replace('\"op\": \"qgemm\"', '\"op\": \"qgemn\"', 1)" "unknown value 'qgemn'"
# (edit the program's step, not a kernel's "constants", which come earlier in the file)
bad_plan size_mismatch "import re; i=s.index('\"program\": {'); s=s[:i]+re.sub(r'\"R\": 256, \"C\": 128', '\"R\": 512, \"C\": 128', s[i:], count=1)" "plan: invalid 'quantize' step"
bad_plan unknown_tensor "s=s.replace('\"inp\": \"blocks.0.attn_norm.out\"', '\"inp\": \"nope\"', 1)" "plan: unknown tensor 'nope'"
bad_plan truncated "s=s[:len(s)//2]" "invalid YAML"
bad_plan bytes "s=s.replace('\"bytes\": 131072', '\"bytes\": 131073', 1)" "plan: tensor"
# two tensors that are live at the same unit given one offset: the memory verifier refuses it
bad_plan live_overlap "import re, json; o={t['name']: t['offset'] for t in json.loads(s)['tensors']}; s=re.sub(r'(\{\"name\": \"blocks.0.attn_norm.out\".*?\"offset\": )\d+', lambda m: m.group(1)+str(o['embed.out']), s, count=1)" "plan: memory: .*share bytes"
bad_plan unknown_fusion "s=s.replace('\"fusion\": \"norm_quantize\"', '\"fusion\": \"norm_quantise\"', 1)" "unknown value 'norm_quantise'"

# 6. devices and data
"$fp8c" run "$tmp/plan" --steps 1 --device cuda >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 1 ] && grep -q "cuda" "$tmp/err"; then ok device_cuda_refused_clearly; else ko device_cuda_refused_clearly "exit status"; fi
"$fp8c" run "$tmp/plan" --steps 1 >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && grep -q "device: cpu (" "$tmp/err"; then ok device_auto_says_cpu; else ko device_auto_says_cpu "no device line"; fi
printf 'To be, or not to be, that is the question. ' >"$tmp/text.txt"
i=0; while [ $i -lt 9 ]; do cat "$tmp/text.txt" "$tmp/text.txt" >"$tmp/t2"; mv "$tmp/t2" "$tmp/text.txt"; i=$((i + 1)); done
if "$fp8c" run "$tmp/plan" --steps 2 --data "$tmp/text.txt" >"$tmp/out" 2>"$tmp/err" && grep -q "text.txt" "$tmp/err"; then
    ok data_text_bytes
else ko data_text_bytes "did not train on a text file"; fi
"$fp8c" train examples/gpt2-124m/model.yaml policies/bf16.yaml --steps 1 --data "$tmp/text.txt" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 2 ] && grep -q "20240520" "$tmp/err"; then ok data_text_needs_byte_vocab; else ko data_text_needs_byte_vocab "not refused"; fi
"$fp8c" run "$tmp/plan" --steps x >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 2 ]; then ok bad_flag_value; else ko bad_flag_value "accepted --steps x"; fi

# 7. a micro-batch run as chunks (--split) is gradient accumulation: the same tensors, bit for bit,
#    as the model file asking for micro_batch / N and grad_accum x N (the amax slots and the
#    validation loss included: the split plan evaluates the same tokens); against one pass, the same
#    first-step loss and a gradient norm within FP32 reordering; auto splits only on the CPU and
#    only where no per-tensor activation amax would change; bad counts are refused
sed 's/^  micro_batch: 4$/  micro_batch: 2\n  grad_accum: 2/' $small >"$tmp/small_ga.yaml"
for pol in fp32 deepseek_v3 te_delayed; do
    rm -rf "$tmp/sa" "$tmp/sb"
    if "$fp8c" train $small policies/$pol.yaml --steps 4 --split 2 --checkpoint-dir "$tmp/sa" --log "$tmp/sa.jsonl" >"$tmp/out" 2>"$tmp/err" &&
        grep -q "in 2 chunks" "$tmp/err" &&
        "$fp8c" train "$tmp/small_ga.yaml" policies/$pol.yaml --steps 4 --eval-batches 16 --checkpoint-dir "$tmp/sb" --log "$tmp/sb.jsonl" \
            >"$tmp/out" 2>>"$tmp/err" &&
        "$fp8c" train $small policies/$pol.yaml --steps 4 --split 1 --log "$tmp/sc.jsonl" >"$tmp/out" 2>>"$tmp/err" &&
        python3 - "$tmp/sa/step_4.safetensors" "$tmp/sb/step_4.safetensors" "$tmp/sa.jsonl" "$tmp/sb.jsonl" "$tmp/sc.jsonl" <<'PY'
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys() and len(a) > 10
diff = [k for k in a if a[k] != b[k]]
assert not diff, "split and grad_accum differ in %d tensors, e.g. %s" % (len(diff), diff[0])
la, lb, lc = ([json.loads(l) for l in open(p)] for p in sys.argv[3:6])
assert [r["loss"] for r in la] == [r["loss"] for r in lb], "losses differ from grad_accum's"
# the split plan's default 8 evaluation batches are 16 chunks: the grad_accum plan's 16 batches
assert la[-1]["val_loss"] == lb[-1]["val_loss"], "validation differs from grad_accum's"
assert la[0]["loss"] == lc[0]["loss"], "first-step loss %r vs one pass %r" % (la[0]["loss"], lc[0]["loss"])
g, g1 = la[0]["grad_norm"], lc[0]["grad_norm"]
assert abs(g - g1) <= 1e-5 * g1, "first-step gradient norm %r vs one pass %r" % (g, g1)
assert all(abs(x["loss"] - y["loss"]) < 2e-3 for x, y in zip(la, lc)), "split drifts from one pass"
PY
    then ok "split_is_grad_accum_$pol"; else ko "split_is_grad_accum_$pol" "split run differs"; fi
done
sed 's/^  micro_batch: 4$/  micro_batch: 64/' $small >"$tmp/small64.yaml" # 64 x 64 = 4096 tokens
rm -rf "$tmp/s64"
"$fp8c" compile "$tmp/small64.yaml" policies/deepseek_v3.yaml --target cpu -o "$tmp/s64" 2>"$tmp/err"
if [ $? -eq 0 ] && grep -q "micro-batch in 2 chunks of 32" "$tmp/err" && grep -q '"micro_batch": 32, "seq_len": 64, "grad_accum": 2, "split": 2' "$tmp/s64/plan.json" &&
    grep -q "64 x 64 tokens, run as 2 chunks of 32 sequences" "$tmp/s64/report.md"; then
    ok split_auto_cpu
else ko split_auto_cpu "no split of 4096 tokens"; fi
rm -rf "$tmp/s64g" "$tmp/s64t"
"$fp8c" compile "$tmp/small64.yaml" policies/deepseek_v3.yaml -o "$tmp/s64g" 2>"$tmp/err" &&
    "$fp8c" compile "$tmp/small64.yaml" policies/te_current.yaml --target cpu -o "$tmp/s64t" 2>>"$tmp/err"
if [ $? -eq 0 ] && ! grep -q '"split"' "$tmp/s64g/plan.json" "$tmp/s64t/plan.json" && grep -q '"micro_batch": 64' "$tmp/s64t/plan.json" &&
    grep -q "not split: a GPU target" "$tmp/s64g/report.md" && grep -q "not split: .* per tensor" "$tmp/s64t/report.md"; then
    ok split_auto_not_gpu_not_per_tensor
else ko split_auto_not_gpu_not_per_tensor "split where it must not"; fi
split_refused() { # name, expected message, flags...
    name=$1 msg=$2
    shift 2
    rm -rf "$tmp/sx"
    "$fp8c" compile $small "$@" -o "$tmp/sx" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 2 ] && grep -q "$msg" "$tmp/err" && [ ! -e "$tmp/sx" ]; then ok "split_refused_$name"; else ko "split_refused_$name" "exit $rc"; fi
}
split_refused not_dividing "does not divide train.micro_batch (4)" policies/fp32.yaml --split 3
split_refused per_tensor "would change what the policy computes: .* per tensor" policies/te_current.yaml --split 2
split_refused word "takes auto or a chunk count" policies/fp32.yaml --split two
