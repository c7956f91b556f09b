package tiering

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
)

// fsBytes is the size and the space available to unprivileged users of
// the filesystem holding dir.
func fsBytes(t *testing.T, dir string) (size, avail uint64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize)
}

// Two tiers on one filesystem count its size, free space and inodes once;
// their capacities still cap what they add. Tiers on different
// filesystems add up (issue 16 item 12: 504 GiB shown on a 252 GiB disk).
func TestStatfsSharedFilesystem(t *testing.T) {
	const slack = 64 << 20 // what others write to the disk meanwhile
	for _, tc := range []struct {
		name       string
		caps       [2]units.ByteSize
		wantBlocks func(size uint64) uint64
	}{
		{"no capacities", [2]units.ByteSize{0, 0}, func(size uint64) uint64 { return size }},
		{"the fast tier capped", [2]units.ByteSize{8 << 20, 0}, func(size uint64) uint64 { return size }},
		{"both capped", [2]units.ByteSize{8 << 20, 16 << 20}, func(uint64) uint64 { return 24 << 20 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, tc.caps[0])
			tiers[1].Capacity = tc.caps[1]
			s := openTest(t, tiers, Options{})
			got, err := s.Statfs()
			if err != nil {
				t.Fatal(err)
			}
			size, avail := fsBytes(t, tiers[0].Path)
			bs := uint64(got.Bsize)
			if want := tc.wantBlocks(size); got.Blocks*bs > want || got.Blocks*bs+bs < want {
				t.Errorf("statfs size %d, want %d (one filesystem of %d under both tiers)", got.Blocks*bs, want, size)
			}
			if got.Bavail*bs > min(avail+slack, got.Blocks*bs) {
				t.Errorf("statfs free %d, but the filesystem has %d and the tiers %d", got.Bavail*bs, avail, got.Blocks*bs)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(tiers[0].Path, &st); err != nil {
				t.Fatal(err)
			}
			if got.Files != st.Files {
				t.Errorf("statfs inodes %d, want the filesystem's %d once", got.Files, st.Files)
			}
		})
	}
	t.Run("two filesystems", func(t *testing.T) {
		tiers := twoTiers(t, TypeNVMe, 0)
		if err := unix.Mount("tierfs-test", tiers[1].Path, "tmpfs", 0, "size=64m,mode=0700"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(tiers[1].Path, unix.MNT_DETACH) })
		s := openTest(t, tiers, Options{})
		got, err := s.Statfs()
		if err != nil {
			t.Fatal(err)
		}
		size0, _ := fsBytes(t, tiers[0].Path)
		size1, _ := fsBytes(t, tiers[1].Path)
		bs := uint64(got.Bsize)
		if want := size0 + size1; got.Blocks*bs > want || got.Blocks*bs+2*bs < want {
			t.Errorf("statfs size %d, want the two filesystems' %d + %d", got.Blocks*bs, size0, size1)
		}
	})
}
