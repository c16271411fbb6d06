"""A minimal safetensors writer for the checkpoint tests, written from the format's
specification (8-byte little-endian header length, JSON header, data buffer), not from fp8c.

write(path, tensors, sparse=False): tensors is a list of (name, dtype, shape, data) where data is
bytes of exactly the tensor's size, or None for zeros. sparse=True writes the header and then
extends the file to its full size without writing the data (a multi-GB shard in no time and no
disk space: fp8c analyze reads headers only)."""
import json
import struct

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
         "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write(path, tensors, sparse=False, metadata=None):
    header, off = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        n = numel(shape) * SIZES[dtype]
        if data is not None:
            assert len(data) == n, (name, len(data), n)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        if sparse:
            f.truncate(8 + len(h) + off)
            return
        for name, dtype, shape, data in tensors:
            f.write(data if data is not None else bytes(numel(shape) * SIZES[dtype]))


def read(path):
    """(metadata, {name: (dtype, shape, bytes)})"""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    return meta, {k: (v["dtype"], v["shape"], raw[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
                  for k, v in header.items()}
