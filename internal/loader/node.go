// Package loader opens pickles and PyTorch checkpoints without running anything in them.
//
// It sniffs the container format, scans every pickle opcode before unpickling, resolves
// globals through an allowlist of pure-Go stand-ins, and turns the result into a neutral
// tree of Nodes whose tensors are lazy byte ranges of the original file. gopickle types never
// leave this package.
package loader

import (
	"io"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"github.com/ckptview/ckptview/internal/tensor"
)

// Kind is what a Node is, in Python's terms. The set is fixed by the JSON contract.
type Kind string

// The kinds a Node can have.
const (
	KindNone      Kind = "none"
	KindBool      Kind = "bool"
	KindInt       Kind = "int"
	KindFloat     Kind = "float"
	KindComplex   Kind = "complex"
	KindStr       Kind = "str"
	KindBytes     Kind = "bytes"
	KindList      Kind = "list"
	KindTuple     Kind = "tuple"
	KindDict      Kind = "dict"
	KindSet       Kind = "set"
	KindFrozenSet Kind = "frozenset"
	KindObject    Kind = "object"
	KindGlobal    Kind = "global"
	KindTensor    Kind = "tensor"
	KindNDArray   Kind = "ndarray"
	KindRef       Kind = "ref"
)

// Node is one value of the unpickled tree. Containers, objects and arrays hold their
// children in order; scalars hold their value. Nothing in a Node ever runs code.
type Node struct {
	Kind Kind
	// Type is the Python type the value would have: "dict", "collections.OrderedDict",
	// "torch.nn.parameter.Parameter", "sklearn.svm._classes.SVC", "numpy.ndarray".
	Type string
	// Key is how the parent names this child for a reader: a dict key's repr (a str key is
	// shown as is), a list index, an attribute name.
	Key string
	// Seg is this child's JSON Pointer segment, unescaped (the server escapes it).
	Seg string
	// parent is the node this one is a child (or an object array's item, or a dict key) of,
	// nil for the root: a node's JSON Pointer is made from its parents' segments when it is
	// asked for (Path), not stored in every node.
	parent *Node

	Int     string // decimal, any size
	Float   float64
	Complex complex128
	// Str holds a str's text, or a preview of it when Truncated is set.
	Str string
	// Bytes holds bytes/bytearray content, or a preview of it when Truncated is set.
	Bytes []byte
	// Full locates the whole value of a truncated str or bytes in the file.
	Full *Storage
	// Len is the length of a str (in characters), bytes, or container.
	Len int64

	// Children are list/tuple/set items, dict entries (Key/Seg say which), or an object's
	// attributes and arguments.
	Children []*Node
	// DictKey holds a dict entry's key when it is not a str (an int, a tuple...); nil otherwise.
	DictKey *Node

	// Global is "module.name" for global and object nodes.
	Global string
	// Target is the Path of the node a ref points at.
	Target string

	// Tensor is set for tensor and ndarray nodes.
	Tensor *Tensor

	// lazy holds the items of a very large list that are read from the file on demand (a
	// GGUF tokenizer vocabulary of 150,000 strings) instead of being Children.
	lazy LazyItems

	// The flags sit together, so that they share one word of the node.

	Bool bool
	// Truncated is set when Str or Bytes holds a preview of a longer value (see Full).
	Truncated bool
	// Attr marks an attribute of a dict-like object (an OrderedDict's _metadata set by BUILD)
	// rather than one of its entries.
	Attr bool
	// Danger is set on global/object nodes whose global would run code or touch the system.
	Danger bool
}

// Path is the JSON Pointer of n from the root of its tree ("" for the root), made from the
// segments of n and its parents, in one allocation.
func (n *Node) Path() string {
	size := 0
	for m := n; m.parent != nil; m = m.parent {
		size += 1 + escapedLen(m.Seg)
	}
	if size == 0 {
		return ""
	}
	buf := make([]byte, size)
	i := size
	for m := n; m.parent != nil; m = m.parent {
		i -= escapedLen(m.Seg)
		putEscaped(buf[i:], m.Seg)
		i--
		buf[i] = '/'
	}
	return unsafe.String(&buf[0], size) // buf is never written again
}

// escapedLen is the length of EscapeSegment(s).
func escapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if s[i] == '~' || s[i] == '/' {
			n++
		}
	}
	return n
}

// putEscaped writes EscapeSegment(s) at the start of b.
func putEscaped(b []byte, s string) {
	j := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '~':
			b[j], b[j+1] = '~', '0'
			j += 2
		case '/':
			b[j], b[j+1] = '~', '1'
			j += 2
		default:
			b[j] = c
			j++
		}
	}
}

// Parent is the node n is a child of, nil for the root.
func (n *Node) Parent() *Node { return n.parent }

// Link makes root the root of a tree: it sets the parent of every node under it (children,
// an object array's items, a dict entry's key), so that their paths are made from it. Open
// returns linked trees; a tree built by hand (in a test) is linked once built.
func Link(root *Node) {
	if root == nil {
		return
	}
	root.parent = nil
	stack := []*Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		kids := n.Children
		if n.Tensor != nil && n.Tensor.Objects != nil {
			kids = append(kids[:len(kids):len(kids)], n.Tensor.Objects...)
		}
		for _, k := range kids {
			k.parent = n
			if k.DictKey != nil {
				k.DictKey.parent, k.DictKey.Seg = k, dictKeySeg
			}
			stack = append(stack, k)
		}
	}
}

// dictKeySeg is the segment of a dict entry's non-str key under its entry (the key is not
// a child: no pointer leads to it, but its own values have paths).
const dictKeySeg = "__key__"

// LazyItems are the items of a large list, made when they are looked at.
type LazyItems interface {
	Len() int
	// Item makes item i (0 <= i < Len()) as a node (its key, segment and parent are set by
	// the caller).
	Item(i int) (*Node, error)
}

// NumItems is how many children a reader can open in n: its Children, a numpy object
// array's items, or a large list's lazily read items.
func (n *Node) NumItems() int {
	switch {
	case n.lazy != nil:
		return n.lazy.Len()
	case n.Tensor != nil && n.Tensor.Objects != nil:
		return len(n.Tensor.Objects)
	}
	return len(n.Children)
}

// Items returns n's children [from, to) (see NumItems), reading lazy ones as needed.
func (n *Node) Items(from, to int) []*Node {
	from, to = max(0, from), min(to, n.NumItems())
	if from >= to {
		return nil
	}
	switch {
	case n.lazy != nil:
		if p, ok := n.lazy.(lazyList); ok {
			return p.items(n, from, to)
		}
		out := make([]*Node, 0, to-from)
		for i := from; i < to; i++ {
			s := strconv.Itoa(i)
			k, err := n.lazy.Item(i)
			if err != nil {
				k = &Node{Kind: KindStr, Type: "error", Str: err.Error()}
			}
			k.Key, k.Seg = s, s
			Link(k)
			k.parent = n
			out = append(out, k)
		}
		return out
	case n.Tensor != nil && n.Tensor.Objects != nil:
		return n.Tensor.Objects[from:to]
	}
	return n.Children[from:to]
}

// lazyList is what the items kept as values (pure.go, plain.go) have besides LazyItems: a
// page of them made at once, a dict's entries looked up by key, and their memory.
type lazyList interface {
	LazyItems
	items(n *Node, from, to int) []*Node
	keyed() bool
	lookup(seg string) (int, bool)
	memBytes() int64
}

// IsLazy says whether n's items are made on demand (then Walk does not visit them): a
// large list read from the file, or plain data kept as values (none of them is a tensor,
// a global or a ref).
func (n *Node) IsLazy() bool { return n.lazy != nil }

// LazyBytes is the memory that n's items made on demand hold until then (0 when they are
// read from the file).
func (n *Node) LazyBytes() int64 {
	if p, ok := n.lazy.(lazyList); ok {
		return p.memBytes()
	}
	return 0
}

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

	// countedBy is the converter that counted a view of the storage first, and firstView
	// that view until a second one is counted (converter.count)
	countedBy *converter
	firstView *Tensor
}

// Section returns a reader over the storage's bytes.
func (s *Storage) Section() *io.SectionReader { return io.NewSectionReader(s.Data, s.Offset, s.Size) }

// DTypeSize is the size in bytes of one element of the named dtype in its storage, or 0 if
// unknown: the tensor package's one dtype table.
func DTypeSize(dtype string) int { return tensor.StorageSize(dtype) }

// EscapeSegment escapes a key for use in a JSON Pointer (RFC 6901).
func EscapeSegment(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// UnescapeSegment undoes EscapeSegment.
func UnescapeSegment(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}
