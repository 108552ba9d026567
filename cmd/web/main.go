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
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/server"
	"github.com/ckptview/ckptview/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// dispatch runs the command args name (serve when none is named: the flags alone start the
// server) and returns the exit status.
func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "scan":
			return runScan(ctx, args[1:], getenv, stdout, stderr)
		case "inspect":
			return runInspect(ctx, args[1:], getenv, stdout, stderr)
		case "serve":
			args = args[1:]
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usageText)
			return 0
		}
	}
	err := run(ctx, args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "ckptview:", err)
		return 1
	}
	return 0
}

// options are the command line, after the environment has filled in what it sets.
type options struct {
	addr        string
	data        string
	storeURL    string
	s3PathStyle bool
	s3Timeout   time.Duration
	s3Cache     byteSize
	openURLs    string
	examples    string
	dirs        dirList
	maxUpload   byteSize
	logFormat   string
	logLevel    slog.Level
	uploadToken string
	// memoryLimit is the Go runtime's soft memory limit; 0 leaves it alone (GOMEMLIMIT).
	memoryLimit optionalSize
	// gcFloor is the heap size under which the collector does not run (gcfloor.go); 0:
	// GOGC alone decides.
	gcFloor         optionalSize
	stallTimeout    time.Duration
	shutdownTimeout time.Duration

	// What one file may make the loader do (loader.Options).
	maxPickleOps int
	maxDepth     int
	maxMemo      int
	maxIntDigits int
	maxNodes     int
	maxTensors   int
	maxValues    int
	maxPickle    byteSize
	maxInflate   byteSize
	maxDecomp    byteSize
	openTimeout  time.Duration

	openConcurrency  int
	cacheSize        int
	cacheMemory      byteSize
	statsConcurrency int
	statsWorkers     int
	statsTimeout     time.Duration
	statsJobIdle     time.Duration
	statsCacheSize   int
	maxJSONExport    byteSize
}

// defaultOptions are the defaults of the flags. The loader's limits are lower than the
// loader's own defaults (which let one file build a tree of gigabytes) so that, with
// openConcurrency files opened at once and cacheMemory of trees kept, the process stays
// within the memory the README documents whatever is uploaded.
func defaultOptions() options {
	lo := loader.ServerOptions()
	return options{
		addr:             ":8080",
		examples:         "testdata/models",
		maxUpload:        byteSize(server.DefaultMaxUpload),
		logFormat:        "text",
		logLevel:         slog.LevelInfo,
		memoryLimit:      224 << 20,
		gcFloor:          64 << 20,
		stallTimeout:     time.Minute,
		s3Timeout:        30 * time.Second,
		s3Cache:          64 << 20,
		shutdownTimeout:  30 * time.Second,
		maxPickleOps:     lo.MaxOps,
		maxDepth:         lo.MaxDepth,
		maxMemo:          lo.MaxMemo,
		maxIntDigits:     lo.MaxIntChars,
		maxNodes:         lo.MaxNodes,
		maxTensors:       lo.MaxTensors,
		maxValues:        lo.MaxValues,
		maxPickle:        byteSize(lo.MaxPickle),
		maxInflate:       byteSize(lo.MaxInflate),
		maxDecomp:        byteSize(lo.MaxDecompress),
		openTimeout:      time.Minute,
		statsTimeout:     10 * time.Minute,
		statsJobIdle:     3 * time.Minute,
		openConcurrency:  2,
		cacheSize:        1024,
		cacheMemory:      64 << 20,
		statsConcurrency: 2,
		statsCacheSize:   16384,
		maxJSONExport:    1 << 30,
	}
}

// envPrefix starts the environment variable of each flag.
const envPrefix = "CKPTVIEW_"

// envName is the environment variable that sets a flag: -max-upload is CKPTVIEW_MAX_UPLOAD.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets each flag of fs that the environment sets (CKPTVIEW_ and its name).
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	return envErr
}

// parseOptions reads flags from args, with defaults from the environment.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (options, error) {
	o := defaultOptions()
	fs := flag.NewFlagSet("ckptview", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.addr, "addr", o.addr, "address to listen on")
	fs.StringVar(&o.data, "data", "", "data directory for uploads (default $XDG_DATA_HOME/ckptview or ~/.local/share/ckptview)")
	fs.StringVar(&o.storeURL, "store", "", "where uploads live: s3://bucket/prefix for an S3-compatible bucket (endpoint, region and credentials from the AWS SDK's standard variables and files); empty for the data directory")
	fs.BoolVar(&o.s3PathStyle, "s3-path-style", false, "address the bucket path-style (http://host/bucket/key); automatic when the endpoint is an IP address or localhost")
	fs.DurationVar(&o.s3Timeout, "s3-timeout", o.s3Timeout, "longest one request to the bucket may take, retries included; past it the request gets a 503")
	fs.Var(&o.s3Cache, "s3-cache", "memory of the block cache of bucket reads, read-ahead included")
	fs.StringVar(&o.openURLs, "open-urls", "", "comma-separated URL prefixes that may be opened in place, without copying (s3://bucket/, https://huggingface.co/); the server fetches what it is given, so list only what it may reach; empty: none")
	fs.StringVar(&o.examples, "examples", o.examples, "directory of bundled example files, served in place (none if it does not exist)")
	fs.Var(&o.dirs, "dir", "a directory whose checkpoints are served read-only, in place (repeat for several; the environment variable takes a list separated by "+string(os.PathListSeparator)+")")
	fs.Var(&o.maxUpload, "max-upload", "largest upload accepted: bytes, or a size such as 500MB or 20GiB")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log format on stderr: text or json")
	fs.TextVar(&o.logLevel, "log-level", o.logLevel, "least important log level shown: debug, info, warn or error")
	fs.StringVar(&o.uploadToken, "upload-token", "", "if set, uploads need this token (Authorization: Bearer, or the form's token field); prefer "+envName("upload-token")+" to keep it out of ps")
	fs.Var(&o.memoryLimit, "memory-limit", "soft memory limit of the Go runtime (debug.SetMemoryLimit); off to leave GOMEMLIMIT in charge")
	fs.Var(&o.gcFloor, "gc-floor", "heap size under which the garbage collector does not run (GOGC is raised for the next cycle while the live heap is small); off to leave GOGC alone")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", o.stallTimeout, "drop an upload that sends no byte, or a download that takes none, for this long")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", o.shutdownTimeout, "how long to wait for requests in flight on shutdown")

	addLoaderFlags(fs, &o)
	fs.DurationVar(&o.statsTimeout, "stats-timeout", o.statsTimeout, "longest the statistics of one tensor may take once they run; past it the request gets a 503 naming this limit")
	fs.DurationVar(&o.statsJobIdle, "stats-job-idle", o.statsJobIdle, "an all-statistics job nobody has asked the progress of for this long stops (its client left)")

	fs.IntVar(&o.openConcurrency, "open-concurrency", o.openConcurrency, "files opened at once server-wide; others wait")
	fs.IntVar(&o.cacheSize, "cache-size", o.cacheSize, "opened checkpoints kept")
	fs.Var(&o.cacheMemory, "cache-memory", "estimated memory of the opened checkpoints kept (the last one is kept whatever its size)")
	fs.IntVar(&o.statsConcurrency, "stats-concurrency", o.statsConcurrency, "tensors whose statistics are computed at once server-wide")
	fs.IntVar(&o.statsWorkers, "stats-workers", o.statsWorkers, "goroutines reading one tensor (0: GOMAXPROCS, at most 8)")
	fs.IntVar(&o.statsCacheSize, "stats-cache-size", o.statsCacheSize, "tensors whose statistics are kept (about 1 kB each)")
	fs.Var(&o.maxJSONExport, "max-json-export", "largest JSON download")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: ckptview [serve] [flags]\n\nServes the checkpoint viewer (see ckptview help for the scan and inspect commands).\nEach flag is also the environment variable %sNAME.\n\n", envPrefix)
		fs.PrintDefaults()
	}
	if err := applyEnv(fs, getenv); err != nil {
		return o, err
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := o.checkLoaderLimits(); err != nil {
		return o, err
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return o, fmt.Errorf("-log-format must be text or json, got %q", o.logFormat)
	}
	for _, c := range []struct {
		name string
		v    int
		min  int
	}{
		{"open-concurrency", o.openConcurrency, 1},
		{"cache-size", o.cacheSize, 1}, {"stats-concurrency", o.statsConcurrency, 1}, {"stats-workers", o.statsWorkers, 0},
		{"stats-cache-size", o.statsCacheSize, 1},
	} {
		if c.v < c.min {
			return o, fmt.Errorf("-%s must be at least %d, got %d", c.name, c.min, c.v)
		}
	}
	if o.stallTimeout <= 0 || o.shutdownTimeout <= 0 {
		return o, errors.New("-stall-timeout and -shutdown-timeout must be positive")
	}
	return o, nil
}

// addLoaderFlags defines the flags that bound what one file may make the loader do: the
// server and the scan and inspect commands share them, so a file the server opens is
// opened the same way from the command line.
func addLoaderFlags(fs *flag.FlagSet, o *options) {
	fs.IntVar(&o.maxPickleOps, "max-pickle-ops", o.maxPickleOps, "pickle opcodes per file")
	fs.IntVar(&o.maxDepth, "max-depth", o.maxDepth, "nesting of values and MARKs in a file")
	fs.IntVar(&o.maxMemo, "max-memo", o.maxMemo, "memo entries per pickle")
	fs.IntVar(&o.maxIntDigits, "max-int-digits", o.maxIntDigits, "digits of a decimal integer in a text opcode")
	fs.IntVar(&o.maxNodes, "max-nodes", o.maxNodes, "values in a file's tree of objects or tensors")
	fs.IntVar(&o.maxTensors, "max-tensors", o.maxTensors, "tensors and arrays in a file's tree")
	fs.IntVar(&o.maxValues, "max-values", o.maxValues, "values (and memo entries) of a pickle of plain data: lists, tuples and dicts of numbers and strings")
	fs.Var(&o.maxPickle, "max-pickle", "bytes of one pickle held in memory (large values stay in the file)")
	fs.Var(&o.maxInflate, "max-inflate", "bytes a compressed archive member may inflate to")
	fs.DurationVar(&o.openTimeout, "open-timeout", o.openTimeout, "longest one file may take to open; past it the file is refused, naming this limit")
	fs.Var(&o.maxDecomp, "max-decompress", "bytes a compressed file (joblib's zlib, gzip, bz2, lzma, xz, lz4; an .npz member) may decompress to, written to a temporary file in the data directory")
}

// loaderOptions are the loader's limits the flags set.
func (o options) loaderOptions() loader.Options {
	return loader.Options{
		MaxOps:      o.maxPickleOps,
		MaxDepth:    o.maxDepth,
		MaxMemo:     o.maxMemo,
		MaxIntChars: o.maxIntDigits,
		MaxNodes:    o.maxNodes,
		MaxTensors:  o.maxTensors,
		MaxValues:   o.maxValues,
		MaxPickle:   int64(o.maxPickle),
		MaxInflate:  int64(o.maxInflate),
		// Scratch is set by the server: its temporary files live in the store
		MaxDecompress: int64(o.maxDecomp),
	}
}

// checkLoaderLimits refuses limits that make no sense.
func (o options) checkLoaderLimits() error {
	for _, c := range []struct {
		name string
		v    int
	}{
		{"max-pickle-ops", o.maxPickleOps}, {"max-depth", o.maxDepth}, {"max-memo", o.maxMemo},
		{"max-int-digits", o.maxIntDigits}, {"max-nodes", o.maxNodes}, {"max-tensors", o.maxTensors},
		{"max-values", o.maxValues},
	} {
		if c.v < 1 {
			return fmt.Errorf("-%s must be at least 1, got %d", c.name, c.v)
		}
	}
	return nil
}

// serverConfig is the server's part of the options.
func (o options) serverConfig() server.Config {
	return server.Config{
		Addr:             o.addr,
		MaxUpload:        int64(o.maxUpload),
		Loader:           o.loaderOptions(),
		OpenConcurrency:  o.openConcurrency,
		OpenTimeout:      o.openTimeout,
		CacheSize:        o.cacheSize,
		CacheBytes:       int64(o.cacheMemory),
		StatsConcurrency: o.statsConcurrency,
		StatsWorkers:     o.statsWorkers,
		StatsTimeout:     o.statsTimeout,
		StatsJobIdle:     o.statsJobIdle,
		StatsCacheSize:   o.statsCacheSize,
		MaxJSONExport:    int64(o.maxJSONExport),
		UploadToken:      o.uploadToken,
		StallTimeout:     o.stallTimeout,
		ShutdownTimeout:  o.shutdownTimeout,
	}
}

// run is the program: parse the options, open the store, find the examples and folders and serve
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
	if o.memoryLimit > 0 {
		debug.SetMemoryLimit(int64(o.memoryLimit))
	}
	defer startGCFloor(int64(o.gcFloor)).stop()

	dir := o.data
	if dir == "" {
		if dir, err = store.DefaultDir(); err != nil {
			return err
		}
	}
	st, err := openStore(ctx, o, dir)
	if err != nil {
		return err
	}
	defer st.Close()
	logger.Info("store", "where", st.Where())
	// The examples are served in place, like -dir folders: nothing is copied.
	var exFolder *store.Folder
	if o.examples != "" {
		if _, err := os.Stat(o.examples); err == nil {
			if exFolder, err = store.NewFolder(o.examples, "Examples"); err != nil {
				// The viewer is useful without its examples: say why they are missing and go on.
				logger.Warn("no examples", "dir", o.examples, "err", err)
			} else {
				logger.Info("examples", "dir", exFolder.Dir, "files", len(exFolder.Entries()))
			}
		}
	}
	var folders []*store.Folder
	for _, d := range o.dirs {
		f, err := store.NewFolder(d, "")
		if err != nil {
			return err
		}
		folders = append(folders, f)
		logger.Info("serving a folder in place", "dir", f.Dir, "checkpoints", len(f.Entries()))
	}
	logger.Info("limits", "max_upload", int64(o.maxUpload), "memory_limit", int64(o.memoryLimit),
		"open_concurrency", o.openConcurrency, "max_nodes", o.maxNodes, "cache_memory", int64(o.cacheMemory),
		"upload_token", o.uploadToken != "")

	var remote *s3store.Remote
	if o.openURLs != "" {
		if remote, err = s3store.NewRemote(s3store.RemoteConfig{Prefixes: strings.Split(o.openURLs, ","),
			Timeout: o.s3Timeout, CacheBytes: int64(o.s3Cache), PathStyle: o.s3PathStyle}); err != nil {
			return err
		}
		logger.Info("opens in place", "prefixes", remote.Prefixes())
	}
	srv := server.New(o.serverConfig(), server.Deps{Store: st, Remote: remote, Folders: folders, ExampleFolder: exFolder, Logger: logger})
	if err := srv.Start(ctx); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// openStore opens the bucket -store names, or the data directory. The data directory
// also holds a bucket store's local scratch files.
func openStore(ctx context.Context, o options, dir string) (store.Blobs, error) {
	if o.storeURL == "" {
		return store.New(dir)
	}
	return s3store.New(ctx, s3store.Config{URL: o.storeURL, PathStyle: o.s3PathStyle,
		Timeout: o.s3Timeout, CacheBytes: int64(o.s3Cache), Scratch: dir})
}

// dirList is the repeatable -dir flag. From the environment (CKPTVIEW_DIR) it takes a
// list separated by the system's path list separator, as PATH is.
type dirList []string

func (d *dirList) String() string { return strings.Join(*d, string(os.PathListSeparator)) }

func (d *dirList) Set(v string) error {
	for _, p := range filepath.SplitList(v) {
		if p = strings.TrimSpace(p); p != "" {
			*d = append(*d, p)
		}
	}
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

// optionalSize is a byteSize that may also be off (or 0).
type optionalSize int64

func (b *optionalSize) String() string {
	if *b == 0 {
		return "off"
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *optionalSize) Set(s string) error {
	if t := strings.ToLower(strings.TrimSpace(s)); t == "off" || t == "0" {
		*b = 0
		return nil
	}
	var v byteSize
	if err := v.Set(s); err != nil {
		return fmt.Errorf("%w, or off", err)
	}
	*b = optionalSize(v)
	return nil
}
