"""Writes dicts keyed by objects, and Python's own account of them in expected_objkeys.json:

  objkeys.pkl          pickle.dump (protocol 4) of a dict keyed by three instances of one
                       class, a dict keyed by two of the same instances, and a list of them;
  optim_zip.pt         torch.save of a model's state dict and its torch.optim.Adam itself (not
                       its state_dict()) after a step: the optimizer's state is a defaultdict
                       keyed by the Parameter objects, which param_groups lists again;
  optim_legacy.pt      the same with _use_new_zipfile_serialization=False.

Each key is an object Python compares by identity, and the pickler writes each object once,
so every entry is its own (len() below), and a key met again is the object met first.

Run from the repository root: /usr/bin/python3 testdata/models/generate_objkeys.py
"""

import json
import os
import pickle
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class Key:
    def __init__(self, n):
        self.n = n


def tensors_in(root):
    """The distinct tensor objects reachable from root, through keys too."""
    seen, found, stack = set(), {}, [root]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, torch.Tensor):
            found[id(v)] = v
        elif isinstance(v, dict):
            for k, x in v.items():
                stack += [k, x]
        elif isinstance(v, (list, tuple)):
            stack += list(v)
        elif hasattr(v, "__dict__") and not isinstance(v, type):
            stack.append(vars(v))
    return len(found)


def main():
    sys.modules["__main__"].Key = Key
    facts = {}

    k = [Key(1), Key(2), Key(3)]
    d = {"by_key": {k[0]: "a", k[1]: "b", k[2]: "c"}, "again": {k[0]: "x", k[1]: "y"}, "keys": k}
    path = os.path.join(HERE, "objkeys.pkl")
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)
    with open(path, "rb") as f:
        back = pickle.load(f)
    facts["objkeys.pkl"] = {
        "dicts": {"/by_key": [v for v in back["by_key"].values()], "/again": [v for v in back["again"].values()]},
        # for each entry of a dict, the index in /keys of the object that is its key
        "key_index": {
            "/by_key": [next(i for i, o in enumerate(back["keys"]) if o is key) for key in back["by_key"]],
            "/again": [next(i for i, o in enumerate(back["keys"]) if o is key) for key in back["again"]],
        },
    }

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    for name, zipped in (("optim_zip.pt", True), ("optim_legacy.pt", False)):
        path = os.path.join(HERE, name)
        torch.save({"model": model.state_dict(), "optimizer": opt}, path, _use_new_zipfile_serialization=zipped)
        back = torch.load(path)
        o = back["optimizer"]
        params = o.param_groups[0]["params"]
        facts[name] = {
            "state_type": type(o.state).__name__ + "(" + o.state.default_factory.__name__ + ")",
            "state_len": len(o.state),
            # for each state entry, the index in param_groups[0]["params"] of its key
            "key_index": [next(i for i, p in enumerate(params) if p is key) for key in o.state],
            "exp_avg_shapes": [list(s["exp_avg"].shape) for s in o.state.values()],
            "param_shapes": [list(p.shape) for p in params],
            "tensors": tensors_in(back),
        }
    with open(os.path.join(HERE, "expected_objkeys.json"), "w") as f:
        json.dump(facts, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
