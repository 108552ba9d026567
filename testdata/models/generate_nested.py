#!/usr/bin/python3
"""Writes the fixtures of tensors pickled with pickle (not torch.save) and their facts.

Run from the repository root with the Debian Python that has torch:

    /usr/bin/python3 testdata/models/generate_nested.py

pickle.dump of a torch tensor stores its storage as torch.storage._load_from_bytes(b), where
b is a whole legacy torch file written by torch.save(storage, _use_new_zipfile_serialization=
False); unpickling it runs torch.load on b. The facts come from torch itself:

- testdata/models/pickled_tensors.pkl (benign, protocols 2) and its values read back with
  pickle.load into expected_pickled_tensors.json;
- internal/loader/testdata/nested/*.pkl (hostile, made by hand around a legacy torch file)
  and, for each, whether unpickling it in a scratch directory made the payload's marker file:
  the payload only runs `touch <marker>` in that directory.
"""

import io
import json
import os
import pickle
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "testdata", "models")
NESTED = os.path.join(ROOT, "internal", "loader", "testdata", "nested")
MAGIC = 0x1950A86A20F9469CFC6C


def tensor_facts(t):
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
            "values": t.flatten().tolist()[:8], "sum": float(t.double().sum())}


def benign():
    g = torch.Generator().manual_seed(7)
    obj = {
        "small": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "large": torch.randn(64, 40, generator=g),  # 10 kB: its bytes are past 4 kB
        "nested": {"ids": torch.tensor([3, 1, 4, 1, 5], dtype=torch.int64), "step": 12},
        "half": torch.linspace(-1, 1, 9).half(),
    }
    path = os.path.join(MODELS, "pickled_tensors.pkl")
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with open(path, "rb") as f:
        back = pickle.load(f)  # our own benign fixture: this is the truth
    facts = {
        "/small": tensor_facts(back["small"]),
        "/large": tensor_facts(back["large"]),
        "/nested/ids": tensor_facts(back["nested"]["ids"]),
        "/half": tensor_facts(back["half"]),
    }
    with open(os.path.join(MODELS, "expected_pickled_tensors.json"), "w") as f:
        json.dump({"pickled_tensors.pkl": facts}, f, indent=1, sort_keys=True)
        f.write("\n")


class Payload:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class FromBytes:
    """Pickles as torch.storage._load_from_bytes(b), as a storage does."""

    def __init__(self, b):
        self.b = b

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.b,))


def legacy_file(main_obj):
    """A legacy torch file whose object is main_obj and that has no storages."""
    out = io.BytesIO()
    for v in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(v, out, protocol=2)
    pickle.dump(main_obj, out, protocol=2)
    pickle.dump([], out, protocol=2)
    return out.getvalue()


def runs_payload(data):
    """Unpickles data in a scratch directory and says whether the marker was made."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "f.pkl")
        with open(p, "wb") as f:
            f.write(data)
        code = "import pickle,torch,sys; pickle.load(open(sys.argv[1],'rb'))"
        subprocess.run([sys.executable, "-c", code, p], cwd=d, capture_output=True)
        return os.path.exists(os.path.join(d, "marker"))


def hostile():
    os.makedirs(NESTED, exist_ok=True)
    evil = legacy_file(Payload("touch marker"))
    pad = legacy_file({"pad": "x" * 6000, "run": Payload("touch marker")})
    zipped = io.BytesIO()
    torch.save({"run": Payload("touch marker")}, zipped)
    cases = {
        # the payload is the nested torch file's object
        "nested_system.pkl": pickle.dumps({"w": FromBytes(evil)}, protocol=2),
        # the nested file is larger than 4 kB (the viewer reads it in place), protocol 4
        "nested_large.pkl": pickle.dumps([FromBytes(pad)], protocol=4),
        # a nested file inside a nested file
        "nested_twice.pkl": pickle.dumps(FromBytes(legacy_file(FromBytes(evil))), protocol=2),
        # torch.load opens zip archives too
        "nested_zip.pkl": pickle.dumps(FromBytes(zipped.getvalue()), protocol=4),
        # a nested file cut short after its main pickle began
        "nested_truncated.pkl": pickle.dumps(FromBytes(evil[:len(evil) - 12]), protocol=2),
    }
    facts = {}
    for name, data in cases.items():
        with open(os.path.join(NESTED, name), "wb") as f:
            f.write(data)
        facts[name] = {"runs_payload": runs_payload(data)}
    with open(os.path.join(NESTED, "expected.json"), "w") as f:
        json.dump(facts, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    benign()
    hostile()
