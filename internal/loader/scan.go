package loader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// The scanner walks every opcode of a pickle before gopickle sees it. It
//   - checks every declared length against the bytes that remain and caps depth, memo,
//     op count and integer digits, so gopickle never allocates what the file claims;
//   - runs a small symbolic stack machine that resolves every global (including names
//     built from memo, STACK_GLOBAL and module attributes overwritten by BUILD) and every
//     call made on one, which is where findings come from;
//   - writes a rewritten pickle for gopickle: large byte payloads become references to
//     their place in the file (tensors and arrays stay lazy), text opcodes become their
//     binary forms with Python's decoding, and globals are routed to our FindClass.

// symbolic value kinds
type svKind uint8

const (
	svOther svKind = iota
	svStr
	svBytes
	svInt
	svFloat
	svNone
	svBool
	svTuple
	svList
	svDict
	svSet
	svGlobal
	svCall
	svPersid
)

// sv is a symbolic value on the scanner's stack: enough to name globals and print calls.
type sv struct {
	mod    string // a global's module and name, as resolved
	name   string
	kind   svKind
	s      string // str text, int digits, float repr, global name, bytes preview
	items  []*sv  // tuple items, call args (first few)
	more   int    // items not kept
	callee *sv
	fidx   int // finding this call wrote its detail into, -1 if none
	// raw holds a bytes value's content when it is small, and dataOff/dataLen locate a
	// large one in the source, so that a pickle passed to pickle.loads can be scanned too.
	raw              []byte
	dataOff, dataLen int64
	setstate         *sv // a __setstate__ planted on this instance by an earlier BUILD
	// state and attrs are what BUILDs gave an instance whose attributes the scanner needs
	// (joblib's array wrappers, numpy dtypes); opaque is set when some could not be read.
	state  *sv
	attrs  map[string]*sv
	opaque bool
}

// setstateOf is the __setstate__ a BUILD on v would call, when the file planted one on the
// instance or on its class.
func (s *scanner) setstateOf(v *sv) *sv {
	if v.setstate != nil {
		return v.setstate
	}
	if v.kind == svCall && v.callee != nil && v.callee.kind == svGlobal {
		if o, ok := s.overrides[v.callee.s+".__setstate__"]; ok {
			return o
		}
	}
	return nil
}

var (
	svNoneVal  = &sv{kind: svNone, fidx: -1}
	svTrueVal  = &sv{kind: svBool, s: "True", fidx: -1}
	svFalseVal = &sv{kind: svBool, s: "False", fidx: -1}
)

// How many items the scanner keeps of a container, for printing calls and for evaluating
// joblib's wrappers and numpy dtypes: lists and sets are only printed, tuples may be shapes
// and dtype states, dicts may be an object's state.
const (
	svKeepItems = 8
	svKeepTuple = 32
	svKeepPairs = 32
)

func (v *sv) repr(budget int) string {
	if v == nil {
		return "?"
	}
	var b strings.Builder
	v.write(&b, budget, 0)
	s := b.String()
	if len(s) > budget {
		s = s[:budget] + "…"
	}
	return s
}

func (v *sv) write(b *strings.Builder, budget, depth int) {
	if b.Len() > budget || depth > 8 {
		b.WriteString("…")
		return
	}
	switch v.kind {
	case svStr:
		b.WriteString(pyQuote(v.s))
	case svBytes:
		if v.raw != nil {
			b.WriteString(pyrepr.Bytes(v.raw, budget))
		} else {
			b.WriteString("b" + pyQuote(v.s))
		}
	case svInt, svFloat, svBool:
		b.WriteString(v.s)
	case svNone:
		b.WriteString("None")
	case svGlobal:
		b.WriteString(v.s)
	case svTuple, svList, svSet:
		open, close := "(", ")"
		if v.kind == svList {
			open, close = "[", "]"
		} else if v.kind == svSet {
			open, close = "{", "}"
		}
		b.WriteString(open)
		writeItems(b, v.items, v.more, budget, depth)
		if v.kind == svTuple && len(v.items) == 1 && v.more == 0 {
			b.WriteString(",")
		}
		b.WriteString(close)
	case svDict:
		b.WriteString("{")
		for i := 0; i+1 < len(v.items); i += 2 {
			if i > 0 {
				b.WriteString(", ")
			}
			v.items[i].write(b, budget, depth+1)
			b.WriteString(": ")
			v.items[i+1].write(b, budget, depth+1)
		}
		if v.more > 0 {
			b.WriteString(", …")
		}
		b.WriteString("}")
	case svCall:
		v.callee.write(b, budget, depth+1)
		b.WriteString("(")
		writeItems(b, v.items, v.more, budget, depth)
		b.WriteString(")")
	case svPersid:
		b.WriteString("<persistent id>")
	default:
		if v.s != "" {
			b.WriteString(v.s)
		} else {
			b.WriteString("<object>")
		}
	}
}

func writeItems(b *strings.Builder, items []*sv, more, budget, depth int) {
	for i, it := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		it.write(b, budget, depth+1)
	}
	if more > 0 {
		b.WriteString(", …")
	}
}

// pyQuote renders s like Python's repr of a str.
func pyQuote(s string) string { return pyrepr.Quote(s) }

// addItems records appended items on a list or set, for printing calls.
func (v *sv) addItems(items []*sv) {
	if v.kind != svList && v.kind != svSet {
		return
	}
	for _, it := range items {
		if len(v.items) < svKeepItems {
			v.items = append(v.items, it)
		} else {
			v.more++
		}
	}
}

// findingSet collects findings once each. Warnings are capped (the rest are counted); a
// danger is never dropped: past maxDangers distinct ones, further calls of a global already
// reported are counted on its first finding, and a new dangerous global is still listed.
type findingSet struct {
	list     []ckpt.Finding
	seen     map[string]int
	warnings int
	// droppedWarnings counts the warnings past maxWarnings; moreCalls the dangerous calls
	// past maxDangers, by the index of their global's first finding
	droppedWarnings int
	dangers         int
	firstOf         map[string]int
	moreCalls       map[int]int
}

const (
	maxWarnings = 500
	maxDangers  = 10_000
)

func (f *findingSet) add(fd ckpt.Finding) int {
	if f.seen == nil {
		f.seen, f.firstOf, f.moreCalls = map[string]int{}, map[string]int{}, map[int]int{}
	}
	key := string(fd.Severity) + "\x00" + fd.Global + "\x00" + fd.Detail
	if i, ok := f.seen[key]; ok {
		return i
	}
	switch fd.Severity {
	case ckpt.SeverityWarning:
		if f.warnings >= maxWarnings {
			f.droppedWarnings++
			return -1
		}
		f.warnings++
	case ckpt.SeverityDanger:
		if first, ok := f.firstOf[fd.Global]; ok && f.dangers >= maxDangers {
			f.moreCalls[first]++
			return first
		}
		f.dangers++
	}
	if _, ok := f.firstOf[fd.Global]; !ok && fd.Severity == ckpt.SeverityDanger {
		f.firstOf[fd.Global] = len(f.list)
	}
	f.list = append(f.list, fd)
	f.seen[key] = len(f.list) - 1
	return len(f.list) - 1
}

// scanner state for one pickle.
type scanner struct {
	r         *seqReader
	o         Options
	where     string
	start     int64
	stack     []*sv
	meta      [][]*sv
	memo      memoTable
	slab      []sv // where pushNew allocates
	out       []byte
	fs        *findingSet
	refFinds  map[string]int // global -> finding index of its "imports" finding
	overrides map[string]*sv
	nonce     string
	ops       *int
	lazyMin   int64
	notes     []string
	proto     int
	depth     int // pickles nested through pickle.loads
	// mode is the consumer whose rules the scan follows; sawWrapper records, in modePickle,
	// a BUILD of a joblib array wrapper (joblib.load would read array data there, while
	// pickle.load reads on as opcodes).
	mode       scanMode
	sawWrapper bool
	// objPickles holds the rewritten pickles of object arrays in joblib's array data, which
	// the unpickler reads through their markers.
	objPickles     [][]byte
	objPickleBytes int64
	// wo follows the pickle for torch.load(weights_only=True)'s verdict (torch files only)
	wo *woState
	// puts locates every memo write of out, and read marks the memo indexes a GET reads,
	// for dropDeadPuts; putsOff is set when out grew past what puts can locate.
	puts    []memoWrite
	read    memoRead
	putsOff bool
	// py2Noted is set once a Python 2 str the default decoding refuses was noted, and
	// py2Read counts the bytes of large ones read to judge them (py2Str)
	py2Noted bool
	py2Read  int64
	// reader is the program that would unpickle this pickle when it is not pickle.load
	// or torch.load: "joblib.load", "numpy.load"
	reader string
}

// py2ReadMax bounds what one pickle's large Python 2 strs are read for, to judge them.
const py2ReadMax = 4 << 20

// wholeRunes is b without the start of a UTF-8 character cut at its end.
func wholeRunes(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

// py2Str notes the first Python 2 str (STRING, BINSTRING, SHORT_BINSTRING) that the
// loader's default decoding of such strs refuses: pickle.load's encoding="ASCII" any
// byte over 0x7f, torch.load's encoding="utf-8" (which it passes unless told otherwise)
// bytes that are not UTF-8. Python stops there with UnicodeDecodeError unless the caller
// passes another encoding, as Python 2 pickles need; the tree shows the bytes as text.
func (s *scanner) py2Str(off int64, b []byte) {
	if s.py2Noted {
		return
	}
	torch := s.wo != nil
	bad := false
	if torch {
		bad = !utf8.Valid(b)
	} else {
		for _, c := range b {
			if c >= utf8.RuneSelf {
				bad = true
				break
			}
		}
	}
	if !bad {
		return
	}
	s.py2Noted = true
	at := fmt.Sprintf("%s holds a Python 2 str", s.where)
	switch {
	case torch:
		s.notes = append(s.notes, fmt.Sprintf("%s that is not UTF-8 (at byte %d): torch.load, which decodes such strs with encoding='utf-8' unless told otherwise, stops there with UnicodeDecodeError; torch.load(f, encoding='latin1') or encoding='bytes' reads it", at, off-s.start))
	case s.reader == "joblib.load":
		s.notes = append(s.notes, fmt.Sprintf("%s with bytes over 0x7f (at byte %d), as joblib files written by Python 2 do: joblib.load, whose unpickler decodes such strs as ASCII and takes no encoding, stops there (ValueError: \"You may be trying to read with python 3 a joblib pickle generated with python 2\")", at, off-s.start))
	case s.reader == "numpy.load":
		s.notes = append(s.notes, fmt.Sprintf("%s with bytes over 0x7f (at byte %d): numpy.load(f, allow_pickle=True), which decodes such strs with encoding='ASCII' unless told otherwise, stops there with UnicodeError (\"Unpickling a python object failed\"); numpy.load(f, allow_pickle=True, encoding='latin1') or encoding='bytes' reads it", at, off-s.start))
	default:
		s.notes = append(s.notes, fmt.Sprintf("%s with bytes over 0x7f (at byte %d): pickle.load, which decodes such strs with encoding='ASCII' unless told otherwise, stops there with UnicodeDecodeError; pickle.load(f, encoding='latin1') (what numpy advises for Python 2 pickles) or encoding='bytes' reads it", at, off-s.start))
	}
}

type scanError struct {
	msg string
	off int64
	// limit marks a refusal at one of the server's limits: the file may be fine, and the
	// message names the limit and its flag.
	limit bool
}

func (e *scanError) Error() string { return e.msg }

// overLimit is fail for a pickle over one of the limits: not malformed, too big for this
// server, so the message (which names the limit and its flag) is never called malformed.
func (s *scanner) overLimit(off int64, format string, args ...any) error {
	return &scanError{msg: fmt.Sprintf(format, args...), off: off, limit: true}
}

// thousands writes a count with comma separators, as the pages do (views.Thousands; the
// loader does not import the views): 100,000 memo entries, at byte 789,209.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	var b strings.Builder
	b.WriteString(sign)
	lead := len(s) % 3
	if lead == 0 {
		lead = 3
	}
	b.WriteString(s[:lead])
	for i := lead; i < len(s); i += 3 {
		b.WriteByte(',')
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// humanSize writes a size in bytes with SI units and three significant digits, as the
// pages do (views.HumanBytes): 512 B, 1.50 MB, 134 MB.
func humanSize(n int64) string {
	if n < 0 {
		return "-" + humanSize(-n)
	}
	if n < 1000 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	f, u := float64(n), -1
	for f >= 999.5 && u < len(units)-1 {
		f /= 1000
		u++
	}
	prec := 2
	switch {
	case f >= 99.95:
		prec = 0
	case f >= 9.995:
		prec = 1
	}
	return strconv.FormatFloat(f, 'f', prec, 64) + " " + units[u]
}

// limitSize writes a size a limit names, human and exact: "1.50 MB (1,500,000 bytes)",
// so that a limit set in MiB or in bytes reads back as what was set; "512 bytes" under
// a kilobyte.
func limitSize(n int64) string {
	if n > -1000 && n < 1000 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	return humanSize(n) + " (" + thousands(n) + " bytes)"
}

// clampInt64 is a size from a zip header, which may claim more than an int64 holds.
func clampInt64(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}

func (s *scanner) fail(off int64, format string, args ...any) error {
	return &scanError{msg: fmt.Sprintf(format, args...), off: off}
}

func (s *scanner) push(v *sv) { s.stack = append(s.stack, v) }

// pushNew pushes a new symbolic value, allocated from the scanner's slab: a pickle of a
// million values makes a million of them, and one allocation per svSlab saves the
// allocator and the collector most of that work.
func (s *scanner) pushNew(v sv) {
	if len(s.slab) == 0 {
		s.slab = make([]sv, svSlab)
	}
	p := &s.slab[0]
	*p = v
	s.slab = s.slab[1:]
	s.push(p)
}

// svSlab is how many symbolic values the scanner allocates at once.
const svSlab = 256

func (s *scanner) pop(off int64, op string) (*sv, error) {
	if len(s.stack) == 0 {
		return nil, s.fail(off, "%s needs a value but the pickle stack is empty (stack underflow)", op)
	}
	v := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	return v, nil
}

func (s *scanner) top(off int64, op string) (*sv, error) {
	if len(s.stack) == 0 {
		return nil, s.fail(off, "%s needs a value but the pickle stack is empty (stack underflow)", op)
	}
	return s.stack[len(s.stack)-1], nil
}

func (s *scanner) popMark(off int64, op string) ([]*sv, error) {
	if len(s.meta) == 0 {
		return nil, s.fail(off, "%s without a matching MARK", op)
	}
	items := s.stack
	s.stack = s.meta[len(s.meta)-1]
	s.meta = s.meta[:len(s.meta)-1]
	return items, nil
}

func keep(items []*sv) ([]*sv, int) { return keepN(items, svKeepItems) }

func keepN(items []*sv, n int) ([]*sv, int) {
	if len(items) > n {
		return append([]*sv(nil), items[:n]...), len(items) - n
	}
	return append([]*sv(nil), items...), 0
}

func (s *scanner) emit(b ...byte) error {
	s.out = append(s.out, b...)
	if int64(len(s.out)) > s.o.MaxPickle {
		return s.overLimit(s.r.pos, "the pickle holds more than %s of values besides its large byte strings, this server's limit (-max-pickle)", limitSize(s.o.MaxPickle))
	}
	return nil
}

func (s *scanner) emitStr(op byte, str string) error {
	var hdr [5]byte
	hdr[0] = op
	binary.LittleEndian.PutUint32(hdr[1:], uint32(len(str)))
	if err := s.emit(hdr[:]...); err != nil {
		return err
	}
	return s.emit([]byte(str)...)
}

func (s *scanner) emitGlobal(op byte, module, name string) error {
	if err := s.emit(op); err != nil {
		return err
	}
	if err := s.emit([]byte(globalPrefix + module + "\n")...); err != nil {
		return err
	}
	return s.emit([]byte(name + "\n")...)
}

// globalPrefix routes every global to our FindClass (gopickle answers a few names itself).
const globalPrefix = "="

// lazyMarker is the persistent id that stands for a payload left in the file.
func (s *scanner) lazyMarker(kind byte, off, n int64) string {
	return fmt.Sprintf("\x00ckptview:%s:%c:%d:%d", s.nonce, kind, off, n)
}

func (s *scanner) global(off int64, module, name string) *sv {
	full := canonicalGlobal(module, name)
	if o, ok := s.overrides[full]; ok {
		return o
	}
	v := &sv{kind: svGlobal, s: module + "." + name, mod: module, name: name, fidx: -1}
	switch classifyGlobal(module, name) {
	case globalDanger:
		if _, ok := s.refFinds[v.s]; !ok {
			s.refFinds[v.s] = s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: v.s, Where: s.where, Offset: off - s.start,
				Detail: dangerWhy(full)})
		}
	case globalUnknown:
		if _, ok := s.refFinds[v.s]; !ok {
			s.refFinds[v.s] = s.fs.add(ckpt.Finding{Severity: ckpt.SeverityWarning, Global: v.s, Where: s.where, Offset: off - s.start,
				Detail: "imports " + v.s + ", which is not on the allowlist; shown as an opaque object and never called"})
		}
	}
	return v
}

// dangerWhy describes a dangerous global that is referenced but not (yet) seen called.
func dangerWhy(full string) string {
	return "imports " + full + ", which can run code or reach the system"
}

// rootGlobal is the global at the start of a call chain.
func rootGlobal(v *sv) *sv {
	for v != nil && v.kind == svCall {
		v = v.callee
	}
	return v
}

// call records callee(args) and, when the callee is dangerous, the call a reviewer must see.
func (s *scanner) call(off int64, callee *sv, args []*sv) *sv {
	items, more := keep(args)
	c := &sv{kind: svCall, callee: callee, items: items, more: more, fidx: -1}
	root := rootGlobal(callee)
	if root == nil || root.kind != svGlobal {
		return c
	}
	full := root.s
	if callee == root {
		switch canonicalGlobal(root.mod, root.name) {
		case "_codecs.encode":
			// protocol-2 bytes: keep the value, a nested pickle may be hiding in it
			if len(args) > 0 && args[0].kind == svStr {
				c.raw = latin1(args[0].s)
			}
		case "pickle.loads", "_pickle.loads", "cPickle.loads", "pickle._loads", "dill.loads",
			"cloudpickle.loads", "joblib.load", "numpy.loads", "torch.load", "torch.serialization.load":
			if len(args) > 0 {
				s.nested(off, full, args[0])
			}
		case loadFromBytes:
			// torch.load of the bytes: harmless exactly when the torch file in them is
			why := "it is not called with one argument"
			if len(args) == 1 {
				why = s.nestedTorch(off, full, args[0])
			}
			if why != "" {
				c.fidx = s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: root.s, Where: s.where, Offset: off - s.start,
					Detail: "calls " + c.repr(400) + " when unpickled, which runs torch.load(weights_only=False) on those bytes; the torch file in them could not be checked: " + why,
					Call:   callData(c)})
			}
		}
	}
	if i, ok := s.refFinds[full]; ok && i >= 0 && s.fs.list[i].Severity == ckpt.SeverityDanger {
		detail := "calls " + c.repr(400)
		switch {
		case callee.kind == svCall && callee.fidx >= 0:
			// a chained call (attrgetter('system')(os)('ls')): extend the finding
			s.fs.list[callee.fidx].Detail = detail
			s.fs.list[callee.fidx].Call = callData(c)
			c.fidx = callee.fidx
		case strings.HasPrefix(s.fs.list[i].Detail, "imports "):
			s.fs.list[i].Detail = detail
			s.fs.list[i].Offset = off - s.start
			s.fs.list[i].Call = callData(c)
			c.fidx = i
		default:
			c.fidx = s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: full, Where: s.where, Offset: off - s.start, Detail: detail, Call: callData(c)})
		}
	}
	return c
}

// judge applies the policy "judge calls, not names": a global that the pickle calls with
// arguments (REDUCE, INST/OBJ, NEWOBJ_EX, a planted __setstate__) runs whatever code it is,
// so a global that is neither one of the stand-ins nor a data class ckptview has vetted is a
// danger when it is called, not a mere unknown import. Objects rebuilt the standard way
// (copyreg._reconstructor, NEWOBJ: the class's __new__ and its state) stay warnings.
func (s *scanner) judge(off int64, callee *sv, args []*sv, how string) {
	if callee == nil || callee.kind != svGlobal {
		return
	}
	full := canonicalGlobal(callee.mod, callee.name)
	if classifyGlobal(callee.mod, callee.name) != globalUnknown || vettedCalls[full] {
		return
	}
	c := &sv{kind: svCall, callee: callee, fidx: -1}
	c.items, c.more = keep(args)
	s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: callee.s, Where: s.where, Offset: off - s.start,
		Detail: "calls " + c.repr(400) + " " + how + "when unpickled: code this viewer has not vetted (not a data class it knows), which Python would run",
		Call:   callData(c)})
}

// nestedTorchZip scans a torch zip archive handed to _load_from_bytes by the rules of
// torch's zip reader, as the uploaded file would be (openZip): its findings are the file's,
// placed in it, and what could not be read through is returned.
func (s *scanner) nestedTorchZip(off int64, fn string, r io.ReaderAt, size int64) string {
	sub := newOpener(r, size, s.o)
	sub.nestDepth, sub.ops = s.depth+1, *s.ops
	err := sub.openZip()
	*s.ops = sub.ops
	sub.ck.Close()
	in := fmt.Sprintf(" in the torch zip archive passed to %s at byte %d of %s", fn, off-s.start, s.where)
	for _, f := range sub.fs.list {
		f.Where += in
		s.fs.add(f)
	}
	for _, n := range sub.ck.Notes {
		s.notes = append(s.notes, n+in)
	}
	if err != nil {
		return "the zip archive" + in + ": " + errorText(err)
	}
	return ""
}

// loadFromBytes is what pickling a torch storage with pickle (not torch.save) calls to
// rebuild it: torch.load(io.BytesIO(b), weights_only=False) of the legacy torch file that
// StorageBase.__reduce__ wrote with torch.save(storage, _use_new_zipfile_serialization=False).
const loadFromBytes = "torch.storage._load_from_bytes"

// nestedTorch scans the bytes handed to torch.storage._load_from_bytes as torch.load reads
// an in-memory file: a zip archive if they start with a zip local header (_is_zipfile),
// otherwise the legacy format's pickles one after the other (magic number, protocol,
// sys_info, the object, the storage keys; the storages' raw bytes follow). A BytesIO has no
// fileno, so the tar format is never tried. It returns why the bytes could not be checked,
// or "" when every pickle torch would read was scanned, its findings being the file's.
func (s *scanner) nestedTorch(off int64, fn string, arg *sv) string {
	src, start, end, ok := s.bytesArg(arg)
	if !ok {
		return "its argument is not bytes ckptview can read (" + arg.repr(60) + ")"
	}
	if s.depth >= maxNesting {
		return fmt.Sprintf("it is nested more than %d deep in torch files and pickles, more than ckptview follows", maxNesting)
	}
	if isZipLocal(src, start) {
		return s.nestedTorchZip(off, fn, io.NewSectionReader(src, start, end-start), end-start)
	}
	pos := start
	for _, what := range []string{"magic-number", "protocol-version", "sys_info", "main", "storage-keys"} {
		sub := s.subScanner(src, start, pos, end,
			fmt.Sprintf("the %s pickle of the torch file passed to %s at byte %d of %s", what, fn, off-s.start, s.where))
		if _, err := sub.run(); err != nil {
			return sub.where + ": " + err.Error()
		}
		s.notes = append(s.notes, sub.notes...)
		pos = sub.r.pos
	}
	return ""
}

// judgeAppend is judge for APPEND and APPENDS on an object that is no list: pickle calls
// its append or extend method, whatever it does.
func (s *scanner) judgeAppend(off int64, target *sv, items []*sv) {
	if target.kind != svCall {
		return
	}
	cls := instanceClass(target)
	if cls == "" || vettedCalls[cls] || allowlisted(cls) {
		return
	}
	if rg := rootGlobal(target); rg == nil || rg.kind != svGlobal {
		return
	}
	mod, name := splitGlobal(cls)
	if classifyGlobal(mod, name) != globalUnknown {
		return
	}
	c := &sv{kind: svCall, callee: &sv{kind: svGlobal, s: cls + ".append", fidx: -1}, fidx: -1}
	c.items, c.more = keep(items)
	s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: cls, Where: s.where, Offset: off - s.start,
		Detail: "calls " + c.repr(400) + " on an instance of " + cls + " when unpickled (APPEND calls the object's own append/extend): code this viewer has not vetted, which Python would run",
		Call:   callData(c)})
}

// callData is a symbolic call as a Finding's Call.
func callData(c *sv) *ckpt.Call {
	out := &ckpt.Call{Callable: c.callee.repr(200), More: c.more}
	for _, a := range c.items {
		out.Args = append(out.Args, ckpt.CallArg{Kind: svKindName(a), Repr: a.repr(300)})
	}
	return out
}

func svKindName(v *sv) string {
	switch v.kind {
	case svStr:
		return "str"
	case svBytes:
		return "bytes"
	case svInt:
		return "int"
	case svFloat:
		return "float"
	case svNone:
		return "none"
	case svBool:
		return "bool"
	case svTuple:
		return "tuple"
	case svList:
		return "list"
	case svDict:
		return "dict"
	case svSet:
		return "set"
	case svGlobal:
		return "global"
	case svCall:
		return "call"
	case svPersid:
		return "persistent id"
	}
	return "object"
}

func splitGlobal(full string) (string, string) {
	if i := strings.LastIndexByte(full, '.'); i > 0 {
		return full[:i], full[i+1:]
	}
	return full, ""
}

// maxNesting is how deep pickles and torch files handed to loaders inside a pickle are
// followed.
const maxNesting = 8

// bytesArg is where the bytes of a value a pickle hands to a loader are: in memory, or (a
// large byte string left in place) in the file; ok is false for anything else.
func (s *scanner) bytesArg(arg *sv) (src io.ReaderAt, start, end int64, ok bool) {
	switch {
	case arg.raw != nil:
		return bytes.NewReader(arg.raw), 0, int64(len(arg.raw)), true
	case arg.dataLen > 0:
		return s.r.r, arg.dataOff, arg.dataOff + arg.dataLen, true
	}
	return nil, 0, 0, false
}

// subScanner scans the pickle at pos of the bytes [start, end) of src, nested in this one:
// offsets count from start, findings and the opcode budget are shared.
func (s *scanner) subScanner(src io.ReaderAt, start, pos, end int64, where string) *scanner {
	return &scanner{r: newSeqReader(src, pos, end), o: s.o, start: start, fs: s.fs, nonce: s.nonce,
		ops: s.ops, lazyMin: s.lazyMin, depth: s.depth + 1, where: where}
}

// isZipLocal says whether src holds a zip local file header at off: torch's _is_zipfile.
func isZipLocal(src io.ReaderAt, off int64) bool {
	var head [4]byte
	n, _ := src.ReadAt(head[:], off)
	return n == 4 && string(head[:]) == "PK\x03\x04"
}

// nested scans a pickle handed to pickle.loads and the like: its findings are the file's.
func (s *scanner) nested(off int64, fn string, arg *sv) {
	src, start, end, ok := s.bytesArg(arg)
	if !ok || s.depth >= maxNesting {
		return
	}
	sub := s.subScanner(src, start, start, end, fmt.Sprintf("the pickle passed to %s at byte %d of %s", fn, off-s.start, s.where))
	if _, err := sub.run(); err != nil {
		s.notes = append(s.notes, sub.where+": "+err.Error())
	}
	s.notes = append(s.notes, sub.notes...)
}

// scanPickle scans one pickle starting at r.pos and returns the rewritten stream.
func (s *scanner) run() (result *sv, err error) {
	s.memo = memoTable{}
	if s.refFinds == nil {
		s.refFinds = map[string]int{}
	}
	if s.overrides == nil {
		s.overrides = map[string]*sv{}
	}
	r := s.r
	for {
		off := r.pos
		*s.ops++
		if *s.ops&0xffff == 0 && s.o.pastDeadline() {
			return nil, s.o.timeError()
		}
		if *s.ops > s.o.MaxOps {
			return nil, s.overLimit(off, "more than %s pickle opcodes, this server's limit (-max-pickle-ops)", thousands(int64(s.o.MaxOps)))
		}
		op, err := r.readByte()
		if err == errFrame {
			return nil, s.fail(off, "an opcode runs past the end of its frame (Python's pickle module refuses this: pickle exhausted before end of frame)")
		}
		if err != nil {
			return nil, s.fail(off, "pickle ends before its STOP opcode")
		}
		if s.wo != nil {
			s.woPre(op)
		}
		if err := s.step(off, op); err != nil {
			if err == errStop {
				v, perr := s.pop(off, "STOP")
				if perr != nil {
					return nil, perr
				}
				if n := len(s.stack) + len(s.meta); n > 0 {
					s.notes = append(s.notes, fmt.Sprintf("%s: %d value(s) left on the pickle stack after STOP; they are not part of the returned object, but whatever made them ran", s.where, n))
				}
				if err := s.emit('.'); err != nil {
					return nil, err
				}
				return v, nil
			}
			if err == errShort {
				return nil, s.fail(off, "opcode 0x%02x at the end of the data is cut short", op)
			}
			if err == errFrame {
				return nil, s.fail(off, "opcode 0x%02x runs past the end of its frame (Python's pickle module refuses this: pickle exhausted before end of frame)", op)
			}
			return nil, err
		}
	}
}

var errStop = fmt.Errorf("stop")

func (s *scanner) readLine(off int64, what string, max int) (string, error) {
	l, ok, err := s.r.line(max)
	if err != nil {
		return "", s.fail(off, "%s: pickle ends inside a text argument", what)
	}
	if !ok {
		return "", s.fail(off, "%s: text argument longer than %d bytes", what, max)
	}
	return string(l), nil
}

func (s *scanner) u32(off int64, op string) (int64, error) {
	b, err := s.r.read(4)
	if err != nil {
		return 0, s.fail(off, "%s: argument cut short", op)
	}
	return int64(binary.LittleEndian.Uint32(b)), nil
}

func (s *scanner) u64(off int64, op string) (int64, error) {
	b, err := s.r.read(8)
	if err != nil {
		return 0, s.fail(off, "%s: argument cut short", op)
	}
	u := binary.LittleEndian.Uint64(b)
	if u > math.MaxInt64 {
		return 0, s.fail(off, "%s declares %d bytes but only %d remain", op, u, s.r.remaining())
	}
	return int64(u), nil
}

func (s *scanner) checkLen(off int64, op string, n int64) error {
	if n < 0 {
		return s.fail(off, "%s declares a negative length (%d)", op, n)
	}
	if n > s.r.remaining() {
		return s.fail(off, "%s declares %d bytes but only %d remain", op, n, s.r.remaining())
	}
	return nil
}

// payload handles a counted bytes-like argument of n bytes: small ones are copied into the
// rewritten stream, large ones left in the file behind a marker.
func (s *scanner) payload(off int64, op string, n int64, kind byte) error {
	if err := s.checkLen(off, op, n); err != nil {
		return err
	}
	at := s.r.pos
	if n >= s.lazyMin {
		if err := s.r.skip(n); err != nil {
			return s.fail(off, "%s cut short", op)
		}
		if kind == 's' && !s.py2Noted && s.py2Read < py2ReadMax {
			// a large Python 2 str (the data of a numpy array pickled by Python 2): its
			// first MiB decides, which is where such bytes show what they are; a pickle
			// of many that all pass is read for this up to py2ReadMax in all
			head := make([]byte, min(n, 1<<20, py2ReadMax-s.py2Read))
			s.py2Read += int64(len(head))
			if _, err := s.r.r.ReadAt(head, at); err == nil {
				if int64(len(head)) < n {
					head = wholeRunes(head)
				}
				s.py2Str(off, head)
			}
		}
		if err := s.emitStr('X', s.lazyMarker(kind, at, n)); err != nil {
			return err
		}
		s.pushNew(sv{kind: svBytes, s: "…", fidx: -1, dataOff: at, dataLen: n})
		return s.emit('Q')
	}
	b, err := s.r.read(n)
	if err != nil {
		return s.fail(off, "%s cut short", op)
	}
	switch kind {
	case 's': // py2 str: bytes in a str opcode
		s.py2Str(off, b)
		s.pushNew(sv{kind: svStr, s: clip(string(b)), fidx: -1, raw: append([]byte(nil), b...)})
		return s.emitStr('T', string(b))
	case 'a':
		s.pushNew(sv{kind: svBytes, s: clip(string(b)), fidx: -1, raw: append([]byte(nil), b...)})
		var hdr [9]byte
		hdr[0] = 0x96
		binary.LittleEndian.PutUint64(hdr[1:], uint64(n))
		if err := s.emit(hdr[:]...); err != nil {
			return err
		}
		return s.emit(b...)
	default:
		s.pushNew(sv{kind: svBytes, s: clip(string(b)), fidx: -1, raw: append([]byte(nil), b...)})
		return s.emitStr('B', string(b))
	}
}

func clip(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}

func (s *scanner) unicode(off int64, op string, n int64) error {
	if err := s.checkLen(off, op, n); err != nil {
		return err
	}
	if n > math.MaxUint32 {
		return s.fail(off, "%s string of %d bytes is too large to show", op, n)
	}
	b, err := s.r.read(n)
	if err != nil {
		return s.fail(off, "%s cut short", op)
	}
	if bad := pyUTF8Error(b); bad != "" {
		return s.fail(off, "%s string is not UTF-8 (%s): pickle.load stops here with UnicodeDecodeError", op, bad)
	}
	str := string(b)
	s.pushNew(sv{kind: svStr, s: str, fidx: -1})
	return s.emitStr('X', str)
}

func (s *scanner) step(off int64, op byte) error {
	if h := opHandlers[op]; h != nil {
		return h(s, off, op)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// opHandlers is the handler of each opcode: one function per family of opcodes.
var opHandlers [256]func(s *scanner, off int64, op byte) error

func init() {
	for _, f := range []struct {
		handler func(s *scanner, off int64, op byte) error
		ops     []byte
	}{
		{(*scanner).stepStream, []byte{opMark, opStop, opPop, opPopMark, opDup, opFrame, opProto}},
		{(*scanner).stepNumber, []byte{opFloat, opInt, opLong, opBinInt, opBinInt1, opBinInt2, opLong1, opLong4, opNone, opNewTrue, opNewFalse, opBinFloat}},
		{(*scanner).stepText, []byte{opString, opUnicode, opBinString, opShortBinString, opBinBytes, opShortBinBytes, opBinBytes8, opByteArray8, opBinUnicode, opShortBinUnicode, opBinUnicode8}},
		{(*scanner).stepCall, []byte{opPersID, opBinPersID, opReduce, opBuild, opGlobal, opInst, opStackGlobal, opNewObj, opNewObjEx, opObj}},
		{(*scanner).stepContainer, []byte{opAppend, opAppends, opAddItems, opSetItem, opSetItems, opDict, opEmptyDict, opEmptyList, opEmptyTuple, opEmptySet, opList, opTuple, opFrozenSet, opTuple1, opTuple2, opTuple3}},
		{(*scanner).stepMemo, []byte{opGet, opBinGet, opLongBinGet, opPut, opBinPut, opLongBinPut, opMemoize}},
		{(*scanner).stepRefused, []byte{opExt1, opExt2, opExt4, opNextBuffer, opReadOnlyBuffer}},
	} {
		for _, op := range f.ops {
			if opHandlers[op] != nil {
				panic(fmt.Sprintf("opcode 0x%02x has two handlers", op))
			}
			opHandlers[op] = f.handler
		}
	}
}

// stepStream reads the opcodes of the stream and the stack: MARK, STOP, POP, POP_MARK, DUP, FRAME, PROTO.
func (s *scanner) stepStream(off int64, op byte) error {
	r := s.r
	switch op {
	case opMark: // MARK
		if len(s.meta) >= s.o.MaxDepth {
			return s.overLimit(off, "MARKs nested deeper than %s, this server's limit (-max-depth)", thousands(int64(s.o.MaxDepth)))
		}
		s.meta = append(s.meta, s.stack)
		s.stack = nil
		return s.emit(op)
	case opStop:
		return errStop
	case opPop: // POP
		if len(s.stack) == 0 {
			if _, err := s.popMark(off, "POP"); err != nil {
				return err
			}
		} else {
			s.stack = s.stack[:len(s.stack)-1]
		}
		return s.emit(op)
	case opPopMark: // POP_MARK
		if _, err := s.popMark(off, "POP_MARK"); err != nil {
			return err
		}
		return s.emit(op)
	case opDup: // DUP
		v, err := s.top(off, "DUP")
		if err != nil {
			return err
		}
		s.push(v)
		return s.emit(op)
	case opFrame: // FRAME: framing only; validate and drop
		n, err := s.u64(off, "FRAME")
		if err != nil {
			return err
		}
		if err := s.checkLen(off, "FRAME", n); err != nil {
			return err
		}
		if s.mode != modePickle {
			if err := s.r.startFrame(n); err != nil {
				return s.fail(off, "%v (Python's pickle module refuses this)", err)
			}
		}
		return nil
	case opProto: // PROTO
		b, err := r.read(1)
		if err != nil {
			return errShort
		}
		if b[0] > 5 {
			return s.fail(off, "unsupported pickle protocol %d", b[0])
		}
		s.proto = int(b[0])
		return s.emit(op, b[0])
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepNumber reads numbers, None and the booleans.
func (s *scanner) stepNumber(off int64, op byte) error {
	r := s.r
	switch op {
	case opFloat: // FLOAT
		l, err := s.readLine(off, "FLOAT", 64)
		if err != nil {
			return err
		}
		f, perr := strconv.ParseFloat(strings.TrimSpace(l), 64)
		if perr != nil {
			return s.fail(off, "FLOAT argument %q is not a number", clip(l))
		}
		s.pushNew(sv{kind: svFloat, s: strconv.FormatFloat(f, 'g', -1, 64), fidx: -1})
		var b [9]byte
		b[0] = 'G'
		binary.BigEndian.PutUint64(b[1:], math.Float64bits(f))
		return s.emit(b[:]...)
	case opInt, opLong: // INT, LONG (text)
		l, err := s.readLine(off, "INT", s.o.MaxIntChars+3)
		if err != nil {
			return err
		}
		// the value Python reads (cint.go): C's strtol base 0 first for INT in pickle.load,
		// int(line, 0) for LONG and for Python's own unpickler (joblib)
		var v *big.Int
		var ok bool
		switch {
		case op == 'I' && s.mode != modePickle:
			if l == "00" || l == "01" {
				s.push(map[bool]*sv{true: svTrueVal, false: svFalseVal}[l == "01"])
				return s.emit(map[bool]byte{true: 0x88, false: 0x89}[l == "01"])
			}
			v, ok = pyIntBase0(l)
		case op == 'I':
			var isBool, b bool
			v, isBool, b, ok = pickleINT(l)
			if ok && isBool {
				s.push(map[bool]*sv{true: svTrueVal, false: svFalseVal}[b])
				return s.emit(map[bool]byte{true: 0x88, false: 0x89}[b])
			}
		default:
			v, ok = pickleLONG(l)
		}
		if !ok {
			return s.fail(off, "integer argument %q is not a number Python reads", clip(l))
		}
		digits := v.String()
		if len(strings.TrimPrefix(digits, "-")) > s.o.MaxIntChars {
			return s.overLimit(off, "integer with more than %s digits, this server's limit (-max-int-digits)", thousands(int64(s.o.MaxIntChars)))
		}
		s.pushNew(sv{kind: svInt, s: digits, fidx: -1})
		return s.emit([]byte("L" + digits + "\n")...)
	case opBinInt:
		b, err := r.read(4)
		if err != nil {
			return errShort
		}
		s.pushNew(sv{kind: svInt, s: strconv.Itoa(int(int32(binary.LittleEndian.Uint32(b)))), fidx: -1})
		return s.emit(append([]byte{op}, b...)...)
	case opBinInt1:
		b, err := r.read(1)
		if err != nil {
			return errShort
		}
		s.pushNew(sv{kind: svInt, s: strconv.Itoa(int(b[0])), fidx: -1})
		return s.emit(op, b[0])
	case opBinInt2:
		b, err := r.read(2)
		if err != nil {
			return errShort
		}
		s.pushNew(sv{kind: svInt, s: strconv.Itoa(int(binary.LittleEndian.Uint16(b))), fidx: -1})
		return s.emit(op, b[0], b[1])
	case opLong1, opLong4: // LONG1, LONG4
		var n int64
		if op == 0x8a {
			b, err := r.read(1)
			if err != nil {
				return errShort
			}
			n = int64(b[0])
		} else {
			b, err := r.read(4)
			if err != nil {
				return errShort
			}
			n = int64(int32(binary.LittleEndian.Uint32(b)))
		}
		if err := s.checkLen(off, "LONG", n); err != nil {
			return err
		}
		if n > int64(s.o.MaxIntChars) {
			return s.fail(off, "integer of %s bytes is larger than the %s-digit limit", thousands(n), thousands(int64(s.o.MaxIntChars)))
		}
		b, err := r.read(n)
		if err != nil {
			return errShort
		}
		s.pushNew(sv{kind: svInt, s: decodeLongBytes(b), fidx: -1})
		if n == 0 { // 0 to Python; gopickle fails on an empty LONG1, so it gets BININT1 0
			return s.emit(opBinInt1, 0)
		}
		if op == 0x8a {
			return s.emit(append([]byte{op, byte(n)}, b...)...)
		}
		var h [5]byte
		h[0] = op
		binary.LittleEndian.PutUint32(h[1:], uint32(n))
		return s.emit(append(h[:], b...)...)
	case opNone:
		s.push(svNoneVal)
		return s.emit(op)
	case opNewTrue:
		s.push(svTrueVal)
		return s.emit(op)
	case opNewFalse:
		s.push(svFalseVal)
		return s.emit(op)
	case opBinFloat:
		b, err := r.read(8)
		if err != nil {
			return errShort
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(b))
		s.pushNew(sv{kind: svFloat, s: strconv.FormatFloat(f, 'g', -1, 64), fidx: -1})
		return s.emit(append([]byte{op}, b...)...)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepText reads str and bytes values, text and binary.
func (s *scanner) stepText(off int64, op byte) error {
	r := s.r
	switch op {
	case opString: // STRING (quoted, escaped)
		l, err := s.readLine(off, "STRING", int(s.o.MaxPickle))
		if err != nil {
			return err
		}
		str, ok := pyUnquote(l)
		if !ok {
			return s.fail(off, "STRING argument is not a quoted string")
		}
		s.py2Str(off, []byte(str))
		s.pushNew(sv{kind: svStr, s: clip(str), fidx: -1})
		return s.emitStr('T', str)
	case opUnicode: // UNICODE (raw-unicode-escape)
		l, err := s.readLine(off, "UNICODE", int(s.o.MaxPickle))
		if err != nil {
			return err
		}
		str, bad := rawUnicodeUnescape(l)
		if bad != "" {
			return s.fail(off, "UNICODE argument is not raw-unicode-escape text (%s): pickle.load stops here with UnicodeDecodeError", bad)
		}
		s.pushNew(sv{kind: svStr, s: str, fidx: -1})
		return s.emitStr('X', str)
	case opBinString: // BINSTRING
		n, err := s.u32(off, "BINSTRING")
		if err != nil {
			return err
		}
		return s.payload(off, "BINSTRING", int64(int32(n)), 's')
	case opShortBinString: // SHORT_BINSTRING
		b, err := r.read(1)
		if err != nil {
			return errShort
		}
		return s.payload(off, "SHORT_BINSTRING", int64(b[0]), 's')
	case opBinBytes: // BINBYTES
		n, err := s.u32(off, "BINBYTES")
		if err != nil {
			return err
		}
		return s.payload(off, "BINBYTES", n, 'b')
	case opShortBinBytes: // SHORT_BINBYTES
		b, err := r.read(1)
		if err != nil {
			return errShort
		}
		return s.payload(off, "SHORT_BINBYTES", int64(b[0]), 'b')
	case opBinBytes8: // BINBYTES8
		n, err := s.u64(off, "BINBYTES8")
		if err != nil {
			return err
		}
		return s.payload(off, "BINBYTES8", n, 'b')
	case opByteArray8: // BYTEARRAY8
		n, err := s.u64(off, "BYTEARRAY8")
		if err != nil {
			return err
		}
		return s.payload(off, "BYTEARRAY8", n, 'a')
	case opBinUnicode:
		n, err := s.u32(off, "BINUNICODE")
		if err != nil {
			return err
		}
		return s.unicode(off, "BINUNICODE", n)
	case opShortBinUnicode:
		b, err := r.read(1)
		if err != nil {
			return errShort
		}
		return s.unicode(off, "SHORT_BINUNICODE", int64(b[0]))
	case opBinUnicode8:
		n, err := s.u64(off, "BINUNICODE8")
		if err != nil {
			return err
		}
		return s.unicode(off, "BINUNICODE8", n)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepCall reads globals, persistent ids and calls: where findings come from.
func (s *scanner) stepCall(off int64, op byte) error {
	switch op {
	case opPersID: // PERSID
		l, err := s.readLine(off, "PERSID", 4096)
		if err != nil {
			return err
		}
		s.pushNew(sv{kind: svPersid, fidx: -1})
		if err := s.emitStr('X', l); err != nil {
			return err
		}
		return s.emit('Q')
	case opBinPersID: // BINPERSID
		if _, err := s.pop(off, "BINPERSID"); err != nil {
			return err
		}
		s.pushNew(sv{kind: svPersid, fidx: -1})
		return s.emit(op)
	case opReduce: // REDUCE
		args, err := s.pop(off, "REDUCE")
		if err != nil {
			return err
		}
		callee, err := s.pop(off, "REDUCE")
		if err != nil {
			return err
		}
		var items []*sv
		if args.kind == svTuple {
			items = args.items
		} else {
			items = []*sv{args}
		}
		s.push(s.call(off, callee, items))
		s.judge(off, callee, items, "")
		return s.emit(op)
	case opBuild: // BUILD
		state, err := s.pop(off, "BUILD")
		if err != nil {
			return err
		}
		inst, err := s.top(off, "BUILD")
		if err != nil {
			return err
		}
		if set := s.setstateOf(inst); set != nil {
			// BUILD calls a __setstate__ the file planted: the state is its argument
			s.push(s.call(off, set, []*sv{state}))
			s.judge(off, set, []*sv{state}, "as the __setstate__ the file planted ")
			s.stack = s.stack[:len(s.stack)-1]
		}
		if state.kind == svDict {
			for i := 0; i+1 < len(state.items); i += 2 {
				if k := state.items[i]; k.kind == svStr && k.s == "__setstate__" && inst.kind != svGlobal {
					inst.setstate = state.items[i+1]
				}
			}
		}
		s.applyState(inst, state)
		if inst.kind == svGlobal {
			// setstate on a module or class: overwrites what later globals resolve to
			s.fs.add(ckpt.Finding{Severity: ckpt.SeverityDanger, Global: inst.s, Where: s.where, Offset: off - s.start,
				Detail: "overwrites attributes of " + inst.s + " itself with " + state.repr(200) + " (later globals from it resolve to whatever the file chose)"})
			if state.kind == svDict {
				for i := 0; i+1 < len(state.items); i += 2 {
					if state.items[i].kind == svStr {
						s.overrides[inst.s+"."+state.items[i].s] = state.items[i+1]
					}
				}
			}
		}
		if err := s.emit(op); err != nil {
			return err
		}
		if wrapperKind(instanceClass(inst)) == "NumpyArrayWrapper" {
			switch s.mode {
			case modeJoblib:
				return s.joblibArray(off, inst)
			case modePickle:
				if !s.sawWrapper {
					// pickle.load would go on reading joblib's array data as opcodes
					s.sawWrapper = true
					s.where += " as pickle.load reads it (past joblib's first array data)"
				}
			}
		}
		return nil
	case opGlobal, opInst: // GLOBAL, INST
		mod, err := s.readLine(off, "GLOBAL", 1024)
		if err != nil {
			return err
		}
		name, err := s.readLine(off, "GLOBAL", 1024)
		if err != nil {
			return err
		}
		if !utf8.ValidString(mod) || !utf8.ValidString(name) || mod == "" || name == "" {
			return s.fail(off, "GLOBAL names a module or attribute that is not valid text")
		}
		g := s.global(off, mod, name)
		if s.wo != nil {
			s.woGlobal(g)
		}
		if op == 'i' {
			args, err := s.popMark(off, "INST")
			if err != nil {
				return err
			}
			s.push(s.call(off, g, args))
			s.judge(off, g, args, "")
		} else {
			s.push(g)
		}
		if g.kind != svGlobal {
			// resolved through an overwritten module attribute
			return s.fail(off, "GLOBAL %s.%s resolves to a value the file planted with BUILD", mod, name)
		}
		// emit what the name resolves to, which a BUILD on its module may have replaced
		return s.emitGlobal(op, g.mod, g.name)
	case opStackGlobal: // STACK_GLOBAL
		name, err := s.pop(off, "STACK_GLOBAL")
		if err != nil {
			return err
		}
		mod, err := s.pop(off, "STACK_GLOBAL")
		if err != nil {
			return err
		}
		if mod.kind != svStr || name.kind != svStr {
			return s.fail(off, "STACK_GLOBAL needs two strings, got %s and %s (a computed or confused global name)", mod.repr(60), name.repr(60))
		}
		if !utf8.ValidString(mod.s) || !utf8.ValidString(name.s) || mod.s == "" || name.s == "" || strings.ContainsAny(mod.s+name.s, "\n\x00") {
			return s.fail(off, "STACK_GLOBAL names a module or attribute that is not valid text")
		}
		g := s.global(off, mod.s, name.s)
		s.push(g)
		if err := s.emit('0', '0'); err != nil {
			return err
		}
		switch g.kind {
		case svGlobal:
			return s.emitGlobal('c', g.mod, g.name)
		case svStr:
			return s.emitStr('X', g.s)
		default:
			return s.fail(off, "STACK_GLOBAL %s.%s resolves to a value the file planted with BUILD", mod.s, name.s)
		}
	case opNewObj, opNewObjEx: // NEWOBJ, NEWOBJ_EX
		var kw *sv
		if op == 0x92 {
			var err error
			if kw, err = s.pop(off, "NEWOBJ_EX"); err != nil {
				return err
			}
		}
		args, err := s.pop(off, "NEWOBJ")
		if err != nil {
			return err
		}
		cls, err := s.pop(off, "NEWOBJ")
		if err != nil {
			return err
		}
		items := args.items
		if kw != nil && kw.kind == svDict && len(kw.items) > 0 {
			items = append(append([]*sv(nil), items...), kw)
		}
		s.push(s.call(off, cls, items))
		if op == 0x92 {
			s.judge(off, cls, items, "")
		}
		return s.emit(op)
	case opObj: // OBJ
		items, err := s.popMark(off, "OBJ")
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return s.fail(off, "OBJ without a class")
		}
		s.push(s.call(off, items[0], items[1:]))
		s.judge(off, items[0], items[1:], "")
		return s.emit(op)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepContainer reads lists, tuples, dicts and sets.
func (s *scanner) stepContainer(off int64, op byte) error {
	switch op {
	case opAppend: // APPEND
		v, err := s.pop(off, "APPEND")
		if err != nil {
			return err
		}
		l, err := s.top(off, "APPEND")
		if err != nil {
			return err
		}
		s.judgeAppend(off, l, []*sv{v})
		l.addItems([]*sv{v})
		return s.emit(op)
	case opAppends, opAddItems: // APPENDS, ADDITEMS
		items, err := s.popMark(off, "APPENDS")
		if err != nil {
			return err
		}
		l, err := s.top(off, "APPENDS")
		if err != nil {
			return err
		}
		if op == 'e' {
			s.judgeAppend(off, l, items)
		}
		l.addItems(items)
		return s.emit(op)
	case opSetItem: // SETITEM
		v, err := s.pop(off, "SETITEM")
		if err != nil {
			return err
		}
		k, err := s.pop(off, "SETITEM")
		if err != nil {
			return err
		}
		d, err := s.top(off, "SETITEM")
		if err != nil {
			return err
		}
		if d.kind == svDict && len(d.items) < 2*svKeepPairs {
			d.items = append(d.items, k, v)
		} else if d.kind == svDict {
			d.more++
		}
		return s.emit(op)
	case opSetItems: // SETITEMS
		items, err := s.popMark(off, "SETITEMS")
		if err != nil {
			return err
		}
		if len(items)%2 != 0 {
			return s.fail(off, "SETITEMS with an odd number of values")
		}
		d, err := s.top(off, "SETITEMS")
		if err != nil {
			return err
		}
		if d.kind == svDict {
			for i := 0; i+1 < len(items); i += 2 {
				if len(d.items) < 2*svKeepPairs {
					d.items = append(d.items, items[i], items[i+1])
				} else {
					d.more++
				}
			}
		}
		return s.emit(op)
	case opDict: // DICT
		items, err := s.popMark(off, "DICT")
		if err != nil {
			return err
		}
		if len(items)%2 != 0 {
			return s.fail(off, "DICT with an odd number of values")
		}
		kept, more := keepN(items, 2*svKeepPairs)
		s.pushNew(sv{kind: svDict, items: kept, more: more / 2, fidx: -1})
		return s.emit(op)
	case opEmptyDict:
		s.pushNew(sv{kind: svDict, fidx: -1})
		return s.emit(op)
	case opEmptyList:
		s.pushNew(sv{kind: svList, fidx: -1})
		return s.emit(op)
	case opEmptyTuple:
		s.pushNew(sv{kind: svTuple, fidx: -1})
		return s.emit(op)
	case opEmptySet: // EMPTY_SET: built as set() by our stand-in, which keeps insertion order
		s.pushNew(sv{kind: svSet, fidx: -1})
		if err := s.emitGlobal('c', "builtins", "set"); err != nil {
			return err
		}
		return s.emit(')', 'R')
	case opList, opTuple, opFrozenSet: // LIST, TUPLE, FROZENSET
		items, err := s.popMark(off, "LIST/TUPLE")
		if err != nil {
			return err
		}
		kind := svList
		if op == 't' {
			kind = svTuple
		} else if op == 0x91 {
			kind = svSet
		}
		kept, more := keep(items)
		if kind == svTuple {
			kept, more = keepN(items, svKeepTuple)
		}
		s.pushNew(sv{kind: kind, items: kept, more: more, fidx: -1})
		return s.emit(op)
	case opTuple1, opTuple2, opTuple3: // TUPLE1..3
		n := int(op - 0x84)
		if len(s.stack) < n {
			return s.fail(off, "TUPLE%d needs %d values but the stack holds %d (stack underflow)", n, n, len(s.stack))
		}
		items := append([]*sv(nil), s.stack[len(s.stack)-n:]...)
		s.stack = s.stack[:len(s.stack)-n]
		s.pushNew(sv{kind: svTuple, items: items, fidx: -1})
		return s.emit(op)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepMemo reads the memo.
func (s *scanner) stepMemo(off int64, op byte) error {
	switch op {
	case opGet, opBinGet, opLongBinGet: // GET, BINGET, LONG_BINGET
		idx, err := s.memoIndex(off, op)
		if err != nil {
			return err
		}
		v, ok := s.memo.get(idx)
		if !ok {
			return s.fail(off, "memo key %d is read before it is written", idx)
		}
		s.push(v)
		s.read.add(idx)
		return s.emitMemo('j', idx)
	case opPut, opBinPut, opLongBinPut: // PUT, BINPUT, LONG_BINPUT
		idx, err := s.memoIndex(off, op)
		if err != nil {
			return err
		}
		v, err := s.top(off, "PUT")
		if err != nil {
			return err
		}
		if err := s.memoPut(off, idx, v); err != nil {
			return err
		}
		s.notePut(idx)
		return s.emitMemo('r', idx)
	case opMemoize: // MEMOIZE
		v, err := s.top(off, "MEMOIZE")
		if err != nil {
			return err
		}
		idx := int64(s.memo.n)
		if err := s.memoPut(off, idx, v); err != nil {
			return err
		}
		s.notePut(idx)
		return s.emit(op)
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

// stepRefused reads opcodes no checkpoint uses, which the scan refuses.
func (s *scanner) stepRefused(off int64, op byte) error {
	switch op {
	case opExt1, opExt2, opExt4:
		return s.fail(off, "the pickle uses the copyreg extension registry (EXT opcodes), which no checkpoint writer uses and which would import whatever the reading process registered")
	case opNextBuffer, opReadOnlyBuffer:
		return s.fail(off, "the pickle refers to out-of-band buffers (protocol 5) that are not in the file")
	}
	return s.fail(off, "unknown opcode 0x%02x", op)
}

func (s *scanner) memoIndex(off int64, op byte) (int64, error) {
	switch op {
	case 'g', 'p':
		l, err := s.readLine(off, "GET/PUT", 24)
		if err != nil {
			return 0, err
		}
		n, perr := strconv.ParseInt(strings.TrimSpace(l), 10, 64)
		if perr != nil || n < 0 || n > math.MaxUint32 {
			return 0, s.fail(off, "memo index %q is not a valid number", clip(l))
		}
		return n, nil
	case 'h', 'q':
		b, err := s.r.read(1)
		if err != nil {
			return 0, errShort
		}
		return int64(b[0]), nil
	default:
		return s.u32(off, "LONG_BINGET/PUT")
	}
}

func (s *scanner) memoPut(off, idx int64, v *sv) error {
	if _, ok := s.memo.get(idx); !ok && s.memo.n >= s.o.MaxMemo {
		return s.overLimit(off, "more than %s memo entries, this server's limit (-max-memo)", thousands(int64(s.o.MaxMemo)))
	}
	s.memo.put(idx, v)
	return nil
}

// memoTable is the scanner's memo: a slice for the indexes pickle.dump writes (0, 1, 2...
// in order, as MEMOIZE numbers them), a map for any other a hand-made file uses.
type memoTable struct {
	dense  []*sv // dense[i] is entry i, nil where unset
	sparse map[int64]*sv
	n      int // entries set
}

func (m *memoTable) get(idx int64) (*sv, bool) {
	if idx >= 0 && idx < int64(len(m.dense)) {
		v := m.dense[idx]
		return v, v != nil
	}
	v, ok := m.sparse[idx]
	return v, ok
}

func (m *memoTable) put(idx int64, v *sv) {
	if _, ok := m.get(idx); !ok {
		m.n++
	}
	switch {
	case idx >= 0 && idx < int64(len(m.dense)):
		m.dense[idx] = v
	case idx == int64(len(m.dense)) && m.sparse[idx] == nil:
		m.dense = append(m.dense, v)
	default:
		if m.sparse == nil {
			m.sparse = map[int64]*sv{}
		}
		m.sparse[idx] = v
	}
}

// memoWrite is a memo write of the rewritten pickle: a LONG_BINPUT (5 bytes) or a MEMOIZE
// (1 byte) at byte at, of memo index idx.
type memoWrite struct{ at, idx uint32 }

// memoRead is the set of memo indexes some GET reads: a bitset of the low ones, a map of
// the others (a pickle may number its memo as it likes).
type memoRead struct {
	low  []uint64
	high map[int64]struct{}
}

// memoReadLow is the first memo index memoRead keeps in its map (its bitset is then at
// most 512 KiB; pickle.dump numbers the memo from 0).
const memoReadLow = 1 << 22

func (m *memoRead) add(idx int64) {
	if idx >= 0 && idx < memoReadLow {
		w := int(idx >> 6)
		if w >= len(m.low) {
			m.low = append(m.low, make([]uint64, w+1-len(m.low))...)
		}
		m.low[w] |= 1 << (idx & 63)
		return
	}
	if m.high == nil {
		m.high = map[int64]struct{}{}
	}
	m.high[idx] = struct{}{}
}

func (m *memoRead) has(idx int64) bool {
	if idx >= 0 && idx < memoReadLow {
		w := int(idx >> 6)
		return w < len(m.low) && m.low[w]&(1<<(idx&63)) != 0
	}
	_, ok := m.high[idx]
	return ok
}

// notePut records the memo write about to be emitted at the end of out.
func (s *scanner) notePut(idx int64) {
	if s.putsOff {
		return
	}
	if len(s.out) >= math.MaxUint32 || idx < 0 || idx > math.MaxUint32 {
		s.putsOff, s.puts = true, nil
		return
	}
	s.puts = append(s.puts, memoWrite{at: uint32(len(s.out)), idx: uint32(idx)})
}

// dropDeadPuts takes out of the rewritten pickle the memo writes that no GET reads, when
// that makes it smaller: pickle.dump memoizes nearly every value it writes, and a
// torch.save(model) of 2,000 modules writes 50,000 memo entries of which 26 are ever read,
// which gopickle would otherwise keep in its memo map one by one. A memo write that is
// read stays; a MEMOIZE (whose index is the number of entries before it, which dropping
// others changes) becomes a LONG_BINPUT of its index. What gopickle builds is the same:
// an entry nobody reads changes nothing.
func (s *scanner) dropDeadPuts() {
	if s.putsOff || len(s.puts) == 0 || s.o.keepDeadPuts {
		return
	}
	dead, grow := 0, 0
	for _, p := range s.puts {
		short := s.out[p.at] == opMemoize
		switch {
		case !s.read.has(int64(p.idx)) && short:
			dead++
		case !s.read.has(int64(p.idx)):
			dead += 5
		case short:
			grow += 4
		}
	}
	if dead <= grow {
		return
	}
	out := make([]byte, 0, len(s.out)-dead+grow)
	prev := 0
	for _, p := range s.puts {
		at, short := int(p.at), s.out[p.at] == opMemoize
		read := s.read.has(int64(p.idx))
		if read && !short {
			continue // copied with what is around it
		}
		out = append(out, s.out[prev:at]...)
		if read {
			out = append(out, 'r', byte(p.idx), byte(p.idx>>8), byte(p.idx>>16), byte(p.idx>>24))
		}
		prev = at + 5
		if short {
			prev = at + 1
		}
	}
	s.out = append(out, s.out[prev:]...)
	s.puts, s.read = nil, memoRead{}
	deadPutsDropped.Add(1)
}

// deadPutsDropped counts the pickles dropDeadPuts rewrote, for the test that holds it to
// the pickles left whole.
var deadPutsDropped atomic.Int64

func (s *scanner) emitMemo(op byte, idx int64) error {
	var b [5]byte
	b[0] = op
	binary.LittleEndian.PutUint32(b[1:], uint32(idx))
	return s.emit(b[:]...)
}

// pyUnquote decodes a protocol-0 STRING argument: a Python 2 str literal in quotes.
func pyUnquote(l string) (string, bool) {
	l = strings.TrimRight(l, "\r")
	if len(l) < 2 || l[0] != l[len(l)-1] || (l[0] != '\'' && l[0] != '"') {
		return "", false
	}
	body := l[1 : len(l)-1]
	if !strings.Contains(body, `\`) {
		return body, true
	}
	var b []byte
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '\\' || i+1 >= len(body) {
			b = append(b, c)
			continue
		}
		i++
		switch e := body[i]; e {
		case 'n':
			b = append(b, '\n')
		case 't':
			b = append(b, '\t')
		case 'r':
			b = append(b, '\r')
		case '\\', '\'', '"':
			b = append(b, e)
		case 'a':
			b = append(b, 7)
		case 'b':
			b = append(b, 8)
		case 'f':
			b = append(b, 12)
		case 'v':
			b = append(b, 11)
		case 'x':
			if i+3 <= len(body) {
				if v, err := strconv.ParseUint(body[i+1:i+3], 16, 8); err == nil {
					b = append(b, byte(v))
					i += 2
					continue
				}
			}
			b = append(b, '\\', 'x')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i
			for j < len(body) && j < i+3 && body[j] >= '0' && body[j] <= '7' {
				j++
			}
			v, _ := strconv.ParseUint(body[i:j], 8, 16)
			b = append(b, byte(v))
			i = j - 1
		default:
			b = append(b, '\\', e)
		}
	}
	return string(b), true
}

// rawUnicodeUnescape decodes a protocol-0 UNICODE argument as Python's raw-unicode-escape
// codec does: a byte is its Latin-1 code point; a backslash and the byte after it stand
// for themselves unless that byte is u or U, which take exactly 4 or 8 hex digits (a
// code point up to U+10FFFF). What the codec refuses (too few hex digits, a code point
// out of range) it names, as UnicodeDecodeError does, and pickle.load stops there.
func rawUnicodeUnescape(l string) (string, string) {
	var b strings.Builder
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c != '\\' || i+1 == len(l) {
			b.WriteRune(rune(c))
			continue
		}
		e := l[i+1]
		if e != 'u' && e != 'U' {
			b.WriteRune('\\')
			b.WriteRune(rune(e))
			i++
			continue
		}
		n := 4
		if e == 'U' {
			n = 8
		}
		v := rune(0)
		for j := 0; j < n; j++ {
			k := i + 2 + j
			if k == len(l) || hexDigit(l[k]) < 0 {
				if e == 'U' {
					return "", fmt.Sprintf("truncated \\UXXXXXXXX escape at position %d", i)
				}
				return "", fmt.Sprintf("truncated \\uXXXX escape at position %d", i)
			}
			v = v<<4 | rune(hexDigit(l[k]))
		}
		if v > unicode.MaxRune {
			return "", fmt.Sprintf("\\Uxxxxxxxx out of range at position %d", i)
		}
		b.WriteRune(v)
		i += 1 + n
	}
	return b.String(), ""
}

// encodedSurrogate says whether s holds at i the three bytes UTF-8 would encode a
// surrogate (U+D800-U+DFFF) with, were it allowed to: what Python's surrogatepass reads
// and writes.
func encodedSurrogate[T string | []byte](s T, i int) bool {
	return i+2 < len(s) && s[i] == 0xed && s[i+1] >= 0xa0 && s[i+1] <= 0xbf && s[i+2] >= 0x80 && s[i+2] <= 0xbf
}

// pyUTF8Error is where b stops being text that Python's UTF-8 decoder with the
// surrogatepass handler accepts (pickle.load decodes every BINUNICODE so), and why; ""
// when all of it is. Go's utf8 refuses the encoded surrogates U+D800-U+DFFF, which that
// handler lets through.
func pyUTF8Error(b []byte) string {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			i += size
			continue
		}
		if encodedSurrogate(b, i) {
			i += 3 // a surrogate, which surrogatepass decodes
			continue
		}
		return fmt.Sprintf("byte 0x%02x at position %d", b[i], i)
	}
	return ""
}

// decodeLongBytes renders a LONG1/LONG4 payload (little-endian two's complement) in decimal.
func decodeLongBytes(b []byte) string { return longBytes(b).String() }

// longBytes is the int of a LONG1/LONG4 payload (little-endian two's complement).
func longBytes(b []byte) *big.Int {
	if len(b) == 0 {
		return new(big.Int)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}
