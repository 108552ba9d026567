package loader

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// TestTorchScript opens a torch.jit.save archive: its members with what each holds (as
// zipfile lists them), the code text exactly as stored, and the parameters and buffers at
// the paths that torch.jit.load's state_dict() names (dots for slashes).
func TestTorchScript(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected_torchscript.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Format    string            `json:"format"`
		Members   []string          `json:"members"`
		Code      map[string]string `json:"code"`
		Extra     map[string]string `json:"extra"`
		StateDict map[string]struct {
			DType string    `json:"dtype"`
			Shape []int64   `json:"shape"`
			First []float64 `json:"first"`
		} `json:"state_dict"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	want := all["torchscript.pt"]
	ck := openFixture(t, "torchscript.pt")
	if ck.Format != want.Format {
		t.Errorf("Format = %q, want %q", ck.Format, want.Format)
	}
	var names []string
	kinds := map[string]string{}
	for _, m := range ck.Members {
		names = append(names, m.Name)
		kinds[m.Name] = m.Kind
	}
	sort.Strings(names)
	sort.Strings(want.Members)
	if strings.Join(names, " ") != strings.Join(want.Members, " ") {
		t.Errorf("Members = %v, want %v", names, want.Members)
	}
	for name, text := range want.Code {
		if kinds[name] != "code" {
			t.Errorf("member %s kind %q, want code", name, kinds[name])
		}
		got, err := ck.ReadMember(name, 1<<20)
		if err != nil || string(got) != text {
			t.Errorf("ReadMember(%q) = %q, %v; want the stored code %q", name, got, err, text)
		}
	}
	for name, text := range want.Extra {
		got, err := ck.ReadMember(name, 1<<20)
		if kinds[name] != "extra" || err != nil || string(got) != text {
			t.Errorf("extra file %s: kind %q, %q, %v; want extra %q", name, kinds[name], got, err, text)
		}
	}
	if _, err := ck.ReadMember("nope", 10); err != ckpt.ErrMemberNotFound {
		t.Errorf("ReadMember of a missing member = %v, want ErrMemberNotFound", err)
	}
	for key, wt := range want.StateDict {
		n, err := ck.Node("/" + strings.ReplaceAll(key, ".", "/"))
		if err != nil || n.Tensor == nil {
			t.Errorf("state_dict key %s: Node = %v, %v; want a tensor", key, n, err)
			continue
		}
		if n.Tensor.DType != wt.DType || !equalShape(n.Tensor.Shape, wt.Shape) {
			t.Errorf("%s: %s %v, want %s %v", key, n.Tensor.DType, n.Tensor.Shape, wt.DType, wt.Shape)
		}
		for i, w := range wt.First {
			v, ok := readElement(n.Tensor, int64(i))
			if !ok || !sameValue(v, w) {
				t.Errorf("%s element %d = %v, want %v", key, i, v, w)
				break
			}
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
