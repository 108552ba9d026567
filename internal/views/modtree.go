package views

import (
	"slices"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// modTree is a state dict's modules while its entries are grouped: one mod per module in
// one slice, linked by index, each name and prefix a part of an entry's key. A state dict
// of 200,000 entries has as many modules or more, and as Modules (a dozen strings each,
// a pointer per child) they took most of its page's time and kept the collector busy;
// the Modules a page shows, a few thousand at most, are made from it (shown).
type modTree struct {
	key    func(i int32) string       // the key of entry i (its index among the dict's items)
	chunks [][]mod                    // the mods, modChunk at a time; mod 0 is the dict itself
	n      int32                      // mods made
	index  map[int32]map[string]int32 // the children of a module of many, by name
	dtypes []string                   // the dtypes met: mod.dtype is an index in it + 1
}

// modChunk is the number of mods in a chunk of a modTree: they are never copied as the
// tree grows.
const modChunk = 4096

// at is mod i.
func (t *modTree) at(i int32) *mod { return &t.chunks[i/modChunk][i%modChunk] }

// mod is a module of a modTree. Children come after their parent.
type mod struct {
	entry      int32 // an entry whose key holds the module's prefix
	start, end int32 // name: key(entry)[start:end]; prefix: key(entry)[:end]
	parent     int32
	first      int32 // children and next sibling, indexes in mods (0: none)
	last, next int32
	kids       int32
	leaf       int32 // the module's own entry + 1 (0: none)
	dtype      int32 // its entry's tensor's dtype + 1 (0: no tensor)
	own        int64 // that tensor's bytes
	numbered   bool  // all its children's names are indices (set by finish)
	tensors    int
	params     int64
	buffers    int64
	bytes      int64
}

func newModTree(dict *ckpt.Node) *modTree {
	t := &modTree{chunks: [][]mod{make([]mod, modChunk)}, n: 1}
	if rows, ok := dict.Lazy().(ckpt.TensorItems); ok && rows.HoldsTensors() {
		t.key = func(i int32) string { return rows.Key(int(i)) }
	} else {
		t.key = func(i int32) string { return dict.Children[i].Key }
	}
	return t
}

func (t *modTree) name(m int32) string {
	x := t.at(m)
	return t.key(x.entry)[x.start:x.end]
}

func (t *modTree) prefix(m int32) string {
	x := t.at(m)
	return t.key(x.entry)[:x.end]
}

// manyKids is the number of children from which a module's are found through an index.
const manyKids = 16

// child is p's child named name, 0 for none. The last child is the usual match: state
// dicts list a module's entries together.
func (t *modTree) child(p int32, name string) int32 {
	m := t.at(p)
	if m.last != 0 && t.name(m.last) == name {
		return m.last
	}
	if m.kids < manyKids {
		for c := m.first; c != 0; c = t.at(c).next {
			if t.name(c) == name {
				return c
			}
		}
		return 0
	}
	idx := t.index[p]
	if idx == nil {
		idx = make(map[string]int32, m.kids)
		for c := m.first; c != 0; c = t.at(c).next {
			if n := t.name(c); idx[n] == 0 { // the first of a name, as the scan finds it
				idx[n] = c
			}
		}
		if t.index == nil {
			t.index = map[int32]map[string]int32{}
		}
		t.index[p] = idx
	}
	return idx[name]
}

// add appends c as p's last child and returns its index.
func (t *modTree) add(p int32, c mod) int32 {
	c.parent = p
	ci := t.n
	if int(ci/modChunk) == len(t.chunks) {
		t.chunks = append(t.chunks, make([]mod, modChunk))
	}
	*t.at(ci) = c
	t.n++
	m := t.at(p)
	if m.last == 0 {
		m.first = ci
	} else {
		t.at(m.last).next = ci
	}
	m.last = ci
	m.kids++
	if idx := t.index[p]; idx != nil {
		if n := t.name(ci); idx[n] == 0 {
			idx[n] = ci
		}
	}
	return ci
}

// addEntry puts entry k, item i of the dict, in the tree: under the module of each part
// of its dotted key (a non-str key is one name, dots and all), as the leaf of the last.
// A ref to a tensor (the same tensor object stored under a second key) counts as the
// tensor it is, tied to it.
func (t *modTree) addEntry(ck *ckpt.Checkpoint, i int32, k *ckpt.Node) {
	key, m := k.Key, int32(0)
	for start := 0; ; {
		end := len(key)
		if j := strings.IndexByte(key[start:], '.'); j >= 0 && k.DictKey == nil {
			end = start + j
		}
		c := t.child(m, key[start:end])
		if c == 0 {
			c = t.add(m, mod{entry: i, start: int32(start), end: int32(end)})
		}
		m = c
		if end == len(key) {
			break
		}
		start = end + 1
	}
	if t.at(m).leaf != 0 {
		// The same dotted name twice (keys "a.b" and a non-str key): keep both as leaves.
		m = t.add(m, mod{entry: i, start: 0, end: int32(len(key))})
	}
	x := t.at(m)
	x.leaf = i + 1
	l := k
	if k.Kind == ckpt.KindRef {
		if r := ResolveRef(ck, k); r != nil && r.Tensor != nil && (r.Kind == ckpt.KindTensor || r.Kind == ckpt.KindNDArray) {
			l = r
		}
	}
	if l.Tensor == nil || l.Kind != ckpt.KindTensor && l.Kind != ckpt.KindNDArray {
		return
	}
	x.tensors = 1
	if isParameter(l) {
		x.params = l.Tensor.Numel()
	} else {
		x.buffers = l.Tensor.Numel()
	}
	x.bytes = l.Tensor.NBytes()
	x.own = x.bytes
	d := slices.Index(t.dtypes, l.Tensor.DType)
	if d < 0 {
		d = len(t.dtypes)
		t.dtypes = append(t.dtypes, l.Tensor.DType)
	}
	x.dtype = int32(d + 1)
}

// finish sums the counts up the tree (children come after their parents, so from the
// last module back) and orders numbered children numerically.
func (t *modTree) finish() {
	notNumbered := make([]bool, t.n)
	for c := t.n - 1; c > 0; c-- {
		x := t.at(c)
		p := t.at(x.parent)
		p.tensors += x.tensors
		p.params += x.params
		p.buffers += x.buffers
		p.bytes += x.bytes
		if _, ok := ckpt.Index(t.name(c)); !ok {
			notNumbered[x.parent] = true
		}
	}
	var kids []int32
	for p := range t.n {
		m := t.at(p)
		if m.kids == 0 || notNumbered[p] {
			continue
		}
		m.numbered = true
		kids = kids[:0]
		for c := m.first; c != 0; c = t.at(c).next {
			kids = append(kids, c)
		}
		slices.SortStableFunc(kids, func(a, b int32) int {
			x, _ := ckpt.Index(t.name(a))
			y, _ := ckpt.Index(t.name(b))
			return x - y
		})
		m.first, m.last = kids[0], kids[len(kids)-1]
		for j, c := range kids {
			t.at(c).next = 0
			if j > 0 {
				t.at(kids[j-1]).next = c
			}
		}
	}
}

// collapse is where the chain of modules from m ends: a module that holds one module and
// no entry of its own is shown as one level with it ("encoder" → "layer" becomes
// "encoder.layer"); numbered levels stay apart.
func (t *modTree) collapse(m int32) int32 {
	if _, numbered := ckpt.Index(t.name(m)); numbered {
		return m
	}
	for {
		x := t.at(m)
		if x.leaf != 0 || x.kids != 1 || x.numbered {
			return m
		}
		c := t.at(x.first)
		if c.leaf != 0 && c.kids == 0 {
			return m
		}
		if _, ok := ckpt.Index(t.name(x.first)); ok {
			return m
		}
		m = x.first
	}
}

// shown makes the Modules of p's children that a page shows, in order, within budget
// rows, each with those of its children it shows, in words; it returns them and how many
// children it left out, and notes in leaves the Modules that are entries, by item index.
func (t *modTree) shown(id string, p int32, budget *int, params, bytes int64, leaves map[int]*Module) ([]*Module, int) {
	var out []*Module
	c := t.at(p).first
	for ; c != 0 && len(out) < moduleChildrenShown && *budget > 0; c = t.at(c).next {
		*budget--
		end := t.collapse(c) // the module shown for c and the chain below it
		x := t.at(end)
		m := &Module{
			Name:   t.key(x.entry)[t.at(c).start:x.end],
			Prefix: t.prefix(end),
			// a chain's counts are its last module's: the others hold only the next
			Tensors: x.tensors, Params: x.params, Buffers: x.buffers, Bytes: x.bytes,
			leaf:        int(x.leaf),
			ModuleShown: &ModuleShown{},
		}
		m.DTypes = dtypeList(t.dtypesBelow(end))
		m.ParamsText, m.BuffersText, m.BytesText = HumanCount(m.Params), HumanCount(m.Buffers), HumanBytes(m.Bytes)
		if params > 0 {
			m.Share = Percent(m.Params, params)
		} else {
			m.Share = Percent(m.Bytes, bytes)
		}
		if x.numbered {
			m.Numbered = int(x.kids)
			kids := t.childList(end)
			m.NumberedLabel = numberedLabel(len(kids), func(i int) string { return t.name(kids[i]) })
		}
		if x.leaf != 0 {
			leaves[int(x.leaf)-1] = m
		}
		if x.kids > 0 {
			m.Children, m.More = t.shown(id, end, budget, params, bytes, leaves)
			if m.More > 0 {
				m.MoreURL = SearchPageURL(id, m.Prefix+".", 0)
			}
		}
		out = append(out, m)
	}
	return out, int(t.at(p).kids) - len(out)
}

// childList is m's children in order.
func (t *modTree) childList(m int32) []int32 {
	out := make([]int32, 0, t.at(m).kids)
	for c := t.at(m).first; c != 0; c = t.at(c).next {
		out = append(out, c)
	}
	return out
}

// dtypesBelow sums the bytes of each dtype of the tensors in m's subtree.
func (t *modTree) dtypesBelow(m int32) []dtypeBytes {
	sums := make([]int64, len(t.dtypes))
	seen := make([]bool, len(t.dtypes))
	stack := []int32{m}
	for len(stack) > 0 {
		x := t.at(stack[len(stack)-1])
		stack = stack[:len(stack)-1]
		if x.dtype != 0 {
			sums[x.dtype-1] += x.own
			seen[x.dtype-1] = true
		}
		for c := x.first; c != 0; c = t.at(c).next {
			stack = append(stack, c)
		}
	}
	var out []dtypeBytes
	for d, ok := range seen {
		if ok {
			out = append(out, dtypeBytes{t.dtypes[d], sums[d]})
		}
	}
	return out
}
