package loader

// The pickle opcodes, named as CPython's pickletools names them (Lib/pickletools.py), with
// the protocol that introduced each.
const (
	opMark           byte = '(' // 0
	opStop           byte = '.'
	opPop            byte = '0'
	opPopMark        byte = '1'
	opDup            byte = '2'
	opFloat          byte = 'F'
	opInt            byte = 'I'
	opBinInt         byte = 'J' // 1
	opBinInt1        byte = 'K' // 1
	opLong           byte = 'L'
	opBinInt2        byte = 'M' // 1
	opNone           byte = 'N'
	opPersID         byte = 'P'
	opBinPersID      byte = 'Q' // 1
	opReduce         byte = 'R'
	opString         byte = 'S'
	opBinString      byte = 'T' // 1
	opShortBinString byte = 'U' // 1
	opUnicode        byte = 'V'
	opBinUnicode     byte = 'X' // 1
	opAppend         byte = 'a'
	opBuild          byte = 'b'
	opGlobal         byte = 'c'
	opDict           byte = 'd'
	opEmptyDict      byte = '}' // 1
	opAppends        byte = 'e' // 1
	opGet            byte = 'g'
	opBinGet         byte = 'h' // 1
	opInst           byte = 'i'
	opLongBinGet     byte = 'j' // 1
	opList           byte = 'l'
	opEmptyList      byte = ']' // 1
	opObj            byte = 'o' // 1
	opPut            byte = 'p'
	opBinPut         byte = 'q' // 1
	opLongBinPut     byte = 'r' // 1
	opSetItem        byte = 's'
	opTuple          byte = 't'
	opEmptyTuple     byte = ')' // 1
	opSetItems       byte = 'u' // 1
	opBinFloat       byte = 'G' // 1

	opProto         byte = 0x80 // 2
	opNewObj        byte = 0x81 // 2
	opExt1          byte = 0x82 // 2
	opExt2          byte = 0x83 // 2
	opExt4          byte = 0x84 // 2
	opTuple1        byte = 0x85 // 2
	opTuple2        byte = 0x86 // 2
	opTuple3        byte = 0x87 // 2
	opNewTrue       byte = 0x88 // 2
	opNewFalse      byte = 0x89 // 2
	opLong1         byte = 0x8a // 2
	opLong4         byte = 0x8b // 2
	opBinBytes      byte = 'B'  // 3
	opShortBinBytes byte = 'C'  // 3

	opShortBinUnicode byte = 0x8c // 4
	opBinUnicode8     byte = 0x8d // 4
	opBinBytes8       byte = 0x8e // 4
	opEmptySet        byte = 0x8f // 4
	opAddItems        byte = 0x90 // 4
	opFrozenSet       byte = 0x91 // 4
	opNewObjEx        byte = 0x92 // 4
	opStackGlobal     byte = 0x93 // 4
	opMemoize         byte = 0x94 // 4
	opFrame           byte = 0x95 // 4

	opByteArray8     byte = 0x96 // 5
	opNextBuffer     byte = 0x97 // 5
	opReadOnlyBuffer byte = 0x98 // 5
)
