#!/usr/bin/python3
"""Writes the plain-data pickles (plain_*.pkl) and expected_plain.json.

Run from anywhere with the Debian Python:

    /usr/bin/python3 testdata/models/generate_plain.py

A plain pickle holds only None, bools, ints, floats, str, small bytes and lists, tuples and
dicts with str keys: it names no global, and no container is reached twice. The loader
reads such a file in one pass (internal/loader/plain.go). Each file is written by the real
pickle.dump at protocol 2, 3, 4 or 5 and read back with pickle.load (safe: the script made
it), and the facts come from the object pickle.load returned:

- `values`: the values of the tree as the loader counts them: every value once, the root
  included, dict keys not counted (a list of 2 dicts of 3 entries each is 1 + 2 + 6 = 9);
- `facts`: `{path, index, kind, type, value, len}` for the root, every item of each
  container of up to 32 items, the first 3 and last 3 and 4 more (seeded) of the items of
  each larger container (and everything under them by the same rule), and the entries of
  `TRICKY_KEYS` (in the vocabulary). `path` is a JSON Pointer (RFC 6901: `~` as `~0`,
  `/` as `~1`), `index` the item's position in its parent (absent for the root). `value`:
  int as a decimal string, float as `repr` (`nan`, `inf`, `-inf`, `-0.0`), str its text,
  bytes its hex, bool true/false, None null, containers their length; `len` is `len()` of
  a str (code points), bytes or container.

Protocol 2 has no plain bytes (pickle writes `_codecs.encode` for them), so the protocol 2
files hold none. The script checks that every file uses only the opcodes the one-pass
reading takes and that the same content gives the same facts at every protocol it is
written at. Fixed seed; running it twice gives byte-identical files.
"""

import io
import json
import math
import os
import pickle
import pickletools
import random

HERE = os.path.dirname(os.path.abspath(__file__))

# The opcodes pickle.dump writes for plain data at protocols 2-5 (and plain.go reads).
PLAIN_OPS = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "LONG4",
    "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE", "LIST",
    "DICT", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
    "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
}

# Keys that need escaping in a JSON Pointer, or look like something else.
TRICKY_KEYS = ["", "/", "//", "~", "~0", "~1", "~01", "a/b", "a~b", "a~1b", "x/~/y", " ",
               "\t", "\n", "\x00", "0", "-1", "__key__", "café", "日本語", "😀",
               "👨\u200d👩\u200d👧", "\U0010ffff", "e\u0301"]


def rng(name):
    return random.Random("ckptview-plain-" + name)


def fresh_tuple(items):
    # a new tuple object each time: a tuple the pickle met before would be a memo
    # reference to a container (a ref in the tree, which the one-pass reading leaves alone)
    return tuple(list(items))


def token(r):
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "éèàüñøßçœåäöÉ",
        "".join(chr(c) for c in range(0x4E00, 0x4E00 + 300)),  # CJK
        "".join(chr(c) for c in range(0x1F600, 0x1F650)),  # emoji (astral)
        "абвгдежзийклмнопрстуфхцчшщ",
        "αβγδεζηθικλμνξοπρστυφχψω",
        "가나다라마바사아자차카타파하",
    ]
    prefix = r.choice(["", "", "", "Ġ", "##", "▁", "<", "/", "~"])
    a = r.choice(alphabets)
    return prefix + "".join(r.choice(a) for _ in range(r.randint(1, 7)))


def records(n=1000):
    r = rng("records")
    tags = ["train", "valid", "test", "gold", "noisy", "café", "数据"]
    out = []
    for i in range(n):
        rec = {
            "id": i,
            "name": "user%04d" % i,
            "score": round(r.uniform(-10, 10), r.randint(0, 6)),
            "tags": [r.choice(tags) for _ in range(r.randint(0, 3))],
            "active": r.random() < 0.5,
            "parent": None if i % 7 == 0 else r.randrange(i + 1),
            "loc": fresh_tuple([r.uniform(-90, 90), r.uniform(-180, 180)]),
            "meta": {},
        }
        if i % 50 == 0:
            rec["note"] = "record %d: ünïcödé ✓ 😀" % i
        out.append(rec)
    return out


def vocab(n=3000, seed="vocab"):
    r = rng(seed)
    v = {}
    for k in TRICKY_KEYS:
        v[k] = len(v) * 97
    while len(v) < n:
        t = token(r)
        if t not in v:
            v[t] = len(v) * 97  # BININT1, BININT2 and BININT values
    v["<|endoftext|>"] = 2**31 - 1
    return v


def nested(depth, r):
    if depth == 0:
        return r.choice([r.randint(-1000, 1000), r.random(), "leaf%d" % r.randint(0, 99), None, True])
    kids = [nested(depth - 1, r) for _ in range(r.randint(1, 3))]
    if depth % 2:
        return fresh_tuple(kids)
    return kids


def mixed(with_bytes):
    r = rng("mixed")
    ints = [0, 1, -1, 127, 128, -128, -129, 255, 256, -256, 65535, 65536, -65536,
            2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**32, -2**40, 2**56 - 1, -2**56,
            2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64 - 1, 2**64, -(2**100), 10**50,
            -(10**50), 7**1000]  # 7**1000: 351 bytes, LONG4
    floats = [0.0, -0.0, 5e-324, 1e-310, 2.2250738585072014e-308, 0.1, 1.5, -1.5, 1 / 3,
              2.0**53, 2.0**53 + 2, 1e300, 1.7976931348623157e308, -1e-5,
              math.inf, -math.inf, math.nan, 123456789.125]
    shared = "shared-" + "x" * r.randint(10, 20)  # made at run time: one object, memoized
    shared_long = "".join(r.choice("abcdé日😀") for _ in range(1500))
    long_text = "".join(r.choice("The quick brown fox jumps over the lazy dog. ñ é 日本 😀\n")
                        for _ in range(3000))
    strings = ["", "a", "\x00", "\n\r\t", "\x7f", "\x80", "\ud7ff", "\ue000", "\uffff",
               "\U00010000", "\U0010ffff", "e\u0301", "日本語テキスト", "😀🎉",
               "👨\u200d👩\u200d👧", "quote ' and \" and \\", "a" * 255, "b" * 256]
    d = {
        "ints": ints,
        "floats": floats,
        "consts": [True, False, None, True, None, False],
        "tuples": [fresh_tuple(range(k)) for k in range(6)]
                  + [fresh_tuple(["a", 1.5, None]), fresh_tuple([fresh_tuple([1, 2]), [3], {"k": 4}])],
        "big_tuple": fresh_tuple(r.randint(-10**6, 10**6) for _ in range(100)),
        "nested": [nested(5, r) for _ in range(4)],
        "chain": None,
        "shared": [shared] * 50,
        "shared_long": [shared_long] * 40,
        "long": long_text,
        "strings": strings,
        "keys": {k: i for i, k in enumerate(TRICKY_KEYS[:12])},
        "matrix": [[round(r.gauss(0, 1), 4) for _ in range(8)] for _ in range(50)],
        "table": {"col%02d" % c: [r.randint(0, 9) for _ in range(10)] for c in range(40)},
        "empty": {"list": [], "dict": {}, "tuple": (), "str": ""},
        "after/slash": {"a~b": [1, 2, 3], "": {"": ""}},
    }
    chain = [1]
    for i in range(60):
        chain = [chain] if i % 3 else fresh_tuple([chain, i])
    d["chain"] = chain
    if with_bytes:
        blob = bytes(r.randrange(256) for _ in range(300))
        d["bytes"] = [b"", b"\x00\xff", bytes(range(256)), blob, blob, blob,
                      bytes(r.randrange(256) for _ in range(4095))]
        d["empty"]["bytes"] = b""
    return d


KINDS = {type(None): "none", bool: "bool", int: "int", float: "float", str: "str",
         bytes: "bytes", list: "list", tuple: "tuple", dict: "dict"}


def kind(x):
    return KINDS[type(x)]


def count(x):
    if isinstance(x, (list, tuple)):
        return 1 + sum(count(v) for v in x)
    if isinstance(x, dict):
        return 1 + sum(count(v) for v in x.values())
    return 1


def esc(seg):
    return seg.replace("~", "~0").replace("/", "~1")


def fact(path, index, x):
    k = kind(x)
    f = {"path": path}
    if index is not None:
        f["index"] = index
    f["kind"] = k
    f["type"] = type(x).__name__
    if k == "int":
        f["value"] = str(x)
    elif k == "float":
        f["value"] = repr(x)
    elif k == "bytes":
        f["value"] = x.hex()
    elif k in ("list", "tuple", "dict"):
        f["value"] = len(x)
    else:
        f["value"] = x  # str, bool, None
    if k in ("str", "bytes", "list", "tuple", "dict"):
        f["len"] = len(x)
    return f


def items(x):
    if isinstance(x, dict):
        return [(esc(k), v) for k, v in x.items()]
    if isinstance(x, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(x)]
    return []


def facts(obj, seed):
    r = rng("sample-" + seed)
    out = []

    def walk(path, index, x):
        out.append(fact(path, index, x))
        kids = items(x)
        n = len(kids)
        if n <= 32:
            pick = range(n)
        else:
            pick = sorted(set([0, 1, 2, n - 3, n - 2, n - 1] + r.sample(range(3, n - 3), 4)))
            if isinstance(x, dict):
                keys = list(x)
                pick = sorted(set(pick) | {keys.index(k) for k in TRICKY_KEYS if k in x})
        for i in pick:
            seg, v = kids[i]
            walk(path + "/" + seg, i, v)

    walk("", None, obj)
    return out


def check_ops(data, name):
    for op, arg, pos in pickletools.genops(data):
        assert op.name in PLAIN_OPS, (name, op.name, pos)


def main():
    files = {}
    recs = records()
    files["plain_records_p2.pkl"] = (recs, 2)
    files["plain_records_p4.pkl"] = (recs, 4)
    voc = vocab()
    files["plain_vocab_p3.pkl"] = (voc, 3)
    files["plain_vocab_p5.pkl"] = (voc, 5)
    files["plain_mixed_p2.pkl"] = (mixed(with_bytes=False), 2)
    for p in (3, 4, 5):
        files["plain_mixed_p%d.pkl" % p] = (mixed(with_bytes=True), p)

    expected = {"_about": "written by generate_plain.py from pickle.load of each file; see its docstring"}
    by_content = {}
    for name, (obj, proto) in files.items():
        buf = io.BytesIO()
        pickle.dump(obj, buf, protocol=proto)
        data = buf.getvalue()
        assert len(data) < 200_000, (name, len(data))
        check_ops(data, name)
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        with open(os.path.join(HERE, name), "rb") as f:
            back = pickle.load(f)
        content = name.rsplit("_p", 1)[0]
        fs = facts(back, content)
        entry = {"protocol": proto, "size": len(data), "values": count(back), "facts": fs}
        if proto == 2:
            content += " (no bytes)"
        if content in by_content:
            prev = by_content[content]
            assert prev["values"] == entry["values"] and prev["facts"] == fs, name
        by_content.setdefault(content, entry)
        expected[name] = entry

    # one fact a line
    def dumps(x):
        return json.dumps(x, ensure_ascii=False, allow_nan=False)

    lines = ["{", ' "_about": %s,' % dumps(expected.pop("_about"))]
    for i, (name, e) in enumerate(expected.items()):
        head = ", ".join('"%s": %s' % (k, dumps(e[k])) for k in ("protocol", "size", "values"))
        lines.append(' %s: {%s, "facts": [' % (dumps(name), head))
        lines.append(",\n".join("  " + dumps(f) for f in e["facts"]))
        lines.append(" ]}" + ("," if i < len(expected) - 1 else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == dict(expected, _about=json.loads(lines[1][len(' "_about": '):-1]))
    with open(os.path.join(HERE, "expected_plain.json"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
