package fs

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
)

// handles is the daemon's count of passthrough handles and references of
// the file at rel.
func (m *testMount) handles(t testing.TB, rel string) (pt, refs int) {
	t.Helper()
	var st unix.Stat_t
	mustOK(t, unix.Stat(m.path(rel), &st), "stat "+rel)
	rep := m.call(t, request{Op: "handles", Ino: st.Ino})
	return rep.PT, rep.Refs
}

// waitClosed waits until the daemon has every handle of rel back: the
// kernel sends the RELEASE of a close in the background.
func (m *testMount) waitClosed(t testing.TB, rel string) {
	t.Helper()
	waitFor(t, rel+" released by the kernel", func() bool {
		_, refs := m.handles(t, rel)
		return refs == 0
	})
}

func (m *testMount) readsSoFar(t testing.TB) uint64 {
	return m.call(t, request{Op: "reads"}).Reads
}

func dropCaches(t testing.TB) {
	t.Helper()
	mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0), "drop the page cache")
}

func readAllAt(t testing.TB, fd int, n int) []byte {
	t.Helper()
	b := make([]byte, n+1)
	got := 0
	for got < len(b) {
		k, err := unix.Pread(fd, b[got:], int64(got))
		mustOK(t, err, "pread")
		if k == 0 {
			break
		}
		got += k
	}
	return b[:got]
}

// With [mount] passthrough, a read-only open of a pinned file is served by
// the kernel from the backing: no READ reaches the daemon. While such a
// handle is open an open for writing is ETXTBSY and a move EBUSY; after the
// last one closes, both work, and a reader beside a writer is served
// through the daemon (the kernel allows no mix).
func TestPassthroughPinnedFiles(t *testing.T) {
	pc := policy.DefaultConfig()
	pc.Interval = units.Duration(time.Hour)
	pc.Pin = []string{"keep*"}
	m := mount(t, mountOpt{passthrough: true, policy: &pc})
	r := rand.New(rand.NewSource(9))
	want := randBytes(r, 3<<20+123)
	mustOK(t, os.WriteFile(m.path("keep.dat"), want, 0o644), "write keep.dat")
	mustOK(t, os.WriteFile(m.path("other.dat"), want, 0o644), "write other.dat")
	m.waitClosed(t, "keep.dat")
	m.waitClosed(t, "other.dat")
	dropCaches(t)

	// An unpinned file: through the daemon (what shows the count moves).
	before := m.readsSoFar(t)
	of, err := unix.Open(m.path("other.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open other.dat")
	if !bytes.Equal(readAllAt(t, of, len(want)), want) {
		t.Fatal("other.dat: wrong content")
	}
	if pt, _ := m.handles(t, "other.dat"); pt != 0 {
		t.Fatalf("other.dat (not pinned) has %d passthrough handles", pt)
	}
	unix.Close(of)
	if after := m.readsSoFar(t); after == before {
		t.Fatal("reading an unpinned file after drop_caches sent the daemon no READ")
	}

	// A pinned one: the kernel reads the backing.
	before = m.readsSoFar(t)
	a, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open keep.dat")
	defer func() { unix.Close(a) }()
	if pt, _ := m.handles(t, "keep.dat"); pt != 1 {
		t.Fatalf("keep.dat (pinned, opened read-only) has %d passthrough handles, want 1", pt)
	}
	if !bytes.Equal(readAllAt(t, a, len(want)), want) {
		t.Fatal("keep.dat through passthrough: wrong content")
	}
	var st unix.Stat_t
	mustOK(t, unix.Fstat(a, &st), "fstat")
	if st.Size != int64(len(want)) {
		t.Fatalf("fstat size %d, want %d", st.Size, len(want))
	}
	mm, err := unix.Mmap(a, 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	mustOK(t, err, "mmap a passthrough handle")
	if !bytes.Equal(mm, want) {
		t.Fatal("keep.dat mapped: wrong content")
	}
	mustOK(t, unix.Munmap(mm), "munmap")
	if after := m.readsSoFar(t); after != before {
		t.Fatalf("%d READs reached the daemon for a passthrough handle", after-before)
	}
	// A second reader shares the backing (the kernel refuses a mix).
	b, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "second open of keep.dat")
	if !bytes.Equal(readAllAt(t, b, len(want)), want) {
		t.Fatal("second reader: wrong content")
	}
	if pt, _ := m.handles(t, "keep.dat"); pt != 2 {
		t.Fatalf("%d passthrough handles, want 2", pt)
	}

	// Nothing may change the backing under them.
	for _, fl := range []int{unix.O_WRONLY, unix.O_RDWR, unix.O_WRONLY | unix.O_APPEND} {
		if fd, err := unix.Open(m.path("keep.dat"), fl, 0); !errors.Is(err, unix.ETXTBSY) {
			if err == nil {
				unix.Close(fd)
			}
			t.Fatalf("open for writing (%#x) beside passthrough readers: %v, want ETXTBSY", fl, err)
		}
	}
	if err := m.move(t, "keep.dat", "slow"); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("move beside passthrough readers: %v, want EBUSY", err)
	}
	if m.tierOf(t, "keep.dat") != 0 {
		t.Fatal("keep.dat moved while open with passthrough")
	}
	// Unlinked while open: the readers keep reading it.
	mustOK(t, os.Link(m.path("keep.dat"), m.path("keep2.dat")), "link")
	mustOK(t, os.Remove(m.path("keep.dat")), "unlink a name")
	if !bytes.Equal(readAllAt(t, b, len(want)), want) {
		t.Fatal("after an unlink: wrong content")
	}
	mustOK(t, os.Rename(m.path("keep2.dat"), m.path("keep.dat")), "rename back")
	unix.Close(a)
	unix.Close(b)
	a = -1
	m.waitClosed(t, "keep.dat")

	// Closed: a writer may come, and a reader beside it is served
	// through the daemon.
	w, err := unix.Open(m.path("keep.dat"), unix.O_RDWR, 0)
	mustOK(t, err, "open for writing after the readers closed")
	patch := []byte("written after passthrough")
	_, err = unix.Pwrite(w, patch, 1000)
	mustOK(t, err, "pwrite")
	copy(want[1000:], patch)
	c, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open beside a writer")
	if !bytes.Equal(readAllAt(t, c, len(want)), want) {
		t.Fatal("reader beside a writer: wrong content")
	}
	if pt, _ := m.handles(t, "keep.dat"); pt != 0 {
		t.Fatalf("a reader beside a writer got passthrough (%d)", pt)
	}
	unix.Close(c)
	unix.Close(w)
	m.waitClosed(t, "keep.dat")

	// A move, then passthrough again from the new backing.
	mustOK(t, m.move(t, "keep.dat", "slow"), "move after the readers closed")
	if m.tierOf(t, "keep.dat") != 1 {
		t.Fatal("keep.dat not on slow after its move")
	}
	dropCaches(t)
	before = m.readsSoFar(t)
	d, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open after the move")
	defer unix.Close(d)
	if !bytes.Equal(readAllAt(t, d, len(want)), want) {
		t.Fatal("after the move: wrong content")
	}
	if pt, _ := m.handles(t, "keep.dat"); pt != 1 {
		t.Fatalf("after the move: %d passthrough handles, want 1", pt)
	}
	if after := m.readsSoFar(t); after != before {
		t.Fatalf("after the move: %d READs reached the daemon", after-before)
	}

	// The last name unlinked: the handle still reads and fstats it.
	mustOK(t, os.WriteFile(m.path("keep-gone.dat"), want[:5000], 0o644), "write keep-gone.dat")
	m.waitClosed(t, "keep-gone.dat")
	g, err := unix.Open(m.path("keep-gone.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open keep-gone.dat")
	defer unix.Close(g)
	if pt, _ := m.handles(t, "keep-gone.dat"); pt != 1 {
		t.Fatalf("keep-gone.dat: %d passthrough handles, want 1", pt)
	}
	mustOK(t, os.Remove(m.path("keep-gone.dat")), "unlink the last name")
	if !bytes.Equal(readAllAt(t, g, 5000), want[:5000]) {
		t.Fatal("unlinked: wrong content")
	}
	mustOK(t, unix.Fstat(g, &st), "fstat of the unlinked file")
	if st.Size != 5000 || st.Nlink != 0 {
		t.Fatalf("fstat of the unlinked file: size %d nlink %d, want 5000 and 0", st.Size, st.Nlink)
	}
}
