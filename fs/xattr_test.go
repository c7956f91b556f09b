package fs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestXattrOpenFileFollowsMove: xattrs of an open file are answered from
// its open backing (Store.GetxattrOpen); after a move they must come from
// the new backing, never from the fd the move replaced, and a value set
// after the move must be seen.
func TestXattrOpenFileFollowsMove(t *testing.T) {
	m := mount(t, mountOpt{})
	p := m.path("f")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT, 0o644)
	mustOK(t, err, "create")
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("data"))
	mustOK(t, err, "write")
	mustOK(t, unix.Setxattr(p, "user.a", []byte("one"), 0), "setxattr")
	if v := xattr(t, p, "user.a"); v != "one" {
		t.Fatalf("user.a = %q before the move", v)
	}
	if v := xattr(t, p, "user.tierfs.tier"); v != "fast" {
		t.Fatalf("tier = %q before the move", v)
	}
	mustOK(t, m.move(t, "f", "slow"), "move")
	if v := xattr(t, p, "user.tierfs.tier"); v != "slow" {
		t.Fatalf("tier = %q after the move", v)
	}
	if v := xattr(t, p, "user.a"); v != "one" {
		t.Fatalf("user.a = %q after the move, want the copied value", v)
	}
	mustOK(t, unix.Setxattr(p, "user.a", []byte("two"), 0), "setxattr after the move")
	if v := xattr(t, p, "user.a"); v != "two" {
		t.Fatalf("user.a = %q after setting it on the moved file (a stale backing?)", v)
	}
	mustOK(t, m.move(t, "f", "fast"), "move back")
	if v := xattr(t, p, "user.a"); v != "two" {
		t.Fatalf("user.a = %q after moving back", v)
	}
	buf := make([]byte, 64)
	if _, err := unix.Getxattr(p, "user.tierfs.ino", buf); err != unix.ENODATA {
		t.Fatalf("reserved xattr of an open file: %v, want ENODATA", err)
	}
	if _, err := unix.Getxattr(p, "security.capability", buf); err != unix.ENODATA {
		t.Fatalf("security.capability: %v, want ENODATA", err)
	}
	if _, err := unix.Getxattr(p, "user.a", make([]byte, 1)); err != unix.ERANGE {
		t.Fatalf("short buffer: %v, want ERANGE", err)
	}
	// Closed: answered by path again.
	mustOK(t, unix.Close(fd), "close")
	fd = -1
	if v := xattr(t, p, "user.a"); v != "two" {
		t.Fatalf("user.a = %q once closed", v)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}

// POSIX ACLs are not enforced by the mount, so they are not stored either
// (as on a filesystem mounted noacl): setting one fails with EOPNOTSUPP,
// on files and directories, open or not, and none is listed (issue 16,
// item 6). tierfs's own attributes cannot be set through the mount.
func TestPosixACLsRefused(t *testing.T) {
	m := mount(t, mountOpt{})
	mustOK(t, os.Mkdir(m.path("d"), 0o755), "mkdir")
	mustOK(t, os.WriteFile(m.path("d/f"), []byte("x"), 0o644), "write")
	// A minimal valid ACL: user::rw-, group::r--, other::r-- (version 2).
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}
	for _, c := range []struct{ path, name string }{
		{m.path("d/f"), "system.posix_acl_access"},
		{m.path("d"), "system.posix_acl_access"},
		{m.path("d"), "system.posix_acl_default"},
	} {
		if err := unix.Setxattr(c.path, c.name, acl, 0); err != unix.EOPNOTSUPP {
			t.Errorf("setxattr %s on %s: %v, want EOPNOTSUPP", c.name, c.path, err)
		}
		if _, err := unix.Getxattr(c.path, c.name, make([]byte, 64)); err != unix.EOPNOTSUPP && err != unix.ENODATA {
			t.Errorf("getxattr %s on %s: %v, want EOPNOTSUPP or ENODATA", c.name, c.path, err)
		}
	}
	buf := make([]byte, 1024)
	n, err := unix.Listxattr(m.path("d"), buf)
	mustOK(t, err, "listxattr")
	if n != 0 {
		t.Errorf("listxattr of d: %q, want nothing", buf[:n])
	}
	for _, name := range []string{"trusted.tierfs.ino", "user.tierfs.ino"} {
		if err := unix.Setxattr(m.path("d/f"), name, make([]byte, 8), 0); err != unix.EPERM {
			t.Errorf("setxattr %s through the mount: %v, want EPERM", name, err)
		}
	}
}
