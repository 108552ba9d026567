package loader

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// formatFacts are the facts generate.py recorded for the joblib, numpy and safetensors
// fixtures beyond what TestFixtures checks: where each array's bytes are, its byte order,
// and a structured dtype's fields.
type formatFacts struct {
	Format  string `json:"format"`
	Tensors []struct {
		Path          string `json:"path"`
		Type          string `json:"type"`
		Descr         any    `json:"descr"`
		First         []any  `json:"first"`
		JoblibOffset  *int64 `json:"joblib_data_offset"`
		NPYDataOffset *int64 `json:"data_offset"`
		FileOffset    *int64 `json:"file_offset"`
		NBytes        *int64 `json:"nbytes"`
		FileByteOrder string `json:"file_byteorder"`
		Fields        []struct {
			Name   string `json:"name"`
			Descr  string `json:"descr"`
			Offset int64  `json:"offset"`
		} `json:"fields"`
	} `json:"tensors"`
	Metadata map[string]string `json:"metadata"`
}

// TestFormatFacts opens the joblib, .npy, .npz and safetensors fixtures and compares where
// their data lies, its byte order and structured fields with what the real libraries wrote.
func TestFormatFacts(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	checked := map[string]int{}
	for name, msg := range all {
		var ff formatFacts
		if json.Unmarshal(msg, &ff) != nil {
			continue
		}
		switch ff.Format {
		case "joblib", "npy", "npz", "safetensors":
		default:
			continue
		}
		t.Run(name, func(t *testing.T) {
			ck := openFixture(t, name)
			defer ck.Close()
			for _, wt := range ff.Tensors {
				n, err := ck.Node(wt.Path)
				if err != nil || n.Tensor == nil {
					t.Errorf("Open(%q).Node(%q) = %v, %v; want an array", name, wt.Path, n, err)
					continue
				}
				tt := n.Tensor
				if wt.Type != "" && n.Type != wt.Type {
					t.Errorf("Open(%q).Node(%q).Type = %q, want %q", name, wt.Path, n.Type, wt.Type)
				}
				if tt.Storage == nil {
					continue // an object array: its items are checked by TestFixtures
				}
				st := tt.Storage
				off := st.Offset
				if sr, ok := st.Data.(*io.SectionReader); ok { // an .npz member in place
					_, base, _ := sr.Outer()
					off += base
				}
				switch {
				case wt.JoblibOffset != nil:
					if st.Offset != *wt.JoblibOffset {
						t.Errorf("Open(%q).Node(%q) data at %d, want %d (where joblib read it)", name, wt.Path, st.Offset, *wt.JoblibOffset)
					}
					checked["joblib offsets"]++
				case ff.Format == "npy" && wt.NPYDataOffset != nil, ff.Format == "npz" && wt.NPYDataOffset != nil:
					if off != *wt.NPYDataOffset {
						t.Errorf("Open(%q).Node(%q) data at %d, want %d", name, wt.Path, off, *wt.NPYDataOffset)
					}
					checked["npy offsets"]++
				case wt.FileOffset != nil:
					if st.Offset != *wt.FileOffset || st.Size != *wt.NBytes {
						t.Errorf("Open(%q).Node(%q) data at %d+%d, want %d+%d", name, wt.Path, st.Offset, st.Size, *wt.FileOffset, *wt.NBytes)
					}
					checked["safetensors offsets"]++
				}
				if wt.FileByteOrder != "" && st.ByteOrder != wt.FileByteOrder && ckpt.DTypeSize(tt.DType) > 1 {
					t.Errorf("Open(%q).Node(%q) byte order %q, want %q", name, wt.Path, st.ByteOrder, wt.FileByteOrder)
				}
				if len(wt.Fields) == 0 {
					continue
				}
				if len(tt.Fields) != len(wt.Fields) {
					t.Errorf("Open(%q).Node(%q).Fields = %+v, want %+v", name, wt.Path, tt.Fields, wt.Fields)
					continue
				}
				for i, wf := range wt.Fields {
					gf := tt.Fields[i]
					if gf.Name != wf.Name || gf.Descr != wf.Descr || gf.Offset != wf.Offset {
						t.Errorf("Open(%q).Node(%q) field %d = %+v, want %+v", name, wt.Path, i, gf, wf)
					}
					// the field's column: element j of the field is the j-th record's value
					col, err := ck.Node(wt.Path + "/" + ckpt.EscapeSegment(wf.Name))
					if err != nil || col.Tensor == nil {
						t.Errorf("Open(%q): no column %s of %s", name, wf.Name, wt.Path)
						continue
					}
					for j, rec := range wt.First {
						r, ok := rec.([]any)
						if !ok || i >= len(r) {
							continue
						}
						v, ok := readElement(col.Tensor, int64(j))
						if !ok {
							break
						}
						if !sameValue(v, r[i]) {
							t.Errorf("Open(%q): column %s of %s element %d = %v, want %v", name, wf.Name, wt.Path, j, v, r[i])
						}
						checked["structured columns"]++
					}
				}
			}
			for k, v := range ff.Metadata {
				n, err := ck.Node("/__metadata__/" + ckpt.EscapeSegment(k))
				if err != nil || n.Str != v {
					t.Errorf("Open(%q) metadata %s = %v, %v; want %q", name, k, n, err, v)
				}
			}
		})
	}
	for _, what := range []string{"joblib offsets", "npy offsets", "safetensors offsets", "structured columns"} {
		if checked[what] < 3 {
			t.Errorf("checked %d %s, want more (%v)", checked[what], what, fmt.Sprint(checked))
		}
	}
}
