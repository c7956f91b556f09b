package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
)

// mover moves files back and forth between the first two tiers in the
// background while a test runs its checks (issue 16: semantics must hold
// while files move).
type mover struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	moves int
	err   error
}

// startMover moves each of rels to the other tier, over and over, until
// the returned mover is stopped. A file that is gone, renamed or busy
// meanwhile is skipped: the checks change the namespace under it on
// purpose.
func startMover(t *testing.T, m *testMount, rels ...string) *mover {
	t.Helper()
	mv := &mover{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(mv.done)
		for i := 0; ; i++ {
			for _, rel := range rels {
				select {
				case <-mv.stop:
					return
				default:
				}
				to := []string{"slow", "fast"}[i%2]
				err := m.move(t, rel, to)
				switch {
				case err == nil:
					mv.mu.Lock()
					mv.moves++
					mv.mu.Unlock()
				case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EBUSY),
					errors.Is(err, syscall.ESTALE), errors.Is(err, syscall.EINVAL):
				default:
					mv.mu.Lock()
					if mv.err == nil {
						mv.err = err
					}
					mv.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { mv.halt() })
	return mv
}

// halt stops the loop and returns how many moves it made.
func (mv *mover) halt() int {
	select {
	case <-mv.stop:
	default:
		close(mv.stop)
	}
	<-mv.done
	mv.mu.Lock()
	defer mv.mu.Unlock()
	return mv.moves
}

// check stops the loop and fails the test if a move failed for a reason
// the checks do not explain, or if no move happened at all.
func (mv *mover) check(t *testing.T) {
	t.Helper()
	n := mv.halt()
	mv.mu.Lock()
	defer mv.mu.Unlock()
	if mv.err != nil {
		t.Fatalf("background move: %v", mv.err)
	}
	if n == 0 {
		t.Fatalf("the background loop moved nothing")
	}
}

// TestRenameOverNonRegular: a regular file on one tier renamed over a
// fifo, device node, socket or symlink on another replaces it, as on any
// local filesystem (it failed with EPERM).
func TestRenameOverNonRegular(t *testing.T) {
	m := mount(t, mountOpt{})
	mustOK(t, os.Mkdir(m.path("busy"), 0o755), "mkdir")
	var bg []string
	for _, n := range []string{"a", "b", "c"} {
		rel := "busy/" + n
		mustOK(t, os.WriteFile(m.path(rel), []byte(n), 0o644), "write "+rel)
		bg = append(bg, rel)
	}
	mv := startMover(t, m, bg...)
	kinds := []struct {
		name string
		make func(p string) error
	}{
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"char", func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))) }},
		// A block device no driver answers: never opened, only replaced.
		{"block", func(p string) error { return unix.Mknod(p, unix.S_IFBLK|0o644, int(unix.Mkdev(259, 4095))) }},
		{"socket", func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o644, 0) }},
		{"symlink", func(p string) error { return os.Symlink("nowhere", p) }},
	}
	for _, k := range kinds {
		for _, srcTier := range []string{"slow", "fast"} {
			src, dst := "src-"+k.name+"-"+srcTier, "dst-"+k.name+"-"+srcTier
			data := []byte("data for " + dst)
			mustOK(t, os.WriteFile(m.path(src), data, 0o644), "write "+src)
			mustOK(t, m.move(t, src, srcTier), "move "+src)
			mustOK(t, k.make(m.path(dst)), "make "+dst)
			// Made through the mount: on the fast tier.
			if got := m.tierOf(t, dst); got != 0 {
				t.Fatalf("%s made on tier %d", dst, got)
			}
			var before unix.Stat_t
			mustOK(t, unix.Stat(m.path(src), &before), "stat "+src)
			if err := unix.Renameat2(unix.AT_FDCWD, m.path(src), unix.AT_FDCWD, m.path(dst), 0); err != nil {
				t.Fatalf("rename a regular file on %s over a %s on fast: %v", srcTier, k.name, err)
			}
			var st unix.Stat_t
			mustOK(t, unix.Lstat(m.path(dst), &st), "lstat "+dst)
			if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != before.Ino {
				t.Fatalf("%s after the rename: mode %o ino %d, want the renamed file (ino %d)", dst, st.Mode, st.Ino, before.Ino)
			}
			if b, err := os.ReadFile(m.path(dst)); err != nil || string(b) != string(data) {
				t.Fatalf("%s reads %q, %v", dst, b, err)
			}
			if _, err := os.Lstat(m.path(src)); !os.IsNotExist(err) {
				t.Fatalf("%s still there after the rename: %v", src, err)
			}
			// Exactly one copy of the name, and none of the source's.
			if got, want := m.tierOf(t, dst), map[string]int{"fast": 0, "slow": 1}[srcTier]; got != want {
				t.Fatalf("%s on tier %d, want %d", dst, got, want)
			}
			for _, d := range m.tiers {
				if _, err := os.Lstat(filepath.Join(d, src)); !os.IsNotExist(err) {
					t.Fatalf("%s left on %s", src, d)
				}
			}
		}
	}
	mv.check(t)
	checkClean(t, m)
	for i, r := range m.roots {
		if _, err := os.Stat(filepath.Join(r, ".tierfs", "journal", "rename")); !os.IsNotExist(err) {
			t.Errorf("rename journal left on tier %d: %v", i, err)
		}
	}
}

// dirTimesOp is one namespace change (or none) in directories whose
// entries live on several tiers, made the same way in a plain directory.
type dirTimesOp struct {
	name string
	// files to make (with contents), and which of them the mount puts on
	// the slow tier before the change; dirs are made first.
	dirs  []string
	files []string
	slow  []string
	do    func(root string) error
	// watch are the directories whose times are compared.
	watch []string
}

// TestDirTimesOnEveryTier: a directory's mtime and ctime change when an
// entry changes on any tier's copy of it, as a local directory's do
// (they stayed as they were when the entry lived on a tier other than
// the one whose copy the mount shows). Each change is made in a plain
// directory too, and the mount must agree with it on which directories
// changed, with ctime equal to mtime after a change as on ext4 and tmpfs.
func TestDirTimesOnEveryTier(t *testing.T) {
	m := mount(t, mountOpt{})
	plain := t.TempDir()
	mustOK(t, os.Mkdir(m.path("x"), 0o755), "mkdir x")
	for _, n := range []string{"x/a", "x/b"} {
		mustOK(t, os.WriteFile(m.path(n), []byte(n), 0o644), "write "+n)
	}
	mv := startMover(t, m, "x/a", "x/b")
	ops := []dirTimesOp{
		{name: "unlink", dirs: []string{"d"}, files: []string{"d/f", "d/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Remove(filepath.Join(r, "d/f")) }, watch: []string{"d"}},
		{name: "rename within", dirs: []string{"d"}, files: []string{"d/f", "d/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Rename(filepath.Join(r, "d/f"), filepath.Join(r, "d/g")) }, watch: []string{"d"}},
		{name: "rename across", dirs: []string{"d", "e"}, files: []string{"d/f", "d/keep", "e/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Rename(filepath.Join(r, "d/f"), filepath.Join(r, "e/f")) }, watch: []string{"d", "e"}},
		{name: "rename over fast", dirs: []string{"d"}, files: []string{"d/f", "d/g"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Rename(filepath.Join(r, "d/f"), filepath.Join(r, "d/g")) }, watch: []string{"d"}},
		{name: "rename over slow", dirs: []string{"d"}, files: []string{"d/f", "d/g"}, slow: []string{"d/g"},
			do: func(r string) error { return os.Rename(filepath.Join(r, "d/f"), filepath.Join(r, "d/g")) }, watch: []string{"d"}},
		{name: "link", dirs: []string{"d"}, files: []string{"d/f", "d/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Link(filepath.Join(r, "d/f"), filepath.Join(r, "d/f2")) }, watch: []string{"d"}},
		{name: "unlink in a subdirectory", dirs: []string{"d", "d/s"}, files: []string{"d/s/f", "d/s/keep", "d/keep"}, slow: []string{"d/s/f"},
			do: func(r string) error { return os.Remove(filepath.Join(r, "d/s/f")) }, watch: []string{"d", "d/s"}},
		{name: "rename a directory", dirs: []string{"d", "d/s"}, files: []string{"d/s/f", "d/keep"}, slow: []string{"d/s/f", "d/keep"},
			do: func(r string) error { return os.Rename(filepath.Join(r, "d/s"), filepath.Join(r, "d/s2")) }, watch: []string{"d"}},
		{name: "write", dirs: []string{"d"}, files: []string{"d/f", "d/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.WriteFile(filepath.Join(r, "d/f"), []byte("more"), 0o644) }, watch: []string{"d"}},
		{name: "chmod", dirs: []string{"d"}, files: []string{"d/f", "d/keep"}, slow: []string{"d/f"},
			do: func(r string) error { return os.Chmod(filepath.Join(r, "d/f"), 0o600) }, watch: []string{"d"}},
	}
	for i, op := range ops {
		base := fmt.Sprintf("op%d", i)
		type seen struct{ changed, ctimeIsMtime bool }
		results := map[string][]seen{}
		for _, root := range []string{filepath.Join(plain, base), m.path(base)} {
			onMount := root == m.path(base)
			mustOK(t, os.Mkdir(root, 0o755), "mkdir "+root)
			for _, d := range op.dirs {
				mustOK(t, os.Mkdir(filepath.Join(root, d), 0o755), op.name+": mkdir "+d)
			}
			for _, f := range op.files {
				mustOK(t, os.WriteFile(filepath.Join(root, f), []byte(f), 0o644), op.name+": write "+f)
			}
			if onMount {
				for _, f := range op.slow {
					mustOK(t, m.move(t, base+"/"+f, "slow"), op.name+": move "+f)
				}
			}
			old := []unix.Timespec{{Sec: 946684800}, {Sec: 946684800}}
			for _, d := range op.watch {
				mustOK(t, unix.UtimesNano(filepath.Join(root, d), old), op.name+": set old times")
				if onMount {
					for ti := range m.tiers {
						if _, err := os.Stat(filepath.Join(m.tiers[ti], base, d)); err != nil && d != "e" {
							t.Fatalf("%s: %s has no copy on tier %d: %v", op.name, d, ti, err)
						}
					}
				}
			}
			mustOK(t, op.do(root), op.name)
			for _, d := range op.watch {
				var st unix.Stat_t
				mustOK(t, unix.Stat(filepath.Join(root, d), &st), op.name+": stat "+d)
				results[d] = append(results[d], seen{st.Mtim.Sec != old[1].Sec, st.Ctim == st.Mtim})
			}
		}
		for _, d := range op.watch {
			p, mt := results[d][0], results[d][1]
			if p != mt {
				t.Errorf("%s: %s through the mount: mtime changed %v, ctime = mtime %v; a plain directory: %v, %v",
					op.name, d, mt.changed, mt.ctimeIsMtime, p.changed, p.ctimeIsMtime)
			}
		}
	}
	mv.check(t)
}

// TestDirTimesCreateOnSlow: a file created on the slow tier because the
// fast one is full changes its directory's mtime and ctime, as in a plain
// directory.
func TestDirTimesCreateOnSlow(t *testing.T) {
	m := mount(t, mountOpt{capacities: []units.ByteSize{2 << 20, 0}})
	plain := t.TempDir()
	mustOK(t, os.WriteFile(m.path("filler"), make([]byte, 3<<19), 0o644), "fill the fast tier")
	if m.tierOf(t, "filler") != 0 {
		t.Fatalf("filler not on the fast tier")
	}
	old := []unix.Timespec{{Sec: 946684800}, {Sec: 946684800}}
	for _, root := range []string{plain, m.mnt} {
		d := filepath.Join(root, "d")
		mustOK(t, os.Mkdir(d, 0o755), "mkdir")
		mustOK(t, unix.UtimesNano(d, old), "set old times")
		mustOK(t, os.WriteFile(filepath.Join(d, "f"), []byte("f"), 0o644), "create")
		var st unix.Stat_t
		mustOK(t, unix.Stat(d, &st), "stat")
		if st.Mtim.Sec == old[1].Sec || st.Ctim != st.Mtim {
			t.Errorf("%s after a create: mtime %v ctime %v, want both the time of the create", d, st.Mtim, st.Ctim)
		}
	}
	if m.tierOf(t, "d/f") != 1 {
		t.Fatalf("the new file is not on the slow tier")
	}
}

// TestDirXattrsOnEveryCopy: the extended attributes of a directory are
// copied to a copy made on another tier (they were not), and set and
// remove act on every copy; a remove succeeds when any copy had the
// attribute (it failed with ENODATA where an older copy lacked it).
func TestDirXattrsOnEveryCopy(t *testing.T) {
	m := mount(t, mountOpt{})
	d := m.path("d")
	mustOK(t, os.Mkdir(d, 0o755), "mkdir")
	want := map[string]string{"user.a": "one", "user.b": "two", "trusted.other": "three"}
	for k, v := range want {
		mustOK(t, unix.Setxattr(d, k, []byte(v), 0), "setxattr "+k)
	}
	for _, n := range []string{"d/f", "d/g"} {
		mustOK(t, os.WriteFile(m.path(n), []byte(n), 0o644), "write "+n)
	}
	if _, err := os.Stat(filepath.Join(m.tiers[1], "d")); !os.IsNotExist(err) {
		t.Fatalf("d has a copy on the slow tier before any move: %v", err)
	}
	mv := startMover(t, m, "d/f", "d/g")
	mustOK(t, m.move(t, "d/f", "slow"), "move d/f")
	slowCopy := filepath.Join(m.tiers[1], "d")
	for k, v := range want {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(slowCopy, k, buf)
		if err != nil || string(buf[:n]) != v {
			t.Errorf("%s on the slow tier's copy of d: %q, %v; want %q", k, buf[:max(n, 0)], err, v)
		}
	}
	// An older copy without an attribute: a remove through the mount
	// still removes it where it is.
	if err := unix.Lremovexattr(slowCopy, "user.b"); err != nil && err != unix.ENODATA {
		t.Fatalf("remove user.b from the slow copy behind tierfs: %v", err)
	}
	for _, k := range []string{"user.a", "user.b"} {
		if err := unix.Removexattr(d, k); err != nil {
			t.Errorf("removexattr %s: %v", k, err)
		}
		if _, err := unix.Getxattr(d, k, make([]byte, 64)); err != unix.ENODATA {
			t.Errorf("getxattr %s after its removal: %v, want ENODATA", k, err)
		}
		for i, tier := range m.tiers {
			if _, err := unix.Lgetxattr(filepath.Join(tier, "d"), k, make([]byte, 64)); err != unix.ENODATA {
				t.Errorf("%s on tier %d's copy after its removal: %v", k, i, err)
			}
		}
	}
	if err := unix.Removexattr(d, "user.a"); err != unix.ENODATA {
		t.Errorf("removexattr of an attribute no copy has: %v, want ENODATA", err)
	}
	// Set with XATTR_CREATE: judged by the copy the mount shows, done on
	// every copy.
	mustOK(t, unix.Setxattr(d, "user.c", []byte("four"), unix.XATTR_CREATE), "setxattr user.c")
	if err := unix.Setxattr(d, "user.c", []byte("five"), unix.XATTR_CREATE); err != unix.EEXIST {
		t.Errorf("setxattr XATTR_CREATE of an existing attribute: %v, want EEXIST", err)
	}
	for i, tier := range m.tiers {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(tier, "d"), "user.c", buf)
		if err != nil || string(buf[:n]) != "four" {
			t.Errorf("user.c on tier %d's copy: %q, %v", i, buf[:max(n, 0)], err)
		}
	}
	mv.check(t)
}
