package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/s3store/s3test"
	"github.com/ckptview/ckptview/internal/store"
)

// fileHost serves the fixtures under /models/ as a model hub does: Range honoured, an
// ETag per version. Bytes served are counted; a file's content can be replaced.
type fileHost struct {
	srv      *httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	versions map[string]int
	served   atomic.Int64
	noRange  bool
}

func newFileHost(t *testing.T) *fileHost {
	h := &fileHost{files: map[string][]byte{}, versions: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/models/")
		h.mu.Lock()
		data, ok := h.files[name]
		v := h.versions[name]
		h.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if h.noRange {
			r.Header.Del("Range")
		}
		w.Header().Set("ETag", `"v`+strconv.Itoa(v)+`"`)
		cw := &countingWriter{ResponseWriter: w, n: &h.served}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fileHost) put(name string, data []byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files[name] = data
	h.versions[name]++
	return h.srv.URL + "/models/" + name
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

func inPlaceServer(t *testing.T, cfg Config, st store.Blobs, prefixes ...string) *Server {
	t.Helper()
	remote, err := s3store.NewRemote(s3store.RemoteConfig{Prefixes: prefixes, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st == nil {
		if st, err = store.New(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	s := New(cfg, Deps{Store: st, Remote: remote, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)
	return s
}

func openJSON(t *testing.T, s *Server, u string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	body, _ := jsonBody(map[string]string{"url": u})
	return do(s, http.MethodPost, "/api/open", body, append([]string{"Content-Type", "application/json"}, header...)...)
}

func jsonBody(v map[string]string) (*bytes.Reader, error) {
	var b strings.Builder
	b.WriteString("{")
	first := true
	for k, x := range v {
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(strconv.Quote(k) + ":" + strconv.Quote(x))
	}
	b.WriteString("}")
	return bytes.NewReader([]byte(b.String())), nil
}

// inPlaceID is the documented id of a version of a URL, computed here from the README's
// definition rather than by the code under test.
func inPlaceID(u, version string, size int) string {
	h := sha256.Sum256([]byte("ckptview in-place\n" + u + "\n" + version + "\n" + strconv.Itoa(size)))
	return hex.EncodeToString(h[:])
}

// A checkpoint at an https URL opens in place: its documented id, its name, and every
// tensor's statistics and downloads are numpy's, read by ranged GETs and never copied.
func TestOpenURLInPlace(t *testing.T) {
	host := newFileHost(t)
	dir := t.TempDir()
	st, _ := store.New(dir)
	s := inPlaceServer(t, Config{}, st, host.srv.URL+"/models/")
	via := func(t *testing.T, name string) string {
		data, err := os.ReadFile(filepath.Join(fixturesDir, name))
		if err != nil {
			t.Fatal(err)
		}
		u := host.put(name, data)
		rec := openJSON(t, s, u)
		if rec.Code != http.StatusCreated {
			t.Fatalf("POST /api/open %s = %d %.300s, want 201", u, rec.Code, rec.Body)
		}
		up := decode[uploadJSON](t, rec)
		if want := inPlaceID(u, `"v1"`, len(data)); up.ID != want || up.Name != name || up.Source != u || up.Size != int64(len(data)) {
			t.Fatalf("POST /api/open = %+v, want id %s, name %s, source %s", up, want, name, u)
		}
		return up.ID
	}
	checkStatsMatchNumpy(t, s, via)
	checkDownloadsMatchNumpy(t, s, func(t *testing.T, name string) string {
		data, _ := os.ReadFile(filepath.Join(fixturesDir, name))
		return inPlaceID(host.srv.URL+"/models/"+name, `"v1"`, len(data))
	})
	// Nothing was copied into the store: no blob, only the records of what the ids name.
	filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(filepath.Base(p), ".stats") {
			t.Errorf("in-place opens stored %s", p)
		}
		return nil
	})
	page := do(s, http.MethodGet, "/c/"+inPlaceID(host.srv.URL+"/models/state_dict.pt", `"v1"`, len(host.files["state_dict.pt"])), nil)
	if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), `data-testid="source"`) {
		t.Errorf("the page of an in-place checkpoint = %d, without its source", page.Code)
	}
	home := do(s, http.MethodGet, "/", nil).Body.String()
	if !strings.Contains(home, `data-testid="open-url-form"`) {
		t.Error("the home page offers no form to open a URL")
	}
	// The form: a redirect to the checkpoint.
	form := url.Values{"url": {host.srv.URL + "/models/state_dict.pt"}}
	rec := do(s, http.MethodPost, "/open", strings.NewReader(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/c/") {
		t.Errorf("POST /open = %d Location %q, want 303 to the checkpoint", rec.Code, rec.Header().Get("Location"))
	}
}

// Only URLs under the operator's prefixes open, whatever their spelling; a URL that changes
// is told, never read as a mix of versions; a server without Range is refused.
func TestOpenURLRefusals(t *testing.T) {
	host := newFileHost(t)
	data, _ := os.ReadFile(filepath.Join(fixturesDir, "state_dict.pt"))
	u := host.put("state_dict.pt", data)
	host.put("../secret.pt", data)
	s := inPlaceServer(t, Config{}, nil, host.srv.URL+"/models/")

	for _, tc := range []struct {
		url    string
		status int
		says   string
	}{
		{host.srv.URL + "/other/state_dict.pt", http.StatusForbidden, "-open-urls"},
		{host.srv.URL + "/models/../other/x.pt", http.StatusForbidden, "-open-urls"},
		{host.srv.URL + "/models%2f..%2fother", http.StatusForbidden, "-open-urls"},
		{strings.Replace(host.srv.URL, "http://", "http://user:pw@", 1) + "/models/state_dict.pt", http.StatusUnprocessableEntity, "user info"},
		{"file:///etc/passwd", http.StatusUnprocessableEntity, "want an s3://"},
		{host.srv.URL + "/models/missing.pt", http.StatusUnprocessableEntity, "404"},
		{"", http.StatusBadRequest, "no URL"},
	} {
		rec := openJSON(t, s, tc.url)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.says) {
			t.Errorf("open %q = %d %.200s, want %d saying %q", tc.url, rec.Code, rec.Body, tc.status, tc.says)
		}
	}
	off := inPlaceServer(t, Config{}, nil)
	if rec := openJSON(t, off, u); rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "-open-urls") {
		t.Errorf("open on a server without -open-urls = %d %.200s, want 403 naming the flag", rec.Code, rec.Body)
	}
	tok := inPlaceServer(t, Config{UploadToken: "sesame"}, nil, host.srv.URL+"/models/")
	if rec := openJSON(t, tok, u); rec.Code != http.StatusUnauthorized {
		t.Errorf("open without the upload token = %d, want 401", rec.Code)
	}
	if rec := openJSON(t, tok, u, "Authorization", "Bearer sesame"); rec.Code != http.StatusCreated {
		t.Errorf("open with the upload token = %d %.200s, want 201", rec.Code, rec.Body)
	}

	rec := openJSON(t, s, u)
	if rec.Code != http.StatusCreated {
		t.Fatalf("open = %d %.200s", rec.Code, rec.Body)
	}
	id := decode[uploadJSON](t, rec).ID
	changed := append([]byte(nil), data...)
	changed[len(changed)/2] ^= 1
	host.put("state_dict.pt", changed) // version 2
	s.cache.close()
	page := do(s, http.MethodGet, "/api/checkpoints/"+id, nil)
	if page.Code != http.StatusGone || !strings.Contains(page.Body.String(), "has changed") {
		t.Errorf("GET a link to a version that changed = %d %.200s, want 410 saying it changed", page.Code, page.Body)
	}
	if rec := openJSON(t, s, u); rec.Code != http.StatusCreated || decode[uploadJSON](t, rec).ID == id {
		t.Errorf("opening the new version = %d, want 201 with a new id", rec.Code)
	}

	host.noRange = true
	if rec := openJSON(t, s, u); rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), "Range") {
		t.Errorf("open on a server without Range = %d %.200s, want 422 saying so", rec.Code, rec.Body)
	}
}

// An s3:// object opens in place on one replica and its link opens on another: the record
// of what the id names lives in the bucket.
func TestOpenS3InPlace(t *testing.T) {
	srv := s3test.Start(t, "ckv", "models")
	data, _ := os.ReadFile(filepath.Join(fixturesDir, "state_dict.pt"))
	srv.Put(t, "models", "team/state_dict.pt", data)
	a := inPlaceServer(t, Config{}, s3Store(t, srv, 0), "s3://models/team/")
	b := inPlaceServer(t, Config{}, s3Store(t, srv, 0), "s3://models/team/")
	rec := openJSON(t, a, "s3://models/team/state_dict.pt")
	if rec.Code != http.StatusCreated {
		t.Fatalf("open s3:// = %d %.300s", rec.Code, rec.Body)
	}
	id := decode[uploadJSON](t, rec).ID
	if rec := do(b, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
		t.Fatalf("replica b GET /c/%s = %d %.200s", id, rec.Code, rec.Body)
	}
	checkStatsMatchNumpy(t, b, func(t *testing.T, name string) string {
		d, _ := os.ReadFile(filepath.Join(fixturesDir, name))
		srv.Put(t, "models", "team/"+name, d)
		rec := openJSON(t, b, "s3://models/team/"+name)
		if rec.Code != http.StatusCreated {
			t.Fatalf("open s3:// %s = %d %.300s", name, rec.Code, rec.Body)
		}
		return decode[uploadJSON](t, rec).ID
	})
	if rec := openJSON(t, a, "s3://other/x.pt"); rec.Code != http.StatusForbidden {
		t.Errorf("open outside the prefixes = %d, want 403", rec.Code)
	}
}
