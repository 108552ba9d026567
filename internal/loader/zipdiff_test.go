package loader

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// torchCase is one archive of a truth table (testdata/zipdiff, testdata/tardiff) and what
// torch.load (torch 1.13) made of it: the generator made every candidate pickle in it hold
// a different int or str, so the value torch returned names the member it read.
type torchCase struct {
	Why        string  `json:"why"`
	TorchLoad  any     `json:"torch_load"`
	Error      *string `json:"error"`
	ReadMember string  `json:"read_member"`
}

// rootValue is the value at the root of an opened tree, as torch would return it.
func rootValue(ck *ckpt.Checkpoint) any {
	switch n := ck.Root; n.Kind {
	case ckpt.KindInt:
		return n.Int
	case ckpt.KindStr:
		return n.Str
	}
	return fmt.Sprintf("<%s %s>", ck.Root.Kind, ck.Root.Type)
}

// checkTorchTruthTable opens every archive of dir and holds the loader to torch's verdict
// in its expected.json: where torch.load returned a value, the tree shows that value, or
// the loader refuses the file (failing closed); where torch raised and the loader shows the
// file as the format torch would read (one of formats), it must say that torch refuses it
// (a note starting with refusal, and a weights_only verdict that does not load).
func checkTorchTruthTable(t *testing.T, dir, refusal string, formats ...string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(cases))
	for name := range cases {
		if !strings.HasPrefix(name, "_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) < 40 {
		t.Fatalf("only %d archives", len(names))
	}
	same, refused := 0, 0
	for _, name := range names {
		var c torchCase
		if err := json.Unmarshal(cases[name], &c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		var le *Error
		if err != nil && !errors.As(err, &le) {
			t.Errorf("%s: %v, not an *Error", name, err)
			continue
		}
		want := ""
		if c.TorchLoad != nil {
			want = fmt.Sprint(c.TorchLoad)
		}
		switch {
		case err != nil && want != "":
			refused++
			t.Logf("%s: torch reads %s; ckptview refuses the file: %s", name, want, le.Text())
		case err != nil:
			refused++
		case want != "" && fmt.Sprint(rootValue(ck)) == want:
			same++
		case want != "":
			t.Errorf("%s (%s): the tree shows %v, torch.load returns %s (from %s)", name, c.Why, rootValue(ck), want, c.ReadMember)
		case slices.Contains(formats, ck.Format):
			said := false
			for _, n := range ck.Notes {
				said = said || strings.HasPrefix(n, refusal)
			}
			if !said || ck.WeightsOnly == nil || ck.WeightsOnly.Loads {
				t.Errorf("%s: torch refuses it (%s); ckptview shows %v without saying so (notes %q)", name, *c.Error, rootValue(ck), ck.Notes)
			}
		default:
			t.Logf("%s: torch refuses it (%s); ckptview reads it as %s (%v), as that reader would", name, *c.Error, ck.Format, rootValue(ck))
		}
	}
	t.Logf("%d archives: %d shown as torch reads them, %d refused", len(names), same, refused)
}

// TestZipMembersAsTorchReadsThem holds the loader to torch.load on testdata/zipdiff:
// archives made to probe how torch's zip reader picks the pickle (duplicate names, case,
// folders, records, prepended, appended and concatenated data, a forged end record, zip64).
// In no case does the loader show another member's value as the file's.
func TestZipMembersAsTorchReadsThem(t *testing.T) {
	checkTorchTruthTable(t, "testdata/zipdiff", "torch.load refuses this archive: ", "torch-zip", "torchscript")
}

// FuzzTorchZipLookup checks the miniz lookup on any set of names: the sort and the binary
// search agree, so a record is found exactly when some entry equals it without regard to
// ASCII case, and what is found does equal it. (Which of several equal names torch picks
// is held to torch itself by TestZipMembersAsTorchReadsThem.)
func FuzzTorchZipLookup(f *testing.F) {
	f.Add("archive/data.pkl\narchive/DATA.pkl\narchive/version\narchive/data/0", "data.pkl")
	f.Add("a/data.pkl\na/data.pkl\na/data.pkl\na/version", "DATA.PKL")
	f.Add("x/\x00\nx/\xff\nx/Z\nx/z\nx/[", "z")
	// numbered storage names, found by their number: one equal to another but for case,
	// one with a leading zero, one past the count of entries
	f.Add("data.pkl\ndata/0\ndata/1\ndata/2\ndata/10\nversion", "data/1")
	f.Add("data/0\ndata/00\ndata/1", "data/00")
	f.Add("data/0\ndata/00\nDATA/0\ndata/1", "Data/0")
	f.Add("data/0\ndata/1\ndata/3", "data/3")
	f.Fuzz(func(t *testing.T, list, query string) {
		names := strings.Split(list, "\n")
		if len(names) > 200 {
			return
		}
		tz := &torchZip{prefix: "", files: make([]*zip.File, len(names))}
		for i, n := range names {
			tz.files[i] = &zip.File{FileHeader: zip.FileHeader{Name: n}}
		}
		tz.sortLikeMiniz()
		lower := map[string]bool{}
		distinct := true
		for _, n := range names {
			distinct = distinct && !lower[foldASCII(n)]
			lower[foldASCII(n)] = true
		}
		if tz.distinct != distinct {
			t.Fatalf("names distinct without regard to case: %v, the lookup says %v", distinct, tz.distinct)
		}
		for i := 1; i < len(tz.sorted); i++ {
			if nameLess(tz.files[tz.sorted[i]].Name, tz.files[tz.sorted[i-1]].Name) {
				t.Fatalf("not sorted at %d: %q before %q", i, tz.files[tz.sorted[i-1]].Name, tz.files[tz.sorted[i]].Name)
			}
		}
		exists := false
		for _, n := range names {
			exists = exists || nameCompare(n, query) == 0
		}
		got := tz.lookup(query)
		if (got != nil) != exists || got != nil && nameCompare(got.Name, query) != 0 {
			t.Fatalf("lookup(%q) = %v, an equal name exists: %v", query, got, exists)
		}
	})
}

// foldASCII is s with its ASCII capitals in lower case and every other byte as it is.
func foldASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
