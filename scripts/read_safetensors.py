#!/usr/bin/python3
"""Reads a safetensors file by the format's specification, with numpy only, and prints each
tensor: name, dtype, shape, and the sha256 of its values as little-endian bytes (bfloat16 and
float8 widened to float32, as ckptview's expected.json records them).

    /usr/bin/python3 scripts/read_safetensors.py model.safetensors [expected.json FIXTURE]

With an expected.json and a fixture name, it also compares every tensor whose name is a
state-dict key of that fixture with the digest the real library recorded, and exits 1 on a
difference. It checks what the reference implementation checks: the header size, UTF-8
JSON, string metadata, offsets tiling the data with no gap, overlap or trailing byte, and
sizes equal to shape times dtype.
"""

import hashlib
import json
import struct
import sys

import numpy as np

DTYPES = {"BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
          "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
          "C64": "<c8", "BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1"}


def f8_table(exp_bits, man_bits, bias, ieee):
    out = np.zeros(256, dtype=np.float32)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> man_bits) & ((1 << exp_bits) - 1)
        m = b & ((1 << man_bits) - 1)
        top = (1 << exp_bits) - 1
        if ieee and e == top:
            out[b] = sign * np.inf if m == 0 else np.nan
        elif not ieee and e == top and m == (1 << man_bits) - 1:
            out[b] = np.nan
        elif e == 0:
            out[b] = sign * m * 2.0 ** (1 - bias - man_bits)
        else:
            out[b] = sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
    return out


E4M3 = f8_table(4, 3, 7, False)
E5M2 = f8_table(5, 2, 15, True)


def read(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n <= 100_000_000, "HeaderTooLarge"
    assert 8 + n <= len(data), "InvalidHeaderLength"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    assert all(isinstance(v, str) for v in meta.values()), "metadata values must be strings"
    buf = data[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    pos = 0
    out = {}
    for name, info in entries:
        begin, end = info["data_offsets"]
        assert begin == pos and end >= begin, f"{name}: offsets {begin},{end} do not follow {pos}"
        pos = end
        dt = np.dtype(DTYPES[info["dtype"]])
        count = int(np.prod(info["shape"], dtype=np.int64))
        assert end - begin == count * dt.itemsize, f"{name}: {end - begin} bytes for {info}"
        a = np.frombuffer(buf[begin:end], dtype=dt).reshape(info["shape"])
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F8_E4M3":
            a = E4M3[a]
        elif info["dtype"] == "F8_E5M2":
            a = E5M2[a]
        out[name] = (info["dtype"], info["shape"], a)
    assert pos == len(buf), f"{len(buf) - pos} bytes follow the last tensor"
    return meta, out


def digest(a):
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def main():
    meta, tensors = read(sys.argv[1])
    print("metadata:", json.dumps(meta))
    for name, (dtype, shape, a) in tensors.items():
        print(f"{name}\t{dtype}\t{shape}\t{digest(a)}")
    if len(sys.argv) == 4:
        want = json.load(open(sys.argv[2]))[sys.argv[3]]
        aliases = json.loads(meta.get("ckptview.aliases", "{}"))
        bad = checked = 0
        for t in want["tensors"]:
            if "sha256_le" not in t:
                continue
            name = ".".join(s for s in t["path"].strip("/").split("/")
                            if s not in ("_modules", "_parameters", "_buffers")) or "tensor"
            name = aliases.get(name, name)
            if name not in tensors:
                continue
            checked += 1
            if digest(tensors[name][2]) != t["sha256_le"]:
                bad += 1
                print("DIFFERS:", t["path"], name)
        print(f"{checked} tensors compared with expected.json, {bad} differ")
        sys.exit(1 if bad or not checked else 0)


if __name__ == "__main__":
    main()
