#!/bin/sh
# Hostile inputs and faults, one class of defect per section (issue 14): plans larger than the
# YAML limit, FIFOs and other non-regular files, overflowing numbers, what --check must refuse
# with plan.json:line:col, checkpoints that lie, write errors (/dev/full), exit codes of -o
# refusals, `fp8c build` against a hostile plan, leftovers of killed runs.
# usage: tests/hardening/run.sh FP8C   (from the repository root); one PASS/FAIL line per case
fp8c=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small=tests/e2e/small.yaml
T="" # sections with a FIFO set it: a blocking open then fails the case instead of hanging the suite

ok() { echo "PASS $1"; }
ko() {
    echo "FAIL $1: $2"
    [ -f "$tmp/err" ] && sed 's/^/    | /' "$tmp/err" | tail -6
}
# name, expected exit code, stderr pattern (grep -E), command...
expect() {
    name=$1 want=$2 pat=$3
    shift 3
    $T "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    if [ $rc -eq "$want" ] && grep -q -E -- "$pat" "$tmp/err"; then ok "$name"; else ko "$name" "exit $rc (want $want and /$pat/)"; fi
}
# a pid that belongs to no live process
dead_pid() {
    sh -c 'echo $$' >"$tmp/pid"
    cat "$tmp/pid"
}

"$fp8c" compile $small policies/te_delayed.yaml -o "$tmp/plan" --target sm_90a >/dev/null 2>&1 || echo "FAIL setup: compile"

# 1. a plan larger than the 4 MiB model/policy limit loads: 48 layers of gpt2-124m under
#    deepseek_v3 write about 4.5 MB (the reader once refused plans fp8c itself wrote)
sed 's/n_layers: 12/n_layers: 48/' examples/gpt2-124m/model.yaml >"$tmp/gpt2-48.yaml"
if "$fp8c" compile "$tmp/gpt2-48.yaml" policies/deepseek_v3.yaml -o "$tmp/big" >"$tmp/out" 2>"$tmp/err" &&
    [ "$(wc -c <"$tmp/big/plan.json")" -gt 4194304 ] && "$fp8c" run "$tmp/big" --check >"$tmp/out" 2>"$tmp/err"; then
    ok plan_over_4MiB_loads
else ko plan_over_4MiB_loads "a 48-layer plan was refused"; fi
rm -rf "$tmp/big"

# 2. FIFOs (and directories, devices) as inputs: refused at once with exit 2, never a blocking open
T="timeout 60"
mkfifo "$tmp/fifo"
expect fifo_model 2 "FIFO" "$fp8c" compile "$tmp/fifo" policies/bf16.yaml -o "$tmp/o"
expect fifo_policy 2 "FIFO" "$fp8c" compile $small "$tmp/fifo" -o "$tmp/o"
expect fifo_data 2 "FIFO" "$fp8c" run "$tmp/plan" --steps 1 --data "$tmp/fifo"
expect fifo_resume 2 "FIFO" "$fp8c" run "$tmp/plan" --steps 1 --resume "$tmp/fifo"
expect fifo_log 2 "FIFO" "$fp8c" run "$tmp/plan" --steps 1 --log "$tmp/fifo"
mkdir "$tmp/fifoplan"
mkfifo "$tmp/fifoplan/plan.json"
expect fifo_plan 2 "FIFO" "$fp8c" run "$tmp/fifoplan" --check
expect fifo_plan_build 2 "FIFO" "$fp8c" build "$tmp/fifoplan"
expect dir_as_data 2 "directory" "$fp8c" run "$tmp/plan" --steps 1 --data "$tmp"
expect device_as_model 2 "character device" "$fp8c" compile /dev/zero policies/bf16.yaml -o "$tmp/o"

T=""

# 3. numbers on the command line: overflow, signs, junk are exit 2 for every numeric flag
for flag in --steps --checkpoint-every --progress-every --eval-batches --debug-inject-nan; do
    for v in 99999999999999999999 -1 0 12x " 5" 1e3 1099511627777; do
        $T "$fp8c" run "$tmp/plan" "$flag" "$v" --check >"$tmp/out" 2>"$tmp/err"
        rc=$?
        if [ $rc -ne 2 ] || ! grep -q "needs a whole number" "$tmp/err"; then
            ko "cli_number_$flag" "'$v' gave exit $rc"
            continue 2
        fi
    done
    ok "cli_number_$flag"
done

# 4. what --check refuses gets plan.json:line:col and a reason; what it accepts runs
bad_plan() { # name, python editing text s, message pattern
    rm -rf "$tmp/bad"
    cp -r "$tmp/plan" "$tmp/bad"
    python3 -c "import sys, re; s=open(sys.argv[1]).read(); $2; open(sys.argv[1],'w').write(s)" "$tmp/bad/plan.json"
    $T "$fp8c" run "$tmp/bad" --check >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 2 ] && grep -q -E "plan.json:[0-9]+:[0-9]+: error: .*$3" "$tmp/err"; then ok "check_refuses_$1"; else ko "check_refuses_$1" "exit $rc"; fi
}
# the first offset that is not 0, moved off its dtype's alignment / far beyond the class
bad_plan misaligned "s=re.sub(r'\"offset\": ([1-9][0-9]*)', lambda m: '\"offset\": %d' % (int(m.group(1))+2), s, count=1)" "not a multiple of 16"
bad_plan offset_2e45 "s=re.sub(r'\"offset\": ([1-9][0-9]*)', '\"offset\": 35184372088832', s, count=1)" "beyond the .* bytes all its tensors need"
bad_plan init_uniform "s=s.replace('\"init\": \"normal:', '\"init\": \"uniform:', 1)" "an init is normal:STD"
bad_plan init_normal_abc "s=re.sub(r'\"init\": \"normal:[^\"]*\"', '\"init\": \"normal:abc\"', s, count=1)" "standard deviation"
bad_plan init_empty "s=re.sub(r'\"init\": \"normal:[^\"]*\"', '\"init\": \"\"', s, count=1)" "init ''"
bad_plan init_number "s=re.sub(r'\"init\": \"normal:[^\"]*\"', '\"init\": 5', s, count=1)" "init '5'"
bad_plan init_nan "s=re.sub(r'\"init\": \"normal:[^\"]*\"', '\"init\": \"const:nan\"', s, count=1)" "finite float"
bad_plan init_on_u8 "s=re.sub(r'(\"dtype\": \"u8\"[^}]*)\}', lambda m: m.group(1)+', \"init\": \"zeros\"}', s, count=1)" "only f32, bf16 and f16"
bad_plan betas_one "s=s.replace('\"betas\": [0.9, 0.95]', '\"betas\": [0.9]', 1)" "'betas' has 2 values, not 1"
bad_plan betas_none "s=s.replace('\"betas\": [0.9, 0.95]', '\"betas\": []', 1)" "'betas' has 2 values, not 0"
bad_plan betas_three "s=s.replace('\"betas\": [0.9, 0.95]', '\"betas\": [0.9, 0.95, 0.99]', 1)" "'betas' has 2 values, not 3"
bad_plan kernel_file_escape "s=re.sub(r'\"file\": \"kernels/[^\"]*\"', '\"file\": \"../../../../etc/passwd\"', s, count=1)" "not a plain relative path"
bad_plan kernel_file_absolute "s=re.sub(r'\"file\": \"kernels/[^\"]*\"', '\"file\": \"/etc/passwd\"', s, count=1)" "not a plain relative path"
bad_plan target "s=s.replace('\"target\": \"sm_90a\"', '\"target\": \"sm_1\"', 1)" "unknown value 'sm_1'"
# accepted edits run: a different (valid) init and an unused 256-byte shift inside the bound
rm -rf "$tmp/edit"
cp -r "$tmp/plan" "$tmp/edit"
python3 -c "import sys,re; p=sys.argv[1]; s=open(p).read(); s=re.sub(r'\"init\": \"normal:[^\"]*\"', '\"init\": \"const:0.01\"', s, count=1); open(p,'w').write(s)" "$tmp/edit/plan.json"
if "$fp8c" run "$tmp/edit" --check >"$tmp/out" 2>"$tmp/err" && "$fp8c" run "$tmp/edit" --steps 1 --device cpu >"$tmp/out" 2>"$tmp/err"; then
    ok check_accepts_runs
else ko check_accepts_runs "an edited plan that --check accepts did not run"; fi

# 5. checkpoints that lie are refused before loading, and never overwritten with other content
ck="$tmp/ck"
"$fp8c" train $small policies/bf16.yaml --steps 2 --checkpoint-dir "$ck" --checkpoint-every 1 -o "$tmp/cplan" >"$tmp/out" 2>"$tmp/err" ||
    echo "FAIL setup: checkpoints"
lie() { # name, python editing (meta: dict, tensors: list of (name, dtype, shape, bytes)), pattern[, file name]
    python3 - "$ck/step_2.safetensors" "$tmp/${4:-lie.safetensors}" "$2" <<'PY'
import json, struct, sys
src, dst, edit = sys.argv[1:4]
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
meta = h.pop('__metadata__')
data = b[8 + n:]
tensors = [(k, v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in h.items()]
exec(edit)
out, off, blob = {'__metadata__': meta}, 0, b''
for name, dt, shape, raw in tensors:
    out[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [off, off + len(raw)]}
    off += len(raw)
    blob += raw
j = json.dumps(out).encode()
j += b' ' * (-len(j) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(j)) + j + blob)
PY
    expect "checkpoint_refuses_$1" 2 "$3" "$fp8c" run "$tmp/cplan" --steps 4 --resume "$tmp/${4:-lie.safetensors}" --checkpoint-dir "$tmp/ck2"
}
lie unknown_tensor "tensors.append(('mystery.weight', 'F32', [1], b'\0'*4))" "has 'mystery.weight'"
lie grad_tensor "tensors.append(('grad.' + tensors[0][0], tensors[0][1], tensors[0][2], tensors[0][3]))" "has 'grad\."
lie many_empty "tensors += [('pad%d' % i, 'F32', [0], b'') for i in range(20000)]" "checkpoint has 2[0-9]{4} tensors"
lie step_sum "meta['step'] = '2'; meta['applied_steps'] = '1'; meta['skipped_steps'] = '0'" "inconsistent"
lie beyond_run "meta['step'] = '9'; meta['applied_steps'] = '9'" "beyond this run's 4 steps"
lie huge_count "meta['step'] = '99999999999999999999'" "not a count"
# step_2.safetensors that says step 1: resuming would re-run step 2 and overwrite it
mkdir -p "$tmp/ck3"
lie name_step "meta['step'] = '1'; meta['applied_steps'] = '1'" "name says step 2" ck3/step_2.safetensors
cp "$tmp/ck3/step_2.safetensors" "$tmp/before"
"$fp8c" run "$tmp/cplan" --steps 4 --resume "$tmp/ck3/step_2.safetensors" --checkpoint-dir "$tmp/ck3" >"$tmp/out" 2>"$tmp/err"
if cmp -s "$tmp/before" "$tmp/ck3/step_2.safetensors"; then ok resume_source_untouched; else ko resume_source_untouched "the checkpoint resumed from was rewritten"; fi

# 6. write errors: exit 1 naming the path and the reason
expect log_full_disk 1 "/dev/full: cannot write: No space left" "$fp8c" run "$tmp/cplan" --steps 1 --log /dev/full
if [ -w /dev/full ]; then
    $T "$fp8c" run "$tmp/cplan" --steps 1 >/dev/full 2>"$tmp/err"
    if [ $? -eq 1 ] && grep -q "standard output: cannot write" "$tmp/err"; then ok stdout_full_disk; else ko stdout_full_disk "exit 0 with progress lost"; fi
fi

# 7. -o onto something fp8c will not replace is a bad argument: exit 2, the target untouched
echo keep >"$tmp/afile"
mkdir "$tmp/adir"
echo keep >"$tmp/adir/x"
ln -s "$tmp/plan" "$tmp/alink"
expect refuse_o_file 2 "not an fp8c output directory" "$fp8c" compile $small policies/bf16.yaml -o "$tmp/afile"
expect refuse_o_dir 2 "not an fp8c output directory" "$fp8c" compile $small policies/bf16.yaml -o "$tmp/adir"
expect refuse_o_symlink 2 "symbolic link" "$fp8c" compile $small policies/bf16.yaml -o "$tmp/alink"
expect refuse_o_root 2 "not an fp8c output directory" "$fp8c" compile $small policies/bf16.yaml -o /
if [ "$(cat "$tmp/afile")" = keep ] && [ -f "$tmp/adir/x" ] && [ -L "$tmp/alink" ]; then ok refused_targets_untouched; else ko refused_targets_untouched "a refused -o target changed"; fi

# 8. fp8c build does not trust the plan
rm -rf "$tmp/b"
cp -r "$tmp/plan" "$tmp/b"
expect build_bad_arch 2 "--arch takes" "$fp8c" build "$tmp/b" --arch sm_1
if [ ! -e "$tmp/b/cubin" ]; then ok build_bad_arch_no_cubin_dir; else ko build_bad_arch_no_cubin_dir "cubin/ was created"; fi
expect build_arch_junk 2 "--arch takes" "$fp8c" build "$tmp/b" --arch "sm_90a;rm"
f=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['kernels'][0]['file'])" "$tmp/b/plan.json")
rm "$tmp/b/$f"
ln -s /etc/passwd "$tmp/b/$f"
expect build_kernel_symlink_out 2 "leads outside the plan directory" "$fp8c" build "$tmp/b" --arch sm_90a
if ! grep -q "root:" "$tmp/err"; then ok build_does_not_echo_outside_file; else ko build_does_not_echo_outside_file "echoed /etc/passwd"; fi
rm -rf "$tmp/b"
cp -r "$tmp/plan" "$tmp/b"
echo 'this is not CUDA' >"$tmp/b/$f"
case $fp8c in *asan*) : >"$tmp/err" ;; *) FP8C_CACHE_DIR="$tmp/cache" "$fp8c" build "$tmp/b" --arch sm_90a >"$tmp/out" 2>"$tmp/err" ;; esac
rc=$?
if [ ! -s "$tmp/err" ]; then
    echo "SKIP build_failure_counts: NVRTC compiles of every kernel take minutes under the sanitizer"
elif grep -q "cannot open NVRTC\|NVRTC is not" "$tmp/err"; then
    echo "SKIP build_failure_counts: NVRTC not installed"
elif [ $rc -eq 1 ] && grep -q -E "build: [0-9]+ compiled .* 1 failed" "$tmp/err" && ! grep -q -- "-[0-9]+ compiled" "$tmp/err"; then
    ok build_failure_counts
else ko build_failure_counts "exit $rc"; fi

# 9. leftovers of killed runs: a later run removes its own kind (dead writer's pid), nothing else
dp=$(dead_pid)
mkdir -p "$tmp/ck4"
: >"$tmp/ck4/step_3.safetensors.tmp.$dp.AbCd12"
: >"$tmp/ck4/step_3.safetensors.tmp.$$.AbCd12"
: >"$tmp/ck4/notes.tmp.$dp.AbCd12"
"$fp8c" run "$tmp/cplan" --steps 1 --checkpoint-dir "$tmp/ck4" >"$tmp/out" 2>"$tmp/err"
if [ ! -e "$tmp/ck4/step_3.safetensors.tmp.$dp.AbCd12" ] && [ -e "$tmp/ck4/step_3.safetensors.tmp.$$.AbCd12" ] &&
    [ -e "$tmp/ck4/notes.tmp.$dp.AbCd12" ] && grep -q "removed 1 partial checkpoint" "$tmp/err"; then
    ok leftover_checkpoint_tmp
else ko leftover_checkpoint_tmp "stale temporary kept, or a live/foreign one removed"; fi
mkdir -p "$tmp/outdir.tmp.$dp.QwErTy" "$tmp/outdir.tmp.$$.QwErTy"
"$fp8c" compile $small policies/bf16.yaml -o "$tmp/outdir" >"$tmp/o" 2>"$tmp/err"
if [ ! -e "$tmp/outdir.tmp.$dp.QwErTy" ] && [ -e "$tmp/outdir.tmp.$$.QwErTy" ] && [ -f "$tmp/outdir/plan.json" ]; then
    ok leftover_output_tmp
else ko leftover_output_tmp "stale DIR.tmp kept, or a live one removed"; fi
mkdir -p "/tmp/fp8c-plan-$dp.ZxCvBn"
"$fp8c" train $small policies/bf16.yaml --steps 1 >"$tmp/o" 2>"$tmp/err"
if [ ! -e "/tmp/fp8c-plan-$dp.ZxCvBn" ]; then ok leftover_tmp_plan_dir; else ko leftover_tmp_plan_dir "/tmp/fp8c-plan-$dp.ZxCvBn kept"; fi
rm -rf "/tmp/fp8c-plan-$dp.ZxCvBn"
