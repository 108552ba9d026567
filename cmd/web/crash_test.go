package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMainEnv makes the test binary run as the real program (main), so tests can start it,
// kill it and start it again.
const runMainEnv = "CKPTVIEW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// process is the program running as a child of the test.
type process struct {
	cmd  *exec.Cmd
	addr string
	exit chan error
}

// startProgram runs the program on a loopback port with the data directory dir and waits
// until it listens.
func startProgram(t *testing.T, dir string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-data", dir, "-examples", "", "-log-format", "json")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) { // the developer's settings are not the test's
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, runMainEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exit: make(chan error, 1)}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				listening <- line.Addr
			}
		}
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case p.addr = <-listening:
	case err := <-p.exit:
		t.Fatalf("the program exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the program did not listen within 30s")
	}
	return p
}

func (p *process) url(path string) string { return "http://" + p.addr + path }

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// regularFiles lists the regular files under dir, relative to it.
func regularFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// bigPickle is a pickle of one bytes value of n bytes: it opens, and is large enough to
// upload in halves.
func bigPickle(n int) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x80, 4, 0x8e}) // PROTO 4, BINBYTES8
	binary.Write(&b, binary.LittleEndian, uint64(n))
	for i := range n {
		b.WriteByte(byte(i * 7))
	}
	b.WriteByte('.')
	return b.Bytes()
}

// TestKilledMidUpload kills the program half-way through an upload and starts it again on
// the same data directory: the upload finished before is still there with the same bytes,
// the half upload left nothing anyone can see or that stays on disk, and the program
// serves, uploads included.
func TestKilledMidUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the program three times")
	}
	dir := t.TempDir()
	first, err := os.ReadFile("../../testdata/models/state_dict.pt")
	if err != nil {
		t.Fatal(err)
	}
	second := bigPickle(8 << 20)
	firstID, secondID := sha256hex(first), sha256hex(second)

	p := startProgram(t, dir)
	resp, err := http.Post(p.url("/api/checkpoints?name=state_dict.pt"), "application/octet-stream", bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("first upload = %d, want 201", resp.StatusCode)
	}

	// The second upload sends half its body, which reaches a temporary file; then the
	// program is killed.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/checkpoints?name=big.pkl HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(second))
	half := len(second) / 2
	if _, err := conn.Write(second[:half]); err != nil {
		t.Fatal(err)
	}
	tmpBytes := func() int64 {
		total := int64(0)
		for _, f := range regularFiles(t, filepath.Join(dir, "tmp")) {
			if info, err := os.Stat(filepath.Join(dir, "tmp", f)); err == nil {
				total += info.Size()
			}
		}
		return total
	}
	deadline := time.Now().Add(20 * time.Second)
	for tmpBytes() < int64(half) {
		if time.Now().After(deadline) {
			t.Fatalf("the half upload did not reach the data directory: %v", regularFiles(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exit
	blobs := []string{firstID[:2] + "/" + firstID, firstID[:2] + "/" + firstID + ".json"}
	if got := regularFiles(t, filepath.Join(dir, "blobs")); !equal(got, blobs) {
		t.Errorf("after the kill, blobs/ holds %v, want only the first upload %v", got, blobs)
	}
	t.Logf("left by the killed program in tmp/: %v", regularFiles(t, filepath.Join(dir, "tmp")))

	p = startProgram(t, dir)
	if got := regularFiles(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Errorf("after the restart tmp/ still holds %v, want it cleaned", got)
	}
	if got := regularFiles(t, filepath.Join(dir, "blobs")); !equal(got, blobs) {
		t.Errorf("after the restart blobs/ holds %v, want only %v", got, blobs)
	}
	stored, err := os.ReadFile(filepath.Join(dir, "blobs", firstID[:2], firstID))
	if err != nil || sha256hex(stored) != firstID {
		t.Errorf("the first upload's blob is gone or altered after the kill (err %v)", err)
	}
	for _, tc := range []struct {
		target string
		want   int
	}{
		{"/api/checkpoints/" + firstID, http.StatusOK},
		{"/c/" + firstID, http.StatusOK},
		{"/api/checkpoints/" + firstID + "/download?path=/wte.weight&format=npy", http.StatusOK},
		{"/api/checkpoints/" + secondID, http.StatusNotFound},
		{"/api/checkpoints/" + sha256hex(second[:half]), http.StatusNotFound},
		{"/", http.StatusOK},
	} {
		resp, err := http.Get(p.url(tc.target))
		if err != nil {
			t.Fatalf("GET %s after the restart: %v", tc.target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s after the restart = %d %.200s, want %d", tc.target, resp.StatusCode, body, tc.want)
		}
		if tc.target == "/api/checkpoints/"+firstID {
			var ck struct {
				Name string
				Size int64
			}
			json.Unmarshal(body, &ck)
			if ck.Name != "state_dict.pt" || ck.Size != int64(len(first)) {
				t.Errorf("the first upload after the restart is %+v, want state_dict.pt of %d bytes", ck, len(first))
			}
		}
	}
	resp, err = http.Post(p.url("/api/checkpoints?name=big.pkl"), "application/octet-stream", bytes.NewReader(second))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("the second upload, sent again after the restart = %d, want 201", resp.StatusCode)
	}

	// A graceful stop leaves no temporary file either.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exit:
		if err != nil {
			t.Errorf("the program stopped with %v after SIGTERM, want a clean exit", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the program did not stop within 30s of SIGTERM")
	}
	if got := regularFiles(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Errorf("after a graceful stop tmp/ holds %v", got)
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
