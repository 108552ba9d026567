package gguf

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ValueType is the type of a metadata value (enum gguf_type in gguf.h).
type ValueType uint32

// The metadata value types, with their ids in the file.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

const valueTypeCount = 13

var valueTypeNames = [valueTypeCount]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"}

// valueSizes holds the encoded size of each fixed-size type; 0 for strings and arrays.
var valueSizes = [valueTypeCount]int64{1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}

// String returns the name gguf.cpp gives the type ("u8", "f32", "str", "arr", ...), or
// "type N" for an id the format does not define.
func (t ValueType) String() string {
	if t < valueTypeCount {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type %d", uint32(t))
}

func (t ValueType) valid() bool { return t < valueTypeCount }

// minSize is the fewest bytes a value of type t can take in a file.
func (t ValueType) minSize() int64 {
	switch t {
	case ValueString:
		return 8 // the length
	case ValueArray:
		return 4 + 8 // element type and length
	}
	return valueSizes[t]
}

// Value is one metadata value. Scalars and strings are held; an array is an *Array that
// reads its items from the file on demand.
type Value struct {
	Type ValueType
	bits uint64 // integers (sign-extended for signed types), float bits, the bool byte
	str  string
	arr  *Array
}

// Uint returns the value of an unsigned integer (u8, u16, u32, u64), or of a signed one
// that is not negative.
func (v Value) Uint() (uint64, bool) {
	switch v.Type {
	case ValueUint8, ValueUint16, ValueUint32, ValueUint64:
		return v.bits, true
	case ValueInt8, ValueInt16, ValueInt32, ValueInt64:
		if int64(v.bits) >= 0 {
			return v.bits, true
		}
	}
	return 0, false
}

// Int returns the value of a signed integer (i8 ... i64), or of an unsigned one that fits
// in an int64.
func (v Value) Int() (int64, bool) {
	switch v.Type {
	case ValueInt8, ValueInt16, ValueInt32, ValueInt64:
		return int64(v.bits), true
	case ValueUint8, ValueUint16, ValueUint32, ValueUint64:
		if v.bits <= math.MaxInt64 {
			return int64(v.bits), true
		}
	}
	return 0, false
}

// Float returns the value of an f32 (exactly widened) or f64.
func (v Value) Float() (float64, bool) {
	switch v.Type {
	case ValueFloat32:
		return float64(math.Float32frombits(uint32(v.bits))), true
	case ValueFloat64:
		return math.Float64frombits(v.bits), true
	}
	return 0, false
}

// Bits returns the raw bits of a scalar: the IEEE bits of a float, the (sign-extended)
// integer, or the byte of a bool as it was stored.
func (v Value) Bits() uint64 { return v.bits }

// Bool returns the value of a bool. Like gguf.cpp, any non-zero byte is true.
func (v Value) Bool() (bool, bool) {
	if v.Type != ValueBool {
		return false, false
	}
	return v.bits != 0, true
}

// Str returns the value of a string. GGUF strings should be UTF-8; they are returned as
// stored, without checking.
func (v Value) Str() (string, bool) {
	if v.Type != ValueString {
		return "", false
	}
	return v.str, true
}

// Array returns the array of an array value.
func (v Value) Array() (*Array, bool) {
	if v.Type != ValueArray {
		return nil, false
	}
	return v.arr, true
}

// Interface returns the value as the matching Go type: uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, *Array, uint64, int64 or float64.
func (v Value) Interface() any {
	switch v.Type {
	case ValueUint8:
		return uint8(v.bits)
	case ValueInt8:
		return int8(v.bits)
	case ValueUint16:
		return uint16(v.bits)
	case ValueInt16:
		return int16(v.bits)
	case ValueUint32:
		return uint32(v.bits)
	case ValueInt32:
		return int32(v.bits)
	case ValueFloat32:
		return math.Float32frombits(uint32(v.bits))
	case ValueBool:
		return v.bits != 0
	case ValueString:
		return v.str
	case ValueArray:
		return v.arr
	case ValueUint64:
		return v.bits
	case ValueInt64:
		return int64(v.bits)
	case ValueFloat64:
		return math.Float64frombits(v.bits)
	}
	return nil
}

// String formats the value for people: numbers in Go syntax, strings quoted, arrays as
// their type and length ("[300]str").
func (v Value) String() string {
	switch v.Type {
	case ValueString:
		return strconv.Quote(v.str)
	case ValueArray:
		return v.arr.String()
	case ValueFloat32:
		return strconv.FormatFloat(float64(math.Float32frombits(uint32(v.bits))), 'g', -1, 32)
	case ValueFloat64:
		return strconv.FormatFloat(math.Float64frombits(v.bits), 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// decodeScalar decodes a fixed-size value from its little-endian bytes.
func decodeScalar(t ValueType, b []byte) Value {
	v := Value{Type: t}
	switch t {
	case ValueUint8, ValueBool:
		v.bits = uint64(b[0])
	case ValueInt8:
		v.bits = uint64(int64(int8(b[0])))
	case ValueUint16:
		v.bits = uint64(binary.LittleEndian.Uint16(b))
	case ValueInt16:
		v.bits = uint64(int64(int16(binary.LittleEndian.Uint16(b))))
	case ValueUint32, ValueFloat32:
		v.bits = uint64(binary.LittleEndian.Uint32(b))
	case ValueInt32:
		v.bits = uint64(int64(int32(binary.LittleEndian.Uint32(b))))
	case ValueUint64, ValueInt64, ValueFloat64:
		v.bits = binary.LittleEndian.Uint64(b)
	}
	return v
}

// Array is a metadata array. Only its place in the file is kept: items are read when asked
// for, so a 150,000-token vocabulary costs a few kilobytes until a page of it is wanted.
// For strings and nested arrays, whose items vary in size, the offset of every 64th item
// is remembered while the file is parsed, so any page is found by skipping at most 63
// items.
type Array struct {
	elem   ValueType
	n      int64
	off    int64   // absolute offset of item 0
	size   int64   // bytes of all items
	depth  int     // 1 for an array that is a key's value, 2 for an item of that, ...
	marks  []int64 // offset of item k*markEvery, for variable-size items
	src    io.ReaderAt
	fsize  int64
	limits limits
}

const markEvery = 64

// Len returns the number of items.
func (a *Array) Len() int64 { return a.n }

// ElemType returns the type of the items.
func (a *Array) ElemType() ValueType { return a.elem }

// Offset returns the absolute file offset of the first item.
func (a *Array) Offset() int64 { return a.off }

// ByteSize returns the number of bytes the items take in the file.
func (a *Array) ByteSize() int64 { return a.size }

// String returns the array's length and item type, like "[300]str" or "[2][]i32".
func (a *Array) String() string {
	return fmt.Sprintf("[%d]%s", a.n, a.elem)
}

func (a *Array) checkRange(i, j int64) error {
	if i < 0 || j < i || j > a.n {
		return fmt.Errorf("gguf: items [%d, %d) of an array of %d", i, j, a.n)
	}
	return nil
}

// Values returns items [i, j). Items of a nested array are *Array values themselves. The
// caller chooses how many items to ask for at once; a UI should ask for pages.
func (a *Array) Values(i, j int64) ([]Value, error) {
	if err := a.checkRange(i, j); err != nil {
		return nil, err
	}
	out := make([]Value, 0, j-i)
	if sz := valueSizes[a.elem]; sz > 0 {
		rd := a.readerAt(a.off + i*sz)
		for k := i; k < j; k++ {
			b, err := rd.bytes(sz, "an item")
			if err != nil {
				return nil, inItem(err, k, "the array")
			}
			out = append(out, decodeScalar(a.elem, b))
		}
		return out, nil
	}
	rd, err := a.seek(i)
	if err != nil {
		return nil, err
	}
	for k := i; k < j; k++ {
		if a.elem == ValueString {
			s, err := rd.str(a.limits.maxString, "a string")
			if err != nil {
				return nil, inItem(err, k, "the array")
			}
			out = append(out, Value{Type: ValueString, str: s})
			continue
		}
		sub, err := readArray(rd, a.depth+1, a.limits, "an array", true)
		if err != nil {
			return nil, inItem(err, k, "the array")
		}
		out = append(out, Value{Type: ValueArray, arr: sub})
	}
	return out, nil
}

// Strings returns items [i, j) of an array of strings.
func (a *Array) Strings(i, j int64) ([]string, error) {
	if a.elem != ValueString {
		return nil, fmt.Errorf("gguf: Strings on an array of %s", a.elem)
	}
	vs, err := a.Values(i, j)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(vs))
	for k, v := range vs {
		out[k] = v.str
	}
	return out, nil
}

// readerAt returns a reader positioned at off that may not read past the array's end.
func (a *Array) readerAt(off int64) *reader {
	rd := newReader(a.src, a.fsize, off)
	rd.limit = a.off + a.size
	return rd
}

// seek returns a reader at item i of a variable-size array.
func (a *Array) seek(i int64) (*reader, error) {
	m := i / markEvery
	if m >= int64(len(a.marks)) { // i == n, a multiple of markEvery
		return a.readerAt(a.off + a.size), nil
	}
	rd := a.readerAt(a.marks[m])
	for k := m * markEvery; k < i; k++ {
		if err := skipItem(rd, a.elem, a.depth, a.limits); err != nil {
			return nil, inItem(err, k, "the array")
		}
	}
	return rd, nil
}

// skipItem skips one item of a variable-size array at the given depth.
func skipItem(rd *reader, elem ValueType, depth int, lim limits) error {
	if elem == ValueString {
		return rd.skipStr(lim.maxString, "a string")
	}
	_, err := readArray(rd, depth+1, lim, "an array", false)
	return err
}

// inItem says which item of which array an error happened in.
func inItem(err error, k int64, what string) error {
	if e, ok := err.(*Error); ok {
		return &Error{Offset: e.Offset, Msg: fmt.Sprintf("item %d of %s: %s", k, what, e.Msg), Err: e.Err}
	}
	return err
}

// readArray reads an array's element type and length at rd and walks its items, checking
// every length and count against the bytes left before going on. depth is the array's
// nesting level (1 for a key's value). With keep, the offsets of every markEvery-th item
// are recorded for paging.
func readArray(rd *reader, depth int, lim limits, what string, keep bool) (*Array, error) {
	at := rd.pos
	if rd.limit-rd.pos < 12 { // the messages are built only when needed: this may run per item
		if rd.limit-rd.pos < 4 {
			return nil, rd.need(4, "the item type of "+what)
		}
		return nil, rd.need(12, "the item type and length of "+what)
	}
	et, err := rd.u32(what)
	if err != nil {
		return nil, err
	}
	elem := ValueType(et)
	if !elem.valid() {
		return nil, errAt(at, "%s is an array of unknown value type %d (the format defines 0 to %d)", what, int32(et), valueTypeCount-1)
	}
	n64, err := rd.u64(what)
	if err != nil {
		return nil, err
	}
	if elem == ValueArray && depth+1 > lim.maxDepth {
		return nil, errAt(at, "%s nests arrays more than %d deep (Options.MaxArrayDepth)", what, lim.maxDepth)
	}
	// gguf.cpp refuses arrays of more than GGUF_MAX_ARRAY_ELEMENTS (2^30) items, and any
	// whose items cannot fit in the bytes that remain.
	if n64 > maxArrayItems {
		return nil, errAt(at, "%s claims %d items; gguf.cpp refuses arrays of more than %d", what, n64, maxArrayItems)
	}
	n := int64(n64)
	left := rd.limit - rd.pos
	if n > left/elem.minSize() {
		room := fmt.Sprintf("the value that contains it has only %s left", plural(left, "byte"))
		switch {
		case rd.limit == rd.size:
			room = fmt.Sprintf("the file has only %s left; is it truncated?", plural(left, "byte"))
		case rd.capMsg != "":
			room = fmt.Sprintf("there is room for only %s before %s", plural(left, "byte"), rd.capMsg)
		}
		return nil, errAt(at, "%s claims %d items of type %s, at least %s, but %s",
			what, n, elem, plural(n*elem.minSize(), "byte"), room)
	}
	a := &Array{elem: elem, n: n, off: rd.pos, depth: depth, limits: lim, src: rd.r, fsize: rd.size}
	if sz := valueSizes[elem]; sz > 0 {
		if err := rd.skip(n*sz, what); err != nil {
			return nil, err
		}
		a.size = n * sz
		return a, nil
	}
	if keep {
		a.marks = make([]int64, 0, (n+markEvery-1)/markEvery)
	}
	for k := int64(0); k < n; k++ {
		if keep && k%markEvery == 0 {
			a.marks = append(a.marks, rd.pos)
		}
		if err := skipItem(rd, elem, depth, lim); err != nil {
			return nil, inItem(err, k, what)
		}
	}
	a.size = rd.pos - a.off
	return a, nil
}

// maxArrayItems is GGUF_MAX_ARRAY_ELEMENTS in gguf.cpp.
const maxArrayItems = 1 << 30

// describeBytes quotes at most 16 bytes of b for an error message.
func describeBytes(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i == 16 {
			sb.WriteString("...")
			break
		}
		fmt.Fprintf(&sb, "%02x", c)
		if i < len(b)-1 {
			sb.WriteByte(' ')
		}
	}
	return sb.String()
}
