package views

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/loader"
	"github.com/google/go-cmp/cmp"
)

// tensor builds a contiguous tensor node over its own storage.
func tensorNode(key, dtype string, shape ...int64) *ckpt.Node {
	strides := make([]int64, len(shape))
	s := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = s
		s *= shape[i]
	}
	st := &ckpt.Storage{Key: key, DType: dtype, Location: "cpu", ByteOrder: "little", Size: s * int64(ckpt.DTypeSize(dtype))}
	return &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: key, Seg: key,
		Tensor: &ckpt.Tensor{DType: dtype, Shape: shape, Strides: strides, Storage: st}}
}

func str(key, s string) *ckpt.Node {
	return &ckpt.Node{Kind: ckpt.KindStr, Type: "str", Key: key, Seg: key, Str: s, Len: int64(len([]rune(s)))}
}

func dict(key string, kids ...*ckpt.Node) *ckpt.Node {
	return &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: key, Seg: key, Children: kids}
}

func list(key string, kids ...*ckpt.Node) *ckpt.Node {
	for i, k := range kids {
		k.Key, k.Seg = strconv.Itoa(i), strconv.Itoa(i)
	}
	return &ckpt.Node{Kind: ckpt.KindList, Type: "list", Key: key, Seg: key, Children: kids}
}

// checkpoint links the tree (so every node's Path is made from its Seg) and sets the storages' users, as the loader does.
func checkpoint(root *ckpt.Node) *ckpt.Checkpoint {
	ckpt.Link(root)
	ck := &ckpt.Checkpoint{Format: "torch-zip", Root: root, BytesByDType: map[string]int64{}}
	var set func(n *ckpt.Node, path string)
	set = func(n *ckpt.Node, path string) {
		if t := n.Tensor; t != nil && t.Storage != nil && n.Kind != ckpt.KindRef {
			ck.Tensors++
			ck.Parameters += t.Numel()
			ck.BytesByDType[t.DType] += t.NBytes()
			if len(t.Storage.Users) == 0 {
				ck.Storages = append(ck.Storages, t.Storage)
			}
			t.Storage.Users = append(t.Storage.Users, path)
		}
		for _, k := range n.Children {
			set(k, path+"/"+ckpt.EscapeSegment(k.Seg))
		}
	}
	set(root, "")
	return ck
}

func TestSummary(t *testing.T) {
	big := str("s", strings.Repeat("a", 100))
	tests := []struct {
		name string
		n    *ckpt.Node
		want string
	}{
		{"none", &ckpt.Node{Kind: ckpt.KindNone}, "None"},
		{"true", &ckpt.Node{Kind: ckpt.KindBool, Bool: true}, "True"},
		{"false", &ckpt.Node{Kind: ckpt.KindBool}, "False"},
		{"int", &ckpt.Node{Kind: ckpt.KindInt, Int: "-123456789012345678901234567890"}, "-123456789012345678901234567890"},
		{"float integral", &ckpt.Node{Kind: ckpt.KindFloat, Float: 1}, "1.0"},
		{"float small", &ckpt.Node{Kind: ckpt.KindFloat, Float: 1e-5}, "1e-05"},
		{"float large", &ckpt.Node{Kind: ckpt.KindFloat, Float: 1e16}, "1e+16"},
		{"float", &ckpt.Node{Kind: ckpt.KindFloat, Float: 0.1}, "0.1"},
		{"complex", &ckpt.Node{Kind: ckpt.KindComplex, Complex: complex(1, 2)}, "(1+2j)"},
		{"complex imag", &ckpt.Node{Kind: ckpt.KindComplex, Complex: complex(0, 2.5)}, "2.5j"},
		{"complex negative", &ckpt.Node{Kind: ckpt.KindComplex, Complex: complex(1.5, -2)}, "(1.5-2j)"},
		{"str", str("k", "hello"), "'hello'"},
		{"str quote", str("k", "it's"), `"it's"`},
		{"str control", str("k", "a\nb\x00"), `'a\nb\x00'`},
		{"str long", big, "'" + strings.Repeat("a", 80) + "' … (100 chars)"},
		{"str truncated by loader", &ckpt.Node{Kind: ckpt.KindStr, Str: "abc", Truncated: true, Len: 5000}, "'abc' … (5,000 chars)"},
		{"bytes", &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytes", Bytes: []byte{0, 1, 2}, Len: 3}, "bytes (3 bytes): 00 01 02"},
		{"bytes long", &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytes", Bytes: make([]byte, 256), Len: 256},
			"bytes (256 bytes):" + strings.Repeat(" 00", 16) + " …"},
		// the page's separators: bytes (153600) read as a count without one
		{"bytes large", &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytes", Bytes: make([]byte, 16), Len: 153600},
			"bytes (153,600 bytes):" + strings.Repeat(" 00", 16) + " …"},
		{"bytearray", &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytearray", Bytes: []byte("A"), Len: 1}, "bytearray (1 byte): 41"},
		{"dict", &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict", Children: make([]*ckpt.Node, 317)}, "OrderedDict (317 items)"},
		// short lists and tuples of scalars read as Python's repr prints them
		{"list one", list("l", str("", "x")), "['x']"},
		{"empty tuple", &ckpt.Node{Kind: ckpt.KindTuple, Type: "tuple"}, "()"},
		{"kernel size", &ckpt.Node{Kind: ckpt.KindTuple, Type: "tuple", Children: []*ckpt.Node{
			{Kind: ckpt.KindInt, Int: "3"}, {Kind: ckpt.KindInt, Int: "3"}}}, "(3, 3)"},
		{"one-tuple", &ckpt.Node{Kind: ckpt.KindTuple, Type: "tuple", Children: []*ckpt.Node{{Kind: ckpt.KindStr, Str: "cpu"}}}, "('cpu',)"},
		{"betas", &ckpt.Node{Kind: ckpt.KindList, Type: "list", Children: []*ckpt.Node{
			{Kind: ckpt.KindFloat, Float: 0.9}, {Kind: ckpt.KindFloat, Float: 0.999}, {Kind: ckpt.KindNone}, {Kind: ckpt.KindBool, Bool: true}}}, "[0.9, 0.999, None, True]"},
		{"list of a tensor", &ckpt.Node{Kind: ckpt.KindList, Type: "list", Children: []*ckpt.Node{{Kind: ckpt.KindTensor}}}, "list (1 item)"},
		{"long list", &ckpt.Node{Kind: ckpt.KindList, Type: "list", Children: make([]*ckpt.Node, 9)}, "list (9 items)"},
		{"set", &ckpt.Node{Kind: ckpt.KindSet, Type: "set", Children: make([]*ckpt.Node, 2)}, "set (2 items)"},
		{"object", &ckpt.Node{Kind: ckpt.KindObject, Type: "sklearn.svm._classes.SVC", Global: "sklearn.svm._classes.SVC"}, "sklearn.svm._classes.SVC"},
		{"global", &ckpt.Node{Kind: ckpt.KindGlobal, Global: "posix.system"}, "posix.system"},
		{"tensor", tensorNode("w", "float32", 768, 3072), "float32[768, 3072]"},
		{"scalar tensor", tensorNode("w", "int64"), "int64[]"},
		{"ref", &ckpt.Node{Kind: ckpt.KindRef, Target: "/a/b"}, "ref → /a/b"},
		{"ref root", &ckpt.Node{Kind: ckpt.KindRef, Target: ""}, "ref → /"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Summary(tc.n); got != tc.want {
				t.Errorf("Summary(%+v) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
}

func TestNodeURL(t *testing.T) {
	tests := []struct {
		name, id, pointer, want string
	}{
		{"root", "abc", "", "/c/abc/n/"},
		{"plain", "abc", "/model/blocks.0.attn.weight", "/c/abc/n/model/blocks.0.attn.weight"},
		{"slash in key", "abc", "/" + ckpt.EscapeSegment("a/b"), "/c/abc/n/a~1b"},
		{"tilde in key", "abc", "/" + ckpt.EscapeSegment("a~b"), "/c/abc/n/a~0b"},
		{"space", "abc", "/my key/x", "/c/abc/n/my%20key/x"},
		{"unicode", "abc", "/gewicht/größe", "/c/abc/n/gewicht/gr%C3%B6%C3%9Fe"},
		{"query and hash", "abc", "/a?b#c%", "/c/abc/n/a%3Fb%23c%25"},
		{"empty segment", "abc", "/a//b", "/c/abc/n/a/~/b"},
		{"empty key at the root", "abc", "/", "/c/abc/n/~"},
		{"dot keys", "abc", "/./..", "/c/abc/n/~./~.."},
		{"dots in a key", "abc", "/.../.a/a.", "/c/abc/n/.../.a/a."},
		{"tilde keys", "abc", "/" + ckpt.EscapeSegment("~.") + "/" + ckpt.EscapeSegment("~"), "/c/abc/n/~0./~0"},
		{"repr key", "abc", "/('a', 1)", "/c/abc/n/%28%27a%27%2C%201%29"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NodeURL(tc.id, tc.pointer); got != tc.want {
				t.Errorf("NodeURL(%q, %q) = %q, want %q", tc.id, tc.pointer, got, tc.want)
			}
		})
	}
}

func TestChildrenAndJSONURL(t *testing.T) {
	if got, want := ChildrenURL("abc", "/a b/c&d", 200), "/c/abc/fragment/children?offset=200&path=%2Fa+b%2Fc%26d"; got != want {
		t.Errorf("ChildrenURL = %q, want %q", got, want)
	}
	if got, want := NodeJSONURL("abc", "/x~1y"), "/api/checkpoints/abc/node?path=%2Fx~1y"; got != want {
		t.Errorf("NodeJSONURL = %q, want %q", got, want)
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1.00 kB"}, {1234, "1.23 kB"}, {99_949, "99.9 kB"},
		{548_105_171, "548 MB"}, {999_999, "1.00 MB"}, {13_476_839_424, "13.5 GB"}, {20 << 30, "21.5 GB"},
		{-2048, "-2.05 kB"},
	}
	for _, tc := range tests {
		if got := HumanBytes(tc.n); got != tc.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestHumanCount(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {768, "768"}, {7200, "7.2K"}, {124_439_808, "124.4M"}, {6_738_415_616, "6.7B"},
		{999_999, "1.0M"}, {1_000_000_000_000, "1.0T"},
	}
	for _, tc := range tests {
		if got := HumanCount(tc.n); got != tc.want {
			t.Errorf("HumanCount(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestThousandsAndPercent(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 124439808: "124,439,808", -1234567: "-1,234,567"} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", n, got, want)
		}
	}
	for _, tc := range []struct {
		part, total int64
		want        string
	}{{1, 3, "33.3%"}, {0, 0, ""}, {1, 10000, "<0.1%"}, {5, 5, "100.0%"}} {
		if got := Percent(tc.part, tc.total); got != tc.want {
			t.Errorf("Percent(%d, %d) = %q, want %q", tc.part, tc.total, got, tc.want)
		}
	}
}

func TestContiguity(t *testing.T) {
	tests := []struct {
		name           string
		shape, strides []int64
		want           string
		wantContiguous bool
	}{
		{"scalar", nil, nil, "contiguous (C and Fortran order)", true},
		{"vector", []int64{5}, []int64{1}, "contiguous (C and Fortran order)", true},
		{"row major", []int64{2, 3}, []int64{3, 1}, "C-contiguous (row-major)", true},
		{"column major", []int64{2, 3}, []int64{1, 2}, "Fortran-contiguous (column-major)", true},
		{"transposed 3d", []int64{2, 3, 4}, []int64{1, 2, 6}, "Fortran-contiguous (column-major)", true},
		{"size one dims", []int64{1, 3, 1}, []int64{99, 1, 7}, "contiguous (C and Fortran order)", true},
		{"sliced", []int64{2, 3}, []int64{6, 1}, "non-contiguous", false},
		{"strided vector", []int64{4}, []int64{2}, "non-contiguous", false},
		{"expanded", []int64{4, 3}, []int64{0, 1}, "non-contiguous (stride 0: an expanded view)", false},
		{"empty", []int64{0, 3}, []int64{7, 9}, "contiguous (C and Fortran order)", true},
		{"no strides", []int64{2, 3}, nil, "unknown (no strides)", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Contiguity(tc.shape, tc.strides)
			if got != tc.want || ok != tc.wantContiguous {
				t.Errorf("Contiguity(%v, %v) = %q, %v, want %q, %v", tc.shape, tc.strides, got, ok, tc.want, tc.wantContiguous)
			}
		})
	}
}

func TestHexDump(t *testing.T) {
	got := HexDump([]byte("hello, world!\x00\x01\xffABC"))
	want := []HexLine{
		{Offset: "00000000", Hex: "68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 00 01 ff", ASCII: "hello, world!..."},
		{Offset: "00000010", Hex: "41 42 43", ASCII: "ABC"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HexDump mismatch (-want +got):\n%s", diff)
	}
}

// modulePaths flattens a module tree into "prefix name tensors params bytes" lines.
func modulePaths(ms []*Module, depth int, out *[]string) {
	for _, m := range ms {
		line := strings.Repeat("  ", depth) + m.Name + " " + strconv.Itoa(m.Tensors) + " " + strconv.FormatInt(m.Params, 10) + " " + strconv.FormatInt(m.Bytes, 10)
		if m.Leaf != nil {
			line += " leaf=" + m.Leaf.Path
		}
		if m.Numbered > 0 {
			line += " numbered=" + m.NumberedLabel
		}
		*out = append(*out, line)
		modulePaths(m.Children, depth+1, out)
	}
}

func TestModuleTree(t *testing.T) {
	var entries []*ckpt.Node
	// Keys in string order, as some savers write them: 0, 1, 10, 11, 2, ...
	for _, i := range []string{"0", "1", "10", "2"} {
		entries = append(entries, tensorNode("blocks."+i+".attn.q.weight", "float32", 4, 4))
		entries = append(entries, tensorNode("blocks."+i+".attn.q.bias", "float32", 4))
	}
	entries = append(entries,
		tensorNode("encoder.layer.norm.weight", "float16", 8),
		tensorNode("head", "float32", 2, 4),
		tensorNode("head.bias", "float32", 2),
		&ckpt.Node{Kind: ckpt.KindRef, Key: "tied.weight", Seg: "tied.weight", Target: "/head"},
	)
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict", Children: entries}
	ck := checkpoint(root)
	tree := NewModuleTree("id", ck, FindStateDict(root))
	if tree == nil {
		t.Fatal("NewModuleTree(FindStateDict(root)) = nil, want a tree")
	}
	var got []string
	modulePaths(tree.Modules, 0, &got)
	want := []string{
		"blocks 8 80 320 numbered=[0, 1, 2, 10]",
		"  0 2 20 80",
		"    attn.q 2 20 80",
		"      weight 1 16 64 leaf=/blocks.0.attn.q.weight",
		"      bias 1 4 16 leaf=/blocks.0.attn.q.bias",
		"  1 2 20 80",
		"    attn.q 2 20 80",
		"      weight 1 16 64 leaf=/blocks.1.attn.q.weight",
		"      bias 1 4 16 leaf=/blocks.1.attn.q.bias",
		"  2 2 20 80",
		"    attn.q 2 20 80",
		"      weight 1 16 64 leaf=/blocks.2.attn.q.weight",
		"      bias 1 4 16 leaf=/blocks.2.attn.q.bias",
		"  10 2 20 80",
		"    attn.q 2 20 80",
		"      weight 1 16 64 leaf=/blocks.10.attn.q.weight",
		"      bias 1 4 16 leaf=/blocks.10.attn.q.bias",
		"encoder.layer.norm 1 8 16",
		"  weight 1 8 16 leaf=/encoder.layer.norm.weight",
		"head 2 10 40 leaf=/head",
		"  bias 1 2 8 leaf=/head.bias",
		"tied 1 8 32", // the same tensor object stored again: a tensor tied to head
		"  weight 1 8 32 leaf=/tied.weight",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("module tree mismatch (-want +got):\n%s", diff)
	}
	if tree.Tensors != 12 || tree.Params != 106 || tree.Bytes != 408 || tree.UniqueParams != 98 {
		t.Errorf("tree totals = %d tensors, %d params (%d untied), %d bytes, want 12, 106 (98), 408", tree.Tensors, tree.Params, tree.UniqueParams, tree.Bytes)
	}
	if got := tree.Modules[0].ParamsText; got != "80" {
		t.Errorf("blocks.ParamsText = %q, want %q", got, "80")
	}
	if got := tree.Modules[0].Share; got != "75.5%" {
		t.Errorf("blocks.Share = %q, want %q", got, "75.5%")
	}
}

func TestIndexLabel(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"0"}, "[0]"},
		{[]string{"0", "1", "2"}, "[0–2]"},
		{[]string{"0", "2"}, "[0, 2]"},
		{[]string{"1", "2", "3", "4", "5"}, "[1, 2, …, 5] (5)"},
		{[]string{"0", "2", "4", "6", "8", "10"}, "[0, 2, …, 10] (6)"},
	} {
		if got := numberedLabel(len(tc.names), func(i int) string { return tc.names[i] }); got != tc.want {
			t.Errorf("numberedLabel(%v) = %q, want %q", tc.names, got, tc.want)
		}
	}
}

func TestFindStateDict(t *testing.T) {
	sd := func(key string) *ckpt.Node {
		return dict(key, tensorNode("a.weight", "float32", 2), tensorNode("a.bias", "float32", 2))
	}
	tests := []struct {
		name string
		root *ckpt.Node
		want string // the Key of the dict found, "-" for none, "" for the root
	}{
		{"root", sd(""), ""},
		{"lightning", dict("", &ckpt.Node{Kind: ckpt.KindInt, Key: "epoch", Int: "3"}, sd("state_dict"), dict("optimizer_states")), "state_dict"},
		{"prefers named key on ties", dict("", sd("ema"), sd("model")), "model"},
		{"more tensors wins", dict("", sd("model"), dict("ema", tensorNode("a.b", "float32", 1), tensorNode("a.c", "float32", 1), tensorNode("a.d", "float32", 1))), "ema"},
		{"flat keys", dict("", tensorNode("weight", "float32", 2), tensorNode("bias", "float32", 2)), "-"},
		{"mostly not tensors", dict("", str("a.b", "x"), str("a.c", "y"), tensorNode("a.d", "float32", 1)), "-"},
		{"a list", list("", tensorNode("x", "float32", 1)), "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkpoint(tc.root)
			got := FindStateDict(tc.root)
			switch {
			case tc.want == "-" && got != nil:
				t.Errorf("FindStateDict = %q, want none", got.Path())
			case tc.want != "-" && got == nil:
				t.Errorf("FindStateDict = nil, want %q", tc.want)
			case got != nil && got.Key != tc.want:
				t.Errorf("FindStateDict = %q, want %q", got.Key, tc.want)
			}
		})
	}
}

func TestNewChildrenPaging(t *testing.T) {
	var kids []*ckpt.Node
	for i := range 450 {
		kids = append(kids, &ckpt.Node{Kind: ckpt.KindInt, Int: strconv.Itoa(i)})
	}
	root := list("", kids...)
	ck := checkpoint(root)
	meta := FileMeta{ID: "id", Name: "x.pkl"}
	tests := []struct {
		offset, limit       int
		wantFirst, wantRows int
		wantRemaining       int
		wantMore            string
	}{
		{0, 0, 0, 200, 250, "/c/id/fragment/children?offset=200&path="},
		{200, 0, 200, 200, 50, "/c/id/fragment/children?offset=400&path="},
		{400, 0, 400, 50, 0, ""},
		{-5, 10, 0, 10, 440, "/c/id/fragment/children?offset=10&path="},
		{9999, 0, 450, 0, 0, ""},
	}
	for _, tc := range tests {
		c := NewChildren(meta, ck, root, tc.offset, tc.limit)
		if len(c.Rows) != tc.wantRows || c.Remaining != tc.wantRemaining || c.MoreURL != tc.wantMore || c.Offset != tc.wantFirst {
			t.Errorf("NewChildren(offset %d, limit %d) = %d rows from %d, %d remaining, more %q; want %d rows from %d, %d remaining, more %q",
				tc.offset, tc.limit, len(c.Rows), c.Offset, c.Remaining, c.MoreURL, tc.wantRows, tc.wantFirst, tc.wantRemaining, tc.wantMore)
		}
		if len(c.Rows) > 0 && c.Rows[0].Key != strconv.Itoa(tc.wantFirst) {
			t.Errorf("NewChildren(offset %d).Rows[0].Key = %q, want %q", tc.offset, c.Rows[0].Key, strconv.Itoa(tc.wantFirst))
		}
	}
	if got, want := NewChildren(meta, ck, root, 0, 0).MorePageURL, "/c/id/n/?offset=200"; got != want {
		t.Errorf("MorePageURL = %q, want %q", got, want)
	}
}

func TestRowTiedWeights(t *testing.T) {
	wte := tensorNode("wte.weight", "float32", 10, 4)
	head := tensorNode("lm_head.weight", "float32", 10, 4)
	head.Tensor.Storage = wte.Tensor.Storage
	root := dict("", wte, head)
	ck := checkpoint(root)
	r := NewRow("id", ck, head)
	want := &TensorBrief{DType: "float32", Shape: "[10, 4]", Numel: 40, NBytes: 160, NumelText: "40", BytesText: "160 B",
		SharedWith: []Link{{Label: "/wte.weight", URL: "/c/id/n/wte.weight"}}}
	if diff := cmp.Diff(want, r.Tensor); diff != "" {
		t.Errorf("NewRow(lm_head.weight).Tensor mismatch (-want +got):\n%s", diff)
	}
	if r.URL != "/c/id/n/lm_head.weight" {
		t.Errorf("NewRow(lm_head.weight).URL = %q", r.URL)
	}
}

func TestFindingRows(t *testing.T) {
	fs := []ckpt.Finding{
		{Severity: ckpt.SeverityWarning, Global: "sklearn.svm._classes.SVC", Path: "/model"},
		{Severity: ckpt.SeverityDanger, Global: "posix.system", Path: "/payload", Detail: "posix.system('touch x')"},
		{Severity: ckpt.SeverityDanger, Global: "builtins.eval", Detail: "left on the pickle stack"},
		{Severity: ckpt.SeverityDanger, Global: "operator.attrgetter", Detail: "calls operator.attrgetter('system')(builtins.__import__('os'))('ls')"},
		{Severity: ckpt.SeverityDanger, Global: "builtins.exec", Detail: "imports builtins.exec, which can run code or reach the system"},
		{Severity: ckpt.SeverityWarning, Global: "x.Y", Path: "/a", Detail: "imports x.Y, which is not on the allowlist; shown as an opaque object and never called"},
	}
	got := FindingRows("id", fs)
	want := []FindingRow{
		{Severity: "danger", Label: "Danger", Global: "posix.system", Verb: "calls", Call: "posix.system('touch x')", Tail: " when unpickled", Path: "/payload", URL: "/c/id/n/payload"},
		{Severity: "danger", Label: "Danger", Global: "builtins.eval", Verb: "imports", Call: "builtins.eval", Tail: ", which can run code or touch the system, when unpickled", Detail: "left on the pickle stack"},
		{Severity: "danger", Label: "Danger", Global: "operator.attrgetter", Verb: "calls", Call: "operator.attrgetter('system')(builtins.__import__('os'))('ls')", Tail: " when unpickled"},
		{Severity: "danger", Label: "Danger", Global: "builtins.exec", Verb: "imports", Call: "builtins.exec", Tail: ", which can run code or touch the system, when unpickled"},
		{Severity: "warning", Label: "Warning", Global: "sklearn.svm._classes.SVC", Verb: "imports", Call: "sklearn.svm._classes.SVC", Tail: " (not on the allowlist; shown as an opaque object, never called)", Path: "/model", URL: "/c/id/n/model"},
		{Severity: "warning", Label: "Warning", Global: "x.Y", Verb: "imports", Call: "x.Y", Tail: " (not on the allowlist; shown as an opaque object, never called)", Path: "/a", URL: "/c/id/n/a"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FindingRows mismatch (-want +got):\n%s", diff)
	}
}

func TestNodePage(t *testing.T) {
	w := tensorNode("w", "float32", 3, 2)
	w.Tensor.Strides = []int64{1, 3} // a transposed view
	w.Tensor.StorageOffset = 0
	payload := &ckpt.Node{Kind: ckpt.KindObject, Type: "posix.system", Global: "posix.system", Key: "payload", Seg: "payload", Danger: true}
	inner := dict("a/b", w, payload)
	root := dict("", inner, &ckpt.Node{Kind: ckpt.KindBytes, Type: "bytes", Key: "raw", Seg: "raw", Bytes: []byte("xyz"), Len: 3})
	ck := checkpoint(root)
	ck.Findings = []ckpt.Finding{
		{Severity: ckpt.SeverityDanger, Global: "posix.system", Path: "/a~1b/payload", Detail: "posix.system('id')"},
		{Severity: ckpt.SeverityWarning, Global: "x.Y", Path: "/other"},
	}
	meta := FileMeta{ID: "id", Name: "model.pt"}

	p := NewNodePage(meta, ck, w, 0, 0)
	wantCrumbs := []Link{{Label: "model.pt", URL: "/c/id"}, {Label: "a/b", URL: "/c/id/n/a~1b"}, {Label: "w"}}
	if diff := cmp.Diff(wantCrumbs, p.Crumbs); diff != "" {
		t.Errorf("NodePage(/a~1b/w).Crumbs mismatch (-want +got):\n%s", diff)
	}
	if p.Tensor == nil || p.Tensor.Layout != "Fortran-contiguous (column-major)" || p.Tensor.Strides != "[1, 3]" || p.Tensor.OutOfBounds {
		t.Errorf("NodePage(/a~1b/w).Tensor = %+v, want a Fortran-contiguous [1, 3] view in bounds", p.Tensor)
	}
	if p.JSONURL != "/api/checkpoints/id/node?path=%2Fa~1b%2Fw" {
		t.Errorf("NodePage(/a~1b/w).JSONURL = %q", p.JSONURL)
	}
	if p.Children != nil || len(p.Findings) != 0 {
		t.Errorf("NodePage(/a~1b/w) has children %v, findings %v; want none", p.Children, p.Findings)
	}

	p = NewNodePage(meta, ck, inner, 0, 0)
	if p.Children == nil || len(p.Children.Rows) != 2 || len(p.Findings) != 1 || p.Findings[0].Call != "posix.system('id')" {
		t.Errorf("NodePage(/a~1b) = children %v, findings %+v; want 2 children and the posix.system finding", p.Children, p.Findings)
	}

	p = NewNodePage(meta, ck, root, 0, 0)
	if len(p.Findings) != 2 || p.Path != "/" || len(p.Crumbs) != 1 || p.Crumbs[0].URL != "" {
		t.Errorf("NodePage(root) = path %q, %d findings, crumbs %v; want /, 2, one unlinked crumb", p.Path, len(p.Findings), p.Crumbs)
	}

	p = NewNodePage(meta, ck, root.Children[1], 0, 0)
	if len(p.Hex) != 1 || p.Hex[0].ASCII != "xyz" || p.Length != 3 {
		t.Errorf("NodePage(/raw).Hex = %v, length %d, want one line 'xyz', 3", p.Hex, p.Length)
	}

	w.Tensor.Strides = []int64{2, 3}
	if p := NewNodePage(meta, ck, w, 0, 0); !p.Tensor.OutOfBounds {
		t.Errorf("NodePage(/a~1b/w) with strides [2, 3] over 6 elements: OutOfBounds = false, want true")
	}
}

func TestCheckpointPage(t *testing.T) {
	root := dict("",
		tensorNode("enc.weight", "float32", 4, 4),
		tensorNode("enc.bias", "float32", 4),
		tensorNode("emb.weight", "float16", 10, 4),
	)
	ck := checkpoint(root)
	ck.Notes = []string{"torch version 2.4"}
	p := NewCheckpointPage(FileMeta{ID: "id", Name: "m.pt", Size: 2048, Format: "torch-zip"}, ck)
	if p.View != ViewModules || p.Modules == nil {
		t.Fatalf("NewCheckpointPage(state dict).View = %q, modules %v; want modules", p.View, p.Modules)
	}
	if p.WithView(ViewRaw).View != ViewRaw || p.WithView("bogus").View != ViewModules {
		t.Errorf("WithView does not switch views")
	}
	want := []DTypeRow{
		{DType: "float16", Tensors: 1, Params: 40, Bytes: 80, ParamsText: "40", BytesText: "80 B", Share: "50.0%"},
		{DType: "float32", Tensors: 2, Params: 20, Bytes: 80, ParamsText: "20", BytesText: "80 B", Share: "50.0%"},
	}
	if diff := cmp.Diff(want, p.DTypes); diff != "" {
		t.Errorf("DTypes mismatch (-want +got):\n%s", diff)
	}
	if p.ParametersText != "60" || p.SizeText != "2.05 kB" || p.Tensors != 3 || p.Tree.Total != 3 {
		t.Errorf("page = params %q size %q tensors %d tree %d; want 60, 2.05 kB, 3, 3", p.ParametersText, p.SizeText, p.Tensors, p.Tree.Total)
	}

	plain := NewCheckpointPage(FileMeta{ID: "id"}, checkpoint(list("", str("", "a"))))
	if plain.View != ViewRaw || plain.WithView(ViewModules).View != ViewRaw {
		t.Errorf("NewCheckpointPage(list).View = %q, want raw in both views", plain.View)
	}
}

func TestPyRepr(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "''",
		`back\slash`:         `'back\\slash'`,
		`both ' and "`:       `'both \' and "'`,
		"<script>":           "'<script>'",
		"größe":              "'größe'",
		"\u200b":             `'\u200b'`,
		"\x7f\u0085":         `'\x7f\x85'`,
		string([]byte{0xff}): `'\ufffd'`,
	} {
		if got := PyRepr(in); got != want {
			t.Errorf("PyRepr(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestModuleTreeTiedTotals(t *testing.T) {
	wte := tensorNode("wte.weight", "float32", 10, 4)
	head := tensorNode("lm_head.weight", "float32", 10, 4)
	head.Tensor.Storage = wte.Tensor.Storage
	root := dict("", wte, head, tensorNode("ln.bias", "float32", 4))
	ck := checkpoint(root)
	tree := NewModuleTree("id", ck, FindStateDict(root))
	want := "3 entries, 3 tensors, 84 parameters, 336 B (44 parameters, 176 B without tied weights)"
	if got := tree.Totals(); got != want {
		t.Errorf("Totals() = %q, want %q", got, want)
	}
	p := NewCheckpointPage(FileMeta{ID: "id"}, ck)
	if p.DTypes[0].Params != 44 || p.DTypes[0].Tensors != 3 || p.DTypes[0].Bytes != 176 {
		t.Errorf("dtype row = %+v, want 3 tensors, 44 elements, 176 bytes (tied counted once)", p.DTypes[0])
	}
}

func TestFindingsTitle(t *testing.T) {
	d := FindingRow{Severity: "danger"}
	w := FindingRow{Severity: "warning"}
	for _, tc := range []struct {
		rows []FindingRow
		want string
	}{
		{[]FindingRow{d}, "1 danger"},
		{[]FindingRow{d, d, w}, "2 dangers, 1 warning"},
		{[]FindingRow{w, w}, "2 warnings"},
	} {
		if got := FindingsTitle(tc.rows); got != tc.want {
			t.Errorf("FindingsTitle(%v) = %q, want %q", tc.rows, got, tc.want)
		}
	}
	if got := Plural(2, "entry"); got != "2 entries" {
		t.Errorf("Plural(2, entry) = %q", got)
	}
}

// TestEmptyKeyNodePage checks the page of a dict entry whose key is the empty string (an
// OrderedDict's _metadata holds one): its heading and last crumb read as a pair of quotes.
func TestEmptyKeyNodePage(t *testing.T) {
	empty := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "", Seg: ""}
	md := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "_metadata", Seg: "_metadata", Children: []*ckpt.Node{empty}}
	ck := checkpoint(&ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Children: []*ckpt.Node{md}})
	n, err := ck.Node("/_metadata/")
	if err != nil || n != empty {
		t.Fatalf("/_metadata/: %v", err)
	}
	p := NewNodePage(FileMeta{ID: "id", Name: "m.pt"}, ck, n, 0, 10)
	if p.Node.Key != "''" || p.Crumbs[len(p.Crumbs)-1].Label != "''" || p.Path != "/_metadata/" {
		t.Errorf("heading %q, last crumb %q, path %q", p.Node.Key, p.Crumbs[len(p.Crumbs)-1].Label, p.Path)
	}
}

// TestPythonExpr checks the expression a node page offers to copy on fixtures; each was
// run in Python on the file itself (torch.load / pickle.load of the fixture, then the
// expression), and reaches the value the node shows.
func TestPythonExpr(t *testing.T) {
	for _, c := range []struct{ file, pointer, want string }{
		{"lightning_style.ckpt", "/state_dict/model.0.weight", "ckpt['state_dict']['model.0.weight']"},
		{"lightning_style.ckpt", "/optimizer_states/0/param_groups/0/betas", "ckpt['optimizer_states'][0]['param_groups'][0]['betas']"},
		{"sklearn_pipeline.pkl", "/steps/1/1/coef_", "model.steps[1][1].coef_"},
		{"sklearn_pipeline.pkl", "/steps/0/1/mean_", "model.steps[0][1].mean_"},
		{"state_dict.pt", "/wte.weight", "ckpt['wte.weight']"},
	} {
		f, err := os.Open("../../testdata/models/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := ck.Node(c.pointer)
		if err != nil {
			t.Fatalf("%s %s: %v", c.file, c.pointer, err)
		}
		if got := PythonExpr(ck, n); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.file, c.pointer, got, c.want)
		}
		if p := NewNodePage(FileMeta{ID: "id", Name: c.file}, ck, n, 0, 10); p.Python != c.want {
			t.Errorf("%s %s: the page offers %q", c.file, c.pointer, p.Python)
		}
		f.Close()
	}
}

// TestModuleTreeOfManyTensors builds the module view of a state dict of 200,000 tensors
// (t200k.pt's shape: layer0.w ... layer199999.w): it counts them all but shows at most its
// budget of rows, each module at most 200 children, with links to the rest.
func TestModuleTreeOfManyTensors(t *testing.T) {
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "collections.OrderedDict"}
	st := &ckpt.Storage{Key: "0", DType: "float32", Size: 16}
	for i := range 200_000 {
		k := "layer" + strconv.Itoa(i) + ".w"
		root.Children = append(root.Children, &ckpt.Node{Kind: ckpt.KindTensor, Type: "torch.Tensor", Key: k, Seg: k,
			Tensor: &ckpt.Tensor{DType: "float32", Shape: []int64{4}, Strides: []int64{1}, Storage: st}})
	}
	ck := checkpoint(root)
	tr := NewModuleTree("id", ck, root)
	if tr.Tensors != 200_000 || tr.Params != 800_000 {
		t.Errorf("counted %d tensors, %d parameters", tr.Tensors, tr.Params)
	}
	rows := 0
	var count func(ms []*Module)
	count = func(ms []*Module) {
		if len(ms) > moduleChildrenShown {
			t.Errorf("a module shows %d children", len(ms))
		}
		for _, m := range ms {
			rows++
			count(m.Children)
		}
	}
	count(tr.Modules)
	if rows > moduleRowBudget || tr.More != 200_000-len(tr.Modules) || tr.MoreURL != "/c/id/n/" {
		t.Errorf("%d rows shown, %d more (%q)", rows, tr.More, tr.MoreURL)
	}
}

// TestOptimizerStateNames opens lightning_style.ckpt, whose Adam state torch numbers 0 to 3
// for the model's parameters model.0.weight, model.0.bias, model.2.weight, model.2.bias (in
// model.parameters() order, checked with torch): each state entry is named after its
// parameter, in the children rows and on its own page.
func TestOptimizerStateNames(t *testing.T) {
	f, err := os.Open("../../testdata/models/lightning_style.ckpt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	state, err := ck.Node("/optimizer_states/0/state")
	if err != nil {
		t.Fatal(err)
	}
	kids := NewChildren(FileMeta{ID: "id"}, ck, state, 0, 10)
	var got []string
	for _, r := range kids.Rows {
		got = append(got, r.Key+"="+r.Note)
	}
	want := "0=model.0.weight 1=model.0.bias 2=model.2.weight 3=model.2.bias"
	if strings.Join(got, " ") != want {
		t.Errorf("rows %v, want %s", got, want)
	}
	n, _ := ck.Node("/optimizer_states/0/state/2")
	if p := NewNodePage(FileMeta{ID: "id"}, ck, n, 0, 10); p.Param != "model.2.weight" || !strings.Contains(p.ParamHow, "param_groups") {
		t.Errorf("page names %q (%s)", p.Param, p.ParamHow)
	}
}
