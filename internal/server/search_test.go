package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSearchAPI searches state_dict.pt through the API and holds the results to the
// tensors torch recorded (expected.json): bool tensors, page by page, and a query that
// cannot be read is a 400 that says why.
func TestSearchAPI(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path  string  `json:"path"`
			DType string  `json:"dtype"`
			Shape []int64 `json:"shape"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range all["state_dict.pt"].Tensors {
		if e.DType == "bool" {
			want = append(want, e.Path)
		}
	}
	if len(want) < 2 {
		t.Fatalf("%d bool tensors in the fixture", len(want))
	}
	var got []string
	next := "/api/checkpoints/" + id + "/search?q=" + url.QueryEscape("dtype:bool") + "&limit=1"
	for pages := 0; next != "" && pages < 100; pages++ {
		rec := do(s, http.MethodGet, next, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", next, rec.Code, rec.Body)
		}
		r := decode[searchJSON](t, rec)
		if r.Total != len(want) || r.Query != "dtype:bool" || len(r.Results) != 1 {
			t.Fatalf("page %+v", r)
		}
		res := r.Results[0]
		if res.Kind != "tensor" || res.DType != "bool" || len(res.Shape) == 0 || res.Summary == "" {
			t.Errorf("result %+v", res)
		}
		got = append(got, res.Path)
		next = ""
		if r.Next != nil {
			next = *r.Next
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id+"/search?q="+url.QueryEscape("/ln(/"), nil)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "regular expression") {
		t.Errorf("bad regex: %d %s", rec.Code, rec.Body)
	}
	rec = do(s, http.MethodGet, "/api/checkpoints/"+id+"/search?q=", nil)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("empty query: %d", rec.Code)
	}
}

// TestSearchPage checks the search box's fragment and the page without scripts: each
// match is a row linking to its node, the count is shown, and an unreadable query is
// explained in the fragment.
func TestSearchPage(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	for _, target := range []string{
		"/c/" + id + "/fragment/search?q=" + url.QueryEscape("*.attn.q.weight"),
		"/c/" + id + "?q=" + url.QueryEscape("*.attn.q.weight"),
	} {
		rec := do(s, http.MethodGet, target, nil)
		body := rec.Body.String()
		if rec.Code != http.StatusOK || !strings.Contains(body, `data-testid="search-count"`) {
			t.Fatalf("%s: %d", target, rec.Code)
		}
		// state_dict.pt has blocks 0 and 1, each with attn.q.weight (generate.py)
		for _, p := range []string{"/c/" + id + "/n/blocks.0.attn.q.weight", "/c/" + id + "/n/blocks.1.attn.q.weight"} {
			if !strings.Contains(body, `href="`+p+`"`) {
				t.Errorf("%s: no link to %s", target, p)
			}
		}
		if !strings.Contains(body, "2 matches for") {
			t.Errorf("%s: the count is not shown", target)
		}
	}
	rec := do(s, http.MethodGet, "/c/"+id+"/fragment/search?q="+url.QueryEscape("shape:[x]"), nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `data-testid="search-error"`) {
		t.Errorf("unreadable query: %d %s", rec.Code, rec.Body)
	}
}

// TestStatsFlags runs the all-statistics job on state_dict.pt and checks the tensors the
// block lists against the statistics numpy computed (expected.json): every tensor that is
// all zeros or a single value (LayerNorm's initial ones and zeros), and no other.
func TestStatsFlags(t *testing.T) {
	s := realServer(t, Config{})
	id := uploadFixture(t, s, "state_dict.pt")
	raw, err := os.ReadFile(filepath.Join(fixturesDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path  string `json:"path"`
			Stats *struct {
				Count  int64    `json:"count"`
				Min    *float64 `json:"min"`
				Max    *float64 `json:"max"`
				Zeros  int64    `json:"zeros"`
				NaN    int64    `json:"nan"`
				PosInf int64    `json:"posinf"`
				NegInf int64    `json:"neginf"`
			} `json:"stats"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range all["state_dict.pt"].Tensors {
		st := e.Stats
		if st == nil {
			continue
		}
		if st.NaN+st.PosInf+st.NegInf > 0 || st.Count > 0 && st.Zeros == st.Count || st.Count > 1 && *st.Min == *st.Max ||
			st.Max != nil && (*st.Max >= 1e4 || *st.Min <= -1e4) {
			want = append(want, e.Path)
		}
	}
	if len(want) == 0 {
		t.Fatal("no tensor of the fixture stands out: the test checks nothing")
	}
	api := "/api/checkpoints/" + id + "/stats/all"
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d", api, rec.Code)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		p := decode[jobProgress](t, do(s, http.MethodGet, api, nil))
		if p.State == jobDone {
			break
		}
		if p.State != jobRunning || time.Now().After(deadline) {
			t.Fatalf("job %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	body := do(s, http.MethodGet, "/c/"+id+"/fragment/stats-all", nil).Body.String()
	var got []string
	for _, m := range regexp.MustCompile(`<a class="mono" href="[^"]*" data-testid="stats-flag">([^<]*)</a>`).FindAllStringSubmatch(body, -1) {
		got = append(got, m[1])
	}
	// grouped by reason on the page: compare the sets
	slices.Sort(got)
	sorted := slices.Clone(want)
	slices.Sort(sorted)
	if !slices.Equal(got, sorted) {
		t.Errorf("flagged %v, want %v", got, sorted)
	}
}
