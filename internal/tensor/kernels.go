package tensor

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// kernel computes moments and histograms straight from raw element bytes.
type kernel interface {
	moments(raw []byte, a *acc)
	hist(raw []byte, h *hist, counts []int64)
}

// littleEndianHost is true on the machines we run on; the fast kernels reinterpret bytes.
var littleEndianHost = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

func kernelFor(v *View, r *reader) kernel {
	if v.DType == "float32" && !v.BigEndian && !v.Quantized && littleEndianHost {
		return f32Kernel{r}
	}
	return genericKernel{r: r}
}

// genericKernel decodes to float64 blocks first: every dtype, byte order and quantization.
type genericKernel struct{ r *reader }

func (g genericKernel) moments(raw []byte, a *acc) { g.r.decoded(raw, a.block) }
func (g genericKernel) hist(raw []byte, h *hist, counts []int64) {
	g.r.decoded(raw, func(f []float64) { h.add(f, counts) })
}

// words views little-endian raw bytes as 32-bit words (the tail that does not fill a word
// is decoded separately by the caller: raw always holds whole elements).
func words32(raw []byte) []uint32 {
	if len(raw) < 4 {
		return nil
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%4 != 0 { // not from our buffers; copy
		ws := make([]uint32, len(raw)/4)
		for i := range ws {
			ws[i] = binary.LittleEndian.Uint32(raw[4*i:])
		}
		return ws
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/4)
}

func words16(raw []byte) []uint16 {
	if len(raw) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/2)
}

// f32Kernel works on IEEE binary32 bit patterns: finiteness and zeros from the bits.
type f32Kernel struct{ r *reader }

func (f32Kernel) moments(raw []byte, a *acc) { momentsBits(words32(raw), a) }

func (k f32Kernel) hist(raw []byte, h *hist, counts []int64) {
	histBits(words32(raw), h, counts, k.r.histScratch())
}

// histBits bins binary32 bit patterns; see hist.one for the binning rule. With AVX2 (and a
// range it bins exactly) the vector kernel does it; otherwise four count arrays keep runs of
// equal bins from waiting on each other's increments.
func histBits(ws []uint32, h *hist, counts []int64, s *histScratch) {
	if h.fastHist() {
		histFast(ws, h, counts, s)
		return
	}
	if h.degenerate {
		for _, u := range ws {
			h.one(float64(math.Float32frombits(u)), counts)
		}
		return
	}
	first, last, scale := h.first, h.last, h.scale
	edges := h.Edges[:Bins+1]
	var c [4][Bins + 1]int64 // slot Bins takes values outside the range
	bin := func(u uint32) int {
		x := float64(math.Float32frombits(u))
		if !(x >= first && x <= last) {
			return Bins
		}
		i := binEstimate((x - first) * scale)
		if x < edges[i] {
			i--
		} else if i != Bins-1 && x >= edges[i+1] {
			i++
		}
		return i
	}
	i := 0
	for ; i+4 <= len(ws); i += 4 {
		c[0][bin(ws[i])]++
		c[1][bin(ws[i+1])]++
		c[2][bin(ws[i+2])]++
		c[3][bin(ws[i+3])]++
	}
	for ; i < len(ws); i++ {
		c[0][bin(ws[i])]++
	}
	for b := 0; b < Bins; b++ {
		counts[b] += c[0][b] + c[1][b] + c[2][b] + c[3][b]
	}
}

// momentsBits accumulates binary32 values given as bit patterns, in blocks, with the sums
// shifted by each block's first finite value. Blocks with no NaN or infinity (the usual
// case) take a four-lane loop without branches on the values.
func momentsBits(ws []uint32, a *acc) {
	const blk = 4096
	const expMask = 0x7f800000
	for len(ws) > 0 {
		n := min(len(ws), blk)
		block := ws[:n]
		ws = ws[n:]
		var zeros int64
		if block[0]&expMask == expMask {
			slowBlock(block, a)
			continue
		}
		k := float64(math.Float32frombits(block[0]))
		if useAVX2 && n >= 8 {
			momentsBlockAVX2(block, k, a)
			continue
		}
		// bad collects bit 31 of (exponent + 1): set exactly for NaN and ±Inf, checked once
		// per block so the loop has no branch on it
		var bad uint32
		var s1a, s1b, s1c, s1d, s2a, s2b, s2c, s2d float64
		loA, loB, hiA, hiB := k, k, k, k
		i := 0
		for ; i+4 <= n; i += 4 {
			w := block[i : i+4 : i+4]
			u0, u1, u2, u3 := w[0], w[1], w[2], w[3]
			bad |= (u0&expMask + 0x00800000) | (u1&expMask + 0x00800000) | (u2&expMask + 0x00800000) | (u3&expMask + 0x00800000)
			x0 := float64(math.Float32frombits(u0))
			x1 := float64(math.Float32frombits(u1))
			x2 := float64(math.Float32frombits(u2))
			x3 := float64(math.Float32frombits(u3))
			d0, d1, d2, d3 := x0-k, x1-k, x2-k, x3-k
			s1a += d0
			s1b += d1
			s1c += d2
			s1d += d3
			s2a += d0 * d0
			s2b += d1 * d1
			s2c += d2 * d2
			s2d += d3 * d3
			if x0 < loA {
				loA = x0
			}
			if x1 < loB {
				loB = x1
			}
			if x2 < loA {
				loA = x2
			}
			if x3 < loB {
				loB = x3
			}
			if x0 > hiA {
				hiA = x0
			}
			if x1 > hiB {
				hiB = x1
			}
			if x2 > hiA {
				hiA = x2
			}
			if x3 > hiB {
				hiB = x3
			}
			// (v-1)>>31 is 1 exactly when v, a magnitude below 2^31, is 0: no branch
			zeros += int64(((u0&0x7fffffff)-1)>>31 + ((u1&0x7fffffff)-1)>>31 + ((u2&0x7fffffff)-1)>>31 + ((u3&0x7fffffff)-1)>>31)
		}
		for ; i < n; i++ {
			bad |= block[i]&expMask + 0x00800000
			x := float64(math.Float32frombits(block[i]))
			d := x - k
			s1a += d
			s2a += d * d
			loA, hiA = math.Min(loA, x), math.Max(hiA, x)
			zeros += zeroCount(block[i])
		}
		if bad&0x80000000 != 0 {
			slowBlock(block, a) // a NaN or infinity: this block again, value by value
			continue
		}
		addFinite(a, n, k, (s1a+s1b)+(s1c+s1d), (s2a+s2b)+(s2c+s2d), math.Min(loA, loB), math.Max(hiA, hiB), zeros)
	}
}

// momentsBlockAVX2 accumulates a block whose first value is finite with the AVX2 kernel
// (eight values at a time), the tail of fewer than eight in Go.
func momentsBlockAVX2(block []uint32, k float64, a *acc) {
	n := len(block)
	m := n &^ 7
	var out momentsOut
	momentsAVX2(block[:m], k, &out)
	var bad uint32
	for _, b := range out.bad {
		bad |= b
	}
	var zeros int64
	for _, z := range out.zeros {
		zeros -= int64(z)
	}
	s1 := (out.s1[0] + out.s1[1]) + (out.s1[2] + out.s1[3])
	s2 := (out.s2[0] + out.s2[1]) + (out.s2[2] + out.s2[3])
	lo, hi := float64(out.lo[0]), float64(out.hi[0])
	for l := 1; l < 8; l++ {
		lo, hi = math.Min(lo, float64(out.lo[l])), math.Max(hi, float64(out.hi[l]))
	}
	for _, u := range block[m:] {
		bad |= (u&0x7f800000 + 0x00800000) & 0x80000000
		x := float64(math.Float32frombits(u))
		d := x - k
		s1 += d
		s2 += d * d
		lo, hi = math.Min(lo, x), math.Max(hi, x)
		zeros += zeroCount(u)
	}
	if bad != 0 {
		slowBlock(block, a) // a NaN or infinity: this block again, value by value
		return
	}
	addFinite(a, n, k, s1, s2, lo, hi, zeros)
}

// addFinite merges a block of n finite values known by its shifted sums Σ(x-k), Σ(x-k)²,
// range and zeros. Σx² is M2 + n·mean² (both terms non-negative: no cancellation).
func addFinite(a *acc, n int, k, s1, s2, lo, hi float64, zeros int64) {
	a.zeros += zeros
	a.min, a.max = math.Min(a.min, lo), math.Max(a.max, hi)
	mean, m2 := shiftedMoments(int64(n), k, s1, s2)
	a.addShifted(int64(n), k, s1, s2, m2+float64(n)*mean*mean)
}

// slowBlock accumulates a block holding NaN or infinities.
func slowBlock(block []uint32, a *acc) {
	f := make([]float64, len(block))
	for i, u := range block {
		f[i] = float64(math.Float32frombits(u))
	}
	a.block(f)
}

func zeroCount(u uint32) int64 { return int64(((u & 0x7fffffff) - 1) >> 31) }
