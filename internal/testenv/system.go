package testenv

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// HoldSystemInstall takes, until t ends, the lock every test that puts a
// tierfs binary where the system looks for one (/usr/local/sbin for
// mount(8), dpkg's /usr/bin) holds: tests of several checkouts may run
// on one machine at once, and one's binary must not be found by
// another's mount, nor removed under it.
func HoldSystemInstall(t testing.TB) {
	t.Helper()
	fd, err := unix.Open("/run/lock/tierfs-test-system-install.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Open(os.TempDir()+"/tierfs-test-system-install.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		t.Fatalf("the system install lock: %v", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		t.Fatalf("the system install lock: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
}
