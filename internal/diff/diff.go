// Package diff compares two checkpoints: which tensors each has that the other has not,
// which changed dtype or shape, and how the values of the others differ.
//
// Tensors are matched by key. When a checkpoint has a state dict (views.FindStateDict: the
// root, or the dict under "state_dict", "model"... with dotted keys), its keys are its
// entries' keys; otherwise they are the tensors' JSON Pointers. A prefix that every key of
// one side carries ("module." from nn.DataParallel, "model." from Lightning, "_orig_mod."
// from torch.compile) is stripped when that makes more keys match, and the result says so.
package diff

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
)

// Tensor is one side's tensor of a key.
type Tensor struct {
	Path  string // its JSON Pointer in its checkpoint
	DType string
	Shape []int64
	node  *ckpt.Node
}

// Pair is a key both checkpoints have.
type Pair struct {
	Key  string
	A, B Tensor
	// Status is one of the Status constants.
	Status string
	// Diff is how the values differ, when both are readable with one shape.
	Diff *tensor.Diff
	// Err says why the values could not be compared.
	Err string
	// Within names the narrower dtype whose rounding explains every difference, for a pair
	// of two dtypes that is close though outside numpy's isclose ("bfloat16").
	Within string
}

// unitRoundoff is the largest relative error of rounding to a float dtype: half its
// machine epsilon.
var unitRoundoff = map[string]float64{"float64": 0x1p-53, "float32": 0x1p-24, "float16": 0x1p-11, "bfloat16": 0x1p-8,
	"float8_e4m3fn": 0x1p-4, "float8_e5m2": 0x1p-3, "float8_e4m3fnuz": 0x1p-4, "float8_e5m2fnuz": 0x1p-3}

// narrower is the float dtype of the two with the larger rounding error, "" if either is
// not a float dtype.
func narrower(a, b string) string {
	ua, oka := unitRoundoff[a]
	ub, okb := unitRoundoff[b]
	if !oka || !okb {
		return ""
	}
	if ua >= ub {
		return a
	}
	return b
}

// withinPrecision reports whether two float dtypes differ and every element's relative
// difference is within the narrower one's rounding: b is a, rounded (or the other way).
func withinPrecision(a, b string, d *tensor.Diff) bool {
	n := narrower(a, b)
	return a != b && n != "" && d.NaN == 0 && d.MaxRel <= unitRoundoff[n]*(1+1e-12)
}

// Statuses of a pair, from the most changed to the least.
const (
	StatusShape     = "shape"     // the shapes differ (the dtypes may too)
	StatusChanged   = "changed"   // values outside numpy's allclose
	StatusUnread    = "unread"    // values that could not be compared (Err)
	StatusClose     = "close"     // within allclose, not bit-identical (a bf16 copy, another dtype)
	StatusIdentical = "identical" // same dtype, same bytes
)

// Side says where one checkpoint's keys come from.
type Side struct {
	// StateDict says the keys are a state dict's, found at Scope (a JSON Pointer; "" is the
	// root); otherwise they are the JSON Pointers of every tensor of the tree.
	StateDict bool
	Scope     string
	// Strip is the key prefix stripped to align the keys ("" if none).
	Strip string
	// Only are the keys only this side has, with their tensors, in key order.
	Only []Keyed
}

// Keyed is a key and its tensor.
type Keyed struct {
	Key string
	Tensor
}

// Result is the comparison of two checkpoints.
type Result struct {
	A, B  Side
	Pairs []*Pair // sorted by how much they changed, most first
	// Counts per status.
	Counts map[string]int
}

// item is a tensor under its key before alignment.
type item struct {
	key string
	t   Tensor
}

// Keys returns the tensors of ck by key, and the state dict they were taken from (nil for
// the whole tree).
func keys(ck *ckpt.Checkpoint) ([]item, *ckpt.Node) {
	var out []item
	add := func(key string, n *ckpt.Node) {
		r := views.ResolveRef(ck, n) // a tensor stored twice is a ref to its first place
		if r == nil || r.Tensor == nil || (r.Kind != ckpt.KindTensor && r.Kind != ckpt.KindNDArray) {
			return
		}
		out = append(out, item{key: key, t: Tensor{Path: n.Path(), DType: r.Tensor.DType, Shape: r.Tensor.Shape, node: r}})
	}
	if sd := views.FindStateDict(ck.Root); sd != nil {
		for _, k := range sd.All() {
			if !k.Attr {
				add(k.Key, k)
			}
		}
		return out, sd
	}
	ckpt.Walk(ck.Root, func(n *ckpt.Node) {
		if n.Kind == ckpt.KindTensor || n.Kind == ckpt.KindNDArray {
			add(n.Path(), n)
		}
	})
	return out, nil
}

func side(sd *ckpt.Node, strip string) Side {
	s := Side{Strip: strip, StateDict: sd != nil}
	if sd != nil {
		s.Scope = sd.Path()
	}
	return s
}

// commonPrefixes lists the dotted prefixes every key carries: "module.", then
// "module.model." and so on.
func commonPrefixes(items []item) []string {
	out := []string{""}
	if len(items) == 0 {
		return out
	}
	prefix := ""
	for range 4 {
		rest := strings.TrimPrefix(items[0].key, prefix)
		i := strings.IndexByte(rest, '.')
		if i <= 0 {
			break
		}
		next := prefix + rest[:i+1]
		for _, it := range items {
			if !strings.HasPrefix(it.key, next) || len(it.key) == len(next) {
				return out
			}
		}
		prefix = next
		out = append(out, prefix)
	}
	return out
}

func stripped(items []item, p string) map[string]item {
	m := make(map[string]item, len(items))
	for _, it := range items {
		k := strings.TrimPrefix(it.key, p)
		if _, dup := m[k]; !dup {
			m[k] = it
		}
	}
	return m
}

// Plan matches the tensors of a and b by key, aligning prefixes, without reading values.
func Plan(a, b *ckpt.Checkpoint) *Result {
	ia, sdA := keys(a)
	ib, sdB := keys(b)
	// the pair of prefixes that matches most keys; on a tie, the shortest strips
	bestA, bestB, best := "", "", -1
	for _, pa := range commonPrefixes(ia) {
		ma := stripped(ia, pa)
		for _, pb := range commonPrefixes(ib) {
			mb := stripped(ib, pb)
			n := 0
			for k := range ma {
				if _, ok := mb[k]; ok {
					n++
				}
			}
			if n > best || n == best && len(pa)+len(pb) < len(bestA)+len(bestB) {
				bestA, bestB, best = pa, pb, n
			}
		}
	}
	ma, mb := stripped(ia, bestA), stripped(ib, bestB)
	r := &Result{A: side(sdA, bestA), B: side(sdB, bestB), Counts: map[string]int{}}
	for _, it := range ia {
		k := strings.TrimPrefix(it.key, bestA)
		if ma[k].t.Path != it.t.Path {
			continue // a duplicate after stripping
		}
		if jt, ok := mb[k]; ok {
			p := &Pair{Key: k, A: it.t, B: jt.t}
			if !slices.Equal(it.t.Shape, jt.t.Shape) {
				p.Status = StatusShape
			}
			r.Pairs = append(r.Pairs, p)
		} else {
			r.A.Only = append(r.A.Only, Keyed{Key: k, Tensor: it.t})
		}
	}
	for _, it := range ib {
		k := strings.TrimPrefix(it.key, bestB)
		if mb[k].t.Path != it.t.Path {
			continue
		}
		if _, ok := ma[k]; !ok {
			r.B.Only = append(r.B.Only, Keyed{Key: k, Tensor: it.t})
		}
	}
	return r
}

// Compute compares the values of every pair of one shape, workers goroutines per pair,
// and sorts the pairs. progress, if set, hears the elements compared.
func (r *Result) Compute(ctx context.Context, workers int, progress func(int64)) error {
	for _, p := range r.Pairs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.Status == StatusShape {
			continue
		}
		va, vb := p.A.node.Tensor.View(), p.B.node.Tensor.View()
		if va == nil || vb == nil {
			p.Status, p.Err = StatusUnread, "the values are not in the file, or not numbers"
			continue
		}
		if va.Quantized != vb.Quantized {
			p.Status, p.Err = StatusUnread, "one side is quantized: its stored integers are not the other's values"
			continue
		}
		d, err := tensor.CompareViews(ctx, va, vb, workers, progress)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// the pair's verdict; a caller whose storage failed under it says so instead
			p.Status, p.Err = StatusUnread, strings.TrimPrefix(err.Error(), "tensor: ")
			continue
		}
		p.Diff = d
		switch {
		case d.Identical:
			p.Status = StatusIdentical
		case d.OutsideAllclose == 0:
			p.Status = StatusClose
		case withinPrecision(p.A.DType, p.B.DType, d):
			// a copy in a narrower dtype (a bf16 copy of fp32 weights): every difference is
			// the rounding of the narrower dtype, which numpy's fixed tolerance does not allow
			p.Status, p.Within = StatusClose, narrower(p.A.DType, p.B.DType)
		default:
			p.Status = StatusChanged
		}
	}
	r.sort()
	return nil
}

var statusRank = map[string]int{StatusShape: 0, StatusChanged: 1, StatusUnread: 2, StatusClose: 3, StatusIdentical: 4}

// sort orders the pairs by status, then by relative L2 of the difference, largest first,
// then by key; and counts them.
func (r *Result) sort() {
	sort.SliceStable(r.Pairs, func(i, j int) bool {
		a, b := r.Pairs[i], r.Pairs[j]
		if ra, rb := statusRank[a.Status], statusRank[b.Status]; ra != rb {
			return ra < rb
		}
		if la, lb := change(a), change(b); la != lb {
			return la > lb
		}
		return a.Key < b.Key
	})
	clear(r.Counts)
	for _, p := range r.Pairs {
		r.Counts[p.Status]++
	}
}

// change is how much a pair changed, for sorting: its relative L2, +Inf when undefined.
func change(p *Pair) float64 {
	if p.Diff == nil {
		return 0
	}
	if p.Diff.RelL2 == nil {
		return 1e308
	}
	return *p.Diff.RelL2
}

// DTypeChanged reports whether the pair's dtypes differ.
func (p *Pair) DTypeChanged() bool { return p.A.DType != p.B.DType }
