package ckpt

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/ckptview/ckptview/internal/tensor"
)

// Tensor is a strided view on a Storage: the metadata of a torch.Tensor or numpy.ndarray.
// Its values are never read by the loader.
type Tensor struct {
	DType         string // numpy name where numpy has one: float32, int64, bool, bfloat16...
	Shape         []int64
	Strides       []int64 // in elements, like torch (numpy byte strides are converted)
	StorageOffset int64   // in elements
	Storage       *Storage
	RequiresGrad  bool
	// Descr is numpy's description of the dtype ("<f4", ">i4", structured fields).
	Descr string
	// Layout is "" for strided tensors, or "sparse_coo", "sparse_csr"... for sparse ones,
	// whose index and value tensors are the node's children (Storage is nil then).
	Layout string
	// Quant describes a quantized tensor's parameters (qint8, quint8, qint32 storages).
	Quant *Quantization
	// Objects holds the items of a numpy object array (dtype "object"); Storage is nil then.
	Objects []*Node
	// Fields are the fields of a structured dtype (scikit-learn's Tree.nodes), in order;
	// each is also a child node, a Column.
	Fields []Field
	// Column marks one field of a structured array shown as an array of its own: a view of
	// its parent's bytes, so totals do not count it again.
	Column bool
	// Packed marks a dtype stored in blocks (GGUF's quantized types, "q4_k"): it has no size
	// per element, its bytes are Storage.Size.
	Packed bool
	// Decoded is a float32 view of a packed tensor's values (dequantized as ggml does), for
	// the types that can be dequantized; its Data makes the values as they are read.
	Decoded *Storage
}

// Field is one field of a structured numpy dtype: its name, type, byte offset in an
// element and, for a field that is itself an array, its shape.
type Field struct {
	Name   string
	DType  string // numpy name: int64, float64...
	Descr  string // "<i8"
	Offset int64
	Shape  []int64
}

// Quantization holds a quantized tensor's scheme. Per-channel scales and zero points are
// tensors: the node's children "scales" and "zero_points".
type Quantization struct {
	Scheme    string // per_tensor_affine, per_channel_affine, per_channel_affine_float_qparams
	Scale     float64
	ZeroPoint int64
	Axis      int64
}

// Numel is the number of elements of the view (saturating at the largest int64).
func (t *Tensor) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		if d <= 0 {
			return 0
		}
		if n > math.MaxInt64/d {
			return math.MaxInt64
		}
		n *= d
	}
	return n
}

// NBytes is the size of the view's elements in bytes (saturating at the largest int64 for
// broadcast views that describe more than that).
func (t *Tensor) NBytes() int64 {
	if t.Packed && t.Storage != nil {
		return t.Storage.Size
	}
	n, es := t.Numel(), int64(DTypeSize(t.DType))
	if es > 0 && n > math.MaxInt64/es {
		return math.MaxInt64
	}
	return n * es
}

// Storage is a flat run of bytes in the file that one or more tensors view.
type Storage struct {
	Key   string // the storage key in the archive ("0", "data/0"), or a synthetic one
	DType string
	// Location is where the tensor was saved from ("cpu", "cuda:0": metadata only), or for
	// arrays where the bytes are: "file" (in place), "decompressed" (in the decompressed
	// stream of a compressed file), "inline" (inside the pickle), "field" (a structured
	// array's column).
	Location string
	// Offset and Size locate the bytes in Data. Size is in bytes.
	Offset int64
	Size   int64
	// Data reads the bytes: the blob itself, or memory for values inlined in a pickle.
	Data io.ReaderAt
	// ByteOrder is "little" or "big".
	ByteOrder string
	// Users are the Paths of the tensors that view this storage, in tree order.
	Users []string
	// File names the file of a set (a shard of a sharded checkpoint) the bytes are in.
	File string

	// first is the first view NewView was given, and more the views from the second on
	first *Tensor
	more  map[viewKey]bool
}

// Section returns a reader over the storage's bytes.
func (s *Storage) Section() *io.SectionReader { return io.NewSectionReader(s.Data, s.Offset, s.Size) }

// DTypeSize is the size in bytes of one element of the named dtype in its storage, or 0 if
// unknown: the tensor package's one dtype table.
func DTypeSize(dtype string) int { return tensor.StorageSize(dtype) }

// viewKey is what makes two views of a storage the same view.
type viewKey struct {
	off           int64
	shape, stride string
}

func keyOf(t *Tensor) viewKey {
	return viewKey{off: t.StorageOffset, shape: fmt.Sprint(t.Shape), stride: fmt.Sprint(t.Strides)}
}

// NewView records t as a view of the storage and says whether it is a new one: two tensors
// that view the same bytes the same way (offset, shape and strides) are one view, whose
// values count once. Most storages have one view, which is kept as it is; the views of a
// storage with several are kept by key.
func (s *Storage) NewView(t *Tensor) bool {
	if s.first == nil && s.more == nil {
		s.first = t
		return true
	}
	if s.more == nil {
		s.more = map[viewKey]bool{keyOf(s.first): true}
		s.first = nil
	}
	k := keyOf(t)
	if s.more[k] {
		return false
	}
	s.more[k] = true
	return true
}

// View is the view the statistics and encoders read of t, or nil when it has no storage
// they decode: a packed (quantized) tensor's dequantized float32 values, dense in C order;
// a per-tensor quantized one with its scale and zero point.
func (t *Tensor) View() *tensor.View {
	if t != nil && t.Decoded != nil {
		d := t.Decoded
		return &tensor.View{DType: "float32", Shape: t.Shape, Strides: t.Strides, Data: d.Data, DataOffset: d.Offset, DataSize: d.Size}
	}
	if t == nil || t.Storage == nil || t.Storage.Data == nil || tensor.ElementSize(t.DType) == 0 {
		return nil
	}
	v := &tensor.View{DType: t.DType, Shape: t.Shape, Strides: t.Strides, Offset: t.StorageOffset,
		Data: t.Storage.Data, DataOffset: t.Storage.Offset, DataSize: t.Storage.Size, BigEndian: t.Storage.ByteOrder == "big"}
	if q := t.Quant; q != nil && q.Scheme == "per_tensor_affine" {
		v.Quantized, v.Scale, v.ZeroPoint = true, q.Scale, q.ZeroPoint
	}
	return v
}

// ItemView is the view of t whose values are only copied, not decoded: View's, or for a
// numpy str, bytes or structured array its items of their size with numpy's description
// (for .npy and raw downloads). nil for object arrays and tensors without data.
func (t *Tensor) ItemView() *tensor.View {
	if v := t.View(); v != nil {
		return v
	}
	if t == nil || t.Storage == nil || t.Storage.Data == nil || t.Objects != nil || t.Layout != "" || t.Quant != nil {
		return nil
	}
	size := DTypeSize(t.DType)
	if size <= 0 || t.Descr == "" || t.DType == "object" {
		return nil
	}
	return &tensor.View{DType: t.DType, Shape: t.Shape, Strides: t.Strides, Offset: t.StorageOffset,
		Data: t.Storage.Data, DataOffset: t.Storage.Offset, DataSize: t.Storage.Size,
		ItemSize: int64(size), NPYDescr: t.Descr}
}

// View is the view whose values a tensor node's statistics describe: its tensor's, with a
// per-channel quantized tensor's scales and zero points (its children) read in, or for a
// sparse tensor its values' (a child). nil when there is nothing decodable.
func (n *Node) View() *tensor.View {
	if n == nil || n.Tensor == nil {
		return nil
	}
	if n.Tensor.Layout != "" {
		for _, k := range n.Children {
			if k.Seg == "values" {
				return k.View()
			}
		}
		return nil
	}
	v := n.Tensor.View()
	if v == nil {
		return nil
	}
	if q := n.Tensor.Quant; q != nil && strings.HasPrefix(q.Scheme, "per_channel") {
		var scales, zeros *Node
		for _, k := range n.Children {
			switch k.Seg {
			case "scales":
				scales = k
			case "zero_points":
				zeros = k
			}
		}
		sc, ok1 := smallFloats(scales)
		zp, ok2 := smallFloats(zeros)
		if !ok1 || !ok2 {
			return nil
		}
		v.ChannelAxis = int(q.Axis)
		v.ChannelScales = sc
		v.ChannelZeros = make([]int64, len(zp))
		for i, z := range zp {
			v.ChannelZeros[i] = int64(z)
		}
	}
	return v
}

// smallFloats reads a small 1-D tensor's values (per-channel parameters).
func smallFloats(n *Node) ([]float64, bool) {
	if n == nil || n.Tensor == nil || n.Tensor.Numel() > 1<<20 {
		return nil, false
	}
	v := n.Tensor.View()
	if v == nil {
		return nil, false
	}
	vals, err := tensor.NewValues(v)
	if err != nil {
		return nil, false
	}
	out, err := vals.ReadReal(0, v.Numel())
	return out, err == nil
}
