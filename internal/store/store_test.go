package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// files lists the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out
}

func TestPutOpen(t *testing.T) {
	s := newStore(t)
	data := []byte("hello, checkpoint")
	meta, err := s.Put(context.Background(), "dir/model.pt", bytes.NewReader(data), 100)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if meta.ID != sum(data) || meta.Name != "model.pt" || meta.Size != int64(len(data)) {
		t.Errorf("Put = %+v, want id %s name model.pt size %d", meta, sum(data), len(data))
	}
	blob, got, err := s.Open(meta.ID)
	if err != nil {
		t.Fatalf("Open(%s): %v", meta.ID, err)
	}
	defer blob.Close()
	if meta.As != "model.pt" {
		t.Errorf("Put's As = %q, want the name it was given", meta.As)
	}
	meta.As = "" // what this Put was called; Open knows no Put
	if diff := cmp.Diff(meta, got); diff != "" {
		t.Errorf("Open meta (-want +got):\n%s", diff)
	}
	if blob.Size() != int64(len(data)) {
		t.Errorf("Size = %d, want %d", blob.Size(), len(data))
	}
	buf := make([]byte, 5)
	if _, err := blob.ReadAt(buf, 7); err != nil || string(buf) != "check" {
		t.Errorf("ReadAt(7) = %q, %v, want %q", buf, err, "check")
	}
	want := []string{"blobs/" + meta.ID[:2] + "/" + meta.ID, "blobs/" + meta.ID[:2] + "/" + meta.ID + ".json"}
	if diff := cmp.Diff(want, files(t, s.Dir())); diff != "" {
		t.Errorf("files in data dir (-want +got):\n%s", diff)
	}
}

func TestPutLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		max     int64
		wantErr error
	}{
		{"empty", 0, 10, nil},
		{"exactly max", 10, 10, nil},
		{"one over", 11, 10, ErrTooLarge},
		{"far over", 1 << 20, 10, ErrTooLarge},
		{"no limit", 1 << 20, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			_, err := s.Put(context.Background(), "f", bytes.NewReader(make([]byte, tc.size)), tc.max)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Put(%d bytes, max %d) = %v, want %v", tc.size, tc.max, err, tc.wantErr)
			}
			if err != nil {
				if got := files(t, s.Dir()); len(got) != 0 {
					t.Errorf("after a rejected Put the data dir holds %v, want nothing", got)
				}
			}
		})
	}
}

func TestPutCancelled(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, "f", strings.NewReader("x"), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v, want context.Canceled", err)
	}
	if got := files(t, s.Dir()); len(got) != 0 {
		t.Errorf("after a cancelled Put the data dir holds %v, want nothing", got)
	}
}

func TestPutSameBytes(t *testing.T) {
	s := newStore(t)
	data := bytes.Repeat([]byte("tensor"), 10000)
	const n = 8
	metas := make([]Meta, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := "first.pt"
			if i > 0 {
				name = "other.pt"
			}
			metas[i], errs[i] = s.Put(context.Background(), name, bytes.NewReader(data), 0)
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Put #%d: %v", i, errs[i])
		}
		same := func(a, b Meta) bool {
			return a.ID == b.ID && a.Name == b.Name && a.Size == b.Size && a.Uploaded.Equal(b.Uploaded)
		}
		if !same(metas[i], metas[0]) {
			t.Errorf("Put #%d = %+v, want the same metadata as #0 %+v", i, metas[i], metas[0])
		}
	}
	if got := files(t, s.Dir()); len(got) != 2 {
		t.Errorf("data dir holds %v, want one blob and its metadata", got)
	}
	// A later upload under another name keeps the first name.
	m, err := s.Put(context.Background(), "later.pt", bytes.NewReader(data), 0)
	if err != nil || m.Name != metas[0].Name {
		t.Errorf("Put again = %+v, %v, want name %q", m, err, metas[0].Name)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := s1.Put(context.Background(), "a.pkl", strings.NewReader("abc"), 0)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	blob, got, err := s2.Open(meta.ID)
	if err != nil {
		t.Fatalf("Open after reopening the store: %v", err)
	}
	blob.Close()
	meta.As = ""
	if diff := cmp.Diff(meta, got); diff != "" {
		t.Errorf("meta after reopen (-want +got):\n%s", diff)
	}

	// Lost metadata: the blob is still served, named by its id.
	os.Remove(s2.metaPath(meta.ID))
	blob, got, err = s2.Open(meta.ID)
	if err != nil {
		t.Fatalf("Open without metadata: %v", err)
	}
	blob.Close()
	if got.Size != 3 || got.Name != meta.ID[:12] {
		t.Errorf("Open without metadata = %+v, want size 3, name %s", got, meta.ID[:12])
	}
}

func TestOpenErrors(t *testing.T) {
	s := newStore(t)
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"", ErrInvalidID},
		{"../../etc/passwd", ErrInvalidID},
		{strings.Repeat("A", 64), ErrInvalidID},
		{strings.Repeat("a", 63), ErrInvalidID},
		{strings.Repeat("a", 65), ErrInvalidID},
		{strings.Repeat("g", 64), ErrInvalidID},
		{strings.Repeat("a", 64), ErrNotFound},
	} {
		if _, _, err := s.Open(tc.id); !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) = %v, want %v", tc.id, err, tc.want)
		}
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"model.pt", "model.pt"},
		{"/abs/path/model.pt", "model.pt"},
		{`C:\Users\me\model.pt`, "model.pt"},
		{"a\nb\x00c.pkl", "abc.pkl"},
		{"", "upload"},
		{"..", "upload"},
		{"dir/", "upload"},
		{strings.Repeat("é", 200), strings.Repeat("é", 127)},
	} {
		if got := CleanName(tc.in); got != tc.want {
			t.Errorf("CleanName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestImportExamples(t *testing.T) {
	type row struct{ File, Name, ID, Description string }
	rows := func(ex []Example) []row {
		var out []row
		for _, e := range ex {
			out = append(out, row{e.File, e.Name, e.ID, e.Description})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		index   string // examples.json, none if empty
		want    []row
		wantErr bool
	}{
		{
			name:  "index names the examples in its order",
			index: `{"sub/c.ckpt": "a training checkpoint", "b.pt": "a state dict", "missing.pt": "gone"}`,
			want: []row{
				{"sub/c.ckpt", "c.ckpt", sum([]byte("ccc")), "a training checkpoint"},
				{"b.pt", "b.pt", sum([]byte("bbb")), "a state dict"},
			},
		},
		{
			name: "no index: every file by path",
			want: []row{
				{"a.pkl", "a.pkl", sum([]byte("aaa")), ""},
				{"b.pt", "b.pt", sum([]byte("bbb")), ""},
				{"sub/c.ckpt", "c.ckpt", sum([]byte("ccc")), ""},
			},
		},
		{name: "index is not an object", index: `["a.pkl"]`, wantErr: true},
		{name: "index names a file outside", index: `{"../secret": "no"}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, content string) {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("b.pt", "bbb")
			write("a.pkl", "aaa")
			write("sub/c.ckpt", "ccc")
			write(".hidden", "hhh")
			if tc.index != "" {
				write("examples.json", tc.index)
			}
			s := newStore(t)
			got, err := ImportExamples(context.Background(), s, dir)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ImportExamples = %v, want an error", rows(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("ImportExamples: %v", err)
			}
			if diff := cmp.Diff(tc.want, rows(got)); diff != "" {
				t.Errorf("ImportExamples (-want +got):\n%s", diff)
			}
			for _, e := range got {
				b, _, err := s.Open(e.ID)
				if err != nil {
					t.Errorf("Open(example %s): %v", e.File, err)
					continue
				}
				b.Close()
			}
		})
	}
	s := newStore(t)
	if ex, err := ImportExamples(context.Background(), s, filepath.Join(t.TempDir(), "nope")); err != nil || ex != nil {
		t.Errorf("ImportExamples(missing dir) = %v, %v, want nothing", ex, err)
	}
}

var _ io.ReaderAt = (*Blob)(nil)

// What a Store leaves in tmp/ when its process dies (its lock goes with it) is removed by
// the next New; the temporary directory of a Store still open is left alone; Close removes
// its own.
func TestTempCleanup(t *testing.T) {
	dir := t.TempDir()
	dead, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := dead.CreateTemp("upload-*")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("half an upload")
	f.Close()
	dead.tmpLock.Close() // the process is killed: the kernel drops its lock, nothing is removed

	alive, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alive.Close() })
	g, err := alive.CreateTemp("upload-*")
	if err != nil {
		t.Fatal(err)
	}
	g.WriteString("an upload in progress")
	g.Close()

	// A loose file of an older version, and an old unfinished directory.
	old := filepath.Join(dir, "tmp", "upload-123")
	os.WriteFile(old, []byte("x"), 0o644)
	unfinished := filepath.Join(dir, "tmp", newPrefix+"456")
	os.Mkdir(unfinished, 0o755)
	long := time.Now().Add(-2 * staleTemp)
	os.Chtimes(old, long, long)
	os.Chtimes(unfinished, long, long)

	next, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.Name(), dead.tmp, old, unfinished} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("after New, %s (left by a dead process) still exists", p)
		}
	}
	if _, err := os.Stat(g.Name()); err != nil {
		t.Errorf("New removed %s, a temporary file of a Store still open: %v", g.Name(), err)
	}
	if err := next.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(next.tmp); err == nil {
		t.Errorf("Close left its temporary directory %s", next.tmp)
	}
}

// Put into a closed Store fails instead of writing outside its temporary directory.
func TestPutAfterClose(t *testing.T) {
	s := newStore(t)
	s.Close()
	if _, err := s.Put(context.Background(), "f", strings.NewReader("x"), 0); err == nil {
		t.Fatal("Put after Close succeeded, want an error")
	}
	if got := files(t, s.Dir()); len(got) != 0 {
		t.Errorf("after a Put on a closed store the data dir holds %v, want nothing", got)
	}
}
