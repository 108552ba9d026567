package loader

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// TestWeightsOnlyAgainstTorch compares the verdict with what real torch 1.13's own
// weights_only unpickler did with each torch fixture (generate.py ran it). The verdict
// follows torch 2.6's rules, whose allowlist and opcodes are a superset of 1.13's: a file
// 1.13 loads must load; a global or an opcode 1.13 refused that 2.6 does not allow either
// must be named as needed, or refuse the file.
func TestWeightsOnlyAgainstTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		WO string `json:"weights_only_torch_1_13"`
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	class := regexp.MustCompile(`Unsupported class (\S+)`)
	operand := regexp.MustCompile(`Unsupported operand (\d+)`)
	checked := 0
	for name, fx := range all {
		if fx.WO == "" {
			continue
		}
		ck := openFixture(t, name)
		v := ck.WeightsOnly
		if v == nil {
			t.Errorf("%s: no weights_only verdict", name)
			continue
		}
		switch m, o := class.FindStringSubmatch(fx.WO), operand.FindStringSubmatch(fx.WO); {
		case fx.WO == "loads":
			if !v.Loads {
				t.Errorf("%s: verdict %+v, but torch 1.13's weights_only loads it", name, v)
			}
		case m != nil && !weightsOnlyAllowed[m[1]]:
			if v.Loads || (!contains(v.Needs, m[1]) && v.Refusal == "") {
				t.Errorf("%s: verdict %+v, want %s among what it needs (torch: %s)", name, v, m[1], fx.WO)
			}
		case o != nil:
			n, _ := strconv.Atoi(o[1])
			if _, ok := weightsOnlyOps[byte(n)]; !ok && v.Refusal == "" {
				t.Errorf("%s: verdict %+v, want a refusal for opcode %d (torch: %s)", name, v, n, fx.WO)
			}
		}
		checked++
	}
	if checked < 8 {
		t.Errorf("checked %d files, want more", checked)
	}
}

// The verdict's rules on files made to break each one.
func TestWeightsOnlyRules(t *testing.T) {
	// a raw stream through the scanner with the verdict on, as for a torch file's data.pkl
	verdict := func(p string) *ckpt.WeightsOnly {
		w := &woState{needs: map[string]bool{}}
		w.pickle(strings.NewReader(p), 0, int64(len(p)))
		return w.verdict()
	}
	for _, tc := range []struct {
		name, pickle string
		loads        bool
		needs        string
		refusal      string
	}{
		{"an OrderedDict of a tensor-free dict", "\x80\x02ccollections\nOrderedDict\n)R}b.", true, "", ""},
		{"a data class it would need", "\x80\x02cargparse\nNamespace\n)\x81}U\x01aK\x01sb.", false, "argparse.Namespace", ""},
		{"a blocked module", "\x80\x02cos\nsystem\nU\x02ls\x85R.", false, "", "never allows"},
		{"a dangerous callable", "\x80\x02cbuiltins\neval\nU\x011\x85R.", false, "", "never add it"},
		{"protocol 4 opcodes", "\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00K\x01.", false, "", "FRAME"},
		{"SETITEM on an object", "\x80\x02cargparse\nNamespace\n)\x81U\x01aK\x01s.", false, "", "SETITEM"},
	} {
		v := verdict(tc.pickle)
		if v.Loads != tc.loads || (tc.needs != "" && !contains(v.Needs, tc.needs)) || !strings.Contains(v.Refusal, tc.refusal) {
			t.Errorf("%s: %+v, want loads=%v needs %q refusal %q", tc.name, v, tc.loads, tc.needs, tc.refusal)
		}
	}
}
