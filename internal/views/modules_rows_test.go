package views

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// A state dict that keeps its entries as rows is grouped into modules, counted and charted
// from the rows (eachEntry's stand-ins, WalkRows), without its nodes: the tree, its totals,
// the layer chart and the dtype table must be those the same dict's entries made into
// nodes give, on every fixture whose state dicts keep rows.
func TestModuleTreeFromRowsMatchesNodes(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(modelsDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	compared, roots := 0, 0
	for _, path := range names {
		name := filepath.Base(path)
		if st, err := os.Stat(path); err != nil || st.IsDir() || !strings.HasSuffix(name, ".pt") && !strings.HasSuffix(name, ".pth") && !strings.HasSuffix(name, ".bin") && !strings.HasSuffix(name, ".ckpt") {
			continue
		}
		ck, meta := open(t, name)
		for _, d := range FindStateDicts(ck.Root) {
			if !d.LazyTensors() {
				continue
			}
			nodes := *d // the same dict with its entries made into nodes
			nodes.SetLazy(nil)
			nodes.Children = d.All()
			for _, k := range nodes.Children {
				k.SetParent(d) // their paths stay the dict's
			}
			got, want := NewModuleTree(meta.ID, ck, d), NewModuleTree(meta.ID, ck, &nodes)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: module tree from rows = %+v, from nodes %+v", name, d.Path(), got, want)
			}
			some := func(string) *tensor.Stats { return &tensor.Stats{Count: 4, Mean: 1, Std: 2, L2: 3, Min: -1, Max: 5} }
			if got, want := NewLayerChart(meta.ID, d, some), NewLayerChart(meta.ID, &nodes, some); !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: layer chart from rows = %+v, from nodes %+v", name, d.Path(), got, want)
			}
			if d == ck.Root { // the dtype table, counted from the rows, and from the nodes
				withNodes := &ckpt.Checkpoint{Root: &nodes}
				if got, want := dtypeRows(ck), dtypeRows(withNodes); !reflect.DeepEqual(got, want) || len(got) == 0 {
					t.Errorf("%s: dtype table from rows = %+v, from nodes %+v", name, got, want)
				}
				roots++
			}
			if got.Tensors == 0 || got.Entries != d.NumItems()-attrs(d) {
				t.Errorf("%s %s: %d tensors, %d entries of %d items", name, d.Path(), got.Tensors, got.Entries, d.NumItems())
			}
			compared++
		}
	}
	if compared < 3 || roots < 1 {
		t.Fatalf("%d state dicts keep rows among the fixtures (%d at the root), want at least 3 (1)", compared, roots)
	}
}

func attrs(d *ckpt.Node) int {
	n := 0
	for _, k := range d.All() {
		if k.Attr {
			n++
		}
	}
	return n
}
