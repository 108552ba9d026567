package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/a-h/templ"
	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// handleHome serves GET /: the upload form and the bundled examples.
func (s *Server) handleHome(c echo.Context) error {
	return s.render(c, http.StatusOK, templates.HomePage(s.home("")))
}

// home is the home page's view model, with an error message from a failed form upload.
func (s *Server) home(errMsg string) views.Home {
	var examples []views.Example
	for _, e := range s.examples {
		examples = append(examples, views.Example{ID: e.ID, Name: e.Name, Description: e.Description, Size: e.Size})
	}
	if s.exFolder != nil {
		for _, e := range s.exFolder.Entries() {
			examples = append(examples, views.Example{ID: e.ID, Name: filepath.Base(e.Name), Description: e.Description, Size: e.Size})
		}
	}
	h := views.Home{Examples: examples, MaxUpload: s.cfg.MaxUpload, Error: errMsg, TokenRequired: s.cfg.UploadToken != ""}
	if s.remote.Enabled() {
		h.OpenURLs = s.remote.Prefixes()
	}
	h.Folders = s.folderViews()
	return h
}

// handleStatic serves GET /static/*: the embedded CSS and JS. Requests that name a version
// (?v=...) are cached for a year, others for a day.
func (s *Server) handleStatic() echo.HandlerFunc {
	files := echo.StaticDirectoryHandler(s.static, false)
	return func(c echo.Context) error {
		cache := "public, max-age=86400"
		if c.QueryParam("v") != "" {
			cache = "public, max-age=31536000, immutable"
		}
		c.Response().Header().Set("Cache-Control", cache)
		return files(c)
	}
}

// handleUploadForm serves POST /upload, the upload form for browsers without JavaScript:
// it stores the file and redirects to its page. A request the server cannot take back (no
// file, too large, no upload token) shows the form again with the reason.
func (s *Server) handleUploadForm(c echo.Context) error {
	if !isMultipart(c.Request()) {
		return badRequestf("the upload form must be sent as multipart/form-data")
	}
	meta, err := s.receive(c)
	if err != nil {
		switch status, msg := classify(err); status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnauthorized:
			if status == http.StatusUnauthorized {
				challenge(c.Response())
				msg = "This server takes uploads only with its upload token: enter it above the file."
			}
			return s.render(c, status, templates.HomePage(s.home(msg)))
		}
		return err
	}
	o, release, err := s.cache.get(c.Request().Context(), meta.ID)
	if err != nil {
		return err
	}
	o.addName(meta.As)
	release()
	return c.Redirect(http.StatusSeeOther, uploadURL(meta))
}

// handleCheckpoint serves GET /c/:id: the summary, findings and tree of a checkpoint,
// its state dict grouped by module or, with ?view=raw, the objects as unpickled.
func (s *Server) handleCheckpoint(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	if o.ck.Tensors >= unitsAheadTensors {
		// The page needs the statistics units (to say what is computed) after it has grouped
		// the modules; each walks every tensor once per checkpoint, so on a large state dict
		// the first page makes them side by side.
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.prepareUnits(o)
		}()
		defer func() { <-done }() // before release: the units read the tree
	}
	p := views.NewCheckpointPage(fileMetaAs(c, o), o.ck).WithView(c.QueryParam("view"))
	if as := nameAs(c, o); as != o.meta.Name { // a link made by a later upload of the same bytes
		p.URL += "?name=" + url.QueryEscape(as)
	}
	if sd := c.QueryParam("sd"); sd != "" {
		p = p.WithStateDict(o.ck, sd)
	}
	p.AddStats(s.statsLookup(o))
	p.AddLayerChart(o.ck, s.statsLookup(o))
	if q := c.QueryParam("q"); q != "" { // the search box without scripts
		offset, err := intParam(c, "offset", 0)
		if err != nil {
			return err
		}
		p.Search = s.searchView(c, o, q, offset)
	}
	if o.ck.Tensors > 0 {
		p.Stats = s.statsJobBlock(o, s.statsProgress(o))
		p.CompareURL = "/c/" + o.id + "/compare"
		p.Compare = s.compareChoices(o.id)
	}
	return s.render(c, http.StatusOK, templates.CheckpointPage(p))
}

// maxCodeBytes bounds an archive member shown as text.
const maxCodeBytes = 4 << 20

// handleCode serves GET /c/:id/code?member=NAME: a member of the checkpoint's archive
// (TorchScript code, extra files) as numbered text, or its bytes with &raw=1. Of several
// members of one name it shows the one the loading program reads, or with &copy=K the
// K-th of them in the archive's order.
func (s *Server) handleCode(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	name := c.QueryParam("member")
	copyN, err := intParam(c, "copy", 0) // of a name several members have: which one
	if err != nil {
		return err
	}
	m := o.ck.Member(name, copyN)
	if m == nil {
		return echo.NewHTTPError(http.StatusNotFound, ckpt.ErrMemberNotFound.Error())
	}
	data, err := m.Read(maxCodeBytes)
	if err != nil {
		return err
	}
	if c.QueryParam("raw") != "" {
		base := name[strings.LastIndexByte(name, '/')+1:]
		c.Response().Header().Set("Content-Disposition", `attachment; filename="`+downloadName(base, "", "")+`"`)
		return c.Blob(http.StatusOK, "application/octet-stream", data)
	}
	return s.render(c, http.StatusOK, templates.CodePage(views.NewCodePage(fileMeta(o), *m, copyN, data)))
}

// handleNodeRoot serves GET /c/:id/n by redirecting to the root node's page.
func (s *Server) handleNodeRoot(c echo.Context) error {
	id := c.Param("id")
	if !store.ValidID(id) {
		return store.ErrInvalidID
	}
	return c.Redirect(http.StatusMovedPermanently, views.NodeURL(id, ""))
}

// handleNode serves GET /c/:id/n/*: one node, its children paged by ?offset=N.
func (s *Server) handleNode(c echo.Context) error {
	pointer, err := nodePointer(c)
	if err != nil {
		return err
	}
	offset, err := intParam(c, "offset", 0)
	if err != nil {
		return err
	}
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	n, err := node(o.ck, pointer)
	if err != nil {
		return err
	}
	p := views.NewNodePage(fileMetaAs(c, o), o.ck, n, offset, views.DefaultLimit)
	p.AddStats(s.statsLookup(o))
	if err := s.tensorPage(c, o, n, &p); err != nil {
		return err
	}
	return s.render(c, http.StatusOK, templates.NodePage(p))
}

// handleChildren serves GET /c/:id/fragment/children?path=P&offset=N: the htmx fragment
// with one page of a node's children.
func (s *Server) handleChildren(c echo.Context) error {
	offset, err := intParam(c, "offset", 0)
	if err != nil {
		return err
	}
	o, n, release, err := s.pathNode(c)
	if err != nil {
		return err
	}
	defer release()
	kids := views.NewChildren(fileMeta(o), o.ck, n, offset, views.DefaultLimit)
	kids.AddStats(s.statsLookup(o))
	return s.render(c, http.StatusOK, templates.ChildrenFragment(kids))
}

// statsLookup reads the statistics cache of one checkpoint for tree rows: it never
// computes anything.
func (s *Server) statsLookup(o *opened) views.StatsLookup {
	return func(pointer string) *tensor.Stats { return s.cachedStats(o, pointer) }
}

// render writes a component as the response. It renders into a buffer first, so a failure
// half-way still becomes a proper error page.
func (s *Server) render(c echo.Context, status int, comp templ.Component) error {
	var buf bytes.Buffer
	if err := comp.Render(c.Request().Context(), &buf); err != nil {
		return fmt.Errorf("render %s: %w", c.Path(), err)
	}
	return c.Blob(status, "text/html; charset=utf-8", buf.Bytes())
}

// checkpoint opens the checkpoint named by the :id parameter; call release when done.
func (s *Server) checkpoint(c echo.Context) (*opened, func(), error) {
	id := c.Param("id")
	if !store.ValidID(id) {
		return nil, nil, store.ErrInvalidID
	}
	return s.cache.get(c.Request().Context(), id)
}

// pathNode opens the checkpoint of :id and finds the node at the ?path= query parameter.
// The caller must call release once it is done with them (also when err is not nil and
// release is not nil).
func (s *Server) pathNode(c echo.Context) (o *opened, n *ckpt.Node, release func(), err error) {
	o, release, err = s.checkpoint(c)
	if err != nil {
		return nil, nil, nil, err
	}
	n, err = node(o.ck, c.QueryParam("path"))
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return o, n, release, nil
}

// node finds the node at a JSON Pointer, saying which pointer when there is none.
func node(ck *ckpt.Checkpoint, pointer string) (*ckpt.Node, error) {
	n, err := ck.Node(pointer)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", err, pointer)
	}
	return n, nil
}

// nameAs is the name a page shows: ?name= when the bytes were uploaded under it (each
// upload's link says its own name), else the first name.
func nameAs(c echo.Context, o *opened) string {
	if n := c.QueryParam("name"); n != "" && o.hasName(n) {
		return n
	}
	return o.meta.Name
}

// fileMetaAs is fileMeta under the name the link asks for (nameAs).
func fileMetaAs(c echo.Context, o *opened) views.FileMeta {
	m := fileMeta(o)
	m.Name = nameAs(c, o)
	return m
}

func fileMeta(o *opened) views.FileMeta {
	return views.FileMeta{ID: o.id, Name: o.meta.Name, Format: o.ck.Format, Size: o.meta.Size, Source: o.meta.Source}
}

// nodePointer is the JSON Pointer a /c/:id/n/* URL names: the rest of the path after /n/,
// each segment path-unescaped, then "~", "~." and "~.." read as the segments "", "." and
// ".." (views.PointerSegment; views.NodeURL writes them so, as a browser keeps them). An
// empty rest is the root.
func nodePointer(c echo.Context) (string, error) {
	raw := c.Request().URL.EscapedPath()
	i := strings.Index(raw, "/n/")
	if i < 0 {
		return "", nil
	}
	rest := raw[i+len("/n/"):]
	if rest == "" {
		return "", nil
	}
	segs := strings.Split(rest, "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return "", badRequestf("bad escape in node path segment %q", seg)
		}
		segs[i] = views.PointerSegment(u)
	}
	return "/" + strings.Join(segs, "/"), nil
}

// intParam reads a non-negative integer query parameter, def when absent.
func intParam(c echo.Context, name string, def int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, badRequestf("%s must be a non-negative integer, got %q", name, v)
	}
	return n, nil
}
