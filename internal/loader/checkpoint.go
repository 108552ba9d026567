package loader

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// Error says what is wrong with a file that cannot be opened. Findings made before the
// problem was found are kept, so a broken but malicious file is still reported.
type Error struct {
	Msg      string
	Offset   int64 // byte offset of the problem, -1 if none applies
	Findings []ckpt.Finding
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
	Findings []ckpt.Finding
}

func (e *InternalError) Error() string {
	return fmt.Sprintf("loader: internal error while reading the file: %v", e.Panic)
}

// tooManyTensors is the refusal of a file with more than MaxTensors tensors.
func (o *Options) tooManyTensors() *Error {
	return &Error{Msg: fmt.Sprintf("the file holds more than %s tensors, this server's limit (-max-tensors)", thousands(int64(o.MaxTensors))), Offset: -1}
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
	// nodes (their Tensor and Storage): about 0.5 kB each while a torch state dict is read
	// in one pass (the garbage of the read included; its zip entries are let go first),
	// 0.15 kB once opened (its entries kept as rows, lazytensors.go).
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
	// keepDeadPuts leaves the memo writes no GET reads in the pickle gopickle reads
	// (scanner.dropDeadPuts): the reference dropping them is held to.
	keepDeadPuts bool
	// noTorchPass reads torch archives the general way (set by openZip when the one pass
	// gave one back)
	noTorchPass bool
	// releaseAt is the number of entries from which an archive's entries are let go before
	// the one pass reads its pickle (openZip): 0 for releaseEntriesMin.
	releaseAt int
	// noRows makes every entry of a state dict read in one pass a node at open, none kept
	// as a row (lazytensors.go): the reference rows are held to.
	noRows bool
}

// releaseEntriesMin is the number of an archive's entries from which the one pass lets them
// go before it reads the pickle (4,096 entries hold about 0.9 MB).
const releaseEntriesMin = 4096

func (o *Options) releaseFrom() int {
	if o.releaseAt > 0 {
		return o.releaseAt
	}
	return releaseEntriesMin
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
		MaxTensors:    200_000,
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
func Open(r io.ReaderAt, size int64, opts Options) (*ckpt.Checkpoint, error) {
	return open(r, size, opts.withDefaults())
}
