package tensor

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// View is a strided view on a run of bytes: a torch tensor or numpy array as the loader
// describes it. Strides and Offset count elements.
type View struct {
	DType   string
	Shape   []int64
	Strides []int64
	Offset  int64
	// Data holds the storage; its element 0 is at byte DataOffset and it has DataSize bytes.
	Data       io.ReaderAt
	DataOffset int64
	DataSize   int64
	BigEndian  bool
	// Scale and ZeroPoint dequantize per-tensor quantized integers: (q - ZeroPoint) * Scale.
	Quantized bool
	Scale     float64
	ZeroPoint int64
	// ChannelScales and ChannelZeros dequantize per-channel quantized integers along
	// ChannelAxis (one entry per index of that axis).
	ChannelAxis   int
	ChannelScales []float64
	ChannelZeros  []int64
	// ItemSize and NPYDescr describe elements this package does not decode (numpy str,
	// bytes and structured dtypes): they can still be copied into a .npy file or as raw
	// bytes, item by item, with NPYDescr in the header.
	ItemSize int64
	NPYDescr string
}

// ErrUnsupported is returned for dtypes whose values this package does not decode
// (object, str, structured arrays). Its text is shown to users as it is.
var ErrUnsupported = errors.New("values of this dtype cannot be decoded")

// Numel is the number of elements of the view.
func (v *View) Numel() int64 {
	n := int64(1)
	for _, d := range v.Shape {
		n *= d
	}
	return n
}

// Check verifies that the dtype is decodable and that every element of the view lies in the
// storage, without overflow.
func (v *View) Check() error { return v.check(int64(ElementSize(v.DType))) }

// CheckItems is Check for a view whose elements are only copied: numeric dtypes, or items of
// ItemSize bytes.
func (v *View) CheckItems() error {
	if es := ElementSize(v.DType); es > 0 {
		return v.check(int64(es))
	}
	return v.check(v.ItemSize)
}

func (v *View) check(es int64) error {
	if es <= 0 {
		return fmt.Errorf("%w: %s", ErrUnsupported, v.DType)
	}
	if len(v.Strides) != len(v.Shape) {
		return fmt.Errorf("tensor: %d strides for %d dimensions", len(v.Strides), len(v.Shape))
	}
	if v.Offset < 0 {
		return fmt.Errorf("tensor: negative storage offset")
	}
	lo, hi := v.Offset, v.Offset
	n := int64(1)
	for i, d := range v.Shape {
		if d < 0 {
			return fmt.Errorf("tensor: negative dimension")
		}
		if d == 0 {
			return nil
		}
		if n > math.MaxInt64/d {
			return fmt.Errorf("tensor: shape has more than 2^63 elements")
		}
		n *= d
		s := v.Strides[i]
		if s > (1<<62)/d || s < -(1<<62)/d {
			return fmt.Errorf("tensor: strides overflow")
		}
		if s < 0 {
			lo += (d - 1) * s
		} else {
			hi += (d - 1) * s
		}
	}
	if lo < 0 || hi >= v.DataSize/es {
		return fmt.Errorf("tensor: the view reaches element %d but its storage holds %d", hi, v.DataSize/es)
	}
	return nil
}

// extent is the lowest and highest storage element the view reaches (Check has passed).
func (v *View) extent() (lo, hi int64) {
	lo, hi = v.Offset, v.Offset
	for i, d := range v.Shape {
		if d <= 0 {
			return v.Offset, v.Offset
		}
		if s := v.Strides[i]; s < 0 {
			lo += (d - 1) * s
		} else {
			hi += (d - 1) * s
		}
	}
	return lo, hi
}

// run is a contiguous stretch of elements in storage order.
type run struct{ start, n int64 }

// layout describes how to walk a view in C order: outer index space, run length.
type layout struct {
	outerShape   []int64
	outerStrides []int64
	runLen       int64 // elements per contiguous run
	outer        int64 // number of runs
}

func (v *View) layout() layout {
	nd := len(v.Shape)
	runLen := int64(1)
	k := nd
	// merge trailing dimensions that are contiguous with unit stride
	for k > 0 {
		d := k - 1
		if v.Shape[d] == 1 {
			k--
			continue
		}
		if v.Strides[d] != runLen {
			break
		}
		runLen *= v.Shape[d]
		k--
	}
	l := layout{runLen: runLen, outer: 1}
	for d := 0; d < k; d++ {
		if v.Shape[d] == 1 {
			continue
		}
		l.outerShape = append(l.outerShape, v.Shape[d])
		l.outerStrides = append(l.outerStrides, v.Strides[d])
		l.outer *= v.Shape[d]
	}
	return l
}

// runAt is the storage start of the i-th run in C order.
func (l *layout) runAt(base, i int64) int64 {
	off := base
	for d := len(l.outerShape) - 1; d >= 0; d-- {
		off += (i % l.outerShape[d]) * l.outerStrides[d]
		i /= l.outerShape[d]
	}
	return off
}

// dense reports whether the view is a permutation of a contiguous block of its storage (a
// transpose, Fortran order): then statistics can read the block in storage order.
func (v *View) dense() (start int64, ok bool) {
	type dim struct{ size, stride int64 }
	var dims []dim
	for i, d := range v.Shape {
		if d == 0 {
			return 0, false
		}
		if d > 1 {
			dims = append(dims, dim{d, v.Strides[i]})
		}
	}
	sort.Slice(dims, func(i, j int) bool { return dims[i].stride < dims[j].stride })
	want := int64(1)
	for _, d := range dims {
		if d.stride != want {
			return 0, false
		}
		want *= d.size
	}
	return v.Offset, true
}

// forRuns calls fn for each contiguous run of runs [from, to) of the layout.
func (l *layout) forRuns(base, from, to int64, fn func(r run) error) error {
	for i := from; i < to; i++ {
		if err := fn(run{start: l.runAt(base, i), n: l.runLen}); err != nil {
			return err
		}
	}
	return nil
}
