package templates

import (
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/views"
)

// A class name is written with a <wbr> after each dot, so a narrow screen wraps it there;
// its text is unchanged, and what comes from the file stays escaped.
func TestDottedNames(t *testing.T) {
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Children: []*ckpt.Node{
		{Kind: ckpt.KindObject, Type: "sklearn.ensemble._forest.RandomForestClassifier", Key: "clf", Seg: "clf",
			Global: "sklearn.ensemble._forest.RandomForestClassifier"},
		{Kind: ckpt.KindObject, Type: "x.<b>evil</b>", Key: "evil", Seg: "evil", Global: "x.<b>evil</b>"},
	}}
	ck := build(root)
	meta := views.FileMeta{ID: "abc", Name: "m.pkl"}
	n, _ := ck.Node("/clf")
	doc, raw := render(t, NodePage(views.NewNodePage(meta, ck, n, 0, 0)))
	checkCSP(t, doc)
	const name = "sklearn.ensemble._forest.RandomForestClassifier"
	for _, id := range []string{"node-type", "node-global", "node-summary"} {
		s := testid(doc, id)
		if s.Text() != name || s.Find("wbr").Length() != 3 {
			t.Errorf("%s = %q with %d <wbr>, want %q with one after each of its 3 dots", id, s.Text(), s.Find("wbr").Length(), name)
		}
	}
	if !strings.Contains(raw, "sklearn.<wbr>ensemble.<wbr>_forest.<wbr>RandomForestClassifier") {
		t.Errorf("the name is not written with a <wbr> after each dot")
	}
	if !testid(doc, "node-type").Parent().HasClass("fact-wide") {
		t.Errorf("a long type name's fact is not two columns wide")
	}

	n, _ = ck.Node("/evil")
	doc, raw = render(t, NodePage(views.NewNodePage(meta, ck, n, 0, 0)))
	if strings.Contains(raw, "<b>evil") || testid(doc, "node-global").Text() != "x.<b>evil</b>" {
		t.Errorf("a class name from the file is not escaped: %q", testid(doc, "node-global").Text())
	}
}

// The preview is cut into rows and elements for a narrow screen's wrapping; its text is
// numpy's, unchanged.
func TestPreviewSpans(t *testing.T) {
	vals, shape := float32Tensor(t, 3, 4, 40) // rows of 40 elements: numpy wraps them
	text, _, err := views.NewPreview(vals, shape)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := render(t, valuesSection(&views.TensorValues{Preview: text}, &views.TensorMeta{}, "/c/x/n/w", false))
	p := testid(doc, "preview")
	if p.Text() != text {
		t.Errorf("preview text = %.80q, want NewPreview's", p.Text())
	}
	rows, wraps := 0, 0 // a wrapped line is indented by the 3 dimensions, a row's first by less
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, "   "):
			wraps++
		case l != "":
			rows++
		}
	}
	if got := p.Find(".pv-row").Length(); got != rows || rows < 10 {
		t.Errorf("%d rows, want %d", got, rows)
	}
	if p.Find(".pv-el").Length() == 0 || p.Find(".pv-wrap").Length() != wraps || wraps == 0 {
		t.Errorf("%d elements, %d wraps", p.Find(".pv-el").Length(), p.Find(".pv-wrap").Length())
	}
	// a scalar is plain text
	doc, _ = render(t, valuesSection(&views.TensorValues{Preview: "1.5"}, &views.TensorMeta{}, "/c/x/n/w", false))
	if p := testid(doc, "preview"); p.Text() != "1.5" || p.Children().Length() != 0 {
		t.Errorf("scalar preview = %q with %d children", p.Text(), p.Children().Length())
	}
}
