package views

import (
	"strconv"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// DefaultLimit is how many children one page of a tree shows.
const DefaultLimit = 200

// MaxLimit caps the page size a request may ask for.
const MaxLimit = 2000

// maxSharedLinks is how many other users of a storage a row names before "and N more".
const maxSharedLinks = 3

// FileMeta is what the store knows about an uploaded or bundled file.
type FileMeta struct {
	ID, Name, Format string
	Size             int64
	// Source is the URL of a checkpoint read in place; its ID then names the URL and the
	// version opened, not the bytes.
	Source string
}

// Link is a labelled address.
type Link struct {
	Label, URL string
}

// Row is one node in a tree listing or a children table.
type Row struct {
	// Key is how the parent names the node: a dict key, list index or attribute name.
	Key string
	// Path is the node's JSON Pointer; URL its share link.
	Path, URL string
	Kind      string
	// Type is the short Python type ("OrderedDict"); FullType the dotted one.
	Type, FullType string
	Summary        string
	// Brief is what a listing shows beside the type when the summary would repeat it:
	// "317 items" for an OrderedDict. Empty when the summary is shown.
	Brief string
	// Danger marks a global that would run code or touch the system.
	Danger bool
	// Count is the number of children of a container; ChildrenURL loads them (htmx).
	Count       int
	ChildrenURL string
	// KidsKeyWidth is the key column width of the children's rows, in characters.
	KidsKeyWidth int
	// Tensor is set for tensors and arrays.
	Tensor *TensorBrief
	// Ref is the target of a ref node.
	Ref *Link
	// Note names what the node stands for when its key does not say (an optimizer state
	// entry's parameter); NoteTitle says how that was found.
	Note, NoteTitle string
}

// Expandable reports whether the row has children to load.
func (r Row) Expandable() bool { return r.ChildrenURL != "" && r.Count > 0 }

// TensorBrief is the part of a tensor's metadata a tree row shows.
type TensorBrief struct {
	DType, Shape string
	// Fields lists a structured dtype's fields (FieldsText), "" for others.
	Fields string
	Numel  int64
	NBytes int64
	// NumelText and BytesText are the human forms ("2.4M", "9.44 MB").
	NumelText, BytesText string
	// SharedWith names other tensors that view the same storage (tied weights); SharedMore
	// counts those left out.
	SharedWith []Link
	SharedMore int
	// Spark is the tensor's sparkline when its statistics are already computed.
	Spark *Sparkline
}

// StatsLookup returns the statistics already computed for the tensor at a pointer, nil if
// there are none yet.
type StatsLookup func(pointer string) *tensor.Stats

// AddStats gives tensor rows a sparkline from the statistics lookup has already; it never
// computes any, so a tree renders at once whatever the tensors' sizes.
func (c *Children) AddStats(lookup StatsLookup) {
	for i := range c.Rows {
		c.Rows[i].addStats(lookup)
	}
}

func (r *Row) addStats(lookup StatsLookup) {
	if r.Tensor != nil && lookup != nil {
		r.Tensor.Spark = NewSparkline(lookup(r.Path))
	}
}

// Children is one page of a node's children: the htmx fragment a tree row expands into,
// and the table of a node page.
type Children struct {
	Meta FileMeta
	// Path is the parent's JSON Pointer.
	Path string
	Rows []Row
	// Offset is the index of the first row; Total the number of children.
	Offset, Limit, Total int
	// Remaining is how many children follow this page; MoreURL loads the next page as a
	// fragment and MorePageURL is the same page for browsers without JavaScript.
	Remaining            int
	MoreURL, MorePageURL string
	// KeyWidth is the key column width of the rows, in characters, so values line up.
	KeyWidth int
}

// KeyClass is the CSS class that sets the key column width of the rows: "kw-24".
func (c Children) KeyClass() string { return keyClass(c.KeyWidth) }

// KidsKeyClass is the CSS class for the key column of the row's children.
func (r Row) KidsKeyClass() string { return keyClass(r.KidsKeyWidth) }

// Key column widths come in steps, one CSS class each (no inline styles under the CSP).
const (
	keyWidthStep = 4
	keyWidthMin  = 4
	keyWidthMax  = 48
)

func keyClass(w int) string {
	if w <= 0 {
		w = keyWidthMax
	}
	return "kw-" + strconv.Itoa(w)
}

// keyWidth is the width in characters that fits the longest key among the first page of
// children, rounded up to a step and capped: longer keys are cut with an ellipsis.
func keyWidth(kids []*ckpt.Node) int {
	w := 0
	var reprs bool // the children's keys are reprs (KeyLabel), which a page shows
	if len(kids) > 0 {
		reprs = keysAsRepr(kids[0].Parent())
	}
	for _, k := range kids[:min(len(kids), DefaultLimit)] {
		w = max(w, utf8.RuneCountInString(keyLabel(k, reprs)))
	}
	w = (w + keyWidthStep - 1) / keyWidthStep * keyWidthStep
	return max(keyWidthMin, min(w, keyWidthMax))
}

// NewChildren builds the page of n's children that starts at offset. A limit of 0 or less
// means DefaultLimit.
func NewChildren(meta FileMeta, ck *ckpt.Checkpoint, n *ckpt.Node, offset, limit int) Children {
	c := Children{Meta: meta}
	if n == nil {
		return c
	}
	c.Path = n.Path()
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	total := n.NumItems()
	c.Total = total
	offset = max(0, min(offset, total))
	end := min(total, offset+limit)
	c.Offset, c.Limit = offset, limit
	page := n.Items(offset, end)
	c.KeyWidth = keyWidth(page)
	if !n.IsLazy() {
		c.KeyWidth = keyWidth(childrenOf(n))
	}
	c.Rows = make([]Row, 0, end-offset)
	reprs := keysAsRepr(n)
	for _, k := range page {
		c.Rows = append(c.Rows, newRow(meta.ID, ck, k, reprs))
	}
	if isOptimizerStateEntries(n) {
		if pn := NewParamNames(ck); pn != nil {
			for i := range c.Rows {
				if name, ok := pn.ByPath[c.Rows[i].Path]; ok {
					c.Rows[i].Note, c.Rows[i].NoteTitle = name, pn.How
				}
			}
		}
	}
	c.Remaining = total - end
	if c.Remaining > 0 {
		c.MoreURL = ChildrenURL(meta.ID, n.Path(), end)
		c.MorePageURL = withOffset(NodeURL(meta.ID, n.Path()), end)
	}
	return c
}

// KeyLabel is how a row names node n to a reader: its Key (a dict key, list index or
// attribute name), except that in a dict whose keys are not all str every key is written
// as Python's repr, so that the int 7 (7) and the str "7" ('7') read apart; a dict of str
// keys only shows them bare. A key that is the empty str is written as a pair of quotes
// either way, so that its link has text to click.
func KeyLabel(n *ckpt.Node) string { return keyLabel(n, keysAsRepr(n.Parent())) }

// keyLabel is KeyLabel when whether n's siblings' keys are reprs is known.
func keyLabel(n *ckpt.Node, reprs bool) string {
	switch {
	case n.Attr || n.DictKey != nil:
		// an attribute's name, or a key that is not a str (its Key is its repr already)
	case reprs:
		return PyRepr(n.Key)
	case n.Key == "" && n.Parent() != nil:
		return "''"
	}
	return n.Key
}

// keysAsRepr says whether the keys of dict p's entries are shown as reprs: whether one of
// them is not a str. A dict kept as values (IsLazy) has str keys only.
func keysAsRepr(p *ckpt.Node) bool {
	if p == nil || p.Kind != ckpt.KindDict || p.IsLazy() {
		return false
	}
	for _, k := range p.Children {
		if k.DictKey != nil && !k.Attr {
			return true
		}
	}
	return false
}

// NewRow describes one node for a tree listing.
func NewRow(id string, ck *ckpt.Checkpoint, n *ckpt.Node) Row {
	return newRow(id, ck, n, keysAsRepr(n.Parent()))
}

// newRow is NewRow when whether n's key is shown as a repr is known (keysAsRepr of its
// parent, worked out once for a page of siblings).
func newRow(id string, ck *ckpt.Checkpoint, n *ckpt.Node, reprs bool) Row {
	path := n.Path() // made from the parents: once per row
	r := Row{
		Key:      keyLabel(n, reprs),
		Path:     path,
		URL:      NodeURL(id, path),
		Kind:     string(n.Kind),
		Type:     ShortType(n.Type),
		FullType: n.Type,
		Summary:  Summary(n),
		Danger:   n.Danger,
	}
	if r.Type == "" {
		r.Type = string(n.Kind)
	}
	switch n.Kind {
	case ckpt.KindList, ckpt.KindTuple, ckpt.KindDict, ckpt.KindSet, ckpt.KindFrozenSet:
		if _, inline := inlineRepr(n); !inline { // "(3, 3)" says more than "2 items"
			r.Brief = plural(int64(n.NumItems()), "item")
		}
	}
	if isContainer(n) {
		r.Count = n.NumItems()
		if r.Count > 0 {
			r.ChildrenURL = ChildrenURL(id, path, 0)
			r.KidsKeyWidth = keyWidth(childrenOf(n))
		}
	}
	if n.Tensor != nil {
		r.Tensor = newTensorBrief(id, n)
	}
	if n.Kind == ckpt.KindRef {
		r.Ref = &Link{Label: displayPointer(n.Target), URL: NodeURL(id, n.Target)}
		if ck != nil {
			if t, err := ck.Node(n.Target); err == nil && t != n && t.Kind != ckpt.KindRef {
				r.Summary = "ref → " + displayPointer(n.Target) + " (" + Summary(t) + ")"
			}
		}
	}
	return r
}

func newTensorBrief(id string, n *ckpt.Node) *TensorBrief {
	t := n.Tensor
	b := &TensorBrief{
		DType:     t.DType,
		Fields:    FieldsText(t),
		Shape:     FormatShape(t.Shape),
		Numel:     t.Numel(),
		NBytes:    t.NBytes(),
		NumelText: HumanCount(t.Numel()),
		BytesText: HumanBytes(t.NBytes()),
	}
	b.SharedWith, b.SharedMore = sharedWith(id, n, maxSharedLinks)
	return b
}

// sharedWith lists up to max other tensors that view n's storage, and how many more do.
func sharedWith(id string, n *ckpt.Node, max int) ([]Link, int) {
	if n.Tensor == nil || n.Tensor.Storage == nil {
		return nil, 0
	}
	// Only the first users are read: a storage viewed by 200,000 tensors costs each row
	// max links, not a walk of all of them.
	users, self := n.Tensor.Storage.Users, n.Path()
	var links []Link
	seenSelf, i := false, 0
	for ; i < len(users) && (max < 0 || len(links) < max); i++ {
		if users[i] == self {
			seenSelf = true
			continue
		}
		links = append(links, Link{Label: displayPointer(users[i]), URL: NodeURL(id, users[i])})
	}
	more := len(users) - i
	if !seenSelf && more > 0 {
		more-- // the tensor itself is among the rest
	}
	return links, more
}
