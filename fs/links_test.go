package fs

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
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
		{"move:synced", false},
		{"link-move:journaled", false},
		{"link-move:linked", false},
		{"link-move:marked", true},
		{"link-move:swapped", true},
		{"link-move:unlinked", true},
	}
	for _, s := range steps {
		t.Run(s.step, func(t *testing.T) {
			m := mount(t, mountOpt{crashAt: s.step})
			data := randBytes(rand.New(rand.NewSource(int64(len(s.step)))), 2<<20+4321)
			names := []string{"p/a", "q/b", "p/c"}
			ino := linkedFile(t, m, data, names...)
			m.expectCrash(t, request{Op: "move", Path: "q/b", Tier: "slow"})

			m2 := m.restart(t)
			want := 0
			if s.committed {
				want = 1
			}
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
