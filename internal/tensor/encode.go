package tensor

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
)

// Stream is a view encoded as a file (.npy or raw bytes), readable at any offset without
// materialising it: downloads stream from it in constant memory and Range requests seek in
// it. Elements are written in C order; a non-contiguous view is made contiguous.
type Stream struct {
	v       *View
	l       layout
	header  []byte
	inES    int64
	outES   int64
	size    int64
	convert func(src, dst []byte) // one element; nil when bytes are copied as they are
	direct  bool                  // data is one contiguous run copied as is
	// OutDType is the dtype of the written values and Descr its numpy description.
	OutDType string
	Descr    string
}

// StreamOptions says how to encode.
type StreamOptions struct {
	// NPY writes a .npy header before the data; otherwise the data alone, little-endian.
	NPY bool
	// KeepBits writes bfloat16 as uint16 and float8 as uint8 bit patterns instead of
	// converting them to float32 (which numpy can read as numbers).
	KeepBits bool
}

// NewStream encodes v.
func NewStream(v *View, o StreamOptions) (*Stream, error) {
	if ElementSize(v.DType) == 0 && v.ItemSize > 0 && v.NPYDescr != "" {
		return newItemStream(v, o)
	}
	if err := v.Check(); err != nil {
		return nil, err
	}
	s := &Stream{v: v, inES: int64(ElementSize(v.DType)), l: v.layout()}
	s.outES = s.inES
	s.OutDType = v.DType
	order := byte('<')
	swap := false
	if v.BigEndian && s.inES > 1 {
		if o.NPY {
			order = '>' // keep the file's bytes; numpy reads them as they are
		} else {
			swap = true
		}
	}
	code := ""
	switch v.DType {
	case "bool":
		code, order = "b1", '|'
	case "int8", "qint8":
		code, order = "i1", '|'
		s.OutDType = "int8"
	case "uint8", "quint8":
		code, order = "u1", '|'
		s.OutDType = "uint8"
	case "int16", "int32", "int64", "qint32":
		code = fmt.Sprintf("i%d", s.inES)
		s.OutDType = fmt.Sprintf("int%d", 8*s.inES)
	case "uint16", "uint32", "uint64":
		code = fmt.Sprintf("u%d", s.inES)
	case "float16", "float32", "float64":
		code = fmt.Sprintf("f%d", s.inES)
	case "complex64", "complex128":
		code = fmt.Sprintf("c%d", s.inES)
	case "bfloat16":
		if o.KeepBits {
			code, s.OutDType = "u2", "uint16"
		} else {
			code, s.OutDType, s.outES, order = "f4", "float32", 4, '<'
			big := v.BigEndian
			s.convert = func(src, dst []byte) {
				var h uint16
				if big {
					h = binary.BigEndian.Uint16(src)
				} else {
					h = binary.LittleEndian.Uint16(src)
				}
				binary.LittleEndian.PutUint32(dst, uint32(h)<<16)
			}
			swap = false
		}
	case "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz":
		if o.KeepBits {
			code, order, s.OutDType = "u1", '|', "uint8"
		} else {
			table := map[string]*[256]float64{"float8_e4m3fn": &e4m3fnTable, "float8_e5m2": &e5m2Table,
				"float8_e4m3fnuz": &e4m3fnuzTab, "float8_e5m2fnuz": &e5m2fnuzTab}[v.DType]
			code, s.OutDType, s.outES, order = "f4", "float32", 4, '<'
			s.convert = func(src, dst []byte) {
				binary.LittleEndian.PutUint32(dst, math.Float32bits(float32(table[src[0]])))
			}
		}
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, v.DType)
	}
	if swap {
		es := int(s.inES)
		s.convert = func(src, dst []byte) {
			for i := 0; i < es; i++ {
				dst[i] = src[es-1-i]
			}
		}
		if strings.HasPrefix(v.DType, "complex") { // swap each half separately
			half := es / 2
			s.convert = func(src, dst []byte) {
				for i := 0; i < half; i++ {
					dst[i] = src[half-1-i]
					dst[half+i] = src[es-1-i]
				}
			}
		}
	}
	s.Descr = string(order) + code
	if o.NPY {
		s.header = npyHeader(s.Descr, v.Shape)
	}
	if v.Numel() > (math.MaxInt64-int64(len(s.header)))/s.outES {
		return nil, fmt.Errorf("tensor: a view of %d elements is too large to encode", v.Numel())
	}
	s.size = int64(len(s.header)) + v.Numel()*s.outES
	s.direct = s.convert == nil && (s.l.outer == 1 || v.Numel() == 0)
	return s, nil
}

// newItemStream copies items of a dtype this package does not decode (str, bytes,
// structured) as they are: byte order and fields stay as NPYDescr describes them.
func newItemStream(v *View, o StreamOptions) (*Stream, error) {
	if err := v.CheckItems(); err != nil {
		return nil, err
	}
	s := &Stream{v: v, inES: v.ItemSize, outES: v.ItemSize, l: v.layout(), OutDType: v.DType, Descr: v.NPYDescr}
	if o.NPY {
		s.header = npyHeader(s.Descr, v.Shape)
	}
	if v.Numel() > (math.MaxInt64-int64(len(s.header)))/s.outES {
		return nil, fmt.Errorf("tensor: a view of %d elements is too large to encode", v.Numel())
	}
	s.size = int64(len(s.header)) + v.Numel()*s.outES
	s.direct = s.l.outer == 1 || v.Numel() == 0
	return s, nil
}

// npyHeader is a .npy header, padded so the data starts at a multiple of 64: version 1.0,
// or 2.0 when it is longer than 1.0 allows, or 3.0 when a field name is not ASCII (as
// numpy's write_array chooses). descr is a type code ("<f4") or a structured dtype's
// literal ("[('x', '<i4')]", "{'names': ...}").
func npyHeader(descr string, shape []int64) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	sh := "(" + strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	sh += ")"
	lit := "'" + descr + "'"
	if strings.HasPrefix(descr, "[") || strings.HasPrefix(descr, "{") {
		lit = descr
	}
	dict := fmt.Sprintf("{'descr': %s, 'fortran_order': False, 'shape': %s, }", lit, sh)
	version, lenBytes := byte(1), 2
	for i := 0; i < len(dict); i++ {
		if dict[i] >= 0x80 {
			version, lenBytes = 3, 4
			break
		}
	}
	if version == 1 && len(dict)+64 > 0xffff {
		version, lenBytes = 2, 4
	}
	total := 8 + lenBytes + len(dict) + 1
	pad := (64 - total%64) % 64
	h := make([]byte, 0, total+pad)
	h = append(h, "\x93NUMPY"...)
	h = append(h, version, 0)
	if lenBytes == 2 {
		h = binary.LittleEndian.AppendUint16(h, uint16(len(dict)+pad+1))
	} else {
		h = binary.LittleEndian.AppendUint32(h, uint32(len(dict)+pad+1))
	}
	h = append(h, dict...)
	h = append(h, strings.Repeat(" ", pad)...)
	return append(h, '\n')
}

// Size is the encoded length in bytes.
func (s *Stream) Size() int64 { return s.size }

// ReadAt reads encoded bytes at off.
func (s *Stream) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("tensor: negative offset")
	}
	n := 0
	for len(p) > 0 && off < s.size {
		if off < int64(len(s.header)) {
			c := copy(p, s.header[off:])
			p, off, n = p[c:], off+int64(c), n+c
			continue
		}
		c, err := s.readData(p, off-int64(len(s.header)))
		p, off, n = p[c:], off+int64(c), n+c
		if err != nil {
			return n, err
		}
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// readData fills p from data offset off (in output bytes), at most to the end of one run.
func (s *Stream) readData(p []byte, off int64) (int, error) {
	dataLen := s.size - int64(len(s.header))
	if int64(len(p)) > dataLen-off {
		p = p[:dataLen-off]
	}
	if s.direct {
		return s.v.Data.ReadAt(p, s.v.DataOffset+s.v.Offset*s.inES+off)
	}
	elem := off / s.outES
	within := off % s.outES
	runIdx, inRun := elem/s.l.runLen, elem%s.l.runLen
	start := s.l.runAt(s.v.Offset, runIdx) + inRun
	// elements left in this run, bounded by what p can take
	count := min(s.l.runLen-inRun, (within+int64(len(p))+s.outES-1)/s.outES, 1<<16)
	src := make([]byte, count*s.inES)
	if _, err := s.v.Data.ReadAt(src, s.v.DataOffset+start*s.inES); err != nil {
		return 0, err
	}
	out := src
	if s.convert != nil {
		out = make([]byte, count*s.outES)
		for i := int64(0); i < count; i++ {
			s.convert(src[i*s.inES:(i+1)*s.inES], out[i*s.outES:(i+1)*s.outES])
		}
	}
	return copy(p, out[within:]), nil
}
