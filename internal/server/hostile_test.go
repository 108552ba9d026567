package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// hostileDir holds files that attack the loader, and expected.json (see its README).
const hostileDir = "../../testdata/hostile"

// hostileMarkers is where the payloads of testdata/hostile would leave a file if anything
// ran them.
const hostileMarkers = "/tmp/ckptview-hostile-*"

// hostileDeadline only catches a hang; it is not a performance assertion.
const hostileDeadline = 20 * time.Second

// hostileFiles lists the files of testdata/hostile that expected.json describes.
func hostileFiles(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(hostileDir, "expected.json"))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("no hostile inputs: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatalf("expected.json: %v", err)
	}
	var names []string
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// removeMarkers deletes what an earlier run (or Python) may have left, so the check after
// the uploads means something.
func removeMarkers(t *testing.T) {
	t.Helper()
	old, _ := filepath.Glob(hostileMarkers)
	for _, m := range old {
		if err := os.Remove(m); err != nil {
			t.Fatalf("cannot remove marker %s: %v", m, err)
		}
	}
}

// TestHostileOverHTTP uploads every file of testdata/hostile through the API with the real
// loader, one after another and then all at once. Whatever the file, the server answers 201
// or 422 within the deadline, never a 5xx; the findings it reports are exactly the loader's;
// the pages of the files that open render; nothing the payloads would create appears; and
// the server goes on serving.
func TestHostileOverHTTP(t *testing.T) {
	names := hostileFiles(t)
	removeMarkers(t)
	s := realServer(t, Config{OpenConcurrency: 2})

	files := map[string][]byte{}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(hostileDir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}

	// post uploads one file and checks the answer; it returns the id of a file that opened.
	post := func(name string) (id string) {
		data := files[name]
		want := findingsJSON(loaderFindings(data))
		type answer struct {
			code int
			body []byte
		}
		done := make(chan answer, 1)
		go func() {
			rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(name), bytes.NewReader(data))
			done <- answer{rec.Code, rec.Body.Bytes()}
		}()
		var a answer
		select {
		case a = <-done:
		case <-time.After(hostileDeadline):
			t.Errorf("%s: upload not answered within %v", name, hostileDeadline)
			return ""
		}
		var got []findingJSON
		switch a.code {
		case http.StatusCreated:
			var up uploadJSON
			if err := json.Unmarshal(a.body, &up); err != nil {
				t.Errorf("%s: upload answer %q: %v", name, a.body, err)
				return ""
			}
			id = up.ID
			rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil)
			if rec.Code != http.StatusOK {
				t.Errorf("%s: GET /api/checkpoints/<id> = %d %.200s", name, rec.Code, rec.Body)
				return id
			}
			got = decode[checkpointJSON](t, rec).Findings
		case http.StatusUnprocessableEntity:
			var e errorJSON
			if err := json.Unmarshal(a.body, &e); err != nil {
				t.Errorf("%s: 422 answer %q: %v", name, a.body, err)
				return ""
			}
			got = e.Findings
			if got == nil {
				got = []findingJSON{}
			}
		default:
			t.Errorf("%s: upload = %d %.300s, want 201 or 422", name, a.code, a.body)
			return ""
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: findings over HTTP differ from the loader's (-loader +http):\n%s", name, diff)
		}
		return id
	}

	opened := 0
	for _, name := range names {
		if id := post(name); id != "" {
			opened++
			checkPages(t, s, name, id)
		}
	}
	t.Logf("%d hostile files: %d opened, %d refused with 422", len(names), opened, len(names)-opened)

	// All at once, on a fresh server so that nothing is cached: the opens queue for their
	// slots and every upload is still answered.
	s = realServer(t, Config{OpenConcurrency: 2})
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() { post(name) })
	}
	wg.Wait()

	if left, _ := filepath.Glob(hostileMarkers); len(left) > 0 {
		t.Errorf("after the uploads %v exist: a payload ran", left)
	}
	if rec := do(s, http.MethodGet, "/", nil); rec.Code != http.StatusOK {
		t.Errorf("GET / after the hostile uploads = %d, want 200", rec.Code)
	}
	uploadFixture(t, s, "state_dict.pt")
}

// evilPickle is a protocol 2 pickle whose keys, values and globals are markup: a dict
// {"<script>alert(1)</script>": "\"><img src=x onerror=alert(1)>", "x": <global>} where the
// global's module is <script>alert(2)</script>.
func evilPickle() []byte {
	var b bytes.Buffer
	str := func(s string) {
		b.WriteByte('X') // BINUNICODE
		binary.Write(&b, binary.LittleEndian, uint32(len(s)))
		b.WriteString(s)
	}
	b.Write([]byte{0x80, 2, '}', '('})
	str("<script>alert(1)</script>")
	str(`"><img src=x onerror=alert(1)>`)
	str("x")
	b.WriteString("c<script>alert(2)</script>\nsystem\n") // GLOBAL
	b.WriteString(")R")                                   // EMPTY_TUPLE REDUCE: a call
	b.WriteString("u.")                                   // SETITEMS STOP
	return b.Bytes()
}

// Every string from a file reaches the pages escaped: keys, values, globals, findings and
// the file's name; the JSON API says it is JSON (and nosniff keeps browsers from guessing).
func TestPagesEscapeFileStrings(t *testing.T) {
	s := realServer(t, Config{})
	name := `<img src=x onerror=alert(3)>.pkl` // a name keeps no "/", so no closing tag here
	rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(name), bytes.NewReader(evilPickle()))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload of the markup pickle = %d %s, want 201", rec.Code, rec.Body)
	}
	id := decode[uploadJSON](t, rec).ID
	key := url.PathEscape("<script>alert(1)</script>")
	for _, target := range []string{
		"/c/" + id,
		"/c/" + id + "?view=raw",
		"/c/" + id + "/n/",
		"/c/" + id + "/n/" + key,
		"/c/" + id + "/n/x",
		"/c/" + id + "/fragment/children?path=",
		"/c/" + id + "/fragment/stats?path=" + url.QueryEscape("/<script>alert(1)</script>"),
		"/c/" + id + "/n/" + key + "/%3Cscript%3Ealert(4)%3C%2Fscript%3E", // 404 naming the path
	} {
		rec := do(s, http.MethodGet, target, nil)
		if rec.Code >= 500 {
			t.Errorf("GET %s = %d", target, rec.Code)
			continue
		}
		body := rec.Body.String()
		for _, raw := range []string{"<script>alert", "<img src=x", `"><img`} {
			if strings.Contains(body, raw) {
				t.Errorf("GET %s (%d) contains %q unescaped", target, rec.Code, raw)
			}
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s Content-Type = %q, want text/html", target, ct)
		}
	}
	page := do(s, http.MethodGet, "/c/"+id, nil).Body.String()
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;script&gt;alert(2)&lt;/script&gt;.system", "&lt;img src=x onerror=alert(3)&gt;.pkl"} {
		if !strings.Contains(page, want) {
			t.Errorf("the checkpoint page does not show %q escaped", want)
		}
	}
	for _, target := range []string{"/api/checkpoints/" + id, "/api/checkpoints/" + id + "/node?path="} {
		rec := do(s, http.MethodGet, target, nil)
		if ct := rec.Header().Get("Content-Type"); rec.Code != http.StatusOK || !strings.HasPrefix(ct, "application/json") {
			t.Errorf("GET %s = %d %q, want 200 JSON", target, rec.Code, ct)
		}
	}
	rec = do(s, http.MethodGet, downloadURL(id, "", "json"), nil)
	cd := rec.Header().Get("Content-Disposition")
	if rec.Code != http.StatusOK || strings.ContainsAny(strings.TrimSuffix(strings.TrimPrefix(cd, `attachment; filename="`), `"`), `<>"/\`) {
		t.Errorf("JSON download = %d, Content-Disposition %q: want 200 and a name of safe characters", rec.Code, cd)
	}
}
