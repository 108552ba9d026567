package search

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
)

const models = "../../testdata/models"

// fixture opens a fixture and returns what torch recorded of its tensors (expected.json).
func fixture(t *testing.T, name string) (*ckpt.Checkpoint, []expectedTensor) {
	t.Helper()
	raw, err := os.ReadFile(models + "/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []expectedTensor `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(models + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := loader.Open(bytes.NewReader(b), int64(len(b)), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all[name].Tensors) == 0 {
		t.Fatalf("expected.json has no tensors for %s", name)
	}
	return ck, all[name].Tensors
}

type expectedTensor struct {
	Path  string  `json:"path"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

func search(t *testing.T, ck *ckpt.Checkpoint, q string) []string {
	t.Helper()
	pq, err := Parse(q)
	if err != nil {
		t.Fatalf("Parse(%q): %v", q, err)
	}
	res, err := Run(context.Background(), ck.Root, pq, 0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != len(res.Page) {
		t.Fatalf("%q: total %d, page %d", q, res.Total, len(res.Page))
	}
	var out []string
	for _, r := range res.Page {
		if r.Path != r.Node.Path() {
			t.Errorf("%q: result path %q, the node's own %q", q, r.Path, r.Node.Path())
		}
		out = append(out, r.Path)
	}
	return out
}

// TestSearchAgainstTorch runs queries on state_dict.pt and holds the results to the tensors
// torch recorded (expected.json), filtered here by the same rule written independently.
func TestSearchAgainstTorch(t *testing.T) {
	ck, tensors := fixture(t, "state_dict.pt")
	want := func(keep func(e expectedTensor) bool) []string {
		var out []string
		for _, e := range tensors {
			if keep(e) {
				out = append(out, e.Path)
			}
		}
		return out
	}
	shapeIs := func(s []int64, w ...int64) bool { return slices.Equal(s, w) }
	cases := []struct {
		q    string
		keep func(e expectedTensor) bool
	}{
		{"kind:tensor", func(e expectedTensor) bool { return true }},
		{"dtype:bool", func(e expectedTensor) bool { return e.DType == "bool" }},
		{"dtype:BOOL,float16", func(e expectedTensor) bool { return e.DType == "bool" || e.DType == "float16" }},
		{"shape:[16]", func(e expectedTensor) bool { return shapeIs(e.Shape, 16) }},
		{"shape:[*, 16]", func(e expectedTensor) bool { return len(e.Shape) == 2 && e.Shape[1] == 16 }},
		{"shape:[..., 16]", func(e expectedTensor) bool { return len(e.Shape) >= 1 && e.Shape[len(e.Shape)-1] == 16 }},
		{"*.attn.*.weight", func(e expectedTensor) bool { return regexp.MustCompile(`^/.*\.attn\..*\.weight$`).MatchString(e.Path) }},
		{"/ln\\d\\.bias$/", func(e expectedTensor) bool { return regexp.MustCompile(`ln\d\.bias$`).MatchString(e.Path) }},
		{"MLP dtype:float32", func(e expectedTensor) bool {
			return regexp.MustCompile(`(?i)mlp`).MatchString(e.Path) && e.DType == "float32"
		}},
		{"size>1KB", func(e expectedTensor) bool { return numel(e.Shape)*elementSize(e.DType) > 1000 }},
		{"numel<=16 kind:tensor", func(e expectedTensor) bool { return numel(e.Shape) <= 16 }},
	}
	for _, c := range cases {
		got, w := search(t, ck, c.q), want(c.keep)
		if len(w) == 0 {
			t.Errorf("%q: the fixture has no such tensor; the case checks nothing", c.q)
		}
		if !slices.Equal(got, w) {
			t.Errorf("%q:\n got  %v\n want %v", c.q, got, w)
		}
	}
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func elementSize(dtype string) int64 {
	return map[string]int64{"float32": 4, "bool": 1, "float16": 2, "int64": 8}[dtype]
}

// TestSearchPages checks that pages of results follow each other and count the same total.
func TestSearchPages(t *testing.T) {
	ck, tensors := fixture(t, "state_dict.pt")
	q, _ := Parse("kind:tensor")
	var all []string
	for off := 0; ; off += 7 {
		res, err := Run(context.Background(), ck.Root, q, off, 7)
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != len(tensors) {
			t.Fatalf("total %d, want %d", res.Total, len(tensors))
		}
		for _, r := range res.Page {
			all = append(all, r.Path)
		}
		if len(res.Page) < 7 {
			break
		}
	}
	if len(all) != len(tensors) || all[0] != tensors[0].Path || all[len(all)-1] != tensors[len(tensors)-1].Path {
		t.Errorf("pages gave %d results", len(all))
	}
}

// TestSearchPlainData searches a dict of 300 str keys that the loader keeps as values
// (made into nodes when looked at): its keys are found as any others.
func TestSearchPlainData(t *testing.T) {
	var p bytes.Buffer
	p.WriteString("\x80\x02}(")
	for i := range 300 {
		k := "tok" + strconv.Itoa(i)
		p.Write([]byte{'X', byte(len(k)), 0, 0, 0})
		p.WriteString(k)
		p.Write([]byte{'J', byte(i), byte(i >> 8), 0, 0})
	}
	p.WriteString("u.")
	ck, err := loader.Open(bytes.NewReader(p.Bytes()), int64(p.Len()), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !ck.Root.IsLazy() {
		t.Fatal("the dict is made node by node: the test does not reach plain data kept as values")
	}
	got := search(t, ck, "tok12")
	want := []string{"/tok12"}
	for i := 120; i < 130; i++ {
		want = append(want, fmt.Sprintf("/tok%d", i))
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := search(t, ck, "tok2?9 kind:int"); !slices.Equal(got, []string{"/tok209", "/tok219", "/tok229", "/tok239", "/tok249", "/tok259", "/tok269", "/tok279", "/tok289", "/tok299"}) {
		t.Errorf("glob: %v", got)
	}
}

// TestParseErrors checks that a query that cannot be read says why.
func TestParseErrors(t *testing.T) {
	for _, q := range []string{"", "   ", "/a(b/", "re:[", "shape:16", "shape:[a]", "shape:[..., ...]", "size>lots", "size", "dtype:"} {
		if _, err := Parse(q); err == nil {
			t.Errorf("Parse(%q) is no error", q)
		}
	}
}

// BenchmarkSearch200k searches a state dict of 200,000 tensors (48 layers of MoE-shaped
// names), as a search box does on every keystroke: a glob, a dtype and a shape.
func BenchmarkSearch200k(b *testing.B) {
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict"}
	for i := range 200_000 {
		key := fmt.Sprintf("model.layers.%d.experts.%d.w%d.weight", i/4000, (i/3)%1000, i%3)
		root.Children = append(root.Children, &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: key, Seg: key,
			Tensor: &ckpt.Tensor{DType: []string{"float16", "bfloat16"}[i%2], Shape: []int64{1024, int64(64 + i%3)}}})
	}
	ckpt.Link(root)
	for _, q := range []string{"*.experts.7.w1.*", "dtype:bfloat16 shape:[*, 65]", "layers.47"} {
		pq, err := Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(q, func(b *testing.B) {
			for b.Loop() {
				if _, err := Run(context.Background(), root, pq, 0, 200); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestGlobMatch checks the glob matcher on the cases a search box meets.
func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"*.attn.*.weight", "blocks.0.attn.q.weight", true}, {"*.attn.*.weight", "blocks.0.attn.q.weight.x", false},
		{"a*b", "axxb", true}, {"a*b", "axxbc", false}, {"*", "", true}, {"", "", true}, {"", "a", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"abc", "ABC", true}, {"*b*b*", "abab", true}, {"**a", "xa", true},
		{"model.*.w?", "MODEL.layers.3.w1", true}, {"*x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaay", false},
	} {
		if got := globMatch(c.p, c.s); got != c.ok {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.p, c.s, got, c.ok)
		}
	}
}
