package tiering

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Kafka deletes and renames segments at any time, so a file may go while
// a move copies it. The move then has nothing to do: it ends with an
// error that says the file is gone (ENOENT, which the policy engine takes
// as benign), and it is not counted as a failed move in the status, which
// an operator reads for moves that went wrong.
func TestMoveOfAFileDeletedMeanwhile(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	h, _, err := s.Create(RelPath(""), "00000000000000000000.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(make([]byte, 3<<20), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	FailPoint = func(step string) {
		if step == "move:copied" {
			if err := s.Unlink(RelPath(""), "00000000000000000000.log", nil); err != nil {
				t.Errorf("unlink during the move: %v", err)
			}
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	err = s.Move("00000000000000000000.log", "slow")
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("move of a file deleted while it was copied: %v, want ENOENT", err)
	}
	if m := s.Status().Moves; m.Failed != 0 || len(m.LastErrors) != 0 || m.Moved != 0 || m.Skipped != 1 || m.InFlight != 0 {
		t.Errorf("status after the move: %+v, want one skipped, neither moved nor failed", m)
	}
	if o := reasonOf(s.Status().Moves, ReasonManual).Outcomes; o[OutcomeGone] != 1 {
		t.Errorf("outcomes of the manual moves: %v, want one gone", o)
	}
}

// A hard link made while the file is being moved must not come apart
// from it: the move either keeps both names one file (today's rule: a file
// with several names does not move, EMLINK) or takes both. Found by
// fs.TestStress: the move checks the link count before its copy only, so
// a link made during the copy stayed on the old tier as a second file
// with the same inode number; writes through one name did not show
// through the other, and the next mount refused the tiers.
func TestLinkWhileMoving(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	h, _, err := s.Create(RelPath(""), "a", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	FailPoint = func(step string) {
		if step == "move:copied" {
			if _, err := s.Link(RelPath("a"), RelPath(""), "b"); err != nil {
				t.Errorf("link during the move: %v", err)
			}
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	err = s.Move("a", "slow")
	FailPoint = nil
	if err != nil && !errors.Is(err, unix.EMLINK) {
		t.Fatalf("move: %v, want success or EMLINK", err)
	}
	var backing []unix.Stat_t
	for _, c := range tiers {
		for _, n := range []string{"a", "b"} {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(c.Path, "data", n), &st) == nil {
				backing = append(backing, st)
				t.Logf("%s on %s: backing inode %d, %d names", n, c.Name, st.Ino, st.Nlink)
			}
		}
	}
	if len(backing) != 2 || backing[0].Dev != backing[1].Dev || backing[0].Ino != backing[1].Ino || backing[0].Nlink != 2 {
		t.Errorf("after the move (%v), a and b are not one file on one tier", err)
	}
	s.Close()
	s2, err := Open(tiers, Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("the tiers do not open again: %v", err)
	}
	s2.Close()
}
