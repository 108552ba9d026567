package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/tensor"
)

// The states of a "compute all statistics" job, as the API reports them.
const (
	jobIdle    = "idle"
	jobRunning = "running"
	jobDone    = "done"
	jobFailed  = "failed"
)

// jobProgress is how far a checkpoint's all-statistics job is: the body of
// GET /api/checkpoints/:id/stats/all.
type jobProgress struct {
	State string `json:"state"`
	// Queued is set while a running job waits for another checkpoint's job to finish.
	Queued       bool  `json:"queued"`
	DoneBytes    int64 `json:"done_bytes"`
	TotalBytes   int64 `json:"total_bytes"`
	TensorsDone  int   `json:"tensors_done"`
	TensorsTotal int   `json:"tensors_total"`
	// Failed counts tensors whose values could not be read; Error says why a job failed.
	Failed int    `json:"failed_tensors"`
	Error  string `json:"error,omitempty"`
}

// statsJob computes the statistics of every tensor of one checkpoint in the background.
type statsJob struct {
	mu sync.Mutex
	p  jobProgress
	// polled is when someone last asked for the job's progress (Unix nanoseconds); a job
	// nobody has asked about for -stats-job-idle stops.
	polled atomic.Int64
}

func (j *statsJob) touch() { j.polled.Store(time.Now().UnixNano()) }

func (j *statsJob) idleFor() time.Duration {
	return time.Since(time.Unix(0, j.polled.Load()))
}

// jobIdleError stops a job whose client left: nobody asked for its progress for the limit.
type jobIdleError struct{ limit time.Duration }

func (e *jobIdleError) Error() string {
	return fmt.Sprintf("stopped: nobody asked for its progress for %s (-stats-job-idle); start it again to go on from where it stopped", e.limit)
}

func (j *statsJob) progress() jobProgress {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.p
}

func (j *statsJob) update(f func(p *jobProgress)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(&j.p)
}

// statsJobs holds one job per checkpoint and lets at most one run at a time server-wide:
// together with the statistics semaphore this keeps a server asked to compute everything
// of many large checkpoints reading one tensor at a time.
type statsJobs struct {
	mu   sync.Mutex
	byID map[string]*statsJob
	slot chan struct{}
}

func newStatsJobs() *statsJobs {
	return &statsJobs{byID: map[string]*statsJob{}, slot: make(chan struct{}, 1)}
}

// job returns the checkpoint's job, nil if none was started.
func (js *statsJobs) job(id string) *statsJob {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.byID[id]
}

// statsUnit is one view whose statistics a job computes: the tensors that are the same
// numbers (tied weights saved under several keys) share it. A row of a state dict kept as
// rows (ckpt.TensorItems; its entries made at open are nodes like any other) is a unit of
// its own, as no other tensor views its storage; it
// holds no path (200,000 of them would), its path is made when asked.
type statsUnit struct {
	paths  []string   // the tensors' paths, the first one the unit's key; nil for a row
	rows   *ckpt.Node // for a row: the dict, and which row
	row    int
	nbytes int64
}

// key is the path the unit's statistics are stored under: its first tensor's.
func (u *statsUnit) key() string {
	if u.rows == nil {
		return u.paths[0]
	}
	items := u.rows.Lazy().(ckpt.TensorItems)
	return string(append(append(u.rows.AppendPath(nil), '/'), ckpt.EscapeSegment(items.Key(u.row))...))
}

// float says whether the unit's values are floating point (or quantized floats), for
// views.StatFlagOf; a row's dtype is read from its row, without making its node.
func (u *statsUnit) float(ck *ckpt.Checkpoint) bool {
	if u.rows != nil {
		dtype, _ := u.rows.Lazy().(ckpt.TensorItems).RowTensor(u.row)
		return tensor.IsFloat(dtype) // (a row is never quantized: the one pass reads no quantized tensor)
	}
	n, err := node(ck, u.paths[0])
	return err == nil && n.Tensor != nil && (tensor.IsFloat(n.Tensor.DType) || n.Tensor.Quant != nil)
}

// count is the number of tensors that share the unit.
func (u *statsUnit) count() int {
	if u.rows == nil {
		return len(u.paths)
	}
	return 1
}

type viewIdentity struct {
	path           string
	storage        *ckpt.Storage
	offset         int64
	dtype          string
	shape, strides string
	quant          ckpt.Quantization
}

// statsUnits lists, in tree order, the tensors of a checkpoint whose values can be read,
// grouped by identical views.
func statsUnits(ck *ckpt.Checkpoint) []statsUnit {
	var units []statsUnit
	byView := map[viewIdentity]int{}
	rows := func(d *ckpt.Node, _ ckpt.TensorItems, from, to int) {
		for ; from < to; from += rowsPage { // a page of nodes at a time, dropped
			for i, n := range d.Items(from, min(from+rowsPage, to)) {
				if _, err := statsSource(n); err == nil {
					units = append(units, statsUnit{rows: d, row: from + i, nbytes: n.Tensor.NBytes()})
				}
			}
		}
	}
	ckpt.WalkRows(ck.Root, func(n *ckpt.Node) {
		if n.Kind != ckpt.KindTensor && n.Kind != ckpt.KindNDArray {
			return
		}
		if _, err := statsSource(n); err != nil {
			return
		}
		t := n.Tensor
		k := viewIdentity{storage: t.Storage, offset: t.StorageOffset, dtype: t.DType,
			shape: fmt.Sprint(t.Shape), strides: fmt.Sprint(t.Strides)}
		if t.Quant != nil {
			k.quant = *t.Quant
		}
		if t.Storage == nil || t.Layout != "" || (t.Quant != nil && strings.HasPrefix(t.Quant.Scheme, "per_channel")) {
			k.path = n.Path() // sparse and per-channel views depend on their children: their own
		}
		if i, ok := byView[k]; ok {
			units[i].paths = append(units[i].paths, n.Path())
			return
		}
		byView[k] = len(units)
		units = append(units, statsUnit{paths: []string{n.Path()}, nbytes: t.NBytes()})
	}, rows)
	return slices.Clip(units)
}

// rowsPage is how many rows statsUnits makes into nodes at once.
const rowsPage = 256

// walkTensors visits every tensor and array node in tree order (depth first, children in
// order, object arrays' items included), never through a ref.
func walkTensors(root *ckpt.Node, visit func(*ckpt.Node)) {
	ckpt.Walk(root, func(n *ckpt.Node) {
		if n.Kind == ckpt.KindTensor || n.Kind == ckpt.KindNDArray {
			visit(n)
		}
	})
}

// idleProgress says how much of a checkpoint is already computed when no job ran: single
// tensor pages fill the cache too.
func (s *Server) idleProgress(o *opened) jobProgress {
	p := jobProgress{State: jobIdle}
	units, _ := o.statsUnits()
	p.TensorsTotal, p.TotalBytes = o.unitTotals()
	if !s.stats.holds(o.id) && len(s.savedStatsOf(o)) == 0 {
		return p // nothing computed yet: no unit's key made (200,000 paths) to find that out
	}
	for i := range units {
		u := &units[i]
		if s.unitCached(o, u) != nil {
			p.TensorsDone += u.count()
			p.DoneBytes += u.nbytes
		}
	}
	if p.TensorsTotal > 0 && p.TensorsDone == p.TensorsTotal {
		p.State = jobDone
	}
	return p
}

// unitCached returns the unit's statistics if they have been computed, here or (saved
// beside the blob) before a restart or by another replica.
func (s *Server) unitCached(o *opened, u *statsUnit) *tensor.Stats {
	key := statsKey{o.id, u.key()}
	if st := s.stats.get(key); st != nil {
		return st
	}
	return s.savedStat(o, key)
}

// statsProgress is the progress of the checkpoint's job, or of what is cached when there
// is no job.
func (s *Server) statsProgress(o *opened) jobProgress {
	if j := s.jobs.job(o.id); j != nil {
		j.touch()
		p := j.progress()
		if p.State != jobDone || s.idleProgress(o).State == jobDone {
			return p
		}
		// Done once, but some statistics have since left the cache: say what is there.
	}
	return s.idleProgress(o)
}

// startStatsJob starts computing every tensor's statistics of checkpoint o in the
// background, unless a job for it is running already or everything is cached. It returns
// the job's progress.
func (s *Server) startStatsJob(o *opened) jobProgress {
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	if j := s.jobs.byID[o.id]; j != nil && j.progress().State == jobRunning {
		j.touch()
		return j.progress()
	}
	if p := s.idleProgress(o); p.State == jobDone {
		j := &statsJob{p: p}
		s.jobs.byID[o.id] = j
		return p
	}
	// What is cached already counts as done from the start, so progress never goes back
	// from what GET said before the job.
	var units []*statsUnit
	j := &statsJob{p: jobProgress{State: jobRunning, Queued: true}}
	j.touch()
	all, _ := o.statsUnits()
	for i := range all {
		u := &all[i]
		j.p.TensorsTotal += u.count()
		j.p.TotalBytes += u.nbytes
		if s.unitCached(o, u) != nil {
			j.p.TensorsDone += u.count()
			j.p.DoneBytes += u.nbytes
		} else {
			units = append(units, u)
		}
	}
	s.jobs.byID[o.id] = j
	s.jobsWG.Add(1)
	go func() {
		defer s.jobsWG.Done()
		s.runStatsJob(o.id, j, units)
	}()
	return j.progress()
}

// runStatsJob computes the units one after the other once the job slot is free.
func (s *Server) runStatsJob(id string, j *statsJob, units []*statsUnit) {
	ctx, cancel := context.WithCancelCause(s.base)
	defer cancel(nil)
	go s.watchJob(ctx, j, cancel)
	fail := func(err error) {
		if c := context.Cause(ctx); c != nil && errors.Is(err, ctx.Err()) {
			err = c // say why the job stopped, not just that it did
		}
		j.update(func(p *jobProgress) { p.State, p.Queued, p.Error = jobFailed, false, forPeople(err) })
		if !errors.Is(err, context.Canceled) {
			s.log.Error("statistics job failed", "id", id, "err", err)
		}
	}
	select {
	case s.jobs.slot <- struct{}{}:
		defer func() { <-s.jobs.slot }()
	case <-ctx.Done():
		fail(ctx.Err())
		return
	}
	defer func() {
		if r := recover(); r != nil {
			fail(fmt.Errorf("server: statistics job panicked: %v", r))
		}
	}()
	j.update(func(p *jobProgress) { p.Queued = false })
	o, release, err := s.cache.get(ctx, id)
	if err != nil {
		fail(err)
		return
	}
	defer release()
	// Units run a few at a time (as many as may compute at once), so that a machine with
	// spare cores uses them even when every tensor is small enough to be read by one worker.
	var (
		mu        sync.Mutex
		completed = j.progress().DoneBytes
		partial   = map[int]int64{} // bytes read of the units in flight
		results   = map[string]*tensor.Stats{}
		stopped   error
	)
	report := func() { // mu held
		sum := completed
		for _, b := range partial {
			sum += b
		}
		j.update(func(p *jobProgress) { p.DoneBytes = max(p.DoneBytes, sum) })
	}
	finish := func(i int, u *statsUnit, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		delete(partial, i)
		completed += u.nbytes
		report()
		j.update(func(p *jobProgress) {
			p.TensorsDone += u.count()
			if !ok {
				p.Failed += u.count()
			}
		})
	}
	slots := make(chan struct{}, s.cfg.StatsConcurrency)
	var wg sync.WaitGroup
	for i, u := range units {
		if s.unitCached(o, u) != nil {
			finish(i, u, true)
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			key := u.key()
			n, err := node(o.ck, key)
			if err != nil {
				finish(i, u, false)
				return
			}
			// Compute reads every element twice (moments, then the histogram): bytes done
			// are half the elements reported, in the tensor's own size, never beyond it.
			var elems, numel int64
			if n.Tensor != nil {
				numel = n.Tensor.Numel()
			}
			progress := func(e int64) {
				mu.Lock()
				defer mu.Unlock()
				elems += e
				within := u.nbytes
				if numel > 0 {
					within = min(u.nbytes, int64(float64(elems)/float64(2*numel)*float64(u.nbytes)))
				}
				partial[i] = within
				report()
			}
			st, err := s.computeStats(ctx, o, n, progress, false)
			if err == nil {
				mu.Lock()
				results[key] = st
				mu.Unlock()
			}
			switch {
			case err != nil && ctx.Err() != nil:
				mu.Lock()
				stopped = ctx.Err()
				mu.Unlock()
			case err != nil:
				s.log.Warn("statistics failed", "id", id, "path", key, "err", err)
				finish(i, u, false)
			default:
				finish(i, u, true)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil || stopped != nil {
		if err == nil {
			err = stopped
		}
		fail(err)
		return
	}
	all, _ := o.statsUnits()
	for i := range all {
		if key := all[i].key(); results[key] == nil {
			if st := s.unitCached(o, &all[i]); st != nil {
				results[key] = st
			}
		}
	}
	s.saveAllStats(o, results)
	j.update(func(p *jobProgress) { p.State = jobDone })
}

// watchJob cancels a job once nobody has asked for its progress for -stats-job-idle: the
// page polls while it is open, so a job outlives its client by at most that long.
func (s *Server) watchJob(ctx context.Context, j *statsJob, cancel context.CancelCauseFunc) {
	limit := s.cfg.StatsJobIdle
	t := time.NewTicker(min(limit/4+1, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if j.idleFor() > limit {
				cancel(&jobIdleError{limit: limit})
				return
			}
		}
	}
}
