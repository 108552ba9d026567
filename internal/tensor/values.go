package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// Values reads n elements of the view in C order starting at element from, as float64 for
// real dtypes. Complex values are returned in re/im pairs by Complex.
type Values struct {
	s *Stream
}

// NewValues prepares element access for v.
func NewValues(v *View) (*Values, error) {
	s, err := NewStream(v, StreamOptions{})
	if err != nil {
		return nil, err
	}
	return &Values{s: s}, nil
}

// Element is one decoded value: Real for real dtypes (ints exactly in Int/Uint as well),
// Re/Im for complex ones.
type Element struct {
	Real   float64
	Re, Im float64
	Int    int64
	Uint   uint64
	Kind   byte // 'f' float, 'i' signed, 'u' unsigned, 'b' bool, 'c' complex
}

// Read returns elements [from, from+n) of the view in C order.
func (vs *Values) Read(from, n int64) ([]Element, error) {
	s := vs.s
	numel := s.v.Numel()
	if from < 0 || from > numel {
		return nil, fmt.Errorf("tensor: element %d out of range", from)
	}
	n = min(n, numel-from)
	buf := make([]byte, n*s.outES)
	if _, err := s.ReadAt(buf, from*s.outES); err != nil && n > 0 {
		return nil, err
	}
	out := make([]Element, n)
	le := binary.LittleEndian
	for i := range out {
		b := buf[int64(i)*s.outES:]
		e := &out[i]
		switch s.OutDType {
		case "float32":
			e.Kind, e.Real = 'f', float64(math.Float32frombits(le.Uint32(b)))
		case "float64":
			e.Kind, e.Real = 'f', math.Float64frombits(le.Uint64(b))
		case "float16":
			e.Kind, e.Real = 'f', float64(HalfToFloat(le.Uint16(b)))
		case "bool":
			e.Kind = 'b'
			if b[0] != 0 {
				e.Int, e.Real = 1, 1
			}
		case "int8":
			e.Kind, e.Int = 'i', int64(int8(b[0]))
		case "int16":
			e.Kind, e.Int = 'i', int64(int16(le.Uint16(b)))
		case "int32":
			e.Kind, e.Int = 'i', int64(int32(le.Uint32(b)))
		case "int64":
			e.Kind, e.Int = 'i', int64(le.Uint64(b))
		case "uint8":
			e.Kind, e.Uint = 'u', uint64(b[0])
		case "uint16":
			e.Kind, e.Uint = 'u', uint64(le.Uint16(b))
		case "uint32":
			e.Kind, e.Uint = 'u', uint64(le.Uint32(b))
		case "uint64":
			e.Kind, e.Uint = 'u', le.Uint64(b)
		case "complex64":
			e.Kind = 'c'
			e.Re = float64(math.Float32frombits(le.Uint32(b)))
			e.Im = float64(math.Float32frombits(le.Uint32(b[4:])))
		case "complex128":
			e.Kind = 'c'
			e.Re, e.Im = math.Float64frombits(le.Uint64(b)), math.Float64frombits(le.Uint64(b[8:]))
		}
		switch e.Kind {
		case 'i':
			e.Real = float64(e.Int)
		case 'u':
			e.Real = float64(e.Uint)
		case 'c':
			e.Real = math.Hypot(e.Re, e.Im)
		}
	}
	return out, nil
}

// ReadReal reads n elements from element from, as Read does, as float64s (each element's
// Real).
func (vs *Values) ReadReal(from, n int64) ([]float64, error) {
	els, err := vs.Read(from, n)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(els))
	for i, e := range els {
		out[i] = e.Real
	}
	return out, nil
}

// bits is the precision used to print floats of the output dtype.
func (vs *Values) bits() int {
	if vs.s.OutDType == "float64" || vs.s.OutDType == "complex128" {
		return 64
	}
	return 32
}

// Text formats an element the way numpy prints it (shortest round-trip form).
func (vs *Values) Text(e Element) string {
	switch e.Kind {
	case 'b':
		if e.Int != 0 {
			return "True"
		}
		return "False"
	case 'i':
		return strconv.FormatInt(e.Int, 10)
	case 'u':
		return strconv.FormatUint(e.Uint, 10)
	case 'c':
		im := floatText(math.Abs(e.Im), vs.bits())
		sign := "+"
		if e.Im < 0 || math.Signbit(e.Im) {
			sign = "-"
		}
		return floatText(e.Re, vs.bits()) + sign + im + "j"
	}
	return floatText(e.Real, vs.bits())
}

// JSON encodes an element losslessly: numbers as JSON numbers, non-finite floats and
// complex numbers as tagged objects ({"$float":"nan"}, {"$complex":[re, im]}).
func (vs *Values) JSON(e Element) string {
	switch e.Kind {
	case 'b':
		if e.Int != 0 {
			return "true"
		}
		return "false"
	case 'i':
		return strconv.FormatInt(e.Int, 10)
	case 'u':
		return strconv.FormatUint(e.Uint, 10)
	case 'c':
		return `{"$complex":[` + jsonFloat(e.Re, vs.bits()) + "," + jsonFloat(e.Im, vs.bits()) + "]}"
	}
	return jsonFloat(e.Real, vs.bits())
}

func floatText(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

func jsonFloat(f float64, bits int) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return `{"$float":"` + floatText(f, bits) + `"}`
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// Numel is the number of elements.
func (vs *Values) Numel() int64 { return vs.s.v.Numel() }
