package loadtest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// file is something to upload: a fixture, a hostile file, a damaged copy or a file at the
// loader's limits.
type file struct {
	name string
	data []byte
	// patch, when >= 0, is where 4 bytes may be changed to make the file new to the server
	// (an int the pickle pushes and pops, a zip comment), so its cache cannot answer.
	patch int
	// over marks a file made just over one of the limits, which the server refuses.
	over bool
}

// readDir reads the files of dir that are test inputs, not their descriptions.
func readDir(dir string) ([]file, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []file
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") {
			continue
		}
		switch filepath.Ext(name) {
		case ".json", ".py", ".md", ".txt":
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, file{name: name, data: data, patch: -1})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// hostileMarkers lists the files the payloads of testdata/hostile would create if anything
// ran them (expected.json's "marker" fields).
func hostileMarkers(dir string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		return nil, err
	}
	var cases map[string]struct {
		Marker string `json:"marker"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		return nil, fmt.Errorf("%s/expected.json: %w", dir, err)
	}
	var out []string
	for _, c := range cases {
		if c.Marker != "" {
			out = append(out, c.Marker)
		}
	}
	sort.Strings(out)
	return out, nil
}

// damaged returns a new broken copy of f: cut short, or with a few bytes changed, or with
// bytes appended.
func damaged(f file, r *rand.Rand) file {
	data := f.data
	switch r.IntN(3) {
	case 0:
		if len(data) > 1 {
			data = append([]byte(nil), data[:1+r.IntN(len(data)-1)]...)
		}
	case 1:
		data = append([]byte(nil), data...)
		for range 1 + r.IntN(8) {
			if len(data) > 0 {
				data[r.IntN(len(data))] = byte(r.Uint32())
			}
		}
	default:
		tail := make([]byte, 1+r.IntN(64))
		for i := range tail {
			tail[i] = byte(r.Uint32())
		}
		data = append(append([]byte(nil), data...), tail...)
	}
	return file{name: "damaged-" + f.name, data: data, patch: -1}
}

// fresh returns a copy of f that the server has not seen: its patch bytes randomised.
func fresh(f file, r *rand.Rand) []byte {
	if f.patch < 0 {
		return f.data
	}
	data := append([]byte(nil), f.data...)
	binary.LittleEndian.PutUint32(data[f.patch:], r.Uint32())
	return data
}

// Limits are what the server's loader allows one file (its -max-* flags); the load test
// makes files just under and just over them.
type Limits struct {
	MaxNodes   int
	MaxTensors int
	MaxValues  int
	MaxMemo    int
	MaxOps     int
	MaxPickle  int64
}

// pickleWriter writes a protocol 4 pickle opcode by opcode. Every pickle starts by pushing
// and popping a 4-byte int, which fresh changes.
type pickleWriter struct{ bytes.Buffer }

// patchAt is where the first int of every pickle made here lies.
const patchAt = 3

func newPickle() *pickleWriter {
	w := &pickleWriter{}
	w.Write([]byte{0x80, 4, 'J', 0, 0, 0, 0, '0'}) // PROTO 4, BININT, POP
	return w
}

func (w *pickleWriter) str(s string) {
	w.WriteByte(0x8c) // SHORT_BINUNICODE
	w.WriteByte(byte(len(s)))
	w.WriteString(s)
}

func (w *pickleWriter) file(name string) file {
	w.WriteByte('.')
	return file{name: name, data: w.Bytes(), patch: patchAt}
}

// listOfInts is a list of n small ints: n+1 values in the tree, a pickle of plain data.
func listOfInts(n int) file { return intsAfter(n, nil, "list_of_%d_ints.pkl") }

// listOfIntsAndObject is a list of an OrderedDict() and n small ints: n+2 values, read by
// the loader's general path (an object is no plain data).
func listOfIntsAndObject(n int) file {
	return intsAfter(n, []byte("ccollections\nOrderedDict\n)R"), "list_of_%d_ints_and_an_object.pkl")
}

func intsAfter(n int, first []byte, name string) file {
	w := newPickle()
	w.Write([]byte{']', '('})
	w.Write(first)
	for i := range n {
		w.WriteByte('K')
		w.WriteByte(byte(i))
		if i%1000 == 999 {
			w.Write([]byte{'e', '('})
		}
	}
	w.WriteByte('e')
	return w.file(fmt.Sprintf(name, n))
}

// dictOfStrs is a dict of n entries with str keys and short str values.
func dictOfStrs(n int) file {
	w := newPickle()
	w.Write([]byte{'}', '('})
	for i := range n {
		w.str(fmt.Sprintf("layer.%08d.weight", i))
		w.str("value")
		if i%1000 == 999 {
			w.Write([]byte{'u', '('})
		}
	}
	w.WriteByte('u')
	return w.file(fmt.Sprintf("dict_of_%d_strs.pkl", n))
}

// listOfStrs is a list of strings of 250 bytes totalling about size bytes, all of them held
// in memory by the loader.
func listOfStrs(size int64) file {
	w := newPickle()
	w.Write([]byte{']', '('})
	s := strings.Repeat("s", 250)
	n := int(size / 252)
	for i := range n {
		w.str(s)
		if i%1000 == 999 {
			w.Write([]byte{'e', '('})
		}
	}
	w.WriteByte('e')
	return w.file(fmt.Sprintf("list_of_%d_strs.pkl", n))
}

// memoChurn memoizes n values and drops them: a full memo, a one-node tree. With an
// object first, the general path reads it.
func memoChurn(n int, object bool) file {
	w := newPickle()
	w.WriteByte(']')
	name := "memo_%d.pkl"
	if object {
		w.WriteString("(ccollections\nOrderedDict\n)Re")
		name = "memo_%d_and_an_object.pkl"
	}
	for range n {
		w.Write([]byte{'N', 0x94, '0'}) // NONE, MEMOIZE, POP
	}
	return w.file(fmt.Sprintf(name, n))
}

// markChurn is ops opcodes of MARK and POP_MARK: all the work the op limit allows.
func markChurn(ops int) file {
	w := newPickle()
	for range ops / 2 {
		w.Write([]byte{'(', '1'})
	}
	w.WriteByte('N')
	return w.file(fmt.Sprintf("ops_%d.pkl", ops))
}

// zipOfMembers is a torch-like zip with n empty members beside its data.pkl; its comment
// is what fresh changes.
func zipOfMembers(n int) file {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for i := range n {
		zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("archive/data/%d", i), Method: zip.Store})
	}
	f, _ := zw.CreateHeader(&zip.FileHeader{Name: "archive/data.pkl", Method: zip.Store})
	f.Write([]byte{0x80, 2, '}', '.'})
	zw.SetComment("0000")
	zw.Close()
	return file{name: fmt.Sprintf("zip_of_%d_members.pt", n), data: b.Bytes(), patch: b.Len() - 4}
}

// stateDict is torch.save of an OrderedDict of n tensors of 4 float32 each, in the
// opcodes torch.save writes (protocol 2, every value memoized): n+1 values in the tree, and
// about eighteen pickle values and eight memo entries per tensor while it is read (the
// one-pass reading of torch state dicts).
func stateDict(n int) file {
	var p bytes.Buffer
	memo := 0
	put := func() { // LONG_BINPUT
		p.WriteByte('r')
		_ = binary.Write(&p, binary.LittleEndian, uint32(memo))
		memo++
	}
	get := func(i int) { // LONG_BINGET
		p.WriteByte('j')
		_ = binary.Write(&p, binary.LittleEndian, uint32(i))
	}
	str := func(s string) { // BINUNICODE
		p.WriteByte('X')
		_ = binary.Write(&p, binary.LittleEndian, uint32(len(s)))
		p.WriteString(s)
		put()
	}
	p.Write([]byte{0x80, 2})
	p.WriteString("ccollections\nOrderedDict\n")
	put() // 0: OrderedDict
	p.Write([]byte{')', 'R'})
	put()
	p.WriteByte('(')
	var rebuild, storage, float, cpu int
	for i := range n {
		str(fmt.Sprintf("layers.%d.weight", i))
		if i == 0 {
			p.WriteString("ctorch._utils\n_rebuild_tensor_v2\n")
			rebuild = memo
			put()
		} else {
			get(rebuild)
		}
		p.Write([]byte{'(', '('})
		if i == 0 {
			storage = memo
			str("storage")
			p.WriteString("ctorch\nFloatStorage\n")
			float = memo
			put()
		} else {
			get(storage)
			get(float)
		}
		str(strconv.Itoa(i))
		if i == 0 {
			cpu = memo
			str("cpu")
		} else {
			get(cpu)
		}
		p.Write([]byte{'K', 4, 't'})
		put()
		p.WriteByte('Q')                      // BINPERSID
		p.Write([]byte{'K', 0, 'K', 4, 0x85}) // offset 0, size (4,)
		put()
		p.Write([]byte{'K', 1, 0x85}) // stride (1,)
		put()
		p.WriteByte(0x89) // requires_grad False
		get(0)
		p.Write([]byte{')', 'R'}) // backward_hooks OrderedDict()
		put()
		p.WriteByte('t')
		put()
		p.WriteByte('R')
		put()
		if i%1000 == 999 {
			p.Write([]byte{'u', '('})
		}
	}
	p.Write([]byte{'u', '.'})
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	add := func(name string, data []byte) {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		w.Write(data)
	}
	add("data.pkl", p.Bytes())
	for i := range n {
		add("data/"+strconv.Itoa(i), make([]byte, 16))
	}
	add("version", []byte("3\n"))
	zw.SetComment("0000")
	zw.Close()
	return file{name: fmt.Sprintf("state_dict_of_%d_tensors.pt", n), data: b.Bytes(), patch: b.Len() - 4}
}

// limitFiles are files at the edges of l: the largest trees, memos, pickles and op counts
// the loader accepts, and just over them (marked over). A pickle of plain data meets
// MaxValues, one with an object in it MaxNodes and MaxMemo.
func limitFiles(l Limits) []file {
	over := func(f file) file { f.over = true; return f }
	return []file{
		listOfInts(l.MaxValues - 10),
		over(listOfInts(l.MaxValues + 10)),
		listOfIntsAndObject(l.MaxNodes - 10),
		over(listOfIntsAndObject(l.MaxNodes + 10)),
		// a key and its value take about 30 bytes of text, which MaxPickle caps too
		dictOfStrs(min(l.MaxValues, int(l.MaxPickle/30)) - 10),
		listOfStrs(l.MaxPickle * 9 / 10),
		over(listOfStrs(l.MaxPickle * 11 / 10)),
		memoChurn(l.MaxValues-10, false),
		over(memoChurn(l.MaxValues+10, false)),
		memoChurn(l.MaxMemo-10, true),
		over(memoChurn(l.MaxMemo+10, true)),
		// Every opcode takes at least a byte of the pickle the loader holds, so MaxPickle
		// caps them too.
		markChurn(min(l.MaxOps, int(l.MaxPickle*95/100)) - 100),
		zipOfMembers(100_000),
		stateDict(l.MaxTensors - 10),
		over(stateDict(l.MaxTensors + 10)),
	}
}
