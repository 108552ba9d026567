package tensor

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Bins is the number of histogram bins.
const Bins = 64

// Stats summarises a view's values. Min, Max, Mean, Std and the histogram are over the
// finite values (Count of them); NaN and infinities are counted apart. Complex values are
// taken by magnitude, quantized ones dequantized. Std is the population deviation (ddof=0),
// like numpy's default.
type Stats struct {
	Numel     int64
	Count     int64
	Zeros     int64
	NaN       int64
	PosInf    int64
	NegInf    int64
	Min       float64
	Max       float64
	Mean      float64
	Std       float64
	L2        float64
	Histogram Histogram
}

// Histogram has Bins counts over equal-width bins between Edges[0] and Edges[Bins], computed
// the way numpy.histogram(values, bins=64, range=(min, max)) does.
type Histogram struct {
	Edges  []float64
	Counts []int64
}

// job is a part of a view read by one worker: a linear range of storage elements (dense
// views) or a range of runs.
type job struct {
	start, n       int64 // dense: storage elements [start, start+n)
	runFrom, runTo int64 // general: runs [runFrom, runTo)
	dense          bool
}

const (
	blockElems  = 1 << 14 // decoded per step, fits in L2
	jobElems    = 1 << 22 // elements per job at most
	minJobElems = 1 << 16 // and at least (unless the view is smaller)
)

// plan splits a view into jobs: enough for every worker to have a few (so a single tensor
// uses all cores), none larger than jobElems, none smaller than minJobElems.
func plan(v *View, workers int) ([]job, layout, bool) {
	numel := v.Numel()
	l := v.layout()
	size := min(jobElems, max(minJobElems, numel/int64(4*max(workers, 1))))
	var jobs []job
	if start, ok := v.dense(); ok {
		for s := int64(0); s < numel; s += size {
			jobs = append(jobs, job{dense: true, start: start + s, n: min(size, numel-s)})
		}
		return jobs, l, true
	}
	per := max(1, size/l.runLen)
	for r := int64(0); r < l.outer; r += per {
		jobs = append(jobs, job{runFrom: r, runTo: min(r+per, l.outer)})
	}
	return jobs, l, false
}

// reader walks one job, handing decoded blocks of float64 to fn.
type reader struct {
	v    *View
	l    layout
	dec  decoder
	es   int64
	raw  []byte
	f    []float64
	span []byte
	// the pooled buffers behind raw and f
	rawp *[]byte
	fp   *[]float64
	hs   *histScratch // made on first use
	// hold, if set, holds the whole (dense) view: the first pass reads into it, the second
	// reads from it
	hold *held
}

func newReader(v *View, l layout) *reader {
	es := int64(ElementSize(v.DType))
	r := &reader{v: v, l: l, dec: decoderFor(v.DType, v.BigEndian), es: es,
		rawp: getBytes(int(readElems * es)), fp: getFloats(blockElems)}
	r.raw, r.f = *r.rawp, *r.fp
	return r
}

// willRead passes on to a reader that fetches ahead (a blob in a bucket) that n bytes at
// off are about to be read, one after the other.
func willRead(r io.ReaderAt, off, n int64) {
	if w, ok := r.(interface{ WillRead(off, n int64) }); ok {
		w.WillRead(off, n)
	}
}

// readElems is how many elements one read fetches.
const readElems = 1 << 16

func (r *reader) linear(start, n int64, fn func([]byte)) error {
	if r.hold == nil || !r.hold.filled {
		willRead(r.v.Data, r.v.DataOffset+start*r.es, n*r.es)
	}
	for n > 0 {
		k := min(n, readElems)
		b := r.raw[:k*r.es]
		if h := r.hold; h != nil { // the view's bytes in memory: read there once, then reuse
			b = h.buf[(start-h.start)*r.es : (start-h.start+k)*r.es]
		}
		if r.hold == nil || !r.hold.filled {
			if _, err := r.v.Data.ReadAt(b, r.v.DataOffset+start*r.es); err != nil {
				return err
			}
		}
		fn(b)
		start += k
		n -= k
	}
	return nil
}

// decoded hands raw elements to fn as float64 blocks (dequantized when the view says so).
func (r *reader) decoded(b []byte, fn func([]float64)) {
	for len(b) > 0 {
		k := min(int64(len(b))/r.es, blockElems)
		f := r.f[:k]
		r.dec(b[:k*r.es], f)
		b = b[k*r.es:]
		if r.v.Quantized {
			zp, sc := float64(r.v.ZeroPoint), r.v.Scale
			for i := range f {
				f[i] = float64(float32((f[i] - zp) * sc)) // torch dequantizes to float32
			}
		}
		fn(f)
	}
}

func (r *reader) job(j job, fn func([]byte)) error {
	if j.dense {
		return r.linear(j.start, j.n, fn)
	}
	nRuns := j.runTo - j.runFrom
	elems := nRuns * r.l.runLen
	// a compact job (a strided slice) is read in one go and gathered from memory
	lo, hi := int64(math.MaxInt64), int64(-1)
	for _, i := range []int64{j.runFrom, j.runTo - 1} {
		s := r.l.runAt(r.v.Offset, i)
		lo, hi = min(lo, s), max(hi, s+r.l.runLen-1)
	}
	for d := range r.l.outerShape { // with a negative stride, take the whole view's extent
		if r.l.outerStrides[d] < 0 {
			lo, hi = r.v.extent()
			break
		}
	}
	span := hi - lo + 1
	if span <= 8*elems && span*r.es <= 64<<20 && r.l.runLen < blockElems {
		need := span * r.es
		if int64(cap(r.span)) < need {
			r.span = make([]byte, need)
		}
		buf := r.span[:need]
		if _, err := r.v.Data.ReadAt(buf, r.v.DataOffset+lo*r.es); err != nil {
			return err
		}
		gather := r.raw[:0]
		flush := func() {
			if len(gather) > 0 {
				fn(gather)
				gather = r.raw[:0]
			}
		}
		for i := j.runFrom; i < j.runTo; i++ {
			s := (r.l.runAt(r.v.Offset, i) - lo) * r.es
			chunk := buf[s : s+r.l.runLen*r.es]
			for len(chunk) > 0 {
				room := int64(cap(r.raw)) - int64(len(gather))
				take := min(room, int64(len(chunk)))
				gather = append(gather, chunk[:take]...)
				chunk = chunk[take:]
				if int64(len(gather)) == int64(cap(r.raw)) {
					flush()
				}
			}
		}
		flush()
		return nil
	}
	return r.l.forRuns(r.v.Offset, j.runFrom, j.runTo, func(rn run) error {
		return r.linear(rn.start, rn.n, fn)
	})
}

// acc accumulates moments over finite values; merged with Chan's formula so that blocks
// and workers combine exactly as one pass would.
type acc struct {
	count, zeros, nan, pinf, ninf int64
	min, max, mean, m2, sumsq     float64
}

func newAcc() acc { return acc{min: math.Inf(1), max: math.Inf(-1)} }

func (a *acc) block(f []float64) {
	var n int64
	var s1, s2, sumsq, k float64
	lo, hi := a.min, a.max
	first := true
	for _, x := range f {
		if x-x != 0 { // NaN or ±Inf
			switch {
			case x != x:
				a.nan++
			case x > 0:
				a.pinf++
			default:
				a.ninf++
			}
			continue
		}
		if first {
			k, first = x, false // shift by the first value: stable sums of deviations
		}
		if x == 0 {
			a.zeros++
		}
		n++
		d := x - k
		s1 += d
		s2 += d * d
		sumsq += x * x
		lo = math.Min(lo, x)
		hi = math.Max(hi, x)
	}
	if n == 0 {
		return
	}
	a.min, a.max = lo, hi
	a.addShifted(n, k, s1, s2, sumsq)
}

// addShifted merges a block summarised by shifted sums Σ(x-k), Σ(x-k)².
func (a *acc) addShifted(n int64, k, s1, s2, sumsq float64) {
	mean, m2 := shiftedMoments(n, k, s1, s2)
	a.merge(acc{count: n, mean: mean, m2: m2, sumsq: sumsq, min: a.min, max: a.max})
}

// shiftedMoments turns the shifted sums Σ(x-k), Σ(x-k)² of n values into their mean and
// M2 = Σ(x-mean)².
func shiftedMoments(n int64, k, s1, s2 float64) (mean, m2 float64) {
	fn := float64(n)
	return k + s1/fn, max(s2-s1*s1/fn, 0)
}

func (a *acc) merge(b acc) {
	a.zeros += b.zeros
	a.nan += b.nan
	a.pinf += b.pinf
	a.ninf += b.ninf
	a.sumsq += b.sumsq
	a.min = math.Min(a.min, b.min)
	a.max = math.Max(a.max, b.max)
	if b.count == 0 {
		return
	}
	if a.count == 0 {
		a.count, a.mean, a.m2 = b.count, b.mean, b.m2
		return
	}
	n := a.count + b.count
	d := b.mean - a.mean
	a.mean += d * float64(b.count) / float64(n)
	a.m2 += b.m2 + d*d*float64(a.count)*float64(b.count)/float64(n)
	a.count = n
}

// Compute reads the view (in parallel over workers; 0 means all cores) and returns its
// statistics: a first pass for the moments and the range, a second for the histogram.
// progress, if set, is called with increments that add up to twice the number of
// elements (one share per pass; single-pass dtypes report both shares at once).
func Compute(ctx context.Context, v *View, workers int, progress func(done int64)) (*Stats, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	// A broadcast dimension (stride 0) repeats the same values: compute over the view
	// without it and scale the counts.
	if factor, reduced := unbroadcast(v); factor > 1 {
		s, err := Compute(ctx, reduced, workers, progress)
		if err != nil {
			return nil, err
		}
		s.Numel = v.Numel()
		mul := func(n int64) int64 {
			if n != 0 && factor > math.MaxInt64/n {
				return math.MaxInt64
			}
			return n * factor
		}
		s.Count, s.Zeros, s.NaN, s.PosInf, s.NegInf = mul(s.Count), mul(s.Zeros), mul(s.NaN), mul(s.PosInf), mul(s.NegInf)
		s.L2 *= math.Sqrt(float64(factor))
		for i := range s.Histogram.Counts {
			s.Histogram.Counts[i] = mul(s.Histogram.Counts[i])
		}
		return s, nil
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	numel := v.Numel()
	if numel > 0 && v.Data != nil {
		// the whole extent, once: a bucket fetches it in a few large ranges rather than
		// one per job
		lo, hi := v.extent()
		willRead(v.Data, v.DataOffset+lo*int64(ElementSize(v.DType)), (hi-lo+1)*int64(ElementSize(v.DType)))
	}
	s := &Stats{Numel: numel}
	if numel == 0 {
		s.Min, s.Max, s.Mean, s.Std = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return s, nil
	}
	if len(v.ChannelScales) > 0 {
		if !tableable(v) {
			return nil, fmt.Errorf("%w: per-channel %s", ErrUnsupported, v.DType)
		}
		return computePerChannel(ctx, v, workers, progress)
	}
	jobs, l, _ := plan(v, workers)
	if tableable(v) {
		return computeByTable(ctx, v, jobs, l, workers, progress)
	}
	// A dense view small enough is read once into memory and both passes run over that
	// copy; a larger one (or one when the memory for copies is taken) is read twice.
	hold := holdView(v)
	if hold != nil {
		defer hold.release()
	}
	total := newAcc()
	var mu sync.Mutex
	err := runJobs(ctx, jobs, workers, func() (func(job) error, func()) {
		r := newReader(v, l)
		r.hold = hold
		k := kernelFor(v, r)
		return func(j job) error {
			a := newAcc()
			if err := r.job(j, func(b []byte) { k.moments(b, &a) }); err != nil {
				return err
			}
			mu.Lock()
			total.merge(a)
			mu.Unlock()
			if progress != nil {
				progress(jobSize(j, l))
			}
			return nil
		}, r.release
	})
	if err != nil {
		return nil, err
	}
	s.Count, s.Zeros, s.NaN, s.PosInf, s.NegInf = total.count, total.zeros, total.nan, total.pinf, total.ninf
	s.L2 = math.Sqrt(total.sumsq)
	if s.Count == 0 {
		s.Min, s.Max, s.Mean, s.Std = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return s, nil
	}
	s.Min, s.Max, s.Mean = total.min, total.max, total.mean
	s.Std = math.Sqrt(total.m2 / float64(total.count))
	h := newHistogram(s.Min, s.Max)
	if hold != nil {
		hold.filled = true
	}
	err = runJobs(ctx, jobs, workers, func() (func(job) error, func()) {
		r := newReader(v, l)
		r.hold = hold
		k := kernelFor(v, r)
		counts := make([]int64, Bins) // this worker's, over all its jobs
		return func(j job) error {
				if err := r.job(j, func(b []byte) { k.hist(b, h, counts) }); err != nil {
					return err
				}
				if progress != nil {
					progress(jobSize(j, l))
				}
				return nil
			}, func() {
				if r.hs != nil {
					r.hs.fold(counts)
				}
				mu.Lock()
				for i, c := range counts {
					h.Counts[i] += c
				}
				mu.Unlock()
				r.release()
			}
	})
	if err != nil {
		return nil, err
	}
	s.Histogram = h.Histogram
	return s, nil
}

func jobSize(j job, l layout) int64 {
	if j.dense {
		return j.n
	}
	return (j.runTo - j.runFrom) * l.runLen
}

// runJobs runs jobs on workers, each with its own state made by mk, which also returns what
// to do when the worker has no more jobs (may be nil). Workers claim jobs from a counter,
// and the calling goroutine is one of them: a view of one job runs without starting a
// goroutine, and no job waits on a hand-over (waking a parked thread costs tens of
// microseconds, which for a checkpoint of hundreds of small tensors adds up).
func runJobs(ctx context.Context, jobs []job, workers int, mk func() (func(job) error, func())) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		next.Store(int64(len(jobs))) // the others stop at their next claim
	}
	work := func() {
		do, done := mk()
		if done != nil {
			defer done()
		}
		for {
			i := next.Add(1) - 1
			if i >= int64(len(jobs)) {
				return
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			if err := do(jobs[i]); err != nil {
				fail(err)
				return
			}
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < min(workers, len(jobs)); w++ {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return first
}

// hist bins values like numpy.histogram with range=(min, max).
type hist struct {
	Histogram
	first, last, denom, scale float64
	// degenerate is set when even the widened range [v-0.5, v+0.5] of a constant tensor
	// has no width in float64 (|v| above 2^53): every value goes to the middle bin, where
	// a constant lands in the ordinary case (numpy fails with an IndexError here).
	degenerate bool
}

func newHistogram(lo, hi float64) *hist {
	if lo == hi {
		lo, hi = lo-0.5, hi+0.5
	}
	h := &hist{first: lo, last: hi, denom: hi - lo, scale: Bins / (hi - lo), degenerate: hi == lo}
	h.Edges = make([]float64, Bins+1)
	step := (hi - lo) / Bins
	for i := range h.Edges {
		if step == 0 {
			h.Edges[i] = float64(i)/Bins*(hi-lo) + lo
		} else {
			h.Edges[i] = float64(i)*step + lo
		}
	}
	h.Edges[Bins] = hi
	h.Counts = make([]int64, Bins)
	return h
}

func (h *hist) add(f []float64, counts []int64) {
	for _, x := range f {
		h.one(x, counts)
	}
}

// one bins a value. The first estimate may be one bin off; the comparison with the edges
// then gives the bin whose edges hold x, which is what numpy's correction step yields.
func (h *hist) one(x float64, counts []int64) {
	if i, ok := h.bin(x); ok {
		counts[i]++
	}
}

// bin returns the bin of x; false for a value outside the range, NaN included.
func (h *hist) bin(x float64) (int, bool) {
	if !(x >= h.first && x <= h.last) { // also drops NaN; infinities fall outside
		return 0, false
	}
	if h.degenerate {
		return Bins / 2, true
	}
	i := binEstimate((x - h.first) * h.scale)
	if x < h.Edges[i] {
		i--
	} else if i != Bins-1 && x >= h.Edges[i+1] {
		i++
	}
	return i, true
}

// unbroadcast removes stride-0 dimensions, returning how many times each remaining element
// repeats (saturating) and the smaller view.
func unbroadcast(v *View) (int64, *View) {
	factor := int64(1)
	var shape, strides []int64
	for i, d := range v.Shape {
		if v.Strides[i] == 0 && d > 1 {
			if factor > math.MaxInt64/d {
				factor = math.MaxInt64
			} else {
				factor *= d
			}
			continue
		}
		shape = append(shape, d)
		strides = append(strides, v.Strides[i])
	}
	if factor == 1 {
		return 1, v
	}
	r := *v
	r.Shape, r.Strides = shape, strides
	if len(r.ChannelScales) > 0 {
		return 1, v // per-channel parameters are indexed by the original axes
	}
	return factor, &r
}

// binEstimate clamps a fractional bin position to a bin (NaN, from a range too wide or too
// narrow for float64, goes to bin 0; the edge comparison then corrects it).
func binEstimate(f float64) int {
	switch {
	case !(f >= 1):
		return 0
	case f >= Bins-1:
		return Bins - 1
	}
	return int(f)
}
