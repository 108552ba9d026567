#!/usr/bin/env python3
"""Writes the pickles of dict keys that read alike or that URLs cannot carry, for
keys_test.go (internal/loader) and keys_test.go (internal/server):

    /usr/bin/python3 internal/loader/testdata/keys/gen_keys.py

- keys.pkl:      {7: 1, "7": 2, "7 (2)": 3, ".": 4, "..": 5, "": 6, "a/b": 7, "~x": 8}
- keys3.pkl:     {7: 1, "7": 2, "7 (2)": 3}
- suffix.pkl:    {"a": 1, "a (2)": 2}
- int_str.pkl:   {7: "int", "7": "str"}
- str_int.pkl:   {"7": "str", 7: "int"}
- attrs.pkl:     an object of class __main__.Attrs whose __dict__ is keys3.pkl's dict
                 (its BUILD state: attributes, not dict entries)
- expected.json: for each file, Python's own entries in order: repr(key) and value (of
                 the __dict__ for attrs.pkl).

Each file is pickle.dumps(d) at the default protocol of this Python.
"""

import json
import os
import pickle

HERE = os.path.dirname(os.path.abspath(__file__))

FILES = {
    "keys.pkl": {7: 1, "7": 2, "7 (2)": 3, ".": 4, "..": 5, "": 6, "a/b": 7, "~x": 8},
    "keys3.pkl": {7: 1, "7": 2, "7 (2)": 3},
    "suffix.pkl": {"a": 1, "a (2)": 2},
    "int_str.pkl": {7: "int", "7": "str"},
    "str_int.pkl": {"7": "str", 7: "int"},
}


class Attrs:
    pass


def main():
    expected = {}
    for name, d in FILES.items():
        data = pickle.dumps(d)
        assert pickle.loads(data) == d
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        expected[name] = [[repr(k), v] for k, v in d.items()]
    o = Attrs()
    o.__dict__.update({7: 1, "7": 2, "7 (2)": 3})
    with open(os.path.join(HERE, "attrs.pkl"), "wb") as f:
        f.write(pickle.dumps(o))
    expected["attrs.pkl"] = [[repr(k), v] for k, v in o.__dict__.items()]
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
