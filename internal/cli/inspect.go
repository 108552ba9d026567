package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/export"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/report"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
)

// InspectConfig is one run of the inspect command.
type InspectConfig struct {
	Options
	File string
	// Pointer is the JSON Pointer of the node to show ("" or "/": the root).
	Pointer string
	// Format is "text" or "json".
	Format string
	// Depth is how many levels of the tree under the node are shown; Items how many
	// children of each container.
	Depth, Items int
	// Stats computes the statistics of every tensor under the node.
	Stats bool
	// Workers read one tensor's values (0: GOMAXPROCS, at most 8).
	Workers int
}

// Width is the terminal width the text output is laid out for.
const Width = 80

// inspectJSON is inspect's JSON output.
type inspectJSON struct {
	File         string              `json:"file"`
	Format       string              `json:"format"`
	Size         int64               `json:"size"`
	Tensors      int                 `json:"tensors"`
	Parameters   int64               `json:"parameters"`
	BytesByDType map[string]int64    `json:"bytes_by_dtype"`
	Findings     []report.Finding    `json:"findings"`
	WeightsOnly  *report.WeightsOnly `json:"weights_only,omitempty"`
	Notes        []string            `json:"notes"`
	Pointer      string              `json:"pointer"`
	Node         treeJSON            `json:"node"`
	Stats        []statsRowJSON      `json:"stats,omitempty"`
}

// treeJSON is a node and, down to the depth asked for, its children.
type treeJSON struct {
	Key      string     `json:"key"`
	Path     string     `json:"path"`
	Kind     ckpt.Kind  `json:"kind"`
	Type     string     `json:"type"`
	Summary  string     `json:"summary"`
	Items    int        `json:"items"`
	Children []treeJSON `json:"children,omitempty"`
	// More counts the children not shown (past -items).
	More int `json:"more,omitempty"`
}

// statsRowJSON is one tensor's statistics.
type statsRowJSON struct {
	Path  string            `json:"path"`
	DType string            `json:"dtype"`
	Shape []int64           `json:"shape"`
	Stats *export.StatsJSON `json:"stats,omitempty"`
	Error string            `json:"error,omitempty"`
}

// ErrUsage marks a command line that asks for something that does not exist.
var ErrUsage = errors.New("usage")

// Inspect runs the inspect command, writing to stdout. Errors say what went wrong; the
// file's findings are shown, not judged (the scan command judges).
func Inspect(ctx context.Context, cfg InspectConfig, stdout io.Writer) error {
	ck, size, closeCk, err := openFile(ctx, cfg.File, cfg.Options)
	if err != nil {
		var le *loader.Error
		if errors.As(err, &le) {
			msg := fmt.Sprintf("%s cannot be opened: %s", cfg.File, le.Text())
			for _, f := range le.Findings {
				msg += fmt.Sprintf("\n  %s: %s", f.Severity, f.Detail)
			}
			return errors.New(msg)
		}
		return err
	}
	defer closeCk()
	ptr := cfg.Pointer
	if ptr == "/" {
		ptr = ""
	}
	if ptr != "" && !strings.HasPrefix(ptr, "/") {
		ptr = "/" + ptr
	}
	n, err := ck.Node(ptr)
	if err != nil {
		return fmt.Errorf("%w: %s has no node at %s (a JSON Pointer such as /model_state_dict/fc.weight)", ErrUsage, cfg.File, views.PyRepr(cfg.Pointer))
	}
	depth, items := max(cfg.Depth, 0), max(cfg.Items, 1)

	var rows []statsRowJSON
	if cfg.Stats {
		rows, err = statsUnder(ctx, ck, n, cfg.Workers)
		if err != nil {
			return err
		}
	}
	if cfg.Format == "json" {
		out := inspectJSON{File: cfg.File, Format: ck.Format, Size: size, Tensors: ck.Tensors, Parameters: ck.Parameters,
			BytesByDType: ck.BytesByDType, Findings: report.Findings(ck.Findings), WeightsOnly: report.NewWeightsOnly(ck.WeightsOnly),
			Notes: ck.Notes, Pointer: ptr, Node: tree(n, depth, items), Stats: rows}
		if out.Notes == nil {
			out.Notes = []string{}
		}
		if out.BytesByDType == nil {
			out.BytesByDType = map[string]int64{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	writeSummary(stdout, cfg.File, size, ck)
	fmt.Fprintf(stdout, "\ntree at %s (%s, %s each: -depth, -items)\n", displayPointer(ptr), views.Plural(depth, "level"), views.Plural(items, "item"))
	writeTree(stdout, n, 0, depth, items)
	if cfg.Stats {
		writeStats(stdout, rows)
	}
	return nil
}

func displayPointer(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// writeSummary writes the checkpoint's facts, findings, verdict and bytes per dtype.
func writeSummary(w io.Writer, file string, size int64, ck *ckpt.Checkpoint) {
	fmt.Fprintln(w, file)
	field := func(name, value string) { writeWrapped(w, fmt.Sprintf("  %-13s", name), value) }
	field("format", ck.Format)
	field("size", fmt.Sprintf("%s (%s bytes)", views.HumanBytes(size), views.Thousands(size)))
	field("tensors", fmt.Sprintf("%s, %s parameters", views.Thousands(int64(ck.Tensors)), views.Thousands(ck.Parameters)))
	dangers, warnings := 0, 0
	for _, f := range ck.Findings {
		if f.Severity == ckpt.SeverityDanger {
			dangers++
		} else {
			warnings++
		}
	}
	switch {
	case len(ck.Findings) == 0:
		field("findings", "none: loading it with Python runs nothing ckptview has not vetted")
	default:
		field("findings", views.Plural(dangers, "danger")+", "+views.Plural(warnings, "warning"))
	}
	if wo := ck.WeightsOnly; wo != nil {
		switch {
		case wo.Loads:
			field("weights_only", "torch.load(weights_only=True) loads it")
		case wo.Refusal != "":
			field("weights_only", "torch.load(weights_only=True) refuses it: "+wo.Refusal)
		default:
			field("weights_only", "torch.load(weights_only=True) needs "+strings.Join(wo.Needs, ", ")+" allowed: "+
				strings.ReplaceAll(views.AddSafeGlobals(wo.Needs), "\n", "; "))
		}
	}
	for _, f := range ck.Findings {
		writeWrapped(w, "    ", string(f.Severity)+": "+f.Detail)
		writeWrapped(w, "      ", findingPlace(report.Findings([]ckpt.Finding{f})[0]))
	}
	for _, n := range ck.Notes {
		writeWrapped(w, "  note         ", n)
	}
	if len(ck.BytesByDType) > 0 {
		fmt.Fprintln(w, "\nbytes per dtype")
		var total int64
		dts := make([]string, 0, len(ck.BytesByDType))
		for d, b := range ck.BytesByDType {
			dts = append(dts, d)
			total += b
		}
		sort.Slice(dts, func(i, j int) bool {
			bi, bj := ck.BytesByDType[dts[i]], ck.BytesByDType[dts[j]]
			return bi > bj || (bi == bj && dts[i] < dts[j])
		})
		for _, d := range dts {
			b := ck.BytesByDType[d]
			fmt.Fprintf(w, "  %-16s %12s %8s\n", d, views.HumanBytes(b), views.Percent(b, total))
		}
	}
}

// tree is n and its children down to depth levels, items per container.
func tree(n *ckpt.Node, depth, items int) treeJSON {
	t := treeJSON{Key: n.Key, Path: n.Path(), Kind: n.Kind, Type: n.Type, Summary: views.Summary(n), Items: n.NumItems()}
	if depth > 0 {
		for _, k := range n.Items(0, items) {
			t.Children = append(t.Children, tree(k, depth-1, items))
		}
		t.More = max(0, t.Items-items)
	}
	return t
}

// writeTree writes n's children as an indented outline, a key and a summary per line, cut
// to the terminal's width.
func writeTree(w io.Writer, n *ckpt.Node, level, depth, items int) {
	if level == 0 {
		fmt.Fprintln(w, cut("  "+keyOf(n)+"  "+views.Summary(n), Width))
	}
	if level >= depth {
		return
	}
	indent := strings.Repeat("  ", level+2)
	kids := n.Items(0, items)
	keyWidth := 0
	for _, k := range kids {
		keyWidth = max(keyWidth, utf8.RuneCountInString(keyOf(k)))
	}
	keyWidth = min(keyWidth, (Width-len(indent))/2)
	for _, k := range kids {
		key := cut(keyOf(k), keyWidth)
		pad := strings.Repeat(" ", keyWidth-utf8.RuneCountInString(key))
		fmt.Fprintln(w, cut(indent+key+pad+"  "+views.Summary(k), Width))
		writeTree(w, k, level+1, depth, items)
	}
	if more := n.NumItems() - len(kids); more > 0 {
		fmt.Fprintf(w, "%s… %s more\n", indent, views.Thousands(int64(more)))
	}
}

func keyOf(n *ckpt.Node) string {
	switch {
	case n.Path() == "":
		return "/"
	case n.Key == "":
		return "''" // an empty str key, as Python prints it
	}
	return n.Key
}

// cut shortens s to width runes, ending in "…" when it cut.
func cut(s string, width int) string {
	s = strings.ReplaceAll(s, "\n", `\n`)
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:max(0, width-1)]) + "…"
}

// statsUnder computes the statistics of every tensor under n, in tree order (a ref to a
// tensor is not computed again).
func statsUnder(ctx context.Context, ck *ckpt.Checkpoint, n *ckpt.Node, workers int) ([]statsRowJSON, error) {
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 8)
	}
	var rows []statsRowJSON
	var err error
	ckpt.Walk(n, func(k *ckpt.Node) {
		if err != nil || (k.Kind != ckpt.KindTensor && k.Kind != ckpt.KindNDArray) || k.Tensor == nil {
			return
		}
		row := statsRowJSON{Path: k.Path(), DType: k.Tensor.DType, Shape: k.Tensor.Shape}
		if row.Shape == nil {
			row.Shape = []int64{}
		}
		v := k.View()
		switch {
		case k.Tensor.Objects != nil:
			row.Error = "a numpy object array: no statistics"
		case k.Tensor.Layout == "" && tensor.ElementSize(k.Tensor.DType) == 0 && k.Tensor.Decoded == nil:
			row.Error = "dtype " + k.Tensor.DType + " has no numeric decoding: no statistics"
		case v == nil:
			row.Error = "the file holds no readable data for it"
		default:
			if cerr := v.Check(); cerr != nil {
				row.Error = cerr.Error()
				break
			}
			st, cerr := tensor.Compute(ctx, v, workers, nil)
			if cerr != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
					return
				}
				row.Error = cerr.Error()
				break
			}
			s := export.NewStatsJSON(st)
			row.Stats = &s
		}
		rows = append(rows, row)
	})
	return rows, err
}

// writeStats writes one line per tensor: mean, std, min, max and the values that are not
// finite, laid out in 80 columns.
func writeStats(w io.Writer, rows []statsRowJSON) {
	fmt.Fprintf(w, "\nstatistics (%s)\n", views.Plural(len(rows), "tensor"))
	const pathWidth = 27
	fmt.Fprintf(w, "  %-*s %9s %9s %9s %9s %9s\n", pathWidth, "tensor", "mean", "std", "min", "max", "nan/inf")
	num := func(f *float64) string {
		if f == nil {
			return "-"
		}
		for digits := 4; ; digits-- {
			if t := strconv.FormatFloat(*f, 'g', digits, 64); len(t) <= 9 || digits == 1 {
				return t
			}
		}
	}
	for _, r := range rows {
		name := r.Path
		if len([]rune(name)) > pathWidth {
			name = "…" + string([]rune(name)[len([]rune(name))-pathWidth+1:])
		}
		if r.Stats == nil {
			fmt.Fprintf(w, "  %-*s %s\n", pathWidth, name, cut(r.Error, Width-pathWidth-3))
			continue
		}
		s := r.Stats
		fmt.Fprintf(w, "  %-*s %9s %9s %9s %9s %9s\n", pathWidth, name, num(s.Mean), num(s.Std), num(s.Min), num(s.Max),
			views.Thousands(s.NaN+s.PosInf+s.NegInf))
	}
}
