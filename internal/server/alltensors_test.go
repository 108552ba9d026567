package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// loggingServer is a real server whose log the test reads.
func loggingServer(t *testing.T) (*Server, *bytes.Buffer) {
	t.Helper()
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := new(bytes.Buffer)
	s := New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	t.Cleanup(s.Close)
	return s, logs
}

// TestEveryFixtureValue asks for the statistics and every download of every tensor and
// array of every fixture (structured fields, str and bytes arrays, float8 included): each
// answer is a value or a 4xx saying why, never a 5xx.
func TestEveryFixtureValue(t *testing.T) {
	s, logs := loggingServer(t)
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expected map[string]json.RawMessage
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	asked := 0
	for name := range expected {
		if strings.HasPrefix(name, "_") {
			continue
		}
		p := filepath.Join(fixturesDir, name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(filepath.Base(p)), bytes.NewReader(data))
		if rec.Code != http.StatusCreated {
			t.Errorf("upload %s = %d %.200s", filepath.Base(p), rec.Code, rec.Body)
			continue
		}
		id := decode[uploadJSON](t, rec).ID
		ck, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{})
		if err != nil {
			t.Fatalf("Open(%s): %v", filepath.Base(p), err)
		}
		ckpt.Walk(ck.Root, func(n *ckpt.Node) {
			if n.Tensor == nil {
				return
			}
			for _, u := range []string{statsURL(id, n.Path()), downloadURL(id, n.Path(), "npy"), downloadURL(id, n.Path(), "raw"), downloadURL(id, n.Path(), "json")} {
				asked++
				if r := do(s, http.MethodGet, u, nil); r.Code >= 500 {
					t.Errorf("GET %s (%s) = %d %.200s", u, filepath.Base(p), r.Code, r.Body)
				}
			}
		})
		ck.Close()
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs.String())
	}
	if asked < 400 {
		t.Errorf("asked %d values, want more", asked)
	}
}

// An internal error of the loader is a 500 that says the file is not at fault, with the
// stack in the log, and the server goes on serving.
func TestLoaderInternalError(t *testing.T) {
	s, logs := loggingServer(t)
	s.load = func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
		return nil, &loader.InternalError{Panic: "a planted bug", Stack: []byte("goroutine 1 [running]: planted")}
	}
	rec := do(s, http.MethodPost, "/api/checkpoints?name=x.pkl", strings.NewReader("\x80\x02K\x01."))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "not at fault") {
		t.Errorf("upload = %d %s, want 500 saying the file is not at fault", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "planted") || !strings.Contains(logs.String(), "internal error in the loader") {
		t.Errorf("the log does not have the stack: %s", logs.String())
	}
	if rec := do(s, http.MethodGet, "/", nil); rec.Code != http.StatusOK {
		t.Errorf("GET / after = %d", rec.Code)
	}
}

// The summary says what torch.load(weights_only=True) would do with a torch.save file, and
// nothing for files torch.load does not read.
func TestWeightsOnlyInSummary(t *testing.T) {
	s := realServer(t, Config{})
	get := func(name string) *weightsOnlyJSON {
		id := uploadFixture(t, s, name)
		return decode[checkpointJSON](t, do(s, http.MethodGet, "/api/checkpoints/"+id, nil)).WeightsOnly
	}
	if v := get("state_dict.pt"); v == nil || !v.Loads {
		t.Errorf("state_dict.pt: %+v, want it to load", v)
	}
	if v := get("whole_module.pt"); v == nil || v.Loads || !strings.Contains(v.AddSafeGlobals, "add_safe_globals([Net") {
		t.Errorf("whole_module.pt: %+v, want the add_safe_globals call it needs", v)
	}
	if v := get("numpy_arrays_p4.pkl"); v != nil {
		t.Errorf("a plain pickle: %+v, want no verdict", v)
	}
}

// A danger finding carries its call as data: the callable and each argument's Python repr.
func TestFindingCallAsData(t *testing.T) {
	s := realServer(t, Config{})
	p := "\x80\x02cposix\nsystem\nC\x03\xc3\xa9x\x85R."
	up := decode[uploadJSON](t, do(s, http.MethodPost, "/api/checkpoints?name=x.pkl", strings.NewReader(p)))
	sum := decode[checkpointJSON](t, do(s, http.MethodGet, "/api/checkpoints/"+up.ID, nil))
	for _, f := range sum.Findings {
		if f.Severity == "danger" && f.Call != nil && f.Call.Callable == "posix.system" && len(f.Call.Args) == 1 &&
			f.Call.Args[0].Kind == "bytes" && f.Call.Args[0].Repr == `b'\xc3\xa9x'` {
			return
		}
	}
	t.Errorf("findings %+v, want posix.system's call with b'\\xc3\\xa9x' as data", sum.Findings)
}

// A structured array's node in the API lists its fields with numpy's descr and byte offset,
// as numpy reported them when the fixtures were written.
func TestStructuredFieldsInAPI(t *testing.T) {
	s := realServer(t, Config{})
	checked := 0
	for _, name := range []string{"joblib_arrays.joblib", "npy_structured.npy", "npy_v3.npy"} {
		id := uploadFixture(t, s, name)
		for _, wt := range fixtureTensors(t, name) {
			if len(wt.Fields) == 0 {
				continue
			}
			rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/node?path="+url.QueryEscape(wt.Path), nil)
			var got struct {
				Fields []fieldJSON `json:"fields"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("%s %s: %d %v", name, wt.Path, rec.Code, err)
			}
			if len(got.Fields) != len(wt.Fields) {
				t.Errorf("%s %s: %d fields, want %d", name, wt.Path, len(got.Fields), len(wt.Fields))
				continue
			}
			for i, w := range wt.Fields {
				g := got.Fields[i]
				if g.Name != w.Name || g.Descr != w.Descr || g.Offset != w.Offset {
					t.Errorf("%s %s field %d = %+v, want %+v", name, wt.Path, i, g, w)
				}
			}
			checked++
		}
	}
	if checked < 3 {
		t.Errorf("checked %d structured arrays, want at least 3", checked)
	}
}

// A structured array downloads as an .npy whose header holds numpy's dtype.descr (the list
// numpy.save writes and numpy.load reads back), as numpy reported it for every structured
// fixture; numpy 1.24's reader refuses the {'names': ...} form.
func TestStructuredNPYDescr(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path  string `json:"path"`
			Descr any    `json:"descr"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	s := realServer(t, Config{})
	checked := 0
	for name, f := range all {
		var id string
		for _, wt := range f.Tensors {
			fields, ok := wt.Descr.([]any)
			if !ok {
				continue
			}
			parts := make([]string, len(fields))
			for i, fd := range fields {
				p := fd.([]any)
				parts[i] = "('" + p[0].(string) + "', '" + p[1].(string) + "')"
			}
			want := "'descr': [" + strings.Join(parts, ", ") + "],"
			if id == "" {
				id = uploadFixture(t, s, name)
			}
			rec := do(s, http.MethodGet, downloadURL(id, wt.Path, "npy"), nil)
			if rec.Code != http.StatusOK {
				t.Errorf("%s %s: npy download = %d %.200s", name, wt.Path, rec.Code, rec.Body)
				continue
			}
			if head := rec.Body.String()[:min(rec.Body.Len(), 512)]; !strings.Contains(head, want) {
				t.Errorf("%s %s: npy header %q, want it to hold %q", name, wt.Path, strings.SplitN(head, "\n", 2)[0], want)
			}
			checked++
		}
	}
	if checked < 18 {
		t.Errorf("checked %d structured arrays, want the 19 of expected.json", checked)
	}
}
