package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

const ggufDir = "../../testdata/gguf"

type ggufFacts struct {
	Metadata []struct {
		Key   string `json:"key"`
		Type  string `json:"type"`
		Value any    `json:"value"`
		Len   int    `json:"len"`
		Items []any  `json:"items"`
	} `json:"metadata"`
	Tensors []struct {
		Name       string   `json:"name"`
		Shape      []int64  `json:"shape"`
		Type       string   `json:"type"`
		Offset     int64    `json:"offset"`
		NBytes     int64    `json:"nbytes"`
		First64Bit []uint32 `json:"first64_bits"`
		Sum        float64  `json:"sum"`
	} `json:"tensors"`
}

func loadGGUFFacts(t *testing.T) map[string]ggufFacts {
	raw, err := os.ReadFile(filepath.Join(ggufDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Fixtures map[string]ggufFacts `json:"fixtures"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // 64-bit integers exactly
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Fixtures
}

// checkGGUFTensors compares the tensors of an opened GGUF model with the writer's facts and
// ggml's own dequantized values (bit for bit).
func checkGGUFTensors(t *testing.T, ck *ckpt.Checkpoint, name string, want ggufFacts, part string) {
	t.Helper()
	for _, wt := range want.Tensors {
		n, err := ck.Node("/tensors/" + ckpt.EscapeSegment(wt.Name))
		if err != nil || n.Tensor == nil {
			t.Errorf("%s: tensor %s: %v", name, wt.Name, err)
			continue
		}
		tt := n.Tensor
		if !equalShape(tt.Shape, wt.Shape) || tt.Storage.Offset != wt.Offset || tt.Storage.Size != wt.NBytes || tt.NBytes() != wt.NBytes {
			t.Errorf("%s: %s: shape %v at %d+%d (%d bytes), want %v at %d+%d", name, wt.Name, tt.Shape, tt.Storage.Offset, tt.Storage.Size, tt.NBytes(), wt.Shape, wt.Offset, wt.NBytes)
		}
		if part != "" && tt.Storage.File == "" {
			t.Errorf("%s: %s names no part", name, wt.Name)
		}
		if strings.HasPrefix(wt.Type, "F") || strings.HasPrefix(wt.Type, "BF") || strings.HasPrefix(wt.Type, "I") {
			continue // plain numbers: TestFormatFacts-style checks cover their bytes
		}
		if tt.Decoded == nil {
			if len(wt.First64Bit) > 0 {
				t.Errorf("%s: %s (%s) has no dequantized view", name, wt.Name, wt.Type)
			}
			continue
		}
		buf := make([]byte, 4*len(wt.First64Bit))
		if _, err := tt.Decoded.Data.ReadAt(buf, 0); err != nil {
			t.Errorf("%s: %s: %v", name, wt.Name, err)
			continue
		}
		for i, w := range wt.First64Bit {
			if g := binary.LittleEndian.Uint32(buf[4*i:]); g != w {
				t.Errorf("%s: %s (%s) value %d = %v, want ggml's %v", name, wt.Name, wt.Type, i, math.Float32frombits(g), math.Float32frombits(w))
				break
			}
		}
		all := make([]byte, tt.Decoded.Size)
		if _, err := tt.Decoded.Data.ReadAt(all, 0); err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for i := 0; i+4 <= len(all); i += 4 {
			sum += float64(math.Float32frombits(binary.LittleEndian.Uint32(all[i:])))
		}
		if math.Abs(sum-wt.Sum) > 1e-9*math.Max(1, math.Abs(wt.Sum)) {
			t.Errorf("%s: %s sum %v, want ggml's %v", name, wt.Name, sum, wt.Sum)
		}
	}
}

// TestGGUF opens the GGUF fixtures: metadata as the writer put it (large arrays read page by
// page), every tensor where gguf.cpp's rules put it, dequantized exactly as ggml does.
func TestGGUF(t *testing.T) {
	for _, name := range []string{"all_types_v3.gguf", "v2.gguf"} {
		want := loadGGUFFacts(t)[name]
		f, err := os.Open(filepath.Join(ggufDir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := Open(f, st.Size(), Options{})
		if err != nil {
			t.Fatalf("Open(%s): %v", name, err)
		}
		if ck.Format != "gguf" || ck.Tensors != len(want.Tensors) {
			t.Errorf("%s: %s with %d tensors, want gguf with %d", name, ck.Format, ck.Tensors, len(want.Tensors))
		}
		for _, m := range want.Metadata {
			n, err := ck.Node("/metadata/" + ckpt.EscapeSegment(m.Key))
			if err != nil {
				t.Errorf("%s: metadata %s: %v", name, m.Key, err)
				continue
			}
			if m.Type == "arr" {
				if n.NumItems() != m.Len {
					t.Errorf("%s: %s has %d items, want %d", name, m.Key, n.NumItems(), m.Len)
				}
				if m.Len > lazyArrayMin != n.IsLazy() {
					t.Errorf("%s: %s lazy = %v for %d items", name, m.Key, n.IsLazy(), m.Len)
				}
				for i, it := range n.Items(0, min(5, m.Len)) {
					if w, ok := m.Items[i].(string); ok && it.Str != w {
						t.Errorf("%s: %s item %d = %q, want %q", name, m.Key, i, it.Str, w)
					}
				}
				if m.Len > 0 {
					last, err := ck.Node(fmt.Sprintf("/metadata/%s/%d", ckpt.EscapeSegment(m.Key), m.Len-1))
					if err != nil || last == nil {
						t.Errorf("%s: %s: the last item by pointer: %v", name, m.Key, err)
					}
				}
				continue
			}
			var got any
			switch n.Kind {
			case ckpt.KindStr:
				got = n.Str
			case ckpt.KindBool:
				got = n.Bool
			case ckpt.KindInt:
				got = n.Int
			case ckpt.KindFloat:
				got = n.Float
			}
			if num, ok := m.Value.(json.Number); ok && n.Kind == ckpt.KindFloat {
				w, _ := num.Float64()
				if n.Float != w || math.Signbit(n.Float) != math.Signbit(w) {
					t.Errorf("%s: metadata %s = %v, want %v", name, m.Key, n.Float, w)
				}
				continue
			}
			if fmt.Sprint(got) != fmt.Sprint(m.Value) {
				t.Errorf("%s: metadata %s = %v, want %v", name, m.Key, got, m.Value)
			}
		}
		checkGGUFTensors(t, ck, name, want, "")
		ck.Close()
		f.Close()
	}
}

// TestGGUFSplit opens a 2-part split model as one model, each tensor naming its part, and
// names a missing part.
func TestGGUFSplit(t *testing.T) {
	facts := loadGGUFFacts(t)
	var files []File
	for _, n := range []string{"split-00001-of-00002.gguf", "split-00002-of-00002.gguf"} {
		f, err := os.Open(filepath.Join(ggufDir, n))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		files = append(files, File{Name: n, R: f, Size: st.Size()})
	}
	ck, err := OpenSet(files, Options{})
	if err != nil {
		t.Fatalf("OpenSet: %v", err)
	}
	defer ck.Close()
	total := 0
	for _, n := range []string{"split-00001-of-00002.gguf", "split-00002-of-00002.gguf"} {
		checkGGUFTensors(t, ck, n, facts[n], n)
		total += len(facts[n].Tensors)
	}
	if ck.Tensors != total {
		t.Errorf("split model has %d tensors, want %d", ck.Tensors, total)
	}
	if _, err := OpenSet(files[:1], Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("OpenSet of part 1 alone = %v, want an error naming the missing part", err)
	}
}
