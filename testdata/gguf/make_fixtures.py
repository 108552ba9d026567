#!/usr/bin/python3
"""Writes the GGUF fixtures in testdata/gguf/ and the facts Go tests compare against.

Run from the repository root with the Debian Python (numpy 1.24, nothing else):

    /usr/bin/python3 testdata/gguf/make_fixtures.py [--ggml-dequant PROGRAM]

The files are written by the small writer below, which follows the GGUF specification
(ggml's docs/gguf.md): little-endian; magic "GGUF"; u32 version; u64 tensor count; u64
key/value count; the key/value pairs; the tensor infos; zero padding to the alignment; then
the tensor data, each tensor starting at a multiple of the alignment and padded with zeros
to the next one (the layout gguf-py's writer produces and ggml's gguf.cpp requires).

expected.json records, per fixture, the metadata exactly as this script wrote it, every
tensor info (name, dims as written, numpy-order shape, type, absolute offset, byte size) and,
per tensor, the first 64 values as float32 bit patterns, the float64 sum of all values taken
in index order, and the SHA-256 of all values as little-endian float32.

Where those values come from:

- F32, F16 and BF16: numpy (float16 -> float32 with astype; bfloat16 by placing the 16 bits
  in the high half of a float32, which is the definition of bfloat16).
- Quantized types: ggml's own reference dequantizers (dequantize_row_* in
  ggml/src/ggml-quants.c), run by PROGRAM, a tool built locally from ggml's sources and never
  committed. It is called as `PROGRAM TYPE FILE OFFSET COUNT` (TYPE as in this script, e.g.
  Q4_K) and must write COUNT little-endian float32 values to standard output. When it is
  given, it is also run on the F32/F16/BF16 tensors and must agree with numpy bit for bit.
  When it is not given, the values recorded in the existing expected.json are kept for every
  tensor whose bytes (SHA-256) are unchanged; a changed quantized tensor is an error.

The script is deterministic (fixed seed): running it twice writes identical files.
"""

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = os.path.join(HERE, "expected.json")

# ---------------------------------------------------------------------------------------------
# Metadata value types (gguf.h, enum gguf_type) and their names as gguf.cpp prints them.

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
VALUE_TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr",
                    "u64", "i64", "f64"]
SCALAR_FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
                  BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}

# ggml tensor types used here: id, elements per block, bytes per block (ggml.h and the
# block structs of ggml-common.h).
GGML_TYPES = {
    "F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210), "I8": (24, 1, 1), "I16": (25, 1, 2), "I32": (26, 1, 4),
    "I64": (27, 1, 8), "F64": (28, 1, 8), "BF16": (30, 1, 2),
}

# Byte offsets, inside one block, of the fp16 scale fields of each quantized type (from the
# block structs in ggml-common.h). Every other byte of a block is random.
SCALE_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82],  # scales[16], qs[64], d, dmin
    "Q3_K": [108],     # hmask[32], qs[64], scales[12], d
    "Q4_K": [0, 2],    # d, dmin, scales[12], qs[128]
    "Q5_K": [0, 2],    # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": [208],     # ql[128], qh[64], scales[16], d
}


class Val:
    """A metadata value with an explicit GGUF type (arrays: elem is the element type)."""

    def __init__(self, vtype, value, elem=None):
        self.vtype, self.value, self.elem = vtype, value, elem


def encode_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_payload(vtype, value, elem=None):
    """The bytes of a value without its type tag (an array's element type and length are
    part of its payload)."""
    if vtype == STR:
        return encode_string(value)
    if vtype == ARR:
        out = struct.pack("<IQ", elem.vtype if isinstance(elem, Val) else elem, len(value))
        for item in value:
            if isinstance(item, Val):  # nested array: item carries its own element type
                out += encode_payload(item.vtype, item.value, item.elem)
            else:
                out += encode_payload(elem, item)
        return out
    if vtype == BOOL:
        return struct.pack("<B", 1 if value else 0)
    return struct.pack(SCALAR_FORMATS[vtype], value)


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def describe(vtype, value, elem=None):
    """The JSON form of a value for expected.json: exact integers, float bit patterns,
    arrays with their element type, length and items."""
    if vtype == ARR:
        etype = elem.vtype if isinstance(elem, Val) else elem
        items = []
        for item in value:
            if isinstance(item, Val):
                items.append(describe(item.vtype, item.value, item.elem))
            else:
                items.append(describe(etype, item))
        return {"type": "arr", "elem_type": VALUE_TYPE_NAMES[etype], "len": len(value),
                "items": items}
    d = {"type": VALUE_TYPE_NAMES[vtype]}
    if vtype == F32:
        d["bits"] = f32_bits(value)
        d["value"] = float(np.float32(value))
    elif vtype == F64:
        d["bits"] = f64_bits(value)
        d["value"] = value
    elif vtype == BOOL:
        d["value"] = bool(value)
    else:
        d["value"] = value
    return d


class Writer:
    """A GGUF writer that follows docs/gguf.md. Tensors are given with their dims in GGUF
    order (ne[0], the fastest-varying dimension, first) and their raw bytes."""

    def __init__(self, version=3, alignment=32):
        self.version = version
        self.alignment = alignment
        self.kvs = []       # (key, Val)
        self.tensors = []   # (name, dims, type name, bytes)

    def kv(self, key, vtype, value, elem=None):
        self.kvs.append((key, Val(vtype, value, elem)))

    def tensor(self, name, dims, tname, data):
        _, blck, tsize = GGML_TYPES[tname]
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        assert dims[0] % blck == 0 and len(data) == n // blck * tsize, name
        self.tensors.append((name, list(dims), tname, bytes(data)))

    def pad(self, n):
        return (self.alignment - n % self.alignment) % self.alignment

    def write(self, path):
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors), len(self.kvs))
        for key, v in self.kvs:
            out += encode_string(key) + struct.pack("<I", v.vtype)
            out += encode_payload(v.vtype, v.value, v.elem)
        rel, infos = 0, []
        for name, dims, tname, data in self.tensors:
            out += encode_string(name) + struct.pack("<I", len(dims))
            out += b"".join(struct.pack("<Q", d) for d in dims)
            out += struct.pack("<IQ", GGML_TYPES[tname][0], rel)
            infos.append(rel)
            rel += len(data) + self.pad(len(data))
        if self.tensors:
            out += bytes(self.pad(len(out)))
        data_offset = len(out)
        for (name, dims, tname, data), r in zip(self.tensors, infos):
            assert len(out) == data_offset + r
            out += data + bytes(self.pad(len(data)))
        with open(path, "wb") as f:
            f.write(out)
        return data_offset, infos, len(out)


# ---------------------------------------------------------------------------------------------
# Tensor contents

rng = np.random.default_rng(20260821)


def quantized_blocks(tname, nblocks):
    """Random blocks with finite, moderate fp16 scales; block 1 (if any) gets a subnormal
    scale and block 2 a negative one, so the fp16 conversion is exercised at its edges."""
    _, _, tsize = GGML_TYPES[tname]
    raw = bytearray(rng.integers(0, 256, size=nblocks * tsize, dtype=np.uint8).tobytes())
    for b in range(nblocks):
        for k, off in enumerate(SCALE_FIELDS[tname]):
            scale = np.float16(rng.uniform(0.01, 1.5))
            bits = int(scale.view(np.uint16))
            if b == 1 and k == 0:
                bits = int(rng.integers(1, 0x400))            # fp16 subnormal
            elif b == 2 and k == 0:
                bits |= 0x8000                                  # negative scale
            struct.pack_into("<H", raw, b * tsize + off, bits)
    return bytes(raw)


def f32_values(n):
    v = rng.standard_normal(n).astype(np.float32)
    v[0], v[1], v[2] = -0.0, np.float32(1e-45), np.float32(3.0e8)  # -0, subnormal, large
    return v


def f16_values(n):
    v = (rng.standard_normal(n) * 4).astype(np.float16)
    v[0], v[1], v[2], v[3] = -0.0, np.float16(6e-8), 65504, -65504  # -0, subnormal, max, min
    return v


def bf16_bits(n):
    f = (rng.standard_normal(n) * 100).astype(np.float32)
    bits = (f.view(np.uint32) >> 16).astype(np.uint16)  # truncation: any 16 bits are valid
    bits[0] = 0x8000        # -0
    bits[1] = 0x0001        # subnormal
    bits[2] = 0xC77F        # -65280
    return bits


def numpy_dequant(tname, data):
    if tname == "F32":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if tname == "F16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    if tname == "BF16":
        u = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32)
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures

def tokens(n):
    out = ["<unk>", "<s>", "</s>", ""]  # an empty token too
    pieces = ["▁the", "▁a", "ing", "é", "✓", "日本", "🙂", "\n", "\t", " ", "'", "\"", "\\"]
    i = 0
    while len(out) < n:
        out.append(pieces[i % len(pieces)] + str(i))
        i += 1
    return out


def all_types_v3():
    w = Writer(version=3, alignment=64)
    w.kv("general.architecture", STR, "llama")
    w.kv("general.name", STR, "ckptview gguf fixture: every value type")
    w.kv("general.alignment", U32, 64)
    w.kv("test.u8", U8, 255)
    w.kv("test.i8", I8, -128)
    w.kv("test.u16", U16, 65535)
    w.kv("test.i16", I16, -32768)
    w.kv("test.u32", U32, 4294967295)
    w.kv("test.i32", I32, -2147483648)
    w.kv("test.f32", F32, 3.14159274)
    w.kv("test.f32_neg_zero", F32, -0.0)
    w.kv("test.bool_true", BOOL, True)
    w.kv("test.bool_false", BOOL, False)
    w.kv("test.str", STR, "héllo, wörld ✓ 日本 🙂")
    w.kv("test.str_empty", STR, "")
    w.kv("test.u64", U64, 18446744073709551615)
    w.kv("test.i64", I64, -9223372036854775808)
    w.kv("test.f64", F64, -2.5e-300)
    w.kv("test.arr_u8", ARR, [0, 1, 254, 255], U8)
    w.kv("test.arr_i8", ARR, [-128, 0, 127], I8)
    w.kv("test.arr_u16", ARR, [0, 65535], U16)
    w.kv("test.arr_i16", ARR, [-32768, 32767], I16)
    w.kv("test.arr_u32", ARR, [0, 4294967295], U32)
    w.kv("test.arr_i32", ARR, [-2147483648, 2147483647], I32)
    w.kv("test.arr_f32", ARR, [0.5, -1.25, 1e-38], F32)
    w.kv("test.arr_bool", ARR, [True, False, True], BOOL)
    w.kv("test.arr_u64", ARR, [0, 18446744073709551615], U64)
    w.kv("test.arr_i64", ARR, [-9223372036854775808, 9223372036854775807], I64)
    w.kv("test.arr_f64", ARR, [1.0, -0.0, 1e308], F64)
    w.kv("test.arr_empty", ARR, [], U32)
    w.kv("test.arr_str_empty", ARR, [], STR)
    # nested arrays (the spec allows them; llama.cpp's gguf.cpp refuses them)
    w.kv("test.arr_nested", ARR,
         [Val(ARR, [1, 2], I32), Val(ARR, [], I32), Val(ARR, [3, 4, 5], I32)], Val(ARR, None, I32))
    w.kv("test.arr_nested_str", ARR,
         [Val(ARR, ["a", "bc"], STR), Val(ARR, ["déf"], STR)], Val(ARR, None, STR))
    w.kv("test.arr_nested_deep", ARR,
         [Val(ARR, [Val(ARR, [1.5, 2.5], F64)], Val(ARR, None, F64)),
          Val(ARR, [Val(ARR, [], F64), Val(ARR, [-3.5], F64)], Val(ARR, None, F64))],
         Val(ARR, None, Val(ARR, None, F64)))
    toks = tokens(300)
    w.kv("tokenizer.ggml.model", STR, "llama")
    w.kv("tokenizer.ggml.tokens", ARR, toks, STR)
    w.kv("tokenizer.ggml.scores", ARR, [float(np.float32(-i / 7)) for i in range(300)], F32)
    w.kv("tokenizer.ggml.token_type", ARR, [1 if i > 2 else 3 for i in range(300)], I32)

    w.tensor("f32.weight", [8, 3], "F32", f32_values(24).tobytes())
    w.tensor("f16.weight", [16, 2], "F16", f16_values(32).tobytes())
    w.tensor("bf16.weight", [32], "BF16", bf16_bits(32).tobytes())
    w.tensor("token_embd.weight", [64, 3], "Q8_0", quantized_blocks("Q8_0", 6))
    w.tensor("blk.0.attn_q.weight", [32, 4], "Q4_0", quantized_blocks("Q4_0", 4))
    w.tensor("blk.0.attn_k.weight", [64, 2], "Q4_1", quantized_blocks("Q4_1", 4))
    w.tensor("blk.0.attn_v.weight", [32, 3, 2], "Q5_0", quantized_blocks("Q5_0", 6))
    w.tensor("blk.0.attn_output.weight", [64, 2], "Q5_1", quantized_blocks("Q5_1", 4))
    w.tensor("blk.0.ffn_gate.weight", [256, 3], "Q2_K", quantized_blocks("Q2_K", 3))
    w.tensor("blk.0.ffn_up.weight", [256, 3], "Q3_K", quantized_blocks("Q3_K", 3))
    w.tensor("blk.0.ffn_down.weight", [512, 2], "Q4_K", quantized_blocks("Q4_K", 4))
    w.tensor("blk.1.attn_q.weight", [256, 3], "Q5_K", quantized_blocks("Q5_K", 3))
    w.tensor("output.weight", [256, 2, 1, 2], "Q6_K", quantized_blocks("Q6_K", 4))
    return w


def v2_default_alignment():
    w = Writer(version=2, alignment=32)  # no general.alignment key: the default, 32
    w.kv("general.architecture", STR, "gpt2")
    w.kv("general.name", STR, "ckptview gguf fixture: version 2")
    w.kv("gpt2.context_length", U32, 128)
    w.kv("gpt2.embedding_length", U32, 8)
    w.kv("gpt2.block_count", U32, 1)
    w.kv("general.file_type", U32, 7)
    w.kv("tokenizer.ggml.tokens", ARR, ["a", "b", "c"], STR)
    w.tensor("token_embd.weight", [5], "F32", f32_values(5).tobytes())   # 20 bytes: padded
    w.tensor("blk.0.attn_norm.weight", [3], "F16", f16_values(4)[:3].tobytes())
    w.tensor("blk.0.ffn_up.weight", [32, 2], "Q8_0", quantized_blocks("Q8_0", 2))
    w.tensor("empty.weight", [4, 0], "F32", b"")                          # zero elements
    w.tensor("ids.i8", [3], "I8", np.array([-1, 0, 1], "<i1").tobytes())
    w.tensor("ids.i16", [2], "I16", np.array([-2, 2], "<i2").tobytes())
    w.tensor("ids.i32", [4, 2], "I32", np.arange(8, dtype="<i4").tobytes())
    w.tensor("ids.i64", [2], "I64", np.array([-(2**63), 2**63 - 1], "<i8").tobytes())
    w.tensor("vals.f64", [3], "F64", np.array([0.5, -1e300, 2.0], "<f8").tobytes())
    return w


def split_parts():
    common = [("general.architecture", STR, "llama")]
    p1 = Writer(version=3)
    for k, t, v in common:
        p1.kv(k, t, v)
    p1.kv("general.name", STR, "ckptview gguf fixture: split")
    p1.kv("llama.block_count", U32, 1)
    p1.kv("split.no", U16, 0)
    p1.kv("split.count", U16, 2)
    p1.kv("split.tensors.count", I32, 3)
    p1.tensor("token_embd.weight", [32, 2], "F32", f32_values(64).tobytes())
    p1.tensor("blk.0.attn_q.weight", [32, 2], "Q4_0", quantized_blocks("Q4_0", 2))
    p2 = Writer(version=3)  # later parts carry only the split keys, as gguf-split writes them
    p2.kv("split.no", U16, 1)
    p2.kv("split.count", U16, 2)
    p2.kv("split.tensors.count", I32, 3)
    p2.tensor("output.weight", [32, 3], "Q8_0", quantized_blocks("Q8_0", 3))
    return [("split-00001-of-00002.gguf", p1), ("split-00002-of-00002.gguf", p2)]


# ---------------------------------------------------------------------------------------------

def run_ggml(program, tname, path, offset, count):
    out = subprocess.run([program, tname, path, str(offset), str(count)], check=True,
                         stdout=subprocess.PIPE).stdout
    if len(out) != 4 * count:
        sys.exit(f"{program} wrote {len(out)} bytes for {count} values of {tname}")
    return np.frombuffer(out, dtype="<f4")


def value_facts(vals):
    vals = np.asarray(vals, dtype=np.float32)
    total = 0.0
    for x in vals.astype(np.float64):  # in index order, like the Go test
        total += float(x)
    return {
        "first64_bits": [int(b) for b in vals[:64].view(np.uint32)],
        "first64": [float(x) for x in vals[:64]],
        "sum": total,
        "values_sha256": hashlib.sha256(vals.astype("<f4").tobytes()).hexdigest(),
        "source": None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ggml-dequant", metavar="PROGRAM",
                    help="a local build of ggml's reference dequantizers (see the docstring)")
    ap.add_argument("--ggml-version", default=None,
                    help="the ggml commit PROGRAM was built from, recorded in expected.json")
    args = ap.parse_args()

    old = {}
    if os.path.exists(EXPECTED):
        with open(EXPECTED) as f:
            old = json.load(f)
    old_tensors = {(fx, t["name"]): t for fx, d in old.get("fixtures", {}).items()
                   for t in d["tensors"]}

    fixtures = [("all_types_v3.gguf", all_types_v3()), ("v2.gguf", v2_default_alignment())]
    fixtures += split_parts()

    result = {"ggml_reference": args.ggml_version or old.get("ggml_reference"),
              "fixtures": {}}
    for fname, w in fixtures:
        path = os.path.join(HERE, fname)
        data_offset, rels, size = w.write(path)
        fx = {"version": w.version, "alignment": w.alignment, "size": size,
              "data_offset": data_offset,
              "metadata": [dict(key=k, **describe(v.vtype, v.value, v.elem)) for k, v in w.kvs],
              "tensors": []}
        for (name, dims, tname, data), rel in zip(w.tensors, rels):
            _, blck, tsize = GGML_TYPES[tname]
            n = int(np.prod(dims, dtype=np.int64))
            t = {"name": name, "dims": dims, "shape": dims[::-1], "type": tname,
                 "offset": data_offset + rel, "rel_offset": rel, "nbytes": len(data),
                 "elements": n, "data_sha256": hashlib.sha256(data).hexdigest()}
            ref = numpy_dequant(tname, data)
            if ref is not None:
                t.update(value_facts(ref))
                t["source"] = "numpy"
                if args.ggml_dequant and n > 0:
                    g = run_ggml(args.ggml_dequant, tname, path, data_offset + rel, n)
                    if not np.array_equal(g.view(np.uint32), ref.view(np.uint32)):
                        sys.exit(f"{fname} {name}: ggml and numpy disagree on {tname}")
            elif tname in SCALE_FIELDS:
                if args.ggml_dequant:
                    g = run_ggml(args.ggml_dequant, tname, path, data_offset + rel, n)
                    t.update(value_facts(g))
                    t["source"] = "ggml"
                else:
                    prev = old_tensors.get((fname, name))
                    if not prev or prev.get("data_sha256") != t["data_sha256"]:
                        sys.exit(f"{fname} {name}: its bytes changed; run with --ggml-dequant")
                    for k in ("first64_bits", "first64", "sum", "values_sha256", "source"):
                        t[k] = prev[k]
            # integer tensors (I8..I64) and F64 are parsed but not dequantized
            fx["tensors"].append(t)
        result["fixtures"][fname] = fx
        print(f"{fname}: {size} bytes, {len(w.kvs)} keys, {len(w.tensors)} tensors")

    with open(EXPECTED, "w") as f:
        f.write(dump(result))


def dump(result):
    """expected.json with one metadata entry or tensor per line, so that diffs stay readable."""
    def one(x):
        return json.dumps(x, ensure_ascii=False, allow_nan=False)
    lines = ["{", f' "ggml_reference": {one(result["ggml_reference"])},', ' "fixtures": {']
    names = list(result["fixtures"])
    for i, name in enumerate(names):
        fx = result["fixtures"][name]
        lines.append(f"  {one(name)}: {{")
        for k in ("version", "alignment", "size", "data_offset"):
            lines.append(f"   {one(k)}: {one(fx[k])},")
        for k in ("metadata", "tensors"):
            lines.append(f"   {one(k)}: [")
            lines += [f"    {one(e)}," for e in fx[k]]
            lines[-1] = lines[-1].rstrip(",")
            lines.append("   ]," if k == "metadata" else "   ]")
        lines.append("  }," if i < len(names) - 1 else "  }")
    lines += [" }", "}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
