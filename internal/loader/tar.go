package loader

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/nlpodyssey/gopickle/types"
)

// tarMember is a member's data range in the file.
type tarMember struct{ off, size int64 }

// tarMembers lists a tar archive's regular members without reading their data.
func (op *opener) tarMembers() (map[string]tarMember, error) {
	out := map[string]tarMember{}
	var hdr [512]byte
	for pos := int64(0); pos+512 <= op.size; {
		if _, err := op.r.ReadAt(hdr[:], pos); err != nil {
			return nil, &Error{Msg: "tar header cut short", Offset: pos}
		}
		if hdr[0] == 0 {
			break
		}
		name := strings.TrimRight(string(hdr[0:100]), "\x00")
		if prefix := strings.TrimRight(string(hdr[345:500]), "\x00"); prefix != "" && string(hdr[257:262]) == "ustar" {
			name = prefix + "/" + name
		}
		sizeField := strings.TrimSpace(strings.TrimRight(string(hdr[124:136]), "\x00 "))
		size, err := strconv.ParseInt(sizeField, 8, 64)
		if err != nil || size < 0 || size > op.size-pos-512 {
			return nil, &Error{Msg: fmt.Sprintf("tar member %q has an invalid size", name), Offset: pos + 124}
		}
		if t := hdr[156]; t == '0' || t == 0 {
			out[strings.TrimPrefix(name, "./")] = tarMember{off: pos + 512, size: size}
		}
		pos += 512 + (size+511)/512*512
		if len(out) > 10000 {
			return nil, &Error{Msg: "tar archive with too many members", Offset: -1}
		}
	}
	return out, nil
}

// openTar reads torch's legacy tar format (torch < 0.1.10): members sys_info, storages,
// tensors and pickle.
func (op *opener) openTar() error {
	members, err := op.tarMembers()
	if err != nil {
		return err
	}
	for _, need := range []string{"storages", "pickle"} {
		if _, ok := members[need]; !ok {
			var names []string
			for n := range members {
				names = append(names, n)
			}
			return &Error{Msg: "tar archive that is not a torch legacy checkpoint (no " + need + " member); members: " + strings.Join(names, ", "), Offset: -1}
		}
	}
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
		es := int64(DTypeSize(dtype))
		if numel < 0 || numel > (end-pos-8)/es {
			return &Error{Msg: fmt.Sprintf("storage %q declares %d elements, more than the member holds", key, numel), Offset: pos}
		}
		st := &Storage{Key: key, DType: dtype, Location: location, ByteOrder: "little", Data: op.r, Offset: pos + 8, Size: numel * es}
		op.ck.Storages = append(op.ck.Storages, st)
		ctx.storages[key] = &pyStorage{st: st, numel: numel}
		pos += 8 + numel*es
	}
	if views, err := next("storages"); err == nil {
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
			es := int64(DTypeSize(root.st.DType))
			key := fmt.Sprint(vt.Get(0))
			st := &Storage{Key: key, DType: root.st.DType, Location: root.st.Location, ByteOrder: "little", Data: op.r, Offset: root.st.Offset + off*es, Size: n * es}
			ctx.storages[key] = &pyStorage{st: st, numel: n}
		}
	}
	// tensors: count, then per tensor (key, storage_id, type), ndim, sizes, strides, offset.
	tensors := map[string]*pyTensor{}
	m, ok = members["tensors"]
	if !ok { // hand-built archives (burn's) put storage ids inline in the pickle
		m = tarMember{off: 0, size: 0}
	}
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
