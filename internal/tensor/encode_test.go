package tensor_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/loader"
	"github.com/ckptview/ckptview/internal/tensor"
)

// TestRawDownloadsAreBitIdentical encodes every fixture tensor as raw little-endian C-order
// bytes and compares their sha256 with the bytes numpy holds after torch.load/pickle.load.
func TestRawDownloadsAreBitIdentical(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(modelsDir, "expected.json"))
	if err != nil {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	var all map[string]json.RawMessage
	_ = json.Unmarshal(raw, &all)
	checked := 0
	for name, msg := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var fe struct {
			Tensors []struct {
				Path   string `json:"path"`
				Digest string `json:"sha256_le"`
			} `json:"tensors"`
		}
		_ = json.Unmarshal(msg, &fe)
		f, err := os.Open(filepath.Join(modelsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		ck, err := loader.Open(f, st.Size(), loader.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		for _, wt := range fe.Tensors {
			n, err := ck.Node(wt.Path)
			if wt.Digest == "" || err != nil || n.Tensor == nil || n.Tensor.Storage == nil {
				continue
			}
			for _, npy := range []bool{false, true} {
				s, err := tensor.NewStream(viewOf(n.Tensor), tensor.StreamOptions{NPY: npy})
				if err != nil {
					t.Errorf("%s %s: NewStream: %v", name, wt.Path, err)
					continue
				}
				data, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
				if err != nil {
					t.Errorf("%s %s: read: %v", name, wt.Path, err)
					continue
				}
				if npy {
					hl := npyDataStart(data)
					if hl < 0 || hl%64 != 0 {
						t.Errorf("%s %s: bad npy header %q", name, wt.Path, data[:min(len(data), 80)])
						continue
					}
					if s.Descr[0] == '>' {
						continue // kept big-endian, as the file has it; the raw check covers values
					}
					data = data[hl:]
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != wt.Digest {
					t.Errorf("%s %s (npy=%v, %s %v strides %v): sha256 of the encoded values differs from numpy's", name, wt.Path, npy, n.Tensor.DType, n.Tensor.Shape, n.Tensor.Strides)
				}
				checked++
			}
		}
	}
	if checked < 100 {
		t.Errorf("checked %d encodings, want more", checked)
	}
}

// npyDataStart is where a .npy file's data starts (versions 1.0, 2.0 and 3.0), or -1.
func npyDataStart(b []byte) int {
	if len(b) < 12 || string(b[:6]) != "\x93NUMPY" {
		return -1
	}
	switch b[6] {
	case 1:
		return 10 + int(binary.LittleEndian.Uint16(b[8:10]))
	case 2, 3:
		return 12 + int(binary.LittleEndian.Uint32(b[8:12]))
	}
	return -1
}

// TestStreamReadAtAnyOffset reads a non-contiguous view's encoding in odd-sized pieces at
// odd offsets, as Range requests do, and compares with one sequential read.
func TestStreamReadAtAnyOffset(t *testing.T) {
	f, err := os.Open(filepath.Join(modelsDir, "dtypes.pt"))
	if err != nil {
		t.Fatal("no fixtures: the committed fixtures are missing")
	}
	st, _ := f.Stat()
	ck, err := loader.Open(f, st.Size(), loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/transposed", "/fortran", "/bfloat16", "/offset_slice", "/expanded", "/complex64"} {
		n, err := ck.Node(p)
		if err != nil || n.Tensor == nil {
			continue
		}
		s, err := tensor.NewStream(viewOf(n.Tensor), tensor.StreamOptions{NPY: true})
		if err != nil {
			t.Fatal(err)
		}
		whole, _ := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
		for off := int64(0); off < s.Size(); off += 7 {
			buf := make([]byte, 13)
			n, _ := s.ReadAt(buf, off)
			if string(buf[:n]) != string(whole[off:min(off+13, int64(len(whole)))]) {
				t.Fatalf("%s: ReadAt(13 bytes, %d) differs from the sequential read", p, off)
			}
		}
	}
}
