package views

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
)

// keysFixture is the pickle internal/loader/testdata/keys/gen_keys.py wrote with Python:
// {7: 1, "7": 2, "7 (2)": 3, ".": 4, "..": 5, "": 6, "a/b": 7, "~x": 8}.
const keysFixture = "../loader/testdata/keys/keys.pkl"

func openKeys(t *testing.T, path string) *ckpt.Checkpoint {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return openPickleBytes(t, data)
}

func openPickleBytes(t *testing.T, data []byte) *ckpt.Checkpoint {
	t.Helper()
	ck, err := loader.Open(bytes.NewReader(data), int64(len(data)), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// readNodeURL is the pointer a node URL path names, as the server reads it: the path
// after /n/, each segment path-unescaped, then PointerSegment.
func readNodeURL(t *testing.T, path string) string {
	t.Helper()
	_, rest, ok := strings.Cut(path, "/n/")
	if !ok {
		t.Fatalf("%q is no node URL", path)
	}
	if rest == "" {
		return ""
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			t.Fatalf("%q: %v", path, err)
		}
		segs[i] = PointerSegment(u)
	}
	return "/" + strings.Join(segs, "/")
}

// TestNodeURLSurvivesABrowser makes the node URL of pointers made of awkward keys (".",
// "..", "", "~", "~.", "%2E", "a/b"...) and resolves it as a browser does a link's href
// (url.ResolveReference, which removes dot segments, from the page it is on): the URL
// keeps its path, and reading it back gives the pointer. Every pointer segment is written
// as before but ".", ".." and "".
func TestNodeURLSurvivesABrowser(t *testing.T) {
	keys := []string{".", "..", "", "~", "~.", "~..", "~0", "~1", "%2E", "%2e%2E", ".%2E", "a/b", "a b", "7 (2)", "é", "?#", "\\", "..."}
	var pointers []string
	for _, a := range keys {
		pointers = append(pointers, "/"+ckpt.EscapeSegment(a))
		for _, b := range keys {
			pointers = append(pointers, "/"+ckpt.EscapeSegment(a)+"/"+ckpt.EscapeSegment(b))
		}
	}
	pointers = append(pointers, "", "/model/blocks.0.weight", "///")
	base, _ := url.Parse("http://127.0.0.1:8094/c/abc/n/x/y")
	for _, p := range pointers {
		link := NodeURL("abc", p)
		ref, err := url.Parse(link)
		if err != nil {
			t.Fatalf("%q: NodeURL %q does not parse: %v", p, link, err)
		}
		got := base.ResolveReference(ref)
		if got.EscapedPath() != link {
			t.Errorf("%q: the browser goes to %q, not %q", p, got.EscapedPath(), link)
		}
		// what the WHATWG URL standard takes for a dot segment, or an empty one
		for i, seg := range strings.Split(strings.TrimPrefix(link, "/c/abc/n/"), "/") {
			switch strings.ToLower(seg) {
			case ".", "..", "%2e", ".%2e", "%2e.", "%2e%2e":
				t.Errorf("%q: NodeURL %q has the dot segment %q", p, link, seg)
			case "":
				if p != "" || i > 0 {
					t.Errorf("%q: NodeURL %q has an empty segment", p, link)
				}
			}
		}
		if back := readNodeURL(t, got.EscapedPath()); back != p {
			t.Errorf("%q: NodeURL %q reads back as %q", p, link, back)
		}
		for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			if p != "" && seg != "" && seg != "." && seg != ".." && !strings.Contains(link, "/"+url.PathEscape(seg)) {
				t.Errorf("%q: segment %q is not written as before in %q", p, seg, link)
			}
		}
	}
	// a link made before the tilde forms still reads as it did
	for link, want := range map[string]string{"/c/abc/n/": "", "/c/abc/n/a//b": "/a//b", "/c/abc/n/a~1b": "/a~1b", "/c/abc/n/~0x": "/~0x"} {
		if got := readNodeURL(t, link); got != want {
			t.Errorf("%q reads as %q, want %q", link, got, want)
		}
	}
}

// TestKeyLabels checks the keys rows show: in a dict with a key that is not a str, each
// key is Python's repr (7 and '7'); a dict of str keys shows them bare, but for the empty
// key, a pair of quotes. Each row's link reads back as the row's pointer, and leads to it.
func TestKeyLabels(t *testing.T) {
	for _, tc := range []struct {
		name string
		ck   *ckpt.Checkpoint
		want []string
	}{
		{"mixed", openKeys(t, keysFixture), []string{"7", "'7'", "'7 (2)'", "'.'", "'..'", "''", "'a/b'", "'~x'"}},
		{"str keys", openKeys(t, "../loader/testdata/keys/suffix.pkl"), []string{"a", "a (2)"}},
		{"str then int", openKeys(t, "../loader/testdata/keys/str_int.pkl"), []string{"'7'", "7"}},
		// pickle.dumps({"": 1, "b": 2}, protocol=2) without the memo opcodes
		{"empty str key", openPickleBytes(t, []byte("\x80\x02}(X\x00\x00\x00\x00K\x01X\x01\x00\x00\x00bK\x02u.")), []string{"''", "b"}},
		// pickle.dumps([[1], {"": 1}], protocol=2): a list's index, an empty key below
		{"list", openPickleBytes(t, []byte("\x80\x02]q\x00(]q\x01K\x01a}q\x02X\x00\x00\x00\x00q\x03K\x01se.")), []string{"0", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meta := FileMeta{ID: "abc", Name: "k.pkl"}
			c := NewChildren(meta, tc.ck, tc.ck.Root, 0, 0)
			var got []string
			for i, r := range c.Rows {
				got = append(got, r.Key)
				kid := tc.ck.Root.Items(i, i+1)[0]
				if one := NewRow("abc", tc.ck, kid); one.Key != r.Key {
					t.Errorf("row %d: NewRow says %q, NewChildren %q", i, one.Key, r.Key)
				}
				if l := KeyLabel(kid); l != r.Key {
					t.Errorf("row %d: KeyLabel says %q, the row %q", i, l, r.Key)
				}
				if p := readNodeURL(t, r.URL); p != r.Path {
					t.Errorf("row %s: link %q reads as %q, not %q", r.Key, r.URL, p, r.Path)
				} else if n, err := tc.ck.Node(p); err != nil || n != kid {
					t.Errorf("row %s: %q leads to %v (%v)", r.Key, p, n, err)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("keys %q, want %q", got, tc.want)
			}
		})
	}
	ck := openPickleBytes(t, []byte("\x80\x02]q\x00(]q\x01K\x01a}q\x02X\x00\x00\x00\x00q\x03K\x01se."))
	if n, err := ck.Node("/1/"); err != nil || KeyLabel(n) != "''" {
		t.Errorf("the empty key under a list's item: %v %v", n, err)
	}
}

// TestKeyWidthCountsQuotes: the key column fits the keys as a page shows them, quotes
// included.
func TestKeyWidthCountsQuotes(t *testing.T) {
	// pickle.dumps({1: 0, "abcd": 0}, protocol=2) without the memo opcodes: 'abcd' is 6
	ck := openPickleBytes(t, []byte("\x80\x02}(K\x01K\x00X\x04\x00\x00\x00abcdK\x00u."))
	if w := NewChildren(FileMeta{ID: "abc"}, ck, ck.Root, 0, 0).KeyWidth; w != 8 {
		t.Errorf("key width %d, want 8 (for 'abcd')", w)
	}
}

// An optimizer saved whole (torch.save of torch.optim.Adam, generate_objkeys.py): its state
// reads as torch names its type, defaultdict with its default factory, with one entry per
// parameter, each shown by its key, a link to the parameter it is.
func TestOptimizerStateKeyedByParameters(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected_objkeys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var facts map[string]json.RawMessage
	var want struct {
		StateType string `json:"state_type"`
		StateLen  int    `json:"state_len"`
		KeyIndex  []int  `json:"key_index"`
	}
	if err := json.Unmarshal(b, &facts); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(facts["optim_zip.pt"], &want); err != nil {
		t.Fatal(err)
	}
	ck := openKeys(t, filepath.Join(modelsDir, "optim_zip.pt"))
	state, err := ck.Node("/optimizer/state")
	if err != nil {
		t.Fatal(err)
	}
	if got, w := Summary(state), want.StateType+" ("+strconv.Itoa(want.StateLen)+" items)"; got != w {
		t.Errorf("the state reads %q, want %q", got, w)
	}
	p := NewNodePage(FileMeta{ID: "x"}, ck, state, 0, 100)
	if p.Children == nil || len(p.Children.Rows) != want.StateLen {
		t.Fatalf("the state's page lists %+v, torch's state has %d entries", p.Children, want.StateLen)
	}
	for i, r := range p.Children.Rows {
		entry, err := ck.Node(r.Path)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		param := "/optimizer/param_groups/0/params/" + strconv.Itoa(want.KeyIndex[i])
		page := NewNodePage(FileMeta{ID: "x"}, ck, entry, 0, 100)
		if page.DictKey != "ref → "+param || page.DictKeyURL != NodeURL("x", param) {
			t.Errorf("%s is keyed %q (a link to %q), want a ref to %s", r.Path, page.DictKey, page.DictKeyURL, param)
		}
	}
}
