#!/usr/bin/python3
"""Generate the tardiff fixtures: odd tar archives in torch's oldest
checkpoint format, and expected.json saying what torch.load (1.13) makes of
each one.

Run with the interpreter that has torch 1.13:

    /usr/bin/python3 internal/loader/testdata/tardiff/generate.py

Standard library + torch only.  Output is deterministic: every header field
(mtime, uid, gid, uname, gname, mode) is fixed and the archives are written
block by block with struct, not with tarfile's writer.

torch 1.13 reads this format in torch/serialization.py, _legacy_load ->
legacy_load:
    tarfile.open(fileobj=f, mode='r:', format=tarfile.PAX_FORMAT)
    tar.extract('storages', path=tmpdir)   # to disk, then pickle.load x2
    tar.extract('tensors', path=tmpdir)    # to disk, then pickle.load
    tar.extractfile('pickle')              # unpickled in memory -> result
and if anything raises tarfile.TarError it seeks to 0 and parses the whole
file as the non-tar legacy stream (magic, protocol, sys_info, object, keys).

SAFETY: every pickle written below is pickle.dumps(<int|str|[]>, 2) or a
hand-written opcode string of the same kind (ints, an empty dict, an empty
list).  Before any torch.load the generator also scans every byte range torch
could unpickle (each member's data as tarfile sees it, and the file from
offset 0 for the non-tar fallback) with pickletools and refuses to go on if an
opcode that imports, calls or builds objects appears.  The child process also
installs an audit hook that aborts on any pickle.find_class.
"""

import io
import json
import os
import pickle
import pickletools
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 512
MTIME = 1262304000  # 2010-01-01T00:00:00Z
MAGIC_NUMBER = 0x1950a86a20f9469cfc6c  # torch/serialization.py
PROTOCOL_VERSION = 1001


def P(v):
    """A harmless protocol-2 pickle of a plain int or str."""
    assert type(v) in (int, str)
    return pickle.dumps(v, protocol=2)


STORAGES = P(0) + pickle.dumps([], protocol=2)  # num_storages, storage_views
TENSORS = P(0)                                   # num_tensors


# ---------------------------------------------------------------- tar writer

def _field(value, width):
    if isinstance(value, str):
        value = value.encode('utf-8', 'surrogateescape')
    assert len(value) <= width, (value, width)
    return value + b'\0' * (width - len(value))


def _octal(n, width):
    return ('%0*o' % (width - 1, n)).encode('ascii') + b'\0'


def header(name, size, typeflag=b'0', linkname='', prefix='', mode=0o644,
           uname='root', gname='root', chksum='ok', size_field=None):
    """One 512-byte ustar header.  chksum: 'ok' (unsigned sum), 'signed'
    (signed-char sum), 'bad' (unsigned sum + 1).  size_field: raw 12 bytes
    to put in the size field instead of the octal of size."""
    if size_field is None:
        size_field = _octal(size, 12)
    assert len(size_field) == 12
    parts = [
        _field(name, 100),
        _octal(mode, 8),
        _octal(0, 8),          # uid
        _octal(0, 8),          # gid
        size_field,
        _octal(MTIME, 12),
        b' ' * 8,              # chksum placeholder
        typeflag,
        _field(linkname, 100),
        b'ustar\x0000',
        _field(uname, 32),
        _field(gname, 32),
        _octal(0, 8),          # devmajor
        _octal(0, 8),          # devminor
        _field(prefix, 155),
        b'\0' * 12,
    ]
    buf = bytearray(b''.join(parts))
    assert len(buf) == BLOCK
    if chksum == 'signed':
        s = sum(struct.unpack('512b', bytes(buf)))
        assert s != sum(buf), 'signed checksum needs bytes >= 0x80'
    else:
        s = sum(buf)
        if chksum == 'bad':
            s += 1
    buf[148:156] = ('%06o' % s).encode('ascii') + b'\0 '
    return bytes(buf)


def pad(data):
    return data + b'\0' * (-len(data) % BLOCK)


def reg(name, data, **kw):
    """Header + data for a regular file (or whatever typeflag says)."""
    return header(name, len(data), **kw) + pad(data)


def hardlink(name, target, **kw):
    return header(name, 0, typeflag=b'1', linkname=target, **kw)


def symlink(name, target, **kw):
    return header(name, 0, typeflag=b'2', linkname=target, mode=0o777, **kw)


def directory(name, **kw):
    return header(name, 0, typeflag=b'5', mode=0o755, **kw)


def gnu_longname(longname):
    data = longname.encode('utf-8') + b'\0'
    return header('././@LongLink', len(data), typeflag=b'L') + pad(data)


def pax(records, typeflag=b'x', name='PaxHeaders/entry'):
    payload = b''
    for k, v in records:
        body = (' %s=%s\n' % (k, v)).encode('utf-8')
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        payload += str(n).encode() + body
    return header(name, len(payload), typeflag=typeflag) + pad(payload)


EOA = b'\0' * (2 * BLOCK)  # end-of-archive marker


def std(*middle, value=101):
    """storages, tensors, then the given members (default: one pickle)."""
    if not middle:
        middle = (reg('pickle', P(value)),)
    return reg('storages', STORAGES) + reg('tensors', TENSORS) + b''.join(middle)


# ---------------------------------------------------------------- fixtures

def raw_legacy_stream(value):
    """The non-tar legacy torch.save stream for a plain int, without any NUL
    byte (so it fits in a tar name field): magic, protocol, sys_info {},
    the object, storage keys []."""
    s = (pickle.dumps(MAGIC_NUMBER, 2) + pickle.dumps(PROTOCOL_VERSION, 2) +
         b'\x80\x02}.' + P(value) + b'\x80\x02].')
    assert b'\0' not in s and len(s) < 100
    return s


FIXTURES = []  # (file, why, bytes, extra value labels)


def fx(name, why, data, hidden=None):
    FIXTURES.append((name + '.tar', why, data, hidden or {}))


def build():
    fx('plain', 'reference: storages, tensors, pickle (101), end-of-archive blocks',
       std() + EOA)
    fx('dup2_pickle', "two regular members named 'pickle' (101, 102)",
       std(reg('pickle', P(101)), reg('pickle', P(102))) + EOA)
    fx('dup3_pickle', "three regular members named 'pickle' (101, 102, 103)",
       std(reg('pickle', P(101)), reg('pickle', P(102)), reg('pickle', P(103))) + EOA)
    fx('dup_storages_last_bad', "valid 'storages', then a second 'storages' holding only the count pickle (no storage_views pickle); pickle 101",
       reg('storages', STORAGES) + reg('storages', P(0)) + reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA)
    fx('dotslash_after', "'pickle' 101 then './pickle' 102",
       std(reg('pickle', P(101)), reg('./pickle', P(102))) + EOA)
    fx('dotslash_before', "'./pickle' 101 then 'pickle' 102",
       std(reg('./pickle', P(101)), reg('pickle', P(102))) + EOA)
    fx('dotslash_only', "only './pickle' 101, no 'pickle'",
       std(reg('./pickle', P(101))) + EOA)
    fx('dir_after_file', "'pickle' file 101 then a directory 'pickle/' (typeflag 5)",
       std(reg('pickle', P(101)), directory('pickle/')) + EOA)
    fx('v7_dir_slash', "'pickle' 101 then an old-style AREGTYPE (NUL typeflag) empty member named 'pickle/', which tarfile turns into a directory",
       std(reg('pickle', P(101)), header('pickle/', 0, typeflag=b'\0')) + EOA)
    fx('regular_trailing_slash', "'pickle' 101 then a REGTYPE ('0') member named 'pickle/' holding 102",
       std(reg('pickle', P(101)), reg('pickle/', P(102))) + EOA)
    fx('case_upper_after', "'pickle' 101 then 'PICKLE' 102",
       std(reg('pickle', P(101)), reg('PICKLE', P(102))) + EOA)
    fx('case_only_upper', "only 'PICKLE' 101",
       std(reg('PICKLE', P(101))) + EOA)
    fx('hardlink', "'pickle' 101, 'other' 102, then 'pickle' as a hard link to 'other'",
       std(reg('pickle', P(101)), reg('other', P(102)), hardlink('pickle', 'other')) + EOA)
    fx('hardlink_forward', "'pickle' 101, then 'pickle' hard link to 'later', then 'later' 102 (hard links only look backwards)",
       std(reg('pickle', P(101)), hardlink('pickle', 'later'), reg('later', P(102))) + EOA)
    fx('symlink', "'pickle' 101, 'target' 102, then 'pickle' as a symlink to 'target'",
       std(reg('pickle', P(101)), reg('target', P(102)), symlink('pickle', 'target')) + EOA)
    fx('symlink_forward', "'pickle' 101, 'pickle' symlink to 'target', then 'target' 102 (symlinks search the whole archive)",
       std(reg('pickle', P(101)), symlink('pickle', 'target'), reg('target', P(102))) + EOA)
    fx('symlink_normalised_target', "'pickle' 101, 'target' 102, 'pickle' symlink to './x/../target' (link targets are normpath'd, member names are not)",
       std(reg('pickle', P(101)), reg('target', P(102)), symlink('pickle', './x/../target')) + EOA)
    fx('symlink_loop', "'pickle' 101, then 'pickle' symlink to 'pickle' (resolves to itself)",
       std(reg('pickle', P(101)), symlink('pickle', 'pickle')) + EOA)
    fx('symlink_storages', "'storages.real' (valid content), 'storages' symlink to it, tensors, pickle 101; extract() writes a dangling symlink to disk",
       reg('storages.real', STORAGES) + symlink('storages', 'storages.real') +
       reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA)
    fx('hardlink_storages', "'storages.real' (valid content), 'storages' hard link to it, tensors, pickle 101",
       reg('storages.real', STORAGES) + hardlink('storages', 'storages.real') +
       reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA)
    fx('dir_storages', "'storages' is a directory; tensors, pickle 101",
       directory('storages/') + reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA)
    long_name = 'd' * 110 + '/pickle'
    fx('gnu_longname', "'pickle' 101, then a GNU long-name (117 chars, ends '/pickle') member whose ustar name field says 'pickle' (102)",
       std(reg('pickle', P(101)), gnu_longname(long_name), reg('pickle', P(102))) + EOA)
    fx('gnu_longname_rename', "'pickle' 101, then GNU long-name record 'pickle' on a member whose ustar name is 'decoy' (102)",
       std(reg('pickle', P(101)), gnu_longname('pickle'), reg('decoy', P(102))) + EOA)
    fx('pax_path_rename', "'pickle' 101, then a PAX 'x' header path=pickle on a member named 'decoy' (102)",
       std(reg('pickle', P(101)), pax([('path', 'pickle')]), reg('decoy', P(102))) + EOA)
    fx('pax_path_away', "'pickle' 101, then a PAX 'x' header path=not-pickle on a member named 'pickle' (102)",
       std(reg('pickle', P(101)), pax([('path', 'not-pickle')]), reg('pickle', P(102))) + EOA)
    fx('pax_path_trailing_slash', "'pickle' 101, then PAX path='pickle/' on regular member 'decoy' (102); tarfile strips the slash",
       std(reg('pickle', P(101)), pax([('path', 'pickle/')]), reg('decoy', P(102))) + EOA)
    fx('pax_global_path', "storages, tensors, then a PAX global ('g') header path=pickle, then members 'a' 101 and 'b' 102 (both become 'pickle')",
       std(pax([('path', 'pickle')], typeflag=b'g', name='GlobalHead'),
           reg('a', P(101)), reg('b', P(102))) + EOA)
    fx('pax_size', "'pickle' 101, then PAX size=5 on a 'pickle' whose ustar size field is 0 (data 102)",
       std(reg('pickle', P(101)), pax([('size', str(len(P(102))))]),
           header('pickle', 0) + pad(P(102))) + EOA)
    fx('badsum_middle', "'pickle' 101, a 'pickle' 102 with a bad header checksum, then 'pickle' 103",
       std(reg('pickle', P(101)), reg('pickle', P(102), chksum='bad'), reg('pickle', P(103))) + EOA,
       hidden={'<bad-checksum header @3072>/pickle': 102, '<after bad header @4096>/pickle': 103})
    fx('badsum_last', "'pickle' 101, then a 'pickle' 102 with a bad header checksum as the last member",
       std(reg('pickle', P(101)), reg('pickle', P(102), chksum='bad')) + EOA,
       hidden={'<bad-checksum header @3072>/pickle': 102})
    fx('badsum_first', "first header ('storages') has a bad checksum, so tarfile.open fails and torch uses the non-tar parser; rest is valid (pickle 101)",
       reg('storages', STORAGES, chksum='bad') + reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA,
       hidden={'<pickle behind bad first header>': 101})
    fx('signed_checksum', "valid archive (pickle 101) whose 'pickle' header uses a signed-char checksum (uname has bytes >= 0x80)",
       std(reg('pickle', P(101), uname='\udcff\udcfe', chksum='signed')) + EOA)
    fx('base256_size', "'pickle' 101 whose size field is GNU base-256 (0x80 prefix) instead of octal",
       std(reg('pickle', P(101), size_field=b'\x80' + struct.pack('>Q', len(P(101))).rjust(11, b'\0'))) + EOA)
    fx('concat', "archive 1 (storages, tensors, pickle 101, end blocks) followed by archive 2 (pickle 102, end blocks)",
       std() + EOA + reg('pickle', P(102)) + EOA,
       hidden={'<second archive>/pickle': 102})
    fx('zeros_middle', "'pickle' 101, one zero block, 'pickle' 102, end blocks",
       std(reg('pickle', P(101)), b'\0' * BLOCK, reg('pickle', P(102))) + EOA,
       hidden={'<after zero block>/pickle': 102})
    fx('no_end_marker', "plain archive (pickle 101) with no end-of-archive zero blocks",
       std())
    fx('order_reversed', "'pickle' 101 first, then 'tensors', then 'storages'",
       reg('pickle', P(101)) + reg('tensors', TENSORS) + reg('storages', STORAGES) + EOA)
    fx('missing_storages', "no 'storages' member (tensors, pickle 101)",
       reg('tensors', TENSORS) + reg('pickle', P(101)) + EOA)
    fx('missing_tensors', "no 'tensors' member (storages, pickle 101)",
       reg('storages', STORAGES) + reg('pickle', P(101)) + EOA)
    fx('missing_pickle', "storages and tensors only, no 'pickle'",
       std(b'') + EOA)
    fx('unknown_type_last', "'pickle' 101, then a 'pickle' 102 with unknown typeflag 'Z' (tarfile treats it as a regular file)",
       std(reg('pickle', P(101)), reg('pickle', P(102), typeflag=b'Z')) + EOA)
    fx('nul_in_name', "'pickle' 101, then a member whose name field is 'pickle\\0decoy' (102)",
       std(reg('pickle', P(101)), reg('pickle\0decoy', P(102))) + EOA)
    fx('ustar_prefix', "'pickle' 101, then a member with name field 'pickle' and ustar prefix 'sub' (102)",
       std(reg('pickle', P(101)), reg('pickle', P(102), prefix='sub')) + EOA)
    fx('size_overlap', "'pickle' 101, then 'pad' whose size (1024) swallows the following 'pickle' 102 header+data",
       std(reg('pickle', P(101)), header('pad', 1024), reg('pickle', P(102))) + EOA,
       hidden={'<inside pad data>/pickle': 102})
    fx('empty_pickle_last', "'pickle' 101, then an empty 'pickle' (size 0)",
       std(reg('pickle', P(101)), reg('pickle', b'')) + EOA)
    short = P(101)
    fx('truncated_pickle', "storages, tensors, then 'pickle' whose size field says 4096 but the file ends after its 5 data bytes (ReadError, torch falls back to the non-tar parser)",
       std(header('pickle', 4096) + short))
    fx('truncated_storages', "'storages' size field says 4096, data cut short and file ends there (ReadError, non-tar fallback)",
       header('storages', 4096) + STORAGES)
    # Polyglot: a tar archive that reads fine until a dangling GNU long-name
    # record at the end raises ReadError.  torch then seeks to 0 and parses the
    # file as the non-tar legacy stream, which here sits in the first header's
    # name field.
    fx('fallback_polyglot', "first member's name field is a raw legacy torch.save stream of 199; valid storages, tensors, pickle 101 follow; ends in a GNU long-name record with no member (ReadError)",
       reg(raw_legacy_stream(199).decode('utf-8', 'surrogateescape'), b'') +
       std() + gnu_longname('x') + EOA,
       hidden={'<raw legacy stream in first header name field @0>': 199})


# ---------------------------------------------------------------- safety scan

UNSAFE_OPS = {'GLOBAL', 'STACK_GLOBAL', 'INST', 'OBJ', 'REDUCE', 'BUILD',
              'NEWOBJ', 'NEWOBJ_EX', 'EXT1', 'EXT2', 'EXT4', 'PERSID',
              'BINPERSID'}


def check_harmless(data, what):
    """Walk consecutive pickles in data, as successive pickle.load calls
    would, each with pickletools.dis (which simulates the stack and stops
    where the unpickler would fail).  Refuse any importing/calling opcode
    among those reached, including the one it fails on."""
    pos = 0
    for _ in range(16):
        out = io.StringIO()
        ok = True
        try:
            pickletools.dis(data[pos:], out=out)
        except Exception:
            ok = False
        for line in out.getvalue().splitlines():
            m = re.match(r'^\s*\d+: \S+\s+([A-Z_0-9]+)', line)
            if m and m.group(1) in UNSAFE_OPS:
                raise SystemExit('UNSAFE opcode %s in %s near %d: %s' % (m.group(1), what, pos, line))
        if not ok:
            return
        end = None
        for op, arg, p in pickletools.genops(data[pos:]):
            if op.name == 'STOP':
                end = pos + p + 1
        if end is None:
            return
        pos = end


TYPES = {b'0': 'reg', b'\0': 'areg', b'1': 'hardlink', b'2': 'symlink',
         b'5': 'dir', b'7': 'cont'}


def listing(data):
    """Members as tarfile (mode 'r:') sees them, in order; plus the error
    that stopped the listing, if any."""
    members, err = [], None
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode='r:')
        while tf.next() is not None:
            pass
    except tarfile.TarError as e:
        err = '%s: %s' % (type(e).__name__, e)
        try:
            tf
        except NameError:
            return members, err
    for m in tf.members:
        try:
            m.name.encode('utf-8')
            d = {'name': m.name}
        except UnicodeEncodeError:  # raw bytes (surrogateescape): give hex
            d = {'name': None, 'name_hex': m.name.encode('utf-8', 'surrogateescape').hex()}
        d.update({'type': TYPES.get(m.type, 'unknown(%s)' % m.type.decode('latin-1')),
             'offset': m.offset, 'size': m.size})
        if m.islnk() or m.issym():
            d['link'] = m.linkname
        d['_data'] = data[m.offset_data:m.offset_data + m.size] if (m.isreg() or m.type not in tarfile.SUPPORTED_TYPES) else None
        members.append(d)
    return members, err


# ---------------------------------------------------------------- torch.load

CHILD = r'''
import json, sys
import torch
def _guard(event, args):
    if event == 'pickle.find_class':
        raise RuntimeError('GUARD: pickle.find_class %r' % (args,))
sys.addaudithook(_guard)
try:
    v = torch.load(sys.argv[1], map_location='cpu', weights_only=False)
    out = {'value': v if type(v) in (int, str) else repr(v), 'error': None}
except BaseException as e:
    out = {'value': None, 'error': [type(e).__name__, str(e)]}
print(json.dumps(out))
'''


def torch_load(path, scratch):
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'}
    env['TMPDIR'] = scratch
    env['PYTHONHASHSEED'] = '0'
    r = subprocess.run([sys.executable, '-c', CHILD, path], cwd=scratch, env=env,
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not r.stdout.strip():
        raise SystemExit('child failed for %s: %s' % (path, r.stderr[-2000:]))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out['error']:
        etype, msg = out['error']
        if msg.startswith('GUARD'):
            raise SystemExit('guard tripped for %s: %s' % (path, msg))
        msg = msg.replace(scratch, '$TMPDIR')
        msg = re.sub(r'\$TMPDIR/tmp[A-Za-z0-9_]+', '$TMPDIR/<mkdtemp>', msg)
        out['error'] = ('%s: %s' % (etype, msg[:200])).rstrip()
    return out


def dump(expected):
    """JSON with one line per member, so the file stays small and diffable."""
    parts = []
    for k, v in expected.items():
        if k == '_about':
            body = json.dumps(v, indent=2, ensure_ascii=True).replace('\n', '\n  ')
        else:
            fields = []
            for fk, fv in v.items():
                if fk == 'members':
                    inner = ',\n'.join('      ' + json.dumps(m, ensure_ascii=True) for m in fv)
                    fields.append('    "members": [\n%s\n    ]' % inner if fv else '    "members": []')
                else:
                    fields.append('    %s: %s' % (json.dumps(fk), json.dumps(fv, ensure_ascii=True)))
            body = '{\n' + ',\n'.join(fields) + '\n  }'
        parts.append('  %s: %s' % (json.dumps(k), body))
    return '{\n' + ',\n'.join(parts) + '\n}\n'


def main():
    import torch
    assert torch.serialization.MAGIC_NUMBER == MAGIC_NUMBER
    assert torch.serialization.PROTOCOL_VERSION == PROTOCOL_VERSION
    assert sys.executable == '/usr/bin/python3' or os.environ.get('TARDIFF_ANY_PYTHON'), sys.executable

    build()
    names = [f for f, *_ in FIXTURES]
    assert len(set(names)) == len(names)

    # Remove stale fixtures from earlier runs.
    for f in os.listdir(HERE):
        if f.endswith('.tar') and f not in names:
            os.remove(os.path.join(HERE, f))

    expected = {'_about': {
        'generator': 'internal/loader/testdata/tardiff/generate.py',
        'torch': torch.__version__,
        'python': sys.version.split()[0],
        'note': ("members: tarfile's view (mode 'r:'); offset = offset of the member's first "
                 "header incl. its GNU/PAX 'x' extension headers (PAX 'g' global headers are not "
                 "members); name_hex when the name is not UTF-8; tar_error: what stopped tarfile's listing. values: every "
                 "candidate pickle value, keyed by member name (#<index> if the name repeats) "
                 "or <...> for bytes tarfile does not list. read_member: the values key equal "
                 "to torch_load (null if none)."),
    }}

    scratch = tempfile.mkdtemp(prefix='tardiff-')
    try:
        for fname, why, data, hidden in FIXTURES:
            assert len(data) < 16 * 1024, fname
            path = os.path.join(HERE, fname)
            with open(path, 'wb') as fh:
                fh.write(data)

            members, tar_err = listing(data)
            # Safety: everything torch could unpickle.
            check_harmless(data, fname + '@0')
            for m in members:
                if m['_data'] is not None:
                    check_harmless(m['_data'], '%s:%s' % (fname, m['name']))

            counts = {}
            for m in members:
                counts[m['name']] = counts.get(m['name'], 0) + 1
            values = {}
            for i, m in enumerate(members):
                d = m.pop('_data')
                if d is None or m['name'] in ('storages', 'tensors', 'storages.real'):
                    continue
                try:
                    v = pickle.loads(d)  # checked harmless above
                except Exception:
                    continue
                if type(v) in (int, str) and v != 0:
                    nm = m['name'] if m['name'] is not None else '<hex:%s>' % m['name_hex']
                    key = nm if counts[m['name']] == 1 else '%s#%d' % (nm, i)
                    values[key] = v
            values.update(hidden)

            out = torch_load(path, scratch)
            read = None
            if out['error'] is None:
                hits = [k for k, v in values.items() if v == out['value']]
                read = hits[0] if len(hits) == 1 else None
            entry = {
                'why': why,
                'torch_load': out['value'],
                'error': out['error'],
                'read_member': read,
                'members': members,
                'values': values,
            }
            if tar_err:
                entry['tar_error'] = tar_err
            assert (entry['torch_load'] is None) != (entry['error'] is None), fname
            expected[fname] = entry
            print('%-36s %s' % (fname, out['error'] or 'value %r (%s)' % (out['value'], read)))
    finally:
        shutil.rmtree(scratch)

    with open(os.path.join(HERE, 'expected.json'), 'w') as fh:
        fh.write(dump(expected))


if __name__ == '__main__':
    main()
