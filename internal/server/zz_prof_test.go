package server

import (
	"log/slog"
	"os"
	"testing"

	"github.com/ckptview/ckptview/internal/store"
)

func BenchmarkZZFirstOpen(b *testing.B) {
	st, err := store.New("/tmp/srvdata")
	if err != nil {
		b.Fatal(err)
	}
	id := os.Getenv("ZZID")
	for i := 0; i < b.N; i++ {
		s := New(Config{}, Deps{Store: st, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
		rec := do(s, "GET", "/api/checkpoints/"+id, nil)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body.String())
		}
		s.Close()
	}
}
