package loader

import "strings"

// Classification of a global by what Python would do on importing and calling it.
type globalClass int

const (
	globalUnknown globalClass = iota // not on the allowlist: shown as an opaque object, warning
	globalSafe                       // on the allowlist: a pure-Go stand-in or a known data class
	globalDanger                     // would run code, touch files, processes or the network
)

// dangerModules are modules any of whose globals can run code or reach the system. A module
// matches itself and its submodules.
var dangerModules = []string{
	"os", "posix", "nt", "subprocess", "sys", "runpy", "importlib", "imp", "pickle", "_pickle",
	"cPickle", "pickletools", "dill", "cloudpickle", "joblib.externals.cloudpickle", "socket",
	"_socket", "shutil", "webbrowser", "ctypes", "_ctypes", "pty", "commands", "popen2",
	"multiprocessing", "asyncio", "code", "codeop", "bdb", "pdb", "pydoc", "timeit", "pip",
	"venv", "ensurepip", "setuptools", "distutils", "http", "httplib", "urllib", "urllib2",
	"urllib3", "requests", "ssl", "_ssl", "ftplib", "smtplib", "telnetlib", "poplib", "imaplib",
	"nntplib", "xmlrpc", "xmlrpclib", "_io", "io", "tempfile", "glob", "marshal", "zipimport",
	"pkgutil", "_pyrepl", "signal", "resource", "inspect", "site", "sysconfig", "trace",
	"profile", "cProfile", "doctest", "idlelib", "lib2to3", "tkinter", "Tkinter", "turtle",
	"logging", "types", "builtins.__import__", "gc", "fcntl", "mmap", "select", "selectors",
	"threading", "_thread", "thread", "concurrent", "sqlite3", "dbm", "shelve", "zipfile",
	"tarfile", "filecmp", "fileinput", "linecache", "operator", "_operator", "functools",
	"numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.load", "numpy.lib.npyio",
	"torch.serialization", "torch._inductor", "torch.utils.bottleneck", "torch.hub",
	"torch.jit.load", "torch.load", "torch.fx.experimental.symbolic_shapes", "torch._dynamo",
	"torch.utils.cpp_extension", "torch.package", "torch.distributed", "torch.utils.data.datapipes",
	"torch._C._jit", "torch.testing", "pandas.io", "pandas.read_pickle", "yaml", "jinja2",
	"IPython", "jupyter_client", "keras.models", "tensorflow", "dask", "ray", "builtins.open",
	"__main__.__builtins__", "bz2", "lzma", "gzip", "_posixsubprocess", "uuid", "platform",
	"getpass", "crypt", "spwd", "pwd", "grp", "ftplib", "socketserver", "SocketServer", "wsgiref",
	"xml", "cgi", "cgitb", "smtpd", "asynchat", "asyncore", "contextlib",
}

// dangerBuiltins are the builtins that evaluate code, import modules, reach attributes by
// name, open files or change objects.
var dangerBuiltins = map[string]bool{
	"eval": true, "exec": true, "execfile": true, "compile": true, "__import__": true,
	"getattr": true, "setattr": true, "delattr": true, "open": true, "file": true,
	"input": true, "raw_input": true, "breakpoint": true, "globals": true, "locals": true,
	"vars": true, "apply": true, "reload": true, "help": true, "exit": true, "quit": true,
	"type": true, "super": true, "__build_class__": true, "classmethod": true, "staticmethod": true,
}

// standIn says how a call (REDUCE) of an allowlisted global is built in Go: each kind is one
// case of unpickleCtx.standIn, which names no global. The names are in standIns only.
type standIn uint8

// The kinds of stand-in; dataClass is an allowlisted global without one: a data class whose
// objects keep their class, arguments and state (torch.nn module classes, storages, dtypes).
const (
	dataClass          standIn = iota
	standDict                  // a dict subclass: its entries
	standSet                   // a set or frozenset of its items
	standList                  // a list of its items
	standTuple                 // a tuple of its items
	standComplex               // a complex number
	standBytes                 // bytes or a bytearray
	standSliceRange            // a slice or range, shown by its arguments
	standScalar                // int(), float(), str(), bool(), torch.Size(): the value itself
	standReconstructor         // copyreg._reconstructor: an object of its class
	standNewObj                // copyreg.__newobj__: an object of its class
	standCodecsEncode          // _codecs.encode of a str: its bytes
	standDatetime              // a datetime value, shown as Python shows it
	standDisplayArg            // a value shown by its str argument (Decimal, UUID...)
	standDevice                // torch.device
	standRebuildTensor         // a tensor viewing a storage
	standLoadFromBytes         // a storage saved as a nested torch file
	standGetLayout             // a tensor layout by name
	standSparse                // a sparse tensor
	standQTensor               // a quantized tensor
	standParameter             // an nn.Parameter of its tensor
	standFromType              // a tensor subclass of its tensor
	standJitList               // TorchScript's typed lists: the list itself
	standNDArray               // a numpy array, filled by its state
	standDType                 // a numpy dtype
	standNumpyScalar           // a numpy scalar
	standFromBuffer            // a numpy array over a buffer (protocol 5)
)

// standIns are the allowlisted globals that have a stand-in, by kind.
var standIns = map[standIn][]string{
	standDict:          {"collections.OrderedDict", "builtins.dict", "collections.defaultdict", "collections.Counter"},
	standSet:           {"builtins.set", "builtins.frozenset"},
	standList:          {"builtins.list", "collections.deque"},
	standTuple:         {"builtins.tuple"},
	standComplex:       {"builtins.complex"},
	standBytes:         {"builtins.bytearray", "builtins.bytes"},
	standSliceRange:    {"builtins.slice", "builtins.range"},
	standScalar:        {"builtins.int", "builtins.float", "builtins.str", "builtins.bool", "torch.Size"},
	standReconstructor: {"copyreg._reconstructor"},
	standNewObj:        {"copyreg.__newobj__", "copyreg.__newobj_ex__"},
	standCodecsEncode:  {"_codecs.encode"},
	standDatetime:      {"datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta"},
	standDisplayArg:    {"decimal.Decimal", "fractions.Fraction", "torch.torch_version.TorchVersion", "uuid.UUID"},
	standDevice:        {"torch.device"},
	standRebuildTensor: {"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3"},
	standLoadFromBytes: {"torch.storage._load_from_bytes"},
	standGetLayout:     {"torch.serialization._get_layout"},
	standSparse:        {"torch._utils._rebuild_sparse_tensor"},
	standQTensor:       {"torch._utils._rebuild_qtensor"},
	standParameter:     {"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"},
	standFromType:      {"torch._tensor._rebuild_from_type_v2", "torch._tensor._rebuild_from_type"},
	standJitList:       {"torch.jit._pickle.build_intlist", "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist", "torch.jit._pickle.build_tensorlist", "torch.jit._pickle.restore_type_tag"},
	standNDArray:       {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.core._internal._reconstruct"},
	standDType:         {"numpy.dtype", "numpy.core.numeric.dtype"},
	standNumpyScalar:   {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"},
	standFromBuffer:    {"numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer"},
}

// allowlist is every global a checkpoint may name that is pure data or a constructor modelled
// in Go, with its stand-in (dataClass for none). Exact names only: a prefix like torch.* or
// numpy.* would admit gadgets. It is made from standIns and the data classes below, so the
// allowlist and the stand-ins cannot drift apart.
var allowlist = map[string]standIn{}

// allowlisted reports whether a global (canonical name) is on the allowlist.
func allowlisted(full string) bool {
	_, ok := allowlist[full]
	return ok
}

func init() {
	for kind, names := range standIns {
		for _, n := range names {
			allowlist[n] = kind
		}
	}
	// the data classes: allowlisted, built as objects of their class
	for _, s := range []string{
		// containers and scalars
		"types.SimpleNamespace",
		"builtins.object",
		"builtins.NoneType",
		"builtins.Ellipsis", "builtins.NotImplemented",
		"copy_reg._reconstructor",
		"copy_reg.__newobj__",
		"datetime.timezone", "argparse.Namespace",
		"re._compile", "enum.Enum", "pathlib.PurePosixPath",
		// torch tensors and storages
		"torch._utils._rebuild_meta_tensor_no_storage",
		"torch._utils._rebuild_device_tensor_from_numpy", "torch._utils._rebuild_wrapper_subclass",
		"torch.nn.parameter.Parameter", "torch.Tensor", "torch._utils._restore_device_fake_mode",
		"torch.storage.UntypedStorage",
		"torch.storage._load_from_bytes_noop",
		"torch.jit._pickle.build_tensor_from_id",
		"torch.per_tensor_affine", "torch.per_channel_affine", "torch.per_tensor_symmetric",
		"torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
		"torch.contiguous_format", "torch.channels_last", "torch.preserve_format",
		"torch.strided", "torch.sparse_coo", "torch.sparse_csr",
		"torch.optim.adam.Adam", "torch.optim.sgd.SGD", "torch.optim.adamw.AdamW",
		// numpy arrays, dtypes, scalars
		"numpy.ndarray",
		"numpy.matrixlib.defmatrix.matrix", "numpy.ma.core._mareconstruct",
		"numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
		"numpy.random._pickle.__generator_ctor", "numpy.random.__RandomState_ctor",
		"numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
		// joblib's array wrapper: its state is read, the array data after it is a byte range
		"joblib.numpy_pickle.NumpyArrayWrapper", "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
	} {
		allowlist[s] = dataClass
	}
	for _, d := range []string{"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
		"Char", "Byte", "Bool", "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32",
		"QUInt4x2", "QUInt2x4", "Float8_e4m3fn", "Float8_e5m2", "Float8_e4m3fnuz", "Float8_e5m2fnuz",
		"UInt16", "UInt32", "UInt64"} {
		allowlist["torch."+d+"Storage"] = dataClass
		allowlist["torch.cuda."+d+"Storage"] = dataClass
	}
	for _, d := range []string{"float32", "float", "float64", "double", "float16", "half",
		"bfloat16", "int8", "int16", "short", "int32", "int", "int64", "long", "uint8", "bool",
		"complex64", "complex128", "cfloat", "cdouble", "qint8", "quint8", "qint32",
		"uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"} {
		allowlist["torch."+d] = dataClass
	}
	// Module classes of torch.nn: pickled whole models name them; building them is
	// object.__new__ plus a __dict__ update, nothing runs.
	for mod, names := range map[string][]string{
		"linear":        {"Linear", "Identity", "Bilinear", "LazyLinear"},
		"conv":          {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"},
		"batchnorm":     {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"},
		"normalization": {"LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm"},
		"instancenorm":  {"InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"},
		"sparse":        {"Embedding", "EmbeddingBag"},
		"dropout":       {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout"},
		"activation": {"ReLU", "ReLU6", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax",
			"LeakyReLU", "ELU", "PReLU", "Mish", "Hardswish", "Hardtanh", "Softplus", "MultiheadAttention", "GLU"},
		"container":    {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"},
		"rnn":          {"LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"},
		"pooling":      {"MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"},
		"flatten":      {"Flatten", "Unflatten"},
		"transformer":  {"Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer"},
		"loss":         {"CrossEntropyLoss", "MSELoss", "BCELoss", "BCEWithLogitsLoss", "NLLLoss", "L1Loss"},
		"padding":      {"ZeroPad2d", "ConstantPad1d", "ReflectionPad2d"},
		"pixelshuffle": {"PixelShuffle"},
		"upsampling":   {"Upsample"},
	} {
		for _, n := range names {
			allowlist["torch.nn.modules."+mod+"."+n] = dataClass
		}
	}
}

// vettedCalls are globals that benign checkpoints call with arguments (REDUCE) and that are
// data classes: constructing them stores the arguments and runs nothing else. Calling any
// other global that is not a stand-in is a danger (scanner.judge).
var vettedCalls = map[string]bool{
	// scikit-learn: Tree(n_features, n_classes, n_outputs) allocates its arrays; its nodes
	// and values come in the state
	"sklearn.tree._tree.Tree": true,
	// pandas: blocks, indexes and managers of DataFrames rebuilt from their arrays
	"pandas._libs.internals._unpickle_block": true, "pandas.core.indexes.base._new_Index": true,
	"pandas.core.internals.managers.BlockManager": true, "pandas.core.internals.managers.SingleBlockManager": true,
	"pandas._libs.tslibs.timestamps._unpickle_timestamp": true, "pandas._libs.tslibs.timedeltas._timedelta_unpickle": true,
	// pathlib: a path value (no file is touched)
	"pathlib.PosixPath": true, "pathlib.WindowsPath": true, "pathlib.PurePosixPath": true,
	"pathlib.PureWindowsPath": true, "pathlib.Path": true,
	// enums of public projects pickled as Enum members are (their class, (value,))
	"pyannote.audio.core.task.Problem": true, "pyannote.audio.core.task.Resolution": true,
}

// canonicalGlobal maps Python 2 module spellings to their Python 3 names, so one allowlist
// and one denylist serve both.
func canonicalGlobal(module, name string) string {
	switch module {
	case "__builtin__":
		module = "builtins"
		if name == "xrange" {
			name = "range"
		} else if name == "unicode" {
			name = "str"
		} else if name == "long" {
			name = "int"
		} else if name == "basestring" {
			name = "str"
		}
	case "copy_reg":
		module = "copyreg"
	}
	return module + "." + name
}

// classifyGlobal says whether module.name is safe, dangerous or unknown.
func classifyGlobal(module, name string) globalClass {
	full := canonicalGlobal(module, name)
	if allowlisted(full) {
		return globalSafe
	}
	if strings.HasPrefix(full, "builtins.") {
		if dangerBuiltins[strings.TrimPrefix(full, "builtins.")] {
			return globalDanger
		}
		return globalUnknown
	}
	for _, m := range dangerModules {
		if full == m || strings.HasPrefix(full, m+".") || module == m || strings.HasPrefix(module, m+".") {
			return globalDanger
		}
	}
	// An attribute that is itself a module of the system (random._os is the os module).
	switch name {
	case "os", "_os", "sys", "_sys", "subprocess", "_subprocess", "posix", "nt", "builtins",
		"__builtins__", "__builtin__", "_posixsubprocess", "shutil", "socket", "importlib":
		return globalDanger
	}
	// A dotted qualname (bdb Bdb.run) or a name with odd characters is a method reached
	// through attribute lookup: never data.
	if strings.Contains(name, ".") && !strings.HasPrefix(module, "__torch__") {
		return globalDanger
	}
	return globalUnknown
}
