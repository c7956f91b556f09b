package fs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A move changes no atime or mtime a program can see: not the file's (the
// copy reads without touching the source's atime), not its directory's
// (the entry leaves one copy and enters another), also when the move makes
// the directory's copy on the destination (issue 16, item 2; ctime is
// not kept yet).
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
	check := func(when string) {
		t.Helper()
		// Ask the daemon, not the kernel's attribute cache.
		mustOK(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0), "drop the dentry cache")
		for _, p := range []string{"d/sub/f", "d/g", "d/sub", "d"} {
			var st unix.Stat_t
			mustOK(t, unix.Lstat(m.path(p), &st), "stat")
			if st.Atim != old[0] || st.Mtim != old[1] {
				t.Errorf("%s: %s has atime %v mtime %v, want both %v", when, p, st.Atim, st.Mtim, old[1])
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
}
