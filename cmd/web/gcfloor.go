package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// A fresh server's heap is a few MB, and GOGC=100 collects each time it doubles: the first
// file it opens (a tree of tens of MB built from scratch) runs the collector eight or nine
// times, each marking all that was built so far, which costs that first open about a
// fifth of its time. gcFloor lets the heap grow to floor bytes before a cycle while the
// live heap is small: after each cycle it sets GOGC for the next one so that its goal is
// at least floor, and back to the process's own GOGC once the live heap passes half of
// floor. Memory is not given up for it beyond floor: the soft memory limit
// (-memory-limit) still bounds the heap, and a large live heap is collected at GOGC.

// gcFloor re-tunes GOGC after every collection; stop ends it.
type gcFloor struct {
	floor   uint64
	base    int        // the process's own GOGC (GOGC's variable, or 100)
	mu      sync.Mutex // guards cur and the setting of GOGC, against stop
	cur     int
	stopped atomic.Bool
	sample  []metrics.Sample
	tunes   atomic.Int64 // collections seen, for the test
}

// gcSentinel is the object whose finalizer runs once per collection (it is unreachable as
// soon as it is made); it holds a pointer so that it is no tiny object, whose finalizer
// may never run.
type gcSentinel struct{ g *gcFloor }

// startGCFloor starts keeping the heap goal at floor bytes or more; nil when it cannot (no
// floor, or GOGC=off, which it leaves alone).
func startGCFloor(floor int64) *gcFloor {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if floor <= 0 || base < 0 {
		return nil
	}
	g := &gcFloor{floor: uint64(floor), base: base, cur: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	g.set(0) // before the first cycle, whose goal is 4 MB times GOGC/100
	g.arm()
	return g
}

func (g *gcFloor) arm() {
	runtime.SetFinalizer(&gcSentinel{g: g}, func(s *gcSentinel) {
		if s.g.stopped.Load() {
			return
		}
		s.g.tunes.Add(1)
		metrics.Read(s.g.sample)
		live := uint64(0)
		if v := s.g.sample[0].Value; v.Kind() == metrics.KindUint64 {
			live = v.Uint64()
		}
		s.g.set(live)
		s.g.arm()
	})
}

// set sets GOGC for a live heap of live bytes (0 before the first cycle).
func (g *gcFloor) set(live uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped.Load() {
		return
	}
	if live == 0 {
		live = 4 << 20 // the runtime's minimum heap goal at GOGC=100
	}
	p := g.base
	if goal := live + live*uint64(g.base)/100; goal < g.floor {
		p = int(min(g.floor*100/live-100, 100_000))
	}
	if p != g.cur {
		debug.SetGCPercent(p)
		g.cur = p
	}
}

// stop gives GOGC back to the process's own value.
func (g *gcFloor) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped.Swap(true) {
		debug.SetGCPercent(g.base)
	}
}
