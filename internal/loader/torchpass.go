package loader

import (
	"io"
	"math"
	"slices"
	"strings"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"

	"github.com/nlpodyssey/gopickle/types"
)

// A torch state dict in one pass. torch.save of a state dict, an optimizer's state or any
// dict of tensors writes a pickle of plain data and of torch's own vocabulary only: the
// globals collections.OrderedDict, torch._utils._rebuild_tensor_v2 and _rebuild_parameter
// and the storage classes (torch.FloatStorage...), by GLOBAL or STACK_GLOBAL, each tensor's
// storage as a persistent id ('storage', class, key, location, numel), REDUCE of those
// globals and BUILD of an OrderedDict's attributes (a state dict's _metadata). Such a
// pickle runs nothing but torch's own rebuilding of tensors, and its 200,000 tensors are
// millions of pickle values: the general path (scan, gopickle, convert) made each of them
// three times. So a torch archive's data.pkl is first read by the plain builder with that
// vocabulary too (b.torch), into the same flat arrays plus a table of tensors and one of
// storages; the values each REDUCE consumes are given back at once (reclaim). Its tree is
// then made into the values the unpickler's stand-ins make (pyDict, a pyStorage per storage
// key, and for each tensor a tensorRef the converter makes a pyTensor of, one at a time)
// and converted by the general path's converter, so that a tensor looks the same whichever
// path read it; the tests hold the two paths to each other on every torch file they have.
//
// Besides the plain builder's values, such a pickle may have dicts with int keys (an
// optimizer's state) and a tensor as its whole value.
//
// Fail closed: anything else gives the pickle to the general path, unread: another
// global, a call of a global with other arguments than torch.save writes (a storage id of
// another shape, a tensor with backward hooks or metadata, an OrderedDict built from
// items), BUILD of anything but a dict on an OrderedDict, a global or storage left in the
// tree, a storage met a second time through the memo or DUP, a container met again while it
// is still being filled, and every rule of the plain builder. A tensor or a complete
// container met a second time (a tied weight: lm_head.weight stored as the embedding's
// tensor; the betas tuple two param groups share) is a ref to its first place in the tree,
// as the general path makes it. The
// weights_only verdict is judged on the way, by the scanner's rules (opcodes and globals:
// the vocabulary holds nothing else it judges: every SETITEM is on a dict or an
// OrderedDict, every APPEND on a list).

// The globals of the vocabulary (a pGlobal's val; a storage class also holds its dtype's
// index in torchTables.dtypes above the low byte).
const (
	gODict uint64 = iota + 1
	gRebuild
	gParam
	gStorage
)

// torchTables is what a torch pickle holds besides plain data.
type torchTables struct {
	tensors  []ptensor
	dims     []int64 // each tensor's shape then its strides
	storages []pstorage
	// byKey finds a storage by key once the keys are not torch's own "0", "1", "2"... in
	// order (which find reads as numbers)
	byKey  map[string]uint32
	locs   []string          // the storages' locations ("cpu", "cuda:0"), once each
	attrs  map[uint32]uint32 // an OrderedDict's slot -> the slot of the dict its BUILD set
	dtypes []string
	// ps are the storages as the stand-ins hold them, made once the file's members are
	// known to hold them (in the order the pickle names them, as the general path does)
	ps      []*pyStorage
	scratch pyTensor
	// shared are the tensors the pickle stores more than once (GET or DUP of one): the
	// tree has the first place and refs to it
	shared map[uint32]bool
	// sharedSlots are the containers the memo hands out again (refs to them are pRef
	// slots), and values the value made of each, one for all its places
	sharedSlots map[uint32]bool
	values      map[uint32]any
	// offs are the storages' data offsets in data, the file, and order their byte order;
	// rows marks the storages of rows (lazytensors.go), whose Storage each node of a row
	// makes
	tree  *plainTree // the tree the tables are part of (its text holds the keys)
	offs  []int64
	data  io.ReaderAt
	order string
	rows  []uint64
	// stSlab and psSlab are where the storages nodes need are made, many at a time
	stSlab []ckpt.Storage
	psSlab []pyStorage
	// keepRows says that a dict of tensors keeps its entries as rows (lazytensors.go);
	// together marks the storages whose tensors are nodes instead (markTogether)
	keepRows bool
	together []uint64
}

// storage is storage i as the stand-ins hold it, made at its first use.
func (tb *torchTables) storage(i uint32) *pyStorage {
	if p := tb.ps[i]; p != nil {
		return p
	}
	if len(tb.stSlab) == 0 { // many at once: one allocation each for a state dict's storages
		n := min(len(tb.storages), nodeSlab)
		tb.stSlab, tb.psSlab = make([]ckpt.Storage, n), make([]pyStorage, n)
	}
	st, p := &tb.stSlab[0], &tb.psSlab[0]
	tb.stSlab, tb.psSlab = tb.stSlab[1:], tb.psSlab[1:]
	tb.fillStorage(st, i)
	*p = pyStorage{st: st, numel: tb.storages[i].numel}
	tb.ps[i] = p
	return p
}

// fillStorage sets st to the Storage of storage i, without users.
func (tb *torchTables) fillStorage(st *ckpt.Storage, i uint32) {
	s := tb.storages[i]
	dt := tb.dtypes[s.dtype]
	*st = ckpt.Storage{Key: tb.tree.key(int(i)), DType: dt, Location: tb.locs[s.loc], ByteOrder: tb.order,
		Data: tb.data, Offset: tb.offs[i], Size: s.numel * int64(ckpt.DTypeSize(dt))}
}

// rowHeld says whether storage i is a row's; holdRow makes it one.
func (tb *torchTables) rowHeld(i int) bool {
	return i/64 < len(tb.rows) && tb.rows[i/64]&(1<<(i%64)) != 0
}
func (tb *torchTables) holdRow(i uint32) {
	if tb.rows == nil {
		tb.rows = make([]uint64, (len(tb.storages)+63)/64)
	}
	tb.rows[i/64] |= 1 << (i % 64)
}

// shareSlot records that container slot v is in the tree more than once.
func (tb *torchTables) shareSlot(v uint32) {
	if tb.sharedSlots == nil {
		tb.sharedSlots = map[uint32]bool{}
	}
	tb.sharedSlots[v] = true
}

// share records that tensor i is stored more than once.
func (tb *torchTables) share(i uint64) {
	if tb.shared == nil {
		tb.shared = map[uint32]bool{}
	}
	tb.shared[uint32(i)] = true
}

type ptensor struct {
	offset       int64
	dims, ndim   uint32
	storage      uint32
	requiresGrad bool
	param        bool
}

// pstorage is a storage named by a persistent id: its key (in the text arena), location
// and dtype (indexes in locs and dtypes), and its size in elements.
type pstorage struct {
	key        uint64
	keyLen     uint32
	loc, dtype uint16
	numel      int64
}

// key is storage i's key.
func (t *plainTree) key(i int) string {
	s := t.tb.storages[i]
	if s.keyLen == 0 {
		return ""
	}
	return unsafe.String(&t.text[s.key], int(s.keyLen))
}

// find is the index of the storage with key, if one was named.
func (t *plainTree) find(key string) (uint32, bool) {
	tb := &t.tb
	if tb.byKey != nil {
		i, ok := tb.byKey[key]
		return i, ok
	}
	if n, ok := ckpt.Index(key); ok && n < len(tb.storages) {
		return uint32(n), true
	}
	return 0, false
}

// addStorage records a storage not named before.
func (b *plainBuilder) addStorage(key, loc uint32, dtype uint64, numel int64) (uint32, error) { // key, loc: str slots
	t := &b.t
	tb := &t.tb
	if len(tb.storages) >= math.MaxUint32-1 {
		return 0, errNotPlain
	}
	i := uint32(len(tb.storages))
	l := t.str(loc)
	li := slices.Index(tb.locs, l)
	if li < 0 {
		if len(tb.locs) >= math.MaxUint16 {
			return 0, errNotPlain
		}
		li = len(tb.locs)
		tb.locs = append(tb.locs, strings.Clone(l))
	}
	tb.storages = append(grow(tb.storages, 1), pstorage{key: *t.val(key), keyLen: *t.aux(key), loc: uint16(li), dtype: uint16(dtype), numel: numel})
	k := t.key(int(i))
	if n, ok := ckpt.Index(k); tb.byKey == nil && (!ok || n != int(i)) {
		tb.byKey = make(map[string]uint32, i+1)
		for j := range i {
			tb.byKey[t.key(int(j))] = j
		}
	}
	if tb.byKey != nil {
		tb.byKey[k] = i
	}
	return i, nil
}

// torchGlobal is the vocabulary's id of module.name, or 0.
func (b *plainBuilder) torchGlobal(module, name string) uint64 {
	switch {
	case module == "collections" && name == "OrderedDict":
		return gODict
	case module == "torch._utils" && name == "_rebuild_tensor_v2":
		return gRebuild
	case module == "torch._utils" && name == "_rebuild_parameter":
		return gParam
	case module == "torch":
		d, ok := storageDType("torch." + name)
		if !ok {
			return 0
		}
		tb := &b.t.tb
		for i, x := range tb.dtypes {
			if x == d {
				return gStorage | uint64(i)<<8
			}
		}
		tb.dtypes = append(tb.dtypes, d)
		return gStorage | uint64(len(tb.dtypes)-1)<<8
	}
	return 0
}

// line reads a GLOBAL's text argument, up to its newline; the vocabulary's names are short.
func (b *plainBuilder) line() (string, bool) {
	var l []byte
	for len(l) < 64 {
		p := b.bytes(1)
		if p == nil {
			return "", false
		}
		if p[0] == '\n' {
			return string(l), true
		}
		l = append(l, p[0])
	}
	return "", false
}

// items are the slots of the items of tuple s when it has n of them (a view of a buffer,
// valid until the next call).
func (b *plainBuilder) items(s pslot, n int) ([]uint32, bool) {
	t := &b.t
	if t.kindOf(s.v) != pTuple || int(*t.aux(s.v)) != n {
		return nil, false
	}
	out := b.argBuf[:0]
	t.eachItem(s.v, func(item, _ uint32) { out = append(out, item) })
	b.argBuf = out
	return out, true
}

// ints appends the values of a tuple of ints (a size or a stride) to the tensors' dims.
func (b *plainBuilder) ints(v uint32) bool {
	t := &b.t
	if t.kindOf(v) != pTuple {
		return false
	}
	ok := true
	t.eachItem(v, func(item, _ uint32) {
		ok = ok && t.kindOf(item) == pInt
		t.tb.dims = append(grow(t.tb.dims, 1), int64(*t.val(item)))
	})
	return ok
}

// emptyODict says whether slot v is an OrderedDict with no entries and no attributes.
func (b *plainBuilder) emptyODict(v uint32) bool {
	t := &b.t
	_, built := t.tb.attrs[v]
	return t.kindOf(v) == pODict && *t.aux(v) == 0 && !built
}

// torchOp reads an opcode of torch's vocabulary.
func (b *plainBuilder) torchOp(op byte) error {
	t := &b.t
	tb := &t.tb
	switch op {
	case opGlobal, opStackGlobal:
		var module, name string
		ok1, ok2 := false, false
		if op == opGlobal {
			module, ok1 = b.line()
			name, ok2 = b.line()
		} else if n, ok := b.pop(); ok && t.kindOf(n.v) == pStr {
			if m, ok := b.pop(); ok && t.kindOf(m.v) == pStr {
				module, name, ok1, ok2 = t.str(m.v), t.str(n.v), true, true
			}
		}
		if !ok1 || !ok2 {
			return errNotPlain
		}
		g := b.torchGlobal(module, name)
		if g == 0 {
			return errNotPlain
		}
		b.wo.global(module, name)
		return b.add(pGlobal, g, 0)
	case opBinPersID:
		s, ok := b.pop()
		if !ok {
			return errNotPlain
		}
		it, ok := b.items(s, 5)
		if !ok || t.kindOf(it[0]) != pStr || t.str(it[0]) != "storage" || t.kindOf(it[1]) != pGlobal ||
			*t.val(it[1])&0xff != gStorage || t.kindOf(it[2]) != pStr || t.kindOf(it[3]) != pStr ||
			t.kindOf(it[4]) != pInt || int64(*t.val(it[4])) < 0 {
			return errNotPlain
		}
		i, seen := t.find(t.str(it[2]))
		if !seen {
			var err error
			if i, err = b.addStorage(it[2], it[3], *t.val(it[1])>>8, int64(*t.val(it[4]))); err != nil {
				return err
			}
		}
		return b.add(pStorage, uint64(i), 0)
	case opReduce:
		args, ok1 := b.pop()
		fn, ok2 := b.pop()
		if !ok1 || !ok2 || t.kindOf(fn.v) != pGlobal {
			return errNotPlain
		}
		switch *t.val(fn.v) & 0xff {
		case gODict:
			if _, ok := b.items(args, 0); !ok {
				return errNotPlain
			}
			b.reclaim(fn.v)
			return b.add(pODict, 0, 0)
		case gRebuild:
			// (storage, storage_offset, size, stride, requires_grad, backward_hooks)
			it, ok := b.items(args, 6)
			if !ok || t.kindOf(it[0]) != pStorage || t.kindOf(it[1]) != pInt || !b.emptyODict(it[5]) {
				return errNotPlain
			}
			ndim, rg := *t.aux(it[2]), t.kindOf(it[4])
			p := ptensor{offset: int64(*t.val(it[1])), storage: uint32(*t.val(it[0])), requiresGrad: rg == pTrue,
				dims: uint32(len(tb.dims)), ndim: ndim}
			if *t.aux(it[3]) != ndim || (rg != pTrue && rg != pFalse) || len(tb.dims) > math.MaxUint32-2*int(ndim) ||
				!b.ints(it[2]) || !b.ints(it[3]) {
				return errNotPlain
			}
			b.reclaim(fn.v)
			return b.tensor(p)
		case gParam:
			// (tensor, requires_grad, backward_hooks)
			it, ok := b.items(args, 3)
			if !ok || t.kindOf(it[0]) != pTensor || !b.emptyODict(it[2]) {
				return errNotPlain
			}
			rg := t.kindOf(it[1])
			if rg != pTrue && rg != pFalse {
				return errNotPlain
			}
			// the tensor is made a Parameter in its own row, which the REDUCE consumed, unless
			// the tensor is also stored as it is (a new row then)
			i := *t.val(it[0])
			if tb.shared[uint32(i)] {
				p := tb.tensors[i]
				p.param, p.requiresGrad = true, rg == pTrue
				b.reclaim(fn.v)
				return b.tensor(p)
			}
			tb.tensors[i].param, tb.tensors[i].requiresGrad = true, rg == pTrue
			b.reclaim(fn.v)
			return b.add(pTensor, i, 0)
		}
		return errNotPlain
	case opBuild:
		state, ok := b.pop()
		d := b.top()
		if !ok || d == nil || t.kindOf(d.v) != pODict || t.kindOf(state.v) != pDict {
			return errNotPlain
		}
		if _, built := tb.attrs[d.v]; built {
			return errNotPlain
		}
		if tb.attrs == nil {
			tb.attrs = map[uint32]uint32{}
		}
		b.seal(state)
		tb.attrs[d.v] = state.v
		b.keyedFrom = max(b.keyedFrom, d.v+1)
		d.size += state.size
		d.under(state)
		return nil
	}
	return errNotPlain
}

// tensor records a tensor and pushes it. The tensors made are held to -max-tensors as they
// are made (the tree would hold them all), so that a file over it is refused before its
// whole pickle is read.
func (b *plainBuilder) tensor(p ptensor) error {
	tb := &b.t.tb
	if len(tb.tensors) >= math.MaxUint32-1 {
		return errNotPlain
	}
	if len(tb.tensors) >= b.o.MaxTensors {
		return b.o.tooManyTensors()
	}
	tb.tensors = append(grow(tb.tensors, 1), p)
	return b.add(pTensor, uint64(len(tb.tensors)-1), 0)
}

// reclaim gives back the slots from lo up once a REDUCE has consumed them: the callable
// (slot lo) and its arguments, with everything made since, which nothing in the tree can
// reach. A torch pickle makes about eighteen values for each tensor and keeps two (its key
// and the tensor), so this keeps its slots to what the tree holds.
//
// Everything on the stack above the callable was made after it, so its slots are lo and
// above; a container with slots from lo up is linked only to slots from lo up. What
// else can name such a slot is the memo: the entries written since the callable was
// pushed, which are the last ones (pickle.dump numbers them in order; with an entry
// written out of that order, nothing is reclaimed). A scalar the memo holds is moved below
// the new end; a container, tensor or storage the memo holds is dropped from it, as a GET
// of it gives the file to the general path anyway. Nothing is reclaimed when a dict
// from lo up has keys (the count of values left would be off) or an OrderedDict there has
// attributes.
func (b *plainBuilder) reclaim(lo uint32) {
	t := &b.t
	if b.keyedFrom > lo || b.oddMemo > lo {
		return
	}
	j := b.memo.n
	for ; j > 0; j-- {
		if v := *b.memo.at(j - 1); v != memoGone && (v == 0 || v-1 < lo) {
			break
		}
	}
	held := b.reloc[:0]
	for i := j; i < b.memo.n; i++ {
		if v := *b.memo.at(i); v != memoGone {
			if k := t.kindOf(v - 1); k.container() || k == pTensor || k == pStorage || k == pRef && uint32(*t.val(v - 1)) >= lo {
				*b.memo.at(i) = memoGone
			} else {
				held = append(held, relocSlot{memo: uint32(i), k: k, val: *t.val(v - 1), aux: *t.aux(v - 1)})
			}
		}
	}
	b.reloc = held
	b.values -= int(t.n-lo) - len(held)
	t.n = lo
	for _, h := range held {
		*b.memo.at(int(h.memo)) = t.slot(h.k, h.val, h.aux) + 1
	}
}

// memoGone marks a memo entry whose slot was reclaimed: a GET of it reads the file the
// general way.
const memoGone = math.MaxUint32

type relocSlot struct {
	memo uint32
	k    pkind
	val  uint64
	aux  uint32
}

// tensorRef is tensor i of a torchTables as a value of the tree: the converter makes its
// node from the table (tensorAt), so that no pyTensor is made for each of them.
type tensorRef uint32

// dimsOf is the shape and the strides of tensor row p, views of dims that an append
// cannot reach.
func (tb *torchTables) dimsOf(p ptensor) (shape, strides []int64) {
	n := p.ndim
	return tb.dims[p.dims : p.dims+n : p.dims+n], tb.dims[p.dims+n : p.dims+2*n : p.dims+2*n]
}

// tensorAt is tensor i as the stand-ins make it, in a value reused for every tensor (the
// converter keeps nothing of the pyTensor it is given but the slices of its shape and
// strides, which are views of dims).
func (tb *torchTables) tensorAt(i tensorRef) *pyTensor {
	p := tb.tensors[i]
	x := &tb.scratch
	shape, stride := tb.dimsOf(p)
	*x = pyTensor{storage: tb.storage(p.storage), offset: p.offset, shape: shape, stride: stride,
		requiresGrad: p.requiresGrad, typeName: "torch.Tensor"}
	if p.param {
		x.typeName = "torch.nn.parameter.Parameter"
	}
	return x
}

// slotODict is an OrderedDict of a torch pickle read in one pass whose keys are all str
// (a state dict), as a value of the tree: the converter makes its entries from its slots
// (slotEntries), so that no entry is made for each of them.
type slotODict struct {
	t *plainTree
	v uint32
}

// strKeys says whether every key of dict slot v is a str.
func (t *plainTree) strKeys(v uint32) bool {
	ok := true
	t.eachKey(v, func(k uint32) { ok = ok && t.kindOf(k) == pStr })
	return ok
}

// slotEntries adds the entries of x as n's children, as distinctEntries adds those of the
// OrderedDict the stand-ins make, then its attributes (a state dict's _metadata). A tensor
// nothing else holds is made from its row at once.
func (c *converter) slotEntries(n *ckpt.Node, x *slotODict, depth int) {
	t := x.t
	n.Children = make([]*ckpt.Node, 0, *t.aux(x.v))
	t.eachItem(x.v, func(item, key uint32) {
		if c.err != nil {
			return
		}
		k := t.str(key)
		if !c.unshared || t.kindOf(item) != pTensor {
			n.Children = append(n.Children, c.child(t.value(item), n, k, k, depth))
			return
		}
		m := c.admit(n, k, depth+1)
		if m == nil {
			m = c.newNode()
			m.Seg = k
			m.SetParent(n)
			c.tensor(m, c.torch.tensorAt(tensorRef(*t.val(item))))
		}
		m.Key = k
		n.Children = append(n.Children, m)
	})
	if s, ok := t.tb.attrs[x.v]; ok && c.err == nil {
		if sd, ok := t.value(s).(*types.Dict); ok {
			before := len(n.Children)
			c.attrs(n, *sd, depth)
			for _, k := range n.Children[before:] {
				k.Attr = true
			}
		}
	}
}

// odict is OrderedDict slot v as the stand-ins make it, with its entries made.
func (t *plainTree) odict(v uint32, entries []types.DictEntry) *pyDict {
	d := &pyDict{typeName: "collections.OrderedDict", entries: entries, distinct: true}
	for _, e := range entries {
		if _, ok := e.Key.(string); !ok {
			d.distinct = false
			break
		}
	}
	if s, ok := t.tb.attrs[v]; ok {
		if sd, ok := t.value(s).(*types.Dict); ok {
			d.attrs = *sd
		}
	}
	return d
}

// treeKinds says whether every value under root can be in a tree: no global and no
// storage (the vocabulary's calls consume them; one left as a value goes the general way).
func (t *plainTree) treeKinds(root uint32) bool {
	stack := []uint32{root}
	seen := map[uint32]bool{} // the containers refs lead to, visited once
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch t.kindOf(v) {
		case pGlobal, pStorage:
			return false
		case pRef:
			if target := uint32(*t.val(v)); !seen[target] {
				seen[target] = true
				stack = append(stack, target)
			}
		}
		if t.kindOf(v).container() {
			t.eachItem(v, func(item, _ uint32) { stack = append(stack, item) })
			if s, ok := t.tb.attrs[v]; ok {
				stack = append(stack, s)
			}
		}
	}
	return true
}

// readTorchPickle reads a torch archive's data.pkl in one pass. It returns errNotPlain
// when the general path must read it, an *Error when it is over a limit or cut short, and
// else the tree, its root and the pickle's weights_only verdict.
func readTorchPickle(r io.ReaderAt, size int64, o Options, where string, expect int) (*plainTree, uint32, *ckpt.WeightsOnly, int, error) {
	b := newPlainBuilder(r, 0, size, o, where)
	if expect = min(expect, o.MaxTensors+1); expect > 0 { // a tensor for each storage, most often
		tb := &b.t.tb
		tb.tensors, tb.storages, tb.dims = make([]ptensor, 0, expect), make([]pstorage, 0, expect), make([]int64, 0, 2*expect)
	}
	b.torch, b.wo = true, &woState{needs: map[string]bool{}}
	t, root, _, err := b.read()
	if err != nil {
		return nil, 0, nil, 0, err
	}
	if !t.treeKinds(root) {
		return nil, 0, nil, 0, errNotPlain
	}
	return t, root, b.wo.verdict(), b.ops, nil
}
