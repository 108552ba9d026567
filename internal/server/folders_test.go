package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/store"
)

func copyFixture(t *testing.T, name, dst string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixturesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func folderServer(t *testing.T, dirs ...string) (*Server, []*store.Folder) {
	t.Helper()
	var folders []*store.Folder
	for _, d := range dirs {
		f, err := store.NewFolder(d, "")
		if err != nil {
			t.Fatal(err)
		}
		folders = append(folders, f)
	}
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, Deps{Store: st, Folders: folders, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)
	return s, folders
}

// A folder served with -dir: its checkpoints are listed and open in place (a small file
// under its content hash, the id an upload of it gets), every tensor's statistics and
// downloads are numpy's, nothing is copied into the store, and what is not a checkpoint,
// hidden, or a link out of the folder is not listed.
func TestFolderServedInPlace(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	copyFixture(t, "state_dict.pt", filepath.Join(outside, "secret.pt"))
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("# notes\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, ".git"), 0o755)
	copyFixture(t, "state_dict.pt", filepath.Join(dir, ".git", "hidden.pt"))
	if err := os.Symlink(filepath.Join(outside, "secret.pt"), filepath.Join(dir, "link.pt")); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	st, _ := store.New(dataDir)
	f, _ := store.NewFolder(dir, "runs")
	s := New(Config{}, Deps{Store: st, Folders: []*store.Folder{f}, Static: testStatic, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)

	via := func(t *testing.T, name string) string {
		data := copyFixture(t, name, filepath.Join(dir, "ckpt", name))
		time.Sleep(300 * time.Millisecond) // a folder looks again for an id it does not know at most this often
		h := sha256.Sum256(data)
		return hex.EncodeToString(h[:])
	}
	checkStatsMatchNumpy(t, s, via)
	checkDownloadsMatchNumpy(t, s, via)

	home := do(s, http.MethodGet, "/", nil).Body.String()
	for _, want := range []string{`data-testid="folder"`, "ckpt/state_dict.pt", "ckpt/dtypes.pt", dir} {
		if !strings.Contains(home, want) {
			t.Errorf("the home page does not show %q", want)
		}
	}
	for _, hidden := range []string{"README.md", "hidden.pt", "link.pt"} {
		if strings.Contains(home, hidden) {
			t.Errorf("the home page lists %s", hidden)
		}
	}
	// nothing copied: the data directory holds only the statistics computed, beside where
	// blobs would be
	filepath.WalkDir(filepath.Join(dataDir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(filepath.Base(p), ".stats") {
			t.Errorf("serving a folder stored %s", p)
		}
		return nil
	})
}

// New files appear without a restart; a changed file's old link no longer opens the new
// bytes; a large file's id is the documented hash of its path, size and time, the same
// after a restart; a shard index and its shards are one checkpoint.
func TestFolderChanges(t *testing.T) {
	dir := t.TempDir()
	data := copyFixture(t, "state_dict.pt", filepath.Join(dir, "a.pt"))
	s, folders := folderServer(t, dir)
	if n := len(folders[0].Entries()); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
	h := sha256.Sum256(data)
	id := hex.EncodeToString(h[:])
	if rec := do(s, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
		t.Fatalf("GET /c/%s = %d", id, rec.Code)
	}

	// a new file opens at once (a lookup that misses scans again) and is listed soon
	more := copyFixture(t, "dtypes.pt", filepath.Join(dir, "b.pt"))
	h = sha256.Sum256(more)
	id2 := hex.EncodeToString(h[:])
	time.Sleep(300 * time.Millisecond)
	if rec := do(s, http.MethodGet, "/c/"+id2, nil); rec.Code != http.StatusOK {
		t.Errorf("GET a file added after the start = %d", rec.Code)
	}
	time.Sleep(2100 * time.Millisecond)
	if home := do(s, http.MethodGet, "/", nil).Body.String(); !strings.Contains(home, "b.pt") {
		t.Error("a new file is not listed without a restart")
	}

	// changed bytes: the old id is gone (the cache dropped, as after eviction)
	copyFixture(t, "quantized.pt", filepath.Join(dir, "a.pt"))
	s.cache.close()
	time.Sleep(300 * time.Millisecond)
	if rec := do(s, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusNotFound {
		t.Errorf("the old id of a changed file = %d, want 404", rec.Code)
	}

	// a large file: the id of its path, size and modification time
	big := filepath.Join(dir, "big.pt")
	copyFixture(t, "state_dict.pt", big)
	folders[0].HashLimit = 1000
	st, _ := os.Stat(big)
	want := sha256.Sum256([]byte(fmt.Sprintf("ckptview folder\n%s\n%d\n%d\n", big, st.Size(), st.ModTime().UnixNano())))
	bigID := hex.EncodeToString(want[:])
	if rec := do(s, http.MethodGet, "/c/"+bigID, nil); rec.Code != http.StatusOK {
		t.Errorf("GET the large file's documented id = %d", rec.Code)
	}
	s2, f2 := folderServer(t, dir)
	f2[0].HashLimit = 1000
	if rec := do(s2, http.MethodGet, "/c/"+bigID, nil); rec.Code != http.StatusOK {
		t.Errorf("after a restart the large file's id = %d", rec.Code)
	}

	// shards
	for _, n := range []string{"model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		copyFixture(t, filepath.Join("sharded", n), filepath.Join(dir, "hf", n))
	}
	time.Sleep(2100 * time.Millisecond)
	var set *store.FolderEntry
	for _, e := range f2[0].Entries() {
		if strings.HasPrefix(e.Name, "hf/") {
			if set != nil {
				t.Errorf("the shard set shows as more than one entry: %s and %s", set.Name, e.Name)
			}
			set = e
		}
	}
	if set == nil || set.Name != "hf/model.safetensors.index.json" || len(set.Files) != 3 {
		t.Fatalf("shard set entry = %+v", set)
	}
	rec := do(s2, http.MethodGet, "/api/checkpoints/"+set.ID, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "sharded") {
		t.Errorf("GET the shard set = %d %.300s", rec.Code, rec.Body)
	}
	tensors := shardedTensors(t, "model.safetensors.index.json")
	if len(tensors) == 0 {
		t.Fatal("no tensors in expected_sharded.json")
	}
	for name, sum := range tensors {
		rec := do(s2, http.MethodGet, downloadURL(set.ID, "/"+name, "raw"), nil)
		if rec.Code != http.StatusOK || sha256hex(rec.Body.Bytes()) != sum {
			t.Errorf("raw download of %s from the shard set = %d, sha256 %s, want torch's %s", name, rec.Code, sha256hex(rec.Body.Bytes()), sum)
		}
	}
}

// shardedTensors reads expected_sharded.json: each tensor of a set and the sha256 of its
// little-endian bytes as torch holds them.
func shardedTensors(t *testing.T, index string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected_sharded.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sets map[string]struct {
		Tensors map[string]struct {
			SHA256 string `json:"sha256_le"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &sets); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, wt := range sets[index].Tensors {
		out[name] = wt.SHA256
	}
	return out
}
