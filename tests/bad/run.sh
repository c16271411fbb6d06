#!/bin/sh
# Bad-input corpus: each directory holds a malformed or contradictory input (model.yaml and/or
# policy.yaml; missing ones default to examples/tiny and policies/bf16), optional extra CLI
# arguments in `args`, and `expected`: lines that must appear in fp8c's stderr, in order.
# Every case must exit with status 2, print no sanitizer report, and create no output directory.
# usage: tests/bad/run.sh FP8C    (run from the repository root)
fp8c=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dir in tests/bad/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    model=examples/tiny/model.yaml
    policy=policies/bf16.yaml
    [ -f "$dir/model.yaml" ] && model=$dir/model.yaml
    [ -f "$dir/policy.yaml" ] && policy=$dir/policy.yaml
    args=""
    if [ -f "$dir/args" ]; then
        for a in $(cat "$dir/args"); do
            case $a in
                POLICY=*) policy=${a#POLICY=} ;;
                *) args="$args $a" ;;
            esac
        done
    fi
    out="$tmp/out-$name"
    # shellcheck disable=SC2086
    "$fp8c" compile "$model" "$policy" -o "$out" $args >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    why=""
    if [ $rc -ne 2 ]; then why="exit status $rc, expected 2"; fi
    if [ -z "$why" ] && [ -e "$out" ]; then why="output directory was created"; fi
    if [ -z "$why" ] && ls "$tmp" | grep -q "^out-$name.tmp"; then why="temporary directory left behind"; fi
    if [ -z "$why" ] && grep -q -E 'Sanitizer|runtime error:' "$tmp/stderr"; then why="sanitizer report"; fi
    if [ -z "$why" ]; then
        # each expected line must appear, in order
        if ! python3 - "$dir/expected" "$tmp/stderr" <<'PY'
import sys
want = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
got = open(sys.argv[2], errors="replace").read().split("\n")
i = 0
for g in got:
    if i < len(want) and g == want[i]:
        i += 1
sys.exit(0 if i == len(want) else 1)
PY
        then why="stderr does not contain the expected lines"; fi
    fi
    if [ -z "$why" ]; then
        echo "PASS bad_$name"
    else
        echo "FAIL bad_$name: $why"
        sed 's/^/    | /' "$tmp/stderr" | head -12
    fi
done
