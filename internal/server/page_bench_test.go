package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptview/ckptview/internal/store"
)

// BenchmarkFirstPage times a checkpoint's page as a browser first asks for it after the
// file is opened: what the page makes once per checkpoint (a state dict's module tree, its
// layer layout, the table of dtypes) included, the open itself not. The file is
// CKPTVIEW_BENCH_PAGE_FILE, default scripts/bench-pickle's t200k.pt (a state dict of
// 200,000 tensors made by torch.save).
func BenchmarkFirstPage(b *testing.B) {
	path := os.Getenv("CKPTVIEW_BENCH_PAGE_FILE")
	if path == "" {
		path = filepath.Join(os.TempDir(), "ckptview-bench", "t200k.pt")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Skipf("no input (%v): run scripts/bench-pickle once, or set CKPTVIEW_BENCH_PAGE_FILE", err)
	}
	st, err := store.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var id string
	for b.Loop() {
		b.StopTimer()
		s := New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
		if id == "" {
			rec := do(s, http.MethodPost, "/api/checkpoints?name="+filepath.Base(path), bytes.NewReader(data))
			if rec.Code != http.StatusCreated {
				b.Fatalf("upload = %d %.300s", rec.Code, rec.Body)
			}
			id = decode[uploadJSON](b, rec).ID
			s.Close()
			s = New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
		}
		if rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil); rec.Code != http.StatusOK {
			b.Fatalf("open = %d %.300s", rec.Code, rec.Body)
		}
		b.StartTimer()
		if rec := do(s, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
			b.Fatalf("page = %d %.300s", rec.Code, rec.Body)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
