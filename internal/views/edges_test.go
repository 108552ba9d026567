package views

import (
	"strings"
	"testing"
)

// Class names break after their dots (and a long identifier after its underscores), never
// inside a number or a word.
func TestNameParts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"sklearn.ensemble._forest.RandomForestClassifier", []string{"sklearn.", "ensemble.", "_forest.", "RandomForestClassifier"}},
		{"torch.nn.modules.container.Sequential", []string{"torch.", "nn.", "modules.", "container.", "Sequential"}},
		{"__main__.Net", []string{"__main__.", "Net"}},
		{"OrderedDict", []string{"OrderedDict"}},
		{"", nil},
		{"posix.system('touch x')", []string{"posix.", "system('touch x')"}},
		{"builtins.eval(0.5, ...)", []string{"builtins.", "eval(0.5, ...)"}}, // no break in 0.5 or ...
		{"torch._utils._rebuild_tensor_v2", []string{"torch.", "_utils.", "_rebuild_tensor_v2"}},
		{"m._non_persistent_buffers_set", []string{"m.", "_non_", "persistent_", "buffers_", "set"}},
		{"a..b", []string{"a..b"}},
		{"x.", []string{"x."}},
		{"模块.类", []string{"模块.", "类"}},
	} {
		got := NameParts(tc.in)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || strings.Join(got, "") != tc.in {
			t.Errorf("NameParts(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The preview's rows and elements give back its text exactly, numpy's line wraps marked.
func TestPreviewRows(t *testing.T) {
	text := func(vals ValueReader, shape ...int64) string {
		s, _, err := NewPreview(vals, shape)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// 1-D, wrapped by numpy at 75 characters
	v := &TensorValues{Preview: text(arange(t, "int64", 40), 40)}
	rows := v.PreviewRows()
	if len(rows) != 1 || rows[0].Lead != "[" || len(rows[0].Items) != 40 || rows[0].End != "" {
		t.Fatalf("np.arange(40) rows = %+v", rows)
	}
	for i, it := range rows[0].Items {
		wrap := i == 18 || i == 36
		switch {
		case wrap && (!it.Wrap || it.Before != "\n "):
			t.Errorf("item %d = %+v, want numpy's line break before it", i, it)
		case !wrap && i > 0 && (it.Wrap || it.Before != " "):
			t.Errorf("item %d = %+v, want a space before it", i, it)
		}
	}
	if rows[0].Items[0].Text != " 0," || rows[0].Items[39].Text != "39]" {
		t.Errorf("first and last items %q %q, want padded with their comma or bracket", rows[0].Items[0].Text, rows[0].Items[39].Text)
	}

	// 3-D: six rows, a blank line between the blocks
	v = &TensorValues{Preview: text(arange(t, "int64", 2, 3, 4), 2, 3, 4)}
	rows = v.PreviewRows()
	var leads, ends []string
	for _, r := range rows {
		leads, ends = append(leads, r.Lead), append(ends, r.End)
	}
	if strings.Join(leads, "|") != "[[[|  [|  [| [[|  [|  [" || strings.Join(ends, "|") != "\n|\n|\n\n|\n|\n|" {
		t.Errorf("2×3×4 leads %q ends %q", leads, ends)
	}

	// summarised rows: the "...," line is a row of its own
	v = &TensorValues{Preview: text(arange(t, "int64", 40, 50), 40, 50)}
	rows = v.PreviewRows()
	if len(rows) != 7 || rows[3].Lead != " " || len(rows[3].Items) != 1 || rows[3].Items[0].Text != "...," {
		t.Errorf("40×50 rows = %+v", rows)
	}

	// every shape NewPreview writes cuts into rows that give the text back
	for _, shape := range [][]int64{{5}, {2000}, {7, 7, 7, 7, 7}, {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, {1, 1, 1, 30}, {64, 512}, {2, 0}, {0}} {
		for _, dtype := range []string{"int64", "float32"} {
			v := &TensorValues{Preview: text(arange(t, dtype, shape...), shape...)}
			if v.PreviewRows() == nil {
				t.Errorf("%s%v: no rows for %q", dtype, shape, v.Preview)
			}
		}
	}

	// scalars and empty arrays
	for _, p := range []string{"0", "[]", "[[],\n []]", "[1., 2.]"} {
		rows := (&TensorValues{Preview: p}).PreviewRows()
		if (p == "0") != (rows == nil) {
			t.Errorf("PreviewRows(%q) = %+v", p, rows)
		}
	}
	if (*TensorValues)(nil).PreviewRows() != nil {
		t.Error("nil values have rows")
	}
}
