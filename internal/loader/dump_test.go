package loader

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// TestDump prints the tree of the file named by CKPTVIEW_DUMP (a debugging aid).
func TestDump(t *testing.T) {
	path := os.Getenv("CKPTVIEW_DUMP")
	if path == "" {
		t.Skip("set CKPTVIEW_DUMP=file to print its tree")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	ck, err := Open(f, st.Size(), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "format=%s tensors=%d params=%d bytes=%v\n", ck.Format, ck.Tensors, ck.Parameters, ck.BytesByDType)
	for _, fd := range ck.Findings {
		fmt.Fprintf(&b, "finding %s %s at %q: %s (%s@%d)\n", fd.Severity, fd.Global, fd.Path, fd.Detail, fd.Where, fd.Offset)
	}
	for _, n := range ck.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	var walk func(n *ckpt.Node, depth int)
	walk = func(n *ckpt.Node, depth int) {
		if depth > 12 {
			return
		}
		fmt.Fprintf(&b, "%s%s [%s %s] %s", strings.Repeat("  ", depth), n.Path(), n.Kind, n.Type, n.Global)
		switch n.Kind {
		case ckpt.KindStr:
			fmt.Fprintf(&b, " %q", n.Str)
		case ckpt.KindInt:
			b.WriteString(" " + n.Int)
		case ckpt.KindFloat:
			fmt.Fprintf(&b, " %v", n.Float)
		case ckpt.KindBool:
			fmt.Fprintf(&b, " %v", n.Bool)
		case ckpt.KindBytes:
			fmt.Fprintf(&b, " %d bytes %x", n.Len, n.Bytes[:min(len(n.Bytes), 16)])
		case ckpt.KindRef:
			b.WriteString(" -> " + n.Target)
		}
		if n.Str != "" && n.Kind != ckpt.KindStr {
			fmt.Fprintf(&b, " %q", n.Str)
		}
		if t := n.Tensor; t != nil {
			fmt.Fprintf(&b, " %s %v strides=%v off=%d", t.DType, t.Shape, t.Strides, t.StorageOffset)
			if t.Storage != nil {
				fmt.Fprintf(&b, " storage=%s@%d+%d %s users=%v", t.Storage.Key, t.Storage.Offset, t.Storage.Size, t.Storage.ByteOrder, t.Storage.Users)
			}
		}
		b.WriteString("\n")
		kids := n.Children
		if n.Tensor != nil {
			kids = n.Tensor.Objects
		}
		for i, k := range kids {
			if i > 30 {
				fmt.Fprintf(&b, "%s…%d more\n", strings.Repeat("  ", depth+1), len(kids)-i)
				break
			}
			walk(k, depth+1)
		}
	}
	walk(ck.Root, 0)
	t.Log("\n" + b.String())
}
