// Package views turns an opened checkpoint into view models for the HTML pages: rows,
// breadcrumbs, module trees, sizes and one-line summaries. Everything here is a pure function
// of a ckpt.Checkpoint, so the templates stay markup-only and the formatting is unit-tested.
package views

import (
	"fmt"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// summaryStrChars is how many characters of a str a one-line summary shows.
const summaryStrChars = 80

// summaryBytes is how many bytes of a bytes value a one-line summary shows in hex.
const summaryBytes = 16

// Summary says what a node is in one line: "float32[768, 3072]", "'hello'",
// "OrderedDict (317 items)", "sklearn.svm._classes.SVC", "bytes (256 bytes): 00 01 02 …",
// "ref → /a/b". Values from the file are returned as text; the templates escape them.
func Summary(n *ckpt.Node) string {
	if n == nil {
		return ""
	}
	switch n.Kind {
	case ckpt.KindNone:
		return "None"
	case ckpt.KindBool:
		if n.Bool {
			return "True"
		}
		return "False"
	case ckpt.KindInt:
		return n.Int
	case ckpt.KindFloat:
		return PyFloat(n.Float)
	case ckpt.KindComplex:
		return pyComplex(n.Complex)
	case ckpt.KindStr:
		s := n.Str
		cut := n.Truncated
		if utf8.RuneCountInString(s) > summaryStrChars {
			s = string([]rune(s)[:summaryStrChars])
			cut = true
		}
		r := PyRepr(s)
		if cut {
			r += " … (" + plural(strLen(n), "char") + ")"
		}
		return r
	case ckpt.KindBytes:
		return bytesSummary(n)
	case ckpt.KindList, ckpt.KindTuple, ckpt.KindDict, ckpt.KindSet, ckpt.KindFrozenSet:
		if s, ok := inlineRepr(n); ok {
			return s
		}
		return ShortType(typeOr(n)) + " (" + plural(int64(n.NumItems()), "item") + ")"
	case ckpt.KindObject, ckpt.KindGlobal:
		if n.Global != "" {
			return n.Global
		}
		return n.Type
	case ckpt.KindTensor, ckpt.KindNDArray:
		if n.Tensor == nil {
			return typeOr(n)
		}
		return n.Tensor.DType + FormatShape(n.Tensor.Shape)
	case ckpt.KindRef:
		return "ref → " + displayPointer(n.Target)
	}
	return typeOr(n)
}

// inlineMax bounds a container shown inline as Python prints it: items and characters.
const (
	inlineMaxItems = 8
	inlineMaxChars = 48
)

// inlineRepr is a short list or tuple of plain scalars as Python prints it, "(3, 3)",
// "[0.9, 0.999]", "('cpu',)": what a reader wants to see of a kernel size or a pair of
// betas rather than "tuple (2 items)".
func inlineRepr(n *ckpt.Node) (string, bool) {
	if (n.Kind != ckpt.KindList && n.Kind != ckpt.KindTuple) || n.IsLazy() || len(n.Children) > inlineMaxItems ||
		(n.Type != "list" && n.Type != "tuple") {
		return "", false
	}
	parts := make([]string, 0, len(n.Children))
	for _, k := range n.Children {
		switch k.Kind {
		case ckpt.KindNone, ckpt.KindBool, ckpt.KindInt, ckpt.KindFloat:
			parts = append(parts, Summary(k))
		case ckpt.KindStr:
			if k.Truncated || utf8.RuneCountInString(k.Str) > inlineMaxChars {
				return "", false
			}
			parts = append(parts, PyRepr(k.Str))
		default:
			return "", false
		}
	}
	s := strings.Join(parts, ", ")
	if n.Kind == ckpt.KindTuple {
		if len(parts) == 1 {
			s += ","
		}
		s = "(" + s + ")"
	} else {
		s = "[" + s + "]"
	}
	if utf8.RuneCountInString(s) > inlineMaxChars {
		return "", false
	}
	return s, true
}

// displayPointer shows a JSON Pointer to a reader: the root is "/".
func displayPointer(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func strLen(n *ckpt.Node) int64 {
	if n.Len > 0 {
		return n.Len
	}
	return int64(utf8.RuneCountInString(n.Str))
}

func bytesLen(n *ckpt.Node) int64 {
	if n.Len > 0 {
		return n.Len
	}
	return int64(len(n.Bytes))
}

func bytesSummary(n *ckpt.Node) string {
	name := ShortType(n.Type)
	if name == "" {
		name = "bytes"
	}
	size := bytesLen(n)
	s := name + " (" + plural(size, "byte") + ")"
	if len(n.Bytes) == 0 {
		return s
	}
	b := n.Bytes
	if len(b) > summaryBytes {
		b = b[:summaryBytes]
	}
	var sb strings.Builder
	sb.WriteString(s)
	sb.WriteString(":")
	for _, c := range b {
		fmt.Fprintf(&sb, " %02x", c)
	}
	if int64(len(b)) < size {
		sb.WriteString(" …")
	}
	return sb.String()
}

func typeOr(n *ckpt.Node) string {
	if n.Type != "" {
		return n.Type
	}
	return string(n.Kind)
}

// ShortType drops the module from a container's type name: "collections.OrderedDict"
// becomes "OrderedDict", and "collections.defaultdict(builtins.list)" (a defaultdict with
// its default factory) "defaultdict(list)". Builtin names are unchanged.
func ShortType(t string) string {
	if i := strings.IndexByte(t, '('); i > 0 && strings.HasSuffix(t, ")") {
		return ShortType(t[:i]) + "(" + ShortType(t[i+1:len(t)-1]) + ")"
	}
	if i := strings.LastIndexByte(t, '.'); i >= 0 && i < len(t)-1 {
		return t[i+1:]
	}
	return t
}

// childrenOf is what a reader sees inside a node: a numpy object array's items, or the
// node's children (a large list's first items only: the rest is read page by page).
func childrenOf(n *ckpt.Node) []*ckpt.Node {
	if n.IsLazy() {
		return n.Items(0, MaxLimit)
	}
	if n.Tensor != nil && n.Tensor.Objects != nil {
		return n.Tensor.Objects
	}
	return n.Children
}

// isContainer reports whether a node has children a reader can open.
func isContainer(n *ckpt.Node) bool {
	switch n.Kind {
	case ckpt.KindList, ckpt.KindTuple, ckpt.KindDict, ckpt.KindSet, ckpt.KindFrozenSet,
		ckpt.KindObject, ckpt.KindGlobal:
		return true
	case ckpt.KindTensor, ckpt.KindNDArray:
		// an object array's items, or a quantized tensor's per-channel scales
		return n.Tensor != nil && n.Tensor.Objects != nil || len(n.Children) > 0
	}
	return false
}

// Plural counts things in words: "1 tensor", "3 tensors", "2 entries", "1,000 items".
func Plural(n int, word string) string { return plural(int64(n), word) }

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return Thousands(n) + " " + word[:len(word)-1] + "ies"
	}
	return Thousands(n) + " " + word + "s"
}

// PyRepr quotes a string the way Python's repr does, so a reader sees exactly which
// characters a key or value holds: 'hello', "it's", 'tab\there'.
func PyRepr(s string) string { return pyrepr.Quote(s) }

// PyFloat formats a float like Python's repr: 1.0, 0.1, 1e-05, 1e+16, inf, nan.
func PyFloat(f float64) string { return pyrepr.Float(f) }

func pyComplex(c complex128) string { return pyrepr.Complex(c) }

// FormatShape writes a shape or strides list the way torch prints sizes: [768, 3072]; a
// scalar is [].
func FormatShape(dims []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range dims {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// HumanBytes formats a size in bytes with SI units and three significant digits, the way
// model hubs show file sizes: 512 B, 1.23 kB, 548 MB, 13.5 GB.
func HumanBytes(n int64) string {
	if n < 0 {
		return "-" + HumanBytes(-n)
	}
	if n < 1000 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	f := float64(n)
	u := -1
	for f >= 999.5 && u < len(units)-1 {
		f /= 1000
		u++
	}
	return sig3(f) + " " + units[u]
}

// sig3 formats a value in [1, 1000) with three significant digits.
func sig3(f float64) string {
	switch {
	case f >= 99.95:
		return strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 9.995:
		return strconv.FormatFloat(f, 'f', 1, 64)
	default:
		return strconv.FormatFloat(f, 'f', 2, 64)
	}
}

// HumanCount formats a parameter count the way papers and model cards do: 768, 7.2K,
// 124.4M, 6.7B.
func HumanCount(n int64) string {
	if n < 0 {
		return "-" + HumanCount(-n)
	}
	if n < 1000 {
		return strconv.FormatInt(n, 10)
	}
	units := []string{"K", "M", "B", "T", "P", "E"}
	f := float64(n)
	u := -1
	for f >= 999.95 && u < len(units)-1 {
		f /= 1000
		u++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + units[u]
}

// Thousands writes an integer with comma separators: 124,439,808.
func Thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	lead := len(s) % 3
	if lead == 0 {
		lead = 3
	}
	b.WriteString(s[:lead])
	for i := lead; i < len(s); i += 3 {
		b.WriteByte(',')
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// Percent formats part/total as a percentage with one decimal, "" when total is 0.
func Percent(part, total int64) string {
	if total <= 0 {
		return ""
	}
	p := float64(part) * 100 / float64(total)
	if p > 0 && p < 0.1 {
		return "<0.1%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// structNameFields is how many fields a structured dtype's name shows.
const structNameFields = 3

// FieldsText lists a structured dtype's fields beside numpy's name for it ("void448"), for
// people: "{left_child: int64, right_child: int64, feature: int64, … 7 fields}"; "" for any
// other dtype.
func FieldsText(t *ckpt.Tensor) string {
	if len(t.Fields) == 0 {
		return ""
	}
	parts := make([]string, 0, structNameFields+1)
	for i, f := range t.Fields {
		if i == structNameFields {
			parts = append(parts, "… "+plural(int64(len(t.Fields)), "field"))
			break
		}
		parts = append(parts, f.Name+": "+f.DType+FormatSubShape(f.Shape))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// FormatSubShape is a field's own shape, "" for a scalar field.
func FormatSubShape(shape []int64) string {
	if len(shape) == 0 {
		return ""
	}
	return FormatShape(shape)
}

// longIdent is how long an identifier grows before NameParts also breaks it after its
// underscores: about the narrowest box a dotted name is shown in at 390 px (a fact of the
// node page), in monospace characters.
const longIdent = 20

// NameParts cuts a dotted name ("sklearn.ensemble._forest.RandomForestClassifier") or a
// call written with one ("posix.system('x')") into the pieces a line may break between:
// after each dot between two identifiers, and after the underscores of an identifier
// longer than longIdent ("_non_persistent_buffers_set"). The pieces joined are s; the
// templates write a <wbr> between them, so a narrow screen wraps the name at its dots
// rather than inside a word. Dots of numbers ("0.5") and of "..." are no break points.
func NameParts(s string) []string {
	rs := []rune(s)
	var parts []string
	start := 0
	for i, r := range rs {
		if i == 0 || i == len(rs)-1 {
			continue
		}
		prev, next := rs[i-1], rs[i+1]
		cut := false
		switch r {
		case '.':
			cut = identRune(prev) && (next == '_' || unicode.IsLetter(next))
		case '_':
			cut = prev != '_' && identRune(prev) && next != '_' && identRune(next) && identRunLen(rs, i) > longIdent
		}
		if cut {
			parts = append(parts, string(rs[start:i+1]))
			start = i + 1
		}
	}
	if start < len(rs) {
		parts = append(parts, string(rs[start:]))
	}
	return parts
}

func identRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// identRunLen is the length of the identifier rs[i] is part of.
func identRunLen(rs []rune, i int) int {
	lo, hi := i, i
	for lo > 0 && identRune(rs[lo-1]) {
		lo--
	}
	for hi < len(rs)-1 && identRune(rs[hi+1]) {
		hi++
	}
	return hi - lo + 1
}
