package tensor

import (
	"math"
	"testing"
)

// TestFloat8 checks the float8 decoders against values given in the OCP 8-bit floating point
// specification (E4M3/E5M2) and in the fnuz variants' definition (the bit patterns ml_dtypes
// and torch use): largest normals, smallest subnormals, one, and the special values.
func TestFloat8(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		dtype string
		bits  byte
		want  float64
	}{
		{"float8_e4m3fn", 0x38, 1},
		{"float8_e4m3fn", 0x7e, 448},
		{"float8_e4m3fn", 0xfe, -448},
		{"float8_e4m3fn", 0x01, math.Ldexp(1, -9)},
		{"float8_e4m3fn", 0x08, math.Ldexp(1, -6)},
		{"float8_e4m3fn", 0x7f, nan},
		{"float8_e4m3fn", 0x80, math.Copysign(0, -1)},
		{"float8_e5m2", 0x3c, 1},
		{"float8_e5m2", 0x7b, 57344},
		{"float8_e5m2", 0x01, math.Ldexp(1, -16)},
		{"float8_e5m2", 0x7c, math.Inf(1)},
		{"float8_e5m2", 0xfc, math.Inf(-1)},
		{"float8_e5m2", 0x7d, nan},
		{"float8_e4m3fnuz", 0x40, 1},
		{"float8_e4m3fnuz", 0x7f, 240},
		{"float8_e4m3fnuz", 0x01, math.Ldexp(1, -10)},
		{"float8_e4m3fnuz", 0x80, nan},
		{"float8_e5m2fnuz", 0x40, 1},
		{"float8_e5m2fnuz", 0x7f, 57344},
		{"float8_e5m2fnuz", 0x01, math.Ldexp(1, -17)},
		{"float8_e5m2fnuz", 0x80, nan},
	} {
		out := make([]float64, 1)
		decoderFor(tc.dtype, false)([]byte{tc.bits}, out)
		got := out[0]
		same := got == tc.want && math.Signbit(got) == math.Signbit(tc.want) || math.IsNaN(got) && math.IsNaN(tc.want)
		if !same {
			t.Errorf("%s 0x%02x = %v, want %v", tc.dtype, tc.bits, got, tc.want)
		}
	}
}
