package fs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A tier whose filesystem became read-only under the running daemon: an
// open for writing says so (EROFS), as a local filesystem would, not
// EACCES; reading goes on.
func TestOpenForWriteOnReadOnlyTier(t *testing.T) {
	requireFUSE(t)
	base := t.TempDir()
	fast, slow := filepath.Join(base, "fast"), filepath.Join(base, "slow")
	for _, d := range []string{fast, slow} {
		mustOK(t, os.Mkdir(d, 0o700), "mkdir")
	}
	mustOK(t, unix.Mount("tierfs-ro", fast, "tmpfs", 0, "size=16m,mode=0700"), "mount tmpfs")
	t.Cleanup(func() { unix.Unmount(fast, unix.MNT_DETACH) })
	m := mount(t, mountOpt{tierDirs: []string{fast, slow}})
	mustOK(t, os.WriteFile(m.path("f"), []byte("data"), 0o644), "write f")
	// Busy until the kernel has released f (RELEASE comes after close).
	waitFor(t, "the fast tier remounted read-only", func() bool {
		return unix.Mount("", fast, "", unix.MS_REMOUNT|unix.MS_RDONLY, "") == nil
	})
	t.Cleanup(func() { unix.Mount("", fast, "", unix.MS_REMOUNT, "") })
	_, err := os.OpenFile(m.path("f"), os.O_WRONLY, 0)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("open for writing on a read-only tier: %v, want EROFS", err)
	}
	if b, err := os.ReadFile(m.path("f")); err != nil || string(b) != "data" {
		t.Errorf("read on a read-only tier: %q, %v", b, err)
	}
}
