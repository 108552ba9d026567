package views

import (
	"net/url"
	"strconv"
	"strings"
)

// CheckpointURL is the share link of a checkpoint page: /c/<id>.
func CheckpointURL(id string) string { return "/c/" + url.PathEscape(id) }

// NodeURL is the share link of one node: "/c/<id>/n/" followed by the JSON Pointer, each
// segment path-escaped. Pointer segments are already RFC 6901 escaped (a "/" in a key is
// "~1"), so splitting on "/" finds the segments.
func NodeURL(id, pointer string) string {
	var b strings.Builder
	b.WriteString("/c/")
	b.WriteString(url.PathEscape(id))
	b.WriteString("/n/")
	p := strings.TrimPrefix(pointer, "/")
	if pointer == "" {
		return b.String()
	}
	for i, seg := range strings.Split(p, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(url.PathEscape(seg))
	}
	return b.String()
}

// ChildrenURL is the htmx fragment with a page of a node's children, starting at offset.
func ChildrenURL(id, pointer string, offset int) string {
	q := url.Values{}
	q.Set("path", pointer)
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	return "/c/" + url.PathEscape(id) + "/fragment/children?" + q.Encode()
}

// NodeJSONURL is the JSON API address of one node.
func NodeJSONURL(id, pointer string) string {
	return "/api/checkpoints/" + url.PathEscape(id) + "/node?" + url.Values{"path": {pointer}}.Encode()
}

// withOffset adds ?offset=N to a page URL (no-JS paging); offset 0 leaves it unchanged.
func withOffset(u string, offset int) string {
	if offset <= 0 {
		return u
	}
	return u + "?offset=" + strconv.Itoa(offset)
}

// StatsFragmentURL is the htmx fragment with a tensor's statistics (computed on request).
func StatsFragmentURL(id, pointer string, log bool) string {
	q := url.Values{"path": {pointer}}
	if log {
		q.Set("hist", "log")
	}
	return "/c/" + url.PathEscape(id) + "/fragment/stats?" + q.Encode()
}

// StatsJSONURL is the statistics API address of one tensor.
func StatsJSONURL(id, pointer string) string {
	return "/api/checkpoints/" + url.PathEscape(id) + "/stats?" + url.Values{"path": {pointer}}.Encode()
}

// DownloadURL is the download of a node as json, npy or raw; bits keeps bfloat16 and
// float8 as their bit patterns instead of float32.
func DownloadURL(id, pointer, format string, bits bool) string {
	q := url.Values{"path": {pointer}, "format": {format}}
	if bits {
		q.Set("as", "raw")
	}
	return "/api/checkpoints/" + url.PathEscape(id) + "/download?" + q.Encode()
}

// StatsAllURL is the htmx fragment with the progress of a checkpoint's all-statistics job;
// a POST to StatsAllStartURL starts the job.
func StatsAllURL(id string) string { return "/c/" + url.PathEscape(id) + "/fragment/stats-all" }

// StatsAllStartURL starts a checkpoint's all-statistics job (POST).
func StatsAllStartURL(id string) string { return "/c/" + url.PathEscape(id) + "/stats-all" }

// StatsExportURL is the export of every tensor's statistics as csv or json.
func StatsExportURL(id, format string) string {
	return "/api/checkpoints/" + url.PathEscape(id) + "/stats/export?format=" + url.QueryEscape(format)
}
