package tensor

import "sync"

// Buffers are reused across computations: a checkpoint has hundreds of small tensors, and
// allocating (and clearing) fresh read buffers and count tables for each would cost more
// than reading them.

var (
	rawPool     sync.Pool // *[]byte read buffers
	floatPool   sync.Pool // *[]float64 decode blocks
	tab32Pool   sync.Pool // *[]uint32 of 1<<16 counts, returned cleared
	tab64Pool   sync.Pool // *[]uint64 of 1<<16 counts, returned cleared
	scratchPool sync.Pool // *histScratch, tables returned cleared
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
	if r.hs != nil {
		if r.hs.binned != 0 { // a job that stopped before its counts were folded
			r.hs.t, r.hs.binned = histTables{}, 0
		}
		scratchPool.Put(r.hs)
		r.hs = nil
	}
}

// histScratch returns the reader's scratch for the AVX2 histogram kernel.
func (r *reader) histScratch() *histScratch {
	if r.hs == nil {
		if s, ok := scratchPool.Get().(*histScratch); ok {
			r.hs = s
		} else {
			r.hs = new(histScratch)
		}
	}
	return r.hs
}

// Held views. Computing a histogram needs the range first, so every value is read twice;
// a dense view of at most HoldBytes is instead read once into memory and binned from there.
// Views under holdMinBytes are read twice: reading them again costs next to nothing, and
// the memory for a copy is kept for the views where it saves time.
// At most heldViews such copies exist at once (the memory is bounded by their product);
// a view that finds none free is read twice, as a larger one is.
const (
	HoldBytes    = 16 << 20
	holdMinBytes = 1 << 20
	heldViews    = 2
)

var (
	holdSlots = make(chan struct{}, heldViews)
	holdPool  sync.Pool // *[]byte of HoldBytes
)

// held is a dense view's bytes in memory, from storage element start on.
type held struct {
	buf    []byte
	start  int64
	filled bool // the first pass has read every byte
	p      *[]byte
}

// holdView returns memory for the whole of v if v is dense, holds holdMinBytes to HoldBytes and a
// slot is free; nil otherwise.
func holdView(v *View) *held {
	start, ok := v.dense()
	size := v.Numel() * int64(ElementSize(v.DType))
	if !ok || size > HoldBytes || size < holdMinBytes {
		return nil
	}
	select {
	case holdSlots <- struct{}{}:
	default:
		return nil
	}
	p, ok := holdPool.Get().(*[]byte)
	if !ok {
		b := make([]byte, HoldBytes)
		p = &b
	}
	return &held{buf: (*p)[:size], start: start, p: p}
}

func (h *held) release() {
	holdPool.Put(h.p)
	<-holdSlots
}
