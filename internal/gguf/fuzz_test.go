package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes, seeded with the fixtures and a few hand-made files.
// Parse must never panic; when it accepts a file, what it says must hold together: tensors
// lie in the file, aligned and in order, arrays can be paged, and tensor data can be read.
func FuzzParse(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join(fixtureDir, "*.gguf"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(twoF32(nil))
	f.Add(build(3, []hkv{{"k", uint32(ValueArray), cat(le32(uint32(ValueArray)), le64(1), le32(uint32(ValueString)), le64(1), gstr("x"))}}, nil, 32, nil))
	f.Fuzz(checkParse)
}

// checkParse is the body of FuzzParse.
func checkParse(t *testing.T, b []byte) {
	file, err := Parse(bytes.NewReader(b), int64(len(b)), Options{MaxStringLen: 4096})
	if err != nil {
		if _, ok := err.(*Error); !ok || err.Error() == "" {
			t.Fatalf("error %T %v", err, err)
		}
		return
	}
	if file.DataOffset%file.Alignment != 0 && len(file.Tensors) > 0 {
		t.Fatalf("data section at %d, alignment %d", file.DataOffset, file.Alignment)
	}
	end := file.DataOffset
	for i := range file.Tensors {
		ti := &file.Tensors[i]
		if ti.Offset != file.DataOffset+ti.RelOffset || ti.RelOffset%file.Alignment != 0 ||
			ti.Offset < end || ti.Size < 0 || ti.Offset+ti.Size > int64(len(b)) {
			t.Fatalf("tensor %d %+v (previous end %d, file %d)", i, ti, end, len(b))
		}
		end = ti.Offset + ti.Size
		rev := slices.Clone(ti.Dims)
		slices.Reverse(rev)
		if !slices.Equal(rev, ti.Shape) {
			t.Fatalf("shape %v of dims %v", ti.Shape, ti.Dims)
		}
		if bs := int64(BlockSize(ti.Type)); bs == 0 || ti.Size != ti.Elements/bs*int64(TypeSize(ti.Type)) {
			t.Fatalf("tensor %+v: size", ti)
		}
		if Dequantizable(ti.Type) {
			n := min(ti.Elements, 600)
			if _, err := file.ReadFloat32(ti, 0, n); err != nil {
				t.Fatalf("ReadFloat32 of %s: %v", ti.Name, err)
			}
		}
	}
	for _, kv := range file.Metadata {
		if a, ok := kv.Value.Array(); ok {
			pageAll(t, a, 3)
		}
	}
}

// pageAll reads the first and last few items of an array, and of arrays in it, down to
// depth levels; a parsed file's arrays must always be readable.
func pageAll(t *testing.T, a *Array, depth int) {
	for _, r := range [][2]int64{{0, min(a.Len(), 3)}, {max(0, a.Len()-3), a.Len()}, {a.Len() / 2, a.Len()/2 + min(1, a.Len())}} {
		items, err := a.Values(r[0], r[1])
		if err != nil {
			t.Fatalf("%s items %v: %v", a, r, err)
		}
		if int64(len(items)) != r[1]-r[0] {
			t.Fatalf("%s items %v: got %d", a, r, len(items))
		}
		for _, it := range items {
			if sub, ok := it.Array(); ok && depth > 0 {
				pageAll(t, sub, depth-1)
			}
		}
	}
}
