#!/usr/bin/python3
"""Writes the hostile inputs of testdata/hostile/ and the outcome each must have.

Run from the repository root:

    /usr/bin/python3 testdata/hostile/generate.py

Every pickle here is written opcode by opcode with the small assembler below, so the bytes
are exactly what the test means (Python's pickler would rename os.system to posix.system,
pick its own opcodes and refuse most of the malformed cases). Nothing is ever unpickled: the
well-formed pickles are only disassembled with pickletools, which never imports or calls.

Two kinds of file:

- payloads: if Python unpickled them (pickle.load, torch.load, numpy.load with
  allow_pickle), they would create /tmp/ckptview-hostile-<name>. The Go test removes that
  marker, opens the file and checks that it is still absent and that the calls were reported.
- malformed inputs: lengths past the end, deep nesting, huge memos, shared and cyclic
  references, broken stacks, zip bombs and tensors whose views do not fit their storage.

expected.json, per file: expect (danger, reject or opens), danger (globals, spelled as in the
file, that must be reported as danger findings whether the file opens or not), error (a loose
substring of the error of a rejected file; empty means any error), marker, why, and optionally
max_nodes (the tree may not hold more nodes) and sane_totals (tensor and byte counts may not
overflow).
"""

import io
import json
import os
import pickletools
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "/tmp/ckptview-hostile-"

# Sizes. The loader caps nesting at 2,000 levels; the deep files go ten times past that while
# keeping the folder well under 1 MB (the zip bomb alone is 300 KB; 100k lists nested through
# the memo would be 700 KB). TestHostilePickles nests 300k MARKs and 100k lists in memory.
DEEP_MARKS = 20_000        # "(" * n: 1 byte a level
DEEP_LISTS = 20_000        # lists nested through the memo: 7 bytes a level
MEMO_ENTRIES = 200_000     # MEMOIZE of one list: 1 byte an entry
BOMB_BYTES = 300 << 20     # what the zip bomb's data.pkl inflates to
BOMB_MAX_COMPRESSED = 400 << 10

FILES = {}      # name -> bytes
EXPECTED = {}   # name -> facts


# ----------------------------------------------------------------------------------------
# The assembler: each method appends one opcode and returns self.


class P:
    def __init__(self, proto=None):
        self.b = bytearray()
        if proto is not None and proto >= 2:
            self.b += bytes([0x80, proto])

    def raw(self, data):
        self.b += data
        return self

    def bytes(self):
        return bytes(self.b)

    # structure
    def mark(self): return self.raw(b"(")
    def stop(self): return self.raw(b".")
    def pop(self): return self.raw(b"0")
    def pop_mark(self): return self.raw(b"1")
    def dup(self): return self.raw(b"2")

    # globals and calls
    def global_(self, module, name): return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
    def inst(self, module, name): return self.raw(b"i" + module.encode() + b"\n" + name.encode() + b"\n")
    def stack_global(self): return self.raw(b"\x93")
    def reduce(self): return self.raw(b"R")
    def build(self): return self.raw(b"b")
    def obj(self): return self.raw(b"o")
    def newobj(self): return self.raw(b"\x81")
    def newobj_ex(self): return self.raw(b"\x92")
    def binpersid(self): return self.raw(b"Q")

    # containers
    def empty_tuple(self): return self.raw(b")")
    def empty_list(self): return self.raw(b"]")
    def empty_dict(self): return self.raw(b"}")
    def tuple(self): return self.raw(b"t")
    def tuple1(self): return self.raw(b"\x85")
    def tuple2(self): return self.raw(b"\x86")
    def tuple3(self): return self.raw(b"\x87")
    def list(self): return self.raw(b"l")
    def dict(self): return self.raw(b"d")
    def append(self): return self.raw(b"a")
    def appends(self): return self.raw(b"e")
    def setitem(self): return self.raw(b"s")
    def setitems(self): return self.raw(b"u")

    # scalars
    def none(self): return self.raw(b"N")
    def true(self): return self.raw(b"\x88")
    def false(self): return self.raw(b"\x89")

    def int(self, n):
        """The smallest binary int opcode for n (protocol 1+)."""
        if 0 <= n < 256:
            return self.raw(b"K" + bytes([n]))
        if 0 <= n < 65536:
            return self.raw(b"M" + struct.pack("<H", n))
        if -(2 ** 31) <= n < 2 ** 31:
            return self.raw(b"J" + struct.pack("<i", n))
        return self.long1(n)

    def long1(self, n):
        nbytes = (n.bit_length() + 8) // 8  # room for the sign bit
        return self.raw(b"\x8a" + bytes([nbytes]) + n.to_bytes(nbytes, "little", signed=True))

    def int0(self, n): return self.raw(b"I%d\n" % n)

    def string0(self, s):
        """Protocol 0 STRING: a quoted, escaped Python 2 str literal."""
        return self.raw(b"S" + repr(s).encode("ascii") + b"\n")

    def unicode0(self, s): return self.raw(b"V" + s.encode("raw-unicode-escape") + b"\n")

    def str(self, s):
        b = s.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(b)) + b)

    def short_str(self, s):
        b = s.encode("utf-8")
        return self.raw(b"\x8c" + bytes([len(b)]) + b)

    def short_bytes(self, b): return self.raw(b"C" + bytes([len(b)]) + b)

    # memo
    def put0(self, i): return self.raw(b"p%d\n" % i)
    def get0(self, i): return self.raw(b"g%d\n" % i)
    def binput(self, i): return self.raw(b"q" + bytes([i]))
    def binget(self, i): return self.raw(b"h" + bytes([i]))
    def long_binput(self, i): return self.raw(b"r" + struct.pack("<I", i))
    def memoize(self): return self.raw(b"\x94")


def framed(body, proto=4):
    """A protocol 4 pickle whose opcodes sit in one FRAME, as Python writes them."""
    return bytes([0x80, proto]) + b"\x95" + struct.pack("<Q", len(body)) + body


def marker(name):
    return MARKER + name


def sh(name):
    """A shell command that creates the marker."""
    return "touch " + marker(name)


def py(name):
    """Python source that creates the marker."""
    return "open(%r, 'w').close()" % marker(name)


def add(name, data, expect, why, danger=(), error="", payload=True, **extra):
    assert name not in FILES, name
    FILES[name] = data
    e = {"expect": expect, "danger": list(danger), "why": why}
    if expect == "reject":
        e["error"] = error
    if payload:
        e["marker"] = marker(name)
    e.update(extra)
    EXPECTED[name] = e


def check_pickle(data, name):
    """Disassembles a well-formed pickle (stack and memo are checked, nothing is called)."""
    try:
        pickletools.dis(data, out=io.StringIO())
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"{name}: not a well-formed pickle: {exc}")


# ----------------------------------------------------------------------------------------
# Code-running payloads, one delivery each.


def payloads():
    n = "p0_global_posix_system.pkl"
    add(n, P().global_("posix", "system").mark().string0(sh(n)).tuple().reduce().stop().bytes(),
        "danger", "protocol 0 GLOBAL posix.system + MARK/TUPLE + REDUCE, the classic shell payload",
        danger=["posix.system"])

    n = "p2_global_os_system.pkl"
    add(n, P(2).global_("os", "system").binput(0).str(sh(n)).binput(1).tuple1().binput(2).reduce().binput(3).stop().bytes(),
        "danger", "protocol 2 GLOBAL os.system written by hand (Python's pickler would say posix.system)",
        danger=["os.system"])

    n = "p2_global_nt_system.pkl"
    add(n, P(2).global_("nt", "system").str(sh(n)).tuple1().reduce().stop().bytes(),
        "danger", "nt.system: what a payload pickled on Windows names; runs on Windows, ImportError elsewhere",
        danger=["nt.system"])

    n = "p4_stack_global_memo.pkl"
    body = (P().empty_dict().memoize()
            .short_str("name").binput(1).short_str("posix").binput(2).setitem()
            .short_str("call").binput(3).short_str("system").binput(4).setitem()
            .short_str("run").binget(2).binget(4).stack_global().binput(5)
            .short_str(sh(n)).tuple1().reduce().setitem().stop().bytes())
    add(n, framed(body),
        "danger", "protocol 4 STACK_GLOBAL whose module and name are strings stored in a dict earlier and fetched back with BINGET",
        danger=["posix.system"])

    n = "p0_inst_builtin_exec.pkl"
    add(n, P().mark().string0(py(n)).inst("__builtin__", "exec").put0(0).stop().bytes(),
        "danger", "protocol 0 INST __builtin__.exec (the Python 2 spelling): INST calls the global with the MARKed values",
        danger=["__builtin__.exec"])

    n = "p2_obj_builtin_eval.pkl"
    add(n, P(2).mark().global_("__builtin__", "eval").str(py(n)).obj().stop().bytes(),
        "danger", "protocol 2 OBJ with __builtin__.eval as the class: OBJ calls it with the rest of the MARK",
        danger=["__builtin__.eval"])

    n = "p4_builtins_eval.pkl"
    add(n, framed(P().short_str("builtins").memoize().short_str("eval").memoize().stack_global().memoize()
                  .short_str(py(n)).memoize().tuple1().memoize().reduce().memoize().stop().bytes()),
        "danger", "protocol 4 STACK_GLOBAL builtins.eval (the Python 3 spelling) + REDUCE",
        danger=["builtins.eval"])

    n = "p2_compile_eval.pkl"
    add(n, P(2).global_("__builtin__", "eval")
        .global_("__builtin__", "compile").mark().str(py(n)).str("<ckptview>").str("exec").tuple().reduce()
        .tuple1().reduce().stop().bytes(),
        "danger", "eval(compile(source, '<ckptview>', 'exec')): a code object built by one call and run by another",
        danger=["__builtin__.eval", "__builtin__.compile"])

    n = "p2_getattr_import.pkl"
    add(n, P(2).global_("__builtin__", "getattr")
        .global_("__builtin__", "__import__").str("os").tuple1().reduce()
        .str("system").tuple2().reduce()
        .str(sh(n)).tuple1().reduce().stop().bytes(),
        "danger", "getattr(__import__('os'), 'system')(cmd): the dangerous function is never named as a global",
        danger=["__builtin__.getattr", "__builtin__.__import__"])

    n = "p4_subprocess_popen.pkl"
    add(n, framed(P().short_str("subprocess").memoize().short_str("Popen").memoize().stack_global().memoize()
                  .empty_list().memoize().mark().short_str("touch").memoize().short_str(marker(n)).memoize().appends()
                  .tuple1().memoize().reduce().memoize().stop().bytes()),
        "danger", "protocol 4 subprocess.Popen(['touch', marker]) by STACK_GLOBAL + REDUCE",
        danger=["subprocess.Popen"])

    n = "p2_subprocess_run.pkl"
    add(n, P(2).global_("subprocess", "run").empty_list().mark().str("touch").str(marker(n)).appends()
        .tuple1().reduce().stop().bytes(),
        "danger", "protocol 2 subprocess.run(['touch', marker])",
        danger=["subprocess.run"])

    n = "p0_subprocess_check_output.pkl"
    add(n, P().global_("subprocess", "check_output").mark().mark().list().put0(0)
        .string0("touch").put0(1).append().string0(marker(n)).put0(2).append().tuple().put0(3)
        .reduce().put0(4).stop().bytes(),
        "danger", "protocol 0 subprocess.check_output with a Python 2 style list (MARK LIST PUT APPEND)",
        danger=["subprocess.check_output"])

    n = "p2_runpy_run_code.pkl"
    add(n, P(2).global_("runpy", "_run_code").str(py(n)).empty_dict().tuple2().reduce().stop().bytes(),
        "danger", "runpy._run_code(source, {}): exec under another name",
        danger=["runpy._run_code"])

    n = "p4_importlib_getattr.pkl"
    add(n, framed(P().short_str("builtins").memoize().short_str("getattr").memoize().stack_global().memoize()
                  .short_str("importlib").memoize().short_str("import_module").memoize().stack_global().memoize()
                  .short_str("os").memoize().tuple1().reduce().memoize()
                  .short_str("system").memoize().tuple2().reduce().memoize()
                  .short_str(sh(n)).tuple1().reduce().stop().bytes()),
        "danger", "getattr(importlib.import_module('os'), 'system')(cmd) in protocol 4",
        danger=["builtins.getattr", "importlib.import_module"])

    n = "p2_pickle_loads.pkl"
    inner = P(2).global_("posix", "system").str(sh(n)).tuple1().reduce().stop().bytes()
    check_pickle(inner, n + " (inner)")
    add(n, P(2).global_("pickle", "loads")
        .global_("_codecs", "encode").str(inner.decode("latin-1")).str("latin1").tuple2().reduce()
        .tuple1().reduce().stop().bytes(),
        "danger", "pickle.loads of an inner pickle (itself posix.system) passed as bytes the protocol 2 way, _codecs.encode(str, 'latin1')",
        danger=["pickle.loads"])

    n = "p2_operator_attrgetter.pkl"
    add(n, P(2).global_("operator", "attrgetter").str("system").tuple1().reduce()
        .global_("__builtin__", "__import__").str("os").tuple1().reduce().tuple1().reduce()
        .str(sh(n)).tuple1().reduce().stop().bytes(),
        "danger", "operator.attrgetter('system')(__import__('os'))(cmd): a call chain three calls deep",
        danger=["operator.attrgetter", "__builtin__.__import__"])

    n = "p4_attrgetter_random_os.pkl"
    add(n, framed(P().short_str("_operator").memoize().short_str("attrgetter").memoize().stack_global().memoize()
                  .short_str("system").tuple1().reduce().memoize()
                  .short_str("random").memoize().short_str("_os").memoize().stack_global().memoize()
                  .tuple1().reduce().memoize()
                  .short_str(sh(n)).tuple1().reduce().stop().bytes()),
        "danger", "_operator.attrgetter('system')(random._os)(cmd): random._os is the os module under a harmless-looking name",
        danger=["_operator.attrgetter"])

    n = "p2_webbrowser_open.pkl"
    add(n, P(2).empty_list().mark()
        .global_("__builtin__", "open").str(marker(n)).str("w").tuple2().reduce()
        .global_("webbrowser", "open").str("http://127.0.0.1:9/ckptview-hostile").tuple1().reduce()
        .appends().stop().bytes(),
        "danger", "[open(marker, 'w'), webbrowser.open('http://127.0.0.1:9/...')]: opening a browser makes no file, so open() is the marker",
        danger=["__builtin__.open", "webbrowser.open"])

    n = "p4_socket_create_connection.pkl"
    add(n, framed(P().empty_list().memoize().mark()
                  .short_str("builtins").short_str("open").stack_global().short_str(marker(n)).short_str("w").tuple2().reduce()
                  .short_str("socket").short_str("create_connection").stack_global()
                  .short_str("127.0.0.1").int(9).tuple2().tuple1().reduce()
                  .appends().stop().bytes()),
        "danger", "[open(marker, 'w'), socket.create_connection(('127.0.0.1', 9))]: a connection makes no file, so open() is the marker",
        danger=["builtins.open", "socket.create_connection"])

    n = "p0_builtin_open.pkl"
    add(n, P().global_("__builtin__", "open").mark().string0(marker(n)).string0("w").tuple().reduce().stop().bytes(),
        "danger", "protocol 0 __builtin__.open(marker, 'w'): creates the file without any shell",
        danger=["__builtin__.open"])

    n = "p2_newobj_partial.pkl"
    add(n, P(2).global_("functools", "partial").global_("posix", "system").str(sh(n)).tuple2().newobj()
        .empty_tuple().reduce().stop().bytes(),
        "danger", "NEWOBJ builds functools.partial(posix.system, cmd) (partial.__new__ stores, never calls); REDUCE with () then calls it",
        danger=["functools.partial", "posix.system"])

    n = "p4_newobj_ex_partial.pkl"
    add(n, framed(P().short_str("functools").short_str("partial").stack_global().memoize()
                  .short_str("subprocess").short_str("run").stack_global().memoize()
                  .empty_list().short_str("touch").append().short_str(marker(n)).append().tuple2()
                  .empty_dict().short_str("check").false().setitem()
                  .newobj_ex().memoize().empty_tuple().reduce().stop().bytes()),
        "danger", "NEWOBJ_EX builds functools.partial(subprocess.run, ['touch', marker], check=False); REDUCE with () calls it",
        danger=["functools.partial", "subprocess.run"])

    n = "p2_build_setstate.pkl"
    add(n, P(2).global_("argparse", "Namespace").empty_tuple().reduce()
        .empty_dict().str("__setstate__").global_("posix", "system").setitem().build()
        .str(sh(n)).build().stop().bytes(),
        "danger", "BUILD {'__setstate__': posix.system} into an allowlisted Namespace's __dict__, then a second BUILD calls its __setstate__(cmd)",
        danger=["posix.system"])

    n = "p2_build_class_slotstate.pkl"
    add(n, P(2).global_("argparse", "Namespace").none()
        .empty_dict().str("__setstate__").global_("posix", "system").setitem().tuple2().build().pop()
        .global_("argparse", "Namespace").empty_tuple().reduce().str(sh(n)).build().stop().bytes(),
        "danger", "BUILD (None, {'__setstate__': posix.system}) on the class argparse.Namespace itself (slot state is setattr), so every later Namespace BUILD calls posix.system",
        danger=["posix.system", "argparse.Namespace"])

    n = "p2_build_module_attr.pkl"
    add(n, P(2).global_("torch", "_utils")
        .empty_dict().str("_rebuild_tensor_v2").global_("posix", "system").setitem().build().pop()
        .global_("torch._utils", "_rebuild_tensor_v2").str(sh(n)).tuple1().reduce().stop().bytes(),
        "danger", "BUILD on the module torch._utils replaces the allowlisted _rebuild_tensor_v2 with posix.system; the later GLOBAL torch._utils._rebuild_tensor_v2 is posix.system",
        danger=["posix.system", "torch._utils"])

    n = "p2_second_pickle.pkl"
    first = P(2).empty_dict().binput(0).str("okay").int(1).setitem().stop().bytes()
    second = P(2).global_("posix", "system").str(sh(n)).tuple1().reduce().stop().bytes()
    check_pickle(first, n)
    check_pickle(second, n)
    add(n, first + second,
        "danger", "a benign pickle followed by a second pickle holding the payload (read by a second pickle.load)",
        danger=["posix.system"])

    n = "p2_call_then_garbage.pkl"
    add(n, P(2).global_("posix", "system").str(sh(n)).tuple1().reduce().raw(b"\xff").stop().bytes(),
        "reject", "the call is made, then an unknown opcode: refused, but the call must still be reported",
        danger=["posix.system"], error="unknown opcode")

    n = "numpy_object_array_payload.pkl"
    p = (P(2).empty_dict().binput(0).str("arr")
         .global_("numpy.core.multiarray", "_reconstruct").global_("numpy", "ndarray").int(0).tuple1()
         .global_("_codecs", "encode").str("b").str("latin1").tuple2().reduce().tuple3().reduce()
         .mark().int(1).int(1).tuple1()
         .global_("numpy", "dtype").str("O8").false().true().tuple3().reduce()
         .mark().int(3).str("|").none().none().none().int(-1).int(-1).int(63).tuple().build()
         .false().empty_list()
         .global_("posix", "system").str(sh(n)).tuple1().reduce().append()
         .tuple().build().setitem().stop())
    add(n, p.bytes(),
        "danger", "numpy object array (numpy.core.multiarray._reconstruct, dtype O) whose BUILD item list holds the call",
        danger=["posix.system"])


# ----------------------------------------------------------------------------------------
# Zip archives, written by hand so that names, duplicates and checksums are ours.


def zip_archive(members):
    """members: dicts with name, data (stored) or deflated=(compressed, crc, size); crc overrides."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m["name"].encode()
        if "deflated" in m:
            data, crc, size = m["deflated"]
            method = 8
        else:
            data = m["data"]
            crc, size, method = zlib.crc32(data), len(data), 0
        crc = m.get("crc", crc)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0)
        out += name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                               len(name), 0, 0, 0, 0, 0, offset)
        central += name
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_offset, 0)
    return bytes(out)


WEIGHTS = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)  # torch.arange(4, dtype=torch.float32)


def state_dict_pickle(tensors, extra=None):
    """A torch data.pkl like torch.save({...}) writes: key -> _rebuild_tensor_v2(storage, offset,
    size, stride, False, OrderedDict()). tensors: (key, storage class, storage key, numel, offset,
    size, stride). extra(p) may add more SETITEMs."""
    p = P(2).empty_dict().binput(0)
    for key, cls, skey, numel, offset, size, stride in tensors:
        p.str(key).global_("torch._utils", "_rebuild_tensor_v2").mark()
        p.mark().str("storage").global_("torch", cls).str(skey).str("cpu").int(numel).tuple().binpersid()
        p.int(offset)
        p.mark()
        for d in size:
            p.int(d)
        p.tuple().mark()
        for s in stride:
            p.int(s)
        p.tuple().false().global_("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce().setitem()
    if extra:
        extra(p)
    return p.stop().bytes()


WEIGHT = ("weight", "FloatStorage", "0", 4, 0, (4,), (1,))


def torch_zip(data_pkl, storages=(("0", WEIGHTS),), prefix="archive", more=()):
    members = [{"name": f"{prefix}/data.pkl", "data": data_pkl}]
    members += [{"name": f"{prefix}/data/{k}", "data": v} for k, v in storages]
    members.append({"name": f"{prefix}/version", "data": b"3\n"})
    return zip_archive(members + list(more))


def payload_setitem(n):
    def extra(p):
        p.str("payload").global_("posix", "system").str(sh(n)).tuple1().reduce().setitem()
    return extra


def zips():
    n = "torch_zip_payload.pt"
    data = state_dict_pickle([WEIGHT], payload_setitem(n))
    check_pickle(data, n)
    add(n, torch_zip(data), "danger",
        "torch zip (archive/data.pkl, archive/data/0, archive/version) whose state dict also holds posix.system(cmd) under /payload",
        danger=["posix.system"])

    benign = state_dict_pickle([WEIGHT])
    check_pickle(benign, "benign data.pkl")

    n = "zip_dotdot_member.pt"
    evil = P(2).global_("posix", "system").str(sh(n)).tuple1().reduce().stop().bytes()
    add(n, torch_zip(benign, more=[{"name": "../evil.pkl", "data": evil}]), "danger",
        "a torch zip plus a member named ../evil.pkl holding a payload (torch refuses the archive): nothing is extracted, the pickle is still scanned",
        danger=["posix.system"])

    n = "zip_abs_path.pt"
    data = state_dict_pickle([WEIGHT], payload_setitem(n))
    add(n, torch_zip(data, prefix="/abs"), "danger",
        "the torch layout under an absolute path (/abs/data.pkl ...), which torch refuses (no version record): "
        "like ../evil.pkl, nothing is extracted and the archive is only read; the payload is reported",
        danger=["posix.system"])

    n = "zip_duplicate_data_pkl.pt"
    data = state_dict_pickle([WEIGHT], payload_setitem(n))
    add(n, torch_zip(benign, more=[{"name": "archive/data.pkl", "data": data}]), "danger",
        "two members named archive/data.pkl: the first (which torch reads) benign, the second (which Python's zipfile reads) with the payload",
        danger=["posix.system"])

    n = "zip_bad_crc.pt"
    data = state_dict_pickle([WEIGHT], payload_setitem(n))
    z = zip_archive([{"name": "archive/data.pkl", "data": data, "crc": zlib.crc32(data) ^ 0xDEADBEEF},
                     {"name": "archive/data/0", "data": WEIGHTS},
                     {"name": "archive/version", "data": b"3\n"}])
    add(n, z, "danger",
        "a torch zip whose data.pkl has a wrong CRC-32 (torch 1.13 reads it anyway, Python's zipfile refuses it): opens, payload reported",
        danger=["posix.system"])

    n = "zip_bomb.pt"
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = b"\x80\x02"
    chunks, crc, size = [comp.compress(head)], zlib.crc32(head), len(head)
    zero = bytes(1 << 20)
    while size < BOMB_BYTES:
        chunk = zero[: min(len(zero), BOMB_BYTES - size)]
        chunks.append(comp.compress(chunk))
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    chunks.append(comp.flush())
    deflated = b"".join(chunks)
    assert len(deflated) < BOMB_MAX_COMPRESSED, len(deflated)
    z = zip_archive([{"name": "archive/data.pkl", "deflated": (deflated, crc, size)},
                     {"name": "archive/data/0", "data": WEIGHTS},
                     {"name": "archive/version", "data": b"3\n"}])
    add(n, z, "reject",
        f"a torch zip whose deflated data.pkl inflates to {BOMB_BYTES >> 20} MB (PROTO 2 then zeros): refused without inflating it into memory",
        error="data.pkl", payload=False)

    tensors = [
        ("tensor_view_past_storage.pt", ("too_long", "FloatStorage", "0", 4, 0, (10,), (1,)), WEIGHTS,
         "a (10,) float32 view on a 4-element storage"),
        ("tensor_negative_shape.pt", ("negative", "FloatStorage", "0", 4, 0, (-4,), (1,)), WEIGHTS,
         "size (-4,)"),
        ("tensor_gigantic_shape.pt", ("gigantic", "FloatStorage", "0", 4, 0, (2 ** 40, 2 ** 40), (2 ** 40, 1)), WEIGHTS,
         "size (2**40, 2**40), contiguous strides, on 4 elements: numel overflows int64 (torch refuses it too)"),
        ("tensor_nbytes_overflow.pt", ("nbytes", "DoubleStorage", "0", 1, 0, (2 ** 61,), (1,)), WEIGHTS[:8],
         "size (2**61,) float64, contiguous: numel fits int64, numel*8 does not"),
        ("tensor_strides_overflow.pt", ("strides", "FloatStorage", "0", 4, 0, (2, 2), (2 ** 62, 2 ** 62)), WEIGHTS,
         "size (2, 2), strides (2**62, 2**62): each step fits int64, their sum (the last element) does not"),
        ("tensor_offset_overflow.pt", ("offset", "FloatStorage", "0", 4, 2 ** 62, (2,), (2 ** 62,)), WEIGHTS,
         "storage offset 2**62 plus one stride of 2**62: the last element's index overflows int64"),
    ]
    for name, t, raw, why in tensors:
        data = state_dict_pickle([t])
        check_pickle(data, name)
        add(name, torch_zip(data, storages=(("0", raw),)), "reject",
            "torch zip tensor whose view runs past its storage: " + why, error=t[0], payload=False)

    n = "tensor_expanded_huge.pt"
    data = state_dict_pickle([("expanded", "DoubleStorage", "0", 1, 0, (2 ** 60,), (0,))])
    add(n, torch_zip(data, storages=(("0", WEIGHTS[:8]),)), "opens",
        "torch.zeros(1, dtype=float64).expand(2**60) as torch.save writes it (stride 0, legal in torch): opens, "
        "but numel*8 = 2**63 must not overflow the totals",
        payload=False, sane_totals=True)

    n = "torch_zip_missing_storage.pt"
    add(n, torch_zip(benign, storages=()), "reject",
        "a torch zip whose data.pkl names storage 0 but has no archive/data/0",
        error="storage", payload=False)


# ----------------------------------------------------------------------------------------
# Legacy torch files: five pickles, then the storages.

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy(main, keys=("0",), storages=((4, WEIGHTS),), sys_info=None):
    magic = P(2).long1(LEGACY_MAGIC).stop().bytes()
    version = P(2).int(1001).stop().bytes()
    if sys_info is None:
        sys_info = (P(2).empty_dict().binput(0).mark()
                    .str("protocol_version").int(1001).str("little_endian").true()
                    .str("type_sizes").empty_dict().mark().str("short").int(2).str("int").int(4).str("long").int(4).setitems()
                    .setitems().stop().bytes())
    kp = P(2).empty_list().binput(0).mark()
    for k in keys:
        kp.str(k)
    keys_pickle = kp.appends().stop().bytes()
    out = magic + version + sys_info + main + keys_pickle
    for numel, raw in storages:
        out += struct.pack("<q", numel) + raw
    for part in (magic, version, sys_info, main, keys_pickle):
        check_pickle(part, "legacy part")
    return out


def legacy_main(extra=None):
    p = P(2).empty_dict().binput(0).str("weight").global_("torch._utils", "_rebuild_tensor_v2").mark()
    p.mark().str("storage").global_("torch", "FloatStorage").str("0").str("cpu").int(4).none().tuple().binpersid()
    p.int(0).int(4).tuple1().int(1).tuple1().false().global_("collections", "OrderedDict").empty_tuple().reduce()
    p.tuple().reduce().setitem()
    if extra:
        extra(p)
    return p.stop().bytes()


def legacies():
    n = "torch_legacy_payload.pt"
    add(n, legacy(legacy_main(payload_setitem(n))), "danger",
        "legacy torch.save file (magic, 1001, sys_info, main pickle, storage keys, storages) whose main pickle holds the call",
        danger=["posix.system"])

    n = "torch_legacy_sysinfo_payload.pt"
    sys_info = P(2).global_("posix", "system").str(sh(n)).tuple1().reduce().stop().bytes()
    add(n, legacy(legacy_main(), sys_info=sys_info), "danger",
        "legacy torch file whose sys_info pickle (unpickled by torch.load before the model) is the call",
        danger=["posix.system"])

    n = "legacy_storage_past_end.pt"
    add(n, legacy(legacy_main(), storages=((1 << 40, WEIGHTS),)), "reject",
        "legacy torch file whose storage declares 2**40 float32 elements; 16 bytes follow",
        error="storage", payload=False)


# ----------------------------------------------------------------------------------------
# Malformed pickles.


def malformed():
    rng = random.Random(20240611)

    def reject(name, data, error, why):
        add(name, data, "reject", why, error=error, payload=False)

    reject("empty.pkl", b"", "empty", "an empty file")
    reject("random_4k.bin", bytes(rng.getrandbits(8) for _ in range(4096)), "",
           "4 KB of seeded random bytes")
    reject("random_4k_after_proto.pkl", b"\x80\x02" + bytes(rng.getrandbits(8) for _ in range(4094)), "",
           "PROTO 2 then 4 KB of seeded random bytes: the scanner walks random opcodes")

    big = 0x0FFFFFFFFFFFFFFF
    lengths = [
        ("len_binbytes8.pkl", P(4).raw(b"\x8e" + struct.pack("<Q", big) + b"abc").stop(), "BINBYTES8 declares 2**60 bytes, 4 follow"),
        ("len_binunicode8.pkl", P(4).raw(b"\x8d" + struct.pack("<Q", 1 << 32) + b"abc").stop(), "BINUNICODE8 declares 4 GiB"),
        ("len_bytearray8.pkl", P(5).raw(b"\x96" + struct.pack("<Q", 1 << 44) + b"x").stop(), "BYTEARRAY8 declares 16 TiB"),
        ("len_frame.pkl", P(4).raw(b"\x95" + struct.pack("<Q", 1 << 52) + b"N").stop(), "FRAME declares 4 PiB"),
        ("len_long4.pkl", P(2).raw(b"\x8b" + struct.pack("<i", 2 ** 31 - 1) + b"\x01").stop(), "LONG4 declares a 2 GiB integer"),
        ("len_short_binstring.pkl", P(2).raw(b"U\xffab").stop(), "SHORT_BINSTRING declares 255 bytes, 3 follow"),
        ("len_binstring.pkl", P(2).raw(b"T" + struct.pack("<i", 2 ** 31 - 1) + b"ab").stop(), "BINSTRING declares 2 GiB"),
        ("len_binbytes.pkl", P(3).raw(b"B" + struct.pack("<I", 2 ** 32 - 1) + b"ab").stop(), "BINBYTES declares 4 GiB"),
        ("len_binunicode.pkl", P(2).global_("__builtin__", "exec").raw(b"X" + struct.pack("<I", 2 ** 32 - 2) + b"ab").stop(),
         "BINUNICODE declares 4 GiB right after naming exec"),
    ]
    for name, p, why in lengths:
        reject(name, p.bytes(), "declares", why + ": refused before anything is allocated")
    EXPECTED["len_binunicode.pkl"]["danger"] = ["__builtin__.exec"]
    reject("len_binstring_negative.pkl", P(2).raw(b"T" + struct.pack("<i", -1) + b"ab").stop().bytes(), "negative",
           "BINSTRING with a negative length (-1)")

    reject("deep_marks.pkl", b"(" * DEEP_MARKS + b".", "deeper", f"{DEEP_MARKS} nested MARKs")

    p = P(2).empty_list().binput(0)
    for _ in range(DEEP_LISTS):
        p.empty_list().binput(1).append().pop().binget(1)
    p.pop().binget(0).stop()
    reject("deep_lists_memo.pkl", p.bytes(), "deeper",
           f"lists nested {DEEP_LISTS} deep on a constant stack: EMPTY_LIST BINPUT APPEND POP BINGET")

    add("memo_200k.pkl", P(4).empty_list().raw(b"\x94" * MEMO_ENTRIES).stop().bytes(), "opens",
        f"{MEMO_ENTRIES} memo entries (MEMOIZE of one list, one byte each)", payload=False)

    p = P(2).empty_list().binput(0).int(1).append()
    for i in range(1, 30):
        p.pop().empty_list().binput(i).mark()
        for _ in range(10):
            p.binget(i - 1)
        p.appends()
    p.stop()
    add("billion_laughs.pkl", p.bytes(), "opens",
        "30 levels of lists, each holding 10 references to the one below (10**29 paths): shared lists become refs",
        payload=False, max_nodes=1000)

    add("self_ref_list.pkl", P(2).empty_list().binput(0).binget(0).append().stop().bytes(), "opens",
        "a list that contains itself", payload=False, max_nodes=10)
    add("self_ref_dict.pkl", P(2).empty_dict().binput(0).str("self").binget(0).setitem().stop().bytes(), "opens",
        "a dict that contains itself", payload=False, max_nodes=10)
    add("self_ref_tuple.pkl",
        P(2).empty_list().binput(0).binget(0).tuple1().binput(1).append().pop().binget(1).stop().bytes(), "opens",
        "a tuple holding a list that holds the tuple", payload=False, max_nodes=10)

    reject("stack_underflow.pkl", P(2).int(1).reduce().stop().bytes(), "underflow",
           "REDUCE with one value on the stack")
    reject("pop_mark_without_mark.pkl", P(2).none().pop_mark().stop().bytes(), "MARK",
           "POP_MARK with no MARK")
    reject("tuple_without_mark.pkl", P(2).int(1).int(2).tuple().stop().bytes(), "MARK",
           "TUPLE with no MARK")
    reject("unknown_opcode.pkl", P(2).mark().none().raw(b"\x99").stop().bytes(), "unknown opcode",
           "opcode 0x99, which no protocol defines")


def main():
    payloads()
    zips()
    legacies()
    malformed()
    for name, e in EXPECTED.items():
        if e["expect"] != "reject" and name.endswith(".pkl"):
            check_pickle(FILES[name], name)  # the first pickle of the file
    for name, data in FILES.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(EXPECTED, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(len(d) for d in FILES.values())
    print(f"wrote {len(FILES)} files, {total} bytes")


if __name__ == "__main__":
    main()
