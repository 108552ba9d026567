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

	// Framing as Python's own pickle._Unpickler reads it (joblib's unpickler): a FRAME's
	// bytes are read into memory at once, opcodes are read from them, a read that finds the
	// frame empty goes on in the file, and one that finds it partly empty fails. Reads that
	// bypass the unpickler (joblib's raw array data) come from the file, which is past the
	// frame. The C unpickler (pickle.load, torch.load) treats frames as plain buffering, so
	// pyFrames is off for those.
	pyFrames bool
	frameEnd int64 // end of the current frame; -1 outside one
	filePos  int64 // the file's position while a frame is current
}

// errFrame is a read that starts inside a frame and runs past its end, which Python's
// unpickler refuses ("pickle exhausted before end of frame").
var errFrame = errors.New("an opcode runs past the end of its frame")

const seqWindow = 64 << 10

var errShort = errors.New("unexpected end of data")

func newSeqReader(r io.ReaderAt, start, end int64) *seqReader {
	return &seqReader{r: r, pos: start, end: end, frameEnd: -1}
}

// framed checks a read of n bytes against the current frame (pyFrames only): an exhausted
// frame hands over to the file, a partly filled one must hold all n bytes.
func (s *seqReader) framed(n int64) error {
	if s.frameEnd < 0 || n == 0 {
		return nil
	}
	switch rem := s.frameEnd - s.pos; {
	case rem == 0:
		s.pos, s.frameEnd = s.filePos, -1
	case rem < n:
		return errFrame
	}
	return nil
}

// startFrame begins a frame of n bytes at pos (pyFrames only).
func (s *seqReader) startFrame(n int64) error {
	if s.frameEnd >= 0 && s.pos < s.frameEnd {
		return errors.New("a FRAME begins before the current frame ends")
	}
	if n > s.end-s.pos {
		return errShort
	}
	s.frameEnd = s.pos + n
	s.filePos = s.frameEnd
	return nil
}

// raw consumes n bytes that a reader other than the unpickler takes from the file (joblib's
// array data) and returns where they start: at the file's position, which is past the
// current frame if there is one.
func (s *seqReader) raw(n int64) (int64, error) {
	if s.frameEnd >= 0 {
		if n < 0 || n > s.end-s.filePos {
			return 0, errShort
		}
		at := s.filePos
		s.filePos += n
		return at, nil
	}
	at := s.pos
	return at, s.skip(n)
}

// filePosition is where the file stands: where a reader other than the unpickler would
// start reading.
func (s *seqReader) filePosition() int64 {
	if s.frameEnd >= 0 {
		return s.filePos
	}
	return s.pos
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
	if err := s.framed(1); err != nil {
		return 0, err
	}
	if err := s.ensure(1); err != nil {
		return 0, err
	}
	b := s.buf[s.pos-s.bufOff]
	s.pos++
	return b, nil
}

// read returns the next n bytes (a view valid until the next call). Callers bound n.
func (s *seqReader) read(n int64) ([]byte, error) {
	if err := s.framed(n); err != nil {
		return nil, err
	}
	if err := s.ensure(n); err != nil {
		return nil, err
	}
	b := s.buf[s.pos-s.bufOff : s.pos-s.bufOff+n]
	s.pos += n
	return b, nil
}

// skip moves past n bytes without reading them.
func (s *seqReader) skip(n int64) error {
	if err := s.framed(n); err != nil {
		return err
	}
	if n < 0 || n > s.end-s.pos {
		return errShort
	}
	s.pos += n
	return nil
}

// line returns the bytes up to the next '\n' (not included), at most max bytes long.
func (s *seqReader) line(max int) ([]byte, bool, error) {
	if s.frameEnd >= 0 {
		if s.pos == s.frameEnd {
			s.pos, s.frameEnd = s.filePos, -1
		} else {
			// the line must end inside the frame
			end, fe := s.end, s.frameEnd
			s.end, s.frameEnd = fe, -1
			l, ok, err := s.line(max)
			s.end, s.frameEnd = end, fe
			if err == errShort {
				err = errFrame
			}
			return l, ok, err
		}
	}
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
