#!/usr/bin/python3
"""Generate odd torch.save-shaped zip archives and record what torch.load reads.

Run with the interpreter that has torch installed (torch 1.13 here):

    /usr/bin/python3 internal/loader/testdata/zipdiff/generate.py

Every archive is written next to this script as <name>.pt, and expected.json
records, per archive, what torch.load(path, map_location='cpu') returned (or
raised), the central directory names, and the value pickled in each candidate
member.

Safety: every pickle written here is pickle.dumps(<plain int or str>,
protocol=2), so loading them (torch.load with weights_only=False, done below in
a fresh subprocess per file) executes nothing.  Junk bytes start with 0xff,
which is not a pickle opcode, so the legacy (non-zip) torch.load path fails on
its first byte.
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = "internal/loader/testdata/zipdiff/generate.py"

STORED, DEFLATED = 0, 8
ALIGN = 64  # PyTorchStreamWriter aligns every record's data to 64 bytes
FLAGS = 0x0808  # bit 3 (data descriptor) | bit 11 (UTF-8), as torch writes

JUNK = (b"\xff" + b"JUNK-bytes-not-a-zip-" * 8)[:100]
assert JUNK[0] == 0xFF and b"PK" not in JUNK


def pk(value):
    """The only way a pickle is made in this file: a plain int or str, protocol 2."""
    assert type(value) in (int, str), value
    return pickle.dumps(value, protocol=2)


# ---------------------------------------------------------------------------
# A zip writer that reproduces PyTorchStreamWriter (torch 1.13, miniz) output
# byte for byte: local headers with zero crc/sizes, flags 0x0808, an "FB"
# padding extra field aligning data to 64 bytes, a 16-byte data descriptor,
# central entries without extra fields, then a zip64 end-of-central-directory
# record, a zip64 locator and the classic end-of-central-directory record.
# ---------------------------------------------------------------------------


class Entry:
    def __init__(self, name, data, method=STORED, local_name=None, crc=None):
        self.name = name  # name in the central directory
        self.data = data  # uncompressed payload
        self.method = method
        self.local_name = name if local_name is None else local_name
        self.crc_override = crc
        # filled in by write_locals
        self.offset = None
        self.crc = None
        self.csize = None


def fb_padding(cursor, name_len):
    start = cursor + 30 + name_len + 4
    pad = (-start) % ALIGN
    return b"FB" + struct.pack("<H", pad) + b"Z" * pad


def write_locals(entries, base=0):
    """Local headers + data + descriptors, starting at file offset `base`."""
    out = bytearray()
    for e in entries:
        if e.method == DEFLATED:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(e.data) + c.flush()
        else:
            payload = e.data
        e.offset = base + len(out)
        e.crc = zlib.crc32(e.data) if e.crc_override is None else e.crc_override
        e.csize = len(payload)
        lname = e.local_name.encode()
        extra = fb_padding(e.offset, len(lname))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 0, FLAGS, e.method, 0, 0,
                           0, 0, 0, len(lname), len(extra))
        out += lname + extra + payload
        out += struct.pack("<IIII", 0x08074B50, e.crc, e.csize, len(e.data))
    return bytes(out)


def central(entries, base_adjust=0):
    out = bytearray()
    for e in entries:
        name = e.name.encode()
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0, 0, FLAGS, e.method,
                           0, 0, e.crc, e.csize, len(e.data), len(name), 0, 0, 0,
                           0, 0, e.offset - base_adjust)
        out += name
    return bytes(out)


def zip64_tail(n, cd_size, cd_off, z64_off):
    rec = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 0x2D, 0, 0, n, n,
                      cd_size, cd_off)
    loc = struct.pack("<IIQI", 0x07064B50, 0, z64_off, 1)
    return rec + loc


def eocd(n, cd_size, cd_off, comment=b""):
    return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_off,
                       len(comment)) + comment


def build(entries, cd_order=None, comment=b"", zip64=True, base=0):
    """A whole torch-shaped archive.  `base` is where the archive will sit in
    the final file (offsets are written relative to the file start)."""
    body = write_locals(entries, base)
    cd_entries = entries if cd_order is None else [entries[i] for i in cd_order]
    cd = central(cd_entries)
    cd_off = base + len(body)
    out = body + cd
    if zip64:
        out += zip64_tail(len(cd_entries), len(cd), cd_off, base + len(out))
    out += eocd(len(cd_entries), len(cd), cd_off, comment)
    return out


def std(prefix="archive", value=101, version=b"3\n", storages=()):
    """Entries in torch 1.13's record order: data.pkl, data/<k>..., version."""
    es = [Entry(prefix + "/data.pkl", pk(value))]
    for k, blob in storages:
        es.append(Entry("%s/data/%s" % (prefix, k), blob))
    if version is not None:
        es.append(Entry(prefix + "/version", version))
    return es


def self_check():
    """Our writer must reproduce torch.save byte for byte."""
    import torch
    for value in (7, 101, "first"):
        buf = io.BytesIO()
        torch.save(value, buf)
        mine = build(std("archive", value))
        assert buf.getvalue() == mine, "writer differs from torch.save(%r)" % (value,)
    # Also a record list with a storage (layout only; nothing is loaded here).
    import zipfile
    buf = io.BytesIO()
    torch.save(torch.arange(4, dtype=torch.int32), buf)
    zf = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    names = zf.namelist()
    es = [Entry(n, zf.read(n)) for n in names]
    assert build(es) == buf.getvalue(), "writer differs from torch.save(tensor)"
    return names


# ---------------------------------------------------------------------------
# The variations.  Each returns (bytes, why, members, values).
# `values` maps a member name to the value pickled in it; a name listed more
# than once in the central directory gets "#<central directory index>"
# appended; things outside the central directory get a <descriptive> key.
# ---------------------------------------------------------------------------

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def simple(entries, why, cd_order=None, **kw):
    data = build(entries, cd_order=cd_order, **kw)
    cd_entries = entries if cd_order is None else [entries[i] for i in cd_order]
    return data, why, [e.name for e in cd_entries], values_of(cd_entries)


def values_of(cd_entries, prefix=""):
    names = [e.name for e in cd_entries]
    vals = {}
    for i, e in enumerate(cd_entries):
        if not e.name.lower().endswith(".pkl"):
            continue
        v = pickle.loads(e.data) if e.method in (STORED, DEFLATED) else None
        key = e.name if names.count(e.name) == 1 else "%s#%d" % (e.name, i)
        vals[prefix + key] = v
    return vals


P = "archive/"


@case
def reference():
    return simple(std(), "plain torch.save(101) layout, byte-identical to torch 1.13 output")


@case
def reference_byteorder():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + "byteorder", b"little"),
          Entry(P + "data/0", bytes(8)), Entry(P + "version", b"3\n")]
    return simple(es, "torch 2.x record order with a byteorder record (1.13 never writes one)")


# -- duplicate names ---------------------------------------------------------

@case
def dup_data_pkl():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + "data.pkl", pk(102)),
          Entry(P + "version", b"3\n")]
    return simple(es, "two central directory entries named archive/data.pkl, adjacent")


@case
def dup_data_pkl_after_version():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + "version", b"3\n"),
          Entry(P + "data.pkl", pk(102))]
    return simple(es, "archive/data.pkl twice, the second after version")


@case
def dup_data_pkl_many():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + "data/0", bytes(4)),
          Entry(P + "data/1", bytes(4)), Entry(P + "data.pkl", pk(102)),
          Entry(P + "version", b"3\n")]
    return simple(es, "archive/data.pkl twice among 5 records (storages between them)")


@case
def dup_data_pkl_three():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + "data.pkl", pk(102)),
          Entry(P + "data.pkl", pk(103)), Entry(P + "version", b"3\n")]
    return simple(es, "archive/data.pkl three times")


# -- case variants -----------------------------------------------------------

def case_pair(first, second, why):
    es = [Entry(P + first, pk(101)), Entry(P + second, pk(102)),
          Entry(P + "version", b"3\n")]
    return simple(es, why)


@case
def case_upper_after():
    return case_pair("data.pkl", "DATA.pkl", "archive/data.pkl then archive/DATA.pkl")


@case
def case_upper_before():
    return case_pair("DATA.pkl", "data.pkl", "archive/DATA.pkl then archive/data.pkl")


@case
def case_title_after():
    return case_pair("data.pkl", "Data.pkl", "archive/data.pkl then archive/Data.pkl")


@case
def case_only_upper():
    es = [Entry(P + "DATA.PKL", pk(101)), Entry(P + "VERSION", b"3\n")]
    return simple(es, "only archive/DATA.PKL and archive/VERSION, no lowercase names at all")


@case
def case_prefix():
    es = [Entry("archive/version", b"3\n"), Entry("ARCHIVE/data.pkl", pk(101))]
    return simple(es, "first entry archive/version, data.pkl only under ARCHIVE/ (folder case differs)")


# -- folders -----------------------------------------------------------------

@case
def two_folders():
    es = std("a", 101) + std("b", 102)
    return simple(es, "complete a/ records first, then complete b/ records")


@case
def first_entry_version():
    es = [Entry("a/version", b"3\n"), Entry("b/data.pkl", pk(101)), Entry("b/version", b"3\n")]
    return simple(es, "first entry a/version; data.pkl only as b/data.pkl")


@case
def root_data_pkl():
    es = [Entry("data.pkl", pk(101)), Entry("version", b"3\n")]
    return simple(es, "data.pkl and version at the zip root, no folder")


@case
def root_then_folder():
    es = [Entry("data.pkl", pk(101))] + std("archive", 102)
    return simple(es, "root data.pkl first, then a complete archive/ set")


@case
def folder_then_root():
    es = std("archive", 101) + [Entry("data.pkl", pk(102))]
    return simple(es, "complete archive/ set, then a root data.pkl")


@case
def nested_only():
    es = [Entry(P + "sub/data.pkl", pk(101)), Entry(P + "version", b"3\n")]
    return simple(es, "data.pkl only as archive/sub/data.pkl (one level deeper)")


@case
def nested_and_plain():
    es = [Entry(P + "sub/data.pkl", pk(101)), Entry(P + "data.pkl", pk(102)),
          Entry(P + "version", b"3\n")]
    return simple(es, "archive/sub/data.pkl first, then archive/data.pkl")


@case
def dir_entry_first():
    es = [Entry(P, b"")] + std("archive", 101)
    return simple(es, "an explicit archive/ directory entry first")


# -- compression -------------------------------------------------------------

@case
def deflated():
    es = [Entry(P + "data.pkl", pk(101), method=DEFLATED), Entry(P + "version", b"3\n")]
    return simple(es, "data.pkl stored with method 8 (deflate) instead of 0")


@case
def deflated_all():
    es = [Entry(P + "data.pkl", pk("deflated-" * 4), method=DEFLATED),
          Entry(P + "version", b"3\n", method=DEFLATED)]
    return simple(es, "data.pkl and version both deflated")


@case
def bad_crc():
    es = [Entry(P + "data.pkl", pk(101), crc=0xDEADBEEF), Entry(P + "version", b"3\n")]
    return simple(es, "data.pkl CRC-32 wrong in descriptor and central directory")


# -- version record ----------------------------------------------------------

def with_version(v, why):
    return simple(std(version=v), why)


@case
def version_missing():
    return simple(std(version=None), "no version record")


@case
def version_0():
    return with_version(b"0\n", "version record '0\\n'")


@case
def version_2():
    return with_version(b"2\n", "version record '2\\n'")


@case
def version_3_no_newline():
    return with_version(b"3", "version record '3' without newline")


@case
def version_10():
    return with_version(b"10\n", "version record '10\\n'")


@case
def version_11():
    return with_version(b"11\n", "version record '11\\n'")


@case
def version_3_trailing():
    return with_version(b"3 junk\n", "version record '3 junk\\n' (a number, then text)")


@case
def version_junk():
    return with_version(b"junk\n", "version record 'junk\\n'")


@case
def version_dot_data():
    es = [Entry(P + "data.pkl", pk(101)), Entry(P + ".data/version", b"3\n")]
    return simple(es, "version only as archive/.data/version (TorchScript spelling)")


@case
def version_both():
    es = std() + [Entry(P + ".data/version", b"99\n")]
    return simple(es, "archive/version '3\\n' and archive/.data/version '99\\n'")


# -- bytes around the zip ----------------------------------------------------

def with_extra(before, after, why, extra_values, rebase=False):
    es = std()
    z = build(es, base=len(before) if rebase else 0)
    vals = values_of(es)
    vals.update(extra_values)
    return before + z + after, why, [e.name for e in es], vals


@case
def prepend_junk():
    return with_extra(JUNK, b"", "100 junk bytes (first byte 0xff) before the zip", {})


@case
def prepend_pickle():
    return with_extra(pk(102), b"", "a complete pickle of 102 before the zip",
                      {"<prepended pickle>": 102})


@case
def prepend_pk_magic():
    return with_extra(b"PK\x03\x04" + JUNK[4:], b"",
                      "100 bytes starting with PK\\x03\\x04 before the zip, offsets not adjusted", {})


@case
def prepend_pk_magic_rebased():
    return with_extra(b"PK\x03\x04" + JUNK[4:], b"",
                      "100 bytes starting with PK\\x03\\x04 before the zip, offsets adjusted to the file",
                      {}, rebase=True)


@case
def append_junk():
    return with_extra(b"", JUNK, "100 junk bytes after the end-of-central-directory record", {})


def concat(second_value, why):
    es1, es2 = std(value=101), std(value=second_value)
    z1, z2 = build(es1), build(es2)
    vals = values_of(es1)
    vals.update(values_of(es2, prefix="<second zip> "))
    return z1 + z2, why, [e.name for e in es1], vals


@case
def concat_same_size():
    return concat(102, "two torch zips concatenated, same layout (second holds 102), "
                       "second zip's offsets relative to its own start")


@case
def concat_diff_size():
    return concat("second-zip-value-" * 12, "two torch zips concatenated, second has a data.pkl "
                                            "long enough to shift its later records")


# -- local header vs central directory ----------------------------------------

@case
def local_name_mismatch():
    es = [Entry(P + "data.pkl", pk(101), local_name=P + "xxxx.pkl"), Entry(P + "version", b"3\n")]
    return simple(es, "central directory says archive/data.pkl, its local header says archive/xxxx.pkl")


@case
def local_name_mismatch_reverse():
    es = [Entry(P + "xxxx.pkl", pk(101), local_name=P + "data.pkl"), Entry(P + "version", b"3\n")]
    return simple(es, "central directory says archive/xxxx.pkl, its local header says archive/data.pkl")


# -- end records -------------------------------------------------------------

@case
def comment():
    return simple(std(), "reference with a 17-byte zip comment", comment=b"hello zip comment")


@case
def comment_fake_eocd():
    # Real records: data.pkl(101), version, plus a second data.pkl(102) that only
    # a hidden central directory lists.  The real EOCD (with zip64 records)
    # points at the real central directory; its comment holds a classic EOCD
    # pointing at the hidden central directory.
    real = std(value=101)
    hidden_pkl = Entry(P + "data.pkl", pk(102))
    body = write_locals(real + [hidden_pkl])
    hidden_cd_entries = [hidden_pkl, real[1]]
    hidden_cd = central(hidden_cd_entries)
    hidden_off = len(body)
    real_cd = central(real)
    real_off = hidden_off + len(hidden_cd)
    out = body + hidden_cd + real_cd
    fake = eocd(len(hidden_cd_entries), len(hidden_cd), hidden_off)
    out += zip64_tail(len(real), len(real_cd), real_off, len(out))
    out += eocd(len(real), len(real_cd), real_off, comment=fake)
    vals = values_of(real)
    vals["<hidden central directory> archive/data.pkl"] = 102
    return out, ("zip comment is itself a classic EOCD pointing at a second, hidden central "
                 "directory whose data.pkl holds 102"), [e.name for e in real], vals


@case
def no_zip64_eocd():
    return simple(std(), "torch layout but only the classic EOCD (no zip64 record or locator)",
                  zip64=False)


@case
def zip64_eocd_disagree():
    # Two central directories; the classic EOCD points at CD1 (data.pkl=101),
    # the zip64 EOCD record points at CD2 (data.pkl=102).
    es = std(value=101)
    other = Entry(P + "data.pkl", pk(102))
    body = write_locals(es + [other])
    cd1 = central(es)
    cd2_entries = [other, es[1]]
    cd2 = central(cd2_entries)
    off1 = len(body)
    off2 = off1 + len(cd1)
    out = body + cd1 + cd2
    out += zip64_tail(len(cd2_entries), len(cd2), off2, len(out))
    out += eocd(len(es), len(cd1), off1)
    vals = values_of(es)
    vals["<zip64 central directory> archive/data.pkl"] = 102
    return out, ("classic EOCD points at a central directory with data.pkl=101, the zip64 EOCD "
                 "record at another with data.pkl=102"), [e.name for e in es], vals


def with_zipfile(force_zip64, why):
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in ((P + "data.pkl", pk(101)), (P + "version", b"3\n")):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=force_zip64 and name.endswith(".pkl")) as w:
                w.write(data)
    return buf.getvalue(), why, [P + "data.pkl", P + "version"], {P + "data.pkl": 101}


@case
def zipfile_plain():
    return with_zipfile(False, "written by Python zipfile: no 64-byte alignment, no descriptor, "
                               "classic EOCD only")


@case
def zipfile_zip64():
    return with_zipfile(True, "written by Python zipfile with force_zip64=True on data.pkl "
                              "(zip64 extra field in its local header)")


# ---------------------------------------------------------------------------

RUNNER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
path = sys.argv[1]
try:
    v = torch.load(path, map_location="cpu", weights_only=False)
    if type(v) in (int, str):
        out = {"torch_load": v, "error": None}
    else:
        out = {"torch_load": None, "error": "UnexpectedResult: " + repr(v)[:200]}
except Exception as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    out = {"torch_load": None, "error": type(e).__name__ + ": " + msg[:200]}
print("ZIPDIFF-RESULT " + json.dumps(out))
"""


def run_torch_load(path):
    p = subprocess.run([sys.executable, "-c", RUNNER, path], capture_output=True,
                       text=True, timeout=120, cwd=HERE)
    for line in p.stdout.splitlines():
        if line.startswith("ZIPDIFF-RESULT "):
            return json.loads(line[len("ZIPDIFF-RESULT "):])
    return {"torch_load": None, "error": "Crash: exit status %d" % p.returncode}


def main():
    import torch
    self_check()
    for f in os.listdir(HERE):
        if f.endswith(".pt"):
            os.remove(os.path.join(HERE, f))
    expected = {"_about": {
        "generator": GENERATOR,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "note": ("values keys: a name listed more than once gets #<central directory index>; "
                 "<...> keys are pickles outside the central directory. read_member is the "
                 "values key whose value equals torch_load (null if none or ambiguous)."),
    }}
    for fn in CASES:
        data, why, members, values = fn()
        name = fn.__name__ + ".pt"
        assert len(data) < 8192, (name, len(data))
        vs = list(values.values())
        assert len(vs) == len(set(map(repr, vs))), (name, "values not distinct")
        path = os.path.join(HERE, name)
        with open(path, "wb") as f:
            f.write(data)
        res = run_torch_load(path)
        hits = [k for k, v in values.items()
                if res["torch_load"] is not None and type(v) is type(res["torch_load"])
                and v == res["torch_load"]]
        expected[name] = {
            "why": why,
            "torch_load": res["torch_load"],
            "error": res["error"],
            "read_member": hits[0] if len(hits) == 1 else None,
            "members": members,
            "values": values,
        }
        print("%-32s %s" % (name, res["error"] or "-> %r (%s)" % (res["torch_load"], expected[name]["read_member"])))
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()
