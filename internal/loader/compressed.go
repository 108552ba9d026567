package loader

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ckptview/ckptview/internal/pyrepr"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// joblib compresses a whole pickle stream with one of six codecs and recognises the codec by
// the file's first bytes, in this order (joblib/numpy_pickle_utils.py _detect_compressor and
// joblib/compressor.py): "ZF" is the pre-0.10 format; then zlib ("x", a single byte: any
// file that starts with 0x78 is read as zlib), gzip, bz2 ("BZ"), lzma (the .lzma "alone"
// format, "\x5d\x00"), xz and lz4 frames. The decompressed stream is unpickled directly,
// never sniffed again, so what it holds must be a joblib pickle.

// compressor is one codec joblib reads.
type compressor struct {
	name   string // joblib's name: zlib, gzip, bz2, lzma, xz, lz4
	prefix string
	// open returns a reader of the decompressed stream.
	open func(r io.Reader) (io.Reader, error)
}

var compressors = []compressor{
	{"zlib", "x", func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) }},
	{"gzip", "\x1f\x8b", openGzip},
	{"bz2", "BZ", func(r io.Reader) (io.Reader, error) { return bzip2.NewReader(r), nil }},
	{"lzma", "\x5d\x00", func(r io.Reader) (io.Reader, error) { return lzma.NewReader(r) }},
	{"xz", "\xfd7zXZ", func(r io.Reader) (io.Reader, error) { return xz.NewReader(r) }},
	{"lz4", "\x04\x22\x4d\x18", func(r io.Reader) (io.Reader, error) { return lz4.NewReader(r), nil }},
}

// detectCompressor names the codec joblib would pick for a file starting with head, "compat"
// for the pre-0.10 "ZF" format, or "" for an uncompressed file.
func detectCompressor(head []byte) string {
	if bytes.HasPrefix(head, []byte("ZF")) {
		return "compat"
	}
	for _, c := range compressors {
		if bytes.HasPrefix(head, []byte(c.prefix)) {
			return c.name
		}
	}
	return ""
}

// openGzip reads every gzip member in turn, as Python's gzip module does: members may be
// concatenated, and zero bytes between or after them are padding. Anything else after a
// member ends the stream (Python raises there; what came before is what joblib unpickles).
func openGzip(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	z, err := gzip.NewReader(br)
	if err != nil {
		return nil, err
	}
	z.Multistream(false)
	return &gzipMembers{br: br, z: z}, nil
}

type gzipMembers struct {
	br  *bufio.Reader
	z   *gzip.Reader
	err error
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for {
		if g.err != nil {
			return 0, g.err
		}
		n, err := g.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
		// the member ended: skip zero padding, then another member or the end
		for {
			b, err := g.br.ReadByte()
			if err == io.EOF {
				g.err = io.EOF
				break
			}
			if err != nil {
				g.err = err
				break
			}
			if b != 0 {
				_ = g.br.UnreadByte()
				break
			}
		}
		if g.err != nil {
			continue
		}
		if head, _ := g.br.Peek(2); string(head) != "\x1f\x8b" {
			g.err = errTrailing
			continue
		}
		if err := g.z.Reset(g.br); err != nil {
			g.err = err
			continue
		}
		g.z.Multistream(false)
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var errTrailing = errors.New("data that is not compressed follows the compressed stream")

// spool holds a decompressed stream: in memory while small, then in a temporary file that is
// already unlinked, so it disappears with the checkpoint (or the process).
type spool struct {
	mem  bytes.Buffer
	file *os.File
	size int64
}

// spoolInMemory is how much of a decompressed stream stays in memory before it spills to disk.
const spoolInMemory = 1 << 20

func (s *spool) Write(p []byte) (int, error) {
	if s.file != nil {
		n, err := s.file.Write(p)
		s.size += int64(n)
		return n, err
	}
	s.mem.Write(p)
	s.size += int64(len(p))
	return len(p), nil
}

func (s *spool) spill(scratch func() (*os.File, error)) error {
	if s.file != nil || s.mem.Len() < spoolInMemory {
		return nil
	}
	var f *os.File
	var err error
	if scratch != nil {
		f, err = scratch()
	} else {
		f, err = os.CreateTemp("", "ckptview-inflated-*")
		if err == nil {
			_ = os.Remove(f.Name())
		}
	}
	if err != nil {
		return fmt.Errorf("loader: a temporary file for the decompressed stream: %w", err)
	}
	if _, err := f.Write(s.mem.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("loader: write the decompressed stream: %w", err)
	}
	s.file = f
	s.mem = bytes.Buffer{}
	return nil
}

// readerAt is the spool's content once written.
func (s *spool) readerAt() io.ReaderAt {
	if s.file != nil {
		return s.file
	}
	return bytes.NewReader(s.mem.Bytes())
}

func (s *spool) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}

// decompressed is a stream that was decompressed into a spool.
type decompressed struct {
	data io.ReaderAt
	size int64
	// damage says why decoding stopped before the end of the input, if it did: a damaged
	// stream, or bytes after it. What was decoded before is scanned all the same.
	damage string
}

// decompress runs one codec over the whole file into a spool, at most MaxDecompress bytes.
// The spool is owned by the checkpoint (closed by Checkpoint.Close).
func (op *opener) decompress(c compressor, src io.Reader) (*decompressed, error) {
	sp := &spool{}
	op.ck.AddCloser(sp)
	cr := &countReader{r: src}
	br := bufio.NewReaderSize(cr, 64<<10)
	dec, err := c.open(br)
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("this file starts like a %s stream (which is how joblib.load would read it), but it is not one: %v", c.name, cleanCodecErr(err)), Offset: -1}
	}
	limit := op.o.MaxDecompress
	buf := make([]byte, 256<<10)
	var derr error
	for {
		n, err := dec.Read(buf)
		if n > 0 {
			if op.decompressed += int64(n); sp.size+int64(n) > limit || op.decompressed > limit {
				return nil, &Error{Msg: fmt.Sprintf("the %s stream decompresses to more than %s, this server's limit (-max-decompress)", c.name, sizeText(limit)), Offset: -1}
			}
			if _, werr := sp.Write(buf[:n]); werr != nil {
				return nil, fmt.Errorf("loader: write the decompressed stream: %w", werr)
			}
			if serr := sp.spill(op.o.Scratch); serr != nil {
				return nil, serr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			derr = err
			break
		}
		if op.o.pastDeadline() {
			return nil, op.o.timeError()
		}
	}
	d := &decompressed{data: sp.readerAt(), size: sp.size}
	op.markDecompressed(d.data)
	if used := cr.n - int64(br.Buffered()); derr == nil && (c.name == "zlib" || c.name == "bz2") && used < op.size {
		// these decoders read their input byte by byte through br, so used is exact
		d.damage = fmt.Sprintf("%d bytes follow the %s stream; joblib.load never reads them", op.size-used, c.name)
	}
	if derr != nil {
		d.damage = fmt.Sprintf("the %s stream cannot be decoded past byte %d of its output (%v)", c.name, sp.size, cleanCodecErr(derr))
	}
	return d, nil
}

func cleanCodecErr(err error) string {
	if err == errTrailing {
		return err.Error()
	}
	s := err.Error()
	for _, p := range []string{"gzip: ", "zlib: ", "bzip2 data invalid: ", "lz4: ", "xz: ", "lzma: "} {
		s = strings.TrimPrefix(s, p)
	}
	if err == io.ErrUnexpectedEOF {
		s = "the compressed data is cut short"
	}
	return s
}

// sizeText writes a limit's size human and exact, "1.00 MB (1,000,000 bytes)" (limitSize).
func sizeText(n int64) string { return limitSize(n) }

// openCompressed opens a file joblib.load would decompress with codec c: the decompressed
// stream is a joblib pickle.
func (op *opener) openCompressed(c compressor) error {
	d, err := op.decompress(c, io.NewSectionReader(op.r, 0, op.size))
	if err != nil {
		return err
	}
	op.ck.Format = "joblib"
	op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%s-compressed by joblib: %d bytes that decompress to %d; arrays are read from the decompressed stream", c.name, op.size, d.size))
	if d.damage != "" {
		op.ck.Notes = append(op.ck.Notes, d.damage)
	}
	head := make([]byte, min(d.size, 512))
	_, _ = d.data.ReadAt(head, 0)
	if d.size == 0 || !looksLikePickle(head) {
		what := "data that is not a pickle"
		switch {
		case d.size == 0:
			what = "nothing"
		case len(head) >= 262 && string(head[257:262]) == "ustar":
			what = "a tar archive (this is a .tar." + map[string]string{"gzip": "gz", "bz2": "bz2", "xz": "xz"}[c.name] + " file); ckptview does not unpack archives: extract it and upload the checkpoint inside"
		case bytes.HasPrefix(head, []byte("PK\x03\x04")):
			what = "a zip archive; decompress it and upload what is inside"
		case bytes.HasPrefix(head, []byte("\x93NUMPY")):
			what = "a numpy .npy file; decompress it and upload what is inside"
		case d.damage != "":
			what = "data that is not a pickle (" + d.damage + ")"
		}
		return &Error{Msg: fmt.Sprintf("a %s-compressed file that holds %s", c.name, what), Offset: -1}
	}
	if err := op.openJoblib(d.data, d.size, modeJoblib); err != nil {
		var le *Error
		if errors.As(err, &le) && d.damage != "" {
			le.Msg += " in the decompressed stream; " + d.damage
		}
		return err
	}
	return nil
}

// openZF opens joblib's pre-0.10 compressed format (joblib/numpy_pickle_utils.py read_zfile):
// "ZF", the decompressed length as a 19-byte field that Python parses with int(field, 16),
// one optional space, then a zlib stream. The stream is a pickle that joblib's compatibility
// loader reads (its arrays live in side-car files), or, in a ".npy.z" side-car of such a
// file, an array's raw bytes.
func (op *opener) openZF() error {
	const fieldEnd = 2 + 19
	if op.size < fieldEnd {
		return &Error{Msg: "a joblib < 0.10 compressed file (ZF) cut short inside its header", Offset: -1}
	}
	field := make([]byte, 19)
	if _, err := op.r.ReadAt(field, 2); err != nil {
		return &Error{Msg: "the joblib ZF header cannot be read", Offset: 2}
	}
	want, ok := pyHexInt(string(field))
	if !ok {
		return &Error{Msg: fmt.Sprintf("a joblib < 0.10 compressed file (ZF) whose length field %s is not a number (joblib.load fails here)", pyrepr.Bytes(field, 19)), Offset: 2}
	}
	start := int64(fieldEnd)
	var sp [1]byte
	if _, err := op.r.ReadAt(sp[:], start); err == nil && sp[0] == ' ' {
		start++ // joblib <= 0.8.4 on Python 2 wrote one more space
	}
	zlibCodec := compressors[0]
	d, err := op.decompress(zlibCodec, io.NewSectionReader(op.r, start, op.size-start))
	if err != nil {
		return err
	}
	op.ck.Format = "joblib"
	op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("a joblib < 0.10 compressed file (ZF): %d bytes that decompress to %d", op.size, d.size))
	if d.damage != "" {
		op.ck.Notes = append(op.ck.Notes, d.damage)
	}
	if d.size != want {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("the ZF header says %d decompressed bytes but the stream holds %d; joblib asserts they match", want, d.size))
	}
	head := make([]byte, min(d.size, 16))
	_, _ = d.data.ReadAt(head, 0)
	if looksLikePickle(head) {
		op.ck.Notes = append(op.ck.Notes, "joblib < 0.10 keeps large arrays in side-car files next to this one (NDArrayWrapper, ZNDArrayWrapper nodes name them); joblib.load reads them from the folder it loads this file from")
		return op.openJoblib(d.data, d.size, modeJoblibCompat)
	}
	// a side-car: raw array bytes, described by the ZNDArrayWrapper of the main file
	op.ck.Notes = append(op.ck.Notes, "the content is raw array data, as joblib < 0.10 writes it to a side-car file (.npy.z) of a compressed pickle: the main file's ZNDArrayWrapper gives its dtype and shape")
	return op.build(&lazyBytes{src: d.data, off: 0, n: d.size, kind: 'b'})
}

// pyHexInt parses s as Python's int(s, 16) does: surrounding whitespace, a sign, an
// optional 0x prefix, and single underscores between digits.
func pyHexInt(s string) (int64, bool) {
	s = strings.Trim(s, " \t\n\r\v\f")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
		s = strings.TrimPrefix(s, "_")
	}
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return 0, false
	}
	var n int64
	for _, c := range s {
		var d int64
		switch {
		case c == '_':
			continue
		case c >= '0' && c <= '9':
			d = int64(c - '0')
		case c >= 'a' && c <= 'f':
			d = int64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int64(c-'A') + 10
		default:
			return 0, false
		}
		if n > (1<<62)/8 {
			return 0, false
		}
		n = n*16 + d
	}
	if neg {
		n = -n
	}
	return n, true
}
