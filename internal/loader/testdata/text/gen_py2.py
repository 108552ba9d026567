#!/usr/bin/python3
"""Writes py2/* with py2.json: files holding Python 2 strs (STRING, BINSTRING,
SHORT_BINSTRING), and what Python makes of each with the default decoding of such strs:
pickle.loads (encoding='ASCII') for the raw pickles, torch.load (encoding='utf-8',
weights_only=False) for the legacy torch files, numpy.load(allow_pickle=True)
(encoding='ASCII') for the .npy object arrays, joblib.load for the joblib files; "error"
is the exception raised, absent when the file loads. Each pickle is written by hand
(Python 3's pickler writes no such strs). Run: /usr/bin/python3 gen_py2.py (from this
directory)."""
import io, json, os, pickle, struct, tempfile
import joblib, numpy, torch

def short(b):
    return b"U" + bytes([len(b)])+ b

def binstring(b):
    return b"T" + struct.pack("<i", len(b)) + b

def tuple_of(*items):
    return b"\x80\x02(" + b"".join(items) + b"t."

def legacy(obj_pickle):
    f = io.BytesIO()
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    f.write(obj_pickle)
    pickle.dump([], f, protocol=2)
    return f.getvalue()

RAW = {
    "ascii.pkl": tuple_of(short(b"cafe"), binstring(b"plain text")),
    "latin1.pkl": tuple_of(short(b"ok"), short(b"caf\xe9")),
    "large.pkl": tuple_of(binstring(b"a" * 6000 + b"\x80" + b"b" * 100)),
    "string_opcode.pkl": b"(S'caf\\xe9'\ntp0\n.",
    "utf8_in_binstring.pkl": tuple_of(short("café".encode())),
}
TORCH = {
    "utf8.pt": legacy(tuple_of(short("café".encode()))),
    "latin1.pt": legacy(tuple_of(short(b"caf\xe9"))),
    "large_utf8.pt": legacy(tuple_of(binstring(("é" * 3000).encode()))),
    "large_latin1.pt": legacy(tuple_of(binstring(b"\xe9" * 5000))),
}

def npy_object(obj_pickle):
    # a .npy of an object array, whose data numpy.load(allow_pickle=True) unpickles
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    header += " " * (63 - len(header) - 10) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + obj_pickle

def joblib_file(py2):
    # joblib.dump of an array and a str, the str's BINUNICODE made a Python 2 str
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.pkl")
        joblib.dump([numpy.arange(3), "x"], path, protocol=2)
        data = open(path, "rb").read()
    marker = b"X\x01\x00\x00\x00x"
    assert data.count(marker) == 1
    return data.replace(marker, short(py2))

NUMPY = {
    "objarr_latin1.npy": npy_object(tuple_of(short(b"caf\xe9"), short(b"ok"))),
    "objarr_ascii.npy": npy_object(tuple_of(short(b"cafe"), short(b"ok"))),
}
JOBLIB = {
    "joblib_latin1.pkl": joblib_file(b"caf\xe9"),
    "joblib_ascii.pkl": joblib_file(b"cafe"),
}

os.makedirs("py2", exist_ok=True)
out = {}
for name, data in {**RAW, **TORCH, **NUMPY, **JOBLIB}.items():
    with open(os.path.join("py2", name), "wb") as f:
        f.write(data)
    case = {}
    try:
        if name in TORCH:
            torch.load(io.BytesIO(data), weights_only=False)
        elif name in NUMPY:
            numpy.load(io.BytesIO(data), allow_pickle=True)
        elif name in JOBLIB:
            joblib.load(io.BytesIO(data))
        else:
            pickle.loads(data)
    except ValueError as e:  # UnicodeDecodeError, numpy's UnicodeError, joblib's ValueError
        case["error"] = type(e).__name__ + ": " + str(e)
    out[name] = case

with open("py2.json", "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
    f.write("\n")
