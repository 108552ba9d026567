package loader

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// plainFact is one fact of expected_plain.json: what pickle.load gave at a path.
type plainFact struct {
	Path  string          `json:"path"`
	Index *int            `json:"index"`
	Kind  ckpt.Kind       `json:"kind"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
	Len   *int64          `json:"len"`
}

// TestPlainFixturesMatchPython holds both readings of the plain pickles that
// testdata/models/generate_plain.py wrote with pickle.dump (protocols 2 to 5) to what
// pickle.load gave back: the one-pass reading (plain.go), which must be the one that reads
// them, and the general path. Each is checked for the count of values and, at every path
// of the facts, for the node's kind, type, value, length and position in its parent.
func TestPlainFixturesMatchPython(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected_plain.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	delete(all, "_about")
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) < 6 {
		t.Fatalf("expected_plain.json describes %d files, want the 8 generate_plain.py writes", len(names))
	}
	protocols := map[int]bool{}
	for _, name := range names {
		var want struct {
			Protocol int         `json:"protocol"`
			Size     int64       `json:"size"`
			Values   int         `json:"values"`
			Facts    []plainFact `json:"facts"`
		}
		if err := json.Unmarshal(all[name], &want); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		protocols[want.Protocol] = true
		data, err := os.ReadFile(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != want.Size {
			t.Errorf("%s: %d bytes, the generator wrote %d: regenerate both together", name, len(data), want.Size)
		}
		if len(want.Facts) < 20 || want.Facts[0].Path != "" {
			t.Fatalf("%s: %d facts, the first at %q: want the root and more", name, len(want.Facts), want.Facts[0].Path)
		}
		if plain, err := readsPlain(data); !plain || err != nil {
			t.Errorf("%s: read in one pass %v (%v), want true: pickle.dump of plain data", name, plain, err)
		}
		for _, path := range []struct {
			name string
			opts Options
		}{{"one pass", Options{}}, {"general path", Options{noPlain: true}}} {
			t.Run(name+"/"+path.name, func(t *testing.T) {
				ck, err := Open(bytes.NewReader(data), int64(len(data)), path.opts)
				if err != nil {
					t.Fatal(err)
				}
				if path.name == "one pass" {
					if _, ok := ck.Root.Lazy().(*plainItems); !ok {
						t.Errorf("root items %T, want the one-pass reading's", ck.Root.Lazy())
					}
				}
				if ck.Format != "pickle" || len(ck.Findings) != 0 {
					t.Errorf("format %q, findings %v: want a pickle with nothing to report", ck.Format, ck.Findings)
				}
				if ck.Values != want.Values {
					t.Errorf("values %d, Python counts %d", ck.Values, want.Values)
				}
				for _, f := range want.Facts {
					n, err := ck.Node(f.Path)
					if err != nil || n == nil {
						t.Errorf("%q: not found (%v), want %s", f.Path, err, f.Kind)
						continue
					}
					checkPlainFact(t, ck, n, f)
				}
			})
		}
	}
	for p := 2; p <= 5; p++ {
		if !protocols[p] {
			t.Errorf("no fixture at protocol %d", p)
		}
	}
}

// checkPlainFact compares node n, found at f.Path, with Python's fact f.
func checkPlainFact(t *testing.T, ck *ckpt.Checkpoint, n *ckpt.Node, f plainFact) {
	t.Helper()
	if n.Kind != f.Kind || n.Type != f.Type {
		t.Errorf("%q: %s (%s), want %s (%s)", f.Path, n.Kind, n.Type, f.Kind, f.Type)
		return
	}
	if got := n.Path(); got != f.Path {
		t.Errorf("%q: the node says its path is %q", f.Path, got)
	}
	if f.Index != nil {
		// the item at its position in its parent is the same entry: order is kept
		i := strings.LastIndexByte(f.Path, '/')
		parent, err := ck.Node(f.Path[:i])
		if err != nil {
			t.Errorf("%q: parent: %v", f.Path, err)
		} else if items := parent.Items(*f.Index, *f.Index+1); len(items) != 1 || ckpt.EscapeSegment(items[0].Seg) != f.Path[i+1:] || items[0].Kind != f.Kind {
			t.Errorf("%q: item %d of its parent is %v, want this entry", f.Path, *f.Index, items)
		}
	}
	var s string
	switch f.Kind {
	case ckpt.KindInt, ckpt.KindFloat, ckpt.KindStr, ckpt.KindBytes:
		if err := json.Unmarshal(f.Value, &s); err != nil {
			t.Errorf("%q: value %s: %v", f.Path, f.Value, err)
			return
		}
	}
	switch f.Kind {
	case ckpt.KindNone:
		if string(f.Value) != "null" {
			t.Errorf("%q: value %s for None", f.Path, f.Value)
		}
	case ckpt.KindBool:
		var b bool
		if err := json.Unmarshal(f.Value, &b); err != nil || n.Bool != b {
			t.Errorf("%q: %v, want %s", f.Path, n.Bool, f.Value)
		}
	case ckpt.KindInt:
		if n.Int != s {
			t.Errorf("%q: int %s, want %s", f.Path, n.Int, s)
		}
	case ckpt.KindFloat:
		want, err := parsePyFloat(s)
		if err != nil {
			t.Errorf("%q: %v", f.Path, err)
		} else if math.IsNaN(want) != math.IsNaN(n.Float) || (!math.IsNaN(want) && (n.Float != want || math.Signbit(n.Float) != math.Signbit(want))) {
			t.Errorf("%q: float %v (%#x), want %s", f.Path, n.Float, math.Float64bits(n.Float), s)
		}
	case ckpt.KindStr:
		if n.Str != s || n.Truncated {
			t.Errorf("%q: str %q (truncated %v), want %q", f.Path, n.Str, n.Truncated, s)
		}
	case ckpt.KindBytes:
		want, err := hex.DecodeString(s)
		if err != nil || !bytes.Equal(n.Bytes, want) || n.Truncated {
			t.Errorf("%q: bytes %x (truncated %v), want %s", f.Path, n.Bytes, n.Truncated, s)
		}
	case ckpt.KindList, ckpt.KindTuple, ckpt.KindDict:
		var l int
		if err := json.Unmarshal(f.Value, &l); err != nil || n.NumItems() != l {
			t.Errorf("%q: %d items, want %s", f.Path, n.NumItems(), f.Value)
		}
	default:
		t.Errorf("%q: kind %s in the facts", f.Path, f.Kind)
	}
	if f.Len != nil && n.Len != *f.Len {
		t.Errorf("%q: len %d, Python's len() is %d", f.Path, n.Len, *f.Len)
	}
}

// parsePyFloat reads Python's repr of a float.
func parsePyFloat(s string) (float64, error) {
	switch s {
	case "nan":
		return math.NaN(), nil
	case "inf":
		return math.Inf(1), nil
	case "-inf":
		return math.Inf(-1), nil
	}
	return strconv.ParseFloat(s, 64)
}
