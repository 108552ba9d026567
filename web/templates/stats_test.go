package templates

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"

	"github.com/ckptview/ckptview/internal/ckpt"
	tensorpkg "github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
)

// someStats has NaN and infinities, and counts in a few bins.
func someStats() *tensorpkg.Stats {
	counts := make([]int64, tensorpkg.Bins)
	counts[0], counts[20], counts[63] = 3, 700, 12
	edges := make([]float64, tensorpkg.Bins+1)
	for i := range edges {
		edges[i] = -2 + 4*float64(i)/tensorpkg.Bins
	}
	return &tensorpkg.Stats{Numel: 720, Count: 715, Zeros: 4, NaN: 3, PosInf: 2, Min: -2, Max: 2,
		Mean: 0.0123456789, Std: 0.98, L2: 26.2, Histogram: tensorpkg.Histogram{Edges: edges, Counts: counts}}
}

func TestStatsFragment(t *testing.T) {
	tt := &ckpt.Tensor{DType: "complex64"}
	v := views.NewStatsView(tt, someStats(), views.StatsOptions{PageURL: "/c/x/n/" + evil, JSONURL: "/api/checkpoints/x/stats?path=%2Fw"})
	doc, _ := render(t, StatsFragment(v))
	checkCSP(t, doc)
	table := testid(doc, "stats-table")
	for id, want := range map[string]string{
		"stat-count": "715 of 720", "stat-min": "-2", "stat-max": "2", "stat-mean": "0.0123457", "stat-std": "0.98",
		"stat-zeros": "4 (0.6%)", "stat-nan": "3 (0.4%)", "stat-posinf": "2 (0.3%)", "stat-neginf": "0",
	} {
		if got := strings.TrimSpace(table.Find(`[data-testid="` + id + `"]`).Text()); got != want {
			t.Errorf("stats table %s = %q, want %q", id, got, want)
		}
	}
	if got := table.Find(`[data-testid="stat-mean"]`).AttrOr("title", ""); got != "0.0123456789" {
		t.Errorf("mean title = %q, want the full value", got)
	}
	svg := testid(doc, "histogram-svg")
	bins := svg.Find(`g[data-testid="hist-bin"]`)
	if svg.Length() != 1 || bins.Length() != 64 {
		t.Fatalf("histogram: %d svg, %d bins, want 1 and 64", svg.Length(), bins.Length())
	}
	bins.Each(func(i int, b *goquery.Selection) {
		if b.ChildrenFiltered("title").Length() != 1 || b.Find("rect.bar").Length() != 1 || b.Find("rect.hit").Length() != 1 {
			t.Errorf("bin %d: %d titles, %d bars, %d hit areas; want one of each", i, b.ChildrenFiltered("title").Length(), b.Find("rect.bar").Length(), b.Find("rect.hit").Length())
		}
	})
	if got := bins.Eq(20).ChildrenFiltered("title").Text(); got != "[-0.75, -0.6875): 700 values (97.9%)" {
		t.Errorf("title of bin 20 = %q", got)
	}
	if got := bins.Eq(20).Find("rect.bar").AttrOr("height", ""); got != "120" {
		t.Errorf("fullest bar height = %q, want 120", got)
	}
	if testid(doc, "hist-min").Text() != "-2" || testid(doc, "hist-max").Text() != "2" {
		t.Errorf("axis labels %q..%q, want -2..2", testid(doc, "hist-min").Text(), testid(doc, "hist-max").Text())
	}
	if got := testid(doc, "hist-log").AttrOr("href", ""); !strings.HasSuffix(got, "?hist=log#stats") {
		t.Errorf("log link = %q", got)
	}
	if testid(doc, "flag-nan").Length() != 1 || testid(doc, "flag-inf").Length() != 1 || testid(doc, "flag-finite").Length() != 0 {
		t.Errorf("flags = %q, want NaN and inf present", testid(doc, "flags").Text())
	}
	if !strings.Contains(testid(doc, "stats-notes").Text(), "magnitude") {
		t.Errorf("notes = %q, want the complex note", testid(doc, "stats-notes").Text())
	}

	// Log scale: the linear link instead, bars rescaled.
	v = views.NewStatsView(tt, someStats(), views.StatsOptions{Log: true, PageURL: "/c/x/n/w?hist=log"})
	doc, _ = render(t, StatsFragment(v))
	if testid(doc, "hist-linear").AttrOr("href", "") != "/c/x/n/w#stats" || testid(doc, "hist-log").Length() != 0 {
		t.Errorf("log histogram links: linear %q", testid(doc, "hist-linear").AttrOr("href", ""))
	}
}

func float32Tensor(t *testing.T, shape ...int64) (*tensorpkg.Values, []int64) {
	t.Helper()
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	var b []byte
	for i := int64(0); i < n; i++ {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i)-3))
	}
	strides := make([]int64, len(shape))
	s := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = s
		s *= shape[i]
	}
	vals, err := tensorpkg.NewValues(&tensorpkg.View{DType: "float32", Shape: shape, Strides: strides, Data: bytes.NewReader(b), DataSize: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	return vals, shape
}

// A tensor page with its data: download buttons, statistics placeholder or block, the
// preview and a slice table with its form.
func TestNodePageStatsAndValues(t *testing.T) {
	ck, meta := stateDict()
	n, _ := ck.Node("/state_dict/wte.weight")
	n.Tensor.Storage.Data = bytes.NewReader(make([]byte, n.Tensor.Storage.Size)) // decodable: .npy and raw offered
	p := views.NewNodePage(meta, ck, n, 0, 0)
	vals, shape := float32Tensor(t, 3, 40, 20)
	text, _, err := views.NewPreview(vals, shape)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := views.NewSliceTable(vals, shape, views.SliceQuery{Lead: []int64{2}}, func(q views.SliceQuery) string {
		return views.NodeQuery{Slice: &q}.URL(meta.ID, n.Path()) + "#slice"
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Values = &views.TensorValues{Preview: text, Slice: tbl}
	p.StatsURL, p.StatsNowURL = "/c/x/fragment/stats?path=%2Fw", "/c/x/n/w?stats=compute#stats"

	doc, _ := render(t, NodePage(p))
	checkCSP(t, doc)
	ph := testid(doc, "stats-placeholder")
	if ph.AttrOr("hx-get", "") != p.StatsURL || ph.AttrOr("hx-trigger", "") != "load" || !strings.Contains(ph.Text(), "Computing statistics") {
		t.Errorf("statistics placeholder hx-get %q trigger %q text %q", ph.AttrOr("hx-get", ""), ph.AttrOr("hx-trigger", ""), ph.Text())
	}
	for id, format := range map[string]string{"download-json": "json", "download-npy": "npy", "download-raw": "raw"} {
		if href := testid(doc, id).AttrOr("href", ""); !strings.Contains(href, "/download?") || !strings.Contains(href, "format="+format) {
			t.Errorf("%s href = %q", id, href)
		}
	}
	if got := testid(doc, "preview").Text(); got != text || !strings.HasPrefix(got, "[[[  -3.,   -2.,   -1., ...,   14.,   15.,   16.],") {
		t.Errorf("preview = %.80q", got)
	}
	if got := testid(doc, "slice-label").Text(); got != "[2, 0:32, 0:16]" {
		t.Errorf("slice label = %q", got)
	}
	st := testid(doc, "slice-table")
	if st.Find("tbody tr").Length() != 32 || st.Find("thead th").Length() != 17 {
		t.Errorf("slice table %d rows, %d header cells; want 32 and 16 + the corner", st.Find("tbody tr").Length(), st.Find("thead th").Length())
	}
	if got := st.Find("tbody tr").Eq(1).Find("td").Eq(2).Text(); got != "1619" { // [2, 1, 2] = 2*800 + 20 + 2 - 3
		t.Errorf("cell [2, 1, 2] = %q, want 1619", got)
	}
	if got := st.Find("tbody tr").Eq(1).Find("th").Text(); got != "1" {
		t.Errorf("row header = %q, want 1", got)
	}
	form := testid(doc, "slice-form")
	if form.AttrOr("method", "") != "get" || form.Find(`input[name="d0"]`).AttrOr("value", "") != "2" || form.Find(`input[name="d0"]`).AttrOr("max", "") != "2" {
		t.Errorf("slice form: method %q, d0 %q max %q", form.AttrOr("method", ""), form.Find(`input[name="d0"]`).AttrOr("value", ""), form.Find(`input[name="d0"]`).AttrOr("max", ""))
	}
	if got := testid(doc, "slice-next-rows").AttrOr("href", ""); got != views.NodeURL(meta.ID, n.Path())+"?d0=2&row=32#slice" {
		t.Errorf("next rows link = %q", got)
	}

	// Statistics computed: the block instead of the placeholder.
	p.Stats = views.NewStatsView(n.Tensor, someStats(), views.StatsOptions{})
	doc, _ = render(t, NodePage(p))
	if testid(doc, "stats-placeholder").Length() != 0 || testid(doc, "histogram-svg").Find("rect.bar").Length() != 64 {
		t.Errorf("with statistics: placeholder %d, bars %d", testid(doc, "stats-placeholder").Length(), testid(doc, "histogram-svg").Find("rect.bar").Length())
	}
}

// Tree rows show a sparkline only for tensors whose statistics are known.
func TestSparklinesInTree(t *testing.T) {
	ck, meta := stateDict()
	p := views.NewCheckpointPage(meta, ck)
	p.AddStats(func(pointer string) *tensorpkg.Stats {
		if pointer == "/state_dict/wte.weight" {
			return someStats()
		}
		return nil
	})
	p.Stats = views.NewStatsJob(meta.ID, views.StatsJob{State: "running", DoneBytes: 300, TotalBytes: 1200, TensorsDone: 2, TensorsTotal: 9})
	doc, _ := render(t, CheckpointPage(p))
	checkCSP(t, doc)
	sp := testid(doc, "sparkline")
	if sp.Length() != 1 || !strings.Contains(sp.AttrOr("title", ""), "mean 0.0123457") || sp.Find("path").AttrOr("d", "") == "" {
		t.Errorf("sparklines = %d (title %q), want one for wte.weight", sp.Length(), sp.AttrOr("title", ""))
	}
	if !sp.HasClass("spark-warn") {
		t.Errorf("the sparkline of a tensor with NaN is not marked")
	}
	job := testid(doc, "stats-job")
	if job.AttrOr("hx-trigger", "") != "every 1s" || job.AttrOr("hx-get", "") != "/c/"+meta.ID+"/fragment/stats-all" {
		t.Errorf("running job block polls %q every %q", job.AttrOr("hx-get", ""), job.AttrOr("hx-trigger", ""))
	}
	prog := testid(doc, "stats-progress")
	if prog.AttrOr("value", "") != "300" || prog.AttrOr("max", "") != "1200" {
		t.Errorf("progress value %q max %q, want 300 of 1200", prog.AttrOr("value", ""), prog.AttrOr("max", ""))
	}
	if got := testid(doc, "stats-progress-text").Text(); !strings.Contains(got, "2 of 9 tensors") {
		t.Errorf("progress text = %q", got)
	}

	// Done: no polling, links to the exports.
	p.Stats = views.NewStatsJob(meta.ID, views.StatsJob{State: "done", DoneBytes: 1200, TotalBytes: 1200, TensorsDone: 9, TensorsTotal: 9})
	doc, _ = render(t, CheckpointPage(p))
	job = testid(doc, "stats-job")
	if _, polls := job.Attr("hx-trigger"); polls || testid(doc, "stats-export-csv").AttrOr("href", "") != "/api/checkpoints/"+meta.ID+"/stats/export?format=csv" {
		t.Errorf("done job block: polls %v, CSV link %q", polls, testid(doc, "stats-export-csv").AttrOr("href", ""))
	}
	// Idle: a form that works without JavaScript and with htmx.
	p.Stats = views.NewStatsJob(meta.ID, views.StatsJob{State: "idle", TotalBytes: 1200, TensorsTotal: 9})
	doc, _ = render(t, CheckpointPage(p))
	form := testid(doc, "stats-job").Find("form")
	if form.AttrOr("method", "") != "post" || form.AttrOr("action", "") != "/c/"+meta.ID+"/stats-all" || form.AttrOr("hx-post", "") == "" {
		t.Errorf("start form method %q action %q hx-post %q", form.AttrOr("method", ""), form.AttrOr("action", ""), form.AttrOr("hx-post", ""))
	}
}

// A sparse tensor's page names its layout and stored values, not strides or a storage.
func TestNodePageSparse(t *testing.T) {
	vals := &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: "values", Seg: "values",
		Tensor: &ckpt.Tensor{DType: "float32", Shape: []int64{4}, Strides: []int64{1}}}
	n := &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: "s", Seg: "s",
		Tensor: &ckpt.Tensor{DType: "float32", Shape: []int64{3, 4}, Layout: "sparse_coo"}, Children: []*ckpt.Node{vals}}
	ck := &ckpt.Checkpoint{Root: &ckpt.Node{Kind: ckpt.KindDict, Children: []*ckpt.Node{n}}}
	ckpt.Link(ck.Root)
	doc, _ := render(t, NodePage(views.NewNodePage(views.FileMeta{ID: "x", Name: "m.pt"}, ck, n, 0, 0)))
	checkCSP(t, doc)
	if testid(doc, "tensor-layout").Text() != "sparse_coo" || testid(doc, "tensor-nnz").Text() != "4" || testid(doc, "tensor-strides").Length() != 0 {
		t.Errorf("sparse meta: layout %q, stored values %q, strides shown %d", testid(doc, "tensor-layout").Text(), testid(doc, "tensor-nnz").Text(), testid(doc, "tensor-strides").Length())
	}
	if strings.Contains(testid(doc, "tensor-meta").Text(), "object array") {
		t.Errorf("a sparse tensor is described as an object array")
	}
}
