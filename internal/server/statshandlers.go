package server

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/ckptview/ckptview/internal/ckpt"
	"github.com/ckptview/ckptview/internal/export"
	"github.com/ckptview/ckptview/internal/tensor"
	"github.com/ckptview/ckptview/internal/views"
	"github.com/ckptview/ckptview/web/templates"
)

// handleAPIStats serves GET /api/checkpoints/:id/stats?path=P: one tensor's statistics
// and histogram, computed on the first request and cached.
func (s *Server) handleAPIStats(c echo.Context) error {
	o, n, release, err := s.pathNode(c)
	if err != nil {
		return err
	}
	defer release()
	if n, err = resolve(o.ck, n); err != nil {
		return err
	}
	st, err := s.tensorStats(c.Request().Context(), o, n, nil)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, export.NewStatsJSON(st))
}

// handleAPIStatsExport serves GET /api/checkpoints/:id/stats/export?format=csv|json: every
// tensor's statistics, one row per tensor in tree order, streamed as each is computed
// (cached ones at once).
func (s *Server) handleAPIStatsExport(c echo.Context) error {
	format := c.QueryParam("format")
	if format == "" {
		format = "csv"
	}
	if format != "csv" && format != "json" {
		return badRequestf("format must be csv or json, got %q", format)
	}
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	ctx := c.Request().Context()

	res := c.Response()
	h := res.Header()
	if format == "csv" {
		h.Set("Content-Type", "text/csv; charset=utf-8")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Disposition", `attachment; filename="`+downloadName(o.meta.Name, "", "__stats."+format)+`"`)
	res.WriteHeader(http.StatusOK)

	var write func(export.StatsRow) error
	var end func() error
	if format == "csv" {
		w := export.NewStatsCSVWriter(res)
		write, end = w.Write, w.Close
	} else {
		w := export.NewStatsJSONWriter(res)
		write, end = w.Write, w.Close
	}
	var werr error
	walkTensors(o.ck.Root, func(n *ckpt.Node) {
		if werr != nil {
			return
		}
		t := n.Tensor
		row := export.StatsRow{Path: n.Path()}
		if t != nil {
			row.DType, row.Shape = t.DType, t.Shape
		}
		if u := o.unitOfNode(n, row.Path); u != nil {
			st := s.unitCached(o, u)
			if st == nil {
				var err error
				st, err = s.tensorStats(ctx, o, n, nil)
				switch {
				case err != nil && ctx.Err() != nil:
					werr = ctx.Err()
					return
				case err != nil:
					row.Err = forPeople(err)
				}
			}
			row.Stats = st
		} else if _, verr := statsSource(n); verr != nil {
			row.Err = forPeople(verr)
		}
		if err := write(row); err != nil {
			werr = err
			return
		}
		res.Flush()
	})
	if werr == nil {
		werr = end()
	}
	if werr != nil && !errors.Is(werr, ctx.Err()) {
		s.log.Warn("statistics export stopped", "id", o.id, "err", werr)
	}
	return nil
}

// handleAPIStatsAll serves GET /api/checkpoints/:id/stats/all: the progress of the
// checkpoint's all-statistics job (or what is cached when none ran).
func (s *Server) handleAPIStatsAll(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	return c.JSON(http.StatusOK, s.statsProgress(o))
}

// handleAPIStatsAllStart serves POST /api/checkpoints/:id/stats/all: start computing every
// tensor's statistics in the background (once: a running job is joined) and answer 202
// with its progress.
func (s *Server) handleAPIStatsAllStart(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	p := s.startStatsJob(o)
	c.Response().Header().Set("Location", "/api/checkpoints/"+o.id+"/stats/all")
	return c.JSON(http.StatusAccepted, p)
}

// handleStatsAllFragment serves GET /c/:id/fragment/stats-all: the checkpoint page's
// all-statistics block, which polls this while its job runs.
func (s *Server) handleStatsAllFragment(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	j := s.statsJobBlock(o, s.statsProgress(o))
	j.Polled = true
	return s.render(c, http.StatusOK, templates.StatsJobFragment(j))
}

// handleStatsAllStart serves POST /c/:id/stats-all, the page's "compute all statistics"
// button: start the job, then answer with the block (htmx) or back to the page.
func (s *Server) handleStatsAllStart(c echo.Context) error {
	o, release, err := s.checkpoint(c)
	if err != nil {
		return err
	}
	defer release()
	p := s.startStatsJob(o)
	if c.Request().Header.Get("HX-Request") == "" {
		return c.Redirect(http.StatusSeeOther, views.CheckpointURL(o.id)+"#stats-all")
	}
	j := s.statsJobBlock(o, p)
	j.Polled = true
	return s.render(c, http.StatusOK, templates.StatsJobFragment(j))
}

// handleStatsFragment serves GET /c/:id/fragment/stats?path=P&hist=log: a tensor's
// statistics block, computed now if need be; the tensor page loads it with htmx.
func (s *Server) handleStatsFragment(c echo.Context) error {
	o, n, release, err := s.pathNode(c)
	if err != nil {
		return err
	}
	defer release()
	st, err := s.tensorStats(c.Request().Context(), o, n, nil)
	if err != nil {
		return err
	}
	q := views.NodeQuery{Log: c.QueryParam("hist") == "log"}
	return s.render(c, http.StatusOK, templates.StatsFragment(statsView(o.id, n, st, q)))
}

// statsView is the statistics block of tensor n at the page state q.
func statsView(id string, n *ckpt.Node, st *tensor.Stats, q views.NodeQuery) *views.StatsView {
	return views.NewStatsView(n.Tensor, st, views.StatsOptions{
		Log:     q.Log,
		PageURL: q.URL(id, n.Path()),
		JSONURL: views.StatsJSONURL(id, n.Path()),
	})
}

func statsJobView(id string, p jobProgress) *views.StatsJob {
	return views.NewStatsJob(id, views.StatsJob{
		State: p.State, Queued: p.Queued,
		DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes,
		TensorsDone: p.TensorsDone, TensorsTotal: p.TensorsTotal,
		Failed: p.Failed, Error: p.Error,
	})
}

// statsJobBlock is the all-statistics block of checkpoint o; once every statistic is
// computed it lists the tensors whose values stand out (views.StatFlagOf).
func (s *Server) statsJobBlock(o *opened, p jobProgress) *views.StatsJob {
	j := statsJobView(o.id, p)
	if p.State != jobDone {
		return j
	}
	units, _ := o.statsUnits()
	for i := range units {
		u := &units[i]
		st := s.unitCached(o, u)
		if st == nil {
			continue
		}
		if what := views.StatFlagOf(st, u.float(o.ck)); what != "" {
			j.AddFlag(o.id, u.key(), what)
		}
	}
	return j
}

// tensorPage adds to a tensor's page what needs its data: the statistics when cached (or
// the placeholder that loads them; computed now when asked with ?stats=compute, for
// browsers without JavaScript), the preview and the slice table.
func (s *Server) tensorPage(c echo.Context, o *opened, n *ckpt.Node, p *views.NodePage) error {
	q := views.NodeQuery{Log: c.QueryParam("hist") == "log"}
	if n.Tensor == nil || n.Kind == ckpt.KindRef {
		return nil
	}
	shape := n.Tensor.Shape
	if len(shape) >= 2 {
		sq, err := sliceQuery(c, len(shape))
		if err != nil {
			return err
		}
		q.Slice = &sq
	}
	if _, err := statsSource(n); err != nil {
		if n.Tensor.Objects == nil {
			p.StatsError = forPeople(err)
		}
		return nil
	}
	st := s.cachedStats(o, n.Path())
	var err error
	if st == nil && c.QueryParam("stats") == "compute" {
		if st, err = s.tensorStats(c.Request().Context(), o, n, nil); err != nil {
			return err
		}
	}
	if st != nil {
		p.Stats = statsView(o.id, n, st, q)
	} else {
		p.StatsURL = views.StatsFragmentURL(o.id, n.Path(), q.Log)
		now := q
		now.ComputeStats = true
		p.StatsNowURL = now.URL(o.id, n.Path()) + "#stats"
	}

	v, err := storedView(n)
	if err != nil {
		return nil // a sparse tensor: its indices and values have their own pages
	}
	vals, err := tensor.NewValues(v)
	if err != nil {
		p.Values = &views.TensorValues{PreviewError: forPeople(err)}
		return nil
	}
	// float16, bfloat16 and float8 values print in the digits of their dtype, not of the
	// float32 vals decodes them to
	r := views.InDType(vals, v.DType)
	tv := &views.TensorValues{}
	if n.Tensor.Quant != nil {
		tv.Note = "The stored integers (what torch's int_repr() gives, and the .npy download holds); dequantized, each is (q − zero point) × scale."
	}
	if text, flat, err := views.NewPreview(r, shape); err != nil {
		tv.PreviewError = "The values cannot be read: " + forPeople(err)
	} else {
		tv.Preview, tv.Flattened = text, flat
	}
	if q.Slice != nil && n.Tensor.Numel() > 0 {
		page := func(sq views.SliceQuery) string {
			q := q
			q.Slice = &sq
			return q.URL(o.id, n.Path()) + "#slice"
		}
		if tbl, err := views.NewSliceTable(r, shape, *q.Slice, page); err != nil {
			tv.SliceError = "The slice cannot be read: " + forPeople(err)
		} else {
			tv.Slice = tbl
		}
	}
	p.Values = tv
	return nil
}

// sliceQuery reads the slice table's position from the page URL: d0, d1... for the
// leading dimensions, row and col for the page.
func sliceQuery(c echo.Context, dims int) (views.SliceQuery, error) {
	var q views.SliceQuery
	get := func(name string) (int64, error) {
		v := c.QueryParam(name)
		if v == "" {
			return 0, nil
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil || x < 0 {
			return 0, badRequestf("%s must be a non-negative integer, got %q", name, v)
		}
		return x, nil
	}
	for i := 0; i < dims-2; i++ {
		x, err := get("d" + strconv.Itoa(i))
		if err != nil {
			return q, err
		}
		q.Lead = append(q.Lead, x)
	}
	var err error
	if q.Row, err = get("row"); err != nil {
		return q, err
	}
	if q.Col, err = get("col"); err != nil {
		return q, err
	}
	return q, nil
}
