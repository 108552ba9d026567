package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// opened is a checkpoint the cache holds: its tree and the open blob its tensors read from,
// or, for a file the loader rejected, the loader's error.
type opened struct {
	id   string
	meta store.Meta
	ck   *loader.Checkpoint
	blob *store.Blob
	// err is the *loader.Error for a file that cannot be read. Rejections are cached like
	// successes: the same bytes give the same answer.
	err error

	// refs counts the requests using the blob; an evicted entry closes its blob when the
	// last of them is done. Guarded by the cache's mutex.
	refs    int
	evicted bool
}

// checkpointCache keeps the most recently used opened checkpoints, at most max of them, and
// makes concurrent first requests for one id open it once.
type checkpointCache struct {
	max  int
	open func(id string) (*opened, error)

	mu      sync.Mutex
	lru     *list.List // of *opened, most recent first
	entries map[string]*list.Element
	loading map[string]*openCall
}

// openCall is one open in flight; the requests that arrive meanwhile wait on done.
type openCall struct {
	done chan struct{}
	err  error
}

func newCheckpointCache(max int, open func(id string) (*opened, error)) *checkpointCache {
	return &checkpointCache{
		max:     max,
		open:    open,
		lru:     list.New(),
		entries: map[string]*list.Element{},
		loading: map[string]*openCall{},
	}
}

// get returns the opened checkpoint with that id and a function to call when done with it.
// The blob stays open until then even if the entry is evicted meanwhile. A file the loader
// rejects is returned as its *loader.Error.
func (c *checkpointCache) get(ctx context.Context, id string) (*opened, func(), error) {
	for {
		c.mu.Lock()
		if el, ok := c.entries[id]; ok {
			c.lru.MoveToFront(el)
			o := el.Value.(*opened)
			if o.err != nil {
				c.mu.Unlock()
				return nil, nil, o.err
			}
			o.refs++
			c.mu.Unlock()
			return o, func() { c.release(o) }, nil
		}
		if call, ok := c.loading[id]; ok {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			if call.err != nil {
				return nil, nil, call.err
			}
			continue // the entry is cached now (or already evicted, then open it again)
		}
		call := &openCall{done: make(chan struct{})}
		c.loading[id] = call
		c.mu.Unlock()

		o, err := c.openOnce(id)

		c.mu.Lock()
		delete(c.loading, id)
		call.err = err
		close(call.done)
		if err != nil {
			c.mu.Unlock()
			return nil, nil, err
		}
		c.insert(o)
		if o.err != nil {
			c.mu.Unlock()
			return nil, nil, o.err
		}
		o.refs++
		c.mu.Unlock()
		return o, func() { c.release(o) }, nil
	}
}

// openOnce opens id, turning a panic into an error so that the requests waiting on the
// same open are woken either way.
func (c *checkpointCache) openOnce(id string) (o *opened, err error) {
	defer func() {
		if r := recover(); r != nil {
			o, err = nil, fmt.Errorf("server: opening %s panicked: %v", id, r)
		}
	}()
	return c.open(id)
}

// insert adds o as the most recent entry and evicts the least recent beyond max.
// c.mu is held.
func (c *checkpointCache) insert(o *opened) {
	c.entries[o.id] = c.lru.PushFront(o)
	for c.lru.Len() > c.max {
		c.evict(c.lru.Back())
	}
}

// evict drops an entry; its blob is closed now or when its last user releases it.
// c.mu is held.
func (c *checkpointCache) evict(el *list.Element) {
	o := c.lru.Remove(el).(*opened)
	delete(c.entries, o.id)
	o.evicted = true
	if o.refs == 0 && o.blob != nil {
		o.blob.Close()
	}
}

func (c *checkpointCache) release(o *opened) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	if o.refs == 0 && o.evicted && o.blob != nil {
		o.blob.Close()
	}
}

// close evicts everything.
func (c *checkpointCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
}

// openCheckpoint opens a stored blob with the loader. A file the loader rejects is cached
// as its error; its blob is closed at once since nothing will read it.
func (s *Server) openCheckpoint(id string) (*opened, error) {
	blob, meta, err := s.store.Open(id)
	if err != nil {
		return nil, err
	}
	ck, err := s.load(blob, blob.Size())
	if err != nil {
		blob.Close()
		var lerr *loader.Error
		if errors.As(err, &lerr) {
			return &opened{id: id, meta: meta, err: err}, nil
		}
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	if ck == nil || ck.Root == nil {
		blob.Close()
		return nil, fmt.Errorf("open %s: the loader returned no tree", id)
	}
	return &opened{id: id, meta: meta, ck: ck, blob: blob}, nil
}
