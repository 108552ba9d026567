package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/tensor"
)

// testMaxUpload keeps the size limit small enough to test.
const testMaxUpload = 1 << 16

// The fake loader's files: a checkpoint it opens, and files it rejects.
var (
	fakeCheckpoint = []byte("FAKE checkpoint")
	notCheckpoint  = []byte("just some text, not a checkpoint")
	evilBroken     = []byte("EVIL broken pickle that would run posix.system")
)

// fakeLoad stands in for loader.Open so the server's own behaviour is tested whatever
// state the loader is in. Files starting with FAKE open as fakeTree; EVIL is a broken file
// with a finding; PANIC panics; anything else is not a checkpoint.
func fakeLoad(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
	head := make([]byte, min(size, 5))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("FAKE")):
		return fakeTree(), nil
	case bytes.HasPrefix(head, []byte("EVIL")):
		return nil, &loader.Error{Msg: "truncated pickle", Offset: 40, Findings: []ckpt.Finding{{
			Severity: ckpt.SeverityDanger, Global: "posix.system", Path: "/cmd", Detail: "posix.system('rm -rf ~')",
		}}}
	case bytes.HasPrefix(head, []byte("PANIC")):
		panic("loader bug")
	}
	return nil, &loader.Error{Msg: "not a pickle or checkpoint", Offset: 0}
}

// fakeItems is the length of the list in fakeTree: more than one page.
const fakeItems = 450

// fakeTree is a small checkpoint with one of everything the API distinguishes: tied
// tensors, a key with a slash, a long list, a dangerous object and a ref.
func fakeTree() *ckpt.Checkpoint {
	st := &ckpt.Storage{Key: "0", DType: "float32", Location: "cpu", Size: 24, Users: []string{"/weight", "/tied"}}
	tensor := func(seg string) *ckpt.Node {
		return &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: seg, Seg: seg,
			Tensor: &ckpt.Tensor{DType: "float32", Shape: []int64{2, 3}, Strides: []int64{3, 1}, Storage: st}}
	}
	items := &ckpt.Node{Kind: ckpt.KindList, Type: "list", Key: "items", Seg: "items", Len: fakeItems}
	for i := range fakeItems {
		s := strconv.Itoa(i)
		items.Children = append(items.Children, &ckpt.Node{Kind: ckpt.KindInt, Type: "int", Int: s, Key: s, Seg: s})
	}
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict", Children: []*ckpt.Node{
		tensor("weight"),
		tensor("tied"),
		{Kind: ckpt.KindStr, Type: "str", Key: "a/b", Seg: "a/b", Str: "hello", Len: 5},
		{Kind: ckpt.KindStr, Type: "str", Key: "sp ace?%", Seg: "sp ace?%", Str: "odd key", Len: 7},
		items,
		{Kind: ckpt.KindObject, Type: "posix.system", Key: "cmd", Seg: "cmd", Global: "posix.system", Danger: true},
		{Kind: ckpt.KindRef, Key: "self", Seg: "self", Target: "/weight"},
	}}
	root.Len = int64(len(root.Children))
	ckpt.Link(root)
	return &ckpt.Checkpoint{
		Format:       "fake",
		Root:         root,
		Tensors:      2,
		Parameters:   12,
		BytesByDType: map[string]int64{"float32": 48},
		Storages:     []*ckpt.Storage{st},
		Findings:     []ckpt.Finding{{Severity: ckpt.SeverityDanger, Global: "posix.system", Path: "/cmd", Detail: "posix.system()"}},
		Notes:        []string{"a note"},
	}
}

var testStatic = fstest.MapFS{"app.css": {Data: []byte("body{}")}}

// newTestServer builds a server on the data dir with the fake loader.
func newTestServer(t *testing.T, dir string) *Server {
	t.Helper()
	st, err := store.New(dir)
	if err != nil {
		t.Fatalf("store.New: %v", err)
	}
	s := New(Config{MaxUpload: testMaxUpload}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	s.load = fakeLoad
	t.Cleanup(s.Close)
	return s
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// do sends a request to s and returns the recorded response.
func do(s http.Handler, method, target string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// multipartBody encodes one file in the field named field.
func multipartBody(t *testing.T, field, name string, data []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.WriteField("note", "a field before the file")
	fw, err := w.CreateFormFile(field, name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	w.Close()
	return &buf, w.FormDataContentType()
}

// upload posts data to /api/checkpoints as a multipart file and returns the response.
func upload(t *testing.T, s http.Handler, name string, data []byte) *httptest.ResponseRecorder {
	t.Helper()
	body, ct := multipartBody(t, "file", name, data)
	return do(s, http.MethodPost, "/api/checkpoints", body, "Content-Type", ct)
}

func decode[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
	return v
}

func TestUploadAPI(t *testing.T) {
	big := bytes.Repeat([]byte("x"), testMaxUpload+1)
	for _, tc := range []struct {
		name       string
		target     string
		body       func(t *testing.T) (io.Reader, string)
		chunked    bool
		wantStatus int
		wantName   string
		wantError  string // part of the JSON error
	}{
		{
			name:   "multipart",
			target: "/api/checkpoints",
			body: func(t *testing.T) (io.Reader, string) {
				return multipartBody(t, "file", "dir/model.pt", fakeCheckpoint)
			},
			wantStatus: http.StatusCreated, wantName: "model.pt",
		},
		{
			name:   "raw body with name",
			target: "/api/checkpoints?name=weights.bin",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(fakeCheckpoint), "application/octet-stream"
			},
			wantStatus: http.StatusCreated, wantName: "weights.bin",
		},
		{
			name:   "raw body without name",
			target: "/api/checkpoints",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(fakeCheckpoint), ""
			},
			wantStatus: http.StatusCreated, wantName: "upload",
		},
		{
			name:   "multipart without a file field",
			target: "/api/checkpoints",
			body: func(t *testing.T) (io.Reader, string) {
				return multipartBody(t, "other", "model.pt", fakeCheckpoint)
			},
			wantStatus: http.StatusBadRequest, wantError: `multipart field "file"`,
		},
		{
			name:   "too many fields before the file",
			target: "/api/checkpoints",
			body: func(t *testing.T) (io.Reader, string) {
				var buf bytes.Buffer
				w := multipart.NewWriter(&buf)
				for i := range maxFormFields + 1 {
					w.WriteField(fmt.Sprint("f", i), "x")
				}
				fw, _ := w.CreateFormFile("file", "model.pt")
				fw.Write(fakeCheckpoint)
				w.Close()
				return &buf, w.FormDataContentType()
			},
			wantStatus: http.StatusBadRequest, wantError: "too many form fields",
		},
		{
			name:   "broken multipart",
			target: "/api/checkpoints",
			body: func(*testing.T) (io.Reader, string) {
				return strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc"), "multipart/form-data; boundary=b"
			},
			wantStatus: http.StatusBadRequest, wantError: "reading the upload",
		},
		{
			name:   "multipart over the limit",
			target: "/api/checkpoints",
			body: func(t *testing.T) (io.Reader, string) {
				return multipartBody(t, "file", "big.pt", big)
			},
			wantStatus: http.StatusRequestEntityTooLarge, wantError: "file too large",
		},
		{
			name:   "raw over the limit",
			target: "/api/checkpoints?name=big.pt",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(big), "application/octet-stream"
			},
			wantStatus: http.StatusRequestEntityTooLarge, wantError: "file too large",
		},
		{
			name:   "raw over the limit without a length",
			target: "/api/checkpoints?name=big.pt",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(big), "application/octet-stream"
			},
			chunked:    true,
			wantStatus: http.StatusRequestEntityTooLarge, wantError: "file too large",
		},
		{
			name:   "not a checkpoint",
			target: "/api/checkpoints?name=notes.txt",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(notCheckpoint), "text/plain"
			},
			wantStatus: http.StatusUnprocessableEntity, wantError: "not a pickle",
		},
		{
			name:   "empty file",
			target: "/api/checkpoints?name=empty.pt",
			body: func(*testing.T) (io.Reader, string) {
				return bytes.NewReader(nil), "application/octet-stream"
			},
			wantStatus: http.StatusUnprocessableEntity, wantError: "not a pickle or checkpoint (at byte 0)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, t.TempDir())
			body, ct := tc.body(t)
			req := httptest.NewRequest(http.MethodPost, tc.target, body)
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			if tc.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("POST %s = %d %s, want %d", tc.target, rec.Code, rec.Body, tc.wantStatus)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("POST %s Content-Type = %q, want JSON", tc.target, ct)
			}
			if tc.wantError != "" {
				got := decode[map[string]any](t, rec)
				if msg, _ := got["error"].(string); !strings.Contains(msg, tc.wantError) {
					t.Errorf("POST %s error = %q, want it to mention %q", tc.target, msg, tc.wantError)
				}
				return
			}
			got := decode[uploadJSON](t, rec)
			id := sha(fakeCheckpoint)
			want := uploadJSON{ID: id, Name: tc.wantName, Size: int64(len(fakeCheckpoint)), Format: "fake", URL: "/c/" + id}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("POST %s (-want +got):\n%s", tc.target, diff)
			}
			if loc := rec.Header().Get("Location"); loc != "/api/checkpoints/"+id {
				t.Errorf("POST %s Location = %q, want /api/checkpoints/%s", tc.target, loc, id)
			}
		})
	}
}

func TestUploadTooLargeStoresNothing(t *testing.T) {
	dir := t.TempDir()
	s := newTestServer(t, dir)
	rec := upload(t, s, "big.pt", bytes.Repeat([]byte("y"), testMaxUpload+1))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload over the limit = %d, want 413", rec.Code)
	}
	if n := countFiles(t, dir); n != 0 {
		t.Errorf("after a rejected upload the data dir holds %d files, want 0", n)
	}
}

// A file the loader rejects answers 422 with the loader's findings: a broken but malicious
// file still says what it would run.
func TestUploadBrokenMaliciousFile(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	rec := upload(t, s, "evil.pkl", evilBroken)
	if rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("upload of a broken file = %d %s, want 422", rec.Code, rec.Body)
	}
	got := decode[errorJSON](t, rec)
	want := errorJSON{
		Error:    "truncated pickle (at byte 40)",
		Findings: []findingJSON{{Severity: "danger", Global: "posix.system", Path: "/cmd", Detail: "posix.system('rm -rf ~')"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upload of a broken file (-want +got):\n%s", diff)
	}
	// The same answer later, from the page and the API.
	id := sha(evilBroken)
	if rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil); rec.Code != http.StatusUnprocessableEntity {
		t.Errorf("GET /api/checkpoints/<broken> = %d, want 422", rec.Code)
	}
	rec = do(s, http.MethodGet, "/c/"+id, nil)
	if rec.Code != http.StatusUnprocessableEntity || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Errorf("GET /c/<broken> = %d %s, want a 422 HTML page", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !strings.Contains(rec.Body.String(), "posix.system") {
		t.Errorf("the error page of a broken malicious file does not name its finding posix.system")
	}
	// A rejected file with no findings still has the findings field.
	rec = upload(t, s, "notes.txt", notCheckpoint)
	if got := decode[map[string]any](t, rec); got["findings"] == nil {
		t.Errorf("422 body %s has no findings list", rec.Body)
	}
}

func TestUploadForm(t *testing.T) {
	for _, tc := range []struct {
		name         string
		data         []byte
		field        string
		contentType  string // overrides the multipart type
		wantStatus   int
		wantLocation string
		wantBody     string
	}{
		{name: "checkpoint", data: fakeCheckpoint, field: "file", wantStatus: http.StatusSeeOther, wantLocation: "/c/" + sha(fakeCheckpoint)},
		{name: "not a checkpoint", data: notCheckpoint, field: "file", wantStatus: http.StatusUnprocessableEntity, wantBody: "not a pickle"},
		{name: "too large", data: bytes.Repeat([]byte("z"), testMaxUpload+1), field: "file", wantStatus: http.StatusRequestEntityTooLarge, wantBody: "file too large"},
		{name: "no file", data: fakeCheckpoint, field: "other", wantStatus: http.StatusBadRequest, wantBody: "no file"},
		{name: "not multipart", data: fakeCheckpoint, field: "file", contentType: "application/x-www-form-urlencoded", wantStatus: http.StatusBadRequest, wantBody: "multipart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, t.TempDir())
			body, ct := multipartBody(t, tc.field, "model.pt", tc.data)
			if tc.contentType != "" {
				ct = tc.contentType
			}
			rec := do(s, http.MethodPost, "/upload", body, "Content-Type", ct, "Accept", "text/html")
			if rec.Code != tc.wantStatus {
				t.Fatalf("POST /upload = %d %s, want %d", rec.Code, rec.Body, tc.wantStatus)
			}
			if loc := rec.Header().Get("Location"); loc != tc.wantLocation {
				t.Errorf("POST /upload Location = %q, want %q", loc, tc.wantLocation)
			}
			if tc.wantBody != "" {
				if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
					t.Errorf("POST /upload Content-Type = %q, want HTML", ct)
				}
				if !strings.Contains(rec.Body.String(), tc.wantBody) {
					t.Errorf("POST /upload page does not say %q:\n%s", tc.wantBody, rec.Body)
				}
			}
		})
	}
}

func TestRoutesStatus(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	if rec := upload(t, s, "model.pt", fakeCheckpoint); rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %s", rec.Code, rec.Body)
	}
	id := sha(fakeCheckpoint)
	unknown := strings.Repeat("0", 64)
	for _, tc := range []struct {
		target     string
		wantStatus int
		wantType   string // Content-Type prefix
	}{
		{"/", http.StatusOK, "text/html"},
		{"/c/" + id, http.StatusOK, "text/html"},
		{"/c/" + id + "?view=raw", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/", http.StatusOK, "text/html"},
		{"/c/" + id + "/n", http.StatusMovedPermanently, ""},
		{"/c/" + id + "/n/weight", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/a~1b", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/sp%20ace%3F%25", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/items", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/items?offset=400", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/items/449", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/items/450", http.StatusNotFound, "text/html"},
		{"/c/" + id + "/n/items?offset=-1", http.StatusBadRequest, "text/html"},
		{"/c/" + id + "/n/nope", http.StatusNotFound, "text/html"},
		{"/c/" + id + "/fragment/children?path=/items&offset=200", http.StatusOK, "text/html"},
		{"/c/" + id + "/fragment/children?path=", http.StatusOK, "text/html"},
		{"/c/" + id + "/fragment/children?path=/nope", http.StatusNotFound, "text/html"},
		{"/c/" + id + "/fragment/children?path=/items&offset=x", http.StatusBadRequest, "text/html"},
		{"/c/" + unknown, http.StatusNotFound, "text/html"},
		{"/c/" + unknown + "/n/weight", http.StatusNotFound, "text/html"},
		{"/c/not-an-id", http.StatusBadRequest, "text/html"},
		{"/c/" + strings.ToUpper(id), http.StatusBadRequest, "text/html"},
		{"/c/..%2f..%2fetc%2fpasswd", http.StatusBadRequest, "text/html"},
		{"/api/checkpoints/" + id, http.StatusOK, "application/json"},
		{"/api/checkpoints/" + unknown, http.StatusNotFound, "application/json"},
		{"/api/checkpoints/" + id[:63], http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + id + "/node", http.StatusOK, "application/json"},
		{"/api/checkpoints/" + id + "/node?path=/nope", http.StatusNotFound, "application/json"},
		{"/api/checkpoints/" + id + "/node?path=/items&limit=0", http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + unknown + "/node?path=", http.StatusNotFound, "application/json"},
		{"/api/checkpoints/" + id + "/stats?path=/weight", http.StatusUnprocessableEntity, "application/json"},
		{"/api/checkpoints/" + id + "/stats?path=/a~1b", http.StatusUnprocessableEntity, "application/json"},
		{"/api/checkpoints/" + id + "/stats?path=/nope", http.StatusNotFound, "application/json"},
		{"/api/checkpoints/" + unknown + "/stats?path=/weight", http.StatusNotFound, "application/json"},
		{"/api/checkpoints/" + id + "/stats/all", http.StatusOK, "application/json"},
		{"/api/checkpoints/" + id + "/stats/export?format=csv", http.StatusOK, "text/csv"},
		{"/api/checkpoints/" + id + "/stats/export?format=json", http.StatusOK, "application/json"},
		{"/api/checkpoints/" + id + "/stats/export?format=xml", http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/a~1b&format=json", http.StatusOK, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/a~1b&format=npy", http.StatusUnprocessableEntity, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/weight&format=raw", http.StatusUnprocessableEntity, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/weight&format=zip", http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/weight&format=json&limit=0", http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/weight&format=npy&as=bits", http.StatusBadRequest, "application/json"},
		{"/api/checkpoints/" + id + "/download?path=/nope&format=json", http.StatusNotFound, "application/json"},
		{"/c/" + id + "/fragment/stats?path=/weight", http.StatusUnprocessableEntity, "text/html"},
		{"/c/" + id + "/fragment/stats?path=/nope", http.StatusNotFound, "text/html"},
		{"/c/" + id + "/fragment/stats-all", http.StatusOK, "text/html"},
		{"/c/" + id + "/n/weight?row=x", http.StatusBadRequest, "text/html"},
		{"/api/nothing", http.StatusNotFound, "application/json"},
		{"/nothing", http.StatusNotFound, "text/html"},
		{"/static/app.css", http.StatusOK, "text/css"},
		{"/static/missing.js", http.StatusNotFound, "text/html"},
		{"/static/../go.mod", http.StatusNotFound, "text/html"},
	} {
		rec := do(s, http.MethodGet, tc.target, nil)
		if rec.Code != tc.wantStatus {
			t.Errorf("GET %s = %d, want %d; body: %.300s", tc.target, rec.Code, tc.wantStatus, rec.Body)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
			t.Errorf("GET %s Content-Type = %q, want %q", tc.target, ct, tc.wantType)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	want := map[string]string{
		"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	}
	for _, tc := range []struct{ method, target string }{
		{http.MethodGet, "/"},
		{http.MethodGet, "/static/app.css"},
		{http.MethodGet, "/nothing"},
		{http.MethodGet, "/c/bad"},
		{http.MethodGet, "/api/checkpoints/" + strings.Repeat("0", 64)},
		{http.MethodPost, "/api/checkpoints?name=x"},
		{http.MethodDelete, "/"},
	} {
		rec := do(s, tc.method, tc.target, strings.NewReader("x"))
		for k, v := range want {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s %s (status %d): %s = %q, want %q", tc.method, tc.target, rec.Code, k, got, v)
			}
		}
	}
}

func TestStaticCaching(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	for _, tc := range []struct{ target, want string }{
		{"/static/app.css", "public, max-age=86400"},
		{"/static/app.css?v=3f2a", "public, max-age=31536000, immutable"},
	} {
		rec := do(s, http.MethodGet, tc.target, nil)
		if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != tc.want {
			t.Errorf("GET %s = %d, Cache-Control %q, want 200 and %q", tc.target, rec.Code, rec.Header().Get("Cache-Control"), tc.want)
		}
	}
}

func TestAPICheckpoint(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	upload(t, s, "model.pt", fakeCheckpoint)
	id := sha(fakeCheckpoint)
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/checkpoints/%s = %d %s", id, rec.Code, rec.Body)
	}
	want := checkpointJSON{
		ID: id, Name: "model.pt", Size: int64(len(fakeCheckpoint)), Format: "fake",
		Tensors: 2, Parameters: 12, BytesByDType: map[string]int64{"float32": 48},
		Findings: []findingJSON{{Severity: "danger", Global: "posix.system", Path: "/cmd", Detail: "posix.system()"}},
		Notes:    []string{"a note"},
	}
	if diff := cmp.Diff(want, decode[checkpointJSON](t, rec)); diff != "" {
		t.Errorf("GET /api/checkpoints/%s (-want +got):\n%s", id, diff)
	}
	// The field names are the contract.
	var raw map[string]json.RawMessage
	json.Unmarshal(rec.Body.Bytes(), &raw)
	for _, k := range []string{"id", "name", "size", "format", "tensors", "parameters", "bytes_by_dtype", "findings", "notes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("GET /api/checkpoints/%s has no %q: %s", id, k, rec.Body)
		}
	}
}

func TestAPINode(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	upload(t, s, "model.pt", fakeCheckpoint)
	id := sha(fakeCheckpoint)
	api := "/api/checkpoints/" + id + "/node"
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		query string
		want  map[string]any // a subset of the answer
	}{
		{"", map[string]any{"path": "", "kind": "dict", "type": "collections.OrderedDict", "summary": "OrderedDict (7 items)", "len": 7.0, "next": nil}},
		{"?path=/weight", map[string]any{
			"path": "/weight", "key": "weight", "kind": "tensor", "summary": "float32[2, 3]", "dtype": "float32",
			"shape": []any{2.0, 3.0}, "strides": []any{3.0, 1.0}, "storage_offset": 0.0, "numel": 6.0, "nbytes": 24.0,
			"storage":  map[string]any{"key": "0", "location": "cpu", "shared_with": []any{"/tied"}},
			"children": []any{},
		}},
		{"?path=/tied", map[string]any{"storage": map[string]any{"key": "0", "location": "cpu", "shared_with": []any{"/weight"}}}},
		{"?path=/a~1b", map[string]any{"key": "a/b", "kind": "str", "summary": "'hello'", "len": 5.0}},
		{"?path=" + "/sp%20ace%3F%25", map[string]any{"key": "sp ace?%", "kind": "str"}},
		{"?path=/cmd", map[string]any{"kind": "object", "global": "posix.system", "danger": true}},
		{"?path=/self", map[string]any{"kind": "ref", "target": "/weight"}},
		{"?path=/items/7", map[string]any{"kind": "int", "summary": "7", "key": "7"}},
		{"?path=/items", map[string]any{"len": 450.0, "next": *str(api + "?limit=200&offset=200&path=%2Fitems")}},
		{"?path=/items&offset=400", map[string]any{"next": nil}},
		{"?path=/items&offset=10&limit=5", map[string]any{"next": *str(api + "?limit=5&offset=15&path=%2Fitems")}},
		{"?path=/items&offset=1000", map[string]any{"children": []any{}, "next": nil}},
	} {
		rec := do(s, http.MethodGet, api+tc.query, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("GET node%s = %d %s, want 200", tc.query, rec.Code, rec.Body)
			continue
		}
		got := decode[map[string]any](t, rec)
		for k, v := range tc.want {
			if diff := cmp.Diff(v, got[k]); diff != "" {
				t.Errorf("GET node%s: %q (-want +got):\n%s", tc.query, k, diff)
			}
		}
		for _, k := range []string{"path", "key", "kind", "type", "summary", "len", "children", "next"} {
			if _, ok := got[k]; !ok {
				t.Errorf("GET node%s has no %q", tc.query, k)
			}
		}
	}

	// Next URLs are written as they are, not with \u0026 for "&".
	if body := do(s, http.MethodGet, api+"?path=/items", nil).Body.String(); !strings.Contains(body, "&offset=200") {
		t.Errorf("GET node?path=/items: next is not a plain URL: %.300s", body)
	}

	// Paging walks every child exactly once.
	next, seen := api+"?path=/items&limit=100", 0
	for next != "" {
		got := decode[nodeJSON](t, do(s, http.MethodGet, next, nil))
		for _, c := range got.Children {
			if want := "/items/" + strconv.Itoa(seen); c.Path != want {
				t.Fatalf("paging: child %d has path %q, want %q", seen, c.Path, want)
			}
			seen++
		}
		next = ""
		if got.Next != nil {
			next = *got.Next
		}
	}
	if seen != fakeItems {
		t.Errorf("paging through /items saw %d children, want %d", seen, fakeItems)
	}

	// The root's children are listed with their own summaries.
	got := decode[nodeJSON](t, do(s, http.MethodGet, api+"?path=", nil))
	wantKids := []childJSON{
		{Key: "weight", Path: "/weight", Kind: "tensor", Type: "torch.Tensor", Summary: "float32[2, 3]"},
		{Key: "tied", Path: "/tied", Kind: "tensor", Type: "torch.Tensor", Summary: "float32[2, 3]"},
		{Key: "a/b", Path: "/a~1b", Kind: "str", Type: "str", Summary: "'hello'"},
		{Key: "sp ace?%", Path: "/sp ace?%", Kind: "str", Type: "str", Summary: "'odd key'"},
		{Key: "items", Path: "/items", Kind: "list", Type: "list", Summary: "list (450 items)"},
		{Key: "cmd", Path: "/cmd", Kind: "object", Type: "posix.system", Summary: "posix.system"},
		{Key: "self", Path: "/self", Kind: "ref", Summary: "ref → /weight"},
	}
	if diff := cmp.Diff(wantKids, got.Children); diff != "" {
		t.Errorf("root children (-want +got):\n%s", diff)
	}
}

// An upload is still there for a new server on the same data directory.
func TestRestartKeepsUploads(t *testing.T) {
	dir := t.TempDir()
	s1 := newTestServer(t, dir)
	if rec := upload(t, s1, "model.pt", fakeCheckpoint); rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %s", rec.Code, rec.Body)
	}
	s1.Close()

	s2 := newTestServer(t, dir)
	id := sha(fakeCheckpoint)
	rec := do(s2, http.MethodGet, "/api/checkpoints/"+id, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("after a restart GET /api/checkpoints/%s = %d %s, want 200", id, rec.Code, rec.Body)
	}
	if got := decode[checkpointJSON](t, rec); got.Name != "model.pt" || got.Size != int64(len(fakeCheckpoint)) {
		t.Errorf("after a restart the checkpoint is %+v, want name model.pt size %d", got, len(fakeCheckpoint))
	}
	if rec := do(s2, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
		t.Errorf("after a restart GET /c/%s = %d, want 200", id, rec.Code)
	}
}

func TestConcurrentIdenticalUploads(t *testing.T) {
	dir := t.TempDir()
	s := newTestServer(t, dir)
	const n = 10
	codes := make([]int, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		body, ct := multipartBody(t, "file", fmt.Sprintf("copy%d.pt", i), fakeCheckpoint)
		wg.Go(func() {
			rec := do(s, http.MethodPost, "/api/checkpoints", body, "Content-Type", ct)
			codes[i] = rec.Code
			var got uploadJSON
			json.Unmarshal(rec.Body.Bytes(), &got)
			ids[i] = got.ID
		})
	}
	wg.Wait()
	for i := range n {
		if codes[i] != http.StatusCreated || ids[i] != sha(fakeCheckpoint) {
			t.Errorf("upload #%d = %d id %q, want 201 id %s", i, codes[i], ids[i], sha(fakeCheckpoint))
		}
	}
	// One blob and its metadata, no temporary files left.
	if got := countFiles(t, dir); got != 2 {
		t.Errorf("after %d identical uploads the data dir holds %d files, want 2 (blob and metadata)", n, got)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// A panicking loader answers 500 and the server goes on serving.
func TestLoaderPanic(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	rec := do(s, http.MethodPost, "/api/checkpoints?name=p.pkl", strings.NewReader("PANIC"))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("upload that panics the loader = %d %s, want 500", rec.Code, rec.Body)
	}
	if got := decode[errorJSON](t, rec); got.Error != "Internal Server Error" {
		t.Errorf("500 body says %q, want no details", got.Error)
	}
	if rec := upload(t, s, "model.pt", fakeCheckpoint); rec.Code != http.StatusCreated {
		t.Errorf("upload after a panic = %d, want 201", rec.Code)
	}
}

func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
		wantMsg    string
	}{
		{"loader error", &loader.Error{Msg: "bad", Offset: -1}, 422, "bad"},
		{"wrapped loader error", fmt.Errorf("open x: %w", &loader.Error{Msg: "bad", Offset: 3}), 422, "open x: bad (at byte 3)"},
		{"key that reads like a prefix", &loader.Error{Msg: `tensor /loader: b: view past its storage`, Offset: -1}, 422, `tensor /loader: b: view past its storage`},
		{"unsupported dtype", fmt.Errorf("statistics of /x: %w", tensor.ErrUnsupported), 422, "statistics of /x: values of this dtype cannot be decoded"},
		{"unknown id", store.ErrNotFound, 404, "no checkpoint with that id"},
		{"unknown node", fmt.Errorf(`%w: "/x"`, ckpt.ErrNotFound), 404, `this checkpoint has no node at that path: "/x"`},
		{"invalid id", store.ErrInvalidID, 400, "invalid checkpoint id: want 64 lowercase hex digits"},
		{"too large", store.ErrTooLarge, 413, "file too large"},
		{"too large with limit", &tooLargeError{limit: 20 << 30}, 413, "file too large: the limit is 21.5 GB"},
		{"body limit", &http.MaxBytesError{Limit: 5}, 413, "http: request body too large"},
		{"bad request", badRequestf("offset must be a number"), 400, "offset must be a number"},
		{"body read", &bodyError{io.ErrUnexpectedEOF}, 400, "reading the upload: unexpected EOF"},
		{"cancelled", fmt.Errorf("store: write x: %w", context.Canceled), 400, "request cancelled"},
		{"client gone", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, 400, "the connection was closed or stalled"},
		{"client reset", fmt.Errorf("render: %w", syscall.ECONNRESET), 400, "the connection was closed or stalled"},
		{"client stalled", &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}, 400, "the connection was closed or stalled"},
		{"echo 404", echo.ErrNotFound, 404, "Not Found"},
		{"other", io.ErrShortWrite, 500, "Internal Server Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := classify(tc.err)
			if status != tc.wantStatus || msg != tc.wantMsg {
				t.Errorf("classify(%v) = %d %q, want %d %q", tc.err, status, msg, tc.wantStatus, tc.wantMsg)
			}
		})
	}
}

func TestErrorHandlerFormats(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	for _, tc := range []struct {
		target, accept, wantType string
	}{
		{"/api/checkpoints/" + strings.Repeat("0", 64), "", "application/json"},
		{"/api/checkpoints/" + strings.Repeat("0", 64), "text/html,application/xhtml+xml", "text/html"},
		{"/c/" + strings.Repeat("0", 64), "", "text/html"},
		{"/c/" + strings.Repeat("0", 64), "application/json", "text/html"},
	} {
		rec := do(s, http.MethodGet, tc.target, nil, "Accept", tc.accept)
		if rec.Code != http.StatusNotFound || !strings.HasPrefix(rec.Header().Get("Content-Type"), tc.wantType) {
			t.Errorf("GET %s (Accept %q) = %d %s, want 404 %s", tc.target, tc.accept, rec.Code, rec.Header().Get("Content-Type"), tc.wantType)
		}
	}
	rec := do(s, http.MethodHead, "/c/"+strings.Repeat("0", 64), nil)
	if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("HEAD of an unknown checkpoint = %d, want 404 or 405", rec.Code)
	}
}

func TestHomeListsExamples(t *testing.T) {
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id := sha(fakeCheckpoint)
	examples := []store.Example{{Meta: store.Meta{ID: id, Name: "tiny.pt", Size: 15}, File: "tiny.pt", Description: "a tiny state dict"}}
	s := New(Config{}, Deps{Store: st, Examples: examples, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	rec := do(s, http.MethodGet, "/", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d", rec.Code)
	}
	for _, want := range []string{"tiny.pt", "a tiny state dict", `href="/c/` + id + `"`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET / does not contain %q", want)
		}
	}
}

// The same bytes uploaded under another name: each upload's link shows the name it was
// made with, and the first link keeps the first name.
func TestUploadNamesPerUpload(t *testing.T) {
	s := realServer(t, Config{})
	data, err := os.ReadFile(filepath.Join(fixturesDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	first := decode[uploadJSON](t, upload(t, s, "a.pt", data))
	second := decode[uploadJSON](t, upload(t, s, "b.pt", data))
	if first.ID != second.ID || first.Name != "a.pt" || second.Name != "b.pt" {
		t.Fatalf("uploads = %+v, %+v; want one id, each with its own name", first, second)
	}
	title := regexp.MustCompile(`data-testid="file-name">([^<]*)<`)
	for url, want := range map[string]string{first.URL: "a.pt", second.URL: "b.pt"} {
		m := title.FindStringSubmatch(do(s, http.MethodGet, url, nil).Body.String())
		if m == nil || m[1] != want {
			t.Errorf("GET %s shows %v, want %s", url, m, want)
		}
	}
	rec := do(s, http.MethodGet, "/c/"+first.ID+"?name=c.pt", nil)
	if m := title.FindStringSubmatch(rec.Body.String()); m == nil || m[1] != "a.pt" {
		t.Errorf("a name never uploaded (?name=c.pt) shows %v, want the first name", m)
	}
	rec = do(s, http.MethodGet, downloadURL(first.ID, "/wte.weight", "npy")+"&name=b.pt", nil)
	if cd := rec.Header().Get("Content-Disposition"); !strings.Contains(cd, `filename="b__wte.weight.npy"`) {
		t.Errorf("download under the second name: %q", cd)
	}
}
