// Package testenv says what a test does when the machine lacks something
// it needs (root, /dev/fuse, a kernel feature): it skips, saying why,
// except under CI=true, where nothing may skip and the test fails with the
// reason instead, so that CI cannot go green by not running.
package testenv

import (
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// CI reports whether the tests run under CI (CI=true).
func CI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// Require skips t (or fails it under CI) with why unless ok.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if CI() {
		t.Fatalf("CI=true and this test cannot run: %s", why)
	}
	t.Skip("skipping: " + why)
}

// Root requires root.
func Root(t testing.TB, what string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, what+" needs root; run the tests as root (CI does)")
}

// FUSE requires root and an openable /dev/fuse.
func FUSE(t testing.TB) {
	t.Helper()
	Root(t, "mounting FUSE")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	Require(t, err == nil, "cannot open /dev/fuse; load the fuse module or run where FUSE is available")
}

// HoldURingSwitch takes, until t ends, the lock that every test which
// flips the kernel's FUSE-over-io_uring switch holds while it does: the
// fs and cmd packages' tests run at once, and one turning the switch off
// under another that just turned it on would change which transport the
// other's mount gets.
func HoldURingSwitch(t testing.TB) {
	t.Helper()
	fd, err := unix.Open("/run/lock/tierfs-test-enable-uring.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Open(os.TempDir()+"/tierfs-test-enable-uring.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		t.Fatalf("the io_uring switch's lock: %v", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		t.Fatalf("the io_uring switch's lock: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
}
