package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/ckptview/ckptview/internal/cli"
)

// usageText is what ckptview help prints.
const usageText = `Usage:
  ckptview [serve] [flags]             serve the checkpoint viewer (the default)
  ckptview scan [flags] PATH...        say what loading each file with Python would run
  ckptview inspect [flags] FILE [PTR]  show a file's summary and tree in the terminal

Each command's -h lists its flags. scan exits 0 when every file is clean, 1 when a file
holds a danger (or a warning, with -fail-on warning), 2 when a file could not be read to
the end (fail closed) or the command line is wrong.
`

// version names this build: the module version, or the VCS revision of a checkout.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return ""
}

// parseInterspersed parses flags that may come before, between or after the positional
// arguments (ckptview scan models/ -format sarif), as users write them; "--" ends the
// flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// commandFlags is a flag set for a command with the loader's limits (the server's flags
// and defaults) and the environment applied.
func commandFlags(name, usage string, stderr io.Writer, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("ckptview "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addLoaderFlags(fs, o)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// finishFlags applies the environment under the command line and checks the limits.
func finishFlags(fs *flag.FlagSet, args []string, getenv func(string) string, o *options) ([]string, error) {
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	return pos, o.checkLoaderLimits()
}

// usageError prints a command-line problem and returns scan's status for it.
func usageError(stderr io.Writer, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "ckptview:", err)
	return cli.ExitUnreadable
}

// runScan is ckptview scan.
func runScan(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o := defaultOptions()
	fs := commandFlags("scan", `Usage: ckptview scan [flags] PATH...

Opens every file named, and every file under every folder named (by its content, whatever
its name), with the server's loader and limits, and says for each what loading it with
Python (pickle, torch.load, joblib.load) would run. Nothing in a file is run.

Exit status: 0 every file clean; 1 a danger in some file (or a warning, with -fail-on
warning); 2 a file that could not be read to the end, or a wrong command line.

`, stderr, &o)
	format := fs.String("format", "text", "output: text, json (one object per file per line) or sarif (SARIF 2.1.0)")
	failOn := fs.String("fail-on", "danger", "what fails the scan (exit 1): danger, or warning (dangers and warnings)")
	verbose := fs.Bool("v", false, "text output lists warnings and notes too, not only dangers")
	workers := fs.Int("workers", 0, "files opened at once (0: one per CPU)")
	paths, err := finishFlags(fs, args, getenv, &o)
	if err != nil {
		return usageError(stderr, err)
	}
	switch {
	case len(paths) == 0:
		fs.Usage()
		return usageError(stderr, errors.New("scan needs at least one file or folder"))
	case *format != "text" && *format != "json" && *format != "sarif":
		return usageError(stderr, fmt.Errorf("-format must be text, json or sarif, got %q", *format))
	case *failOn != "danger" && *failOn != "warning":
		return usageError(stderr, fmt.Errorf("-fail-on must be danger or warning, got %q", *failOn))
	case *workers < 0:
		return usageError(stderr, fmt.Errorf("-workers must be at least 0, got %d", *workers))
	}
	return cli.Scan(ctx, cli.ScanConfig{
		Options:       cli.Options{Loader: o.loaderOptions(), OpenTimeout: o.openTimeout},
		Paths:         paths,
		Format:        *format,
		FailOnWarning: *failOn == "warning",
		Verbose:       *verbose,
		Workers:       *workers,
		Version:       version(),
	}, stdout)
}

// runInspect is ckptview inspect.
func runInspect(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o := defaultOptions()
	fs := commandFlags("inspect", `Usage: ckptview inspect [flags] FILE [POINTER]

Shows a file's summary (format, tensors, findings, torch.load(weights_only=True)'s verdict),
its bytes per dtype and its tree, or the node at POINTER (a JSON Pointer as the web pages
show it: /model_state_dict/fc.weight). With -stats, the statistics of every tensor under it.
Exit status: 0 shown; 2 the file cannot be opened or has no such node.

`, stderr, &o)
	format := fs.String("format", "text", "output: text (80 columns) or json")
	depth := fs.Int("depth", 2, "levels of the tree shown under the node")
	items := fs.Int("items", 20, "children shown of each container")
	stats := fs.Bool("stats", false, "compute the statistics of every tensor under the node")
	workers := fs.Int("workers", 0, "goroutines reading one tensor for -stats (0: GOMAXPROCS, at most 8)")
	pos, err := finishFlags(fs, args, getenv, &o)
	if err != nil {
		return usageError(stderr, err)
	}
	switch {
	case len(pos) == 0 || len(pos) > 2:
		fs.Usage()
		return usageError(stderr, errors.New("inspect needs a file and at most one pointer"))
	case *format != "text" && *format != "json":
		return usageError(stderr, fmt.Errorf("-format must be text or json, got %q", *format))
	case *depth < 0 || *items < 1:
		return usageError(stderr, errors.New("-depth must be at least 0 and -items at least 1"))
	}
	cfg := cli.InspectConfig{
		Options: cli.Options{Loader: o.loaderOptions(), OpenTimeout: o.openTimeout},
		File:    pos[0], Format: *format, Depth: *depth, Items: *items, Stats: *stats, Workers: *workers,
	}
	if len(pos) == 2 {
		cfg.Pointer = pos[1]
	}
	if err := cli.Inspect(ctx, cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "ckptview:", strings.TrimPrefix(err.Error(), cli.ErrUsage.Error()+": "))
		return cli.ExitUnreadable
	}
	return 0
}
