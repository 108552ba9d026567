package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"github.com/nlpodyssey/gopickle/types"
)

// safetensors as the reference implementation reads it (huggingface/safetensors,
// safetensors/src/tensor.rs, SafeTensors::read_metadata and Metadata::validate): a
// little-endian u64 header size N of at most 100,000,000, N bytes of UTF-8 JSON (an object of
// tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} and an optional
// "__metadata__" object of str -> str), then the data buffer. Offsets are relative to the
// buffer; sorted by offset, the tensors must tile it from 0 with no gap or overlap, each
// exactly shape x dtype bits long (a whole number of bytes), and the last must end where the
// file ends. Only the header is read to open a file.

const safetensorsMaxHeader = 100_000_000

// safetensorsDTypes maps the format's dtype names to ours and their sizes in bits.
var safetensorsDTypes = map[string]struct {
	name string
	bits int64
}{
	"BOOL": {"bool", 8}, "U8": {"uint8", 8}, "I8": {"int8", 8}, "U16": {"uint16", 16},
	"I16": {"int16", 16}, "F16": {"float16", 16}, "BF16": {"bfloat16", 16}, "U32": {"uint32", 32},
	"I32": {"int32", 32}, "F32": {"float32", 32}, "U64": {"uint64", 64}, "I64": {"int64", 64},
	"F64": {"float64", 64}, "C64": {"complex64", 64},
	"F8_E4M3": {"float8_e4m3fn", 8}, "F8_E5M2": {"float8_e5m2", 8}, "F8_E8M0": {"float8_e8m0fnu", 8},
	// packed sub-byte types: two float4 per byte, four float6 per three bytes
	"F4": {"float4_e2m1fn_x2", 4}, "F6_E2M3": {"float6_e2m3fn", 6}, "F6_E3M2": {"float6_e3m2fn", 6},
}

type stEntry struct {
	name     string
	dtype    string
	shape    []int64
	begin    int64
	end      int64
	known    bool
	bits     int64
	ourDType string
}

// openSafetensors opens a safetensors file from its header.
func (op *opener) openSafetensors() error {
	op.ck.Format = "safetensors"
	var hb [8]byte
	if _, err := op.r.ReadAt(hb[:], 0); err != nil {
		return &Error{Msg: "a safetensors file shorter than its 8-byte header size", Offset: -1}
	}
	n := binary.LittleEndian.Uint64(hb[:])
	if n > safetensorsMaxHeader {
		return &Error{Msg: fmt.Sprintf("a safetensors header of %d bytes; the format allows at most %d (HeaderTooLarge)", n, safetensorsMaxHeader), Offset: 0}
	}
	if int64(n) > op.size-8 {
		return &Error{Msg: fmt.Sprintf("the safetensors header declares %d bytes but the file has %d after its size (InvalidHeaderLength)", n, op.size-8), Offset: 0}
	}
	header := make([]byte, n)
	if _, err := op.r.ReadAt(header, 8); err != nil && err != io.EOF {
		return &Error{Msg: "the safetensors header cannot be read", Offset: 8}
	}
	if !utf8.Valid(header) {
		return &Error{Msg: "the safetensors header is not UTF-8 text (InvalidHeader)", Offset: 8}
	}
	entries, meta, err := parseSafetensorsHeader(header)
	if err != nil {
		return &Error{Msg: "the safetensors header is not valid: " + err.Error() + " (InvalidHeaderDeserialization)", Offset: 8}
	}
	dataStart := 8 + int64(n)
	// validate as Metadata::validate does, in offset order
	sorted := append([]*stEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].begin != sorted[j].begin {
			return sorted[i].begin < sorted[j].begin
		}
		return sorted[i].end < sorted[j].end
	})
	pos := int64(0)
	unknown := 0
	for _, e := range sorted {
		if e.begin != pos || e.end < e.begin {
			what := "overlaps the tensor before it"
			if e.begin > pos {
				what = fmt.Sprintf("leaves a gap of %d bytes before it", e.begin-pos)
			} else if e.end < e.begin {
				what = "ends before it begins"
			}
			return &Error{Msg: fmt.Sprintf("tensor %s: its data_offsets [%d, %d] %s; the data of a safetensors file must be tiled without gaps or overlaps (InvalidOffset)", pyrepr.Quote(e.name), e.begin, e.end, what), Offset: -1}
		}
		pos = e.end
		if !e.known {
			unknown++
			continue
		}
		numel := int64(1)
		for _, d := range e.shape {
			hi, lo := bits.Mul64(uint64(numel), uint64(d))
			if hi != 0 || lo > math.MaxInt64 {
				return &Error{Msg: fmt.Sprintf("tensor %s: shape %v overflows (ValidationOverflow)", pyrepr.Quote(e.name), e.shape), Offset: -1}
			}
			numel = int64(lo)
		}
		hi, nbits := bits.Mul64(uint64(numel), uint64(e.bits))
		if hi != 0 || nbits > math.MaxInt64 {
			return &Error{Msg: fmt.Sprintf("tensor %s: shape %v overflows (ValidationOverflow)", pyrepr.Quote(e.name), e.shape), Offset: -1}
		}
		if nbits%8 != 0 {
			return &Error{Msg: fmt.Sprintf("tensor %s: %d elements of %s are not a whole number of bytes (MisalignedSlice)", pyrepr.Quote(e.name), numel, e.dtype), Offset: -1}
		}
		if int64(nbits/8) != e.end-e.begin {
			return &Error{Msg: fmt.Sprintf("tensor %s: shape %v of %s is %d bytes but its data_offsets span %d (TensorInvalidInfo)", pyrepr.Quote(e.name), e.shape, e.dtype, nbits/8, e.end-e.begin), Offset: -1}
		}
	}
	switch end := dataStart + pos; {
	case end > op.size:
		return &Error{Msg: fmt.Sprintf("the safetensors data ends at byte %d but the file has %d bytes: the file is truncated (MetadataIncompleteBuffer)", end, op.size), Offset: -1}
	case end < op.size:
		return &Error{Msg: fmt.Sprintf("%d bytes follow the last tensor's data; the safetensors format allows none (MetadataIncompleteBuffer) — a file with something appended, possibly another format hiding behind the tensors", op.size-end), Offset: end}
	}
	if unknown > 0 {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%d tensor(s) have a dtype this version of the format does not define; they are shown as bytes, and the reference implementation refuses the file", unknown))
	}
	root := &pyDict{typeName: "safetensors"}
	for _, e := range sorted {
		if !e.known {
			root.Set(e.name, &lazyBytes{src: op.r, off: dataStart + e.begin, n: e.end - e.begin, kind: 'b'})
			continue
		}
		st := &ckpt.Storage{Key: e.name, DType: e.ourDType, Location: "file", Data: op.r, Offset: dataStart + e.begin,
			Size: e.end - e.begin, ByteOrder: "little"}
		op.ck.Storages = append(op.ck.Storages, st)
		root.Set(e.name, &pyTensor{storage: &pyStorage{st: st, numel: numelOf(e.shape)}, shape: e.shape,
			stride: contiguousStrides(e.shape, false), typeName: "safetensors." + e.dtype, packed: e.bits%8 != 0})
	}
	if meta != nil {
		md := &pyDict{typeName: "dict"}
		for _, kv := range meta {
			md.Set(kv[0], kv[1])
		}
		root.attrs = append(root.attrs, types.DictEntry{Key: "__metadata__", Value: md})
	}
	return op.build(root)
}

func numelOf(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// parseSafetensorsHeader reads the header JSON in order. Unlike Go's encoding/json into a
// map, it sees repeated keys: a repeated tensor name is refused (readers disagree on which
// one wins), and so is a repeated field of a tensor, as serde refuses it. The JSON is first
// checked whole by encoding/json's validator; a small walker over the known structure then
// reads it, several times faster than decoding it token by token.
func parseSafetensorsHeader(h []byte) ([]*stEntry, [][2]string, error) {
	trimmed := bytes.TrimLeft(h, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, nil, fmt.Errorf("it does not start with '{'")
	}
	if !json.Valid(h) {
		var v any
		err := json.Unmarshal(h, &v)
		return nil, nil, fmt.Errorf("it is not valid JSON (%v)", jsonErr(err))
	}
	p := &jsonWalk{b: h}
	var entries []*stEntry
	var meta [][2]string
	seen := map[string]bool{}
	sawMeta := false
	err := p.object(func(key string) error {
		if key == "__metadata__" {
			if sawMeta {
				return fmt.Errorf("__metadata__ appears twice")
			}
			sawMeta = true
			m, err := p.strMap()
			if err != nil {
				return fmt.Errorf("__metadata__: %v", err)
			}
			meta = m
			return nil
		}
		if seen[key] {
			return fmt.Errorf("the tensor name %s appears twice (readers disagree on which one counts)", pyrepr.Quote(key))
		}
		seen[key] = true
		e, err := p.tensorInfo(key)
		if err != nil {
			return fmt.Errorf("tensor %s: %v", pyrepr.Quote(key), err)
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return entries, meta, nil
}

func jsonErr(err error) error {
	if err == nil {
		return errors.New("invalid JSON")
	}
	return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonWalk reads JSON that encoding/json has already validated.
type jsonWalk struct {
	b []byte
	i int
}

func (p *jsonWalk) ws() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonWalk) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// object calls field for each key of an object, with the walker at the key's value.
func (p *jsonWalk) object(field func(key string) error) error {
	if p.peek() != '{' {
		return fmt.Errorf("not an object")
	}
	p.i++
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return err
		}
		p.ws()
		p.i++ // ':'
		if err := field(key); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return fmt.Errorf("malformed object")
		}
	}
}

// str reads a string; escapes are decoded by encoding/json.
func (p *jsonWalk) str() (string, error) {
	if p.peek() != '"' {
		return "", fmt.Errorf("not a string")
	}
	start := p.i
	p.i++
	escaped := false
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			p.i++
			if !escaped {
				return string(p.b[start+1 : p.i-1]), nil
			}
			var s string
			if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
				return "", jsonErr(err)
			}
			return s, nil
		}
		p.i++
	}
	return "", fmt.Errorf("a string without its end")
}

// skip passes over any value.
func (p *jsonWalk) skip() error {
	switch p.peek() {
	case '"':
		_, err := p.str()
		return err
	case '{':
		return p.object(func(string) error { return p.skip() })
	case '[':
		p.i++
		if p.peek() == ']' {
			p.i++
			return nil
		}
		for {
			if err := p.skip(); err != nil {
				return err
			}
			switch p.peek() {
			case ',':
				p.i++
			case ']':
				p.i++
				return nil
			default:
				return fmt.Errorf("malformed array")
			}
		}
	default: // a number or a literal
		for p.i < len(p.b) && !strings.ContainsRune(",]} \t\r\n", rune(p.b[p.i])) {
			p.i++
		}
		return nil
	}
}

// uints reads an array of non-negative integers.
func (p *jsonWalk) uints() ([]int64, error) {
	if p.peek() != '[' {
		return nil, fmt.Errorf("not a list")
	}
	p.i++
	out := []int64{}
	if p.peek() == ']' {
		p.i++
		return out, nil
	}
	for {
		p.ws()
		start := p.i
		for p.i < len(p.b) && !strings.ContainsRune(",] \t\r\n", rune(p.b[p.i])) {
			p.i++
		}
		v, err := parseUint(json.Number(p.b[start:p.i]))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return out, nil
		default:
			return nil, fmt.Errorf("not a list of integers")
		}
	}
}

func (p *jsonWalk) strMap() ([][2]string, error) {
	if p.peek() == 'n' { // null: no metadata
		return nil, p.skip()
	}
	var out [][2]string
	err := p.object(func(k string) error {
		if p.peek() != '"' {
			return fmt.Errorf("the value of %s is not a string (the format allows only strings)", pyrepr.Quote(k))
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		out = append(filterKey(out, k), [2]string{k, v}) // a repeated key: the last, as serde's map
		return nil
	})
	if err != nil && strings.HasPrefix(err.Error(), "not an object") {
		return nil, fmt.Errorf("not an object of strings")
	}
	return out, err
}

func filterKey(kv [][2]string, k string) [][2]string {
	for i, p := range kv {
		if p[0] == k {
			return append(kv[:i:i], kv[i+1:]...)
		}
	}
	return kv
}

func (p *jsonWalk) tensorInfo(name string) (*stEntry, error) {
	if p.peek() != '{' {
		return nil, fmt.Errorf("not an object with dtype, shape and data_offsets")
	}
	e := &stEntry{name: name}
	got := map[string]bool{}
	err := p.object(func(field string) error {
		if got[field] {
			return fmt.Errorf("the field %s appears twice", field)
		}
		got[field] = true
		switch field {
		case "dtype":
			s, err := p.str()
			if err != nil {
				return fmt.Errorf("dtype is not a string")
			}
			e.dtype = s
		case "shape":
			v, err := p.uints()
			if err != nil {
				return fmt.Errorf("shape is not a list of non-negative integers")
			}
			e.shape = v
		case "data_offsets":
			v, err := p.uints()
			if err != nil || len(v) != 2 {
				return fmt.Errorf("data_offsets is not two non-negative integers")
			}
			e.begin, e.end = v[0], v[1]
		default:
			return p.skip()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"dtype", "shape", "data_offsets"} {
		if !got[f] {
			return nil, fmt.Errorf("no %s", f)
		}
	}
	if d, ok := safetensorsDTypes[e.dtype]; ok {
		e.known, e.bits, e.ourDType = true, d.bits, d.name
	}
	return e, nil
}

func parseUint(n json.Number) (int64, error) {
	s := string(n)
	if s == "" || strings.ContainsAny(s, ".eE-+") {
		return 0, fmt.Errorf("not an integer")
	}
	var v int64
	for _, c := range s {
		if c < '0' || c > '9' || v > (math.MaxInt64-9)/10 {
			return 0, fmt.Errorf("not an integer")
		}
		v = v*10 + int64(c-'0')
	}
	return v, nil
}
