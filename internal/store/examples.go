package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Example is a bundled file imported into the store at startup.
type Example struct {
	Meta
	// File is the path of the file relative to the examples directory, with forward slashes.
	File string
	// Description says what the file shows, from examples.json.
	Description string
	// Listed is set for the files examples.json names: the ones offered on the home page.
	Listed bool
}

// examplesIndex names the file in the examples directory that describes the examples.
const examplesIndex = "examples.json"

// ImportExamples stores every regular file under dir and returns them, the ones described in
// dir/examples.json ({"file": "description"}) first and in that file's order, then the rest
// by name. A missing dir means no examples.
func (s *Store) ImportExamples(ctx context.Context, dir string) ([]Example, error) {
	if dir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	descs, order, err := readExamplesIndex(filepath.Join(dir, examplesIndex))
	if err != nil {
		return nil, err
	}
	var out []Example
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if path != dir && len(name) > 0 && name[0] == '.' {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == examplesIndex {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		meta, err := s.Put(ctx, name, f, 0)
		if err != nil {
			return fmt.Errorf("import example %s: %w", rel, err)
		}
		meta.Name = name // the bundled name, whatever an earlier upload of these bytes was called
		desc, listed := descs[rel]
		out = append(out, Example{Meta: meta, File: rel, Description: desc, Listed: listed})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: examples: %w", err)
	}
	rank := make(map[string]int, len(order))
	for i, f := range order {
		rank[f] = i
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Listed != b.Listed {
			return a.Listed
		}
		if a.Listed {
			return rank[a.File] < rank[b.File]
		}
		return a.File < b.File
	})
	return out, nil
}

// readExamplesIndex reads {"file": "description"} keeping the order of the keys, which is
// the order the home page shows them in. A missing file is no descriptions.
func readExamplesIndex(path string) (map[string]string, []string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	bad := func(err error) error { return fmt.Errorf("store: %s: %w", path, err) }
	if tok, err := dec.Token(); err != nil {
		return nil, nil, bad(err)
	} else if tok != json.Delim('{') {
		return nil, nil, bad(errors.New(`want an object {"file": "description"}`))
	}
	descs := map[string]string{}
	var order []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, bad(err)
		}
		key, _ := tok.(string)
		var desc string
		if err := dec.Decode(&desc); err != nil {
			return nil, nil, bad(fmt.Errorf("description of %q: %w", key, err))
		}
		if _, dup := descs[key]; !dup {
			order = append(order, key)
		}
		descs[key] = desc
	}
	return descs, order, nil
}
