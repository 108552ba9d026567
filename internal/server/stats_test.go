package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// statsFixtures are the files whose every tensor is checked against numpy.
var statsFixtures = []string{"dtypes.pt", "numpy_arrays_p4.pkl", "state_dict.pt", "quantized.pt"}

// wantStats is a "stats" entry of expected.json: numpy over the values torch.load or
// pickle.load returned.
type wantStats struct {
	Count     int64    `json:"count"`
	Min       *float64 `json:"min"`
	Max       *float64 `json:"max"`
	Mean      *float64 `json:"mean"`
	Std       *float64 `json:"std"`
	L2        float64  `json:"l2"`
	Zeros     int64    `json:"zeros"`
	NaN       int64    `json:"nan"`
	PosInf    int64    `json:"posinf"`
	NegInf    int64    `json:"neginf"`
	Histogram *struct {
		Edges  []float64 `json:"edges"`
		Counts []int64   `json:"counts"`
	} `json:"histogram"`
}

// wantTensor is what expected.json says about one tensor's values.
type wantTensor struct {
	Path     string     `json:"path"`
	DType    string     `json:"dtype"`
	Descr    any        `json:"descr"`
	Shape    []int64    `json:"shape"`
	Numel    int64      `json:"numel"`
	SHA256LE string     `json:"sha256_le"`
	Stats    *wantStats `json:"stats"`
	Deq      *wantStats `json:"stats_dequantized"`
	Quant    *struct {
		Scheme string `json:"scheme"`
	} `json:"quantization"`
	First  []any `json:"first"`
	Fields []struct {
		Name   string `json:"name"`
		Descr  string `json:"descr"`
		Offset int64  `json:"offset"`
	} `json:"fields"`
}

// fixtureTensors reads the tensors expected.json lists for one fixture.
func fixtureTensors(t *testing.T, name string) []wantTensor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatalf("no fixtures: %v", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tensors []wantTensor `json:"tensors"`
	}
	if err := json.Unmarshal(all[name], &f); err != nil {
		t.Fatalf("expected.json %s: %v", name, err)
	}
	if len(f.Tensors) == 0 {
		t.Fatalf("expected.json lists no tensors for %s", name)
	}
	return f.Tensors
}

// realServer is a server with the real loader and an empty store.
func realServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return serverOn(t, cfg, st)
}

// serverOn is a server with the real loader on a store, closed when the test ends.
func serverOn(t *testing.T, cfg Config, st store.Blobs) *Server {
	t.Helper()
	s := New(cfg, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)
	return s
}

// uploadFixture uploads a file of testdata/models and returns its id.
func uploadFixture(t *testing.T, s *Server, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixturesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	rec := do(s, http.MethodPost, "/api/checkpoints?name="+url.QueryEscape(name), bytes.NewReader(data))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload %s = %d %.300s, want 201", name, rec.Code, rec.Body)
	}
	return decode[uploadJSON](t, rec).ID
}

func statsURL(id, path string) string {
	return "/api/checkpoints/" + id + "/stats?path=" + url.QueryEscape(path)
}

func downloadURL(id, path, format string, extra ...string) string {
	u := "/api/checkpoints/" + id + "/download?path=" + url.QueryEscape(path) + "&format=" + format
	for _, e := range extra {
		u += "&" + e
	}
	return u
}

// near reports whether got is within a relative 1e-6 of want, on the scale of the values
// (a mean of nearly 0 is compared on the scale of the std).
func near(got, want, scale float64) bool {
	return math.Abs(got-want) <= 1e-6*math.Max(math.Abs(want), scale)
}

// TestStatsMatchNumpy asks the API for the statistics of every tensor of the fixtures and
// compares them with numpy's: counts and min/max exact, mean/std/L2 within 1e-6, the
// histogram's edges and counts exact. Tensors numpy has no statistics for (str, bytes,
// object, structured arrays) must be refused with 422.
func TestStatsMatchNumpy(t *testing.T) { checkStatsMatchNumpy(t, realServer(t, Config{})) }

// checkStatsMatchNumpy is TestStatsMatchNumpy on a given server (another store), with the
// fixtures added by via (uploaded if not given).
func checkStatsMatchNumpy(t *testing.T, s *Server, via ...func(t *testing.T, name string) string) {
	add := func(t *testing.T, name string) string { return uploadFixture(t, s, name) }
	if len(via) > 0 {
		add = via[0]
	}
	checked := 0
	for _, name := range statsFixtures {
		t.Run(name, func(t *testing.T) {
			id := add(t, name)
			for _, wt := range fixtureTensors(t, name) {
				rec := do(s, http.MethodGet, statsURL(id, wt.Path), nil)
				w := wt.Stats
				if wt.Deq != nil && wt.Quant != nil && wt.Quant.Scheme == "per_tensor_affine" {
					w = wt.Deq // per-tensor quantized: statistics of the dequantized values
				}
				if w == nil {
					if rec.Code != http.StatusUnprocessableEntity {
						t.Errorf("GET stats of %s %s (%s) = %d %.200s, want 422", name, wt.Path, wt.DType, rec.Code, rec.Body)
					}
					continue
				}
				if rec.Code != http.StatusOK {
					t.Errorf("GET stats of %s %s = %d %.200s, want 200", name, wt.Path, rec.Code, rec.Body)
					continue
				}
				checked++
				got := decode[wantStats](t, rec)
				where := name + " " + wt.Path
				if got.Count != w.Count || got.Zeros != w.Zeros || got.NaN != w.NaN || got.PosInf != w.PosInf || got.NegInf != w.NegInf {
					t.Errorf("%s: count zeros nan +inf -inf = %d %d %d %d %d, want %d %d %d %d %d", where,
						got.Count, got.Zeros, got.NaN, got.PosInf, got.NegInf, w.Count, w.Zeros, w.NaN, w.PosInf, w.NegInf)
				}
				if (w.Min == nil) != (got.Min == nil) || (w.Mean == nil) != (got.Mean == nil) {
					t.Errorf("%s: min %v mean %v, want null exactly when numpy has none (min %v mean %v)", where, got.Min, got.Mean, w.Min, w.Mean)
					continue
				}
				if w.Min != nil {
					if *got.Min != *w.Min || *got.Max != *w.Max {
						t.Errorf("%s: min/max = %v/%v, want %v/%v exactly", where, *got.Min, *got.Max, *w.Min, *w.Max)
					}
					if !near(*got.Mean, *w.Mean, *w.Std) || !near(*got.Std, *w.Std, 0) || !near(got.L2, w.L2, 0) {
						t.Errorf("%s: mean/std/l2 = %.17g/%.17g/%.17g, want %.17g/%.17g/%.17g (1e-6 relative)", where,
							*got.Mean, *got.Std, got.L2, *w.Mean, *w.Std, w.L2)
					}
				}
				if w.Histogram != nil {
					if fmt.Sprint(got.Histogram.Counts) != fmt.Sprint(w.Histogram.Counts) {
						t.Errorf("%s: histogram counts\n got %v\nwant %v", where, got.Histogram.Counts, w.Histogram.Counts)
					}
					if fmt.Sprint(got.Histogram.Edges) != fmt.Sprint(w.Histogram.Edges) {
						t.Errorf("%s: histogram edges\n got %v\nwant %v", where, got.Histogram.Edges, w.Histogram.Edges)
					}
				}
			}
		})
	}
	if checked < 60 {
		t.Errorf("checked the statistics of %d tensors; the fixtures have more", checked)
	}
}

// The second request for a tensor's statistics is answered from the cache.
func TestStatsCached(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	for i := range 3 {
		if rec := do(s, http.MethodGet, statsURL(id, "/wte.weight"), nil); rec.Code != http.StatusOK {
			t.Fatalf("GET stats #%d = %d %.200s", i, rec.Code, rec.Body)
		}
	}
	if n := s.stats.computed.Load(); n != 1 {
		t.Errorf("three requests for the same statistics computed them %d times, want 1", n)
	}
	// A ref resolves to its target: no second computation either. The tensor page now
	// shows them inline instead of a placeholder.
	rec := do(s, http.MethodGet, "/c/"+id+"/n/wte.weight", nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `data-testid="stats-table"`) {
		t.Errorf("GET the tensor page after its statistics = %d, want 200 with the statistics inline", rec.Code)
	}
	if n := s.stats.computed.Load(); n != 1 {
		t.Errorf("the tensor page computed statistics again (%d computations)", n)
	}
}

// Tied weights are the same numbers: lm_head.weight is wte.weight's view of the same
// storage in state_dict.pt (generate.py ties them as GPT-2 does), so once either has its
// statistics the other is answered without reading the data again, with the same figures.
func TestStatsTiedComputedOnce(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	get := func(path string) string {
		rec := do(s, http.MethodGet, statsURL(id, path), nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET stats of %s = %d %.200s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	wte := get("/wte.weight")
	if head := get("/lm_head.weight"); head != wte {
		t.Errorf("tied tensors answered differently:\n wte     %.300s\n lm_head %.300s", wte, head)
	}
	if n := s.stats.computed.Load(); n != 1 {
		t.Errorf("statistics of two tied tensors were computed %d times, want 1", n)
	}
	// in the other order, on a fresh server, too
	s = realServer(t, Config{})
	id = uploadFixture(t, s, "state_dict.pt")
	head := get("/lm_head.weight")
	if get("/wte.weight") != head || s.stats.computed.Load() != 1 {
		t.Errorf("lm_head first, then wte: %d computations, want 1 and the same answer", s.stats.computed.Load())
	}
}

// Requests for values a node does not have are refused with 422 and say why.
func TestStatsRefused(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "numpy_arrays_p4.pkl")
	sd := uploadFixture(t, s, "state_dict.pt")
	for _, tc := range []struct {
		target, want string
	}{
		{statsURL(sd, ""), "not a tensor"},
		{statsURL(sd, "/_metadata"), "not a tensor"},
		{statsURL(id, "/object"), "object array"},
		{statsURL(id, "/unicode"), "cannot be decoded"},
		{statsURL(id, "/structured"), "cannot be decoded"},
		{downloadURL(id, "/object", "npy"), "object array"},
		{downloadURL(sd, "", "npy"), "not a tensor"},
	} {
		rec := do(s, http.MethodGet, tc.target, nil)
		body := decode[errorJSON](t, rec)
		if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body.Error, tc.want) {
			t.Errorf("GET %s = %d %q, want 422 saying %q", tc.target, rec.Code, body.Error, tc.want)
		}
	}
	// The same arrays download as JSON.
	for _, p := range []string{"/object", "/unicode", "/structured", "/bytes"} {
		if rec := do(s, http.MethodGet, downloadURL(id, p, "json"), nil); rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
			t.Errorf("GET JSON of %s = %d %.200s, want 200 and valid JSON", p, rec.Code, rec.Body)
		}
	}
}

// leBytes is the numpy little-endian encoding of a .npy file's data, which may be
// big-endian ('>' in descr).
func leBytes(descr string, data []byte) []byte {
	if !strings.HasPrefix(descr, ">") {
		return data
	}
	size, _ := strconv.Atoi(descr[2:])
	out := bytes.Clone(data)
	if descr[1] == 'c' { // each half of a complex swaps on its own
		size /= 2
	}
	for i := 0; i+size <= len(out); i += size {
		for a, b := i, i+size-1; a < b; a, b = a+1, b-1 {
			out[a], out[b] = out[b], out[a]
		}
	}
	return out
}

// npyFile is a parsed .npy file.
type npyFile struct {
	descr   string
	fortran bool
	shape   []int64
	data    []byte
}

var npyDict = regexp.MustCompile(`^\{'descr': ('[<>|][a-zA-Z][0-9]+'|\{.*\}|\[.*\]), 'fortran_order': (False|True), 'shape': \(([0-9, ]*)\), \} *\n$`)

// parseNPY checks a .npy file's structure (magic, version 1.0, header length, a header
// dict, data aligned to 64 bytes) and returns its parts.
func parseNPY(b []byte) (npyFile, error) {
	var f npyFile
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" || b[6] != 1 || b[7] != 0 {
		return f, fmt.Errorf("no .npy 1.0 magic: %q", b[:min(len(b), 10)])
	}
	hlen := int(binary.LittleEndian.Uint16(b[8:10]))
	if 10+hlen > len(b) {
		return f, fmt.Errorf("header of %d bytes in a file of %d", hlen, len(b))
	}
	if (10+hlen)%64 != 0 {
		return f, fmt.Errorf("data starts at %d, not a multiple of 64", 10+hlen)
	}
	m := npyDict.FindStringSubmatch(string(b[10 : 10+hlen]))
	if m == nil {
		return f, fmt.Errorf("header dict %q", b[10:10+hlen])
	}
	f.descr, f.fortran = strings.Trim(m[1], "'"), m[2] == "True"
	for _, d := range strings.Split(m[3], ",") {
		if d = strings.TrimSpace(d); d != "" {
			n, _ := strconv.ParseInt(d, 10, 64)
			f.shape = append(f.shape, n)
		}
	}
	f.data = b[10+hlen:]
	return f, nil
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestDownloadsMatchNumpy downloads every tensor of the fixtures as raw bytes and as
// .npy and checks them against the sha256 of the little-endian C-order bytes numpy held
// (bfloat16 as float32): raw bit for bit, .npy parsed, aligned, the right shape, and its
// data the same bytes.
func TestDownloadsMatchNumpy(t *testing.T) { checkDownloadsMatchNumpy(t, realServer(t, Config{})) }

// checkDownloadsMatchNumpy is TestDownloadsMatchNumpy on a given server, as above.
func checkDownloadsMatchNumpy(t *testing.T, s *Server, via ...func(t *testing.T, name string) string) {
	add := func(t *testing.T, name string) string { return uploadFixture(t, s, name) }
	if len(via) > 0 {
		add = via[0]
	}
	checked := 0
	for _, name := range statsFixtures {
		t.Run(name, func(t *testing.T) {
			id := add(t, name)
			for _, wt := range fixtureTensors(t, name) {
				if wt.SHA256LE == "" {
					continue
				}
				where := name + " " + wt.Path
				raw := do(s, http.MethodGet, downloadURL(id, wt.Path, "raw"), nil)
				if raw.Code != http.StatusOK {
					t.Errorf("GET raw of %s = %d %.200s, want 200", where, raw.Code, raw.Body)
					continue
				}
				checked++
				if got := sha256hex(raw.Body.Bytes()); got != wt.SHA256LE {
					t.Errorf("raw %s: sha256 = %s, want %s (numpy's little-endian bytes)", where, got, wt.SHA256LE)
				}
				if cl := raw.Header().Get("Content-Length"); cl != strconv.Itoa(raw.Body.Len()) {
					t.Errorf("raw %s: Content-Length = %q for %d bytes", where, cl, raw.Body.Len())
				}
				wantShape := strings.Trim(strings.ReplaceAll(fmt.Sprint(wt.Shape), " ", ","), "[]")
				if got := raw.Header().Get("X-Ckptview-Shape"); got != wantShape {
					t.Errorf("raw %s: X-Ckptview-Shape = %q, want %q", where, got, wantShape)
				}
				dt := raw.Header().Get("X-Ckptview-Dtype")
				if dt == "" {
					t.Errorf("raw %s: no X-Ckptview-Dtype", where)
				}
				_, params, err := mime.ParseMediaType(raw.Header().Get("Content-Disposition"))
				if err != nil || !strings.HasSuffix(params["filename"], "__"+dt+"_"+shapeName(wt.Shape)+".bin") {
					t.Errorf("raw %s: Content-Disposition %q, want a file name ending in __%s_%s.bin", where,
						raw.Header().Get("Content-Disposition"), dt, shapeName(wt.Shape))
				}

				rec := do(s, http.MethodGet, downloadURL(id, wt.Path, "npy"), nil)
				if rec.Code != http.StatusOK {
					t.Errorf("GET npy of %s = %d %.200s, want 200", where, rec.Code, rec.Body)
					continue
				}
				f, err := parseNPY(rec.Body.Bytes())
				if err != nil {
					t.Errorf("npy %s: %v", where, err)
					continue
				}
				if fmt.Sprint(f.shape) != fmt.Sprint(wt.Shape) || f.fortran {
					t.Errorf("npy %s: shape %v fortran %v, want %v in C order", where, f.shape, f.fortran, wt.Shape)
				}
				if got := sha256hex(leBytes(f.descr, f.data)); got != wt.SHA256LE {
					t.Errorf("npy %s (descr %s): sha256 of the data = %s, want %s", where, f.descr, got, wt.SHA256LE)
				}
			}
		})
	}
	if checked < 60 {
		t.Errorf("checked the downloads of %d tensors; the fixtures have more", checked)
	}
}

// bfloat16 downloads as float32 by default and as its uint16 bit patterns with as=raw.
func TestDownloadBits(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "dtypes.pt")
	f32 := do(s, http.MethodGet, downloadURL(id, "/bfloat16", "raw"), nil)
	bits := do(s, http.MethodGet, downloadURL(id, "/bfloat16", "raw", "as=raw"), nil)
	npy := do(s, http.MethodGet, downloadURL(id, "/bfloat16", "npy", "as=raw"), nil)
	if f32.Code != http.StatusOK || bits.Code != http.StatusOK || npy.Code != http.StatusOK {
		t.Fatalf("downloads of /bfloat16 = %d %d %d, want 200", f32.Code, bits.Code, npy.Code)
	}
	if f32.Header().Get("X-Ckptview-Dtype") != "float32" || bits.Header().Get("X-Ckptview-Dtype") != "uint16" {
		t.Errorf("dtypes = %q and %q, want float32 and uint16 (as=raw)", f32.Header().Get("X-Ckptview-Dtype"), bits.Header().Get("X-Ckptview-Dtype"))
	}
	if f32.Body.Len() != 2*bits.Body.Len() {
		t.Fatalf("float32 download has %d bytes, bits %d: want twice as many", f32.Body.Len(), bits.Body.Len())
	}
	// bfloat16 is the upper half of a float32: the bits are the high 16 bits of each value.
	fb, bb := f32.Body.Bytes(), bits.Body.Bytes()
	for i := 0; i < len(bb)/2; i++ {
		if binary.LittleEndian.Uint16(bb[2*i:]) != uint16(binary.LittleEndian.Uint32(fb[4*i:])>>16) {
			t.Errorf("element %d: bits %#x, float32 %#x", i, binary.LittleEndian.Uint16(bb[2*i:]), binary.LittleEndian.Uint32(fb[4*i:]))
		}
	}
	f, err := parseNPY(npy.Body.Bytes())
	if err != nil || f.descr != "<u2" || !bytes.Equal(f.data, bb) {
		t.Errorf("npy with as=raw: descr %q, err %v, same bytes as raw: %v; want <u2 and the bits", f.descr, err, bytes.Equal(f.data, bb))
	}
}

// Range requests get 206 with exactly the bytes asked for, for raw, .npy and JSON.
func TestDownloadRange(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	for _, format := range []string{"raw", "npy", "json"} {
		target := downloadURL(id, "/wte.weight", format)
		full := do(s, http.MethodGet, target, nil)
		if full.Code != http.StatusOK || full.Header().Get("Accept-Ranges") != "bytes" {
			t.Fatalf("GET %s = %d Accept-Ranges %q, want 200 and bytes", target, full.Code, full.Header().Get("Accept-Ranges"))
		}
		all := full.Body.Bytes()
		for _, r := range [][2]int{{0, 0}, {10, 200}, {100, len(all) - 1}} {
			rec := do(s, http.MethodGet, target, nil, "Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
			want := fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], len(all))
			if rec.Code != http.StatusPartialContent || rec.Header().Get("Content-Range") != want {
				t.Errorf("GET %s Range %v = %d Content-Range %q, want 206 %q", target, r, rec.Code, rec.Header().Get("Content-Range"), want)
				continue
			}
			if !bytes.Equal(rec.Body.Bytes(), all[r[0]:r[1]+1]) {
				t.Errorf("GET %s Range %v returned other bytes than the full download holds there", target, r)
			}
		}
		// Past the end: 416.
		if rec := do(s, http.MethodGet, target, nil, "Range", fmt.Sprintf("bytes=%d-", len(all)+10)); rec.Code != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("GET %s Range past the end = %d, want 416", target, rec.Code)
		}
		// The ETag names the bytes: a matching If-None-Match is a 304.
		if tag := full.Header().Get("ETag"); tag == "" {
			t.Errorf("GET %s has no ETag", target)
		} else if rec := do(s, http.MethodGet, target, nil, "If-None-Match", tag); rec.Code != http.StatusNotModified {
			t.Errorf("GET %s If-None-Match its ETag = %d, want 304", target, rec.Code)
		}
	}
	// HEAD says the length without the body.
	req := httptest.NewRequest(http.MethodHead, downloadURL(id, "/wte.weight", "npy"), nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Length") != "3328" || rec.Body.Len() != 0 {
		t.Errorf("HEAD npy = %d Content-Length %q body %d bytes, want 200, 3328 (128 header + 3200) and no body",
			rec.Code, rec.Header().Get("Content-Length"), rec.Body.Len())
	}
}

// The JSON download of a whole checkpoint parses and holds the scalars and tensor values
// the real libraries read.
func TestDownloadJSON(t *testing.T) {
	s := realServer(t, Config{})
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Skip(err)
	}
	var all map[string]struct {
		Scalars map[string]any `json:"scalars"`
	}
	json.Unmarshal(b, &all)
	for _, name := range []string{"lightning_style.ckpt", "numpy_arrays_p4.pkl", "dtypes.pt"} {
		id := uploadFixture(t, s, name)
		rec := do(s, http.MethodGet, downloadURL(id, "", "json"), nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET JSON of %s = %d %.300s", name, rec.Code, rec.Body)
		}
		if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("JSON of %s: Content-Length %q for %d bytes", name, cl, rec.Body.Len())
		}
		var doc any
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("JSON of %s does not parse: %v", name, err)
		}
		checked := 0
		for p, want := range all[name].Scalars {
			switch want.(type) {
			case float64, string, bool, nil:
			default:
				continue // bytes and the like have their own encodings
			}
			got, ok := jsonAt(doc, p)
			if !ok {
				t.Errorf("JSON of %s has nothing at %s", name, p)
				continue
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("JSON of %s at %s = %v, want %v", name, p, got, want)
			}
			checked++
		}
		if name != "dtypes.pt" && checked == 0 {
			t.Errorf("no scalars of %s checked", name)
		}
		for _, wt := range fixtureTensors(t, name) {
			if wt.Numel == 0 || wt.Numel > 8 || len(wt.First) == 0 || wt.DType == "bfloat16" {
				continue
			}
			v, ok := jsonAt(doc, wt.Path)
			obj, _ := v.(map[string]any)
			inner, _ := obj["$tensor"].(map[string]any)
			if inner == nil {
				inner, _ = obj["$ndarray"].(map[string]any)
			}
			if !ok || inner == nil {
				t.Errorf("JSON of %s at %s = %.100s, want a tensor", name, wt.Path, fmt.Sprint(v))
				continue
			}
			if inner["data"] == nil {
				if inner["omitted"] != true {
					t.Errorf("JSON of %s at %s has neither data nor omitted: %.200s", name, wt.Path, fmt.Sprint(inner))
				}
				continue // str, bytes and structured arrays are not decoded
			}
			flat := flatten(inner["data"])
			if len(flat) != len(wt.First) {
				t.Errorf("JSON of %s at %s: %d values, want %d", name, wt.Path, len(flat), len(wt.First))
				continue
			}
			for i := range flat {
				if m, ok := flat[i].(map[string]any); ok && len(wt.Fields) > 0 { // a record
					var rec []any
					for _, f := range wt.Fields {
						rec = append(rec, m[f.Name])
					}
					flat[i] = rec
				}
				if !sameValue(flat[i], wt.First[i]) {
					t.Errorf("JSON of %s at %s: value %d = %v, want %v", name, wt.Path, i, flat[i], wt.First[i])
				}
			}
		}
	}
}

// jsonAt follows a JSON Pointer through the lossless encoding: plain objects and lists,
// and the tagged containers.
func jsonAt(doc any, pointer string) (any, bool) {
	if pointer == "" {
		return doc, true
	}
	v := doc
	for _, seg := range strings.Split(pointer[1:], "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		if m, ok := v.(map[string]any); ok {
			for _, tag := range []string{"$tuple", "$set", "$frozenset"} {
				if inner, ok := m[tag]; ok {
					v = inner
				}
			}
			if attrs, ok := m["attrs"]; ok && m["$object"] != nil {
				v = attrs
			}
			for _, tag := range []string{"$ndarray", "$tensor"} { // an object array's items
				if inner, ok := m[tag].(map[string]any); ok {
					v = inner["data"]
				}
			}
			if d, ok := m["$dict"].([]any); ok {
				found := false
				for _, kv := range d {
					pair, _ := kv.([]any)
					if len(pair) == 2 && fmt.Sprint(pair[0]) == seg {
						v, found = pair[1], true
						break
					}
				}
				if !found {
					return nil, false
				}
				continue
			}
		}
		switch x := v.(type) {
		case map[string]any:
			n, ok := x[seg]
			if !ok {
				return nil, false
			}
			v = n
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func flatten(v any) []any {
	l, ok := v.([]any)
	if !ok {
		return []any{v}
	}
	var out []any
	for _, x := range l {
		out = append(out, flatten(x)...)
	}
	return out
}

// sameValue compares a value of the JSON export with expected.json's "first" entry:
// numbers, bools, non-finite floats ({"$float": "nan"} vs "nan"), big ints as strings,
// complex numbers as [re, im].
func sameValue(got, want any) bool {
	if m, ok := got.(map[string]any); ok && m["$bytes"] == nil {
		if f, ok := m["$float"]; ok {
			return fmt.Sprint(f) == fmt.Sprint(want)
		}
		if c, ok := m["$complex"]; ok {
			return fmt.Sprint(c) == fmt.Sprint(want)
		}
		return false
	}
	if m, ok := got.(map[string]any); ok && m["$bytes"] != nil { // bytes, spelled latin-1 in expected.json
		b, _ := base64.StdEncoding.DecodeString(fmt.Sprint(m["$bytes"]))
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r) == fmt.Sprint(want)
	}
	if g, ok := got.(string); ok {
		return g == fmt.Sprint(want)
	}
	if s, ok := want.(string); ok { // a big int expected.json keeps exact
		g, ok := got.(float64)
		w, err := strconv.ParseFloat(s, 64)
		return ok && err == nil && g == w
	}
	return fmt.Sprint(got) == fmt.Sprint(want)
}

// The stats export has one row per tensor in tree order, with the numbers the stats API
// gives, in CSV and JSON.
func TestStatsExport(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "numpy_arrays_p4.pkl")
	tensors := fixtureTensors(t, "numpy_arrays_p4.pkl")
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/stats/export?format=csv", nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/csv") {
		t.Fatalf("GET CSV export = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if cd := rec.Header().Get("Content-Disposition"); cd != `attachment; filename="numpy_arrays_p4__stats.csv"` {
		t.Errorf("CSV export Content-Disposition = %q", cd)
	}
	lines, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil {
		t.Fatalf("CSV export does not parse: %v", err)
	}
	// tree order: each tensor, then (for a structured array) its fields as arrays of their own
	type row struct {
		path, dtype string
		stats       *wantStats
		column      bool
	}
	var rows []row
	for _, wt := range tensors {
		rows = append(rows, row{path: wt.Path, dtype: wt.DType, stats: wt.Stats})
		for _, f := range wt.Fields {
			rows = append(rows, row{path: wt.Path + "/" + f.Name, column: true})
		}
	}
	if len(lines) != len(rows)+1 {
		t.Fatalf("CSV export has %d lines, want a header and one per tensor and structured field (%d)", len(lines), len(rows))
	}
	col := map[string]int{}
	for i, h := range lines[0] {
		col[h] = i
	}
	for i, wt := range rows {
		line := lines[i+1]
		if line[col["path"]] != wt.path || (!wt.column && line[col["dtype"]] != wt.dtype) {
			t.Errorf("CSV row %d = %s %s, want %s %s (tree order)", i+1, line[col["path"]], line[col["dtype"]], wt.path, wt.dtype)
			continue
		}
		if wt.column {
			if line[col["error"]] != "" || line[col["count"]] == "" {
				t.Errorf("CSV row of the field %s: %v, want its statistics", wt.path, line)
			}
			continue
		}
		if wt.stats == nil {
			if line[col["error"]] == "" {
				t.Errorf("CSV row of %s: no error for values numpy has no statistics of", wt.path)
			}
			continue
		}
		if got := line[col["count"]]; got != strconv.FormatInt(wt.stats.Count, 10) {
			t.Errorf("CSV row of %s: count %s, want %d", wt.path, got, wt.stats.Count)
		}
		if wt.stats.Min != nil && line[col["min"]] != strconv.FormatFloat(*wt.stats.Min, 'g', -1, 64) {
			t.Errorf("CSV row of %s: min %s, want %v", wt.path, line[col["min"]], *wt.stats.Min)
		}
	}

	rec = do(s, http.MethodGet, "/api/checkpoints/"+id+"/stats/export?format=json", nil)
	var doc struct {
		Tensors []struct {
			Path  string
			Stats *wantStats
			Error string
		}
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &doc) != nil || len(doc.Tensors) != len(rows) {
		t.Fatalf("GET JSON export = %d, %d rows, want 200 and %d rows: %.300s", rec.Code, len(doc.Tensors), len(rows), rec.Body)
	}
	for i, wt := range rows {
		if doc.Tensors[i].Path != wt.path || (wt.stats != nil || wt.column) != (doc.Tensors[i].Stats != nil) {
			t.Errorf("JSON export row %d = %s (stats %v), want %s (stats %v)", i, doc.Tensors[i].Path, doc.Tensors[i].Stats != nil, wt.path, wt.stats != nil || wt.column)
		}
	}
	if n := s.stats.computed.Load(); n != 15 { // 13 arrays and the two fields of /structured
		t.Errorf("two exports computed %d statistics, want 15 (each decodable array once)", n)
	}
}

// The all-statistics job runs once per checkpoint, its progress only grows, it ends done
// with every tensor computed, and the statistics are then served from the cache.
func TestStatsAllJob(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	api := "/api/checkpoints/" + id + "/stats/all"
	idle := decode[jobProgress](t, do(s, http.MethodGet, api, nil))
	if idle.State != jobIdle || idle.TensorsTotal != 39 || idle.TensorsDone != 0 || idle.TotalBytes != 30208 {
		t.Errorf("progress before any job = %+v, want idle, 0 of 39 tensors, 30208 bytes", idle)
	}
	// A tensor page computed one tensor already: it counts as done, before and in the job.
	if rec := do(s, http.MethodGet, statsURL(id, "/wpe.weight"), nil); rec.Code != http.StatusOK {
		t.Fatalf("GET stats of /wpe.weight = %d", rec.Code)
	}
	if p := decode[jobProgress](t, do(s, http.MethodGet, api, nil)); p.TensorsDone != 1 || p.DoneBytes != 512 {
		t.Errorf("progress with one tensor computed = %+v, want 1 tensor and 512 bytes done", p)
	}
	rec := do(s, http.MethodPost, api, nil)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d %.200s, want 202", api, rec.Code, rec.Body)
	}
	first := decode[jobProgress](t, rec)
	if first.TensorsDone < 1 || first.DoneBytes < 512 {
		t.Errorf("the job started with %+v, behind what was computed before it", first)
	}
	if first.State != jobRunning && first.State != jobDone {
		t.Errorf("POST answered state %q, want running (or done)", first.State)
	}
	again := do(s, http.MethodPost, api, nil)
	if again.Code != http.StatusAccepted {
		t.Errorf("second POST = %d, want 202", again.Code)
	}
	prev := first
	deadline := time.Now().Add(20 * time.Second)
	var p jobProgress
	for {
		p = decode[jobProgress](t, do(s, http.MethodGet, api, nil))
		if p.DoneBytes < prev.DoneBytes || p.TensorsDone < prev.TensorsDone {
			t.Errorf("progress went back: %+v after %+v", p, prev)
		}
		if p.DoneBytes > p.TotalBytes || p.TensorsDone > p.TensorsTotal {
			t.Errorf("progress beyond the total: %+v", p)
		}
		prev = p
		if p.State != jobRunning || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p.State != jobDone || p.TensorsDone != 39 || p.TensorsTotal != 39 || p.DoneBytes != p.TotalBytes || p.Failed != 0 {
		t.Fatalf("final progress = %+v, want done with all 39 tensors", p)
	}
	computed := s.stats.computed.Load()
	if computed != 38 {
		t.Errorf("the job computed %d statistics, want 38 (39 tensors, two of them the same tied view)", computed)
	}
	for _, wt := range fixtureTensors(t, "state_dict.pt") {
		if rec := do(s, http.MethodGet, statsURL(id, wt.Path), nil); rec.Code != http.StatusOK {
			t.Errorf("GET stats of %s after the job = %d", wt.Path, rec.Code)
		}
	}
	if n := s.stats.computed.Load(); n != computed {
		t.Errorf("statistics after the job were computed again: %d computations, want %d", n, computed)
	}
	// The page shows a sparkline for every tensor of the tree and links the exports.
	page := do(s, http.MethodGet, "/c/"+id, nil).Body.String()
	if n := strings.Count(page, `data-testid="sparkline"`); n != 39 {
		t.Errorf("the checkpoint page shows %d sparklines after the job, want 39", n)
	}
	if !strings.Contains(page, `data-testid="stats-export-csv"`) || !strings.Contains(page, `data-state="done"`) {
		t.Errorf("the checkpoint page does not show the finished job with its exports")
	}
	// The HTML form starts a job too, answering htmx with the block and browsers with a redirect.
	if rec := do(s, http.MethodPost, "/c/"+id+"/stats-all", nil); rec.Code != http.StatusSeeOther {
		t.Errorf("POST the form without htmx = %d, want 303", rec.Code)
	}
	if rec := do(s, http.MethodPost, "/c/"+id+"/stats-all", nil, "HX-Request", "true"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `data-testid="stats-job"`) {
		t.Errorf("POST the form with htmx = %d, want 200 and the block", rec.Code)
	}
}

// layouts.pt holds a sparse COO tensor and a per-channel quantized tensor; torch says what
// their statistics are (expected_layouts.json): the sparse tensor's are its values', the
// per-channel tensor's are of its values dequantized channel by channel. Its raw download
// is the stored integers (int_repr); a sparse tensor has no .npy.
func TestLayoutsMatchTorch(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected_layouts.json"))
	if err != nil {
		t.Skipf("no layouts fixture: %v", err)
	}
	var all map[string]struct {
		Sparse struct {
			Path   string `json:"path"`
			Values struct {
				Stats wantStats `json:"stats"`
			} `json:"values"`
		} `json:"sparse"`
		PerChannel struct {
			Path    string    `json:"path"`
			IntRepr []int8    `json:"int_repr"`
			Deq     wantStats `json:"stats_dequantized"`
		} `json:"per_channel"`
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	want := all["layouts.pt"]
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "layouts.pt")
	check := func(path string, w wantStats) {
		t.Helper()
		rec := do(s, http.MethodGet, statsURL(id, path), nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET stats of %s = %d %.200s", path, rec.Code, rec.Body)
		}
		got := decode[wantStats](t, rec)
		if got.Count != w.Count || *got.Min != *w.Min || *got.Max != *w.Max || !near(*got.Mean, *w.Mean, *w.Std) || !near(*got.Std, *w.Std, 0) {
			t.Errorf("stats of %s = count %d min %v max %v mean %v std %v, want %d %v %v %v %v (torch)", path,
				got.Count, *got.Min, *got.Max, *got.Mean, *got.Std, w.Count, *w.Min, *w.Max, *w.Mean, *w.Std)
		}
		if fmt.Sprint(got.Histogram.Counts) != fmt.Sprint(w.Histogram.Counts) {
			t.Errorf("histogram of %s = %v, want %v", path, got.Histogram.Counts, w.Histogram.Counts)
		}
	}
	check(want.Sparse.Path, want.Sparse.Values.Stats)
	check(want.PerChannel.Path, want.PerChannel.Deq)

	raw := do(s, http.MethodGet, downloadURL(id, want.PerChannel.Path, "raw"), nil)
	wantBytes := make([]byte, len(want.PerChannel.IntRepr))
	for i, q := range want.PerChannel.IntRepr {
		wantBytes[i] = byte(q)
	}
	if raw.Code != http.StatusOK || !bytes.Equal(raw.Body.Bytes(), wantBytes) || raw.Header().Get("X-Ckptview-Dtype") != "int8" {
		t.Errorf("raw of %s = %d %v (%s), want int8 %v", want.PerChannel.Path, raw.Code, raw.Body.Bytes(), raw.Header().Get("X-Ckptview-Dtype"), wantBytes)
	}
	if rec := do(s, http.MethodGet, downloadURL(id, want.Sparse.Path, "npy"), nil); rec.Code != http.StatusUnprocessableEntity {
		t.Errorf("npy of the sparse tensor = %d, want 422", rec.Code)
	}
	for _, target := range []string{"/c/" + id, views.NodeURL(id, want.Sparse.Path), views.NodeURL(id, want.PerChannel.Path)} {
		if rec := do(s, http.MethodGet, target, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d", target, rec.Code)
		}
	}
}

// Statistics past -stats-timeout are a 503 that names the limit, never a stuck request, and
// the next request with a larger budget computes them.
func TestStatsTimeout(t *testing.T) {
	s := realServer(t, Config{StatsTimeout: time.Nanosecond})
	id := uploadFixture(t, s, "state_dict.pt")
	rec := do(s, http.MethodGet, statsURL(id, "/wpe.weight"), nil)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "-stats-timeout") {
		t.Fatalf("GET stats with a 1ns budget = %d %.300s, want 503 naming -stats-timeout", rec.Code, rec.Body)
	}
	s.stats.timeout = time.Minute
	if rec := do(s, http.MethodGet, statsURL(id, "/wpe.weight"), nil); rec.Code != http.StatusOK {
		t.Errorf("GET stats after the budget was raised = %d %.300s, want 200 (a timeout is not cached)", rec.Code, rec.Body)
	}
}

// An all-statistics job nobody polls stops after -stats-job-idle and says why; polling
// keeps it alive, and starting it again finishes it.
func TestStatsJobStopsWhenNobodyPolls(t *testing.T) {
	s := realServer(t, Config{StatsJobIdle: 50 * time.Millisecond, StatsConcurrency: 1})
	id := uploadFixture(t, s, "state_dict.pt")
	api := "/api/checkpoints/" + id + "/stats/all"
	// Hold the only statistics slot, so the job cannot get past its first tensor.
	s.stats.sem <- struct{}{}
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d", api, rec.Code)
	}
	// Polling for longer than the limit keeps the job going.
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p := decode[jobProgress](t, do(s, http.MethodGet, api, nil)); p.State != jobRunning {
			t.Fatalf("a polled job is %+v, want running", p)
		}
	}
	// Then the client leaves.
	time.Sleep(300 * time.Millisecond)
	<-s.stats.sem
	var p jobProgress
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p = s.jobs.job(id).progress(); p.State != jobRunning {
			break
		}
	}
	if p.State != jobFailed || !strings.Contains(p.Error, "-stats-job-idle") {
		t.Fatalf("a job nobody polled is %+v, want failed naming -stats-job-idle", p)
	}
	if p.TensorsDone == p.TensorsTotal {
		t.Errorf("the job ran to its end (%+v) although nobody polled it", p)
	}
	s.cfg.StatsJobIdle = time.Minute
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST again = %d", rec.Code)
	}
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p = decode[jobProgress](t, do(s, http.MethodGet, api, nil)); p.State != jobRunning {
			break
		}
	}
	if p.State != jobDone || p.TensorsDone != p.TensorsTotal || p.Failed != 0 {
		t.Errorf("the restarted job ended %+v, want done with every tensor", p)
	}
}
