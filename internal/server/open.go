package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// Checkpoints opened in place (s3:// and https:// URLs under -open-urls) are read where
// they are, by ranged GETs: nothing is copied, and the tree costs the bytes it reads. The
// id of such a checkpoint is s3store.Object.ID, a hash of the URL and the version opened;
// a record under the store's refs/ says what it names, so every replica on one store
// opens the same link.

// openRequest is the body of POST /api/open: JSON {"url": ...} or a form field url.
type openRequest struct {
	URL string `json:"url"`
}

// openURL resolves a URL, records its in-place id and opens it.
func (s *Server) openURL(c echo.Context, raw string) (*opened, func(), error) {
	if !s.remote.Enabled() {
		return nil, nil, s3store.ErrNotAllowed
	}
	// Opening a URL makes the server fetch: it takes the upload token, as an upload does.
	authorized, err := s.uploadAuth(c)
	if err != nil {
		return nil, nil, err
	}
	if !authorized && !s.tokenMatches(c.FormValue("token")) {
		return nil, nil, errUnauthorized
	}
	if strings.TrimSpace(raw) == "" {
		return nil, nil, badRequestf(`no URL: send it as the form field "url" or the JSON {"url": ...}`)
	}
	ctx := c.Request().Context()
	obj, err := s.remote.Resolve(ctx, raw)
	if err != nil {
		return nil, nil, err
	}
	id := obj.ID()
	if _, err := s.store.GetRef(ctx, id); errors.Is(err, store.ErrNotFound) {
		b, _ := json.Marshal(obj)
		if err := s.store.PutRef(ctx, id, b); err != nil {
			return nil, nil, err
		}
	} else if err != nil {
		return nil, nil, err
	}
	return s.cache.get(ctx, id)
}

// handleAPIOpen serves POST /api/open: open a URL in place. 201 with the checkpoint's id
// and link, as an upload answers.
func (s *Server) handleAPIOpen(c echo.Context) error {
	var req openRequest
	if ct, _, _ := mime.ParseMediaType(c.Request().Header.Get("Content-Type")); ct == "application/json" {
		if err := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 64<<10)).Decode(&req); err != nil {
			return badRequestf("the body is not JSON {\"url\": ...}: %v", err)
		}
	} else {
		req.URL = c.FormValue("url")
	}
	o, release, err := s.openURL(c, req.URL)
	if err != nil {
		return err
	}
	defer release()
	c.Response().Header().Set("Location", "/api/checkpoints/"+o.id)
	return c.JSON(http.StatusCreated, uploadJSON{ID: o.id, Name: o.meta.Name, Size: o.meta.Size,
		Format: o.ck.Format, URL: views.CheckpointURL(o.id), Source: o.meta.Source})
}

// handleOpenForm serves POST /open, the home page's "open a URL" form: a redirect to the
// checkpoint, or the home page again with the reason.
func (s *Server) handleOpenForm(c echo.Context) error {
	o, release, err := s.openURL(c, c.FormValue("url"))
	if err != nil {
		status, msg := classify(err)
		if status < 500 && status != http.StatusUnprocessableEntity {
			return s.render(c, status, templates.HomePage(s.home(msg)))
		}
		return err
	}
	release()
	return c.Redirect(http.StatusSeeOther, views.CheckpointURL(o.id))
}

// openRef opens the checkpoint an in-place id names; store.ErrNotFound if it names none.
func (s *Server) openRef(ctx context.Context, id string) (*store.Blob, store.Meta, error) {
	b, err := s.store.GetRef(ctx, id)
	if err != nil {
		return nil, store.Meta{}, err
	}
	var obj s3store.Object
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, store.Meta{}, fmt.Errorf("the record of in-place checkpoint %s is unreadable: %w", id, err)
	}
	if !s.remote.Enabled() {
		return nil, store.Meta{}, &goneError{msg: obj.URL + " was opened in place, and this server opens no URL in place (-open-urls)"}
	}
	blob, err := s.remote.Open(ctx, obj)
	if err != nil {
		return nil, store.Meta{}, err
	}
	return blob, store.Meta{ID: id, Name: obj.Name, Size: obj.Size, Uploaded: obj.Opened, Source: obj.URL}, nil
}

// goneError is a link that cannot be served any more, and will not be: 410.
type goneError struct{ msg string }

func (e *goneError) Error() string { return e.msg }
