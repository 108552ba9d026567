package loader

import (
	"archive/zip"
	"fmt"
	"strconv"
	"strings"
)

// torchZip finds the members of a zip archive the way torch.load does. torch reads
// torch.save archives with PyTorchStreamReader (caffe2/serialize/inline_container.cc) over
// miniz, and its rules decide which bytes it unpickles:
//
//   - the archive's folder is the name of the first central directory entry up to its
//     first '/'; an archive whose first entry has no '/' is refused, and so is one with
//     any entry whose name does not start with that folder and a '/' (compared byte for
//     byte, case and all);
//   - a record ("data.pkl", "data/0", "byteorder", "version") is found by miniz's
//     mz_zip_reader_locate_file with no flags: a binary search over the entries sorted by
//     name without regard to ASCII case (a heap sort, so the order of names equal but for
//     case, or repeated, is the heap's), which picks one of several equal names by where
//     the search lands, not the first or the last;
//   - the version is ".data/version" if there is one, else "version", read as an unsigned
//     decimal (leading digits; nothing else after them is looked at) that torch 1.13
//     accepts from 1 to 10.
//
// The tests hold this to torch.load itself on archives made to probe each rule
// (testdata/zipdiff). Every member that could be a pickle is scanned anyway
// (scanOtherPickles): these rules decide what the tree shows as the file.
type torchZip struct {
	files  []*zip.File
	sorted []int // indexes of files, in miniz's sorted order (when byName is nil)
	prefix string
	// distinct says that no two names are equal in ASCII lower case: the binary search
	// then finds the one entry of a name, and byName and byNumber find it at once (a state
	// dict of 200,000 storages looks each one up). byNumber holds the entries named, in
	// lower case, numbered (the folder, "data/" and a decimal below len(files) without a
	// leading zero: the storages torch.save writes), byName the others, by their names in
	// lower case.
	distinct bool
	byName   map[string]*zip.File
	byNumber []*zip.File
	numbered string // the numbered names' folder and "data/", in lower case
}

// newTorchZip applies torch's folder rules; refusal says why torch would refuse the
// archive ("" when it would not).
func newTorchZip(zr *zip.Reader) (t *torchZip, refusal string) {
	t = &torchZip{files: zr.File}
	if len(t.files) == 0 {
		return t, "the archive is empty"
	}
	first := t.files[0].Name
	i := strings.IndexByte(first, '/')
	if i < 0 {
		return t, fmt.Sprintf("its first member %q is not in a folder", first)
	}
	t.prefix = first[:i+1]
	for _, f := range t.files {
		if !strings.HasPrefix(f.Name, t.prefix) {
			return t, fmt.Sprintf("its member %q is not in the folder %s of its first member", f.Name, t.prefix)
		}
	}
	t.sortLikeMiniz()
	return t, ""
}

// lowerASCII is miniz's MZ_TOLOWER.
func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c - 'A' + 'a'
	}
	return c
}

// lowerName is s with its ASCII letters in lower case (s itself when it has none in upper
// case), as lowerASCII compares them.
func lowerName(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerASCII(b[j])
			}
			return string(b)
		}
	}
	return s
}

// nameLess is miniz's mz_zip_reader_filename_less: names compared byte by byte without
// regard to ASCII case, a prefix before the longer name.
func nameLess(a, b string) bool {
	n := min(len(a), len(b))
	for i := range n {
		if l, r := lowerASCII(a[i]), lowerASCII(b[i]); l != r {
			return l < r
		}
	}
	return len(a) < len(b)
}

// nameCompare is miniz's mz_zip_filename_compare, the binary search's comparison.
func nameCompare(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if l, r := lowerASCII(a[i]), lowerASCII(b[i]); l != r {
			return int(l) - int(r)
		}
	}
	return len(a) - len(b)
}

// sortLikeMiniz orders the entries as mz_zip_reader_sort_central_dir_offsets_by_filename
// does: the same heap sort, step for step, so that equal names end where miniz puts them.
// When no two names are equal (without regard to case), every sort gives the same order
// and the binary search finds the one entry of a name: a map of the names in lower case
// then finds it at once, and nothing is sorted (a state dict of 200,000 storages).
func (t *torchZip) sortLikeMiniz() {
	t.numbered = lowerName(t.prefix) + "data/"
	t.byNumber = make([]*zip.File, len(t.files))
	t.byName = map[string]*zip.File{}
	t.distinct = true
	for _, f := range t.files {
		if !t.put(lowerName(f.Name), f) {
			t.distinct, t.byName, t.byNumber = false, nil, nil
			break
		}
	}
	if t.distinct {
		return
	}
	idx := make([]int, len(t.files))
	for i := range idx {
		idx[i] = i
	}
	less := func(i, j int) bool { return nameLess(t.files[idx[i]].Name, t.files[idx[j]].Name) }
	siftDown := func(root, end int) {
		for {
			child := 2*root + 1
			if child >= end {
				return
			}
			if child+1 < end && less(child, child+1) {
				child++
			}
			if !less(root, child) {
				return
			}
			idx[root], idx[child] = idx[child], idx[root]
			root = child
		}
	}
	size := len(idx)
	for start := (size - 2) >> 1; start >= 0; start-- {
		siftDown(start, size)
	}
	for end := size - 1; end > 0; end-- {
		idx[end], idx[0] = idx[0], idx[end]
		siftDown(0, end)
	}
	t.sorted = idx
}

// number is the number of a numbered name (in lower case), ok false for another name.
func (t *torchZip) number(lower string) (n int, ok bool) {
	if len(lower) <= len(t.numbered) || lower[:len(t.numbered)] != t.numbered {
		return 0, false
	}
	d := lower[len(t.numbered):]
	if len(d) > 9 || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	for i := range len(d) {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
		n = n*10 + int(d[i]-'0')
	}
	return n, n < len(t.byNumber)
}

// put files f under its name in lower case; false when a file is there already.
func (t *torchZip) put(lower string, f *zip.File) bool {
	if n, ok := t.number(lower); ok {
		if t.byNumber[n] != nil {
			return false
		}
		t.byNumber[n] = f
		return true
	}
	if _, dup := t.byName[lower]; dup {
		return false
	}
	t.byName[lower] = f
	return true
}

// find is the file named lower in lower case, when the names are distinct.
func (t *torchZip) find(lower string) *zip.File {
	if n, ok := t.number(lower); ok {
		return t.byNumber[n]
	}
	return t.byName[lower]
}

// lookup finds record name (below the archive's folder) as torch does, nil if torch would
// not find it.
func (t *torchZip) lookup(name string) *zip.File {
	want := t.prefix + name
	if t.distinct {
		return t.find(lowerName(want))
	}
	if t.sorted == nil {
		return nil // refused before it was sorted
	}
	l, h := 0, len(t.sorted)-1
	for l <= h {
		m := l + (h-l)>>1
		f := t.files[t.sorted[m]]
		switch c := nameCompare(f.Name, want); {
		case c == 0:
			return f
		case c < 0:
			l = m + 1
		default:
			h = m - 1
		}
	}
	return nil
}

// exact finds the member named name, case and all, when the names are distinct even
// without regard to case (so there is one candidate).
func (t *torchZip) exact(name string) *zip.File {
	if f := t.find(lowerName(name)); f != nil && f.Name == name {
		return f
	}
	return nil
}

// versionRefusal reads the archive's version record as torch 1.13 does and says why torch
// would refuse it ("" when it would read it).
func (t *torchZip) versionRefusal(read func(*zip.File) ([]byte, error)) string {
	f := t.lookup(".data/version")
	if f == nil {
		f = t.lookup("version")
	}
	if f == nil {
		return "it has no version record"
	}
	b, err := read(f)
	if err != nil {
		return "its version record cannot be read"
	}
	// torch reads it with std::stoull-like rules: leading space, then the leading digits
	s := strings.TrimLeft(string(b), " \t\n\r\f\v")
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	if digits == 0 {
		return fmt.Sprintf("its version record %q is not a number", clip(string(b)))
	}
	if n, err := strconv.ParseUint(s[:digits], 10, 64); err != nil || n < 1 || n > 10 {
		return fmt.Sprintf("its version %s is outside the versions torch reads (1 to 10)", clip(s[:digits]))
	}
	return ""
}

// hasPrefixFold says whether s begins with prefix (in lower case) without regard to ASCII
// case, as miniz compares names.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lowerASCII(s[i]) != prefix[i] {
			return false
		}
	}
	return true
}
