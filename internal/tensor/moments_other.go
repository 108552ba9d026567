//go:build !amd64

package tensor

type momentsOut struct {
	s1, s2 [4]float64
	lo, hi [8]float32
	bad    [8]uint32
	zeros  [8]int32
}

func momentsAVX2(ws []uint32, k float64, out *momentsOut) { panic("no AVX2") }

var useAVX2 = false

func histAVX2(ws []uint32, first, last, scale float32, t *histTables, spill []uint32) int {
	panic("no AVX2")
}
