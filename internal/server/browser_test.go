package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ckptview/ckptview/internal/store"
)

// browserFixture is the file the browser test uploads: a training checkpoint, so the tree
// has containers to open before a tensor shows.
var browserFixtures = []string{
	"../../testdata/models/lightning_style.ckpt",
	"../../testdata/models/state_dict.pt",
}

// findChromium returns the browser to drive, or "" when there is none.
func findChromium() string {
	if p := os.Getenv("CKPTVIEW_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowserUploadTreeTensor drives the real pages in headless Chromium: upload a
// checkpoint with the form's JavaScript, land on its page, open the tree (htmx fragments)
// down to a tensor and open the tensor's page. The page must raise no console error, which
// includes every Content-Security-Policy violation. Screenshots of each step are saved in
// $CKPTVIEW_SCREENSHOTS (default: a ckptview-screenshots folder in the temp dir).
func TestBrowserUploadTreeTensor(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	chromium := findChromium()
	if chromium == "" {
		t.Skip("no chromium installed (set CKPTVIEW_CHROMIUM to a browser binary)")
	}
	fixture := ""
	for _, f := range browserFixtures {
		if _, err := os.Stat(f); err == nil {
			fixture, _ = filepath.Abs(f)
			break
		}
	}
	if fixture == "" {
		t.Skip("no fixture in testdata/models")
	}
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:])

	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, Deps{Store: st, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(s.Close)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)

	shots := os.Getenv("CKPTVIEW_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "ckptview-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := chromedp.NewContext(context.Background(), chromedp.WithAllocatorOptions(
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	))
	defer cancel()
	// Start the browser with the parent context, then bound the steps so a broken page
	// fails the test instead of hanging it.
	if err := chromedp.Do(ctx); err != nil {
		t.Skipf("chromium does not start: %v", err)
	}
	var mu sync.Mutex
	var consoleErrors []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				consoleErrors = append(consoleErrors, m.String())
				mu.Unlock()
			}
		}
	}()
	steps, stop := context.WithTimeout(ctx, 90*time.Second)
	defer stop()

	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(steps, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		p := filepath.Join(shots, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		t.Logf("screenshot: %s", p)
	}

	// 1. Home page, upload through the form's JavaScript (XHR with progress).
	if err := chromedp.Do(steps,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitVisible(`[data-testid=upload-form]`),
	); err != nil {
		t.Fatalf("home page: %v", err)
	}
	shot("1-home")
	if err := chromedp.Do(steps,
		chromedp.SetUploadFiles(`[data-testid=file-input]`, []string{fixture}),
		chromedp.WaitVisible(`[data-testid=summary]`),
	); err != nil {
		t.Fatalf("upload %s: %v", filepath.Base(fixture), err)
	}
	loc, err := chromedp.Run(steps, chromedp.Location())
	if err != nil || !strings.HasSuffix(loc, "/c/"+id) {
		t.Errorf("after the upload the browser is at %q (%v), want /c/%s", loc, err, id)
	}
	name, _ := chromedp.Run(steps, chromedp.Text(`[data-testid=file-name]`))
	if name != filepath.Base(fixture) {
		t.Errorf("checkpoint page names the file %q, want %q", name, filepath.Base(fixture))
	}
	shot("2-checkpoint")

	// 2. The raw tree: open containers (each loads its children as an htmx fragment) until
	// a tensor row shows, then open the tensor's page.
	if err := chromedp.Do(steps,
		chromedp.Navigate(ts.URL+"/c/"+id+"?view=raw"),
		chromedp.WaitVisible(`[data-testid=raw-tree]`),
	); err != nil {
		t.Fatalf("raw tree: %v", err)
	}
	const tensorKey = `[data-testid=tree-row][data-kind=tensor] [data-testid=row-key]`
	for depth := 0; ; depth++ {
		found, err := chromedp.Run(steps, chromedp.Evaluate[bool](`document.querySelector(`+jsString(tensorKey)+`) !== null`))
		if err != nil {
			t.Fatalf("looking for a tensor row: %v", err)
		}
		if found {
			break
		}
		if depth == 8 {
			t.Fatalf("no tensor row after opening %d levels of the tree", depth)
		}
		// Open the first closed container and wait for its rows to replace "loading…".
		opened, err := chromedp.Run(steps, chromedp.Evaluate[bool](`(() => {
			const d = document.querySelector('[data-testid=raw-tree] details:not([open])');
			if (!d) return false;
			d.dataset.opened = "yes";
			d.querySelector('summary').click();
			return true;
		})()`))
		if err != nil || !opened {
			t.Fatalf("no container left to open in the tree (%v)", err)
		}
		if err := chromedp.Do(steps, chromedp.WaitNotPresent(`details[data-opened] > ul > .row-loading`)); err != nil {
			t.Fatalf("children fragment did not load: %v", err)
		}
	}
	shot("3-tree")
	if err := chromedp.Do(steps,
		chromedp.Click(tensorKey),
		chromedp.WaitVisible(`[data-testid=tensor-meta]`),
	); err != nil {
		t.Fatalf("tensor page: %v", err)
	}
	dtype, _ := chromedp.Run(steps, chromedp.Text(`[data-testid=tensor-dtype]`))
	shape, _ := chromedp.Run(steps, chromedp.Text(`[data-testid=tensor-shape]`))
	if dtype == "" || shape == "" {
		t.Errorf("tensor page shows dtype %q shape %q, want both", dtype, shape)
	}
	shot("4-tensor")

	mu.Lock()
	defer mu.Unlock()
	for _, m := range consoleErrors {
		t.Errorf("browser console: %s", m)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
