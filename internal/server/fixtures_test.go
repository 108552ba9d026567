package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// fixturesDir holds the files made by the real libraries and expected.json, their facts.
const fixturesDir = "../../testdata/models"

// expectedFile is the part of a testdata/models/expected.json entry these tests check.
type expectedFile struct {
	Format   string `json:"format"`
	RootKind string `json:"root_kind"`
	Danger   []string
	Findings []struct {
		Global, Path string
	}
	Nodes   [][2]string       `json:"nodes"`
	Refs    map[string]string `json:"refs"`
	Tensors []struct {
		Path          string  `json:"path"`
		Kind          string  `json:"kind"`
		DType         string  `json:"dtype"`
		Shape         []int64 `json:"shape"`
		Strides       []int64 `json:"strides"`
		StorageOffset int64   `json:"storage_offset"`
		Numel         int64   `json:"numel"`
		Storage       *struct {
			Key      string `json:"key"`
			Location string `json:"location"`
		} `json:"storage"`
	} `json:"tensors"`
	SharedStorage [][]string `json:"shared_storage"`
	FileSize      int64      `json:"file_size"`
}

func readExpected(t *testing.T) map[string]expectedFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatalf("no fixtures: %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("expected.json: %v", err)
	}
	out := map[string]expectedFile{}
	for name, msg := range raw {
		if name == "_about" {
			continue
		}
		var e expectedFile
		if err := json.Unmarshal(msg, &e); err != nil {
			t.Fatalf("expected.json %s: %v", name, err)
		}
		out[name] = e
	}
	return out
}

// TestFixturesOverHTTP uploads each fixture and checks what the API and pages say about it
// against the facts the real libraries wrote to expected.json: the format and size, the
// number of tensors, the dangerous calls, every node's kind at its path (through the JSON
// API and the node page URL, so every key spelling survives both escapings), every
// tensor's layout and storage, tied storages and refs.
func TestFixturesOverHTTP(t *testing.T) {
	expected := readExpected(t)
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)

	names := make([]string, 0, len(expected))
	for name := range expected {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := expected[name]
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(fixturesDir, name))
			if err != nil {
				t.Fatalf("fixture listed in expected.json: %v", err)
			}
			rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(name), bytes.NewReader(data))
			if rec.Code != http.StatusCreated {
				t.Fatalf("upload %s = %d %.300s, want 201", name, rec.Code, rec.Body)
			}
			up := decode[uploadJSON](t, rec)
			if up.Format != want.Format || up.Size != want.FileSize || up.Name != name {
				t.Errorf("upload %s = format %q size %d name %q, want %q %d %q", name, up.Format, up.Size, up.Name, want.Format, want.FileSize, name)
			}
			id := up.ID
			api := "/api/checkpoints/" + id

			// a tensor object stored in a second place (a ref, Python's identity) counts as a
			// tensor tied to the first, as the page counts it
			places := len(want.Tensors)
			for _, target := range want.Refs {
				for _, x := range want.Tensors {
					if x.Path == target {
						places++
					}
				}
			}
			sum := decode[checkpointJSON](t, do(s, http.MethodGet, api, nil))
			if sum.Tensors != places {
				t.Errorf("GET %s tensors = %d, want %d (%d tensors, the rest stored again)", name, sum.Tensors, places, len(want.Tensors))
			}
			var gotDanger, wantDanger []string
			for _, f := range sum.Findings {
				if f.Severity == "danger" {
					gotDanger = append(gotDanger, f.Global+" at "+f.Path)
				}
			}
			for _, f := range want.Findings {
				wantDanger = append(wantDanger, f.Global+" at "+f.Path)
			}
			if !containsAll(gotDanger, wantDanger) {
				t.Errorf("GET %s danger findings = %q, want at least %q", name, gotDanger, wantDanger)
			}

			node := func(path string) (map[string]any, bool) {
				t.Helper()
				rec := do(s, http.MethodGet, api+"/node?limit=1&path="+url.QueryEscape(path), nil)
				if rec.Code != http.StatusOK {
					t.Errorf("GET %s node %q = %d %.200s, want 200", name, path, rec.Code, rec.Body)
					return nil, false
				}
				return decode[map[string]any](t, rec), true
			}

			if len(want.Nodes) == 0 {
				t.Errorf("expected.json lists no nodes for %s", name)
			}
			for _, n := range want.Nodes {
				path, kind := n[0], n[1]
				got, ok := node(path)
				if !ok {
					continue
				}
				if got["path"] != path || got["kind"] != kind {
					t.Errorf("GET %s node %q = path %q kind %q, want kind %q", name, path, got["path"], got["kind"], kind)
				}
				if target := views.NodeURL(id, path); do(s, http.MethodGet, target, nil).Code != http.StatusOK {
					t.Errorf("GET %s (node %q of %s) is not 200", target, path, name)
				}
			}

			for _, tn := range want.Tensors {
				got, ok := node(tn.Path)
				if !ok {
					continue
				}
				type layout struct {
					Kind, DType            string
					Shape, Strides         []int64
					StorageOffset, Numel   int64
					StorageKey, StorageLoc string
				}
				w := layout{Kind: tn.Kind, DType: tn.DType, Shape: tn.Shape, Strides: tn.Strides, StorageOffset: tn.StorageOffset, Numel: tn.Numel}
				g := layout{Kind: str(got["kind"]), DType: str(got["dtype"]), Shape: ints(got["shape"]), Strides: ints(got["strides"]),
					StorageOffset: int64(num(got["storage_offset"])), Numel: int64(num(got["numel"]))}
				if tn.Storage != nil {
					w.StorageKey, w.StorageLoc = tn.Storage.Key, tn.Storage.Location
					storage, _ := got["storage"].(map[string]any)
					g.StorageKey, g.StorageLoc = str(storage["key"]), str(storage["location"])
				}
				if diff := cmp.Diff(w, g); diff != "" {
					t.Errorf("GET %s node %q (-want +got):\n%s", name, tn.Path, diff)
				}
			}

			for _, group := range want.SharedStorage {
				for _, p := range group {
					got, ok := node(p)
					if !ok {
						continue
					}
					storage, _ := got["storage"].(map[string]any)
					var shared []string
					for _, u := range anySlice(storage["shared_with"]) {
						shared = append(shared, str(u))
					}
					others := slices.DeleteFunc(slices.Clone(group), func(q string) bool { return q == p })
					if !containsAll(shared, others) {
						t.Errorf("GET %s node %q shared_with = %q, want %q", name, p, shared, others)
					}
				}
			}

			for path, target := range want.Refs {
				got, ok := node(path)
				if ok && (got["kind"] != "ref" || got["target"] != target) {
					t.Errorf("GET %s node %q = kind %q target %q, want a ref to %q", name, path, got["kind"], got["target"], target)
				}
			}
		})
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func anySlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func ints(v any) []int64 {
	s, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]int64, 0, len(s))
	for _, x := range s {
		out = append(out, int64(num(x)))
	}
	return out
}
