package server

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// opened is a checkpoint the cache holds: its tree and the open blob its tensors read from,
// or, for a file the loader rejected, the loader's error.
type opened struct {
	id   string
	meta store.Meta
	ck   *ckpt.Checkpoint
	blob *store.Blob
	// files are the blobs of a set's files (a sharded checkpoint's shards).
	files []*store.Blob
	// err is the *loader.Error for a file that cannot be read. Rejections are cached like
	// successes: the same bytes give the same answer.
	err error
	// size estimates the memory the entry holds, for the cache's byte budget: its tree
	// (treeBytes) and what pages have made from it since (recharge).
	size int64

	// refs counts the requests using the blob; an evicted entry closes its blob when the
	// last of them is done. Guarded by the cache's mutex.
	refs    int
	evicted bool
	// derived is the part of size that recharge counted (ckpt.DerivedBytes when it last
	// looked). Guarded by the cache's mutex.
	derived int64

	// the statistics units of the tree (tensors grouped by identical views), made on
	// first use
	// saved is the checkpoint's statistics saved beside its blob, once read
	saved savedStats

	// namesMu guards names: the names later uploads of the same bytes gave while the
	// entry was cached (meta has those stored before it was opened).
	namesMu sync.Mutex
	names   []string

	// unitsMu guards units and unitOf, made at their first use (statsUnits)
	unitsMu   sync.Mutex
	unitsMade bool
	units     []statsUnit
	unitOf    map[string]*statsUnit
	// unitTensors and unitBytes sum the units up (unitTotals)
	totalsOnce  sync.Once
	unitTensors int
	unitBytes   int64
}

// statsUnits returns the checkpoint's statistics units in tree order, and the unit of
// each tensor path but the rows' (a row is a unit of its own: unitOfNode). Calls at once
// wait for the one that makes them; one that panics makes none (its request is a 500), and
// the next call tries again rather than find the checkpoint without units.
func (o *opened) statsUnits() ([]statsUnit, map[string]*statsUnit) {
	o.unitsMu.Lock()
	defer o.unitsMu.Unlock()
	if !o.unitsMade {
		units := statsUnits(o.ck)
		unitOf := map[string]*statsUnit{}
		for i := range units {
			for _, p := range units[i].paths {
				unitOf[p] = &units[i]
			}
		}
		o.units, o.unitOf, o.unitsMade = units, unitOf, true
	}
	return o.units, o.unitOf
}

// unitsAheadTensors is the number of tensors from which a checkpoint's first page makes
// its statistics units beside the module tree (for fewer, starting a goroutine costs more
// than it saves).
const unitsAheadTensors = 10000

// prepareUnits makes o's statistics units ahead of their first use, beside the request
// that will need them. A panic in it (a bug) is logged and does not take the server down;
// the request then makes them itself.
func (s *Server) prepareUnits(o *opened) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic", "making statistics units of", o.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	o.statsUnits()
}

// unitTotals is the number of tensors of the checkpoint's statistics units and their bytes.
func (o *opened) unitTotals() (tensors int, nbytes int64) {
	units, _ := o.statsUnits()
	o.totalsOnce.Do(func() {
		for i := range units {
			o.unitTensors += units[i].count()
			o.unitBytes += units[i].nbytes
		}
	})
	return o.unitTensors, o.unitBytes
}

// unitOfNode is the unit of tensor node n at path, nil when its values cannot be read. A
// readable tensor outside unitOf is a row, the one tensor of its unit.
func (o *opened) unitOfNode(n *ckpt.Node, path string) *statsUnit {
	if _, unitOf := o.statsUnits(); unitOf[path] != nil {
		return unitOf[path]
	}
	if _, err := statsSource(n); err != nil {
		return nil
	}
	return &statsUnit{paths: []string{path}, nbytes: n.Tensor.NBytes()}
}

// statsKey is the statistics cache's key for a tensor path: tied tensors (one unit) share
// the key of the unit's first path, so their statistics are stored and computed once.
func (o *opened) statsKey(path string) statsKey {
	if _, unitOf := o.statsUnits(); unitOf[path] != nil {
		path = unitOf[path].key()
	}
	return statsKey{o.id, path}
}

// checkpointCache keeps the most recently used opened checkpoints, at most max of them and
// at most maxBytes of estimated memory (the most recent is kept whatever its size), and
// makes concurrent first requests for one id open it once.
type checkpointCache struct {
	max      int
	maxBytes int64
	open     func(ctx context.Context, id string) (*opened, error)

	mu      sync.Mutex
	lru     *list.List // of *opened, most recent first
	entries map[string]*list.Element
	loading map[string]*openCall
	bytes   int64 // the sizes of the entries
}

// openCall is one open in flight; the requests that arrive meanwhile wait on done.
type openCall struct {
	done chan struct{}
	err  error
}

func newCheckpointCache(max int, maxBytes int64, open func(ctx context.Context, id string) (*opened, error)) *checkpointCache {
	return &checkpointCache{
		max:      max,
		maxBytes: maxBytes,
		open:     open,
		lru:      list.New(),
		entries:  map[string]*list.Element{},
		loading:  map[string]*openCall{},
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
			return c.acquireLocked(el.Value.(*opened))
		}
		if call, ok := c.loading[id]; ok {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			if call.err != nil && !(isContextErr(call.err) && ctx.Err() == nil) {
				return nil, nil, call.err
			}
			// The entry is cached now (or already evicted, then open it again), or the
			// request that was opening it went away while waiting: open it ourselves.
			continue
		}
		call := &openCall{done: make(chan struct{})}
		c.loading[id] = call
		c.mu.Unlock()

		o, err := c.openOnce(ctx, id)

		c.mu.Lock()
		delete(c.loading, id)
		call.err = err
		close(call.done)
		if err != nil {
			c.mu.Unlock()
			return nil, nil, err
		}
		c.insert(o)
		return c.acquireLocked(o)
	}
}

// acquireLocked takes a reference on a cached entry for the caller, who holds c.mu and
// has it released here: the entry's checkpoint, or its rejection as the error.
func (c *checkpointCache) acquireLocked(o *opened) (*opened, func(), error) {
	defer c.mu.Unlock()
	if o.err != nil {
		return nil, nil, o.err
	}
	o.refs++
	return o, func() { c.release(o) }, nil
}

// openOnce opens id, turning a panic into an error so that the requests waiting on the
// same open are woken either way.
func (c *checkpointCache) openOnce(ctx context.Context, id string) (o *opened, err error) {
	defer func() {
		if r := recover(); r != nil {
			o, err = nil, fmt.Errorf("server: opening %s panicked: %v", id, r)
		}
	}()
	return c.open(ctx, id)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// insert adds o as the most recent entry and evicts the least recent beyond max entries.
// Over maxBytes it evicts the least recent large tree first (one over an eighth of the
// budget), so a stream of uploads at the loader's limits replace each other instead of
// flushing the many small checkpoints people are reading, which would then queue behind
// them to be opened again. c.mu is held.
func (c *checkpointCache) insert(o *opened) {
	c.entries[o.id] = c.lru.PushFront(o)
	c.bytes += o.size
	for c.lru.Len() > c.max {
		c.evict(c.lru.Back())
	}
	c.trimLocked()
}

// trimLocked evicts entries while the cache is over its byte budget, the least recent
// large tree first (insert says why), and never the most recent. c.mu is held.
func (c *checkpointCache) trimLocked() {
	for c.bytes > c.maxBytes && c.lru.Len() > 1 {
		victim := c.lru.Back()
		for el := c.lru.Back(); el != c.lru.Front(); el = el.Prev() {
			if el.Value.(*opened).size > c.maxBytes/8 {
				victim = el
				break
			}
		}
		c.evict(victim)
	}
}

// rechargeLocked counts again what o holds, now with what requests have made from its
// tree since it was opened (derived, its ckpt.DerivedBytes: key indexes, module trees),
// and evicts as insert does when the cache is now over its budget; each request that
// releases the entry has it done. A request that made nothing changes nothing. c.mu is
// held.
func (c *checkpointCache) rechargeLocked(o *opened, derived int64) {
	if o.evicted || derived == o.derived {
		return
	}
	c.bytes += derived - o.derived
	o.size += derived - o.derived
	o.derived = derived
	c.trimLocked()
}

// evict drops an entry; its blob is closed now or when its last user releases it.
// c.mu is held.
func (c *checkpointCache) evict(el *list.Element) {
	o := c.lru.Remove(el).(*opened)
	delete(c.entries, o.id)
	c.bytes -= o.size
	o.evicted = true
	if o.refs == 0 {
		o.close()
	}
}

// hasName reports whether the bytes were uploaded under name.
func (o *opened) hasName(name string) bool {
	if o.meta.HasName(name) {
		return true
	}
	o.namesMu.Lock()
	defer o.namesMu.Unlock()
	return slices.Contains(o.names, name)
}

// addName records a name a new upload of the same bytes gave.
func (o *opened) addName(name string) {
	if name == "" || o.hasName(name) {
		return
	}
	o.namesMu.Lock()
	defer o.namesMu.Unlock()
	o.names = append(o.names, name)
}

// fault is the storage outage a read of the entry's blobs met, if any.
func (o *opened) fault() error {
	if o.blob != nil {
		if f := o.blob.Fault(); f != nil {
			return f
		}
	}
	for _, b := range o.files {
		if f := b.Fault(); f != nil {
			return f
		}
	}
	return nil
}

// close releases the entry's blob and what its checkpoint holds besides (a decompressed
// stream's temporary file).
func (o *opened) close() {
	if o.blob != nil {
		o.blob.Close()
	}
	for _, b := range o.files {
		b.Close()
	}
	if o.ck != nil {
		o.ck.Close()
	}
}

func (c *checkpointCache) release(o *opened) {
	var derived int64
	if o.ck != nil {
		derived = o.ck.DerivedBytes()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	if o.refs == 0 && o.evicted {
		o.close()
		return
	}
	c.rechargeLocked(o, derived)
}

// close evicts everything.
func (c *checkpointCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
}

// openCheckpoint opens a stored blob with the loader, at most Config.OpenConcurrency at a
// time server-wide. A file the loader rejects is cached as its error; its blob is closed at
// once since nothing will read it.
func (s *Server) openCheckpoint(ctx context.Context, id string) (*opened, error) {
	select {
	case s.opens <- struct{}{}:
		defer func() { <-s.opens }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	blob, meta, err := s.store.Open(id)
	if errors.Is(err, store.ErrNotFound) {
		if f, e := s.folderEntry(id); e != nil {
			return s.openFolderEntry(f, e)
		}
		blob, meta, err = s.openRef(ctx, id) // a checkpoint opened in place?
	}
	if err != nil {
		return nil, err
	}
	if m, ok, err := readSet(blob); ok {
		blob.Close()
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
		ck, files, err := s.openSet(m)
		var lerr *loader.Error
		if errors.As(err, &lerr) {
			return &opened{id: id, meta: meta, err: err, size: findingsBytes(lerr.Findings)}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
		meta.Size = 0 // the set's size is its files'
		for _, f := range m.Files {
			meta.Size += f.Size
		}
		return &opened{id: id, meta: meta, ck: ck, files: files, size: treeBytes(ck)}, nil
	}
	ck, err := s.load(blob.ReaderAt(), blob.Size())
	if fault := blob.Fault(); fault != nil {
		// The storage failed under the loader: whatever the loader made of the bytes it
		// did not get says nothing of the file, and is not cached.
		blob.Close()
		if ck != nil {
			ck.Close()
		}
		return nil, fmt.Errorf("open %s: %w", id, fault)
	}
	if err != nil {
		blob.Close()
		var lerr *loader.Error
		if errors.As(err, &lerr) {
			return &opened{id: id, meta: meta, err: err, size: findingsBytes(lerr.Findings)}, nil
		}
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	if ck == nil || ck.Root == nil {
		blob.Close()
		if ck != nil {
			ck.Close()
		}
		return nil, fmt.Errorf("open %s: the loader returned no tree", id)
	}
	return &opened{id: id, meta: meta, ck: ck, blob: blob, size: treeBytes(ck)}, nil
}

// Estimates of what a tree holds in memory, measured on trees of a million nodes: each
// node with its index entry and the slot its parent keeps, and each byte of text, which
// the loader keeps twice while converting.
const (
	nodeBytes    = 350
	textFactor   = 2
	tensorBytes  = 160
	storageBytes = 128
	memberBytes  = 80 // an archive member's entry (a stored one keeps no zip entry)
	// the statistics units a checkpoint keeps once a page has asked for them (statsUnits),
	// per tensor, measured on the bench-pickle inputs: 56-58 bytes for a row of a state
	// dict kept as rows, 164 for a tensor node (its path and its entry in unitOf)
	rowUnitBytes  = 64
	nodeUnitBytes = 192
)

// treeBytes estimates the memory an opened checkpoint holds, for the cache's byte budget.
// It is linear in the tree, which the loader has just built.
func treeBytes(ck *ckpt.Checkpoint) int64 {
	total := int64(len(ck.Storages))*storageBytes + findingsBytes(ck.Findings) +
		int64(ck.RowStorages)*rowUnitBytes + int64(max(ck.Tensors-ck.RowStorages, 0))*nodeUnitBytes
	for _, m := range ck.Members {
		total += memberBytes + int64(len(m.Name))
	}
	stack := []*ckpt.Node{ck.Root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		total += nodeBytes + int64(len(n.Key)+len(n.Int)+len(n.Global)+len(n.Target)) +
			textFactor*int64(len(n.Str)+len(n.Bytes)) + n.LazyBytes()
		if t := n.Tensor; t != nil {
			total += tensorBytes + 16*int64(len(t.Shape)) + int64(len(t.Descr))
			stack = append(stack, t.Objects...)
		}
		if n.DictKey != nil {
			stack = append(stack, n.DictKey)
		}
		stack = append(stack, n.Children...)
	}
	return total
}

func findingsBytes(fs []ckpt.Finding) int64 {
	total := int64(0)
	for _, f := range fs {
		total += 128 + int64(len(f.Global)+len(f.Path)+len(f.Detail)+len(f.Where))
	}
	return total
}
