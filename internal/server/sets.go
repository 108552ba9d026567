package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
)

// Files uploaded together (a sharded checkpoint: its index and shards) are stored one by
// one, then as a set: a small manifest blob naming each file's id. The set's id is the
// sha256 of its manifest, so the same files give the same link; opening it opens every file
// and hands them to loader.OpenSet.

// maxSetFiles bounds the files of one set (a 405B model has 191 shards).
const maxSetFiles = 1024

// setMagic starts every set manifest.
const setMagic = `{"ckptview-set":1,`

type setManifest struct {
	Version int       `json:"ckptview-set"`
	Files   []setFile `json:"files"`
}

type setFile struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	Size int64  `json:"size"`
}

// putSet stores the manifest of files uploaded together.
func (s *Server) putSet(c echo.Context, files []store.Meta) (store.Meta, error) {
	m := setManifest{Version: 1}
	names := map[string]bool{}
	for _, f := range files {
		if names[f.Name] {
			return store.Meta{}, badRequestf("two files of the upload are named %q", f.Name)
		}
		names[f.Name] = true
		m.Files = append(m.Files, setFile{Name: f.Name, ID: f.ID, Size: f.Size})
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	b, _ := json.Marshal(m)
	return s.store.Put(c.Request().Context(), setName(m.Files), bytes.NewReader(b), int64(len(b)))
}

// setName names a set after its index ("model.safetensors" for
// model.safetensors.index.json), else its first file and a count.
func setName(files []setFile) string {
	for _, f := range files {
		if strings.HasSuffix(f.Name, ".index.json") {
			return strings.TrimSuffix(f.Name, ".index.json")
		}
	}
	return fmt.Sprintf("%s and %d more", files[0].Name, len(files)-1)
}

// readSet reports whether a blob is a set manifest, and reads it.
func readSet(b *store.Blob) (*setManifest, bool, error) {
	head := make([]byte, len(setMagic))
	if n, _ := b.ReadAt(head, 0); n < len(head) || string(head) != setMagic || b.Size() > 1<<20 {
		return nil, false, nil
	}
	raw, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil {
		return nil, true, err
	}
	var m setManifest
	if err := json.Unmarshal(raw, &m); err != nil || m.Version != 1 || len(m.Files) == 0 {
		return nil, false, nil // an uploaded file that only looks like one
	}
	return &m, true, nil
}

// openSet opens every file of a set and the set as one checkpoint; the blobs stay open
// with the checkpoint (they are its tensors' bytes).
func (s *Server) openSet(m *setManifest) (*ckpt.Checkpoint, []*store.Blob, error) {
	var blobs []*store.Blob
	var files []loader.File
	closeAll := func() {
		for _, b := range blobs {
			b.Close()
		}
	}
	for _, f := range m.Files {
		b, _, err := s.store.Open(f.ID)
		if errors.Is(err, store.ErrNotFound) {
			closeAll()
			return nil, nil, &loader.Error{Msg: fmt.Sprintf("the file %s of this set is no longer stored", f.Name), Offset: -1}
		}
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		blobs = append(blobs, b)
		files = append(files, loader.File{Name: f.Name, R: b.ReaderAt(), Size: b.Size()})
	}
	ck, err := loader.OpenSet(files, s.loaderOptions(s.cfg.Loader))
	for _, b := range blobs {
		if fault := b.Fault(); fault != nil { // an outage, not a verdict on the files
			if ck != nil {
				ck.Close()
			}
			closeAll()
			return nil, nil, fault
		}
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return ck, blobs, nil
}
