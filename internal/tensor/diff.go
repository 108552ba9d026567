package tensor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Diff is how two tensors of one shape differ, element by element in C order, computed in
// float64 on their values (bfloat16 and float8 converted exactly, bool as 0 and 1). The
// definitions are numpy's way of saying the same, with a and b as float64 arrays:
//
//	MaxAbs          max |a - b|
//	MaxRel          max |a - b| / max(|a|, |b|), an element where both are 0 counting 0
//	RelL2           ||a - b|| / ||a||   (nil when ||a|| = 0 < ||a - b||; 0 when both are 0)
//	Cosine          a.b / (||a|| ||b||) (nil when a norm is 0)
//	OutsideAllclose count of elements where np.isclose(b, a) is False: |b - a| > 1e-8 + 1e-5 |a|
//
// An element that is NaN on either side is left out of the maxima and the norms and counted
// in NaN (where the sides disagree) and in OutsideAllclose (isclose says NaN is never close).
type Diff struct {
	Numel int64
	// Identical is set when both sides have the same dtype and the same bytes.
	Identical       bool
	MaxAbs, MaxRel  float64
	RelL2, Cosine   *float64
	OutsideAllclose int64
	// NaN counts elements that are NaN on one side only.
	NaN int64
}

// diffAcc accumulates a part of a diff.
type diffAcc struct {
	n, outside, nan     int64
	maxAbs, maxRel      float64
	sumD2, sumA2, sumB2 float64
	sumAB               float64
	differ              bool // some bytes differ
}

func (a *diffAcc) merge(b diffAcc) {
	a.n += b.n
	a.outside += b.outside
	a.nan += b.nan
	a.maxAbs = max(a.maxAbs, b.maxAbs)
	a.maxRel = max(a.maxRel, b.maxRel)
	a.sumD2 += b.sumD2
	a.sumA2 += b.sumA2
	a.sumB2 += b.sumB2
	a.sumAB += b.sumAB
	a.differ = a.differ || b.differ
}

// block adds the elements decoded into fa and fb.
func (a *diffAcc) block(fa, fb []float64) {
	fb = fb[:len(fa)]
	for i, x := range fa {
		a.add(x, fb[i])
	}
}

// blockF32 adds little-endian float32 elements, decoded on the way (the common case, kept
// free of the intermediate float64 slices). Equal bytes, which half the tensors of a
// fine-tune are, only add to the norms.
func (a *diffAcc) blockF32(ba, bb []byte) {
	if bytes.Equal(ba, bb) {
		a.sameF32(words32(ba))
		return
	}
	wa, wb := words32(ba), words32(bb)
	wb = wb[:len(wa)]
	maxAbs, maxRel := a.maxAbs, a.maxRel
	var sumD2, sumA2, sumB2, sumAB float64
	outside := int64(0)
	for i, ua := range wa {
		x := float64(math.Float32frombits(ua))
		y := float64(math.Float32frombits(wb[i]))
		d := x - y
		if d != d { // a NaN, or the same infinity on both sides
			a.add(x, y)
			continue
		}
		ad, ax := math.Abs(d), math.Abs(x)
		if ad > maxAbs {
			maxAbs = ad
		}
		if m := max(ax, math.Abs(y)); ad > maxRel*m && m > 0 {
			maxRel = ad / m
		}
		if ad > 1e-8+1e-5*ax {
			outside++
		}
		sumD2 += d * d
		sumA2 += x * x
		sumB2 += y * y
		sumAB += x * y
	}
	a.maxAbs, a.maxRel = max(a.maxAbs, maxAbs), max(a.maxRel, maxRel)
	a.outside += outside
	a.sumD2 += sumD2
	a.sumA2 += sumA2
	a.sumB2 += sumB2
	a.sumAB += sumAB
}

// sameF32 adds float32 elements that are the same on both sides: no difference, so only
// their squares (a NaN is never close, as numpy's isclose says; an infinity adds nothing).
func (a *diffAcc) sameF32(w []uint32) {
	var s0, s1 float64
	i := 0
	for ; i+1 < len(w); i += 2 {
		x0, x1 := float64(math.Float32frombits(w[i])), float64(math.Float32frombits(w[i+1]))
		if w[i]&0x7f800000 == 0x7f800000 || w[i+1]&0x7f800000 == 0x7f800000 { // NaN or inf
			a.sameSlow(x0)
			a.sameSlow(x1)
			continue
		}
		s0 += x0 * x0
		s1 += x1 * x1
	}
	for ; i < len(w); i++ {
		x := float64(math.Float32frombits(w[i]))
		if w[i]&0x7f800000 == 0x7f800000 {
			a.sameSlow(x)
			continue
		}
		s0 += x * x
	}
	a.sumA2 += s0 + s1
	a.sumB2 += s0 + s1
	a.sumAB += s0 + s1
}

func (a *diffAcc) sameSlow(x float64) {
	switch {
	case x != x:
		a.outside++
	case !math.IsInf(x, 0):
		a.sumA2 += x * x
		a.sumB2 += x * x
		a.sumAB += x * x
	}
}

// add adds one pair of elements.
func (a *diffAcc) add(x, y float64) {
	if x != x || y != y { // NaN
		a.outside++
		if (x != x) != (y != y) {
			a.nan++
		}
		return
	}
	if x == y { // equal, infinities included: no difference, and close
		if !math.IsInf(x, 0) {
			a.sumA2 += x * x
			a.sumB2 += y * y
			a.sumAB += x * y
		}
		return
	}
	d := math.Abs(x - y)
	if !(d <= 1e-8+1e-5*math.Abs(x)) {
		a.outside++
	}
	a.maxAbs = max(a.maxAbs, d)
	if m := max(math.Abs(x), math.Abs(y)); m > 0 {
		a.maxRel = max(a.maxRel, d/m)
	}
	a.sumD2 += d * d
	a.sumA2 += x * x
	a.sumB2 += y * y
	a.sumAB += x * y
}

// diffElems is how many elements one step of a diff reads from each side.
const diffElems = 1 << 16

// CompareViews computes how b differs from a. The views must have the same shape; their
// dtypes may differ (a bfloat16 copy of a float32 tensor). progress, if set, hears the
// elements compared.
func CompareViews(ctx context.Context, a, b *View, workers int, progress func(int64)) (*Diff, error) {
	if fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) {
		return nil, fmt.Errorf("%w: %v and %v", ErrShape, a.Shape, b.Shape)
	}
	if IsComplex(a.DType) || IsComplex(b.DType) {
		return nil, fmt.Errorf("%w: complex values are not compared", ErrUnsupported)
	}
	sa, err := NewStream(a, StreamOptions{})
	if err != nil {
		return nil, err
	}
	sb, err := NewStream(b, StreamOptions{})
	if err != nil {
		return nil, err
	}
	decA, decB := decoderFor(sa.OutDType, false), decoderFor(sb.OutDType, false)
	if decA == nil || decB == nil {
		return nil, fmt.Errorf("%w: %s, %s", ErrUnsupported, a.DType, b.DType)
	}
	sameBytes := a.DType == b.DType && sa.OutDType == sb.OutDType
	f32 := sa.OutDType == "float32" && sb.OutDType == "float32"
	numel := a.Numel()
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// contiguous parts, one per worker at a time, large enough for a bucket's read-ahead
	part := max(int64(diffElems), min(numel/int64(2*workers)+1, 1<<22))
	var (
		mu    sync.Mutex
		total diffAcc
		first error
		next  int64
		wg    sync.WaitGroup
	)
	willRead(a.Data, a.DataOffset, a.DataSize)
	willRead(b.Data, b.DataOffset, b.DataSize)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rawA := make([]byte, diffElems*sa.outES)
			rawB := make([]byte, diffElems*sb.outES)
			fa, fb := make([]float64, diffElems), make([]float64, diffElems)
			for {
				mu.Lock()
				if first != nil || next >= numel {
					mu.Unlock()
					return
				}
				from := next
				next = min(next+part, numel)
				to := next
				mu.Unlock()
				var acc diffAcc
				for at := from; at < to; at += diffElems {
					if err := ctx.Err(); err != nil {
						mu.Lock()
						first = cmp(first, err)
						mu.Unlock()
						return
					}
					n := min(int64(diffElems), to-at)
					ba, bb := rawA[:n*sa.outES], rawB[:n*sb.outES]
					if _, err := sa.ReadAt(ba, at*sa.outES); err != nil {
						mu.Lock()
						first = cmp(first, err)
						mu.Unlock()
						return
					}
					if _, err := sb.ReadAt(bb, at*sb.outES); err != nil {
						mu.Lock()
						first = cmp(first, err)
						mu.Unlock()
						return
					}
					if !sameBytes || !bytes.Equal(ba, bb) {
						acc.differ = true
					}
					if f32 {
						acc.blockF32(ba, bb)
					} else {
						decA(ba, fa[:n])
						decB(bb, fb[:n])
						acc.block(fa[:n], fb[:n])
					}
					acc.n += n
					if progress != nil {
						progress(n)
					}
				}
				mu.Lock()
				total.merge(acc)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	d := &Diff{Numel: numel, Identical: sameBytes && !total.differ, MaxAbs: total.maxAbs, MaxRel: total.maxRel,
		OutsideAllclose: total.outside, NaN: total.nan}
	na, nb := math.Sqrt(total.sumA2), math.Sqrt(total.sumB2)
	nd := math.Sqrt(total.sumD2)
	switch {
	case na > 0:
		r := nd / na
		d.RelL2 = &r
	case nd == 0:
		r := 0.0
		d.RelL2 = &r
	}
	if na > 0 && nb > 0 {
		c := total.sumAB / (na * nb)
		d.Cosine = &c
	}
	return d, nil
}

// cmp keeps the first error.
func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// ErrShape is returned by CompareViews for views of different shapes.
var ErrShape = errors.New("tensor: shapes differ")
