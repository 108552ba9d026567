package loader

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// safetensorsFile builds a safetensors file from a header and a data buffer.
func safetensorsFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func npyFile(major byte, header string, data []byte) []byte {
	b := []byte("\x93NUMPY")
	b = append(b, major, 0)
	if major == 1 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(header)))
	}
	return append(append(b, header...), data...)
}

func zlibOf(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// TestHostileFormats gives the new readers files that break their format's rules, one rule
// each: every one is refused with a message that says what is wrong, never a panic or a
// huge allocation, and the limits name their flag.
func TestHostileFormats(t *testing.T) {
	f32 := make([]byte, 16)
	joblibFixture, err := os.ReadFile(filepath.Join(modelsDir, "joblib_arrays.joblib"))
	if err != nil {
		t.Fatal(err)
	}
	bomb := zlibOf(make([]byte, 9<<20)) // 9 MiB of zeros in a few KB
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(joblibFixture[:200]) // a pickle cut short
	gw.Close()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		// safetensors, as safetensors/src/tensor.rs validates
		{"st header too large", safetensorsFile("{", nil)[:8:8], ""},
		{"st header past the end", append(binary.LittleEndian.AppendUint64(nil, 1<<20), "{}"...), "InvalidHeaderLength"},
		{"st header over 100 MB", append(binary.LittleEndian.AppendUint64(nil, 200_000_000), make([]byte, 64)...), ""},
		{"st not UTF-8", safetensorsFile("{\"a\xff\":{}}", nil), "not UTF-8"},
		{"st gap", safetensorsFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, f32), "gap"},
		{"st overlap", safetensorsFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, f32), "overlaps"},
		{"st size", safetensorsFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`, f32), "TensorInvalidInfo"},
		{"st trailing bytes", safetensorsFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32), "follow the last tensor"},
		{"st truncated", safetensorsFile(`{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`, f32), "truncated"},
		{"st repeated name", safetensorsFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, f32), "appears twice"},
		{"st repeated field", safetensorsFile(`{"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}`, f32[:8]), "appears twice"},
		{"st metadata not str", safetensorsFile(`{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32[:8]), "not a string"},
		{"st shape overflow", safetensorsFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, f32[:8]), "overflows"},
		{"st negative shape", safetensorsFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}`, f32[:8]), "non-negative"},
		{"st packed misaligned", safetensorsFile(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, f32[:2]), "MisalignedSlice"},
		{"st trailing json", safetensorsFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x`, f32[:8]), "not valid JSON"},
		// .npy, as numpy/lib/format.py reads it
		{"npy version", npyFile(4, "{}", nil), "format version 4.0"},
		{"npy header past the end", npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", nil)[:20], "declares"},
		{"npy extra key", npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", f32[:8]), "exactly the keys"},
		{"npy not a literal", npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os')}", nil), "not a Python literal"},
		{"npy negative dimension", npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", f32[:8]), "negative dimension"},
		{"npy short data", npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }", f32[:8]), "needs 400 bytes"},
		{"npy huge shape", npyFile(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", f32[:8]), "2^63"},
		{"npy bad descr", npyFile(1, "{'descr': '<q9', 'fortran_order': False, 'shape': (1,), }", f32[:8]), "type code"},
		{"npy fortran not bool", npyFile(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", f32[:8]), "True or False"},
		// joblib
		{"joblib cut inside its array data", joblibFixture[:700], ""},
		{"joblib zlib bomb", bomb, "-max-decompress"},
		{"joblib gzip of a cut pickle", gz.Bytes(), ""},
		{"joblib ZF length not a number", append([]byte("ZFzz                 "), zlibOf([]byte("\x80\x02K\x01."))...), "not a number"},
		{"zlib of no pickle", zlibOf([]byte("hello world")), "not a pickle"},
		{"bad zlib", []byte("x\x9c\xff\xff\xff\xff"), "zlib"},
		{"lfs pointer", []byte("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"), "Git LFS pointer"},
		{"html page", []byte("<!DOCTYPE html><html><body>Sign in</body></html>"), "HTML page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := Open(bytes.NewReader(tc.data), int64(len(tc.data)), Options{MaxDecompress: 8 << 20})
			if err == nil {
				ck.Close()
				t.Fatalf("Open(%s) succeeded, want an error", tc.name)
			}
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("Open(%s) = %T %v, want a *loader.Error", tc.name, err, err)
			}
			if strings.Contains(le.Msg, "could not be read (") {
				t.Fatalf("Open(%s) recovered a panic: %v", tc.name, err)
			}
			if tc.want != "" && !strings.Contains(le.Msg, tc.want) {
				t.Errorf("Open(%s) = %q, want it to say %q", tc.name, le.Msg, tc.want)
			}
		})
	}
}

// A joblib wrapper whose shape or dtype the scanner cannot evaluate refuses the file: where
// the array data ends, and so what joblib.load reads next, would be unknown.
func TestJoblibFailsClosed(t *testing.T) {
	// protocol 2: NumpyArrayWrapper via NEWOBJ, BUILD with a dict whose dtype is a global
	// (not a numpy.dtype instance), then "raw data" that a guess could misread
	p := []byte("\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(U\x05shape" +
		"K\x03\x85U\x05dtypecbuiltins\nfloat\nU\x05order" + "U\x01Cub" + "cos\nsystem\n.")
	_, err := Open(bytes.NewReader(p), int64(len(p)), Options{})
	var le *Error
	if !errors.As(err, &le) || !strings.Contains(le.Msg, "could not be checked") {
		t.Fatalf("Open = %v, want a refusal saying it could not be checked", err)
	}
}

// joblibWithArray is a protocol-2 joblib stream: [NumpyArrayWrapper of a float64 array of
// shape (2,) followed by its 16 raw bytes (joblib 1.2 layout: padding count, padding), then
// whatever after is, then the list closes.
func joblibWithArray(raw []byte, after string, aligned bool) []byte {
	align := "U\x1bnumpy_array_alignment_bytesK\x10"
	if !aligned { // joblib < 1.2: the data follows at once
		align = ""
	}
	p := "\x80\x02]q\x00(" +
		"cjoblib.numpy_pickle\nNumpyArrayWrapper\nq\x01)\x81q\x02}q\x03(" +
		"U\x08subclasscnumpy\nndarray\nq\x04" +
		"U\x05shapeK\x02\x85" +
		"U\x05orderU\x01C" +
		"U\x05dtypecnumpy\ndtype\nq\x05U\x02f8\x89\x88\x87Rq\x06(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb" +
		"U\x0aallow_mmap\x88" +
		align +
		"ub"
	out := []byte(p)
	if aligned {
		out = append(out, 0) // padding count: none
	}
	out = append(out, raw...)
	out = append(out, after...)
	return append(out, "e."...)
}

// A payload placed after a joblib array's data is found (the scan goes on where joblib's
// reader does), and one hidden inside the array data, which joblib.load never runs but
// pickle.load of the same file would, is reported as pickle.load's.
func TestJoblibPayloadAfterArray(t *testing.T) {
	raw := make([]byte, 16)
	after := joblibWithArray(raw, "cposix\nsystem\nq\x07U\x02lsq\x08\x85R", true)
	ck, err := Open(bytes.NewReader(after), int64(len(after)), Options{})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	found := false
	for _, f := range ck.Findings {
		if f.Severity == ckpt.SeverityDanger && f.Global == "posix.system" && !strings.Contains(f.Where, "pickle.load reads it") {
			found = true
		}
	}
	if !found || ck.Format != "joblib" {
		t.Errorf("findings %+v (%s), want posix.system found in joblib's reading", ck.Findings, ck.Format)
	}
	if n, err := ck.Node("/0"); err != nil || n.Tensor == nil || n.Tensor.Storage.Size != 16 {
		t.Errorf("the array: %+v, %v", n, err)
	}

	// the payload inside the array data (16 bytes: GLOBAL, None, TUPLE1, REDUCE, POP, POP):
	// only pickle.load would read it as opcodes
	decoy := []byte("cos\nsystem\nN\x85R00")
	inside := joblibWithArray(decoy, "", false)
	ck2, err := Open(bytes.NewReader(inside), int64(len(inside)), Options{})
	var findings []ckpt.Finding
	if err == nil {
		findings = ck2.Findings
	} else if le, ok := err.(*Error); ok {
		findings = le.Findings
	}
	found = false
	for _, f := range findings {
		if f.Global == "os.system" && f.Severity == ckpt.SeverityDanger && strings.Contains(f.Where, "pickle.load reads it") {
			found = true
		}
	}
	if !found {
		t.Errorf("findings %+v, want os.system reported as what pickle.load would read", findings)
	}
}

// Python's unpickler reads a FRAME whole, so an array whose wrapper's BUILD sits inside a
// frame is read from the file after the frame, and the frame's remaining opcodes come
// before the bytes after the array (pickle._Unpickler with joblib's file_handle reads).
func TestJoblibArrayAfterFrame(t *testing.T) {
	stream := joblibWithArray(nil, "", false)
	stream = stream[:len(stream)-2] // ... BUILD, without "e."
	body := stream[2:]              // after PROTO 2
	inFrame := append(append([]byte{}, body...), "cposix\nsystem\nU\x02ls\x85R"...)
	raw := []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0x40} // 1.0, 2.0
	p := []byte("\x80\x04\x95")
	p = binary.LittleEndian.AppendUint64(p, uint64(len(inFrame)))
	p = append(p, inFrame...)
	p = append(p, raw...)
	p = append(p, "e."...)
	ck, err := Open(bytes.NewReader(p), int64(len(p)), Options{})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	found := false
	for _, f := range ck.Findings {
		if f.Global == "posix.system" && f.Severity == ckpt.SeverityDanger && !strings.Contains(f.Where, "pickle.load reads it") {
			found = true
		}
	}
	if !found {
		t.Errorf("findings %+v: the call after the BUILD, inside the frame, is not found", ck.Findings)
	}
	n, err := ck.Node("/0")
	if err != nil || n.Tensor == nil || n.Tensor.Storage.Offset != int64(len(p)-len(raw)-2) {
		t.Fatalf("the array = %+v, %v; want its data right after the frame", n, err)
	}
	if v, ok := readElement(n.Tensor, 1); !ok || !sameValue(v, 2.0) {
		t.Errorf("the array's second value = %v, want 2", v)
	}
}

// deflateStorages rewrites a torch zip with its data/ members deflated (torch stores them).
func deflateStorages(t *testing.T, data []byte) []byte {
	return rewriteZip(t, data, func(name string) uint16 {
		if strings.Contains(name, "/data/") {
			return zip.Deflate
		}
		return zip.Store
	}, nil)
}

// withMembers rewrites a torch zip adding members (after the original ones).
func withMembers(t *testing.T, data []byte, add func(zw *zip.Writer, prefix string)) []byte {
	return rewriteZip(t, data, func(string) uint16 { return zip.Store }, add)
}

// rewriteZip copies a torch zip's members, each with the compression method says, then
// lets add write more members given the archive's folder prefix.
func rewriteZip(t *testing.T, data []byte, method func(name string) uint16, add func(zw *zip.Writer, prefix string)) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	prefix := ""
	for _, f := range zr.File {
		if prefix == "" {
			prefix = f.Name[:strings.IndexByte(f.Name, '/')+1]
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: method(f.Name)})
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := f.Open()
		io.Copy(w, rc)
		rc.Close()
	}
	if add != nil {
		add(zw, prefix)
	}
	zw.Close()
	return out.Bytes()
}

// A torch archive whose storages are deflated opens with each storage inflated once (so
// statistics and downloads never inflate it again from the start), within -max-decompress.
func TestDeflatedStorages(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(modelsDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	def := deflateStorages(t, orig)
	a, err := Open(bytes.NewReader(orig), int64(len(orig)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(bytes.NewReader(def), int64(len(def)), Options{})
	if err != nil {
		t.Fatalf("Open of the deflated archive: %v", err)
	}
	defer b.Close()
	for _, p := range []string{"/wte.weight", "/blocks.0.attn.mask"} {
		na, _ := a.Node(p)
		nb, err := b.Node(p)
		if err != nil || nb.Tensor == nil {
			t.Fatalf("%s: %v", p, err)
		}
		if _, inZip := nb.Tensor.Storage.Data.(interface{ Open() (io.ReadCloser, error) }); inZip {
			t.Errorf("%s reads through the zip member", p)
		}
		sa, sb := na.Tensor.Storage, nb.Tensor.Storage
		x, y := make([]byte, sa.Size), make([]byte, sb.Size)
		sa.Data.ReadAt(x, sa.Offset)
		sb.Data.ReadAt(y, sb.Offset)
		if !bytes.Equal(x, y) {
			t.Errorf("%s: the inflated storage differs from the stored one", p)
		}
	}
	if _, err := Open(bytes.NewReader(def), int64(len(def)), Options{MaxDecompress: 10_000}); err == nil || !strings.Contains(err.Error(), "-max-decompress") {
		t.Errorf("Open with a 10 kB -max-decompress = %v, want the limit named", err)
	}
}

// Warnings are capped and counted; a danger is never dropped, however many warnings come
// first, and a flood of dangerous calls is counted on the global's finding.
func TestDangerNeverDropped(t *testing.T) {
	var b strings.Builder
	b.WriteString("\x80\x02(")
	for i := 0; i < 700; i++ {
		fmt.Fprintf(&b, "cunknown%d\nThing\n", i)
	}
	b.WriteString("cposix\nsystem\nU\x02id\x85R")
	for i := 0; i < maxDangers+50; i++ {
		arg := strconv.Itoa(i)
		fmt.Fprintf(&b, "cposix\nsystem\nU%c%s\x85R", byte(len(arg)), arg)
	}
	b.WriteString("l.")
	p := []byte(b.String())
	ck, err := Open(bytes.NewReader(p), int64(len(p)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	warnings, dangers := 0, 0
	counted := false
	for _, f := range ck.Findings {
		switch f.Severity {
		case ckpt.SeverityWarning:
			warnings++
		case ckpt.SeverityDanger:
			dangers++
			counted = counted || strings.Contains(f.Detail, "more calls of it")
		}
	}
	if warnings != maxWarnings || dangers == 0 || !counted {
		t.Errorf("%d warnings, %d dangers (counted: %v), want %d warnings and the dangers with the rest counted", warnings, dangers, counted, maxWarnings)
	}
	if !strings.Contains(strings.Join(ck.Notes, "\n"), "200 more warnings") {
		t.Errorf("notes %v do not count the warnings left out", ck.Notes)
	}
}

// The policy "judge calls, not names": calling a global no allowlist knows is a danger,
// however harmless its name; rebuilding an object the standard way is a warning.
func TestJudgeCalls(t *testing.T) {
	for _, tc := range []struct {
		name, pickle string
		danger       bool
	}{
		{"REDUCE of an unknown function", "\x80\x02ctorch.fx.graph_module\n_exec_with_source\nU\x05x = 1U\x01g\x86R.", true},
		{"INST of an unknown class", "(S'arg'\nimymodule\nRunner\n.", true},
		{"OBJ of an unknown class", "(cmymodule\nRunner\nS'arg'\no.", true},
		{"NEWOBJ_EX of an unknown class", "\x80\x04cmymodule\nThing\n)}\x92.", true},
		{"APPEND on an unknown object", "\x80\x02cmymodule\nThing\n)\x81(U\x01xe.", true},
		{"a planted __setstate__", "\x80\x02cmymodule\nThing\n)\x81}U\x0c__setstate__cmymodule\nhook\nsb}b.", true},
		{"NEWOBJ of an unknown class and its state", "\x80\x02cmymodule\nThing\n)\x81}U\x01aK\x01sb.", false},
		{"copyreg._reconstructor", "ccopy_reg\n_reconstructor\n(cmymodule\nThing\nc__builtin__\nobject\nNtR(dS'a'\nI1\nsb.", false},
		{"a vetted data class", "\x80\x02csklearn.tree._tree\nTree\nK\x02K\x01\x86R.", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.pickle)
			ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			var fs []ckpt.Finding
			if err != nil {
				var le *Error
				if !errors.As(err, &le) {
					t.Fatal(err)
				}
				fs = le.Findings
			} else {
				fs = ck.Findings
			}
			danger := false
			for _, f := range fs {
				if f.Severity == ckpt.SeverityDanger {
					danger = true
				}
			}
			if danger != tc.danger {
				t.Errorf("findings %+v: danger = %v, want %v", fs, danger, tc.danger)
			}
		})
	}
}

// torch's zip reader finds members without regard to case and may open a duplicate: every
// member it could read as a pickle is scanned, and one ckptview cannot read is a danger
// ("could not be checked"), never silence.
func TestTorchZipMembersFailClosed(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(modelsDir, "state_dict.pt"))
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("\x80\x02cposix\nsystem\nU\x02id\x85R.")
	for _, tc := range []struct {
		name string
		add  func(zw *zip.Writer, prefix string)
		want string
	}{
		{"a data.pkl in other case", func(zw *zip.Writer, p string) {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: p + "DATA.PKL", Method: zip.Store})
			w.Write(payload)
		}, "posix.system"},
		{"a second data.pkl", func(zw *zip.Writer, p string) {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: p + "data.pkl", Method: zip.Store})
			w.Write(payload)
		}, "posix.system"},
		{"a pickle under another name", func(zw *zip.Writer, p string) {
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: p + "extra/blob", Method: zip.Store})
			w.Write(payload)
		}, "posix.system"},
		{"a pickle member in a compression ckptview cannot read", func(zw *zip.Writer, p string) {
			w, _ := zw.CreateRaw(&zip.FileHeader{Name: p + "other.pkl", Method: 12, CompressedSize64: 4, UncompressedSize64: 40})
			w.Write([]byte("BZh9"))
		}, "could not be checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := withMembers(t, orig, tc.add)
			ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
			var fs []ckpt.Finding
			if err != nil {
				var le *Error
				if !errors.As(err, &le) {
					t.Fatal(err)
				}
				fs = le.Findings
			} else {
				fs = ck.Findings
			}
			for _, f := range fs {
				if f.Severity == ckpt.SeverityDanger && (f.Global == tc.want || strings.Contains(f.Detail, tc.want)) {
					return
				}
			}
			t.Errorf("findings %+v, want a danger about %s", fs, tc.want)
		})
	}
}

// torch reads the legacy format's magic number and protocol version with pickle.load, which
// parses text integers as C's strtol with base 0 (hex, octal) or int(s, 0): every spelling
// it accepts makes the file a legacy checkpoint, and opens as one here.
func TestLegacyMagicSpellings(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(modelsDir, "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	if orig[2] != 0x8a {
		t.Fatalf("legacy.pt does not start with a LONG1 magic number")
	}
	end1 := 4 + int(orig[3]) + 1
	if orig[end1-1] != '.' {
		t.Fatalf("legacy.pt's magic pickle does not end at byte %d", end1)
	}
	rest := orig[end1:] // the protocol-version pickle and the rest
	for _, tc := range []struct{ magic, protocol string }{
		{"I0x1950a86a20f9469cfc6c\n.", ""},
		{"L0x1950A86A20F9469CFC6CL\n.", ""},
		{"I 119547037146038801333356\n.", ""},
		{"L119_547_037_146_038_801_333_356\n.", ""},
		{"I119547037146038801333356\n.", "I01751\n."}, // 1001 in octal, as strtol reads it
	} {
		data := append([]byte(tc.magic), rest...)
		if tc.protocol != "" {
			// replace the protocol-version pickle (protocol 2, BININT2 1001, STOP)
			if string(rest[:5]) != "\x80\x02M\xe9\x03" || rest[5] != '.' {
				t.Fatalf("legacy.pt's protocol pickle is %q", rest[:6])
			}
			data = append(append([]byte(tc.magic), tc.protocol...), rest[6:]...)
		}
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		if err != nil {
			t.Errorf("magic %q: %v", tc.magic, err)
			continue
		}
		if ck.Format != "torch-legacy" {
			t.Errorf("magic %q protocol %q: format %s, want torch-legacy", tc.magic, tc.protocol, ck.Format)
		}
		for _, n := range ck.Notes {
			if strings.Contains(n, "protocol version") {
				t.Errorf("protocol %q: note %q, but it is 1001 as Python reads it", tc.protocol, n)
			}
		}
	}
}

// The scanner reads text integers as CPython does.
func TestPickleTextInts(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
		ok   bool
	}{{"010", "8", true}, {"0x1f", "31", true}, {"-0x10", "-16", true}, {" 7", "7", true}, {"99999999999999999999", "99999999999999999999", true},
		{"0x_ff", "255", true}, {"1_000", "1000", true}, {"0b101", "5", true}, {"012345678901234567890", "", false}, {"1__0", "", false}, {"abc", "", false}} {
		v, isBool, _, ok := pickleINT(tc.line)
		if ok != tc.ok || (ok && !isBool && v.String() != tc.want) {
			t.Errorf("pickleINT(%q) = %v %v, want %s %v", tc.line, v, ok, tc.want, tc.ok)
		}
	}
	if _, isBool, b, _ := pickleINT("+1"); !isBool || !b {
		t.Errorf(`pickleINT("+1") is not True (load_int makes a bool of a 2-character 0 or 1)`)
	}
}

// tarOf writes a tar of (name, type, data or link) members.
func tarOf(t *testing.T, members [][3]string) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, m := range members {
		h := &tar.Header{Name: m[0], Mode: 0o644, Format: tar.FormatGNU}
		switch m[1] {
		case "file":
			h.Typeflag, h.Size = tar.TypeReg, int64(len(m[2]))
		case "symlink":
			h.Typeflag, h.Linkname = tar.TypeSymlink, m[2]
		case "hardlink":
			h.Typeflag, h.Linkname = tar.TypeLink, m[2]
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if m[1] == "file" {
			tw.Write([]byte(m[2]))
		}
	}
	tw.Close()
	return out.Bytes()
}

// torch's legacy loader reads a tar with Python's tarfile: getmember takes the last member of
// exactly a name ("./pickle" is not "pickle"), a link reads the member it names, a header
// with a bad checksum ends the archive. The member torch would unpickle is the one scanned.
func TestLegacyTarMembers(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(corpusDir, "burn", "tar_float32.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(src))
	parts := map[string]string{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		parts[h.Name] = string(b)
	}
	evil := "\x80\x02cposix\nsystem\nU\x02id\x85R."
	danger := func(data []byte) bool {
		ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		var fs []ckpt.Finding
		if err == nil {
			fs = ck.Findings
		} else if le, ok := err.(*Error); ok {
			fs = le.Findings
		}
		for _, f := range fs {
			if f.Severity == ckpt.SeverityDanger {
				return true
			}
		}
		return false
	}
	base := [][3]string{{"sys_info", "file", parts["sys_info"]}, {"storages", "file", parts["storages"]}}
	for _, tc := range []struct {
		name    string
		members [][3]string
		danger  bool
	}{
		{"the exact name, not ./pickle", append(append([][3]string{}, base...), [3]string{"pickle", "file", evil}, [3]string{"./pickle", "file", parts["pickle"]}), true},
		{"the last of a name", append(append([][3]string{}, base...), [3]string{"pickle", "file", parts["pickle"]}, [3]string{"pickle", "file", evil}), true},
		{"a link to another member", append(append([][3]string{}, base...), [3]string{"payload", "file", evil}, [3]string{"pickle", "symlink", "payload"}), true},
		{"a link out of the archive", append(append([][3]string{}, base...), [3]string{"pickle", "file", parts["pickle"]}, [3]string{"storages", "symlink", "/tmp/elsewhere.pkl"}), true},
		{"the benign original", append(append([][3]string{}, base...), [3]string{"pickle", "file", parts["pickle"]}), false},
	} {
		if got := danger(tarOf(t, tc.members)); got != tc.danger {
			t.Errorf("%s: danger = %v, want %v", tc.name, got, tc.danger)
		}
	}
	// a header with a bad checksum ends the archive: the member after it is not read
	data := tarOf(t, append(append([][3]string{}, base...), [3]string{"pickle", "file", parts["pickle"]}, [3]string{"pickle", "file", evil}))
	second := bytes.LastIndex(data, []byte("pickle\x00"))
	data[second+148] ^= 1 // break the checksum of the last header
	ck, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for _, f := range ck.Findings {
		if f.Severity == ckpt.SeverityDanger {
			t.Errorf("the member after a bad header was read: %+v", f)
		}
	}
	if !strings.Contains(strings.Join(ck.Notes, "\n"), "bad checksum") {
		t.Errorf("notes %v do not say the archive ends at a bad header", ck.Notes)
	}
}

// A file that takes longer than the time budget to open is refused naming the limit.
func TestOpenDeadline(t *testing.T) {
	var b strings.Builder
	b.WriteString("\x80\x02]q\x00(")
	for i := 0; i < 200_000; i++ {
		b.WriteString("K\x01")
	}
	b.WriteString("e.")
	p := []byte(b.String())
	_, err := Open(bytes.NewReader(p), int64(len(p)), Options{Deadline: time.Now().Add(-time.Second), TimeLimit: "1ms"})
	var le *Error
	if !errors.As(err, &le) || !strings.Contains(le.Msg, "longer than 1ms") || !strings.Contains(le.Msg, "-open-timeout") {
		t.Fatalf("Open past its deadline = %v, want a refusal naming -open-timeout", err)
	}
	if _, err := Open(bytes.NewReader(p), int64(len(p)), Options{Deadline: time.Now().Add(time.Minute)}); err != nil {
		t.Fatalf("Open within its deadline = %v", err)
	}
}
