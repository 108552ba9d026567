package loader

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// expected_objkeys.json: what pickle.load and torch.load made of dicts keyed by objects
// (generate_objkeys.py).
type objKeysFacts struct {
	Dicts    map[string][]string `json:"dicts"`
	KeyIndex json.RawMessage     `json:"key_index"`
	// the torch files
	StateLen     int       `json:"state_len"`
	ExpAvgShapes [][]int64 `json:"exp_avg_shapes"`
	ParamShapes  [][]int64 `json:"param_shapes"`
	Tensors      int       `json:"tensors"`
}

func loadObjKeys(t *testing.T) map[string]objKeysFacts {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelsDir, "expected_objkeys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var facts map[string]objKeysFacts
	if err := json.Unmarshal(b, &facts); err != nil {
		t.Fatal(err)
	}
	if len(facts) != 3 {
		t.Fatalf("expected_objkeys.json describes %d files, want 3", len(facts))
	}
	return facts
}

func nodeAt(t *testing.T, ck *ckpt.Checkpoint, pointer string) *ckpt.Node {
	t.Helper()
	n, err := ck.Node(pointer)
	if err != nil {
		t.Fatalf("%s: %v", pointer, err)
	}
	return n
}

// checkKeyedBy checks that every entry of dict, in order, is keyed by a ref to the item of
// list that Python says is its key (the object met first, where the tree holds it: a ref
// into a key leads nowhere a pointer can go), and that the ref resolves.
func checkKeyedBy(t *testing.T, ck *ckpt.Checkpoint, dict *ckpt.Node, list string, want []int) {
	t.Helper()
	entries := dict.Items(0, dict.NumItems())
	if len(entries) != len(want) {
		t.Fatalf("%s has %d entries, Python %d", dict.Path(), len(entries), len(want))
	}
	for i, e := range entries {
		k := e.DictKey
		if k == nil || k.Kind != ckpt.KindRef {
			t.Errorf("%s: key %+v, want a ref to %s/%d", e.Path(), k, list, want[i])
			continue
		}
		if target := list + "/" + strconv.Itoa(want[i]); k.Target != target {
			t.Errorf("%s: key is a ref to %s, Python's key is %s", e.Path(), k.Target, target)
		}
		if _, err := ck.Node(k.Target); err != nil {
			t.Errorf("%s: the key's ref does not resolve: %v", e.Path(), err)
		}
	}
}

// A dict keyed by objects has an entry per key, as Python's has: two objects of one class
// are two keys, though they read alike (all but one entry were dropped, so that an
// optimizer saved whole showed the state of one parameter of four). A key that is an object
// found elsewhere in the file is a ref to it there, and the tensors of a checkpoint are
// counted once whichever place holds them.
func TestDictsKeyedByObjects(t *testing.T) {
	facts := loadObjKeys(t)

	t.Run("objkeys.pkl", func(t *testing.T) {
		want := facts["objkeys.pkl"]
		var keyIndex map[string][]int
		if err := json.Unmarshal(want.KeyIndex, &keyIndex); err != nil {
			t.Fatal(err)
		}
		ck := openFixture(t, "objkeys.pkl")
		for path, values := range want.Dicts {
			d := nodeAt(t, ck, path)
			var got []string
			for _, e := range d.Items(0, d.NumItems()) {
				got = append(got, e.Str)
			}
			if !slices.Equal(got, values) {
				t.Errorf("%s values %q, Python's %q", path, got, values)
			}
			checkKeyedBy(t, ck, d, "/keys", keyIndex[path])
		}
		for _, f := range ck.Findings {
			if f.Global == "__main__.Key" && (f.Outside || f.Path == "") {
				t.Errorf("the import of the keys' class is reported outside the returned object: %+v", f)
			}
		}
	})

	for _, name := range []string{"optim_zip.pt", "optim_legacy.pt"} {
		t.Run(name, func(t *testing.T) {
			want := facts[name]
			var keyIndex []int
			if err := json.Unmarshal(want.KeyIndex, &keyIndex); err != nil {
				t.Fatal(err)
			}
			ck := openFixture(t, name)
			state := nodeAt(t, ck, "/optimizer/state")
			if state.NumItems() != want.StateLen {
				t.Fatalf("the optimizer's state has %d entries, torch's %d", state.NumItems(), want.StateLen)
			}
			checkKeyedBy(t, ck, state, "/optimizer/param_groups/0/params", keyIndex)
			for i, e := range state.Items(0, state.NumItems()) {
				avg := nodeAt(t, ck, e.Path()+"/exp_avg")
				if avg.Tensor == nil || !slices.Equal(avg.Tensor.Shape, want.ExpAvgShapes[i]) {
					t.Errorf("%s/exp_avg = %+v, torch's shape %v", e.Path(), avg.Tensor, want.ExpAvgShapes[i])
				}
			}
			params := nodeAt(t, ck, "/optimizer/param_groups/0/params")
			for i, p := range params.Items(0, params.NumItems()) {
				if p.Tensor == nil || !slices.Equal(p.Tensor.Shape, want.ParamShapes[i]) {
					t.Errorf("%s = %s %+v, torch's parameter of shape %v", p.Path(), p.Kind, p.Tensor, want.ParamShapes[i])
				}
			}
			if ck.Tensors != want.Tensors {
				t.Errorf("%d tensors, torch.load's value holds %d distinct tensor objects", ck.Tensors, want.Tensors)
			}
		})
	}
}
