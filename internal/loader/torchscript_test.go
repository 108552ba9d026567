package loader

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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

// TestTorchScriptRepeatedCode holds the code shown for a TorchScript archive that holds
// its code file several times to torch.jit.load itself (testdata/tsdup/generate.py: each
// copy adds a different number in forward, and the module torch loaded said which it
// compiled): ReadMember gives that copy, it alone is not Shadowed, and every copy can be
// read by its place.
func TestTorchScriptRepeatedCode(t *testing.T) {
	raw, err := os.ReadFile("testdata/tsdup/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]struct {
		Forward0  int   `json:"forward_0"`
		NumpyLoad *int  `json:"numpy_load"`
		Copies    []int `json:"copies"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 4 {
		t.Fatalf("%d cases", len(cases))
	}
	const code = "m/code/__torch__.py"
	adds := func(b []byte) string {
		i := bytes.Index(b, []byte("torch.add(x, "))
		if i < 0 {
			return "?"
		}
		j := bytes.IndexByte(b[i:], ')')
		return string(b[i+len("torch.add(x, ") : i+j])
	}
	for name, c := range cases {
		data, err := os.ReadFile(filepath.Join("testdata/tsdup", name))
		if err != nil {
			t.Fatal(err)
		}
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.NumpyLoad != nil {
			// an .npz in a folder, which numpy reads (the last copy), not torch
			for k, n := range c.Copies {
				m := ck.Member("d/x.npy", k+1)
				if m == nil {
					t.Fatalf("%s: no copy %d", name, k+1)
				}
				if read := n == *c.NumpyLoad; m.Shadowed == read || read != (ck.Member("d/x.npy", 0) == m) {
					t.Errorf("%s: copy %d (array [%d]): shadowed %v; numpy.load reads the copy holding [%d]", name, k+1, n, m.Shadowed, *c.NumpyLoad)
				}
			}
			continue
		}
		got, err := ck.ReadMember(code, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a := adds(got); a != strconv.Itoa(c.Forward0) {
			t.Errorf("%s: the code shown adds %s; the module torch.jit.load made adds %d", name, a, c.Forward0)
		}
		read := 0
		for k, n := range c.Copies {
			m := ck.Member(code, k+1)
			if m == nil {
				t.Fatalf("%s: no copy %d", name, k+1)
			}
			b, err := m.Read(1 << 20)
			if err != nil || adds(b) != strconv.Itoa(n) {
				t.Errorf("%s: copy %d adds %s (%v), want %d", name, k+1, adds(b), err, n)
			}
			if !m.Shadowed {
				read++
				if n != c.Forward0 {
					t.Errorf("%s: copy %d (adds %d) is not shadowed; torch compiles the one adding %d", name, k+1, n, c.Forward0)
				}
			}
		}
		if read != 1 {
			t.Errorf("%s: %d copies not shadowed, want 1", name, read)
		}
	}
}
