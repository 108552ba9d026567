// Package report holds the JSON shapes in which ckptview reports what a file would do if
// Python loaded it: findings, the calls they are about and torch.load(weights_only=True)'s
// verdict. The HTTP API and the scan command write the same shapes, so a script that reads
// one reads the other.
package report

import (
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/views"
)

// Finding is a ckpt.Finding as JSON.
type Finding struct {
	Severity string `json:"severity"`
	Global   string `json:"global"`
	// Path is the JSON Pointer of the node where the global sits ("" is the root, or
	// nothing when Outside is set).
	Path string `json:"path"`
	// Outside is set when the global is not part of the returned object (left on the
	// pickle stack, in a later pickle, in another archive member): it still runs on load.
	Outside bool   `json:"outside,omitempty"`
	Detail  string `json:"detail"`
	// Where names the pickle in the file and Offset the opcode's byte in it.
	Where  string `json:"where,omitempty"`
	Offset int64  `json:"offset"`
	// Call is the call as data, when the finding is about one.
	Call *Call `json:"call,omitempty"`
}

// Call is a ckpt.Call: the callable and each argument's kind and Python repr.
type Call struct {
	Callable string    `json:"callable"`
	Args     []CallArg `json:"args"`
	More     int       `json:"more_args,omitempty"`
}

// CallArg is one argument of a Call.
type CallArg struct {
	Kind string `json:"kind"`
	Repr string `json:"repr"`
}

// Findings converts the loader's findings, in order; never nil.
func Findings(fs []ckpt.Finding) []Finding {
	out := make([]Finding, 0, len(fs))
	for _, f := range fs {
		fj := Finding{Severity: string(f.Severity), Global: f.Global, Path: f.Path, Outside: f.Outside, Detail: f.Detail, Where: f.Where, Offset: f.Offset}
		if c := f.Call; c != nil {
			fj.Call = &Call{Callable: c.Callable, Args: []CallArg{}, More: c.More}
			for _, a := range c.Args {
				fj.Call.Args = append(fj.Call.Args, CallArg{Kind: a.Kind, Repr: a.Repr})
			}
		}
		out = append(out, fj)
	}
	return out
}

// WeightsOnly is a ckpt.WeightsOnly as JSON.
type WeightsOnly struct {
	Loads   bool     `json:"loads"`
	Needs   []string `json:"needs"`
	Refusal string   `json:"refusal,omitempty"`
	// AddSafeGlobals is the call that makes torch load the file, when only data classes
	// are missing.
	AddSafeGlobals string `json:"add_safe_globals,omitempty"`
}

// NewWeightsOnly converts the verdict; nil for files torch.load does not read.
func NewWeightsOnly(v *ckpt.WeightsOnly) *WeightsOnly {
	if v == nil {
		return nil
	}
	out := &WeightsOnly{Loads: v.Loads, Needs: v.Needs, Refusal: v.Refusal}
	if out.Needs == nil {
		out.Needs = []string{}
	}
	if v.Refusal == "" && len(v.Needs) > 0 {
		out.AddSafeGlobals = views.AddSafeGlobals(v.Needs)
	}
	return out
}
