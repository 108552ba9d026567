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
