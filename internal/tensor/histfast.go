package tensor

import "math"

// The AVX2 histogram kernel puts a float32 value x at p = (x-first)*scale, computed in
// float32, and bins it by the integer part of p when p is at least histEps away from an
// integer. The three roundings in p cost at most 3·2^-24 of its range of Bins, about 1.2e-5;
// the bin edges, computed in float64, are off by a few float64 ulps of
// max(|first|, |last|)*scale, which fastHist keeps below histMaxMagnitude, so by 2^-20.
// Both are far below histEps: such a value lies strictly between the two edges of bin
// trunc(p), which is the bin numpy's edge comparison gives. Values nearer an edge (about
// 2·histEps of them), the range's ends, NaN and infinities are binned one by one.
const (
	histEps               = 1.0 / 8192
	histEpsBits32         = 0x39000000 // math.Float32bits(histEps)
	histOneMinusEpsBits32 = 0x3f7ff800 // math.Float32bits(1 - histEps)
	histBinsBits32        = 0x42800000 // math.Float32bits(Bins)
	histMaxMagnitude      = 1 << 30
	histSpillWords        = 1 << 14 // binned per kernel call
	histPairBytes         = 4 * Bins * Bins
	histSinglesOffset     = 2 * histPairBytes
	histFoldElems         = 1 << 30 // values binned before the uint32 counts must be folded
	histLastBin           = Bins - 1
)

// histTables are the AVX2 kernel's counts: two tables of pairs of bins and one of single
// bins (the layout histAVX2 addresses by histPairBytes and histSinglesOffset).
type histTables struct {
	pairs   [2][Bins * Bins]uint32
	singles [Bins]uint32
}

// histScratch is a worker's state for histFast.
type histScratch struct {
	t      histTables
	binned int64 // values counted in t since the last fold
	spill  [histSpillWords]uint32
}

// fastHist says whether the AVX2 kernel bins h's range exactly: the range's ends are
// float32 numbers (the minimum and maximum of float32 values, or a constant widened by 0.5
// where that is exact), its scale is a finite float32, and the magnitude bound above holds.
func (h *hist) fastHist() bool {
	if !useAVX2 || h.degenerate || float64(float32(h.first)) != h.first || float64(float32(h.last)) != h.last {
		return false
	}
	s := float32(h.scale)
	if math.IsInf(float64(s), 0) || s == 0 || h.last-h.first < 0x1p-126 {
		return false
	}
	return math.Max(math.Abs(h.first), math.Abs(h.last))*h.scale < histMaxMagnitude
}

// histFast counts binary32 bit patterns in s's tables with the AVX2 kernel (h.fastHist
// must hold) and the tail of fewer than eight and the values the kernel leaves into counts,
// one by one; fold adds the tables to counts.
func histFast(ws []uint32, h *hist, counts []int64, s *histScratch) {
	first, last, scale := float32(h.first), float32(h.last), float32(h.scale)
	for len(ws) > 0 {
		n := min(len(ws), histSpillWords) &^ 7
		if n == 0 {
			for _, u := range ws {
				h.one(float64(math.Float32frombits(u)), counts)
			}
			break
		}
		if s.binned+int64(n) > histFoldElems {
			s.fold(counts)
		}
		k := histAVX2(ws[:n], first, last, scale, &s.t, s.spill[:])
		s.binned += int64(n)
		// the values left are often one value many times over (the 0 and 1 of a mask,
		// the ends of the range): bin each run of equal values once
		prev, run := uint32(0), int64(0)
		for _, u := range s.spill[:k] {
			if u == prev && run > 0 {
				run++
				continue
			}
			if run > 0 {
				binRun(h, prev, run, counts)
			}
			prev, run = u, 1
		}
		if run > 0 {
			binRun(h, prev, run, counts)
		}
		ws = ws[n:]
	}
}

// fold adds the kernel's tables to counts and clears them.
func (s *histScratch) fold(counts []int64) {
	if s.binned == 0 {
		return
	}
	for a := 0; a < Bins; a++ {
		row0 := s.t.pairs[0][a*Bins : (a+1)*Bins]
		row1 := s.t.pairs[1][a*Bins : (a+1)*Bins]
		var sum int64
		for b := range row0 {
			c := int64(row0[b]) + int64(row1[b])
			sum += c
			counts[b] += c
		}
		counts[a] += sum + int64(s.t.singles[a])
	}
	s.t = histTables{}
	s.binned = 0
}

// binRun adds n copies of the binary32 value u to counts.
func binRun(h *hist, u uint32, n int64, counts []int64) {
	if i, ok := h.bin(float64(math.Float32frombits(u))); ok {
		counts[i] += n
	}
}
