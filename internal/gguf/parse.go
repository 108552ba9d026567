package gguf

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Options bounds what Parse accepts. The zero value gives the defaults below.
type Options struct {
	// MaxStringLen is the longest key, string value, string array item or tensor name, in
	// bytes. 0 means DefaultMaxStringLen.
	MaxStringLen int64
	// MaxMetadataBytes caps the key/value section (from the first key to the first tensor
	// info). 0 means DefaultMaxMetadataBytes.
	MaxMetadataBytes int64
	// MaxArrayDepth is how deeply arrays may nest: 1 allows arrays of scalars and strings
	// only. 0 means DefaultMaxArrayDepth.
	MaxArrayDepth int
	// MaxKeys and MaxTensors cap the header's counts. 0 means DefaultMaxKeys and
	// DefaultMaxTensors.
	MaxKeys    int64
	MaxTensors int64
}

// Defaults for Options.
const (
	DefaultMaxStringLen     = 1 << 20
	DefaultMaxMetadataBytes = 256 << 20
	DefaultMaxArrayDepth    = 8
	DefaultMaxKeys          = 1 << 16
	DefaultMaxTensors       = 1 << 20
)

type limits struct {
	maxString int64
	maxDepth  int
}

// File is a parsed GGUF file: its header, metadata and tensor infos. Tensor data is not
// read; TensorData and ReadFloat32 read it from the io.ReaderAt given to Parse, as Array
// reads its items. A File does not change after Parse: it and its arrays may be used from
// several goroutines at once if that ReaderAt may be (an *os.File's may).
type File struct {
	Version   uint32
	Alignment int64 // general.alignment, or 32
	Metadata  []KV  // in file order
	Tensors   []TensorInfo
	// DataOffset is the absolute offset of the tensor data section: the end of the tensor
	// infos rounded up to the alignment (not rounded when there are no tensors).
	DataOffset int64
	// DataEnd is where the last tensor's data ends (DataOffset if there are none). Bytes
	// after it are padding or trailing data, which GGUF readers ignore.
	DataEnd int64
	Size    int64 // the size given to Parse
	// Warnings lists what the file does that the specification allows but llama.cpp does
	// not, or that llama.cpp accepts but the specification calls invalid.
	Warnings []string

	r      io.ReaderAt
	keys   map[string]int
	tensor map[string]int
}

// KV is one metadata key and its value.
type KV struct {
	Key    string
	Value  Value
	Offset int64 // absolute offset of the key's length field
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	Name string
	// Dims are the dimensions as the file writes them: ne[0], the fastest-varying
	// (contiguous) dimension, first.
	Dims []int64
	// Shape is Dims reversed: the numpy / PyTorch order, slowest-varying first.
	Shape []int64
	Type  Type
	// RelOffset is the offset as written, relative to the data section.
	RelOffset int64
	// Offset is the absolute file offset of the tensor's first byte.
	Offset int64
	// Size is the tensor's size in bytes: Elements / BlockSize(Type) * TypeSize(Type).
	Size     int64
	Elements int64
	// InfoOffset is the absolute offset of the tensor info (its name's length field).
	InfoOffset int64
}

// maxName is GGML_MAX_NAME: a tensor name must be shorter than this (it is stored in a
// char[64] with its NUL).
const maxName = 64

// maxDims is GGML_MAX_DIMS.
const maxDims = 4

// preallocate is the most entries allocated ahead on the word of a count; past it, the
// slices grow as entries are actually read.
const preallocate = 1024

// defaultAlignment is GGUF_DEFAULT_ALIGNMENT.
const defaultAlignment = 32

// Parse reads a GGUF file's header, metadata and tensor infos and checks them the way
// ggml's reader (ggml/src/gguf.cpp, gguf_init_from_reader) does, plus the bounds check
// llama.cpp makes before it reads a tensor (llama-model-loader.cpp, llama_tensor_weight:
// "data is not within the file bounds"). Versions 2 and 3 are read; version 1 and
// big-endian files are refused. size is the size of the file r reads.
func Parse(r io.ReaderAt, size int64, opts Options) (*File, error) {
	if size < 0 {
		return nil, errAt(-1, "a negative file size, %d", size)
	}
	opts = opts.withDefaults()
	lim := limits{maxString: opts.MaxStringLen, maxDepth: opts.MaxArrayDepth}
	rd := newReader(r, size, 0)
	f := &File{Size: size, r: r, Alignment: defaultAlignment}

	// magic and version
	magic, err := rd.bytes(4, "the magic")
	if err != nil {
		if size < 4 {
			return nil, errAt(0, "not a GGUF file: it is %s long, shorter than the 4-byte magic \"GGUF\"", plural(size, "byte"))
		}
		return nil, err
	}
	if string(magic) == "FUGG" {
		return nil, errAt(0, "the magic reads \"FUGG\", \"GGUF\" with its bytes swapped: a big-endian GGUF file, and only little-endian files can be read")
	}
	if string(magic) != "GGUF" {
		return nil, errAt(0, "not a GGUF file: it starts with %q (%s), not the magic \"GGUF\"", string(magic), describeBytes(magic))
	}
	version, err := rd.u32("the version")
	if err != nil {
		return nil, err
	}
	// The checks and their order are gguf.cpp's.
	switch {
	case version == 0:
		return nil, errAt(4, "bad GGUF version 0")
	case version&0xFFFF == 0:
		// A version read with the wrong byte order: gguf.cpp's test for a big-endian file.
		return nil, errAt(4, "the version field reads %d (0x%08x), which is version %d with its bytes swapped: this is a big-endian GGUF file, and only little-endian files can be read",
			version, version, swap32(version))
	case version == 1:
		return nil, errAt(4, "GGUF version 1 is not supported (llama.cpp dropped it; its counts are 32-bit); convert the file with a current gguf-py")
	case version > 3:
		return nil, errAt(4, "GGUF version %d is newer than this reader, which reads versions 2 and 3", version)
	}
	f.Version = version

	// counts: gguf.cpp reads both as int64 and refuses negative ones
	nTensors, err := rd.u64("the tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := rd.u64("the metadata key/value count")
	if err != nil {
		return nil, err
	}
	if int64(nTensors) < 0 {
		return nil, errAt(8, "the tensor count %d is negative as gguf.cpp reads it (int64)", int64(nTensors))
	}
	if int64(nKV) < 0 {
		return nil, errAt(16, "the key/value count %d is negative as gguf.cpp reads it (int64)", int64(nKV))
	}
	// Each key/value takes at least 13 bytes (a u64 length, a u32 type and a one-byte value;
	// the key must not be empty, but that is reported below) and each tensor info at least
	// 24 (a u64 name length, u32 n_dims, u32 type, u64 offset): counts that cannot fit are
	// refused before anything is allocated for them.
	left := size - rd.pos
	if nKV > uint64(left/13) {
		return nil, errAt(16, "the header declares %d metadata key/value pairs, but the %s after the header could hold at most %d; is the file truncated?", nKV, plural(left, "byte"), left/13)
	}
	if nKV > uint64(opts.MaxKeys) {
		return nil, errAt(16, "the header declares %d metadata key/value pairs; the limit is %d (Options.MaxKeys)", nKV, opts.MaxKeys)
	}
	if nTensors > uint64(left/24) {
		return nil, errAt(8, "the header declares %d tensors, but the %s after the header could hold at most %d tensor infos; is the file truncated?", nTensors, plural(left, "byte"), left/24)
	}
	if nTensors > uint64(opts.MaxTensors) {
		return nil, errAt(8, "the header declares %d tensors; the limit is %d (Options.MaxTensors)", nTensors, opts.MaxTensors)
	}

	if err := f.readMetadata(rd, int64(nKV), opts, lim); err != nil {
		return nil, err
	}
	if err := f.readAlignment(); err != nil {
		return nil, err
	}
	if err := f.readTensorInfos(rd, int64(nTensors), lim); err != nil {
		return nil, err
	}
	if err := f.layOut(rd.pos); err != nil {
		return nil, err
	}
	return f, nil
}

func (o Options) withDefaults() Options {
	if o.MaxStringLen <= 0 {
		o.MaxStringLen = DefaultMaxStringLen
	}
	if o.MaxMetadataBytes <= 0 {
		o.MaxMetadataBytes = DefaultMaxMetadataBytes
	}
	if o.MaxArrayDepth <= 0 {
		o.MaxArrayDepth = DefaultMaxArrayDepth
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.MaxTensors <= 0 {
		o.MaxTensors = DefaultMaxTensors
	}
	return o
}

func swap32(v uint32) uint32 {
	return v>>24 | (v>>8)&0xFF00 | (v<<8)&0xFF0000 | v<<24
}

func (f *File) readMetadata(rd *reader, n int64, opts Options, lim limits) error {
	start := rd.pos
	if capEnd := start + opts.MaxMetadataBytes; capEnd < rd.size {
		rd.limit = capEnd
		rd.capMsg = fmt.Sprintf("the metadata limit of %d bytes (Options.MaxMetadataBytes) from byte %d", opts.MaxMetadataBytes, start)
	}
	f.keys = make(map[string]int)
	f.Metadata = make([]KV, 0, min(n, preallocate))
	nested := false
	for i := int64(0); i < n; i++ {
		at := rd.pos
		key, err := rd.str(lim.maxString, fmt.Sprintf("key %d", i))
		if err != nil {
			return err
		}
		if key == "" {
			return errAt(at, "key %d is empty", i)
		}
		if j, dup := f.keys[key]; dup {
			return errAt(at, "key %q appears twice (keys %d and %d)", key, j, i)
		}
		what := "key " + key
		tat := rd.pos
		t32, err := rd.u32("the value type of " + what)
		if err != nil {
			return err
		}
		vt := ValueType(t32)
		var v Value
		switch {
		case vt == ValueArray:
			a, err := readArray(rd, 1, lim, what, true)
			if err != nil {
				return err
			}
			if a.elem == ValueArray && !nested {
				nested = true
				f.Warnings = append(f.Warnings, fmt.Sprintf("key %s is an array of arrays: the GGUF specification allows nested arrays, but llama.cpp's gguf.cpp refuses files that have them", key))
			}
			v = Value{Type: ValueArray, arr: a}
		case vt == ValueString:
			s, err := rd.str(lim.maxString, "the value of "+what)
			if err != nil {
				return err
			}
			v = Value{Type: ValueString, str: s}
		case vt.valid():
			b, err := rd.bytes(valueSizes[vt], "the value of "+what)
			if err != nil {
				return err
			}
			v = decodeScalar(vt, b)
			if vt == ValueBool && v.bits > 1 {
				f.Warnings = append(f.Warnings, fmt.Sprintf("key %s is a bool stored as byte %d: the specification allows only 0 and 1; llama.cpp reads it as true", key, v.bits))
			}
		default:
			return errAt(tat, "key %s has unknown value type %d (the format defines 0 to %d)", key, int32(t32), valueTypeCount-1)
		}
		f.keys[key] = len(f.Metadata)
		f.Metadata = append(f.Metadata, KV{Key: key, Value: v, Offset: at})
	}
	rd.limit, rd.capMsg = rd.size, ""
	return nil
}

// readAlignment applies general.alignment: gguf.cpp requires it to be a u32 and a power of
// two (so not 0).
func (f *File) readAlignment() error {
	kv, ok := f.Lookup("general.alignment")
	if !ok {
		return nil
	}
	if kv.Value.Type != ValueUint32 {
		return errAt(kv.Offset, "key general.alignment must be of type u32 but is %s", kv.Value.Type)
	}
	a := int64(kv.Value.bits)
	if a == 0 || a&(a-1) != 0 {
		return errAt(kv.Offset, "general.alignment is %d, which is not a power of 2", a)
	}
	f.Alignment = a
	return nil
}

func (f *File) readTensorInfos(rd *reader, n int64, lim limits) error {
	f.tensor = make(map[string]int)
	f.Tensors = make([]TensorInfo, 0, min(n, preallocate))
	for i := int64(0); i < n; i++ {
		at := rd.pos
		name, err := rd.str(lim.maxString, fmt.Sprintf("the name of tensor %d", i))
		if err != nil {
			return err
		}
		if len(name) >= maxName {
			return errAt(at, "the name of tensor %d is %s long; ggml allows at most %d (GGML_MAX_NAME %d with its NUL): %q",
				i, plural(len(name), "byte"), maxName-1, maxName, name)
		}
		// gguf.cpp copies the name into a C string, so a NUL would silently cut it short
		// there; such a name is refused instead of shown differently from how ggml sees it.
		if strings.IndexByte(name, 0) >= 0 {
			return errAt(at, "the name of tensor %d, %q, contains a NUL byte", i, name)
		}
		if j, dup := f.tensor[name]; dup {
			return errAt(at, "tensor name %q appears twice (tensors %d and %d)", name, j, i)
		}
		what := "tensor " + name
		nat := rd.pos
		nDims, err := rd.u32("the number of dimensions of " + what)
		if err != nil {
			return err
		}
		if nDims > maxDims {
			return errAt(nat, "%s has %d dimensions; ggml allows at most %d", what, nDims, maxDims)
		}
		ne := [maxDims]int64{1, 1, 1, 1}
		dims := make([]int64, nDims)
		for j := range dims {
			d, err := rd.u64(fmt.Sprintf("dimension %d of %s", j, what))
			if err != nil {
				return err
			}
			if int64(d) < 0 {
				return errAt(rd.pos-8, "dimension %d of %s is %d as gguf.cpp reads it (int64), which is negative", j, what, int64(d))
			}
			dims[j], ne[j] = int64(d), int64(d)
		}
		// gguf.cpp: the element count must be representable in an int64. Its guard
		// (ggml_nelements > 0) is meant to skip tensors with a zero dimension; testing the
		// dimensions directly also catches products that wrap around.
		if ne[0] > 0 && ne[1] > 0 && ne[2] > 0 && ne[3] > 0 &&
			(math.MaxInt64/ne[1] <= ne[0] ||
				math.MaxInt64/ne[2] <= ne[0]*ne[1] ||
				math.MaxInt64/ne[3] <= ne[0]*ne[1]*ne[2]) {
			return errAt(nat, "%s has shape %v (as written): its number of elements is not representable in an int64", what, dims)
		}
		elements := ne[0] * ne[1] * ne[2] * ne[3]

		tat := rd.pos
		t32, err := rd.u32("the type of " + what)
		if err != nil {
			return err
		}
		typ := Type(t32)
		info, known := LookupType(typ)
		switch {
		case !known:
			return errAt(tat, "%s has unknown ggml type id %d (ggml defines ids 0 to %d)", what, int32(t32), TypeCount-1)
		case info.Removed:
			return errAt(tat, "%s has ggml type %d (%s), which ggml no longer accepts in GGUF files", what, t32, info.Name)
		}
		bs := int64(info.BlockSize)
		if ne[0]%bs != 0 {
			return errAt(tat, "%s of type %s has %d elements per row (its first dimension), not a multiple of the block size %d",
				what, info.Name, ne[0], bs)
		}
		blocks := elements / bs
		if blocks > math.MaxInt64/int64(info.TypeSize) {
			return errAt(tat, "%s with shape %v (as written) and type %s has a size in bytes that is not representable", what, dims, info.Name)
		}
		oat := rd.pos
		off, err := rd.u64("the data offset of " + what)
		if err != nil {
			return err
		}
		if int64(off) < 0 {
			return errAt(oat, "%s has data offset %d, beyond any file", what, off)
		}
		shape := make([]int64, nDims)
		for j, d := range dims {
			shape[len(dims)-1-j] = d
		}
		f.tensor[name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, TensorInfo{
			Name: name, Dims: dims, Shape: shape, Type: typ, RelOffset: int64(off),
			Size: blocks * int64(info.TypeSize), Elements: elements, InfoOffset: at,
		})
	}
	return nil
}

// layOut places the data section and checks every tensor's offset as gguf.cpp does: the
// data section starts at the end of the tensor infos rounded up to the alignment, and each
// tensor must start exactly where the previous one's data ends, rounded up to the
// alignment (so offsets are aligned, in order, and tensors neither overlap nor leave
// gaps). Then, as llama.cpp's loader does, each tensor must lie within the file.
func (f *File) layOut(infosEnd int64) error {
	f.DataOffset = infosEnd
	if len(f.Tensors) > 0 {
		f.DataOffset = pad(infosEnd, f.Alignment)
		if f.DataOffset > f.Size {
			return errAt(infosEnd, "the tensor infos end at byte %d, so the data section starts at byte %d (the next multiple of the alignment %d), past the end of the %d-byte file",
				infosEnd, f.DataOffset, f.Alignment, f.Size)
		}
	}
	var expect int64 // the running size of the data section, with padding
	prev := ""
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.RelOffset%f.Alignment != 0 {
			return errAt(t.InfoOffset, "tensor %s: offset %d is not a multiple of the alignment %d", t.Name, t.RelOffset, f.Alignment)
		}
		if t.RelOffset != expect {
			if t.RelOffset < expect {
				return errAt(t.InfoOffset, "tensor %s: offset %d overlaps tensor %s, whose data runs to offset %d (gguf.cpp requires each tensor to start where the previous one ends, padded to the alignment: at %d)",
					t.Name, t.RelOffset, prev, expect, expect)
			}
			what := "the start of the data section"
			if prev != "" {
				what = "tensor " + prev
			}
			return errAt(t.InfoOffset, "tensor %s: offset %d leaves a gap after %s (gguf.cpp requires each tensor to start where the previous one ends, padded to the alignment: at %d)",
				t.Name, t.RelOffset, what, expect)
		}
		padded := pad(t.Size, f.Alignment)
		if padded < t.Size || padded > math.MaxInt64-expect {
			return errAt(t.InfoOffset, "tensor %s: the data section's size overflows", t.Name)
		}
		expect += padded
		t.Offset = f.DataOffset + t.RelOffset
		if t.Size > f.Size-t.Offset {
			return errAt(t.InfoOffset, "tensor %s: its data, bytes %d to %d, runs past the end of the %d-byte file; is it truncated?",
				t.Name, t.Offset, t.Offset+t.Size, f.Size)
		}
		f.DataEnd = t.Offset + t.Size
		prev = t.Name
	}
	if len(f.Tensors) == 0 {
		f.DataEnd = f.DataOffset
	}
	return nil
}

// pad rounds n up to a multiple of align, a power of two (GGML_PAD); n must be
// non-negative. It returns a negative number if that overflows.
func pad(n, align int64) int64 {
	return (n + align - 1) &^ (align - 1)
}

// Lookup returns the metadata entry for key.
func (f *File) Lookup(key string) (KV, bool) {
	i, ok := f.keys[key]
	if !ok {
		return KV{}, false
	}
	return f.Metadata[i], true
}

// Get returns the value of key.
func (f *File) Get(key string) (Value, bool) {
	kv, ok := f.Lookup(key)
	return kv.Value, ok
}

// Tensor returns the tensor info called name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensor[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns a reader of the tensor's bytes.
func (f *File) TensorData(t *TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.r, t.Offset, t.Size)
}

// ReadFloat32 returns elements [from, to) of the tensor, in flat (row-major, numpy) order,
// dequantized. Only the blocks that hold them are read. The tensor's type must be
// Dequantizable.
func (f *File) ReadFloat32(t *TensorInfo, from, to int64) ([]float32, error) {
	if !Dequantizable(t.Type) {
		return nil, fmt.Errorf("gguf: tensor %s: cannot dequantize type %s", t.Name, t.Type)
	}
	if from < 0 || to < from || to > t.Elements {
		return nil, fmt.Errorf("gguf: tensor %s: elements [%d, %d) of %d", t.Name, from, to, t.Elements)
	}
	if from == to {
		return []float32{}, nil
	}
	bs, ts := int64(BlockSize(t.Type)), int64(TypeSize(t.Type))
	b0, b1 := from/bs, (to+bs-1)/bs
	src := make([]byte, (b1-b0)*ts)
	if n, err := f.r.ReadAt(src, t.Offset+b0*ts); n != len(src) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, &Error{Offset: t.Offset + b0*ts, Msg: "reading the data of tensor " + t.Name, Err: err}
	}
	dst := make([]float32, (b1-b0)*bs)
	if err := Dequantize(t.Type, src, dst); err != nil {
		return nil, err
	}
	return dst[from-b0*bs : to-b0*bs], nil
}
