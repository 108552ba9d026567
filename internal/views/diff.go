package views

import (
	"net/url"
	"strconv"
)

// DiffURL is the page comparing two checkpoints.
func DiffURL(a, b string) string { return "/diff/" + url.PathEscape(a) + "/" + url.PathEscape(b) }

// DiffAPIURL is the JSON of a comparison.
func DiffAPIURL(a, b string) string {
	return "/api/diff/" + url.PathEscape(a) + "/" + url.PathEscape(b)
}

// DiffPage is the comparison of two checkpoints.
type DiffPage struct {
	A, B     FileMeta
	StripA   string
	StripB   string
	ScopeA   string
	ScopeB   string
	Counts   map[string]int
	Pairs    int // pairs in both
	Rows     []DiffRow
	Total    int // rows matching the filter
	OnlyA    []DiffOnly
	OnlyB    []DiffOnly
	Query    string
	Status   string // the status filter, "" for all
	Next     string // the next page of rows, "" if none
	Filters  []DiffFilter
	APIURL   string
	SwapURL  string
	Elements int64
}

// DiffFilter is a tab of the page: a status and how many pairs have it.
type DiffFilter struct {
	Label, URL string
	Active     bool
}

// DiffRow is one pair of tensors on the page.
type DiffRow struct {
	Key          string
	AURL, BURL   string
	Status       string
	DType, Shape string // "float32 → bfloat16" when they differ
	MaxAbs       string
	MaxRel       string
	RelL2        string
	Cosine       string
	Outside      string
	Err          string
	// Within names the narrower dtype whose rounding explains a close pair's differences.
	Within string
}

// DiffOnly is a tensor one side has.
type DiffOnly struct {
	Key, URL, DType, Shape string
}

// SigFloat writes a difference with 3 significant digits, 0 as 0.
func SigFloat(f float64) string {
	if f == 0 {
		return "0"
	}
	return strconv.FormatFloat(f, 'g', 3, 64)
}

// DiffStatusText names a status for people.
func DiffStatusText(s string) string {
	switch s {
	case "shape":
		return "shape changed"
	case "changed":
		return "changed"
	case "unread":
		return "not compared"
	case "close":
		return "close"
	case "identical":
		return "identical"
	}
	return s
}
