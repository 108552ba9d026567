package export

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/tensor"
)

// StatsRow is one tensor's statistics in a whole-checkpoint export.
type StatsRow struct {
	Path  string
	DType string
	Shape []int64
	Stats *tensor.Stats // nil when the values could not be read; Err says why
	Err   string
}

var statsColumns = []string{"path", "dtype", "shape", "numel", "count", "min", "max", "mean", "std", "l2", "zeros", "nan", "posinf", "neginf", "error"}

// WriteStatsCSV writes one line per tensor. Empty cells mean "no finite values".
func WriteStatsCSV(w io.Writer, rows []StatsRow) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(statsColumns); err != nil {
		return err
	}
	for _, r := range rows {
		if err := cw.Write(statsRecord(r)); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// statsRecord is one CSV line of WriteStatsCSV.
func statsRecord(r StatsRow) []string {
	rec := []string{r.Path, r.DType, shapeText(r.Shape), "", "", "", "", "", "", "", "", "", "", "", r.Err}
	if s := r.Stats; s != nil {
		rec[3] = strconv.FormatInt(s.Numel, 10)
		rec[4] = strconv.FormatInt(s.Count, 10)
		for i, f := range []float64{s.Min, s.Max, s.Mean, s.Std, s.L2} {
			rec[5+i] = csvFloat(f)
		}
		for i, n := range []int64{s.Zeros, s.NaN, s.PosInf, s.NegInf} {
			rec[10+i] = strconv.FormatInt(n, 10)
		}
	}
	return rec
}

// StatsCSVWriter writes what WriteStatsCSV writes one row at a time, so an export can
// stream rows as their statistics are computed. Close writes the header of an empty export.
type StatsCSVWriter struct {
	cw      *csv.Writer
	started bool
}

// NewStatsCSVWriter writes CSV statistics rows to w.
func NewStatsCSVWriter(w io.Writer) *StatsCSVWriter { return &StatsCSVWriter{cw: csv.NewWriter(w)} }

// Write writes one row (the header first), and flushes it to the underlying writer.
func (s *StatsCSVWriter) Write(r StatsRow) error {
	if err := s.header(); err != nil {
		return err
	}
	if err := s.cw.Write(statsRecord(r)); err != nil {
		return err
	}
	s.cw.Flush()
	return s.cw.Error()
}

func (s *StatsCSVWriter) header() error {
	if s.started {
		return nil
	}
	s.started = true
	return s.cw.Write(statsColumns)
}

// Close ends the export (the header alone when there were no rows).
func (s *StatsCSVWriter) Close() error {
	if err := s.header(); err != nil {
		return err
	}
	s.cw.Flush()
	return s.cw.Error()
}

func shapeText(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func csvFloat(f float64) string {
	if math.IsNaN(f) {
		return ""
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// StatsJSON is the JSON form of a tensor's statistics, shared by the API and exports.
// Values that do not exist (min of an empty tensor) are null.
type StatsJSON struct {
	Numel     int64         `json:"numel"`
	Count     int64         `json:"count"`
	Min       *float64      `json:"min"`
	Max       *float64      `json:"max"`
	Mean      *float64      `json:"mean"`
	Std       *float64      `json:"std"`
	L2        *float64      `json:"l2"`
	Zeros     int64         `json:"zeros"`
	NaN       int64         `json:"nan"`
	PosInf    int64         `json:"posinf"`
	NegInf    int64         `json:"neginf"`
	Histogram HistogramJSON `json:"histogram"`
}

// HistogramJSON is a histogram's bin edges (Bins+1) and counts (Bins).
type HistogramJSON struct {
	Edges  []float64 `json:"edges"`
	Counts []int64   `json:"counts"`
}

// NewStatsJSON converts statistics for JSON.
func NewStatsJSON(s *tensor.Stats) StatsJSON {
	// null: no finite value, or a sum that overflows float64 (values near 1e300)
	opt := func(f float64) *float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return &f
	}
	out := StatsJSON{Numel: s.Numel, Count: s.Count, Min: opt(s.Min), Max: opt(s.Max), Mean: opt(s.Mean), Std: opt(s.Std),
		L2: opt(s.L2), Zeros: s.Zeros, NaN: s.NaN, PosInf: s.PosInf, NegInf: s.NegInf,
		Histogram: HistogramJSON{Edges: s.Histogram.Edges, Counts: s.Histogram.Counts}}
	if out.Histogram.Edges == nil {
		out.Histogram.Edges, out.Histogram.Counts = []float64{}, []int64{}
	}
	return out
}

// WriteStatsJSON writes {"tensors": [{"path", "dtype", "shape", "stats" | "error"}]}.
func WriteStatsJSON(w io.Writer, rows []StatsRow) error {
	out := struct {
		Tensors []statsJSONRow `json:"tensors"`
	}{Tensors: make([]statsJSONRow, 0, len(rows))}
	for _, r := range rows {
		out.Tensors = append(out.Tensors, newStatsJSONRow(r))
	}
	enc := json.NewEncoder(w)
	return enc.Encode(out)
}

// statsJSONRow is one element of WriteStatsJSON's "tensors".
type statsJSONRow struct {
	Path  string     `json:"path"`
	DType string     `json:"dtype"`
	Shape []int64    `json:"shape"`
	Stats *StatsJSON `json:"stats,omitempty"`
	Error string     `json:"error,omitempty"`
}

func newStatsJSONRow(r StatsRow) statsJSONRow {
	x := statsJSONRow{Path: r.Path, DType: r.DType, Shape: r.Shape, Error: r.Err}
	if x.Shape == nil {
		x.Shape = []int64{}
	}
	if r.Stats != nil {
		s := NewStatsJSON(r.Stats)
		x.Stats = &s
	}
	return x
}

// StatsJSONWriter writes what WriteStatsJSON writes one row at a time, so an export can
// stream rows as their statistics are computed. Close ends the document.
type StatsJSONWriter struct {
	w    io.Writer
	rows int
}

// NewStatsJSONWriter writes JSON statistics rows to w.
func NewStatsJSONWriter(w io.Writer) *StatsJSONWriter { return &StatsJSONWriter{w: w} }

// Write writes one row.
func (s *StatsJSONWriter) Write(r StatsRow) error {
	b, err := json.Marshal(newStatsJSONRow(r))
	if err != nil {
		return err
	}
	prefix := ","
	if s.rows == 0 {
		prefix = `{"tensors":[`
	}
	s.rows++
	_, err = io.WriteString(s.w, prefix+string(b))
	return err
}

// Close ends the document.
func (s *StatsJSONWriter) Close() error {
	end := "]}\n"
	if s.rows == 0 {
		end = `{"tensors":[]}` + "\n"
	}
	_, err := io.WriteString(s.w, end)
	return err
}
