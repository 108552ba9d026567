#!/usr/bin/python3
"""Writes the torch state dicts read in one pass (torchpass_*.pt) and expected_torchpass.json.

Run from anywhere with the Debian Python (torch 1.13):

    /usr/bin/python3 testdata/models/generate_torchpass.py

Each file is written by the real torch.save and is made of torch's state-dict vocabulary
only (OrderedDict, _rebuild_tensor_v2, _rebuild_parameter, storage classes, plain data),
which the loader reads in one pass (internal/loader/torchpass.go); the shapes probe its
rules: _metadata set by BUILD, Parameters, views sharing one storage at offsets, strides of
a transposed tensor, a 0-d tensor, an empty one, the dtypes, a tensor as the whole file,
int keys (an optimizer's state), nested dicts and lists, plain values beside the tensors,
protocol 4 (framed, with opcodes torch's weights_only reader does not implement).

The facts come from the objects torch.load returns (the script made the files, so loading
them is safe) and from torch.load(weights_only=True):

- `tensors`: for each tensor, by JSON Pointer (RFC 6901; an int key is its decimal): type,
  dtype (numpy's name), shape, stride, storage_offset, requires_grad, the storage's data_ptr
  group (tensors with the same group share one storage), and its first values (up to 6, as
  float: True is 1.0);
- `scalars`: plain values by pointer (int as decimal text, float as repr, str, bool, None);
- `weights_only`: whether torch 1.13's weights_only loader reads the file;
- `refs`: a tensor, dict, list or tuple object stored again, by pointer, and the pointer of
  its first place;
- `tensor_count`: the places that hold a tensor (refs included).

Fixed seed; running it twice gives the same tensors (zip timestamps aside).
"""

import collections
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

torch.manual_seed(0)

DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
          torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32",
          torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}


def module_state_dict():
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    return m.state_dict()  # an OrderedDict with _metadata


def shared_views():
    base = torch.arange(12, dtype=torch.float32)
    return collections.OrderedDict([
        ("a", base[:4]), ("b", base[4:10]), ("c", base[2:6].view(2, 2)),
        ("t", torch.arange(6.0).reshape(2, 3).t()),  # strides (1, 3)
        ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 4)),
    ])


def parameters():
    return {"w": torch.nn.Parameter(torch.randn(2, 3)),
            "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
            "plain": torch.randn(3)}


def dtypes():
    out = collections.OrderedDict()
    for dt in DTYPES:
        if dt == torch.bool:
            out["bool"] = torch.tensor([True, False, True])
        elif dt.is_floating_point:
            out[DTYPES[dt]] = torch.linspace(-2, 2, 5).to(dt)
        else:
            out[DTYPES[dt]] = torch.arange(5).to(dt)
    return out


def training():
    m = torch.nn.Linear(3, 2)
    # two param groups: the defaults' betas tuple is the same object in both, which the
    # pickle stores once and hands out again
    opt = torch.optim.Adam([{"params": [m.weight]}, {"params": [m.bias], "lr": 1e-4}], lr=1e-3)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    sd = opt.state_dict()  # {'state': {0: {...}, 1: {...}}, 'param_groups': [...]}
    return {"epoch": 3, "model": m.state_dict(), "optimizer": sd, "note": "run 7",
            "history": [0.5, 0.25, 0.125], "layers": [torch.ones(2), torch.zeros(1)]}


def tied():
    emb = torch.randn(4, 3)
    # the same tensor stored twice (a tied output layer), and a Parameter over its storage
    return collections.OrderedDict([("embed.weight", emb), ("head.weight", emb), ("bias", torch.zeros(4)),
                                    ("param", torch.nn.Parameter(emb[1:]))])


FILES = {
    "torchpass_module.pt": (module_state_dict, {}),
    "torchpass_views.pt": (shared_views, {}),
    "torchpass_params.pt": (parameters, {}),
    "torchpass_dtypes.pt": (dtypes, {}),
    "torchpass_training.pt": (training, {}),
    "torchpass_root_tensor.pt": (lambda: torch.arange(6, dtype=torch.int32).reshape(2, 3), {}),
    "torchpass_proto4.pt": (module_state_dict, {"pickle_protocol": 4}),
    "torchpass_tied.pt": (tied, {}),
}


def esc(k):
    return str(k).replace("~", "~0").replace("/", "~1")


def first(t):
    return [float(x) for x in t.detach().reshape(-1)[:6].to(torch.float64).tolist()]


def walk(v, path, facts, groups, seen=None):
    if seen is None:
        seen = {}
    shareable = isinstance(v, (torch.Tensor, dict, list)) or (isinstance(v, tuple) and v != ())
    if shareable and id(v) in seen:
        facts["refs"][path] = seen[id(v)]  # the same object stored again
        return
    if shareable:  # (the empty tuple is one object in Python, and pickled anew each time)
        seen[id(v)] = path
    if isinstance(v, torch.Tensor):
        ptr = v.storage().data_ptr()
        facts["tensors"][path] = {
            "type": type(v).__module__ + "." + type(v).__qualname__ if type(v) is not torch.Tensor else "torch.Tensor",
            "dtype": DTYPES[v.dtype], "shape": list(v.shape), "stride": list(v.stride()),
            "storage_offset": v.storage_offset(), "requires_grad": v.requires_grad,
            "storage": groups.setdefault(ptr, len(groups)), "first": first(v),
        }
        return
    if isinstance(v, dict):
        for k, x in v.items():
            walk(x, path + "/" + esc(k), facts, groups, seen)
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            walk(x, path + "/" + str(i), facts, groups, seen)
        return
    if isinstance(v, bool) or v is None or isinstance(v, str):
        facts["scalars"][path] = v
    elif isinstance(v, int):
        facts["scalars"][path] = str(v)
    elif isinstance(v, float):
        facts["scalars"][path] = repr(v)


def main():
    expected = {}
    for name, (make, kw) in FILES.items():
        path = os.path.join(HERE, name)
        torch.save(make(), path, **kw)
        v = torch.load(path)
        facts = {"tensors": {}, "scalars": {}, "refs": {}}
        walk(v, "", facts, {})
        facts["tensor_count"] = len(facts["tensors"]) + sum(1 for t in facts["refs"].values() if t in facts["tensors"])
        try:
            torch.load(path, weights_only=True)
            facts["weights_only"] = True
        except Exception:
            facts["weights_only"] = False
        if hasattr(v, "_metadata"):
            facts["metadata_keys"] = list(v._metadata.keys())
        expected[name] = facts
    with open(os.path.join(HERE, "expected_torchpass.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
