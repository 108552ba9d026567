// Package ckpt is the checkpoint model: the tree of an opened file (Node), its tensors and
// the bytes they view (Tensor, Storage), what loading it would run (Finding), and the
// Checkpoint that holds them with its pointer lookup and Walk. The loader makes it; views,
// export, statistics, search, diff and the server read it, and nothing here parses a file
// or runs anything in one.
package ckpt

import (
	"slices"
	"strconv"
	"strings"
	"unsafe"
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
	buf := n.AppendPath(nil)
	if len(buf) == 0 {
		return ""
	}
	return unsafe.String(&buf[0], len(buf)) // buf is never written again
}

// AppendPath appends the JSON Pointer of n (see Path) to dst: for a reader that makes the
// paths of many nodes into one buffer of its own.
func (n *Node) AppendPath(dst []byte) []byte {
	size := 0
	for m := n; m.parent != nil; m = m.parent {
		size += 1 + escapedLen(m.Seg)
	}
	dst = slices.Grow(dst, size)
	buf := dst[len(dst) : len(dst)+size]
	i := size
	for m := n; m.parent != nil; m = m.parent {
		i -= escapedLen(m.Seg)
		putEscaped(buf[i:], m.Seg)
		i--
		buf[i] = '/'
	}
	return dst[:len(dst)+size]
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
				k.DictKey.parent, k.DictKey.Seg = k, DictKeySeg
			}
			stack = append(stack, k)
		}
	}
}

// DictKeySeg is the segment of a dict entry's non-str key under its entry (the key is not
// a child: no pointer leads to it, but its own values have paths).
const DictKeySeg = "__key__"

// SetParent makes p the node n is a child of (nil for a root): for readers that build a
// tree node by node and need its paths before it is whole (Link sets every parent at once).
func (n *Node) SetParent(p *Node) { n.parent = p }

// SetLazy gives n items made on demand instead of Children.
func (n *Node) SetLazy(items LazyItems) { n.lazy = items }

// Lazy is n's items made on demand, nil when it has none.
func (n *Node) Lazy() LazyItems { return n.lazy }

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
		if p, ok := n.lazy.(PagedItems); ok {
			return p.Page(n, from, to)
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

// PagedItems are what the items a reader keeps as values (plain data) have besides
// LazyItems: a page of them made at once (their keys, segments and parents set), a dict's
// entries looked up by segment, and the memory they hold.
type PagedItems interface {
	LazyItems
	Page(n *Node, from, to int) []*Node
	Keyed() bool
	Lookup(seg string) (int, bool)
	MemBytes() int64
}

// TensorItems are lazy items that hold tensors: the entries of a large state dict kept as
// rows of a table and made into tensor nodes a page at a time. Walk visits them.
type TensorItems interface {
	PagedItems
	HoldsTensors() bool
	// Rows is the number of the dict's entries, the first items (the others are its
	// attributes); Key is the key of entry i < Rows, without making its node.
	Rows() int
	Key(i int) string
	// NextMade is the first entry at or after from that is not a row but a node made at
	// open, and that node, or (Rows, nil) when there is none: a tensor that shares its
	// storage with another (a tied weight, a view), or a ref to one stored twice. Every
	// other entry is a row.
	NextMade(from int) (int, *Node)
	// RowTensor is what row i holds, without making its node: its tensor's dtype and
	// shape (a view, not to be changed). Each row's tensor is the one view of a storage
	// of its own.
	RowTensor(i int) (dtype string, shape []int64)
}

// EachRow calls rows with each run [from, to) of the entries of items that are rows, and
// made with each entry that is a node made at open, in the entries' order.
func EachRow(items TensorItems, rows func(from, to int), made func(i int, n *Node)) {
	for from := 0; from < items.Rows(); {
		i, n := items.NextMade(from)
		if i > from {
			rows(from, i)
		}
		if n == nil {
			return
		}
		made(i, n)
		from = i + 1
	}
}

// IsLazy says whether n's items are made on demand: a large list read from the file, plain
// data kept as values (none of them is a tensor, a global or a ref: Walk does not visit
// them), or a large state dict's tensors (TensorItems: Walk visits them). A reader that
// needs every item of a node asks for them with Items, which makes lazy ones.
func (n *Node) IsLazy() bool { return n.lazy != nil }

// LazyTensors says whether n's lazy items are tensors (TensorItems), which Walk visits.
func (n *Node) LazyTensors() bool {
	t, ok := n.lazy.(TensorItems)
	return ok && t.HoldsTensors()
}

// All is every item of n (Items of all of them): its Children, or its lazy items made.
func (n *Node) All() []*Node { return n.Items(0, n.NumItems()) }

// LazyBytes is the memory that n's items made on demand hold until then (0 when they are
// read from the file).
func (n *Node) LazyBytes() int64 {
	if p, ok := n.lazy.(PagedItems); ok {
		return p.MemBytes()
	}
	return 0
}

// Index reads s as a list index is written in decimal (torch's storage keys "0", "1"...,
// a module list's "blocks.12"): digits only, no leading zero but in "0", at most nine.
func Index(s string) (int, bool) {
	if s == "" || len(s) > 9 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// EscapeSegment escapes a key for use in a JSON Pointer (RFC 6901).
func EscapeSegment(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// UnescapeSegment undoes EscapeSegment.
func UnescapeSegment(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}
