package loader

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// textCase is one pickle of testdata/text/cases.json and what pickle.loads made of it:
// the code points of the str (or of the dict's keys), or the UnicodeDecodeError it raised.
type textCase struct {
	Name       string
	Pickle     string
	Error      string
	Codepoints []rune
	Keys       [][]rune
}

// shown is how a node shows Python's text: a surrogate (which UTF-8 cannot hold) as U+FFFD.
func shown(cps []rune) string {
	out := make([]rune, len(cps))
	for i, r := range cps {
		if r >= 0xd800 && r <= 0xdfff {
			r = '\ufffd'
		}
		out[i] = r
	}
	return string(out)
}

// TestTextAsPythonDecodesIt holds the str opcodes to Python's decoders (gen_text.py):
// BINUNICODE, SHORT_BINUNICODE and BINUNICODE8 are UTF-8 with surrogates let through, and
// UNICODE is raw-unicode-escape. What Python decodes opens with its characters and its
// length in characters; what it refuses is refused, saying that pickle.load stops there,
// by every path (the plain-data pass hands such a pickle to the general one).
func TestTextAsPythonDecodesIt(t *testing.T) {
	raw, err := os.ReadFile("testdata/text/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []textCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("%d cases in cases.json", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			data, err := hex.DecodeString(c.Pickle)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range []Options{{}, {noPlain: true}, {nodesOnly: true}} {
				ck, err := Open(bytes.NewReader(data), int64(len(data)), o)
				if c.Error != "" {
					var le *Error
					if !errors.As(err, &le) || !strings.Contains(le.Msg, "pickle.load stops here with UnicodeDecodeError") {
						t.Errorf("Python: %s; we (%+v): %v", c.Error, o, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Python loads it; we (%+v): %v", o, err)
				}
				if c.Keys != nil {
					kids := ck.Root.Items(0, ck.Root.NumItems())
					if len(kids) != len(c.Keys) {
						t.Fatalf("%d entries, Python has %d", len(kids), len(c.Keys))
					}
					for i, k := range kids {
						if k.Key != shown(c.Keys[i]) {
							t.Errorf("key %d: %q, Python's %q", i, k.Key, shown(c.Keys[i]))
						}
						if got, err := ck.Node("/" + ckpt.EscapeSegment(k.Seg)); err != nil || got.Key != k.Key {
							t.Errorf("key %d: its segment %q leads to %v (%v)", i, k.Seg, got, err)
						}
					}
					continue
				}
				n := ck.Root
				if n.Kind != ckpt.KindStr || n.Str != shown(c.Codepoints) || n.Len != int64(len(c.Codepoints)) {
					t.Errorf("%s %q of %d characters, Python's str %q of %d (%+v)", n.Kind, n.Str, n.Len, shown(c.Codepoints), len(c.Codepoints), o)
				}
			}
		})
	}
}

// TestPy2StrNotes holds the note on Python 2 strs to Python's own verdicts
// (testdata/text/gen_py2.py): a raw pickle whose str pickle.loads refuses with its default
// encoding="ASCII", and a legacy torch file whose str torch.load refuses with its
// encoding="utf-8", a .npy object array numpy.load(allow_pickle=True) refuses and a
// joblib file joblib.load refuses are opened with a note saying so (naming the program,
// the encoding and the exception); a file Python loads as it is gets no such note.
func TestPy2StrNotes(t *testing.T) {
	raw, err := os.ReadFile("testdata/text/py2.json")
	if err != nil {
		t.Fatal(err)
	}
	var verdicts map[string]struct{ Error string }
	if err := json.Unmarshal(raw, &verdicts); err != nil {
		t.Fatal(err)
	}
	if len(verdicts) < 8 {
		t.Fatalf("%d files in py2.json", len(verdicts))
	}
	for name, v := range verdicts {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile("testdata/text/py2/" + name)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			if err != nil {
				t.Fatalf("Python's verdict %q; we: %v", v.Error, err)
			}
			var note string
			for _, n := range ck.Notes {
				if strings.Contains(n, "Python 2 str") {
					note = n
				}
			}
			// what the note must name: the program, the encoding, the exception
			want := []string{"pickle.load,", "encoding='ASCII'", "UnicodeDecodeError"}
			switch {
			case strings.HasSuffix(name, ".pt"):
				want = []string{"torch.load,", "encoding='utf-8'", "UnicodeDecodeError"}
			case strings.HasSuffix(name, ".npy"):
				want = []string{"numpy.load(f, allow_pickle=True),", "encoding='ASCII'", "UnicodeError"}
			case strings.HasPrefix(name, "joblib_"):
				want = []string{"joblib.load,", "ValueError", "You may be trying to read with python 3 a joblib pickle generated with python 2"}
			}
			if v.Error == "" {
				if note != "" {
					t.Errorf("Python loads it; we note %q", note)
				}
				return
			}
			if !strings.HasPrefix(v.Error, want[2]) && !strings.Contains(v.Error, want[2]) {
				t.Fatalf("Python raised %s; the test expects %s", v.Error, want[2])
			}
			for _, w := range want {
				if !strings.Contains(note, w) {
					t.Errorf("Python: %s; our note %q does not say %q (notes %q)", v.Error, note, w, ck.Notes)
				}
			}
		})
	}
}
