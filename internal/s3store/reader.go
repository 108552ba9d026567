package s3store

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ckptview/ckptview/internal/store"
)

// How a blob is read. A read that starts where an earlier one ended continues a stream:
// its fetches double from what was asked up to chunk, and once there the next ahead chunks
// are fetched in parallel before they are asked for. Any other read fetches what it asks,
// at least minFetch bytes: opening a torch archive reads one small header per tensor, all
// over the file, and must not fetch a chunk for each. A read of bigRead bytes or more is
// split into chunks fetched in parallel straight into the caller's buffer.
const (
	minFetch = 1 << 10
	chunk    = 8 << 20
	ahead    = 3
	bigRead  = 2 * chunk
	// streams is how many sequential readers of one blob are followed at once (the
	// workers of one tensor's statistics, a download, the tree).
	streams = 8
	// getAttempts bounds the tries of one ranged GET whose body broke off: the SDK retries
	// the request itself, not a body that stops midway.
	getAttempts = 3
)

// extent is a fetched (or being fetched) range of an object.
type extent struct {
	key  string
	off  int64
	n    int64
	data []byte
	err  error
	done chan struct{}
	el   *list.Element // in the cache's LRU, once fetched
	// refs counts the readers copying out of data; an evicted extent's buffer goes back
	// to the pool when the last of them is done. Guarded by the cache's mutex.
	refs    int
	evicted bool
}

func (e *extent) end() int64 { return e.off + e.n }

// blockCache holds the extents of every open blob of a Store, at most max bytes of fetched
// ones (extents in flight are bounded by the read-ahead instead).
type blockCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	lru   *list.List // of *extent, most recent first
	byKey map[string][]*extent
	// ahead is the bytes of fetches in flight that no read has asked for yet (read-ahead,
	// WillRead); they start only while it is at most max/2, so memory stays bounded by
	// about 1.5 max however many streams read.
	ahead int64
	// fetched counts the bytes received from the bucket, for tests and the benchmark.
	fetched atomic.Int64
	gets    atomic.Int64
}

func newBlockCache(max int64) *blockCache {
	return &blockCache{max: max, lru: list.New(), byKey: map[string][]*extent{}}
}

// chunkPool recycles the buffers of chunk-sized extents, so that a long sequential scan
// (a download, every tensor's statistics) reuses a few buffers instead of leaving the
// garbage collector a chunk per 8 MiB read.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// buffer returns a buffer of n bytes: pooled for a whole chunk.
func buffer(n int64) []byte {
	if n == chunk {
		return *chunkPool.Get().(*[]byte)
	}
	return make([]byte, n)
}

// release lets go of a reader's hold on e. c.mu is held.
func (c *blockCache) release(e *extent) {
	e.refs--
	if e.refs == 0 && e.evicted {
		recycle(e)
	}
}

func recycle(e *extent) {
	if int64(len(e.data)) == chunk {
		b := e.data
		chunkPool.Put(&b)
	}
	e.data = nil
}

// find returns the extent of key that covers off, fetched or in flight, trying hint
// first (the extent a stream read last). c.mu is held.
func (c *blockCache) find(key string, off int64, hint *extent) *extent {
	if hint != nil && !hint.evicted && hint.off <= off && off < hint.end() {
		if hint.el != nil {
			c.lru.MoveToFront(hint.el)
		}
		return hint
	}
	for _, e := range c.byKey[key] {
		if e.off <= off && off < e.end() {
			if e.el != nil {
				c.lru.MoveToFront(e.el)
			}
			return e
		}
	}
	return nil
}

// add registers an extent in flight. c.mu is held.
func (c *blockCache) add(e *extent) {
	c.byKey[e.key] = append(c.byKey[e.key], e)
}

// fetched records an extent's bytes, or drops it if the fetch failed, and evicts the
// least recently used beyond max.
func (c *blockCache) settle(e *extent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.err != nil {
		c.remove(e)
		return
	}
	e.el = c.lru.PushFront(e)
	c.bytes += int64(len(e.data))
	for c.bytes > c.max && c.lru.Len() > 1 {
		c.remove(c.lru.Back().Value.(*extent))
	}
}

// remove drops an extent; its buffer is recycled once no reader holds it. c.mu is held.
func (c *blockCache) remove(e *extent) {
	if e.el != nil {
		c.lru.Remove(e.el)
		e.el = nil
		c.bytes -= int64(len(e.data))
	}
	e.evicted = true
	if e.refs == 0 {
		recycle(e)
	}
	l := c.byKey[e.key]
	for i, x := range l {
		if x == e {
			l[i] = l[len(l)-1]
			l = l[:len(l)-1]
			break
		}
	}
	if len(l) == 0 {
		delete(c.byKey, e.key)
	} else {
		c.byKey[e.key] = l
	}
}

// Fetched is how many bytes the Store has received from the bucket for blob reads, and in
// how many GETs.
func (s *Store) Fetched() (bytes, gets int64) { return s.cache.fetched.Load(), s.cache.gets.Load() }

// reader reads one object by ranged GETs.
type reader struct {
	cache   *blockCache
	timeout time.Duration
	key     string // the object's name in the cache, unique to its version
	size    int64
	// fetch reads len(buf) bytes at off into buf with one ranged GET.
	fetch func(ctx context.Context, off int64, buf []byte) error

	mu      sync.Mutex
	streams [streams]struct {
		next, window int64
		last         *extent // what the stream read last (guarded by the cache's mutex)
	}
	turn int // which stream slot a new stream takes

	// fault is the first read error that is not the file's doing: an outage
	// (*store.UnavailableError) or a version that changed (*ChangedError).
	fault  atomic.Pointer[error]
	closed atomic.Bool
}

func newReader(cache *blockCache, timeout time.Duration, key string, size int64, fetch func(context.Context, int64, []byte) error) *reader {
	return &reader{cache: cache, timeout: timeout, key: key, size: size, fetch: fetch}
}

// blob wraps the reader as a store.Blob.
func (r *reader) blob() *store.Blob { return store.NewBlob(r, r.size, r.close, r.faultErr) }

func (r *reader) close() error {
	r.closed.Store(true)
	return nil
}

func (r *reader) faultErr() error {
	if f := r.fault.Load(); f != nil {
		return *f
	}
	return nil
}

// ReadAt reads len(p) bytes at off from the object.
func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("s3store: negative offset")
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.size-off)
	var err error
	if want >= bigRead {
		err = r.readParallel(p[:want], off)
	} else {
		err = r.readCached(p[:want], off)
	}
	if err != nil {
		var ue *store.UnavailableError
		var ce *ChangedError
		if errors.As(err, &ue) || errors.As(err, &ce) {
			r.fault.CompareAndSwap(nil, &err)
		}
		return 0, err
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// readCached serves p from the cache, fetching what is missing by the stream rules.
func (r *reader) readCached(p []byte, off int64) error {
	c := r.cache
	seq, window, slot := r.follow(off, int64(len(p)))
	done := int64(0)
	for done < int64(len(p)) {
		cur := off + done
		c.mu.Lock()
		e := c.find(r.key, cur, r.streams[slot].last)
		if e == nil {
			size := max(int64(len(p))-done, minFetch)
			if seq {
				size = max(size, window)
			}
			e = r.start(cur, size)
		}
		if seq && window >= chunk {
			r.prefetch(e)
		}
		r.streams[slot].last = e
		e.refs++
		c.mu.Unlock()
		<-e.done
		var err error
		if e.err != nil {
			err = e.err
		} else {
			done += int64(copy(p[done:], e.data[cur-e.off:]))
		}
		c.mu.Lock()
		c.release(e)
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// follow finds the stream a read continues, or starts one, and returns whether the read
// is sequential, the stream's fetch size and its slot.
func (r *reader) follow(off, n int64) (bool, int64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.streams {
		st := &r.streams[i]
		if st.window > 0 && st.next == off {
			st.window = min(max(2*st.window, n), chunk)
			st.next = off + n
			return true, st.window, i
		}
	}
	i := r.turn
	r.turn = (r.turn + 1) % streams
	st := &r.streams[i]
	st.next, st.window = off+n, max(n, minFetch)
	return false, 0, i
}

// WillRead says that [off, off+n) is about to be read (a tensor's bytes, by statistics or
// a download): its first chunks are fetched now, in parallel, instead of one after the
// other as a stream's fetches grow.
func (r *reader) WillRead(off, n int64) {
	if off < 0 || off >= r.size || n <= 0 {
		return
	}
	end := min(off+n, r.size)
	c := r.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i <= ahead && off < end; i++ {
		x := c.find(r.key, off, nil)
		if x == nil {
			if x = r.speculate(off, min(chunk, end-off)); x == nil {
				return
			}
		}
		off = x.end()
	}
}

// speculate starts the fetch of [off, off+size) that no read has asked for yet, unless
// the read-ahead in flight is at its bound; it returns nil then. The cache's mutex is held.
func (r *reader) speculate(off, size int64) *extent {
	c := r.cache
	if c.ahead+size > c.max/2 {
		return nil
	}
	e := r.start(off, size)
	c.ahead += e.n
	go func() {
		<-e.done
		c.mu.Lock()
		c.ahead -= e.n
		c.mu.Unlock()
	}()
	return e
}

// start registers and launches the fetch of [off, off+size) clipped to the object.
// The cache's mutex is held.
func (r *reader) start(off, size int64) *extent {
	size = min(size, r.size-off)
	// do not fetch again what an extent further on already holds
	for _, x := range r.cache.byKey[r.key] {
		if x.off > off && x.off < off+size {
			size = x.off - off
		}
	}
	e := &extent{key: r.key, off: off, n: size, done: make(chan struct{})}
	r.cache.add(e)
	go func() {
		e.data, e.err = r.get(off, size, buffer(size))
		r.cache.settle(e)
		close(e.done)
	}()
	return e
}

// prefetch makes sure the ahead chunks after e are fetched or in flight. The cache's
// mutex is held.
func (r *reader) prefetch(e *extent) {
	next := e.end()
	for i := 0; i < ahead && next < r.size; i++ {
		x := r.cache.find(r.key, next, nil)
		if x == nil {
			if x = r.speculate(next, chunk); x == nil {
				return
			}
		}
		next = x.end()
	}
}

// readParallel fetches a large read in chunks, several at once, into p.
func (r *reader) readParallel(p []byte, off int64) error {
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	sem := make(chan struct{}, ahead+1)
	for at := int64(0); at < int64(len(p)); at += chunk {
		part := p[at:min(at+chunk, int64(len(p)))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := r.get(off+at, int64(len(part)), part); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// get fetches n bytes at off, into buf if given. A body that breaks off is fetched again,
// a few times, with backoff (the SDK and net/http retry requests, not broken bodies).
func (r *reader) get(off, n int64, buf []byte) ([]byte, error) {
	if buf == nil {
		buf = make([]byte, n)
	}
	// One deadline for every attempt: a read never takes longer than the timeout.
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < getAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(100<<(2*attempt)) * time.Millisecond):
			case <-ctx.Done():
				return nil, err
			}
		}
		r.cache.gets.Add(1)
		if err = r.fetch(ctx, off, buf); err == nil {
			r.cache.fetched.Add(int64(len(buf)))
			return buf, nil
		}
		var changed *ChangedError
		var refused *RemoteError
		if errors.As(err, &changed) || errors.As(err, &refused) || r.closed.Load() || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

// ChangedError is an object opened in place that is no longer the one opened: its ETag
// changed (or the server stopped honouring the Range asked).
type ChangedError struct{ What string }

func (e *ChangedError) Error() string {
	return e.What + " has changed since it was opened; open it again to see the new version"
}

// s3Fetch reads ranges of one version of an S3 object: every GET carries If-Match.
func s3Fetch(client *s3.Client, bucket, key, etag string) func(context.Context, int64, []byte) error {
	return func(ctx context.Context, off int64, buf []byte) error {
		in := &s3.GetObjectInput{Bucket: &bucket, Key: &key,
			Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(buf))-1))}
		if etag != "" {
			in.IfMatch = aws.String(etag)
		}
		out, err := client.GetObject(ctx, in)
		if err != nil {
			var re *awshttp.ResponseError
			if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed {
				return &ChangedError{What: "s3://" + bucket + "/" + key}
			}
			return unavailable(err)
		}
		defer out.Body.Close()
		if _, err := io.ReadFull(out.Body, buf); err != nil {
			return unavailable(fmt.Errorf("reading bytes %d-%d of s3://%s/%s: %w", off, off+int64(len(buf))-1, bucket, key, err))
		}
		return nil
	}
}
