package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/loader"
)

// TestJSONOfItems exports every str, bytes and structured array of the fixtures as JSON and
// compares its first values with what numpy read: strings as strings, bytes as base64,
// records as objects of their fields.
func TestJSONOfItems(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path   string `json:"path"`
			DType  string `json:"dtype"`
			First  []any  `json:"first"`
			Fields []struct {
				Name string `json:"name"`
			} `json:"fields"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for name, fx := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		for _, wt := range fx.Tensors {
			isItems := strings.HasPrefix(wt.DType, "str") || strings.HasPrefix(wt.DType, "bytes") || len(wt.Fields) > 0
			if !isItems || len(wt.First) == 0 {
				continue
			}
			f, err := os.Open(filepath.Join(modelsDir, name))
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			ck, err := loader.Open(f, st.Size(), loader.Options{})
			if err != nil {
				t.Fatal(err)
			}
			n, err := ck.Node(wt.Path)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := (JSON{}).Write(context.Background(), &buf, n); err != nil {
				t.Fatalf("%s %s: %v", name, wt.Path, err)
			}
			var doc map[string]struct {
				Data any `json:"data"`
			}
			if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
				t.Fatalf("%s %s: %v", name, wt.Path, err)
			}
			var flat []any
			var walk func(v any)
			walk = func(v any) {
				if l, ok := v.([]any); ok {
					for _, x := range l {
						walk(x)
					}
					return
				}
				flat = append(flat, v)
			}
			walk(doc["$ndarray"].Data)
			for i, w := range wt.First {
				if i >= len(flat) {
					t.Errorf("%s %s: %d values, want at least %d", name, wt.Path, len(flat), len(wt.First))
					break
				}
				got := flat[i]
				switch g := got.(type) {
				case map[string]any:
					if b64, ok := g["$bytes"].(string); ok {
						b, _ := base64.StdEncoding.DecodeString(b64)
						r := make([]rune, len(b)) // expected.json spells bytes as latin-1 text
						for i, c := range b {
							r[i] = rune(c)
						}
						got = string(r)
					} else { // a record: its fields in order
						var rec []any
						for _, fd := range wt.Fields {
							rec = append(rec, g[fd.Name])
						}
						got = rec
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(w) {
					t.Errorf("%s %s element %d = %v, want %v", name, wt.Path, i, got, w)
				}
				checked++
			}
			ck.Close()
			f.Close()
		}
	}
	if checked < 30 {
		t.Errorf("checked %d values, want more", checked)
	}
}
