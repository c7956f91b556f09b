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
