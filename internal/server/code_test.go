package server

import (
	"bytes"
	"html"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The code page shows a TorchScript archive's code as numbered text (escaped, never run),
// the checkpoint page lists it, and unknown members are 404.
func TestCodePage(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "torchscript.pt")
	rec := do(s, http.MethodGet, "/c/"+id, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `data-testid="archive"`) ||
		!strings.Contains(rec.Body.String(), "torchscript/code/__torch__.py") {
		t.Fatalf("GET /c/%s = %d; want the archive section listing the code", id, rec.Code)
	}
	member := "torchscript/code/__torch__.py"
	rec = do(s, http.MethodGet, "/c/"+id+"/code?member="+url.QueryEscape(member), nil)
	body := html.UnescapeString(rec.Body.String())
	if rec.Code != http.StatusOK || !strings.Contains(body, "def forward(self") || !strings.Contains(body, `id="L1"`) {
		t.Errorf("GET code page = %d %.400s; want numbered lines with forward()", rec.Code, rec.Body)
	}
	raw := do(s, http.MethodGet, "/c/"+id+"/code?raw=1&member="+url.QueryEscape(member), nil)
	if raw.Code != http.StatusOK || !strings.HasPrefix(raw.Body.String(), "class ScriptedNet") {
		t.Errorf("GET raw member = %d %.200s", raw.Code, raw.Body)
	}
	if rec := do(s, http.MethodGet, "/c/"+id+"/code?member=nope", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET an unknown member = %d, want 404", rec.Code)
	}
}

// Of a code file an archive holds three times, the code page shows the copy torch.jit.load
// compiles (the loader's tsdup fixture, whose verdict torch gave: the second, which adds
// 2), the member list lists every copy with a link of its own and says which is read,
// and a copy torch does not read is shown saying so.
func TestCodePageRepeatedName(t *testing.T) {
	s := realServer(t, Config{})
	data, err := os.ReadFile("../loader/testdata/tsdup/three_in_a_row.pt")
	if err != nil {
		t.Fatal(err)
	}
	rec := do(s, http.MethodPost, "/api/checkpoints?name=three.pt", bytes.NewReader(data))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %.300s", rec.Code, rec.Body)
	}
	id := decode[uploadJSON](t, rec).ID
	member := url.QueryEscape("m/code/__torch__.py")
	page := html.UnescapeString(do(s, http.MethodGet, "/c/"+id, nil).Body.String())
	for k := 1; k <= 3; k++ {
		if !strings.Contains(page, "code?member="+member+"&copy="+strconv.Itoa(k)) {
			t.Errorf("the member list has no link to copy %d", k)
		}
	}
	if !strings.Contains(page, "copy 2 of 3 of this name: read") || strings.Count(page, "not read (the loading program reads another copy)") != 2 {
		t.Errorf("the member list does not say that copy 2 of 3 is the one read")
	}
	for _, c := range []struct {
		query, adds string
		shadowed    bool
	}{{"", "2", false}, {"&copy=1", "1", true}, {"&copy=2", "2", false}, {"&copy=3", "3", true}} {
		body := html.UnescapeString(do(s, http.MethodGet, "/c/"+id+"/code?member="+member+c.query, nil).Body.String())
		if !strings.Contains(body, "torch.add(x, "+c.adds+")") || strings.Contains(body, `data-testid="member-shadowed"`) != c.shadowed {
			t.Errorf("code page%s: want the copy adding %s, shadowed %v: %.600s", c.query, c.adds, c.shadowed, body)
		}
	}
	raw := do(s, http.MethodGet, "/c/"+id+"/code?raw=1&copy=3&member="+member, nil)
	if !strings.Contains(raw.Body.String(), "torch.add(x, 3)") {
		t.Errorf("raw copy 3: %.300s", raw.Body)
	}
	if rec := do(s, http.MethodGet, "/c/"+id+"/code?copy=4&member="+member, nil); rec.Code != http.StatusNotFound {
		t.Errorf("copy 4 of 3 = %d, want 404", rec.Code)
	}
}
