package tensor

import (
	"context"
	"fmt"
	"math"
	"sync"
	"unsafe"
)

// Views of 8- and 16-bit dtypes (bfloat16, float16, float8, int8/16, bool...) have at most
// 65536 distinct bit patterns. Their statistics come from one pass that counts each pattern;
// moments, range and the histogram are then computed over the distinct values with their
// counts, which is exact and needs no second pass over the data.

func tableable(v *View) bool {
	es := ElementSize(v.DType)
	return (es == 1 || es == 2) && !IsComplex(v.DType)
}

func computeByTable(ctx context.Context, v *View, jobs []job, l layout, workers int, progress func(int64)) (*Stats, error) {
	tp, err := countPatterns(ctx, v, jobs, l, workers, progress)
	if err != nil {
		return nil, err
	}
	defer putTab64(tp)
	vals, counts := decodePatterns(v, *tp, v.Quantized, v.Scale, v.ZeroPoint)
	return statsFromCounts(vals, counts, v.Numel()), nil
}

// countPatterns counts each bit pattern of an 8- or 16-bit view into a pooled table
// (return it with putTab64). Each worker counts all its jobs into its own table of uint32
// (a job holds at most jobElems < 2^32 elements, and a worker's table is added to the
// total whenever the elements it has counted could overflow it) and adds it to the total
// when it is done: one pass over the 65536 entries per worker, not per job.
func countPatterns(ctx context.Context, v *View, jobs []job, l layout, workers int, progress func(int64)) (*[]uint64, error) {
	es := ElementSize(v.DType)
	size := 1 << (8 * es)
	tp := getTab64(size)
	total := *tp
	var mu sync.Mutex
	err := runJobs(ctx, jobs, workers, func() (func(job) error, func()) {
		r := newReader(v, l)
		lp := getTab32(size)
		local := *lp
		var counted int64
		flush := func() {
			mu.Lock()
			for k, c := range local {
				if c != 0 {
					total[k] += uint64(c)
				}
			}
			mu.Unlock()
			clear(local)
			counted = 0
		}
		return func(j job) error {
				if counted+jobSize(j, l) > math.MaxUint32 {
					flush()
				}
				err := r.job(j, func(b []byte) {
					if es == 1 {
						count8(b, (*[1 << 8]uint32)(local))
					} else {
						count16(words16(b), (*[1 << 16]uint32)(local))
					}
				})
				if err != nil {
					return err
				}
				counted += jobSize(j, l)
				if progress != nil {
					progress(2 * jobSize(j, l)) // both passes' worth of work
				}
				return nil
			}, func() {
				flush()
				tab32Pool.Put(lp) // cleared by flush
				r.release()
			}
	})
	if err != nil {
		putTab64(tp)
		return nil, err
	}
	return tp, nil
}

func count8(b []byte, t *[1 << 8]uint32) {
	for _, x := range b {
		t[x]++
	}
}

// count16 counts 16-bit patterns, four at a time from one 64-bit load; the table is an
// array so that no index needs a bounds check.
func count16(ws []uint16, t *[1 << 16]uint32) {
	i := 0
	if len(ws) >= 4 {
		qs := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(ws))), len(ws)/4)
		for _, q := range qs {
			t[uint16(q)]++
			t[uint16(q>>16)]++
			t[uint16(q>>32)]++
			t[uint16(q>>48)]++
		}
		i = 4 * len(qs)
	}
	for _, w := range ws[i:] {
		t[w]++
	}
}

// decodePatterns turns a pattern count table into values with counts. The table is
// indexed by the host's little-endian reading of the raw bytes; values are decoded in the
// file's byte order, and dequantized when asked.
func decodePatterns(v *View, total []uint64, quantized bool, scale float64, zero int64) ([]float64, []uint64) {
	es := ElementSize(v.DType)
	counts := make([]uint64, 0, 1024)
	raw := make([]byte, 0, 1024*es) // the patterns present, as the view's bytes
	for k, c := range total {
		if c == 0 {
			continue
		}
		raw = append(raw, byte(k))
		if es == 2 {
			raw = append(raw, byte(k>>8))
		}
		counts = append(counts, c)
	}
	vals := make([]float64, len(counts))
	decoderFor(v.DType, v.BigEndian)(raw, vals)
	if quantized {
		for i, x := range vals {
			vals[i] = float64(float32((x - float64(zero)) * scale))
		}
	}
	return vals, counts
}

// statsFromCounts computes statistics over distinct values with their counts.
func statsFromCounts(vals []float64, counts []uint64, numel int64) *Stats {
	s := &Stats{Numel: numel}
	var n uint64
	var sum float64
	s.Min, s.Max = math.Inf(1), math.Inf(-1)
	for i, x := range vals {
		c := counts[i]
		switch {
		case x != x:
			s.NaN += int64(c)
			continue
		case math.IsInf(x, 1):
			s.PosInf += int64(c)
			continue
		case math.IsInf(x, -1):
			s.NegInf += int64(c)
			continue
		}
		if x == 0 {
			s.Zeros += int64(c)
		}
		n += c
		sum += float64(c) * x
		s.Min, s.Max = math.Min(s.Min, x), math.Max(s.Max, x)
	}
	s.Count = int64(n)
	if n == 0 {
		s.Min, s.Max, s.Mean, s.Std = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return s
	}
	s.Mean = sum / float64(n)
	var m2, sumsq float64
	for i, x := range vals {
		if x-x != 0 {
			continue
		}
		d := x - s.Mean
		m2 += float64(counts[i]) * d * d
		sumsq += float64(counts[i]) * x * x
	}
	// one correction step for the mean (the residual of the first estimate)
	var resid float64
	for i, x := range vals {
		if x-x == 0 {
			resid += float64(counts[i]) * (x - s.Mean)
		}
	}
	s.Mean += resid / float64(n)
	s.Std = math.Sqrt(max(m2-resid*resid/float64(n), 0) / float64(n))
	s.L2 = math.Sqrt(sumsq)
	h := newHistogram(s.Min, s.Max)
	for i, x := range vals {
		if b, ok := h.bin(x); ok { // NaN and infinities are not binned
			h.Counts[b] += int64(counts[i])
		}
	}
	s.Histogram = h.Histogram
	return s
}

// computePerChannel handles per-channel quantized views: each channel's patterns are
// counted on its own and dequantized with that channel's scale and zero point.
func computePerChannel(ctx context.Context, v *View, workers int, progress func(int64)) (*Stats, error) {
	ax := v.ChannelAxis
	if ax < 0 || ax >= len(v.Shape) || int64(len(v.ChannelScales)) != v.Shape[ax] || len(v.ChannelZeros) != len(v.ChannelScales) {
		return nil, fmt.Errorf("tensor: per-channel parameters do not match axis %d of %v", ax, v.Shape)
	}
	var vals []float64
	var counts []uint64
	for c := int64(0); c < v.Shape[ax]; c++ {
		sub := *v
		sub.ChannelScales, sub.ChannelZeros = nil, nil
		sub.Shape = append(append([]int64(nil), v.Shape[:ax]...), v.Shape[ax+1:]...)
		sub.Strides = append(append([]int64(nil), v.Strides[:ax]...), v.Strides[ax+1:]...)
		sub.Offset = v.Offset + c*v.Strides[ax]
		if sub.Numel() == 0 {
			continue
		}
		jobs, l, _ := plan(&sub, workers)
		tp, err := countPatterns(ctx, &sub, jobs, l, workers, progress)
		if err != nil {
			return nil, err
		}
		cv, cc := decodePatterns(&sub, *tp, true, v.ChannelScales[c], v.ChannelZeros[c])
		putTab64(tp)
		vals, counts = append(vals, cv...), append(counts, cc...)
	}
	return statsFromCounts(vals, counts, v.Numel()), nil
}
