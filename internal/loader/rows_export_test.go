package loader_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/export"
	"github.com/ckptview/ckptview/internal/loader"
)

// TestRowsExportAsNodes holds the JSON and safetensors exports of every torch fixture whose
// state dicts keep their entries as rows (lazytensors.go) to those of the same file read
// with every entry a node: the exports walk rows and their attributes (a _metadata kept
// as values, written after the entries) as they walk nodes.
func TestRowsExportAsNodes(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/models/*")
	rows, exported := 0, 0
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil || bytes.HasSuffix([]byte(name), []byte(".json")) {
			continue
		}
		a, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{})
		if err != nil || a.Root == nil || !loader.KeptRows(a.Root) {
			continue
		}
		rows++
		b, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.RowsNever())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if loader.KeptRows(b.Root) {
			t.Fatalf("%s: rows kept with RowsNever", name)
		}
		ja, jb := jsonOf(t, a.Root), jsonOf(t, b.Root)
		if ja != jb {
			t.Errorf("%s: the JSON export of rows differs from that of nodes:\n%.300s\n%.300s", name, ja, jb)
		}
		sa, sb := safetensorsOf(t, a), safetensorsOf(t, b)
		if !bytes.HasPrefix(sa, []byte("error: ")) {
			exported++
		}
		if !bytes.Equal(sa, sb) {
			t.Errorf("%s: the safetensors export of rows differs from that of nodes (%d and %d bytes)", name, len(sa), len(sb))
		}
	}
	if rows < 5 || exported < 5 {
		t.Errorf("only %d fixtures keep rows, %d of them exported as safetensors", rows, exported)
	}
}

func jsonOf(t *testing.T, n *ckpt.Node) string {
	var buf bytes.Buffer
	if err := (export.JSON{}).Write(context.Background(), &buf, n); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func safetensorsOf(t *testing.T, ck *ckpt.Checkpoint) []byte {
	s, err := export.NewSafetensors(ck.Root, nil)
	if err != nil {
		return []byte("error: " + err.Error())
	}
	out, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
