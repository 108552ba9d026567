package server

import (
	"container/list"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/diff"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// diffCache keeps the last comparisons made (their values are read once per pair of
// checkpoints), and makes concurrent first requests for one pair compute it once.
type diffCache struct {
	mu      sync.Mutex
	max     int
	lru     *list.List // of *diffEntry
	byKey   map[string]*list.Element
	flights map[string]*diffFlight
}

type diffEntry struct {
	key string
	r   *diff.Result
}

type diffFlight struct {
	done chan struct{}
	r    *diff.Result
	err  error
}

func newDiffCache(max int) *diffCache {
	return &diffCache{max: max, lru: list.New(), byKey: map[string]*list.Element{}, flights: map[string]*diffFlight{}}
}

// compare returns the comparison of a and b, computing it unless cached.
func (s *Server) compare(ctx context.Context, a, b string) (*diff.Result, error) {
	c := s.diffs
	key := a + "/" + b
	for {
		c.mu.Lock()
		if el, ok := c.byKey[key]; ok {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return el.Value.(*diffEntry).r, nil
		}
		f, ok := c.flights[key]
		if !ok {
			f = &diffFlight{done: make(chan struct{})}
			c.flights[key] = f
			c.mu.Unlock()
			s.runDiffFlight(ctx, key, a, b, f)
			return f.r, f.err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// The request that computed it went away before it was done: this one is still
		// here, so it computes the comparison itself rather than report the other's end.
		if f.err != nil && isContextErr(f.err) && ctx.Err() == nil {
			continue
		}
		return f.r, f.err
	}
}

// runDiffFlight computes the comparison of flight f and wakes its waiters, whatever
// happens: a panic in the comparison is f's error (a 500 for this request and the ones
// waiting), not a flight left open for every later request of the same pair to wait on.
func (s *Server) runDiffFlight(ctx context.Context, key, a, b string, f *diffFlight) {
	c := s.diffs
	defer func() {
		if r := recover(); r != nil {
			f.r, f.err = nil, fmt.Errorf("server: comparing %s panicked: %v", key, r)
		}
		c.mu.Lock()
		delete(c.flights, key)
		if f.err == nil {
			c.byKey[key] = c.lru.PushFront(&diffEntry{key: key, r: f.r})
			for c.lru.Len() > c.max {
				e := c.lru.Remove(c.lru.Back()).(*diffEntry)
				delete(c.byKey, e.key)
			}
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.r, f.err = s.computeDiff(ctx, a, b)
}

// computeDiff opens both checkpoints and compares them, as one of the statistics
// computations the server runs at once (it reads as much).
func (s *Server) computeDiff(ctx context.Context, a, b string) (*diff.Result, error) {
	oa, relA, err := s.cache.get(ctx, a)
	if err != nil {
		return nil, err
	}
	defer relA()
	ob, relB, err := s.cache.get(ctx, b)
	if err != nil {
		return nil, err
	}
	defer relB()
	for _, o := range []*opened{oa, ob} {
		if o.err != nil {
			return nil, o.err
		}
	}
	select {
	case s.stats.sem <- struct{}{}:
		defer func() { <-s.stats.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatsTimeout)
	defer cancel()
	r := diff.Plan(oa.ck, ob.ck)
	err = r.Compute(ctx, s.stats.workers, nil)
	for _, o := range []*opened{oa, ob} {
		if f := o.fault(); f != nil {
			return nil, f // the storage failed under the comparison: no verdict
		}
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, &statsTimeoutError{limit: s.cfg.StatsTimeout}
		}
		return nil, err
	}
	return r, nil
}

// diffIDs reads :a and :b.
func diffIDs(c echo.Context) (string, string, error) {
	a, b := c.Param("a"), c.Param("b")
	if !store.ValidID(a) || !store.ValidID(b) {
		return "", "", store.ErrInvalidID
	}
	return a, b, nil
}

// diffFilter is a page's or request's filter: a status and a key substring (or /regex/).
type diffFilter struct {
	status string
	query  string
	re     *regexp.Regexp
}

func parseDiffFilter(c echo.Context) (diffFilter, error) {
	f := diffFilter{status: c.QueryParam("status"), query: strings.TrimSpace(c.QueryParam("q"))}
	switch f.status {
	case "", diff.StatusShape, diff.StatusChanged, diff.StatusUnread, diff.StatusClose, diff.StatusIdentical:
	default:
		return f, badRequestf("status=%q: want shape, changed, unread, close or identical", f.status)
	}
	if len(f.query) > 2 && strings.HasPrefix(f.query, "/") && strings.HasSuffix(f.query, "/") {
		re, err := regexp.Compile(f.query[1 : len(f.query)-1])
		if err != nil {
			return f, badRequestf("q=%s: %v", f.query, err)
		}
		f.re = re
	}
	return f, nil
}

func (f diffFilter) keep(p *diff.Pair) bool {
	if f.status != "" && p.Status != f.status {
		return false
	}
	switch {
	case f.re != nil:
		return f.re.MatchString(p.Key)
	case f.query != "":
		return strings.Contains(p.Key, f.query)
	}
	return true
}

func (f diffFilter) pairs(r *diff.Result) []*diff.Pair {
	var out []*diff.Pair
	for _, p := range r.Pairs {
		if f.keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// diffJSON is the body of GET /api/diff/:a/:b.
type diffJSON struct {
	A         string        `json:"a"`
	B         string        `json:"b"`
	Alignment diffAlignJSON `json:"alignment"`
	OnlyA     []string      `json:"only_a"`
	OnlyB     []string      `json:"only_b"`
	// OnlyAKeys and OnlyBKeys are the same tensors by their aligned keys.
	OnlyAKeys []string        `json:"only_a_keys"`
	OnlyBKeys []string        `json:"only_b_keys"`
	Counts    map[string]int  `json:"counts"`
	Total     int             `json:"total"`
	Changed   []diffEntryJSON `json:"changed"`
	Next      *int            `json:"next"`
}

type diffAlignJSON struct {
	// ScopeA and ScopeB are the pointers of the state dicts compared ("" for whole trees),
	// StripA and StripB the key prefixes stripped to match the keys.
	ScopeA string `json:"scope_a"`
	ScopeB string `json:"scope_b"`
	// StateDictA and StateDictB say the keys are a state dict's (at the scope); otherwise
	// they are the JSON Pointers of every tensor.
	StateDictA bool   `json:"state_dict_a"`
	StateDictB bool   `json:"state_dict_b"`
	StripA     string `json:"strip_a"`
	StripB     string `json:"strip_b"`
}

type diffEntryJSON struct {
	Path            string   `json:"path"`
	APath           string   `json:"a_path"`
	BPath           string   `json:"b_path"`
	Status          string   `json:"status"`
	DType           string   `json:"dtype"`
	Shape           []int64  `json:"shape"`
	BDType          string   `json:"b_dtype"`
	BShape          []int64  `json:"b_shape"`
	Identical       bool     `json:"identical"`
	Numel           *int64   `json:"numel"`
	MaxAbs          *float64 `json:"max_abs"`
	MaxRel          *float64 `json:"max_rel"`
	RelL2           *float64 `json:"rel_l2"`
	Cosine          *float64 `json:"cosine"`
	OutsideAllclose *float64 `json:"outside_allclose"`
	OutsideCount    *int64   `json:"outside_count"`
	NaNMismatch     *int64   `json:"nan_mismatch"`
	Error           string   `json:"error,omitempty"`
	// Within names the narrower dtype whose rounding explains every difference of a pair
	// of two dtypes marked close though outside numpy's isclose.
	Within string `json:"within_precision_of,omitempty"`
}

func entryJSON(p *diff.Pair) diffEntryJSON {
	e := diffEntryJSON{Path: p.Key, APath: p.A.Path, BPath: p.B.Path, Status: p.Status, DType: p.A.DType,
		Shape: p.A.Shape, BDType: p.B.DType, BShape: p.B.Shape, Error: p.Err, Within: p.Within}
	if d := p.Diff; d != nil {
		e.Identical = d.Identical
		e.Numel, e.MaxAbs, e.MaxRel, e.RelL2, e.Cosine = &d.Numel, &d.MaxAbs, &d.MaxRel, d.RelL2, d.Cosine
		e.OutsideCount, e.NaNMismatch = &d.OutsideAllclose, &d.NaN
		frac := 0.0
		if d.Numel > 0 {
			frac = float64(d.OutsideAllclose) / float64(d.Numel)
		}
		e.OutsideAllclose = &frac
	}
	return e
}

// pageParams reads offset= and limit= (at most maxLimit, default def).
func pageParams(c echo.Context, def, maxLimit int) (int, int, error) {
	offset, limit := 0, def
	if v := c.QueryParam("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, badRequestf("offset=%q: want a number from 0", v)
		}
		offset = n
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, 0, badRequestf("limit=%q: want a number from 1", v)
		}
		limit = min(n, maxLimit)
	}
	return offset, limit, nil
}

// diffQuery is what a diff request asks: the two ids, the filter, the page, and the
// comparison (computed unless cached).
type diffQuery struct {
	a, b          string
	filter        diffFilter
	offset, limit int
	result        *diff.Result
}

func (s *Server) diffQuery(c echo.Context, def, maxLimit int) (diffQuery, error) {
	var q diffQuery
	var err error
	if q.a, q.b, err = diffIDs(c); err != nil {
		return q, err
	}
	if q.filter, err = parseDiffFilter(c); err != nil {
		return q, err
	}
	if q.offset, q.limit, err = pageParams(c, def, maxLimit); err != nil {
		return q, err
	}
	q.result, err = s.compare(c.Request().Context(), q.a, q.b)
	return q, err
}

// handleAPIDiff serves GET /api/diff/:a/:b?offset=&limit=&status=&q=.
func (s *Server) handleAPIDiff(c echo.Context) error {
	q, err := s.diffQuery(c, 1000, 10000)
	if err != nil {
		return err
	}
	a, b, f, r, offset, limit := q.a, q.b, q.filter, q.result, q.offset, q.limit
	out := diffJSON{A: a, B: b, Counts: r.Counts, OnlyA: []string{}, OnlyB: []string{}, OnlyAKeys: []string{},
		OnlyBKeys: []string{}, Changed: []diffEntryJSON{},
		Alignment: diffAlignJSON{ScopeA: r.A.Scope, ScopeB: r.B.Scope, StripA: r.A.Strip, StripB: r.B.Strip,
			StateDictA: r.A.StateDict, StateDictB: r.B.StateDict}}
	for _, k := range r.A.Only {
		out.OnlyA, out.OnlyAKeys = append(out.OnlyA, k.Path), append(out.OnlyAKeys, k.Key)
	}
	for _, k := range r.B.Only {
		out.OnlyB, out.OnlyBKeys = append(out.OnlyB, k.Path), append(out.OnlyBKeys, k.Key)
	}
	pairs := f.pairs(r)
	out.Total = len(pairs)
	for i := offset; i < len(pairs) && i < offset+limit; i++ {
		out.Changed = append(out.Changed, entryJSON(pairs[i]))
	}
	if offset+limit < len(pairs) {
		n := offset + limit
		out.Next = &n
	}
	return c.JSON(http.StatusOK, out)
}

// diffRows is how many pairs a page shows.
const diffRows = 200

// handleDiff serves GET /diff/:a/:b: the comparison page.
func (s *Server) handleDiff(c echo.Context) error {
	dq, err := s.diffQuery(c, diffRows, diffRows)
	if err != nil {
		return err
	}
	a, b, f, r, offset := dq.a, dq.b, dq.filter, dq.result, dq.offset
	oa, relA, err := s.cache.get(c.Request().Context(), a)
	if err != nil {
		return err
	}
	defer relA()
	ob, relB, err := s.cache.get(c.Request().Context(), b)
	if err != nil {
		return err
	}
	defer relB()
	p := views.DiffPage{A: fileMeta(oa), B: fileMeta(ob), StripA: r.A.Strip, StripB: r.B.Strip,
		ScopeA: scopeOf(r.A), ScopeB: scopeOf(r.B), Counts: r.Counts, Pairs: len(r.Pairs), Query: f.query, Status: f.status,
		APIURL: views.DiffAPIURL(a, b), SwapURL: views.DiffURL(b, a)}
	pairs := f.pairs(r)
	p.Total = len(pairs)
	for i := offset; i < len(pairs) && i < offset+diffRows; i++ {
		p.Rows = append(p.Rows, newDiffRow(a, b, pairs[i]))
	}
	q := url.Values{}
	if f.query != "" {
		q.Set("q", f.query)
	}
	if f.status != "" {
		q.Set("status", f.status)
	}
	if offset+diffRows < len(pairs) {
		q.Set("offset", strconv.Itoa(offset+diffRows))
		p.Next = views.DiffURL(a, b) + "?" + q.Encode()
		q.Del("offset")
	}
	for _, st := range []string{"", diff.StatusShape, diff.StatusChanged, diff.StatusUnread, diff.StatusClose, diff.StatusIdentical} {
		n := len(r.Pairs)
		label := "all"
		if st != "" {
			n, label = r.Counts[st], views.DiffStatusText(st)
		}
		if n == 0 && st != "" {
			continue
		}
		fq := url.Values{}
		if f.query != "" {
			fq.Set("q", f.query)
		}
		if st != "" {
			fq.Set("status", st)
		}
		u := views.DiffURL(a, b)
		if len(fq) > 0 {
			u += "?" + fq.Encode()
		}
		p.Filters = append(p.Filters, views.DiffFilter{Label: label + " " + views.Thousands(int64(n)), URL: u, Active: st == f.status})
	}
	for _, k := range r.A.Only {
		p.OnlyA = append(p.OnlyA, views.DiffOnly{Key: k.Key, URL: views.NodeURL(a, k.Path), DType: k.DType, Shape: views.FormatShape(k.Shape)})
	}
	for _, k := range r.B.Only {
		p.OnlyB = append(p.OnlyB, views.DiffOnly{Key: k.Key, URL: views.NodeURL(b, k.Path), DType: k.DType, Shape: views.FormatShape(k.Shape)})
	}
	return s.render(c, http.StatusOK, templates.DiffPage(p))
}

// idIn finds a checkpoint id in what a person pasted: an id, or a link to a checkpoint
// or one of its nodes.
var idIn = regexp.MustCompile(`(?:^|/c/)([0-9a-f]{64})(?:$|[/?#])`)

// handleCompareForm serves GET /c/:id/compare?with=...: the "compare with" form, which
// redirects to the comparison.
func (s *Server) handleCompareForm(c echo.Context) error {
	a := c.Param("id")
	if !store.ValidID(a) {
		return store.ErrInvalidID
	}
	with := strings.TrimSpace(c.QueryParam("with"))
	m := idIn.FindStringSubmatch(with)
	if m == nil {
		return badRequestf("compare with %q: give a checkpoint's link or its 64-digit id", with)
	}
	return c.Redirect(http.StatusSeeOther, views.DiffURL(a, m[1]))
}

// newDiffRow describes a pair for the page.
func newDiffRow(a, b string, p *diff.Pair) views.DiffRow {
	r := views.DiffRow{Key: p.Key, AURL: views.NodeURL(a, p.A.Path), BURL: views.NodeURL(b, p.B.Path), Status: p.Status, Err: p.Err, Within: p.Within,
		DType: p.A.DType, Shape: views.FormatShape(p.A.Shape)}
	if p.A.DType != p.B.DType {
		r.DType = p.A.DType + " → " + p.B.DType
	}
	if p.Status == diff.StatusShape {
		r.Shape = views.FormatShape(p.A.Shape) + " → " + views.FormatShape(p.B.Shape)
	}
	if d := p.Diff; d != nil {
		r.MaxAbs, r.MaxRel = views.SigFloat(d.MaxAbs), views.SigFloat(d.MaxRel)
		r.RelL2, r.Cosine = "—", "—"
		if d.RelL2 != nil {
			r.RelL2 = views.SigFloat(*d.RelL2)
		}
		if d.Cosine != nil {
			r.Cosine = strconv.FormatFloat(*d.Cosine, 'f', 6, 64)
		}
		r.Outside = views.Percent(d.OutsideAllclose, d.Numel)
		if d.Numel == 0 {
			r.Outside = "—"
		}
	}
	return r
}

// compareChoices are the checkpoints a page offers to compare with: those opened lately on
// this server (most recent first), then the examples, without id itself; at most 20.
func (s *Server) compareChoices(id string) []views.Link {
	var out []views.Link
	seen := map[string]bool{id: true}
	add := func(oid, name string) {
		if !seen[oid] && len(out) < 20 {
			seen[oid] = true
			out = append(out, views.Link{Label: name, URL: views.DiffURL(id, oid)})
		}
	}
	s.cache.mu.Lock()
	for el := s.cache.lru.Front(); el != nil; el = el.Next() {
		if o := el.Value.(*opened); o.err == nil && o.ck != nil {
			add(o.id, o.meta.Name)
		}
	}
	s.cache.mu.Unlock()
	for _, e := range s.examples {
		add(e.ID, e.Name)
	}
	for _, f := range s.allFolders() {
		for _, e := range f.Listed() { // a page renders without walking the folder again
			add(e.ID, e.Name)
		}
	}
	return out
}

// scopeOf says for the page where a side's keys come from: "/" for a state dict at the
// root, its pointer for one deeper, "" for every tensor of the tree.
func scopeOf(s diff.Side) string {
	if !s.StateDict {
		return ""
	}
	if s.Scope == "" {
		return "/"
	}
	return s.Scope
}
