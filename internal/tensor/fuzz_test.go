package tensor

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"testing"
)

// FuzzView drives the view arithmetic with arbitrary shapes, strides and offsets over a
// small storage: Check must reject every view that reaches outside the storage, and a view
// it accepts must compute, encode and read without panicking or reading out of bounds.
func FuzzView(f *testing.F) {
	f.Add(uint8(0), []byte{2, 3}, []byte{3, 1}, uint8(0))
	f.Add(uint8(1), []byte{4, 3}, []byte{1, 4}, uint8(2))
	f.Add(uint8(2), []byte{2, 0}, []byte{1, 1}, uint8(0))
	f.Add(uint8(3), []byte{3, 2, 2}, []byte{0, 2, 1}, uint8(1))
	dtypes := []string{"float32", "bfloat16", "float16", "int8", "uint8", "int64", "bool", "complex64", "float8_e4m3fn", "float64"}
	storage := make([]byte, 256)
	for i := range storage {
		storage[i] = byte(i * 37)
	}
	f.Fuzz(func(t *testing.T, dt uint8, shape, strides []byte, off uint8) {
		if len(shape) > 6 || len(shape) != len(strides) {
			return
		}
		v := &View{DType: dtypes[int(dt)%len(dtypes)], Offset: int64(off) % 64, Data: bytes.NewReader(storage), DataSize: int64(len(storage))}
		for i := range shape {
			v.Shape = append(v.Shape, int64(shape[i]%9))
			v.Strides = append(v.Strides, int64(int8(strides[i])))
		}
		if v.Check() != nil {
			return
		}
		st, err := Compute(context.Background(), v, 2, nil)
		if err != nil {
			t.Fatalf("Compute(%+v) after Check passed: %v", v, err)
		}
		// cross-check the statistics' walk (dense blocks, gathered spans) against reading
		// every element in C order through the encoder's walk
		vals, err := NewValues(v)
		if err != nil {
			t.Fatal(err)
		}
		els, err := vals.Read(0, v.Numel())
		if err != nil {
			t.Fatal(err)
		}
		var count, zeros int64
		lo, hi := math.Inf(1), math.Inf(-1)
		var total int64
		for _, e := range els {
			x := e.Real
			if x-x != 0 {
				continue
			}
			count++
			if x == 0 {
				zeros++
			}
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		for _, c := range st.Histogram.Counts {
			total += c
		}
		if st.Count != count || st.Zeros != zeros || (count > 0 && (st.Min != lo || st.Max != hi || total != count)) {
			t.Fatalf("%s %v strides %v offset %d: Compute count/zeros/min/max/hist = %d/%d/%v/%v/%d, elements give %d/%d/%v/%v",
				v.DType, v.Shape, v.Strides, v.Offset, st.Count, st.Zeros, st.Min, st.Max, total, count, zeros, lo, hi)
		}
		for _, npy := range []bool{false, true} {
			s, err := NewStream(v, StreamOptions{NPY: npy})
			if err != nil {
				t.Fatalf("NewStream: %v", err)
			}
			b, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
			if err != nil || int64(len(b)) != s.Size() {
				t.Fatalf("read %d of %d bytes: %v", len(b), s.Size(), err)
			}
			if npy && len(b) >= 10 && (10+int(binary.LittleEndian.Uint16(b[8:])))%64 != 0 {
				t.Fatalf("npy header not aligned")
			}
		}
	})
}
