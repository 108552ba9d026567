package web

import (
	"io/fs"
	"regexp"
	"testing"
)

func TestAsset(t *testing.T) {
	for _, name := range []string{"app.css", "app.js", "htmx-2.0.11.min.js", "favicon.svg"} {
		if _, err := fs.Stat(Static, "static/"+name); err != nil {
			t.Errorf("static/%s is not embedded: %v", name, err)
		}
		if got := Asset(name); !regexp.MustCompile(`^/static/` + regexp.QuoteMeta(name) + `\?v=[0-9a-f]{12}$`).MatchString(got) {
			t.Errorf("Asset(%q) = %q, want /static/%s?v=<12 hex digits>", name, got, name)
		}
	}
	if got := Asset("missing.js"); got != "/static/missing.js" {
		t.Errorf("Asset(missing.js) = %q, want /static/missing.js", got)
	}
}
