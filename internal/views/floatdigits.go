package views

import (
	"math"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/tensor"
)

// Values of the float dtypes narrower than float32 are decoded to float32 (tensor.Values)
// or float64 (the statistics), whose shortest round-trip text has digits the dtype does not
// hold: bfloat16's 0.1 is 0.10009765625, which float32 prints as 0.100097656. Pages print
// them as numpy prints a float16 instead: with the fewest digits that read back as the same
// value in the dtype ("0.1").

// floatFormat is a binary floating-point format: the bits of its significand after the
// leading one, the exponent of its smallest normal (below it are the subnormals, spaced as
// the smallest normals are) and its largest finite value.
type floatFormat struct {
	man, emin int
	max       float64
}

// narrowFloats are the dtypes printed in their own precision.
var narrowFloats = map[string]floatFormat{
	"float16":         {man: 10, emin: -14, max: 65504},
	"bfloat16":        {man: 7, emin: -126, max: 0x1.fep127},
	"float8_e4m3fn":   {man: 3, emin: -6, max: 448},
	"float8_e5m2":     {man: 2, emin: -14, max: 57344},
	"float8_e4m3fnuz": {man: 3, emin: -7, max: 240},
	"float8_e5m2fnuz": {man: 2, emin: -15, max: 57344},
}

// round converts x to the format, to nearest with ties to even, as IEEE 754 and the
// libraries' float64 → float16 conversions do: below the smallest normal onto the
// subnormals (and to ±0 under half the smallest one), and to ±inf past the largest finite
// value (at or beyond halfway to where the next value would be). The formats without an
// infinity make NaN of such a value, or saturate; either way it is none of their finite
// values, which is all that is asked of it here.
func (f floatFormat) round(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	_, exp := math.Frexp(x) // |x| in [2^(exp-1), 2^exp)
	// the spacing of the format's values around x: 2^q
	q := max(exp-1, f.emin) - f.man
	// Both scalings are exact: |x|·2^-q is below 2^(man+1) and a normal float64, and so is
	// the integer it rounds to, times 2^q.
	r := math.Ldexp(math.RoundToEven(math.Ldexp(x, -q)), q)
	if math.Abs(r) > f.max {
		return math.Copysign(math.Inf(1), x)
	}
	return r // a tiny negative x gives -0, as it should
}

// sameValue says whether a and b are the same value, sign of zero included.
func sameValue(a, b float64) bool {
	return a == b && math.Signbit(a) == math.Signbit(b)
}

// text formats v, a value of the format, with the fewest significant digits that read back
// as v: rounding the float64 nearest the text to the format gives v again. The layout is
// the one floats have everywhere else (strconv's shortest %g: "0.1", "1", "65500",
// "6e-08", "-1.5e+30", "nan", "inf").
func (f floatFormat) text(v float64) string {
	switch {
	case math.IsNaN(v):
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	a := math.Abs(v)
	reads := func(s string) (float64, bool) {
		x, err := strconv.ParseFloat(s, 64)
		return x, err == nil && sameValue(f.round(x), a)
	}
	out := func(x float64) string {
		// x is the float64 nearest a decimal of at most 9 digits, so its shortest text is
		// that decimal
		return strconv.FormatFloat(math.Copysign(x, v), 'g', -1, 64)
	}
	for p := 1; p <= 9; p++ {
		s := strconv.FormatFloat(a, 'e', p-1, 64) // v's nearest p digits: "1.23e-05"
		if x, ok := reads(s); ok {
			return out(x)
		}
		// When those do not read back, the p digits on v's other side may: the interval
		// that rounds to v is lopsided at a power of two (float16's 2^-6 = 0.015625 is
		// 0.01563, as numpy prints it, for 0.01562 reads back as the value below).
		mant, exp, _ := strings.Cut(s, "e")
		m, err1 := strconv.ParseInt(strings.Replace(mant, ".", "", 1), 10, 64)
		e, err2 := strconv.Atoi(exp)
		if err1 != nil || err2 != nil {
			break
		}
		for _, n := range []int64{m - 1, m + 1} {
			if x, ok := reads(strconv.FormatInt(n, 10) + "e" + strconv.Itoa(e-(p-1))); ok {
				return out(x)
			}
		}
	}
	return strconv.FormatFloat(v, 'g', -1, 64) // not reached: 5 digits tell every float16 apart
}

// InDType prints the floats r reads as values of dtype, the dtype of the view r reads:
// float16, bfloat16 and float8 values, which r decodes to float32, with the digits their
// own precision holds (floatFormat.text). Any other dtype is printed as r prints it, and so are
// elements that are not floats (a quantized tensor's integers).
func InDType(r ValueReader, dtype string) ValueReader {
	f, ok := narrowFloats[dtype]
	if !ok {
		return r
	}
	return narrowReader{ValueReader: r, f: f}
}

type narrowReader struct {
	ValueReader
	f floatFormat
}

func (n narrowReader) Text(e tensor.Element) string {
	if e.Kind != 'f' {
		return n.ValueReader.Text(e)
	}
	return n.f.text(e.Real)
}
