package gguf

import (
	"fmt"
	"regexp"
	"strconv"
)

// Split models are written by llama.cpp's gguf-split as files named
// PREFIX-00001-of-00005.gguf. Every part carries three keys: split.no (u16, the part's
// index counted from 0), split.count (u16, the number of parts) and split.tensors.count
// (i32, the number of tensors in all parts); the first part also carries the model's
// metadata. llama.cpp's loader (llama-model-loader.cpp) opens parts 1..count-1 by name,
// checks that each one's split.no is its index, and that the tensors of all parts add up
// to split.tensors.count.

// The split keys (LLM_KV_SPLIT_* in llama.cpp).
const (
	KeySplitNo           = "split.no"
	KeySplitCount        = "split.count"
	KeySplitTensorsCount = "split.tensors.count"
)

// SplitPart is one parsed part of a split model.
type SplitPart struct {
	Name string // the file name, for messages and to name missing parts; may be empty
	File *File
}

// SplitTensor is a tensor of a split model and the part that holds it.
type SplitTensor struct {
	TensorInfo
	Part     int    // index of the part (its split.no)
	PartName string // that part's Name
}

// Split is a split model put back together.
type Split struct {
	Parts   []SplitPart // in split.no order
	Tensors []SplitTensor
	// Metadata is the first part's metadata, the model's.
	Metadata []KV
}

// SplitInfo returns a file's split keys. ok is false if it has none (a whole model); an
// error says a key is missing or has the wrong type.
func SplitInfo(f *File) (no, count, tensors int, ok bool, err error) {
	_, hasNo := f.Lookup(KeySplitNo)
	_, hasCount := f.Lookup(KeySplitCount)
	_, hasTensors := f.Lookup(KeySplitTensorsCount)
	if !hasNo && !hasCount && !hasTensors {
		return 0, 0, 0, false, nil
	}
	get := func(key string, t ValueType) (int, error) {
		kv, ok := f.Lookup(key)
		if !ok {
			return 0, fmt.Errorf("gguf: the file has split keys but no %s", key)
		}
		// llama.cpp reads these with type checking: split.no and split.count as u16,
		// split.tensors.count as i32.
		if kv.Value.Type != t {
			return 0, fmt.Errorf("gguf: %s must be of type %s but is %s", key, t, kv.Value.Type)
		}
		n, _ := kv.Value.Int()
		return int(n), nil
	}
	if no, err = get(KeySplitNo, ValueUint16); err != nil {
		return
	}
	if count, err = get(KeySplitCount, ValueUint16); err != nil {
		return
	}
	if tensors, err = get(KeySplitTensorsCount, ValueInt32); err != nil {
		return
	}
	switch {
	case count == 0:
		err = fmt.Errorf("gguf: %s is 0", KeySplitCount)
	case no >= count:
		err = fmt.Errorf("gguf: %s is %d but %s is %d: parts are numbered from 0", KeySplitNo, no, KeySplitCount, count)
	case tensors < 0:
		err = fmt.Errorf("gguf: %s is %d", KeySplitTensorsCount, tensors)
	}
	return no, count, tensors, err == nil, err
}

var splitNameRE = regexp.MustCompile(`^(.*)-([0-9]{5})-of-([0-9]{5})\.gguf$`)

// ParseSplitName takes a file name (or path) like "model-00002-of-00005.gguf" apart: prefix
// "model", index 1 (counted from 0, like split.no) and count 5.
func ParseSplitName(name string) (prefix string, index, count int, ok bool) {
	m := splitNameRE.FindStringSubmatch(name)
	if m == nil {
		return "", 0, 0, false
	}
	no, _ := strconv.Atoi(m[2])
	count, _ = strconv.Atoi(m[3])
	if no < 1 || no > count {
		return "", 0, 0, false
	}
	return m[1], no - 1, count, true
}

// SplitName returns the name gguf-split gives part index (counted from 0) of count:
// SplitName("model", 1, 5) is "model-00002-of-00005.gguf".
func SplitName(prefix string, index, count int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, index+1, count)
}

// MergeSplit checks the parts of a split model and returns its tensors in order, each
// naming its part. The parts may be given in any order; every part from 0 to split.count-1
// must be there once. A single file without split keys is a model of one part.
func MergeSplit(parts []SplitPart) (*Split, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("gguf: no parts")
	}
	type partInfo struct {
		no, count, tensors int
	}
	infos := make([]partInfo, len(parts))
	prefix := ""
	for i, p := range parts {
		no, count, tensors, ok, err := SplitInfo(p.File)
		if err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, partLabel(p, i))
		}
		if !ok {
			if len(parts) != 1 {
				return nil, fmt.Errorf("gguf: %s has no split keys (%s, %s, %s), so it is not part of a split model", partLabel(p, i), KeySplitNo, KeySplitCount, KeySplitTensorsCount)
			}
			no, count, tensors = 0, 1, len(p.File.Tensors)
		}
		if pre, idx, cnt, named := ParseSplitName(baseName(p.Name)); named {
			if idx != no || cnt != count {
				return nil, fmt.Errorf("gguf: %s is named as part %d of %d, but its %s is %d (part %d) and its %s %d", partLabel(p, i), idx+1, cnt, KeySplitNo, no, no+1, KeySplitCount, count)
			}
			if prefix == "" {
				prefix = pre
			}
		}
		infos[i] = partInfo{no, count, tensors}
	}
	count, tensors := infos[0].count, infos[0].tensors
	byNo := make([]int, count)
	for i := range byNo {
		byNo[i] = -1
	}
	for i, in := range infos {
		if in.count != count {
			return nil, fmt.Errorf("gguf: %s says the model has %d parts, but %s says %d", partLabel(parts[i], i), in.count, partLabel(parts[0], 0), count)
		}
		if in.tensors != tensors {
			return nil, fmt.Errorf("gguf: %s says the model has %d tensors, but %s says %d", partLabel(parts[i], i), in.tensors, partLabel(parts[0], 0), tensors)
		}
		if j := byNo[in.no]; j >= 0 {
			return nil, fmt.Errorf("gguf: %s and %s are both part %d of %d", partLabel(parts[j], j), partLabel(parts[i], i), in.no+1, count)
		}
		byNo[in.no] = i
	}
	for no, i := range byNo {
		if i < 0 {
			want := fmt.Sprintf("part %d of %d", no+1, count)
			if prefix != "" {
				want += " (" + SplitName(prefix, no, count) + ")"
			}
			return nil, fmt.Errorf("gguf: %s of the split model is missing", want)
		}
	}
	s := &Split{Metadata: parts[byNo[0]].File.Metadata}
	seen := make(map[string]int)
	for no, i := range byNo {
		p := parts[i]
		s.Parts = append(s.Parts, p)
		for _, t := range p.File.Tensors {
			if prev, dup := seen[t.Name]; dup {
				return nil, fmt.Errorf("gguf: tensor %s is in both part %d and part %d", t.Name, prev+1, no+1)
			}
			seen[t.Name] = no
			s.Tensors = append(s.Tensors, SplitTensor{TensorInfo: t, Part: no, PartName: p.Name})
		}
	}
	if len(s.Tensors) != tensors {
		return nil, fmt.Errorf("gguf: %s is %d, but the %d parts hold %d tensors", KeySplitTensorsCount, tensors, count, len(s.Tensors))
	}
	return s, nil
}

func partLabel(p SplitPart, i int) string {
	if p.Name != "" {
		return p.Name
	}
	return fmt.Sprintf("part #%d as given", i+1)
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' || p[i] == '\\' {
			return p[i+1:]
		}
	}
	return p
}
