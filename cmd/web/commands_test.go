package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCommands runs the scan and inspect commands as a user types them: flags before,
// between and after the paths, limits from the environment as the server takes them, and
// the exit status a CI job or a pre-commit hook reads.
func TestCommands(t *testing.T) {
	const models = "../../testdata/models/"
	for _, tc := range []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout []string
		stderr []string
	}{
		{name: "clean", args: []string{"scan", models + "state_dict.pt"}, code: 0,
			stdout: []string{"CLEAN      torch-zip", "1 file scanned: 1 clean"}},
		{name: "flags after the paths", args: []string{"scan", models + "malicious.pkl", "-format", "json"}, code: 1,
			stdout: []string{`"verdict":"danger"`, `"callable":"posix.system"`}},
		{name: "double-dash flags", args: []string{"scan", "--fail-on", "warning", models + "sklearn_logreg.pkl"}, code: 1,
			stdout: []string{"WARNING    pickle"}},
		{name: "a limit from the environment", args: []string{"scan", models + "state_dict.pt"}, env: map[string]string{"CKPTVIEW_MAX_TENSORS": "3"}, code: 2,
			stdout: []string{"UNREADABLE", "-max-tensors"}},
		{name: "the command line wins over the environment", args: []string{"scan", "-max-tensors", "1000", models + "state_dict.pt"},
			env: map[string]string{"CKPTVIEW_MAX_TENSORS": "3"}, code: 0},
		{name: "a path after --", args: []string{"scan", "--", models + "state_dict.pt"}, code: 0},
		{name: "no path", args: []string{"scan"}, code: 2, stderr: []string{"scan needs at least one file or folder"}},
		{name: "bad format", args: []string{"scan", "-format", "xml", models}, code: 2, stderr: []string{"-format must be text, json or sarif"}},
		{name: "bad limit", args: []string{"scan", "-max-nodes", "0", models}, code: 2, stderr: []string{"-max-nodes must be at least 1"}},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"ckptview scan [flags] PATH..."}},
		{name: "inspect a node", args: []string{"inspect", models + "state_dict.pt", "/wte.weight", "-format", "json"}, code: 0,
			stdout: []string{`"path": "/wte.weight"`, `"summary": "float32[50, 16]"`}},
		{name: "inspect no node", args: []string{"inspect", models + "state_dict.pt", "/nope"}, code: 2, stderr: []string{"has no node at '/nope'"}},
		{name: "inspect a broken file", args: []string{"inspect", models + "README.md"}, code: 2, stderr: []string{"cannot be opened: not a checkpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := dispatch(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, &errOut)
			if code != tc.code {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errOut.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut.String())
				}
			}
		})
	}
}

// TestScanJSONLines checks that -format json writes one object per file, each a line.
func TestScanJSONLines(t *testing.T) {
	var out bytes.Buffer
	code := dispatch(context.Background(), []string{"scan", "-format", "json", "../../testdata/models/state_dict.pt", "../../testdata/models/malicious.pkl"},
		func(string) string { return "" }, &out, &bytes.Buffer{})
	if code != 1 {
		t.Errorf("exit status %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, want := range []string{"clean", "danger"} {
		var r struct{ Verdict string }
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil || r.Verdict != want {
			t.Errorf("line %d: %v %q", i, err, lines[i])
		}
	}
}

// TestPreCommitHook checks that the hook's entry names the binary pre-commit builds (go
// install names it after this folder) and a command it has.
func TestPreCommitHook(t *testing.T) {
	b, err := os.ReadFile("../../.pre-commit-hooks.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^  entry: (\S+) (\S+)$`).FindStringSubmatch(string(b))
	wd, _ := os.Getwd()
	if m == nil || m[1] != filepath.Base(wd) || m[2] != "scan" {
		t.Fatalf("entry %q: want %q scan", m, filepath.Base(wd))
	}
	if !strings.Contains(string(b), "language: golang") {
		t.Error("the hook is not built with Go")
	}
}
