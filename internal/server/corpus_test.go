package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// corpusDir is the shared corpus of real files from public projects, beside the checkout.
const corpusDir = "../../../shared/corpus"

// TestCorpusOverHTTP uploads every file of the shared corpus through the API with the real
// loader. Whatever the file, the server answers 201 or 422, never a 5xx; the findings the
// API reports are exactly the loader's; and the pages of every opened file render.
// (Whether each file should open is the loader's corpus test.)
func TestCorpusOverHTTP(t *testing.T) {
	if _, err := os.Stat(corpusDir); err != nil {
		t.Skipf("corpus not present: %v", err)
	}
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)

	var files []string
	filepath.WalkDir(corpusDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && filepath.Dir(p) != filepath.Clean(corpusDir) {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatal("no files in the corpus")
	}
	opened, rejected := 0, 0
	for _, p := range files {
		rel, _ := filepath.Rel(corpusDir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want := findingsJSON(loaderFindings(data))

		rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(filepath.Base(p)), bytes.NewReader(data))
		var got []findingJSON
		switch rec.Code {
		case http.StatusCreated:
			opened++
			up := decode[uploadJSON](t, rec)
			sum := do(s, http.MethodGet, "/api/checkpoints/"+up.ID, nil)
			if sum.Code != http.StatusOK {
				t.Errorf("%s: GET /api/checkpoints/<id> = %d %.200s", rel, sum.Code, sum.Body)
				continue
			}
			got = decode[checkpointJSON](t, sum).Findings
			checkPages(t, s, rel, up.ID)
		case http.StatusUnprocessableEntity:
			rejected++
			got = decode[errorJSON](t, rec).Findings
			if got == nil {
				got = []findingJSON{}
			}
		default:
			t.Errorf("%s: upload = %d %.300s, want 201 or 422", rel, rec.Code, rec.Body)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: findings over HTTP differ from the loader's (-loader +http):\n%s", rel, diff)
		}
	}
	t.Logf("%d corpus files: %d opened, %d rejected with 422", len(files), opened, rejected)
}

// loaderFindings is what the loader finds in data, opened or not.
func loaderFindings(data []byte) []ckpt.Finding {
	ck, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{})
	var lerr *loader.Error
	switch {
	case err == nil:
		return ck.Findings
	case errors.As(err, &lerr):
		return lerr.Findings
	}
	return nil
}

// checkPages renders the pages of an opened file: its checkpoint page, its root node and
// the first page of the root's children through the API and as pages.
func checkPages(t *testing.T, s *Server, rel, id string) {
	t.Helper()
	for _, target := range []string{"/c/" + id, "/c/" + id + "?view=raw", "/c/" + id + "/n/"} {
		if rec := do(s, http.MethodGet, target, nil); rec.Code != http.StatusOK {
			t.Errorf("%s: GET %s = %d %.300s", rel, target, rec.Code, rec.Body)
		}
	}
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/node?limit=50", nil)
	if rec.Code != http.StatusOK {
		t.Errorf("%s: GET root node = %d %.300s", rel, rec.Code, rec.Body)
		return
	}
	var root struct{ Children []childJSON }
	if err := json.Unmarshal(rec.Body.Bytes(), &root); err != nil {
		t.Errorf("%s: root node: %v", rel, err)
		return
	}
	for _, c := range root.Children {
		for _, target := range []string{
			"/api/checkpoints/" + id + "/node?path=" + url.QueryEscape(c.Path),
			views.NodeURL(id, c.Path),
			"/c/" + id + "/fragment/children?path=" + url.QueryEscape(c.Path),
		} {
			if rec := do(s, http.MethodGet, target, nil); rec.Code != http.StatusOK {
				t.Errorf("%s: GET %s = %d %.300s", rel, target, rec.Code, rec.Body)
			}
		}
	}
}
