// The URL scheme. A checkpoint's page is /c/<id>, and the page of one of its values (a
// node) is /c/<id>/n/ followed by the value's JSON Pointer (RFC 6901), segment by
// segment: /c/<id>/n/model/layers.0.weight is the pointer /model/layers.0.weight, and
// /c/<id>/n/ alone is the root. Each segment is the pointer's segment, in which "~" is
// written "~0" and "/" "~1" as RFC 6901 says, then percent-encoded like any URL path
// segment (a space is %20). Three segments cannot be written that way, because a browser
// removes or merges them before it sends the request (even as %2E): ".", ".." and the
// empty segment. They are written "~.", "~.." and "~": a dict key ".." is
// /c/<id>/n/~.., and a key "" is /c/<id>/n/~. No JSON Pointer segment is one of these
// three, as there "~" is only ever followed by 0 or 1 (a key "~." is the segment "~0."),
// so each URL names one value. Dict keys that Python keeps apart but that read the same
// ({7: a, '7': b}) get pointers of their own: the later key's segment gets " (2)", or the
// first " (N)" that is no other key's segment in the same container (/7 and /7 (2)). The
// JSON API and the htmx fragments carry the pointer itself in a ?path= query parameter
// (/api/checkpoints/<id>/node?path=/model/layers.0.weight), with no tilde forms.

package views

import (
	"net/url"
	"strconv"
	"strings"
)

// CheckpointURL is the share link of a checkpoint page: /c/<id>.
func CheckpointURL(id string) string { return "/c/" + url.PathEscape(id) }

// NodeURL is the share link of one node: "/c/<id>/n/" followed by the JSON Pointer's
// segments (see the URL scheme above): each path-escaped, except that a segment ".", ".."
// or "" is written "~.", "~.." or "~". Pointer segments are already RFC 6901 escaped (a
// "/" in a key is "~1"), so splitting on "/" finds the segments.
func NodeURL(id, pointer string) string {
	var b strings.Builder
	b.WriteString("/c/")
	b.WriteString(url.PathEscape(id))
	b.WriteString("/n/")
	if pointer == "" {
		return b.String()
	}
	for i, seg := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(URLSegment(seg))
	}
	return b.String()
}

// URLSegment is how a node URL writes one segment of a JSON Pointer (still RFC 6901
// escaped): path-escaped, and "." , ".." and "" as "~.", "~.." and "~", which a browser
// keeps as they are and which no JSON Pointer segment is (there "~" is always followed by
// "0" or "1").
func URLSegment(seg string) string {
	switch seg {
	case "":
		return "~"
	case ".":
		return "~."
	case "..":
		return "~.."
	}
	return url.PathEscape(seg)
}

// PointerSegment undoes URLSegment on a path-unescaped segment of a node URL: "~", "~."
// and "~.." are "", "." and ".."; any other segment is the JSON Pointer segment itself
// (a link made before the tilde forms, "a//b" for the key "" under "a", still works).
func PointerSegment(seg string) string {
	switch seg {
	case "~":
		return ""
	case "~.":
		return "."
	case "~..":
		return ".."
	}
	return seg
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
