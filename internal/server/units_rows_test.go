package server

import (
	"encoding/csv"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
)

// TestStatsUnitsFromRowsMatchNodes holds the statistics units of a state dict kept as rows
// (a unit per row, no path held) to those of the same dict with its entries made into
// nodes, which go through the tie detection: the same keys, in the same order, each with
// its tensors and its size, a unit of rows for each row and one of nodes for each entry
// made at open (a tied weight, a view); and every row's path looks up the row's own key.
func TestStatsUnitsFromRowsMatchNodes(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(fixturesDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	compared, rowUnits, madeUnits := 0, 0, 0
	for _, path := range names {
		name := filepath.Base(path)
		if !strings.HasSuffix(name, ".pt") && !strings.HasSuffix(name, ".pth") && !strings.HasSuffix(name, ".bin") {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil || ck.Root == nil || !ck.Root.LazyTensors() {
			f.Close()
			continue
		}
		nodes := *ck.Root // the same dict with its entries made into nodes
		nodes.SetLazy(nil)
		nodes.Children = ck.Root.All()
		for _, k := range nodes.Children {
			k.SetParent(ck.Root) // their paths stay the dict's
		}
		got, want := statsUnits(ck), statsUnits(&ckpt.Checkpoint{Root: &nodes})
		if len(got) != len(want) || len(got) == 0 {
			t.Errorf("%s: %d units from rows, %d from nodes", name, len(got), len(want))
		}
		o := &opened{id: "x", ck: ck}
		items := ck.Root.Lazy().(ckpt.TensorItems)
		for i := range min(len(got), len(want)) {
			g, w := &got[i], &want[i]
			// a row is a unit of its own; an entry made at open (a tied weight, a view) is
			// a node and shares a unit as nodes do
			at, _ := items.Lookup(ckpt.UnescapeSegment(strings.TrimPrefix(w.key(), "/")))
			m, _ := items.NextMade(at)
			if isRow := m != at; isRow {
				rowUnits++
			} else {
				madeUnits++
			}
			if (g.rows != nil) != (m != at) || g.key() != w.key() || g.count() != w.count() || g.nbytes != w.nbytes {
				t.Errorf("%s: unit %d from rows %q (%d tensors, %d bytes, row %v), from nodes %q (%d, %d)",
					name, i, g.key(), g.count(), g.nbytes, g.rows != nil, w.key(), w.count(), w.nbytes)
				break
			}
			if k := o.statsKey(g.key()); k.path != g.key() {
				t.Errorf("%s: a row's statistics key is %q, want its own path %q", name, k.path, g.key())
			}
		}
		compared++
		f.Close()
	}
	if compared == 0 || rowUnits == 0 || madeUnits == 0 {
		t.Fatalf("%d fixtures keep a state dict as rows, %d units of rows, %d of entries made at open: the comparison checks little", compared, rowUnits, madeUnits)
	}
	t.Logf("%d state dicts kept as rows compared", compared)
}

// A state dict kept as rows goes through the statistics job and the export like any
// other: the job computes each of its tensors once, and the CSV export gives every row the
// numbers numpy gives (expected.json), computing nothing again.
func TestStatsJobAndExportOfRows(t *testing.T) {
	s := realServer(t, Config{})
	const name = "hf_pytorch_model.bin"
	id := uploadFixture(t, s, name)
	o, release, err := s.cache.get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	rows := o.ck.Root.LazyTensors()
	release()
	if !rows {
		t.Fatalf("%s is not kept as rows: this test checks nothing", name)
	}
	want := fixtureTensors(t, name)
	api := "/api/checkpoints/" + id + "/stats/all"
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d %.200s", api, rec.Code, rec.Body)
	}
	var p jobProgress
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p = decode[jobProgress](t, do(s, http.MethodGet, api, nil))
		if p.State != jobRunning || time.Now().After(deadline) {
			break
		}
	}
	if p.State != jobDone || p.TensorsTotal != len(want) || p.TensorsDone != len(want) || p.Failed != 0 {
		t.Fatalf("final progress = %+v, want done with all %d tensors", p, len(want))
	}
	computed := s.stats.computed.Load()
	if computed != int64(len(want)) {
		t.Errorf("the job computed %d statistics, want %d (one per row)", computed, len(want))
	}
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/stats/export?format=csv", nil)
	lines, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil || len(lines) != len(want)+1 {
		t.Fatalf("CSV export: %d lines (%v), want a header and %d rows", len(lines), err, len(want))
	}
	col := map[string]int{}
	for i, h := range lines[0] {
		col[h] = i
	}
	for i, wt := range want {
		line := lines[i+1]
		if line[col["path"]] != wt.Path || line[col["count"]] != strconv.FormatInt(wt.Stats.Count, 10) ||
			line[col["min"]] != strconv.FormatFloat(*wt.Stats.Min, 'g', -1, 64) || line[col["max"]] != strconv.FormatFloat(*wt.Stats.Max, 'g', -1, 64) {
			t.Errorf("CSV row %d = %v, want %s with numpy's count %d, min %v, max %v", i+1, line, wt.Path, wt.Stats.Count, *wt.Stats.Min, *wt.Stats.Max)
		}
	}
	if n := s.stats.computed.Load(); n != computed {
		t.Errorf("the export computed statistics again: %d computations, want %d", n, computed)
	}
	// the page lists the rows whose values stand out: here those numpy finds constant
	page := do(s, http.MethodGet, "/c/"+id, nil).Body.String()
	flagged := 0
	for _, wt := range want {
		if st := wt.Stats; st.Count > 1 && *st.Min == *st.Max {
			flagged++
			if !strings.Contains(page, ">"+wt.Path+"<") {
				t.Errorf("the page does not list %s, whose every value is %v", wt.Path, *st.Min)
			}
		}
	}
	if flagged == 0 {
		t.Errorf("no row of %s is constant: the flags are not checked", name)
	}
}
