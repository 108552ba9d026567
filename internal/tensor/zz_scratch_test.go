package tensor_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/export"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

func TestScratchPerTensor(t *testing.T) {
	path := os.Getenv("CKPTVIEW_BENCH_FILE")
	if path == "" { t.Skip() }
	f, _ := os.Open(path)
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil { t.Fatal(err) }
	agg := map[string]time.Duration{}
	bytes := map[string]int64{}
	for _, c := range ck.Root.Children {
		if c.Tensor == nil { continue }
		v := export.ViewOf(c.Tensor)
		k := c.Key
		if i := strings.Index(k, "."); strings.HasPrefix(k, "h.") { k = k[strings.Index(k[i+1:], ".")+i+2:] }
		t0 := time.Now()
		for range 3 { tensor.Compute(context.Background(), v, 0, nil) }
		agg[k] += time.Since(t0) / 3
		bytes[k] += v.Numel() * int64(tensor.ElementSize(v.DType))
	}
	for k, d := range agg { fmt.Printf("%-22s %8.1f ms %8.1f MB %7.0f MB/s\n", k, d.Seconds()*1000, float64(bytes[k])/1e6, float64(bytes[k])/1e6/d.Seconds()) }
}
