// Package server is ckptview's HTTP surface: the HTML pages, the JSON API, uploads, the
// error handler that turns error kinds into statuses, and the cache of opened checkpoints.
//
// It sees files only through the store and checkpoints only through loader.Node; it never
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
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/web"
)

// DefaultMaxUpload is the upload limit when none is configured: large enough for real
// checkpoints.
const DefaultMaxUpload int64 = 20 << 30

// Config is how the server behaves.
type Config struct {
	// Addr is the address Start listens on, ":8080" if empty.
	Addr string
	// MaxUpload is the largest upload accepted, in bytes; DefaultMaxUpload if zero.
	MaxUpload int64
	// CacheSize is how many opened checkpoints are kept; 32 if zero.
	CacheSize int
	// ShutdownTimeout is how long Start waits for requests in flight when its context ends;
	// 30s if zero.
	ShutdownTimeout time.Duration
}

// Deps are what the server is built from.
type Deps struct {
	Store *store.Store
	// Examples are the bundled files the home page offers, in order.
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
	store    *store.Store
	examples []store.Example
	static   fs.FS
	log      *slog.Logger
	echo     *echo.Echo
	cache    *checkpointCache
	// load opens a checkpoint; loader.Open with default options, replaced in tests.
	load func(r io.ReaderAt, size int64) (*loader.Checkpoint, error)
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
		cfg.CacheSize = 32
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	s := &Server{
		cfg:      cfg,
		store:    deps.Store,
		examples: deps.Examples,
		static:   deps.Static,
		log:      deps.Logger,
		load: func(r io.ReaderAt, size int64) (*loader.Checkpoint, error) {
			return loader.Open(r, size, loader.Options{})
		},
	}
	if s.static == nil {
		s.static = echo.MustSubFS(web.Static, "static")
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.cache = newCheckpointCache(cfg.CacheSize, s.openCheckpoint)

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.JSONSerializer = jsonSerializer{}
	s.echo = e
	s.routes()
	return s
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
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		// No ReadTimeout or WriteTimeout: uploads and downloads of large checkpoints take
		// as long as they take.
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

// Close releases the cached checkpoints' files.
func (s *Server) Close() { s.cache.close() }

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
