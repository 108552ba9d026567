package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/server"
	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/views"
)

// chromiumPath is where CI installs Chromium; the test is skipped when it is absent.
const chromiumPath = "/usr/bin/chromium"

// modelsDir holds the fixtures and the facts torch wrote about them.
var modelsDir = filepath.Join("..", "..", "testdata", "models")

// uploadFixture is the file the test uploads: a Lightning-style checkpoint whose root holds a
// state dict, scalars and nested dicts.
const uploadFixture = "lightning_style.ckpt"

// expectedTensor is what testdata/models/expected.json says about one tensor.
type expectedTensor struct {
	Path          string  `json:"path"`
	DType         string  `json:"dtype"`
	Shape         []int64 `json:"shape"`
	Strides       []int64 `json:"strides"`
	StorageOffset int64   `json:"storage_offset"`
	Numel         int64   `json:"numel"`
}

type expectedFile struct {
	Format  string           `json:"format"`
	Tensors []expectedTensor `json:"tensors"`
	// Refs are the places holding an object already held elsewhere (Python's identity),
	// each with the path of its first place.
	Refs map[string]string `json:"refs"`
}

// tensorPlaces counts the places holding a tensor: each tensor, and each second place of
// the same tensor object (a tie by assignment, which the page counts as a tied tensor).
func (f expectedFile) tensorPlaces() int {
	paths := map[string]bool{}
	for _, x := range f.Tensors {
		paths[x.Path] = true
	}
	n := len(f.Tensors)
	for _, target := range f.Refs {
		if paths[target] {
			n++
		}
	}
	return n
}

// readExpected returns the facts about one fixture, skipping the test when they are not
// there yet.
func readExpected(t *testing.T, name string) expectedFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("testdata/models/expected.json is not there yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatalf("parse expected.json: %v", err)
	}
	raw, ok := all[name]
	if !ok {
		t.Skipf("expected.json has no entry for %s yet", name)
	}
	var f expectedFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("parse expected.json[%q]: %v", name, err)
	}
	return f
}

// startServer runs the real server on a loopback port with a fresh data directory and the
// bundled examples, until the test ends.
func startServer(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	examples, err := store.ImportExamples(ctx, st, modelsDir)
	if err != nil {
		t.Logf("no examples: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Config{}, server.Deps{Store: st, Examples: examples, Logger: logger})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// browser starts headless Chromium with a fresh profile and no network beyond the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// screenshots saves full-page PNGs to a temporary directory, and also to
// $CKPTVIEW_SCREENSHOTS when it is set.
type screenshots struct {
	t    *testing.T
	ctx  context.Context
	dirs []string
}

func newScreenshots(t *testing.T, ctx context.Context) *screenshots {
	dirs := []string{t.TempDir()}
	if d := os.Getenv("CKPTVIEW_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	return &screenshots{t: t, ctx: ctx, dirs: dirs}
}

// take saves the whole page.
func (s *screenshots) take(name string) { s.t.Helper(); s.save(name, chromedp.FullScreenshot(100)) }

// takeViewport saves what the window shows.
func (s *screenshots) takeViewport(name string) {
	s.t.Helper()
	s.save(name, chromedp.CaptureScreenshot())
}

func (s *screenshots) save(name string, shot chromedp.Action[[]byte]) {
	s.t.Helper()
	png, err := chromedp.Run(s.ctx, shot)
	if err != nil {
		s.t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, d := range s.dirs {
		p := filepath.Join(d, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			s.t.Fatal(err)
		}
		s.t.Logf("screenshot: %s", p)
	}
}

// pageProblems collects what the page reports as going wrong: uncaught exceptions,
// console errors and Content-Security-Policy violations.
type pageProblems struct {
	mu   sync.Mutex
	list []string
}

func (p *pageProblems) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				msg = "console.error"
				for _, a := range ev.Args {
					msg += " " + string(a.Value)
				}
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				msg = "log: " + ev.Entry.Text
			}
		}
		if msg != "" {
			p.mu.Lock()
			p.list = append(p.list, msg)
			p.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
}

func (p *pageProblems) check(t *testing.T, where string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.list {
		t.Errorf("%s: the page reported: %s", where, m)
	}
	p.list = nil
}

// step runs browser actions with a time limit, failing the test with what was being done.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// TestUploadTreeTensor uploads a fixture through the file input, lands on its page, expands
// the state dict in the raw tree (htmx), opens a tensor and checks what the page says against
// what torch said about the file.
func TestUploadTreeTensor(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	want := readExpected(t, uploadFixture)
	fixture, err := filepath.Abs(filepath.Join(modelsDir, uploadFixture))
	if err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(fixture); err != nil {
		t.Fatalf("fixture %s: %v", uploadFixture, err)
	} else {
		fi, _ := f.Stat()
		_, err := loader.Open(f, fi.Size(), loader.Options{})
		f.Close()
		if err != nil {
			t.Fatalf("the loader cannot open %s: %v", uploadFixture, err)
		}
	}
	byPath := map[string]expectedTensor{}
	for _, x := range want.Tensors {
		byPath[x.Path] = x
	}

	base := startServer(t)
	ctx := browser(t)
	var problems pageProblems
	problems.listen(t, ctx)
	shots := newScreenshots(t, ctx)

	// Home: the upload form and the examples.
	step(t, ctx, "open the home page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="dropzone"]`)),
	)
	shots.take("1-home")

	// Upload through the file input: app.js sends it with XHR and follows the answer.
	step(t, ctx, "upload "+uploadFixture,
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{fixture}),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="summary"]`)),
	)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`/c/[0-9a-f]{64}$`).MatchString(loc) {
		t.Errorf("after the upload the browser is at %s, want /c/<sha256>", loc)
	}
	if got := text(t, ctx, `[data-testid="file-name"]`); got != uploadFixture {
		t.Errorf("file name on the checkpoint page = %q, want %q", got, uploadFixture)
	}
	if got := text(t, ctx, `[data-testid="format"]`); got != want.Format {
		t.Errorf("format on the checkpoint page = %q, want %q", got, want.Format)
	}
	if got := text(t, ctx, `[data-testid="tensor-count"]`); got != views.Thousands(int64(want.tensorPlaces())) {
		t.Errorf("tensor count on the checkpoint page = %q, want %d", got, want.tensorPlaces())
	}
	shots.take("2-checkpoint")
	problems.check(t, "checkpoint page")

	// The module tree opens all the way with "expand all" (app.js).
	step(t, ctx, "expand the module tree",
		chromedp.Click(chromedp.CSS(`[data-action="expand-all"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="module-leaf"] a`)),
	)
	leaves, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="module-leaf"][data-prefix$=".weight"]').length`))
	if err != nil {
		t.Fatal(err)
	}
	if leaves != 2 {
		t.Errorf("module tree shows %d .weight leaves, want 2 (model.0.weight, model.2.weight)", leaves)
	}
	shots.take("2b-modules-expanded")

	// Search as one types: "/" focuses the box (app.js), htmx asks for the results.
	step(t, ctx, "press / to search",
		chromedp.Click(chromedp.CSS(`[data-testid="file-name"]`)), // focus leaves any input
		chromedp.KeyEvent("/"),
	)
	focused, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.getAttribute("data-testid") || document.activeElement.tagName`))
	if err != nil {
		t.Fatal(err)
	}
	if focused != "search-input" {
		t.Fatalf("after /, the focus is on %q, not the search box", focused)
	}
	// (chromedp sends the "/" as a separate character event, which a real keyboard's
	// cancelled keydown does not produce: clear it)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.querySelector('[data-testid="search-input"]').value = "") === ""`)); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "type a query",
		chromedp.KeyEvent("model.*.weight"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="search-rows"] li[data-kind="tensor"]`)),
	)
	found, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('[data-testid="search-rows"] [data-testid="tree-row"]')).map(r => r.dataset.path)`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(found, " ") != "/state_dict/model.0.weight /state_dict/model.2.weight" {
		t.Errorf("search for model.*.weight shows %v", found)
	}
	shots.take("2c-search")

	// The other keys: Escape leaves the box, ? lists the keys, arrows move through the tree.
	step(t, ctx, "? lists the keys",
		chromedp.KeyEvent(kb.Escape),
		chromedp.KeyEvent("?"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="key-help"]`)),
	)
	shots.take("2d-keys")
	step(t, ctx, "Escape closes the list, arrows move",
		chromedp.KeyEvent(kb.Escape),
		chromedp.WaitNotPresent(chromedp.CSS(`[data-testid="key-help"]`)),
		chromedp.KeyEvent(kb.ArrowDown),
		chromedp.KeyEvent(kb.ArrowDown),
	)
	moved, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.activeElement.closest('[data-testid="tree-row"], [data-testid="module-row"]') || {dataset: {}}).dataset.path || (document.activeElement.closest('[data-prefix]') || {dataset: {}}).dataset.prefix || document.activeElement.tagName`))
	if err != nil {
		t.Fatal(err)
	}
	if moved == "" || moved == "BODY" || moved == "INPUT" {
		t.Errorf("after two ↓ the focus is on %q, not a row of the tree", moved)
	}

	// The raw tree: expand /state_dict in place.
	const sd = `li[data-path="/state_dict"]`
	step(t, ctx, "switch to the raw tree",
		chromedp.Click(chromedp.CSS(`[data-testid="tab-raw"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="raw-tree"] `+sd)),
	)
	step(t, ctx, "expand /state_dict",
		chromedp.Click(chromedp.CSS(sd+` > details > summary > .type`)),
		chromedp.WaitVisible(chromedp.CSS(sd+` .kids li[data-kind="tensor"]`)),
	)
	shots.take("3-expanded")
	problems.check(t, "expanded tree")

	tensorPath, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sd+` .kids li[data-kind="tensor"]`), "data-path"))
	if err != nil || !tensorPath.Exists {
		t.Fatalf("read the path of the first tensor row: %v", err)
	}
	x, ok := byPath[tensorPath.Value]
	if !ok {
		t.Fatalf("the first tensor row is %q, which expected.json does not list as a tensor", tensorPath.Value)
	}
	if got := text(t, ctx, sd+` .kids li[data-kind="tensor"] [data-testid="row-shape"]`); got != views.FormatShape(x.Shape) {
		t.Errorf("row shape of %s = %q, want %q", x.Path, got, views.FormatShape(x.Shape))
	}

	// The tensor's own page.
	step(t, ctx, "open the tensor page of "+x.Path,
		chromedp.Click(chromedp.CSS(sd+` .kids li[data-kind="tensor"] [data-testid="row-key"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="tensor-meta"]`)),
	)
	for id, want := range map[string]string{
		"tensor-dtype":          x.DType,
		"tensor-shape":          views.FormatShape(x.Shape),
		"tensor-strides":        views.FormatShape(x.Strides),
		"tensor-storage-offset": views.Thousands(x.StorageOffset),
		"tensor-numel":          views.Thousands(x.Numel),
		"node-path":             x.Path,
	} {
		if got := text(t, ctx, `[data-testid="`+id+`"]`); got != want {
			t.Errorf("tensor page of %s: %s = %q, want %q", x.Path, id, got, want)
		}
	}
	if got := text(t, ctx, `[data-testid="breadcrumbs"]`); !strings.Contains(got, uploadFixture) || !strings.Contains(got, "state_dict") {
		t.Errorf("breadcrumbs = %q, want the file and state_dict", got)
	}
	shots.take("4-tensor")
	problems.check(t, "tensor page")
}

// writeTemp writes a file for the browser to upload and returns its absolute path.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUploadErrorAndPaging uploads a broken pickle that would run a command (the page must
// say so without leaving the home page), then a list of 450 items, whose rows come 200 at a
// time through the "show more" row.
func TestUploadErrorAndPaging(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	// Protocol 0: posix.system('touch x') called, then the stream ends without STOP.
	broken := writeTemp(t, "broken.pkl", []byte("cposix\nsystem\n(S'touch x'\ntR"))
	// Protocol 2: a list of 450 small ints.
	list := []byte("\x80\x02](")
	for i := range 450 {
		list = append(list, 'K', byte(i%256))
	}
	list = append(list, "e."...)
	items := writeTemp(t, "items.pkl", list)
	if _, err := loader.Open(bytes.NewReader(list), int64(len(list)), loader.Options{}); err != nil {
		t.Skipf("the loader cannot open a plain list yet: %v", err)
	}

	base := startServer(t)
	ctx := browser(t)
	var problems pageProblems
	problems.listen(t, ctx)
	shots := newScreenshots(t, ctx)

	step(t, ctx, "upload a broken pickle",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="dropzone"]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{broken}),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="upload-error"] [data-testid="finding"]`)),
	)
	msg := text(t, ctx, `[data-testid="upload-error"]`)
	if !strings.Contains(msg, "this file calls posix.system('touch x') when unpickled") {
		t.Errorf("upload error = %q, want the posix.system call it would make, in words", msg)
	}
	shots.take("5-upload-error")
	// The browser logs the 422 response as a failed resource; that is the expected answer.
	problems.mu.Lock()
	problems.list = slices.DeleteFunc(problems.list, func(m string) bool { return strings.Contains(m, "422") })
	problems.mu.Unlock()
	problems.check(t, "upload error")

	step(t, ctx, "upload a list of 450 items",
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{items}),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="raw-tree"] [data-testid="show-more"]`)),
	)
	rows := func() int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="tree"] > [data-testid="tree-row"]').length`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != 200 {
		t.Errorf("first page shows %d rows, want 200", n)
	}
	if got := text(t, ctx, `[data-testid="show-more"]`); got != "show more (250 left)" {
		t.Errorf("show more row = %q, want %q", got, "show more (250 left)")
	}
	step(t, ctx, "show more",
		chromedp.Click(chromedp.CSS(`[data-testid="show-more"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="tree"] > li[data-path="/399"]`)),
	)
	if got := text(t, ctx, `[data-testid="show-more"]`); got != "show more (50 left)" {
		t.Errorf("show more row = %q, want %q", got, "show more (50 left)")
	}
	step(t, ctx, "show the rest",
		chromedp.Click(chromedp.CSS(`[data-testid="show-more"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="tree"] > li[data-path="/449"]`)),
	)
	if n := rows(); n != 450 {
		t.Errorf("after two pages the tree shows %d rows, want 450", n)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="show-more"]').length`)); n != 0 {
		t.Errorf("a show more row is left after the last page")
	}
	step(t, ctx, "narrow screen",
		chromedp.EmulateViewport(390, 844),
		chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`),
	)
	shots.takeViewport("6-paged-narrow")
	problems.check(t, "paging")
}

// statsFixture is a bundled example (imported at startup): a small GPT-like state dict.
const statsFixture = "state_dict.pt"

// TestStatsHistogramDownload opens a tensor page, waits for its statistics to load through
// htmx, checks the histogram and the numbers against what numpy computed, switches to the
// log scale, pages the slice table, fetches the .npy download, then computes every
// tensor's statistics from the checkpoint page and finds the sparklines in the tree.
func TestStatsHistogramDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	data, err := os.ReadFile(filepath.Join(modelsDir, statsFixture))
	if err != nil {
		t.Skipf("fixture %s: %v", statsFixture, err)
	}
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:])
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Skip(err)
	}
	var all map[string]struct {
		Tensors []struct {
			Path  string `json:"path"`
			Numel int64  `json:"numel"`
			Stats struct {
				Count int64    `json:"count"`
				Min   *float64 `json:"min"`
			} `json:"stats"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	want := all[statsFixture].Tensors
	if len(want) == 0 {
		t.Skipf("expected.json has no tensors of %s", statsFixture)
	}

	base := startServer(t)
	ctx := browser(t)
	var problems pageProblems
	problems.listen(t, ctx)
	shots := newScreenshots(t, ctx)

	const tensorPath = "/wte.weight"
	var wte = want[0]
	for _, w := range want {
		if w.Path == tensorPath {
			wte = w
		}
	}
	step(t, ctx, "open the tensor page and wait for its statistics",
		chromedp.Navigate(base+views.NodeURL(id, tensorPath)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="histogram-svg"]`)),
	)
	bins, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="histogram-svg"] g[data-testid="hist-bin"] > title').length`))
	if err != nil {
		t.Fatal(err)
	}
	if bins != 64 {
		t.Errorf("the histogram has %d bins with a tooltip, want 64", bins)
	}
	if got := text(t, ctx, `[data-testid="stat-count"]`); got != views.Thousands(wte.Stats.Count) {
		t.Errorf("finite values on the page = %q, want %d (numpy)", got, wte.Stats.Count)
	}
	if got := text(t, ctx, `[data-testid="hist-min"]`); wte.Stats.Min == nil || got != views.StatNumber(*wte.Stats.Min) {
		t.Errorf("histogram min label = %q, want numpy's min %v", got, wte.Stats.Min)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="stats-placeholder"]').length`)); n != 0 {
		t.Errorf("the placeholder is still on the page after the statistics loaded")
	}
	if got := text(t, ctx, `[data-testid="preview"]`); !strings.HasPrefix(got, "[[") {
		t.Errorf("preview = %.40q, want a nested list", got)
	}
	shots.take("7-tensor-stats")
	problems.check(t, "tensor page with statistics")

	// The .npy download: fetched the way the button would, with its length and magic.
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`[data-testid="download-npy"]`), "href"))
	if err != nil || !href.Exists {
		t.Fatalf("no .npy download button: %v", err)
	}
	type fetched struct {
		Status      int    `json:"status"`
		Length      string `json:"length"`
		Disposition string `json:"disposition"`
		Size        int    `json:"size"`
		Magic       string `json:"magic"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[fetched](`fetch(`+strconv.Quote(href.Value)+`).then(async r => {
		const b = new Uint8Array(await r.arrayBuffer());
		return {status: r.status, length: r.headers.get("content-length"), disposition: r.headers.get("content-disposition"),
			size: b.length, magic: String.fromCharCode(...b.slice(1, 6))};
	})`, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("fetch the .npy download: %v", err)
	}
	if wantSize := 128 + 4*int(wte.Numel); got.Status != 200 || got.Size != wantSize || got.Length != strconv.Itoa(wantSize) || got.Magic != "NUMPY" {
		t.Errorf("the .npy download = %+v, want 200, %d bytes (128 header + float32 data), NUMPY magic", got, wantSize)
	}
	if got.Disposition != `attachment; filename="state_dict__wte.weight.npy"` {
		t.Errorf("the .npy download's Content-Disposition = %q", got.Disposition)
	}

	// Log scale and slice paging are links: the statistics are cached now, so the page
	// renders them at once.
	step(t, ctx, "switch the histogram to log scale",
		chromedp.Click(chromedp.CSS(`[data-testid="hist-log"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="hist-linear"]`)),
	)
	step(t, ctx, "next rows of the slice",
		chromedp.Click(chromedp.CSS(`[data-testid="slice-next-rows"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="slice-prev-rows"]`)),
	)
	if got := text(t, ctx, `[data-testid="slice-label"]`); got != "[32:50, 0:16]" {
		t.Errorf("slice after paging = %q, want [32:50, 0:16]", got)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="hist-linear"]').length`)); n != 1 {
		t.Errorf("paging the slice lost the log scale")
	}
	step(t, ctx, "scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	shots.take("8-tensor-log-slice")
	problems.check(t, "log scale and slice paging")

	// Every tensor of the checkpoint: the button starts the job, htmx polls its progress.
	step(t, ctx, "compute all statistics",
		chromedp.Navigate(base+views.CheckpointURL(id)),
		chromedp.Click(chromedp.CSS(`[data-testid="stats-start"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="stats-done"]`)),
	)
	if got := text(t, ctx, `[data-testid="stats-done"]`); !strings.Contains(got, views.Plural(len(want), "tensor")) {
		t.Errorf("finished job says %q, want all %d tensors", got, len(want))
	}
	step(t, ctx, "reload and expand the tree",
		chromedp.Click(chromedp.CSS(`[data-testid="stats-reload"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="stats-done"]`)),
		chromedp.Click(chromedp.CSS(`[data-action="expand-all"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="module-leaf"] [data-testid="sparkline"]`)),
	)
	sparks, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="module-leaf"] [data-testid="sparkline"]').length`))
	if err != nil {
		t.Fatal(err)
	}
	if sparks != len(want) {
		t.Errorf("the module tree shows %d sparklines, want one per tensor (%d)", sparks, len(want))
	}
	shots.take("9-checkpoint-all-stats")
	problems.check(t, "all statistics")
}

// TestUploadSharded drops a sharded checkpoint's index and shards on the file input at once:
// the browser lands on one checkpoint named after the index, and a tensor's page names the
// shard that holds it.
func TestUploadSharded(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	var files []string
	for _, n := range []string{"model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		p, err := filepath.Abs(filepath.Join(modelsDir, "sharded", n))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	base := startServer(t)
	ctx := browser(t)
	var problems pageProblems
	problems.listen(t, ctx)
	shots := newScreenshots(t, ctx)
	step(t, ctx, "upload the index and its shards",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="dropzone"]`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), files),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="summary"]`)),
	)
	if got := text(t, ctx, `[data-testid="file-name"]`); got != "model.safetensors" {
		t.Errorf("file name = %q, want model.safetensors (the index's)", got)
	}
	if got := text(t, ctx, `[data-testid="format"]`); got != "sharded safetensors" {
		t.Errorf("format = %q, want sharded safetensors", got)
	}
	shots.take("sharded-checkpoint")
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "open a tensor",
		chromedp.Navigate(loc+"/n/wte.weight"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="storage-file"]`)),
	)
	if got := text(t, ctx, `[data-testid="storage-file"]`); !strings.HasPrefix(got, "model-0000") {
		t.Errorf("the tensor's shard = %q, want one of the shards", got)
	}
	shots.take("sharded-tensor")
	problems.check(t, "sharded pages")
}
