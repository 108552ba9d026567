package loader

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"github.com/ckptview/ckptview/internal/tensor"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// expectedFile is what testdata/models/generate.py wrote with the real libraries.
type expectedFile struct {
	Format        string            `json:"format"`
	RootKind      string            `json:"root_kind"`
	Tensors       []expectedTensor  `json:"tensors"`
	SharedStorage [][]string        `json:"shared_storage"`
	Scalars       map[string]any    `json:"scalars"`
	Danger        []string          `json:"danger"`
	Types         map[string]string `json:"types"`
	Refs          map[string]string `json:"refs"`
}

// tensorPlaces counts the places that hold a tensor: each tensor, and each ref (Python's
// identity: the same object stored again) to one, which the loader counts as a tied tensor.
func (f expectedFile) tensorPlaces() int {
	n := len(f.Tensors)
	for _, target := range f.Refs {
		for _, x := range f.Tensors {
			if x.Path == target {
				n++
			}
		}
	}
	return n
}

type expectedTensor struct {
	Path          string  `json:"path"`
	Kind          string  `json:"kind"`
	DType         string  `json:"dtype"`
	Shape         []int64 `json:"shape"`
	Strides       []int64 `json:"strides"`
	StorageOffset int64   `json:"storage_offset"`
	Numel         int64   `json:"numel"`
	First         []any   `json:"first"`
}

const modelsDir = "../../testdata/models"

func loadExpected(t *testing.T) map[string]expectedFile {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatalf("no fixtures: %v", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	out := map[string]expectedFile{}
	for name, msg := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var e expectedFile
		if err := json.Unmarshal(msg, &e); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = e
	}
	return out
}

func openFixture(t *testing.T, name string) *ckpt.Checkpoint {
	t.Helper()
	f, err := os.Open(filepath.Join(modelsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	ck, err := Open(f, st.Size(), Options{})
	if err != nil {
		t.Fatalf("Open(%q) = %v", name, err)
	}
	return ck
}

// TestFixtures opens every fixture and compares its tree with the facts torch, numpy and
// scikit-learn reported when they wrote it.
func TestFixtures(t *testing.T) {
	for name, want := range loadExpected(t) {
		t.Run(name, func(t *testing.T) {
			ck := openFixture(t, name)
			if ck.Format != want.Format {
				t.Errorf("Open(%q).Format = %q, want %q", name, ck.Format, want.Format)
			}
			if string(ck.Root.Kind) != want.RootKind {
				t.Errorf("Open(%q).Root.Kind = %q, want %q", name, ck.Root.Kind, want.RootKind)
			}
			if places := want.tensorPlaces(); ck.Tensors != places {
				t.Errorf("Open(%q).Tensors = %d, want %d (%d tensors, the rest the same tensor stored again)", name, ck.Tensors, places, len(want.Tensors))
			}
			for _, wt := range want.Tensors {
				checkTensor(t, ck, name, wt)
			}
			for _, group := range want.SharedStorage {
				var first *ckpt.Storage
				for _, p := range group {
					n, err := ck.Node(p)
					if err != nil || n.Tensor == nil || n.Tensor.Storage == nil {
						t.Errorf("Open(%q).Node(%q) is not a tensor with a storage", name, p)
						continue
					}
					if first == nil {
						first = n.Tensor.Storage
					} else if n.Tensor.Storage != first {
						t.Errorf("Open(%q): %v should share one storage", name, group)
					}
				}
				if first != nil && len(first.Users) < len(group) {
					t.Errorf("Open(%q): storage users = %v, want all of %v", name, first.Users, group)
				}
			}
			for p, v := range want.Scalars {
				checkScalar(t, ck, name, p, v)
			}
			for p, typ := range want.Types {
				n, err := ck.Node(p)
				if err != nil {
					t.Errorf("Open(%q).Node(%q): %v", name, p, err)
					continue
				}
				if n.Type != typ {
					t.Errorf("Open(%q).Node(%q).Type = %q, want %q", name, p, n.Type, typ)
				}
			}
			for p, target := range want.Refs {
				n, err := ck.Node(p)
				if err != nil || n.Kind != ckpt.KindRef || n.Target != target {
					t.Errorf("Open(%q).Node(%q) = %+v, %v; want a ref to %q", name, p, n, err, target)
				}
			}
			var dangers []string
			for _, f := range ck.Findings {
				if f.Severity == ckpt.SeverityDanger {
					dangers = append(dangers, f.Global)
				}
			}
			for _, g := range want.Danger {
				if !contains(dangers, g) {
					t.Errorf("Open(%q) danger findings = %v, want %s among them", name, dangers, g)
				}
			}
			if len(want.Danger) == 0 && len(dangers) > 0 {
				t.Errorf("Open(%q) danger findings = %v, want none", name, dangers)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func checkTensor(t *testing.T, ck *ckpt.Checkpoint, name string, wt expectedTensor) {
	t.Helper()
	n, err := ck.Node(wt.Path)
	if err != nil {
		t.Errorf("Open(%q).Node(%q): %v", name, wt.Path, err)
		return
	}
	if string(n.Kind) != wt.Kind || n.Tensor == nil {
		t.Errorf("Open(%q).Node(%q).Kind = %q, want %q", name, wt.Path, n.Kind, wt.Kind)
		return
	}
	tt := n.Tensor
	got := fmt.Sprintf("%s %v %v %d %d", tt.DType, tt.Shape, tt.Strides, tt.StorageOffset, tt.Numel())
	want := fmt.Sprintf("%s %v %v %d %d", wt.DType, wt.Shape, wt.Strides, wt.StorageOffset, wt.Numel)
	if wt.Shape == nil {
		want = fmt.Sprintf("%s %v %v %d %d", wt.DType, []int64{}, []int64{}, wt.StorageOffset, wt.Numel)
	}
	if strings.ReplaceAll(got, "[]", "") != strings.ReplaceAll(want, "[]", "") {
		t.Errorf("Open(%q).Node(%q) tensor = %s, want %s (dtype shape strides offset numel)", name, wt.Path, got, want)
		return
	}
	// the first values, read through the view from the file's bytes
	for i, w := range wt.First {
		v, ok := readElement(tt, int64(i))
		if !ok {
			return // a dtype this test does not decode
		}
		if !sameValue(v, w) {
			t.Errorf("Open(%q).Node(%q) element %d = %v, want %v", name, wt.Path, i, v, w)
			return
		}
	}
}

// readElement decodes the i-th element of a view in row-major order (for the test only).
func readElement(t *ckpt.Tensor, i int64) (any, bool) {
	if t.Storage == nil || t.Storage.Data == nil {
		return nil, false
	}
	idx := t.StorageOffset
	rem := i
	for d := len(t.Shape) - 1; d >= 0; d-- {
		if t.Shape[d] == 0 {
			return nil, false
		}
		idx += (rem % t.Shape[d]) * t.Strides[d]
		rem /= t.Shape[d]
	}
	es := int64(ckpt.DTypeSize(t.DType))
	if es == 0 {
		return nil, false
	}
	b := make([]byte, es)
	if _, err := t.Storage.Data.ReadAt(b, t.Storage.Offset+idx*es); err != nil {
		return nil, false
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if t.Storage.ByteOrder == "big" {
		bo = binary.BigEndian
	}
	switch t.DType {
	case "float32":
		return float64(math.Float32frombits(bo.Uint32(b))), true
	case "float64":
		return math.Float64frombits(bo.Uint64(b)), true
	case "float16":
		return float64(tensor.HalfToFloat(bo.Uint16(b))), true
	case "bfloat16":
		return float64(math.Float32frombits(uint32(bo.Uint16(b)) << 16)), true
	case "int8":
		return float64(int8(b[0])), true
	case "uint8":
		return float64(b[0]), true
	case "int16":
		return float64(int16(bo.Uint16(b))), true
	case "uint16":
		return float64(bo.Uint16(b)), true
	case "int32":
		return float64(int32(bo.Uint32(b))), true
	case "int64":
		return float64(int64(bo.Uint64(b))), true
	case "bool":
		return b[0] != 0, true
	}
	return nil, false
}

func sameValue(got, want any) bool {
	switch w := want.(type) {
	case bool:
		return got == w
	case float64:
		g, ok := got.(float64)
		if !ok {
			return false
		}
		return g == w || math.Abs(g-w) <= 1e-6*math.Max(1, math.Abs(w))
	case string:
		g, ok := got.(float64)
		if !ok {
			return false
		}
		switch w {
		case "nan":
			return math.IsNaN(g)
		case "inf":
			return math.IsInf(g, 1)
		case "-inf":
			return math.IsInf(g, -1)
		}
		f, err := strconv.ParseFloat(w, 64)
		return err == nil && f == g
	}
	return true
}

func checkScalar(t *testing.T, ck *ckpt.Checkpoint, name, p string, want any) {
	t.Helper()
	n, err := ck.Node(p)
	if err != nil {
		t.Errorf("Open(%q).Node(%q): %v", name, p, err)
		return
	}
	bad := func(got any) {
		t.Errorf("Open(%q).Node(%q) = %s %v, want %v", name, p, n.Kind, got, want)
	}
	switch w := want.(type) {
	case nil:
		if n.Kind != ckpt.KindNone {
			bad(n.Kind)
		}
	case bool:
		if n.Kind != ckpt.KindBool || n.Bool != w {
			bad(n.Bool)
		}
	case float64:
		switch n.Kind {
		case ckpt.KindInt:
			if n.Int != strconv.FormatFloat(w, 'f', -1, 64) {
				bad(n.Int)
			}
		case ckpt.KindFloat:
			if n.Float != w || math.Signbit(n.Float) != math.Signbit(w) {
				bad(n.Float)
			}
		default:
			bad(n.Kind)
		}
	case string:
		switch n.Kind {
		case ckpt.KindInt:
			if n.Int != w {
				bad(n.Int)
			}
		case ckpt.KindFloat:
			if pyrepr.Float(n.Float) != w && strconv.FormatFloat(n.Float, 'g', -1, 64) != w {
				bad(n.Float)
			}
		case ckpt.KindStr:
			if n.Str != strings.ToValidUTF8(w, "\ufffd") && n.Str != w {
				bad(n.Str)
			}
		default:
			if n.Str != w {
				bad(n.Str)
			}
		}
	case map[string]any:
		if h, ok := w["hex"].(string); ok {
			if n.Kind != ckpt.KindBytes || hex.EncodeToString(n.Bytes) != h {
				bad(hex.EncodeToString(n.Bytes))
			}
		}
	case []any:
		if len(w) == 2 && n.Kind == ckpt.KindComplex {
			re, _ := w[0].(float64)
			im, _ := w[1].(float64)
			if real(n.Complex) != re || imag(n.Complex) != im {
				bad(n.Complex)
			}
		}
	}
}
