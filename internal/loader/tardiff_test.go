package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestTarMembersAsTorchReadsThem opens each archive of testdata/tardiff, torch's oldest
// format (a tar of storages, tensors and pickle) made to probe how CPython's tarfile
// resolves names for torch's legacy_load (repeated names, ./ prefixes, links, GNU and PAX
// long names, bad checksums, zero blocks, concatenated archives, a polyglot that tarfile
// refuses and torch reads as its older stream), and holds the loader to what torch.load
// returned: the tree shows torch's value, or the loader refuses the file (failing closed).
// Where torch raised, the loader shows no value that torch would have read.
func TestTarMembersAsTorchReadsThem(t *testing.T) {
	const dir = "testdata/tardiff"
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	var names []string
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
		var c struct {
			Why        string  `json:"why"`
			TorchLoad  any     `json:"torch_load"`
			Error      *string `json:"error"`
			ReadMember string  `json:"read_member"`
		}
		if err := json.Unmarshal(cases[name], &c); err != nil {
			t.Fatal(err)
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
		default:
			said := false
			for _, n := range ck.Notes {
				said = said || strings.HasPrefix(n, "torch.load refuses this tar archive: ")
			}
			if !said || ck.WeightsOnly == nil || ck.WeightsOnly.Loads {
				t.Errorf("%s: torch raises (%s); ckptview shows %s %v without saying so (notes %q)", name, *c.Error, ck.Format, rootValue(ck), ck.Notes)
			}
		}
	}
	t.Logf("%d archives: %d shown as torch reads them, %d refused", len(names), same, refused)
}
