package views

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// arange is numpy.arange(n).reshape(shape) as int64 values to read.
func arange(t *testing.T, dtype string, shape ...int64) *tensor.Values {
	t.Helper()
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	var b []byte
	for i := int64(0); i < n; i++ {
		switch dtype {
		case "int64":
			b = binary.LittleEndian.AppendUint64(b, uint64(i))
		case "float32":
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i)/4-1))
		}
	}
	return values(t, dtype, b, shape...)
}

func values(t *testing.T, dtype string, data []byte, shape ...int64) *tensor.Values {
	t.Helper()
	v := &tensor.View{DType: dtype, Shape: shape, Strides: cStrides(shape), Data: bytes.NewReader(data), DataSize: int64(len(data))}
	vals, err := tensor.NewValues(v)
	if err != nil {
		t.Fatalf("NewValues(%s%v): %v", dtype, shape, err)
	}
	return vals
}

func f32s(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// The previews are what numpy.array2string(a, separator=", ") prints for the same arrays
// (numpy's repr without "array(").
func TestPreviewLikeNumpy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		vals  *tensor.Values
		shape []int64
		want  string
	}{
		{"np.arange(5)", arange(t, "int64", 5), []int64{5}, "[0, 1, 2, 3, 4]"},
		{"np.arange(2000)", arange(t, "int64", 2000), []int64{2000},
			"[   0,    1,    2, ..., 1997, 1998, 1999]"},
		{"np.arange(24).reshape(2, 3, 4)", arange(t, "int64", 2, 3, 4), []int64{2, 3, 4},
			"[[[ 0,  1,  2,  3],\n  [ 4,  5,  6,  7],\n  [ 8,  9, 10, 11]],\n\n [[12, 13, 14, 15],\n  [16, 17, 18, 19],\n  [20, 21, 22, 23]]]"},
		{"np.arange(2000).reshape(40, 50)", arange(t, "int64", 40, 50), []int64{40, 50},
			"[[   0,    1,    2, ...,   47,   48,   49],\n [  50,   51,   52, ...,   97,   98,   99],\n [ 100,  101,  102, ...,  147,  148,  149],\n ...,\n" +
				" [1850, 1851, 1852, ..., 1897, 1898, 1899],\n [1900, 1901, 1902, ..., 1947, 1948, 1949],\n [1950, 1951, 1952, ..., 1997, 1998, 1999]]"},
		{"np.float32([0.1, -0.2, 0.3, 1])", values(t, "float32", f32s(0.1, -0.2, 0.3, 1), 4), []int64{4},
			"[ 0.1, -0.2,  0.3,   1.]"},
		{"np.float32([nan, inf, -inf, 1e30])", values(t, "float32", f32s(float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e30), 4), []int64{4},
			"[   nan,    inf,   -inf, 1.e+30]"},
		{"np.arange(1).reshape(())", arange(t, "int64", 1), []int64{}, "0"},
		{"np.zeros((2, 0))", arange(t, "int64", 2, 0), []int64{2, 0}, "[[],\n []]"},
		{"np.zeros(0)", arange(t, "int64", 0), []int64{0}, "[]"},
		{"np.arange(40)", arange(t, "int64", 40), []int64{40},
			"[ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15, 16, 17,\n 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,\n 36, 37, 38, 39]"},
	} {
		got, flat, err := NewPreview(tc.vals, tc.shape)
		if err != nil || flat {
			t.Errorf("NewPreview(%s) = error %v, flattened %v", tc.name, err, flat)
			continue
		}
		if got != tc.want {
			t.Errorf("NewPreview(%s) =\n%s\nwant (numpy)\n%s", tc.name, got, tc.want)
		}
	}
}

// Many dimensions would nest thousands of rows: fewer edge items, then the flat ends.
func TestPreviewManyDims(t *testing.T) {
	shape := []int64{7, 7, 7, 7, 7}
	got, flat, err := NewPreview(arange(t, "int64", shape...), shape)
	if err != nil || flat {
		t.Fatalf("NewPreview(7^5) = flattened %v, %v", flat, err)
	}
	if strings.Count(got, "\n") > 200 || !strings.HasPrefix(got, "[[[[[    0, ...,     6],") {
		t.Errorf("NewPreview(7^5) = %d lines starting %.60q, want one edge item per dimension", strings.Count(got, "\n")+1, got)
	}
	shape = make([]int64, 14)
	for i := range shape {
		shape[i] = 3
	}
	got, flat, err = NewPreview(arange(t, "int64", shape...), shape)
	if err != nil || !flat || got != "[0, 1, 2, ..., 4782966, 4782967, 4782968]" {
		t.Errorf("NewPreview(3^14) = %q flattened %v %v, want the flat ends", got, flat, err)
	}
}

func TestSliceTable(t *testing.T) {
	shape := []int64{2, 40, 20}
	var pages []SliceQuery
	url := func(q SliceQuery) string {
		pages = append(pages, q)
		return "page" + strconv.Itoa(len(pages))
	}
	tbl, err := NewSliceTable(arange(t, "int64", shape...), shape, SliceQuery{Lead: []int64{1}, Row: 32, Col: 16}, url)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Label != "[1, 32:40, 16:20]" || tbl.Range != "rows 32–39 of 40 · columns 16–19 of 20" {
		t.Errorf("label %q range %q, want [1, 32:40, 16:20] and rows 32–39 of 40 · columns 16–19 of 20", tbl.Label, tbl.Range)
	}
	if len(tbl.Body) != 8 || len(tbl.ColIndex) != 4 || tbl.ColIndex[0] != 16 {
		t.Fatalf("%d rows, columns %v, want 8 rows and columns 16–19", len(tbl.Body), tbl.ColIndex)
	}
	for _, r := range tbl.Body {
		for j, c := range r.Cells {
			if want := strconv.FormatInt(800+r.Index*20+16+int64(j), 10); c.Text != want {
				t.Errorf("cell [1, %d, %d] = %s, want %s", r.Index, 16+j, c.Text, want)
			}
		}
	}
	if tbl.NextRows != "" || tbl.NextCols != "" || tbl.PrevRows == "" || tbl.PrevCols == "" {
		t.Errorf("paging links prev %q/%q next %q/%q: want only previous ones on the last page", tbl.PrevRows, tbl.PrevCols, tbl.NextRows, tbl.NextCols)
	}
	if len(tbl.Lead) != 1 || tbl.Lead[0].Name != "d0" || tbl.Lead[0].Value != 1 || tbl.Lead[0].Max != 1 {
		t.Errorf("lead inputs = %+v, want d0 = 1 of 0–1", tbl.Lead)
	}
	// Out-of-range requests are clamped, not errors.
	tbl, err = NewSliceTable(arange(t, "int64", shape...), shape, SliceQuery{Lead: []int64{9, 9}, Row: 1000, Col: 1000}, url)
	if err != nil || tbl.Label != "[1, 39:40, 19:20]" {
		t.Errorf("clamped slice = %q, %v, want [1, 39:40, 19:20]", tbl.Label, err)
	}
	// Cells are classed for colour: zeros, NaN/inf.
	tbl, _ = NewSliceTable(values(t, "float32", f32s(0, -1, float32(math.NaN()), 2), 2, 2), []int64{2, 2}, SliceQuery{}, url)
	if got := []string{tbl.Body[0].Cells[0].Class, tbl.Body[0].Cells[1].Class, tbl.Body[1].Cells[0].Class, tbl.Body[1].Cells[1].Class}; strings.Join(got, ",") != "v-zero,v-neg,v-bad," {
		t.Errorf("cell classes = %q, want v-zero, v-neg, v-bad and none", got)
	}
}

func TestNodeQueryURL(t *testing.T) {
	id := strings.Repeat("a", 64)
	for _, tc := range []struct {
		q    NodeQuery
		want string
	}{
		{NodeQuery{}, "/c/" + id + "/n/w"},
		{NodeQuery{Log: true}, "/c/" + id + "/n/w?hist=log"},
		{NodeQuery{Slice: &SliceQuery{Lead: []int64{0, 3}, Row: 32}}, "/c/" + id + "/n/w?d1=3&row=32"},
		{NodeQuery{Log: true, ComputeStats: true, Offset: 200}, "/c/" + id + "/n/w?hist=log&offset=200&stats=compute"},
	} {
		if got := tc.q.URL(id, "/w"); got != tc.want {
			t.Errorf("%+v.URL = %q, want %q", tc.q, got, tc.want)
		}
	}
}

func stats(counts []int64, lo, hi float64) *tensor.Stats {
	edges := make([]float64, len(counts)+1)
	var n int64
	for i := range edges {
		edges[i] = lo + (hi-lo)*float64(i)/float64(len(counts))
	}
	for _, c := range counts {
		n += c
	}
	return &tensor.Stats{Numel: n, Count: n, Min: lo, Max: hi, Mean: (lo + hi) / 2, Std: 1, L2: 2,
		Histogram: tensor.Histogram{Edges: edges, Counts: counts}}
}

func TestStatsView(t *testing.T) {
	counts := make([]int64, tensor.Bins)
	counts[0], counts[10], counts[63] = 1, 1000, 10
	tt := &ckpt.Tensor{DType: "float32"}
	v := NewStatsView(tt, stats(counts, -1, 3), StatsOptions{PageURL: "/c/x/n/w?row=32"})
	h := v.Hist
	if h == nil || len(h.Bars) != tensor.Bins {
		t.Fatalf("histogram = %+v, want %d bars", h, tensor.Bins)
	}
	if h.Bars[10].H != "120" || h.Bars[0].H != "1" || h.Bars[1].H != "0" {
		t.Errorf("bar heights %s, %s, %s: want the fullest bin full height, a bin of 1 still visible (1), an empty one 0",
			h.Bars[10].H, h.Bars[0].H, h.Bars[1].H)
	}
	if h.Bars[0].Title != "[-1, -0.9375): 1 value (<0.1%)" || h.Bars[63].Title != "[2.9375, 3]: 10 values (1.0%)" {
		t.Errorf("bar titles %q and %q, want the half-open range, the last one closed, and the count", h.Bars[0].Title, h.Bars[63].Title)
	}
	if h.MinLabel != "-1" || h.MaxLabel != "3" || h.MaxCount != "1,000" || h.ZeroX != "160" {
		t.Errorf("axis labels %q..%q, max count %q, zero at %q", h.MinLabel, h.MaxLabel, h.MaxCount, h.ZeroX)
	}
	if v.LogURL != "/c/x/n/w?row=32&hist=log#stats" || v.LinearURL != "/c/x/n/w?row=32#stats" {
		t.Errorf("scale links %q and %q", v.LinearURL, v.LogURL)
	}
	logv := NewStatsView(tt, stats(counts, -1, 3), StatsOptions{Log: true})
	if got := logv.Hist.Bars[63].H; got != svgNum(math.Log1p(10)/math.Log1p(1000)*HistHeight) {
		t.Errorf("log bar height of 10 of 1000 = %s", got)
	}

	flags := func(s *tensor.Stats, dtype string) string {
		var out []string
		for _, f := range NewStatsView(&ckpt.Tensor{DType: dtype}, s, StatsOptions{}).Flags {
			out = append(out, f.TestID)
		}
		return strings.Join(out, " ")
	}
	zero := &tensor.Stats{Numel: 4, Count: 4, Zeros: 4}
	constant := &tensor.Stats{Numel: 4, Count: 4, Min: 2, Max: 2}
	bad := &tensor.Stats{Numel: 4, Count: 2, NaN: 1, PosInf: 1, Min: 0, Max: 1}
	none := &tensor.Stats{Numel: 2, NaN: 2, Min: math.NaN(), Max: math.NaN(), Mean: math.NaN(), Std: math.NaN()}
	for _, tc := range []struct {
		s    *tensor.Stats
		want string
	}{
		{zero, "flag-all-zero"},
		{constant, "flag-constant"},
		{bad, "flag-nan flag-inf"},
		{none, "flag-nan flag-no-finite"},
		{&tensor.Stats{}, "flag-empty"},
		{stats(counts, -1, 3), "flag-finite"},
	} {
		if got := flags(tc.s, "float32"); got != tc.want {
			t.Errorf("flags of %+v = %q, want %q", tc.s, got, tc.want)
		}
	}
	nv := NewStatsView(tt, none, StatsOptions{})
	if nv.Hist != nil || nv.Rows[1].Value != "—" {
		t.Errorf("no finite values: histogram %v, min %q; want none and a dash", nv.Hist, nv.Rows[1].Value)
	}

	pc := &ckpt.Tensor{DType: "qint8", Quant: &ckpt.Quantization{Scheme: "per_channel_affine", Axis: 1}}
	if notes := NewStatsView(pc, zero, StatsOptions{}).Notes; len(notes) != 1 || !strings.Contains(notes[0], "dequantized") || !strings.Contains(notes[0], "axis 1") {
		t.Errorf("per-channel notes = %q, want them to say the statistics are dequantized per channel", notes)
	}
	sparse := &ckpt.Tensor{DType: "float32", Layout: "sparse_coo"}
	if notes := NewStatsView(sparse, zero, StatsOptions{}).Notes; len(notes) != 1 || !strings.Contains(notes[0], "sparse_coo") {
		t.Errorf("sparse notes = %q", notes)
	}
	if notes := NewStatsView(&ckpt.Tensor{DType: "complex64"}, zero, StatsOptions{}).Notes; len(notes) != 1 || !strings.Contains(notes[0], "magnitude") {
		t.Errorf("complex notes = %q", notes)
	}
}

func TestStatNumber(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {-34, "-34"}, {127, "127"}, {9007199254740993, "9.0072e+15"},
		{0.06513578717851498, "0.0651358"}, {-3.153724431991577, "-3.15372"}, {1.0002555e30, "1.00026e+30"},
		{math.NaN(), "nan"}, {math.Inf(-1), "-inf"},
	} {
		if got := StatNumber(tc.f); got != tc.want {
			t.Errorf("StatNumber(%v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestSparkline(t *testing.T) {
	counts := make([]int64, tensor.Bins)
	counts[0], counts[32] = 2, 4
	sp := NewSparkline(stats(counts, -1, 1))
	if sp.Path != "M0 16v-8h1v8zM32 16v-16h1v16z" || sp.Warn {
		t.Errorf("sparkline path %q warn %v", sp.Path, sp.Warn)
	}
	if NewSparkline(nil) != nil {
		t.Errorf("a sparkline without statistics")
	}
	if sp := NewSparkline(&tensor.Stats{Numel: 3, NaN: 3}); !sp.Warn || sp.Path != "" {
		t.Errorf("all-NaN sparkline = %+v, want a warning and no bars", sp)
	}
}
