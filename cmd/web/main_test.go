package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/server"
)

func TestParseOptions(t *testing.T) {
	with := func(f func(o *options)) options {
		o := defaultOptions()
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr string
	}{
		{
			name: "defaults",
			want: with(func(o *options) {}),
		},
		{
			name: "environment",
			env: map[string]string{"CKPTVIEW_ADDR": ":9000", "CKPTVIEW_DATA": "/srv/data", "CKPTVIEW_MAX_UPLOAD": "5MB", "CKPTVIEW_LOG_FORMAT": "json",
				"CKPTVIEW_UPLOAD_TOKEN": "tok", "CKPTVIEW_MAX_NODES": "1000", "CKPTVIEW_MEMORY_LIMIT": "1GiB", "CKPTVIEW_OPEN_CONCURRENCY": "4"},
			want: with(func(o *options) {
				o.addr, o.data, o.maxUpload, o.logFormat = ":9000", "/srv/data", 5e6, "json"
				o.uploadToken, o.maxNodes, o.memoryLimit, o.openConcurrency = "tok", 1000, 1<<30, 4
			}),
		},
		{
			name: "flags win over the environment",
			args: []string{"-addr", "127.0.0.1:1", "-max-upload", "1GiB", "-examples", "", "-upload-token", "flag", "-memory-limit", "off"},
			env:  map[string]string{"CKPTVIEW_ADDR": ":9000", "CKPTVIEW_MAX_UPLOAD": "5MB", "CKPTVIEW_UPLOAD_TOKEN": "env"},
			want: with(func(o *options) {
				o.addr, o.maxUpload, o.examples, o.uploadToken, o.memoryLimit = "127.0.0.1:1", 1<<30, "", "flag", 0
			}),
		},
		{
			name: "every limit",
			args: []string{"-max-pickle-ops", "1", "-max-depth", "2", "-max-memo", "3", "-max-int-digits", "4", "-max-nodes", "5",
				"-max-pickle", "6MiB", "-max-inflate", "7MiB", "-open-concurrency", "8", "-cache-size", "9", "-cache-memory", "10MiB",
				"-stats-concurrency", "11", "-stats-workers", "12", "-stats-cache-size", "13", "-max-json-export", "14MiB",
				"-stall-timeout", "15s", "-shutdown-timeout", "16s"},
			want: with(func(o *options) {
				o.maxPickleOps, o.maxDepth, o.maxMemo, o.maxIntDigits, o.maxNodes = 1, 2, 3, 4, 5
				o.maxPickle, o.maxInflate, o.openConcurrency, o.cacheSize, o.cacheMemory = 6<<20, 7<<20, 8, 9, 10<<20
				o.statsConcurrency, o.statsWorkers, o.statsCacheSize, o.maxJSONExport = 11, 12, 13, 14<<20
				o.stallTimeout, o.shutdownTimeout = 15*time.Second, 16*time.Second
			}),
		},
		{name: "bad size flag", args: []string{"-max-upload", "lots"}, wantErr: "not a positive size"},
		{name: "bad size env", env: map[string]string{"CKPTVIEW_MAX_UPLOAD": "-1"}, wantErr: "CKPTVIEW_MAX_UPLOAD"},
		{name: "bad memory limit", args: []string{"-memory-limit", "some"}, wantErr: "or off"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, wantErr: "-log-format"},
		{name: "zero nodes", args: []string{"-max-nodes", "0"}, wantErr: "-max-nodes must be at least 1"},
		{name: "no open slot", env: map[string]string{"CKPTVIEW_OPEN_CONCURRENCY": "0"}, wantErr: "-open-concurrency"},
		{name: "zero stall timeout", args: []string{"-stall-timeout", "0s"}, wantErr: "-stall-timeout"},
		{name: "stray argument", args: []string{"model.pt"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseOptions(%q, %v) error = %v, want one mentioning %q", tc.args, tc.env, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOptions(%q, %v): %v", tc.args, tc.env, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(options{})); diff != "" {
				t.Errorf("parseOptions(%q, %v) (-want +got):\n%s", tc.args, tc.env, diff)
			}
		})
	}
}

// Every option reaches the server's Config, the loader's limits included.
func TestServerConfig(t *testing.T) {
	o, err := parseOptions([]string{"-addr", "127.0.0.1:1", "-max-upload", "1MiB", "-upload-token", "tok",
		"-max-pickle-ops", "1", "-max-depth", "2", "-max-memo", "3", "-max-int-digits", "4", "-max-nodes", "5",
		"-max-pickle", "6MiB", "-max-inflate", "7MiB", "-open-concurrency", "8", "-cache-size", "9", "-cache-memory", "10MiB",
		"-stats-concurrency", "11", "-stats-workers", "12", "-stats-cache-size", "13", "-max-json-export", "14MiB",
		"-stall-timeout", "15s", "-shutdown-timeout", "16s", "-max-decompress", "17MiB", "-open-timeout", "18s",
		"-stats-timeout", "19s", "-stats-job-idle", "20s", "-max-values", "21", "-max-tensors", "22"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := server.Config{
		Addr: "127.0.0.1:1", MaxUpload: 1 << 20, UploadToken: "tok",
		Loader: loader.Options{MaxOps: 1, MaxDepth: 2, MaxMemo: 3, MaxIntChars: 4, MaxNodes: 5, MaxTensors: 22, MaxValues: 21, MaxPickle: 6 << 20, MaxInflate: 7 << 20,
			MaxDecompress: 17 << 20},
		OpenConcurrency: 8, OpenTimeout: 18 * time.Second, CacheSize: 9, CacheBytes: 10 << 20,
		StatsConcurrency: 11, StatsWorkers: 12, StatsCacheSize: 13, MaxJSONExport: 14 << 20,
		StallTimeout: 15 * time.Second, ShutdownTimeout: 16 * time.Second,
		StatsTimeout: 19 * time.Second, StatsJobIdle: 20 * time.Second,
	}
	if diff := cmp.Diff(want, o.serverConfig(), cmpopts.IgnoreUnexported(loader.Options{})); diff != "" {
		t.Errorf("serverConfig (-want +got):\n%s", diff)
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1024", 1024},
		{"500MB", 500e6},
		{"20GB", 20e9},
		{"20GiB", 20 << 30},
		{"1.5 kib", 1536},
		{"2g", 2 << 30},
		{"7b", 7},
	} {
		var b byteSize
		if err := b.Set(tc.in); err != nil || int64(b) != tc.want {
			t.Errorf("byteSize.Set(%q) = %d, %v, want %d", tc.in, b, err, tc.want)
		}
	}
	for _, in := range []string{"", "0", "-5", "MB", "1e30GB", "ten"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("byteSize.Set(%q) = %d, want an error", in, b)
		}
	}
}

// TestRunStops starts the whole program on a free port and checks it stops cleanly when
// its context ends.
func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	args := []string{"-addr", "127.0.0.1:0", "-data", t.TempDir(), "-examples", t.TempDir() + "/none"}
	if err := run(ctx, args, func(string) string { return "" }, io.Discard); err != nil {
		t.Fatalf("run(%q) with an ended context = %v, want nil", args, err)
	}
}
