package views

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// expectedModule is testdata/models/expected_module.json: torch's own account of the
// modules saved in module_model.pt and module_training.ckpt (generate_module.py).
type expectedModule struct {
	Modules []struct {
		Name       string
		Class      string
		Training   bool
		ExtraRepr  string `json:"extra_repr"`
		Hooks      int
		ParamCount int64 `json:"param_count"`
		BufCount   int64 `json:"buffer_count"`
		Parameters []struct {
			Name  string
			Shape []int64
			DType string
		}
		Buffers []struct {
			Name       string
			Shape      []int64
			DType      string
			Persistent bool
		}
	}
	TotalParams  int64 `json:"total_params"`
	TotalBuffers int64 `json:"total_buffers"`
}

func readExpectedModules(t *testing.T) (expectedModule, map[string]expectedModule) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "models", "expected_module.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all struct {
		Model    expectedModule             `json:"module_model.pt"`
		Training map[string]json.RawMessage `json:"training_ckpt"`
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	tr := map[string]expectedModule{}
	for _, k := range []string{"model", "ema"} {
		var m expectedModule
		if err := json.Unmarshal(all.Training[k], &m); err != nil {
			t.Fatal(err)
		}
		tr[k] = m
	}
	return all.Model, tr
}

// flatten lists a model view's modules in named_modules() order, with dotted names.
func flatten(m *ModelModule, prefix string, out *[]*ModelModule, names *[]string) {
	*out = append(*out, m)
	*names = append(*names, prefix)
	for _, c := range m.Children {
		p := c.Name
		if prefix != "" {
			p = prefix + "." + c.Name
		}
		flatten(c, p, out, names)
	}
}

// attrPair is one name=value of an extra_repr.
var attrPair = regexp.MustCompile(`(\w+)=(\([^)]*\)|'[^']*'|[^,]+)`)

// checkModel holds a model view to torch's named_modules(): each module's class, training
// flag, own parameters and buffers (persistence included), recursive counts and hooks, and
// every attribute extra_repr prints that the view shows, with the same value.
func checkModel(t *testing.T, v *ModelView, want expectedModule) int {
	t.Helper()
	var mods []*ModelModule
	var names []string
	flatten(v.Root, "", &mods, &names)
	if len(mods) != len(want.Modules) {
		t.Fatalf("%d modules, torch has %d (%v)", len(mods), len(want.Modules), names)
	}
	if v.Params != want.TotalParams || v.Buffers != want.TotalBuffers {
		t.Errorf("totals %d params %d buffers, torch %d %d", v.Params, v.Buffers, want.TotalParams, want.TotalBuffers)
	}
	attrs := 0
	for i, wm := range want.Modules {
		m, name := mods[i], names[i]
		if name != wm.Name || m.FullClass != wm.Class || m.Eval == wm.Training || m.Hooks != wm.Hooks {
			t.Errorf("module %d: %q %s eval=%v hooks=%d, torch %q %s training=%v hooks=%d", i, name, m.FullClass, m.Eval, m.Hooks, wm.Name, wm.Class, wm.Training, wm.Hooks)
		}
		if m.ParamCount != wm.ParamCount || m.BufferCount != wm.BufCount {
			t.Errorf("%s: %d params %d buffers, torch %d %d", wm.Name, m.ParamCount, m.BufferCount, wm.ParamCount, wm.BufCount)
		}
		var gotP, wantP, gotB, wantB []string
		for _, p := range m.Params {
			if !p.Empty {
				gotP = append(gotP, p.Name+" "+p.DType+p.Shape)
			}
		}
		for _, p := range wm.Parameters {
			wantP = append(wantP, p.Name+" "+p.DType+FormatShape(p.Shape))
		}
		for _, b := range m.Buffers {
			gotB = append(gotB, fmt.Sprintf("%s %s%s saved=%v", b.Name, b.DType, b.Shape, !b.NotSaved))
		}
		for _, b := range wm.Buffers {
			wantB = append(wantB, fmt.Sprintf("%s %s%s saved=%v", b.Name, b.DType, FormatShape(b.Shape), b.Persistent))
		}
		if fmt.Sprint(gotP) != fmt.Sprint(wantP) || fmt.Sprint(gotB) != fmt.Sprint(wantB) {
			t.Errorf("%s: params %v buffers %v, torch %v %v", wm.Name, gotP, gotB, wantP, wantB)
		}
		ours := map[string]string{}
		for _, kv := range attrPair.FindAllStringSubmatch(m.Attrs, -1) {
			ours[kv[1]] = strings.TrimSpace(kv[2])
		}
		for _, kv := range attrPair.FindAllStringSubmatch(wm.ExtraRepr, -1) {
			if got, ok := ours[kv[1]]; ok {
				attrs++
				if got != strings.TrimSpace(kv[2]) {
					t.Errorf("%s: %s=%s, torch's repr says %s", wm.Name, kv[1], got, kv[2])
				}
			}
		}
	}
	return attrs
}

func TestModelViewMatchesTorch(t *testing.T) {
	want, training := readExpectedModules(t)
	ck, meta := open(t, "module_model.pt")
	models := FindModels(ck.Root)
	if len(models) != 1 {
		t.Fatalf("FindModels found %d modules, want the root", len(models))
	}
	v := NewModelView(meta.ID, ck, models[0])
	if n := checkModel(t, v, want); n < 15 {
		t.Errorf("only %d attributes of torch's repr were compared", n)
	}
	p := NewCheckpointPage(meta, ck)
	if p.View != ViewModel || len(p.Models) != 1 {
		t.Errorf("the page of a saved module opens in view %q with %d models, want the model view", p.View, len(p.Models))
	}

	ck, meta = open(t, "module_training.ckpt")
	models = FindModels(ck.Root)
	if len(models) != 2 {
		t.Fatalf("FindModels found %d modules in the training checkpoint, want model and ema", len(models))
	}
	for i, key := range []string{"model", "ema"} {
		if models[i].Key != key {
			t.Errorf("model %d is %q, want %q", i, models[i].Key, key)
		}
		checkModel(t, NewModelView(meta.ID, ck, models[i]), training[key])
	}
}

// The state dict of the same model (module_state_dict.pt) has no _parameters or _buffers to
// say which entries are buffers: the module tree tells them from their names and dtypes,
// and its counts are torch's named_parameters() and persistent named_buffers().
func TestStateDictParametersApartFromBuffers(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "models", "expected_module.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all struct {
		Model struct {
			Modules []struct {
				Name       string
				Parameters []struct{ Numel int64 }
				Buffers    []struct {
					Numel      int64
					Persistent bool
				}
			}
			TotalParams int64 `json:"total_params"`
		} `json:"module_model.pt"`
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	var buffers int64
	for _, m := range all.Model.Modules {
		for _, x := range m.Buffers {
			if x.Persistent {
				buffers += x.Numel
			}
		}
	}
	ck, meta := open(t, "module_state_dict.pt")
	p := NewCheckpointPage(meta, ck)
	if p.Modules == nil {
		t.Fatal("no module tree")
	}
	if p.Modules.Params != all.Model.TotalParams || p.Modules.Buffers != buffers {
		t.Errorf("module tree: %d parameters, %d buffer elements; torch: %d, %d", p.Modules.Params, p.Modules.Buffers, all.Model.TotalParams, buffers)
	}
	if !strings.Contains(p.Modules.Totals(), "buffer elements") {
		t.Errorf("totals %q do not count the buffers apart", p.Modules.Totals())
	}
	// per module, the dtypes of its tensors: bn holds float32 weights and statistics and
	// torch's int64 num_batches_tracked
	for _, m := range p.Modules.Modules {
		if m.Name == "bn" && m.DTypes != "float32, int64" {
			t.Errorf("bn's dtypes = %q, want float32, int64 (torch's num_batches_tracked is int64)", m.DTypes)
		}
	}
}

// A tie made by storing one tensor object under two keys (tied_assign.pt) reads as a tied
// tensor, as a shared storage does: torch's count of tensors, storages and shared storages,
// and the module tree counts the tied entry as a tensor (once without ties).
func TestTieByAssignment(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "models", "expected_tied.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Tensors, Storages int
		Shared            int   `json:"shared_storages"`
		Numel             int64 `json:"numel"`
		Unique            int64 `json:"unique_numel"`
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	ck, meta := open(t, "tied_assign.pt")
	p := NewCheckpointPage(meta, ck)
	if len(p.DTypes) != 1 || p.DTypes[0].Tensors != want.Tensors || p.DTypes[0].Params != want.Unique {
		t.Errorf("dtype table %+v; torch: %d tensors, %d elements without ties", p.DTypes, want.Tensors, want.Unique)
	}
	if p.Tensors != want.Tensors || p.Storages != want.Storages || p.SharedStorages != want.Shared {
		t.Errorf("page: %d tensors, %d storages, %d shared; torch: %d, %d, %d", p.Tensors, p.Storages, p.SharedStorages, want.Tensors, want.Storages, want.Shared)
	}
	m := p.Modules
	if m == nil || m.Tensors != want.Tensors || m.Params != want.Numel || m.UniqueParams != want.Unique {
		t.Fatalf("module tree %+v; torch: %d tensors, %d elements, %d untied", m, want.Tensors, want.Numel, want.Unique)
	}
	for _, mod := range m.Modules {
		if mod.Name == "lm_head" && mod.Tensors != 1 {
			t.Errorf("lm_head counts %d tensors, want its tied one", mod.Tensors)
		}
	}
}
