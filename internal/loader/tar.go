package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"

	"github.com/nlpodyssey/gopickle/types"
)

// tarMember is a member's data range in the file.
type tarMember struct{ off, size int64 }

// tarEntry is one member as CPython's tarfile reads it.
type tarEntry struct {
	name, linkname string
	typ            byte
	off, size      int64
}

// errTarRefused is a tar archive that CPython's tarfile refuses part way (a ReadError: a
// GNU long name or PAX header with no valid member after it). torch.load then reads the
// file again from its start as its older non-tar stream (_legacy_load's fallback on any
// tarfile.TarError), and so does the loader.
var errTarRefused = errors.New("tarfile refuses this archive")

// tarArchive is a tar archive's members as CPython's tarfile reads them, in order.
type tarArchive struct {
	entries []tarEntry
	last    map[string]int // name -> its last entry (tarfile's getmember)
}

// tarMembers reads a tar archive's headers as tarfile.TarInfo.frombuf and TarFile.next do:
// the checksum must match (signed or unsigned sum); an all-zero block, or a bad or cut
// header after the first, ends the archive there; the ustar prefix is joined to the name;
// GNU long names and PAX "path" (its trailing "/" stripped), "linkpath" and "size" records
// apply to the next member, and one with no valid member after it is tarfile's ReadError
// (errTarRefused); an old-style regular member (type NUL) whose name ends in "/" is a
// folder.
func (op *opener) tarMembers() (*tarArchive, error) {
	var entries []tarEntry
	var hdr [512]byte
	var longName, longLink string
	pax := map[string]string{}
	global := map[string]string{}
	pending := false // a GNU or PAX header waits for its member
	for pos := int64(0); pos+512 <= op.size; {
		if _, err := op.r.ReadAt(hdr[:], pos); err != nil {
			return nil, &Error{Msg: "tar header cut short", Offset: pos}
		}
		if allZero(hdr[:]) {
			break
		}
		if !tarChecksumOK(hdr[:]) {
			if pos == 0 {
				return nil, &Error{Msg: "a tar header with a bad checksum", Offset: 0}
			}
			if pending {
				return nil, errTarRefused
			}
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("the tar header at byte %d has a bad checksum: Python's tarfile stops reading there, so nothing after it is part of the archive", pos))
			break
		}
		size, ok := tarNumber(hdr[124:136])
		if !ok || size < 0 || size > op.size-pos-512 {
			return nil, &Error{Msg: fmt.Sprintf("tar member at byte %d has an invalid size", pos), Offset: pos + 124}
		}
		typ := hdr[156]
		data := pos + 512
		next := data + (size+511)/512*512
		switch typ {
		case 'L', 'K': // GNU long name / long link name of the next member
			if size > 1<<20 {
				return nil, &Error{Msg: "a GNU long name longer than 1 MiB", Offset: pos}
			}
			b := make([]byte, size)
			_, _ = op.r.ReadAt(b, data)
			if typ == 'L' {
				longName = cString(b)
			} else {
				longLink = cString(b)
			}
			pos, pending = next, true
			continue
		case 'x', 'g': // PAX extended header of the next member, or of all that follow
			if size > 1<<20 {
				return nil, &Error{Msg: "a PAX header longer than 1 MiB", Offset: pos}
			}
			b := make([]byte, size)
			_, _ = op.r.ReadAt(b, data)
			target := pax
			if typ == 'g' {
				target = global
			}
			for k, v := range parsePAX(b) {
				if k == "path" {
					v = strings.TrimRight(v, "/") // tarfile's _apply_pax_info
				}
				target[k] = v
			}
			pos, pending = next, true
			continue
		}
		pending = false
		name := cString(hdr[0:100])
		if prefix := cString(hdr[345:500]); prefix != "" && typ != 'D' && typ != 'M' && typ != 'N' && typ != 'S' {
			name = prefix + "/" + name
		}
		linkname := cString(hdr[157:257])
		for _, m := range []map[string]string{global, pax} {
			if v, ok := m["path"]; ok {
				name = v
			}
			if v, ok := m["linkpath"]; ok {
				linkname = v
			}
			if v, ok := m["size"]; ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n <= op.size-data {
					size = n
					next = data + (size+511)/512*512
				}
			}
		}
		if longName != "" {
			name = longName
		}
		if longLink != "" {
			linkname = longLink
		}
		longName, longLink, pax = "", "", map[string]string{}
		if typ == 0 && strings.HasSuffix(name, "/") {
			typ = '5' // AREGTYPE with a trailing slash: a folder
		}
		if typ == '5' {
			name = strings.TrimRight(name, "/")
		}
		entries = append(entries, tarEntry{name: name, linkname: linkname, typ: typ, off: data, size: size})
		if len(entries) > 10000 {
			return nil, &Error{Msg: "tar archive with too many members", Offset: -1}
		}
		pos = next
	}
	if pending {
		return nil, errTarRefused
	}
	a := &tarArchive{entries: entries, last: map[string]int{}}
	for i, e := range entries {
		a.last[e.name] = i // a later member of the same name wins, as in getmember
	}
	return a, nil
}

// tarSupported are the member types tarfile knows; any other is read as a regular file.
const tarSupported = "01234567gxKLSMV"

// member is what tar.extractfile(name) reads, as tarfile does: the last member of that
// name, its own data for a regular member (or one of a type tarfile does not know), the
// member a link names for a link (a symbolic link searched in the whole archive, relative
// to its folder; a hard link among the members before it; names normalised), "" and a
// reason when torch would raise instead (no such member, a folder, a loop, a dangling link).
func (a *tarArchive) member(name string) (tarMember, string) {
	i, ok := a.last[strings.TrimRight(name, "/")]
	if !ok {
		return tarMember{}, "it has no " + name + " member"
	}
	return a.data(i, 0)
}

func (a *tarArchive) data(i, depth int) (tarMember, string) {
	e := a.entries[i]
	switch {
	case e.typ == 0 || e.typ == '0' || e.typ == '7' || strings.IndexByte(tarSupported, e.typ) < 0:
		return tarMember{off: e.off, size: e.size}, ""
	case e.typ == '1' || e.typ == '2':
		if depth >= 8 {
			return tarMember{}, fmt.Sprintf("its link %s leads round in a loop (tarfile recurses until Python gives up)", e.name)
		}
		target, limit := path.Clean(e.linkname), i // a hard link: the members before it
		if e.typ == '2' {
			target, limit = path.Clean(path.Join(path.Dir(e.name), e.linkname)), len(a.entries)
		}
		for j := limit - 1; j >= 0; j-- {
			if path.Clean(a.entries[j].name) == target {
				return a.data(j, depth+1)
			}
		}
		return tarMember{}, fmt.Sprintf("its member %s links to %s, which is not in the archive", e.name, e.linkname)
	}
	return tarMember{}, fmt.Sprintf("its member %s is not a file (tar type %q)", e.name, e.typ)
}

// extracted is what torch reads of a member it extracts to a temporary folder (storages and
// tensors: tar.extract, then open): a regular member's data, a hard link's target in the
// archive; a symbolic link becomes a link on the disk, which reads the machine's own file
// when it points out of the folder (a danger) and the member already extracted there when
// it names one (only storages, when tensors is read), and nothing otherwise.
func (a *tarArchive) extracted(op *opener, name string, done map[string]tarMember) (tarMember, string) {
	i, ok := a.last[name]
	if !ok {
		return tarMember{}, "it has no " + name + " member"
	}
	e := a.entries[i]
	if e.typ == '1' || e.typ == '2' {
		target := e.linkname
		if e.typ == '2' {
			target = path.Join(path.Dir(e.name), e.linkname)
		}
		if path.IsAbs(e.linkname) || strings.HasPrefix(path.Clean(target), "..") {
			op.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: "(tar link)", Where: e.name, Offset: e.off - 512,
				Detail: fmt.Sprintf("the tar member %s is a link to %s, out of the folder torch extracts it to: torch's legacy loader would read that file of the machine loading it", e.name, e.linkname)})
			return tarMember{}, fmt.Sprintf("its member %s links out of the archive, to %s", e.name, e.linkname)
		}
		if e.typ == '2' {
			if m, ok := done[path.Clean(target)]; ok {
				return m, ""
			}
			return tarMember{}, fmt.Sprintf("its member %s is a symbolic link to %s, which is not on the disk when torch opens it", e.name, e.linkname)
		}
	}
	return a.data(i, 0)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// tarChecksumOK checks a header's checksum as tarfile does: the sum of its bytes with the
// checksum field as spaces, unsigned or signed.
func tarChecksumOK(h []byte) bool {
	want, ok := tarNumber(h[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64 = 256, 256
	for i, c := range h {
		if i >= 148 && i < 156 {
			continue
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// tarNumber reads a numeric header field as tarfile's nti: base-256 when the first byte is
// 0x80 or 0xff, else octal text up to a NUL, surrounding white space ignored.
func tarNumber(b []byte) (int64, bool) {
	if len(b) > 0 && (b[0] == 0x80 || b[0] == 0xff) {
		var n int64
		for _, c := range b[1:] {
			if n > (1<<62)>>8 {
				return 0, false
			}
			n = n<<8 | int64(c)
		}
		if b[0] == 0xff {
			n -= 1 << (8*len(b) - 8)
		}
		return n, true
	}
	s := strings.TrimSpace(cString(b))
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 8, 64)
	return n, err == nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parsePAX reads PAX records "LEN key=value\n".
func parsePAX(b []byte) map[string]string {
	out := map[string]string{}
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			break
		}
		n, err := strconv.Atoi(string(b[:sp]))
		if err != nil || n <= sp+1 || n > len(b) {
			break
		}
		rec := b[sp+1 : n]
		rec = bytes.TrimSuffix(rec, []byte("\n"))
		if eq := bytes.IndexByte(rec, '='); eq > 0 {
			out[string(rec[:eq])] = string(rec[eq+1:])
		}
		b = b[n:]
	}
	return out
}

// isTar says whether a file starts with a header tarfile accepts (its checksum matches):
// torch.load tries tarfile first on any file that is not a zip, ustar magic or not.
func isTar(head []byte) bool {
	return len(head) >= 512 && !allZero(head[:512]) && tarChecksumOK(head[:512])
}

// openTar reads torch's legacy tar format (torch < 0.1.10): members sys_info, storages,
// tensors and pickle.
func (op *opener) openTar() error {
	a, err := op.tarMembers()
	if err != nil {
		return err
	}
	for _, need := range []string{"storages", "pickle"} {
		if _, ok := a.last[need]; !ok {
			var names []string
			for _, e := range a.entries {
				names = append(names, e.name)
			}
			return &Error{Msg: "tar archive that is not a torch legacy checkpoint (no " + need + " member); members: " + strings.Join(names, ", "), Offset: -1}
		}
	}
	// torch extracts storages and tensors to a folder and reads them there, and reads the
	// pickle with extractfile: each by tarfile's rules (tarArchive)
	done := map[string]tarMember{}
	storages, why := a.extracted(op, "storages", done)
	if why != "" {
		return &Error{Msg: "torch.load refuses this tar archive: " + why, Offset: -1}
	}
	done["storages"] = storages
	pickled, why := a.member("pickle")
	if why != "" {
		return &Error{Msg: "torch.load refuses this tar archive: " + why, Offset: -1}
	}
	tensorsM, why := a.extracted(op, "tensors", done)
	if why != "" {
		tensorsM = tarMember{} // hand-built archives (burn's) put storage ids inline in the pickle
		op.ck.Notes = append(op.ck.Notes, "torch.load refuses this tar archive: "+why+"; it is shown as its storages and pickle members read")
		op.ck.WeightsOnly = &ckpt.WeightsOnly{Refusal: "torch.load refuses this tar archive, with or without weights_only: " + why}
	}
	members := map[string]tarMember{"storages": storages, "pickle": pickled, "tensors": tensorsM}
	defer op.scanTarDecoys(a, members)
	op.ck.Format = "torch-legacy-tar"
	ctx := op.newCtx(op.r)
	var pos, end int64
	next := func(where string) (any, error) {
		s, _, err := op.scanOne(op.r, pos, end, where)
		if err != nil {
			return nil, err
		}
		v, err := op.unpickle(s, ctx, where)
		pos = s.r.pos
		return v, err
	}
	// storages: count, then per storage (key, location, storage_type), an int64 element
	// count and the raw data; then a list of views.
	m := members["storages"]
	pos, end = m.off, m.off+m.size
	nv, err := next("storages")
	if err != nil {
		return err
	}
	count, ok := toInt64(nv)
	if !ok || count < 0 || count > m.size {
		return &Error{Msg: "the storages member has an invalid storage count", Offset: m.off}
	}
	for i := int64(0); i < count; i++ {
		rec, err := next("storages")
		if err != nil {
			return err
		}
		t, ok := rec.(*types.Tuple)
		if !ok || t.Len() != 3 {
			return &Error{Msg: "storage record is not (key, location, type)", Offset: pos}
		}
		key := fmt.Sprint(t.Get(0))
		location, _ := t.Get(1).(string)
		g, _ := t.Get(2).(*pyGlobal)
		dtype, ok := "", false
		if g != nil {
			dtype, ok = storageDType(g.full)
		}
		if !ok {
			return &Error{Msg: fmt.Sprintf("storage %q has no torch storage type", key), Offset: pos}
		}
		var nb [8]byte
		if pos+8 > end {
			return &Error{Msg: "storage data cut short", Offset: pos}
		}
		if _, err := op.r.ReadAt(nb[:], pos); err != nil {
			return &Error{Msg: "storage data cut short", Offset: pos}
		}
		numel := int64(binary.LittleEndian.Uint64(nb[:]))
		es := int64(ckpt.DTypeSize(dtype))
		if numel < 0 || numel > (end-pos-8)/es {
			return &Error{Msg: fmt.Sprintf("storage %q declares %d elements, more than the member holds", key, numel), Offset: pos}
		}
		st := &ckpt.Storage{Key: key, DType: dtype, Location: location, ByteOrder: "little", Data: op.r, Offset: pos + 8, Size: numel * es}
		op.ck.Storages = append(op.ck.Storages, st)
		ctx.storages[key] = &pyStorage{st: st, numel: numel}
		pos += 8 + numel*es
	}
	views, verr := next("storages")
	if verr != nil && pos >= end {
		// legacy_load reads the views pickle whatever the count: EOFError without it
		why := "its storages member ends before the storage views"
		op.ck.Notes = append(op.ck.Notes, "torch.load refuses this tar archive: "+why+"; it is shown as its members read")
		op.ck.WeightsOnly = &ckpt.WeightsOnly{Refusal: "torch.load refuses this tar archive, with or without weights_only: " + why}
	}
	if verr == nil {
		for _, it := range iterItems(views) {
			vt, ok := it.(*types.Tuple)
			if !ok || vt.Len() != 4 {
				continue
			}
			root, ok := ctx.storages[fmt.Sprint(vt.Get(1))]
			off, ok1 := toInt64(vt.Get(2))
			n, ok2 := toInt64(vt.Get(3))
			if !ok || !ok1 || !ok2 || off < 0 || n < 0 || off+n > root.numel {
				return &Error{Msg: "storage view runs past its storage", Offset: -1}
			}
			es := int64(ckpt.DTypeSize(root.st.DType))
			key := fmt.Sprint(vt.Get(0))
			st := &ckpt.Storage{Key: key, DType: root.st.DType, Location: root.st.Location, ByteOrder: "little", Data: op.r, Offset: root.st.Offset + off*es, Size: n * es}
			ctx.storages[key] = &pyStorage{st: st, numel: n}
		}
	}
	// tensors: count, then per tensor (key, storage_id, type), ndim, sizes, strides, offset.
	tensors := map[string]*pyTensor{}
	m = members["tensors"]
	pos, end = m.off, m.off+m.size
	nv = 0
	if m.size > 0 {
		nv, err = next("tensors")
	}
	if err != nil {
		return err
	}
	count, ok = toInt64(nv)
	if !ok || count < 0 || count > m.size {
		return &Error{Msg: "the tensors member has an invalid tensor count", Offset: m.off}
	}
	for i := int64(0); i < count; i++ {
		rec, err := next("tensors")
		if err != nil {
			return err
		}
		t, ok := rec.(*types.Tuple)
		if !ok || t.Len() != 3 {
			return &Error{Msg: "tensor record is not (key, storage, type)", Offset: pos}
		}
		ps, ok := ctx.storages[fmt.Sprint(t.Get(1))]
		if !ok {
			return &Error{Msg: fmt.Sprintf("tensor %v refers to a missing storage", reprValue(t.Get(0))), Offset: pos}
		}
		var b [8]byte
		if pos+8 > end {
			return &Error{Msg: "tensor record cut short", Offset: pos}
		}
		_, _ = op.r.ReadAt(b[:], pos)
		ndim := int64(int32(binary.LittleEndian.Uint32(b[:4])))
		pos += 8
		if ndim < 0 || ndim > 64 || pos+16*ndim+8 > end {
			return &Error{Msg: "tensor record has an invalid number of dimensions", Offset: pos}
		}
		buf := make([]byte, 16*ndim+8)
		_, _ = op.r.ReadAt(buf, pos)
		pos += int64(len(buf))
		shape := make([]int64, ndim)
		stride := make([]int64, ndim)
		for d := int64(0); d < ndim; d++ {
			shape[d] = int64(binary.LittleEndian.Uint64(buf[8*d:]))
			stride[d] = int64(binary.LittleEndian.Uint64(buf[8*(ndim+d):]))
		}
		soff := int64(binary.LittleEndian.Uint64(buf[16*ndim:]))
		tensors[fmt.Sprint(t.Get(0))] = &pyTensor{storage: ps, offset: soff, shape: shape, stride: stride, typeName: "torch.Tensor"}
	}
	// the main pickle names tensors by key through persistent ids
	m = members["pickle"]
	pos, end = m.off, m.off+m.size
	ctx.storageFor = nil
	s, _, err := op.scanOne(op.r, pos, end, "pickle")
	if err != nil {
		return err
	}
	base := ctx.persistentLoad
	loadTensor := func(pid any) (any, error) {
		if _, isTuple := pid.(*types.Tuple); !isTuple {
			if t, ok := tensors[fmt.Sprint(pid)]; ok {
				return t, nil
			}
		}
		if t, ok := pid.(*types.Tuple); ok && t.Len() > 0 {
			return t.Get(0), nil // a container type saved with its source
		}
		return base(pid)
	}
	v, err := op.unpickleWith(s, ctx, "pickle", loadTensor)
	if err != nil {
		return err
	}
	if err := op.build(v); err != nil {
		return err
	}
	return op.checkViews()
}

// scanTarDecoys scans, for findings, every regular member of a torch tar archive besides
// those read that starts like a pickle: another reader's rules may pick it.
func (op *opener) scanTarDecoys(a *tarArchive, read map[string]tarMember) {
	used := map[int64]bool{}
	for _, m := range read {
		used[m.off] = true
	}
	for _, e := range a.entries {
		if used[e.off] || e.size < 2 || !(e.typ == 0 || e.typ == '0' || strings.IndexByte(tarSupported, e.typ) < 0) {
			continue
		}
		var head [2]byte
		if _, err := op.r.ReadAt(head[:], e.off); err != nil || head[0] != 0x80 || head[1] > 5 {
			continue
		}
		_, _, _ = op.scanOne(op.r, e.off, e.off+e.size, "tar member "+e.name)
	}
}
