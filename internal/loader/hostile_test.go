package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// hostileDir holds the files testdata/hostile/generate.py writes and the outcome each must
// have (expected.json).
const hostileDir = "../../testdata/hostile"

const (
	// hostileAllocLimit bounds what one Open may allocate in total, so also its peak.
	hostileAllocLimit = 256 << 20
	// hostileDeadline only catches hangs; it is not a performance assertion.
	hostileDeadline = 20 * time.Second
)

// hostileCase is one entry of testdata/hostile/expected.json.
type hostileCase struct {
	// Expect is "danger" (opens, and reports Danger), "opens" (opens, reports no danger)
	// or "reject" (a *Error containing Error, whose Findings report Danger).
	Expect string   `json:"expect"`
	Danger []string `json:"danger"`
	Error  string   `json:"error"`
	// Marker is the file Python would create if it unpickled the payload.
	Marker     string `json:"marker"`
	Why        string `json:"why"`
	MaxNodes   int    `json:"max_nodes"`
	SaneTotals bool   `json:"sane_totals"`
}

func loadHostile(t *testing.T) map[string]hostileCase {
	raw, err := os.ReadFile(filepath.Join(hostileDir, "expected.json"))
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("no hostile inputs: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]hostileCase{}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatalf("expected.json: %v", err)
	}
	return cases
}

// openBounded opens data in a goroutine and reports what Open returned, how many bytes it
// allocated, and whether it returned before hostileDeadline.
func openBounded(data []byte) (ck *ckpt.Checkpoint, alloc uint64, done bool, err error) {
	type result struct {
		ck    *ckpt.Checkpoint
		err   error
		alloc uint64
	}
	ch := make(chan result, 1)
	go func() {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		runtime.ReadMemStats(&after)
		ch <- result{ck, err, after.TotalAlloc - before.TotalAlloc}
	}()
	select {
	case r := <-ch:
		return r.ck, r.alloc, true, r.err
	case <-time.After(hostileDeadline):
		return nil, 0, false, nil
	}
}

// TestHostileFiles opens every file of testdata/hostile: payloads must be reported and never
// run, malformed files must be refused with a *loader.Error that says what is wrong, and no
// file may hang Open or make it allocate more than hostileAllocLimit.
func TestHostileFiles(t *testing.T) {
	cases := loadHostile(t)
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tc := cases[name]
		t.Run(name, func(t *testing.T) {
			if tc.Marker != "" {
				if err := os.Remove(tc.Marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("cannot remove marker %s: %v", tc.Marker, err)
				}
			}
			data, err := os.ReadFile(filepath.Join(hostileDir, name))
			if err != nil {
				t.Fatal(err)
			}
			ck, alloc, done, err := openBounded(data)
			if !done {
				t.Fatalf("Open(%s) did not return within %v (%s)", name, hostileDeadline, tc.Why)
			}
			if alloc > hostileAllocLimit {
				t.Errorf("Open(%s) allocated %d MB, want under %d MB (%s)", name, alloc>>20, hostileAllocLimit>>20, tc.Why)
			}
			if tc.Marker != "" {
				if _, serr := os.Stat(tc.Marker); serr == nil {
					t.Errorf("Open(%s) left %s behind: the payload ran", name, tc.Marker)
				}
			}

			// An outcome other than the expected one is an error, not a stop: the findings
			// are still checked, so a report says everything that went wrong.
			var findings []ckpt.Finding
			var le *Error
			if err != nil && !errors.As(err, &le) {
				t.Fatalf("Open(%s) error = %T %v, want a *loader.Error", name, err, err)
			}
			if le != nil {
				findings = le.Findings
				t.Logf("Open(%s) = %v; %d MB allocated; findings %s", name, err, alloc>>20, describeFindings(findings))
			} else {
				findings = ck.Findings
				t.Logf("Open(%s) = %s tree; %d MB allocated; findings %s", name, ck.Format, alloc>>20, describeFindings(findings))
			}
			switch tc.Expect {
			case "reject":
				if err == nil {
					t.Errorf("Open(%s) opened the file (format %s); want a *loader.Error containing %q (%s)",
						name, ck.Format, tc.Error, tc.Why)
				} else if !strings.Contains(err.Error(), tc.Error) {
					t.Errorf("Open(%s) error = %q, want it to contain %q (%s)", name, err, tc.Error, tc.Why)
				}
			case "opens", "danger":
				if err != nil {
					t.Errorf("Open(%s) = %v, want a tree (%s)", name, err, tc.Why)
					break
				}
				if tc.MaxNodes > 0 && countNodes(ck) > tc.MaxNodes {
					t.Errorf("Open(%s) tree has %d nodes, want at most %d: shared values must become refs", name, countNodes(ck), tc.MaxNodes)
				}
				if tc.SaneTotals {
					if ck.Parameters < 0 {
						t.Errorf("Open(%s).Parameters = %d, want >= 0", name, ck.Parameters)
					}
					for dt, n := range ck.BytesByDType {
						if n < 0 {
							t.Errorf("Open(%s).BytesByDType[%s] = %d, want >= 0", name, dt, n)
						}
					}
				}
			default:
				t.Fatalf("expected.json: %s has expect %q", name, tc.Expect)
			}
			if tc.Expect == "opens" {
				for _, f := range findings {
					if f.Severity == ckpt.SeverityDanger {
						t.Errorf("Open(%s) reports danger %s (%s) in a file with nothing dangerous", name, f.Global, f.Detail)
					}
				}
			}
			for _, g := range tc.Danger {
				if !hasDanger(findings, g) {
					t.Errorf("Open(%s) findings = %s; want a danger finding for %s (%s)", name, describeFindings(findings), g, tc.Why)
				}
			}
		})
	}
}

func hasDanger(findings []ckpt.Finding, global string) bool {
	for _, f := range findings {
		if f.Severity == ckpt.SeverityDanger && f.Global == global {
			return true
		}
	}
	return false
}

func describeFindings(findings []ckpt.Finding) string {
	if len(findings) == 0 {
		return "none"
	}
	parts := make([]string, len(findings))
	for i, f := range findings {
		parts[i] = string(f.Severity) + " " + f.Global + ": " + f.Detail
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// FuzzOpenHostile is FuzzOpen seeded with testdata/hostile, so mutations start from payloads,
// broken lengths, archives and tensors that already sit on the edges of every decoder.
func FuzzOpenHostile(f *testing.F) {
	entries, _ := os.ReadDir(hostileDir)
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".py", ".json", ".md", ".gitattributes", "":
			continue
		}
		if b, err := os.ReadFile(filepath.Join(hostileDir, e.Name())); err == nil && len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{MaxOps: 200000, MaxNodes: 200000})
		if err != nil {
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("Open returned %T %v, want *loader.Error", err, err)
			}
			return
		}
		checkPointers(t, ck)
	})
}
