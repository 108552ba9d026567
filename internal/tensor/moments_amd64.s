#include "textflag.h"

// func momentsAVX2(ws []uint32, k float64, out *momentsOut)
// ws holds binary32 bit patterns, len(ws) a multiple of 8 and at least 8. For each lane it
// accumulates Σ(x-k) and Σ(x-k)² in float64 (the square with FMA), the float32 minimum and
// maximum (meaningless when a NaN is present, which the caller then handles value by
// value), an OR of "exponent all ones" masks (NaN and infinities) and a negative count of
// zeros. Needs AVX2 and FMA.
TEXT ·momentsAVX2(SB), NOSPLIT, $0-40
	MOVQ ws_base+0(FP), SI
	MOVQ ws_len+8(FP), CX
	MOVQ out+32(FP), DI
	VBROADCASTSD k+24(FP), Y15
	MOVL $0x7f800000, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x7fffffff, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	VPXOR Y12, Y12, Y12
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VBROADCASTSS (SI), Y4 // min and max start at the first value
	VMOVAPS Y4, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7

loop:
	VMOVDQU (SI), Y8
	VPAND Y14, Y8, Y9
	VPCMPEQD Y14, Y9, Y9
	VPOR Y9, Y6, Y6
	VPAND Y13, Y8, Y9
	VPCMPEQD Y12, Y9, Y9
	VPADDD Y9, Y7, Y7
	VMINPS Y8, Y4, Y4
	VMAXPS Y8, Y5, Y5
	VCVTPS2PD (SI), Y10
	VCVTPS2PD 16(SI), Y11
	VSUBPD Y15, Y10, Y10
	VSUBPD Y15, Y11, Y11
	VADDPD Y10, Y0, Y0
	VADDPD Y11, Y1, Y1
	VFMADD231PD Y10, Y10, Y2
	VFMADD231PD Y11, Y11, Y3
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ loop

	VADDPD Y1, Y0, Y0
	VADDPD Y3, Y2, Y2
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y2, 32(DI)
	VMOVUPD Y4, 64(DI)
	VMOVUPD Y5, 96(DI)
	VMOVDQU Y6, 128(DI)
	VMOVDQU Y7, 160(DI)
	VZEROUPPER
	RET
