package tensor

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand"
	"reflect"
	"testing"
)

// TestHistFastMatchesOne bins the same float32 values with the AVX2 kernel and value by
// value (hist.one, which follows numpy's edge correction): the counts must be identical,
// on ranges of every scale and on values placed exactly on, and one ulp either side of,
// every bin edge.
func TestHistFastMatchesOne(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2 on this machine")
	}
	rng := rand.New(rand.NewSource(7))
	type gen func() float32
	cases := map[string]gen{
		"weights":      func() float32 { return float32(rng.NormFloat64() * 0.02) },
		"positive":     func() float32 { return float32(rng.ExpFloat64()) },
		"wide":         func() float32 { return float32(rng.NormFloat64() * 1e30) },
		"narrow-large": func() float32 { return 1000 + float32(rng.Intn(40))*float32(6.103515625e-05) },
		"subnormal":    func() float32 { return math.Float32frombits(uint32(rng.Intn(1 << 20))) },
		"mixed-sign-tiny": func() float32 {
			return float32(rng.NormFloat64() * 1e-38)
		},
		"constant":       func() float32 { return 3.25 },
		"constant-large": func() float32 { return 1e12 },
		"ints":           func() float32 { return float32(rng.Intn(129) - 64) },
		"mask":           func() float32 { return float32(rng.Intn(2)) },
		"ends":           func() float32 { return []float32{-1, 2, 2, 0.5}[rng.Intn(4)] },
	}
	fastSeen := 0
	for name, g := range cases {
		const n = 20000
		ws := make([]uint32, n)
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range ws {
			x := g()
			ws[i] = math.Float32bits(x)
			lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
		}
		h := newHistogram(lo, hi)
		// every edge, as float32, and its float32 neighbours, where they lie in the range
		for _, e := range h.Edges {
			f := float32(e)
			for _, x := range []float32{math.Nextafter32(f, float32(math.Inf(-1))), f, math.Nextafter32(f, float32(math.Inf(1)))} {
				if float64(x) >= lo && float64(x) <= hi {
					ws = append(ws, math.Float32bits(x))
				}
			}
		}
		ws = append(ws, math.Float32bits(float32(math.NaN())), math.Float32bits(float32(math.Inf(1))), math.Float32bits(float32(math.Inf(-1))))
		rng.Shuffle(len(ws), func(i, j int) { ws[i], ws[j] = ws[j], ws[i] })
		want := make([]int64, Bins)
		for _, u := range ws {
			h.one(float64(math.Float32frombits(u)), want)
		}
		if h.fastHist() {
			fastSeen++
		}
		got := make([]int64, Bins)
		var s histScratch
		histBits(ws, h, got, &s)
		s.fold(got)
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s (fast kernel %v): bin %d has %d, value by value %d", name, h.fastHist(), i, got[i], want[i])
			}
		}
		if s.t != (histTables{}) || s.binned != 0 {
			t.Fatalf("%s: the kernel's tables are not cleared by fold", name)
		}
	}
	// all but the ranges float32 cannot scale (subnormal widths) and the constant above
	// 2^24, which bin value by value
	if want := len(cases) - 3; fastSeen != want {
		t.Errorf("the AVX2 kernel took %d of %d ranges, want %d", fastSeen, len(cases), want)
	}
}

// TestHeldViewMatchesStreamed computes a view large enough to be held in memory between
// the passes (at a storage offset, as a slice of a larger storage) and the same view with
// every hold slot taken, so that it is read twice: the statistics must be identical.
func TestHeldViewMatchesStreamed(t *testing.T) {
	const n, skip = 600000, 1234 // 2.4 MB of float32 after 1234 elements of another tensor
	rng := rand.New(rand.NewSource(11))
	b := make([]byte, 4*(n+skip+77))
	for i := 0; i < len(b)/4; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64()*0.05)))
	}
	v := &View{DType: "float32", Shape: []int64{n / 600, 600}, Strides: []int64{600, 1}, Offset: skip,
		Data: bytes.NewReader(b), DataSize: int64(len(b))}
	if h := holdView(v); h == nil {
		t.Fatal("the view is not held: the test no longer covers the held path")
	} else {
		h.release()
	}
	// one worker: the moments are merged in the same order both times
	held, err := Compute(context.Background(), v, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range heldViews {
		holdSlots <- struct{}{}
	}
	streamed, err := Compute(context.Background(), v, 1, nil)
	for range heldViews {
		<-holdSlots
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(held, streamed) {
		t.Errorf("held and streamed statistics differ:\n held     %+v\n streamed %+v", held, streamed)
	}
	// and both agree with the values binned one by one
	want := make([]int64, Bins)
	h := newHistogram(held.Min, held.Max)
	for i := 0; i < n; i++ {
		h.one(float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*(skip+i):]))), want)
	}
	if !reflect.DeepEqual(want, held.Histogram.Counts) {
		t.Errorf("histogram %v, value by value %v", held.Histogram.Counts, want)
	}
}

// FuzzHistFast bins arbitrary float32 bit patterns with the AVX2 kernel over their own
// range (and over a range narrower than the data, whose outside values must be dropped
// and never counted out of the tables' bounds) and value by value: every bin must agree.
func FuzzHistFast(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64, 0, 0, 192, 64, 0, 0, 224, 64, 0, 0, 0, 65, 0, 0, 16, 65}, uint8(0))
	f.Add([]byte{0, 0, 192, 127, 0, 0, 128, 127, 0, 0, 128, 255, 1, 0, 0, 0, 0, 0, 0, 128, 255, 255, 127, 127, 0, 0, 128, 63, 0, 0, 0, 0}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, narrow uint8) {
		if !useAVX2 {
			t.Skip("no AVX2")
		}
		ws := make([]uint32, len(data)/4)
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range ws {
			ws[i] = binary.LittleEndian.Uint32(data[4*i:])
			x := float64(math.Float32frombits(ws[i]))
			if x-x == 0 {
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
		if lo > hi {
			return
		}
		if narrow%4 == 3 && hi > lo { // a sub-range: the values outside it are not binned
			lo, hi = float64(float32(lo+(hi-lo)/4)), float64(float32(hi-(hi-lo)/4))
			if !(lo < hi) {
				return
			}
		}
		h := newHistogram(lo, hi)
		want := make([]int64, Bins)
		for _, u := range ws {
			h.one(float64(math.Float32frombits(u)), want)
		}
		got := make([]int64, Bins)
		var s histScratch
		histBits(ws, h, got, &s)
		s.fold(got)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("range [%v, %v] (vector kernel %v): bin %d has %d, value by value %d", lo, hi, h.fastHist(), i, got[i], want[i])
			}
		}
	})
}
