package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/store"
)

const testToken = "s3cret-token"

// tokenServer is a test server (fake loader) that takes uploads only with testToken.
func tokenServer(t *testing.T, dir string) *Server {
	t.Helper()
	st, err := store.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{MaxUpload: testMaxUpload, UploadToken: testToken}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	s.load = fakeLoad
	t.Cleanup(s.Close)
	return s
}

// formBody is a multipart body of the given fields in order; a field named "file" is the
// file.
func formBody(t *testing.T, fields ...string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "file" {
			fw, err := w.CreateFormFile("file", "model.pt")
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(fw, fields[i+1])
			continue
		}
		w.WriteField(fields[i], fields[i+1])
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func TestUploadToken(t *testing.T) {
	fake := string(fakeCheckpoint)
	for _, tc := range []struct {
		name       string
		target     string
		header     []string
		fields     []string // multipart fields in order; raw body if empty
		wantStatus int
	}{
		{name: "raw without token", target: "/api/checkpoints?name=m.pt", wantStatus: 401},
		{name: "raw with a wrong token", target: "/api/checkpoints?name=m.pt", header: []string{"Authorization", "Bearer nope"}, wantStatus: 401},
		{name: "raw with a longer token", target: "/api/checkpoints?name=m.pt", header: []string{"Authorization", "Bearer " + testToken + "x"}, wantStatus: 401},
		{name: "raw with basic auth", target: "/api/checkpoints?name=m.pt", header: []string{"Authorization", "Basic " + testToken}, wantStatus: 401},
		{name: "raw with the token", target: "/api/checkpoints?name=m.pt", header: []string{"Authorization", "Bearer " + testToken}, wantStatus: 201},
		{name: "scheme in any case", target: "/api/checkpoints?name=m.pt", header: []string{"Authorization", "bearer " + testToken}, wantStatus: 201},
		{name: "multipart without token", target: "/api/checkpoints", fields: []string{"file", fake}, wantStatus: 401},
		{name: "multipart token field first", target: "/api/checkpoints", fields: []string{"token", testToken, "file", fake}, wantStatus: 201},
		{name: "multipart wrong token field", target: "/api/checkpoints", fields: []string{"token", "nope", "file", fake}, wantStatus: 401},
		{name: "multipart token after the file", target: "/api/checkpoints", fields: []string{"file", fake, "token", testToken}, wantStatus: 401},
		{name: "multipart header token", target: "/api/checkpoints", header: []string{"Authorization", "Bearer " + testToken}, fields: []string{"file", fake}, wantStatus: 201},
		{name: "multipart wrong header, right field", target: "/api/checkpoints", header: []string{"Authorization", "Bearer nope"}, fields: []string{"token", testToken, "file", fake}, wantStatus: 401},
		{name: "form without token", target: "/upload", fields: []string{"file", fake}, wantStatus: 401},
		{name: "form with a wrong token", target: "/upload", fields: []string{"token", "nope", "file", fake}, wantStatus: 401},
		{name: "form with the token", target: "/upload", fields: []string{"token", testToken, "file", fake}, wantStatus: 303},
		{name: "form with a huge token", target: "/upload", fields: []string{"token", strings.Repeat("x", maxTokenField+1), "file", fake}, wantStatus: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := tokenServer(t, dir)
			var body io.Reader = strings.NewReader(fake)
			header := tc.header
			if tc.fields != nil {
				b, ct := formBody(t, tc.fields...)
				body, header = b, append([]string{"Content-Type", ct}, header...)
			}
			rec := do(s, http.MethodPost, tc.target, body, header...)
			if rec.Code != tc.wantStatus {
				t.Fatalf("POST %s = %d %.300s, want %d", tc.target, rec.Code, rec.Body, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusUnauthorized {
				return
			}
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("401 WWW-Authenticate = %q, want a Bearer challenge", got)
			}
			if !strings.Contains(rec.Body.String(), "upload token") {
				t.Errorf("401 body does not say an upload token is needed: %.300s", rec.Body)
			}
			ct := rec.Header().Get("Content-Type")
			if tc.target == "/upload" {
				if !strings.HasPrefix(ct, "text/html") || !strings.Contains(rec.Body.String(), `data-testid="token-input"`) {
					t.Errorf("401 to the form = %q, want the home page again with its token input", ct)
				}
			} else if !strings.HasPrefix(ct, "application/json") {
				t.Errorf("401 to the API has Content-Type %q, want JSON", ct)
			}
			if n := countFiles(t, dir); n != 0 {
				t.Errorf("after a refused upload the data dir holds %d files, want 0", n)
			}
		})
	}
}

// With a token, reading stays open (links are capabilities) and the home page asks for the
// token; without one the form has no token input.
func TestUploadTokenReading(t *testing.T) {
	s := tokenServer(t, t.TempDir())
	if rec := do(s, http.MethodPost, "/api/checkpoints?name=m.pt", bytes.NewReader(fakeCheckpoint), "Authorization", "Bearer "+testToken); rec.Code != http.StatusCreated {
		t.Fatalf("upload with the token = %d %s", rec.Code, rec.Body)
	}
	id := sha(fakeCheckpoint)
	for _, target := range []string{"/c/" + id, "/c/" + id + "/n/weight", "/api/checkpoints/" + id, "/api/checkpoints/" + id + "/node?path=/items"} {
		if rec := do(s, http.MethodGet, target, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token = %d, want 200", target, rec.Code)
		}
	}
	if rec := do(s, http.MethodPost, "/api/checkpoints/"+id+"/stats/all", nil); rec.Code != http.StatusAccepted {
		t.Errorf("POST stats/all without a token = %d, want 202: computing is reading", rec.Code)
	}
	if body := do(s, http.MethodGet, "/", nil).Body.String(); !strings.Contains(body, `data-testid="token-input"`) {
		t.Errorf("the home page of a server with a token has no token input")
	} else if strings.Index(body, `name="token"`) > strings.Index(body, `name="file"`) {
		t.Errorf("the token input comes after the file input: the form would send the file first")
	}
	open := newTestServer(t, t.TempDir())
	if body := do(open, http.MethodGet, "/", nil).Body.String(); strings.Contains(body, `name="token"`) {
		t.Errorf("the home page of a server without a token asks for one")
	}
}

// Every response carries the security headers: each route (whatever its status here),
// errors of every kind, static files and HEAD requests.
func TestSecurityHeadersEverywhere(t *testing.T) {
	dir := t.TempDir()
	s := tokenServer(t, dir)
	if rec := do(s, http.MethodPost, "/api/checkpoints?name=m.pt", bytes.NewReader(fakeCheckpoint), "Authorization", "Bearer "+testToken); rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %s", rec.Code, rec.Body)
	}
	id := sha(fakeCheckpoint)
	type request struct {
		method, target string
		body           string
		header         []string
	}
	var reqs []request
	for _, r := range s.echo.Routes() {
		target := strings.NewReplacer(":id", id, "*", "weight").Replace(r.Path)
		reqs = append(reqs, request{method: r.Method, target: target + "?path=/weight&format=json"})
	}
	auth := []string{"Authorization", "Bearer " + testToken}
	reqs = append(reqs,
		request{method: http.MethodGet, target: "/nothing"},                                                                           // 404 page
		request{method: http.MethodGet, target: "/api/nothing"},                                                                       // 404 JSON
		request{method: http.MethodPut, target: "/"},                                                                                  // 405
		request{method: http.MethodGet, target: "/c/bad"},                                                                             // 400
		request{method: http.MethodPost, target: "/api/checkpoints?name=m", body: "FAKE"},                                             // 401
		request{method: http.MethodPost, target: "/upload", body: "x"},                                                                // 400 page
		request{method: http.MethodPost, target: "/api/checkpoints?name=e", body: "EVIL", header: auth},                               // 422
		request{method: http.MethodPost, target: "/api/checkpoints?name=p", body: "PANIC", header: auth},                              // 500
		request{method: http.MethodPost, target: "/api/checkpoints?name=b", body: strings.Repeat("b", testMaxUpload+1), header: auth}, // 413
		request{method: http.MethodPost, target: "/api/checkpoints?name=n", body: "FAKE new", header: auth},                           // 201
		request{method: http.MethodGet, target: "/static/app.css"},
		request{method: http.MethodGet, target: "/static/app.css?v=1"},
		request{method: http.MethodHead, target: "/api/checkpoints/" + id + "/download?path=/nope"},
	)
	statuses := map[int]bool{}
	for _, r := range reqs {
		rec := do(s, r.method, r.target, strings.NewReader(r.body), r.header...)
		statuses[rec.Code] = true
		for k, v := range securityHeaders {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s %s (status %d): %s = %q, want %q", r.method, r.target, rec.Code, k, got, v)
			}
		}
	}
	for _, code := range []int{200, 201, 202, 301, 303, 400, 401, 404, 405, 413, 422, 500} {
		if !statuses[code] {
			t.Errorf("no request answered %d: the test no longer covers it", code)
		}
	}
	csp := securityHeaders["Content-Security-Policy"]
	for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("the CSP %q allows something unsafe", csp)
	}
}

// syncBuffer is a log sink that tests can read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond for up to 10 seconds; it only catches hangs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveServer serves a test server (fake loader) on a loopback port and returns its address
// and log; it stops at the end of the test.
func liveServer(t *testing.T, dir string, cfg Config, static fstest.MapFS, setup ...func(*Server)) (*Server, string, *syncBuffer) {
	t.Helper()
	st, err := store.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	if static == nil {
		static = testStatic
	}
	if cfg.MaxUpload == 0 {
		cfg.MaxUpload = testMaxUpload
	}
	s := New(cfg, Deps{Store: st, Static: static, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.load = fakeLoad
	for _, f := range setup {
		f(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		st.Close()
	})
	return s, ln.Addr().String(), logs
}

// answered reports whether the server logged a finished request for path.
func answered(logs *syncBuffer, path string) bool {
	return strings.Contains(logs.String(), "msg=request method=POST path="+path+" ") ||
		strings.Contains(logs.String(), "msg=request method=GET path="+path+" ")
}

// A client that cuts its connection half-way through an upload leaves no blob and no
// temporary file, and the server goes on serving, raw bodies and multipart alike.
func TestUploadCutConnection(t *testing.T) {
	for _, multipartBody := range []bool{false, true} {
		t.Run(fmt.Sprint("multipart=", multipartBody), func(t *testing.T) {
			dir := t.TempDir()
			_, addr, logs := liveServer(t, dir, Config{}, nil)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			half := append([]byte("FAKE "), bytes.Repeat([]byte("x"), 20000)...)
			ct := "application/octet-stream"
			body := half
			if multipartBody {
				ct = "multipart/form-data; boundary=b"
				body = append([]byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pt\"\r\n\r\n"), half...)
			}
			fmt.Fprintf(conn, "POST /api/checkpoints?name=m.pt HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, 2*len(body))
			conn.Write(body)
			waitFor(t, "the upload to reach the store", func() bool { return countFiles(t, dir) > 0 })
			conn.Close()
			waitFor(t, "the server to answer the cut upload", func() bool { return answered(logs, "/api/checkpoints") })
			if n := countFiles(t, dir); n != 0 {
				t.Errorf("after a cut upload the data dir holds %d files, want none", n)
			}
			resp, err := http.Post("http://"+addr+"/api/checkpoints?name=m.pt", "application/octet-stream", bytes.NewReader(fakeCheckpoint))
			if err != nil {
				t.Fatalf("upload after a cut one: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("upload after a cut one = %d, want 201", resp.StatusCode)
			}
		})
	}
}

// An upload whose client stops sending is dropped after StallTimeout, leaving nothing;
// one that keeps sending slowly is not.
func TestUploadStalled(t *testing.T) {
	dir := t.TempDir()
	_, addr, logs := liveServer(t, dir, Config{StallTimeout: 300 * time.Millisecond}, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/checkpoints?name=m.pt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nFAKE half")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("stalled upload = %d, want a 4xx", resp.StatusCode)
		}
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled upload was still open after 10s")
	}
	waitFor(t, "the stalled upload to end", func() bool { return answered(logs, "/api/checkpoints") })
	if n := countFiles(t, dir); n != 0 {
		t.Errorf("after a stalled upload the data dir holds %d files, want none", n)
	}

	// Slow but steady: a byte every 100ms (a third of the timeout), for longer than it.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	data := []byte("FAKE slow")
	fmt.Fprintf(slow, "POST /api/checkpoints?name=slow.pt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(data))
	for _, b := range data {
		time.Sleep(100 * time.Millisecond)
		slow.Write([]byte{b})
	}
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("an upload sending a byte every 100ms with a 300ms stall timeout = %d, want 201", resp.StatusCode)
	}
}

// The stall timeout covers the upload only: opening the file may take longer than it, or
// wait longer than it for an open slot, raw bodies and multipart alike, without the request
// being dropped or cancelled.
func TestSlowOpenAfterUpload(t *testing.T) {
	const stall = 200 * time.Millisecond
	_, addr, _ := liveServer(t, t.TempDir(), Config{StallTimeout: stall, OpenConcurrency: 1}, nil, func(s *Server) {
		s.load = func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
			time.Sleep(3 * stall)
			return fakeLoad(r, size)
		}
	})
	var wg sync.WaitGroup
	for i, multipartBody := range []bool{false, true, false, true} {
		wg.Go(func() {
			data := []byte(fmt.Sprint("FAKE slow to open ", i))
			var body io.Reader = bytes.NewReader(data)
			ct := "application/octet-stream"
			if multipartBody {
				body, ct = formBody(t, "file", string(data))
			}
			resp, err := http.Post("http://"+addr+"/api/checkpoints?name=m.pt", ct, body)
			if err != nil {
				t.Errorf("upload #%d (multipart %v): %v", i, multipartBody, err)
				return
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("upload #%d (multipart %v) of a file that takes 3 stall timeouts to open, one at a time = %d %s, want 201",
					i, multipartBody, resp.StatusCode, msg)
			}
		})
	}
	wg.Wait()
}

// A client that sends its headers too slowly is dropped after ReadHeaderTimeout.
func TestSlowHeaders(t *testing.T) {
	_, addr, _ := liveServer(t, t.TempDir(), Config{ReadHeaderTimeout: 200 * time.Millisecond}, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection with unfinished headers was still open after 10s")
	}
}

// A download whose client stops reading is dropped after StallTimeout, so it holds nothing
// for ever; a keep-alive connection idle for longer than the stall timeout still gets its
// next answer, even one without a body.
func TestDownloadStalled(t *testing.T) {
	static := fstest.MapFS{"app.css": testStatic["app.css"], "big.bin": {Data: bytes.Repeat([]byte("z"), 64<<20)}}
	_, addr, logs := liveServer(t, t.TempDir(), Config{StallTimeout: 300 * time.Millisecond}, static)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
	// Never read: the server's writes block once the socket buffers are full.
	waitFor(t, "the stalled download to end", func() bool { return answered(logs, "/static/big.bin") })

	client := &http.Client{}
	get := func(target string) int {
		resp, err := client.Get("http://" + addr + target)
		if err != nil {
			t.Fatalf("GET %s: %v", target, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get("/static/app.css")
	time.Sleep(700 * time.Millisecond)
	if code := get("/c/" + strings.Repeat("a", 64) + "/n"); code != http.StatusMovedPermanently {
		t.Errorf("a redirect on a connection idle past the stall timeout = %d, want 301", code)
	}
}
