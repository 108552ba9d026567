package server

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// allFolders are the examples' folder and the -dir folders.
func (s *Server) allFolders() []*store.Folder {
	if s.exFolder == nil {
		return s.folders
	}
	return append([]*store.Folder{s.exFolder}, s.folders...)
}

// folderEntry finds the folder file (or shard set) with that id.
func (s *Server) folderEntry(id string) (*store.Folder, *store.FolderEntry) {
	for _, f := range s.allFolders() {
		if e := f.Lookup(id); e != nil {
			return f, e
		}
	}
	return nil, nil
}

// openFolderEntry opens a folder's checkpoint in place, a shard set as one checkpoint.
func (s *Server) openFolderEntry(f *store.Folder, e *store.FolderEntry) (*opened, error) {
	blobs, err := f.OpenEntry(e)
	if err != nil {
		return nil, err
	}
	meta := e.Meta()
	if len(blobs) == 1 {
		ck, err := s.load(blobs[0].ReaderAt(), blobs[0].Size())
		if err != nil {
			blobs[0].Close()
			var lerr *loader.Error
			if errors.As(err, &lerr) {
				return &opened{id: e.ID, meta: meta, err: err, size: findingsBytes(lerr.Findings)}, nil
			}
			return nil, fmt.Errorf("open %s: %w", e.Name, err)
		}
		return &opened{id: e.ID, meta: meta, ck: ck, blob: blobs[0], size: treeBytes(ck)}, nil
	}
	files := make([]loader.File, len(blobs))
	for i, b := range blobs {
		files[i] = loader.File{Name: filepath.Base(e.Files[i]), R: b.ReaderAt(), Size: b.Size()}
	}
	ck, err := loader.OpenSet(files, s.loaderOptions(s.cfg.Loader))
	if err != nil {
		for _, b := range blobs {
			b.Close()
		}
		var lerr *loader.Error
		if errors.As(err, &lerr) {
			return &opened{id: e.ID, meta: meta, err: err, size: findingsBytes(lerr.Findings)}, nil
		}
		return nil, fmt.Errorf("open %s: %w", e.Name, err)
	}
	return &opened{id: e.ID, meta: meta, ck: ck, files: blobs, size: treeBytes(ck)}, nil
}

// folderViews lists the -dir folders for the home page.
func (s *Server) folderViews() []views.Folder {
	var out []views.Folder
	for _, f := range s.folders {
		v := views.Folder{Title: f.Title, Dir: f.Dir}
		for _, e := range f.Entries() {
			v.Files = append(v.Files, views.FolderFile{ID: e.ID, Name: e.Name, Size: e.Size, Modified: e.Modified,
				Format: e.Format, Shards: len(e.Files) - 1})
			v.Truncated = v.Truncated || e.Truncated
		}
		out = append(out, v)
	}
	return out
}
