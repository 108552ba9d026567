package views

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// LayerChart follows the tensors of the repeated blocks of a deep model (blocks.0 ...
// blocks.N) across the blocks, once their statistics exist: for each role a block's
// tensors play (attn.c_attn.weight, mlp.fc.bias...), its mean, std, L2 norm and max |x| in
// every block, drawn as small multiples, so that a dead or exploding layer jumps out.
type LayerChart struct {
	// Prefix is the dotted name of the blocks ("h", "model.layers"); Blocks their count.
	Prefix string
	Blocks int
	// Metrics are the four charts, each with one series per role.
	Metrics []LayerMetric
	// Missing counts the tensors of the blocks whose statistics are not computed yet.
	Missing int
}

// LayerMetric is one chart: a statistic across the blocks.
type LayerMetric struct {
	Name   string
	Series []LayerSeries
	// Lo and Hi are the chart's value range; Log says it is drawn on a log scale.
	Lo, Hi string
	Log    bool
}

// LayerSeries is one role's values across the blocks, as an SVG polyline.
type LayerSeries struct {
	Role   string
	Points string // "x,y x,y ..." in a 0..chartW × 0..chartH box
	Color  string // the line's colour, one of layerColors
	// Outliers are the blocks whose value is far from the role's median (5× or 1/5).
	Outliers []LayerPoint
	// Values are the block values as text, for the hover title.
	Values string
}

// LayerPoint is a block to look at.
type LayerPoint struct {
	X, Y  string
	Block int
	Text  string
	URL   string
}

// The chart's box, in SVG units.
const (
	chartW = 300
	chartH = 90
	// maxRoles bounds the series of one chart (the roles with most parameters first).
	maxRoles = 8
	// minBlocks is the fewest blocks worth a chart.
	minBlocks = 2
)

// NewLayerChart builds the chart of the largest run of numbered blocks of a state dict,
// from the statistics lookup already has; nil when the dict has no repeated blocks.
func NewLayerChart(id string, dict *ckpt.Node, lookup StatsLookup) *LayerChart {
	if dict == nil || lookup == nil {
		return nil
	}
	return newLayerLayout(dict).chart(id, dict, lookup)
}

// layerChartOf is NewLayerChart with the dict's layout made once and kept with the
// checkpoint (a Summary): finding the blocks walks every entry, 200,000 of them in a large
// state dict, while the statistics it charts change from one request to the next.
func layerChartOf(id string, ck *ckpt.Checkpoint, dict *ckpt.Node, lookup StatsLookup) *LayerChart {
	if dict == nil || lookup == nil {
		return nil
	}
	l, _ := ck.Summary("views.layerLayout\x00"+dict.Path(), func() any { return newLayerLayout(dict) }).(*layerLayout)
	return l.chart(id, dict, lookup)
}

// layerLayout is what a state dict's chart is drawn from, whatever statistics exist: its
// largest run of numbered blocks, the roles charted and, for each role, its entry in each
// block (its index among the dict's items, -1 for none, so that no node is kept for each).
type layerLayout struct {
	prefix string
	blocks []int
	roles  []string
	at     [][]int // at[role][i]: the entry of roles[role] in block blocks[i]
}

// MemBytes is what l holds (a Summary counts it; a dict without blocks has none).
func (l *layerLayout) MemBytes() int64 {
	if l == nil {
		return 0
	}
	n := int64(64+len(l.prefix)) + 8*int64(len(l.blocks))
	for i, r := range l.roles {
		n += 16 + int64(len(r)) + 24 + 8*int64(len(l.at[i]))
	}
	return n
}

// newLayerLayout finds the layout of dict's chart, nil when it has no repeated blocks.
func newLayerLayout(dict *ckpt.Node) *layerLayout {
	// blocks: prefix -> index -> role -> entry (prefix and role are parts of its key)
	type entry struct {
		at    int
		numel int64
	}
	groups := map[string]map[int]map[string]entry{}
	eachEntry(dict, func(at int, k *ckpt.Node, _ bool) {
		if k.DictKey != nil || k.Tensor == nil || !isParameter(k) {
			return
		}
		key := k.Key
		first := strings.IndexByte(key, '.')
		for start := first + 1; first >= 0; { // the first numbered part but the first and the last names the block
			end := strings.IndexByte(key[start:], '.')
			if end < 0 {
				return
			}
			end += start
			if idx, ok := ckpt.Index(key[start:end]); ok {
				prefix, role := key[:start-1], key[end+1:]
				g := groups[prefix]
				if g == nil {
					g = map[int]map[string]entry{}
					groups[prefix] = g
				}
				if g[idx] == nil {
					g[idx] = map[string]entry{}
				}
				g[idx][role] = entry{at: at, numel: k.Tensor.Numel()}
				return
			}
			start = end + 1
		}
	})
	best, bestN := "", 0
	for p, g := range groups {
		if len(g) > bestN || len(g) == bestN && p < best {
			best, bestN = p, len(g)
		}
	}
	if bestN < minBlocks {
		return nil
	}
	g := groups[best]
	blocks := make([]int, 0, len(g))
	for i := range g {
		blocks = append(blocks, i)
	}
	sort.Ints(blocks)
	// roles in at least half the blocks, most parameters first
	size := map[string]int64{}
	count := map[string]int{}
	for _, b := range blocks {
		for role, e := range g[b] {
			size[role] += e.numel
			count[role]++
		}
	}
	var roles []string
	for r, c := range count {
		if 2*c >= len(blocks) {
			roles = append(roles, r)
		}
	}
	sort.Slice(roles, func(i, j int) bool {
		if size[roles[i]] != size[roles[j]] {
			return size[roles[i]] > size[roles[j]]
		}
		return roles[i] < roles[j]
	})
	if len(roles) > maxRoles {
		roles = roles[:maxRoles]
	}
	l := &layerLayout{prefix: strings.Clone(best), blocks: blocks, roles: roles, at: make([][]int, len(roles))}
	for ri, r := range roles {
		l.roles[ri] = strings.Clone(r) // not the key it was cut from, which a row's page made
		l.at[ri] = make([]int, len(blocks))
		for i, b := range blocks {
			l.at[ri][i] = -1
			if e, ok := g[b][r]; ok {
				l.at[ri][i] = e.at
			}
		}
	}
	return l
}

// chart draws l's chart from the statistics lookup has (nil l: no chart).
func (l *layerLayout) chart(id string, dict *ckpt.Node, lookup StatsLookup) *LayerChart {
	if l == nil {
		return nil
	}
	best, blocks, roles := l.prefix, l.blocks, l.roles
	c := &LayerChart{Prefix: best, Blocks: len(blocks)}
	stat := map[string]map[int]*tensor.Stats{}
	entryOf := map[string]map[int]int{}
	for ri, r := range roles {
		stat[r] = map[int]*tensor.Stats{}
		entryOf[r] = map[int]int{}
		for i, b := range blocks {
			at := l.at[ri][i]
			if at < 0 {
				continue
			}
			entryOf[r][b] = at
			st := lookup(entryPath(dict, at))
			if st == nil || st.Count == 0 {
				c.Missing++
				continue
			}
			stat[r][b] = st
		}
	}
	metrics := []struct {
		name string
		f    func(*tensor.Stats) float64
		log  bool
	}{
		{"mean", func(s *tensor.Stats) float64 { return s.Mean }, false},
		{"std", func(s *tensor.Stats) float64 { return s.Std }, true},
		{"L2 norm", func(s *tensor.Stats) float64 { return s.L2 }, true},
		{"max |x|", func(s *tensor.Stats) float64 { return math.Max(math.Abs(s.Min), math.Abs(s.Max)) }, true},
	}
	any := false
	for _, m := range metrics {
		lm := LayerMetric{Name: m.name, Log: m.log}
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range roles {
			for _, s := range stat[r] {
				v := m.f(s)
				if m.log && v <= 0 {
					continue
				}
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if math.IsInf(lo, 0) {
			continue
		}
		any = true
		scale := func(v float64) float64 {
			if m.log {
				if v <= 0 {
					return chartH
				}
				if hi == lo {
					return chartH / 2
				}
				return chartH - (math.Log(v)-math.Log(lo))/(math.Log(hi)-math.Log(lo))*chartH
			}
			if hi == lo {
				return chartH / 2
			}
			return chartH - (v-lo)/(hi-lo)*chartH
		}
		xOf := func(i int) float64 {
			if len(blocks) == 1 {
				return chartW / 2
			}
			return float64(i) / float64(len(blocks)-1) * chartW
		}
		for ri, r := range roles {
			s := LayerSeries{Role: r, Color: layerColors[ri%len(layerColors)]}
			var pts, vals []string
			var ys []float64
			for i, b := range blocks {
				st := stat[r][b]
				if st == nil {
					continue
				}
				v := m.f(st)
				ys = append(ys, v)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(i), scale(v)))
				vals = append(vals, fmt.Sprintf("%d: %s", b, sig3(v)))
			}
			if len(pts) == 0 {
				continue
			}
			s.Points, s.Values = strings.Join(pts, " "), strings.Join(vals, ", ")
			if med := median(ys); m.log && med > 0 {
				for i, b := range blocks {
					st := stat[r][b]
					if st == nil {
						continue
					}
					v := m.f(st)
					if v > 5*med || v < med/5 {
						s.Outliers = append(s.Outliers, LayerPoint{X: fmt.Sprintf("%.1f", xOf(i)), Y: fmt.Sprintf("%.1f", scale(v)),
							Block: b, Text: fmt.Sprintf("%s.%d.%s: %s %s (median %s)", best, b, r, m.name, sig3(v), sig3(med)),
							URL: NodeURL(id, entryPath(dict, entryOf[r][b]))})
					}
				}
			}
			lm.Series = append(lm.Series, s)
		}
		lm.Lo, lm.Hi = sig3(lo), sig3(hi)
		c.Metrics = append(c.Metrics, lm)
	}
	if !any {
		c.Metrics = nil
	}
	return c
}

// layerColors tell the roles apart: mid tones that keep 3:1 against both the light and
// the dark page (WCAG 1.4.11 for the parts of a graphic).
var layerColors = []string{"#2f6fdf", "#d95f02", "#1b9e77", "#d62750", "#8e5bd9", "#a0722d", "#d0409a", "#0f8ea8"}

// Roles lists the chart's roles with their colours, for its legend.
func (c *LayerChart) Roles() []LayerSeries {
	if len(c.Metrics) == 0 {
		return nil
	}
	return c.Metrics[0].Series
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[(len(s)-1)/2] // the lower median: with two blocks, the smaller is the reference
}

// entryPath is the JSON Pointer of item i of dict.
func entryPath(dict *ckpt.Node, i int) string {
	if items := dict.Items(i, i+1); len(items) == 1 {
		return items[0].Path()
	}
	return ""
}
