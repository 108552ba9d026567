package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
)

const modelsDir = "../../testdata/models"

// lookup follows one pointer segment through the JSON encoding.
func lookup(v any, seg string) (any, bool) {
	switch x := v.(type) {
	case []any:
		i, err := strconv.Atoi(seg)
		if err != nil || i < 0 || i >= len(x) {
			return nil, false
		}
		return x[i], true
	case map[string]any:
		for _, tag := range []string{"$ndarray", "$tensor"} {
			if inner, ok := x[tag].(map[string]any); ok {
				return lookup(inner["data"], seg)
			}
		}
		for _, tag := range []string{"$tuple", "$set", "$frozenset"} {
			if inner, ok := x[tag]; ok {
				return lookup(inner, seg)
			}
		}
		if pairs, ok := x["$dict"].([]any); ok {
			for _, p := range pairs {
				kv := p.([]any)
				if keySeg(kv[0]) == seg {
					return kv[1], true
				}
			}
			if attrs, ok := x["attrs"].(map[string]any); ok {
				return lookup(attrs, seg)
			}
			return nil, false
		}
		if _, ok := x["$object"]; ok {
			if seg == "__args__" || seg == "__state__" || seg == "__callee__" {
				a, ok := x["attrs"].(map[string]any)[seg]
				return a, ok
			}
			return lookup(x["attrs"], seg)
		}
		r, ok := x[seg]
		return r, ok
	}
	return nil, false
}

// keySeg renders a decoded JSON dict key the way pointers name it.
func keySeg(k any) string {
	switch x := k.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case map[string]any:
		if b, ok := x["$bytes"].(string); ok {
			raw, _ := base64.StdEncoding.DecodeString(b)
			return "b'" + string(raw) + "'"
		}
		if items, ok := x["$tuple"].([]any); ok {
			parts := make([]string, len(items))
			for i, it := range items {
				parts[i] = keySeg(it)
			}
			if len(parts) == 1 {
				return "(" + parts[0] + ",)"
			}
			return "(" + strings.Join(parts, ", ") + ")"
		}
	}
	return fmt.Sprint(k)
}

// TestJSONRoundTripsScalars writes each fixture's whole tree as JSON and reads back the
// scalars expected.json recorded from the real objects.
func TestJSONRoundTripsScalars(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	var all map[string]json.RawMessage
	_ = json.Unmarshal(raw, &all)
	checked := 0
	for name, msg := range all {
		if !strings.HasPrefix(name, "python_types") && !strings.HasPrefix(name, "numpy_arrays") && name != "lightning_style.ckpt" {
			continue
		}
		var fe struct {
			Scalars map[string]any `json:"scalars"`
			Tensors []struct {
				Path  string `json:"path"`
				First []any  `json:"first"`
				Numel int64  `json:"numel"`
			} `json:"tensors"`
		}
		_ = json.Unmarshal(msg, &fe)
		f, err := os.Open(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		var buf bytes.Buffer
		if err := (JSON{}).Write(context.Background(), &buf, ck.Root); err != nil {
			t.Fatalf("%s: Write: %v", name, err)
		}
		dec := json.NewDecoder(&buf)
		dec.UseNumber()
		var doc any
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("%s: the export is not JSON: %v", name, err)
		}
		get := func(p string) (any, bool) {
			v := doc
			if p == "" {
				return v, true
			}
			for _, s := range strings.Split(p[1:], "/") {
				var ok bool
				if v, ok = lookup(v, ckpt.UnescapeSegment(s)); !ok {
					return nil, false
				}
			}
			return v, true
		}
		for p, want := range fe.Scalars {
			got, ok := get(p)
			if !ok {
				t.Errorf("%s: %s missing from the JSON export", name, p)
				continue
			}
			if !sameJSON(got, want) {
				t.Errorf("%s: %s = %#v in the export, want %#v", name, p, got, want)
			}
			checked++
		}
		for _, wt := range fe.Tensors {
			got, ok := get(wt.Path)
			if !ok || len(wt.First) == 0 {
				continue
			}
			body, _ := got.(map[string]any)
			var inner map[string]any
			for _, tag := range []string{"$tensor", "$ndarray"} {
				if m, ok := body[tag].(map[string]any); ok {
					inner = m
				}
			}
			if inner == nil || inner["data"] == nil {
				continue
			}
			flat := flatten(inner["data"])
			for i := range flat {
				flat[i] = itemValue(flat[i])
			}
			for i, w := range wt.First {
				if i >= len(flat) || !sameJSON(flat[i], w) {
					t.Errorf("%s: %s element %d = %v, want %v", name, wt.Path, i, flat[min(i, len(flat)-1)], w)
					break
				}
			}
			checked++
		}
	}
	if checked < 200 {
		t.Errorf("checked %d values, want more", checked)
	}
}

// itemValue spells a numpy bytes item of the export ({"$bytes": base64}) as expected.json
// does (latin-1 text); other values are as they are.
func itemValue(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if b64, ok := m["$bytes"].(string); ok {
		b, _ := base64.StdEncoding.DecodeString(b64)
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	return v
}

func flatten(v any) []any {
	if l, ok := v.([]any); ok {
		var out []any
		for _, x := range l {
			out = append(out, flatten(x)...)
		}
		return out
	}
	return []any{v}
}

func sameJSON(got, want any) bool {
	switch w := want.(type) {
	case nil:
		return got == nil
	case bool:
		return got == w
	case float64:
		switch g := got.(type) {
		case json.Number:
			f, _ := g.Float64()
			return f == w || math.Abs(f-w) <= 1e-6*math.Abs(w) && math.Abs(w) > 1e-30 || float32(f) == float32(w)
		case map[string]any:
			return false
		}
	case string:
		switch g := got.(type) {
		case string:
			return g == w || g == strings.ToValidUTF8(w, "\ufffd")
		case map[string]any:
			if s, ok := g["$int"].(string); ok {
				return s == w
			}
			if s, ok := g["$float"].(string); ok {
				return s == w
			}
			if s, ok := g["value"].(string); ok {
				return s == w
			}
		case json.Number:
			return g.String() == w
		}
		return false
	case map[string]any:
		if h, ok := w["hex"].(string); ok {
			g, _ := got.(map[string]any)
			for _, tag := range []string{"$bytes", "$bytearray"} {
				if b64, ok := g[tag].(string); ok {
					b, _ := base64.StdEncoding.DecodeString(b64)
					return hex.EncodeToString(b) == h
				}
			}
			return false
		}
		return true
	case []any:
		g, _ := got.(map[string]any)
		if c, ok := g["$complex"].([]any); ok && len(w) == 2 {
			return sameJSON(c[0], w[0]) && sameJSON(c[1], w[1])
		}
		return true
	}
	return true
}

// TestJSONOfPlainData writes dicts and lists of plain values, which the loader keeps as
// values and makes into nodes on demand, and compares them with the JSON Python's
// json.dumps writes for the same objects ({"k0": 0, ...} and [0.5, ...]), and the tagged
// form for a dict whose keys start with "$".
func TestJSONOfPlainData(t *testing.T) {
	str := func(s string) []byte { return append([]byte{'X', byte(len(s)), 0, 0, 0}, s...) }
	var p bytes.Buffer
	// {"plain": {"k0": 0, ..., "k39": 39}, "dollars": {"$a0": None, ..., "$a39": None}, "list": [0, 1, ..., 39]}
	p.WriteString("\x80\x02}(")
	p.Write(str("plain"))
	p.WriteString("}(")
	want := `{"plain":{`
	for i := range 40 {
		p.Write(str("k" + strconv.Itoa(i)))
		p.Write([]byte{'K', byte(i)})
		want += fmt.Sprintf(`%s"k%d":%d`, map[bool]string{true: ",", false: ""}[i > 0], i, i)
	}
	p.WriteString("u")
	want += `},"dollars":{"$dict":[`
	p.Write(str("dollars"))
	p.WriteString("}(")
	for i := range 40 {
		p.Write(str("$a" + strconv.Itoa(i)))
		p.WriteString("N")
		want += fmt.Sprintf(`%s["$a%d",null]`, map[bool]string{true: ",", false: ""}[i > 0], i)
	}
	p.WriteString("u")
	want += `]},"list":[`
	p.Write(str("list"))
	p.WriteString("](")
	for i := range 40 {
		p.Write([]byte{'K', byte(i)})
		want += fmt.Sprintf(`%s%d`, map[bool]string{true: ",", false: ""}[i > 0], i)
	}
	p.WriteString("eu.")
	want += `]}`
	ck, err := loader.Open(bytes.NewReader(p.Bytes()), int64(p.Len()), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ck.Root.Children {
		if !k.IsLazy() {
			t.Errorf("%s is made node by node: the test does not reach plain data kept as values", k.Key)
		}
	}
	var buf bytes.Buffer
	if err := (JSON{}).Write(context.Background(), &buf, ck.Root); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(buf.String()); got != want {
		t.Errorf("JSON\n got  %s\n want %s", got, want)
	}
}
