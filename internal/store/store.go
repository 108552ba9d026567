// Package store keeps uploaded files as content-addressed blobs in a data directory.
//
// A blob's id is the sha256 of its bytes, so the same file uploaded twice is stored once and
// its id is a stable share link. Writes go to a temporary file that is hashed while it is
// streamed, synced and renamed into place, so an accepted upload survives a crash or restart
// and a half-written one never appears under an id.
//
// Each Store writes its temporary files in a directory of its own under tmp/, locked for as
// long as the Store is open; New removes the directories of Stores that are gone (a killed
// process holds no lock), so what a crash leaves behind is cleaned at the next start.
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
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Errors returned by the store. Callers map them to HTTP statuses; their texts are
// written to be shown to users as they are.
var (
	// ErrTooLarge means the upload was longer than the limit passed to Put.
	ErrTooLarge = errors.New("file too large")
	// ErrNotFound means no blob has that id.
	ErrNotFound = errors.New("store: no such file")
	// ErrInvalidID means the id is not 64 lowercase hex digits.
	ErrInvalidID = errors.New("store: invalid id (want 64 lowercase hex digits)")
)

// errLockUnsupported means this system cannot tell whether a temporary directory's Store
// is alive; such directories are removed by age only.
var errLockUnsupported = errors.New("store: directory locks are not supported here")

// Meta describes a stored blob. It is kept beside the blob as JSON.
type Meta struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	Uploaded time.Time `json:"uploaded"`
	// Format is what the first bytes look like (Sniff), where the store records it.
	Format string `json:"format,omitempty"`
	// Source is the URL of a checkpoint opened in place ("" for an upload).
	Source string `json:"source,omitempty"`
	// Names are every name the bytes were uploaded under, the first (Name) first, at most
	// maxNames: a link made by a later upload shows its own (?name=).
	Names []string `json:"names,omitempty"`
	// As is the name this Put was given (cleaned); not stored.
	As string `json:"-"`
}

// maxNames bounds the names kept for one blob.
const maxNames = 64

// HasName reports whether the blob was uploaded under name.
func (m Meta) HasName(name string) bool {
	return name == m.Name || slices.Contains(m.Names, name)
}

// AddName records name among m's names; it reports whether m changed.
func (m *Meta) AddName(name string) bool {
	if len(m.Names) == 0 && m.Name != "" {
		m.Names = []string{m.Name}
	}
	if m.HasName(name) || len(m.Names) >= maxNames {
		return false
	}
	m.Names = append(m.Names, name)
	return true
}

// Blob is an opened stored file. It reads at any offset, so the loader (given ReaderAt)
// can leave tensor bytes in place and read them only when asked; close it when done.
type Blob struct {
	r     io.ReaderAt
	close func() error
	size  int64
	fault func() error
}

// NewBlob makes a Blob of a reader of size bytes. close releases it; fault, if not nil,
// returns the first failure a read met that is not the file's (see Blob.Fault).
func NewBlob(r io.ReaderAt, size int64, close, fault func() error) *Blob {
	return &Blob{r: r, close: close, size: size, fault: fault}
}

// ReadAt reads len(p) bytes at off.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) { return b.r.ReadAt(p, off) }

// Size is the length of the blob in bytes.
func (b *Blob) Size() int64 { return b.size }

// ReaderAt is the reader under the blob, which the loader is given: the loader and the
// tensor code read one that takes WillRead hints (a bucket's) as remote, fetching ahead and
// reading a torch archive's local headers in parallel first, and any other as a local
// file. The Blob has no WillRead of its own, so that a local file is never taken for a
// remote one, which reads each storage's header twice, without the loader's header cache.
func (b *Blob) ReaderAt() io.ReaderAt { return b.r }

// Close releases the blob.
func (b *Blob) Close() error {
	if b.close == nil {
		return nil
	}
	return b.close()
}

// Fault returns the error of the first read that failed for a reason other than the
// file's bytes: the storage could not be reached (*UnavailableError), or an object read in
// place changed (never for a local file); nil if none did. A reader of the blob that fails
// asks it, so that such a failure is reported as what it is and not blamed on the file.
func (b *Blob) Fault() error {
	if b.fault == nil {
		return nil
	}
	return b.fault()
}

// Blobs is where uploads live: a local directory (Store) or an S3 bucket (package
// s3store). Implementations are safe for concurrent use by several processes.
type Blobs interface {
	// Put streams r in under the sha256 of its bytes and returns the blob's metadata; more
	// than max bytes (max > 0) is ErrTooLarge and keeps nothing. Bytes already stored keep
	// their first name.
	Put(ctx context.Context, name string, r io.Reader, max int64) (Meta, error)
	// Open returns the blob with that id and its metadata; ErrNotFound if there is none.
	Open(id string) (*Blob, Meta, error)
	// PutAux stores a small document that belongs to blob id (computed statistics),
	// replacing any of that name; GetAux reads it back, ErrNotFound if there is none.
	PutAux(ctx context.Context, id, name string, data []byte) error
	GetAux(ctx context.Context, id, name string) ([]byte, error)
	// PutRef records what the id of a checkpoint opened in place names (a small JSON
	// document: its URL and version), so that every replica opens the same link; GetRef
	// reads it back, ErrNotFound if there is none.
	PutRef(ctx context.Context, id string, data []byte) error
	GetRef(ctx context.Context, id string) ([]byte, error)
	// CreateTemp creates a local scratch file that is cleaned if the process dies.
	CreateTemp(pattern string) (*os.File, error)
	// Where says where the blobs are, for the log.
	Where() string
	Close() error
}

// UnavailableError is a storage that could not be reached or answered too slowly: the
// request may succeed later, and says nothing about the file.
type UnavailableError struct {
	Err error
}

func (e *UnavailableError) Error() string {
	return "the checkpoint storage is unavailable: " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Store is a directory of blobs. It is safe for concurrent use, and several Stores (or
// processes) may share a directory.
type Store struct {
	dir string
	// tmp is this Store's own directory for files being written, locked while it is open.
	tmp     string
	tmpLock io.Closer
	// mu orders the final rename and metadata write of concurrent Puts in this process so
	// that the first name given to a blob is the one that sticks.
	mu sync.Mutex
	// now is the clock for upload times; tests replace it.
	now func() time.Time
}

// staleTemp is how old a leftover temporary file must be before New deletes it when no
// lock says whether its writer is gone (files of older versions, systems without flock):
// old enough that no upload still writing to it is plausible.
const staleTemp = 24 * time.Hour

// tmpPrefix starts the name of each Store's temporary directory under tmp/; newPrefix the
// name it has while it is being created and locked.
const (
	tmpPrefix = "p-"
	newPrefix = ".new-"
)

// New opens (creating if needed) a store in dir and removes the temporary files that a
// crashed or killed process left behind. Close it when done.
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
	if err := s.makeTempDir(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return s, nil
}

// makeTempDir creates and locks this Store's temporary directory. It is locked under a
// name no cleaner looks at, then renamed, so another process never sees it unlocked.
func (s *Store) makeTempDir() error {
	tmp := filepath.Join(s.dir, "tmp")
	d, err := os.MkdirTemp(tmp, newPrefix+"*")
	if err != nil {
		return err
	}
	lock, err := lockDir(d)
	if err != nil {
		os.Remove(d)
		return err
	}
	final := filepath.Join(tmp, tmpPrefix+strings.TrimPrefix(filepath.Base(d), newPrefix))
	if err := os.Rename(d, final); err != nil {
		lock.Close()
		os.Remove(d)
		return err
	}
	s.tmp, s.tmpLock = final, lock
	return nil
}

// Close removes the Store's temporary directory and releases its lock. Blobs stay.
func (s *Store) Close() error {
	if s.tmpLock == nil {
		return nil
	}
	err := os.RemoveAll(s.tmp)
	if cerr := s.tmpLock.Close(); err == nil {
		err = cerr
	}
	s.tmpLock = nil
	return err
}

// CreateTemp creates a temporary file in the Store's own directory, which is on the same
// file system as the blobs and cleaned if the process dies. The caller removes it.
func (s *Store) CreateTemp(pattern string) (*os.File, error) {
	return os.CreateTemp(s.tmp, pattern)
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

// removeStaleTemps deletes what other Stores left in tmp/: the directories of Stores whose
// lock is free (their process is gone), and old loose files and unfinished directories.
func (s *Store) removeStaleTemps() {
	tmp := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(tmp, e.Name())
		if e.IsDir() && strings.HasPrefix(e.Name(), tmpPrefix) {
			if lock, err := tryLockDir(p); err == nil {
				os.RemoveAll(p)
				lock.Close()
				continue
			} else if !errors.Is(err, errLockUnsupported) {
				continue // held: its Store is alive
			}
		}
		info, err := e.Info()
		if err == nil && s.now().Sub(info.ModTime()) > staleTemp {
			os.RemoveAll(p)
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

// auxPath is where blob id's document name lives: beside the blob.
func (s *Store) auxPath(id, name string) string {
	return s.blobPath(id) + "." + name
}

// Where is the data directory.
func (s *Store) Where() string { return s.dir }

// PutAux writes a document of checkpoint id atomically: a reader sees the old one or the new.
func (s *Store) PutAux(ctx context.Context, id, name string, data []byte) error {
	if !ValidID(id) {
		return ErrInvalidID
	}
	if !ValidAuxName(name) {
		return fmt.Errorf("store: invalid document name %q", name)
	}
	// the id may name a blob, a checkpoint opened in place or a folder's file: its
	// documents live beside where its blob would be
	if err := s.mkdirSynced(filepath.Dir(s.blobPath(id))); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.writeAtomic(s.auxPath(id, name), data)
}

func (s *Store) refPath(id string) string {
	return filepath.Join(s.dir, "refs", id[:2], id+".json")
}

// PutRef records what an in-place id names, beside the blobs under refs/.
func (s *Store) PutRef(ctx context.Context, id string, data []byte) error {
	if !ValidID(id) {
		return ErrInvalidID
	}
	final := s.refPath(id)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.writeAtomic(final, data)
}

// GetRef reads a record PutRef wrote.
func (s *Store) GetRef(ctx context.Context, id string) ([]byte, error) {
	if !ValidID(id) {
		return nil, ErrInvalidID
	}
	b, err := os.ReadFile(s.refPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return b, nil
}

// GetAux reads a document PutAux wrote.
func (s *Store) GetAux(ctx context.Context, id, name string) ([]byte, error) {
	if !ValidID(id) {
		return nil, ErrInvalidID
	}
	if !ValidAuxName(name) {
		return nil, fmt.Errorf("store: invalid document name %q", name)
	}
	b, err := os.ReadFile(s.auxPath(id, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return b, nil
}

// ValidAuxName keeps document names to a few safe characters, none of them a separator,
// and away from the metadata's name.
func ValidAuxName(name string) bool {
	if name == "" || len(name) > 100 || name == "json" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Put streams r into the store under the sha256 of its bytes and returns the blob's
// metadata. If r holds more than max bytes (max > 0) it returns ErrTooLarge and keeps
// nothing. Storing bytes that are already stored succeeds and keeps the first name.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, max int64) (Meta, error) {
	tmp, err := s.CreateTemp("upload-*")
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
	meta := Meta{ID: id, Name: CleanName(name), Size: size, Uploaded: s.now().UTC()}

	s.mu.Lock()
	defer s.mu.Unlock()
	final := s.blobPath(id)
	if err := s.mkdirSynced(filepath.Dir(final)); err != nil {
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
		if old.AddName(meta.Name) {
			if err := s.writeMeta(old); err != nil {
				return Meta{}, err
			}
		}
		old.As = meta.Name
		return old, nil
	}
	meta.Names = []string{meta.Name}
	if err := s.writeMeta(meta); err != nil {
		return Meta{}, err
	}
	meta.As = meta.Name
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
	return NewBlob(f, info.Size(), f.Close, nil), meta, nil
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
	return s.writeAtomic(s.metaPath(m.ID), b)
}

// writeAtomic writes a file beside a blob through a synced temporary file and a rename.
func (s *Store) writeAtomic(final string, b []byte) error {
	tmp, err := s.CreateTemp("meta-*")
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
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(final))
}

// mkdirSynced creates a blob's fan-out directory if needed and syncs its parent, so the
// directory entry of a new blobs/ab is as durable as the blob renamed into it.
func (s *Store) mkdirSynced(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
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

// CleanName keeps the base name of what the client called the file, without control
// characters, so it can be shown and used as a download name.
func CleanName(name string) string {
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

// ContextReader stops a long copy when the request that feeds it is cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

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

// Sniff names the container that a file's first bytes announce, for the store's metadata:
// zip, pickle, safetensors, gguf, npy, gzip, zlib, bz2, xz, lzma, lz4, tar, or "" when
// none. It is a label, not a verdict: the loader decides what a file is.
func Sniff(h []byte) string {
	has := func(p string) bool { return strings.HasPrefix(string(h[:min(len(h), len(p))]), p) && len(h) >= len(p) }
	switch {
	case has("PK\x03\x04"), has("PK\x05\x06"):
		return "zip"
	case has("GGUF"):
		return "gguf"
	case has("\x93NUMPY"):
		return "npy"
	case has("\x1f\x8b"):
		return "gzip"
	case has("BZh"):
		return "bz2"
	case has("\xfd7zXZ\x00"):
		return "xz"
	case has("\x04\x22\x4d\x18"):
		return "lz4"
	case has("\x5d\x00\x00"):
		return "lzma"
	case len(h) >= 2 && h[0] == 0x78 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0:
		return "zlib"
	case len(h) >= 2 && h[0] == 0x80 && h[1] <= 5:
		return "pickle"
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return "tar"
	case len(h) >= 9 && h[8] == '{':
		return "safetensors"
	}
	return ""
}
