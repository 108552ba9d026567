package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

func TestDownloadName(t *testing.T) {
	for _, tc := range []struct {
		file, pointer, ext, want string
	}{
		{"state_dict.pt", "/wte.weight", ".npy", "state_dict__wte.weight.npy"},
		{"state_dict.pt", "/wte.weight", "__float32_50x16.bin", "state_dict__wte.weight__float32_50x16.bin"},
		{"state_dict.pt", "", ".json", "state_dict.json"},
		{"model.ckpt", "/state_dict/model.0.weight", ".npy", "model__state_dict.model.0.weight.npy"},
		{"m.pt", "/a~1b/c~0d", ".npy", "m__a.b.c_d.npy"},
		{"m.pt", "/../../etc/passwd", ".npy", "m__etc.passwd.npy"},
		{"m.pt", "/..", ".json", "m.json"},
		{`we"ird name.pt`, "/say \"hi\"\r\nSet-Cookie: x=1", ".json", "we_ird_name__say_hi_Set-Cookie_x_1.json"},
		{"été.pt", "/poids/日本語", ".npy", "t__poids.npy"},
		{".hidden", "/x", ".npy", "hidden__x.npy"},
		{"", "/x", ".npy", "checkpoint__x.npy"},
		{"a.b.c.pt", "/1/2", ".npy", "a.b.c__1.2.npy"},
		{strings.Repeat("n", 300) + ".pt", "/" + strings.Repeat("p", 200) + ".weight", ".npy",
			strings.Repeat("n", maxNamePart) + "__" + strings.Repeat("p", maxNamePart-len(".weight")) + ".weight.npy"},
	} {
		if got := downloadName(tc.file, tc.pointer, tc.ext); got != tc.want {
			t.Errorf("downloadName(%q, %q, %q) = %q, want %q", tc.file, tc.pointer, tc.ext, got, tc.want)
		}
	}
}

// hostileKey is a dict key that tries to escape a Content-Disposition header and a
// download directory.
const hostileKey = "../\"evil\"\r\nX-Injected: 1; é/日本"

// dataTree is a checkpoint of tensors with real bytes in memory: a hostile key, a sparse
// COO tensor as the loader shows it (an object whose arguments hold the indices and values
// tensors), and a per-channel quantized tensor with its scales and zero points.
func dataTree() *ckpt.Checkpoint {
	f32 := func(vals ...float32) *ckpt.Storage {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return &ckpt.Storage{Key: "f", DType: "float32", ByteOrder: "little", Size: int64(len(b)), Data: bytes.NewReader(b)}
	}
	i64 := func(vals ...int64) *ckpt.Storage {
		b := make([]byte, 8*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
		}
		return &ckpt.Storage{Key: "i", DType: "int64", ByteOrder: "little", Size: int64(len(b)), Data: bytes.NewReader(b)}
	}
	tn := func(key, path, dtype string, st *ckpt.Storage, shape ...int64) *ckpt.Node {
		strides := make([]int64, len(shape))
		n := int64(1)
		for i := len(shape) - 1; i >= 0; i-- {
			strides[i] = n
			n *= shape[i]
		}
		st.Users = append(st.Users, path)
		return &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: key, Seg: key,
			Tensor: &ckpt.Tensor{DType: dtype, Shape: shape, Strides: strides, Storage: st}}
	}
	hostile := tn(hostileKey, "/"+ckpt.EscapeSegment(hostileKey), "float32", f32(1, -2, 3, 0, 0, 6), 2, 3)
	sparse := &ckpt.Node{Kind: ckpt.KindObject, Type: "torch.Tensor", Global: "torch._utils._rebuild_sparse_tensor",
		Key: "sparse", Seg: "sparse"}
	args := &ckpt.Node{Kind: ckpt.KindTuple, Type: "tuple", Key: "__args__", Seg: "__args__"}
	args.Children = []*ckpt.Node{
		{Kind: ckpt.KindGlobal, Global: "torch.sparse_coo", Key: "0", Seg: "0"},
		tn("1", "/sparse/__args__/1", "int64", i64(0, 1, 2, 0, 1, 2), 2, 3),
		tn("2", "/sparse/__args__/2", "float32", f32(0.5, -1.5, 2.5), 3),
	}
	sparse.Children = []*ckpt.Node{args}
	// The loader now shows a sparse tensor as a tensor with a layout and no storage, whose
	// children are its indices and values.
	coo := &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: "coo", Seg: "coo",
		Tensor: &ckpt.Tensor{DType: "float32", Shape: []int64{3, 3}, Layout: "sparse_coo"}}
	coo.Children = []*ckpt.Node{
		tn("indices", "/coo/indices", "int64", i64(0, 1, 2, 0, 1, 2), 2, 3),
		tn("values", "/coo/values", "float32", f32(4, -8, 16), 3),
	}

	qb := []byte{0, 1, 2, 3, 250, 255} // quint8 per channel, axis 0
	qst := &ckpt.Storage{Key: "q", DType: "quint8", ByteOrder: "little", Size: int64(len(qb)), Data: bytes.NewReader(qb)}
	q := tn("q", "/q", "quint8", qst, 2, 3)
	q.Tensor.Quant = &ckpt.Quantization{Scheme: "per_channel_affine", Axis: 0}
	q.Children = []*ckpt.Node{
		tn("scales", "/q/scales", "float32", f32(0.1, 0.2), 2),
		tn("zero_points", "/q/zero_points", "int64", i64(0, 128), 2),
	}
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Children: []*ckpt.Node{hostile, sparse, coo, q}}
	root.Len = int64(len(root.Children))
	ckpt.Link(root)
	return &ckpt.Checkpoint{Format: "fake", Root: root, Tensors: 6, Parameters: 26, BytesByDType: map[string]int64{"float32": 44}}
}

// dataServer serves dataTree for any upload.
func dataServer(t *testing.T) (*Server, string) {
	t.Helper()
	s := newTestServer(t, t.TempDir())
	s.load = func(io.ReaderAt, int64) (*ckpt.Checkpoint, error) { return dataTree(), nil }
	rec := do(s, http.MethodPost, "/api/checkpoints?name="+"we%22ird%20name.pt", bytes.NewReader([]byte("data tree")))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %.200s", rec.Code, rec.Body)
	}
	return s, decode[uploadJSON](t, rec).ID
}

// Every download is named with only [A-Za-z0-9._-], however hostile the key and file name.
func TestDownloadNameHostile(t *testing.T) {
	s, id := dataServer(t)
	safe := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	p := "/" + ckpt.EscapeSegment(hostileKey)
	for _, format := range []string{"json", "npy", "raw"} {
		rec := do(s, http.MethodGet, downloadURL(id, p, format), nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s of the hostile key = %d %.200s", format, rec.Code, rec.Body)
		}
		cd := rec.Header().Get("Content-Disposition")
		if strings.ContainsAny(cd, "\r\n") || len(rec.Header().Values("X-Injected")) > 0 {
			t.Errorf("%s: header injection: Content-Disposition %q", format, cd)
		}
		// the ASCII name every client reads, and the UTF-8 one (filename*) that keeps the
		// key's letters: both sanitised
		ascii := regexp.MustCompile(`filename="([^"]*)"`).FindStringSubmatch(cd)
		_, params, err := mime.ParseMediaType(cd)
		name := params["filename"]
		letters := regexp.MustCompile(`^[\pL\pN][\pL\pN._-]*$`)
		if err != nil || ascii == nil || !safe.MatchString(ascii[1]) || strings.Contains(ascii[1], "..") ||
			!letters.MatchString(name) || strings.Contains(name, "..") {
			t.Errorf("%s: Content-Disposition %q (file name %q), want a sanitised name", format, cd, name)
		}
		if !strings.Contains(name, "é.日本") {
			t.Errorf("%s: the UTF-8 file name %q lost the key's letters", format, name)
		}
		if !strings.HasPrefix(name, "we_ird_name__evil_X-Injected_1") {
			t.Errorf("%s: file name %q, want it to start with the sanitised checkpoint and key", format, name)
		}
	}
}

// Sparse COO tensors (as an object holding its indices and values, and as a tensor with a
// layout whose children they are) and a per-channel quantized tensor break nothing: pages
// render, the tensors inside have statistics, a sparse tensor's are its values', the
// per-channel tensor's are dequantized channel by channel (and its page says so), .npy of
// a sparse tensor is refused with the reason, and the export lists every tensor.
func TestSparseAndPerChannel(t *testing.T) {
	s, id := dataServer(t)
	for _, target := range []string{
		"/c/" + id, "/c/" + id + "?view=raw", "/c/" + id + "/n/sparse", "/c/" + id + "/n/sparse/__args__/1",
		"/c/" + id + "/n/q", "/c/" + id + "/n/q/scales", "/c/" + id + "/n/coo", "/c/" + id + "/n/coo/values",
		"/c/" + id + "/fragment/children?path=/sparse/__args__",
	} {
		if rec := do(s, http.MethodGet, target, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d %.200s", target, rec.Code, rec.Body)
		}
	}
	vals := decode[map[string]any](t, do(s, http.MethodGet, statsURL(id, "/sparse/__args__/2"), nil))
	if vals["count"] != 3.0 || vals["min"] != -1.5 || vals["max"] != 2.5 {
		t.Errorf("stats of the sparse values = %v, want count 3, min -1.5, max 2.5", vals)
	}
	coo := decode[map[string]any](t, do(s, http.MethodGet, statsURL(id, "/coo"), nil))
	if coo["count"] != 3.0 || coo["min"] != -8.0 || coo["max"] != 16.0 {
		t.Errorf("stats of the sparse tensor = %v, want its values': count 3, min -8, max 16", coo)
	}
	if rec := do(s, http.MethodGet, downloadURL(id, "/coo", "npy"), nil); rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), "sparse_coo") {
		t.Errorf("npy of the sparse tensor = %d %.200s, want 422 naming its layout", rec.Code, rec.Body)
	}
	if rec := do(s, http.MethodGet, downloadURL(id, "/coo", "json"), nil); rec.Code != http.StatusOK {
		t.Errorf("JSON of the sparse tensor = %d %.200s", rec.Code, rec.Body)
	}
	// Channel 0: (q - 0) × 0.1 over 0, 1, 2; channel 1: (q - 128) × 0.2 over 3, 250, 255.
	q := decode[map[string]any](t, do(s, http.MethodGet, statsURL(id, "/q"), nil))
	if q["min"] != float64(float32(-125*float32(0.2))) || q["max"] != float64(float32(127*float32(0.2))) {
		t.Errorf("stats of the per-channel tensor = min %v max %v, want each channel dequantized: -25 and 25.4", q["min"], q["max"])
	}
	page := do(s, http.MethodGet, "/c/"+id+"/n/q?stats=compute", nil).Body.String()
	if !strings.Contains(page, "each channel with its own scale and zero point") || !strings.Contains(page, "The stored integers") {
		t.Errorf("the per-channel tensor's page does not say its statistics are dequantized per channel and its values the integers")
	}
	npy := do(s, http.MethodGet, downloadURL(id, "/q", "raw"), nil)
	if !bytes.Equal(npy.Body.Bytes(), []byte{0, 1, 2, 3, 250, 255}) {
		t.Errorf("raw download of the per-channel tensor = %v, want the stored integers", npy.Body.Bytes())
	}
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/stats/export?format=csv", nil)
	lines, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil || len(lines) != 10 {
		t.Errorf("CSV export has %d lines (%v), want a header and 9 tensors", len(lines), err)
	}
}

// statsOf is a computeFunc returning fixed statistics after release is closed.
func statsOf(release <-chan struct{}, runs *atomic.Int32) computeFunc {
	return func(ctx context.Context, _ func(int64)) (*tensor.Stats, error) {
		runs.Add(1)
		select {
		case <-release:
			return &tensor.Stats{Numel: 1, Count: 1}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Concurrent requests for one tensor's statistics compute them once.
func TestStatsCacheFlight(t *testing.T) {
	c := newStatsCache(context.Background(), 8, 1, 2, 0)
	var runs atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := c.compute(context.Background(), statsKey{"a", "/w"}, statsOf(release, &runs), nil); err != nil {
				t.Errorf("compute: %v", err)
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if runs.Load() != 1 || c.computed.Load() != 1 {
		t.Errorf("10 concurrent requests ran %d computations (%d finished), want 1", runs.Load(), c.computed.Load())
	}
	if c.get(statsKey{"a", "/w"}) == nil {
		t.Errorf("the result is not cached")
	}
}

// No more computations run at once than the semaphore allows.
func TestStatsCacheBounded(t *testing.T) {
	const limit = 2
	c := newStatsCache(context.Background(), 64, 1, limit, 0)
	var running, peak atomic.Int32
	fn := func(ctx context.Context, _ func(int64)) (*tensor.Stats, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		return &tensor.Stats{}, nil
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			if _, err := c.compute(context.Background(), statsKey{"a", string(rune('a' + i))}, fn, nil); err != nil {
				t.Errorf("compute: %v", err)
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Errorf("%d computations ran at once, want at most %d", peak.Load(), limit)
	}
}

// When the only request waiting for a computation goes away, the computation is cancelled
// and the next request starts a fresh one.
func TestStatsCacheCancel(t *testing.T) {
	c := newStatsCache(context.Background(), 8, 1, 1, 0)
	var runs atomic.Int32
	never := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.compute(ctx, statsKey{"a", "/w"}, statsOf(never, &runs), nil)
		done <- err
	}()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("compute after its request ended = %v, want context.Canceled", err)
	}
	// The slot frees up: a new request computes.
	release := make(chan struct{})
	close(release)
	st, err := c.compute(context.Background(), statsKey{"a", "/w"}, statsOf(release, &runs), nil)
	if err != nil || st == nil {
		t.Fatalf("compute after a cancelled one = %v, %v", st, err)
	}
	if runs.Load() != 2 {
		t.Errorf("%d runs, want 2 (the cancelled one and a fresh one)", runs.Load())
	}
}

// A panic in a computation is an error, not a crash.
func TestStatsCachePanic(t *testing.T) {
	c := newStatsCache(context.Background(), 8, 1, 1, 0)
	_, err := c.compute(context.Background(), statsKey{"a", "/w"}, func(context.Context, func(int64)) (*tensor.Stats, error) {
		panic("boom")
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("compute of a panicking function = %v, want an error naming the panic", err)
	}
}

// The cache keeps at most its size, dropping the least recently used.
func TestStatsCacheEvicts(t *testing.T) {
	c := newStatsCache(context.Background(), 2, 1, 1, 0)
	for _, p := range []string{"/a", "/b"} {
		c.put(statsKey{"x", p}, &tensor.Stats{})
	}
	c.get(statsKey{"x", "/a"}) // /b is now the least recently used
	c.put(statsKey{"x", "/c"}, &tensor.Stats{})
	if c.get(statsKey{"x", "/b"}) != nil || c.get(statsKey{"x", "/a"}) == nil || c.get(statsKey{"x", "/c"}) == nil {
		t.Errorf("after three puts into a cache of two, want /a and /c kept, /b evicted")
	}
}
