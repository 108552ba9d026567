package gguf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	ggufparser "github.com/gpustack/gguf-parser-go"
)

// An independent reader, gpustack/gguf-parser-go, must see the fixtures as Parse does:
// the same keys, types and values, tensor names, dims, types and offsets, and the same
// data section.

// copyOut copies a fixture to a temporary file with a name that is not a split name, so
// that gguf-parser-go reads that file alone (it opens all parts of a split name).
func copyOut(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "alone.gguf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGGUFParserGo(t *testing.T) {
	exp := loadExpected(t)
	for name := range exp.Fixtures {
		t.Run(name, func(t *testing.T) {
			f, _ := parseFixture(t, name)
			gf, err := ggufparser.ParseGGUFFile(copyOut(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if uint32(gf.Header.Version) != f.Version {
				t.Errorf("version %d; we read %d", gf.Header.Version, f.Version)
			}
			if gf.TensorDataStartOffset != f.DataOffset {
				t.Errorf("data section at %d; we read %d", gf.TensorDataStartOffset, f.DataOffset)
			}
			// gguf-parser-go leaves split.no out of its metadata list
			var ours []KV
			for _, kv := range f.Metadata {
				if kv.Key != KeySplitNo {
					ours = append(ours, kv)
				}
			}
			compareMetadata(t, ours, gf.Header.MetadataKV)
			compareTensors(t, f.Tensors, gf.TensorInfos)
		})
	}
}

// TestGGUFParserGoSplit has gguf-parser-go open the split model by the name of its first
// part (it finds the others itself) and compares its merged tensor list with MergeSplit's.
func TestGGUFParserGoSplit(t *testing.T) {
	gf, err := ggufparser.ParseGGUFFile(filepath.Join(fixtureDir, "split-00001-of-00002.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	var parts []SplitPart
	for _, n := range []string{"split-00001-of-00002.gguf", "split-00002-of-00002.gguf"} {
		f, _ := parseFixture(t, n)
		parts = append(parts, SplitPart{Name: n, File: f})
	}
	s, err := MergeSplit(parts)
	if err != nil {
		t.Fatal(err)
	}
	var tis []TensorInfo
	for _, st := range s.Tensors {
		tis = append(tis, st.TensorInfo)
	}
	compareTensors(t, tis, gf.TensorInfos)
	var offs []int64
	for _, p := range s.Parts {
		offs = append(offs, p.File.DataOffset)
	}
	if !slices.Equal(offs, gf.SplitTensorDataStartOffsets) {
		t.Errorf("parts' data sections at %v; we read %v", gf.SplitTensorDataStartOffsets, offs)
	}
}

// TestGGUFParserGoTypes compares the type table with gguf-parser-go's.
func TestGGUFParserGoTypes(t *testing.T) {
	for _, ti := range Types() {
		gt := ggufparser.GGMLType(ti.Type)
		tr, ok := gt.Trait()
		if !ok {
			t.Errorf("gguf-parser-go does not know %s", ti.Name)
			continue
		}
		if ti.Removed {
			continue // it keeps the removed repacked types' old sizes; ggml has none
		}
		if gt.String() != ti.Name || tr.BlockSize != uint64(ti.BlockSize) || tr.TypeSize != uint64(ti.TypeSize) {
			t.Errorf("%s: gguf-parser-go says %s, block %d, size %d", ti.Name, gt, tr.BlockSize, tr.TypeSize)
		}
	}
}

func compareMetadata(t *testing.T, ours []KV, theirs ggufparser.GGUFMetadataKVs) {
	t.Helper()
	if len(ours) != len(theirs) {
		t.Fatalf("%d keys; we read %d", len(theirs), len(ours))
	}
	for i, kv := range ours {
		g := theirs[i]
		if g.Key != kv.Key || uint32(g.ValueType) != uint32(kv.Value.Type) {
			t.Errorf("key %d: %s of type %d; we read %s of type %s", i, g.Key, g.ValueType, kv.Key, kv.Value.Type)
			continue
		}
		if err := sameValue(kv.Value, g.Value); err != nil {
			t.Errorf("key %s: %v", kv.Key, err)
		}
	}
}

// sameValue compares one of our values with gguf-parser-go's (a Go scalar, a string or a
// GGUFMetadataKVArrayValue).
func sameValue(v Value, g any) error {
	if a, ok := v.Array(); ok {
		ga, ok := g.(ggufparser.GGUFMetadataKVArrayValue)
		if !ok {
			return fmt.Errorf("an array for us, %T for gguf-parser-go", g)
		}
		if uint32(ga.Type) != uint32(a.ElemType()) || ga.Len != uint64(a.Len()) || int64(len(ga.Array)) != a.Len() {
			return fmt.Errorf("gguf-parser-go: [%d]%d (%d items); we read %s", ga.Len, ga.Type, len(ga.Array), a)
		}
		if ga.StartOffset+12 != a.Offset() || ga.Size != a.ByteSize() {
			return fmt.Errorf("gguf-parser-go: array at %d (+12), %d bytes; we read %d, %d bytes", ga.StartOffset, ga.Size, a.Offset(), a.ByteSize())
		}
		items, err := a.Values(0, a.Len())
		if err != nil {
			return err
		}
		for i, it := range items {
			if err := sameValue(it, ga.Array[i]); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	}
	ours := v.Interface()
	switch x := ours.(type) {
	case string:
		// gguf-parser-go trims white space off every string it reads (bytes.TrimSpace), so
		// tokens like "\n7" come back as "7"
		if gx, ok := g.(string); !ok || gx != strings.TrimSpace(x) {
			return fmt.Errorf("gguf-parser-go: %q (%T); we read %q", g, g, x)
		}
		return nil
	case float32:
		if gx, ok := g.(float32); !ok || math.Float32bits(gx) != math.Float32bits(x) {
			return fmt.Errorf("gguf-parser-go: %v (%T); we read %v", g, g, x)
		}
		return nil
	case float64:
		if gx, ok := g.(float64); !ok || math.Float64bits(gx) != math.Float64bits(x) {
			return fmt.Errorf("gguf-parser-go: %v (%T); we read %v", g, g, x)
		}
		return nil
	}
	if ours != g {
		return fmt.Errorf("gguf-parser-go: %v (%T); we read %v (%T)", g, g, ours, ours)
	}
	return nil
}

func compareTensors(t *testing.T, ours []TensorInfo, theirs ggufparser.GGUFTensorInfos) {
	t.Helper()
	if len(ours) != len(theirs) {
		t.Fatalf("%d tensors; we read %d", len(theirs), len(ours))
	}
	for i, ti := range ours {
		g := theirs[i]
		dims := make([]int64, len(g.Dimensions))
		for j, d := range g.Dimensions {
			dims[j] = int64(d)
		}
		if g.Name != ti.Name || !slices.Equal(dims, ti.Dims) || uint32(g.Type) != uint32(ti.Type) ||
			int64(g.Offset) != ti.RelOffset || g.StartOffset != ti.InfoOffset {
			t.Errorf("tensor %d: gguf-parser-go %s %v %s offset %d info at %d; we read %s %v %s offset %d info at %d",
				i, g.Name, dims, g.Type, g.Offset, g.StartOffset, ti.Name, ti.Dims, ti.Type, ti.RelOffset, ti.InfoOffset)
		}
		if int64(g.Elements()) != ti.Elements || int64(g.Bytes()) != ti.Size {
			t.Errorf("tensor %s: gguf-parser-go %d elements, %d bytes; we read %d, %d", ti.Name, g.Elements(), g.Bytes(), ti.Elements, ti.Size)
		}
	}
}

// TestHuggingFaceGGUF compares Parse with what the npm package @huggingface/gguf said of
// each fixture: testdata/gguf/huggingface_gguf.json holds its output (its typed metadata
// and tensor infos, BigInts as strings, -0 as "-0"), made as testdata/gguf/README.md says.
func TestHuggingFaceGGUF(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixtureDir, "huggingface_gguf.json"))
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Reader   string `json:"reader"`
		Fixtures map[string]struct {
			Error            string `json:"error"`
			Version          uint32 `json:"version"`
			TensorDataOffset string `json:"tensorDataOffset"`
			LittleEndian     bool   `json:"littleEndian"`
			Metadata         []struct {
				Key     string  `json:"key"`
				Type    uint32  `json:"type"`
				SubType *uint32 `json:"subType"`
				Value   any     `json:"value"`
			} `json:"metadata"`
			Tensors []struct {
				Name   string   `json:"name"`
				NDims  int      `json:"n_dims"`
				Shape  []string `json:"shape"`
				DType  uint32   `json:"dtype"`
				Offset string   `json:"offset"`
			} `json:"tensors"`
		} `json:"fixtures"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&view); err != nil {
		t.Fatal(err)
	}
	exp := loadExpected(t)
	if len(view.Fixtures) != len(exp.Fixtures) {
		t.Errorf("%s saw %d fixtures; there are %d", view.Reader, len(view.Fixtures), len(exp.Fixtures))
	}
	for name, fx := range view.Fixtures {
		f, _ := parseFixture(t, name)
		if fx.Error != "" || fx.Version != f.Version || !fx.LittleEndian || fx.TensorDataOffset != strconv.FormatInt(f.DataOffset, 10) {
			t.Errorf("%s: %s: %+v", name, view.Reader, fx)
			continue
		}
		if len(fx.Metadata) != len(f.Metadata) || len(fx.Tensors) != len(f.Tensors) {
			t.Fatalf("%s: %d keys, %d tensors; we read %d, %d", name, len(fx.Metadata), len(fx.Tensors), len(f.Metadata), len(f.Tensors))
		}
		for i, m := range fx.Metadata {
			kv := f.Metadata[i]
			if m.Key != kv.Key || m.Type != uint32(kv.Value.Type) {
				t.Errorf("%s key %d: %s type %d; we read %s type %s", name, i, m.Key, m.Type, kv.Key, kv.Value.Type)
				continue
			}
			if a, ok := kv.Value.Array(); ok && (m.SubType == nil || *m.SubType != uint32(a.ElemType())) {
				t.Errorf("%s key %s: item type %v; we read %s", name, kv.Key, m.SubType, a.ElemType())
			}
			if err := sameAsJS(kv.Value, m.Value); err != nil {
				t.Errorf("%s key %s: %v", name, kv.Key, err)
			}
		}
		for i, g := range fx.Tensors {
			ti := f.Tensors[i]
			var dims []string
			for _, d := range ti.Dims {
				dims = append(dims, strconv.FormatInt(d, 10))
			}
			if g.Name != ti.Name || g.NDims != len(ti.Dims) || !slices.Equal(g.Shape, dims) || g.DType != uint32(ti.Type) ||
				g.Offset != strconv.FormatInt(ti.RelOffset, 10) {
				t.Errorf("%s tensor %d: %s says %+v; we read %+v", name, i, view.Reader, g, ti)
			}
		}
	}
}

// sameAsJS compares a value with its JSON form as the Node script printed it.
func sameAsJS(v Value, js any) error {
	if a, ok := v.Array(); ok {
		list, ok := js.([]any)
		if !ok || int64(len(list)) != a.Len() {
			return fmt.Errorf("%v for our %s", js, a)
		}
		items, err := a.Values(0, a.Len())
		if err != nil {
			return err
		}
		for i, it := range items {
			if err := sameAsJS(it, list[i]); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	}
	var want any
	switch v.Type {
	case ValueUint64, ValueInt64: // BigInts, printed as strings
		want = v.String()
	case ValueFloat32, ValueFloat64:
		x, _ := v.Float()
		if x == 0 && math.Signbit(x) {
			want = "-0"
			break
		}
		n, ok := js.(json.Number)
		if !ok {
			return fmt.Errorf("%v (%T) for our %v", js, js, x)
		}
		got, err := strconv.ParseFloat(string(n), 64)
		if err != nil || got != x {
			return fmt.Errorf("%v for our %v", js, x)
		}
		return nil
	case ValueBool, ValueString:
		want = v.Interface()
	default: // other integers are JS numbers
		want = json.Number(v.String())
	}
	if js != want {
		return fmt.Errorf("%v (%T) for our %v (%T)", js, js, want, want)
	}
	return nil
}
