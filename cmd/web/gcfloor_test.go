package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// gogc is the GOGC the runtime runs with now.
func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// collect runs collections until g's finalizer has tuned GOGC after one that began after
// the call. The first tuning seen may be a cycle's that began before (a collection in the
// background while the test allocated, its finalizer run late), which read a live heap
// without what the test has made since; the sentinel that tuning armed is made after the
// call, so the cycle that finds it unreachable, and the second tuning, see it all.
func collect(t *testing.T, g *gcFloor) {
	t.Helper()
	n := g.tunes.Load()
	deadline := time.Now().Add(10 * time.Second)
	for g.tunes.Load() < n+2 {
		if time.Now().After(deadline) {
			t.Fatal("no tuning after a collection in 10 s")
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// TestGCFloor: with a small live heap the goal of the next collection is raised to the
// floor (GOGC well above the process's own), with a live heap over half the floor GOGC
// is the process's own again, and stop gives it back.
func TestGCFloor(t *testing.T) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		t.Fatalf("the test runs with GOGC=off")
	}
	g := startGCFloor(256 << 20)
	if g == nil {
		t.Fatal("no floor started")
	}
	defer g.stop()
	collect(t, g)
	if p := gogc(); p < 2*int64(base) {
		t.Errorf("GOGC %d with a live heap of a few MB and a floor of 256 MiB (the process's own: %d)", p, base)
	}
	live := make([]byte, 200<<20)
	for i := range live {
		live[i] = 1 // resident, and reachable below
	}
	collect(t, g)
	if p := gogc(); p != int64(base) {
		t.Errorf("GOGC %d with a live heap of 200 MB and a floor of 256 MiB, want the process's own %d", p, base)
	}
	runtime.KeepAlive(live)
	g.stop()
	if p := gogc(); p != int64(base) {
		t.Errorf("GOGC %d after stop, want %d", p, base)
	}
	if startGCFloor(0) != nil {
		t.Error("a floor of 0 started a tuner")
	}
	var none *gcFloor
	none.stop() // no floor: nothing to stop
}
