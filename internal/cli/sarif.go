package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/report"
)

// SARIF 2.1.0 output (OASIS, docs.oasis-open.org/sarif/sarif/v2.1.0): one run of the tool,
// a rule per kind of result, each file an artifact, each danger, warning and unreadable
// file a result on its file. Checkpoints are binary, so results carry no text region: the
// place inside the file is a logical location (the node's JSON Pointer) and properties
// (the pickle and the opcode's byte), and the message says it too.

const (
	sarifSchema  = "https://json.schemastore.org/sarif-2.1.0.json"
	toolURI      = "https://github.com/ckptview/ckptview"
	ruleRunsCode = "CKV001"
	ruleImport   = "CKV002"
	ruleUnread   = "CKV003"
)

type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool        sarifTool         `json:"tool"`
	Invocations []sarifInvocation `json:"invocations"`
	Artifacts   []sarifArtifact   `json:"artifacts"`
	Results     []sarifResult     `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID                   string         `json:"id"`
	Name                 string         `json:"name"`
	ShortDescription     sarifText      `json:"shortDescription"`
	FullDescription      sarifText      `json:"fullDescription"`
	Help                 sarifText      `json:"help"`
	DefaultConfiguration sarifConfig    `json:"defaultConfiguration"`
	Properties           map[string]any `json:"properties"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifConfig struct {
	Level string `json:"level"`
}

type sarifInvocation struct {
	ExecutionSuccessful bool `json:"executionSuccessful"`
	ExitCode            int  `json:"exitCode"`
}

type sarifArtifact struct {
	Location sarifArtifactLocation `json:"location"`
	Length   int64                 `json:"length"`
	Roles    []string              `json:"roles"`
}

type sarifArtifactLocation struct {
	URI       string `json:"uri"`
	URIBaseID string `json:"uriBaseId,omitempty"`
	Index     *int   `json:"index,omitempty"`
}

type sarifResult struct {
	RuleID              string            `json:"ruleId"`
	RuleIndex           int               `json:"ruleIndex"`
	Level               string            `json:"level"`
	Message             sarifText         `json:"message"`
	Locations           []sarifLocation   `json:"locations"`
	PartialFingerprints map[string]string `json:"partialFingerprints"`
	Properties          map[string]any    `json:"properties,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical  `json:"physicalLocation"`
	LogicalLocations []sarifLogical `json:"logicalLocations,omitempty"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifactLocation `json:"artifactLocation"`
}

type sarifLogical struct {
	Name               string `json:"name,omitempty"`
	FullyQualifiedName string `json:"fullyQualifiedName"`
	Kind               string `json:"kind"`
}

// sarifRules are the rules, in the order ruleIndex counts them.
var sarifRules = []sarifRule{
	{
		ID: ruleRunsCode, Name: "LoadingRunsCode",
		ShortDescription: sarifText{"Loading this file runs code"},
		FullDescription: sarifText{"If Python loaded this file (pickle.load, torch.load with weights_only=False, joblib.load), " +
			"it would call a function that runs code, touches the system or that ckptview has not vetted as a pure data constructor."},
		Help: sarifText{"Do not load the file with pickle, torch.load(weights_only=False) or joblib.load. The message names the call " +
			"and its arguments; ckptview shows the whole file without running it."},
		DefaultConfiguration: sarifConfig{"error"},
		Properties:           map[string]any{"tags": []string{"security", "pickle"}, "security-severity": "9.8", "precision": "high"},
	},
	{
		ID: ruleImport, Name: "UnvettedImport",
		ShortDescription: sarifText{"Loading this file imports code ckptview has not vetted"},
		FullDescription: sarifText{"The file names a class that Python would import and rebuild the standard way (its __new__ and its " +
			"state, or __setstate__) when it is loaded; ckptview does not know it as a pure data class."},
		Help:                 sarifText{"Check that the class comes from a library you trust before loading the file with Python."},
		DefaultConfiguration: sarifConfig{"warning"},
		Properties:           map[string]any{"tags": []string{"security", "pickle"}, "security-severity": "4.0", "precision": "medium"},
	},
	{
		ID: ruleUnread, Name: "CouldNotBeChecked",
		ShortDescription: sarifText{"The file could not be read to the end, so it is not known to be safe"},
		FullDescription: sarifText{"ckptview could not read this file to its end (it is malformed, over a limit, or in a form it does not read), " +
			"so what Python would run when loading it is unknown. The scan fails closed."},
		Help:                 sarifText{"The message says what stopped the reading; a limit names its flag."},
		DefaultConfiguration: sarifConfig{"error"},
		Properties:           map[string]any{"tags": []string{"security"}, "security-severity": "7.0", "precision": "high"},
	},
}

func newSARIF(version string) *sarifLog {
	return &sarifLog{Schema: sarifSchema, Version: "2.1.0", Runs: []sarifRun{{
		Tool:      sarifTool{Driver: sarifDriver{Name: "ckptview", Version: version, InformationURI: toolURI, Rules: sarifRules}},
		Artifacts: []sarifArtifact{}, Results: []sarifResult{},
	}}}
}

// artifactURI is a file's SARIF location: a relative path stays relative to the source
// root (code-scanning dashboards resolve it against the repository), an absolute one is a
// file URI.
func artifactURI(path string) sarifArtifactLocation {
	p := filepath.ToSlash(filepath.Clean(path))
	if filepath.IsAbs(path) {
		return sarifArtifactLocation{URI: (&url.URL{Scheme: "file", Path: p}).String()}
	}
	return sarifArtifactLocation{URI: (&url.URL{Path: strings.TrimPrefix(p, "./")}).String(), URIBaseID: "%SRCROOT%"}
}

// add records one file's report.
func (l *sarifLog) add(r FileReport) {
	if r.Verdict == VerdictSkipped {
		return
	}
	run := &l.Runs[0]
	idx := len(run.Artifacts)
	art := artifactURI(r.File)
	run.Artifacts = append(run.Artifacts, sarifArtifact{Location: art, Length: r.Size, Roles: []string{"analysisTarget"}})
	art.Index = &idx
	phys := sarifPhysical{ArtifactLocation: art}
	for _, f := range r.Findings {
		rule, level := 0, "error"
		if f.Severity != string(ckpt.SeverityDanger) {
			rule, level = 1, "warning"
		}
		loc := sarifLocation{PhysicalLocation: phys}
		if !f.Outside {
			loc.LogicalLocations = []sarifLogical{{Name: lastSegment(f.Path), FullyQualifiedName: displayPointer(f.Path), Kind: "object"}}
		}
		props := map[string]any{"global": f.Global, "where": f.Where, "offset": f.Offset, "pointer": f.Path, "outside_tree": f.Outside}
		if f.Call != nil {
			props["call"] = f.Call
		}
		run.Results = append(run.Results, sarifResult{
			RuleID: sarifRules[rule].ID, RuleIndex: rule, Level: level,
			Message:             sarifText{fmt.Sprintf("%s: %s, %s", r.File, f.Detail, findingPlace(f))},
			Locations:           []sarifLocation{loc},
			PartialFingerprints: map[string]string{"ckptviewFinding/v1": fingerprint(sarifRules[rule].ID, r.File, f)},
			Properties:          props,
		})
	}
	if r.Verdict == VerdictUnreadable {
		run.Results = append(run.Results, sarifResult{
			RuleID: ruleUnread, RuleIndex: 2, Level: "error",
			Message:             sarifText{fmt.Sprintf("%s could not be checked: %s", r.File, r.Error)},
			Locations:           []sarifLocation{{PhysicalLocation: phys}},
			PartialFingerprints: map[string]string{"ckptviewFinding/v1": fingerprint(ruleUnread, r.File, report.Finding{Detail: r.Error})},
		})
	}
}

// finish records how the run ended.
func (l *sarifLog) finish(code int) {
	l.Runs[0].Invocations = []sarifInvocation{{ExecutionSuccessful: code != ExitUnreadable, ExitCode: code}}
}

// fingerprint identifies a result across runs, so a dashboard tracks one finding as one.
func fingerprint(rule, file string, f report.Finding) string {
	h := sha256.New()
	for _, s := range []string{rule, filepath.ToSlash(file), f.Global, f.Where, fmt.Sprint(f.Offset), f.Path, f.Detail} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// lastSegment is a node's key, "/" for the root.
func lastSegment(pointer string) string {
	if pointer == "" {
		return "/"
	}
	i := strings.LastIndexByte(pointer, '/')
	return ckpt.UnescapeSegment(pointer[i+1:])
}
