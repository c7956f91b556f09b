package fs

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
)

// fullableTier is a tier directory on a small tmpfs of its own, which the
// test can fill to the last page, as other users of a shared filesystem
// (or the tier's own files) would, and free again.
type fullableTier struct {
	fs, dir, filler string
}

func tmpfsTier(t *testing.T, size string) *fullableTier {
	t.Helper()
	requireFUSE(t) // root, as the tmpfs needs
	fsDir := filepath.Join(t.TempDir(), "fs")
	mustOK(t, os.Mkdir(fsDir, 0o700), "mkdir")
	mustOK(t, unix.Mount("tierfs-full", fsDir, "tmpfs", 0, "size="+size+",mode=0700"), "mount tmpfs")
	// Registered before the mount's cleanup, so it runs after it.
	t.Cleanup(func() { unix.Unmount(fsDir, unix.MNT_DETACH) })
	ft := &fullableTier{fs: fsDir, dir: filepath.Join(fsDir, "tier"), filler: filepath.Join(fsDir, "filler")}
	mustOK(t, os.Mkdir(ft.dir, 0o700), "mkdir tier")
	return ft
}

// fill takes every free page of the tier's filesystem.
func (ft *fullableTier) fill(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(ft.filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	mustOK(t, err, "open filler")
	defer f.Close()
	for _, n := range []int{1 << 20, 4096} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatalf("fill %s: %v", ft.fs, err)
				}
				break
			}
		}
	}
	var st unix.Statfs_t
	mustOK(t, unix.Statfs(ft.fs, &st), "statfs")
	if st.Bavail != 0 {
		t.Fatalf("%s not full: %d blocks free", ft.fs, st.Bavail)
	}
}

// free gives the filler's pages back.
func (ft *fullableTier) free(t *testing.T) {
	t.Helper()
	mustOK(t, os.Remove(ft.filler), "remove filler")
}

// journalLeft lists what each tier's rename journal directory holds.
func journalLeft(m *testMount) []string {
	var left []string
	for _, r := range m.roots {
		ents, _ := os.ReadDir(filepath.Join(r, ".tierfs", "journal"))
		for _, e := range ents {
			left = append(left, filepath.Join(r, ".tierfs", "journal", e.Name()))
		}
	}
	return left
}

// partitionOnTwoTiers makes dir with a.log on the fast tier and b.log on
// the slow one, so that renaming dir renames two copies under the journal.
func partitionOnTwoTiers(t *testing.T, m *testMount, dir string) map[string]string {
	t.Helper()
	mustOK(t, os.Mkdir(m.path(dir), 0o755), "mkdir")
	want := map[string]string{"a.log": "a data", "b.log": "b data"}
	for n, w := range want {
		mustOK(t, os.WriteFile(m.path(dir+"/"+n), []byte(w), 0o644), "write "+n)
	}
	mustOK(t, m.move(t, dir+"/b.log", "slow"), "demote b.log")
	if m.tierOf(t, dir+"/a.log") != 0 || m.tierOf(t, dir+"/b.log") != 1 {
		t.Fatalf("%s is not on both tiers", dir)
	}
	return want
}

// checkRenamed: every file is under to, once, and from is gone from the
// mount and from every tier.
func checkRenamed(t *testing.T, m *testMount, from, to string, want map[string]string) {
	t.Helper()
	for n, w := range want {
		got, err := os.ReadFile(m.path(to + "/" + n))
		mustOK(t, err, "read "+to+"/"+n)
		if string(got) != w {
			t.Fatalf("%s/%s = %q, want %q", to, n, got, w)
		}
		m.tierOf(t, to+"/"+n)
	}
	if _, err := os.Lstat(m.path(from)); !os.IsNotExist(err) {
		t.Fatalf("%s still visible after the rename: %v", from, err)
	}
	for _, d := range m.tiers {
		if _, err := os.Lstat(filepath.Join(d, from)); !os.IsNotExist(err) {
			t.Fatalf("%s left on %s: %v", from, d, err)
		}
	}
}

// Kafka deletes a topic by renaming its partition directories: with the
// fast tier full to the last page and room on the slow one, that rename
// must work (issue 16, 8). Only when no tier can take the rename's
// journal record does it fail, with ENOSPC, leaving nothing behind.
func TestDirRenameFastTierFull(t *testing.T) {
	fast, slow := tmpfsTier(t, "4m"), tmpfsTier(t, "8m")
	m := mount(t, mountOpt{tierDirs: []string{fast.dir, slow.dir}})
	want := partitionOnTwoTiers(t, m, "orders-0")

	fast.fill(t)
	if err := os.Rename(m.path("orders-0"), m.path("orders-0.abc-delete")); err != nil {
		t.Fatalf("rename a directory with the fast tier full: %v", err)
	}
	checkRenamed(t, m, "orders-0", "orders-0.abc-delete", want)
	if left := journalLeft(m); len(left) != 0 {
		t.Fatalf("journal files left behind: %v", left)
	}

	// Every tier full: no room for the record anywhere.
	slow.fill(t)
	err := os.Rename(m.path("orders-0.abc-delete"), m.path("orders-0"))
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("rename with every tier full: %v, want ENOSPC", err)
	}
	if left := journalLeft(m); len(left) != 0 {
		t.Fatalf("a rename that failed for room left journal files behind: %v", left)
	}
	checkRenamed(t, m, "orders-0", "orders-0.abc-delete", want)

	slow.free(t)
	mustOK(t, os.Rename(m.path("orders-0.abc-delete"), m.path("orders-0")), "rename once the slow tier has room")
	checkRenamed(t, m, "orders-0.abc-delete", "orders-0", want)
	if left := journalLeft(m); len(left) != 0 {
		t.Fatalf("journal files left behind: %v", left)
	}
}

// A crash after the journal record went to the slow tier (the fast one
// being full): the next mount finds it there and finishes the rename. A
// crash before the record was published leaves the old name, and no
// rename.tmp.
func TestDirRenameCrashFastTierFull(t *testing.T) {
	for _, step := range []string{"rename-dir:record-unpublished", "rename-dir:journaled", "rename-dir:tier"} {
		t.Run(step, func(t *testing.T) {
			fast, slow := tmpfsTier(t, "4m"), tmpfsTier(t, "8m")
			m := mount(t, mountOpt{tierDirs: []string{fast.dir, slow.dir}, crashAt: step})
			want := partitionOnTwoTiers(t, m, "orders-0")
			fast.fill(t)
			err := os.Rename(m.path("orders-0"), m.path("orders-0.abc-delete"))
			if err == nil {
				t.Fatalf("rename succeeded although the daemon died at %s", step)
			}
			if errors.Is(err, unix.ENOSPC) {
				t.Fatalf("rename with the fast tier full: %v", err)
			}
			m.waitCrash(t)
			// The record went to the slow tier, the fast one being full.
			wantLeft := filepath.Join(slow.dir, ".tierfs", "journal", "rename")
			if step == "rename-dir:record-unpublished" {
				wantLeft += ".tmp"
			}
			if left := journalLeft(m); len(left) != 1 || left[0] != wantLeft {
				t.Fatalf("journal after a crash at %s: %v, want %s", step, left, wantLeft)
			}

			m2 := m.restart(t)
			if step == "rename-dir:record-unpublished" {
				checkRenamed(t, m2, "orders-0.abc-delete", "orders-0", want)
			} else {
				checkRenamed(t, m2, "orders-0", "orders-0.abc-delete", want)
			}
			if left := journalLeft(m2); len(left) != 0 {
				t.Fatalf("journal files left after recovery: %v", left)
			}
		})
	}
}

// appendUntil appends chunks of data to f until n bytes are written or a
// write fails, and returns the bytes written and the error.
func appendUntil(f *os.File, data []byte, chunk int) (int, error) {
	written := 0
	for written < len(data) {
		n, err := f.Write(data[written:min(written+chunk, len(data))])
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, f.Sync()
}

// A file on a full slow tier goes up to the fast tier, which has room,
// and the writer never sees ENOSPC while a tier can take the file (issue
// 16, 10). Only when no tier can does the write fail, and nothing already
// written is lost.
func TestSpillUpward(t *testing.T) {
	slow := tmpfsTier(t, "8m")
	fastDir := filepath.Join(t.TempDir(), "fast")
	mustOK(t, os.Mkdir(fastDir, 0o700), "mkdir fast")
	m := mount(t, mountOpt{tierDirs: []string{fastDir, slow.dir}, capacities: []units.ByteSize{16 << 20, 0}})
	r := rand.New(rand.NewSource(10))
	data := randBytes(r, 20<<20)

	f, err := os.OpenFile(m.path("seg.log"), os.O_RDWR|os.O_CREATE, 0o644)
	mustOK(t, err, "create")
	defer f.Close()
	n, err := appendUntil(f, data[:1<<20], 128<<10)
	mustOK(t, err, "write the first MiB")
	mustOK(t, m.move(t, "seg.log", "slow"), "demote")
	slow.fill(t)

	// The slow tier is full to the last page; the fast one has room.
	w, err := appendUntil(f, data[n:n+4<<20], 128<<10)
	n += w
	if err != nil {
		t.Fatalf("append to a file on the full slow tier with the fast tier empty: %v after %d bytes", err, w)
	}
	if tier := m.tierOf(t, "seg.log"); tier != 0 {
		t.Fatalf("file on tier %d after its tier filled, want the fast tier", tier)
	}
	if got, _ := os.ReadFile(m.path("seg.log")); !bytes.Equal(got, data[:n]) {
		t.Fatalf("file differs after it spilled up (%d bytes, want %d)", len(got), n)
	}

	// Now the fast tier fills too (16 MiB): nowhere left.
	w, err = appendUntil(f, data[n:], 128<<10)
	n += w
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling every tier: %v after %d bytes, want ENOSPC", err, n)
	}
	if n < 12<<20 {
		t.Fatalf("ENOSPC after %d bytes: the fast tier's 16 MiB were not used", n)
	}
	if got, _ := os.ReadFile(m.path("seg.log")); !bytes.Equal(got, data[:len(got)]) || len(got) < n {
		t.Fatalf("file damaged by the full tiers (%d bytes, %d written)", len(got), n)
	}
}

// Spill order: the next slower tier with room first, then the faster
// ones, the nearest first.
func TestSpillOrder(t *testing.T) {
	cases := []struct {
		name       string
		capacities []units.ByteSize
		from       string
		want       int
	}{
		// The fast tier has room too: the nearest faster tier takes it.
		{"last-tier-full-goes-up-one", []units.ByteSize{16 << 20, 16 << 20, 2 << 20}, "cold", 1},
		// The fast tier has room too: down comes first.
		{"middle-tier-full-goes-down", []units.ByteSize{16 << 20, 2 << 20, 16 << 20}, "slow", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := mount(t, mountOpt{capacities: c.capacities})
			data := randBytes(rand.New(rand.NewSource(11)), 4<<20)
			f, err := os.OpenFile(m.path("a"), os.O_RDWR|os.O_CREATE, 0o644)
			mustOK(t, err, "create")
			defer f.Close()
			_, err = appendUntil(f, data[:1<<20], 128<<10)
			mustOK(t, err, "write")
			mustOK(t, m.move(t, "a", c.from), "move to "+c.from)
			if _, err := appendUntil(f, data[1<<20:], 128<<10); err != nil {
				t.Fatalf("append past the capacity of %s: %v", c.from, err)
			}
			if tier := m.tierOf(t, "a"); tier != c.want {
				t.Fatalf("file on the full %s tier went to tier %d, want %d", c.from, tier, c.want)
			}
			if got, _ := os.ReadFile(m.path("a")); !bytes.Equal(got, data) {
				t.Fatalf("file differs after it spilled")
			}
		})
	}
}

// A write that no tier has room for, with the file, fails with ENOSPC
// where the file is: the file does not move to a tier that has room for
// it but not for the write, from where it would have to come back.
func TestSpillNeedsRoomForTheWrite(t *testing.T) {
	// The slow tier can take the full fast tier's file, 64 KiB more,
	// but not the 256 KiB write.
	m := mount(t, mountOpt{capacities: []units.ByteSize{4 << 20, 4<<20 + 64<<10}})
	data := randBytes(rand.New(rand.NewSource(12)), 4<<20+256<<10)
	f, err := os.OpenFile(m.path("f"), os.O_RDWR|os.O_CREATE, 0o644)
	mustOK(t, err, "create")
	defer f.Close()
	_, err = appendUntil(f, data[:4<<20], 256<<10)
	mustOK(t, err, "fill the fast tier")
	if tier := m.tierOf(t, "f"); tier != 0 {
		t.Fatalf("4 MiB file on tier %d, want the fast tier it fills", tier)
	}
	before := m.status(t).Moves
	_, err = f.Write(data[4<<20:])
	if err == nil && m.cfg.Writeback {
		// The kernel's write-back cache took the write; the error
		// comes when it reaches the daemon.
		err = f.Sync()
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("a write no tier has room for: %v, want ENOSPC", err)
	}
	if after := m.status(t).Moves; after.Started != before.Started || after.Failed != before.Failed {
		t.Fatalf("the file was moved for a write that fits nowhere: moves %+v, then %+v", before, after)
	}
	if tier := m.tierOf(t, "f"); tier != 0 {
		t.Fatalf("file on tier %d, want it where it was", tier)
	}
	// (With the write-back cache the kernel keeps showing what it could
	// not write back, as for a local filesystem.)
	if got, _ := os.ReadFile(m.path("f")); !m.cfg.Writeback && !bytes.Equal(got, data[:4<<20]) {
		t.Fatalf("file damaged by a write that found no room")
	}
}

// A mount whose first tier is full still creates files: the inode
// counter's reservation is written on a tier with room.
func TestCreateAfterRemountFastTierFull(t *testing.T) {
	fast := tmpfsTier(t, "4m")
	slowDir := filepath.Join(t.TempDir(), "slow")
	mustOK(t, os.Mkdir(slowDir, 0o700), "mkdir slow")
	m := mount(t, mountOpt{tierDirs: []string{fast.dir, slowDir}})
	mustOK(t, os.WriteFile(m.path("before"), []byte("x"), 0o644), "create before")
	var st unix.Stat_t
	mustOK(t, unix.Stat(m.path("before"), &st), "stat before")
	m.stop(t)
	fast.fill(t)

	m2 := m.restart(t)
	mustOK(t, os.WriteFile(m2.path("after"), []byte("y"), 0o644), "create with the fast tier full")
	mustOK(t, os.Mkdir(m2.path("dir"), 0o755), "mkdir with the fast tier full")
	var st2 unix.Stat_t
	mustOK(t, unix.Stat(m2.path("after"), &st2), "stat after")
	if st2.Ino == st.Ino {
		t.Fatalf("inode number %d handed out twice", st.Ino)
	}
	if m2.tierOf(t, "after") != 1 {
		t.Fatalf("new file not on the slow tier")
	}
}
