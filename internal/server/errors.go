package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// badRequest is a mistake in the request that the handler can name: a missing form field,
// an offset that is not a number.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badRequestf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// bodyError is a failure to read the request body: the client went away mid-upload or
// sent a broken multipart stream. It is the client's problem, not the server's.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the upload: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// errorKind maps a kind of error to the status it is answered with. message, when set, is
// what the user sees instead of the error's own text.
type errorKind struct {
	match   func(error) bool
	status  int
	message string
}

// errorKinds is the one table from error kinds to statuses; the first match wins. Anything
// else is a 500 whose details stay in the log.
var errorKinds = []errorKind{
	{as[*store.UnavailableError], http.StatusServiceUnavailable, ""},
	{as[*s3store.ChangedError], http.StatusGone, ""},
	{as[*goneError], http.StatusGone, ""},
	{is(s3store.ErrNotAllowed), http.StatusForbidden, ""},
	{as[*s3store.RemoteError], http.StatusUnprocessableEntity, ""},
	{as[*loader.InternalError], http.StatusInternalServerError, "ckptview met an internal error reading this file; it is logged, and the file is not at fault"},
	{as[*loader.Error], http.StatusUnprocessableEntity, ""},
	{is(store.ErrNotFound), http.StatusNotFound, "no checkpoint with that id"},
	{is(ckpt.ErrNotFound), http.StatusNotFound, ""},
	{is(store.ErrInvalidID), http.StatusBadRequest, "invalid checkpoint id: want 64 lowercase hex digits"},
	{is(store.ErrTooLarge), http.StatusRequestEntityTooLarge, ""},
	{as[*http.MaxBytesError], http.StatusRequestEntityTooLarge, ""},
	{as[*notTensorError], http.StatusUnprocessableEntity, ""},
	{as[*valueError], http.StatusUnprocessableEntity, ""},
	{is(tensor.ErrUnsupported), http.StatusUnprocessableEntity, ""},
	{as[*exportTooLargeError], http.StatusUnprocessableEntity, ""},
	{is(errUnauthorized), http.StatusUnauthorized, ""},
	{as[*badRequest], http.StatusBadRequest, ""},
	{as[*bodyError], http.StatusBadRequest, ""},
	{as[*statsTimeoutError], http.StatusServiceUnavailable, ""},
	{as[*jobIdleError], http.StatusServiceUnavailable, ""},
	{is(context.Canceled), http.StatusBadRequest, "request cancelled"},
	{clientGone, http.StatusBadRequest, "the connection was closed or stalled"},
	{is(syscall.ENOSPC), http.StatusInsufficientStorage, "the server is out of disk space"},
}

// checkpointPath finds the checkpoint id in a page's path.
var checkpointPath = regexp.MustCompile(`^/c/([0-9a-f]{64})/`)

// retryAfter is what a 503 tells the client to wait, in seconds: a busy server or an
// unreachable bucket is worth asking again soon.
const retryAfter = "5"

// clientGone reports a write to a client that closed its connection or stopped reading
// (StallTimeout): the client's doing, not a server error.
func clientGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrDeadlineExceeded)
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func as[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}

// classify returns the status for err and the message the user sees.
func classify(err error) (int, string) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		if he.Code >= 500 {
			msg = http.StatusText(he.Code)
		}
		return he.Code, msg
	}
	for _, k := range errorKinds {
		if k.match(err) {
			if k.message != "" {
				return k.status, k.message
			}
			return k.status, forPeople(err)
		}
	}
	return http.StatusInternalServerError, http.StatusText(http.StatusInternalServerError)
}

// forPeople is an error's text as users see it: a loader error without the "loader: " it
// starts with for the logs. Only that text is changed: a key or file name inside the
// message stays as it is, even one that reads like a prefix.
func forPeople(err error) string {
	msg := err.Error()
	var lerr *loader.Error
	if errors.As(err, &lerr) {
		msg = strings.Replace(msg, lerr.Error(), lerr.Text(), 1)
	}
	return msg
}

// errorTitle heads the HTML error page.
func errorTitle(status int) string {
	switch status {
	case http.StatusUnprocessableEntity:
		return "This file cannot be read"
	case http.StatusRequestEntityTooLarge:
		return "File too large"
	case http.StatusNotFound:
		return "Not found"
	case http.StatusUnauthorized:
		return "Upload token needed"
	}
	if status >= 500 {
		return "Something went wrong on our side"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error"
}

// errorJSON is the body of every JSON API error. Findings are set for files the loader
// rejects, so a broken but malicious file still says what it would run.
type errorJSON struct {
	Error    string        `json:"error"`
	Findings []findingJSON `json:"findings,omitzero"`
}

// handleError is the echo error handler: one status per error kind (errorKinds), 5xx
// logged, an HTML error page for pages and a JSON body for the API.
func (s *Server) handleError(err error, c echo.Context) {
	status, msg := classify(err)
	req := c.Request()
	if status >= 500 {
		var ie *loader.InternalError
		if errors.As(err, &ie) {
			s.log.Error("request failed: internal error in the loader", "method", req.Method, "path", req.URL.Path,
				"status", status, "err", err, "stack", string(ie.Stack))
		} else {
			s.log.Error("request failed", "method", req.Method, "path", req.URL.Path, "status", status, "err", err)
		}
	}
	if c.Response().Committed {
		return
	}
	if status == http.StatusUnauthorized {
		challenge(c.Response())
	}
	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", retryAfter)
	}
	var findings []ckpt.Finding
	var lerr *loader.Error
	if errors.As(err, &lerr) {
		findings = lerr.Findings
	}
	if req.Method == http.MethodHead {
		c.NoContent(status)
		return
	}
	if !wantsHTML(req) {
		body := errorJSON{Error: msg}
		if lerr != nil {
			body.Findings = findingsJSON(findings)
		}
		c.JSON(status, body)
		return
	}
	page := views.ErrorPage{Status: status, Title: errorTitle(status), Message: msg, Findings: findings}
	if m := checkpointPath.FindStringSubmatch(req.URL.Path); m != nil && errors.Is(err, ckpt.ErrNotFound) {
		page.CheckpointURL = views.CheckpointURL(m[1]) // a node that is not there: its checkpoint is
	}
	var buf bytes.Buffer
	// Rendered under a context of its own: a client gone away (the error may be just that)
	// is no reason to fail rendering, and no server error.
	if rerr := templates.ErrorPage(page).Render(context.WithoutCancel(req.Context()), &buf); rerr != nil {
		s.log.Error("rendering the error page", "err", rerr)
		c.String(status, msg)
		return
	}
	c.HTMLBlob(status, buf.Bytes())
}

// wantsHTML reports whether an error should be answered with a page: everything but the
// JSON API, unless a browser asks for HTML there too.
func wantsHTML(r *http.Request) bool {
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		return true
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
