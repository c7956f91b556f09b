// Package testenv says what a test does when the machine lacks something
// it needs (root, /dev/fuse, a kernel feature): it skips, saying why,
// except under CI=true, where nothing may skip and the test fails with the
// reason instead, so that CI cannot go green by not running.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fuseuring"
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
	unlock, err := lockURingSwitch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
}

// SetURingSwitch holds the switch's lock (HoldURingSwitch) and sets the
// kernel's FUSE-over-io_uring switch to v ("Y" or "N") until t ends, when
// it gets back what it was. A kernel without the switch skips t (fails
// it under CI).
func SetURingSwitch(t testing.TB, v string) {
	t.Helper()
	HoldURingSwitch(t)
	was, err := os.ReadFile(fuseuring.EnableParam)
	Require(t, err == nil, fmt.Sprintf("this kernel has no FUSE over io_uring: %v", err))
	t.Cleanup(func() { os.WriteFile(fuseuring.EnableParam, was, 0o644) })
	if err := os.WriteFile(fuseuring.EnableParam, []byte(v), 0o644); err != nil {
		t.Fatalf("setting %s to %s: %v", fuseuring.EnableParam, v, err)
	}
}

func lockURingSwitch() (unlock func(), err error) {
	fd, err := unix.Open("/run/lock/tierfs-test-enable-uring.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Open(os.TempDir()+"/tierfs-test-enable-uring.lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("the io_uring switch's lock: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("the io_uring switch's lock: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// ErrNoURing says that the kernel has no FUSE over io_uring at all.
var ErrNoURing = errors.New("this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)")

// EnableURing turns the kernel's FUSE-over-io_uring switch on (it only
// lets daemons ask for io_uring; mounts that do not are unchanged) for a
// whole test binary's run, holding the switch's lock meanwhile: for a
// TestMain whose every mount must be served over io_uring. restore puts
// the switch back as it was and lets the lock go. ErrNoURing when the
// kernel lacks it.
func EnableURing() (restore func(), err error) {
	unlock, err := lockURingSwitch()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fuseuring.EnableParam)
	if errors.Is(err, os.ErrNotExist) {
		unlock()
		return nil, ErrNoURing
	}
	if err != nil {
		unlock()
		return nil, err
	}
	if strings.TrimSpace(string(b)) == "Y" {
		return unlock, nil
	}
	if err := os.WriteFile(fuseuring.EnableParam, []byte("Y"), 0o644); err != nil {
		unlock()
		return nil, fmt.Errorf("enabling FUSE over io_uring: %w", err)
	}
	return func() {
		os.WriteFile(fuseuring.EnableParam, b, 0o644)
		unlock()
	}, nil
}

// URing turns the switch on for t, as EnableURing does for a run, and puts
// it back when t ends; it skips t (fails it under CI) when the kernel has
// no FUSE over io_uring.
func URing(t testing.TB) {
	t.Helper()
	restore, err := EnableURing()
	Require(t, !errors.Is(err, ErrNoURing), ErrNoURing.Error())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
}
