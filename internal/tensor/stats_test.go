package tensor_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

const modelsDir = "../../testdata/models"

type wantStats struct {
	Count  int64    `json:"count"`
	Min    *float64 `json:"min"`
	Max    *float64 `json:"max"`
	Mean   *float64 `json:"mean"`
	Std    *float64 `json:"std"`
	L2     float64  `json:"l2"`
	Zeros  int64    `json:"zeros"`
	NaN    int64    `json:"nan"`
	PosInf int64    `json:"posinf"`
	NegInf int64    `json:"neginf"`
	Hist   *struct {
		Edges  []float64 `json:"edges"`
		Counts []int64   `json:"counts"`
	} `json:"histogram"`
}

type wantTensor struct {
	Path  string     `json:"path"`
	DType string     `json:"dtype"`
	Stats *wantStats `json:"stats"`
	Deq   *wantStats `json:"stats_dequantized"`
}

// ViewOf is how the server turns a loader tensor into a view (kept here for the test).
func viewOf(t *ckpt.Tensor) *tensor.View {
	v := &tensor.View{DType: t.DType, Shape: t.Shape, Strides: t.Strides, Offset: t.StorageOffset,
		Data: t.Storage.Data, DataOffset: t.Storage.Offset, DataSize: t.Storage.Size, BigEndian: t.Storage.ByteOrder == "big"}
	if tensor.ElementSize(t.DType) == 0 && t.Descr != "" && t.DType != "object" {
		// str, bytes, structured: items copied as they are
		v.ItemSize, v.NPYDescr = int64(ckpt.DTypeSize(t.DType)), t.Descr
	}
	return v
}

// TestStatsMatchNumpy compares every tensor's statistics with what numpy computed on the
// values torch.load / pickle.load returned.
func TestStatsMatchNumpy(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for name, msg := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var fe struct {
			Tensors []wantTensor `json:"tensors"`
		}
		if err := json.Unmarshal(msg, &fe); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		for _, wt := range fe.Tensors {
			n, err := ck.Node(wt.Path)
			if err != nil || n.Tensor == nil || n.Tensor.Storage == nil || wt.Stats == nil {
				continue
			}
			if tensor.ElementSize(n.Tensor.DType) == 0 {
				continue
			}
			v := viewOf(n.Tensor)
			if q := n.Tensor.Quant; q != nil {
				if q.Scheme != "per_tensor_affine" || wt.Deq == nil {
					continue
				}
				// statistics of a quantized tensor are over its dequantized values
				v.Quantized, v.Scale, v.ZeroPoint = true, q.Scale, q.ZeroPoint
				wt.Stats = wt.Deq
			}
			got, err := tensor.Compute(context.Background(), v, 2, nil)
			if err != nil {
				t.Errorf("%s %s: Compute: %v", name, wt.Path, err)
				continue
			}
			checked++
			w := wt.Stats
			ctx := name + " " + wt.Path
			if got.Count != w.Count || got.Zeros != w.Zeros || got.NaN != w.NaN || got.PosInf != w.PosInf || got.NegInf != w.NegInf {
				t.Errorf("%s: counts (count zeros nan +inf -inf) = %d %d %d %d %d, want %d %d %d %d %d", ctx,
					got.Count, got.Zeros, got.NaN, got.PosInf, got.NegInf, w.Count, w.Zeros, w.NaN, w.PosInf, w.NegInf)
			}
			if w.Min != nil && (got.Min != *w.Min || got.Max != *w.Max) {
				t.Errorf("%s: min/max = %v/%v, want %v/%v (exact)", ctx, got.Min, got.Max, *w.Min, *w.Max)
			}
			if w.Mean != nil {
				near(t, ctx+" mean", got.Mean, *w.Mean, 1e-6*math.Max(1, math.Abs(*w.Std)))
				near(t, ctx+" std", got.Std, *w.Std, 1e-6*math.Max(1e-300, *w.Std))
				near(t, ctx+" l2", got.L2, w.L2, 1e-6*math.Max(1e-300, w.L2))
			}
			if w.Hist != nil {
				for i := range w.Hist.Counts {
					if got.Histogram.Counts[i] != w.Hist.Counts[i] {
						t.Errorf("%s: histogram counts = %v, want %v", ctx, got.Histogram.Counts, w.Hist.Counts)
						break
					}
				}
				for i := range w.Hist.Edges {
					if got.Histogram.Edges[i] != w.Hist.Edges[i] {
						t.Errorf("%s: histogram edge %d = %v, want %v", ctx, i, got.Histogram.Edges[i], w.Hist.Edges[i])
						break
					}
				}
			}
		}
	}
	if checked < 50 {
		t.Errorf("checked %d tensors; the fixtures hold more", checked)
	}
}

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.17g, want %.17g (±%g)", what, got, want, tol)
	}
}
