#!/usr/bin/python3
"""Writes the whole-module fixtures (torch.save of an nn.Module object, not of a state dict)
and what torch says about them.

Run from the repository root with the Debian Python that has the real libraries (torch 1.13,
numpy 1.24; `apt-get install -y python3-torch python3-numpy`):

    /usr/bin/python3 testdata/models/generate_module.py

It overwrites the three files below. The script is deterministic (torch.manual_seed(0),
PYTHONHASHSEED=0, one thread); running it twice gives byte-identical files. The truth in
expected_module.json comes from torch itself: both checkpoints are read back with torch.load
(TinyNet and head_hook are in scope here, in __main__) and every fact is taken from the objects
torch.load gives back, after checking that they agree with the live objects that were saved.
Nothing comes from ckptview's Go code.

TinyNet (defined below, so it pickles as `__main__.TinyNet`) is a small CNN+MLP holding one of
each thing a whole-module pickle can carry: Conv2d without bias, BatchNorm2d (buffers
running_mean, running_var and the int64 num_batches_tracked), an in-place ReLU, Dropout, a
Sequential head (Flatten, Linear, GELU, Linear), an Embedding, a LayerNorm with eps=1e-6, a
ModuleList of two Linears, a non-persistent bool buffer `mask` (in the pickle, because
`_buffers` is pickled whole, but not in state_dict()), a persistent float32 buffer `inv_freq`,
plain attributes (`name` a str, `scale` a float, `sizes` a tuple) and one forward hook
(`__main__.head_hook`, a module-level function) on `head`. Only `drop` is in eval mode
(`training` False); every other module is in training mode. No forward pass is run on the
saved model, so BatchNorm's running statistics are still their initial values (zeros, ones,
num_batches_tracked 0); the forward pass is checked on a deep copy.

Files in testdata/models/:

- module_model.pt: torch.save(model) (zip format, pickle protocol 2) of the TinyNet: the root
  is NEWOBJ of `__main__.TinyNet`, then BUILD with its __dict__ (`training`, `_parameters`,
  `_buffers`, `_modules` OrderedDicts, `_non_persistent_buffers_set` a set, `_forward_hooks`
  {0: `__main__.head_hook`}, ... and the plain attributes); submodules are built the same way
  from their torch.nn classes, parameters are `torch._utils._rebuild_parameter` and buffers
  `torch._utils._rebuild_tensor_v2` over persistent-id storages (Float, Long, Bool).
- module_state_dict.pt: torch.save(model.state_dict()) of the same TinyNet (the
  non-persistent buffer is not in it).
- module_training.ckpt: torch.save of {"epoch": 2, "model": model, "ema": copy.deepcopy(model),
  "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}: two whole modules of
  the same class with separate storages, and an optimizer state dict whose
  param_groups[0]["params"] are the integers 0..N-1 in model.parameters() order (its "state"
  is empty: no step was taken).
- expected_module.json: for module_model.pt, `repr` (what print(model) prints), `modules`
  (one entry per model.named_modules(), root "" first, in that order: class, training,
  extra_repr, own parameters and buffers with shape/dtype/numel (buffers also persistent),
  recursive param_count and buffer_count, number of forward hooks and their functions),
  total_params, total_buffers, named_parameters, named_buffers, state_dict_keys, attributes
  (the root's name, scale and sizes, sizes as a list plus its type name); and under
  `training_ckpt` the same facts for `model` and `ema`, the top-level keys, the epoch, the
  optimizer's param_groups and state, and its param ids in order with the name each maps to
  (`[n for n, _ in model.named_parameters()]`, position by position).
"""

import os
import sys

# Set iteration order and str hashes must not change between runs.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PT = os.path.join(HERE, "module_model.pt")
TRAINING_CKPT = os.path.join(HERE, "module_training.ckpt")
STATE_DICT_PT = os.path.join(HERE, "module_state_dict.pt")
EXPECTED = os.path.join(HERE, "expected_module.json")
MAX_SIZE = 40 * 1024


def head_hook(module, inputs, output):
    """The forward hook on TinyNet.head: module-level, so it pickles as __main__.head_hook."""
    return output


class TinyNet(nn.Module):
    """A small CNN+MLP; input (N, 3, 4, 4) floats and (N,) token ids in [0, 10)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=(3, 3), stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(p=0.1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 2))
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4, eps=1e-6)
        self.register_buffer("mask", torch.ones(2, 2, dtype=torch.bool), persistent=False)
        self.register_buffer("inv_freq", torch.arange(4, dtype=torch.float32))
        self.name = "tiny"
        self.scale = 0.5
        self.sizes = (3, 3)
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x, ids):
        # x: (N, 3, 4, 4) -> conv stride 2 -> (N, 4, 2, 2) -> head -> (N, 2)
        y = self.head(self.drop(self.act(self.bn(self.conv(x)))))
        # ids: (N,) -> (N, 4) -> two Linears -> LayerNorm
        e = self.embed(ids) * self.inv_freq * self.scale
        for layer in self.layers:
            e = layer(e)
        e = self.norm(e)
        return y, e


def make_model():
    torch.manual_seed(0)
    model = TinyNet()
    model.head.register_forward_hook(head_hook)
    model.drop.eval()  # only drop: its training flag is False, every other one True
    return model


# ----------------------------------------------------------------------------------------
# Facts, all read from torch objects.


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def class_name(m):
    return type(m).__module__ + "." + type(m).__qualname__


def fn_name(fn):
    return getattr(fn, "__module__", "?") + "." + getattr(fn, "__qualname__", repr(fn))


def module_facts(m):
    return {
        "class": class_name(m),
        "training": bool(m.training),
        "extra_repr": m.extra_repr(),
        "parameters": [{"name": n, "shape": list(p.shape), "dtype": dtype_name(p),
                        "numel": p.numel()}
                       for n, p in m.named_parameters(recurse=False)],
        "buffers": [{"name": n, "shape": list(b.shape), "dtype": dtype_name(b), "numel": b.numel(),
                     "persistent": n not in m._non_persistent_buffers_set}
                    for n, b in m.named_buffers(recurse=False)],
        "param_count": sum(p.numel() for p in m.parameters()),
        "buffer_count": sum(b.numel() for b in m.buffers()),
        "hooks": len(m._forward_hooks),
        "hook_functions": [fn_name(fn) for fn in m._forward_hooks.values()],
    }


def model_facts(model):
    modules = []
    for name, m in model.named_modules():
        entry = {"name": name}
        entry.update(module_facts(m))
        modules.append(entry)
    return {
        "repr": repr(model),
        "modules": modules,
        "total_params": sum(p.numel() for p in model.parameters()),
        "total_buffers": sum(b.numel() for b in model.buffers()),
        "named_parameters": [n for n, _ in model.named_parameters()],
        "named_buffers": [n for n, _ in model.named_buffers()],
        "state_dict_keys": list(model.state_dict()),
        "attributes": {"name": model.name, "scale": model.scale, "sizes": list(model.sizes),
                       "sizes_type": type(model.sizes).__name__},
    }


def same_tensors(a, b):
    """Both modules hold equal parameters and buffers (names, dtypes, shapes, values)."""
    pa, pb = list(a.named_parameters()), list(b.named_parameters())
    ba, bb = list(a.named_buffers()), list(b.named_buffers())
    if [n for n, _ in pa] != [n for n, _ in pb] or [n for n, _ in ba] != [n for n, _ in bb]:
        return False
    ta, tb = [t for _, t in pa + ba], [t for _, t in pb + bb]
    return all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
               for x, y in zip(ta, tb))


def check_forward(model):
    """Runs the model once on a deep copy (the saved model's BatchNorm stats stay untouched)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, generator=g)
    ids = torch.tensor([1, 7])
    with torch.no_grad():
        y, e = m(x, ids)
    assert y.shape == (2, 2) and e.shape == (2, 4), (y.shape, e.shape)


def main():
    model = make_model()
    check_forward(model)
    live = model_facts(model)

    torch.save(model, MODEL_PT)
    # the same model's state dict: no class, no _parameters/_buffers, so which entries are
    # buffers must be told from their names (expected_module.json's named_buffers say)
    torch.save(model.state_dict(), STATE_DICT_PT)

    ema = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = {"epoch": 2, "model": model, "ema": ema, "optimizer": optimizer.state_dict()}
    torch.save(ckpt, TRAINING_CKPT)

    # Read both back (TinyNet and head_hook are in scope: this is __main__).
    back = torch.load(MODEL_PT)
    assert type(back) is TinyNet
    facts = model_facts(back)
    assert facts == live, "module_model.pt does not read back as the saved model"
    assert same_tensors(back, model)
    assert back.drop.training is False and back.training is True
    assert "mask" in back._buffers and "mask" not in back.state_dict()
    assert list(back.head._forward_hooks.values()) == [head_hook]
    check_forward(back)

    tback = torch.load(TRAINING_CKPT)
    assert list(tback) == ["epoch", "model", "ema", "optimizer"]
    assert type(tback["model"]) is TinyNet and type(tback["ema"]) is TinyNet
    assert tback["model"] is not tback["ema"]
    m_facts, e_facts = model_facts(tback["model"]), model_facts(tback["ema"])
    assert m_facts == live and e_facts == live
    assert same_tensors(tback["model"], model) and same_tensors(tback["ema"], model)
    # ema was deep-copied: no storage is shared with model.
    def ptrs(m):
        return {t.data_ptr() for t in list(m.parameters()) + list(m.buffers())}
    assert not (ptrs(tback["model"]) & ptrs(tback["ema"]))

    opt = tback["optimizer"]
    assert opt == optimizer.state_dict()
    names = [n for n, _ in tback["model"].named_parameters()]
    ids = opt["param_groups"][0]["params"]
    assert len(ids) == len(names)

    expected = {"module_model.pt": facts}
    expected["training_ckpt"] = {
        "file": os.path.basename(TRAINING_CKPT),
        "keys": list(tback),
        "epoch": tback["epoch"],
        "model": m_facts,
        "ema": e_facts,
        "ema_shares_storage_with_model": False,
        "optimizer": {
            "class": "torch.optim.SGD",
            "state": {str(k): v for k, v in opt["state"].items()},
            "param_groups": opt["param_groups"],
            "param_ids": ids,
            "param_names": [{"id": i, "name": n} for i, n in zip(ids, names)],
        },
    }

    with open(EXPECTED, "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")

    for path in (MODEL_PT, TRAINING_CKPT):
        size = os.path.getsize(path)
        assert size < MAX_SIZE, (path, size)
        print(f"{os.path.relpath(path)}: {size} bytes")
    print(f"{os.path.relpath(EXPECTED)}: {os.path.getsize(EXPECTED)} bytes")


if __name__ == "__main__":
    main()
