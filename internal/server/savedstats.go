package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ckptview/ckptview/internal/store"
	"github.com/ckptview/ckptview/internal/tensor"
)

// Statistics are saved beside their blob (store.Blobs.PutAux), so they survive a restart
// and every replica on one bucket sees what another computed:
//
//   - "stats" holds every tensor's, written when an all-statistics job finishes;
//   - "stats-t-<hash of the path>" holds one tensor's, written when a single tensor's are
//     computed outside a job.
//
// Both are gob (statistics may be NaN or infinite, which JSON cannot carry), keyed by the
// tensor's statistics key (statsKey): tied tensors share one entry. They are a cache: a
// document that is missing, unreadable or of another version is recomputed.
const (
	statsDoc       = "stats"
	statsDocPrefix = "stats-t-"
	// statsDocVersion changes whenever the meaning of the saved statistics does.
	statsDocVersion = 1
	// savedRecheck is how long a checkpoint's missing "stats" document is believed
	// missing before the store is asked again (another replica may have finished a job).
	savedRecheck = 2 * time.Second
)

// statsDocument is what a document holds.
type statsDocument struct {
	Version int
	Stats   map[string]*tensor.Stats
}

// savedStats is an opened checkpoint's copy of its "stats" document.
type savedStats struct {
	mu       sync.Mutex
	checked  time.Time
	complete bool // the document was read: there is nothing newer to look for
	byPath   map[string]*tensor.Stats
}

func encodeStats(m map[string]*tensor.Stats) ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(statsDocument{Version: statsDocVersion, Stats: m}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeStats(b []byte) (map[string]*tensor.Stats, error) {
	var d statsDocument
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&d); err != nil {
		return nil, err
	}
	if d.Version != statsDocVersion {
		return nil, fmt.Errorf("statistics document version %d, want %d", d.Version, statsDocVersion)
	}
	return d.Stats, nil
}

// savedStatsOf returns the statistics of o's "stats" document, reading it from the store
// when it has not been read (at most every savedRecheck while it is missing).
func (s *Server) savedStatsOf(o *opened) map[string]*tensor.Stats {
	sv := &o.saved
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.complete || time.Since(sv.checked) < savedRecheck || s.store == nil {
		return sv.byPath
	}
	sv.checked = time.Now()
	ctx, cancel := context.WithTimeout(s.base, 10*time.Second)
	defer cancel()
	b, err := s.store.GetAux(ctx, o.id, statsDoc)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("reading saved statistics", "id", o.id, "err", err)
		}
		return sv.byPath
	}
	m, err := decodeStats(b)
	if err != nil {
		s.log.Warn("saved statistics are unreadable; they will be computed again", "id", o.id, "err", err)
		return sv.byPath
	}
	sv.byPath, sv.complete = m, true
	return m
}

// savedStat returns a tensor's statistics from o's "stats" document, and caches them.
func (s *Server) savedStat(o *opened, key statsKey) *tensor.Stats {
	if st := s.savedStatsOf(o)[key.path]; st != nil {
		s.stats.put(key, st)
		return st
	}
	return nil
}

func singleDocName(path string) string {
	h := sha256.Sum256([]byte(path))
	return statsDocPrefix + hex.EncodeToString(h[:16])
}

// loadSingleStat reads one tensor's saved statistics, nil if there are none.
func (s *Server) loadSingleStat(ctx context.Context, key statsKey) *tensor.Stats {
	if s.store == nil {
		return nil
	}
	b, err := s.store.GetAux(ctx, key.id, singleDocName(key.path))
	if err != nil {
		return nil
	}
	m, err := decodeStats(b)
	if err != nil {
		return nil
	}
	return m[key.path]
}

// saveSingleStat saves one tensor's statistics, best effort: they are a cache.
func (s *Server) saveSingleStat(key statsKey, st *tensor.Stats) {
	if s.store == nil {
		return
	}
	b, err := encodeStats(map[string]*tensor.Stats{key.path: st})
	if err == nil {
		ctx, cancel := context.WithTimeout(s.base, 10*time.Second)
		defer cancel()
		err = s.store.PutAux(ctx, key.id, singleDocName(key.path), b)
	}
	if err != nil {
		s.log.Warn("saving statistics", "id", key.id, "path", key.path, "err", err)
	}
}

// saveAllStats writes the "stats" document of a checkpoint whose every tensor's
// statistics are known.
func (s *Server) saveAllStats(o *opened, m map[string]*tensor.Stats) {
	if s.store == nil {
		return
	}
	b, err := encodeStats(m)
	if err == nil {
		ctx, cancel := context.WithTimeout(s.base, time.Minute)
		defer cancel()
		err = s.store.PutAux(ctx, o.id, statsDoc, b)
	}
	if err != nil {
		s.log.Warn("saving statistics", "id", o.id, "err", err)
		return
	}
	o.saved.mu.Lock()
	o.saved.byPath, o.saved.complete = m, true
	o.saved.mu.Unlock()
}
