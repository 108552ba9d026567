package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/export"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
)

// maxTensorLimit caps ?limit= of a JSON download: export.JSON decodes an inline tensor's
// elements all at once, so the cap bounds the memory one download takes.
const maxTensorLimit = 1 << 22

// exportTooLargeError is a JSON download that would exceed Config.MaxJSONExport.
type exportTooLargeError struct{ max int64 }

func (e *exportTooLargeError) Error() string {
	return fmt.Sprintf("the JSON of this subtree is larger than %s: lower limit= to leave large tensors out, or download tensors as .npy",
		views.HumanBytes(e.max))
}

// handleAPIDownload serves GET (and HEAD) /api/checkpoints/:id/download?path=P&format=json|npy|raw:
// any node as lossless JSON (tensors inline up to &limit=N elements), a tensor as .npy or
// as raw little-endian bytes (&as=raw keeps bfloat16/float8 bit patterns). Every answer
// has a Content-Length and honours Range requests.
func (s *Server) handleAPIDownload(c echo.Context) error {
	format := c.QueryParam("format")
	if format == "" {
		format = "json"
	}
	if format != "json" && format != "npy" && format != "raw" && format != "safetensors" {
		return badRequestf("format must be json, npy, raw or safetensors, got %q", format)
	}
	as := c.QueryParam("as")
	if as != "" && as != "raw" {
		return badRequestf(`as must be "raw" (keep bfloat16 and float8 bit patterns) or absent, got %q`, as)
	}
	limit := int64(export.DefaultTensorLimit)
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return badRequestf("limit must be a positive number of elements, got %q", v)
		}
		if n > maxTensorLimit {
			return badRequestf("limit may be at most %d elements; download larger tensors as .npy", maxTensorLimit)
		}
		limit = n
	}
	o, n, release, err := s.pathNode(c)
	if err != nil {
		return err
	}
	defer release()
	pointer := c.QueryParam("path")
	tag := etag(o.id, pointer, format, as, strconv.FormatInt(limit, 10))
	if format == "json" {
		return s.serveJSON(c, o, n, limit, tag)
	}
	if format == "safetensors" {
		return s.serveSafetensors(c, o, n, pointer, tag)
	}

	t, err := resolve(o.ck, n)
	if err != nil {
		return err
	}
	v, err := storedView(t)
	if err != nil {
		// str, bytes and structured arrays have no numbers, but their items copy as they are
		iv := t.Tensor.ItemView()
		if iv == nil || iv.ItemSize == 0 || iv.CheckItems() != nil {
			return err
		}
		v = iv
	}
	st, err := tensor.NewStream(v, tensor.StreamOptions{NPY: format == "npy", KeepBits: as == "raw"})
	if err != nil {
		return &valueError{path: t.Path(), dtype: t.Tensor.DType, err: err}
	}
	if err := probe(o, st, st.Size()); err != nil {
		return err
	}
	ext := ".npy"
	if format == "raw" {
		ext = "__" + st.OutDType + "_" + shapeName(v.Shape) + ".bin"
	}
	h := c.Response().Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", disposition(nameAs(c, o), pointer, ext))
	h.Set("X-Ckptview-Dtype", st.OutDType)
	h.Set("X-Ckptview-Shape", shapeHeader(v.Shape))
	h.Set("ETag", tag)
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, io.NewSectionReader(st, 0, st.Size()))
	return nil
}

// probe reads the last byte of a download before its status is sent: when the storage
// cannot be reached the client gets a 503 with Retry-After, not a 200 cut short. (An
// outage later in the stream cuts the body short of its Content-Length, which clients
// see as an error.)
func probe(o *opened, r io.ReaderAt, size int64) error {
	if size == 0 {
		return nil
	}
	if _, err := r.ReadAt(make([]byte, 1), size-1); err != nil && err != io.EOF {
		if f := o.fault(); f != nil {
			return f
		}
	}
	return nil
}

// serveSafetensors streams the tensors under n as one safetensors file (export.Safetensors):
// constant memory, a Content-Length, Range requests honoured.
func (s *Server) serveSafetensors(c echo.Context, o *opened, n *ckpt.Node, pointer, tag string) error {
	st, err := export.NewSafetensors(n, func(r *ckpt.Node) *ckpt.Node {
		t, err := resolve(o.ck, r)
		if err != nil {
			return nil
		}
		return t
	})
	if errors.Is(err, export.ErrNoTensors) {
		return &notTensorError{msg: fmt.Sprintf("%s: %v", displayPath(n.Path()), err)}
	}
	if err != nil {
		return &notTensorError{msg: strings.TrimPrefix(err.Error(), "export: ")}
	}
	if err := probe(o, st, st.Size()); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", disposition(nameAs(c, o), pointer, ".safetensors"))
	h.Set("X-Ckptview-Tensors", strconv.Itoa(st.Tensors))
	h.Set("ETag", tag)
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, io.NewSectionReader(st, 0, st.Size()))
	return nil
}

// serveJSON writes the JSON of a subtree to a temporary file (at most MaxJSONExport bytes)
// and serves that, so the answer has a Content-Length and honours Range like the others.
func (s *Server) serveJSON(c echo.Context, o *opened, n *ckpt.Node, limit int64, tag string) error {
	ctx := c.Request().Context()
	select {
	case s.exports <- struct{}{}:
		defer func() { <-s.exports }()
	case <-ctx.Done():
		return ctx.Err()
	}
	f, err := s.store.CreateTemp("export-*.json")
	if err != nil {
		return fmt.Errorf("json download: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := &cappedWriter{w: f, left: s.cfg.MaxJSONExport}
	if err := (export.JSON{TensorLimit: limit}).Write(ctx, w, n); err != nil {
		if errors.Is(err, errCapped) {
			return &exportTooLargeError{max: s.cfg.MaxJSONExport}
		}
		var lerr *loader.Error
		if errors.As(err, &lerr) {
			return err
		}
		return fmt.Errorf("json download of %s: %w", displayPath(n.Path()), err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", disposition(nameAs(c, o), n.Path(), ".json"))
	h.Set("ETag", tag)
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, f)
	return nil
}

// errCapped stops a JSON export that grows past its limit.
var errCapped = errors.New("server: export too large")

// cappedWriter fails once more than left bytes are written.
type cappedWriter struct {
	w    io.Writer
	left int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errCapped
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// etag names one download: the checkpoint is content-addressed, so its id and the request
// fix the bytes.
func etag(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return `"` + hex.EncodeToString(h[:12]) + `"`
}

// maxNamePart caps each part of a download's file name (checkpoint, path).
const maxNamePart = 80

// downloadName is the file name a download is saved as: the checkpoint's name without its
// extension, "__", the node's path with its segments joined by dots, then ext
// ("state_dict__wte.weight.npy"). Only [A-Za-z0-9._-] survive, so the name is safe in a
// header and on any file system.
func downloadName(file, pointer, ext string) string { return nameFor(file, pointer, ext, false) }

// disposition is the Content-Disposition of a download: an ASCII file name for every
// client, and the same name keeping its non-ASCII letters as filename* (RFC 6266) when it
// has any, so "层.weight" is not saved as "weight".
func disposition(file, pointer, ext string) string {
	ascii := nameFor(file, pointer, ext, false)
	h := `attachment; filename="` + ascii + `"`
	if full := nameFor(file, pointer, ext, true); full != ascii {
		h += "; filename*=UTF-8''" + url.PathEscape(full)
	}
	return h
}

func nameFor(file, pointer, ext string, letters bool) string {
	base := file
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		base = base[:i]
	}
	base = sanitize(base, letters)
	if len(base) > maxNamePart {
		base = strings.TrimRight(strings.ToValidUTF8(base[:maxNamePart], ""), "._-")
	}
	if base == "" {
		base = "checkpoint"
	}
	var segs []string
	if pointer != "" {
		for _, seg := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
			segs = append(segs, ckpt.UnescapeSegment(seg))
		}
	}
	name := base
	p := sanitize(strings.Join(segs, "."), letters)
	if len(p) > maxNamePart {
		p = strings.TrimLeft(strings.ToValidUTF8(p[len(p)-maxNamePart:], ""), "._-") // the end names the tensor
	}
	if p != "" {
		name += "__" + p
	}
	return name + ext
}

// sanitize keeps [A-Za-z0-9._-] of s, turns path separators into dots and anything
// else into "_", collapses each run of dots and underscores into one (a dot if the run has
// one), and trims them from the ends (no hidden files, no "..").
//
// With letters set, it keeps every letter and digit of any script (for the UTF-8
// filename* of a download).
func sanitize(s string, letters bool) string {
	var b strings.Builder
	run := byte(0) // the pending separator of a run of dots and underscores
	for _, r := range s {
		var c byte
		switch {
		case r == '/' || r == '\\' || r == '.':
			c = '.'
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-',
			letters && r > 0x7f && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			if run != 0 {
				b.WriteByte(run)
				run = 0
			}
			b.WriteRune(r)
			continue
		default:
			c = '_'
		}
		if run != '.' {
			run = c
		}
	}
	return strings.Trim(b.String(), "._-")
}

// shapeName writes a shape for a file name: "50x16", "scalar" for 0-d.
func shapeName(shape []int64) string {
	if len(shape) == 0 {
		return "scalar"
	}
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return strings.Join(parts, "x")
}

// shapeHeader writes a shape for X-Ckptview-Shape: "50,16", "" for 0-d.
func shapeHeader(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return strings.Join(parts, ",")
}
