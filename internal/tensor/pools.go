package tensor

import "sync"

// Buffers are reused across computations: a checkpoint has hundreds of small tensors, and
// allocating (and clearing) fresh read buffers and count tables for each would cost more
// than reading them.

var (
	rawPool   sync.Pool // *[]byte read buffers
	floatPool sync.Pool // *[]float64 decode blocks
	tab32Pool sync.Pool // *[]uint32 of 1<<16 counts, returned cleared
	tab64Pool sync.Pool // *[]uint64 of 1<<16 counts, returned cleared
)

func getBytes(n int) *[]byte {
	if p, ok := rawPool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

func getFloats(n int) *[]float64 {
	if p, ok := floatPool.Get().(*[]float64); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	f := make([]float64, n)
	return &f
}

// getTab32 returns a zeroed table of n (at most 1<<16) uint32 counts.
func getTab32(n int) *[]uint32 {
	if p, ok := tab32Pool.Get().(*[]uint32); ok {
		*p = (*p)[:n]
		return p
	}
	t := make([]uint32, 1<<16)
	t = t[:n]
	return &t
}

// putTab32 clears a table and returns it to the pool.
func putTab32(p *[]uint32) {
	clear(*p)
	tab32Pool.Put(p)
}

func getTab64(n int) *[]uint64 {
	if p, ok := tab64Pool.Get().(*[]uint64); ok {
		*p = (*p)[:n]
		return p
	}
	t := make([]uint64, 1<<16)
	t = t[:n]
	return &t
}

func putTab64(p *[]uint64) {
	clear(*p)
	tab64Pool.Put(p)
}

// release returns a reader's buffers to the pools.
func (r *reader) release() {
	if r.rawp != nil {
		rawPool.Put(r.rawp)
		r.rawp = nil
	}
	if r.fp != nil {
		floatPool.Put(r.fp)
		r.fp = nil
	}
}
