package loader

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

type shardedFacts struct {
	Files   []string `json:"files"`
	Order   []string `json:"order"`
	Tensors map[string]struct {
		Shard  string  `json:"shard"`
		DType  string  `json:"dtype"`
		Shape  []int64 `json:"shape"`
		SHA256 string  `json:"sha256_le"`
	} `json:"tensors"`
}

func openSetFiles(t *testing.T, names []string) []File {
	t.Helper()
	var files []File
	for _, n := range names {
		f, err := os.Open(filepath.Join(modelsDir, "sharded", n))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		st, _ := f.Stat()
		files = append(files, File{Name: n, R: f, Size: st.Size()})
	}
	return files
}

// TestSharded opens the index and shards transformers' layout writes as one checkpoint:
// every tensor of the weight_map, in its order, from the shard the index names, with the
// bytes torch held; and a missing shard is named.
func TestSharded(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected_sharded.json"))
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]shardedFacts
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("expected_sharded.json has %d sets, want 2", len(all))
	}
	for index, want := range all {
		t.Run(index, func(t *testing.T) {
			ck, err := OpenSet(openSetFiles(t, want.Files), Options{})
			if err != nil {
				t.Fatalf("OpenSet(%v): %v", want.Files, err)
			}
			defer ck.Close()
			if !strings.HasPrefix(ck.Format, "sharded ") {
				t.Errorf("Format = %q, want sharded ...", ck.Format)
			}
			var order []string
			for _, k := range ck.Root.Children {
				if !k.Attr {
					order = append(order, k.Key)
				}
			}
			if strings.Join(order, ",") != strings.Join(want.Order, ",") {
				t.Errorf("root keys = %v, want the weight_map's %v", order, want.Order)
			}
			for name, wt := range want.Tensors {
				n, err := ck.Node("/" + ckpt.EscapeSegment(name))
				if err != nil || n.Tensor == nil || n.Tensor.Storage == nil {
					t.Errorf("Node(%q) = %v, %v; want a tensor", name, n, err)
					continue
				}
				tt := n.Tensor
				if tt.Storage.File != wt.Shard || tt.DType != wt.DType || !equalShape(tt.Shape, wt.Shape) {
					t.Errorf("%s: %s %v in %q, want %s %v in %q", name, tt.DType, tt.Shape, tt.Storage.File, wt.DType, wt.Shape, wt.Shard)
				}
				v := &tensor.View{DType: tt.DType, Shape: tt.Shape, Strides: tt.Strides, Offset: tt.StorageOffset,
					Data: tt.Storage.Data, DataOffset: tt.Storage.Offset, DataSize: tt.Storage.Size}
				s, err := tensor.NewStream(v, tensor.StreamOptions{})
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
				sum := sha256.Sum256(b)
				if hex.EncodeToString(sum[:]) != wt.SHA256 {
					t.Errorf("%s: the bytes differ from torch's", name)
				}
				if p := tt.Storage.Users; len(p) == 0 || !strings.HasPrefix(p[0], "/") {
					t.Errorf("%s: storage users %v", name, p)
				}
			}
			// without its last shard: the others open, and the missing one is named
			ck2, err := OpenSet(openSetFiles(t, want.Files[:len(want.Files)-1]), Options{})
			if err != nil {
				t.Fatalf("OpenSet without a shard: %v", err)
			}
			defer ck2.Close()
			missing := want.Files[len(want.Files)-1]
			if !strings.Contains(strings.Join(ck2.Notes, "\n"), "missing shard(s), not uploaded with the index: "+missing) {
				t.Errorf("notes %q do not name the missing %s", ck2.Notes, missing)
			}
		})
	}
}

// TestJoblibSideCars opens a joblib 0.9.2 pickle with the side-car .npy files its
// NDArrayWrapper objects name (../shared/corpus, read in place): the arrays appear where the
// wrappers were, as joblib.load returns them. The values are the corpus MANIFEST's
// [arange(5) int64, arange(5) float64, an object array, bytes, np.matrix([0, 1, 2]), str].
func TestJoblibSideCars(t *testing.T) {
	base := "joblib_0.9.2_pickle_py35_np19.pkl"
	var files []File
	for _, n := range []string{base, base + "_01.npy", base + "_02.npy", base + "_03.npy", base + "_04.npy"} {
		f, err := os.Open(filepath.Join(corpusDir, "joblib", n))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		files = append(files, File{Name: n, R: f, Size: st.Size()})
	}
	ck, err := OpenSet(files, Options{})
	if err != nil {
		t.Fatalf("OpenSet: %v", err)
	}
	defer ck.Close()
	for _, tc := range []struct {
		path, typ, dtype string
		shape            []int64
		first            []any
	}{
		{"/0", "numpy.ndarray", "int64", []int64{5}, []any{0.0, 1.0, 2.0, 3.0, 4.0}},
		{"/1", "numpy.ndarray", "float64", []int64{5}, []any{0.0, 1.0, 2.0, 3.0, 4.0}},
		{"/4", "numpy.matrixlib.defmatrix.matrix", "int64", []int64{1, 3}, []any{0.0, 1.0, 2.0}},
	} {
		n, err := ck.Node(tc.path)
		if err != nil || n.Tensor == nil || n.Type != tc.typ || n.Tensor.DType != tc.dtype || !equalShape(n.Tensor.Shape, tc.shape) {
			t.Errorf("Node(%q) = %+v, %v; want %s %s %v", tc.path, n, err, tc.typ, tc.dtype, tc.shape)
			continue
		}
		for i, w := range tc.first {
			if v, ok := readElement(n.Tensor, int64(i)); !ok || !sameValue(v, w) {
				t.Errorf("%s element %d = %v, want %v", tc.path, i, v, w)
			}
		}
	}
	if n, err := ck.Node("/2/1"); err != nil || n.Str != "abc" {
		t.Errorf("the object array's side-car: /2/1 = %+v, %v; want 'abc'", n, err)
	}
}
