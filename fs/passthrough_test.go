package fs

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/metrics/metricstest"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/tiering"
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

// patchFile opens path for writing (which passthrough handles would
// refuse), writes data at off and into want, and returns the descriptor.
func patchFile(t testing.TB, path string, want []byte, off int, data []byte) int {
	t.Helper()
	w, err := unix.Open(path, unix.O_RDWR, 0)
	mustOK(t, err, "open for writing once the passthrough handles are gone")
	_, err = unix.Pwrite(w, data, int64(off))
	mustOK(t, err, "pwrite")
	copy(want[off:], data)
	return w
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
	for _, sup := range []bool{false, true} {
		t.Run(map[bool]string{false: "unsupervised", true: "supervised"}[sup], func(t *testing.T) {
			testPassthroughPinnedFiles(t, ptMount(t, sup))
		})
	}
}

// ptMount mounts with passthrough, the files keep* pinned.
func ptMount(t *testing.T, supervised bool) *testMount {
	pc := policy.DefaultConfig()
	pc.Interval = units.Duration(time.Hour)
	pc.Pin = []string{"keep*"}
	return mount(t, mountOpt{passthrough: true, policy: &pc, supervised: supervised, unsupervised: !supervised, devFuse: supervised, metrics: true})
}

func testPassthroughPinnedFiles(t *testing.T, m *testMount) {
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
	mt := metricstest.Get(t, m.call(t, request{Op: "metrics"}).Addr)
	if open, _ := mt.Value("tierfs_passthrough_handles"); open != 2 {
		t.Fatalf("tierfs_passthrough_handles %v, want 2", open)
	}
	if given, _ := mt.Value("tierfs_passthrough_handles_given_total"); given < 2 {
		t.Fatalf("tierfs_passthrough_handles_given_total %v, want at least 2", given)
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
	// A supervised daemon frees a handle's slot in its registry after
	// the bridge has the handle back: a writer between the two still
	// finds the file held, as one right after a close(2) may (the
	// kernel sends RELEASE in the background).
	waitFor(t, "the passthrough handles released", func() bool { return m.recorded(t) == 0 })
	m.waitClosed(t, "keep.dat")

	// Closed: a writer may come, and a reader beside it is served
	// through the daemon.
	w := patchFile(t, m.path("keep.dat"), want, 1000, []byte("written after passthrough"))
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

// recorded is the supervised mount's count of the kernel's passthrough
// handles (the registry, tiering/ptregistry.go).
func (m *testMount) recorded(t testing.TB) int {
	t.Helper()
	return m.call(t, request{Op: "handles"}).Recorded
}

// A daemon that takes a supervised mount over (kill -9, or a restart on
// request) keeps the kernel's passthrough handles: the old descriptor reads
// on, a new read-only open of that file shares the backing (the kernel
// would refuse any other answer) with no READ for the daemon, and writers
// and moves are still kept out until the last of them closes; then the
// backing id is taken back and the file is an ordinary one again. The
// successor gives no new passthrough handle.
func TestPassthroughAcrossTakeover(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind takeoverKind
	}{{"kill", takeoverKill}, {"restart", takeoverRestart}} {
		t.Run(tc.name, func(t *testing.T) {
			m := ptMount(t, true)
			r := rand.New(rand.NewSource(11))
			want := randBytes(r, 2<<20+77)
			mustOK(t, os.WriteFile(m.path("keep.dat"), want, 0o644), "write keep.dat")
			mustOK(t, os.WriteFile(m.path("keep2.dat"), want, 0o644), "write keep2.dat")
			m.waitClosed(t, "keep.dat")
			m.waitClosed(t, "keep2.dat")
			a, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
			mustOK(t, err, "open keep.dat")
			defer func() { unix.Close(a) }()
			if pt, _ := m.handles(t, "keep.dat"); pt != 1 || m.recorded(t) != 1 {
				t.Fatalf("keep.dat: %d passthrough handles, %d recorded; want 1 and 1", pt, m.recorded(t))
			}

			m.takeover(t, tc.kind)

			if !bytes.Equal(readAllAt(t, a, len(want)), want) {
				t.Fatal("the old descriptor after the takeover: wrong content")
			}
			if n := m.recorded(t); n != 1 {
				t.Fatalf("the successor knows %d passthrough handles, want the kernel's 1", n)
			}
			dropCaches(t)
			before := m.readsSoFar(t)
			b, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
			mustOK(t, err, "a new read-only open of the file after the takeover")
			defer func() { unix.Close(b) }()
			if !bytes.Equal(readAllAt(t, b, len(want)), want) {
				t.Fatal("the new descriptor: wrong content")
			}
			if after := m.readsSoFar(t); after != before {
				t.Fatalf("%d READs reached the successor for a handle sharing the kernel's backing", after-before)
			}
			if n := m.recorded(t); n != 2 {
				t.Fatalf("%d passthrough handles recorded, want 2", n)
			}
			if fd, err := unix.Open(m.path("keep.dat"), unix.O_RDWR, 0); !errors.Is(err, unix.ETXTBSY) {
				if err == nil {
					unix.Close(fd)
				}
				t.Fatalf("open for writing beside inherited passthrough handles: %v, want ETXTBSY", err)
			}
			if err := m.move(t, "keep.dat", "slow"); !errors.Is(err, syscall.EBUSY) {
				t.Fatalf("move beside inherited passthrough handles: %v, want EBUSY", err)
			}
			// No new passthrough handle from a successor.
			c, err := unix.Open(m.path("keep2.dat"), unix.O_RDONLY, 0)
			mustOK(t, err, "open keep2.dat")
			if !bytes.Equal(readAllAt(t, c, len(want)), want) {
				t.Fatal("keep2.dat: wrong content")
			}
			if pt, _ := m.handles(t, "keep2.dat"); pt != 0 || m.recorded(t) != 2 {
				t.Fatalf("the successor gave keep2.dat a passthrough handle (%d, %d recorded)", pt, m.recorded(t))
			}
			unix.Close(c)

			unix.Close(a)
			unix.Close(b)
			a, b = -1, -1
			waitFor(t, "the passthrough handles released", func() bool { return m.recorded(t) == 0 })
			m.waitClosed(t, "keep.dat")
			unix.Close(patchFile(t, m.path("keep.dat"), want, 4096, []byte("after the takeover")))
			m.waitClosed(t, "keep.dat")
			mustOK(t, m.move(t, "keep.dat", "slow"), "move once the passthrough handles are gone")
			d, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
			mustOK(t, err, "open after the move")
			defer unix.Close(d)
			if !bytes.Equal(readAllAt(t, d, len(want)), want) {
				t.Fatal("after the move: wrong content")
			}
			if strings.Contains(m.logs(), "passthrough: taking a backing id back") {
				t.Fatalf("the successor could not take the inherited backing id back:\n%s", m.logs())
			}
		})
	}
}

// A fresh mount removes an earlier mount's passthrough registry: a
// successor of it (with passthrough on again) would otherwise take the
// slots for its predecessor's and answer opens with backing ids the
// kernel of the new connection never gave. The earlier mount here leaves
// a handle recorded, as one whose supervisor and daemon were both killed
// does, and the next fresh mount has passthrough off.
func TestPassthroughRegistryOfAnEarlierMount(t *testing.T) {
	m := ptMount(t, true)
	want := randBytes(rand.New(rand.NewSource(14)), 64<<10)
	mustOK(t, os.WriteFile(m.path("keep.dat"), want, 0o644), "write keep.dat")
	m.waitClosed(t, "keep.dat")
	fd, err := unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open keep.dat")
	if n := m.recorded(t); n != 1 {
		t.Fatalf("%d passthrough handles recorded, want 1", n)
	}
	reg := filepath.Join(m.roots[0], ".tierfs", "passthrough")
	saved, err := os.ReadFile(reg)
	mustOK(t, err, "read the registry")
	unix.Close(fd)
	waitFor(t, "the handle released", func() bool { return m.recorded(t) == 0 })
	m.stop(t)
	// What a mount whose supervisor and daemon were both killed leaves.
	mustOK(t, os.WriteFile(reg, saved, 0o600), "put the registry with its slot back")

	cfg := m.cfg
	cfg.Passthrough = false
	m2 := startServer(t, cfg)
	if _, err := os.Stat(reg); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a fresh mount left an earlier mount's passthrough registry in place (%v)", err)
	}
	b, err := unix.Open(m2.path("keep.dat"), unix.O_RDONLY, 0)
	mustOK(t, err, "open keep.dat on the new mount")
	if !bytes.Equal(readAllAt(t, b, len(want)), want) {
		t.Fatal("wrong content")
	}
	unix.Close(b)
}

// The daemon dies after recording a passthrough handle and before the
// reply: the kernel resends the OPEN to the successor, which answers it
// with the handle recorded, counted once. The program's open succeeds.
func TestPassthroughOpenResent(t *testing.T) {
	pc := policy.DefaultConfig()
	pc.Interval = units.Duration(time.Hour)
	pc.Pin = []string{"keep*"}
	m := mount(t, mountOpt{passthrough: true, policy: &pc, supervised: true, devFuse: true, crashAt: "passthrough-recorded"})
	want := randBytes(rand.New(rand.NewSource(12)), 1<<20)
	mustOK(t, os.WriteFile(m.path("keep.dat"), want, 0o644), "write keep.dat")
	m.waitClosed(t, "keep.dat")
	old := m.pid
	opened := make(chan error, 1)
	var fd int
	go func() {
		var err error
		fd, err = unix.Open(m.path("keep.dat"), unix.O_RDONLY, 0)
		opened <- err
	}()
	m.nextDaemon(t, old)
	mustOK(t, <-opened, "the open whose daemon died before answering")
	defer unix.Close(fd)
	if !bytes.Equal(readAllAt(t, fd, len(want)), want) {
		t.Fatal("wrong content")
	}
	if n := m.recorded(t); n != 1 {
		t.Fatalf("%d passthrough handles recorded after the resent OPEN, want 1", n)
	}
	if !strings.Contains(m.logs(), "passthrough: after a takeover") {
		t.Fatalf("no takeover with passthrough in the log:\n%s", m.logs())
	}
	unix.Close(fd)
	fd = -1
	waitFor(t, "the passthrough handle released", func() bool { return m.recorded(t) == 0 })
	m.waitClosed(t, "keep.dat")
	w, err := unix.Open(m.path("keep.dat"), unix.O_RDWR, 0)
	mustOK(t, err, "open for writing after the resent handle closed")
	unix.Close(w)
}

// refusingKernel is a kernel that refuses every backing: what a kernel
// whose probe passed could still answer (EMFILE, ENOMEM), which no test
// can make the real one do on demand. The refusal's bookkeeping is
// ptServer's own, tested against it.
// twoTiers is the configuration of two empty tiers, fast and slow, for a
// store the test opens itself.
func twoTiers(t *testing.T) []tiering.TierConfig {
	base := t.TempDir()
	var tiers []tiering.TierConfig
	for _, n := range []string{"fast", "slow"} {
		d := filepath.Join(base, n)
		mustOK(t, os.Mkdir(d, 0o755), "mkdir")
		tiers = append(tiers, tiering.TierConfig{Name: n, Type: "nvme", Path: d})
	}
	return tiers
}

type refusingKernel struct {
	kernelCalls
	asked int
}

func (k *refusingKernel) RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno) {
	k.asked++
	return 0, syscall.EMFILE
}

// A successor honours the passthrough handles its predecessor recorded
// even when its own probe of the tiers fails (here a kernel that refuses
// every backing): it gives no new handles anyway, and the kernel fails a
// read-only open of an inherited file that is not a passthrough one.
func TestPassthroughSuccessorWithoutProbe(t *testing.T) {
	tiers := twoTiers(t)
	// The predecessor: one passthrough handle recorded on "keep".
	st, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop()})
	mustOK(t, err, "open the tiers")
	w, a, err := st.Create(tiering.RelPath(""), "keep", unix.O_RDWR, 0o644, tiering.Owner{})
	mustOK(t, err, "create")
	w.Release()
	_, err = st.OpenPassthroughRegistry(false)
	mustOK(t, err, "the predecessor's registry")
	mustOK(t, st.RecordPassthrough(a.Ino, 77, 7, 5, true), "record a handle")
	mustOK(t, st.Close(), "close the predecessor's store")

	st2, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop(), TakingOver: true})
	mustOK(t, err, "the successor opens the tiers")
	defer st2.Close()
	root := NewRoot(st2, zerolog.Nop())
	k := &refusingKernel{}
	cb := &ptServer{pt: &passthrough{staysOn: func(string, uint64, string) bool { return true }, fresh: false}, fs: root.fs}
	cb.k = k
	pt := settlePassthrough(cb, fuse.CAP_PASSTHROUGH, root, true, false)
	if pt == nil {
		t.Fatal("a successor whose probe would fail does not honour its predecessor's passthrough handles")
	}
	if k.asked != 0 {
		t.Fatalf("the successor probed the tiers (%d registrations asked)", k.asked)
	}
	if id, ok := st2.PassthroughInherited(a.Ino); !ok || id != 5 {
		t.Fatalf("inherited: %d, %v; want the predecessor's backing id 5", id, ok)
	}
	if pt.flags&fuse.FOPEN_KEEP_CACHE != 0 {
		t.Fatalf("the successor's passthrough open flags %#x keep the cache, which the kernel refuses with passthrough", pt.flags)
	}
}

// A refused registration makes the handle that asked an ordinary one
// (no passthrough counted, so writers and moves are not refused because
// of it), answers the bridge with no backing and no error (an error turns
// go-fuse's passthrough off for every inode, those the kernel holds
// passthrough handles of too), and stops new passthrough handles.
func TestPassthroughRefusedRegistration(t *testing.T) {
	tiers := twoTiers(t)
	st, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop()})
	mustOK(t, err, "open the tiers")
	defer st.Close()
	w, _, err := st.Create(tiering.RelPath(""), "keep", unix.O_RDWR, 0o644, tiering.Owner{})
	mustOK(t, err, "create")
	w.Release()

	root := NewRoot(st, zerolog.Nop())
	pt := &passthrough{staysOn: func(string, uint64, string) bool { return true }, fresh: true}
	k := &refusingKernel{}
	cb := &ptServer{pt: pt, fs: root.fs}
	cb.k = k
	root.fs.pt = pt
	h, err := st.Open(tiering.RelPath("keep"), unix.O_RDONLY)
	mustOK(t, err, "open")
	a, err := st.Getattr(tiering.RelPath("keep"))
	mustOK(t, err, "getattr")
	node := &Node{fs: root.fs}
	fh, _, ok := pt.open(node, h, unix.O_RDONLY)
	if !ok || st.PassthroughHandles(a.Ino) != 1 {
		t.Fatalf("the decision before the registration: %v, %d handles", ok, st.PassthroughHandles(a.Ino))
	}
	fd, _ := fh.(gofs.FilePassthroughFder).PassthroughFd()
	id, errno := cb.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if id != 0 || errno != 0 || k.asked != 1 {
		t.Fatalf("a refused registration answered the bridge %d, %v (asked %d); want 0 and no error", id, errno, k.asked)
	}
	if st.PassthroughHandles(a.Ino) != 0 || !pt.off.Load() {
		t.Fatalf("after the refusal: %d passthrough handles, off %v; want 0 and off", st.PassthroughHandles(a.Ino), pt.off.Load())
	}
	w2, err := st.Open(tiering.RelPath("keep"), unix.O_RDWR)
	mustOK(t, err, "a writer beside the handle the kernel refused")
	w2.Release()
	h2, err := st.Open(tiering.RelPath("keep"), unix.O_RDONLY)
	mustOK(t, err, "open again")
	defer h2.Release()
	if _, _, ok := pt.open(node, h2, unix.O_RDONLY); ok {
		t.Fatal("a passthrough handle given after a refusal")
	}
	h.Release()
}
