package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// readsPlain says whether data is read in one pass (plain.go), and how it ended otherwise.
func readsPlain(data []byte) (bool, error) {
	_, _, _, err := readPlain(bytes.NewReader(data), 0, int64(len(data)), Options{}.withDefaults())
	if err == errNotPlain {
		return false, nil
	}
	return err == nil, err
}

// A plain pickle cut short anywhere is malformed, as pickle.load finds it (it raises
// EOFError or UnpicklingError "pickle data was truncated"), on both paths: the one pass
// says so itself, where the general path would meet -max-memo first on a large file.
func TestPlainCutShort(t *testing.T) {
	data := plainShapes()["records"]
	for cut := 1; cut < len(data); cut += 7 {
		part := data[:cut]
		for _, o := range []Options{{}, {noPlain: true}} {
			_, err := Open(bytes.NewReader(part), int64(len(part)), o)
			var le *Error
			if !errors.As(err, &le) || !strings.Contains(le.Msg, "malformed") {
				t.Fatalf("cut at %d (noPlain %v): %v, want a malformed pickle", cut, o.noPlain, err)
			}
		}
	}
	big, err := os.ReadFile("../../testdata/models/plain_records_p4.pkl")
	if err != nil {
		t.Fatal(err)
	}
	// framed: the frame that runs past the end is where it is cut, as pickle.load finds
	part := big[:len(big)*2/3]
	o := ServerOptions()
	o.MaxMemo = 100 // the general path would meet it long before the end
	_, err = Open(bytes.NewReader(part), int64(len(part)), o)
	if err == nil || !strings.Contains(err.Error(), "malformed pickle: FRAME declares 65,537 bytes but only") {
		t.Errorf("a framed records pickle cut short, with -max-memo 100: %v", err)
	}
}

// TestPlainOnePassMatchesGeneralPath holds every file the one-pass reading accepts to the
// tree the general path (scan, gopickle, convert) makes of it, value for value, items made
// on demand included: the fixtures, the hostile files, the corpus and pickles made to the
// shapes the one-pass reading decides on. The general path's trees are themselves held to
// real Python's values by the fixture tests.
func TestPlainOnePassMatchesGeneralPath(t *testing.T) {
	files := testFiles(t, "../../testdata/models/*", "../../testdata/models/*/*", "../../testdata/hostile/*", "testdata/fuzz/*/*", corpusDir+"/*/*")
	for name, b := range syntheticPlain() {
		files["synthetic "+name] = b
	}
	for name, b := range plainShapes() {
		files["shape "+name] = b
	}
	onePass := 0
	for name, data := range files {
		plain, perr := readsPlain(data)
		if perr != nil { // cut short: the general path must refuse it too
			_, err := Open(bytes.NewReader(data), int64(len(data)), Options{noPlain: true})
			if err == nil {
				t.Errorf("%s: the one-pass reading refused it (%v), the general path opens it", name, perr)
			}
			continue
		}
		if !plain {
			continue
		}
		onePass++
		a, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		b, err2 := Open(bytes.NewReader(data), int64(len(data)), Options{noPlain: true})
		if err != nil || err2 != nil {
			t.Errorf("%s: one pass: %v; general path: %v", name, err, err2)
			continue
		}
		var ta, tb strings.Builder
		treeText(&ta, a.Root)
		treeText(&tb, b.Root)
		if ta.String() != tb.String() {
			t.Errorf("%s: the one-pass tree differs:\n%s", name, firstLineDiff(ta.String(), tb.String()))
		}
		if a.Values != b.Values || a.Format != b.Format || findingsText(a.Findings) != findingsText(b.Findings) {
			t.Errorf("%s: values %d/%d, format %s/%s, findings\n%v\n%v", name, a.Values, b.Values, a.Format, b.Format, a.Findings, b.Findings)
		}
		if strings.Join(a.Notes, "\n") != strings.Join(b.Notes, "\n") {
			t.Errorf("%s: notes differ:\n%q\n%q", name, a.Notes, b.Notes)
		}
	}
	if onePass < 15 {
		t.Errorf("only %d files read in one pass: the comparison checks little", onePass)
	}
}

// TestPlainOnePassTakesWhatItShould pins which pickles the one-pass reading takes: a
// regression that sent every file to the general path would pass the comparison above.
func TestPlainOnePassTakesWhatItShould(t *testing.T) {
	shapes := plainShapes()
	for name, want := range map[string]bool{
		"records": true, "vocab": true, "nested": true, "tuples": true, "big ints": true,
		"memo str": true, "bytes": true, "trailing": true,
		"shared list": false, "int keys": false, "duplicate key": false, "global": false,
		"many keys": true, "duplicate key late": false, "duplicate key later batch": false, "duplicate key of many": false,
		"duplicate key in a record": false, "duplicate key in a record's second batch": false,
		"paged record": true, "str from the memo in a list": true, "record given another entry": false,
		"large bytes": false, "bad utf8": false, "set": false, "left on stack": false,
	} {
		data, ok := shapes[name]
		if !ok {
			t.Fatalf("no shape %q", name)
		}
		got, err := readsPlain(data)
		if err != nil || got != want {
			t.Errorf("%s: read in one pass %v (%v), want %v", name, got, err, want)
		}
	}
}

// plainShapes are pickles in pickle.dump's opcodes shaped to the rules of the one-pass
// reading: the ones it takes and the ones it gives to the general path.
func plainShapes() map[string][]byte {
	str := func(s string) string {
		n := len(s)
		return string(append([]byte{'X', byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}, s...))
	}
	short := func(s string) string { return string(append([]byte{0x8c, byte(len(s))}, s...)) }
	intOp := func(i int) string { return string([]byte{'J', byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)}) }
	ints := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(intOp(i * 1000003))
		}
		return b.String()
	}
	proto4 := "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00" // PROTO 4 and a FRAME of 0 (framing is buffering to pickle.load)
	out := map[string][]byte{}
	add := func(name string, parts ...string) { out[name] = []byte(strings.Join(parts, "")) }

	var rec strings.Builder
	rec.WriteString(proto4 + "]\x94(")
	for i := range 100 {
		rec.WriteString("}\x94(")
		if i == 0 {
			rec.WriteString(short("id") + "\x94" + intOp(i) + short("name") + "\x94" + short("u0") + "\x94")
		} else {
			// the keys again from the memo (as pickle.dump writes a str it met before)
			rec.WriteString("h\x02" + intOp(i) + "h\x04" + short("u"+strings.Repeat("x", i%5)) + "\x94")
		}
		rec.WriteString("u")
	}
	rec.WriteString("e.")
	add("records", rec.String())
	// records whose keys are checked once and then known by their slots' payloads: a
	// record that names one of them twice is still a key set twice
	recs := strings.TrimSuffix(rec.String(), "e.")
	add("duplicate key in a record", recs, "}\x94(h\x02K\x01h\x02K\x02ue.")
	add("duplicate key in a record's second batch", recs, "}\x94(h\x02K\x01u(h\x04K\x01h\x04K\x02ue.")
	// a record large enough to be paged (its items made when asked for), its keys from the
	// memo; a str from the memo as a list item, duplicated and memoized again; a record
	// given a second entry later, which only a pickle made by hand does
	add("paged record", "\x80\x04]\x94(}\x94(", short("a"), "\x94]\x94(", ints(20), "e", short("b"), "\x94]\x94(", ints(20), "eu}\x94(h\x02]\x94(", ints(20), "eh\x04]\x94(", ints(20), "eue.")
	add("str from the memo in a list", "\x80\x04](", short("word"), "\x94", ints(40), "h\x00h\x002\x94h\x01e.")
	add("record given another entry", "\x80\x04](", ints(40), "}\x94(", short("a"), "K\x01", short("b"), "K\x02u", short("c"), "K\x03se.")
	var voc strings.Builder
	voc.WriteString("\x80\x02}q\x00(")
	for i := range 200 {
		voc.WriteString(str("tok" + strings.Repeat("é", i%3) + string(rune('a'+i%26)) + string(rune(0x1F600+i))))
		voc.WriteString(intOp(i))
	}
	voc.WriteString("u.")
	add("vocab", voc.String())
	add("nested", "\x80\x02](](](", ints(40), "e", ints(3), "e", ints(2), "e(]N\x88\x89G\x7f\xf8\x00\x00\x00\x00\x00\x00e.")
	add("tuples", "\x80\x02](K\x01\x85K\x01K\x02\x86K\x01K\x02K\x03\x87)(", ints(40), "t(", ints(5), "t\x86e.")
	add("big ints", "\x80\x02](\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xff\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x00\x8b\x00\x00\x00\x00\x8a\x01\xff\x8b\x02\x00\x00\x00\x00\x80", ints(30), "e.")
	add("memo str", "\x80\x02](", str(strings.Repeat("long text ", 100)), "q\x01", strings.Repeat("h\x01", 40), "e.")
	add("bytes", "\x80\x03](C\x03abcB\x05\x00\x00\x00\x00\xff\x00\x01\x02", ints(35), "e.")
	add("trailing", "\x80\x02](", ints(40), "e.", "\x80\x02K\x01.")
	add("shared list", "\x80\x02](](", ints(40), "eq\x01h\x01e.")
	add("int keys", "\x80\x02}(", ints(40), "u.")
	add("duplicate key", "\x80\x02}(", str("a"), "K\x01", str("b"), "K\x01", str("a"), "K\x02u.")
	// keys past the first few are checked once the pickle is read, from their hashes
	keys := func(from, to int) string {
		var b strings.Builder
		for i := from; i < to; i++ {
			b.WriteString(str(fmt.Sprintf("k%d", i)) + intOp(i))
		}
		return b.String()
	}
	add("many keys", "\x80\x02}q\x00(", keys(0, 1000), "u(", keys(1000, 10000), "u.")
	add("duplicate key late", "\x80\x02}(", keys(0, 40), str("k3"), "K\x02u.")
	add("duplicate key later batch", "\x80\x02}(", keys(0, 20), "u(", keys(20, 40), str("k19"), "K\x02u.")
	add("duplicate key of many", "\x80\x02}(", keys(0, 1000), "u(", keys(1000, 10000), str("k7777"), "K\x02u.")
	add("global", "\x80\x02](", ints(40), "c__main__\nFoo\n)\x81e.")
	add("large bytes", "\x80\x03](B\x00\x10\x00\x00", strings.Repeat("\x00", 4096), ints(40), "e.")
	add("bad utf8", "\x80\x02](X\x02\x00\x00\x00\xc3\x28", ints(40), "e.")
	add("set", "\x80\x04](\x8f\x94(K\x01\x90", ints(40), "e.")
	add("left on stack", "\x80\x02K\x01](", ints(40), "e.")
	return out
}

func findingsText(fs []ckpt.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %s %q %v %q %q %d\n", f.Severity, f.Global, f.Path, f.Outside, f.Detail, f.Where, f.Offset)
	}
	return b.String()
}

// A plain pickle over a limit is refused naming the limit and its flag, never as malformed:
// its memo entries count against -max-values as its values do, its text against -max-pickle.
func TestPlainLimits(t *testing.T) {
	memo := "\x80\x04](K\x01" + strings.Repeat("\x94", 200) + "e."
	text := "\x80\x04](" + strings.Repeat("\x8c\x0aabcdefghij", 200) + "e."
	values := "\x80\x04](" + strings.Repeat("K\x07", 2000) + "e."
	for _, c := range []struct {
		data string
		opts Options
		want string
	}{
		{values, Options{MaxValues: 1000}, "over a limit in the pickle: the pickle makes more than 1,000 values, this server's limit (-max-values) (at byte "},
		{memo, Options{MaxValues: 100}, "over a limit in the pickle: more than 100 memo entries, this server's limit (-max-values) (at byte "},
		{text, Options{MaxPickle: 1000}, "over a limit in the pickle: the pickle holds more than 1.00 kB (1,000 bytes) of values besides its large byte strings, this server's limit (-max-pickle) (at byte "},
	} {
		if plain, err := readsPlain([]byte(c.data)); !plain && err == nil {
			t.Fatalf("%q is not read in one pass", c.data[:12])
		}
		_, err := Open(strings.NewReader(c.data), int64(len(c.data)), c.opts)
		var le *Error
		if !errors.As(err, &le) || !strings.HasPrefix(le.Text(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
	// memo indexes out of order are kept in a map, as many as -max-memo allows: past it the
	// general path reads the file, and refuses it at -max-memo
	var sparse strings.Builder
	sparse.WriteString("\x80\x04](K\x07")
	for i := range 300 {
		sparse.Write([]byte{'r', byte(i), byte(i>>8) + 0x10, 0, 0})
	}
	sparse.WriteString("e.")
	if plain, err := readsPlain([]byte(sparse.String())); !plain || err != nil {
		t.Errorf("300 memo entries out of order: read in one pass %v, %v", plain, err)
	}
	_, err := Open(strings.NewReader(sparse.String()), int64(sparse.Len()), Options{MaxMemo: 100})
	if err == nil || !strings.Contains(err.Error(), "(-max-memo)") {
		t.Errorf("300 memo entries out of order under -max-memo 100: %v", err)
	}
	// dict keys are not values: a dict of 600 entries holds 601 values, under 700, whatever
	// its keys; one of 800 is over
	dict := func(n int) string {
		var b strings.Builder
		b.WriteString("\x80\x04}(")
		for i := range n {
			fmt.Fprintf(&b, "\x8c\x04k%03dK\x07", i)
		}
		return b.String() + "u."
	}
	if _, err := Open(strings.NewReader(dict(600)), int64(len(dict(600))), Options{MaxValues: 700}); err != nil {
		t.Errorf("a dict of 600 entries under -max-values 700: %v", err)
	}
	if _, err := Open(strings.NewReader(dict(800)), int64(len(dict(800))), Options{MaxValues: 700}); err == nil || !strings.Contains(err.Error(), "makes more than 700 values") {
		t.Errorf("a dict of 800 entries under -max-values 700: %v", err)
	}
	// a str the pickle references again through its memo is held once, however often (one
	// 4 kB str in a list 200 times)
	long := "\x80\x04](\x8d\x00\x10\x00\x00\x00\x00\x00\x00" + strings.Repeat("a", 4096) + "\x94" + strings.Repeat("h\x00", 199) + "e."
	ck, err := Open(strings.NewReader(long), int64(len(long)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ck.Root.Lazy().(*plainItems); !ok || len(p.t.text) != 4096 || ck.Root.Len != 200 {
		t.Errorf("a str referenced 200 times: root %T, want its text held once", ck.Root.Lazy())
	}
}

// FuzzPlainOnePass holds the one-pass reading to the general path on any input: whatever it
// reads, the general path reads to the same tree.
func FuzzPlainOnePass(f *testing.F) {
	for _, b := range plainShapes() {
		f.Add(b)
	}
	for _, b := range syntheticPlain() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := readsPlain(data)
		if err != nil { // cut short (no input here reaches the default limits)
			if _, e := Open(bytes.NewReader(data), int64(len(data)), Options{noPlain: true}); e == nil {
				t.Fatalf("the one pass refused it (%v), the general path opens it", err)
			}
			return
		}
		if !plain {
			return
		}
		a, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		b, err2 := Open(bytes.NewReader(data), int64(len(data)), Options{noPlain: true})
		if err != nil || err2 != nil {
			t.Fatalf("one pass: %v; general path: %v", err, err2)
		}
		var ta, tb strings.Builder
		treeText(&ta, a.Root)
		treeText(&tb, b.Root)
		if ta.String() != tb.String() {
			t.Fatalf("the trees differ:\n%s", firstLineDiff(ta.String(), tb.String()))
		}
	})
}
