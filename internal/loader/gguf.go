package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/gguf"
)

// GGUF (llama.cpp's format) is read by package gguf with the checks of ggml's gguf.cpp. The
// tree is {"metadata": every key/value, "tensors": every tensor}; a metadata array of more
// than lazyArrayMin items (a tokenizer vocabulary) is read page by page, never whole.
// Tensors keep their ggml type as their dtype ("q4_k"); the types ggml can dequantize also
// get a float32 view (Tensor.Decoded) for statistics, previews and downloads, made block by
// block as it is read.

const lazyArrayMin = 256

// ggufDTypes are the ggml types that are plain numbers, by our dtype names.
var ggufDTypes = map[gguf.Type]string{
	gguf.TypeF32: "float32", gguf.TypeF16: "float16", gguf.TypeBF16: "bfloat16", gguf.TypeF64: "float64",
	gguf.TypeI8: "int8", gguf.TypeI16: "int16", gguf.TypeI32: "int32", gguf.TypeI64: "int64",
}

func (op *opener) openGGUF() error {
	f, err := gguf.Parse(op.r, op.size, gguf.Options{})
	if err != nil {
		return ggufError(err)
	}
	op.ck.Format = "gguf"
	op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("GGUF version %d: %d metadata keys, %d tensors, data aligned to %d bytes from byte %d",
		f.Version, len(f.Metadata), len(f.Tensors), f.Alignment, f.DataOffset))
	op.ck.Notes = append(op.ck.Notes, f.Warnings...)
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "gguf"}
	md := ggufMetadata(f.Metadata)
	tensors := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "tensors", Seg: "tensors"}
	for i := range f.Tensors {
		tensors.Children = append(tensors.Children, op.ggufTensor(f, &f.Tensors[i], ""))
	}
	tensors.Len = int64(len(tensors.Children))
	root.Children = []*ckpt.Node{md, tensors}
	root.Len = 2
	op.ck.Root = root
	return nil
}

func ggufError(err error) error {
	var ge *gguf.Error
	if errors.As(err, &ge) {
		return &Error{Msg: ge.Msg, Offset: ge.Offset}
	}
	return fmt.Errorf("loader: %w", err)
}

// ggufMetadata is the metadata dict, keys in file order.
func ggufMetadata(kvs []gguf.KV) *ckpt.Node {
	md := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "metadata", Seg: "metadata"}
	for _, kv := range kvs {
		md.Children = append(md.Children, ggufValue(kv.Value, kv.Key, kv.Key))
	}
	md.Len = int64(len(md.Children))
	return md
}

// ggufValue is one metadata value as a node.
func ggufValue(v gguf.Value, key, seg string) *ckpt.Node {
	n := &ckpt.Node{Key: key, Seg: seg}
	switch v.Type {
	case gguf.ValueString:
		s, _ := v.Str()
		n.Kind, n.Type, n.Str, n.Len = ckpt.KindStr, "str", strings.ToValidUTF8(s, "\ufffd"), int64(len([]rune(s)))
	case gguf.ValueBool:
		b, _ := v.Bool()
		n.Kind, n.Type, n.Bool = ckpt.KindBool, "bool", b
	case gguf.ValueFloat32, gguf.ValueFloat64:
		f, _ := v.Float()
		n.Kind, n.Type, n.Float = ckpt.KindFloat, v.Type.String(), f
	case gguf.ValueArray:
		a, _ := v.Array()
		n.Kind, n.Type, n.Len = ckpt.KindList, "array of "+a.ElemType().String(), a.Len()
		if a.Len() > lazyArrayMin {
			n.SetLazy(ggufArray{a})
		} else {
			vals, err := a.Values(0, a.Len())
			if err != nil {
				n.Kind, n.Type, n.Str = ckpt.KindStr, "error", err.Error()
				return n
			}
			for i, x := range vals {
				s := strconv.Itoa(i)
				n.Children = append(n.Children, ggufValue(x, s, s))
			}
		}
	default: // the integer types
		if u, ok := v.Uint(); ok {
			n.Int = strconv.FormatUint(u, 10)
		} else {
			i, _ := v.Int()
			n.Int = strconv.FormatInt(i, 10)
		}
		n.Kind, n.Type = ckpt.KindInt, v.Type.String()
	}
	return n
}

// ggufArray reads a large metadata array's items when they are asked for.
type ggufArray struct{ a *gguf.Array }

func (g ggufArray) Len() int { return int(min(g.a.Len(), math.MaxInt32)) }

func (g ggufArray) Item(i int) (*ckpt.Node, error) {
	vals, err := g.a.Values(int64(i), int64(i)+1)
	if err != nil {
		return nil, err
	}
	return ggufValue(vals[0], "", ""), nil
}

// ggufTensor is one tensor's node: its bytes in place, and a dequantized view when ggml
// can make one. part names the file of a split model the tensor is in.
func (op *opener) ggufTensor(f *gguf.File, t *gguf.TensorInfo, part string) *ckpt.Node {
	n := &ckpt.Node{Kind: ckpt.KindTensor, Type: "gguf." + t.Type.String(), Key: t.Name, Seg: t.Name}
	dtype, plain := ggufDTypes[t.Type]
	if !plain {
		dtype = strings.ToLower(t.Type.String())
	}
	st := &ckpt.Storage{Key: t.Name, DType: dtype, Location: "file", Data: op.r, Offset: t.Offset, Size: t.Size, ByteOrder: "little", File: part}
	tt := &ckpt.Tensor{DType: dtype, Shape: t.Shape, Strides: contiguousStrides(t.Shape, false), Storage: st, Packed: !plain}
	if info, ok := gguf.LookupType(t.Type); ok && !plain {
		tt.Descr = fmt.Sprintf("ggml %s: blocks of %d values in %d bytes", info.Name, info.BlockSize, info.TypeSize)
	}
	if !plain && gguf.Dequantizable(t.Type) {
		tt.Decoded = &ckpt.Storage{Key: t.Name, DType: "float32", Location: "dequantized", Data: &dequantized{f: f, t: t},
			Size: t.Elements * 4, ByteOrder: "little", File: part}
	}
	st.Users = []string{"/tensors/" + ckpt.EscapeSegment(t.Name)} // where openGGUF puts it
	n.Tensor = tt
	op.ck.Storages = append(op.ck.Storages, st)
	op.ck.Tensors++
	op.ck.Parameters = addSat(op.ck.Parameters, t.Elements)
	op.ck.BytesByDType[dtype] = addSat(op.ck.BytesByDType[dtype], t.Size)
	return n
}

// dequantized presents a quantized tensor as float32 bytes, dequantizing the blocks a read
// covers (at most a few MiB at a time).
type dequantized struct {
	f *gguf.File
	t *gguf.TensorInfo
}

func (d *dequantized) ReadAt(p []byte, off int64) (int, error) {
	total := d.t.Elements * 4
	if off < 0 {
		return 0, fmt.Errorf("loader: negative offset")
	}
	if off >= total {
		return 0, io.EOF
	}
	want := min(int64(len(p)), total-off)
	done := int64(0)
	const chunk = 1 << 20 // elements per dequantization
	for done < want {
		from := (off + done) / 4
		to := min(d.t.Elements, (off+want+3)/4, from+chunk)
		vals, err := d.f.ReadFloat32(d.t, from, to)
		if err != nil {
			return int(done), err
		}
		var buf [4]byte
		skip := (off + done) % 4
		for _, v := range vals {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			c := copy(p[done:want], buf[skip:])
			done += int64(c)
			skip = 0
			if done >= want {
				break
			}
		}
	}
	if want < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

// openGGUFSplit opens the parts of a split GGUF model (name-00001-of-00005.gguf...) as one
// model: the first part's metadata, every part's tensors, each naming its part. It reports
// whether files were such parts.
func openGGUFSplit(ck *ckpt.Checkpoint, files []File, o Options) (bool, error) {
	var parts []gguf.SplitPart
	readers := map[string]io.ReaderAt{}
	for _, f := range files {
		readers[f.Name] = f.R
		var head [4]byte
		if n, _ := f.R.ReadAt(head[:], 0); n < 4 || string(head[:]) != "GGUF" {
			return false, nil
		}
		gf, err := gguf.Parse(f.R, f.Size, gguf.Options{})
		if err != nil {
			le := ggufError(err)
			var e *Error
			if errors.As(le, &e) {
				e.Msg = f.Name + ": " + e.Msg
			}
			return true, le
		}
		if _, _, _, ok, _ := gguf.SplitInfo(gf); !ok {
			return false, nil
		}
		parts = append(parts, gguf.SplitPart{Name: f.Name, File: gf})
	}
	sp, err := gguf.MergeSplit(parts)
	if err != nil {
		return true, &Error{Msg: strings.TrimPrefix(err.Error(), "gguf: "), Offset: -1}
	}
	op := &opener{o: o, ck: ck}
	ck.Format = "gguf"
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "gguf"}
	tensors := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "tensors", Seg: "tensors"}
	for i := range sp.Tensors {
		t := &sp.Tensors[i]
		part := sp.Parts[t.Part]
		op.r = readers[part.Name]
		tensors.Children = append(tensors.Children, op.ggufTensor(part.File, &t.TensorInfo, part.Name))
	}
	tensors.Len = int64(len(tensors.Children))
	root.Children = []*ckpt.Node{ggufMetadata(sp.Metadata), tensors}
	root.Len = 2
	ck.Root = root
	ck.Notes = append(ck.Notes, fmt.Sprintf("a GGUF model split in %d parts, shown as one: the first part's metadata and every part's %d tensors, each naming its part", len(sp.Parts), len(sp.Tensors)))
	return true, nil
}
