package fs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A move changes no time a program can see: not the file's atime (the
// copy reads without touching the source's), mtime or ctime (the copy is
// a new inode: tierfs keeps the ctime to show), not its directory's (the
// entry leaves one copy and enters another), also when the move makes the
// directory's copy on the destination, and not across a remount; a change
// after the move shows in the ctime again (issue 16, item 2).
func TestMoveKeepsTimes(t *testing.T) {
	m := mount(t, mountOpt{})
	mustOK(t, os.MkdirAll(m.path("d/sub"), 0o755), "mkdir")
	mustOK(t, os.WriteFile(m.path("d/sub/f"), make([]byte, 1<<20), 0o644), "write")
	mustOK(t, os.WriteFile(m.path("d/g"), []byte("g"), 0o644), "write")
	// Times from long ago, atime equal to mtime: a read would move the
	// atime forward (relatime), and any change to a directory its mtime.
	old := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 7}, {Sec: 1_000_000_000, Nsec: 7}}
	for _, p := range []string{"d/sub/f", "d/g", "d/sub", "d"} {
		mustOK(t, unix.UtimesNano(m.path(p), old), "utimes "+p)
	}
	names := []string{"d/sub/f", "d/g", "d/sub", "d"}
	stat := func(p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		mustOK(t, unix.Lstat(m.path(p), &st), "stat")
		return st
	}
	// Ask the daemon, not the kernel's attribute cache.
	dropCaches := func() {
		mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0), "drop the dentry cache")
	}
	ctimes := map[string]unix.Timespec{}
	for _, p := range names {
		ctimes[p] = stat(p).Ctim
	}
	check := func(when string) {
		t.Helper()
		dropCaches()
		for _, p := range names {
			st := stat(p)
			if st.Atim != old[0] || st.Mtim != old[1] {
				t.Errorf("%s: %s has atime %v mtime %v, want both %v", when, p, st.Atim, st.Mtim, old[1])
			}
			if st.Ctim != ctimes[p] {
				t.Errorf("%s: %s has ctime %v, want %v from before the moves", when, p, st.Ctim, ctimes[p])
			}
		}
	}
	mustOK(t, m.move(t, "d/sub/f", "slow"), "move down")
	check("after a move down (the directory's copy made on slow)")
	mustOK(t, m.move(t, "d/g", "slow"), "move down")
	mustOK(t, m.move(t, "d/sub/f", "fast"), "move up")
	check("after moves both ways")
	mustOK(t, m.move(t, "d/g", "fast"), "move up")
	check("after moving everything back")
	mustOK(t, m.move(t, "d/sub/f", "slow"), "move down again")
	m.stop(t)
	m = m.restart(t)
	check("after a remount")
	mustOK(t, os.Chmod(m.path("d/sub/f"), 0o600), "chmod")
	dropCaches()
	if st := stat("d/sub/f"); st.Ctim == ctimes["d/sub/f"] {
		t.Errorf("a chmod after the move left the ctime at %v", st.Ctim)
	}
}

// The same while a background loop moves the file back and forth: every
// stat meanwhile shows the times from before (issue 16: with moves
// running).
func TestTimesHoldWhileMoving(t *testing.T) {
	m := mount(t, mountOpt{})
	mustOK(t, os.MkdirAll(m.path("d"), 0o755), "mkdir")
	mustOK(t, os.WriteFile(m.path("d/f"), make([]byte, 256<<10), 0o644), "write")
	old := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 7}, {Sec: 1_000_000_000, Nsec: 7}}
	for _, p := range []string{"d/f", "d"} {
		mustOK(t, unix.UtimesNano(m.path(p), old), "utimes "+p)
	}
	want := map[string]unix.Timespec{}
	for _, p := range []string{"d/f", "d"} {
		var st unix.Stat_t
		mustOK(t, unix.Lstat(m.path(p), &st), "stat")
		want[p] = st.Ctim
	}
	mv := startMover(t, m, "d/f")
	for i := 0; i < 40; i++ {
		mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0), "drop the dentry cache")
		for _, p := range []string{"d/f", "d"} {
			var st unix.Stat_t
			mustOK(t, unix.Lstat(m.path(p), &st), "stat")
			if st.Atim != old[0] || st.Mtim != old[1] || st.Ctim != want[p] {
				t.Fatalf("round %d: %s shows atime %v mtime %v ctime %v; want %v, %v, %v", i, p, st.Atim, st.Mtim, st.Ctim, old[0], old[1], want[p])
			}
		}
	}
	mv.check(t)
}
