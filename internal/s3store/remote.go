package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ckptview/ckptview/internal/store"
)

// Remote opens checkpoints in place, without copying them: s3://bucket/key through the
// SDK's standard configuration, and http(s) URLs of servers that honour Range requests
// (a model hub's resolve URL). Only URLs under the operator's prefixes may be opened: the
// server fetches what it is given, so which hosts and buckets it reaches is theirs to say.
//
// Every read of an object is pinned to the version seen when it was opened (If-Match on
// its ETag for S3; If-Range on its ETag or Last-Modified for HTTP), so a file that changes
// underneath is reported as changed, never read as a mix of two versions.
type Remote struct {
	prefixes  []string
	timeout   time.Duration
	cache     *blockCache
	http      *http.Client
	endpoint  string
	pathStyle bool

	s3once   sync.Once
	s3client *s3.Client
	s3err    error
}

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// Prefixes are the URL prefixes that may be opened (s3://models/, https://huggingface.co/).
	Prefixes []string
	// Timeout bounds one request, retries included (0: 30 s).
	Timeout time.Duration
	// CacheBytes bounds the block cache of remote reads (0: 64 MiB).
	CacheBytes int64
	// Endpoint and PathStyle are as in Config, for s3:// URLs.
	Endpoint  string
	PathStyle bool
}

// Errors of opening in place.
var (
	// ErrNotAllowed is a URL outside the configured prefixes.
	ErrNotAllowed = errors.New("this server opens no URL in place under that prefix (its operator lists the prefixes it may open with -open-urls)")
)

// RemoteError is a URL that answered, but not with a file that can be read in place: not
// found, forbidden, no Range support, no version to pin. It is the URL's doing.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// NewRemote checks the prefixes and returns a Remote.
func NewRemote(c RemoteConfig) (*Remote, error) {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 64 << 20
	}
	r := &Remote{timeout: c.Timeout, cache: newBlockCache(c.CacheBytes), endpoint: c.Endpoint, pathStyle: c.PathStyle}
	for _, p := range c.Prefixes {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		canon, err := canonicalURL(p)
		if err != nil {
			return nil, fmt.Errorf("-open-urls: %q: %v", p, err)
		}
		if strings.Count(canon, "/") < 3 { // scheme://host: the whole host
			canon += "/"
		}
		r.prefixes = append(r.prefixes, canon)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = c.Timeout
	tr.MaxIdleConnsPerHost = 32
	tr.DisableCompression = true // a Range of a compressed answer is not the file's bytes
	r.http = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("more than 5 redirects")
		}
		if req.URL.Scheme != "https" && via[0].URL.Scheme == "https" {
			return errors.New("a redirect from https to " + req.URL.Scheme)
		}
		return nil
	}}
	return r, nil
}

// Enabled reports whether any URL may be opened.
func (r *Remote) Enabled() bool { return r != nil && len(r.prefixes) > 0 }

// Prefixes are the URL prefixes that may be opened.
func (r *Remote) Prefixes() []string { return r.prefixes }

// canonicalURL parses an s3 or http(s) URL and writes it back in one form, so a prefix
// check cannot be fooled by case, default ports, dot segments or user info.
func canonicalURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch u.Scheme {
	case "s3", "https", "http":
	default:
		return "", errors.New("want an s3://, https:// or http:// URL")
	}
	if u.User != nil {
		return "", errors.New("a URL with user info is not opened")
	}
	if u.Host == "" {
		return "", errors.New("no host or bucket")
	}
	host := strings.ToLower(u.Host)
	host = strings.TrimSuffix(host, map[string]string{"https": ":443", "http": ":80"}[u.Scheme])
	p := u.EscapedPath()
	if p != "" {
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		p = clean
	}
	out := u.Scheme + "://" + host + p
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out, nil
}

// Object is what an in-place id names: one version of the file at a URL.
type Object struct {
	URL string `json:"url"`
	// Version is the ETag (or, over HTTP without one, the Last-Modified date) pinned.
	Version string    `json:"version"`
	Size    int64     `json:"size"`
	Name    string    `json:"name"`
	Opened  time.Time `json:"opened"`
}

// ID is the object's stable id: the sha256 of "ckptview in-place", the URL, the version
// and the size, one per line. The same version of the same URL has the same link on every
// replica; a new version gets a new one.
func (o Object) ID() string {
	h := sha256.Sum256([]byte("ckptview in-place\n" + o.URL + "\n" + o.Version + "\n" + strconv.FormatInt(o.Size, 10)))
	return hex.EncodeToString(h[:])
}

// Resolve checks that raw may be opened and finds its size and version.
func (r *Remote) Resolve(ctx context.Context, raw string) (Object, error) {
	canon, err := canonicalURL(strings.TrimSpace(raw))
	if err != nil {
		return Object{}, &RemoteError{Msg: fmt.Sprintf("cannot open %q in place: %v", raw, err)}
	}
	allowed := false
	for _, p := range r.prefixes {
		if strings.HasPrefix(canon, p) {
			allowed = true
			break
		}
	}
	if !allowed {
		return Object{}, ErrNotAllowed
	}
	u, _ := url.Parse(canon)
	o := Object{URL: canon, Name: path.Base(u.Path), Opened: time.Now().UTC()}
	if o.Name == "/" || o.Name == "." {
		o.Name = u.Host
	}
	if n, err := url.PathUnescape(o.Name); err == nil {
		o.Name = store.CleanName(n)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if u.Scheme == "s3" {
		client, err := r.s3()
		if err != nil {
			return Object{}, err
		}
		key := strings.TrimPrefix(u.Path, "/")
		out, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(u.Host), Key: &key})
		if notFound(err) {
			return Object{}, &RemoteError{Msg: canon + " does not exist"}
		}
		if err != nil {
			return Object{}, unavailable(err)
		}
		o.Size, o.Version = aws.ToInt64(out.ContentLength), aws.ToString(out.ETag)
		return o, nil
	}
	// One byte, ranged: the answer says whether Range is honoured, the size and the version.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, canon, nil)
	if err != nil {
		return Object{}, &RemoteError{Msg: err.Error()}
	}
	req.Header.Set("Range", "bytes=0-0")
	resp, err := r.http.Do(req)
	if err != nil {
		return Object{}, unavailable(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return Object{}, unavailable(fmt.Errorf("%s answered %s", canon, resp.Status))
	case resp.StatusCode == http.StatusOK:
		return Object{}, &RemoteError{Msg: canon + " does not honour Range requests, so it cannot be read in place; upload the file instead"}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return Object{}, &RemoteError{Msg: canon + " is empty"}
	case resp.StatusCode != http.StatusPartialContent:
		return Object{}, &RemoteError{Msg: fmt.Sprintf("%s answered %s", canon, resp.Status)}
	}
	total, ok := contentRangeTotal(resp.Header.Get("Content-Range"))
	if !ok {
		return Object{}, &RemoteError{Msg: canon + " gave no file size (Content-Range)"}
	}
	o.Size = total
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		o.Version = et
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		o.Version = lm
	} else {
		return Object{}, &RemoteError{Msg: canon + " gives neither an ETag nor a Last-Modified date, so a change to it could not be told from its bytes; upload the file instead"}
	}
	return o, nil
}

// contentRangeTotal reads the size out of "bytes 0-0/1234".
func contentRangeTotal(v string) (int64, bool) {
	i := strings.LastIndexByte(v, '/')
	if !strings.HasPrefix(v, "bytes ") || i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[i+1:], 10, 64)
	return n, err == nil && n >= 0
}

func (r *Remote) s3() (*s3.Client, error) {
	r.s3once.Do(func() {
		r.s3client, r.s3err = newClient(context.Background(), r.endpoint, r.pathStyle, r.timeout)
	})
	return r.s3client, r.s3err
}

// Open opens the version of the object that o names. A URL that now holds another version
// is a *ChangedError.
func (r *Remote) Open(ctx context.Context, o Object) (*store.Blob, error) {
	now, err := r.Resolve(ctx, o.URL)
	if err != nil {
		return nil, err
	}
	if now.Version != o.Version || now.Size != o.Size {
		return nil, &ChangedError{What: o.URL}
	}
	u, _ := url.Parse(o.URL)
	key := o.URL + "@" + o.Version
	var fetch func(context.Context, int64, []byte) error
	if u.Scheme == "s3" {
		client, err := r.s3()
		if err != nil {
			return nil, err
		}
		fetch = s3Fetch(client, u.Host, strings.TrimPrefix(u.Path, "/"), o.Version)
	} else {
		fetch = r.httpFetch(o.URL, o.Version, o.Size)
	}
	return newReader(r.cache, r.timeout, key, o.Size, fetch).blob(), nil
}

// httpFetch reads ranges of one version of a URL: If-Range makes a server whose file
// changed answer the whole new file (200) instead of a part of it (206), which is refused.
func (r *Remote) httpFetch(u, version string, size int64) func(context.Context, int64, []byte) error {
	return func(ctx context.Context, off int64, buf []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		end := off + int64(len(buf)) - 1
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
		req.Header.Set("If-Range", version)
		resp, err := r.http.Do(req)
		if err != nil {
			return unavailable(err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusPartialContent:
		case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPreconditionFailed:
			return &ChangedError{What: u}
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			return unavailable(fmt.Errorf("%s answered %s", u, resp.Status))
		default:
			return &RemoteError{Msg: fmt.Sprintf("%s answered %s to a read of bytes %d-%d", u, resp.Status, off, end)}
		}
		want := fmt.Sprintf("bytes %d-%d/%d", off, end, size)
		if cr := resp.Header.Get("Content-Range"); cr != want {
			return &ChangedError{What: u + " (it answered " + strconv.Quote(cr) + " for " + want + ")"}
		}
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return unavailable(fmt.Errorf("reading bytes %d-%d of %s: %w", off, end, u, err))
		}
		return nil
	}
}
