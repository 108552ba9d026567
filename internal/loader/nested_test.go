package loader

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// Tensors pickled with pickle.dump (not torch.save) keep each storage as
// torch.storage._load_from_bytes(b), b a legacy torch file: they open with the values
// pickle.load gave back when testdata/models/generate_nested.py wrote them, and the
// nested files, scanned as torch.load reads them, hold nothing to report.
func TestPickledTensors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected_pickled_tensors.json"))
	if err != nil {
		t.Fatal(err)
	}
	type facts struct {
		DType  string    `json:"dtype"`
		Shape  []int64   `json:"shape"`
		Values []float64 `json:"values"`
		Sum    float64   `json:"sum"`
	}
	var want map[string]map[string]facts
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	ck := openFixture(t, "pickled_tensors.pkl")
	if len(ck.Findings) != 0 {
		t.Errorf("findings = %+v, want none (the nested torch files are plain storages)", ck.Findings)
	}
	if ck.WeightsOnly != nil && ck.WeightsOnly.Loads {
		t.Errorf("weights_only verdict says it loads, but weights_only refuses _load_from_bytes")
	}
	for path, w := range want["pickled_tensors.pkl"] {
		n, err := ck.Node(path)
		if err != nil || n.Tensor == nil {
			t.Errorf("%s: node %v, err %v; want a tensor", path, n, err)
			continue
		}
		tt := n.Tensor
		if tt.DType != w.DType || len(tt.Shape) != len(w.Shape) {
			t.Errorf("%s: %s %v, want %s %v", path, tt.DType, tt.Shape, w.DType, w.Shape)
			continue
		}
		for i := range w.Shape {
			if tt.Shape[i] != w.Shape[i] {
				t.Errorf("%s: shape %v, want %v", path, tt.Shape, w.Shape)
			}
		}
		sum := 0.0
		for i := int64(0); i < tt.Numel(); i++ {
			v, ok := readElement(tt, i)
			if !ok {
				t.Fatalf("%s: element %d unreadable", path, i)
			}
			f := v.(float64)
			if i < int64(len(w.Values)) && f != w.Values[i] {
				t.Errorf("%s[%d] = %v, want %v", path, i, f, w.Values[i])
			}
			sum += f
		}
		if math.Abs(sum-w.Sum) > 1e-9*math.Max(1, math.Abs(w.Sum)) {
			t.Errorf("%s: sum %v, want %v", path, sum, w.Sum)
		}
	}
}

// A torch file handed to _load_from_bytes is read by torch.load(io.BytesIO(b)) (torch's
// storage.py; weights_only=False): its pickles run. Each hostile file must say what would
// run, with where it sits (a zip archive by torch's zip rules, a legacy file pickle by
// pickle); one that cannot be read through (truncated) is a danger of its own, never silence. Whether Python runs the payload is what unpickling each
// file did in a scratch directory (expected.json).
func TestNestedTorchFiles(t *testing.T) {
	dir := filepath.Join("testdata", "nested")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]struct {
		Runs bool `json:"runs_payload"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != 5 {
		t.Fatalf("expected.json lists %d files, want 5", len(want))
	}
	for name, w := range want {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ck, err := Open(strings.NewReader(string(data)), int64(len(data)), Options{})
		var findings []ckpt.Finding
		if err != nil {
			le, ok := err.(*Error)
			if !ok {
				t.Errorf("%s: Open = %T %v, want a loader error or a checkpoint", name, err, err)
				continue
			}
			findings = le.Findings
		} else {
			findings = ck.Findings
		}
		var system, unchecked bool
		for _, f := range findings {
			if f.Severity != ckpt.SeverityDanger {
				continue
			}
			if f.Global == "posix.system" && strings.Contains(f.Detail, "touch marker") &&
				strings.Contains(f.Where, "passed to torch.storage._load_from_bytes") {
				system = true
			}
			if f.Global == loadFromBytes && strings.Contains(f.Detail, "could not be checked") {
				unchecked = true
			}
		}
		switch {
		case w.Runs && !system && !unchecked:
			t.Errorf("%s: Python runs its payload, findings %+v name neither the call nor an unchecked file", name, findings)
		case !w.Runs && !unchecked && !system:
			t.Errorf("%s: findings %+v; a torch file that cannot be read through must be a danger", name, findings)
		}
		if name != "nested_truncated.pkl" {
			if !system {
				t.Errorf("%s: the nested posix.system call is not reported: %+v", name, findings)
			}
		}
	}
}
