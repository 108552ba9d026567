#!/usr/bin/python3
"""Writes cases.json: pickles whose str opcodes carry text at the edges of what Python's
decoders accept (BINUNICODE's UTF-8 with surrogatepass, UNICODE's raw-unicode-escape),
each with what pickle.loads makes of it: the str's code points, or the error it raises.
The pickles are written by hand (Python's pickler never writes the refused ones); the
verdicts are Python's own. Run: /usr/bin/python3 gen_text.py (from this directory)."""
import json, pickle, struct

def binunicode(b):
    return b"\x80\x04X" + struct.pack("<I", len(b)) + b + b"."

def short(b):
    return b"\x80\x04\x8c" + bytes([len(b)]) + b + b"."

def binunicode8(b):
    return b"\x80\x04\x8d" + struct.pack("<Q", len(b)) + b + b"."

def unicode0(b):
    return b"V" + b + b"\n."

def plain_dict(bad):
    # {"ok": 1, <bad>: 2} in protocol 4: a plain-data pickle with one key Python cannot decode
    return (b"\x80\x04}\x94(\x8c\x02ok\x94K\x01\x8c" + bytes([len(bad)]) + bad + b"\x94K\x02u.")

CASES = {
    "binunicode ascii and accents": binunicode("héllo wörld".encode()),
    "binunicode byte 0xff": binunicode(b"ab\xffcd"),
    "binunicode encoded surrogate": binunicode(b"a\xed\xa0\x80b"),
    "binunicode low surrogate": binunicode(b"\xed\xbf\xbf"),
    "binunicode surrogate cut short": binunicode(b"a\xed\xa0"),
    "short_binunicode overlong nul": short(b"\xc0\x80"),
    "short_binunicode past U+10FFFF": short(b"\xf4\x90\x80\x80"),
    "short_binunicode four-byte char": short("x\U0001F600y".encode()),
    "binunicode8 cut inside a char": binunicode8(b"euro \xe2\x82"),
    "binunicode continuation byte alone": binunicode(b"\x80"),
    "unicode escapes": unicode0(b"a\\u0041b\\U0001F600c"),
    "unicode doubled backslash": unicode0(b"\\\\u0041"),
    "unicode backslash x": unicode0(b"\\x41"),
    "unicode trailing backslash": unicode0(b"ab\\"),
    "unicode latin-1 byte": unicode0(b"caf\xe9"),
    "unicode surrogate escape": unicode0(b"\\ud800"),
    "unicode truncated u escape": unicode0(b"\\u00"),
    "unicode bad hex digit": unicode0(b"\\u004g"),
    "unicode out of range": unicode0(b"\\U00110000"),
    "unicode truncated U escape": unicode0(b"\\U0001F60"),
    "plain dict with a bad key": plain_dict(b"k\xfe"),
    "plain dict with a surrogate key": plain_dict(b"k\xed\xb0\x80"),
}

out = []
for name, data in CASES.items():
    case = {"name": name, "pickle": data.hex()}
    try:
        v = pickle.loads(data)
    except UnicodeDecodeError as e:
        case["error"] = "UnicodeDecodeError: " + str(e)
    else:
        if isinstance(v, dict):
            case["keys"] = [[ord(c) for c in k] for k in v]
        else:
            case["codepoints"] = [ord(c) for c in v]
    out.append(case)

with open("cases.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
