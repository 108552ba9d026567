package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ckptview/ckptview/internal/s3store"
	"github.com/ckptview/ckptview/internal/s3store/s3test"
	"github.com/ckptview/ckptview/internal/store"
)

// s3Store opens the bucket ckv of srv as an operator would (the SDK's variables).
func s3Store(t *testing.T, srv *s3test.Server, timeout time.Duration, cache ...int64) *s3store.Store {
	t.Helper()
	srv.Env(t)
	c := s3store.Config{URL: "s3://ckv/team", Scratch: t.TempDir(), Timeout: timeout}
	if len(cache) > 0 {
		c.CacheBytes = cache[0]
	}
	st, err := s3store.New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// runJob starts the all-statistics job of id and waits until it is no longer running.
func runJob(t *testing.T, s *Server, id string) jobProgress {
	t.Helper()
	api := "/api/checkpoints/" + id + "/stats/all"
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d %.200s", api, rec.Code, rec.Body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := decode[jobProgress](t, do(s, http.MethodGet, api, nil))
		if p.State != jobRunning || time.Now().After(deadline) {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Every tensor's statistics and downloads from a checkpoint kept in a real S3 server are
// numpy's, as from the local directory.
func TestS3MatchesNumpy(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	s := serverOn(t, Config{}, s3Store(t, srv, 0))
	checkStatsMatchNumpy(t, s)
	checkDownloadsMatchNumpy(t, s)
}

// Two replicas on one bucket serve the same links: an upload to one opens on the other
// under its name, statistics computed by one are seen by the other without reading a
// tensor, and a replica started afresh sees all of it.
func TestS3Replicas(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	a := serverOn(t, Config{}, s3Store(t, srv, 0))
	b := serverOn(t, Config{}, s3Store(t, srv, 0))
	id := uploadFixture(t, a, "state_dict.pt")

	rec := do(b, http.MethodGet, "/api/checkpoints/"+id, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"name":"state_dict.pt"`) {
		t.Fatalf("replica b GET the checkpoint uploaded to a = %d %.300s", rec.Code, rec.Body)
	}
	if rec := do(b, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
		t.Fatalf("replica b GET /c/%s = %d", id, rec.Code)
	}
	if p := runJob(t, a, id); p.State != jobDone || p.TensorsDone != 39 {
		t.Fatalf("job on a = %+v, want done with 39 tensors", p)
	}
	time.Sleep(savedRecheck) // b looked for saved statistics when it opened the checkpoint
	p := decode[jobProgress](t, do(b, http.MethodGet, "/api/checkpoints/"+id+"/stats/all", nil))
	if p.State != jobDone || p.TensorsDone != 39 {
		t.Errorf("replica b's progress after a's job = %+v, want done with 39 tensors", p)
	}
	for _, wt := range fixtureTensors(t, "state_dict.pt") {
		if rec := do(b, http.MethodGet, statsURL(id, wt.Path), nil); rec.Code != http.StatusOK {
			t.Errorf("b GET stats of %s = %d", wt.Path, rec.Code)
		}
	}
	if n := b.stats.computed.Load(); n != 0 {
		t.Errorf("replica b computed %d statistics that a had computed", n)
	}
	// One tensor computed on its own by b is seen by a (which has the checkpoint open).
	id2 := uploadFixture(t, b, "dtypes.pt")
	if rec := do(b, http.MethodGet, statsURL(id2, "/float64"), nil); rec.Code != http.StatusOK {
		t.Fatalf("b GET stats = %d %.200s", rec.Code, rec.Body)
	}
	before := a.stats.computed.Load()
	if rec := do(a, http.MethodGet, statsURL(id2, "/float64"), nil); rec.Code != http.StatusOK {
		t.Fatalf("a GET stats = %d %.200s", rec.Code, rec.Body)
	}
	if a.stats.computed.Load() != before {
		t.Errorf("a computed the statistics b had saved")
	}

	// A replica started afresh (nothing local survives) serves everything.
	c := serverOn(t, Config{}, s3Store(t, srv, 0))
	if p := decode[jobProgress](t, do(c, http.MethodGet, "/api/checkpoints/"+id+"/stats/all", nil)); p.State != jobDone {
		t.Errorf("a fresh replica's progress = %+v, want done", p)
	}
	for _, wt := range fixtureTensors(t, "state_dict.pt") {
		if rec := do(c, http.MethodGet, statsURL(id, wt.Path), nil); rec.Code != http.StatusOK {
			t.Errorf("fresh replica GET stats of %s = %d", wt.Path, rec.Code)
		}
	}
	if n := c.stats.computed.Load(); n != 0 {
		t.Errorf("the fresh replica computed %d statistics that were saved", n)
	}
	checkStatsMatchNumpy(t, c)
}

// While the S3 server is down, requests get a 503 with Retry-After within the bounded
// timeout, never a verdict on the file, and nothing is cached from the outage: once the
// server is back, the same requests answer with numpy's values.
func TestS3Outage(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	timeout := 3 * time.Second
	// A cache of one extent: what the request reads is not what opening read.
	s := serverOn(t, Config{}, s3Store(t, srv, timeout, 1))
	opened := uploadFixture(t, s, "state_dict.pt") // opened by the upload
	notOpened := uploadFixture(t, s, "dtypes.pt")
	s.cache.close() // drop both from the cache; open state_dict.pt again, not dtypes.pt
	if rec := do(s, http.MethodGet, "/api/checkpoints/"+opened, nil); rec.Code != http.StatusOK {
		t.Fatalf("GET = %d", rec.Code)
	}

	srv.Stop()
	for _, target := range []string{
		"/c/" + notOpened,                           // open: HEAD and reads fail
		"/api/checkpoints/" + notOpened,             // same, in the API
		statsURL(opened, "/wte.weight"),             // the tree is open, its bytes are not
		downloadURL(opened, "/wte.weight", "npy"),   // nor downloads
		"/api/checkpoints/" + opened + "/stats/all", // progress needs no bytes: 200
	} {
		start := time.Now()
		rec := do(s, http.MethodGet, target, nil)
		took := time.Since(start)
		if strings.HasSuffix(target, "/stats/all") {
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s while S3 is down = %d, want 200 (no bytes needed)", target, rec.Code)
			}
			continue
		}
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("GET %s while S3 is down = %d (Retry-After %q) %.200s, want 503 with Retry-After", target, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
		if !strings.Contains(rec.Body.String(), "storage is unavailable") {
			t.Errorf("GET %s while S3 is down says %.300s, want it to say the storage is unavailable", target, rec.Body)
		}
		if took > timeout+2*time.Second {
			t.Errorf("GET %s while S3 is down took %v, want at most the %v timeout and a little", target, took, timeout)
		}
	}
	up := do(s, http.MethodPost, "/api/checkpoints?name=x.pkl", strings.NewReader("\x80\x04K\x01."))
	if up.Code != http.StatusServiceUnavailable {
		t.Errorf("upload while S3 is down = %d %.200s, want 503", up.Code, up.Body)
	}

	srv.Restart()
	for _, id := range []string{opened, notOpened} {
		if rec := do(s, http.MethodGet, "/c/"+id, nil); rec.Code != http.StatusOK {
			t.Errorf("GET /c/%s after S3 came back = %d %.200s", id, rec.Code, rec.Body)
		}
	}
	checkStatsMatchNumpy(t, s)
}

// Statistics survive a restart on the local directory too: a finished job reads as done
// afterwards, and nothing is computed again.
func TestStatsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := store.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := serverOn(t, Config{}, st)
	id := uploadFixture(t, s, "state_dict.pt")
	if p := runJob(t, s, id); p.State != jobDone {
		t.Fatalf("job = %+v", p)
	}
	s.Close()
	st.Close()

	st2, err := store.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() })
	s2 := serverOn(t, Config{}, st2)
	if p := decode[jobProgress](t, do(s2, http.MethodGet, "/api/checkpoints/"+id+"/stats/all", nil)); p.State != jobDone || p.TensorsDone != 39 {
		t.Errorf("progress after a restart = %+v, want done with 39 tensors", p)
	}
	page := do(s2, http.MethodGet, "/c/"+id, nil).Body.String()
	if !strings.Contains(page, `data-state="done"`) {
		t.Error("the page after a restart does not show the finished job")
	}
	for _, wt := range fixtureTensors(t, "state_dict.pt") {
		if rec := do(s2, http.MethodGet, statsURL(id, wt.Path), nil); rec.Code != http.StatusOK {
			t.Errorf("GET stats of %s after the restart = %d", wt.Path, rec.Code)
		}
	}
	if n := s2.stats.computed.Load(); n != 0 {
		t.Errorf("computed %d statistics after the restart, want none", n)
	}
	checkStatsMatchNumpy(t, s2) // state_dict.pt's from the saved document are numpy's
}

// A hung endpoint (connections accepted, no answer) is a 503 within -s3-timeout too, and
// answers again once it moves.
func TestS3SlowEndpoint(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	proxy := s3test.NewProxy(t, srv.Addr())
	srv.Env(t)
	t.Setenv("AWS_ENDPOINT_URL", proxy.Endpoint)
	timeout := 2 * time.Second
	st, err := s3store.New(context.Background(), s3store.Config{URL: "s3://ckv/team", Scratch: t.TempDir(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := serverOn(t, Config{}, st)
	id := uploadFixture(t, s, "state_dict.pt")
	s.cache.close()

	proxy.Stall(true)
	start := time.Now()
	rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil)
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Errorf("GET on a hung endpoint took %v, want about the %v timeout", took, timeout)
	}
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("GET on a hung endpoint = %d %.200s, want 503 with Retry-After", rec.Code, rec.Body)
	}
	proxy.Stall(false)
	if rec := do(s, http.MethodGet, "/api/checkpoints/"+id, nil); rec.Code != http.StatusOK {
		t.Errorf("GET once the endpoint answers = %d %.200s", rec.Code, rec.Body)
	}
}

// safetensorsOf writes a safetensors file of one float32 tensor "w" by the format's
// definition: its raw download must be these very bytes.
func safetensorsOf(values int) ([]byte, []byte) {
	data := make([]byte, 4*values)
	for i := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(i%1000)/7))
	}
	header := fmt.Sprintf(`{"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}`, values, len(data))
	for len(header)%8 != 0 {
		header += " "
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes(), data
}

// The S3 server killed in the middle of a download and of a statistics job: the download
// is cut short (never a whole body of wrong bytes), the job fails saying the storage is
// unavailable, and once the server is back both give the file's own bytes and finish.
func TestS3KilledMidRequest(t *testing.T) {
	srv := s3test.Start(t, "ckv")
	s := serverOn(t, Config{}, s3Store(t, srv, 3*time.Second, 1))
	file, want := safetensorsOf(24 << 20 / 4) // 24 MiB of values
	rec := do(s, http.MethodPost, "/api/checkpoints?name=big.safetensors", bytes.NewReader(file))
	if rec.Code != http.StatusCreated {
		t.Fatalf("upload = %d %.200s", rec.Code, rec.Body)
	}
	id := decode[uploadJSON](t, rec).ID
	hs := httptest.NewServer(s)
	defer hs.Close()
	raw := hs.URL + downloadURL(id, "/w", "raw")

	resp, err := http.Get(raw)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET raw = %v %v", resp, err)
	}
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := append(head, rest...)
	if err == nil && !bytes.Equal(got, want) {
		t.Fatalf("a download cut by the outage ended cleanly with %d bytes that are not the file's", len(got))
	}
	if err == nil {
		t.Log("the download finished from bytes fetched before the outage")
	}

	api := "/api/checkpoints/" + id + "/stats/all"
	if rec := do(s, http.MethodPost, api, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("POST %s = %d", api, rec.Code)
	}
	deadline := time.Now().Add(30 * time.Second)
	var p jobProgress
	for {
		p = decode[jobProgress](t, do(s, http.MethodGet, api, nil))
		if p.State != jobRunning || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.State == jobDone && p.Failed == 0 {
		t.Fatalf("the job finished with every tensor while the S3 server was down: %+v", p)
	}
	if rec := do(s, http.MethodGet, statsURL(id, "/w"), nil); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("stats while S3 is down = %d %.200s, want 503", rec.Code, rec.Body)
	}

	srv.Restart()
	resp, err = http.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(all, want) {
		t.Fatalf("the download after the restart: %d, %v, equal %v", resp.StatusCode, err, bytes.Equal(all, want))
	}
	if p := runJob(t, s, id); p.State != jobDone || p.Failed != 0 {
		t.Errorf("the job after the restart = %+v, want done", p)
	}
	if rec := do(s, http.MethodGet, statsURL(id, "/w"), nil); rec.Code != http.StatusOK {
		t.Errorf("stats after the restart = %d", rec.Code)
	}
}
