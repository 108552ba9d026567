package export

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

type layoutStats struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	Std   float64 `json:"std"`
	Hist  struct {
		Counts []int64 `json:"counts"`
	} `json:"histogram"`
}

// TestLayoutsStats checks the statistics of a sparse tensor (over its values) and of a
// per-channel quantized tensor (dequantized channel by channel) against torch and numpy.
func TestLayoutsStats(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected_layouts.json"))
	if err != nil {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	var all struct {
		L struct {
			Sparse struct {
				Path   string `json:"path"`
				Layout string `json:"layout"`
				Shape  []int64
				Values struct {
					Stats layoutStats `json:"stats"`
				} `json:"values"`
			} `json:"sparse"`
			PerChannel struct {
				Path   string      `json:"path"`
				Scheme string      `json:"scheme"`
				Axis   int64       `json:"axis"`
				Stats  layoutStats `json:"stats_dequantized"`
			} `json:"per_channel"`
		} `json:"layouts.pt"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(modelsDir, "layouts.pt"))
	if err != nil {
		t.Skip("no layouts.pt")
	}
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(path string, want layoutStats) {
		n, err := ck.Node(path)
		if err != nil {
			t.Fatalf("Node(%q): %v", path, err)
		}
		v := n.View()
		if v == nil {
			t.Fatalf("%q.View() = nil", path)
		}
		got, err := tensor.Compute(context.Background(), v, 2, nil)
		if err != nil {
			t.Fatalf("Compute(%q): %v", path, err)
		}
		if got.Count != want.Count || got.Min != want.Min || got.Max != want.Max ||
			math.Abs(got.Mean-want.Mean) > 1e-9 || math.Abs(got.Std-want.Std) > 1e-9 {
			t.Errorf("%s: stats = %d %v %v %v %v, want %+v", path, got.Count, got.Min, got.Max, got.Mean, got.Std, want)
		}
		for i, c := range want.Hist.Counts {
			if got.Histogram.Counts[i] != c {
				t.Errorf("%s: histogram = %v, want %v", path, got.Histogram.Counts, want.Hist.Counts)
				break
			}
		}
	}
	sp := all.L.Sparse
	n, err := ck.Node(sp.Path)
	if err != nil || n.Tensor == nil || n.Tensor.Layout != sp.Layout {
		t.Fatalf("Node(%q) = %+v, want a %s tensor", sp.Path, n, sp.Layout)
	}
	check(sp.Path, sp.Values.Stats)
	pc := all.L.PerChannel
	n, err = ck.Node(pc.Path)
	if err != nil || n.Tensor == nil || n.Tensor.Quant == nil || n.Tensor.Quant.Scheme != pc.Scheme || n.Tensor.Quant.Axis != pc.Axis {
		t.Fatalf("Node(%q) = %+v, want %s on axis %d", pc.Path, n, pc.Scheme, pc.Axis)
	}
	check(pc.Path, pc.Stats)
}
