"""Writes tied_assign.pt: a state dict whose output weights are the embedding's tensor
object stored under a second key (sd["lm_head.weight"] = sd["wte.weight"], as GPT-2-style
code ties them), and expected_tied.json with torch's own account of it.

Run from the repository root: /usr/bin/python3 testdata/models/generate_tied.py
"""

import collections
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    torch.manual_seed(0)
    sd = collections.OrderedDict()
    sd["wte.weight"] = torch.randn(16, 8)
    sd["h.0.weight"] = torch.randn(8, 8)
    sd["h.0.bias"] = torch.randn(8)
    sd["lm_head.weight"] = sd["wte.weight"]  # the same object: a tie by assignment
    path = os.path.join(HERE, "tied_assign.pt")
    torch.save(sd, path)
    back = torch.load(path)
    assert back["lm_head.weight"] is back["wte.weight"]
    storages = {t.storage().data_ptr() for t in back.values()}
    facts = {
        "keys": list(back),
        "tensors": len(back),
        "numel": sum(t.numel() for t in back.values()),
        "unique_numel": sum(t.numel() for t in {id(t): t for t in back.values()}.values()),
        "storages": len(storages),
        "shared_storages": sum(1 for p in storages if sum(1 for t in back.values() if t.storage().data_ptr() == p) > 1),
    }
    with open(os.path.join(HERE, "expected_tied.json"), "w") as f:
        json.dump(facts, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
