package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is a ckptview process started for a load test.
type Server struct {
	URL  string
	PID  int
	cmd  *exec.Cmd
	exit chan error
}

// BuildServer builds ./cmd/web of the module in dir into out.
func BuildServer(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/web")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("loadtest: go build: %v\n%s", err, b)
	}
	return nil
}

// StartServer runs bin on a free loopback port with the extra flags args, and waits until it
// listens. Its log goes to logPath.
func StartServer(bin, logPath string, args ...string) (*Server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{PID: cmd.Process.Pid, cmd: cmd, exit: make(chan error, 1)}
	listening := make(chan string, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			logf.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				select {
				case listening <- line.Addr:
				default:
				}
			}
		}
		s.exit <- cmd.Wait()
	}()
	select {
	case addr := <-listening:
		s.URL = "http://" + addr
		return s, nil
	case err := <-s.exit:
		return nil, fmt.Errorf("loadtest: the server exited before listening: %v (log: %s)", err, logPath)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("loadtest: the server did not listen within 60s (log: %s)", logPath)
	}
}

// Stop asks the server to shut down (SIGTERM) and waits for it; after 30s it is killed.
func (s *Server) Stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-s.exit:
		return err
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		return errors.New("loadtest: the server did not stop within 30s of SIGTERM; killed")
	}
}

// Memory is a process's resident memory in bytes: now (VmRSS) and its peak so far (VmHWM).
type Memory struct{ RSS, HWM int64 }

// ReadMemory reads a process's memory from /proc/<pid>/status (Linux).
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("loadtest: memory of %d: %w", pid, err)
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("loadtest: /proc/%d/status %s: %q", pid, name, value)
		}
		if name == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	if m.HWM == 0 {
		return Memory{}, fmt.Errorf("loadtest: /proc/%d/status has no VmHWM", pid)
	}
	return m, nil
}
