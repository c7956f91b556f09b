package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/mountutil"
)

func TestParseMountOptions(t *testing.T) {
	o, err := parseMountOptions([]string{"rw,dev,suid,exec,nodev,nosuid,defaults,_netdev,nofail,noauto,auto,x-systemd.requires-mounts-for=/srv/hdd,x-systemd.before=kafka.service,comment=x"})
	if err != nil || len(o.flags) != 0 || o.debug {
		t.Errorf("options mount(8), mount.fuse3 and systemd add: %+v, %v; want all ignored", o, err)
	}
	o, err = parseMountOptions([]string{"rw,writeback_cache", "io_uring=false,direct_io=true,debug"})
	if err != nil {
		t.Fatal(err)
	}
	want := daemon.Overrides{"writeback_cache": true, "io_uring": false, "direct_io": true}
	if len(o.flags) != len(want) || !o.debug {
		t.Errorf("flags %v, debug %v; want %v and debug", o.flags, o.debug, want)
	}
	for k, v := range want {
		if got, ok := o.flags[k]; !ok || got != v {
			t.Errorf("%s = %v (set %v), want %v", k, got, ok, v)
		}
	}
	_, err = parseMountOptions([]string{"ro,bogus,io_uring=maybe,allow_other"})
	if err == nil {
		t.Fatal("no error for ro, bogus, io_uring=maybe and allow_other")
	}
	for _, w := range []string{`"ro": tierfs mounts read-write only`, `unknown mount option "bogus"`, `"io_uring=maybe": want io_uring=true or io_uring=false`, `"allow_other": set [mount] allow_other`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// installForMount puts the test's binary where mount(8) finds it: it runs
// helpers with the system's default PATH, whose first directory is
// /usr/local/sbin. Whatever was there comes back at the end.
func installForMount(t *testing.T) {
	t.Helper()
	testenv.HoldSystemInstall(t)
	const dst = "/usr/local/sbin/tierfs"
	saved := ""
	if _, err := os.Lstat(dst); err == nil {
		saved = dst + ".saved-by-tierfs-test-" + strconv.Itoa(os.Getpid())
		if err := os.Rename(dst, saved); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.Remove(dst)
		if saved != "" {
			if err := os.Rename(saved, dst); err != nil {
				t.Errorf("restoring %s: %v", dst, err)
			}
		}
	})
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(tierfsBin, dst); err != nil {
		t.Fatal(err)
	}
}

// runMount runs mount(8) with args and returns its output and status.
func runMount(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command("mount", args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("mount %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// helperEnv is a test setup whose daemon logs to a file of its own.
func helperEnv(t *testing.T) (*env, string) {
	t.Helper()
	_, errMount := exec.LookPath("mount")
	_, errHelper := exec.LookPath("mount.fuse3")
	testenv.Require(t, errMount == nil && errHelper == nil, "mount(8) and mount.fuse3 (packages mount and fuse3: make deps) are needed")
	e := newEnv(t)
	logFile := filepath.Join(e.base, "tierfs.log")
	text, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	// Into newEnv's [log] table (a [metrics] table follows it).
	const level = "[log]\nlevel = \"debug\"\n"
	if !strings.Contains(string(text), level) {
		t.Fatalf("newEnv's configuration has no %q", level)
	}
	writeFile(t, e.config, strings.Replace(string(text), level, level+"file = "+strconv.Quote(logFile)+"\n", 1))
	t.Cleanup(func() {
		if mounted(e.mnt) {
			if err := mountutil.Unmount(e.mnt); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		b, _ := os.ReadFile(logFile)
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("the daemon reported a data race:\n%s", b)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", b)
		}
	})
	return e, logFile
}

// daemonPid is the pid the daemon's "mounted" line names.
func daemonPid(t *testing.T, logFile string) int {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `"message":"mounted"`) {
			continue
		}
		_, rest, _ := strings.Cut(line, `"pid":`)
		n, _, _ := strings.Cut(rest, ",")
		if pid, err := strconv.Atoi(n); err == nil {
			return pid
		}
	}
	t.Fatalf("no mounted line with a pid in %s:\n%s", logFile, b)
	return 0
}

// gone reports whether pid has exited (a zombie nobody reaped counts).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

// `mount -t fuse.tierfs CONFIG MOUNTPOINT`, as an operator or systemd runs
// it (issue 18, item 3): mount(8) -> mount.fuse3 -> `tierfs CONFIG
// MOUNTPOINT -o rw,...,dev,suid`. It returns once the mount answers, the
// daemon running on detached and logging to [log] file; `tierfs umount`
// unmounts and returns once the daemon has exited.
func TestMountHelperForm(t *testing.T) {
	requireFUSE(t)
	e, logFile := helperEnv(t)
	installForMount(t)

	out, code := runMount(t, "-t", "fuse.tierfs", "-o", "_netdev,nofail,x-systemd.requires-mounts-for="+e.slow+",io_uring=false", e.config, e.mnt)
	if code != 0 {
		t.Fatalf("mount -t fuse.tierfs: exit %d\n%s", code, out)
	}
	// No waiting: the mount answered before mount(8) returned.
	if !mounted(e.mnt) {
		t.Fatal("mount returned 0 but mountinfo has no tierfs on the mountpoint")
	}
	st, _ := statusJSON(t, e.mnt)
	if len(st.Tiers) != 2 {
		t.Errorf("status: %d tiers, want 2", len(st.Tiers))
	}
	writeFile(t, filepath.Join(e.mnt, "hello"), "through the helper form\n")
	if b, err := os.ReadFile(filepath.Join(e.fast, "data", "hello")); err != nil || string(b) != "through the helper form\n" {
		t.Errorf("the file on the fast tier: %q, %v", b, err)
	}
	pid := daemonPid(t, logFile)
	// Supervised (the default, as root): the daemon is the child of a
	// supervisor, which has the session of its own.
	if st.Supervisor == nil {
		t.Fatalf("the helper form's mount is not supervised: %+v\n%s", st, mustRead(t, logFile))
	}
	sup := parentOf(t, pid)
	if sid, err := unix.Getsid(pid); err != nil || sid != sup {
		t.Errorf("daemon pid %d: session %d (%v); want its supervisor's, %d", pid, sid, err, sup)
	}
	if sid, err := unix.Getsid(sup); err != nil || sid != sup {
		t.Errorf("supervisor pid %d: session %d (%v); want a session of its own", sup, sid, err)
	}
	if ppid := parentOf(t, sup); ppid == os.Getpid() {
		t.Errorf("the supervisor is the test's child: not detached")
	}
	log, _ := os.ReadFile(logFile)
	if !bytes.Contains(log, []byte(`"io_uring":false`)) || !bytes.Contains(log, []byte(`"io_uring_off":"io_uring is off in [mount] or on the command line"`)) {
		t.Errorf("the mounted line does not say io_uring is off and why:\n%s", log)
	}

	// The log file is opened at the mount: a reload says a new one waits
	// for the next.
	text, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.config, strings.Replace(string(text), strconv.Quote(logFile), strconv.Quote(logFile+".new"), 1))
	if out := mustTierfs(t, "", "reload", e.mnt); !strings.Contains(out, "not applied until the next mount: log.file: "+strconv.Quote(logFile)+" -> "+strconv.Quote(logFile+".new")) ||
		strings.Contains(out, "  log.file") {
		t.Errorf("reload of a new log.file printed:\n%s", out)
	}

	// Busy: refused, nothing changes; then it goes.
	f, err := os.Open(filepath.Join(e.mnt, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := tierfs(t, "", "umount", e.mnt)
	if code != 1 || !strings.Contains(errOut, "is busy") || !mounted(e.mnt) || gone(pid) {
		t.Errorf("umount of a busy mount: exit %d, %q; mounted %v, daemon gone %v; want exit 1, busy, still mounted and served",
			code, errOut, mounted(e.mnt), gone(pid))
	}
	f.Close()
	out = mustTierfs(t, "", "umount", e.mnt)
	if want := fmt.Sprintf("%s: unmounted; daemon pid %d and supervisor pid %d exited\n", e.mnt, pid, sup); out != want {
		t.Errorf("umount said %q, want %q", out, want)
	}
	if mounted(e.mnt) || !gone(pid) || !gone(sup) {
		t.Errorf("after umount: mounted %v, daemon gone %v, supervisor gone %v", mounted(e.mnt), gone(pid), gone(sup))
	}
	if log, _ := os.ReadFile(logFile); !bytes.Contains(log, []byte(`"reason":"unmounted","status":0`)) {
		t.Errorf("the daemon's log has no clean exit:\n%s", log)
	}
	if _, errOut, code := tierfs(t, "", "umount", e.mnt); code != 1 || !strings.Contains(errOut, "is not a tierfs mountpoint") {
		t.Errorf("umount of nothing mounted: exit %d, %q", code, errOut)
	}
}

// parentOf is pid's parent, from /proc.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

// The /etc/fstab line the README gives, read by mount(8) from a file of
// the test's (mount -T), as at boot.
func TestMountFstabLine(t *testing.T) {
	requireFUSE(t)
	e, logFile := helperEnv(t)
	installForMount(t)
	fstab := filepath.Join(e.base, "fstab")
	writeFile(t, fstab, "# tierfs, as README.md gives it\n"+
		e.config+" "+e.mnt+" fuse.tierfs defaults,_netdev,nofail,x-systemd.requires-mounts-for="+e.fast+",x-systemd.before=kafka.service 0 0\n")
	if out, code := runMount(t, "-T", fstab, e.mnt); code != 0 {
		t.Fatalf("mount -T fstab: exit %d\n%s", code, out)
	}
	if !mounted(e.mnt) {
		t.Fatal("not mounted")
	}
	pid := daemonPid(t, logFile)
	mustTierfs(t, "", "umount", e.mnt)
	if mounted(e.mnt) || !gone(pid) {
		t.Errorf("after umount: mounted %v, daemon gone %v", mounted(e.mnt), gone(pid))
	}
}

// What goes wrong comes out of mount(8) with a status that is not 0, and
// nothing stays mounted or running: options refused before anything
// starts, and the daemon's own startup error (a mountpoint inside a
// tier) passed on from the detached process.
func TestMountHelperErrors(t *testing.T) {
	requireFUSE(t)
	e, logFile := helperEnv(t)
	installForMount(t)
	out, code := runMount(t, "-t", "fuse.tierfs", "-o", "noexec,bogus=1", e.config, e.mnt)
	if code == 0 || !strings.Contains(out, `tierfs mount: mount option "noexec": tierfs cannot mount noexec`) ||
		!strings.Contains(out, `tierfs mount: unknown mount option "bogus=1"`) {
		t.Errorf("refused options: exit %d\n%s", code, out)
	}
	if mounted(e.mnt) {
		t.Error("mounted despite refused options")
	}

	inTier := filepath.Join(e.fast, "mnt")
	if err := os.Mkdir(inTier, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code = runMount(t, "-t", "fuse.tierfs", e.config, inTier)
	if code == 0 || !strings.Contains(out, "tierfs mount: ") || !strings.Contains(out, inTier) {
		t.Errorf("mountpoint inside a tier: exit %d\n%s", code, out)
	}
	if mounted(inTier) {
		mountutil.Unmount(inTier)
		t.Error("mounted inside a tier")
	}
	if b, err := os.ReadFile(logFile); err == nil && bytes.Contains(b, []byte(`"message":"mounted"`)) {
		t.Errorf("a mounted line in the log of mounts that failed:\n%s", b)
	}
}

// The detached daemon's log file is opened by the helper before the
// daemon starts: one it cannot open is the mount's error.
func TestDetachedLogUnwritable(t *testing.T) {
	f, err := detachedLog("/nonexistent-dir/tierfs.log")
	if err == nil {
		f.Close()
		t.Fatal("no error")
	}
	if !strings.Contains(err.Error(), "log.file: ") {
		t.Errorf("error %q does not name log.file", err)
	}
}

// The helper form supervises too: a kill -9 of its daemon is a pause
// for a program holding a file, status names the new daemon, and tierfs
// umount returns once daemon and supervisor have exited. A supervised
// daemon's own startup error (tiers another daemon holds) still comes
// out of mount(8).
func TestMountHelperFormTakeover(t *testing.T) {
	requireFUSE(t)
	e, _ := helperEnv(t)
	installForMount(t)
	if out, code := runMount(t, "-t", "fuse.tierfs", "-o", "io_uring=false", e.config, e.mnt); code != 0 {
		t.Fatalf("mount -t fuse.tierfs: exit %d\n%s", code, out)
	}
	f := heldFile(t, e.mnt, "held.log")
	after := killDaemon(t, e.mnt)
	checkHeld(t, f)
	poll(t, "status from the new daemon", func() (bool, error) {
		out, _, code := tierfs(t, "", "status", "--json", e.mnt)
		var st struct {
			Daemon struct {
				Pid int `json:"pid"`
			} `json:"daemon"`
		}
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Daemon.Pid == after.Pid, nil
	})
	st, _ := statusJSON(t, e.mnt)
	if st.Supervisor == nil || st.Supervisor.Generation != 2 || st.Supervisor.Takeovers != 1 {
		t.Errorf("status after a kill: supervisor %+v, want generation 2 and 1 takeover", st.Supervisor)
	}
	sup := parentOf(t, after.Pid)

	mnt2 := filepath.Join(e.base, "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := runMount(t, "-t", "fuse.tierfs", "-o", "io_uring=false", e.config, mnt2)
	if code == 0 || !strings.Contains(out, "in use by another tierfs daemon (pid "+strconv.Itoa(after.Pid)) {
		t.Errorf("a second mount of the same tiers: exit %d, want an error naming daemon %d:\n%s", code, after.Pid, out)
	}
	if mounted(mnt2) {
		mountutil.Unmount(mnt2)
		t.Error("a second mount of the same tiers mounted")
	}

	f.Close()
	out = mustTierfs(t, "", "umount", e.mnt)
	if want := fmt.Sprintf("%s: unmounted; daemon pid %d and supervisor pid %d exited\n", e.mnt, after.Pid, sup); out != want {
		t.Errorf("umount said %q, want %q", out, want)
	}
	if mounted(e.mnt) || !gone(sup) {
		t.Errorf("after umount: mounted %v, supervisor gone %v", mounted(e.mnt), gone(sup))
	}
}
