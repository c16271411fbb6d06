"""Tokenized data files: a header-less .bin of uint16 ids (nanoGPT's train.bin), *.u32.bin of
uint32 ids, and a .npy (header written here from the NPY 1.0 specification); an id >= vocab_size
is refused naming the file, the byte offset and the id.
usage: data_test.py FP8C TMPDIR; one PASS/FAIL line per case."""
import os
import struct
import subprocess
import sys

fp8c, tmp = sys.argv[1], sys.argv[2]
small = "tests/e2e/small.yaml"  # vocab 256, seq_len 64
ids = [(i * 31 + i // 7) % 256 for i in range(3000)]


def npy(path, fmt, values):
    h = "{'descr': '<%s', 'fortran_order': False, 'shape': (%d,), }" % (fmt, len(values))
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
        f.write(struct.pack("<%d%s" % (len(values), "H" if fmt == "u2" else "I"), *values))


def train(path):
    p = subprocess.run([fp8c, "train", small, "policies/bf16.yaml", "--steps", "1", "--data", path], capture_output=True, text=True,
                       errors="replace")
    return p.returncode, p.stderr


def case(name, path, want_rc, want_err=()):
    rc, err = train(path)
    if rc == want_rc and all(w in err for w in want_err) and (want_rc or ("(%d tokens)" % len(ids)) in err):
        print("PASS", name)
    else:
        print("FAIL %s: exit %d: %s" % (name, rc, err[-600:]))


p = os.path.join(tmp, "train.bin")
open(p, "wb").write(struct.pack("<%dH" % len(ids), *ids))
case("data_bin_uint16", p, 0)
p = os.path.join(tmp, "train.u32.bin")
open(p, "wb").write(struct.pack("<%dI" % len(ids), *ids))
case("data_bin_uint32", p, 0)
p = os.path.join(tmp, "train.npy")
npy(p, "u2", ids)
case("data_npy_uint16", p, 0)
p = os.path.join(tmp, "train32.npy")
npy(p, "u4", ids)
case("data_npy_uint32", p, 0)
bad = list(ids)
bad[1234] = 300
p = os.path.join(tmp, "vocab.bin")
open(p, "wb").write(struct.pack("<%dH" % len(bad), *bad))
case("data_bin_id_over_vocab", p, 2, (p, "token id 300", "byte offset 2468", "vocab_size 256"))
p = os.path.join(tmp, "vocab.npy")
npy(p, "u4", bad)
case("data_npy_id_over_vocab", p, 2, (p, "token id 300", "token 1234"))
p = os.path.join(tmp, "odd.bin")
open(p, "wb").write(b"\x01\x02\x03")
case("data_bin_odd_size", p, 2, (p, "uint16"))
p = os.path.join(tmp, "f8.npy")
npy(p, "u2", ids)
raw = open(p, "rb").read().replace(b"'<u2'", b"'<f8'")
open(p, "wb").write(raw)
case("data_npy_wrong_dtype", p, 2, (p, "uint16 or uint32"))
