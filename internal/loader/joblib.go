package loader

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// How joblib.load reads a pickle (joblib/numpy_pickle.py, NumpyUnpickler.load_build): after
// every BUILD whose object is a joblib.numpy_pickle.NumpyArrayWrapper, the unpickler pops the
// wrapper and calls its read(), which takes the array's bytes from the file itself, right
// where the file stands (past the current frame: joblib's unpickler is Python's own
// pickle._Unpickler, which reads a whole FRAME at once):
//   - an array whose dtype has objects (dtype.hasobject) is a complete pickle of its own,
//     read with pickle.load (the C unpickler) from that point;
//   - any other array is prod(shape) * dtype.itemsize raw bytes, preceded by a padding byte
//     count and that many padding bytes when the wrapper has a numpy_array_alignment_bytes
//     attribute that is not None (joblib >= 1.2).
// The unpickler then goes on after those bytes. So how many bytes are skipped is decided by
// the wrapper's attributes as Python evaluates them, never by what the bytes look like; the
// scanner evaluates the same attributes symbolically and fails closed when it cannot.

// scanMode is the consumer whose reading rules a scan follows.
type scanMode uint8

const (
	// modePickle: pickle.load and torch.load (the C unpickler; frames are plain buffering).
	modePickle scanMode = iota
	// modeJoblib: joblib.load (Python's pickle._Unpickler plus the array reads above).
	modeJoblib
	// modeJoblibCompat: joblib's loader for its pre-0.10 "ZF" files (Python's unpickler;
	// arrays live in side-car files, nothing is read from the stream).
	modeJoblibCompat
)

// joblib's wrapper classes, by every module path a loadable file names them with (joblib
// itself and the copy that scikit-learn re-exported as sklearn.externals.joblib).
func wrapperKind(full string) string {
	for _, pre := range []string{"joblib.", "sklearn.externals.joblib."} {
		switch strings.TrimPrefix(full, pre) {
		case "numpy_pickle.NumpyArrayWrapper":
			return "NumpyArrayWrapper"
		case "numpy_pickle.NDArrayWrapper", "numpy_pickle_compat.NDArrayWrapper":
			return "NDArrayWrapper"
		case "numpy_pickle.ZNDArrayWrapper", "numpy_pickle_compat.ZNDArrayWrapper":
			return "ZNDArrayWrapper"
		}
	}
	return ""
}

// instanceClass is the class an instance on the scanner's stack was made from: NEWOBJ, OBJ
// and INST call the class, REDUCE calls it or copyreg's helpers with it as first argument.
func instanceClass(v *sv) string {
	if v == nil || v.kind != svCall || v.callee == nil || v.callee.kind != svGlobal {
		return ""
	}
	name := canonicalGlobal(v.callee.mod, v.callee.name)
	switch name {
	case "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__":
		if len(v.items) > 0 && v.items[0].kind == svGlobal {
			return canonicalGlobal(v.items[0].mod, v.items[0].name)
		}
		return ""
	}
	return name
}

func isDTypeCall(v *sv) bool {
	switch instanceClass(v) {
	case "numpy.dtype", "numpy.core.numeric.dtype", "numpy._core.numeric.dtype":
		return true
	}
	return false
}

// applyState records what a BUILD gives an instance whose attributes the scanner needs
// (joblib's wrappers, numpy dtypes): Python updates the instance's __dict__ with a dict
// state, or with both halves of a (state, slotstate) tuple.
func (s *scanner) applyState(inst, state *sv) {
	if wrapperKind(instanceClass(inst)) == "" && !isDTypeCall(inst) {
		return
	}
	inst.state = state
	if inst.attrs == nil {
		inst.attrs = map[string]*sv{}
	}
	merge := func(d *sv) {
		switch {
		case d.kind == svNone:
		case d.kind != svDict || d.more > 0:
			inst.opaque = true
		default:
			for i := 0; i+1 < len(d.items); i += 2 {
				if d.items[i].kind != svStr {
					inst.opaque = true
					continue
				}
				inst.attrs[d.items[i].s] = d.items[i+1]
			}
		}
	}
	if state.kind == svTuple && len(state.items) == 2 && state.more == 0 {
		merge(state.items[0])
		merge(state.items[1])
		return
	}
	merge(state)
}

// joblibArray consumes the array data joblib.load reads after the BUILD of a
// NumpyArrayWrapper at off, and rewrites the wrapper so that it carries that data.
func (s *scanner) joblibArray(off int64, inst *sv) error {
	if inst.opaque || s.setstateOf(inst) != nil {
		return s.fail(off, "could not be checked: the NumpyArrayWrapper built here has a state ckptview cannot evaluate, so where its array data ends, and what joblib.load reads after it, is unknown")
	}
	count, why := shapeCount(inst.attrs["shape"])
	if why != "" {
		return s.fail(off, "could not be checked: the NumpyArrayWrapper built here has %s, so where its array data ends is unknown", why)
	}
	size, hasObject, why := evalDType(inst.attrs["dtype"], 0)
	if why != "" {
		return s.fail(off, "could not be checked: the NumpyArrayWrapper built here has %s, so where its array data ends is unknown", why)
	}
	if count < 0 {
		return s.fail(off, "the NumpyArrayWrapper built here has a negative element count (%d); joblib.load fails here", count)
	}
	var marker string
	if hasObject {
		at := s.r.filePosition()
		if s.depth >= 8 {
			return s.fail(off, "object arrays nested deeper than 8 pickles")
		}
		sub := &scanner{r: newSeqReader(s.r.r, at, s.r.end), o: s.o, start: at, fs: s.fs, nonce: s.nonce, reader: s.reader,
			ops: s.ops, lazyMin: s.lazyMin, depth: s.depth + 1, overrides: s.overrides,
			where: fmt.Sprintf("the object array pickled after the NumpyArrayWrapper at byte %d of %s", off-s.start, s.where)}
		if _, err := sub.run(); err != nil {
			if se, ok := err.(*scanError); ok {
				return s.fail(se.off, "in the object array pickled after the NumpyArrayWrapper at byte %d: %s", off-s.start, se.msg)
			}
			return err
		}
		sub.dropDeadPuts()
		s.notes = append(s.notes, sub.notes...)
		if _, err := s.r.raw(sub.r.pos - at); err != nil {
			return s.fail(off, "the object array's pickle runs past the end of the data")
		}
		s.objPickleBytes += int64(len(sub.out))
		if s.objPickleBytes+int64(len(s.out)) > s.o.MaxPickle {
			return s.overLimit(off, "the pickle holds more than %s of values besides its large byte strings, this server's limit (-max-pickle)", limitSize(s.o.MaxPickle))
		}
		marker = s.lazyMarker('n', int64(len(s.objPickles)), 0)
		s.objPickles = append(s.objPickles, sub.out)
	} else {
		if a, ok := inst.attrs["numpy_array_alignment_bytes"]; ok && a.kind != svNone {
			at, err := s.r.raw(1)
			if err != nil {
				return s.fail(off, "the file ends before the padding of the array after the NumpyArrayWrapper at byte %d", off-s.start)
			}
			var b [1]byte
			if _, err := s.r.r.ReadAt(b[:], at); err != nil {
				return s.fail(off, "the padding byte of an array cannot be read")
			}
			if _, err := s.r.raw(int64(b[0])); err != nil {
				return s.fail(off, "the file ends inside the padding of the array after the NumpyArrayWrapper at byte %d", off-s.start)
			}
		}
		hi, n := bits.Mul64(uint64(count), uint64(size))
		left := s.r.end - s.r.filePosition()
		if hi != 0 || n > math.MaxInt64 || int64(n) > left {
			return s.fail(off, "the NumpyArrayWrapper built here declares %d elements of %d bytes, but only %d bytes remain", count, size, left)
		}
		at, err := s.r.raw(int64(n))
		if err != nil {
			return s.fail(off, "the array data after the NumpyArrayWrapper runs past the end of the data")
		}
		marker = s.lazyMarker('j', at, int64(n))
	}
	// BUILD the wrapper a second time with the data as its state (our stand-in keeps it);
	// for the scanner, the array replaces the wrapper on the stack as in joblib.
	if err := s.emitStr('X', marker); err != nil {
		return err
	}
	if err := s.emit('Q', 'b'); err != nil {
		return err
	}
	s.stack[len(s.stack)-1] = &sv{kind: svOther, s: "numpy.ndarray", fidx: -1}
	return nil
}

// shapeCount is numpy.multiply.reduce over a wrapper's shape as joblib computes it: each
// item cast to int64, the product wrapping around like numpy's int64 (an empty shape is one
// element). why says what is missing when the shape is not a tuple of ints.
func shapeCount(v *sv) (int64, string) {
	if v == nil {
		return 0, "no shape"
	}
	if (v.kind != svTuple && v.kind != svList) || v.more > 0 {
		return 0, "a shape that is not a short tuple of ints"
	}
	count := int64(1)
	for _, it := range v.items {
		if it.kind != svInt && it.kind != svBool {
			return 0, "a shape that is not a tuple of ints"
		}
		var d int64
		switch it.s {
		case "True":
			d = 1
		case "False":
			d = 0
		default:
			var err error
			if d, err = strconv.ParseInt(it.s, 10, 64); err != nil {
				return 0, "a dimension that does not fit numpy's int64"
			}
		}
		count *= d // wraps, as numpy's int64 product does
	}
	return count, ""
}

// evalDType evaluates a pickled numpy.dtype(code, align, copy) with its BUILD state the way
// numpy's dtype.__setstate__ (arraydescr_setstate) leaves it: the item size of flexible
// types (str, bytes, void, structured) comes from the state's elsize, and for state versions
// 3 and up the flags, hasobject among them, are taken from the state as they are.
func evalDType(v *sv, depth int) (size int64, hasObject bool, why string) {
	if depth > 32 {
		return 0, false, "a dtype nested too deeply"
	}
	if v == nil || !isDTypeCall(v) {
		return 0, false, "a dtype that is not a numpy.dtype"
	}
	if len(v.items) == 0 || v.items[0].kind != svStr {
		return 0, false, "a numpy.dtype without a type code"
	}
	code := v.items[0].s
	if code != "" && strings.ContainsRune("<>|=", rune(code[0])) {
		code = code[1:]
	}
	if code == "" {
		return 0, false, "an empty dtype code"
	}
	kind, digits := code[0], code[1:]
	if i := strings.IndexByte(digits, '['); i >= 0 && (kind == 'M' || kind == 'm') {
		digits = digits[:i]
	}
	n := int64(-1)
	if digits != "" {
		d, err := strconv.ParseInt(digits, 10, 32)
		if err != nil || d < 0 {
			return 0, false, fmt.Sprintf("the dtype code %q", v.items[0].s)
		}
		n = d
	}
	// the state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
	var st []*sv
	version := int64(-1)
	if v.state != nil {
		if v.state.kind != svTuple || v.state.more > 0 || len(v.state.items) < 1 || v.state.items[0].kind != svInt {
			return 0, false, "a dtype state ckptview cannot evaluate"
		}
		st = v.state.items
		version, _ = strconv.ParseInt(st[0].s, 10, 64)
	}
	extended := kind == 'S' || kind == 'a' || kind == 'U' || kind == 'V'
	switch {
	case extended && len(st) >= 6 && st[5].kind == svInt:
		size, _ = strconv.ParseInt(st[5].s, 10, 64)
	case extended && n >= 0:
		size = n
		if kind == 'U' {
			size = 4 * n
		}
	case extended:
		return 0, false, "a flexible dtype without a size"
	default:
		size = builtinSize(kind, n)
		if size <= 0 {
			return 0, false, fmt.Sprintf("the dtype code %q", v.items[0].s)
		}
	}
	if size <= 0 {
		// joblib divides by the item size: a zero-size dtype makes joblib.load fail
		return 0, false, "a dtype of item size 0"
	}
	if version >= 3 && len(st) >= 8 {
		if st[7].kind != svInt {
			return 0, false, "dtype flags that are not an int"
		}
		f, err := strconv.ParseInt(st[7].s, 10, 64)
		if err != nil {
			return 0, false, "dtype flags out of range"
		}
		return size, f&1 != 0, "" // NPY_ITEM_HASOBJECT
	}
	// older states: numpy finds objects in the dtype itself
	if kind == 'O' {
		return size, true, ""
	}
	if len(st) >= 5 {
		if sub := st[2]; sub.kind == svTuple && len(sub.items) >= 1 {
			if _, obj, why := evalDType(sub.items[0], depth+1); why != "" || obj {
				return size, obj, why
			}
		}
		if f := st[4]; f.kind == svDict {
			if f.more > 0 {
				return 0, false, "a structured dtype with more fields than ckptview evaluates"
			}
			for i := 1; i < len(f.items); i += 2 {
				ft := f.items[i]
				if ft.kind != svTuple || len(ft.items) == 0 {
					return 0, false, "a structured dtype field ckptview cannot evaluate"
				}
				if _, obj, why := evalDType(ft.items[0], depth+1); why != "" || obj {
					return size, obj, why
				}
			}
		}
	}
	return size, false, ""
}

// builtinSize is the item size of numpy's fixed-size type codes ("f8", "i4", "b1", "O8").
func builtinSize(kind byte, n int64) int64 {
	switch kind {
	case 'b':
		if n == -1 || n == 1 {
			return 1
		}
	case 'i', 'u':
		switch n {
		case 1, 2, 4, 8:
			return n
		case -1:
			return 4
		}
	case 'f':
		switch n {
		case 2, 4, 8, 12, 16:
			return n
		case -1:
			return 4
		}
	case 'c':
		switch n {
		case 8, 16, 24, 32:
			return n
		}
	case 'O':
		if n == -1 || n == 8 || n == 4 {
			return 8
		}
	case 'M', 'm':
		if n == -1 || n == 8 {
			return 8
		}
	case '?':
		return 1
	}
	return 0
}
