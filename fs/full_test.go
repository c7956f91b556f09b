package fs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
// being full): the next mount finds it there and finishes the rename.
func TestDirRenameCrashFastTierFull(t *testing.T) {
	for _, step := range []string{"rename-dir:journaled", "rename-dir:tier"} {
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

			m2 := m.restart(t)
			checkRenamed(t, m2, "orders-0", "orders-0.abc-delete", want)
			if left := journalLeft(m2); len(left) != 0 {
				t.Fatalf("journal files left after recovery: %v", left)
			}
		})
	}
}
