package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

func newStore(t *testing.T, fastCap units.ByteSize) (*tiering.Store, []tiering.TierConfig) {
	t.Helper()
	base := t.TempDir()
	var tiers []tiering.TierConfig
	for i, n := range []string{"fast", "slow"} {
		d := filepath.Join(base, n)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		c := tiering.TierConfig{Name: n, Type: tiering.TypeHDD, Path: d}
		if i == 0 {
			c.Type, c.Capacity = tiering.TypeNVMe, fastCap
		}
		tiers = append(tiers, c)
	}
	s, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, tiers
}

func writeFile(t *testing.T, s *tiering.Store, dir, name string, data []byte, mtime time.Time) {
	t.Helper()
	if dir != "" {
		if _, err := s.Mkdir(tiering.RelPath(""), dir, 0o755, tiering.Owner{}); err != nil && err != unix.EEXIST {
			t.Fatal(err)
		}
	}
	h, _, err := s.Create(tiering.RelPath(dir), name, unix.O_RDWR, 0o644, tiering.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.Write(data, 0); err != nil {
		t.Fatal(err)
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if _, err := h.Setattr(tiering.SetAttr{Mtime: &ts}); err != nil {
		t.Fatal(err)
	}
}

func defaultCfg() engine.Config {
	p := policy.DefaultConfig()
	p.Interval = units.Duration(20 * time.Millisecond)
	p.MinAge = 0
	p.Pin = nil
	return engine.Config{Policy: p, Thresholds: []float64{0.5, 0.5}}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The engine brings a full fast tier under its threshold, oldest segments
// first, and every byte survives.
func TestEngineConverges(t *testing.T) {
	s, tiers := newStore(t, 8<<20)
	r := rand.New(rand.NewSource(1))
	old := time.Now().Add(-time.Hour)
	data := map[string][]byte{}
	for i := 0; i < 6; i++ {
		name := fmt.Sprintf("%020d.log", i*1000)
		b := make([]byte, 1<<20)
		r.Read(b)
		data[name] = b
		writeFile(t, s, "t-0", name, b, old.Add(time.Duration(i)*time.Minute))
	}
	e, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "fast tier under its threshold", func() bool {
		st := e.Status()
		return s.Status().Tiers[0].UsedBytes <= 4<<20 && len(st.Queued) == 0 && len(st.InFlight) == 0
	})
	if m := s.Status().Moves; m.Moved == 0 || m.Failed != 0 || m.Moved != m.ByReason[0].Outcomes["moved"] {
		t.Fatalf("move ledger %+v: want demotions (the first reason) only, none failed", m)
	}
	// Oldest first: the first segments went down, the newest stayed.
	for i := 0; i < 6; i++ {
		name := fmt.Sprintf("%020d.log", i*1000)
		onSlow := fileExists(filepath.Join(tiers[1].Path, "data", "t-0", name))
		onFast := fileExists(filepath.Join(tiers[0].Path, "data", "t-0", name))
		if onSlow == onFast {
			t.Fatalf("%s on slow=%v fast=%v", name, onSlow, onFast)
		}
		if i == 5 && onSlow {
			t.Fatalf("newest segment demoted")
		}
		if i == 0 && !onSlow {
			t.Fatalf("oldest segment not demoted")
		}
		h, err := s.Open(tiering.RelPath("t-0/"+name), unix.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1<<20)
		n, err := h.Read(got, 0)
		h.Release()
		if err != nil || n != len(got) || !bytes.Equal(got, data[name]) {
			t.Fatalf("%s: content differs after moves (%d, %v)", name, n, err)
		}
	}
	// A settled store gets no more moves.
	if n := e.Plan(); n != 0 {
		t.Fatalf("plan on a settled store queued %d moves", n)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// -1 disables the policy; Reconfigure turns it on live.
func TestEngineDisabledThenReconfigured(t *testing.T) {
	s, _ := newStore(t, 4<<20)
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 3; i++ {
		writeFile(t, s, "t-0", fmt.Sprintf("%020d.log", i), make([]byte, 1<<20), old)
	}
	cfg := defaultCfg()
	cfg.Policy.MigrateThreshold = -1
	cfg.Thresholds = []float64{-1, -1}
	e, err := engine.New(daemon.Adapter{Store: s}, cfg, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if n := e.Plan(); n != 0 {
		t.Fatalf("disabled policy planned %d moves", n)
	}
	cfg2 := defaultCfg()
	e.Reconfigure(cfg2)
	if n := e.Plan(); n == 0 {
		t.Fatalf("reconfigured policy planned nothing with the fast tier at 75%%")
	}
	cfg3 := defaultCfg()
	cfg3.Policy.MaxRate = 8 << 20
	e.Reconfigure(cfg3)
	if got := engine.Limiter(e).Limit(); float64(got) != 8<<20 {
		t.Fatalf("limiter at %v after reconfigure to 8MiB/s", got)
	}
}

// Manual moves and pins: pins persist across a new engine on the same file.
func TestEngineMigrateAndPins(t *testing.T) {
	s, tiers := newStore(t, 0)
	writeFile(t, s, "", "ckpt", []byte("x"), time.Now())
	pins := filepath.Join(t.TempDir(), "pins.json")
	e, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	j, err := e.Migrate("ckpt", "slow")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(tiers[1].Path, "data", "ckpt")) {
		t.Fatalf("migrate did not move the file")
	}
	j, err = e.Pin("ckpt", "fast")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(tiers[0].Path, "data", "ckpt")) {
		t.Fatalf("pin did not move the file to its tier")
	}
	e2, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if got := e2.Status().Pins["ckpt"]; got != "fast" {
		t.Fatalf("pin lost across restart: %q", got)
	}
	if err := e2.Unpin("ckpt"); err != nil {
		t.Fatal(err)
	}
	e3, _ := engine.New(daemon.Adapter{Store: s}, defaultCfg(), pins, zerolog.Nop())
	if len(e3.Status().Pins) != 0 {
		t.Fatalf("unpin not kept: %v", e3.Status().Pins)
	}
	writeFile(t, s, "", "other", []byte("y"), time.Now())
	j, err = e.Migrate("other", "nowhere")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(ctx); err == nil {
		t.Fatalf("move to an unknown tier succeeded")
	}
	if m := s.Status().Moves; m.Failed != 1 || len(m.LastErrors) != 1 || !strings.Contains(m.LastErrors[0], "other") {
		t.Fatalf("failed move not reported: %+v", m)
	}
	if st := e.Status(); len(st.PlanErrors) != 0 {
		t.Fatalf("a failed move reported as a planning error: %q", st.PlanErrors)
	}
	// Each move counted once, under the reason it was asked for: the
	// migrate and the failed one manual, the pin's pin.
	m := s.Status().Moves
	for _, rs := range m.ByReason {
		want := map[tiering.MoveReason][2]int64{tiering.ReasonManual: {1, 1}, tiering.ReasonPin: {1, 0}}[rs.Reason]
		if rs.Outcomes["moved"] != want[0] || rs.Outcomes["failed"] != want[1] {
			t.Errorf("%s: outcomes %v, want %d moved, %d failed", rs.Reason, rs.Outcomes, want[0], want[1])
		}
	}
}

// A reloaded interval takes effect at once, not when the old one ends.
func TestEngineReloadedInterval(t *testing.T) {
	s, _ := newStore(t, 4<<20)
	old := time.Now().Add(-time.Hour)
	for i := 0; i < 3; i++ {
		writeFile(t, s, "t-0", fmt.Sprintf("%020d.log", i), make([]byte, 1<<20), old)
	}
	cfg := defaultCfg()
	cfg.Policy.Interval = units.Duration(time.Hour)
	e, err := engine.New(daemon.Adapter{Store: s}, cfg, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// The first plan runs at start; wait for it, then free the tier of
	// its moves' effect by writing more.
	waitFor(t, "first plan", func() bool { return !e.Status().LastPlan.IsZero() })
	first := e.Status().LastPlan
	e.Reconfigure(defaultCfg()) // 20ms
	waitFor(t, "a plan at the reloaded interval", func() bool { return e.Status().LastPlan.After(first) })
}

// A pinned file is not moved by hand: a glob pin or a CLI pin to another
// tier refuses the move.
func TestEngineMigrateRespectsPins(t *testing.T) {
	s, _ := newStore(t, 0)
	writeFile(t, s, "__cluster_metadata-0", "00000000000000000000.log", []byte("x"), time.Now())
	writeFile(t, s, "", "ckpt", []byte("x"), time.Now())
	cfg := defaultCfg()
	cfg.Policy.Pin = []string{"__cluster_metadata-*/**"}
	e, err := engine.New(daemon.Adapter{Store: s}, cfg, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Migrate("__cluster_metadata-0/00000000000000000000.log", "slow"); err == nil {
		t.Fatalf("glob-pinned file accepted for a manual move")
	}
	if _, err := e.Pin("ckpt", "fast"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Migrate("ckpt", "slow"); err == nil {
		t.Fatalf("file pinned to fast accepted for a move to slow")
	}
}

// A CLI pin names a file as the engine does ("a/b" from the mount root);
// any other spelling would never match a file and is refused, and nothing
// is kept (issue 16 item 13d).
func TestEnginePinRefusesUnmatchablePaths(t *testing.T) {
	s, _ := newStore(t, 0)
	writeFile(t, s, "", "ckpt", []byte("x"), time.Now())
	e, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), filepath.Join(t.TempDir(), "pins.json"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"", "../ckpt", "./ckpt", "/ckpt", "a//ckpt", "ckpt/", "a/../ckpt", "."} {
		if _, err := e.Pin(rel, "fast"); err == nil {
			t.Errorf("Pin(%q) accepted", rel)
		}
	}
	if pins := e.Status().Pins; len(pins) != 0 {
		t.Errorf("refused pins were kept: %v", pins)
	}
	if _, err := e.Pin("ckpt", "fast"); err != nil {
		t.Errorf("Pin(ckpt): %v", err)
	}
}

// A CLI pin is bound to its file: it follows the file's renames (Kafka's
// .log -> .log.deleted) and ends with it, whether unlinked or replaced by
// a rename over it (compaction's .cleaned -> .log); a new file later made
// under a pinned name is not pinned.
func TestPinEndsWithItsFile(t *testing.T) {
	s, tiers := newStore(t, 0)
	root := tiering.RelPath("")
	writeFile(t, s, "", "f.log", []byte("f"), time.Now())
	writeFile(t, s, "", "g.log", []byte("g"), time.Now())
	pins := filepath.Join(t.TempDir(), "pins.json")
	cfg := defaultCfg()
	cfg.Policy.Interval = units.Duration(time.Hour)
	e, err := engine.New(daemon.Adapter{Store: s}, cfg, pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, n := range []string{"f.log", "g.log"} {
		j, err := e.Pin(n, "slow")
		if err != nil {
			t.Fatal(err)
		}
		if err := j.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	plan := func() {
		t.Helper()
		waitFor(t, "an idle engine", func() bool { st := e.Status(); return len(st.Queued)+len(st.InFlight) == 0 })
		e.Plan()
		waitFor(t, "the plan's moves", func() bool { st := e.Status(); return len(st.Queued)+len(st.InFlight) == 0 })
	}
	wantPins := func(what string, want map[string]string) {
		t.Helper()
		got := e.Status().Pins
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("%s: pins %v, want %v", what, got, want)
		}
	}
	wantPins("pinned", map[string]string{"f.log": "slow", "g.log": "slow"})

	// Renamed: the pin follows.
	if err := s.Rename(root, "f.log", root, "f.log.deleted", 0, nil); err != nil {
		t.Fatal(err)
	}
	plan()
	wantPins("after a rename", map[string]string{"f.log.deleted": "slow", "g.log": "slow"})
	if _, err := e.Migrate("f.log.deleted", "fast"); err == nil {
		t.Fatalf("a renamed pinned file accepted for a move off its tier")
	}
	// Unlinked: the pin ends.
	if err := s.Unlink(root, "f.log.deleted", nil); err != nil {
		t.Fatal(err)
	}
	// Replaced by a rename over it: the pinned file is gone too.
	writeFile(t, s, "", "g.log.cleaned", []byte("g2"), time.Now())
	if err := s.Rename(root, "g.log.cleaned", root, "g.log", 0, nil); err != nil {
		t.Fatal(err)
	}
	plan()
	wantPins("after unlink and replacement", nil)
	// A new file under the old name is not pinned: it stays where it is.
	writeFile(t, s, "", "f.log", []byte("new"), time.Now())
	plan()
	for _, n := range []string{"f.log", "g.log"} {
		if !fileExists(filepath.Join(tiers[0].Path, "data", n)) {
			t.Fatalf("the new %s was moved off the fast tier by a pin of the file it replaced", n)
		}
	}
	if _, err := e.Migrate("f.log", "fast"); err != nil {
		t.Fatalf("the new f.log refused for a move: %v", err)
	}
	e2, err := engine.New(daemon.Adapter{Store: s}, cfg, pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if p := e2.Status().Pins; len(p) != 0 {
		t.Fatalf("ended pins kept in %s: %v", pins, p)
	}
}

// Pins kept by path in a pins.json from before pins were bound to files
// are bound to the file at that path when the engine starts; a pin whose
// file is gone ends.
func TestPinsFromPathsBound(t *testing.T) {
	s, tiers := newStore(t, 0)
	root := tiering.RelPath("")
	writeFile(t, s, "", "ckpt", []byte("x"), time.Now())
	pins := filepath.Join(t.TempDir(), "pins.json")
	if err := os.WriteFile(pins, []byte(`{"ckpt": "slow", "gone": "slow"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Status().Pins; len(got) != 1 || got["ckpt"] != "slow" {
		t.Fatalf("pins from a pins.json of paths: %v, want ckpt alone", got)
	}
	writeFile(t, s, "", "gone", []byte("y"), time.Now())
	if err := s.Rename(root, "ckpt", root, "ckpt.moved", 0, nil); err != nil {
		t.Fatal(err)
	}
	e.Plan() // not run: its moves stay queued
	st := e.Status()
	if len(st.Pins) != 1 || st.Pins["ckpt.moved"] != "slow" {
		t.Fatalf("pins after the pinned file's rename: %v, want ckpt.moved", st.Pins)
	}
	if len(st.Queued) != 1 || st.Queued[0].Path != "ckpt.moved" || st.Queued[0].To != "slow" {
		t.Fatalf("planned %+v; want the pinned file alone moved to its tier (not the new file under a pin's old name)", st.Queued)
	}
	if !fileExists(filepath.Join(tiers[0].Path, "data", "gone")) {
		t.Fatalf("the new file is not on the fast tier")
	}
	e2, err := engine.New(daemon.Adapter{Store: s}, defaultCfg(), pins, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if got := e2.Status().Pins; len(got) != 1 || got["ckpt.moved"] != "slow" {
		t.Fatalf("pins after a restart: %v, want ckpt.moved", got)
	}
}
