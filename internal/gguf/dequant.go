package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The dequantizers below follow the block layouts of ggml-common.h and compute what ggml's
// reference dequantize_row_* functions (ggml-quants.c) compute, in the same order of float32
// operations with every operation rounded to float32, as ISO C evaluates them without
// floating-point contraction. Every product that is later added to or subtracted from is
// wrapped in a float32(...) conversion, even when it is first stored in a variable: the Go
// compiler may otherwise fuse a*b+c into one FMA instruction, across statements too (it
// does on arm64), which rounds once instead of twice and changes the last bit. (A C
// compiler that contracts, such as GCC by default when FMA instructions are enabled, makes
// ggml itself differ from its reference in the same way.)

// Dequantizable reports whether Dequantize handles t.
func Dequantizable(t Type) bool {
	switch t {
	case TypeF32, TypeF16, TypeBF16, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ8_0,
		TypeQ2_K, TypeQ3_K, TypeQ4_K, TypeQ5_K, TypeQ6_K:
		return true
	}
	return false
}

// Dequantize decodes the whole blocks in src, of type t, into dst: BlockSize(t) values per
// block of TypeSize(t) bytes, in order. len(src) must be a multiple of TypeSize(t) and dst
// must have room for every value; nothing past that is written.
func Dequantize(t Type, src []byte, dst []float32) error {
	if !Dequantizable(t) {
		return fmt.Errorf("gguf: cannot dequantize type %s", t)
	}
	bs, ts := BlockSize(t), TypeSize(t)
	if len(src)%ts != 0 {
		return fmt.Errorf("gguf: %d bytes of %s is not a whole number of %d-byte blocks", len(src), t, ts)
	}
	nb := len(src) / ts
	if len(dst) < nb*bs {
		return fmt.Errorf("gguf: %d blocks of %s make %d values, but dst has room for %d", nb, t, nb*bs, len(dst))
	}
	var dq func(b []byte, y []float32)
	switch t {
	case TypeF32:
		dq = func(b []byte, y []float32) { y[0] = math.Float32frombits(binary.LittleEndian.Uint32(b)) }
	case TypeF16:
		dq = func(b []byte, y []float32) { y[0] = halfAt(b, 0) }
	case TypeBF16:
		dq = func(b []byte, y []float32) { y[0] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16) }
	case TypeQ4_0:
		dq = dequantQ4_0
	case TypeQ4_1:
		dq = dequantQ4_1
	case TypeQ5_0:
		dq = dequantQ5_0
	case TypeQ5_1:
		dq = dequantQ5_1
	case TypeQ8_0:
		dq = dequantQ8_0
	case TypeQ2_K:
		dq = dequantQ2_K
	case TypeQ3_K:
		dq = dequantQ3_K
	case TypeQ4_K:
		dq = dequantQ4_K
	case TypeQ5_K:
		dq = dequantQ5_K
	case TypeQ6_K:
		dq = dequantQ6_K
	}
	for i := 0; i < nb; i++ {
		dq(src[i*ts:(i+1)*ts], dst[i*bs:(i+1)*bs])
	}
	return nil
}

// HalfToFloat32 converts IEEE 754 binary16 bits to the float32 of the same value (exact:
// every half is a float32). NaNs keep their payload, shifted into place.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	man := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F: // inf or NaN
		return math.Float32frombits(sign | 0xFF<<23 | man<<13)
	case exp != 0: // normal: rebias 15 -> 127
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// subnormal: man * 2^-24, exactly representable as a normal float32
	v := float32(man) * (1.0 / (1 << 24))
	if sign != 0 {
		v = -v
	}
	return v
}

func halfAt(b []byte, off int) float32 {
	return HalfToFloat32(binary.LittleEndian.Uint16(b[off:]))
}

// block_q4_0: d (f16), qs[16]: value j is (low nibble of qs[j] - 8) * d, value j+16 the
// high nibble.
func dequantQ4_0(b []byte, y []float32) {
	d := halfAt(b, 0)
	qs := b[2:18]
	for j := 0; j < 16; j++ {
		y[j] = float32(int(qs[j]&0x0F)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

// block_q4_1: d, m (f16), qs[16]: nibble * d + m.
func dequantQ4_1(b []byte, y []float32) {
	d, m := halfAt(b, 0), halfAt(b, 2)
	qs := b[4:20]
	for j := 0; j < 16; j++ {
		y[j] = float32(float32(qs[j]&0x0F)*d) + m
		y[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

// block_q5_0: d (f16), qh[4] (the fifth bits, as a little-endian u32), qs[16]:
// ((nibble | fifth bit << 4) - 16) * d.
func dequantQ5_0(b []byte, y []float32) {
	d := halfAt(b, 0)
	qh := binary.LittleEndian.Uint32(b[2:6])
	qs := b[6:22]
	for j := 0; j < 16; j++ {
		h0 := byte(qh>>j<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(int32(qs[j]&0x0F|h0)-16) * d
		y[j+16] = float32(int32(qs[j]>>4|h1)-16) * d
	}
}

// block_q5_1: d, m (f16), qh[4], qs[16]: (nibble | fifth bit << 4) * d + m.
func dequantQ5_1(b []byte, y []float32) {
	d, m := halfAt(b, 0), halfAt(b, 2)
	qh := binary.LittleEndian.Uint32(b[4:8])
	qs := b[8:24]
	for j := 0; j < 16; j++ {
		h0 := byte(qh>>j<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(float32(qs[j]&0x0F|h0)*d) + m
		y[j+16] = float32(float32(qs[j]>>4|h1)*d) + m
	}
}

// block_q8_0: d (f16), qs[32] (int8): q * d.
func dequantQ8_0(b []byte, y []float32) {
	d := halfAt(b, 0)
	for j := 0; j < 32; j++ {
		y[j] = float32(int8(b[2+j])) * d
	}
}

// block_q2_K: scales[16] (4-bit scale and 4-bit min per 16 values), qs[64] (2 bits per
// value), d, dmin (f16).
func dequantQ2_K(b []byte, y []float32) {
	scales, q := b[0:16], b[16:80]
	d, dmin := halfAt(b, 80), halfAt(b, 82)
	is, k := 0, 0
	for n := 0; n < qkK; n += 128 {
		for shift := uint(0); shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				sc := scales[is]
				is++
				dl := float32(d * float32(sc&0xF))
				ml := float32(dmin * float32(sc>>4))
				for l := 0; l < 16; l++ {
					y[k] = float32(dl*float32((q[l+16*half]>>shift)&3)) - ml
					k++
				}
			}
		}
		q = q[32:]
	}
}

// block_q3_K: hmask[32] (high bits), qs[64] (low 2 bits), scales[12] (sixteen 6-bit scales),
// d (f16).
func dequantQ3_K(b []byte, y []float32) {
	hm, q := b[0:32], b[32:96]
	d := halfAt(b, 108)
	var aux [4]uint32
	for i := 0; i < 3; i++ {
		aux[i] = binary.LittleEndian.Uint32(b[96+4*i:])
	}
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	tmp := aux[2]
	aux[2] = (aux[0]>>4)&kmask2 | ((tmp>>4)&kmask1)<<4
	aux[3] = (aux[1]>>4)&kmask2 | ((tmp>>6)&kmask1)<<4
	aux[0] = aux[0]&kmask2 | ((tmp>>0)&kmask1)<<4
	aux[1] = aux[1]&kmask2 | ((tmp>>2)&kmask1)<<4
	var scales [16]int8
	for i := range scales {
		scales[i] = int8(aux[i/4] >> (8 * (i % 4)))
	}
	is, k := 0, 0
	m := byte(1)
	for n := 0; n < qkK; n += 128 {
		for shift := uint(0); shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				dl := d * float32(int(scales[is])-32)
				is++
				for l := 0; l < 16; l++ {
					v := int((q[l+16*half] >> shift) & 3)
					if hm[l+16*half]&m == 0 {
						v -= 4
					}
					y[k] = dl * float32(v)
					k++
				}
			}
			m <<= 1
		}
		q = q[32:]
	}
}

// scaleMinK4 unpacks the j-th 6-bit scale and min of a Q4_K / Q5_K block's 12 scale bytes.
func scaleMinK4(j int, q []byte) (sc, m byte) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xF | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// block_q4_K: d, dmin (f16), scales[12], qs[128]: eight groups of 32 values, each with its
// own 6-bit scale and min.
func dequantQ4_K(b []byte, y []float32) {
	d, dmin := halfAt(b, 0), halfAt(b, 2)
	scales, q := b[4:16], b[16:144]
	k := 0
	for is := 0; is < 8; is += 2 {
		sc, m := scaleMinK4(is, scales)
		d1, m1 := float32(d*float32(sc)), float32(dmin*float32(m))
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := float32(d*float32(sc)), float32(dmin*float32(m))
		for l := 0; l < 32; l++ {
			y[k+l] = float32(d1*float32(q[l]&0xF)) - m1
			y[k+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		k += 64
		q = q[32:]
	}
}

// block_q5_K: d, dmin (f16), scales[12], qh[32] (fifth bits), qs[128].
func dequantQ5_K(b []byte, y []float32) {
	d, dmin := halfAt(b, 0), halfAt(b, 2)
	scales, qh, ql := b[4:16], b[16:48], b[48:176]
	u1, u2 := byte(1), byte(2)
	k := 0
	for is := 0; is < 8; is += 2 {
		sc, m := scaleMinK4(is, scales)
		d1, m1 := float32(d*float32(sc)), float32(dmin*float32(m))
		sc, m = scaleMinK4(is+1, scales)
		d2, m2 := float32(d*float32(sc)), float32(dmin*float32(m))
		for l := 0; l < 32; l++ {
			v1, v2 := int(ql[l]&0xF), int(ql[l]>>4)
			if qh[l]&u1 != 0 {
				v1 += 16
			}
			if qh[l]&u2 != 0 {
				v2 += 16
			}
			y[k+l] = float32(d1*float32(v1)) - m1
			y[k+32+l] = float32(d2*float32(v2)) - m2
		}
		k += 64
		ql = ql[32:]
		u1 <<= 2
		u2 <<= 2
	}
}

// block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d (f16).
func dequantQ6_K(b []byte, y []float32) {
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	d := halfAt(b, 208)
	for n := 0; n < qkK; n += 128 {
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int(ql[l]&0xF|((qh[l]>>0)&3)<<4) - 32
			q2 := int(ql[l+32]&0xF|((qh[l]>>2)&3)<<4) - 32
			q3 := int(ql[l]>>4|((qh[l]>>4)&3)<<4) - 32
			q4 := int(ql[l+32]>>4|((qh[l]>>6)&3)<<4) - 32
			y[n+l] = d * float32(int8(sc[is])) * float32(q1)
			y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
		ql, qh, sc = ql[64:], qh[32:], sc[8:]
	}
}
