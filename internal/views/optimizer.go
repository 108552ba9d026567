package views

import (
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// An optimizer's state dict ({"state": {0: {...}, 1: ...}, "param_groups": [{"params": [0,
// 1, ...]}, ...]}) numbers the parameters it keeps state for; torch numbers them in the
// order of model.parameters(), which is the order of the model's state dict without its
// buffers. Where a checkpoint holds both and the counts agree, each state entry is named
// after its parameter.

// bufferSuffixes end the names of the buffers torch's own modules register: they are in a
// state dict but are no parameters.
var bufferSuffixes = []string{"running_mean", "running_var", "num_batches_tracked", "inv_freq", "position_ids",
	"attn.bias", "attn.masked_bias", "mask", "_float_tensor"}

// ParamNames maps the path of each optimizer state entry in ck ("/optimizer_states/0/state/3")
// to the name of its parameter ("model.2.bias"), with a sentence that says how, or nil when
// the file does not allow it (no optimizer, no state dict, counts that disagree).
type ParamNames struct {
	ByPath map[string]string
	// How says what was matched: "4 optimizer state entries named by the order of
	// param_groups against the 4 parameters of /state_dict".
	How string
}

// NewParamNames finds the optimizer state dicts and the model's state dict of ck.
func NewParamNames(ck *ckpt.Checkpoint) *ParamNames {
	if ck == nil || ck.Root == nil || ck.Root.Kind != ckpt.KindDict || ck.Root.IsLazy() {
		return nil
	}
	sd := FindStateDict(ck.Root)
	if sd == nil {
		return nil
	}
	var params []string
	for _, k := range entries(sd) {
		if isParameter(k) {
			params = append(params, k.Key)
		}
	}
	var opts []*ckpt.Node
	for _, k := range ck.Root.Children { // "optimizer_state_dict": {...}, "optimizer_states": [{...}]
		if isOptimizerState(k) {
			opts = append(opts, k)
		} else if k.Kind == ckpt.KindList && !k.IsLazy() {
			for _, o := range k.Children {
				if isOptimizerState(o) {
					opts = append(opts, o)
				}
			}
		}
	}
	out := &ParamNames{ByPath: map[string]string{}}
	named := 0
	for _, o := range opts {
		ids := groupParams(o)
		if len(ids) != len(params) {
			continue
		}
		pos := make(map[string]int, len(ids))
		for i, id := range ids {
			pos[id] = i
		}
		state := child(o, "state")
		if state == nil || state.IsLazy() {
			continue
		}
		for _, e := range state.Children {
			if i, ok := pos[e.Key]; ok {
				out.ByPath[e.Path()] = params[i]
				named++
			}
		}
	}
	if named == 0 {
		return nil
	}
	entriesText := Thousands(int64(named)) + " optimizer state entries"
	if named == 1 {
		entriesText = "1 optimizer state entry"
	}
	out.How = entriesText + " named after the " + Plural(len(params), "parameter") + " of " + displayPointer(sd.Path()) +
		", in the order of the optimizer's param_groups (the state dict's order without its buffers)"
	return out
}

// isParameter says whether a state dict entry is a parameter rather than a buffer: a float
// tensor whose name is not one of the buffers torch's modules register.
func isParameter(k *ckpt.Node) bool {
	if k.Tensor == nil || k.Kind == ckpt.KindRef || !tensor.IsFloat(k.Tensor.DType) {
		return false
	}
	for _, s := range bufferSuffixes {
		if key := k.Key; strings.HasSuffix(key, s) && (len(key) == len(s) || key[len(key)-len(s)-1] == '.') {
			return false
		}
	}
	return true
}

func isOptimizerState(n *ckpt.Node) bool {
	return n.Kind == ckpt.KindDict && child(n, "state") != nil && child(n, "param_groups") != nil
}

func child(n *ckpt.Node, key string) *ckpt.Node {
	for _, k := range n.Children {
		if k.Key == key && k.DictKey == nil {
			return k
		}
	}
	return nil
}

// groupParams lists the parameter ids of an optimizer's param_groups, in order.
func groupParams(o *ckpt.Node) []string {
	groups := child(o, "param_groups")
	if groups == nil {
		return nil
	}
	var ids []string
	for _, g := range groups.Items(0, groups.NumItems()) {
		if g.Kind != ckpt.KindDict {
			continue
		}
		var p *ckpt.Node
		if g.IsLazy() {
			for _, k := range g.Items(0, g.NumItems()) {
				if k.Key == "params" {
					p = k
				}
			}
		} else {
			p = child(g, "params")
		}
		if p == nil {
			return nil
		}
		for _, id := range p.Items(0, p.NumItems()) {
			if id.Kind != ckpt.KindInt {
				return nil
			}
			ids = append(ids, id.Int)
		}
	}
	return ids
}

// isOptimizerStateEntries says whether n is the "state" dict of an optimizer's state dict.
func isOptimizerStateEntries(n *ckpt.Node) bool {
	return n != nil && n.Key == "state" && n.Parent() != nil && isOptimizerState(n.Parent())
}
