package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/pyrepr"
)

// A set is several files opened as one checkpoint: a sharded checkpoint (an index such as
// model.safetensors.index.json or pytorch_model.bin.index.json with its shards), or files
// uploaded together. With an index, the tree is the index's weight_map: every tensor name,
// in the index's order, taken from the shard the index names for it (never found by globbing
// names), with the shard named in its storage. Without one, the root has one entry per file.

// File is one file of a set.
type File struct {
	Name string
	R    io.ReaderAt
	Size int64
}

// maxIndexBytes bounds a shard index read into memory.
const maxIndexBytes = 64 << 20

// OpenSet opens files as one checkpoint.
func OpenSet(files []File, opts Options) (*ckpt.Checkpoint, error) {
	o := opts.withDefaults()
	if len(files) == 0 {
		return nil, &Error{Msg: "no files", Offset: -1}
	}
	var indexes []File
	byName := map[string]File{}
	for _, f := range files {
		if _, dup := byName[f.Name]; dup {
			return nil, &Error{Msg: fmt.Sprintf("two files of the set are named %s", f.Name), Offset: -1}
		}
		byName[f.Name] = f
		if strings.HasSuffix(f.Name, ".index.json") {
			indexes = append(indexes, f)
		}
	}
	ck := &ckpt.Checkpoint{BytesByDType: map[string]int64{}}
	if done, err := openGGUFSplit(ck, files, o); done {
		if err != nil {
			return nil, err
		}
		reindex(ck)
		return ck, nil
	}
	var err error
	switch {
	case len(indexes) > 1:
		names := make([]string, len(indexes))
		for i, f := range indexes {
			names[i] = f.Name
		}
		return nil, &Error{Msg: "the set holds more than one shard index (" + strings.Join(names, ", ") + "); upload each sharded checkpoint on its own", Offset: -1}
	case len(indexes) == 1:
		err = openSharded(ck, indexes[0], byName, o)
	default:
		err = openFiles(ck, files, o)
	}
	if err != nil {
		ck.Close()
		return nil, err
	}
	reindex(ck)
	return ck, nil
}

// shardIndex is the JSON of a Hugging Face shard index.
type shardIndex struct {
	Metadata  map[string]any
	WeightMap [][2]string // tensor name -> shard file, in the file's order
}

// parseShardIndex reads {"metadata": {...}, "weight_map": {name: file, ...}} keeping the
// weight_map's order and refusing a name given twice.
func parseShardIndex(b []byte) (*shardIndex, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	idx := &shardIndex{}
	sawMap := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, jsonErr(err)
		}
		switch t.(string) {
		case "metadata":
			if err := dec.Decode(&idx.Metadata); err != nil {
				return nil, fmt.Errorf("metadata: %v", jsonErr(err))
			}
		case "weight_map":
			sawMap = true
			if t, err := dec.Token(); err != nil || t != json.Delim('{') {
				return nil, fmt.Errorf("weight_map is not an object")
			}
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, jsonErr(err)
				}
				var file string
				if err := dec.Decode(&file); err != nil {
					return nil, fmt.Errorf("weight_map[%s] is not a file name", pyrepr.Quote(k.(string)))
				}
				if seen[k.(string)] {
					return nil, fmt.Errorf("weight_map names the tensor %s twice", pyrepr.Quote(k.(string)))
				}
				seen[k.(string)] = true
				idx.WeightMap = append(idx.WeightMap, [2]string{k.(string), file})
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonErr(err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, jsonErr(err)
			}
		}
	}
	if !sawMap {
		return nil, fmt.Errorf("it has no weight_map")
	}
	return idx, nil
}

func openSharded(ck *ckpt.Checkpoint, index File, byName map[string]File, o Options) error {
	if index.Size > maxIndexBytes {
		return &Error{Msg: fmt.Sprintf("the shard index %s is larger than %d MiB", index.Name, maxIndexBytes>>20), Offset: -1}
	}
	raw := make([]byte, index.Size)
	if _, err := index.R.ReadAt(raw, 0); err != nil && err != io.EOF {
		return fmt.Errorf("loader: read %s: %w", index.Name, err)
	}
	idx, err := parseShardIndex(raw)
	if err != nil {
		return &Error{Msg: fmt.Sprintf("the shard index %s is not valid: %v", index.Name, err), Offset: -1}
	}
	// the shards, in the order the index first names them
	var shardNames []string
	shardOf := map[string]string{}
	for _, kv := range idx.WeightMap {
		if _, ok := shardOf[kv[1]]; !ok {
			shardNames = append(shardNames, kv[1])
			shardOf[kv[1]] = kv[1]
		}
	}
	opened := map[string]*ckpt.Checkpoint{}
	var missing []string
	formats := map[string]bool{}
	for _, name := range shardNames {
		f, ok := byName[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		sck, err := Open(f.R, f.Size, o)
		if err != nil {
			var le *Error
			if errors.As(err, &le) {
				le.Msg = name + ": " + le.Msg
				for i := range le.Findings {
					le.Findings[i].Where = name + ": " + le.Findings[i].Where
				}
			}
			return err
		}
		ck.AddCloser(sck)
		opened[name] = sck
		formats[sck.Format] = true
		absorb(ck, sck, name, "")
	}
	var fs []string
	for f := range formats {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	ck.Format = "sharded " + strings.Join(fs, "+")
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "sharded checkpoint"}
	used := map[string]bool{} // shard and segment: a shard's lazily made entries are new nodes at each lookup
	absent := 0
	for _, kv := range idx.WeightMap {
		name, shard := kv[0], kv[1]
		sck := opened[shard]
		if sck == nil {
			continue
		}
		n, err := sck.Node("/" + ckpt.EscapeSegment(name))
		if err != nil {
			absent++
			if absent <= 5 {
				ck.Notes = append(ck.Notes, fmt.Sprintf("the index puts %s in %s, which does not hold it", pyrepr.Quote(name), shard))
			}
			continue
		}
		used[shard+"\x00"+n.Seg] = true
		root.Children = append(root.Children, graft(n, name, name))
	}
	if absent > 5 {
		ck.Notes = append(ck.Notes, fmt.Sprintf("%d tensors of the index are not in the shard it names", absent))
	}
	// tensors a shard holds that the index does not name: transformers loads them too
	extra := 0
	for _, name := range shardNames {
		sck := opened[name]
		if sck == nil || sck.Root == nil {
			continue
		}
		for _, k := range sck.Root.All() {
			if used[name+"\x00"+k.Seg] || k.Attr {
				continue
			}
			extra++
			key := name + ":" + k.Key
			root.Children = append(root.Children, graft(k, key, key))
		}
	}
	root.Len = int64(len(root.Children))
	ck.Root = root
	ck.Notes = append([]string{fmt.Sprintf("a sharded checkpoint: %s names %d tensors in %d shard(s); each tensor's storage names its shard", index.Name, len(idx.WeightMap), len(shardNames))}, ck.Notes...)
	if len(missing) > 0 {
		ck.Notes = append(ck.Notes, fmt.Sprintf("missing shard(s), not uploaded with the index: %s; their tensors are not shown", strings.Join(missing, ", ")))
	}
	if extra > 0 {
		ck.Notes = append(ck.Notes, fmt.Sprintf("%d tensor(s) are in a shard but not in the index; they are shown as shard:name (transformers loads every tensor of the shards it opens)", extra))
	}
	if len(idx.Metadata) > 0 {
		md := &ckpt.Node{Kind: ckpt.KindDict, Type: "dict", Key: "__metadata__", Seg: "__metadata__", Attr: true}
		keys := make([]string, 0, len(idx.Metadata))
		for k := range idx.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			md.Children = append(md.Children, jsonNode(idx.Metadata[k], k))
		}
		md.Len = int64(len(md.Children))
		root.Children = append(root.Children, md)
		root.Len = int64(len(root.Children))
	}
	return nil
}

// openFiles opens files uploaded together with no index: one entry per file.
func openFiles(ck *ckpt.Checkpoint, files []File, o Options) error {
	ck.Format = "set"
	root := &ckpt.Node{Kind: ckpt.KindDict, Type: "files"}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	if done, err := openSideCars(ck, sorted, o); done || err != nil {
		return err
	}
	for _, f := range sorted {
		sck, err := Open(f.R, f.Size, o)
		if err != nil {
			var le *Error
			if errors.As(err, &le) {
				le.Msg = f.Name + ": " + le.Msg
			}
			return err
		}
		ck.AddCloser(sck)
		seg := ckpt.EscapeSegment(f.Name)
		absorb(ck, sck, f.Name, "/"+seg)
		root.Children = append(root.Children, graft(sck.Root, f.Name, f.Name))
	}
	root.Len = int64(len(root.Children))
	ck.Root = root
	ck.Notes = append([]string{fmt.Sprintf("%d files uploaded together, each shown under its name", len(files))}, ck.Notes...)
	return nil
}

// openSideCars opens a joblib < 0.10 pickle with the side-car .npy files its
// NDArrayWrapper objects name (joblib/numpy_pickle_compat.py NDArrayWrapper.read loads
// os.path.join(the pickle's folder, wrapper.filename) with numpy.load): when the other files
// of the set are exactly such side-cars, the tree is the pickle's, each wrapper replaced by
// the array its side-car holds. It reports whether the set was such a one.
func openSideCars(ck *ckpt.Checkpoint, files []File, o Options) (bool, error) {
	if len(files) < 2 {
		return false, nil
	}
	opened := make([]*ckpt.Checkpoint, len(files))
	for i, f := range files {
		sck, err := Open(f.R, f.Size, o)
		if err != nil {
			for _, c := range opened[:i] {
				c.Close()
			}
			var le *Error
			if errors.As(err, &le) {
				le.Msg = f.Name + ": " + le.Msg
			}
			return true, err
		}
		opened[i] = sck
	}
	for mi, main := range opened {
		// the wrappers of this file and the side-cars they name
		wrappers := map[*ckpt.Node]int{}
		named := map[int]bool{}
		ckpt.Walk(main.Root, func(n *ckpt.Node) {
			if n.Kind != ckpt.KindObject || wrapperKind(n.Global) != "NDArrayWrapper" {
				return
			}
			for _, k := range n.Children {
				if k.Key == "filename" && k.Kind == ckpt.KindStr {
					for j, f := range files {
						if j != mi && (f.Name == k.Str || strings.HasSuffix(f.Name, "/"+k.Str)) {
							wrappers[n] = j
							named[j] = true
						}
					}
				}
			}
		})
		if len(named) != len(files)-1 {
			continue
		}
		for i, sck := range opened {
			ck.AddCloser(sck)
			absorb(ck, sck, files[i].Name, "")
		}
		for w, j := range wrappers {
			side := opened[j].Root
			if side.Tensor == nil {
				continue
			}
			typ := w.Type
			for _, k := range w.Children {
				if k.Key == "subclass" && k.Kind == ckpt.KindGlobal && k.Global != "numpy.ndarray" {
					typ = k.Global
				}
			}
			key, seg, path, parent := w.Key, w.Seg, w.Path(), w.Parent()
			*w = *side
			w.Key, w.Seg = key, seg
			w.SetParent(parent)
			w.Type = "numpy.ndarray"
			if typ != "" && !strings.HasSuffix(typ, "NDArrayWrapper") {
				w.Type = typ
			}
			graftAt(w, side.Path(), path)
		}
		ck.Root = main.Root
		ck.Format = "joblib"
		ck.Notes = append([]string{fmt.Sprintf("a joblib < 0.10 pickle (%s) with the %d side-car file(s) its NDArrayWrapper objects name, shown in place as joblib.load reads them", files[mi].Name, len(files)-1)}, ck.Notes...)
		return true, nil
	}
	for _, c := range opened {
		c.Close()
	}
	return false, nil
}

// graftAt rewrites the paths that nodes under n hold (ref targets, storage users) from old
// to new; the nodes' own paths follow from their parents once the tree is linked.
func graftAt(n *ckpt.Node, old, new string) {
	ckpt.Walk(n, func(m *ckpt.Node) {
		if m.Kind == ckpt.KindRef && (m.Target == old || strings.HasPrefix(m.Target, old+"/") || old == "") {
			m.Target = new + strings.TrimPrefix(m.Target, old)
		}
		if m.Tensor != nil && m.Tensor.Storage != nil {
			for i, u := range m.Tensor.Storage.Users {
				if u == old || old == "" || strings.HasPrefix(u, old+"/") {
					m.Tensor.Storage.Users[i] = new + strings.TrimPrefix(u, old)
				}
			}
		}
	})
}

// absorb takes a member file's findings, notes, totals and storages into the set, the
// storages naming the file; prefix is where the file's tree will sit.
func absorb(ck, sck *ckpt.Checkpoint, file, prefix string) {
	for _, f := range sck.Findings {
		f.Where = file + ": " + f.Where
		if !f.Outside {
			f.Path = prefix + f.Path
		}
		ck.Findings = append(ck.Findings, f)
	}
	for _, n := range sck.Notes {
		ck.Notes = append(ck.Notes, file+": "+n)
	}
	ck.Tensors += sck.Tensors
	ck.Values += sck.Values
	ck.Parameters = addSat(ck.Parameters, sck.Parameters)
	for k, v := range sck.BytesByDType {
		ck.BytesByDType[k] = addSat(ck.BytesByDType[k], v)
	}
	for _, st := range sck.Storages {
		st.File = file
		ck.Storages = append(ck.Storages, st)
	}
	ck.RowStorages += sck.RowStorages
	rowsFile(sck.Root, file)
	for _, m := range sck.Members {
		m.Name = file + "/" + m.Name
		ck.Members = append(ck.Members, m)
	}
}

// rowsFile names file in the storages the rows under n make (lazytensors.go). Rows are
// never under rows, nor in an object array.
func rowsFile(n *ckpt.Node, file string) {
	if n == nil {
		return
	}
	if p, ok := n.Lazy().(*tensorItems); ok {
		p.file = file
		for _, a := range p.attrs {
			rowsFile(a, file)
		}
	}
	for _, k := range n.Children {
		rowsFile(k, file)
	}
}

// graft moves a member file's subtree under the set's root as key (seg), rewriting the
// paths in it (and the refs and storage users that name them).
func graft(n *ckpt.Node, key, seg string) *ckpt.Node {
	old := n.Path()
	prefix := "/" + ckpt.EscapeSegment(seg)
	ckpt.Walk(n, func(m *ckpt.Node) {
		if m.Kind == ckpt.KindRef && (m.Target == old || strings.HasPrefix(m.Target, old+"/")) {
			m.Target = prefix + strings.TrimPrefix(m.Target, old)
		}
		if m.Tensor != nil && m.Tensor.Storage != nil {
			st := m.Tensor.Storage
			for i, u := range st.Users {
				if u == old || strings.HasPrefix(u, old+"/") || old == "" {
					st.Users[i] = prefix + strings.TrimPrefix(u, old)
				}
			}
		}
	})
	n.Key, n.Seg = key, seg
	return n
}

// jsonNode is a node for a JSON value of an index's metadata.
func jsonNode(v any, key string) *ckpt.Node {
	n := &ckpt.Node{Key: key, Seg: key}
	switch x := v.(type) {
	case nil:
		n.Kind, n.Type = ckpt.KindNone, "NoneType"
	case bool:
		n.Kind, n.Type, n.Bool = ckpt.KindBool, "bool", x
	case float64:
		if x == float64(int64(x)) && x < 1<<53 && x > -(1<<53) {
			n.Kind, n.Type, n.Int = ckpt.KindInt, "int", fmt.Sprint(int64(x))
		} else {
			n.Kind, n.Type, n.Float = ckpt.KindFloat, "float", x
		}
	case string:
		n.Kind, n.Type, n.Str, n.Len = ckpt.KindStr, "str", x, int64(len([]rune(x)))
	default:
		b, _ := json.Marshal(x)
		n.Kind, n.Type, n.Str, n.Len = ckpt.KindStr, "json", string(b), int64(len(b))
	}
	return n
}

// reindex puts an assembled tree's findings in order, dangers first (its pointer
// indexes are built as pointers are looked up).
func reindex(ck *ckpt.Checkpoint) {
	ck.Relink()
	sort.SliceStable(ck.Findings, func(i, j int) bool {
		return ck.Findings[i].Severity == ckpt.SeverityDanger && ck.Findings[j].Severity != ckpt.SeverityDanger
	})
}
