package tiering

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A file written in more scattered places during a move than the move
// keeps ranges for is copied again whole, and the copy must then equal
// the source in its holes too: a hole punched (or a size cut and grown
// back) after the bulk copy once kept the bulk copy's bytes there, so
// the file read back old data after the move.
func TestRecopyAllClearsHoles(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	h, _, err := s.Create(RelPath(""), "f", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	if _, err := h.Write(bytes.Repeat([]byte{0xaa}, size), 0); err != nil {
		t.Fatal(err)
	}
	const holeFrom, holeLen = 512 << 10, 256 << 10
	FailPoint = func(step string) {
		if step != "move:copied" {
			return
		}
		// More separate ranges than a move keeps (maxDirtyRanges): the
		// rest of the move recopies the file as a whole.
		for i := range maxDirtyRanges + 10 {
			if _, err := h.Write([]byte{0x55}, int64(i)*2); err != nil {
				t.Errorf("write during the move: %v", err)
			}
		}
		if err := h.Allocate(holeFrom, holeLen, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
			t.Errorf("punch a hole during the move: %v", err)
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	err = s.Move("f", "slow")
	FailPoint = nil
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	want := bytes.Repeat([]byte{0xaa}, size)
	for i := range maxDirtyRanges + 10 {
		want[i*2] = 0x55
	}
	clear(want[holeFrom : holeFrom+holeLen])
	got := make([]byte, size)
	if n, err := h.Read(got, 0); err != nil || n != size {
		t.Fatalf("read after the move: %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		first := 0
		for got[first] == want[first] {
			first++
		}
		bad := 0
		for i := range got {
			if got[i] != want[i] {
				bad++
			}
		}
		t.Errorf("after the move %d bytes differ, the first at %d (%#x, want %#x)", bad, first, got[first], want[first])
	}
	h.Release()
}

// A size cut during a move, then the file grown back past it: the cut
// bytes read as zeros on the source. The copy was never cut (a pass
// copied the cut range from a source too short to have it), so after the
// move the grown file showed the bulk copy's old bytes there.
func TestMoveCutAndRegrown(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	h, _, err := s.Create(RelPath(""), "f", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 10
	if _, err := h.Write(bytes.Repeat([]byte{0xaa}, size), 0); err != nil {
		t.Fatal(err)
	}
	const cut, tail = 4096, 200 << 10
	FailPoint = func(step string) {
		switch step {
		case "move:copied":
			if err := h.Truncate(cut); err != nil {
				t.Errorf("truncate during the move: %v", err)
			}
		case "move:converged":
			if _, err := h.Write([]byte("tail"), tail); err != nil {
				t.Errorf("write during the move: %v", err)
			}
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	err = s.Move("f", "slow")
	FailPoint = nil
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	want := make([]byte, tail+4)
	copy(want, bytes.Repeat([]byte{0xaa}, cut))
	copy(want[tail:], "tail")
	got := make([]byte, len(want)+10)
	n, err := h.Read(got, 0)
	if err != nil {
		t.Fatalf("read after the move: %v", err)
	}
	got = got[:n]
	if !bytes.Equal(got, want) {
		bad, first := 0, -1
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				bad++
				if first < 0 {
					first = i
				}
			}
		}
		t.Errorf("after the move: %d bytes (want %d), %d differ, the first at %d", len(got), len(want), bad, first)
	}
	h.Release()
}

// forgottenPath is the name of a node the kernel forgot once it lost it:
// it can say nothing any more.
type forgottenPath struct {
	comps     []string
	forgotten *bool
}

func (p forgottenPath) Components() ([]string, bool) {
	if *p.forgotten {
		return nil, false
	}
	return p.comps, true
}

// A file opened by a name it has lost, whose node can no longer say any
// name, still moves (and spills) under the name it has left: the move
// gave up with "file deleted" and the write on a full tier got ENOSPC
// (fs.TestStress).
func TestMoveByAForgottenName(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	forgotten := false
	h, _, err := s.Create(RelPath(""), "a", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	h, err = s.Open(forgottenPath{comps: []string{"a"}, forgotten: &forgotten}, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := s.Link(RelPath("a"), RelPath(""), "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath(""), "a", nil); err != nil {
		t.Fatal(err)
	}
	forgotten = true
	if err := s.moveFile(h.f, s.tiers[1]); err != nil {
		t.Fatalf("move of a file open by a forgotten name, with another left: %v", err)
	}
	if a, err := s.Getattr(RelPath("b")); err != nil || a.Tier != 1 {
		t.Errorf("b after the move: tier %d, %v; want tier 1", a.Tier, err)
	}
}

// An open file whose last name was unlinked spills like any other when
// its tier is full: its writes got ENOSPC although the other tier had
// room (and writes through a mapping of it were lost).
func TestSpillOfAnUnlinkedOpenFile(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 1<<20)
	s := openTest(t, tiers, Options{})
	h, ca, err := s.Create(RelPath(""), "a", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte{1}, 512<<10)
	if _, err := h.Write(first, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath(""), "a", nil); err != nil {
		t.Fatal(err)
	}
	filesBefore := s.tiers[0].files.Load() + s.tiers[1].files.Load()
	second := bytes.Repeat([]byte{2}, 1<<20)
	if n, err := h.Write(second, int64(len(first))); err != nil || n != len(second) {
		t.Fatalf("a 1 MiB write to an unlinked file on a full 1 MiB tier: %d, %v; want it spilled", n, err)
	}
	if h.f.tier != s.tiers[1] {
		t.Errorf("the file is on %s after the write, want slow", h.f.tier.Name)
	}
	got := make([]byte, len(first)+len(second))
	if n, err := h.Read(got, 0); err != nil || n != len(got) || !bytes.Equal(got, append(first, second...)) {
		t.Errorf("read back: %d bytes, %v, equal %v", n, err, bytes.Equal(got[:n], append(first, second...)[:n]))
	}
	if files := s.tiers[0].files.Load() + s.tiers[1].files.Load(); files != filesBefore {
		t.Errorf("files counted after the spill: %d, before %d", files, filesBefore)
	}
	// Its orphan name (orphan.go) went with it, with what was written.
	if _, err := os.Lstat(orphanPath(tiers[0], ca.Ino)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan name is still on fast after the spill: %v", err)
	}
	if b, err := os.ReadFile(orphanPath(tiers[1], ca.Ino)); err != nil || !bytes.Equal(b, append(first, second...)) {
		t.Errorf("the orphan name on slow after the spill: %d bytes, %v", len(b), err)
	}
	h.Release()
	for _, tc := range tiers {
		if _, err := os.Lstat(orphanPath(tc, ca.Ino)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the orphan name is still on %s after the last release: %v", tc.Name, err)
		}
	}
	for _, tr := range s.tiers {
		if u := tr.used.Load(); u != 0 {
			t.Errorf("tier %s counts %d bytes used once the file is closed, want 0", tr.Name, u)
		}
		ents, err := os.ReadDir(filepath.Join(filepath.Dir(tr.Path), filepath.Base(tr.Path), ".tierfs", "staging"))
		if err == nil && len(ents) > 0 {
			t.Errorf("tier %s: staging holds %d entries", tr.Name, len(ents))
		}
	}
}
