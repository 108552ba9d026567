package loadtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/server"
	"github.com/ckptview/ckptview/internal/store"
)

// The load test runs only when CKPTVIEW_LOADTEST=1 (scripts/loadtest sets it):
//
//	CKPTVIEW_LOADTEST=1 go test -run TestLoad -timeout 0 ./internal/loadtest -args -clients 50 -duration 60s
//
// Without -url it builds ./cmd/web and starts it on a loopback port with a fresh data
// directory and its default flags; with -url (and -pid, to report its memory) it loads a
// server already running on this machine. The -max-* flags must be the server's (their
// defaults are cmd/web's) for the files at the limits to sit just under and over them.
var (
	flagURL        = flag.String("url", "", "server to load (loopback only); empty: build and start one")
	flagPID        = flag.Int("pid", 0, "the server's process id, to report its memory")
	flagClients    = flag.Int("clients", 50, "concurrent clients")
	flagDuration   = flag.Duration("duration", 60*time.Second, "how long the clients send requests")
	flagRequests   = flag.Int64("max-requests", 0, "stop after this many requests (0: 10 million)")
	flagReport     = flag.String("report", "", "also write the report to this file")
	flagMix        = flag.String("mix", "", `"limits": half the requests upload new files at the loader's limits`)
	flagMaxNodes   = flag.Int("max-nodes", loader.ServerOptions().MaxNodes, "the server's -max-nodes, to make files at the limit")
	flagMaxTensors = flag.Int("max-tensors", loader.ServerOptions().MaxTensors, "the server's -max-tensors")
	flagMaxValues  = flag.Int("max-values", loader.ServerOptions().MaxValues, "the server's -max-values")
	flagMaxMemo    = flag.Int("max-memo", loader.ServerOptions().MaxMemo, "the server's -max-memo")
	flagMaxOps     = flag.Int("max-pickle-ops", loader.ServerOptions().MaxOps, "the server's -max-pickle-ops")
	flagMaxPickle  = flag.Int64("max-pickle", loader.ServerOptions().MaxPickle, "the server's -max-pickle, in bytes")
)

const (
	modelsDir  = "../../testdata/models"
	hostileDir = "../../testdata/hostile"
)

func TestLoad(t *testing.T) {
	if os.Getenv("CKPTVIEW_LOADTEST") != "1" {
		t.Skip("set CKPTVIEW_LOADTEST=1 to run the load test (scripts/loadtest does)")
	}
	base, pid := *flagURL, *flagPID
	if base == "" {
		dir := t.TempDir()
		bin := filepath.Join(dir, "ckptview")
		if err := BuildServer(context.Background(), "../..", bin); err != nil {
			t.Fatal(err)
		}
		srv, err := StartServer(bin, filepath.Join(dir, "server.log"), "-data", filepath.Join(dir, "data"), "-examples", modelsDir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := srv.Stop(); err != nil {
				t.Errorf("stopping the server: %v", err)
			}
		})
		base, pid = srv.URL, srv.PID
	}
	rep, err := Run(context.Background(), Config{
		BaseURL: base, PID: pid, Clients: *flagClients, Duration: *flagDuration, MaxRequests: *flagRequests,
		ModelsDir: modelsDir, HostileDir: hostileDir, Seed: uint64(time.Now().UnixNano()), Mix: *flagMix,
		Limits: Limits{MaxNodes: *flagMaxNodes, MaxTensors: *flagMaxTensors, MaxValues: *flagMaxValues, MaxMemo: *flagMaxMemo, MaxOps: *flagMaxOps, MaxPickle: *flagMaxPickle},
		Logf:   t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("\n" + rep.String())
	if *flagReport != "" {
		if err := os.WriteFile(*flagReport, []byte(rep.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	if n := rep.Failures(); n > 0 {
		t.Errorf("%d requests failed (5xx, no answer, or a 4xx their kind does not expect)", n)
	}
	if len(rep.Markers) > 0 {
		t.Errorf("hostile payloads ran: %v", rep.Markers)
	}
}

// TestLoadSmoke runs a short load against an in-process server with small limits, so the
// load test itself is exercised by every go test run.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load")
	}
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	limits := Limits{MaxNodes: 5000, MaxTensors: 2000, MaxValues: 20000, MaxMemo: 5000, MaxOps: 100_000, MaxPickle: 1 << 20}
	srv := server.New(server.Config{Loader: loader.Options{
		MaxNodes: limits.MaxNodes, MaxTensors: limits.MaxTensors, MaxValues: limits.MaxValues, MaxMemo: limits.MaxMemo, MaxOps: limits.MaxOps, MaxPickle: limits.MaxPickle,
	}}, server.Deps{Store: st, Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	rep, err := Run(context.Background(), Config{
		BaseURL: "http://" + ln.Addr().String(), Clients: 4, Duration: 2 * time.Second,
		ModelsDir: modelsDir, HostileDir: hostileDir, Limits: limits, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if rep.Overall.Requests == 0 {
		t.Fatal("no requests made")
	}
	if n := rep.Failures(); n > 0 {
		t.Errorf("%d requests failed:\n%s", n, rep)
	}
}

// The files at the limits are what they say: under a limit they open, over it they are
// refused.
func TestLimitFiles(t *testing.T) {
	l := Limits{MaxNodes: 2000, MaxTensors: 500, MaxValues: 7000, MaxMemo: 3000, MaxOps: 50_000, MaxPickle: 256 << 10}
	opts := loader.Options{MaxNodes: l.MaxNodes, MaxTensors: l.MaxTensors, MaxValues: l.MaxValues, MaxMemo: l.MaxMemo, MaxOps: l.MaxOps, MaxPickle: l.MaxPickle}
	r := rand.New(rand.NewPCG(1, 2))
	for _, f := range limitFiles(l) {
		wantOpen := !f.over
		for range 2 {
			data := fresh(f, r)
			_, err := loader.Open(bytes.NewReader(data), int64(len(data)), opts)
			var le *loader.Error
			switch {
			case wantOpen && err != nil:
				t.Errorf("%s (%d bytes) = %v, want it to open under %+v", f.name, len(data), err, l)
			case !wantOpen && !errors.As(err, &le):
				t.Errorf("%s (%d bytes) = %v, want a *loader.Error over %+v", f.name, len(data), err, l)
			}
			if f.patch >= 0 && bytes.Equal(data, fresh(f, r)) {
				t.Errorf("fresh(%s) gave the same bytes twice", f.name)
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {1, 10}, {0.1, 1}, {0, 1}} {
		if got := percentile(d, tc.q); got != tc.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2"} {
		if err := checkLoopback(u); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", u, err)
		}
	}
	for _, u := range []string{"http://example.com", "http://10.0.0.1:80", "https://127.0.0.1", "127.0.0.1:80"} {
		if err := checkLoopback(u); err == nil {
			t.Errorf("checkLoopback(%q) = nil, want an error", u)
		}
	}
}
