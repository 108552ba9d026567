#include "go_asm.h"
#include "textflag.h"

// func histAVX2(ws []uint32, first, last, scale float32, t *histTables, spill []uint32) int
//
// ws holds binary32 bit patterns, len(ws) a multiple of 8. Each value x has the position
// p = (x-first)*scale, computed in float32; when the fraction of p lies in
// [histEps, 1-histEps] and p is below Bins, x belongs to bin trunc(p) (see histfast.go).
// Values are binned two at a time: consecutive values with bins a and b add one to
// pairs[a*Bins+b] (two tables, taken in turn, so that equal pairs in a row do not wait on
// each other), which halves the increments. A value equal to first or last is safe too:
// it belongs to the first or the last bin (the masks of attention layers are all 0 and 1).
// In a group of eight with any other value, the safe values of the group go to singles one
// by one and the others are appended to spill (room for len(ws) words); the number
// appended is returned.
TEXT ·histAVX2(SB), NOSPLIT, $32-80
	MOVQ ws_base+0(FP), SI
	MOVQ ws_len+8(FP), CX
	VBROADCASTSS first+24(FP), Y15
	VBROADCASTSS last+28(FP), Y9
	VBROADCASTSS scale+32(FP), Y14
	MOVQ t+40(FP), DI
	MOVQ spill_base+48(FP), R8
	XORQ R9, R9
	MOVL $const_histEpsBits32, AX
	MOVL AX, X13
	VBROADCASTSS X13, Y13 // histEps
	MOVL $const_histOneMinusEpsBits32, AX
	MOVL AX, X12
	VBROADCASTSS X12, Y12 // 1 - histEps
	MOVL $const_histBinsBits32, AX
	MOVL AX, X11
	VBROADCASTSS X11, Y11 // Bins
	TESTQ CX, CX
	JZ done

loop:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0
	VMULPS Y14, Y0, Y0        // p
	VROUNDPS $3, Y0, Y1       // trunc(p)
	VSUBPS Y1, Y0, Y2         // fraction (negative p: at most 0, never safe)
	VCMPPS $0x1d, Y13, Y2, Y3 // fraction >= eps
	VCMPPS $0x12, Y12, Y2, Y4 // fraction <= 1-eps
	VCMPPS $0x11, Y11, Y0, Y5 // p < Bins (false for NaN)
	VANDPS Y4, Y3, Y3
	VANDPS Y5, Y3, Y3
	VCVTTPS2DQ Y1, Y1         // bins
	VMOVMSKPS Y3, AX
	CMPL AX, $0xff
	JNE slow

pairs:
	// quadword q holds bins a (low half) and b (high half): a*Bins + b in its low half,
	// read back from the stack as four 32-bit indices
	VPSLLQ $6, Y1, Y2
	VPSRLQ $32, Y1, Y3
	VPADDD Y3, Y2, Y2
	VMOVDQU Y2, 0(SP)
	MOVL 0(SP), R10
	MOVL 8(SP), R11
	MOVL 16(SP), R12
	MOVL 24(SP), R13
	INCL 0(DI)(R10*4)
	INCL const_histPairBytes(DI)(R11*4)
	INCL 0(DI)(R12*4)
	INCL const_histPairBytes(DI)(R13*4)

next:
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ loop

done:
	MOVQ R9, ret+72(FP)
	VZEROUPPER
	RET

slow:
	// values equal to first go to bin 0, to last to bin Bins-1
	VMOVUPS (SI), Y6
	VCMPPS $0, Y15, Y6, Y7 // x == first
	VCMPPS $0, Y9, Y6, Y8  // x == last
	VANDNPS Y1, Y7, Y1
	MOVL $const_histLastBin, BX
	VMOVD BX, X6
	VPBROADCASTD X6, Y6
	VBLENDVPS Y8, Y6, Y1, Y1
	VORPS Y7, Y3, Y3
	VORPS Y8, Y3, Y3
	VMOVMSKPS Y3, AX
	CMPL AX, $0xff
	JEQ pairs
	VMOVDQU Y1, 0(SP)
	XORQ BX, BX

lane:
	BTL BX, AX
	JCC spillone
	MOVL 0(SP)(BX*4), R12
	INCL const_histSinglesOffset(DI)(R12*4)
	JMP lanenext

spillone:
	MOVL (SI)(BX*4), R12
	MOVL R12, (R8)(R9*4)
	INCQ R9

lanenext:
	INCQ BX
	CMPQ BX, $8
	JNE lane
	JMP next
