package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
)

// statsKey names one tensor's statistics: the checkpoint and the tensor's JSON Pointer.
type statsKey struct{ id, path string }

// statsCache keeps the statistics computed so far (the most recently used max of them),
// computes each tensor's at most once at a time however many requests ask, and bounds how
// many computations run at once server-wide, so a page full of huge tensors cannot make the
// server read them all in parallel.
type statsCache struct {
	max     int
	workers int           // goroutines per computation
	sem     chan struct{} // one token per computation running
	base    context.Context
	timeout time.Duration // of one computation, once it runs

	mu      sync.Mutex
	lru     *list.List // of *statsEntry, most recent first
	entries map[statsKey]*list.Element
	flights map[statsKey]*statsFlight
	// perID counts the entries of each checkpoint, so that a page of one with none asks
	// nothing of each of its tensors (idleProgress)
	perID map[string]int

	// computed counts the computations that finished; tests read it to tell a cache hit.
	computed atomic.Int64
}

type statsEntry struct {
	key   statsKey
	stats *tensor.Stats
}

// statsFlight is one computation in flight; the requests that want its result wait on done.
// When the last of them gives up, the computation is cancelled.
type statsFlight struct {
	done    chan struct{}
	stats   *tensor.Stats
	err     error
	waiters int // guarded by the cache's mutex
	cancel  context.CancelFunc

	pmu      sync.Mutex
	progress []func(elements int64)
}

// report passes the elements a computation has just read to everyone waiting on it.
func (f *statsFlight) report(elements int64) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	for _, p := range f.progress {
		p(elements)
	}
}

func newStatsCache(base context.Context, max, workers, concurrency int, timeout time.Duration) *statsCache {
	return &statsCache{
		max:     max,
		timeout: timeout,
		workers: workers,
		sem:     make(chan struct{}, concurrency),
		base:    base,
		lru:     list.New(),
		entries: map[statsKey]*list.Element{},
		flights: map[statsKey]*statsFlight{},
		perID:   map[string]int{},
	}
}

// holds says whether the cache has statistics of any tensor of checkpoint id.
func (c *statsCache) holds(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.perID[id] > 0
}

// get returns cached statistics without computing anything: what tree rows use.
func (c *statsCache) get(key statsKey) *tensor.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*statsEntry).stats
	}
	return nil
}

// put caches statistics, evicting the least recently used beyond max.
func (c *statsCache) put(key statsKey, s *tensor.Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.insert(key, s)
}

// insert is put with c.mu held.
func (c *statsCache) insert(key statsKey, s *tensor.Stats) {
	if el, ok := c.entries[key]; ok {
		el.Value.(*statsEntry).stats = s
		c.lru.MoveToFront(el)
		return
	}
	c.entries[key] = c.lru.PushFront(&statsEntry{key: key, stats: s})
	c.perID[key.id]++
	for c.lru.Len() > c.max {
		e := c.lru.Remove(c.lru.Back()).(*statsEntry)
		delete(c.entries, e.key)
		if c.perID[e.key.id]--; c.perID[e.key.id] == 0 {
			delete(c.perID, e.key.id)
		}
	}
}

// computeFunc computes one tensor's statistics, reporting the elements it reads.
type computeFunc func(ctx context.Context, progress func(elements int64)) (*tensor.Stats, error)

// compute returns the statistics for key: from the cache, by joining the computation in
// flight, or by starting one that run does once a computation slot is free. progress, if
// set, hears about the elements read from the moment this caller joins.
func (c *statsCache) compute(ctx context.Context, key statsKey, run computeFunc, progress func(int64)) (*tensor.Stats, error) {
	c.mu.Lock()
	if el, ok := c.entries[key]; ok {
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*statsEntry).stats, nil
	}
	f, ok := c.flights[key]
	if !ok {
		fctx, cancel := context.WithCancel(c.base)
		f = &statsFlight{done: make(chan struct{}), cancel: cancel}
		c.flights[key] = f
		go c.run(fctx, key, f, run)
	}
	f.waiters++
	if progress != nil {
		f.pmu.Lock()
		f.progress = append(f.progress, progress)
		f.pmu.Unlock()
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.stats, f.err
	case <-ctx.Done():
		c.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants it any more: stop reading, and let the next request start afresh
			// rather than join a cancelled computation.
			f.cancel()
			if c.flights[key] == f {
				delete(c.flights, key)
			}
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// run computes one flight once a slot is free, caches a success and wakes the waiters.
func (c *statsCache) run(ctx context.Context, key statsKey, f *statsFlight, fn computeFunc) {
	defer f.cancel()
	var s *tensor.Stats
	var err error
	select {
	case c.sem <- struct{}{}:
		// The budget starts once the computation may run: waiting for a slot is not its cost.
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if c.timeout > 0 {
			rctx, cancel = context.WithTimeout(ctx, c.timeout)
		}
		s, err = runGuarded(rctx, fn, f.report)
		if err != nil && ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			err = &statsTimeoutError{limit: c.timeout}
		}
		cancel()
		<-c.sem
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flights[key] == f {
		delete(c.flights, key)
	}
	if err == nil {
		c.insert(key, s)
		c.computed.Add(1)
	}
	f.stats, f.err = s, err
	close(f.done)
}

// runGuarded runs fn, turning a panic into an error: it runs outside any request, where a
// panic would take the server down.
func runGuarded(ctx context.Context, fn computeFunc, progress func(int64)) (s *tensor.Stats, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("server: computing statistics panicked: %v", r)
		}
	}()
	return fn(ctx, progress)
}

// notTensorError is a request for values of a node that has none: a dict, a str, an
// object array.
type notTensorError struct{ msg string }

func (e *notTensorError) Error() string { return e.msg }

// valueError is a tensor whose values cannot be read: a dtype without a numeric decoding
// (str, structured), or a view that reaches past its storage.
type valueError struct {
	path, dtype string
	err         error
}

func (e *valueError) Error() string {
	if errors.Is(e.err, tensor.ErrUnsupported) {
		if strings.HasPrefix(e.dtype, "void") {
			return fmt.Sprintf("the values of %s cannot be decoded as numbers (a structured dtype, %s): no statistics of the whole; each field is an array of its own below it, with statistics, and the whole downloads as .npy, raw or JSON",
				displayPath(e.path), e.dtype)
		}
		return fmt.Sprintf("the values of %s cannot be decoded as numbers (dtype %s): no statistics; download it as .npy, raw or JSON",
			displayPath(e.path), e.dtype)
	}
	return fmt.Sprintf("the values of %s cannot be read: %v", displayPath(e.path), e.err)
}

func (e *valueError) Unwrap() error { return e.err }

func displayPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// resolve follows ref nodes to what they point at (views.ResolveRef, which the pages use).
func resolve(ck *ckpt.Checkpoint, n *ckpt.Node) (*ckpt.Node, error) {
	if t := views.ResolveRef(ck, n); t != nil {
		return t, nil
	}
	return nil, &notTensorError{msg: fmt.Sprintf("%s: a ref that leads nowhere, or too many refs in a row", displayPath(n.Path()))}
}

// statsSource is the view a tensor node's statistics describe (ckpt.Node.View): its
// values, dequantized per tensor or per channel, or a sparse tensor's stored values;
// checked against its storage.
func statsSource(n *ckpt.Node) (*tensor.View, error) {
	if err := numeric(n); err != nil {
		return nil, err
	}
	v := n.View()
	if v == nil {
		return nil, &valueError{path: n.Path(), dtype: n.Tensor.DType, err: errors.New("the file holds no readable data for it")}
	}
	if err := v.Check(); err != nil {
		return nil, &valueError{path: n.Path(), dtype: n.Tensor.DType, err: err}
	}
	return v, nil
}

// storedView is the view of the values a tensor node stores, as they are (a quantized
// tensor's integers): what previews, slices and .npy/raw downloads read.
func storedView(n *ckpt.Node) (*tensor.View, error) {
	if err := numeric(n); err != nil {
		return nil, err
	}
	t := n.Tensor
	if t.Layout != "" {
		return nil, &notTensorError{msg: fmt.Sprintf("%s is a %s tensor: its indices and values are its children; download those, or the whole as JSON",
			displayPath(n.Path()), t.Layout)}
	}
	v := t.View()
	if v == nil {
		return nil, &valueError{path: n.Path(), dtype: t.DType, err: errors.New("the file holds no data for it")}
	}
	if err := v.Check(); err != nil {
		return nil, &valueError{path: n.Path(), dtype: t.DType, err: err}
	}
	return v, nil
}

// numeric checks that a node is a tensor whose dtype has numbers.
func numeric(n *ckpt.Node) error {
	t := n.Tensor
	if t == nil {
		return &notTensorError{msg: fmt.Sprintf("not a tensor: %s is a %s", displayPath(n.Path()), n.Kind)}
	}
	if t.Objects != nil {
		return &notTensorError{msg: fmt.Sprintf("not a tensor of numbers: %s is a numpy object array; download it as JSON instead", displayPath(n.Path()))}
	}
	if tensor.ElementSize(t.DType) == 0 && t.Decoded == nil {
		return &valueError{path: n.Path(), dtype: t.DType, err: fmt.Errorf("%w: %s", tensor.ErrUnsupported, t.DType)}
	}
	return nil
}

// cachedStats returns a tensor's statistics if they have been computed (for it or for a
// tensor tied to it): never reads data.
func (s *Server) cachedStats(o *opened, path string) *tensor.Stats {
	key := o.statsKey(path)
	if st := s.stats.get(key); st != nil {
		return st
	}
	return s.savedStat(o, key)
}

// tensorStats returns the statistics of tensor node n of checkpoint o, computing them
// unless cached. The computation holds the checkpoint open itself, so it is unaffected by
// the caller's release; it is cancelled when every caller waiting for it has gone.
func (s *Server) tensorStats(ctx context.Context, o *opened, n *ckpt.Node, progress func(int64)) (*tensor.Stats, error) {
	return s.computeStats(ctx, o, n, progress, true)
}

// computeStats is tensorStats; single says the statistics are asked for on their own (not
// by a job, which saves all of them at its end), so they are looked for and saved one by
// one beside the blob.
func (s *Server) computeStats(ctx context.Context, o *opened, n *ckpt.Node, progress func(int64), single bool) (*tensor.Stats, error) {
	if _, err := statsSource(n); err != nil {
		return nil, err
	}
	id, path := o.id, n.Path()
	key := o.statsKey(path)
	if st := s.savedStat(o, key); st != nil {
		return st, nil
	}
	if single {
		if st := s.loadSingleStat(ctx, key); st != nil {
			s.stats.put(key, st)
			return st, nil
		}
	}
	// Tied tensors share one key (statsKey), so a request for each joins one computation.
	return s.stats.compute(ctx, key, func(ctx context.Context, p func(int64)) (*tensor.Stats, error) {
		o, release, err := s.cache.get(ctx, id)
		if err != nil {
			return nil, err
		}
		defer release()
		n, err := node(o.ck, path)
		if err != nil {
			return nil, err
		}
		v, err := statsSource(n)
		if err != nil {
			return nil, err
		}
		st, err := tensor.Compute(ctx, v, s.stats.workers, p)
		if err != nil {
			if fault := o.fault(); fault != nil {
				return nil, fault
			}
			return nil, fmt.Errorf("statistics of %s: %w", displayPath(path), err)
		}
		if single {
			s.saveSingleStat(key, st)
		}
		return st, nil
	}, progress)
}

// statsTimeoutError is a tensor whose statistics took longer than -stats-timeout: the
// server's limit, not a fault of the file.
type statsTimeoutError struct{ limit time.Duration }

func (e *statsTimeoutError) Error() string {
	return fmt.Sprintf("computing these statistics took longer than %s, this server's limit (-stats-timeout); try again when the server is less busy, or ask its operator to raise the limit", e.limit)
}
