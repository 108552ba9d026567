package tensor

import (
	"math"
	"math/rand"
	"testing"
)

// BenchmarkKernels measures the float32 kernels on in-cache data.
func BenchmarkKernels(b *testing.B) {
	const n = 1 << 16
	ws := make([]uint32, n)
	rng := rand.New(rand.NewSource(1))
	for i := range ws {
		ws[i] = math.Float32bits(float32(rng.NormFloat64()))
	}
	b.Run("moments", func(b *testing.B) {
		b.SetBytes(4 * n)
		for i := 0; i < b.N; i++ {
			a := newAcc()
			momentsBits(ws, &a)
		}
	})
	h := newHistogram(-5, 5)
	counts := make([]int64, Bins)
	var s histScratch
	b.Run("hist", func(b *testing.B) {
		b.SetBytes(4 * n)
		for i := 0; i < b.N; i++ {
			histBits(ws, h, counts, &s)
		}
	})
	b.Run("hist-go", func(b *testing.B) { // without the AVX2 kernel
		defer func(was bool) { useAVX2 = was }(useAVX2)
		useAVX2 = false
		b.SetBytes(4 * n)
		for i := 0; i < b.N; i++ {
			histBits(ws, h, counts, &s)
		}
	})
}

// BenchmarkBF16 measures the bfloat16 path on in-cache data: every 16-bit view counts its
// bit patterns in one pass (table.go), the statistics then come from the table.
func BenchmarkBF16(b *testing.B) {
	const n = 1 << 16
	ws := make([]uint16, n)
	rng := rand.New(rand.NewSource(1))
	for i := range ws {
		ws[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
	}
	var t [1 << 16]uint32
	b.Run("count", func(b *testing.B) {
		b.SetBytes(2 * n)
		for i := 0; i < b.N; i++ {
			count16(ws, &t)
		}
	})
}
