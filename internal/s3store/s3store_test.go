package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ckptview/ckptview/internal/s3store/s3test"
	"github.com/ckptview/ckptview/internal/store"
)

func newStore(t *testing.T, srv *s3test.Server, c Config) *Store {
	t.Helper()
	srv.Env(t)
	if c.URL == "" {
		c.URL = "s3://ckv/pre"
	}
	c.Scratch = t.TempDir()
	st, err := New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// objects lists the keys under the bucket's directory on the S3 server's disk, which is
// what any client of the bucket would see.
func objects(t *testing.T, srv *s3test.Server, bucket string) []string {
	t.Helper()
	var keys []string
	root := filepath.Join(srv.Root, bucket)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && strings.HasPrefix(d.Name(), ".sgw") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	return keys
}

// Uploads of one part and of many land under their sha256 with their first name, read
// back byte for byte at any offset, and a second upload of the same bytes is free.
func TestPutOpenRead(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{PartSize: 5 << 20})
	ctx := context.Background()
	for _, n := range []int{0, 1, 4 << 10, 5<<20 - 1, 5 << 20, 12<<20 + 7} {
		data := randomBytes(n, uint64(n))
		meta, err := st.Put(ctx, "dir/model.pt", bytes.NewReader(data), 0)
		if err != nil {
			t.Fatalf("Put %d bytes: %v", n, err)
		}
		if meta.ID != sum(data) || meta.Size != int64(n) || meta.Name != "model.pt" {
			t.Fatalf("Put %d bytes = %+v, want id %s, that size, name model.pt", n, meta, sum(data))
		}
		again, err := st.Put(ctx, "other.bin", bytes.NewReader(data), 0)
		if err != nil || again.Name != "model.pt" || again.As != "other.bin" || !again.HasName("other.bin") {
			t.Fatalf("second Put of the same bytes = %+v, %v, want the first name, and the second recorded", again, err)
		}
		b, m, err := st.Open(meta.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.Size != int64(n) || m.Name != "model.pt" || m.Uploaded.IsZero() || !m.HasName("other.bin") {
			t.Errorf("Open meta = %+v", m)
		}
		got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes: %v, equal %v", n, err, bytes.Equal(got, data))
		}
		r := rand.New(rand.NewPCG(1, uint64(n)))
		for i := 0; i < 50 && n > 0; i++ {
			off := r.IntN(n)
			l := min(r.IntN(3<<20), n-off)
			p := make([]byte, l)
			if _, err := b.ReadAt(p, int64(off)); err != nil && !(err == io.EOF && off+l == n) {
				t.Fatalf("ReadAt(%d, %d): %v", l, off, err)
			}
			if !bytes.Equal(p, data[off:off+l]) {
				t.Fatalf("ReadAt(%d, %d) differs", l, off)
			}
		}
		if _, err := b.ReadAt(make([]byte, 1), int64(n)); err != io.EOF {
			t.Errorf("ReadAt at the end = %v, want EOF", err)
		}
		b.Close()
	}
	for _, k := range objects(t, srv, "ckv") {
		if !strings.HasPrefix(k, "pre/blobs/") && !strings.HasSuffix(k, "/names") {
			t.Errorf("object %s left in the bucket; only blobs and their upload names should be", k)
		}
	}
}

// A multipart upload's object is copied under its hash, with a multipart copy when it is
// larger than one CopyObject may be.
func TestMultipartCopy(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{PartSize: 5 << 20, MaxSingleCopy: 6 << 20, CopyPartSize: 5 << 20})
	data := randomBytes(13<<20+3, 7)
	meta, err := st.Put(context.Background(), "big.safetensors", bytes.NewReader(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, m, err := st.Open(meta.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, _ := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if !bytes.Equal(got, data) || m.Name != "big.safetensors" {
		t.Fatalf("multipart-copied blob: equal %v, meta %+v", bytes.Equal(got, data), m)
	}
}

// Over the limit, an upload keeps nothing: no blob, no temporary object, no unfinished
// multipart upload. A cancelled one likewise.
func TestPutTooLargeKeepsNothing(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{PartSize: 5 << 20})
	for _, n := range []int{100, 11 << 20} {
		_, err := st.Put(context.Background(), "x", bytes.NewReader(randomBytes(n, 3)), int64(n-1))
		if !errors.Is(err, store.ErrTooLarge) {
			t.Fatalf("Put of %d bytes over a limit of %d = %v, want ErrTooLarge", n, n-1, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		pw.Write(randomBytes(7<<20, 4))
		cancel()
		pw.Write([]byte("more"))
		pw.Close()
	}()
	if _, err := st.Put(ctx, "x", pr, 0); err == nil {
		t.Fatal("a cancelled upload succeeded")
	}
	if keys := objects(t, srv, "ckv"); len(keys) != 0 {
		t.Errorf("objects left: %v", keys)
	}
	ups, err := st.client.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String("ckv")})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("unfinished multipart uploads: %v, %v", ups, err)
	}
}

// What a killed replica leaves (a tmp/ object, an unfinished multipart upload) is removed
// by the next start once it is a day old, and never shows as a blob.
func TestStaleUploadsRemoved(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{})
	ctx := context.Background()
	if err := st.putObject(ctx, "pre/tmp/leftover", []byte("half"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("ckv"), Key: aws.String("pre/tmp/unfinished")}); err != nil {
		t.Fatal(err)
	}
	st.removeStale(ctx) // now: both are fresh, and stay
	if keys := objects(t, srv, "ckv"); len(keys) != 1 {
		t.Fatalf("objects after a fresh clean = %v, want the leftover kept", keys)
	}
	st.now = func() time.Time { return time.Now().Add(staleAge + time.Hour) }
	st.removeStale(ctx)
	if keys := objects(t, srv, "ckv"); len(keys) != 0 {
		t.Errorf("objects after a day = %v, want none", keys)
	}
	ups, _ := st.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("ckv")})
	if ups == nil || len(ups.Uploads) != 0 {
		t.Errorf("unfinished uploads after a day: %v", ups)
	}
}

// Wrong credentials fail at start, with the server's reason: signatures are checked.
func TestWrongCredentials(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	srv.Env(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	_, err := New(context.Background(), Config{URL: "s3://ckv", Scratch: t.TempDir(), Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("New with a wrong secret succeeded")
	}
	if _, err := New(context.Background(), Config{URL: "s3://nobucket", Scratch: t.TempDir()}); err == nil {
		t.Fatal("New on a missing bucket succeeded")
	}
}

// Documents beside a blob: written, replaced, read back; a missing one is ErrNotFound.
func TestAux(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{})
	ctx := context.Background()
	meta, err := st.Put(ctx, "a", strings.NewReader("abc"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAux(ctx, meta.ID, "stats"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetAux before PutAux = %v, want ErrNotFound", err)
	}
	for _, v := range []string{"one", "two"} {
		if err := st.PutAux(ctx, meta.ID, "stats", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if b, err := st.GetAux(ctx, meta.ID, "stats"); err != nil || string(b) != v {
			t.Errorf("GetAux = %q, %v, want %q", b, err, v)
		}
	}
	if err := st.PutAux(ctx, meta.ID, "../x", nil); err == nil {
		t.Error("PutAux accepted a name with a separator")
	}
}

// Small reads all over an object (a torch archive's local headers) fetch about what they
// ask; a sequential scan fetches the object once, in few GETs.
func TestFetchPolicy(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	st := newStore(t, srv, Config{})
	data := randomBytes(64<<20, 9)
	meta, err := st.Put(context.Background(), "a", bytes.NewReader(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.Open(meta.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	before, _ := st.Fetched()
	for i := 0; i < 400; i++ {
		p := make([]byte, 30)
		off := int64(i) * (64 << 20) / 400
		if _, err := b.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+30]) {
			t.Fatalf("small read at %d: %v", off, err)
		}
	}
	small, _ := st.Fetched()
	if got := small - before; got > 400*minFetch {
		t.Errorf("400 reads of 30 bytes fetched %d bytes, want at most %d", got, 400*minFetch)
	}
	// A fresh blob: the cache now holds parts of the first.
	meta2, _ := st.Put(context.Background(), "b", bytes.NewReader(data[1:]), 0)
	b2, _, _ := st.Open(meta2.ID)
	defer b2.Close()
	before, gets0 := st.Fetched()
	buf := make([]byte, 256<<10)
	var got []byte
	for off := int64(0); off < b2.Size(); off += int64(len(buf)) {
		n, err := b2.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	after, gets1 := st.Fetched()
	if !bytes.Equal(got, data[1:]) {
		t.Fatal("sequential read differs")
	}
	if after-before > int64(len(data))+chunk*ahead {
		t.Errorf("a sequential scan of %d bytes fetched %d", len(data)-1, after-before)
	}
	if gets1-gets0 > 20 {
		t.Errorf("a sequential scan of 64 MiB took %d GETs, want few (read-ahead in %d MiB chunks)", gets1-gets0, chunk>>20)
	}
}
