#!/usr/bin/python3
"""Writes ckptview's test fixtures and the facts Go tests compare against.

Run from the repository root with the Debian Python that has the real libraries:

    /usr/bin/python3 testdata/models/generate.py

It overwrites every fixture in testdata/models/ and testdata/models/expected.json. The truth in
expected.json comes from torch, numpy, scikit-learn, joblib and the pickle module themselves,
never from ckptview's Go code:

- values, dtypes, shapes, strides and statistics are read from the objects torch.load /
  pickle.load / joblib.load give back for our own benign fixtures (the malicious ones are
  never loaded; their facts come from the objects before pickling and from pickletools);
- tree paths are computed twice and must agree: once by walking the live objects the way the
  pickler does (obj.__reduce_ex__(protocol), copyreg, state dicts), once by replaying the
  fixture's opcodes with a pickle.Unpickler whose find_class never imports anything;
- the globals a file names come from pickletools opcode scans;
- .npy and .npz facts come from np.load and from reading the headers and zip records by hand;
  safetensors files (written by write_safetensors below: there is no safetensors package here)
  are read back with json and numpy only, and the facts come from that reading.

See README.md for the path convention and for what each fixture exercises.
"""

import os
import sys

# Set iteration order and str hashes must not change between runs.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

os.environ.setdefault("OMP_NUM_THREADS", "1")

import _compat_pickle  # noqa: E402
import argparse  # noqa: E402
import ast  # noqa: E402
import bz2  # noqa: E402
import collections  # noqa: E402
import copyreg  # noqa: E402
import datetime  # noqa: E402
import decimal  # noqa: E402
import enum  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import hashlib  # noqa: E402
import lzma  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import pickletools  # noqa: E402
import struct  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from collections import OrderedDict  # noqa: E402

import joblib  # noqa: E402
import joblib.numpy_pickle_utils  # noqa: E402
import lz4  # noqa: E402
import lz4.frame  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402
from torch import nn  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))

# Globals that would run code or touch the system if Python unpickled them. Names are
# compared after Python 2 names (__builtin__, copy_reg) are mapped to Python 3 ones.
DANGEROUS_MODULES = {"os", "posix", "nt", "subprocess", "runpy", "importlib", "socket",
                     "shutil", "sys", "pty", "commands", "webbrowser", "code", "ctypes"}
DANGEROUS_NAMES = {"builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__",
                   "builtins.getattr", "builtins.setattr", "builtins.open", "builtins.input",
                   "builtins.breakpoint", "builtins.globals", "builtins.vars",
                   "pickle.loads", "pickle.load", "_pickle.loads", "marshal.loads",
                   "torch.load", "numpy.load", "torch.hub.load"}


# ----------------------------------------------------------------------------------------
# Small models and classes. Net, Color and Payload live in __main__ on purpose: the pickles
# that reference them cannot be loaded by Python without this script.


class Net(nn.Module):
    """The whole module saved by torch.save(model) in whole_module.pt."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.seq = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        self.register_buffer("running", torch.arange(4, dtype=torch.float32))

    def forward(self, x):
        return self.seq(self.fc1(x))


class Attention(nn.Module):
    def __init__(self, d, ctx):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx, dtype=torch.bool)))


class MLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)


class Block(nn.Module):
    def __init__(self, d, ctx):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, ctx)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLP(d)


class TinyGPT(nn.Module):
    """A GPT-shaped model whose lm_head shares its weight with the token embedding."""

    def __init__(self, vocab=50, d=16, ctx=8, n_layer=2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList([Block(d, ctx) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Payload:
    """Pickles as a call of os.system. pickle.dump never calls it; nothing here loads it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/ckptview-pwned",))


def module(**children):
    """An nn.Module with the given submodules, so state_dict() yields dotted keys."""
    m = nn.Module()
    for name, child in children.items():
        setattr(m, name, child)
    return m


# ----------------------------------------------------------------------------------------
# Path convention helpers.


def seg(key):
    """The JSON Pointer segment of a dict key or attribute name."""
    if isinstance(key, str):
        s = key
    elif type(key) is int:
        s = str(key)
    else:
        s = repr(key)
    return s.replace("~", "~0").replace("/", "~1")


def join(path, key):
    return path + "/" + seg(key)


def type_name(cls):
    """How a Node names a Python type: bare for builtins, module.qualname otherwise."""
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


def global_name(obj):
    """module.name the way the pickler writes a function or class (before Python 2 mapping)."""
    name = getattr(obj, "__qualname__", obj.__name__)
    return f"{pickle.whichmodule(obj, name)}.{name}"


def py3_name(full):
    """Maps a Python 2 global name (__builtin__.xrange, copy_reg._reconstructor) to Python 3."""
    module, _, name = full.rpartition(".")
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def is_dangerous(full):
    full = py3_name(full)
    module = full.rpartition(".")[0]
    return full in DANGEROUS_NAMES or module.split(".")[0] in DANGEROUS_MODULES


# JSON encodings of values.


def jfloat(f):
    f = float(f)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def jint(i):
    i = int(i)
    return i if abs(i) <= 2**53 else str(i)


def first_values(flat, single):
    """The first 8 elements of a flat array as JSON. single: float32/float16/bfloat16/complex64
    floats are written as the shortest decimal that round-trips through float32, so compare
    them after converting to float32 (all three are exact in float32)."""
    out = []
    for v in flat[:8].tolist():
        if single and isinstance(v, float):
            v = shortf32(v)
        elif single and isinstance(v, complex):
            v = complex(shortf32(v.real), shortf32(v.imag))
        out.append(jelem(v))
    return out


def shortf32(v):
    return float(str(np.float32(v))) if math.isfinite(v) else v


def jelem(v):
    """One array element as JSON (for "first")."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return jint(v)
    if isinstance(v, (float, np.floating)):
        return jfloat(v)
    if isinstance(v, (complex, np.complexfloating)):
        return [jfloat(v.real), jfloat(v.imag)]
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):  # a structured element, field by field
        return [jelem(x) for x in v]
    raise TypeError(f"no JSON form for array element {v!r}")


def jscalar(kind, v):
    """A scalar leaf as JSON (for "scalars"); bytes are {"hex": ...}."""
    if kind == "none":
        return None
    if kind == "bool":
        return bool(v)
    if kind == "int":
        return jint(v)
    if kind == "float":
        return jfloat(v)
    if kind == "complex":
        return [jfloat(v.real), jfloat(v.imag)]
    if kind == "str":
        return v
    if kind == "bytes":
        return {"hex": bytes(v).hex()}
    raise TypeError(kind)


def jarg(v):
    """A call argument in a finding, briefly."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return jscalar({type(None): "none", bool: "bool", int: "int", float: "float",
                        str: "str"}[type(v)], v)
    if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType)):
        return {"global": global_name(v)}
    if isinstance(v, G):
        return {"global": v.full}
    return repr(v)


# ----------------------------------------------------------------------------------------
# Walker 1: the live objects, visited the way the pickler visits them.


class Walk:
    """A tree walk that follows pickle's own dispatch and yields the path convention's nodes.

    Refs: only containers, objects, tensors and arrays become "ref" nodes when the same Python
    object is met again (pickle memoizes strs, bytes and globals too; those stay values).
    """

    def __init__(self, proto):
        self.proto = proto
        self.nodes = []  # [path, kind] in depth-first order
        self.types = {}
        self.scalars = {}
        self.refs = {}
        self.tensors = []  # (path, tensor or ndarray)
        self.calls = []  # (path, global name, args) for every object node
        self.dict_state = {}
        self.seen = {}
        self.keep = []  # keeps every visited object alive so ids are never reused

    def add(self, path, kind, typ=None):
        self.nodes.append([path, kind])
        if typ is not None:
            self.types[path] = typ

    def leaf(self, path, kind, value, typ=None):
        self.add(path, kind, typ)
        self.scalars[path] = jscalar(kind, value)

    def walk(self, obj, path=""):
        self.keep.append(obj)
        t = type(obj)
        refable = not (obj is None or t in (bool, int, float, complex, str, bytes)
                       or isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType,
                                           np.generic))
                       or (t is tuple and not obj))
        if refable:
            if id(obj) in self.seen:
                self.add(path, "ref")
                self.refs[path] = self.seen[id(obj)]
                return
            self.seen[id(obj)] = path

        if obj is None:
            self.leaf(path, "none", obj)
        elif t is bool:
            self.leaf(path, "bool", obj)
        elif t is int:
            self.leaf(path, "int", obj)
        elif t is float:
            self.leaf(path, "float", obj)
        elif t is complex:
            self.leaf(path, "complex", obj)
        elif t is str:
            self.leaf(path, "str", obj)
        elif t is bytes:
            self.leaf(path, "bytes", obj)
        elif t is bytearray:
            self.leaf(path, "bytes", obj, "bytearray")
        elif t in (list, tuple):
            self.add(path, t.__name__)
            for i, item in enumerate(obj):
                self.walk(item, f"{path}/{i}")
        elif t is dict:
            self.add(path, "dict")
            for k, v in obj.items():
                self.walk(v, join(path, k))
        elif t in (set, frozenset):
            self.add(path, t.__name__)
            for i, item in enumerate(obj):  # pickle writes sets in iteration order
                self.walk(item, f"{path}/{i}")
        elif isinstance(obj, torch.Tensor):
            self.add(path, "tensor", type_name(t))
            self.tensors.append((path, obj))
        elif isinstance(obj, np.ndarray):
            self.add(path, "ndarray", type_name(t))
            self.tensors.append((path, obj))
            if obj.dtype.hasobject:
                for i, item in enumerate(obj.reshape(-1)):
                    self.walk(item, f"{path}/{i}")
        elif isinstance(obj, np.generic):
            kind = {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}[obj.dtype.kind]
            self.leaf(path, kind, obj.item(), type_name(t))
        elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            self.add(path, "global")
        else:
            self.reduce(obj, path)

    def reduce(self, obj, path):
        reducer = copyreg.dispatch_table.get(type(obj))
        rv = reducer(obj) if reducer else obj.__reduce_ex__(self.proto)
        self.keep.append(rv)
        if isinstance(rv, str):
            self.add(path, "global")
            return
        rv = tuple(rv) + (None,) * (6 - len(rv))
        func, args, state, listitems, dictitems, _ = rv
        if func is copyreg.__newobj__:
            cls, cargs = args[0], tuple(args[1:])
            typ, gname = type_name(cls), global_name(cls)
        elif func is copyreg.__newobj_ex__:
            cls, cargs, kwargs = args
            if kwargs:
                raise NotImplementedError(f"{path}: NEWOBJ_EX with kwargs")
            typ, gname = type_name(cls), global_name(cls)
        elif func is copyreg._reconstructor and args[1] is object and args[2] is None:
            cls, cargs = args[0], ()
            typ, gname = type_name(cls), global_name(cls)
        else:
            cargs = tuple(args)
            gname = global_name(func)
            typ = type_name(func) if isinstance(func, type) else None
        kind = "dict" if func is OrderedDict else "object"
        self.add(path, kind, typ)
        self.calls.append((path, gname, cargs))
        if kind == "object":
            for i, a in enumerate(cargs):
                self.walk(a, f"{path}/__args__/{i}")
        elif cargs:
            raise NotImplementedError(f"{path}: OrderedDict with arguments")
        if listitems is not None:
            raise NotImplementedError(f"{path}: list items on an object")
        if dictitems is not None:
            items = list(dictitems)
            self.keep.append(items)
            if kind != "dict" and items:
                raise NotImplementedError(f"{path}: dict items on an object")
            for k, v in items:
                self.walk(v, join(path, k))
        if state is not None:
            self.keep.append(state)
            if kind == "dict":
                # OrderedDict attributes (a state_dict's _metadata) set by BUILD: not entries.
                self.dict_state[path] = list(state)
            elif type(state) is dict:
                for k, v in state.items():
                    self.walk(v, join(path, k))
            else:
                self.walk(state, path + "/__state__")


# ----------------------------------------------------------------------------------------
# Walker 2: the fixture's own opcodes, replayed without importing anything.


class G:
    """A global as the pickle names it. Never imported."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.full = f"{module}.{name}"

    def __call__(self, *args):
        return Call(self, args, "reduce")

    def __repr__(self):
        return f"G({self.full})"


class Call:
    """What REDUCE / NEWOBJ / BUILD / SETITEMS did to a global, recorded, never performed."""

    def __init__(self, func, args, how):
        self.func, self.args, self.how = func, tuple(args), how
        self.items, self.listitems = [], []
        self.state, self.has_state = None, False

    def __call__(self, *args):
        return Call(self, args, "reduce")

    def __setstate__(self, state):
        self.state, self.has_state = state, True

    def __setitem__(self, k, v):
        self.items.append((k, v))

    def append(self, v):
        self.listitems.append(v)

    def extend(self, vs):
        self.listitems.extend(vs)

    @property
    def name(self):
        return py3_name(self.func.full) if isinstance(self.func, G) else None


class PID(tuple):
    """A persistent id (torch storages)."""


class PSet(list):
    """A set from EMPTY_SET/ADDITEMS, in pickle order."""

    def add(self, item):
        self.append(item)


class PFrozen(tuple):
    """A frozenset from the FROZENSET opcode, in pickle order."""


class JoblibArray:
    """A numpy array joblib wrote as raw bytes after its NumpyArrayWrapper."""

    def __init__(self, state, offset, nbytes):
        self.state, self.offset, self.nbytes = state, offset, nbytes


class Replay(pickle._Unpickler):
    """A pickle.Unpickler that builds Calls and Gs instead of importing and calling."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f, joblib_file=False):
        super().__init__(f)
        self.file = f
        self.joblib_file = joblib_file
        self.globals_seen = []

    def find_class(self, module, name):
        self.globals_seen.append(f"{module}.{name}")
        return G(module, name)

    def persistent_load(self, pid):
        return PID(pid)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(Call(cls, args, "newobj"))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise NotImplementedError("NEWOBJ_EX with kwargs")
        self.append(Call(cls, args, "newobj"))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_empty_set(self):
        self.append(PSet())

    dispatch[pickle.EMPTY_SET[0]] = load_empty_set

    def load_frozenset(self):
        items = self.pop_mark()  # pop_mark rebinds self.append
        self.append(PFrozen(items))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_build(self):
        super().load_build()
        inst = self.stack[-1]
        if self.joblib_file and isinstance(inst, Call) and inst.name == "joblib.numpy_pickle.NumpyArrayWrapper":
            st = inst.state
            dt = replay_dtype(st["dtype"])
            # joblib commits the pickle frame right after the wrapper (NumpyPickler.save), so
            # what follows BUILD is outside any frame: read it from the file itself.
            frame = self._unframer.current_frame
            assert frame is None or frame.tell() == len(frame.getbuffer()), "frame not at its end"
            if dt.hasobject:
                # joblib writes an object array as pickle.dump(array, file, protocol=2) right
                # after the wrapper's BUILD (NumpyArrayWrapper.write_array) and reads it back with
                # pickle.load(file): a nested pickle. Replay it the same way, on the same file,
                # with a plain (not joblib) Replay; the outer frame ends at this BUILD (joblib
                # commits it before writing the array), so the file is positioned at the nested
                # PROTO and, after its STOP, at the next outer opcode.
                start = self.file.tell()
                nested = Replay(self.file)
                nested.globals_seen = self.globals_seen
                arr = nested.load()
                assert isinstance(arr, Call) and arr.name == "numpy.core.multiarray._reconstruct", arr
                arr.joblib_pickle = (start, self.file.tell())
                self.stack[-1] = arr
                return
            # joblib's rule (NumpyArrayWrapper.safe_get_numpy_array_alignment_bytes): one byte n
            # and n padding bytes only when the wrapper has numpy_array_alignment_bytes and it is
            # not None (joblib <= 1.1 wrote none).
            if st.get("numpy_array_alignment_bytes") is not None:
                pad = self.read(1)[0]
                self.read(pad)
            nbytes = int(np.prod(st["shape"])) * dt.itemsize
            offset = self.file.tell()
            self.read(nbytes)
            self.stack[-1] = JoblibArray(st, offset, nbytes)

    dispatch[pickle.BUILD[0]] = load_build


def replay_dtype(call):
    """The numpy dtype a replayed numpy.dtype(...) call + BUILD describes (plain dtypes only)."""
    assert call.name == "numpy.dtype", call.name
    code = call.args[0]
    order = call.state[1] if call.has_state else "|"
    if call.state[3] is not None:  # fields: a structured dtype
        names, fields = call.state[3], call.state[4]
        return np.dtype({"names": list(names),
                         "formats": [replay_dtype(fields[n][0]) for n in names],
                         "offsets": [fields[n][1] for n in names],
                         "itemsize": call.state[5]})
    if code[0] in "US":
        size = call.state[5]
        return np.dtype(f"{order if order != '|' else ''}{code[0]}{size // (4 if code[0] == 'U' else 1)}")
    return np.dtype(code).newbyteorder(order) if order in "<>" else np.dtype(code)


class ReplayTree:
    """The replayed objects turned into nodes with the same convention as Walk."""

    def __init__(self):
        self.nodes = []
        self.tensors = {}  # path -> dict of what the pickle says about the tensor
        self.refs = {}
        self.calls = []  # (path, raw global name, args)
        self.seen = {}

    def add(self, path, kind):
        self.nodes.append([path, kind])

    def walk(self, x, path=""):
        kind = self.kind_of(x)
        refable = kind in ("list", "tuple", "dict", "set", "frozenset", "object", "tensor",
                           "ndarray") or (kind == "bytes" and isinstance(x, (bytearray, Call))
                                          and self.call_name(x) == "builtins.bytearray")
        if isinstance(x, tuple) and not isinstance(x, PID) and not x:
            refable = False
        if refable:
            if id(x) in self.seen:
                self.add(path, "ref")
                self.refs[path] = self.seen[id(x)]
                return
            self.seen[id(x)] = path
        self.add(path, kind)
        if kind in ("list", "tuple", "set", "frozenset"):
            items = x.args[0] if isinstance(x, Call) else x
            for i, item in enumerate(items):
                self.walk(item, f"{path}/{i}")
        elif kind == "dict":
            items = x.items if isinstance(x, Call) else list(x.items())
            for k, v in items:
                self.walk(v, join(path, self.key_of(k)))
        elif kind == "tensor":
            self.tensors[path] = self.tensor_info(x)
        elif kind == "ndarray":
            self.tensors[path] = info = self.ndarray_info(x)
            if info.get("objects") is not None:
                for i, item in enumerate(info["objects"]):
                    self.walk(item, f"{path}/{i}")
        elif kind == "object":
            self.calls.append((path, x.func.full if isinstance(x.func, G) else None, x.args))
            args = x.args
            if x.name == "copyreg._reconstructor":
                args = ()
            for i, a in enumerate(args):
                self.walk(a, f"{path}/__args__/{i}")
            for k, v in x.items:
                self.walk(v, join(path, self.key_of(k)))
            for i, v in enumerate(x.listitems):
                self.walk(v, f"{path}/{i}")
            if x.has_state and x.state is not None:
                if type(x.state) is dict:
                    for k, v in x.state.items():
                        self.walk(v, join(path, self.key_of(k)))
                else:
                    self.walk(x.state, path + "/__state__")

    @staticmethod
    def call_name(x):
        return x.name if isinstance(x, Call) else None

    def key_of(self, k):
        """A dict key as the Python value it stands for (for the path segment)."""
        if isinstance(k, Call) and k.name == "_codecs.encode":
            return k.args[0].encode(k.args[1])
        if isinstance(k, tuple):
            return tuple(self.key_of(i) for i in k)
        return k

    def kind_of(self, x):
        if x is None:
            return "none"
        if isinstance(x, bool):
            return "bool"
        if isinstance(x, int):
            return "int"
        if isinstance(x, float):
            return "float"
        if isinstance(x, str):
            return "str"
        if isinstance(x, (bytes, bytearray)):
            return "bytes"
        if isinstance(x, PSet):
            return "set"
        if isinstance(x, PFrozen):
            return "frozenset"
        if isinstance(x, PID):
            raise NotImplementedError("a persistent id outside a tensor")
        if isinstance(x, tuple):
            return "tuple"
        if isinstance(x, list):
            return "list"
        if isinstance(x, dict):
            return "dict"
        if isinstance(x, G):
            return "global"
        if isinstance(x, JoblibArray):
            return "ndarray"
        assert isinstance(x, Call), type(x)
        name = x.name
        if x.how == "reduce":
            if name in ("_codecs.encode", "builtins.bytearray", "builtins.bytes"):
                return "bytes"
            if name == "builtins.complex":
                return "complex"
            if name in ("builtins.set", "builtins.frozenset"):
                return name.split(".")[1]
            if name == "collections.OrderedDict":
                return "dict"
            if name in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                        "torch._utils._rebuild_qtensor"):
                return "tensor"
            if name in ("numpy.core.multiarray._reconstruct", "numpy.core.numeric._frombuffer"):
                return "ndarray"
            if name == "numpy.core.multiarray.scalar":
                code = x.args[0].args[0]
                return {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}[
                    np.dtype(code).kind]
        return "object"

    def tensor_info(self, x):
        requires_grad = None
        if x.name == "torch._utils._rebuild_parameter":
            requires_grad = x.args[1]
            x = x.args[0]
        pid, offset, size, stride = x.args[:4]
        if x.name == "torch._utils._rebuild_tensor_v2":
            rg = x.args[4]
        else:  # _rebuild_qtensor: (storage, offset, size, stride, quantizer_params, requires_grad, hooks)
            rg = x.args[5]
        if requires_grad is None:
            requires_grad = rg
        assert pid[0] == "storage", pid
        return {"storage_class": pid[1].full, "key": pid[2], "location": pid[3],
                "storage_numel": pid[4], "storage_offset": offset, "shape": list(size),
                "strides": list(stride), "requires_grad": requires_grad}

    def ndarray_info(self, x):
        if isinstance(x, JoblibArray):
            st = x.state
            dt = replay_dtype(st["dtype"])
            return {"shape": list(st["shape"]), "dtype": dt, "fortran_order": st["order"] == "F",
                    "objects": None, "joblib_offset": x.offset}
        if x.name == "numpy.core.numeric._frombuffer":
            buf, dtc, shape, order = x.args
            return {"shape": list(shape), "dtype": replay_dtype(dtc), "fortran_order": order == "F",
                    "objects": None}
        version, shape, dtc, is_fortran, raw = x.state
        dt = replay_dtype(dtc)
        info = {"shape": list(shape), "dtype": dt, "fortran_order": bool(is_fortran),
                "objects": raw if dt.hasobject else None}
        if hasattr(x, "joblib_pickle"):  # a joblib object array: the nested pickle's extent
            info["joblib_pickle"] = x.joblib_pickle
        return info


# How joblib tells its codecs apart: the first bytes of the file (joblib.compressor's
# _ZLIB_PREFIX, _GZIP_PREFIX, ... in the order joblib registers them). An uncompressed joblib
# file starts with the pickle's PROTO (0x80).
JOBLIB_PREFIXES = [("zlib", b"x"), ("gzip", b"\x1f\x8b"), ("bz2", b"BZ"), ("lzma", b"\x5d\x00"),
                   ("xz", b"\xfd\x37\x7a\x58\x5a"), ("lz4", b"\x04\x22\x4d\x18")]


def joblib_stream(path):
    """(codec or None, the pickle stream joblib.load reads): a compressed joblib file is
    decompressed whole with the module joblib's own file objects use (zlib.decompressobj with
    wbits 15 for zlib and 31 for gzip, bz2, lzma with FORMAT_ALONE / FORMAT_XZ, lz4.frame)."""
    with open(path, "rb") as f:
        data = f.read()
    codec = next((name for name, prefix in JOBLIB_PREFIXES if data.startswith(prefix)), None)
    with open(path, "rb") as f:  # joblib must detect the same codec
        detected = joblib.numpy_pickle_utils._detect_compressor(f)
    assert detected == (codec or "not-compressed"), (path, detected, codec)
    if codec is None:
        return None, data
    if codec in ("zlib", "gzip"):
        d = zlib.decompressobj(zlib.MAX_WBITS if codec == "zlib" else 31)
        raw = d.decompress(data) + d.flush()
        assert d.eof and not d.unused_data, path
    elif codec == "bz2":
        raw = bz2.decompress(data)
    elif codec in ("lzma", "xz"):
        raw = lzma.decompress(data, format=lzma.FORMAT_ALONE if codec == "lzma" else lzma.FORMAT_XZ)
    else:
        raw = lz4.frame.decompress(data)
    return codec, raw


def read_pickles(path):
    """The pickle streams in a fixture: [(name, bytes, offset)] for zip and legacy torch files."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        z = zipfile.ZipFile(io.BytesIO(data))
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return "torch-zip", [(name, z.read(name))]
    if first_pickle_int(data) == 0x1950A86A20F9469CFC6C:
        f, out, pos = io.BytesIO(data), [], 0
        for name in ("magic", "protocol", "sys_info", "main", "storage_keys"):
            end = pickle_end(f)
            out.append((name, data[pos:end]))
            pos = end
        return "torch-legacy", out
    return "pickle", [("pickle", data)]


def first_pickle_int(data):
    """The int a file's first pickle holds if it is just an int (the legacy torch magic), by
    opcode scan only."""
    ops = []
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            ops.append((op.name, arg))
            if op.name == "STOP" or len(ops) > 3:
                break
    except Exception:
        return None
    ops = [o for o in ops if o[0] not in ("PROTO", "FRAME")]
    if len(ops) == 2 and ops[0][0] in ("LONG1", "LONG", "LONG4", "INT") and ops[1][0] == "STOP":
        return ops[0][1]
    return None


def pickle_end(f):
    """Offset just past the STOP of the pickle starting at f's position."""
    for op, arg, pos in pickletools.genops(f):
        if op.name == "STOP":
            return f.tell()
    raise ValueError("no STOP")


def scan_globals(data):
    """Every module.name a pickle names (GLOBAL and STACK_GLOBAL), in order, by opcode scan."""
    out, memo, recent, last = [], {}, [], None
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name == "GLOBAL":
            out.append(arg.replace(" ", "."))
            last = None
        elif name == "STACK_GLOBAL":
            out.append(f"{recent[-2]}.{recent[-1]}")
            last = None
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                      "BINSTRING", "SHORT_BINSTRING"):
            last = arg
            recent.append(arg)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(int(arg))
            recent.append(last)
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last
        elif name in ("PROTO", "FRAME"):
            pass
        else:
            last = None
            recent.append(None)
    return out


# ----------------------------------------------------------------------------------------
# Facts about one tensor or array.

TORCH_STORAGE_DTYPES = {
    "torch.FloatStorage": "float32", "torch.DoubleStorage": "float64", "torch.HalfStorage": "float16",
    "torch.BFloat16Storage": "bfloat16", "torch.LongStorage": "int64", "torch.IntStorage": "int32",
    "torch.ShortStorage": "int16", "torch.CharStorage": "int8", "torch.ByteStorage": "uint8",
    "torch.BoolStorage": "bool", "torch.ComplexFloatStorage": "complex64",
    "torch.ComplexDoubleStorage": "complex128", "torch.QInt8Storage": "qint8",
    "torch.QUInt8Storage": "quint8", "torch.QInt32Storage": "qint32",
}


def stats_of(values):
    """Stats over a flat numpy array, in float64; complex on magnitude; NaN/inf counted apart."""
    a = values
    if a.dtype.kind == "c":
        a = np.abs(a.astype(np.complex128))
    a = a.astype(np.float64)
    fin = a[np.isfinite(a)]
    s = {"count": int(fin.size), "min": None, "max": None, "mean": None, "std": None,
         "l2": 0.0, "zeros": int(np.count_nonzero(a == 0)), "nan": int(np.isnan(a).sum()),
         "posinf": int(np.isposinf(a).sum()), "neginf": int(np.isneginf(a).sum())}
    if fin.size:
        s.update(min=float(fin.min()), max=float(fin.max()), mean=float(fin.mean()),
                 std=float(fin.std()), l2=float(math.sqrt(float(np.sum(fin * fin)))))
        counts, edges = np.histogram(fin, bins=64, range=(float(fin.min()), float(fin.max())))
        s["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    return s


SINGLE_TORCH = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)


def torch_facts(path, t):
    if t.is_quantized:
        values = t.int_repr().contiguous().numpy()
    elif t.dtype == torch.bfloat16:
        values = t.detach().float().contiguous().numpy()
    else:
        values = t.detach().contiguous().numpy()
    flat = values.reshape(-1)
    out = {"path": path, "kind": "tensor", "type": type_name(type(t)),
           "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
           "strides": list(t.stride()), "storage_offset": t.storage_offset(), "numel": t.numel(),
           "requires_grad": t.requires_grad, "first": first_values(flat, t.dtype in SINGLE_TORCH),
           "stats": stats_of(flat), "sha256_le": le_digest(values)}
    if t.is_quantized:
        out["quantization"] = {"scheme": str(t.qscheme()).replace("torch.", ""),
                               "scale": t.q_scale(), "zero_point": t.q_zero_point()}
        out["first_dequantized"] = [jelem(v) for v in t.dequantize().reshape(-1)[:8].tolist()]
        out["stats_dequantized"] = stats_of(t.dequantize().contiguous().numpy().astype(np.float64).reshape(-1))
        out["note"] = "first and stats are over the stored integers (int_repr)"
    return out


def le_digest(a):
    """sha256 of the values as C-contiguous little-endian bytes: what a raw download holds.
    Structured arrays: every field little-endian, the record bytes as the dtype lays them out.
    str arrays: UCS-4 little-endian code units; bytes arrays: the bytes, NUL padded."""
    a = np.ascontiguousarray(a)
    if a.dtype.fields is not None:
        le = a.dtype.newbyteorder("<")
        if le != a.dtype:
            a = a.astype(le)
    elif a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def contiguous_strides(shape, fortran=False):
    """Strides in elements of a contiguous layout; a 0 dimension counts as 1 (as torch and
    numpy's own stride filling do), so (2, 0) is [1, 1] and (0, 3) is [3, 1]."""
    dims = list(shape)[::-1] if not fortran else list(shape)
    out, n = [], 1
    for d in dims:
        out.append(n)
        n *= max(int(d), 1)
    return out[::-1] if not fortran else out


def byteorder_name(dt):
    """"big" or "little", as numpy_facts spells a dtype's byte order ("|" counts as little)."""
    return "big" if dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big") else "little"


def field_facts(dt):
    """A structured dtype's fields in order: name, descr (as .npy headers spell a dtype), byte
    offset; subarray fields add their shape."""
    out = []
    for name in dt.names:
        fdt, off = dt.fields[name][:2]
        f = {"name": name}
        if fdt.subdtype is not None:
            base, shape = fdt.subdtype
            f.update(descr=np.lib.format.dtype_to_descr(base), shape=list(shape))
        else:
            f["descr"] = np.lib.format.dtype_to_descr(fdt)
        f["offset"] = int(off)
        out.append(f)
    return out


def numpy_facts(path, a, file_dtype=None):
    """Facts about an array; file_dtype is the dtype the pickle names when it differs from the
    loaded one (numpy byte-swaps big-endian arrays to native order when it unpickles them)."""
    dt = file_dtype if file_dtype is not None else a.dtype
    assert dt.name == a.dtype.name and dt.itemsize == a.dtype.itemsize
    fortran = bool(a.flags.f_contiguous and not a.flags.c_contiguous)
    # numpy gives some zero-size arrays all-0 strides (np.zeros((0, 3))); such an array holds
    # no element, so report the contiguous layout's strides instead.
    strides = ([s // dt.itemsize for s in a.strides] if a.size else
               contiguous_strides(a.shape, fortran))
    out = {"path": path, "kind": "ndarray", "type": type_name(type(a)), "dtype": dt.name,
           "descr": dt.descr if dt.fields else dt.str,
           "byteorder": "big" if dt.byteorder == ">" else "little",
           "shape": list(a.shape),
           "strides": strides, "storage_offset": 0,
           "numel": int(a.size), "itemsize": dt.itemsize,
           "fortran_order": fortran}
    if dt.hasobject:
        return out
    flat = np.asarray(a).reshape(-1)  # np.asarray: a numpy.matrix stays 2-D when reshaped
    out["first"] = first_values(flat, dt.name in ("float32", "float16", "complex64"))
    if dt.fields:
        out["fields"] = field_facts(dt)
        out["sha256_le"] = le_digest(a)
    elif dt.kind in "biufc":
        out["stats"] = stats_of(flat)
        out["sha256_le"] = le_digest(a)
    elif dt.kind in "US":
        out["sha256_le"] = le_digest(a)
    return out


# ----------------------------------------------------------------------------------------
# Fixtures.


def make_tiny_gpt():
    torch.manual_seed(0)
    return TinyGPT()


def make_lightning():
    torch.manual_seed(1)

    class Lit(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    lit = Lit()
    opt = torch.optim.Adam(lit.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = nn.functional.cross_entropy(lit.model(x), y)
    loss.backward()
    opt.step()
    sched.step()
    best = torch.tensor(0.25)
    ckpt_path = "/ckpts/epoch=2-step=120.ckpt"
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": lit.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
            "'every_n_epochs': 1, 'train_time_interval': None}": {
                "monitor": "val_loss",
                "best_model_score": best,
                "best_model_path": ckpt_path,
                "current_score": torch.tensor(0.25),
                "dirpath": "/ckpts",
                "best_k_models": {ckpt_path: best},  # the same tensor object: a ref
                "kth_best_model_path": ckpt_path,
                "kth_value": torch.tensor(0.25),
                "last_model_path": "",
            },
            "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}": {
                "wait_count": 0, "stopped_epoch": 0, "best_score": torch.tensor(0.3), "patience": 3,
            },
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "lr": 0.001, "batch_size": 32, "model_name": "tiny-mlp", "layers": [4, 8, 3],
            "dropout": 0.1, "optimizer": {"name": "adam", "betas": [0.9, 0.999], "weight_decay": 0.0},
            "scheduler": None, "use_amp": False, "seed": 1234, "max_grad_norm": 1.0,
        },
    }


def make_hf_bert():
    torch.manual_seed(2)
    h, vocab, pos, inter = 8, 30, 16, 32
    embeddings = module(word_embeddings=nn.Embedding(vocab, h, padding_idx=0),
                        position_embeddings=nn.Embedding(pos, h),
                        token_type_embeddings=nn.Embedding(2, h),
                        LayerNorm=nn.LayerNorm(h, eps=1e-12))
    # As in transformers: an expanded arange, so the saved buffer has stride 0 on dim 0.
    embeddings.register_buffer("position_ids", torch.arange(pos).expand((1, -1)))
    layer = module(
        attention=module(self=module(query=nn.Linear(h, h), key=nn.Linear(h, h), value=nn.Linear(h, h)),
                         output=module(dense=nn.Linear(h, h), LayerNorm=nn.LayerNorm(h, eps=1e-12))),
        intermediate=module(dense=nn.Linear(h, inter)),
        output=module(dense=nn.Linear(inter, h), LayerNorm=nn.LayerNorm(h, eps=1e-12)))
    bert = module(embeddings=embeddings, encoder=module(layer=nn.ModuleList([layer])),
                  pooler=module(dense=nn.Linear(h, h)))
    model = module(bert=bert, classifier=nn.Linear(h, 2))
    return model.state_dict()


def make_legacy():
    torch.manual_seed(3)
    base = torch.arange(100.0)
    return {
        "view_a": base[10:20],  # two views of one 100-element storage
        "view_b": base[50:60],
        "float32": torch.randn(2, 3),
        "float64": torch.randn(3, dtype=torch.float64),
        "float16": torch.tensor([0.5, -1.0, 65504.0], dtype=torch.float16),
        "int64": torch.arange(-2, 3),
        "int32": torch.tensor([7, -8, 2**31 - 1], dtype=torch.int32),
        "uint8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "scalar": torch.tensor(3.5),
        "nested": {"list": [torch.ones(2), 7], "name": "legacy"},
    }


def make_legacy_p2():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    return {"epoch": 5, "arch": "mlp", "state_dict": model.state_dict(), "best_acc": 0.875}


def make_dtypes():
    torch.manual_seed(5)
    base2d = torch.randn(3, 4)
    big = torch.arange(50, dtype=torch.float32) * 0.5
    grid = torch.randn(4, 5)
    d = {
        "float64": torch.randn(2, 3, dtype=torch.float64),
        "float32": torch.randn(2, 3),
        "float16": torch.tensor([65504.0, -0.0, 6.103515625e-05, 1 / 3], dtype=torch.float16),
        "bfloat16": torch.tensor([1.0, -2.5, 3.140625, 1e30, -1e-30], dtype=torch.bfloat16),
        "int8": torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8),
        "int16": torch.tensor([-32768, -1, 0, 32767], dtype=torch.int16),
        "int32": torch.tensor([-(2**31), -1, 0, 2**31 - 1], dtype=torch.int32),
        "int64": torch.tensor([-(2**63), -1, 0, 2**53 + 1, 2**63 - 1], dtype=torch.int64),
        "uint8": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True, True]),
        "complex64": torch.tensor([1 + 2j, -3.5 + 0j, 0 - 1j], dtype=torch.complex64),
        "complex128": torch.tensor([[1 + 1j, 2 - 2j], [0j, -1.5 + 0.25j]], dtype=torch.complex128),
        "scalar0d": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0),
        "empty2x0": torch.zeros(2, 0),
        "base2d": base2d,
        "transposed": base2d.t(),  # shares base2d's storage
        "offset_slice": grid[1:, 2:],  # non-contiguous, storage offset 7
        "fortran": torch.arange(24).reshape(4, 3, 2).permute(2, 1, 0),
        "special": torch.tensor([1.0, float("nan"), float("inf"), float("-inf"), 0.0, -2.5]),
        "subrange": big[5:15].view(2, 5),  # a view on 10 of the storage's 50 elements
        "expanded": torch.tensor([1.0, 2.0, 3.0]).expand(2, 3),  # stride 0 on dim 0
    }
    d["alias"] = d["float32"]  # the same tensor object again: a ref
    return d


def make_large():
    """Large enough float32 tensors for the statistics' fast paths: a normal weight matrix
    with exact zeros, subnormals, NaN and infinities sprinkled in; a LayerNorm-like vector
    near 1.0 with a tiny spread; a tensor whose values sit exactly on histogram edges."""
    torch.manual_seed(12)
    w = torch.randn(300, 300) * 0.02
    flat = w.view(-1)
    flat[::997] = 0.0
    flat[5::1999] = -0.0
    flat[7::3001] = 1e-42  # subnormal
    flat[11] = float("nan")
    flat[13] = float("inf")
    flat[17] = float("-inf")
    ln = 1.0 + torch.randn(70000) * 1e-4
    edges = torch.arange(70000, dtype=torch.float32) % 65  # 0..64: min 0, max 64, bin width 1
    return {"weight": w, "ln": ln, "on_edges": edges, "wide": torch.randn(80000) * 1e30}


def make_quantized():
    torch.manual_seed(6)
    return {"q": torch.quantize_per_tensor(torch.randn(2, 3), 0.05, 3, torch.qint8)}


def make_net():
    torch.manual_seed(9)
    return Net()


def make_parameters():
    torch.manual_seed(7)
    return {"param": nn.Parameter(torch.randn(3, 3)),
            "frozen": nn.Parameter(torch.randn(2), requires_grad=False)}


def sklearn_data():
    rs = np.random.RandomState(0)
    X = rs.randn(30, 4)
    y = np.repeat([0, 1, 2], 10)
    X[y == 1] += 1.5
    X[y == 2] -= 1.5
    return X, y


def make_python_types():
    shared = [1, 2, 3]
    selfref = [1]
    selfref.append(selfref)
    return {
        "str": "hello",
        "unicode": "C'est l'été ! 優良",
        "escapes": "line1\nline2\\tab\t\"q\" \x00 \U0001f600",
        "empty_str": "",
        "bytes": b"\x00\x01abc\xff",
        "bytes256": bytes(range(256)),
        "empty_bytes": b"",
        "bytearray": bytearray(b"\x00xyz\xff"),
        "int_small": 7,
        "int_neg": -42,
        "int_zero": 0,
        "int_255": 255,
        "int_256": 256,
        "int_65535": 65535,
        "int_65536": 65536,
        "int_i32max": 2**31 - 1,
        "int_i32min": -(2**31),
        "int_2_31": 2**31,
        "int_2_63": 2**63,
        "int_big": 2**70,
        "int_neg_big": -(2**100),
        "float": 1.5,
        "float_neg_zero": -0.0,
        "float_pi": math.pi,
        "float_tiny": 5e-324,
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "complex": complex(1, -2),
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "a", None, [2, 3]],
        "empty_list": [],
        "tuple": (1, "a", (2, 3)),
        "tuple4": (1, 2, 3, 4),
        "empty_tuple": (),
        "nested": {
            1: "one",
            -5: "minus five",
            (1, 2): "tuple key",
            2.5: "float key",
            b"k": "bytes key",
            None: "none key",
            False: "bool key",
            "a/b": "slash",
            "m~n": "tilde",
            "": "empty key",
            "été": "unicode key",
            "deep": {"x": {"y": [10, {"z": "bottom"}]}},
        },
        "set": {3, 1, 2},
        "frozenset": frozenset({5, 4}),
        "empty_set": set(),
        "slice": slice(1, 10, 2),
        "range": range(0, 10, 3),
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
        "datetime_utc": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "date": datetime.date(2024, 1, 2),
        "time": datetime.time(12, 34, 56),
        "timedelta": datetime.timedelta(days=1, seconds=2, microseconds=3),
        "decimal": decimal.Decimal("3.14"),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "namespace": argparse.Namespace(lr=0.1, name="x"),
        "enum": Color.GREEN,
        "shared_a": shared,
        "shared_b": shared,
        "selfref": selfref,
    }


def make_numpy_arrays():
    rs = np.random.RandomState(8)
    wide = np.arange(18, dtype=np.int32).reshape(3, 6)
    return {
        "f32_c": rs.randn(3, 4).astype(np.float32),
        "f64_fortran": np.asfortranarray(rs.randn(3, 4)),
        "be_i4": np.array([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=">i4"),
        "be_f8": np.array([1.5, -2.25, np.nan, np.inf], dtype=">f8"),
        "bool": np.array([True, False, True]),
        "c64": np.array([1 + 2j, -0.5 - 0.25j, 3j], dtype=np.complex64),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u16": np.array([0, 1, 65535], dtype=np.uint16),
        "u64": np.array([0, 2**53 + 1, 2**64 - 1], dtype=np.uint64),
        "unicode": np.array(["a", "hé", "été!!", "優良"], dtype="<U5"),
        "bytes": np.array([b"ab", b"xyz", b""], dtype="S3"),
        "object": np.array([1, "two", [3, 4], None], dtype=object),
        "structured": np.array([(1, 2.5), (-3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "zero_d": np.array(2.5),
        "f32_scalar": np.float32(1.5),
        "i64_scalar": np.int64(-7),
        "bool_scalar": np.bool_(True),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty_2x0": np.zeros((2, 0)),
        "noncontig": wide[:, ::2],  # numpy pickles a C-ordered copy
    }


# ----------------------------------------------------------------------------------------
# Writing and checking.


def save_torch_legacy(obj, path, protocol):
    """torch.save in the legacy format, with storage keys renumbered so the file is stable.

    Legacy torch.save names each storage str(storage._cdata), a heap address that changes on
    every run, and writes the storages in the sorted order of those names. We rename the
    storage first used in the object pickle "000000001", the next
    "000000002" and so on, rewrite the keys pickle the way torch writes it (pickle.dump of the
    sorted keys with the same protocol) and put the storages in that order: exactly the file
    torch writes when the addresses happen to increase in order of first use. torch.load must
    then read back equal values, strides and sharing.
    """
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    data = buf.getvalue()
    f = io.BytesIO(data)
    for _ in range(3):
        pickle_end(f)
    main_start = f.tell()
    main_end = pickle_end(f)
    keys_end = pickle_end(f)
    keys_pickle = data[main_end:keys_end]
    keys = Replay(io.BytesIO(keys_pickle)).load()
    assert keys_pickle == pickle.dumps(keys, protocol=protocol), "keys pickle is not pickle.dump(keys)"

    r = Replay(io.BytesIO(data[main_start:main_end]))
    pids = []
    r.persistent_load = lambda pid: pids.append(pid) or PID(pid)
    r.load()
    dtype_of = {pid[2]: TORCH_STORAGE_DTYPES[pid[1].full] for pid in pids}
    first_use = list(dict.fromkeys(pid[2] for pid in pids))
    assert sorted(first_use) == keys
    rename = {old: str(i + 1).rjust(9, "0") for i, old in enumerate(first_use)}
    assert not set(rename.values()) & set(keys)

    chunks, pos = {}, keys_end
    for key in keys:
        (numel,) = struct.unpack("<q", data[pos:pos + 8])
        end = pos + 8 + numel * DTYPE_SIZES[dtype_of[key]]
        chunks[rename[key]] = data[pos:end]
        pos = end
    assert pos == len(data)

    head = data[:main_end]  # protocols 1 and 2 have no frames: strings can change length
    for old, new in rename.items():
        old_op = b"X" + struct.pack("<I", len(old)) + old.encode()
        assert head.count(old_op) >= 1, old
        head = head.replace(old_op, b"X" + struct.pack("<I", len(new)) + new.encode())
    new_keys = sorted(rename.values())
    out = head + pickle.dumps(new_keys, protocol=protocol) + b"".join(chunks[k] for k in new_keys)
    with open(path, "wb") as fh:
        fh.write(out)
    back = torch.load(path)
    assert same_torch(obj, back), path


def same_torch(a, b):
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.stride() == b.stride() and a.storage_offset() == b.storage_offset()
                and torch.equal(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_torch(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_torch(x, y) for x, y in zip(a, b))
    return a == b


def zip_records(path):
    """Records of a torch zip file and where each storage's bytes start in the file."""
    out = {}
    with open(path, "rb") as f:
        z = zipfile.ZipFile(f)
        for info in z.infolist():
            f.seek(info.header_offset)
            hdr = f.read(30)
            name_len, extra_len = struct.unpack("<HH", hdr[26:30])
            out[info.filename] = {"offset": info.header_offset + 30 + name_len + extra_len,
                                  "size": info.file_size, "compressed": info.compress_type != 0}
    return out


def legacy_storages(path, pickles, dtype_of_key):
    """Where each storage's bytes start in a legacy file: after the keys pickle, each storage is
    an int64 little-endian element count followed by the elements, in the keys pickle's order."""
    with open(path, "rb") as f:
        data = f.read()
    keys = Replay(io.BytesIO(dict(pickles)["storage_keys"])).load()
    pos = sum(len(p) for _, p in pickles)
    out = {}
    for key in keys:
        (numel,) = struct.unpack("<q", data[pos:pos + 8])
        size = numel * DTYPE_SIZES[dtype_of_key[key]]
        out[key] = {"offset": pos + 8, "numel": numel, "size": size}
        pos += 8 + size
    assert pos == len(data), (path, pos, len(data))
    return keys, out


DTYPE_SIZES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
               "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16,
               "qint8": 1, "quint8": 1, "qint32": 4}


# ----------------------------------------------------------------------------------------
# Formats without a pickle at the top: .npy, .npz and safetensors. Their facts come from reading
# each file back by hand from its format description and from numpy's own reader; the two must
# agree.


def jsonable(v):
    """v as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(v, ensure_ascii=False))


def dedup(names):
    return list(dict.fromkeys(names))


def plain_entry(fmt, root_kind, nodes, tensors, path, scalars=None, types=None, notes=()):
    """An expected.json entry with the same keys as the pickle formats' (no pickle: no globals,
    no findings, no refs)."""
    out = {"format": fmt, "root_kind": root_kind, "globals": [], "danger": [], "findings": [],
           "tensors": tensors, "shared_storage": [], "refs": {}, "scalars": scalars or {},
           "types": types or {}, "nodes": nodes}
    if notes:
        out["notes"] = list(notes)
    out["file_size"] = os.path.getsize(path)
    return out


NPY_MAGIC = b"\x93NUMPY"


def read_npy_header(f):
    """The header of the .npy at f's position, read by hand from the format description
    (numpy.lib.format): magic, version byte pair, header length as little-endian u2 (1.0) or
    u4 (2.0, 3.0), then a Python dict literal (latin-1; UTF-8 from 3.0) padded with spaces and
    ended by a newline. data_offset is where the array bytes (or the pickle) start."""
    start = f.tell()
    assert f.read(6) == NPY_MAGIC
    major, minor = f.read(2)
    if major == 1:
        (hlen,) = struct.unpack("<H", f.read(2))
    else:
        assert major in (2, 3), major
        (hlen,) = struct.unpack("<I", f.read(4))
    text = f.read(hlen).decode("utf-8" if major >= 3 else "latin-1")
    assert text.endswith("\n"), text
    d = ast.literal_eval(text)
    assert sorted(d) == ["descr", "fortran_order", "shape"], d
    return {"npy_version": [major, minor], "header_len": hlen, "data_offset": f.tell() - start,
            "descr": d["descr"], "fortran_order": d["fortran_order"], "shape": list(d["shape"])}


def check_npy_header(head, a, facts):
    assert jsonable(head["descr"]) == jsonable(facts["descr"]), (head["descr"], facts["descr"])
    assert jsonable(head["descr"]) == jsonable(np.lib.format.dtype_to_descr(a.dtype))
    assert head["shape"] == list(a.shape)
    if a.ndim > 1 and a.size > 1:  # else C and Fortran order are the same layout
        assert head["fortran_order"] == facts["fortran_order"], (head, facts["fortran_order"])


def npy_writer(version=None, allow_pickle=False):
    """np.save, or numpy.lib.format.write_array with a forced format version."""
    def write(a, path):
        with open(path, "wb") as f:
            if version is None:
                np.save(f, a, allow_pickle=allow_pickle)
            else:
                np.lib.format.write_array(f, a, version=version, allow_pickle=allow_pickle)
    return write


def describe_npy(fx, path):
    fx.writer(fx.obj, path)
    with open(path, "rb") as f:
        data = f.read()
    head = read_npy_header(io.BytesIO(data))
    off = head["data_offset"]
    f = io.BytesIO(data)  # numpy's own header reader must agree
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    assert list(version) == head["npy_version"] and f.tell() == off
    assert list(shape) == head["shape"] and fortran == head["fortran_order"]

    a = np.load(path, allow_pickle=dtype.hasobject)  # our own file; object arrays unpickle
    assert a.dtype == dtype and list(a.shape) == head["shape"]
    live, before = Walk(3), Walk(3)
    live.walk(a)
    before.walk(fx.obj)
    assert before.nodes == live.nodes, fx.name
    facts = numpy_facts("", a)
    check_npy_header(head, a, facts)
    # the header's own descr and fortran_order (equal to what the loaded array says, checked)
    facts.update(descr=head["descr"], fortran_order=head["fortran_order"],
                 npy_version=head["npy_version"], header_len=head["header_len"], data_offset=off)
    entry = plain_entry("npy", live.nodes[0][1], live.nodes, [facts], path, live.scalars,
                        live.types, fx.notes)
    if dtype.hasobject:
        # the array is a pickle after the header (numpy writes protocol 3): replay it too
        sf = io.BytesIO(data)
        sf.seek(off)
        r = Replay(sf)
        root = r.load()
        assert sf.tell() == len(data), fx.name
        tree = ReplayTree()
        tree.walk(root)
        assert tree.nodes == live.nodes and tree.refs == live.refs, (tree.nodes, live.nodes)
        scanned = dedup(scan_globals(data[off:]))
        assert scanned == dedup(r.globals_seen), (scanned, r.globals_seen)
        entry.update(pickle_protocol=data[off + 1], globals=scanned,
                     danger=[g for g in scanned if is_dangerous(g)], refs=live.refs)
        assert not entry["danger"]
    else:
        mm = np.load(path, mmap_mode="r")
        assert mm.offset == off, (mm.offset, off)
        del mm
        assert data[off:] == a.tobytes(order="F" if head["fortran_order"] else "C"), fx.name
    return entry


DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest DOS date


def zero_zip_times(path):
    """np.savez stamps each member with the current local time; set every DOS time and date
    (local headers and central directory) to 1980-01-01 00:00:00 so the file is the same on
    every run. No other byte changes."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        infos, pos = z.infolist(), z.start_dir
    for info in infos:
        h = info.header_offset
        assert data[h:h + 4] == b"PK\x03\x04" and data[pos:pos + 4] == b"PK\x01\x02"
        data[h + 10:h + 14] = struct.pack("<HH", 0, DOS_DATE_1980)
        data[pos + 12:pos + 16] = struct.pack("<HH", 0, DOS_DATE_1980)
        n, e, c = struct.unpack("<HHH", data[pos + 28:pos + 34])
        pos += 46 + n + e + c
    with open(path, "wb") as f:
        f.write(data)


def npz_writer(save):
    def write(arrays, path):
        save(path, **arrays)
        zero_zip_times(path)
    return write


def describe_npz(fx, path):
    fx.writer(fx.obj, path)
    with open(path, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        members = {i.filename: z.read(i.filename) for i in infos}
    with np.load(path) as npz:
        keys = list(npz.files)
        arrays = {k: npz[k] for k in keys}
    assert keys == [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
    live, before = Walk(3), Walk(3)
    live.walk(arrays)
    before.walk(fx.obj)
    assert before.nodes == live.nodes, fx.name
    tensors = []
    for info, k in zip(infos, keys):
        a = arrays[k]
        facts = numpy_facts(join("", k), a)
        h = info.header_offset
        assert data[h:h + 4] == b"PK\x03\x04"
        name_len, extra_len = struct.unpack("<HH", data[h + 26:h + 30])
        member_offset = h + 30 + name_len + extra_len
        member = members[info.filename]
        head = read_npy_header(io.BytesIO(member))
        check_npy_header(head, a, facts)
        compressed = info.compress_type != zipfile.ZIP_STORED
        stored = data[member_offset:member_offset + info.compress_size]
        if compressed:
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert zlib.decompress(stored, -15) == member
        else:
            assert stored == member
        facts.update(member=info.filename, compressed=compressed,
                     compression="deflate" if compressed else "store", member_offset=member_offset,
                     member_size=info.file_size, member_compressed_size=info.compress_size,
                     npy_version=head["npy_version"], header_len=head["header_len"],
                     npy_data_offset=head["data_offset"])
        order = "F" if head["fortran_order"] else "C"
        assert member[head["data_offset"]:] == a.tobytes(order=order)
        if not compressed:
            facts["data_offset"] = member_offset + head["data_offset"]
            assert data[facts["data_offset"]:facts["data_offset"] + a.nbytes] == a.tobytes(order=order)
        tensors.append(facts)
    entry = plain_entry("npz", "dict", live.nodes, tensors, path, live.scalars, live.types,
                        fx.notes)
    entry["archive"] = {"records": [i.filename for i in infos]}
    return entry


# safetensors (https://github.com/huggingface/safetensors, README "Format"): an 8-byte
# little-endian u64 N, N bytes of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin,
# end]}, ..., "__metadata__": {str: str}} (offsets relative to the byte buffer after the header),
# then that buffer: every tensor little-endian, C order, back to back with no gaps.

# dtype -> (name in expected.json, element size, numpy dtype of the raw little-endian elements)
ST_DTYPES = {
    "F64": ("float64", 8, "<f8"), "F32": ("float32", 4, "<f4"), "F16": ("float16", 2, "<f2"),
    "BF16": ("bfloat16", 2, "<u2"), "I64": ("int64", 8, "<i8"), "I32": ("int32", 4, "<i4"),
    "I16": ("int16", 2, "<i2"), "I8": ("int8", 1, "i1"), "U8": ("uint8", 1, "u1"),
    "BOOL": ("bool", 1, "?"), "F8_E4M3": ("float8_e4m3fn", 1, "u1"),
    "F8_E5M2": ("float8_e5m2", 1, "u1"),
}
# The reference writer's Dtype enum order (safetensors/src/tensor.rs, "increasing alignment"):
# it lays tensors out by descending dtype, then by name.
ST_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32",
            "F32", "F64", "I64", "U64"]


def write_safetensors(tensors, path, metadata=None):
    """A minimal safetensors writer following the specification and the reference writer
    (safetensors/src/tensor.rs prepare/serialize): tensors sorted by descending dtype then name,
    laid out back to back from offset 0; the header is compact JSON with "__metadata__" first,
    then the tensors in layout order, padded with spaces to a multiple of 8 bytes.
    tensors: {name: (dtype, shape, raw little-endian C-order bytes)}."""
    items = sorted(tensors.items(), key=lambda kv: (-ST_ORDER.index(kv[1][0]), kv[0].encode()))
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    for name, (dtype, shape, raw) in items:
        assert len(raw) == math.prod(shape) * ST_DTYPES[dtype][1], name
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    hb = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, (_, _, raw) in items:
            f.write(raw)


def fp8_value(code, dtype):
    """The value of one 8-bit float code (OCP 8-bit floating point spec; arXiv 2209.05433).
    F8_E4M3 is E4M3FN: bias 7, no infinities, S.1111.111 is NaN. F8_E5M2: bias 15, IEEE-like
    (exponent 31 is inf or NaN)."""
    sign = -1.0 if code & 0x80 else 1.0
    if dtype == "F8_E4M3":
        e, m = (code >> 3) & 0xF, code & 7
        if e == 15 and m == 7:
            return math.nan
        return sign * (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    e, m = (code >> 2) & 0x1F, code & 3
    if e == 31:
        return sign * math.inf if m == 0 else math.nan
    return sign * (m / 4 * 2.0 ** -14 if e == 0 else (1 + m / 4) * 2.0 ** (e - 15))


FP8_TABLES = {d: np.array([fp8_value(c, d) for c in range(256)], dtype=np.float32)
              for d in ("F8_E4M3", "F8_E5M2")}


def check_fp8_tables():
    # E5M2 is the top byte of an IEEE float16: every code must decode as numpy's float16 does.
    f16 = (np.arange(256, dtype=np.uint16) << 8).view(np.float16).astype(np.float32)
    t = FP8_TABLES["F8_E5M2"]
    assert np.array_equal(np.isnan(t), np.isnan(f16)) and np.array_equal(t[~np.isnan(t)], f16[~np.isnan(f16)])
    # E4M3FN reference points from the OCP spec
    t = FP8_TABLES["F8_E4M3"]
    known = {0x00: 0.0, 0x01: 2.0 ** -9, 0x07: 7 * 2.0 ** -9, 0x08: 2.0 ** -6, 0x38: 1.0, 0x30: 0.5,
             0x3C: 1.5, 0x40: 2.0, 0x7E: 448.0, 0xFE: -448.0, 0xC0: -2.0, 0x80: -0.0}
    for code, v in known.items():
        assert t[code] == v and math.copysign(1, t[code]) == math.copysign(1, v), (hex(code), t[code], v)
    assert np.isnan(t[0x7F]) and np.isnan(t[0xFF]) and np.isnan(t).sum() == 2


def fp8_encode(values, dtype):
    """Codes of exactly representable values (by the table; -0.0 and 0.0 kept apart)."""
    table = FP8_TABLES[dtype]
    out = []
    for v in values:
        codes = [c for c in range(256) if table[c] == v and math.copysign(1, table[c]) == math.copysign(1, v)]
        assert len(codes) == 1, (dtype, v, codes)
        out.append(codes[0])
    return np.array(out, dtype=np.uint8)


def bf16_encode(values):
    """bfloat16 bits of float32 values: the top 16 bits with round-to-nearest-even (no NaNs)."""
    b = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    assert not np.isnan(np.asarray(values, dtype=np.float32)).any()
    out = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    # torch's own float32 -> bfloat16 conversion must give the same bits
    t = torch.from_numpy(np.asarray(values, dtype=np.float32).copy()).to(torch.bfloat16)
    assert np.array_equal(t.view(torch.int16).numpy().view(np.uint16), out)
    return out


def st_tensor(dtype, values, shape=None):
    """(dtype, shape, raw bytes) for write_safetensors, from float/int/bool values."""
    a = np.asarray(values)
    shape = list(a.shape) if shape is None else list(shape)
    if dtype == "BF16":
        raw = bf16_encode(a.reshape(-1)).astype("<u2").tobytes()
    elif dtype.startswith("F8_"):
        raw = fp8_encode(a.reshape(-1).tolist(), dtype).tobytes()
    else:
        raw = np.ascontiguousarray(a, dtype=ST_DTYPES[dtype][2]).tobytes()
    return (dtype, shape, raw)


def read_safetensors(path):
    """Reads a safetensors file back with json and numpy only: (header size N, header pairs in
    file order, metadata, {name: dict(dtype, shape, begin, end, raw, values)})."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    text = data[8:8 + n].decode("utf-8")
    assert text.startswith("{") and text.rstrip(" ").endswith("}"), text[-16:]
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    names = [k for k, _ in pairs]
    assert len(set(names)) == len(names), "duplicate keys"
    buf = data[8 + n:]
    metadata, out, ends = None, {}, []
    for name, info in pairs:
        if name == "__metadata__":
            metadata = dict(info)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
            continue
        info = dict(info)
        assert sorted(info) == ["data_offsets", "dtype", "shape"], info
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        _, size, raw_dtype = ST_DTYPES[dtype]
        numel = math.prod(shape)
        assert end - begin == numel * size and 0 <= begin <= end <= len(buf), (name, info)
        raw = buf[begin:end]
        elems = np.frombuffer(raw, dtype=raw_dtype)
        if dtype == "BF16":
            values = (elems.astype(np.uint32) << 16).view(np.float32)
        elif dtype.startswith("F8_"):
            values = FP8_TABLES[dtype][elems]
        else:
            values = elems
        out[name] = {"dtype": dtype, "shape": shape, "begin": begin, "end": end, "raw": raw,
                     "bits": elems, "values": values.reshape(shape)}
        ends.append((begin, end))
    # the buffer is covered exactly, without gaps or overlaps
    pos = 0
    for begin, end in sorted(ends):
        assert begin == pos, (begin, pos)
        pos = end
    assert pos == len(buf), (pos, len(buf))
    return n, pairs, metadata, out


def safetensors_writer(metadata=None):
    return lambda tensors, path: write_safetensors(tensors, path, metadata)


def describe_safetensors(fx, path):
    fx.writer(fx.obj, path)
    n, pairs, metadata, read = read_safetensors(path)
    # what was written must be what was read
    assert sorted(read) == sorted(fx.obj)
    for name, (dtype, shape, raw) in fx.obj.items():
        got = read[name]
        assert got["dtype"] == dtype and got["shape"] == list(shape) and got["raw"] == raw, name
    nodes, scalars, tensors = [["", "dict"]], {}, []
    for name, _ in pairs:
        p = join("", name)
        if name == "__metadata__":
            nodes.append([p, "dict"])
            for k, v in metadata.items():
                nodes.append([join(p, k), "str"])
                scalars[join(p, k)] = v
            continue
        nodes.append([p, "tensor"])
        t = read[name]
        dname = ST_DTYPES[t["dtype"]][0]
        flat = np.asarray(t["values"]).reshape(-1)
        single = dname in ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")
        facts = {"path": p, "kind": "tensor", "dtype": dname, "st_dtype": t["dtype"],
                 "shape": t["shape"], "strides": contiguous_strides(t["shape"]), "storage_offset": 0,
                 "numel": int(flat.size), "data_offsets": [t["begin"], t["end"]],
                 "file_offset": 8 + n + t["begin"], "nbytes": t["end"] - t["begin"],
                 "first": first_values(flat, single), "stats": stats_of(flat),
                 "sha256_le": hashlib.sha256(t["raw"]).hexdigest()}
        if t["dtype"] == "BF16" or t["dtype"].startswith("F8_"):
            facts["first_bits"] = [int(b) for b in t["bits"][:8]]
            # as for torch's bfloat16 elsewhere: what a download holds is float32 values
            # (sha256_bits is the stored codes)
            facts["sha256_bits"] = facts["sha256_le"]
            facts["sha256_le"] = le_digest(np.asarray(t["values"], dtype=np.float32))
        else:  # numpy's own dtype: the digest is le_digest's
            assert facts["sha256_le"] == le_digest(t["values"])
        tensors.append(facts)
    entry = plain_entry("safetensors", "dict", nodes, tensors, path, scalars, {}, fx.notes)
    entry.update(header_size=n, data_start=8 + n, metadata=metadata)
    return entry


def make_st_dtypes():
    """One tensor per safetensors dtype; BF16 and F8 values are encoded by bf16_encode and
    fp8_encode (exactly representable F8 values: small integers, halves, extremes)."""
    check_fp8_tables()
    rs = np.random.RandomState(14)
    return {
        "f64": st_tensor("F64", rs.randn(2, 3)),
        "f32": st_tensor("F32", rs.randn(3, 4).astype(np.float32)),
        "f16": st_tensor("F16", np.array([65504.0, -0.0, 6.1035156e-05, 5.9604645e-08, 1 / 3,
                                          np.inf, np.nan, -1.5], dtype=np.float16)),
        # 1.00390625 and 1.01171875 are float32 ties: to even gives 1.0 and 1.015625
        "bf16": st_tensor("BF16", np.array([[1 / 3, math.pi, -2.5, 1e30],
                                            [-1e-30, 1.00390625, 1.01171875, 0.0]], dtype=np.float32)),
        "i64": st_tensor("I64", np.array([-(2**63), -1, 0, 2**53 + 1, 2**63 - 1], dtype=np.int64)),
        "i32": st_tensor("I32", np.array([[-(2**31), -1], [0, 2**31 - 1]], dtype=np.int32)),
        "i16": st_tensor("I16", np.array([-32768, -1, 0, 32767], dtype=np.int16)),
        "i8": st_tensor("I8", np.array([-128, -1, 0, 1, 127], dtype=np.int8)),
        "u8": st_tensor("U8", np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)),
        "bool": st_tensor("BOOL", np.array([[True, False, True], [False, False, True]])),
        "f8_e4m3": st_tensor("F8_E4M3", [0.0, 1.0, -2.0, 0.5, 1.5, 448.0, -2.0 ** -9, 3.5]),
        "f8_e5m2": st_tensor("F8_E5M2", [[0.0, 1.0, -2.0, 0.5], [1.5, 57344.0, 2.0 ** -16, math.inf]]),
        "scalar": st_tensor("F32", np.array(2.5, dtype=np.float32)),
        "empty": st_tensor("F32", np.zeros((0, 4), dtype=np.float32)),
    }


def make_st_gpt_tiny():
    """Float32 tensors named like a GPT-2 state dict (Conv1D weights are (in, out))."""
    rs = np.random.RandomState(15)
    d, vocab, ctx = 8, 16, 8

    def w(*shape):
        return st_tensor("F32", (rs.randn(*shape) * 0.02).astype(np.float32))

    return {
        "wte.weight": w(vocab, d),
        "wpe.weight": w(ctx, d),
        "h.0.ln_1.weight": st_tensor("F32", np.ones(d, np.float32)),
        "h.0.ln_1.bias": st_tensor("F32", np.zeros(d, np.float32)),
        "h.0.attn.c_attn.weight": w(d, 3 * d),
        "h.0.attn.c_attn.bias": w(3 * d),
        "h.0.attn.c_proj.weight": w(d, d),
        "h.0.attn.c_proj.bias": w(d),
        "h.0.mlp.c_fc.weight": w(d, 4 * d),
        "h.0.mlp.c_proj.weight": w(4 * d, d),
        "ln_f.weight": st_tensor("F32", np.ones(d, np.float32)),
        "ln_f.bias": st_tensor("F32", np.zeros(d, np.float32)),
    }


def make_joblib_arrays():
    rs = np.random.RandomState(16)
    return {
        "f32_c": rs.randn(3, 4).astype(np.float32),
        "f64_fortran": np.asfortranarray(rs.randn(4, 3)),
        "i64_0d": np.array(-7, dtype=np.int64),
        "empty_f32": np.zeros((0, 5), dtype=np.float32),
        "bool": np.array([True, False, True, True]),
        "unicode": np.array(["a", "hé", "été!!", "優良"], dtype="<U5"),
        "bytes": np.array([b"ab", b"xyz", b""], dtype="S3"),
        "object": np.array([1, "abc", {"a": 1}, None], dtype=object),
        "matrix": np.matrix([[1.0, 2.0], [3.0, 4.0]]),
        "be_i4": np.array([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=">i4"),
        "structured": np.array([(1, 2.5), (-3, 4.0), (7, -0.5)], dtype=[("x", "<i4"), ("y", "<f8")]),
        "list": [1, 2.5, "three", None],
        "name": "ckptview joblib fixture",
    }


def make_npz():
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
            "b": np.arange(5, dtype=np.int64),
            "c": np.array(["ab", "xyz", ""], dtype="<U3")}


def npy_fixtures():
    rs = np.random.RandomState(17)
    v2 = np.array([(1, 0.5, True, 7, -2.25), (2, -1.5, False, 65535, 1e300), (3, 0.0, True, 0, -0.0)],
                  dtype=[("id", "<i8"), ("score", "<f4"), ("flag", "?"), ("count", "<u2"),
                         ("weight", "<f8")])
    node = np.dtype([("left_child", "<i8"), ("threshold", "<f8"), ("flag", "u1")], align=False)
    specs = [
        ("npy_f32.npy", rs.randn(3, 4).astype(np.float32), None, []),
        ("npy_fortran.npy", np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 8),
         None, ["fortran_order True: the bytes are in column-major order, strides [1, 2, 6]."]),
        ("npy_bigendian.npy", np.array([1.5, -2.25, np.nan, np.inf, 1e-310], dtype=">f8"), None,
         ["descr >f8: numpy.load keeps big-endian; the file holds big-endian bytes."]),
        ("npy_v2.npy", v2, (2, 0), ["Format version 2.0 forced: the header length is a u4."]),
        ("npy_v3.npy", np.array([(1, 0.5), (-2, 2.5)], dtype=[("π", "<i4"), ("ä", "<f8")]), (3, 0),
         ["Format version 3.0: UTF-8 header (non-ASCII field names)."]),
        ("npy_structured.npy", np.array([(1, 0.5, 1), (-1, -2.0, 0), (3, 1e-3, 255), (-1, 0.0, 2)],
                                        dtype=node), None,
         ["Packed (align=False) struct: itemsize 17, offsets 0, 8, 16."]),
        ("npy_str.npy", np.array(["a", "hé", "été!!", "優良"], dtype="<U5"), None, []),
        ("npy_bytes.npy", np.array([b"ab", b"wxyz", b"", b"a\xffb"], dtype="|S4"), None,
         ["first: bytes as latin-1 strings."]),
        ("npy_bool.npy", np.array([[True, False, True], [False, False, True]]), None, []),
        ("npy_f16.npy", np.array([65504.0, -0.0, 6.1035156e-05, 5.9604645e-08, 1 / 3, np.nan, np.inf,
                                  -1.5], dtype=np.float16), None, []),
        ("npy_c64.npy", np.array([[1 + 2j, -0.5 - 0.25j], [3j, np.inf]], dtype=np.complex64), None,
         []),
        ("npy_scalar.npy", np.array(42, dtype=np.int32), None, ["0-d: shape []."]),
        ("npy_empty.npy", np.zeros((0, 3), dtype=np.float32), None, []),
    ]
    out = [Fixture(name, a, npy_writer(version), None, fmt="npy", notes=notes)
           for name, a, version, notes in specs]
    out.append(Fixture("npy_object.npy", np.array([1, "abc", {"a": 1}], dtype=object),
                       npy_writer(allow_pickle=True), None, fmt="npy", notes=[
                           "Object array: after the header, a pickle (protocol 3) of the whole "
                           "array (data_offset is where it starts); its items are nodes /0, /1, /2.",
                       ]))
    return out


def joblib_writer(compress=0, protocol=None):
    """joblib.dump(obj, filename, compress=..., protocol=...): the filename is passed so joblib
    could pick the codec by extension, and compress is passed explicitly as (method, level)."""
    return lambda obj, path: joblib.dump(obj, path, compress=compress, protocol=protocol)


class Fixture:
    def __init__(self, name, obj, writer, proto, load=None, notes=(), fmt=None):
        self.name, self.obj, self.writer, self.proto = name, obj, writer, proto
        self.load, self.notes, self.fmt = load, list(notes), fmt


def describe(fx):
    """Writes one fixture and returns its expected facts."""
    path = os.path.join(HERE, fx.name)
    plain = {"npy": describe_npy, "npz": describe_npz, "safetensors": describe_safetensors}
    if fx.fmt in plain:
        return plain[fx.fmt](fx, path)
    fx.writer(fx.obj, path)
    fmt, pickles = read_pickles(path)
    if fx.fmt:
        fmt = fx.fmt
    main = pickles[0][1] if fmt != "torch-legacy" else dict(pickles)["main"]

    # Globals by opcode scan (all pickles of the file).
    scanned = []
    for _, data in pickles:
        if fmt == "joblib":
            break
        for g in scan_globals(data):
            if g not in scanned:
                scanned.append(g)

    # Walk 1: live objects. Benign fixtures are walked as the library loads them back (so the
    # facts are what the file holds); malicious ones as they were before pickling.
    live_obj = fx.load(path) if fx.load else fx.obj
    live = Walk(fx.proto)
    live.walk(live_obj)
    if fx.load:
        before = Walk(fx.proto)
        before.walk(fx.obj)
        if before.nodes != live.nodes:
            raise AssertionError(f"{fx.name}: tree changed across save/load")

    # Walk 2: replay the opcodes (benign fixtures only; the malicious ones are never loaded,
    # not even by this replay).
    replay = None
    if fmt == "joblib":
        codec, stream = joblib_stream(path)
        assert stream[0] == pickle.PROTO[0] and stream[1] == fx.proto, (fx.name, stream[:2])
    if fx.load:
        if fmt == "joblib":
            # the decompressed stream: offsets below are offsets in it
            sf = io.BytesIO(stream)
            r = Replay(sf, joblib_file=True)
        else:
            r = Replay(io.BytesIO(main))
        root = r.load()
        if fmt == "joblib":
            assert sf.tell() == len(stream), (fx.name, sf.tell(), len(stream))
        replay = ReplayTree()
        replay.walk(root)
        if fmt == "joblib":
            scanned = list(dict.fromkeys(r.globals_seen))
        if replay.nodes != live.nodes:
            diff = [(a, b) for a, b in zip(replay.nodes, live.nodes) if a != b][:5]
            raise AssertionError(f"{fx.name}: replayed paths differ from walked paths: {diff} "
                                 f"({len(replay.nodes)} vs {len(live.nodes)} nodes)")
        if replay.refs != live.refs:
            raise AssertionError(f"{fx.name}: refs differ {replay.refs} {live.refs}")
        seen_globals = []
        for g in r.globals_seen:
            if g not in seen_globals:
                seen_globals.append(g)
        if fmt != "torch-legacy" and seen_globals != scanned:
            raise AssertionError(f"{fx.name}: scanned globals {scanned} != replayed {seen_globals}")

    # Storages: zip keys are numbered in order of first use; check against the replay.
    storage_of = {}
    if fmt in ("torch-zip", "torch-legacy"):
        if replay:
            for p, info in replay.tensors.items():
                storage_of[p] = info
        else:  # malicious_torch.pt: derive keys the way torch.save numbers them
            ids = {}
            for p, t in live.tensors:
                k = ids.setdefault(t.storage()._storage._cdata, str(len(ids)))
                storage_of[p] = {"key": k, "storage_class": type(t.storage()).__name__,
                                 "location": "cpu", "storage_numel": t.storage().size()}
        if fmt == "torch-zip":
            records = zip_records(path)
            prefix = next(iter(records)).split("/")[0]
        else:
            dtype_of_key = {i["key"]: TORCH_STORAGE_DTYPES[i["storage_class"]] for i in storage_of.values()}
            legacy_keys, legacy_data = legacy_storages(path, pickles, dtype_of_key)

    if fmt in ("torch-zip", "torch-legacy"):
        # The file's storage keys must group tensors exactly as the loaded tensors share memory.
        by_key, by_mem = {}, {}
        for p, t in live.tensors:
            if t.is_quantized:
                continue
            by_key.setdefault(storage_of[p]["key"], []).append(p)
            by_mem.setdefault(t.storage()._storage._cdata, []).append(p)
        assert sorted(by_key.values()) == sorted(by_mem.values()), (fx.name, by_key, by_mem)

    tensors, groups = [], collections.OrderedDict()
    for p, t in live.tensors:
        if isinstance(t, torch.Tensor):
            facts = torch_facts(p, t)
            if fmt in ("torch-zip", "torch-legacy"):
                si = storage_of[p]
                if replay:
                    for k in ("shape", "strides", "storage_offset", "requires_grad"):
                        assert si[k] == facts[k], (fx.name, p, k, si[k], facts[k])
                    sdt = TORCH_STORAGE_DTYPES[si["storage_class"]]
                    assert sdt == facts["dtype"], (fx.name, p, sdt, facts["dtype"])
                st = {"key": si["key"], "dtype": facts["dtype"], "numel": si["storage_numel"],
                      "location": si["location"]}
                if fmt == "torch-zip":
                    rec = records[f"{prefix}/data/{si['key']}"]
                    assert not rec["compressed"]
                    st.update(record=f"{prefix}/data/{si['key']}", file_offset=rec["offset"],
                              nbytes=rec["size"])
                else:
                    ld = legacy_data[si["key"]]
                    assert ld["numel"] == si["storage_numel"]
                    st.update(file_offset=ld["offset"], nbytes=ld["size"])
                assert st["nbytes"] == st["numel"] * DTYPE_SIZES[facts["dtype"]], (fx.name, p)
                facts["storage"] = st
                groups.setdefault(si["key"], []).append(p)
        else:
            ri = replay.tensors[p] if replay else None
            facts = numpy_facts(p, t, ri["dtype"] if ri else None)
            if ri:
                assert ri["shape"] == facts["shape"], (fx.name, p)
                assert ri["dtype"] == t.dtype or ri["dtype"] == t.dtype.newbyteorder(), (fx.name, p)
                assert ri["fortran_order"] == facts["fortran_order"], (fx.name, p)
                if "joblib_offset" in ri:
                    facts["joblib_data_offset"] = off = ri["joblib_offset"]
                    # the stream holds the array's bytes there, in the file's byte order and order
                    want = np.asarray(t).astype(ri["dtype"]).tobytes(order="F" if ri["fortran_order"] else "C")
                    assert stream[off:off + len(want)] == want, (fx.name, p)
                if "joblib_pickle" in ri:
                    facts["joblib_pickle_offset"], facts["joblib_pickle_end"] = start, end = ri["joblib_pickle"]
                    assert stream[start:start + 2] == b"\x80\x02" and stream[end - 1:end] == pickle.STOP
            if fmt == "joblib":
                # joblib.load byte-swaps to native order: what the file holds and what came back
                facts["file_byteorder"] = facts["byteorder"]
                facts["loaded_byteorder"] = byteorder_name(t.dtype)
                facts["loaded_descr"] = t.dtype.descr if t.dtype.fields else t.dtype.str
        tensors.append(facts)

    # Findings: object nodes whose callable or class would run code.
    findings = []
    calls = replay.calls if replay else [(p, g, a) for p, g, a in live.calls]
    for p, g, args in calls:
        if g and is_dangerous(g):
            findings.append({"global": g, "path": p, "args": [jarg(a) for a in args]})
    danger = [g for g in scanned if is_dangerous(g)]
    assert sorted({f["global"] for f in findings}) == sorted(danger), (fx.name, findings, danger)

    out = {
        "format": fmt,
        "pickle_protocol": fx.proto,
        "root_kind": live.nodes[0][1],
        "globals": scanned,
        "danger": danger,
        "findings": findings,
        "tensors": tensors,
        "shared_storage": [ps for ps in groups.values() if len(ps) > 1],
        "refs": live.refs,
        "scalars": live.scalars,
        "types": live.types,
        "nodes": live.nodes,
    }
    if live.dict_state:
        out["dict_state"] = live.dict_state
    if fmt == "torch-zip":
        out["archive"] = {"prefix": prefix, "records": list(records)}
    if fmt == "torch-legacy":
        out["legacy_storage_keys"] = legacy_keys
    if fmt == "joblib":
        out["compression"] = codec
        if codec:
            out["decompressed_size"] = len(stream)
    if fx.notes:
        out["notes"] = fx.notes
    if fmt in ("torch-zip", "torch-legacy") and fx.load:
        # what torch 1.13's own weights_only unpickler makes of the (benign) file: torch 2.6's
        # allowlist is a superset, so a file 1.13 loads, 2.6 loads too
        try:
            torch.load(path, weights_only=True)
            out["weights_only_torch_1_13"] = "loads"
        except Exception as e:  # noqa: BLE001 - the refusal is the fact recorded
            out["weights_only_torch_1_13"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    if isinstance(fx.obj, torch.nn.Module):
        # what a safetensors export of the module must name its tensors
        out["state_dict_keys"] = list(fx.obj.state_dict().keys())
    out["file_size"] = os.path.getsize(path)
    return out


def dump_json(v, depth=0):
    """JSON with one line per fixture fact, per tensor and per node: readable diffs, small file."""
    if depth < 2 and isinstance(v, dict) and v:
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dump_json(x, depth + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}" + ("\n" if depth == 0 else "")
    if depth == 2 and isinstance(v, (list, dict)) and len(json.dumps(v)) > 100:
        pad = " " * (depth + 1)
        if isinstance(v, list):
            items = [pad + json.dumps(x, ensure_ascii=False, allow_nan=False) for x in v]
            return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {json.dumps(x, ensure_ascii=False, allow_nan=False)}"
                 for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    return json.dumps(v, ensure_ascii=False, allow_nan=False)


def torch_save(obj, path):
    torch.save(obj, path)


def torch_legacy(protocol):
    return lambda obj, path: save_torch_legacy(obj, path, protocol)


def pickle_dump(protocol):
    def write(obj, path):
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    return write


def pickle_load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def joblib_dump(obj, path):
    joblib.dump(obj, path)


def main():
    gpt = make_tiny_gpt()
    X, y = sklearn_data()
    logreg = LogisticRegression(max_iter=500).fit(X, y)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    legacy = make_legacy()
    py = make_python_types()
    arrays = make_numpy_arrays()
    jarrays = make_joblib_arrays()
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    payload = Payload()
    joblib_notes = [
        "joblib_arrays*: one dict of arrays written by joblib.dump with every codec. Non-object "
        "arrays are NumpyArrayWrapper + padding byte n + n bytes 0xff + raw bytes "
        "(joblib_data_offset); the object array is a nested protocol-2 pickle right after its "
        "wrapper's BUILD (joblib_pickle_offset to joblib_pickle_end, its STOP included), read "
        "with pickle.load on the same stream; /matrix comes back as numpy.matrix.",
        "/be_i4: the file holds big-endian bytes (descr >i4, file_byteorder big); joblib.load "
        "byte-swaps to native order (loaded_descr <i4, loaded_byteorder little).",
    ]
    compressed_note = ("Compressed: the whole file is one {codec} stream; every offset "
                       "(joblib_data_offset, joblib_pickle_offset/_end) is an offset in the "
                       "DECOMPRESSED pickle stream, not in the file (decompressed_size).")

    fixtures = [
        Fixture("state_dict.pt", gpt.state_dict(), torch_save, 2, torch.load, notes=[
            "lm_head.weight is tied to wte.weight: in the state_dict they are two distinct tensor "
            "objects (state_dict detaches each parameter) that share storage '0', so both are "
            "tensor nodes, not a ref.",
            "The root OrderedDict also carries a _metadata attribute (set by BUILD after the "
            "SETITEMS); it is not a dict entry, see dict_state.",
        ]),
        Fixture("lightning_style.ckpt", make_lightning(), torch_save, 2, torch.load, notes=[
            "best_k_models[path] is the same tensor object as best_model_score, so it is a ref.",
            "optimizer state is keyed by int parameter ids (/optimizer_states/0/state/0/exp_avg); "
            "Adam's step is a 0-dim float32 tensor in torch 1.13.",
        ]),
        Fixture("hf_pytorch_model.bin", make_hf_bert(), torch_save, 2, torch.load, notes=[
            "bert.embeddings.position_ids is torch.arange(16).expand((1, -1)) as transformers "
            "registers it: an int64 buffer of shape (1, 16); torch gives the new size-1 dim stride "
            "16, not 0 (dtypes.pt /expanded has a real stride-0 dim).",
        ]),
        Fixture("legacy.pt", legacy, torch_legacy(2), 2, torch.load, notes=[
            "Legacy format: five pickles (magic number, protocol 1001, sys_info, the object, the "
            "sorted storage keys) then each storage as an int64 element count and its bytes, in "
            "the order of the keys pickle. Storage keys were renumbered by generate.py (torch "
            "writes heap addresses); see README.",
        ]),
        Fixture("legacy_proto1.pt", legacy, torch_legacy(1), 1, torch.load, notes=[
            "pickle protocol 1: bools are INT 01/00, no PROTO opcode, GLOBALs are __builtin__/"
            "copy_reg names when Python 2 names apply.",
        ]),
        Fixture("legacy_proto2.pt", make_legacy_p2(), torch_legacy(2), 2, torch.load),
        Fixture("dtypes.pt", make_dtypes(), torch_save, 2, torch.load, notes=[
            "complex32 cannot be saved by torch 1.13 ('dtype torch.complex32 is not recognized').",
            "/alias is the same tensor object as /float32: a ref.",
        ]),
        Fixture("large_f32.pt", make_large(), torch_save, 2, torch.load, notes=[
            "float32 tensors of more than 65536 elements, which take the bucketed histogram.",
        ]),
        Fixture("quantized.pt", make_quantized(), torch_save, 2, torch.load, notes=[
            "torch._utils._rebuild_qtensor with (torch.per_tensor_affine, scale, zero_point).",
        ]),
        Fixture("whole_module.pt", make_net(), torch_save, 2, torch.load, notes=[
            "Needs __main__.Net to load in Python; parameters are torch._utils._rebuild_parameter.",
        ]),
        Fixture("parameter.pt", make_parameters(), torch_save, 2, torch.load),
        Fixture("sklearn_logreg.pkl", logreg, pickle_dump(pickle.DEFAULT_PROTOCOL),
                pickle.DEFAULT_PROTOCOL, pickle_load),
        Fixture("sklearn_tree.pkl", tree, pickle_dump(pickle.DEFAULT_PROTOCOL),
                pickle.DEFAULT_PROTOCOL, pickle_load, notes=[
                    "tree_ is sklearn.tree._tree.Tree: REDUCE with args (n_features, n_classes "
                    "array, n_outputs) then BUILD {max_depth, node_count, nodes, values}; nodes is "
                    "a structured array.",
                ]),
        Fixture("sklearn_pipeline.pkl", pipe, pickle_dump(pickle.DEFAULT_PROTOCOL),
                pickle.DEFAULT_PROTOCOL, pickle_load),
        Fixture("sklearn_logreg.joblib", logreg, joblib_dump, pickle.DEFAULT_PROTOCOL, joblib.load,
                fmt="joblib", notes=[
                    "joblib writes each non-object array as a joblib.numpy_pickle.NumpyArrayWrapper "
                    "(NEWOBJ + BUILD {subclass, shape, order, dtype, allow_mmap}) immediately "
                    "followed, outside the pickle opcodes, by one byte n, n padding bytes 0xff and "
                    "the raw array bytes (joblib_data_offset). The tensors list the arrays at the "
                    "wrappers' paths, as joblib.load returns them.",
                ]),
        Fixture("joblib_arrays.joblib", jarrays, joblib_writer(), pickle.DEFAULT_PROTOCOL,
                joblib.load, fmt="joblib", notes=joblib_notes),
    ]
    for name, codec in (("joblib_arrays_zlib.joblib", "zlib"), ("joblib_arrays.pkl.gz", "gzip"),
                        ("joblib_arrays.pkl.bz2", "bz2"), ("joblib_arrays.pkl.lzma", "lzma"),
                        ("joblib_arrays.pkl.xz", "xz"), ("joblib_arrays.pkl.lz4", "lz4")):
        fixtures.append(Fixture(name, jarrays, joblib_writer((codec, 3)), pickle.DEFAULT_PROTOCOL,
                                joblib.load, fmt="joblib",
                                notes=joblib_notes + [compressed_note.format(codec=codec)]))
    fixtures += [
        Fixture("joblib_arrays_p2.joblib", jarrays, joblib_writer(protocol=2), 2, joblib.load,
                fmt="joblib", notes=joblib_notes + [
                    "Protocol 2: no PROTO 4 frames; the wrappers are NEWOBJ of a GLOBAL."]),
        Fixture("sklearn_forest.joblib", forest, joblib_writer(3), pickle.DEFAULT_PROTOCOL,
                joblib.load, fmt="joblib", notes=[
                    "RandomForestClassifier(n_estimators=3, max_depth=3) via joblib.dump(compress=3): "
                    "zlib. Each /estimators_/<i>/tree_ is sklearn.tree._tree.Tree: REDUCE (n_features, "
                    "n_classes array, n_outputs) then BUILD {max_depth, node_count, nodes, values}; "
                    "nodes is a structured array (fields lists its layout).",
                    compressed_note.format(codec="zlib"),
                ]),
    ]
    for p in range(6):
        fixtures.append(Fixture(f"python_types_p{p}.pkl", py, pickle_dump(p), p, pickle_load, notes=[
            "Python 3.11 pickles an Enum member as builtins.getattr(<class>, 'NAME') "
            "(__builtin__.getattr at protocols 0-2), so this benign file names a dangerous global.",
        ]))
    for p in (2, 4, 5):
        notes = []
        if p == 5:
            notes.append("Protocol 5: arrays are numpy.core.numeric._frombuffer(buffer, dtype, shape, "
                         "order) with the buffer in-band (BYTEARRAY8 or bytes), not _reconstruct.")
        if p == 2:
            notes.append("Protocol 2: array bytes are _codecs.encode(<latin-1 str>, 'latin1').")
        fixtures.append(Fixture(f"numpy_arrays_p{p}.pkl", arrays, pickle_dump(p), p, pickle_load,
                                notes=notes))
    fixtures += npy_fixtures() + [
        Fixture("npz_stored.npz", make_npz(), npz_writer(np.savez), None, fmt="npz", notes=[
            "np.savez: a zip of <key>.npy members, stored. data_offset is the absolute file "
            "offset of each array's bytes. DOS timestamps are set to 1980-01-01 by generate.py.",
        ]),
        Fixture("npz_deflated.npz", make_npz(), npz_writer(np.savez_compressed), None, fmt="npz",
                notes=[
                    "np.savez_compressed: the same members, deflated; npy_data_offset is the "
                    "offset in the decompressed member. DOS timestamps set to 1980-01-01.",
                ]),
        Fixture("st_dtypes.safetensors", make_st_dtypes(),
                safetensors_writer({"format": "pt", "note": "ckptview fixture"}), None,
                fmt="safetensors", notes=[
                    "One tensor per dtype; written by generate.py's write_safetensors (no "
                    "safetensors package here) in the reference writer's layout: descending dtype "
                    "then name, __metadata__ first in the header, header padded with spaces to a "
                    "multiple of 8. Nodes follow the header's key order.",
                    "bfloat16 and float8 values: first and stats are over the decoded values "
                    "(float32); first_bits are the stored codes. float8_e4m3fn has no infinities.",
                ]),
        Fixture("st_gpt_tiny.safetensors", make_st_gpt_tiny(), safetensors_writer(), None,
                fmt="safetensors", notes=["GPT-2-style float32 state dict, no __metadata__."]),
    ]
    fixtures += [
        Fixture("malicious.pkl", payload, pickle_dump(pickle.DEFAULT_PROTOCOL),
                pickle.DEFAULT_PROTOCOL, None, notes=["NEVER load: calls posix.system."]),
        Fixture("malicious_torch.pt", {"weight": torch.ones(2), "payload": payload}, torch_save, 2,
                None, notes=["NEVER load: calls posix.system."]),
    ]

    expected = {"_about": {
        "generator": "testdata/models/generate.py",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "numpy": np.__version__, "sklearn": sklearn.__version__,
                     "joblib": joblib.__version__, "lz4": lz4.__version__},
        "paths": "JSON Pointer; see README.md",
        "stats": "float64 over finite values; complex on magnitude; min/max/mean/std null when "
                 "count is 0; std is population (ddof=0)",
    }}
    for fx in fixtures:
        expected[fx.name] = describe(fx)
        print(f"{fx.name:28} {expected[fx.name]['file_size']:8} bytes  "
              f"{len(expected[fx.name]['nodes']):5} nodes  {len(expected[fx.name]['tensors']):3} arrays")
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        f.write(dump_json(expected))
    # sparse and per-channel quantized tensors, described in a file of their own
    with open(os.path.join(HERE, "expected_layouts.json"), "w") as f:
        f.write(dump_json({"layouts.pt": make_layouts()}))
    # sharded checkpoints (an index and its shards), described in a file of their own
    with open(os.path.join(HERE, "expected_sharded.json"), "w") as f:
        f.write(dump_json(make_sharded(gpt)))
    # a TorchScript archive, described in a file of its own
    with open(os.path.join(HERE, "expected_torchscript.json"), "w") as f:
        f.write(dump_json({"torchscript.pt": make_torchscript()}))


def make_sharded(gpt):
    """sharded/: the tiny GPT's state dict split in two shards the way transformers'
    save_pretrained lays them out (an index whose weight_map names each tensor's shard, its
    metadata.total_size), once as torch.save .bin shards and once as safetensors shards (tied
    lm_head.weight left out, as transformers does for safetensors). The facts are the state
    dict's own tensors and the index torch and json wrote."""
    sd = gpt.state_dict()
    names = list(sd)
    half = len(names) // 2
    out = {}
    d = os.path.join(HERE, "sharded")
    os.makedirs(d, exist_ok=True)
    for kind in ("bin", "safetensors"):
        keys = names if kind == "bin" else [n for n in names if n != "lm_head.weight"]
        parts = [keys[:half], keys[half:]]
        if kind == "bin":
            files = [f"pytorch_model-{i + 1:05d}-of-00002.bin" for i in range(2)]
            index_name = "pytorch_model.bin.index.json"
        else:
            files = [f"model-{i + 1:05d}-of-00002.safetensors" for i in range(2)]
            index_name = "model.safetensors.index.json"
        weight_map, total = {}, 0
        for fname, part in zip(files, parts):
            path = os.path.join(d, fname)
            if kind == "bin":
                torch.save(OrderedDict((k, sd[k]) for k in part), path)
            else:
                tensors = {}
                for k in part:
                    a = sd[k].contiguous().numpy()
                    dt = {"float32": "F32", "bool": "BOOL", "int64": "I64"}[str(a.dtype)]
                    tensors[k] = (dt, list(a.shape), a.tobytes())
                write_safetensors(tensors, path, metadata={"format": "pt"})
            for k in part:
                weight_map[k] = fname
                total += sd[k].numel() * sd[k].element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(d, index_name), "w") as f:
            json.dump(index, f, indent=2)
        facts = {}
        for k in keys:
            t = sd[k]
            facts[k] = {"shard": weight_map[k], "dtype": str(t.dtype).replace("torch.", ""),
                        "shape": list(t.shape), "sha256_le": le_digest(t.contiguous().numpy())}
        out[index_name] = {"files": [index_name] + files, "tensors": facts, "order": keys,
                           "total_size": total}
    return out


class ScriptedNet(nn.Module):
    """A small module for torch.jit.script: a parameter, a buffer, a submodule and methods."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) * self.scale

    @torch.jit.export
    def describe(self) -> str:
        return "ckptview fixture"


def make_torchscript():
    """torchscript.pt: torch.jit.save of a scripted module with an extra file. The facts are
    what zipfile lists and holds (members, the code text) and what torch.jit.load gives back
    (the parameters and buffers)."""
    torch.manual_seed(5)
    path = os.path.join(HERE, "torchscript.pt")
    m = torch.jit.script(ScriptedNet())
    torch.jit.save(m, path, _extra_files={"config.txt": "hidden=3\n"})
    with zipfile.ZipFile(path) as z:
        members = z.namelist()
        code = {n: z.read(n).decode("utf-8") for n in members if "/code/" in n and n.endswith(".py")}
        extra = {n: z.read(n).decode("utf-8") for n in members if "/extra/" in n}
    loaded = torch.jit.load(path)
    tensors = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                   "first": [float(x) for x in v.reshape(-1)[:8]]}
               for k, v in loaded.state_dict().items()}
    return {"format": "torchscript", "members": members, "code": code, "extra": extra,
            "state_dict": tensors, "file_size": os.path.getsize(path)}


def make_layouts():
    """layouts.pt: a sparse COO tensor and a per-channel quantized tensor, whose pickles are
    torch._utils._rebuild_sparse_tensor and _rebuild_qtensor with per-channel parameters.
    Their facts are written here directly (the generic walker covers strided tensors)."""
    torch.manual_seed(11)
    indices = torch.tensor([[0, 1, 2, 2], [1, 0, 3, 2]])
    values = torch.tensor([1.5, -2.0, 3.25, 0.5])
    sparse = torch.sparse_coo_tensor(indices, values, (3, 4))
    qc = torch.quantize_per_channel(torch.randn(3, 4), torch.tensor([0.1, 0.05, 0.2]),
                                    torch.tensor([0, 2, -1]), 0, torch.qint8)
    path = os.path.join(HERE, "layouts.pt")
    torch.save({"sparse": sparse, "qc": qc}, path)
    back = torch.load(path)
    assert torch.equal(back["sparse"].to_dense(), sparse.to_dense())
    deq = back["qc"].dequantize().contiguous().numpy().astype(np.float64).reshape(-1)
    return {
        "format": "torch-zip",
        "sparse": {"path": "/sparse", "layout": "sparse_coo", "shape": list(sparse.shape),
                   "dtype": "float32", "nnz": int(sparse._nnz()),
                   "indices": {"dtype": "int64", "shape": list(back["sparse"]._indices().shape),
                               "values": back["sparse"]._indices().reshape(-1).tolist()},
                   "values": {"dtype": "float32", "shape": list(back["sparse"]._values().shape),
                              "values": back["sparse"]._values().tolist(),
                              "stats": stats_of(back["sparse"]._values().numpy().reshape(-1))},
                   "dense": back["sparse"].to_dense().reshape(-1).tolist()},
        "per_channel": {"path": "/qc", "dtype": "qint8", "shape": list(qc.shape),
                        "scheme": str(back["qc"].qscheme()).replace("torch.", ""),
                        "axis": int(back["qc"].q_per_channel_axis()),
                        "scales": back["qc"].q_per_channel_scales().tolist(),
                        "zero_points": back["qc"].q_per_channel_zero_points().tolist(),
                        "int_repr": back["qc"].int_repr().reshape(-1).tolist(),
                        "stats_dequantized": stats_of(deq)},
        "file_size": os.path.getsize(path),
    }


if __name__ == "__main__":
    main()
