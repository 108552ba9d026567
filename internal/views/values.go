package views

import (
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/tensor"
)

// ValueReader reads a tensor's elements in C order and formats them the way numpy prints
// them: *tensor.Values.
type ValueReader interface {
	Read(from, n int64) ([]tensor.Element, error)
	Text(e tensor.Element) string
}

// Preview sizes follow numpy's print options: arrays of more than previewThreshold
// elements are summarised with previewEdge items at each end of every dimension, and lines
// wrap at previewLineWidth characters.
const (
	previewThreshold = 1000
	previewEdge      = 3
	previewLineWidth = 75
	// previewMaxRows bounds the innermost rows a preview reads (many dimensions multiply
	// them); beyond it fewer edge items are shown, then only the flattened ends.
	previewMaxRows = 1024
)

// TensorValues is what a tensor page shows of the numbers themselves.
type TensorValues struct {
	// Preview is the numpy-style text of the values (summarised for large tensors);
	// PreviewError says why there is none.
	Preview, PreviewError string
	// Flattened is set when the preview shows the flattened ends only (many dimensions).
	Flattened bool
	// Note says what the values are when that is not plain (a quantized tensor's integers).
	Note string
	// Slice is the 2-D slice table for tensors of two or more dimensions.
	Slice      *SliceTable
	SliceError string
}

// NewPreview formats a tensor's values like numpy's repr without the "array(...)":
// "[0.1, -0.2, 0.3, ..., 0.7, 0.8, 0.9]", nested and summarised for N-D. It reads only
// the elements it shows. flattened reports a preview that had to show the flattened
// first and last values (a tensor of very many dimensions).
func NewPreview(r ValueReader, shape []int64) (text string, flattened bool, err error) {
	nd := len(shape)
	numel := int64(1)
	for _, d := range shape {
		numel *= d
	}
	if nd == 0 {
		els, err := r.Read(0, 1)
		if err != nil || len(els) == 0 {
			return "", false, err
		}
		return elemText(r, els[0]), false, nil
	}
	p := &previewer{r: r, shape: shape, cstride: cStrides(shape), summarize: numel > previewThreshold, edge: previewEdge}
	if numel > 0 && p.rows() > previewMaxRows {
		p.edge = 1
		if p.rows() > previewMaxRows {
			s, err := flatPreview(r, numel)
			return s, true, err
		}
	}
	root, err := p.build(0, 0)
	if err != nil {
		return "", false, err
	}
	width := 0
	root.walk(func(s string) { width = max(width, len(s)) })
	var b strings.Builder
	p.render(&b, root, 0, width)
	return b.String(), false, nil
}

// cStrides are the element strides of a C-contiguous array of the shape.
func cStrides(shape []int64) []int64 {
	st := make([]int64, len(shape))
	n := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = n
		n *= shape[i]
	}
	return st
}

// elemText is an element as numpy prints it: floats keep a point ("1.", "-0.", "1.e+30").
func elemText(r ValueReader, e tensor.Element) string {
	s := r.Text(e)
	if e.Kind != 'f' || strings.ContainsAny(s, ".an") { // has a point, or is nan/inf
		return s
	}
	if i := strings.IndexByte(s, 'e'); i >= 0 {
		return s[:i] + "." + s[i:]
	}
	return s + "."
}

func flatPreview(r ValueReader, numel int64) (string, error) {
	var parts []string
	add := func(from, n int64) error {
		els, err := r.Read(from, n)
		if err != nil {
			return err
		}
		for _, e := range els {
			parts = append(parts, elemText(r, e))
		}
		return nil
	}
	if numel <= 2*previewEdge {
		if err := add(0, numel); err != nil {
			return "", err
		}
	} else {
		if err := add(0, previewEdge); err != nil {
			return "", err
		}
		parts = append(parts, "...")
		if err := add(numel-previewEdge, previewEdge); err != nil {
			return "", err
		}
	}
	return "[" + strings.Join(parts, ", ") + "]", nil
}

type previewer struct {
	r         ValueReader
	shape     []int64
	cstride   []int64
	summarize bool
	edge      int64
}

// indices are the indices of a dimension the preview shows; -1 marks the "...".
func (p *previewer) indices(size int64) []int64 {
	if p.summarize && size > 2*p.edge {
		out := make([]int64, 0, 2*p.edge+1)
		for i := int64(0); i < p.edge; i++ {
			out = append(out, i)
		}
		out = append(out, -1)
		for i := size - p.edge; i < size; i++ {
			out = append(out, i)
		}
		return out
	}
	out := make([]int64, size)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// rows is how many innermost rows the preview reads.
func (p *previewer) rows() int64 {
	rows := int64(1)
	for _, d := range p.shape[:len(p.shape)-1] {
		k := d
		if p.summarize && d > 2*p.edge {
			k = 2 * p.edge
		}
		rows *= k
		if rows > previewMaxRows {
			return rows
		}
	}
	return rows
}

// pnode is one bracket of the preview: element texts for the innermost dimension ("..."
// where elided), nested brackets otherwise (nil where elided).
type pnode struct {
	items []string
	kids  []*pnode
}

func (n *pnode) walk(fn func(string)) {
	for _, s := range n.items {
		if s != "..." {
			fn(s)
		}
	}
	for _, k := range n.kids {
		if k != nil {
			k.walk(fn)
		}
	}
}

func (p *previewer) build(dim int, off int64) (*pnode, error) {
	idx := p.indices(p.shape[dim])
	n := &pnode{}
	if dim == len(p.shape)-1 {
		// read each run of consecutive indices at once
		for i := 0; i < len(idx); {
			if idx[i] < 0 {
				n.items = append(n.items, "...")
				i++
				continue
			}
			j := i
			for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
				j++
			}
			els, err := p.r.Read(off+idx[i], idx[j]-idx[i]+1)
			if err != nil {
				return nil, err
			}
			for _, e := range els {
				n.items = append(n.items, elemText(p.r, e))
			}
			i = j + 1
		}
		return n, nil
	}
	for _, i := range idx {
		if i < 0 {
			n.kids = append(n.kids, nil)
			continue
		}
		k, err := p.build(dim+1, off+i*p.cstride[dim])
		if err != nil {
			return nil, err
		}
		n.kids = append(n.kids, k)
	}
	return n, nil
}

func (p *previewer) render(b *strings.Builder, n *pnode, dim, width int) {
	b.WriteByte('[')
	nd := len(p.shape)
	if dim == nd-1 {
		col := dim + 1
		for i, s := range n.items {
			if s != "..." {
				s = strings.Repeat(" ", width-len(s)) + s
			}
			if i < len(n.items)-1 {
				s += ","
			}
			if i > 0 {
				if col+1+len(s) > previewLineWidth {
					b.WriteString("\n" + strings.Repeat(" ", dim+1))
					col = dim + 1
				} else {
					b.WriteByte(' ')
					col++
				}
			}
			b.WriteString(s)
			col += len(s)
		}
		b.WriteByte(']')
		return
	}
	sep := ",\n" + strings.Repeat("\n", nd-dim-2) + strings.Repeat(" ", dim+1)
	for i, k := range n.kids {
		if i > 0 {
			b.WriteString(sep)
		}
		if k == nil {
			b.WriteString("...")
			continue
		}
		p.render(b, k, dim+1, width)
	}
	b.WriteByte(']')
}

// Slice table page size: rows and columns of a 2-D slice shown at once.
const (
	SliceRows = 32
	SliceCols = 16
)

// SliceQuery chooses a 2-D slice of an N-D tensor: an index for each leading dimension,
// then the first row and column of the page shown of the last two.
type SliceQuery struct {
	Lead     []int64
	Row, Col int64
}

// SliceTable is one page of a 2-D slice: the last two dimensions at the chosen indices of
// the others, SliceRows × SliceCols cells with their indices in the header row and column.
type SliceTable struct {
	// Label is the slice in numpy's index notation: "[0, 3, 0:32, 0:16]".
	Label string
	// Lead are the inputs for the leading dimensions' indices.
	Lead []SliceDim
	// Rows and Cols are the sizes of the two dimensions shown; the page shows
	// [RowStart, RowEnd) × [ColStart, ColEnd).
	Rows, Cols                         int64
	RowStart, RowEnd, ColStart, ColEnd int64
	// ColIndex labels the columns.
	ColIndex []int64
	Body     []SliceRow
	// Paging links, "" where there is nothing that way.
	PrevRows, NextRows, PrevCols, NextCols string
	// Range says which part is shown: "rows 0–31 of 50 · columns 0–15 of 16".
	Range string
}

// SliceDim is one leading dimension's index input.
type SliceDim struct {
	// Name is the form field ("d0"); Label names the dimension for a reader ("dim 0").
	Name, Label string
	Value, Max  int64
}

// SliceRow is one row of a slice with its index.
type SliceRow struct {
	Index int64
	Cells []SliceCell
}

// SliceCell is one value; Class marks negatives, zeros and NaN/inf for colour.
type SliceCell struct {
	Text, Class string
}

// ClampSlice fits a query to a shape: one index per leading dimension, each in range, and
// the page start inside the last two dimensions.
func ClampSlice(shape []int64, q SliceQuery) SliceQuery {
	nd := len(shape)
	if nd < 2 {
		return SliceQuery{}
	}
	out := SliceQuery{Lead: make([]int64, nd-2)}
	for i := range out.Lead {
		if i < len(q.Lead) {
			out.Lead[i] = min(max(q.Lead[i], 0), max(shape[i]-1, 0))
		}
	}
	out.Row = min(max(q.Row, 0), max(shape[nd-2]-1, 0))
	out.Col = min(max(q.Col, 0), max(shape[nd-1]-1, 0))
	return out
}

// NewSliceTable reads one page of a 2-D slice. pageURL makes the link to another page.
func NewSliceTable(r ValueReader, shape []int64, q SliceQuery, pageURL func(SliceQuery) string) (*SliceTable, error) {
	nd := len(shape)
	q = ClampSlice(shape, q)
	rows, cols := shape[nd-2], shape[nd-1]
	t := &SliceTable{Rows: rows, Cols: cols, RowStart: q.Row, ColStart: q.Col}
	t.RowEnd = min(rows, q.Row+SliceRows)
	t.ColEnd = min(cols, q.Col+SliceCols)
	cs := cStrides(shape)
	base := int64(0)
	var label []string
	for i, v := range q.Lead {
		base += v * cs[i]
		label = append(label, strconv.FormatInt(v, 10))
		t.Lead = append(t.Lead, SliceDim{Name: "d" + strconv.Itoa(i), Label: "dim " + strconv.Itoa(i), Value: v, Max: max(shape[i]-1, 0)})
	}
	label = append(label, span(t.RowStart, t.RowEnd), span(t.ColStart, t.ColEnd))
	t.Label = "[" + strings.Join(label, ", ") + "]"
	for c := t.ColStart; c < t.ColEnd; c++ {
		t.ColIndex = append(t.ColIndex, c)
	}
	for row := t.RowStart; row < t.RowEnd; row++ {
		els, err := r.Read(base+row*cols+t.ColStart, t.ColEnd-t.ColStart)
		if err != nil {
			return nil, err
		}
		sr := SliceRow{Index: row, Cells: make([]SliceCell, len(els))}
		for i, e := range els {
			sr.Cells[i] = SliceCell{Text: r.Text(e), Class: cellClass(e)}
		}
		t.Body = append(t.Body, sr)
	}
	page := func(row, col int64) string {
		return pageURL(SliceQuery{Lead: q.Lead, Row: row, Col: col})
	}
	if t.RowStart > 0 {
		t.PrevRows = page(max(0, t.RowStart-SliceRows), t.ColStart)
	}
	if t.RowEnd < rows {
		t.NextRows = page(t.RowEnd, t.ColStart)
	}
	if t.ColStart > 0 {
		t.PrevCols = page(t.RowStart, max(0, t.ColStart-SliceCols))
	}
	if t.ColEnd < cols {
		t.NextCols = page(t.RowStart, t.ColEnd)
	}
	t.Range = "rows " + rangeText(t.RowStart, t.RowEnd) + " of " + Thousands(rows) +
		" · columns " + rangeText(t.ColStart, t.ColEnd) + " of " + Thousands(cols)
	return t, nil
}

func span(lo, hi int64) string { return strconv.FormatInt(lo, 10) + ":" + strconv.FormatInt(hi, 10) }

func rangeText(lo, hi int64) string {
	switch {
	case hi <= lo:
		return "none"
	case hi == lo+1:
		return Thousands(lo)
	}
	return Thousands(lo) + "–" + Thousands(hi-1)
}

func cellClass(e tensor.Element) string {
	switch e.Kind {
	case 'f':
		switch {
		case math.IsNaN(e.Real) || math.IsInf(e.Real, 0):
			return "v-bad"
		case e.Real < 0:
			return "v-neg"
		case e.Real == 0:
			return "v-zero"
		}
	case 'i':
		if e.Int < 0 {
			return "v-neg"
		}
		if e.Int == 0 {
			return "v-zero"
		}
	case 'u', 'b':
		if e.Real == 0 {
			return "v-zero"
		}
	case 'c':
		if math.IsNaN(e.Real) || math.IsInf(e.Real, 0) {
			return "v-bad"
		}
		if e.Re == 0 && e.Im == 0 {
			return "v-zero"
		}
	}
	return ""
}

// NodeQuery is the state a node page's URL carries: the children page, the histogram
// scale, the slice shown.
type NodeQuery struct {
	Offset int
	// Log shows the histogram on a log scale.
	Log bool
	// Slice is the slice table's position; nil for the first page of slice 0.
	Slice *SliceQuery
	// ComputeStats asks the page to compute the statistics before answering (the link
	// browsers without JavaScript follow).
	ComputeStats bool
}

// URL is the node page with this state.
func (q NodeQuery) URL(id, pointer string) string {
	v := url.Values{}
	if q.Offset > 0 {
		v.Set("offset", strconv.Itoa(q.Offset))
	}
	if q.Log {
		v.Set("hist", "log")
	}
	if s := q.Slice; s != nil {
		for i, x := range s.Lead {
			if x != 0 {
				v.Set("d"+strconv.Itoa(i), strconv.FormatInt(x, 10))
			}
		}
		if s.Row > 0 {
			v.Set("row", strconv.FormatInt(s.Row, 10))
		}
		if s.Col > 0 {
			v.Set("col", strconv.FormatInt(s.Col, 10))
		}
	}
	if q.ComputeStats {
		v.Set("stats", "compute")
	}
	u := NodeURL(id, pointer)
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return u
}

// PreviewRow is one innermost row of a preview (or a "...," line standing for rows not
// shown), as the page lays it out: Lead is its indent and opening brackets, Items its
// elements, End the line breaks after it ("\n", "\n\n" between blocks, "" for the last).
// Written in order, every row's Lead, its items' Before and Text, and End give back the
// preview's text exactly.
type PreviewRow struct {
	Lead  string
	Items []PreviewItem
	End   string
}

// PreviewItem is one element of a row with its padding and what follows it ("  0.3,",
// "16.]],", "...,"). Before is what separates it from the item before: "" for the first,
// " ", or the newline and indent where the numpy-style line wrapped (Wrap).
type PreviewItem struct {
	Before, Text string
	Wrap         bool
}

// PreviewRows cuts the preview into rows and elements, so that a narrow screen can wrap
// each row between its elements (never inside a number) and indent what wraps under its
// first element, while a wide one shows the text as it is. nil when the preview is no
// bracketed array (a scalar), or not of the shape NewPreview writes.
func (v *TensorValues) PreviewRows() []PreviewRow {
	if v == nil {
		return nil
	}
	rows := previewRows(v.Preview)
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(r.Lead)
		for _, it := range r.Items {
			b.WriteString(it.Before)
			b.WriteString(it.Text)
		}
		b.WriteString(r.End)
	}
	if b.String() != v.Preview {
		return nil
	}
	return rows
}

func previewRows(text string) []PreviewRow {
	nd := len(text) - len(strings.TrimLeft(text, "["))
	if nd == 0 {
		return nil
	}
	var rows []PreviewRow
	for _, line := range strings.Split(text, "\n") {
		if line == "" { // the blank line between blocks of a 3-D and up preview
			if len(rows) == 0 {
				return nil
			}
			rows[len(rows)-1].End += "\n"
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if indent >= nd && len(rows) > 0 {
			// a row continued: NewPreview indents what wraps by the number of dimensions
			r := &rows[len(rows)-1]
			items := previewItems(line[nd:])
			if len(items) == 0 {
				return nil
			}
			items[0].Before, items[0].Wrap = "\n"+line[:nd], true
			r.Items = append(r.Items, items...)
			continue
		}
		if len(rows) > 0 {
			rows[len(rows)-1].End += "\n"
		}
		lead := indent + len(line[indent:]) - len(strings.TrimLeft(line[indent:], "["))
		rows = append(rows, PreviewRow{Lead: line[:lead], Items: previewItems(line[lead:])})
	}
	return rows
}

// previewItems cuts a line's elements at the ", " between them: the comma stays with the
// element, the space is the next one's Before.
func previewItems(s string) []PreviewItem {
	var items []PreviewItem
	before := ""
	for s != "" {
		i := strings.Index(s, ", ")
		if i < 0 {
			items = append(items, PreviewItem{Before: before, Text: s})
			break
		}
		items = append(items, PreviewItem{Before: before, Text: s[:i+1]})
		s, before = s[i+2:], " "
	}
	return items
}
