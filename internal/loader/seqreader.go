package loader

import (
	"errors"
	"io"
)

// seqReader reads forward through a region of an io.ReaderAt with a small window, so a
// scanner can walk a pickle inside a multi-GB file and skip large payloads without
// reading them.
type seqReader struct {
	r      io.ReaderAt
	pos    int64 // absolute offset of the next byte
	end    int64 // absolute end of the region
	buf    []byte
	bufOff int64
}

const seqWindow = 64 << 10

var errShort = errors.New("unexpected end of data")

func newSeqReader(r io.ReaderAt, start, end int64) *seqReader {
	return &seqReader{r: r, pos: start, end: end}
}

func (s *seqReader) remaining() int64 { return s.end - s.pos }

// ensure makes n bytes from pos available in buf.
func (s *seqReader) ensure(n int64) error {
	if n > s.end-s.pos {
		return errShort
	}
	if s.pos >= s.bufOff && s.pos+n <= s.bufOff+int64(len(s.buf)) {
		return nil
	}
	size := n
	if size < seqWindow {
		size = seqWindow
	}
	if size > s.end-s.pos {
		size = s.end - s.pos
	}
	if int64(cap(s.buf)) >= size {
		s.buf = s.buf[:size]
	} else {
		s.buf = make([]byte, size)
	}
	m, err := s.r.ReadAt(s.buf, s.pos)
	if int64(m) < n {
		if err == nil || err == io.EOF {
			err = errShort
		}
		s.buf = s.buf[:0]
		return err
	}
	s.buf = s.buf[:m]
	s.bufOff = s.pos
	return nil
}

func (s *seqReader) readByte() (byte, error) {
	if err := s.ensure(1); err != nil {
		return 0, err
	}
	b := s.buf[s.pos-s.bufOff]
	s.pos++
	return b, nil
}

// read returns the next n bytes (a view valid until the next call). Callers bound n.
func (s *seqReader) read(n int64) ([]byte, error) {
	if err := s.ensure(n); err != nil {
		return nil, err
	}
	b := s.buf[s.pos-s.bufOff : s.pos-s.bufOff+n]
	s.pos += n
	return b, nil
}

// skip moves past n bytes without reading them.
func (s *seqReader) skip(n int64) error {
	if n < 0 || n > s.end-s.pos {
		return errShort
	}
	s.pos += n
	return nil
}

// line returns the bytes up to the next '\n' (not included), at most max bytes long.
func (s *seqReader) line(max int) ([]byte, bool, error) {
	var out []byte
	for {
		if s.pos >= s.end {
			return nil, false, errShort
		}
		if err := s.ensure(1); err != nil {
			return nil, false, err
		}
		chunk := s.buf[s.pos-s.bufOff:]
		for i, c := range chunk {
			if c == '\n' {
				out = append(out, chunk[:i]...)
				s.pos += int64(i) + 1
				return out, true, nil
			}
			if len(out)+i >= max {
				return nil, false, nil
			}
		}
		out = append(out, chunk...)
		s.pos += int64(len(chunk))
	}
}
