package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// multipartSlack is how much larger than the file a multipart body may be: boundaries,
// part headers and small form fields.
const multipartSlack = 1 << 20

// maxFormFields bounds the other form fields a multipart upload may carry, so a client
// cannot keep the request going forever without sending a file.
const maxFormFields = 100

// tooLargeError is an upload over the limit, saying what the limit is.
type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("file too large: the limit is %s", views.HumanBytes(e.limit))
}

func (e *tooLargeError) Unwrap() error { return store.ErrTooLarge }

// receive streams the uploaded file into the store without holding it in memory: the
// multipart field "file", or else the raw body named by ?name=. With an upload token
// configured, the token comes in the Authorization header, or as the form field "token"
// before the file; nothing is stored without it.
func (s *Server) receive(c echo.Context) (store.Meta, error) {
	r := c.Request()
	authorized, err := s.uploadAuth(c)
	if err != nil {
		return store.Meta{}, err
	}
	if !authorized && !isMultipart(r) {
		return store.Meta{}, errUnauthorized
	}
	done := s.stallRead(c)
	defer done()
	max := s.cfg.MaxUpload
	tooLarge := &tooLargeError{limit: max}
	if !isMultipart(r) {
		if r.ContentLength > max {
			return store.Meta{}, tooLarge
		}
		return s.put(c, c.QueryParam("name"), r.Body)
	}
	if r.ContentLength > max+multipartSlack {
		return store.Meta{}, tooLarge
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return store.Meta{}, badRequestf("reading the multipart body: %v", err)
	}
	var files []store.Meta
	var total int64
	for skipped := 0; ; skipped++ {
		if skipped > maxFormFields {
			return store.Meta{}, badRequestf(`too many form fields before the file: send it in the multipart field "file"`)
		}
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			switch {
			case len(files) == 0:
				return store.Meta{}, badRequestf(`no file in the upload: send it in the multipart field "file"`)
			case len(files) == 1:
				return files[0], nil
			}
			// several files: a sharded checkpoint, or files that belong together
			return s.putSet(c, files)
		}
		if err != nil {
			return store.Meta{}, &bodyError{err}
		}
		if part.FormName() == tokenField && !authorized {
			token, err := readTokenField(part)
			if err != nil {
				return store.Meta{}, err
			}
			if !s.tokenMatches(token) {
				return store.Meta{}, errUnauthorized
			}
			authorized = true
			continue
		}
		if part.FormName() != "file" {
			continue // NextPart skips the rest of this part
		}
		if !authorized {
			return store.Meta{}, errUnauthorized
		}
		if len(files) >= maxSetFiles {
			return store.Meta{}, badRequestf("more than %d files in one upload", maxSetFiles)
		}
		meta, err := s.put(c, part.FileName(), part)
		part.Close()
		if err != nil {
			return store.Meta{}, err
		}
		if total += meta.Size; total > max {
			return store.Meta{}, tooLarge
		}
		files = append(files, meta)
		skipped = 0
	}
}

// put stores one upload, telling the client's read errors apart from the server's.
func (s *Server) put(c echo.Context, name string, body io.Reader) (store.Meta, error) {
	meta, err := s.store.Put(c.Request().Context(), name, bodyReader{body}, s.cfg.MaxUpload)
	if errors.Is(err, store.ErrTooLarge) {
		return store.Meta{}, &tooLargeError{limit: s.cfg.MaxUpload}
	}
	return meta, err
}

// bodyReader marks errors reading the request as the client's.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return n, err
		}
		err = &bodyError{err}
	}
	return n, err
}

func isMultipart(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "multipart/form-data"
}

// stallRead drops an upload whose client stops sending: each read of the body must bring a
// byte within StallTimeout, however long the whole upload takes. Call the returned
// function when done with the body: a body read to its end has its deadline lifted (a
// deadline left on the connection would cancel the request once it passes); one left
// unread gets a last StallTimeout for the server to discard the rest.
func (s *Server) stallRead(c echo.Context) func() {
	r := c.Request()
	sr := &stallReader{r: r.Body, rc: http.NewResponseController(c.Response()), timeout: s.cfg.StallTimeout}
	r.Body = sr
	return func() {
		if sr.eof {
			_ = sr.rc.SetReadDeadline(time.Time{})
		} else {
			_ = sr.rc.SetReadDeadline(time.Now().Add(sr.timeout))
		}
	}
}

// stallReader moves the connection's read deadline forward before each read.
type stallReader struct {
	r       io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	eof     bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	// Not every ResponseWriter can set deadlines (httptest's cannot); then there is none.
	_ = s.rc.SetReadDeadline(time.Now().Add(s.timeout))
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.eof = true
	}
	return n, err
}

func (s *stallReader) Close() error { return s.r.Close() }
