package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Folder serves the checkpoints under a local directory read-only, in place: nothing is
// copied into the store, and files that appear, change or go are seen at the next scan.
//
// A file's id is the sha256 of its bytes when it is at most HashLimit bytes (the same id
// an upload of it gets), else the sha256 of "ckptview folder", its absolute path, size and
// modification time, one per line: stable while the file is unchanged, new when it
// changes. A shard index (model.safetensors.index.json, pytorch_model.bin.index.json)
// and the shards it names are one entry, opened together.
type Folder struct {
	// Dir is the directory, absolute; Title the name the home page gives it.
	Dir, Title string
	// HashLimit is the largest file identified by its content (default 16 MiB).
	HashLimit int64
	// MaxFiles bounds a scan (default 10,000): a folder of more lists the first, by path.
	MaxFiles int

	mu      sync.Mutex
	scanned time.Time
	entries []*FolderEntry
	byID    map[string]*FolderEntry
	known   map[string]known // "path\nsize\nmtime" -> what the file was found to be
	root    string           // Dir with its links resolved, at the last scan
}

// known is what a scan learnt of a file, kept while it is unchanged: its content id (small
// files) and what its first bytes look like.
type known struct {
	id, format string
	checkpoint bool
}

// FolderEntry is one checkpoint in a folder: a file, or a shard index and its shards.
type FolderEntry struct {
	ID          string
	Name        string // the path relative to the folder, with forward slashes
	Description string // from the folder's examples.json, if any
	Size        int64
	Modified    time.Time
	Format      string // what its first bytes look like (Sniff), "sharded" for a set
	// Files are the absolute paths to open: one, or the index and its shards.
	Files []string
	// Truncated is set on the last entry of a scan cut at MaxFiles.
	Truncated bool
}

// checkpointExts are the names a folder lists even when their first bytes say nothing
// (a pickle of protocol 0 or 1 starts with any opcode).
var checkpointExts = []string{".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz",
	".safetensors", ".gguf", ".tar", ".pt.gz", ".z", ".gz", ".bz2", ".xz", ".lzma", ".lz4", ".model"}

// NewFolder returns the folder at dir; it is scanned when first listed.
func NewFolder(dir, title string) (*Folder, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("folder %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("folder %s: not a directory", dir)
	}
	if title == "" {
		title = filepath.Base(abs)
	}
	return &Folder{Dir: abs, Title: title, HashLimit: 16 << 20, MaxFiles: 10000, known: map[string]known{}}, nil
}

// rescanAfter is how long a scan is trusted: a folder is read again at most this often for
// a listing, and at most every missRescan for an id it does not know.
const (
	rescanAfter = 2 * time.Second
	missRescan  = 250 * time.Millisecond
)

// Entries lists the folder's checkpoints, scanning it again if the last scan is older
// than a moment: new files appear without a restart. Entries of an examples.json come
// first, in its order, with their descriptions; the others follow by path.
func (f *Folder) Entries() []*FolderEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.scanned) > rescanAfter {
		f.scan()
	}
	return f.entries
}

// Listed is the last listing, without looking at the folder again (the first call scans):
// for lists shown beside other pages, which must not walk a folder as they render.
func (f *Folder) Listed() []*FolderEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scanned.IsZero() {
		f.scan()
	}
	return f.entries
}

// Lookup returns the entry with that id, scanning again once if it is not known (a file
// added since).
func (f *Folder) Lookup(id string) *FolderEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.byID[id]; e != nil {
		return e
	}
	if time.Since(f.scanned) > missRescan { // bounded: unknown ids cannot make it walk the folder at will
		f.scan()
	}
	return f.byID[id]
}

// scan reads the folder. f.mu is held.
func (f *Folder) scan() {
	f.scanned = time.Now()
	f.root, _ = filepath.EvalSymlinks(f.Dir)
	descs, order, _ := readExamplesIndex(filepath.Join(f.Dir, examplesIndex))
	var paths []string
	truncated := false
	filepath.WalkDir(f.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() && p != f.Dir {
				return filepath.SkipDir
			}
			return nil
		}
		if p != f.Dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !(d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0) {
			return nil
		}
		if len(paths) >= f.MaxFiles {
			truncated = true
			return filepath.SkipAll
		}
		paths = append(paths, p)
		return nil
	})
	sort.Strings(paths)
	// shard indexes claim their shards
	claimed := map[string]bool{}
	var entries []*FolderEntry
	for _, p := range paths {
		if !isShardIndex(p) || order != nil && !slices.Contains(order, f.rel(p)) {
			continue
		}
		shards, err := readShardIndex(p)
		if err != nil || len(shards) == 0 {
			continue
		}
		e := &FolderEntry{Name: f.rel(p), Format: "sharded", Files: []string{p}}
		ok := true
		for _, s := range shards {
			sp := filepath.Join(filepath.Dir(p), filepath.FromSlash(s))
			if !f.inside(sp) {
				ok = false
				break
			}
			e.Files = append(e.Files, sp)
		}
		if !ok {
			continue
		}
		for _, fp := range e.Files {
			claimed[fp] = true
		}
		entries = append(entries, e)
	}
	for _, p := range paths {
		if claimed[p] || filepath.Base(p) == examplesIndex {
			continue
		}
		if order != nil && !slices.Contains(order, f.rel(p)) {
			continue // an examples.json names what the folder shows
		}
		if !f.inside(p) || order == nil && !f.looksLikeCheckpoint(p) {
			continue
		}
		entries = append(entries, &FolderEntry{Name: f.rel(p), Files: []string{p}})
	}
	f.byID = map[string]*FolderEntry{}
	var kept []*FolderEntry
	for _, e := range entries {
		if f.describe(e) != nil {
			continue // gone or unreadable since the walk
		}
		e.Description = descs[e.Name]
		if _, dup := f.byID[e.ID]; dup {
			continue
		}
		f.byID[e.ID] = e
		kept = append(kept, e)
	}
	rank := func(e *FolderEntry) int {
		if i := slices.Index(order, e.Name); i >= 0 {
			return i
		}
		return len(order)
	}
	sort.SliceStable(kept, func(i, j int) bool {
		if ri, rj := rank(kept[i]), rank(kept[j]); ri != rj {
			return ri < rj
		}
		return kept[i].Name < kept[j].Name
	})
	if truncated && len(kept) > 0 {
		kept[len(kept)-1].Truncated = true
	}
	f.entries = kept
}

// inside reports whether p, links resolved, is under the folder: a link to elsewhere is
// not served.
func (f *Folder) inside(p string) bool {
	real, err := filepath.EvalSymlinks(p)
	if err != nil || f.root == "" {
		return false
	}
	rel, err := filepath.Rel(f.root, real)
	return err == nil && filepath.IsLocal(rel)
}

func (f *Folder) rel(p string) string {
	r, err := filepath.Rel(f.Dir, p)
	if err != nil {
		return filepath.Base(p)
	}
	return filepath.ToSlash(r)
}

// describe fills an entry's size, time, format and id from its files.
func (f *Folder) describe(e *FolderEntry) error {
	e.Size = 0
	var identity strings.Builder
	identity.WriteString("ckptview folder\n")
	for i, p := range e.Files {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			return errors.New("not a regular file")
		}
		e.Size += st.Size()
		if st.ModTime().After(e.Modified) {
			e.Modified = st.ModTime()
		}
		fmt.Fprintf(&identity, "%s\n%d\n%d\n", p, st.Size(), st.ModTime().UnixNano())
		if i == 0 && e.Format == "" {
			e.Format = f.learn(p, st).format
		}
	}
	if len(e.Files) == 1 && e.Size <= f.HashLimit {
		st, err := os.Stat(e.Files[0])
		if err != nil {
			return err
		}
		k := f.learn(e.Files[0], st)
		if k.id == "" {
			id, err := hashFile(e.Files[0])
			if err != nil {
				return err
			}
			k.id = id
			f.known[fileKey(e.Files[0], st)] = k
		}
		e.ID = k.id
		return nil
	}
	h := sha256.Sum256([]byte(identity.String()))
	e.ID = hex.EncodeToString(h[:])
	return nil
}

func hashFile(p string) (string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sniffFile(p string) string {
	fh, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer fh.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(fh, head)
	return Sniff(head[:n])
}

func fileKey(p string, st os.FileInfo) string {
	return fmt.Sprintf("%s\n%d\n%d", p, st.Size(), st.ModTime().UnixNano())
}

// learn returns what is known of a file, sniffing it the first time it is seen as it is.
func (f *Folder) learn(p string, st os.FileInfo) known {
	key := fileKey(p, st)
	if k, ok := f.known[key]; ok {
		return k
	}
	k := known{format: sniffFile(p)}
	name := strings.ToLower(filepath.Base(p))
	k.checkpoint = k.format != ""
	for _, ext := range checkpointExts {
		k.checkpoint = k.checkpoint || strings.HasSuffix(name, ext)
	}
	if len(f.known) > 4*f.MaxFiles { // files that changed leave stale keys behind
		clear(f.known)
	}
	f.known[key] = k
	return k
}

func (f *Folder) looksLikeCheckpoint(p string) bool {
	st, err := os.Stat(p)
	return err == nil && f.learn(p, st).checkpoint
}

func isShardIndex(p string) bool {
	return strings.HasSuffix(strings.ToLower(filepath.Base(p)), ".index.json")
}

// readShardIndex returns the shard files an index's weight_map names, each once.
func readShardIndex(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil || st.Size() > 64<<20 {
		return nil, errors.New("no index")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range idx.WeightMap {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

// OpenEntry opens an entry's files for reading; the caller closes them. It checks that
// they are still the files the id names (a file changed since the scan has a new id).
func (f *Folder) OpenEntry(e *FolderEntry) ([]*Blob, error) {
	var blobs []*Blob
	closeAll := func() {
		for _, b := range blobs {
			b.Close()
		}
	}
	for _, p := range e.Files {
		fh, err := os.Open(p)
		if err != nil {
			closeAll()
			return nil, ErrNotFound
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			closeAll()
			return nil, ErrNotFound
		}
		blobs = append(blobs, NewBlob(fh, st.Size(), fh.Close, nil))
	}
	check := &FolderEntry{Files: e.Files, Format: e.Format}
	f.mu.Lock()
	err := f.describe(check)
	f.mu.Unlock()
	if err != nil || check.ID != e.ID {
		closeAll()
		return nil, ErrNotFound
	}
	return blobs, nil
}

// Meta describes an entry as the store describes a blob.
func (e *FolderEntry) Meta() Meta {
	return Meta{ID: e.ID, Name: filepath.Base(filepath.FromSlash(e.Name)), Size: e.Size, Uploaded: e.Modified.UTC(),
		Format: e.Format, Source: e.Files[0]}
}
