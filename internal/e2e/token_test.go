package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ckptview/ckptview/internal/server"
	"github.com/ckptview/ckptview/internal/store"
)

// startTokenServer runs the real server on a loopback port with an upload token and no
// examples, until the test ends.
func startTokenServer(t *testing.T, token string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{UploadToken: token}, server.Deps{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		st.Close()
	})
	return "http://" + ln.Addr().String()
}

// TestUploadToken drives the upload form of a server that takes uploads only with a token:
// without one the page asks for it, with a wrong one it shows the server's 401, with the
// right one (sent by app.js as a Bearer header) the file is uploaded and opened.
func TestUploadToken(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	const token = "correct horse battery staple"
	data, err := os.ReadFile(filepath.Join(modelsDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	// A fresh file name each time, so the input fires a change event.
	files := []string{writeTemp(t, "a.pt", data), writeTemp(t, "b.pt", data), writeTemp(t, "c.pt", data)}

	base := startTokenServer(t, token)
	ctx := browser(t)
	var problems pageProblems
	problems.listen(t, ctx)

	step(t, ctx, "open the home page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="token-input"]`)),
	)
	step(t, ctx, "upload without a token",
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{files[0]}),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="upload-error"]`)),
	)
	if msg := text(t, ctx, `[data-testid="upload-error"]`); !strings.Contains(msg, "Enter the upload token") {
		t.Errorf("upload without a token: error = %q, want it to ask for the token", msg)
	}

	step(t, ctx, "upload with a wrong token",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="token-input"]`), "wrong"),
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{files[1]}),
		chromedp.Poll[chromedp.Void](`document.querySelector('[data-testid="upload-error"]').textContent.includes("Authorization")`),
	)
	if msg := text(t, ctx, `[data-testid="upload-error"]`); !strings.Contains(msg, "upload token") {
		t.Errorf("upload with a wrong token: error = %q, want the server's message about the upload token", msg)
	}
	// The browser logs the 401 response as a failed resource; that is the expected answer.
	problems.mu.Lock()
	problems.list = slices.DeleteFunc(problems.list, func(m string) bool { return strings.Contains(m, "401") })
	problems.mu.Unlock()

	step(t, ctx, "upload with the token",
		chromedp.SetValue(chromedp.CSS(`[data-testid="token-input"]`), token),
		chromedp.SetUploadFiles(chromedp.CSS(`#upload-file`), []string{files[2]}),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="summary"]`)),
	)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	loc, err := chromedp.Run(sctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(loc, "/c/") {
		t.Errorf("after an upload with the token the page is %s, want the checkpoint's page", loc)
	}
	problems.check(t, "upload token")
}
