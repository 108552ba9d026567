package views

import (
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/search"
	"github.com/ckptview/ckptview/internal/tensor"
)

// The two ways a checkpoint page shows its tree.
const (
	// ViewModules groups a state dict on the dots of its keys.
	ViewModules = "modules"
	// ViewRaw lists the unpickled objects as they are.
	ViewRaw = "raw"
	// ViewModel shows modules saved whole (torch.save(model)) as print(model) does.
	ViewModel = "model"
)

// CheckpointPage is the page of one opened file: what it is, what it would run, and its tree.
type CheckpointPage struct {
	Meta FileMeta
	// Search is the search box and, when a query was given, its results.
	Search SearchView
	// URL is the page's share link; RawURL, ModulesURL and ModelURL the same page in each view.
	URL, RawURL, ModulesURL, ModelURL string
	// Models are the modules saved whole in the file (the root, or {"model", "ema"...}).
	Models []*ModelView
	// StateDicts are every state dict the file holds (model, EMA, discriminator...), each a
	// link to the Modules view of it; Modules is the one shown.
	StateDicts []Link
	// Format is the container the loader found ("torch-zip"); Meta.Format is what the store
	// recorded, used when the loader says nothing.
	Format   string
	SizeText string
	// Tensors, Parameters and TensorBytes count every tensor and array in the file.
	Tensors                   int
	Parameters, TensorBytes   int64
	ParametersText, BytesText string
	DTypes                    []DTypeRow
	// Storages is the number of distinct storages; SharedStorages those viewed by more than
	// one tensor (tied weights).
	Storages, SharedStorages int
	// Findings come first on the page: dangers, then warnings.
	Findings []FindingRow
	Notes    []string
	// View is ViewModules or ViewRaw; Modules is nil when the file holds no state dict.
	View    string
	Modules *ModuleTree
	// Root describes the top object; Tree is the first page of its children.
	Root Row
	Tree Children
	// Stats is the all-statistics job's state, set by the server for files with tensors.
	Stats *StatsJob
	// SafetensorsURL downloads every tensor as one safetensors file ("" without tensors).
	SafetensorsURL string
	// Members are the file's archive members (zip formats), CodeFiles how many are
	// TorchScript code.
	Members   []MemberRow
	CodeFiles int
	// WeightsOnly is torch.load(weights_only=True)'s verdict (torch.save files only).
	WeightsOnly *WeightsOnlyView
	// Layers follows the repeated blocks of the Modules view's state dict across the blocks,
	// once their statistics exist (AddLayerChart).
	Layers *LayerChart
	// Compare offers checkpoints to compare this one with (the examples and those opened
	// lately here); CompareURL takes any other's link or id.
	Compare    []Link
	CompareURL string
}

// AddStats gives the tree's tensor rows (raw and modules) a sparkline from the statistics
// lookup has already; it never computes any.
func (p *CheckpointPage) AddStats(lookup StatsLookup) {
	p.Tree.AddStats(lookup)
	if p.Modules != nil {
		var visit func(ms []*Module)
		visit = func(ms []*Module) {
			for _, m := range ms {
				if m.Leaf != nil {
					m.Leaf.addStats(lookup)
				}
				visit(m.Children)
			}
		}
		visit(p.Modules.Modules)
	}
}

// StatsJob is the "compute all statistics" block of a checkpoint page: a button, a
// progress bar while the job runs, links to the exports when it is done.
type StatsJob struct {
	// State is idle, running, done or failed; Queued is set while another checkpoint's job
	// runs first.
	State  string
	Queued bool
	// DoneBytes of TotalBytes are read; TensorsDone of TensorsTotal finished, Failed of
	// them unreadable; Error says why a job failed.
	DoneBytes, TotalBytes             int64
	TensorsDone, TensorsTotal, Failed int
	Error                             string
	// PollURL is the fragment polled while running; StartURL starts a job (POST); CSVURL
	// and JSONURL are the exports; PageURL is the checkpoint page.
	PollURL, StartURL, CSVURL, JSONURL, PageURL string
	// Polled is set when the block answers its own polling: a job that has just finished
	// then offers to reload the page, whose tree has the new sparklines.
	Polled bool
	// Flags are the tensors whose statistics a reader should look at (NaN or infinite
	// values, all zeros, one constant value, extreme magnitudes), each a link; FlagsMore
	// counts those not listed.
	Flags     []StatFlag
	FlagsMore int
}

// StatFlag is one tensor whose statistics stand out, and why.
type StatFlag struct {
	Path, URL, What string
}

// maxFlags is how many flagged tensors the block lists.
const maxFlags = 50

// extremeMagnitude is the largest |value| of a float tensor past which it is flagged: far
// beyond what trained weights, activations' statistics or optimizer moments hold.
const extremeMagnitude = 1e4

// StatFlagOf says why a tensor's statistics stand out ("" when they do not); float says
// whether its dtype holds floats (an integer counter is no extreme magnitude).
func StatFlagOf(s *tensor.Stats, float bool) string {
	switch {
	case s == nil || s.Numel == 0:
		return ""
	case s.NaN > 0 || s.PosInf > 0 || s.NegInf > 0:
		var parts []string
		if s.NaN > 0 {
			parts = append(parts, Thousands(s.NaN)+" NaN")
		}
		if s.PosInf+s.NegInf > 0 {
			parts = append(parts, Thousands(s.PosInf+s.NegInf)+" infinite")
		}
		return strings.Join(parts, " and ") + " of " + Thousands(s.Numel) + " values"
	case s.Count > 0 && s.Zeros == s.Count:
		return "all " + Thousands(s.Count) + " values are zero"
	case s.Count > 1 && s.Min == s.Max:
		return "every value is " + StatNumber(s.Min)
	case float && max(math.Abs(s.Min), math.Abs(s.Max)) >= extremeMagnitude:
		return "extreme values: max |x| = " + StatNumber(max(math.Abs(s.Min), math.Abs(s.Max)))
	}
	return ""
}

// AddFlag lists a flagged tensor, up to maxFlags.
func (j *StatsJob) AddFlag(id, path, what string) {
	if len(j.Flags) >= maxFlags {
		j.FlagsMore++
		return
	}
	j.Flags = append(j.Flags, StatFlag{Path: displayPointer(path), URL: NodeURL(id, path), What: what})
}

// FlagGroup is the flagged tensors that stand out for one reason ("every value is 1"):
// a LayerNorm's weights at init are 48 such tensors of one kind, read as one line.
type FlagGroup struct {
	What string
	// Shown are the first few; Rest the others, listed behind a toggle.
	Shown, Rest []StatFlag
}

// flagsShown is how many tensors of one reason are listed before the toggle.
const flagsShown = 4

// FlagGroups groups the flags by reason, in the order the reasons first appear.
func (j *StatsJob) FlagGroups() []FlagGroup {
	var out []FlagGroup
	at := map[string]int{}
	for _, f := range j.Flags {
		i, ok := at[f.What]
		if !ok {
			i = len(out)
			at[f.What] = i
			out = append(out, FlagGroup{What: f.What})
		}
		g := &out[i]
		if len(g.Shown) < flagsShown {
			g.Shown = append(g.Shown, f)
		} else {
			g.Rest = append(g.Rest, f)
		}
	}
	return out
}

// NewStatsJob is the block for checkpoint id in the given state.
func NewStatsJob(id string, j StatsJob) *StatsJob {
	j.PollURL, j.StartURL = StatsAllURL(id), StatsAllStartURL(id)
	j.CSVURL, j.JSONURL = StatsExportURL(id, "csv"), StatsExportURL(id, "json")
	j.PageURL = CheckpointURL(id)
	return &j
}

// Running reports whether the job is under way (polling continues).
func (j *StatsJob) Running() bool { return j.State == "running" }

// Value and Max are the <progress> element's attributes: bytes read of bytes to read.
func (j *StatsJob) Value() string { return strconv.FormatInt(j.DoneBytes, 10) }

// Max is the <progress> maximum, at least 1 so an all-empty checkpoint still draws.
func (j *StatsJob) Max() string { return strconv.FormatInt(max(j.TotalBytes, 1), 10) }

// Percent is the share of bytes read: "42%".
func (j *StatsJob) Percent() string {
	if j.TotalBytes <= 0 {
		if j.State == "done" {
			return "100%"
		}
		return "0%"
	}
	return strconv.FormatInt(j.DoneBytes*100/j.TotalBytes, 10) + "%"
}

// Summary says how far the job is in words: "12 of 39 tensors · 1.2 MB of 30 kB".
func (j *StatsJob) Summary() string {
	s := Thousands(int64(j.TensorsDone)) + " of " + plural(int64(j.TensorsTotal), "tensor") +
		" · " + HumanBytes(j.DoneBytes) + " of " + HumanBytes(j.TotalBytes)
	if j.Failed > 0 {
		s += " · " + Thousands(int64(j.Failed)) + " unreadable"
	}
	return s
}

// DTypeRow is one line of the bytes-per-dtype table.
type DTypeRow struct {
	DType string
	// Fields lists a structured dtype's fields (FieldsText), "" for others.
	Fields  string
	Tensors int
	Params  int64
	Bytes   int64
	// ParamsText, BytesText and Share (of all tensor bytes) are their human forms.
	ParamsText, BytesText, Share string
}

// FindingRow is one finding in a reviewer's words.
type FindingRow struct {
	// Severity is "danger" or "warning"; Label its title-case form for the badge.
	Severity, Label string
	// Global is the module.name the pickle imports.
	Global string
	// Verb and Call make the sentence: "calls" + "posix.system('touch x')" + " when
	// unpickled", or "imports" + "sklearn.svm._classes.SVC" + Tail.
	Verb, Call, Tail string
	// Detail is the loader's own words when they add to the sentence.
	Detail string
	// Path is where the global sits in the tree; URL links to it (empty when the value is
	// not part of the tree).
	Path, URL string
	// Where names the pickle in the file, with Offset the opcode's byte offset.
	Where  string
	Offset int64
	// Callable and Args are the call the finding is about, from the loader's data (not
	// from Detail's words): each argument's kind and Python repr; MoreArgs counts those
	// past the ones kept.
	Callable string
	Args     []CallArgView
	MoreArgs int
}

// CallArgView is one argument of a call a pickle makes.
type CallArgView struct {
	// Kind is the argument's kind: str, bytes, int, tuple, global, call...
	Kind, Repr string
}

// WeightsOnlyView says what torch.load(weights_only=True) (torch 2.6's rules) would do.
type WeightsOnlyView struct {
	Loads   bool
	Needs   []string
	Refusal string
	Call    string // the add_safe_globals call that would make it load
}

// AddSafeGlobals is the Python that allowlists globals for torch.load(weights_only=True):
// the imports and the call.
func AddSafeGlobals(needs []string) string {
	var imports, names []string
	for _, g := range needs {
		i := strings.LastIndexByte(g, '.')
		if i < 0 {
			continue
		}
		imports = append(imports, "from "+g[:i]+" import "+g[i+1:])
		names = append(names, g[i+1:])
	}
	return strings.Join(imports, "\n") + "\ntorch.serialization.add_safe_globals([" + strings.Join(names, ", ") + "])"
}

// NewCheckpointPage describes an opened checkpoint, in the default view (modules when the
// file holds a state dict).
func NewCheckpointPage(meta FileMeta, ck *ckpt.Checkpoint) CheckpointPage {
	p := CheckpointPage{
		Meta:       meta,
		URL:        CheckpointURL(meta.ID),
		RawURL:     CheckpointURL(meta.ID) + "?view=" + ViewRaw,
		ModulesURL: CheckpointURL(meta.ID) + "?view=" + ViewModules,
		ModelURL:   CheckpointURL(meta.ID) + "?view=" + ViewModel,
		Format:     meta.Format,
		SizeText:   HumanBytes(meta.Size),
		Search:     SearchView{ID: meta.ID, Syntax: search.Syntax, FragmentURL: SearchFragmentURL(meta.ID, "", 0)},
	}
	if ck == nil {
		p.View = ViewRaw
		return p
	}
	if ck.Format != "" {
		p.Format = ck.Format
	}
	p.Tensors, p.Parameters = ck.Tensors, ck.Parameters
	if ck.Tensors > 0 {
		p.SafetensorsURL = DownloadURL(meta.ID, "", "safetensors", false)
	}
	p.ParametersText = HumanCount(ck.Parameters)
	p.DTypes = slices.Clone(ck.Summary("views.dtypeRows", func() any { return dtypeRows(ck) }).([]DTypeRow))
	for _, d := range p.DTypes {
		p.TensorBytes += d.Bytes
	}
	p.BytesText = HumanBytes(p.TensorBytes)
	for i := range p.DTypes {
		p.DTypes[i].Share = Percent(p.DTypes[i].Bytes, p.TensorBytes)
	}
	p.Storages = len(ck.Storages) + ck.RowStorages
	for _, s := range ck.Storages {
		if len(s.Users) > 1 { // a tie by assignment (a ref to a tensor) is one of the users
			p.SharedStorages++
		}
	}
	p.Findings = FindingRows(meta.ID, ck.Findings)
	p.Members = MemberRows(meta.ID, ck.Members)
	if v := ck.WeightsOnly; v != nil {
		p.WeightsOnly = &WeightsOnlyView{Loads: v.Loads, Needs: v.Needs, Refusal: v.Refusal}
		if v.Refusal == "" && len(v.Needs) > 0 {
			p.WeightsOnly.Call = AddSafeGlobals(v.Needs)
		}
	}
	for _, m := range ck.Members {
		if m.Kind == "code" {
			p.CodeFiles++
		}
	}
	p.Notes = ck.Notes
	if ck.Root != nil {
		p.Root = NewRow(meta.ID, ck, ck.Root)
		p.Root.Key = meta.Name
		p.Tree = NewChildren(meta, ck, ck.Root, 0, DefaultLimit)
		if sd := FindStateDict(ck.Root); sd != nil {
			p.Modules = ModuleTreeOf(meta.ID, ck, sd)
		}
		for _, m := range FindModels(ck.Root) {
			p.Models = append(p.Models, NewModelView(meta.ID, ck, m))
		}
		if dicts := FindStateDicts(ck.Root); len(dicts) > 1 {
			for _, d := range dicts {
				p.StateDicts = append(p.StateDicts, Link{Label: displayPointer(d.Path()), URL: CheckpointURL(meta.ID) + "?view=" + ViewModules + "&sd=" + url.QueryEscape(d.Path())})
			}
		}
	}
	p.View = ViewRaw
	switch {
	case len(p.Models) > 0:
		p.View = ViewModel
	case p.Modules != nil:
		p.View = ViewModules
	}
	return p
}

// ResolveRef follows a ref (and refs to refs) to its node, nil if it leads nowhere; any
// other node is itself.
func ResolveRef(ck *ckpt.Checkpoint, n *ckpt.Node) *ckpt.Node {
	for range 64 {
		if n == nil || n.Kind != ckpt.KindRef {
			return n
		}
		t, err := ck.Node(n.Target)
		if err != nil {
			return nil
		}
		n = t
	}
	return nil
}

// AddLayerChart adds the chart of the shown state dict's repeated blocks from the
// statistics lookup has already; it never computes any.
func (p *CheckpointPage) AddLayerChart(ck *ckpt.Checkpoint, lookup StatsLookup) {
	if p.Modules == nil {
		return
	}
	if dict, err := ck.Node(p.Modules.Path); err == nil {
		p.Layers = layerChartOf(p.Meta.ID, ck, dict, lookup)
	}
}

// WithStateDict shows the state dict at pointer in the Modules view (one of StateDicts).
func (p CheckpointPage) WithStateDict(ck *ckpt.Checkpoint, pointer string) CheckpointPage {
	for _, d := range FindStateDicts(ck.Root) {
		if d.Path() == pointer {
			p.Modules = ModuleTreeOf(p.Meta.ID, ck, d)
			p.View = ViewModules
		}
	}
	return p
}

// WithView returns the page in the named view ("modules" or "raw", from ?view=). An unknown
// name, or "modules" for a file without a state dict, keeps the default.
func (p CheckpointPage) WithView(view string) CheckpointPage {
	switch {
	case view == ViewRaw:
		p.View = ViewRaw
	case view == ViewModules && p.Modules != nil:
		p.View = ViewModules
	case view == ViewModel && len(p.Models) > 0:
		p.View = ViewModel
	}
	return p
}

// HasRootChildren reports whether the root is a container with something in it.
func (p CheckpointPage) HasRootChildren() bool { return p.Tree.Total > 0 }

// dtypeRows counts tensors, elements and bytes per dtype by walking the tree. Views that
// are the same (one storage, offset, shape and strides: tied weights) count once in the
// elements and bytes, as in the loader's totals; every tensor counts in Tensors. Rows are
// ordered by bytes, largest first.
func dtypeRows(ck *ckpt.Checkpoint) []DTypeRow {
	byName := map[string]*DTypeRow{}
	row := func(t *ckpt.Tensor) *DTypeRow {
		r := byName[t.DType]
		if r == nil {
			r = &DTypeRow{DType: t.DType, Fields: FieldsText(t)}
			byName[t.DType] = r
		}
		return r
	}
	seen := viewSet{}
	// the rows of a large state dict are counted from its table, no node made: each is
	// the one view of its storage
	countRows := func(_ *ckpt.Node, items ckpt.TensorItems, from, to int) {
		var t ckpt.Tensor
		for i := from; i < to; i++ {
			t.DType, t.Shape = items.RowTensor(i)
			r := row(&t)
			r.Tensors++
			r.Params += t.Numel()
			r.Bytes += t.NBytes()
		}
	}
	ckpt.WalkRows(ck.Root, func(n *ckpt.Node) {
		if n.Kind == ckpt.KindRef { // a tensor stored again counts, its values once
			n = ResolveRef(ck, n)
		}
		if n == nil || (n.Kind != ckpt.KindTensor && n.Kind != ckpt.KindNDArray) || n.Tensor == nil || n.Tensor.Column {
			return
		}
		t := n.Tensor
		r := row(t)
		r.Tensors++
		if seen.add(t) && t.DType != "object" {
			r.Params += t.Numel()
			r.Bytes += t.NBytes()
		}
	}, countRows)
	rows := make([]DTypeRow, 0, len(byName))
	for _, r := range byName {
		r.ParamsText, r.BytesText = HumanCount(r.Params), HumanBytes(r.Bytes)
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b DTypeRow) int {
		if a.Bytes != b.Bytes {
			if a.Bytes > b.Bytes {
				return -1
			}
			return 1
		}
		return strings.Compare(a.DType, b.DType)
	})
	return rows
}

// viewAt is where a view on a storage starts: two tensors that start at the same place
// and have the same shape and strides are the same numbers (tied weights saved twice).
type viewAt struct {
	storage *ckpt.Storage
	offset  int64
}

// viewSet remembers the views counted so far: the first at each place, and any other
// there (rare), so that a state dict of 200,000 tensors is counted without a string made
// for each.
type viewSet struct {
	first map[viewAt]*ckpt.Tensor
	more  map[viewAt][]*ckpt.Tensor
}

// add reports whether t is a view not seen before, and remembers it. Tensors without a
// storage (object arrays) are always new.
func (s *viewSet) add(t *ckpt.Tensor) bool {
	if t.Layout != "" {
		return false // a sparse tensor: its index and value tensors are counted instead
	}
	if t.Storage == nil {
		return true
	}
	k := viewAt{t.Storage, t.StorageOffset}
	f, ok := s.first[k]
	if !ok {
		if s.first == nil {
			s.first = map[viewAt]*ckpt.Tensor{}
		}
		s.first[k] = t
		return true
	}
	if sameView(f, t) {
		return false
	}
	for _, o := range s.more[k] {
		if sameView(o, t) {
			return false
		}
	}
	if s.more == nil {
		s.more = map[viewAt][]*ckpt.Tensor{}
	}
	s.more[k] = append(s.more[k], t)
	return true
}

func sameView(a, b *ckpt.Tensor) bool {
	return slices.Equal(a.Shape, b.Shape) && slices.Equal(a.Strides, b.Strides)
}

// FindingRows puts findings in a reviewer's words, dangers first, each linked to its node
// when it has one (id may be empty when the file could not be opened: no links then).
func FindingRows(id string, fs []ckpt.Finding) []FindingRow {
	rows := make([]FindingRow, 0, len(fs))
	for _, f := range fs {
		rows = append(rows, findingRow(id, f))
	}
	slices.SortStableFunc(rows, func(a, b FindingRow) int {
		return severityRank(a.Severity) - severityRank(b.Severity)
	})
	return rows
}

// CountSeverity counts the rows of one severity.
func CountSeverity(rows []FindingRow, severity ckpt.Severity) int {
	n := 0
	for _, r := range rows {
		if r.Severity == string(severity) {
			n++
		}
	}
	return n
}

// FindingsTitle heads a list of findings: "2 dangers, 1 warning".
func FindingsTitle(rows []FindingRow) string {
	d := CountSeverity(rows, ckpt.SeverityDanger)
	w := len(rows) - d
	switch {
	case d > 0 && w > 0:
		return Plural(d, "danger") + ", " + Plural(w, "warning")
	case d > 0:
		return Plural(d, "danger")
	}
	return Plural(w, "warning")
}

func severityRank(s string) int {
	if s == string(ckpt.SeverityDanger) {
		return 0
	}
	return 1
}

func findingRow(id string, f ckpt.Finding) FindingRow {
	r := FindingRow{
		Severity: string(f.Severity),
		Global:   f.Global,
		Path:     f.Path,
		Where:    f.Where,
		Offset:   f.Offset,
	}
	if id != "" && f.Path != "" {
		r.URL = NodeURL(id, f.Path)
	}
	if c := f.Call; c != nil {
		r.Callable, r.MoreArgs = c.Callable, c.More
		for _, a := range c.Args {
			r.Args = append(r.Args, CallArgView{Kind: a.Kind, Repr: a.Repr})
		}
	}
	// The loader writes "calls posix.system('ls')" for a call it saw, "imports x.y, which
	// ..." for a global it only saw imported, or another sentence for anything else.
	detail := strings.TrimSpace(f.Detail)
	call := ""
	switch {
	case strings.HasPrefix(detail, "calls "):
		call, detail = strings.TrimPrefix(detail, "calls "), ""
	case f.Global != "" && strings.HasPrefix(detail, f.Global+"("):
		call, detail = detail, ""
	case strings.HasPrefix(detail, "imports "+f.Global+","), strings.HasPrefix(detail, "imports "+f.Global+" "), detail == "imports "+f.Global:
		detail = "" // the sentence below says the same
	}
	switch {
	case f.Severity == ckpt.SeverityDanger && call != "":
		r.Label, r.Verb, r.Call, r.Tail = "Danger", "calls", call, " when unpickled"
	case f.Severity == ckpt.SeverityDanger:
		r.Label, r.Verb, r.Call, r.Tail = "Danger", "imports", f.Global, ", which can run code or touch the system, when unpickled"
	case call != "":
		r.Label, r.Verb, r.Call = "Warning", "calls", call
		r.Tail = " when unpickled (not on the allowlist; shown here as an opaque object, never called)"
	default:
		r.Label, r.Verb, r.Call, r.Tail = "Warning", "imports", f.Global, " (not on the allowlist; shown as an opaque object, never called)"
	}
	if r.Call == "" {
		r.Call = "an unnamed global"
	}
	r.Detail = detail
	return r
}
