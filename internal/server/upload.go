package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

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
// multipart field "file", or else the raw body named by ?name=.
func (s *Server) receive(c echo.Context) (store.Meta, error) {
	r := c.Request()
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
	for skipped := 0; ; skipped++ {
		if skipped > maxFormFields {
			return store.Meta{}, badRequestf(`too many form fields before the file: send it in the multipart field "file"`)
		}
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return store.Meta{}, badRequestf(`no file in the upload: send it in the multipart field "file"`)
		}
		if err != nil {
			return store.Meta{}, &bodyError{err}
		}
		if part.FormName() != "file" {
			continue // NextPart skips the rest of this part
		}
		defer part.Close()
		return s.put(c, part.FileName(), part)
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
