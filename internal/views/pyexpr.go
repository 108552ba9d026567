package views

import (
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// PythonExpr is the Python expression that reaches n from the object the file loads as
// (ckpt = torch.load(f), model = joblib.load(f)...): ckpt["model_state_dict"]["fc.weight"],
// model.steps[0][1].coef_. It is "" where Python has no such expression: a set's item, a
// call's arguments, a tensor's parts, a format read with no Python object behind it.
func PythonExpr(ck *ckpt.Checkpoint, n *ckpt.Node) string {
	root := rootName(ck)
	if root == "" {
		return ""
	}
	var parts []string
	for m := n; m.Parent() != nil; m = m.Parent() {
		p := m.Parent()
		var step string
		switch {
		case p.Kind == ckpt.KindList || p.Kind == ckpt.KindTuple:
			step = "[" + m.Seg + "]"
		case p.Kind == ckpt.KindDict && !m.Attr:
			switch k := m.DictKey; {
			case k == nil:
				step = "[" + PyRepr(m.Key) + "]"
			case k.Kind == ckpt.KindInt || k.Kind == ckpt.KindBool || k.Kind == ckpt.KindNone || k.Kind == ckpt.KindFloat:
				step = "[" + Summary(k) + "]"
			default:
				if s, ok := inlineRepr(k); ok && k.Kind == ckpt.KindTuple {
					step = "[" + s + "]"
				} else {
					return ""
				}
			}
		case (p.Kind == ckpt.KindObject || p.Kind == ckpt.KindDict) && isIdentifier(m.Seg) && !strings.HasPrefix(m.Seg, "__"):
			step = "." + m.Seg // an attribute from the object's state
		default:
			return ""
		}
		parts = append(parts, step)
	}
	var b strings.Builder
	b.WriteString(root)
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteString(parts[i])
	}
	return b.String()
}

// rootName is the name the loaded object gets in the usual Python line for the format.
func rootName(ck *ckpt.Checkpoint) string {
	if ck == nil || ck.Root == nil {
		return ""
	}
	switch f := ck.Format; {
	case strings.HasPrefix(f, "torch"):
		return "ckpt" // ckpt = torch.load(f)
	case f == "joblib":
		return "model" // model = joblib.load(f)
	case f == "pickle":
		if ck.Root.Kind == ckpt.KindObject {
			return "model"
		}
		return "obj" // obj = pickle.load(f)
	case f == "npz":
		return "arrays" // arrays = numpy.load(f)
	case f == "safetensors" || strings.HasPrefix(f, "sharded"):
		return "tensors" // tensors = safetensors.torch.load_file(f)
	}
	return ""
}

// isIdentifier says whether s is a Python identifier in ASCII (an attribute name).
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}
