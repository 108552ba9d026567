package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    options
		wantErr string
	}{
		{
			name: "defaults",
			want: options{addr: ":8080", examples: "testdata/models", maxUpload: 20 << 30, logFormat: "text"},
		},
		{
			name: "environment",
			env:  map[string]string{"CKPTVIEW_ADDR": ":9000", "CKPTVIEW_DATA": "/srv/data", "CKPTVIEW_MAX_UPLOAD": "5MB", "CKPTVIEW_LOG_FORMAT": "json"},
			want: options{addr: ":9000", data: "/srv/data", examples: "testdata/models", maxUpload: 5e6, logFormat: "json"},
		},
		{
			name: "flags win over the environment",
			args: []string{"-addr", "127.0.0.1:1", "-max-upload", "1GiB", "-examples", ""},
			env:  map[string]string{"CKPTVIEW_ADDR": ":9000", "CKPTVIEW_MAX_UPLOAD": "5MB"},
			want: options{addr: "127.0.0.1:1", maxUpload: 1 << 30, logFormat: "text"},
		},
		{name: "bad size flag", args: []string{"-max-upload", "lots"}, wantErr: "not a positive size"},
		{name: "bad size env", env: map[string]string{"CKPTVIEW_MAX_UPLOAD": "-1"}, wantErr: "CKPTVIEW_MAX_UPLOAD"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, wantErr: "-log-format"},
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
