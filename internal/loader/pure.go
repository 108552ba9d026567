package loader

import (
	"math"
	"math/big"
	"strconv"
	"sync"

	"github.com/ckptview/ckptview/internal/ckpt"

	"github.com/nlpodyssey/gopickle/types"
)

// Plain data stays plain. A list, tuple or dict whose whole subtree is plain values (None,
// bool, int, float, complex, str, bytes held in memory) and more such containers, each
// referenced once, holds nothing a reader must be warned about or a tensor: no global, no
// ref, no storage, no value left in the file. A pickle of records, a vocabulary or a table
// is mostly such values, millions of them, and a Node for each would cost about 270 bytes.
// So the converter keeps such a subtree as the values the unpickler made (a few dozen bytes
// each) under one node whose items are converted a page at a time when they are looked at,
// with the same code and so to the same nodes as the rest of the tree. The subtree's values
// still count against -max-nodes and -max-depth as if they were nodes.

// pureMin is the number of values from which a plain subtree is kept as values: below it
// nodes cost little and a reader sees them at once.
const pureMin = 32

// pureInfo is what the converter knows of a container's subtree.
type pureInfo struct {
	ok     bool  // the subtree is plain data
	size   int   // values in it, the container included
	depth  int   // levels below the container
	bytes  int64 // what the unpickled values hold in memory, about
	edges  int32 // references to the container met while judging subtrees
	inLazy bool  // part of a subtree kept as values
}

// plainLeaf says whether v is a plain value that is not a container, and what it holds.
func plainLeaf(v any) (bytes int64, ok bool) {
	switch x := v.(type) {
	case nil, bool:
		return 0, true
	case int, float64:
		return 8, true
	case complex128:
		return 16, true
	case *big.Int:
		return 32 + int64(len(x.Bits()))*8, x.BitLen() <= 20000
	case string:
		return 16 + int64(len(x)), true
	case []byte:
		return 24 + int64(len(x)), true
	}
	return 0, false
}

// pure judges v's subtree (memoized per container) and says whether it is plain data.
func (c *converter) pure(v any) pureInfo {
	if c.pureMemo == nil {
		c.pureMemo = map[any]*pureInfo{}
	}
	return c.judge(v, false)
}

// judge is pure's walk: edge says v is reached from a container being judged (a second
// reference to a container makes it, and what holds it, no plain data).
func (c *converter) judge(v any, edge bool) pureInfo {
	if b, ok := plainLeaf(v); ok {
		return pureInfo{ok: true, size: 1, bytes: b}
	}
	var kids []any
	var keys []types.DictEntry
	switch x := v.(type) {
	case *types.List:
		kids = *x
	case *types.Tuple:
		kids = *x
	case *types.Dict:
		keys = *x
	default:
		return pureInfo{}
	}
	if m, ok := c.pureMemo[v]; ok {
		if edge {
			m.edges++
			m.ok = false // referenced twice: a ref in the tree, which needs a node
		}
		return *m
	}
	m := &pureInfo{ok: true, size: 1, bytes: 24}
	c.pureMemo[v] = m
	if edge {
		m.edges = 1
		if _, seen := c.seen[v]; seen {
			m.ok = false // already a node: this is a second reference to it
		}
	}
	c.judged++
	if c.judged&0xffff == 0 && c.o.pastDeadline() {
		m.ok = false
		return *m
	}
	add := func(k pureInfo) {
		m.size += k.size
		m.depth = max(m.depth, k.depth+1)
		m.bytes += k.bytes + 16
		if !k.ok {
			m.ok = false
		}
	}
	for _, k := range kids {
		add(c.judge(k, true))
	}
	if keys != nil {
		// str keys only, each once (a dict with other keys, or one key set twice, is
		// converted node by node, which says what Python keeps)
		var segs map[string]bool
		if len(keys) > 16 {
			segs = make(map[string]bool, len(keys))
		}
		for i, e := range keys {
			s, isStr := e.Key.(string)
			if !isStr {
				m.ok = false
			} else if segs != nil {
				if segs[s] {
					m.ok = false
				}
				segs[s] = true
			} else {
				for _, f := range keys[:i] {
					if f.Key == s {
						m.ok = false
					}
				}
			}
			m.bytes += 16
			add(c.judge(e.Value, true))
		}
	}
	return *m
}

// markLazy marks the containers of a plain subtree as kept as values, so that a later
// reference to one of them is made a ref to its place.
func (c *converter) markLazy(v any, root *ckpt.Node) {
	stack := []any{v}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, isContainer := identity(x); isContainer { // a []byte is no map key
			if m, ok := c.pureMemo[x]; ok {
				m.inLazy = true
			}
		}
		switch y := x.(type) {
		case *types.List:
			stack = append(stack, *y...)
		case *types.Tuple:
			stack = append(stack, *y...)
		case *types.Dict:
			for _, e := range *y {
				stack = append(stack, e.Value)
			}
		}
	}
	c.lazyRoots = append(c.lazyRoots, lazyRoot{v, root})
}

type lazyRoot struct {
	v    any
	node *ckpt.Node
}

// lazyPath is the path of container x inside one of the plain subtrees kept as values, for
// a ref that reaches it from elsewhere.
func (c *converter) lazyPath(x any) (string, bool) {
	for _, r := range c.lazyRoots {
		if p, ok := findIn(r.v, x, ""); ok {
			return r.node.Path() + p, true
		}
	}
	return "", false
}

// findIn finds container x in the values under v and returns its path relative to v.
func findIn(v, x any, rel string) (string, bool) {
	if v == x {
		return rel, true
	}
	switch y := v.(type) {
	case *types.List:
		for i, k := range *y {
			if p, ok := findIn(k, x, rel+"/"+strconv.Itoa(i)); ok {
				return p, true
			}
		}
	case *types.Tuple:
		for i, k := range *y {
			if p, ok := findIn(k, x, rel+"/"+strconv.Itoa(i)); ok {
				return p, true
			}
		}
	case *types.Dict:
		for _, e := range *y {
			if p, ok := findIn(e.Value, x, rel+"/"+ckpt.EscapeSegment(e.Key.(string))); ok {
				return p, true
			}
		}
	}
	return "", false
}

var _ ckpt.PagedItems = (*pureItems)(nil)

// pureItems are the items of a plain container kept as values: converted to nodes when
// they are asked for.
type pureItems struct {
	list  []any             // a list's or tuple's items
	dict  []types.DictEntry // or a dict's entries, str keys
	bytes int64

	once  sync.Once
	index map[string]int // segment -> entry, for a large dict
}

func (p *pureItems) Len() int {
	if p.dict != nil {
		return len(p.dict)
	}
	return len(p.list)
}

// Item converts item i, and (for a dict entry) gives it its key.
func (p *pureItems) Item(i int) (*ckpt.Node, error) {
	return p.item(newItemConverter(), i), nil
}

// newItemConverter is the converter items made on demand are made with: the values were
// counted against the limits when the file was opened.
func newItemConverter() *converter {
	return &converter{o: Options{MaxNodes: math.MaxInt, MaxDepth: math.MaxInt}, seen: map[any]*ckpt.Node{}}
}

func (p *pureItems) item(c *converter, i int) *ckpt.Node {
	if p.dict != nil {
		k := p.dict[i].Key.(string)
		n := c.node(p.dict[i].Value, nil, k, 0)
		n.Key, n.Seg = k, k
		return n
	}
	s := strconv.Itoa(i)
	n := c.node(p.list[i], nil, s, 0)
	n.Key, n.Seg = s, s
	return n
}

// items makes items [from, to) of n. The subtree is plain data, each container in it
// referenced once, so no two items share a value and one converter serves the page.
func (p *pureItems) Page(n *ckpt.Node, from, to int) []*ckpt.Node { return page(n, from, to, p.item) }

// page makes items [from, to) of n with item, one converter for the page (its slab, its
// memo of judged subtrees), children of n.
func page(n *ckpt.Node, from, to int, item func(c *converter, i int) *ckpt.Node) []*ckpt.Node {
	c := newItemConverter()
	out := make([]*ckpt.Node, 0, to-from)
	for i := from; i < to; i++ {
		k := item(c, i)
		k.SetParent(n)
		out = append(out, k)
	}
	return out
}

// keyed says whether items have keys of their own (a dict) rather than indexes.
func (p *pureItems) Keyed() bool { return p.dict != nil }

// lookup is the index of the entry at segment seg of a dict.
func (p *pureItems) Lookup(seg string) (int, bool) {
	if len(p.dict) < ckpt.KeyIndexMin {
		for i, e := range p.dict {
			if e.Key.(string) == seg {
				return i, true
			}
		}
		return 0, false
	}
	p.once.Do(func() {
		p.index = make(map[string]int, len(p.dict))
		for i, e := range p.dict {
			p.index[e.Key.(string)] = i
		}
	})
	i, ok := p.index[seg]
	return i, ok
}

// memBytes is what the kept values hold in memory, about.
func (p *pureItems) MemBytes() int64 { return p.bytes }
