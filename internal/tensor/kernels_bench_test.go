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

// BenchmarkBF16 measures the bfloat16 kernels on in-cache data.
func BenchmarkBF16(b *testing.B) {
	const n = 1 << 16
	raw := make([]byte, 2*n)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < n; i++ {
		u := math.Float32bits(float32(rng.NormFloat64())) >> 16
		raw[2*i], raw[2*i+1] = byte(u), byte(u>>8)
	}
	b.Run("moments", func(b *testing.B) {
		b.SetBytes(2 * n)
		for i := 0; i < b.N; i++ {
			a := newAcc()
			bf16Kernel{}.moments(raw, &a)
		}
	})
	h := newHistogram(-5, 5)
	counts := make([]int64, Bins)
	b.Run("hist", func(b *testing.B) {
		b.SetBytes(2 * n)
		for i := 0; i < b.N; i++ {
			bf16Kernel{&reader{}}.hist(raw, h, counts)
		}
	})
}
