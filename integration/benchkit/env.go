// Package benchkit sets up and tears down the benchmark environment of
// `make bench` (private tmpfs tiers, a throttled loop-device "HDD",
// mergerfs as the FUSE peer), and computes and writes the report
// (medians and spreads, markdown fragments, docs/BENCHMARKS.md). It is
// plain library code: the benchmarks in integration/bench call it from
// their tests and register the returned cleanups with t.Cleanup.
//
// Everything here needs root (mount, losetup, cgroup v1 blkio) except
// the statistics and the report.
package benchkit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/mountutil"
)

// EnsurePackages installs, with apt-get, the Debian packages of the
// commands (command name -> package) that are not on PATH: apt-get update
// first, then apt-get install -y --no-install-recommends. Through sudo
// when not root and sudo exists. It returns an error naming the commands
// still missing afterwards.
func EnsurePackages(cmds map[string]string) error {
	var pkgs []string
	seen := map[string]bool{}
	for cmd, pkg := range cmds {
		if _, err := exec.LookPath(cmd); err == nil {
			continue
		}
		if !seen[pkg] {
			seen[pkg] = true
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	sort.Strings(pkgs)
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing packages %s and no apt-get: install them by hand", strings.Join(pkgs, " "))
	}
	var prefix []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err == nil {
			prefix = []string{"sudo"}
		}
	}
	run := func(args ...string) error {
		full := append(append(append([]string{}, prefix...), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"), args...)
		out, err := exec.Command(full[0], full[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(full, " "), err, lastLines(string(out), 20))
		}
		return nil
	}
	if err := run("update"); err != nil {
		return err
	}
	if err := run(append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...); err != nil {
		return err
	}
	var still []string
	for cmd := range cmds {
		if _, err := exec.LookPath(cmd); err != nil {
			still = append(still, cmd)
		}
	}
	if len(still) > 0 {
		sort.Strings(still)
		return fmt.Errorf("still missing after installing %s: %s", strings.Join(pkgs, " "), strings.Join(still, " "))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// Mounts

// MountTmpfs mounts a private tmpfs of size bytes on dir (created if
// needed; mount propagation private, so it shows up in no other mount
// namespace). The returned func unmounts it; it may be called more than
// once.
func MountTmpfs(dir string, size int64) (unmount func() error, err error) {
	if size <= 0 {
		return nil, fmt.Errorf("tmpfs on %s: size %d", dir, size)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("tierfs-bench", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return nil, fmt.Errorf("mount -t tmpfs -o size=%d tierfs-bench %s: %w", size, dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return nil, fmt.Errorf("mount --make-private %s: %w", dir, err)
	}
	return onceErr(func() error { return unmountPath(dir) }), nil
}

// onceErr runs f once; later calls return its first result.
func onceErr(f func() error) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = f() })
		return err
	}
}

// isMountpoint reports whether mountinfo lists a mount on path.
func isMountpoint(path string) bool {
	ms, err := mountutil.Mounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Mountpoint == path {
			return true
		}
	}
	return false
}

// unmountPath unmounts path, retrying for up to 10 s while it is busy
// (a daemon still closing files), then detaches it lazily and reports
// that as an error. A path that is not mounted is not an error.
func unmountPath(path string) error {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Unmount(path, 0)
		switch {
		case err == nil:
			if isMountpoint(path) { // stacked mounts: unmount the next one too
				continue
			}
			return nil
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			if isMountpoint(path) {
				return fmt.Errorf("umount %s: %w", path, err)
			}
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(50 * time.Millisecond)
			continue
		}
		derr := unix.Unmount(path, unix.MNT_DETACH)
		if derr != nil {
			return fmt.Errorf("umount %s: %v; umount -l: %v", path, err, derr)
		}
		return fmt.Errorf("umount %s: %v (detached it lazily)", path, err)
	}
}

// ---------------------------------------------------------------------------
// The throttled "HDD"

// hddPrefix starts the name of every image file SetupHDD makes:
// tierfs-bench-hdd-<pid>-<n>.img, <pid> the process that made it. A loop
// device backed by such a file whose process is gone is stale (a killed
// run) and SetupHDD clears it.
const hddPrefix = "tierfs-bench-hdd-"

// BlkioRoot is the cgroup v1 blkio hierarchy; rules go in its root cgroup
// (a limit in a child cgroup misses background write-back).
const BlkioRoot = "/sys/fs/cgroup/blkio"

// blkioFiles are the throttle rules SetupHDD sets and Close resets.
var blkioFiles = []string{"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"}

// loopMajor is the block major of loop devices.
const loopMajor = 7

// HDD is a throttled "hard disk": a sparse image file under the work
// directory, a loop device on it, xfs on that mounted at Dir, and cgroup
// v1 blkio throttle rules (read and write, BPS bytes per second each) for
// the loop device's MAJ:MIN in the ROOT blkio cgroup
// (/sys/fs/cgroup/blkio/blkio.throttle.{read,write}_bps_device). Close
// resets the rules to 0, unmounts, detaches the loop device and removes
// the image.
type HDD struct {
	Dir   string // the xfs mount
	Dev   string // /dev/loopN
	Image string // the backing image file
	BPS   int64  // the read and the write limit, bytes per second

	majMin string
	close  func() error
}

var hddSeq struct {
	sync.Mutex
	n int
}

// SetupHDD makes an HDD of size bytes (sparse) under work, throttled to
// bps bytes per second for reads and for writes. It first clears what an
// earlier run that was killed left (see ClearStaleHDDs). On error nothing
// it made is left behind.
func SetupHDD(work string, size, bps int64) (*HDD, error) {
	return setupHDD(work, size, bps, os.Getpid(), true)
}

// setupHDD is SetupHDD for the process pid; without a watchdog (tests of
// ClearStaleHDDs: a run whose watchdog died too).
func setupHDD(work string, size, bps int64, pid int, watchdog bool) (h *HDD, err error) {
	if size < 300<<20 {
		return nil, fmt.Errorf("HDD of %d bytes: xfs needs at least 300 MiB", size)
	}
	if bps <= 0 {
		return nil, fmt.Errorf("HDD throttle %d bytes/s: want > 0", bps)
	}
	for _, f := range blkioFiles {
		if _, err := os.Stat(filepath.Join(BlkioRoot, f)); err != nil {
			return nil, fmt.Errorf("cgroup v1 blkio throttling is not available: %w", err)
		}
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		return nil, fmt.Errorf("mkfs.xfs: %w (apt-get install xfsprogs)", err)
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return nil, fmt.Errorf("losetup: %w", err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(work); err == nil {
		work = r
	}
	if work, err = filepath.Abs(work); err != nil {
		return nil, err
	}
	if err := ClearStaleHDDs(work); err != nil {
		return nil, fmt.Errorf("clearing what an earlier run left: %w", err)
	}
	hddSeq.Lock()
	hddSeq.n++
	n := hddSeq.n
	hddSeq.Unlock()
	base := fmt.Sprintf("%s%d-%d", hddPrefix, pid, n)
	h = &HDD{Image: filepath.Join(work, base+".img"), Dir: filepath.Join(work, base+".mnt"), BPS: bps}

	// Undo, in reverse order, whatever was done so far when a step fails.
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				if uerr := undo[i](); uerr != nil {
					err = fmt.Errorf("%w; cleaning up: %v", err, uerr)
				}
			}
			h = nil
		}
	}()

	f, err := os.OpenFile(h.Image, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return removeIfThere(h.Image) })
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", h.Image).Output()
	if err != nil {
		return nil, fmt.Errorf("losetup --find --show %s: %w%s", h.Image, err, stderrOf(err))
	}
	h.Dev = strings.TrimSpace(string(out))
	var st unix.Stat_t
	if err := unix.Stat(h.Dev, &st); err != nil {
		_ = detachLoop(h.Dev)
		return nil, err
	}
	h.majMin = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	// The loop device may have been cleared meanwhile (ClearStaleHDDs in
	// another process that took this one's pid for dead) and attached
	// again by someone else: then its rules and attachment are theirs.
	minor := unix.Minor(st.Rdev)
	ours := func() bool { return strings.TrimSuffix(loopBacking(minor), " (deleted)") == h.Image }
	undo = append(undo, func() error {
		if !ours() {
			return nil
		}
		return detachLoop(h.Dev)
	})
	if b, err := exec.Command("mkfs.xfs", "-q", "-f", h.Dev).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.xfs %s: %w\n%s", h.Dev, err, b)
	}
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return removeIfThere(h.Dir) })
	if err := unix.Mount(h.Dev, h.Dir, "xfs", 0, ""); err != nil {
		return nil, fmt.Errorf("mount -t xfs %s %s: %w", h.Dev, h.Dir, err)
	}
	undo = append(undo, func() error { return unmountPath(h.Dir) })
	undo = append(undo, func() error {
		if !ours() {
			return nil
		}
		return setThrottle(h.majMin, 0)
	})
	if err := setThrottle(h.majMin, bps); err != nil {
		return nil, err
	}
	// Should this process die without Close (go test -timeout, SIGKILL),
	// the watchdog resets the rules and removes the rest.
	if watchdog {
		wd, err := startHDDWatchdog(pid, h, minor)
		if err != nil {
			return nil, err
		}
		undo = append(undo, wd)
	}
	h.close = onceErr(func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	return h, nil
}

// hddWatchdog waits for the process $1 to be gone, then undoes an HDD
// (rules on $2 reset, $3 unmounted, $4 detached if still backed by $5, $5
// and $3 removed). SIGTERM (Close) ends it without doing anything.
const hddWatchdog = `pid=$1 mm=$2 dir=$3 dev=$4 img=$5 minor=$6
trap 'exit 0' TERM
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
ours() { [ "$(cat /sys/block/loop$minor/loop/backing_file 2>/dev/null)" = "$img" ]; }
if ours; then
	echo "$mm 0" > ` + BlkioRoot + `/blkio.throttle.read_bps_device
	echo "$mm 0" > ` + BlkioRoot + `/blkio.throttle.write_bps_device
fi
i=0
while mountpoint -q "$dir" && ! umount "$dir" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
mountpoint -q "$dir" && umount -l "$dir"
ours && losetup -d "$dev"
rm -f "$img"
rmdir "$dir" 2>/dev/null
exit 0
`

// startHDDWatchdog starts hddWatchdog for h, in a session of its own (no
// signal meant for this process reaches it), and returns the func that
// stops it.
func startHDDWatchdog(pid int, h *HDD, minor uint32) (func() error, error) {
	cmd := exec.Command("sh", "-c", hddWatchdog, "tierfs-bench-hdd-watchdog",
		strconv.Itoa(pid), h.majMin, h.Dir, h.Dev, h.Image, strconv.FormatUint(uint64(minor), 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the HDD watchdog: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		return nil
	}, nil
}

// Close resets the throttle rules to 0, unmounts the xfs, detaches the
// loop device and removes the image. It may be called more than once.
func (h *HDD) Close() error {
	if h == nil || h.close == nil {
		return nil
	}
	return h.close()
}

// MajMin is the loop device's "MAJ:MIN".
func (h *HDD) MajMin() string { return h.majMin }

func removeIfThere(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// setThrottle writes "majMin bps" to the read and write bps rules of the
// root blkio cgroup (0 removes the rule).
func setThrottle(majMin string, bps int64) error {
	var errs []error
	for _, f := range blkioFiles {
		p := filepath.Join(BlkioRoot, f)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("%s %d\n", majMin, bps)), 0); err != nil {
			errs = append(errs, fmt.Errorf("echo %q > %s: %w", fmt.Sprintf("%s %d", majMin, bps), p, err))
		}
	}
	return errors.Join(errs...)
}

// Throttle returns the read and write bps rules of the root blkio cgroup
// for majMin (0 when there is none).
func Throttle(majMin string) (read, write int64, err error) {
	rules, err := throttleRules()
	if err != nil {
		return 0, 0, err
	}
	r := rules[majMin]
	return r[0], r[1], nil
}

// throttleRules reads the root cgroup's bps rules: MAJ:MIN -> [read, write].
func throttleRules() (map[string][2]int64, error) {
	out := map[string][2]int64{}
	for i, f := range blkioFiles {
		b, err := os.ReadFile(filepath.Join(BlkioRoot, f))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 2 {
				continue
			}
			v, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				continue
			}
			r := out[fields[0]]
			r[i] = v
			out[fields[0]] = r
		}
	}
	return out, nil
}

// loopBacking returns the backing file of /dev/loop<minor> as the kernel
// shows it ("" when the device is not attached).
func loopBacking(minor uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", minor))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// stalePID reports whether the base name of an image file is one of ours
// (tierfs-bench-hdd-<pid>-<n>.img) whose process is gone.
func stalePID(name string) bool {
	name = strings.TrimSuffix(filepath.Base(strings.TrimSuffix(name, " (deleted)")), ".img")
	if !strings.HasPrefix(name, hddPrefix) {
		return false
	}
	rest := strings.TrimPrefix(name, hddPrefix)
	i := strings.IndexByte(rest, '-')
	if i <= 0 {
		return false
	}
	pid, err := strconv.Atoi(rest[:i])
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return false
	}
	return unix.Kill(pid, 0) == unix.ESRCH
}

// ClearStaleHDDs clears what runs that were killed left behind: every
// loop device backed by one of SetupHDD's image files whose process is
// gone (anywhere; the name says whose it was) loses its throttle rules,
// its mount and its attachment; such image files and mount directories
// under work are removed; and throttle rules left on loop devices that
// are no longer attached are reset to 0 (a loop device keeps its rules
// and would pass them on to whoever attaches it next). The HDDs of live
// processes, this one's included, are left alone.
func ClearStaleHDDs(work string) error {
	var errs []error
	rules, err := throttleRules()
	if err != nil {
		return err
	}
	// Stale attached loop devices.
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range devs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		backing := strings.TrimSpace(string(b))
		if !stalePID(backing) {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(p)))
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		majMin := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if err := setThrottle(majMin, 0); err != nil {
			errs = append(errs, err)
		}
		delete(rules, majMin)
		// Its mounts: by source device.
		if ms, err := mountutil.Mounts(); err == nil {
			for i := len(ms) - 1; i >= 0; i-- {
				if ms[i].Source == dev {
					if err := unmountPath(ms[i].Mountpoint); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		if err := detachLoop(dev); err != nil {
			errs = append(errs, err)
		}
		img := strings.TrimSuffix(backing, " (deleted)")
		if err := os.Remove(img); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Rules on loop devices that nothing is attached to any more.
	for majMin, r := range rules {
		var maj, min uint32
		if _, err := fmt.Sscanf(majMin, "%d:%d", &maj, &min); err != nil || maj != loopMajor {
			continue
		}
		if (r[0] != 0 || r[1] != 0) && loopBacking(min) == "" {
			if err := setThrottle(majMin, 0); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Leftover images and mount directories under work.
	if work != "" {
		left, _ := filepath.Glob(filepath.Join(work, hddPrefix+"*"))
		for _, p := range left {
			if !stalePID(strings.TrimSuffix(p, ".mnt") + ".img") {
				continue
			}
			if strings.HasSuffix(p, ".mnt") {
				if isMountpoint(p) {
					if err := unmountPath(p); err != nil {
						errs = append(errs, err)
						continue
					}
				}
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			} else if strings.HasSuffix(p, ".img") {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// detachLoop detaches a loop device (losetup -d), retrying briefly while
// the kernel still holds it after an unmount.
func detachLoop(dev string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("losetup", "-d", dev).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("losetup -d %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// mergerfs

// MergerfsOptions are the mount options MountMergerfs gives mergerfs,
// chosen from mergerfs's own documentation (mergerfs(1) of 2.33, the
// version Debian ships) so that its bytes land where tierfs's do and its
// caching matches tierfs's; the comparison is then of the I/O paths:
//   - minfreespace=0: mergerfs's default, 4G, makes the create policies
//     skip a branch with less free space than that; a benchmark's tmpfs
//     is smaller, so every new file went to the slow branch on disk. With
//     0 a new file goes to the fast branch while it has any room, as
//     tierfs's go to its fast tier (the suite checks it: Placement).
//   - category.create=ff: a new file (and directory) goes to the first
//     branch, the fast one, as tierfs places new files on its first tier
//     with room. mergerfs's tiered-caching advice names ff for the cache
//     pool.
//   - cache.files=full: "mergerfs files cached across opens", the kernel's
//     FOPEN_KEEP_CACHE, which tierfs sets on every open; "partial" would
//     drop a file's pages at each open and "off" is direct I/O, which
//     tierfs does only when asked (--direct-io, a row of its own).
//   - cache.writeback=false: no FUSE write-back cache, as tierfs by
//     default (each write(2) reaches the daemon before it returns).
//   - cache.attr=3600,cache.entry=3600,cache.negative_entry=1: tierfs's
//     attribute and entry timeouts (an hour) and negative-entry timeout
//     (1 s; mergerfs's default is 0).
//   - dropcacheonclose=false: no posix_fadvise(DONTNEED) on close
//     (tierfs does none).
//
// Everything else is mergerfs's default (threads = the number of cores,
// 1 MiB FUSE messages, xattrs passed through).
const MergerfsOptions = "fsname=tierfs-bench-mergerfs,minfreespace=0,category.create=ff,cache.files=full," +
	"cache.writeback=false,cache.attr=3600,cache.entry=3600,cache.negative_entry=1,dropcacheonclose=false"

// MountMergerfs mounts mergerfs on mnt (created if needed) over the
// branches, with MergerfsOptions, and returns the unmount func. mergerfs
// runs in the foreground as a child of this process, with SIGTERM as its
// parent-death signal, so that it unmounts itself if this process dies
// without unmounting it.
func MountMergerfs(mnt string, branches ...string) (unmount func() error, err error) {
	return MountMergerfsWith(mnt, MergerfsOptions, branches...)
}

// MountMergerfsWith is MountMergerfs with other mount options.
func MountMergerfsWith(mnt, options string, branches ...string) (unmount func() error, err error) {
	if len(branches) == 0 {
		return nil, errors.New("mergerfs: no branches")
	}
	bin, err := exec.LookPath("mergerfs")
	if err != nil {
		return nil, fmt.Errorf("mergerfs: %w (apt-get install mergerfs)", err)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	if mnt, err = filepath.Abs(mnt); err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(mnt); err == nil {
		mnt = r
	}
	for _, b := range branches {
		if fi, err := os.Stat(b); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("mergerfs branch %s: not a directory (%v)", b, err)
		}
	}
	cmd := exec.Command(bin, "-f", "-o", options, strings.Join(branches, ":"), mnt)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting mergerfs: %w", err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !isMountpoint(mnt) {
		select {
		case <-done:
			return nil, fmt.Errorf("mergerfs exited (%v) before mounting %s: %s", waitErr, mnt, out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			_ = unmountPath(mnt)
			return nil, fmt.Errorf("mergerfs did not mount %s within 30s: %s", mnt, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return onceErr(func() error {
		err := unmountPath(mnt)
		// Unmounted, mergerfs exits by itself.
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			stop()
			err = errors.Join(err, fmt.Errorf("mergerfs did not exit within 10s of the unmount of %s; killed it", mnt))
		}
		return err
	}), nil
}

// MergerfsVersion is the version `mergerfs --version` prints ("" if none).
func MergerfsVersion() string {
	out, err := exec.Command("mergerfs", "--version").CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	return strings.TrimSpace(strings.TrimPrefix(line, "mergerfs version:"))
}

// DropCaches syncs and writes 3 to /proc/sys/vm/drop_caches (the page
// cache, dentries and inodes). On a tmpfs this drops nothing of the
// tmpfs's own data (the page cache is its storage); it does drop the page
// cache of a FUSE mount above it.
func DropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("echo 3 > /proc/sys/vm/drop_caches: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// FUSE over io_uring

// URingParam is the kernel's switch for FUSE over io_uring (Linux 6.14+
// built with CONFIG_FUSE_IO_URING; the same file as fuseuring.EnableParam).
// While it is N the kernel refuses a daemon that asks for io_uring, and
// `tierfs mount --io-uring` fails; Y only lets daemons ask for it: the
// mounts that do not ask (tierfs without --io-uring, mergerfs) are
// unchanged.
const URingParam = "/sys/module/fuse/parameters/enable_uring"

// EnableFUSEURing turns the kernel's switch for FUSE over io_uring
// (URingParam) on, for a benchmark that mounts tierfs with --io-uring,
// and returns the func that puts the old value back (nothing to put back
// when it was on already; it may be called more than once). Register it
// with t.Cleanup before mounting, so that it runs after the unmount. It
// fails, saying why, when the kernel has no such switch or it cannot be
// turned on (not root).
func EnableFUSEURing() (restore func() error, err error) {
	if _, err := os.Stat(URingParam); errors.Is(err, os.ErrNotExist) {
		// The fuse module may not be loaded yet: opening /dev/fuse loads it.
		if _, serr := os.Stat("/sys/module/fuse"); errors.Is(serr, os.ErrNotExist) {
			if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err == nil {
				f.Close()
			}
		}
	}
	return enableURing(URingParam)
}

// enableURing is EnableFUSEURing for the switch at param.
func enableURing(param string) (restore func() error, err error) {
	b, err := os.ReadFile(param)
	if errors.Is(err, os.ErrNotExist) {
		kernel := "this kernel"
		if r := kernelRelease(); r != "" {
			kernel += " (" + r + ")"
		}
		return nil, fmt.Errorf("%s has no FUSE over io_uring: no %s "+
			"(it needs Linux 6.14 or later built with CONFIG_FUSE_IO_URING, and the fuse module loaded)", kernel, param)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the FUSE-over-io_uring switch: %w", err)
	}
	old := strings.TrimSpace(string(b))
	if old == "Y" {
		return func() error { return nil }, nil
	}
	if err := os.WriteFile(param, []byte("Y\n"), 0); err != nil {
		return nil, fmt.Errorf("turning FUSE over io_uring on (echo Y > %s): %w", param, err)
	}
	b, err = os.ReadFile(param)
	if err == nil && strings.TrimSpace(string(b)) != "Y" {
		err = fmt.Errorf("it reads %q after echo Y", strings.TrimSpace(string(b)))
	}
	if err != nil {
		_ = os.WriteFile(param, []byte(old+"\n"), 0)
		return nil, fmt.Errorf("turning FUSE over io_uring on (echo Y > %s): %w", param, err)
	}
	return onceErr(func() error {
		if err := os.WriteFile(param, []byte(old+"\n"), 0); err != nil {
			return fmt.Errorf("putting FUSE over io_uring back to %s (echo %s > %s): %w", old, old, param, err)
		}
		return nil
	}), nil
}

// kernelRelease is uname -r ("" if it cannot say).
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
