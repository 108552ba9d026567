// Package search finds the nodes of a checkpoint's tree that a query names: by path (a
// substring, a glob such as *.attn.*.weight, or a regular expression), by dtype, by shape
// pattern, by kind, by type and by size. The page's search box and the JSON API share it.
package search

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// Query is a parsed search: every term must match.
type Query struct {
	Text  string
	terms []term
}

// term matches one node; cheap ones (kind, dtype) come first in a query.
type term struct {
	cost  int
	match func(n *ckpt.Node, path, key string) bool
}

// ErrEmpty is a query with no term.
var ErrEmpty = errors.New("the query is empty")

// Syntax is the query syntax in a reader's words, for pages and errors.
const Syntax = `words match the path (any part of it, any case); * and ? make a glob that must match the whole key or path (*.attn.*.weight); /regex/ or re:regex is a regular expression on the path; dtype:float16 (or dtype:float16,bfloat16), shape:[*,1024] (* one dimension, ... any number), kind:tensor, type:Linear, size>1MB, numel>=1000; every term must match`

// Parse reads a query.
func Parse(q string) (*Query, error) {
	out := &Query{Text: q}
	for _, tok := range tokens(q) {
		t, err := parseTerm(tok)
		if err != nil {
			return nil, err
		}
		out.terms = append(out.terms, t)
	}
	if len(out.terms) == 0 {
		return nil, ErrEmpty
	}
	// cheap terms first, so most nodes are turned down before their path is looked at
	for i := 1; i < len(out.terms); i++ {
		for j := i; j > 0 && out.terms[j].cost < out.terms[j-1].cost; j-- {
			out.terms[j], out.terms[j-1] = out.terms[j-1], out.terms[j]
		}
	}
	return out, nil
}

// tokens splits a query at spaces, keeping a [...] shape and a /regex/ whole.
func tokens(q string) []string {
	var out []string
	var b strings.Builder
	depth := 0
	inRegex := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '/' && b.Len() == 0 && !inRegex:
			inRegex = true
		case c == '/' && inRegex && (i+1 == len(q) || q[i+1] == ' '):
			inRegex = false
		case c == '[' && !inRegex:
			depth++
		case c == ']' && !inRegex && depth > 0:
			depth--
		case c == ' ' && depth == 0 && !inRegex:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
			continue
		}
		b.WriteByte(c)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

func parseTerm(tok string) (term, error) {
	lower := strings.ToLower(tok)
	switch {
	case len(tok) >= 2 && tok[0] == '/' && tok[len(tok)-1] == '/':
		return regexTerm(tok[1 : len(tok)-1])
	case strings.HasPrefix(lower, "re:"):
		return regexTerm(tok[3:])
	case strings.HasPrefix(lower, "dtype:"):
		want := map[string]bool{}
		for _, d := range strings.Split(lower[len("dtype:"):], ",") {
			if d != "" {
				want[d] = true
			}
		}
		if len(want) == 0 {
			return term{}, errors.New("dtype: needs a dtype, such as dtype:float16")
		}
		return term{cost: 0, match: func(n *ckpt.Node, _, _ string) bool {
			return n.Tensor != nil && want[strings.ToLower(n.Tensor.DType)]
		}}, nil
	case strings.HasPrefix(lower, "kind:"):
		k := ckpt.Kind(lower[len("kind:"):])
		return term{cost: 0, match: func(n *ckpt.Node, _, _ string) bool { return n.Kind == k }}, nil
	case strings.HasPrefix(lower, "type:"):
		s := lower[len("type:"):]
		return term{cost: 1, match: func(n *ckpt.Node, _, _ string) bool {
			return strings.Contains(strings.ToLower(n.Type), s) || strings.Contains(strings.ToLower(n.Global), s)
		}}, nil
	case strings.HasPrefix(lower, "shape:"):
		return shapeTerm(tok[len("shape:"):])
	case strings.HasPrefix(lower, "size") || strings.HasPrefix(lower, "numel"):
		return sizeTerm(lower)
	case strings.ContainsAny(tok, "*?"):
		return term{cost: 3, match: func(_ *ckpt.Node, path, key string) bool {
			return globMatch(lower, key) || globMatch(lower, strings.TrimPrefix(path, "/"))
		}}, nil
	}
	s := lower
	return term{cost: 2, match: func(_ *ckpt.Node, path, _ string) bool {
		return strings.Contains(strings.ToLower(path), s)
	}}, nil
}

// globMatch says whether s matches the whole of glob pattern p (lower case): * any run of
// characters, ? any one byte, other bytes themselves without regard to ASCII case. It
// backtracks only to the last *, so it takes time linear in len(s) times the stars.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == lowerASCII(s[si])):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func regexTerm(expr string) (term, error) {
	if expr == "" {
		return term{}, errors.New("the regular expression is empty")
	}
	re, err := regexp.Compile("(?i)" + expr)
	if err != nil {
		return term{}, fmt.Errorf("the regular expression %q cannot be read: %v", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	return term{cost: 3, match: func(_ *ckpt.Node, path, _ string) bool { return re.MatchString(path) }}, nil
}

// shapeTerm matches a tensor's shape against [d, d, ...]: a number is that size, * any one
// dimension, ... any number of dimensions (at most once).
func shapeTerm(s string) (term, error) {
	bad := fmt.Errorf("shape: wants a pattern such as [*, 1024] or [..., 768], got %q", s)
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return term{}, bad
	}
	var pat []int64 // -1: any one, -2: any number
	if inner := strings.TrimSpace(s[1 : len(s)-1]); inner != "" {
		for _, p := range strings.Split(inner, ",") {
			switch p = strings.TrimSpace(p); p {
			case "*":
				pat = append(pat, -1)
			case "...":
				pat = append(pat, -2)
			default:
				d, err := strconv.ParseInt(p, 10, 64)
				if err != nil || d < 0 {
					return term{}, bad
				}
				pat = append(pat, d)
			}
		}
	}
	ellipses := 0
	for _, p := range pat {
		if p == -2 {
			ellipses++
		}
	}
	if ellipses > 1 {
		return term{}, bad
	}
	return term{cost: 0, match: func(n *ckpt.Node, _, _ string) bool {
		return n.Tensor != nil && shapeMatches(n.Tensor.Shape, pat)
	}}, nil
}

func shapeMatches(shape, pat []int64) bool {
	for i, p := range pat {
		if p == -2 {
			rest := pat[i+1:]
			if len(shape) < i+len(rest) {
				return false
			}
			return shapeMatches(shape[:i], pat[:i]) && shapeMatches(shape[len(shape)-len(rest):], rest)
		}
	}
	if len(shape) != len(pat) {
		return false
	}
	for i, p := range pat {
		if p >= 0 && shape[i] != p {
			return false
		}
	}
	return true
}

// sizeTerm reads size>1MB, size<=4KiB, numel>=1000 (size is a tensor's bytes).
func sizeTerm(s string) (term, error) {
	field := "size"
	if strings.HasPrefix(s, "numel") {
		field = "numel"
	}
	rest := s[len(field):]
	var op string
	for _, o := range []string{">=", "<=", ">", "<", "="} {
		if strings.HasPrefix(rest, o) {
			op = o
			break
		}
	}
	if op == "" {
		return term{}, fmt.Errorf("%s wants a comparison such as %s>1MB", field, field)
	}
	want, err := parseSize(strings.TrimPrefix(rest, op), field == "size")
	if err != nil {
		return term{}, fmt.Errorf("%s%s: %v", field, op, err)
	}
	return term{cost: 0, match: func(n *ckpt.Node, _, _ string) bool {
		if n.Tensor == nil {
			return false
		}
		v := n.Tensor.NBytes()
		if field == "numel" {
			v = n.Tensor.Numel()
		}
		switch op {
		case ">=":
			return v >= want
		case "<=":
			return v <= want
		case ">":
			return v > want
		case "<":
			return v < want
		}
		return v == want
	}}, nil
}

func parseSize(s string, units bool) (int64, error) {
	mult := int64(1)
	if units {
		for _, u := range []struct {
			suffix string
			mult   int64
		}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"b", 1}} {
			if strings.HasSuffix(s, u.suffix) {
				s, mult = strings.TrimSuffix(s, u.suffix), u.mult
				break
			}
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return int64(f * float64(mult)), nil
}

// Result is one matching node.
type Result struct {
	Node *ckpt.Node
	Path string
}

// Results are one page of the matches of a query and how many there are in all.
type Results struct {
	Total int
	Page  []Result
	// Capped is set when the search stopped at MaxVisit nodes: Total counts those.
	Capped bool
}

// MaxVisit bounds the nodes one search looks at, plain data made into nodes included.
const MaxVisit = 5_000_000

// Run finds the nodes under root that q matches, in tree order, and returns the page
// [offset, offset+limit) of them. Items made on demand (plain data kept as values, a
// large list read from the file) are searched too, made a page at a time.
func Run(ctx context.Context, root *ckpt.Node, q *Query, offset, limit int) (Results, error) {
	w := &walker{ctx: ctx, q: q, offset: offset, limit: limit, root: root}
	err := w.visit(root, root.Path())
	if errors.Is(err, errCapped) {
		w.res.Capped, err = true, nil
	}
	return w.res, err
}

var errCapped = errors.New("search capped")

type walker struct {
	ctx           context.Context
	q             *Query
	offset, limit int
	root          *ckpt.Node
	visited       int
	res           Results
}

// visit searches n and everything under it, depth first.
func (w *walker) visit(n *ckpt.Node, path string) error {
	type frame struct {
		n    *ckpt.Node
		path string
	}
	stack := []frame{{n, path}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if w.visited++; w.visited&0xfff == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		if w.visited > MaxVisit {
			return errCapped
		}
		if f.n != w.root && matches(w.q, f.n, f.path) {
			if w.res.Total >= w.offset && len(w.res.Page) < w.limit {
				w.res.Page = append(w.res.Page, Result{Node: f.n, Path: f.path})
			}
			w.res.Total++
		}
		if f.n.Kind == ckpt.KindRef {
			continue
		}
		if f.n.IsLazy() {
			// made a page at a time, each page searched before the next is made
			const page = 4096
			for from := 0; from < f.n.NumItems(); from += page {
				for _, k := range f.n.Items(from, from+page) {
					if err := w.visit(k, f.path+"/"+ckpt.EscapeSegment(k.Seg)); err != nil {
						return err
					}
				}
			}
			continue
		}
		kids := f.n.Items(0, f.n.NumItems())
		for i := len(kids) - 1; i >= 0; i-- {
			stack = append(stack, frame{kids[i], f.path + "/" + ckpt.EscapeSegment(kids[i].Seg)})
		}
	}
	return nil
}

// matches says whether every term of q matches n.
func matches(q *Query, n *ckpt.Node, path string) bool {
	for _, t := range q.terms {
		if !t.match(n, DisplayPath(path), n.Key) {
			return false
		}
	}
	return true
}

// DisplayPath is a pointer as a reader types it: its segments unescaped.
func DisplayPath(p string) string {
	if !strings.Contains(p, "~") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = ckpt.UnescapeSegment(s)
	}
	return strings.Join(segs, "/")
}
