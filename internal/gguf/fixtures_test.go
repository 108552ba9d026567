package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// The fixtures and expected.json are written by testdata/gguf/make_fixtures.py; the
// dequantized values of quantized tensors in expected.json come from ggml's reference
// dequantizers (see testdata/gguf/README.md), never from this package.

const fixtureDir = "../../testdata/gguf"

type expectedFile struct {
	GGMLReference string                     `json:"ggml_reference"`
	Fixtures      map[string]expectedFixture `json:"fixtures"`
}

type expectedFixture struct {
	Version    uint32           `json:"version"`
	Alignment  int64            `json:"alignment"`
	Size       int64            `json:"size"`
	DataOffset int64            `json:"data_offset"`
	Metadata   []map[string]any `json:"metadata"`
	Tensors    []expectedTensor `json:"tensors"`
}

type expectedTensor struct {
	Name         string    `json:"name"`
	Dims         []int64   `json:"dims"`
	Shape        []int64   `json:"shape"`
	Type         string    `json:"type"`
	Offset       int64     `json:"offset"`
	RelOffset    int64     `json:"rel_offset"`
	NBytes       int64     `json:"nbytes"`
	Elements     int64     `json:"elements"`
	DataSHA256   string    `json:"data_sha256"`
	First64Bits  []uint32  `json:"first64_bits"`
	Sum          *float64  `json:"sum"`
	ValuesSHA256 string    `json:"values_sha256"`
	Source       string    `json:"source"`
	First64      []float64 `json:"first64"`
}

func loadExpected(t testing.TB) expectedFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectedFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		t.Fatal(err)
	}
	if len(e.Fixtures) == 0 {
		t.Fatal("expected.json lists no fixtures")
	}
	return e
}

func parseFixture(t testing.TB, name string) (*File, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(bytes.NewReader(b), int64(len(b)), Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f, b
}

func TestParseFixtures(t *testing.T) {
	exp := loadExpected(t)
	for name, fx := range exp.Fixtures {
		t.Run(name, func(t *testing.T) {
			f, _ := parseFixture(t, name)
			if f.Version != fx.Version || f.Alignment != fx.Alignment || f.Size != fx.Size || f.DataOffset != fx.DataOffset {
				t.Errorf("version %d alignment %d size %d data offset %d; want %d %d %d %d",
					f.Version, f.Alignment, f.Size, f.DataOffset, fx.Version, fx.Alignment, fx.Size, fx.DataOffset)
			}
			if len(f.Metadata) != len(fx.Metadata) {
				t.Fatalf("%d keys; want %d", len(f.Metadata), len(fx.Metadata))
			}
			for i, m := range fx.Metadata {
				kv := f.Metadata[i]
				if kv.Key != m["key"] {
					t.Errorf("key %d is %q; want %q", i, kv.Key, m["key"])
					continue
				}
				checkValue(t, kv.Key, kv.Value, m)
				if v, ok := f.Get(kv.Key); !ok || v.Type != kv.Value.Type {
					t.Errorf("Get(%q) = %v, %v", kv.Key, v, ok)
				}
			}
			if len(f.Tensors) != len(fx.Tensors) {
				t.Fatalf("%d tensors; want %d", len(f.Tensors), len(fx.Tensors))
			}
			for i, et := range fx.Tensors {
				ti := f.Tensors[i]
				if ti.Name != et.Name || !slices.Equal(ti.Dims, et.Dims) || !slices.Equal(ti.Shape, et.Shape) ||
					ti.Type.String() != et.Type || ti.Offset != et.Offset || ti.RelOffset != et.RelOffset ||
					ti.Size != et.NBytes || ti.Elements != et.Elements {
					t.Errorf("tensor %d: %+v;\nwant %+v", i, ti, et)
				}
				if p, ok := f.Tensor(et.Name); !ok || p.Offset != et.Offset {
					t.Errorf("Tensor(%q) = %v, %v", et.Name, p, ok)
				}
				data, err := io.ReadAll(f.TensorData(&ti))
				if err != nil {
					t.Fatal(err)
				}
				if h := sha256.Sum256(data); hex.EncodeToString(h[:]) != et.DataSHA256 {
					t.Errorf("tensor %s: data sha256 %x; want %s", et.Name, h, et.DataSHA256)
				}
			}
			if name == "all_types_v3.gguf" && len(f.Warnings) != 1 {
				t.Errorf("warnings %q; want one, for the nested arrays", f.Warnings)
			}
			if name != "all_types_v3.gguf" && len(f.Warnings) != 0 {
				t.Errorf("warnings %q; want none", f.Warnings)
			}
		})
	}
}

func jsonUint(t *testing.T, v any) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(string(v.(json.Number)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func jsonInt(t *testing.T, v any) int64 {
	t.Helper()
	n, err := strconv.ParseInt(string(v.(json.Number)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkValue compares a value with its description in expected.json.
func checkValue(t *testing.T, where string, v Value, exp map[string]any) {
	t.Helper()
	if v.Type.String() != exp["type"] {
		t.Errorf("%s: type %s; want %v", where, v.Type, exp["type"])
		return
	}
	switch v.Type {
	case ValueUint8, ValueUint16, ValueUint32, ValueUint64:
		if got, ok := v.Uint(); !ok || got != jsonUint(t, exp["value"]) {
			t.Errorf("%s: %v; want %v", where, v, exp["value"])
		}
	case ValueInt8, ValueInt16, ValueInt32, ValueInt64:
		if got, ok := v.Int(); !ok || got != jsonInt(t, exp["value"]) {
			t.Errorf("%s: %v; want %v", where, v, exp["value"])
		}
	case ValueFloat32, ValueFloat64:
		if v.Bits() != jsonUint(t, exp["bits"]) {
			t.Errorf("%s: bits %#x; want %v", where, v.Bits(), exp["bits"])
		}
	case ValueBool:
		if got, ok := v.Bool(); !ok || got != exp["value"] {
			t.Errorf("%s: %v; want %v", where, v, exp["value"])
		}
	case ValueString:
		if got, ok := v.Str(); !ok || got != exp["value"] {
			t.Errorf("%s: %q; want %q", where, got, exp["value"])
		}
	case ValueArray:
		a, _ := v.Array()
		n := jsonInt(t, exp["len"])
		if a.ElemType().String() != exp["elem_type"] || a.Len() != n {
			t.Errorf("%s: %s; want [%d]%v", where, a, n, exp["elem_type"])
			return
		}
		items, err := a.Values(0, n)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		want := exp["items"].([]any)
		for i, it := range items {
			checkValue(t, where+"["+strconv.Itoa(i)+"]", it, want[i].(map[string]any))
		}
	default:
		t.Errorf("%s: unexpected type %s", where, v.Type)
	}
}

// TestArrayPaging reads the 300-token vocabulary in pages of every size from 1 to 300 at
// every start, and checks each page against the whole.
func TestArrayPaging(t *testing.T) {
	f, _ := parseFixture(t, "all_types_v3.gguf")
	v, ok := f.Get("tokenizer.ggml.tokens")
	if !ok {
		t.Fatal("no tokenizer.ggml.tokens")
	}
	a, _ := v.Array()
	all, err := a.Strings(0, a.Len())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 300 || all[0] != "<unk>" || all[3] != "" {
		t.Fatalf("tokens %q...", all[:5])
	}
	for _, size := range []int64{1, 7, 63, 64, 65, 200, 300} {
		for i := int64(0); i+size <= a.Len(); i += 13 {
			page, err := a.Strings(i, i+size)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(page, all[i:i+size]) {
				t.Fatalf("page [%d, %d) differs", i, i+size)
			}
		}
	}
	if page, err := a.Strings(300, 300); err != nil || len(page) != 0 {
		t.Errorf("empty page at the end: %q, %v", page, err)
	}
	for _, r := range [][2]int64{{-1, 2}, {5, 4}, {0, 301}} {
		if _, err := a.Strings(r[0], r[1]); err == nil {
			t.Errorf("Strings(%d, %d) gave no error", r[0], r[1])
		}
	}
	if len(a.marks) != 5 {
		t.Errorf("%d marks for 300 strings; want 5", len(a.marks))
	}
	// fixed-size items page by arithmetic
	sv, _ := f.Get("tokenizer.ggml.scores")
	sa, _ := sv.Array()
	page, err := sa.Values(250, 253)
	if err != nil {
		t.Fatal(err)
	}
	for k, p := range page {
		if x, _ := p.Float(); float32(x) != float32(-float64(250+k)/7) {
			t.Errorf("score %d = %v", 250+k, x)
		}
	}
	if _, err := sa.Strings(0, 1); err == nil {
		t.Error("Strings on a float array gave no error")
	}
	// nested arrays: items are arrays, read when asked for
	nv, _ := f.Get("test.arr_nested_deep")
	na, _ := nv.Array()
	outer, err := na.Values(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	mid, _ := outer[0].Array()
	inner, err := mid.Values(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := inner[0].Array()
	vals, err := leaf.Values(0, 1)
	if err != nil || len(vals) != 1 || vals[0].String() != "-3.5" {
		t.Errorf("test.arr_nested_deep[1][1] = %v, %v", vals, err)
	}
}

// dequantizeAll dequantizes a whole tensor.
func dequantizeAll(t *testing.T, f *File, ti *TensorInfo) []float32 {
	t.Helper()
	data, err := io.ReadAll(f.TensorData(ti))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, ti.Elements)
	if err := Dequantize(ti.Type, data, out); err != nil {
		t.Fatalf("%s: %v", ti.Name, err)
	}
	return out
}

// TestDequantizeFixtures compares every dequantized tensor with the values recorded in
// expected.json bit for bit: the first 64, the float64 sum of all in index order, and the
// SHA-256 of all of them.
func TestDequantizeFixtures(t *testing.T) {
	exp := loadExpected(t)
	seen := map[string]bool{}
	for name, fx := range exp.Fixtures {
		f, _ := parseFixture(t, name)
		for i, et := range fx.Tensors {
			ti := &f.Tensors[i]
			if et.ValuesSHA256 == "" {
				if Dequantizable(ti.Type) {
					t.Errorf("%s %s: expected.json has no values for a dequantizable type", name, et.Name)
				}
				continue
			}
			seen[et.Type+" from "+et.Source] = true
			vals := dequantizeAll(t, f, ti)
			for k, want := range et.First64Bits {
				if got := math.Float32bits(vals[k]); got != want {
					t.Errorf("%s %s (%s): value %d is %v (%#08x); ggml gives %v (%#08x)",
						name, et.Name, et.Type, k, vals[k], got, math.Float32frombits(want), want)
				}
			}
			var sum float64
			for _, v := range vals {
				sum += float64(v)
			}
			if sum != *et.Sum {
				t.Errorf("%s %s: sum %v; want %v", name, et.Name, sum, *et.Sum)
			}
			raw := make([]byte, 4*len(vals))
			for k, v := range vals {
				binary.LittleEndian.PutUint32(raw[4*k:], math.Float32bits(v))
			}
			if h := sha256.Sum256(raw); hex.EncodeToString(h[:]) != et.ValuesSHA256 {
				t.Errorf("%s %s: values sha256 %x; want %s", name, et.Name, h, et.ValuesSHA256)
			}
			// ReadFloat32 reads windows that start and end inside blocks
			for _, w := range [][2]int64{{0, min(64, ti.Elements)}, {ti.Elements / 3, ti.Elements/3 + ti.Elements/4}, {ti.Elements, ti.Elements}} {
				got, err := f.ReadFloat32(ti, w[0], w[1])
				if err != nil {
					t.Fatalf("%s %s: ReadFloat32%v: %v", name, et.Name, w, err)
				}
				if !slices.Equal(bitsOf(got), bitsOf(vals[w[0]:w[1]])) {
					t.Errorf("%s %s: ReadFloat32%v differs from Dequantize", name, et.Name, w)
				}
			}
		}
	}
	for _, typ := range []string{"F32", "F16", "BF16"} {
		if !seen[typ+" from numpy"] {
			t.Errorf("no %s tensor checked against numpy", typ)
		}
	}
	for _, typ := range []string{"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} {
		if !seen[typ+" from ggml"] {
			t.Errorf("no %s tensor checked against ggml", typ)
		}
	}
}

func bitsOf(v []float32) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = math.Float32bits(x)
	}
	return out
}

func TestSplitFixture(t *testing.T) {
	names := []string{"split-00002-of-00002.gguf", "split-00001-of-00002.gguf"} // any order
	var parts []SplitPart
	for _, n := range names {
		f, _ := parseFixture(t, n)
		parts = append(parts, SplitPart{Name: n, File: f})
	}
	s, err := MergeSplit(parts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range s.Tensors {
		got = append(got, st.Name+"@"+st.PartName+"#"+strconv.Itoa(st.Part))
	}
	want := []string{
		"token_embd.weight@split-00001-of-00002.gguf#0",
		"blk.0.attn_q.weight@split-00001-of-00002.gguf#0",
		"output.weight@split-00002-of-00002.gguf#1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("tensors %q; want %q", got, want)
	}
	if len(s.Metadata) != 6 || s.Metadata[0].Key != "general.architecture" {
		t.Errorf("metadata is not the first part's: %v", s.Metadata)
	}
	if _, err := MergeSplit(parts[:1]); err == nil || err.Error() != "gguf: part 1 of 2 (split-00001-of-00002.gguf) of the split model is missing" {
		t.Errorf("missing part: %v", err)
	}
	if _, err := MergeSplit(parts[1:]); err == nil || err.Error() != "gguf: part 2 of 2 (split-00002-of-00002.gguf) of the split model is missing" {
		t.Errorf("missing part: %v", err)
	}
	if _, err := MergeSplit([]SplitPart{parts[0], parts[0]}); err == nil {
		t.Error("a part given twice was accepted")
	}
	renamed := []SplitPart{{Name: "split-00002-of-00002.gguf", File: parts[1].File}, {Name: "x.gguf", File: parts[0].File}}
	if _, err := MergeSplit(renamed); err == nil {
		t.Error("a part named as another was accepted")
	}
	whole, _ := parseFixture(t, "v2.gguf")
	if s, err := MergeSplit([]SplitPart{{Name: "v2.gguf", File: whole}}); err != nil || len(s.Tensors) != len(whole.Tensors) {
		t.Errorf("a whole model as one part: %v", err)
	}
	if _, err := MergeSplit([]SplitPart{{Name: "v2.gguf", File: whole}, parts[0]}); err == nil {
		t.Error("a whole model mixed with a part was accepted")
	}
	if p, i, c, ok := ParseSplitName("/m/Qwen3-235B-Q4_K_M-00003-of-00005.gguf"); !ok || p != "/m/Qwen3-235B-Q4_K_M" || i != 2 || c != 5 {
		t.Errorf("ParseSplitName = %q %d %d %v", p, i, c, ok)
	}
	if SplitName("m", 2, 5) != "m-00003-of-00005.gguf" {
		t.Error(SplitName("m", 2, 5))
	}
	for _, bad := range []string{"m-00000-of-00002.gguf", "m-00003-of-00002.gguf", "m.gguf", "m-1-of-2.gguf"} {
		if _, _, _, ok := ParseSplitName(bad); ok {
			t.Errorf("ParseSplitName(%q) accepted", bad)
		}
	}
}

// TestTypeTable checks the type table against the block sizes and sizeof(block_*) of
// ggml-common.h at the commit named in expected.json (read off a local build with a
// sizeof printout), and ggml.h's ids.
func TestTypeTable(t *testing.T) {
	want := map[string][3]int{ // id, block size, type size
		"F32": {0, 1, 4}, "F16": {1, 1, 2}, "Q4_0": {2, 32, 18}, "Q4_1": {3, 32, 20}, "Q5_0": {6, 32, 22},
		"Q5_1": {7, 32, 24}, "Q8_0": {8, 32, 34}, "Q8_1": {9, 32, 36}, "Q2_K": {10, 256, 84},
		"Q3_K": {11, 256, 110}, "Q4_K": {12, 256, 144}, "Q5_K": {13, 256, 176}, "Q6_K": {14, 256, 210},
		"Q8_K": {15, 256, 292}, "IQ2_XXS": {16, 256, 66}, "IQ2_XS": {17, 256, 74}, "IQ3_XXS": {18, 256, 98},
		"IQ1_S": {19, 256, 50}, "IQ4_NL": {20, 32, 18}, "IQ3_S": {21, 256, 110}, "IQ2_S": {22, 256, 82},
		"IQ4_XS": {23, 256, 136}, "I8": {24, 1, 1}, "I16": {25, 1, 2}, "I32": {26, 1, 4}, "I64": {27, 1, 8},
		"F64": {28, 1, 8}, "IQ1_M": {29, 256, 56}, "BF16": {30, 1, 2}, "TQ1_0": {34, 256, 54},
		"TQ2_0": {35, 256, 66}, "MXFP4": {39, 32, 17}, "NVFP4": {40, 64, 36}, "Q1_0": {41, 128, 18},
		"Q2_0": {42, 64, 18},
	}
	n := 0
	for _, ti := range Types() {
		if ti.Removed {
			if ti.BlockSize != 0 || ti.TypeSize != 0 || BlockSize(ti.Type) != 0 {
				t.Errorf("removed %v has sizes", ti)
			}
			continue
		}
		n++
		w, ok := want[ti.Name]
		if !ok || Type(w[0]) != ti.Type || w[1] != BlockSize(ti.Type) || w[2] != TypeSize(ti.Type) {
			t.Errorf("%s: id %d block %d size %d; want %v", ti.Name, ti.Type, ti.BlockSize, ti.TypeSize, w)
		}
		if got, ok := TypeByName(ti.Name); !ok || got != ti.Type {
			t.Errorf("TypeByName(%q) = %v", ti.Name, got)
		}
	}
	if n != len(want) || len(Types()) != int(TypeCount) {
		t.Errorf("%d known types of %d ids; want %d of %d", n, len(Types()), len(want), TypeCount)
	}
	if got, ok := TypeByName("q4_K"); !ok || got != TypeQ4_K {
		t.Error("TypeByName is not case-insensitive")
	}
	if Type(31).String() != "Q4_0_4_4 (removed)" || Type(99).String() != "type 99" || BlockSize(99) != 0 || TypeSize(99) != 0 {
		t.Error(Type(31), Type(99))
	}
}

func TestHalfToFloat32(t *testing.T) {
	// every half: finite ones round-trip through float64 arithmetic on their definition
	for h := 0; h < 1<<16; h++ {
		got := HalfToFloat32(uint16(h))
		sign := 1.0
		if h&0x8000 != 0 {
			sign = -1
		}
		e, m := (h>>10)&0x1F, h&0x3FF
		var want float64
		switch {
		case e == 0x1F && m == 0:
			want = math.Inf(int(sign))
		case e == 0x1F:
			if !math.IsNaN(float64(got)) || math.Float32bits(got)&0x7FFFFF != uint32(m)<<13 {
				t.Fatalf("%#04x: %v", h, got)
			}
			continue
		case e == 0:
			want = sign * float64(m) * math.Pow(2, -24)
		default:
			want = sign * (1 + float64(m)/1024) * math.Pow(2, float64(e-15))
		}
		if float64(got) != want || math.Signbit(float64(got)) != (sign < 0) {
			t.Fatalf("%#04x: %v; want %v", h, got, want)
		}
	}
}

func TestDequantizeArguments(t *testing.T) {
	if err := Dequantize(TypeQ4_0, make([]byte, 17), make([]float32, 32)); err == nil {
		t.Error("a partial block was accepted")
	}
	if err := Dequantize(TypeQ4_0, make([]byte, 36), make([]float32, 63)); err == nil {
		t.Error("a short dst was accepted")
	}
	if err := Dequantize(TypeIQ2_XXS, make([]byte, 66), make([]float32, 256)); err == nil {
		t.Error("IQ2_XXS is not dequantizable but was accepted")
	}
	if err := Dequantize(Type(4), nil, nil); err == nil {
		t.Error("a removed type was accepted")
	}
	dst := []float32{7, 7, 7}
	if err := Dequantize(TypeF16, []byte{0x00, 0x3c, 0x00, 0xc0}, dst); err != nil || dst[0] != 1 || dst[1] != -2 || dst[2] != 7 {
		t.Errorf("F16: %v %v", dst, err)
	}
}

// vocabFile is a file with a 150,000-token vocabulary and as many scores.
func vocabFile(n int) []byte {
	toks := cat(le32(uint32(ValueString)), le64(uint64(n)))
	scores := cat(le32(uint32(ValueFloat32)), le64(uint64(n)))
	for i := 0; i < n; i++ {
		toks = append(toks, gstr("tok"+strconv.Itoa(i))...)
		scores = binary.LittleEndian.AppendUint32(scores, math.Float32bits(float32(-i)))
	}
	return build(3, []hkv{
		{"tokenizer.ggml.tokens", uint32(ValueArray), toks},
		{"tokenizer.ggml.scores", uint32(ValueArray), scores},
	}, nil, 32, nil)
}

// TestLargeVocabularyIsLazy checks that parsing a 150,000-token vocabulary does not
// materialise it, and that a page from its middle costs about what the page holds.
func TestLargeVocabularyIsLazy(t *testing.T) {
	b := vocabFile(150_000)
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	f, err := Parse(bytes.NewReader(b), int64(len(b)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	v, _ := f.Get("tokenizer.ggml.tokens")
	a, _ := v.Array()
	page, err := a.Strings(100_000, 100_200)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m2)
	if page[0] != "tok100000" || page[199] != "tok100199" || a.Len() != 150_000 {
		t.Errorf("page %q ... %q of %d", page[0], page[199], a.Len())
	}
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 256<<10 {
		t.Errorf("Parse allocated %d bytes for a %d-byte file", n, len(b))
	}
	if n := m2.TotalAlloc - m1.TotalAlloc; n > 128<<10 {
		t.Errorf("a page of 200 tokens allocated %d bytes", n)
	}
}

func BenchmarkParseVocabulary(b *testing.B) {
	data := vocabFile(150_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(data), int64(len(data)), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDequantizeQ4_K(b *testing.B) {
	src := make([]byte, 144*1024)
	dst := make([]float32, 256*1024)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if err := Dequantize(TypeQ4_K, src, dst); err != nil {
			b.Fatal(err)
		}
	}
}
