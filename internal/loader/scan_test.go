package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

func openBytes(b []byte) (*ckpt.Checkpoint, error) {
	return Open(bytes.NewReader(b), int64(len(b)), Options{})
}

// TestHostilePickles feeds hand-built pickles that target the unpickler rather than carry a
// model. Each must be refused with an error that names the problem, or open with the
// stated facts; none may allocate what a length field claims.
func TestHostilePickles(t *testing.T) {
	deepMarks := append(bytes.Repeat([]byte("("), 300000), '.')
	deepLists := append([]byte("\x80\x02"), bytes.Repeat([]byte("]"), 100000)...)
	deepLists = append(deepLists, bytes.Repeat([]byte("a"), 99999)...)
	deepLists = append(deepLists, '.')
	// 200k memo entries
	var memo bytes.Buffer
	memo.WriteString("\x80\x04]")
	for i := 0; i < 200000; i++ {
		memo.WriteString("K\x01\x94a")
	}
	memo.WriteString(".")
	// billion laughs: each list holds ten references to the previous one
	var laughs bytes.Buffer
	laughs.WriteString("\x80\x02]q\x00K\x01a")
	for i := 1; i < 30; i++ {
		laughs.WriteString("]q" + string(rune(i)) + "(")
		for j := 0; j < 10; j++ {
			laughs.WriteString("h" + string(rune(i-1)))
		}
		laughs.WriteString("e")
	}
	laughs.WriteString(".")
	tests := []struct {
		name    string
		data    []byte
		wantErr string // substring; "" means it must open
		check   func(t *testing.T, ck *ckpt.Checkpoint)
	}{
		{name: "empty", data: nil, wantErr: "empty"},
		{name: "BINBYTES8 claims an exabyte", data: []byte("\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x0fabc."), wantErr: "declares"},
		{name: "BINUNICODE8 past the end", data: []byte("\x80\x04\x8d\x00\x00\x00\x00\x01\x00\x00\x00abc."), wantErr: "declares"},
		{name: "BYTEARRAY8 past the end", data: []byte("\x80\x05\x96\x00\x00\x00\x00\x00\x10\x00\x00x."), wantErr: "declares"},
		{name: "FRAME past the end", data: []byte("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x10\x00N."), wantErr: "declares"},
		{name: "LONG4 past the end", data: []byte("\x80\x02\x8b\xff\xff\xff\x7f\x01."), wantErr: "declares"},
		{name: "SHORT_BINSTRING past the end", data: []byte("\x80\x02U\xffab."), wantErr: "declares"},
		{name: "BINUNICODE past the end (picklescan broken_model)", data: []byte("cbuiltins\nexec\nX\x3e\x3e\x66\x20abc"), wantErr: "declares"},
		{name: "huge decimal integer", data: append(append([]byte("I"), bytes.Repeat([]byte("9"), 5_000_000)...), "\n."...), wantErr: "longer than"},
		{name: "MARKs nested 300k deep", data: deepMarks, wantErr: "deeper"},
		{name: "lists nested 100k deep", data: deepLists, wantErr: "deeper"},
		{name: "stack underflow", data: []byte("\x80\x02a."), wantErr: "underflow"},
		{name: "TUPLE without MARK", data: []byte("\x80\x02K\x01t."), wantErr: "MARK"},
		{name: "unknown opcode", data: []byte("\x80\x02\xff."), wantErr: "unknown opcode"},
		{name: "no STOP", data: []byte("\x80\x02K\x01"), wantErr: "STOP"},
		{name: "memo read before write", data: []byte("\x80\x02h\x05."), wantErr: "memo key 5"},
		{name: "protocol 6", data: []byte("\x80\x06N."), wantErr: "protocol 6"},
		{name: "EXT1", data: []byte("\x80\x02\x82\x01."), wantErr: "extension registry"},
		{name: "out-of-band buffer", data: []byte("\x80\x05\x97."), wantErr: "out-of-band"},
		{name: "random bytes", data: []byte("\x13\x37\xca\xfe\xba\xbe"), wantErr: "not a checkpoint"},
		{name: "200k memo entries", data: memo.Bytes(), check: func(t *testing.T, ck *ckpt.Checkpoint) {
			if ck.Root.Len != 200000 {
				t.Errorf("root len = %d, want 200000", ck.Root.Len)
			}
		}},
		{name: "billion laughs", data: laughs.Bytes(), check: func(t *testing.T, ck *ckpt.Checkpoint) {
			if countNodes(ck) > 1000 {
				t.Errorf("tree has %d nodes; shared lists must become refs", countNodes(ck))
			}
		}},
		{name: "self-referencing list", data: []byte("\x80\x02]q\x00(K\x01h\x00e."), check: func(t *testing.T, ck *ckpt.Checkpoint) {
			n, err := ck.Node("/1")
			if err != nil || n.Kind != ckpt.KindRef || n.Target != "" {
				t.Errorf(`Node("/1") = %+v, %v; want a ref to the root`, n, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := openBytes(tc.data)
			if tc.wantErr != "" {
				var le *Error
				if err == nil || !errors.As(err, &le) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Open(%s) error = %v, want a *loader.Error containing %q", tc.name, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%s) = %v", tc.name, err)
			}
			if tc.check != nil {
				tc.check(t, ck)
			}
		})
	}
}

// TestFindingsFromTheScan checks that calls are reported even where the returned tree does
// not hold them, with the call and its arguments.
func TestFindingsFromTheScan(t *testing.T) {
	tests := []struct {
		name        string
		data        string
		global      string
		detail      string
		wantErr     bool
		wantOutside bool
	}{
		{name: "GLOBAL + REDUCE", data: "cposix\nsystem\n(S'touch x'\ntR.", global: "posix.system", detail: "calls posix.system('touch x')"},
		{name: "INST", data: "(S'print(1)'\ni__builtin__\nexec\n.", global: "__builtin__.exec", detail: "calls __builtin__.exec('print(1)')"},
		{name: "STACK_GLOBAL from memo", data: "\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93\x8c\x02id\x85R.", global: "os.system", detail: "calls os.system('id')"},
		{name: "call left on the stack", data: "\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R}.", global: "os.system", detail: "calls os.system('id')", wantOutside: true},
		{name: "second pickle", data: "\x80\x02N.\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.", global: "os.system", detail: "calls os.system('id')", wantOutside: true},
		{name: "call then broken", data: "\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R0h\x09.", global: "os.system", detail: "calls os.system('id')", wantErr: true},
		{name: "NEWOBJ of subprocess.Popen", data: "\x80\x02csubprocess\nPopen\n]X\x02\x00\x00\x00ls\x94a\x85\x81.", global: "subprocess.Popen", detail: "calls subprocess.Popen(['ls'])"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := openBytes([]byte(tc.data))
			var findings []ckpt.Finding
			if tc.wantErr {
				var le *Error
				if !errors.As(err, &le) {
					t.Fatalf("Open = %v, want a *loader.Error", err)
				}
				findings = le.Findings
			} else {
				if err != nil {
					t.Fatalf("Open = %v", err)
				}
				findings = ck.Findings
			}
			for _, f := range findings {
				if f.Global == tc.global && f.Severity == ckpt.SeverityDanger {
					if !strings.Contains(f.Detail, tc.detail) {
						t.Errorf("finding detail = %q, want it to contain %q", f.Detail, tc.detail)
					}
					if !tc.wantErr && f.Outside != tc.wantOutside {
						t.Errorf("finding Outside = %v, want %v", f.Outside, tc.wantOutside)
					}
					return
				}
			}
			t.Errorf("findings = %+v, want a danger finding for %s", findings, tc.global)
		})
	}
}

// TestTruncatedCheckpoints cuts real checkpoints at every length: each prefix must give an
// error (or, for a few lucky cuts, a tree), never a panic.
func TestTruncatedCheckpoints(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/models/*.p*")
	if extra, _ := filepath.Glob(filepath.Join(corpusDir, "gopickle", "tensor_float32_proto*.pt")); len(extra) > 0 {
		files = append(files, extra...)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) > 64<<10 {
			continue
		}
		step := 1
		if len(data) > 4096 {
			step = len(data) / 4096
		}
		refused := 0
		for n := 0; n < len(data); n += step {
			ck, err := openBytes(data[:n])
			var le *Error
			switch {
			case err == nil:
				ck.Close()
			case errors.As(err, &le) && le.Msg != "":
				refused++
			default:
				t.Fatalf("%s cut to %d bytes: %T %v, want a *loader.Error saying what is wrong", f, n, err, err)
			}
		}
		if tries := (len(data) + step - 1) / step; refused < tries*9/10 {
			t.Errorf("%s: only %d of %d truncations refused", f, refused, tries)
		}
	}
}

// A torch.save archive cut short (a download interrupted) says so, not just "invalid zip".
func TestTruncatedArchiveSaysSo(t *testing.T) {
	data, err := os.ReadFile("../../testdata/models/state_dict.pt")
	if err != nil {
		t.Fatal(err)
	}
	_, err = openBytes(data[:len(data)/2])
	var le *Error
	if !errors.As(err, &le) || !strings.Contains(le.Msg, "may be truncated") {
		t.Errorf("half of state_dict.pt: error %v, want a *loader.Error saying the file may be truncated", err)
	}
}

// FuzzOpen drives every decoder (sniffing, the scanner, gopickle with our stand-ins, zip,
// legacy and tar readers, view checks) with mutated fixtures.
func FuzzOpen(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/models/*")
	nested, _ := filepath.Glob("testdata/nested/*.pkl")
	seeds = append(seeds, nested...)
	for _, dir := range []string{"gopickle", "picklescan", "burn"} {
		more, _ := filepath.Glob(filepath.Join(corpusDir, dir, "*"))
		seeds = append(seeds, more...)
	}
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Add([]byte("\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{MaxOps: 200000, MaxNodes: 200000})
		if err != nil {
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("Open returned %T %v, want *loader.Error", err, err)
			}
			return
		}
		checkPointers(t, ck)
	})
}

// FuzzScan drives the opcode scanner alone (no unpickling): whatever the bytes, it must
// stop with a result or a *scanError, within its limits, and its rewritten stream must stay
// within MaxPickle.
func FuzzScan(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/hostile/*.pkl")
	more, _ := filepath.Glob("../../testdata/models/*.pkl")
	for _, s := range append(seeds, more...) {
		if b, err := os.ReadFile(s); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Add([]byte("cos\nsystem\n(S'ls'\ntR."))
	f.Fuzz(func(t *testing.T, data []byte) {
		o := Options{MaxOps: 100000, MaxPickle: 1 << 20}.withDefaults()
		ops := 0
		var fs findingSet
		s := &scanner{r: newSeqReader(bytes.NewReader(data), 0, int64(len(data))), o: o, where: "fuzz",
			fs: &fs, nonce: "n", ops: &ops, lazyMin: 64}
		_, err := s.run()
		if err != nil {
			var se *scanError
			if !errors.As(err, &se) {
				t.Fatalf("scan returned %T %v, want *scanError", err, err)
			}
		}
		if int64(len(s.out)) > o.MaxPickle+16 {
			t.Fatalf("rewritten stream of %d bytes exceeds MaxPickle", len(s.out))
		}
	})
}

// panicReader panics on the first read past its header: a stand-in for a bug of ours.
type panicReader struct{ data []byte }

func (p panicReader) ReadAt(b []byte, off int64) (int, error) {
	if off > 0 {
		panic("a planted bug")
	}
	return copy(b, p.data), nil
}

// A panic inside the loader is reported as an internal error, never as a problem of the
// file (which a "could not be read" *Error would claim).
func TestPanicIsInternalError(t *testing.T) {
	data := []byte("\x80\x02}q\x00.")
	_, err := Open(panicReader{data}, int64(len(data))+100, Options{})
	var ie *InternalError
	var le *Error
	if !errors.As(err, &ie) || errors.As(err, &le) || len(ie.Stack) == 0 {
		t.Fatalf("Open over a panicking reader = %T %v, want an *InternalError with its stack", err, err)
	}
}

// TestLimitsAreNotMalformed checks that a pickle refused at a limit says which limit and its
// flag, and is never called malformed: the file may be fine, the server's limit is lower.
func TestLimitsAreNotMalformed(t *testing.T) {
	// [[0, 1, ..., 1999]] with every value memoized, in protocol 4's opcodes (unframed)
	var p bytes.Buffer
	p.WriteString("\x80\x04]\x94(]\x94(")
	for i := range 2000 {
		p.Write([]byte{'M', byte(i), byte(i >> 8), 0x94})
	}
	p.WriteString("ee.")
	for _, c := range []struct {
		opts Options
		flag string
	}{
		// a pickle of plain data is read in one pass (plain.go), with its own value limit
		{Options{MaxValues: 100}, "-max-values"},
		{Options{MaxOps: 100}, "-max-pickle-ops"},
		{Options{MaxDepth: 1}, "-max-depth"},
		// and by the general path when it is not plain, with the general path's limits
		{Options{MaxMemo: 100, noPlain: true}, "-max-memo"},
		{Options{MaxOps: 100, noPlain: true}, "-max-pickle-ops"},
		{Options{MaxNodes: 100, noPlain: true}, "-max-nodes"},
		{Options{MaxDepth: 1, noPlain: true}, "-max-depth"},
	} {
		_, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), c.opts)
		var le *Error
		if !errors.As(err, &le) {
			t.Fatalf("%s: %v, want an *Error", c.flag, err)
		}
		if !strings.Contains(le.Msg, c.flag) || strings.Contains(le.Msg, "malformed") {
			t.Errorf("%s: %q should name the limit and not call the file malformed", c.flag, le.Msg)
		}
	}
	if _, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), Options{}); err != nil {
		t.Fatalf("the pickle itself is fine: %v", err)
	}
}

// checkPointers checks that every node's Path leads back to it (for an entry of a state
// dict kept as rows, to a node made anew from the same row: the same path, kind and tensor).
func checkPointers(t *testing.T, ck *ckpt.Checkpoint) {
	t.Helper()
	ckpt.Walk(ck.Root, func(n *ckpt.Node) {
		got, err := ck.Node(n.Path())
		if p := n.Parent(); err == nil && got != n && p != nil && p.LazyTensors() && got.Path() == n.Path() &&
			got.Kind == n.Kind && (got.Tensor == nil) == (n.Tensor == nil) && (n.Tensor == nil || got.Tensor.Storage.Key == n.Tensor.Storage.Key && got.Tensor.Storage.Users[0] == n.Tensor.Storage.Users[0]) {
			return
		}
		if err != nil || got != n {
			t.Fatalf("pointer %q leads to %p (%v), not to its node %p", n.Path(), got, err, n)
		}
	})
}

// countNodes is the number of values in the tree.
func countNodes(ck *ckpt.Checkpoint) int {
	n := 0
	ckpt.Walk(ck.Root, func(*ckpt.Node) { n++ })
	return n
}

// TestLargeContainerLookup looks up every entry of a dict of 5,000 str keys (past the size
// from which a container is looked up through its own key index) from several goroutines at
// once, as pages are served, and a key that is not there.
func TestLargeContainerLookup(t *testing.T) {
	// {"k0": 0, "k1": 1, ...} in protocol 2's opcodes: EMPTY_DICT MARK (BINUNICODE BININT)* SETITEMS STOP
	var p bytes.Buffer
	p.WriteString("\x80\x02}(")
	const n = 5000
	for i := range n {
		k := "k" + strconv.Itoa(i)
		p.Write([]byte{'X', byte(len(k)), 0, 0, 0})
		p.WriteString(k)
		p.Write([]byte{'J', byte(i), byte(i >> 8), 0, 0})
	}
	p.WriteString("u.")
	ck, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				k, err := ck.Node("/k" + strconv.Itoa(i))
				if err != nil || k.Int != strconv.Itoa(i) {
					t.Errorf("/k%d: %v %+v", i, err, k)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := ck.Node("/k5000"); err != ckpt.ErrNotFound {
		t.Errorf("/k5000: %v, want ErrNotFound", err)
	}
}

// TestMemoizedValueStoredOnce opens a list that holds one 4 MiB str 200 times through the
// memo, as pickle.dumps writes [s] * 200: the tree holds the string once, whatever the
// number of references (not 800 MiB).
func TestMemoizedValueStoredOnce(t *testing.T) {
	var p bytes.Buffer
	p.WriteString("\x80\x04]\x94(") // PROTO 4, EMPTY_LIST, MEMOIZE, MARK
	text := bytes.Repeat([]byte("abcd"), 1<<20)
	p.WriteByte(0x8d) // BINUNICODE8
	p.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(text))))
	p.Write(text)
	p.WriteByte(0x94) // MEMOIZE: memo 1
	for range 199 {
		p.Write([]byte{'h', 1}) // BINGET 1
	}
	p.WriteString("e.") // APPENDS, STOP
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ck, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if kids := ck.Root.Items(0, ck.Root.NumItems()); len(kids) != 200 || kids[199].Str != kids[0].Str || kids[0].Len != 4<<20 {
		t.Fatalf("%d items, the last one %d characters", len(kids), kids[len(kids)-1].Len)
	}
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 32<<20 {
		t.Errorf("the opened tree holds %d MiB: the str is stored more than once", held>>20)
	}
	runtime.KeepAlive(ck)
}

// TestEverySegmentLeadsToOneNode opens {1: 'a', '1': 'b'} (two keys Python keeps apart,
// whose pointer segments are both "1"): each value gets a pointer of its own that leads to
// it, the second at "1 (2)", and both keys still read "1".
func TestEverySegmentLeadsToOneNode(t *testing.T) {
	// pickle.dumps({1: 'a', '1': 'b'}, protocol=2) without the memo opcodes
	p := []byte("\x80\x02}(K\x01X\x01\x00\x00\x00aX\x01\x00\x00\x001X\x01\x00\x00\x00bu.")
	ck, err := Open(bytes.NewReader(p), int64(len(p)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkPointers(t, ck)
	kids := ck.Root.Children
	if len(kids) != 2 || kids[0].Str != "a" || kids[1].Str != "b" || kids[0].Key != "1" || kids[1].Key != "1" {
		t.Fatalf("children %+v", kids)
	}
	if b, err := ck.Node("/1 (2)"); err != nil || b.Str != "b" {
		t.Errorf("/1 (2): %v %+v", err, b)
	}
}

// TestEveryOpcodeHasOneHandler checks the opcode table against CPython's own list (the 68
// opcodes of pickletools.opcodes in Python 3.11, in its order): each has a handler, and no
// other byte does (it is an unknown opcode, as for pickle.load).
func TestEveryOpcodeHasOneHandler(t *testing.T) {
	const cpython = "\x49\x4a\x4b\x4d\x4c\x8a\x8b\x53\x54\x55\x42\x43\x8e\x96\x97\x98\x4e\x88\x89\x56\x8c\x58\x8d\x46\x47\x5d\x61\x65\x6c\x29\x74\x85\x86\x87\x7d\x64\x73\x75\x8f\x90\x91\x30\x32\x28\x31\x67\x68\x6a\x70\x71\x72\x94\x82\x83\x84\x63\x93\x52\x62\x69\x6f\x81\x92\x80\x2e\x95\x50\x51"
	known := map[byte]bool{}
	for i := range len(cpython) {
		known[cpython[i]] = true
	}
	if len(known) != 68 {
		t.Fatalf("%d opcodes in the list", len(known))
	}
	for op := range 256 {
		if has := opHandlers[op] != nil; has != known[byte(op)] {
			t.Errorf("opcode 0x%02x: handler %v, CPython knows it %v", op, has, known[byte(op)])
		}
	}
}
