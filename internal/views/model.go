package views

import (
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// ModelView is an nn.Module saved whole (torch.save(model)) shown as print(model) shows
// it: each submodule's class and its constructor-visible attributes, its parameters and
// buffers (apart: a model's parameters never include its buffers), and parameter counts.
// The pickle's internals (hooks dicts, _non_persistent_buffers_set...) are folded away;
// every module links to its node in the raw tree.
type ModelView struct {
	// Path is the module object's JSON Pointer; Where names it for a reader.
	Path, Where string
	Root        *ModelModule
	// Modules counts the modules, the root included.
	Modules int
	// Params and Buffers count elements; their Text forms are for people.
	Params, Buffers         int64
	ParamsText, BuffersText string
	// Truncated is set when the tree was cut at maxModelRows rows.
	Truncated bool
}

// ModelModule is one module of a ModelView.
type ModelModule struct {
	// Name is its name in its parent's _modules ("fc1", "0"); "" for the root.
	Name string
	// Class is the short class name ("Linear"); FullClass the whole ("torch.nn.modules.linear.Linear").
	Class, FullClass string
	// Attrs are the plain attributes set by its constructor, as Python writes them:
	// "in_features=4, out_features=8".
	Attrs string
	// Eval is set when the module is in eval mode (training is False).
	Eval bool
	// Hooks counts the forward and backward hooks registered on it (they do not run here).
	Hooks int
	// Params and Buffers are its own tensors; ParamCount and BufferCount count elements
	// below it, itself included.
	Params, Buffers         []ModelTensor
	ParamCount, BufferCount int64
	ParamText, BufferText   string
	URL                     string
	Children                []*ModelModule
}

// ModelTensor is a parameter or buffer of a module.
type ModelTensor struct {
	Name, DType, Shape, URL string
	Numel                   int64
	// NotSaved marks a non-persistent buffer (not in the module's state_dict()).
	NotSaved bool
	// Empty is a parameter slot holding None (Linear(bias=False) keeps "bias": None).
	Empty bool
}

// maxModelRows bounds the modules a ModelView shows (a model of thousands of modules keeps
// its counts; the raw tree has the rest).
const maxModelRows = 2000

// IsModule reports whether n is an nn.Module saved whole: an object whose state has
// _modules and _parameters.
func IsModule(n *ckpt.Node) bool {
	if n == nil || n.Kind != ckpt.KindObject {
		return false
	}
	return attr(n, "_modules") != nil && attr(n, "_parameters") != nil
}

// attr is the child of an object named key.
func attr(n *ckpt.Node, key string) *ckpt.Node {
	for _, k := range n.Children {
		if k.Key == key {
			return k
		}
	}
	return nil
}

// FindModels returns the modules saved whole in a checkpoint: the root, or the values of
// the root's entries that are modules ({"model": ..., "ema": ...}), in order.
func FindModels(root *ckpt.Node) []*ckpt.Node {
	if IsModule(root) {
		return []*ckpt.Node{root}
	}
	var out []*ckpt.Node
	if root != nil && (root.Kind == ckpt.KindDict || root.Kind == ckpt.KindObject) {
		for _, k := range root.Children {
			if IsModule(k) {
				out = append(out, k)
			}
		}
	}
	return out
}

// NewModelView builds the view of module object n of checkpoint ck.
func NewModelView(id string, ck *ckpt.Checkpoint, n *ckpt.Node) *ModelView {
	v := &ModelView{Path: n.Path(), Where: "the root"}
	if v.Path != "" {
		v.Where = displayPointer(v.Path)
	}
	rows := 0
	v.Root = buildModule(id, ck, n, "", &rows, map[*ckpt.Node]bool{})
	v.Truncated = rows > maxModelRows
	v.Modules = min(rows, maxModelRows)
	v.Params, v.Buffers = v.Root.ParamCount, v.Root.BufferCount
	v.ParamsText, v.BuffersText = HumanCount(v.Params), HumanCount(v.Buffers)
	return v
}

// moduleInternals are the attributes every nn.Module carries that a reader does not need
// on the model view (they stay in the raw tree).
var moduleInternals = map[string]bool{"training": true, "_parameters": true, "_buffers": true,
	"_non_persistent_buffers_set": true, "_backward_pre_hooks": true, "_backward_hooks": true,
	"_is_full_backward_hook": true, "_forward_hooks": true, "_forward_hooks_with_kwargs": true,
	"_forward_hooks_always_called": true, "_forward_pre_hooks": true, "_forward_pre_hooks_with_kwargs": true,
	"_state_dict_hooks": true, "_state_dict_pre_hooks": true, "_load_state_dict_pre_hooks": true,
	"_load_state_dict_post_hooks": true, "_modules": true, "_version": true}

func buildModule(id string, ck *ckpt.Checkpoint, n *ckpt.Node, name string, rows *int, seen map[*ckpt.Node]bool) *ModelModule {
	*rows++
	m := &ModelModule{Name: name, FullClass: n.Global, URL: NodeURL(id, n.Path())}
	if m.FullClass == "" {
		m.FullClass = n.Type
	}
	m.Class = m.FullClass[strings.LastIndexByte(m.FullClass, '.')+1:]
	if t := attr(n, "training"); t != nil && t.Kind == ckpt.KindBool && !t.Bool {
		m.Eval = true
	}
	seen[n] = true
	notSaved := map[string]bool{}
	if s := attr(n, "_non_persistent_buffers_set"); s != nil {
		for _, k := range s.Children {
			if k.Kind == ckpt.KindStr {
				notSaved[k.Str] = true
			}
		}
	}
	var attrs []string
	for _, k := range n.Children {
		switch {
		case strings.HasSuffix(k.Key, "hooks") && strings.HasPrefix(k.Key, "_"):
			m.Hooks += len(k.Children)
		case moduleInternals[k.Key] || strings.HasPrefix(k.Key, "_"):
		default:
			if s, ok := attrRepr(k); ok {
				attrs = append(attrs, k.Key+"="+s)
			}
		}
	}
	m.Attrs = strings.Join(attrs, ", ")
	tensors := func(dict *ckpt.Node, buffers bool) []ModelTensor {
		var out []ModelTensor
		if dict == nil {
			return nil
		}
		for _, k := range dict.Children {
			if k.Attr {
				continue
			}
			t := ModelTensor{Name: k.Key, URL: NodeURL(id, k.Path()), NotSaved: buffers && notSaved[k.Key]}
			r := k
			if r.Kind == ckpt.KindRef {
				if x, err := ck.Node(r.Target); err == nil {
					r = x
				}
			}
			switch {
			case r.Tensor != nil:
				t.DType, t.Shape, t.Numel = r.Tensor.DType, FormatShape(r.Tensor.Shape), r.Tensor.Numel()
			case r.Kind == ckpt.KindNone:
				t.Empty = true
			default:
				t.DType = string(r.Kind)
			}
			out = append(out, t)
		}
		return out
	}
	m.Params = tensors(attr(n, "_parameters"), false)
	m.Buffers = tensors(attr(n, "_buffers"), true)
	for _, t := range m.Params {
		m.ParamCount += t.Numel
	}
	for _, t := range m.Buffers {
		m.BufferCount += t.Numel
	}
	if mods := attr(n, "_modules"); mods != nil {
		for _, k := range mods.Children {
			if k.Attr {
				continue
			}
			c := k
			if c.Kind == ckpt.KindRef { // a module used twice: counted once, shown where it first is
				continue
			}
			if !IsModule(c) || seen[c] {
				continue
			}
			if *rows >= maxModelRows {
				*rows++
				sub := countModule(c, seen)
				m.ParamCount += sub.ParamCount
				m.BufferCount += sub.BufferCount
				continue
			}
			child := buildModule(id, ck, c, k.Key, rows, seen)
			m.ParamCount += child.ParamCount
			m.BufferCount += child.BufferCount
			m.Children = append(m.Children, child)
		}
	}
	m.ParamText, m.BufferText = HumanCount(m.ParamCount), HumanCount(m.BufferCount)
	return m
}

// attrRepr is a plain attribute as Python writes it: a scalar, a short string, a short
// tuple or list of them; ok is false for anything else (a tensor, a module, a dict).
func attrRepr(n *ckpt.Node) (string, bool) {
	switch n.Kind {
	case ckpt.KindNone, ckpt.KindBool, ckpt.KindInt, ckpt.KindFloat:
		return Summary(n), true
	case ckpt.KindStr:
		if n.Truncated || len(n.Str) > inlineMaxChars {
			return "", false
		}
		return PyRepr(n.Str), true
	}
	return inlineRepr(n)
}

// countModule counts a module's elements without building rows for it.
func countModule(n *ckpt.Node, seen map[*ckpt.Node]bool) ModelModule {
	var m ModelModule
	seen[n] = true
	for _, dict := range []string{"_parameters", "_buffers"} {
		if d := attr(n, dict); d != nil {
			for _, k := range d.Children {
				if k.Tensor != nil {
					if dict == "_parameters" {
						m.ParamCount += k.Tensor.Numel()
					} else {
						m.BufferCount += k.Tensor.Numel()
					}
				}
			}
		}
	}
	if mods := attr(n, "_modules"); mods != nil {
		for _, k := range mods.Children {
			if IsModule(k) && !seen[k] {
				s := countModule(k, seen)
				m.ParamCount += s.ParamCount
				m.BufferCount += s.BufferCount
			}
		}
	}
	return m
}

// Summary is the module's line as print(model) would start it: "Linear(in_features=4,
// out_features=8)".
func (m *ModelModule) Summary() string {
	return m.Class + "(" + m.Attrs + ")"
}
