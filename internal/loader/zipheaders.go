package loader

import (
	"archive/zip"
	"io"
	"sync"
)

// A torch archive's storages are members whose bytes start after their local headers,
// which lie all over the file: a state dict of 200,000 tensors has 200,000 of them, and
// archive/zip reads each with a read of its own (DataOffset), in the order the pickle asks
// for them, which is not the order of the file (torch writes the records sorted by name,
// "data/10" before "data/2"). Read that way they cost a system call each. So the archive is
// read through headerCache, which serves small reads from a window of the file, and the
// one-pass reading has the offsets found in the order of the file (dataOffsets), where
// each window serves the headers of many small members, while it reads the pickle.

// headerWindow is the size of the window headerCache reads.
const headerWindow = 16 << 10

// headerCache serves reads of at most a header's size from a window of r; larger ones go
// to r. It is safe for concurrent use.
type headerCache struct {
	r    io.ReaderAt
	size int64

	mu  sync.Mutex
	buf []byte
	off int64
}

func (h *headerCache) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 1024 || off < 0 {
		return h.r.ReadAt(p, off)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off < h.off || off+int64(len(p)) > h.off+int64(len(h.buf)) {
		if h.buf == nil {
			h.buf = make([]byte, headerWindow)
		}
		n, err := h.r.ReadAt(h.buf[:cap(h.buf)], off)
		h.buf, h.off = h.buf[:n], off
		if n < len(p) {
			copy(p, h.buf)
			if err == nil {
				err = io.EOF
			}
			return n, err
		}
	}
	return copy(p, h.buf[off-h.off:]), nil
}

// dataOffsets reads the data offset of every stored member of zr, in the order of the file,
// on a goroutine of its own; the function it returns waits for them (-1 where a local
// header cannot be read: the caller judges it) and may be called again.
func dataOffsets(zr *zip.Reader) func() []int64 {
	offs := make([]int64, len(zr.File))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, f := range zr.File {
			offs[i] = -1
			if f.Method == zip.Store {
				if off, err := f.DataOffset(); err == nil {
					offs[i] = off
				}
			}
		}
	}()
	return func() []int64 {
		<-done
		return offs
	}
}
