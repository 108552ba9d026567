package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"
)

// routes registers every route the server answers.
func (s *Server) routes() {
	e := s.echo
	e.Pre(setSecurityHeaders, s.stallWrites)
	e.Use(s.logRequests, s.recoverPanics)

	// HTML pages; each URL is the share link of what it shows.
	e.GET("/", s.handleHome)
	e.GET("/static/*", s.handleStatic())
	e.POST("/upload", s.handleUploadForm)
	e.POST("/open", s.handleOpenForm)
	e.GET("/c/:id", s.handleCheckpoint)
	e.GET("/c/:id/n", s.handleNodeRoot)
	e.GET("/c/:id/n/*", s.handleNode)
	e.GET("/c/:id/code", s.handleCode)
	e.GET("/c/:id/compare", s.handleCompareForm)
	e.GET("/diff/:a/:b", s.handleDiff)
	e.GET("/c/:id/fragment/children", s.handleChildren)
	e.GET("/c/:id/fragment/search", s.handleSearchFragment)
	e.GET("/c/:id/fragment/stats", s.handleStatsFragment)
	e.GET("/c/:id/fragment/stats-all", s.handleStatsAllFragment)
	e.POST("/c/:id/stats-all", s.handleStatsAllStart)

	// JSON API (README.md documents it).
	e.POST("/api/checkpoints", s.handleAPIUpload)
	e.POST("/api/open", s.handleAPIOpen)
	e.GET("/api/diff/:a/:b", s.handleAPIDiff)
	e.GET("/api/checkpoints/:id", s.handleAPICheckpoint)
	e.GET("/api/checkpoints/:id/node", s.handleAPINode)
	e.GET("/api/checkpoints/:id/search", s.handleAPISearch)
	e.GET("/api/checkpoints/:id/stats", s.handleAPIStats)
	e.GET("/api/checkpoints/:id/stats/export", s.handleAPIStatsExport)
	e.GET("/api/checkpoints/:id/stats/all", s.handleAPIStatsAll)
	e.POST("/api/checkpoints/:id/stats/all", s.handleAPIStatsAllStart)
	e.Match([]string{http.MethodGet, http.MethodHead}, "/api/checkpoints/:id/download", s.handleAPIDownload)
}

// contentSecurityPolicy allows only the app's own scripts, styles and images (plus data:
// images): no inline script or style, no framing, no plugins.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// securityHeaders are the headers every response carries, errors and static files
// included. X-Frame-Options says frame-ancestors 'none' to browsers that predate CSP.
var securityHeaders = map[string]string{
	"Content-Security-Policy": contentSecurityPolicy,
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
}

// setSecurityHeaders sets securityHeaders on every response, before routing.
func setSecurityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		for k, v := range securityHeaders {
			h.Set(k, v)
		}
		return next(c)
	}
}

// stallWrites drops a response whose client stops reading: each write must be taken
// within StallTimeout, however long the whole download takes, so a stalled client cannot
// hold a file, an export slot or a goroutine for ever.
func (s *Server) stallWrites(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		res := c.Response()
		w := &stallWriter{ResponseWriter: res.Writer, rc: http.NewResponseController(res.Writer), timeout: s.cfg.StallTimeout}
		// A keep-alive connection keeps the deadline of its last response: lift it while
		// the handler works, and set a fresh one for the final flush.
		w.rc.SetWriteDeadline(time.Time{})
		res.Writer = w
		err := next(c)
		w.touch()
		return err
	}
}

// stallWriter moves the connection's write deadline forward before each write. Writers
// that cannot set deadlines (httptest's) just write.
type stallWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *stallWriter) touch() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *stallWriter) WriteHeader(code int) {
	w.touch()
	w.ResponseWriter.WriteHeader(code)
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.touch()
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController (Flush, deadlines) reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs each request once it is answered, errors included.
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		s.log.LogAttrs(req.Context(), slog.LevelInfo, "request",
			slog.String("method", req.Method),
			slog.String("path", req.URL.Path),
			slog.Int("status", res.Status),
			slog.Int64("bytes", res.Size),
			slog.Duration("duration", time.Since(start)))
		return nil
	}
}

// recoverPanics turns a panic in a handler into a 500 with the stack in the log, so one
// bad request never takes the server down.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Error("panic", "method", c.Request().Method, "path", c.Request().URL.Path,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}()
		return next(c)
	}
}
