package web

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// This file checks that every text/background pair of static/app.css meets WCAG 2.1 AA
// contrast (success criterion 1.4.3) in the light and the dark colour scheme. It reads
// app.css itself: the custom properties of :root, overridden in dark mode by the :root of
// "@media (prefers-color-scheme: dark)", and the declarations of the rules the table below
// names. A pair that drops under its threshold fails with its selectors, mode, colours and
// ratio; a colour rule that no pair names fails too, so a new one cannot slip past.

// darkMedia is the media query of the dark-mode block.
const darkMedia = "(prefers-color-scheme: dark)"

// contrastPair is one element's foreground over what is behind it.
type contrastPair struct {
	// el are the selectors that style the element, in the order of its class list; the
	// cascade between them follows specificity, then source order. Naming a :hover or
	// :target selector checks that state.
	el []string
	// prop is the foreground property: "color" (the default), or "fill" or "stroke" for
	// SVG shapes.
	prop string
	// on are the boxes the element sits in, innermost first, each a list of selectors like
	// el. A box without a background lets the next one show through; the page (body)
	// is always the last. When el has no color, it inherits the first box's that has one.
	on [][]string
	// field is a form control: it must set its own background, since the browser's default
	// (the Field system colour, dark grey in dark mode) is not the page's.
	field bool
	// graphic is a graphical object (a histogram bar, a sparkline), held to 3:1 by WCAG
	// 1.4.11 rather than text's 4.5:1.
	graphic bool
	// large is text of at least 24px, or 18.66px bold: 3:1.
	large bool
	// own is a foreground that does not inherit (::placeholder, whose default is the
	// browser's): el must set it.
	own bool
}

// Boxes the pairs sit in.
var (
	topbar     = [][]string{{".topbar"}}
	subtle     = [][]string{{".value, .hex"}}       // a bg-subtle panel (the same as .hist-svg, .findings-none...)
	treeHover  = [][]string{{".row > .line:hover"}} // a hovered tree row
	summHover  = [][]string{{".row > details > summary:hover"}}
	modHover   = [][]string{{".mline:hover:not(.mhead)"}} // a hovered module line
	warnBox    = [][]string{{".findings"}}
	dangerBox  = [][]string{{".findings", ".findings-danger"}}
	noneBox    = [][]string{{".findings", ".findings-none"}}
	alertBox   = [][]string{{".alert", ".alert-danger"}}
	alertWarn  = [][]string{{".alert", ".alert-warning"}}
	uploadErr  = [][]string{{".upload-error"}}
	dropzone   = [][]string{{".dropzone"}}
	dropHover  = [][]string{{".dropzone", ".dropzone:hover, .dropzone.dragover"}}
	exampleHov = [][]string{{".example:hover"}}
	popup      = [][]string{{".compare-pop"}}
	keyHelp    = [][]string{{".key-help"}}
	code       = [][]string{{"table.code"}}
	codeTarget = [][]string{{"table.code tr:target"}, {"table.code"}}
	sliceHover = [][]string{{".slice-table tbody tr:hover td"}}
	histSVG    = [][]string{{".hist-svg .hit"}, {".hist-svg"}}
	histHover  = [][]string{{".hist-svg .hit", ".hist-svg .bin:hover .hit"}, {".hist-svg"}}
)

// contrastPairs are the pairs app.css draws. Text without a colour of its own (plain
// text, <strong>, code) is the body's color in its box.
var contrastPairs = []contrastPair{
	// Plain text and links.
	{el: []string{"body"}},
	{el: []string{"a"}},
	{el: []string{"a"}, on: subtle},
	{el: []string{"a"}, on: warnBox},
	{el: []string{"a"}, on: dangerBox},
	{el: []string{"a"}, on: noneBox},
	{el: []string{"a"}, on: alertBox},
	{el: []string{"a"}, on: alertWarn},
	{el: []string{"a"}, on: treeHover},
	{el: []string{"a"}, on: modHover},
	{el: []string{"a"}, on: exampleHov},
	{el: []string{"a"}, on: popup},
	{el: []string{"a"}, on: sliceHover},
	{el: []string{"h3"}},
	{el: []string{".slice h3"}},
	{el: []string{".linkish"}},
	{el: []string{".shape"}},

	// Muted text on every background it meets.
	{el: []string{".muted"}},
	{el: []string{".muted"}, on: subtle},
	{el: []string{".muted"}, on: warnBox},
	{el: []string{".muted"}, on: dangerBox},
	{el: []string{".muted"}, on: noneBox},
	{el: []string{".muted"}, on: alertBox},
	{el: []string{".muted"}, on: alertWarn},
	{el: []string{".muted"}, on: uploadErr},
	{el: []string{".muted"}, on: treeHover},
	{el: []string{".muted"}, on: summHover},
	{el: []string{".muted"}, on: modHover},
	{el: []string{".muted"}, on: exampleHov},
	{el: []string{".muted"}, on: popup},
	{el: []string{".muted"}, on: keyHelp},
	{el: []string{".intro p"}},
	{el: []string{".subline"}},
	{el: []string{".facts dt"}},
	{el: []string{".kind"}},
	{el: []string{".progress-text"}},
	{el: []string{".crumbs li + li::before"}},
	{el: []string{".side-label"}},
	{el: []string{".compare-pop label"}, on: popup},
	{el: []string{".example p"}, on: exampleHov},
	{el: []string{".example p"}},

	// Top bar.
	{el: []string{".brand"}, on: topbar},
	{el: []string{".tagline"}, on: topbar},

	// Buttons: primary, quiet, small, hovered, "Copied".
	{el: []string{".btn"}},
	{el: []string{".btn", ".btn:hover"}},
	{el: []string{".btn", ".btn-small"}, on: popup},
	{el: []string{".btn", ".btn-quiet"}},
	{el: []string{".btn", ".btn-quiet", ".btn:hover", ".btn-quiet:hover"}},
	{el: []string{".btn", ".btn-quiet", ".btn-small"}},
	{el: []string{".btn", ".btn-quiet", ".btn.copied"}},

	// Badges: on the page, in findings boxes and hovered rows their own background counts.
	{el: []string{".badge", ".badge-danger"}},
	{el: []string{".badge", ".badge-warning"}},
	{el: []string{".badge", ".badge-ok"}},
	{el: []string{".badge", ".badge-info"}},

	// Alerts and findings.
	{el: []string{".alert", ".alert-danger"}},
	{el: []string{".alert", ".alert-warning"}},
	{el: []string{"body"}, on: uploadErr},
	{el: []string{"body"}, on: warnBox},
	{el: []string{"body"}, on: noneBox},
	{el: []string{".finding-detail"}, on: dangerBox},
	{el: []string{".finding-call"}, on: dangerBox},
	{el: []string{".finding-args code"}, on: dangerBox},
	{el: []string{".finding-args code"}, on: warnBox},
	{el: []string{".fragment-error"}},
	{el: []string{".error-status"}},
	{el: []string{".search-error"}},

	// Home: the drop zone.
	{el: []string{".dropzone-title"}, on: dropzone},
	{el: []string{".dropzone-sub"}, on: dropzone},
	{el: []string{".dropzone-title"}, on: dropHover},
	{el: []string{".dropzone-sub"}, on: dropHover},

	// Form fields and their placeholders.
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])"}, field: true},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".open-url input[type=url]"}, field: true},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".compare-pop input"}, field: true, on: popup},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".diff-filter input"}, field: true},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".upload-token input"}, field: true},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".slice-form input[type=number]"}, field: true},
	{el: []string{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".search-input"}, field: true},
	{el: []string{"::placeholder"}, own: true, on: [][]string{{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".search-input"}}},
	{el: []string{"::placeholder"}, own: true, on: [][]string{{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".compare-pop input"}, {".compare-pop"}}},
	{el: []string{"::placeholder"}, own: true, on: [][]string{{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".open-url input[type=url]"}}},
	{el: []string{"::placeholder"}, own: true, on: [][]string{{":where(input[type=text], input[type=url], input[type=search], input[type=password], input[type=number])", ".diff-filter input"}}},

	// Tabs and table headers.
	{el: []string{".tab"}},
	{el: []string{".tab", ".tab:hover"}},
	{el: []string{".tab", ".tab-active"}},
	{el: []string{".grid th"}},
	{el: []string{".grid th", ".stats-table th"}},
	{el: []string{".mhead"}},

	// The raw tree, plain and hovered.
	{el: []string{".type"}},
	{el: []string{".type"}, on: treeHover},
	{el: []string{".type"}, on: summHover},
	{el: []string{".dtype"}},
	{el: []string{".dtype"}, on: treeHover},
	{el: []string{".dtype"}, on: modHover},
	{el: []string{".tied, .tied a"}},
	{el: []string{".tied, .tied a"}, on: treeHover},
	{el: []string{".row > details > summary::before"}},
	{el: []string{".row > details > summary::before"}, on: summHover},
	{el: []string{"summary.mline::before"}, on: modHover},
	{el: []string{"body"}, on: treeHover},
	{el: []string{"body"}, on: modHover},

	// Values, hex dumps, the weights_only snippet.
	{el: []string{"body"}, on: subtle},
	{el: []string{".hex-off"}, on: subtle},
	{el: []string{".hex-ascii"}, on: subtle},
	{el: []string{".weights-only pre"}},
	{el: []string{"body"}, on: keyHelp},

	// The slice table.
	{el: []string{".slice-table thead th"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table tbody th"}},
	{el: []string{".slice-table th, .slice-table td"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table .v-zero"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table .v-bad"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table tbody tr:hover td"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table .v-zero", ".slice-table tbody tr:hover td"}},
	{el: []string{".slice-table th, .slice-table td", ".slice-table .v-bad", ".slice-table tbody tr:hover td", ".slice-table tbody tr:hover td.v-bad"}},

	// The code view (TorchScript): code, line numbers, the target line.
	{el: []string{"table.code td.src"}, on: code},
	{el: []string{"table.code td.ln"}, on: code},
	{el: []string{"table.code td.ln a"}, on: [][]string{{"table.code td.ln"}, {"table.code"}}},
	{el: []string{"table.code td.src"}, on: codeTarget},
	{el: []string{"table.code td.ln"}, on: codeTarget},

	// Statistics: the histogram and the sparklines are graphics (3:1), their labels text.
	{el: []string{".hist-svg .bar"}, prop: "fill", on: histSVG, graphic: true},
	{el: []string{".hist-svg .bar", ".hist-svg .bin:hover .bar"}, prop: "fill", on: histHover, graphic: true},
	{el: []string{".hist-zero"}, prop: "stroke", on: [][]string{{".hist-svg"}}, graphic: true},
	{el: []string{".spark path"}, prop: "fill", graphic: true},
	{el: []string{".spark path"}, prop: "fill", on: treeHover, graphic: true},
	{el: []string{".spark path", ".spark-warn path"}, prop: "fill", graphic: true},
	{el: []string{".spark path", ".spark-warn path"}, prop: "fill", on: modHover, graphic: true},
}

// contrastExempt are colour rules no pair needs to name, with the reason.
var contrastExempt = map[string]string{
	".btn-off":       "a disabled control (the pager at its end): WCAG 1.4.3 exempts inactive components",
	".btn-off:hover": "a disabled control",
}

func TestContrast(t *testing.T) {
	src, err := Static.ReadFile("static/app.css")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseCSS(string(src))
	if err != nil {
		t.Fatalf("app.css: %v", err)
	}
	modes := []string{"light", "dark"}
	sheets := map[string]*colourSheet{}
	for _, m := range modes {
		sheets[m] = newColourSheet(rules, m)
		for _, name := range []string{"--bg", "--fg"} {
			if _, ok := sheets[m].vars[name]; !ok {
				t.Fatalf("%s mode: app.css defines no %s", m, name)
			}
		}
	}
	if sheets["dark"].vars["--bg"] == sheets["light"].vars["--bg"] {
		t.Fatalf("app.css has no dark-mode :root in @media %s overriding --bg", darkMedia)
	}

	named := map[string]bool{}
	for _, p := range contrastPairs {
		for _, s := range p.el {
			named[s] = true
		}
		for _, b := range p.on {
			for _, s := range b {
				named[s] = true
			}
		}
		min := 4.5
		if p.graphic || p.large {
			min = 3
		}
		for _, m := range modes {
			fg, bg, err := sheets[m].pair(p)
			if err != nil {
				t.Errorf("%s, %s mode: %v", p.name(), m, err)
				continue
			}
			r := contrastRatio(fg, bg)
			if r+1e-9 < min {
				t.Errorf("%s, %s mode: %s on %s is %.2f:1, under %.1f:1", p.name(), m, fg, bg, r, min)
			} else if testing.Verbose() {
				t.Logf("%-5s %5.2f:1  %s (%s on %s)", m, r, p.name(), fg, bg)
			}
		}
	}

	// Every rule that sets a colour is in some pair, so a new one gets checked.
	colourProps := map[string]bool{"color": true, "background": true, "background-color": true, "fill": true, "stroke": true}
	for _, r := range rules {
		if r.media != "" && !strings.Contains(r.media, "prefers-color-scheme") {
			for _, d := range r.decls {
				if colourProps[d.prop] {
					t.Errorf("%s in @media %s sets %s: the test checks colours only for the light and the dark scheme; move it or give the test this media", r.selectorText(), r.media, d.prop)
				}
			}
			continue
		}
		if r.selectorText() == ":root" {
			continue
		}
		for _, d := range r.decls {
			if !colourProps[d.prop] {
				continue
			}
			if _, ok := contrastExempt[r.selectorText()]; !ok && !named[r.selectorText()] {
				for _, s := range r.selectors {
					if !named[s] {
						t.Errorf("rule %q sets %s but no pair in contrastPairs names %q: add its pairs (or a reason to contrastExempt)", r.selectorText(), d.prop, s)
					}
				}
			}
			break
		}
	}
	for s := range named {
		if !sheets["light"].hasSelector(s) && !sheets["dark"].hasSelector(s) {
			t.Errorf("contrastPairs names %q, but app.css has no such rule", s)
		}
	}
}

func (p contrastPair) name() string {
	s := strings.Join(p.el, " + ")
	if p.prop != "" && p.prop != "color" {
		s += " (" + p.prop + ")"
	}
	if len(p.on) == 0 {
		return s + " on the page"
	}
	var on []string
	for _, b := range p.on {
		on = append(on, strings.Join(b, " + "))
	}
	return s + " on " + strings.Join(on, " in ")
}

// WCAG 2.1 relative luminance and contrast ratio.

type rgba struct{ r, g, b, a float64 } // channels 0–255, alpha 0–1

func (c rgba) String() string {
	s := fmt.Sprintf("#%02x%02x%02x", int(math.Round(c.r)), int(math.Round(c.g)), int(math.Round(c.b)))
	if c.a < 1 {
		s += fmt.Sprintf(" (alpha %.2g)", c.a)
	}
	return s
}

// over composites c over an opaque backdrop.
func (c rgba) over(b rgba) rgba {
	return rgba{c.r*c.a + b.r*(1-c.a), c.g*c.a + b.g*(1-c.a), c.b*c.a + b.b*(1-c.a), 1}
}

func luminance(c rgba) float64 {
	lin := func(v float64) float64 {
		v /= 255
		if v <= 0.03928 {
			return v / 12.92
		}
		return math.Pow((v+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(c.r) + 0.7152*lin(c.g) + 0.0722*lin(c.b)
}

func contrastRatio(a, b rgba) float64 {
	l1, l2 := luminance(a), luminance(b)
	if l1 < l2 {
		l1, l2 = l2, l1
	}
	return (l1 + 0.05) / (l2 + 0.05)
}

func TestContrastRatio(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want float64
	}{
		{"#000", "#fff", 21},
		{"white", "#ffffff", 1},
		{"#777", "white", 4.48}, // the classic just-failing grey
		{"rgb(255, 138, 128)", "#fff", 2.28},
		{"#6cb0ff", "#fff", 2.26},
	} {
		a, err := parseColour(c.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseColour(c.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := contrastRatio(a, b); math.Abs(got-c.want) > 0.01 {
			t.Errorf("contrast %s on %s = %.3f, want %.2f", c.a, c.b, got, c.want)
		}
	}
	for in, want := range map[string]rgba{
		"#abc":                  {0xaa, 0xbb, 0xcc, 1},
		"#AbCdEf":               {0xab, 0xcd, 0xef, 1},
		"#11223380":             {0x11, 0x22, 0x33, 128.0 / 255},
		"rgb(1,2,3)":            {1, 2, 3, 1},
		"rgba(0,0,0,.15)":       {0, 0, 0, .15},
		"rgb(10 20 30 / 50%)":   {10, 20, 30, .5},
		"rgb(100%, 0%, 50%)":    {255, 0, 127.5, 1},
		"transparent":           {0, 0, 0, 0},
		"Black":                 {0, 0, 0, 1},
		"rgba(255, 255, 255,1)": {255, 255, 255, 1},
	} {
		got, err := parseColour(in)
		if err != nil || math.Abs(got.r-want.r) > 1e-9 || math.Abs(got.g-want.g) > 1e-9 || math.Abs(got.b-want.b) > 1e-9 || math.Abs(got.a-want.a) > 1e-9 {
			t.Errorf("parseColour(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"#12", "rgb(1,2)", "blurple", "var(--x)"} {
		if _, err := parseColour(in); err == nil {
			t.Errorf("parseColour(%q) succeeded, want an error", in)
		}
	}
}

var namedColours = map[string]rgba{
	"white":       {255, 255, 255, 1},
	"black":       {0, 0, 0, 1},
	"transparent": {0, 0, 0, 0},
	"red":         {255, 0, 0, 1},
	"green":       {0, 128, 0, 1},
	"blue":        {0, 0, 255, 1},
	"yellow":      {255, 255, 0, 1},
	"gray":        {128, 128, 128, 1},
	"grey":        {128, 128, 128, 1},
	"silver":      {192, 192, 192, 1},
	"darkgray":    {169, 169, 169, 1},
	"darkgrey":    {169, 169, 169, 1},
	"lightgray":   {211, 211, 211, 1},
	"lightgrey":   {211, 211, 211, 1},
	"whitesmoke":  {245, 245, 245, 1},
}

var rgbFuncRE = regexp.MustCompile(`^rgba?\((.*)\)$`)

// parseColour reads the colour syntaxes of app.css: #rgb, #rgba, #rrggbb, #rrggbbaa,
// rgb()/rgba() with commas or spaces and an optional alpha, and the usual names.
func parseColour(s string) (rgba, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if c, ok := namedColours[s]; ok {
		return c, nil
	}
	if h, ok := strings.CutPrefix(s, "#"); ok {
		if len(h) == 3 || len(h) == 4 {
			var b strings.Builder
			for _, r := range h {
				b.WriteRune(r)
				b.WriteRune(r)
			}
			h = b.String()
		}
		if len(h) != 6 && len(h) != 8 {
			return rgba{}, fmt.Errorf("colour %q: not #rgb, #rgba, #rrggbb or #rrggbbaa", s)
		}
		v, err := strconv.ParseUint(h, 16, 32)
		if err != nil {
			return rgba{}, fmt.Errorf("colour %q: %v", s, err)
		}
		if len(h) == 6 {
			v = v<<8 | 0xff
		}
		return rgba{float64(v >> 24 & 0xff), float64(v >> 16 & 0xff), float64(v >> 8 & 0xff), float64(v&0xff) / 255}, nil
	}
	if m := rgbFuncRE.FindStringSubmatch(s); m != nil {
		args := strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' || r == '/' })
		if len(args) != 3 && len(args) != 4 {
			return rgba{}, fmt.Errorf("colour %q: want 3 or 4 components", s)
		}
		c := rgba{a: 1}
		for i, a := range args {
			scale := 1.0
			if p, ok := strings.CutSuffix(a, "%"); ok {
				a, scale = p, 0.01
				if i < 3 {
					scale = 2.55
				}
			}
			v, err := strconv.ParseFloat(a, 64)
			if err != nil {
				return rgba{}, fmt.Errorf("colour %q: %v", s, err)
			}
			v *= scale
			switch i {
			case 0:
				c.r = math.Max(0, math.Min(255, v))
			case 1:
				c.g = math.Max(0, math.Min(255, v))
			case 2:
				c.b = math.Max(0, math.Min(255, v))
			case 3:
				c.a = math.Max(0, math.Min(1, v))
			}
		}
		return c, nil
	}
	return rgba{}, fmt.Errorf("colour %q: unknown syntax", s)
}

// A small CSS reader: enough of the syntax for app.css (rules, @media, other at-rules
// skipped, comments, quoted strings).

type cssRule struct {
	order     int
	media     string   // the enclosing @media prelude; "" for none
	selectors []string // the selector list, whitespace collapsed
	decls     []cssDecl
}

type cssDecl struct{ prop, value string }

func (r cssRule) selectorText() string { return strings.Join(r.selectors, ", ") }

var cssCommentRE = regexp.MustCompile(`(?s)/\*.*?\*/`)

func parseCSS(src string) ([]cssRule, error) {
	var rules []cssRule
	err := parseCSSBlock(cssCommentRE.ReplaceAllString(src, " "), "", &rules)
	return rules, err
}

func parseCSSBlock(s, media string, out *[]cssRule) error {
	for {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil
		}
		open := indexTopLevel(s, '{')
		if semi := indexTopLevel(s, ';'); semi >= 0 && (open < 0 || semi < open) {
			s = s[semi+1:] // a statement at-rule such as @import or @charset
			continue
		}
		if open < 0 {
			return fmt.Errorf("text after the last block: %.40q", s)
		}
		end := matchingBrace(s, open)
		if end < 0 {
			return fmt.Errorf("unclosed block after %.40q", s[:open])
		}
		prelude, body := strings.Join(strings.Fields(s[:open]), " "), s[open+1:end]
		s = s[end+1:]
		switch {
		case strings.HasPrefix(prelude, "@media"):
			m := strings.TrimSpace(strings.TrimPrefix(prelude, "@media"))
			if media != "" {
				m = media + " and " + m
			}
			if err := parseCSSBlock(body, m, out); err != nil {
				return err
			}
		case strings.HasPrefix(prelude, "@"):
			// @keyframes, @font-face, @supports...: no colour pairs of ours
		default:
			r := cssRule{order: len(*out), media: media}
			for _, sel := range splitTopLevel(prelude, ',') {
				r.selectors = append(r.selectors, strings.Join(strings.Fields(sel), " "))
			}
			for _, d := range splitTopLevel(body, ';') {
				prop, val, ok := strings.Cut(d, ":")
				if !ok {
					if strings.TrimSpace(d) != "" {
						return fmt.Errorf("%s: declaration %q has no colon", prelude, d)
					}
					continue
				}
				val = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "!important"))
				r.decls = append(r.decls, cssDecl{strings.ToLower(strings.TrimSpace(prop)), val})
			}
			*out = append(*out, r)
		}
	}
}

// indexTopLevel is the index of the first c outside quotes, parentheses and brackets.
func indexTopLevel(s string, c byte) int {
	depth, quote := 0, byte(0)
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case quote != 0:
			if ch == '\\' {
				i++
			} else if ch == quote {
				quote = 0
			}
		case ch == '"' || ch == '\'':
			quote = ch
		case ch == '(' || ch == '[':
			depth++
		case ch == ')' || ch == ']':
			depth--
		case ch == c && depth == 0:
			return i
		}
	}
	return -1
}

func splitTopLevel(s string, c byte) []string {
	var out []string
	for {
		i := indexTopLevel(s, c)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
}

// matchingBrace is the index of the } closing the { at open.
func matchingBrace(s string, open int) int {
	depth, quote := 0, byte(0)
	for i := open; i < len(s); i++ {
		switch ch := s[i]; {
		case quote != 0:
			if ch == '\\' {
				i++
			} else if ch == quote {
				quote = 0
			}
		case ch == '"' || ch == '\'':
			quote = ch
		case ch == '{':
			depth++
		case ch == '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// specificity of a selector as (ids, classes/attributes/pseudo-classes, elements), packed.
// :where() counts nothing; :not(), :is() and :has() count their argument.
func specificity(sel string) int {
	var a, b, c int
	prevIdent := false // the last thing read could end a compound's element name
	for i := 0; i < len(sel); {
		ch := sel[i]
		switch {
		case ch == '#':
			a++
			i = skipIdent(sel, i+1)
		case ch == '.':
			b++
			i = skipIdent(sel, i+1)
		case ch == '[':
			b++
			for i < len(sel) && sel[i] != ']' {
				i++
			}
			i++
		case strings.HasPrefix(sel[i:], "::"):
			c++
			i = skipIdent(sel, i+2)
		case ch == ':':
			j := skipIdent(sel, i+1)
			name := strings.ToLower(sel[i+1 : j])
			switch name {
			case "where":
				i = skipParens(sel, j)
			case "not", "is", "has":
				i = j + 1 // read the argument as part of the selector
			default:
				b++
				i = skipParens(sel, j)
			}
		case isIdentByte(ch) && !prevIdent:
			c++
			i = skipIdent(sel, i)
			prevIdent = true
			continue
		default:
			i++
		}
		prevIdent = false
	}
	return a<<20 | b<<10 | c
}

func isIdentByte(ch byte) bool {
	return ch == '-' || ch == '_' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch >= 0x80
}

func skipIdent(s string, i int) int {
	for i < len(s) && isIdentByte(s[i]) {
		i++
	}
	return i
}

// skipParens skips a parenthesised argument at i, if there is one.
func skipParens(s string, i int) int {
	if i >= len(s) || s[i] != '(' {
		return i
	}
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return i
}

// colourSheet is app.css as one colour scheme sees it.
type colourSheet struct {
	mode  string
	rules []cssRule // those that apply in the mode
	vars  map[string]string
}

func newColourSheet(all []cssRule, mode string) *colourSheet {
	cs := &colourSheet{mode: mode, vars: map[string]string{}}
	for _, r := range all {
		switch {
		case r.media == "":
		case mode == "dark" && r.media == darkMedia:
		case mode == "light" && r.media == "(prefers-color-scheme: light)":
		default:
			continue
		}
		cs.rules = append(cs.rules, r)
		if r.selectorText() == ":root" {
			for _, d := range r.decls {
				if strings.HasPrefix(d.prop, "--") {
					cs.vars[d.prop] = d.value
				}
			}
		}
	}
	return cs
}

func (cs *colourSheet) hasSelector(sel string) bool {
	for _, r := range cs.rules {
		if r.selectorText() == sel || contains(r.selectors, sel) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// value is the cascaded value of prop on an element styled by sels (each a selector of
// app.css, or a whole selector list as written), with var() resolved; "" when none sets it.
func (cs *colourSheet) value(sels []string, props ...string) (string, error) {
	type hit struct {
		spec, order, idx int
		val              string
	}
	var best *hit
	for _, r := range cs.rules {
		spec := -1
		for _, s := range sels {
			if s == r.selectorText() {
				for _, x := range r.selectors {
					spec = max(spec, specificity(x))
				}
			} else if contains(r.selectors, s) {
				spec = max(spec, specificity(s))
			}
		}
		if spec < 0 {
			continue
		}
		for i, d := range r.decls {
			if !contains(props, d.prop) {
				continue
			}
			h := hit{spec, r.order, i, d.value}
			if best == nil || h.spec > best.spec || h.spec == best.spec && (h.order > best.order || h.order == best.order && h.idx > best.idx) {
				best = &h
			}
		}
	}
	if best == nil {
		return "", nil
	}
	return cs.resolve(best.val, 0)
}

var cssVarRE = regexp.MustCompile(`var\(\s*(--[\w-]+)\s*(?:,\s*([^()]*(?:\([^()]*\)[^()]*)*))?\)`)

func (cs *colourSheet) resolve(v string, depth int) (string, error) {
	if depth > 20 {
		return "", fmt.Errorf("var() loop in %q", v)
	}
	if !strings.Contains(v, "var(") {
		return v, nil
	}
	var err error
	out := cssVarRE.ReplaceAllStringFunc(v, func(m string) string {
		sub := cssVarRE.FindStringSubmatch(m)
		if val, ok := cs.vars[sub[1]]; ok {
			return val
		}
		if strings.Contains(m, ",") {
			return sub[2]
		}
		err = fmt.Errorf("%s is not defined", sub[1])
		return m
	})
	if err != nil {
		return "", err
	}
	return cs.resolve(out, depth+1)
}

// colourOf is the colour an element's property gives, or ok=false when nothing sets it.
// For "background" it reads background-color and the colour in the background shorthand.
func (cs *colourSheet) colourOf(sels []string, prop string) (c rgba, ok bool, err error) {
	props := []string{prop}
	if prop == "background" {
		props = []string{"background", "background-color"}
	}
	v, err := cs.value(sels, props...)
	if err != nil || v == "" {
		return rgba{}, false, err
	}
	lv := strings.ToLower(v)
	if lv == "inherit" || lv == "currentcolor" || lv == "unset" || lv == "initial" && prop != "background" {
		return rgba{}, false, nil
	}
	if prop == "background" {
		// the colour of the shorthand: the first part that is one; none is transparent
		for _, part := range splitTopLevel(strings.ReplaceAll(v, ", ", ","), ' ') {
			if p := strings.ToLower(part); p == "none" || p == "initial" {
				return namedColours["transparent"], true, nil
			}
			if c, err := parseColour(part); err == nil {
				return c, true, nil
			}
		}
		return rgba{}, false, fmt.Errorf("background %q of %s: no colour in it", v, strings.Join(sels, " + "))
	}
	c, err = parseColour(v)
	if err != nil {
		return rgba{}, false, fmt.Errorf("%s of %s: %v", prop, strings.Join(sels, " + "), err)
	}
	return c, true, nil
}

// number reads a plain or percentage number property (opacity), or def.
func (cs *colourSheet) number(sels []string, prop string, def float64) (float64, error) {
	v, err := cs.value(sels, prop)
	if err != nil || v == "" {
		return def, err
	}
	scale := 1.0
	if p, ok := strings.CutSuffix(v, "%"); ok {
		v, scale = p, 0.01
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return def, fmt.Errorf("%s %q of %s: %v", prop, v, strings.Join(sels, " + "), err)
	}
	return f * scale, nil
}

var brightnessRE = regexp.MustCompile(`brightness\(\s*([\d.]+)(%?)\s*\)`)

// brightness is the factor of a filter: brightness() on the element, 1 for none. Browsers
// apply filter functions to the sRGB values.
func (cs *colourSheet) brightness(sels []string) (float64, error) {
	v, err := cs.value(sels, "filter")
	if err != nil || v == "" || v == "none" {
		return 1, err
	}
	m := brightnessRE.FindStringSubmatch(v)
	if m == nil {
		return 1, fmt.Errorf("filter %q of %s: the test knows only brightness()", v, strings.Join(sels, " + "))
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	if m[2] == "%" {
		f /= 100
	}
	return f, nil
}

func (c rgba) brighten(f float64) rgba {
	return rgba{math.Min(255, c.r*f), math.Min(255, c.g*f), math.Min(255, c.b*f), c.a}
}

// pair is the foreground and the opaque background a pair shows.
func (cs *colourSheet) pair(p contrastPair) (fg, bg rgba, err error) {
	boxes := append(append([][]string{}, p.on...), []string{"body"}) // innermost first
	// The backdrop: the page, then each box's background from the outside in.
	bg, ok, err := cs.colourOf([]string{"body"}, "background")
	if err != nil {
		return fg, bg, err
	}
	if !ok || bg.a < 1 {
		return fg, bg, fmt.Errorf("body has no opaque background")
	}
	for i := len(boxes) - 2; i >= 0; i-- {
		c, ok, err := cs.colourOf(boxes[i], "background")
		if err != nil {
			return fg, bg, err
		}
		if !ok { // an SVG shape's box: its fill is what lies behind
			if c, ok, err = cs.colourOf(boxes[i], "fill"); err != nil {
				return fg, bg, err
			}
		}
		if ok {
			bg = c.over(bg)
		}
	}
	// The element: its own background, its foreground (inherited for color), its filter
	// and its opacity.
	own, hasOwn, err := cs.colourOf(p.el, "background")
	if err != nil {
		return fg, bg, err
	}
	if p.field && !hasOwn {
		return fg, bg, fmt.Errorf("a form field with no background of its own: browsers would draw their Field colour, not the page's")
	}
	prop := p.prop
	if prop == "" {
		prop = "color"
	}
	fg, ok, err = cs.colourOf(p.el, prop)
	if err != nil {
		return fg, bg, err
	}
	if !ok && prop == "color" && !p.own {
		for _, b := range boxes {
			if fg, ok, err = cs.colourOf(b, "color"); err != nil {
				return fg, bg, err
			}
			if ok {
				break
			}
		}
	}
	if !ok {
		return fg, bg, fmt.Errorf("no %s set in app.css: the browser's default would be shown", prop)
	}
	elBG := bg
	if hasOwn {
		elBG = own.over(bg)
	}
	fgOnEl := fg.over(elBG)
	f, err := cs.brightness(p.el)
	if err != nil {
		return fg, bg, err
	}
	fgOnEl, elBG = fgOnEl.brighten(f), elBG.brighten(f)
	o, err := cs.number(p.el, "opacity", 1)
	if err != nil {
		return fg, bg, err
	}
	if o < 1 {
		fgOnEl = rgba{fgOnEl.r, fgOnEl.g, fgOnEl.b, o}.over(bg)
		elBG = rgba{elBG.r, elBG.g, elBG.b, o}.over(bg)
	}
	return fgOnEl, elBG, nil
}

// TestParseCSS checks the reader on the shapes app.css uses.
func TestParseCSS(t *testing.T) {
	rules, err := parseCSS(`/* c { } */ :root { --a: #fff; --b: var(--a); }
@media (prefers-color-scheme: dark) { :root { --a: #000; } }
@keyframes spin { to { transform: rotate(360deg); } }
.x, .y > z { color: var(--b); background: var(--q, rgba(0,0,0,.5)) url("a;b{}.png"); }
:where(input[type=text], input[type=url]) { color: red !important; }
[data-x="a,b"]:focus::before { content: "▸;{"; color: #123 }`)
	if err != nil {
		t.Fatal(err)
	}
	var sels []string
	for _, r := range rules {
		sels = append(sels, r.media+"|"+r.selectorText())
	}
	want := []string{"|:root", "(prefers-color-scheme: dark)|:root", "|.x, .y > z", "|:where(input[type=text], input[type=url])", `|[data-x="a,b"]:focus::before`}
	if strings.Join(sels, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(sels, "\n"), strings.Join(want, "\n"))
	}
	light, dark := newColourSheet(rules, "light"), newColourSheet(rules, "dark")
	for _, c := range []struct {
		cs   *colourSheet
		sels []string
		prop string
		want string
	}{
		{light, []string{".x"}, "color", "#ffffff"},
		{dark, []string{".y > z"}, "color", "#000000"},
		{dark, []string{".x, .y > z"}, "background", "#000000 (alpha 0.5)"},
		{light, []string{":where(input[type=text], input[type=url])"}, "color", "#ff0000"},
		{light, []string{`[data-x="a,b"]:focus::before`}, "color", "#112233"},
	} {
		got, ok, err := c.cs.colourOf(c.sels, c.prop)
		if err != nil || !ok || got.String() != c.want {
			t.Errorf("%s %v %s = %v, %v, %v; want %s", c.cs.mode, c.sels, c.prop, got, ok, err, c.want)
		}
	}
	spec := map[string]int{
		".a":                               1 << 10,
		"a":                                1,
		".slice-table tbody tr:hover td":   2<<10 | 3,
		".slice-table .v-bad":              2 << 10,
		":where(input[type=text]) .x":      1 << 10,
		".mline:hover:not(.mhead)":         3 << 10,
		"#id > p::before":                  1<<20 | 2,
		"table.code tr:target":             2<<10 | 2,
		".row > details > summary::before": 1<<10 | 3,
	}
	keys := make([]string, 0, len(spec))
	for k := range spec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got := specificity(k); got != spec[k] {
			t.Errorf("specificity(%q) = %d,%d,%d; want %d,%d,%d", k, got>>20, got>>10&1023, got&1023, spec[k]>>20, spec[k]>>10&1023, spec[k]&1023)
		}
	}
}
