package ckpt

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Severity ranks a Finding.
type Severity string

// Finding severities: danger means the global would run code or touch the system if Python
// unpickled the file; warning means an unknown global that Python would import.
const (
	SeverityDanger  Severity = "danger"
	SeverityWarning Severity = "warning"
)

// Finding is something in the file that would run code, or import code we do not know,
// if Python unpickled it.
type Finding struct {
	Severity Severity
	// Global is "module.name" as the pickle names it.
	Global string
	// Path is the JSON Pointer of the node where the global sits in the tree, or "" when the
	// value is not part of the returned tree (left on the stack, in a later pickle...).
	Path string
	// Outside is set when the global is not part of the returned object: left on the pickle
	// stack, in a later pickle or in another member of an archive. It still runs on load.
	Outside bool
	// Detail says what would happen in a reviewer's words, with the call and its arguments
	// when the pickle calls it: "posix.system('ls -la')".
	Detail string
	// Where names the pickle inside the file ("data.pkl", "pickle 2 after the first STOP")
	// and Offset is the byte offset of the opcode in that pickle.
	Where  string
	Offset int64
	// Call is the call the finding is about as data, when the pickle makes one: what is
	// called and with what, so a page or the API can show it without parsing Detail.
	Call *Call
}

// Call is a call a pickle makes: the callable and its arguments as Python would print them.
type Call struct {
	Callable string
	Args     []CallArg
	// More counts arguments the scanner did not keep (a long argument list).
	More int
}

// CallArg is one argument of a Call: its kind (str, bytes, int, tuple, global, call...) and
// its repr as Python would print it (bytes as b'\xc3\xa9'), cut at a few hundred characters.
type CallArg struct {
	Kind string
	Repr string
}

// Checkpoint is an opened file: its format, tree and findings.
type Checkpoint struct {
	// Format names the container: "pickle", "torch-zip", "torch-legacy", "torch-legacy-tar",
	// "torchscript", "zip".
	Format   string
	Root     *Node
	Findings []Finding
	// Notes are facts about the file worth telling a reader (trailing bytes, a second
	// pickle, values left on the pickle stack, the torch version records...).
	Notes []string

	// Members lists a zip archive's members (torch archives, TorchScript, .npz) with what
	// each holds, so a reader can see the TorchScript code and the files the tree does not
	// show; ReadMember reads one.
	Members []Member

	// WeightsOnly is what torch.load(weights_only=True) would do with the file; nil for
	// files torch.load does not read (a plain pickle, joblib, numpy, safetensors, GGUF).
	WeightsOnly *WeightsOnly

	// Values counts the values of the tree as -max-nodes counts them, those of plain data
	// kept as values (made into nodes when they are looked at) included.
	Values       int
	Tensors      int   // tensor and array nodes (refs not counted)
	Parameters   int64 // total elements of those tensors
	BytesByDType map[string]int64
	// Storages are the storages of the file's tensors, but for those of a state dict kept
	// as rows (a Node's TensorItems), which its tensor nodes make as they are made: there
	// are RowStorages of those, each viewed by its one tensor.
	Storages    []*Storage
	RowStorages int

	// keys indexes the children of large containers by segment, each built the first time
	// a pointer goes through the container (keysMu guards it: pages are served at once).
	keysMu    sync.Mutex
	keys      map[*Node]map[string]*Node
	keysBytes int64 // what the key indexes hold (keyIndexEntryBytes an entry)
	// summaries are what readers compute from the whole tree and show on every page,
	// each made once (Summary); summaryBytes is what those that count it hold
	summaryMu    sync.Mutex
	summaries    map[string]*summary
	summaryBytes int64
	// closers release what the checkpoint's storages read from besides the file itself
	// (the spool of a decompressed stream).
	closers []io.Closer
}

type summary struct {
	mu   sync.Mutex
	made bool
	v    any
}

// Summary is what make computes from the whole tree (a page's table of dtypes, which walks
// every tensor of a state dict of 200,000; its module tree), made at its first use under
// key and kept as long as the checkpoint: it must be small (a summary that says what it
// holds, with a MemBytes() int64 method, is counted in DerivedBytes), and callers must not
// change it. Calls at once wait for the one that makes it. A make that panics makes
// nothing: the panic goes on to the caller, and the next call tries again.
func (c *Checkpoint) Summary(key string, make func() any) any {
	c.summaryMu.Lock()
	s := c.summaries[key]
	if s == nil {
		if c.summaries == nil {
			c.summaries = map[string]*summary{}
		}
		s = &summary{}
		c.summaries[key] = s
	}
	c.summaryMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.made {
		v := make()
		if m, ok := v.(interface{ MemBytes() int64 }); ok {
			n := m.MemBytes() + int64(len(key)) + summaryEntryBytes
			c.summaryMu.Lock()
			c.summaryBytes += n
			c.summaryMu.Unlock()
		}
		s.v, s.made = v, true
	}
	return s.v
}

// DerivedBytes is the memory of what readers have made from the tree since it was opened
// and the checkpoint keeps: the key indexes of large containers and the summaries that
// count themselves. A cache that charges a checkpoint its tree adds these as they grow.
func (c *Checkpoint) DerivedBytes() int64 {
	c.keysMu.Lock()
	k := c.keysBytes
	c.keysMu.Unlock()
	c.summaryMu.Lock()
	defer c.summaryMu.Unlock()
	return k + c.summaryBytes
}

// keyIndexEntryBytes is what an entry of a key index holds: its string header and
// pointer (the key's bytes are the node's), with a Swiss table's slack; summaryEntryBytes
// is a summary's place in the map of them.
const (
	keyIndexEntryBytes = 40
	summaryEntryBytes  = 96
)

// AddCloser has Close release cl too (a temporary file the checkpoint's storages read).
func (c *Checkpoint) AddCloser(cl io.Closer) { c.closers = append(c.closers, cl) }

// Close releases what the checkpoint holds besides the file it was opened from (a
// decompressed stream's temporary file). Its tensors cannot be read after.
func (c *Checkpoint) Close() error {
	var first error
	for _, cl := range c.closers {
		if err := cl.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.closers = nil
	return first
}

// Member is one member of a zip archive.
type Member struct {
	Name string
	Size int64 // uncompressed
	// Kind is what torch or numpy makes of it: "code" (TorchScript source, compiled and run
	// by torch.jit.load), "pickle", "debug" (TorchScript debug info, a pickle), "data" (a
	// tensor storage), "extra" (files saved with _extra_files), "record" (version and
	// format records), "array" (.npy), or "other".
	Kind string
	// Shadowed marks a member whose name another member of the archive has, and which is
	// not the one the loading program reads by that name: torch finds one of several by a
	// binary search over the sorted names (caffe2's reader over miniz), numpy and Python's
	// zipfile take the last.
	Shadowed bool
	// Copy is which member of its name this one is, in the archive's order (1-based), and
	// Copies how many have the name; both 0 for a name only one member has.
	Copy, Copies int
	// read reads the whole member, at most limit bytes (its reader knows how: in place for
	// a stored member, through its zip entry otherwise)
	read func(limit int64) ([]byte, error)
}

// NewMember is a member that read reads (at most limit bytes; past that it says so).
func NewMember(name string, size int64, kind string, read func(limit int64) ([]byte, error)) Member {
	return Member{Name: name, Size: size, Kind: kind, read: read}
}

// ErrMemberNotFound is returned by ReadMember for a name the archive does not hold. Its text
// is shown to users as it is.
var ErrMemberNotFound = errors.New("this archive has no member of that name")

// ReadMember reads a whole archive member, at most limit bytes (an error past that): of
// several members of that name, the one the loading program reads.
func (c *Checkpoint) ReadMember(name string, limit int64) ([]byte, error) {
	m := c.Member(name, 0)
	if m == nil || m.read == nil {
		return nil, ErrMemberNotFound
	}
	return m.read(limit)
}

// Member is the member named name that the loading program reads (copy 0: the one not
// Shadowed, else the last), or with copy > 0 the copy-th member of that name in the
// archive's order; nil if there is none.
func (c *Checkpoint) Member(name string, copy int) *Member {
	var last *Member
	for i := range c.Members {
		m := &c.Members[i]
		if m.Name != name {
			continue
		}
		if copy > 0 && max(m.Copy, 1) == copy || copy == 0 && !m.Shadowed {
			return m
		}
		last = m
	}
	if copy > 0 {
		return nil
	}
	return last
}

// Read reads the whole member, at most limit bytes (an error past that).
func (m *Member) Read(limit int64) ([]byte, error) {
	if m.read == nil {
		return nil, ErrMemberNotFound
	}
	return m.read(limit)
}

// ErrNotFound is returned by Checkpoint.Node for a pointer that names no node. Its text is
// shown to users as it is.
var ErrNotFound = errors.New("this checkpoint has no node at that path")

// Node returns the node at a JSON Pointer ("" is the root; so is "/", unless the root has
// a child whose key is the empty string, which "/" names). It walks the tree segment by
// segment, so equivalent spellings (an int key written "01") fail the same way; a
// container of many children is looked up through its own key index.
func (c *Checkpoint) Node(pointer string) (*Node, error) {
	if pointer == "/" && (c.Root == nil || c.child(c.Root, "") == nil) {
		pointer = ""
	}
	n := c.Root
	if pointer == "" {
		return n, nil
	}
	if !strings.HasPrefix(pointer, "/") {
		return nil, ErrNotFound
	}
	for _, raw := range strings.Split(pointer[1:], "/") {
		next := c.child(n, UnescapeSegment(raw))
		if next == nil {
			return nil, ErrNotFound
		}
		n = next
	}
	return n, nil
}

// KeyIndexMin is the number of children from which a container gets a key index rather
// than a scan of its children on each lookup (readers that page lazy items use it too).
const KeyIndexMin = 64

// child is n's child at segment seg, or nil.
func (c *Checkpoint) child(n *Node, seg string) *Node {
	if n.lazy != nil {
		if p, ok := n.lazy.(PagedItems); ok && p.Keyed() {
			if i, ok := p.Lookup(seg); ok {
				return n.Items(i, i+1)[0]
			}
			return nil
		}
		if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < n.lazy.Len() && strconv.Itoa(i) == seg {
			return n.Items(i, i+1)[0]
		}
		return nil
	}
	kids := n.Children
	if n.Tensor != nil && n.Tensor.Objects != nil {
		kids = n.Tensor.Objects
	}
	if n.Kind == KindList || n.Kind == KindTuple || n.Kind == KindSet || n.Kind == KindFrozenSet {
		if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < len(kids) {
			return kids[i]
		}
	}
	if len(kids) < KeyIndexMin {
		for _, k := range kids {
			if k.Seg == seg {
				return k
			}
		}
		return nil
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	idx, ok := c.keys[n]
	if !ok {
		idx = make(map[string]*Node, len(kids))
		for i := len(kids) - 1; i >= 0; i-- { // the first of a repeated segment wins
			idx[kids[i].Seg] = kids[i]
		}
		if c.keys == nil {
			c.keys = map[*Node]map[string]*Node{}
		}
		c.keys[n] = idx
		c.keysBytes += int64(len(kids)) * keyIndexEntryBytes
	}
	return idx[seg]
}

// Relink sets the parents of every node again (Link) and drops the key indexes, after the
// tree was assembled from others.
func (c *Checkpoint) Relink() {
	Link(c.Root)
	c.keysMu.Lock()
	c.keys, c.keysBytes = nil, 0
	c.keysMu.Unlock()
}

// Walk visits every value of the tree under root once, depth first in tree order (a
// node's children, then an object array's items), without recursion. Refs are visited but
// not followed; dict keys are not visited. The tensors of a large state dict kept as rows
// (LazyTensors) are made a page at a time and visited, each page dropped once visited;
// plain data kept as values is not visited (it holds no tensor, global or ref).
func Walk(root *Node, visit func(*Node)) { WalkRows(root, visit, nil) }

// WalkRows is Walk, but for a dict that keeps its entries as rows (TensorItems) it calls
// rows with the dict and each run [from, to) of its rows instead of visiting a node made
// for each (its entries made at open and its attributes are walked, in order, as Walk
// walks them); a nil rows makes the nodes, as Walk does.
func WalkRows(root *Node, visit func(*Node), rows func(n *Node, items TensorItems, from, to int)) {
	if root == nil {
		return
	}
	stack := []*Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		visit(n)
		if n.LazyTensors() {
			// its items hold no container of lazy tensors, so this goes one level deep
			from := 0
			if rows != nil {
				items := n.lazy.(TensorItems)
				EachRow(items, func(from, to int) { rows(n, items, from, to) },
					func(_ int, k *Node) { WalkRows(k, visit, rows) })
				from = items.Rows()
			}
			for ; from < n.NumItems(); from += walkPage {
				for _, k := range n.Items(from, from+walkPage) {
					WalkRows(k, visit, rows)
				}
			}
			continue
		}
		kids := n.Children
		if n.Tensor != nil && n.Tensor.Objects != nil {
			kids = append(kids[:len(kids):len(kids)], n.Tensor.Objects...)
		}
		for i := len(kids) - 1; i >= 0; i-- {
			stack = append(stack, kids[i])
		}
	}
}

// walkPage is how many lazy tensors Walk makes at once.
const walkPage = 512

// WeightsOnly is the verdict of torch.load(weights_only=True) on a torch.save file, by the
// rules of torch/_weights_only_unpickler.py (torch 2.6 and later): only the opcodes
// torch.save's protocol 2 writes; GLOBAL names from its default allowlist (tensors,
// storages, dtypes, OrderedDict, Counter, torch.Size, torch.device, set, complex,
// bytearray, _codecs.encode, the _rebuild functions) or the ones a user adds with
// torch.serialization.add_safe_globals, never from sys, os, posix or nt; NEWOBJ, REDUCE
// and BUILD only on those; APPEND only on lists and SETITEM only on dicts.
type WeightsOnly struct {
	// Loads says torch.load(weights_only=True) reads the file as it is.
	Loads bool
	// Needs are the globals it would need allowlisted (all data classes as far as ckptview
	// knows) for it to load the file, when that is all that is missing.
	Needs []string
	// Refusal says why no allowlist can make it load the file (an opcode the
	// weights_only unpickler does not implement, a blocked module, a dangerous callable it
	// would need), or is "" when Needs is the whole story.
	Refusal string
}
