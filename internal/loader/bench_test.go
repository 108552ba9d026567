package loader_test

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ckptview/ckptview/internal/loader"
)

// Benchmarks of Open, the cost of showing a checkpoint for the first time. scripts/bench
// times the whole program (upload, first and warm requests, RSS) against torch.load on a
// real torch file; these time the loader alone:
//
//	go test -run '^$' -bench Open -benchmem ./internal/loader
//	CKPTVIEW_BENCH_FILE=/tmp/ckptview-bench/gpt2-medium.pt go test -run '^$' -bench OpenFile ./internal/loader

// BenchmarkOpenGPT2Medium opens a torch zip laid out like a GPT-2-medium state dict saved by
// torch 1.13 (317 tensors, 1.5 GB of float32), built in memory: the archive's headers and
// data.pkl are real bytes, the tensor data a hole of zeros that Open must never read.
func BenchmarkOpenGPT2Medium(b *testing.B) {
	for _, dtype := range []string{"float32", "bfloat16"} {
		b.Run(dtype, func(b *testing.B) {
			f := gpt2MediumZip(b, dtype)
			b.ReportAllocs()
			for b.Loop() {
				ck, err := loader.Open(f, f.size, loader.Options{})
				if err != nil {
					b.Fatalf("Open(synthetic gpt2-medium %s) = %v", dtype, err)
				}
				if ck.Tensors != 317 {
					b.Fatalf("Open(synthetic gpt2-medium %s).Tensors = %d, want 317", dtype, ck.Tensors)
				}
			}
			b.ReportMetric(float64(f.size)/1e6, "file-MB")
			b.ReportMetric(float64(f.readBytes.Load())/float64(b.N)/1e3, "read-kB/op")
		})
	}
}

// BenchmarkOpenModels opens each torch file and pickle in testdata/models.
func BenchmarkOpenModels(b *testing.B) {
	dir := filepath.Join("..", "..", "testdata", "models")
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Skipf("no fixtures: %v", err)
	}
	n := 0
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib":
		default:
			continue
		}
		n++
		b.Run(e.Name(), func(b *testing.B) { benchmarkOpenFile(b, filepath.Join(dir, e.Name()), false) })
	}
	if n == 0 {
		b.Skipf("no checkpoints in %s", dir)
	}
}

// BenchmarkOpenFile opens the file named by $CKPTVIEW_BENCH_FILE, such as the GPT-2-medium
// checkpoint scripts/bench makes.
func BenchmarkOpenFile(b *testing.B) {
	path := os.Getenv("CKPTVIEW_BENCH_FILE")
	if path == "" {
		b.Skip("set CKPTVIEW_BENCH_FILE to a checkpoint to time opening it")
	}
	b.Run(filepath.Base(path), func(b *testing.B) { benchmarkOpenFile(b, path, true) })
}

// benchmarkOpenFile times Open on a file on disk (read through the page cache); sizeMetric
// adds the file's size to the results.
func benchmarkOpenFile(b *testing.B, path string, sizeMetric bool) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	opts := loader.Options{}
	if os.Getenv("CKPTVIEW_BENCH_LIMITS") == "server" {
		opts = loader.ServerOptions()
	}
	// the heap an opened tree holds, per value: in use after the open minus before
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ck, err := loader.Open(f, st.Size(), opts)
	if err != nil {
		b.Skipf("Open(%s) = %v; nothing to time", path, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	values := ck.Values
	held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	runtime.KeepAlive(ck)
	ck = nil
	b.ReportAllocs()
	for b.Loop() {
		if _, err := loader.Open(f, st.Size(), opts); err != nil {
			b.Fatalf("Open(%s) = %v", path, err)
		}
	}
	b.ReportMetric(held/float64(max(values, 1)), "heap-B/value")
	b.ReportMetric(float64(values), "values")
	if sizeMetric {
		b.ReportMetric(float64(st.Size())/1e6, "file-MB")
	}
}

// --- a GPT-2-medium torch zip in memory ------------------------------------------------------

var (
	gpt2Once  sync.Map // dtype -> *sync.Once
	gpt2Files sync.Map // dtype -> *sparseFile or error
)

// gpt2MediumZip builds (once per dtype and process) the synthetic checkpoint.
func gpt2MediumZip(b *testing.B, dtype string) *sparseFile {
	b.Helper()
	once, _ := gpt2Once.LoadOrStore(dtype, new(sync.Once))
	once.(*sync.Once).Do(func() {
		f, err := buildGPT2MediumZip(dtype)
		if err != nil {
			gpt2Files.Store(dtype, err)
			return
		}
		gpt2Files.Store(dtype, f)
	})
	v, _ := gpt2Files.Load(dtype)
	if err, ok := v.(error); ok {
		b.Fatalf("building the synthetic gpt2-medium %s checkpoint: %v", dtype, err)
	}
	f := v.(*sparseFile)
	f.readBytes.Store(0)
	return f
}

// gpt2Tensor is one state dict entry: its key, shape and storage (key and element count).
type gpt2Tensor struct {
	key     string
	shape   []int64
	storage string
	numel   int64
}

// gpt2MediumLayout is the state dict scripts/bench.py saves with torch: the original HF
// gpt2-medium layout (with the attn.bias mask buffers) and lm_head.weight tied to wte.weight.
func gpt2MediumLayout() (tensors []gpt2Tensor, modules []string) {
	const layers, d, vocab, ctx = 24, 1024, 50257, 1024
	add := func(key string, shape ...int64) {
		n := int64(1)
		for _, s := range shape {
			n *= s
		}
		tensors = append(tensors, gpt2Tensor{key: key, shape: shape, storage: strconv.Itoa(len(tensors)), numel: n})
	}
	add("wte.weight", vocab, d)
	add("wpe.weight", ctx, d)
	for i := range layers {
		p := fmt.Sprintf("h.%d.", i)
		add(p+"ln_1.weight", d)
		add(p+"ln_1.bias", d)
		add(p+"attn.bias", 1, 1, ctx, ctx)
		add(p+"attn.c_attn.weight", d, 3*d)
		add(p+"attn.c_attn.bias", 3*d)
		add(p+"attn.c_proj.weight", d, d)
		add(p+"attn.c_proj.bias", d)
		add(p+"ln_2.weight", d)
		add(p+"ln_2.bias", d)
		add(p+"mlp.c_fc.weight", d, 4*d)
		add(p+"mlp.c_fc.bias", 4*d)
		add(p+"mlp.c_proj.weight", 4*d, d)
		add(p+"mlp.c_proj.bias", d)
	}
	add("ln_f.weight", d)
	add("ln_f.bias", d)
	tied := tensors[0]
	tied.key = "lm_head.weight"
	tensors = append(tensors, tied)

	modules = []string{"", "wte", "wpe", "h"}
	for i := range layers {
		modules = append(modules, fmt.Sprintf("h.%d", i))
	}
	for i := range layers {
		for _, m := range []string{"ln_1", "attn", "attn.c_attn", "attn.c_proj", "ln_2", "mlp", "mlp.c_fc", "mlp.c_proj"} {
			modules = append(modules, fmt.Sprintf("h.%d.%s", i, m))
		}
	}
	modules = append(modules, "ln_f", "lm_head")
	return tensors, modules
}

// buildGPT2MediumZip writes the archive as torch 1.13's torch.save does: data.pkl, then one
// stored member per storage in key order with its data aligned to 64 bytes, then version.
func buildGPT2MediumZip(dtype string) (*sparseFile, error) {
	tensors, modules := gpt2MediumLayout()
	storageClass, esize := map[string]string{"float32": "FloatStorage", "bfloat16": "BFloat16Storage"}[dtype], map[string]int64{"float32": 4, "bfloat16": 2}[dtype]
	pkl := gpt2Pickle(tensors, modules, storageClass)

	sizes := map[string]int64{}
	for _, t := range tensors {
		sizes[t.storage] = t.numel * esize
	}
	keys := make([]string, 0, len(sizes))
	for k := range sizes {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	f := &sparseFile{}
	zw := zip.NewWriter(f)
	const prefix = "gpt2-medium/"
	add := func(name string, size int64, write func() error, crc uint32) error {
		if err := zw.Flush(); err != nil { // so that f.size counts every byte so far
			return err
		}
		// torch pads the local header's extra field ("FB") so the data starts at 64 bytes.
		hdr := int64(30 + len(name) + 4)
		pad := (64 - (f.size+hdr)%64) % 64
		extra := make([]byte, 4+pad)
		binary.LittleEndian.PutUint16(extra, 0x4246)
		binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
		for i := range extra[4:] {
			extra[4+i] = 'Z'
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, Extra: extra,
			CRC32: crc, CompressedSize64: uint64(size), UncompressedSize64: uint64(size)})
		if err != nil {
			return err
		}
		if err := zw.Flush(); err != nil {
			return err
		}
		f.w = w
		return write()
	}
	if err := add(prefix+"data.pkl", int64(len(pkl)), func() error { _, err := f.w.Write(pkl); return err }, crc32.ChecksumIEEE(pkl)); err != nil {
		return nil, err
	}
	for _, k := range keys {
		n := sizes[k]
		if err := add(prefix+"data/"+k, n, func() error { return f.writeZeros(n) }, zerosCRC(n)); err != nil {
			return nil, err
		}
	}
	version := []byte("3\n")
	if err := add(prefix+"version", 2, func() error { _, err := f.w.Write(version); return err }, crc32.ChecksumIEEE(version)); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return f, nil
}

// zeroChunk is the tensor data: writes of exactly this slice become holes in a sparseFile.
var zeroChunk = make([]byte, 1<<20)

var (
	zerosCRCMu    sync.Mutex
	zerosCRCCache = map[int64]uint32{}
)

// zerosCRC is the CRC-32 of n zero bytes.
func zerosCRC(n int64) uint32 {
	zerosCRCMu.Lock()
	defer zerosCRCMu.Unlock()
	if c, ok := zerosCRCCache[n]; ok {
		return c
	}
	var c uint32
	for left := n; left > 0; {
		k := min(left, int64(len(zeroChunk)))
		c = crc32.Update(c, crc32.IEEETable, zeroChunk[:k])
		left -= k
	}
	zerosCRCCache[n] = c
	return c
}

// sparseFile is a file in memory whose long runs of zeros take no space: an io.Writer while
// the archive is built, then an io.ReaderAt for Open that counts the bytes it reads.
type sparseFile struct {
	size     int64
	segments []segment // bytes written, in order; everything else reads as zeros
	w        io.Writer // the archive member being written

	readBytes atomic.Int64
}

type segment struct {
	off  int64
	data []byte
}

func (f *sparseFile) Write(p []byte) (int, error) {
	if len(p) > 0 && len(p) <= len(zeroChunk) && &p[0] == &zeroChunk[0] {
		f.size += int64(len(p)) // a hole
		return len(p), nil
	}
	if n := len(f.segments); n > 0 && f.segments[n-1].off+int64(len(f.segments[n-1].data)) == f.size {
		f.segments[n-1].data = append(f.segments[n-1].data, p...)
	} else {
		f.segments = append(f.segments, segment{off: f.size, data: bytes.Clone(p)})
	}
	f.size += int64(len(p))
	return len(p), nil
}

// writeZeros writes n zero bytes through the current member's writer, as holes.
func (f *sparseFile) writeZeros(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroChunk)))
		if _, err := f.w.Write(zeroChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (f *sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("sparseFile: negative offset %d", off)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := f.size - off; int64(n) > rest {
		n = int(rest)
	}
	clear(p[:n])
	end := off + int64(n)
	i := sort.Search(len(f.segments), func(i int) bool {
		s := f.segments[i]
		return s.off+int64(len(s.data)) > off
	})
	for ; i < len(f.segments) && f.segments[i].off < end; i++ {
		s := f.segments[i]
		lo, hi := max(s.off, off), min(s.off+int64(len(s.data)), end)
		copy(p[lo-off:hi-off], s.data[lo-s.off:hi-s.off])
	}
	f.readBytes.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// --- the pickle torch 1.13 writes for that state dict (protocol 2) --------------------------

// pickleWriter emits the opcodes Python's pickle module does, memo numbering included.
type pickleWriter struct {
	buf  bytes.Buffer
	memo int
	// strs and globals remember the memo slot of values Python memoizes once and fetches
	// again with BINGET: interned strings and classes.
	strs    map[string]int
	globals map[string]int
}

func (w *pickleWriter) op(b ...byte) { w.buf.Write(b) }

func (w *pickleWriter) put() int {
	i := w.memo
	w.memo++
	if i < 256 {
		w.op('q', byte(i))
	} else {
		w.op('r')
		_ = binary.Write(&w.buf, binary.LittleEndian, uint32(i))
	}
	return i
}

func (w *pickleWriter) get(i int) {
	if i < 256 {
		w.op('h', byte(i))
	} else {
		w.op('j')
		_ = binary.Write(&w.buf, binary.LittleEndian, uint32(i))
	}
}

// str writes a str; shared says Python would pass the same object again (a literal or
// interned name), so a repeat is a BINGET.
func (w *pickleWriter) str(s string, shared bool) {
	if i, ok := w.strs[s]; ok && shared {
		w.get(i)
		return
	}
	w.op('X')
	_ = binary.Write(&w.buf, binary.LittleEndian, uint32(len(s)))
	w.buf.WriteString(s)
	i := w.put()
	if shared {
		w.strs[s] = i
	}
}

func (w *pickleWriter) global(module, name string) {
	if i, ok := w.globals[module+"."+name]; ok {
		w.get(i)
		return
	}
	w.op('c')
	w.buf.WriteString(module + "\n" + name + "\n")
	w.globals[module+"."+name] = w.put()
}

func (w *pickleWriter) int(v int64) {
	switch {
	case v >= 0 && v < 256:
		w.op('K', byte(v))
	case v >= 0 && v < 65536:
		w.op('M', byte(v), byte(v>>8))
	default:
		w.op('J')
		_ = binary.Write(&w.buf, binary.LittleEndian, int32(v))
	}
}

// tuple writes a tuple of ints and memoizes it, as pickle does for a new tuple object.
func (w *pickleWriter) tuple(vs []int64) {
	if len(vs) == 0 {
		w.op(')')
		return
	}
	if len(vs) > 3 {
		w.op('(')
	}
	for _, v := range vs {
		w.int(v)
	}
	switch len(vs) {
	case 1:
		w.op(0x85)
	case 2:
		w.op(0x86)
	case 3:
		w.op(0x87)
	default:
		w.op('t')
	}
	w.put()
}

// orderedDict writes OrderedDict(): the class, no arguments, REDUCE.
func (w *pickleWriter) orderedDict() {
	w.global("collections", "OrderedDict")
	w.op(')', 'R')
	w.put()
}

func gpt2Pickle(tensors []gpt2Tensor, modules []string, storageClass string) []byte {
	w := &pickleWriter{strs: map[string]int{}, globals: map[string]int{}}
	w.op(0x80, 2)
	w.orderedDict()
	w.op('(')
	for _, t := range tensors {
		w.str(t.key, false)
		// Tensor.__reduce_ex__: _rebuild_tensor_v2(storage, offset, size, stride,
		// requires_grad, backward_hooks), the storage a persistent id.
		w.global("torch._utils", "_rebuild_tensor_v2")
		w.op('(', '(')
		w.str("storage", true)
		w.global("torch", storageClass)
		w.str(t.storage, true)
		w.str("cpu", true)
		w.int(t.numel)
		w.op('t')
		w.put()
		w.op('Q')
		w.int(0)
		w.tuple(t.shape)
		strides := make([]int64, len(t.shape))
		s := int64(1)
		for i := len(t.shape) - 1; i >= 0; i-- {
			strides[i] = s
			s *= t.shape[i]
		}
		w.tuple(strides)
		w.op(0x89) // requires_grad False
		w.orderedDict()
		w.op('t')
		w.put()
		w.op('R')
		w.put()
	}
	w.op('u')
	// The state: {"_metadata": OrderedDict(module -> {"version": 1})}.
	w.op('}')
	w.put()
	w.str("_metadata", true)
	w.orderedDict()
	w.op('(')
	for _, m := range modules {
		w.str(m, false)
		w.op('}')
		w.put()
		w.str("version", true)
		w.int(1)
		w.op('s')
	}
	w.op('u', 's', 'b', '.')
	return w.buf.Bytes()
}

// BenchmarkSafetensorsOpen opens the safetensors file named by CKPTVIEW_BENCH_SAFETENSORS;
// BenchmarkSafetensorsHeaderJSON only reads its header and parses the JSON into a map, the
// least any reader does: issue 7 wants the first within 2x of the second.
func BenchmarkSafetensorsOpen(b *testing.B) {
	f := benchSafetensors(b)
	st, _ := f.Stat()
	b.SetBytes(st.Size())
	b.ResetTimer()
	for b.Loop() {
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			b.Fatal(err)
		}
		ck.Close()
	}
}

func BenchmarkSafetensorsHeaderJSON(b *testing.B) {
	f := benchSafetensors(b)
	for b.Loop() {
		var nb [8]byte
		if _, err := f.ReadAt(nb[:], 0); err != nil {
			b.Fatal(err)
		}
		h := make([]byte, binary.LittleEndian.Uint64(nb[:]))
		if _, err := f.ReadAt(h, 8); err != nil {
			b.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(h, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSafetensors(b *testing.B) *os.File {
	path := os.Getenv("CKPTVIEW_BENCH_SAFETENSORS")
	if path == "" {
		b.Skip("set CKPTVIEW_BENCH_SAFETENSORS to a .safetensors file (scripts/bench-formats makes one)")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkNonASCIIStrings opens pickles of non-ASCII strings of growing count and length,
// in protocols 0 (raw-unicode-escape text) and 4 (UTF-8): the cost must grow with the bytes,
// not with their square (a red team's 2,000 strings once took 46 s).
func BenchmarkNonASCIIStrings(b *testing.B) {
	for _, proto := range []int{0, 4} {
		for _, shape := range [][2]int{{2000, 50}, {2000, 2000}, {20000, 50}} {
			n, length := shape[0], shape[1]
			var p bytes.Buffer
			if proto == 4 {
				p.WriteString("\x80\x04]q\x00(")
			} else {
				p.WriteString("(l")
			}
			s := strings.Repeat("é", length)
			for i := 0; i < n; i++ {
				if proto == 4 {
					v := s + strconv.Itoa(i)
					p.WriteByte('X')
					binary.Write(&p, binary.LittleEndian, uint32(len(v)))
					p.WriteString(v)
				} else {
					p.WriteString("V" + strings.Repeat("\\u00e9", length) + strconv.Itoa(i) + "\na")
				}
			}
			if proto == 4 {
				p.WriteString("e.")
			} else {
				p.WriteString(".")
			}
			data := p.Bytes()
			b.Run(fmt.Sprintf("proto%d/%dx%d", proto, n, length), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{MaxPickle: 1 << 30}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
