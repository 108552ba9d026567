package server

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Several files in one upload become one checkpoint: a sharded checkpoint's index and shards
// open as its weight_map, each tensor naming its shard; the same files give the same id; the
// whole downloads as one safetensors file.
func TestUploadSharded(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected_sharded.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sets map[string]struct {
		Files   []string `json:"files"`
		Tensors map[string]struct {
			Shard string `json:"shard"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &sets); err != nil {
		t.Fatal(err)
	}
	s := realServer(t, Config{})
	for index, want := range sets {
		upload := func() uploadJSON {
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			for _, name := range want.Files {
				data, err := os.ReadFile(filepath.Join(fixturesDir, "sharded", name))
				if err != nil {
					t.Fatal(err)
				}
				w, _ := mw.CreateFormFile("file", name)
				w.Write(data)
			}
			mw.Close()
			rec := do(s, http.MethodPost, "/api/checkpoints", &body, "Content-Type", mw.FormDataContentType())
			if rec.Code != http.StatusCreated {
				t.Fatalf("upload of %v = %d %.300s", want.Files, rec.Code, rec.Body)
			}
			return decode[uploadJSON](t, rec)
		}
		up := upload()
		if !strings.HasPrefix(up.Format, "sharded ") || len(up.Files) != len(want.Files) || up.Name != strings.TrimSuffix(index, ".index.json") {
			t.Errorf("upload of %s = %+v, want a sharded checkpoint of %d files named after the index", index, up, len(want.Files))
		}
		if again := upload(); again.ID != up.ID {
			t.Errorf("the same files uploaded again got id %s, want %s", again.ID, up.ID)
		}
		for name, wt := range want.Tensors {
			rec := do(s, http.MethodGet, "/api/checkpoints/"+up.ID+"/node?path=/"+name, nil)
			n := decode[struct {
				Storage *storageJSON `json:"storage"`
			}](t, rec)
			if rec.Code != http.StatusOK || n.Storage == nil || n.Storage.File != wt.Shard {
				t.Errorf("node %s of %s = %d %+v, want it in %s", name, index, rec.Code, n.Storage, wt.Shard)
			}
			if rec := do(s, http.MethodGet, statsURL(up.ID, "/"+name), nil); rec.Code != http.StatusOK {
				t.Errorf("stats of %s = %d %.200s", name, rec.Code, rec.Body)
			}
			break
		}
		rec := do(s, http.MethodGet, downloadURL(up.ID, "", "safetensors"), nil)
		if rec.Code != http.StatusOK || rec.Body.Len() < 1000 {
			t.Errorf("safetensors of %s = %d (%d bytes)", index, rec.Code, rec.Body.Len())
		}
		if rec := do(s, http.MethodGet, "/c/"+up.ID, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "sharded checkpoint") {
			t.Errorf("page of %s = %d", index, rec.Code)
		}
	}
}
