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
	"strings"
)

// Example is a bundled file imported into the store at startup.
type Example struct {
	Meta
	// File is the path of the file relative to the examples directory, with forward slashes.
	File string
	// Description says what the file shows, from examples.json.
	Description string
}

// examplesIndex names the file in the examples directory that describes the examples.
const examplesIndex = "examples.json"

// ImportExamples stores the bundled examples of dir in s and returns them in the order to show
// them. When dir/examples.json ({"file": "description"}) exists, the examples are the files
// it names, in its order (a named file that is missing is left out); otherwise they are
// every regular file under dir, by path. A missing dir means no examples.
func ImportExamples(ctx context.Context, s Blobs, dir string) ([]Example, error) {
	if dir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	descs, files, err := readExamplesIndex(filepath.Join(dir, examplesIndex))
	if err != nil {
		return nil, err
	}
	if files == nil {
		if files, err = listFiles(dir); err != nil {
			return nil, fmt.Errorf("store: examples: %w", err)
		}
	}
	var out []Example
	for _, rel := range files {
		if !filepath.IsLocal(filepath.FromSlash(rel)) {
			return nil, fmt.Errorf("store: %s names %q, which is outside %s", examplesIndex, rel, dir)
		}
		meta, err := importFile(ctx, s, filepath.Join(dir, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: example %s: %w", rel, err)
		}
		out = append(out, Example{Meta: meta, File: rel, Description: descs[rel]})
	}
	return out, nil
}

// importFile stores one file under its base name and returns its metadata with that name,
// whatever an earlier upload of the same bytes was called.
func importFile(ctx context.Context, s Blobs, path string) (Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, err
	}
	defer f.Close()
	meta, err := s.Put(ctx, filepath.Base(path), f, 0)
	if err != nil {
		return Meta{}, err
	}
	meta.Name = filepath.Base(path)
	return meta, nil
}

// listFiles returns the regular files under dir that are not hidden, as sorted slash paths
// relative to dir.
func listFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
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
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(files)
	return files, err
}

// readExamplesIndex reads {"file": "description"} keeping the order of the keys, which is
// the order the home page shows them in. A missing index returns nil files.
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
	order := []string{}
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
