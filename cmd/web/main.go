// Command web serves ckptview: upload a pickle or PyTorch checkpoint and look inside it
// without running anything in it.
//
// Every flag can also be set by an environment variable: -max-upload is CKPTVIEW_MAX_UPLOAD.
// A flag on the command line wins over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/ckptview/ckptview/internal/server"
	"github.com/ckptview/ckptview/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "ckptview:", err)
		os.Exit(1)
	}
}

// options are the command line, after the environment has filled in what it sets.
type options struct {
	addr      string
	data      string
	examples  string
	maxUpload byteSize
	logFormat string
	logLevel  slog.Level
}

// envPrefix starts the environment variable of each flag.
const envPrefix = "CKPTVIEW_"

// envName is the environment variable that sets a flag: -max-upload is CKPTVIEW_MAX_UPLOAD.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseOptions reads flags from args, with defaults from the environment.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (options, error) {
	o := options{maxUpload: byteSize(server.DefaultMaxUpload)}
	fs := flag.NewFlagSet("ckptview", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.addr, "addr", ":8080", "address to listen on")
	fs.StringVar(&o.data, "data", "", "data directory for uploads (default $XDG_DATA_HOME/ckptview or ~/.local/share/ckptview)")
	fs.StringVar(&o.examples, "examples", "testdata/models", "directory of bundled example files (none if it does not exist)")
	fs.Var(&o.maxUpload, "max-upload", "largest upload accepted: bytes, or a size such as 500MB or 20GiB")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "least important log level shown: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: ckptview [flags]\n\nServes the checkpoint viewer. Each flag is also the environment variable %sNAME.\n\n", envPrefix)
		fs.PrintDefaults()
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return o, fmt.Errorf("-log-format must be text or json, got %q", o.logFormat)
	}
	return o, nil
}

// run is the program: parse the options, open the store, import the examples and serve
// until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	var handler slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, hopts)
	}
	logger := slog.New(handler)

	dir := o.data
	if dir == "" {
		if dir, err = store.DefaultDir(); err != nil {
			return err
		}
	}
	st, err := store.New(dir)
	if err != nil {
		return err
	}
	logger.Info("data directory", "dir", dir)
	examples, err := st.ImportExamples(ctx, o.examples)
	if err != nil {
		// The viewer is useful without its examples: say why they are missing and go on.
		logger.Warn("no examples", "dir", o.examples, "err", err)
	} else if len(examples) > 0 {
		logger.Info("examples imported", "dir", o.examples, "files", len(examples))
	}

	srv := server.New(server.Config{Addr: o.addr, MaxUpload: int64(o.maxUpload)},
		server.Deps{Store: st, Examples: examples, Logger: logger})
	if err := srv.Start(ctx); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// byteSize is a flag value for a size in bytes: "1048576", "500MB", "20GiB".
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 || n*float64(mult) >= 1<<63 {
		return fmt.Errorf("not a positive size: %q (use bytes or a unit: 500MB, 20GiB)", s)
	}
	*b = byteSize(n * float64(mult))
	return nil
}
