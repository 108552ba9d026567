package loader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
)

// keysDir holds the pickles testdata/keys/gen_keys.py wrote with Python's pickle.
const keysDir = "testdata/keys"

// TestKeysThatReadAlike opens the dicts of testdata/keys: keys 7 and "7" with a real key
// "7 (2)" beside them, {"a": 1, "a (2)": 2}, an int/str pair in both orders, keys ".",
// ".." and "", and an object whose attributes are such keys. Each entry Python has is a
// child, in Python's order, with Python's value; each has a segment of its own that leads
// to it; a key keeps its own segment unless an earlier key has it; and a renamed key never
// takes another key's own segment.
func TestKeysThatReadAlike(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(keysDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expected map[string][][2]any
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	for name, want := range expected {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(keysDir, name))
			if err != nil {
				t.Fatal(err)
			}
			ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkPointers(t, ck)
			kids := ck.Root.Children
			if len(kids) != len(want) {
				t.Fatalf("%d children, Python has %d entries: %v", len(kids), len(want), segsOf(kids))
			}
			for i, k := range kids {
				// an attribute has no DictKey (its Key is str(key)): its value says which it is
				if got := keyRepr(k); got != want[i][0] && ck.Root.Kind == ckpt.KindDict {
					t.Errorf("child %d (segment %q): key %s, want %s", i, k.Seg, got, want[i][0])
				}
				if got, w := valueText(k), fmt.Sprint(want[i][1]); got != w {
					t.Errorf("child %d (key %s): value %s, want %s", i, keyRepr(k), got, w)
				}
				if got, err := ck.Node("/" + ckpt.EscapeSegment(k.Seg)); err != nil || got != k {
					t.Errorf("segment %q leads to %v (%v), not to key %s", k.Seg, got, err, keyRepr(k))
				}
			}
			checkOwnSegments(t, kids)
		})
	}
}

// TestKeysThatReadAlikePointers pins the pointers of the dicts of testdata/keys.
func TestKeysThatReadAlikePointers(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]string // pointer -> key repr = value
	}{
		{"keys3.pkl", map[string]string{"/7": "7=1", "/7 (2)": "'7 (2)'=3", "/7 (3)": "'7'=2"}},
		{"attrs.pkl", map[string]string{"/7": "'7'=1", "/7 (2)": "'7 (2)'=3", "/7 (3)": "'7'=2"}}, // attributes: no DictKey
		{"suffix.pkl", map[string]string{"/a": "'a'=1", "/a (2)": "'a (2)'=2"}},
		{"int_str.pkl", map[string]string{"/7": "7=int", "/7 (2)": "'7'=str"}},
		{"str_int.pkl", map[string]string{"/7": "'7'=str", "/7 (2)": "7=int"}},
		{"keys.pkl", map[string]string{
			"/7": "7=1", "/7 (3)": "'7'=2", "/7 (2)": "'7 (2)'=3", "/.": "'.'=4", "/..": "'..'=5",
			"/": "''=6", "/a~1b": "'a/b'=7", "/~0x": "'~x'=8",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(keysDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range tc.want {
				n, err := ck.Node(p)
				if err != nil {
					t.Errorf("%q: %v", p, err)
					continue
				}
				if got := keyRepr(n) + "=" + valueText(n); got != want {
					t.Errorf("%q: %s, want %s", p, got, want)
				}
			}
		})
	}
}

// TestRepeatedKeyAfterRename opens pickles Python does not write but pickle.load reads:
// a key set twice in one dict, where the first time it was renamed ({7: 1, '7': 2} then
// '7' again: one entry '7', the last value at the first place), and two tuple keys whose
// segments are one (the segment of a tuple of more than 8 items leaves items out), which
// Python keeps apart. The same with more than 32 keys, where the lookups are by map.
func TestRepeatedKeyAfterRename(t *testing.T) {
	tuple9 := func(last int) pickleKey {
		var b bytes.Buffer
		b.WriteByte('(')
		for i := range 8 {
			b.Write([]byte{'K', byte(i)})
		}
		b.Write([]byte{'K', byte(last), 't'})
		return pickleKey{op: b.Bytes()}
	}
	t.Run("small", func(t *testing.T) {
		ck := openEntries(t, []pickleEntry{
			{intKey(7), 1}, {strKey("7"), 2}, {strKey("7"), 3}, {tuple9(8), 4}, {tuple9(9), 5}, {tuple9(8), 6},
		})
		checkPointers(t, ck)
		kids := ck.Root.Children
		var got []string
		for _, k := range kids {
			got = append(got, k.Seg+"="+valueText(k))
		}
		want := []string{"7=1", "7 (2)=3", "(0, 1, 2, 3, 4, 5, 6, 7, …)=6", "(0, 1, 2, 3, 4, 5, 6, 7, …) (2)=5"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("children %q, want %q", got, want)
		}
		checkOwnSegments(t, kids)
	})
	t.Run("large", func(t *testing.T) {
		// for i < 20: i, 'i', 'i (2)', then 'i' and i again; Python keeps 60 entries
		var es []pickleEntry
		for i := range 20 {
			s := strconv.Itoa(i)
			es = append(es, pickleEntry{intKey(i), i}, pickleEntry{strKey(s), 100 + i}, pickleEntry{strKey(s + " (2)"), 200 + i})
		}
		for i := range 20 {
			es = append(es, pickleEntry{strKey(strconv.Itoa(i)), 300 + i}, pickleEntry{intKey(i), 400 + i})
		}
		ck := openEntries(t, es)
		checkPointers(t, ck)
		kids := ck.Root.Children
		if len(kids) != 60 {
			t.Fatalf("%d children, want 60", len(kids))
		}
		for i := range 20 {
			s := strconv.Itoa(i)
			for _, c := range []struct{ p, want string }{
				{"/" + s, fmt.Sprintf("%d=%d", i, 400+i)},
				{"/" + s + " (2)", fmt.Sprintf("'%s (2)'=%d", s, 200+i)},
				{"/" + s + " (3)", fmt.Sprintf("'%s'=%d", s, 300+i)},
			} {
				n, err := ck.Node(c.p)
				if err != nil {
					t.Errorf("%q: %v", c.p, err)
				} else if got := keyRepr(n) + "=" + valueText(n); got != c.want {
					t.Errorf("%q: %s, want %s", c.p, got, c.want)
				}
			}
		}
		checkOwnSegments(t, kids)
	})
}

// checkOwnSegments checks the segments of one container's children: all differ, a child
// whose segment is not its key's own segment (Key) comes after one that has it, and no
// child has another's own segment.
func checkOwnSegments(t *testing.T, kids []*ckpt.Node) {
	t.Helper()
	segs := map[string]int{}
	own := map[string]bool{}
	for _, k := range kids {
		own[k.Key] = true
	}
	for i, k := range kids {
		if j, ok := segs[k.Seg]; ok {
			t.Errorf("children %d and %d have segment %q", j, i, k.Seg)
		}
		segs[k.Seg] = i
		if k.Seg == k.Key {
			continue
		}
		if own[k.Seg] {
			t.Errorf("child %d (key %s) has the segment %q of another key", i, keyRepr(k), k.Seg)
		}
		if j, ok := segs[k.Key]; !ok || j > i {
			t.Errorf("child %d (key %s) is at %q though no earlier child has %q", i, keyRepr(k), k.Seg, k.Key)
		}
	}
}

// keyRepr is a child's key as Python's repr writes it.
func keyRepr(k *ckpt.Node) string {
	if k.DictKey != nil {
		return k.Key
	}
	return pyrepr.Quote(k.Key)
}

// valueText is an int's or str's value.
func valueText(n *ckpt.Node) string {
	switch n.Kind {
	case ckpt.KindInt:
		return n.Int
	case ckpt.KindStr:
		return n.Str
	}
	return string(n.Kind)
}

func segsOf(kids []*ckpt.Node) []string {
	var out []string
	for _, k := range kids {
		out = append(out, k.Seg)
	}
	return out
}

// pickleKey is the opcodes that push a dict key.
type pickleKey struct{ op []byte }

func intKey(i int) pickleKey { return pickleKey{op: []byte{'K', byte(i)}} }

func strKey(s string) pickleKey {
	op := []byte{'X', byte(len(s)), 0, 0, 0}
	return pickleKey{op: append(op, s...)}
}

type pickleEntry struct {
	key   pickleKey
	value int // 0..65535
}

// openEntries opens a protocol 2 pickle of one dict set item by item, in order and
// repeats included: EMPTY_DICT MARK (key BININT2)* SETITEMS STOP.
func openEntries(t *testing.T, es []pickleEntry) *ckpt.Checkpoint {
	t.Helper()
	var p bytes.Buffer
	p.WriteString("\x80\x02}(")
	for _, e := range es {
		p.Write(e.key.op)
		p.Write([]byte{'M', byte(e.value), byte(e.value >> 8)})
	}
	p.WriteString("u.")
	ck, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ck
}
