package tensor

import "golang.org/x/sys/cpu"

// momentsOut receives the per-lane sums of momentsAVX2.
type momentsOut struct {
	s1, s2, lo, hi [4]float64
	bad            [8]uint32
	zeros          [8]int32 // minus the number of zeros
}

// momentsAVX2 is implemented in moments_amd64.s.
//
//go:noescape
func momentsAVX2(ws []uint32, k float64, out *momentsOut)

var useAVX2 = cpu.X86.HasAVX2
