package server

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A GGUF model through the API: quantized tensors have statistics of their values as ggml
// dequantizes them, and download as float32 .npy with those values; the tokenizer
// vocabulary pages like any list.
func TestGGUFOverHTTP(t *testing.T) {
	s := realServer(t, Config{})
	data, err := os.ReadFile(filepath.Join("../../testdata/gguf", "all_types_v3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	up := decode[uploadJSON](t, do(s, http.MethodPost, "/api/checkpoints?name=model.gguf", strings.NewReader(string(data))))
	if up.Format != "gguf" {
		t.Fatalf("upload = %+v, want gguf", up)
	}
	raw, _ := os.ReadFile(filepath.Join("../../testdata/gguf", "expected.json"))
	var doc struct {
		Fixtures map[string]struct {
			Tensors []struct {
				Name     string   `json:"name"`
				Type     string   `json:"type"`
				Elements int64    `json:"elements"`
				Sum      float64  `json:"sum"`
				First    []uint32 `json:"first64_bits"`
			} `json:"tensors"`
		} `json:"fixtures"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, wt := range doc.Fixtures["all_types_v3.gguf"].Tensors {
		if !strings.HasPrefix(wt.Type, "Q") {
			continue
		}
		path := "/tensors/" + wt.Name
		rec := do(s, http.MethodGet, statsURL(up.ID, path), nil)
		st := decode[wantStats](t, rec)
		if rec.Code != http.StatusOK || st.Mean == nil || math.Abs(*st.Mean-wt.Sum/float64(wt.Elements)) > 1e-6*math.Max(1, math.Abs(*st.Mean)) {
			t.Errorf("stats of %s (%s) = %d %.200s, want mean %v", path, wt.Type, rec.Code, rec.Body, wt.Sum/float64(wt.Elements))
		}
		npy := do(s, http.MethodGet, downloadURL(up.ID, path, "npy"), nil)
		f, err := parseNPY(npy.Body.Bytes())
		if npy.Code != http.StatusOK || err != nil || f.descr != "<f4" {
			t.Errorf("npy of %s = %d %v %q", path, npy.Code, err, f.descr)
			continue
		}
		for i, w := range wt.First {
			if g := binary.LittleEndian.Uint32(f.data[4*i:]); g != w {
				t.Errorf("npy of %s value %d = %v, want ggml's %v", path, i, math.Float32frombits(g), math.Float32frombits(w))
				break
			}
		}
		checked++
	}
	if checked < 8 {
		t.Errorf("checked %d quantized tensors, want more", checked)
	}
	rec := do(s, http.MethodGet, "/api/checkpoints/"+up.ID+"/node?path=/metadata/tokenizer.ggml.tokens&offset=250&limit=10", nil)
	var page struct {
		Len      int64 `json:"len"`
		Children []struct {
			Path string `json:"path"`
		} `json:"children"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || page.Len != 300 || len(page.Children) != 10 || page.Children[0].Path != "/metadata/tokenizer.ggml.tokens/250" {
		t.Errorf("tokens page = %d %.300s", rec.Code, rec.Body)
	}
	if rec := do(s, http.MethodGet, "/c/"+up.ID+"/n/metadata/tokenizer.ggml.tokens?offset=200", nil); rec.Code != http.StatusOK {
		t.Errorf("tokens page HTML = %d", rec.Code)
	}
}
