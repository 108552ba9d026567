package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A small GGUF builder for hand-made, mostly broken, files.

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func gstr(s string) []byte { return append(le64(uint64(len(s))), s...) }
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type hkv struct {
	key   string
	typ   uint32
	value []byte // the payload after the type
}

type hten struct {
	name string
	dims []uint64
	typ  uint32
	off  uint64
}

// build writes a GGUF file: header, kvs, tensor infos, padding to align (when there are
// tensors), then data.
func build(version uint32, kvs []hkv, tens []hten, align int, data []byte) []byte {
	out := cat([]byte("GGUF"), le32(version), le64(uint64(len(tens))), le64(uint64(len(kvs))))
	for _, kv := range kvs {
		out = cat(out, gstr(kv.key), le32(kv.typ), kv.value)
	}
	for _, t := range tens {
		out = cat(out, gstr(t.name), le32(uint32(len(t.dims))))
		for _, d := range t.dims {
			out = append(out, le64(d)...)
		}
		out = cat(out, le32(t.typ), le64(t.off))
	}
	if len(tens) > 0 {
		for len(out)%align != 0 {
			out = append(out, 0)
		}
	}
	return append(out, data...)
}

func u32kv(key string, v uint32) hkv { return hkv{key, uint32(ValueUint32), le32(v)} }

// twoF32 is a valid file with two 8-element F32 tensors (32 bytes each, alignment 32).
func twoF32(mod func(t []hten)) []byte {
	tens := []hten{{"a", []uint64{8}, 0, 0}, {"b", []uint64{8}, 0, 32}}
	if mod != nil {
		mod(tens)
	}
	return build(3, []hkv{{"general.architecture", uint32(ValueString), gstr("llama")}}, tens, 32, make([]byte, 64))
}

func parseBytes(b []byte, opts Options) (*File, error) {
	return Parse(bytes.NewReader(b), int64(len(b)), opts)
}

// wantError checks that b is refused with a *Error whose message contains want, without
// allocating more than a megabyte on the way. With GGUF_DUMP_REFUSED set to a directory,
// each case is also written there as NAME.gguf, to be tried with other readers (see
// testdata/gguf/README.md).
func wantError(t *testing.T, name string, b []byte, opts Options, want string) {
	t.Helper()
	if dir := os.Getenv("GGUF_DUMP_REFUSED"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".gguf"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := parseBytes(b, opts)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Errorf("%s: accepted (%d tensors); want an error containing %q", name, len(f.Tensors), want)
		return
	}
	var ge *Error
	if !errors.As(err, &ge) {
		t.Errorf("%s: error %T %v is not a *gguf.Error", name, err, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q; want it to contain %q", name, err, want)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("%s: allocated %d bytes before refusing a %d-byte file", name, n, len(b))
	}
}

func TestTruncatedEverywhere(t *testing.T) {
	for _, name := range []string{"v2.gguf", "all_types_v3.gguf", "split-00002-of-00002.gguf"} {
		b, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			t.Fatal(err)
		}
		whole, err := parseBytes(b, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(b); n++ {
			f, err := parseBytes(b[:n], Options{})
			if int64(n) >= whole.DataEnd {
				// only padding after the last tensor is missing: still a whole file
				if err != nil {
					t.Errorf("%s cut to %d bytes (data ends at %d): %v", name, n, whole.DataEnd, err)
				} else if len(f.Tensors) != len(whole.Tensors) {
					t.Errorf("%s cut to %d bytes: %d tensors", name, n, len(f.Tensors))
				}
				continue
			}
			var ge *Error
			if err == nil {
				t.Fatalf("%s cut to %d bytes: accepted", name, n)
			} else if !errors.As(err, &ge) || ge.Msg == "" {
				t.Fatalf("%s cut to %d bytes: %v", name, n, err)
			}
			if n >= 24 && n < int(whole.Tensors[0].InfoOffset) &&
				!strings.Contains(err.Error(), "is it truncated?") && !strings.Contains(err.Error(), "could hold at most") {
				t.Errorf("%s cut to %d bytes: %v does not say the file is truncated", name, n, err)
			}
		}
	}
}

func TestHostileHeaders(t *testing.T) {
	head := func(version uint32, nt, nkv uint64) []byte {
		return cat([]byte("GGUF"), le32(version), le64(nt), le64(nkv))
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "0 bytes long, shorter than the 4-byte magic"},
		{"three bytes", []byte("GGU"), "3 bytes long"},
		{"not gguf", []byte("PK\x03\x04rest of a zip"), `starts with "PK\x03\x04"`},
		{"ggml", []byte("lmgg\x01\x00\x00\x00"), "not a GGUF file"},
		{"no version", []byte("GGUF\x03"), "in the middle of the version"},
		{"version 0", head(0, 0, 0), "bad GGUF version 0"},
		{"version 1", head(1, 0, 0), "GGUF version 1 is not supported"},
		{"version 4", head(4, 0, 0), "GGUF version 4 is newer than this reader"},
		{"big-endian v3", cat([]byte("GGUF"), []byte{0, 0, 0, 3}, make([]byte, 16)), "version 3 with its bytes swapped: this is a big-endian GGUF file"},
		{"byte-swapped magic", cat([]byte("FUGG"), []byte{0, 0, 0, 3}, make([]byte, 16)), `the magic reads "FUGG"`},
		{"big-endian v2", cat([]byte("GGUF"), []byte{0, 0, 0, 2}, make([]byte, 16)), "big-endian"},
		{"20 bytes, 2^62 tensors", head(3, 1<<62, 0)[:20], "in the middle of the metadata key/value count"},
		{"2^62 tensors", head(3, 1<<62, 0), "declares 4611686018427387904 tensors, but the 0 bytes after the header could hold at most 0"},
		{"2^63 tensors", head(3, 1<<63, 0), "tensor count -9223372036854775808 is negative"},
		{"2^64-1 keys", head(3, 0, math.MaxUint64), "key/value count -1 is negative"},
		{"2^40 keys", head(3, 0, 1<<40), "declares 1099511627776 metadata key/value pairs"},
		{"keys over the limit", cat(head(3, 0, 1<<17), make([]byte, 14<<17)), "the limit is 65536 (Options.MaxKeys)"},
		{"tensors over the limit", cat(head(3, 1<<21, 0), make([]byte, 24<<21)), "the limit is 1048576 (Options.MaxTensors)"},
		{"2^64-1 key length", cat(head(3, 0, 1), le64(math.MaxUint64), make([]byte, 20)), "key 0 is 18446744073709551615 bytes long; the limit is 1048576"},
		{"key longer than the file", cat(head(3, 0, 1), le64(1000), make([]byte, 20)), "in the middle of key 0 (1000 bytes"},
		{"empty key", cat(head(3, 0, 1), gstr(""), le32(0), []byte{1}), "key 0 is empty"},
	}
	for _, c := range cases {
		wantError(t, c.name, c.b, Options{}, c.want)
	}
}

func TestHostileMetadata(t *testing.T) {
	file := func(kvs ...hkv) []byte { return build(3, kvs, nil, 32, nil) }
	arr := func(elem uint32, n uint64, items ...[]byte) []byte { return cat(le32(elem), le64(n), cat(items...)) }
	nest := func(depth int) []byte {
		inner := arr(uint32(ValueUint8), 1, []byte{7})
		for i := 1; i < depth; i++ {
			inner = arr(uint32(ValueArray), 1, inner)
		}
		return inner
	}
	big := strings.Repeat("x", 2<<20)
	cases := []struct {
		name string
		b    []byte
		opts Options
		want string
	}{
		{"duplicate key", file(u32kv("a", 1), u32kv("a", 2)), Options{}, `key "a" appears twice (keys 0 and 1)`},
		{"unknown value type", file(hkv{"k", 13, []byte{0}}), Options{}, "key k has unknown value type 13"},
		{"negative value type", file(hkv{"k", math.MaxUint32, []byte{0}}), Options{}, "key k has unknown value type -1"},
		{"scalar cut short", file(hkv{"k", uint32(ValueUint64), []byte{1, 2, 3}}), Options{}, "in the middle of the value of key k (8 bytes"},
		{"string over the limit", file(hkv{"k", uint32(ValueString), gstr(big)}), Options{}, "the value of key k is 2097152 bytes long; the limit is 1048576 (Options.MaxStringLen)"},
		{"string over a lower limit", file(hkv{"k", uint32(ValueString), gstr("hello")}), Options{MaxStringLen: 4}, "5 bytes long; the limit is 4"},
		{"string past the end", file(hkv{"k", uint32(ValueString), le64(100)}), Options{}, "the file ends at byte 45, where the value of key k (100 bytes) should start; is it truncated?"},
		{"array of 2^63 u8", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueUint8), 1<<63)}), Options{}, "claims 9223372036854775808 items; gguf.cpp refuses arrays of more than 1073741824"},
		{"array of 2^64-1 strings", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueString), math.MaxUint64)}), Options{}, "claims 18446744073709551615 items"},
		{"array of 2^30 u64", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueUint64), 1<<30)}), Options{}, "key k claims 1073741824 items of type u64, at least 8589934592 bytes, but the file has only 0 bytes left; is it truncated?"},
		{"array of 2^20 strings", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueString), 1<<20, gstr("a"))}), Options{}, "claims 1048576 items of type str, at least 8388608 bytes, but the file has only 9 bytes left"},
		{"array of 2^20 arrays", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueArray), 1<<20)}), Options{}, "claims 1048576 items of type arr, at least 12582912 bytes"},
		{"array of unknown type", file(hkv{"k", uint32(ValueArray), arr(99, 1, []byte{0})}), Options{}, "key k is an array of unknown value type 99"},
		{"string item too long", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueString), 2, gstr("ok"), le64(1<<40))}), Options{}, "item 1 of key k: a string is 1099511627776 bytes long"},
		{"string item past the end", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueString), 2, gstr("ok"), le64(1000))}), Options{}, "item 1 of key k: the file ends at byte"},
		{"nested too deep", file(hkv{"k", uint32(ValueArray), nest(9)}), Options{}, "nests arrays more than 8 deep (Options.MaxArrayDepth)"},
		{"nested deeper than allowed", file(hkv{"k", uint32(ValueArray), nest(2)}), Options{MaxArrayDepth: 1}, "more than 1 deep"},
		{"nested 10000 deep", file(hkv{"k", uint32(ValueArray), nest(10000)}), Options{}, "more than 8 deep"},
		{"nested item of unknown type", file(hkv{"k", uint32(ValueArray), arr(uint32(ValueArray), 1, arr(42, 0))}), Options{}, "item 0 of key k: an array is an array of unknown value type 42"},
		{"metadata over the limit", file(hkv{"k", uint32(ValueString), gstr("0123456789")}, u32kv("x", 1)), Options{MaxMetadataBytes: 30}, "reading it would pass the metadata limit of 30 bytes (Options.MaxMetadataBytes) from byte 24"},
		{"alignment of type u8", file(hkv{"general.alignment", uint32(ValueUint8), []byte{32}}), Options{}, "key general.alignment must be of type u32 but is u8"},
		{"alignment 0", file(u32kv("general.alignment", 0)), Options{}, "general.alignment is 0, which is not a power of 2"},
		{"alignment 48", file(u32kv("general.alignment", 48)), Options{}, "general.alignment is 48, which is not a power of 2"},
	}
	for _, c := range cases {
		wantError(t, c.name, c.b, c.opts, c.want)
	}

	// nesting at the limit is fine, and gets a warning
	f, err := parseBytes(file(hkv{"k", uint32(ValueArray), nest(8)}), Options{})
	if err != nil || len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "gguf.cpp refuses") {
		t.Errorf("8-deep array: %v %q", err, f.Warnings)
	}
	// a bool byte other than 0 or 1 is true, with a warning, as gguf.cpp reads it
	f, err = parseBytes(file(hkv{"b", uint32(ValueBool), []byte{5}}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Get("b"); v.Interface() != true || len(f.Warnings) != 1 {
		t.Errorf("bool 5: %v %q", v, f.Warnings)
	}
	// alignment 1 is a power of two
	if f, err := parseBytes(file(u32kv("general.alignment", 1)), Options{}); err != nil || f.Alignment != 1 {
		t.Errorf("alignment 1: %v", err)
	}
	// no tensors: the data section starts right after the metadata, unpadded
	b := file(u32kv("x", 1))
	if f, err := parseBytes(b, Options{}); err != nil || f.DataOffset != int64(len(b)) || f.DataEnd != f.DataOffset {
		t.Errorf("no tensors: %v %+v", err, f)
	}
}

func TestHostileTensorInfos(t *testing.T) {
	one := func(tn hten, data int) []byte { return build(3, nil, []hten{tn}, 32, make([]byte, data)) }
	long := strings.Repeat("n", 64)
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"misaligned offset", twoF32(func(t []hten) { t[1].off = 100 }), "tensor b: offset 100 is not a multiple of the alignment 32"},
		{"overlapping", twoF32(func(t []hten) { t[1].off = 0 }), "tensor b: offset 0 overlaps tensor a, whose data runs to offset 32"},
		{"gap", twoF32(func(t []hten) { t[1].off = 64 }), "tensor b: offset 64 leaves a gap after tensor a"},
		{"first not at 0", twoF32(func(t []hten) { t[0].off = 32 }), "tensor a: offset 32 leaves a gap after the start of the data section"},
		{"offset 2^63", twoF32(func(t []hten) { t[1].off = 1 << 63 }), "tensor b has data offset 9223372036854775808, beyond any file"},
		{"past the end", twoF32(func(t []hten) { t[1].dims = []uint64{9} }), "tensor b: its data, bytes 192 to 228, runs past the end of the 224-byte file; is it truncated?"},
		{"unknown type", twoF32(func(t []hten) { t[0].typ = 99 }), "tensor a has unknown ggml type id 99 (ggml defines ids 0 to 42)"},
		{"negative type", twoF32(func(t []hten) { t[0].typ = math.MaxUint32 }), "unknown ggml type id -1"},
		{"removed type", twoF32(func(t []hten) { t[0].typ = 31 }), "tensor a has ggml type 31 (Q4_0_4_4), which ggml no longer accepts in GGUF files"},
		{"removed Q4_2", twoF32(func(t []hten) { t[0].typ = 4 }), "(Q4_2)"},
		{"row not a multiple of the block", one(hten{"q", []uint64{33, 2}, uint32(TypeQ4_0), 0}, 64), "tensor q of type Q4_0 has 33 elements per row (its first dimension), not a multiple of the block size 32"},
		{"K-quant row", one(hten{"k", []uint64{128}, uint32(TypeQ4_K), 0}, 256), "not a multiple of the block size 256"},
		{"5 dims", one(hten{"t", []uint64{1, 1, 1, 1, 1}, 0, 0}, 32), "tensor t has 5 dimensions; ggml allows at most 4"},
		{"2^32 dims", cat(build(3, nil, nil, 32, nil)[:8], le64(1), le64(0), gstr("t"), le32(math.MaxUint32), make([]byte, 64)), "4294967295 dimensions"},
		{"negative dim", one(hten{"t", []uint64{8, math.MaxUint64}, 0, 0}, 32), "dimension 1 of tensor t is -1"},
		{"element overflow", one(hten{"t", []uint64{1 << 32, 1 << 31}, 0, 0}, 32), "its number of elements is not representable in an int64"},
		{"product that wraps to 0", one(hten{"t", []uint64{1 << 32, 1 << 32}, 0, 0}, 32), "not representable in an int64"},
		{"byte size overflow", one(hten{"t", []uint64{1 << 61, 2}, uint32(TypeF64), 0}, 32), "has a size in bytes that is not representable"},
		{"name of 64 bytes", one(hten{long, []uint64{8}, 0, 0}, 32), "the name of tensor 0 is 64 bytes long; ggml allows at most 63"},
		{"name with NUL", one(hten{"a\x00b", []uint64{8}, 0, 0}, 32), `"a\x00b", contains a NUL byte`},
		{"duplicate name", twoF32(func(t []hten) { t[1].name = "a" }), `tensor name "a" appears twice (tensors 0 and 1)`},
		{"offset cut short", build(3, nil, []hten{{"e", []uint64{0}, 0, 0}}, 1, nil)[:56], "the file ends at byte 56, in the middle of the data offset of tensor e (8 bytes from byte 49)"},
	}
	for _, c := range cases {
		wantError(t, c.name, c.b, Options{}, c.want)
	}

	// the data section would start past the end: infos end at byte 57, padded to 64
	b := build(3, nil, []hten{{"e", []uint64{0}, 0, 0}}, 1, nil)
	wantError(t, "data start past the end", b, Options{}, "the tensor infos end at byte 57, so the data section starts at byte 64 (the next multiple of the alignment 32), past the end of the 57-byte file")
	// with the padding there, zero-size tensors are fine
	b = append(b, 0, 0, 0, 0, 0, 0, 0)
	f, err := parseBytes(b, Options{})
	if err != nil || f.DataOffset != 64 || f.Tensors[0].Size != 0 || len(f.Tensors[0].Shape) != 1 {
		t.Errorf("zero-size tensor: %v %+v", err, f)
	}
	// a 0-dimensional tensor is one element
	f, err = parseBytes(one(hten{"s", nil, 0, 0}, 4), Options{})
	if err != nil || f.Tensors[0].Elements != 1 || f.Tensors[0].Size != 4 || len(f.Tensors[0].Shape) != 0 {
		t.Errorf("scalar tensor: %v %+v", err, f)
	}
}

// TestReadAtErrors checks that a reader that fails is reported as such.
func TestReadAtErrors(t *testing.T) {
	b := twoF32(nil)
	_, err := Parse(failingReader{b, 40}, int64(len(b)), Options{})
	var ge *Error
	if !errors.As(err, &ge) || !errors.Is(err, errDisk) {
		t.Errorf("failing reader: %v", err)
	}
	// a size larger than what the reader has
	_, err = Parse(bytes.NewReader(b[:50]), int64(len(b)), Options{})
	if err == nil || !strings.Contains(err.Error(), "in the middle of the magic, but its size was given as 224") {
		t.Errorf("short reader: %v", err)
	}
}

var errDisk = errors.New("disk on fire")

type failingReader struct {
	b    []byte
	from int64
}

func (r failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.from {
		n := max(0, int(r.from-off))
		copy(p, r.b[off:off+int64(n)])
		return n, errDisk
	}
	return copy(p, r.b[off:]), nil
}

func TestHostileSplits(t *testing.T) {
	u16kv := func(key string, v uint16) hkv {
		return hkv{key, uint32(ValueUint16), binary.LittleEndian.AppendUint16(nil, v)}
	}
	i32kv := func(key string, v int32) hkv { return hkv{key, uint32(ValueInt32), le32(uint32(v))} }
	part := func(kvs []hkv, tensor string) SplitPart {
		b := build(3, kvs, []hten{{tensor, []uint64{8}, 0, 0}}, 32, make([]byte, 32))
		f, err := parseBytes(b, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return SplitPart{File: f}
	}
	keys := func(no, count uint16, tensors int32) []hkv {
		return []hkv{u16kv(KeySplitNo, no), u16kv(KeySplitCount, count), i32kv(KeySplitTensorsCount, tensors)}
	}
	cases := []struct {
		name  string
		parts []SplitPart
		want  string
	}{
		{"split.no as u32", []SplitPart{part([]hkv{u32kv(KeySplitNo, 0), u16kv(KeySplitCount, 1), i32kv(KeySplitTensorsCount, 1)}, "a")}, "split.no must be of type u16 but is u32"},
		{"no split.count", []SplitPart{part([]hkv{u16kv(KeySplitNo, 0), i32kv(KeySplitTensorsCount, 1)}, "a")}, "has split keys but no split.count"},
		{"split.count 0", []SplitPart{part(keys(0, 0, 1), "a")}, "split.count is 0"},
		{"split.no past the count", []SplitPart{part(keys(2, 2, 2), "a"), part(keys(0, 2, 2), "b")}, "split.no is 2 but split.count is 2: parts are numbered from 0"},
		{"counts disagree", []SplitPart{part(keys(0, 2, 2), "a"), part(keys(1, 3, 2), "b")}, "says the model has 3 parts, but part #1 as given says 2"},
		{"tensor counts disagree", []SplitPart{part(keys(0, 2, 2), "a"), part(keys(1, 2, 3), "b")}, "says the model has 3 tensors"},
		{"too few tensors", []SplitPart{part(keys(0, 2, 3), "a"), part(keys(1, 2, 3), "b")}, "split.tensors.count is 3, but the 2 parts hold 2 tensors"},
		{"tensor in two parts", []SplitPart{part(keys(0, 2, 2), "a"), part(keys(1, 2, 2), "a")}, "tensor a is in both part 1 and part 2"},
		{"missing, unnamed", []SplitPart{part(keys(0, 3, 3), "a"), part(keys(2, 3, 3), "c")}, "part 2 of 3 of the split model is missing"},
		{"same part twice", []SplitPart{part(keys(1, 2, 2), "a"), part(keys(1, 2, 2), "b")}, "part #1 as given and part #2 as given are both part 2 of 2"},
	}
	for _, c := range cases {
		if _, err := MergeSplit(c.parts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
	if _, err := MergeSplit(nil); err == nil {
		t.Error("no parts: accepted")
	}
}
