package fs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// linkedFile makes a file with data under the first of names and links
// the others to it, making their directories; it returns the file's
// inode number in the mount.
func linkedFile(t *testing.T, m *testMount, data []byte, names ...string) uint64 {
	t.Helper()
	for _, n := range names {
		mustOK(t, os.MkdirAll(filepath.Dir(m.path(n)), 0o755), "mkdir")
	}
	f, err := os.OpenFile(m.path(names[0]), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	mustOK(t, err, "create "+names[0])
	_, err = f.Write(data)
	mustOK(t, err, "write")
	mustOK(t, f.Sync(), "fsync")
	mustOK(t, f.Close(), "close")
	for _, n := range names[1:] {
		mustOK(t, os.Link(m.path(names[0]), m.path(n)), "link "+n)
	}
	var st unix.Stat_t
	mustOK(t, unix.Stat(m.path(names[0]), &st), "stat")
	return st.Ino
}

// checkLinked: every name is on tier (and on no other), reads data, and
// is one file: inode ino in the mount, one backing inode on the tier, as
// many links as names.
func checkLinked(t *testing.T, m *testMount, tier int, ino uint64, data []byte, names ...string) {
	t.Helper()
	var backing uint64
	for i, n := range names {
		if got := m.tierOf(t, n); got != tier {
			t.Fatalf("%s on tier %d, want %d", n, got, tier)
		}
		got, err := os.ReadFile(m.path(n))
		mustOK(t, err, "read "+n)
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes differ from what was written (%d bytes read, %d written)", n, diffBytes(got, data), len(got), len(data))
		}
		var st unix.Stat_t
		mustOK(t, unix.Stat(m.path(n), &st), "stat "+n)
		if st.Ino != ino || st.Nlink != uint64(len(names)) {
			t.Fatalf("%s: inode %d with %d links, want inode %d with %d", n, st.Ino, st.Nlink, ino, len(names))
		}
		mustOK(t, unix.Lstat(filepath.Join(m.tiers[tier], n), &st), "stat the backing of "+n)
		if i == 0 {
			backing = st.Ino
		}
		if st.Ino != backing || st.Nlink != uint64(len(names)) {
			t.Fatalf("backing of %s: inode %d with %d links, want inode %d (as %s) with %d: the names are no longer one file", n, st.Ino, st.Nlink, backing, names[0], len(names))
		}
	}
}

// diffBytes counts the bytes where a and b differ (a missing byte counts).
func diffBytes(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// A file with several names moves with all of them at once: each name on
// the destination, in its own directory (made there when the destination
// had no copy of it), none left behind; one inode, the same number, the
// same content, the same link count; an open handle follows it; and its
// directories keep their times (issue 16, 9).
func TestMoveLinkedFile(t *testing.T) {
	m := mount(t, mountOpt{})
	r := rand.New(rand.NewSource(16_9))
	data := randBytes(r, 1<<20+777)
	names := []string{"d1/a", "d2/sub/b", "d1/c"}
	ino := linkedFile(t, m, data, names...)
	old := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 7}, {Sec: 1_000_000_000, Nsec: 7}}
	for _, d := range []string{"d1", "d2", "d2/sub"} {
		mustOK(t, unix.UtimesNano(m.path(d), old), "utimes "+d)
	}
	f, err := os.OpenFile(m.path("d1/c"), os.O_RDWR, 0)
	mustOK(t, err, "open")
	defer f.Close()

	mustOK(t, m.move(t, "d2/sub/b", "slow"), "move a file with three names")
	checkLinked(t, m, 1, ino, data, names...)

	// The handle opened before the move writes to the file that moved.
	tail := randBytes(r, 4096)
	_, err = f.WriteAt(tail, int64(len(data)))
	mustOK(t, err, "write through a handle opened before the move")
	mustOK(t, f.Sync(), "fsync")
	data = append(data, tail...)
	checkLinked(t, m, 1, ino, data, names...)

	mustOK(t, m.move(t, "d1/a", "fast"), "move it back")
	checkLinked(t, m, 0, ino, data, names...)

	mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0), "drop the dentry cache")
	for _, d := range []string{"d1", "d2", "d2/sub"} {
		var st unix.Stat_t
		mustOK(t, unix.Stat(m.path(d), &st), "stat "+d)
		if st.Mtim != old[1] {
			t.Errorf("%s: mtime %v after the moves, want %v", d, st.Mtim, old[1])
		}
	}
	checkClean(t, m)
	if left := journalLeft(m); len(left) != 0 {
		t.Fatalf("journal files left behind: %v", left)
	}
}

// The case: a file with two names on a full tier, written through
// a shared mapping. The kernel's write-back of the mapping hits ENOSPC;
// the file must spill (both names) and msync succeed, and every byte be
// in the backing, as the mount shows it once the kernel's cache is gone
// (it had 1,044,480 of 4,194,304; issue 16, 9).
func TestSpillLinkedFileMmap(t *testing.T) {
	fast := tmpfsTier(t, "4m")
	slowDir := filepath.Join(t.TempDir(), "slow")
	mustOK(t, os.Mkdir(slowDir, 0o700), "mkdir slow")
	m := mount(t, mountOpt{tierDirs: []string{fast.dir, slowDir}})
	const size = 4 << 20
	names := []string{"t-0/00000000000000000000.index", "t-0.bak/index"}
	ino := linkedFile(t, m, nil, names...)
	if tier := m.tierOf(t, names[0]); tier != 0 {
		t.Fatalf("new file on tier %d, want the fast tier", tier)
	}
	fd, err := unix.Open(m.path(names[0]), unix.O_RDWR, 0)
	mustOK(t, err, "open")
	mustOK(t, unix.Ftruncate(fd, size), "size the index (sparse)")
	fast.fill(t)

	mp, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	mustOK(t, err, "mmap")
	data := randBytes(rand.New(rand.NewSource(16_09)), size)
	copy(mp, data)
	err = unix.Msync(mp, unix.MS_SYNC)
	unix.Munmap(mp)
	unix.Close(fd)
	mustOK(t, err, "msync of a shared mapping of a file with two names on a full tier")

	// The backing holds every byte: the page cache may hide a loss.
	for _, n := range names {
		if tier := m.tierOf(t, n); tier != 1 {
			t.Fatalf("%s on tier %d after its tier filled, want the slow tier", n, tier)
		}
		got, err := os.ReadFile(filepath.Join(m.tiers[1], n))
		mustOK(t, err, "read the backing of "+n)
		if d := diffBytes(got, data); d != 0 {
			t.Fatalf("backing of %s: %d of %d bytes differ from what was written through the mapping", n, d, size)
		}
	}
	// Through a new mount (nothing cached): every byte, one file.
	m.stop(t)
	m2 := m.restart(t)
	checkLinked(t, m2, 1, ino, data, names...)
}

// TestMoveLinkedCrash kills the daemon at every step of a move of a file
// with three names (two in one directory, one in a directory the
// destination lacks), then mounts again: each name is there once, on one
// tier, the names are still one file with its inode number and content,
// and nothing is left in staging, the journal or a marker. Before the
// source is marked the file is on the source; from then on, on the
// destination.
func TestMoveLinkedCrash(t *testing.T) {
	steps := []struct {
		step      string
		committed bool
	}{
		{"link-move:found", false},
		{"move:synced", false},
		{"link-move:journaled", false},
		{"link-move:linked", false},
		{"link-move:durable", false},
		{"link-move:swapped", true},
		{"link-move:marked", true},
		{"link-move:unlinked", true},
	}
	for _, s := range steps {
		for _, writes := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/writes=%v", s.step, writes), func(t *testing.T) {
				m := mount(t, mountOpt{crashAt: s.step})
				r := rand.New(rand.NewSource(int64(len(s.step))))
				data := randBytes(r, 2<<20+4321)
				names := []string{"p/a", "q/b", "p/c"}
				ino := linkedFile(t, m, data, names...)
				// With writes: appends through one name, each fsynced, until
				// the daemon dies. Every fsynced byte must be there after,
				// and nothing but what was written.
				synced, tried := data, data
				done := make(chan struct{})
				if writes {
					fd, err := unix.Open(m.path("p/c"), unix.O_WRONLY|unix.O_APPEND, 0)
					mustOK(t, err, "open")
					go func() {
						defer close(done)
						defer unix.Close(fd)
						for {
							b := randBytes(r, 4096+r.Intn(8192))
							tried = append(synced[:len(synced):len(synced)], b...)
							if _, err := unix.Write(fd, b); err != nil || unix.Fsync(fd) != nil {
								return // the daemon died
							}
							synced = tried
						}
					}()
				} else {
					close(done)
				}
				m.expectCrash(t, request{Op: "move", Path: "q/b", Tier: "slow"})
				<-done

				m2 := m.restart(t)
				want := 0
				if s.committed {
					want = 1
				}
				got, err := os.ReadFile(m2.path("q/b"))
				mustOK(t, err, "read after recovery")
				if len(got) < len(synced) || len(got) > len(tried) || !bytes.Equal(got, tried[:len(got)]) {
					t.Fatalf("after a crash at %s: %d bytes, %d fsynced, %d written; or not what was written", s.step, len(got), len(synced), len(tried))
				}
				data = got
				checkLinked(t, m2, want, ino, data, names...)
				checkClean(t, m2)
				if left := journalLeft(m2); len(left) != 0 {
					t.Fatalf("journal files left after recovery: %v", left)
				}
				// And it moves fine now.
				to := []string{"slow", "fast"}[want]
				mustOK(t, m2.move(t, "p/c", to), "move after recovery")
				checkLinked(t, m2, 1-want, ino, data, names...)
			})
		}
	}
}

// Files with several names, written through one name by pwrite and
// through another by a shared mapping, while the fast tier is full (so
// the kernel's write-back and the writes spill) and moves take them
// between the other tiers: afterwards each name reads what was written,
// through the mount, in the backing, and after a remount (the issue saw
// 4 inodes, 11 names, read otherwise through the mount than on the tier).
func TestLinkedFilesUnderMovesOnFullTier(t *testing.T) {
	fast := tmpfsTier(t, "8m")
	base := t.TempDir()
	var dirs []string
	for _, n := range []string{"slow", "cold"} {
		d := filepath.Join(base, n)
		mustOK(t, os.Mkdir(d, 0o700), "mkdir "+n)
		dirs = append(dirs, d)
	}
	m := mount(t, mountOpt{tierDirs: []string{fast.dir, dirs[0], dirs[1]}})
	const nfiles, half = 4, 1 << 20
	type file struct {
		names []string
		fd    int
		mp    []byte
		model []byte
		ino   uint64
	}
	files := make([]*file, nfiles)
	for i := range files {
		f := &file{names: []string{
			filepath.Join(fmt.Sprintf("t-%d", i), "00000000000000000000.index"),
			filepath.Join(fmt.Sprintf("t-%d", i), "a.index"),
			filepath.Join("backup", fmt.Sprintf("t-%d.index", i)),
		}, model: make([]byte, 2*half)}
		f.ino = linkedFile(t, m, nil, f.names...)
		var err error
		f.fd, err = unix.Open(m.path(f.names[0]), unix.O_RDWR, 0)
		mustOK(t, err, "open")
		t.Cleanup(func() {
			if f.mp != nil {
				unix.Munmap(f.mp)
			}
			if f.fd >= 0 {
				unix.Close(f.fd)
			}
		})
		mustOK(t, unix.Ftruncate(f.fd, 2*half), "size")
		mfd, err := unix.Open(m.path(f.names[2]), unix.O_RDWR, 0)
		mustOK(t, err, "open for the mapping")
		f.mp, err = unix.Mmap(mfd, 0, 2*half, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		unix.Close(mfd)
		mustOK(t, err, "mmap")
		files[i] = f
	}
	fast.fill(t)

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2*nfiles+1)
	for i, f := range files {
		wg.Add(2)
		go func() { // pwrite through the first name into [0, half)
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(i)))
			for k := 0; !stop.Load() || k < 100; k++ {
				off := r.Intn(half - 4096)
				b := randBytes(r, 1+r.Intn(4096))
				if _, err := unix.Pwrite(f.fd, b, int64(off)); err != nil {
					errs <- fmt.Errorf("pwrite %s: %w", f.names[0], err)
					return
				}
				copy(f.model[off:], b)
			}
		}()
		go func() { // the mapping of the third name, into [half, 2*half)
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(100 + i)))
			for k := 0; !stop.Load() || k < 100; k++ {
				off := half + r.Intn(half-4096)
				b := randBytes(r, 1+r.Intn(4096))
				copy(f.mp[off:], b)
				copy(f.model[off:], b)
				if k%20 == 0 {
					if err := unix.Msync(f.mp, unix.MS_SYNC); err != nil {
						errs <- fmt.Errorf("msync %s: %w", f.names[2], err)
						return
					}
				}
			}
		}()
	}
	for k := 0; k < 6; k++ {
		for i, f := range files {
			to := []string{"slow", "cold"}[(k+i)%2]
			if err := m.move(t, f.names[k%3], to); err != nil && !errors.Is(err, unix.EBUSY) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("move %s to %s: %v", f.names[k%3], to, err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, f := range files {
		mustOK(t, unix.Msync(f.mp, unix.MS_SYNC), "msync")
		mustOK(t, unix.Fsync(f.fd), "fsync")
		tier := m.tierOf(t, f.names[0])
		if tier == 0 {
			t.Fatalf("%s on the full fast tier", f.names[0])
		}
		checkLinked(t, m, tier, f.ino, f.model, f.names...)
		bk, err := os.ReadFile(filepath.Join(m.tiers[tier], f.names[1]))
		mustOK(t, err, "read the backing")
		if d := diffBytes(bk, f.model); d != 0 {
			t.Fatalf("backing of %s: %d bytes differ from what was written", f.names[1], d)
		}
	}
	for _, f := range files {
		unix.Munmap(f.mp)
		unix.Close(f.fd)
		f.mp, f.fd = nil, -1
	}
	m.stop(t)
	m2 := m.restart(t)
	for _, f := range files {
		checkLinked(t, m2, m2.tierOf(t, f.names[0]), f.ino, f.model, f.names...)
	}
}

// A file with two names, open by the first: the first is unlinked, the
// last descriptor closed, and a hard link made to the name left, which
// must work (fs.TestStress once had "link d/b2 a7" answer ENOENT right
// after "unlink a4" and the last close). The node the kernel links is the
// one opened by the name that went; the file moves before or after the
// unlink; and the kernel drops its dentries (as drop_caches elsewhere on
// the machine does) between the names' changes, so that it looks the
// directory up again, gets a new node for it, and the FUSE tree keeps
// names under the old one that the file no longer has.
func TestLinkFromTheNameLeftAfterUnlink(t *testing.T) {
	m := mount(t, mountOpt{ntiers: 3})
	mustOK(t, os.Mkdir(m.path("d"), 0o755), "mkdir d")
	r := rand.New(rand.NewSource(13))
	i := 0
	for _, move := range []string{"none", "before-unlink", "after-unlink", "after-close"} {
		for _, drop := range []bool{false, true} {
			for _, closeFirst := range []bool{false, true} {
				i++
				what := fmt.Sprintf("move %s, drop dentries %v, close before the unlink %v", move, drop, closeFirst)
				a, b, old, c := fmt.Sprintf("a%d", i), fmt.Sprintf("d/b%d", i), fmt.Sprintf("d/old%d", i), fmt.Sprintf("c%d", i)
				data := randBytes(r, 100_000+i)
				fd, err := unix.Open(m.path(a), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
				mustOK(t, err, what+": create")
				_, err = unix.Pwrite(fd, data, 0)
				mustOK(t, err, what+": write")
				mustOK(t, unix.Link(m.path(a), m.path(old)), what+": link a old")
				dropDentries := func() {
					if drop {
						mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0), "drop the dentry cache")
					}
				}
				moveTo := func(when, rel string) {
					if move == when {
						mustOK(t, m.move(t, rel, tierNames[1+i%2]), what+": move")
					}
				}
				dropDentries()
				mustOK(t, unix.Link(m.path(a), m.path(b)), what+": link a b")
				mustOK(t, unix.Unlink(m.path(old)), what+": unlink old")
				moveTo("before-unlink", a)
				if closeFirst {
					mustOK(t, unix.Close(fd), what+": close")
				}
				mustOK(t, unix.Unlink(m.path(a)), what+": unlink a")
				moveTo("after-unlink", b)
				var st unix.Stat_t
				if !closeFirst {
					mustOK(t, unix.Fstat(fd, &st), what+": fstat")
					if st.Nlink != 1 {
						t.Errorf("%s: the descriptor shows %d links after the unlink, want 1", what, st.Nlink)
					}
					mustOK(t, unix.Close(fd), what+": close")
				}
				moveTo("after-close", b)
				if err := unix.Link(m.path(b), m.path(c)); err != nil {
					t.Fatalf("%s: link b c: %v", what, err)
				}
				for _, n := range []string{b, c} {
					mustOK(t, unix.Stat(m.path(n), &st), what+": stat "+n)
					if st.Nlink != 2 {
						t.Errorf("%s: %s has %d links, want 2", what, n, st.Nlink)
					}
					got, err := os.ReadFile(m.path(n))
					mustOK(t, err, what+": read "+n)
					if !bytes.Equal(got, data) {
						t.Errorf("%s: %s reads %d bytes that differ from the %d written", what, n, diffBytes(got, data), len(data))
					}
				}
				checkLinked(t, m, m.tierOf(t, b), st.Ino, data, b, c)
			}
		}
	}
}

// Linux's FUSE client lowers a file's cached link count itself once
// tierfs answered the unlink of one of its names, after the reply; an
// attribute reply for the file that another process's request brought
// meanwhile (here: a listing of d, whose entries carry attributes, and
// stats), and that counts the unlink already, can be applied in between,
// and the count reaches 0. link(2) of the name left then fails with ENOENT
// in the kernel, without asking tierfs (TestStress once failed so: "link
// d/b2 a7" after "unlink a4", the mover listing the workers' files). tierfs
// is not wrong there: a stat of the name left answers the file with one
// link (which the kernel needs: the unlink left its attributes stale), and
// a link made again works; the name left is never lost.
func TestLinkRacingALookup(t *testing.T) {
	m := mount(t, mountOpt{})
	mustOK(t, os.Mkdir(m.path("d"), 0o755), "mkdir d")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // another thread looking at the names
		defer wg.Done()
		runtime.LockOSThread()
		var st unix.Stat_t
		for {
			select {
			case <-done:
				return
			default:
			}
			os.ReadDir(m.path("d"))
			unix.Lstat(m.path("d/b"), &st)
			unix.Lstat(m.path("a"), &st)
		}
	}()
	defer func() { close(done); wg.Wait() }()
	races := 0
	const iterations = 500
	for i := range iterations {
		fd, err := unix.Open(m.path("a"), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
		mustOK(t, err, "create a")
		var st unix.Stat_t
		mustOK(t, unix.Fstat(fd, &st), "fstat")
		ino := st.Ino
		_, err = unix.Pwrite(fd, []byte("tierfs"), 0)
		mustOK(t, err, "write")
		mustOK(t, unix.Link(m.path("a"), m.path("d/b")), "link a d/b")
		mustOK(t, unix.Unlink(m.path("a")), "unlink a")
		mustOK(t, unix.Close(fd), "close")
		err = unix.Link(m.path("d/b"), m.path("c"))
		if errors.Is(err, unix.ENOENT) {
			races++
			mustOK(t, unix.Lstat(m.path("d/b"), &st), "stat d/b after link's ENOENT")
			if st.Ino != ino || st.Nlink != 1 {
				t.Fatalf("iteration %d: link d/b c: ENOENT, and stat d/b says inode %d with %d links; want inode %d with 1", i, st.Ino, st.Nlink, ino)
			}
			err = unix.Link(m.path("d/b"), m.path("c"))
		}
		if err != nil {
			t.Fatalf("iteration %d: link d/b c: %v", i, err)
		}
		for _, n := range []string{"d/b", "c"} {
			mustOK(t, unix.Stat(m.path(n), &st), "stat "+n)
			if st.Ino != ino || st.Nlink != 2 {
				t.Fatalf("iteration %d: %s is inode %d with %d links; want inode %d with 2", i, n, st.Ino, st.Nlink, ino)
			}
		}
		if b, err := os.ReadFile(m.path("c")); err != nil || string(b) != "tierfs" {
			t.Fatalf("iteration %d: c reads %q, %v", i, b, err)
		}
		mustOK(t, unix.Unlink(m.path("d/b")), "unlink d/b")
		mustOK(t, unix.Unlink(m.path("c")), "unlink c")
	}
	t.Logf("%d of %d links to the name left got the kernel's ENOENT first", races, iterations)
}
