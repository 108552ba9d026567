package server

import (
	"html"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/views"
)

// keysFixture is pickle.dumps({7: 1, "7": 2, "7 (2)": 3, ".": 4, "..": 5, "": 6, "a/b": 7,
// "~x": 8}) by Python's pickle (internal/loader/testdata/keys/gen_keys.py).
const keysFixture = "../loader/testdata/keys/keys.pkl"

// keysWant is the value of each key of keysFixture, by the label its row shows: Python's
// repr of the key, as the dict has a key that is not a str.
var keysWant = map[string]string{
	"7": "1", "'7'": "2", "'7 (2)'": "3", "'.'": "4", "'..'": "5", "''": "6", "'a/b'": "7", "'~x'": "8",
}

var (
	rowKeyRe      = regexp.MustCompile(`<a class="key" href="([^"]*)"[^>]*data-testid="row-key">([^<]*)</a>`)
	scalarValueRe = regexp.MustCompile(`data-testid="scalar-value">([^<]*)<`)
	nodeKeyRe     = regexp.MustCompile(`data-testid="node-key">([^<]*)<`)
	jsonLinkRe    = regexp.MustCompile(`<a class="btn btn-quiet" href="([^"]*)" data-testid="json-link">`)
)

// TestEveryKeyHasALink uploads keysFixture and follows, as a browser would, every row link
// of the checkpoint page and of the root's node page: the href resolved against the page
// (url.ResolveReference, which removes dot segments), then requested. There is a row for
// each of the 8 entries, their labels tell the int 7 from the str '7', and each link opens
// the page of its own value, whose JSON link (a ?path= JSON Pointer) gives the same value.
func TestEveryKeyHasALink(t *testing.T) {
	data, err := os.ReadFile(keysFixture)
	if err != nil {
		t.Fatal(err)
	}
	s := realServer(t, Config{})
	rec := upload(t, s, "keys.pkl", data)
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", rec.Code, rec.Body)
	}
	id := decode[struct {
		ID string `json:"id"`
	}](t, rec).ID
	for _, page := range []string{views.CheckpointURL(id), views.NodeURL(id, "")} {
		t.Run(page, func(t *testing.T) {
			rec := do(s, http.MethodGet, page, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s: %d", page, rec.Code)
			}
			base, err := url.Parse("http://127.0.0.1:8094" + page)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, m := range rowKeyRe.FindAllStringSubmatch(rec.Body.String(), -1) {
				href, label := html.UnescapeString(m[1]), html.UnescapeString(m[2])
				want, ok := keysWant[label]
				if !ok {
					continue // the root's own row on the checkpoint page
				}
				if seen[label] {
					t.Errorf("two rows read %s", label)
				}
				seen[label] = true
				ref, err := url.Parse(href)
				if err != nil {
					t.Errorf("%s: href %q: %v", label, href, err)
					continue
				}
				u := base.ResolveReference(ref)
				if u.EscapedPath() != href {
					t.Errorf("%s: href %q resolves to %q", label, href, u.EscapedPath())
				}
				rec := do(s, http.MethodGet, u.RequestURI(), nil)
				if rec.Code != http.StatusOK {
					t.Errorf("%s: GET %s: %d", label, u.RequestURI(), rec.Code)
					continue
				}
				body := rec.Body.String()
				if v := scalarValueRe.FindStringSubmatch(body); v == nil || v[1] != want {
					t.Errorf("%s: %s shows the value %v, want %s", label, u.RequestURI(), v, want)
				}
				if k := nodeKeyRe.FindStringSubmatch(body); k == nil || html.UnescapeString(k[1]) != label {
					t.Errorf("%s: %s is headed %v", label, u.RequestURI(), k)
				}
				j := jsonLinkRe.FindStringSubmatch(body)
				if j == nil {
					t.Errorf("%s: no JSON link", label)
					continue
				}
				api := html.UnescapeString(j[1])
				if !strings.Contains(api, "?path=%2F") {
					t.Errorf("%s: the JSON link %q carries no JSON Pointer", label, api)
				}
				if rec := do(s, http.MethodGet, api, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"summary":"`+want+`"`) {
					t.Errorf("%s: GET %s: %d %s", label, api, rec.Code, rec.Body)
				}
			}
			if len(seen) != len(keysWant) {
				t.Errorf("rows for %d of the %d keys: %v", len(seen), len(keysWant), seen)
			}
		})
	}
}

// TestNodeURLOfDotKeys: the links of the keys "." and "..", resolved from any page, keep
// their path (a browser removes "." and ".." segments, also as %2E), and the server reads
// them back as those keys; a link made before the tilde forms still works.
func TestNodeURLOfDotKeys(t *testing.T) {
	data, err := os.ReadFile(keysFixture)
	if err != nil {
		t.Fatal(err)
	}
	s := realServer(t, Config{})
	id := decode[struct {
		ID string `json:"id"`
	}](t, upload(t, s, "keys.pkl", data)).ID
	for _, tc := range []struct{ pointer, want string }{{"/.", "4"}, {"/..", "5"}, {"/", "6"}} {
		link := views.NodeURL(id, tc.pointer)
		ref, _ := url.Parse(link)
		for _, from := range []string{"/", views.CheckpointURL(id), views.NodeURL(id, ""), views.NodeURL(id, "/7") + "?offset=3"} {
			base, _ := url.Parse("http://127.0.0.1:8094" + from)
			if got := base.ResolveReference(ref).EscapedPath(); got != link {
				t.Errorf("%q from %s resolves to %q, not %q", link, from, got, link)
			}
		}
		rec := do(s, http.MethodGet, link, nil)
		if v := scalarValueRe.FindStringSubmatch(rec.Body.String()); rec.Code != http.StatusOK || v == nil || v[1] != tc.want {
			t.Errorf("GET %s: %d, value %v, want %s", link, rec.Code, v, tc.want)
		}
	}
	// the links of before: "/n/" is the root, ".." as the server gets it from curl --path-as-is
	for link, want := range map[string]string{"/c/" + id + "/n/..": "5", "/c/" + id + "/n/7": "1", "/c/" + id + "/n/7%20%283%29": "2"} {
		rec := do(s, http.MethodGet, link, nil)
		if v := scalarValueRe.FindStringSubmatch(rec.Body.String()); rec.Code != http.StatusOK || v == nil || v[1] != want {
			t.Errorf("GET %s: %d, value %v, want %s", link, rec.Code, v, want)
		}
	}
	if rec := do(s, http.MethodGet, "/c/"+id+"/n/", nil); rec.Code != http.StatusOK || scalarValueRe.MatchString(rec.Body.String()) {
		t.Errorf("GET /c/%s/n/: %d, not the root", id, rec.Code)
	}
}
