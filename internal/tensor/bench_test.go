package tensor

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand"
	"testing"
)

// BenchmarkCompute measures statistics throughput on 64 MB of in-memory values per dtype,
// against summing the same bytes (the memory read bandwidth reference).
func BenchmarkCompute(b *testing.B) {
	const n = 16 << 20
	rng := rand.New(rand.NewSource(1))
	f32 := make([]byte, 4*n)
	bf16 := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		x := float32(rng.NormFloat64())
		binary.LittleEndian.PutUint32(f32[4*i:], math.Float32bits(x))
		binary.LittleEndian.PutUint16(bf16[2*i:], uint16(math.Float32bits(x)>>16))
	}
	for _, tc := range []struct {
		name  string
		dtype string
		data  []byte
	}{{"float32", "float32", f32}, {"bfloat16", "bfloat16", bf16}} {
		v := &View{DType: tc.dtype, Shape: []int64{n}, Strides: []int64{1}, Data: bytes.NewReader(tc.data), DataSize: int64(len(tc.data))}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.data)))
			for i := 0; i < b.N; i++ {
				if _, err := Compute(context.Background(), v, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("sum-bytes", func(b *testing.B) {
		b.SetBytes(int64(len(f32)))
		for i := 0; i < b.N; i++ {
			var s uint64
			for j := 0; j+8 <= len(f32); j += 8 {
				s += binary.LittleEndian.Uint64(f32[j:])
			}
			if s == 1 {
				b.Log(s)
			}
		}
	})
}
