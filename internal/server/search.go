package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/search"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// searchTimeout bounds one search: a tree of millions of values is searched in about a
// second, and a request never holds a worker longer than this.
const searchTimeout = 20 * time.Second

// errSearchTimeout is a search that ran out of its time.
var errSearchTimeout = errors.New("the search took longer than " + searchTimeout.String() + ", this server's limit for one search: narrow it (dtype:, kind:, a longer path)")

// runSearch parses q and runs it on o's tree for the page [offset, offset+limit).
func runSearch(ctx context.Context, o *opened, q string, offset, limit int) (search.Results, error) {
	pq, err := search.Parse(q)
	if err != nil {
		return search.Results{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, searchTimeout)
	defer cancel()
	res, err := search.Run(ctx, o.ck.Root, pq, offset, limit)
	if errors.Is(err, context.DeadlineExceeded) {
		return res, errSearchTimeout
	}
	return res, err
}

// handleSearchFragment serves GET /c/:id/fragment/search?q=Q&offset=N: the search box's
// results (a query that cannot be read says why, with the syntax).
func (s *Server) handleSearchFragment(c echo.Context) error {
	offset, err := intParam(c, "offset", 0)
	if err != nil {
		return err
	}
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	return s.render(c, http.StatusOK, templates.SearchResults(s.searchView(c, o, c.QueryParam("q"), offset)))
}

// searchView runs a query for a page and describes its results.
func (s *Server) searchView(c echo.Context, o *opened, q string, offset int) views.SearchView {
	res, err := search.Results{}, error(nil)
	if q != "" {
		res, err = runSearch(c.Request().Context(), o, q, offset, views.DefaultLimit)
	}
	v := views.NewSearchView(o.id, o.ck, q, res, err, offset)
	v.AddStats(s.statsLookup(o))
	return v
}

// searchJSON answers GET /api/checkpoints/:id/search.
type searchJSON struct {
	Query   string             `json:"query"`
	Total   int                `json:"total"`
	Capped  bool               `json:"capped,omitempty"`
	Results []searchResultJSON `json:"results"`
	// Next is the URL of the next page of results, null on the last page.
	Next *string `json:"next"`
}

// searchResultJSON is one match: a child row of its parent, and a tensor's layout.
type searchResultJSON struct {
	childJSON
	DType string  `json:"dtype,omitempty"`
	Shape []int64 `json:"shape,omitempty"`
}

// handleAPISearch serves GET /api/checkpoints/:id/search?q=Q&offset=N&limit=M: the nodes
// the query matches, in tree order, a page at a time (400 for a query that cannot be read).
func (s *Server) handleAPISearch(c echo.Context) error {
	offset, err := intParam(c, "offset", 0)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", views.DefaultLimit)
	if err != nil {
		return err
	}
	if limit == 0 {
		return badRequestf("limit must be at least 1")
	}
	limit = min(limit, views.MaxLimit)
	q := c.QueryParam("q")
	if _, err := search.Parse(q); err != nil {
		return badRequestf("%s: %s (%s)", "q", err, search.Syntax)
	}
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	res, err := runSearch(c.Request().Context(), o, q, offset, limit)
	if errors.Is(err, errSearchTimeout) {
		return echo.NewHTTPError(http.StatusServiceUnavailable, err.Error())
	}
	if err != nil {
		return err
	}
	out := searchJSON{Query: q, Total: res.Total, Capped: res.Capped, Results: make([]searchResultJSON, 0, len(res.Page))}
	for _, r := range res.Page {
		out.Results = append(out.Results, searchResult(r.Node, r.Path))
	}
	if end := offset + len(res.Page); end < res.Total {
		next := views.SearchAPIURL(o.id, q, end, limit)
		out.Next = &next
	}
	return c.JSON(http.StatusOK, out)
}

func searchResult(n *ckpt.Node, path string) searchResultJSON {
	r := searchResultJSON{childJSON: childJSON{Key: n.Key, Path: path, Kind: n.Kind, Type: n.Type, Summary: views.Summary(n)}}
	if t := n.Tensor; t != nil {
		r.DType, r.Shape = t.DType, nonNil(t.Shape)
	}
	return r
}
