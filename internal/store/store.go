// Package store keeps uploaded files as content-addressed blobs in a data directory.
//
// A blob's id is the sha256 of its bytes, so the same file uploaded twice is stored once and
// its id is a stable share link. Writes go to a temporary file that is hashed while it is
// streamed, synced and renamed into place, so an accepted upload survives a crash or restart
// and a half-written one never appears under an id.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Errors returned by the store. Callers map them to HTTP statuses.
var (
	// ErrTooLarge means the upload was longer than the limit passed to Put.
	ErrTooLarge = errors.New("store: file too large")
	// ErrNotFound means no blob has that id.
	ErrNotFound = errors.New("store: no such file")
	// ErrInvalidID means the id is not 64 lowercase hex digits.
	ErrInvalidID = errors.New("store: invalid id (want 64 lowercase hex digits)")
)

// Meta describes a stored blob. It is kept beside the blob as JSON.
type Meta struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	Uploaded time.Time `json:"uploaded"`
}

// Blob is an opened stored file. It reads at any offset, so the loader can leave tensor
// bytes in place and read them only when asked; close it when done.
type Blob struct {
	f    *os.File
	size int64
}

// ReadAt reads len(p) bytes at off.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// Size is the length of the blob in bytes.
func (b *Blob) Size() int64 { return b.size }

// Close releases the file.
func (b *Blob) Close() error { return b.f.Close() }

// Store is a directory of blobs. It is safe for concurrent use, and several Stores (or
// processes) may share a directory.
type Store struct {
	dir string
	// mu orders the final rename and metadata write of concurrent Puts in this process so
	// that the first name given to a blob is the one that sticks.
	mu sync.Mutex
	// now is the clock for upload times; tests replace it.
	now func() time.Time
}

// staleTemp is how old a leftover temporary file must be before New deletes it: old enough
// that no upload still writing to it is plausible.
const staleTemp = 24 * time.Hour

// New opens (creating if needed) a store in dir and removes temporary files that a crashed
// process left behind.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("store: no data directory")
	}
	for _, d := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	s := &Store{dir: dir, now: time.Now}
	s.removeStaleTemps()
	return s, nil
}

// DefaultDir is where uploads live when no directory is configured:
// $XDG_DATA_HOME/ckptview, else ~/.local/share/ckptview.
func DefaultDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "ckptview"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("store: no data directory: %w", err)
	}
	return filepath.Join(home, ".local", "share", "ckptview"), nil
}

// Dir is the store's data directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) removeStaleTemps() {
	tmp := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && s.now().Sub(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(tmp, e.Name()))
		}
	}
}

// ValidID reports whether id is a well-formed blob id: 64 lowercase hex digits.
func ValidID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *Store) blobPath(id string) string {
	return filepath.Join(s.dir, "blobs", id[:2], id)
}

func (s *Store) metaPath(id string) string {
	return s.blobPath(id) + ".json"
}

// Put streams r into the store under the sha256 of its bytes and returns the blob's
// metadata. If r holds more than max bytes (max > 0) it returns ErrTooLarge and keeps
// nothing. Storing bytes that are already stored succeeds and keeps the first name.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, max int64) (Meta, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return Meta{}, fmt.Errorf("store: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	src := r
	if max > 0 {
		src = io.LimitReader(r, max+1)
	}
	size, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, src})
	if err != nil {
		return Meta{}, fmt.Errorf("store: write %s: %w", name, err)
	}
	if max > 0 && size > max {
		return Meta{}, ErrTooLarge
	}
	if err := tmp.Sync(); err != nil {
		return Meta{}, fmt.Errorf("store: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Meta{}, fmt.Errorf("store: close: %w", err)
	}
	id := hex.EncodeToString(h.Sum(nil))
	meta := Meta{ID: id, Name: cleanName(name), Size: size, Uploaded: s.now().UTC()}

	s.mu.Lock()
	defer s.mu.Unlock()
	final := s.blobPath(id)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return Meta{}, fmt.Errorf("store: %w", err)
	}
	if _, err := os.Stat(final); err == nil {
		// Already stored: the temporary copy is dropped by the deferred cleanup.
	} else {
		if err := os.Rename(tmp.Name(), final); err != nil {
			return Meta{}, fmt.Errorf("store: %w", err)
		}
		committed = true
		if err := syncDir(filepath.Dir(final)); err != nil {
			return Meta{}, fmt.Errorf("store: %w", err)
		}
	}
	if old, err := s.readMeta(id); err == nil {
		return old, nil
	}
	if err := s.writeMeta(meta); err != nil {
		return Meta{}, err
	}
	return meta, nil
}

// Open returns the blob with that id and its metadata. The caller closes the blob.
func (s *Store) Open(id string) (*Blob, Meta, error) {
	if !ValidID(id) {
		return nil, Meta{}, ErrInvalidID
	}
	f, err := os.Open(s.blobPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Meta{}, ErrNotFound
	}
	if err != nil {
		return nil, Meta{}, fmt.Errorf("store: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Meta{}, fmt.Errorf("store: %w", err)
	}
	meta, err := s.readMeta(id)
	if err != nil {
		// The blob is there but its metadata was lost (a crash between the two renames):
		// the bytes are what matter, so describe them from the file.
		meta = Meta{ID: id, Name: id[:12], Uploaded: info.ModTime().UTC()}
	}
	meta.Size = info.Size()
	return &Blob{f: f, size: info.Size()}, meta, nil
}

func (s *Store) readMeta(id string) (Meta, error) {
	b, err := os.ReadFile(s.metaPath(id))
	if err != nil {
		return Meta{}, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("store: metadata of %s: %w", id, err)
	}
	if m.ID != id {
		return Meta{}, fmt.Errorf("store: metadata of %s names %q", id, m.ID)
	}
	return m, nil
}

// writeMeta writes the metadata file atomically: a reader sees the old file or the new one.
func (s *Store) writeMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "meta-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	final := s.metaPath(m.ID)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(final))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// maxName bounds a stored file name in bytes.
const maxName = 255

// cleanName keeps the base name of what the client called the file, without control
// characters, so it can be shown and used as a download name.
func cleanName(name string) string {
	name = strings.ReplaceAll(name, `\`, "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	for len(name) > maxName {
		_, n := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-n]
	}
	if name == "" || name == "." || name == ".." {
		return "upload"
	}
	return name
}

// ctxReader stops a long copy when the request that feeds it is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
