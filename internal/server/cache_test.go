package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// Concurrent first requests for one checkpoint open it once.
func TestCacheOpensOnce(t *testing.T) {
	var opens atomic.Int32
	release := make(chan struct{})
	c := newCheckpointCache(4, func(id string) (*opened, error) {
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
	c := newCheckpointCache(4, func(id string) (*opened, error) {
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

// Errors other than the loader's are not cached; the loader's are.
func TestCacheErrors(t *testing.T) {
	var opens atomic.Int32
	c := newCheckpointCache(4, func(id string) (*opened, error) {
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
	s := &Server{store: st, load: fakeLoad}
	c := newCheckpointCache(2, s.openCheckpoint)
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
