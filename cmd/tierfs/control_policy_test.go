package main

import (
	"context"
	"errors"
	"hash/fnv"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// engineStore is an engine.Store whose moves the test steers: "big"
// copies half, then waits for release; "bad" fails; the rest succeed.
type engineStore struct {
	release chan struct{}
	mu      sync.Mutex
	moved   []string
}

func (s *engineStore) PolicySnapshot(now time.Time) (policy.Snapshot, error) {
	return policy.Snapshot{Now: now, Tiers: []policy.Tier{{Name: "fast", Capacity: 100}, {Name: "slow", Capacity: 1000}}}, nil
}

// FileIno numbers every path as a file of its own.
func (s *engineStore) FileIno(rel string) (uint64, error) {
	h := fnv.New64a()
	h.Write([]byte(rel))
	return h.Sum64() >> 2, nil
}

func (s *engineStore) MoveWith(ctx context.Context, rel, to string, o tiering.MoveOptions) error {
	switch rel {
	case "big":
		o.Progress(500, 1000)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		o.Progress(1000, 1000)
	case "bad":
		return errors.New("disk on fire")
	}
	s.mu.Lock()
	s.moved = append(s.moved, rel+"->"+to)
	s.mu.Unlock()
	return nil
}

// testPolicy is a controlPolicy over a real engine.
type testPolicy struct {
	eng    *engine.Engine
	reload func() (reloadResult, error)
}

func (p *testPolicy) Migrate(rel, tier string) (*engine.Job, error) { return p.eng.Migrate(rel, tier) }
func (p *testPolicy) Pin(rel, tier string) (*engine.Job, error)     { return p.eng.Pin(rel, tier) }
func (p *testPolicy) Unpin(rel string) error                        { return p.eng.Unpin(rel) }
func (p *testPolicy) Reload() (reloadResult, error)                 { return p.reload() }
func (p *testPolicy) Status() policyStatus {
	return policyStatus{Status: p.eng.Status(), Thresholds: map[string]float64{"fast": 0.5, "slow": 0.5}}
}

func TestControlPolicy(t *testing.T) {
	es := &engineStore{release: make(chan struct{})}
	cfg := policy.DefaultConfig()
	cfg.Interval = 1 << 62 // plans only at start
	eng, err := engine.New(es, engine.Config{Policy: cfg, Thresholds: []float64{0.5, 0.5}}, filepath.Join(t.TempDir(), "pins.json"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		eng.Run(ctx)
		close(ran)
	}()
	defer func() {
		cancel()
		<-ran
	}()
	reloads := 0
	pol := &testPolicy{eng: eng, reload: func() (reloadResult, error) {
		reloads++
		if reloads == 2 {
			return reloadResult{}, errors.New("/etc/tierfs.toml:3: policy.migrate_threshold: must be in (0, 1]")
		}
		return reloadResult{Config: "/etc/tierfs.toml", Changes: []string{"policy.max_rate: 0 -> 1MiB/s"}}, nil
	}}
	cs := newControlServer(&fakeStore{}, pol, "/mnt/kafka", zerolog.Nop())
	sock, _ := serveTest(t, cs, cs.access.privileged, defaultControlLimits(), zerolog.Nop())
	c := newControlClientAt("/mnt/kafka", sock)

	// A move that copies half and waits.
	j, err := c.Migrate(ctx, "big", "slow")
	if err != nil {
		t.Fatal(err)
	}
	if j.ID == 0 || j.Path != "big" || j.To != "slow" || j.Finished || j.BytesTotal != 1000 {
		t.Errorf("migrate reply %+v", j)
	}
	poll(t, "the move to be half done", func() (bool, error) {
		j, err := c.Job(ctx, j.ID)
		return j.State == jobMoving && j.BytesDone == 500 && j.BytesTotal == 1000, err
	})
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Policy == nil || len(st.Policy.InFlight) != 1 || st.Policy.InFlight[0].Path != "big" || st.Policy.Thresholds["fast"] != 0.5 {
		t.Errorf("status policy = %+v", st.Policy)
	}
	// The same move again is the same job; another tier is refused.
	if j2, err := c.Migrate(ctx, "big", "slow"); err != nil || j2.ID != j.ID {
		t.Errorf("migrate again: %+v, %v; want job %d", j2, err, j.ID)
	}
	var ae *apiError
	if _, err := c.Migrate(ctx, "big", "fast"); !errors.As(err, &ae) || ae.Code != 409 || !strings.Contains(ae.Msg, "already queued") {
		t.Errorf("migrate to another tier while moving: %v", err)
	}
	close(es.release)
	poll(t, "the move to end", func() (bool, error) {
		j, err := c.Job(ctx, j.ID)
		return j.State == jobDone && j.Finished && j.BytesDone == 1000 && j.Error == "", err
	})

	// A failing move reports its error.
	jb, err := c.Migrate(ctx, "./bad", "slow")
	if err != nil || jb.Path != "bad" {
		t.Fatalf("migrate ./bad: %+v, %v", jb, err)
	}
	poll(t, "the failing move to end", func() (bool, error) {
		j, err := c.Job(ctx, jb.ID)
		return j.State == jobFailed && strings.Contains(j.Error, "disk on fire"), err
	})

	// Pins.
	p, err := c.Pin(ctx, "d/b", "fast")
	if err != nil || p.Path != "d/b" || p.Tier != "fast" || p.Job.ID == 0 {
		t.Fatalf("pin: %+v, %v", p, err)
	}
	poll(t, "the pin's move", func() (bool, error) {
		j, err := c.Job(ctx, p.Job.ID)
		return j.State == jobDone, err
	})
	if st, _ := c.Status(ctx); st.Policy.Pins["d/b"] != "fast" {
		t.Errorf("pins after pin: %v", st.Policy.Pins)
	}
	if err := c.Unpin(ctx, "d/b"); err != nil {
		t.Errorf("unpin: %v", err)
	}
	if st, _ := c.Status(ctx); len(st.Policy.Pins) != 0 {
		t.Errorf("pins after unpin: %v", st.Policy.Pins)
	}

	// Reload.
	if r, err := c.Reload(ctx); err != nil || len(r.Changes) != 1 {
		t.Errorf("reload: %+v, %v", r, err)
	}

	for _, tc := range []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"migrate unknown tier", func() error { _, err := c.Migrate(ctx, "a", "tape"); return err }(), 400, `no tier named "tape" (tiers: fast, slow)`},
		{"migrate missing", func() error { _, err := c.Migrate(ctx, "nope", "slow"); return err }(), 404, "migrate nope: no such file"},
		{"migrate directory", func() error { _, err := c.Migrate(ctx, "d", "slow"); return err }(), 400, "is a directory"},
		{"migrate dotdot", func() error { _, err := c.Migrate(ctx, "../x", "slow"); return err }(), 400, "bad path"},
		{"migrate no path", func() error { _, err := c.Migrate(ctx, "", "slow"); return err }(), 400, "path is required"},
		{"migrate no tier", func() error { _, err := c.Migrate(ctx, "a", ""); return err }(), 400, "tier is required"},
		{"pin unknown tier", func() error { _, err := c.Pin(ctx, "a", "tape"); return err }(), 400, `no tier named "tape"`},
		{"unpin not pinned", c.Unpin(ctx, "a"), 404, "unpin a: not pinned"},
		{"job unknown", func() error { _, err := c.Job(ctx, 999); return err }(), 404, "no job 999"},
		{"job bad id", c.do(ctx, http.MethodGet, "/v1/job", map[string][]string{"id": {"x"}}, nil), 400, "want a job number"},
		{"reload invalid", func() error { _, err := c.Reload(ctx); return err }(), 400, "policy.migrate_threshold"},
		{"GET migrate", c.do(ctx, http.MethodGet, "/v1/migrate", nil, nil), 405, "Method Not Allowed"},
	} {
		if !errors.As(tc.err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Msg, tc.msg) {
			t.Errorf("%s: %v; want %d with %q", tc.name, tc.err, tc.code, tc.msg)
		}
	}
	es.mu.Lock()
	moved := strings.Join(es.moved, " ")
	es.mu.Unlock()
	if want := "big->slow d/b->fast"; moved != want {
		t.Errorf("moves: %q, want %q", moved, want)
	}
}

func TestProgressLine(t *testing.T) {
	now := time.Now()
	q := &queued{rel: "t-0/00000000000000001000.log", queued: now.Add(-2 * time.Second), moving: now.Add(-time.Second),
		last: jobResponse{State: jobMoving, BytesDone: 5 << 20, BytesTotal: 10 << 20, MoveMs: 1000}}
	got := progressLine([]*queued{q}, now, 0)
	if want := "t-0/00000000000000001000.log [=========>          ]  50% 5.0 MiB/10.0 MiB 5.0 MiB/s"; got != want {
		t.Errorf("progress line\n got %q\nwant %q", got, want)
	}
	if got := progressLine([]*queued{q, q}, now, 70); len(got) > 69 || !strings.HasPrefix(got, "...") || !strings.HasSuffix(got, "(+1)") {
		t.Errorf("narrow progress line %q (%d columns)", got, len(got))
	}
	q.last.State = jobQueued
	if got := progressLine([]*queued{q}, now, 80); got != "waiting: 1 move(s) queued" {
		t.Errorf("queued line %q", got)
	}
}
