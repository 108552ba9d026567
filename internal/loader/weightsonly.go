package loader

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
)

// weightsOnlyAllowed is torch's default allowlist (_get_allowed_globals).
var weightsOnlyAllowed = map[string]bool{
	"collections.OrderedDict": true, "collections.Counter": true, "torch.nn.parameter.Parameter": true,
	"torch.serialization._get_layout": true, "torch.Size": true, "torch.Tensor": true, "torch.device": true,
	"_codecs.encode": true, "builtins.bytearray": true, "builtins.set": true, "builtins.complex": true,
	"torch.per_tensor_affine": true, "torch.per_tensor_symmetric": true, "torch.per_channel_affine": true,
	"torch.per_channel_symmetric": true, "torch.per_channel_affine_float_qparams": true,
	"torch._tensor._rebuild_from_type_v2": true, "torch.storage.TypedStorage": true, "torch.storage.UntypedStorage": true,
}

func init() {
	for _, f := range []string{"_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_tensor",
		"_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
		"_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"} {
		weightsOnlyAllowed["torch._utils."+f] = true
	}
	for _, d := range []string{"float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8", "int16",
		"short", "int32", "int", "int64", "long", "uint8", "bool", "complex32", "complex64", "complex128", "cfloat",
		"cdouble", "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "uint16", "uint32", "uint64",
		"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
		"uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "int1", "int2", "int3", "int4", "int5", "int6", "int7"} {
		weightsOnlyAllowed["torch."+d] = true
	}
	for _, d := range []string{"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
		"ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4"} {
		weightsOnlyAllowed["torch."+d+"Storage"] = true
		weightsOnlyAllowed["torch."+d+"Tensor"] = true
		weightsOnlyAllowed["torch.cuda."+d+"Storage"] = true
		weightsOnlyAllowed["torch.cuda."+d+"Tensor"] = true
	}
}

// weightsOnlyOps are the opcodes the weights_only unpickler implements.
var weightsOnlyOps = map[byte]string{
	'(': "MARK", '.': "STOP", 'c': "GLOBAL", 0x81: "NEWOBJ", 'R': "REDUCE", 'b': "BUILD", 'a': "APPEND",
	'e': "APPENDS", 's': "SETITEM", 'u': "SETITEMS", 't': "TUPLE", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
	'N': "NONE", 0x89: "NEWFALSE", 0x88: "NEWTRUE", ')': "EMPTY_TUPLE", ']': "EMPTY_LIST", '}': "EMPTY_DICT",
	0x8f: "EMPTY_SET", 'J': "BININT", 'K': "BININT1", 'M': "BININT2", 'G': "BINFLOAT", 'X': "BINUNICODE",
	'U': "SHORT_BINSTRING", 'Q': "BINPERSID", 'h': "BINGET", 'j': "LONG_BINGET", 'q': "BINPUT", 'r': "LONG_BINPUT",
	0x8a: "LONG1", 0x80: "PROTO",
}

// opNames names the opcodes weights_only refuses, for its verdict.
var opNames = map[byte]string{
	0x95: "FRAME", 0x94: "MEMOIZE", 0x93: "STACK_GLOBAL", 0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8",
	0x8e: "BINBYTES8", 'B': "BINBYTES", 'C': "SHORT_BINBYTES", 0x92: "NEWOBJ_EX", 0x91: "FROZENSET", 0x90: "ADDITEMS",
	0x96: "BYTEARRAY8", 'i': "INST", 'o': "OBJ", 'l': "LIST", 'd': "DICT", 'p': "PUT", 'g': "GET", 'I': "INT",
	'L': "LONG", 'F': "FLOAT", 'S': "STRING", 'V': "UNICODE", 'T': "BINSTRING", 'P': "PERSID", '0': "POP",
	'1': "POP_MARK", '2': "DUP", 0x8b: "LONG4",
}

// woState follows one pickle for the verdict, beside the scan.
type woState struct {
	refusal string
	needs   map[string]bool
	danger  []string
}

// woPre judges an opcode before the scanner runs it, while its targets are on the stack.
func (s *scanner) woPre(op byte) {
	w := s.wo
	if !w.opcode(op) {
		return
	}
	below := func(n int) *sv {
		if len(s.stack) >= n {
			return s.stack[len(s.stack)-n]
		}
		return nil
	}
	underMark := func() *sv {
		if len(s.meta) > 0 && len(s.meta[len(s.meta)-1]) > 0 {
			m := s.meta[len(s.meta)-1]
			return m[len(m)-1]
		}
		return nil
	}
	switch op {
	case 's':
		w.setTarget(below(3), "SETITEM")
	case 'u':
		w.setTarget(underMark(), "SETITEMS")
	case 'a':
		w.appendTarget(below(2))
	case 'e':
		w.appendTarget(underMark())
	}
}

// woOps is weightsOnlyOps as a table, for the one-pass reading's every opcode.
var woOps = func() (t [256]bool) {
	for op := range weightsOnlyOps {
		t[op] = true
	}
	return t
}()

// opcode judges an opcode on its own, and says whether the verdict is still open.
func (w *woState) opcode(op byte) bool {
	if w.refusal != "" {
		return false
	}
	if !woOps[op] {
		name := opNames[op]
		if name == "" {
			name = fmt.Sprintf("0x%02x", op)
		}
		w.refusal = fmt.Sprintf("the pickle uses the %s opcode, which the weights_only unpickler does not implement (torch.save writes protocol 2 pickles without it)", name)
		return false
	}
	return true
}

// woGlobal judges a GLOBAL the scanner just read.
func (s *scanner) woGlobal(g *sv) {
	if g == nil || g.kind != svGlobal {
		return
	}
	s.wo.global(g.mod, g.name)
}

// global judges a global the pickle names.
func (w *woState) global(module, name string) {
	if w.refusal != "" {
		return
	}
	full := canonicalGlobal(module, name) // torch maps Python 2 names the same way
	mod := full[:max(0, strings.LastIndexByte(full, '.'))]
	switch {
	case mod == "sys" || mod == "os" || mod == "posix" || mod == "nt" || strings.HasPrefix(mod, "os."):
		w.refusal = fmt.Sprintf("it names %s, whose module weights_only never allows, even with add_safe_globals", full)
	case weightsOnlyAllowed[full]:
	case classifyGlobal(module, name) == globalDanger || woNeverAdd[full]:
		w.danger = append(w.danger, full)
		w.needs[full] = true
	default:
		w.needs[full] = true
	}
}

func (w *woState) setTarget(t *sv, op string) {
	if t == nil || t.kind == svDict {
		return
	}
	if t.kind == svCall && t.callee != nil && t.callee.kind == svGlobal {
		switch canonicalGlobal(t.callee.mod, t.callee.name) {
		case "collections.OrderedDict", "collections.Counter":
			return
		}
	}
	if w.refusal == "" {
		w.refusal = op + " on something that is not a dict, an OrderedDict or a Counter (" + t.repr(80) + "), which weights_only refuses"
	}
}

func (w *woState) appendTarget(t *sv) {
	if t == nil || t.kind == svList {
		return
	}
	if w.refusal == "" {
		w.refusal = "APPEND on something that is not a list (" + t.repr(80) + "), which weights_only refuses unless it is a list subclass that is allowlisted"
	}
}

// woNeverAdd are globals the viewer reads without danger but that weights_only must never
// be told to allow: torch.storage._load_from_bytes is torch.load(weights_only=False) of the
// bytes it is given, so allowlisting it would let any pickle through.
var woNeverAdd = map[string]bool{"torch.storage._load_from_bytes": true}

// verdict is the outcome for the pickle.
func (w *woState) verdict() *ckpt.WeightsOnly {
	v := &ckpt.WeightsOnly{Refusal: w.refusal}
	for g := range w.needs {
		v.Needs = append(v.Needs, g)
	}
	sort.Strings(v.Needs)
	if v.Refusal == "" && len(w.danger) > 0 {
		sort.Strings(w.danger)
		v.Refusal = "it would need " + strings.Join(w.danger, ", ") + " allowlisted, which can run code: never add it with add_safe_globals"
	}
	if v.Refusal != "" {
		// list only data classes as what it needs
		var data []string
		for _, g := range v.Needs {
			mod, name := splitGlobal(g)
			if classifyGlobal(mod, name) != globalDanger && !woNeverAdd[g] {
				data = append(data, g)
			}
		}
		v.Needs = data
	}
	v.Loads = v.Refusal == "" && len(v.Needs) == 0
	return v
}

// pickle judges one whole pickle at [start, end) of r on its own (the legacy format's magic
// number, which was scanned before the file was known to be one).
func (w *woState) pickle(r io.ReaderAt, start, end int64) {
	s := &scanner{r: newSeqReader(r, start, end), o: Options{}.withDefaults(), where: "", start: start,
		fs: &findingSet{}, ops: new(int), lazyMin: 4096, wo: w}
	_, _ = s.run()
}
