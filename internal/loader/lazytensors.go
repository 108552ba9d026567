package loader

import (
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// Large state dicts kept as rows. A torch pickle read in one pass (torchpass.go) holds
// each tensor as a row of its table; a state dict of 200,000 tensors made into nodes at
// open holds 200,000 nodes, tensors and paths (about 0.7 kB each) for as long as the
// checkpoint is open, while a page shows 200 of them. So a dict whose keys are all str and
// whose values are all tensors (a state dict, an OrderedDict with its _metadata, a dict of
// experts) keeps its entries as the rows they are (tensorItems), and makes their nodes a
// page at a time when they are looked at, exactly as the converter makes them (the tests
// hold the two to each other on every torch file). Walk visits them, so everything that
// walks the tree (statistics, the dtype table, diff, search) sees every tensor; a node
// made twice is two nodes, of one path, tensor and storage. Every such dict keeps its rows,
// small ones too, so that every file and test meets one way of making them.
//
// An entry is a row when its tensor is the one view of its storage and is stored once
// (markTogether). What a row's node would set in the tree at open is set at open from the
// rows: the counts of tensors, elements and bytes per dtype, the values, the check of its
// view. Its storage is made with the node, with that node as its one user; the
// checkpoint's Storages leave such storages out (RowStorages counts them). Any other
// entry is converted at open as the general path converts it, in its place among the
// rows: a tied weight (two keys, one tensor: the second a ref to the first), tensors that
// view one storage (a weight and its slices), with their storage and its users shared as
// in any tree. They are nodes, counted against -max-nodes; a state dict of 150,000
// tensors with its embedding tied to its output layer keeps 149,998 rows and makes two
// nodes. The dict's attributes (an OrderedDict's _metadata) follow the entries, made at
// open (keepRows).

// slotTensors is a dict slot of a torch pickle read in one pass that keeps its rows.
type slotTensors struct {
	t *plainTree
	v uint32
}

// keepsRows says whether dict slot v keeps its entries as rows: a dict or OrderedDict
// with entries, each a tensor at a str key, at least one of them a row (tb.isRow).
func (t *plainTree) keepsRows(v uint32) bool {
	if k := t.kindOf(v); !t.tb.keepRows || k != pDict && k != pODict || *t.aux(v) == 0 {
		return false
	}
	ok, rows := true, false
	t.eachItem(v, func(item, key uint32) {
		ok = ok && t.kindOf(key) == pStr && t.kindOf(item) == pTensor
		rows = rows || ok && t.tb.isRow(*t.val(item))
	})
	return ok && rows
}

// markTogether marks the storages whose tensors cannot be rows: those viewed by more than
// one tensor of the table, and those of a tensor the pickle stores more than once.
func (tb *torchTables) markTogether() {
	tb.together = make([]uint64, (len(tb.storages)+63)/64)
	seen := make([]uint64, len(tb.together))
	for _, p := range tb.tensors {
		s := p.storage
		if seen[s/64]&(1<<(s%64)) != 0 {
			tb.together[s/64] |= 1 << (s % 64)
		}
		seen[s/64] |= 1 << (s % 64)
	}
	for i := range tb.shared {
		s := tb.tensors[i].storage
		tb.together[s/64] |= 1 << (s % 64)
	}
}

// isRow says whether tensor i can be a row: the one view of its storage, stored once.
func (tb *torchTables) isRow(i uint64) bool {
	s := tb.tensors[i].storage
	return tb.together[s/64]&(1<<(s%64)) == 0
}

var _ ckpt.TensorItems = (*tensorItems)(nil)

// tensorItems are the entries of a dict kept as rows, then its attributes.
type tensorItems struct {
	t    *plainTree
	kids []uint32 // the entries' key slots, in order
	// madeAt are the entries (in order) that are nodes made at open, made: a tensor whose
	// storage another tensor views too, or that is stored twice (and its refs)
	madeAt []int
	made   []*ckpt.Node
	attrs  []*ckpt.Node // the attributes, converted at open
	file   string       // the file of a set the storages are in (absorb)
	// mem is what the rows hold, counted by the first dict of the tree that keeps them
	mem int64

	indexOnce sync.Once
	index     map[string]int
}

func (p *tensorItems) Len() int           { return len(p.kids) + len(p.attrs) }
func (p *tensorItems) Rows() int          { return len(p.kids) }
func (p *tensorItems) Key(i int) string   { return p.t.str(p.kids[i]) }
func (p *tensorItems) Keyed() bool        { return true }
func (p *tensorItems) HoldsTensors() bool { return true }
func (p *tensorItems) MemBytes() int64    { return p.mem }

func (p *tensorItems) NextMade(from int) (int, *ckpt.Node) {
	j, _ := slices.BinarySearch(p.madeAt, from)
	if j == len(p.madeAt) {
		return len(p.kids), nil
	}
	return p.madeAt[j], p.made[j]
}

// madeNode is entry i's node made at open, nil for a row.
func (p *tensorItems) madeNode(i int) *ckpt.Node {
	if len(p.madeAt) == 0 {
		return nil
	}
	if j, ok := slices.BinarySearch(p.madeAt, i); ok {
		return p.made[j]
	}
	return nil
}

func (p *tensorItems) RowTensor(i int) (string, []int64) {
	row := p.row(i)
	shape, _ := p.t.tb.dimsOf(row)
	return p.t.tb.dtypes[p.t.tb.storages[row.storage].dtype], shape
}

func (p *tensorItems) Item(i int) (*ckpt.Node, error) { return p.Page(nil, i, i+1)[0], nil }

// Lookup finds an entry by segment: through an index of the keys, made at the first
// lookup (a page of entries needs none), or an attribute.
func (p *tensorItems) Lookup(seg string) (int, bool) {
	p.indexOnce.Do(func() {
		p.index = make(map[string]int, len(p.kids))
		for i := len(p.kids) - 1; i >= 0; i-- {
			p.index[p.t.str(p.kids[i])] = i
		}
	})
	if i, ok := p.index[seg]; ok {
		return i, true
	}
	for i, a := range p.attrs {
		if a.Seg == seg {
			return len(p.kids) + i, true
		}
	}
	return 0, false
}

// Page makes items [from, to) as children of n: an entry's tensor node from its row, as
// the converter makes it (converter.tensor), with a Storage of its own (its one user), an
// attribute as it was converted.
func (p *tensorItems) Page(n *ckpt.Node, from, to int) []*ckpt.Node {
	from, to = max(0, from), min(to, p.Len())
	if from >= to {
		return nil
	}
	out := make([]*ckpt.Node, 0, to-from)
	rows := min(to, len(p.kids)) - min(from, len(p.kids))
	nodes := make([]ckpt.Node, rows)
	tensors := make([]ckpt.Tensor, rows)
	storages := make([]ckpt.Storage, rows)
	var prefix []byte
	if n != nil {
		prefix = n.AppendPath(nil)
	}
	paths := make([]byte, 0, rows*(len(prefix)+24))
	users := make([]string, rows)
	t := p.t
	tb := &t.tb
	for i := from; i < to; i++ {
		if i >= len(p.kids) {
			out = append(out, p.attrs[i-len(p.kids)])
			continue
		}
		if m := p.madeNode(i); m != nil {
			out = append(out, m)
			continue
		}
		j := i - from
		m, tt, st := &nodes[j], &tensors[j], &storages[j]
		row := p.row(i)
		tb.fillStorage(st, row.storage)
		st.File = p.file
		key := t.str(p.kids[i])
		start := len(paths)
		paths = append(append(append(paths, prefix...), '/'), ckpt.EscapeSegment(key)...)
		// the bytes of a path are never written again (paths only grows, and a larger
		// buffer leaves the old one to the paths made in it)
		users[j] = unsafe.String(&paths[start], len(paths)-start)
		st.Users = users[j : j+1 : j+1]
		m.Kind, m.Type, m.Key, m.Seg = ckpt.KindTensor, "torch.Tensor", key, key
		if row.param {
			m.Type = "torch.nn.parameter.Parameter"
		}
		shape, strides := tb.dimsOf(row)
		*tt = ckpt.Tensor{DType: st.DType, Shape: shape, Strides: strides, StorageOffset: row.offset,
			Storage: st, RequiresGrad: row.requiresGrad}
		m.Tensor = tt
		m.SetParent(n)
		out = append(out, m)
	}
	return out
}

// row is the tensor row of entry i.
func (p *tensorItems) row(i int) ptensor {
	t := p.t
	return t.tb.tensors[*t.val(*t.next(p.kids[i]) - 1)]
}

// plainOnly says whether the values under container slot v are plain data: lists, tuples,
// dicts and OrderedDicts without attributes, with str keys, of scalars, str and bytes;
// nothing else a torch pickle adds.
func (t *plainTree) plainOnly(v uint32) bool {
	stack := []uint32{v}
	ok := true
	for len(stack) > 0 && ok {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch k := t.kindOf(v); k {
		case pTensor, pRef, pGlobal, pStorage:
			return false
		case pList, pTuple, pDict, pODict:
			if _, built := t.tb.attrs[v]; built {
				return false
			}
			t.eachItem(v, func(item, key uint32) {
				ok = ok && (key == noKey || t.kindOf(key) == pStr)
				stack = append(stack, item)
			})
		}
	}
	return ok
}

// checkViews holds each row's view to its storage as opener.checkViews holds a tensor
// node's, in order, without making the nodes.
func (p *tensorItems) checkViews(n *ckpt.Node) error {
	tb := &p.t.tb
	var st ckpt.Storage
	for i := range p.kids {
		if m := p.madeNode(i); m != nil {
			if m.Tensor != nil {
				if err := checkView(m.Tensor); err != nil {
					return &Error{Msg: fmt.Sprintf("tensor %s: %v", displayPath(m.Path()), err), Offset: -1}
				}
			}
			continue
		}
		row := p.row(i)
		tb.fillStorage(&st, row.storage)
		shape, strides := tb.dimsOf(row)
		view := ckpt.Tensor{DType: st.DType, Shape: shape, Strides: strides, StorageOffset: row.offset, Storage: &st}
		if err := checkView(&view); err != nil {
			return &Error{Msg: fmt.Sprintf("tensor %s: %v", displayPath(p.Page(n, i, i+1)[0].Path()), err), Offset: -1}
		}
	}
	return nil
}

// keepRows gives node n (the dict of x, at depth) its entries as rows, sets what their
// nodes would set (the counts, the values) and makes its attributes: one of plain data
// large enough to be kept as values (a state dict's _metadata, a dict per module) is kept
// as the slots it is, like the plain data of a raw pickle, so that it counts against
// -max-values (which the builder held it to), not -max-nodes: a model's state dict of
// 100,000 tensors has a _metadata of about 150,000 values. An attribute whose key is not a
// str, or whose segment is an entry's key (which the converter would move to a free
// segment), has the dict converted entry by entry instead.
func (c *converter) keepRows(n *ckpt.Node, x *slotTensors, depth int) {
	t := x.t
	tb := &t.tb
	var attrKeys, attrVals []uint32
	if s, ok := tb.attrs[x.v]; ok {
		strKeys := t.kindOf(s) == pDict
		if strKeys {
			t.eachItem(s, func(item, key uint32) {
				strKeys = strKeys && t.kindOf(key) == pStr
				attrKeys, attrVals = append(attrKeys, key), append(attrVals, item)
			})
		}
		if !strKeys {
			c.slotEntries(n, &slotODict{t: t, v: x.v}, depth)
			return
		}
	}
	if depth+1 > c.o.MaxDepth {
		c.admit(n, "", depth+1) // the error the first entry would meet
		return
	}
	p := &tensorItems{t: t, kids: make([]uint32, 0, *t.aux(x.v))}
	t.eachKey(x.v, func(k uint32) { p.kids = append(p.kids, k) })
	if len(attrKeys) > 0 {
		segs := make(map[string]bool, len(attrKeys))
		for _, k := range attrKeys {
			segs[t.str(k)] = true
		}
		for _, k := range p.kids {
			if segs[t.str(k)] {
				c.slotEntries(n, &slotODict{t: t, v: x.v}, depth)
				return
			}
		}
	}
	ck := c.ck
	if ck.BytesByDType == nil {
		ck.BytesByDType = map[string]int64{}
	}
	rows := 0
	for i, k := range p.kids {
		if i&0xffff == 0xffff && c.o.pastDeadline() {
			c.err = c.o.timeError()
			return
		}
		item := *t.next(k) - 1
		if !tb.isRow(*t.val(item)) {
			// converted as the general path converts it: a tensor that shares its storage
			// (its users listed on it), or a ref to its first place
			key := t.str(k)
			m := c.child(t.value(item), n, key, key, depth)
			if c.err != nil {
				return
			}
			p.madeAt, p.made = append(p.madeAt, i), append(p.made, m)
			continue
		}
		rows++
		row := p.row(i)
		tb.holdRow(row.storage)
		dt := tb.dtypes[tb.storages[row.storage].dtype]
		shape, _ := tb.dimsOf(row)
		view := ckpt.Tensor{DType: dt, Shape: shape}
		ck.Parameters = addSat(ck.Parameters, view.Numel())
		ck.BytesByDType[dt] = addSat(ck.BytesByDType[dt], view.NBytes())
	}
	ck.Tensors += rows
	if ck.Tensors > c.o.MaxTensors {
		c.err = c.o.tooManyTensors()
		return
	}
	c.rowValues += rows
	n.SetLazy(p)
	for i, v := range attrVals {
		key := t.str(attrKeys[i])
		var a *ckpt.Node
		if t.kindOf(v).container() && t.size(v) >= pureMin && t.plainOnly(v) {
			a = t.node(c, v) // kept as values, as keepPlain keeps such a value
			c.rowValues += t.size(v)
		} else {
			a = c.node(t.value(v), n, key, depth+1)
		}
		a.Key, a.Seg, a.Attr = key, key, true
		a.SetParent(n)
		p.attrs = append(p.attrs, a)
		if c.err != nil {
			return
		}
	}
	n.Len = int64(p.Len())
	p.mem = int64(len(p.kids))*4 + int64(len(p.attrs))*int64(unsafe.Sizeof(ckpt.Node{}))
	for _, m := range p.made { // a node, its tensor, its place among the made and its paths
		p.mem += int64(unsafe.Sizeof(ckpt.Node{})+unsafe.Sizeof(ckpt.Tensor{})) + 24 + 2*int64(len(m.Key)+len(m.Target))
	}
	if !c.rowsCounted { // the tree and its tables, once
		c.rowsCounted = true
		p.mem += t.memBytes() + int64(cap(tb.tensors))*int64(unsafe.Sizeof(ptensor{})) + int64(cap(tb.dims))*8 +
			int64(cap(tb.storages))*int64(unsafe.Sizeof(pstorage{})) + int64(cap(tb.offs))*8 + int64(cap(tb.ps))*8
	}
}
