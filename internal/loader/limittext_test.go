package loader

import (
	"archive/zip"
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestThousandsAndLimitSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 100000: "100,000",
		789209: "789,209", 1000000: "1,000,000", -1234567: "-1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{
		512:       "512 bytes",
		1000:      "1.00 kB (1,000 bytes)",
		1500000:   "1.50 MB (1,500,000 bytes)", // -max-pickle 1500000 read as "1 MB" before
		1000000:   "1.00 MB (1,000,000 bytes)",
		16 << 20:  "16.8 MB (16,777,216 bytes)", // a limit set in MiB reads back exactly
		128 << 20: "134 MB (134,217,728 bytes)",
		4 << 30:   "4.29 GB (4,294,967,296 bytes)",
	} {
		if got := limitSize(n); got != want {
			t.Errorf("limitSize(%d) = %q, want %q", n, got, want)
		}
	}
	if got := (&Error{Msg: "bad", Offset: 789209}).Text(); got != "bad (at byte 789,209)" {
		t.Errorf("Error.Text = %q, want the offset with separators", got)
	}
}

// A limit message prints its numbers as the pages do: counts and offsets with separators,
// a size human and exact; it still names the flag and is never called malformed.
func TestLimitMessagesHaveSeparators(t *testing.T) {
	// [[0, 1, ..., 1999]] with every value memoized, in protocol 4's opcodes (unframed)
	var p bytes.Buffer
	p.WriteString("\x80\x04]\x94(]\x94(")
	for i := range 2000 {
		p.Write([]byte{'M', byte(i), byte(i >> 8), 0x94})
	}
	p.WriteString("ee.")
	for _, c := range []struct {
		opts Options
		want []string
	}{
		{Options{MaxMemo: 1500, noPlain: true}, []string{"more than 1,500 memo entries, this server's limit (-max-memo) (at byte 6,0"}},
		{Options{MaxOps: 1500, noPlain: true}, []string{"more than 1,500 pickle opcodes, this server's limit (-max-pickle-ops) (at byte "}},
		{Options{MaxPickle: 1500, noPlain: true}, []string{"the pickle holds more than 1.50 kB (1,500 bytes) of values", "(-max-pickle) (at byte "}},
		// the same pickle read in one pass (plain.go)
		{Options{MaxValues: 1500}, []string{"more than 1,500 memo entries, this server's limit (-max-values) (at byte 6,0"}},
		{Options{MaxValues: 1500, MaxMemo: 1}, []string{"(-max-values) (at byte 6,0"}}, // -max-memo is the general path's
		{Options{MaxOps: 1500}, []string{"more than 1,500 pickle opcodes, this server's limit (-max-pickle-ops) (at byte "}},
	} {
		_, err := Open(bytes.NewReader(p.Bytes()), int64(p.Len()), c.opts)
		var le *Error
		if !errors.As(err, &le) {
			t.Fatalf("%+v: %v, want an *Error", c.opts, err)
		}
		for _, w := range c.want {
			if !strings.Contains(le.Text(), w) || strings.Contains(le.Text(), "malformed") {
				t.Errorf("%+v: %q, want it to contain %q", c.opts, le.Text(), w)
			}
		}
	}

	// -max-inflate: a deflated member over the limit
	var z bytes.Buffer
	zw := zip.NewWriter(&z)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/data.pkl", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(append([]byte("\x80\x02X\xb8\x0b\x00\x00"), append(bytes.Repeat([]byte("a"), 3000), '.')...))
	zw.Close()
	_, err = Open(bytes.NewReader(z.Bytes()), int64(z.Len()), Options{MaxInflate: 1000})
	want := "inflates to 3.01 kB (3,008 bytes), more than this server's limit of 1.00 kB (1,000 bytes) (-max-inflate; a zip bomb?)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("-max-inflate: %v, want %q", err, want)
	}
}
