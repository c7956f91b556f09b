package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// What fallocate can do does not depend on the tier a file is on: a file
// moved from ext4 (which has FALLOC_FL_ZERO_RANGE) to tmpfs (which has
// not) still takes ZERO_RANGE, with and without KEEP_SIZE, and reads back
// as a local file does (issue 16, item 5).
func TestFallocateModesFollowTheFile(t *testing.T) {
	requireFUSE(t)
	base := t.TempDir()
	fast, slow := filepath.Join(base, "fast"), filepath.Join(base, "slow")
	for _, d := range []string{fast, slow} {
		mustOK(t, os.Mkdir(d, 0o700), "mkdir")
	}
	mustOK(t, unix.Mount("tierfs-slow", slow, "tmpfs", 0, "size=64m,mode=0700"), "mount tmpfs")
	t.Cleanup(func() { unix.Unmount(slow, unix.MNT_DETACH) })
	m := mount(t, mountOpt{tierDirs: []string{fast, slow}})
	local := filepath.Join(base, "local")
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	cases := []struct {
		name     string
		mode     uint32
		off, len int64
	}{
		{"zero-range-inside", unix.FALLOC_FL_ZERO_RANGE, 4096, 8192},
		{"zero-range-past-end", unix.FALLOC_FL_ZERO_RANGE, 60 << 10, 16 << 10},
		{"zero-range-keep-size", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, 60 << 10, 16 << 10},
		{"punch-hole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 100, 5000},
	}
	mustOK(t, os.WriteFile(m.path("moving"), data, 0o644), "write")
	mv := startMover(t, m, "moving")
	for _, c := range cases {
		// The file the loop moves takes every mode too, wherever it is.
		mustOK(t, os.WriteFile(local, data, 0o644), "write local")
		mustOK(t, os.WriteFile(m.path("moving"), data, 0o644), "rewrite")
		for _, p := range []string{m.path("moving"), local} {
			fd, err := unix.Open(p, unix.O_RDWR, 0)
			mustOK(t, err, "open")
			err = unix.Fallocate(fd, c.mode, c.off, c.len)
			unix.Close(fd)
			if err != nil {
				t.Errorf("%s while moving (%s): %v", c.name, p, err)
			}
		}
		got, err := os.ReadFile(m.path("moving"))
		mustOK(t, err, "read back")
		want, err := os.ReadFile(local)
		mustOK(t, err, "read local")
		if !bytes.Equal(got, want) {
			t.Errorf("%s while moving: %d bytes read back, differ from a local file's %d", c.name, len(got), len(want))
		}
		for _, tier := range []string{"fast", "slow"} {
			rel := c.name + "-" + tier
			mustOK(t, os.WriteFile(m.path(rel), data, 0o644), "write")
			mustOK(t, os.WriteFile(local, data, 0o644), "write local")
			if tier == "slow" {
				mustOK(t, m.move(t, rel, "slow"), "move to the tmpfs tier")
			}
			for _, p := range []string{m.path(rel), local} {
				fd, err := unix.Open(p, unix.O_RDWR, 0)
				mustOK(t, err, "open")
				err = unix.Fallocate(fd, c.mode, c.off, c.len)
				unix.Close(fd)
				if err != nil {
					t.Errorf("%s on %s (%s): %v", c.name, tier, p, err)
				}
			}
			got, err := os.ReadFile(m.path(rel))
			mustOK(t, err, "read back")
			want, err := os.ReadFile(local)
			mustOK(t, err, "read local")
			if !bytes.Equal(got, want) {
				t.Errorf("%s on %s: %d bytes read back, differ from a local file's %d", c.name, tier, len(got), len(want))
			}
		}
	}
	mv.check(t)
}
