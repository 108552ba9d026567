package export

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// Safetensors is a subtree's tensors written as one safetensors file
// (huggingface/safetensors: a u64 header size, a JSON header padded with spaces to a
// multiple of 8, then every tensor's bytes, little-endian, C order, back to back). It is
// readable at any offset without being materialised: a download streams from it in constant
// memory, and Range requests seek in it.
//
// Names are the state-dict keys: the tree path below the subtree, dotted, without the
// _modules/_parameters/_buffers levels of a pickled nn.Module. dtypes are kept (bfloat16
// stays BF16, float8 stays F8_*); big-endian and non-contiguous tensors are rewritten
// little-endian and contiguous. Tensors that are the same view of one storage (tied weights)
// are written once; the other names are recorded in __metadata__["ckptview.aliases"] as a
// JSON object {alias: name}. Values safetensors has no dtype for (object, str, structured,
// quantized, complex128, sparse) are left out and named in __metadata__["ckptview.skipped"].
type Safetensors struct {
	header  []byte
	parts   []stPart
	size    int64
	Tensors int // tensors written
	Aliases int // names written as aliases of another
	Skipped []string
}

type stPart struct {
	off    int64 // offset of the part's data in the file
	stream *tensor.Stream
}

// safetensorsDType is the format's name of our dtypes it can hold.
var safetensorsDType = map[string]string{
	"bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16", "float16": "F16",
	"bfloat16": "BF16", "uint32": "U32", "int32": "I32", "float32": "F32", "uint64": "U64", "int64": "I64",
	"float64": "F64", "complex64": "C64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}

// CanSafetensors says whether a tensor can be written to a safetensors file as it is.
func CanSafetensors(t *ckpt.Tensor) bool {
	_, ok := safetensorsDType[t.DType]
	return ok && t.Layout == "" && t.Objects == nil && t.Quant == nil && !t.Column && t.View() != nil
}

// ErrNoTensors is returned for a subtree with no tensor safetensors can hold. Its text is
// shown to users as it is.
var ErrNoTensors = errors.New("there is no tensor here that safetensors can hold")

// NewSafetensors lays out the safetensors file of the tensors under root; resolve follows a
// ref node to its target (nil to leave refs out).
func NewSafetensors(root *ckpt.Node, resolve func(*ckpt.Node) *ckpt.Node) (*Safetensors, error) {
	type entry struct {
		name string
		node *ckpt.Node
		v    *tensor.View
		es   int
	}
	var entries []entry
	s := &Safetensors{}
	names := map[string]string{} // name -> path, to refuse two tensors named alike
	byView := map[string]string{}
	aliases := map[string]string{}
	var walk func(n *ckpt.Node, name string, depth int) error
	walk = func(n *ckpt.Node, name string, depth int) error {
		if depth > 256 {
			return fmt.Errorf("export: nested too deeply")
		}
		if n.Kind == ckpt.KindRef {
			if resolve == nil {
				return nil
			}
			if t := resolve(n); t != nil && t.Tensor != nil {
				n = t
			} else {
				return nil
			}
		}
		if t := n.Tensor; t != nil && t.Layout == "" && t.Objects == nil && !t.Column {
			_, ok := safetensorsDType[t.DType]
			v := t.View()
			if !ok || v == nil || t.Quant != nil {
				s.Skipped = append(s.Skipped, name)
				return nil
			}
			if prev, dup := names[name]; dup {
				return fmt.Errorf("export: two tensors would both be named %q in the safetensors file (%s and %s)", name, prev, n.Path())
			}
			names[name] = n.Path()
			key := fmt.Sprintf("%p/%d/%v/%v", t.Storage, t.StorageOffset, t.Shape, t.Strides)
			if first, tied := byView[key]; tied {
				aliases[name] = first
				s.Aliases++
				return nil
			}
			byView[key] = name
			entries = append(entries, entry{name: name, node: n, v: v, es: tensor.ElementSize(t.DType)})
			return nil
		}
		if n.Tensor != nil {
			s.Skipped = append(s.Skipped, name)
			return nil
		}
		kids := n.Children
		if n.LazyTensors() {
			kids = n.All()
		}
		for _, k := range kids {
			if k.Attr || k.DictKey != nil && k.DictKey.Kind != ckpt.KindStr && k.DictKey.Kind != ckpt.KindInt {
				continue
			}
			seg := k.Key
			child := name
			switch seg {
			case "_modules", "_parameters", "_buffers":
			default:
				if child != "" {
					child += "."
				}
				child += seg
			}
			if err := walk(k, child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, ErrNoTensors
	}
	for i := range entries {
		if entries[i].name == "" {
			entries[i].name = "tensor" // the subtree is a single tensor
		}
	}
	// as the reference writer does: larger elements first, so every tensor is aligned to
	// its element size (the header is padded to 8); tree order within a size
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].es > entries[j].es })

	type info struct {
		DType       string   `json:"dtype"`
		Shape       []int64  `json:"shape"`
		DataOffsets [2]int64 `json:"data_offsets"`
	}
	var hdr strings.Builder
	hdr.WriteByte('{')
	meta := map[string]string{"format": "pt"}
	if len(aliases) > 0 {
		b, _ := json.Marshal(aliases)
		meta["ckptview.aliases"] = string(b)
	}
	if len(s.Skipped) > 0 {
		b, _ := json.Marshal(s.Skipped)
		meta["ckptview.skipped"] = string(b)
	}
	mb, _ := json.Marshal(meta)
	hdr.WriteString(`"__metadata__":`)
	hdr.Write(mb)
	off := int64(0)
	for _, e := range entries {
		st, err := tensor.NewStream(e.v, tensor.StreamOptions{KeepBits: true})
		if err != nil {
			return nil, fmt.Errorf("export: %s: %w", e.node.Path(), err)
		}
		shape := e.v.Shape
		if shape == nil {
			shape = []int64{}
		}
		ib, _ := json.Marshal(info{DType: safetensorsDType[e.node.Tensor.DType], Shape: shape, DataOffsets: [2]int64{off, off + st.Size()}})
		nb, _ := json.Marshal(e.name)
		hdr.WriteByte(',')
		hdr.Write(nb)
		hdr.WriteByte(':')
		hdr.Write(ib)
		s.parts = append(s.parts, stPart{off: off, stream: st})
		off += st.Size()
	}
	hdr.WriteByte('}')
	h := hdr.String()
	h += strings.Repeat(" ", (8-len(h)%8)%8)
	s.header = binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	s.header = append(s.header, h...)
	s.size = int64(len(s.header)) + off
	s.Tensors = len(entries)
	return s, nil
}

// Size is the file's length in bytes.
func (s *Safetensors) Size() int64 { return s.size }

// ReadAt reads the file's bytes at off.
func (s *Safetensors) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("export: negative offset")
	}
	n := 0
	for len(p) > 0 && off < s.size {
		if off < int64(len(s.header)) {
			c := copy(p, s.header[off:])
			p, off, n = p[c:], off+int64(c), n+c
			continue
		}
		data := off - int64(len(s.header))
		i := sort.Search(len(s.parts), func(i int) bool { return s.parts[i].off+s.parts[i].stream.Size() > data })
		if i == len(s.parts) {
			break
		}
		part := s.parts[i]
		within := data - part.off
		want := min(int64(len(p)), part.stream.Size()-within)
		c, err := part.stream.ReadAt(p[:want], within)
		p, off, n = p[c:], off+int64(c), n+c
		if err != nil && err != io.EOF {
			return n, err
		}
		if int64(c) < want {
			return n, io.ErrUnexpectedEOF
		}
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}
