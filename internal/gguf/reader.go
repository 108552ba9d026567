package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Error is a problem with a GGUF file: what is wrong, and the byte offset it was found at.
type Error struct {
	Offset int64  // where in the file the problem is, or -1
	Msg    string // what is wrong, naming the key or tensor concerned
	Err    error  // the underlying read error, if the file could not be read
}

// Error returns the message, prefixed with "gguf: ".
func (e *Error) Error() string {
	if e.Err != nil {
		return "gguf: " + e.Msg + ": " + e.Err.Error()
	}
	return "gguf: " + e.Msg
}

// Unwrap returns the underlying read error, if any.
func (e *Error) Unwrap() error { return e.Err }

func errAt(off int64, format string, args ...any) *Error {
	return &Error{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// windowSize is how much of the file the reader keeps at once.
const windowSize = 64 << 10

// reader reads a GGUF file front to back through a window over an io.ReaderAt. Every read
// is checked against limit first, so no length or count from the file is trusted before the
// bytes it claims are known to exist.
type reader struct {
	r      io.ReaderAt
	size   int64  // the file's size
	limit  int64  // reads must end at or before this (the file's size, or a cap)
	capMsg string // when limit < size: what the cap is, for messages
	pos    int64

	win      []byte
	winStart int64
}

func newReader(r io.ReaderAt, size int64, pos int64) *reader {
	return &reader{r: r, size: size, limit: size, pos: pos}
}

// need checks that n more bytes, for what, exist before the limit.
func (rd *reader) need(n int64, what string) error {
	if n >= 0 && n <= rd.limit-rd.pos {
		return nil
	}
	if n >= 0 && n <= rd.size-rd.pos { // in the file, but past the limit
		if rd.capMsg != "" {
			return errAt(rd.pos, "%s: reading it would pass %s", what, rd.capMsg)
		}
		return errAt(rd.pos, "%s (%s at byte %d) runs past the end of the value that contains it",
			what, plural(n, "byte"), rd.pos)
	}
	if rd.pos >= rd.size {
		return errAt(rd.pos, "the file ends at byte %d, where %s (%s) should start; is it truncated?",
			rd.size, what, plural(n, "byte"))
	}
	return errAt(rd.pos, "the file ends at byte %d, in the middle of %s (%s from byte %d); is it truncated?",
		rd.size, what, plural(n, "byte"), rd.pos)
}

// bytes returns the next n bytes; the slice is only valid until the next read.
func (rd *reader) bytes(n int64, what string) ([]byte, error) {
	if err := rd.need(n, what); err != nil {
		return nil, err
	}
	if n > windowSize {
		b := make([]byte, n)
		if err := rd.readAt(b, rd.pos, what); err != nil {
			return nil, err
		}
		rd.pos += n
		return b, nil
	}
	if rd.pos < rd.winStart || rd.pos+n > rd.winStart+int64(len(rd.win)) {
		m := min(int64(windowSize), rd.size-rd.pos)
		if int64(cap(rd.win)) < m {
			// the whole window, or all of a smaller file
			rd.win = make([]byte, max(m, min(windowSize, rd.size)))
		}
		rd.win = rd.win[:m]
		rd.winStart = rd.pos
		if err := rd.readAt(rd.win, rd.pos, what); err != nil {
			rd.win = rd.win[:0]
			return nil, err
		}
	}
	b := rd.win[rd.pos-rd.winStart : rd.pos-rd.winStart+n]
	rd.pos += n
	return b, nil
}

func (rd *reader) readAt(b []byte, off int64, what string) error {
	n, err := rd.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return errAt(off, "the file ends at byte %d, in the middle of %s, but its size was given as %d",
			off+int64(n), what, rd.size)
	}
	return &Error{Offset: off, Msg: fmt.Sprintf("reading %s at byte %d", what, off), Err: err}
}

func (rd *reader) skip(n int64, what string) error {
	if err := rd.need(n, what); err != nil {
		return err
	}
	rd.pos += n
	return nil
}

func (rd *reader) u32(what string) (uint32, error) {
	b, err := rd.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (rd *reader) u64(what string) (uint64, error) {
	b, err := rd.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a GGUF string: a u64 byte length, then the bytes (not NUL-terminated). The length
// is checked against max and against the bytes left before anything is allocated.
func (rd *reader) str(max int64, what string) (string, error) {
	at := rd.pos
	n, err := rd.length(what)
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", errAt(at, "%s is %s long; the limit is %d (Options.MaxStringLen)", what, plural(n, "byte"), max)
	}
	b, err := rd.bytes(int64(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// length reads the u64 length of what. The message naming it is only built when it is
// needed: this runs for every string of a vocabulary.
func (rd *reader) length(what string) (uint64, error) {
	if rd.limit-rd.pos < 8 {
		return 0, rd.need(8, "the length of "+what)
	}
	return rd.u64(what)
}

// skipStr skips a string, checking its length the way str does.
func (rd *reader) skipStr(max int64, what string) error {
	at := rd.pos
	n, err := rd.length(what)
	if err != nil {
		return err
	}
	if n > uint64(max) {
		return errAt(at, "%s is %s long; the limit is %d (Options.MaxStringLen)", what, plural(n, "byte"), max)
	}
	return rd.skip(int64(n), what)
}

type integer interface {
	~int | ~int64 | ~uint64 | ~uint32 | ~int32
}

func plural[T integer](n T, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
