package loader

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// treeText writes every value of the tree under n, items made on demand included, with
// all a reader sees of it: the reference form two trees are compared in.
func treeText(b *strings.Builder, n *ckpt.Node) {
	fmt.Fprintf(b, "%q %s %q key=%q seg=%q len=%d", n.Path(), n.Kind, n.Type, n.Key, n.Seg, n.Len)
	fmt.Fprintf(b, " int=%s float=%v str=%q bytes=%x trunc=%v bool=%v global=%q target=%q attr=%v danger=%v",
		n.Int, n.Float, n.Str, n.Bytes, n.Truncated, n.Bool, n.Global, n.Target, n.Attr, n.Danger)
	if n.Complex != 0 {
		fmt.Fprintf(b, " complex=%v", n.Complex)
	}
	if t := n.Tensor; t != nil {
		fmt.Fprintf(b, " tensor=%s%v strides=%v offset=%d grad=%v layout=%q quant=%v packed=%v column=%v",
			t.DType, t.Shape, t.Strides, t.StorageOffset, t.RequiresGrad, t.Layout, t.Quant, t.Packed, t.Column)
		if s := t.Storage; s != nil {
			fmt.Fprintf(b, " storage=%q/%s/%s/%s@%d+%d users=%v", s.Key, s.DType, s.Location, s.ByteOrder, s.Offset, s.Size, s.Users)
		}
	}
	b.WriteByte('\n')
	if n.DictKey != nil {
		b.WriteString("key: ")
		treeText(b, n.DictKey)
	}
	for _, k := range n.Items(0, n.NumItems()) {
		treeText(b, k)
	}
}

// openBoth opens data as the loader does and with every value a node.
func openBoth(t *testing.T, data []byte) (kept, nodes *ckpt.Checkpoint, err error) {
	t.Helper()
	kept, err = Open(bytes.NewReader(data), int64(len(data)), Options{})
	nodes, err2 := Open(bytes.NewReader(data), int64(len(data)), Options{nodesOnly: true})
	if (err == nil) != (err2 == nil) {
		t.Fatalf("values kept: %v; every value a node: %v", err, err2)
	}
	return kept, nodes, err
}

// TestPlainDataKeptAsValues holds the trees whose plain data is kept as values (pure.go)
// to the trees made node by node, value for value, on every fixture, hostile file and
// corpus file, and on pickles made to the shapes that decide it: records, a vocabulary,
// nesting, a container referenced twice inside and from outside a plain subtree.
func TestPlainDataKeptAsValues(t *testing.T) {
	files := testFiles(t, "../../testdata/models/*", "../../testdata/models/sharded/*", "../../testdata/hostile/*", corpusDir+"/*/*")
	synthetic := syntheticPlain()
	for name, b := range synthetic {
		files[name] = b
	}
	kept := 0
	for name, data := range files {
		a, b, err := openBoth(t, data)
		if err != nil {
			if synthetic[name] != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		var ta, tb strings.Builder
		treeText(&ta, a.Root)
		treeText(&tb, b.Root)
		if ta.String() != tb.String() {
			t.Errorf("%s: the tree with plain data kept as values differs:\n%s", name, firstLineDiff(ta.String(), tb.String()))
		}
		ckpt.Walk(a.Root, func(n *ckpt.Node) {
			if _, ok := n.Lazy().(*pureItems); ok {
				kept++
			}
		})
	}
	if kept < 5 {
		t.Errorf("only %d subtrees kept as values: the comparison checks little", kept)
	}
}

// testFiles reads the files the globs match (under 64 MiB each), by path: at least 100 of
// them, or the comparisons that use them check little.
func testFiles(t *testing.T, globs ...string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, glob := range globs {
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil && len(b) < 64<<20 {
				files[p] = b
			}
		}
	}
	if len(files) < 100 {
		t.Fatalf("only %d files", len(files))
	}
	return files
}

func firstLineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d\n kept:  %s\n nodes: %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines against %d", len(al), len(bl))
}

// syntheticPlain are pickles in the opcodes pickle.dump writes (protocol 2, unframed, memo
// by BINPUT/BINGET) shaped to exercise the plain-data rules.
func syntheticPlain() map[string][]byte {
	str := func(s string) []byte { return append([]byte{'X', byte(len(s)), 0, 0, 0}, s...) }
	intOp := func(i int) []byte { return []byte{'J', byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)} }
	out := map[string][]byte{}

	// records: [{"id": i, "name": "user<i>", "score": i/7, "ok": True}, ...] x 500
	var p bytes.Buffer
	p.WriteString("\x80\x02](")
	for i := range 500 {
		p.WriteString("}(")
		p.Write(str("id"))
		p.Write(intOp(i))
		p.Write(str("name"))
		p.Write(str("user" + strconv.Itoa(i)))
		p.Write(str("score"))
		p.WriteByte('G')
		p.Write(floatBits(float64(i) / 7))
		p.Write(str("ok"))
		p.WriteString("\x88u")
	}
	p.WriteString("e.")
	out["records"] = bytes.Clone(p.Bytes())

	// a vocabulary with keys that need escaping in a pointer, and a '' key
	p.Reset()
	p.WriteString("\x80\x02}(")
	for i := range 300 {
		p.Write(str("t/" + strconv.Itoa(i) + "~"))
		p.Write(intOp(i))
	}
	p.Write(str(""))
	p.WriteString("N")
	p.WriteString("u.")
	out["vocab"] = bytes.Clone(p.Bytes())

	// L = list(range(40)); [L, L]: the second is a ref
	p.Reset()
	p.WriteString("\x80\x02](](")
	for i := range 40 {
		p.Write(intOp(i))
	}
	p.WriteString("eq\x01h\x01e.")
	out["shared inside"] = bytes.Clone(p.Bytes())

	// (L, __main__.Foo(L)): L is plain where it first stands, and met again in an object
	p.Reset()
	p.WriteString("\x80\x02(](")
	for i := range 40 {
		p.Write(intOp(i))
	}
	p.WriteString("eq\x01c__main__\nFoo\nh\x01\x85Rt.")
	out["shared from an object"] = bytes.Clone(p.Bytes())

	// nested plain lists 50 deep, each with 40 ints
	p.Reset()
	p.WriteString("\x80\x02")
	for range 50 {
		p.WriteString("](")
		for i := range 40 {
			p.Write(intOp(i))
		}
	}
	p.WriteString(strings.Repeat("e", 50) + ".") // each APPENDS closes a list into its parent's mark
	out["nested"] = bytes.Clone(p.Bytes())

	// a dict with a duplicate key and an int key: made node by node
	p.Reset()
	p.WriteString("\x80\x02}(")
	for i := range 40 {
		p.Write(str("k" + strconv.Itoa(i%39)))
		p.Write(intOp(i))
	}
	p.WriteString("K\x01K\x02u.")
	out["duplicate keys"] = bytes.Clone(p.Bytes())
	return out
}

func floatBits(f float64) []byte {
	var b [8]byte
	u := math.Float64bits(f)
	for i := range 8 {
		b[7-i] = byte(u >> (8 * i))
	}
	return b[:]
}
