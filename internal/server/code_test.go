package server

import (
	"html"
	"net/http"
	"net/url"
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
