package views

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/export"
)

// hexDumpBytes is how many bytes of a bytes value a node page dumps.
const hexDumpBytes = 4096

// NodePage is the share page of one node: where it sits, what it is, and its children or
// its value.
type NodePage struct {
	Meta FileMeta
	// CheckpointURL links back to the file's page.
	CheckpointURL string
	// Crumbs lead from the file to this node; the last one is the node itself (no URL).
	Crumbs []Link
	// Node describes the node as its parent's listing does.
	Node Row
	// Path is the node's JSON Pointer ("/" for the root); JSONURL its JSON API address.
	Path, JSONURL string
	// Python is the expression that reaches the node from the loaded object, "" if none.
	Python string
	// Param names the parameter an optimizer state entry belongs to; ParamHow says how.
	Param, ParamHow string
	// DictKey is the Python repr of a dict entry's key when it is not a str; DictKeyURL,
	// when the key is an object held elsewhere in the file (a ref), the page of that place.
	DictKey, DictKeyURL string
	// Findings are those at this node or below it.
	Findings []FindingRow
	// Global is the module.name of a global or object node.
	Global string
	// Children is set for containers, objects and object arrays.
	Children *Children
	// Tensor is set for tensors and arrays.
	Tensor *TensorMeta
	// Text is a str's full value (or its preview when TextTruncated).
	Text          *string
	TextTruncated bool
	// Hex is a hex dump of a bytes value; HexTruncated says more bytes exist than are shown.
	Hex          []HexLine
	HexTruncated bool
	// Length is a str's length in characters or a bytes value's in bytes.
	Length int64
	// Value is a scalar's full value as Python would print it.
	Value string
	// Downloads are the files the node can be saved as: JSON for any node, .npy and raw
	// bytes for tensors whose values can be decoded.
	Downloads []Download

	// The rest is set by the server for tensors, since it reads data.

	// Values are the preview and the slice table.
	Values *TensorValues
	// Stats are the tensor's statistics when already computed; otherwise StatsURL is the
	// fragment that computes them (htmx) and StatsNowURL the page doing it (no JavaScript).
	Stats                 *StatsView
	StatsURL, StatsNowURL string
	// StatsError says why the tensor has no statistics (a dtype without numbers).
	StatsError string
}

// Download is a link that saves a node as a file.
type Download struct {
	Label, URL, Title, TestID string
}

// TensorMeta is everything known about a tensor or array without reading its data.
type TensorMeta struct {
	DType, Shape, Strides string
	Dims                  int
	StorageOffset         int64
	Numel, NBytes         int64
	// NumelText and NBytesText have thousands separators; NBytesHuman is the short form.
	NumelText, NBytesText, NBytesHuman string
	// Layout says how the elements sit in memory: C-contiguous, Fortran-contiguous or not.
	Layout     string
	Contiguous bool
	// Storage describes the bytes the tensor views; HasStorage is false for object arrays.
	HasStorage                         bool
	StorageKey, StorageDType, Location string
	// StorageFile names the file of a set (a shard) that holds the bytes.
	StorageFile             string
	ByteOrder               string
	StorageSize, FileOffset int64
	// OffsetLabel says what FileOffset counts in ("at file byte"); "" hides it (a value held
	// inside the pickle, a structured array's column).
	OffsetLabel string
	// Packed says how a block-quantized (GGUF) tensor's values are read.
	Packed string
	// Fields are a structured dtype's fields, each linked to its column.
	Fields          []FieldRow
	StorageSizeText string
	RequiresGrad    bool
	// OutOfBounds is set when the view reaches past the end of its storage: a broken or
	// hostile file.
	OutOfBounds bool
	// SharedWith lists every other tensor that views the same storage.
	SharedWith []Link
	// Quant is set for quantized tensors.
	Quant *QuantMeta
	// Sparse is a sparse tensor's layout ("sparse_coo"), "" for strided tensors; its
	// indices and values are the node's children, and NNZText counts the stored values.
	Sparse, NNZText string
}

// QuantMeta is a quantized tensor's scheme, for a reader.
type QuantMeta struct {
	Scheme string
	// Scale and ZeroPoint are set for per-tensor schemes; Axis for per-channel ones, whose
	// scales and zero points are the tensor's children.
	Scale, ZeroPoint, Axis string
}

// HexLine is one line of a hex dump: offset, 16 bytes in hex, and their printable ASCII.
type HexLine struct {
	Offset, Hex, ASCII string
}

// NewNodePage describes node n of checkpoint ck; offset and limit page its children.
func NewNodePage(meta FileMeta, ck *ckpt.Checkpoint, n *ckpt.Node, offset, limit int) NodePage {
	p := NodePage{Meta: meta, CheckpointURL: CheckpointURL(meta.ID)}
	if n == nil {
		return p
	}
	p.Node = NewRow(meta.ID, ck, n)
	p.Path = displayPointer(n.Path())
	p.JSONURL = NodeJSONURL(meta.ID, n.Path())
	p.Crumbs = crumbs(meta, ck, n)
	p.Python = PythonExpr(ck, n)
	if isOptimizerStateEntries(n.Parent()) {
		if pn := NewParamNames(ck); pn != nil {
			p.Param, p.ParamHow = pn.ByPath[n.Path()], pn.How
		}
	}
	if n.Path() == "" {
		p.Node.Key = meta.Name
	} else {
		p.Node.Key = crumbLabel(p.Node.Key) // a '' key is not a blank heading
	}
	if n.DictKey != nil {
		p.DictKey = Summary(n.DictKey)
		if n.DictKey.Kind == ckpt.KindRef {
			p.DictKeyURL = NodeURL(meta.ID, n.DictKey.Target)
		}
	}
	if ck != nil {
		var mine []ckpt.Finding
		for _, f := range ck.Findings {
			if under(f.Path, n.Path()) {
				mine = append(mine, f)
			}
		}
		p.Findings = FindingRows(meta.ID, mine)
	}
	switch n.Kind {
	case ckpt.KindObject, ckpt.KindGlobal:
		p.Global = n.Global
		if p.Global == "" {
			p.Global = n.Type
		}
	case ckpt.KindStr:
		s := n.Str
		p.Text, p.TextTruncated, p.Length = &s, n.Truncated, strLen(n)
	case ckpt.KindBytes:
		b := n.Bytes
		p.HexTruncated = n.Truncated
		if len(b) > hexDumpBytes {
			b, p.HexTruncated = b[:hexDumpBytes], true
		}
		p.Hex, p.Length = HexDump(b), bytesLen(n)
	case ckpt.KindNone, ckpt.KindBool, ckpt.KindInt, ckpt.KindFloat, ckpt.KindComplex:
		p.Value = Summary(n)
	}
	if n.Tensor != nil {
		p.Tensor = NewTensorMeta(meta.ID, n)
	}
	p.Downloads = downloads(meta.ID, n)
	if isContainer(n) {
		c := NewChildren(meta, ck, n, offset, limit)
		p.Children = &c
	}
	return p
}

// downloads lists the formats node n can be saved as.
func downloads(id string, n *ckpt.Node) []Download {
	out := []Download{{Label: "JSON", URL: DownloadURL(id, n.Path(), "json", false), TestID: "download-json",
		Title: "this node and everything below it as lossless JSON (tensors inline up to 1,048,576 elements)"}}
	t := n.Tensor
	if hasTensor(n, 100_000) {
		out = append(out, Download{Label: "safetensors", URL: DownloadURL(id, n.Path(), "safetensors", false), TestID: "download-safetensors",
			Title: "the tensors here as one safetensors file: dtypes kept, tied weights once, named as in a state dict"})
	}
	if t != nil && t.Objects == nil && t.View() == nil && t.ItemView() != nil {
		// str, bytes, structured: no numbers, but numpy reads the items
		return append(out,
			Download{Label: ".npy", URL: DownloadURL(id, n.Path(), "npy", false), TestID: "download-npy",
				Title: "numpy.load reads it (dtype " + t.Descr + "), no pickle needed"},
			Download{Label: "raw", URL: DownloadURL(id, n.Path(), "raw", false), TestID: "download-raw",
				Title: "the items' bytes as they are stored, C order"})
	}
	if t == nil || t.Objects != nil || t.View() == nil {
		return out
	}
	conv := ""
	switch {
	case t.DType == "bfloat16" || strings.HasPrefix(t.DType, "float8"):
		conv = ", converted to float32"
	case t.Quant != nil:
		conv = ", the stored integers"
	case t.Decoded != nil:
		conv = ", dequantized to float32 as ggml does"
	}
	out = append(out,
		Download{Label: ".npy", URL: DownloadURL(id, n.Path(), "npy", false), TestID: "download-npy",
			Title: "numpy.load reads it" + conv},
		Download{Label: "raw", URL: DownloadURL(id, n.Path(), "raw", false), TestID: "download-raw",
			Title: "little-endian C-order bytes" + conv + "; dtype and shape are in the file name"})
	if conv == ", converted to float32" {
		bits := "uint16"
		if t.DType != "bfloat16" {
			bits = "uint8"
		}
		out = append(out, Download{Label: ".npy (" + bits + " bits)", URL: DownloadURL(id, n.Path(), "npy", true),
			TestID: "download-npy-bits", Title: "the " + t.DType + " bit patterns as " + bits})
	}
	return out
}

// hasTensor says whether a tensor safetensors can hold is at or below n, looking at no more
// than budget nodes (past that it answers yes: the download itself says if there is none).
func hasTensor(n *ckpt.Node, budget int) bool {
	found := false
	seen := 0
	var walk func(n *ckpt.Node)
	walk = func(n *ckpt.Node) {
		if found || seen > budget {
			return
		}
		seen++
		if t := n.Tensor; t != nil && export.CanSafetensors(t) {
			found = true
			return
		}
		if n.Tensor != nil {
			return
		}
		if n.LazyTensors() { // a state dict kept as rows holds tensors of torch's dtypes
			found = true
			return
		}
		for _, k := range n.Children {
			walk(k)
		}
	}
	walk(n)
	return found || seen > budget
}

// AddStats gives the children's tensor rows a sparkline from the statistics lookup has
// already; it never computes any.
func (p *NodePage) AddStats(lookup StatsLookup) {
	if p.Children != nil {
		p.Children.AddStats(lookup)
	}
}

// under reports whether pointer p is at or below pointer parent.
func under(p, parent string) bool {
	return p == parent || parent == "" && p != "" || strings.HasPrefix(p, parent+"/")
}

// crumbs links the file and every ancestor of n, ending with n itself.
func crumbs(meta FileMeta, ck *ckpt.Checkpoint, n *ckpt.Node) []Link {
	out := []Link{{Label: meta.Name, URL: CheckpointURL(meta.ID)}}
	if out[0].Label == "" {
		out[0].Label = "checkpoint"
	}
	if n.Path() == "" {
		out[0].URL = ""
		return out
	}
	segs := strings.Split(strings.TrimPrefix(n.Path(), "/"), "/")
	prefix := ""
	for i, seg := range segs {
		prefix += "/" + seg
		label := ckpt.UnescapeSegment(seg)
		if ck != nil {
			if a, err := ck.Node(prefix); err == nil {
				label = KeyLabel(a) // 7 and '7' stay apart
			}
		}
		if i == len(segs)-1 {
			label = KeyLabel(n)
			out = append(out, Link{Label: crumbLabel(label)})
			break
		}
		out = append(out, Link{Label: crumbLabel(label), URL: NodeURL(meta.ID, prefix)})
	}
	return out
}

// crumbLabel is a breadcrumb's text: an empty key (a dict entry keyed by the empty str) is
// shown as Python writes it, a pair of quotes, so that the crumb and heading are not blank.
func crumbLabel(key string) string {
	if key == "" {
		return "''"
	}
	return key
}

// NewTensorMeta describes a tensor's layout and storage.
func NewTensorMeta(id string, n *ckpt.Node) *TensorMeta {
	t := n.Tensor
	m := &TensorMeta{
		DType:         t.DType,
		Shape:         FormatShape(t.Shape),
		Strides:       FormatShape(t.Strides),
		Dims:          len(t.Shape),
		StorageOffset: t.StorageOffset,
		Numel:         t.Numel(),
		NBytes:        t.NBytes(),
		RequiresGrad:  t.RequiresGrad,
	}
	m.NumelText, m.NBytesText, m.NBytesHuman = Thousands(m.Numel), Thousands(m.NBytes), HumanBytes(m.NBytes)
	if t.Packed {
		what := t.Descr
		if what == "" {
			what = "a packed format (elements smaller than a byte)"
		}
		m.Packed = what + "; the values ckptview shows and downloads are dequantized as ggml's reference code does"
		if t.Decoded == nil {
			m.Packed = what + ", which ckptview does not decode: only its type, shape and bytes are shown"
		}
	}
	if len(t.Fields) > 0 {
		m.Fields = fieldRows(id, n)
	}
	m.Layout, m.Contiguous = Contiguity(t.Shape, t.Strides)
	if t.Layout != "" {
		m.Sparse, m.Layout = t.Layout, t.Layout
		for _, k := range n.Children {
			if k.Seg == "values" && k.Tensor != nil && len(k.Tensor.Shape) > 0 {
				m.NNZText = Thousands(k.Tensor.Shape[0])
			}
		}
	}
	if q := t.Quant; q != nil {
		m.Quant = &QuantMeta{Scheme: q.Scheme}
		if strings.Contains(q.Scheme, "per_channel") {
			m.Quant.Axis = strconv.FormatInt(q.Axis, 10)
		} else {
			m.Quant.Scale, m.Quant.ZeroPoint = PyFloat(q.Scale), strconv.FormatInt(q.ZeroPoint, 10)
		}
	}
	if s := t.Storage; s != nil {
		m.HasStorage = true
		m.StorageKey, m.StorageDType, m.Location, m.ByteOrder = s.Key, s.DType, s.Location, s.ByteOrder
		m.StorageFile = s.File
		m.StorageSize, m.FileOffset, m.StorageSizeText = s.Size, s.Offset, HumanBytes(s.Size)
		switch s.Location {
		case "decompressed":
			m.OffsetLabel = "at byte of the decompressed stream"
		case "inline", "field":
		default:
			m.OffsetLabel = "at file byte"
		}
		m.OutOfBounds = outOfBounds(t)
		m.SharedWith, _ = sharedWith(id, n, -1)
	}
	return m
}

// FieldRow is one field of a structured dtype: its name, type, byte offset in an element,
// and the column that holds its values.
type FieldRow struct {
	Name, DType, Descr, Shape, URL string
	Offset                         int64
}

// fieldRows lists a structured array's fields with links to their columns.
func fieldRows(id string, n *ckpt.Node) []FieldRow {
	var out []FieldRow
	for _, f := range n.Tensor.Fields {
		r := FieldRow{Name: f.Name, DType: f.DType, Descr: f.Descr, Offset: f.Offset}
		if len(f.Shape) > 0 {
			r.Shape = FormatShape(f.Shape)
		}
		for _, k := range n.Children {
			if k.Seg == f.Name && k.Tensor != nil && k.Tensor.Column {
				r.URL = NodeURL(id, k.Path())
			}
		}
		out = append(out, r)
	}
	return out
}

// outOfBounds reports whether the view's last element lies past the end of its storage.
func outOfBounds(t *ckpt.Tensor) bool {
	size := int64(ckpt.DTypeSize(t.DType))
	if size == 0 || t.Numel() == 0 || len(t.Strides) != len(t.Shape) {
		return false
	}
	last := t.StorageOffset
	for i, d := range t.Shape {
		if t.Strides[i] < 0 {
			return true
		}
		last += (d - 1) * t.Strides[i]
	}
	return t.StorageOffset < 0 || (last+1)*size > t.Storage.Size
}

// Contiguity names the memory layout of a view with the given shape and strides (in
// elements), and whether the elements are dense in some order: "C-contiguous (row-major)",
// "Fortran-contiguous (column-major)", "contiguous (C and Fortran order)" for views where both
// hold (vectors, scalars, size-1 dims), or "non-contiguous".
func Contiguity(shape, strides []int64) (string, bool) {
	if len(strides) != len(shape) {
		return "unknown (no strides)", false
	}
	c := denseIn(shape, strides, false)
	f := denseIn(shape, strides, true)
	switch {
	case c && f:
		return "contiguous (C and Fortran order)", true
	case c:
		return "C-contiguous (row-major)", true
	case f:
		return "Fortran-contiguous (column-major)", true
	}
	for i, s := range strides {
		if s == 0 && shape[i] > 1 {
			return "non-contiguous (stride 0: an expanded view)", false
		}
	}
	return "non-contiguous", false
}

// denseIn reports whether strides are those of a dense array in C order (last dimension
// fastest) or Fortran order (first dimension fastest). Dimensions of size 1 may have any
// stride, and an empty view is dense, as in numpy's flags.
func denseIn(shape, strides []int64, fortran bool) bool {
	for _, d := range shape {
		if d == 0 {
			return true
		}
	}
	want := int64(1)
	for k := range shape {
		i := len(shape) - 1 - k
		if fortran {
			i = k
		}
		if shape[i] == 1 {
			continue
		}
		if strides[i] != want {
			return false
		}
		want *= shape[i]
	}
	return true
}

// HexDump formats bytes 16 to a line with offsets and printable ASCII, like `xxd`.
func HexDump(b []byte) []HexLine {
	lines := make([]HexLine, 0, (len(b)+15)/16)
	for off := 0; off < len(b); off += 16 {
		chunk := b[off:min(off+16, len(b))]
		var hx, asc strings.Builder
		for i := range 16 {
			if i == 8 {
				hx.WriteByte(' ')
			}
			if i < len(chunk) {
				fmt.Fprintf(&hx, "%02x ", chunk[i])
				c := chunk[i]
				if c >= 0x20 && c < 0x7f {
					asc.WriteByte(c)
				} else {
					asc.WriteByte('.')
				}
			} else {
				hx.WriteString("   ")
			}
		}
		lines = append(lines, HexLine{
			Offset: fmt.Sprintf("%08x", off),
			Hex:    strings.TrimRight(hx.String(), " "),
			ASCII:  asc.String(),
		})
	}
	return lines
}
