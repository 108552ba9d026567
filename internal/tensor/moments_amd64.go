package tensor

import "golang.org/x/sys/cpu"

// momentsOut receives the per-lane sums of momentsAVX2.
type momentsOut struct {
	s1, s2 [4]float64
	lo, hi [8]float32
	bad    [8]uint32
	zeros  [8]int32 // minus the number of zeros
}

// momentsAVX2 is implemented in moments_amd64.s.
//
//go:noescape
func momentsAVX2(ws []uint32, k float64, out *momentsOut)

// useAVX2 enables the AVX2 kernels (the moments one also uses FMA, which every AVX2
// processor but a few early ones has).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA
