package views

import (
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// Histogram geometry, in SVG user units: the plot is HistWidth wide and HistHeight tall,
// one slot of HistWidth/tensor.Bins per bin.
const (
	HistWidth  = 640
	HistHeight = 120
)

// StatsView is a tensor's statistics as its page shows them: a table, a histogram, flags
// for what looks wrong, and notes on what the numbers are of.
type StatsView struct {
	// Rows are the table lines: count, min, max, mean, std, L2, zeros, NaN, ±inf.
	Rows []StatRow
	// Hist is nil when there is no finite value to draw.
	Hist  *HistogramView
	Flags []Flag
	Notes []string
	// Empty is set for a tensor without elements.
	Empty bool
	// Log says the histogram's heights are log-scaled; LinearURL and LogURL show the page
	// either way.
	Log               bool
	LinearURL, LogURL string
	// CSVURL and JSONURL are the API answers with the same numbers.
	JSONURL string
}

// StatRow is one line of the statistics table. Title holds the full-precision value.
type StatRow struct {
	Label, Value, Title, TestID string
}

// Flag is a short verdict on the values: "NaN present", "all zeros", "constant".
// Severity is danger, warning, ok or info (the badge style).
type Flag struct {
	Label, Severity, TestID, Title string
}

// HistogramView is the geometry of the histogram SVG: one bar per bin, with labels for
// the axes.
type HistogramView struct {
	Bars []Bar
	// Width and Height are the SVG viewBox size.
	Width, Height int
	// MinLabel and MaxLabel sit under the ends of the x axis; MaxCount at the top of the
	// y axis; BinWidth says how wide a bin is.
	MinLabel, MaxLabel, MaxCount, BinWidth string
	MinTitle, MaxTitle                     string
	// ZeroX is the x of the value 0 when it lies inside the range (a reference line), "" if
	// it does not.
	ZeroX string
	Log   bool
}

// Bar is one bin: its rectangle (X, Y, W, H) and the hover text with its range and count.
// Every bin also gets a full-height hit area so that empty and tiny bins have a tooltip.
type Bar struct {
	X, Y, W, H string
	Title      string
	Count      int64
}

// StatsOptions say how a tensor's statistics are shown.
type StatsOptions struct {
	// Log shows the histogram on a log scale.
	Log bool
	// PageURL is the tensor page the log/linear links point to, with its other query
	// parameters; "hist=log" is added or removed.
	PageURL string
	// JSONURL is the statistics API URL.
	JSONURL string
}

// NewStatsView describes statistics s of tensor t.
func NewStatsView(t *ckpt.Tensor, s *tensor.Stats, o StatsOptions) *StatsView {
	v := &StatsView{Log: o.Log, JSONURL: o.JSONURL, Empty: s.Numel == 0}
	v.LinearURL = withQuery(o.PageURL, "hist", "") + "#stats"
	v.LogURL = withQuery(o.PageURL, "hist", "log") + "#stats"
	finite := s.Count > 0
	opt := func(f float64) (string, string) {
		if !finite || math.IsNaN(f) {
			return "—", "no finite values"
		}
		return StatNumber(f), FullNumber(f)
	}
	count := Thousands(s.Count)
	if s.Count != s.Numel {
		count += " of " + Thousands(s.Numel)
	}
	row := func(label, testid string, f float64) StatRow {
		val, title := opt(f)
		return StatRow{Label: label, Value: val, Title: title, TestID: testid}
	}
	// min and max are elements: printed in the digits of the tensor's dtype
	el := elementsOf(t)
	elem := func(label, testid string, f float64) StatRow {
		r := row(label, testid, f)
		if finite && !math.IsNaN(f) {
			r.Value, r.Title = el.number(f), el.title(f)
		}
		return r
	}
	pct := func(n int64) string {
		if s.Numel == 0 || n == 0 {
			return Thousands(n)
		}
		return Thousands(n) + " (" + Percent(n, s.Numel) + ")"
	}
	v.Rows = []StatRow{
		{Label: "finite values", Value: count, Title: Thousands(s.Count) + " finite of " + Thousands(s.Numel) + " elements", TestID: "stat-count"},
		elem("min", "stat-min", s.Min),
		elem("max", "stat-max", s.Max),
		row("mean", "stat-mean", s.Mean),
		row("std", "stat-std", s.Std),
		{Label: "L2 norm", Value: StatNumber(s.L2), Title: FullNumber(s.L2), TestID: "stat-l2"},
		{Label: "zeros", Value: pct(s.Zeros), TestID: "stat-zeros"},
		{Label: "NaN", Value: pct(s.NaN), TestID: "stat-nan"},
		{Label: "+inf", Value: pct(s.PosInf), TestID: "stat-posinf"},
		{Label: "−inf", Value: pct(s.NegInf), TestID: "stat-neginf"},
	}
	v.Rows[4].Title = "population standard deviation (ddof=0): " + v.Rows[4].Title
	v.Flags = statsFlags(s, el)
	v.Notes = statsNotes(t)
	if finite && len(s.Histogram.Counts) > 0 {
		v.Hist = newHistogramView(s, o.Log, el)
	}
	return v
}

// elements prints values that are elements of a tensor, as its statistics' min and max
// are: for float16, bfloat16 and float8 tensors in the digits of their dtype ("0.1", not
// the 0.100098 of the float64 it is decoded to), for the others as any statistic.
type elements struct {
	dtype string // "" when printed as any statistic
	f     floatFormat
}

// elementsOf is how the elements of t print. A quantized tensor's statistics are of
// dequantized values, a packed one's of its float32 decoding: not elements of its dtype.
func elementsOf(t *ckpt.Tensor) elements {
	if t == nil || t.Quant != nil || t.Decoded != nil {
		return elements{}
	}
	if f, ok := narrowFloats[t.DType]; ok {
		return elements{dtype: t.DType, f: f}
	}
	return elements{}
}

// number is StatNumber for an element: zero is "0" (also -0), nan and inf as there.
func (e elements) number(x float64) string {
	if e.dtype == "" || x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return StatNumber(x)
	}
	return e.f.text(x)
}

// title is the hover text of an element: FullNumber, or for a narrow dtype its text and
// what it is exactly when that takes more digits: "0.1 (bfloat16: exactly 0.10009765625)".
func (e elements) title(x float64) string {
	full := FullNumber(x)
	if e.dtype == "" {
		return full
	}
	if s := e.number(x); s != full {
		return s + " (" + e.dtype + ": exactly " + full + ")"
	}
	return full
}

// statsFlags gives the verdicts a reader looks for first.
func statsFlags(s *tensor.Stats, el elements) []Flag {
	var out []Flag
	if s.Numel == 0 {
		return append(out, Flag{Label: "empty", Severity: "info", TestID: "flag-empty", Title: "the tensor has no elements"})
	}
	if s.NaN > 0 {
		out = append(out, Flag{Label: "NaN present (" + Thousands(s.NaN) + ")", Severity: "danger", TestID: "flag-nan"})
	}
	if s.PosInf+s.NegInf > 0 {
		out = append(out, Flag{Label: "inf present (" + Thousands(s.PosInf+s.NegInf) + ")", Severity: "danger", TestID: "flag-inf"})
	}
	switch {
	case s.Count == 0:
		out = append(out, Flag{Label: "no finite values", Severity: "danger", TestID: "flag-no-finite"})
	case s.Zeros == s.Numel:
		out = append(out, Flag{Label: "all zeros", Severity: "warning", TestID: "flag-all-zero", Title: "every element is 0: an untrained or wiped tensor?"})
	case s.Min == s.Max && s.Count > 1:
		out = append(out, Flag{Label: "constant (" + el.number(s.Min) + ")", Severity: "warning", TestID: "flag-constant", Title: "every finite element has the same value"})
	}
	if len(out) == 0 {
		out = append(out, Flag{Label: "all finite", Severity: "ok", TestID: "flag-finite", Title: "no NaN or infinity"})
	}
	return out
}

// statsNotes say what the numbers are of when that is not simply the stored values.
func statsNotes(t *ckpt.Tensor) []string {
	var out []string
	if t == nil {
		return nil
	}
	switch {
	case tensor.IsComplex(t.DType):
		out = append(out, "Complex values: the statistics and histogram are of the magnitude |z|.")
	case t.DType == "bool":
		out = append(out, "Booleans count as 0 (False) and 1 (True).")
	}
	if t.Layout != "" {
		out = append(out, "A "+t.Layout+" tensor: the statistics are of its stored values (the values child), not of the zeros it leaves implicit.")
	}
	if q := t.Quant; q != nil {
		if strings.HasPrefix(q.Scheme, "per_channel") {
			out = append(out, "Quantized per channel ("+q.Scheme+", axis "+strconv.FormatInt(q.Axis, 10)+
				"): the statistics are of the dequantized values, each channel with its own scale and zero point (the scales and zero_points below).")
		} else if q.Scheme == "per_tensor_affine" {
			out = append(out, "Quantized ("+q.Scheme+"): the statistics are of the dequantized values (q − "+
				strconv.FormatInt(q.ZeroPoint, 10)+") × "+PyFloat(q.Scale)+", as torch.dequantize gives them.")
		} else {
			out = append(out, "Quantized ("+q.Scheme+"): the statistics are of the stored integers.")
		}
	}
	return out
}

// newHistogramView draws the histogram; the ends of its axis are the min and max, elements
// printed as el prints them (the degenerate range of a constant tensor is not).
func newHistogramView(s *tensor.Stats, log bool, el elements) *HistogramView {
	counts, edges := s.Histogram.Counts, s.Histogram.Edges
	h := &HistogramView{Width: HistWidth, Height: HistHeight, Log: log}
	var maxc int64
	for _, c := range counts {
		maxc = max(maxc, c)
	}
	slot := float64(HistWidth) / float64(len(counts))
	scale := func(c int64) float64 {
		if c <= 0 || maxc <= 0 {
			return 0
		}
		var f float64
		if log {
			f = math.Log1p(float64(c)) / math.Log1p(float64(maxc))
		} else {
			f = float64(c) / float64(maxc)
		}
		return max(1, f*HistHeight) // a bin with anything in it is always visible
	}
	for i, c := range counts {
		bh := scale(c)
		lo, hi := edges[i], edges[i+1]
		closing := ")"
		if i == len(counts)-1 {
			closing = "]"
		}
		title := "[" + StatNumber(lo) + ", " + StatNumber(hi) + closing + ": " + plural(c, "value")
		if s.Count > 0 && c > 0 {
			title += " (" + Percent(c, s.Count) + ")"
		}
		h.Bars = append(h.Bars, Bar{
			X:     svgNum(float64(i)*slot + 0.5),
			W:     svgNum(slot - 1),
			Y:     svgNum(HistHeight - bh),
			H:     svgNum(bh),
			Title: title,
			Count: c,
		})
	}
	lo, hi := edges[0], edges[len(edges)-1]
	h.MinLabel, h.MaxLabel = StatNumber(lo), StatNumber(hi)
	h.MinTitle, h.MaxTitle = FullNumber(lo), FullNumber(hi)
	if lo == s.Min {
		h.MinLabel, h.MinTitle = el.number(lo), el.title(lo)
	}
	if hi == s.Max {
		h.MaxLabel, h.MaxTitle = el.number(hi), el.title(hi)
	}
	h.MaxCount = Thousands(maxc)
	h.BinWidth = StatNumber((hi - lo) / float64(len(counts)))
	if lo < 0 && hi > 0 {
		h.ZeroX = svgNum((0 - lo) / (hi - lo) * HistWidth)
	}
	return h
}

// Sparkline is a tiny histogram for a tree row: one SVG path of 64 bars.
type Sparkline struct {
	// Path is the SVG path data in a viewBox of SparkWidth × SparkHeight.
	Path string
	// Title says mean, std, min and max on hover; Mean and Std are short forms.
	Title, Mean, Std string
	// Warn is set when the tensor holds NaN or infinities, or nothing finite.
	Warn bool
}

// Sparkline viewBox size.
const (
	SparkWidth  = 64
	SparkHeight = 16
)

// NewSparkline draws statistics as a sparkline.
func NewSparkline(s *tensor.Stats) *Sparkline {
	if s == nil {
		return nil
	}
	sp := &Sparkline{Warn: s.NaN+s.PosInf+s.NegInf > 0 || (s.Count == 0 && s.Numel > 0)}
	if s.Count == 0 {
		sp.Mean, sp.Std = "—", "—"
		sp.Title = Thousands(s.Numel) + " elements, none finite"
		if s.Numel == 0 {
			sp.Title = "empty"
		}
		return sp
	}
	sp.Mean, sp.Std = shortNumber(s.Mean), shortNumber(s.Std)
	sp.Title = "mean " + StatNumber(s.Mean) + " · std " + StatNumber(s.Std) + " · min " + StatNumber(s.Min) + " · max " + StatNumber(s.Max)
	if n := s.NaN + s.PosInf + s.NegInf; n > 0 {
		sp.Title += " · " + Thousands(n) + " NaN/inf"
	}
	var maxc int64
	for _, c := range s.Histogram.Counts {
		maxc = max(maxc, c)
	}
	var b strings.Builder
	n := len(s.Histogram.Counts)
	for i, c := range s.Histogram.Counts {
		if c == 0 || maxc == 0 {
			continue
		}
		h := max(1, float64(c)/float64(maxc)*SparkHeight)
		x := float64(i) * SparkWidth / float64(n)
		b.WriteString("M" + svgNum(x) + " " + strconv.Itoa(SparkHeight) + "v-" + svgNum(h) + "h" + svgNum(SparkWidth/float64(n)) + "v" + svgNum(h) + "z")
	}
	sp.Path = b.String()
	return sp
}

// StatNumber formats a statistic for reading: integers as they are (up to 1e15), other
// values with 6 significant digits ("0.0123457", "-1.5e+30").
func StatNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case f == math.Trunc(f) && math.Abs(f) < 1e15:
		if f == 0 {
			return "0" // also -0
		}
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// shortNumber is a statistic in three significant digits, for a tree row: "0.0651", "-1.2e+03".
func shortNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e4 {
		return StatNumber(f)
	}
	return strconv.FormatFloat(f, 'g', 3, 64)
}

// FullNumber is the shortest text that reads back as exactly f.
func FullNumber(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// svgNum writes an SVG coordinate with at most two decimals.
func svgNum(f float64) string {
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// withQuery sets (or, with an empty value, removes) one query parameter of a URL that
// may already have some, keeping the others in order.
func withQuery(u, key, value string) string {
	path, query, _ := strings.Cut(u, "?")
	var parts []string
	for _, p := range strings.Split(query, "&") {
		if p == "" {
			continue
		}
		k, _, _ := strings.Cut(p, "=")
		if k != key {
			parts = append(parts, p)
		}
	}
	if value != "" {
		parts = append(parts, key+"="+url.QueryEscape(value))
	}
	if len(parts) == 0 {
		return path
	}
	return path + "?" + strings.Join(parts, "&")
}
