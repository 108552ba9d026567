package loader

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/pyrepr"
	"github.com/nlpodyssey/gopickle/types"
)

// The .npy format as numpy.load reads it (numpy/lib/format.py read_array): "\x93NUMPY", a
// major and minor version byte ((1,0), (2,0) or (3,0); others are refused), the header
// length (u16 for 1.0, u32 after), the header: a Python dict literal {'descr', 'fortran_order',
// 'shape'} and nothing else (latin-1 text, UTF-8 from 3.0), then the data. A dtype with
// Python objects is a pickle at the data offset, read with pickle.load (allow_pickle=True);
// any other is prod(shape) * itemsize raw bytes in C or Fortran order. Bytes after the data
// are ignored by numpy.

const npyMagic = "\x93NUMPY"

// npyMaxHeader is numpy's own cap on the header's length (format._MAX_HEADER_SIZE, numpy >=
// 1.24), which np.load applies unless allow_pickle is set.
const npyMaxHeader = 10000

// npyArray is what reading one .npy gives: the array (lazy), or the value its pickle holds.
func (op *opener) readNPY(src io.ReaderAt, base, size int64, where string) (any, error) {
	fail := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if where != "" {
			msg = where + ": " + msg
		}
		return &Error{Msg: msg, Offset: -1}
	}
	var pre [12]byte
	n, _ := src.ReadAt(pre[:], base)
	if n < 10 || string(pre[:6]) != npyMagic {
		return nil, fail("a .npy file cut short inside its magic and version")
	}
	major, minor := pre[6], pre[7]
	var hlen, hstart int64
	switch {
	case major == 1 && minor == 0:
		hlen, hstart = int64(binary.LittleEndian.Uint16(pre[8:10])), 10
	case (major == 2 || major == 3) && minor == 0:
		if n < 12 {
			return nil, fail("a .npy file cut short inside its header length")
		}
		hlen, hstart = int64(binary.LittleEndian.Uint32(pre[8:12])), 12
	default:
		return nil, fail("a .npy file of format version %d.%d, which numpy does not read (it reads 1.0, 2.0 and 3.0)", major, minor)
	}
	if hlen > size-hstart {
		return nil, fail("the .npy header declares %d bytes but the file has %d after it", hlen, size-hstart)
	}
	if hlen > 16<<20 {
		return nil, fail("a .npy header of %d bytes; ckptview reads headers of up to 16 MiB", hlen)
	}
	raw := make([]byte, hlen)
	if _, err := src.ReadAt(raw, base+hstart); err != nil && err != io.EOF {
		return nil, fail("the .npy header cannot be read: %v", err)
	}
	var text string
	if major >= 3 {
		if !utf8.Valid(raw) {
			return nil, fail("the .npy header (format 3.0) is not UTF-8 text")
		}
		text = string(raw)
	} else {
		text = string(latin1Runes(raw))
	}
	if utf8.RuneCountInString(text) > npyMaxHeader {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%sthe .npy header is %d characters long; numpy.load refuses headers over %d characters unless allow_pickle=True or max_header_size is raised", prefixWhere(where), utf8.RuneCountInString(text), npyMaxHeader))
	}
	lit, err := parsePyLiteral(text, major <= 2)
	if err != nil {
		return nil, fail("the .npy header is not a Python literal numpy can read (%v): %s", err, pyrepr.Quote(clip(text)))
	}
	if lit.kind != 'd' {
		return nil, fail("the .npy header is not a dict")
	}
	fields := map[string]pyLit{}
	for i, k := range lit.keys {
		if k.kind != 's' {
			return nil, fail("the .npy header has a key that is not a str")
		}
		fields[k.s] = lit.items[i] // a repeated key: the last one, as in a Python dict literal
	}
	if len(fields) != 3 || !hasKeys(fields, "descr", "fortran_order", "shape") {
		return nil, fail("the .npy header does not have exactly the keys 'descr', 'fortran_order' and 'shape', which numpy requires")
	}
	shapeLit, fortranLit, descrLit := fields["shape"], fields["fortran_order"], fields["descr"]
	if shapeLit.kind != 't' {
		return nil, fail("the .npy header's shape is not a tuple of ints")
	}
	shape := make([]int64, 0, len(shapeLit.items))
	for _, d := range shapeLit.items {
		if d.kind != 'i' || d.big {
			return nil, fail("the .npy header's shape is not a tuple of ints")
		}
		if d.i < 0 {
			return nil, fail("the .npy header's shape %s has a negative dimension", pyShape(shapeLit))
		}
		shape = append(shape, d.i)
	}
	if fortranLit.kind != 'T' && fortranLit.kind != 'F' {
		return nil, fail("the .npy header's fortran_order is not True or False")
	}
	dt, err := npyDescr(descrLit, 0)
	if err != nil {
		return nil, fail("the .npy header's descr: %v", err)
	}
	dataOff := base + hstart + hlen
	end := base + size
	if dt.hasObject() {
		where := "the pickle of the object array in " + orFile(where)
		op.reader = "numpy.load"
		s, _, err := op.scanOne(src, dataOff, end, where)
		op.reader = ""
		if err != nil {
			return nil, err
		}
		v, err := op.unpickle(s, op.newCtx(src), where)
		if err != nil {
			return nil, err
		}
		if s.r.pos < end {
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%s%d bytes follow the object array's pickle; numpy.load ignores them", prefixWhere(where), end-s.r.pos))
		}
		return v, nil
	}
	_, itemsize, _ := dt.resolve()
	count := int64(1)
	for _, d := range shape {
		hi, lo := bits.Mul64(uint64(count), uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return nil, fail("the .npy shape %v has more than 2^63 elements", shape)
		}
		count = int64(lo)
	}
	hi, nbytes := bits.Mul64(uint64(count), uint64(itemsize))
	if hi != 0 || nbytes > uint64(end-dataOff) {
		return nil, fail("the .npy array %v of %s needs %d bytes of data but the file has %d after its header", shape, dtypeText(dt), count*int64(itemsize), end-dataOff)
	}
	if rest := end - dataOff - int64(nbytes); rest > 0 {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%s%d bytes follow the .npy array data; numpy.load ignores them", prefixWhere(where), rest))
	}
	return &pyArray{cls: "numpy.ndarray", shape: shape, dtype: dt, fortran: fortranLit.kind == 'T',
		raw: &lazyBytes{src: src, off: dataOff, n: int64(nbytes), kind: 'b'}, src: src}, nil
}

func hasKeys(m map[string]pyLit, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

func prefixWhere(where string) string {
	if where == "" {
		return ""
	}
	return where + ": "
}

func orFile(where string) string {
	if where == "" {
		return "the file"
	}
	return where
}

func pyShape(l pyLit) string {
	parts := make([]string, len(l.items))
	for i, d := range l.items {
		parts[i] = d.s
	}
	if len(parts) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func latin1Runes(b []byte) []rune {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return r
}

// npyDescr turns a .npy descr into a dtype, as numpy's descr_to_dtype does: a str is a type
// code ("<f4", "|O", "<U5"); a list is a structured dtype of (name, descr[, shape]) fields
// packed one after another, where a field named "" of a void type is padding.
func npyDescr(l pyLit, depth int) (*pyDType, error) {
	if depth > 16 {
		return nil, fmt.Errorf("nested too deeply")
	}
	switch l.kind {
	case 's':
		code := l.s
		order := byte('|')
		if code != "" && strings.ContainsRune("<>|=", rune(code[0])) {
			order, code = code[0], code[1:]
		}
		if code == "" {
			return nil, fmt.Errorf("an empty type code")
		}
		d := &pyDType{code: code, order: order, elsize: -1}
		name, size, _ := d.resolve()
		if size <= 0 && !strings.HasPrefix(name, "void") && !strings.HasPrefix(name, "bytes") && !strings.HasPrefix(name, "str") {
			return nil, fmt.Errorf("the type code %s is not one numpy knows", pyrepr.Quote(l.s))
		}
		if !knownNPYKind(code) {
			return nil, fmt.Errorf("the type code %s is not one numpy knows", pyrepr.Quote(l.s))
		}
		return d, nil
	case 'l':
		d := &pyDType{order: '|', elsize: 0}
		fields := types.NewDict()
		offset := int64(0)
		for _, f := range l.items {
			if f.kind != 't' || len(f.items) < 2 || len(f.items) > 3 {
				return nil, fmt.Errorf("a structured field that is not (name, type[, shape])")
			}
			nameLit := f.items[0]
			if nameLit.kind == 't' && len(nameLit.items) == 2 { // (title, name)
				nameLit = nameLit.items[1]
			}
			if nameLit.kind != 's' {
				return nil, fmt.Errorf("a structured field whose name is not a str")
			}
			fd, err := npyDescr(f.items[1], depth+1)
			if err != nil {
				return nil, err
			}
			_, fsize, _ := fd.resolve()
			size := int64(fsize)
			if len(f.items) == 3 {
				sh := f.items[2]
				if sh.kind == 'i' {
					sh = pyLit{kind: 't', items: []pyLit{sh}}
				}
				if sh.kind != 't' {
					return nil, fmt.Errorf("a structured field whose shape is not a tuple")
				}
				for _, x := range sh.items {
					if x.kind != 'i' || x.big || x.i < 0 || x.i > 1<<31 {
						return nil, fmt.Errorf("a structured field with a bad shape")
					}
					fd.subShape = append(fd.subShape, x.i)
					size *= x.i
				}
			}
			if nameLit.s == "" && strings.HasPrefix(fd.code, "V") && len(fd.names) == 0 {
				offset += size // padding
				continue
			}
			if _, dup := fields.Get(nameLit.s); dup {
				return nil, fmt.Errorf("the structured dtype names the field %s twice", pyrepr.Quote(nameLit.s))
			}
			d.names = append(d.names, nameLit.s)
			fields.Set(nameLit.s, types.NewTupleFromSlice([]any{fd, int(offset)}))
			offset += size
			if offset > 1<<40 {
				return nil, fmt.Errorf("a structured dtype too large")
			}
		}
		d.fields = fields
		d.elsize = int(offset)
		d.code = fmt.Sprintf("V%d", offset)
		return d, nil
	}
	return nil, fmt.Errorf("neither a type code nor a list of fields")
}

func knownNPYKind(code string) bool {
	return code != "" && strings.IndexByte("biufcOUSaVMm?", code[0]) >= 0
}

// hasObject says whether the dtype holds Python objects (then numpy pickles the array).
func (d *pyDType) hasObject() bool {
	code := strings.TrimLeft(d.code, "<>|=")
	if strings.HasPrefix(code, "O") {
		return true
	}
	if fd, ok := d.fields.(*types.Dict); ok {
		for _, e := range *fd {
			if t, ok := e.Value.(*types.Tuple); ok && t.Len() > 0 {
				if sub, ok := t.Get(0).(*pyDType); ok && sub.hasObject() {
					return true
				}
			}
		}
	}
	return false
}

func dtypeText(d *pyDType) string {
	name, _, _ := d.resolve()
	return name
}

// openNPY opens a .npy file.
func (op *opener) openNPY() error {
	op.ck.Format = "npy"
	v, err := op.readNPY(op.r, 0, op.size, "")
	if err != nil {
		return err
	}
	return op.build(v)
}

// openNPZ opens a zip of .npy members as numpy.load does (numpy/lib/npyio.py NpzFile): each
// member is a key, ".npy" stripped from its name; a member that starts with the .npy magic
// is read as an array, any other as its bytes. zipfile answers a name with the last member
// of that name, so a repeated name shows the last one.
func (op *opener) openNPZ(zr *zip.Reader) error {
	op.ck.Format = "npz"
	root := &pyDict{typeName: "numpy.lib.npyio.NpzFile"}
	last := map[string]*zip.File{}
	var order []string
	for _, f := range zr.File {
		if _, ok := last[f.Name]; !ok { // a repeated name is noted by markShadowed
			order = append(order, f.Name)
		}
		last[f.Name] = f
	}
	for _, name := range order {
		f := last[name]
		if f.FileInfo().IsDir() {
			continue
		}
		src, n, err := op.memberData(f)
		if err != nil {
			return err
		}
		key := strings.TrimSuffix(name, ".npy")
		var head [6]byte
		m, _ := src.ReadAt(head[:], 0)
		if m == 6 && string(head[:]) == npyMagic {
			v, err := op.readNPY(src, 0, n, name)
			if err != nil {
				return err
			}
			root.Set(key, v)
			continue
		}
		root.Set(key, &lazyBytes{src: src, off: 0, n: n, kind: 'b'})
	}
	return op.build(root)
}

// memberData gives an archive member's bytes: a stored member in place in the file, a
// deflated one decompressed once into a spool (bounded by MaxDecompress), so reading it
// later never inflates it again from the start.
func (op *opener) memberData(f *zip.File) (io.ReaderAt, int64, error) {
	if f.Flags&1 != 0 {
		return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s is encrypted; encrypted archives cannot be read", f.Name), Offset: -1}
	}
	switch f.Method {
	case zip.Store:
		off, err := f.DataOffset()
		size := int64(f.CompressedSize64)
		if err != nil || off < 0 || size < 0 || off > op.size || size > op.size-off {
			return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s lies outside the file", f.Name), Offset: -1}
		}
		return io.NewSectionReader(op.r, off, size), size, nil
	case zip.Deflate:
		if f.UncompressedSize64 > uint64(op.o.MaxDecompress-op.decompressed) {
			return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s inflates to %s, more than this server's limit of %s (-max-decompress)", f.Name, limitSize(clampInt64(f.UncompressedSize64)), sizeText(op.o.MaxDecompress)), Offset: -1}
		}
		rc, err := f.Open()
		if err != nil {
			return nil, 0, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", f.Name, strings.TrimPrefix(err.Error(), "zip: ")), Offset: -1}
		}
		defer rc.Close()
		sp := &spool{}
		op.ck.AddCloser(sp)
		buf := make([]byte, 256<<10)
		for {
			k, rerr := rc.Read(buf)
			if k > 0 {
				if op.decompressed += int64(k); op.decompressed > op.o.MaxDecompress {
					return nil, 0, &Error{Msg: fmt.Sprintf("the archive's members inflate to more than %s, this server's limit (-max-decompress)", sizeText(op.o.MaxDecompress)), Offset: -1}
				}
				_, _ = sp.Write(buf[:k])
				if err := sp.spill(op.o.Scratch); err != nil {
					return nil, 0, err
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return nil, 0, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", f.Name, strings.TrimPrefix(rerr.Error(), "zip: ")), Offset: -1}
			}
		}
		ra := sp.readerAt()
		op.markDecompressed(ra)
		return ra, sp.size, nil
	}
	return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s uses compression method %d, which numpy never writes", f.Name, f.Method), Offset: -1}
}

var _ = bytes.NewReader
