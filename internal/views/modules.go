package views

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// stateDictKeys are the root entries that usually hold a model's state dict, tried when the
// root itself is not one. Any other dict child of the root qualifies too; these win ties.
var stateDictKeys = []string{"state_dict", "model_state_dict", "model", "module", "net", "network", "params", "weights"}

// openTopLevel is how many top-level modules may exist for all of them to start expanded.
const openTopLevel = 3

// Module is one level of a state dict grouped on the dots of its keys: "blocks.0.attn.q.weight"
// sits under blocks → 0 → attn → q. Counts are summed over every tensor below.
type Module struct {
	// Name is this level's part of the key ("attn"), or several parts joined by dots when a
	// chain of modules with one child each is shown as one ("encoder.layer").
	Name string
	// Prefix is the full dotted name ("blocks.0.attn").
	Prefix string
	// Tensors, Params and Bytes are the number of tensors, their elements and their bytes
	// below this module, the leaf included.
	Tensors int
	Params  int64
	Bytes   int64
	// Buffers counts the elements of the entries that are buffers, not parameters
	// (isParameter: running statistics, inv_freq, masks, integer tensors): Params leaves
	// them out.
	Buffers int64
	// Numbered is the number of children when all of them are indices (blocks.0, blocks.1...),
	// shown in numeric order.
	Numbered int
	Children []*Module
	// leaf is the index among the dict's items + 1 of the state dict entry whose key is
	// exactly Prefix (0 for none), so that a tree of 200,000 entries holds no node of them.
	leaf int

	// ModuleShown is what a module the page shows has besides (nil for the others: a
	// tree of 200,000 modules puts into words the few thousand it shows).
	*ModuleShown
}

// ModuleShown is a shown module in words.
type ModuleShown struct {
	// DTypes names the dtypes of the tensors below, most bytes first ("float32, int64").
	DTypes string
	// ParamsText, BuffersText, BytesText and Share (of the tree's parameters) are their
	// human forms.
	ParamsText, BuffersText, BytesText, Share string
	// NumberedLabel says which indices a numbered module's children are: "[0–11]",
	// "[0, 2]", "[0, 2, …, 46] (24)".
	NumberedLabel string
	// Open says whether the module starts expanded.
	Open bool
	// Leaf is the row of the module's own entry, if any.
	Leaf *Row
	// More counts the children not shown (a module of thousands of entries, or a tree past
	// its budget of rows); MoreURL lists them all, a page at a time (a search for the prefix).
	More    int
	MoreURL string
}

// IsLeaf reports whether the module is a single entry with nothing below it.
func (m *Module) IsLeaf() bool { return m.leaf != 0 && len(m.Children) == 0 }

// dtypeBytes is the bytes of one dtype below a module.
type dtypeBytes struct {
	dtype string
	bytes int64
}

// ModuleTree is a state dict shown as nested modules.
type ModuleTree struct {
	// More counts the top-level modules not shown; MoreURL is the dict's own pages.
	More    int
	MoreURL string
	// Path is the JSON Pointer of the dict the tree is built from; URL its node page.
	Path, URL string
	// Modules are the top-level modules and entries, in the dict's order.
	Modules []*Module
	// Entries is the number of keys; Tensors, Params, Buffers and Bytes sum over all tensors.
	Entries int
	Tensors int
	Params  int64
	Buffers int64
	Bytes   int64
	// ParamsText, BuffersText and BytesText are their human forms.
	ParamsText, BuffersText, BytesText string
	// UniqueParams and UniqueBytes count tied weights (the same view saved under two keys)
	// once; UniqueText is their human form, "" when nothing is tied.
	UniqueParams, UniqueBytes int64
	UniqueText                string
}

// Totals sums the tree up in one line: "40 entries, 39 tensors, 8.4K parameters, 33.4 kB
// (7.6K parameters, 30.2 kB without tied weights)".
func (t *ModuleTree) Totals() string {
	s := plural(int64(t.Entries), "entry") + ", " + plural(int64(t.Tensors), "tensor") + ", " +
		t.ParamsText + " parameters, "
	if t.Buffers > 0 {
		s += t.BuffersText + " buffer elements, "
	}
	s += t.BytesText
	if t.UniqueText != "" {
		s += " (" + t.UniqueText + ")"
	}
	return s
}

// Source names where the state dict sits for a reader: "the root" or "/state_dict".
func (t *ModuleTree) Source() string {
	if t.Path == "" {
		return "the root"
	}
	return t.Path
}

// FindStateDict returns the dict that holds the model's weights: the root when it is a dict
// of mostly tensors with dotted keys, else the dict child of the root that is one (the one
// with most tensors). It returns nil when there is none.
func FindStateDict(root *ckpt.Node) *ckpt.Node {
	if root == nil {
		return nil
	}
	if isStateDict(root) {
		return root
	}
	if root.Kind != ckpt.KindDict && root.Kind != ckpt.KindObject {
		return nil
	}
	var best *ckpt.Node
	bestTensors, bestRank := 0, len(stateDictKeys)
	for _, k := range root.Children { // a lazy root's items are no state dicts: plain data, or the tensors of one
		if !isStateDict(k) {
			continue
		}
		t := countTensors(k)
		rank := slices.Index(stateDictKeys, k.Key)
		if rank < 0 {
			rank = len(stateDictKeys)
		}
		if t > bestTensors || t == bestTensors && rank < bestRank {
			best, bestTensors, bestRank = k, t, rank
		}
	}
	return best
}

// FindStateDicts returns every state dict of a checkpoint: the root when it is one, else
// each dict entry of the root that is one (model, ema, discriminator...) and each dict
// entry of those ({"state_dict": {"model": ..., "ema": ...}}), in order.
func FindStateDicts(root *ckpt.Node) []*ckpt.Node {
	if root == nil {
		return nil
	}
	if isStateDict(root) {
		return []*ckpt.Node{root}
	}
	var out []*ckpt.Node
	if root.Kind != ckpt.KindDict && root.Kind != ckpt.KindObject {
		return nil
	}
	for _, k := range root.Children { // as in FindStateDict
		if isStateDict(k) {
			out = append(out, k)
			continue
		}
		if k.Kind == ckpt.KindDict {
			for _, kk := range k.Children {
				if isStateDict(kk) {
					out = append(out, kk)
				}
			}
		}
	}
	return out
}

func countTensors(n *ckpt.Node) int {
	t := 0
	if rows, ok := n.Lazy().(ckpt.TensorItems); ok && rows.HoldsTensors() {
		// a dict that keeps its rows: every row is a tensor, an entry made at open a
		// tensor or a ref to one
		ckpt.EachRow(rows, func(from, to int) { t += to - from }, func(_ int, k *ckpt.Node) {
			if k.Kind == ckpt.KindTensor {
				t++
			}
		})
		return t
	}
	for _, k := range n.Children {
		if k.Kind == ckpt.KindTensor || k.Kind == ckpt.KindNDArray {
			t++
		}
	}
	return t
}

// isStateDict reports whether n is a dict whose values are mostly tensors and whose keys
// are dotted module names.
func isStateDict(n *ckpt.Node) bool {
	if rows, ok := n.Lazy().(ckpt.TensorItems); ok && rows.HoldsTensors() {
		// every entry a tensor: a state dict if a key is dotted
		for i := range rows.Rows() {
			if strings.Contains(rows.Key(i), ".") {
				return n.Kind == ckpt.KindDict
			}
		}
		return false
	}
	kids := entries(n)
	if n.Kind != ckpt.KindDict || len(kids) == 0 {
		return false
	}
	tensors, dotted := 0, false
	for _, k := range kids {
		if k.Kind == ckpt.KindTensor || k.Kind == ckpt.KindNDArray || k.Kind == ckpt.KindRef {
			tensors++
		}
		if k.DictKey == nil && strings.Contains(k.Key, ".") {
			dotted = true
		}
	}
	return dotted && tensors*2 >= len(kids) && countTensors(n) > 0
}

// entries are a dict's entries without its attributes (a state dict's _metadata, which
// BUILD sets on the OrderedDict; the raw tree still shows it).
func entries(n *ckpt.Node) []*ckpt.Node {
	kids := n.Children
	if n.LazyTensors() {
		kids = n.All()
	}
	out := make([]*ckpt.Node, 0, len(kids))
	for _, k := range kids {
		if !k.Attr {
			out = append(out, k)
		}
	}
	return out
}

// eachEntry calls visit with each entry of dict n that is no attribute, and its index
// among n's items. The entries of a dict that keeps them as rows (ckpt.TensorItems) are
// not made into nodes: k is then a stand-in with the row's key, kind and tensor (its dtype
// and shape), valid during the call only, and row is true (the row's tensor is the one
// view of its storage), so that a state dict of 200,000 entries is summed up in a moment;
// its entries made at open (a tied weight, a view) are visited as they are.
func eachEntry(n *ckpt.Node, visit func(i int, k *ckpt.Node, row bool)) {
	rows, ok := n.Lazy().(ckpt.TensorItems)
	if !ok || !rows.HoldsTensors() {
		for i, k := range n.Children {
			if !k.Attr {
				visit(i, k, false)
			}
		}
		return
	}
	var k ckpt.Node
	var t ckpt.Tensor
	ckpt.EachRow(rows, func(from, to int) {
		for i := from; i < to; i++ {
			t.DType, t.Shape = rows.RowTensor(i)
			k = ckpt.Node{Kind: ckpt.KindTensor, Key: rows.Key(i), Tensor: &t}
			visit(i, &k, true)
		}
	}, func(i int, made *ckpt.Node) { visit(i, made, false) })
}

// NewModuleTree groups the entries of a state dict on the dots of their keys. It groups
// them in a modTree (no node kept for an entry, no pointer per module) and makes Modules,
// in words, only of the modules the page shows, so that a state dict of 200,000 entries is
// grouped in a moment.
func NewModuleTree(id string, ck *ckpt.Checkpoint, dict *ckpt.Node) *ModuleTree {
	if dict == nil {
		return nil
	}
	t := &ModuleTree{Path: dict.Path(), URL: NodeURL(id, dict.Path())}
	mt := newModTree(dict)
	var seen viewSet
	eachEntry(dict, func(i int, k *ckpt.Node, row bool) {
		t.Entries++
		mt.addEntry(ck, int32(i), k)
		if (k.Kind == ckpt.KindTensor || k.Kind == ckpt.KindNDArray) && k.Tensor != nil && (row || seen.add(k.Tensor)) {
			if isParameter(k) {
				t.UniqueParams += k.Tensor.Numel()
			}
			t.UniqueBytes += k.Tensor.NBytes()
		}
	})
	mt.finish()
	root := mt.at(0)
	t.Tensors, t.Params, t.Buffers, t.Bytes = root.tensors, root.params, root.buffers, root.bytes
	t.ParamsText, t.BuffersText, t.BytesText = HumanCount(t.Params), HumanCount(t.Buffers), HumanBytes(t.Bytes)
	if t.UniqueParams != t.Params || t.UniqueBytes != t.Bytes {
		t.UniqueText = HumanCount(t.UniqueParams) + " parameters, " + HumanBytes(t.UniqueBytes) + " without tied weights"
	}
	budget := moduleRowBudget
	shown := map[int]*Module{}
	t.Modules, t.More = mt.shown(id, 0, &budget, t.Params, t.Bytes, shown)
	if root.kids <= openTopLevel {
		for _, m := range t.Modules {
			m.Open = !m.IsLeaf()
		}
	}
	fillRows(id, ck, dict, shown)
	if t.More > 0 {
		t.MoreURL = NodeURL(id, dict.Path())
	}
	return t
}

// ModuleTreeOf is NewModuleTree made once per checkpoint and state dict and kept with the
// checkpoint (a Summary): grouping 200,000 entries takes a tenth of a second, and every
// request for the page asks for it. Each caller gets its own copy, to add statistics to.
func ModuleTreeOf(id string, ck *ckpt.Checkpoint, dict *ckpt.Node) *ModuleTree {
	if dict == nil {
		return nil
	}
	t := ck.Summary("views.ModuleTree\x00"+id+"\x00"+dict.Path(), func() any { return NewModuleTree(id, ck, dict) })
	return t.(*ModuleTree).clone()
}

// clone copies t and the modules it shows, down to their rows, so that the copy's rows can
// be given statistics without touching t.
func (t *ModuleTree) clone() *ModuleTree {
	c := *t
	c.Modules = cloneModules(t.Modules)
	return &c
}

func cloneModules(ms []*Module) []*Module {
	if ms == nil {
		return nil
	}
	out := make([]*Module, len(ms))
	for i, m := range ms {
		c := *m
		if m.ModuleShown != nil {
			shown := *m.ModuleShown
			if m.Leaf != nil {
				row := *m.Leaf
				if row.Tensor != nil {
					tb := *row.Tensor
					row.Tensor = &tb
				}
				shown.Leaf = &row
			}
			c.ModuleShown = &shown
		}
		c.Children = cloneModules(m.Children)
		out[i] = &c
	}
	return out
}

// MemBytes is what t holds: its modules in words and their rows (a Summary counts it).
func (t *ModuleTree) MemBytes() int64 {
	total := int64(unsafe.Sizeof(*t)) + int64(len(t.Path)+len(t.URL)+len(t.MoreURL)+len(t.ParamsText)+len(t.BuffersText)+len(t.BytesText)+len(t.UniqueText))
	var visit func(ms []*Module)
	visit = func(ms []*Module) {
		total += 8 * int64(cap(ms))
		for _, m := range ms {
			total += int64(unsafe.Sizeof(*m)) + int64(len(m.Name)+len(m.Prefix))
			if s := m.ModuleShown; s != nil {
				total += int64(unsafe.Sizeof(*s)) + int64(len(s.DTypes)+len(s.ParamsText)+len(s.BuffersText)+len(s.BytesText)+len(s.Share)+len(s.NumberedLabel)+len(s.MoreURL))
				if r := s.Leaf; r != nil {
					total += rowBytes(r)
				}
			}
			visit(m.Children)
		}
	}
	visit(t.Modules)
	return total
}

// rowBytes is what a row holds, its strings and tensor brief included.
func rowBytes(r *Row) int64 {
	n := int64(unsafe.Sizeof(*r)) + int64(len(r.Key)+len(r.Path)+len(r.URL)+len(r.Kind)+len(r.Type)+len(r.FullType)+
		len(r.Summary)+len(r.Brief)+len(r.ChildrenURL)+len(r.Note)+len(r.NoteTitle))
	if r.Ref != nil {
		n += int64(unsafe.Sizeof(*r.Ref)) + int64(len(r.Ref.Label)+len(r.Ref.URL))
	}
	if t := r.Tensor; t != nil {
		n += int64(unsafe.Sizeof(*t)) + int64(len(t.DType)+len(t.Shape)+len(t.Fields)+len(t.NumelText)+len(t.BytesText))
		for _, l := range t.SharedWith {
			n += int64(unsafe.Sizeof(l)) + int64(len(l.Label)+len(l.URL))
		}
	}
	return n
}

// A page shows at most moduleRowBudget rows of a module tree and moduleChildrenShown
// children of one module: a state dict of 200,000 tensors is counted whole, but its page
// shows the first rows and links to the rest (the dict's pages, a search for a module's
// prefix), so that it renders in a moment.
const (
	moduleRowBudget     = 2000
	moduleChildrenShown = 200
)

// entryPage is how many entries fillRows asks a dict for at once (a dict that keeps rows
// makes their nodes a page at a time).
const entryPage = 512

// fillRows makes the rows of the entries the page shows (shown, by their index among the
// dict's items), reading each page of the dict's items once.
func fillRows(id string, ck *ckpt.Checkpoint, dict *ckpt.Node, shown map[int]*Module) {
	if len(shown) == 0 {
		return
	}
	at := make([]int, 0, len(shown))
	for i := range shown {
		at = append(at, i)
	}
	slices.Sort(at)
	var page []*ckpt.Node
	from := -1
	for _, i := range at {
		if f := i / entryPage * entryPage; f != from {
			from, page = f, dict.Items(f, f+entryPage)
		}
		row := NewRow(id, ck, page[i-from])
		shown[i].Leaf = &row
	}
}

// dtypeList names dtypes by bytes, most first, at most three ("float32, int64, …").
func dtypeList(ds []dtypeBytes) string {
	ds = slices.Clone(ds)
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].bytes != ds[j].bytes {
			return ds[i].bytes > ds[j].bytes
		}
		return ds[i].dtype < ds[j].dtype
	})
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.dtype
	}
	if len(names) > 3 {
		names = append(names[:3], "…")
	}
	return strings.Join(names, ", ")
}

// numberedLabel names the indices of n numbered children in numeric order, name(i) the
// i-th's.
func numberedLabel(n int, name func(i int) string) string {
	first, last := name(0), name(n-1)
	if k, _ := ckpt.Index(last); first == "0" && k == n-1 {
		if n == 1 {
			return "[0]"
		}
		return "[0–" + last + "]"
	}
	if n <= 4 {
		names := make([]string, n)
		for i := range names {
			names[i] = name(i)
		}
		return "[" + strings.Join(names, ", ") + "]"
	}
	return "[" + first + ", " + name(1) + ", …, " + last + "] (" + strconv.Itoa(n) + ")"
}
