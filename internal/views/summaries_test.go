package views

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/tensor"
)

// The module tree and the layer chart's layout of a state dict are made once per
// checkpoint (Summaries) and every request gets a copy: each must be what making them
// afresh gives, statistics added to one request's copy must not show in the next, a chart
// must follow the statistics of its request, a dict without blocks must have no chart
// (nor break the summary), and what the summaries hold must be counted.
func TestPageSummariesAreFresh(t *testing.T) {
	names, _ := filepath.Glob(filepath.Join(modelsDir, "*.*"))
	dicts, charts, blockless, sparked := 0, 0, 0, 0
	for _, path := range names {
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			continue
		}
		name := filepath.Base(path)
		if !strings.HasSuffix(name, ".pt") && !strings.HasSuffix(name, ".pth") && !strings.HasSuffix(name, ".bin") && !strings.HasSuffix(name, ".ckpt") {
			continue
		}
		ck, meta := open(t, name)
		for _, d := range FindStateDicts(ck.Root) {
			fresh := NewModuleTree(meta.ID, ck, d)
			first := ModuleTreeOf(meta.ID, ck, d)
			if !reflect.DeepEqual(first, fresh) {
				t.Fatalf("%s %s: the kept module tree differs from a fresh one", name, d.Path())
			}
			p := CheckpointPage{Modules: first}
			p.AddStats(func(string) *tensor.Stats { return &tensor.Stats{Count: 2, Min: -1, Max: 1} })
			sparked += countSparks(first.Modules)
			if again := ModuleTreeOf(meta.ID, ck, d); !reflect.DeepEqual(again, fresh) {
				t.Fatalf("%s %s: statistics added to one request's module tree show in the next", name, d.Path())
			}
			dicts++
			all := func(string) *tensor.Stats { return &tensor.Stats{Count: 4, Mean: 1, Std: 2, L2: 3, Min: -1, Max: 5} }
			none := func(string) *tensor.Stats { return nil }
			for _, lookup := range []StatsLookup{all, none, all} {
				got, want := layerChartOf(meta.ID, ck, d, lookup), NewLayerChart(meta.ID, d, lookup)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%s %s: the chart from the kept layout = %+v, afresh %+v", name, d.Path(), got, want)
				}
				if got == nil {
					blockless++
				} else if got.Missing == 0 {
					charts++
				}
			}
		}
		if len(FindStateDicts(ck.Root)) > 0 && ck.DerivedBytes() <= 0 {
			t.Errorf("%s: the summaries kept are not counted (%d bytes)", name, ck.DerivedBytes())
		}
	}
	if dicts < 5 || charts < 2 || blockless < 3 || sparked < 20 {
		t.Errorf("%d state dicts, %d charts with statistics, %d dicts without blocks, %d rows given statistics: the check checks little", dicts, charts, blockless, sparked)
	}
}

func countSparks(ms []*Module) int {
	n := 0
	for _, m := range ms {
		if m.ModuleShown != nil && m.Leaf != nil && m.Leaf.Tensor != nil && m.Leaf.Tensor.Spark != nil {
			n++
		}
		n += countSparks(m.Children)
	}
	return n
}
