package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// Concurrent first requests for one checkpoint open it once.
func TestCacheOpensOnce(t *testing.T) {
	var opens atomic.Int32
	release := make(chan struct{})
	c := newCheckpointCache(4, 1<<30, func(_ context.Context, id string) (*opened, error) {
		opens.Add(1)
		<-release
		return &opened{id: id, ck: fakeTree()}, nil
	})
	const n = 20
	var wg sync.WaitGroup
	got := make([]*opened, n)
	for i := range n {
		wg.Go(func() {
			o, done, err := c.get(context.Background(), "a")
			if err != nil {
				t.Errorf("get #%d: %v", i, err)
				return
			}
			got[i] = o
			done()
		})
	}
	close(release)
	wg.Wait()
	if opens.Load() != 1 {
		t.Errorf("%d concurrent gets opened the checkpoint %d times, want 1", n, opens.Load())
	}
	for i := range n {
		if got[i] != got[0] {
			t.Errorf("get #%d returned another entry than get #0", i)
		}
	}
}

// A waiter whose request ends stops waiting; the open goes on for the others.
func TestCacheWaiterCancelled(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	c := newCheckpointCache(4, 1<<30, func(_ context.Context, id string) (*opened, error) {
		close(started)
		<-release
		return &opened{id: id, ck: fakeTree()}, nil
	})
	first := make(chan error, 1)
	go func() {
		_, done, err := c.get(context.Background(), "a")
		if err == nil {
			done()
		}
		first <- err
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := c.get(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("get with an ended context while another opens = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the first get: %v", err)
	}
}

// When the request opening a checkpoint goes away while others wait for it, one of them
// opens it instead of all failing with the first one's cancellation.
func TestCacheOpenerCancelled(t *testing.T) {
	var opens atomic.Int32
	started := make(chan struct{}, 2)
	c := newCheckpointCache(4, 1<<30, func(ctx context.Context, id string) (*opened, error) {
		if opens.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done() // waiting for an open slot when the client leaves
			return nil, ctx.Err()
		}
		return &opened{id: id, ck: fakeTree()}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, _, err := c.get(ctx, "a")
		first <- err
	}()
	<-started
	second := make(chan error, 1)
	go func() {
		_, done, err := c.get(context.Background(), "a")
		if err == nil {
			done()
		}
		second <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("get whose request ended = %v, want context.Canceled", err)
	}
	if err := <-second; err != nil {
		t.Errorf("get waiting on a cancelled open = %v, want the checkpoint", err)
	}
}

// The cache keeps at most its byte budget of trees, but always the most recent one; over
// budget, large trees go before small ones.
func TestCacheBytes(t *testing.T) {
	c := newCheckpointCache(100, 250, func(_ context.Context, id string) (*opened, error) {
		size := int64(100)
		switch {
		case id == "big":
			size = 1000
		case strings.HasPrefix(id, "small"):
			size = 10
		case strings.HasPrefix(id, "large"):
			size = 120
		}
		return &opened{id: id, ck: fakeTree(), size: size}, nil
	})
	get := func(id string) {
		_, done, err := c.get(context.Background(), id)
		if err != nil {
			t.Fatalf("get(%q): %v", id, err)
		}
		done()
	}
	cached := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var ids []string
		for el := c.lru.Front(); el != nil; el = el.Next() {
			ids = append(ids, el.Value.(*opened).id)
		}
		return ids
	}
	get("a")
	get("b")
	get("c") // 300 bytes: a goes
	if got, want := strings.Join(cached(), " "), "c b"; got != want {
		t.Errorf("after a, b, c of 100 bytes each with a budget of 250, the cache holds %q, want %q", got, want)
	}
	get("big")
	if got, want := strings.Join(cached(), " "), "big"; got != want {
		t.Errorf("after a tree over the whole budget, the cache holds %q, want %q", got, want)
	}
	get("small1") // big goes
	get("small2")
	get("large1")
	get("large2") // 260 bytes: large1 goes, though small1 is older
	if got, want := strings.Join(cached(), " "), "large2 small2 small1"; got != want {
		t.Errorf("after small1, small2, large1, large2, the cache holds %q, want %q", got, want)
	}
}

// At most OpenConcurrency files are opened at once, however many requests ask.
func TestOpenConcurrency(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	var running, peak atomic.Int32
	release := make(chan struct{})
	s.load = func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		return fakeLoad(r, size)
	}
	const n = 8
	ids := make([]string, n)
	for i := range n {
		m, err := s.store.Put(context.Background(), "f", strings.NewReader(fmt.Sprint("FAKE ", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = m.ID
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil); rec.Code != http.StatusOK {
				t.Errorf("GET /api/checkpoints/%s = %d %s", id, rec.Code, rec.Body)
			}
		})
	}
	for running.Load() < int32(s.cfg.OpenConcurrency) {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p > int32(s.cfg.OpenConcurrency) {
		t.Errorf("%d files were opened at once, want at most OpenConcurrency = %d", p, s.cfg.OpenConcurrency)
	}
}

// A stored file reaches the loader as a local file: the loader reads a reader that takes
// WillRead hints as a bucket's, reading a torch archive's local headers twice each and
// without its header cache, which is only worth it over the network.
func TestStoredFileIsReadAsLocal(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	var hinted atomic.Bool
	s.load = func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
		_, ok := r.(interface{ WillRead(off, n int64) })
		hinted.Store(ok)
		return fakeLoad(r, size)
	}
	if rec := do(s, http.MethodPost, "/api/checkpoints?name=f.pt", strings.NewReader("FAKE")); rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %s", rec.Code, rec.Body)
	}
	if hinted.Load() {
		t.Error("the loader was given a stored file as a reader that takes WillRead hints, as a bucket's blob is")
	}
}

// treeBytes grows with the tree and its text.
func TestTreeBytes(t *testing.T) {
	small := fakeTree()
	big := fakeTree()
	big.Root.Children[2].Str = strings.Repeat("x", 1<<20)
	if a, b := treeBytes(small), treeBytes(big); a < fakeItems*nodeBytes || b < a+1<<20 {
		t.Errorf("treeBytes = %d for the fake tree (%d nodes), %d with a 1 MiB string; want at least %d and %d",
			a, fakeItems+8, b, fakeItems*nodeBytes, a+1<<20)
	}
}

// Errors other than the loader's are not cached; the loader's are.
func TestCacheErrors(t *testing.T) {
	var opens atomic.Int32
	c := newCheckpointCache(4, 1<<30, func(_ context.Context, id string) (*opened, error) {
		opens.Add(1)
		switch id {
		case "io":
			return nil, io.ErrUnexpectedEOF
		case "panic":
			panic("boom")
		}
		return &opened{id: id, err: &loader.Error{Msg: "bad", Offset: -1}}, nil
	})
	for _, tc := range []struct {
		id        string
		wantOpens int32
		check     func(error) bool
	}{
		{"io", 2, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"panic", 2, func(err error) bool { return err != nil && strings.Contains(err.Error(), "panicked") }},
		{"bad", 1, func(err error) bool { var l *loader.Error; return errors.As(err, &l) }},
	} {
		opens.Store(0)
		for range 2 {
			if _, _, err := c.get(context.Background(), tc.id); !tc.check(err) {
				t.Errorf("get(%q) = %v", tc.id, err)
			}
		}
		if opens.Load() != tc.wantOpens {
			t.Errorf("two gets of %q opened it %d times, want %d", tc.id, opens.Load(), tc.wantOpens)
		}
	}
}

// An evicted checkpoint's file stays open for the request still using it and is closed
// when that request is done.
func TestCacheEviction(t *testing.T) {
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		m, err := st.Put(context.Background(), "f", strings.NewReader(fmt.Sprint("FAKE ", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	s := &Server{store: st, load: fakeLoad, opens: make(chan struct{}, 1)}
	c := newCheckpointCache(2, 1<<30, s.openCheckpoint)
	ctx := context.Background()

	held, done, err := c.get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	a, doneA, _ := c.get(ctx, ids[1])
	doneA()
	_, doneB, _ := c.get(ctx, ids[2]) // evicts ids[0], still held
	doneB()
	readable := func(o *opened) bool {
		_, err := o.blob.ReadAt(make([]byte, 1), 0)
		return err == nil
	}
	if !readable(held) {
		t.Errorf("an evicted checkpoint still in use has its file closed")
	}
	done()
	if readable(held) {
		t.Errorf("an evicted checkpoint's file is still open after its last use")
	}
	if !readable(a) {
		t.Errorf("a cached checkpoint's file is closed")
	}
	c.close()
	if readable(a) {
		t.Errorf("a checkpoint's file is still open after the cache is closed")
	}
	// Opening an evicted id again works.
	o, done, err := c.get(ctx, ids[0])
	if err != nil || !readable(o) {
		t.Errorf("get of an evicted id = %v", err)
	} else {
		done()
	}
}

// Serve answers requests and returns when its context ends.
func TestServeShutdown(t *testing.T) {
	s := newTestServer(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/static/app.css")
	if err != nil {
		t.Fatalf("GET from the running server: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /static/app.css from the running server = %d, want 200", resp.StatusCode)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve after its context ended = %v, want nil", err)
	}
}

// What a page makes from a tree and the checkpoint keeps (its module tree, the layout of
// its layer chart, key indexes) is charged to the cache entry when the request is done,
// once: a second view of the page makes nothing new and charges nothing more.
func TestCacheChargesWhatPagesKeep(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	charge := func() (size, total, derived int64) {
		o, release, err := s.cache.get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		release()
		s.cache.mu.Lock()
		defer s.cache.mu.Unlock()
		return o.size, s.cache.bytes, o.ck.DerivedBytes()
	}
	before, totalBefore, _ := charge()
	if rec := do(s, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
		t.Fatalf("page: %d", rec.Code)
	}
	after, totalAfter, derived := charge()
	if derived <= 0 || after != before+derived || totalAfter != totalBefore+derived {
		t.Errorf("after the page, the entry is charged %d (cache %d), before %d (cache %d), with %d bytes derived", after, totalAfter, before, totalBefore, derived)
	}
	do(s, http.MethodGet, "/c/"+id, nil)
	if again, totalAgain, _ := charge(); again != after || totalAgain != totalAfter {
		t.Errorf("a second view charged %d more", again-after)
	}
}

// A checkpoint whose statistics units could not be made once (a panic: a bug) is not left
// without units: the next request makes them.
func TestStatsUnitsAfterAPanic(t *testing.T) {
	o := &opened{} // no tree: making the units panics
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("making the units of a checkpoint without a tree did not panic")
			}
		}()
		o.statsUnits()
	}()
	data, err := os.ReadFile(filepath.Join(fixturesDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	if o.ck, err = loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{}); err != nil {
		t.Fatal(err)
	}
	units, _ := o.statsUnits()
	if len(units) == 0 {
		t.Fatal("no statistics units after the first try panicked")
	}
}
