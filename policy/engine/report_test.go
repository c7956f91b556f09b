package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/policy/engine"
)

// clock is a clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// gatedStore holds the first move until gate closes, and has every move
// take step on the clock.
type gatedStore struct {
	daemon.Adapter
	clock   *clock
	step    time.Duration
	mu      sync.Mutex
	calls   int
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) Move(ctx context.Context, m engine.MoveRequest) error {
	g.mu.Lock()
	g.calls++
	first := g.calls == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.gate
	}
	g.clock.add(g.step)
	return g.Adapter.Move(ctx, m)
}

// The engine reports only what happened (issue 18, item 8): a move's
// time is the copy's, not the time it waited in the queue; a file
// already on the tier is said to be, and is neither counted nor logged
// as a move; a pin's move has reason "pin"; the moved line's duration is
// dur_ms.
func TestEngineReportsWhatHappened(t *testing.T) {
	s, _ := newStore(t, 0)
	for _, n := range []string{"a", "b"} {
		writeFile(t, s, "", n, bytes.Repeat([]byte("x"), 4096), time.Now())
	}
	cfg := defaultCfg()
	cfg.Thresholds = []float64{-1, -1} // no planned moves
	cfg.Policy.MigrateThreads = 1
	clk := &clock{t: time.Unix(1_000_000, 0)}
	g := &gatedStore{Adapter: daemon.Adapter{Store: s}, clock: clk, step: 2 * time.Second, entered: make(chan struct{}), gate: make(chan struct{})}
	var logBuf syncBuf
	e, err := engine.New(g, cfg, "", zerolog.New(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	engine.SetNow(e, clk.now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	ja, err := e.Migrate("a", "slow")
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered // one move runs, held
	jb, err := e.Migrate("b", "slow")
	if err != nil {
		t.Fatal(err)
	}
	clk.add(10 * time.Second) // the other waits in the queue meanwhile
	close(g.gate)
	for _, j := range []*engine.Job{ja, jb} {
		if err := j.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One was held 10 s into its move; the other queued those 10 s and
	// then moved in its 2 s.
	got := map[time.Duration]int{ja.Moving(time.Now()): 1, jb.Moving(time.Now()): 1}
	if got[12*time.Second] != 1 || got[2*time.Second] != 1 {
		t.Errorf("move times %v and %v; want 12s (held) and 2s (queued 10s, not counted)", ja.Moving(time.Now()), jb.Moving(time.Now()))
	}
	// The store's ledger is the count of moves.
	st := s.MoveStats()
	if st.Started != 2 || st.Moved != 2 || st.BytesMoved != 2*4096 {
		t.Fatalf("move ledger %+v; want 2 moves of 4 KiB", st)
	}

	jc, err := e.Migrate("a", "slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := jc.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !jc.Already() {
		t.Error("a migrate of a file already on its tier is not said to be")
	}
	if st := s.MoveStats(); st.Started != 2 || st.Moved != 2 || st.BytesMoved != 2*4096 || st.Skipped != 0 || st.Failed != 0 {
		t.Errorf("move ledger after a migrate to where the file is: %+v; want nothing counted", st)
	}

	jp, err := e.Pin("b", "fast")
	if err != nil {
		t.Fatal(err)
	}
	if err := jp.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if jp.Reason != "pin" {
		t.Errorf("pin's move has reason %q, want pin", jp.Reason)
	}

	moved := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == "moved" {
			moved[m["path"].(string)+">"+m["to"].(string)] = m
		}
		if m["message"] == "already on the tier: nothing moved" && m["path"] != "a" {
			t.Errorf("already line for %v", m["path"])
		}
		if _, ok := m["dur"]; ok {
			t.Errorf("a log line with a unitless dur: %s", line)
		}
	}
	if len(moved) != 3 {
		t.Errorf("moved lines %v; want a>slow, b>slow, b>fast and none for the migrate that moved nothing", moved)
	}
	if m := moved["b>fast"]; m == nil || m["reason"] != "pin" {
		t.Errorf("the pin's moved line: %v; want reason pin", m)
	}
	if m := moved["a>slow"]; m == nil || m["reason"] != "manual" {
		t.Errorf("the migrate's moved line: %v; want reason manual", m)
	}
	for k, m := range moved {
		if ms, ok := m["dur_ms"].(float64); !ok || (ms != 2000 && ms != 12000) {
			t.Errorf("%s: dur_ms %v, want the move's 2000 or 12000", k, m["dur_ms"])
		}
	}
}

// syncBuf is a log sink the engine's goroutines share.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
