// Package cli is ckptview without its server: the scan and inspect commands, which open
// files with the same loader and limits as the server and print what they find for a
// terminal, a script (JSON) or a code-scanning dashboard (SARIF).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/report"
	"github.com/ckptview/ckptview/internal/views"
)

// Exit statuses of the scan command.
const (
	ExitClean      = 0 // every file read, no danger (nor warning, with -fail-on warning)
	ExitDanger     = 1 // a danger finding in some file (this wins over ExitUnreadable)
	ExitUnreadable = 2 // some file could not be read to the end, so it is not known clean; or bad usage
)

// Verdicts of one file.
const (
	VerdictDanger     = "danger"     // something in the file runs code when Python loads it
	VerdictWarning    = "warning"    // the file imports code ckptview has not vetted
	VerdictClean      = "clean"      // read to the end: nothing runs, nothing unknown is imported
	VerdictUnreadable = "unreadable" // could not be read to the end: fail closed
	VerdictSkipped    = "skipped"    // found in a folder and no checkpoint at all (text, an image)
)

// Options are what the scan and inspect commands share: the loader's limits, as the
// server's flags set them, and the time one file may take.
type Options struct {
	Loader      loader.Options
	OpenTimeout time.Duration
}

// ScanConfig is one run of the scan command.
type ScanConfig struct {
	Options
	// Paths are files and folders; a folder is walked and every file under it is opened
	// by its content, whatever its name (version control folders excepted).
	Paths []string
	// Format is "text", "json" (JSON Lines, one object per file) or "sarif".
	Format string
	// FailOnWarning makes a warning fail the scan (exit 1) like a danger.
	FailOnWarning bool
	// Verbose lists warnings and notes in the text format too.
	Verbose bool
	// Workers is how many files are opened at once (0: GOMAXPROCS).
	Workers int
	// Version names this build in SARIF output.
	Version string
}

// FileReport is what the scan says about one file: the JSON format's object per file.
type FileReport struct {
	File       string `json:"file"`
	Verdict    string `json:"verdict"`
	Format     string `json:"format,omitempty"`
	Size       int64  `json:"size"`
	Tensors    int    `json:"tensors"`
	Parameters int64  `json:"parameters"`
	// Error says why the file could not be read to the end (or, for a skipped file, what
	// it is instead).
	Error    string           `json:"error,omitempty"`
	Findings []report.Finding `json:"findings"`
	// WeightsOnly is torch.load(weights_only=True)'s verdict, for torch.save files.
	WeightsOnly *report.WeightsOnly `json:"weights_only,omitempty"`
	Notes       []string            `json:"notes,omitempty"`
	// Dangers and Warnings count the findings by severity.
	Dangers  int `json:"dangers"`
	Warnings int `json:"warnings"`
}

// skipDirs are folders a walk does not enter: version control keeps compressed objects
// that would read as joblib's zlib files.
var skipDirs = map[string]bool{".git": true, ".hg": true, ".svn": true}

// target is one file to scan.
type target struct {
	path     string
	explicit bool
	err      error // the path could not be listed
}

// expand lists the files of paths in order: files as given, folders walked in lexical
// order.
func expand(paths []string) []target {
	var out []target
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			out = append(out, target{path: p, explicit: true, err: err})
			continue
		}
		if !fi.IsDir() {
			out = append(out, target{path: p, explicit: true})
			continue
		}
		werr := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				out = append(out, target{path: path, err: err})
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if path != p && skipDirs[d.Name()] {
					return fs.SkipDir
				}
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
					return nil // a link to a folder or to nothing: not followed
				}
			} else if !d.Type().IsRegular() {
				return nil // sockets, devices, fifos
			}
			out = append(out, target{path: path})
			return nil
		})
		if werr != nil {
			out = append(out, target{path: p, explicit: true, err: werr})
		}
	}
	return out
}

// ScanFile opens one file with the loader and says what Python loading it would do.
func ScanFile(ctx context.Context, path string, o Options) FileReport {
	r := FileReport{File: path, Findings: []report.Finding{}}
	ck, size, closeCk, err := openFile(ctx, path, o)
	r.Size = size
	if ck != nil {
		defer closeCk()
		r.Format = ck.Format
		r.Tensors, r.Parameters = ck.Tensors, ck.Parameters
		r.Findings = report.Findings(ck.Findings)
		r.WeightsOnly = report.NewWeightsOnly(ck.WeightsOnly)
		r.Notes = ck.Notes
	}
	var le *loader.Error
	var ie *loader.InternalError
	switch {
	case errors.As(err, &le):
		r.Error = le.Text()
		r.Findings = report.Findings(le.Findings)
		if le.NotCheckpoint && len(le.Findings) == 0 {
			r.Verdict = VerdictSkipped
		}
	case errors.As(err, &ie):
		r.Error = "ckptview failed on this file (a bug of ours, not the file's): " + fmt.Sprint(ie.Panic)
		r.Findings = report.Findings(ie.Findings)
	case err != nil:
		r.Error = err.Error()
	}
	for _, f := range r.Findings {
		switch ckpt.Severity(f.Severity) {
		case ckpt.SeverityDanger:
			r.Dangers++
		case ckpt.SeverityWarning:
			r.Warnings++
		}
	}
	switch {
	case r.Dangers > 0:
		r.Verdict = VerdictDanger // even when the file then breaks: what was read runs
	case r.Verdict == VerdictSkipped:
	case r.Error != "":
		r.Verdict = VerdictUnreadable
	case r.Warnings > 0:
		r.Verdict = VerdictWarning
	default:
		r.Verdict = VerdictClean
	}
	return r
}

// openFile opens path with the loader under o's limits and time budget. The checkpoint
// reads its tensors from the file, so closing it (the function returned) closes both.
func openFile(ctx context.Context, path string, o Options) (*ckpt.Checkpoint, int64, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	default:
		err = ctx.Err()
	}
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	lo := o.Loader
	if o.OpenTimeout > 0 {
		lo.Deadline = time.Now().Add(o.OpenTimeout)
		lo.TimeLimit = o.OpenTimeout.String() + " (-open-timeout)"
	}
	ck, err := loader.Open(f, fi.Size(), lo)
	if err != nil {
		f.Close()
		return nil, fi.Size(), nil, err
	}
	return ck, fi.Size(), func() { ck.Close(); f.Close() }, nil
}

// Scan runs the scan command: every file of cfg.Paths, one report each written to stdout
// in cfg.Format, in the order the paths list them. It returns the exit status.
func Scan(ctx context.Context, cfg ScanConfig, stdout io.Writer) int {
	targets := expand(cfg.Paths)
	reports := make([]FileReport, len(targets))
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Files are opened in parallel and printed in order, each as soon as it and every
	// file before it are done, so a long scan shows its progress.
	done := make([]chan struct{}, len(targets))
	for i := range done {
		done[i] = make(chan struct{})
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, max(1, len(targets))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := targets[i]
				if t.err != nil {
					reports[i] = FileReport{File: t.path, Verdict: VerdictUnreadable, Error: t.err.Error(), Findings: []report.Finding{}}
				} else {
					reports[i] = ScanFile(ctx, t.path, cfg.Options)
				}
				if reports[i].Verdict == VerdictSkipped && t.explicit {
					// named on purpose: a file the user meant as a checkpoint is not one
					reports[i].Verdict = VerdictUnreadable
				}
				close(done[i])
			}
		}()
	}
	go func() {
		defer close(next)
		for i := range targets {
			next <- i
		}
	}()

	var sarif *sarifLog
	if cfg.Format == "sarif" {
		sarif = newSARIF(cfg.Version)
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for i := range targets {
		<-done[i]
		r := reports[i]
		switch cfg.Format {
		case "json":
			_ = enc.Encode(r)
		case "sarif":
			sarif.add(r)
		default:
			writeText(stdout, r, cfg.Verbose)
		}
	}
	wg.Wait()
	code := exitCode(reports, cfg.FailOnWarning)
	switch cfg.Format {
	case "sarif":
		sarif.finish(code)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sarif)
	case "json":
	default:
		writeTally(stdout, reports)
	}
	return code
}

// exitCode is the scan's exit status for these reports.
func exitCode(reports []FileReport, failOnWarning bool) int {
	code := ExitClean
	for _, r := range reports {
		switch {
		case r.Verdict == VerdictDanger || (failOnWarning && r.Verdict == VerdictWarning):
			return ExitDanger
		case r.Verdict == VerdictUnreadable:
			code = ExitUnreadable
		}
	}
	return code
}

// Tally counts reports by verdict.
func Tally(reports []FileReport) map[string]int {
	t := map[string]int{}
	for _, r := range reports {
		t[r.Verdict]++
	}
	return t
}

// writeText writes one file's report for a terminal: a line with its verdict, format and
// name, then each danger (with every warning and note when verbose).
func writeText(w io.Writer, r FileReport, verbose bool) {
	label := strings.ToUpper(r.Verdict)
	format := r.Format
	if format == "" {
		format = "-"
	}
	line := fmt.Sprintf("%-10s %-16s %s", label, format, r.File)
	switch r.Verdict {
	case VerdictDanger:
		line += "  (" + views.Plural(r.Dangers, "danger")
		if r.Warnings > 0 {
			line += ", " + views.Plural(r.Warnings, "warning")
		}
		line += ")"
	case VerdictWarning:
		line += "  (" + views.Plural(r.Warnings, "unvetted import") + ")"
	case VerdictClean:
		if wo := r.WeightsOnly; wo != nil {
			if wo.Loads {
				line += "  (weights_only loads it)"
			} else {
				line += "  (weights_only refuses it)"
			}
		}
	}
	if r.Verdict == VerdictSkipped {
		line += "  (not a checkpoint)"
	}
	fmt.Fprintln(w, line)
	if r.Error != "" && (r.Verdict != VerdictSkipped || verbose) {
		what := "cannot be read: "
		if r.Verdict == VerdictSkipped {
			what = "skipped: "
		}
		writeWrapped(w, "           ", what+r.Error)
	}
	for _, f := range r.Findings {
		if f.Severity != string(ckpt.SeverityDanger) && !verbose {
			continue
		}
		writeWrapped(w, "           ", f.Severity+": "+f.Detail)
		writeWrapped(w, "             ", findingPlace(f))
	}
	if verbose {
		for _, n := range r.Notes {
			writeWrapped(w, "           ", "note: "+n)
		}
	}
}

// findingPlace says where a finding sits: its node, or outside the tree, and the pickle
// and byte of its opcode.
func findingPlace(f report.Finding) string {
	var where string
	switch {
	case f.Outside:
		where = "outside the returned object"
	case f.Path == "" && f.Global == "":
		where = "in the file" // a finding about the file (one that could not be checked)
	case f.Path == "":
		where = "at the root"
	default:
		where = "at " + f.Path
	}
	if f.Where != "" {
		where += fmt.Sprintf(" (%s, byte %d)", f.Where, f.Offset)
	}
	return where
}

// writeWrapped writes s after indent, wrapped at 80 columns; words longer than a line
// (a long call) are cut across lines rather than overflowing.
func writeWrapped(w io.Writer, indent, s string) {
	const width = 80
	avail := max(20, width-len(indent))
	s = strings.ReplaceAll(s, "\n", `\n`)
	rs := []rune(s)
	for len(rs) > 0 {
		n := min(len(rs), avail)
		if n < len(rs) {
			// break at the last space in the line when there is one
			for j := n; j > avail/2; j-- {
				if rs[j] == ' ' {
					n = j
					break
				}
			}
		}
		fmt.Fprintln(w, indent+strings.TrimRight(string(rs[:n]), " "))
		rs = []rune(strings.TrimLeft(string(rs[n:]), " "))
	}
}

// writeTally writes the last line of a text scan: files per verdict.
func writeTally(w io.Writer, reports []FileReport) {
	t := Tally(reports)
	var parts []string
	for _, v := range []string{VerdictDanger, VerdictUnreadable, VerdictWarning, VerdictClean, VerdictSkipped} {
		if t[v] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", t[v], v))
		}
	}
	fmt.Fprintf(w, "\n%s scanned: %s\n", views.Plural(len(reports), "file"), strings.Join(parts, ", "))
}
