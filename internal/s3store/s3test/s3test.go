// Package s3test runs a real S3 server on loopback for tests: versitygw over a temporary
// directory, which checks request signatures, so authentication bugs show.
//
// The binary is $CKPTVIEW_VERSITYGW, else versitygw on $PATH or in $(go env GOPATH)/bin
// (.ci/run installs it: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
// Without it a test is skipped, except under CI (or with $CKPTVIEW_VERSITYGW set, as .ci/run
// sets it), where it fails.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the servers started here.
const (
	AccessKey = "ckptview-test"
	SecretKey = "ckptview-test-secret-0123456789"
)

// Server is one versitygw process. Its bucket directories live under Root.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Root     string
	addr     string
	bin      string
	t        testing.TB

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Binary finds versitygw, or skips the test (fails it under CI).
func Binary(t testing.TB) string {
	t.Helper()
	if env := os.Getenv("CKPTVIEW_VERSITYGW"); env != "" {
		if st, err := os.Stat(env); err != nil || st.IsDir() {
			t.Fatalf("CKPTVIEW_VERSITYGW=%s is not a versitygw binary: %v", env, err)
		}
		return env
	}
	var candidates []string
	if p, err := exec.LookPath("versitygw"); err == nil {
		candidates = append(candidates, p)
	}
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		candidates = append(candidates, filepath.Join(string(trimNL(gp)), "bin", "versitygw"))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	msg := "no versitygw to run a real S3 server: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 (or set CKPTVIEW_VERSITYGW)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// Start runs a server on a free loopback port with the given buckets; it is stopped when
// the test ends.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin := Binary(t)
	root := t.TempDir()
	for _, b := range buckets {
		if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Endpoint: "http://" + addr, Root: root, addr: addr, bin: bin, t: t}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again (on the same port, over the same directory) if it is
// stopped, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin, "--port", s.addr, "posix", s.Root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw on %s did not answer: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server (as a crash would) and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Env sets the AWS SDK's standard variables for this server for the rest of the test, as
// an operator would.
func (s *Server) Env(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", s.Endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// URL is the store URL of a bucket of this server.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s", bucket, prefix)
}

// Proxy forwards loopback TCP connections to a server and can stall them: a slow or hung
// endpoint, as opposed to a stopped one.
type Proxy struct {
	Endpoint string
	l        net.Listener
	stalled  chan struct{} // closed while forwarding runs freely
	mu       sync.Mutex
}

// NewProxy starts a proxy to target (host:port); it closes when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Endpoint: "http://" + l.Addr().String(), l: l, stalled: make(chan struct{})}
	close(p.stalled)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	t.Cleanup(func() { l.Close(); p.Stall(false) })
	return p
}

// Stall stops (true) or resumes (false) forwarding bytes in both directions.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stalled:
		if on {
			p.stalled = make(chan struct{})
		}
	default:
		if !on {
			close(p.stalled)
		}
	}
}

func (p *Proxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

func (p *Proxy) serve(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			<-p.gate()
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(u, c)
	pipe(c, u)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Put writes an object as any S3 client would (the SDK, signed).
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")})
	if _, err := client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &bucket, Key: &key,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatalf("put s3://%s/%s: %v", bucket, key, err)
	}
}
