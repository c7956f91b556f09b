package fs

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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
// the returned mover is stopped. A file that is gone, renamed, busy or
// hard-linked meanwhile is skipped: the checks change the namespace under
// it on purpose.
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
					errors.Is(err, syscall.EMLINK), errors.Is(err, syscall.ESTALE),
					errors.Is(err, syscall.EINVAL):
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
