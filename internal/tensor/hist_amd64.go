package tensor

// histAVX2 is implemented in hist_amd64.s.
//
//go:noescape
func histAVX2(ws []uint32, first, last, scale float32, t *histTables, spill []uint32) int
