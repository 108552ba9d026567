package server

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/report"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// uploadJSON answers POST /api/checkpoints.
type uploadJSON struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Format string `json:"format"`
	URL    string `json:"url"`
	// Source is the URL a checkpoint opened in place is read from.
	Source string `json:"source,omitempty"`
	// Files are the files of an upload of several (a sharded checkpoint), stored one by one.
	Files []uploadFileJSON `json:"files,omitempty"`
}

type uploadFileJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// checkpointJSON answers GET /api/checkpoints/:id.
type checkpointJSON struct {
	ID           string           `json:"id"`
	Name         string           `json:"name"`
	Size         int64            `json:"size"`
	Format       string           `json:"format"`
	Tensors      int              `json:"tensors"`
	Parameters   int64            `json:"parameters"`
	BytesByDType map[string]int64 `json:"bytes_by_dtype"`
	Findings     []findingJSON    `json:"findings"`
	Notes        []string         `json:"notes"`
	// WeightsOnly is torch.load(weights_only=True)'s verdict, for torch.save files.
	WeightsOnly *weightsOnlyJSON `json:"weights_only,omitempty"`
}

// The findings and weights_only shapes are the report package's, shared with the scan
// command.
type (
	weightsOnlyJSON = report.WeightsOnly
	findingJSON     = report.Finding
)

// nodeJSON answers GET /api/checkpoints/:id/node. The embedded parts appear only for the
// kinds they describe.
type nodeJSON struct {
	childJSON
	Len      int64       `json:"len"`
	Children []childJSON `json:"children"`
	// Next is the URL of the next page of children, null on the last page.
	Next *string `json:"next"`
	*tensorJSON
	*globalJSON
	*refJSON
}

// childJSON is one child in a node's page of children.
type childJSON struct {
	Key     string    `json:"key"`
	Path    string    `json:"path"`
	Kind    ckpt.Kind `json:"kind"`
	Type    string    `json:"type"`
	Summary string    `json:"summary"`
}

// tensorJSON is the layout of a tensor or ndarray.
type tensorJSON struct {
	DType         string       `json:"dtype"`
	Shape         []int64      `json:"shape"`
	Strides       []int64      `json:"strides"`
	StorageOffset int64        `json:"storage_offset"`
	Numel         int64        `json:"numel"`
	NBytes        int64        `json:"nbytes"`
	Storage       *storageJSON `json:"storage,omitempty"`
	// Fields are a structured dtype's fields (dtype is then numpy's "voidN").
	Fields []fieldJSON `json:"fields,omitempty"`
}

// fieldJSON is one field of a structured dtype: numpy's name and descr, its byte offset in
// an element and, for a sub-array field, its shape.
type fieldJSON struct {
	Name   string  `json:"name"`
	DType  string  `json:"dtype"`
	Descr  string  `json:"descr"`
	Offset int64   `json:"offset"`
	Shape  []int64 `json:"shape,omitempty"`
}

// storageJSON names a tensor's storage and the other tensors that view it (tied weights).
type storageJSON struct {
	Key        string   `json:"key"`
	Location   string   `json:"location"`
	SharedWith []string `json:"shared_with"`
	// File names the file of a set (a shard) that holds the bytes.
	File string `json:"file,omitempty"`
}

type globalJSON struct {
	Global string `json:"global"`
	Danger bool   `json:"danger"`
}

type refJSON struct {
	Target string `json:"target"`
}

// handleAPIUpload serves POST /api/checkpoints: store the file (multipart field "file" or
// the raw body with ?name=), open it, and answer 201 with its id and page URL.
func (s *Server) handleAPIUpload(c echo.Context) error {
	meta, err := s.receive(c)
	if err != nil {
		return err
	}
	o, release, err := s.cache.get(c.Request().Context(), meta.ID)
	if err != nil {
		return err
	}
	defer release()
	o.addName(meta.As)
	c.Response().Header().Set("Location", "/api/checkpoints/"+meta.ID)
	up := uploadJSON{
		ID:     meta.ID,
		Name:   o.meta.Name,
		Size:   o.meta.Size,
		Format: o.ck.Format,
		URL:    uploadURL(meta),
	}
	if meta.As != "" {
		up.Name = meta.As // the name this upload gave; the link shows it
	}
	if o.files != nil {
		if b, _, err := s.store.Open(meta.ID); err == nil {
			if m, ok, _ := readSet(b); ok {
				for _, f := range m.Files {
					up.Files = append(up.Files, uploadFileJSON{ID: f.ID, Name: f.Name, Size: f.Size})
				}
			}
			b.Close()
		}
	}
	return c.JSON(http.StatusCreated, up)
}

// uploadURL is the link an upload answers with: the checkpoint's page, under the name this
// upload gave when the same bytes were first uploaded under another.
func uploadURL(meta store.Meta) string {
	u := views.CheckpointURL(meta.ID)
	if meta.As != "" && meta.As != meta.Name {
		u += "?name=" + url.QueryEscape(meta.As)
	}
	return u
}

// handleAPICheckpoint serves GET /api/checkpoints/:id: the summary of a checkpoint.
func (s *Server) handleAPICheckpoint(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	ck := o.ck
	byDType := ck.BytesByDType
	if byDType == nil {
		byDType = map[string]int64{}
	}
	notes := ck.Notes
	if notes == nil {
		notes = []string{}
	}
	return c.JSON(http.StatusOK, checkpointJSON{
		ID:           o.id,
		Name:         o.meta.Name,
		Size:         o.meta.Size,
		Format:       ck.Format,
		Tensors:      ck.Tensors,
		Parameters:   ck.Parameters,
		BytesByDType: byDType,
		Findings:     findingsJSON(ck.Findings),
		Notes:        notes,
		WeightsOnly:  report.NewWeightsOnly(ck.WeightsOnly),
	})
}

// handleAPINode serves GET /api/checkpoints/:id/node?path=P&offset=N&limit=M: one node
// and a page of its children.
func (s *Server) handleAPINode(c echo.Context) error {
	offset, err := intParam(c, "offset", 0)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", views.DefaultLimit)
	if err != nil {
		return err
	}
	if limit == 0 {
		return badRequestf("limit must be at least 1")
	}
	limit = min(limit, views.MaxLimit)
	o, n, release, err := s.pathNode(c)
	if err != nil {
		return err
	}
	defer release()
	pointer := c.QueryParam("path")

	total := n.NumItems()
	out := nodeJSON{
		childJSON: child(n),
		Len:       n.Len,
		Children:  []childJSON{},
	}
	if out.Len == 0 {
		out.Len = int64(total)
	}
	start := min(offset, total)
	end := min(start+limit, total)
	for _, k := range n.Items(start, end) {
		out.Children = append(out.Children, child(k))
	}
	if end < total {
		q := url.Values{"path": {pointer}, "offset": {strconv.Itoa(end)}, "limit": {strconv.Itoa(limit)}}
		next := "/api/checkpoints/" + o.id + "/node?" + q.Encode()
		out.Next = &next
	}
	switch {
	case n.Tensor != nil:
		out.tensorJSON = tensorLayout(n)
	case n.Kind == ckpt.KindObject || n.Kind == ckpt.KindGlobal:
		out.globalJSON = &globalJSON{Global: n.Global, Danger: n.Danger}
	case n.Kind == ckpt.KindRef:
		out.refJSON = &refJSON{Target: n.Target}
	}
	return c.JSON(http.StatusOK, out)
}

func child(n *ckpt.Node) childJSON {
	return childJSON{Key: n.Key, Path: n.Path(), Kind: n.Kind, Type: n.Type, Summary: views.Summary(n)}
}

func tensorLayout(n *ckpt.Node) *tensorJSON {
	t := n.Tensor
	out := &tensorJSON{
		DType:         t.DType,
		Shape:         nonNil(t.Shape),
		Strides:       nonNil(t.Strides),
		StorageOffset: t.StorageOffset,
		Numel:         t.Numel(),
		NBytes:        t.NBytes(),
	}
	for _, f := range t.Fields {
		out.Fields = append(out.Fields, fieldJSON{Name: f.Name, DType: f.DType, Descr: f.Descr, Offset: f.Offset, Shape: f.Shape})
	}
	if st := t.Storage; st != nil {
		shared := []string{}
		for _, p := range st.Users {
			if p != n.Path() {
				shared = append(shared, p)
			}
		}
		out.Storage = &storageJSON{Key: st.Key, Location: st.Location, SharedWith: shared, File: st.File}
	}
	return out
}

func findingsJSON(fs []ckpt.Finding) []findingJSON { return report.Findings(fs) }

func nonNil(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}
