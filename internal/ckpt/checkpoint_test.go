package ckpt

import "testing"

// A summary whose making panics is not kept as made: the panic reaches the caller (a
// request's 500), and the next caller makes it, instead of every later page of the
// checkpoint reading a nil summary.
func TestSummaryAfterAPanic(t *testing.T) {
	var c Checkpoint
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("the first make's panic reached the caller as %v", r)
			}
		}()
		c.Summary("k", func() any { panic("boom") })
	}()
	calls := 0
	for range 2 {
		if got := c.Summary("k", func() any { calls++; return 42 }); got != 42 {
			t.Fatalf("Summary after a panic = %v, want 42", got)
		}
	}
	if calls != 1 {
		t.Errorf("made %d times after the panic, want once", calls)
	}
}
