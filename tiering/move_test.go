package tiering

import (
	"errors"
	"testing"

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
	if m := s.Status().Moves; m.Failed != 0 || m.LastError != "" || m.Done != 0 {
		t.Errorf("status after the move: %+v, want neither done nor failed", m)
	}
}
