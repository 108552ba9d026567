package export

import (
	"bytes"
	"math"
	"testing"

	"github.com/ckptview/ckptview/internal/tensor"
)

// The streaming writers write exactly what the batch functions write, for no rows, one,
// and several (with an error row and an empty tensor).
func TestStatsWritersMatchBatch(t *testing.T) {
	st := &tensor.Stats{Numel: 3, Count: 2, Zeros: 1, NaN: 1, Min: 0, Max: 2.5, Mean: 1.25, Std: 1.25, L2: 2.5,
		Histogram: tensor.Histogram{Edges: []float64{0, 1.25, 2.5}, Counts: []int64{1, 1}}}
	empty := &tensor.Stats{Min: math.NaN(), Max: math.NaN(), Mean: math.NaN(), Std: math.NaN()}
	all := []StatsRow{
		{Path: "/a", DType: "float32", Shape: []int64{3}, Stats: st},
		{Path: "/b<&>", DType: "str160", Shape: []int64{2}, Err: "cannot decode"},
		{Path: "/c", DType: "float32", Shape: []int64{0}, Stats: empty},
		{Path: "/d", DType: "float64"},
	}
	for _, n := range []int{0, 1, len(all)} {
		rows := all[:n]
		var batch, stream bytes.Buffer
		if err := WriteStatsCSV(&batch, rows); err != nil {
			t.Fatal(err)
		}
		cw := NewStatsCSVWriter(&stream)
		for _, r := range rows {
			if err := cw.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := cw.Close(); err != nil {
			t.Fatal(err)
		}
		if batch.String() != stream.String() {
			t.Errorf("%d rows: StatsCSVWriter wrote\n%s\nWriteStatsCSV wrote\n%s", n, stream.String(), batch.String())
		}

		batch.Reset()
		stream.Reset()
		if err := WriteStatsJSON(&batch, rows); err != nil {
			t.Fatal(err)
		}
		jw := NewStatsJSONWriter(&stream)
		for _, r := range rows {
			if err := jw.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := jw.Close(); err != nil {
			t.Fatal(err)
		}
		if batch.String() != stream.String() {
			t.Errorf("%d rows: StatsJSONWriter wrote\n%s\nWriteStatsJSON wrote\n%s", n, stream.String(), batch.String())
		}
	}
}
