package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
	"github.com/ckptview/ckptview/internal/tensor"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// The values gopickle builds through our FindClass. None of them runs anything: a global is
// a name, a call is a record of the callee and its arguments, a tensor is a view on a lazy
// storage.

// pyGlobal is a global the pickle names (a class or a function).
type pyGlobal struct {
	module, name string
	raw          string // module.name as the file spells it
	full         string // canonical module.name
	class        globalClass
	state        any // set if the file BUILDs onto the global itself
	ctx          *unpickleCtx
}

// pyObject is an instance or the result of a call we did not model.
type pyObject struct {
	cls      any // *pyGlobal, or any callable value
	args     []any
	state    any
	hasState bool
	items    []any             // APPEND/APPENDS on a list subclass
	dict     []types.DictEntry // SETITEM(S) on a dict subclass
	display  string            // a readable value for known scalars (datetime, Decimal, slice)
	typeName string            // overrides the class name
	// joblib is the array data joblib.load reads after this NumpyArrayWrapper's BUILD: a
	// *lazyBytes of raw data, or the *joblibObjects of an object array's own pickle.
	joblib any
}

// joblibObjects is the value an object array's nested pickle unpickles to.
type joblibObjects struct{ value any }

// pyDict is a dict-like value with a type name (OrderedDict, defaultdict, Counter).
type pyDict struct {
	typeName string
	entries  []types.DictEntry
	attrs    []types.DictEntry
	// distinct marks entries whose keys are str and all different (the one-pass reading
	// makes no other)
	distinct bool
}

// pySet keeps insertion order (pickle order), unlike gopickle's map-based set.
type pySet struct {
	frozen bool
	items  []any
}

// lazyBytes is a bytes payload left in the file.
type lazyBytes struct {
	src  io.ReaderAt
	off  int64
	n    int64
	kind byte // 'b' bytes, 'a' bytearray, 's' py2 str
}

// pyStorage is a torch storage named by a persistent id.
type pyStorage struct {
	st    *ckpt.Storage
	numel int64
}

// pyTensor is a torch tensor: a strided view on a storage.
type pyTensor struct {
	storage      *pyStorage
	offset       int64
	shape        []int64
	stride       []int64
	requiresGrad bool
	typeName     string
	extra        any // state of tensor subclasses and parameters
	quant        *ckpt.Quantization
	quantScales  any
	quantZeros   any
	packed       bool // elements smaller than a byte (safetensors F4, F6)
}

// pySparse is a sparse tensor: its index and value tensors and its dense size.
type pySparse struct {
	layout string
	shape  []int64
	names  []string
	parts  []any
}

// pyDType is a numpy dtype.
type pyDType struct {
	code   string // constructor argument: "f8", "i4", "U", "S3", "O8", "V16"
	order  byte   // '<', '>', '|', '='
	elsize int
	names  []string
	fields any // name -> (dtype, offset[, title]), as numpy pickles them
	// subShape is the shape of a structured field that is itself an array ("('x', '<f4', (3,))").
	subShape []int64
	// spread caches how many fields d's nesting spells out (spreadOf): 0 not known yet
	spread int
}

// pyArray is a numpy ndarray being rebuilt.
type pyArray struct {
	cls     string
	shape   []int64
	dtype   *pyDType
	fortran bool
	raw     any
	src     io.ReaderAt
	// field marks one field of a structured array, shown as a column of it: a view of the
	// same bytes, so not counted again; strides overrides the contiguous strides.
	field   bool
	strides []int64
}

// Interfaces gopickle drives.
func (g *pyGlobal) Call(args ...any) (any, error)  { return g.ctx.call(g, args) }
func (g *pyGlobal) PyNew(args ...any) (any, error) { return g.ctx.newObj(g, args) }
func (g *pyGlobal) PySetState(state any) error     { g.state = state; return nil }

func (o *pyObject) Call(args ...any) (any, error)  { return &pyObject{cls: o, args: args}, nil }
func (o *pyObject) PyNew(args ...any) (any, error) { return &pyObject{cls: o, args: args}, nil }
func (o *pyObject) PySetState(state any) error {
	switch st := state.(type) {
	case *joblibObjects:
		o.joblib = st
		return nil
	case *lazyBytes:
		if st.kind == 'j' {
			o.joblib = st
			return nil
		}
	}
	o.state, o.hasState = state, true
	return nil
}
func (o *pyObject) Append(v any) { o.items = append(o.items, v) }
func (o *pyObject) Set(k, v any) { o.dict = append(o.dict, types.DictEntry{Key: k, Value: v}) }
func (o *pyObject) Add(v any)    { o.items = append(o.items, v) }
func (d *pyDict) Set(k, v any)   { d.entries = append(d.entries, types.DictEntry{Key: k, Value: v}) }
func (d *pyDict) PySetState(state any) error {
	if sd, ok := state.(*types.Dict); ok {
		d.attrs = append(d.attrs, (*sd)...)
	}
	return nil
}
func (s *pySet) Add(v any)    { s.items = append(s.items, v) }
func (s *pySet) Append(v any) { s.items = append(s.items, v) }
func (t *pyTensor) PySetState(state any) error {
	t.extra = state
	return nil
}
func (a *pyArray) PySetState(state any) error { return a.setState(state) }
func (d *pyDType) PySetState(state any) error { return d.setState(state) }

// unpickleCtx carries what the stand-ins need while one file is unpickled.
type unpickleCtx struct {
	src      io.ReaderAt // where lazy payloads live
	nonce    string
	storages map[string]*pyStorage
	// storageFor makes the Storage of a persistent id ('storage', type, key, location, numel).
	storageFor  func(key, dtype, location string, numel int64) (*ckpt.Storage, error)
	legacyNotes []string
	viewsOf     []storageView
	// objPickles are the rewritten pickles of joblib's object arrays (scanner.objPickles).
	objPickles [][]byte
	// loadBytes reads the torch file given to torch.storage._load_from_bytes; depth is how
	// deep in such files this context is.
	loadBytes func(src io.ReaderAt, size int64, depth int) (any, error)
	depth     int
}

func (c *unpickleCtx) findClass(module, name string) (any, error) {
	module = strings.TrimPrefix(module, globalPrefix)
	full := canonicalGlobal(module, name)
	return &pyGlobal{module: module, name: name, full: full, raw: module + "." + name, class: classifyGlobal(module, name), ctx: c}, nil
}

func (c *unpickleCtx) persistentLoad(pid any) (any, error) {
	if s, ok := pid.(string); ok {
		prefix := "\x00ckptview:" + c.nonce + ":"
		if strings.HasPrefix(s, prefix) {
			parts := strings.Split(s[len(prefix):], ":")
			if len(parts) == 3 && len(parts[0]) == 1 {
				off, e1 := strconv.ParseInt(parts[1], 10, 64)
				n, e2 := strconv.ParseInt(parts[2], 10, 64)
				if e1 == nil && e2 == nil {
					if parts[0][0] == 'n' {
						return c.objectArray(off)
					}
					return &lazyBytes{src: c.src, off: off, n: n, kind: parts[0][0]}, nil
				}
			}
		}
		return nil, fmt.Errorf("persistent id %q names nothing in this file", clip(s))
	}
	t, ok := pid.(*types.Tuple)
	if !ok || t.Len() == 0 {
		return nil, fmt.Errorf("persistent id of unexpected type %T", pid)
	}
	tag, _ := t.Get(0).(string)
	switch tag {
	case "storage":
		if t.Len() < 5 {
			return nil, fmt.Errorf("storage persistent id has %d fields, want 5", t.Len())
		}
		dtype := "uint8"
		if g, ok := t.Get(1).(*pyGlobal); ok {
			if d, ok := storageDType(g.full); ok {
				dtype = d
			} else {
				return nil, fmt.Errorf("storage type %s is not a torch storage class", g.full)
			}
		} else if name, ok := t.Get(1).(string); ok { // TorchScript writes the dtype name
			dtype = name
		}
		key := fmt.Sprint(t.Get(2))
		location, _ := t.Get(3).(string)
		numel, ok := toInt64(t.Get(4))
		if !ok || numel < 0 {
			return nil, fmt.Errorf("storage %q has an invalid size", key)
		}
		if ps, ok := c.storages[key]; ok {
			return c.view(ps, t)
		}
		if c.storageFor == nil {
			return nil, fmt.Errorf("the pickle refers to a tensor storage, but this file has no storages")
		}
		st, err := c.storageFor(key, dtype, location, numel)
		if err != nil {
			return nil, err
		}
		ps := &pyStorage{st: st, numel: numel}
		c.storages[key] = ps
		return c.view(ps, t)
	case "module":
		// legacy torch.save(model): ('module', class, source file, source)
		if t.Len() >= 2 {
			if t.Len() >= 3 {
				if f, ok := t.Get(2).(string); ok {
					c.legacyNotes = append(c.legacyNotes, "the file carries the source code of "+globalName(t.Get(1))+" (from "+f+"); it is shown, never run")
				}
			}
			return t.Get(1), nil
		}
	}
	return nil, fmt.Errorf("unknown persistent id %q", clip(fmt.Sprint(tag)))
}

// objectArray unpickles the i-th object array joblib pickled inside its array data.
func (c *unpickleCtx) objectArray(i int64) (any, error) {
	if i < 0 || i >= int64(len(c.objPickles)) {
		return nil, fmt.Errorf("no object array %d in this file", i)
	}
	u := pickle.NewUnpickler(bytes.NewReader(c.objPickles[i]))
	u.FindClass = c.findClass
	u.PersistentLoad = c.persistentLoad
	v, err := u.Load()
	if err != nil {
		return nil, fmt.Errorf("the object array's pickle: %w", err)
	}
	return &joblibObjects{value: v}, nil
}

// view applies a legacy storage view (view_key, offset, size) if the id has one.
func (c *unpickleCtx) view(ps *pyStorage, t *types.Tuple) (any, error) {
	if t.Len() < 6 || t.Get(5) == nil {
		return ps, nil
	}
	vm, ok := t.Get(5).(*types.Tuple)
	if !ok || vm.Len() != 3 {
		return ps, nil
	}
	vkey := fmt.Sprint(vm.Get(0))
	if v, ok := c.storages[vkey]; ok {
		return v, nil
	}
	off, ok1 := toInt64(vm.Get(1))
	size, ok2 := toInt64(vm.Get(2))
	if !ok1 || !ok2 || off < 0 || size < 0 || off+size > ps.numel {
		return nil, fmt.Errorf("storage view %q runs past its storage", vkey)
	}
	es := int64(ckpt.DTypeSize(ps.st.DType))
	v := &pyStorage{numel: size, st: &ckpt.Storage{Key: vkey, DType: ps.st.DType, Location: ps.st.Location,
		ByteOrder: ps.st.ByteOrder, Data: ps.st.Data, Size: size * es}}
	v.st.Offset = -1 // resolved with the root storage's offset
	c.storages[vkey] = v
	c.viewsOf = append(c.viewsOf, storageView{view: v, root: ps, elemOff: off})
	return v, nil
}

type storageView struct {
	view, root *pyStorage
	elemOff    int64
}

func globalName(v any) string {
	if g, ok := v.(*pyGlobal); ok {
		return g.full
	}
	return fmt.Sprintf("%T", v)
}

// storageDType maps torch storage classes to dtype names.
func storageDType(full string) (string, bool) {
	name := strings.TrimPrefix(strings.TrimPrefix(full, "torch.cuda."), "torch.")
	if !strings.HasSuffix(name, "Storage") {
		return "", false
	}
	switch strings.TrimSuffix(name, "Storage") {
	case "Float":
		return "float32", true
	case "Double":
		return "float64", true
	case "Half":
		return "float16", true
	case "BFloat16":
		return "bfloat16", true
	case "Long":
		return "int64", true
	case "Int":
		return "int32", true
	case "Short":
		return "int16", true
	case "Char":
		return "int8", true
	case "Byte", "storage.Untyped", "Untyped":
		return "uint8", true
	case "Bool":
		return "bool", true
	case "ComplexFloat":
		return "complex64", true
	case "ComplexDouble":
		return "complex128", true
	case "QInt8":
		return "qint8", true
	case "QUInt8":
		return "quint8", true
	case "QInt32":
		return "qint32", true
	case "QUInt4x2":
		return "quint4x2", true
	case "QUInt2x4":
		return "quint2x4", true
	case "Float8_e4m3fn":
		return "float8_e4m3fn", true
	case "Float8_e5m2":
		return "float8_e5m2", true
	case "Float8_e4m3fnuz":
		return "float8_e4m3fnuz", true
	case "Float8_e5m2fnuz":
		return "float8_e5m2fnuz", true
	case "UInt16":
		return "uint16", true
	case "UInt32":
		return "uint32", true
	case "UInt64":
		return "uint64", true
	}
	return "", false
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), true
		}
	}
	return 0, false
}

func toInts(v any) ([]int64, bool) {
	var items []any
	switch x := v.(type) {
	case *types.Tuple:
		items = *x
	case *types.List:
		items = *x
	case *pyObject: // torch.Size(...)
		if len(x.args) == 1 {
			return toInts(x.args[0])
		}
		return nil, false
	default:
		if n, ok := toInt64(v); ok {
			return []int64{n}, true
		}
		return nil, false
	}
	out := make([]int64, 0, len(items))
	for _, it := range items {
		n, ok := toInt64(it)
		if !ok {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

func arg(args []any, i int) any {
	if i < len(args) {
		return args[i]
	}
	return nil
}

// call is what REDUCE does with a global: a stand-in for allowlisted names, a record otherwise.
func (c *unpickleCtx) call(g *pyGlobal, args []any) (any, error) {
	if g.class == globalSafe {
		if v, handled, err := c.standIn(g, args); handled {
			return v, err
		}
	}
	return &pyObject{cls: g, args: args}, nil
}

func (c *unpickleCtx) newObj(g *pyGlobal, args []any) (any, error) {
	if g.class == globalSafe {
		switch allowlist[g.full] {
		case standDict:
			return &pyDict{typeName: g.full}, nil
		case standSet:
			return &pySet{frozen: g.full == "builtins.frozenset"}, nil
		}
	}
	return &pyObject{cls: g, args: args}, nil
}

func (c *unpickleCtx) standIn(g *pyGlobal, args []any) (any, bool, error) {
	switch allowlist[g.full] {
	case standDict:
		d := &pyDict{typeName: g.full}
		var src any
		if g.full == "collections.defaultdict" {
			if f := arg(args, 0); f != nil {
				d.typeName = "collections.defaultdict(" + globalName(f) + ")"
			}
			src = arg(args, 1)
		} else {
			src = arg(args, 0)
		}
		switch s := src.(type) {
		case *types.Dict:
			d.entries = append(d.entries, (*s)...)
		case *pyDict:
			d.entries = append(d.entries, s.entries...)
		case *types.List: // Python 2 OrderedDict: [[k, v], ...]
			for _, it := range *s {
				if kv, ok := pairOf(it); ok {
					d.entries = append(d.entries, types.DictEntry{Key: kv[0], Value: kv[1]})
				}
			}
		}
		return d, true, nil
	case standSet:
		s := &pySet{frozen: g.full == "builtins.frozenset"}
		s.items = append(s.items, iterItems(arg(args, 0))...)
		return s, true, nil
	case standList:
		l := types.NewListFromSlice(append([]any(nil), iterItems(arg(args, 0))...))
		return l, true, nil
	case standTuple:
		return types.NewTupleFromSlice(append([]any(nil), iterItems(arg(args, 0))...)), true, nil
	case standComplex:
		re, _ := toFloat(arg(args, 0))
		im, _ := toFloat(arg(args, 1))
		return complex(re, im), true, nil
	case standBytes:
		var b []byte
		switch x := arg(args, 0).(type) {
		case []byte:
			b = x
		case string: // (str, 'latin-1') in protocol 2
			b = latin1(x)
		case *lazyBytes:
			return &lazyBytes{src: x.src, off: x.off, n: x.n, kind: 'a'}, true, nil
		case nil:
		default:
			return nil, false, nil
		}
		if g.full == "builtins.bytes" {
			return b, true, nil
		}
		ba := types.ByteArray(b)
		return &ba, true, nil
	case standSliceRange:
		parts := make([]string, len(args))
		for i, a := range args {
			parts[i] = reprValue(a)
		}
		name := strings.TrimPrefix(g.full, "builtins.")
		return &pyObject{cls: g, args: args, display: name + "(" + strings.Join(parts, ", ") + ")", typeName: name}, true, nil
	case standScalar:
		if len(args) == 1 {
			return args[0], true, nil
		}
	case standReconstructor:
		cls := arg(args, 0)
		base := arg(args, 1)
		if bg, ok := base.(*pyGlobal); ok && bg.full == "builtins.object" {
			return c.instantiate(cls, nil)
		}
		if st := arg(args, 2); st != nil {
			return c.instantiate(cls, []any{st})
		}
		return c.instantiate(cls, nil)
	case standNewObj:
		if len(args) == 0 {
			return nil, true, fmt.Errorf("__newobj__ without a class")
		}
		return c.instantiate(args[0], args[1:])
	case standCodecsEncode:
		s, ok := arg(args, 0).(string)
		if !ok {
			return nil, false, nil
		}
		enc, _ := arg(args, 1).(string)
		switch strings.ToLower(strings.ReplaceAll(enc, "_", "-")) {
		case "latin1", "latin-1", "iso-8859-1", "l1":
			return latin1(s), true, nil
		case "", "utf-8", "utf8", "ascii":
			return []byte(s), true, nil
		}
		return nil, false, nil
	case standDatetime:
		return &pyObject{cls: g, args: args, display: datetimeText(g.name, args), typeName: g.full}, true, nil
	case standDisplayArg:
		if s, ok := arg(args, 0).(string); ok {
			return &pyObject{cls: g, args: args, display: s, typeName: g.full}, true, nil
		}
	case standDevice:
		parts := []string{"type=" + reprValue(arg(args, 0))}
		if len(args) > 1 {
			parts = append(parts, "index="+reprValue(args[1]))
		}
		return &pyObject{cls: g, args: args, display: "device(" + strings.Join(parts, ", ") + ")", typeName: g.full}, true, nil
	case standRebuildTensor:
		return c.rebuildTensor(args)
	case standLoadFromBytes:
		if len(args) != 1 || c.loadBytes == nil {
			return nil, false, nil
		}
		var src io.ReaderAt
		var n int64
		switch b := args[0].(type) {
		case []byte:
			src, n = bytes.NewReader(b), int64(len(b))
		case *lazyBytes:
			src, n = io.NewSectionReader(b.src, b.off, b.n), b.n
		default:
			return nil, false, nil
		}
		v, err := c.loadBytes(src, n, c.depth)
		if err == errNotStandIn {
			return nil, false, nil
		}
		return v, true, err
	case standGetLayout:
		if name, ok := arg(args, 0).(string); ok {
			return name, true, nil
		}
	case standSparse:
		layout := ""
		switch l := arg(args, 0).(type) {
		case string:
			layout = l
		case *pyGlobal:
			layout = l.full
		}
		layout = strings.TrimPrefix(layout, "torch.")
		data, ok := arg(args, 1).(*types.Tuple)
		if !ok {
			return nil, false, nil
		}
		names := []string{"indices", "values"}
		if layout != "sparse_coo" {
			names = []string{"compressed_indices", "plain_indices", "values"}
		}
		if data.Len() < len(names)+1 {
			return nil, true, fmt.Errorf("sparse tensor with %d parts", data.Len())
		}
		shape, ok := toInts(data.Get(len(names)))
		if !ok {
			return nil, true, fmt.Errorf("sparse tensor without a size")
		}
		sp := &pySparse{layout: layout, shape: shape}
		for i, n := range names {
			sp.names = append(sp.names, n)
			sp.parts = append(sp.parts, data.Get(i))
		}
		return sp, true, nil
	case standQTensor:
		v, handled, err := c.rebuildTensor([]any{arg(args, 0), arg(args, 1), arg(args, 2), arg(args, 3), arg(args, 5)})
		if err != nil || !handled {
			return v, handled, err
		}
		t := v.(*pyTensor)
		q, ok := arg(args, 4).(*types.Tuple)
		if !ok || q.Len() < 1 {
			return nil, true, fmt.Errorf("quantized tensor without quantizer parameters")
		}
		t.quant = &ckpt.Quantization{Scheme: strings.TrimPrefix(globalName(q.Get(0)), "torch.")}
		switch {
		case q.Len() == 3:
			t.quant.Scale, _ = toFloat(q.Get(1))
			t.quant.ZeroPoint, _ = toInt64(q.Get(2))
		case q.Len() == 4:
			t.quantScales, t.quantZeros = q.Get(1), q.Get(2)
			t.quant.Axis, _ = toInt64(q.Get(3))
		}
		return t, true, nil
	case standParameter:
		t, ok := arg(args, 0).(*pyTensor)
		if !ok {
			return nil, false, nil
		}
		p := *t
		p.typeName = "torch.nn.parameter.Parameter"
		if rg, ok := arg(args, 1).(bool); ok {
			p.requiresGrad = rg
		}
		if len(args) > 3 {
			p.extra = args[3]
		}
		return &p, true, nil
	case standFromType:
		fn, ok := arg(args, 0).(*pyGlobal)
		if !ok || fn.class != globalSafe {
			return nil, false, nil
		}
		var inner []any
		if t, ok := arg(args, 2).(*types.Tuple); ok {
			inner = *t
		}
		v, err := c.call(fn, inner)
		if err != nil {
			return nil, true, err
		}
		if t, ok := v.(*pyTensor); ok {
			if nt, ok := arg(args, 1).(*pyGlobal); ok && nt.full != "torch.Tensor" {
				t.typeName = nt.full
			}
			if len(args) > 3 {
				t.extra = args[3]
			}
		}
		return v, true, nil
	case standJitList:
		return arg(args, 0), true, nil
	case standNDArray:
		cls := "numpy.ndarray"
		if g, ok := arg(args, 0).(*pyGlobal); ok {
			cls = g.raw
		}
		return &pyArray{cls: cls, src: c.src}, true, nil
	case standDType:
		code, _ := arg(args, 0).(string)
		return &pyDType{code: code, order: '=', elsize: -1}, true, nil
	case standNumpyScalar:
		return c.numpyScalar(args)
	case standFromBuffer:
		dt, _ := arg(args, 1).(*pyDType)
		shape, _ := toInts(arg(args, 2))
		order, _ := arg(args, 3).(string)
		a := &pyArray{cls: "numpy.ndarray", shape: shape, dtype: dt, fortran: order == "F", raw: arg(args, 0), src: c.src}
		return a, true, nil
	}
	return nil, false, nil
}

func (c *unpickleCtx) instantiate(cls any, args []any) (any, bool, error) {
	if g, ok := cls.(*pyGlobal); ok {
		v, err := c.newObj(g, args)
		return v, true, err
	}
	return &pyObject{cls: cls, args: args}, true, nil
}

func pairOf(v any) ([2]any, bool) {
	var items []any
	switch x := v.(type) {
	case *types.List:
		items = *x
	case *types.Tuple:
		items = *x
	}
	if len(items) != 2 {
		return [2]any{}, false
	}
	return [2]any{items[0], items[1]}, true
}

func iterItems(v any) []any {
	switch x := v.(type) {
	case *types.List:
		return *x
	case *types.Tuple:
		return *x
	case *pySet:
		return x.items
	case *types.Set:
		out := make([]any, 0, len(*x))
		for k := range *x {
			out = append(out, k)
		}
		return out
	case *types.FrozenSet:
		out := make([]any, 0, len(*x))
		for k := range *x {
			out = append(out, k)
		}
		return out
	case *types.Dict:
		out := make([]any, 0, len(*x))
		for _, e := range *x {
			out = append(out, e.Key)
		}
		return out
	}
	return nil
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case *big.Int:
		f, _ := new(big.Float).SetInt(x).Float64()
		return f, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func latin1(s string) []byte {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			r = '?'
		}
		b = append(b, byte(r))
	}
	return b
}

func datetimeText(kind string, args []any) string {
	var b []byte
	switch x := arg(args, 0).(type) {
	case []byte:
		b = x
	case string:
		b = latin1(x)
	}
	switch kind {
	case "datetime":
		if len(b) == 10 {
			us := int(b[7])<<16 | int(b[8])<<8 | int(b[9])
			t := time.Date(int(b[0])<<8|int(b[1]), time.Month(b[2]), int(b[3]), int(b[4]), int(b[5]), int(b[6]), us*1000, time.UTC)
			s := t.Format("2006-01-02T15:04:05.999999")
			if len(args) > 1 {
				s += " (tz " + reprValue(args[1]) + ")"
			}
			return s
		}
	case "date":
		if len(b) == 4 {
			return fmt.Sprintf("%04d-%02d-%02d", int(b[0])<<8|int(b[1]), b[2], b[3])
		}
	case "time":
		if len(b) == 6 {
			us := int(b[3])<<16 | int(b[4])<<8 | int(b[5])
			s := fmt.Sprintf("%02d:%02d:%02d", b[0], b[1], b[2])
			if us != 0 {
				s += fmt.Sprintf(".%06d", us)
			}
			return s
		}
	case "timedelta":
		d, _ := toInt64(arg(args, 0))
		sec, _ := toInt64(arg(args, 1))
		us, _ := toInt64(arg(args, 2))
		return fmt.Sprintf("timedelta(days=%d, seconds=%d, microseconds=%d)", d, sec, us)
	}
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = reprValue(a)
	}
	return kind + "(" + strings.Join(parts, ", ") + ")"
}

// errNotStandIn is a stand-in declining a call it cannot model: the value stays opaque.
var errNotStandIn = errors.New("loader: not modelled")

func (c *unpickleCtx) rebuildTensor(args []any) (any, bool, error) {
	ps, ok := arg(args, 0).(*pyStorage)
	if t, isTuple := arg(args, 0).(*types.Tuple); isTuple && !ok {
		// a storage id pickled inline rather than as a persistent id (hand-built archives)
		if v, err := c.persistentLoad(t); err == nil {
			ps, ok = v.(*pyStorage)
		}
	}
	if !ok {
		return nil, true, fmt.Errorf("tensor rebuilt from %T, not a storage", arg(args, 0))
	}
	off, ok1 := toInt64(arg(args, 1))
	shape, ok2 := toInts(arg(args, 2))
	stride, ok3 := toInts(arg(args, 3))
	if !ok1 || !ok2 || !ok3 || len(shape) != len(stride) {
		return nil, true, fmt.Errorf("tensor has malformed size/stride/offset")
	}
	t := &pyTensor{storage: ps, offset: off, shape: shape, stride: stride, typeName: "torch.Tensor"}
	if rg, ok := arg(args, 4).(bool); ok {
		t.requiresGrad = rg
	}
	return t, true, nil
}

func (c *unpickleCtx) numpyScalar(args []any) (any, bool, error) {
	dt, ok := arg(args, 0).(*pyDType)
	if !ok {
		return nil, false, nil
	}
	var b []byte
	switch x := arg(args, 1).(type) {
	case []byte:
		b = x
	case string:
		b = latin1(x)
	default:
		return nil, false, nil
	}
	name, size, order := dt.resolve()
	typ := "numpy." + name
	var bo binary.ByteOrder = binary.LittleEndian
	if order == '>' {
		bo = binary.BigEndian
	}
	val := func() any {
		if size > 0 && len(b) < size {
			return nil
		}
		switch name {
		case "float64":
			return math.Float64frombits(bo.Uint64(b))
		case "float32":
			return float64(math.Float32frombits(bo.Uint32(b)))
		case "float16":
			return float64(tensor.HalfToFloat(bo.Uint16(b)))
		case "int64":
			return int(int64(bo.Uint64(b)))
		case "int32":
			return int(int32(bo.Uint32(b)))
		case "int16":
			return int(int16(bo.Uint16(b)))
		case "int8":
			return int(int8(b[0]))
		case "uint64":
			return new(big.Int).SetUint64(bo.Uint64(b))
		case "uint32":
			return int(bo.Uint32(b))
		case "uint16":
			return int(bo.Uint16(b))
		case "uint8":
			return int(b[0])
		case "bool":
			typ = "numpy.bool_"
			return b[0] != 0
		case "complex128":
			return complex(math.Float64frombits(bo.Uint64(b)), math.Float64frombits(bo.Uint64(b[8:])))
		case "complex64":
			return complex(float64(math.Float32frombits(bo.Uint32(b))), float64(math.Float32frombits(bo.Uint32(b[4:]))))
		}
		return nil
	}()
	if val == nil {
		return &pyObject{typeName: typ, display: typ + "(0x" + fmt.Sprintf("%x", b) + ")"}, true, nil
	}
	return &numpyScalar{typeName: typ, value: val}, true, nil
}

// numpyScalar is a numpy scalar (np.float32(1.5)): a plain value with a numpy type.
type numpyScalar struct {
	typeName string
	value    any
}

// setState applies a numpy dtype's BUILD state: (version, byteorder, subarray, names,
// fields, elsize, alignment, flags).
func (d *pyDType) setState(state any) error {
	t, ok := state.(*types.Tuple)
	if !ok || t.Len() < 2 {
		return nil
	}
	items := *t
	if s, ok := items[1].(string); ok && len(s) == 1 {
		d.order = s[0]
	}
	if len(items) >= 8 {
		if names, ok := items[3].(*types.Tuple); ok {
			for _, n := range *names {
				if s, ok := n.(string); ok {
					d.names = append(d.names, s)
				}
			}
			d.fields = items[4]
		}
		if n, ok := toInt64(items[5]); ok && n > 0 {
			d.elsize = int(n)
		}
	}
	return nil
}

// resolve returns the numpy dtype name, item size and byte order.
func (d *pyDType) resolve() (string, int, byte) {
	code := d.code
	order := d.order
	if code != "" && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=') {
		order = code[0]
		code = code[1:]
	}
	if order == '=' {
		order = '<'
	}
	if code == "" {
		return "void", 0, order
	}
	kind := code[0]
	n, _ := strconv.Atoi(code[1:])
	if d.elsize > 0 {
		n = d.elsize
		if kind == 'U' && d.elsize > 0 {
			n = d.elsize // bytes already
		}
	} else if kind == 'U' {
		n *= 4
	}
	if len(d.names) > 0 {
		return fmt.Sprintf("void%d", n*8), n, order
	}
	switch kind {
	case 'f':
		switch n {
		case 2:
			return "float16", 2, order
		case 4:
			return "float32", 4, order
		case 8:
			return "float64", 8, order
		case 16:
			return "float128", 16, order
		}
	case 'i':
		return fmt.Sprintf("int%d", n*8), n, order
	case 'u':
		return fmt.Sprintf("uint%d", n*8), n, order
	case 'b':
		return "bool", 1, '|'
	case 'c':
		return fmt.Sprintf("complex%d", n*8), n, order
	case 'O':
		return "object", 8, '|'
	case 'U':
		return fmt.Sprintf("str%d", n*8), n, order
	case 'S':
		return fmt.Sprintf("bytes%d", n*8), n, '|'
	case 'V':
		return fmt.Sprintf("void%d", n*8), n, '|'
	case 'M':
		return "datetime64", 8, order
	case 'm':
		return "timedelta64", 8, order
	}
	return code, n, order
}

// structField is one field of a structured dtype.
type structField struct {
	name   string
	dtype  *pyDType
	offset int64
}

// maxSpread bounds the fields a structured dtype's nesting spells out, shared sub-dtypes
// counted each time they are met (its descr's length and the columns shown grow with it):
// a pickle's memo can make a dtype that holds itself, or a few that hold each other many
// times over, which no numpy dtype is.
const maxSpread = 100_000

// spreadOf is how many fields d spells out through its nested fields (1 for a plain dtype),
// or more than maxSpread when they are too many or lead back to d. Each dtype is counted
// once (memoized on it), so the count takes time in the number of dtypes, not of fields.
func (d *pyDType) spreadOf() int {
	if d.spread != 0 {
		return d.spread
	}
	d.spread = maxSpread + 1 // while it is counted: a field that leads back here is too many
	n := 1
	if fd, ok := d.fields.(*types.Dict); ok {
		for _, name := range d.names {
			v, _ := fd.Get(name)
			if t, ok := v.(*types.Tuple); ok && t.Len() >= 1 {
				if sub, ok := t.Get(0).(*pyDType); ok {
					n += sub.spreadOf()
				}
			}
			if n > maxSpread {
				n = maxSpread + 1
				break
			}
		}
	}
	d.spread = n
	return n
}

// structFields lists a structured dtype's fields in order, or nil when they are unknown
// (or more, through their nesting, than maxSpread).
func (d *pyDType) structFields() []structField {
	fd, ok := d.fields.(*types.Dict)
	if !ok || len(d.names) == 0 || d.spreadOf() > maxSpread {
		return nil
	}
	var out []structField
	for _, name := range d.names {
		v, ok := fd.Get(name)
		t, ok2 := v.(*types.Tuple)
		if !ok || !ok2 || t.Len() < 2 {
			return nil
		}
		sub, ok := t.Get(0).(*pyDType)
		off, ok2 := toInt64(t.Get(1))
		if !ok || !ok2 {
			return nil
		}
		out = append(out, structField{name: name, dtype: sub, offset: off})
	}
	return out
}

// fieldDescr is a field's descr as numpy writes it in dtype.descr: "<i8", or with its shape.
func (d *pyDType) fieldDescr() string {
	s := d.descr()
	if len(d.subShape) > 0 {
		parts := make([]string, len(d.subShape))
		for i, n := range d.subShape {
			parts[i] = strconv.FormatInt(n, 10)
		}
		sh := strings.Join(parts, ", ")
		if len(parts) == 1 {
			sh += ","
		}
		return "(" + pyQuote(s) + ", (" + sh + "))"
	}
	return pyQuote(s)
}

// descr is numpy's description of the dtype: dtype.str for plain ones ("<f4"); for
// structured ones dtype.descr, the list .npy headers hold ("[('x', '<i4'), ...]", each gap
// a void field with an empty name), or, for fields out of offset order or overlapping,
// which dtype.descr cannot say, numpy's repr: {'names': [...], 'formats': [...],
// 'offsets': [...], 'itemsize': n}.
func (d *pyDType) descr() string {
	name, size, order := d.resolve()
	if len(d.names) > 0 {
		fs := d.structFields()
		if fs == nil {
			return fmt.Sprintf("structured %s: fields %s", name, strings.Join(d.names, ", "))
		}
		if l, ok := descrList(fs, int64(size)); ok {
			return l
		}
		names, formats, offsets := make([]string, len(fs)), make([]string, len(fs)), make([]string, len(fs))
		for i, f := range fs {
			names[i] = pyQuote(f.name)
			formats[i] = f.dtype.fieldDescr()
			offsets[i] = strconv.FormatInt(f.offset, 10)
		}
		return fmt.Sprintf("{'names': [%s], 'formats': [%s], 'offsets': [%s], 'itemsize': %d}",
			strings.Join(names, ", "), strings.Join(formats, ", "), strings.Join(offsets, ", "), size)
	}
	if name == "object" {
		return "|O"
	}
	_ = name
	code := d.code
	if code != "" && strings.ContainsRune("<>|=", rune(code[0])) {
		code = code[1:]
	}
	if code == "" {
		return ""
	}
	if code[0] == 'U' {
		size /= 4 // numpy counts str in characters of 4 bytes
	}
	return fmt.Sprintf("%c%c%d", order, code[0], size)
}

// descrList is numpy's dtype.descr of a structured dtype (numpy/core/_internal.py's
// _array_descr): the fields in order, each (name, descr) or (name, descr, shape), with a
// void field of empty name for each gap and for padding up to the itemsize. ok is false
// when the fields are out of offset order or overlap, where numpy raises instead.
func descrList(fs []structField, itemsize int64) (string, bool) {
	var parts []string
	var off int64
	for _, f := range fs {
		if f.offset > off {
			parts = append(parts, fmt.Sprintf("('', '|V%d')", f.offset-off))
			off = f.offset
		}
		if f.offset < off {
			return "", false
		}
		_, fsize, _ := f.dtype.resolve()
		unit := int64(fsize)
		for _, n := range f.dtype.subShape {
			unit *= n
		}
		inner := f.dtype.descr()
		if len(f.dtype.names) == 0 {
			inner = pyQuote(inner)
		}
		if len(f.dtype.subShape) > 0 {
			dims := make([]string, len(f.dtype.subShape))
			for i, n := range f.dtype.subShape {
				dims[i] = strconv.FormatInt(n, 10)
			}
			sh := strings.Join(dims, ", ")
			if len(dims) == 1 {
				sh += ","
			}
			parts = append(parts, "("+pyQuote(f.name)+", "+inner+", ("+sh+"))")
		} else {
			parts = append(parts, "("+pyQuote(f.name)+", "+inner+")")
		}
		off += unit
	}
	if itemsize > off {
		parts = append(parts, fmt.Sprintf("('', '|V%d')", itemsize-off))
	}
	return "[" + strings.Join(parts, ", ") + "]", true
}

// setState applies an ndarray's BUILD state: (version, shape, dtype, is_fortran, rawdata).
func (a *pyArray) setState(state any) error {
	t, ok := state.(*types.Tuple)
	if !ok {
		return fmt.Errorf("ndarray state is %T, not a tuple", state)
	}
	items := *t
	if len(items) == 5 {
		items = items[1:]
	}
	if len(items) != 4 {
		return fmt.Errorf("ndarray state has %d fields", len(*t))
	}
	shape, ok := toInts(items[0])
	if !ok {
		return fmt.Errorf("ndarray shape is not a tuple of ints")
	}
	dt, ok := items[1].(*pyDType)
	if !ok {
		return fmt.Errorf("ndarray dtype is %T", items[1])
	}
	a.shape, a.dtype = shape, dt
	a.fortran, _ = items[2].(bool)
	a.raw = items[3]
	return nil
}

// reprValue renders a gopickle value the way Python's repr would, briefly.
func reprValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int:
		return strconv.Itoa(x)
	case *big.Int:
		if x.BitLen() > 20000 {
			return fmt.Sprintf("<int of %d bits>", x.BitLen())
		}
		return x.String()
	case float64:
		return pyrepr.Float(x)
	case string:
		return pyQuote(clip(x))
	case []byte:
		return pyrepr.Bytes(x, 64)
	case complex128:
		return pyrepr.Complex(x)
	case *types.Tuple:
		parts := reprItems(*x)
		if len(parts) == 1 {
			return "(" + parts[0] + ",)"
		}
		return "(" + strings.Join(parts, ", ") + ")"
	case *pyGlobal:
		return x.full
	case *numpyScalar:
		return reprValue(x.value)
	case *pyObject:
		if x.display != "" {
			return x.display
		}
	case *pySet:
		parts := reprItems(x.items)
		if len(parts) == 0 {
			return typeOf(x) + "()"
		}
		return typeOf(x) + "({" + strings.Join(parts, ", ") + "})"
	case *pyTensor:
		// a tensor as a dict key (an optimizer's state, keyed by its parameters)
		dtype := "?"
		if x.storage != nil && x.storage.st != nil {
			dtype = x.storage.st.DType
		}
		typ := typeOf(x)
		return "<" + typ[strings.LastIndexByte(typ, '.')+1:] + " " + dtype + shapeText(x.shape) + ">"
	case *pyArray:
		return "<" + typeOf(x) + shapeText(x.shape) + ">"
	}
	return "<" + typeOf(v) + ">"
}

// reprItems is the repr of a container's first 8 items, and "…" for the rest.
func reprItems(items []any) []string {
	parts := make([]string, 0, min(len(items), 9))
	for i, it := range items {
		if i >= 8 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, reprValue(it))
	}
	return parts
}

// shapeText is a shape as the pages write it: "[3, 4]".
func shapeText(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// typeOf is the Python type of v, by its qualified name.
func typeOf(v any) string {
	switch x := v.(type) {
	case *pyObject:
		return objectType(x)
	case *pyGlobal:
		return x.full
	case *pyTensor:
		if x.typeName != "" {
			return x.typeName
		}
		return "torch.Tensor"
	case *pySparse, tensorRef:
		return "torch.Tensor"
	case *pyStorage:
		return "torch.storage.TypedStorage"
	case *pyArray:
		if x.cls != "" {
			return x.cls
		}
		return "numpy.ndarray"
	case *pyDict:
		if x.typeName != "" {
			return x.typeName
		}
		return "dict"
	case *pySet:
		if x.frozen {
			return "frozenset"
		}
		return "set"
	case *types.List:
		return "list"
	case *types.Dict:
		return "dict"
	case *types.Set:
		return "set"
	case *types.FrozenSet:
		return "frozenset"
	case *types.ByteArray:
		return "bytearray"
	case *types.OrderedDict:
		return "collections.OrderedDict"
	}
	return "object"
}

func objectType(o *pyObject) string {
	if o.typeName != "" {
		return o.typeName
	}
	switch c := o.cls.(type) {
	case *pyGlobal:
		return c.raw
	case *pyObject:
		return objectType(c) + "(…)"
	}
	return "object"
}
