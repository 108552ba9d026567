package loader

import (
	"archive/zip"
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"hash/crc32"
	"io"
	"math"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// legacyMagic is torch's legacy-format magic number, pickled as the file's first value.
const legacyMagic = "119547037146038801333356"

// mainPickle names the pickle of a raw pickle file in findings and errors.
const mainPickle = "the pickle"

// opener holds the state of one Open call.
type opener struct {
	// reader is the program that would unpickle what is scanned now, when it is not the
	// one the scan's mode says (numpy.load for a .npy object array's pickle)
	reader string
	r      io.ReaderAt
	size   int64
	o      Options
	fs     findingSet
	ops    int
	nonce  string
	ck     *ckpt.Checkpoint
	// decompressed counts the bytes inflated into spools for this file, against MaxDecompress
	decompressed int64
	// wo, when set, follows the pickles torch.load reads for its weights_only verdict
	wo *woState
	// nestDepth is how deep in torch files passed to _load_from_bytes the reading is
	nestDepth int
	// fromSpool are the readers of decompressed streams, so that their storages say so
	fromSpool map[io.ReaderAt]bool
	// onePass names the one-pass reading that read the pickle ("plain", "torch"; "" for
	// the general path), for the tests that hold the two to each other
	onePass string
	// memberAt is the index in the archive's entries of each of the checkpoint's Members
	memberAt []int
	// fresh says the opener has read nothing yet but the archive openZip reads
	fresh bool
}

func (op *opener) markDecompressed(r io.ReaderAt) {
	if op.fromSpool == nil {
		op.fromSpool = map[io.ReaderAt]bool{}
	}
	op.fromSpool[r] = true
}

func open(r io.ReaderAt, size int64, o Options) (*ckpt.Checkpoint, error) {
	ck, _, err := openReading(r, size, o)
	return ck, err
}

// openReading is open, and says which one-pass reading read the file ("" for none).
func openReading(r io.ReaderAt, size int64, o Options) (ck *ckpt.Checkpoint, pass string, err error) {
	op := newOpener(r, size, o)
	defer func() { pass = op.onePass }()
	defer func() {
		if p := recover(); p != nil {
			// our own bug, not the file's: the server says so (5xx) and logs the stack
			ck, err = nil, &InternalError{Panic: p, Stack: debug.Stack(), Findings: op.fs.list}
			op.ck.Close()
			return
		}
		var le *Error
		if errors.As(err, &le) {
			le.Findings = append(le.Findings, op.fs.list...)
			ck = nil
		}
		if err != nil {
			op.ck.Close() // a decompressed stream's spool
		}
	}()
	ck, err = op.open()
	return ck, "", err
}

func newOpener(r io.ReaderAt, size int64, o Options) *opener {
	op := &opener{r: r, size: size, o: o, ck: &ckpt.Checkpoint{BytesByDType: map[string]int64{}}}
	var nb [8]byte
	_, _ = rand.Read(nb[:])
	op.nonce = hex.EncodeToString(nb[:])
	return op
}

// open sniffs the format, in an order that no file can be two of: containers with magic
// numbers first, then the compressed streams joblib recognises by their first bytes, then
// pickles.
func (op *opener) open() (*ckpt.Checkpoint, error) {
	size, r := op.size, op.r
	if size == 0 {
		return nil, &Error{Msg: "the file is empty", Offset: -1}
	}
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("loader: read header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte("GGUF")):
		return op.done(op.openGGUF())
	case bytes.HasPrefix(head, []byte(npyMagic)):
		return op.done(op.openNPY())
	case isSafetensors(head, size):
		return op.done(op.openSafetensors())
	}
	if c := detectCompressor(head); c != "" {
		if c == "compat" {
			return op.done(op.openZF())
		}
		for _, cc := range compressors {
			if cc.name == c {
				return op.done(op.openCompressed(cc))
			}
		}
	}
	if kind := sniffForeign(head, size); kind != "" {
		return nil, &Error{Msg: kind, Offset: -1, NotCheckpoint: true}
	}
	var err error
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")):
		err = op.openZip()
	case isTar(head):
		err = op.openTar()
		if errors.Is(err, errTarRefused) {
			// tarfile raises part way, and torch.load reads the file again from its start
			// as its older non-tar stream: so does the loader
			op.ck = &ckpt.Checkpoint{BytesByDType: map[string]int64{}} // (findings are kept)
			err = op.openPickleFile()
			if err == nil {
				op.ck.Notes = append(op.ck.Notes, "Python's tarfile refuses this file part way (a long-name or PAX header with no member after it), so torch.load reads it from its start as its older non-tar format, as shown")
			}
			break
		}
		// torch falls back to pickle when tarfile refuses the file, and pickle.load would
		// read it as one: what the bytes say as a pickle is scanned too
		op.scanAsPickleToo()
	default:
		err = op.openPickleFile()
	}
	return op.done(err)
}

// done finishes a successful open.
func (op *opener) done(err error) (*ckpt.Checkpoint, error) {
	if err != nil {
		return nil, err
	}
	op.finish()
	return op.ck, nil
}

// sniffForeign names formats we recognise but do not open (yet), so the user hears what the
// file is rather than a pickle error.
func sniffForeign(h []byte, size int64) string {
	has := func(p string) bool { return bytes.HasPrefix(h, []byte(p)) }
	switch {
	case has("version https://git-lfs.github.com/spec/"):
		return "this is a Git LFS pointer file, not the checkpoint itself: the real file was never downloaded (run git lfs pull, or download the file itself rather than its pointer)"
	case isHTML(h):
		return "this is an HTML page, not a checkpoint (a download link that returned a web page, such as a login or a \"blob\" page instead of the raw file?)"
	case has("\x89PNG\r\n\x1a\n"):
		return "this is a PNG image, not a checkpoint"
	case has("\xff\xd8\xff"):
		return "this is a JPEG image, not a checkpoint"
	case has("GIF8"):
		return "this is a GIF image, not a checkpoint"
	case has("%PDF"):
		return "this is a PDF document, not a checkpoint"
	case has("\x7fELF"):
		return "this is an executable (ELF), not a checkpoint"
	case has("7z\xbc\xaf\x27\x1c"):
		return "this is a 7-Zip archive; 7z containers are not supported (unpack it and upload the checkpoint inside)"
	case has("Rar!"):
		return "this is a RAR archive; RAR containers are not supported"
	case has("\x28\xb5\x2f\xfd"):
		return "this is a zstd-compressed file; joblib and torch never write zstd, so it is no checkpoint ckptview opens (decompress it and upload what is inside)"
	}
	return ""
}

// isHTML says whether a file starts like an HTML page.
func isHTML(h []byte) bool {
	t := bytes.ToLower(bytes.TrimLeft(h, " \t\r\n\xef\xbb\xbf"))
	return bytes.HasPrefix(t, []byte("<!doctype html")) || bytes.HasPrefix(t, []byte("<html")) || bytes.HasPrefix(t, []byte("<head"))
}

// isSafetensors says whether a file starts like safetensors: a little-endian u64 header
// length, then the header's "{". A length that does not fit the file is still taken (the
// reader then says the file is cut short) as long as it is below 4 GiB: the first bytes of a
// pickle or any other format read as a length are far larger.
func isSafetensors(h []byte, size int64) bool {
	if len(h) < 9 || h[8] != '{' {
		return false
	}
	n := binary.LittleEndian.Uint64(h)
	return n > 0 && (n <= uint64(size-8) || n < 1<<32)
}

// scanOne scans the pickle at [start, end) of src and returns its rewritten stream.
func (op *opener) scanOne(src io.ReaderAt, start, end int64, where string) (*scanner, *sv, error) {
	return op.scanMode(src, start, end, where, modePickle)
}

// scanMode scans one pickle by the reading rules of the consumer mode names.
func (op *opener) scanMode(src io.ReaderAt, start, end int64, where string, mode scanMode) (*scanner, *sv, error) {
	s := &scanner{r: newSeqReader(src, start, end), o: op.o, where: where, start: start, fs: &op.fs,
		nonce: op.nonce, ops: &op.ops, lazyMin: 4096, mode: mode, wo: op.wo, depth: op.nestDepth, reader: op.reader}
	if mode != modePickle {
		s.reader = "joblib.load"
	}
	s.r.pyFrames = mode != modePickle
	v, err := s.run()
	// The symbolic values (one per value of the pickle) are not needed past the scan: let
	// them go before the unpickler makes the real ones. What callers read of the scanner
	// is its rewritten pickle, position, notes and flags.
	s.stack, s.meta, s.memo, s.slab, s.overrides, s.refFinds = nil, nil, memoTable{}, nil, nil, nil
	if err == nil {
		s.dropDeadPuts()
	}
	if err != nil {
		var se *scanError
		if errors.As(err, &se) {
			if se.limit {
				return s, nil, &Error{Msg: fmt.Sprintf("over a limit in %s: %s", where, se.msg), Offset: se.off}
			}
			if where == mainPickle {
				return s, nil, &Error{Msg: "malformed pickle: " + se.msg, Offset: se.off}
			}
			return s, nil, &Error{Msg: fmt.Sprintf("malformed pickle in %s: %s", where, se.msg), Offset: se.off}
		}
		return s, nil, err
	}
	if !s.sawWrapper { // past joblib's array data, pickle.load's reading is only scanned
		op.ck.Notes = append(op.ck.Notes, s.notes...)
	}
	return s, v, nil
}

// unpickle runs gopickle over a rewritten stream with our stand-ins.
func (op *opener) unpickle(s *scanner, ctx *unpickleCtx, where string) (any, error) {
	return op.unpickleWith(s, ctx, where, ctx.persistentLoad)
}

func (op *opener) unpickleWith(s *scanner, ctx *unpickleCtx, where string, pload func(any) (any, error)) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &Error{Msg: fmt.Sprintf("malformed pickle in %s: %v", where, p), Offset: -1}
		}
	}()
	u := pickle.NewUnpickler(bytes.NewReader(s.out))
	u.FindClass = ctx.findClass
	u.PersistentLoad = pload
	v, err = u.Load()
	if err != nil {
		var le *Error
		if errors.As(err, &le) { // a stand-in's own reading (a nested torch file) said it
			return nil, le
		}
		return nil, &Error{Msg: fmt.Sprintf("malformed pickle in %s: %v", where, err), Offset: -1}
	}
	return v, nil
}

func (op *opener) newCtx(src io.ReaderAt) *unpickleCtx {
	return &unpickleCtx{src: src, nonce: op.nonce, storages: map[string]*pyStorage{},
		depth: op.nestDepth, loadBytes: op.loadFromBytes}
}

// openPickleFile opens a raw pickle or a legacy torch file (a sequence of pickles).
func (op *opener) openPickleFile() error {
	if done, err := op.openPlain(); done {
		return err
	}
	first, fv, err := op.scanOne(op.r, 0, op.size, mainPickle)
	if first != nil && first.sawWrapper {
		// A joblib file: joblib.load reads array data where pickle.load reads opcodes. Its
		// reading is the one shown; what pickle.load would do was scanned just now.
		op.ck.Format = "joblib"
		return op.openJoblib(op.r, op.size, modeJoblib)
	}
	if err != nil {
		var le *Error
		if errors.As(err, &le) && le.Offset == 0 && len(op.fs.list) == 0 && notPickleStart(op.r, le.Msg) {
			// the very first opcode makes no sense: this is not a pickle at all
			head := make([]byte, min(op.size, 16))
			_, _ = op.r.ReadAt(head, 0)
			return &Error{Msg: fmt.Sprintf("not a checkpoint: the file is neither a pickle, a torch archive nor another known format (it starts with %s)", pyrepr.Bytes(head, 16)), Offset: -1, NotCheckpoint: true}
		}
		return err
	}
	if fv.kind == svInt && fv.s == legacyMagic {
		// torch.load's weights_only unpickler reads every pickle of a legacy file
		op.wo = &woState{needs: map[string]bool{}}
		op.wo.pickle(op.r, 0, first.r.pos)
		if err := op.openLegacy(first.r.pos); err != nil {
			return err
		}
		op.ck.WeightsOnly = op.wo.verdict()
		op.wo = nil
		return nil
	}
	op.ck.Format = "pickle"
	ctx := op.newCtx(op.r)
	v, err := op.unpickle(first, ctx, mainPickle)
	if err != nil {
		return err
	}
	op.trailing(op.r, op.size, first.r.pos)
	op.ck.Notes = append(op.ck.Notes, ctx.legacyNotes...)
	return op.build(v)
}

// openPlain reads the file in one pass when it is a pickle of plain data (plain.go), and
// says whether it did (or refused it at a limit).
func (op *opener) openPlain() (bool, error) {
	if op.o.nodesOnly || op.o.noPlain {
		return false, nil
	}
	t, root, end, err := readPlain(op.r, 0, op.size, op.o)
	if err == errNotPlain {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	op.ck.Format, op.onePass = "pickle", "plain"
	n := t.node(newConverter(op.o, op.ck), root)
	if p, ok := n.Lazy().(*plainItems); ok {
		p.root = true
	}
	op.ck.Root, op.ck.Values = n, t.size(root)
	op.trailing(op.r, op.size, end)
	return true, nil
}

// torchPass reads a torch archive's data.pkl in one pass (torchpass.go) into the values
// the general path's unpickling makes, and says whether it did (or refused the pickle at a
// limit). It sets the weights_only verdict. Storages are made only once the whole pickle is
// read, and only when every one of them is a stored member that holds it: a file the pass
// gives up on goes the general way as if the pass had not run, and that way says what is
// wrong with it.
func (op *opener) torchPass(src io.ReaderAt, size int64, where string, members func() *dataMembers, expect int, order string) (any, *torchTables, bool, error) {
	t, root, wo, ops, err := readTorchPickle(src, size, op.o, where, expect)
	if err == errNotPlain {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, true, err
	}
	tb := &t.tb
	// The record torch reads for a storage is the member named folder/data/key without
	// regard to ASCII case, one at most (the archive has no two names equal so).
	find := t.find
	for i := range tb.storages {
		if k := t.key(i); lowerName(k) != k { // compared as miniz does
			keys := make(map[string]uint32, len(tb.storages))
			for j := range tb.storages {
				keys[lowerName(t.key(j))] = uint32(j)
			}
			find = func(k string) (uint32, bool) { i, ok := keys[k]; return i, ok }
			break
		}
	}
	dm := members()
	member := make([]int32, len(tb.storages))
	for i := range member {
		member[i] = -1
	}
	for j, name := range dm.names {
		if i, ok := find(name); ok {
			if !dm.stored[j] {
				return nil, nil, false, nil // the general path inflates it
			}
			member[i] = int32(j)
		}
	}
	offs := make([]int64, len(tb.storages))
	for i, s := range tb.storages {
		j := member[i]
		if j < 0 {
			return nil, nil, false, nil
		}
		offs[i] = dm.offs[j]
		if _, err := op.storedSize(t.key(i), tb.dtypes[s.dtype], dm.sizes[j], offs[i], s.numel); err != nil {
			return nil, nil, false, nil
		}
	}
	tb.ps, tb.offs, tb.data, tb.order, tb.tree = make([]*pyStorage, len(tb.storages)), offs, op.r, order, t
	op.ops += ops
	op.ck.WeightsOnly, op.onePass = wo, "torch"
	if tb.keepRows = !op.o.noRows; tb.keepRows {
		tb.markTogether()
	}
	return t.value(root), tb, true, nil
}

// openJoblib opens a pickle the way joblib.load reads it (mode modeJoblib), or the way its
// loader for pre-0.10 files does (modeJoblibCompat).
func (op *opener) openJoblib(src io.ReaderAt, size int64, mode scanMode) error {
	op.ops = 0 // the candidate scans before count apart
	s, _, err := op.scanMode(src, 0, size, mainPickle, mode)
	if err != nil {
		return err
	}
	ctx := op.newCtx(src)
	ctx.objPickles = s.objPickles
	v, err := op.unpickle(s, ctx, mainPickle)
	if err != nil {
		return err
	}
	op.trailing(src, size, s.r.filePosition())
	op.ck.Notes = append(op.ck.Notes, ctx.legacyNotes...)
	return op.build(v)
}

// scanAsPickleToo scans the file from its start as pickle.load would read it, for findings
// only (the file was opened as another format a consumer reads differently).
func (op *opener) scanAsPickleToo() {
	var b [1]byte
	if _, err := op.r.ReadAt(b[:], 0); err != nil || !(b[0] == 0x80 || strings.IndexByte("(c]}lNVIL", b[0]) >= 0) {
		return
	}
	where := "the file read as a pickle (pickle.load)"
	if s, _, err := op.scanOne(op.r, 0, op.size, where); err == nil {
		op.trailing(op.r, op.size, s.r.pos)
	}
}

// notPickleStart says whether a failure at the first opcode means the file is no pickle at
// all (text, random bytes), rather than a pickle with a bad first argument.
func notPickleStart(r io.ReaderAt, msg string) bool {
	var b [1]byte
	if _, err := r.ReadAt(b[:], 0); err != nil || b[0] == 0x80 {
		return false
	}
	for _, s := range []string{"declares", "longer than", "digits", "UnicodeDecodeError"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}

// trailing scans whatever follows the first pickle: a second pickle is a classic way to
// hide a payload from tools that stop at the first STOP.
func (op *opener) trailing(src io.ReaderAt, size, pos int64) {
	for i := 2; pos < size && i <= 64; i++ {
		where := fmt.Sprintf("pickle %d (after the first STOP, at byte %s)", i, thousands(pos))
		s, _, err := op.scanOne(src, pos, size, where)
		if err != nil {
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%s bytes of data follow the pickle's STOP at byte %s; Python's pickle.load ignores them", thousands(size-pos), thousands(pos)))
			return
		}
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("a further pickle follows the first one at byte %s; it is scanned for findings but not shown", thousands(pos)))
		pos = s.r.pos
	}
}

// build converts the root value and indexes the tree.
func (op *opener) build(v any) error { return op.buildTree(v, nil) }

// buildTree converts the root value; tb, when set, holds the tensors of the values a torch
// pickle read in one pass made. When none of its tensors and containers is stored twice,
// the converter keeps no map of the values it has met.
func (op *opener) buildTree(v any, tb *torchTables) error {
	c := newConverter(op.o, op.ck)
	c.unshared, c.torch, c.fromSpool = tb != nil && len(tb.sharedSlots) == 0 && len(tb.shared) == 0, tb, op.fromSpool
	c.deferKeys = true
	op.ck.Root = c.node(v, nil, "", 0)
	c.makeKeys()
	op.ck.Values += c.nodes + c.rowValues
	if tb != nil && c.err == nil {
		// the storages in the order the pickle names them, as the general path lists them;
		// those of rows are made with their nodes
		for i := range tb.storages {
			if tb.rowHeld(i) {
				op.ck.RowStorages++
			} else {
				op.ck.Storages = append(op.ck.Storages, tb.storage(uint32(i)).st)
			}
		}
	}
	if c.err != nil {
		return c.err
	}
	return nil
}

// finish attaches tree paths to findings and builds the pointer index.
func (op *opener) finish() {
	ck := op.ck
	firstPath := map[string]string{}
	var storages []*ckpt.Storage
	if op.onePass == "torch" {
		// The converter set every parent, no node of the tree is a global, and every
		// tensor views one of the archive's storages: nothing to walk the tree for.
		storages = ck.Storages
	} else {
		ckpt.Link(ck.Root)
		// A global met only in a dict's key (an object of a class the file imports, as the
		// key) is found at the entry: no pointer leads into a key.
		var walk func(root, at *ckpt.Node)
		walk = func(root, at *ckpt.Node) {
			ckpt.Walk(root, func(n *ckpt.Node) {
				if n.Tensor != nil && n.Tensor.Storage != nil {
					storages = append(storages, n.Tensor.Storage)
				}
				if _, ok := firstPath[n.Global]; n.Global != "" && !ok {
					firstPath[n.Global] = cmp.Or(at, n).Path()
				}
				if n.DictKey != nil {
					walk(n.DictKey, cmp.Or(at, n))
				}
			})
		}
		walk(ck.Root, nil)
	}
	for i := range op.fs.list {
		f := &op.fs.list[i]
		if p, ok := firstPath[f.Global]; ok && !strings.HasPrefix(f.Where, "pickle ") {
			f.Path = p
		} else {
			f.Outside = true
		}
	}
	for i, n := range op.fs.moreCalls {
		op.fs.list[i].Detail += fmt.Sprintf(" (and %d more calls of it, not listed one by one)", n)
	}
	if n := op.fs.droppedWarnings; n > 0 {
		ck.Notes = append(ck.Notes, fmt.Sprintf("%d more warnings (unknown globals) are not listed; every danger is", n))
	}
	// a global reported as a danger is not also listed as a mere unknown import
	dangerous := map[string]bool{}
	for _, f := range op.fs.list {
		if f.Severity == ckpt.SeverityDanger {
			dangerous[f.Global] = true
		}
	}
	for _, f := range op.fs.list {
		if f.Severity == ckpt.SeverityDanger || !dangerous[f.Global] {
			ck.Findings = append(ck.Findings, f)
		}
	}
	sort.SliceStable(ck.Findings, func(i, j int) bool {
		return ck.Findings[i].Severity == ckpt.SeverityDanger && ck.Findings[j].Severity != ckpt.SeverityDanger
	})
	for _, st := range storages {
		if len(st.Users) > 1 { // sorting twice does no harm
			sort.Strings(st.Users)
		}
	}
}

// openLegacy reads torch's legacy format: magic, protocol version, sys_info, the main
// pickle, the storage keys, then each storage as an 8-byte element count and raw data.
func (op *opener) openLegacy(pos int64) error {
	op.ck.Format = "torch-legacy"
	main, ctx, end, err := op.readLegacy(op.r, op.size, pos, "")
	if err != nil {
		return err
	}
	if end < op.size {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%d bytes follow the last storage", op.size-end))
	}
	op.ck.Notes = append(op.ck.Notes, ctx.legacyNotes...)
	if err := op.build(main); err != nil {
		return err
	}
	return op.checkViews()
}

// readLegacy reads the legacy torch format in src from pos, after its magic number: the
// protocol version, sys_info, the object and the storage keys, each a pickle, then each
// storage's element count and bytes. It returns the object, its unpickling context and
// where the last storage ends. in names the file in messages ("" for the one uploaded).
func (op *opener) readLegacy(src io.ReaderAt, size, pos int64, in string) (any, *unpickleCtx, int64, error) {
	ctx := op.newCtx(src)
	next := func(where string) (any, error) {
		where += in
		s, _, err := op.scanOne(src, pos, size, where)
		if err != nil {
			return nil, err
		}
		v, err := op.unpickle(s, ctx, where)
		if err != nil {
			return nil, err
		}
		pos = s.r.pos
		return v, nil
	}
	proto, err := next("the protocol-version pickle")
	if err != nil {
		return nil, nil, 0, err
	}
	if n, _ := toInt64(proto); n != 1001 {
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("legacy protocol version%s is %v (torch writes 1001)", in, reprValue(proto)))
	}
	sysInfo, err := next("the sys_info pickle")
	if err != nil {
		return nil, nil, 0, err
	}
	order := "little"
	if d, ok := sysInfo.(*types.Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le == false {
			order = "big"
		}
	}
	ctx.storageFor = func(key, dtype, location string, numel int64) (*ckpt.Storage, error) {
		st := &ckpt.Storage{Key: key, DType: dtype, Location: location, ByteOrder: order, Data: src, Offset: -1}
		op.ck.Storages = append(op.ck.Storages, st)
		return st, nil
	}
	main, err := next("the main pickle")
	if err != nil {
		return nil, nil, 0, err
	}
	keysV, err := next("the storage-keys pickle")
	if err != nil {
		return nil, nil, 0, err
	}
	keys := iterItems(keysV)
	var bo binary.ByteOrder = binary.LittleEndian
	if order == "big" {
		bo = binary.BigEndian
	}
	for _, k := range keys {
		key := fmt.Sprint(k)
		ps, ok := ctx.storages[key]
		if !ok {
			return nil, nil, 0, &Error{Msg: fmt.Sprintf("storage %q%s is listed after the pickle but no tensor uses it", key, in), Offset: pos}
		}
		var nb [8]byte
		if _, err := src.ReadAt(nb[:], pos); err != nil {
			return nil, nil, 0, &Error{Msg: fmt.Sprintf("the file%s ends before the data of storage %q", in, key), Offset: pos}
		}
		numel := int64(bo.Uint64(nb[:]))
		es := int64(ckpt.DTypeSize(ps.st.DType))
		if numel < 0 || es == 0 || numel > (size-pos-8)/max(es, 1) {
			return nil, nil, 0, &Error{Msg: fmt.Sprintf("storage %q%s declares %d elements, more than the file holds", key, in, numel), Offset: pos}
		}
		ps.st.Offset, ps.st.Size = pos+8, numel*es
		if numel != ps.numel {
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("storage %q%s holds %d elements; the pickle said %d", key, in, numel, ps.numel))
			ps.numel = numel
		}
		pos += 8 + numel*es
	}
	for _, v := range ctx.viewsOf {
		es := int64(ckpt.DTypeSize(v.root.st.DType))
		v.view.st.Offset = v.root.st.Offset + v.elemOff*es
	}
	for key, ps := range ctx.storages {
		if ps.st.Offset < 0 {
			return nil, nil, 0, &Error{Msg: fmt.Sprintf("storage %q%s has no data in the file", key, in), Offset: -1}
		}
	}
	return main, ctx, pos, nil
}

// loadFromBytes rebuilds what torch.storage._load_from_bytes returns: the storage in the
// legacy torch file b (see scanner.nestedTorch, which checked every pickle in it). Its
// storage reads its bytes from b.
func (op *opener) loadFromBytes(src io.ReaderAt, size int64, depth int) (any, error) {
	in := " of a torch file passed to " + loadFromBytes
	if depth >= maxNesting {
		return nil, &Error{Msg: fmt.Sprintf("torch files passed to %s nest more than %d deep", loadFromBytes, maxNesting), Offset: -1}
	}
	if isZipLocal(src, 0) {
		// torch writes the legacy format here; a zip archive was scanned (nestedTorchZip)
		// and stays an opaque object
		return nil, errNotStandIn
	}
	// Findings and notes of these pickles were made when the outer pickle was scanned, and
	// weights_only never reads them (it refuses _load_from_bytes).
	fs, wo, notes := op.fs, op.wo, len(op.ck.Notes)
	op.fs, op.wo, op.nestDepth = findingSet{}, nil, depth+1
	defer func() { op.fs, op.wo, op.nestDepth = fs, wo, depth }()
	s, magic, err := op.scanOne(src, 0, size, "the magic-number pickle"+in)
	if err != nil {
		return nil, err
	}
	if magic == nil || magic.kind != svInt || magic.s != legacyMagic {
		return nil, &Error{Msg: "a torch file passed to " + loadFromBytes + " does not start with torch's magic number", Offset: -1}
	}
	main, ctx, _, err := op.readLegacy(src, size, s.r.pos, in)
	op.ck.Notes = op.ck.Notes[:notes]
	if err != nil {
		return nil, err
	}
	op.ck.Notes = append(op.ck.Notes, ctx.legacyNotes...)
	return main, nil
}

// checkViews rejects tensors whose view runs past their storage.
func (op *opener) checkViews() error {
	var bad error
	var walk func(n *ckpt.Node)
	walk = func(n *ckpt.Node) {
		if bad != nil {
			return
		}
		if n.Kind == ckpt.KindTensor && n.Tensor != nil && n.Tensor.Storage != nil {
			if err := checkView(n.Tensor); err != nil {
				bad = &Error{Msg: fmt.Sprintf("tensor %s: %v", displayPath(n.Path()), err), Offset: -1}
				return
			}
		}
		if p, ok := n.Lazy().(*tensorItems); ok {
			bad = p.checkViews(n)
			for _, a := range p.attrs {
				walk(a)
			}
		}
		for _, k := range n.Children {
			walk(k)
		}
	}
	walk(op.ck.Root)
	return bad
}

// checkView verifies that every element of a strided view lies inside its storage.
func checkView(t *ckpt.Tensor) error {
	es := int64(ckpt.DTypeSize(t.DType))
	if es == 0 {
		return nil
	}
	if t.StorageOffset < 0 {
		return fmt.Errorf("negative storage offset %d", t.StorageOffset)
	}
	lo, hi := t.StorageOffset, t.StorageOffset
	numel := int64(1)
	for _, d := range t.Shape {
		if d > 0 && numel > math.MaxInt64/d {
			return fmt.Errorf("shape %v has more than 2^63 elements", t.Shape)
		}
		numel *= max(d, 0)
	}
	for i, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("negative dimension %d", d)
		}
		if d == 0 {
			return nil
		}
		s := t.Strides[i]
		span, ok := mulOK(d-1, s)
		if !ok {
			return fmt.Errorf("shape and strides overflow")
		}
		if span < 0 {
			if lo < math.MinInt64/2 || span < math.MinInt64/2 {
				return fmt.Errorf("shape and strides overflow")
			}
			lo += span
		} else {
			if hi > math.MaxInt64/2 || span > math.MaxInt64/2 {
				return fmt.Errorf("shape and strides overflow")
			}
			hi += span
		}
	}
	if lo < 0 {
		return fmt.Errorf("the view starts before its storage")
	}
	elems := t.Storage.Size / es
	if hi >= elems {
		return fmt.Errorf("the view needs %d elements but its storage holds %d", hi+1, elems)
	}
	return nil
}

func mulOK(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	c := a * b
	if c/b != a {
		return 0, false
	}
	return c, true
}

// errTorchRetry says that the one pass gave up on an archive whose entries it had let go:
// openZip reads it again the general way.
var errTorchRetry = errors.New("loader: the one pass gave the archive back")

// openZip opens a torch zip archive (torch.save since 1.6, TorchScript) or a plain zip of
// pickles. An archive the one pass gives back after letting its entries go is read again
// from the start with the pass off, by an opener as it was before the first reading (the
// one pass is tried only by an opener that has read nothing else: fresh).
func (op *opener) openZip() error {
	op.fresh = len(op.fs.list) == 0 && op.ck.Root == nil && len(op.ck.Notes) == 0 && len(op.ck.Members) == 0 &&
		len(op.ck.Storages) == 0 && op.wo == nil && op.reader == "" && op.decompressed == 0
	ops := op.ops
	err := op.openZipOnce()
	if err != errTorchRetry {
		return err
	}
	op.ck.Close()
	op.fs, op.ops, op.ck, op.wo, op.onePass, op.memberAt, op.fromSpool = findingSet{}, ops, &ckpt.Checkpoint{BytesByDType: map[string]int64{}}, nil, "", nil, nil
	op.decompressed, op.o.noTorchPass, op.fresh = 0, true, false
	return op.openZipOnce()
}

// openZipOnce is one reading of openZip.
func (op *opener) openZipOnce() error {
	var zr *zip.Reader
	var err error
	if _, remote := op.r.(interface{ WillRead(off, n int64) }); remote {
		zr, err = zip.NewReader(op.r, op.size) // warmHeaders reads the headers in parallel
	} else {
		zr, err = zip.NewReader(&headerCache{r: op.r, size: op.size}, op.size)
	}
	switch {
	case errors.Is(err, zip.ErrFormat):
		// The file starts like a zip (a torch.save archive) but its directory, at the end,
		// cannot be found: most often a download or copy cut short.
		return &Error{Msg: fmt.Sprintf("a zip archive (the torch.save format) whose central directory at the end is missing or damaged: the file may be truncated (it has %d bytes)", op.size), Offset: -1}
	case err != nil:
		return &Error{Msg: "not a valid zip archive: " + strings.TrimPrefix(err.Error(), "zip: "), Offset: -1}
	}
	// torch's own reading decides the pickle shown and the storages' bytes (torchzip.go);
	// an archive torch refuses is shown as a plain zip reading finds it, saying so
	tz, refusal := newTorchZip(zr)
	// byName finds members by their exact names; when no two names are equal even without
	// regard to case (tz.distinct), there is no repeated name to find, and tz finds them
	var byName map[string]*zip.File
	if !tz.distinct {
		byName = make(map[string]*zip.File, len(zr.File))
	}
	var dataPkl *zip.File
	op.listMembers(zr)
	op.markShadowed(zr, tz, refusal == "" && tz.lookup("data.pkl") != nil) // else numpy or zipfile reads it
	for _, f := range zr.File {
		if byName != nil {
			if _, dup := byName[f.Name]; dup {
				continue // markShadowed notes it
			}
			byName[f.Name] = f
		}
		if f.Name == "data.pkl" || strings.HasSuffix(f.Name, "/data.pkl") {
			if dataPkl == nil || strings.Count(f.Name, "/") < strings.Count(dataPkl.Name, "/") ||
				strings.Count(f.Name, "/") == strings.Count(dataPkl.Name, "/") && len(f.Name) < len(dataPkl.Name) {
				dataPkl = f
			}
		}
		if name := f.Name; strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") ||
			strings.HasSuffix(name, "/..") || strings.Contains(name, "/../") || strings.Contains(name, "\\") {
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("the archive names a member %q outside its folder; nothing is ever extracted, so it is only read", f.Name))
		}
	}
	var prefix string
	record := func(name string) (*zip.File, bool) {
		if byName == nil {
			f := tz.exact(prefix + name)
			return f, f != nil
		}
		f, ok := byName[prefix+name]
		return f, ok
	}
	if f := tz.lookup("data.pkl"); refusal == "" && f != nil {
		dataPkl, prefix = f, tz.prefix
		record = func(name string) (*zip.File, bool) {
			f := tz.lookup(name)
			return f, f != nil
		}
		refusal = tz.versionRefusal(func(f *zip.File) ([]byte, error) { return op.readMember(f, 64) })
	} else if refusal == "" && dataPkl != nil {
		refusal = "it has no " + tz.prefix + "data.pkl"
	}
	if dataPkl == nil {
		return op.openPlainZip(zr)
	}
	if prefix == "" {
		prefix = strings.TrimSuffix(dataPkl.Name, "data.pkl")
	}
	if refusal != "" {
		op.ck.Notes = append(op.ck.Notes, "torch.load refuses this archive: "+refusal+"; it is shown as a zip reader finds it, and every member that could be a pickle is scanned")
	}
	op.ck.Format = "torch-zip"
	order := "little"
	if f, ok := record("byteorder"); ok {
		if b, err := op.readMember(f, 16); err == nil && strings.TrimSpace(string(b)) == "big" {
			order = "big"
		}
	}
	if _, ok := record("constants.pkl"); ok {
		op.ck.Format = "torchscript"
		code := 0
		for _, f := range zr.File { // a name given twice counts once: byName keeps the first
			if name := f.Name; (byName == nil || byName[name] == f) && strings.HasPrefix(name, prefix+"code/") && strings.HasSuffix(name, ".py") {
				code++
			}
		}
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("TorchScript archive: %d TorchScript code file(s) under code/ would be compiled and run by torch.jit.load; the objects are shown from data.pkl", code))
	}
	op.warmHeaders(zr)
	src, srcSize, err := op.member(dataPkl, op.o.MaxPickle)
	if err != nil {
		return err
	}
	ctx := op.newCtx(src)
	ctx.storageFor = func(key, dtype, location string, numel int64) (*ckpt.Storage, error) {
		f, ok := record("data/" + key)
		if !ok {
			return nil, fmt.Errorf("tensor storage %q has no data/%s member in the archive", key, key)
		}
		st := &ckpt.Storage{Key: key, DType: dtype, Location: location, ByteOrder: order}
		off := int64(-1)
		if f.Method == zip.Store {
			var err error
			if off, err = f.DataOffset(); err != nil {
				off = -1
			}
		}
		if err := op.zipStorage(st, f, off, numel); err != nil {
			return nil, err
		}
		return st, nil
	}
	switch {
	case refusal != "":
		op.ck.WeightsOnly = &ckpt.WeightsOnly{Refusal: "torch.load refuses this archive, with or without weights_only: " + refusal}
	case op.ck.Format == "torchscript":
		op.ck.WeightsOnly = &ckpt.WeightsOnly{Refusal: "a TorchScript archive: torch.load(weights_only=True) refuses it (torch.jit.load reads it, and runs its code)"}
	default:
		op.wo = &woState{needs: map[string]bool{}}
	}
	// The entries' data offsets are read on another core (an archive of 200,000 storages
	// has as many local headers to read), while the pickle is when it goes the general way.
	headers := dataOffsets(zr)
	defer headers()
	if op.wo != nil && tz.distinct && !op.o.nodesOnly && !op.o.noPlain && !op.o.noTorchPass {
		// The one pass. In an archive of many entries (about 215 bytes each, 43 MB for a
		// state dict of 200,000 tensors) what it needs of them is taken first, the other
		// pickles are scanned and the members made to read in place, and the entries let
		// go before the pickle is read, so that they and its tables are never in memory
		// together; a pickle the pass does not take then has the archive read again the
		// general way. In a smaller one the local headers are read while the pickle is.
		want := lowerName(tz.prefix) + "data/"
		release := op.fresh && len(zr.File) >= op.o.releaseFrom()
		members := func() *dataMembers { return newDataMembers(zr, want, headers()) }
		expect := 0 // the storages the archive's members can hold, when they are known
		if release {
			dm := members()
			expect = len(dm.names)
			op.scanOtherPickles(zr, dataPkl)
			op.compactMembers(zr, headers())
			zr.File, tz.files, tz.sorted, tz.byName, tz.byNumber, byName = nil, nil, nil, nil, nil, nil
			members = func() *dataMembers { return dm }
		}
		v, tb, done, err := op.torchPass(src, srcSize, dataPkl.Name, members, expect, order)
		switch {
		case done:
			op.wo = nil
			if err != nil {
				return err
			}
			if !release {
				op.scanOtherPickles(zr, dataPkl)
				op.compactMembers(zr, headers())
			}
			if err := op.buildTree(v, tb); err != nil {
				return err
			}
			return op.checkViews()
		case release:
			return errTorchRetry
		}
	}
	s, _, err := op.scanOne(src, 0, srcSize, dataPkl.Name)
	op.wo = nil
	if err != nil {
		return err
	}
	if s.wo != nil {
		op.ck.WeightsOnly = s.wo.verdict()
	}
	op.scanOtherPickles(zr, dataPkl)
	v, err := op.unpickle(s, ctx, dataPkl.Name)
	if err != nil {
		return err
	}
	op.ck.Notes = append(op.ck.Notes, ctx.legacyNotes...)
	if err := op.build(v); err != nil {
		return err
	}
	op.compactMembers(zr, headers())
	return op.checkViews()
}

// dataMembers are what the one pass needs of an archive's entries named folder/data/...:
// the rest of each name in ASCII lower case (as miniz compares names), whether it is
// stored, its size and its data offset (-1 when its local header could not be read).
type dataMembers struct {
	names  []string
	stored []bool
	sizes  []uint64
	offs   []int64
}

// newDataMembers takes the entries of zr named want... (in lower case); offs are the data
// offsets of all its entries (dataOffsets).
func newDataMembers(zr *zip.Reader, want string, offs []int64) *dataMembers {
	// counted first, and the names' bytes written to one buffer (a Builder's String
	// shares what it holds), so that the members of a state dict of 200,000 tensors are
	// made in five allocations
	n, text := 0, 0
	for _, f := range zr.File {
		if hasPrefixFold(f.Name, want) {
			n, text = n+1, text+len(f.Name)-len(want)
		}
	}
	dm := &dataMembers{names: make([]string, 0, n), stored: make([]bool, 0, n), sizes: make([]uint64, 0, n), offs: make([]int64, 0, n)}
	var all strings.Builder
	all.Grow(text)
	for j, f := range zr.File {
		if !hasPrefixFold(f.Name, want) {
			continue
		}
		start := all.Len()
		all.WriteString(lowerName(f.Name[len(want):])) // not the entry's own name
		dm.names = append(dm.names, all.String()[start:])
		dm.stored = append(dm.stored, f.Method == zip.Store)
		dm.sizes = append(dm.sizes, f.UncompressedSize64)
		dm.offs = append(dm.offs, offs[j])
	}
	return dm
}

// storedSize is the size in bytes of a storage of numel elements of dtype in a stored
// member of size bytes whose data is at off (-1 when its local header could not be read),
// or why it cannot be one.
func (op *opener) storedSize(key, dtype string, size uint64, off, numel int64) (int64, error) {
	n, err := storageSize(key, dtype, size, numel)
	if err == nil && (off < 0 || off+n > op.size) {
		err = fmt.Errorf("storage %q lies outside the file", key)
	}
	return n, err
}

// storageSize is the size in bytes of a storage of numel elements of dtype in a member of
// size bytes (uncompressed), or why the member cannot hold it.
func storageSize(key, dtype string, size uint64, numel int64) (int64, error) {
	es := int64(ckpt.DTypeSize(dtype))
	if es == 0 {
		return 0, fmt.Errorf("storage %q has unknown dtype %s", key, dtype)
	}
	if numel > int64(size)/es {
		return 0, fmt.Errorf("storage %q needs %d elements of %s but its member holds %d bytes", key, numel, dtype, size)
	}
	return numel * es, nil
}

// zipStorage completes st, the storage of a persistent id, from its record f (off is f's
// data offset when it is stored and its local header could be read, else -1), and adds it
// to the checkpoint.
func (op *opener) zipStorage(st *ckpt.Storage, f *zip.File, off, numel int64) error {
	key, dtype := st.Key, st.DType
	if f.Method == zip.Store {
		size, err := op.storedSize(key, dtype, f.UncompressedSize64, off, numel)
		if err != nil {
			return err
		}
		st.Size, st.Data, st.Offset = size, op.r, off
	} else {
		size, err := storageSize(key, dtype, f.UncompressedSize64, numel)
		if err != nil {
			return err
		}
		st.Size = size
		// torch writes storages stored; a deflated one is inflated once, into a spool
		// counted against -max-decompress, so that reading it never inflates it again
		// from the start (which made statistics quadratic in its size)
		data, n, err := op.memberData(f)
		if err != nil {
			var le *Error
			if errors.As(err, &le) {
				return errors.New(le.Msg)
			}
			return err
		}
		if n < st.Size {
			return fmt.Errorf("storage %q needs %d bytes but its member inflates to %d", key, st.Size, n)
		}
		st.Data = data
	}
	op.ck.Storages = append(op.ck.Storages, st)
	return nil
}

// warmHeaders reads the local headers of a torch archive's records in parallel when the
// file is read over the network (its reader takes WillRead hints: a bucket's blob). Each
// storage's data offset needs its record's local header, scattered over the whole file,
// and reading them one by one as the pickle names them costs one round trip each. Read
// here first, they are in the blob's cache when the pickle asks. It changes no result: a
// header that cannot be read here is read, and judged, again where it is needed.
func (op *opener) warmHeaders(zr *zip.Reader) {
	if _, remote := op.r.(interface{ WillRead(off, n int64) }); !remote {
		return
	}
	work := make(chan *zip.File)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				f.DataOffset()
			}
		}()
	}
	for _, f := range zr.File {
		if f.Method == zip.Store {
			work <- f
		}
	}
	close(work)
	wg.Wait()
}

// compactMembers gives up the zip entries of the members stored as they are, once the
// archive is read (offs are the entries' data offsets, dataOffsets): they are read in
// place, and an opened archive keeps about 250 bytes less a member.
func (op *opener) compactMembers(zr *zip.Reader, offs []int64) {
	for i, j := range op.memberAt {
		m, f, off := &op.ck.Members[i], zr.File[j], offs[j]
		if f.Method == zip.Store && f.Flags&1 == 0 && f.UncompressedSize64 == f.CompressedSize64 &&
			off >= 0 && off <= op.size && m.Size <= op.size-off {
			old := *m
			*m = ckpt.NewMember(m.Name, m.Size, m.Kind, storedMember(m.Name, op.r, off, m.Size))
			m.Shadowed, m.Copy, m.Copies = old.Shadowed, old.Copy, old.Copies
		}
	}
	op.memberAt = nil
}

// listMembers records an archive's members and what each holds (none past 100,000).
func (op *opener) listMembers(zr *zip.Reader) {
	if len(zr.File) > 100_000 {
		return
	}
	for j, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		op.ck.Members = append(op.ck.Members, ckpt.NewMember(f.Name, int64(f.UncompressedSize64), memberKind(f.Name), zipMember(f)))
		op.memberAt = append(op.memberAt, j)
	}
}

// markShadowed notes each name several members of the archive have, and marks the
// members the loading program does not read by that name: in an archive torch reads
// (torchReads), all but the one torch's lookup finds (torchzip.go; all of them when it
// finds a name that differs but for case); elsewhere all but the last, as Python's
// zipfile and numpy read them.
func (op *opener) markShadowed(zr *zip.Reader, tz *torchZip, torchReads bool) {
	if tz.distinct {
		return // no two names alike, even without regard to case
	}
	count := make(map[string]int, len(zr.File))
	var names []string // the repeated names, in the order of their first member
	for _, f := range zr.File {
		if count[f.Name]++; count[f.Name] == 2 {
			names = append(names, f.Name)
		}
	}
	if len(names) == 0 {
		return
	}
	read := map[string]int{} // name -> which copy is read (1-based), 0 if none
	seen := map[string]int{}
	copyOf := make([]int, len(zr.File)) // which member of its name each is (1-based)
	for j, f := range zr.File {
		if count[f.Name] < 2 {
			continue
		}
		seen[f.Name]++
		copyOf[j] = seen[f.Name]
		reads := seen[f.Name] == count[f.Name]
		if torchReads && strings.HasPrefix(f.Name, tz.prefix) {
			reads = tz.lookup(strings.TrimPrefix(f.Name, tz.prefix)) == f
		}
		if reads {
			read[f.Name] = seen[f.Name]
		}
	}
	for i := range op.ck.Members {
		if m := &op.ck.Members[i]; count[m.Name] > 1 {
			m.Copy, m.Copies = copyOf[op.memberAt[i]], count[m.Name]
			m.Shadowed = read[m.Name] != m.Copy
		}
	}
	for _, name := range names {
		which := fmt.Sprintf("it reads copy %d of them (in the archive's order), which is the one shown", read[name])
		if read[name] == 0 {
			which = "it reads a member whose name differs from this one only in case, not any of them"
		}
		who := "torch finds one by a binary search over the sorted names: " + which
		if !torchReads || !strings.HasPrefix(name, tz.prefix) {
			who = "numpy.load and Python's zipfile take the last: " + which
		}
		op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("the archive holds %d members named %s; %s; all of them are scanned", count[name], name, who))
	}
}

// zipMember reads archive member f through its zip entry, at most limit bytes.
func zipMember(f *zip.File) func(limit int64) ([]byte, error) {
	return func(limit int64) ([]byte, error) {
		name := f.Name
		if f.UncompressedSize64 > uint64(limit) {
			return nil, &Error{Msg: fmt.Sprintf("archive member %s is %s, more than the %s shown", name, limitSize(clampInt64(f.UncompressedSize64)), limitSize(limit)), Offset: -1}
		}
		rc, err := f.Open()
		if err != nil {
			return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, limit+1))
		if err != nil && !errors.Is(err, zip.ErrChecksum) {
			return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
		}
		if int64(len(b)) > limit {
			return nil, &Error{Msg: fmt.Sprintf("archive member %s holds more than the %s shown", name, limitSize(limit)), Offset: -1}
		}
		return b, nil
	}
}

// storedMember reads a stored member's size bytes at off of src, at most limit bytes.
func storedMember(name string, src io.ReaderAt, off, size int64) func(limit int64) ([]byte, error) {
	return func(limit int64) ([]byte, error) {
		if size > limit {
			return nil, &Error{Msg: fmt.Sprintf("archive member %s is %s, more than the %s shown", name, limitSize(size), limitSize(limit)), Offset: -1}
		}
		b := make([]byte, size)
		if _, err := src.ReadAt(b, off); err != nil && !(err == io.EOF && size == 0) {
			return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", name, err), Offset: -1}
		}
		return b, nil
	}
}

// memberKind says what torch (or numpy) makes of an archive member, by its name below the
// archive's root folder.
func memberKind(name string) string {
	rel := name
	if i := strings.IndexByte(name, '/'); i >= 0 {
		rel = name[i+1:]
	}
	switch {
	case strings.HasPrefix(rel, "code/") && strings.HasSuffix(rel, ".debug_pkl"):
		return "debug"
	case strings.HasPrefix(rel, "code/"):
		return "code"
	case strings.HasPrefix(rel, "extra/"):
		return "extra"
	case strings.HasPrefix(rel, "data/") || strings.HasPrefix(rel, "constants/"):
		return "data"
	case strings.HasSuffix(rel, ".pkl"):
		return "pickle"
	case strings.HasSuffix(name, ".npy"):
		return "array"
	case rel == "version" || rel == ".data/version" || rel == "byteorder" || strings.HasPrefix(rel, ".data/") || strings.HasPrefix(rel, "."):
		return "record"
	}
	return "other"
}

// scanOtherPickles scans, for findings, every member of a torch archive but the one shown that
// torch could read as a pickle: torch's reader (miniz, through PyTorchStreamReader) finds
// members by name without regard to case, and another data.pkl, a duplicate or one under
// another folder, may be the one it opens. Members named like pickles in any case, and any
// member outside data/ whose bytes start like a pickle, are scanned. One that cannot be
// read (too large, another compression method, encrypted, damaged) is a danger: what it
// would do is unknown, and fail closed means saying so.
func (op *opener) scanOtherPickles(zr *zip.Reader, shown *zip.File) {
	for _, f := range zr.File {
		if f == shown || f.FileInfo().IsDir() {
			continue
		}
		lname := strings.ToLower(f.Name)
		named := strings.HasSuffix(lname, ".pkl") || strings.HasSuffix(lname, "debug_pkl")
		inData := strings.Contains("/"+lname, "/data/")
		if !named && inData {
			continue // tensor storages
		}
		m, n, err := op.member(f, op.o.MaxPickle)
		if err != nil {
			if named {
				op.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: "(unchecked member)", Where: f.Name, Offset: -1,
					Detail: "could not be checked: the archive member " + f.Name + ", which torch may read as a pickle, cannot be read by ckptview (" + strings.TrimPrefix(errorText(err), "loader: ") + "); what it would run is unknown"})
			}
			continue
		}
		if !named {
			var head [2]byte
			if k, _ := m.ReadAt(head[:], 0); k < 2 || head[0] != 0x80 || head[1] > 5 {
				continue
			}
		}
		_, _, _ = op.scanOne(m, 0, n, f.Name)
	}
}

func errorText(err error) string {
	var le *Error
	if errors.As(err, &le) {
		return le.Msg
	}
	return err.Error()
}

// readMember reads a whole (small) archive member, at most limit bytes.
func (op *opener) readMember(f *zip.File, limit int64) ([]byte, error) {
	src, size, err := op.member(f, limit)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if _, err := src.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", f.Name, err), Offset: -1}
	}
	return b, nil
}

// member gives access to an archive member's bytes: a stored member is read in place from
// the file (its CRC is checked by streaming it); a compressed one is inflated into memory,
// at most limit bytes, so a zip bomb is refused without being inflated.
func (op *opener) member(f *zip.File, limit int64) (io.ReaderAt, int64, error) {
	if f.Flags&1 != 0 {
		op.ck.Notes = append(op.ck.Notes, f.Name+" is flagged as encrypted, yet its bytes are read as stored (Python's zipfile would refuse it)")
	}
	if f.Method == zip.Store {
		off, err := f.DataOffset()
		size := int64(f.CompressedSize64)
		if err != nil || off < 0 || size < 0 || off > op.size || size > op.size-off {
			return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s lies outside the file", f.Name), Offset: -1}
		}
		sec := io.NewSectionReader(op.r, off, size)
		h := crc32.NewIEEE()
		if _, err := io.Copy(h, io.NewSectionReader(op.r, off, size)); err == nil && h.Sum32() != f.CRC32 && f.CRC32 != 0 {
			op.ck.Notes = append(op.ck.Notes, f.Name+": CRC-32 checksum mismatch (the member was altered after the archive was written)")
		}
		return sec, size, nil
	}
	if f.Method != zip.Deflate {
		return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s uses compression method %d, which torch never writes", f.Name, f.Method), Offset: -1}
	}
	limit = min(limit, op.o.MaxInflate)
	if f.UncompressedSize64 > uint64(limit) {
		// archive/zip never yields more than the declared size, so this is the whole check
		return nil, 0, &Error{Msg: fmt.Sprintf("archive member %s inflates to %s, more than this server's limit of %s (-max-inflate; a zip bomb?)", f.Name, limitSize(clampInt64(f.UncompressedSize64)), limitSize(limit)), Offset: -1}
	}
	rc, err := f.Open()
	if err != nil {
		return nil, 0, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", f.Name, strings.TrimPrefix(err.Error(), "zip: ")), Offset: -1}
	}
	defer rc.Close()
	buf := make([]byte, f.UncompressedSize64)
	n, err := io.ReadFull(rc, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = fmt.Errorf("member is shorter than its declared %d bytes", f.UncompressedSize64)
	}
	if err == nil { // read to the end, so the checksum is verified
		_, err = rc.Read(make([]byte, 1))
		if err == io.EOF {
			err = nil
		}
	}
	if errors.Is(err, zip.ErrChecksum) {
		op.ck.Notes = append(op.ck.Notes, f.Name+": CRC-32 checksum mismatch (the member was altered after the archive was written)")
		err = nil
	}
	if err != nil {
		return nil, 0, &Error{Msg: fmt.Sprintf("cannot read archive member %s: %v", f.Name, err), Offset: -1}
	}
	return bytes.NewReader(buf[:n]), int64(n), nil
}

// openPlainZip opens a zip that is not a torch archive: each member that is a pickle is
// scanned and shown under its name.
func (op *opener) openPlainZip(zr *zip.Reader) error {
	if isNPZ(zr) {
		return op.openNPZ(zr)
	}
	op.ck.Format = "zip"
	root := &pyDict{typeName: "zip archive"}
	var names, encrypted []string
	npy := 0
	for _, f := range zr.File {
		names = append(names, f.Name)
		if strings.HasSuffix(f.Name, ".npy") {
			npy++
		}
		if f.FileInfo().IsDir() {
			continue
		}
		src, n, err := op.member(f, op.o.MaxPickle)
		if err != nil {
			continue
		}
		head := make([]byte, min(n, 16))
		_, _ = src.ReadAt(head, 0)
		if !looksLikePickle(head) {
			if f.Flags&1 != 0 {
				encrypted = append(encrypted, f.Name)
			}
			continue
		}
		s, _, err := op.scanOne(src, 0, n, f.Name)
		if err != nil {
			return err
		}
		v, err := op.unpickle(s, op.newCtx(src), f.Name)
		if err != nil {
			// scanned for findings already; say why it cannot be shown
			op.ck.Notes = append(op.ck.Notes, fmt.Sprintf("%s: %v", f.Name, strings.TrimPrefix(err.Error(), "loader: ")))
			v = "<not shown: " + strings.TrimPrefix(err.Error(), "loader: ") + ">"
		}
		root.Set(f.Name, v)
	}
	if len(root.entries) == 0 {
		switch {
		case len(encrypted) > 0:
			return &Error{Msg: "zip archive with encrypted members (" + strings.Join(encrypted, ", ") + "); encrypted archives cannot be read", Offset: -1}
		}
		sort.Strings(names)
		if len(names) > 8 {
			names = append(names[:8], "…")
		}
		return &Error{Msg: "zip archive with no checkpoint or pickle inside (members: " + strings.Join(names, ", ") + ")", Offset: -1}
	}
	return op.build(root)
}

// isNPZ says whether a zip is what numpy.savez writes: every member is a .npy file (numpy
// reads any zip as an NpzFile; this is the test for opening one as such rather than as a zip
// of pickles).
func isNPZ(zr *zip.Reader) bool {
	n := 0
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		if !strings.HasSuffix(f.Name, ".npy") {
			return false
		}
		n++
	}
	return n > 0
}

func looksLikePickle(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	if b[0] == 0x80 && b[1] <= 5 {
		return true
	}
	return strings.IndexByte("(c]}lNV", b[0]) >= 0
}
