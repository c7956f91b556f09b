package fs

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/pmem"
	"github.com/tierfs/tierfs/tiering"
)

// TestMoveUnderIO moves a file back and forth between tiers while one
// goroutine writes it through an fd, another through a shared mapping, and
// a third reads it; every byte must come out as written.
func TestMoveUnderIO(t *testing.T) {
	t.Run("nvme", func(t *testing.T) { testMoveUnderIO(t, mountOpt{ntiers: 3}, "seg.log") })
	// The file starts as a pmem pool segment (mmap-backed, 1 MiB slot
	// grown to 8 MiB), goes down, comes back as a plain file.
	t.Run("pmem", func(t *testing.T) { testMoveUnderIO(t, mountOpt{ntiers: 3, pmem: testPMem()}, testSegment) })
}

// testSegment is a pool-shaped name (a Kafka segment).
const testSegment = "t-0/00000000000000000000.log"

// testPMem is a pool of 1 MiB slots, half the tier.
func testPMem() *pmem.Config {
	return &pmem.Config{PoolRatio: 0.5, SegmentSize: 1 << 20, PoolFiles: pmem.DefaultPoolFiles}
}

func testMoveUnderIO(t *testing.T, o mountOpt, rel string) {
	m := mount(t, o)
	const half = 4 << 20
	mustOK(t, os.MkdirAll(filepath.Dir(m.path(rel)), 0o755), "mkdir")
	p := m.path(rel)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT, 0o644)
	mustOK(t, err, "create")
	defer unix.Close(fd)
	mustOK(t, unix.Ftruncate(fd, 2*half), "size")
	mp, err := unix.Mmap(fd, 0, 2*half, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	mustOK(t, err, "mmap")
	defer unix.Munmap(mp)
	var ino0 unix.Stat_t
	mustOK(t, unix.Fstat(fd, &ino0), "fstat")

	// Each writer owns one half and keeps its model.
	modelFd := make([]byte, half)
	modelMap := make([]byte, half)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Add(3)
	go func() { // pwrite into [0, half)
		defer wg.Done()
		r := rand.New(rand.NewSource(3))
		for i := 0; !stop.Load() || i < 200; i++ {
			off := r.Intn(half - 4096)
			b := randBytes(r, 1+r.Intn(4096))
			if _, err := unix.Pwrite(fd, b, int64(off)); err != nil {
				errs <- err
				return
			}
			copy(modelFd[off:], b)
		}
	}()
	go func() { // mapping writes into [half, 2*half)
		defer wg.Done()
		r := rand.New(rand.NewSource(4))
		for i := 0; !stop.Load() || i < 200; i++ {
			off := r.Intn(half - 4096)
			b := randBytes(r, 1+r.Intn(4096))
			copy(mp[half+off:], b)
			copy(modelMap[off:], b)
			if i%50 == 0 {
				if err := unix.Msync(mp, unix.MS_ASYNC); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	go func() { // a reader that must never fail
		defer wg.Done()
		buf := make([]byte, 64<<10)
		rfd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			errs <- err
			return
		}
		defer unix.Close(rfd)
		for !stop.Load() {
			if _, err := unix.Pread(rfd, buf, int64(rand.Intn(2*half-len(buf)))); err != nil {
				errs <- err
				return
			}
		}
	}()
	tiers := []string{"slow", "cold", "fast", "cold", "slow", "fast"}
	for _, to := range tiers {
		if err := m.move(t, rel, to); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("move to %s: %v", to, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("I/O during moves: %v", err)
	}
	mustOK(t, unix.Msync(mp, unix.MS_SYNC), "msync")
	mustOK(t, unix.Fsync(fd), "fsync")
	want := append(append([]byte(nil), modelFd...), modelMap...)
	got := make([]byte, 2*half)
	n, err := unix.Pread(fd, got, 0)
	mustOK(t, err, "pread")
	if n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("contents through the fd differ from the model (n=%d)", n)
	}
	if !bytes.Equal(mp, want) {
		t.Fatalf("contents through the mapping differ from the model")
	}
	// The backing on its final tier is byte-for-byte the model.
	if got := m.tierOf(t, rel); got != 0 {
		t.Fatalf("on tier %d after the last move to fast", got)
	}
	bk, err := os.ReadFile(filepath.Join(m.tiers[0], rel))
	mustOK(t, err, "read backing")
	if !bytes.Equal(bk, want) {
		t.Fatalf("backing differs from the model")
	}
	var ino1 unix.Stat_t
	mustOK(t, unix.Stat(p, &ino1), "stat")
	if ino1.Ino != ino0.Ino {
		t.Fatalf("inode number changed across moves: %d -> %d", ino0.Ino, ino1.Ino)
	}
	if v := xattr(t, p, tiering.XattrTier); v != "fast" {
		t.Fatalf("user.tierfs.tier = %q", v)
	}
	st := m.status(t)
	if st.Moves.Moved != int64(len(tiers)) || st.Moves.Failed != 0 {
		t.Fatalf("move stats %+v", st.Moves)
	}
	for i, d := range m.roots {
		ents, _ := os.ReadDir(filepath.Join(d, ".tierfs", "staging"))
		if len(ents) != 0 {
			t.Fatalf("staging on tier %d not empty: %v", i, ents)
		}
	}
}

func xattr(t testing.TB, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	mustOK(t, err, "getxattr "+name)
	return string(buf[:n])
}

// TestSpillOnFull fills a small fast tier: the file moves to the next tier
// and the writer never sees ENOSPC until every tier is full.
func TestSpillOnFull(t *testing.T) {
	m := mount(t, mountOpt{capacities: []units.ByteSize{4 << 20, 8 << 20}})
	r := rand.New(rand.NewSource(5))
	// Placement: fast has room.
	small := randBytes(r, 1000)
	mustOK(t, os.WriteFile(m.path("small"), small, 0o644), "write small")
	if m.tierOf(t, "small") != 0 {
		t.Fatalf("new file not on the fast tier")
	}
	// A 6 MiB write stream overflows fast (4 MiB) and lands on slow.
	big := randBytes(r, 6<<20)
	f, err := os.Create(m.path("big"))
	mustOK(t, err, "create big")
	for off := 0; off < len(big); off += 128 << 10 {
		if _, err := f.Write(big[off : off+128<<10]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	mustOK(t, f.Sync(), "fsync big")
	if m.tierOf(t, "big") != 1 {
		t.Fatalf("big file did not spill to the slow tier")
	}
	mustOK(t, f.Close(), "close")
	if b, _ := os.ReadFile(m.path("big")); !bytes.Equal(b, big) {
		t.Fatalf("spilled file differs")
	}
	// Now fill everything: slow has ~2 MiB left, fast ~4 MiB.
	f2, err := os.Create(m.path("huge"))
	mustOK(t, err, "create huge")
	defer f2.Close()
	var werr error
	written := 0
	chunk := randBytes(r, 256<<10)
	for i := 0; i < 64; i++ {
		n, err := f2.Write(chunk)
		written += n
		if err != nil {
			werr = err
			break
		}
	}
	if werr == nil && m.cfg.Writeback {
		// The kernel's write-back cache took the writes; the error
		// comes when they reach the daemon.
		werr = f2.Sync()
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("filling every tier: got %v after %d bytes, want ENOSPC", werr, written)
	}
	if written < 1<<20 {
		t.Fatalf("only %d bytes fitted before ENOSPC", written)
	}
	// Nothing already written was lost.
	if b, _ := os.ReadFile(m.path("big")); !bytes.Equal(b, big) {
		t.Fatalf("big file damaged by the full tiers")
	}
	if b, _ := os.ReadFile(m.path("small")); !bytes.Equal(b, small) {
		t.Fatalf("small file damaged by the full tiers")
	}
}

// TestPlacementSkipsFullTier: a new file goes to the first tier with room.
func TestPlacementSkipsFullTier(t *testing.T) {
	m := mount(t, mountOpt{capacities: []units.ByteSize{2 << 20, 0}})
	f, err := os.Create(m.path("a"))
	mustOK(t, err, "create a")
	_, err = f.Write(make([]byte, 3<<20/2))
	mustOK(t, err, "write a")
	f.Close()
	mustOK(t, os.WriteFile(m.path("b"), []byte("x"), 0o644), "create b")
	if m.tierOf(t, "a") != 0 || m.tierOf(t, "b") != 1 {
		t.Fatalf("placement: a on %d, b on %d", m.tierOf(t, "a"), m.tierOf(t, "b"))
	}
	var sfs unix.Statfs_t
	mustOK(t, unix.Statfs(m.mnt, &sfs), "statfs")
	var slow unix.Statfs_t
	mustOK(t, unix.Statfs(m.tiers[1], &slow), "statfs slow")
	total := uint64(sfs.Blocks) * uint64(sfs.Bsize)
	// Both tiers are directories of one filesystem: its size counts once,
	// the fast tier's 2 MiB being part of it.
	want := slow.Blocks * uint64(slow.Bsize)
	if total < want-8192 || total > want+8192 {
		t.Fatalf("statfs total %d, want the tiers' one filesystem's %d", total, want)
	}
}

// TestSpillPreallocated: a file grown sparse with ftruncate and then
// filled (log.preallocate=true, mmapped indexes) spills when its writes
// would take the tier over its capacity.
func TestSpillPreallocated(t *testing.T) {
	m := mount(t, mountOpt{capacities: []units.ByteSize{4 << 20, 0}})
	f, err := os.Create(m.path("seg.log"))
	mustOK(t, err, "create")
	defer f.Close()
	mustOK(t, f.Truncate(16<<20), "preallocate sparse")
	chunk := randBytes(rand.New(rand.NewSource(6)), 256<<10)
	for off := int64(0); off < 12<<20; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	mustOK(t, f.Sync(), "fsync")
	if m.tierOf(t, "seg.log") != 1 {
		t.Fatalf("preallocated file filled past the fast tier's capacity did not spill")
	}
	st := m.status(t)
	if st.Tiers[0].UsedBytes > 4<<20 {
		t.Fatalf("fast tier holds %d bytes, over its 4 MiB capacity", st.Tiers[0].UsedBytes)
	}
}

// An open file whose name changed spills like any other: a write that
// fills its tier moves it on, and so does the writeback of a mapping.
// Found by TestStress: the daemon moves an open file under the name it
// had when it was created, last opened, or last moved by name; after a
// rename, or an unlink of that name while another stays, the move finds
// no such file there, the write gets ENOSPC although the next tier has
// room, and what a mapping wrote is lost (msync says ENOSPC, the page
// cache shows the bytes until it is dropped, the backing lacks them).
func TestSpillAfterRename(t *testing.T) {
	for _, how := range []string{"created", "moved", "other-name-unlinked"} {
		t.Run(how, func(t *testing.T) {
			m := mount(t, mountOpt{capacities: []units.ByteSize{1 << 20, 0}})
			var fd int
			var err error
			switch how {
			case "created": // the daemon knows it by its name at create
				fd, err = unix.Open(m.path("a"), unix.O_RDWR|unix.O_CREAT, 0o644)
				mustOK(t, err, "create")
				mustOK(t, os.Rename(m.path("a"), m.path("b")), "rename")
			case "moved": // by the name it was moved by
				mustOK(t, os.WriteFile(m.path("a"), []byte("x"), 0o644), "write")
				fd, err = unix.Open(m.path("a"), unix.O_RDWR, 0)
				mustOK(t, err, "open")
				mustOK(t, m.move(t, "a", "slow"), "move")
				mustOK(t, m.move(t, "a", "fast"), "move back")
				mustOK(t, os.Rename(m.path("a"), m.path("b")), "rename")
			case "other-name-unlinked": // by a name since unlinked, another left
				mustOK(t, os.WriteFile(m.path("a"), []byte("x"), 0o644), "write")
				mustOK(t, os.Link(m.path("a"), m.path("b")), "link")
				fd, err = unix.Open(m.path("b"), unix.O_RDWR, 0)
				mustOK(t, err, "open")
				mustOK(t, m.move(t, "a", "slow"), "move of a file with two names")
				mustOK(t, m.move(t, "a", "fast"), "move back")
				mustOK(t, os.Remove(m.path("a")), "unlink")
			}
			defer unix.Close(fd)
			data := randBytes(rand.New(rand.NewSource(7)), 2<<20)
			if n, err := unix.Pwrite(fd, data, 0); n != len(data) || err != nil {
				t.Errorf("2 MiB write over a 1 MiB tier: %d written, %v; want all, the file moved on", n, err)
			}
			mustOK(t, unix.Ftruncate(fd, 4<<20), "grow")
			mp, err := unix.Mmap(fd, 0, 4<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			mustOK(t, err, "mmap")
			copy(mp[2<<20:], data)
			if err := unix.Msync(mp, unix.MS_SYNC); err != nil {
				t.Errorf("msync of a mapping write: %v", err)
			}
			mustOK(t, unix.Munmap(mp), "munmap")
			unix.Close(fd)
			m.stop(t)
			m = m.restart(t)
			got, err := os.ReadFile(m.path("b"))
			mustOK(t, err, "read back")
			if !bytes.Equal(got[2<<20:], data) {
				t.Errorf("after a remount the bytes written through the mapping are not there")
			}
		})
	}
}
