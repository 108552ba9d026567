package templates

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/a-h/templ"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/views"
)

const evil = `<script>alert(1)</script>`

// render renders c and parses the result, failing the test on any error.
func render(t *testing.T, c templ.Component) (*goquery.Document, string) {
	t.Helper()
	var b bytes.Buffer
	if err := c.Render(context.Background(), &b); err != nil {
		t.Fatalf("Render: %v", err)
	}
	doc, err := goquery.NewDocumentFromReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("parse rendered HTML: %v", err)
	}
	return doc, b.String()
}

// checkCSP fails when the page needs anything the Content-Security-Policy forbids: inline
// scripts, style attributes or elements, event handler attributes.
func checkCSP(t *testing.T, doc *goquery.Document) {
	t.Helper()
	doc.Find("script").Each(func(_ int, s *goquery.Selection) {
		if _, ok := s.Attr("src"); !ok || strings.TrimSpace(s.Text()) != "" {
			t.Errorf("inline <script> found: %s", s.Text())
		}
	})
	if n := doc.Find("style, [style]").Length(); n > 0 {
		t.Errorf("%d inline style elements or attributes found", n)
	}
	doc.Find("*").Each(func(_ int, s *goquery.Selection) {
		for _, a := range s.Nodes[0].Attr {
			if strings.HasPrefix(a.Key, "on") || strings.HasPrefix(a.Key, "hx-on") {
				t.Errorf("event handler attribute %s=%q on <%s>", a.Key, a.Val, goquery.NodeName(s))
			}
		}
	})
}

func testid(doc *goquery.Document, id string) *goquery.Selection {
	return doc.Find(`[data-testid="` + id + `"]`)
}

func tensor(key, dtype string, shape ...int64) *ckpt.Node {
	strides := make([]int64, len(shape))
	n := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = n
		n *= shape[i]
	}
	st := &ckpt.Storage{Key: key, DType: dtype, Location: "cpu", ByteOrder: "little", Size: n * int64(ckpt.DTypeSize(dtype)), Offset: 4096}
	return &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: key, Seg: key,
		Tensor: &ckpt.Tensor{DType: dtype, Shape: shape, Strides: strides, Storage: st}}
}

// build sets paths, storage users and totals the way the loader does.
func build(root *ckpt.Node) *ckpt.Checkpoint {
	ckpt.Link(root)
	ck := &ckpt.Checkpoint{Format: "torch-zip", Root: root, BytesByDType: map[string]int64{}}
	var set func(n *ckpt.Node, path string)
	set = func(n *ckpt.Node, path string) {
		if t := n.Tensor; t != nil && t.Storage != nil {
			ck.Tensors++
			ck.Parameters += t.Numel()
			ck.BytesByDType[t.DType] += t.NBytes()
			if len(t.Storage.Users) == 0 {
				ck.Storages = append(ck.Storages, t.Storage)
			}
			t.Storage.Users = append(t.Storage.Users, path)
		}
		for _, k := range n.Children {
			set(k, path+"/"+ckpt.EscapeSegment(k.Seg))
		}
	}
	set(root, "")
	return ck
}

// stateDict is a small GPT-like checkpoint with tied weights, a hostile key and a payload.
func stateDict() (*ckpt.Checkpoint, views.FileMeta) {
	wte := tensor("wte.weight", "float32", 50, 8)
	head := tensor("lm_head.weight", "float32", 50, 8)
	head.Tensor.Storage = wte.Tensor.Storage
	var entries []*ckpt.Node
	entries = append(entries, wte)
	for i := range 3 {
		p := "h." + strconv.Itoa(i) + ".attn."
		entries = append(entries, tensor(p+"c_attn.weight", "float16", 8, 24), tensor(p+"c_attn.bias", "float16", 24))
	}
	entries = append(entries, head, tensor(evil+".weight", "float32", 2))
	sd := &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict", Key: "state_dict", Seg: "state_dict", Children: entries}
	payload := &ckpt.Node{Kind: ckpt.KindObject, Type: "posix.system", Global: "posix.system", Key: "payload", Seg: "payload", Danger: true,
		Children: []*ckpt.Node{{Kind: ckpt.KindStr, Type: "str", Key: "0", Seg: "0", Str: evil, Len: int64(len(evil))}}}
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Children: []*ckpt.Node{
		sd,
		{Kind: ckpt.KindInt, Type: "int", Key: "epoch", Seg: "epoch", Int: "7"},
		{Kind: ckpt.KindStr, Type: "str", Key: evil, Seg: evil, Str: evil, Len: int64(len(evil))},
		payload,
	}}
	ck := build(root)
	ck.Findings = []ckpt.Finding{
		{Severity: ckpt.SeverityWarning, Global: "sklearn.svm._classes.SVC", Path: ""},
		{Severity: ckpt.SeverityDanger, Global: "posix.system", Path: "/payload", Detail: "posix.system('" + evil + "')", Where: "data.pkl", Offset: 1234},
	}
	ck.Notes = []string{"torch version " + evil}
	return ck, views.FileMeta{ID: strings.Repeat("ab", 32), Name: evil + ".pt", Format: "torch-zip", Size: 123_456_789}
}

func TestHomePage(t *testing.T) {
	doc, _ := render(t, HomePage(views.Home{
		MaxUpload: 20_000_000_000,
		Error:     "loader: not a pickle " + evil,
		Examples:  []views.Example{{ID: "abc", Name: "gpt2-tiny.pt", Size: 2_500_000, Description: "A " + evil}},
	}))
	checkCSP(t, doc)
	form := testid(doc, "upload-form")
	if got := form.AttrOr("action", ""); got != "/upload" {
		t.Errorf("upload form action = %q, want /upload", got)
	}
	if got := form.AttrOr("enctype", ""); got != "multipart/form-data" {
		t.Errorf("upload form enctype = %q, want multipart/form-data", got)
	}
	if got := testid(doc, "file-input").AttrOr("name", ""); got != "file" {
		t.Errorf("file input name = %q, want file", got)
	}
	if got := form.AttrOr("data-max-upload", ""); got != "20000000000" {
		t.Errorf("data-max-upload = %q, want 20000000000", got)
	}
	if got := testid(doc, "home-error").Text(); got != "loader: not a pickle "+evil {
		t.Errorf("home error text = %q", got)
	}
	ex := testid(doc, "example")
	if ex.Length() != 1 || ex.Find("a").AttrOr("href", "") != "/c/abc" || !strings.Contains(ex.Text(), "2.50 MB") {
		t.Errorf("example = %q (href %q), want a link to /c/abc with its size", ex.Text(), ex.Find("a").AttrOr("href", ""))
	}
	if doc.Find(`meta[name="htmx-config"]`).AttrOr("content", "") == "" {
		t.Errorf("no htmx-config meta")
	}
}

func TestCheckpointPageModules(t *testing.T) {
	ck, meta := stateDict()
	doc, raw := render(t, CheckpointPage(views.NewCheckpointPage(meta, ck)))
	checkCSP(t, doc)
	if strings.Contains(raw, evil) {
		t.Errorf("rendered page contains the unescaped string %s", evil)
	}
	summary := testid(doc, "summary")
	for id, want := range map[string]string{
		"file-name":    evil + ".pt",
		"format":       "torch-zip",
		"file-size":    "123 MB",
		"tensor-count": "9",
		"parameters":   "1.4K",
		"sha256":       meta.ID,
	} {
		if got := strings.TrimSpace(summary.Find(`[data-testid="` + id + `"]`).Text()); got != want {
			t.Errorf("summary %s = %q, want %q", id, got, want)
		}
	}
	if got := testid(doc, "dtype-row").Length(); got != 2 {
		t.Errorf("dtype rows = %d, want 2", got)
	}

	// Findings come before the tree, dangers first, in words.
	findings := testid(doc, "findings")
	if findings.Length() != 1 {
		t.Fatalf("findings sections = %d, want 1", findings.Length())
	}
	html, _ := doc.Html()
	if strings.Index(html, `data-testid="findings"`) > strings.Index(html, `data-testid="module-tree"`) {
		t.Errorf("findings come after the tree")
	}
	rows := testid(doc, "finding")
	if rows.Length() != 2 || rows.First().AttrOr("data-severity", "") != "danger" {
		t.Fatalf("finding rows = %d, first %q; want 2 with danger first", rows.Length(), rows.First().AttrOr("data-severity", ""))
	}
	first := strings.Join(strings.Fields(rows.First().Text()), " ")
	if want := "Danger this file calls posix.system('" + evil + "') when unpickled — at /payload"; !strings.Contains(first, want) {
		t.Errorf("first finding = %q, want it to contain %q", first, want)
	}
	if got := rows.First().Find(`[data-testid="finding-path"]`).AttrOr("href", ""); got != "/c/"+meta.ID+"/n/payload" {
		t.Errorf("finding link = %q", got)
	}
	if second := rows.Eq(1).Text(); !strings.Contains(second, "imports") || !strings.Contains(second, "not on the allowlist") {
		t.Errorf("warning finding = %q", second)
	}
	if got := testid(doc, "note").Text(); got != "torch version "+evil {
		t.Errorf("note = %q", got)
	}

	// The module tree groups on dots with numbered blocks in order.
	if testid(doc, "tab-modules").HasClass("tab-active") != true || testid(doc, "tab-raw").AttrOr("href", "") != "/c/"+meta.ID+"?view=raw" {
		t.Errorf("tabs: modules active %v, raw href %q", testid(doc, "tab-modules").HasClass("tab-active"), testid(doc, "tab-raw").AttrOr("href", ""))
	}
	var prefixes []string
	testid(doc, "module-row").Each(func(_ int, s *goquery.Selection) { prefixes = append(prefixes, s.AttrOr("data-prefix", "")) })
	if got, want := strings.Join(prefixes, " "), "wte h h.0 h.0.attn.c_attn h.1 h.1.attn.c_attn h.2 h.2.attn.c_attn lm_head "+evil; got != want {
		t.Errorf("module rows = %q, want %q", got, want)
	}
	h := doc.Find(`[data-testid="module-row"][data-prefix="h"]`)
	if got := strings.TrimSpace(h.Find(`[data-testid="module-params"]`).First().Text()); got != "648" {
		t.Errorf("module h params = %q, want 648", got)
	}
	leaf := doc.Find(`[data-testid="module-leaf"][data-prefix="lm_head.weight"]`)
	if leaf.Find("a").AttrOr("href", "") != "/c/"+meta.ID+"/n/state_dict/lm_head.weight" || !strings.Contains(leaf.Text(), "tied") {
		t.Errorf("lm_head leaf = %q href %q, want a tied tensor linked to its page", leaf.Text(), leaf.Find("a").AttrOr("href", ""))
	}
	evilLeaf := doc.Find(`[data-testid="module-leaf"]`).FilterFunction(func(_ int, s *goquery.Selection) bool {
		return s.AttrOr("data-prefix", "") == evil+".weight"
	})
	if evilLeaf.Length() != 1 {
		t.Errorf("hostile key leaf not found as text")
	}
}

func TestCheckpointPageRaw(t *testing.T) {
	ck, meta := stateDict()
	doc, raw := render(t, CheckpointPage(views.NewCheckpointPage(meta, ck).WithView(views.ViewRaw)))
	checkCSP(t, doc)
	if strings.Contains(raw, evil) {
		t.Errorf("rendered page contains the unescaped string %s", evil)
	}
	if testid(doc, "module-tree").Length() != 0 || !testid(doc, "tab-raw").HasClass("tab-active") {
		t.Errorf("raw view shows the module tree or the wrong tab")
	}
	rows := testid(doc, "tree").Children()
	if rows.Length() != 4 {
		t.Fatalf("root rows = %d, want 4", rows.Length())
	}
	sd := rows.First()
	details := sd.Find("details").First()
	if got, want := details.AttrOr("hx-get", ""), "/c/"+meta.ID+"/fragment/children?path=%2Fstate_dict"; got != want {
		t.Errorf("state_dict row hx-get = %q, want %q", got, want)
	}
	if details.AttrOr("hx-trigger", "") != "toggle once" || details.Find(".kids").Length() != 1 {
		t.Errorf("state_dict row does not load its children into .kids on toggle")
	}
	evilRow := rows.Eq(2)
	if got := evilRow.Find(`[data-testid="row-key"]`).Text(); got != evil {
		t.Errorf("hostile key row key = %q, want the literal text", got)
	}
	if got := evilRow.Find(`[data-testid="row-summary"]`).Text(); got != views.PyRepr(evil) {
		t.Errorf("hostile value summary = %q", got)
	}
	if got := evilRow.Find(`[data-testid="row-key"]`).AttrOr("href", ""); got != "/c/"+meta.ID+"/n/%3Cscript%3Ealert%281%29%3C~1script%3E" {
		t.Errorf("hostile key link = %q", got)
	}
	if rows.Eq(3).Find(`[data-testid="row-danger"]`).Length() != 1 {
		t.Errorf("payload row has no danger badge")
	}
}

func TestChildrenFragment(t *testing.T) {
	var kids []*ckpt.Node
	for i := range 450 {
		kids = append(kids, &ckpt.Node{Kind: ckpt.KindInt, Type: "int", Key: strconv.Itoa(i), Seg: strconv.Itoa(i), Int: strconv.Itoa(i * i)})
	}
	root := &ckpt.Node{Kind: ckpt.KindList, Type: "list", Children: kids}
	ck := build(root)
	meta := views.FileMeta{ID: "id", Name: "big.pkl"}
	doc, _ := render(t, ChildrenFragment(views.NewChildren(meta, ck, root, 200, 0)))
	checkCSP(t, doc)
	rows := testid(doc, "tree-row")
	if rows.Length() != 200 || rows.First().AttrOr("data-path", "") != "/200" {
		t.Errorf("fragment rows = %d starting at %q, want 200 starting at /200", rows.Length(), rows.First().AttrOr("data-path", ""))
	}
	more := testid(doc, "show-more")
	if got := strings.TrimSpace(more.Text()); got != "show more (50 left)" {
		t.Errorf("show more = %q", got)
	}
	if got := more.AttrOr("hx-get", ""); got != "/c/id/fragment/children?offset=400&path=" {
		t.Errorf("show more hx-get = %q", got)
	}
	if got := more.AttrOr("href", ""); got != "/c/id/n/?offset=400" {
		t.Errorf("show more href = %q", got)
	}
	doc, _ = render(t, ChildrenFragment(views.NewChildren(meta, ck, root, 400, 0)))
	if testid(doc, "show-more").Length() != 0 || testid(doc, "tree-row").Length() != 50 {
		t.Errorf("last page: %d rows, show more %d", testid(doc, "tree-row").Length(), testid(doc, "show-more").Length())
	}
}

func TestNodePageTensor(t *testing.T) {
	ck, meta := stateDict()
	n, err := ck.Node("/state_dict/lm_head.weight")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := render(t, NodePage(views.NewNodePage(meta, ck, n, 0, 0)))
	checkCSP(t, doc)
	for id, want := range map[string]string{
		"tensor-dtype":          "float32",
		"tensor-shape":          "[50, 8]",
		"tensor-strides":        "[8, 1]",
		"tensor-storage-offset": "0",
		"tensor-numel":          "400",
		"tensor-layout":         "C-contiguous (row-major)",
		"storage-key":           "wte.weight",
		"storage-location":      "cpu",
		"storage-byte-order":    "little",
		"node-kind":             "tensor",
		"node-path":             "/state_dict/lm_head.weight",
	} {
		if got := strings.TrimSpace(testid(doc, id).Text()); got != want {
			t.Errorf("node page %s = %q, want %q", id, got, want)
		}
	}
	var crumbs []string
	testid(doc, "crumb").Each(func(_ int, s *goquery.Selection) {
		crumbs = append(crumbs, s.Text()+"→"+s.Find("a").AttrOr("href", ""))
	})
	if got, want := strings.Join(crumbs, " | "), evil+".pt→/c/"+meta.ID+" | state_dict→/c/"+meta.ID+"/n/state_dict | lm_head.weight→"; got != want {
		t.Errorf("crumbs = %q, want %q", got, want)
	}
	if got := testid(doc, "shared-with").Find("a").AttrOr("href", ""); got != "/c/"+meta.ID+"/n/state_dict/wte.weight" {
		t.Errorf("shared-with link = %q", got)
	}
	if got := testid(doc, "json-link").AttrOr("href", ""); got != "/api/checkpoints/"+meta.ID+"/node?path=%2Fstate_dict%2Flm_head.weight" {
		t.Errorf("JSON link = %q", got)
	}
	if got := testid(doc, "copy-link").AttrOr("data-copy", ""); got != "/c/"+meta.ID+"/n/state_dict/lm_head.weight" {
		t.Errorf("copy link = %q", got)
	}
}

func TestNodePageValues(t *testing.T) {
	ck, meta := stateDict()
	// A str with a hostile value: shown whole, as text.
	n, _ := ck.Node("/" + ckpt.EscapeSegment(evil))
	doc, raw := render(t, NodePage(views.NewNodePage(meta, ck, n, 0, 0)))
	checkCSP(t, doc)
	if strings.Contains(raw, evil) {
		t.Errorf("str node page contains the unescaped string")
	}
	if got := testid(doc, "str-value").Text(); got != evil {
		t.Errorf("str value = %q, want %q", got, evil)
	}
	if got := testid(doc, "node-key").Text(); got != evil {
		t.Errorf("node key = %q", got)
	}

	// The payload: class path, danger badge, its finding, its arguments.
	n, _ = ck.Node("/payload")
	doc, _ = render(t, NodePage(views.NewNodePage(meta, ck, n, 0, 0)))
	if testid(doc, "danger-badge").Length() != 1 || testid(doc, "node-global").Text() != "posix.system" {
		t.Errorf("payload page: badge %d, global %q", testid(doc, "danger-badge").Length(), testid(doc, "node-global").Text())
	}
	if testid(doc, "finding").Length() != 1 || testid(doc, "tree-row").Length() != 1 {
		t.Errorf("payload page: %d findings, %d rows; want 1, 1", testid(doc, "finding").Length(), testid(doc, "tree-row").Length())
	}

	// Bytes: a hex dump.
	b := &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytes", Key: "raw", Seg: "raw", Bytes: []byte("<b>\x00\x01"), Len: 5}
	build(&ckpt.Node{Kind: ckpt.KindDict, Children: []*ckpt.Node{b}})
	doc, _ = render(t, NodePage(views.NewNodePage(meta, ck, b, 0, 0)))
	if got := testid(doc, "hex-dump").Text(); !strings.Contains(got, "3c 62 3e 00 01") || !strings.Contains(got, "<b>..") {
		t.Errorf("hex dump = %q", got)
	}

	// A scalar.
	i, _ := ck.Node("/epoch")
	doc, _ = render(t, NodePage(views.NewNodePage(meta, ck, i, 0, 0)))
	if got := testid(doc, "scalar-value").Text(); got != "7" {
		t.Errorf("scalar value = %q", got)
	}

	// A ref.
	ref := &ckpt.Node{Kind: ckpt.KindRef, Key: "again", Seg: "again", Target: "/state_dict"}
	build(&ckpt.Node{Kind: ckpt.KindDict, Children: []*ckpt.Node{ref}})
	doc, _ = render(t, NodePage(views.NewNodePage(meta, ck, ref, 0, 0)))
	if got := testid(doc, "ref-target").AttrOr("href", ""); got != "/c/"+meta.ID+"/n/state_dict" {
		t.Errorf("ref target link = %q", got)
	}
}

func TestErrorPage(t *testing.T) {
	doc, raw := render(t, ErrorPage(views.ErrorPage{
		Status:  422,
		Title:   "This file cannot be read",
		Message: "loader: truncated pickle " + evil,
		Findings: []ckpt.Finding{
			{Severity: ckpt.SeverityDanger, Global: "builtins.exec", Path: "/x", Detail: "builtins.exec('" + evil + "')"},
		},
	}))
	checkCSP(t, doc)
	if strings.Contains(raw, evil) {
		t.Errorf("error page contains the unescaped string")
	}
	if got := testid(doc, "error-status").Text(); got != "422" {
		t.Errorf("status = %q", got)
	}
	if got := testid(doc, "error-message").Text(); got != "loader: truncated pickle "+evil {
		t.Errorf("message = %q", got)
	}
	f := testid(doc, "finding")
	if f.Length() != 1 || testid(doc, "finding-call").Text() != "builtins.exec('"+evil+"')" || f.Find("a").Length() != 0 {
		t.Errorf("finding = %q (links %d), want the call as text and no links", f.Text(), f.Find("a").Length())
	}
}

// TestFindingArguments renders the findings of malicious_torch.pt, which generate.py made to
// call posix.system('touch /tmp/ckptview-pwned'): the call's argument is shown from the
// finding's data, with its kind, one element per argument.
func TestFindingArguments(t *testing.T) {
	f, err := os.Open("../../testdata/models/malicious_torch.pt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	meta := views.FileMeta{ID: "id", Name: "malicious_torch.pt", Size: st.Size(), Format: ck.Format}
	doc, _ := render(t, CheckpointPage(views.NewCheckpointPage(meta, ck)))
	args := doc.Find(`[data-testid="finding-arg"]`)
	if args.Length() != 1 {
		t.Fatalf("%d arguments shown, want 1", args.Length())
	}
	if kind, _ := args.Attr("data-kind"); kind != "str" || args.Find("code").Text() != "'touch /tmp/ckptview-pwned'" {
		t.Errorf("argument %q of kind %q", args.Find("code").Text(), kind)
	}
}
