package tensor

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand"
	"testing"
)

// TestAVX2MatchesGo computes the same float32 views with the AVX2 kernel and with the Go
// one: counts, range and histogram must be identical, the moments equal to rounding.
func TestAVX2MatchesGo(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2 on this machine: the Go kernel is the only one")
	}
	rng := rand.New(rand.NewSource(3))
	for _, n := range []int{1, 7, 8, 9, 4095, 4096, 4097, 70001, 300000} {
		b := make([]byte, 4*n)
		for i := 0; i < n; i++ {
			x := float32(rng.NormFloat64()*0.02 + 0.5)
			switch rng.Intn(50) {
			case 0:
				x = 0
			case 1:
				x = float32(math.Copysign(0, -1))
			case 2:
				x = 1e-42
			}
			if n > 100 && i == n/2 {
				x = float32(math.NaN())
			}
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		v := &View{DType: "float32", Shape: []int64{int64(n)}, Strides: []int64{1}, Data: bytes.NewReader(b), DataSize: int64(len(b))}
		useAVX2 = true
		fast, err := Compute(context.Background(), v, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		useAVX2 = false
		slow, err := Compute(context.Background(), v, 2, nil)
		useAVX2 = true
		if err != nil {
			t.Fatal(err)
		}
		if fast.Count != slow.Count || fast.Zeros != slow.Zeros || fast.NaN != slow.NaN || fast.Min != slow.Min || fast.Max != slow.Max {
			t.Errorf("n=%d: AVX2 %+v, Go %+v", n, fast, slow)
		}
		for i := range fast.Histogram.Counts {
			if fast.Histogram.Counts[i] != slow.Histogram.Counts[i] {
				t.Errorf("n=%d: histograms differ: %v vs %v", n, fast.Histogram.Counts, slow.Histogram.Counts)
				break
			}
		}
		for _, p := range [][2]float64{{fast.Mean, slow.Mean}, {fast.Std, slow.Std}, {fast.L2, slow.L2}} {
			if math.Abs(p[0]-p[1]) > 1e-12*math.Max(1, math.Abs(p[1])) {
				t.Errorf("n=%d: moments differ: AVX2 %v, Go %v", n, p[0], p[1])
			}
		}
	}
}
