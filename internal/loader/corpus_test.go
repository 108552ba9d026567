package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// corpusDir is the shared corpus of real files from public projects, beside the checkout.
const corpusDir = "../../../shared/corpus"

type corpusEntry struct {
	path, expected, outcome string
}

// readManifest parses the rows of MANIFEST.md: local path, expected outcome and the
// expected-outcome text (which names the dangerous globals).
func readManifest(t testing.TB) []corpusEntry {
	f, err := os.Open(filepath.Join(corpusDir, "MANIFEST.md"))
	if err != nil {
		t.Skipf("corpus not present: %v", err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([^`]+)` \\|.*\\| \\*\\*([a-z+]+)\\*\\* \\|(.*)\\|(.*)\\|\\s*$")
	var out []corpusEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, corpusEntry{path: m[1], expected: m[2], outcome: m[4]})
		}
	}
	return out
}

// ifSupported finds the manifest's words for a file that is refused only while its format
// is not supported.
var ifSupported = regexp.MustCompile(`(?i)decode \(?[^)]*\)? ?if (\w+ )*supported|if archives are ever supported`)

type corpusResult struct {
	actual   string // opens, opens+opaque, dangerous, reject
	dangers  []string
	err      error
	findings []ckpt.Finding
}

func openCorpusFile(path string) corpusResult {
	f, err := os.Open(path)
	if err != nil {
		return corpusResult{actual: "missing", err: err}
	}
	defer f.Close()
	st, _ := f.Stat()
	ck, err := Open(f, st.Size(), Options{})
	var res corpusResult
	res.err = err
	if err != nil {
		var le *Error
		if errors.As(err, &le) {
			res.findings = le.Findings
		}
	} else {
		res.findings = ck.Findings
	}
	warn := false
	for _, fd := range res.findings {
		if fd.Severity == ckpt.SeverityDanger {
			res.dangers = append(res.dangers, fd.Global)
		} else {
			warn = true
		}
	}
	switch {
	case len(res.dangers) > 0:
		res.actual = "dangerous"
	case err != nil:
		res.actual = "reject"
	case warn:
		res.actual = "opens+opaque"
	default:
		res.actual = "opens"
	}
	return res
}

// matches applies the manifest's legend: a dangerous file must be flagged; a rejected file
// must be refused (a broken file that also carries a payload may be flagged too); a file
// that opens must open, without dangerous findings, and "opens" without any findings. A
// file the manifest expects refused unless its format is supported ("Decode if ZF format
// supported, else clean 422") may also open, without dangerous findings.
func matches(e corpusEntry, r corpusResult) bool {
	switch e.expected {
	case "dangerous":
		return len(r.dangers) > 0
	case "reject":
		if ifSupported.MatchString(e.outcome) && r.err == nil {
			return len(r.dangers) == 0
		}
		return r.err != nil
	case "opens":
		return r.err == nil && len(r.findings) == 0
	case "opens+opaque":
		return r.err == nil && len(r.dangers) == 0
	}
	return false
}

// TestCorpus opens every pickle and PyTorch file of the shared corpus and compares the
// outcome with the one MANIFEST.md expects. It prints the tally per expected outcome.
func TestCorpus(t *testing.T) {
	entries := readManifest(t)
	if len(entries) == 0 {
		t.Fatal("no rows parsed from MANIFEST.md")
	}
	type tally struct{ ok, bad int }
	tallies := map[string]*tally{}
	var lines []string
	for _, e := range entries {
		tl := tallies[e.expected]
		if tl == nil {
			tl = &tally{}
			tallies[e.expected] = tl
		}
		r := openCorpusFile(filepath.Join(corpusDir, e.path))
		if matches(e, r) {
			tl.ok++
			lines = append(lines, fmt.Sprintf("ok    %-13s %s", e.expected, e.path))
			continue
		}
		tl.bad++
		msg := fmt.Sprintf("FAIL  %-13s %s: got %s (err=%v, dangers=%v)", e.expected, e.path, r.actual, r.err, r.dangers)
		lines = append(lines, msg)
		t.Error(msg)
	}
	if testing.Verbose() {
		for _, l := range lines {
			t.Log(l)
		}
	}
	keys := make([]string, 0, len(tallies))
	for k := range tallies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("corpus tally (expected outcome: as expected / not):\n")
	for _, k := range keys {
		tl := tallies[k]
		fmt.Fprintf(&b, "  %-13s %3d ok  %3d not\n", k, tl.ok, tl.bad)
	}
	t.Log(b.String())
}
