package tiering

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func reasonOf(m MoveStats, r MoveReason) ReasonStats {
	for _, rs := range m.ByReason {
		if rs.Reason == r {
			return rs
		}
	}
	return ReasonStats{}
}

func createFile(t *testing.T, s *Store, name string, size int) {
	t.Helper()
	h, _, err := s.Create(RelPath(""), name, unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if size > 0 {
		if _, err := h.Write(make([]byte, size), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// Every move the store is asked for lands on the ledger once, under its
// reason and its outcome; a file already where it is asked to go is no
// move at all.
func TestLedgerCountsEachMoveOnce(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	createFile(t, s, "a", 1<<20)
	if err := s.Move("a", "slow"); err != nil {
		t.Fatal(err)
	}
	if err := s.Move("a", "slow"); err != nil {
		t.Fatalf("a move to the tier the file is on: %v", err)
	}
	if err := s.MoveWith(context.Background(), "a", "fast", MoveOptions{Reason: ReasonPromote, Ino: 1 << 60}); !errors.Is(err, ErrChanged) {
		t.Fatalf("a move planned for another inode: %v, want ErrChanged", err)
	}
	if err := s.MoveWith(context.Background(), "nothing", "fast", MoveOptions{Reason: ReasonDemote}); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("a move of no file: %v, want ENOENT", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.MoveWith(ctx, "a", "fast", MoveOptions{Reason: ReasonPin}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a move canceled before it began: %v, want context.Canceled", err)
	}
	if err := s.MoveWith(context.Background(), "a", "fast", MoveOptions{Reason: ReasonPromote}); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveWith(context.Background(), "a", "nowhere", MoveOptions{Reason: ReasonDemote}); err == nil {
		t.Fatal("a move to no tier succeeded")
	}

	m := s.Status().Moves
	if m.Started != 6 || m.Moved != 2 || m.Skipped != 3 || m.Failed != 1 || m.InFlight != 0 || m.Spills != 0 {
		t.Errorf("ledger: %+v, want 6 started: 2 moved, 3 skipped, 1 failed", m)
	}
	if m.BytesMoved != 2<<20 {
		t.Errorf("bytes moved: %d, want %d", m.BytesMoved, 2<<20)
	}
	want := map[MoveReason]map[MoveOutcome]int64{
		ReasonManual:  {OutcomeMoved: 1},
		ReasonPromote: {OutcomeChanged: 1, OutcomeMoved: 1},
		ReasonDemote:  {OutcomeGone: 1, OutcomeFailed: 1},
		ReasonPin:     {OutcomeCanceled: 1},
	}
	for r, w := range want {
		got := reasonOf(m, r).Outcomes
		for o, n := range w {
			if got[o] != n {
				t.Errorf("%s: outcomes %v, want %v", r, got, w)
				break
			}
		}
	}
	if to := reasonOf(m, ReasonPromote).MovedTo; to["fast"] != 1 {
		t.Errorf("promotions by tier: %v, want fast: 1", to)
	}
	if len(m.LastErrors) != 1 || !strings.Contains(m.LastErrors[0], "nowhere") {
		t.Errorf("last errors: %q, want the move to tier nowhere", m.LastErrors)
	}
	if h := s.MoveDuration(ReasonPromote); h.Count != 1 {
		t.Errorf("promote durations: %d observed, want 1", h.Count)
	}
}

// A write that finds its tier full moves its file on: the ledger counts
// it as a spill, not as a failure (the engine's counters and the store's
// disagreed about that once).
func TestLedgerCountsSpills(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 4<<20), Options{})
	h, _, err := s.Create(RelPath(""), "big", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.Write(make([]byte, 6<<20), 0); err != nil {
		t.Fatalf("write past the fast tier's capacity: %v", err)
	}
	m := s.Status().Moves
	if m.Spills != 1 || m.Failed != 0 || reasonOf(m, ReasonSpill).MovedTo["slow"] != 1 {
		t.Errorf("ledger after a spill: %+v, want one spill to slow", m)
	}
}
