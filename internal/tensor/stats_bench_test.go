package tensor_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

// BenchmarkStatsFile computes the statistics of every tensor of the checkpoint named by
// $CKPTVIEW_BENCH_FILE (such as the GPT-2-medium file scripts/bench-stats makes), one tensor
// after the other as a user clicking through them would, each on all cores, and sums the
// same bytes as the memory-bandwidth reference:
//
//	compute         Compute on views read through *os.File (pread from the page cache),
//	                as the server does
//	compute-memory  Compute on the same views with the file held in memory: the kernels
//	                alone, without the copy out of the page cache
//	sum-file        the same byte ranges read with ReadAt in 1 MB chunks on all cores and
//	                summed as uint64: what reading the bytes once costs at best
//	sum-memory      the same byte ranges summed as uint64 on all cores straight from memory
//
// MB/s counts each tensor's bytes (numel × element size; a tied tensor counts once per
// tensor, as it is read once per tensor). Compute reads its bytes twice (moments, then
// histogram), so a memory-bound Compute runs at half of sum-file at best.
func BenchmarkStatsFile(b *testing.B) {
	path := os.Getenv("CKPTVIEW_BENCH_FILE")
	if path == "" {
		b.Skip("set CKPTVIEW_BENCH_FILE to a checkpoint to time its statistics")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		b.Fatalf("loader.Open(%s) = %v", path, err)
	}
	views := tensorViews(ck.Root)
	if len(views) == 0 {
		b.Skipf("%s holds no tensor whose values can be read", path)
	}
	var total int64
	var ranges []byteRange
	for _, v := range views {
		es := int64(tensor.ElementSize(v.DType))
		total += v.Numel() * es
		ranges = append(ranges, byteRange{v.DataOffset + v.Offset*es, v.Numel() * es})
	}
	var mem []byte // the file in memory, made on first use
	inMemory := func(b *testing.B) []byte {
		if mem == nil {
			if mem, err = os.ReadFile(path); err != nil {
				b.Fatal(err)
			}
		}
		return mem
	}
	compute := func(b *testing.B, data io.ReaderAt) {
		b.SetBytes(total)
		b.ReportMetric(float64(len(views)), "tensors")
		for b.Loop() {
			for _, v := range views {
				w := *v
				if data != nil {
					w.Data = data
				}
				if _, err := tensor.Compute(context.Background(), &w, 0, nil); err != nil {
					b.Fatalf("Compute(%s) = %v", w.DType, err)
				}
			}
		}
	}
	name := filepath.Base(path)
	b.Run(name+"/compute", func(b *testing.B) { compute(b, nil) })
	b.Run(name+"/compute-memory", func(b *testing.B) { compute(b, bytes.NewReader(inMemory(b))) })
	b.Run(name+"/sum-file", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			sink.Add(sumRanges(ranges, func(buf []byte, off int64) []byte {
				n, err := f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					b.Fatal(err)
				}
				return buf[:n]
			}))
		}
	})
	b.Run(name+"/sum-memory", func(b *testing.B) {
		m := inMemory(b)
		b.SetBytes(total)
		for b.Loop() {
			sink.Add(sumRanges(ranges, func(buf []byte, off int64) []byte { return m[off : off+int64(len(buf))] }))
		}
	})
}

// sink keeps the sums alive so that the compiler cannot drop them.
var sink atomic.Uint64

type byteRange struct{ off, n int64 }

// chunk is how many bytes one read fetches.
const chunk = 1 << 20

// sumRanges sums the ranges as uint64 words in host order, 1 MB at a time on all cores;
// get returns the chunk of len(buf) bytes at an offset (read into buf, or a slice of
// memory). Unaligned words are fine on the machines this runs on; torch aligns its
// storages to 64 bytes anyway.
func sumRanges(ranges []byteRange, get func(buf []byte, off int64) []byte) uint64 {
	type piece struct{ off, n int64 }
	var pieces []piece
	for _, r := range ranges {
		for o := int64(0); o < r.n; o += chunk {
			pieces = append(pieces, piece{r.off + o, min(chunk, r.n-o)})
		}
	}
	var next atomic.Int64
	var total atomic.Uint64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			var s0, s1, s2, s3 uint64
			for {
				i := next.Add(1) - 1
				if i >= int64(len(pieces)) {
					break
				}
				p := pieces[i]
				c := get(buf[:p.n], p.off)[:p.n]
				ws := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(c))), len(c)/8)
				j := 0
				for ; j+8 <= len(ws); j += 8 {
					w := ws[j : j+8 : j+8]
					s0 += w[0] + w[4]
					s1 += w[1] + w[5]
					s2 += w[2] + w[6]
					s3 += w[3] + w[7]
				}
				for ; j < len(ws); j++ {
					s0 += ws[j]
				}
				for _, x := range c[len(ws)*8:] {
					s0 += uint64(x)
				}
			}
			total.Add(s0 + s1 + s2 + s3)
		}()
	}
	wg.Wait()
	return total.Load()
}

// tensorViews lists the views of every tensor and array in the tree, in tree order, as the
// server makes them for statistics.
func tensorViews(n *ckpt.Node) []*tensor.View {
	var out []*tensor.View
	var walk func(n *ckpt.Node)
	walk = func(n *ckpt.Node) {
		if n.Kind == ckpt.KindTensor || n.Kind == ckpt.KindNDArray {
			if v := n.View(); v != nil && v.Check() == nil {
				out = append(out, v)
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(n)
	return out
}
