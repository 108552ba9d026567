package views

import (
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/search"
)

// SearchView is a page of search results, for the search box under a checkpoint's
// contents and its fragment.
type SearchView struct {
	ID, Query string
	// Syntax says how to write a query.
	Syntax string
	// Error says why the query cannot be run (it is shown with the syntax).
	Error string
	// Total counts the matches; Rows are this page of them, keyed by their path; Offset is
	// the first one's place.
	Total, Offset int
	Rows          []Row
	KeyWidth      int
	// Capped is set when the search stopped before the end of a very large tree.
	Capped bool
	// NextURL and NextPageURL lead to the next page (fragment, and page without scripts).
	NextURL, NextPageURL string
	// FragmentURL is where the search box asks for results as one types.
	FragmentURL string
}

// CountText says how many matches there are: "1 match", "1,024 matches".
func (v SearchView) CountText() string {
	if v.Total == 1 {
		return "1 match"
	}
	return Thousands(int64(v.Total)) + " matches"
}

// AddStats puts the statistics already computed beside the tensors among the results.
func (v *SearchView) AddStats(lookup StatsLookup) {
	for i := range v.Rows {
		v.Rows[i].addStats(lookup)
	}
}

// KeyClass is the CSS class of the results' key column.
func (v SearchView) KeyClass() string { return keyClass(v.KeyWidth) }

// NewSearchView describes the results of a query (res, or the error that stopped it).
func NewSearchView(id string, ck *ckpt.Checkpoint, query string, res search.Results, err error, offset int) SearchView {
	v := SearchView{ID: id, Query: query, Syntax: search.Syntax, Offset: offset, FragmentURL: SearchFragmentURL(id, "", 0)}
	if strings.TrimSpace(query) == "" {
		return v
	}
	if err != nil {
		v.Error = err.Error()
		return v
	}
	v.Total, v.Capped = res.Total, res.Capped
	w := 0
	for _, r := range res.Page {
		row := NewRow(id, ck, r.Node)
		row.Key = strings.TrimPrefix(search.DisplayPath(r.Path), "/")
		v.Rows = append(v.Rows, row)
		w = max(w, utf8.RuneCountInString(row.Key))
	}
	w = (w + keyWidthStep - 1) / keyWidthStep * keyWidthStep
	v.KeyWidth = max(keyWidthMin, min(w, keyWidthMax))
	if end := offset + len(res.Page); end < res.Total {
		v.NextURL = SearchFragmentURL(id, query, end)
		v.NextPageURL = SearchPageURL(id, query, end)
	}
	return v
}

// SearchFragmentURL is the results fragment of a query from offset.
func SearchFragmentURL(id, q string, offset int) string {
	u := "/c/" + url.PathEscape(id) + "/fragment/search"
	if q == "" && offset == 0 {
		return u
	}
	return u + "?" + searchParams(q, offset)
}

// SearchPageURL is the checkpoint page with the results of a query (without scripts).
func SearchPageURL(id, q string, offset int) string {
	return CheckpointURL(id) + "?" + searchParams(q, offset)
}

// SearchAPIURL is the JSON API's address of a query's page of results.
func SearchAPIURL(id, q string, offset, limit int) string {
	u := "/api/checkpoints/" + url.PathEscape(id) + "/search?" + searchParams(q, offset)
	if limit != DefaultLimit {
		u += "&limit=" + strconv.Itoa(limit)
	}
	return u
}

func searchParams(q string, offset int) string {
	v := url.Values{"q": {q}}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	return v.Encode()
}
