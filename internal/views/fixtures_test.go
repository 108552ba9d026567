package views

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
)

// The facts real torch, numpy and pickle wrote about testdata/models (generate.py).
type fixtureFacts struct {
	Format  string `json:"format"`
	Tensors []struct {
		Path          string  `json:"path"`
		DType         string  `json:"dtype"`
		Shape         []int64 `json:"shape"`
		Strides       []int64 `json:"strides"`
		StorageOffset int64   `json:"storage_offset"`
		Numel         int64   `json:"numel"`
	} `json:"tensors"`
	SharedStorage [][]string `json:"shared_storage"`
	// Refs are places holding an object already held elsewhere (Python's identity).
	Refs     map[string]string `json:"refs"`
	Findings []struct {
		Global string `json:"global"`
		Path   string `json:"path"`
	} `json:"findings"`
}

var modelsDir = filepath.Join("..", "..", "testdata", "models")

// openFixtures opens every fixture that expected.json describes, skipping the test when the
// facts or the loader are not there yet.
func openFixtures(t *testing.T) map[string]fixtureFacts {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("testdata/models/expected.json is not there yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("parse expected.json: %v", err)
	}
	out := map[string]fixtureFacts{}
	for name, r := range raw {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var f fixtureFacts
		if err := json.Unmarshal(r, &f); err != nil {
			t.Fatalf("parse expected.json[%q]: %v", name, err)
		}
		out[name] = f
	}
	return out
}

func open(t *testing.T, name string) (*ckpt.Checkpoint, FileMeta) {
	t.Helper()
	f, err := os.Open(filepath.Join(modelsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	ck, err := loader.Open(f, fi.Size(), loader.Options{})
	if err != nil {
		t.Fatalf("loader.Open(%s) = %v", name, err)
	}
	return ck, FileMeta{ID: "fixture", Name: name, Size: fi.Size(), Format: ck.Format}
}

// TestFixturePages checks the view models of every fixture against what the real libraries
// said about the file: tensor metadata, tied storages and findings.
func TestFixturePages(t *testing.T) {
	for name, want := range openFixtures(t) {
		t.Run(name, func(t *testing.T) {
			ck, meta := open(t, name)
			page := NewCheckpointPage(meta, ck)
			if page.Format != want.Format {
				t.Errorf("CheckpointPage.Format = %q, want %q", page.Format, want.Format)
			}
			counted := 0
			var params int64
			for _, d := range page.DTypes {
				counted += d.Tensors
				params += d.Params
				if b := ck.BytesByDType[d.DType]; b != d.Bytes && d.DType != "object" {
					t.Errorf("dtype table: %s has %d bytes, the loader counts %d", d.DType, d.Bytes, b)
				}
			}
			if params != ck.Parameters {
				t.Errorf("dtype table: %d elements in all, the loader counts %d parameters", params, ck.Parameters)
			}
			places := len(want.Tensors) // and each tensor stored again, a tie by assignment
			for _, target := range want.Refs {
				for _, x := range want.Tensors {
					if x.Path == target {
						places++
					}
				}
			}
			if counted != places {
				t.Errorf("tensors in the dtype table = %d, want %d", counted, places)
			}
			for _, x := range want.Tensors {
				n, err := ck.Node(x.Path)
				if err != nil {
					t.Errorf("Node(%q): %v", x.Path, err)
					continue
				}
				if got, w := Summary(n), x.DType+FormatShape(x.Shape); got != w {
					t.Errorf("Summary(%s) = %q, want %q", x.Path, got, w)
				}
				p := NewNodePage(meta, ck, n, 0, 0)
				if p.Tensor == nil {
					t.Errorf("NodePage(%s).Tensor = nil", x.Path)
					continue
				}
				got := [...]string{p.Tensor.DType, p.Tensor.Shape, p.Tensor.Strides, Thousands(p.Tensor.StorageOffset), p.Tensor.NumelText}
				w := [...]string{x.DType, FormatShape(x.Shape), FormatShape(x.Strides), Thousands(x.StorageOffset), Thousands(x.Numel)}
				if got != w {
					t.Errorf("NodePage(%s) dtype, shape, strides, offset, numel = %q, want %q", x.Path, got, w)
				}
				if p.Tensor.OutOfBounds {
					t.Errorf("NodePage(%s).Tensor.OutOfBounds = true for a file torch wrote", x.Path)
				}
			}
			for _, group := range want.SharedStorage {
				for _, p := range group {
					n, err := ck.Node(p)
					if err != nil {
						t.Errorf("Node(%q): %v", p, err)
						continue
					}
					var got []string
					for _, l := range NewNodePage(meta, ck, n, 0, 0).Tensor.SharedWith {
						got = append(got, l.Label)
					}
					others := slices.DeleteFunc(slices.Clone(group), func(s string) bool { return s == p })
					slices.Sort(got)
					slices.Sort(others)
					if !slices.Equal(got, others) {
						t.Errorf("NodePage(%s).Tensor.SharedWith = %v, want %v", p, got, others)
					}
				}
			}
			for _, f := range want.Findings {
				i := slices.IndexFunc(page.Findings, func(r FindingRow) bool {
					return r.Severity == "danger" && r.Global == f.Global
				})
				if i < 0 {
					t.Errorf("no danger finding for %s in %+v", f.Global, page.Findings)
					continue
				}
				if r := page.Findings[i]; f.Path != "" && r.Path == f.Path && r.URL != NodeURL(meta.ID, f.Path) {
					t.Errorf("finding %s links to %q, want %q", f.Global, r.URL, NodeURL(meta.ID, f.Path))
				}
			}
		})
	}
}

// TestFixtureLayouts checks the contiguity of the views dtypes.pt and the numpy fixtures were
// made to have.
func TestFixtureLayouts(t *testing.T) {
	openFixtures(t)
	for _, tc := range []struct {
		file, path, want string
	}{
		{"dtypes.pt", "/base2d", "C-contiguous (row-major)"},
		{"dtypes.pt", "/transposed", "Fortran-contiguous (column-major)"},
		{"dtypes.pt", "/fortran", "Fortran-contiguous (column-major)"},
		{"dtypes.pt", "/offset_slice", "non-contiguous"},
		{"dtypes.pt", "/expanded", "non-contiguous (stride 0: an expanded view)"},
		{"dtypes.pt", "/float16", "contiguous (C and Fortran order)"},
		{"numpy_arrays_p4.pkl", "/f32_c", "C-contiguous (row-major)"},
		{"numpy_arrays_p4.pkl", "/f64_fortran", "Fortran-contiguous (column-major)"},
	} {
		ck, meta := open(t, tc.file)
		n, err := ck.Node(tc.path)
		if err != nil {
			t.Errorf("%s: Node(%q): %v", tc.file, tc.path, err)
			continue
		}
		if got := NewNodePage(meta, ck, n, 0, 0).Tensor.Layout; got != tc.want {
			t.Errorf("%s: NodePage(%s).Tensor.Layout = %q, want %q", tc.file, tc.path, got, tc.want)
		}
	}
}

// TestFixtureModuleTree checks the module tree of the state dict fixtures: every tensor
// of the dict is counted once, with its elements.
func TestFixtureModuleTree(t *testing.T) {
	facts := openFixtures(t)
	for _, tc := range []struct{ file, dict string }{
		{"state_dict.pt", ""},
		{"hf_pytorch_model.bin", ""},
		{"lightning_style.ckpt", "/state_dict"},
	} {
		ck, meta := open(t, tc.file)
		p := NewCheckpointPage(meta, ck)
		if p.Modules == nil || p.View != ViewModules {
			t.Errorf("%s: no module tree (view %q)", tc.file, p.View)
			continue
		}
		if p.Modules.Path != tc.dict {
			t.Errorf("%s: module tree from %q, want %q", tc.file, p.Modules.Path, tc.dict)
		}
		var tensors int
		var params int64
		for _, x := range facts[tc.file].Tensors {
			rest, ok := strings.CutPrefix(x.Path, tc.dict+"/")
			if ok && !strings.Contains(rest, "/") {
				tensors++
				params += x.Numel
			}
		}
		if p.Modules.Tensors != tensors || p.Modules.Params+p.Modules.Buffers != params {
			t.Errorf("%s: module tree counts %d tensors, %d parameters and %d buffer elements; want %d tensors, %d elements in all",
				tc.file, p.Modules.Tensors, p.Modules.Params, p.Modules.Buffers, tensors, params)
		}
	}
}

// TestFixtureQuantized checks the quantization facts torch wrote for quantized.pt.
func TestFixtureQuantized(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Skip("testdata/models/expected.json is not there yet")
	}
	var facts map[string]struct {
		Tensors []struct {
			Path  string `json:"path"`
			Quant *struct {
				Scheme    string  `json:"scheme"`
				Scale     float64 `json:"scale"`
				ZeroPoint int64   `json:"zero_point"`
			} `json:"quantization"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(b, &facts); err != nil {
		t.Fatal(err)
	}
	ck, meta := open(t, "quantized.pt")
	for _, x := range facts["quantized.pt"].Tensors {
		if x.Quant == nil {
			continue
		}
		n, err := ck.Node(x.Path)
		if err != nil {
			t.Fatalf("Node(%q): %v", x.Path, err)
		}
		q := NewNodePage(meta, ck, n, 0, 0).Tensor.Quant
		want := QuantMeta{Scheme: x.Quant.Scheme, Scale: PyFloat(x.Quant.Scale), ZeroPoint: strconv.FormatInt(x.Quant.ZeroPoint, 10)}
		if q == nil || *q != want {
			t.Errorf("NodePage(%s).Tensor.Quant = %+v, want %+v", x.Path, q, want)
		}
	}
}
