package benchkit

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// needRoot skips a test that mounts when not root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it mounts file systems, attaches loop devices and sets blkio rules")
	}
}

// tempDir is t.TempDir with symlinks resolved (mountinfo names real paths).
func tempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMountTmpfs(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(tempDir(t), "fast")
	unmount, err := MountTmpfs(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmount() })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Errorf("%s: statfs type %#x, want tmpfs", dir, st.Type)
	}
	if size := int64(st.Blocks) * st.Bsize; size != 64<<20 {
		t.Errorf("tmpfs size %d, want %d", size, 64<<20)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if isMountpoint(dir) {
		t.Errorf("%s still mounted after unmount", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "f")); err == nil {
		t.Errorf("the file written on the tmpfs is still there after unmount")
	}
	if err := unmount(); err != nil {
		t.Errorf("a second unmount: %v", err)
	}
}

func TestDropCaches(t *testing.T) {
	needRoot(t)
	if err := DropCaches(); err != nil {
		t.Fatal(err)
	}
}

func ensureTools(t *testing.T) {
	t.Helper()
	if err := EnsurePackages(map[string]string{"mkfs.xfs": "xfsprogs", "mergerfs": "mergerfs", "losetup": "mount"}); err != nil {
		t.Fatal(err)
	}
}

// checkHDDGone checks that nothing of h is left.
func checkHDDGone(t *testing.T, h *HDD) {
	t.Helper()
	if r, w, err := Throttle(h.MajMin()); err != nil || r != 0 || w != 0 {
		t.Errorf("blkio rules for %s after Close: read %d write %d (%v), want 0", h.MajMin(), r, w, err)
	}
	if isMountpoint(h.Dir) {
		t.Errorf("%s still mounted", h.Dir)
	}
	var st unix.Stat_t
	if unix.Stat(h.Dev, &st) == nil {
		if b := loopBacking(unix.Minor(st.Rdev)); strings.Contains(b, h.Image) {
			t.Errorf("%s still attached to %s", h.Dev, b)
		}
	}
	for _, p := range []string{h.Image, h.Dir} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
}

func TestHDD(t *testing.T) {
	needRoot(t)
	ensureTools(t)
	work := tempDir(t)
	const bps = 50 << 20
	h, err := SetupHDD(work, 512<<20, bps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if !strings.HasPrefix(h.Dev, "/dev/loop") || !strings.HasPrefix(filepath.Base(h.Image), hddPrefix) {
		t.Errorf("HDD %+v: want a /dev/loop device and an image named %s*", h, hddPrefix)
	}
	if r, w, err := Throttle(h.MajMin()); err != nil || r != bps || w != bps {
		t.Errorf("blkio rules for %s: read %d write %d (%v), want %d each", h.MajMin(), r, w, err, bps)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(h.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.XFS_SUPER_MAGIC {
		t.Errorf("%s: statfs type %#x, want xfs", h.Dir, st.Type)
	}
	data := make([]byte, 1<<20)
	if err := os.WriteFile(filepath.Join(h.Dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkHDDGone(t, h)
	if err := h.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestHDDStale: an HDD whose process is gone (a killed run) is cleared by
// the next SetupHDD; the HDD of a live process is not.
func TestHDDStale(t *testing.T) {
	needRoot(t)
	ensureTools(t)
	work := tempDir(t)
	// A pid that is surely gone: a child that has exited and been reaped.
	// The stale HDDs have no watchdog (as if it had been killed too).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	stale, err := setupHDD(work, 320<<20, 10<<20, dead, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stale.Close() })
	if err := ClearStaleHDDs(work); err != nil {
		t.Fatal(err)
	}
	// The stale one is gone without its Close.
	checkHDDGone(t, stale)
	// SetupHDD clears too; another stale one, then a live one.
	stale2, err := setupHDD(work, 320<<20, 10<<20, dead, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stale2.Close() })
	live, err := SetupHDD(work, 320<<20, 20<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Close() })
	if _, err := os.Stat(stale2.Image); err == nil {
		t.Errorf("SetupHDD left the stale image %s", stale2.Image)
	}
	if isMountpoint(stale2.Dir) {
		t.Errorf("SetupHDD left the stale mount %s", stale2.Dir)
	}
	if r, w, _ := Throttle(live.MajMin()); r != 20<<20 || w != 20<<20 {
		t.Errorf("the live HDD's rules: read %d write %d, want %d", r, w, 20<<20)
	}
	if !isMountpoint(live.Dir) {
		t.Errorf("the live HDD's %s is not mounted", live.Dir)
	}
	// Another clearing leaves the live HDD alone too.
	if err := ClearStaleHDDs(work); err != nil {
		t.Fatal(err)
	}
	if !isMountpoint(live.Dir) {
		t.Errorf("ClearStaleHDDs unmounted a live HDD")
	}
	// The stale HDDs' own Close (late) must not touch the live one,
	// which may have their loop device.
	if err := stale.Close(); err != nil {
		t.Errorf("a late Close of a cleared HDD: %v", err)
	}
	if r, w, _ := Throttle(live.MajMin()); r != 20<<20 || w != 20<<20 || !isMountpoint(live.Dir) {
		t.Errorf("a late Close of a cleared HDD changed the live one: rules %d %d, mounted %v", r, w, isMountpoint(live.Dir))
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	checkHDDGone(t, live)
}

// TestHDDWatchdog: when the process that set an HDD up dies without
// Close, the HDD's watchdog resets the rules and removes the rest.
func TestHDDWatchdog(t *testing.T) {
	needRoot(t)
	ensureTools(t)
	work := tempDir(t)
	owner := exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
	h, err := setupHDD(work, 320<<20, 10<<20, owner.Process.Pid, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if r, w, _ := Throttle(h.MajMin()); r != 10<<20 || w != 10<<20 {
		t.Fatalf("rules %d %d, want %d", r, w, 10<<20)
	}
	// The owner dies: the watchdog undoes the HDD.
	if err := owner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = owner.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, w, _ := Throttle(h.MajMin())
		_, imgErr := os.Stat(h.Image)
		_, dirErr := os.Stat(h.Dir)
		if r == 0 && w == 0 && os.IsNotExist(imgErr) && os.IsNotExist(dirErr) && !isMountpoint(h.Dir) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after its owner died the HDD is still there: rules %d %d, image %v, dir %v, mounted %v",
				r, w, imgErr, dirErr, isMountpoint(h.Dir))
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkHDDGone(t, h)
}

func TestMountMergerfs(t *testing.T) {
	needRoot(t)
	ensureTools(t)
	d := tempDir(t)
	b1, b2, mnt := filepath.Join(d, "b1"), filepath.Join(d, "b2"), filepath.Join(d, "mnt")
	for _, p := range []string{b1, b2} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(b2, "old"), []byte("on b2"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount, err := MountMergerfs(mnt, b1, b2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmount() })
	if !isMountpoint(mnt) {
		t.Fatalf("%s is not a mountpoint", mnt)
	}
	// category.create=ff: a new file lands on the first branch.
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(b1, "new")); err != nil || string(b) != "hello" {
		t.Errorf("new file on the first branch: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "old")); err != nil || string(b) != "on b2" {
		t.Errorf("the second branch's file through the mount: %q, %v", b, err)
	}
	if err := unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if isMountpoint(mnt) {
		t.Errorf("%s still mounted", mnt)
	}
}

func TestEnsurePackagesPresent(t *testing.T) {
	// Commands that are there: nothing to install, no apt-get run.
	if err := EnsurePackages(map[string]string{"sh": "dash"}); err != nil {
		t.Errorf("EnsurePackages of a present command: %v", err)
	}
}

// TestEnableURing: the switch is turned on and put back to what it was;
// one that is on already stays on; a kernel without it is said so. On a
// file standing in for the kernel's switch.
func TestEnableURing(t *testing.T) {
	param := filepath.Join(t.TempDir(), "enable_uring")
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(param)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	// Off: on, then back off (twice is fine).
	if err := os.WriteFile(param, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	restore, err := enableURing(param)
	if err != nil {
		t.Fatal(err)
	}
	if v := read(); v != "Y" {
		t.Errorf("after enableURing the switch reads %q, want Y", v)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if v := read(); v != "N" {
		t.Errorf("after restore the switch reads %q, want N", v)
	}
	if err := os.WriteFile(param, []byte("Y\n"), 0o644); err != nil { // someone else's
		t.Fatal(err)
	}
	if err := restore(); err != nil || read() != "Y" {
		t.Errorf("a second restore: %v, the switch reads %q: want nothing done", err, read())
	}

	// On already: stays on, restore leaves it on.
	restore, err = enableURing(param)
	if err != nil {
		t.Fatal(err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if v := read(); v != "Y" {
		t.Errorf("a switch that was on reads %q after restore, want Y", v)
	}

	// No switch: a kernel without FUSE over io_uring.
	_, err = enableURing(filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "no FUSE over io_uring") || !strings.Contains(err.Error(), "CONFIG_FUSE_IO_URING") {
		t.Errorf("enableURing without the switch: %v, want an error saying the kernel has no FUSE over io_uring", err)
	}
}

// TestEnableFUSEURing: the kernel's own switch, where there is one: on
// while the benchmark runs, as it was afterwards.
func TestEnableFUSEURing(t *testing.T) {
	needRoot(t)
	// The switch is the kernel's, and the cmd and fs packages' tests set
	// it at the same time, under this lock.
	testenv.HoldURingSwitch(t)
	before, err := os.ReadFile(URingParam)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := EnableFUSEURing(); err == nil || !strings.Contains(err.Error(), "no FUSE over io_uring") {
			t.Errorf("EnableFUSEURing on a kernel without the switch: %v, want an error saying so", err)
		}
		t.Skipf("this kernel has no %s", URingParam)
	}
	if err != nil {
		t.Fatal(err)
	}
	restore, err := EnableFUSEURing()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restore() })
	if b, _ := os.ReadFile(URingParam); strings.TrimSpace(string(b)) != "Y" {
		t.Errorf("%s reads %q after EnableFUSEURing, want Y", URingParam, strings.TrimSpace(string(b)))
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(URingParam); strings.TrimSpace(string(b)) != strings.TrimSpace(string(before)) {
		t.Errorf("%s reads %q after restore, want %q as before", URingParam, strings.TrimSpace(string(b)), strings.TrimSpace(string(before)))
	}
}
