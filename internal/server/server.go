// Package server is ckptview's HTTP surface: the HTML pages, the JSON API, uploads, the
// error handler that turns error kinds into statuses, and the cache of opened checkpoints.
//
// It sees files only through the store and checkpoints only through ckpt.Node; it never
// touches pickle bytes itself.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/web"
)

// DefaultMaxUpload is the upload limit when none is configured: large enough for real
// checkpoints.
const DefaultMaxUpload int64 = 20_000_000_000

// Config is how the server behaves.
type Config struct {
	// Addr is the address Start listens on, ":8080" if empty.
	Addr string
	// MaxUpload is the largest upload accepted, in bytes; DefaultMaxUpload if zero.
	MaxUpload int64
	// CacheSize is how many opened checkpoints are kept; 1024 if zero. CacheBytes is what
	// bounds their memory; files the loader refused cost next to nothing.
	CacheSize int
	// ShutdownTimeout is how long Start waits for requests in flight when its context ends;
	// 30s if zero.
	ShutdownTimeout time.Duration
	// StatsCacheSize is how many tensors' statistics are kept; 16384 if zero (about 1 kB
	// each).
	StatsCacheSize int
	// StatsConcurrency is how many tensors' statistics may be computed at once server-wide;
	// 2 if zero. Further requests wait for a slot.
	StatsConcurrency int
	// StatsWorkers is how many goroutines read one tensor; GOMAXPROCS, at most 8, if zero.
	StatsWorkers int
	// StatsTimeout bounds the time the statistics of one tensor take (0: 10 minutes); past
	// it the request gets a 503 that names the limit, and the reading stops.
	StatsTimeout time.Duration
	// StatsJobIdle stops an all-statistics job nobody has asked the progress of for this
	// long (0: 3 minutes): a page that polls keeps it going, a client that left does not.
	// (Browsers poll a hidden tab as seldom as once a minute.)
	StatsJobIdle time.Duration
	// MaxJSONExport is the largest JSON download, in bytes; 1 GiB if zero. A subtree whose
	// JSON is larger is refused with a message saying to lower limit= or use .npy.
	MaxJSONExport int64

	// Loader bounds the work and memory of opening one file; zero fields mean the loader's
	// defaults.
	Loader loader.Options
	// OpenTimeout bounds the time one file takes to open (0: 60 s); past it the file is
	// refused with a 422 that names the limit.
	OpenTimeout time.Duration
	// OpenConcurrency is how many files the loader may open at once server-wide; 2 if zero.
	// Further opens wait for a slot, so many hostile uploads at once cannot add up.
	OpenConcurrency int
	// CacheBytes bounds the estimated memory of the opened checkpoints kept (their trees);
	// 64 MiB if zero. The most recently used one is kept whatever its size.
	CacheBytes int64
	// UploadToken, when set, must come with every upload (Authorization: Bearer <token>, or
	// the form field "token"); reading stays open, as links are capabilities.
	UploadToken string
	// StallTimeout is how long an upload may go without a byte arriving, and a response
	// without the client taking a byte, before the connection is dropped; 1 minute if zero.
	// It bounds stalled clients without limiting how long a large transfer takes.
	StallTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers; 10s if zero.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection waits for its next request; 2 minutes
	// if zero.
	IdleTimeout time.Duration
}

// Deps are what the server is built from.
type Deps struct {
	Store store.Blobs
	// Remote opens URLs in place (POST /api/open); nil or without prefixes, none is.
	Remote *s3store.Remote
	// Folders are local directories served read-only, in place (-dir); ExampleFolder is
	// the bundled examples, served the same way in a section of their own.
	Folders       []*store.Folder
	ExampleFolder *store.Folder
	// Examples are the bundled files the home page offers, in order (imported into the
	// store; ExampleFolder serves them without copying).
	Examples []store.Example
	// Static holds the CSS and JS served under /static/, rooted at the static directory;
	// web/static if nil.
	Static fs.FS
	// Logger receives operational messages; slog.Default() if nil.
	Logger *slog.Logger
}

// Server serves ckptview. It is an http.Handler.
type Server struct {
	cfg      Config
	store    store.Blobs
	remote   *s3store.Remote
	folders  []*store.Folder
	exFolder *store.Folder
	examples []store.Example
	static   fs.FS
	log      *slog.Logger
	echo     *echo.Echo
	cache    *checkpointCache
	stats    *statsCache
	jobs     *statsJobs
	diffs    *diffCache
	jobsWG   sync.WaitGroup
	// exports bounds the JSON downloads written at once (each to a temporary file).
	exports chan struct{}
	// opens bounds the files the loader opens at once (Config.OpenConcurrency).
	opens chan struct{}
	// base lives as long as the server: background work (statistics, jobs) runs under it
	// and stops when Close cancels it.
	base context.Context
	stop context.CancelFunc
	// load opens a checkpoint; loader.Open with Config.Loader, replaced in tests.
	load func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error)
}

// New builds a server with every route registered.
func New(cfg Config, deps Deps) *Server {
	if cfg.Addr == "" {
		cfg.Addr = ":8080"
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = DefaultMaxUpload
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1024
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.StatsCacheSize <= 0 {
		cfg.StatsCacheSize = 16384
	}
	if cfg.StatsTimeout <= 0 {
		cfg.StatsTimeout = 10 * time.Minute
	}
	if cfg.StatsJobIdle <= 0 {
		cfg.StatsJobIdle = 3 * time.Minute
	}
	if cfg.StatsConcurrency <= 0 {
		cfg.StatsConcurrency = 2
	}
	if cfg.StatsWorkers <= 0 {
		cfg.StatsWorkers = min(runtime.GOMAXPROCS(0), 8)
	}
	if cfg.MaxJSONExport <= 0 {
		cfg.MaxJSONExport = 1 << 30
	}
	if cfg.OpenConcurrency <= 0 {
		cfg.OpenConcurrency = 2
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = time.Minute
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	s := &Server{
		cfg:      cfg,
		store:    deps.Store,
		remote:   deps.Remote,
		folders:  deps.Folders,
		exFolder: deps.ExampleFolder,
		examples: deps.Examples,
		static:   deps.Static,
		log:      deps.Logger,
		opens:    make(chan struct{}, cfg.OpenConcurrency),
	}
	if s.cfg.Loader.Scratch == nil && s.store != nil {
		// decompressed streams go to the store's own temporary directory (same disk as
		// the blobs, cleaned if the process dies), unlinked at once
		st := s.store
		s.cfg.Loader.Scratch = func() (*os.File, error) {
			f, err := st.CreateTemp("inflated-*")
			if err == nil {
				_ = os.Remove(f.Name())
			}
			return f, err
		}
	}
	if cfg.OpenTimeout <= 0 {
		s.cfg.OpenTimeout = 60 * time.Second
	}
	lo := s.cfg.Loader
	s.load = func(r io.ReaderAt, size int64) (*ckpt.Checkpoint, error) {
		return loader.Open(r, size, s.loaderOptions(lo))
	}
	if s.static == nil {
		s.static = echo.MustSubFS(web.Static, "static")
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.cache = newCheckpointCache(cfg.CacheSize, cfg.CacheBytes, s.openCheckpoint)
	s.base, s.stop = context.WithCancel(context.Background())
	s.stats = newStatsCache(s.base, cfg.StatsCacheSize, cfg.StatsWorkers, cfg.StatsConcurrency, cfg.StatsTimeout)
	s.jobs = newStatsJobs()
	s.diffs = newDiffCache(16)
	s.exports = make(chan struct{}, 2)

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.JSONSerializer = jsonSerializer{}
	s.echo = e
	s.routes()
	return s
}

// loaderOptions are the loader's limits for one open, its time budget starting now.
func (s *Server) loaderOptions(o loader.Options) loader.Options {
	o.Deadline = time.Now().Add(s.cfg.OpenTimeout)
	o.TimeLimit = s.cfg.OpenTimeout.String()
	return o
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Handler is the server as an http.Handler.
func (s *Server) Handler() http.Handler { return s }

// Start listens on the configured address and serves until ctx ends, then shuts down
// gracefully.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then stops accepting connections, waits for the
// requests in flight (up to the shutdown timeout) and closes the cached checkpoints.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		// No ReadTimeout or WriteTimeout: uploads and downloads of large checkpoints take
		// as long as they take. A client that stops sending or reading is dropped after
		// StallTimeout instead (stallRead, stallWrites).
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "url", "http://"+displayAddr(ln.Addr()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	defer s.Close()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Close stops the background statistics jobs and releases the cached checkpoints' files.
func (s *Server) Close() {
	s.stop()
	s.jobsWG.Wait()
	s.cache.close()
}

// jsonSerializer writes JSON without escaping <, > and & as \u003c...: the API's next URLs
// keep their "&", and the Content-Type plus nosniff already keep browsers from reading
// JSON as HTML.
type jsonSerializer struct{ echo.DefaultJSONSerializer }

// Serialize writes i as JSON.
func (jsonSerializer) Serialize(c echo.Context, i any, indent string) error {
	enc := json.NewEncoder(c.Response())
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(i)
}

func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if ok && tcp.IP.IsUnspecified() {
		return net.JoinHostPort("localhost", strconv.Itoa(tcp.Port))
	}
	return a.String()
}
