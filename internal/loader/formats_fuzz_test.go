package loader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// The readers of joblib, .npy/.npz and safetensors files are fuzzed through the loader's
// sniffing without Open's recover, so that a panic in them fails the fuzzer instead of
// becoming an error message. Each target is seeded with its format's fixtures and corpus
// files and checks what an opened file must satisfy.

func addSeeds(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		names, _ := filepath.Glob(p)
		for _, name := range names {
			if b, err := os.ReadFile(name); err == nil && len(b) < 64<<10 {
				f.Add(b)
			}
		}
	}
}

// openStrict opens data like Open, but lets a panic through.
func openStrict(t *testing.T, data []byte) (*ckpt.Checkpoint, error) {
	op := newOpener(bytes.NewReader(data), int64(len(data)), Options{MaxOps: 200000, MaxNodes: 200000,
		MaxDecompress: 8 << 20}.withDefaults())
	ck, err := op.open()
	if err != nil {
		op.ck.Close()
		var le *Error
		if !errors.As(err, &le) {
			t.Fatalf("open returned %T %v, want *loader.Error", err, err)
		}
		return nil, err
	}
	t.Cleanup(func() { ck.Close() })
	return ck, nil
}

// checkStorages asserts that every tensor of an opened file lies inside the bytes it reads
// from and that its view fits its storage.
func checkStorages(t *testing.T, ck *ckpt.Checkpoint, size int64) {
	ckpt.Walk(ck.Root, func(n *ckpt.Node) {
		tt := n.Tensor
		if tt == nil || tt.Storage == nil {
			return
		}
		st := tt.Storage
		if st.Offset < 0 || st.Size < 0 {
			t.Fatalf("%s: storage at %d+%d", n.Path(), st.Offset, st.Size)
		}
		if ra, ok := st.Data.(*bytes.Reader); ok && st.Offset+st.Size > ra.Size() {
			t.Fatalf("%s: storage %d+%d past the end of its %d bytes", n.Path(), st.Offset, st.Size, ra.Size())
		}
		if es := int64(ckpt.DTypeSize(tt.DType)); es > 0 && n.Kind == ckpt.KindTensor {
			if err := checkView(tt); err != nil {
				t.Fatalf("%s: %v", n.Path(), err)
			}
		}
	})
}

func FuzzSafetensors(f *testing.F) {
	addSeeds(f, "../../testdata/models/*.safetensors", filepath.Join(corpusDir, "safetensors", "*"), filepath.Join(corpusDir, "candle", "*.safetensors"))
	f.Add([]byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":{\"dtype\":\"F32\"}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := openStrict(t, data)
		if err != nil || ck.Format != "safetensors" {
			return
		}
		checkStorages(t, ck, int64(len(data)))
		// the tensors tile the data buffer exactly, to the end of the file
		var total int64
		for _, st := range ck.Storages {
			total += st.Size
			if st.Offset+st.Size > int64(len(data)) {
				t.Fatalf("storage %s ends at %d, past the file's %d bytes", st.Key, st.Offset+st.Size, len(data))
			}
		}
		if total > int64(len(data)) {
			t.Fatalf("storages hold %d bytes, more than the file's %d", total, len(data))
		}
	})
}

func FuzzNPY(f *testing.F) {
	addSeeds(f, "../../testdata/models/*.npy", "../../testdata/models/*.npz", filepath.Join(corpusDir, "numpy", "*"),
		filepath.Join(corpusDir, "picklescan", "*.np*"), filepath.Join(corpusDir, "candle", "*.np*"))
	f.Add([]byte("\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }            \n\x00\x00\x80\x3f\x00\x00\x00\x40"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := openStrict(t, data)
		if err != nil {
			return
		}
		checkStorages(t, ck, int64(len(data)))
		if ck.Format != "npy" || ck.Root.Tensor == nil || ck.Root.Tensor.Storage == nil {
			return
		}
		tt := ck.Root.Tensor
		if want := tt.Numel() * int64(ckpt.DTypeSize(tt.DType)); ckpt.DTypeSize(tt.DType) > 0 && tt.Storage.Size != want {
			t.Fatalf(".npy data of %d bytes for %v %s (want %d)", tt.Storage.Size, tt.Shape, tt.DType, want)
		}
	})
}

func FuzzJoblib(f *testing.F) {
	addSeeds(f, "../../testdata/models/*.joblib", "../../testdata/models/joblib_*", filepath.Join(corpusDir, "joblib", "*"),
		filepath.Join(corpusDir, "kserve", "*.joblib"), filepath.Join(corpusDir, "mlserver", "*.joblib"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ck, err := openStrict(t, data)
		if err != nil {
			return
		}
		checkStorages(t, ck, int64(len(data)))
		checkPointers(t, ck)
	})
}
