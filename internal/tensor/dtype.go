// Package tensor reads the values of lazy tensors: it decodes every dtype a checkpoint can
// hold, walks strided views, computes streaming statistics and histograms, and encodes
// views as .npy or raw bytes. It knows nothing of HTTP or of how files are parsed.
package tensor

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
)

// dtypes is the one table of element types: the bytes an element takes in a storage, and
// whether this package decodes its values as numbers. The loader's sizes (bytes per dtype,
// totals) and the statistics both read it, so they cannot disagree.
var dtypes = map[string]struct {
	size    int
	numeric bool
}{
	"bool": {1, true}, "int8": {1, true}, "uint8": {1, true},
	"float8_e4m3fn": {1, true}, "float8_e5m2": {1, true}, "float8_e4m3fnuz": {1, true}, "float8_e5m2fnuz": {1, true},
	"qint8": {1, true}, "quint8": {1, true},
	// torch's packed quantized types: a byte per element in torch's element_size(), values
	// this package does not decode
	"quint4x2": {1, false}, "quint2x4": {1, false},
	"int16": {2, true}, "uint16": {2, true}, "float16": {2, true}, "bfloat16": {2, true},
	"int32": {4, true}, "uint32": {4, true}, "float32": {4, true}, "qint32": {4, true},
	"complex32": {4, false}, // torch.chalf: two float16, not decoded
	"int64":     {8, true}, "uint64": {8, true}, "float64": {8, true}, "complex64": {8, true},
	"complex128": {16, true},
}

// StorageSize is the size in bytes of one element of dtype in a storage, or 0 if unknown:
// the numeric types, and numpy's fixed-size bytesN, strN and voidN (named by their size in
// bits).
func StorageSize(dtype string) int {
	if d, ok := dtypes[dtype]; ok {
		return d.size
	}
	for _, family := range []string{"bytes", "str", "void"} {
		if bits, ok := strings.CutPrefix(dtype, family); ok {
			if n, err := strconv.Atoi(bits); err == nil && n > 0 && n%8 == 0 {
				return n / 8
			}
		}
	}
	return 0
}

// ElementSize is the size in bytes of one element of dtype, or 0 if it is not a numeric
// dtype this package decodes.
func ElementSize(dtype string) int {
	if d, ok := dtypes[dtype]; ok && d.numeric {
		return d.size
	}
	return 0
}

// IsFloat says whether values of dtype can be NaN or infinite.
func IsFloat(dtype string) bool {
	switch dtype {
	case "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
		"float8_e4m3fnuz", "float8_e5m2fnuz", "complex64", "complex128":
		return true
	}
	return false
}

// IsComplex says whether dtype is complex (statistics are taken on the magnitude).
func IsComplex(dtype string) bool { return dtype == "complex64" || dtype == "complex128" }

// decoder turns n elements of raw bytes into float64 values (magnitudes for complex).
type decoder func(src []byte, dst []float64)

var (
	f16Table    [1 << 16]float32
	e4m3fnTable [256]float64
	e5m2Table   [256]float64
	e4m3fnuzTab [256]float64
	e5m2fnuzTab [256]float64
)

func init() {
	for i := range f16Table {
		f16Table[i] = HalfToFloat(uint16(i))
	}
	for i := 0; i < 256; i++ {
		b := uint8(i)
		e4m3fnTable[i] = float8(b, 4, 3, 7, false, false)
		e5m2Table[i] = float8(b, 5, 2, 15, true, false)
		e4m3fnuzTab[i] = float8(b, 4, 3, 8, false, true)
		e5m2fnuzTab[i] = float8(b, 5, 2, 16, false, true)
	}
}

// HalfToFloat converts an IEEE 754 binary16 value.
func HalfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: frac * 2^-24
		f := float32(frac) * (1.0 / (1 << 24))
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// float8 decodes one 8-bit float with the given exponent/mantissa widths and bias. ieee
// formats (e5m2) have infinities and NaNs with an all-ones exponent; "fn" formats (e4m3fn)
// have no infinities and NaN only at all-ones; "fnuz" formats have NaN at 0x80 and no -0.
func float8(b uint8, expBits, manBits uint, bias int, ieee, fnuz bool) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	exp := int(b>>manBits) & (1<<expBits - 1)
	man := int(b) & (1<<manBits - 1)
	maxExp := 1<<expBits - 1
	switch {
	case fnuz && b == 0x80:
		return math.NaN()
	case ieee && exp == maxExp:
		if man == 0 {
			return sign * math.Inf(1)
		}
		return math.NaN()
	case !ieee && !fnuz && exp == maxExp && man == 1<<manBits-1:
		return math.NaN()
	case exp == 0:
		return sign * float64(man) * math.Ldexp(1, 1-bias-int(manBits))
	}
	return sign * (1 + float64(man)/float64(int(1)<<manBits)) * math.Ldexp(1, exp-bias)
}

// decoderFor returns the decoder for dtype in the given byte order.
func decoderFor(dtype string, big bool) decoder {
	var bo binary.ByteOrder = binary.LittleEndian
	if big {
		bo = binary.BigEndian
	}
	switch dtype {
	case "float32":
		if !big {
			return func(s []byte, d []float64) {
				for i := range d {
					d[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(s[4*i:])))
				}
			}
		}
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(math.Float32frombits(bo.Uint32(s[4*i:])))
			}
		}
	case "float64":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = math.Float64frombits(bo.Uint64(s[8*i:]))
			}
		}
	case "float16":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(f16Table[bo.Uint16(s[2*i:])])
			}
		}
	case "bfloat16":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(math.Float32frombits(uint32(bo.Uint16(s[2*i:])) << 16))
			}
		}
	case "float8_e4m3fn":
		return table8(&e4m3fnTable)
	case "float8_e5m2":
		return table8(&e5m2Table)
	case "float8_e4m3fnuz":
		return table8(&e4m3fnuzTab)
	case "float8_e5m2fnuz":
		return table8(&e5m2fnuzTab)
	case "int8", "qint8":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(int8(s[i]))
			}
		}
	case "uint8", "quint8":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(s[i])
			}
		}
	case "bool":
		return func(s []byte, d []float64) {
			for i := range d {
				if s[i] != 0 {
					d[i] = 1
				} else {
					d[i] = 0
				}
			}
		}
	case "int16":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(int16(bo.Uint16(s[2*i:])))
			}
		}
	case "uint16":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(bo.Uint16(s[2*i:]))
			}
		}
	case "int32", "qint32":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(int32(bo.Uint32(s[4*i:])))
			}
		}
	case "uint32":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(bo.Uint32(s[4*i:]))
			}
		}
	case "int64":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(int64(bo.Uint64(s[8*i:])))
			}
		}
	case "uint64":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = float64(bo.Uint64(s[8*i:]))
			}
		}
	case "complex64":
		return func(s []byte, d []float64) {
			for i := range d {
				re := float64(math.Float32frombits(bo.Uint32(s[8*i:])))
				im := float64(math.Float32frombits(bo.Uint32(s[8*i+4:])))
				d[i] = math.Hypot(re, im)
			}
		}
	case "complex128":
		return func(s []byte, d []float64) {
			for i := range d {
				d[i] = math.Hypot(math.Float64frombits(bo.Uint64(s[16*i:])), math.Float64frombits(bo.Uint64(s[16*i+8:])))
			}
		}
	}
	return nil
}

func table8(t *[256]float64) decoder {
	return func(s []byte, d []float64) {
		for i := range d {
			d[i] = t[s[i]]
		}
	}
}
