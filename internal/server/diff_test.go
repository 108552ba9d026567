package server

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// expectedDiff is testdata/models/expected_diff.json: numpy's comparison of pairs of
// checkpoints made with torch (generate_diff.py).
type expectedDiff struct {
	Pairs []struct {
		A, B       string
		ContainerA []string `json:"container_a"`
		ContainerB []string `json:"container_b"`
		StripA     string   `json:"strip_a"`
		StripB     string   `json:"strip_b"`
		OnlyA      []string `json:"only_a"`
		OnlyB      []string `json:"only_b"`
		Tensors    []struct {
			Key          string
			DTypeA       string   `json:"dtype_a"`
			DTypeB       string   `json:"dtype_b"`
			ShapeA       []int64  `json:"shape_a"`
			ShapeB       []int64  `json:"shape_b"`
			Identical    *bool    `json:"identical"`
			MaxAbs       *float64 `json:"max_abs"`
			MaxRel       *float64 `json:"max_rel"`
			RelL2        *float64 `json:"rel_l2"`
			Cosine       *float64 `json:"cosine"`
			OutsideFrac  *float64 `json:"outside_allclose"`
			OutsideCount *int64   `json:"outside_count"`
			Numel        *int64   `json:"numel"`
		}
	}
}

func uploadDiffFixture(t *testing.T, s *Server, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixturesDir, "diff", name))
	if err != nil {
		t.Fatal(err)
	}
	rec := do(s, http.MethodPost, "/api/checkpoints?name="+name, bytes.NewReader(data))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload %s = %d %.200s", name, rec.Code, rec.Body)
	}
	return decode[uploadJSON](t, rec).ID
}

// closeTo compares a metric with numpy's: both null, or within 1e-9 relative (sums are
// added in another order).
func closeTo(got, want *float64) bool {
	if got == nil || want == nil {
		return got == nil && want == nil
	}
	return math.Abs(*got-*want) <= 1e-9*math.Max(1, math.Abs(*want))
}

// Every pair of expected_diff.json through GET /api/diff: the keys only on one side, the
// prefixes aligned, and for each tensor in both its dtypes, shapes, bit-identity and
// metrics as numpy computed them.
func TestDiffMatchesNumpy(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixturesDir, "expected_diff.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want expectedDiff
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want.Pairs) < 5 {
		t.Fatalf("expected_diff.json has %d pairs", len(want.Pairs))
	}
	s := realServer(t, Config{})
	checked := 0
	for _, wp := range want.Pairs {
		t.Run(wp.A+"_vs_"+wp.B, func(t *testing.T) {
			a, bID := uploadDiffFixture(t, s, wp.A), uploadDiffFixture(t, s, wp.B)
			rec := do(s, http.MethodGet, "/api/diff/"+a+"/"+bID+"?limit=10000", nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /api/diff = %d %.300s", rec.Code, rec.Body)
			}
			got := decode[diffJSON](t, rec)
			if got.A != a || got.B != bID {
				t.Errorf("a, b = %s, %s", got.A, got.B)
			}
			if got.Alignment.StripA != wp.StripA || got.Alignment.StripB != wp.StripB {
				t.Errorf("strips = %q, %q, want %q, %q", got.Alignment.StripA, got.Alignment.StripB, wp.StripA, wp.StripB)
			}
			for side, c := range map[string][]string{got.Alignment.ScopeA: wp.ContainerA, got.Alignment.ScopeB: wp.ContainerB} {
				if want := "/" + strings.Join(c, "/"); side != want && !(len(c) == 0 && side == "") {
					t.Errorf("scope %q, want the state dict at %q", side, want)
				}
			}
			sortCopy := func(x []string) []string { y := slices.Clone(x); slices.Sort(y); return y }
			if !slices.Equal(sortCopy(got.OnlyAKeys), sortCopy(wp.OnlyA)) || !slices.Equal(sortCopy(got.OnlyBKeys), sortCopy(wp.OnlyB)) {
				t.Errorf("only in a %v, only in b %v; want %v, %v", got.OnlyAKeys, got.OnlyBKeys, wp.OnlyA, wp.OnlyB)
			}
			byKey := map[string]diffEntryJSON{}
			for _, e := range got.Changed {
				byKey[e.Path] = e
			}
			if len(byKey) != len(wp.Tensors) || got.Total != len(wp.Tensors) {
				t.Errorf("%d pairs (total %d), want %d", len(byKey), got.Total, len(wp.Tensors))
			}
			for _, wt := range wp.Tensors {
				e, ok := byKey[wt.Key]
				if !ok {
					t.Errorf("%s: not compared", wt.Key)
					continue
				}
				checked++
				if e.DType != wt.DTypeA || e.BDType != wt.DTypeB || !slices.Equal(e.Shape, wt.ShapeA) || !slices.Equal(e.BShape, wt.ShapeB) {
					t.Errorf("%s: %s %v vs %s %v, want %s %v vs %s %v", wt.Key, e.DType, e.Shape, e.BDType, e.BShape, wt.DTypeA, wt.ShapeA, wt.DTypeB, wt.ShapeB)
				}
				if !slices.Equal(wt.ShapeA, wt.ShapeB) {
					if e.Status != "shape" || e.MaxAbs != nil {
						t.Errorf("%s: status %q with metrics %v, want shape and none", wt.Key, e.Status, e.MaxAbs)
					}
					continue
				}
				if e.Numel == nil || *e.Numel != *wt.Numel || e.OutsideCount == nil || *e.OutsideCount != *wt.OutsideCount {
					t.Errorf("%s: numel %v outside %v, want %d %d", wt.Key, e.Numel, e.OutsideCount, *wt.Numel, *wt.OutsideCount)
					continue
				}
				if e.Identical != *wt.Identical {
					t.Errorf("%s: identical %v, want %v", wt.Key, e.Identical, *wt.Identical)
				}
				// close: within numpy's isclose, or, between two float dtypes, every relative
				// difference (numpy's max_rel) within the narrower dtype's rounding
				roundoff := map[string]float64{"float32": 0x1p-24, "float16": 0x1p-11, "bfloat16": 0x1p-8}
				ua, oka := roundoff[wt.DTypeA]
				ub, okb := roundoff[wt.DTypeB]
				wantStatus := "changed"
				switch {
				case *wt.Identical:
					wantStatus = "identical"
				case *wt.OutsideCount == 0:
					wantStatus = "close"
				case oka && okb && wt.DTypeA != wt.DTypeB && *wt.MaxRel <= math.Max(ua, ub)*(1+1e-12):
					wantStatus = "close"
				}
				if e.Status != wantStatus {
					t.Errorf("%s: status %q, want %q", wt.Key, e.Status, wantStatus)
				}
				for name, pair := range map[string][2]*float64{"max_abs": {e.MaxAbs, wt.MaxAbs}, "max_rel": {e.MaxRel, wt.MaxRel},
					"rel_l2": {e.RelL2, wt.RelL2}, "cosine": {e.Cosine, wt.Cosine}, "outside_allclose": {e.OutsideAllclose, wt.OutsideFrac}} {
					if !closeTo(pair[0], pair[1]) {
						t.Errorf("%s: %s = %v, want %v", wt.Key, name, deref(pair[0]), deref(pair[1]))
					}
				}
			}
			// sorted by how much changed: shape changes, then changed by rel L2, then close, identical
			rank := map[string]int{"shape": 0, "changed": 1, "unread": 2, "close": 3, "identical": 4}
			for i := 1; i < len(got.Changed); i++ {
				p, q := got.Changed[i-1], got.Changed[i]
				if rank[p.Status] > rank[q.Status] {
					t.Errorf("%s (%s) sorted before %s (%s)", p.Path, p.Status, q.Path, q.Status)
				}
				if p.Status == "changed" && q.Status == "changed" && p.RelL2 != nil && q.RelL2 != nil && *p.RelL2 < *q.RelL2 {
					t.Errorf("%s (rel L2 %g) sorted before %s (%g)", p.Path, *p.RelL2, q.Path, *q.RelL2)
				}
			}
			// the classic uses: the same weights in another format are identical, a bf16 copy close
			switch wp.B {
			case "same_weights.safetensors", "dataparallel.pt", "lightning.ckpt":
				if got.Counts["identical"] != len(wp.Tensors) {
					t.Errorf("%s vs %s: counts %v, want all %d identical", wp.A, wp.B, got.Counts, len(wp.Tensors))
				}
			case "base_bf16.pt":
				if got.Counts["changed"] != 0 || got.Counts["close"] == 0 {
					t.Errorf("a bf16 copy: counts %v, want every pair close or identical", got.Counts)
				}
			}
			page := do(s, http.MethodGet, "/diff/"+a+"/"+bID, nil)
			if page.Code != http.StatusOK || strings.Count(page.Body.String(), `data-testid="diff-row"`) != len(wp.Tensors) {
				t.Errorf("GET /diff page = %d with %d rows, want %d", page.Code, strings.Count(page.Body.String(), `data-testid="diff-row"`), len(wp.Tensors))
			}
		})
	}
	if checked < 60 {
		t.Errorf("checked %d tensor pairs", checked)
	}
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

// The API pages and filters; bad parameters are 400s; the compare form redirects.
func TestDiffPagingAndFilters(t *testing.T) {
	s := realServer(t, Config{})
	a, b := uploadDiffFixture(t, s, "base.pt"), uploadDiffFixture(t, s, "finetuned.pt")
	api := "/api/diff/" + a + "/" + b
	all := decode[diffJSON](t, do(s, http.MethodGet, api, nil))
	var seen []string
	for off := 0; ; {
		page := decode[diffJSON](t, do(s, http.MethodGet, api+"?limit=3&offset="+strconv.Itoa(off), nil))
		for _, e := range page.Changed {
			seen = append(seen, e.Path)
		}
		if page.Next == nil {
			break
		}
		off = *page.Next
	}
	var want []string
	for _, e := range all.Changed {
		want = append(want, e.Path)
	}
	if !slices.Equal(seen, want) {
		t.Errorf("pages of 3 give %v, want %v", seen, want)
	}
	ident := decode[diffJSON](t, do(s, http.MethodGet, api+"?status=identical", nil))
	if ident.Total != all.Counts["identical"] || ident.Total == 0 {
		t.Errorf("status=identical total %d, counts %v", ident.Total, all.Counts)
	}
	for _, e := range decode[diffJSON](t, do(s, http.MethodGet, api+"?q=/^h%5C.0%5C./", nil)).Changed {
		if !strings.HasPrefix(e.Path, "h.0.") {
			t.Errorf("q=/^h\\.0\\./ gave %s", e.Path)
		}
	}
	for _, bad := range []string{"?status=odd", "?q=/(/", "?offset=-1", "?limit=0"} {
		if rec := do(s, http.MethodGet, api+bad, nil); rec.Code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", bad, rec.Code)
		}
	}
	if rec := do(s, http.MethodGet, "/api/diff/"+a+"/nothex", nil); rec.Code != http.StatusBadRequest {
		t.Errorf("a bad id = %d, want 400", rec.Code)
	}
	if rec := do(s, http.MethodGet, "/api/diff/"+a+"/"+strings.Repeat("0", 64), nil); rec.Code != http.StatusNotFound {
		t.Errorf("an unknown id = %d, want 404", rec.Code)
	}
	rec := do(s, http.MethodGet, "/c/"+a+"/compare?with="+"http://x/c/"+b+"/n/wte.weight", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/diff/"+a+"/"+b {
		t.Errorf("compare form = %d to %q", rec.Code, rec.Header().Get("Location"))
	}
}

// A request waiting on a comparison that another request started, and left (its tab
// closed), computes the comparison itself: it is answered with the result, not with the
// other request's cancellation.
func TestDiffWaiterOutlivesTheRequestItJoined(t *testing.T) {
	s := realServer(t, Config{})
	a, b := uploadDiffFixture(t, s, "base.pt"), uploadDiffFixture(t, s, "finetuned.pt")
	key := a + "/" + b
	gone := &diffFlight{done: make(chan struct{})}
	s.diffs.mu.Lock()
	s.diffs.flights[key] = gone
	s.diffs.mu.Unlock()

	answered := make(chan *httptest.ResponseRecorder)
	go func() { answered <- do(s, http.MethodGet, "/api/diff/"+key, nil) }()
	// The waiter has joined once it is blocked on the flight; then the flight ends as a
	// cancelled request's does (computeDiff returned its context's error).
	time.Sleep(50 * time.Millisecond)
	s.diffs.mu.Lock()
	delete(s.diffs.flights, key)
	gone.err = context.Canceled
	s.diffs.mu.Unlock()
	close(gone.done)

	select {
	case rec := <-answered:
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /api/diff after the first request left = %d %.300s", rec.Code, rec.Body)
		}
		if got := decode[diffJSON](t, rec); got.Total == 0 {
			t.Errorf("the comparison has no pairs: %+v", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was never answered")
	}
}
