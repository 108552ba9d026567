#!/usr/bin/python3
"""Writes the checkpoint-diff fixtures (pairs of checkpoints "a" and "b") and what numpy says
about each pair.

Run from the repository root with the Debian Python that has the real libraries (torch 1.13,
numpy 1.24; `apt-get install -y python3-torch python3-numpy`):

    /usr/bin/python3 testdata/models/generate_diff.py

It deletes and rewrites testdata/models/diff/ and testdata/models/expected_diff.json. The script
is deterministic (fixed seeds, one thread); running it twice gives byte-identical files. The
truth in expected_diff.json comes from the files themselves: every checkpoint is read back with
torch.load (the safetensors file with json and numpy only, following the format's spec) and
the metrics are computed with numpy in float64 on what was read back, never from ckptview's Go
code. The top-level "definitions" object of expected_diff.json states each metric exactly as
computed here.

Files in testdata/models/diff/:

- base.pt: torch.save (zip) of an OrderedDict, the state dict of a tiny two-layer GPT-2-like
  model (d=16, vocab 64, context 8), torch.manual_seed(0): 14 float32 tensors (`wte.weight`
  [64, 16], `wpe.weight` [8, 16], `h.0.ln_1.*`, `h.0.attn.c_attn.*`, `h.0.attn.c_proj.weight`,
  `h.1.ln_1.weight`, `h.1.attn.c_proj.bias`, `h.1.mlp.c_fc.weight` [16, 64],
  `h.1.mlp.c_proj.weight` [64, 16], `ln_f.*`), an int64 buffer `h.0.attn.bias_idx` [8] and a
  bool buffer `h.0.attn.mask` [1, 1, 8, 8]. `h.0.ln_1.bias` is all zeros (as LayerNorm inits
  it), which makes rel_l2 and cosine undefined against a changed tensor.
- finetuned.pt: the same model "after fine-tuning", torch.manual_seed(1) for the noise. Per key
  (see FINETUNE below): bit-identical copies (`wpe.weight`, both buffers, and
  `h.0.attn.c_attn.weight`, which is saved as the non-contiguous view `t().contiguous().t()`:
  strides (1, 16) instead of (48, 1), same logical values, so it is identical); `w + 1e-3 *
  randn` noise; a tiny noise (`h.1.mlp.c_proj.weight`, 2e-7 * randn) that leaves part of the
  elements inside np.isclose; `h.0.ln_1.weight` scaled by 1.0000001 (in float64, rounded back
  to float32: changed bits, all inside np.isclose); `h.0.ln_1.bias` (zeros in base) given noise;
  `h.0.attn.c_attn.bias` perturbed and saved as a slice [48:96] of a 96-element storage
  (storage offset 48); `h.0.attn.c_proj.weight` set to all zeros; `ln_f.bias` with a single
  element changed; `h.1.ln_1.weight` saved as float16 (dtype change); `h.1.mlp.c_fc.weight`
  reshaped [16, 64] -> [16, 32] (its first 32 columns); `h.1.attn.c_proj.bias` removed (only
  in a); `lm_head.weight` [64, 16] added (only in b).
- same_weights.bin: the same state dict as base.pt saved the way Hugging Face saves
  pytorch_model.bin (torch.save of the dict, zip format).
- same_weights.safetensors: the same state dict as safetensors, written below by the format's
  spec with numpy (8-byte little-endian header length, compact JSON header with
  `__metadata__` {"format": "pt"} first and the tensors in the reference writer's layout order,
  padded with spaces to a multiple of 8; raw little-endian C-order bytes back to back). It holds
  every tensor, the I64 and BOOL buffers included. Diffing it against same_weights.bin gives
  "all identical".
- base_bf16.pt: base.pt with every float tensor cast with `.to(torch.bfloat16)`, the int64 and
  bool buffers unchanged: close, not identical.
- dataparallel.pt: base's state dict with every key prefixed `module.` (as nn.DataParallel's
  state_dict() names them).
- lightning.ckpt: {"epoch": 3, "global_step": 10, "state_dict": {"model." + k: v}} (as PyTorch
  Lightning saves a LightningModule holding the model as `self.model`).

Pairs in expected_diff.json: (base.pt, finetuned.pt), (same_weights.bin,
same_weights.safetensors), (base.pt, base_bf16.pt), (base.pt, dataparallel.pt), (base.pt,
lightning.ckpt).
"""

import json
import math
import os
import shutil
import struct
import sys
import warnings
from collections import OrderedDict

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "diff")
EXPECTED = os.path.join(HERE, "expected_diff.json")
MAX_BYTES = 60 * 1024

D, VOCAB, CTX = 16, 64, 8


# ----------------------------------------------------------------------------------------
# The checkpoints.


def make_base():
    """The tiny GPT-2-like state dict of base.pt (torch.manual_seed(0), GPT-2-like init)."""
    torch.manual_seed(0)

    def w(*shape):
        return 0.02 * torch.randn(*shape)

    def ln_w():
        return 1.0 + 0.1 * torch.randn(D)

    sd = OrderedDict()
    sd["wte.weight"] = w(VOCAB, D)
    sd["wpe.weight"] = w(CTX, D)
    sd["h.0.ln_1.weight"] = ln_w()
    sd["h.0.ln_1.bias"] = torch.zeros(D)  # LayerNorm's init: exercises the ||a|| = 0 cases
    sd["h.0.attn.c_attn.weight"] = w(D, 3 * D)
    sd["h.0.attn.c_attn.bias"] = w(3 * D)
    sd["h.0.attn.c_proj.weight"] = w(D, D)
    sd["h.0.attn.bias_idx"] = torch.arange(CTX, dtype=torch.int64)
    sd["h.0.attn.mask"] = torch.tril(torch.ones(CTX, CTX, dtype=torch.bool)).view(1, 1, CTX, CTX)
    sd["h.1.ln_1.weight"] = ln_w()
    sd["h.1.attn.c_proj.bias"] = w(D)
    sd["h.1.mlp.c_fc.weight"] = w(D, 4 * D)
    sd["h.1.mlp.c_proj.weight"] = w(4 * D, D)
    sd["ln_f.weight"] = ln_w()
    sd["ln_f.bias"] = w(D)
    return sd


# What finetuned.pt does to each key of base (in base's order), for the docstring and checks.
FINETUNE = OrderedDict([
    ("wte.weight", "noise 1e-3"),
    ("wpe.weight", "unchanged"),
    ("h.0.ln_1.weight", "scaled by 1.0000001 in float64, rounded back to float32"),
    ("h.0.ln_1.bias", "noise 1e-3 on zeros"),
    ("h.0.attn.c_attn.weight", "unchanged, non-contiguous t().contiguous().t()"),
    ("h.0.attn.c_attn.bias", "noise 1e-3, slice [48:96] of a 96-element storage"),
    ("h.0.attn.c_proj.weight", "all zeros"),
    ("h.0.attn.bias_idx", "unchanged"),
    ("h.0.attn.mask", "unchanged"),
    ("h.1.ln_1.weight", "cast to float16"),
    ("h.1.attn.c_proj.bias", "removed"),
    ("h.1.mlp.c_fc.weight", "shape [16, 64] -> [16, 32]"),
    ("h.1.mlp.c_proj.weight", "noise 2e-7 (partly inside isclose)"),
    ("ln_f.weight", "noise 1e-3"),
    ("ln_f.bias", "one element + 0.5"),
    ("lm_head.weight", "added"),
])


def make_finetuned(base):
    torch.manual_seed(1)
    sd = OrderedDict()
    for k, v in base.items():
        if k in ("wte.weight", "ln_f.weight", "h.0.ln_1.bias"):
            sd[k] = v + 1e-3 * torch.randn(v.shape)
        elif k in ("wpe.weight", "h.0.attn.bias_idx", "h.0.attn.mask"):
            sd[k] = v.clone()
        elif k == "h.0.ln_1.weight":
            sd[k] = (v.double() * 1.0000001).float()
        elif k == "h.0.attn.c_attn.weight":
            t = v.t().contiguous().t()  # same values, column-major strides (1, 16)
            assert t.stride() == (1, D) and torch.equal(t, v)
            sd[k] = t
        elif k == "h.0.attn.c_attn.bias":
            big = torch.empty(2 * v.numel())
            big[: v.numel()] = 0.5  # the unused front of the storage
            big[v.numel():] = v + 1e-3 * torch.randn(v.shape)
            t = big[v.numel():]
            assert t.storage_offset() == v.numel() and t.storage().size() == 2 * v.numel()
            sd[k] = t
        elif k == "h.0.attn.c_proj.weight":
            sd[k] = torch.zeros_like(v)
        elif k == "h.1.ln_1.weight":
            sd[k] = v.half()
        elif k == "h.1.attn.c_proj.bias":
            continue
        elif k == "h.1.mlp.c_fc.weight":
            sd[k] = v[:, : 2 * D].clone()
        elif k == "h.1.mlp.c_proj.weight":
            sd[k] = v + 2e-7 * torch.randn(v.shape)
        elif k == "ln_f.bias":
            t = v.clone()
            t[3] += 0.5
            sd[k] = t
        else:
            raise AssertionError(k)
    sd["lm_head.weight"] = 0.02 * torch.randn(VOCAB, D)
    assert list(sd) == [k for k, what in FINETUNE.items() if what != "removed"], list(sd)
    return sd


def make_bf16(base):
    return OrderedDict((k, v.to(torch.bfloat16) if v.is_floating_point() else v.clone())
                       for k, v in base.items())


# ----------------------------------------------------------------------------------------
# safetensors (https://github.com/huggingface/safetensors, README "Format"): an 8-byte
# little-endian u64 N, N bytes of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin,
# end]}, ..., "__metadata__": {str: str}} (offsets relative to the byte buffer after the header),
# then that buffer: every tensor little-endian, C order, back to back with no gaps. The same
# writer and reader as generate.py's (copied: importing generate.py would pull in sklearn etc).

# dtype -> (torch dtype, element size, numpy dtype of the raw little-endian elements)
ST_DTYPES = {
    "F64": (torch.float64, 8, "<f8"), "F32": (torch.float32, 4, "<f4"),
    "F16": (torch.float16, 2, "<f2"), "BF16": (torch.bfloat16, 2, "<i2"),
    "I64": (torch.int64, 8, "<i8"), "I32": (torch.int32, 4, "<i4"),
    "I16": (torch.int16, 2, "<i2"), "I8": (torch.int8, 1, "i1"), "U8": (torch.uint8, 1, "u1"),
    "BOOL": (torch.bool, 1, "?"),
}
ST_OF_TORCH = {v[0]: k for k, v in ST_DTYPES.items()}
# The reference writer's Dtype enum order (safetensors/src/tensor.rs, "increasing alignment"):
# it lays tensors out by descending dtype, then by name.
ST_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32",
            "F32", "F64", "I64", "U64"]


def le_bytes(t):
    """The raw little-endian C-order bytes of a tensor (bfloat16 through its int16 bits)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    a = t.numpy()
    assert a.dtype.byteorder in ("=", "<", "|") and sys.byteorder == "little"
    return a.tobytes()


def write_safetensors(sd, path, metadata=None):
    tensors = {k: (ST_OF_TORCH[v.dtype], list(v.shape), le_bytes(v)) for k, v in sd.items()}
    items = sorted(tensors.items(), key=lambda kv: (-ST_ORDER.index(kv[1][0]), kv[0].encode()))
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for name, (dtype, shape, raw) in items:
        assert len(raw) == math.prod(shape) * ST_DTYPES[dtype][1], name
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    hb = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, (_, _, raw) in items:
            f.write(raw)


def read_safetensors(path):
    """Reads a safetensors file back with json and numpy only, checking it against the spec:
    (metadata, OrderedDict {name: torch tensor} in header order)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and 8 + n <= len(data)
    text = data[8:8 + n].decode("utf-8")
    assert text.startswith("{") and text.rstrip(" ").endswith("}"), text[-16:]
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    names = [k for k, _ in pairs]
    assert len(set(names)) == len(names), "duplicate keys"
    buf = data[8 + n:]
    metadata, out, spans = None, OrderedDict(), []
    for name, info in pairs:
        if name == "__metadata__":
            metadata = dict(info)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
            continue
        info = dict(info)
        assert sorted(info) == ["data_offsets", "dtype", "shape"], info
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        tdtype, size, raw_dtype = ST_DTYPES[dtype]
        assert end - begin == math.prod(shape) * size and 0 <= begin <= end <= len(buf)
        elems = np.frombuffer(buf[begin:end], dtype=raw_dtype).reshape(shape).copy()
        t = torch.from_numpy(elems)
        out[name] = t.view(torch.bfloat16) if dtype == "BF16" else t
        assert out[name].dtype == tdtype
        spans.append((begin, end))
    pos = 0  # the buffer is covered exactly, without gaps or overlaps
    for begin, end in sorted(spans):
        assert begin == pos, (begin, pos)
        pos = end
    assert pos == len(buf), (pos, len(buf))
    return metadata, out


# ----------------------------------------------------------------------------------------
# Loading and aligning.


def load_state_dict(name):
    """(container path, state dict) of one fixture, read back from the file."""
    path = os.path.join(OUT, name)
    if name.endswith(".safetensors"):
        return [], read_safetensors(path)[1]
    obj = torch.load(path, map_location="cpu")
    container = []
    if "state_dict" in obj and not isinstance(obj["state_dict"], torch.Tensor):
        container = ["state_dict"]
        obj = obj["state_dict"]
    assert all(isinstance(v, torch.Tensor) for v in obj.values())
    return container, obj


def common_prefix(keys):
    """The `module.` / `model.` prefix every key carries, or ""."""
    for p in ("module.", "model."):
        if keys and all(k.startswith(p) for k in keys):
            return p
    return ""


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def identical(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and le_bytes(a) == le_bytes(b)


def as_f64(t):
    """The values in C order as a flat float64 array (bf16/f16 via .float(), bool as 0/1)."""
    t = t.contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.numpy().astype(np.float64).reshape(-1)


def metrics(ta, tb):
    a, b = as_f64(ta), as_f64(tb)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    n = a.size
    d = np.abs(a - b)
    m = np.maximum(np.abs(a), np.abs(b))
    rel = np.divide(d, m, out=np.zeros_like(d), where=m > 0)
    na, nb, nd = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(a - b)
    if na == 0:
        rel_l2 = 0.0 if nd == 0 else None
    else:
        rel_l2 = float(nd / na)
    cosine = None if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))
    outside = int(np.count_nonzero(~np.isclose(b, a)))
    return {
        "max_abs": float(d.max()) if n else 0.0,
        "max_rel": float(rel.max()) if n else 0.0,
        "rel_l2": rel_l2,
        "cosine": cosine,
        "outside_allclose": outside / n if n else 0.0,
        "outside_count": outside,
        "numel": n,
    }


def diff_pair(name_a, name_b):
    ca, sa = load_state_dict(name_a)
    cb, sb = load_state_dict(name_b)
    pa, pb = common_prefix(list(sa)), common_prefix(list(sb))
    ka = OrderedDict((k[len(pa):], k) for k in sa)
    kb = OrderedDict((k[len(pb):], k) for k in sb)
    tensors = []
    for key, raw_a in ka.items():
        if key not in kb:
            continue
        raw_b = kb[key]
        ta, tb = sa[raw_a], sb[raw_b]
        e = {"key": key, "key_a": raw_a, "key_b": raw_b,
             "dtype_a": dtype_name(ta), "dtype_b": dtype_name(tb),
             "shape_a": list(ta.shape), "shape_b": list(tb.shape),
             "strides_a": list(ta.stride()), "strides_b": list(tb.stride()),
             "storage_offset_a": ta.storage_offset(), "storage_offset_b": tb.storage_offset()}
        if ta.shape == tb.shape:
            e["identical"] = identical(ta, tb)
            e.update(metrics(ta, tb))
        tensors.append(e)
    n_identical = sum(1 for e in tensors if e.get("identical"))
    return {
        "a": name_a, "b": name_b,
        "container_a": ca, "container_b": cb,
        "strip_a": pa, "strip_b": pb,
        "only_a": sorted(set(ka) - set(kb)),
        "only_b": sorted(set(kb) - set(ka)),
        "tensors": tensors,
        "summary": {
            "common": len(tensors),
            "identical": n_identical,
            "changed": len(tensors) - n_identical,
            "shape_changed": sum(1 for e in tensors if e["shape_a"] != e["shape_b"]),
            "dtype_changed": sum(1 for e in tensors if e["dtype_a"] != e["dtype_b"]),
            "only_a": len(set(ka) - set(kb)),
            "only_b": len(set(kb) - set(ka)),
        },
    }


DEFINITIONS = {
    "pairing": "Each pair is (a, b). A checkpoint's state dict is the file's root dict, or the "
               "dict found by following container_a / container_b (a list of dict keys from the "
               "root; [] for the root itself; [\"state_dict\"] for lightning.ckpt, whose root "
               "also holds the non-tensor entries epoch and global_step). Alignment then strips "
               "strip_a / strip_b (a key prefix that every key of that state dict carries: "
               "\"module.\" for dataparallel.pt, \"model.\" for lightning.ckpt, \"\" for none) "
               "and matches keys by exact equality of the stripped names.",
    "key": "the aligned (stripped) name; key_a and key_b are the names as stored in each file",
    "only_a": "aligned keys present in a only, sorted by code point",
    "only_b": "aligned keys present in b only, sorted by code point",
    "tensors": "one entry per aligned key present in both, in a's state-dict order",
    "dtype_a": "torch dtype name without \"torch.\" (safetensors F32/I64/BOOL are read as "
               "float32/int64/bool)",
    "shape_a": "shape as a list; strides_a / strides_b are the stored strides in elements "
               "and storage_offset_a / storage_offset_b the offsets into their storages in elements "
               "(safetensors tensors are C-contiguous at offset 0)",
    "when_present": "identical and the metrics are present only when shape_a == shape_b",
    "identical": "dtype_a == dtype_b and a.contiguous().numpy().tobytes() == "
                 "b.contiguous().numpy().tobytes() (C-order little-endian bytes; bfloat16 "
                 "through .view(torch.int16)); strides and storage offsets do not matter",
    "values": "the metrics use x = the values in C (logical) order converted to float64: "
              "bfloat16 and float16 via .float() then float64, bool as 0/1, ints as float64; "
              "all arithmetic in float64 with numpy",
    "max_abs": "max over elements of |a - b|; 0 when numel is 0",
    "max_rel": "max over elements of |a - b| / max(|a|, |b|), an element where |a| and |b| are "
               "both 0 contributing 0 (so any element that is 0 on one side only contributes "
               "1); 0 when numel is 0",
    "rel_l2": "||a - b||_2 / ||a||_2 with ||x||_2 = np.linalg.norm(x) (sqrt of the sum of "
              "squares); 0 when both ||a||_2 and ||a - b||_2 are 0; null when ||a||_2 is 0 and "
              "||a - b||_2 > 0",
    "cosine": "np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)), not clipped (for equal "
              "tensors it may differ from 1 in the last bits: compare with a tolerance); null "
              "when either norm is 0",
    "outside_count": "np.count_nonzero(~np.isclose(b64, a64)) with numpy's defaults rtol=1e-5, "
                     "atol=1e-8, equal_nan=False, argument order (b, a): an element is inside "
                     "when |b - a| <= 1e-8 + 1e-5 * |a| (the tolerance scales with a's value)",
    "outside_allclose": "outside_count / numel (0 when numel is 0)",
    "numel": "number of elements",
    "summary": "per pair: common = len(tensors); identical = entries with identical true; "
               "changed = common - identical (includes shape and dtype changes); shape_changed, "
               "dtype_changed; only_a, only_b = the lengths of those lists",
    "json": "floats are Python floats written by json.dumps (repr, shortest round-trip); null "
            "where undefined; no NaN or infinity anywhere",
}

PAIRS = [
    ("base.pt", "finetuned.pt"),
    ("same_weights.bin", "same_weights.safetensors"),
    ("base.pt", "base_bf16.pt"),
    ("base.pt", "dataparallel.pt"),
    ("base.pt", "lightning.ckpt"),
]


# ----------------------------------------------------------------------------------------


def check(pairs, base, fine):
    by = {(p["a"], p["b"]): p for p in pairs}

    def entries(p):
        return {e["key"]: e for e in p["tensors"]}

    # base vs finetuned: every case the brief asks for is there and behaves as intended
    p = by[("base.pt", "finetuned.pt")]
    e = entries(p)
    assert p["only_a"] == ["h.1.attn.c_proj.bias"] and p["only_b"] == ["lm_head.weight"]
    unchanged = sorted(k for k, x in e.items() if x.get("identical"))
    assert unchanged == sorted(["wpe.weight", "h.0.attn.c_attn.weight", "h.0.attn.bias_idx",
                                "h.0.attn.mask"]), unchanged
    nc = e["h.0.attn.c_attn.weight"]
    assert nc["strides_a"] == [3 * D, 1] and nc["strides_b"] == [1, D] and nc["identical"]
    assert e["h.0.attn.c_attn.bias"]["storage_offset_b"] == 3 * D
    tiny = e["h.0.ln_1.weight"]
    assert not tiny["identical"] and tiny["outside_count"] == 0 and tiny["max_abs"] > 0
    z = e["h.0.attn.c_proj.weight"]
    assert z["cosine"] is None and z["rel_l2"] == 1.0 and z["max_rel"] == 1.0
    zb = e["h.0.ln_1.bias"]
    assert zb["rel_l2"] is None and zb["cosine"] is None and zb["max_rel"] == 1.0
    assert e["h.1.mlp.c_fc.weight"]["shape_b"] == [D, 2 * D] and "identical" not in e["h.1.mlp.c_fc.weight"]
    assert e["h.1.ln_1.weight"]["dtype_b"] == "float16" and not e["h.1.ln_1.weight"]["identical"]
    assert 0.05 < e["h.1.mlp.c_proj.weight"]["outside_allclose"] < 0.95
    assert e["ln_f.bias"]["outside_count"] == 1
    assert e["wte.weight"]["outside_allclose"] > 0.9
    loaded = torch.load(os.path.join(OUT, "finetuned.pt"))
    assert loaded["h.0.attn.c_attn.bias"].storage_offset() == 3 * D
    assert loaded["h.0.attn.c_attn.bias"].storage().size() == 6 * D
    # the others
    p = by[("same_weights.bin", "same_weights.safetensors")]
    assert p["summary"]["identical"] == p["summary"]["common"] == len(base)
    assert not p["only_a"] and not p["only_b"]
    p = by[("base.pt", "base_bf16.pt")]
    for x in p["tensors"]:
        if x["dtype_a"] == "float32":
            assert x["dtype_b"] == "bfloat16" and not x["identical"], x["key"]
            assert x["max_rel"] <= 2.0 ** -8, x  # bf16 rounding: half an ulp of 8 bits
        else:
            assert x["identical"], x["key"]
    for other, prefix, container in (("dataparallel.pt", "module.", []),
                                     ("lightning.ckpt", "model.", ["state_dict"])):
        p = by[("base.pt", other)]
        assert p["strip_b"] == prefix and p["container_b"] == container and p["strip_a"] == ""
        assert p["summary"]["identical"] == len(base) and not p["only_a"] and not p["only_b"]
    ck = torch.load(os.path.join(OUT, "lightning.ckpt"))
    assert ck["epoch"] == 3 and ck["global_step"] == 10
    # the safetensors file read back by the spec equals base bit for bit
    meta, st = read_safetensors(os.path.join(OUT, "same_weights.safetensors"))
    assert meta == {"format": "pt"} and sorted(st) == sorted(base)
    for k, v in base.items():
        assert st[k].dtype == v.dtype and st[k].shape == v.shape and le_bytes(st[k]) == le_bytes(v)
    # no NaN or inf anywhere
    for sd in (base, fine):
        for v in sd.values():
            if v.is_floating_point():
                assert torch.isfinite(v).all()


def to_json(v, depth=0):
    """json.dumps (floats as repr, no NaN/inf) laid out with one tensor entry per line."""
    if isinstance(v, dict) and "key_a" not in v:
        pad = " " * (depth + 1)
        items = [pad + json.dumps(k) + ": " + to_json(x, depth + 1) for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(v, list) and v and isinstance(v[0], dict):
        pad = " " * (depth + 1)
        items = [pad + to_json(x, depth + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"
    return json.dumps(v, ensure_ascii=False, allow_nan=False)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    base = make_base()
    fine = make_finetuned(base)
    torch.save(base, os.path.join(OUT, "base.pt"))
    torch.save(fine, os.path.join(OUT, "finetuned.pt"))
    torch.save(base, os.path.join(OUT, "same_weights.bin"))
    write_safetensors(base, os.path.join(OUT, "same_weights.safetensors"), {"format": "pt"})
    torch.save(make_bf16(base), os.path.join(OUT, "base_bf16.pt"))
    torch.save(OrderedDict(("module." + k, v) for k, v in base.items()),
               os.path.join(OUT, "dataparallel.pt"))
    torch.save({"epoch": 3, "global_step": 10,
                "state_dict": {"model." + k: v for k, v in base.items()}},
               os.path.join(OUT, "lightning.ckpt"))

    pairs = [diff_pair(a, b) for a, b in PAIRS]
    check(pairs, base, fine)

    sizes = {}
    for name in sorted(os.listdir(OUT)):
        sizes[name] = os.path.getsize(os.path.join(OUT, name))
        assert sizes[name] < MAX_BYTES, (name, sizes[name])

    doc = {
        "_about": "Written by testdata/models/generate_diff.py from the files in "
                  "testdata/models/diff/ as read back by torch.load (safetensors: json and numpy "
                  "by the spec); metrics by numpy in float64. See \"definitions\".",
        "definitions": DEFINITIONS,
        "finetune_cases": FINETUNE,
        "pairs": pairs,
    }
    with open(EXPECTED, "w") as f:
        f.write(to_json(doc) + "\n")
    assert json.load(open(EXPECTED)) == json.loads(json.dumps(doc))
    for name, size in sizes.items():
        print(f"{size:7d}  diff/{name}")
    print(f"{os.path.getsize(EXPECTED):7d}  expected_diff.json")
    for p in pairs:
        print(p["a"], p["b"], json.dumps(p["summary"]))


if __name__ == "__main__":
    main()
