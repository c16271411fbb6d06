#!/bin/sh
# Checkpoint tests: analyze (headers, tables, policies), Hugging Face import/export round trips
# with an independent numpy forward pass, eval, sample and tokenized data files.
# usage: tests/ckpt/run.sh FP8C   (from the repository root); one PASS/FAIL line per case
fp8c=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/analyze" "$tmp/hf"
python3 tests/ckpt/analyze_test.py "$fp8c" "$tmp/analyze"
mkdir -p "$tmp/data"
python3 tests/ckpt/data_test.py "$fp8c" "$tmp/data"
# the python3 with numpy (apt's python3-numpy is for /usr/bin/python3, which may not be first)
py=
for p in python3 /usr/bin/python3; do
    if [ -z "$py" ] && "$p" -c 'import numpy' 2>/dev/null; then py=$p; fi
done
if [ -n "$py" ]; then
    "$py" tests/ckpt/hf_test.py "$fp8c" "$tmp/hf"
    mkdir -p "$tmp/ds"
    "$py" tests/ckpt/ds_test.py "$fp8c" "$tmp/ds"
else
    echo "FAIL ds_import: numpy is not installed"
    echo "FAIL hf_round_trip: numpy is not installed (apt-get install python3-numpy; .ci/run does)"
fi
