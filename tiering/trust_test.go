package tiering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// needRoot: these tests set trusted xattrs and mount filesystems. CI runs
// as root, and there nothing may skip.
func needRoot(t *testing.T) {
	t.Helper()
	testenv.Root(t, "setting trusted xattrs and mounting")
}

func openErr(tiers []TierConfig, o Options) error {
	o.Log = zerolog.Nop()
	s, err := Open(tiers, o)
	if err == nil {
		s.Close()
	}
	return err
}

func putIno(t *testing.T, path, name string, ino uint64) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], ino)
	if err := unix.Lsetxattr(path, name, b[:], 0); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A deployment of the old layout (the mount's root in the tier directory,
// tierfs's attributes under user.tierfs.*) upgrades at its first mount:
// every name, inode number and the root's owner, mode, times and xattrs
// are kept; the tier directories become root's alone; a user.tierfs.ino
// set after the upgrade is never taken for a number.
func TestUpgradeInPlace(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	fast, slow := tiers[0].Path, tiers[1].Path
	mustWrite(t, filepath.Join(fast, "a"), "file a")
	putIno(t, filepath.Join(fast, "a"), "user.tierfs.ino", 1<<20+7)
	mustWrite(t, filepath.Join(slow, "d", "f"), "file d/f")
	putIno(t, filepath.Join(slow, "d"), "user.tierfs.ino", 1<<20+8)
	putIno(t, filepath.Join(slow, "d", "f"), "user.tierfs.ino", 1<<20+9)
	// A name the old root had that the new layout also uses.
	mustWrite(t, filepath.Join(fast, "data"), "a user's file named data")
	putIno(t, filepath.Join(fast, "data"), "user.tierfs.ino", 1<<20+10)
	mustWrite(t, filepath.Join(fast, ".tierfs", "ino"), "1114112\n")
	if err := os.Chown(fast, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(fast, "user.note", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	old := unix.Timespec{Sec: 1_600_000_000, Nsec: 5}
	if err := unix.UtimesNano(fast, []unix.Timespec{old, old}); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, tiers, Options{})
	for rel, want := range map[string]uint64{"a": 1<<20 + 7, "d": 1<<20 + 8, "d/f": 1<<20 + 9, "data": 1<<20 + 10} {
		a, err := s.Getattr(RelPath(rel))
		if err != nil {
			t.Fatalf("%s after the upgrade: %v", rel, err)
		}
		if a.Ino != want {
			t.Errorf("%s: inode %d, want %d (taken over from user.tierfs.ino)", rel, a.Ino, want)
		}
	}
	root, err := s.Getattr(RelPath(""))
	if err != nil {
		t.Fatal(err)
	}
	if root.Uid != 1234 || root.Mode&0o7777 != 0o755 || root.Mtim != old {
		t.Errorf("the mount's root: uid %d mode %o mtime %v; want the old root's 1234, 755, %v", root.Uid, root.Mode&0o7777, root.Mtim, old)
	}
	buf := make([]byte, 16)
	if n, err := s.Getxattr(RelPath(""), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("the root's user.note: %q, %v", buf[:max(n, 0)], err)
	}
	for _, tc := range tiers {
		var st unix.Stat_t
		if err := unix.Stat(tc.Path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 || st.Mode&0o7777 != 0o700 {
			t.Errorf("tier directory %s: uid %d mode %o, want root's and 0700", tc.Path, st.Uid, st.Mode&0o7777)
		}
		if b, err := os.ReadFile(filepath.Join(tc.Path, metaDir, formatFile)); err != nil || strings.TrimSpace(string(b)) != "3" {
			t.Errorf("%s's format: %q, %v", tc.Path, b, err)
		}
	}
	for _, p := range []string{filepath.Join(dataOf(tiers[0]), "a"), filepath.Join(dataOf(tiers[1]), "d", "f"), filepath.Join(dataOf(tiers[1]), "d")} {
		if _, err := unix.Lgetxattr(p, "user.tierfs.ino", buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s still has user.tierfs.ino (%v)", p, err)
		}
		if _, err := unix.Lgetxattr(p, xattrIno, buf); err != nil {
			t.Errorf("%s has no %s: %v", p, xattrIno, err)
		}
	}
	h, b, err := s.Create(RelPath(""), "b", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if b.Ino <= 1<<20+10 {
		t.Errorf("a new file got inode %d, not above the old ones", b.Ino)
	}
	s.Close()

	// After the upgrade, user.tierfs.* is nobody's word for anything.
	putIno(t, filepath.Join(dataOf(tiers[0]), "b"), "user.tierfs.ino", 1<<20+7)
	s2 := openTest(t, tiers, Options{})
	if a, err := s2.Getattr(RelPath("b")); err != nil || a.Ino != b.Ino {
		t.Errorf("b after a forged user.tierfs.ino: inode %d (%v), want %d", a.Ino, err, b.Ino)
	}
}

// The upgrade is taken again from wherever a crash cut it.
func TestUpgradeResumes(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	fast := tiers[0].Path
	mustWrite(t, filepath.Join(fast, "x"), "x")
	mustWrite(t, filepath.Join(fast, "y"), "y")
	// Cut after newroot was made and x moved into it.
	if err := os.MkdirAll(filepath.Join(fast, metaDir, newRootDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(fast, "x"), filepath.Join(fast, metaDir, newRootDir, "x")); err != nil {
		t.Fatal(err)
	}
	// The other tier: cut after the format was written, before the rename.
	slow := tiers[1].Path
	mustWrite(t, filepath.Join(slow, metaDir, newRootDir, "z"), "z")
	mustWrite(t, filepath.Join(slow, metaDir, formatFile), "2\n")
	if err := os.Chmod(slow, 0o700); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, tiers, Options{})
	ents, err := s.Readdir(RelPath(""))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "x,y,z" {
		t.Fatalf("root after resumed upgrades: %v, want x, y, z", names)
	}
}

// One daemon per tier: a second Open is refused, naming the holder, until
// the first lets go.
func TestSecondOpenRefused(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{Holder: "pid 4242, mountpoint /mnt/first"})
	err := openErr(tiers, Options{Holder: "pid 1, mountpoint /mnt/second"})
	if err == nil || !strings.Contains(err.Error(), "in use by another tierfs daemon (pid 4242, mountpoint /mnt/first)") {
		t.Fatalf("second open: %v", err)
	}
	if who := LockHolder(tiers[1].Path); who != "pid 4242, mountpoint /mnt/first" {
		t.Errorf("LockHolder = %q", who)
	}
	s.Close()
	if who := LockHolder(tiers[1].Path); who != "" {
		t.Errorf("LockHolder after close = %q", who)
	}
	if err := openErr(tiers, Options{}); err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
}

// The same directory given twice (here through a bind mount) is refused,
// at check and at open.
func TestSameDirectoryTwiceRefused(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	if err := unix.Mount(tiers[0].Path, tiers[1].Path, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(tiers[1].Path, unix.MNT_DETACH) })
	if err := ValidateTiers(tiers); err == nil || !strings.Contains(err.Error(), "same directory as tier[0]") {
		t.Errorf("check: %v", err)
	}
	if err := openErr(tiers, Options{}); err == nil || !strings.Contains(err.Error(), "is the same directory as tier fast") {
		t.Errorf("open: %v", err)
	}
}

// A filesystem without trusted xattrs (ramfs) would strand a file moved
// there without its inode number: refused at check and at open.
func TestTierWithoutXattrsRefused(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	if err := unix.Mount("ramfs", tiers[1].Path, "ramfs", 0, "mode=0700"); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(tiers[1].Path, unix.MNT_DETACH) })
	var want = "without trusted extended attributes (ramfs)"
	if err := ValidateTiers(tiers); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("check: %v", err)
	}
	if err := openErr(tiers, Options{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("open: %v", err)
	}
}

// A tier directory someone opened up again after tierfs made it root's is
// refused, with the fix in the message; so is one in a directory others
// can write.
func TestOpenedTierRefused(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	if err := openErr(tiers, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tiers[0].Path, 0o755); err != nil {
		t.Fatal(err)
	}
	want := "chown root: " + tiers[0].Path + " && chmod 0700 " + tiers[0].Path
	if err := ValidateTiers(tiers); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("check: %v", err)
	}
	if err := openErr(tiers, Options{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("open: %v", err)
	}
	if err := os.Chmod(tiers[0].Path, 0o700); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(tiers[0].Path)
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(parent, 0o700) })
	if err := openErr(tiers, Options{}); err == nil || !strings.Contains(err.Error(), "which other users can change") {
		t.Errorf("open in a world-writable directory: %v", err)
	}
}

// check (ValidateTiers) changes nothing on the tiers, not even the times
// of their directories, also while a Store has them.
func TestCheckChangesNothing(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	snap := func() string {
		var b strings.Builder
		for _, tc := range tiers {
			filepath.WalkDir(tc.Path, func(p string, e os.DirEntry, err error) error {
				var st unix.Stat_t
				if err == nil && unix.Lstat(p, &st) == nil {
					fmt.Fprintf(&b, "%s %v %v %o\n", p, st.Mtim, st.Ctim, st.Mode)
				}
				return nil
			})
		}
		return b.String()
	}
	before := snap()
	if err := ValidateTiers(tiers); err != nil {
		t.Fatal(err)
	}
	if after := snap(); after != before {
		t.Errorf("check changed the tiers:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s.Close()
}

// Two backing files with one inode number (a copy made with its
// attributes) are never served as one: the mount refuses to start,
// naming both; while mounted, the second cannot be opened while the first
// is.
func TestDuplicateInodeNumberRefused(t *testing.T) {
	needRoot(t)
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	h, a, err := s.Create(RelPath(""), "orig", unix.O_RDWR, 0o600, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte("the original"), 0); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dataOf(tiers[1]), "copy")
	mustWrite(t, copyPath, "a copy made behind tierfs's back")
	putIno(t, copyPath, xattrIno, a.Ino)
	if _, err := s.Open(RelPath("copy"), unix.O_RDONLY); !errors.Is(err, unix.EIO) {
		t.Errorf("open of a second file with an open file's number: %v, want EIO", err)
	}
	h.Release()
	s.Close()
	err = openErr(tiers, Options{})
	if err == nil || !strings.Contains(err.Error(), "claim an inode number") || !strings.Contains(err.Error(), "orig on tier fast and copy on tier slow") {
		t.Fatalf("open with a duplicate number: %v", err)
	}
}
