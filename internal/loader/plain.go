package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"

	"github.com/nlpodyssey/gopickle/types"
)

// Plain pickles in one pass. A pickle made only of plain data (lists, tuples and dicts of
// None, bools, numbers, str and small bytes, with str keys; a dataset of records, a
// vocabulary, a feature table) names no global and calls nothing: nothing in it can run
// code when Python loads it, and it holds no tensor. Such a file can hold millions of
// values, and the general path (scan, unpickle with gopickle, convert) makes each of them
// three times. So a raw pickle is first read by plainBuilder: one walk over its opcodes
// that builds the values straight into flat arrays (a plainTree: a kind byte, an 8-byte
// payload, a count or length and a sibling link per value; the text of every str in one byte arena, a str
// the memo hands out again shared, not copied; the keys of a small dict filled at once, a
// record, in a shape that the records naming the same keys share) and nodes are made from them a page at a
// time when they are looked at, by the converter of the general path, so a value looks the
// same whichever path read it.
//
// The builder accepts only what it reads exactly as pickle.load does, and gives the file
// to the general path for anything else: any opcode outside that set (a global, a call, a
// persistent id, a set, a protocol-0 text opcode, a Python 2 str), a container reached a
// second time (through the memo or DUP: the general path makes a ref of it), a dict key
// that is not a str or is set twice, a str that is not UTF-8, bytes large enough to stay in
// the file, a value left on the stack or a MARK left open at STOP, a malformed opcode. So a
// file the builder reads is one the general path would read to the same tree; the tests hold
// them to each other (and so to gopickle) on every plain fixture and fuzz input. What it
// refuses itself is a file over its limits, which are the file's: values and memo entries
// (-max-values), opcodes (-max-pickle-ops) and text held (-max-pickle); nesting and
// integer size beyond -max-depth and -max-int-digits go to the general path, which says
// so.

// pkind is the kind of a value of a plainTree.
type pkind uint8

const (
	pNone  pkind = iota
	pFalse       // False
	pTrue        // True
	pInt         // val: the int64
	pBig         // val: offset in text of a LONG's little-endian two's complement bytes, aux: their length
	pFloat       // val: the float64's bits
	pStr         // val: offset in text, aux: length in bytes (valid UTF-8)
	pBytes       // val: offset in text, aux: length
	// torch's vocabulary (torchpass.go), read only in a torch archive's data.pkl
	pGlobal  // val: which of torchGlobals (and, for a storage class, its dtype's index)
	pStorage // val: index in storages
	pTensor  // val: index in tensors
	pRef     // val: the slot of a container the memo hands out a second time
	pShape   // val: offset in shapes of a dict's key slots, aux: their count; only a dict's first child
	pList    // val: first child + 1 | values in the subtree << 32, aux: items
	pTuple   //
	pDict    // children alternate key (a pStr), value; aux: entries
	pODict   // a collections.OrderedDict, as pDict
)

// plainTree is the values of a plain pickle, one slot per value in each array. Dict keys
// take a slot too but are not values of the tree (the general path counts them the same
// way). Nothing in it is a pointer, so the collector never walks it.
type plainTree struct {
	chunks []*pchunk
	n      uint32 // slots made
	text   []byte
	// shapes holds the key slots of the dicts filled at once with a few entries (a record),
	// whose children are then a pShape slot and the values, without a key slot each: the
	// records of a dataset name the same keys, through the memo, and share one shape
	shapes []uint32
	// tb holds the tensors, storages and attributes of a torch archive's pickle
	tb torchTables
}

// The slots are kept in chunks of a fixed size, so that a tree of millions of values grows
// without copying what it holds.
const (
	chunkBits = 14
	chunkMask = 1<<chunkBits - 1
)

type pchunk struct {
	kind [1 << chunkBits]pkind
	val  [1 << chunkBits]uint64
	aux  [1 << chunkBits]uint32
	next [1 << chunkBits]uint32 // next sibling + 1, 0 for the last child
}

func (t *plainTree) kindOf(v uint32) pkind { return t.chunks[v>>chunkBits].kind[v&chunkMask] }
func (t *plainTree) val(v uint32) *uint64  { return &t.chunks[v>>chunkBits].val[v&chunkMask] }
func (t *plainTree) aux(v uint32) *uint32  { return &t.chunks[v>>chunkBits].aux[v&chunkMask] }
func (t *plainTree) next(v uint32) *uint32 { return &t.chunks[v>>chunkBits].next[v&chunkMask] }

// get is slot v's kind and payload, read from its chunk once.
func (t *plainTree) get(v uint32) pkey {
	c, i := t.chunks[v>>chunkBits], v&chunkMask
	return pkey{val: c.val[i], aux: c.aux[i], k: c.kind[i]}
}

// slot makes a slot.
func (t *plainTree) slot(k pkind, val uint64, aux uint32) uint32 {
	v := t.n
	if int(v>>chunkBits) == len(t.chunks) { // a chunk reclaim gave back is written again
		t.chunks = append(t.chunks, new(pchunk))
	}
	c := t.chunks[v>>chunkBits]
	i := v & chunkMask
	c.kind[i], c.val[i], c.aux[i], c.next[i] = k, val, aux, 0
	t.n++
	return v
}

// container reports whether k is a list, tuple or dict.
func (k pkind) container() bool { return k >= pList }

// keyed reports whether k is a dict: its children alternate key and value.
func (k pkind) keyed() bool { return k >= pDict }

// first is the first child of container v and size the values in its subtree (itself
// included), as the builder left them.
func (t *plainTree) first(v uint32) (uint32, bool) {
	f := uint32(*t.val(v))
	return f - 1, f != 0
}

func (t *plainTree) size(v uint32) int { return int(*t.val(v) >> 32) }

// bytesOf is the text of a str or bytes slot (a view of the arena).
func (t *plainTree) bytesOf(v uint32) []byte {
	off := *t.val(v)
	return t.text[off : off+uint64(*t.aux(v))]
}

// str is the text of a str slot. It shares the arena's bytes, which never change once the
// tree is read.
func (t *plainTree) str(v uint32) string {
	b := t.bytesOf(v)
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// eachItem calls fn with each item of container c in order: its slot and, in a dict, its
// key's slot (noKey otherwise).
func (t *plainTree) eachItem(c uint32, fn func(item, key uint32)) {
	dict := t.kindOf(c).keyed()
	f, ok := t.first(c)
	if keys := t.shape(c); keys != nil { // f is the shape, the values follow it
		for _, k := range keys {
			f = *t.next(f) - 1
			fn(f, k)
		}
		return
	}
	for ok {
		key := uint32(noKey)
		if dict {
			key, f = f, *t.next(f)-1
		}
		fn(f, key)
		f, ok = *t.next(f)-1, *t.next(f) != 0
	}
}

const noKey = math.MaxUint32

// shape is the key slots of dict d when it has a shape (nil otherwise).
func (t *plainTree) shape(d uint32) []uint32 {
	f, ok := t.first(d)
	if !ok || t.kindOf(f) != pShape {
		return nil
	}
	off := *t.val(f)
	return t.shapes[off : off+uint64(*t.aux(f))]
}

// eachKey calls fn with the key slot of each entry of dict d, in order.
func (t *plainTree) eachKey(d uint32, fn func(k uint32)) {
	t.eachItem(d, func(_, k uint32) { fn(k) })
}

// memBytes is what the tree holds in memory.
func (t *plainTree) memBytes() int64 {
	return int64(len(t.chunks))*int64(unsafe.Sizeof(pchunk{})) + int64(cap(t.text)) + 4*int64(cap(t.shapes))
}

// pslot is a stack entry of the builder: a value, the height of the tree under it (with
// isContainer set for a list, tuple or dict, so that it is sealed without a look at its
// slot), and for a container still being filled its last child and the values under it so
// far.
type pslot struct {
	v, h, last uint32
	size       uint32
}

// Flags of a pslot's h. A borrowed slot is a scalar the memo handed out again (GET, DUP),
// pushed as its first slot: a str a dataset's records repeat as a key needs no slot of its
// own until a place in the tree does (appendChild), and a record's keys never do.
const (
	isContainer = 1 << 31
	isBorrowed  = 1 << 30
)

// height is the height of the tree under s.
func (s pslot) height() uint32 { return s.h &^ (isContainer | isBorrowed) }

// under records that child c hangs under container s.
func (s *pslot) under(c pslot) {
	if h := (c.height() + 1) | isContainer; h > s.h {
		s.h = h
	}
}

// plainBuilder reads one plain pickle into a plainTree.
type plainBuilder struct {
	t   plainTree
	o   Options
	ops int
	// nextCheck is the opcode count at which checkOps is called next
	nextCheck int
	stack     []pslot
	marks     []int // stack heights at each open MARK
	memo      memoChunks
	sparse    map[int64]uint32
	memoN     int
	// keys holds, for each dict filled with more than a few entries, the hashes of its
	// keys in the order they came, checked for a repeat once the pickle is read (a key set
	// twice gives the file to the general path)
	keys     map[uint32]*[]uint64
	lastDict uint32
	lastKeys *[]uint64
	// lastFresh are the keys of the last dict whose keys freshKeys found to differ, and
	// lastShape the offset of their shape
	lastFresh  [plainKeyScan]pkey
	lastFreshN int
	lastShape  uint64
	seed       maphash.Seed

	r        io.ReaderAt
	pos, end int64
	buf      []byte
	bufOff   int64
	values   int
	// cut is where an opcode was found cut short by the end of the data (-1: none), and
	// cutWhy says how, when it is not that the data ends
	cut    int64
	cutWhy string
	// where names the pickle in messages, as the general path does
	where string
	// torch, when set, reads torch's vocabulary too (torchpass.go): the pickle is a torch
	// archive's data.pkl
	torch bool
	wo    *woState // with torch: torch.load(weights_only=True)'s verdict, on the way
	// for reclaim (torchpass.go): the highest dict slot given keys or attributes + 1, the slot count at
	// the last memo entry written out of order, and buffers
	keyedFrom, oddMemo uint32
	argBuf             []uint32
	reloc              []relocSlot
}

// errNotPlain says the file is not one the builder reads; the general path reads it.
var errNotPlain = errors.New("not a plain pickle")

// plainWindow is how much of the file the builder reads at once.
const plainWindow = 1 << 20

// plainKeyScan is the number of entries up to which a dict's keys are compared one by one.
const plainKeyScan = 16

// readPlain reads the pickle at [start, end) of r. It returns errNotPlain when the general
// path must read it, an *Error when the file is over a limit or its plain data is cut
// short, and else the tree and the position after STOP.
func readPlain(r io.ReaderAt, start, end int64, o Options) (t *plainTree, root uint32, pos int64, err error) {
	b := newPlainBuilder(r, start, end, o, mainPickle)
	return b.read()
}

func newPlainBuilder(r io.ReaderAt, start, end int64, o Options, where string) *plainBuilder {
	return &plainBuilder{o: o, r: r, pos: start, end: end, seed: maphash.MakeSeed(), cut: -1, where: where}
}

func (b *plainBuilder) read() (t *plainTree, root uint32, pos int64, err error) {
	if err := b.run(); err != nil {
		if err == errNotPlain && b.cut >= 0 {
			// Every opcode before was plain data and the data ends: pickle.load fails
			// there, and the general path would say so (past limits a plain pickle does not
			// meet: its memo alone would hit -max-memo first on a large file).
			why := b.cutWhy
			if why == "" {
				why = "the data ends before the pickle's STOP opcode"
			}
			return nil, 0, 0, &Error{Msg: b.malformed() + why + " (the file is cut short)", Offset: b.cut}
		}
		return nil, 0, 0, err
	}
	b.memo, b.sparse = memoChunks{}, nil // not needed any more: given back before the check
	var set []uint64                     // one set for every dict's check
	for _, h := range b.keys {
		if repeated(*h, &set) {
			return nil, 0, 0, errNotPlain // the same key, or (rarely) another with its hash: the general path decides
		}
	}
	t = new(plainTree) // the tree alone: the builder (its read window, stack, key hashes) is let go
	*t = b.t
	if cap(t.text)-len(t.text) > len(t.text)/8 { // the room doubling left, given back
		t.text = append([]byte(nil), t.text...)
	}
	return t, b.stack[0].v, b.pos, nil
}

// malformed and overLimit begin the messages of a malformed pickle and of one over a limit,
// naming the pickle as the general path does.
func (b *plainBuilder) malformed() string {
	if b.where == mainPickle {
		return "malformed pickle: "
	}
	return "malformed pickle in " + b.where + ": "
}

func (b *plainBuilder) overLimit(format string, args ...any) error {
	return &Error{Msg: "over a limit in " + b.where + ": " + fmt.Sprintf(format, args...), Offset: b.pos}
}

// bytes returns the next n bytes of the pickle (a view valid until the next call), or nil
// when the pickle ends before them.
func (b *plainBuilder) bytes(n int64) []byte {
	if i := b.pos - b.bufOff; n >= 0 && i+n <= int64(len(b.buf)) {
		b.pos += n
		return b.buf[i : i+n]
	}
	return b.fill(n)
}

// fill reads the window that holds the next n bytes, and returns them.
func (b *plainBuilder) fill(n int64) []byte {
	if n > b.end-b.pos {
		b.cut = b.pos
		return nil
	}
	if n < 0 {
		return nil
	}
	size := min(max(n, plainWindow), b.end-b.pos)
	if int64(cap(b.buf)) < size {
		b.buf = make([]byte, size)
	}
	b.buf = b.buf[:size]
	m, _ := b.r.ReadAt(b.buf, b.pos)
	if int64(m) < n {
		b.buf, b.cut = b.buf[:0], b.pos
		return nil
	}
	b.buf, b.bufOff = b.buf[:m], b.pos
	p := b.buf[:n]
	b.pos += n
	return p
}

// add makes a value and pushes it.
func (b *plainBuilder) add(k pkind, val uint64, aux uint32) error {
	if b.t.n >= math.MaxUint32-1 {
		return errNotPlain
	}
	v := b.t.slot(k, val, aux)
	s := pslot{v: v, size: 1}
	if k.container() {
		s.h = isContainer
	}
	b.stack = append(b.stack, s)
	return b.count()
}

// count counts one value made. Values a pickle makes and drops count too: they were made,
// and memory was spent on them. A str that becomes a dict key is taken off again, as the
// tree does not count keys; the count is held to -max-values at STOP. On the way, the slots
// are: each key slot belongs to an entry whose value has a slot of its own, so more than
// twice the limit in slots is more than the limit in values, refused at once.
func (b *plainBuilder) count() error {
	b.values++
	if int64(b.t.n) > 2*int64(b.o.MaxValues) {
		return b.tooMany()
	}
	return nil
}

func (b *plainBuilder) tooMany() error {
	return b.overLimit("the pickle makes more than %s values, this server's limit (-max-values)", thousands(int64(b.o.MaxValues)))
}

// text adds bytes to the text arena and returns their offset.
func (b *plainBuilder) text(p []byte) (uint64, error) {
	off := uint64(len(b.t.text))
	if int64(len(b.t.text))+int64(len(p)) > b.o.MaxPickle {
		return 0, b.overLimit("the pickle holds more than %s of values besides its large byte strings, this server's limit (-max-pickle)", limitSize(b.o.MaxPickle))
	}
	b.t.text = append(grow(b.t.text, len(p)), p...)
	return off, nil
}

// grow makes room for n more elements of s, doubling its capacity when it is full:
// append grows a large slice by a quarter, which copies what the text and the memo hold
// about four times over while a large pickle is read; doubling copies it once.
func grow[T any](s []T, n int) []T {
	if len(s)+n <= cap(s) {
		return s
	}
	out := make([]T, len(s), max(2*cap(s), len(s)+n, 1024))
	copy(out, s)
	return out
}

// appendChild makes child slot c the last child of the container in slot p; a container
// child can no longer change, and is sealed.
func (b *plainBuilder) appendChild(p *pslot, c pslot, isKey bool) {
	t := &b.t
	if c.h&isBorrowed != 0 { // a place of its own, with the payload it shares
		k := t.get(c.v)
		c.v = t.slot(k.k, k.val, k.aux)
	}
	b.seal(c)
	if p.last == 0 {
		*t.val(p.v) = uint64(c.v + 1)
	} else {
		*t.next(p.last - 1) = c.v + 1
	}
	p.last = c.v + 1
	if !isKey {
		p.size += c.size
		p.under(c)
	}
}

// seal records a container's subtree size once it can no longer change: when it becomes
// a child, or the pickle's result.
func (b *plainBuilder) seal(c pslot) {
	if c.h&isContainer != 0 {
		*b.t.val(c.v) = uint64(uint32(*b.t.val(c.v))) | uint64(c.size)<<32
	}
}

// setItems adds key/value pairs (slots) to the dict in slot d.
func (b *plainBuilder) setItems(d *pslot, kv []pslot) error {
	t := &b.t
	if !t.kindOf(d.v).keyed() || len(kv)%2 != 0 {
		return errNotPlain
	}
	if len(kv) == 0 {
		return nil
	}
	// a dict filled from empty by one SETITEMS of a few entries (a record) has its keys
	// compared among themselves; else each key is checked against the dict's (newKey)
	if d.last == 0 && len(kv) <= 2*plainKeyScan { // an empty dict: aux, its entries, is 0
		same, ok := b.freshKeys(kv)
		if !ok {
			return errNotPlain
		}
		switch {
		case b.torch: // keys in the chain (a torch pickle's slots are reclaimed and moved)
			for i := 0; i < len(kv); i += 2 {
				b.appendChild(d, kv[i], true)
				b.appendChild(d, kv[i+1], false)
			}
		default: // a shape, then the values
			if !same {
				b.lastShape = uint64(len(t.shapes))
				for i := 0; i < len(kv); i += 2 {
					t.shapes = append(grow(t.shapes, 1), kv[i].v)
				}
			}
			b.appendChild(d, pslot{v: t.slot(pShape, b.lastShape, uint32(len(kv)/2))}, true)
			for i := 0; i < len(kv); i += 2 {
				b.appendChild(d, kv[i+1], false)
			}
		}
		*t.aux(d.v) = uint32(len(kv) / 2)
	} else {
		if t.shape(d.v) != nil {
			return errNotPlain // more entries for a record: only a pickle made by hand does that
		}
		for i := 0; i < len(kv); i += 2 { // each key checked against the dict's, the last one added included
			if kk := t.kindOf(kv[i].v); kk != pStr && (kk != pInt || !b.torch) {
				return errNotPlain // (an int key only in a torch pickle, whose dicts are not paged)
			}
			if err := b.newKey(d, kv[i].v); err != nil {
				return err
			}
			b.appendChild(d, kv[i], true)
			b.appendChild(d, kv[i+1], false)
			*t.aux(d.v)++
		}
	}
	b.values -= len(kv) / 2 // a str key is no value of the tree (its slot is bounded by its entry's)
	b.keyedFrom = max(b.keyedFrom, d.v+1)
	return nil
}

// sameAsLast says whether the keys of kv have the kinds and payloads of b.lastFresh, in
// order (kv has as many).
func (b *plainBuilder) sameAsLast(kv []pslot) bool {
	for i := range b.lastFreshN {
		if b.t.get(kv[2*i].v) != b.lastFresh[i] {
			return false
		}
	}
	return true
}

// pkey is a slot's kind and payload; freshKeys compares dict keys by them.
type pkey struct {
	val uint64
	aux uint32
	k   pkind
}

// freshKeys says whether the keys of kv (key, value, key, value...; at most plainKeyScan
// entries) are str (or, in a torch pickle, int) keys that differ from one another, and
// (same) whether they are the last set found to differ, by their payloads. A
// dataset of records names the same keys in each, through the memo, so the keys of the
// last set found to differ are kept (b.lastFresh): keys of the same kinds and payloads,
// in the same order, differ too.
func (b *plainBuilder) freshKeys(kv []pslot) (same, ok bool) {
	t := &b.t
	n := len(kv) / 2
	if n == b.lastFreshN && b.sameAsLast(kv) {
		return true, true
	}
	var keys [plainKeyScan]pkey
	for i := range n {
		k := t.get(kv[2*i].v)
		if k.k != pStr && (k.k != pInt || !b.torch) {
			return false, false // (an int key only in a torch pickle, whose dicts are not paged)
		}
		keys[i] = k
		for j := range i {
			if t.sameKey(kv[2*j].v, kv[2*i].v) {
				return false, false
			}
		}
	}
	b.lastFresh, b.lastFreshN = keys, n
	return false, true
}

// newKey checks that key k is not already a key of dict d (Python would keep one entry).
func (b *plainBuilder) newKey(d *pslot, k uint32) error {
	t := &b.t
	var kb, fb [9]byte
	if *t.aux(d.v) < plainKeyScan {
		// the keys so far, one by one: a str is the same key as another str of the same
		// bytes (the memo's copies share them), an int as another int of its value
		dup := false
		t.eachKey(d.v, func(f uint32) { dup = dup || t.sameKey(f, k) })
		if dup {
			return errNotPlain
		}
		return nil
	}
	m := b.lastKeys
	if m == nil || b.lastDict != d.v {
		if m = b.keys[d.v]; m == nil {
			m = new([]uint64)
			t.eachKey(d.v, func(f uint32) { *m = append(*m, maphash.Bytes(b.seed, t.keyID(f, &fb))) })
			if b.keys == nil {
				b.keys = map[uint32]*[]uint64{}
			}
			b.keys[d.v] = m
		}
		b.lastDict, b.lastKeys = d.v, m
	}
	*m = append(grow(*m, 1), maphash.Bytes(b.seed, t.keyID(k, &kb)))
	return nil
}

// repeated says whether a hash occurs twice in h. A set of hashes filled as keys come
// meets a cache miss at each of them once it is larger than the cache (a vocabulary of
// 250,000 keys took a third of its reading that way), so the hashes are first spread into
// buckets by their top bits, each small enough for a set that stays in the cache (set,
// reused from one call to the next).
func repeated(h []uint64, set *[]uint64) bool {
	const bucket = 2048 // hashes per bucket, on average
	if len(h) <= 2*bucket {
		return repeatedIn(h, set)
	}
	nb := bitsFor(len(h) / bucket)
	shift := 64 - nb
	start := make([]int, 1<<nb+1)
	for _, x := range h {
		start[x>>shift+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	spread, at := make([]uint64, len(h)), append([]int(nil), start[:1<<nb]...)
	for _, x := range h {
		spread[at[x>>shift]] = x
		at[x>>shift]++
	}
	for i := 0; i < 1<<nb; i++ {
		if repeatedIn(spread[start[i]:start[i+1]], set) {
			return true
		}
	}
	return false
}

// bitsFor is the exponent of the smallest power of two at least n (n >= 1).
func bitsFor(n int) int { return bits.Len(uint(n - 1)) }

// repeatedIn says whether a hash occurs twice in h, with an open-addressing set (0 stands
// for no entry) in *set, reused from bucket to bucket.
func repeatedIn(h []uint64, set *[]uint64) bool {
	size := 1 << bitsFor(2*len(h)+2)
	slots := *set
	if cap(slots) >= size {
		slots = slots[:size]
		clear(slots)
	} else {
		slots = make([]uint64, size)
		*set = slots
	}
	mask := uint64(size - 1)
	for _, x := range h {
		if x == 0 {
			x = 1
		}
		for i := x & mask; ; i = (i + 1) & mask {
			if slots[i] == 0 {
				slots[i] = x
				break
			}
			if slots[i] == x {
				return true
			}
		}
	}
	return false
}

// sameKey says whether dict key slots a and b are the same key: a str of the same bytes
// (the memo's copies share them), an int of the same value.
func (t *plainTree) sameKey(a, b uint32) bool {
	switch kind := t.kindOf(a); {
	case t.kindOf(b) != kind:
		return false
	case kind == pInt:
		return *t.val(a) == *t.val(b)
	}
	return *t.aux(a) == *t.aux(b) && (*t.val(a) == *t.val(b) || string(t.bytesOf(a)) == string(t.bytesOf(b)))
}

// keyID is what tells dict key slot k from the others: a str's bytes, or for an int 0xff
// and its 8 bytes, which no UTF-8 text starts with.
func (t *plainTree) keyID(k uint32, buf *[9]byte) []byte {
	if t.kindOf(k) == pStr {
		return t.bytesOf(k)
	}
	buf[0] = 0xff
	binary.LittleEndian.PutUint64(buf[1:], *t.val(k))
	return buf[:]
}

// fence is the stack height of the last MARK (0 without one): opcodes other than those
// that close a MARK take no slot below it.
func (b *plainBuilder) fence() int {
	if len(b.marks) == 0 {
		return 0
	}
	return b.marks[len(b.marks)-1]
}

// atMark says whether the stack holds nothing above the last MARK.
func (b *plainBuilder) atMark() bool { return len(b.stack) == b.fence() }

// take removes the items of APPEND or SETITEM (the top n slots) or of APPENDS or SETITEMS
// (every slot since the last MARK, and the MARK) and returns them: a view of the stack,
// valid until the next push.
func (b *plainBuilder) take(n int, sinceMark bool) ([]pslot, bool) {
	m := len(b.stack) - n
	if sinceMark {
		var ok bool
		if m, ok = b.mark(); !ok {
			return nil, false
		}
	} else if m < b.fence() {
		return nil, false
	}
	items := b.stack[m:]
	b.stack = b.stack[:m]
	return items, true
}

// pop removes the top slot.
func (b *plainBuilder) pop() (pslot, bool) {
	if b.atMark() {
		return pslot{}, false
	}
	s := b.stack[len(b.stack)-1]
	b.stack = b.stack[:len(b.stack)-1]
	return s, true
}

// top is the top slot, above the last MARK.
func (b *plainBuilder) top() *pslot {
	if b.atMark() {
		return nil
	}
	return &b.stack[len(b.stack)-1]
}

// mark removes the last MARK and returns the stack height it stood at.
func (b *plainBuilder) mark() (int, bool) {
	if len(b.marks) == 0 {
		return 0, false
	}
	m := b.marks[len(b.marks)-1]
	b.marks = b.marks[:len(b.marks)-1]
	return m, true
}

// memoChunks is the memo pickle.dump writes in order: entry i is the slot + 1 it names (0:
// none). Past its first chunk it grows a chunk at a time, so that the memo of millions of
// values is never copied, nor held twice while it grows; the first grows from small, for
// the many small pickles.
type memoChunks struct {
	chunks [][]uint32
	n      int
}

func (m *memoChunks) at(i int) *uint32 { return &m.chunks[i>>chunkBits][i&chunkMask] }

func (m *memoChunks) push(v uint32) {
	switch {
	case m.n == 0:
		m.chunks = append(m.chunks, make([]uint32, 0, 256))
	case m.n&chunkMask == 0:
		m.chunks = append(m.chunks, make([]uint32, 0, 1<<chunkBits))
	}
	c := &m.chunks[len(m.chunks)-1]
	*c = append(*c, v)
	m.n++
}

func (b *plainBuilder) memoPut(idx int64, v uint32) error {
	switch {
	case idx >= 0 && idx < int64(b.memo.n):
		e := b.memo.at(int(idx))
		if *e == 0 {
			b.memoN++
		}
		*e = v + 1
		b.oddMemo = b.t.n
	case idx == int64(b.memo.n) && (b.sparse == nil || b.sparse[idx] == 0):
		b.memo.push(v + 1)
		b.memoN++
	default:
		// indexes pickle.dump never writes, kept in a map at tens of bytes each: as many as
		// the general path's memo allows, and the general path reads a file with more
		if len(b.sparse) >= b.o.MaxMemo {
			return errNotPlain
		}
		if b.sparse == nil {
			b.sparse = map[int64]uint32{}
		}
		b.oddMemo = b.t.n
		if b.sparse[idx] == 0 {
			b.memoN++
		}
		b.sparse[idx] = v + 1
	}
	if b.memoN > b.o.MaxValues {
		return b.overLimit("more than %s memo entries, this server's limit (-max-values)", thousands(int64(b.o.MaxValues)))
	}
	return nil
}

func (b *plainBuilder) memoGet(idx int64) error {
	var v uint32
	if idx >= 0 && idx < int64(b.memo.n) {
		v = *b.memo.at(int(idx))
	} else {
		v = b.sparse[idx]
	}
	if v == 0 || v == memoGone {
		return errNotPlain
	}
	return b.again(v - 1)
}

// again pushes scalar v a second time (GET, DUP): a slot of its own that shares v's
// payload, text included. A container met again is a ref in the tree: not plain. A tensor
// met again (a tied weight) is one too, which a torch pickle's tree makes (torchpass.go).
func (b *plainBuilder) again(v uint32) error {
	t := &b.t
	x := t.get(v)
	switch k := x.k; {
	case k == pStorage || k.container() && !b.torch:
		return errNotPlain
	case k.container():
		// In a torch pickle, a container met again is a ref to its first place in the
		// tree, as the general path makes it, once it is complete: one still on the stack
		// could still change, and hold itself (a cycle), which the general path reads.
		for _, s := range b.stack {
			if s.v == v {
				return errNotPlain
			}
		}
		t.tb.shareSlot(v)
		return b.add(pRef, uint64(v), 0)
	case k == pTensor:
		t.tb.share(*t.val(v)) // a tensor stored twice: a ref to its first place in the tree
	case !b.torch: // (a torch pickle's slots are reclaimed and moved; its scalars are copied)
		b.stack = append(b.stack, pslot{v: v, h: isBorrowed, size: 1})
		return b.count()
	}
	return b.add(x.k, x.val, x.aux)
}

// le reads an n-byte little-endian unsigned argument (n is 1, 2, 4 or 8).
func (b *plainBuilder) le(n int64) (uint64, bool) {
	if i := b.pos - b.bufOff; uint64(i+8) <= uint64(len(b.buf)) { // the usual case: the window holds 8 bytes
		b.pos += n
		return binary.LittleEndian.Uint64(b.buf[i:]) & (1<<(8*n) - 1), true // (1<<64 - 1 for 8)
	}
	return b.leSlow(n)
}

// arg reads op's integer argument (argSize), one of the 1-byte arguments a pickle of
// records is full of (BININT1, SHORT_BINUNICODE, BINGET) without the 8-byte path.
func (b *plainBuilder) arg(op byte) (uint64, bool) {
	if op == opBinInt1 || op == opShortBinUnicode || op == opBinGet {
		return b.u8()
	}
	return b.le(argSize(op))
}

// u8 reads a 1-byte argument.
func (b *plainBuilder) u8() (uint64, bool) {
	if i := b.pos - b.bufOff; uint64(i) < uint64(len(b.buf)) {
		b.pos++
		return uint64(b.buf[i]), true
	}
	return b.leSlow(1)
}

// leSlow is le past the window.
func (b *plainBuilder) leSlow(n int64) (uint64, bool) {
	p := b.bytes(n)
	if p == nil {
		return 0, false
	}
	return littleEndian(p), true
}

// littleEndian is the unsigned value of up to 8 little-endian bytes.
func littleEndian(p []byte) uint64 {
	var x uint64
	for i := len(p) - 1; i >= 0; i-- {
		x = x<<8 | uint64(p[i])
	}
	return x
}

// argSize is the size of op's integer argument (a length, a memo index, a BININT): 1, 2,
// 4 or 8 bytes.
func argSize(op byte) int64 {
	switch op {
	case opShortBinUnicode, opShortBinBytes, opBinPut, opBinGet, opLong1, opBinInt1, opProto:
		return 1
	case opBinInt2:
		return 2
	case opBinUnicode8, opBinBytes8, opFrame:
		return 8
	}
	return 4
}

// checkOps holds the opcodes read to -max-pickle-ops and, every 65,536 of them, the
// time to the deadline; it says when to be called again.
func (b *plainBuilder) checkOps() error {
	if b.ops > b.o.MaxOps {
		return b.overLimit("more than %s pickle opcodes, this server's limit (-max-pickle-ops)", thousands(int64(b.o.MaxOps)))
	}
	if b.ops > 1 && b.o.pastDeadline() {
		return b.o.timeError()
	}
	b.nextCheck = b.ops + 1<<16
	if b.o.MaxOps-b.ops < 1<<16 {
		b.nextCheck = b.o.MaxOps + 1
	}
	return nil
}

// run reads opcodes up to STOP.
func (b *plainBuilder) run() error {
	t := &b.t
	for {
		if b.ops++; b.ops >= b.nextCheck {
			if err := b.checkOps(); err != nil {
				return err
			}
		}
		var op byte
		if i := b.pos - b.bufOff; i < int64(len(b.buf)) {
			op = b.buf[i]
			b.pos++
		} else if p := b.fill(1); p != nil {
			op = p[0]
		} else {
			return errNotPlain
		}
		var err error
		if b.wo != nil {
			b.wo.opcode(op)
		}
		switch op {
		case opProto:
			if v, ok := b.le(argSize(op)); !ok || v > 5 {
				return errNotPlain
			}
		case opFrame: // framing is buffering to pickle.load: the frame must be there
			if n, ok := b.le(argSize(op)); !ok || n > uint64(b.end-b.pos) {
				if ok { // pickle.load reads the frame at once: truncated
					b.cut, b.cutWhy = b.pos-9, fmt.Sprintf("FRAME declares %s bytes but only %s remain", thousands(int64(min(n, math.MaxInt64))), thousands(b.end-b.pos))
				}
				return errNotPlain
			}
		case opStop:
			if len(b.stack) != 1 || len(b.marks) != 0 {
				return errNotPlain
			}
			root := b.stack[0]
			if k := t.kindOf(root.v); !(k.container() || b.torch && k == pTensor) || int(root.height()) > b.o.MaxDepth {
				return errNotPlain
			}
			if b.values > b.o.MaxValues {
				return b.tooMany()
			}
			b.seal(root)
			return nil
		case opMark:
			if len(b.marks) >= b.o.MaxDepth {
				return errNotPlain
			}
			b.marks = append(b.marks, len(b.stack))
		case opPop:
			if _, ok := b.pop(); !ok {
				return errNotPlain
			}
		case opPopMark:
			m, ok := b.mark()
			if !ok {
				return errNotPlain
			}
			b.stack = b.stack[:m]
		case opDup:
			s := b.top()
			if s == nil {
				return errNotPlain
			}
			err = b.again(s.v)
		case opNone:
			err = b.add(pNone, 0, 0)
		case opNewTrue:
			err = b.add(pTrue, 0, 0)
		case opNewFalse:
			err = b.add(pFalse, 0, 0)
		case opBinInt, opBinInt1, opBinInt2:
			x, ok := b.arg(op)
			if !ok {
				return errNotPlain
			}
			if op == opBinInt { // signed
				x = uint64(int64(int32(uint32(x))))
			}
			err = b.add(pInt, x, 0)
		case opLong1, opLong4:
			n, ok := b.le(argSize(op))
			if op == opLong4 && int32(uint32(n)) < 0 {
				return errNotPlain
			}
			if !ok || n > uint64(b.o.MaxIntChars) {
				return errNotPlain
			}
			p := b.bytes(int64(n))
			if p == nil {
				return errNotPlain
			}
			if n <= 8 { // two's complement in an int64
				x := littleEndian(p)
				if n < 8 && n > 0 && p[n-1]&0x80 != 0 {
					x -= 1 << (8 * n)
				}
				err = b.add(pInt, x, 0)
				break
			}
			off, terr := b.text(p)
			if terr != nil {
				return terr
			}
			err = b.add(pBig, off, uint32(n))
		case opBinFloat:
			p := b.bytes(8)
			if p == nil {
				return errNotPlain
			}
			err = b.add(pFloat, binary.BigEndian.Uint64(p), 0)
		case opBinUnicode, opShortBinUnicode, opBinUnicode8, opBinBytes, opShortBinBytes, opBinBytes8:
			n, ok := b.arg(op)
			isStr := op == opBinUnicode || op == opShortBinUnicode || op == opBinUnicode8
			if !ok || n > math.MaxUint32 || (!isStr && n >= plainLazyMin) {
				return errNotPlain // too large to show, or bytes the general path leaves in the file
			}
			p := b.bytes(int64(n))
			if p == nil || (isStr && !utf8.Valid(p)) {
				return errNotPlain
			}
			off, terr := b.text(p)
			if terr != nil {
				return terr
			}
			k := pBytes
			if isStr {
				k = pStr
			}
			err = b.add(k, off, uint32(n))
		case opEmptyList:
			err = b.add(pList, 0, 0)
		case opEmptyDict:
			err = b.add(pDict, 0, 0)
		case opEmptyTuple:
			err = b.add(pTuple, 0, 0)
		case opTuple1, opTuple2, opTuple3:
			m := len(b.stack) - int(op-opTuple1) - 1
			if m < b.fence() {
				return errNotPlain
			}
			err = b.collect(pTuple, m)
		case opTuple, opList, opDict:
			m, ok := b.mark()
			if !ok {
				return errNotPlain
			}
			k := pTuple
			if op == opList {
				k = pList
			} else if op == opDict {
				k = pDict
			}
			err = b.collect(k, m)
		case opAppend, opAppends:
			items, ok := b.take(1, op == opAppends)
			l := b.top()
			if !ok || l == nil || t.kindOf(l.v) != pList {
				return errNotPlain
			}
			for _, c := range items {
				b.appendChild(l, c, false)
			}
			*t.aux(l.v) += uint32(len(items))
		case opSetItem, opSetItems:
			kv, ok := b.take(2, op == opSetItems)
			d := b.top()
			if !ok || d == nil {
				return errNotPlain
			}
			err = b.setItems(d, kv)
		case opBinPut, opLongBinPut, opMemoize:
			s := b.top()
			if s == nil {
				return errNotPlain
			}
			idx, ok := uint64(b.memoN), true
			if op != opMemoize {
				idx, ok = b.le(argSize(op))
			}
			if !ok {
				return errNotPlain
			}
			err = b.memoPut(int64(idx), s.v)
		case opBinGet, opLongBinGet:
			idx, ok := b.arg(op)
			if !ok {
				return errNotPlain
			}
			err = b.memoGet(int64(idx))
		default:
			if !b.torch {
				return errNotPlain
			}
			err = b.torchOp(op)
		}
		if err != nil {
			return err
		}
	}
}

// plainLazyMin is the size from which the general path leaves bytes in the file (the
// scanner's lazyMin).
const plainLazyMin = 4096

// collect makes a list, tuple or dict of the slots from stack height m up, in their place.
func (b *plainBuilder) collect(k pkind, m int) error {
	c := pslot{v: b.t.slot(k, 0, 0), h: isContainer, size: 1}
	items := b.stack[m:]
	if k == pDict {
		if err := b.setItems(&c, items); err != nil {
			return err
		}
	} else {
		for _, it := range items {
			b.appendChild(&c, it, false)
		}
		*b.t.aux(c.v) = uint32(len(items))
	}
	b.stack = append(b.stack[:m], c)
	return b.count()
}

// The tree a reader sees.

var _ ckpt.PagedItems = (*plainItems)(nil)

// plainItems are the items of a container of a plainTree, made into nodes when asked for.
type plainItems struct {
	t *plainTree
	v uint32
	// root marks the root's items, which answer for the tree's memory
	root bool

	once      sync.Once
	kids      []uint32 // the item (for a dict, the key) slots, in order
	vals      []uint32 // for a dict with a shape, the value slots (else each follows its key)
	indexOnce sync.Once
	index     map[string]int // segment -> entry, for a large dict
}

func (p *plainItems) Len() int { return int(*p.t.aux(p.v)) }

func (p *plainItems) Keyed() bool { return p.t.kindOf(p.v).keyed() }

func (p *plainItems) MemBytes() int64 {
	if p.root {
		return p.t.memBytes()
	}
	return 0 // the tree is counted once, at its root
}

// slots lists the items' slots, once.
func (p *plainItems) slots() []uint32 {
	p.once.Do(func() {
		t := p.t
		p.kids = make([]uint32, 0, *t.aux(p.v))
		shaped := t.shape(p.v) != nil
		t.eachItem(p.v, func(item, key uint32) {
			if shaped {
				p.vals = append(p.vals, item)
			}
			if p.Keyed() {
				item = key
			}
			p.kids = append(p.kids, item)
		})
	})
	return p.kids
}

// Lookup finds a dict's entry by segment; a large dict's keys are indexed at the first
// lookup (a page of items needs no index: the first open of a vocabulary makes none).
func (p *plainItems) Lookup(seg string) (int, bool) {
	kids := p.slots()
	p.indexOnce.Do(func() {
		if p.Keyed() && len(kids) >= ckpt.KeyIndexMin {
			p.index = make(map[string]int, len(kids))
			for i, k := range kids {
				p.index[p.t.str(k)] = i
			}
		}
	})
	if p.index != nil {
		i, ok := p.index[seg]
		return i, ok
	}
	for i, k := range kids {
		if p.t.str(k) == seg {
			return i, true
		}
	}
	return 0, false
}

func (p *plainItems) Item(i int) (*ckpt.Node, error) {
	return p.item(newItemConverter(), i), nil
}

func (p *plainItems) item(c *converter, i int) *ckpt.Node {
	kids := p.slots()
	s, key := kids[i], strconv.Itoa(i)
	if p.Keyed() {
		key = p.t.str(s)
		if p.vals != nil {
			s = p.vals[i]
		} else {
			s = *p.t.next(s) - 1
		}
	}
	n := p.t.node(c, s)
	n.Key, n.Seg = key, key
	return n
}

func (p *plainItems) Page(n *ckpt.Node, from, to int) []*ckpt.Node { return page(n, from, to, p.item) }

// node makes the node of slot v: a container of pureMin values or more keeps its items
// in the tree; anything smaller is made into the values the unpickler would have made,
// and converted as the general path converts them.
func (t *plainTree) node(c *converter, v uint32) *ckpt.Node {
	k := t.kindOf(v)
	if k.container() && t.size(v) >= pureMin {
		n := c.newNode()
		switch k {
		case pList:
			n.Kind, n.Type = ckpt.KindList, "list"
		case pTuple:
			n.Kind, n.Type = ckpt.KindTuple, "tuple"
		case pODict: // plain data of a torch pickle (a state dict's _metadata)
			n.Kind, n.Type = ckpt.KindDict, "collections.OrderedDict"
		default:
			n.Kind, n.Type = ckpt.KindDict, "dict"
		}
		n.SetLazy(&plainItems{t: t, v: v})
		n.Len = int64(*t.aux(v))
		return n
	}
	return c.node(t.value(v), nil, "", 0)
}

// value is slot v as the unpickler makes it.
func (t *plainTree) value(v uint32) any {
	switch t.kindOf(v) {
	case pNone:
		return nil
	case pFalse:
		return false
	case pTrue:
		return true
	case pInt:
		return int(int64(*t.val(v)))
	case pBig:
		return longBytes(t.bytesOf(v))
	case pFloat:
		return math.Float64frombits(*t.val(v))
	case pStr:
		return t.str(v)
	case pBytes:
		return []byte(t.str(v))
	case pTensor:
		return tensorRef(*t.val(v))
	case pRef:
		return t.value(uint32(*t.val(v)))
	case pGlobal, pStorage, pShape:
		panic("loader: a torch global, a storage or a shape as a value of the tree") // the builder never puts one there
	}
	if t.tb.sharedSlots[v] { // one value for every place the container is in, as the unpickler makes
		if x, ok := t.tb.values[v]; ok {
			return x
		}
		x := t.containerValue(v)
		if t.tb.values == nil {
			t.tb.values = map[uint32]any{}
		}
		t.tb.values[v] = x
		return x
	}
	return t.containerValue(v)
}

// containerValue is container slot v as the unpickler makes it.
func (t *plainTree) containerValue(v uint32) any {
	if t.keepsRows(v) {
		return &slotTensors{t: t, v: v}
	}
	if t.kindOf(v) == pODict && t.strKeys(v) {
		return &slotODict{t: t, v: v}
	}
	var items []any
	var entries []types.DictEntry
	if t.kindOf(v).keyed() {
		entries = make([]types.DictEntry, 0, *t.aux(v))
	} else {
		items = make([]any, 0, *t.aux(v))
	}
	t.eachItem(v, func(item, key uint32) {
		if key != noKey {
			entries = append(entries, types.DictEntry{Key: t.value(key), Value: t.value(item)})
		} else {
			items = append(items, t.value(item))
		}
	})
	switch t.kindOf(v) {
	case pList:
		l := types.List(items)
		return &l
	case pTuple:
		tu := types.Tuple(items)
		return &tu
	}
	if t.kindOf(v) == pODict {
		return t.odict(v, entries)
	}
	d := types.Dict(entries)
	return &d
}
