package loader

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
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
	Storages     []*Storage

	// keys indexes the children of large containers by segment, each built the first time
	// a pointer goes through the container (keysMu guards it: pages are served at once).
	keysMu sync.Mutex
	keys   map[*Node]map[string]*Node
	// closers release what the checkpoint's storages read from besides the file itself
	// (the spool of a decompressed stream).
	closers []io.Closer
	// decompressed are the readers of decompressed streams, so their storages say so.
	decompressed map[io.ReaderAt]bool
	// onePass names the one-pass reading that read the pickle ("plain", "torch"; "" for
	// the general path), for the tests that hold the two to each other.
	onePass string
}

func (c *Checkpoint) markDecompressed(r io.ReaderAt) {
	if c.decompressed == nil {
		c.decompressed = map[io.ReaderAt]bool{}
	}
	c.decompressed[r] = true
}

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
	// A stored member is read from src at off (its bytes are there as they are); another
	// through its zip entry, file. Keeping no zip entry for the stored ones (a state dict's
	// storages) spares an opened archive about 250 bytes a member.
	file *zip.File
	src  io.ReaderAt
	off  int64
}

// ErrMemberNotFound is returned by ReadMember for a name the archive does not hold. Its text
// is shown to users as it is.
var ErrMemberNotFound = errors.New("this archive has no member of that name")

// ReadMember reads a whole archive member, at most limit bytes (it is an *Error past that).
func (c *Checkpoint) ReadMember(name string, limit int64) ([]byte, error) {
	var m *Member
	for i := range c.Members {
		if c.Members[i].Name == name {
			m = &c.Members[i] // the last of a repeated name, as torch reads it
		}
	}
	if m == nil {
		return nil, ErrMemberNotFound
	}
	if m.Size > limit {
		return nil, &Error{Msg: fmt.Sprintf("archive member %s is %s, more than the %s shown", name, limitSize(m.Size), limitSize(limit)), Offset: -1}
	}
	if m.file == nil {
		b := make([]byte, m.Size)
		if _, err := m.src.ReadAt(b, m.off); err != nil && !(err == io.EOF && m.Size == 0) {
			return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
		}
		return b, nil
	}
	f := m.file
	if f.UncompressedSize64 > uint64(limit) {
		return nil, &Error{Msg: fmt.Sprintf("archive member %s is %s, more than the %s shown", name, limitSize(clampInt64(f.UncompressedSize64)), limitSize(limit)), Offset: -1}
	}
	rc, err := f.Open()
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil && !errors.Is(err, zip.ErrChecksum) {
		return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
	}
	if int64(len(b)) > limit {
		return nil, &Error{Msg: fmt.Sprintf("archive member %s holds more than the %s shown", name, limitSize(limit)), Offset: -1}
	}
	return b, nil
}

// ErrNotFound is returned by Checkpoint.Node for a pointer that names no node. Its text is
// shown to users as it is.
var ErrNotFound = errors.New("this checkpoint has no node at that path")

// Error says what is wrong with a file that cannot be opened. Findings made before the
// problem was found are kept, so a broken but malicious file is still reported.
type Error struct {
	Msg      string
	Offset   int64 // byte offset of the problem, -1 if none applies
	Findings []Finding
	// NotCheckpoint is set when the file is no checkpoint at all (an image, a web page, a
	// text file whose first byte no pickle starts with): nothing in it would run.
	NotCheckpoint bool
}

func (e *Error) Error() string { return "loader: " + e.Text() }

// Text is the error as a person reads it: the problem and where, without the package.
func (e *Error) Text() string {
	if e.Offset >= 0 {
		return e.Msg + " (at byte " + thousands(e.Offset) + ")"
	}
	return e.Msg
}

// InternalError is a bug of ckptview's own met while opening a file (a panic the loader
// recovered from): not something wrong with the file, so it is no *Error. The findings made
// before it are kept, and the stack for the log.
type InternalError struct {
	Panic    any
	Stack    []byte
	Findings []Finding
}

func (e *InternalError) Error() string {
	return fmt.Sprintf("loader: internal error while reading the file: %v", e.Panic)
}

// pastDeadline says whether an Open has run out of its time budget.
func (o *Options) pastDeadline() bool { return !o.Deadline.IsZero() && time.Now().After(o.Deadline) }

// timeError is the refusal of a file that took longer to open than the budget.
func (o *Options) timeError() *Error {
	limit := o.TimeLimit
	if limit == "" {
		limit = "the time allowed"
	}
	return &Error{Msg: fmt.Sprintf("reading the file took longer than %s, this server's limit (-open-timeout)", limit), Offset: -1}
}

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

// keyIndexMin is the number of children from which a container gets a key index rather
// than a scan of its children on each lookup.
const keyIndexMin = 64

// child is n's child at segment seg, or nil.
func (c *Checkpoint) child(n *Node, seg string) *Node {
	if n.lazy != nil {
		if p, ok := n.lazy.(lazyList); ok && p.keyed() {
			if i, ok := p.lookup(seg); ok {
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
	if len(kids) < keyIndexMin {
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
	}
	return idx[seg]
}

// Walk visits every value of the tree under root once, depth first in tree order (a
// node's children, then an object array's items), without recursion. Refs are visited but
// not followed; dict keys are not visited.
func Walk(root *Node, visit func(*Node)) {
	if root == nil {
		return
	}
	stack := []*Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		visit(n)
		kids := n.Children
		if n.Tensor != nil && n.Tensor.Objects != nil {
			kids = append(kids[:len(kids):len(kids)], n.Tensor.Objects...)
		}
		for i := len(kids) - 1; i >= 0; i-- {
			stack = append(stack, kids[i])
		}
	}
}

// Options bounds the work Open does on one file. The zero value means the defaults.
type Options struct {
	MaxOps int // pickle opcodes per file
	// Deadline bounds the time one Open takes (zero: none); past it the file is refused
	// saying so. TimeLimit names it in that message ("60s", with its flag).
	Deadline    time.Time
	TimeLimit   string
	MaxDepth    int // nesting of the tree and of MARKs
	MaxMemo     int // memo entries per pickle
	MaxIntChars int // digits of a decimal integer in a text opcode
	MaxNodes    int // nodes in the tree
	// MaxTensors bounds the tensors and arrays of the tree, which cost more than other
	// nodes (their Tensor and Storage): about 1.2 kB each while a torch state dict is read
	// in one pass, 0.7 kB once opened.
	MaxTensors int
	// MaxValues bounds the values (and memo entries) of a pickle of plain data, which is
	// read into flat arrays at 17 bytes a slot (plain.go) rather than into nodes.
	MaxValues  int
	MaxPickle  int64 // bytes of one pickle stream held in memory after large values are left in place
	MaxInflate int64 // bytes a compressed archive member may inflate to
	// MaxDecompress bounds what a compressed file (joblib's zlib, gzip, bz2, lzma, xz and
	// lz4 files) may decompress to; the stream goes to a temporary file, not to memory.
	MaxDecompress int64
	// Scratch makes the temporary file a decompressed stream is written to; it should be
	// unlinked already, so that closing it frees it. nil means an unlinked os.CreateTemp.
	Scratch func() (*os.File, error)

	// nodesOnly makes every value a node, plain data included (pure.go): the reference the
	// tests hold the values-kept trees to.
	nodesOnly bool
	// noPlain reads plain pickles by the general path too (plain.go): the reference the
	// one-pass reading is held to.
	noPlain bool
}

// ServerOptions are the limits a shared server opens files with, and the command line
// with it (the flags' defaults): lower than Open's own defaults, which let one 10 MB file
// build a tree of 2 GB, so that a few files opened at once stay within the memory the
// README's "Limits and memory" works out. Tests that check the server's behaviour use them.
func ServerOptions() Options {
	return Options{
		MaxOps:        50_000_000,
		MaxDepth:      2000,
		MaxMemo:       100_000,
		MaxIntChars:   4300,
		MaxNodes:      100_000,
		MaxTensors:    50_000,
		MaxValues:     2_000_000,
		MaxPickle:     16 << 20,
		MaxInflate:    16 << 20,
		MaxDecompress: 4 << 30,
	}
}

func (o Options) withDefaults() Options {
	if o.MaxOps <= 0 {
		o.MaxOps = 50_000_000
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 2000
	}
	if o.MaxMemo <= 0 {
		o.MaxMemo = 2_000_000
	}
	if o.MaxIntChars <= 0 {
		o.MaxIntChars = 4300 // Python's own int_max_str_digits default
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = 5_000_000
	}
	if o.MaxValues <= 0 {
		o.MaxValues = 20_000_000
	}
	if o.MaxTensors <= 0 {
		o.MaxTensors = 5_000_000
	}
	if o.MaxPickle <= 0 {
		o.MaxPickle = 128 << 20
	}
	if o.MaxInflate <= 0 {
		o.MaxInflate = 64 << 20
	}
	if o.MaxDecompress <= 0 {
		o.MaxDecompress = 4 << 30
	}
	return o
}

// Open reads the file behind r (size bytes) and returns its tree. It reads only metadata:
// tensor data stays in r. Any *Error says what is wrong with the file.
func Open(r io.ReaderAt, size int64, opts Options) (*Checkpoint, error) {
	return open(r, size, opts.withDefaults())
}
