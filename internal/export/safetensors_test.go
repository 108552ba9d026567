package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

// bits is the sha256 of a tensor's values as stored: little-endian, C order, bfloat16 and
// float8 as their bit patterns.
func bits(t *testing.T, tt *ckpt.Tensor) [32]byte {
	t.Helper()
	v := tt.View()
	if v == nil {
		t.Fatalf("no view of %+v", tt)
	}
	st, err := tensor.NewStream(v, tensor.StreamOptions{KeepBits: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(st, 0, st.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestSafetensorsRoundTrip converts every fixture's tensors to safetensors and reads the
// result back with the loader (which validates it as the reference implementation does):
// the same tensors, dtypes, shapes and bytes; tied weights written once, their other names in
// the metadata; a pickled nn.Module's tensors named as torch's state_dict() names them.
func TestSafetensorsRoundTrip(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		StateDictKeys []string `json:"state_dict_keys"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	converted := 0
	for name, want := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		f, err := os.Open(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		resolve := func(n *ckpt.Node) *ckpt.Node {
			t, err := ck.Node(n.Target)
			if err != nil {
				return nil
			}
			return t
		}
		s, err := NewSafetensors(ck.Root, resolve)
		if err == ErrNoTensors {
			f.Close()
			continue
		}
		if err != nil {
			t.Fatalf("NewSafetensors(%q): %v", name, err)
		}
		out, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
		if err != nil || int64(len(out)) != s.Size() {
			t.Fatalf("%s: read %d of %d bytes: %v", name, len(out), s.Size(), err)
		}
		back, err := loader.Open(bytes.NewReader(out), int64(len(out)), loader.Options{})
		if err != nil {
			t.Fatalf("%s: the safetensors export does not open: %v", name, err)
		}
		if back.Format != "safetensors" || back.Tensors != s.Tensors {
			t.Errorf("%s: read back as %s with %d tensors, want safetensors with %d", name, back.Format, back.Tensors, s.Tensors)
		}
		// every written tensor: same dtype, shape and bits as the original under its name
		var aliases map[string]string
		if md, err := back.Node("/__metadata__/ckptview.aliases"); err == nil {
			if err := json.Unmarshal([]byte(md.Str), &aliases); err != nil {
				t.Errorf("%s: aliases %q: %v", name, md.Str, err)
			}
		}
		written := map[string]bool{}
		var names []string
		for _, k := range back.Root.Children {
			if !k.Attr {
				written[k.Key] = true
				names = append(names, k.Key)
			}
		}
		ckpt.Walk(ck.Root, func(n *ckpt.Node) {
			tt := n.Tensor
			if tt == nil || tt.Column || tt.Layout != "" || tt.Objects != nil || tt.Quant != nil || tt.View() == nil || safetensorsDType[tt.DType] == "" {
				return
			}
			key := stateDictName(n.Path())
			if a, ok := aliases[key]; ok {
				key = a
			}
			got, err := back.Node("/" + ckpt.EscapeSegment(key))
			if err != nil || got.Tensor == nil {
				t.Errorf("%s: %s was not written as %q (names %v)", name, n.Path(), key, names)
				return
			}
			if got.Tensor.DType != tt.DType || !sameShape(got.Tensor.Shape, tt.Shape) {
				t.Errorf("%s: %s read back as %s %v, want %s %v", name, n.Path(), got.Tensor.DType, got.Tensor.Shape, tt.DType, tt.Shape)
				return
			}
			if bits(t, got.Tensor) != bits(t, tt) {
				t.Errorf("%s: %s: the bytes read back differ", name, n.Path())
			}
		})
		if len(want.StateDictKeys) > 0 {
			var got []string
			for k := range written {
				got = append(got, k)
			}
			for k := range aliases {
				got = append(got, k)
			}
			sort.Strings(got)
			w := append([]string(nil), want.StateDictKeys...)
			sort.Strings(w)
			if strings.Join(got, ",") != strings.Join(w, ",") {
				t.Errorf("%s: safetensors names %v, want torch's state_dict keys %v", name, got, w)
			}
		}
		converted++
		f.Close()
	}
	if converted < 20 {
		t.Errorf("converted %d fixtures, want more", converted)
	}
}

// stateDictName is the name a tensor at a tree path gets (the test's own spelling of the
// rule: path segments dotted, module internals dropped).
func stateDictName(p string) string {
	var parts []string
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		seg = ckpt.UnescapeSegment(seg)
		if seg == "_modules" || seg == "_parameters" || seg == "_buffers" || seg == "" {
			continue
		}
		parts = append(parts, seg)
	}
	if len(parts) == 0 {
		return "tensor"
	}
	return strings.Join(parts, ".")
}

func sameShape(a, b []int64) bool {
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

// Tied weights (GPT-2's lm_head.weight and wte.weight) are written once.
func TestSafetensorsTied(t *testing.T) {
	f, err := os.Open(filepath.Join(modelsDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSafetensors(ck.Root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Aliases != 1 || s.Tensors != ck.Tensors-1 {
		t.Errorf("state_dict.pt as safetensors: %d tensors and %d aliases, want %d and 1", s.Tensors, s.Aliases, ck.Tensors-1)
	}
}
