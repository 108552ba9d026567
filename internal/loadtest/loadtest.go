// Package loadtest drives a running ckptview server on loopback with many concurrent
// clients, and reports throughput, latency and answers per kind of request and the
// server's peak memory.
//
// The clients upload (the fixtures of testdata/models, the hostile files of
// testdata/hostile, damaged copies of both, and files at the loader's limits), browse the
// trees (checkpoint and node pages, the node API, children fragments), compute statistics
// of the tensors they find, and download values as .npy, raw bytes and JSON. The run is
// bounded in time and in requests and stops by itself. scripts/loadtest runs it.
package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptview/ckptview/internal/views"
)

// Kind is a kind of request the clients make.
type Kind string

// The kinds of request, in the order the report lists them.
const (
	UploadFixture  Kind = "upload fixture"
	UploadHostile  Kind = "upload hostile"
	UploadDamaged  Kind = "upload damaged"
	UploadAtLimits Kind = "upload at limits"
	CheckpointPage Kind = "checkpoint page"
	NodePage       Kind = "node page"
	NodeAPI        Kind = "node api"
	ChildrenFrag   Kind = "children fragment"
	StatsAPI       Kind = "stats api"
	DownloadNPY    Kind = "download npy"
	DownloadRaw    Kind = "download raw"
	DownloadJSON   Kind = "download json"
)

// kinds lists every kind with its share of the requests (out of 100) and the 4xx statuses
// it may expect: 422 for a file that cannot be read, or values that cannot be given (the
// statistics of a str array, the .npy of an object array).
var kinds = []struct {
	kind     Kind
	weight   int
	expected []int
}{
	{UploadFixture, 5, []int{422}},
	{UploadHostile, 5, []int{422}},
	{UploadDamaged, 5, []int{422}},
	{UploadAtLimits, 1, []int{422}},
	{CheckpointPage, 10, nil},
	{NodePage, 15, nil},
	{NodeAPI, 20, nil},
	{ChildrenFrag, 10, nil},
	{StatsAPI, 14, []int{422}},
	{DownloadNPY, 5, []int{422}},
	{DownloadRaw, 5, []int{422}},
	{DownloadJSON, 5, []int{422}},
}

// Config is one load test.
type Config struct {
	// BaseURL is the server, "http://127.0.0.1:port". Only loopback addresses are accepted.
	BaseURL string
	// PID is the server's process, whose memory is reported; 0 reports none.
	PID int
	// Clients is how many clients send requests at once; Duration how long they go on.
	Clients  int
	Duration time.Duration
	// MaxRequests stops the run early once that many requests were made; 0 means 10 million.
	MaxRequests int64
	// ModelsDir and HostileDir hold the files uploaded (testdata/models, testdata/hostile).
	ModelsDir  string
	HostileDir string
	// Limits are the server's loader limits, to make files at them.
	Limits Limits
	// Mix is the share of the kinds of request: "" for the usual mix, "limits" to make
	// half the requests uploads of new files at the loader's limits (the worst case for
	// memory), the rest as usual.
	Mix string
	// Seed makes the run's choices repeatable.
	Seed uint64
	// Logf receives progress lines; none if nil.
	Logf func(format string, args ...any)
}

// result is one request's outcome.
type result struct {
	kind   Kind
	status int // 0 when the request failed before an answer
	took   time.Duration
	err    error
}

// target is a node of an uploaded checkpoint that the clients browse.
type target struct {
	id, path string
	tensor   bool
}

// Run makes the load and reports it.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := checkLoopback(cfg.BaseURL); err != nil {
		return nil, err
	}
	if cfg.Clients <= 0 || cfg.Duration <= 0 {
		return nil, errors.New("loadtest: need at least one client and a positive duration")
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 10_000_000
	}
	weights := map[Kind]int{}
	total := 0
	for _, k := range kinds {
		weights[k.kind] = k.weight
		total += k.weight
	}
	switch cfg.Mix {
	case "":
	case "limits":
		weights[UploadAtLimits] = total - weights[UploadAtLimits]
	default:
		return nil, fmt.Errorf("loadtest: unknown mix %q (want \"\" or \"limits\")", cfg.Mix)
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	fixtures, err := readDir(cfg.ModelsDir)
	if err != nil {
		return nil, fmt.Errorf("loadtest: fixtures: %w", err)
	}
	hostile, err := readDir(cfg.HostileDir)
	if err != nil {
		return nil, fmt.Errorf("loadtest: hostile files: %w", err)
	}
	markers, err := hostileMarkers(cfg.HostileDir)
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	for _, m := range markers {
		os.Remove(m)
	}
	logf("making files at the loader's limits %+v", cfg.Limits)
	limits := limitFiles(cfg.Limits)

	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients + 4, DisableCompression: true},
		Timeout:   5 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	lt := &loadTest{cfg: cfg, client: client, weights: weights}
	for _, w := range weights {
		lt.total += w
	}

	rep := &Report{Clients: cfg.Clients, Duration: cfg.Duration, BaseURL: cfg.BaseURL, PID: cfg.PID, Mix: cfg.Mix}
	if cfg.PID > 0 {
		m, err := ReadMemory(cfg.PID)
		if err != nil {
			return nil, err
		}
		rep.BaselineRSS = m.RSS
	}

	// Setup: every fixture and hostile file once; the trees of those that open are walked
	// for the pages, tensors and downloads the clients ask for.
	logf("uploading %d fixtures and %d hostile files", len(fixtures), len(hostile))
	var ids []string
	for _, f := range append(append([]file(nil), fixtures...), hostile...) {
		id, _, err := lt.upload(ctx, f.name, f.data)
		if err != nil {
			return nil, fmt.Errorf("loadtest: setup upload of %s: %w", f.name, err)
		}
		if id != "" {
			ids = append(ids, id)
		}
	}
	var targets []target
	for _, id := range ids {
		found, err := lt.discover(ctx, id, 300)
		if err != nil {
			return nil, fmt.Errorf("loadtest: walking %s: %w", id, err)
		}
		targets = append(targets, found...)
	}
	var tensors []target
	for _, t := range targets {
		if t.tensor {
			tensors = append(tensors, t)
		}
	}
	rep.Setup = fmt.Sprintf("%d fixtures and %d hostile files uploaded, %d opened; %d nodes and %d tensors found to browse",
		len(fixtures), len(hostile), len(ids), len(targets), len(tensors))
	logf("%s", rep.Setup)
	if len(tensors) == 0 {
		return nil, errors.New("loadtest: no tensors found in the fixtures")
	}

	// Load.
	logf("%d clients for %v", cfg.Clients, cfg.Duration)
	lctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	results := make(chan result, 4096)
	var made atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range cfg.Clients {
		r := rand.New(rand.NewPCG(cfg.Seed, uint64(c)))
		wg.Go(func() {
			for lctx.Err() == nil && made.Add(1) <= cfg.MaxRequests {
				res := lt.one(lctx, r, fixtures, hostile, limits, targets, tensors)
				if lctx.Err() != nil && res.err != nil {
					return // cut by the end of the run, not the server's doing
				}
				results <- res
			}
		})
	}
	collected := make(chan []result)
	go func() {
		var all []result
		for r := range results {
			all = append(all, r)
		}
		collected <- all
	}()
	wg.Wait()
	rep.Elapsed = time.Since(start)
	close(results)
	rep.add(<-collected)

	if cfg.PID > 0 {
		m, err := ReadMemory(cfg.PID)
		if err != nil {
			return nil, err
		}
		rep.PeakRSS, rep.EndRSS = m.HWM, m.RSS
	}
	for _, m := range markers {
		if _, err := os.Stat(m); err == nil {
			rep.Markers = append(rep.Markers, m)
		}
	}
	return rep, nil
}

// checkLoopback refuses to load anything but this machine.
func checkLoopback(base string) error {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" {
		return fmt.Errorf("loadtest: base URL %q: want http://127.0.0.1:port", base)
	}
	switch u.Hostname() {
	case "127.0.0.1", "::1", "localhost":
		return nil
	}
	return fmt.Errorf("loadtest: %s is not a loopback address: the load test runs on this machine only", u.Host)
}

type loadTest struct {
	cfg     Config
	client  *http.Client
	weights map[Kind]int
	total   int
}

// one makes one request of a kind drawn by weight.
func (lt *loadTest) one(ctx context.Context, r *rand.Rand, fixtures, hostile, limits []file, targets, tensors []target) result {
	n := r.IntN(lt.total)
	var kind Kind
	for _, k := range kinds {
		if n < lt.weights[k.kind] {
			kind = k.kind
			break
		}
		n -= lt.weights[k.kind]
	}
	pick := func(ts []target) target { return ts[r.IntN(len(ts))] }
	var method, path string
	var body []byte
	switch kind {
	case UploadFixture:
		f := fixtures[r.IntN(len(fixtures))]
		method, path, body = http.MethodPost, uploadPath(f.name), f.data
	case UploadHostile:
		f := hostile[r.IntN(len(hostile))]
		method, path, body = http.MethodPost, uploadPath(f.name), f.data
	case UploadDamaged:
		all := append(fixtures[:len(fixtures):len(fixtures)], hostile...)
		f := damaged(all[r.IntN(len(all))], r)
		method, path, body = http.MethodPost, uploadPath(f.name), f.data
	case UploadAtLimits:
		f := limits[r.IntN(len(limits))]
		method, path, body = http.MethodPost, uploadPath(f.name), fresh(f, r)
	case CheckpointPage:
		t := pick(targets)
		path = views.CheckpointURL(t.id)
		if r.IntN(4) == 0 {
			path += "?view=raw"
		}
	case NodePage:
		t := pick(targets)
		path = views.NodeURL(t.id, t.path)
	case NodeAPI:
		t := pick(targets)
		path = "/api/checkpoints/" + t.id + "/node?path=" + url.QueryEscape(t.path)
	case ChildrenFrag:
		t := pick(targets)
		path = "/c/" + t.id + "/fragment/children?path=" + url.QueryEscape(t.path)
	case StatsAPI:
		t := pick(tensors)
		path = "/api/checkpoints/" + t.id + "/stats?path=" + url.QueryEscape(t.path)
	case DownloadNPY, DownloadRaw:
		t := pick(tensors)
		format := "npy"
		if kind == DownloadRaw {
			format = "raw"
		}
		path = "/api/checkpoints/" + t.id + "/download?format=" + format + "&path=" + url.QueryEscape(t.path)
	case DownloadJSON:
		t := pick(targets)
		path = "/api/checkpoints/" + t.id + "/download?format=json&limit=65536&path=" + url.QueryEscape(t.path)
	}
	if method == "" {
		method = http.MethodGet
	}
	status, took, err := lt.do(ctx, method, path, body, nil)
	return result{kind: kind, status: status, took: took, err: err}
}

func uploadPath(name string) string { return "/api/checkpoints?name=" + url.QueryEscape(name) }

// do sends one request and reads the whole answer (into into, if set), timing both.
func (lt *loadTest) do(ctx context.Context, method, path string, body []byte, into *bytes.Buffer) (int, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, lt.cfg.BaseURL+path, rd)
	if err != nil {
		return 0, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	start := time.Now()
	resp, err := lt.client.Do(req)
	if err != nil {
		return 0, time.Since(start), err
	}
	defer resp.Body.Close()
	w := io.Discard
	if into != nil {
		w = into
	}
	_, err = io.Copy(w, resp.Body)
	return resp.StatusCode, time.Since(start), err
}

// upload sends a file during setup and returns its id if it opened.
func (lt *loadTest) upload(ctx context.Context, name string, data []byte) (string, int, error) {
	var buf bytes.Buffer
	status, _, err := lt.do(ctx, http.MethodPost, uploadPath(name), data, &buf)
	if err != nil {
		return "", 0, err
	}
	switch status {
	case http.StatusCreated:
		var up struct{ ID string }
		if err := json.Unmarshal(buf.Bytes(), &up); err != nil || up.ID == "" {
			return "", status, fmt.Errorf("201 without an id: %.200s", buf.String())
		}
		return up.ID, status, nil
	case http.StatusUnprocessableEntity:
		return "", status, nil
	}
	return "", status, fmt.Errorf("status %d: %.300s", status, buf.String())
}

// discover walks a checkpoint's tree through the node API, breadth first, and returns up to
// max of its nodes.
func (lt *loadTest) discover(ctx context.Context, id string, max int) ([]target, error) {
	type child struct{ Path, Kind string }
	var out []target
	queue := []string{""}
	out = append(out, target{id: id, path: ""})
	for len(queue) > 0 && len(out) < max {
		p := queue[0]
		queue = queue[1:]
		var buf bytes.Buffer
		status, _, err := lt.do(ctx, http.MethodGet, "/api/checkpoints/"+id+"/node?limit=100&path="+url.QueryEscape(p), nil, &buf)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("node %q: status %d: %.200s", p, status, buf.String())
		}
		var n struct{ Children []child }
		if err := json.Unmarshal(buf.Bytes(), &n); err != nil {
			return nil, err
		}
		for _, c := range n.Children {
			if len(out) >= max {
				break
			}
			tensor := c.Kind == "tensor" || c.Kind == "ndarray"
			out = append(out, target{id: id, path: c.Path, tensor: tensor})
			if !tensor && c.Kind != "ref" {
				queue = append(queue, c.Path)
			}
		}
	}
	return out, nil
}

// Report is what a load test measured.
type Report struct {
	BaseURL  string
	PID      int
	Clients  int
	Duration time.Duration
	Mix      string
	Elapsed  time.Duration
	Setup    string
	Kinds    []KindReport
	Overall  KindReport
	// Memory of the server in bytes: RSS before the setup uploads, its peak (VmHWM) over
	// the whole run, and RSS at the end.
	BaselineRSS, PeakRSS, EndRSS int64
	// Markers lists the files hostile payloads would have created that exist after the run.
	Markers []string
}

// KindReport sums up the requests of one kind.
type KindReport struct {
	Kind     Kind
	Requests int
	P50, P99 time.Duration
	Max      time.Duration
	OK       int         // 2xx and 3xx
	Expected map[int]int // the 4xx this kind expects, by status
	// Unexpected counts other 4xx by status; Errors counts 5xx and failed requests.
	Unexpected map[int]int
	Errors     int
	FirstError string
}

// Failures is the number of requests that count against the server: 5xx, failed requests
// and 4xx that the kind does not expect.
func (r *Report) Failures() int {
	n := r.Overall.Errors
	for _, c := range r.Overall.Unexpected {
		n += c
	}
	return n
}

func (r *Report) add(results []result) {
	byKind := map[Kind][]result{}
	for _, res := range results {
		byKind[res.kind] = append(byKind[res.kind], res)
	}
	r.Kinds = nil
	for _, k := range kinds {
		r.Kinds = append(r.Kinds, summarize(k.kind, byKind[k.kind], k.expected))
	}
	var all []result
	for _, k := range kinds {
		all = append(all, byKind[k.kind]...)
	}
	r.Overall = summarize("overall", all, nil)
	// Overall, a 4xx is expected if its kind expected it.
	r.Overall.Expected, r.Overall.Unexpected = map[int]int{}, map[int]int{}
	for _, k := range r.Kinds {
		for s, c := range k.Expected {
			r.Overall.Expected[s] += c
		}
		for s, c := range k.Unexpected {
			r.Overall.Unexpected[s] += c
		}
	}
}

func summarize(kind Kind, results []result, expected []int) KindReport {
	k := KindReport{Kind: kind, Requests: len(results), Expected: map[int]int{}, Unexpected: map[int]int{}}
	took := make([]time.Duration, 0, len(results))
	for _, res := range results {
		took = append(took, res.took)
		switch {
		case res.err != nil || res.status >= 500 || res.status == 0:
			k.Errors++
			if k.FirstError == "" {
				k.FirstError = fmt.Sprintf("status %d, %v", res.status, res.err)
			}
		case res.status >= 400:
			if contains(expected, res.status) {
				k.Expected[res.status]++
			} else {
				k.Unexpected[res.status]++
			}
		default:
			k.OK++
		}
	}
	k.P50, k.P99, k.Max = percentile(took, 0.50), percentile(took, 0.99), percentile(took, 1)
	return k
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// percentile is the q-th quantile of d by the nearest-rank method; it sorts d.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	rank := int(q*float64(len(d))+0.999999) - 1
	return d[min(max(rank, 0), len(d)-1)]
}

// String is the report as a table.
func (r *Report) String() string {
	var b strings.Builder
	secs := r.Elapsed.Seconds()
	mix := "the usual mix"
	if r.Mix != "" {
		mix = "mix " + r.Mix
	}
	fmt.Fprintf(&b, "ckptview load test: %d clients for %v, %s, against %s (server pid %d)\n", r.Clients, r.Duration, mix, r.BaseURL, r.PID)
	fmt.Fprintf(&b, "setup: %s\n\n", r.Setup)
	fmt.Fprintf(&b, "%-18s %9s %8s %9s %9s %9s %8s  %-22s %s\n", "kind", "requests", "req/s", "p50", "p99", "max", "ok", "expected 4xx", "errors")
	row := func(k KindReport) {
		fmt.Fprintf(&b, "%-18s %9d %8.1f %9s %9s %9s %8d  %-22s %d", k.Kind, k.Requests, float64(k.Requests)/secs,
			round(k.P50), round(k.P99), round(k.Max), k.OK, statuses(k.Expected), k.Errors)
		if len(k.Unexpected) > 0 {
			fmt.Fprintf(&b, "  UNEXPECTED 4xx %s", statuses(k.Unexpected))
		}
		if k.FirstError != "" {
			fmt.Fprintf(&b, "  first error: %s", k.FirstError)
		}
		b.WriteByte('\n')
	}
	for _, k := range r.Kinds {
		row(k)
	}
	row(r.Overall)
	fmt.Fprintf(&b, "\nelapsed %v; %d requests, %.1f req/s; errors (5xx or failed): %d; unexpected 4xx: %d\n",
		r.Elapsed.Round(time.Millisecond), r.Overall.Requests, float64(r.Overall.Requests)/secs, r.Overall.Errors, r.Failures()-r.Overall.Errors)
	if r.PID > 0 {
		fmt.Fprintf(&b, "server memory: RSS %s at the start, peak RSS (VmHWM) %s = %s over the start, RSS %s at the end\n",
			mb(r.BaselineRSS), mb(r.PeakRSS), mb(r.PeakRSS-r.BaselineRSS), mb(r.EndRSS))
	}
	if len(r.Markers) > 0 {
		fmt.Fprintf(&b, "PAYLOAD MARKERS FOUND: %v\n", r.Markers)
	} else {
		b.WriteString("no hostile payload marker (/tmp/ckptview-hostile-*) appeared\n")
	}
	return b.String()
}

func statuses(m map[int]int) string {
	if len(m) == 0 {
		return "-"
	}
	var keys []int
	for s := range m {
		keys = append(keys, s)
	}
	sort.Ints(keys)
	var parts []string
	for _, s := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", s, m[s]))
	}
	return strings.Join(parts, " ")
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
