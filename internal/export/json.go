// Package export writes parts of an opened checkpoint as files people download: any subtree
// as JSON, with tensors inline up to a limit, and the statistics of a whole checkpoint as
// CSV or JSON. It reads tensor values through package tensor and never runs anything.
package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// DefaultTensorLimit is how many elements a tensor may have to be written inline in a JSON
// export; larger ones are written as metadata with "omitted": true.
const DefaultTensorLimit = 1 << 20

// MaxInlineBytes bounds the str/bytes values read back from the file for a JSON export.
const MaxInlineBytes = 64 << 20

// JSON is the lossless JSON encoding of a subtree. Values JSON has are written as they are;
// the others are objects with one "$" key:
//
//	int beyond ±2^53     {"$int": "123456789012345678901"}
//	nan, inf, -inf       {"$float": "nan"}
//	complex              {"$complex": [re, im]}
//	bytes, bytearray     {"$bytes": "<base64>"}, {"$bytearray": "<base64>"}
//	tuple, set, frozenset {"$tuple": [...]}, {"$set": [...]}, {"$frozenset": [...]}
//	dict with a non-str key, or a str key starting with "$"  {"$dict": [[key, value], ...]}
//	object               {"$object": "module.Class", "attrs": {name: value, ...}}
//	global               {"$global": "module.name"}
//	shared reference     {"$ref": "/json/pointer"}
//	tensor, ndarray      {"$tensor": {"dtype", "shape", "strides", "storage_offset", "data": nested lists}}
//	                     (data omitted and "omitted": true above the element limit)
//
// A dict whose keys are all str is a JSON object.
type JSON struct {
	// TensorLimit is the largest tensor (in elements) written with its values.
	TensorLimit int64
}

// Write encodes n to w.
func (j JSON) Write(ctx context.Context, w io.Writer, n *ckpt.Node) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if j.TensorLimit <= 0 {
		j.TensorLimit = DefaultTensorLimit
	}
	e := &encoder{w: bw, limit: j.TensorLimit, ctx: ctx}
	if err := e.node(n); err != nil {
		return err
	}
	if err := bw.WriteByte('\n'); err != nil {
		return err
	}
	return bw.Flush()
}

type encoder struct {
	w     *bufio.Writer
	limit int64
	ctx   context.Context
	count int
}

func (e *encoder) str(s string) {
	b, _ := json.Marshal(s)
	e.w.Write(b)
}

func (e *encoder) tagged(tag string, body func() error) error {
	e.w.WriteString(`{"` + tag + `":`)
	if err := body(); err != nil {
		return err
	}
	e.w.WriteByte('}')
	return nil
}

func (e *encoder) node(n *ckpt.Node) error {
	e.count++
	if e.count%4096 == 0 {
		if err := e.ctx.Err(); err != nil {
			return err
		}
	}
	switch n.Kind {
	case ckpt.KindNone:
		e.w.WriteString("null")
	case ckpt.KindBool:
		e.w.WriteString(strconv.FormatBool(n.Bool))
	case ckpt.KindInt:
		e.intValue(n.Int)
	case ckpt.KindFloat:
		e.float(n.Float)
	case ckpt.KindComplex:
		e.w.WriteString(`{"$complex":[`)
		e.float(real(n.Complex))
		e.w.WriteByte(',')
		e.float(imag(n.Complex))
		e.w.WriteString("]}")
	case ckpt.KindStr:
		s := n.Str
		if n.Truncated && n.Full != nil {
			b, err := readFull(n.Full)
			if err != nil {
				return err
			}
			s = strings.ToValidUTF8(string(b), "\ufffd")
		}
		e.str(s)
	case ckpt.KindBytes:
		b := n.Bytes
		if n.Truncated && n.Full != nil {
			var err error
			if b, err = readFull(n.Full); err != nil {
				return err
			}
		}
		tag := "$bytes"
		if n.Type == "bytearray" {
			tag = "$bytearray"
		}
		e.w.WriteString(`{"` + tag + `":"` + base64.StdEncoding.EncodeToString(b) + `"}`)
	case ckpt.KindList:
		return e.items(n)
	case ckpt.KindTuple, ckpt.KindSet, ckpt.KindFrozenSet:
		return e.tagged("$"+string(n.Kind), func() error { return e.items(n) })
	case ckpt.KindDict:
		return e.dict(n)
	case ckpt.KindObject:
		e.w.WriteString(`{"$object":`)
		e.str(n.Type)
		if n.Str != "" {
			e.w.WriteString(`,"value":`)
			e.str(n.Str)
		}
		e.w.WriteString(`,"attrs":`)
		if err := e.object(n.Children); err != nil {
			return err
		}
		e.w.WriteByte('}')
	case ckpt.KindGlobal:
		e.w.WriteString(`{"$global":`)
		e.str(n.Global)
		e.w.WriteByte('}')
	case ckpt.KindRef:
		e.w.WriteString(`{"$ref":`)
		e.str(n.Target)
		e.w.WriteByte('}')
	case ckpt.KindTensor, ckpt.KindNDArray:
		return e.tensor(n)
	default:
		e.w.WriteString("null")
	}
	return nil
}

func (e *encoder) intValue(s string) {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil && v <= 1<<53 && v >= -(1<<53) {
		e.w.WriteString(s)
		return
	}
	if _, ok := new(big.Int).SetString(s, 10); !ok { // "<int of N bits>": too large to print
		e.w.WriteString(`{"$int":null,"note":`)
		e.str(s)
		e.w.WriteByte('}')
		return
	}
	e.w.WriteString(`{"$int":"` + s + `"}`)
}

func (e *encoder) float(f float64) {
	switch {
	case math.IsNaN(f):
		e.w.WriteString(`{"$float":"nan"}`)
	case math.IsInf(f, 1):
		e.w.WriteString(`{"$float":"inf"}`)
	case math.IsInf(f, -1):
		e.w.WriteString(`{"$float":"-inf"}`)
	default:
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0" // keep floats floats
		}
		e.w.WriteString(s)
	}
}

func (e *encoder) list(kids []*ckpt.Node) error {
	e.w.WriteByte('[')
	for i, k := range kids {
		if i > 0 {
			e.w.WriteByte(',')
		}
		if err := e.node(k); err != nil {
			return err
		}
	}
	e.w.WriteByte(']')
	return nil
}

// eachItem calls f with each of n's children in order, made a page at a time when they are
// made on demand (a large list read from the file, plain data kept as values), so that an
// export holds one page of them at a time.
func eachItem(n *ckpt.Node, f func(i int, k *ckpt.Node) error) error {
	if !n.IsLazy() {
		for i, k := range n.Children {
			if err := f(i, k); err != nil {
				return err
			}
		}
		return nil
	}
	const page = 4096
	for from := 0; from < n.NumItems(); from += page {
		for i, k := range n.Items(from, from+page) {
			if err := f(from+i, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// items writes n's children as a JSON array.
func (e *encoder) items(n *ckpt.Node) error {
	e.w.WriteByte('[')
	err := eachItem(n, func(i int, k *ckpt.Node) error {
		if i > 0 {
			e.w.WriteByte(',')
		}
		return e.node(k)
	})
	if err != nil {
		return err
	}
	e.w.WriteByte(']')
	return nil
}

func (e *encoder) dict(n *ckpt.Node) error {
	if n.IsLazy() {
		return e.lazyDict(n)
	}
	plain := true
	for _, k := range n.Children {
		if k.Attr {
			continue
		}
		if k.DictKey != nil || strings.HasPrefix(k.Seg, "$") {
			plain = false
			break
		}
	}
	var entries, attrs []*ckpt.Node
	for _, k := range n.Children {
		if k.Attr {
			attrs = append(attrs, k)
		} else {
			entries = append(entries, k)
		}
	}
	if plain && len(attrs) == 0 {
		return e.object(entries)
	}
	e.w.WriteString(`{"$dict":[`)
	for i, k := range entries {
		if i > 0 {
			e.w.WriteByte(',')
		}
		e.w.WriteByte('[')
		if k.DictKey != nil {
			if err := e.node(k.DictKey); err != nil {
				return err
			}
		} else {
			e.str(k.Seg)
		}
		e.w.WriteByte(',')
		if err := e.node(k); err != nil {
			return err
		}
		e.w.WriteByte(']')
	}
	return e.endTagged(attrs)
}

// lazyDict writes a dict whose entries are made on demand: str keys only (plain data kept
// as values, a state dict kept as rows), so a JSON object unless a key starts with "$" or
// the dict has attributes (a state dict's _metadata, its last items), then the tagged form.
func (e *encoder) lazyDict(n *ckpt.Node) error {
	plain := true
	var attrs []*ckpt.Node
	_ = eachItem(n, func(_ int, k *ckpt.Node) error {
		if k.Attr {
			attrs = append(attrs, k)
		} else if strings.HasPrefix(k.Seg, "$") {
			plain = false
		}
		return nil
	})
	plain = plain && len(attrs) == 0
	if plain {
		e.w.WriteByte('{')
	} else {
		e.w.WriteString(`{"$dict":[`)
	}
	first := true
	err := eachItem(n, func(_ int, k *ckpt.Node) error {
		if k.Attr {
			return nil
		}
		if !first {
			e.w.WriteByte(',')
		}
		first = false
		if !plain {
			e.w.WriteByte('[')
		}
		e.str(k.Seg)
		if plain {
			e.w.WriteByte(':')
		} else {
			e.w.WriteByte(',')
		}
		if err := e.node(k); err != nil {
			return err
		}
		if !plain {
			e.w.WriteByte(']')
		}
		return nil
	})
	if err != nil {
		return err
	}
	if plain {
		e.w.WriteByte('}')
		return nil
	}
	return e.endTagged(attrs)
}

// endTagged closes the entries of a dict in the tagged form and writes its attributes.
func (e *encoder) endTagged(attrs []*ckpt.Node) error {
	e.w.WriteByte(']')
	if len(attrs) > 0 {
		e.w.WriteString(`,"attrs":`)
		if err := e.object(attrs); err != nil {
			return err
		}
	}
	e.w.WriteByte('}')
	return nil
}

// object writes children keyed by their segment.
func (e *encoder) object(kids []*ckpt.Node) error {
	e.w.WriteByte('{')
	for i, k := range kids {
		if i > 0 {
			e.w.WriteByte(',')
		}
		e.str(k.Seg)
		e.w.WriteByte(':')
		if err := e.node(k); err != nil {
			return err
		}
	}
	e.w.WriteByte('}')
	return nil
}

func (e *encoder) tensor(n *ckpt.Node) error {
	t := n.Tensor
	tag := "$tensor"
	if n.Kind == ckpt.KindNDArray {
		tag = "$ndarray"
	}
	e.w.WriteString(`{"` + tag + `":{"type":`)
	e.str(n.Type)
	e.w.WriteString(`,"dtype":`)
	e.str(t.DType)
	fmt.Fprintf(e.w, `,"shape":%s,"strides":%s,"storage_offset":%d,"numel":%d`, ints(t.Shape), ints(t.Strides), t.StorageOffset, t.Numel())
	defer e.w.WriteString("}}")
	if t.Objects != nil {
		e.w.WriteString(`,"data":`)
		return e.list(t.Objects)
	}
	if t.Numel() > e.limit {
		fmt.Fprintf(e.w, `,"omitted":true,"note":"more than %d elements; raise limit= or download as npy"`, e.limit)
		return nil
	}
	next, err := elementSource(n)
	if err != nil {
		fmt.Fprintf(e.w, `,"omitted":true,"note":%q`, err.Error())
		return nil
	}
	e.w.WriteString(`,"data":`)
	var rerr error
	var rec func(d int)
	rec = func(d int) {
		if d == len(t.Shape) {
			s, err := next()
			if err != nil && rerr == nil {
				rerr = err
			}
			e.w.WriteString(s)
			return
		}
		e.w.WriteByte('[')
		for k := int64(0); k < t.Shape[d]; k++ {
			if k > 0 {
				e.w.WriteByte(',')
			}
			rec(d + 1)
		}
		e.w.WriteByte(']')
	}
	rec(0)
	return rerr
}

// elementSource returns the JSON of a tensor's elements one after another in C order, read
// in chunks (constant memory): numbers as numbers, a str array's items as strings, a bytes
// array's as {"$bytes": ...}, a structured array's as objects of its fields.
func elementSource(n *ckpt.Node) (func() (string, error), error) {
	t := n.Tensor
	if v := t.View(); v != nil {
		vals, err := tensor.NewValues(v)
		if err != nil {
			return nil, err
		}
		const chunk = 1 << 14
		var els []tensor.Element
		var base, i int64
		return func() (string, error) {
			if i-base >= int64(len(els)) {
				base += int64(len(els))
				var err error
				if els, err = vals.Read(base, chunk); err != nil || len(els) == 0 {
					if err == nil {
						err = fmt.Errorf("export: tensor ended early")
					}
					return "null", err
				}
			}
			s := vals.JSON(els[i-base])
			i++
			return s, nil
		}, nil
	}
	if len(t.Fields) > 0 {
		return recordSource(n)
	}
	iv := t.ItemView()
	if iv == nil {
		return nil, fmt.Errorf("values of this dtype are not decoded")
	}
	st, err := tensor.NewStream(iv, tensor.StreamOptions{})
	if err != nil {
		return nil, err
	}
	size := iv.ItemSize
	big := t.Storage.ByteOrder == "big" || strings.HasPrefix(t.Descr, ">")
	isStr := strings.HasPrefix(t.DType, "str")
	buf := make([]byte, 0, 64<<10)
	var off, pos int64
	return func() (string, error) {
		if pos+size > int64(len(buf)) {
			want := max(size, (int64(cap(buf))/size)*size)
			want = min(want, st.Size()-off)
			if want < size {
				return "null", fmt.Errorf("export: array ended early")
			}
			buf = buf[:want]
			if _, err := st.ReadAt(buf, off); err != nil && err != io.EOF {
				return "null", err
			}
			off += want
			pos = 0
		}
		item := buf[pos : pos+size]
		pos += size
		if isStr {
			return jsonString(ucs4(item, big)), nil
		}
		return `{"$bytes":"` + base64.StdEncoding.EncodeToString(bytes.TrimRight(item, "\x00")) + `"}`, nil
	}, nil
}

// recordSource writes a structured array's elements as objects, each field read from the
// column (the child array) that holds it.
func recordSource(n *ckpt.Node) (func() (string, error), error) {
	type col struct {
		name string
		next func() (string, error)
		sub  []int64
	}
	var cols []col
	for _, f := range n.Tensor.Fields {
		var child *ckpt.Node
		for _, k := range n.Children {
			if k.Seg == f.Name && k.Tensor != nil && k.Tensor.Column {
				child = k
			}
		}
		if child == nil {
			return nil, fmt.Errorf("the field %s cannot be read", f.Name)
		}
		next, err := elementSource(child)
		if err != nil {
			return nil, fmt.Errorf("the field %s: %v", f.Name, err)
		}
		cols = append(cols, col{name: f.Name, next: next, sub: f.Shape})
	}
	return func() (string, error) {
		var b strings.Builder
		b.WriteByte('{')
		for i, c := range cols {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(jsonString(c.name))
			b.WriteByte(':')
			var rec func(d int) error
			rec = func(d int) error {
				if d == len(c.sub) {
					s, err := c.next()
					b.WriteString(s)
					return err
				}
				b.WriteByte('[')
				for k := int64(0); k < c.sub[d]; k++ {
					if k > 0 {
						b.WriteByte(',')
					}
					if err := rec(d + 1); err != nil {
						return err
					}
				}
				b.WriteByte(']')
				return nil
			}
			if err := rec(0); err != nil {
				return b.String(), err
			}
		}
		b.WriteByte('}')
		return b.String(), nil
	}, nil
}

// ucs4 decodes a numpy str item: UTF-32 code units, trailing NULs dropped.
func ucs4(b []byte, big bool) string {
	var r []rune
	for i := 0; i+4 <= len(b); i += 4 {
		var c uint32
		if big {
			c = binary.BigEndian.Uint32(b[i:])
		} else {
			c = binary.LittleEndian.Uint32(b[i:])
		}
		r = append(r, rune(c))
	}
	for len(r) > 0 && r[len(r)-1] == 0 {
		r = r[:len(r)-1]
	}
	return string(r)
}

func jsonString(s string) string {
	b, _ := json.Marshal(strings.ToValidUTF8(s, "\ufffd"))
	return string(b)
}

func ints(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func readFull(s *ckpt.Storage) ([]byte, error) {
	if s.Size > MaxInlineBytes {
		return nil, fmt.Errorf("export: a value of %d bytes is too large for JSON; download it raw", s.Size)
	}
	b := make([]byte, s.Size)
	if _, err := s.Data.ReadAt(b, s.Offset); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}
