package views

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/tensor"
)

// numpyStats reads the statistics numpy computed for a fixture's tensors (expected.json).
func numpyStats(t *testing.T, file string) map[string]*tensor.Stats {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path  string
			Stats *struct {
				Count               int64
				Min, Max, Mean, Std *float64
				L2                  float64
			}
		}
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	out := map[string]*tensor.Stats{}
	for _, x := range all[file].Tensors {
		if s := x.Stats; s != nil && s.Mean != nil {
			out[x.Path] = &tensor.Stats{Count: s.Count, Min: *s.Min, Max: *s.Max, Mean: *s.Mean, Std: *s.Std, L2: s.L2}
		}
	}
	return out
}

// The chart across the blocks of state_dict.pt draws, for each role a block's parameters
// play, numpy's mean, std, L2 norm and max |x| of that tensor in each block; before any
// statistics it says how to get them; a block far from the others is marked and linked.
func TestLayerChart(t *testing.T) {
	ck, meta := open(t, "state_dict.pt")
	p := NewCheckpointPage(meta, ck)
	p.AddLayerChart(ck, func(string) *tensor.Stats { return nil })
	if p.Layers == nil || p.Layers.Prefix != "blocks" || p.Layers.Blocks != 2 || p.Layers.Metrics != nil {
		t.Fatalf("chart without statistics = %+v, want the 2 blocks of blocks and no metrics", p.Layers)
	}
	want := numpyStats(t, "state_dict.pt")
	p.AddLayerChart(ck, func(ptr string) *tensor.Stats { return want[ptr] })
	c := p.Layers
	if c == nil || len(c.Metrics) != 4 || c.Missing != 0 {
		t.Fatalf("chart = %+v", c)
	}
	metric := map[string]func(*tensor.Stats) float64{
		"mean": func(s *tensor.Stats) float64 { return s.Mean }, "std": func(s *tensor.Stats) float64 { return s.Std },
		"L2 norm": func(s *tensor.Stats) float64 { return s.L2 },
		"max |x|": func(s *tensor.Stats) float64 { return math.Max(math.Abs(s.Min), math.Abs(s.Max)) },
	}
	roles := 0
	for _, m := range c.Metrics {
		f := metric[m.Name]
		for _, sr := range m.Series {
			roles++
			if strings.Contains(sr.Role, "mask") {
				t.Errorf("%s: role %s is a buffer, not a parameter", m.Name, sr.Role)
			}
			var parts []string
			for _, b := range []string{"0", "1"} {
				st := want["/blocks."+b+"."+sr.Role]
				if st == nil {
					t.Fatalf("no numpy statistics for blocks.%s.%s", b, sr.Role)
				}
				parts = append(parts, b+": "+sig3(f(st)))
			}
			if got := strings.Join(parts, ", "); sr.Values != got {
				t.Errorf("%s of %s: %q, numpy says %q", m.Name, sr.Role, sr.Values, got)
			}
		}
	}
	if roles < 4*8 {
		t.Errorf("%d series in all, want the 8 roles with most parameters in each chart", roles)
	}
	// one block ten times larger than the other: marked, with a link to it
	p.AddLayerChart(ck, func(ptr string) *tensor.Stats {
		s := want[ptr]
		if s == nil {
			return nil
		}
		if strings.HasPrefix(ptr, "/blocks.1.mlp.fc.weight") {
			x := *s
			x.Std *= 10
			return &x
		}
		return s
	})
	found := false
	for _, m := range p.Layers.Metrics {
		for _, sr := range m.Series {
			for _, o := range sr.Outliers {
				if m.Name == "std" && sr.Role == "mlp.fc.weight" && o.Block == 1 && strings.Contains(o.URL, "blocks.1.mlp.fc.weight") {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("a block whose std is 10x its siblings' is not marked")
	}
}
