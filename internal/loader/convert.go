package loader

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"

	"github.com/nlpodyssey/gopickle/types"
)

// converter turns gopickle values into Nodes. Values seen before (shared references,
// cycles) become ref nodes pointing at their first occurrence.
type converter struct {
	o     Options
	seen  map[any]*ckpt.Node
	nodes int
	ck    *ckpt.Checkpoint
	err   error
	// plain subtrees kept as values (pure.go)
	pureMemo  map[any]*pureInfo
	judged    int
	lazyRoots []lazyRoot
	// slab is where nodes are allocated, many at a time: one allocation (and one object for
	// the collector) per nodeSlab nodes instead of one per value.
	slab []ckpt.Node
	// tslab and uslab are where tensors and their storages' first users are allocated
	tslab []ckpt.Tensor
	uslab []string
	// paths holds the storage users' paths (path)
	paths []byte
	// unshared says that no container or tensor is met twice in the values converted (a
	// torch pickle read in one pass with nothing stored twice): no refs, and no map of
	// what was seen
	unshared bool
	// torch holds the tensors a torch pickle read in one pass names by tensorRef
	torch *torchTables
	// rowValues counts the entries of dicts kept as rows (lazytensors.go), which are values
	// of the tree but no nodes; rowsCounted says the memory of their rows is counted
	rowValues   int
	rowsCounted bool
	// fromSpool are the readers of decompressed streams (opener.fromSpool)
	fromSpool map[io.ReaderAt]bool
	// deferKeys defers the nodes of dict keys that are objects, tuples or containers to
	// makeKeys, which keys holds them for; inKey counts the keys being made (a ref made in
	// one is no tensor tied to another: a key is no place a tensor is stored)
	deferKeys bool
	keys      []pendingKey
	inKey     int
	// the last long str converted (see text)
	lastText, lastValid string
	lastLen             int64
}

// text is a str value as a node holds it, valid UTF-8, and its length in characters. A str
// the pickle references many times through its memo is one Go string every time; its
// checks are made once (the last one is remembered), and every node shares its bytes.
func (c *converter) text(x string) (string, int64) {
	if len(x) >= 1024 && len(x) == len(c.lastText) && unsafe.StringData(x) == unsafe.StringData(c.lastText) {
		return c.lastValid, c.lastLen
	}
	v, l := pyText(x)
	if len(x) >= 1024 {
		c.lastText, c.lastValid, c.lastLen = x, v, l
	}
	return v, l
}

// pyText is Python's str x (UTF-8 in which a surrogate, which Python's strs may hold and
// UTF-8 may not, is encoded as its three bytes) as valid UTF-8, each surrogate shown as
// U+FFFD, and its length in characters as Python counts them. Any other byte that is not
// UTF-8 (none reaches here from a pickle: the scanner refuses them as pickle.load does)
// is one U+FFFD too.
func pyText(x string) (string, int64) {
	if utf8.ValidString(x) {
		return x, int64(utf8.RuneCountInString(x))
	}
	var b strings.Builder
	b.Grow(len(x))
	n := int64(0)
	for i := 0; i < len(x); n++ {
		r, size := utf8.DecodeRuneInString(x[i:])
		if r == utf8.RuneError && size == 1 && encodedSurrogate(x, i) {
			size = 3
		}
		b.WriteRune(r) // RuneError for a surrogate or a stray byte
		i += size
	}
	return b.String(), n
}

// keepPlain keeps container v of node n as values when its subtree is plain data (pure.go),
// counting its values against the limits; it says whether it did.
func (c *converter) keepPlain(n *ckpt.Node, v any, depth int) bool {
	if c.o.nodesOnly {
		return false
	}
	info := c.pure(v)
	if !info.ok || info.size < pureMin || depth+info.depth > c.o.MaxDepth {
		return false
	}
	c.nodes += info.size - 1
	if c.nodes > c.o.MaxNodes {
		c.err = &Error{Msg: fmt.Sprintf("the file holds more than %s values, this server's limit (-max-nodes)", thousands(int64(c.o.MaxNodes))), Offset: -1}
		return true
	}
	p := &pureItems{bytes: info.bytes}
	switch x := v.(type) {
	case *types.List:
		p.list = *x
	case *types.Tuple:
		p.list = *x
	case *types.Dict:
		p.dict = *x
	}
	n.SetLazy(p)
	n.Len = int64(p.Len())
	c.markLazy(v, n)
	return true
}

// refTo is a ref at segment seg of parent to first, a value met before. The same tensor
// stored again (sd["lm_head.weight"] = sd["wte.weight"]) is a tensor tied to the first,
// counted and listed among its storage's users as two tensors viewing one storage are; its
// values count once.
func (c *converter) refTo(first, parent *ckpt.Node, seg string) *ckpt.Node {
	ref := orphan(parent, seg, ckpt.Node{Kind: ckpt.KindRef, Type: "ref", Target: first.Path()})
	if t := first.Tensor; t != nil && (first.Kind == ckpt.KindTensor || first.Kind == ckpt.KindNDArray) && c.inKey == 0 {
		c.tensorMade()
		if t.Storage != nil {
			t.Storage.Users = append(t.Storage.Users, ref.Path())
		}
	}
	return ref
}

// orphan is node n at segment seg of parent, made on its own (not from the slab).
func orphan(parent *ckpt.Node, seg string, n ckpt.Node) *ckpt.Node {
	n.Seg = seg
	n.SetParent(parent)
	return &n
}

// nodeSlab is how many nodes the converter allocates at once.
const nodeSlab = 512

// newNode is a zero node from the slab.
func (c *converter) newNode() *ckpt.Node {
	if len(c.slab) == 0 {
		c.slab = make([]ckpt.Node, nodeSlab)
	}
	n := &c.slab[0]
	c.slab = c.slab[1:]
	return n
}

const previewBytes = 256

func newConverter(o Options, ck *ckpt.Checkpoint) *converter {
	return &converter{o: o, seen: map[any]*ckpt.Node{}, ck: ck}
}

func identity(v any) (any, bool) {
	switch v.(type) {
	case *types.List, *types.Tuple, *types.Dict, *types.Set, *types.FrozenSet, *types.ByteArray,
		*pyDict, *slotODict, *slotTensors, *pySet, *pyObject, *pyTensor, *pyArray, *pyStorage, *pySparse,
		tensorRef: // a tensor row of a torch pickle read in one pass
		return v, true
	}
	return nil, false
}

// admit counts a value about to be converted at segment seg of parent against the limits;
// when it is over one (or an earlier value was), it returns the stand-in node to put there
// instead, with the error set.
func (c *converter) admit(parent *ckpt.Node, seg string, depth int) *ckpt.Node {
	if c.err != nil {
		return orphan(parent, seg, ckpt.Node{Kind: ckpt.KindNone, Type: "NoneType"})
	}
	c.nodes++
	if c.nodes&0xffff == 0 && c.o.pastDeadline() {
		c.err = c.o.timeError()
		return orphan(parent, seg, ckpt.Node{Kind: ckpt.KindNone})
	}
	if c.nodes > c.o.MaxNodes {
		c.err = &Error{Msg: fmt.Sprintf("the file holds more than %s values, this server's limit (-max-nodes)", thousands(int64(c.o.MaxNodes))), Offset: -1}
		return orphan(parent, seg, ckpt.Node{Kind: ckpt.KindNone})
	}
	if depth > c.o.MaxDepth {
		c.err = &Error{Msg: fmt.Sprintf("values nested deeper than %s levels, this server's limit (-max-depth)", thousands(int64(c.o.MaxDepth))), Offset: -1}
		return orphan(parent, seg, ckpt.Node{Kind: ckpt.KindNone})
	}
	return nil
}

// node converts v into the node at segment seg of parent (nil for the root).
func (c *converter) node(v any, parent *ckpt.Node, seg string, depth int) *ckpt.Node {
	if n := c.admit(parent, seg, depth); n != nil {
		return n
	}
	id, isContainer := identity(v)
	isContainer = isContainer && !c.unshared
	if isContainer {
		if first, ok := c.seen[id]; ok {
			return c.refTo(first, parent, seg)
		}
		if m := c.pureMemo[id]; m != nil && m.inLazy {
			if target, ok := c.lazyPath(id); ok { // first met in a subtree kept as values
				return orphan(parent, seg, ckpt.Node{Kind: ckpt.KindRef, Type: "ref", Target: target})
			}
		}
	}
	n := c.newNode()
	n.Seg = seg
	n.SetParent(parent)
	if isContainer {
		c.seen[id] = n
	}
	switch x := v.(type) {
	case nil:
		n.Kind, n.Type = ckpt.KindNone, "NoneType"
	case bool:
		n.Kind, n.Type, n.Bool = ckpt.KindBool, "bool", x
	case int:
		n.Kind, n.Type, n.Int = ckpt.KindInt, "int", strconv.Itoa(x)
	case *big.Int:
		n.Kind, n.Type = ckpt.KindInt, "int"
		if x.BitLen() > 20000 {
			n.Int = fmt.Sprintf("<int of %d bits>", x.BitLen())
		} else {
			n.Int = x.String()
		}
	case float64:
		n.Kind, n.Type, n.Float = ckpt.KindFloat, "float", x
	case complex128:
		n.Kind, n.Type, n.Complex = ckpt.KindComplex, "complex", x
	case string:
		n.Kind, n.Type = ckpt.KindStr, "str"
		n.Str, n.Len = c.text(x)
	case []byte:
		n.Kind, n.Type = ckpt.KindBytes, "bytes"
		n.Bytes, n.Len = x, int64(len(x))
	case *types.ByteArray:
		n.Kind, n.Type = ckpt.KindBytes, "bytearray"
		n.Bytes, n.Len = []byte(*x), int64(len(*x))
	case *lazyBytes:
		n.Kind, n.Type = ckpt.KindBytes, "bytes"
		if x.kind == 'a' {
			n.Type = "bytearray"
		}
		k := x.n
		if k > previewBytes {
			k = previewBytes
		}
		buf := make([]byte, k)
		m, _ := x.src.ReadAt(buf, x.off)
		n.Bytes, n.Len, n.Truncated = buf[:m], x.n, true
		n.Full = &ckpt.Storage{Key: "inline", DType: "uint8", Location: "file", Data: x.src, Offset: x.off, Size: x.n, ByteOrder: "little"}
		if x.kind == 's' { // a large Python 2 str
			n.Kind, n.Type = ckpt.KindStr, "str"
			n.Str = strings.ToValidUTF8(string(buf[:m]), "\ufffd")
			n.Bytes = nil
		}
	case *types.List:
		n.Kind, n.Type = ckpt.KindList, "list"
		if !c.keepPlain(n, x, depth) {
			c.items(n, *x, depth)
		}
	case *types.Tuple:
		n.Kind, n.Type = ckpt.KindTuple, "tuple"
		if !c.keepPlain(n, x, depth) {
			c.items(n, *x, depth)
		}
	case *pySet:
		n.Kind, n.Type = ckpt.KindSet, "set"
		if x.frozen {
			n.Kind, n.Type = ckpt.KindFrozenSet, "frozenset"
		}
		c.items(n, x.items, depth)
	case *types.Set:
		n.Kind, n.Type = ckpt.KindSet, "set"
		c.items(n, sortedByRepr(iterItems(x)), depth)
	case *types.FrozenSet:
		n.Kind, n.Type = ckpt.KindFrozenSet, "frozenset"
		c.items(n, sortedByRepr(iterItems(x)), depth)
	case *types.Dict:
		n.Kind, n.Type = ckpt.KindDict, "dict"
		if !c.keepPlain(n, x, depth) {
			c.entries(n, *x, depth)
		}
	case *slotODict:
		n.Kind, n.Type = ckpt.KindDict, "collections.OrderedDict"
		c.slotEntries(n, x, depth)
	case *slotTensors:
		n.Kind, n.Type = ckpt.KindDict, "dict"
		if x.t.kindOf(x.v) == pODict {
			n.Type = "collections.OrderedDict"
		}
		c.keepRows(n, x, depth)
	case *pyDict:
		n.Kind, n.Type = ckpt.KindDict, x.typeName
		if n.Type == "builtins.dict" {
			n.Type = "dict"
		}
		if x.distinct {
			c.distinctEntries(n, x.entries, depth)
		} else {
			c.entries(n, x.entries, depth)
		}
		before := len(n.Children)
		c.attrs(n, x.attrs, depth)
		for _, k := range n.Children[before:] {
			k.Attr = true
		}
	case *numpyScalar:
		inner := c.node(x.value, parent, seg, depth)
		c.nodes--
		inner.Type = x.typeName
		return inner
	case *pyGlobal:
		n.Kind, n.Type, n.Global = ckpt.KindGlobal, "global", x.raw
		n.Danger = x.class == globalDanger
		if x.state != nil {
			c.add(n, x.state, "__state__", "__state__", depth)
		}
	case *pyObject:
		c.object(n, x, depth)
	case *pyTensor:
		c.tensor(n, x)
	case tensorRef:
		c.tensor(n, c.torch.tensorAt(x))
	case *pyStorage:
		// a bare storage: a 1-D view of all of it
		c.tensor(n, &pyTensor{storage: x, shape: []int64{x.numel}, stride: []int64{1}, typeName: "torch.storage.TypedStorage"})
	case *pyArray:
		c.array(n, x, depth)
	case *pySparse:
		n.Kind, n.Type = ckpt.KindTensor, "torch.Tensor"
		n.Tensor = &ckpt.Tensor{Shape: x.shape, Layout: x.layout}
		for i, name := range x.names {
			k := c.child(x.parts[i], n, name, name, depth)
			n.Children = append(n.Children, k)
			if name == "values" && k.Tensor != nil {
				n.Tensor.DType = k.Tensor.DType
			}
		}
	case *pyDType:
		name, _, _ := x.resolve()
		n.Kind, n.Type, n.Global = ckpt.KindObject, "numpy.dtype", "numpy.dtype"
		n.Str = "dtype(" + pyQuote(x.descr()) + ") " + name
	default:
		n.Kind, n.Type = ckpt.KindObject, fmt.Sprintf("%T", v)
	}
	n.Len = max(n.Len, int64(len(n.Children)))
	return n
}

func (c *converter) child(v any, parent *ckpt.Node, key, seg string, depth int) *ckpt.Node {
	k := c.node(v, parent, seg, depth+1)
	k.Key, k.Seg = key, seg
	return k
}

func (c *converter) items(n *ckpt.Node, items []any, depth int) {
	n.Children = make([]*ckpt.Node, 0, len(items))
	for i, it := range items {
		s := strconv.Itoa(i)
		n.Children = append(n.Children, c.child(it, n, s, s, depth))
		if c.err != nil {
			return
		}
	}
}

// keySeg is how a dict key appears in a pointer and to a reader.
func keySeg(k any) (key, seg string, isStr bool) {
	switch x := k.(type) {
	case string:
		if !utf8.ValidString(x) {
			// a str with a surrogate, shown with U+FFFD: two such keys can read alike, so
			// the key is kept as a node (DictKey) and the segment is made unique on a
			// clash, as for keys that are no str (a key repeated byte for byte then shows
			// twice, where Python keeps one entry: keys of this kind are never written
			// by real programs)
			t, _ := pyText(x)
			return t, t, false
		}
		return x, x, true
	case int:
		s := strconv.Itoa(x)
		return s, s, false
	case *big.Int:
		return x.String(), x.String(), false
	case *numpyScalar:
		return keySeg(x.value)
	}
	r := reprValue(k)
	return r, r, false
}

// Every child of a container has a segment of its own, so that a pointer leads to one
// node. A dict entry's segment is its key (keySeg); two keys Python keeps apart can have
// the same one ({7: a, '7': b}, or two tuples whose segments leave items out), and an
// object's attribute can be named like one of its entries. The child that comes later
// then gets "seg (2)", or "seg (3)"... : the first that is no other child's segment and no
// other key's own segment in the same container, so that the renamed child never takes
// the place of a real key ({7: a, '7': b, '7 (2)': c} gives /7, /7 (3) and /7 (2)).

// segIndex finds a container's children by segment: a scan of a few, a map of many.
type segIndex struct {
	n    *ckpt.Node
	size int            // the number of children n will have, about
	pos  map[string]int // segment -> index in n.Children, once there are many
	// finds counts the lookups: a few are scans (an OrderedDict's one attribute after its
	// 200,000 entries), more make the map
	finds int
	next  map[string]int // segment -> the number its next rename tries first
}

// segIndexMin is the number of children from which a segIndex keeps a map, made at its
// segIndexScans+1-th lookup.
const (
	segIndexMin   = 32
	segIndexScans = 4
)

// find is the index of n's child at segment seg.
func (x *segIndex) find(seg string) (int, bool) {
	kids := x.n.Children
	x.finds++
	if x.pos == nil && len(kids) > segIndexMin && x.finds > segIndexScans {
		x.pos = make(map[string]int, max(x.size, len(kids)))
		for i := len(kids) - 1; i >= 0; i-- { // the first of a repeated segment wins
			x.pos[kids[i].Seg] = i
		}
	}
	if x.pos != nil {
		i, ok := x.pos[seg]
		return i, ok
	}
	for i, k := range kids {
		if k.Seg == seg {
			return i, true
		}
	}
	return 0, false
}

// add appends k to n's children.
func (x *segIndex) add(k *ckpt.Node) {
	if x.pos != nil {
		if _, ok := x.pos[k.Seg]; !ok {
			x.pos[k.Seg] = len(x.n.Children)
		}
	}
	x.n.Children = append(x.n.Children, k)
}

// has says whether a child of n has segment seg.
func (x *segIndex) has(seg string) bool {
	_, ok := x.find(seg)
	return ok
}

// free is the first of "seg (2)", "seg (3)"... that no child of n has and that is not in
// own. Children are only added, so a number tried once is not tried again.
func (x *segIndex) free(seg string, own map[string]bool) string {
	if x.next == nil {
		x.next = map[string]int{}
	}
	for i := max(2, x.next[seg]); ; i++ {
		if s := seg + " (" + strconv.Itoa(i) + ")"; !own[s] && !x.has(s) {
			x.next[seg] = i + 1
			return s
		}
	}
}

// ownSegs is the set of the segments the keys of entries give (keySeg): a renamed child
// must take none of them.
func ownSegs(entries []types.DictEntry) map[string]bool {
	own := make(map[string]bool, len(entries))
	for _, e := range entries {
		_, seg, _ := keySeg(e.Key)
		own[seg] = true
	}
	return own
}

// sameKey says whether a and b, two keys of one dict with the same segment, are one key
// to Python: a str and a non-str never are, two str are when equal, two tuples when their
// items are (a long tuple's segment leaves items out); an object, a tensor, an array or a
// container is one key with itself only: the pickler writes an object met twice once and
// fetches it from the memo after that, so two values of the file are two objects, and a
// dict Python pickled never holds two keys that compare equal. (The objects Python
// compares by value, a datetime or a Decimal, have their value in their segment.) Other
// keys are the same when their segments are (keySeg writes ints, floats, None and bools
// whole).
func sameKey(a, b any) bool {
	as, aStr := a.(string)
	bs, bStr := b.(string)
	if aStr || bStr {
		return aStr && bStr && as == bs
	}
	if _, isObject := identity(a); isObject {
		if o, ok := a.(*pyObject); !ok || o.display == "" {
			if _, ok := a.(*types.Tuple); !ok {
				return a == b
			}
		}
	}
	ta, aTuple := a.(*types.Tuple)
	tb, bTuple := b.(*types.Tuple)
	if aTuple || bTuple {
		if !aTuple || !bTuple || ta.Len() != tb.Len() {
			return false
		}
		for i := range ta.Len() {
			if !sameKey(ta.Get(i), tb.Get(i)) {
				return false
			}
		}
		return true
	}
	_, sa, _ := keySeg(a)
	_, sb, _ := keySeg(b)
	return sa == sb
}

func (c *converter) entries(n *ckpt.Node, entries []types.DictEntry, depth int) {
	base := len(n.Children) // an object's attributes may come first
	if n.Children == nil {
		n.Children = make([]*ckpt.Node, 0, len(entries))
	}
	idx := segIndex{n: n, size: base + len(entries)}
	// An entry child's Key is its key's own segment (keySeg gives one string for both),
	// renamed or not, so a key met again has the Key of its first entry; and that Key is
	// then a taken segment, so the entry children are searched only on a clash. keys
	// holds the tuple and object keys, by child (to compare: a tuple's segment may leave
	// items out, and two objects are two keys whatever their segments); byKey finds the
	// entry children by Key in a large dict, made at the first clash.
	var keys map[int]any
	var byKey map[string][]int
	same := func(k any, seg string) (int, bool) {
		is := func(i int) bool {
			m := n.Children[i]
			if m.Key != seg {
				return false
			}
			kept, ok := keys[i]
			_, isStr := k.(string)
			if strKey := m.DictKey == nil && !ok; strKey || isStr {
				return strKey && isStr
			}
			if _, compared := identity(k); ok || compared {
				return ok && sameKey(kept, k)
			}
			return true // an int, a float, None, a bool: its segment is its whole value
		}
		if len(n.Children)-base <= segIndexMin {
			for i := base; i < len(n.Children); i++ {
				if is(i) {
					return i, true
				}
			}
			return 0, false
		}
		if byKey == nil {
			byKey = make(map[string][]int, len(n.Children)-base)
			for i := base; i < len(n.Children); i++ {
				byKey[n.Children[i].Key] = append(byKey[n.Children[i].Key], i)
			}
		}
		for _, i := range byKey[seg] {
			if is(i) {
				return i, true
			}
		}
		return 0, false
	}
	var own map[string]bool // every key's own segment, made at the first clash
	for _, e := range entries {
		key, seg, isStr := keySeg(e.Key)
		if idx.has(seg) {
			if i, ok := same(e.Key, seg); ok {
				// Python keeps one entry per key, the last value at the first position
				// (and the first key object)
				old := n.Children[i]
				repl := c.child(e.Value, n, old.Key, old.Seg, depth)
				repl.DictKey = old.DictKey
				n.Children[i] = repl
				if c.err != nil {
					return
				}
				continue
			}
			// another key with this segment ({1: a, '1': b}), or an attribute of the object
			// (its own namespace): a pointer must lead to one node
			if own == nil {
				own = ownSegs(entries)
			}
			seg = idx.free(seg, own)
		}
		i := len(n.Children)
		k := c.child(e.Value, n, key, seg, depth)
		if !isStr {
			if _, compared := identity(e.Key); compared {
				if keys == nil {
					keys = map[int]any{}
				}
				keys[i] = e.Key
				c.dictKey(n, i, e.Key, depth+2)
			} else {
				k.DictKey = c.node(e.Key, k, ckpt.DictKeySeg, depth+2)
				c.nodes--
			}
		}
		if byKey != nil {
			byKey[key] = append(byKey[key], i)
		}
		idx.add(k)
		if c.err != nil {
			return
		}
	}
}

// dictKey makes the node of key, an object, tuple or container that is the key of entry i
// of dict n: at once, or when the tree is whole if c.deferKeys. An object that is a dict's
// key is often somewhere else in the file too (the parameters that key an optimizer's
// state are in its param_groups, which torch pickles after the state): made last, the key
// is a ref to its place in the tree, not the tree's entries refs to a key, which no pointer
// leads to.
func (c *converter) dictKey(n *ckpt.Node, i int, key any, depth int) {
	if c.deferKeys {
		c.keys = append(c.keys, pendingKey{dict: n, i: i, key: key, depth: depth})
		return
	}
	c.makeKey(pendingKey{dict: n, i: i, key: key, depth: depth})
}

// makeKey makes the node of key p under its entry. The key node is no value of the tree
// (its own values are).
func (c *converter) makeKey(p pendingKey) {
	k := p.dict.Children[p.i]
	c.inKey++
	k.DictKey = c.node(p.key, k, ckpt.DictKeySeg, p.depth)
	c.inKey--
	c.nodes--
}

// pendingKey is a dict key whose node is made when the tree is whole (dictKey). The entry
// is found by its index, which stays its own when a later value of the same key replaces
// the entry's node.
type pendingKey struct {
	dict  *ckpt.Node
	i     int
	key   any
	depth int
}

// makeKeys makes the nodes of the keys dictKey deferred, and of those their making defers,
// in the order they were met.
func (c *converter) makeKeys() {
	c.deferKeys = false
	for i := 0; i < len(c.keys) && c.err == nil; i++ {
		p := c.keys[i]
		c.keys[i] = pendingKey{}
		c.deferKeys = true // a key inside a key waits for its turn too
		c.makeKey(p)
		c.deferKeys = false
	}
	c.keys = nil
}

// distinctEntries adds the entries of a dict whose keys are str and distinct (as the
// one-pass reading makes them) as n's first children: each at its key, as entries would.
func (c *converter) distinctEntries(n *ckpt.Node, entries []types.DictEntry, depth int) {
	n.Children = make([]*ckpt.Node, 0, len(entries))
	for _, e := range entries {
		k := e.Key.(string)
		n.Children = append(n.Children, c.child(e.Value, n, k, k, depth))
		if c.err != nil {
			return
		}
	}
}

// attrs adds an object's attributes (its BUILD state dict) as children.
func (c *converter) attrs(n *ckpt.Node, entries []types.DictEntry, depth int) {
	idx := segIndex{n: n, size: len(n.Children) + len(entries)}
	var own map[string]bool // every attribute's own segment, made at the first clash
	for _, e := range entries {
		key, seg, _ := keySeg(e.Key)
		if idx.has(seg) {
			if own == nil {
				own = ownSegs(entries)
			}
			seg = idx.free(seg, own)
		}
		idx.add(c.child(e.Value, n, key, seg, depth))
		if c.err != nil {
			return
		}
	}
}

// add appends v to n's children as key, at segment seg unless an earlier child has it (an
// attribute named like an entry, or like __args__), then at the first free "seg (2)".
func (c *converter) add(n *ckpt.Node, v any, key, seg string, depth int) {
	taken := func(s string) bool {
		for _, k := range n.Children {
			if k.Seg == s {
				return true
			}
		}
		return false
	}
	if taken(seg) {
		for i := 2; ; i++ {
			if s := seg + " (" + strconv.Itoa(i) + ")"; !taken(s) {
				seg = s
				break
			}
		}
	}
	n.Children = append(n.Children, c.child(v, n, key, seg, depth))
}

func (c *converter) object(n *ckpt.Node, x *pyObject, depth int) {
	if x.joblib != nil {
		c.joblibArray(n, x, depth)
		return
	}
	n.Kind, n.Type = ckpt.KindObject, objectType(x)
	if g, ok := x.cls.(*pyGlobal); ok {
		n.Global = g.raw
		n.Danger = g.class == globalDanger
	} else if inner, ok := x.cls.(*pyObject); ok {
		// a call on the result of a call: attrgetter('system')(os)('ls')
		n.Global = objectType(inner)
		n.Danger = dangerChain(inner)
		n.Children = append(n.Children, c.child(inner, n, "__callee__", "__callee__", depth))
	}
	if x.display != "" {
		n.Str = x.display
	}
	if x.hasState {
		switch st := x.state.(type) {
		case *types.Dict:
			c.attrs(n, *st, depth)
		case *pyDict:
			c.attrs(n, st.entries, depth)
		case *types.Tuple:
			// (dict, slots) from objects with __slots__
			if st.Len() == 2 {
				d1, ok1 := st.Get(0).(*types.Dict)
				d2, ok2 := st.Get(1).(*types.Dict)
				if (ok1 || st.Get(0) == nil) && (ok2 || st.Get(1) == nil) {
					if ok1 {
						c.attrs(n, *d1, depth)
					}
					if ok2 {
						c.attrs(n, *d2, depth)
					}
					break
				}
			}
			c.add(n, x.state, "__state__", "__state__", depth)
		default:
			c.add(n, x.state, "__state__", "__state__", depth)
		}
	}
	if len(x.dict) > 0 {
		c.entries(n, x.dict, depth)
	}
	if len(x.items) > 0 {
		c.add(n, types.NewListFromSlice(x.items), "__items__", "__items__", depth)
	}
	if len(x.args) > 0 {
		c.add(n, types.NewTupleFromSlice(x.args), "__args__", "__args__", depth)
	}
}

// joblibArray makes the array joblib.load returns for a NumpyArrayWrapper: the wrapper's
// shape, dtype and order over the raw data that followed it, or the object array its nested
// pickle holds; an ndarray subclass (numpy.matrix) gives its type.
func (c *converter) joblibArray(n *ckpt.Node, x *pyObject, depth int) {
	attrs := map[string]any{}
	if d, ok := x.state.(*types.Dict); ok {
		for _, e := range *d {
			if k, ok := e.Key.(string); ok {
				attrs[k] = e.Value
			}
		}
	}
	cls := "numpy.ndarray"
	if g, ok := attrs["subclass"].(*pyGlobal); ok && g.full != "numpy.ndarray" && g.full != "numpy.memmap" && g.full != "numpy.core.memmap.memmap" {
		cls = g.raw
	}
	if objs, ok := x.joblib.(*joblibObjects); ok {
		inner := c.node(objs.value, n.Parent(), n.Seg, depth)
		c.nodes--
		*n = *inner
		if n.Kind == ckpt.KindNDArray {
			n.Type = cls
		}
		return
	}
	shape, _ := toInts(attrs["shape"])
	dt, _ := attrs["dtype"].(*pyDType)
	order, _ := attrs["order"].(string)
	c.array(n, &pyArray{cls: cls, shape: shape, dtype: dt, fortran: order == "F", raw: x.joblib}, depth)
}

func dangerChain(o *pyObject) bool {
	for {
		switch c := o.cls.(type) {
		case *pyGlobal:
			return c.class == globalDanger
		case *pyObject:
			o = c
		default:
			return false
		}
	}
}

func (c *converter) tensor(n *ckpt.Node, t *pyTensor) {
	if t.typeName == "" {
		t.typeName = "torch.Tensor"
	}
	n.Kind, n.Type = ckpt.KindTensor, t.typeName
	st := t.storage.st
	if len(c.tslab) == 0 {
		c.tslab = make([]ckpt.Tensor, nodeSlab)
	}
	tt := &c.tslab[0]
	c.tslab = c.tslab[1:]
	*tt = ckpt.Tensor{DType: st.DType, Shape: t.shape, Strides: t.stride, StorageOffset: t.offset, Storage: st, RequiresGrad: t.requiresGrad, Packed: t.packed}
	n.Tensor = tt
	tt.Quant = t.quant
	if st.Users == nil { // the one user of most storages, from a slab
		if len(c.uslab) == 0 {
			c.uslab = make([]string, nodeSlab)
		}
		st.Users, c.uslab = c.uslab[:1:1], c.uslab[1:]
		st.Users[0] = c.path(n)
	} else {
		st.Users = append(st.Users, c.path(n))
	}
	c.count(tt)
	if t.quantScales != nil {
		n.Children = append(n.Children, c.child(t.quantScales, n, "scales", "scales", 0), c.child(t.quantZeros, n, "zero_points", "zero_points", 0))
	}
}

// path is n.Path(), made in the converter's buffer of paths: one allocation for many.
func (c *converter) path(n *ckpt.Node) string {
	if cap(c.paths)-len(c.paths) < 256 {
		c.paths = make([]byte, 0, 32<<10)
	}
	start := len(c.paths)
	c.paths = n.AppendPath(c.paths) // a longer path than the room left moves the buffer on
	p := c.paths[start:]
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p)) // never written again: the buffer only grows
}

// tensorMade counts a tensor of the tree against -max-tensors.
func (c *converter) tensorMade() {
	c.ck.Tensors++
	if c.ck.Tensors > c.o.MaxTensors && c.err == nil {
		c.err = c.o.tooManyTensors()
	}
}

func (c *converter) count(t *ckpt.Tensor) {
	c.tensorMade()
	if st := t.Storage; st != nil && !st.NewView(t) {
		return // two tensors that view the same bytes the same way count once
	}
	if t.DType == "object" {
		return
	}
	c.ck.Parameters = addSat(c.ck.Parameters, t.Numel())
	if c.ck.BytesByDType == nil {
		c.ck.BytesByDType = map[string]int64{}
	}
	c.ck.BytesByDType[t.DType] = addSat(c.ck.BytesByDType[t.DType], t.NBytes())
}

func (c *converter) array(n *ckpt.Node, a *pyArray, depth int) {
	n.Kind, n.Type = ckpt.KindNDArray, a.cls
	if a.dtype == nil {
		n.Kind, n.Global = ckpt.KindObject, a.cls
		n.Str = "ndarray without state"
		return
	}
	name, size, order := a.dtype.resolve()
	t := &ckpt.Tensor{DType: name, Shape: a.shape, Descr: a.dtype.descr()}
	for _, f := range a.dtype.structFields() {
		fname, _, _ := f.dtype.resolve()
		t.Fields = append(t.Fields, ckpt.Field{Name: f.name, DType: fname, Descr: f.dtype.descr(), Offset: f.offset, Shape: f.dtype.subShape})
	}
	numel := t.Numel()
	t.Strides = contiguousStrides(a.shape, a.fortran)
	if a.strides != nil {
		t.Strides = a.strides
	}
	n.Tensor = t
	if name == "object" {
		var items []any
		if l, ok := a.raw.(*types.List); ok {
			items = *l
		}
		t.Objects = make([]*ckpt.Node, 0, len(items))
		for i, it := range items {
			s := strconv.Itoa(i)
			k := c.node(it, n, s, depth+1)
			k.Key, k.Seg = s, s
			t.Objects = append(t.Objects, k)
			if c.err != nil {
				break
			}
		}
		n.Len = int64(len(t.Objects))
		c.count(t)
		return
	}
	bo := "little"
	if order == '>' {
		bo = "big"
	}
	st := &ckpt.Storage{Key: n.Path(), DType: name, Location: "inline", ByteOrder: bo}
	switch raw := a.raw.(type) {
	case []byte:
		st.Data, st.Size = bytes.NewReader(raw), int64(len(raw))
	case string:
		b := []byte(raw)
		st.Data, st.Size = bytes.NewReader(b), int64(len(b))
	case *types.ByteArray:
		st.Data, st.Size = bytes.NewReader(*raw), int64(len(*raw))
	case *lazyBytes:
		st.Data, st.Offset, st.Size = raw.src, raw.off, raw.n
		st.Location = "file"
		if c.fromSpool[raw.src] {
			st.Location = "decompressed"
		}
	default:
		st.Data, st.Size = bytes.NewReader(nil), 0
	}
	if numel*int64(size) != st.Size && !a.field {
		// numpy's __setstate__ (and frombuffer's reshape) refuse data of another size, so
		// Python never makes this array: it is shown as what the pickle holds, not as a
		// tensor whose bytes are not there
		c.ck.Notes = append(c.ck.Notes, fmt.Sprintf("%s: array data is %d bytes, but %v %s needs %d", displayPath(n.Path()), st.Size, a.shape, name, numel*int64(size)))
		n.Kind, n.Global, n.Tensor = ckpt.KindObject, a.cls, nil
		n.Str = fmt.Sprintf("ndarray %s%v whose data numpy refuses: %d bytes where it needs %d", name, a.shape, st.Size, numel*int64(size))
		return
	}
	t.Storage = st
	st.Users = append(st.Users, n.Path())
	if a.field {
		st.Location = "field"
		t.Column = true
	} else {
		c.ck.Storages = append(c.ck.Storages, st)
		c.count(t)
	}
	if len(t.Fields) > 0 && size > 0 && numel*int64(size) <= st.Size {
		c.fields(n, a, st, int64(size), depth)
	}
}

// fields adds a structured array's fields as children: each field of every element, as an
// array of the field's dtype (and shape) over a view of the same bytes, so that a column
// such as scikit-learn's Tree.nodes["threshold"] has its own statistics and downloads.
func (c *converter) fields(n *ckpt.Node, a *pyArray, st *ckpt.Storage, itemsize int64, depth int) {
	count := st.Size / itemsize
	for _, f := range a.dtype.structFields() {
		_, fsize, _ := f.dtype.resolve()
		sub := int64(1)
		for _, d := range f.dtype.subShape {
			sub *= d
		}
		if fsize <= 0 || f.offset < 0 || f.offset+int64(fsize)*sub > itemsize {
			continue
		}
		unit := int64(fsize) * sub
		elem := &pyDType{code: f.dtype.code, order: f.dtype.order, elsize: f.dtype.elsize, names: f.dtype.names, fields: f.dtype.fields}
		shape := append(append([]int64(nil), a.shape...), f.dtype.subShape...)
		strides := make([]int64, 0, len(shape))
		for _, s := range n.Tensor.Strides {
			strides = append(strides, s*sub)
		}
		strides = append(strides, contiguousStrides(f.dtype.subShape, false)...)
		data := &fieldBytes{src: st.Data, base: st.Offset, pitch: itemsize, off: f.offset, size: unit, count: count}
		fa := &pyArray{cls: "numpy.ndarray", shape: shape, dtype: elem, raw: &lazyBytes{src: data, off: 0, n: count * unit, kind: 'b'},
			field: true, strides: strides}
		n.Children = append(n.Children, c.child(fa, n, f.name, f.name, depth))
		if c.err != nil {
			return
		}
	}
}

// fieldBytes presents one field of every element of a structured array as dense bytes:
// element i's field is at i*size. Reads gather from the elements in bounded chunks.
type fieldBytes struct {
	src                           io.ReaderAt
	base, pitch, off, size, count int64
}

func (f *fieldBytes) ReadAt(p []byte, off int64) (int, error) {
	total := f.count * f.size
	if off < 0 {
		return 0, fmt.Errorf("loader: negative offset")
	}
	if off >= total {
		return 0, io.EOF
	}
	want := int64(len(p))
	if want > total-off {
		want = total - off
	}
	done := int64(0)
	chunk := make([]byte, 0, min(f.pitch*max(1, (1<<20)/f.pitch), 16<<20))
	for done < want {
		i := (off + done) / f.size
		within := (off + done) % f.size
		n := min(int64(cap(chunk))/f.pitch, f.count-i)
		n = max(n, 1)
		buf := chunk[:n*f.pitch]
		m, err := f.src.ReadAt(buf, f.base+i*f.pitch)
		if int64(m) < n*f.pitch && (err == nil || err == io.EOF) && int64(m) < (n-1)*f.pitch+f.off+f.size {
			return int(done), io.ErrUnexpectedEOF
		}
		for k := int64(0); k < n && done < want; k++ {
			from := k*f.pitch + f.off + within
			w := min(f.size-within, want-done)
			if from+w > int64(m) {
				return int(done), io.ErrUnexpectedEOF
			}
			copy(p[done:done+w], buf[from:from+w])
			done += w
			within = 0
		}
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

func displayPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func contiguousStrides(shape []int64, fortran bool) []int64 {
	st := make([]int64, len(shape))
	acc := int64(1)
	if fortran {
		for i := range shape {
			st[i] = acc
			acc *= max(shape[i], 1)
		}
		return st
	}
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= max(shape[i], 1)
	}
	return st
}

func sortedByRepr(items []any) []any {
	sort.SliceStable(items, func(i, j int) bool { return reprValue(items[i]) < reprValue(items[j]) })
	return items
}

// readerAtBytes is an in-memory ReaderAt (a decompressed zip member).
type readerAtBytes = bytes.Reader

var _ io.ReaderAt = (*readerAtBytes)(nil)

// addSat adds non-negative counts without wrapping around.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
